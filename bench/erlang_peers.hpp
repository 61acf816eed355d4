#pragma once

// The Erlang twins of ../shared/peers (erlang/ab.erl), for `agent-bench ... --compare`: compiled
// once per invocation into a temporary folder, run with the same sizes as our parts, in the
// same run.

#include <cstdint>
#include <optional>
#include <string>

namespace hive::bench {

/// The figures of one `ab main remote` run (two Erlang nodes on 127.0.0.1).
struct erlang_remote_figures {
  /// Sequential round trips of plain `!`/`receive` between the two nodes, per second.
  double pingpong_round_trips_per_s = 0;
  /// One-way messages/s with at most W unacknowledged, an ack every K.
  double window_msgs_per_s = 0;
};

/// ab.erl and friends compiled into a temporary ebin folder (removed by the destructor).
class erlang_peers {
public:
  /// The peers' folder: `dir` if not empty, else $HIVE_PEERS_DIR, else
  /// <source dir>/../shared/peers.
  static std::string resolve_dir(const std::string& dir);

  /// Compiles `<peers_dir>/erlang/*.erl`. On failure `skipped()` says why (no ab.erl, no
  /// erl/erlc installed, erlc failed) and nothing may be run.
  explicit erlang_peers(const std::string& peers_dir);
  ~erlang_peers();
  erlang_peers(const erlang_peers&) = delete;
  erlang_peers& operator=(const erlang_peers&) = delete;

  /// Why the peers cannot run; empty when they can.
  const std::string& skipped() const {
    return skipped_;
  }

  /// The folder holding ab.erl.
  const std::string& source() const {
    return src_;
  }

  /// Runs `erl -noshell -run ab main ARGS` and returns the number after `RESULT NAME`; exits
  /// the benchmark with the output when there is none.
  double run_local(const std::string& args, const std::string& name) const;

  /// Starts a server node and a client node (`ab main remote SRV Npp Nwin W K`) on 127.0.0.1
  /// with their own epmd port, and returns both figures; exits the benchmark when either is
  /// missing. `nwin` must be a multiple of `k`.
  erlang_remote_figures run_remote(uint64_t npp, uint64_t nwin, uint64_t w, uint64_t k) const;

  /// The command line a reader can repeat, for the JSON.
  std::string command(const std::string& args) const;

private:
  std::string src_;
  std::string ebin_;
  std::string skipped_;
  uint16_t epmd_port_ = 0;
  mutable int remote_runs_ = 0;
};

} // namespace hive::bench
