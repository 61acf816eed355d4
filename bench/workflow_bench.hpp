#pragma once

#include <cstdint>
#include <string>

namespace hive::bench {

/// Settings of `agent-bench workflow` (see bench/README.md).
struct workflow_options {
  /// Steps of the fan-out (between one start step and one join step).
  uint64_t steps = 1000;
  /// Provider agents offering the steps' capability.
  uint64_t providers = 8;
  /// Steps (and direct asks) in flight at once.
  uint64_t parallel = 256;
  /// Repetitions; medians reported. The workflow and the direct asks alternate.
  int runs = 5;
  /// The temporary data directory is made (and removed) under this one.
  std::string parent_dir = "/tmp";
  std::string json_file;
};

/// Runs the `workflow` scenario; returns the process exit code (1 if a check failed).
[[nodiscard]] int run_workflow(const workflow_options& opts);

} // namespace hive::bench
