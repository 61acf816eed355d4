#include "runtime/scheduler.hpp"

#include <algorithm>
#include <cassert>

#include <caf/scheduler/coordinator.hpp>

namespace hive {

// -- job_queue ------------------------------------------------------------------------------

void job_queue::lock() noexcept {
  for (unsigned spins = 0;; ++spins) {
    if (!locked_.exchange(true, std::memory_order_acquire))
      return;
    while (locked_.load(std::memory_order_relaxed))
      if (++spins > 64)
        std::this_thread::yield(); // the holder may be descheduled (2 cores, more threads)
  }
}

void job_queue::put(job x, bool at_head) {
  assert(x != nullptr);
  lock();
  if (at_head)
    jobs_.push_front(x);
  else
    jobs_.push_back(x);
  size_.fetch_add(1);
  unlock();
}

job_queue::job job_queue::take(bool from_head) {
  if (empty())
    return nullptr; // polling workers mostly find nothing: no lock for that
  lock();
  job x = nullptr;
  if (!jobs_.empty()) {
    x = from_head ? jobs_.front() : jobs_.back();
    if (from_head)
      jobs_.pop_front();
    else
      jobs_.pop_back();
    size_.fetch_sub(1);
  }
  unlock();
  return x;
}

// -- stealing_policy ------------------------------------------------------------------------

namespace {

size_t at_least_one(size_t x) {
  return std::max<size_t>(x, 1); // a steal interval of 0 would divide by zero
}

} // namespace

stealing_policy::worker_data::worker_data(caf::scheduler::abstract_coordinator* p)
    : rengine(std::random_device{}()),
      // With fewer than 2 workers `uniform` is never used (try_steal returns first).
      uniform(0, p->num_workers() < 2 ? 0 : p->num_workers() - 2) {
  namespace ws = caf::defaults::work_stealing;
  auto& cfg = p->system().config();
  strategies = {{
    {caf::get_or(cfg, "work-stealing.aggressive-poll-attempts", ws::aggressive_poll_attempts), 1,
     at_least_one(
       caf::get_or(cfg, "work-stealing.aggressive-steal-interval", ws::aggressive_steal_interval)),
     caf::timespan{0}},
    {caf::get_or(cfg, "work-stealing.moderate-poll-attempts", ws::moderate_poll_attempts), 1,
     at_least_one(
       caf::get_or(cfg, "work-stealing.moderate-steal-interval", ws::moderate_steal_interval)),
     caf::get_or(cfg, "work-stealing.moderate-sleep-duration", ws::moderate_sleep_duration)},
    {1, 0,
     at_least_one(
       caf::get_or(cfg, "work-stealing.relaxed-steal-interval", ws::relaxed_steal_interval)),
     caf::get_or(cfg, "work-stealing.relaxed-sleep-duration", ws::relaxed_sleep_duration)},
  }};
}

stealing_policy::worker_data::worker_data(const worker_data& other)
    : rengine(std::random_device{}()), uniform(other.uniform), strategies(other.strategies) {
  // nop: a fresh, empty queue and wait state
}

namespace {

using hive_coordinator = caf::scheduler::coordinator<stealing_policy>;

} // namespace

void use_hive_scheduler(caf::actor_system_config& cfg) {
  cfg.module_factories.push_back(
    [](caf::actor_system& sys) -> caf::actor_system::module* { return new hive_coordinator(sys); });
}

bool runs_hive_scheduler(caf::actor_system& sys) {
  return dynamic_cast<hive_coordinator*>(&sys.scheduler()) != nullptr;
}

} // namespace hive
