#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "runtime/metrics.hpp"

namespace hive {

/// Which children a supervisor restarts when one fails (as in Erlang/OTP).
enum class restart_strategy : uint8_t {
  /// Restart only the failed child.
  one_for_one,
  /// Stop all other children, then restart all, in start order.
  one_for_all,
  /// Stop the children started after the failed one, then restart it and them, in order.
  rest_for_one,
};

/// When a child is restarted (as in Erlang/OTP).
enum class restart_type : uint8_t {
  /// Always restarted.
  permanent,
  /// Restarted only after an abnormal exit (not `normal` / `user_shutdown`).
  transient,
  /// Never restarted.
  temporary,
};

[[nodiscard]] std::string_view to_string(restart_strategy x) noexcept;
[[nodiscard]] std::string_view to_string(restart_type x) noexcept;

/// Parses "permanent" | "transient" | "temporary".
[[nodiscard]] caf::expected<restart_type> parse_restart_type(std::string_view text);

/// Settings of one supervisor.
struct supervisor_flags {
  /// Shown in logs and inspection: `root`, `tenant:acme`, ...
  std::string name;
  /// Label of `hive_escalations_total{level}`: `root`, `tenant` or `other`.
  std::string level = "other";
  restart_strategy strategy = restart_strategy::one_for_one;
  /// More than this many restarts within `period` make the supervisor give up and escalate.
  int64_t intensity_max = 10;
  caf::timespan period = std::chrono::seconds(5);
  /// Delay before the first restart of a child; doubles per restart of that child within
  /// `period`, capped at `backoff_max`.
  caf::timespan backoff_initial = std::chrono::milliseconds(10);
  caf::timespan backoff_max = std::chrono::seconds(5);
  /// Each delay is scaled by a uniform factor in [1 - j%, 1 + j%].
  int64_t jitter_percent = 20;
  /// Seed of the jitter generator; 0 picks a random seed.
  uint64_t seed = 0;
  /// Optional metrics sink (restarts per kind, escalations).
  std::shared_ptr<hive::metrics> metrics;
};

/// How to start (and restart) one child. The `start` function runs inside the supervisor and
/// returns a running actor; the supervisor monitors it (never links: a killed child must not
/// take the supervisor down).
struct child_spec {
  /// Unique among the supervisor's children.
  std::string id;
  restart_type restart = restart_type::permanent;
  /// Agent kind, for the `hive_restarts_total{kind}` series; empty for non-agents (counted
  /// as kind "supervisor").
  std::string kind;
  /// Starts the child. An error counts as a failed start: it is retried like a crash.
  std::function<caf::expected<caf::actor>(caf::local_actor* supervisor)> start;
  /// Called after every successful (re)start with the handle and the restart count.
  std::function<void(const caf::actor&, uint64_t restarts)> on_started;
  /// Called once when the child leaves for good (not restarted, or terminated on request).
  std::function<void(const caf::error& reason)> on_removed;
};

/// Observable restart decisions, for tests and inspection.
struct supervisor_stats {
  uint64_t restarts = 0;
  uint64_t escalations = 0;
  /// The delay chosen for the most recent scheduled restart.
  caf::timespan last_backoff{0};
};

/// The state of a supervisor actor. Its public functions may be used by behaviours layered on
/// top of the supervisor (see `spawn_supervisor`'s `extra`).
class supervisor_state {
public:
  /// `hibernated`: the child released its actor while idle and keeps its state elsewhere (see
  /// `hibernate_child`); it is not restarted, and `wake_child` starts it again.
  enum class phase : uint8_t { running, terminating, waiting_restart, hibernated };

  struct child {
    child_spec spec;
    caf::actor handle;
    phase state = phase::running;
    /// While hibernated: 1 once a `sweep_hibernated` call found it so (the next one returns it).
    uint8_t hibernated_sweeps = 0;
    uint64_t restarts = 0;
    /// Restart times within the period (a vector: an empty deque costs ~600 bytes per child).
    std::vector<caf::actor_clock::time_point> recent_restarts;
  };

  /// Starts and adds a child. Errors: invalid_argument if the id exists, the start error.
  caf::expected<caf::actor> start_child(child_spec spec);

  /// Stops a child for good with `user_shutdown` (no restart); calls its `on_removed`.
  caf::error terminate_child(std::string_view id);

  /// Removes a child that is leaving by itself (passivation) without stopping or restarting it
  /// and without calling its `on_removed`. Errors: agent_not_found.
  caf::error release_child(std::string_view id);

  /// Marks the running child `id` whose current actor is `handle` as hibernated: its actor is
  /// leaving by itself (it is no longer monitored, so its exit is no failure) and the child
  /// stays, without a handle, until `wake_child`. Errors: agent_not_found, conflict (another
  /// actor, or not running).
  caf::error hibernate_child(std::string_view id, const caf::actor& handle);

  /// Starts a hibernated child again (its start function); returns the new handle. Errors:
  /// agent_not_found, conflict (not hibernated), the start error (the child is then removed
  /// with that reason).
  caf::expected<caf::actor> wake_child(std::string_view id);

  /// Meant to be called once per period by the supervisor's owner: marks the hibernated
  /// children and returns the ids of those already marked by the previous call, so each id is
  /// returned after one to two periods of hibernation without a wake (`wake_child` clears the
  /// mark). The children stay; the caller decides (e.g. passivates them with release_child).
  [[nodiscard]] std::vector<std::string> sweep_hibernated();

  /// Number of hibernated children.
  [[nodiscard]] size_t hibernated_count() const noexcept {
    return hibernated_;
  }

  /// Returns the child called `id`, or nullptr.
  [[nodiscard]] const child* find_child(std::string_view id) const;

  /// Children in start order (one_for_one supervisors may reorder them when one is removed).
  [[nodiscard]] const std::vector<child>& children() const noexcept {
    return children_;
  }

  [[nodiscard]] const supervisor_stats& stats() const noexcept {
    return stats_;
  }

  [[nodiscard]] const supervisor_flags& flags() const noexcept {
    return flags_;
  }

  // -- used by the behaviour (not by users) --------------------------------------------------

  void init(caf::event_based_actor* self, supervisor_flags flags);
  void on_down(const caf::down_msg& msg);
  void on_restart_timer(uint64_t token);
  /// Sends `reason` to every child in reverse start order and quits with `reason`.
  void shutdown(const caf::error& reason);

  static inline const char* name = "hive.supervisor";

private:
  size_t index_of(const caf::actor_addr& addr) const;
  size_t position_of(std::string_view id) const;
  void set_handle(child& c, caf::actor handle);
  void reindex();
  child erase_at(size_t i);
  caf::timespan backoff_for(child& c);
  /// Records one restart now; true if that makes more than intensity_max within period.
  bool intensity_exceeded();
  void try_restart_group();
  void escalate(const std::string& why);
  caf::error start_existing(child& c);

  caf::event_based_actor* self_ = nullptr;
  supervisor_flags flags_;
  std::vector<child> children_;
  size_t hibernated_ = 0;
  /// Position in `children_` by child id and by the actor id of its current handle.
  std::unordered_map<std::string, size_t> by_id_;
  std::unordered_map<caf::actor_id, size_t> by_actor_;
  std::deque<caf::actor_clock::time_point> recent_restarts_;
  /// Ids waiting for the restart timer (in start order), and whether the timer fired.
  std::vector<std::string> restart_group_;
  bool restart_timer_fired_ = false;
  uint64_t restart_token_ = 0;
  std::mt19937_64 rng_;
  supervisor_stats stats_;
};

using supervisor_actor = caf::stateful_actor<supervisor_state>;

/// Makes extra message handlers for a supervisor (e.g. the runtime's spawn requests).
using supervisor_extension = std::function<caf::message_handler(supervisor_actor*)>;

/// Spawns a supervisor with the given initial children (started in order; a start error makes
/// the supervisor quit with it). Messages it understands besides `extra`:
/// `(start_child_atom, child_spec)` -> `caf::actor`; `(terminate_child_atom, std::string)` ->
/// `caf::unit`; `(which_children_atom)` -> JSON text. An exit message stops the children in
/// reverse order, then the supervisor.
[[nodiscard]] caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_flags flags,
                                          std::vector<child_spec> children,
                                          supervisor_extension extra = {});

/// Same, spawned by (and so owned by the system of) another actor.
[[nodiscard]] caf::actor spawn_supervisor(caf::local_actor* parent, supervisor_flags flags,
                                          std::vector<child_spec> children,
                                          supervisor_extension extra = {});

using start_child_atom = caf::atom_constant<caf::atom("startchild")>;
using terminate_child_atom = caf::atom_constant<caf::atom("termchild")>;
using which_children_atom = caf::atom_constant<caf::atom("children")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;

} // namespace hive

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::child_spec)
