#include "runtime/agent_actor.hpp"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <future>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/inline_exec.hpp"
#include "runtime/logging.hpp"

namespace hive {

namespace {

/// A message an agent sends to another agent, released with its reply.
struct agent_call_out {
  agent_id to;
  agent_call call;
  call_context::outgoing::type_t type = call_context::outgoing::tell;
  std::chrono::milliseconds after{0};
  std::string tag;
  size_t limit = 0;
  /// ask: spawn the target with this kind if it does not exist.
  std::string ensure_kind;
  /// broadcast: the capability and who gets it.
  std::string capability;
  std::shared_ptr<const broadcast_filter> filter;
};

/// A reply held until the events before it are durable.
struct held_reply {
  uint64_t required_seq = 0;
  /// Invalid for a tell that holds only messages to send.
  caf::response_promise promise;
  caf::expected<std::string> result;
  /// What the call sent to other agents, released with the reply.
  std::vector<agent_call_out> outbox;
};

struct agent_actor_state {
  agent_actor_config cfg;
  std::shared_ptr<agent> instance;
  kind_metrics* km = nullptr;
  uint64_t handled = 0;
  /// Messages handled but not yet added to the shared counter (flushed in batches).
  uint64_t unflushed = 0;

  // -- persistence ---------------------------------------------------------------------------
  /// Last event applied in memory (journaled) / messages handled (snapshot).
  uint64_t applied_seq = 0;
  /// Last event known durable.
  uint64_t durable_seq = 0;
  /// Appends sent to the store and not yet completed.
  uint64_t inflight = 0;
  // Lists, not deques: an empty std::deque allocates ~600 bytes, and most agents hold none.
  std::list<held_reply> held;
  /// Idempotency window: key -> reply, and keys oldest first.
  std::unordered_map<std::string, std::string> dedup;
  std::list<records::dedup_entry> dedup_order;
  /// Events (journaled) / messages (snapshot) since the last snapshot was taken.
  uint64_t since_snapshot = 0;
  uint64_t snapshot_seq = 0;
  /// Journal events up to this one are deleted (a snapshot covered them).
  uint64_t pruned_through = 0;
  bool snapshot_timer = false;
  /// A write failed: calls are refused until the state is rebuilt from the store.
  bool recovering = false;
  /// Replicated: a write failed or a read found the majority gone (see stand_down): quitting.
  bool fenced = false;
  /// Replicated: when a majority last confirmed this activation's epoch (activation, an
  /// acknowledged write, a read's check).
  std::chrono::steady_clock::time_point last_confirmed = std::chrono::steady_clock::now();
  /// Passivation began (or the agent moved): calls are handed back to the supervisor.
  bool passivating = false;
  /// A migration is capturing the state: calls are handed back to the supervisor.
  bool migrating = false;
  /// The state is captured once no append is in flight any more.
  bool migrate_waiting = false;
  /// A move asked this activation to stop once no append is in flight (`migrate_hold_atom`,
  /// this token): it still serves.
  bool hold_wanted = false;
  uint64_t hold_token = 0;
  /// It stopped for a move (`migrating`) and waits for `migrate_go_atom`.
  bool held_for_move = false;
  /// Appends were in flight when it stopped for the move.
  bool stopped_in_flight = false;
  /// The state went with appends in flight (`migrate_quiet::ship_now`): the completion of the
  /// last one (or a failed one) tells the supervisor (`migrate_settled_atom`).
  bool migrate_settling = false;
  /// A move was called off and the working copy replaced while appends were in flight: the
  /// last completion reloads the state.
  bool reload_when_settled = false;
  /// The agent moved to another node: this activation only re-delivers until it quits.
  bool moved = false;
  /// Passivation is done (the state is written, the supervisor told): the activation only
  /// re-delivers calls that reach its stale handle, for `passivate_linger`.
  bool passivated = false;
  /// Asks, timers and provider lookups this activation set whose notice has not arrived yet
  /// (a resident agent with any is not idle).
  uint64_t pending_async = 0;
  /// `handled` at the last idle check.
  uint64_t handled_at_idle_check = 0;
  /// Idle checks passed before the first message.
  uint64_t idle_checks_unused = 0;
  /// `handled` at the last hibernation check, and such checks passed before the first message.
  uint64_t handled_at_hibernate_check = 0;
  uint64_t hibernate_checks_unused = 0;
  /// Hibernation began: calls are handed back to the supervisor until the actor quits.
  bool hibernating = false;

  static inline const char* name = "hive.agent";
};

using agent_actor_type = caf::stateful_actor<agent_actor_state>;

/// Batch size of counter updates: the shared Prometheus counter is an atomic that every agent
/// of a kind touches, so each agent adds its count in batches (and whenever it goes idle).
/// Flushing whenever the mailbox was empty cost ~10% of the tell path (bench/RESULTS.md).
constexpr uint64_t flush_every = 256;

using flush_atom = caf::atom_constant<caf::atom("flush")>;
using committed_atom = caf::atom_constant<caf::atom("committed")>;
using snapshotted_atom = caf::atom_constant<caf::atom("snapdone")>;
using snapshot_tick_atom = caf::atom_constant<caf::atom("snaptick")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
using reload_atom = caf::atom_constant<caf::atom("reload")>;
using hibernate_tick_atom = caf::atom_constant<caf::atom("hibtick")>;
using hibernate_quit_atom = caf::atom_constant<caf::atom("hibquit")>;

/// How long a hibernated activation keeps re-delivering calls that reach its old handle.
constexpr std::chrono::milliseconds hibernate_linger{100};

/// One message in this many is timed for `hive_message_handling_seconds`.
constexpr uint64_t time_every = 8;

void flush(agent_actor_type* self) {
  auto& st = self->state;
  if (st.unflushed > 0 && st.km != nullptr) {
    st.km->messages_handled->Increment(static_cast<double>(st.unflushed));
    st.unflushed = 0;
  }
}

std::string dedup_key(const std::string& client, uint64_t seq) {
  std::string k = client;
  k.push_back('\0');
  k += std::to_string(seq);
  return k;
}

void remember(agent_actor_state& st, records::dedup_entry e) {
  if (st.cfg.env->dedup_entries_max == 0)
    return;
  auto key = dedup_key(e.client_id, e.client_seq);
  if (!st.dedup.emplace(key, e.reply).second)
    return;
  st.dedup_order.push_back(std::move(e));
  while (st.dedup_order.size() > st.cfg.env->dedup_entries_max) {
    auto& old = st.dedup_order.front();
    st.dedup.erase(dedup_key(old.client_id, old.client_seq));
    st.dedup_order.pop_front();
  }
}

void load_position(agent_actor_state& st, durable_position& pos) {
  st.applied_seq = st.durable_seq = pos.seq;
  st.snapshot_seq = pos.snapshot_seq;
  st.since_snapshot = pos.seq - pos.snapshot_seq;
  // The snapshot that is stored pruned what it covered, minus the retention.
  st.pruned_through = pos.snapshot_seq > st.cfg.env->journal_retention_events
    ? pos.snapshot_seq - st.cfg.env->journal_retention_events
    : 0;
  st.dedup.clear();
  st.dedup_order.clear();
  for (auto& e : pos.dedup)
    remember(st, std::move(e));
  pos.dedup.clear();
}

caf::actor self_handle(agent_actor_type* self) {
  return caf::actor_cast<caf::actor>(self);
}

/// A call to the agent itself carrying a notice of its own asynchronous work.
agent_call notice_call(const agent_id& self_id, uint64_t correlation_id, std::string sender,
                       agent_notice n) {
  return agent_call{envelope{correlation_id, self_id.tenant, 0, std::move(sender), {}, 0},
                    {},
                    caf::make_message(std::move(n))};
}

/// Runs a function after a delay (on a short-lived actor of the system): the retries of
/// `ask_ensuring`.
using later_fn = std::function<void(std::chrono::milliseconds, std::function<void()>)>;

using retry_atom = caf::atom_constant<caf::atom("retry")>;

later_fn later_on(caf::actor_system& sys) {
  return [&sys](std::chrono::milliseconds delay, std::function<void()> f) {
    // (The delay goes in as a spawn argument: CAF 0.17 spawns a function actor without
    // arguments through a null tuple pointer, which UBSan reports.)
    sys.spawn(
      [f = std::move(f)](caf::event_based_actor* a, std::chrono::milliseconds d) -> caf::behavior {
        a->delayed_send(a, d, retry_atom::value);
        return {[a, f](retry_atom) {
          f();
          a->quit();
        }};
      },
      delay);
  };
}

void ask_ensuring(const agent_actor_config& cfg, const later_fn& later, const agent_id& to,
                  agent_call call, std::chrono::milliseconds timeout,
                  const std::string& ensure_kind,
                  std::function<void(caf::expected<std::string>)> done);

/// Sends what a call sent to other agents (it succeeded and is durable), starts its asks,
/// timers and provider lookups.
template <class Self>
void send_outbox(Self* self, std::vector<agent_call_out>& outbox) {
  auto& st = self->state;
  using out_t = call_context::outgoing;
  if (st.km != nullptr && !outbox.empty()) {
    auto sent = std::count_if(outbox.begin(), outbox.end(),
                              [](const agent_call_out& m) { return m.type != out_t::timer; });
    if (sent > 0)
      st.km->messages_sent->Increment(static_cast<double>(sent));
  }
  for (auto& m : outbox) {
    auto cid = m.call.env.correlation_id;
    switch (m.type) {
      case out_t::tell:
        if (st.cfg.env->send)
          st.cfg.env->send(st.cfg.id, m.to, std::move(m.call));
        else
          log::event(spdlog::level::warn, "agent_send_dropped", {{"to", m.to.str()}},
                     st.cfg.id.str(), cid);
        break;
      case out_t::timer:
        ++st.pending_async;
        self->delayed_send(self, m.after,
                           notice_call(st.cfg.id, cid, st.cfg.id.str(),
                                       agent_notice{agent_notice::timer, std::move(m.tag), 0, {}}));
        break;
      case out_t::ask: {
        ++st.pending_async;
        // The reply travels back by id: it finds this agent wherever it lives by then.
        auto back = [env = st.cfg.env, self_id = st.cfg.id, to = m.to.str(), cid,
                     tag = std::move(m.tag)](caf::expected<std::string> r) mutable {
          agent_notice n{agent_notice::reply, std::move(tag), 0, {}};
          if (r) {
            n.body = std::move(*r);
          } else {
            n.code = static_cast<uint16_t>(code_of(r.error()));
            n.body = message_of(r.error());
          }
          if (env->send)
            env->send(self_id, self_id, notice_call(self_id, cid, to, std::move(n)));
        };
        // (The retry timer only for ensured asks: most asks never need it.)
        ask_ensuring(st.cfg, m.ensure_kind.empty() ? later_fn{} : later_on(self->system()), m.to,
                     std::move(m.call), m.after, m.ensure_kind, std::move(back));
        break;
      }
      case out_t::event:
        if (st.cfg.env->metrics)
          st.cfg.env->metrics->events().publish(
            {std::move(m.tag), st.cfg.id.str(), st.cfg.kind,
             nlohmann::json::parse(m.call.body, nullptr, false)});
        break;
      case out_t::broadcast: {
        ++st.pending_async;
        auto back = [env = st.cfg.env, self_id = st.cfg.id, cid, cap = m.capability,
                     filter = m.filter, call = std::move(m.call),
                     tag = std::move(m.tag)](std::string answer) mutable {
          auto j = nlohmann::json::parse(answer, nullptr, false);
          auto sent = nlohmann::json::array();
          if (!j.is_discarded() && filter != nullptr) {
            for (auto& id : filter->select(j)) {
              if (env->send)
                env->send(self_id, id, call);
              sent.push_back(id.str());
            }
          }
          nlohmann::json out{{"capability", cap},
                             {"sent_to", std::move(sent)},
                             {"nodes_failed",
                              j.is_object() && j.contains("nodes_failed")
                                ? j["nodes_failed"]
                                : nlohmann::json::array()}};
          if (env->send)
            env->send(
              self_id, self_id,
              notice_call(self_id, cid, self_id.str(),
                          agent_notice{agent_notice::broadcast, std::move(tag), 0, out.dump()}));
        };
        if (st.cfg.env->providers)
          st.cfg.env->providers(m.capability, st.cfg.id.tenant, broadcast_recipients_max,
                                std::move(back));
        else
          back(R"({"providers":[],"nodes_failed":[]})");
        break;
      }
      case out_t::lookup: {
        ++st.pending_async;
        auto back = [env = st.cfg.env, self_id = st.cfg.id, cid,
                     tag = std::move(m.tag)](std::string answer) mutable {
          if (env->send)
            env->send(self_id, self_id,
                      notice_call(self_id, cid, self_id.str(),
                                  agent_notice{agent_notice::providers, std::move(tag), 0,
                                               std::move(answer)}));
        };
        if (st.cfg.env->providers)
          st.cfg.env->providers(m.call.body, st.cfg.id.tenant, m.limit, std::move(back));
        else
          back(R"({"providers":[],"nodes_failed":[]})");
        break;
      }
    }
  }
  outbox.clear();
}

/// How often `ask_ensuring` asks again when the target it made sure of is not found yet (a
/// spawn of the same id by another agent may still be writing its record).
constexpr int ensure_attempts_max = 8;

/// True for the answers of an id that does not exist yet, or whose spawn is still under way
/// (an activation that finds its record written but the spawn's reservation still held answers
/// `agent_failed` "... is being created, retry"): an ensured ask tries again. A crash of the
/// target (also `agent_failed`) is not retried: its call may have had effects.
bool not_there_yet(const caf::error& err) {
  if (code_of(err) == errc::agent_not_found)
    return true;
  return code_of(err) == errc::agent_failed
    && message_of(err).find(" is being created, retry") != std::string::npos;
}

/// Asks `to` through the runtime's asker; with `ensure_kind` set, a target that does not exist
/// is spawned with that kind (`agent_actor_config::ensure`) and asked again: while another
/// spawn of the id is still under way (the ensure finds it exists, the ask does not find it
/// yet), up to `ensure_attempts_max` times with a growing pause, within `timeout`.
void ask_ensuring(const agent_actor_config& cfg, const later_fn& later, const agent_id& to,
                  agent_call call, std::chrono::milliseconds timeout,
                  const std::string& ensure_kind,
                  std::function<void(caf::expected<std::string>)> done) {
  auto& env = cfg.env;
  if (!env->ask)
    return done(make_error(errc::shutting_down, "asks from agents are not wired on this node"));
  if (ensure_kind.empty() || !env->ensure)
    return env->ask(to, std::move(call), timeout, std::move(done));
  struct attempt_state {
    std::shared_ptr<const agent_env> env;
    agent_id by;
    later_fn later;
    agent_id to;
    agent_call call;
    std::string kind;
    std::chrono::steady_clock::time_point deadline;
    std::function<void(caf::expected<std::string>)> done;
    int attempts = 0;
  };
  auto st = std::make_shared<attempt_state>(
    attempt_state{env, cfg.id, later, to, std::move(call), ensure_kind,
                  std::chrono::steady_clock::now() + timeout, std::move(done)});
  // One attempt: ask; not found -> ensure, then the next attempt (after a pause from the second
  // on).
  auto run = std::make_shared<std::function<void()>>();
  *run = [st, weak_run = std::weak_ptr<std::function<void()>>{run}]() {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      st->deadline - std::chrono::steady_clock::now());
    if (left.count() < 1)
      return st->done(
        make_error(errc::timeout, "no answer from " + st->to.str() + " before the ask's timeout"));
    auto next = weak_run.lock();
    st->env->ask(st->to, st->call, left, [st, next](caf::expected<std::string> r) {
      if (r || !not_there_yet(r.error()) || ++st->attempts > ensure_attempts_max || !next)
        return st->done(std::move(r));
      st->env->ensure(st->by, st->to, st->kind, [st, next](caf::error err) {
        if (err)
          return st->done(std::move(err));
        if (st->attempts == 1 || !st->later)
          return (*next)();
        st->later(std::chrono::milliseconds{10 * st->attempts}, [next] { (*next)(); });
      });
    });
  };
  (*run)();
}

/// The deadline (Unix ms) of an ask an agent makes with `timeout` while it handles a call
/// whose own deadline is `caller_deadline_unix_ms` (0: none). `call_context` cut the timeout to
/// what was left of the caller's; the cap keeps the millisecond rounding of that (the clock
/// read twice) from handing on a deadline later than the caller's.
int64_t outgoing_deadline(std::chrono::milliseconds timeout, int64_t caller_deadline_unix_ms) {
  auto deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch() + timeout)
                    .count();
  return caller_deadline_unix_ms != 0 ? std::min(deadline, caller_deadline_unix_ms) : deadline;
}

/// `call_context::ask_now` of a blocking agent (its own thread may wait): sends every ask at
/// once through the runtime's asker and waits until all are answered. The runtime answers each
/// ask by its timeout; a guard a little later marks any still missing as timed out (a late
/// answer then finds the shared state alive and is dropped).
std::vector<caf::expected<std::string>> ask_and_wait(const agent_actor_config& cfg,
                                                     const later_fn& later, uint64_t correlation_id,
                                                     int64_t caller_deadline_unix_ms,
                                                     std::vector<call_context::request>& reqs,
                                                     std::chrono::milliseconds timeout) {
  struct shared {
    std::mutex mtx;
    std::condition_variable cv;
    std::vector<std::optional<caf::expected<std::string>>> answers;
    size_t open = 0;
  };
  auto sh = std::make_shared<shared>();
  sh->answers.resize(reqs.size());
  sh->open = reqs.size();
  auto deadline = outgoing_deadline(timeout, caller_deadline_unix_ms);
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto done = [sh, i](caf::expected<std::string> r) {
      std::lock_guard<std::mutex> guard{sh->mtx};
      if (sh->answers[i])
        return;
      sh->answers[i] = std::move(r);
      if (--sh->open == 0)
        sh->cv.notify_all();
    };
    auto& r = reqs[i];
    agent_call call{envelope{correlation_id, r.to.tenant, deadline, cfg.id.str(),
                             std::move(r.client_id), r.client_seq},
                    std::move(r.body),
                    {}};
    ask_ensuring(cfg, later, r.to, std::move(call), timeout, r.ensure_kind, std::move(done));
  }
  std::unique_lock<std::mutex> lock{sh->mtx};
  sh->cv.wait_for(lock, timeout + std::chrono::seconds(2), [&] { return sh->open == 0; });
  std::vector<caf::expected<std::string>> out;
  out.reserve(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (!sh->answers[i])
      sh->answers[i] = make_error(errc::timeout,
                                  reqs[i].to.str() + " did not answer within "
                                    + std::to_string(timeout.count()) + " ms");
    out.push_back(std::move(*sh->answers[i]));
  }
  return out;
}

/// Ends a replicated activation that may no longer commit or serve (`why`: fenced, no_quorum,
/// a storage error): fails whoever waits, tells the supervisor (which forgets the agent without
/// a restart, dropping this node's working copy when fenced) and quits.
void stand_down(agent_actor_type* self, const caf::error& why) {
  auto& st = self->state;
  if (st.fenced)
    return;
  st.fenced = true;
  bool fenced = code_of(why) == errc::fenced;
  log::event(spdlog::level::warn, fenced ? "agent_fenced" : "agent_stood_down",
             {{"seq", st.applied_seq}, {"reason", describe(why)}}, st.cfg.id.str());
  for (auto& h : st.held)
    if (h.promise.pending())
      h.promise.deliver(why);
  st.held.clear();
  // A moved activation (its state left with appends still in flight, whose completions come
  // later) tells its supervisor nothing: the id may be running here again by now, and the
  // supervisor would forget that activation and erase its working copy.
  if (st.cfg.parent && !st.moved)
    self->send(st.cfg.parent, fenced_atom::value, st.cfg.id, fenced);
  self->quit(caf::exit_reason::normal);
}

void release_held(agent_actor_type* self) {
  auto& st = self->state;
  while (!st.held.empty() && st.held.front().required_seq <= st.durable_seq) {
    auto h = std::move(st.held.front());
    st.held.pop_front();
    send_outbox(self, h.outbox);
    if (!h.promise.pending())
      continue;
    if (h.result)
      h.promise.deliver(agent_reply{std::move(*h.result)});
    else
      h.promise.deliver(std::move(h.result.error()));
  }
}

/// Appends one event: through the replicator when there is one, else to the store.
template <class State>
void append_event(State& st, records::event_record ev, store::done_fn done) {
  if (st.cfg.env->append)
    st.cfg.env->append(std::move(ev), std::move(done));
  else
    st.cfg.env->db->append(std::move(ev), std::move(done));
}

/// Writes a snapshot of the current state. Journaled: the store refuses it unless the journal
/// covers it; events it covers (minus the retention) are pruned in the same batch.
void take_snapshot(agent_actor_type* self) {
  auto& st = self->state;
  if (!st.instance)
    return; // hibernated: the state went to the slot (its snapshot was current)
  records::snapshot_record snap;
  snap.hdr = {st.cfg.id.str(), st.cfg.position.epoch, st.applied_seq};
  snap.state = st.instance->snapshot();
  snap.dedup.assign(st.dedup_order.begin(), st.dedup_order.end());
  bool journaled = st.cfg.mode == persistence_mode::journaled;
  uint64_t prune = 0;
  if (journaled && st.applied_seq > st.cfg.env->journal_retention_events)
    prune = st.applied_seq - st.cfg.env->journal_retention_events;
  st.since_snapshot = 0;
  if (journaled && st.cfg.env->replicate_snapshot)
    st.cfg.env->replicate_snapshot(snap, prune);
  st.cfg.env->db->put_snapshot(
    std::move(snap), prune,
    [h = self_handle(self), seq = st.applied_seq](caf::error err) {
      caf::anon_send(h, snapshotted_atom::value, seq, std::move(err));
    },
    journaled, prune > st.pruned_through ? st.pruned_through + 1 : 0);
}

void schedule_idle_check(agent_actor_type* self) {
  auto& st = self->state;
  if (st.cfg.env->passivate_idle.count() > 0 && st.cfg.parent)
    self->delayed_send(self, st.cfg.env->passivate_idle, idle_atom::value);
}

/// Nothing in flight and no state change under way: what both the passivation and the
/// hibernation checks ask of an idle agent (each adds its own conditions).
bool settled(const agent_actor_state& st) {
  return st.inflight == 0 && st.held.empty() && !st.recovering && !st.passivating && !st.migrating
    && !st.hibernating;
}

bool may_hibernate(const agent_actor_state& st) {
  return st.cfg.slot != nullptr && st.cfg.env->hibernate_idle.count() > 0 && st.cfg.parent;
}

void schedule_hibernate_check(agent_actor_type* self) {
  auto& st = self->state;
  if (may_hibernate(st))
    self->delayed_send(self, st.cfg.env->hibernate_idle, hibernate_tick_atom::value);
}

/// Rebuilds the state from the store after a failed write. Retries later if reading fails.
void reload(agent_actor_type* self) {
  auto& st = self->state;
  assert(st.inflight == 0);
  durable_position pos;
  pos.epoch = st.cfg.position.epoch;
  auto fresh = st.cfg.env->restore
    ? st.cfg.env->restore(st.cfg, pos)
    : caf::expected<std::shared_ptr<agent>>{make_error(errc::internal, "no restore function")};
  if (!fresh) {
    log::event(spdlog::level::warn, "agent_reload_failed", {{"reason", describe(fresh.error())}},
               st.cfg.id.str());
    self->delayed_send(self, std::chrono::milliseconds(200), reload_atom::value);
    return;
  }
  st.instance = std::move(*fresh);
  load_position(st, pos);
  st.recovering = false;
  log::event(spdlog::level::info, "agent_reloaded", {{"seq", st.applied_seq}}, st.cfg.id.str());
}

void start_passivation(agent_actor_type* self);
void finish_passivation(agent_actor_type* self);
caf::error commit_now(agent_actor_type* self, std::vector<std::string>& events);
uint64_t queued_messages(agent_actor_type* self);

/// Hands the supervisor the state of a migrating agent; `settled`: every applied event is
/// durable (else `migrate_settled_atom` follows).
void send_migration_state(agent_actor_type* self, bool settled) {
  auto& st = self->state;
  st.migrate_waiting = false;
  if (st.recovering) {
    self->send(st.cfg.parent, migrate_state_atom::value, st.cfg.id,
               make_error(errc::storage_error,
                          st.cfg.id.str() + " is rebuilding its state after a storage failure"));
    return;
  }
  records::snapshot_record snap;
  snap.hdr = {st.cfg.id.str(), st.cfg.position.epoch, st.applied_seq};
  snap.state = st.instance->snapshot();
  snap.dedup.assign(st.dedup_order.begin(), st.dedup_order.end());
  st.migrate_settling = !settled;
  self->send(st.cfg.parent, migrate_state_atom::value, st.cfg.id, records::encode(snap), settled,
             st.stopped_in_flight);
}

/// Stops the activation for a move (`migrate_hold_atom`): calls are re-delivered to the
/// supervisor from now on, which learns when it stopped.
void hold_for_move(agent_actor_type* self) {
  auto& st = self->state;
  st.hold_wanted = false;
  st.migrating = true;
  st.held_for_move = true;
  st.stopped_in_flight = st.inflight > 0;
  auto now = std::chrono::steady_clock::now().time_since_epoch();
  self->send(
    st.cfg.parent, migrate_held_atom::value, st.cfg.id, st.hold_token,
    static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()));
}

/// The deadline of a hold (`migrate_hold_atom`): the activation stops even with appends in
/// flight.
using migrate_hold_due_atom = caf::atom_constant<caf::atom("migrhdue")>;

caf::behavior agent_actor_fn(agent_actor_type* self, agent_actor_config cfg,
                             std::shared_ptr<agent> instance) {
  assert(instance != nullptr);
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.instance = std::move(instance);
  bool persisted = st.cfg.mode != persistence_mode::ephemeral && st.cfg.env->db != nullptr;
  if (!persisted)
    st.cfg.mode = persistence_mode::ephemeral;
  load_position(st, st.cfg.position);
  if (st.cfg.env->metrics) {
    st.km = &st.cfg.env->metrics->for_kind(st.cfg.kind);
    st.cfg.env->metrics->agents_live_add(1);
  }
  self->attach_functor([m = st.cfg.env->metrics](const caf::error&) {
    if (m)
      m->agents_live_add(-1);
  });
  if (st.cfg.resident)
    self->send(
      self,
      notice_call(st.cfg.id, 0, st.cfg.id.str(), agent_notice{agent_notice::wake, {}, 0, {}}));
  schedule_hibernate_check(self);
  if (persisted) {
    schedule_idle_check(self);
    // Stopped (node shutdown, restart of a group): a snapshot kind writes what it has.
    self->set_exit_handler([self](caf::exit_msg& msg) {
      auto& st = self->state;
      if (st.cfg.mode == persistence_mode::snapshot && st.since_snapshot > 0 && !st.passivating)
        take_snapshot(self);
      for (auto& h : st.held)
        if (h.promise.pending())
          h.promise.deliver(make_error(errc::agent_failed, st.cfg.id.str() + " stopped"));
      st.held.clear();
      self->quit(std::move(msg.reason));
    });
  }
  return {
    [self](agent_call& call) {
      // Tells need no answer: only a request gets a response promise (and the message that
      // carries the reply), which keeps the tell path free of that allocation.
      auto& st = self->state;
      if (st.passivating || st.migrating || st.hibernating) {
        // Sent before the directory forgot this activation: the next one (here or on the node
        // the agent moves to) handles it.
        self->delegate(st.cfg.parent, redeliver_atom::value, st.cfg.id, std::move(call));
        return;
      }
      bool is_request = self->current_mailbox_element()->mid.is_request();
      if (st.pending_async > 0 && call.content.match_elements<agent_notice>()
          && call.content.get_as<agent_notice>(0).what != agent_notice::wake)
        --st.pending_async; // (a notice for an earlier activation may arrive here too)
      std::vector<agent_call_out> outbox; // what a successful call sends to other agents
      auto answer = [&](caf::expected<std::string> result) {
        if (!result)
          outbox.clear(); // a failed call has no effects
        if (!is_request && outbox.empty())
          return;
        caf::response_promise rp;
        if (is_request)
          rp = self->make_response_promise();
        if (st.durable_seq < st.applied_seq) {
          // Earlier events are not durable yet: nobody may see state that could be lost.
          st.held.push_back({st.applied_seq, std::move(rp), std::move(result), std::move(outbox)});
          return;
        }
        if (result && st.cfg.env->confirm_epoch) {
          // A read of a replicated agent (nothing new to write): served only while this
          // activation is known to hold a majority (a minority side, or a host that was frozen
          // while a survivor took over, could serve stale state).
          auto now = std::chrono::steady_clock::now();
          caf::error stale;
          if (st.cfg.env->quorum_reachable && !st.cfg.env->quorum_reachable(st.cfg.id))
            stale = make_error(errc::no_quorum,
                               st.cfg.id.str()
                                 + ": this node cannot reach a majority of the agent's replicas, "
                                   "so its state may be stale");
          else if (now - st.last_confirmed > st.cfg.env->read_lease)
            stale = st.cfg.env->confirm_epoch(st.cfg.id, st.cfg.position.epoch);
          if (stale) {
            outbox.clear();
            if (is_request) {
              if (code_of(stale) == errc::fenced)
                // A newer activation serves the agent elsewhere, and this read changed nothing:
                // the caller looks for it on the other members (cluster::call, as for an agent
                // that moved), where it gets the answer instead of this activation's end.
                rp.deliver(make_error(errc::agent_not_found,
                                      st.cfg.id.str() + " is not active here any more ("
                                        + message_of(stale) + "); the read was not served"));
              else
                rp.deliver(stale);
            }
            return stand_down(self, stale);
          }
          st.last_confirmed = now;
        }
        send_outbox(self, outbox);
        if (!is_request)
          return;
        if (result)
          rp.deliver(agent_reply{std::move(*result)});
        else
          rp.deliver(std::move(result.error()));
      };
      if (st.recovering)
        return answer(
          make_error(errc::storage_error,
                     st.cfg.id.str() + " is rebuilding its state after a storage failure"));
      if (call.env.deadline_unix_ms != 0) {
        auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
        if (now_ms > call.env.deadline_unix_ms)
          return answer(make_error(errc::timeout,
                                   st.cfg.id.str() + ": the call's deadline passed "
                                     + std::to_string(now_ms - call.env.deadline_unix_ms)
                                     + " ms before it was handled; not handled"));
      }
      bool keyed = st.cfg.mode == persistence_mode::journaled && !call.env.client_id.empty();
      if (keyed) {
        auto i = st.dedup.find(dedup_key(call.env.client_id, call.env.client_seq));
        if (i != st.dedup.end()) {
          if (st.km != nullptr)
            st.km->duplicates->Increment();
          return answer(i->second);
        }
      }
      // Latency is sampled (one message in `time_every`): reading the clock twice per message
      // cost ~6% of the tell path.
      bool timed = st.km != nullptr && st.handled % time_every == 0;
      std::chrono::steady_clock::time_point t0;
      if (timed)
        t0 = std::chrono::steady_clock::now();
      call_context ctx{st.cfg.id, call.env, call.body, st.cfg.env->json_depth_max, call.content};
      ctx.bind(st.instance.get());
      if (st.cfg.detached && st.cfg.mode == persistence_mode::journaled)
        ctx.set_committer(
          [self](std::vector<std::string>& events) { return commit_now(self, events); });
      if (st.cfg.detached)
        ctx.set_waiter(
          [self, &st, cid = call.env.correlation_id, caller = call.env.deadline_unix_ms](
            std::vector<call_context::request>& reqs, std::chrono::milliseconds timeout) {
            return ask_and_wait(st.cfg, later_on(self->system()), cid, caller, reqs, timeout);
          });
      caf::expected<std::string> result{std::string{}};
      try {
        result = st.instance->handle(ctx);
      } catch (const std::exception& e) {
        result = make_error(errc::agent_failed, st.cfg.id.str() + " crashed: " + e.what());
      } catch (...) {
        result = make_error(errc::agent_failed, st.cfg.id.str() + " crashed");
      }
      if (st.cfg.detached)
        forget_cached_lookups(); // see there: this thread's handles die with the call
      for (auto& m : ctx.outbox()) {
        int64_t deadline = 0;
        if (m.type == call_context::outgoing::ask)
          deadline = outgoing_deadline(m.after, call.env.deadline_unix_ms);
        outbox.push_back(
          {m.to,
           agent_call{envelope{call.env.correlation_id, m.to.tenant, deadline, st.cfg.id.str(),
                               std::move(m.client_id), m.client_seq},
                      std::move(m.body), std::move(m.content)},
           m.type, m.after, std::move(m.tag), m.limit, std::move(m.ensure_kind),
           std::move(m.capability), std::move(m.filter)});
      }
      ++st.handled;
      ++st.unflushed;
      // The load that capability queries show: sampled every 8th message, and whenever the
      // mailbox is empty (so an idle agent shows 0).
      if (st.cfg.load && ((st.handled & 7) == 0 || self->mailbox().empty()))
        st.cfg.load->store(queued_messages(self), std::memory_order_relaxed);
      if (timed) {
        auto dt = std::chrono::steady_clock::now() - t0;
        st.km->handling->Observe(std::chrono::duration<double>(dt).count());
        st.km->mailbox->Observe(static_cast<double>(queued_messages(self)));
      }
      // Counter updates go out in batches: after flush_every messages, or when the messages
      // queued behind this one are done (the flush message goes to the back of the mailbox),
      // so an idle agent's count is exact.
      if (st.unflushed >= flush_every)
        flush(self);
      else if (st.unflushed == 1)
        self->send(self, flush_atom::value);
      if (!result && code_of(result.error()) == errc::agent_failed) {
        // A crash: answer the caller, then die so the supervisor restarts a fresh instance
        // (persisted kinds: restored from the store, so events applied here are dropped).
        if (st.km != nullptr)
          st.km->failures->Increment();
        log::event(spdlog::level::warn, "agent_crashed",
                   {{"kind", st.cfg.kind}, {"reason", message_of(result.error())}}, st.cfg.id.str(),
                   call.env.correlation_id);
        if (st.cfg.env->metrics)
          st.cfg.env->metrics->events().publish({"agent_crashed",
                                                 st.cfg.id.str(),
                                                 st.cfg.kind,
                                                 {{"reason", message_of(result.error())}}});
        flush(self);
        auto reason = result.error();
        answer(std::move(result));
        self->quit(std::move(reason));
        return;
      }
      if (st.cfg.mode == persistence_mode::journaled) {
        auto& events = ctx.events();
        for (size_t i = 0; i < events.size(); ++i) {
          records::event_record ev;
          ev.hdr = {st.cfg.id.str(), st.cfg.position.epoch, ++st.applied_seq};
          ev.payload = std::move(events[i]);
          if (keyed && i + 1 == events.size() && result) {
            ev.client_id = call.env.client_id;
            ev.client_seq = call.env.client_seq;
            ev.reply = *result;
          }
          ++st.inflight;
          append_event(st, std::move(ev),
                       [h = self_handle(self), seq = st.applied_seq](caf::error err) {
                         caf::anon_send(h, committed_atom::value, seq, std::move(err));
                       });
        }
        if (!events.empty()) {
          if (keyed && result)
            remember(st, {call.env.client_id, call.env.client_seq, *result});
          st.since_snapshot += events.size();
          if (st.since_snapshot >= st.cfg.env->snapshot_every_events)
            take_snapshot(self);
        }
      } else if (st.cfg.mode == persistence_mode::snapshot) {
        ++st.applied_seq;
        st.durable_seq = st.applied_seq; // snapshot kinds promise no durability per reply
        if (++st.since_snapshot >= st.cfg.env->snapshot_every_messages) {
          take_snapshot(self);
        } else if (!st.snapshot_timer && st.cfg.env->snapshot_interval.count() > 0) {
          st.snapshot_timer = true;
          self->delayed_send(self, st.cfg.env->snapshot_interval, snapshot_tick_atom::value);
        }
      }
      answer(std::move(result));
    },
    [self](committed_atom, uint64_t seq, caf::error& err) {
      auto& st = self->state;
      assert(st.inflight > 0);
      --st.inflight;
      if (st.migrate_settling && (err || st.inflight == 0)) {
        // The state left ahead of its last appends: whether they all made it decides the move.
        st.migrate_settling = false;
        self->send(st.cfg.parent, migrate_settled_atom::value, st.cfg.id, err);
      }
      if (st.fenced)
        return;
      if (err && st.cfg.env->append) {
        // Replicated: a write that did not reach a majority (or was fenced) ends this
        // activation; the next one learns from a majority what was committed. (Reloading the
        // local copy would serve its unacknowledged events as if they were.)
        log::event(spdlog::level::warn, "journal_append_failed",
                   {{"seq", seq}, {"reason", describe(err)}}, st.cfg.id.str());
        return stand_down(self, err);
      }
      if (!err && st.cfg.env->append)
        st.last_confirmed = std::chrono::steady_clock::now();
      if (err) {
        if (!st.recovering) {
          st.recovering = true;
          log::event(spdlog::level::err, "journal_append_failed",
                     {{"seq", seq}, {"reason", describe(err)}}, st.cfg.id.str());
          // Nothing after the last durable event is acknowledged: fail whoever waits.
          for (auto& h : st.held)
            if (h.promise.pending())
              h.promise.deliver(err);
          st.held.clear();
        }
      } else if (!st.recovering) {
        st.durable_seq = std::max(st.durable_seq, seq);
        release_held(self);
      }
      if (st.hold_wanted && st.inflight == 0)
        hold_for_move(self); // quiet: the move's pause starts with nothing left to wait for
      if (st.migrate_waiting && st.inflight == 0)
        send_migration_state(self, true);
      if (st.reload_when_settled && st.inflight == 0) {
        st.reload_when_settled = false;
        reload(self);
      } else if (st.recovering && st.inflight == 0) {
        reload(self);
      }
    },
    [self](snapshotted_atom, uint64_t seq, caf::error& err) {
      auto& st = self->state;
      if (!err) {
        st.snapshot_seq = std::max(st.snapshot_seq, seq);
        if (seq > st.cfg.env->journal_retention_events)
          st.pruned_through =
            std::max(st.pruned_through, seq - st.cfg.env->journal_retention_events);
      } else if (code_of(err) != errc::conflict) {
        // A refused snapshot (conflict) only means an append failed first; that path recovers.
        log::event(spdlog::level::warn, "snapshot_failed",
                   {{"seq", seq}, {"reason", describe(err)}}, st.cfg.id.str());
      }
      if (st.passivating && !st.moved)
        finish_passivation(self); // the final snapshot is done (or failed: a journaled
                                  // agent loses nothing by it)
    },
    [self](snapshot_tick_atom) {
      auto& st = self->state;
      st.snapshot_timer = false;
      if (st.since_snapshot > 0 && !st.passivating)
        take_snapshot(self);
    },
    [self](reload_atom) {
      auto& st = self->state;
      if (st.recovering && st.inflight == 0)
        reload(self);
    },
    [self](idle_atom) {
      auto& st = self->state;
      if (st.passivating || st.moved)
        return; // (checks resume only in a next activation)
      // A fresh activation waits for the message that activated it (it may still be on its
      // way through a busy router) for a few idle periods before it counts as idle.
      constexpr uint64_t fresh_idle_checks = 10;
      bool waiting_first = st.handled == 0 && ++st.idle_checks_unused < fresh_idle_checks;
      bool idle = !waiting_first && st.handled == st.handled_at_idle_check && settled(st)
        && (!st.cfg.resident || st.pending_async == 0);
      st.handled_at_idle_check = st.handled;
      if (idle)
        self->send(st.cfg.parent, passivate_req_atom::value, st.cfg.id, self_handle(self));
      else
        schedule_idle_check(self);
    },
    [self](passivate_go_atom) { start_passivation(self); },
    [self](hibernate_tick_atom) {
      auto& st = self->state;
      if (st.passivating || st.moved)
        return;
      // As for passivation: a fresh activation first waits a few periods for its first call.
      constexpr uint64_t fresh_checks = 3;
      bool waiting_first = st.handled == 0 && ++st.hibernate_checks_unused < fresh_checks;
      // A snapshot kind hibernates only with its snapshot current (a stop while hibernated
      // writes nothing); a journaled one only with every event durable.
      bool idle = !waiting_first && st.handled == st.handled_at_hibernate_check && settled(st)
        && st.pending_async == 0
        && (st.cfg.mode != persistence_mode::snapshot || st.since_snapshot == 0)
        && self->mailbox().empty();
      st.handled_at_hibernate_check = st.handled;
      if (idle)
        self->send(st.cfg.parent, hibernate_req_atom::value, st.cfg.id, self_handle(self));
      else
        schedule_hibernate_check(self);
    },
    [self](hibernate_go_atom) {
      auto& st = self->state;
      if (!settled(st) || st.cfg.slot == nullptr) {
        // Busy again: the supervisor gets its state back at once (no state was handed over).
        self->send(st.cfg.parent, hibernated_atom::value, st.cfg.id, false, self_handle(self));
        schedule_hibernate_check(self);
        return;
      }
      flush(self);
      st.hibernating = true;
      st.cfg.slot->instance = std::move(st.instance);
      if (st.cfg.mode != persistence_mode::ephemeral) {
        durable_position pos;
        pos.seq = st.applied_seq;
        pos.snapshot_seq = st.snapshot_seq;
        pos.epoch = st.cfg.position.epoch;
        pos.dedup.assign(std::make_move_iterator(st.dedup_order.begin()),
                         std::make_move_iterator(st.dedup_order.end()));
        st.cfg.slot->position = std::move(pos);
      }
      log::event(spdlog::level::debug, "agent_hibernating", {{"handled", st.handled}},
                 st.cfg.id.str());
      self->send(st.cfg.parent, hibernated_atom::value, st.cfg.id, true, self_handle(self));
      self->delayed_send(self, hibernate_linger, hibernate_quit_atom::value);
    },
    [self](hibernate_quit_atom) { self->quit(caf::exit_reason::normal); },
    [self](migrate_epoch_atom) -> caf::result<uint64_t> {
      auto& st = self->state;
      if (st.passivating || st.migrating || st.hibernating || st.recovering)
        return make_error(errc::conflict,
                          st.cfg.id.str() + " is passivating, migrating or rebuilding its state");
      return st.cfg.position.epoch;
    },
    [self](migrate_hold_atom, uint64_t token, uint64_t wait_ms) {
      auto& st = self->state;
      if (st.passivating || st.migrating || st.hibernating || st.hold_wanted) {
        self->send(st.cfg.parent, migrate_state_atom::value, st.cfg.id,
                   make_error(errc::conflict, st.cfg.id.str() + " is passivating or migrating"));
        return;
      }
      st.hold_token = token;
      if (st.inflight == 0 || wait_ms == 0 || st.recovering)
        return hold_for_move(self);
      st.hold_wanted = true; // the completion that leaves none in flight stops it
      self->delayed_send(self, std::chrono::milliseconds(wait_ms), migrate_hold_due_atom::value,
                         token);
    },
    [self](migrate_hold_due_atom, uint64_t token) {
      auto& st = self->state;
      if (st.hold_wanted && st.hold_token == token)
        hold_for_move(self); // never quiet for that long: it stops with appends in flight
    },
    [self](migrate_go_atom, migrate_quiet& quiet) {
      auto& st = self->state;
      if (st.passivating || (st.migrating && !st.held_for_move) || st.hibernating) {
        self->send(st.cfg.parent, migrate_state_atom::value, st.cfg.id,
                   make_error(errc::conflict, st.cfg.id.str() + " is passivating or migrating"));
        return;
      }
      if (!st.held_for_move)
        st.stopped_in_flight = st.inflight > 0;
      st.held_for_move = false;
      st.hold_wanted = false;
      st.migrating = true;
      flush(self);
      if (st.inflight == 0 || (quiet.ship_now && !st.recovering))
        send_migration_state(self, st.inflight == 0);
      else
        st.migrate_waiting = true; // the last completion sends it
    },
    [self](migrate_end_atom, bool moved, uint64_t epoch, bool reload_state) {
      auto& st = self->state;
      if (st.moved) // the linger timer: calls on stale handles had their time
        return self->quit(make_error(errc::migrated, st.cfg.id.str() + " moved"));
      st.migrating = false;
      st.migrate_waiting = false;
      st.migrate_settling = false;
      st.hold_wanted = false;
      st.held_for_move = false;
      if (!moved) {
        // Aborted: this activation goes on, at the epoch its node took back if it did.
        if (epoch != 0)
          st.cfg.position.epoch = epoch;
        if (reload_state) {
          // (Appends may still be in flight when the state left ahead of them: the last
          // completion reloads then.)
          if (st.inflight == 0)
            reload(self);
          else
            st.reload_when_settled = true;
        }
        return;
      }
      // Moved: nothing of it may be written here any more (the store forgot the agent).
      st.moved = true;
      st.passivating = true;
      st.since_snapshot = 0;
      st.cfg.env->db->forget(st.cfg.id.str());
      self->delayed_send(self, migrate_linger, migrate_end_atom::value, false, uint64_t{0}, false);
      // Released by its supervisor: it lingers no longer than the supervisor lives.
      self->monitor(st.cfg.parent);
      self->set_down_handler([self](caf::down_msg&) {
        self->quit(make_error(errc::migrated, self->state.cfg.id.str() + " moved"));
      });
    },
    [self](flush_atom) { flush(self); },
    [self](const inspect_request&) -> agent_reply {
      auto& st = self->state;
      flush(self);
      nlohmann::json out{{"summary", st.instance ? st.instance->summary() : nlohmann::json{}},
                         {"mailbox_size", queued_messages(self)},
                         {"handled", st.handled}};
      if (st.cfg.mode != persistence_mode::ephemeral)
        out["persistence"] = {
          {"mode", to_string(st.cfg.mode)}, {"seq", st.applied_seq},
          {"durable_seq", st.durable_seq},  {"snapshot_seq", st.snapshot_seq},
          {"epoch", st.cfg.position.epoch}, {"dedup_entries", st.dedup_order.size()}};
      return agent_reply{out.dump()};
    },
  };
}

uint64_t queued_messages(agent_actor_type* self) {
  // Never `mailbox().size()` inside a handler: it moves new messages into the queue that the
  // actor is iterating (UBSan saw the corruption). The queue's count, plus one if new ones
  // wait in the inbox.
  auto& mb = self->mailbox();
  uint64_t n = static_cast<uint64_t>(mb.queue().total_task_size());
  return n == 0 && !mb.empty() ? 1 : n;
}

caf::error commit_now(agent_actor_type* self, std::vector<std::string>& events) {
  // On the agent's own thread (a detached actor): appended like the events of a finished
  // call (committed_atom does the bookkeeping later), and waited for here.
  auto& st = self->state;
  std::vector<std::future<caf::error>> waits;
  for (auto& payload : events) {
    records::event_record ev;
    ev.hdr = {st.cfg.id.str(), st.cfg.position.epoch, ++st.applied_seq};
    ev.payload = std::move(payload);
    ++st.inflight;
    ++st.since_snapshot;
    auto done = std::make_shared<std::promise<caf::error>>();
    waits.push_back(done->get_future());
    append_event(st, std::move(ev),
                 [h = self_handle(self), seq = st.applied_seq, done](caf::error err) {
                   done->set_value(err);
                   caf::anon_send(h, committed_atom::value, seq, std::move(err));
                 });
  }
  events.clear();
  caf::error first;
  for (auto& w : waits)
    if (auto err = w.get(); err && !first)
      first = std::move(err);
  return first;
}

void start_passivation(agent_actor_type* self) {
  auto& st = self->state;
  if (st.passivating)
    return;
  st.passivating = true;
  flush(self);
  if (st.km != nullptr)
    st.km->passivations->Increment();
  log::event(spdlog::level::debug, "agent_passivating", {{"seq", st.applied_seq}}, st.cfg.id.str());
  if (st.applied_seq > st.snapshot_seq || st.since_snapshot > 0) {
    take_snapshot(self); // its completion finishes the passivation
    return;
  }
  finish_passivation(self);
}

void finish_passivation(agent_actor_type* self) {
  auto& st = self->state;
  if (st.passivated)
    return; // (an earlier snapshot's completion finished it)
  st.passivated = true;
  st.cfg.env->db->forget(st.cfg.id.str());
  self->send(st.cfg.parent, passivated_atom::value, st.cfg.id);
  // The state goes now; the actor lingers: a call sent to this handle by whoever looked it
  // up just before the supervisor erased it from the directory may still be on its way, and
  // a quit actor drops tells silently. Until then such calls go back to the supervisor
  // (agent_call's handler), which hands them to the next activation.
  st.instance.reset();
  self->delayed_send(self, passivate_linger, hibernate_quit_atom::value);
  // Released by its supervisor: it lingers no longer than the supervisor lives.
  self->monitor(st.cfg.parent);
  self->set_down_handler([self](caf::down_msg&) { self->quit(caf::exit_reason::normal); });
}

} // namespace

bool agent_runs_inline(caf::scheduled_actor* agent) noexcept {
  // (Only called for an actor whose mailbox was blocked: it ran its init, and its config
  // does not change afterwards.)
  auto& cfg = static_cast<agent_actor_type*>(agent)->state.cfg;
  return cfg.mode == persistence_mode::ephemeral && !cfg.detached;
}

caf::actor spawn_agent_actor(caf::actor_system& sys, agent_actor_config cfg,
                             std::shared_ptr<agent> instance) {
  if (cfg.detached)
    return sys.spawn<caf::detached>(agent_actor_fn, std::move(cfg), std::move(instance));
  return sys.spawn(agent_actor_fn, std::move(cfg), std::move(instance));
}

} // namespace hive
