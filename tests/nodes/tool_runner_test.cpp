// The tool_runner kind through a real agent-node on 127.0.0.1: tools declared at spawn run in
// the sandbox within the node's tools.* ceilings, bad declarations and calls are refused
// naming what was wrong, and a keyed call runs at most once, also across kill -9 of the node
// while the tool runs (its effect, a line appended to a file outside the sandbox, is counted).

#include <csignal>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/http_client.hpp"
#include "support/node_process.hpp"

using namespace std::chrono_literals;
using hive::test::http_client;
using hive::test::node_process;
using hive::test::read_file;
using hive::test::temp_dir;
using nlohmann::json;

namespace {

const std::string tool = HIVE_TEST_TOOL;

class tool_runner_test : public ::testing::Test {
public:
  void start() {
    node = std::make_unique<node_process>(
      std::vector<std::string>{"--name", "tools", "--data-dir", (dir.path / "data").string(),
                               "--gateway", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--set",
                               "tools.allowed_executables=" + tool, "--set",
                               "tools.wall_ms_max=5000", "--set", "tools.cpu_seconds_max=5"},
      log.string());
    ASSERT_TRUE(node->wait_ready()) << read_file(log);
  }

  /// Spawns `id` as a tool_runner with `tools`; returns the HTTP status and body.
  std::pair<int, std::string> spawn(const std::string& id, const json& tools) {
    http_client http{node->gateway_port};
    auto r = http.request(
      "POST", "/v1/agents",
      json{{"id", id}, {"kind", "tool_runner"}, {"config", {{"tools", tools}}}}.dump());
    if (!r)
      return {0, "no answer"};
    return {r->status, r->body};
  }

  std::pair<int, json> run(const std::string& id, const json& body,
                           std::map<std::string, std::string> headers = {}) {
    http_client http{node->gateway_port};
    auto slash = id.find('/');
    auto r = http.request("POST",
                          "/v1/agents/" + id.substr(0, slash) + "/" + id.substr(slash + 1)
                            + "/ask?timeout_ms=20000",
                          body.dump(), headers);
    if (!r)
      return {0, json{}};
    return {r->status, json::parse(r->body, nullptr, false)};
  }

  size_t effects() const {
    std::ifstream in{effect_file};
    size_t n = 0;
    for (std::string line; std::getline(in, line);)
      n += line == "ran" ? 1 : 0;
    return n;
  }

  temp_dir dir;
  std::filesystem::path log = dir.path / "node.log";
  std::string effect_file = (dir.path / "effects.txt").string();
  std::unique_ptr<node_process> node;
};

json effect_tool(const std::string& file, int sleep_ms) {
  return {{"executable", tool},
          {"args", {"effect", file, std::to_string(sleep_ms)}},
          {"limits", {{"wall_ms", 4000}}}};
}

} // namespace

TEST_F(tool_runner_test, declared_tools_run_sandboxed_and_bad_ones_are_refused) {
  ASSERT_NO_FATAL_FAILURE(start());
  json tools = {
    {"echo",
     {{"executable", tool},
      {"args", {"echo", "n={n}", "{word}"}},
      {"params",
       {{"n", {{"type", "integer"}, {"min", 0}, {"max", 9}}},
        {"word", {{"type", "string"}, {"pattern", "[a-z]+"}, {"required", false}}}}}}},
    {"env", {{"executable", tool}, {"args", {"env"}}, {"env", {{"ONLY", "this"}}}}},
    {"slow", {{"executable", tool}, {"args", {"sleep", "10000"}}, {"limits", {{"wall_ms", 200}}}}},
    {"chatty",
     {{"executable", tool}, {"args", {"print", "100000"}}, {"limits", {{"output_bytes", 1000}}}}}};
  auto [status, body] = spawn("acme/tools", tools);
  ASSERT_EQ(status, 201) << body;

  auto [s1, echo] =
    run("acme/tools", {{"op", "run"}, {"tool", "echo"}, {"params", {{"n", 7}, {"word", "abc"}}}});
  ASSERT_EQ(s1, 200) << echo.dump();
  EXPECT_EQ(echo["exit_code"], 0);
  EXPECT_EQ(echo["stdout_text"], "n=7\nabc\n") << echo.dump();
  // An optional parameter left out drops its argument.
  auto [s1b, echo2] = run("acme/tools", {{"op", "run"}, {"tool", "echo"}, {"params", {{"n", 1}}}});
  ASSERT_EQ(s1b, 200);
  EXPECT_EQ(echo2["stdout_text"], "n=1\n");
  // Only the declared environment, nothing of the node's.
  auto [s2, env] = run("acme/tools", {{"op", "run"}, {"tool", "env"}});
  ASSERT_EQ(s2, 200);
  EXPECT_EQ(env["stdout_text"], "ONLY=this\n") << env.dump();
  auto [s3, slow] = run("acme/tools", {{"op", "run"}, {"tool", "slow"}});
  ASSERT_EQ(s3, 200);
  EXPECT_EQ(slow["stopped_by"], "wall_time") << slow.dump();
  EXPECT_LT(slow["wall_ms"].get<int64_t>(), 3000);
  auto [s4, chatty] = run("acme/tools", {{"op", "run"}, {"tool", "chatty"}});
  ASSERT_EQ(s4, 200);
  EXPECT_EQ(chatty["stopped_by"], "output");
  EXPECT_EQ(chatty["stdout_truncated"], true);
  EXPECT_EQ(chatty["stdout_text"].get<std::string>().size(), 1000u);

  // Calls that cannot run, each naming why.
  auto expect_400 = [&](const json& call, const std::string& words) {
    auto [s, r] = run("acme/tools", call);
    EXPECT_EQ(s, 400) << call.dump() << " -> " << r.dump();
    EXPECT_NE(r.dump().find(words), std::string::npos) << r.dump();
  };
  expect_400({{"op", "run"}, {"tool", "rm"}}, "no tool 'rm'");
  expect_400({{"op", "run"}, {"tool", "echo"}, {"params", {{"n", 10}}}}, "outside 0..9");
  expect_400({{"op", "run"}, {"tool", "echo"}, {"params", {{"n", 1}, {"word", "A; rm"}}}},
             "pattern");
  expect_400({{"op", "run"}, {"tool", "echo"}, {"params", json::object()}}, "params.n is required");
  expect_400({{"op", "run"}, {"tool", "echo"}, {"params", {{"n", 1}, {"x", 1}}}},
             "params.x is not a parameter");

  // Declarations the node does not allow.
  auto [d1, b1] = spawn("acme/sh", {{"sh", {{"executable", "/bin/sh"}, {"args", {"-c", "id"}}}}});
  EXPECT_EQ(d1, 403) << b1;
  EXPECT_NE(b1.find("not in tools.allowed_executables"), std::string::npos) << b1;
  auto [d2, b2] =
    spawn("acme/greedy", {{"t", {{"executable", tool}, {"limits", {{"wall_ms", 60000}}}}}});
  EXPECT_EQ(d2, 400) << b2;
  EXPECT_NE(b2.find("tools.t.limits.wall_ms"), std::string::npos) << b2;
  auto [d3, b3] = spawn("acme/typo", {{"t", {{"executable", tool}, {"args", {"{nope}"}}}}});
  EXPECT_EQ(d3, 400) << b3;
  EXPECT_NE(b3.find("'{nope}' is not a declared parameter"), std::string::npos) << b3;
}

TEST_F(tool_runner_test, a_keyed_call_runs_at_most_once_also_across_kill_9_while_it_runs) {
  ASSERT_NO_FATAL_FAILURE(start());
  auto [status, body] =
    spawn("acme/runner",
          {{"quick", effect_tool(effect_file, 0)}, {"long", effect_tool(effect_file, 3000)}});
  ASSERT_EQ(status, 201) << body;
  json call_quick = {{"op", "run"}, {"tool", "quick"}};
  // A finished keyed call: a retry gets the original result and does not run again.
  auto [s1, r1] = run("acme/runner", call_quick, {{"Idempotency-Key", "c:1"}});
  ASSERT_EQ(s1, 200) << r1.dump();
  EXPECT_EQ(r1["stdout_text"], "done\n");
  auto [s2, r2] = run("acme/runner", call_quick, {{"Idempotency-Key", "c:1"}});
  ASSERT_EQ(s2, 200);
  EXPECT_EQ(r2, r1);
  EXPECT_EQ(effects(), 1u);
  // Without a key every call runs.
  ASSERT_EQ(run("acme/runner", call_quick).first, 200);
  EXPECT_EQ(effects(), 2u);

  // The node dies while a keyed call's tool runs (its effect happened, its answer did not).
  std::thread caller{[&] {
    (void)run("acme/runner", {{"op", "run"}, {"tool", "long"}}, {{"Idempotency-Key", "c:2"}});
  }};
  for (int i = 0; i < 200 && effects() < 3; ++i)
    std::this_thread::sleep_for(20ms);
  ASSERT_EQ(effects(), 3u) << "the long tool never started\n" << read_file(log);
  node->signal(SIGKILL);
  ASSERT_TRUE(node->wait_exit(10s));
  caller.join();
  ASSERT_NO_FATAL_FAILURE(start()); // the same data directory
  // The retry does not run the tool again: its outcome is unknown, and said so.
  auto [s3, r3] =
    run("acme/runner", {{"op", "run"}, {"tool", "long"}}, {{"Idempotency-Key", "c:2"}});
  EXPECT_EQ(s3, 409) << r3.dump();
  EXPECT_NE(r3.dump().find("outcome is unknown"), std::string::npos) << r3.dump();
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(effects(), 3u) << "the keyed call ran twice";
  // What finished before the crash is still answered from the journal; new keys run.
  auto [s4, r4] = run("acme/runner", call_quick, {{"Idempotency-Key", "c:1"}});
  EXPECT_EQ(s4, 200);
  EXPECT_EQ(r4, r1);
  auto [s5, r5] = run("acme/runner", call_quick, {{"Idempotency-Key", "c:3"}});
  EXPECT_EQ(s5, 200) << r5.dump();
  EXPECT_EQ(effects(), 4u);
}
