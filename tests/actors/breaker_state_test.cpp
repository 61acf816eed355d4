// Unit tests of the pure circuit-breaker state machine (no actors): time is passed in.

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "actors/circuit_breaker.hpp"

namespace hive {
namespace {

using namespace std::chrono_literals;
using time_point = breaker_state_machine::time_point;
using transitions = std::vector<std::pair<std::string, std::string>>;

node_config::breaker_section test_config() {
  node_config::breaker_section cfg;
  cfg.failures_consecutive_max = 3;
  cfg.failure_rate_percent_max = 50;
  cfg.window_ms = 10000;
  cfg.window_calls_min = 10;
  cfg.reset_timeout_ms = 1000;
  cfg.reset_timeout_ms_max = 3000;
  cfg.half_open_probes = 2;
  cfg.call_timeout_ms = 500;
  return cfg;
}

/// A config whose consecutive-failure limit never triggers, to test the rate rule alone.
node_config::breaker_section rate_config() {
  auto cfg = test_config();
  cfg.failures_consecutive_max = 1000;
  return cfg;
}

class breaker_state_test : public ::testing::Test {
public:
  /// Aligned to the 500 ms window buckets of `test_config` (1 h since the clock's epoch).
  time_point t0 = time_point{} + 1h;

  transitions seen;

  breaker_state_machine make(const node_config::breaker_section& cfg) {
    breaker_state_machine sm{cfg};
    sm.set_listener([this](breaker_state from, breaker_state to) {
      seen.emplace_back(std::string{to_string(from)}, std::string{to_string(to)});
    });
    return sm;
  }

  /// Runs one call that completes with `failed` at `now`; returns whether it was admitted.
  static bool call(breaker_state_machine& sm, bool failed, time_point now) {
    auto t = sm.try_acquire(now);
    if (!t)
      return false;
    EXPECT_TRUE(sm.record(*t, failed, now));
    return true;
  }

  /// Opens a closed machine by consecutive failures at `now`.
  static void trip(breaker_state_machine& sm, time_point now) {
    ASSERT_EQ(sm.state(), breaker_state::closed);
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(call(sm, true, now));
    ASSERT_EQ(sm.state(), breaker_state::open);
  }
};

TEST_F(breaker_state_test, names_of_states) {
  EXPECT_EQ(to_string(breaker_state::closed), "closed");
  EXPECT_EQ(to_string(breaker_state::open), "open");
  EXPECT_EQ(to_string(breaker_state::half_open), "half_open");
}

TEST_F(breaker_state_test, starts_closed_and_admits_calls) {
  auto sm = make(test_config());
  EXPECT_EQ(sm.state(), breaker_state::closed);
  for (int i = 0; i < 100; ++i)
    EXPECT_TRUE(call(sm, false, t0 + i * 1ms));
  EXPECT_EQ(sm.state(), breaker_state::closed);
  EXPECT_EQ(sm.window_calls(t0 + 100ms), 100u);
  EXPECT_EQ(sm.window_failures(t0 + 100ms), 0u);
  EXPECT_EQ(sm.reset_timeout(), 1000ms);
  EXPECT_TRUE(seen.empty());
}

TEST_F(breaker_state_test, closed_to_open_after_consecutive_failures) {
  auto sm = make(test_config());
  EXPECT_TRUE(call(sm, true, t0));
  EXPECT_TRUE(call(sm, true, t0));
  EXPECT_EQ(sm.failures_consecutive(), 2u);
  EXPECT_EQ(sm.state(), breaker_state::closed);
  EXPECT_TRUE(call(sm, true, t0));
  EXPECT_EQ(sm.state(), breaker_state::open);
  EXPECT_EQ(sm.times_opened(), 1u);
  EXPECT_EQ(sm.open_until(), t0 + 1000ms);
  EXPECT_EQ(seen, (transitions{{"closed", "open"}}));
}

TEST_F(breaker_state_test, success_resets_the_consecutive_count) {
  // window_calls_min out of reach: only the consecutive rule can open it.
  auto cfg = test_config();
  cfg.window_calls_min = 1000;
  auto sm = make(cfg);
  for (int round = 0; round < 5; ++round) {
    EXPECT_TRUE(call(sm, true, t0));
    EXPECT_TRUE(call(sm, true, t0));
    EXPECT_EQ(sm.failures_consecutive(), 2u);
    EXPECT_TRUE(call(sm, false, t0));
    EXPECT_EQ(sm.failures_consecutive(), 0u);
  }
  EXPECT_EQ(sm.state(), breaker_state::closed);
  EXPECT_EQ(sm.window_failures(t0), 10u);
  EXPECT_EQ(sm.window_calls(t0), 15u);
}

TEST_F(breaker_state_test, closed_to_open_by_failure_rate_once_window_calls_min_is_reached) {
  auto sm = make(rate_config());
  // 5 failures, 4 successes: 55 % failed but only 9 calls (< window_calls_min = 10).
  for (int i = 0; i < 9; ++i)
    EXPECT_TRUE(call(sm, i % 2 == 0, t0 + i * 100ms));
  EXPECT_EQ(sm.window_calls(t0 + 1s), 9u);
  EXPECT_EQ(sm.window_failures(t0 + 1s), 5u);
  EXPECT_EQ(sm.state(), breaker_state::closed);
  // The 10th call (a failure): 6 of 10 failed.
  EXPECT_TRUE(call(sm, true, t0 + 1s));
  EXPECT_EQ(sm.state(), breaker_state::open);
  EXPECT_EQ(sm.times_opened(), 1u);
  EXPECT_EQ(sm.open_until(), t0 + 1s + 1000ms);
}

TEST_F(breaker_state_test, failure_rate_exactly_at_the_limit_opens) {
  auto sm = make(rate_config());
  // f s f s ... : after 10 calls exactly 50 % failed, the last call being a success.
  for (int i = 0; i < 9; ++i)
    EXPECT_TRUE(call(sm, i % 2 == 0, t0));
  EXPECT_EQ(sm.state(), breaker_state::closed);
  EXPECT_TRUE(call(sm, false, t0));
  EXPECT_EQ(sm.window_calls(t0), 0u); // counters cleared on the transition
  EXPECT_EQ(sm.state(), breaker_state::open);
}

TEST_F(breaker_state_test, failure_rate_below_the_limit_stays_closed) {
  auto sm = make(rate_config());
  // 40 % failures over 100 calls (each group of 5 ends with 2 failures: never >= 50 %).
  for (int i = 0; i < 100; ++i)
    EXPECT_TRUE(call(sm, i % 5 >= 3, t0 + i * 10ms));
  EXPECT_EQ(sm.state(), breaker_state::closed);
  EXPECT_EQ(sm.window_calls(t0 + 1s), 100u);
  EXPECT_EQ(sm.window_failures(t0 + 1s), 40u);
  EXPECT_TRUE(seen.empty());
}

TEST_F(breaker_state_test, failures_leave_the_sliding_window) {
  // Both machines see 5 failures at t0 and 5 more later; only the one where the later
  // failures come within the window opens.
  auto inside = make(rate_config());
  auto outside = make(rate_config());
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(call(inside, true, t0));
    EXPECT_TRUE(call(outside, true, t0));
  }
  EXPECT_EQ(inside.window_calls(t0 + 9500ms), 5u);
  EXPECT_EQ(inside.window_calls(t0 + 10s), 0u);
  EXPECT_EQ(inside.window_failures(t0 + 9500ms), 5u);
  EXPECT_EQ(inside.window_failures(t0 + 10s), 0u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(call(inside, true, t0 + 9500ms));
    EXPECT_TRUE(call(outside, true, t0 + 10s));
  }
  EXPECT_EQ(inside.state(), breaker_state::open);
  EXPECT_EQ(outside.state(), breaker_state::closed);
  EXPECT_EQ(outside.window_calls(t0 + 10s), 5u);
}

TEST_F(breaker_state_test, open_refuses_every_call) {
  auto sm = make(test_config());
  trip(sm, t0);
  for (int i = 0; i < 10; ++i)
    EXPECT_FALSE(sm.try_acquire(t0 + i * 50ms).has_value());
  EXPECT_EQ(sm.calls_refused(), 10u);
  EXPECT_EQ(sm.retry_after(t0), 1000ms);
  EXPECT_EQ(sm.retry_after(t0 + 400ms), 600ms);
  EXPECT_EQ(sm.retry_after(t0 + 999ms + 1ns), 1ms);
  EXPECT_EQ(sm.state(), breaker_state::open);
}

TEST_F(breaker_state_test, open_to_half_open_exactly_at_the_reset_timeout) {
  auto sm = make(test_config());
  trip(sm, t0);
  EXPECT_FALSE(sm.tick(t0 + 999ms));
  EXPECT_FALSE(sm.tick(t0 + 1000ms - 1ns));
  EXPECT_EQ(sm.state(), breaker_state::open);
  EXPECT_TRUE(sm.tick(t0 + 1000ms));
  EXPECT_EQ(sm.state(), breaker_state::half_open);
  EXPECT_FALSE(sm.tick(t0 + 5000ms)); // no-op unless open
  EXPECT_EQ(seen, (transitions{{"closed", "open"}, {"open", "half_open"}}));
}

TEST_F(breaker_state_test, open_to_half_open_lazily_on_the_next_call) {
  auto sm = make(test_config());
  trip(sm, t0);
  EXPECT_FALSE(sm.try_acquire(t0 + 999ms).has_value());
  auto t = sm.try_acquire(t0 + 1000ms);
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->probe);
  EXPECT_EQ(sm.state(), breaker_state::half_open);
  EXPECT_EQ(sm.probes_issued(), 1u);
}

TEST_F(breaker_state_test, half_open_admits_exactly_the_configured_probes) {
  auto sm = make(test_config());
  trip(sm, t0);
  auto now = t0 + 1000ms;
  auto p1 = sm.try_acquire(now);
  auto p2 = sm.try_acquire(now);
  ASSERT_TRUE(p1 && p2);
  EXPECT_TRUE(p1->probe && p2->probe);
  EXPECT_FALSE(sm.try_acquire(now).has_value());
  EXPECT_EQ(sm.probes_issued(), 2u);
  // One probe succeeded, the other is still outstanding: still refused.
  EXPECT_TRUE(sm.record(*p1, false, now));
  EXPECT_EQ(sm.state(), breaker_state::half_open);
  EXPECT_EQ(sm.probes_succeeded(), 1u);
  EXPECT_FALSE(sm.try_acquire(now).has_value());
  EXPECT_EQ(sm.calls_refused(), 2u);
}

TEST_F(breaker_state_test, all_probes_succeeding_close_it) {
  auto sm = make(test_config());
  trip(sm, t0);
  auto now = t0 + 1000ms;
  auto p1 = sm.try_acquire(now);
  auto p2 = sm.try_acquire(now);
  ASSERT_TRUE(p1 && p2);
  EXPECT_TRUE(sm.record(*p2, false, now));
  EXPECT_TRUE(sm.record(*p1, false, now));
  EXPECT_EQ(sm.state(), breaker_state::closed);
  EXPECT_EQ(sm.reset_timeout(), 1000ms);
  EXPECT_EQ(sm.failures_consecutive(), 0u);
  auto t = sm.try_acquire(now);
  ASSERT_TRUE(t.has_value());
  EXPECT_FALSE(t->probe);
  EXPECT_EQ(seen,
            (transitions{{"closed", "open"}, {"open", "half_open"}, {"half_open", "closed"}}));
}

TEST_F(breaker_state_test, probe_failure_reopens_with_doubled_timeout_capped_at_max) {
  auto sm = make(test_config()); // 1000 ms, max 3000 ms
  trip(sm, t0);
  EXPECT_EQ(sm.reset_timeout(), 1000ms);
  auto now = t0 + 1000ms;
  auto expected = {2000ms, 3000ms, 3000ms};
  for (auto timeout : expected) {
    auto p = sm.try_acquire(now);
    ASSERT_TRUE(p.has_value());
    ASSERT_TRUE(p->probe);
    EXPECT_TRUE(sm.record(*p, true, now));
    EXPECT_EQ(sm.state(), breaker_state::open);
    EXPECT_EQ(sm.reset_timeout(), timeout);
    EXPECT_EQ(sm.open_until(), now + timeout);
    EXPECT_FALSE(sm.tick(now + timeout - 1ms));
    now += timeout;
    EXPECT_TRUE(sm.tick(now));
  }
  EXPECT_EQ(sm.times_opened(), 4u);
  // Success closes and restores the base timeout for the next open period.
  auto p1 = sm.try_acquire(now);
  auto p2 = sm.try_acquire(now);
  ASSERT_TRUE(p1 && p2);
  EXPECT_TRUE(sm.record(*p1, false, now));
  EXPECT_TRUE(sm.record(*p2, false, now));
  EXPECT_EQ(sm.state(), breaker_state::closed);
  EXPECT_EQ(sm.reset_timeout(), 1000ms);
  trip(sm, now);
  EXPECT_EQ(sm.open_until(), now + 1000ms);
}

TEST_F(breaker_state_test, a_second_probe_failing_after_reopen_is_stale) {
  auto sm = make(test_config());
  trip(sm, t0);
  auto now = t0 + 1000ms;
  auto p1 = sm.try_acquire(now);
  auto p2 = sm.try_acquire(now);
  ASSERT_TRUE(p1 && p2);
  EXPECT_TRUE(sm.record(*p1, true, now));
  EXPECT_EQ(sm.reset_timeout(), 2000ms);
  EXPECT_FALSE(sm.record(*p2, true, now));
  EXPECT_EQ(sm.reset_timeout(), 2000ms); // not doubled twice
  EXPECT_EQ(sm.results_stale(), 1u);
  EXPECT_EQ(sm.times_opened(), 2u);
}

TEST_F(breaker_state_test, results_of_an_earlier_state_period_are_ignored) {
  auto sm = make(test_config());
  auto slow = sm.try_acquire(t0); // admitted while closed, completes much later
  ASSERT_TRUE(slow.has_value());
  trip(sm, t0);
  ASSERT_TRUE(sm.tick(t0 + 1000ms));
  // A success from the closed period must not count as a probe.
  EXPECT_FALSE(sm.record(*slow, false, t0 + 1000ms));
  EXPECT_EQ(sm.state(), breaker_state::half_open);
  EXPECT_EQ(sm.probes_succeeded(), 0u);
  EXPECT_EQ(sm.results_stale(), 1u);
}

TEST_F(breaker_state_test, to_json_reports_state_and_counters) {
  auto sm = make(test_config());
  EXPECT_TRUE(call(sm, true, t0));
  auto j = sm.to_json(t0);
  EXPECT_EQ(j.at("state"), "closed");
  EXPECT_EQ(j.at("failures_consecutive"), 1);
  EXPECT_EQ(j.at("window_calls"), 1);
  EXPECT_EQ(j.at("window_failures"), 1);
  EXPECT_EQ(j.at("times_opened"), 0);
  EXPECT_EQ(j.at("reset_timeout_ms"), 1000);
  EXPECT_FALSE(j.contains("retry_after_ms"));
  EXPECT_EQ(j.at("settings").at("half_open_probes"), 2);
  EXPECT_TRUE(call(sm, true, t0));
  EXPECT_TRUE(call(sm, true, t0));
  j = sm.to_json(t0 + 250ms);
  EXPECT_EQ(j.at("state"), "open");
  EXPECT_EQ(j.at("times_opened"), 1);
  EXPECT_EQ(j.at("retry_after_ms"), 750);
  ASSERT_TRUE(sm.tick(t0 + 1000ms));
  ASSERT_TRUE(sm.try_acquire(t0 + 1000ms).has_value());
  j = sm.to_json(t0 + 1000ms);
  EXPECT_EQ(j.at("state"), "half_open");
  EXPECT_EQ(j.at("probes_issued"), 1);
  EXPECT_EQ(j.at("probes_succeeded"), 0);
}

} // namespace
} // namespace hive
