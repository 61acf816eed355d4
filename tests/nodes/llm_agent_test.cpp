// The llm and token_budget kinds through a real agent-node on 127.0.0.1, against
// tests/support/fake_llm.py (an OpenAI-compatible endpoint that records what it was sent):
// chat round trips carry the history, the conversation survives kill -9, the per-tenant
// token budget refuses once spent (and remembers across restarts), the agent's breaker opens
// and recovers, the caller's deadline cuts the endpoint call, bad spawn configs are refused
// naming the field, and the API key goes out as a bearer token but never into the log.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/fake_llm.hpp"
#include "support/http_client.hpp"
#include "support/metrics_text.hpp"
#include "support/node_process.hpp"

using namespace std::chrono_literals;
using hive::test::fake_llm;
using hive::test::http_client;
using hive::test::node_process;
using hive::test::read_file;
using hive::test::temp_dir;
using nlohmann::json;

namespace {

/// The API key the fake endpoint expects (passed to the node in HIVE_TEST_LLM_KEY).
const std::string api_key = "sk-test-5ecret-0123456789abcdef";

class llm_agent_test : public ::testing::Test {
public:
  void SetUp() override {
    ::setenv("HIVE_TEST_LLM_KEY", api_key.c_str(), 1);
    ::unsetenv("HIVE_LLM_BASE_URL");
    ::unsetenv("HIVE_LLM_MODEL");
    endpoint = std::make_unique<fake_llm>(record, std::vector<std::string>{"--key", api_key});
    ASSERT_NE(endpoint->port, 0) << "the fake endpoint did not start";
  }

  /// Starts (or restarts, on the same data directory) the node with `sets` as --set flags.
  void start(std::vector<std::string> sets = {}) {
    node.reset();
    std::vector<std::string> args{
      "--name",     "llm",
      "--data-dir", (dir.path / "data").string(),
      "--gateway",  "127.0.0.1:0",
      "--metrics",  "127.0.0.1:0",
      "--set",      "llm.base_url=http://127.0.0.1:" + std::to_string(endpoint->port) + "/v1",
      "--set",      "llm.model=fake-model",
      "--set",      "llm.api_key_env=HIVE_TEST_LLM_KEY"};
    if (sets.empty())
      sets = sets_;
    sets_ = sets;
    for (auto& s : sets) {
      args.push_back("--set");
      args.push_back(s);
    }
    node = std::make_unique<node_process>(args, log.string());
    ASSERT_TRUE(node->wait_ready()) << read_file(log);
  }

  /// Kills the node with SIGKILL and starts it again on the same data directory.
  void kill_and_restart() {
    node->signal(SIGKILL);
    ASSERT_TRUE(node->wait_exit(10s));
    ASSERT_NO_FATAL_FAILURE(start());
  }

  /// Spawns `id` with `kind` and `config`; the HTTP status and body.
  std::pair<int, std::string> spawn(const std::string& id, const json& config,
                                    const std::string& kind = "llm") {
    http_client http{node->gateway_port};
    json req{{"id", id}, {"kind", kind}};
    if (!config.is_null())
      req["config"] = config;
    auto r = http.request("POST", "/v1/agents", req.dump());
    if (!r)
      return {0, "no answer"};
    return {r->status, r->body};
  }

  /// Asks `id` with `body`; the HTTP status and the parsed answer.
  std::pair<int, json> ask(const std::string& id, const json& body, int timeout_ms = 20000,
                           const std::map<std::string, std::string>& headers = {}) {
    http_client http{node->gateway_port};
    auto slash = id.find('/');
    auto r = http.request("POST",
                          "/v1/agents/" + id.substr(0, slash) + "/" + id.substr(slash + 1)
                            + "/ask?timeout_ms=" + std::to_string(timeout_ms),
                          body.dump(), headers);
    if (!r)
      return {0, json{}};
    return {r->status, json::parse(r->body, nullptr, false)};
  }

  std::pair<int, json> chat(const std::string& id, const std::string& message,
                            int timeout_ms = 20000) {
    return ask(id, {{"op", "chat"}, {"message", message}}, timeout_ms);
  }

  /// The requests the fake endpoint recorded (not its closed_early events).
  std::vector<json> requests() const {
    std::vector<json> out;
    for (auto& e : entries())
      if (e.contains("path"))
        out.push_back(e);
    return out;
  }

  std::vector<json> entries() const {
    std::vector<json> out;
    std::ifstream in{record};
    for (std::string line; std::getline(in, line);)
      out.push_back(json::parse(line, nullptr, false));
    return out;
  }

  temp_dir dir;
  std::filesystem::path log = dir.path / "node.log";
  std::filesystem::path record = dir.path / "requests.jsonl";
  std::unique_ptr<fake_llm> endpoint;
  std::unique_ptr<node_process> node;
  std::vector<std::string> sets_;
};

std::string code_of(const json& answer) {
  if (answer.is_object() && answer.contains("error") && answer["error"].contains("code"))
    return answer["error"]["code"].get<std::string>();
  return "";
}

std::string message_of(const json& answer) {
  if (answer.is_object() && answer.contains("error") && answer["error"].contains("message"))
    return answer["error"]["message"].get<std::string>();
  return "";
}

} // namespace

TEST_F(llm_agent_test, chat_round_trip_sends_the_history_and_the_key_as_bearer_only) {
  ASSERT_NO_FATAL_FAILURE(start());
  auto [s, b] =
    spawn("acme/bot", {{"system", "You are terse."}, {"max_tokens", 64}, {"temperature", 0.5}});
  ASSERT_EQ(s, 201) << b;

  auto [s1, r1] = chat("acme/bot", "hello there");
  ASSERT_EQ(s1, 200) << r1.dump() << read_file(log);
  EXPECT_EQ(r1["reply"], "echo: hello there");
  // Words: "You are terse." (3) + "hello there" (2) = 5 prompt, "echo: hello there" = 3.
  EXPECT_EQ(r1["tokens"], (json{{"prompt", 5}, {"completion", 3}, {"total", 8}})) << r1.dump();
  EXPECT_EQ(r1["budget_left"], 1000000 - 8) << r1.dump();

  auto [s2, r2] = chat("acme/bot", "and again");
  ASSERT_EQ(s2, 200) << r2.dump();
  EXPECT_EQ(r2["reply"], "echo: and again");

  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0]["path"], "/v1/chat/completions");
  EXPECT_EQ(reqs[0]["auth"], "Bearer " + api_key);
  auto& body = reqs[1]["body"];
  EXPECT_EQ(body["model"], "fake-model");
  EXPECT_EQ(body["max_tokens"], 64);
  EXPECT_DOUBLE_EQ(body["temperature"].get<double>(), 0.5);
  json expected = json::array({{{"role", "system"}, {"content", "You are terse."}},
                               {{"role", "user"}, {"content", "hello there"}},
                               {{"role", "assistant"}, {"content", "echo: hello there"}},
                               {{"role", "user"}, {"content", "and again"}}});
  EXPECT_EQ(body["messages"], expected) << body.dump();

  // The endpoint calls are counted (hive_llm_*): 2 ok, with the tokens the replies reported.
  {
    http_client metrics_http{node->metrics_port};
    auto scrape = metrics_http.request("GET", "/metrics");
    ASSERT_TRUE(scrape && scrape->status == 200);
    auto& text = scrape->body;
    EXPECT_EQ(hive::test::metric_sum(text, "hive_llm_requests_total", {"result=\"ok\""}), 2)
      << text;
    EXPECT_EQ(hive::test::metric_sum(text, "hive_llm_request_seconds_count"), 2);
    EXPECT_EQ(hive::test::metric_sum(text, "hive_llm_tokens_total", {"type=\"prompt\""})
                + hive::test::metric_sum(text, "hive_llm_tokens_total", {"type=\"completion\""}),
              r1["tokens"]["total"].get<double>() + r2["tokens"]["total"].get<double>());
    EXPECT_NE(text.find("# TYPE hive_llm_request_seconds histogram"), std::string::npos);
  }

  auto [s3, h] = ask("acme/bot", {{"op", "history"}});
  ASSERT_EQ(s3, 200);
  EXPECT_EQ(h["messages"].size(), 4u) << h.dump();
  EXPECT_EQ(h["turns"], 2);
  EXPECT_EQ(h["system"], "You are terse.");
  EXPECT_EQ(h["model"], "fake-model");

  // A retried chat with the same idempotency key is answered from the journal: the endpoint
  // is not asked again and the turn is not taken twice.
  json keyed{{"op", "chat"}, {"message", "only once"}};
  auto [k1, a1] = ask("acme/bot", keyed, 20000, {{"Idempotency-Key", "c:1"}});
  ASSERT_EQ(k1, 200) << a1.dump();
  auto [k2, a2] = ask("acme/bot", keyed, 20000, {{"Idempotency-Key", "c:1"}});
  ASSERT_EQ(k2, 200) << a2.dump();
  EXPECT_EQ(a2, a1);
  EXPECT_EQ(requests().size(), 3u);
  EXPECT_EQ(ask("acme/bot", {{"op", "history"}}).second["turns"], 3);

  // A reset is journaled and the next request starts afresh (the system prompt stays).
  ASSERT_EQ(ask("acme/bot", {{"op", "reset"}}).first, 200);
  ASSERT_EQ(chat("acme/bot", "fresh start").first, 200);
  reqs = requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_EQ(reqs[3]["body"]["messages"].size(), 2u) << reqs[3].dump();

  // Nothing of the key in the node's log (it names the variable, not its value).
  auto text = read_file(log);
  EXPECT_EQ(text.find(api_key), std::string::npos) << text;
  EXPECT_EQ(text.find("5ecret"), std::string::npos);
  EXPECT_NE(text.find("HIVE_TEST_LLM_KEY"), std::string::npos) << text;
}

TEST_F(llm_agent_test, a_wrong_key_is_refused_by_the_endpoint_and_reported_without_the_key) {
  ::setenv("HIVE_TEST_LLM_KEY", "sk-wrong-key-987", 1);
  ASSERT_NO_FATAL_FAILURE(start());
  ASSERT_EQ(spawn("acme/bot", json::object()).first, 201);
  auto [s, r] = chat("acme/bot", "hi");
  EXPECT_EQ(s, 422) << r.dump();
  EXPECT_EQ(code_of(r), "rejected");
  EXPECT_NE(message_of(r).find("HTTP 401"), std::string::npos) << r.dump();
  EXPECT_EQ(r.dump().find("sk-wrong-key-987"), std::string::npos);
  EXPECT_EQ(read_file(log).find("sk-wrong-key-987"), std::string::npos);
  // Nothing of the failed turn was kept.
  auto [s2, h] = ask("acme/bot", {{"op", "history"}});
  ASSERT_EQ(s2, 200);
  EXPECT_TRUE(h["messages"].empty()) << h.dump();
}

TEST_F(llm_agent_test, the_conversation_survives_kill_9_and_the_next_request_carries_it) {
  ASSERT_NO_FATAL_FAILURE(start());
  ASSERT_EQ(spawn("acme/bot", {{"system", "sys"}}).first, 201);
  ASSERT_EQ(chat("acme/bot", "first question").first, 200);
  ASSERT_EQ(chat("acme/bot", "second question").first, 200);
  // A failed call in between leaves no half turn behind.
  EXPECT_EQ(chat("acme/bot", "FAIL500 lost").first, 503);

  ASSERT_NO_FATAL_FAILURE(kill_and_restart());

  auto [s, h] = ask("acme/bot", {{"op", "history"}});
  ASSERT_EQ(s, 200) << h.dump();
  json expected = json::array({{{"role", "user"}, {"content", "first question"}},
                               {{"role", "assistant"}, {"content", "echo: first question"}},
                               {{"role", "user"}, {"content", "second question"}},
                               {{"role", "assistant"}, {"content", "echo: second question"}}});
  EXPECT_EQ(h["messages"], expected) << h.dump();
  EXPECT_EQ(h["turns"], 2);

  ASSERT_EQ(chat("acme/bot", "third").first, 200);
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 4u);
  auto& msgs = reqs[3]["body"]["messages"];
  ASSERT_EQ(msgs.size(), 6u) << msgs.dump();
  EXPECT_EQ(msgs[0]["content"], "sys");
  EXPECT_EQ(msgs[4]["content"], "echo: second question");
  EXPECT_EQ(msgs[5]["content"], "third");
}

TEST_F(llm_agent_test, the_history_is_bounded_oldest_turns_first_the_system_prompt_kept) {
  ASSERT_NO_FATAL_FAILURE(start({"llm.conversation_messages_max=4"}));
  ASSERT_EQ(spawn("acme/bot", {{"system", "sys"}}).first, 201);
  for (auto m : {"one", "two", "three"})
    ASSERT_EQ(chat("acme/bot", m).first, 200);
  auto [s, h] = ask("acme/bot", {{"op", "history"}});
  ASSERT_EQ(s, 200);
  ASSERT_EQ(h["messages"].size(), 4u) << h.dump();
  EXPECT_EQ(h["messages"][0]["content"], "two");
  ASSERT_EQ(chat("acme/bot", "four").first, 200);
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 4u);
  auto msgs = reqs.back()["body"]["messages"];
  ASSERT_EQ(msgs.size(), 6u) << msgs.dump();
  EXPECT_EQ(msgs[0]["content"], "sys");
  EXPECT_EQ(msgs[1]["content"], "two");
}

TEST_F(llm_agent_test, the_tenant_budget_refuses_once_spent_survives_restart_and_is_per_tenant) {
  // A "w1 w2 w3" turn costs 3 prompt + 4 completion ("echo: w1 w2 w3") = 7 tokens on a fresh
  // agent; the history makes a second turn cost 3 + 4 + 3 + 4 = 14.
  ASSERT_NO_FATAL_FAILURE(start({"llm.tenant_tokens_max=25"}));
  ASSERT_EQ(spawn("acme/a", json::object()).first, 201);
  ASSERT_EQ(spawn("acme/b", json::object()).first, 201);
  ASSERT_EQ(spawn("other/a", json::object()).first, 201);

  auto [s1, r1] = chat("acme/a", "w1 w2 w3");
  ASSERT_EQ(s1, 200) << r1.dump() << read_file(log);
  EXPECT_EQ(r1["tokens"]["total"], 7);
  EXPECT_EQ(r1["budget_left"], 18);
  // Another agent of the tenant spends from the same budget.
  auto [s2, r2] = chat("acme/b", "w1 w2 w3");
  ASSERT_EQ(s2, 200) << r2.dump();
  EXPECT_EQ(r2["budget_left"], 11);
  auto [s3, r3] = chat("acme/a", "w1 w2 w3"); // 14 tokens: the call that crosses the line
  ASSERT_EQ(s3, 200) << r3.dump();
  EXPECT_EQ(r3["tokens"]["total"], 14);
  EXPECT_EQ(r3["budget_left"], 0);

  auto sent = requests().size();
  auto [s4, r4] = chat("acme/b", "w1 w2 w3");
  EXPECT_EQ(s4, 403) << r4.dump();
  EXPECT_EQ(code_of(r4), "quota_exceeded");
  EXPECT_EQ(message_of(r4),
            "tenant acme spent its LLM token budget: 28 of 25 tokens (llm.tenant_tokens_max)");
  EXPECT_EQ(requests().size(), sent) << "a refused call reached the endpoint";

  // Another tenant has its own budget.
  auto [s5, r5] = chat("other/a", "w1 w2 w3");
  EXPECT_EQ(s5, 200) << r5.dump();
  EXPECT_EQ(r5["budget_left"], 18);

  // The figures are journaled: after kill -9 the tenant is still out of tokens.
  ASSERT_NO_FATAL_FAILURE(kill_and_restart());
  auto [s6, st] = ask("acme/llm-budget", {{"op", "status"}});
  ASSERT_EQ(s6, 200) << st.dump();
  EXPECT_EQ(st, (json{{"spent", 28}, {"limit", 25}, {"left", 0}}));
  auto [s7, r7] = chat("acme/a", "w1");
  EXPECT_EQ(s7, 403) << r7.dump();
  EXPECT_EQ(code_of(r7), "quota_exceeded");
  EXPECT_EQ(requests().size(), sent + 1);

  // A spawn config cannot raise the limit.
  auto [s8, b8] = spawn("acme/llm-budget2", {{"limit", 1000000}}, "token_budget");
  EXPECT_EQ(s8, 400) << b8;
  EXPECT_NE(b8.find("llm.tenant_tokens_max"), std::string::npos) << b8;
}

TEST_F(llm_agent_test, a_failing_endpoint_opens_the_breaker_which_fails_fast_then_recovers) {
  // (The node's own breaker in front of every agent counts the agent's errors too; raised here
  // so that only the llm agent's breaker is under test.)
  ASSERT_NO_FATAL_FAILURE(start({"llm.breaker_failures=2", "llm.breaker_open_ms=1500",
                                 "breaker.failures_consecutive_max=100"}));
  ASSERT_EQ(spawn("acme/bot", json::object()).first, 201);
  auto [s1, r1] = chat("acme/bot", "FAIL500 one");
  EXPECT_EQ(s1, 503) << r1.dump();
  EXPECT_EQ(code_of(r1), "unavailable");
  EXPECT_NE(message_of(r1).find("HTTP 500"), std::string::npos) << r1.dump();
  // A request the endpoint refuses as bad is not the endpoint failing.
  auto [s2, r2] = chat("acme/bot", "FAIL400 bad");
  EXPECT_EQ(s2, 422) << r2.dump();
  auto [s3, r3] = chat("acme/bot", "FAIL500 two");
  EXPECT_EQ(s3, 503) << r3.dump();
  EXPECT_EQ(code_of(r3), "unavailable");
  auto [s3b, r3b] = chat("acme/bot", "FAIL500 three");
  EXPECT_EQ(code_of(r3b), "unavailable") << "the breaker opened after 1 failure";
  auto sent = requests().size();
  ASSERT_EQ(sent, 4u);

  // Open: refused at once, nothing reaches the endpoint.
  auto t0 = std::chrono::steady_clock::now();
  auto [s4, r4] = chat("acme/bot", "are you there");
  auto [s5, r5] = chat("acme/bot", "are you there");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1000ms);
  EXPECT_EQ(s4, 503) << r4.dump();
  EXPECT_EQ(code_of(r4), "circuit_open") << r4.dump();
  EXPECT_NE(message_of(r4).find("probe"), std::string::npos) << r4.dump();
  EXPECT_EQ(code_of(r5), "circuit_open") << r5.dump();
  EXPECT_EQ(requests().size(), sent) << "a call went through an open breaker";
  auto [sh, h] = ask("acme/bot", {{"op", "history"}});
  EXPECT_EQ(sh, 200) << "history is answered while the breaker is open";
  EXPECT_TRUE(h["messages"].empty());

  // After breaker_open_ms one probe goes through; its success closes the breaker.
  std::this_thread::sleep_for(1600ms);
  auto [s6, r6] = chat("acme/bot", "back again");
  EXPECT_EQ(s6, 200) << r6.dump();
  auto [s7, r7] = chat("acme/bot", "still here");
  EXPECT_EQ(s7, 200) << r7.dump();
  EXPECT_EQ(requests().size(), sent + 2);
}

TEST_F(llm_agent_test, the_callers_deadline_cuts_the_endpoint_call) {
  // request_timeout_ms is long (60 s): only the ask's timeout_ms can cut the call early.
  ASSERT_NO_FATAL_FAILURE(start());
  ASSERT_EQ(spawn("acme/bot", json::object()).first, 201);
  auto t0 = std::chrono::steady_clock::now();
  auto [s, r] = chat("acme/bot", "SLEEP 6000 slowly", 800);
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(s, 504) << r.dump();
  EXPECT_EQ(code_of(r), "timeout");
  EXPECT_LT(elapsed, 3s);
  // The agent closed the connection at the deadline, not when the endpoint answered.
  std::optional<int64_t> closed_after;
  for (int i = 0; i < 100 && !closed_after; ++i) {
    for (auto& e : entries())
      if (e.value("event", "") == "closed_early")
        closed_after = e["after_ms"].get<int64_t>();
    if (!closed_after)
      std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(closed_after.has_value()) << "the endpoint never saw the connection closed";
  EXPECT_LT(*closed_after, 2500);
  // And the agent is free again at once (its thread is not stuck in the call).
  auto t1 = std::chrono::steady_clock::now();
  auto [s2, h] = ask("acme/bot", {{"op", "history"}}, 1000);
  EXPECT_EQ(s2, 200) << h.dump();
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 1000ms);
  EXPECT_TRUE(h["messages"].empty()) << h.dump();
}

TEST_F(llm_agent_test, bad_spawn_configs_are_refused_naming_the_field) {
  ASSERT_NO_FATAL_FAILURE(start({"llm.reply_tokens_max=100"}));
  auto expect_400 = [&](const json& config, const std::string& words) {
    auto [s, b] = spawn("acme/bad", config);
    EXPECT_EQ(s, 400) << config.dump() << " -> " << b;
    EXPECT_NE(b.find(words), std::string::npos) << config.dump() << " -> " << b;
  };
  expect_400({{"colour", "blue"}}, "unknown field 'colour'");
  expect_400({{"base_url", "http://169.254.169.254/"}}, "'base_url' is not allowed");
  expect_400({{"api_key", "x"}}, "'api_key' is not allowed");
  expect_400({{"max_tokens", 101}}, "'max_tokens' must be an integer 1..100");
  expect_400({{"max_tokens", "many"}}, "'max_tokens'");
  expect_400({{"temperature", 3}}, "'temperature' must be a number 0..2");
  expect_400({{"model", ""}}, "'model'");
  expect_400({{"system", 7}}, "'system'");
  expect_400(json::array({1}), "'config'");
  EXPECT_EQ(spawn("acme/good", {{"max_tokens", 100}}).first, 201);
  auto [s, r] = chat("acme/good", "hi");
  EXPECT_EQ(s, 200) << r.dump();
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0]["body"]["max_tokens"], 100);
}

TEST_F(llm_agent_test, the_debate_example_runs_on_llm_agents_and_charges_the_tenant_budget) {
  ASSERT_NO_FATAL_FAILURE(start());
  // One llm agent per voice (each keeps its own conversation) and one for the judge.
  for (auto id : {"acme/gpt-a", "acme/gpt-b", "acme/gpt-judge"})
    ASSERT_EQ(spawn(id, json::object()).first, 201);
  ASSERT_EQ(
    spawn("acme/pro", {{"llm", "gpt-a"}, {"persona", "Argue for."}, {"confidence", 0.4}}, "debater")
      .first,
    201);
  ASSERT_EQ(spawn("acme/con", {{"llm", "gpt-b"}, {"persona", "Argue against."}}, "debater").first,
            201);
  ASSERT_EQ(
    spawn("acme/judge", {{"debaters", {"pro", "con"}}, {"llm", "gpt-judge"}}, "judge").first, 201);
  auto [s, r] = ask("acme/judge", {{"op", "debate"}, {"question", "should we cache it?"}});
  ASSERT_EQ(s, 200) << r.dump() << read_file(log);
  // The fake answers "echo: <prompt>": each debater's answer is its persona and the question.
  ASSERT_EQ(r["answers"].size(), 2u) << r.dump();
  EXPECT_EQ(r["answers"][0]["answer"], "echo: Argue for.\n\nshould we cache it?") << r.dump();
  EXPECT_EQ(r["answers"][1]["answer"], "echo: Argue against.\n\nshould we cache it?") << r.dump();
  // The judge's model was shown both answers, numbered; its echo names "1." first.
  EXPECT_EQ(r["verdict"]["rule"], "llm") << r.dump();
  EXPECT_EQ(r["verdict"]["winner"], "acme/pro") << r.dump();
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 3u);
  auto judge_prompt = reqs[2]["body"]["messages"].back()["content"].get<std::string>();
  EXPECT_NE(judge_prompt.find("1. echo: Argue for."), std::string::npos) << judge_prompt;
  EXPECT_NE(judge_prompt.find("2. echo: Argue against."), std::string::npos) << judge_prompt;
  // All three calls were charged to acme's one budget.
  auto [bs, budget] = ask("acme/llm-budget", {{"op", "status"}});
  ASSERT_EQ(bs, 200) << budget.dump();
  EXPECT_GT(budget["spent"].get<int64_t>(), 0);
  int64_t sum = 0;
  for (auto id : {"acme/gpt-a", "acme/gpt-b", "acme/gpt-judge"}) {
    auto [hs, h] = ask(id, {{"op", "history"}});
    ASSERT_EQ(hs, 200) << h.dump();
    sum += h["tokens_total"].get<int64_t>();
  }
  EXPECT_EQ(budget["spent"].get<int64_t>(), sum) << budget.dump();
}

TEST_F(llm_agent_test, only_an_admin_may_stop_or_spawn_a_tenants_budget) {
  ASSERT_NO_FATAL_FAILURE(start());
  ASSERT_EQ(spawn("acme/bot", json::object()).first, 201);
  auto [s1, r1] = chat("acme/bot", "spend something");
  ASSERT_EQ(s1, 200) << r1.dump();
  http_client http{node->gateway_port};
  auto made = http.request("POST", "/v1/keys",
                           json{{"tenant", "acme"}, {"role", "operator"}, {"name", "op"}}.dump());
  ASSERT_TRUE(made && made->status == 201) << (made ? made->body : "no answer");
  std::map<std::string, std::string> op{
    {"Authorization", "Bearer " + json::parse(made->body)["key"].get<std::string>()}};
  // The tenant's operator can neither erase what was spent nor put another kind there.
  auto del = http.request("DELETE", "/v1/agents/acme/llm-budget", {}, op);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 403) << del->body;
  EXPECT_NE(del->body.find("only an admin may stop it"), std::string::npos) << del->body;
  auto sp =
    http.request("POST", "/v1/agents", json{{"id", "beta/llm-budget"}, {"kind", "counter"}}.dump(),
                 {{"Authorization", op.at("Authorization")}});
  ASSERT_TRUE(sp);
  EXPECT_EQ(sp->status, 403) << sp->body; // (beta is not its tenant either)
  auto own = http.request("POST", "/v1/agents",
                          json{{"id", "acme/llm-budget"}, {"kind", "counter"}}.dump(), op);
  ASSERT_TRUE(own);
  EXPECT_EQ(own->status, 403) << own->body;
  EXPECT_NE(own->body.find("only an admin may spawn it"), std::string::npos) << own->body;
  auto [bs, budget] = ask("acme/llm-budget", {{"op", "status"}});
  ASSERT_EQ(bs, 200) << budget.dump();
  EXPECT_GT(budget["spent"].get<int64_t>(), 0) << budget.dump();
  // The admin may (e.g. to reset a tenant's budget).
  auto admin_del = http.request("DELETE", "/v1/agents/acme/llm-budget");
  ASSERT_TRUE(admin_del);
  EXPECT_EQ(admin_del->status, 204) << admin_del->body;
}
