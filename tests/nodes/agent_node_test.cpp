// End-to-end: the real agent-node binary on 127.0.0.1 with ephemeral ports.

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/auth.hpp"
#include "support/http_client.hpp"
#include "support/metrics_text.hpp"
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

TEST(agent_node, without_an_admin_key_file_one_key_is_generated_printed_once_and_kept_hashed) {
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  std::string key;
  {
    node_process node{node_args(dir), log, false};
    ASSERT_TRUE(node.wait_ready()) << read_file(log);
    auto line = node.wait_line("generated the bootstrap admin key", 10s);
    ASSERT_TRUE(line) << read_file(log);
    key = line->substr(line->rfind(' ') + 1);
    ASSERT_EQ(key.rfind("hive_", 0), 0u) << *line;
    http_client anonymous{node.gateway_port, ""};
    auto denied = anonymous.request("GET", "/v1/agents");
    ASSERT_TRUE(denied);
    EXPECT_EQ(denied->status, 401) << denied->body;
    EXPECT_EQ(anonymous.request("GET", "/healthz")->status, 200);
    http_client admin{node.gateway_port, key};
    auto ok = admin.request("GET", "/v1/agents");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200) << ok->body;
    node.signal(SIGTERM);
    EXPECT_EQ(node.wait_exit(20s), 0);
  }
  auto stored = read_file(dir.path / "data" / "keys.json");
  EXPECT_EQ(stored.find(key.substr(22)), std::string::npos) << "the key is stored in clear";
  // A restart on the same data directory keeps the key and prints none.
  node_process again{node_args(dir), log, false};
  ASSERT_TRUE(again.wait_ready()) << read_file(log);
  EXPECT_FALSE(again.wait_line("generated the bootstrap admin key", 1s));
  http_client admin{again.gateway_port, key};
  auto ok = admin.request("GET", "/v1/agents");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

TEST(agent_node, a_bad_admin_key_file_or_jwt_secret_file_exits_2_naming_it) {
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  std::ofstream{dir.path / "short.key"} << "short\n";
  for (auto flag : {std::vector<std::string>{"--admin-key-file", (dir.path / "short.key").string()},
                    std::vector<std::string>{
                      "--set", "auth.jwt_secret_file=" + (dir.path / "none").string()}}) {
    auto args = node_args(dir);
    args.insert(args.end(), flag.begin(), flag.end());
    node_process node{args, log};
    EXPECT_EQ(node.wait_exit(20s), 2) << read_file(log);
    auto text = read_file(log);
    EXPECT_NE(text.find(flag[0] == "--set" ? "auth.jwt_secret_file" : "auth.admin_key_file"),
              std::string::npos)
      << text;
  }
}

TEST(agent_node, agentctl_manages_keys_and_a_jwt_from_the_secret_file_is_accepted) {
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  auto secret = std::string{"agent-node-test-jwt-secret-0123456789abcdef"};
  std::ofstream{dir.path / "jwt.secret"} << secret << "\n";
  auto args = node_args(dir);
  args.insert(args.end(), {"--set", "auth.jwt_secret_file=" + (dir.path / "jwt.secret").string()});
  node_process node{args, log};
  ASSERT_TRUE(node.wait_ready()) << read_file(log);
  auto url = "http://127.0.0.1:" + std::to_string(node.gateway_port);
  auto made = hive::test::run_agentctl(
    {"keys", "create", "--tenant", "beta", "--role", "operator", "--name", "ci", "--node", url});
  ASSERT_EQ(made.code, 0) << made.output;
  auto key = made.output.substr(made.output.rfind('\n', made.output.size() - 2) + 1);
  key.erase(key.find_last_not_of("\n") + 1);
  ASSERT_EQ(key.rfind("hive_", 0), 0u) << made.output;
  auto id = key.substr(5, 16);
  // The new key works, only within its tenant.
  http_client op{node.gateway_port, key};
  EXPECT_EQ(op.request("POST", "/v1/agents", R"({"id":"beta/c","kind":"counter"})")->status, 201);
  EXPECT_EQ(op.request("POST", "/v1/agents", R"({"id":"gamma/c","kind":"counter"})")->status, 403);
  auto listed = hive::test::run_agentctl({"keys", "list", "--node", url});
  ASSERT_EQ(listed.code, 0) << listed.output;
  EXPECT_NE(listed.output.find(id), std::string::npos) << listed.output;
  EXPECT_EQ(listed.output.find(key), std::string::npos) << "list shows the key itself";
  // Without credentials agentctl fails with exit 1 and says why.
  ::setenv("HIVE_TOKEN", "", 1);
  auto anon = hive::test::run_agentctl({"keys", "list", "--node", url, "--token", "nope"});
  ::unsetenv("HIVE_TOKEN");
  EXPECT_EQ(anon.code, 1) << anon.output;
  EXPECT_NE(anon.output.find("401 unauthenticated"), std::string::npos) << anon.output;
  auto revoked = hive::test::run_agentctl({"keys", "revoke", id, "--node", url});
  ASSERT_EQ(revoked.code, 0) << revoked.output;
  op.close();
  EXPECT_EQ(op.request("GET", "/v1/agents")->status, 401);
  // A JWT signed with the configured secret.
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  json claims{{"iss", "hive"},    {"aud", "hive"},    {"sub", "svc"},
              {"tenant", "beta"}, {"role", "viewer"}, {"exp", now + 300}};
  auto token = hive::sign_jwt(claims, secret);
  http_client viewer{node.gateway_port, token};
  auto seen = viewer.request("GET", "/v1/agents/beta/c");
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->status, 200) << seen->body;
  EXPECT_EQ(viewer.request("DELETE", "/v1/agents/beta/c")->status, 403);
  // The audit log of the data directory holds the key's creation and revocation.
  auto audit = read_file(dir.path / "data" / "audit.log");
  EXPECT_NE(audit.find("\"POST /v1/keys\""), std::string::npos) << audit;
  EXPECT_NE(audit.find("\"DELETE /v1/keys/{id}\""), std::string::npos) << audit;
}

TEST(agent_node, agentctl_spawns_tells_asks_lists_inspects_and_stops_agents) {
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  node_process node{node_args(dir), log};
  ASSERT_TRUE(node.wait_ready()) << read_file(log);
  auto url = "http://127.0.0.1:" + std::to_string(node.gateway_port);
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--url", url});
    return hive::test::run_agentctl(args);
  };
  auto spawned = ctl({"spawn", "acme/c1", "--kind", "counter"});
  ASSERT_EQ(spawned.code, 0) << spawned.output;
  EXPECT_NE(spawned.output.find("spawned acme/c1 (counter) on e2e"), std::string::npos)
    << spawned.output;
  ASSERT_EQ(ctl({"spawn", "acme/k1", "--kind", "kv", "--config", R"({"entries_max":5})"}).code, 0);
  auto told = ctl({"tell", "acme/c1", R"({"op":"add","by":4})"});
  ASSERT_EQ(told.code, 0) << told.output;
  auto asked = ctl({"ask", "acme/c1", R"({"op":"add","by":1})", "--timeout-ms", "3000"});
  ASSERT_EQ(asked.code, 0) << asked.output;
  EXPECT_NE(asked.output.find(R"({"value":5})"), std::string::npos) << asked.output;
  auto listed = ctl({"agents", "--kind", "counter"});
  ASSERT_EQ(listed.code, 0) << listed.output;
  EXPECT_NE(listed.output.find("acme/c1"), std::string::npos) << listed.output;
  EXPECT_EQ(listed.output.find("acme/k1"), std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find("1 agents"), std::string::npos) << listed.output;
  auto as_json = ctl({"--json", "agents"});
  ASSERT_EQ(as_json.code, 0) << as_json.output;
  auto j = json::parse(as_json.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << as_json.output;
  EXPECT_EQ(j["agents"].size(), 2u) << as_json.output;
  auto inspected = ctl({"inspect", "acme/c1"});
  ASSERT_EQ(inspected.code, 0) << inspected.output;
  EXPECT_NE(inspected.output.find("kind:"), std::string::npos) << inspected.output;
  EXPECT_NE(inspected.output.find("counter"), std::string::npos) << inspected.output;
  // Failures: exit 1 naming the HTTP answer; bad usage: exit 2.
  auto missing = ctl({"inspect", "acme/nobody"});
  EXPECT_EQ(missing.code, 1) << missing.output;
  EXPECT_NE(missing.output.find("404 agent_not_found"), std::string::npos) << missing.output;
  auto bad_json = ctl({"ask", "acme/c1", "{not json"});
  EXPECT_EQ(bad_json.code, 2) << bad_json.output;
  auto bad_id = ctl({"stop", "Acme/C1"});
  EXPECT_EQ(bad_id.code, 2) << bad_id.output;
  auto stopped = ctl({"stop", "acme/c1"});
  ASSERT_EQ(stopped.code, 0) << stopped.output;
  EXPECT_EQ(ctl({"inspect", "acme/c1"}).code, 1);
  // $HIVE_URL is the default gateway.
  ::setenv("HIVE_URL", url.c_str(), 1);
  auto via_env = hive::test::run_agentctl({"agents"});
  ::unsetenv("HIVE_URL");
  EXPECT_EQ(via_env.code, 0) << via_env.output;
  EXPECT_NE(via_env.output.find("acme/k1"), std::string::npos) << via_env.output;
}

// Issue #8: every series on /metrics is one of the documented families, with its documented
// type, a unit in its name, and a bounded label set (never an agent id).
TEST(agent_node, metrics_have_the_documented_names_types_units_and_labels) {
  temp_dir dir;
  auto log = (dir.path / "node.log").string();
  node_process node{node_args(dir), log};
  ASSERT_TRUE(node.wait_ready()) << read_file(log);
  http_client http{node.gateway_port};
  // Some traffic: a journaled counter, a topic that forwards to a subscriber (messages sent),
  // an ask to a missing agent (a 404 series).
  for (auto spec : {R"({"id":"acme/metrics-c1","kind":"counter"})",
                    R"({"id":"acme/metrics-sub","kind":"counter"})",
                    R"({"id":"acme/topic.metrics","kind":"topic"})"}) {
    auto r = http.request("POST", "/v1/agents", spec);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << r->body;
  }
  for (int i = 0; i < 40; ++i) {
    auto r = http.request("POST", "/v1/agents/acme/metrics-c1/ask", R"({"op":"add","by":1})");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  auto missing = http.request("POST", "/v1/agents/acme/metrics-nobody/ask", R"({"op":"get"})");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto sub = http.request("POST", "/v1/agents/acme/topic.metrics/ask",
                          R"({"op":"subscribe","agent":"acme/metrics-sub"})");
  ASSERT_TRUE(sub);
  ASSERT_EQ(sub->status, 200) << sub->body;
  auto pub = http.request("POST", "/v1/agents/acme/topic.metrics/ask",
                          R"({"op":"publish","message":{"op":"add","by":5}})");
  ASSERT_TRUE(pub);
  ASSERT_EQ(pub->status, 200) << pub->body;

  // name -> type: the whole documented set (README "Metrics", runtime/metrics.cpp,
  // actors/llm_agent.cpp). A new family must be added here, with its type.
  const std::map<std::string, std::string> documented{
    {"hive_messages_handled_total", "counter"},
    {"hive_messages_sent_total", "counter"},
    {"hive_mailbox_messages", "histogram"},
    {"hive_agent_failures_total", "counter"},
    {"hive_message_handling_seconds", "histogram"},
    {"hive_restarts_total", "counter"},
    {"hive_escalations_total", "counter"},
    {"hive_agents_live", "gauge"},
    {"hive_agents_hibernated", "gauge"},
    {"hive_hibernations_total", "counter"},
    {"hive_breaker_transitions_total", "counter"},
    {"hive_breakers", "gauge"},
    {"hive_gateway_requests_total", "counter"},
    {"hive_gateway_request_seconds", "histogram"},
    {"hive_binary_requests_total", "counter"},
    {"hive_binary_request_seconds", "histogram"},
    {"hive_binary_connections", "gauge"},
    {"hive_activations_total", "counter"},
    {"hive_passivations_total", "counter"},
    {"hive_duplicate_commands_total", "counter"},
    {"hive_journal_commit_batch_writes", "histogram"},
    {"hive_journal_commit_seconds", "histogram"},
    {"hive_journal_append_seconds", "histogram"},
    {"hive_storage_failures_total", "counter"},
    {"hive_migrations_total", "counter"},
    {"hive_migration_pause_seconds", "histogram"},
    {"hive_replication_writes_total", "counter"},
    {"hive_replication_repairs_total", "counter"},
    {"hive_failovers_total", "counter"},
    {"hive_replication_epochs_total", "counter"},
    {"hive_transport_frames_total", "counter"},
    {"hive_transport_writes_total", "counter"},
    {"hive_transport_connections_refused_total", "counter"},
    {"hive_transport_tells_failed_total", "counter"},
    {"hive_transport_tls_refused_total", "counter"},
    {"hive_directory_routes_total", "counter"},
    {"hive_directory_misses_total", "counter"},
    {"hive_llm_requests_total", "counter"},
    {"hive_llm_request_seconds", "histogram"},
    {"hive_llm_tokens_total", "counter"},
  };
  // What ARCHITECTURE.md's observability section names, present after the traffic above:
  // messages in/out per kind, mailbox depth, handling latency, restarts, breaker state,
  // activations, passivations, migrations and their pause, journal latency, gateway latency
  // by route and code.
  const std::vector<std::string> required{"hive_messages_handled_total",
                                          "hive_messages_sent_total",
                                          "hive_mailbox_messages",
                                          "hive_message_handling_seconds",
                                          "hive_restarts_total",
                                          "hive_breakers",
                                          "hive_activations_total",
                                          "hive_passivations_total",
                                          "hive_migration_pause_seconds",
                                          "hive_journal_append_seconds",
                                          "hive_gateway_request_seconds",
                                          "hive_gateway_requests_total",
                                          "hive_agents_live"};
  // Label names allowed per family type; `le` only on histogram buckets.
  const std::set<std::string> label_names{"kind",  "code",  "direction", "level", "result",
                                          "route", "state", "to",        "way",   "type"};
  // Units: counters end in _total; histograms and gauges name what they measure.
  const std::vector<std::string> histogram_units{"_seconds", "_bytes", "_messages", "_writes"};
  const std::set<std::string> unitless_gauges{"hive_agents_live", "hive_agents_hibernated",
                                              "hive_breakers", "hive_binary_connections"};

  http_client metrics{node.metrics_port};
  std::string text;
  // Counts are flushed once the agents' queues drain: wait for the topic's forward.
  for (int i = 0; i < 200; ++i) {
    auto scrape = metrics.request("GET", "/metrics");
    ASSERT_TRUE(scrape);
    ASSERT_EQ(scrape->status, 200);
    text = scrape->body;
    if (hive::test::metric_sum(text, "hive_messages_sent_total", {"kind=\"topic\""}) >= 1)
      break;
    std::this_thread::sleep_for(20ms);
  }
  std::map<std::string, std::string> types; // family -> type, from "# TYPE"
  std::set<std::string> helped;
  std::map<std::string, int> samples;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);) {
    if (line.empty())
      continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream l{line.substr(7)};
      std::string name, type;
      l >> name >> type;
      EXPECT_EQ(types.count(name), 0u) << "two TYPE lines for " << name;
      types[name] = type;
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) {
      std::istringstream l{line.substr(7)};
      std::string name;
      l >> name;
      helped.insert(name);
      continue;
    }
    ASSERT_NE(line[0], '#') << "unexpected comment: " << line;
    // A sample: NAME{labels} VALUE or NAME VALUE.
    auto brace = line.find('{');
    auto space = line.rfind(' ');
    ASSERT_NE(space, std::string::npos) << line;
    auto sample = line.substr(0, std::min(brace, space));
    if (sample.rfind("hive_", 0) != 0)
      continue; // prometheus-cpp's own exposer_* series
    // The family: the sample name, without a histogram's suffix.
    std::string family = sample;
    for (auto suffix : {"_bucket", "_sum", "_count"}) {
      auto s = std::string{suffix};
      if (sample.size() > s.size() && sample.compare(sample.size() - s.size(), s.size(), s) == 0
          && types.count(sample.substr(0, sample.size() - s.size())) > 0
          && types[sample.substr(0, sample.size() - s.size())] == "histogram")
        family = sample.substr(0, sample.size() - s.size());
    }
    ASSERT_EQ(types.count(family), 1u) << "a sample before its # TYPE: " << line;
    ++samples[family];
    if (types[family] != "histogram") {
      EXPECT_EQ(sample, family) << line;
    }
    // Labels: allowed names only; no agent id or agent name in any value.
    if (brace != std::string::npos) {
      auto labels = line.substr(brace + 1, line.rfind('}') - brace - 1);
      std::regex pair{R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re"};
      for (std::sregex_iterator it{labels.begin(), labels.end(), pair}, end; it != end; ++it) {
        auto name = (*it)[1].str();
        auto value = (*it)[2].str();
        if (name == "le") {
          EXPECT_EQ(sample, family + "_bucket") << "le outside a histogram bucket: " << line;
          continue;
        }
        EXPECT_EQ(label_names.count(name), 1u) << "label '" << name << "' is not in the "
                                               << "bounded set: " << line;
        EXPECT_EQ(value.find("metrics-"), std::string::npos) << "an agent id in a label: " << line;
        EXPECT_EQ(value.find("acme"), std::string::npos) << "a tenant in a label: " << line;
      }
    }
  }
  for (auto& [name, type] : types) {
    if (name.rfind("hive_", 0) != 0)
      continue; // prometheus-cpp's own (exposer_*) series
    auto doc = documented.find(name);
    ASSERT_NE(doc, documented.end())
      << name << " (" << type << ") is not in the documented set: add it to this test, the "
      << "README's metrics table and deploy/ where it matters";
    EXPECT_EQ(type, doc->second) << name;
    EXPECT_EQ(helped.count(name), 1u) << name << " has no # HELP";
    if (type == "counter") {
      EXPECT_TRUE(name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0) << name;
    } else if (type == "histogram") {
      bool unit = false;
      for (auto& u : histogram_units)
        unit = unit
          || (name.size() > u.size() && name.compare(name.size() - u.size(), u.size(), u) == 0);
      EXPECT_TRUE(unit) << name << " names no unit";
    } else {
      EXPECT_EQ(type, "gauge") << name;
      EXPECT_EQ(unitless_gauges.count(name), 1u) << name;
    }
  }
  for (auto& name : required) {
    EXPECT_EQ(types.count(name), 1u) << name << " is missing from /metrics";
    EXPECT_GT(samples[name], 0) << name << " has no series after the traffic";
  }
  EXPECT_GE(hive::test::metric_sum(text, "hive_messages_handled_total", {"kind=\"counter\""}), 41);
  EXPECT_GE(hive::test::metric_sum(text, "hive_messages_sent_total", {"kind=\"topic\""}), 1);
  EXPECT_GE(hive::test::metric_sum(text, "hive_mailbox_messages_count", {"kind=\"counter\""}), 5);
  EXPECT_GE(hive::test::metric_sum(text, "hive_gateway_requests_total", {"code=\"404\""}), 1);
}
