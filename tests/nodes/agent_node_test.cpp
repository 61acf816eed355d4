// End-to-end: the real agent-node binary on 127.0.0.1 with ephemeral ports.

#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/http_client.hpp"
#include "support/node_process.hpp"

using namespace std::chrono_literals;
using hive::test::http_client;
using hive::test::node_process;
using hive::test::temp_dir;
using nlohmann::json;

namespace {

using hive::test::read_file;

std::vector<std::string> node_args(const temp_dir& dir) {
  return {"--name",      "e2e",         "--data-dir", (dir.path / "data").string(),
          "--gateway",   "127.0.0.1:0", "--metrics",  "127.0.0.1:0",
          "--log-level", "info"};
}

} // namespace

TEST(agent_node, counter_survives_a_thousand_asks_and_the_node_stops_cleanly) {
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  node_process node{node_args(dir), log};
  ASSERT_TRUE(node.wait_ready()) << read_file(log);
  http_client http{node.gateway_port};
  auto health = http.request("GET", "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto created =
    http.request("POST", "/v1/agents", R"({"id":"acme/c1","kind":"counter","config":{}})");
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 201) << created->body;
  auto cj = json::parse(created->body);
  EXPECT_EQ(cj["id"], "acme/c1");
  EXPECT_EQ(cj["kind"], "counter");
  EXPECT_EQ(cj["node"], "e2e");
  for (int i = 1; i <= 1000; ++i) {
    auto r = http.request("POST", "/v1/agents/acme/c1/ask", R"({"op":"add","by":1})");
    ASSERT_TRUE(r) << "ask " << i;
    ASSERT_EQ(r->status, 200) << r->body;
    ASSERT_EQ(json::parse(r->body)["value"], i);
  }
  auto got = http.request("POST", "/v1/agents/acme/c1/ask", R"({"op":"get"})");
  ASSERT_TRUE(got);
  EXPECT_EQ(json::parse(got->body)["value"], 1000);
  // The metrics endpoint counts what the agent handled.
  // (Counts are flushed in batches once the agent's queue drains: poll briefly.)
  http_client metrics{node.metrics_port};
  std::string body;
  for (int i = 0; i < 100; ++i) {
    auto scrape = metrics.request("GET", "/metrics");
    ASSERT_TRUE(scrape);
    body = scrape->body;
    if (body.find("hive_messages_handled_total{kind=\"counter\"} 1001") != std::string::npos)
      break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_NE(body.find("hive_messages_handled_total{kind=\"counter\"} 1001"), std::string::npos)
    << body.substr(0, 2000);
  node.signal(SIGTERM);
  auto code = node.wait_exit(15s);
  ASSERT_TRUE(code.has_value()) << "node did not stop within 15 s";
  EXPECT_EQ(*code, 0) << read_file(log);
  auto text = read_file(log);
  EXPECT_NE(text.find("\"event\":\"node_stopped\""), std::string::npos) << text;
  // Every log line is a JSON object with the node name.
  std::istringstream lines{text};
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    auto j = json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "not JSON: " << line;
    EXPECT_EQ(j["node"], "e2e");
    ++n;
  }
  EXPECT_GT(n, 3);
}

TEST(agent_node, sigint_stops_the_node_with_exit_code_zero) {
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  node_process node{node_args(dir), log};
  ASSERT_TRUE(node.wait_ready()) << read_file(log);
  node.signal(SIGINT);
  auto code = node.wait_exit(15s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << read_file(log);
}

TEST(agent_node, bad_flags_and_config_exit_non_zero_with_the_reason) {
  temp_dir dir;
  struct bad_case {
    std::vector<std::string> args;
    std::string expected;
  };
  std::vector<bad_case> cases{
    {{"--gateway", "127.0.0.1"}, "gateway"},
    {{"--gateway", "127.0.0.1:70000"}, "70000"},
    {{"--log-level", "loud"}, "log.level"},
    {{"--set", "gateway.body_bytes_max=0"}, "gateway.body_bytes_max"},
    {{"--set", "no.such_key=1"}, "no.such_key"},
    {{"--config", (dir.path / "missing.toml").string()}, "missing.toml"},
    {{"--no-such-flag"}, "no-such-flag"},
  };
  for (auto& c : cases) {
    auto log = (dir.path / "bad.log").string();
    node_process node{c.args, log};
    auto code = node.wait_exit(10s);
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 2) << c.args[0];
    auto text = read_file(log);
    EXPECT_NE(text.find(c.expected), std::string::npos) << text;
  }
}

TEST(agent_node, a_second_node_on_the_same_data_dir_is_refused) {
  temp_dir dir;
  node_process first{node_args(dir), (dir.path / "a.log").string()};
  ASSERT_TRUE(first.wait_ready()) << read_file(dir.path / "a.log");
  node_process second{node_args(dir), (dir.path / "b.log").string()};
  auto code = second.wait_exit(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1);
  EXPECT_NE(read_file(dir.path / "b.log").find("in use"), std::string::npos);
}

TEST(agent_node, an_occupied_gateway_port_is_a_clear_start_error) {
  temp_dir dir;
  node_process first{node_args(dir), (dir.path / "a.log").string()};
  ASSERT_TRUE(first.wait_ready());
  temp_dir dir2;
  auto args = node_args(dir2);
  args[5] = "127.0.0.1:" + std::to_string(first.gateway_port);
  node_process second{args, (dir2.path / "b.log").string()};
  auto code = second.wait_exit(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1);
  EXPECT_NE(read_file(dir2.path / "b.log").find(std::to_string(first.gateway_port)),
            std::string::npos)
    << read_file(dir2.path / "b.log");
}
