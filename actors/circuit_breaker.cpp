#include "actors/circuit_breaker.hpp"

#include <algorithm>
#include <cassert>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "protocols/errc.hpp"
#include "protocols/messages.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/logging.hpp"

namespace hive {

// -- breaker_state ------------------------------------------------------------------------------

std::string_view to_string(breaker_state x) noexcept {
  switch (x) {
    case breaker_state::closed: return "closed";
    case breaker_state::open: return "open";
    case breaker_state::half_open: return "half_open";
  }
  return "unknown";
}

// -- breaker_state_machine ----------------------------------------------------------------------

breaker_state_machine::breaker_state_machine(const node_config::breaker_section& cfg)
    : cfg_(cfg), reset_timeout_(cfg.reset_timeout_ms) {
  assert(cfg.failures_consecutive_max >= 1);
  assert(cfg.failure_rate_percent_max >= 1 && cfg.failure_rate_percent_max <= 100);
  assert(cfg.window_ms >= 1);
  assert(cfg.window_calls_min >= 1);
  assert(cfg.reset_timeout_ms >= 1 && cfg.reset_timeout_ms <= cfg.reset_timeout_ms_max);
  assert(cfg.half_open_probes >= 1);
  assert(cfg.call_timeout_ms >= 1);
  auto window = std::chrono::duration_cast<duration>(std::chrono::milliseconds{cfg.window_ms});
  bucket_width_ = std::max(duration{1}, window / static_cast<int64_t>(breaker_window_buckets));
}

int64_t breaker_state_machine::bucket_index(time_point t) const {
  auto ticks = t.time_since_epoch().count();
  auto width = bucket_width_.count();
  assert(width > 0);
  // Floor division, also for (theoretical) negative clock values.
  auto q = ticks / width;
  if (ticks % width != 0 && ticks < 0)
    --q;
  return q;
}

std::optional<breaker_state_machine::ticket> breaker_state_machine::try_acquire(time_point now) {
  tick(now);
  switch (state_) {
    case breaker_state::closed: return ticket{epoch_, false};
    case breaker_state::open: ++calls_refused_; return std::nullopt;
    case breaker_state::half_open:
      if (probes_issued_ < static_cast<uint64_t>(cfg_.half_open_probes)) {
        ++probes_issued_;
        return ticket{epoch_, true};
      }
      ++calls_refused_;
      return std::nullopt;
  }
  assert(false);
  return std::nullopt;
}

bool breaker_state_machine::record(const ticket& t, bool failed, time_point now) {
  assert(t.epoch <= epoch_);
  if (t.epoch != epoch_) {
    ++results_stale_;
    return false;
  }
  switch (state_) {
    case breaker_state::closed:
      assert(!t.probe);
      record_closed(failed, now);
      break;
    case breaker_state::open:
      // No ticket is issued while open and entering open starts a new epoch.
      assert(false);
      break;
    case breaker_state::half_open: {
      assert(t.probe);
      assert(probes_succeeded_ < probes_issued_);
      if (failed) {
        auto doubled = reset_timeout_ * 2;
        reset_timeout_ = std::min(doubled, std::chrono::milliseconds{cfg_.reset_timeout_ms_max});
        open(now);
      } else if (++probes_succeeded_ >= static_cast<uint64_t>(cfg_.half_open_probes)) {
        reset_timeout_ = std::chrono::milliseconds{cfg_.reset_timeout_ms};
        transition(breaker_state::closed, now);
      }
      break;
    }
  }
  return true;
}

bool breaker_state_machine::tick(time_point now) {
  if (state_ != breaker_state::open || now < open_until_)
    return false;
  transition(breaker_state::half_open, now);
  return true;
}

std::chrono::milliseconds breaker_state_machine::retry_after(time_point now) const {
  if (state_ != breaker_state::open)
    return reset_timeout_;
  if (now >= open_until_)
    return std::chrono::milliseconds{1};
  auto left = std::chrono::ceil<std::chrono::milliseconds>(open_until_ - now);
  return std::max(left, std::chrono::milliseconds{1});
}

uint64_t breaker_state_machine::window_sum(time_point now, uint64_t bucket::*field) const {
  auto current = bucket_index(now);
  auto oldest = current - static_cast<int64_t>(breaker_window_buckets) + 1;
  uint64_t result = 0;
  for (auto& b : window_)
    if (b.index >= oldest && b.index <= current)
      result += b.*field;
  return result;
}

uint64_t breaker_state_machine::window_calls(time_point now) const {
  return window_sum(now, &bucket::calls);
}

uint64_t breaker_state_machine::window_failures(time_point now) const {
  return window_sum(now, &bucket::failures);
}

void breaker_state_machine::record_closed(bool failed, time_point now) {
  assert(state_ == breaker_state::closed);
  auto index = bucket_index(now);
  auto n = static_cast<int64_t>(breaker_window_buckets);
  auto& b = window_[static_cast<size_t>(((index % n) + n) % n)];
  if (b.index != index)
    b = bucket{index, 0, 0};
  ++b.calls;
  if (failed) {
    ++b.failures;
    ++failures_consecutive_;
  } else {
    failures_consecutive_ = 0;
  }
  if (failures_consecutive_ >= static_cast<uint64_t>(cfg_.failures_consecutive_max)) {
    open(now);
    return;
  }
  auto calls = window_calls(now);
  auto failures = window_failures(now);
  assert(failures <= calls);
  if (calls >= static_cast<uint64_t>(cfg_.window_calls_min)
      && failures * 100 >= calls * static_cast<uint64_t>(cfg_.failure_rate_percent_max))
    open(now);
}

void breaker_state_machine::open(time_point now) {
  assert(state_ != breaker_state::open);
  ++times_opened_;
  open_until_ = now + reset_timeout_;
  transition(breaker_state::open, now);
}

void breaker_state_machine::clear_counters() {
  failures_consecutive_ = 0;
  window_.fill(bucket{});
  probes_issued_ = 0;
  probes_succeeded_ = 0;
}

void breaker_state_machine::transition(breaker_state to, time_point) {
  auto from = state_;
  assert(from != to);
  state_ = to;
  ++epoch_;
  clear_counters();
  if (listener_)
    listener_(from, to);
}

nlohmann::json breaker_state_machine::to_json(time_point now) const {
  nlohmann::json result = nlohmann::json::object();
  result["state"] = std::string{to_string(state_)};
  result["failures_consecutive"] = failures_consecutive_;
  result["window_calls"] = window_calls(now);
  result["window_failures"] = window_failures(now);
  result["times_opened"] = times_opened_;
  result["reset_timeout_ms"] = reset_timeout_.count();
  if (state_ == breaker_state::open)
    result["retry_after_ms"] = retry_after(now).count();
  result["probes_issued"] = probes_issued_;
  result["probes_succeeded"] = probes_succeeded_;
  result["calls_refused"] = calls_refused_;
  result["results_stale"] = results_stale_;
  result["settings"] = {
    {"failures_consecutive_max", cfg_.failures_consecutive_max},
    {"failure_rate_percent_max", cfg_.failure_rate_percent_max},
    {"window_ms", cfg_.window_ms},
    {"window_calls_min", cfg_.window_calls_min},
    {"reset_timeout_ms", cfg_.reset_timeout_ms},
    {"reset_timeout_ms_max", cfg_.reset_timeout_ms_max},
    {"half_open_probes", cfg_.half_open_probes},
    {"call_timeout_ms", cfg_.call_timeout_ms},
  };
  return result;
}

// -- the breaker actor --------------------------------------------------------------------------

namespace {

/// Self-sent when an open period may have ended.
using breaker_reset_atom = caf::atom_constant<caf::atom("brk_reset")>;

/// Self-sent at the earliest call deadline; carries the due time (since the clock's epoch).
using breaker_sweep_atom = caf::atom_constant<caf::atom("brk_sweep")>;

using time_point = breaker_state_machine::time_point;

/// One call forwarded to the agent and not yet answered.
struct pending_call {
  caf::response_promise promise;
  breaker_state_machine::ticket ticket;
  std::multimap<time_point, uint64_t>::iterator deadline_pos;
  caf::actor_addr target;
  uint64_t correlation_id = 0;
  int64_t timeout_ms = 0;
};

struct breaker_actor_state {
  static inline const char* name = "hive.circuit_breaker";

  breaker_actor_state() = default;
  breaker_actor_state(const breaker_actor_state&) = delete;
  breaker_actor_state& operator=(const breaker_actor_state&) = delete;

  ~breaker_actor_state() {
    if (metrics && machine)
      metrics->breaker_removed(to_string(machine->state()));
  }

  std::string id;
  node_config::breaker_section cfg;
  std::shared_ptr<hive::metrics> metrics;
  std::unique_ptr<breaker_state_machine> machine;
  caf::actor target;
  uint64_t call_id_next = 1;
  std::unordered_map<uint64_t, pending_call> pending;
  std::multimap<time_point, uint64_t> deadlines;
  std::set<time_point> sweeps_armed;
  /// Correlation id of the message being handled, for transition log lines.
  uint64_t correlation_id_current = 0;
  uint64_t calls_timed_out = 0;
  uint64_t tells_forwarded = 0;
  uint64_t tells_dropped = 0;
};

using breaker_actor = caf::stateful_actor<breaker_actor_state>;

bool is_callers_fault(errc code) {
  return code == errc::invalid_argument || code == errc::rejected || code == errc::too_large;
}

void on_transition(breaker_actor* self, breaker_state from, breaker_state to) {
  auto& st = self->state;
  auto from_str = to_string(from);
  auto to_str = to_string(to);
  auto lvl = to == breaker_state::open ? spdlog::level::warn : spdlog::level::info;
  if (log::enabled(lvl)) {
    nlohmann::json fields{{"from", std::string{from_str}},
                          {"to", std::string{to_str}},
                          {"agent", st.id},
                          {"reset_timeout_ms", st.machine->reset_timeout().count()},
                          {"times_opened", st.machine->times_opened()}};
    log::event(lvl, "breaker_transition", fields, st.id, st.correlation_id_current);
  }
  if (st.metrics) {
    st.metrics->breaker_transition(from_str, to_str);
    st.metrics->events().publish({"breaker_transition",
                                  st.id,
                                  {},
                                  {{"from", std::string{from_str}}, {"to", std::string{to_str}}}});
  }
  if (to == breaker_state::open)
    self->scheduled_send(caf::actor_cast<caf::actor>(self), st.machine->open_until(),
                         breaker_reset_atom::value);
}

/// Records an outcome on behalf of the call with correlation id `cid`.
void record(breaker_actor* self, const breaker_state_machine::ticket& t, bool failed,
            uint64_t cid) {
  auto& st = self->state;
  st.correlation_id_current = cid;
  st.machine->record(t, failed, self->clock().now());
  st.correlation_id_current = 0;
}

/// Arms a sweep at the earliest deadline unless one is armed at or before it.
void arm_sweep(breaker_actor* self) {
  auto& st = self->state;
  if (st.deadlines.empty())
    return;
  auto first = st.deadlines.begin()->first;
  if (!st.sweeps_armed.empty() && *st.sweeps_armed.begin() <= first)
    return;
  st.sweeps_armed.insert(first);
  assert(st.sweeps_armed.size() <= st.pending.size() + 1);
  self->scheduled_send(caf::actor_cast<caf::actor>(self), first, breaker_sweep_atom::value,
                       caf::timespan{first.time_since_epoch()});
}

/// Removes a pending call; nothing if it completed already.
std::optional<pending_call> take(breaker_actor* self, uint64_t call_id) {
  auto& st = self->state;
  auto i = st.pending.find(call_id);
  if (i == st.pending.end())
    return std::nullopt;
  auto result = std::move(i->second);
  st.deadlines.erase(result.deadline_pos);
  st.pending.erase(i);
  assert(st.deadlines.size() == st.pending.size());
  return result;
}

void on_reply(breaker_actor* self, uint64_t call_id, agent_reply& reply) {
  auto p = take(self, call_id);
  if (!p) {
    if (log::enabled(spdlog::level::debug))
      log::event(spdlog::level::debug, "breaker_late_reply", {{"call", call_id}}, self->state.id);
    return;
  }
  record(self, p->ticket, false, p->correlation_id);
  p->promise.deliver(std::move(reply));
}

void on_error(breaker_actor* self, uint64_t call_id, caf::error& err) {
  auto p = take(self, call_id);
  if (!p) {
    if (log::enabled(spdlog::level::debug))
      log::event(spdlog::level::debug, "breaker_late_reply",
                 {{"call", call_id}, {"error", caf::to_string(err)}}, self->state.id);
    return;
  }
  auto code = code_of(err);
  record(self, p->ticket, !is_callers_fault(code), p->correlation_id);
  if (err.category() != errc_category)
    err = make_error(code, self->state.id + ": " + caf::to_string(err));
  p->promise.deliver(std::move(err));
}

void on_sweep(breaker_actor* self, caf::timespan due) {
  auto& st = self->state;
  st.sweeps_armed.erase(time_point{due});
  auto now = self->clock().now();
  while (!st.deadlines.empty() && st.deadlines.begin()->first <= now) {
    auto p = take(self, st.deadlines.begin()->second);
    assert(p.has_value());
    ++st.calls_timed_out;
    if (log::enabled(spdlog::level::debug))
      log::event(spdlog::level::debug, "breaker_call_timeout", {{"timeout_ms", p->timeout_ms}},
                 st.id, p->correlation_id);
    record(self, p->ticket, true, p->correlation_id);
    p->promise.deliver(make_error(
      errc::timeout, st.id + ": no reply within " + std::to_string(p->timeout_ms) + " ms"));
  }
  arm_sweep(self);
}

void on_tell(breaker_actor* self, agent_call& call) {
  auto& st = self->state;
  st.machine->tick(self->clock().now());
  if (st.machine->state() == breaker_state::closed && st.target) {
    ++st.tells_forwarded;
    self->send(st.target, std::move(call));
    return;
  }
  ++st.tells_dropped;
  if (log::enabled(spdlog::level::debug))
    log::event(spdlog::level::debug, "breaker_tell_dropped",
               {{"state", std::string{to_string(st.machine->state())}},
                {"target_set", static_cast<bool>(st.target)}},
               st.id, call.env.correlation_id);
}

void on_call(breaker_actor* self, agent_call& call) {
  auto& st = self->state;
  auto cid = call.env.correlation_id;
  auto promise = self->make_response_promise();
  auto now = self->clock().now();
  // The effective deadline: call_timeout_ms, or the envelope's deadline if earlier.
  auto timeout = std::chrono::milliseconds{st.cfg.call_timeout_ms};
  if (call.env.deadline_unix_ms != 0) {
    auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    auto left_ms = call.env.deadline_unix_ms - wall_ms;
    if (left_ms <= 0) {
      promise.deliver(make_error(errc::timeout,
                                 st.id + ": deadline passed " + std::to_string(-left_ms)
                                   + " ms before the call reached the agent"));
      return;
    }
    timeout = std::min(timeout, std::chrono::milliseconds{left_ms});
  }
  if (st.pending.size() >= breaker_calls_pending_max) {
    promise.deliver(make_error(errc::overloaded,
                               st.id + ": " + std::to_string(st.pending.size())
                                 + " calls in flight (limit "
                                 + std::to_string(breaker_calls_pending_max) + ")"));
    return;
  }
  st.correlation_id_current = cid;
  auto t = st.machine->try_acquire(now);
  st.correlation_id_current = 0;
  if (!t) {
    promise.deliver(make_error(errc::circuit_open,
                               st.id + ": circuit open, retry after "
                                 + std::to_string(st.machine->retry_after(now).count()) + " ms"));
    return;
  }
  if (!st.target) {
    record(self, *t, true, cid);
    promise.deliver(make_error(errc::agent_failed, st.id + ": agent is restarting"));
    return;
  }
  auto call_id = st.call_id_next++;
  auto pos = st.deadlines.emplace(now + timeout, call_id);
  pending_call p{std::move(promise), *t, pos, st.target.address(), cid, timeout.count()};
  st.pending.emplace(call_id, std::move(p));
  assert(st.deadlines.size() == st.pending.size());
  arm_sweep(self);
  // No CAF timeout here: a finite request timeout stays in CAF 0.17's clock until it expires,
  // even after the reply came (see CAF-0.17-NOTES.md, "Finite request timers"); the sweep
  // above enforces the deadline instead. Cost: if the agent never answers and never dies,
  // CAF keeps this (small) response handler; the breaker opens after a few such calls.
  self->request(st.target, caf::infinite, std::move(call))
    .then([self, call_id](agent_reply& reply) { on_reply(self, call_id, reply); },
          [self, call_id](caf::error& err) { on_error(self, call_id, err); });
}

/// Answers every pending call with `err` without counting it (the breaker is going away).
void fail_all_pending(breaker_actor* self, const caf::error& err) {
  auto& st = self->state;
  for (auto& [id, p] : st.pending)
    p.promise.deliver(err);
  st.pending.clear();
  st.deadlines.clear();
}

caf::behavior breaker_actor_impl(breaker_actor* self, const agent_id& id,
                                 node_config::breaker_section cfg,
                                 std::shared_ptr<hive::metrics> m) {
  auto& st = self->state;
  st.id = id.str();
  st.cfg = cfg;
  st.metrics = std::move(m);
  st.machine = std::make_unique<breaker_state_machine>(cfg);
  st.machine->set_listener(
    [self](breaker_state from, breaker_state to) { on_transition(self, from, to); });
  if (st.metrics)
    st.metrics->breaker_added();
  self->set_default_handler(caf::drop);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.target && dm.source == st.target.address()) {
      st.target = nullptr;
      if (log::enabled(spdlog::level::debug))
        log::event(spdlog::level::debug, "breaker_target_down",
                   {{"reason", caf::to_string(dm.reason)}}, st.id);
    }
    std::vector<uint64_t> lost;
    for (auto& [call_id, p] : st.pending)
      if (p.target == dm.source)
        lost.push_back(call_id);
    std::sort(lost.begin(), lost.end()); // answer in call order
    for (auto call_id : lost) {
      auto p = take(self, call_id);
      assert(p.has_value());
      record(self, p->ticket, true, p->correlation_id);
      p->promise.deliver(
        make_error(errc::agent_failed, st.id + ": agent went down while handling the call"));
    }
  });
  self->set_exit_handler([self](caf::exit_msg& em) {
    if (!em.reason)
      return;
    fail_all_pending(self, make_error(errc::agent_failed, self->state.id + ": agent stopped"));
    self->quit(em.reason);
  });
  return {
    [self](target_atom, caf::actor& target) {
      auto& st = self->state;
      if (target && target != st.target)
        self->monitor(target);
      st.target = std::move(target);
    },
    [self](agent_call& call) {
      if (self->current_mailbox_element()->mid.is_request())
        on_call(self, call);
      else
        on_tell(self, call);
    },
    [self](inspect_request&) {
      auto& st = self->state;
      auto result = st.machine->to_json(self->clock().now());
      result["agent"] = st.id;
      result["target_set"] = static_cast<bool>(st.target);
      result["calls_pending"] = st.pending.size();
      result["calls_timed_out"] = st.calls_timed_out;
      result["tells_forwarded"] = st.tells_forwarded;
      result["tells_dropped"] = st.tells_dropped;
      return agent_reply{result.dump()};
    },
    [self](breaker_reset_atom) { self->state.machine->tick(self->clock().now()); },
    [self](breaker_sweep_atom, caf::timespan due) { on_sweep(self, due); },
    [](agent_reply&) {
      // A reply to a forwarded tell: nobody waits for it.
    },
  };
}

} // namespace

caf::actor spawn_circuit_breaker(caf::actor_system& sys, const agent_id& id,
                                 node_config::breaker_section cfg,
                                 std::shared_ptr<hive::metrics> m) {
  return sys.spawn(breaker_actor_impl, id, cfg, std::move(m));
}

front_factory make_breaker_factory(node_config::breaker_section cfg,
                                   std::shared_ptr<hive::metrics> m) {
  return [cfg, m](caf::actor_system& sys, const agent_id& id) {
    return spawn_circuit_breaker(sys, id, cfg, m);
  };
}

} // namespace hive
