#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "protocols/agent_id.hpp"
#include "protocols/cluster.hpp"
#include "protocols/messages.hpp"
#include "runtime/capabilities.hpp"
#include "runtime/directory.hpp"
#include "runtime/kind.hpp"
#include "runtime/metrics.hpp"
#include "runtime/replication.hpp"
#include "runtime/supervisor.hpp"
#include "storage/store.hpp"

namespace hive {

/// Asks for a new agent.
struct spawn_request {
  agent_id id;
  std::string kind;
  nlohmann::json config = nlohmann::json::object();
  /// Put a circuit breaker (node defaults from `breaker.*` config) in front of the agent.
  bool breaker = false;
  /// When the supervisor restarts the agent.
  restart_type restart = restart_type::permanent;
  uint64_t correlation_id = 0;
  /// The creator chose the node (cluster rebalancing leaves the agent there).
  bool pinned = false;
  /// What the agent offers to others (`GET /v1/capabilities/{name}`); empty: its kind's
  /// defaults (`kind_spec::capabilities`).
  std::vector<std::string> capabilities = {};
};

/// What a live migration hands to the node the agent moves to: its records, encoded and
/// checksummed (protocols/records.hpp).
struct migration_payload {
  agent_id id;
  /// `records::encode(meta_record)`: kind, config and options.
  std::string meta;
  /// `records::encode(snapshot_record)`: the state as of the last applied event, which is
  /// durable here.
  std::string snapshot;
  /// Names this shipment (random, not 0): a source that never heard the answer settles
  /// exactly this one (`node_runtime::settle_adoption`).
  uint64_t shipment = 0;
  /// The source's wall clock (Unix milliseconds) when it sent the shipment, and its
  /// `cluster.migration_timeout_ms` T; 0: no deadlines. A source that hears nothing settles
  /// until 2T after sending, then goes on with the agent; so the target refuses a shipment
  /// that reaches it 1.5T after it was sent, and an adoption whose activation is not under way
  /// by 1.75T (`node_runtime::adopt`). Holds while the nodes' clocks differ by less than T/4.
  uint64_t sent_unix_ms = 0;
  uint64_t timeout_ms = 0;
  /// The epoch a majority of the replica set promised the target before the state left
  /// (`replicator::promise_to`); the target activates at it without a round of its own.
  /// 0: none (not replicated), the target asks for the promise itself. `grant_follows`: the
  /// state left with the agent's last appends in flight; the epoch comes as a grant once
  /// they are acknowledged (`node_runtime::grant_adoption`), and the activation waits for it.
  uint64_t granted_epoch = 0;
  static constexpr uint64_t grant_follows = ~uint64_t{0};
};

/// Tells a migration's target, for a shipment that went ahead of the agent's last appends
/// (`migration_payload::grant_follows`), the epoch promised to it once they are acknowledged,
/// or why not (the target then gives the adoption up). Called from any thread.
using grant_fn =
  std::function<void(const agent_id& id, uint64_t shipment, caf::expected<uint64_t> epoch)>;

/// Carries a payload to the target node, which stores and activates the agent; then calls
/// back (on any thread) with the actor that accepts calls for the agent there (`remote_call`s:
/// the target's node manager), or why it did not take it.
using ship_fn =
  std::function<void(migration_payload, std::function<void(caf::expected<caf::actor>)>)>;

/// What a finished migration reports.
struct migration_result {
  std::string from;
  std::string to;
  /// False when the agent already was on `to` (nothing happened).
  bool moved = false;
  /// The pause: the agent stopped serving (calls wait from then on: in the stash on this
  /// node, or on the new node for its activation) to the stash forwarded to the new node,
  /// whose activation runs by then (milliseconds). It bounds the wait the move adds to any
  /// call. The agent stops at the first moment none of its writes is in flight (within
  /// `cluster.migration_quiet_wait_ms`; it serves until then), so the pause holds the capture
  /// and the shipment but no wait for an acknowledgement (see `waited_for_appends`).
  double pause_ms = 0;
  /// Calls held in the stash on this node during the move (forwarded in arrival order).
  size_t held_calls = 0;
  /// Size of the encoded state shipped.
  size_t state_bytes = 0;
  /// Of the pause: until the agent handed over its state (its last events durable); the rest
  /// is shipping, storing and activating on the new node.
  double capture_ms = 0;
  /// The agent stopped with writes in flight, and the pause waited for their acknowledgement
  /// (it was not quiet within `cluster.migration_quiet_wait_ms`, or that is 0).
  bool waited_for_appends = false;
};

/// Makes the actor that fronts an agent (the circuit breaker). The runtime sends it
/// `(target_atom, caf::actor)` after every (re)start of the agent and an exit
/// (`user_shutdown`) when the agent is stopped. Injected by the node, since runtime/ may not
/// depend on actors/.
using front_factory = std::function<caf::actor(caf::actor_system&, const agent_id&)>;

/// Sent to a front actor with the agent's current handle.
using target_atom = caf::atom_constant<caf::atom("target")>;

/// A reference to an agent by id, as an Orleans grain reference or an Akka ActorRef: sends go
/// to the handle it resolved last, and any change of the node's directory (a spawn, restart or
/// stop) makes the next send resolve the id again. Cheap to copy; one instance must not be
/// used by two threads at once (give each thread its own copy).
class agent_ref {
public:
  agent_ref() = default;

  /// The id this reference addresses.
  [[nodiscard]] const agent_id& id() const noexcept {
    return id_;
  }

  /// Fire-and-forget send; activates a stored agent that is not running. Errors:
  /// agent_not_found, agent_failed (restarting), storage errors.
  [[nodiscard]] caf::error tell(const agent_call& call);
  [[nodiscard]] caf::error tell(agent_call&& call);

  /// The current target (breaker or agent), re-resolved if the directory changed; nullopt if
  /// the id is unknown, an invalid handle while the agent restarts.
  [[nodiscard]] std::optional<caf::actor> target();

private:
  friend class node_runtime;

  /// Sends a call to an agent that is not running (activates a stored one).
  using miss_fn = std::function<caf::error(const agent_id&, const agent_call&, bool known)>;

  agent_ref(std::shared_ptr<const directory> dir, agent_id id, std::shared_ptr<const miss_fn> miss)
      : dir_(std::move(dir)), id_(std::move(id)), miss_(std::move(miss)) {}

  void refresh();

  template <class Call>
  caf::error tell_impl(Call&& call);

  std::shared_ptr<const directory> dir_;
  agent_id id_;
  std::shared_ptr<const miss_fn> miss_;
  std::optional<caf::actor> target_;
  uint64_t generation_ = 0;
};

/// Agents that moved away from this node recently, by id: where calls for them go (the
/// forwarder to the node they moved to) until `cluster.migration_forward_ms` passed.
/// Thread-safe.
class moved_agents {
public:
  struct entry {
    caf::actor forwarder;
    /// The node it moved to.
    std::string to;
    /// Tells this move from a later one of the same id.
    uint64_t token = 0;
  };

  void put(const std::string& id, entry e);
  [[nodiscard]] std::optional<entry> find(const std::string& id) const;
  /// Removes `id` and returns its forwarder, if `token` matches (0: any).
  std::optional<caf::actor> take(const std::string& id, uint64_t token = 0);

private:
  mutable std::mutex mtx_;
  std::unordered_map<std::string, entry> map_;
};

/// The single-node actor runtime: the supervision tree (root -> tenant supervisors ->
/// agents), the local directory of agents by id, and the by-id tell/ask paths.
///
/// Thread-safe. Callbacks run on a CAF worker thread (or inline on the calling thread for
/// errors found before any message is sent); they must not block.
/// A function that can be replaced while other threads call it: `get` hands out the current
/// one (kept alive by the caller's copy of the pointer). Thread-safe.
template <class Fn>
class replaceable_fn {
public:
  using fn = Fn;
  void set(fn f) {
    auto p = f ? std::make_shared<const fn>(std::move(f)) : nullptr;
    std::lock_guard<std::mutex> guard{mtx_};
    f_ = std::move(p);
  }
  [[nodiscard]] std::shared_ptr<const fn> get() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return f_;
  }

private:
  mutable std::mutex mtx_;
  std::shared_ptr<const fn> f_;
};

/// Where agents' own messages to other agents go (`call_context::send`): this node's runtime,
/// or the cluster once one is attached.
using agent_sender = replaceable_fn<std::function<caf::error(const agent_id& to, agent_call call)>>;

/// Where agents' asks go (`call_context::ask`): this node's runtime, or the cluster.
using agent_asker = replaceable_fn<
  std::function<void(const agent_id& to, agent_call call, std::chrono::milliseconds timeout,
                     std::function<void(caf::expected<std::string>)> done)>>;

/// Where agents' provider lookups go (`call_context::find_providers`): this node's capability
/// index, or the cluster's (capability, tenant, limit; `done` gets the JSON answer).
using provider_finder =
  replaceable_fn<std::function<void(const std::string& capability, const std::string& tenant,
                                    size_t limit, std::function<void(std::string)> done)>>;

/// Where agents' implicit spawns go (`call_context::request::ensure_kind`, subscriptions to
/// topics): this node's runtime, or the cluster's placement once a cluster is attached.
using agent_spawner = replaceable_fn<
  std::function<void(spawn_request req, std::function<void(caf::expected<agent_view>)> done)>>;

/// How forwarders of agents that moved away reach the agent's new node (the cluster's call
/// transport once a cluster is attached; without it, the actor the ship function returned).
/// `done` empty: a tell.
struct remote_forwarder
    : replaceable_fn<std::function<void(const std::string& member, remote_call req,
                                        std::function<void(caf::expected<std::string>)> done)>> {
  using reply_fn = std::function<void(caf::expected<std::string>)>;
};

/// The runtime as callbacks that may outlive it see it (defined in node_runtime.cpp).
struct runtime_gate;

class node_runtime {
public:
  using reply_fn = std::function<void(caf::expected<std::string>)>;

  /// Starts the root supervisor and the router actors. With a store `db`, agents of
  /// persisted kinds keep their state in it (without one, every kind is ephemeral): they are
  /// recorded durably at spawn, activated on their first message after passivation or a
  /// restart of the node, passivated after `persistence.passivate_idle_ms`.
  [[nodiscard]] static caf::expected<std::unique_ptr<node_runtime>> start(
    caf::actor_system& sys, const node_config& cfg, kind_registry kinds,
    std::shared_ptr<hive::metrics> m, front_factory breaker_factory = {},
    std::shared_ptr<store> db = nullptr);

  ~node_runtime();

  node_runtime(const node_runtime&) = delete;
  node_runtime& operator=(const node_runtime&) = delete;

  [[nodiscard]] const node_config& config() const noexcept {
    return cfg_;
  }

  [[nodiscard]] const std::string& node_name() const noexcept {
    return cfg_.node.name;
  }

  [[nodiscard]] caf::actor_system& system() noexcept {
    return sys_;
  }

  [[nodiscard]] hive::metrics& metrics() noexcept {
    return *metrics_;
  }

  /// Routes what agents send to other agents (`call_context::send`) through `f` (the cluster's
  /// `send`); empty: back to this node only (`tell`). Call with nullptr before `f`'s target
  /// goes away.
  void set_agent_sender(agent_sender::fn f);

  /// Routes agents' asks (`call_context::ask`) and provider lookups through `ask` and
  /// `find` (the cluster's); empty: this node only. Reset with empty functions before their
  /// target goes away.
  void set_agent_asker(agent_asker::fn ask, provider_finder::fn find);

  /// Routes the spawns agents make implicitly (an ask with `ensure_kind`) through `f` (the
  /// cluster's placement); empty: this node's `spawn`. Reset before `f`'s target goes away.
  void set_agent_spawner(agent_spawner::fn f);

  /// Activates every stored agent of a resident kind (`kind_spec::resident`) that is not
  /// running here, on the runtime's waker thread (a scan of the store's agent list): after a
  /// restart of a single node, or when this node comes up in a cluster. Returns at once.
  void wake_residents();

  /// Activates the agents of resident kinds whose replica copies here name `member` as their
  /// holder and which this node is first in line to take over (`replicator::may_take_over`):
  /// `member` went down. On the waker thread; returns at once.
  void wake_taken_over(const std::string& member);

  /// Journaled agents replicate through `r` from their next activation on (the cluster's
  /// replicator, runtime/replication.hpp); null: not at all. Set before calls arrive.
  void set_replicator(std::shared_ptr<replicator> r);
  /// The replicator, or null.
  [[nodiscard]] std::shared_ptr<replicator> replication() const;
  /// Forwarders of moved agents send through `f` (the cluster's call transport, so that
  /// forwarded and new calls to the agent's new node share one ordered path); empty: to the
  /// actor the ship function returned. Call with nullptr before `f`'s target goes away.
  void set_remote_forwarder(remote_forwarder::fn f);

  [[nodiscard]] const kind_registry& kinds() const noexcept {
    return kinds_;
  }

  /// Spawns an agent under its tenant's supervisor. Errors: invalid_argument (bad config,
  /// breaker requested without a breaker factory), unknown_kind, agent_exists, overloaded
  /// (agents.agents_max), shutting_down.
  void spawn(spawn_request req, std::function<void(caf::expected<agent_view>)> done);

  /// Stops an agent for good (no restart). Errors: agent_not_found, shutting_down.
  void stop(const agent_id& id, std::function<void(caf::error)> done);

  /// Fire-and-forget send by id. Lookups are cached per thread until the directory changes.
  /// Errors: agent_not_found, agent_failed (restarting).
  [[nodiscard]] caf::error tell(const agent_id& id, const agent_call& call);

  /// A reference that sends by id without a directory lookup per message.
  [[nodiscard]] agent_ref ref(agent_id id) const {
    return agent_ref{directory_, std::move(id), miss_};
  }

  /// Request/response by id with a deadline. Errors: agent_not_found, timeout,
  /// circuit_open, agent_failed, and whatever the agent answered.
  void ask(const agent_id& id, agent_call call, std::chrono::milliseconds timeout, reply_fn done);

  /// Moves a persisted agent that lives here to node `to`, live (ARCHITECTURE.md, Migration):
  /// new calls are stashed in arrival order, the state is captured once every applied event is
  /// durable, `ship` carries it to `to` (which stores and activates it), then the stash and
  /// every later call that reaches this node go there, in order, for
  /// `cluster.migration_forward_ms`; the local copy is erased and the old activation stops
  /// with reason `migrated`. If `ship` fails, the agent goes on here with its stash: nothing
  /// is lost either way. A stored agent that is not running is activated first.
  /// Errors: agent_not_found, invalid_argument (ephemeral kind, no store), conflict (already
  /// migrating), agent_failed (restarting), timeout, the target's errors.
  /// With `pin`, the agent counts as pinned to `to` from then on (a move by hand, which
  /// rebalancing must not undo); without, its pin flag moves with it unchanged.
  /// With `grant` (a replicated agent), the state leaves as the agent stops writing, while
  /// the replica set's promise to `to` is still being asked for; `grant` sends the target
  /// its outcome. Without, the state leaves once that promise is in.
  void migrate_out(const agent_id& id, std::string to, ship_fn ship,
                   std::function<void(caf::expected<migration_result>)> done, bool pin = false,
                   grant_fn grant = {});

  /// Takes in an agent migrating to this node: verifies its records, stores them durably
  /// (replacing any older copy) and activates it with a larger epoch than the one it had (its
  /// replica rounds run while the store writes; it reads the stored state only once written).
  /// `done` runs once both finished. Errors: corrupt_record, invalid_argument, unknown_kind,
  /// agent_exists (running here), rejected (settled as refused, or past its deadline: see
  /// `migration_payload::sent_unix_ms`), storage errors.
  void adopt(migration_payload in, std::function<void(caf::error)> done);

  /// The grant for a shipment that went ahead of the agent's last appends
  /// (`migration_payload::grant_follows`): the activation of that adoption waits for it (until
  /// its deadline). A grant that comes before its shipment is kept for
  /// 4 x `cluster.migration_timeout_ms` (at most `node.asks_pending_max` of them).
  void grant_adoption(const agent_id& id, uint64_t shipment, caf::expected<uint64_t> epoch);

  /// What became of a migration to this node whose source got no answer (a lost answer, a
  /// timeout, a connection that broke): see `settle_adoption`.
  enum class adoption_outcome {
    /// Stored and activated here: the source hands its stash over as if it had heard so.
    adopted,
    /// Not here, and from now on a shipment of this agent whose snapshot epoch is at most the
    /// one asked about is refused (`rejected`): the source may go on with the agent.
    refused,
    /// An adoption of it is under way here: ask again.
    pending,
  };

  /// Settles shipment `shipment` of `id` (its snapshot has activation epoch `epoch`) for a
  /// source that did not hear the outcome. Atomic with `adopt`: that shipment is refused if it
  /// arrives after the answer `refused`, and `adopted` means the agent is active or stored
  /// here from it (or later). Answers `pending` also while `node.asks_pending_max` refusals
  /// are held; each is kept for four times `cluster.migration_timeout_ms`. Errors: storage
  /// errors.
  [[nodiscard]] caf::expected<adoption_outcome> settle_adoption(const agent_id& id, uint64_t epoch,
                                                                uint64_t shipment);

  /// Inspects an agent: kind, node, restarts, supervisor, mailbox size, breaker, state summary.
  void inspect(const agent_id& id, uint64_t correlation_id,
               std::function<void(caf::expected<nlohmann::json>)> done);

  /// Looks an agent up in the local directory.
  [[nodiscard]] std::optional<agent_view> find(const agent_id& id) const {
    return directory_->find(id);
  }

  /// Lists agents in id order, strictly after `after` (a `tenant/name` string, may be empty),
  /// at most `limit`, optionally only those of `tenant`: running ones and, with a store,
  /// passivated ones (`activated` false, no handles).
  [[nodiscard]] std::vector<agent_view> list(std::string_view tenant, std::string_view after,
                                             size_t limit) const;

  /// Writes an online, consistent backup of the store to `dir` (absolute, must not exist).
  /// Errors: invalid_argument, storage_error.
  [[nodiscard]] caf::error backup(const std::string& dir);

  /// Same, on a thread of its own; `done` runs there.
  void backup_async(std::string dir, std::function<void(caf::error)> done);

  /// The node's store, or null.
  [[nodiscard]] const std::shared_ptr<store>& db() const noexcept {
    return db_;
  }

  /// Agents of this node that offer capability `name` (of `tenant` if non-empty), least
  /// loaded first (then by id), at most `limit`: running ones with their sampled mailbox
  /// size, stored ones as "passivated" (load 0). Entries found gone are dropped.
  [[nodiscard]] std::vector<provider> providers(std::string_view name, std::string_view tenant,
                                                size_t limit);

  /// Capability entries (capability, agent) this node holds.
  [[nodiscard]] size_t capability_entries() const {
    return capabilities_->size();
  }

  /// Number of agents running (or starting) on this node.
  [[nodiscard]] size_t agent_count() const {
    return directory_->size();
  }

  /// True once `shutdown` began.
  [[nodiscard]] bool stopping() const noexcept {
    return stopping_->load();
  }

  /// Stops the supervision tree top-down (agents first get `user_shutdown`) and waits for the
  /// runtime's actors to finish. Idempotent.
  void shutdown();

  /// Calls `fn` (once, on a CAF thread) if the root supervisor exits for any reason other
  /// than `shutdown`: its restart intensity was exceeded and the node can no longer run agents.
  void set_fatal_handler(std::function<void(const caf::error&)> fn);

  /// The root supervisor (tests inspect it).
  [[nodiscard]] const caf::actor& root_supervisor() const noexcept {
    return root_;
  }

private:
  node_runtime(caf::actor_system& sys, const node_config& cfg, kind_registry kinds,
               std::shared_ptr<hive::metrics> m, front_factory breaker_factory,
               std::shared_ptr<store> db);

  /// Activates a stored agent that is not running and hands `then` its target (inside its
  /// tenant supervisor). Errors: agent_not_found, storage errors, shutting_down.
  void ask_attempt(const agent_id& id, agent_call call, std::chrono::milliseconds timeout,
                   reply_fn done, int attempt);

  caf::error activate_then(const agent_id& id, std::function<void(caf::expected<caf::actor>)> then,
                           bool known);

  caf::actor_system& sys_;
  node_config cfg_;
  kind_registry kinds_;
  std::shared_ptr<hive::metrics> metrics_;
  front_factory breaker_factory_;
  std::shared_ptr<directory> directory_;
  std::shared_ptr<store> db_;
  /// What agent_refs call for an id that is not running (null without a store).
  std::shared_ptr<const agent_ref::miss_fn> miss_;
  /// Re-sends an ask whose target died first (type-erased: the type is internal).
  std::shared_ptr<void> ask_retry_;
  /// Capability -> agents of this node that declared it.
  std::shared_ptr<capability_index> capabilities_ = std::make_shared<capability_index>();
  /// Agents that moved away (their calls go on to the new node for a while).
  std::shared_ptr<moved_agents> moved_ = std::make_shared<moved_agents>();
  std::shared_ptr<agent_sender> sender_ = std::make_shared<agent_sender>();
  std::shared_ptr<agent_asker> asker_ = std::make_shared<agent_asker>();
  std::shared_ptr<provider_finder> finder_ = std::make_shared<provider_finder>();
  std::shared_ptr<agent_spawner> spawner_ = std::make_shared<agent_spawner>();
  /// Runs wake_residents / wake_taken_over scans one at a time, on one thread started with the
  /// first (joined at shutdown); at most `wake_scans_queued_max` wait, more are dropped (logged).
  static constexpr size_t wake_scans_queued_max = 16;
  std::mutex wake_mtx_;
  std::condition_variable wake_cv_;
  std::deque<std::function<void()>> wake_queue_;
  std::thread waker_;
  void run_wake(std::function<void()> scan);
  /// Activates (a wake call) every stored agent of a resident kind for whose meta record
  /// `pick` names an id that is not running here; returns how many. Blocks (store scan).
  size_t wake_matching(
    const std::function<std::optional<agent_id>(const records::meta_record&)>& pick);
  std::shared_ptr<remote_forwarder> forwarder_ = std::make_shared<remote_forwarder>();
  std::shared_ptr<replicator_slot> ctx_rep_ = std::make_shared<replicator_slot>();
  /// Adoptions under way here, and shipments refused in advance (`settle_adoption`).
  struct adoption_fences {
    std::mutex mtx;
    std::set<std::string> adopting;
    /// (agent, shipment) refused in advance -> when.
    std::map<std::pair<std::string, uint64_t>, std::chrono::steady_clock::time_point> refused;
    using grant_slot = std::shared_ptr<std::promise<caf::expected<uint64_t>>>;
    /// Adoptions whose activation waits for the source's grant.
    std::map<std::pair<std::string, uint64_t>, grant_slot> awaiting;
    /// Grants that came before their shipment, and when.
    std::map<std::pair<std::string, uint64_t>,
             std::pair<caf::expected<uint64_t>, std::chrono::steady_clock::time_point>>
      early;

    /// With `mtx` held: forgets refusals older than `keep`, then records (agent, shipment) as
    /// refused now (again, if it was). False, recording nothing: `cap` others are held.
    bool refuse(const std::string& agent, uint64_t shipment,
                std::chrono::steady_clock::duration keep, size_t cap) {
      auto now = std::chrono::steady_clock::now();
      for (auto i = refused.begin(); i != refused.end();)
        i = now - i->second > keep ? refused.erase(i) : std::next(i);
      auto key = std::make_pair(agent, shipment);
      if (refused.count(key) == 0 && refused.size() >= cap)
        return false;
      refused[std::move(key)] = now;
      return true;
    }
  };
  std::shared_ptr<adoption_fences> fences_ = std::make_shared<adoption_fences>();
  /// How long a refused shipment stays refused (4 x cluster.migration_timeout_ms), and how
  /// many refusals are held at most (node.asks_pending_max).
  [[nodiscard]] std::chrono::steady_clock::duration refusals_kept() const {
    return 4 * std::chrono::milliseconds(cfg_.cluster.migration_timeout_ms);
  }
  [[nodiscard]] size_t refusals_max() const {
    return static_cast<size_t>(cfg_.node.asks_pending_max);
  }
  caf::actor root_;
  /// Carry asks and inspections from outside the actor system (see `node.routers`).
  std::vector<caf::actor> routers_;
  /// Round-robin position over `routers_`.
  std::atomic<size_t> next_router_{0};
  /// Set by `shutdown()`. Shared with what may run after the runtime is gone: the fatal
  /// handler attached to the root (it runs as the root exits, possibly after `shutdown()`
  /// returned).
  std::shared_ptr<std::atomic<bool>> stopping_ = std::make_shared<std::atomic<bool>>(false);
  /// What actors call back into the runtime through (a router's retry of an ask): `shutdown()`
  /// closes it, so that an actor still running after the drain finds the runtime gone rather
  /// than a freed object.
  std::shared_ptr<runtime_gate> gate_;

  [[nodiscard]] const caf::actor& next_router() noexcept {
    return routers_[next_router_.fetch_add(1, std::memory_order_relaxed) % routers_.size()];
  }
};

/// Opens the node's store in `<data_dir>/db` with the `storage.*` settings, reporting commits,
/// append latencies and failures to `m`. `fs` (tests: fault injection) replaces RocksDB's
/// file system.
[[nodiscard]] caf::expected<std::shared_ptr<store>> open_node_store(
  const node_config& cfg, const std::string& data_dir, std::shared_ptr<metrics> m,
  std::shared_ptr<rocksdb::FileSystem> fs = nullptr);

} // namespace hive
