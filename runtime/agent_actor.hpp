#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/agent_id.hpp"
#include "protocols/records.hpp"
#include "runtime/kind.hpp"
#include "runtime/metrics.hpp"
#include "storage/store.hpp"

namespace hive {

/// The durable part of an activation's state, as restored from the store.
struct durable_position {
  /// Last event (journaled) or message count (snapshot) the state includes.
  uint64_t seq = 0;
  /// Sequence of the stored snapshot (0 if none).
  uint64_t snapshot_seq = 0;
  /// The activation's epoch (written into every record it writes).
  uint64_t epoch = 0;
  /// The de-duplication window, oldest first.
  std::vector<records::dedup_entry> dedup;
};

struct agent_actor_config;

/// Where a hibernating activation leaves its state for the next one (`agent_env::
/// hibernate_idle`): the behaviour instance and, for persisted kinds, the durable position.
struct hibernation_slot {
  std::shared_ptr<agent> instance;
  std::optional<durable_position> position;
};

/// What every activation on a node shares: the hooks into the node and the settings (one
/// object per node and replication flavour, held by pointer from each activation's config, so
/// that a live idle agent pays for none of it; see bench/HISTORY.md, density).
struct agent_env {
  /// Limit on the nesting of JSON bodies parsed for the agents.
  size_t json_depth_max = 32;
  std::shared_ptr<hive::metrics> metrics;
  /// Delivers what agent `from` sends to other agents (`call_context::send`), by id, anywhere
  /// in the cluster; failures are the hook's to log. Empty: such messages are dropped and
  /// logged.
  std::function<void(const agent_id& from, const agent_id& to, agent_call call)> send;
  /// Asks by id anywhere in the cluster for `call_context::ask`; `done` runs once, on any
  /// thread. Empty: such asks fail with shutting_down.
  std::function<void(const agent_id& to, agent_call call, std::chrono::milliseconds timeout,
                     std::function<void(caf::expected<std::string>)> done)>
    ask;
  /// Looks up providers of a capability cluster-wide for `call_context::find_providers`
  /// (capability, tenant, limit); `done` runs once, on any thread, with the JSON answer.
  std::function<void(const std::string& capability, const std::string& tenant, size_t limit,
                     std::function<void(std::string)> done)>
    providers;
  /// Makes sure agent `id` exists (asked for by agent `by`): spawns it with `kind` (empty
  /// config, placed like any spawn) unless it does; `done` runs once, on any thread, with the
  /// spawn's error (none when it existed already). Empty: asks with `ensure_kind` fail like
  /// asks to a missing agent.
  std::function<void(const agent_id& by, const agent_id& id, const std::string& kind,
                     std::function<void(caf::error)> done)>
    ensure;

  // -- persistence (ignored for ephemeral agents) -----------------------------------------
  std::shared_ptr<store> db;
  /// Re-creates an agent from its durable state (after a failed write the in-memory state
  /// may hold events that are not durable: it is thrown away and rebuilt).
  std::function<caf::expected<std::shared_ptr<agent>>(const agent_actor_config& cfg,
                                                      durable_position& position)>
    restore;
  /// Journaled agents in a replicated cluster: appends go here instead of `db` (the
  /// replicator: durable here and on a majority of the replica set), and each stored snapshot
  /// is handed to `replicate_snapshot`. Empty: straight to `db`.
  std::function<void(records::event_record ev, store::done_fn done)> append;
  std::function<void(const records::snapshot_record& snap, uint64_t prune_through)>
    replicate_snapshot;
  /// Replicated agents: whether this node reaches a majority of agent `id`'s replica set now;
  /// a call answered without new events (a read) is refused with no_quorum while it does not.
  std::function<bool(const agent_id& id)> quorum_reachable;
  /// Replicated agents: checks with a majority that `epoch` is still agent `id`'s newest
  /// (errors: fenced, no_quorum); a read more than `read_lease` after the last confirmation
  /// runs it first.
  std::function<caf::error(const agent_id& id, uint64_t epoch)> confirm_epoch;
  std::chrono::milliseconds read_lease{500};
  uint64_t snapshot_every_events = 1000;
  uint64_t snapshot_every_messages = 100;
  std::chrono::milliseconds snapshot_interval{5000};
  uint64_t journal_retention_events = 0;
  size_t dedup_entries_max = 1000;
  /// 0 = never passivate.
  std::chrono::milliseconds passivate_idle{0};
  /// An activation idle this long releases its actor and leaves its state in memory (its
  /// `hibernation_slot`), like Erlang's `hibernate`: the agent stays in the directory and under
  /// its supervisor, and the next message starts an actor again from that state, without the
  /// store. 0 = never (only activations with a slot hibernate).
  std::chrono::milliseconds hibernate_idle{0};
};

/// What one activation needs besides its behaviour instance: its identity and durable
/// position; everything the node's agents share is in `env`.
struct agent_actor_config {
  agent_id id;
  std::string kind;
  /// Never null.
  std::shared_ptr<const agent_env> env;
  /// The spawn config (what `restore` re-creates the instance from); may be null.
  std::shared_ptr<const nlohmann::json> config;
  /// Where the agent publishes its mailbox size now and then (capability queries); may be null.
  std::shared_ptr<std::atomic<uint64_t>> load;
  persistence_mode mode = persistence_mode::ephemeral;
  /// `kind_spec::resident`: the activation wakes itself first (an `agent_notice::wake`), and
  /// is not passivated while asks or timers it set are outstanding.
  bool resident = false;
  /// The kind's calls may block (`kind_spec::blocking`): the agent gets its own thread, and
  /// journaled ones may `call_context::commit`.
  bool detached = false;
  durable_position position;
  /// The tenant supervisor: gets `(passivate_req_atom, name, self)` when the agent is idle,
  /// answers `passivate_go_atom`, and gets `(passivated_atom, name)` once the state is written;
  /// the same for hibernation (`hibernate_req_atom`, `hibernate_go_atom`, `hibernated_atom`).
  caf::actor parent;
  /// Set: the activation may hibernate (see `agent_env::hibernate_idle`) and leaves its state
  /// here. Null for kinds that never do (blocking, resident, replicated, behind a breaker).
  std::shared_ptr<hibernation_slot> slot;
};

using passivate_req_atom = caf::atom_constant<caf::atom("pasvreq")>;
using passivate_go_atom = caf::atom_constant<caf::atom("pasvgo")>;
using passivated_atom = caf::atom_constant<caf::atom("pasvdone")>;
/// Hibernation: the agent asks its supervisor (`hibernate_req_atom, id, self`), which takes it
/// out of the directory's handles and answers `hibernate_go_atom`; the agent then moves its
/// state into its `hibernation_slot`, sends `(hibernated_atom, id)` and re-delivers what still
/// reaches its old handle for a moment before it quits.
using hibernate_req_atom = caf::atom_constant<caf::atom("hibreq")>;
using hibernate_go_atom = caf::atom_constant<caf::atom("hibgo")>;
using hibernated_atom = caf::atom_constant<caf::atom("hibdone")>;
/// An agent_call that reached an activation that is passivating: the supervisor re-delivers it
/// to the next activation.
using redeliver_atom = caf::atom_constant<caf::atom("redeliver")>;
/// A replica refused the agent's write because a newer activation exists elsewhere (epoch
/// fencing, runtime/replication.hpp), or one of its writes or reads found no majority: the
/// agent sends `(fenced_atom, id, fenced)` to its supervisor, which forgets it without a
/// restart (and drops this node's working copy when `fenced`); then it quits.
using fenced_atom = caf::atom_constant<caf::atom("fenced")>;

/// Live migration (runtime/node_runtime.hpp, `migrate_out`). A replicated agent's supervisor
/// first asks for its epoch (`migrate_epoch_atom`, answered with a `uint64_t`, or `conflict`
/// while it migrates or passivates) for the replicas' promise to the target. Then it sends
/// `(migrate_go_atom, migrate_quiet)`; from then on the agent re-delivers new calls to the
/// supervisor (which stashes them), waits until every event it applied is durable, and
/// answers `(migrate_state_atom, id, bytes, true, waited)` with its state as an encoded
/// `records::snapshot_record` (`waited`: it stopped with appends in flight), or
/// `(migrate_state_atom, id, error)`. With `migrate_quiet::ship_now` it answers at once,
/// `(migrate_state_atom, id, bytes, false, true)` if appends are still in flight, and
/// `(migrate_settled_atom, id, error)` once they all completed (no error: every event in the
/// state is acknowledged).
/// Before `migrate_go_atom`, the supervisor may send `(migrate_hold_atom, token, wait_ms)`: the
/// agent goes on serving until no append is in flight (at most `wait_ms`), stops there (calls
/// are re-delivered from then on) and answers `(migrate_held_atom, id, token, stopped_ns)`,
/// `stopped_ns` the steady clock when it stopped; `migrate_go_atom` then captures the state.
/// `(migrate_end_atom, true, 0, false)`: the agent moved; it keeps re-delivering stale calls for
/// `migrate_linger` and then quits with reason `migrated`.
/// `(migrate_end_atom, false, epoch, reload)`: the migration was aborted; it takes calls again,
/// at `epoch` unless 0 (its node took the replicas' promise back), after reading its state
/// from the store again if `reload` (that promise replaced the working copy with a newer one).
using migrate_go_atom = caf::atom_constant<caf::atom("migrgo")>;
/// How a migrating agent hands its state over (`migrate_go_atom`).
struct migrate_quiet {
  /// Hand the state over at once, appends still in flight (`migrate_settled_atom` follows);
  /// false: once none is in flight.
  bool ship_now = false;
};
using migrate_epoch_atom = caf::atom_constant<caf::atom("migrepoch")>;
using migrate_hold_atom = caf::atom_constant<caf::atom("migrhold")>;
using migrate_held_atom = caf::atom_constant<caf::atom("migrheld")>;
using migrate_state_atom = caf::atom_constant<caf::atom("migrstate")>;
using migrate_settled_atom = caf::atom_constant<caf::atom("migrsettl")>;
using migrate_end_atom = caf::atom_constant<caf::atom("migrend")>;

/// Drops the calling thread's cache of by-id lookups (node_runtime.cpp), which holds strong
/// handles: a blocking agent's own thread calls it after each call, so that two blocking
/// agents that asked each other never keep each other (and `~actor_system`) alive.
void forget_cached_lookups();

/// How long a moved activation keeps re-delivering calls sent to its stale handle.
constexpr std::chrono::milliseconds migrate_linger{2000};

/// How long a passivated activation (its state written and released) keeps re-delivering
/// calls sent to its stale handle before it quits.
constexpr std::chrono::milliseconds passivate_linger{250};

/// Spawns the CAF actor that hosts one activation of an agent: it feeds `agent_call`s to the
/// instance one at a time, answers asks with `agent_reply` or an error, answers
/// `inspect_request` with `{"summary":..., "mailbox_size":N, "handled":N}`, refuses (with
/// `timeout`, without handling it) a call whose envelope deadline has passed, counts every
/// message (`hive_messages_handled_total`, batched) and times one in eight
/// (`hive_message_handling_seconds`), and quits with `agent_failed` when the instance throws,
/// so its supervisor restarts it.
///
/// Journaled agents append each call's events through the store's group commit and send the
/// reply only once every event applied so far is durable (a read waits for earlier writes, so
/// no one sees state that could still be lost). A duplicate idempotency key is answered with
/// the remembered reply. A failed append answers the waiting callers with the storage error,
/// and the agent rebuilds its state from the store before it handles more calls.
[[nodiscard]] caf::actor spawn_agent_actor(caf::actor_system& sys, agent_actor_config cfg,
                                           std::shared_ptr<agent> instance);

} // namespace hive

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::migrate_quiet)
