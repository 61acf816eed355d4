// The clients against a real agent-node: the binary protocol through the C++ client
// (protocols/client.hpp) on the port of the ready line, a graceful stop with binary
// connections open, and the Python HTTP client's example (protocols/python/example.py).

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protocols/client.hpp"
#include "support/http_client.hpp"
#include "support/node_process.hpp"

namespace {

using hive::test::node_process;
using hive::test::read_file;
using hive::test::temp_dir;
using json = nlohmann::json;

std::vector<std::string> node_args(const temp_dir& dir) {
  return {"--name",    "cl",          "--data-dir",  (dir.path / "data").string(),
          "--gateway", "127.0.0.1:0", "--metrics",   "127.0.0.1:0",
          "--binary",  "127.0.0.1:0", "--log-level", "info"};
}

/// Runs `cmd` through the shell; returns its exit code and output (stdout + stderr).
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr)
    return {-1, "popen failed"};
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, p))
    out.append(buf, n);
  auto status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, out};
}

TEST(clients, binary_client_against_a_real_node) {
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  node_process node{node_args(dir), log};
  ASSERT_TRUE(node.wait_ready()) << read_file(log);
  ASSERT_NE(node.binary_port, 0) << "no 'binary tcp://' in the ready line";
  auto c = hive::binary_client::connect("127.0.0.1", node.binary_port, hive::test::test_admin_key);
  ASSERT_TRUE(c) << hive::describe(c.error());
  EXPECT_EQ(json::parse(c->hello_reply())["node"], "cl");
  ASSERT_TRUE(c->spawn({"acme/b1", "counter", "", false, "", ""}));
  for (int i = 0; i < 100; ++i)
    c->send({0, 0, hive::wire::tell{"acme/b1", R"({"op":"add","by":1})", "", 0}});
  for (int i = 0; i < 100; ++i) {
    auto r = c->receive(std::chrono::seconds(10));
    ASSERT_TRUE(r && r->ok) << (r ? r->text : hive::describe(r.error()));
  }
  // A tell accepted over the binary protocol is seen over HTTP.
  hive::test::http_client h{node.gateway_port};
  auto got = h.request("POST", "/v1/agents/acme/b1/ask", R"({"op":"get"})");
  ASSERT_TRUE(got);
  EXPECT_EQ(json::parse(got->body)["value"], 100) << got->body;
  // The binary metrics are exported.
  hive::test::http_client mx{node.metrics_port};
  auto metrics = mx.request("GET", "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find(R"(hive_binary_requests_total{code="ok",kind="tell"} 100)"),
            std::string::npos)
    << metrics->body.substr(0, 2000);
  EXPECT_NE(metrics->body.find("hive_binary_connections 1"), std::string::npos);
  // SIGTERM with the connection open: the node stops cleanly, the client sees the close.
  node.signal(SIGTERM);
  auto code = node.wait_exit(std::chrono::seconds(20));
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, 0) << read_file(log);
  auto after = c->ask("acme/b1", R"({"op":"get"})", 1000);
  ASSERT_FALSE(after);
  EXPECT_EQ(hive::code_of(after.error()), hive::errc::io_error) << hive::describe(after.error());
}

TEST(clients, python_example_runs_against_a_real_node) {
  if (run("command -v python3").first != 0)
    GTEST_SKIP() << "python3 is not installed";
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  node_process node{node_args(dir), log};
  ASSERT_TRUE(node.wait_ready()) << read_file(log);
  auto [code, out] =
    run("python3 " + std::string{HIVE_SOURCE_DIR}
        + "/protocols/python/example.py --url http://127.0.0.1:" + std::to_string(node.gateway_port)
        + " --token-file " + hive::test::test_admin_key_file() + " --tenant pyt");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("value 7"), std::string::npos) << out;
  EXPECT_NE(out.find("refused as expected: 404 agent_not_found"), std::string::npos) << out;
  EXPECT_NE(out.find("viewer sees ['pyt/py-counter']"), std::string::npos) << out;
  EXPECT_NE(out.find("viewer may not tell: 403 forbidden"), std::string::npos) << out;
  EXPECT_NE(out.find("stopped pyt/py-counter"), std::string::npos) << out;
  // The counter is gone, as the example said.
  hive::test::http_client h{node.gateway_port};
  auto gone = h.request("GET", "/v1/agents/pyt/py-counter");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404) << gone->body;
}

} // namespace
