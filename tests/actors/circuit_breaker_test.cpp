// Deterministic tests of the circuit-breaker actor on CAF's test coordinator: actors run only
// in `run()`, and time moves only with `advance()`.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/circuit_breaker.hpp"
#include "protocols/errc.hpp"
#include "protocols/messages.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_runtime.hpp"
#include "support/caf_fixture.hpp"

namespace hive {
namespace {

using namespace std::chrono_literals;

/// What a scripted agent saw.
struct target_log {
  /// Bodies of every `agent_call` received, in order.
  std::vector<std::string> bodies;
  /// Whether each was a request.
  std::vector<bool> requests;
};

struct scripted_target_state {
  static inline const char* name = "test.scripted_target";
  std::vector<caf::response_promise> held;
};

/// An agent that answers by body: `ok` -> agent_reply{"ok"}; `err:N` -> the hive error N;
/// `hang` -> no answer until a tell with body `release` arrives (then agent_reply{"late"}).
caf::behavior scripted_target(caf::stateful_actor<scripted_target_state>* self,
                              std::shared_ptr<target_log> log) {
  return {
    [self, log](agent_call& call) -> caf::result<agent_reply> {
      log->bodies.push_back(call.body);
      auto is_request = self->current_mailbox_element()->mid.is_request();
      log->requests.push_back(is_request);
      if (!is_request) {
        if (call.body == "release") {
          for (auto& rp : self->state.held)
            rp.deliver(agent_reply{"late"});
          self->state.held.clear();
        }
        return agent_reply{"ignored"};
      }
      if (call.body == "hang") {
        self->state.held.push_back(self->make_response_promise());
        return caf::delegated<agent_reply>{};
      }
      if (call.body.rfind("err:", 0) == 0) {
        auto code = static_cast<errc>(std::stoi(call.body.substr(4)));
        return make_error(code, "scripted failure");
      }
      return agent_reply{call.body};
    },
  };
}

/// `message_of(err)`, safe for an empty error (CAF 0.17's `error::category()` crashes on one).
std::string text_of(const caf::error& err) {
  return err ? message_of(err) : std::string{"<no error>"};
}

/// The outcome of one ask, filled in when the answer arrives.
struct ask_result {
  bool done = false;
  std::string body;
  caf::error err;
};

// Clients are spawned with arguments on purpose: spawning a function actor without any trips
// UBSan inside CAF 0.17's init_fun_factory (it dereferences a null `shared_ptr<tuple<>>`).

/// Sends one request and stores the answer.
void ask_client(caf::event_based_actor* self, std::shared_ptr<ask_result> result, caf::actor dest,
                agent_call call) {
  self->request(dest, caf::infinite, std::move(call))
    .then(
      [result](agent_reply& reply) {
        result->done = true;
        result->body = reply.body;
      },
      [result](caf::error& err) {
        result->done = true;
        result->err = err;
      });
}

/// Sends one `inspect_request` and stores the JSON text (or the error).
void inspect_client(caf::event_based_actor* self, std::shared_ptr<std::string> result,
                    caf::actor dest) {
  self->request(dest, caf::infinite, inspect_request{7})
    .then([result](agent_reply& reply) { *result = reply.body; },
          [result](caf::error& err) { *result = "error: " + caf::to_string(err); });
}

node_config::breaker_section test_config() {
  node_config::breaker_section cfg;
  cfg.failures_consecutive_max = 3;
  cfg.failure_rate_percent_max = 50;
  cfg.window_ms = 10000;
  cfg.window_calls_min = 10;
  cfg.reset_timeout_ms = 1000;
  cfg.reset_timeout_ms_max = 4000;
  cfg.half_open_probes = 2;
  cfg.call_timeout_ms = 500;
  return cfg;
}

class circuit_breaker_test : public test::caf_fixture {
public:
  circuit_breaker_test() : log(std::make_shared<target_log>()) {
    m = std::make_shared<hive::metrics>();
  }

  ~circuit_breaker_test() override {
    for (auto& a : spawned)
      self->send_exit(a, caf::exit_reason::user_shutdown);
    run();
  }

  /// Spawns the breaker under test (and its scripted agent unless `with_target` is false).
  void start(node_config::breaker_section cfg = test_config(), bool with_target = true) {
    breaker = spawn_circuit_breaker(sys, agent_id{"acme", "c1"}, cfg, m);
    spawned.push_back(breaker);
    if (with_target) {
      target = sys.spawn(scripted_target, log);
      spawned.push_back(target);
      self->send(breaker, target_atom::value, target);
    }
    run();
  }

  /// Sends `body` as a request to the breaker (from a fresh client actor) without running.
  std::shared_ptr<ask_result> ask_later(std::string body, int64_t deadline_unix_ms = 0) {
    auto result = std::make_shared<ask_result>();
    auto dest = breaker;
    agent_call call{envelope{++cid, "acme", deadline_unix_ms, "client", {}, 0}, std::move(body)};
    sys.spawn(ask_client, result, dest, std::move(call));
    return result;
  }

  /// Asks and runs until quiet.
  std::shared_ptr<ask_result> ask(std::string body, int64_t deadline_unix_ms = 0) {
    auto result = ask_later(std::move(body), deadline_unix_ms);
    run();
    return result;
  }

  /// Sends `body` as a plain message (tell) to the breaker and runs.
  void tell(std::string body) {
    self->send(breaker, agent_call{envelope{++cid, "acme", 0, "client", {}, 0}, std::move(body)});
    run();
  }

  /// The breaker's inspection JSON.
  nlohmann::json inspect() {
    auto result = std::make_shared<std::string>();
    auto dest = breaker;
    sys.spawn(inspect_client, result, dest);
    run();
    EXPECT_FALSE(result->empty());
    return nlohmann::json::parse(*result);
  }

  std::string state() {
    return inspect().at("state").get<std::string>();
  }

  /// Opens a fresh breaker by three consecutive agent failures.
  void trip() {
    for (int i = 0; i < 3; ++i) {
      auto r = ask("err:11");
      ASSERT_TRUE(r->done);
      ASSERT_EQ(code_of(r->err), errc::agent_failed);
    }
    ASSERT_EQ(state(), "open");
  }

  /// The value of `hive_breakers{state="<s>"}`.
  double gauge(const std::string& s) {
    auto text = m->render();
    auto key = "hive_breakers{state=\"" + s + "\"} ";
    auto pos = text.find(key);
    EXPECT_NE(pos, std::string::npos) << text;
    if (pos == std::string::npos)
      return -1;
    return std::stod(text.substr(pos + key.size()));
  }

  /// The value of `hive_breaker_transitions_total{to="<s>"}` (0 if absent).
  double transitions_to(const std::string& s) {
    auto text = m->render();
    auto key = "hive_breaker_transitions_total{to=\"" + s + "\"} ";
    auto pos = text.find(key);
    if (pos == std::string::npos)
      return 0;
    return std::stod(text.substr(pos + key.size()));
  }

  std::shared_ptr<target_log> log;
  std::shared_ptr<hive::metrics> m;
  caf::actor breaker;
  caf::actor target;
  std::vector<caf::actor> spawned;
  uint64_t cid = 0;
};

TEST_F(circuit_breaker_test, closed_forwards_calls_and_relays_replies) {
  start();
  auto r = ask("ok");
  ASSERT_TRUE(r->done);
  EXPECT_FALSE(r->err);
  EXPECT_EQ(r->body, "ok");
  ASSERT_EQ(log->bodies, (std::vector<std::string>{"ok"}));
  EXPECT_TRUE(log->requests[0]);
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "closed");
  EXPECT_EQ(j.at("agent"), "acme/c1");
  EXPECT_EQ(j.at("target_set"), true);
  EXPECT_EQ(j.at("window_calls"), 1);
  EXPECT_EQ(j.at("calls_pending"), 0);
  EXPECT_EQ(gauge("closed"), 1);
}

TEST_F(circuit_breaker_test, error_replies_are_relayed_with_their_code) {
  start();
  auto r = ask("err:11");
  ASSERT_TRUE(r->done);
  EXPECT_EQ(code_of(r->err), errc::agent_failed);
  EXPECT_EQ(text_of(r->err), "scripted failure");
  EXPECT_EQ(inspect().at("failures_consecutive"), 1);
}

TEST_F(circuit_breaker_test, closed_to_open_by_consecutive_failures) {
  start();
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(code_of(ask("err:12")->err), errc::rejected); // caller's fault: not counted
  EXPECT_EQ(code_of(ask("err:16")->err), errc::internal);
  EXPECT_EQ(code_of(ask("err:7")->err), errc::timeout);
  EXPECT_EQ(state(), "closed");
  EXPECT_EQ(inspect().at("failures_consecutive"), 2);
  EXPECT_EQ(code_of(ask("err:11")->err), errc::agent_failed);
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "open");
  EXPECT_EQ(j.at("times_opened"), 1);
  EXPECT_EQ(j.at("reset_timeout_ms"), 1000);
  EXPECT_EQ(gauge("closed"), 0);
  EXPECT_EQ(gauge("open"), 1);
  EXPECT_EQ(transitions_to("open"), 1);
}

TEST_F(circuit_breaker_test, callers_faults_count_as_success) {
  start();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(code_of(ask("err:1")->err), errc::invalid_argument);
    EXPECT_EQ(code_of(ask("err:12")->err), errc::rejected);
    EXPECT_EQ(code_of(ask("err:8")->err), errc::too_large);
  }
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "closed");
  EXPECT_EQ(j.at("failures_consecutive"), 0);
  EXPECT_EQ(j.at("window_calls"), 12);
  EXPECT_EQ(j.at("window_failures"), 0);
}

TEST_F(circuit_breaker_test, closed_to_open_by_failure_rate_but_not_below_window_calls_min) {
  auto cfg = test_config();
  cfg.failures_consecutive_max = 1000;
  start(cfg);
  // 9 calls, 5 failed (55 %): below window_calls_min = 10.
  for (int i = 0; i < 9; ++i) {
    ask(i % 2 == 0 ? "err:11" : "ok");
    advance(100ms);
  }
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "closed");
  EXPECT_EQ(j.at("window_calls"), 9);
  EXPECT_EQ(j.at("window_failures"), 5);
  // The 10th call makes the window count: 6 of 10 failed.
  EXPECT_EQ(code_of(ask("err:11")->err), errc::agent_failed);
  EXPECT_EQ(state(), "open");
}

TEST_F(circuit_breaker_test, failure_rate_below_the_limit_stays_closed) {
  auto cfg = test_config();
  cfg.failures_consecutive_max = 1000;
  start(cfg);
  for (int i = 0; i < 40; ++i)
    ask(i % 5 >= 3 ? "err:11" : "ok"); // 40 %
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "closed");
  EXPECT_EQ(j.at("window_calls"), 40);
  EXPECT_EQ(j.at("window_failures"), 16);
}

TEST_F(circuit_breaker_test, open_refuses_at_once_and_the_agent_receives_nothing) {
  start();
  trip();
  auto seen = log->bodies.size();
  advance(400ms);
  for (int i = 0; i < 5; ++i) {
    auto r = ask("ok");
    ASSERT_TRUE(r->done);
    EXPECT_EQ(code_of(r->err), errc::circuit_open);
    EXPECT_EQ(text_of(r->err), "acme/c1: circuit open, retry after 600 ms");
  }
  EXPECT_EQ(log->bodies.size(), seen);
  EXPECT_EQ(inspect().at("calls_refused"), 5);
}

TEST_F(circuit_breaker_test, open_to_half_open_after_exactly_the_reset_timeout) {
  start();
  trip();
  advance(999ms);
  EXPECT_EQ(state(), "open");
  EXPECT_EQ(inspect().at("retry_after_ms"), 1);
  auto seen = log->bodies.size();
  auto early = ask("ok"); // 1 ms early: still refused
  EXPECT_EQ(text_of(early->err), "acme/c1: circuit open, retry after 1 ms");
  EXPECT_EQ(log->bodies.size(), seen);
  advance(1ms);
  EXPECT_EQ(state(), "half_open"); // by the timer: no call was made
  EXPECT_EQ(gauge("half_open"), 1);
  EXPECT_EQ(gauge("open"), 0);
  EXPECT_EQ(transitions_to("half_open"), 1);
}

TEST_F(circuit_breaker_test, open_to_half_open_lazily_on_a_call_before_the_timer_fires) {
  auto cfg = test_config();
  cfg.half_open_probes = 1;
  start(cfg);
  trip();
  // Move the virtual clock without dispatching the timer.
  sched.clock().current_time += 1000ms;
  auto r = ask("ok");
  ASSERT_TRUE(r->done);
  EXPECT_FALSE(r->err);
  EXPECT_EQ(state(), "closed");
  // The now stale timer fires and changes nothing.
  EXPECT_GT(sched.trigger_timeouts(), 0u);
  run();
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "closed");
  EXPECT_EQ(j.at("times_opened"), 1);
  EXPECT_EQ(transitions_to("half_open"), 1);
  EXPECT_EQ(transitions_to("closed"), 1);
}

TEST_F(circuit_breaker_test, half_open_lets_exactly_k_probes_through) {
  start(); // half_open_probes = 2
  trip();
  advance(1000ms);
  ASSERT_EQ(state(), "half_open");
  auto seen = log->bodies.size();
  // Three calls arrive before any probe is answered.
  auto r1 = ask_later("hang");
  auto r2 = ask_later("hang");
  auto r3 = ask_later("hang");
  run();
  EXPECT_EQ(log->bodies.size(), seen + 2);
  EXPECT_FALSE(r1->done);
  EXPECT_FALSE(r2->done);
  ASSERT_TRUE(r3->done);
  EXPECT_EQ(code_of(r3->err), errc::circuit_open);
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "half_open");
  EXPECT_EQ(j.at("probes_issued"), 2);
  EXPECT_EQ(j.at("calls_pending"), 2);
}

TEST_F(circuit_breaker_test, probe_success_closes_the_circuit) {
  start();
  trip();
  advance(1000ms);
  ASSERT_EQ(state(), "half_open");
  auto r1 = ask("ok");
  EXPECT_EQ(r1->body, "ok");
  EXPECT_EQ(state(), "half_open"); // 1 of 2 probes done
  auto r2 = ask("ok");
  EXPECT_EQ(r2->body, "ok");
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "closed");
  EXPECT_EQ(j.at("reset_timeout_ms"), 1000);
  EXPECT_EQ(gauge("closed"), 1);
  EXPECT_EQ(gauge("half_open"), 0);
  // Closed again: calls flow.
  EXPECT_EQ(ask("ok")->body, "ok");
}

TEST_F(circuit_breaker_test, probe_failure_reopens_with_doubled_timeout_capped_at_max) {
  start(); // reset 1000 ms, max 4000 ms
  trip();
  for (auto timeout : {1000ms, 2000ms, 4000ms, 4000ms}) {
    advance(timeout - 1ms);
    ASSERT_EQ(state(), "open") << timeout.count();
    advance(1ms);
    ASSERT_EQ(state(), "half_open") << timeout.count();
    EXPECT_EQ(code_of(ask("err:11")->err), errc::agent_failed);
    auto j = inspect();
    ASSERT_EQ(j.at("state"), "open");
    EXPECT_EQ(j.at("reset_timeout_ms"), std::min<int64_t>(timeout.count() * 2, 4000));
  }
  EXPECT_EQ(inspect().at("times_opened"), 5);
  // Recovery restores the base timeout.
  advance(4000ms);
  ask("ok");
  ask("ok");
  EXPECT_EQ(state(), "closed");
  trip();
  advance(999ms);
  EXPECT_EQ(state(), "open");
  advance(1ms);
  EXPECT_EQ(state(), "half_open");
}

TEST_F(circuit_breaker_test, a_slow_call_from_the_closed_period_is_not_a_probe) {
  auto cfg = test_config();
  cfg.call_timeout_ms = 5000;
  start(cfg);
  auto slow = ask("hang");
  trip();
  advance(1000ms);
  ASSERT_EQ(state(), "half_open");
  self->send(target, agent_call{envelope{}, "release"});
  run();
  ASSERT_TRUE(slow->done);
  EXPECT_EQ(slow->body, "late"); // still relayed to its caller
  auto j = inspect();
  EXPECT_EQ(j.at("state"), "half_open");
  EXPECT_EQ(j.at("probes_succeeded"), 0);
  EXPECT_EQ(j.at("results_stale"), 1);
}

TEST_F(circuit_breaker_test, a_timeout_counts_as_a_failure) {
  start();
  auto r = ask("hang");
  advance(499ms);
  EXPECT_FALSE(r->done);
  advance(1ms);
  ASSERT_TRUE(r->done);
  EXPECT_EQ(code_of(r->err), errc::timeout);
  EXPECT_EQ(text_of(r->err), "acme/c1: no reply within 500 ms");
  auto j = inspect();
  EXPECT_EQ(j.at("failures_consecutive"), 1);
  EXPECT_EQ(j.at("calls_timed_out"), 1);
  EXPECT_EQ(j.at("calls_pending"), 0);
  // Two more timeouts open it.
  auto r2 = ask("hang");
  auto r3 = ask("hang");
  advance(500ms);
  EXPECT_EQ(code_of(r2->err), errc::timeout);
  EXPECT_EQ(code_of(r3->err), errc::timeout);
  EXPECT_EQ(state(), "open");
}

TEST_F(circuit_breaker_test, a_late_reply_after_the_timeout_is_dropped) {
  start();
  auto r = ask("hang");
  advance(500ms);
  ASSERT_EQ(code_of(r->err), errc::timeout);
  self->send(target, agent_call{envelope{}, "release"});
  run();
  EXPECT_EQ(code_of(r->err), errc::timeout); // still the first answer
  auto j = inspect();
  EXPECT_EQ(j.at("failures_consecutive"), 1);
  EXPECT_EQ(j.at("window_calls"), 1);
}

TEST_F(circuit_breaker_test, an_earlier_envelope_deadline_wins_over_call_timeout) {
  auto cfg = test_config();
  cfg.call_timeout_ms = 5000;
  start(cfg);
  auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  auto r = ask("hang", wall_ms + 200);
  advance(150ms);
  EXPECT_FALSE(r->done);
  advance(60ms);
  ASSERT_TRUE(r->done);
  EXPECT_EQ(code_of(r->err), errc::timeout);
  EXPECT_EQ(inspect().at("failures_consecutive"), 1);
}

TEST_F(circuit_breaker_test, an_expired_envelope_deadline_is_answered_without_forwarding) {
  start();
  auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  auto r = ask("ok", wall_ms - 10);
  ASSERT_TRUE(r->done);
  EXPECT_EQ(code_of(r->err), errc::timeout);
  EXPECT_TRUE(log->bodies.empty());
  EXPECT_EQ(inspect().at("failures_consecutive"), 0);
}

TEST_F(circuit_breaker_test, tells_pass_while_closed_and_are_dropped_while_open) {
  start();
  tell("t1");
  ASSERT_EQ(log->bodies, (std::vector<std::string>{"t1"}));
  EXPECT_FALSE(log->requests[0]);
  trip();
  auto seen = log->bodies.size();
  tell("t2");
  EXPECT_EQ(log->bodies.size(), seen);
  advance(1000ms);
  ASSERT_EQ(state(), "half_open");
  tell("t3");
  EXPECT_EQ(log->bodies.size(), seen);
  auto j = inspect();
  EXPECT_EQ(j.at("tells_forwarded"), 1);
  EXPECT_EQ(j.at("tells_dropped"), 2);
}

TEST_F(circuit_breaker_test, no_target_answers_agent_failed_and_counts_as_failure) {
  start(test_config(), false);
  auto r = ask("ok");
  ASSERT_TRUE(r->done);
  EXPECT_EQ(code_of(r->err), errc::agent_failed);
  auto j = inspect();
  EXPECT_EQ(j.at("target_set"), false);
  EXPECT_EQ(j.at("failures_consecutive"), 1);
  ask("ok");
  ask("ok");
  EXPECT_EQ(state(), "open");
  tell("t"); // dropped, and nothing crashes without a target
  EXPECT_EQ(inspect().at("tells_dropped"), 1);
}

TEST_F(circuit_breaker_test, target_going_down_fails_its_pending_calls) {
  start();
  auto r = ask("hang");
  EXPECT_FALSE(r->done);
  self->send_exit(target, caf::exit_reason::kill);
  run();
  ASSERT_TRUE(r->done);
  EXPECT_EQ(code_of(r->err), errc::agent_failed);
  auto j = inspect();
  EXPECT_EQ(j.at("target_set"), false);
  EXPECT_EQ(j.at("calls_pending"), 0);
  EXPECT_EQ(j.at("failures_consecutive"), 1);
  // A restarted agent is announced with a new target.
  auto log2 = std::make_shared<target_log>();
  auto target2 = sys.spawn(scripted_target, log2);
  spawned.push_back(target2);
  self->send(breaker, target_atom::value, target2);
  run();
  EXPECT_EQ(ask("ok")->body, "ok");
  EXPECT_EQ(log2->bodies, (std::vector<std::string>{"ok"}));
  EXPECT_EQ(inspect().at("failures_consecutive"), 0);
}

TEST_F(circuit_breaker_test, user_shutdown_answers_pending_calls_and_removes_the_gauge) {
  start();
  auto r = ask("hang");
  EXPECT_EQ(gauge("closed"), 1);
  self->send_exit(breaker, caf::exit_reason::user_shutdown);
  run();
  ASSERT_TRUE(r->done);
  EXPECT_EQ(code_of(r->err), errc::agent_failed);
  EXPECT_EQ(text_of(r->err), "acme/c1: agent stopped");
  EXPECT_EQ(gauge("closed"), 0);
  EXPECT_EQ(gauge("open"), 0);
  EXPECT_EQ(gauge("half_open"), 0);
}

TEST_F(circuit_breaker_test, removal_while_open_decrements_the_open_gauge) {
  start();
  trip();
  EXPECT_EQ(gauge("open"), 1);
  self->send_exit(breaker, caf::exit_reason::user_shutdown);
  run();
  EXPECT_EQ(gauge("open"), 0);
  EXPECT_EQ(gauge("closed"), 0);
}

TEST_F(circuit_breaker_test, works_without_metrics_and_through_the_factory) {
  m = nullptr;
  auto factory = make_breaker_factory(test_config(), nullptr);
  breaker = factory(sys, agent_id{"acme", "c2"});
  spawned.push_back(breaker);
  target = sys.spawn(scripted_target, log);
  spawned.push_back(target);
  self->send(breaker, target_atom::value, target);
  run();
  EXPECT_EQ(ask("ok")->body, "ok");
  for (int i = 0; i < 3; ++i)
    ask("err:11");
  auto j = inspect();
  EXPECT_EQ(j.at("agent"), "acme/c2");
  EXPECT_EQ(j.at("state"), "open");
}

} // namespace
} // namespace hive
