#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hive::bench {

/// Settings of `agent-bench gateway` (see bench/README.md).
struct gateway_options {
  /// Connection counts; one closed-loop run per count and protocol.
  std::vector<int> connections{1, 16, 256};
  /// Requests in flight per connection in the pipelined binary runs (0: no such runs).
  int depth = 32;
  /// Length of one closed-loop run (after a 0.3 s warm-up that is not counted).
  double seconds = 3.0;
  /// Repetitions; medians reported.
  int runs = 3;
  /// The fixed-rate runs: requests per second and their length (0: skip them).
  int rate = 200;
  double rate_seconds = 10.0;
  /// Agents the asks are spread over (echo agents).
  int agents = 16;
  /// The agent-node binary (default: next to agent-bench, ../nodes/agent-node).
  std::string node_binary;
  /// Gateway / binary listener threads of the node.
  int gateway_threads = 1;
  std::string json_file;
};

/// Runs the `gateway` scenario; returns the process exit code (1 if a check failed).
[[nodiscard]] int run_gateway(const gateway_options& opts, const char* argv0);

/// Settings of `agent-bench replicated` (see bench/README.md): journaled writes on a 3-node
/// cluster with each replication factor, in the same run.
struct replicated_options {
  /// Closed-loop writers (binary connections, one write in flight each); one run per count.
  std::vector<int> writers{1, 16, 64};
  /// Replication factors compared (replication.factor of every node).
  std::vector<int> factors{1, 3};
  double seconds = 3.0;
  int runs = 3;
  /// Counters the writes are spread over (placed by rendezvous hashing over the 3 nodes).
  int agents = 64;
  std::string node_binary;
  std::string json_file;
};

/// Runs the `replicated` scenario; returns the process exit code (1 if writes failed).
[[nodiscard]] int run_replicated(const replicated_options& opts, const char* argv0);

} // namespace hive::bench
