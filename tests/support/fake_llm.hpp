#pragma once

// tests/support/fake_llm.py (an OpenAI-compatible chat endpoint that records what it was
// sent) as a child process of a test.

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "support/node_process.hpp"

namespace hive::test {

/// tests/support/fake_llm.py as a child process; its port is the first line it prints.
class fake_llm {
public:
  /// Starts the endpoint, which appends what it is sent to `record`; `extra`: more flags.
  explicit fake_llm(const std::filesystem::path& record, std::vector<std::string> extra = {}) {
    int out[2];
    if (::pipe(out) != 0)
      return;
    std::vector<std::string> args{std::string{HIVE_SOURCE_DIR} + "/tests/support/fake_llm.py",
                                  "--record", record.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      hive::test::exec_child("/usr/bin/python3", std::move(args));
    }
    ::close(out[1]);
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{20};
    while (std::chrono::steady_clock::now() < deadline && line.find('\n') == std::string::npos) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) {
        char buf[64];
        auto n = ::read(out[0], buf, sizeof(buf));
        if (n <= 0)
          break;
        line.append(buf, static_cast<size_t>(n));
      }
    }
    ::close(out[0]);
    if (line.find('\n') != std::string::npos)
      port = static_cast<uint16_t>(std::stoi(line));
  }

  ~fake_llm() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  uint16_t port = 0;

private:
  pid_t pid_ = -1;
};

} // namespace hive::test
