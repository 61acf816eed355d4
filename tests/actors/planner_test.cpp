// The planner kind on a real actor system and store: DAG validation, ordering and references,
// parallelism, retries with back-off, timeouts, skip and fallback policies, pause / resume /
// cancel, per-provider breakers, resumption after a restart of the runtime (exactly one effect
// per step at a journaled provider), and the agent-side asks, timers and deadlines it rests on.

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "actors/planner.hpp"
#include "actors/sample_kinds.hpp"
#include "protocols/errc.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/events.hpp"
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

/// What the test providers saw, shared by the whole test process.
struct call_log {
  std::mutex mtx;
  struct entry {
    std::string agent;
    json body;
    int64_t start_ms = 0;
    int64_t end_ms = 0;
    int64_t deadline_ms = 0;
  };
  std::vector<entry> calls;

  void add(entry e) {
    std::lock_guard<std::mutex> guard{mtx};
    calls.push_back(std::move(e));
  }
  std::vector<entry> all() {
    std::lock_guard<std::mutex> guard{mtx};
    return calls;
  }
  void clear() {
    std::lock_guard<std::mutex> guard{mtx};
    calls.clear();
  }
};

call_log& log_of_calls() {
  static call_log log;
  return log;
}

/// Answers `{"agent":ID,"input":BODY}`, after sleeping `config.sleep_ms`, failing its first
/// `config.fail_first` calls with `unavailable`. Blocking kind: each agent has its own thread.
class worker_agent : public agent {
public:
  explicit worker_agent(const json& cfg)
      : sleep_ms_(cfg.value("sleep_ms", 0)), fail_first_(cfg.value("fail_first", 0)) {}

  caf::expected<std::string> handle(call_context& call) override {
    call_log::entry e;
    e.agent = call.self_id().str();
    e.start_ms = wall_ms();
    e.deadline_ms = call.env().deadline_unix_ms;
    auto body = call.json();
    e.body = body ? **body : json{};
    if (sleep_ms_ > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    e.end_ms = wall_ms();
    log_of_calls().add(e);
    if (calls_++ < fail_first_)
      return make_error(errc::unavailable,
                        "failing on purpose (call " + std::to_string(calls_) + " of the first "
                          + std::to_string(fail_first_) + ")");
    return json{{"agent", e.agent}, {"input", e.body}}.dump();
  }

private:
  int sleep_ms_;
  int fail_first_;
  int calls_ = 0;
};

/// On `{"op":"go","to":ID}` asks `to` and keeps the reply it gets back later (notice), which
/// `{"op":"get"}` shows.
class asker_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    if (auto n = call.notice()) {
      if (n->what == agent_notice::reply)
        got_ = {{"tag", n->tag}, {"code", n->code}, {"body", n->body}};
      if (n->what == agent_notice::timer)
        timers_.push_back(n->tag);
      return std::string{"{}"};
    }
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    auto op = (*body)->value("op", "");
    if (op == "go") {
      auto to = parse_agent_id((*body)->value("to", ""));
      if (!to)
        return std::move(to.error());
      if (auto err = call.ask(*to, R"({"x":1})", 60s, "t1"))
        return err;
      return std::string{"{}"};
    }
    if (op == "timer") {
      if (auto err = call.schedule(std::chrono::milliseconds((*body)->value("ms", 10)),
                                   (*body)->value("tag", "")))
        return err;
      return std::string{"{}"};
    }
    return json{{"got", got_}, {"timers", timers_}}.dump();
  }

private:
  json got_;
  std::vector<std::string> timers_;
};

/// A journaled counter that takes `config.sleep_ms` per add: a restart lands while one is in
/// flight. {"op":"add","by":N} | {"op":"get"} -> {"value":V}.
class slow_counter : public agent {
public:
  explicit slow_counter(const json& cfg) : sleep_ms_(cfg.value("sleep_ms", 50)) {}

  caf::expected<std::string> handle(call_context& call) override {
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    if ((*body)->value("op", "") == "add") {
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
      if (auto err = call.emit(std::to_string((*body)->value("by", 0))))
        return err;
    }
    return json{{"value", value_}}.dump();
  }
  std::string snapshot() const override {
    return std::to_string(value_);
  }
  caf::error restore(std::string_view state) override {
    value_ = std::stoll(std::string{state});
    return {};
  }
  caf::error apply(std::string_view event) override {
    value_ += std::stoll(std::string{event});
    return {};
  }

private:
  int sleep_ms_;
  int64_t value_ = 0;
};

class planner_test : public ::testing::Test {
public:
  void start() {
    cfg.node.name = "p1";
    cfg.node.scheduler_threads = 2;
    cfg.planner.providers_cache_ms = 0; // every dispatch looks the providers up
    sys_cfg.emplace();
    configure_actor_system(*sys_cfg, cfg);
    sys.emplace(*sys_cfg);
    kind_registry kinds;
    ASSERT_FALSE(register_sample_kinds(kinds));
    ASSERT_FALSE(register_planner_kind(kinds, cfg.planner));
    kind_spec worker{"worker", "test provider",
                     [](const json& c) -> caf::expected<std::unique_ptr<agent>> {
                       return std::unique_ptr<agent>{new worker_agent(c)};
                     }};
    worker.blocking = true;
    ASSERT_FALSE(kinds.add(std::move(worker)));
    kind_spec slow{"slow_counter", "a journaled counter that takes its time",
                   [](const json& c) -> caf::expected<std::unique_ptr<agent>> {
                     return std::unique_ptr<agent>{new slow_counter(c)};
                   },
                   persistence_mode::journaled};
    // Not blocking: it sleeps on a scheduler thread. (A journaled *blocking* agent keeps
    // ~actor_system from returning in this fixture: see the session note.)
    ASSERT_FALSE(kinds.add(std::move(slow)));
    ASSERT_FALSE(kinds.add({"asker", "asks and keeps the reply",
                            [](const json&) -> caf::expected<std::unique_ptr<agent>> {
                              return std::unique_ptr<agent>{new asker_agent};
                            }}));
    m = std::make_shared<metrics>();
    auto db = open_node_store(cfg, dir.path.string(), m);
    ASSERT_TRUE(db) << describe(db.error());
    auto r = node_runtime::start(*sys, cfg, std::move(kinds), m, {}, *db);
    ASSERT_TRUE(r) << describe(r.error());
    rt = std::move(*r);
  }

  void SetUp() override {
    log_of_calls().clear();
    start();
  }

  void stop_all() {
    if (rt)
      rt->shutdown();
    rt.reset();
    sys.reset();
    sys_cfg.reset();
  }

  ~planner_test() override {
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

  caf::expected<json> ask(const std::string& id, json body, int64_t deadline_ms = 0) {
    std::promise<caf::expected<std::string>> p;
    rt->ask(*parse_agent_id(id),
            agent_call{envelope{7, "acme", deadline_ms, "test", {}, 0}, body.dump()}, 5s,
            [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    if (!r)
      return r.error();
    return json::parse(*r);
  }

  json status(const std::string& wf) {
    auto r = ask(wf, {{"op", "status"}});
    return r ? *r : json{{"error", describe(r.error())}};
  }

  /// Waits until the workflow's status is `want` (or another final one); returns the status.
  json wait_for(const std::string& wf, const std::string& want,
                std::chrono::milliseconds limit = 15s) {
    json st;
    for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;
         std::this_thread::sleep_for(20ms)) {
      st = status(wf);
      auto s = st.value("status", "");
      if (s == want || s == "succeeded" || s == "failed" || s == "cancelled")
        return st;
    }
    return st;
  }

  static const json& step(const json& st, const std::string& id) {
    for (auto& s : st["steps"])
      if (s["id"] == id)
        return s;
    static const json none;
    return none;
  }

  test::temp_dir dir;
  node_config cfg;
  std::optional<caf::actor_system_config> sys_cfg;
  std::optional<caf::actor_system> sys;
  std::shared_ptr<metrics> m;
  std::unique_ptr<node_runtime> rt;
};

std::string refusal(const caf::expected<agent_view>& r) {
  return r ? std::string{"spawned"} : describe(r.error());
}

TEST_F(planner_test, workflows_with_cycles_unknown_steps_or_foreign_references_are_refused) {
  auto s = [](std::string id, std::vector<std::string> deps, json input = json::object()) {
    return json{{"id", id}, {"capability", "c"}, {"depends_on", deps}, {"input", input}};
  };
  auto cyc = spawn("acme/w1", "planner",
                   {{"steps", {s("a", {}), s("b", {"a", "d"}), s("c", {"b"}), s("d", {"c"})}}});
  EXPECT_NE(refusal(cyc).find("form a cycle"), std::string::npos) << refusal(cyc);
  EXPECT_NE(refusal(cyc).find("depends on"), std::string::npos) << refusal(cyc);
  EXPECT_NE(refusal(cyc).find("invalid_argument"), std::string::npos) << refusal(cyc);
  auto unknown = spawn("acme/w2", "planner", {{"steps", {s("a", {"zz"})}}});
  EXPECT_NE(refusal(unknown).find("'zz', which is not a step"), std::string::npos)
    << refusal(unknown);
  auto self = spawn("acme/w3", "planner", {{"steps", {s("a", {"a"})}}});
  EXPECT_NE(refusal(self).find("depends on itself"), std::string::npos) << refusal(self);
  auto foreign =
    spawn("acme/w4", "planner", {{"steps", {s("a", {}), s("b", {}, {{"x", "${a.output}"}})}}});
  EXPECT_NE(refusal(foreign).find("not among its dependencies"), std::string::npos)
    << refusal(foreign);
  auto twice = spawn("acme/w5", "planner", {{"steps", {s("a", {}), s("a", {})}}});
  EXPECT_NE(refusal(twice).find("two steps have the id 'a'"), std::string::npos) << refusal(twice);
  auto empty = spawn("acme/w6", "planner", {{"steps", json::array()}});
  EXPECT_FALSE(empty);
  auto policy =
    spawn("acme/w7", "planner",
          {{"steps", {{{"id", "a"}, {"capability", "c"}, {"on_failure", "fallback"}}}}});
  EXPECT_NE(refusal(policy).find("needs a capability 'fallback'"), std::string::npos)
    << refusal(policy);
  // A valid one (a diamond) is taken.
  EXPECT_TRUE(spawn("acme/w8", "planner",
                    {{"steps", {s("a", {}), s("b", {"a"}), s("c", {"a"}), s("d", {"b", "c"})}}}));
}

TEST_F(planner_test, steps_run_in_dependency_order_and_see_earlier_outputs) {
  ASSERT_TRUE(spawn("acme/sum", "counter", json::object(), {"counting"}));
  ASSERT_TRUE(
    spawn("acme/wf", "planner",
          {{"steps",
            {{{"id", "second"},
              {"capability", "counting"},
              {"depends_on", {"first"}},
              {"input", {{"op", "add"}, {"by", "${first.output.value}"}}}},
             {{"id", "first"}, {"capability", "counting"}, {"input", {{"op", "add"}, {"by", 5}}}},
             {{"id", "third"},
              {"capability", "counting"},
              {"depends_on", {"second"}},
              {"input", {{"op", "add"}, {"by", 1}}}}}}}));
  auto st = wait_for("acme/wf", "succeeded");
  ASSERT_EQ(st["status"], "succeeded") << st.dump();
  EXPECT_EQ(step(st, "first")["output"]["value"], 5);
  EXPECT_EQ(step(st, "second")["output"]["value"], 10); // 5 + the 5 "first" answered
  EXPECT_EQ(step(st, "third")["output"]["value"], 11);
  EXPECT_GE(step(st, "second")["started_ms"].get<int64_t>(),
            step(st, "first")["finished_ms"].get<int64_t>());
  EXPECT_EQ(step(st, "first")["provider"], "acme/sum");
  EXPECT_EQ(step(st, "first")["attempts"], 1);
  EXPECT_GT(st["finished_ms"].get<int64_t>(), 0);
}

TEST_F(planner_test, independent_steps_run_at_the_same_time_on_the_least_loaded_providers) {
  for (auto id : {"acme/w1", "acme/w2", "acme/w3"})
    ASSERT_TRUE(spawn(id, "worker", {{"sleep_ms", 400}}, {"work"}));
  json steps = json::array();
  for (auto id : {"a", "b", "c"})
    steps.push_back({{"id", id}, {"capability", "work"}, {"input", {{"step", id}}}});
  ASSERT_TRUE(spawn("acme/par", "planner", {{"steps", steps}}));
  auto st = wait_for("acme/par", "succeeded");
  ASSERT_EQ(st["status"], "succeeded") << st.dump();
  auto calls = log_of_calls().all();
  ASSERT_EQ(calls.size(), 3u);
  // Every call began before every other ended: all three ran at once, so they went to three
  // different providers (each handles one call at a time).
  std::set<std::string> providers;
  for (auto& a : calls) {
    providers.insert(a.agent);
    for (auto& b : calls)
      EXPECT_LT(a.start_ms, b.end_ms);
  }
  EXPECT_EQ(providers.size(), 3u);
}

TEST_F(planner_test, a_failing_step_is_retried_with_back_off_until_it_succeeds) {
  ASSERT_TRUE(spawn("acme/flaky", "worker", {{"fail_first", 2}}, {"work"}));
  ASSERT_TRUE(
    spawn("acme/wf", "planner",
          {{"steps", {{{"id", "a"}, {"capability", "work"}, {"retries", 3}, {"backoff_ms", 100}}}},
           {"breaker", {{"failures", 10}}}}));
  auto st = wait_for("acme/wf", "succeeded");
  ASSERT_EQ(st["status"], "succeeded") << st.dump();
  EXPECT_EQ(step(st, "a")["attempts"], 3);
  auto calls = log_of_calls().all();
  ASSERT_EQ(calls.size(), 3u);
  // Back-off: 100 ms before the 2nd attempt, 200 ms before the 3rd.
  EXPECT_GE(calls[1].start_ms - calls[0].end_ms, 95);
  EXPECT_GE(calls[2].start_ms - calls[1].end_ms, 195);
}

TEST_F(planner_test, progress_goes_to_the_event_stream_once_it_is_durable) {
  std::mutex mtx;
  std::vector<json> seen;
  auto sub = m->events().subscribe([&](const agent_event& e, const std::string&) {
    if (e.agent != "acme/wf" || e.type.rfind("workflow_", 0) != 0)
      return;
    std::lock_guard<std::mutex> guard{mtx};
    auto d = e.detail;
    d["type"] = e.type;
    d["kind"] = e.kind;
    seen.push_back(std::move(d));
  });
  ASSERT_TRUE(spawn("acme/flaky", "worker", {{"fail_first", 1}}, {"work"}));
  ASSERT_TRUE(spawn(
    "acme/wf", "planner",
    {{"steps", {{{"id", "a"}, {"capability", "work"}, {"retries", 1}, {"backoff_ms", 10}}}}}));
  auto st = wait_for("acme/wf", "succeeded");
  ASSERT_EQ(st["status"], "succeeded") << st.dump();
  std::this_thread::sleep_for(100ms);
  m->events().unsubscribe(sub);
  std::vector<std::string> flow;
  for (auto& e : seen) {
    EXPECT_EQ(e["kind"], "planner");
    flow.push_back(e["type"].get<std::string>() + ":" + e.value("status", "")
                   + (e.contains("attempt") ? ":" + std::to_string(e["attempt"].get<int>()) : ""));
  }
  EXPECT_EQ(flow,
            (std::vector<std::string>{"workflow_step:running:1", "workflow_step:backoff:1",
                                      "workflow_step:running:2", "workflow_step:done:2",
                                      "workflow_finished:succeeded"}))
    << json(seen).dump();
}

TEST_F(planner_test, spent_retries_fail_the_workflow_naming_the_error) {
  ASSERT_TRUE(spawn("acme/bad", "worker", {{"fail_first", 100}}, {"work"}));
  ASSERT_TRUE(spawn("acme/wf", "planner",
                    {{"steps",
                      {{{"id", "a"}, {"capability", "work"}, {"retries", 1}, {"backoff_ms", 10}},
                       {{"id", "b"}, {"capability", "work"}, {"depends_on", {"a"}}}}}}));
  auto st = wait_for("acme/wf", "failed");
  ASSERT_EQ(st["status"], "failed") << st.dump();
  EXPECT_EQ(step(st, "a")["status"], "failed");
  EXPECT_EQ(step(st, "a")["attempts"], 2);
  EXPECT_NE(step(st, "a")["error"].get<std::string>().find("failing on purpose"),
            std::string::npos);
  EXPECT_EQ(step(st, "b")["status"], "pending"); // never dispatched
  EXPECT_EQ(log_of_calls().all().size(), 2u);
}

TEST_F(planner_test, skip_and_fallback_policies_let_the_workflow_go_on) {
  ASSERT_TRUE(spawn("acme/w", "worker", json::object(), {"spare"}));
  ASSERT_TRUE(
    spawn("acme/wf", "planner",
          {{"steps",
            {{{"id", "gone"}, {"capability", "nobody"}, {"on_failure", "skip"}},
             {{"id", "moved"},
              {"capability", "nobody"},
              {"on_failure", "fallback"},
              {"fallback", "spare"},
              {"input", {{"from", "moved"}}}},
             {{"id", "after"},
              {"capability", "spare"},
              {"depends_on", {"gone", "moved"}},
              {"input", {{"skipped", "${gone.output}"}, {"moved", "${moved.output.agent}"}}}}}}}));
  auto st = wait_for("acme/wf", "succeeded");
  ASSERT_EQ(st["status"], "succeeded") << st.dump();
  EXPECT_EQ(step(st, "gone")["status"], "skipped");
  EXPECT_NE(
    step(st, "gone")["error"].get<std::string>().find("no agent offers capability 'nobody'"),
    std::string::npos);
  EXPECT_EQ(step(st, "moved")["status"], "done");
  EXPECT_EQ(step(st, "moved")["capability"], "spare");
  EXPECT_EQ(step(st, "after")["output"]["input"]["skipped"], nullptr);
  EXPECT_EQ(step(st, "after")["output"]["input"]["moved"], "acme/w");
}

TEST_F(planner_test, an_attempt_that_takes_too_long_times_out) {
  ASSERT_TRUE(spawn("acme/slow", "worker", {{"sleep_ms", 1500}}, {"slow"}));
  ASSERT_TRUE(spawn(
    "acme/wf", "planner",
    {{"steps",
      {{{"id", "a"}, {"capability", "slow"}, {"timeout_ms", 200}, {"on_failure", "skip"}}}}}));
  auto st = wait_for("acme/wf", "succeeded");
  ASSERT_EQ(st["status"], "succeeded") << st.dump();
  EXPECT_EQ(step(st, "a")["status"], "skipped");
  EXPECT_NE(step(st, "a")["error"].get<std::string>().find("timeout"), std::string::npos)
    << step(st, "a").dump();
  // The provider saw the attempt's deadline (propagated from the step's timeout). (It logs
  // the call once its sleep is over.)
  auto calls = log_of_calls().all();
  for (int i = 0; i < 300 && calls.empty(); ++i, std::this_thread::sleep_for(10ms))
    calls = log_of_calls().all();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_GT(calls[0].deadline_ms, 0);
  EXPECT_LE(calls[0].deadline_ms, calls[0].start_ms + 200);
}

TEST_F(planner_test, a_provider_whose_breaker_opened_gets_no_more_steps) {
  ASSERT_TRUE(spawn("acme/a-bad", "worker", {{"fail_first", 100}}, {"work"}));
  ASSERT_TRUE(spawn("acme/b-good", "worker", {{"sleep_ms", 300}}, {"work"}));
  // One step at a time: the idle bad provider keeps looking least loaded, until its breaker
  // opens after 2 failures; then every later attempt goes to the good one.
  json steps = json::array();
  for (int i = 0; i < 4; ++i)
    steps.push_back(
      {{"id", "s" + std::to_string(i)}, {"capability", "work"}, {"retries", 3}, {"backoff_ms", 1}});
  ASSERT_TRUE(spawn(
    "acme/wf", "planner",
    {{"steps", steps}, {"parallel_max", 1}, {"breaker", {{"failures", 2}, {"open_ms", 60000}}}}));
  auto st = wait_for("acme/wf", "succeeded");
  ASSERT_EQ(st["status"], "succeeded") << st.dump();
  size_t bad = 0;
  for (auto& c : log_of_calls().all())
    bad += c.agent == "acme/a-bad";
  EXPECT_LE(bad, 2u);
  for (auto& s : st["steps"])
    EXPECT_EQ(s["provider"], "acme/b-good") << s.dump();
}

TEST_F(planner_test, pause_holds_new_dispatches_resume_goes_on_cancel_ends_it) {
  ASSERT_TRUE(spawn("acme/slow", "worker", {{"sleep_ms", 500}}, {"work"}));
  ASSERT_TRUE(spawn("acme/wf", "planner",
                    {{"steps",
                      {{{"id", "a"}, {"capability", "work"}},
                       {{"id", "b"}, {"capability", "work"}, {"depends_on", {"a"}}}}}}));
  auto paused = ask("acme/wf", {{"op", "pause"}});
  ASSERT_TRUE(paused) << describe(paused.error());
  EXPECT_EQ((*paused)["status"], "paused");
  std::this_thread::sleep_for(1200ms); // "a" (if it was dispatched) finished meanwhile
  auto st = status("acme/wf");
  EXPECT_EQ(st["status"], "paused");
  EXPECT_NE(step(st, "b")["status"], "done");
  EXPECT_NE(step(st, "b")["status"], "running");
  ASSERT_TRUE(ask("acme/wf", {{"op", "resume"}}));
  st = wait_for("acme/wf", "succeeded");
  EXPECT_EQ(st["status"], "succeeded") << st.dump();
  // A finished workflow cannot be changed.
  auto late = ask("acme/wf", {{"op", "cancel"}});
  ASSERT_FALSE(late);
  EXPECT_EQ(code_of(late.error()), errc::conflict);
  // Cancel: running and pending steps end as cancelled, for good.
  ASSERT_TRUE(spawn("acme/wf2", "planner",
                    {{"steps",
                      {{{"id", "a"}, {"capability", "work"}},
                       {{"id", "b"}, {"capability", "work"}, {"depends_on", {"a"}}}}}}));
  auto cancelled = ask("acme/wf2", {{"op", "cancel"}});
  ASSERT_TRUE(cancelled);
  EXPECT_EQ((*cancelled)["status"], "cancelled");
  std::this_thread::sleep_for(800ms);
  st = status("acme/wf2");
  EXPECT_EQ(st["status"], "cancelled");
  EXPECT_EQ(step(st, "b")["status"], "cancelled");
  EXPECT_FALSE(ask("acme/wf2", {{"op", "resume"}}));
}

TEST_F(planner_test, a_workflow_resumes_after_a_restart_and_each_effect_happens_once) {
  // The sink takes 100 ms per add and gets them one at a time, so the restart lands while
  // an add runs: the sink journals it, but the planner never hears the reply and sends the
  // step again after the restart (same idempotency key: counted once).
  ASSERT_TRUE(spawn("acme/sink", "slow_counter", {{"sleep_ms", 100}}, {"counting"}));
  json steps = json::array();
  for (int i = 0; i < 8; ++i)
    steps.push_back({{"id", "add" + std::to_string(i)},
                     {"capability", "counting"},
                     {"input", {{"op", "add"}, {"by", 1}}}});
  steps.push_back({{"id", "last"},
                   {"capability", "counting"},
                   {"depends_on", {"add7"}},
                   {"input", {{"op", "add"}, {"by", 100}}}});
  ASSERT_TRUE(spawn("acme/wf", "planner", {{"steps", steps}, {"parallel_max", 1}}));
  std::this_thread::sleep_for(350ms);
  EXPECT_EQ(status("acme/wf")["status"], "running");
  stop_all();
  start();
  rt->wake_residents(); // what agent-node does after a restart
  auto st = wait_for("acme/wf", "succeeded");
  ASSERT_EQ(st["status"], "succeeded") << st.dump();
  auto v = ask("acme/sink", {{"op", "get"}});
  ASSERT_TRUE(v);
  EXPECT_EQ((*v)["value"], 108); // every "add" once, however often it was sent
}

TEST_F(planner_test, agents_ask_by_id_set_timers_and_pass_their_deadline_on) {
  ASSERT_TRUE(spawn("acme/target", "worker"));
  ASSERT_TRUE(spawn("acme/asker", "asker"));
  auto deadline = wall_ms() + 3000;
  ASSERT_TRUE(ask("acme/asker", {{"op", "go"}, {"to", "acme/target"}}, deadline));
  json got;
  for (int i = 0; i < 200 && got.is_null(); ++i, std::this_thread::sleep_for(10ms))
    got = (*ask("acme/asker", {{"op", "get"}}))["got"];
  ASSERT_FALSE(got.is_null());
  EXPECT_EQ(got["tag"], "t1");
  EXPECT_EQ(got["code"], 0);
  EXPECT_EQ(json::parse(got["body"].get<std::string>())["input"]["x"], 1);
  auto calls = log_of_calls().all();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_GT(calls[0].deadline_ms, 0);
  EXPECT_LE(calls[0].deadline_ms, deadline); // the 60 s ask was cut to the caller's deadline
  // An ask to an agent that does not exist comes back as a failure notice.
  ASSERT_TRUE(ask("acme/asker", {{"op", "go"}, {"to", "acme/nobody"}}));
  for (int i = 0; i < 200 && got["code"] == 0; ++i, std::this_thread::sleep_for(10ms))
    got = (*ask("acme/asker", {{"op", "get"}}))["got"];
  EXPECT_EQ(got["code"], static_cast<int>(errc::agent_not_found)) << got.dump();
  // Timers: two go off, in order of their delays.
  ASSERT_TRUE(ask("acme/asker", {{"op", "timer"}, {"ms", 150}, {"tag", "late"}}));
  ASSERT_TRUE(ask("acme/asker", {{"op", "timer"}, {"ms", 10}, {"tag", "early"}}));
  json timers;
  for (int i = 0; i < 200; ++i, std::this_thread::sleep_for(10ms)) {
    timers = (*ask("acme/asker", {{"op", "get"}}))["timers"];
    if (timers.size() == 2)
      break;
  }
  EXPECT_EQ(timers, json({"early", "late"}));
}

} // namespace
