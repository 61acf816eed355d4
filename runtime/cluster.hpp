#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "config/node_config.hpp"
#include "protocols/cluster.hpp"
#include "runtime/directory.hpp"

namespace hive {

class node_runtime;
class call_transport;
class replicator;
struct spawn_request;

/// The rendezvous (highest-random-weight) score of `node` for `id`: placement picks the up
/// member with the highest score. Stable across processes and builds (FNV-1a, then a 64-bit
/// finalizer).
[[nodiscard]] uint64_t rendezvous_score(std::string_view node, std::string_view id) noexcept;

/// This node's membership in a cluster of `agent-node` processes.
///
/// A node manager actor is published on `cluster.listen` (CAF's io middleman, BASP over TCP).
/// At start it connects to the `cluster.seeds` in turn and sends a `join_request` (cluster
/// name, protocol version, itself); a peer of another cluster or version refuses it, and both
/// sides log why (`cluster_join_refused`). A node that reaches no seed keeps dialling them every
/// `cluster.join_retry_ms`; after `cluster.seed_wait_ms` it forms a cluster of its own and
/// goes on trying the seeds, so two halves started apart merge. An accepted node gets the member
/// list, connects to every member it does not know yet (a full mesh) and spreads every change it
/// sees to all members (`member_gossip`).
///
/// Member states: `joining` while a seeded node is not yet linked to every up member (see
/// member_table; nothing placed on it); `up`; `suspect` in this node's view while its heartbeat has
/// been missing for `cluster.suspect_after_ms` (not gossiped; no new agents placed there, calls
/// still go); `down` once the connection to it is lost (a killed node at once, as its socket
/// closes; a frozen one after `cluster.down_after_ms` without heartbeats, CAF's
/// `middleman.connection-timeout`); `leaving` when it stops cleanly, `removed` once it is gone (or
/// down for `cluster.removed_after_ms`). Each start of a node has a new, larger incarnation; an
/// entry with a larger incarnation replaces the old one, so a restarted node rejoins as a new
/// member. Down is final for an incarnation.
///
/// Placement and routing (first form): a spawn goes to the node a pin names, else to the up
/// member with the highest `rendezvous_score`. An ask by id goes first to the member where the
/// id was last found (the location cache), else it is tried here first (running or stored
/// here), then on the other up members in placement order until one knows the id: no
/// directory owner yet, so a miss costs one round trip per member. Calls by id travel on the
/// call transport (runtime/transport.hpp: plain TCP, frames of CAF-serialized messages),
/// straight from the calling thread, not through the node manager; everything else between
/// node managers travels on BASP.
///
/// Live migration (`migrate`): the node that has the agent captures its state and sends it
/// (`migrate_in`) to the target's node manager, which stores and activates it; the source then
/// forwards what it stashed and what still reaches it (see node_runtime::migrate_out).
///
/// Rebalancing: when the set of up members changes, unpinned persisted agents whose
/// placement now names another member move there, rate-limited (`rebalance_loop`).
///
/// Not yet (issue #4 continues): a directory owner per id.
class cluster {
public:
  /// Starts the node manager and publishes it on `cfg.cluster.listen` (which must be set).
  /// `gateway` is the node's HTTP address, shown to other members. Errors: invalid_config
  /// (bad address), unavailable (the port cannot be bound).
  [[nodiscard]] static caf::expected<std::unique_ptr<cluster>> start(caf::actor_system& sys,
                                                                     node_runtime& rt,
                                                                     const node_config& cfg,
                                                                     std::string gateway);

  ~cluster();
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  /// The port the cluster endpoint listens on (the real one when configured as 0).
  [[nodiscard]] uint16_t port() const noexcept {
    return port_;
  }

  /// This node's cluster endpoint `HOST:PORT`.
  [[nodiscard]] const std::string& address() const noexcept {
    return address_;
  }

  /// The member list as this node sees it, itself included, in name order.
  [[nodiscard]] std::vector<member_info> members() const;

  /// Leaves the cluster gracefully: the others see this node `leaving` (no new agents are
  /// placed here, calls still arrive), every persisted agent it has (running or stored) moves
  /// live to its placement among the up members, at most `cluster.handoff_migrations_max` at a
  /// time, for at most `cluster.handoff_timeout_ms` (what is left stays on disk here, served
  /// again when the node comes back; ephemeral agents end with the node); then the others get
  /// a last member list and the node manager stops. Blocks; idempotent.
  void leave();

  using reply_fn = std::function<void(caf::expected<std::string>)>;
  using spawn_fn = std::function<void(caf::expected<agent_view>)>;

  /// The node placement picks for `id` among the up members (this node included).
  [[nodiscard]] std::string place(const agent_id& id) const;

  /// Spawns on `node` (a pin; empty: where `place` says). Errors: those of
  /// `node_runtime::spawn`, and invalid_argument when `node` is not an up member.
  void spawn(spawn_request req, const std::string& node, spawn_fn done);

  /// A call by id wherever the agent lives (see above): `op` is `ask` (`done` gets the
  /// agent's reply), `tell` (`{"accepted":true}`), `inspect` (the inspection JSON text) or
  /// `stop` (`{}`). Errors: those of the `node_runtime` call; agent_not_found only when no up
  /// member knows the id.
  void call(const std::string& op, const agent_id& id, agent_call call,
            std::chrono::milliseconds timeout, reply_fn done);

  /// Moves `id` live to member `to` (node_runtime::migrate_out on the node that has it);
  /// `done` gets `{"id","from","to","moved","pause_ms","state_bytes"}`. Errors: those of
  /// `migrate_out`, invalid_argument when `to` is not an up member, agent_not_found.
  void migrate(const agent_id& id, const std::string& to, uint64_t correlation_id, reply_fn done);

  /// Sends `call` to `id` one way, like Erlang's `!` or Akka's `tell`: no answer, no
  /// acknowledgement. Running here: straight to the agent. Found on another member last time:
  /// one transport frame there, queued and written in bursts (the fast path for streams of
  /// messages). Otherwise (not located yet) an acknowledged `call("tell")` locates the agent
  /// (its failure is logged). Messages from one thread to one agent keep their order, asks
  /// included. Errors (immediate only): those of node_runtime::tell here, overloaded when the
  /// connection has too many bytes queued.
  [[nodiscard]] caf::error send(const agent_id& id, agent_call call);

  /// The providers of capability `name` on every member that serves calls and on this node
  /// (of `tenant` if non-empty), least loaded first, at most `limit`:
  /// `{"providers":[{"id","node","state","load"}],"nodes_failed":[{"node","reason"}]}`.
  /// A member that does not answer within `timeout` is listed in `nodes_failed`. `done` runs
  /// once, on any thread.
  void providers(const std::string& name, const std::string& tenant, size_t limit,
                 std::chrono::milliseconds timeout, std::function<void(nlohmann::json)> done);

  /// `call("ask", ...)`.
  void ask(const agent_id& id, agent_call call, std::chrono::milliseconds timeout, reply_fn done);

  /// State every member keeps a copy of, replicated by the node managers (protocols/cluster.hpp
  /// `key_sync`): the layer above plugs its API key store in here. `merge` must be
  /// commutative, associative and idempotent (a CRDT); all three are called on the manager's
  /// thread and must be thread-safe against the store's other users.
  struct replicated_state {
    /// A short fingerprint of the state (equal states, equal digests).
    std::function<std::string()> digest;
    /// The whole state, as `merge` takes it.
    std::function<std::string()> state;
    /// Merges another member's state; an error (malformed) is logged and changes nothing.
    std::function<caf::error(const std::string&)> merge;
  };

  /// Replicates `s` from now on: its digest goes to every linked member on each tick
  /// (`cluster.join_retry_ms`) and on each new link; differences are repaired with two
  /// messages. Set it once, before `state_changed`.
  void replicate(replicated_state s);

  /// The replicated state changed here (a key was created or revoked): sends it to every
  /// linked member now, without waiting for the next tick.
  void state_changed();

  /// Shared between the node manager and this object (the manager publishes the list).
  struct shared_state {
    mutable std::mutex mtx;
    std::vector<member_info> members;
    /// The members this node's manager has a live link to (calls go only to those).
    std::set<std::string> linked;

    /// One entry of the location cache.
    struct location {
      std::string member;
      /// Learned by moving the agent away from this node: calls from here still go to this
      /// node's runtime first, whose stash or forwarder keeps each sender's order (see
      /// cluster.cpp, `moved_not_remembered`), and take the entry only once the runtime no
      /// longer has the id.
      bool moved_away = false;
    };

    /// Where an id was last found: agent id -> member. Calls go there first, without the
    /// local miss and the search. At most `located_max` entries (then it starts over).
    std::mutex loc_mtx;
    std::unordered_map<std::string, location> located;
    size_t located_max = 0;

    /// Set once at start, before any call: this node's runtime, node manager and call
    /// transport (runtime/transport.hpp), which carries calls by id to the other members.
    node_runtime* rt = nullptr;
    caf::actor manager;
    std::shared_ptr<call_transport> transport;
    std::string self_name;

    /// Replicated journals (runtime/replication.hpp); null when `replication.factor` is 1 or
    /// the node has no store. Guarded by `mtx`.
    std::shared_ptr<hive::replicator> rep;

    /// How calls forwarded to other members found their agent, totals since start
    /// (`hive_directory_routes_total{way}`): `cached` (the location cache named the member),
    /// `owner` (an owner record named it: see cluster.cpp, `owner_record`), `placement` (found
    /// by asking members in placement order). `misses`: members asked that did not have it
    /// (`hive_directory_misses_total`).
    std::atomic<uint64_t> routed_cached{0};
    std::atomic<uint64_t> routed_owner{0};
    std::atomic<uint64_t> routed_placement{0};
    std::atomic<uint64_t> misses{0};

    /// TEST ONLY (deterministic tests of the membership protocol, tests/runtime/
    /// membership_protocol_test.cpp): when set, the node manager calls it instead of dialling
    /// `address` with CAF's remote_actor, and it answers with `cluster_testing::connected`
    /// or `connect_failed`. Set before the manager starts.
    std::function<void(const caf::actor& manager, const std::string& address)> connector;

    /// What `replicate` set (guarded by `mtx`; empty functions until then).
    replicated_state replicated;

    /// The linked members that serve calls (up or leaving), this node excluded, as (name, transport
    /// address): `preferred` first (if among them), then in placement order for `id`.
    [[nodiscard]] std::vector<std::pair<std::string, std::string>> call_targets(
      const agent_id& id, const std::string& preferred) const;

    /// Whether calls may go to `m`: another member with a transport, linked to this node's
    /// manager, and up, suspect or leaving. Call with `mtx` held.
    [[nodiscard]] bool serves_calls(const member_info& m) const;

    /// The transport address of linked member `member`, if it serves calls.
    [[nodiscard]] std::optional<std::string> transport_of(const std::string& member) const;

    /// The member the location cache names for `id`, if any.
    [[nodiscard]] std::optional<std::string> where(const std::string& id);
    /// The location cache's entry for `id`, if any.
    [[nodiscard]] std::optional<location> route(const std::string& id);
    void remember(const std::string& id, const std::string& member, bool moved_away = false);
    void forget(const std::string& id);
    /// Drops every entry that points at `member` (it went down, left or restarted).
    void forget_member(const std::string& member);
  };

private:
  cluster() = default;

  /// Moves this node's persisted agents to the others (the middle part of `leave`).
  void hand_off();

  /// Like `place`, but among the up members other than this node; empty if none.
  [[nodiscard]] std::string place_among_others(const agent_id& id) const;

  /// The rebalancer thread: after the set of up members changed (and then held for one
  /// `cluster.join_retry_ms`), moves this node's unpinned persisted agents whose placement is
  /// another member there, one at a time, at most `cluster.rebalance_migrations_per_s`.
  void rebalance_loop();

  /// Runs one migration of `id` to `to` and waits for it; true if it moved.
  bool move_and_wait(const agent_id& id, const std::string& to);

  /// Stops the rebalancer thread (if any) and waits for it.
  void stop_rebalancer();

  std::thread rebalancer_;
  std::mutex rb_mtx_;
  std::condition_variable rb_cv_;
  bool rb_stop_ = false;

  node_runtime* rt_ = nullptr;
  std::string self_name_;
  caf::actor manager_;
  uint16_t port_ = 0;
  std::string address_;
  std::shared_ptr<shared_state> shared_;
  std::chrono::milliseconds migration_timeout_{5000};
  bool left_ = false;
};

/// TEST ONLY: the node manager without a runtime, a call transport or sockets, for
/// deterministic tests of the membership protocol under CAF's test coordinator. Its clock is
/// the actor system's (virtual under the test coordinator), its links come from
/// `shared_state::connector`.
namespace cluster_testing {

/// Spawns the node manager of member `me` (name, address, incarnation) with `cfg`'s
/// `cluster.*` settings (seeds, heartbeat, suspicion, join, removal); it starts with `start`.
[[nodiscard]] caf::actor spawn_manager(caf::actor_system& sys,
                                       std::shared_ptr<cluster::shared_state> shared,
                                       const node_config& cfg, member_info me);

/// Starts `manager` as the member at `address`: it dials its seeds and begins its timers.
void start(const caf::actor& manager, const std::string& address);

/// Answers a `connector` call: dialling `address` reached the node manager `peer`.
void connected(const caf::actor& manager, const std::string& address, const caf::actor& peer);

/// Answers a `connector` call: dialling `address` failed.
void connect_failed(const caf::actor& manager, const std::string& address,
                    const std::string& reason);

/// Makes `manager` leave: stage 1 (`final` false: leaving, still serving) or stage 2 (tells
/// every member and quits once they answered).
void leave(const caf::actor& manager, bool final);

} // namespace cluster_testing

/// Sets the CAF options a cluster node needs (loads the io middleman; heartbeats and the
/// connection timeout from `cluster.*`). Called by `configure_actor_system` when
/// `cluster.listen` is set.
void configure_cluster_transport(caf::actor_system_config& sys_cfg, const node_config& cfg);

} // namespace hive
