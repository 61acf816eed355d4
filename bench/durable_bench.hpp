#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hive::bench {

/// Settings of `agent-bench durable` (see bench/README.md).
struct durable_options {
  /// Concurrent closed-loop writers, one run per count (each writer owns one counter).
  std::vector<uint64_t> writers{1, 16, 256};
  /// Length of one run (ignored when `ops` > 0).
  double seconds = 5;
  /// Acks per run in total (split evenly over the writers); 0 = run for `seconds`.
  uint64_t ops = 0;
  /// Repetitions; medians reported.
  int runs = 3;
  /// Synced single puts (and batches) of the plain-RocksDB baseline next to each writers run
  /// (at most 2 s each).
  uint64_t rocksdb_puts = 1000;
  /// Puts per synced WriteBatch of the batched baseline.
  uint64_t rocksdb_batch = 128;
  /// Counters passivated and then activated one by one (0 = skip).
  uint64_t activation_agents = 2000;
  /// Adds each of those counters gets before it is passivated.
  uint64_t activation_adds = 10;
  /// Counters created for the footprint measurements (0 = skip).
  uint64_t footprint_agents = 100000;
  /// The temporary data directory is made (and removed) under this one.
  std::string parent_dir = "/tmp";
  /// Keep the data directory (for inspection) instead of removing it.
  bool keep = false;
  std::string json_file;
  /// Node config overrides `KEY=VALUE` (as agent-node's `--set`), applied in order.
  std::vector<std::string> settings;
};

/// Runs the `durable` scenario; returns the process exit code (1 if a check failed).
[[nodiscard]] int run_durable(const durable_options& opts);

/// Settings of `agent-bench density` (see bench/README.md).
struct density_options {
  /// Journaled counters spawned, given one add each and kept live and idle (0 = skip).
  uint64_t live_agents = 1000000;
  /// Journaled counters created (one add each) and passivated, left on disk (0 = skip).
  uint64_t passivated_agents = 10000000;
  /// Agents of each phase asked again at the end (a seeded random sample) to check their value.
  uint64_t check_agents = 1000;
  /// Seed of the sample (0 = from the clock; printed either way).
  uint64_t seed = 0;
  /// Operations in flight while creating agents.
  uint64_t window = 512;
  /// The live phase again with agents.hibernate_idle_ms set to this (0 = skip): actors
  /// released, state kept in memory.
  uint64_t hibernate_idle_ms = 1000;
  /// Passivation idle time in the passivated phase.
  uint64_t passivate_idle_ms = 500;
  std::string parent_dir = "/tmp";
  bool keep = false;
  std::string json_file;
  std::vector<std::string> settings;
};

/// Runs the `density` scenario (live idle agents per GiB; passivated agents per node's disk);
/// returns the process exit code (1 if a check failed; a missed goal is reported, not failed).
[[nodiscard]] int run_density(const density_options& opts);

} // namespace hive::bench
