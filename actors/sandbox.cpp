#include "actors/sandbox.hpp"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#include "protocols/errc.hpp"

namespace hive {

namespace {

using steady = std::chrono::steady_clock;

constexpr uint64_t mib = 1ull << 20;
constexpr uint64_t tib = 1ull << 40;

/// Bytes read from a pipe per read call.
constexpr size_t read_chunk_bytes = 64 * 1024;

/// Read calls per stream per poll wake-up (so one chatty stream cannot starve the others).
constexpr int reads_per_wakeup_max = 16;

/// Poll period when the kernel has no pidfd (the child's exit is then checked by waitid).
constexpr int exit_check_ms = 10;

/// Poll period while waiting for a child we already killed.
constexpr int killed_wait_ms = 100;

/// Thread-safe strerror.
std::string errno_text(int err) {
  return std::generic_category().message(err);
}

bool has_nul(const std::string& x) {
  return x.find('\0') != std::string::npos;
}

/// Owns one file descriptor.
class unique_fd {
public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    reset(std::exchange(other.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() {
    reset();
  }

  [[nodiscard]] int get() const noexcept {
    return fd_;
  }
  [[nodiscard]] bool open() const noexcept {
    return fd_ >= 0;
  }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = fd;
  }

private:
  int fd_ = -1;
};

/// Makes a close-on-exec pipe whose both ends are >= 3, so that the child's dup2 onto 0, 1
/// and 2 never clobbers another of its pipe ends.
caf::error make_pipe(unique_fd& read_end, unique_fd& write_end, const char* what) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return make_error(errc::io_error,
                      std::string{"sandbox: pipe2 for "} + what + ": " + errno_text(errno));
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  for (auto* fd : {&read_end, &write_end}) {
    if (fd->get() >= 3)
      continue;
    int raised = ::fcntl(fd->get(), F_DUPFD_CLOEXEC, 3);
    if (raised < 0)
      return make_error(errc::io_error,
                        std::string{"sandbox: fcntl(F_DUPFD) for "} + what + ": "
                          + errno_text(errno));
    fd->reset(raised);
  }
  assert(read_end.get() >= 3 && write_end.get() >= 3);
  return {};
}

caf::error set_nonblocking(const unique_fd& fd) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0)
    return make_error(errc::io_error, "sandbox: fcntl(O_NONBLOCK): " + errno_text(errno));
  return {};
}

std::optional<std::string> real_path(const std::string& path, int& err) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) {
    err = errno;
    return std::nullopt;
  }
  std::string result{resolved};
  ::free(resolved);
  return result;
}

/// Finds the file to execute: the realpath of `executable` when it equals the realpath of an
/// absolute allow-list entry.
caf::expected<std::string> resolve_allowed(const std::string& executable,
                                           const std::vector<std::string>& allowed) {
  if (executable.empty() || executable.front() != '/')
    return make_error(errc::invalid_argument,
                      "sandbox: executable '" + executable + "' is not an absolute path");
  if (has_nul(executable))
    return make_error(errc::invalid_argument, "sandbox: executable path contains a NUL byte");
  int err = 0;
  auto resolved = real_path(executable, err);
  if (!resolved) {
    // A missing file cannot match by realpath; it is an operating error only if the caller
    // was allowed to run it at all.
    if (std::find(allowed.begin(), allowed.end(), executable) != allowed.end())
      return make_error(errc::io_error,
                        "sandbox: cannot resolve executable '" + executable
                          + "': " + errno_text(err));
    return make_error(errc::forbidden,
                      "sandbox: executable '" + executable + "' is not in the allow list");
  }
  for (const auto& entry : allowed) {
    if (entry.empty() || entry.front() != '/' || has_nul(entry))
      continue;
    int entry_err = 0;
    auto entry_resolved = real_path(entry, entry_err);
    if (entry_resolved && *entry_resolved == *resolved)
      return std::move(*resolved);
  }
  return make_error(errc::forbidden,
                    "sandbox: executable '" + executable + "' (resolved: '" + *resolved
                      + "') is not in the allow list");
}

/// What the child failed at before execve (sent to the parent with errno).
enum class child_stage : int32_t {
  setpgid = 1,
  unshare,
  chdir,
  dup2,
  fcntl,
  setrlimit,
  execve,
};

const char* to_cstring(child_stage x) {
  switch (x) {
    case child_stage::setpgid: return "setpgid";
    case child_stage::unshare: return "unshare(CLONE_NEWNET)";
    case child_stage::chdir: return "chdir to the scratch directory";
    case child_stage::dup2: return "dup2";
    case child_stage::fcntl: return "fcntl";
    case child_stage::setrlimit: return "setrlimit";
    case child_stage::execve: return "execve";
  }
  return "unknown step";
}

/// The record a failing child writes to the report pipe.
struct child_report {
  int32_t stage;
  int32_t err;
};

/// One resource limit the child sets.
struct planned_limit {
  int resource;
  rlimit value;
};

/// Everything the child needs, prepared before fork: after fork it only makes
/// async-signal-safe calls on this data (no allocation, no locks).
struct child_plan {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  int report_fd = -1;
  bool unshare_net = false;
  std::array<planned_limit, 6> limits{};
  size_t limit_count = 0;
  int fd_count_max = 0;
  struct sigaction default_action {};
  sigset_t empty_mask{};
};

/// The child between fork and execve. Never returns.
[[noreturn]] void run_child(const child_plan& p) noexcept {
  int report_fd = p.report_fd;
  auto fail = [&report_fd](child_stage stage) {
    child_report rec{static_cast<int32_t>(stage), errno};
    [[maybe_unused]] auto n = ::write(report_fd, &rec, sizeof rec);
    ::_exit(127);
  };
  // Every signal blocked since before fork: reset dispositions, unblock right before exec.
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP)
      ::sigaction(sig, &p.default_action, nullptr);
  if (::setpgid(0, 0) != 0)
    fail(child_stage::setpgid);
  // Dies with the thread that started it: a node killed with SIGKILL leaves no tool running.
  (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (p.unshare_net && ::unshare(CLONE_NEWNET) != 0)
    fail(child_stage::unshare);
  if (::chdir(p.cwd) != 0)
    fail(child_stage::chdir);
  if (::dup2(p.stdin_fd, 0) < 0 || ::dup2(p.stdout_fd, 1) < 0 || ::dup2(p.stderr_fd, 2) < 0)
    fail(child_stage::dup2);
  if (report_fd != 3) {
    if (::dup2(report_fd, 3) < 0)
      fail(child_stage::dup2);
    report_fd = 3;
  }
  if (::fcntl(3, F_SETFD, FD_CLOEXEC) != 0)
    fail(child_stage::fcntl);
  if (::close_range(4, ~0U, 0) != 0)
    for (int fd = 4; fd < p.fd_count_max; ++fd)
      ::close(fd);
  for (size_t i = 0; i < p.limit_count; ++i)
    if (::setrlimit(p.limits[i].resource, &p.limits[i].value) != 0)
      fail(child_stage::setrlimit);
  ::sigprocmask(SIG_SETMASK, &p.empty_mask, nullptr);
  ::execve(p.path, p.argv, p.envp);
  fail(child_stage::execve);
  ::_exit(127); // not reached
}

/// A limit for the child, never above the calling process's own hard limit (the sandbox only
/// tightens limits).
planned_limit plan_limit(int resource, uint64_t soft, uint64_t hard) {
  assert(soft <= hard);
  rlimit current{};
  rlim_t hard_max = RLIM_INFINITY;
  if (::getrlimit(resource, &current) == 0)
    hard_max = current.rlim_max;
  planned_limit result{resource, {}};
  result.value.rlim_max = std::min<rlim_t>(static_cast<rlim_t>(hard), hard_max);
  result.value.rlim_cur = std::min<rlim_t>(static_cast<rlim_t>(soft), result.value.rlim_max);
  return result;
}

/// Blocks SIGPIPE on the calling thread while it writes the child's stdin, then consumes a
/// SIGPIPE that became pending meanwhile and restores the thread's mask.
class sigpipe_guard {
public:
  /// Call with every signal blocked (around fork); `old` is the mask to return to.
  explicit sigpipe_guard(const sigset_t& old) : old_(old) {
    sigset_t pending;
    sigemptyset(&pending);
    ::sigpending(&pending);
    pending_before_ = sigismember(&pending, SIGPIPE) == 1;
  }
  sigpipe_guard(const sigpipe_guard&) = delete;
  sigpipe_guard& operator=(const sigpipe_guard&) = delete;
  /// Switches from "everything blocked" to the old mask plus SIGPIPE.
  void arm() {
    sigset_t with_pipe = old_;
    sigaddset(&with_pipe, SIGPIPE);
    ::pthread_sigmask(SIG_SETMASK, &with_pipe, nullptr);
  }
  ~sigpipe_guard() {
    sigset_t pending;
    sigemptyset(&pending);
    ::sigpending(&pending);
    if (!pending_before_ && sigismember(&pending, SIGPIPE) == 1) {
      sigset_t only_pipe;
      sigemptyset(&only_pipe);
      sigaddset(&only_pipe, SIGPIPE);
      timespec zero{0, 0};
      ::sigtimedwait(&only_pipe, nullptr, &zero);
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

private:
  sigset_t old_;
  bool pending_before_ = false;
};

/// Owns the forked child until it is reaped: on an early return it kills its group and
/// reaps it, so no error path leaves a running tool or a zombie behind.
class child_guard {
public:
  explicit child_guard(pid_t pid) : pid_(pid) {
    assert(pid > 0);
  }
  child_guard(const child_guard&) = delete;
  child_guard& operator=(const child_guard&) = delete;
  ~child_guard() {
    if (pid_ <= 0)
      return;
    kill_group();
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }

  [[nodiscard]] pid_t pid() const noexcept {
    return pid_;
  }
  /// SIGKILL to the child's process group, and to the child in case it left the group. The
  /// child is not reaped yet, so its pid (= the group id) cannot have been reused.
  void kill_group() const noexcept {
    assert(pid_ > 0);
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
  }
  /// Reaps the child (blocking). Errors: io_error (e.g. ECHILD when SIGCHLD is ignored).
  caf::error reap(int& status, rusage& usage) {
    assert(pid_ > 0);
    for (;;) {
      if (::wait4(pid_, &status, 0, &usage) == pid_) {
        pid_ = -1;
        return {};
      }
      if (errno != EINTR) {
        int err = errno;
        pid_ = -1; // nothing left to reap
        return make_error(errc::io_error, "sandbox: wait4: " + errno_text(err));
      }
    }
  }

private:
  pid_t pid_;
};

/// One output pipe of the child.
struct output_stream {
  unique_fd fd;
  std::string* text = nullptr;
  bool* truncated = nullptr;
};

/// Reads what is available; keeps at most `bytes_max` in the stream's text. Returns whether
/// the stream produced more than that (now or before).
bool read_available(output_stream& s, uint64_t bytes_max, char* buf) {
  assert(s.text != nullptr && s.truncated != nullptr);
  for (int i = 0; i < reads_per_wakeup_max && s.fd.open(); ++i) {
    ssize_t n = ::read(s.fd.get(), buf, read_chunk_bytes);
    if (n > 0) {
      uint64_t room = bytes_max - std::min<uint64_t>(bytes_max, s.text->size());
      uint64_t take = std::min<uint64_t>(room, static_cast<uint64_t>(n));
      s.text->append(buf, take);
      if (static_cast<uint64_t>(n) > take)
        *s.truncated = true;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    s.fd.reset(); // end of file, or an error: nothing more comes from this pipe
  }
  assert(s.text->size() <= bytes_max);
  return *s.truncated;
}

/// Writes the next part of the child's stdin; closes it when done or when the child closed
/// its end (EPIPE: the rest is dropped).
void write_stdin(unique_fd& fd, const std::string& data, size_t& offset) {
  while (fd.open() && offset < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + offset, data.size() - offset);
    if (n > 0) {
      offset += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    fd.reset();
  }
  if (offset >= data.size())
    fd.reset();
}

int ms_until(steady::time_point deadline, steady::time_point now) {
  if (now >= deadline)
    return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return static_cast<int>(std::min<int64_t>(ms, 60'000));
}

unique_fd open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return unique_fd{static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))};
#else
  (void)pid;
  return unique_fd{};
#endif
}

bool child_exited(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0
    && info.si_pid == pid;
}

double seconds_of(const timeval& tv) {
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

/// Decides `stopped_by` (see the file comment of sandbox.hpp for the memory heuristic).
std::string stopped_by_of(const sandbox_result& r, const sandbox_limits& limits,
                          bool killed_for_wall, bool killed_for_output) {
  if (r.term_signal == SIGXCPU)
    return "cpu_time";
  if (r.term_signal == SIGXFSZ)
    return "file_size";
  if (killed_for_wall)
    return "wall_time";
  if (killed_for_output)
    return "output";
  if (r.term_signal == SIGKILL
      && r.user_cpu_seconds + r.system_cpu_seconds >= static_cast<double>(limits.cpu_seconds_max))
    return "cpu_time";
  bool abnormal = (r.term_signal == 0 && r.exit_code != 0) || r.term_signal == SIGSEGV
    || r.term_signal == SIGABRT || r.term_signal == SIGBUS;
  if (abnormal && r.max_rss_bytes * 2 >= limits.address_space_bytes_max)
    return "memory";
  return "";
}

/// Runs the child in the existing scratch directory `scratch`.
caf::expected<sandbox_result> run_in(const sandbox_request& req, const std::string& path,
                                     const std::string& scratch) {
  const auto& limits = req.limits;
  // argv and envp, built before fork.
  std::vector<std::string> env_strings;
  env_strings.reserve(req.env.size());
  for (const auto& [key, value] : req.env)
    env_strings.push_back(key + "=" + value);
  std::vector<char*> argv;
  argv.reserve(req.args.size() + 2);
  argv.push_back(const_cast<char*>(req.executable.c_str()));
  for (const auto& arg : req.args)
    argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  envp.reserve(env_strings.size() + 1);
  for (auto& entry : env_strings)
    envp.push_back(entry.data());
  envp.push_back(nullptr);
  // Pipes: the child's ends are dup2'ed onto 0, 1, 2; the report pipe carries an errno.
  unique_fd stdin_r, stdin_w, stdout_r, stdout_w, stderr_r, stderr_w, report_r, report_w;
  if (auto err = make_pipe(stdin_r, stdin_w, "stdin"))
    return err;
  if (auto err = make_pipe(stdout_r, stdout_w, "stdout"))
    return err;
  if (auto err = make_pipe(stderr_r, stderr_w, "stderr"))
    return err;
  if (auto err = make_pipe(report_r, report_w, "the exec report"))
    return err;
  for (auto* fd : {&stdin_w, &stdout_r, &stderr_r})
    if (auto err = set_nonblocking(*fd))
      return err;
  child_plan plan;
  plan.path = path.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.cwd = scratch.c_str();
  plan.stdin_fd = stdin_r.get();
  plan.stdout_fd = stdout_w.get();
  plan.stderr_fd = stderr_w.get();
  plan.report_fd = report_w.get();
  plan.unshare_net = req.offline && ::geteuid() == 0;
  plan.limits[plan.limit_count++] =
    plan_limit(RLIMIT_CPU, limits.cpu_seconds_max, limits.cpu_seconds_max + 1);
  plan.limits[plan.limit_count++] =
    plan_limit(RLIMIT_AS, limits.address_space_bytes_max, limits.address_space_bytes_max);
  plan.limits[plan.limit_count++] =
    plan_limit(RLIMIT_NOFILE, limits.open_files_max, limits.open_files_max);
  plan.limits[plan.limit_count++] =
    plan_limit(RLIMIT_FSIZE, limits.file_bytes_max, limits.file_bytes_max);
  plan.limits[plan.limit_count++] = plan_limit(RLIMIT_CORE, 0, 0);
  if (limits.processes_max > 0)
    plan.limits[plan.limit_count++] =
      plan_limit(RLIMIT_NPROC, limits.processes_max, limits.processes_max);
  assert(plan.limit_count <= plan.limits.size());
  long open_max = ::sysconf(_SC_OPEN_MAX);
  plan.fd_count_max = open_max > 0 ? static_cast<int>(std::min<long>(open_max, 1 << 20)) : 1024;
  plan.default_action.sa_handler = SIG_DFL;
  sigemptyset(&plan.default_action.sa_mask);
  sigemptyset(&plan.empty_mask);
  // fork with every signal blocked, so no handler of ours runs in the child.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  sigpipe_guard pipe_guard{old};
  auto start = steady::now();
  pid_t pid = ::fork();
  if (pid == 0)
    run_child(plan);
  int fork_err = errno;
  pipe_guard.arm();
  if (pid < 0)
    return make_error(errc::io_error, "sandbox: fork: " + errno_text(fork_err));
  child_guard child{pid};
  auto deadline = start + std::chrono::milliseconds{limits.wall_ms_max};
  stdin_r.reset();
  stdout_w.reset();
  stderr_w.reset();
  report_w.reset();
  // Wait for execve (the report pipe closes) or for the child's failure report.
  child_report rec{};
  size_t got = 0;
  for (;;) {
    pollfd pfd{report_r.get(), POLLIN, 0};
    int rc = ::poll(&pfd, 1, ms_until(deadline, steady::now()));
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc <= 0)
      return make_error(errc::io_error,
                        "sandbox: '" + req.executable + "' did not start within wall_ms_max");
    ssize_t n = ::read(report_r.get(), reinterpret_cast<char*>(&rec) + got, sizeof rec - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += static_cast<size_t>(n);
    if (got == sizeof rec)
      break;
  }
  report_r.reset();
  if (got == sizeof rec) {
    auto stage = static_cast<child_stage>(rec.stage);
    auto what = stage == child_stage::unshare ? "cannot isolate the network of '" : "cannot run '";
    return make_error(errc::io_error,
                      "sandbox: " + std::string{what} + req.executable + "' (" + path
                        + "): " + to_cstring(stage) + ": " + errno_text(rec.err));
  }
  if (got != 0)
    return make_error(errc::internal, "sandbox: short exec report from the child");
  // The tool runs: feed stdin, collect output, watch the clock and the child's exit.
  sandbox_result result;
  result.network_isolated = plan.unshare_net;
  result.scratch_dir = scratch;
  std::array<output_stream, 2> outputs{
    output_stream{std::move(stdout_r), &result.stdout_text, &result.stdout_truncated},
    output_stream{std::move(stderr_r), &result.stderr_text, &result.stderr_truncated}};
  size_t stdin_offset = 0;
  if (req.stdin_data.empty())
    stdin_w.reset();
  auto pidfd = open_pidfd(pid);
  std::vector<char> buf(read_chunk_bytes);
  bool killed_for_wall = false;
  bool killed_for_output = false;
  auto killed = [&] { return killed_for_wall || killed_for_output; };
  auto collect = [&](output_stream& s) {
    if (read_available(s, limits.output_bytes_max, buf.data()) && !killed()) {
      child.kill_group();
      killed_for_output = true;
    }
  };
  for (bool exited = false; !exited;) {
    auto now = steady::now();
    int timeout_ms = killed_wait_ms;
    if (!killed()) {
      if (now >= deadline) {
        child.kill_group();
        killed_for_wall = true;
        continue;
      }
      timeout_ms = std::max(1, ms_until(deadline, now));
    }
    if (!pidfd.open())
      timeout_ms = std::min(timeout_ms, exit_check_ms);
    std::array<pollfd, 4> fds{};
    std::array<int, 4> role{}; // 0, 1: outputs; 2: stdin; 3: pidfd
    nfds_t n = 0;
    for (int i = 0; i < 2; ++i)
      if (outputs[i].fd.open()) {
        role[n] = i;
        fds[n++] = pollfd{outputs[i].fd.get(), POLLIN, 0};
      }
    if (stdin_w.open()) {
      role[n] = 2;
      fds[n++] = pollfd{stdin_w.get(), POLLOUT, 0};
    }
    if (pidfd.open()) {
      role[n] = 3;
      fds[n++] = pollfd{pidfd.get(), POLLIN, 0};
    }
    int rc = ::poll(fds.data(), n, timeout_ms);
    if (rc < 0 && errno != EINTR)
      return make_error(errc::io_error, "sandbox: poll: " + errno_text(errno));
    for (nfds_t i = 0; rc > 0 && i < n; ++i) {
      if (fds[i].revents == 0)
        continue;
      if (role[i] < 2)
        collect(outputs[role[i]]);
      else if (role[i] == 2)
        write_stdin(stdin_w, req.stdin_data, stdin_offset);
      else
        exited = true;
    }
    if (!pidfd.open())
      exited = child_exited(pid);
  }
  // The child is a zombie: kill what it left in its group, then drain the pipes (bounded).
  child.kill_group();
  stdin_w.reset();
  auto drain_deadline = steady::now() + std::chrono::milliseconds{sandbox_drain_ms_max};
  while (outputs[0].fd.open() || outputs[1].fd.open()) {
    int timeout_ms = ms_until(drain_deadline, steady::now());
    if (timeout_ms <= 0)
      break;
    std::array<pollfd, 2> fds{};
    std::array<int, 2> role{};
    nfds_t n = 0;
    for (int i = 0; i < 2; ++i)
      if (outputs[i].fd.open()) {
        role[n] = i;
        fds[n++] = pollfd{outputs[i].fd.get(), POLLIN, 0};
      }
    int rc = ::poll(fds.data(), n, timeout_ms);
    if (rc < 0 && errno != EINTR)
      break;
    for (nfds_t i = 0; rc > 0 && i < n; ++i)
      if (fds[i].revents != 0)
        collect(outputs[role[i]]);
  }
  for (auto& s : outputs)
    s.fd.reset();
  int status = 0;
  rusage usage{};
  if (auto err = child.reap(status, usage))
    return err;
  result.wall_ms = static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start).count());
  if (WIFEXITED(status))
    result.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    result.term_signal = WTERMSIG(status);
  result.user_cpu_seconds = seconds_of(usage.ru_utime);
  result.system_cpu_seconds = seconds_of(usage.ru_stime);
  result.max_rss_bytes = static_cast<uint64_t>(std::max<long>(usage.ru_maxrss, 0)) * 1024;
  result.stopped_by = stopped_by_of(result, limits, killed_for_wall, killed_for_output);
  assert(result.stdout_text.size() <= limits.output_bytes_max);
  assert(result.stderr_text.size() <= limits.output_bytes_max);
  return result;
}

caf::error check_range(const char* field, uint64_t value, uint64_t low, uint64_t high) {
  assert(low <= high);
  if (value >= low && value <= high)
    return {};
  return make_error(errc::invalid_config,
                    std::string{"sandbox limit "} + field + " = " + std::to_string(value)
                      + " is out of range [" + std::to_string(low) + ", " + std::to_string(high)
                      + "]");
}

} // namespace

caf::error validate(const sandbox_limits& x) {
  if (auto err = check_range("cpu_seconds_max", x.cpu_seconds_max, 1, 3600))
    return err;
  if (auto err = check_range("address_space_bytes_max", x.address_space_bytes_max, 16 * mib, tib))
    return err;
  if (auto err = check_range("open_files_max", x.open_files_max, 8, 65536))
    return err;
  if (auto err = check_range("output_bytes_max", x.output_bytes_max, 1, 64 * mib))
    return err;
  if (auto err = check_range("wall_ms_max", x.wall_ms_max, 1, 3'600'000))
    return err;
  if (auto err = check_range("file_bytes_max", x.file_bytes_max, 0, tib))
    return err;
  if (auto err = check_range("processes_max", x.processes_max, 0, 65536))
    return err;
  return {};
}

nlohmann::json sandbox_result::to_json() const {
  return {
    {"exit_code", exit_code},
    {"term_signal", term_signal},
    {"stopped_by", stopped_by},
    {"stdout_text", stdout_text},
    {"stderr_text", stderr_text},
    {"stdout_truncated", stdout_truncated},
    {"stderr_truncated", stderr_truncated},
    {"user_cpu_seconds", user_cpu_seconds},
    {"system_cpu_seconds", system_cpu_seconds},
    {"max_rss_bytes", max_rss_bytes},
    {"wall_ms", wall_ms},
    {"network_isolated", network_isolated},
    {"scratch_dir", scratch_dir},
  };
}

caf::expected<sandbox_result> run_sandboxed(const sandbox_request& req,
                                            const std::vector<std::string>& allowed_executables) {
  if (auto err = validate(req.limits))
    return err;
  auto path = resolve_allowed(req.executable, allowed_executables);
  if (!path)
    return std::move(path.error());
  for (const auto& arg : req.args)
    if (has_nul(arg))
      return make_error(errc::invalid_argument, "sandbox: an argument contains a NUL byte");
  for (const auto& [key, value] : req.env) {
    if (key.empty() || key.find('=') != std::string::npos || has_nul(key))
      return make_error(errc::invalid_argument,
                        "sandbox: environment key '" + key + "' is empty or contains '=' or NUL");
    if (has_nul(value))
      return make_error(errc::invalid_argument,
                        "sandbox: environment value of '" + key + "' contains a NUL byte");
  }
  if (req.scratch_root.empty() || req.scratch_root.front() != '/' || has_nul(req.scratch_root))
    return make_error(errc::invalid_argument,
                      "sandbox: scratch_root '" + req.scratch_root + "' is not an absolute path");
  auto root = req.scratch_root;
  while (root.size() > 1 && root.back() == '/')
    root.pop_back();
  std::string name = (root == "/" ? std::string{} : root) + "/sandbox-XXXXXX";
  if (::mkdtemp(name.data()) == nullptr)
    return make_error(errc::io_error,
                      "sandbox: cannot create a scratch directory under '" + root
                        + "': " + errno_text(errno));
  auto result = run_in(req, *path, name);
  if (req.keep_scratch)
    return result;
  std::error_code ec;
  std::filesystem::remove_all(name, ec);
  if (ec && result)
    return make_error(errc::io_error,
                      "sandbox: cannot remove the scratch directory '" + name
                        + "': " + ec.message());
  return result;
}

} // namespace hive
