// hive's scheduler: the O(1) job queue and the work-stealing policy on a real actor system.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/bootstrap.hpp"
#include "runtime/scheduler.hpp"

using namespace hive;
using namespace std::chrono_literals;

namespace {

/// A job that is never run: the queue only stores pointers.
struct dummy_job : caf::resumable {
  resume_result resume(caf::execution_unit*, size_t) override {
    return done;
  }
  void intrusive_ptr_add_ref_impl() override {}
  void intrusive_ptr_release_impl() override {}
};

} // namespace

TEST(job_queue, head_is_newest_first_and_tail_is_oldest_first) {
  std::vector<dummy_job> jobs(6);
  job_queue q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.take_head(), nullptr);
  EXPECT_EQ(q.take_tail(), nullptr);
  // External jobs at the tail (0, 1, 2), the owner's newest at the head (3, 4).
  q.append(&jobs[0]);
  q.append(&jobs[1]);
  q.append(&jobs[2]);
  q.prepend(&jobs[3]);
  q.prepend(&jobs[4]);
  EXPECT_EQ(q.size(), 5u);
  EXPECT_EQ(q.take_head(), &jobs[4]);
  EXPECT_EQ(q.take_tail(), &jobs[2]); // a thief takes the oldest external job
  EXPECT_EQ(q.take_head(), &jobs[3]);
  q.append(&jobs[5]);
  EXPECT_EQ(q.take_tail(), &jobs[5]);
  EXPECT_EQ(q.take_head(), &jobs[0]);
  EXPECT_EQ(q.take_tail(), &jobs[1]);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.take_head(), nullptr);
}

TEST(job_queue, concurrent_producers_and_thieves_lose_and_duplicate_nothing) {
  constexpr size_t per_producer = 200000;
  std::vector<dummy_job> jobs(2 * per_producer);
  std::vector<std::atomic<int>> seen(jobs.size());
  job_queue q;
  std::atomic<size_t> taken{0};
  std::atomic<bool> producing{true};
  auto consume = [&](bool from_head) {
    for (;;) {
      auto j = from_head ? q.take_head() : q.take_tail();
      if (j == nullptr) {
        if (!producing.load() && q.empty())
          return;
        std::this_thread::yield();
        continue;
      }
      auto i = static_cast<size_t>(static_cast<dummy_job*>(j) - jobs.data());
      seen[i].fetch_add(1);
      taken.fetch_add(1);
    }
  };
  std::thread owner_side{consume, true};
  std::thread thief{consume, false};
  std::thread front{[&] {
    for (size_t i = 0; i < per_producer; ++i)
      q.prepend(&jobs[i]);
  }};
  std::thread back{[&] {
    for (size_t i = per_producer; i < jobs.size(); ++i)
      q.append(&jobs[i]);
  }};
  front.join();
  back.join();
  producing = false;
  owner_side.join();
  thief.join();
  EXPECT_EQ(taken.load(), jobs.size());
  size_t wrong = 0;
  for (auto& s : seen)
    if (s.load() != 1)
      ++wrong;
  EXPECT_EQ(wrong, 0u) << "jobs taken other than exactly once";
}

TEST(scheduler, nodes_run_hive_scheduler_with_the_configured_workers) {
  node_config cfg;
  cfg.node.scheduler_threads = 2;
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  EXPECT_TRUE(runs_hive_scheduler(sys)) << "CAF's own work stealing steals in O(queue length)";
  EXPECT_EQ(sys.scheduler().num_workers(), 2u);
}

TEST(scheduler, a_steal_interval_of_zero_is_taken_as_one) {
  node_config cfg;
  cfg.node.scheduler_threads = 2;
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  sys_cfg.set("work-stealing.aggressive-steal-interval", size_t{0});
  sys_cfg.set("work-stealing.moderate-steal-interval", size_t{0});
  sys_cfg.set("work-stealing.relaxed-steal-interval", size_t{0});
  caf::actor_system sys{sys_cfg};
  std::promise<int> reply;
  // (Every spawn takes an argument: UBSan flags argument-less function actors in CAF 0.17.)
  auto echo =
    sys.spawn([](int by) -> caf::behavior { return {[by](int x) { return x + by; }}; }, 1);
  sys.spawn(
    [&reply, echo](caf::event_based_actor* self, int x) {
      self->request(echo, caf::infinite, x).then([&reply](int y) { reply.set_value(y); });
    },
    41);
  auto f = reply.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(f.get(), 42);
}

TEST(scheduler, one_actor_fanning_out_to_many_gets_every_reply) {
  // One actor makes 200,000 others ready at once: its worker's queue holds them all while the
  // other worker steals. With CAF 0.17's queue every steal walked that backlog (minutes);
  // here it takes about a second. Replies go to a collector as plain messages (not
  // request/then: CAF 0.17 keeps one actor's outstanding requests in a flat map, which is
  // quadratic by itself). Each reply is counted; nothing is timed.
  static constexpr int n = 200000;
  node_config cfg;
  cfg.node.scheduler_threads = 2;
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  if (std::getenv("HIVE_TEST_CAF_SCHEDULER"))
    sys_cfg.module_factories.clear(); // CAF's own work stealing, to see the difference
  caf::actor_system sys{sys_cfg};
  std::promise<long long> total;
  auto collector = sys.spawn(
    [&total](caf::event_based_actor* self, int count) -> caf::behavior {
      auto sum = std::make_shared<long long>(0);
      auto left = std::make_shared<int>(count);
      return {[=, &total](int x) {
        *sum += x;
        if (--*left == 0) {
          total.set_value(*sum);
          self->quit();
        }
      }};
    },
    n);
  std::vector<caf::actor> workers;
  workers.reserve(n);
  for (int i = 0; i < n; ++i)
    workers.push_back(sys.spawn(
      [](const caf::actor& to) -> caf::behavior {
        return {[to](int x) { caf::anon_send(to, x * 2); }};
      },
      collector));
  sys.spawn(
    [&workers](caf::event_based_actor* self, int count) {
      for (int i = 0; i < count; ++i)
        self->send(workers[i], i);
    },
    n);
  auto f = total.get_future();
  ASSERT_EQ(f.wait_for(100s), std::future_status::ready) << "replies did not all arrive";
  EXPECT_EQ(f.get(), static_cast<long long>(n) * (n - 1));
  for (auto& w : workers)
    caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
}
