#pragma once

// The circuit breaker that fronts an agent: a pure state machine (`breaker_state_machine`)
// and the actor around it (`spawn_circuit_breaker`).
//
// States and transitions (names as they appear in logs, metrics and inspection):
//
//   closed    -> open       after `failures_consecutive_max` consecutive failures, or when the
//                           sliding window (`window_ms`) holds at least `window_calls_min`
//                           completed calls and failures * 100 >= calls *
//                           `failure_rate_percent_max`.
//   open      -> half_open  once the current reset timeout has elapsed (timer, or lazily on
//                           the next call). Every call is refused while open.
//   half_open -> closed     when all `half_open_probes` probes succeeded; the reset timeout
//                           goes back to `reset_timeout_ms`.
//   half_open -> open       on the first probe failure; the reset timeout doubles, capped at
//                           `reset_timeout_ms_max`.
//
// A call is counted when it completes (success or failure), never when it is refused. The
// outcome of a call admitted in an earlier state period (e.g. a slow call admitted while
// closed that completes after the breaker opened) is ignored by the state machine: it is
// counted as `results_stale` only.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "protocols/agent_id.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_runtime.hpp"

namespace hive {

/// The state of a circuit breaker.
enum class breaker_state : uint8_t {
  /// Calls pass; outcomes are counted.
  closed,
  /// Calls are refused until the reset timeout elapses.
  open,
  /// A bounded number of probe calls pass; their outcomes decide.
  half_open,
};

/// Returns `closed`, `open` or `half_open`.
[[nodiscard]] std::string_view to_string(breaker_state x) noexcept;

/// Number of buckets of the sliding failure-rate window. A completed call leaves the window
/// between `window_ms * (1 - 1/breaker_window_buckets)` and `window_ms` after it completed.
inline constexpr size_t breaker_window_buckets = 20;

/// Most calls one breaker actor keeps in flight towards its agent; further calls are answered
/// with `errc::overloaded` (not counted as failures).
inline constexpr size_t breaker_calls_pending_max = 65536;

/// The circuit breaker's decision logic, free of actors and clocks: callers pass the current
/// time to every member function. Not thread-safe (owned by one actor).
class breaker_state_machine {
public:
  /// Monotonic time, as CAF's actor clock (and its deterministic test clock) reports it.
  using time_point = caf::actor_clock::time_point;

  /// Duration type of `time_point`.
  using duration = caf::actor_clock::duration_type;

  /// Called after every transition, with the old and the new state.
  using listener = std::function<void(breaker_state from, breaker_state to)>;

  /// Proof that a call was admitted; hand it back to `record` with the call's outcome.
  struct ticket {
    /// The state period (incremented on every transition) that admitted the call.
    uint64_t epoch = 0;
    /// Whether the call is a half-open probe.
    bool probe = false;
  };

  /// Creates a closed breaker. `cfg` must hold validated values (see config/node_config.cpp
  /// for the ranges): violations are programmer errors and abort.
  explicit breaker_state_machine(const node_config::breaker_section& cfg);

  /// Sets the function called after every transition (replaces any previous one).
  void set_listener(listener f) {
    listener_ = std::move(f);
  }

  /// Asks to let one call through. Moves open -> half_open first if the reset timeout has
  /// elapsed. Returns a ticket when the call may proceed, nothing when it is refused.
  [[nodiscard]] std::optional<ticket> try_acquire(time_point now);

  /// Records the outcome of an admitted call. Returns false if the ticket belongs to an
  /// earlier state period (the outcome is then ignored).
  bool record(const ticket& t, bool failed, time_point now);

  /// Moves open -> half_open if the reset timeout has elapsed (the timer path). Returns
  /// whether it did.
  bool tick(time_point now);

  /// The current state.
  [[nodiscard]] breaker_state state() const noexcept {
    return state_;
  }

  /// While open: when the breaker will go half-open.
  [[nodiscard]] time_point open_until() const noexcept {
    return open_until_;
  }

  /// A hint for refused callers: while open the time until half-open (at least 1 ms),
  /// otherwise the current reset timeout.
  [[nodiscard]] std::chrono::milliseconds retry_after(time_point now) const;

  /// Failures since the last success (reset by every transition).
  [[nodiscard]] uint64_t failures_consecutive() const noexcept {
    return failures_consecutive_;
  }

  /// Completed calls in the sliding window at `now` (closed state only; 0 otherwise).
  [[nodiscard]] uint64_t window_calls(time_point now) const;

  /// Failed calls in the sliding window at `now`.
  [[nodiscard]] uint64_t window_failures(time_point now) const;

  /// How often the breaker went to `open`.
  [[nodiscard]] uint64_t times_opened() const noexcept {
    return times_opened_;
  }

  /// The reset timeout the breaker uses (or will use) for its current/next open period.
  [[nodiscard]] std::chrono::milliseconds reset_timeout() const noexcept {
    return reset_timeout_;
  }

  /// Probes admitted in the current half-open period.
  [[nodiscard]] uint64_t probes_issued() const noexcept {
    return probes_issued_;
  }

  /// Probes of the current half-open period that succeeded.
  [[nodiscard]] uint64_t probes_succeeded() const noexcept {
    return probes_succeeded_;
  }

  /// Calls refused since creation.
  [[nodiscard]] uint64_t calls_refused() const noexcept {
    return calls_refused_;
  }

  /// Outcomes ignored because their call was admitted in an earlier state period.
  [[nodiscard]] uint64_t results_stale() const noexcept {
    return results_stale_;
  }

  /// The transition counter; increases by one on every transition.
  [[nodiscard]] uint64_t epoch() const noexcept {
    return epoch_;
  }

  /// Describes the state and counters: `state`, `failures_consecutive`, `window_calls`,
  /// `window_failures`, `times_opened`, `reset_timeout_ms`, `retry_after_ms` (open only),
  /// `probes_issued`, `probes_succeeded`, `calls_refused`, `results_stale`, and the settings.
  [[nodiscard]] nlohmann::json to_json(time_point now) const;

private:
  struct bucket {
    int64_t index = -1;
    uint64_t calls = 0;
    uint64_t failures = 0;
  };

  [[nodiscard]] int64_t bucket_index(time_point t) const;
  /// Sums one field of the buckets inside the window ending at `now`.
  [[nodiscard]] uint64_t window_sum(time_point now, uint64_t bucket::*field) const;
  void transition(breaker_state to, time_point now);
  void open(time_point now);
  void clear_counters();
  void record_closed(bool failed, time_point now);

  node_config::breaker_section cfg_;
  duration bucket_width_;
  breaker_state state_ = breaker_state::closed;
  uint64_t epoch_ = 0;
  time_point open_until_{};
  std::chrono::milliseconds reset_timeout_;
  uint64_t failures_consecutive_ = 0;
  std::array<bucket, breaker_window_buckets> window_{};
  uint64_t probes_issued_ = 0;
  uint64_t probes_succeeded_ = 0;
  uint64_t times_opened_ = 0;
  uint64_t calls_refused_ = 0;
  uint64_t results_stale_ = 0;
  listener listener_;
};

/// Spawns a circuit breaker for agent `id`. Protocol:
/// - `(target_atom, caf::actor)`: sets (or, with an invalid handle, clears) the agent it
///   forwards to. The breaker monitors the target and clears it when it goes down.
/// - `agent_call` as a request: refused at once with `errc::circuit_open` ("<id>: circuit
///   open, retry after N ms") unless admitted; admitted calls are forwarded to the target and
///   its `agent_reply` or error is relayed. Failures: error replies except invalid_argument /
///   rejected / too_large (the caller's fault), no target (`errc::agent_failed`), the target
///   going down, and no reply within `call_timeout_ms` or before `env.deadline_unix_ms`
///   (`errc::timeout`). A call whose envelope deadline already passed on arrival is answered
///   with `errc::timeout` without being forwarded or counted.
/// - `agent_call` as a plain send: forwarded while closed; dropped (counted, logged at debug)
///   while open or half-open or without target.
/// - `inspect_request`: answered with `agent_reply` holding the JSON of
///   `breaker_state_machine::to_json` plus `agent`, `target_set`, `calls_pending`,
///   `calls_timed_out`, `tells_forwarded`, `tells_dropped`. Read-only: no transition.
/// - An exit message with a non-normal reason (the runtime sends `user_shutdown`) answers
///   every pending call with `errc::agent_failed` and terminates the breaker.
/// Every transition is logged (`breaker_transition`, fields from/to/agent) and counted with
/// `metrics->breaker_transition`; `breaker_added` runs at spawn and `breaker_removed(state)` at
/// termination. `m` may be null (no metrics).
[[nodiscard]] caf::actor spawn_circuit_breaker(caf::actor_system& sys, const agent_id& id,
                                               node_config::breaker_section cfg,
                                               std::shared_ptr<hive::metrics> m);

/// Returns a `front_factory` for `node_runtime::start` that spawns breakers with `cfg`.
[[nodiscard]] front_factory make_breaker_factory(node_config::breaker_section cfg,
                                                 std::shared_ptr<hive::metrics> m);

} // namespace hive
