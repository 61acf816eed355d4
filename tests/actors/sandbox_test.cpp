// The sandboxed child-process runner (actors/sandbox.hpp) against a real tool binary
// (tests/support/test_tool.cpp, path in HIVE_TEST_TOOL): argv and exit codes, the exact
// environment, the scratch directory, the allow list, exec failures, every stop reason (CPU,
// wall time, output, memory, file size), killing of background descendants, big stdin/stdout
// without deadlock, network isolation (root only) and limit validation.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "actors/sandbox.hpp"
#include "protocols/errc.hpp"

#ifndef HIVE_TEST_TOOL
#error "HIVE_TEST_TOOL must name the test tool binary"
#endif

namespace {

namespace fs = std::filesystem;
using hive::errc;
using hive::sandbox_request;
using hive::sandbox_result;
using namespace std::chrono_literals;

const std::string tool = HIVE_TEST_TOOL;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> result;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    result.push_back(line);
  return result;
}

class Sandbox : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(tool)) << "test tool not found at " << tool;
    std::string tmpl = (fs::temp_directory_path() / "hive-sandbox-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    scratch_root_ = dir_ / "scratch";
    fs::create_directory(scratch_root_);
  }

  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  sandbox_request request(std::vector<std::string> args) const {
    sandbox_request req;
    req.executable = tool;
    req.args = std::move(args);
    req.scratch_root = scratch_root_.string();
    return req;
  }

  static caf::expected<sandbox_result> run(const sandbox_request& req) {
    return hive::run_sandboxed(req, {tool});
  }

  fs::path dir_;
  fs::path scratch_root_;
};

TEST_F(Sandbox, passes_arguments_and_reports_the_exit_code) {
  auto res = run(request({"echo", "a b", "", "c"}));
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->stdout_text, "a b\n\nc\n");
  EXPECT_EQ(res->exit_code, 0);
  EXPECT_EQ(res->term_signal, 0);
  EXPECT_EQ(res->stopped_by, "");
  EXPECT_FALSE(res->stdout_truncated);
  auto failed = run(request({"exit", "7"}));
  ASSERT_TRUE(failed) << hive::describe(failed.error());
  EXPECT_EQ(failed->exit_code, 7);
  EXPECT_EQ(failed->term_signal, 0);
  EXPECT_EQ(failed->stopped_by, ""); // a small tool failing is not "memory"
  auto bad_usage = run(request({"no-such-mode"}));
  ASSERT_TRUE(bad_usage);
  EXPECT_EQ(bad_usage->exit_code, 2);
  EXPECT_EQ(bad_usage->stderr_text, "test_tool: bad usage\n");
}

TEST_F(Sandbox, environment_is_exactly_the_declared_variables) {
  ::setenv("HIVE_SANDBOX_LEAK_CHECK", "leaked", 1);
  ASSERT_NE(::getenv("PATH"), nullptr) << "the test wants a PATH to prove it does not leak";
  auto req = request({"env"});
  req.env = {{"ALPHA", "1"}, {"BETA", "two words=and equals"}, {"EMPTY", ""}};
  auto res = run(req);
  ::unsetenv("HIVE_SANDBOX_LEAK_CHECK");
  ASSERT_TRUE(res) << hive::describe(res.error());
  auto lines = lines_of(res->stdout_text);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"ALPHA=1", "BETA=two words=and equals", "EMPTY="}));
  auto none = run(request({"env"}));
  ASSERT_TRUE(none);
  EXPECT_EQ(none->stdout_text, "");
}

TEST_F(Sandbox, runs_in_a_fresh_scratch_directory_that_is_removed) {
  auto first = run(request({"pwd"}));
  auto second = run(request({"pwd"}));
  ASSERT_TRUE(first) << hive::describe(first.error());
  ASSERT_TRUE(second) << hive::describe(second.error());
  auto cwd = lines_of(first->stdout_text);
  ASSERT_EQ(cwd.size(), 1u);
  fs::path used{cwd[0]};
  EXPECT_EQ(used.parent_path(), fs::canonical(scratch_root_));
  EXPECT_EQ(used.filename().string().rfind("sandbox-", 0), 0u) << used;
  EXPECT_EQ(first->scratch_dir, used.string());
  EXPECT_NE(first->stdout_text, second->stdout_text);
  EXPECT_FALSE(fs::exists(used));
  EXPECT_TRUE(fs::is_empty(scratch_root_));
  // A file the tool writes lives in its scratch directory, which keep_scratch leaves in place.
  auto req = request({"write", "out.txt", "10"});
  req.keep_scratch = true;
  auto kept = run(req);
  ASSERT_TRUE(kept) << hive::describe(kept.error());
  EXPECT_EQ(kept->exit_code, 0);
  EXPECT_EQ(fs::file_size(fs::path{kept->scratch_dir} / "out.txt"), 10u);
  // Removal also happens when the tool is killed.
  auto killed = run([&] {
    auto r = request({"sleep", "10000"});
    r.limits.wall_ms_max = 100;
    return r;
  }());
  ASSERT_TRUE(killed);
  EXPECT_FALSE(fs::exists(killed->scratch_dir));
}

TEST_F(Sandbox, refuses_executables_outside_the_allow_list) {
  auto req = request({"echo", "x"});
  req.executable = "/bin/true";
  auto res = run(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::forbidden);
  EXPECT_NE(hive::message_of(res.error()).find("/bin/true"), std::string::npos)
    << hive::message_of(res.error());
  req.executable = "test_tool";
  res = hive::run_sandboxed(req, {tool, "test_tool"});
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::invalid_argument);
  EXPECT_NE(hive::message_of(res.error()).find("test_tool"), std::string::npos);
  // A symlink to another program, named in the request, does not pass as the tool.
  fs::create_symlink("/bin/true", dir_ / "tool-lookalike");
  req.executable = (dir_ / "tool-lookalike").string();
  res = run(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::forbidden);
  EXPECT_NE(hive::message_of(res.error()).find("tool-lookalike"), std::string::npos);
  // Nor does an empty allow list allow anything.
  req.executable = tool;
  res = hive::run_sandboxed(req, {});
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::forbidden);
}

TEST_F(Sandbox, compares_the_allow_list_by_realpath) {
  fs::path p{tool};
  auto dotted = (p.parent_path() / ".." / p.parent_path().filename() / p.filename()).string();
  auto req = request({"echo", "dotted"});
  req.executable = dotted;
  auto res = run(req);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->stdout_text, "dotted\n");
  // An allow-list entry that is a symlink to the tool allows the tool's real path.
  fs::create_symlink(fs::canonical(p), dir_ / "tool-link");
  req.executable = tool;
  res = hive::run_sandboxed(req, {(dir_ / "tool-link").string()});
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->stdout_text, "dotted\n");
}

TEST_F(Sandbox, an_allowed_executable_that_cannot_run_is_an_error_value) {
  auto missing = (dir_ / "no-such-tool").string();
  auto req = request({});
  req.executable = missing;
  auto res = hive::run_sandboxed(req, {missing});
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::io_error);
  auto msg = hive::message_of(res.error());
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  // A file that exists but is not executable fails in execve, reported through the pipe.
  auto plain = (dir_ / "not-executable").string();
  std::ofstream{plain} << "just text\n";
  fs::permissions(plain, fs::perms::owner_read | fs::perms::owner_write);
  req.executable = plain;
  res = hive::run_sandboxed(req, {plain});
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::io_error);
  msg = hive::message_of(res.error());
  EXPECT_NE(msg.find(plain), std::string::npos) << msg;
  EXPECT_NE(msg.find("execve"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Permission denied"), std::string::npos) << msg;
  EXPECT_TRUE(fs::is_empty(scratch_root_)) << "scratch left behind after an exec failure";
}

TEST_F(Sandbox, cpu_limit_stops_a_spinning_tool) {
  auto req = request({"spin"});
  req.limits.cpu_seconds_max = 1;
  req.limits.wall_ms_max = 20000;
  auto res = run(req);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->stopped_by, "cpu_time");
  EXPECT_EQ(res->term_signal, SIGXCPU);
  EXPECT_GE(res->user_cpu_seconds + res->system_cpu_seconds, 0.9);
  EXPECT_LT(res->wall_ms, 10000u);
}

TEST_F(Sandbox, wall_limit_kills_a_sleeping_tool) {
  auto req = request({"sleep", "10000"});
  req.limits.wall_ms_max = 300;
  auto res = run(req);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->stopped_by, "wall_time");
  EXPECT_EQ(res->term_signal, SIGKILL);
  EXPECT_GE(res->wall_ms, 300u);
  EXPECT_LT(res->wall_ms, 3000u);
}

TEST_F(Sandbox, output_limit_truncates_and_stops_the_tool) {
  auto req = request({"print", std::to_string(10 << 20)});
  req.limits.output_bytes_max = 4096;
  auto res = run(req);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->stopped_by, "output");
  EXPECT_TRUE(res->stdout_truncated);
  EXPECT_FALSE(res->stderr_truncated);
  EXPECT_EQ(res->stdout_text, std::string(4096, 'x'));
  EXPECT_EQ(res->term_signal, SIGKILL);
  // Exactly the limit is not truncated.
  req.args = {"print", "4096"};
  res = run(req);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->stopped_by, "");
  EXPECT_FALSE(res->stdout_truncated);
  EXPECT_EQ(res->stdout_text.size(), 4096u);
  EXPECT_EQ(res->exit_code, 0);
}

TEST_F(Sandbox, address_space_limit_is_reported_as_memory) {
  auto req = request({"alloc", "1024"});
  req.limits.address_space_bytes_max = 128ull << 20;
  auto res = run(req);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->stopped_by, "memory")
    << "exit " << res->exit_code << " signal " << res->term_signal << " rss " << res->max_rss_bytes;
  EXPECT_EQ(res->exit_code, 3);
  EXPECT_EQ(res->stdout_text, "");
  // Within the limit the same tool completes.
  req.args = {"alloc", "16"};
  res = run(req);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->stopped_by, "");
  EXPECT_EQ(res->stdout_text, "allocated\n");
  EXPECT_GE(res->max_rss_bytes, 16ull << 20);
}

TEST_F(Sandbox, background_descendants_die_with_the_call) {
  // Control: outside the sandbox the grandchild does create its file.
  auto control = (dir_ / "control-marker").string();
  {
    std::vector<std::string> args{tool, "fork-sleep", "200", control};
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    ASSERT_EQ(::posix_spawn(&pid, tool.c_str(), nullptr, nullptr, argv.data(), environ), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    auto until = std::chrono::steady_clock::now() + 5s;
    while (!fs::exists(control) && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(fs::exists(control)) << "the control grandchild never created its file";
  }
  auto marker = (dir_ / "marker").string();
  auto res = run(request({"fork-sleep", "500", marker}));
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->exit_code, 0);
  EXPECT_EQ(res->stopped_by, "");
  EXPECT_LT(res->wall_ms, 450u) << "the call waited for the grandchild";
  std::this_thread::sleep_for(1500ms);
  EXPECT_FALSE(fs::exists(marker)) << "the grandchild outlived the call";
}

TEST_F(Sandbox, big_stdin_and_stdout_do_not_deadlock) {
  std::string input;
  input.reserve(4 << 20);
  for (size_t i = 0; input.size() < (4u << 20); ++i)
    input += std::to_string(i) + "\n";
  input.resize(4 << 20);
  auto req = request({"cat"});
  req.stdin_data = input;
  req.limits.output_bytes_max = 8 << 20;
  auto res = run(req);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->exit_code, 0);
  EXPECT_EQ(res->stopped_by, "");
  EXPECT_EQ(res->stdout_text.size(), input.size());
  EXPECT_TRUE(res->stdout_text == input) << "stdout differs from stdin";
  // A tool that never reads its stdin: the rest is dropped, and SIGPIPE does not kill us.
  req.args = {"exit", "0"};
  res = run(req);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->exit_code, 0);
}

TEST_F(Sandbox, file_size_limit_stops_a_writing_tool) {
  auto req = request({"write", "big.bin", std::to_string(1 << 20)});
  req.limits.file_bytes_max = 4096;
  // The server ignoring SIGXFSZ must not leak into the tool (dispositions are reset).
  auto* previous = ::signal(SIGXFSZ, SIG_IGN);
  auto res = run(req);
  ::signal(SIGXFSZ, previous);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_EQ(res->stopped_by, "file_size");
  EXPECT_EQ(res->term_signal, SIGXFSZ);
  req.args = {"write", "small.bin", "4096"};
  res = run(req);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->stopped_by, "");
  EXPECT_EQ(res->exit_code, 0);
}

/// A TCP listener on 127.0.0.1 with a kernel-chosen port.
class listener {
public:
  listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
        || ::listen(fd_, 16) != 0
        || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      return;
    port_ = ntohs(addr.sin_port);
  }
  ~listener() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  [[nodiscard]] int port() const {
    return port_;
  }

private:
  int fd_ = -1;
  int port_ = 0;
};

TEST_F(Sandbox, offline_tool_has_no_network_when_root) {
  if (::geteuid() != 0)
    GTEST_SKIP() << "network isolation (unshare(CLONE_NEWNET)) needs root; not root here";
  listener l;
  ASSERT_NE(l.port(), 0);
  auto req = request({"connect", std::to_string(l.port())});
  auto online = run(req);
  ASSERT_TRUE(online) << hive::describe(online.error());
  EXPECT_EQ(online->stdout_text, "connected\n");
  EXPECT_FALSE(online->network_isolated);
  req.offline = true;
  auto offline = run(req);
  ASSERT_TRUE(offline) << hive::describe(offline.error());
  EXPECT_EQ(offline->stdout_text.rfind("failed", 0), 0u) << offline->stdout_text;
  EXPECT_TRUE(offline->network_isolated);
}

TEST_F(Sandbox, offline_tool_is_not_isolated_when_not_root) {
  if (::geteuid() == 0)
    GTEST_SKIP() << "checks the documented non-root behaviour; running as root";
  listener l;
  ASSERT_NE(l.port(), 0);
  auto req = request({"connect", std::to_string(l.port())});
  req.offline = true;
  auto res = run(req);
  ASSERT_TRUE(res) << hive::describe(res.error());
  EXPECT_FALSE(res->network_isolated);
  EXPECT_EQ(res->stdout_text, "connected\n");
}

TEST_F(Sandbox, rejects_bad_requests) {
  auto req = request({"env"});
  req.env = {{"A=B", "x"}};
  auto res = run(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::invalid_argument);
  EXPECT_NE(hive::message_of(res.error()).find("A=B"), std::string::npos);
  req = request({"env"});
  req.scratch_root = "relative/dir";
  res = run(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::invalid_argument);
  EXPECT_NE(hive::message_of(res.error()).find("scratch_root"), std::string::npos);
  req.scratch_root = (dir_ / "missing").string();
  res = run(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::io_error);
  EXPECT_NE(hive::message_of(res.error()).find("missing"), std::string::npos);
  req = request({std::string("a\0b", 3)});
  res = run(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::invalid_argument);
  req = request({"echo"});
  req.limits.wall_ms_max = 0;
  res = run(req);
  ASSERT_FALSE(res);
  EXPECT_EQ(hive::code_of(res.error()), errc::invalid_config);
}

TEST(SandboxLimits, validate_rejects_out_of_range_limits_naming_the_field) {
  EXPECT_FALSE(hive::validate(hive::sandbox_limits{}));
  struct bad_case {
    const char* field;
    void (*plant)(hive::sandbox_limits&);
  };
  const bad_case cases[] = {
    {"cpu_seconds_max", [](hive::sandbox_limits& l) { l.cpu_seconds_max = 0; }},
    {"cpu_seconds_max", [](hive::sandbox_limits& l) { l.cpu_seconds_max = 3601; }},
    {"address_space_bytes_max",
     [](hive::sandbox_limits& l) { l.address_space_bytes_max = 1 << 20; }},
    {"open_files_max", [](hive::sandbox_limits& l) { l.open_files_max = 2; }},
    {"output_bytes_max", [](hive::sandbox_limits& l) { l.output_bytes_max = 0; }},
    {"output_bytes_max", [](hive::sandbox_limits& l) { l.output_bytes_max = (64 << 20) + 1; }},
    {"wall_ms_max", [](hive::sandbox_limits& l) { l.wall_ms_max = 0; }},
    {"wall_ms_max", [](hive::sandbox_limits& l) { l.wall_ms_max = 3'600'001; }},
    {"file_bytes_max", [](hive::sandbox_limits& l) { l.file_bytes_max = (1ull << 40) + 1; }},
    {"processes_max", [](hive::sandbox_limits& l) { l.processes_max = 1'000'000; }},
  };
  for (const auto& c : cases) {
    hive::sandbox_limits limits;
    c.plant(limits);
    auto err = hive::validate(limits);
    ASSERT_TRUE(err) << c.field;
    EXPECT_EQ(hive::code_of(err), errc::invalid_config) << c.field;
    EXPECT_NE(hive::message_of(err).find(c.field), std::string::npos) << hive::message_of(err);
  }
  hive::sandbox_limits edges;
  edges.cpu_seconds_max = 3600;
  edges.address_space_bytes_max = 16 << 20;
  edges.output_bytes_max = 64 << 20;
  edges.wall_ms_max = 1;
  edges.file_bytes_max = 0;
  EXPECT_FALSE(hive::validate(edges));
}

TEST(SandboxResult, to_json_carries_every_field) {
  sandbox_result r;
  r.exit_code = 4;
  r.stopped_by = "output";
  r.stdout_text = "out";
  r.stdout_truncated = true;
  r.max_rss_bytes = 1234;
  r.network_isolated = true;
  auto j = r.to_json();
  for (const char* key :
       {"exit_code", "term_signal", "stopped_by", "stdout_text", "stderr_text", "stdout_truncated",
        "stderr_truncated", "user_cpu_seconds", "system_cpu_seconds", "max_rss_bytes", "wall_ms",
        "network_isolated", "scratch_dir"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["exit_code"], 4);
  EXPECT_EQ(j["stopped_by"], "output");
  EXPECT_EQ(j["stdout_truncated"], true);
  EXPECT_EQ(j["max_rss_bytes"], 1234);
  EXPECT_EQ(j["network_isolated"], true);
}

} // namespace
