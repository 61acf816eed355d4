#pragma once

// Starts a real `agent-node` process for end-to-end tests and reads its ready line.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/http_client.hpp"

namespace hive::test {

/// A fresh temporary directory, removed at destruction.
/// The whole content of a file (e.g. a node's log), empty if it cannot be read.
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in{p};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct temp_dir {
  std::filesystem::path path;

  temp_dir() {
    char tmpl[] = "/tmp/hive-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }

  ~temp_dir() {
    if (std::getenv("HIVE_KEEP_TEST_DIRS") != nullptr) // set it to read a failed test's logs
      return;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

/// In a forked child: replaces the process with `bin args...` (exits 127 if that fails).
[[noreturn]] inline void exec_child(std::string bin, std::vector<std::string> args) {
  std::vector<char*> argv{bin.data()};
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(bin.c_str(), argv.data());
  ::_exit(127);
}

/// A file holding `test_admin_key` (written once per test process, removed at its exit).
inline const std::string& test_admin_key_file() {
  struct key_file {
    std::string path;
    key_file() {
      auto p = std::filesystem::temp_directory_path()
        / ("hive-test-admin-key-" + std::to_string(::getpid()));
      std::ofstream out{p};
      out << test_admin_key << "\n";
      path = p.string();
    }
    ~key_file() {
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
  };
  static const key_file file;
  return file.path;
}

class node_process {
public:
  /// Starts `agent-node` with `args`; stderr goes to `log_file`. Unless `args` names one or
  /// `with_test_key` is false, `--admin-key-file test_admin_key_file()` is added.
  node_process(std::vector<std::string> args, const std::string& log_file,
               bool with_test_key = true) {
    if (with_test_key && std::find(args.begin(), args.end(), "--admin-key-file") == args.end()) {
      args.push_back("--admin-key-file");
      args.push_back(test_admin_key_file());
    }
    int out[2];
    if (::pipe(out) != 0)
      return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      int err = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (err >= 0)
        ::dup2(err, 2);
      ::close(out[0]);
      exec_child(HIVE_AGENT_NODE, std::move(args));
    }
    ::close(out[1]);
    out_fd_ = out[0];
  }

  ~node_process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0)
      ::close(out_fd_);
  }

  /// Reads stdout until a line contains `needle` or `timeout` passes; returns the line.
  std::optional<std::string> wait_line(const std::string& needle,
                                       std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto nl = out_.find('\n');
      while (nl != std::string::npos) {
        auto line = out_.substr(0, nl);
        out_.erase(0, nl + 1);
        if (line.find(needle) != std::string::npos)
          return line;
        nl = out_.find('\n');
      }
      pollfd p{out_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) {
        char buf[4096];
        auto n = ::read(out_fd_, buf, sizeof(buf));
        if (n <= 0)
          return std::nullopt;
        out_.append(buf, static_cast<size_t>(n));
      }
    }
    return std::nullopt;
  }

  /// Waits for the ready line and extracts the gateway and metrics ports.
  bool wait_ready(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto line = wait_line(" ready: ", timeout);
    if (!line)
      return false;
    std::smatch m;
    std::regex gw{"gateway https?://[^ ]+:([0-9]+)"};
    std::regex mx{"metrics http://[^ ]+:([0-9]+)/metrics"};
    if (!std::regex_search(*line, m, gw))
      return false;
    gateway_port = static_cast<uint16_t>(std::stoi(m[1]));
    if (!std::regex_search(*line, m, mx))
      return false;
    metrics_port = static_cast<uint16_t>(std::stoi(m[1]));
    std::regex cl{" cluster [^ ]+:([0-9]+)"};
    if (std::regex_search(*line, m, cl))
      cluster_port = static_cast<uint16_t>(std::stoi(m[1]));
    std::regex bin{" binary (?:tcp|tls)://[^ ]+:([0-9]+)"};
    if (std::regex_search(*line, m, bin))
      binary_port = static_cast<uint16_t>(std::stoi(m[1]));
    return true;
  }

  void signal(int sig) {
    ::kill(pid_, sig);
  }

  /// SIGSTOP, and waits (up to 5 s) until every thread of the process has stopped: a stop
  /// takes effect only once one of its threads has been scheduled to start the group stop,
  /// and its other threads run on meanwhile (on a busy machine, long enough to answer a call).
  /// False if it did not stop in time.
  bool freeze() {
    ::kill(pid_, SIGSTOP);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      if (all_threads_stopped())
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }

  /// Waits for exit; returns the exit code (128+signal if killed), or nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      auto r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        if (WIFEXITED(status))
          return WEXITSTATUS(status);
        return 128 + WTERMSIG(status);
      }
      ::usleep(10000);
    }
    return std::nullopt;
  }

  pid_t pid() const {
    return pid_;
  }

  uint16_t gateway_port = 0;
  uint16_t metrics_port = 0;
  /// The cluster endpoint's port (0 for a standalone node).
  uint16_t cluster_port = 0;
  /// The binary protocol listener's port (0 without `--binary`).
  uint16_t binary_port = 0;

private:
  /// Whether every thread in /proc/PID/task is stopped (state T or t).
  bool all_threads_stopped() const {
    namespace fs = std::filesystem;
    std::error_code ec;
    auto tasks = fs::path{"/proc"} / std::to_string(pid_) / "task";
    size_t seen = 0;
    for (auto& t : fs::directory_iterator{tasks, ec}) {
      std::ifstream in{t.path() / "stat"};
      std::string stat{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
      auto close = stat.rfind(')'); // (the command name may hold spaces)
      if (close == std::string::npos || close + 2 >= stat.size())
        return false;
      auto state = stat[close + 2];
      if (state != 'T' && state != 't')
        return false;
      ++seen;
    }
    return !ec && seen > 0;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  bool exited_ = false;
  std::string out_;
};

/// Runs agentctl with `args`; returns its exit code (or 128+signal) and stdout+stderr.
struct ctl_result {
  int code = -1;
  std::string output;
};

inline ctl_result run_agentctl(std::vector<std::string> args) {
  int out[2];
  if (::pipe(out) != 0)
    return {};
  auto pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    ::close(out[0]);
    ::close(out[1]);
    if (::getenv("HIVE_TOKEN") == nullptr)
      ::setenv("HIVE_TOKEN", test_admin_key.c_str(), 1);
    exec_child(HIVE_AGENTCTL, std::move(args));
  }
  ::close(out[1]);
  ctl_result res;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(out[0], buf, sizeof(buf))) > 0)
    res.output.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  res.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return res;
}

} // namespace hive::test
