// The communication patterns of the multi-agent layer on a real actor system and store:
// pub/sub topics (subscriptions kept durably by a journaled topic agent, created implicitly by
// an agent's subscribe, surviving a restart of the runtime; bounds, tenancy), broadcast to
// the providers of a capability with a filter, synchronous parallel asks of blocking agents
// (ask_now, ensure_kind, refusals), and the debate example with scripted debaters.

#include <future>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "actors/debate.hpp"
#include "actors/pubsub.hpp"
#include "actors/sample_kinds.hpp"
#include "protocols/errc.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/capabilities.hpp"
#include "runtime/node_runtime.hpp"
#include "support/node_process.hpp"

using namespace std::chrono_literals;
using namespace hive;
using nlohmann::json;

namespace {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Records every message it gets (body and sender); `{"op":"inbox.get"}` shows them.
class inbox_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    auto body = call.json();
    if (body && (*body)->is_object() && (*body)->contains("op") && (**body)["op"] == "inbox.get")
      return json{{"got", got_}}.dump();
    got_.push_back({{"body", body ? **body : json{}}, {"from", call.env().sender}});
    return std::string{"{}"};
  }

private:
  json got_ = json::array();
};

/// Drives the agent-side API from test asks: `{"op":"sub","topic":T}`, `{"op":"unsub",...}`,
/// `{"op":"pub","topic":T,"message":M}`, `{"op":"bcast","capability":C,"message":M,
/// "filter":F}`; keeps the notices it gets back (`{"op":"notices"}`).
class driver_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    if (auto n = call.notice()) {
      notices_.push_back({{"what", n->what},
                          {"tag", n->tag},
                          {"code", n->code},
                          {"body", json::parse(n->body, nullptr, false)}});
      return std::string{"{}"};
    }
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    auto& b = **body;
    auto op = b.value("op", "");
    caf::error err;
    if (op == "sub")
      err = pubsub::subscribe(call, b.value("topic", ""));
    else if (op == "unsub")
      err = pubsub::unsubscribe(call, b.value("topic", ""));
    else if (op == "pub")
      err = pubsub::publish(call, b.value("topic", ""), b["message"]);
    else if (op == "bcast") {
      auto f = broadcast_filter::parse(b.value("filter", json{}));
      if (!f)
        return std::move(f.error());
      err = call.broadcast(b.value("capability", ""), b["message"].dump(), std::move(*f), "b1");
    } else if (op == "notices")
      return json{{"notices", notices_}}.dump();
    if (err)
      return err;
    return std::string{"{}"};
  }

private:
  json notices_ = json::array();
};

/// Blocking: `{"op":"fan","to":[NAME...],"timeout_ms":N,"ensure":KIND}` asks each `{"op":
/// "get"}` (or `body`) with ask_now and answers the answers; `{"op":"self"}` asks itself.
class fanner_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    auto& b = **body;
    std::vector<call_context::request> reqs;
    if (b.value("op", "") == "self") {
      reqs.push_back({call.self_id(), "{}"});
    } else {
      for (auto& t : b["to"]) {
        auto id = parse_agent_id(t.get<std::string>());
        if (!id)
          return std::move(id.error());
        reqs.push_back(
          {*id, b.value("body", json{{"op", "get"}}).dump(), {}, 0, b.value("ensure", "")});
      }
    }
    auto t0 = wall_ms();
    auto answers =
      call.ask_now(std::move(reqs), std::chrono::milliseconds(b.value("timeout_ms", 5000)));
    if (!answers)
      return std::move(answers.error());
    json out = json::array();
    for (auto& a : *answers)
      out.push_back(a ? json{{"ok", json::parse(*a, nullptr, false)}}
                      : json{{"error", describe(a.error())}});
    return json{{"answers", out}, {"ms", wall_ms() - t0}}.dump();
  }
};

/// Sleeps `config.sleep_ms` per call, then answers `{"value":1}`; records when each call ran.
class sleeper_agent : public agent {
public:
  explicit sleeper_agent(const json& cfg) : sleep_ms_(cfg.value("sleep_ms", 0)) {}
  caf::expected<std::string> handle(call_context& call) override {
    auto start = wall_ms();
    std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    return json{
      {"value", 1}, {"start", start}, {"end", wall_ms()}, {"deadline", call.env().deadline_unix_ms}}
      .dump();
  }

private:
  int sleep_ms_;
};

/// An ephemeral non-blocking kind, to check that ask_now is refused to it.
class not_blocking_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    auto r = call.ask_now({{agent_id{"acme", "x"}, "{}"}}, 1s);
    if (!r)
      return std::move(r.error());
    return std::string{"{}"};
  }
};

template <class T>
kind_spec simple_kind(std::string name, bool blocking = false) {
  kind_spec k{std::move(name), "test kind",
              [](const json& c) -> caf::expected<std::unique_ptr<agent>> {
                if constexpr (std::is_constructible_v<T, const json&>)
                  return std::unique_ptr<agent>{new T(c)};
                else
                  return std::unique_ptr<agent>{new T};
              }};
  k.blocking = blocking;
  return k;
}

class multiagent_test : public ::testing::Test {
public:
  void start() {
    cfg.node.name = "m1";
    cfg.node.scheduler_threads = 2;
    sys_cfg.emplace();
    configure_actor_system(*sys_cfg, cfg);
    sys.emplace(*sys_cfg);
    kind_registry kinds;
    ASSERT_FALSE(register_sample_kinds(kinds));
    ASSERT_FALSE(pubsub::register_topic_kind(kinds, cfg.topics));
    ASSERT_FALSE(debate::register_debate_kinds(kinds));
    ASSERT_FALSE(kinds.add(simple_kind<inbox_agent>("inbox")));
    ASSERT_FALSE(kinds.add(simple_kind<driver_agent>("driver")));
    ASSERT_FALSE(kinds.add(simple_kind<fanner_agent>("fanner", true)));
    ASSERT_FALSE(kinds.add(simple_kind<sleeper_agent>("sleeper", true)));
    ASSERT_FALSE(kinds.add(simple_kind<not_blocking_agent>("plain")));
    m = std::make_shared<metrics>();
    auto db = open_node_store(cfg, dir.path.string(), m);
    ASSERT_TRUE(db) << describe(db.error());
    auto r = node_runtime::start(*sys, cfg, std::move(kinds), m, {}, *db);
    ASSERT_TRUE(r) << describe(r.error());
    rt = std::move(*r);
  }

  void SetUp() override {
    start();
  }

  void stop_all() {
    if (rt)
      rt->shutdown();
    rt.reset();
    sys.reset();
    sys_cfg.reset();
  }

  ~multiagent_test() override {
    stop_all();
  }

  caf::expected<agent_view> spawn(const std::string& id, const std::string& kind,
                                  json config = json::object(),
                                  std::vector<std::string> caps = {}) {
    std::promise<caf::expected<agent_view>> p;
    spawn_request req{*parse_agent_id(id), kind, std::move(config)};
    req.capabilities = std::move(caps);
    rt->spawn(std::move(req), [&](caf::expected<agent_view> v) { p.set_value(std::move(v)); });
    return p.get_future().get();
  }

  caf::expected<json> ask(const std::string& id, json body, std::chrono::milliseconds t = 5s) {
    std::promise<caf::expected<std::string>> p;
    auto to = parse_agent_id(id);
    if (!to)
      return to.error();
    rt->ask(*to, agent_call{envelope{7, to->tenant, 0, "test", {}, 0}, body.dump()}, t,
            [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    if (!r)
      return r.error();
    return json::parse(*r);
  }

  /// What inbox `id` got (its bodies), polling until it holds `n` or 5 s passed.
  json inbox(const std::string& id, size_t n) {
    json got = json::array();
    for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < 5s;
         std::this_thread::sleep_for(10ms)) {
      auto r = ask(id, {{"op", "inbox.get"}});
      got = r ? (*r)["got"] : json::array();
      if (got.size() >= n)
        break;
    }
    return got;
  }

  /// The notices driver `id` got, polling until it holds `n` or 5 s passed.
  json notices(const std::string& id, size_t n) {
    json got = json::array();
    for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < 5s;
         std::this_thread::sleep_for(10ms)) {
      auto r = ask(id, {{"op", "notices"}});
      got = r ? (*r)["notices"] : json::array();
      if (got.size() >= n)
        break;
    }
    return got;
  }

  json kv_list(const std::string& id, const std::string& key, size_t n) {
    json v;
    for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < 5s;
         std::this_thread::sleep_for(10ms)) {
      auto r = ask(id, {{"op", "get"}, {"key", key}});
      v = r ? (*r)["value"] : json{};
      if (v.is_array() && v.size() >= n)
        break;
    }
    return v;
  }

  test::temp_dir dir;
  node_config cfg;
  std::optional<caf::actor_system_config> sys_cfg;
  std::optional<caf::actor_system> sys;
  std::shared_ptr<metrics> m;
  std::unique_ptr<node_runtime> rt;
};

std::string error_text(const caf::expected<json>& r) {
  return r ? r->dump() : describe(r.error());
}

// -- topics -------------------------------------------------------------------------------------

TEST_F(multiagent_test, a_topic_sends_each_message_to_every_subscriber_in_order) {
  ASSERT_TRUE(spawn("acme/topic.news", "topic"));
  for (auto n : {"a", "b", "c"})
    ASSERT_TRUE(spawn(std::string{"acme/"} + n, "inbox"));
  for (auto n : {"acme/a", "acme/b", "acme/c"}) {
    auto r = ask("acme/topic.news", {{"op", "subscribe"}, {"agent", n}});
    ASSERT_TRUE(r) << error_text(r);
    EXPECT_EQ((*r)["subscribed"], true);
  }
  auto again = ask("acme/topic.news", {{"op", "subscribe"}, {"agent", "acme/a"}});
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)["subscribed"], false) << again->dump();
  EXPECT_EQ((*again)["subscribers"], 3);
  for (int i = 0; i < 20; ++i) {
    auto r = ask("acme/topic.news", {{"op", "publish"}, {"message", {{"n", i}}}});
    ASSERT_TRUE(r) << error_text(r);
    EXPECT_EQ((*r)["delivered_to"], 3);
  }
  for (auto n : {"acme/a", "acme/b", "acme/c"}) {
    auto got = inbox(n, 20);
    ASSERT_EQ(got.size(), 20u) << n << ": " << got.dump();
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(got[i]["body"]["n"], i) << n << " out of order: " << got.dump();
      EXPECT_EQ(got[i]["from"], "acme/topic.news");
    }
  }
  // Unsubscribed: b gets nothing more.
  auto un = ask("acme/topic.news", {{"op", "unsubscribe"}, {"agent", "acme/b"}});
  ASSERT_TRUE(un);
  EXPECT_EQ((*un)["removed"], true);
  auto r = ask("acme/topic.news", {{"op", "publish"}, {"message", "last"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["delivered_to"], 2);
  EXPECT_EQ(inbox("acme/a", 21).size(), 21u);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(inbox("acme/b", 20).size(), 20u);
  auto subs = ask("acme/topic.news", {{"op", "subscribers"}});
  ASSERT_TRUE(subs);
  EXPECT_EQ((*subs)["subscribers"], json({"acme/a", "acme/c"}));
}

TEST_F(multiagent_test, a_topic_refuses_other_tenants_bad_ops_and_subscribers_beyond_its_bound) {
  stop_all();
  cfg.topics.subscribers_max = 2;
  start();
  ASSERT_TRUE(spawn("acme/topic.t", "topic"));
  auto other = ask("acme/topic.t", {{"op", "subscribe"}, {"agent", "beta/x"}});
  ASSERT_FALSE(other);
  EXPECT_EQ(code_of(other.error()), errc::forbidden) << error_text(other);
  EXPECT_NE(error_text(other).find("tenant 'acme' only"), std::string::npos) << error_text(other);
  auto bad = ask("acme/topic.t", {{"op", "subscribe"}, {"agent", "NotAnId"}});
  ASSERT_FALSE(bad);
  EXPECT_NE(error_text(bad).find("field 'agent'"), std::string::npos) << error_text(bad);
  auto op = ask("acme/topic.t", {{"op", "shout"}});
  ASSERT_FALSE(op);
  EXPECT_NE(error_text(op).find("unknown op 'shout'"), std::string::npos) << error_text(op);
  auto nomsg = ask("acme/topic.t", {{"op", "publish"}});
  ASSERT_FALSE(nomsg);
  EXPECT_NE(error_text(nomsg).find("'message'"), std::string::npos) << error_text(nomsg);
  EXPECT_TRUE(ask("acme/topic.t", {{"op", "subscribe"}, {"agent", "acme/s1"}}));
  EXPECT_TRUE(ask("acme/topic.t", {{"op", "subscribe"}, {"agent", "acme/s2"}}));
  auto third = ask("acme/topic.t", {{"op", "subscribe"}, {"agent", "acme/s3"}});
  ASSERT_FALSE(third);
  EXPECT_EQ(code_of(third.error()), errc::quota_exceeded) << error_text(third);
  EXPECT_NE(error_text(third).find("topics.subscribers_max"), std::string::npos);
  EXPECT_FALSE(spawn("acme/topic.u", "topic", {{"x", 1}})); // takes no config
}

TEST_F(multiagent_test, agents_subscribe_implicitly_and_subscriptions_survive_a_restart) {
  // Durable subscribers: kv agents, which append what a publish sends them.
  ASSERT_TRUE(spawn("acme/k1", "kv"));
  ASSERT_TRUE(spawn("acme/k2", "kv"));
  ASSERT_TRUE(spawn("acme/d", "driver"));
  // No topic agent exists yet: the driver's subscribe spawns it (ensure_kind).
  EXPECT_FALSE(ask("acme/topic.feed", {{"op", "subscribers"}}));
  ASSERT_TRUE(ask("acme/d", {{"op", "sub"}, {"topic", "feed"}}));
  auto n = notices("acme/d", 1);
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0]["tag"], "topic.subscribe:feed") << n.dump();
  EXPECT_EQ(n[0]["code"], 0) << n.dump();
  EXPECT_EQ(n[0]["body"]["subscribed"], true) << n.dump();
  for (auto k : {"acme/k1", "acme/k2"}) {
    auto r = ask("acme/topic.feed", {{"op", "subscribe"}, {"agent", k}});
    ASSERT_TRUE(r) << error_text(r);
  }
  // The driver unsubscribes itself again (a kv is a better subscriber for this test).
  ASSERT_TRUE(ask("acme/d", {{"op", "unsub"}, {"topic", "feed"}}));
  ASSERT_EQ(notices("acme/d", 2).size(), 2u);
  auto append = [](const std::string& v) {
    return json{{"op", "append"}, {"key", "feed"}, {"value", v}};
  };
  ASSERT_TRUE(ask("acme/d", {{"op", "pub"}, {"topic", "feed"}, {"message", append("one")}}));
  EXPECT_EQ(kv_list("acme/k1", "feed", 1), json({"one"}));
  EXPECT_EQ(kv_list("acme/k2", "feed", 1), json({"one"}));
  // A restart of the whole runtime on the same store: the topic comes back with its two
  // subscribers (journaled), and a publish through it reaches both.
  stop_all();
  start();
  ASSERT_TRUE(spawn("acme/d", "driver")); // the driver is ephemeral: spawned again
  auto subs = ask("acme/topic.feed", {{"op", "subscribers"}});
  ASSERT_TRUE(subs) << error_text(subs);
  EXPECT_EQ((*subs)["subscribers"], json({"acme/k1", "acme/k2"}));
  ASSERT_TRUE(ask("acme/d", {{"op", "pub"}, {"topic", "feed"}, {"message", append("two")}}));
  EXPECT_EQ(kv_list("acme/k1", "feed", 2), json({"one", "two"}));
  EXPECT_EQ(kv_list("acme/k2", "feed", 2), json({"one", "two"}));
  // Bad topic names are refused at the call.
  auto bad = ask("acme/d", {{"op", "sub"}, {"topic", "Bad Name"}});
  ASSERT_FALSE(bad);
  EXPECT_NE(error_text(bad).find("topic name"), std::string::npos) << error_text(bad);
}

// -- broadcast ----------------------------------------------------------------------------------

TEST_F(multiagent_test, a_broadcast_reaches_every_provider_that_passes_its_filter) {
  for (auto n : {"w1", "w2", "x1"})
    ASSERT_TRUE(spawn(std::string{"acme/"} + n, "inbox", json::object(), {"cap.x"}));
  ASSERT_TRUE(spawn("acme/y1", "inbox", json::object(), {"cap.y"}));
  ASSERT_TRUE(spawn("beta/w9", "inbox", json::object(), {"cap.x"}));
  // The driver offers cap.x too: a broadcast never reaches its sender.
  ASSERT_TRUE(spawn("acme/d", "driver", json::object(), {"cap.x"}));
  ASSERT_TRUE(ask("acme/d", {{"op", "bcast"}, {"capability", "cap.x"}, {"message", {{"m", 1}}}}));
  auto n = notices("acme/d", 1);
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0]["what"], agent_notice::broadcast);
  EXPECT_EQ(n[0]["tag"], "b1");
  auto sent = n[0]["body"]["sent_to"];
  std::sort(sent.begin(), sent.end());
  EXPECT_EQ(sent, json({"acme/w1", "acme/w2", "acme/x1"})) << n.dump();
  for (auto id : {"acme/w1", "acme/w2", "acme/x1"}) {
    auto got = inbox(id, 1);
    ASSERT_EQ(got.size(), 1u) << id;
    EXPECT_EQ(got[0]["body"], json({{"m", 1}}));
    EXPECT_EQ(got[0]["from"], "acme/d");
  }
  EXPECT_EQ(inbox("acme/y1", 0).size(), 0u);
  EXPECT_EQ(inbox("beta/w9", 0).size(), 0u); // another tenant's provider
  // A filter: name prefix, and a limit.
  ASSERT_TRUE(ask("acme/d",
                  {{"op", "bcast"},
                   {"capability", "cap.x"},
                   {"message", {{"m", 2}}},
                   {"filter", {{"name_prefix", "w"}, {"exclude", {"acme/w2"}}}}}));
  n = notices("acme/d", 2);
  ASSERT_EQ(n.size(), 2u);
  EXPECT_EQ(n[1]["body"]["sent_to"], json({"acme/w1"})) << n.dump();
  EXPECT_EQ(inbox("acme/w1", 2).size(), 2u);
  ASSERT_TRUE(ask("acme/d",
                  {{"op", "bcast"},
                   {"capability", "cap.x"},
                   {"message", {{"m", 3}}},
                   {"filter", {{"limit", 2}, {"nodes", {"m1"}}}}}));
  n = notices("acme/d", 3);
  ASSERT_EQ(n.size(), 3u);
  EXPECT_EQ(n[2]["body"]["sent_to"].size(), 2u) << n.dump();
  ASSERT_TRUE(ask("acme/d",
                  {{"op", "bcast"},
                   {"capability", "cap.x"},
                   {"message", {{"m", 4}}},
                   {"filter", {{"nodes", {"elsewhere"}}}}}));
  n = notices("acme/d", 4);
  ASSERT_EQ(n.size(), 4u);
  EXPECT_EQ(n[3]["body"]["sent_to"], json::array()) << n.dump();
  // Bad filters and names are refused at the call, naming what is wrong.
  auto bad = ask(
    "acme/d",
    {{"op", "bcast"}, {"capability", "cap.x"}, {"message", 1}, {"filter", {{"colour", "red"}}}});
  ASSERT_FALSE(bad);
  EXPECT_NE(error_text(bad).find("unknown filter field 'colour'"), std::string::npos)
    << error_text(bad);
  auto badcap = ask("acme/d", {{"op", "bcast"}, {"capability", "Cap X"}, {"message", 1}});
  ASSERT_FALSE(badcap);
  EXPECT_NE(error_text(badcap).find("broadcast capability"), std::string::npos)
    << error_text(badcap);
}

TEST(broadcast_filter, parses_checks_and_selects) {
  auto f = broadcast_filter::parse(
    {{"state", "active"}, {"load_max", 5}, {"nodes", {"n1", "n2"}}, {"limit", 2}});
  ASSERT_TRUE(f) << describe(f.error());
  json answer = {{"providers",
                  {{{"id", "a/p1"}, {"node", "n1"}, {"state", "active"}, {"load", 0}},
                   {{"id", "a/p2"}, {"node", "n3"}, {"state", "active"}, {"load", 0}},
                   {{"id", "a/p3"}, {"node", "n2"}, {"state", "passivated"}, {"load", 0}},
                   {{"id", "a/p4"}, {"node", "n2"}, {"state", "active"}, {"load", 9}},
                   {{"id", "a/p5"}, {"node", "n2"}, {"state", "active"}, {"load", 5}},
                   {{"id", "a/p6"}, {"node", "n1"}, {"state", "active"}, {"load", 1}}}}};
  auto picked = f->select(answer);
  ASSERT_EQ(picked.size(), 2u);
  EXPECT_EQ(picked[0].str(), "a/p1");
  EXPECT_EQ(picked[1].str(), "a/p5");
  EXPECT_EQ(broadcast_filter::parse(f->to_json())->to_json(), f->to_json());
  EXPECT_EQ(broadcast_filter::parse(json{})->select(answer).size(), 6u);
  for (auto bad : {json{{"state", "asleep"}}, json{{"limit", 0}}, json{{"limit", 5000}},
                   json{{"load_max", -1}}, json{{"nodes", "n1"}}, json{{"x", 1}}, json(3)})
    EXPECT_FALSE(broadcast_filter::parse(bad)) << bad.dump();
}

// -- ask_now ------------------------------------------------------------------------------------

TEST_F(multiagent_test, ask_now_asks_in_parallel_and_answers_each_in_order) {
  for (auto n : {"s1", "s2", "s3"})
    ASSERT_TRUE(spawn(std::string{"acme/"} + n, "sleeper", {{"sleep_ms", 300}}));
  ASSERT_TRUE(spawn("acme/slow", "sleeper", {{"sleep_ms", 3000}}));
  ASSERT_TRUE(spawn("acme/f", "fanner"));
  auto r = ask("acme/f", {{"to", {"acme/s1", "acme/s2", "acme/s3", "acme/missing"}}}, 10s);
  ASSERT_TRUE(r) << error_text(r);
  auto& a = (*r)["answers"];
  ASSERT_EQ(a.size(), 4u) << r->dump();
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(a[i]["ok"]["value"], 1) << r->dump();
  EXPECT_NE(a[3]["error"].get<std::string>().find("agent_not_found"), std::string::npos)
    << r->dump();
  // The three ran at the same time: each one started before any other ended.
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      EXPECT_LT(a[i]["ok"]["start"].get<int64_t>(), a[j]["ok"]["end"].get<int64_t>()) << r->dump();
  // The asks carry a deadline (the timeout, cut to the call's).
  EXPECT_GT(a[0]["ok"]["deadline"].get<int64_t>(), 0);
  // One too slow: a timeout for it alone.
  auto slow = ask("acme/f", {{"to", {"acme/s1", "acme/slow"}}, {"timeout_ms", 500}}, 10s);
  ASSERT_TRUE(slow) << error_text(slow);
  EXPECT_EQ((*slow)["answers"][0]["ok"]["value"], 1) << slow->dump();
  EXPECT_NE((*slow)["answers"][1]["error"].get<std::string>().find("timeout"), std::string::npos)
    << slow->dump();
  // ensure_kind: a missing target is spawned with that kind, then asked.
  auto made =
    ask("acme/f",
        {{"to", {"acme/fresh"}}, {"ensure", "counter"}, {"body", {{"op", "add"}, {"by", 4}}}});
  ASSERT_TRUE(made) << error_text(made);
  EXPECT_EQ((*made)["answers"][0]["ok"]["value"], 4) << made->dump();
  auto view = ask("acme/fresh", {{"op", "get"}});
  ASSERT_TRUE(view);
  EXPECT_EQ((*view)["value"], 4);
  // Refusals: itself, another tenant, a kind that is not blocking.
  auto self = ask("acme/f", {{"op", "self"}});
  ASSERT_FALSE(self);
  EXPECT_NE(error_text(self).find("may not ask_now itself"), std::string::npos);
  auto other = ask("acme/f", {{"to", {"beta/s1"}}});
  ASSERT_FALSE(other);
  EXPECT_NE(error_text(other).find("within their tenant"), std::string::npos);
  ASSERT_TRUE(spawn("acme/plain", "plain"));
  auto plain = ask("acme/plain", json::object());
  ASSERT_FALSE(plain);
  EXPECT_NE(error_text(plain).find("needs a kind marked blocking"), std::string::npos)
    << error_text(plain);
}

TEST_F(multiagent_test, concurrent_asks_ensuring_the_same_missing_agent_both_get_through) {
  // Two agents find the same journaled agent missing at the same moment: one spawn wins, the
  // other finds it exists while its record is still being written, and asks again until the
  // agent answers. Both adds count.
  ASSERT_TRUE(spawn("acme/f1", "fanner"));
  ASSERT_TRUE(spawn("acme/f2", "fanner"));
  for (int round = 0; round < 10; ++round) {
    auto target = "acme/shared" + std::to_string(round);
    json body{{"to", {target}}, {"ensure", "counter"}, {"body", {{"op", "add"}, {"by", 1}}}};
    auto a = std::async(std::launch::async, [&] { return ask("acme/f1", body); });
    auto b = std::async(std::launch::async, [&] { return ask("acme/f2", body); });
    for (auto r : {a.get(), b.get()}) {
      ASSERT_TRUE(r) << error_text(r);
      ASSERT_TRUE((*r)["answers"][0].contains("ok")) << "round " << round << ": " << r->dump();
    }
    auto v = ask(target, {{"op", "get"}});
    ASSERT_TRUE(v);
    EXPECT_EQ((*v)["value"], 2) << "round " << round;
  }
}

// -- the debate example -------------------------------------------------------------------------

TEST_F(multiagent_test, a_judge_asks_every_debater_and_picks_the_most_confident_answer) {
  ASSERT_TRUE(spawn("acme/alice", "debater",
                    {{"answer", "yes, {question} because it scales"}, {"confidence", 0.6}}));
  ASSERT_TRUE(spawn("acme/bob", "debater", {{"answer", "no"}, {"confidence", 0.9}}));
  ASSERT_TRUE(spawn("acme/carol", "debater", {{"answer", "maybe"}, {"confidence", 0.3}}));
  ASSERT_TRUE(spawn("acme/judge", "judge", {{"debaters", {"alice", "bob", "carol"}}}));
  auto r = ask("acme/judge", {{"op", "debate"}, {"question", "use actors?"}}, 10s);
  ASSERT_TRUE(r) << error_text(r);
  ASSERT_EQ((*r)["answers"].size(), 3u) << r->dump();
  EXPECT_EQ((*r)["answers"][0]["answer"], "yes, use actors? because it scales");
  EXPECT_EQ((*r)["verdict"]["winner"], "acme/bob") << r->dump();
  EXPECT_EQ((*r)["verdict"]["answer"], "no");
  EXPECT_EQ((*r)["verdict"]["rule"], "confidence");
  // The debaters offer the capability `debate`.
  auto found = rt->providers("debate", "acme", 10);
  EXPECT_EQ(found.size(), 3u);
  // merge, and a debater that is missing: listed with its error, the others judged.
  ASSERT_TRUE(
    spawn("acme/judge2", "judge", {{"debaters", {"alice", "nobody", "carol"}}, {"rule", "merge"}}));
  auto m2 = ask("acme/judge2", {{"op", "debate"}, {"question", "q"}}, 10s);
  ASSERT_TRUE(m2) << error_text(m2);
  EXPECT_NE((*m2)["answers"][1]["error"].get<std::string>().find("agent_not_found"),
            std::string::npos)
    << m2->dump();
  EXPECT_EQ((*m2)["verdict"]["answer"], "acme/alice: yes, q because it scales\nacme/carol: maybe")
    << m2->dump();
  // None answering: unavailable.
  ASSERT_TRUE(spawn("acme/judge3", "judge", {{"debaters", {"ghost"}}}));
  auto none = ask("acme/judge3", {{"op", "debate"}, {"question", "q"}}, 10s);
  ASSERT_FALSE(none);
  EXPECT_EQ(code_of(none.error()), errc::unavailable) << error_text(none);
  // Bad configs and questions are refused naming the field.
  EXPECT_FALSE(spawn("acme/j4", "judge", {{"debaters", json::array()}}));
  EXPECT_FALSE(spawn("acme/j5", "judge", {{"debaters", {"a"}}, {"rule", "loudest"}}));
  EXPECT_FALSE(spawn("acme/d4", "debater", {{"answer", "x"}, {"llm", "gpt"}}));
  EXPECT_FALSE(spawn("acme/d5", "debater", {{"answer", "x"}, {"confidence", 2}}));
  auto q = ask("acme/judge", {{"op", "debate"}});
  ASSERT_FALSE(q);
  EXPECT_NE(error_text(q).find("'question'"), std::string::npos) << error_text(q);
}

} // namespace
