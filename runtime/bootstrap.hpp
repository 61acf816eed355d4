#pragma once

#include <cstddef>

#include <caf/all.hpp>

#include "config/node_config.hpp"

namespace hive {

/// Number of scheduler workers for `cfg`: `node.scheduler_threads`, or one per core when 0.
/// CAF's own default starts 4 workers even on 2 cores, which measured slower here
/// (../shared/peers: idle work-stealing workers sleep 50 us between polls).
[[nodiscard]] size_t scheduler_threads(const node_config& cfg);

/// Prepares a CAF config for a node: hive's scheduler (runtime/scheduler.hpp), its size,
/// work-stealing poll settings, the `hive` type-ID block and error category, and (with
/// `cluster.listen` set) the io middleman with heartbeats. Call before constructing the
/// `caf::actor_system`.
void configure_actor_system(caf::actor_system_config& sys_cfg, const node_config& cfg);

} // namespace hive
