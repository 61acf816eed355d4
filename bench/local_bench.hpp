#pragma once

#include <cstdint>
#include <string>

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
  /// `--compare`: also run the Erlang twins of ../shared/peers (erlang/ab.erl) in this
  /// invocation, when `erl` and `erlc` are installed, and print hive/Erlang ratios.
  bool compare = false;
  /// The peers' folder (holds erlang/ab.erl); empty: $HIVE_PEERS_DIR, else
  /// <source dir>/../shared/peers.
  std::string peers_dir;
};

/// The sizes of the windowed-tell part, for its Erlang twin.
struct window_sizes {
  uint64_t messages = 0;
  uint64_t window = 0;
  uint64_t ack_every = 0;
};

/// Registers the kinds these parts use (`bench-echo`, `bench-pong`) in `kinds`.
[[nodiscard]] caf::error add_local_extra_kinds(kind_registry& kinds);

/// Runs the parts, alternating hive and raw CAF run by run, prints a table, and returns the
/// figures as JSON (`asks`, `pingpong`, `spawn`: per-run figures, medians, ratios).
nlohmann::json run_local_extra(caf::actor_system& sys, node_runtime& rt,
                               const local_extra_options& opts);

/// `--compare`: runs ab.erl's window, call, pingpong and spawn `opts.runs` times each with the
/// same sizes and returns their medians (`erlang`: per part, in the unit of our part) and the
/// ratios to `ours` (the JSON of the windowed part and of run_local_extra), printing a table;
/// `{"skipped": why}` when erl, erlc or the peers are missing.
nlohmann::json run_erlang_compare(const local_extra_options& opts, const window_sizes& win,
                                  const nlohmann::json& ours);

} // namespace hive::bench
