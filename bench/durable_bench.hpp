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

} // namespace hive::bench
