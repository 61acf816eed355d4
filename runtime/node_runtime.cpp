#include "runtime/node_runtime.hpp"

#include <cassert>
#include <map>
#include <unordered_map>

#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/agent_actor.hpp"
#include "runtime/logging.hpp"

namespace hive {

namespace {

/// Everything the runtime's actors share. Immutable after start, except the directory and
/// metrics, which are thread-safe.
struct runtime_context {
  node_config cfg;
  std::shared_ptr<directory> dir;
  std::shared_ptr<hive::metrics> metrics;
  const kind_registry* kinds = nullptr;
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
struct ask_job {
  caf::actor target;
  agent_call call;
  caf::timespan timeout;
  node_runtime::reply_fn done;
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

namespace hive {

namespace {

using spawn_agent_atom = caf::atom_constant<caf::atom("hspawn")>;
using stop_agent_atom = caf::atom_constant<caf::atom("hstop")>;
using ask_atom = caf::atom_constant<caf::atom("hask")>;
using inspect_atom = caf::atom_constant<caf::atom("hinspect")>;
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;

std::string tenant_child_id(const std::string& tenant) {
  return "tenant:" + tenant;
}

void fail_spawn(const runtime_context& ctx, spawn_job& job, caf::error err) {
  ctx.dir->erase(job.view.id);
  if (job.view.has_breaker && job.view.target)
    caf::anon_send_exit(job.view.target, caf::exit_reason::user_shutdown);
  job.done(std::move(err));
}

/// The child spec of one agent under its tenant supervisor.
child_spec agent_child_spec(const ctx_ptr& ctx, const agent_view& view,
                            std::shared_ptr<agent> first_instance) {
  child_spec spec;
  spec.id = view.id.name;
  spec.kind = view.kind;
  auto restart = parse_restart_type(view.restart);
  spec.restart = restart ? *restart : restart_type::permanent;
  auto first = std::make_shared<std::shared_ptr<agent>>(std::move(first_instance));
  spec.start = [ctx, view, first](caf::local_actor* sup) -> caf::expected<caf::actor> {
    std::shared_ptr<agent> instance = std::move(*first);
    first->reset();
    if (!instance) {
      auto kind = ctx->kinds->find(view.kind);
      if (kind == nullptr)
        return make_error(errc::unknown_kind, "kind '" + view.kind + "' is not registered");
      auto made = kind->make(view.config ? *view.config : nlohmann::json::object());
      if (!made)
        return std::move(made.error());
      instance = std::shared_ptr<agent>{std::move(*made)};
    }
    agent_actor_config acfg{view.id, view.kind,
                            static_cast<size_t>(ctx->cfg.gateway.json_depth_max), ctx->metrics};
    return spawn_agent_actor(sup->system(), std::move(acfg), std::move(instance));
  };
  caf::actor breaker = view.has_breaker ? view.target : caf::actor{};
  spec.on_started = [ctx, id = view.id, breaker](const caf::actor& handle, uint64_t restarts) {
    ctx->dir->set_handles(id, handle, breaker ? breaker : handle, restarts);
    if (breaker)
      caf::anon_send(breaker, target_atom::value, handle);
    log::event(spdlog::level::info, restarts == 0 ? "agent_started" : "agent_restarted",
               {{"restarts", restarts}}, id.str());
  };
  spec.on_removed = [ctx, id = view.id, breaker](const caf::error& reason) {
    ctx->dir->erase(id);
    if (breaker)
      caf::anon_send_exit(breaker, caf::exit_reason::user_shutdown);
    log::event(spdlog::level::info, "agent_stopped", {{"reason", describe(reason)}}, id.str());
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

/// Tenant supervisors accept spawns and stops of their agents.
supervisor_extension tenant_extension(const ctx_ptr& ctx) {
  return [ctx](supervisor_actor* self) -> caf::message_handler {
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
                            std::move(children), tenant_extension(ctx));
  };
  return spec;
}

/// The root supervisor routes spawns and stops to tenant supervisors, creating them on demand.
supervisor_extension root_extension(const ctx_ptr& ctx) {
  return [ctx](supervisor_actor* self) -> caf::message_handler {
    return {
      [self, ctx](spawn_agent_atom, spawn_job& job) {
        auto child_id = tenant_child_id(job.view.id.tenant);
        auto child = self->state.find_child(child_id);
        caf::actor tenant_sup;
        if (child == nullptr) {
          auto started = self->state.start_child(tenant_child_spec(ctx, job.view.id.tenant));
          if (!started) {
            fail_spawn(*ctx, job, std::move(started.error()));
            return;
          }
          tenant_sup = *started;
        } else {
          tenant_sup = child->handle;
        }
        if (!tenant_sup) {
          fail_spawn(*ctx, job,
                     make_error(errc::agent_failed,
                                "supervisor of tenant '" + job.view.id.tenant
                                  + "' is restarting, retry shortly"));
          return;
        }
        self->send(tenant_sup, spawn_agent_atom::value, std::move(job));
      },
      [self](stop_agent_atom, stop_job& job) {
        auto child = self->state.find_child(tenant_child_id(job.id.tenant));
        if (child == nullptr || !child->handle) {
          job.done(make_error(errc::agent_not_found, "no agent " + job.id.str()));
          return;
        }
        self->send(child->handle, stop_agent_atom::value, std::move(job));
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

/// The unused argument is there because UBSan flags arg-less function-actor spawns in CAF 0.17.
caf::behavior router_fn(router_actor* self, size_t /* router number */) {
  return {
    [self](ask_atom, ask_job& job) {
      auto& st = self->state;
      auto id = st.next_id++;
      auto deadline = self->clock().now() + job.timeout;
      auto it = st.deadlines.emplace(deadline, id);
      st.pending.emplace(id, router_state::pending_ask{std::move(job.done), it});
      schedule_sweep(self, deadline);
      // Infinite request + own deadline bookkeeping: finite CAF request timers are not
      // cancelled on reply in 0.17 and pile up on hot paths.
      self->request(job.target, caf::infinite, std::move(job.call))
        .then([self, id](agent_reply& reply) { complete(self, id, std::move(reply.body)); },
              [self, id](caf::error& err) { complete(self, id, std::move(err)); });
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

node_runtime::node_runtime(caf::actor_system& sys, const node_config& cfg, kind_registry kinds,
                           std::shared_ptr<hive::metrics> m, front_factory breaker_factory)
    : sys_(sys), cfg_(cfg), kinds_(std::move(kinds)), metrics_(std::move(m)),
      breaker_factory_(std::move(breaker_factory)), directory_(std::make_shared<directory>()) {}

caf::expected<std::unique_ptr<node_runtime>> node_runtime::start(caf::actor_system& sys,
                                                                 const node_config& cfg,
                                                                 kind_registry kinds,
                                                                 std::shared_ptr<hive::metrics> m,
                                                                 front_factory breaker_factory) {
  if (!m)
    m = std::make_shared<hive::metrics>();
  std::unique_ptr<node_runtime> rt{
    new node_runtime(sys, cfg, std::move(kinds), std::move(m), std::move(breaker_factory))};
  auto ctx = std::make_shared<runtime_context>();
  ctx->cfg = rt->cfg_;
  ctx->dir = rt->directory_;
  ctx->metrics = rt->metrics_;
  ctx->kinds = &rt->kinds_;
  rt->root_ = spawn_supervisor(sys, flags_from(*ctx, "root", "root"), {}, root_extension(ctx));
  auto n = std::max<size_t>(1, sys.scheduler().num_workers());
  for (size_t i = 0; i < n; ++i)
    rt->routers_.push_back(sys.spawn(router_fn, i));
  log::event(spdlog::level::info, "runtime_started",
             {{"kinds", rt->kinds_.names()}, {"routers", n}});
  return rt;
}

node_runtime::~node_runtime() {
  shutdown();
}

void node_runtime::set_fatal_handler(std::function<void(const caf::error&)> fn) {
  auto ptr = caf::actor_cast<caf::abstract_actor*>(root_);
  assert(ptr != nullptr);
  ptr->attach_functor([this, fn = std::move(fn)](const caf::error& reason) {
    if (!stopping_.load())
      fn(reason);
  });
}

void node_runtime::spawn(spawn_request req, std::function<void(caf::expected<agent_view>)> done) {
  assert(done);
  if (stopping_.load())
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
  if (req.breaker && !breaker_factory_)
    return done(make_error(errc::invalid_argument, "this node has no circuit breaker"));
  if (!req.config.is_object())
    return done(make_error(errc::invalid_argument, "config must be a JSON object"));
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
  if (req.breaker) {
    view.target = breaker_factory_(sys_, req.id);
    directory_->set_handles(req.id, caf::actor{}, view.target, 0);
  }
  spawn_job job{std::move(view), std::shared_ptr<agent>{std::move(*made)}, std::move(done),
                req.correlation_id};
  caf::anon_send(root_, spawn_agent_atom::value, std::move(job));
}

void node_runtime::stop(const agent_id& id, std::function<void(caf::error)> done) {
  assert(done);
  if (stopping_.load())
    return done(make_error(errc::shutting_down, "node is shutting down"));
  if (!directory_->target_of(id))
    return done(make_error(errc::agent_not_found, "no agent " + id.str()));
  caf::anon_send(root_, stop_agent_atom::value, stop_job{id, std::move(done)});
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

const std::optional<caf::actor>& cached_target(const directory& dir, const agent_id& id) {
  thread_local lookup_cache cache;
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

caf::error node_runtime::tell(const agent_id& id, const agent_call& call) {
  auto& target = cached_target(*directory_, id);
  if (auto err = unusable(target, id))
    return err;
  caf::anon_send(*target, call);
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
  auto& target = cached_target(*directory_, id);
  if (auto err = unusable(target, id))
    return done(std::move(err));
  auto& router = routers_[call.env.correlation_id % routers_.size()];
  caf::anon_send(router, ask_atom::value,
                 ask_job{*target, std::move(call), timeout, std::move(done)});
}

void node_runtime::inspect(const agent_id& id, uint64_t correlation_id,
                           std::function<void(caf::expected<nlohmann::json>)> done) {
  assert(done);
  auto view = directory_->find(id);
  if (!view)
    return done(make_error(errc::agent_not_found, "no agent " + id.str()));
  auto& router = routers_[correlation_id % routers_.size()];
  caf::anon_send(router, inspect_atom::value,
                 inspect_job{std::move(*view), correlation_id, std::move(done)});
}

void node_runtime::shutdown() {
  if (stopping_.exchange(true))
    return;
  log::event(spdlog::level::info, "runtime_stopping", {{"agents", directory_->size()}});
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
  root_ = nullptr;
  routers_.clear();
  log::event(spdlog::level::info, "runtime_stopped");
}

} // namespace hive
