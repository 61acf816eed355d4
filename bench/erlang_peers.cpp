#include "bench/erlang_peers.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace hive::bench {

namespace {

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return out + "'";
}

/// Runs `cmd` (through sh); its stdout and stderr, and whether it exited 0.
std::pair<std::string, bool> run_command(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr)
    return {"", false};
  char buf[4096];
  size_t got = 0;
  while ((got = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, got);
  int status = ::pclose(p);
  return {out, status == 0};
}

bool on_path(const std::string& prog) {
  return run_command("command -v " + prog + " >/dev/null").second;
}

/// The number after "RESULT <name> " in ab.erl's output; negative if absent.
double erl_result(const std::string& out, const std::string& name) {
  auto key = "RESULT " + name + " ";
  auto at = out.find(key);
  if (at == std::string::npos)
    return -1;
  return std::strtod(out.c_str() + at + key.size(), nullptr);
}

[[noreturn]] void die(const std::string& what) {
  std::cerr << "agent-bench --compare: " << what << std::endl;
  std::exit(1);
}

constexpr const char* cookie = "hivebenchcookie";

} // namespace

std::string erlang_peers::resolve_dir(const std::string& dir) {
  if (!dir.empty())
    return dir;
  const char* env = std::getenv("HIVE_PEERS_DIR");
  return env != nullptr && *env != '\0' ? std::string{env}
                                        : std::string{HIVE_SOURCE_DIR} + "/../shared/peers";
}

erlang_peers::erlang_peers(const std::string& peers_dir)
    : src_(resolve_dir(peers_dir) + "/erlang") {
  if (!std::filesystem::exists(src_ + "/ab.erl")) {
    skipped_ = "no " + src_ + "/ab.erl (--peers DIR or HIVE_PEERS_DIR)";
    return;
  }
  if (!on_path("erl") || !on_path("erlc")) {
    skipped_ = "erl/erlc not installed (Debian package erlang-nox)";
    return;
  }
  ebin_ =
    (std::filesystem::temp_directory_path() / ("hive-bench-ebin-" + std::to_string(::getpid())))
      .string();
  std::filesystem::create_directories(ebin_);
  auto [out, compiled] =
    run_command("erlc -o " + shell_quote(ebin_) + " " + shell_quote(src_ + "/ab.erl") + " "
                + shell_quote(src_ + "/ab_sup.erl") + " " + shell_quote(src_ + "/ab_worker.erl"));
  if (!compiled)
    skipped_ = "erlc failed: " + out.substr(0, 300);
  // An epmd of our own, away from the default 4369 and from other runs of this benchmark.
  epmd_port_ = static_cast<uint16_t>(20000 + ::getpid() % 20000);
}

erlang_peers::~erlang_peers() {
  if (remote_runs_ > 0)
    (void)run_command("epmd -port " + std::to_string(epmd_port_) + " -kill >/dev/null");
  if (!ebin_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(ebin_, ec);
  }
}

std::string erlang_peers::command(const std::string& args) const {
  return "erl -noshell -pa EBIN -run ab main " + args + "   (EBIN: erlc of " + src_ + "/*.erl)";
}

double erlang_peers::run_local(const std::string& args, const std::string& name) const {
  auto [out, ok] = run_command("erl -noshell -pa " + shell_quote(ebin_) + " -run ab main " + args);
  auto v = erl_result(out, name);
  if (!ok || v < 0)
    die("erl " + args + " gave no " + name + ": " + out.substr(0, 300));
  return v;
}

erlang_remote_figures erlang_peers::run_remote(uint64_t npp, uint64_t nwin, uint64_t w,
                                               uint64_t k) const {
  if (k == 0 || nwin % k != 0)
    die("the Erlang windowed run needs its message count to be a multiple of ack-every");
  auto run = remote_runs_++;
  auto tag = std::to_string(::getpid()) + "_" + std::to_string(run);
  auto srv = "hivesrv" + tag + "@127.0.0.1";
  auto port = std::to_string(epmd_port_);
  // The server node: argv and environment are built before fork (the caller has threads).
  std::vector<std::string> args{
    "erl",         "-name",    srv,   "-setcookie", cookie, "-kernel", "inet_dist_use_interface",
    "{127,0,0,1}", "-noshell", "-pa", ebin_};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::string{*e}.rfind("ERL_EPMD_PORT=", 0) != 0)
      env.emplace_back(*e);
  env.push_back("ERL_EPMD_PORT=" + port);
  std::vector<char*> argv, envp;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  auto pid = ::fork();
  if (pid < 0)
    die("fork failed");
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    ::execvpe("erl", argv.data(), envp.data());
    ::_exit(127);
  }
  // The client connects (it retries for 10 s while the server starts), runs both parts and
  // halts the server.
  auto [out, ok] = run_command(
    "ERL_EPMD_PORT=" + port + " timeout 600 erl -name hivecli" + tag + "@127.0.0.1 -setcookie "
    + cookie + " -kernel inet_dist_use_interface '{127,0,0,1}' -noshell -pa " + shell_quote(ebin_)
    + " -run ab main remote " + srv + " " + std::to_string(npp) + " " + std::to_string(nwin) + " "
    + std::to_string(w) + " " + std::to_string(k));
  bool exited = false;
  for (int i = 0; i < 50 && !exited; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid)
      exited = true;
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  erlang_remote_figures f;
  f.pingpong_round_trips_per_s = erl_result(out, "erl_remote_pingpong");
  f.window_msgs_per_s = erl_result(out, "erl_remote_window");
  if (!ok || f.pingpong_round_trips_per_s <= 0 || f.window_msgs_per_s <= 0)
    die("erl remote gave no figures: " + out.substr(0, 400));
  return f;
}

} // namespace hive::bench
