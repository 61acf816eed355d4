#pragma once

// A sandboxed child-process runner: the core of the `tool_runner` agent kind
// (actors/tool_runner.hpp).
//
// `run_sandboxed` starts one allow-listed executable with fork + execve (no shell), in its own
// process group, with an environment made only of the declared variables, a fresh scratch
// directory as its working directory, resource limits (setrlimit) and bounded output, and
// waits for it on the calling thread.
//
// Decisions (what a caller can rely on):
//
// - Allow list: `executable` must be absolute; it is allowed when its realpath equals the
//   realpath of an absolute entry of the allow list (so `/usr/bin/../bin/x` and symlinks can
//   neither bypass nor be mis-refused). Relative entries never match. The resolved path is
//   the one executed (argv[0] stays `executable`). The allow list assumes its files and the
//   directories above them are not writable by whoever submits requests (a swap between the
//   check and execve is not defended against).
// - Process group: the child calls setpgid(0, 0). When the wall time runs out or the output
//   limit is exceeded the whole group gets SIGKILL; when the child exits, the group gets
//   SIGKILL before the child is reaped, so a background process it left behind dies with the
//   call. A descendant that leaves the group (setsid, setpgid) escapes this: a PID namespace
//   or cgroup would be needed for that, and is not used. The child also gets
//   PR_SET_PDEATHSIG = SIGKILL: it dies if the thread that started it ends (a node killed
//   with SIGKILL leaves no tool running).
// - Output: at most `output_bytes_max` bytes are kept per stream. Producing more kills the
//   tool's group: `stopped_by` is "output" and the stream's `*_truncated` flag is set. After
//   the child exited, pipes held open by escaped descendants are drained for at most
//   `sandbox_drain_ms_max`.
// - Offline: when the process runs as root (euid 0) the child calls unshare(CLONE_NEWNET)
//   before execve: it has no network at all, not even a usable loopback (it is down in the
//   new namespace); if unshare fails the run fails (io_error) instead of running connected.
//   When not root, the tool runs WITHOUT network isolation and the result says
//   `network_isolated == false`: callers that require isolation must check that flag.
// - stopped_by "memory" is a heuristic: RLIMIT_AS makes allocations fail, and what the tool
//   does then (exit code, abort, crash) is up to it. The run is reported as "memory" when
//   the child ended abnormally (nonzero exit, or SIGSEGV/SIGABRT/SIGBUS) and its peak
//   resident set reached at least half of `address_space_bytes_max`. A tool that reserves
//   address space without touching it and then fails is not detected; a tool that uses a lot
//   of memory and then fails for another reason is wrongly reported as "memory".
// - stopped_by "file_size" relies on SIGXFSZ; a tool that ignores it sees EFBIG instead and
//   its failure is not attributed. Core dumps are disabled (RLIMIT_CORE = 0).
// - Signals: the child starts with every signal at its default action and none blocked (an
//   ignored SIGPIPE/SIGXCPU in the server does not leak into tools). SIGPIPE from writing
//   stdin to a tool that closed it is blocked on the calling thread and consumed.
// - Scratch: a directory `sandbox-XXXXXX` (mode 0700) is created under `scratch_root` and
//   removed afterwards, also on error paths. A successful return means it is gone (unless
//   `keep_scratch`): failing to remove it is an io_error.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

namespace hive {

/// Longest time the runner waits for the output pipes to reach end-of-file after the child
/// exited and its process group was killed (pipes held by descendants that left the group).
inline constexpr uint64_t sandbox_drain_ms_max = 1000;

/// Resource limits of one sandboxed run. Check them with `validate`.
struct sandbox_limits {
  /// CPU time of the child (RLIMIT_CPU soft limit; SIGXCPU at the soft, SIGKILL at soft + 1).
  /// 1 ..= 3600.
  uint64_t cpu_seconds_max = 10;
  /// Virtual address space of the child (RLIMIT_AS). 16 MiB ..= 1 TiB.
  uint64_t address_space_bytes_max = 512ull << 20;
  /// Open file descriptors of the child (RLIMIT_NOFILE). 8 ..= 65536.
  uint64_t open_files_max = 64;
  /// Bytes kept per stream (stdout, stderr); more kills the tool (stopped_by "output") and
  /// sets the stream's truncated flag. 1 ..= 64 MiB.
  uint64_t output_bytes_max = 1 << 20;
  /// Wall time from fork, on a monotonic clock; then SIGKILL to the whole process group.
  /// 1 ..= 3,600,000.
  uint64_t wall_ms_max = 10000;
  /// Largest file the child may write (RLIMIT_FSIZE; SIGXFSZ beyond). 0 ..= 1 TiB.
  uint64_t file_bytes_max = 64ull << 20;
  /// RLIMIT_NPROC when nonzero. It counts every process of the (real) user, not only the
  /// tool's, so set it only when tools run as a dedicated user. 0 (left alone) ..= 65536.
  uint64_t processes_max = 0;
};

/// Checks that every limit is within the bounds documented on its field. Errors:
/// invalid_config naming the field and its bounds.
[[nodiscard]] caf::error validate(const sandbox_limits& x);

/// What to run, with what, and within which limits.
struct sandbox_request {
  /// Absolute path of the executable; it must be in the allow list (compared by realpath).
  std::string executable;
  /// argv[1..]; argv[0] is `executable`.
  std::vector<std::string> args;
  /// The only environment the child gets (keys non-empty, without '=').
  std::map<std::string, std::string> env;
  /// An existing absolute directory; a fresh `sandbox-XXXXXX` directory is created under it,
  /// used as the child's working directory and removed afterwards.
  std::string scratch_root;
  /// Leaves the scratch directory in place (its path is in `sandbox_result::scratch_dir`).
  bool keep_scratch = false;
  /// Runs the child without network (root only; see the file comment for non-root).
  bool offline = false;
  /// Written to the child's stdin, which is then closed. If the child closes its stdin
  /// early, the rest is dropped silently.
  std::string stdin_data;
  /// The limits of the run.
  sandbox_limits limits;
};

/// The outcome of a sandboxed run that started the executable.
struct sandbox_result {
  /// Exit status when the child exited normally, otherwise -1.
  int exit_code = -1;
  /// The signal that killed the child, otherwise 0.
  int term_signal = 0;
  /// Why the run was stopped: "" (ran to completion), "cpu_time", "wall_time", "output",
  /// "memory" (heuristic, see the file comment) or "file_size".
  std::string stopped_by;
  /// The first `output_bytes_max` bytes the child wrote to stdout.
  std::string stdout_text;
  /// The first `output_bytes_max` bytes the child wrote to stderr.
  std::string stderr_text;
  /// Whether stdout produced more than `output_bytes_max` bytes.
  bool stdout_truncated = false;
  /// Whether stderr produced more than `output_bytes_max` bytes.
  bool stderr_truncated = false;
  /// User CPU time of the child and its reaped descendants (wait4's rusage).
  double user_cpu_seconds = 0;
  /// System CPU time of the child and its reaped descendants (wait4's rusage).
  double system_cpu_seconds = 0;
  /// Peak resident set size of the child (wait4's rusage).
  uint64_t max_rss_bytes = 0;
  /// Wall time from fork until the child was reaped.
  uint64_t wall_ms = 0;
  /// Whether the child ran in its own, empty network namespace.
  bool network_isolated = false;
  /// The scratch directory used as working directory (removed unless `keep_scratch`).
  std::string scratch_dir;

  /// Returns every field above under its own name, for the HTTP API.
  [[nodiscard]] nlohmann::json to_json() const;
};

/// Runs the request's executable as a child process and waits for it (blocking the calling
/// thread for at most about `wall_ms_max + sandbox_drain_ms_max`). Errors: invalid_config
/// (limits), invalid_argument (relative executable, bad scratch root, NUL bytes, bad env
/// key), forbidden (executable not in `allowed_executables`), io_error (the executable
/// cannot be resolved or executed, naming it and strerror; pipe, fork, unshare, scratch
/// directory failures). A tool that fails or is stopped is a result, not an error.
[[nodiscard]] caf::expected<sandbox_result> run_sandboxed(
  const sandbox_request& req, const std::vector<std::string>& allowed_executables);

} // namespace hive
