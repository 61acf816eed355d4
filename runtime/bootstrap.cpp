#include <sys/prctl.h>

#include "runtime/bootstrap.hpp"

#include <thread>

#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/cluster.hpp"
#include "runtime/scheduler.hpp"

namespace hive {

size_t scheduler_threads(const node_config& cfg) {
  if (cfg.node.scheduler_threads > 0)
    return static_cast<size_t>(cfg.node.scheduler_threads);
  auto cores = std::thread::hardware_concurrency();
  return cores == 0 ? 2 : cores;
}

void configure_actor_system(caf::actor_system_config& sys_cfg, const node_config& cfg) {
  // Linux lets a sleep of a normal thread end up to 50 us late (its timer slack): an idle
  // worker's 50 us poll sleep lasted ~100 us, and a message arriving meanwhile waited for it.
  // Threads inherit the slack of the thread that creates them: set here, before the actor
  // system starts its workers.
  (void)::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  sys_cfg.set("scheduler.max-threads", scheduler_threads(cfg));
  // One aggressive poll, then back off: measured faster than CAF's defaults on 2 cores.
  sys_cfg.set("work-stealing.moderate-poll-attempts", size_t{1});
  // CAF's work stealing, with O(1) steals (see scheduler.hpp).
  use_hive_scheduler(sys_cfg);
  sys_cfg.set("logger.verbosity", caf::atom("quiet"));
  sys_cfg.add_message_types<caf::id_block::hive>();
  if (!cfg.cluster.listen.empty())
    configure_cluster_transport(sys_cfg, cfg);
  sys_cfg.add_error_category(errc_category, render_error);
}

} // namespace hive
