// Crash loop: a child process appends +1 events for a few agents as fast as it can and reports
// every acknowledged (agent, seq) through a pipe; the parent SIGKILLs it at a random point,
// reopens the store and checks that every acknowledged event is there, that each journal is
// contiguous from 1 and that every record verifies; the next child continues from there.
//
// The child is this test executable again (fork + exec of /proc/self/exe, selected by the
// HIVE_CRASH_CHILD environment variable), so that it starts with RocksDB's thread pools of
// its own rather than a fork of the parent's.
//
// Environment: HIVE_CRASH_ITERATIONS (default 20), HIVE_SEED (random delays).

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <semaphore>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "protocols/errc.hpp"
#include "storage/store.hpp"
#include "tests/storage/store_support.hpp"

namespace {

using namespace hive;
using namespace hive::test;

constexpr int agents_n = 4;
/// The pipe's fd number in the child.
constexpr int child_fd = 100;
/// Appends a child keeps in flight.
constexpr std::ptrdiff_t window = 32;

std::string agent_name(uint32_t i) {
  return "crash/agent-" + std::to_string(i);
}

/// The payload of event `seq` of `agent`: an increment, padded to a size that varies.
std::string payload_of(const std::string& agent, uint64_t seq) {
  return "+1 " + agent + "#" + std::to_string(seq) + " " + std::string(seq % 97, 'p');
}

/// What the child writes to the pipe: 16 bytes, atomic (< PIPE_BUF).
struct report {
  enum kind_t : uint32_t { ready = 0, acked = 1, failed = 2 };
  uint32_t kind;
  uint32_t agent;
  uint64_t seq;
};
static_assert(sizeof(report) == 16);

void write_report(report r) {
  const char* p = reinterpret_cast<const char*>(&r);
  size_t left = sizeof r;
  while (left > 0) {
    auto n = ::write(child_fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      ::_exit(5);
    p += n;
    left -= static_cast<size_t>(n);
  }
}

/// The child: appends until it is killed. Never returns.
[[noreturn]] void run_child(const char* db_path) {
  store_options opts;
  opts.path = db_path;
  auto st = store::open(std::move(opts));
  if (!st)
    ::_exit(3);
  std::vector<uint64_t> next(agents_n);
  for (uint32_t a = 0; a < agents_n; ++a) {
    auto last = (*st)->last_seq(agent_name(a));
    if (!last)
      ::_exit(4);
    next[a] = *last + 1;
    write_report({report::ready, a, *last});
  }
  std::counting_semaphore<window> slots{window};
  for (uint64_t i = 0;; ++i) {
    auto a = static_cast<uint32_t>(i % agents_n);
    auto seq = next[a]++;
    slots.acquire();
    records::event_record ev;
    ev.hdr = {agent_name(a), 1, seq};
    ev.payload = payload_of(ev.hdr.agent, seq);
    (*st)->append(std::move(ev), [a, seq, &slots](caf::error err) {
      write_report({err ? report::failed : report::acked, a, seq});
      if (err)
        ::_exit(6);
      slots.release();
    });
  }
}

/// Reads what is in the pipe (non-blocking) into `out`; false at EOF.
bool drain(int fd, std::string& buf, std::vector<report>& out) {
  char chunk[4096];
  for (;;) {
    auto n = ::read(fd, chunk, sizeof chunk);
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    size_t whole = buf.size() / sizeof(report) * sizeof(report);
    for (size_t off = 0; off < whole; off += sizeof(report)) {
      report r;
      std::memcpy(&r, buf.data() + off, sizeof r);
      out.push_back(r);
    }
    buf.erase(0, whole);
    return n != 0; // 0: EOF; -1 with EAGAIN: nothing more for now
  }
}

class CrashLoop : public ::testing::Test {
protected:
  /// Starts a child on the store at `db_path`; returns its pid and the pipe's read end.
  std::pair<pid_t, int> spawn(const std::string& db_path) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe2 failed");
    // Everything the child needs is prepared before fork: after it, only async-signal-safe
    // calls until exec.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::strncmp(*e, "HIVE_CRASH_CHILD=", 17) != 0)
        env_strings.emplace_back(*e);
    env_strings.push_back("HIVE_CRASH_CHILD=" + db_path);
    std::vector<char*> envp;
    for (auto& s : env_strings)
      envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string self = "/proc/self/exe";
    std::string filter = "--gtest_filter=CrashLoop.*";
    char* argv[] = {self.data(), filter.data(), nullptr};
    auto pid = ::fork();
    if (pid < 0)
      throw std::runtime_error("fork failed");
    if (pid == 0) {
      if (::dup2(fds[1], child_fd) < 0)
        ::_exit(7);
      int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0)
        ::dup2(devnull, STDOUT_FILENO);
      ::execve(self.c_str(), argv, envp.data());
      ::_exit(8);
    }
    ::close(fds[1]);
    ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    return {pid, fds[0]};
  }
};

TEST_F(CrashLoop, KilledAtRandomPointsKeepsEveryAcknowledgedEvent) {
  if (const char* db = std::getenv("HIVE_CRASH_CHILD"))
    run_child(db);
  int iterations = 20;
  if (const char* s = std::getenv("HIVE_CRASH_ITERATIONS"))
    iterations = std::atoi(s);
  ASSERT_GT(iterations, 0);
  auto seed = test_seed();
  std::cout << "crash loop: " << iterations << " iterations, HIVE_SEED=" << seed << std::endl;
  SCOPED_TRACE("HIVE_SEED=" + std::to_string(seed));
  std::mt19937_64 rng{seed};
  temp_dir dir; // not a fixture member: the children run this fixture too (and are killed)
  auto db_path = dir.sub("db");
  {
    auto st = open_store(db_path);
    ASSERT_NE(st, nullptr);
    for (uint32_t a = 0; a < agents_n; ++a)
      ASSERT_FALSE(put_meta_sync(*st, make_meta(agent_name(a)), true));
  }
  std::vector<uint64_t> last(agents_n, 0);
  uint64_t acked_total = 0;
  for (int it = 0; it < iterations; ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    auto [pid, fd] = spawn(db_path);
    std::string buf;
    std::vector<report> reports;
    // Wait for the child to report where it starts, then let it run 5-60 ms.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{30};
    auto ready_count = [&] {
      return std::count_if(reports.begin(), reports.end(),
                           [](const report& r) { return r.kind == report::ready; });
    };
    bool open = true;
    while (open && ready_count() < agents_n && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 100);
      open = drain(fd, buf, reports);
    }
    if (ready_count() == agents_n) {
      auto delay = std::chrono::milliseconds{5 + static_cast<int>(rng() % 56)};
      auto kill_at = std::chrono::steady_clock::now() + delay;
      while (open && std::chrono::steady_clock::now() < kill_at) {
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, 1);
        open = drain(fd, buf, reports);
      }
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    // Whatever the child wrote before it died is still in the pipe.
    while (drain(fd, buf, reports)) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 100);
    }
    ::close(fd);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the child ended by itself: " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    ASSERT_EQ(ready_count(), agents_n) << "the child never reported ready";
    // What the child saw.
    std::vector<uint64_t> acked_max(agents_n, 0);
    for (auto& r : reports) {
      ASSERT_LT(r.agent, static_cast<uint32_t>(agents_n));
      switch (r.kind) {
        case report::ready:
          ASSERT_EQ(r.seq, last[r.agent])
            << "child started " << agent_name(r.agent) << " elsewhere than the parent's view";
          break;
        case report::acked:
          // Acknowledgements of one agent arrive in order and without gaps.
          ASSERT_EQ(r.seq, std::max(acked_max[r.agent], last[r.agent]) + 1);
          acked_max[r.agent] = r.seq;
          ++acked_total;
          break;
        default: FAIL() << "append of " << agent_name(r.agent) << " #" << r.seq << " failed";
      }
    }
    // The check: the store after the crash. Every 10th and the last iteration read each journal
    // whole; the others from the previous iteration's last event on, so the cost stays flat.
    bool whole = (it + 1) % 10 == 0 || it + 1 == iterations;
    auto st = open_store(db_path);
    ASSERT_NE(st, nullptr);
    for (uint32_t a = 0; a < agents_n; ++a) {
      auto agent = agent_name(a);
      auto ls = st->last_seq(agent);
      ASSERT_TRUE(ls) << describe(ls.error());
      ASSERT_GE(*ls, last[a]) << agent << ": events of an earlier iteration vanished";
      ASSERT_GE(*ls, acked_max[a]) << agent << ": acknowledged event " << acked_max[a]
                                   << " lost (journal ends at " << *ls << ")";
      uint64_t from = whole ? 1 : std::max<uint64_t>(last[a], 1);
      auto evs = st->read_events(agent, from, UINT64_MAX, SIZE_MAX); // verifies every record
      ASSERT_TRUE(evs) << agent << ": " << describe(evs.error());
      ASSERT_EQ(evs->size(), *ls >= from ? *ls - from + 1 : 0)
        << agent << ": journal from " << from << " to " << *ls << " has holes";
      uint64_t value = from - 1;
      for (size_t i = 0; i < evs->size(); ++i) {
        auto& ev = (*evs)[i];
        ASSERT_EQ(ev.hdr.seq, from + i) << agent << ": journal not contiguous";
        ASSERT_EQ(ev.hdr.agent, agent);
        ASSERT_EQ(ev.payload, payload_of(agent, ev.hdr.seq)) << agent << " #" << ev.hdr.seq;
        value += 1; // replay: each event is +1
      }
      ASSERT_EQ(value, *ls);
      last[a] = *ls;
    }
    auto metas = st->list_meta("crash", "", 100);
    ASSERT_TRUE(metas) << describe(metas.error());
    ASSERT_EQ(metas->size(), static_cast<size_t>(agents_n));
  }
  uint64_t stored_total = 0;
  for (auto l : last)
    stored_total += l;
  std::cout << "crash loop: " << acked_total << " acknowledged, " << stored_total
            << " stored events" << std::endl;
  // The loop must have exercised something: the children did append.
  EXPECT_GT(acked_total, 0u);
  EXPECT_GE(stored_total, acked_total);
}

} // namespace
