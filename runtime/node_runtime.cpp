#include "runtime/node_runtime.hpp"

#include <future>

#include <algorithm>
#include <cassert>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <unordered_map>

#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/agent_actor.hpp"
#include "runtime/inline_exec.hpp"
#include "runtime/logging.hpp"

namespace hive {

/// The runtime as callbacks that may outlive it see it: `rt` is null once `shutdown()` began
/// (it takes `mtx` exclusively for that; a callback holds it shared while it uses `rt`).
struct runtime_gate {
  std::shared_mutex mtx;
  node_runtime* rt = nullptr;
};

namespace {

/// A random, non-zero name for one migration shipment (migration_payload::shipment).
uint64_t new_shipment_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t x = 0;
  while (x == 0)
    x = rng();
  return x;
}

/// Everything the runtime's actors share. Immutable after start, except the directory and
/// metrics, which are thread-safe.
struct runtime_context {
  node_config cfg;
  std::shared_ptr<directory> dir;
  std::shared_ptr<hive::metrics> metrics;
  const kind_registry* kinds = nullptr;
  /// The node's store; null = every kind is ephemeral.
  std::shared_ptr<store> db;
  front_factory breaker_factory;
  std::shared_ptr<moved_agents> moved;
  std::shared_ptr<agent_sender> sender;
  std::shared_ptr<agent_asker> asker;
  std::shared_ptr<provider_finder> finder;
  std::shared_ptr<agent_spawner> spawner;
  std::shared_ptr<remote_forwarder> forwarder;
  /// The cluster's replicator (runtime/replication.hpp), once a cluster attached one.
  std::shared_ptr<replicator_slot> rep;
  /// The root supervisor (weak: set once it is spawned, before any tenant supervisor runs).
  caf::actor_addr root;
  /// What the activations share (`agent_env`), made on first use: one without a replicator,
  /// one for the current replicator (see `env_for`).
  mutable std::mutex env_mtx;
  mutable std::shared_ptr<const agent_env> env_plain;
  mutable std::shared_ptr<const agent_env> env_replicated;
  mutable std::weak_ptr<replicator> env_replicated_for;

  /// True if agents of `kind` keep their state in the store.
  [[nodiscard]] bool persisted(const std::string& kind) const {
    if (!db)
      return false;
    auto k = kinds->find(kind);
    return k != nullptr && k->persistence != persistence_mode::ephemeral;
  }
};

/// Receives the target of an agent once it is active (or why it is not). Runs inside the
/// tenant supervisor: must not block.
using continuation = std::function<void(caf::expected<caf::actor>)>;

/// Asks a tenant supervisor to activate a persisted agent that is not running.
struct activate_job {
  agent_id id;
  continuation then;
};

using ctx_ptr = std::shared_ptr<const runtime_context>;

/// A spawn travelling root -> tenant supervisor (local only: carries a callback).
struct spawn_job {
  agent_view view;
  std::shared_ptr<agent> first_instance;
  std::function<void(caf::expected<agent_view>)> done;
  uint64_t correlation_id = 0;
};

/// A stop travelling root -> tenant supervisor.
struct stop_job {
  agent_id id;
  std::function<void(caf::error)> done;
};

/// An ask from a non-actor context, handled by a router.
/// Sends an ask again by id (its target died before it got the message: a passivation or a
/// restart raced with the send), with what remains of its timeout.
using ask_retry_fn = std::function<void(const agent_id&, agent_call, std::chrono::milliseconds,
                                        node_runtime::reply_fn, int attempt)>;

struct ask_job {
  caf::actor target;
  agent_call call;
  caf::timespan timeout;
  node_runtime::reply_fn done;
  /// Set when the ask may be retried: the agent's id and how to re-send it.
  agent_id id;
  std::shared_ptr<const ask_retry_fn> retry;
  int attempt = 0;
};

/// Asks re-sent after their target died, at most (each within the ask's deadline).
constexpr int ask_attempts_max = 10;

/// A live migration travelling root -> tenant supervisor.
struct migrate_job {
  agent_id id;
  std::string to;
  ship_fn ship;
  std::function<void(caf::expected<migration_result>)> done;
  /// Pin the agent to `to` (a move by hand).
  bool pin = false;
  /// Sends the target the outcome of the source's last appends (the state goes ahead of
  /// them); empty: the state waits for them.
  grant_fn grant;
  /// Replicated: the replica set's promise to the target was asked for (before the agent
  /// stopped: `replicator::promise_to`), with this outcome: the epoch promised and the
  /// newest copy among the promising members, or the error.
  bool promise_asked = false;
  caf::expected<replicator::grant> promise = replicator::grant{};
  /// The epoch asked for (0: none yet).
  uint64_t promise_epoch = 0;
};

/// The state of an agent migrating here, handed to its activation while the store writes it:
/// the activation's replica rounds run meanwhile, and it waits for `stored` only before it
/// reads the working copy (not at all when `granted`).
struct adopted_state {
  records::meta_record meta;
  /// The write of the meta and the snapshot: durable (no error) or failed.
  std::shared_future<caf::error> stored;
  /// The activation is refused (`rejected`) when it reaches its reading of the working copy
  /// after this (the source may have gone on with the agent: `migration_payload`); unset: no
  /// deadline.
  std::optional<std::chrono::steady_clock::time_point> activate_by;
  /// The shipped snapshot (decoded): the activation starts from it unless the replica rounds
  /// replaced the working copy with a newer copy. The journal holds nothing after it (the
  /// node erased this agent's when it left).
  std::shared_ptr<const records::snapshot_record> snapshot;
  /// The epoch reserved on this node for the activation (`store::next_epoch`).
  uint64_t min_epoch = 0;
  /// The promise round sent when the shipment arrived (`replicator::begin_handover`).
  std::shared_ptr<replicator::handover_round> round;
  /// The epoch the source had a majority promise to this node before it shipped the state
  /// (`migration_payload::granted_epoch`): no round here, and the activation does not wait
  /// for the write of the state (its writes queue behind it in the store). 0: none.
  uint64_t granted = 0;
  /// The state left with the agent's last appends in flight: the activation waits for the
  /// grant (`node_runtime::grant_adoption`) instead, until `activate_by`.
  std::shared_future<caf::expected<uint64_t>> grant;
};

/// An agent that migrated here: the tenant supervisor activates it.
struct adopt_job {
  agent_id id;
  std::shared_ptr<const adopted_state> adopted;
  std::function<void(caf::expected<caf::actor>)> done;
};

/// Work an actor sends itself, to run after what its current handler does next.
struct deferred_call {
  std::function<void()> run;
};

/// An inspection, handled by a router.
struct inspect_job {
  agent_view view;
  uint64_t correlation_id = 0;
  std::function<void(caf::expected<nlohmann::json>)> done;
};

} // namespace
} // namespace hive

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::spawn_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::stop_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::ask_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::inspect_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::activate_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::migrate_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::adopt_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::deferred_call)

namespace hive {

namespace {

using spawn_agent_atom = caf::atom_constant<caf::atom("hspawn")>;
using stop_agent_atom = caf::atom_constant<caf::atom("hstop")>;
using ask_atom = caf::atom_constant<caf::atom("hask")>;
using inspect_atom = caf::atom_constant<caf::atom("hinspect")>;
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
using activate_atom = caf::atom_constant<caf::atom("hactivate")>;
using migrate_atom = caf::atom_constant<caf::atom("hmigrate")>;
using adopt_atom = caf::atom_constant<caf::atom("hadopt")>;
using migrate_shipped_atom = caf::atom_constant<caf::atom("hmigship")>;
using migrate_check_atom = caf::atom_constant<caf::atom("hmigcheck")>;
using migrate_expire_atom = caf::atom_constant<caf::atom("hmigexp")>;
/// The replica set's promise to a migration's target came in (replicator::promise_to), asked
/// for while the agent still ran: `(atom, id, token, epoch, newest_epoch, newest_seq)` or
/// `(atom, id, token, error)`.
using migrate_promised_atom = caf::atom_constant<caf::atom("hmigprom")>;

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// The stored meta of a running agent's working copy. An agent that migrated here may run
/// before the write of its state has landed (its writes queue behind it): when no meta is
/// there yet, it is read again once everything queued before has been written.
caf::expected<std::optional<records::meta_record>> running_meta(store& db, const std::string& key) {
  auto meta = db.get_meta(key);
  if (meta && !*meta) {
    db.drain();
    meta = db.get_meta(key);
  }
  return meta;
}

/// Builds a fresh instance of a persisted agent from its kind, config and stored state
/// (latest snapshot, then the journal after it). A record that fails verification fails the
/// activation: it is never served as state.
caf::expected<std::shared_ptr<agent>> restore_agent(
  const runtime_context& ctx, const agent_id& agent_name, const std::string& kind_name,
  const std::shared_ptr<const nlohmann::json>& config, durable_position& pos,
  const records::snapshot_record* shipped = nullptr) {
  auto kind = ctx.kinds->find(kind_name);
  if (kind == nullptr)
    return make_error(errc::unknown_kind, "kind '" + kind_name + "' is not registered");
  auto made = kind->make(config ? *config : nlohmann::json::object());
  if (!made)
    return std::move(made.error());
  std::shared_ptr<agent> instance{std::move(*made)};
  auto id = agent_name.str();
  // A migration's target starts from the snapshot it was shipped (and stores): nothing to read.
  const records::snapshot_record* snap = shipped;
  std::optional<records::snapshot_record> stored;
  if (shipped == nullptr) {
    auto got = ctx.db->get_snapshot(id);
    if (!got)
      return std::move(got.error());
    stored = std::move(*got);
    snap = stored ? &*stored : nullptr;
  }
  pos.seq = pos.snapshot_seq = 0;
  pos.dedup.clear();
  if (snap != nullptr) {
    if (auto err = instance->restore(snap->state))
      return make_error(errc::corrupt_record,
                        "snapshot of " + id + " does not restore: " + message_of(err));
    pos.seq = pos.snapshot_seq = snap->hdr.seq;
    pos.dedup.assign(snap->dedup.begin(), snap->dedup.end());
    // Epochs grow per id across nodes too: a snapshot shipped by a migration carries the
    // epoch of the activation it left.
    pos.epoch = std::max(pos.epoch, snap->hdr.epoch + 1);
  }
  if (kind->persistence == persistence_mode::journaled) {
    while (shipped == nullptr) { // (the journal holds nothing after a shipped snapshot)
      auto events = ctx.db->read_journal_from(id, pos.seq + 1, 4096);
      if (!events)
        return std::move(events.error());
      for (auto& ev : *events) {
        if (ev.hdr.seq != pos.seq + 1)
          return make_error(errc::corrupt_record,
                            "journal of " + id + " jumps from seq " + std::to_string(pos.seq)
                              + " to " + std::to_string(ev.hdr.seq));
        if (auto err = instance->apply(ev.payload))
          return make_error(errc::corrupt_record,
                            "event " + std::to_string(ev.hdr.seq) + " of " + id
                              + " does not apply: " + message_of(err));
        pos.seq = ev.hdr.seq;
        if (!ev.client_id.empty())
          pos.dedup.push_back({ev.client_id, ev.client_seq, ev.reply});
      }
      if (events->size() < 4096)
        break;
    }
    auto window = static_cast<size_t>(ctx.cfg.persistence.dedup_entries_max);
    if (pos.dedup.size() > window)
      pos.dedup.erase(pos.dedup.begin(),
                      pos.dedup.begin() + static_cast<ptrdiff_t>(pos.dedup.size() - window));
  }
  return instance;
}

/// The view of a stored agent that is not active.
agent_view view_of_meta(const runtime_context& ctx, const agent_id& id,
                        const records::meta_record& meta) {
  agent_view view;
  view.id = id;
  view.kind = meta.kind;
  view.node = ctx.cfg.node.name;
  view.supervisor = "tenant:" + id.tenant;
  view.restart = meta.restart;
  view.has_breaker = meta.breaker;
  auto config = nlohmann::json::parse(meta.config, nullptr, false);
  view.config = std::make_shared<const nlohmann::json>(
    config.is_object() ? std::move(config) : nlohmann::json::object());
  return view;
}

std::string tenant_child_id(const std::string& tenant) {
  return "tenant:" + tenant;
}

void fail_spawn(const runtime_context& ctx, spawn_job& job, caf::error err) {
  ctx.dir->erase(job.view.id);
  if (job.view.has_breaker && job.view.target)
    caf::anon_send_exit(job.view.target, caf::exit_reason::user_shutdown);
  job.done(std::move(err));
}

/// The `agent_env` the activations of this node share: one without a replicator (ephemeral
/// agents, and persisted ones of a node without replication), one for `rep`, made again when
/// the cluster attaches another replicator. Its hooks hold no strong reference to `ctx` (the
/// context would keep itself alive).
std::shared_ptr<const agent_env> env_for(const ctx_ptr& ctx,
                                         const std::shared_ptr<replicator>& rep) {
  std::lock_guard<std::mutex> guard{ctx->env_mtx};
  if (!rep && ctx->env_plain)
    return ctx->env_plain;
  if (rep && ctx->env_replicated && ctx->env_replicated_for.lock() == rep)
    return ctx->env_replicated;
  auto env = std::make_shared<agent_env>();
  env->json_depth_max = static_cast<size_t>(ctx->cfg.gateway.json_depth_max);
  env->metrics = ctx->metrics;
  env->hibernate_idle = std::chrono::milliseconds(ctx->cfg.agents.hibernate_idle_ms);
  env->send = [sender = ctx->sender](const agent_id& from, const agent_id& to, agent_call call) {
    auto f = sender->get();
    auto cid = call.env.correlation_id;
    auto err =
      f ? (*f)(to, std::move(call)) : make_error(errc::shutting_down, "the node is shutting down");
    if (err)
      log::event(spdlog::level::warn, "agent_send_failed",
                 {{"to", to.str()}, {"reason", describe(err)}}, from.str(), cid);
  };
  env->ask = [asker = ctx->asker](const agent_id& to, agent_call call,
                                  std::chrono::milliseconds timeout,
                                  std::function<void(caf::expected<std::string>)> done) {
    auto f = asker->get();
    if (!f)
      return done(make_error(errc::shutting_down, "the node is shutting down"));
    (*f)(to, std::move(call), timeout, std::move(done));
  };
  env->providers = [finder = ctx->finder](const std::string& cap, const std::string& tenant,
                                          size_t limit, std::function<void(std::string)> done) {
    auto f = finder->get();
    if (!f)
      return done(R"({"providers":[],"nodes_failed":[]})");
    (*f)(cap, tenant, limit, std::move(done));
  };
  env->ensure = [spawner = ctx->spawner](const agent_id& by, const agent_id& id,
                                         const std::string& kind,
                                         std::function<void(caf::error)> done) {
    auto f = spawner->get();
    if (!f)
      return done(make_error(errc::shutting_down, "the node is shutting down"));
    spawn_request req;
    req.id = id;
    req.kind = kind;
    log::event(spdlog::level::info, "agent_implicit_spawn", {{"kind", kind}, {"by", by.str()}},
               id.str());
    (*f)(std::move(req), [done = std::move(done)](caf::expected<agent_view> r) {
      if (!r && code_of(r.error()) != errc::agent_exists)
        return done(std::move(r.error()));
      done({});
    });
  };
  if (ctx->db) {
    auto& p = ctx->cfg.persistence;
    env->db = ctx->db;
    env->restore = [weak = std::weak_ptr<const runtime_context>{ctx}](
                     const agent_actor_config& c,
                     durable_position& position) -> caf::expected<std::shared_ptr<agent>> {
      auto strong = weak.lock();
      if (!strong)
        return make_error(errc::shutting_down, "the node is shutting down");
      return restore_agent(*strong, c.id, c.kind, c.config, position);
    };
    env->snapshot_every_events = static_cast<uint64_t>(p.snapshot_every_events);
    env->snapshot_every_messages = static_cast<uint64_t>(p.snapshot_every_messages);
    env->snapshot_interval = std::chrono::milliseconds(p.snapshot_interval_ms);
    env->journal_retention_events = static_cast<uint64_t>(p.journal_retention_events);
    env->dedup_entries_max = static_cast<size_t>(p.dedup_entries_max);
    env->passivate_idle = std::chrono::milliseconds(p.passivate_idle_ms);
  }
  if (rep) {
    // Weak: the context keeps this env; a replicator that is gone (the cluster stopped)
    // refuses writes and reads like one without a majority.
    std::weak_ptr<replicator> wrep = rep;
    env->append = [wrep](records::event_record ev, store::done_fn done) {
      if (auto r = wrep.lock())
        return r->append(std::move(ev), std::move(done));
      done(make_error(errc::no_quorum, "this node's replication stopped"));
    };
    env->replicate_snapshot = [wrep](const records::snapshot_record& snap, uint64_t prune) {
      if (auto r = wrep.lock())
        r->snapshot(snap, prune);
    };
    env->quorum_reachable = [wrep](const agent_id& id) {
      auto r = wrep.lock();
      return r && r->majority_reachable(id.str());
    };
    env->confirm_epoch = [wrep](const agent_id& id, uint64_t epoch) -> caf::error {
      if (auto r = wrep.lock())
        return r->confirm(id, epoch);
      return make_error(errc::no_quorum, "this node's replication stopped");
    };
    env->read_lease = std::chrono::milliseconds(ctx->cfg.replication.read_lease_ms);
    ctx->env_replicated = env;
    ctx->env_replicated_for = rep;
  } else {
    ctx->env_plain = env;
  }
  return env;
}

/// The child spec of one agent under its tenant supervisor. `pending` (activation only) are
/// run with the new target before the directory publishes it, so that messages that waited
/// for the activation are not overtaken by later ones.
child_spec agent_child_spec(const ctx_ptr& ctx, const agent_view& view,
                            std::shared_ptr<agent> first_instance,
                            std::shared_ptr<std::vector<continuation>> pending = nullptr,
                            std::shared_ptr<const adopted_state> adopted = nullptr) {
  child_spec spec;
  spec.id = view.id.name;
  spec.kind = view.kind;
  auto restart = parse_restart_type(view.restart);
  spec.restart = restart ? *restart : restart_type::permanent;
  // One shared record per agent for the three callbacks (each capture of its own cost ~300
  // bytes per live agent; see bench/HISTORY.md, density).
  // The slot part (first instance; after a hibernation, the instance and durable position
  // the last activation left) is handed to the activations (aliasing, no allocation).
  struct child_data : hibernation_slot {
    ctx_ptr ctx;
    agent_id id;
    std::string kind;
    std::shared_ptr<const nlohmann::json> config;
    std::shared_ptr<std::atomic<uint64_t>> load;
    caf::actor breaker;
    std::shared_ptr<std::vector<continuation>> pending;
    /// A migration's state (first start only; restarts read the store).
    std::shared_ptr<const adopted_state> adopted;
  };
  auto d = std::make_shared<child_data>();
  d->instance = std::move(first_instance);
  d->ctx = ctx;
  d->id = view.id;
  d->kind = view.kind;
  d->config = view.config;
  d->load = view.load;
  d->breaker = view.has_breaker ? view.target : caf::actor{};
  d->pending = std::move(pending);
  d->adopted = std::move(adopted);
  spec.start = [d](caf::local_actor* sup) -> caf::expected<caf::actor> {
    auto& ctx = d->ctx;
    std::shared_ptr<agent> instance = std::move(d->instance);
    d->instance.reset();
    auto kept = std::move(d->position); // set: waking from hibernation
    d->position.reset();
    auto adopted = std::move(d->adopted);
    d->adopted.reset();
    std::shared_ptr<const records::snapshot_record> shipped = adopted ? adopted->snapshot : nullptr;
    auto settled = [&adopted, &d]() -> caf::error {
      if (!adopted)
        return {};
      // (Granted: the agent's writes queue behind the state's; no wait for it here.)
      if (adopted->granted == 0 && !adopted->grant.valid())
        if (auto err = adopted->stored.get())
          return err;
      if (adopted->activate_by && std::chrono::steady_clock::now() > *adopted->activate_by)
        return make_error(errc::rejected,
                          "the migration of " + d->id.str()
                            + " is past its deadline: its source may have gone "
                              "on with the agent");
      return {};
    };
    auto kind = ctx->kinds->find(d->kind);
    if (kind == nullptr)
      return make_error(errc::unknown_kind, "kind '" + d->kind + "' is not registered");
    bool persisted = ctx->persisted(d->kind);
    durable_position pos;
    if (persisted && kept && instance)
      pos = std::move(*kept); // the same activation's state, all of it durable
    else if (persisted)
      pos.epoch = adopted ? adopted->min_epoch : ctx->db->next_epoch();
    bool awake = persisted && kept && instance;
    auto rep = !awake && persisted && kind->persistence == persistence_mode::journaled && ctx->rep
      ? ctx->rep->get()
      : nullptr;
    if (!awake && !rep && persisted && kind->persistence == persistence_mode::journaled
        && !ctx->cfg.cluster.listen.empty() && ctx->cfg.replication.factor > 1)
      // A clustered node between the start of its gateway and that of its cluster (or after
      // the cluster stopped): an activation now would write without the replica set, and its
      // acknowledged writes could be rolled back by the next one (the kill -9 soak caught it).
      return make_error(errc::unavailable,
                        d->id.str()
                          + ": this node's replication is not running (the node "
                            "is starting or stopping); try again");
    // A migration's state is in hand: the instance is built from it now, while the promise
    // round and the store's write of that state run (it is used unless the rounds replaced
    // the working copy with a newer copy).
    std::shared_ptr<agent> early;
    durable_position early_pos;
    if (!instance && persisted && shipped) {
      auto r = restore_agent(*ctx, d->id, d->kind, d->config, early_pos, shipped.get());
      if (r) // (else the restore below fails the same way and reports it)
        early = std::move(*r);
    }
    if (rep) {
      // Replicated: a majority of the replica set promises this activation's epoch, and the
      // working copy catches up from the newest copy (see runtime/replication.hpp).
      auto meta = adopted ? caf::expected<std::optional<records::meta_record>>{adopted->meta}
                          : running_meta(*ctx->db, d->id.str());
      if (!meta)
        return std::move(meta.error());
      if (!*meta)
        return make_error(errc::agent_not_found, "no agent " + d->id.str());
      replicator::activation_hints hints;
      hints.settled = settled;
      if (adopted && shipped) {
        hints.position = std::make_pair(shipped->hdr.epoch, shipped->hdr.seq);
        hints.round = adopted->round;
        hints.granted = adopted->granted;
        if (adopted->grant.valid()) {
          // The source's round for this node: wait for its outcome, until the deadline.
          auto until = adopted->activate_by.value_or(
            std::chrono::steady_clock::now()
            + std::chrono::milliseconds(ctx->cfg.cluster.migration_timeout_ms));
          if (adopted->grant.wait_until(until) != std::future_status::ready)
            return make_error(errc::rejected,
                              "no word from the source of " + d->id.str()
                                + " on its replicas' promise to this node "
                                  "before the deadline");
          auto g = adopted->grant.get();
          if (!g)
            return make_error(code_of(g.error()) == errc::none ? errc::rejected
                                                               : code_of(g.error()),
                              "the source of " + d->id.str()
                                + " got no promise for this node: " + describe(g.error()));
          if (*g <= shipped->hdr.epoch)
            return make_error(errc::invalid_argument,
                              "the source of " + d->id.str() + " granted epoch "
                                + std::to_string(*g) + ", not above its state's "
                                + std::to_string(shipped->hdr.epoch));
          hints.granted = *g;
        }
      }
      auto epoch = rep->acquire(d->id, **meta, pos.epoch, instance != nullptr, &hints);
      if (hints.replaced)
        shipped.reset(); // the working copy is a newer copy now: read it
      if (!epoch) {
        log::event(spdlog::level::warn, "agent_activation_refused",
                   {{"reason", describe(epoch.error())}}, d->id.str());
        if (code_of(epoch.error()) == errc::agent_not_found) {
          // Another serving node holds it: this node's working copy is stale.
          std::promise<caf::error> erased;
          ctx->db->erase_agent(d->id.str(),
                               [&erased](caf::error err) { erased.set_value(std::move(err)); });
          (void)erased.get_future().get();
        }
        return std::move(epoch.error());
      }
      pos.epoch = *epoch;
    }
    if (auto err = settled())
      return err;
    if (!instance && early && shipped) {
      early_pos.epoch = std::max(pos.epoch, early_pos.epoch);
      pos = std::move(early_pos);
      instance = std::move(early);
    }
    if (!instance) {
      if (persisted) {
        // An activation or a restart: the state is what the store holds.
        auto restored = restore_agent(*ctx, d->id, d->kind, d->config, pos, shipped.get());
        if (!restored) {
          log::event(spdlog::level::err, "agent_restore_failed",
                     {{"reason", describe(restored.error())}}, d->id.str());
          if (ctx->metrics)
            ctx->metrics->storage_failure(to_string(code_of(restored.error())));
          return std::move(restored.error());
        }
        instance = std::move(*restored);
      } else {
        auto made = kind->make(d->config ? *d->config : nlohmann::json::object());
        if (!made)
          return std::move(made.error());
        instance = std::shared_ptr<agent>{std::move(*made)};
      }
    }
    agent_actor_config acfg;
    acfg.id = d->id;
    acfg.kind = d->kind;
    acfg.env = env_for(ctx, persisted ? rep : nullptr);
    acfg.config = d->config;
    acfg.detached = kind->blocking;
    acfg.load = d->load;
    if (persisted) {
      acfg.mode = kind->persistence;
      acfg.resident = kind->resident && kind->persistence == persistence_mode::journaled;
      acfg.position = std::move(pos);
      acfg.parent = caf::actor_cast<caf::actor>(sup);
    }
    // Hibernation (agents.hibernate_idle_ms): on a node with a store (its routing sends calls
    // for an agent without a handle to the supervisor), never for blocking or resident kinds,
    // replicated agents (another node may take over) or agents behind a breaker.
    if (ctx->cfg.agents.hibernate_idle_ms > 0 && ctx->db && !kind->blocking && !kind->resident
        && !rep && !d->breaker
        && !(persisted && kind->persistence == persistence_mode::journaled
             && !ctx->cfg.cluster.listen.empty() && ctx->cfg.replication.factor > 1)) {
      acfg.slot = std::shared_ptr<hibernation_slot>{d, static_cast<hibernation_slot*>(d.get())};
      acfg.parent = caf::actor_cast<caf::actor>(sup);
    }
    return spawn_agent_actor(sup->system(), std::move(acfg), std::move(instance));
  };
  spec.on_started = [d](const caf::actor& handle, uint64_t restarts) {
    auto& breaker = d->breaker;
    if (d->pending && !d->pending->empty()) {
      auto ks = std::move(*d->pending);
      d->pending->clear();
      for (auto& k : ks)
        k(breaker ? breaker : handle);
    }
    d->ctx->dir->set_handles(d->id, handle, breaker ? breaker : handle, restarts);
    if (breaker)
      caf::anon_send(breaker, target_atom::value, handle);
    log::event(spdlog::level::debug, restarts == 0 ? "agent_started" : "agent_restarted",
               {{"restarts", restarts}}, d->id.str());
    if (d->ctx->metrics)
      d->ctx->metrics->events().publish({restarts == 0 ? "agent_started" : "agent_restarted",
                                         d->id.str(),
                                         d->kind,
                                         {{"restarts", restarts}}});
  };
  spec.on_removed = [d](const caf::error& reason) {
    d->ctx->dir->erase(d->id);
    if (d->breaker)
      caf::anon_send_exit(d->breaker, caf::exit_reason::user_shutdown);
    log::event(spdlog::level::info, "agent_stopped", {{"reason", describe(reason)}}, d->id.str());
    if (d->ctx->metrics)
      d->ctx->metrics->events().publish(
        {"agent_stopped", d->id.str(), d->kind, {{"reason", describe(reason)}}});
  };
  return spec;
}

supervisor_flags flags_from(const runtime_context& ctx, std::string name, std::string level) {
  auto& s = ctx.cfg.supervision;
  supervisor_flags f;
  f.name = std::move(name);
  f.level = std::move(level);
  f.strategy = restart_strategy::one_for_one;
  f.intensity_max = s.restart_intensity_max;
  f.period = std::chrono::milliseconds(s.restart_period_ms);
  f.backoff_initial = std::chrono::milliseconds(s.backoff_initial_ms);
  f.backoff_max = std::chrono::milliseconds(s.backoff_max_ms);
  f.jitter_percent = s.backoff_jitter_percent;
  f.metrics = ctx.metrics;
  return f;
}

/// Activation bookkeeping of one tenant supervisor: agents passivating now, each with the
/// messages that arrived meanwhile (re-delivered to the next activation).
struct activation_book {
  std::unordered_map<std::string, std::vector<continuation>> passivating;

  /// A migration out of this node: the agent is out of the directory (calls come here and
  /// wait in `waiting`) until its state is shipped, or the migration is aborted.
  struct migration {
    agent_view view;
    caf::actor agent;
    migrate_job job;
    std::vector<continuation> waiting;
    std::chrono::steady_clock::time_point started;
    /// When the agent handed over its state.
    std::chrono::steady_clock::time_point captured;
    uint64_t token = 0;
    bool shipping = false;
    size_t state_bytes = 0;
    /// Replicated: the replica set was asked to promise the next epoch to the target
    /// (replicator::promise_to), so a move called off takes the promise back.
    bool promise_sent = false;
    /// Why that promise failed: the move is called off once the agent stopped.
    caf::error promise_error;
    /// The epoch promised to the target, and the newest copy the promising members had.
    uint64_t granted_epoch = 0;
    std::pair<uint64_t, uint64_t> newest_copy{0, 0};
    /// The captured state, until it is shipped.
    std::optional<std::string> state;
    /// Every event in it is acknowledged (else the agent's `migrate_settled_atom` tells).
    bool settled = false;
    /// The agent stopped with appends in flight (the pause waited for them).
    bool waited = false;
    /// The agent was asked to stop once no append is in flight (`migrate_hold_atom`) and has
    /// not said yet that it stopped: it is still in the directory.
    bool holding = false;
    /// The agent answered `migrate_go_atom` (its state, or why not): every call that reached
    /// its mailbox before it left the directory has been re-delivered here by then.
    bool agent_drained = false;
    /// Calls that came another way (the root, a router, another node) after the agent left
    /// the directory and before it was drained. They go behind the calls the agent still
    /// re-delivers, which senders made earlier: into `waiting` once it is drained.
    std::vector<continuation> late;
    /// What was shipped: the shipment, and the state's (epoch, seq).
    uint64_t shipment = 0;
    std::pair<uint64_t, uint64_t> shipped_at{0, 0};
  };
  std::unordered_map<std::string, migration> migrating;
  /// Moves whose replicas' promise to the target is being asked for (`ask_promise`): the
  /// agent still serves. Keyed by name: the token and the job.
  std::unordered_map<std::string, std::pair<uint64_t, migrate_job>> preparing;
  /// Forwarders whose entry in `runtime_context::moved` is gone (so new calls by id are
  /// refused here and go to the new node), kept until a marker sent around through the root
  /// comes back (`forward_flush_atom`): calls that found the entry before it went, still on
  /// their way through the root, reach the forwarder too. Keyed by name: forwarder, token.
  std::unordered_map<std::string, std::pair<caf::actor, uint64_t>> closing_forwarders;
  /// Agents that moved away are in `runtime_context::moved`; tokens tell moves apart.
  uint64_t next_token = 1;
  /// A hibernation sweep is due (one timer per tenant supervisor at most).
  bool sweep_scheduled = false;
};

/// Every persistence.passivate_idle_ms while the tenant supervisor has hibernated children.
using hibernation_sweep_atom = caf::atom_constant<caf::atom("hibsweep")>;

/// Schedules the next hibernation sweep of tenant supervisor `self` if it has hibernated
/// children, passivation is on, and none is scheduled.
void schedule_hibernation_sweep(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book) {
  auto period = std::chrono::milliseconds(ctx->cfg.persistence.passivate_idle_ms);
  if (book.sweep_scheduled || period.count() <= 0 || self->state.hibernated_count() == 0)
    return;
  book.sweep_scheduled = true;
  self->delayed_send(self, period, hibernation_sweep_atom::value);
}

/// Passivates the persisted agents of `tenant` that stayed hibernated for one to two
/// passivation periods (so, like running agents, idle for about persistence.passivate_idle_ms
/// or more after they hibernated). Nothing is written: a hibernated agent's state is durable
/// already (journaled: every event; snapshot: its snapshot is current); the next call
/// activates it from the store (a journaled one replays the events after its last snapshot).
void passivate_hibernated(supervisor_actor* self, const ctx_ptr& ctx, const std::string& tenant) {
  for (auto& name : self->state.sweep_hibernated()) {
    auto child = self->state.find_child(name);
    if (child == nullptr || !ctx->persisted(child->spec.kind))
      continue; // an in-memory agent hibernates until it is stopped
    auto kind = child->spec.kind;
    agent_id id{tenant, name};
    (void)self->state.release_child(name); // drops its slot: the state leaves memory
    ctx->db->forget(id.str());
    if (ctx->metrics)
      ctx->metrics->for_kind(kind).passivations->Increment();
    log::event(spdlog::level::debug, "agent_passivating", {{"hibernated", true}}, id.str());
    // Last: whoever sees it gone from the directory sees the metrics of its passivation too
    // (a call finding the entry before has no handle to use: it comes here, after this).
    ctx->dir->erase(id);
  }
}

/// Activates `id` (not running) under `self`, or fails `k`. Runs in the tenant supervisor.
void activate(supervisor_actor* self, const ctx_ptr& ctx, const agent_id& id,
              std::vector<continuation> ks,
              std::shared_ptr<const adopted_state> adopted = nullptr) {
  auto fail_all = [&](const caf::error& err) {
    for (auto& k : ks)
      k(err);
  };
  auto meta = adopted ? caf::expected<std::optional<records::meta_record>>{adopted->meta}
                      : ctx->db->get_meta(id.str());
  if (!meta)
    return fail_all(meta.error());
  if (!*meta) {
    // Failover: this node keeps a replica of an agent whose node is gone.
    auto rep = ctx->rep ? ctx->rep->get() : nullptr;
    if (rep && rep->may_take_over(id)) {
      if (auto err = rep->take_over(id))
        return fail_all(err);
      meta = ctx->db->get_meta(id.str());
      if (!meta)
        return fail_all(meta.error());
    }
  }
  if (!*meta)
    return fail_all(make_error(errc::agent_not_found, "no agent " + id.str()));
  auto view = view_of_meta(*ctx, id, **meta);
  if (ctx->dir->size() >= static_cast<size_t>(ctx->cfg.agents.agents_max))
    return fail_all(make_error(
      errc::overloaded,
      "node runs agents.agents_max = " + std::to_string(ctx->cfg.agents.agents_max) + " agents"));
  if (!ctx->dir->reserve(view))
    return fail_all(make_error(errc::agent_failed, id.str() + " is being created, retry"));
  if (view.has_breaker && ctx->breaker_factory) {
    view.target = ctx->breaker_factory(self->system(), id);
    ctx->dir->set_handles(id, caf::actor{}, view.target, 0);
  } else {
    view.has_breaker = false;
  }
  auto pending = std::make_shared<std::vector<continuation>>(std::move(ks));
  auto started =
    self->state.start_child(agent_child_spec(ctx, view, nullptr, pending, std::move(adopted)));
  if (!started) {
    ctx->dir->erase(id);
    if (view.has_breaker && view.target)
      caf::anon_send_exit(view.target, caf::exit_reason::user_shutdown);
    for (auto& k : *pending)
      k(started.error());
    return;
  }
  if (ctx->metrics)
    ctx->metrics->for_kind(view.kind).activations->Increment();
}

/// How a call came to a tenant supervisor: re-delivered by the agent's activation (which had
/// it in its mailbox), or another way (the root, a router, a forwarder, the supervisor itself).
enum class call_path { other, redelivered };

/// Hands `k` the target of `id`: queued while it passivates or migrates, at once while it
/// runs, after an activation otherwise (of `adopted`, a migration's state, if given).
void with_target(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                 const agent_id& id, continuation k,
                 std::shared_ptr<const adopted_state> adopted = nullptr,
                 call_path path = call_path::other) {
  if (auto m = ctx->moved->find(id.str()))
    return k(m->forwarder);
  if (auto c = book.closing_forwarders.find(id.name); c != book.closing_forwarders.end())
    return k(c->second.first);
  if (auto i = book.migrating.find(id.name); i != book.migrating.end()) {
    auto& m = i->second;
    // Still in the directory: its target (the agent, or its breaker) keeps one order for
    // everyone: the agent serves, or once stopped re-delivers here behind the calls that were
    // in its mailbox before. (None while it restarts: the move is called off at its deadline.)
    if (m.holding) {
      if (auto target = ctx->dir->target_of(id); target && *target)
        return k(*target);
    }
    if (m.waiting.size() + m.late.size()
        >= static_cast<size_t>(ctx->cfg.persistence.activation_queue_messages_max))
      return k(make_error(errc::overloaded,
                          id.str()
                            + " is migrating and holds persistence."
                              "activation_queue_messages_max messages"));
    // A sender's earlier call may still be in the agent's mailbox, to be re-delivered: a
    // later one that came around it waits until the agent is drained.
    if (!m.agent_drained && path == call_path::other)
      m.late.push_back(std::move(k));
    else
      m.waiting.push_back(std::move(k));
    return;
  }
  if (auto p = book.passivating.find(id.name); p != book.passivating.end()) {
    if (p->second.size() >= static_cast<size_t>(ctx->cfg.persistence.activation_queue_messages_max))
      return k(make_error(errc::overloaded,
                          id.str()
                            + " is passivating and holds persistence."
                              "activation_queue_messages_max messages"));
    p->second.push_back(std::move(k));
    return;
  }
  if (auto child = self->state.find_child(id.name); child != nullptr) {
    if (child->state == supervisor_state::phase::hibernated) {
      auto woken = self->state.wake_child(id.name);
      if (!woken)
        return k(std::move(woken.error()));
      return k(*woken);
    }
    auto target = ctx->dir->target_of(id);
    if (target && *target)
      return k(*target);
    return k(make_error(errc::agent_failed, id.str() + " is restarting"));
  }
  std::vector<continuation> ks;
  ks.push_back(std::move(k));
  activate(self, ctx, id, std::move(ks), std::move(adopted));
}

// -- live migration ------------------------------------------------------------------------

using forward_done_atom = caf::atom_constant<caf::atom("hfwddone")>;
using forward_gone_atom = caf::atom_constant<caf::atom("hfwdgone")>;
/// A forwarder had its quiet spell: its supervisor takes its entry (`moved_agents`) and
/// closes it once `forward_flush_atom` came back through the root.
using forward_quiet_atom = caf::atom_constant<caf::atom("hfwdquiet")>;
/// Sent by a tenant supervisor to the root and by the root back to it: every call by id the
/// root passed on before it has reached the supervisor.
using forward_flush_atom = caf::atom_constant<caf::atom("hfwdflush")>;

struct forwarder_state {
  /// Requests to the new node not answered yet (the forwarder quits only without any).
  size_t outstanding = 0;
  bool closing = false;
  /// Asks sent through the remote forwarder, waiting for their answers, by number.
  uint64_t next = 1;
  std::unordered_map<uint64_t, caf::response_promise> waiting;
  /// When the last call came in: the forwarding ends only after a quiet spell.
  /// (The actor clock's time: virtual under the test coordinator; set at the forwarder's start.)
  caf::actor_clock::time_point last_call;
  static inline const char* name = "hive.forwarder";
};

using forwarder_actor = caf::stateful_actor<forwarder_state>;

/// Calls for an agent that moved away go on to node `to` as `remote_call`s, in arrival order:
/// through `ctx->forwarder` when set (the call transport), else to `remote` (what the ship
/// function returned). `migrate_expire_atom` ends the forwarding once no call came for
/// `cluster.migration_forward_ms` and none is queued (otherwise it asks again after the rest of
/// that spell): the forwarder removes its `moved` entry itself (so every call handed to it
/// before is still sent, and in order, ahead of anything sent to the new node afterwards),
/// then quits once every forwarded ask is answered; the end of `owner` (its tenant supervisor)
/// ends it too. A sender that keeps using the old location keeps its order this way: its calls
/// switch from the forwarder to the relay of the cluster (see cluster.cpp) only after a pause.
caf::behavior forwarder_fn(forwarder_actor* self, caf::actor remote, agent_id id, caf::actor owner,
                           std::string to, const ctx_ptr& ctx, uint64_t token) {
  self->state.last_call = self->clock().now();
  self->monitor(owner);
  self->set_down_handler([self](caf::down_msg&) { self->quit(); });
  auto maybe_quit = [self] {
    if (self->state.closing && self->state.outstanding == 0)
      self->quit();
  };
  auto finish = [self, maybe_quit](caf::response_promise& rp, auto&& result) {
    rp.deliver(std::forward<decltype(result)>(result));
    --self->state.outstanding;
    maybe_quit();
  };
  // The answer to forwarded ask `n` (sent through the remote forwarder).
  auto settle = [self, finish](uint64_t n, auto&& result) {
    if (auto i = self->state.waiting.find(n); i != self->state.waiting.end()) {
      auto rp = std::move(i->second);
      self->state.waiting.erase(i);
      finish(rp, std::forward<decltype(result)>(result));
    }
  };
  return {
    [self, remote, id, to, forwarder = ctx->forwarder, finish](agent_call& call) {
      self->state.last_call = self->clock().now();
      auto via = forwarder->get();
      if (!self->current_mailbox_element()->mid.is_request()) {
        if (via)
          (*via)(to, remote_call{"tell", id, std::move(call), 0}, nullptr);
        else
          self->send(remote, remote_call{"tell", id, std::move(call), 0});
        return;
      }
      // The caller keeps its own deadline; this one only bounds the forwarder's wait.
      std::chrono::milliseconds timeout{30000};
      if (call.env.deadline_unix_ms != 0)
        timeout = std::clamp(std::chrono::milliseconds(call.env.deadline_unix_ms - unix_ms_now()),
                             std::chrono::milliseconds{1}, timeout);
      auto rp = self->make_response_promise();
      ++self->state.outstanding;
      if (via) {
        auto n = self->state.next++;
        self->state.waiting.emplace(n, rp);
        (*via)(to, remote_call{"ask", id, std::move(call), timeout.count()},
               [me = caf::actor_cast<caf::actor>(self), n](caf::expected<std::string> r) {
                 if (r)
                   caf::anon_send(me, forward_done_atom::value, n, agent_reply{std::move(*r)});
                 else
                   caf::anon_send(me, forward_done_atom::value, n, std::move(r.error()));
               });
        return;
      }
      self
        ->request(remote, timeout + std::chrono::seconds(1),
                  remote_call{"ask", id, std::move(call), timeout.count()})
        .then([rp, finish](agent_reply& reply) mutable { finish(rp, std::move(reply)); },
              [rp, finish](caf::error& err) mutable { finish(rp, std::move(err)); });
    },
    [settle](forward_done_atom, uint64_t n, agent_reply& reply) { settle(n, std::move(reply)); },
    [settle](forward_done_atom, uint64_t n, caf::error& err) { settle(n, std::move(err)); },
    [](agent_reply&) {}, // the answers to forwarded tells
    [](caf::error&) {},
    [self, id, owner, moved = ctx->moved, token,
     quiet_min =
       std::chrono::milliseconds(ctx->cfg.cluster.migration_forward_ms)](migrate_expire_atom) {
      auto mine = moved->find(id.str());
      if (mine && mine->token == token) {
        // Still in use (or calls queued behind this message): ask again after a quiet spell.
        auto quiet = std::chrono::duration_cast<std::chrono::milliseconds>(self->clock().now()
                                                                           - self->state.last_call);
        if (quiet < quiet_min || !self->mailbox().empty()) {
          auto rest = std::max(std::chrono::milliseconds{1}, quiet_min - quiet);
          self->delayed_send(owner, rest, migrate_expire_atom::value, id, token);
          return;
        }
        // The supervisor takes the entry (new calls by id are refused from then on) and
        // closes this forwarder only after the calls that found the entry before, still on
        // their way through the root, have come here.
        self->send(owner, forward_quiet_atom::value, id, token);
        return;
      }
      // Taken already: the agent came back here (see adopt_atom).
      self->send(self, forward_gone_atom::value);
    },
    [self, maybe_quit](forward_gone_atom) {
      self->state.closing = true;
      maybe_quit();
    },
  };
}

/// What `take_promise_back` did: the agent's new epoch (0: none, it goes on at its old one),
/// and whether the working copy was replaced by a newer copy (the agent reloads it).
struct promise_taken_back {
  uint64_t epoch = 0;
  bool replaced = false;
};

/// A move called off after its state went out (`m.shipping`): the target may have had a
/// majority of the replica set promise it a newer epoch before it failed (its promise round
/// goes out as the state arrives, replicator::begin_handover), or before it refused a settle.
/// Going on at the old epoch, the agent's next write would be fenced: it would stand down and
/// drop its working copy, while the promise names a node that never ran it and still serves
/// calls, so no member would activate it again. The source takes the promise back first, the
/// way a migration's target takes it over (without the check for another holder), at an epoch
/// above any promised (at least above `above`, the one the source itself asked for: a
/// member that made that promise alone refuses the same epoch for this node). Blocks the
/// tenant supervisor for the rounds, as an activation does.
/// Nothing to take back (not replicated), or the rounds failed (logged): epoch 0, and the
/// agent goes on at its old epoch, as before.
promise_taken_back take_promise_back(const ctx_ptr& ctx, const agent_id& id,
                                     const std::string& kind, uint64_t above) {
  auto* k = ctx->kinds->find(kind);
  auto rep = ctx->rep ? ctx->rep->get() : nullptr;
  if (k == nullptr || k->persistence != persistence_mode::journaled || !rep)
    return {};
  auto meta = running_meta(*ctx->db, id.str());
  if (!meta || !*meta) {
    log::event(spdlog::level::err, "agent_promise_not_taken_back",
               {{"reason", meta ? "no stored meta" : describe(meta.error())}}, id.str());
    return {};
  }
  rep->expect_handover(id, (*meta)->hdr.epoch);
  replicator::activation_hints hints;
  auto epoch = rep->acquire(id, **meta, std::max(ctx->db->next_epoch(), above + 1), false, &hints);
  if (!epoch) {
    log::event(spdlog::level::err, "agent_promise_not_taken_back",
               {{"reason", describe(epoch.error())}}, id.str());
    return {};
  }
  // (Replaced: a copy newer than this node's working copy, which only an activation elsewhere
  // could have written. The promise is this node's now, so the agent goes on at the new epoch,
  // from what the store holds.)
  log::event(hints.replaced ? spdlog::level::warn : spdlog::level::info, "agent_promise_taken_back",
             {{"epoch", *epoch}, {"replaced", hints.replaced}}, id.str());
  return {*epoch, hints.replaced};
}

/// The agent of move `m` answered `migrate_go_atom`: what it had in its mailbox before it left
/// the directory is re-delivered (it sends to its supervisor in order), so the calls that came
/// around it queue from now on, behind those.
void agent_drained(activation_book::migration& m) {
  if (m.agent_drained)
    return;
  m.agent_drained = true;
  for (auto& k : m.late)
    m.waiting.push_back(std::move(k));
  m.late.clear();
}

/// Puts a migrating agent back: it goes on here, the stash first.
void abort_migration(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                     const agent_id& id, caf::error why) {
  auto i = book.migrating.find(id.name);
  if (i == book.migrating.end())
    return;
  auto m = std::move(i->second);
  book.migrating.erase(i);
  agent_drained(m); // (if it never answers, the calls that came around it wait no longer)
  auto child = self->state.find_child(id.name);
  caf::actor agent = child != nullptr ? child->handle : caf::actor{};
  if (agent) {
    // Before the stash: the agent takes calls again once it sees this (at its new epoch, if
    // it has one).
    // (The promise to the target may have reached members before the move was called off,
    // whether or not the state went out.)
    auto promised = m.promise_sent;
    auto back = m.shipping || promised
      ? take_promise_back(ctx, id, m.view.kind, m.job.promise_epoch)
      : promise_taken_back{};
    self->send(agent, migrate_end_atom::value, false, back.epoch, back.replaced);
  }
  auto view = m.view;
  view.agent = agent;
  if (!view.has_breaker)
    view.target = agent;
  if (child != nullptr) {
    (void)ctx->dir->reserve(view);
    ctx->dir->set_handles(id, view.agent, view.target, view.restarts);
  }
  for (auto& k : m.waiting) {
    if (child == nullptr)
      k(make_error(errc::agent_failed, id.str() + " stopped while migrating"));
    else if (view.target)
      k(view.target);
    else
      k(make_error(errc::agent_failed, id.str() + " is restarting"));
  }
  if (ctx->metrics)
    ctx->metrics->migration(false, 0);
  log::event(spdlog::level::warn, "agent_migration_aborted",
             {{"to", m.job.to}, {"reason", describe(why)}}, id.str());
  m.job.done(std::move(why));
}

/// The state is stored and active on the new node: forward the stash and later calls there.
void finish_migration(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                      const agent_id& id, const caf::actor& remote) {
  auto i = book.migrating.find(id.name);
  if (i == book.migrating.end())
    return;
  auto m = std::move(i->second);
  book.migrating.erase(i);
  agent_drained(m); // (it answered before its state could ship)
  (void)self->state.release_child(id.name);
  if (m.view.has_breaker && m.view.target)
    caf::anon_send_exit(m.view.target, caf::exit_reason::user_shutdown);
  auto token = book.next_token++;
  auto fwd = self->system().spawn(forwarder_fn, remote, id, caf::actor_cast<caf::actor>(self),
                                  m.job.to, ctx, token);
  auto held = m.waiting.size();
  // The stash goes into the forwarder's mailbox before anyone else can find the forwarder:
  // a tell on another thread (node_runtime::activate_then) that finds the moved entry must
  // queue behind the stashed calls, never overtake them.
  for (auto& k : m.waiting)
    k(fwd);
  m.waiting.clear();
  // The forwarder is in place before the record goes: a call that finds no record here
  // (node_runtime::tell on another thread) then finds the forwarder, never "not found".
  ctx->moved->put(id.str(), {fwd, m.job.to, token});
  ctx->db->erase_agent(id.str(), [id](caf::error err) {
    if (err)
      log::event(spdlog::level::err, "migrated_agent_not_erased", {{"reason", describe(err)}},
                 id.str());
  });
  self->delayed_send(self, std::chrono::milliseconds(ctx->cfg.cluster.migration_forward_ms),
                     migrate_expire_atom::value, id, token);
  if (m.agent)
    self->send(m.agent, migrate_end_atom::value, true, uint64_t{0}, false);
  using ms = std::chrono::duration<double, std::milli>;
  auto now = std::chrono::steady_clock::now();
  migration_result r;
  r.from = ctx->cfg.node.name;
  r.to = m.job.to;
  r.moved = true;
  r.pause_ms = ms(now - m.started).count();
  r.held_calls = held;
  r.state_bytes = m.state_bytes;
  r.capture_ms = ms(m.captured - m.started).count();
  r.waited_for_appends = m.waited;
  if (ctx->metrics)
    ctx->metrics->migration(true, r.pause_ms / 1000.0);
  log::event(spdlog::level::info, "agent_migrated",
             {{"to", m.job.to},
              {"pause_ms", r.pause_ms},
              {"held_calls", r.held_calls},
              {"capture_ms", r.capture_ms},
              {"waited_for_appends", r.waited_for_appends},
              {"state_bytes", m.state_bytes}},
             id.str());
  if (ctx->metrics)
    ctx->metrics->events().publish({"agent_migrated",
                                    id.str(),
                                    {},
                                    {{"from", ctx->cfg.node.name},
                                     {"to", m.job.to},
                                     {"pause_ms", r.pause_ms},
                                     {"state_bytes", m.state_bytes}}});
  m.job.done(std::move(r));
}

/// A replicated agent's move, before its pause: the replica set promises the next epoch to
/// the target while the agent still serves, writing at its epoch (replicator::promise_to).
/// The outcome comes back to the supervisor (`migrate_promised_atom`), which starts the move
/// again with it.
void ask_promise(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                 const caf::actor& agent, migrate_job job) {
  auto id = job.id;
  auto token = book.next_token++;
  auto to = job.to;
  book.preparing.emplace(id.name, std::make_pair(token, std::move(job)));
  auto sup = caf::actor_cast<caf::actor>(self);
  auto back = [sup, id, token](caf::error err) {
    caf::anon_send(sup, migrate_promised_atom::value, id, token, std::move(err));
  };
  self->request(agent, caf::infinite, migrate_epoch_atom::value)
    .then(
      [bookp = &book, ctx, id, to, back, sup, token](uint64_t epoch) {
        // (The book lives as long as the supervisor's behavior, which runs this.)
        if (auto i = bookp->preparing.find(id.name);
            i != bookp->preparing.end() && i->second.first == token)
          i->second.second.promise_epoch = epoch + 1;
        auto rep = ctx->rep ? ctx->rep->get() : nullptr;
        auto meta = running_meta(*ctx->db, id.str());
        if (!rep || !meta || !*meta)
          return back(!rep     ? make_error(errc::unavailable, "this node's replication stopped")
                        : meta ? make_error(errc::agent_not_found, "no stored meta of " + id.str())
                               : std::move(meta.error()));
        rep->promise_to(id, **meta, epoch, to,
                        [sup, id, token](caf::expected<replicator::grant> g) {
                          if (!g)
                            return caf::anon_send(sup, migrate_promised_atom::value, id, token,
                                                  std::move(g.error()));
                          caf::anon_send(sup, migrate_promised_atom::value, id, token, g->epoch,
                                         g->newest_epoch, g->newest_seq);
                        });
      },
      [bookp = &book, id, token](caf::error& err) {
        // Nothing was asked of the replicas: the move fails as it is.
        auto i = bookp->preparing.find(id.name);
        if (i == bookp->preparing.end() || i->second.first != token)
          return;
        auto job = std::move(i->second.second);
        bookp->preparing.erase(i);
        job.done(std::move(err));
      });
}

/// Starts moving `job.id` away (tenant supervisor): activated first if only stored.
void begin_pause(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                 const agent_id& id, std::chrono::steady_clock::time_point stopped);

void start_migration(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                     migrate_job job) {
  auto id = job.id; // (a copy: `job` moves into the book below)
  if (auto mv = ctx->moved->find(id.str()))
    return job.done(make_error(errc::agent_not_found, id.str() + " moved to " + mv->to));
  if (book.migrating.count(id.name) > 0 || book.preparing.count(id.name) > 0)
    return job.done(make_error(errc::conflict, id.str() + " is migrating already"));
  auto child = self->state.find_child(id.name);
  if (child == nullptr || book.passivating.count(id.name) > 0
      || child->state == supervisor_state::phase::hibernated) {
    // Stored only (or passivating, or hibernated): activate it, then start again.
    return with_target(self, ctx, book, id, [self, job](caf::expected<caf::actor> t) mutable {
      if (!t)
        return job.done(std::move(t.error()));
      self->send(self, migrate_atom::value, std::move(job));
    });
  }
  if (!child->handle)
    return job.done(make_error(errc::agent_failed, id.str() + " is restarting"));
  if (!job.promise_asked && ctx->rep && ctx->rep->get()) {
    auto view = ctx->dir->find(id);
    auto* kind = view ? ctx->kinds->find(view->kind) : nullptr;
    if (kind != nullptr && kind->persistence == persistence_mode::journaled)
      return ask_promise(self, ctx, book, child->handle, std::move(job));
  }
  auto view = ctx->dir->find(id);
  if (!view)
    return job.done(make_error(errc::internal, id.str() + " runs but is not in the directory"));
  if (!ctx->persisted(view->kind))
    return job.done(make_error(errc::invalid_argument,
                               id.str() + " is of kind '" + view->kind
                                 + "', which keeps no state to move (ephemeral)"));
  auto token = book.next_token++;
  activation_book::migration m;
  m.view = std::move(*view);
  m.agent = child->handle;
  m.job = std::move(job);
  m.started = std::chrono::steady_clock::now();
  m.token = token;
  if (m.job.promise_asked) {
    // Replicated: the replicas' promise to the target is in (or failed) before the pause.
    m.promise_sent = true;
    if (m.job.promise) {
      m.granted_epoch = m.job.promise->epoch;
      m.newest_copy = {m.job.promise->newest_epoch, m.job.promise->newest_seq};
    } else {
      m.promise_error = m.job.promise.error();
    }
  }
  // A state that never comes (the agent crashed and restarted) must not hold calls forever.
  self->delayed_send(self, std::chrono::milliseconds(ctx->cfg.cluster.migration_timeout_ms),
                     migrate_check_atom::value, id, token);
  auto wait = ctx->cfg.cluster.migration_quiet_wait_ms;
  auto& entry = book.migrating.emplace(id.name, std::move(m)).first->second;
  if (wait > 0 && !entry.promise_error) {
    // The agent serves on until none of its writes is in flight, and stops there
    // (migrate_held_atom): the pause then holds no wait for an acknowledgement. Calls that
    // reach it after it stopped are stashed here (redeliver_atom, with_target).
    entry.holding = true;
    self->send(entry.agent, migrate_hold_atom::value, token, static_cast<uint64_t>(wait));
    return;
  }
  begin_pause(self, ctx, book, id, entry.started);
}

/// The agent of move `id` stopped at `stopped` (or is told to stop now): it leaves the
/// directory, so that calls wait in the stash from now on, and hands its state over.
void begin_pause(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                 const agent_id& id, std::chrono::steady_clock::time_point stopped) {
  auto i = book.migrating.find(id.name);
  assert(i != book.migrating.end());
  auto& m = i->second;
  auto view = ctx->dir->erase(id);
  if (!view)
    return abort_migration(
      self, ctx, book, id,
      make_error(errc::internal, id.str() + " stopped for its move but is not in the directory"));
  m.view = std::move(*view);
  m.holding = false;
  m.started = stopped;
  migrate_quiet quiet;
  // With a grant function the state goes at once, ahead of the agent's last appends (the grant
  // follows once they are acknowledged).
  quiet.ship_now = m.granted_epoch != 0 && static_cast<bool>(m.job.grant);
  self->send(m.agent, migrate_go_atom::value, std::move(quiet));
}

/// The replicas' promise for a move being prepared (`ask_promise`) came in, or failed: the
/// move goes on with it. (Failed: some members may have promised; the move goes on until the
/// agent stopped, and is then called off, the promise taken back.)
void promise_came(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                  const agent_id& id, uint64_t token, caf::expected<replicator::grant> promise) {
  auto i = book.preparing.find(id.name);
  if (i == book.preparing.end() || i->second.first != token)
    return;
  auto job = std::move(i->second.second);
  book.preparing.erase(i);
  job.promise_asked = true;
  job.promise = std::move(promise);
  start_migration(self, ctx, book, std::move(job));
}

/// Every acknowledged write is in the shipped state, and nothing can have been written after
/// it at another epoch without fencing this activation first: a promising member's copy newer
/// than the state means something is wrong, so the move is called off.
caf::error newer_copy_than_shipped(const agent_id& id, const activation_book::migration& m) {
  if (m.granted_epoch == 0 || m.newest_copy <= m.shipped_at)
    return {};
  return make_error(
    errc::conflict,
    "a replica of " + id.str() + " is at epoch " + std::to_string(m.newest_copy.first) + ", seq "
      + std::to_string(m.newest_copy.second) + ", newer than the state captured here (epoch "
      + std::to_string(m.shipped_at.first) + ", seq " + std::to_string(m.shipped_at.second) + ")");
}

/// Ships the captured state with its meta (replicated: at the epoch the replicas promised
/// the target, granted now if every event in it is acknowledged, else once they are).
void ship_if_ready(supervisor_actor* self, const ctx_ptr& ctx, activation_book& book,
                   const agent_id& id) {
  auto i = book.migrating.find(id.name);
  if (i == book.migrating.end() || i->second.shipping || !i->second.state)
    return;
  if (i->second.promise_error)
    return abort_migration(self, ctx, book, id, i->second.promise_error);
  auto state = std::move(*i->second.state);
  i->second.state.reset();
  if (i->second.promise_sent) {
    auto snap = records::decode_snapshot(state);
    if (!snap)
      return abort_migration(self, ctx, book, id, std::move(snap.error()));
    i->second.shipped_at = {snap->hdr.epoch, snap->hdr.seq};
    if (snap->hdr.epoch + 1 != i->second.granted_epoch)
      // (It was activated again since its epoch was read: the promise is not for this one.)
      return abort_migration(self, ctx, book, id,
                             make_error(errc::conflict,
                                        id.str() + " runs at epoch "
                                          + std::to_string(snap->hdr.epoch)
                                          + ", not the one its replicas promised epoch "
                                          + std::to_string(i->second.granted_epoch) + " after"));
    if (auto err = newer_copy_than_shipped(id, i->second))
      return abort_migration(self, ctx, book, id, std::move(err));
  }
  auto meta = running_meta(*ctx->db, id.str());
  if (!meta || !*meta)
    return abort_migration(self, ctx, book, id,
                           meta ? make_error(errc::agent_not_found, "no stored meta of " + id.str())
                                : std::move(meta.error()));
  if (i->second.job.pin)
    (*meta)->pinned = true;
  i->second.shipping = true;
  i->second.state_bytes = state.size();
  auto sup = caf::actor_cast<caf::actor>(self);
  migration_payload payload{id, records::encode(**meta), std::move(state), new_shipment_id()};
  payload.granted_epoch = !i->second.promise_sent ? 0
    : i->second.settled                           ? i->second.granted_epoch
                                                  : migration_payload::grant_follows;
  i->second.shipment = payload.shipment;
  i->second.job.ship(std::move(payload), [sup, id](caf::expected<caf::actor> r) {
    if (r)
      caf::anon_send(sup, migrate_shipped_atom::value, id, std::move(*r));
    else
      caf::anon_send(sup, migrate_shipped_atom::value, id, std::move(r.error()));
  });
}

/// Tenant supervisors accept spawns and stops of their agents, activate persisted agents on
/// demand and passivate idle ones.
supervisor_extension tenant_extension(const ctx_ptr& ctx, const std::string& tenant) {
  auto book = std::make_shared<activation_book>();
  return [ctx, book, tenant](supervisor_actor* self) -> caf::message_handler {
    return {
      [self, ctx](spawn_agent_atom, spawn_job& job) {
        auto spec = agent_child_spec(ctx, job.view, std::move(job.first_instance));
        auto started = self->state.start_child(std::move(spec));
        if (!started) {
          fail_spawn(*ctx, job, std::move(started.error()));
          return;
        }
        auto view = ctx->dir->find(job.view.id);
        if (!view) {
          job.done(make_error(errc::agent_failed, job.view.id.str() + " exited during spawn"));
          return;
        }
        job.done(std::move(*view));
      },
      [self](stop_agent_atom, stop_job& job) {
        job.done(self->state.terminate_child(job.id.name));
      },
      [self, ctx, book](activate_atom, activate_job& job) {
        with_target(self, ctx, *book, job.id, std::move(job.then));
      },
      [self, ctx, book](migrate_atom, migrate_job& job) {
        start_migration(self, ctx, *book, std::move(job));
      },
      [self, ctx, book](migrate_held_atom, const agent_id& id, uint64_t token, int64_t stopped_ns) {
        auto i = book->migrating.find(id.name);
        if (i == book->migrating.end() || i->second.token != token || !i->second.holding)
          return;
        begin_pause(self, ctx, *book, id,
                    std::chrono::steady_clock::time_point{std::chrono::nanoseconds{stopped_ns}});
      },
      [self, ctx, book](migrate_state_atom, const agent_id& id, std::string& state, bool settled,
                        bool waited) {
        auto i = book->migrating.find(id.name);
        if (i == book->migrating.end() || i->second.holding)
          return;
        agent_drained(i->second);
        if (i->second.shipping || i->second.state)
          return;
        i->second.captured = std::chrono::steady_clock::now();
        i->second.state = std::move(state);
        i->second.settled = settled;
        i->second.waited = waited;
        ship_if_ready(self, ctx, *book, id);
      },
      [book](migrate_settled_atom, const agent_id& id, caf::error& err) {
        // The state went ahead of the agent's last appends: the target waits for this.
        auto i = book->migrating.find(id.name);
        if (i == book->migrating.end() || !i->second.shipping || i->second.settled)
          return;
        auto& m = i->second;
        m.settled = true;
        if (!m.job.grant)
          return;
        // (A refusal makes its adoption fail; its answer then calls the move off here, the
        // promise taken back.)
        m.job.grant(id, m.shipment,
                    err ? caf::expected<uint64_t>{std::move(err)}
                        : caf::expected<uint64_t>{m.granted_epoch});
      },
      [self, ctx, book](migrate_promised_atom, const agent_id& id, uint64_t token, uint64_t epoch,
                        uint64_t newest_epoch, uint64_t newest_seq) {
        promise_came(self, ctx, *book, id, token,
                     replicator::grant{epoch, newest_epoch, newest_seq});
      },
      [self, ctx, book](migrate_promised_atom, const agent_id& id, uint64_t token,
                        caf::error& err) {
        promise_came(self, ctx, *book, id, token, std::move(err));
      },
      [self, ctx, book](migrate_state_atom, const agent_id& id, caf::error& err) {
        abort_migration(self, ctx, *book, id, std::move(err));
      },
      [self, ctx, book](migrate_shipped_atom, const agent_id& id, const caf::actor& remote) {
        finish_migration(self, ctx, *book, id, remote);
      },
      [self, ctx, book](migrate_shipped_atom, const agent_id& id, caf::error& err) {
        abort_migration(self, ctx, *book, id, std::move(err));
      },
      [self, ctx, book](migrate_check_atom, const agent_id& id, uint64_t token) {
        auto i = book->migrating.find(id.name);
        if (i != book->migrating.end() && i->second.token == token && !i->second.shipping)
          abort_migration(self, ctx, *book, id,
                          make_error(errc::timeout,
                                     id.str()
                                       + " did not hand over its state within "
                                         "cluster.migration_timeout_ms"));
      },
      [ctx](migrate_expire_atom, const agent_id& id, uint64_t token) {
        // The forwarder checks its quiet spell (see forwarder_fn).
        if (auto m = ctx->moved->find(id.str()); m && m->token == token)
          caf::anon_send(m->forwarder, migrate_expire_atom::value);
      },
      [self, ctx, book](forward_quiet_atom, const agent_id& id, uint64_t token) {
        auto m = ctx->moved->find(id.str());
        if (!m || m->token != token)
          return; // taken by an adoption, which closed the forwarder
        (void)ctx->moved->take(id.str(), token);
        // A tell that found the entry before this is accepted and may still be in the root's
        // mailbox: it must reach the forwarder, not an activation that fails.
        auto root = caf::actor_cast<caf::actor>(ctx->root);
        if (!root) {
          caf::anon_send(m->forwarder, forward_gone_atom::value);
          return;
        }
        book->closing_forwarders[id.name] = {m->forwarder, token};
        self->send(root, forward_flush_atom::value, id, token);
      },
      [book](forward_flush_atom, const agent_id& id, uint64_t token) {
        // Every call the root passed on before the marker is here and went to the forwarder.
        auto c = book->closing_forwarders.find(id.name);
        if (c == book->closing_forwarders.end() || c->second.second != token)
          return;
        caf::anon_send(c->second.first, forward_gone_atom::value);
        book->closing_forwarders.erase(c);
      },
      [self, ctx, book](adopt_atom, adopt_job& job) {
        // It came back (or here for the first time): calls are served here again.
        if (auto fwd = ctx->moved->take(job.id.str()))
          caf::anon_send(*fwd, migrate_expire_atom::value);
        if (auto c = book->closing_forwarders.find(job.id.name);
            c != book->closing_forwarders.end()) {
          caf::anon_send(c->second.first, forward_gone_atom::value);
          book->closing_forwarders.erase(c);
        }
        // The answer goes out from this supervisor's next message, not from the activation's
        // continuations: those run before the directory publishes the agent (agent_child_spec,
        // on_started), and the source forwards its stash on this answer. A forwarded call that
        // arrived before the directory had the agent would take the slower way through this
        // supervisor, and a later call could overtake it (cluster_test's order check across a
        // move saw it).
        auto me = caf::actor_cast<caf::actor>(self);
        with_target(
          self, ctx, *book, job.id,
          [me, done = std::move(job.done)](caf::expected<caf::actor> t) mutable {
            caf::anon_send(me, deferred_call{[done = std::move(done), t = std::move(t)]() mutable {
                             done(std::move(t));
                           }});
          },
          std::move(job.adopted));
      },
      [](deferred_call& d) { d.run(); },
      [self, ctx, book](passivate_req_atom, const agent_id& id, const caf::actor& agent) {
        auto child = self->state.find_child(id.name);
        if (child == nullptr || child->handle != agent || book->passivating.count(id.name)
            || book->migrating.count(id.name))
          return;
        // From now on new messages find no target and come here (activate_atom): they wait
        // in the book until the state is written, then go to the next activation.
        auto view = ctx->dir->erase(id);
        if (view && view->has_breaker && view->target)
          caf::anon_send_exit(view->target, caf::exit_reason::user_shutdown);
        book->passivating.emplace(id.name, std::vector<continuation>{});
        self->send(agent, passivate_go_atom::value);
      },
      [self, ctx](fenced_atom, const agent_id& id, bool fenced) {
        // A newer activation elsewhere holds the replicas: forget this one, no restart, and
        // drop the stale working copy (calls find the agent on its new node).
        (void)self->state.release_child(id.name);
        auto view = ctx->dir->erase(id);
        if (view && view->has_breaker && view->target)
          caf::anon_send_exit(view->target, caf::exit_reason::user_shutdown);
        if (!fenced)
          return; // stood down (no majority): the next activation asks a majority again
        ctx->db->erase_agent(id.str(), [id](caf::error err) {
          if (err)
            log::event(spdlog::level::warn, "fenced_copy_not_erased", {{"reason", describe(err)}},
                       id.str());
        });
      },
      [self, ctx, book](hibernate_req_atom, const agent_id& id, const caf::actor& agent) {
        auto child = self->state.find_child(id.name);
        if (child == nullptr || child->handle != agent || book->passivating.count(id.name)
            || book->migrating.count(id.name))
          return;
        // From now on calls find no handle and come here: they wait in the book (as for a
        // passivation) until the agent has left its state in its slot.
        ctx->dir->set_handles(id, caf::actor{}, caf::actor{}, child->restarts);
        book->passivating.emplace(id.name, std::vector<continuation>{});
        self->send(agent, hibernate_go_atom::value);
      },
      [self, ctx, book](hibernated_atom, const agent_id& id, bool hibernated,
                        const caf::actor& agent) {
        auto p = book->passivating.find(id.name);
        if (p == book->passivating.end())
          return;
        auto waiting = std::move(p->second);
        book->passivating.erase(p);
        auto child = self->state.find_child(id.name);
        if (!hibernated || child == nullptr || child->handle != agent) {
          // Busy again (it kept its state): it goes on as it was.
          if (child != nullptr && child->handle == agent)
            ctx->dir->set_handles(id, agent, agent, child->restarts);
          for (auto& k : waiting)
            k(agent);
          return;
        }
        if (auto err = self->state.hibernate_child(id.name, agent)) {
          for (auto& k : waiting)
            k(err);
          return;
        }
        if (waiting.empty()) {
          ctx->dir->set_hibernated(id);
          schedule_hibernation_sweep(self, ctx, *book);
          return;
        }
        // Calls came meanwhile: wake it at once.
        auto woken = self->state.wake_child(id.name);
        for (auto& k : waiting)
          k(woken ? caf::expected<caf::actor>{*woken} : caf::expected<caf::actor>{woken.error()});
      },
      [self, ctx, book, tenant](hibernation_sweep_atom) {
        book->sweep_scheduled = false;
        passivate_hibernated(self, ctx, tenant);
        schedule_hibernation_sweep(self, ctx, *book);
      },
      [self, ctx, book](passivated_atom, const agent_id& id) {
        // The agent quits by itself: forget it without a restart.
        (void)self->state.release_child(id.name);
        auto p = book->passivating.find(id.name);
        if (p == book->passivating.end())
          return;
        auto waiting = std::move(p->second);
        book->passivating.erase(p);
        if (!waiting.empty())
          activate(self, ctx, id, std::move(waiting));
      },
      [self, ctx, book](redeliver_atom, const agent_id& id, agent_call& call) {
        // Delegated by a passivating agent: the original sender and request id come along.
        bool is_request = self->current_mailbox_element()->mid.is_request();
        auto rp = self->make_response_promise();
        with_target(
          self, ctx, *book, id,
          [self, rp, is_request, call = std::move(call)](caf::expected<caf::actor> target) mutable {
            if (!target) {
              if (is_request)
                rp.deliver(std::move(target.error()));
              return;
            }
            if (!is_request) {
              caf::anon_send(*target, std::move(call));
              return;
            }
            self->request(*target, caf::infinite, std::move(call))
              .then([rp](agent_reply& reply) mutable { rp.deliver(std::move(reply)); },
                    [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
          },
          nullptr, call_path::redelivered);
      },
    };
  };
}

/// The child spec of a tenant supervisor under the root. On a restart (after the tenant
/// escalated) it re-creates every agent of the tenant that the directory still lists.
child_spec tenant_child_spec(const ctx_ptr& ctx, const std::string& tenant) {
  child_spec spec;
  spec.id = tenant_child_id(tenant);
  spec.restart = restart_type::permanent;
  spec.start = [ctx, tenant](caf::local_actor* sup) -> caf::expected<caf::actor> {
    std::vector<child_spec> children;
    // Only agents that ran before: a reservation still in flight arrives as its own spawn.
    for (auto& view : ctx->dir->tenant_agents(tenant))
      if (view.activated)
        children.push_back(agent_child_spec(ctx, view, nullptr));
    return spawn_supervisor(sup, flags_from(*ctx, tenant_child_id(tenant), "tenant"),
                            std::move(children), tenant_extension(ctx, tenant));
  };
  return spec;
}

/// The supervisor of `tenant` under the root `self`, started if missing.
caf::expected<caf::actor> tenant_supervisor(supervisor_actor* self, const ctx_ptr& ctx,
                                            const std::string& tenant) {
  auto child = self->state.find_child(tenant_child_id(tenant));
  caf::actor sup;
  if (child == nullptr) {
    auto started = self->state.start_child(tenant_child_spec(ctx, tenant));
    if (!started)
      return std::move(started.error());
    sup = *started;
  } else {
    sup = child->handle;
  }
  if (!sup)
    return make_error(errc::agent_failed,
                      "supervisor of tenant '" + tenant + "' is restarting, retry shortly");
  return sup;
}

/// The root supervisor routes spawns and stops to tenant supervisors, creating them on demand.
supervisor_extension root_extension(const ctx_ptr& ctx) {
  return [ctx](supervisor_actor* self) -> caf::message_handler {
    return {
      [self, ctx](spawn_agent_atom, spawn_job& job) {
        auto sup = tenant_supervisor(self, ctx, job.view.id.tenant);
        if (!sup)
          return fail_spawn(*ctx, job, std::move(sup.error()));
        self->send(*sup, spawn_agent_atom::value, std::move(job));
      },
      [self](stop_agent_atom, stop_job& job) {
        auto child = self->state.find_child(tenant_child_id(job.id.tenant));
        if (child == nullptr || !child->handle) {
          job.done(make_error(errc::agent_not_found, "no agent " + job.id.str()));
          return;
        }
        self->send(child->handle, stop_agent_atom::value, std::move(job));
      },
      [self, ctx](activate_atom, activate_job& job) {
        auto sup = tenant_supervisor(self, ctx, job.id.tenant);
        if (!sup)
          return job.then(std::move(sup.error()));
        self->send(*sup, activate_atom::value, std::move(job));
      },
      [self, ctx](forward_flush_atom, const agent_id& id, uint64_t token) {
        // Back to the tenant supervisor behind the calls passed on before it (see above).
        if (auto sup = tenant_supervisor(self, ctx, id.tenant))
          self->send(*sup, forward_flush_atom::value, id, token);
      },
      [self, ctx](migrate_atom, migrate_job& job) {
        auto sup = tenant_supervisor(self, ctx, job.id.tenant);
        if (!sup)
          return job.done(std::move(sup.error()));
        self->send(*sup, migrate_atom::value, std::move(job));
      },
      [self, ctx](adopt_atom, adopt_job& job) {
        auto sup = tenant_supervisor(self, ctx, job.id.tenant);
        if (!sup)
          return job.done(std::move(sup.error()));
        self->send(*sup, adopt_atom::value, std::move(job));
      },
    };
  };
}

// -- router: asks and inspections from non-actor threads ----------------------------------

struct router_state {
  using time_point = caf::actor_clock::time_point;
  struct pending_ask {
    node_runtime::reply_fn done;
    std::multimap<time_point, uint64_t>::iterator deadline;
  };
  uint64_t next_id = 1;
  /// Most asks in flight through this router (node.asks_pending_max / routers).
  size_t pending_max = 0;
  std::unordered_map<uint64_t, pending_ask> pending;
  std::multimap<time_point, uint64_t> deadlines;
  /// Earliest time a sweep is scheduled for (time_point::max() if none).
  time_point sweep_at = time_point::max();

  static inline const char* name = "hive.router";
};

using router_actor = caf::stateful_actor<router_state>;

void complete(router_actor* self, uint64_t id, caf::expected<std::string> result) {
  auto& st = self->state;
  auto i = st.pending.find(id);
  if (i == st.pending.end())
    return; // already timed out
  auto done = std::move(i->second.done);
  st.deadlines.erase(i->second.deadline);
  st.pending.erase(i);
  done(std::move(result));
}

void schedule_sweep(router_actor* self, router_state::time_point at) {
  auto& st = self->state;
  if (at >= st.sweep_at)
    return;
  st.sweep_at = at;
  auto now = self->clock().now();
  auto delay = at > now ? at - now : caf::timespan{0};
  self->delayed_send(self, delay, sweep_atom::value);
}

/// (An argument-less function actor would trip UBSan's checks of CAF 0.17's spawn.)
caf::behavior router_fn(router_actor* self, size_t pending_max) {
  self->state.pending_max = pending_max;
  // Stopped (the runtime's shutdown): every ask still waiting gets its answer now. (Their
  // agents' replies would find the router gone, and the callers would wait forever.)
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    std::vector<node_runtime::reply_fn> waiting;
    waiting.reserve(st.pending.size());
    for (auto& [_, p] : st.pending)
      waiting.push_back(std::move(p.done));
    st.pending.clear();
    st.deadlines.clear();
    for (auto& done : waiting)
      done(make_error(errc::shutting_down, "node is shutting down: the ask was not answered"));
    self->quit(std::move(msg.reason));
  });
  return {
    [self](ask_atom, ask_job& job) {
      auto& st = self->state;
      if (st.pending.size() >= st.pending_max)
        return job.done(make_error(errc::overloaded,
                                   "node has node.asks_pending_max asks in flight; retry later"));
      auto id = st.next_id++;
      auto deadline = self->clock().now() + job.timeout;
      auto it = st.deadlines.emplace(deadline, id);
      st.pending.emplace(id, router_state::pending_ask{std::move(job.done), it});
      schedule_sweep(self, deadline);
      // Infinite request + own deadline bookkeeping: finite CAF request timers are not
      // cancelled on reply in 0.17 and pile up on hot paths.
      if (!job.retry || job.attempt >= ask_attempts_max) {
        self->request(job.target, caf::infinite, std::move(job.call))
          .then([self, id](agent_reply& reply) { complete(self, id, std::move(reply.body)); },
                [self, id](caf::error& err) { complete(self, id, std::move(err)); });
        return;
      }
      auto again = std::make_shared<ask_job>(std::move(job));
      self->request(again->target, caf::infinite, again->call)
        .then([self, id](agent_reply& reply) { complete(self, id, std::move(reply.body)); },
              [self, id, again, deadline](caf::error& err) {
                auto& st = self->state;
                auto i = st.pending.find(id);
                auto now = self->clock().now();
                if (err != caf::sec::request_receiver_down || i == st.pending.end()
                    || now >= deadline)
                  return complete(self, id, std::move(err));
                // The target died before it saw the call: resolve the id again.
                auto done = std::move(i->second.done);
                st.deadlines.erase(i->second.deadline);
                st.pending.erase(i);
                auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
                (*again->retry)(again->id, std::move(again->call),
                                std::max(left, std::chrono::milliseconds{1}), std::move(done),
                                again->attempt + 1);
              });
    },
    [self](sweep_atom) {
      auto& st = self->state;
      st.sweep_at = router_state::time_point::max();
      auto now = self->clock().now();
      while (!st.deadlines.empty() && st.deadlines.begin()->first <= now) {
        auto id = st.deadlines.begin()->second;
        auto i = st.pending.find(id);
        assert(i != st.pending.end());
        auto done = std::move(i->second.done);
        st.deadlines.erase(st.deadlines.begin());
        st.pending.erase(i);
        done(make_error(errc::timeout, "no reply before the deadline"));
      }
      if (!st.deadlines.empty())
        schedule_sweep(self, st.deadlines.begin()->first);
    },
    [self](inspect_atom, inspect_job& job) {
      auto view = std::make_shared<agent_view>(std::move(job.view));
      auto done =
        std::make_shared<std::function<void(caf::expected<nlohmann::json>)>>(std::move(job.done));
      auto cid = job.correlation_id;
      nlohmann::json base{{"id", view->id.str()},
                          {"kind", view->kind},
                          {"node", view->node},
                          {"supervisor", view->supervisor},
                          {"restart", view->restart},
                          {"restarts", view->restarts},
                          {"running", static_cast<bool>(view->agent)},
                          {"hibernated", view->hibernated},
                          {"breaker", nullptr}};
      auto with_breaker = [self, view, done, cid](nlohmann::json out) {
        if (!view->has_breaker || !view->target) {
          (*done)(std::move(out));
          return;
        }
        self->request(view->target, std::chrono::seconds(2), inspect_request{cid})
          .then(
            [done, out](agent_reply& reply) mutable {
              out["breaker"] = nlohmann::json::parse(reply.body, nullptr, false);
              (*done)(std::move(out));
            },
            [done, out](caf::error& err) mutable {
              out["breaker"] = {{"error", message_of(err)}};
              (*done)(std::move(out));
            });
      };
      if (!view->agent) {
        base["mailbox_size"] = 0;
        base["state"] = nullptr;
        with_breaker(std::move(base));
        return;
      }
      self->request(view->agent, std::chrono::seconds(2), inspect_request{cid})
        .then(
          [with_breaker, base](agent_reply& reply) mutable {
            auto j = nlohmann::json::parse(reply.body, nullptr, false);
            if (j.is_object()) {
              base["mailbox_size"] = j.value("mailbox_size", 0);
              base["handled"] = j.value("handled", 0);
              base["state"] = j.contains("summary") ? j["summary"] : nlohmann::json{};
            }
            with_breaker(std::move(base));
          },
          [with_breaker, base](caf::error& err) mutable {
            base["mailbox_size"] = 0;
            base["state"] = {{"error", message_of(err)}};
            with_breaker(std::move(base));
          });
    },
  };
}

} // namespace

namespace {

/// The tell path of an agent_ref to an id that is not running: like node_runtime::tell.
caf::error tell_missing(const std::shared_ptr<store>& db, const moved_agents& moved,
                        const caf::actor& root, const agent_id& id, const agent_call& call,
                        bool known) {
  if (!known) {
    auto meta = db->get_meta(id.str());
    if (!meta)
      return std::move(meta.error());
    // Moved away: its forwarder is found by the tenant supervisor, like every other call to
    // an id that is not running here (one path, so one order per sender; see with_target).
    if (!*meta && !moved.find(id.str()))
      return make_error(errc::agent_not_found, "no agent " + id.str());
  }
  caf::anon_send(root, activate_atom::value, activate_job{id, [call](caf::expected<caf::actor> t) {
                                                            if (t)
                                                              caf::anon_send(*t, std::move(call));
                                                          }});
  return {};
}

} // namespace

node_runtime::node_runtime(caf::actor_system& sys, const node_config& cfg, kind_registry kinds,
                           std::shared_ptr<hive::metrics> m, front_factory breaker_factory,
                           std::shared_ptr<store> db)
    : sys_(sys), cfg_(cfg), kinds_(std::move(kinds)), metrics_(std::move(m)),
      breaker_factory_(std::move(breaker_factory)), directory_(std::make_shared<directory>()),
      db_(std::move(db)) {}

caf::expected<std::unique_ptr<node_runtime>> node_runtime::start(
  caf::actor_system& sys, const node_config& cfg, kind_registry kinds,
  std::shared_ptr<hive::metrics> m, front_factory breaker_factory, std::shared_ptr<store> db) {
  if (!m)
    m = std::make_shared<hive::metrics>();
  std::unique_ptr<node_runtime> rt{new node_runtime(sys, cfg, std::move(kinds), std::move(m),
                                                    std::move(breaker_factory), std::move(db))};
  auto ctx = std::make_shared<runtime_context>();
  ctx->cfg = rt->cfg_;
  ctx->dir = rt->directory_;
  ctx->metrics = rt->metrics_;
  ctx->kinds = &rt->kinds_;
  ctx->db = rt->db_;
  ctx->breaker_factory = rt->breaker_factory_;
  ctx->moved = rt->moved_;
  ctx->sender = rt->sender_;
  ctx->asker = rt->asker_;
  ctx->finder = rt->finder_;
  ctx->spawner = rt->spawner_;
  ctx->forwarder = rt->forwarder_;
  ctx->rep = rt->ctx_rep_;
  rt->set_agent_sender({});
  rt->set_agent_asker({}, {});
  rt->set_agent_spawner({});
  rt->root_ = spawn_supervisor(sys, flags_from(*ctx, "root", "root"), {}, root_extension(ctx));
  ctx->root = rt->root_.address(); // (before any call can reach a tenant supervisor)
  rt->gate_ = std::make_shared<runtime_gate>();
  rt->gate_->rt = rt.get();
  // (Routers call it; one may still run after shutdown() when node.shutdown_drain_ms ran out.)
  rt->ask_retry_ = std::make_shared<ask_retry_fn>(
    [gate = rt->gate_](const agent_id& id, agent_call call, std::chrono::milliseconds left,
                       reply_fn done, int attempt) {
      std::shared_lock<std::shared_mutex> lock{gate->mtx};
      if (gate->rt == nullptr) {
        lock.unlock();
        return done(make_error(errc::shutting_down, "node is shutting down"));
      }
      gate->rt->ask_attempt(id, std::move(call), left, std::move(done), attempt);
    });
  if (rt->db_) {
    // Weak on the root: a reference that outlives the runtime finds nothing, it keeps nothing.
    caf::actor_addr root_addr = rt->root_.address();
    rt->miss_ = std::make_shared<const agent_ref::miss_fn>(
      [db = rt->db_, moved = rt->moved_, root_addr](const agent_id& id, const agent_call& call,
                                                    bool known) -> caf::error {
        auto root = caf::actor_cast<caf::actor>(root_addr);
        if (!root)
          return make_error(errc::shutting_down, "node is shutting down");
        return tell_missing(db, *moved, root, id, call, known);
      });
  }
  // Many routers: a CAF 0.17 actor looks up and erases the handler of each reply by a linear
  // scan over its outstanding requests, so one router's replies cost O(its asks in flight).
  size_t n = cfg.node.routers > 0 ? static_cast<size_t>(cfg.node.routers)
                                  : 16 * std::max<size_t>(1, sys.scheduler().num_workers());
  size_t pending_max = std::max<size_t>(1, static_cast<size_t>(cfg.node.asks_pending_max) / n);
  for (size_t i = 0; i < n; ++i)
    rt->routers_.push_back(sys.spawn(router_fn, pending_max));
  if (rt->metrics_)
    rt->metrics_->events().set_node(cfg.node.name);
  size_t stored = 0;
  if (rt->db_) {
    // The capabilities of the agents stored here (passivated, or active before a restart).
    std::string after;
    for (;;) {
      auto page = rt->db_->list_meta({}, after, 4096);
      if (!page)
        return std::move(page.error());
      for (auto& meta : *page)
        if (auto id = parse_agent_id(meta.hdr.agent)) {
          rt->capabilities_->add(*id, meta.capabilities);
          ++stored;
        }
      if (page->size() < 4096)
        break;
      after = page->back().hdr.agent;
    }
  }
  log::event(spdlog::level::info, "runtime_started",
             {{"kinds", rt->kinds_.names()},
              {"routers", n},
              {"stored_agents", stored},
              {"capability_entries", rt->capabilities_->size()}});
  return rt;
}

node_runtime::~node_runtime() {
  shutdown();
}

void node_runtime::set_fatal_handler(std::function<void(const caf::error&)> fn) {
  auto ptr = caf::actor_cast<caf::abstract_actor*>(root_);
  assert(ptr != nullptr);
  ptr->attach_functor([off = stopping_, fn = std::move(fn)](const caf::error& reason) {
    if (!off->load())
      fn(reason);
  });
}

void node_runtime::spawn(spawn_request req, std::function<void(caf::expected<agent_view>)> done) {
  assert(done);
  if (stopping_->load())
    return done(make_error(errc::shutting_down, "node is shutting down"));
  auto kind = kinds_.find(req.kind);
  if (kind == nullptr)
    return done(make_error(
      errc::unknown_kind,
      "kind '" + req.kind.substr(0, 64) + "' is not registered (known: " +
        [&] {
          std::string s;
          for (auto& k : kinds_.names())
            s += (s.empty() ? "" : ", ") + k;
          return s;
        }()
        + ")"));
  if (directory_->size() >= static_cast<size_t>(cfg_.agents.agents_max))
    return done(make_error(
      errc::overloaded,
      "node holds agents.agents_max = " + std::to_string(cfg_.agents.agents_max) + " agents"));
  if (directory_->tenant_size(req.id.tenant) >= static_cast<size_t>(cfg_.quota.agents_max))
    return done(make_error(errc::quota_exceeded,
                           "tenant '" + req.id.tenant
                             + "' has quota.agents_max = " + std::to_string(cfg_.quota.agents_max)
                             + " live agents on node '" + cfg_.node.name + "'; stop some first"));
  if (req.breaker && !breaker_factory_)
    return done(make_error(errc::invalid_argument, "this node has no circuit breaker"));
  if (!req.config.is_object())
    return done(make_error(errc::invalid_argument, "config must be a JSON object"));
  if (req.capabilities.empty())
    req.capabilities = kind->capabilities;
  if (auto err = validate_capabilities(req.capabilities,
                                       static_cast<size_t>(cfg_.agents.capabilities_per_agent_max)))
    return done(std::move(err));
  auto made = kind->make(req.config);
  if (!made)
    return done(make_error(code_of(made.error()) == errc::internal ? errc::invalid_argument
                                                                   : code_of(made.error()),
                           "config of kind '" + req.kind + "': " + message_of(made.error())));
  agent_view view;
  view.id = req.id;
  view.kind = req.kind;
  view.node = cfg_.node.name;
  view.supervisor = tenant_child_id(req.id.tenant);
  view.restart = std::string{to_string(req.restart)};
  view.config = std::make_shared<const nlohmann::json>(std::move(req.config));
  view.has_breaker = req.breaker;
  if (!directory_->reserve(view))
    return done(make_error(errc::agent_exists, "agent " + req.id.str() + " exists"));
  // (A spawn that fails from here on leaves an entry that the next query drops.)
  capabilities_->add(req.id, req.capabilities);
  if (req.breaker) {
    view.target = breaker_factory_(sys_, req.id);
    directory_->set_handles(req.id, caf::actor{}, view.target, 0);
  }
  bool persisted = db_ && kind->persistence != persistence_mode::ephemeral;
  spawn_job job{std::move(view), std::shared_ptr<agent>{std::move(*made)}, std::move(done),
                req.correlation_id};
  if (!persisted) {
    caf::anon_send(root_, spawn_agent_atom::value, std::move(job));
    return;
  }
  // A persisted agent exists once its kind and config are durable: it survives passivation
  // and restarts of the node from then on.
  records::meta_record meta;
  meta.hdr.agent = req.id.str();
  meta.kind = req.kind;
  meta.config = job.view.config->dump();
  meta.breaker = req.breaker;
  meta.restart = job.view.restart;
  meta.created_unix_ms = unix_ms_now();
  meta.persistence = std::string{to_string(kind->persistence)};
  meta.pinned = req.pinned;
  meta.capabilities = req.capabilities;
  auto shared_job = std::make_shared<spawn_job>(std::move(job));
  db_->put_meta(std::move(meta), true,
                [root = root_, dir = directory_, shared_job](caf::error err) {
                  auto& job = *shared_job;
                  if (err) {
                    dir->erase(job.view.id);
                    if (job.view.has_breaker && job.view.target)
                      caf::anon_send_exit(job.view.target, caf::exit_reason::user_shutdown);
                    job.done(std::move(err));
                    return;
                  }
                  caf::anon_send(root, spawn_agent_atom::value, std::move(job));
                });
}

void node_runtime::stop(const agent_id& id, std::function<void(caf::error)> done) {
  assert(done);
  if (stopping_->load())
    return done(make_error(errc::shutting_down, "node is shutting down"));
  auto view = directory_->find(id);
  bool stored = false;
  if (db_) {
    auto meta = db_->get_meta(id.str());
    if (!meta)
      return done(std::move(meta.error()));
    stored = meta->has_value();
  }
  if (!view && !stored)
    return done(make_error(errc::agent_not_found, "no agent " + id.str()));
  auto erase_stored = [db = db_, rep = ctx_rep_, id, stored,
                       done = std::move(done)](caf::error err) {
    if (err && code_of(err) != errc::agent_not_found)
      return done(std::move(err));
    if (!stored)
      return done(std::move(err));
    // Stopped for good: its meta, snapshot and journal go too, and its replicas (first: the
    // stop is answered once no copy holds a promise a new spawn of the id would trip on).
    if (auto r = rep->get())
      return r->erase(id, [db, id, done = std::move(done)]() mutable {
        db->erase_agent(id.str(), std::move(done));
      });
    db->erase_agent(id.str(), done);
  };
  if (!view) // passivated: nothing runs
    return erase_stored({});
  caf::anon_send(root_, stop_agent_atom::value, stop_job{id, std::move(erase_stored)});
}

namespace {

/// Per-thread cache of by-id lookups, valid while the directory's generation is unchanged:
/// a hit costs a hash and an atomic load instead of a shard lock. Keyed by the directory's
/// process-unique id, never its address (a new runtime may reuse a freed one).
struct lookup_cache {
  static constexpr size_t entries_max = 1024;
  uint64_t directory_uid = 0;
  uint64_t generation = 0;
  std::unordered_map<agent_id, std::optional<caf::actor>> map;
};

lookup_cache& thread_cache() {
  thread_local lookup_cache cache;
  return cache;
}

const std::optional<caf::actor>& cached_target(const directory& dir, const agent_id& id) {
  auto& cache = thread_cache();
  auto gen = dir.generation();
  if (cache.directory_uid != dir.uid() || cache.generation != gen
      || cache.map.size() >= lookup_cache::entries_max) {
    cache.map.clear();
    cache.directory_uid = dir.uid();
    cache.generation = gen;
  }
  auto i = cache.map.find(id);
  if (i == cache.map.end())
    i = cache.map.emplace(id, dir.target_of(id)).first;
  return i->second;
}

/// The error of sending to `target` (as `directory::target_of` returns it), if any.
caf::error unusable(const std::optional<caf::actor>& target, const agent_id& id) {
  if (!target)
    return make_error(errc::agent_not_found, "no agent " + id.str());
  if (!*target)
    return make_error(errc::agent_failed, id.str() + " is restarting");
  return {};
}

} // namespace

void forget_cached_lookups() {
  auto& cache = thread_cache();
  cache.map.clear();
  cache.generation = 0;
  cache.directory_uid = 0;
}

caf::error node_runtime::tell(const agent_id& id, const agent_call& call) {
  auto& target = cached_target(*directory_, id);
  if ((!target || !*target) && db_)
    return activate_then(
      id,
      [call](caf::expected<caf::actor> t) {
        if (t)
          caf::anon_send(*t, std::move(call));
      },
      target.has_value());
  if (auto err = unusable(target, id))
    return err;
  send_here(*target, call); // (on the transport's thread the agent may run right there)
  return {};
}

caf::error node_runtime::activate_then(const agent_id& id,
                                       std::function<void(caf::expected<caf::actor>)> then,
                                       bool known) {
  // Not running here: a stored agent is activated by its tenant supervisor, which also holds
  // messages for one that is passivating right now. An id the directory knows but that has
  // no handle (activating, restarting) goes there too: the supervisor knows which it is.
  if (!known) {
    auto meta = db_->get_meta(id.str());
    if (!meta)
      return std::move(meta.error());
    // Moved away: on to its new node through its forwarder, which the tenant supervisor
    // finds. Never straight to the forwarder from here: calls that went to the supervisor
    // while the move finished (or while the record was being erased) are still on their way
    // there, and a shortcut would overtake them.
    if (!*meta && !moved_->find(id.str())) {
      auto rep = ctx_rep_->get();
      if (!rep || !rep->may_take_over(id))
        return make_error(errc::agent_not_found, "no agent " + id.str());
    }
  }
  if (stopping_->load())
    return make_error(errc::shutting_down, "node is shutting down");
  caf::anon_send(root_, activate_atom::value, activate_job{id, std::move(then)});
  return {};
}

void agent_ref::refresh() {
  assert(dir_ != nullptr);
  auto gen = dir_->generation();
  if (gen != generation_) {
    // Read the generation first: a change racing with the lookup makes the next call look
    // again rather than keep a stale handle.
    target_ = dir_->target_of(id_);
    generation_ = gen;
  }
}

std::optional<caf::actor> agent_ref::target() {
  refresh();
  return target_;
}

template <class Call>
caf::error agent_ref::tell_impl(Call&& call) {
  refresh(); // and then use target_ in place: no reference-count traffic per message
  if ((!target_ || !*target_) && miss_)
    return (*miss_)(id_, call, target_.has_value());
  if (auto err = unusable(target_, id_))
    return err;
  caf::anon_send(*target_, std::forward<Call>(call));
  return {};
}

caf::error agent_ref::tell(const agent_call& call) {
  return tell_impl(call);
}

caf::error agent_ref::tell(agent_call&& call) {
  return tell_impl(std::move(call));
}

void node_runtime::ask(const agent_id& id, agent_call call, std::chrono::milliseconds timeout,
                       reply_fn done) {
  assert(done);
  ask_attempt(id, std::move(call), timeout, std::move(done), 0);
}

void node_runtime::ask_attempt(const agent_id& id, agent_call call,
                               std::chrono::milliseconds timeout, reply_fn done, int attempt) {
  if (stopping_->load())
    return done(make_error(errc::shutting_down, "node is shutting down"));
  auto& target = cached_target(*directory_, id);
  auto& router = next_router();
  if ((!target || !*target) && db_) {
    auto shared_done = std::make_shared<reply_fn>(std::move(done));
    auto err = activate_then(
      id,
      [router, id, call = std::move(call), timeout, shared_done, attempt,
       retry = ask_retry_](caf::expected<caf::actor> t) mutable {
        if (!t)
          return (*shared_done)(std::move(t.error()));
        send_here(router, ask_atom::value,
                  ask_job{*t, std::move(call), timeout, std::move(*shared_done), id,
                          std::static_pointer_cast<const ask_retry_fn>(retry), attempt});
      },
      target.has_value());
    if (err)
      (*shared_done)(std::move(err));
    return;
  }
  if (auto err = unusable(target, id))
    return done(std::move(err));
  ask_job job{*target, std::move(call), timeout, std::move(done), {}, nullptr, attempt};
  if (db_) {
    // Persisted agents passivate: a cached handle may die before the call reaches it.
    job.id = id;
    job.retry = std::static_pointer_cast<const ask_retry_fn>(ask_retry_);
  }
  // On the transport's thread (a call from another node), the router and an agent that
  // allows it run right there (runtime/inline_exec.hpp).
  send_here(router, ask_atom::value, std::move(job));
}

void node_runtime::set_replicator(std::shared_ptr<replicator> r) {
  ctx_rep_->set(std::move(r));
}

std::shared_ptr<replicator> node_runtime::replication() const {
  return ctx_rep_->get();
}

void node_runtime::set_remote_forwarder(remote_forwarder::fn f) {
  forwarder_->set(std::move(f));
}

void node_runtime::set_agent_sender(agent_sender::fn f) {
  if (!f) {
    auto* self = this; // agents, the only callers, stop in shutdown() before it dies
    f = [self](const agent_id& to, agent_call call) { return self->tell(to, call); };
  }
  sender_->set(std::move(f));
}

void node_runtime::set_agent_spawner(agent_spawner::fn f) {
  if (!f) {
    auto* self = this; // agents, the only callers, stop in shutdown() before it dies
    f = [self](spawn_request req, std::function<void(caf::expected<agent_view>)> done) {
      self->spawn(std::move(req), std::move(done));
    };
  }
  spawner_->set(std::move(f));
}

void node_runtime::set_agent_asker(agent_asker::fn ask, provider_finder::fn find) {
  auto* self = this; // agents, the only callers, stop in shutdown() before it dies
  if (!ask)
    ask = [self](const agent_id& to, agent_call call, std::chrono::milliseconds timeout,
                 std::function<void(caf::expected<std::string>)> done) {
      self->ask(to, std::move(call), timeout, std::move(done));
    };
  if (!find)
    find = [self](const std::string& cap, const std::string& tenant, size_t limit,
                  std::function<void(std::string)> done) {
      auto list = nlohmann::json::array();
      for (auto& p : self->providers(cap, tenant, limit))
        list.push_back(to_json(p));
      done(nlohmann::json{{"providers", std::move(list)}, {"nodes_failed", nlohmann::json::array()}}
             .dump());
    };
  asker_->set(std::move(ask));
  finder_->set(std::move(find));
}

void node_runtime::run_wake(std::function<void()> scan) {
  std::lock_guard<std::mutex> guard{wake_mtx_};
  if (stopping_->load())
    return;
  if (wake_queue_.size() >= wake_scans_queued_max) {
    log::event(spdlog::level::warn, "resident_wake_dropped",
               {{"queued", wake_queue_.size()}, {"max", wake_scans_queued_max}});
    return;
  }
  wake_queue_.push_back(std::move(scan));
  if (!waker_.joinable())
    waker_ = std::thread{[this] {
      std::unique_lock<std::mutex> lock{wake_mtx_};
      for (;;) {
        wake_cv_.wait(lock, [this] { return stopping_->load() || !wake_queue_.empty(); });
        if (stopping_->load())
          return;
        auto next = std::move(wake_queue_.front());
        wake_queue_.pop_front();
        lock.unlock();
        next();
        lock.lock();
      }
    }};
  wake_cv_.notify_one();
}

namespace {

/// The call that activates a resident agent (its activation wakes it anyway; the notice only
/// says so once more, which the kind must take calmly).
agent_call wake_call(const agent_id& id) {
  return agent_call{envelope{0, id.tenant, 0, id.str(), {}, 0},
                    {},
                    caf::make_message(agent_notice{agent_notice::wake, {}, 0, {}})};
}

} // namespace

size_t node_runtime::wake_matching(
  const std::function<std::optional<agent_id>(const records::meta_record&)>& pick) {
  std::string after;
  size_t woken = 0;
  while (!stopping_->load()) {
    auto page = db_->list_meta({}, after, 1024);
    if (!page || page->empty())
      break;
    after = page->back().hdr.agent;
    for (auto& meta : *page) {
      auto kind = kinds_.find(meta.kind);
      if (kind == nullptr || !kind->resident)
        continue;
      auto id = pick(meta);
      if (!id || directory_->find(*id))
        continue;
      if (auto err = tell(*id, wake_call(*id)))
        log::event(spdlog::level::warn, "agent_wake_failed", {{"reason", describe(err)}},
                   id->str());
      else
        ++woken;
    }
    if (page->size() < 1024)
      break;
  }
  return woken;
}

void node_runtime::wake_residents() {
  if (!db_)
    return;
  run_wake([this] {
    auto woken = wake_matching([](const records::meta_record& meta) -> std::optional<agent_id> {
      if (replicator::is_copy_key(meta.hdr.agent))
        return std::nullopt;
      auto id = parse_agent_id(meta.hdr.agent);
      return id ? std::optional<agent_id>{*id} : std::nullopt;
    });
    if (woken > 0)
      log::event(spdlog::level::info, "resident_agents_woken", {{"agents", woken}});
  });
}

void node_runtime::wake_taken_over(const std::string& member) {
  auto rep = replication();
  if (!db_ || !rep)
    return;
  run_wake([this, rep, member] {
    auto woken = wake_matching([&](const records::meta_record& meta) -> std::optional<agent_id> {
      if (!replicator::is_copy_key(meta.hdr.agent) || meta.holder != member)
        return std::nullopt;
      auto id = parse_agent_id(meta.hdr.agent.substr(1));
      if (!id || !rep->may_take_over(*id))
        return std::nullopt;
      return *id;
    });
    if (woken > 0)
      log::event(spdlog::level::info, "resident_agents_taken_over",
                 {{"agents", woken}, {"member", member}});
  });
}

std::vector<provider> node_runtime::providers(std::string_view name, std::string_view tenant,
                                              size_t limit) {
  std::vector<provider> out;
  for (auto& id : capabilities_->find(name, tenant, limit)) {
    if (auto view = directory_->find(id)) {
      out.push_back({id, cfg_.node.name, view->agent ? "active" : "starting",
                     view->load ? view->load->load(std::memory_order_relaxed) : 0});
      continue;
    }
    if (db_) {
      auto meta = db_->get_meta(id.str());
      if (meta && *meta) {
        out.push_back({id, cfg_.node.name, "passivated", 0});
        continue;
      }
      if (!meta) // (a read error says nothing about the agent: keep the entry)
        continue;
    }
    capabilities_->drop(name, id); // stopped, moved away, or failed for good
  }
  std::sort(out.begin(), out.end(), [](const provider& a, const provider& b) {
    return a.load != b.load ? a.load < b.load : a.id.str() < b.id.str();
  });
  return out;
}

void moved_agents::put(const std::string& id, entry e) {
  std::lock_guard<std::mutex> guard{mtx_};
  map_[id] = std::move(e);
}

std::optional<moved_agents::entry> moved_agents::find(const std::string& id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = map_.find(id);
  if (i == map_.end())
    return std::nullopt;
  return i->second;
}

std::optional<caf::actor> moved_agents::take(const std::string& id, uint64_t token) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = map_.find(id);
  if (i == map_.end() || (token != 0 && i->second.token != token))
    return std::nullopt;
  auto fwd = std::move(i->second.forwarder);
  map_.erase(i);
  return fwd;
}

void node_runtime::migrate_out(const agent_id& id, std::string to, ship_fn ship,
                               std::function<void(caf::expected<migration_result>)> done, bool pin,
                               grant_fn grant) {
  assert(done && ship);
  if (!db_)
    return done(make_error(errc::invalid_argument,
                           "node " + node_name() + " has no store: its agents cannot migrate"));
  if (stopping_->load())
    return done(make_error(errc::shutting_down, "node is shutting down"));
  if (!directory_->find(id)) {
    // Moved away: not here, even while its working copy is still being erased (the caller
    // asks the new node; a move "to here" must not report it as here).
    if (auto mv = moved_->find(id.str()))
      return done(make_error(errc::agent_not_found, id.str() + " moved to " + mv->to));
    auto meta = db_->get_meta(id.str());
    if (!meta)
      return done(std::move(meta.error()));
    if (!*meta)
      return done(make_error(errc::agent_not_found, "no agent " + id.str()));
  }
  if (to == node_name())
    return done(migration_result{to, to, false, 0, 0});
  caf::anon_send(
    root_, migrate_atom::value,
    migrate_job{id, std::move(to), std::move(ship), std::move(done), pin, std::move(grant)});
}

void node_runtime::adopt(migration_payload in, std::function<void(caf::error)> done) {
  assert(done);
  if (!db_)
    return done(make_error(errc::invalid_argument,
                           "node " + node_name() + " has no store: it cannot take agents in"));
  if (stopping_->load())
    return done(make_error(errc::shutting_down, "node is shutting down"));
  auto meta = records::decode_meta(in.meta);
  if (!meta)
    return done(std::move(meta.error()));
  auto snap = records::decode_snapshot(in.snapshot);
  if (!snap)
    return done(std::move(snap.error()));
  auto key = in.id.str();
  if (meta->hdr.agent != key || snap->hdr.agent != key)
    return done(make_error(errc::invalid_argument,
                           "migration of " + key + " carries records of '" + meta->hdr.agent
                             + "' and '" + snap->hdr.agent + "'"));
  bool follows = in.granted_epoch == migration_payload::grant_follows;
  if (in.granted_epoch != 0 && !follows && in.granted_epoch <= snap->hdr.epoch)
    return done(make_error(errc::invalid_argument,
                           "migration of " + key + " carries granted epoch "
                             + std::to_string(in.granted_epoch) + ", not above its state's epoch "
                             + std::to_string(snap->hdr.epoch)));
  auto kind = kinds_.find(meta->kind);
  if (kind == nullptr)
    return done(make_error(errc::unknown_kind,
                           "kind '" + meta->kind + "' of migrating agent " + key
                             + " is not registered on " + node_name()));
  if (kind->persistence == persistence_mode::ephemeral)
    return done(make_error(errc::invalid_argument,
                           "kind '" + meta->kind + "' is ephemeral on " + node_name()));
  if (directory_->find(in.id))
    return done(make_error(errc::agent_exists, key + " is active on " + node_name()));
  // (Checked by the activation too; here before the promise round goes out, see below.)
  if (directory_->size() >= static_cast<size_t>(cfg_.agents.agents_max))
    return done(make_error(errc::overloaded,
                           "node runs agents.agents_max = " + std::to_string(cfg_.agents.agents_max)
                             + " agents: it takes no migrating agent in"));
  // The deadlines (migration_payload::sent_unix_ms): a source that heard nothing goes on with
  // the agent 2T after it sent it; a shipment read here after 1.5T (a node frozen or cut off
  // meanwhile) is refused, and its activation must be under way by 1.75T.
  std::optional<std::chrono::steady_clock::time_point> activate_by;
  if (in.sent_unix_ms != 0 && in.timeout_ms != 0) {
    auto age_ms = std::max<int64_t>(0, unix_ms_now() - static_cast<int64_t>(in.sent_unix_ms));
    auto t = static_cast<int64_t>(in.timeout_ms);
    if (age_ms > t + t / 2) {
      {
        // (A later settle of it answers refused.)
        std::lock_guard<std::mutex> guard{fences_->mtx};
        (void)fences_->refuse(key, in.shipment, refusals_kept(), refusals_max());
      }
      log::event(spdlog::level::warn, "migration_refused_late",
                 {{"age_ms", age_ms}, {"deadline_ms", t + t / 2}}, key);
      return done(make_error(errc::rejected,
                             "the migration of " + key + " reached " + node_name() + " "
                               + std::to_string(age_ms) + " ms after it was sent (deadline "
                               + std::to_string(t + t / 2)
                               + " ms; its source may have gone on with the agent, or the "
                                 "nodes' clocks differ)"));
    }
    activate_by =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(t + 3 * t / 4 - age_ms);
  }
  {
    // Atomic with settle_adoption: a source that settled this move as refused goes on with
    // the agent, so its shipment must not be taken in after all.
    std::lock_guard<std::mutex> guard{fences_->mtx};
    if (fences_->refused.count({key, in.shipment}) > 0)
      return done(make_error(errc::rejected,
                             "the migration of " + key + " to " + node_name()
                               + " was called off by its source"));
    if (!fences_->adopting.insert(key).second)
      return done(make_error(errc::conflict, key + " is being adopted on " + node_name()));
  }
  capabilities_->add(in.id, meta->capabilities);
  // Its activation here takes the promise over. Usually the source had the replica set
  // promise it to this node before it shipped (granted). Otherwise the round asking for it
  // goes out now (this node's own promise is queued ahead of the write below), so it runs
  // while the state is stored and the activation is on its way.
  auto min_epoch = db_->next_epoch();
  // The promise and the shipped state share one group commit (the writer waits for both).
  std::optional<store::commit_hold> hold;
  std::shared_ptr<replicator::handover_round> round;
  uint64_t granted = 0;
  std::shared_future<caf::expected<uint64_t>> grant;
  if (auto rep = ctx_rep_->get(); rep && kind->persistence == persistence_mode::journaled) {
    if (follows) {
      // The source's round is still running: its outcome comes as a grant (grant_adoption),
      // maybe ahead of this shipment.
      auto slot = std::make_shared<std::promise<caf::expected<uint64_t>>>();
      grant = slot->get_future().share();
      std::lock_guard<std::mutex> guard{fences_->mtx};
      auto k = std::make_pair(key, in.shipment);
      if (auto e = fences_->early.find(k); e != fences_->early.end()) {
        slot->set_value(std::move(e->second.first));
        fences_->early.erase(e);
      } else {
        fences_->awaiting[k] = slot;
      }
    } else if (in.granted_epoch != 0) {
      // Promised before the state left (replicator::promise_to): no round here.
      granted = in.granted_epoch;
    } else {
      hold.emplace(db_->hold_commits());
      round = rep->begin_handover(in.id, *meta, snap->hdr.epoch, min_epoch);
    }
  }
  // The meta, then the snapshot, queued under the hold with this node's promise, so that one
  // group commit carries all three (their completions run in order). The activation starts at
  // once, with the meta and the state in hand: it builds the instance from the shipped
  // snapshot while the round and the write run, and it waits for the write before it takes
  // calls unless granted (see adopted_state). The snapshot prunes no journal: the node
  // erased this agent's when it left (reading a journal of deleted events costs more than
  // the write), and what a crash left behind is at most stale events up to the snapshot's
  // sequence, which nothing reads and the next erase removes.
  db_->forget(key);
  auto seq = snap->hdr.seq;
  auto db = db_;
  auto id = in.id;
  auto t0 = std::chrono::steady_clock::now();
  // The answer goes back once the activation ended and the write completed, whichever is
  // last (an activation that found the agent running already does not wait for the write).
  // With a granted promise, an activation that succeeded is answered at once: the agent's
  // writes queue behind the state's in this node's store, so none is acknowledged before the
  // state is durable here, and the state is on a majority of the replicas already.
  struct join {
    std::mutex mtx;
    std::optional<caf::error> stored;
    std::optional<caf::expected<caf::actor>> active;
    std::chrono::steady_clock::time_point stored_at;
    bool answered = false;
  };
  auto j = std::make_shared<join>();
  auto finish = [db, id, t0, j, done, fences = fences_, shipment = in.shipment]() {
    // (Called once, by the second of the two to arrive, with `j->mtx` not held; or, granted,
    // by an activation that succeeded, before the write completed.)
    using ms = std::chrono::duration<double, std::milli>;
    // No longer under way for settle_adoption once it is active here, or its copy is gone.
    auto settled = [fences, key = id.str(), shipment] {
      std::lock_guard<std::mutex> guard{fences->mtx};
      fences->adopting.erase(key);
      fences->awaiting.erase({key, shipment});
    };
    auto& t = *j->active;
    if (!j->stored) {
      settled();
      return done(caf::error{});
    }
    log::event(spdlog::level::debug, "agent_adopted",
               {{"store_ms", ms(j->stored_at - t0).count()},
                {"total_ms", ms(std::chrono::steady_clock::now() - t0).count()},
                {"ok", static_cast<bool>(t) && !*j->stored}},
               id.str());
    if (t) {
      settled();
      if (!*j->stored)
        return done(caf::error{});
      // Active, but not from this state (an activation of the shipped state waits for the
      // write and fails with it): it ran here already, on its own stored state.
      return done(std::move(*j->stored));
    }
    // Not active here: keep no copy (the agent goes on at the node it was to leave). Until
    // the copy is erased, a settle finds the adoption pending (not its stored snapshot).
    db->erase_agent(id.str(), [settled](caf::error) { settled(); });
    done(std::move(t.error()));
  };
  auto stored = std::make_shared<std::promise<caf::error>>();
  auto adopted = std::make_shared<adopted_state>();
  adopted->meta = *meta;
  adopted->stored = stored->get_future().share();
  adopted->activate_by = activate_by;
  adopted->snapshot = std::make_shared<const records::snapshot_record>(std::move(*snap));
  adopted->min_epoch = min_epoch;
  adopted->round = std::move(round);
  adopted->granted = granted;
  adopted->grant = grant;
  bool early_answer = granted != 0 || grant.valid();
  auto meta_err = std::make_shared<caf::error>();
  db_->put_meta(std::move(*meta), false,
                [meta_err](caf::error err) { *meta_err = std::move(err); });
  db_->put_snapshot_encoded(
    key, seq, std::move(in.snapshot), 0,
    [stored, meta_err, j, finish, id](caf::error err) {
      auto result = *meta_err ? std::move(*meta_err) : std::move(err);
      stored->set_value(result);
      {
        std::lock_guard<std::mutex> guard{j->mtx};
        if (j->answered) {
          // Answered already (granted): the agent runs here; its writes, queued behind this
          // one, fail the same way, and it rebuilds from the store as after any failed write.
          if (result)
            log::event(spdlog::level::err, "migrated_state_not_stored",
                       {{"reason", describe(result)}}, id.str());
          return;
        }
        j->stored = std::move(result);
        j->stored_at = std::chrono::steady_clock::now();
        if (!j->active)
          return;
      }
      finish();
    },
    false, 0);
  hold.reset();
  caf::anon_send(
    root_, adopt_atom::value,
    adopt_job{id, std::move(adopted), [j, finish, early_answer](caf::expected<caf::actor> t) {
                {
                  std::lock_guard<std::mutex> guard{j->mtx};
                  j->active = std::move(t);
                  if (early_answer && *j->active && !j->stored)
                    j->answered = true; // (finish answers without the write)
                  else if (!j->stored)
                    return;
                }
                finish();
              }});
}

void node_runtime::grant_adoption(const agent_id& id, uint64_t shipment,
                                  caf::expected<uint64_t> epoch) {
  auto k = std::make_pair(id.str(), shipment);
  std::lock_guard<std::mutex> guard{fences_->mtx};
  if (auto a = fences_->awaiting.find(k); a != fences_->awaiting.end()) {
    a->second->set_value(std::move(epoch));
    fences_->awaiting.erase(a);
    return;
  }
  // Ahead of its shipment (or for one that was refused or ended): kept for a while.
  auto now = std::chrono::steady_clock::now();
  for (auto e = fences_->early.begin(); e != fences_->early.end();)
    e = now - e->second.second > refusals_kept() ? fences_->early.erase(e) : std::next(e);
  if (fences_->early.size() >= refusals_max())
    return;
  fences_->early.insert_or_assign(std::move(k), std::make_pair(std::move(epoch), now));
}

caf::expected<node_runtime::adoption_outcome> node_runtime::settle_adoption(const agent_id& id,
                                                                            uint64_t epoch,
                                                                            uint64_t shipment) {
  auto key = id.str();
  std::lock_guard<std::mutex> guard{fences_->mtx};
  if (fences_->adopting.count(key) > 0)
    return adoption_outcome::pending;
  if (directory_->find(id))
    return adoption_outcome::adopted;
  if (db_) {
    // Adopted, and passivated since (an adoption that failed erased what it stored).
    auto snap = db_->get_snapshot(key);
    if (!snap)
      return std::move(snap.error());
    if (*snap && (*snap)->hdr.epoch >= epoch)
      return adoption_outcome::adopted;
  }
  if (!fences_->refuse(key, shipment, refusals_kept(), refusals_max()))
    return adoption_outcome::pending; // full: the source asks again later
  log::event(spdlog::level::info, "migration_in_refused",
             {{"epoch", epoch},
              {"shipment", shipment},
              {"reason", "its source settled the move without an answer"}},
             key);
  return adoption_outcome::refused;
}

void node_runtime::inspect(const agent_id& id, uint64_t correlation_id,
                           std::function<void(caf::expected<nlohmann::json>)> done) {
  assert(done);
  auto view = directory_->find(id);
  if (!view && db_) {
    auto meta = db_->get_meta(id.str());
    if (!meta)
      return done(std::move(meta.error()));
    if (*meta) {
      // Passivated: described from the store, without activating it.
      auto& m = **meta;
      return done(nlohmann::json{{"id", id.str()},
                                 {"kind", m.kind},
                                 {"node", cfg_.node.name},
                                 {"supervisor", "tenant:" + id.tenant},
                                 {"restart", m.restart},
                                 {"restarts", 0},
                                 {"running", false},
                                 {"hibernated", false},
                                 {"passivated", true},
                                 {"persistence", {{"mode", m.persistence}}},
                                 {"breaker", nullptr},
                                 {"mailbox_size", 0},
                                 {"state", nullptr}});
    }
  }
  if (!view)
    return done(make_error(errc::agent_not_found, "no agent " + id.str()));
  auto& router = next_router();
  caf::anon_send(router, inspect_atom::value,
                 inspect_job{std::move(*view), correlation_id, std::move(done)});
}

std::vector<agent_view> node_runtime::list(std::string_view tenant, std::string_view after,
                                           size_t limit) const {
  auto live = directory_->list(tenant, after, limit);
  if (!db_)
    return live;
  auto stored = db_->list_meta(tenant, after, limit);
  if (!stored) {
    log::event(spdlog::level::warn, "list_failed", {{"reason", describe(stored.error())}});
    return live;
  }
  // Merge by id: running agents as the directory sees them, passivated ones from the store.
  std::vector<agent_view> out;
  out.reserve(std::min(limit, live.size() + stored->size()));
  size_t i = 0;
  size_t j = 0;
  runtime_context ctx;
  ctx.cfg = cfg_;
  while (out.size() < limit && (i < live.size() || j < stored->size())) {
    auto live_key = i < live.size() ? live[i].id.str() : std::string{};
    auto stored_key = j < stored->size() ? (*stored)[j].hdr.agent : std::string{};
    if (j >= stored->size() || (i < live.size() && live_key <= stored_key)) {
      if (j < stored->size() && live_key == stored_key)
        ++j;
      out.push_back(std::move(live[i++]));
      continue;
    }
    auto id = parse_agent_id(stored_key);
    if (id)
      out.push_back(view_of_meta(ctx, *id, (*stored)[j]));
    ++j;
  }
  return out;
}

namespace {

/// A checkpoint of `db` in `dir`, logged (node_runtime::backup).
caf::error backup_store(store& db, const std::string& dir) {
  auto err = db.checkpoint(dir);
  auto level = !err                          ? spdlog::level::info
    : code_of(err) == errc::invalid_argument ? spdlog::level::warn
                                             : spdlog::level::err;
  log::event(level, "backup", {{"dir", dir}, {"result", err ? describe(err) : std::string{"ok"}}});
  return err;
}

} // namespace

caf::error node_runtime::backup(const std::string& dir) {
  if (!db_)
    return make_error(errc::invalid_argument, "this node has no store to back up");
  return backup_store(*db_, dir);
}

void node_runtime::backup_async(std::string dir, std::function<void(caf::error)> done) {
  if (!db_)
    return done(make_error(errc::invalid_argument, "this node has no store to back up"));
  // A detached actor: its own thread, and the actor system waits for it at shutdown. It holds
  // the store, not the runtime, which may be gone before the checkpoint is.
  sys_.spawn<caf::detached>(
    [db = db_](caf::event_based_actor* self, const std::string& d,
               const std::shared_ptr<std::function<void(caf::error)>>& k) {
      (*k)(backup_store(*db, d));
      self->quit();
    },
    std::move(dir), std::make_shared<std::function<void(caf::error)>>(std::move(done)));
}

void node_runtime::shutdown() {
  if (stopping_->exchange(true))
    return;
  {
    // From now on a router's retry (ask_retry_) answers shutting_down without the runtime.
    std::unique_lock<std::shared_mutex> lock{gate_->mtx};
    gate_->rt = nullptr;
  }
  log::event(spdlog::level::info, "runtime_stopping", {{"agents", directory_->size()}});
  forget_cached_lookups(); // the calling thread's strong handles would keep agents alive
  {
    std::thread waker;
    {
      std::lock_guard<std::mutex> guard{wake_mtx_};
      wake_queue_.clear();
      waker.swap(waker_);
    }
    wake_cv_.notify_all();
    if (waker.joinable()) // (a running scan stops at its next page)
      waker.join();
  }
  caf::scoped_actor self{sys_};
  auto await = [&](const caf::actor& a) {
    if (!a)
      return;
    self->monitor(a);
    self->send_exit(a, caf::exit_reason::user_shutdown);
    self->receive([](const caf::down_msg&) {},
                  caf::after(std::chrono::milliseconds(cfg_.node.shutdown_drain_ms)) >> [] {});
  };
  await(root_);
  // Breakers front agents but sit outside the supervision tree: stop them too.
  for (auto& view : directory_->list({}, {}, directory_->size() + 1))
    if (view.has_breaker && view.target)
      await(view.target);
  for (auto& r : routers_)
    await(r);
  // What the supervisors did not remove (they stop before their children's down messages
  // arrive): an entry's handle would keep its agent alive, and a persisted agent's state
  // holds the directory (through the runtime context), so neither would ever be freed, and
  // the actor system would wait forever for a detached (blocking) one.
  for (auto& view : directory_->list({}, {}, directory_->size() + 1))
    directory_->erase(view.id);
  root_ = nullptr;
  // (routers_ stays as it is: an ask that raced with the stop goes to a router that stopped,
  // never into an empty list.)
  log::event(spdlog::level::info, "runtime_stopped");
}

namespace {

/// Feeds the store's reports into the node's metrics and log.
class metrics_store_observer : public store_observer {
public:
  explicit metrics_store_observer(std::shared_ptr<metrics> m) : m_(std::move(m)) {}

  void on_commit(size_t writes, double write_seconds) override {
    m_->journal_commit(writes, write_seconds);
  }

  void on_append_latency(double seconds) override {
    m_->journal_append(seconds);
  }

  void on_failure(std::string_view code) override {
    m_->storage_failure(code);
    log::event(spdlog::level::warn, "storage_failure", {{"code", std::string{code}}});
  }

private:
  std::shared_ptr<metrics> m_;
};

} // namespace

caf::expected<std::shared_ptr<store>> open_node_store(const node_config& cfg,
                                                      const std::string& data_dir,
                                                      std::shared_ptr<metrics> m,
                                                      std::shared_ptr<rocksdb::FileSystem> fs) {
  store_options o;
  o.file_system = std::move(fs);
  o.path = data_dir + "/db";
  auto& s = cfg.storage;
  o.commit_batch_writes_max = static_cast<size_t>(s.commit_batch_writes_max);
  o.commit_queue_writes_max = static_cast<size_t>(s.commit_queue_writes_max);
  o.record_bytes_max = static_cast<size_t>(s.record_bytes_max);
  o.block_cache_bytes = static_cast<size_t>(s.block_cache_bytes);
  o.write_buffer_bytes = static_cast<size_t>(s.write_buffer_bytes);
  if (m)
    o.observer = std::make_shared<metrics_store_observer>(std::move(m));
  auto opened = store::open(std::move(o));
  if (!opened)
    return std::move(opened.error());
  return std::shared_ptr<store>{std::move(*opened)};
}

} // namespace hive
