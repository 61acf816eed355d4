#include "runtime/supervisor.hpp"

#include <algorithm>
#include <cassert>

#include <nlohmann/json.hpp>

#include "protocols/errc.hpp"
#include "runtime/logging.hpp"

namespace hive {

std::string_view to_string(restart_strategy x) noexcept {
  switch (x) {
    case restart_strategy::one_for_one: return "one_for_one";
    case restart_strategy::one_for_all: return "one_for_all";
    case restart_strategy::rest_for_one: return "rest_for_one";
  }
  return "unknown";
}

std::string_view to_string(restart_type x) noexcept {
  switch (x) {
    case restart_type::permanent: return "permanent";
    case restart_type::transient: return "transient";
    case restart_type::temporary: return "temporary";
  }
  return "unknown";
}

caf::expected<restart_type> parse_restart_type(std::string_view text) {
  if (text == "permanent")
    return restart_type::permanent;
  if (text == "transient")
    return restart_type::transient;
  if (text == "temporary")
    return restart_type::temporary;
  return make_error(errc::invalid_argument,
                    "restart '" + std::string{text.substr(0, 40)}
                      + "' is invalid: allowed permanent|transient|temporary");
}

namespace {

bool is_normal_exit(const caf::error& reason) {
  return !reason || reason == caf::exit_reason::normal || reason == caf::exit_reason::user_shutdown;
}

} // namespace

void supervisor_state::init(caf::event_based_actor* self, supervisor_flags flags) {
  assert(self != nullptr);
  self_ = self;
  flags_ = std::move(flags);
  assert(flags_.intensity_max >= 0);
  assert(flags_.backoff_initial <= flags_.backoff_max);
  rng_.seed(flags_.seed != 0 ? flags_.seed : std::random_device{}());
}

size_t supervisor_state::index_of(const caf::actor_addr& addr) const {
  auto i = by_actor_.find(addr.id());
  if (i == by_actor_.end() || i->second >= children_.size() || !children_[i->second].handle
      || children_[i->second].handle.address() != addr)
    return children_.size();
  return i->second;
}

size_t supervisor_state::position_of(std::string_view id) const {
  auto i = by_id_.find(std::string{id});
  return i == by_id_.end() ? children_.size() : i->second;
}

const supervisor_state::child* supervisor_state::find_child(std::string_view id) const {
  auto i = position_of(id);
  return i == children_.size() ? nullptr : &children_[i];
}

void supervisor_state::set_handle(child& c, caf::actor handle) {
  if (c.handle)
    by_actor_.erase(c.handle.id());
  c.handle = std::move(handle);
  if (c.handle)
    by_actor_[c.handle.id()] = position_of(c.spec.id);
}

void supervisor_state::reindex() {
  by_id_.clear();
  by_actor_.clear();
  for (size_t i = 0; i < children_.size(); ++i) {
    by_id_[children_[i].spec.id] = i;
    if (children_[i].handle)
      by_actor_[children_[i].handle.id()] = i;
  }
}

supervisor_state::child supervisor_state::erase_at(size_t i) {
  assert(i < children_.size());
  if (children_[i].state == phase::hibernated) {
    --hibernated_;
    if (flags_.metrics)
      flags_.metrics->hibernated_add(-1);
  }
  auto removed = std::move(children_[i]);
  by_id_.erase(removed.spec.id);
  if (removed.handle)
    by_actor_.erase(removed.handle.id());
  if (flags_.strategy == restart_strategy::one_for_one) {
    // Order only matters for group restarts: one_for_one removes in O(1) (tenant supervisors
    // hold many thousands of agents) and keeps start order otherwise.
    if (i + 1 != children_.size()) {
      children_[i] = std::move(children_.back());
      by_id_[children_[i].spec.id] = i;
      if (children_[i].handle)
        by_actor_[children_[i].handle.id()] = i;
    }
    children_.pop_back();
  } else {
    children_.erase(children_.begin() + static_cast<ptrdiff_t>(i));
    reindex();
  }
  return removed;
}

caf::error supervisor_state::start_existing(child& c) {
  assert(c.spec.start);
  auto handle = c.spec.start(self_);
  if (!handle)
    return std::move(handle.error());
  assert(*handle);
  self_->monitor(*handle);
  set_handle(c, std::move(*handle));
  c.state = phase::running;
  if (c.spec.on_started)
    c.spec.on_started(c.handle, c.restarts);
  return {};
}

caf::expected<caf::actor> supervisor_state::start_child(child_spec spec) {
  if (find_child(spec.id) != nullptr)
    return make_error(errc::invalid_argument,
                      flags_.name + ": a child called '" + spec.id + "' exists");
  if (!spec.start)
    return make_error(errc::invalid_argument,
                      flags_.name + ": child '" + spec.id + "' has no start function");
  child c;
  c.spec = std::move(spec);
  children_.push_back(std::move(c));
  auto pos = children_.size() - 1;
  by_id_[children_.back().spec.id] = pos;
  if (auto err = start_existing(children_.back())) {
    erase_at(pos);
    return err;
  }
  return children_.back().handle;
}

caf::error supervisor_state::terminate_child(std::string_view id) {
  auto pos = position_of(id);
  if (pos == children_.size())
    return make_error(errc::agent_not_found,
                      flags_.name + ": no child called '" + std::string{id} + "'");
  if (auto& h = children_[pos].handle) {
    self_->demonitor(h);
    self_->send_exit(h, caf::exit_reason::user_shutdown);
  }
  auto removed = erase_at(pos);
  restart_group_.erase(std::remove(restart_group_.begin(), restart_group_.end(), removed.spec.id),
                       restart_group_.end());
  if (removed.spec.on_removed)
    removed.spec.on_removed(caf::exit_reason::user_shutdown);
  try_restart_group();
  return {};
}

caf::error supervisor_state::release_child(std::string_view id) {
  auto pos = position_of(id);
  if (pos == children_.size())
    return make_error(errc::agent_not_found,
                      flags_.name + ": no child called '" + std::string{id} + "'");
  if (auto& h = children_[pos].handle)
    self_->demonitor(h);
  auto removed = erase_at(pos);
  restart_group_.erase(std::remove(restart_group_.begin(), restart_group_.end(), removed.spec.id),
                       restart_group_.end());
  try_restart_group();
  return {};
}

caf::error supervisor_state::hibernate_child(std::string_view id, const caf::actor& handle) {
  auto pos = position_of(id);
  if (pos == children_.size())
    return make_error(errc::agent_not_found,
                      flags_.name + ": no child called '" + std::string{id} + "'");
  auto& c = children_[pos];
  if (c.state != phase::running || !c.handle || c.handle != handle)
    return make_error(errc::conflict,
                      flags_.name + ": child '" + std::string{id} + "' cannot hibernate now");
  self_->demonitor(c.handle);
  set_handle(c, nullptr);
  c.state = phase::hibernated;
  c.hibernated_sweeps = 0;
  ++hibernated_;
  if (flags_.metrics)
    flags_.metrics->hibernated_add(1);
  return {};
}

std::vector<std::string> supervisor_state::sweep_hibernated() {
  std::vector<std::string> due;
  if (hibernated_ == 0)
    return due;
  for (auto& c : children_) {
    if (c.state != phase::hibernated)
      continue;
    if (c.hibernated_sweeps > 0)
      due.push_back(c.spec.id);
    else
      c.hibernated_sweeps = 1;
  }
  return due;
}

caf::expected<caf::actor> supervisor_state::wake_child(std::string_view id) {
  auto pos = position_of(id);
  if (pos == children_.size())
    return make_error(errc::agent_not_found,
                      flags_.name + ": no child called '" + std::string{id} + "'");
  if (children_[pos].state != phase::hibernated)
    return make_error(errc::conflict,
                      flags_.name + ": child '" + std::string{id} + "' is not hibernated");
  children_[pos].hibernated_sweeps = 0;
  --hibernated_;
  if (flags_.metrics)
    flags_.metrics->hibernated_add(-1);
  if (auto err = start_existing(children_[pos])) {
    auto removed = erase_at(pos);
    if (removed.spec.on_removed)
      removed.spec.on_removed(err);
    return err;
  }
  return children_[pos].handle;
}

caf::timespan supervisor_state::backoff_for(child& c) {
  auto now = self_->clock().now();
  c.recent_restarts.push_back(now);
  auto stale = std::find_if(c.recent_restarts.begin(), c.recent_restarts.end(),
                            [&](auto t) { return t + flags_.period > now; });
  c.recent_restarts.erase(c.recent_restarts.begin(), stale);
  auto n = c.recent_restarts.size();
  assert(n >= 1);
  caf::timespan delay = flags_.backoff_initial;
  for (size_t k = 1; k < n && delay < flags_.backoff_max; ++k)
    delay *= 2;
  delay = std::min(delay, flags_.backoff_max);
  if (flags_.jitter_percent > 0 && delay.count() > 0) {
    std::uniform_int_distribution<int64_t> dist{-flags_.jitter_percent * 100,
                                                flags_.jitter_percent * 100};
    auto scaled = delay.count() + delay.count() * dist(rng_) / 10000;
    delay = std::min(caf::timespan{std::max<int64_t>(scaled, 0)}, flags_.backoff_max);
  }
  return delay;
}

bool supervisor_state::intensity_exceeded() {
  // More than intensity_max restarts within period -> the supervisor gives up.
  auto now = self_->clock().now();
  recent_restarts_.push_back(now);
  while (!recent_restarts_.empty() && recent_restarts_.front() + flags_.period <= now)
    recent_restarts_.pop_front();
  return static_cast<int64_t>(recent_restarts_.size()) > flags_.intensity_max;
}

void supervisor_state::on_down(const caf::down_msg& msg) {
  auto idx = index_of(msg.source);
  if (idx == children_.size())
    return; // an earlier incarnation, or a child terminated on request
  auto& c = children_[idx];
  set_handle(c, nullptr);
  if (c.state == phase::terminating) {
    // Stopped by us as part of a group restart: now it may start again.
    c.state = phase::waiting_restart;
    try_restart_group();
    return;
  }
  bool restart = c.spec.restart == restart_type::permanent
    || (c.spec.restart == restart_type::transient && !is_normal_exit(msg.reason));
  if (!restart) {
    log::event(spdlog::level::info, "child_exited",
               {{"supervisor", flags_.name},
                {"restart", to_string(c.spec.restart)},
                {"reason", describe(msg.reason)}},
               c.spec.id);
    auto removed = erase_at(idx);
    if (removed.spec.on_removed)
      removed.spec.on_removed(msg.reason);
    return;
  }
  if (intensity_exceeded()) {
    escalate(
      "child '" + c.spec.id + "' failed (" + describe(msg.reason) + "), "
      + std::to_string(recent_restarts_.size()) + " restarts within "
      + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(flags_.period).count())
      + " ms exceed the intensity of " + std::to_string(flags_.intensity_max));
    return;
  }
  ++stats_.restarts;
  if (flags_.metrics)
    flags_.metrics->for_kind(c.spec.kind.empty() ? "supervisor" : c.spec.kind)
      .restarts->Increment();
  c.state = phase::waiting_restart;
  // Pick the group to restart and stop its other running members.
  size_t first = idx;
  size_t last = idx + 1;
  if (flags_.strategy == restart_strategy::one_for_all) {
    first = 0;
    last = children_.size();
  } else if (flags_.strategy == restart_strategy::rest_for_one) {
    last = children_.size();
  }
  for (size_t i = first; i < last; ++i) {
    auto& other = children_[i];
    if (i != idx && other.state == phase::running && other.handle) {
      other.state = phase::terminating;
      self_->send_exit(other.handle, caf::exit_reason::user_shutdown);
    }
    if (std::find(restart_group_.begin(), restart_group_.end(), other.spec.id)
        == restart_group_.end())
      restart_group_.push_back(other.spec.id);
  }
  // Keep the group in start order.
  std::stable_sort(
    restart_group_.begin(), restart_group_.end(),
    [&](const std::string& a, const std::string& b) { return position_of(a) < position_of(b); });
  auto delay = backoff_for(c);
  stats_.last_backoff = delay;
  log::event(spdlog::level::warn, "child_failed",
             {{"supervisor", flags_.name},
              {"strategy", to_string(flags_.strategy)},
              {"reason", describe(msg.reason)},
              {"restart_in_ms",
               std::chrono::duration_cast<std::chrono::microseconds>(delay).count() / 1000.0},
              {"group", restart_group_}},
             c.spec.id);
  restart_timer_fired_ = false;
  ++restart_token_;
  self_->delayed_send(self_, delay, restart_atom::value, restart_token_);
}

void supervisor_state::on_restart_timer(uint64_t token) {
  if (token != restart_token_)
    return; // superseded by a later failure
  restart_timer_fired_ = true;
  try_restart_group();
}

void supervisor_state::try_restart_group() {
  if (!restart_timer_fired_ || restart_group_.empty())
    return;
  for (auto& id : restart_group_)
    if (auto* c = find_child(id); c != nullptr && c->state == phase::terminating)
      return; // wait until every stopped member is gone
  auto group = std::move(restart_group_);
  restart_group_.clear();
  restart_timer_fired_ = false;
  for (size_t k = 0; k < group.size(); ++k) {
    auto pos = position_of(group[k]);
    if (pos == children_.size() || children_[pos].state != phase::waiting_restart)
      continue;
    auto i = children_.begin() + static_cast<ptrdiff_t>(pos);
    ++i->restarts;
    if (auto err = start_existing(*i)) {
      log::event(spdlog::level::warn, "child_start_failed",
                 {{"supervisor", flags_.name}, {"reason", describe(err)}}, i->spec.id);
      // Treat as a crash of this child: requeue it and what follows it in the group.
      if (intensity_exceeded()) {
        escalate("child '" + i->spec.id + "' failed to start: " + describe(err));
        return;
      }
      restart_group_.assign(group.begin() + static_cast<ptrdiff_t>(k), group.end());
      auto delay = backoff_for(*i);
      stats_.last_backoff = delay;
      ++restart_token_;
      self_->delayed_send(self_, delay, restart_atom::value, restart_token_);
      return;
    }
    log::event(spdlog::level::info, "child_restarted",
               {{"supervisor", flags_.name}, {"restarts", i->restarts}}, i->spec.id);
  }
}

void supervisor_state::escalate(const std::string& why) {
  ++stats_.escalations;
  if (flags_.metrics)
    flags_.metrics->escalation(flags_.level);
  log::event(spdlog::level::err, "supervisor_escalated",
             {{"supervisor", flags_.name}, {"reason", why}}, flags_.name);
  shutdown(make_error(errc::escalated, flags_.name + ": " + why));
}

void supervisor_state::shutdown(const caf::error& reason) {
  for (auto i = children_.rbegin(); i != children_.rend(); ++i) {
    if (i->state == phase::hibernated) {
      --hibernated_;
      if (flags_.metrics)
        flags_.metrics->hibernated_add(-1);
      i->state = phase::terminating;
    }
    if (i->handle) {
      self_->demonitor(i->handle);
      self_->send_exit(i->handle, reason ? reason : caf::error{caf::exit_reason::user_shutdown});
      set_handle(*i, nullptr);
    }
  }
  restart_group_.clear();
  ++restart_token_;
  self_->quit(reason);
}

namespace {

caf::behavior supervisor_behavior(supervisor_actor* self, supervisor_flags flags,
                                  std::vector<child_spec> children, supervisor_extension extra) {
  self->state.init(self, std::move(flags));
  self->set_down_handler([self](caf::down_msg& msg) { self->state.on_down(msg); });
  self->set_exit_handler([self](caf::exit_msg& msg) { self->state.shutdown(msg.reason); });
  for (auto& spec : children) {
    if (auto started = self->state.start_child(std::move(spec)); !started) {
      log::event(spdlog::level::err, "supervisor_start_failed",
                 {{"reason", describe(started.error())}}, self->state.flags().name);
      self->state.shutdown(started.error());
      return {};
    }
  }
  caf::message_handler base{
    [self](start_child_atom, child_spec& spec) -> caf::result<caf::actor> {
      auto started = self->state.start_child(std::move(spec));
      if (!started)
        return std::move(started.error());
      return std::move(*started);
    },
    [self](terminate_child_atom, const std::string& id) -> caf::result<bool> {
      if (auto err = self->state.terminate_child(id))
        return err;
      return true;
    },
    [self](which_children_atom) -> std::string {
      auto out = nlohmann::json::array();
      for (auto& c : self->state.children())
        out.push_back({{"id", c.spec.id},
                       {"restart", to_string(c.spec.restart)},
                       {"restarts", c.restarts},
                       {"running", static_cast<bool>(c.handle)},
                       {"hibernated", c.state == supervisor_state::phase::hibernated}});
      return out.dump();
    },
    [self](restart_atom, uint64_t token) { self->state.on_restart_timer(token); },
  };
  if (extra)
    return extra(self).or_else(base);
  return caf::behavior{base};
}

} // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_flags flags,
                            std::vector<child_spec> children, supervisor_extension extra) {
  return sys.spawn(supervisor_behavior, std::move(flags), std::move(children), std::move(extra));
}

caf::actor spawn_supervisor(caf::local_actor* parent, supervisor_flags flags,
                            std::vector<child_spec> children, supervisor_extension extra) {
  return spawn_supervisor(parent->system(), std::move(flags), std::move(children),
                          std::move(extra));
}

} // namespace hive
