// The multi-agent communication patterns on 3 real agent-node processes: a topic whose
// subscribers live on every node gets each publication to all of them in order, and keeps its
// subscribers when its own node is killed with -9 (it is journaled and replicated); a
// broadcast through any gateway reaches the providers of a capability on every node, filtered;
// the debate example with debaters spread over the nodes.

#include <csignal>

#include "support/test_cluster.hpp"

namespace {

using namespace hive::test;

class multiagent_cluster_test : public cluster_test {
protected:
  http_response call(size_t via, const std::string& method, const std::string& target,
                     const json& body = json::object()) {
    http_client http{nodes[via].proc->gateway_port};
    auto r = http.request(method, target, body.dump());
    return r ? *r : http_response{};
  }

  http_response ask(size_t via, const std::string& id, const json& body) {
    return call(via, "POST", "/v1/agents/" + id + "/ask", body);
  }

  void spawn_with(size_t via, const json& body) {
    auto r = call(via, "POST", "/v1/agents", body);
    ASSERT_EQ(r.status, 201) << body.dump() << ": " << r.body;
  }

  /// The list kv `id` keeps under `key`, read through node `via` (empty when unreadable).
  json kv_list(size_t via, const std::string& id, const std::string& key) {
    auto r = ask(via, id, {{"op", "get"}, {"key", key}});
    auto j = json::parse(r.body, nullptr, false);
    return r.status == 200 && j.contains("value") ? j["value"] : json::array();
  }
};

json expected_list(int from, int to) {
  json out = json::array();
  for (int i = from; i < to; ++i)
    out.push_back("m" + std::to_string(i));
  return out;
}

} // namespace

TEST_F(multiagent_cluster_test, a_topic_reaches_subscribers_on_every_node_and_survives_kill_9) {
  form_three();
  // The topic on n3, one durable subscriber on each node.
  spawn_agent(0, "acme/topic.news", "topic", "n3");
  const char* names[] = {"n1", "n2", "n3"};
  for (int i = 0; i < 3; ++i) {
    spawn_agent(0, "acme/k" + std::to_string(i + 1), "kv", names[i]);
    auto r = ask(static_cast<size_t>(i), "acme/topic.news",
                 {{"op", "subscribe"}, {"agent", "acme/k" + std::to_string(i + 1)}});
    ASSERT_EQ(r.status, 200) << r.body;
  }
  // 10 publications through n2's gateway: every subscriber gets all, in order.
  for (int i = 0; i < 10; ++i) {
    auto r =
      ask(1, "acme/topic.news",
          {{"op", "publish"},
           {"message", {{"op", "append"}, {"key", "news"}, {"value", "m" + std::to_string(i)}}}});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body)["delivered_to"], 3) << r.body;
  }
  for (int i = 0; i < 3; ++i) {
    auto id = "acme/k" + std::to_string(i + 1);
    json got;
    auto ok = within(10s, [&] {
      got = kv_list(0, id, "news");
      return got.size() >= 10;
    });
    EXPECT_TRUE(ok) << id << " got " << got.dump();
    EXPECT_EQ(got, expected_list(0, 10)) << id;
  }
  // kill -9 of the topic's node: a survivor serves the topic with its subscribers (k3 died
  // with n3, so its deliveries wait until it is served again, on a survivor too).
  nodes[2].proc->signal(SIGKILL);
  ASSERT_TRUE(nodes[2].proc->wait_exit(10s));
  http_response r;
  auto served = within(20s, [&] {
    r =
      ask(0, "acme/topic.news",
          {{"op", "publish"}, {"message", {{"op", "append"}, {"key", "news"}, {"value", "m10"}}}});
    return r.status == 200;
  });
  ASSERT_TRUE(served) << r.status << " " << r.body << "\n" << log_tails(6000);
  EXPECT_EQ(json::parse(r.body)["delivered_to"], 3) << r.body;
  for (auto id : {"acme/k1", "acme/k2"}) {
    json got;
    auto ok = within(10s, [&] {
      got = kv_list(1, id, "news");
      return got.size() >= 11;
    });
    EXPECT_TRUE(ok) << id << " got " << got.dump();
    EXPECT_EQ(got, expected_list(0, 11)) << id;
  }
  auto subs = ask(1, "acme/topic.news", {{"op", "subscribers"}});
  ASSERT_EQ(subs.status, 200) << subs.body;
  EXPECT_EQ(json::parse(subs.body)["subscribers"], json({"acme/k1", "acme/k2", "acme/k3"}));
}

TEST_F(multiagent_cluster_test,
       a_broadcast_through_any_gateway_reaches_filtered_providers_on_every_node) {
  form_three();
  const char* names[] = {"n1", "n2", "n3"};
  for (int i = 0; i < 3; ++i)
    spawn_with(0,
               {{"id", "acme/c" + std::to_string(i + 1)},
                {"kind", "counter"},
                {"node", names[i]},
                {"capabilities", {"tally"}}});
  spawn_with(0, {{"id", "beta/c9"}, {"kind", "counter"}, {"capabilities", {"tally"}}});
  auto r = call(2, "POST", "/v1/capabilities/tally/broadcast?tenant=acme",
                {{"message", {{"op", "add"}, {"by", 5}}}});
  ASSERT_EQ(r.status, 202) << r.body;
  auto sent = json::parse(r.body)["sent_to"];
  std::sort(sent.begin(), sent.end());
  EXPECT_EQ(sent, json({"acme/c1", "acme/c2", "acme/c3"})) << r.body;
  for (auto id : {"acme/c1", "acme/c2", "acme/c3"}) {
    int v = -1;
    EXPECT_TRUE(within(10s, [&] { return (v = ask_value(0, id, R"({"op":"get"})")) == 5; }))
      << id << " = " << v;
  }
  EXPECT_EQ(ask_value(0, "beta/c9", R"({"op":"get"})"), 0); // another tenant's provider
  // Filtered to one node.
  r = call(1, "POST", "/v1/capabilities/tally/broadcast?tenant=acme",
           {{"message", {{"op", "add"}, {"by", 1}}}, {"filter", {{"nodes", {"n2"}}}}});
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(json::parse(r.body)["sent_to"], json({"acme/c2"})) << r.body;
  int v = -1;
  EXPECT_TRUE(within(10s, [&] { return (v = ask_value(0, "acme/c2", R"({"op":"get"})")) == 6; }))
    << v;
  EXPECT_EQ(ask_value(0, "acme/c1", R"({"op":"get"})"), 5);
  // Bad input names what is wrong.
  r = call(0, "POST", "/v1/capabilities/tally/broadcast?tenant=acme",
           {{"message", 1}, {"filter", {{"colour", "red"}}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("unknown filter field 'colour'"), std::string::npos) << r.body;
  r = call(0, "POST", "/v1/capabilities/tally/broadcast?tenant=acme", {{"filter", json::object()}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("'message'"), std::string::npos) << r.body;
  r = call(0, "POST", "/v1/capabilities/tally/broadcast", {{"message", 1}});
  EXPECT_EQ(r.status, 400) << r.body; // the admin names no tenant
  EXPECT_NE(r.body.find("?tenant="), std::string::npos) << r.body;
  r = call(0, "GET", "/v1/capabilities/tally/broadcast");
  EXPECT_EQ(r.status, 405) << r.body;
}

TEST_F(multiagent_cluster_test, a_judge_on_one_node_hears_debaters_on_the_others) {
  form_three();
  spawn_with(0,
             {{"id", "acme/alice"},
              {"kind", "debater"},
              {"node", "n2"},
              {"config", {{"answer", "yes: {question}"}, {"confidence", 0.7}}}});
  spawn_with(0,
             {{"id", "acme/bob"},
              {"kind", "debater"},
              {"node", "n3"},
              {"config", {{"answer", "no"}, {"confidence", 0.4}}}});
  spawn_with(0,
             {{"id", "acme/judge"},
              {"kind", "judge"},
              {"node", "n1"},
              {"config", {{"debaters", {"alice", "bob"}}}}});
  auto r = ask(2, "acme/judge", {{"op", "debate"}, {"question", "ship it?"}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  EXPECT_EQ(j["verdict"]["winner"], "acme/alice") << r.body;
  EXPECT_EQ(j["verdict"]["answer"], "yes: ship it?") << r.body;
  EXPECT_EQ(j["answers"].size(), 2u) << r.body;
  // Both debaters are found by their capability, cluster-wide.
  auto caps = call(0, "GET", "/v1/capabilities/debate");
  ASSERT_EQ(caps.status, 200);
  EXPECT_EQ(json::parse(caps.body)["providers"].size(), 2u) << caps.body;
}
