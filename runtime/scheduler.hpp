#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include <caf/all.hpp>
// (after all.hpp: these two are not self-contained)
#include <caf/policy/unprofiled.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

namespace hive {

/// A worker's job queue with O(1) operations at both ends.
///
/// CAF 0.17's `detail::double_ended_queue` finds the new tail of a `take_tail` (a steal) by
/// walking the whole list from the head, holding both of its locks: stealing from a worker
/// with n queued jobs costs O(n) and blocks that worker meanwhile. When one actor makes many
/// others ready at once (a router sending 100,000 requests, a tenant supervisor activating
/// agents), every steal scans the backlog and the node crawls: 100,000 asks took minutes
/// with both workers busy in `take_tail` (issue #3). This queue is a `std::deque` behind a
/// spin lock: every operation is O(1).
class job_queue {
public:
  using job = caf::resumable*;

  job_queue() = default;
  job_queue(const job_queue&) = delete;
  job_queue& operator=(const job_queue&) = delete;

  /// Adds `x` at the head (the owning worker's newest job, run next).
  void prepend(job x) {
    put(x, true);
  }

  /// Adds `x` at the tail (jobs from other threads, and jobs that yielded).
  void append(job x) {
    put(x, false);
  }

  /// Removes the head (the owner's next job), nullptr if empty.
  [[nodiscard]] job take_head() {
    return take(true);
  }

  /// Removes the tail (the oldest job: what a thief takes), nullptr if empty.
  [[nodiscard]] job take_tail() {
    return take(false);
  }

  /// Whether the queue holds no job (a snapshot: it may change right after).
  [[nodiscard]] bool empty() const noexcept {
    return size_.load() == 0;
  }

  /// Jobs queued now (a snapshot).
  [[nodiscard]] size_t size() const noexcept {
    return size_.load();
  }

private:
  void put(job x, bool at_head);
  job take(bool from_head);
  void lock() noexcept;
  void unlock() noexcept {
    locked_.store(false, std::memory_order_release);
  }

  std::atomic<bool> locked_{false};
  std::atomic<size_t> size_{0};
  std::deque<job> jobs_;
};

/// CAF scheduler policy: work stealing as in CAF 0.17's `policy::work_stealing` (each worker
/// runs its own queue LIFO, polls aggressively, then moderately with sleeps, then sleeps on a
/// condition variable; idle workers steal the oldest job of a random victim), with the same
/// `work-stealing.*` settings, but on `job_queue`, whose steals are O(1).
class stealing_policy : public caf::policy::unprofiled {
public:
  using queue_type = job_queue;

  /// One polling phase (see CAF's `work-stealing.*` settings).
  struct poll_strategy {
    size_t attempts;
    size_t step_size;
    size_t steal_interval;
    caf::timespan sleep_duration;
  };

  struct wait_strategy {
    std::mutex lock;
    std::condition_variable cv;
    bool sleeping = false;
  };

  /// The coordinator's round-robin counter for jobs enqueued from outside the workers.
  struct coordinator_data {
    explicit coordinator_data(caf::scheduler::abstract_coordinator*) {
      // nop
    }
    std::atomic<size_t> next_worker{0};
  };

  /// A worker's queue, random victim picker and polling settings. Copies get a fresh queue
  /// (CAF constructs each worker's data by copying one initial value).
  struct worker_data {
    explicit worker_data(caf::scheduler::abstract_coordinator* p);
    worker_data(const worker_data& other);

    queue_type queue;
    std::default_random_engine rengine;
    std::uniform_int_distribution<size_t> uniform;
    std::array<poll_strategy, 3> strategies;
    wait_strategy waitdata;
  };

  template <class Worker>
  caf::resumable* try_steal(Worker* self) {
    auto p = self->parent();
    if (p->num_workers() < 2)
      return nullptr;
    auto victim = d(self).uniform(d(self).rengine);
    if (victim == self->id())
      victim = p->num_workers() - 1;
    return d(p->worker_by_id(victim)).queue.take_tail();
  }

  template <class Coordinator>
  void central_enqueue(Coordinator* self, caf::resumable* job) {
    auto w = self->worker_by_id(d(self).next_worker++ % self->num_workers());
    w->external_enqueue(job);
  }

  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    d(self).queue.append(job);
    auto& wd = d(self).waitdata;
    std::unique_lock<std::mutex> guard{wd.lock};
    if (wd.sleeping)
      wd.cv.notify_one();
  }

  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    d(self).queue.prepend(job);
  }

  template <class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    // The job gave up the CPU so that others run: it goes to the end of the queue.
    d(self).queue.append(job);
  }

  template <class Worker>
  caf::resumable* dequeue(Worker* self) {
    auto& data = d(self);
    // Aggressive, then moderate polling (with short sleeps), stealing every few attempts.
    for (size_t k = 0; k < 2; ++k) {
      auto& s = data.strategies[k];
      for (size_t i = 0; i < s.attempts; i += s.step_size) {
        if (auto job = data.queue.take_head())
          return job;
        if (i % s.steal_interval == 0)
          if (auto job = try_steal(self))
            return job;
        if (s.sleep_duration.count() > 0)
          std::this_thread::sleep_for(s.sleep_duration);
      }
    }
    // Relaxed: sleep on the condition variable (woken by external enqueues), stealing every
    // few timeouts (internal enqueues of other workers do not wake us).
    auto& relaxed = data.strategies[2];
    auto& wd = data.waitdata;
    for (size_t i = 1;; ++i) {
      bool woken;
      {
        std::unique_lock<std::mutex> guard{wd.lock};
        wd.sleeping = true;
        woken = wd.cv.wait_for(guard, relaxed.sleep_duration, [&] { return !data.queue.empty(); });
        wd.sleeping = false;
      }
      if (woken) {
        if (auto job = data.queue.take_head())
          return job;
      } else if (i % relaxed.steal_interval == 0) {
        if (auto job = try_steal(self))
          return job;
      }
    }
  }

  template <class Worker, class UnaryFunction>
  void foreach_resumable(Worker* self, UnaryFunction f) {
    for (auto job = d(self).queue.take_head(); job != nullptr; job = d(self).queue.take_head())
      f(job);
  }

  template <class Coordinator, class UnaryFunction>
  void foreach_central_resumable(Coordinator*, UnaryFunction) {
    // nop: the coordinator holds no jobs
  }
};

/// Makes the actor system built from `cfg` use hive's scheduler (`stealing_policy`) with
/// `cfg`'s `scheduler.*` and `work-stealing.*` settings, instead of CAF's work stealing.
void use_hive_scheduler(caf::actor_system_config& cfg);

/// Whether `sys` runs hive's scheduler.
[[nodiscard]] bool runs_hive_scheduler(caf::actor_system& sys);

} // namespace hive
