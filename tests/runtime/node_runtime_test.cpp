// The runtime on a real (multi-threaded) actor system: spawn/tell/ask/stop by id, restarts of
// crashed agents with fresh state, tenant escalation and root failure, limits and timeouts.

#include "runtime/node_runtime.hpp"

#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "actors/sample_kinds.hpp"
#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/bootstrap.hpp"

using namespace std::chrono_literals;
using namespace hive;

namespace {

/// A counter that crashes (throws) on {"op":"crash"} and sleeps on {"op":"sleep","ms":N}.
class fragile_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    auto op = (*body)->value("op", "");
    if (op == "crash")
      throw std::runtime_error("asked to crash");
    if (op == "sleep")
      std::this_thread::sleep_for(std::chrono::milliseconds((*body)->value("ms", 0)));
    if (op == "add")
      value_ += (*body)->value("by", 0);
    return nlohmann::json{{"value", value_}}.dump();
  }

  nlohmann::json summary() const override {
    return {{"value", value_}};
  }

private:
  int64_t value_ = 0;
};

class node_runtime_test : public ::testing::Test {
public:
  void start(node_config nc = {}) {
    nc.node.name = "t1";
    nc.node.scheduler_threads = 2;
    configure_actor_system(sys_cfg, nc);
    sys.emplace(sys_cfg);
    kind_registry kinds;
    ASSERT_FALSE(register_sample_kinds(kinds));
    ASSERT_FALSE(kinds.add({"fragile", "crashes on request",
                            [](const nlohmann::json&) -> caf::expected<std::unique_ptr<agent>> {
                              return std::unique_ptr<agent>{new fragile_agent};
                            }}));
    auto r = node_runtime::start(*sys, nc, std::move(kinds), std::make_shared<metrics>());
    ASSERT_TRUE(r) << describe(r.error());
    rt = std::move(*r);
  }

  ~node_runtime_test() override {
    if (rt)
      rt->shutdown();
    rt.reset();
  }

  caf::expected<agent_view> spawn(const std::string& id, const std::string& kind,
                                  nlohmann::json config = nlohmann::json::object()) {
    auto parsed = parse_agent_id(id);
    if (!parsed)
      return parsed.error();
    std::promise<caf::expected<agent_view>> p;
    rt->spawn(spawn_request{*parsed, kind, std::move(config)},
              [&](caf::expected<agent_view> v) { p.set_value(std::move(v)); });
    return p.get_future().get();
  }

  caf::expected<nlohmann::json> ask(const std::string& id, nlohmann::json body,
                                    std::chrono::milliseconds timeout = 5s) {
    std::promise<caf::expected<std::string>> p;
    rt->ask(*parse_agent_id(id), agent_call{envelope{7, "acme", 0, "test", {}, 0}, body.dump()},
            timeout, [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    if (!r)
      return r.error();
    return nlohmann::json::parse(*r);
  }

  caf::error stop(const std::string& id) {
    std::promise<caf::error> p;
    rt->stop(*parse_agent_id(id), [&](caf::error e) { p.set_value(std::move(e)); });
    return p.get_future().get();
  }

  /// Polls until `pred` holds or 5 s pass.
  template <class Pred>
  bool eventually(Pred pred) {
    for (int i = 0; i < 500; ++i) {
      if (pred())
        return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  caf::actor_system_config sys_cfg;
  std::optional<caf::actor_system> sys;
  std::unique_ptr<node_runtime> rt;
};

} // namespace

TEST_F(node_runtime_test, spawn_ask_tell_stop_by_id) {
  start();
  auto v = spawn("acme/c1", "counter");
  ASSERT_TRUE(v) << describe(v.error());
  EXPECT_EQ(v->kind, "counter");
  EXPECT_EQ(v->node, "t1");
  auto r = ask("acme/c1", {{"op", "add"}, {"by", 5}});
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ((*r)["value"], 5);
  for (int i = 0; i < 10; ++i)
    ASSERT_FALSE(
      rt->tell(*parse_agent_id("acme/c1"), agent_call{envelope{}, R"({"op":"add","by":1})"}));
  r = ask("acme/c1", {{"op", "get"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["value"], 15) << "tells and asks from one sender arrive in order";
  EXPECT_FALSE(stop("acme/c1"));
  EXPECT_FALSE(rt->find(*parse_agent_id("acme/c1")).has_value());
  r = ask("acme/c1", {{"op", "get"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::agent_not_found);
  EXPECT_EQ(code_of(stop("acme/c1")), errc::agent_not_found);
}

TEST_F(node_runtime_test, spawn_errors_name_the_problem) {
  start();
  ASSERT_TRUE(spawn("acme/c1", "counter"));
  auto dup = spawn("acme/c1", "counter");
  ASSERT_FALSE(dup);
  EXPECT_EQ(code_of(dup.error()), errc::agent_exists);
  auto unknown = spawn("acme/x", "no-such-kind");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(code_of(unknown.error()), errc::unknown_kind);
  EXPECT_NE(message_of(unknown.error()).find("no-such-kind"), std::string::npos);
  auto bad_cfg = spawn("acme/k", "counter", {{"initial", "seven"}});
  ASSERT_FALSE(bad_cfg);
  EXPECT_EQ(code_of(bad_cfg.error()), errc::invalid_argument);
  EXPECT_NE(message_of(bad_cfg.error()).find("initial"), std::string::npos);
  EXPECT_FALSE(rt->find(*parse_agent_id("acme/k")).has_value())
    << "a failed spawn must not leave a reservation behind";
  EXPECT_FALSE(parse_agent_id("Acme/c1"));
  EXPECT_FALSE(parse_agent_id("acme"));
  EXPECT_FALSE(parse_agent_id("acme/" + std::string(300, 'a')));
}

TEST_F(node_runtime_test, agents_max_is_enforced) {
  node_config nc;
  nc.agents.agents_max = 2;
  start(nc);
  ASSERT_TRUE(spawn("acme/a", "echo"));
  ASSERT_TRUE(spawn("acme/b", "echo"));
  auto third = spawn("acme/c", "echo");
  ASSERT_FALSE(third);
  EXPECT_EQ(code_of(third.error()), errc::overloaded);
  EXPECT_NE(message_of(third.error()).find("agents_max"), std::string::npos);
}

TEST_F(node_runtime_test, crashed_agent_is_restarted_with_fresh_state) {
  start();
  ASSERT_TRUE(spawn("acme/f", "fragile"));
  ASSERT_TRUE(ask("acme/f", {{"op", "add"}, {"by", 3}}));
  auto crashed = ask("acme/f", {{"op", "crash"}});
  ASSERT_FALSE(crashed);
  EXPECT_EQ(code_of(crashed.error()), errc::agent_failed);
  ASSERT_TRUE(eventually([&] {
    auto v = rt->find(*parse_agent_id("acme/f"));
    return v && v->restarts == 1 && v->agent;
  }));
  auto r = ask("acme/f", {{"op", "get"}});
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ((*r)["value"], 0) << "a restarted agent starts from a fresh instance";
}

TEST_F(node_runtime_test, tenant_escalation_restarts_the_tenant_supervisor_and_its_agents) {
  node_config nc;
  nc.supervision.restart_intensity_max = 1;
  nc.supervision.backoff_initial_ms = 1;
  nc.supervision.backoff_max_ms = 5;
  start(nc);
  ASSERT_TRUE(spawn("acme/f", "fragile"));
  ASSERT_TRUE(spawn("acme/c", "counter"));
  ASSERT_TRUE(spawn("other/c", "counter"));
  ASSERT_TRUE(ask("acme/c", {{"op", "add"}, {"by", 9}}));
  ASSERT_TRUE(ask("other/c", {{"op", "add"}, {"by", 4}}));
  auto first_c = rt->find(*parse_agent_id("acme/c"))->agent;
  (void)ask("acme/f", {{"op", "crash"}});
  ASSERT_TRUE(eventually([&] { return rt->find(*parse_agent_id("acme/f"))->restarts == 1; }));
  ASSERT_TRUE(
    eventually([&] { return static_cast<bool>(rt->find(*parse_agent_id("acme/f"))->agent); }));
  (void)ask("acme/f", {{"op", "crash"}}); // second restart within the period: escalate
  // The tenant supervisor is restarted by root and re-creates every agent of the tenant.
  ASSERT_TRUE(eventually([&] {
    auto v = rt->find(*parse_agent_id("acme/c"));
    return v && v->agent && v->agent != first_c;
  }));
  auto r = ask("acme/c", {{"op", "get"}});
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ((*r)["value"], 0);
  r = ask("other/c", {{"op", "get"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["value"], 4) << "another tenant is untouched";
}

TEST_F(node_runtime_test, root_failure_reaches_the_fatal_handler) {
  node_config nc;
  nc.supervision.restart_intensity_max = 0;
  start(nc);
  std::promise<caf::error> fatal;
  rt->set_fatal_handler([&](const caf::error& e) { fatal.set_value(e); });
  ASSERT_TRUE(spawn("acme/f", "fragile"));
  (void)ask("acme/f", {{"op", "crash"}});
  auto f = fatal.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(code_of(f.get()), errc::escalated);
}

// The root runs its fatal handler as it exits. When shutdown's drain (`node.shutdown_drain_ms`)
// runs out first, that exit comes after `shutdown()` returned and the runtime is freed: the
// handler must neither touch the runtime (AddressSanitizer reports a use after free) nor report
// the planned stop as a failure.
TEST_F(node_runtime_test, a_root_that_exits_after_the_runtime_is_gone_reports_nothing) {
  node_config nc;
  nc.node.shutdown_drain_ms = 0;
  start(nc);
  auto fatal_calls = std::make_shared<std::atomic<int>>(0);
  rt->set_fatal_handler([fatal_calls](const caf::error&) { ++*fatal_calls; });
  // Both scheduler threads sleep in an agent, so the root cannot run its exit before the
  // runtime is gone.
  for (auto id : {"acme/s1", "acme/s2"}) {
    ASSERT_TRUE(spawn(id, "fragile"));
    rt->ask(*parse_agent_id(id),
            agent_call{envelope{7, "acme", 0, "test", {}, 0}, R"({"op":"sleep","ms":400})"}, 5s,
            [](caf::expected<std::string>) {});
  }
  std::this_thread::sleep_for(100ms); // both calls are being handled
  rt->shutdown();
  rt.reset();
  // (The answers go to routers that stopped meanwhile: a drain of 0 waits for nothing.)
  std::this_thread::sleep_for(700ms); // the sleeps end, the root's exit runs
  EXPECT_EQ(fatal_calls->load(), 0) << "a planned stop is not a failure";
}

TEST_F(node_runtime_test, an_ask_still_waiting_when_the_runtime_stops_gets_an_answer) {
  // The agent is busy for 400 ms and nothing waits for it (a drain of 0): the router stops
  // with the ask still pending, and the caller must hear so rather than wait forever.
  node_config nc;
  nc.node.shutdown_drain_ms = 0;
  start(nc);
  ASSERT_TRUE(spawn("acme/s", "fragile"));
  auto answer = std::make_shared<std::promise<caf::expected<std::string>>>();
  rt->ask(*parse_agent_id("acme/s"),
          agent_call{envelope{7, "acme", 0, "test", {}, 0}, R"({"op":"sleep","ms":400})"}, 5s,
          [answer](caf::expected<std::string> r) { answer->set_value(std::move(r)); });
  std::this_thread::sleep_for(100ms); // the call is being handled
  rt->shutdown();
  auto got = answer->get_future();
  ASSERT_EQ(got.wait_for(3s), std::future_status::ready) << "the ask was never answered";
  auto r = got.get();
  ASSERT_FALSE(r) << *r;
  EXPECT_EQ(code_of(r.error()), errc::shutting_down) << describe(r.error());
  // And an ask after the stop is answered at once, the same way.
  std::promise<caf::expected<std::string>> late;
  rt->ask(*parse_agent_id("acme/s"), agent_call{envelope{8, "acme", 0, "test", {}, 0}, "{}"}, 5s,
          [&late](caf::expected<std::string> r) { late.set_value(std::move(r)); });
  auto l = late.get_future();
  ASSERT_EQ(l.wait_for(3s), std::future_status::ready);
  auto lr = l.get();
  ASSERT_FALSE(lr);
  EXPECT_EQ(code_of(lr.error()), errc::shutting_down) << describe(lr.error());
  rt.reset();
  std::this_thread::sleep_for(500ms); // the sleep ends; its reply finds the router gone
}

TEST_F(node_runtime_test, ask_times_out_at_its_deadline) {
  start();
  ASSERT_TRUE(spawn("acme/slow", "fragile"));
  auto t0 = std::chrono::steady_clock::now();
  auto r = ask("acme/slow", {{"op", "sleep"}, {"ms", 400}}, 50ms);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::timeout);
  EXPECT_LT(took, 390ms) << "the caller must not wait for the slow agent";
}

TEST_F(node_runtime_test, a_call_past_its_deadline_is_refused_unhandled) {
  start();
  ASSERT_TRUE(spawn("acme/c", "counter"));
  auto past = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count()
    - 1000;
  std::promise<caf::expected<std::string>> p;
  rt->ask(*parse_agent_id("acme/c"),
          agent_call{envelope{9, "acme", past, "test", {}, 0}, R"({"op":"add","by":5})"}, 5s,
          [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
  auto r = p.get_future().get();
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::timeout);
  auto now = ask("acme/c", {{"op", "get"}});
  ASSERT_TRUE(now);
  EXPECT_EQ((*now)["value"], 0) << "an expired call must not take effect";
}

TEST_F(node_runtime_test, list_pages_in_id_order_and_filters_by_tenant) {
  start();
  for (auto id : {"b/2", "a/1", "b/1", "a/2", "c/1"})
    ASSERT_TRUE(spawn(id, "echo"));
  auto page1 = rt->list("", "", 2);
  ASSERT_EQ(page1.size(), 2u);
  EXPECT_EQ(page1[0].id.str(), "a/1");
  EXPECT_EQ(page1[1].id.str(), "a/2");
  auto page2 = rt->list("", page1.back().id.str(), 2);
  ASSERT_EQ(page2.size(), 2u);
  EXPECT_EQ(page2[0].id.str(), "b/1");
  EXPECT_EQ(page2[1].id.str(), "b/2");
  auto page3 = rt->list("", page2.back().id.str(), 2);
  ASSERT_EQ(page3.size(), 1u);
  EXPECT_EQ(page3[0].id.str(), "c/1");
  auto only_b = rt->list("b", "", 10);
  ASSERT_EQ(only_b.size(), 2u);
}

TEST_F(node_runtime_test, inspect_reports_kind_restarts_mailbox_and_state) {
  start();
  ASSERT_TRUE(spawn("acme/c", "counter"));
  ASSERT_TRUE(ask("acme/c", {{"op", "add"}, {"by", 2}}));
  std::promise<caf::expected<nlohmann::json>> p;
  rt->inspect(*parse_agent_id("acme/c"), 1,
              [&](caf::expected<nlohmann::json> j) { p.set_value(std::move(j)); });
  auto j = p.get_future().get();
  ASSERT_TRUE(j) << describe(j.error());
  EXPECT_EQ((*j)["kind"], "counter");
  EXPECT_EQ((*j)["node"], "t1");
  EXPECT_EQ((*j)["supervisor"], "tenant:acme");
  EXPECT_EQ((*j)["restarts"], 0);
  EXPECT_TRUE((*j).contains("mailbox_size"));
  EXPECT_EQ((*j)["state"]["value"], 2);
}

TEST_F(node_runtime_test, messages_handled_are_counted_per_kind) {
  start();
  ASSERT_TRUE(spawn("acme/e", "echo"));
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(ask("acme/e", {{"n", i}}));
  // Counts are flushed in batches, at the latest when the agent's queue drains: eventually
  // exact, never more than the messages handled.
  std::string text;
  EXPECT_TRUE(eventually([&] {
    text = rt->metrics().render();
    return text.find("hive_messages_handled_total{kind=\"echo\"} 5") != std::string::npos;
  }))
    << text;
  EXPECT_NE(text.find("hive_agents_live 1"), std::string::npos);
}

TEST_F(node_runtime_test, agent_ref_and_tell_follow_restarts_stops_and_respawns) {
  start();
  ASSERT_TRUE(spawn("acme/f", "fragile"));
  auto id = *parse_agent_id("acme/f");
  auto ref = rt->ref(id);
  ASSERT_FALSE(ref.tell(agent_call{envelope{}, R"({"op":"add","by":1})"}));
  auto before = ref.target();
  ASSERT_TRUE(before && *before);
  (void)ask("acme/f", {{"op", "crash"}});
  ASSERT_TRUE(eventually([&] {
    auto v = rt->find(id);
    return v && v->agent && v->agent != *before;
  }));
  auto after = ref.target();
  ASSERT_TRUE(after && *after);
  EXPECT_NE(*after, *before) << "the reference must follow the restart";
  ASSERT_FALSE(ref.tell(agent_call{envelope{}, R"({"op":"add","by":2})"}));
  ASSERT_FALSE(rt->tell(id, agent_call{envelope{}, R"({"op":"add","by":3})"}));
  auto r = ask("acme/f", {{"op", "get"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["value"], 5) << "sends through the old handle would have been lost";
  ASSERT_FALSE(stop("acme/f"));
  EXPECT_EQ(code_of(ref.tell(agent_call{})), errc::agent_not_found);
  EXPECT_EQ(code_of(rt->tell(id, agent_call{})), errc::agent_not_found);
  ASSERT_TRUE(spawn("acme/f", "fragile"));
  EXPECT_FALSE(ref.tell(agent_call{envelope{}, R"({"op":"add","by":7})"}));
  EXPECT_FALSE(rt->tell(id, agent_call{envelope{}, R"({"op":"add","by":7})"}));
  r = ask("acme/f", {{"op", "get"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["value"], 14);
}
