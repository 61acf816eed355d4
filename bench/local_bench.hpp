#pragma once

#include <cstdint>

#include <caf/fwd.hpp>
#include <nlohmann/json.hpp>

namespace hive {
class node_runtime;
class kind_registry;
} // namespace hive

namespace hive::bench {

/// Sizes of the `local` scenario's round-trip, ping-pong and spawn parts (0 = skip that part).
struct local_extra_options {
  /// Sequential asks by id (one in flight) per run, vs raw CAF request/response.
  uint64_t asks = 100000;
  /// Messages bounced between two agents by id per run, vs two raw CAF actors.
  uint64_t pingpong = 1000000;
  /// Agents spawned and stopped per run, at most `spawn_window` alive, vs raw CAF spawns.
  uint64_t spawns = 100000;
  uint64_t spawn_window = 1000;
  int runs = 5;
};

/// Registers the kinds these parts use (`bench-echo`, `bench-pong`) in `kinds`.
[[nodiscard]] caf::error add_local_extra_kinds(kind_registry& kinds);

/// Runs the parts, alternating hive and raw CAF run by run, prints a table, and returns the
/// figures as JSON (`asks`, `pingpong`, `spawn`: per-run figures, medians, ratios).
nlohmann::json run_local_extra(caf::actor_system& sys, node_runtime& rt,
                               const local_extra_options& opts);

} // namespace hive::bench
