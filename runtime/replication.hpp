#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
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

#include "protocols/agent_id.hpp"
#include "protocols/cluster.hpp"
#include "protocols/records.hpp"
#include "storage/store.hpp"

namespace hive {

/// Settings of a `replicator` (from `replication.*` config).
struct replication_options {
  /// Size of an agent's replica set (capped by the number of known members).
  size_t factor = 3;
  /// How long a write, a round of an activation or a fetch waits for replicas.
  std::chrono::milliseconds timeout{2000};
  /// Whole-copy repairs started per second.
  double repairs_per_s = 200;
  /// TEST ONLY (a planted bug): acknowledge once the host has the write, replicate later.
  bool ack_before_quorum = false;
  /// How long a promise another member made in this node's name (a migration's source,
  /// `promise_to`) keeps this node from taking the agent over from its copy: the shipment may
  /// still come. After it, a holder with no working copy takes over (its source failed).
  /// The cluster sets 3 x `cluster.migration_timeout_ms` (past every deadline of a shipment).
  std::chrono::milliseconds handover_wait{15000};
  /// Events a copy that misses some keeps in memory, past the gap, until the repair that
  /// fills it (`fence::held`); more are dropped (the next repair sends them).
  size_t held_events_max = 1024;
};

/// One member of the cluster as replication sees it.
struct replica_peer {
  std::string name;
  /// Its call transport `HOST:PORT` (runtime/transport.hpp).
  std::string address;
  /// It takes calls now (joining, up, suspect or leaving, and linked to this node).
  bool serving = false;
};

/// Replicated journals with epoch fencing (issue #5): every journaled agent has a replica set,
/// the first `factor` known members (down ones included) in the rendezvous order of its id.
/// Each member of the set keeps a *copy* of the agent in its own store under the key `~ID`
/// (meta with the fence, snapshot, journal; invisible to listings and activation), next to the
/// host's own working copy under `ID`.
///
/// - **Writes.** The host appends each event to its working copy and sends it to every
///   member of the set (its own copy included, which goes in the same group commit); the
///   write is acknowledged once the working copy has it and a majority of the set does. A
///   copy that misses events (its member was down, or is new to the set) answers `conflict`
///   and gets the whole copy sent (a repair, at most `repairs_per_s` per node).
/// - **Epochs.** Before an activation takes calls it asks the set for their copies' state,
///   then has a majority *promise* a new, larger epoch (written durably in the copy's meta);
///   a copy refuses writes from an older epoch (`fenced`): at most one activation can reach
///   a majority at a time. The activation then catches up from the copy with the newest
///   journal (largest last epoch, then sequence), replacing its working copy if that differs.
/// - **Failover.** A call for an agent whose holder (the node of the last promise) no longer
///   serves calls activates it on the first serving member of its set (`may_take_over`).
/// - **Handing back.** An activation finds a promise held by another serving node and does
///   not take over (`agent_not_found`; the caller goes on searching), unless it is a
///   migration's target (`expect_handover`), which also skips the query round: it knows the
///   epoch the agent left with and asks for the next one at once.
/// - **Promised by the source.** A migration's source has the set promise the next epoch to
///   the target before its agent stops writing (`promise_to`). The members go on taking the
///   agent's writes at the epoch it has (`fence::draining`) until the target writes: the
///   promise is durable before the move's pause begins, and the target activates with no
///   round (`granted`) once the source's last writes are acknowledged.
/// - **Majorities.** Each round waits for a majority of answers, not for all of them: a slow
///   member (or this node's own copy, queued behind a large write) does not delay it.
///
/// Messages travel on the call transport as `remote_call`s with ops `r.query`, `r.prepare`,
/// `r.append`, `r.snapshot`, `r.fetch`, `r.sync`, `r.erase` (bodies: encoded records in
/// length-prefixed bundles, `pack`).
///
/// Not yet: repair when the set itself changes (members added or removed for good), and
/// reads served by a minority are not refused (only writes are).
class replicator : public std::enable_shared_from_this<replicator> {
public:
  using reply_fn = std::function<void(caf::expected<std::string>)>;
  /// Every known member that is not removed, this node included.
  using peers_fn = std::function<std::vector<replica_peer>()>;
  /// Sends a call over the call transport (`call_transport::call`).
  using call_fn = std::function<void(const std::string& address, const remote_call& req,
                                     std::chrono::milliseconds timeout, reply_fn done)>;

  [[nodiscard]] static std::shared_ptr<replicator> make(std::shared_ptr<store> db, std::string self,
                                                        replication_options opts, peers_fn peers,
                                                        call_fn call);

  /// Stops the repair thread.
  ~replicator();
  replicator(const replicator&) = delete;
  replicator& operator=(const replicator&) = delete;

  /// Stops the repair thread (queued repairs are dropped). Idempotent.
  void shutdown();

  /// The store key of this node's replica copy of `agent`.
  [[nodiscard]] static std::string copy_key(std::string_view agent);
  /// Whether a store key names a replica copy (listings skip those).
  [[nodiscard]] static bool is_copy_key(std::string_view key) noexcept {
    return !key.empty() && key.front() == '~';
  }

  /// The replica set of `agent`, in rendezvous order.
  [[nodiscard]] std::vector<replica_peer> replica_set(const std::string& agent) const;

  /// A promise round a migration's target began before its activation (`begin_handover`).
  struct handover_round;

  /// What an activation knows beyond this node's store (a migration's target).
  struct activation_hints {
    /// Runs after the promise, before the working copy is read: a migration's target waits
    /// there for its write of the shipped state (its error ends the activation).
    std::function<caf::error()> settled;
    /// The working copy's position (last epoch, last seq) without reading it: a migration's
    /// target knows what it stores.
    std::optional<std::pair<uint64_t, uint64_t>> position;
    /// The promise round `begin_handover` started for this activation (used once).
    std::shared_ptr<handover_round> round;
    /// Out: the working copy was replaced by a newer replica copy, so what the caller holds
    /// of it is stale (read it from the store).
    bool replaced = false;
    /// A migration's source had a majority of the set promise this epoch to this node before
    /// it shipped the state (`promise_to`), and checked that no copy is newer than what it
    /// shipped: the activation takes it without a round of its own and reads nothing back
    /// (0: none).
    uint64_t granted = 0;
  };

  /// What `promise_to` got: the epoch a majority promised, and the newest copy among them.
  struct grant {
    uint64_t epoch = 0;
    uint64_t newest_epoch = 0;
    uint64_t newest_seq = 0;
  };

  /// A migration's source, before its agent stops writing, asks the replica set to promise
  /// the epoch after `epoch_now` (the agent's) to `target`, while it still takes the agent's
  /// writes at `epoch_now` (`fence::draining`, until the first write at the promised epoch or
  /// a newer promise). The round runs before the move's pause, so the target activates without
  /// a round of its own (`activation_hints::granted`) once every write the agent made is
  /// acknowledged (the caller's part: the shipped state is then committed). `done` runs once,
  /// on any thread, with the grant (the epoch a majority promised, and the newest copy among
  /// them), or fenced / no_quorum. Either way some members may hold the promise: a source that
  /// keeps the agent takes it back (as after a shipment that went unanswered). `meta` is the
  /// working copy's.
  void promise_to(const agent_id& id, const records::meta_record& meta, uint64_t epoch_now,
                  const std::string& target, std::function<void(caf::expected<grant>)> done);

  /// Runs an activation's two rounds (see above) and catches its working copy up; blocks (at
  /// most about 3 x `timeout`). `meta` is the working copy's meta; the epoch is above
  /// `min_epoch`. Errors: no_quorum (no majority answered or promised), fenced (a majority
  /// promised a newer epoch meanwhile), agent_not_found (another serving node holds it: the
  /// caller drops its working copy), storage errors. `fresh` (a spawn): the working copy is
  /// new and stays as it is (stale copies of an earlier agent of that id get repaired).
  /// `hints` (optional): see `activation_hints`.
  [[nodiscard]] caf::expected<uint64_t> acquire(const agent_id& id,
                                                const records::meta_record& meta,
                                                uint64_t min_epoch, bool fresh,
                                                activation_hints* hints = nullptr);

  /// The next activation of `id` here is a migration's target: it takes the promise over from
  /// the node the agent leaves, whose activation had `epoch`. It asks for the promise of a
  /// larger one at once, without the query round; if a replica promised more meanwhile, it
  /// runs both rounds as any activation.
  void expect_handover(const agent_id& id, uint64_t epoch);

  /// Like `expect_handover`, and sends that promise round now, without waiting (it runs
  /// while the target stores the shipped state; this node's own promise is queued ahead of
  /// that write). The activation passes the result to `acquire` (`activation_hints::round`),
  /// which waits for its answers. A round no activation takes leaves its promises behind, as
  /// an activation that fails after its rounds does: call it only once the adoption's own
  /// checks passed. `meta` is the working copy's meta; the epoch asked for is above
  /// `min_epoch` and `epoch`. Null: this node is still joining (`acquire` refuses).
  [[nodiscard]] std::shared_ptr<handover_round> begin_handover(const agent_id& id,
                                                               const records::meta_record& meta,
                                                               uint64_t epoch, uint64_t min_epoch);

  /// Whether this node should activate `id`, of which it has a replica copy but no working
  /// copy: the copy's holder does not serve calls and this node is the first serving member
  /// of the set; or the holder is this node (a migration's source promised it here and failed
  /// before the state arrived) and `handover_wait` passed since that promise. Reads only this
  /// node's store.
  [[nodiscard]] bool may_take_over(const agent_id& id);

  /// Writes a working copy's meta from this node's replica copy (blocks until durable); the
  /// activation that follows catches the rest up. Errors: agent_not_found, storage errors.
  [[nodiscard]] caf::error take_over(const agent_id& id);

  /// A host's write of one event (see above). `done` runs once, on any thread.
  void append(records::event_record ev, store::done_fn done);

  /// Sends a snapshot the host stored to the set (best effort: a copy that cannot take it
  /// is repaired by its next conflict). `prune_through` as in `store::put_snapshot`.
  void snapshot(const records::snapshot_record& snap, uint64_t prune_through);

  /// Checks with the replica set that a majority still promises `epoch` to this node (a read
  /// of a host whose lease ran out); blocks up to about `timeout`. Errors: fenced (a newer
  /// epoch was promised), no_quorum.
  [[nodiscard]] caf::error confirm(const agent_id& id, uint64_t epoch);

  /// Whether this node can reach a majority of `agent`'s replica set now (itself included).
  /// A host that cannot serves no reads of it (they could be stale: a majority elsewhere may
  /// have moved on).
  [[nodiscard]] bool majority_reachable(const std::string& agent);

  /// Member `name` came (back) up: the copies it keeps of agents held here are checked and,
  /// if behind, repaired in the background (rate-limited). Empty `name`: the member list
  /// changed for good (a member was removed), so replica sets may have gained members:
  /// every serving member of each held agent's set is checked.
  void on_member_up(const std::string& name);

  /// The agent was stopped for good: every copy is erased (best effort: members that do not
  /// serve calls now are skipped). `done` runs once every erase was answered or timed out
  /// (any thread), so a spawn of the same id right after a stop finds no stale promise.
  void erase(const agent_id& id, std::function<void()> done = {});

  [[nodiscard]] static bool is_replication_op(std::string_view op) noexcept {
    return op.size() > 2 && op[0] == 'r' && op[1] == '.';
  }

  /// Serves a replication call from another member (on the transport's thread; `done` may
  /// run on the store's completion thread).
  void handle(const remote_call& req, reply_fn done);

  /// Counters since start (metrics, tests).
  struct counters {
    uint64_t writes_acknowledged = 0;
    uint64_t writes_without_quorum = 0;
    uint64_t fenced_writes = 0;
    uint64_t repairs = 0;
    uint64_t takeovers = 0;
    uint64_t activations = 0;
  };
  [[nodiscard]] counters stats() const;

  /// Length-prefixed (4 bytes big-endian each) concatenation of `parts`.
  [[nodiscard]] static std::string pack(const std::vector<std::string>& parts);
  /// The parts of `pack`. Errors: invalid_argument (truncated).
  [[nodiscard]] static caf::expected<std::vector<std::string>> unpack(std::string_view bytes);

  struct fence {
    uint64_t promised = 0;
    std::string holder;
    /// Writes of this epoch (below `promised`) are still taken: the promise went to a
    /// migration's target while its source still writes (`promise_to`). Ends with the first
    /// write at `promised` or above, or the next promise. Not durable: after a restart the
    /// member refuses them (the source's write then needs the other members).
    uint64_t draining = 0;
    /// Whether this copy takes a write (append, snapshot, repair) made at `epoch`: at the
    /// promised epoch or above, or at the draining one (if any: 0 is none).
    [[nodiscard]] bool takes(uint64_t epoch) const {
      return epoch >= promised || (draining != 0 && epoch == draining);
    }
    /// The copy misses events (the store refused an append as a conflict): the appends after
    /// it wait in `held` for the repair that fills the gap (`on_sync`), which writes those
    /// that follow its copy on. Without them a copy that fell behind under steady writes would
    /// never catch up: the writes made while a repair travels would leave a new gap each time.
    bool gap = false;
    std::map<uint64_t, records::event_record> held;
    /// The replica set the promise was made for.
    std::vector<std::string> replicas;
  };

  /// `replica_set(agent)` plus the members of the set this node's copy last promised for
  /// (those no longer known count as unreachable): a node that just restarted, or sees too
  /// few members, never settles for a smaller majority than the one the agent had.
  [[nodiscard]] std::vector<replica_peer> effective_set(const std::string& agent);

private:
  replicator(std::shared_ptr<store> db, std::string self, replication_options opts, peers_fn peers,
             call_fn call);

  /// Sends `req` to every member of `set` (this node: `local`), waits for all answers or the
  /// timeout, or (`enough` > 0) until that many answered without error; unanswered slots hold
  /// timeout errors.
  std::vector<caf::expected<std::string>> gather(const std::vector<replica_peer>& set,
                                                 const remote_call& req,
                                                 const std::function<void(reply_fn)>& local,
                                                 size_t enough = 0);

  /// The answers of a round `send_round` started.
  struct round_book;
  /// The answers of a round, in the order of its set (unanswered: timeout errors).
  using round_fn = std::function<void(std::vector<caf::expected<std::string>>)>;
  /// `gather` in two halves: sends, then (`wait_round`) waits. `then` (optional) runs once, on the
  /// thread of the answer that ends the round (enough answered, or all did), with no lock held.
  std::shared_ptr<round_book> send_round(const std::vector<replica_peer>& set,
                                         const remote_call& req,
                                         const std::function<void(reply_fn)>& local, size_t enough,
                                         round_fn then = {});
  std::vector<caf::expected<std::string>> wait_round(const std::shared_ptr<round_book>& b,
                                                     const std::vector<replica_peer>& set);
  /// Round 2 of an activation of `id` on this node: asks `set` to promise `epoch`
  /// (`meta_bytes`: the working copy's meta); done once a majority of `set` promised.
  /// `holder`: the node the promise names (empty: this one); `drain`: the epoch whose
  /// writes members still take (`fence::draining`; 0: none); `then` as in `send_round`.
  std::shared_ptr<round_book> send_prepare(const agent_id& id, uint64_t epoch,
                                           const std::string& meta_bytes,
                                           const std::vector<replica_peer>& set,
                                           const std::string& holder = {}, uint64_t drain = 0,
                                           round_fn then = {});

  /// The fence of copy `key` (loaded from its meta on first use). Call with `fmtx_` held.
  fence& fence_of(const std::string& key);

  /// `{"exists","promised","holder","draining","last_epoch","last_seq"}` of this node's copy of
  /// `agent`.
  std::string copy_state(const std::string& agent);

  /// `drain`: see `fence::draining` (0: none).
  void on_prepare(const std::string& agent, uint64_t epoch, const std::string& holder,
                  const std::string& meta_bytes, std::vector<std::string> replicas, uint64_t drain,
                  reply_fn done);
  void on_append(records::event_record ev, reply_fn done);
  /// A store completion for an append to copy `key`: a conflict marks its gap
  /// (`fence::gap`); then `done` (if any) gets the outcome.
  store::done_fn note_gap(const std::string& key, reply_fn done);
  void on_snapshot(records::snapshot_record snap, uint64_t prune_through);
  void on_sync(const std::string& agent, uint64_t epoch, const std::vector<std::string>& bundle,
               reply_fn done);
  void on_erase(const std::string& agent, reply_fn done);
  /// The copy (`copy` true) or working copy of `agent` as a bundle: meta, snapshot (or
  /// empty), events after it.
  caf::expected<std::string> bundle_of(const std::string& key);

  /// Sends `peer` (or this node's copy) the working copy of `agent` (rate-limited, one at a
  /// time per copy).
  /// With `check_first`, the copy's state is asked for first and the copy only sent if it
  /// differs from the working copy.
  void schedule_repair(const std::string& agent, const replica_peer& peer, uint64_t epoch,
                       bool check_first = false);

  /// Runs `fn` on the repair thread at `when`.
  void post(std::chrono::steady_clock::time_point when, std::function<void()> fn);
  void run_worker();

  std::shared_ptr<store> db_;
  std::string self_;
  replication_options opts_;
  peers_fn peers_;
  call_fn call_;

  std::mutex fmtx_;
  std::unordered_map<std::string, fence> fences_;
  /// Migrations' targets: id -> the epoch the agent left its node with.
  std::unordered_map<std::string, uint64_t> handovers_;
  /// Promises other members made in this node's name (`promise_to`), and when (bounded:
  /// entries older than `handover_wait` are dropped as new ones come).
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> grants_;

  mutable std::mutex cmtx_;
  counters counters_;

  std::mutex wmtx_;
  std::condition_variable wcv_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> tasks_;
  std::set<std::string> repairing_;
  std::chrono::steady_clock::time_point next_repair_{};
  bool stop_ = false;
  std::thread worker_;
};

/// Where the runtime finds the replicator once a cluster attached one (null until then).
class replicator_slot {
public:
  void set(std::shared_ptr<replicator> r) {
    std::lock_guard<std::mutex> guard{mtx_};
    r_ = std::move(r);
  }
  [[nodiscard]] std::shared_ptr<replicator> get() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return r_;
  }

private:
  mutable std::mutex mtx_;
  std::shared_ptr<replicator> r_;
};

} // namespace hive
