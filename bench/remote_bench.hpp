#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hive::bench {

/// Settings of `agent-bench remote` (see bench/README.md).
struct remote_options {
  /// Sequential asks per run (one in flight: round-trip latency).
  uint64_t asks = 5000;
  /// Asks per windowed run, and how many are in flight at once.
  uint64_t window_asks = 50000;
  uint64_t window = 64;
  /// One-way messages per windowed tell run (the peers' fire-and-forget pattern): at most
  /// `tell_window` unacknowledged, every `ack_every`-th message is an ask whose answer
  /// acknowledges it and those before it.
  uint64_t tells = 500000;
  uint64_t tell_window = 1000;
  uint64_t ack_every = 100;
  /// Repetitions; medians reported. Raw CAF and hive alternate.
  int runs = 5;
  /// `--compare`: also run the Erlang twin (../shared/peers' `ab main remote`: two Erlang nodes
  /// on 127.0.0.1, ping-pong round trips and the same windowed tells) in each run, and print
  /// hive/Erlang ratios. Skipped, with the reason printed, when erl/erlc are missing.
  bool compare = false;
  /// The peers' folder (empty: $HIVE_PEERS_DIR, else <source dir>/../shared/peers).
  std::string peers_dir;
  /// The agent-node binary that hosts the remote agent (default: next to agent-bench).
  std::string node_binary;
  std::string json_file;
  /// Node config overrides KEY=VALUE for both members (this process's and the agent-node's
  /// `--set`), e.g. cluster.transport_inline_runs=0.
  std::vector<std::string> settings;
};

/// Runs the `remote` scenario; returns the process exit code (1 if a check failed).
[[nodiscard]] int run_remote(const remote_options& opts, const char* argv0);

} // namespace hive::bench
