// agentctl against a live agent-node: the config file and its precedence, breakers, restarts,
// the event stream, top, --json, and the interactive shell through a pty (tmux).

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/http_client.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"

namespace {

using hive::test::node_process;
using hive::test::read_file;
using hive::test::temp_dir;
using json = nlohmann::json;
using namespace std::chrono_literals;

std::vector<std::string> node_args(const temp_dir& dir) {
  return {"--name",      "ctl",         "--data-dir", (dir.path / "data").string(),
          "--gateway",   "127.0.0.1:0", "--metrics",  "127.0.0.1:0",
          "--log-level", "info"};
}

/// Environment changes for one agentctl run: a value sets the variable, nullopt removes it.
using env_changes = std::map<std::string, std::optional<std::string>>;

/// An agentctl process with stdout and stderr on one pipe; the environment is the test's
/// (without HIVE_URL, HIVE_CONFIG, HIVE_TOKEN*, HOME pointing nowhere) plus `env`.
class ctl_process {
public:
  ctl_process(std::vector<std::string> args, const env_changes& env) {
    int out[2];
    if (::pipe(out) != 0)
      return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(out[1], 2);
      ::close(out[0]);
      ::close(out[1]);
      for (auto* v : {"HIVE_URL", "HIVE_CONFIG", "HIVE_TOKEN", "HIVE_TOKEN_FILE", "HIVE_HISTORY",
                      "HIVE_CA_FILE"})
        ::unsetenv(v);
      ::setenv("HOME", "/nonexistent-agentctl-test-home", 1);
      for (auto& [k, v] : env) {
        if (v)
          ::setenv(k.c_str(), v->c_str(), 1);
        else
          ::unsetenv(k.c_str());
      }
      hive::test::exec_child(HIVE_AGENTCTL, std::move(args));
    }
    ::close(out[1]);
    fd_ = out[0];
  }

  ~ctl_process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0)
      ::close(fd_);
  }

  /// Reads until the output holds `needle` or `timeout` passed.
  bool wait_output(const std::string& needle, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (output.find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() >= deadline || !read_some(100))
        return output.find(needle) != std::string::npos;
    }
    return true;
  }

  /// Reads everything and waits for the exit (killed after `timeout`); returns the exit code.
  int finish(std::chrono::milliseconds timeout = 30s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline && read_some(100)) {
    }
    if (std::chrono::steady_clock::now() >= deadline)
      ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string output;

private:
  /// Reads what is there within `ms`; false at end of file.
  bool read_some(int ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0)
      return true;
    char buf[4096];
    auto n = ::read(fd_, buf, sizeof(buf));
    if (n <= 0)
      return false;
    output.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  bool exited_ = false;
};

struct ctl_result {
  int code = -1;
  std::string output;
};

ctl_result run(std::vector<std::string> args, const env_changes& env = {}) {
  ctl_process p{std::move(args), env};
  int code = p.finish();
  return {code, p.output};
}

/// A running node and agentctl runs against it (with the test admin key, unless told).
class agentctl_test : public ::testing::Test {
protected:
  void SetUp() override {
    node_.emplace(node_args(dir_), log_);
    ASSERT_TRUE(node_->wait_ready()) << read_file(log_);
    url_ = "http://127.0.0.1:" + std::to_string(node_->gateway_port);
  }

  /// agentctl --url URL args..., with $HIVE_TOKEN the admin key.
  ctl_result ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--url", url_});
    return run(std::move(args), {{"HIVE_TOKEN", hive::test::test_admin_key}});
  }

  void spawn(const std::string& id, const std::string& kind, bool breaker = false) {
    std::vector<std::string> args{"spawn", id, "--kind", kind};
    if (breaker)
      args.push_back("--breaker");
    auto r = ctl(args);
    ASSERT_EQ(r.code, 0) << r.output;
  }

  temp_dir dir_;
  std::string log_ = (dir_.path / "node.log").string();
  std::optional<node_process> node_;
  std::string url_;
};

/// Lines of `text` that hold `needle`.
size_t count_lines(const std::string& text, const std::string& needle) {
  std::istringstream in{text};
  size_t n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos)
      ++n;
  return n;
}

TEST_F(agentctl_test, config_file_flags_beat_environment_beat_config_file) {
  spawn("acme/c1", "counter");
  auto cfg = (dir_.path / "agentctl.toml").string();
  std::ofstream{cfg} << "url = \"" << url_ << "\"\ntoken = \"" << hive::test::test_admin_key
                     << "\"\n";
  // The config file alone is enough: url and token from it.
  auto only_file = run({"--config", cfg, "agents"});
  ASSERT_EQ(only_file.code, 0) << only_file.output;
  EXPECT_NE(only_file.output.find("acme/c1"), std::string::npos) << only_file.output;
  // $HIVE_CONFIG names it too; and ~/.config/hive/agentctl.toml is found by itself.
  EXPECT_EQ(run({"agents"}, {{"HIVE_CONFIG", cfg}}).code, 0);
  auto home = dir_.path / "home";
  std::filesystem::create_directories(home / ".config" / "hive");
  std::filesystem::copy_file(cfg, home / ".config" / "hive" / "agentctl.toml");
  auto from_home = run({"agents"}, {{"HOME", home.string()}});
  EXPECT_EQ(from_home.code, 0) << from_home.output;
  // Without any: the default URL (nothing listens on this test's behalf there, or a node
  // refuses us without a token); either way not this node's listing.
  auto none = run({"agents"});
  EXPECT_NE(none.code, 0) << none.output;
  // Environment beats the file: $HIVE_URL to a closed port fails.
  auto dead = std::string{"http://127.0.0.1:1"};
  auto env_url = run({"--config", cfg, "agents"}, {{"HIVE_URL", dead}});
  EXPECT_EQ(env_url.code, 1) << env_url.output;
  EXPECT_NE(env_url.output.find("127.0.0.1:1"), std::string::npos) << env_url.output;
  // ... and the flag beats the environment.
  auto flag_url = run({"--config", cfg, "--url", url_, "agents"}, {{"HIVE_URL", dead}});
  EXPECT_EQ(flag_url.code, 0) << flag_url.output;
  // Tokens the same way: a bad $HIVE_TOKEN beats the file's good one; --token beats both.
  auto env_token = run({"--config", cfg, "agents"}, {{"HIVE_TOKEN", "hive_bad"}});
  EXPECT_EQ(env_token.code, 1) << env_token.output;
  EXPECT_NE(env_token.output.find("401"), std::string::npos) << env_token.output;
  auto flag_token = run({"--config", cfg, "--token", hive::test::test_admin_key, "agents"},
                        {{"HIVE_TOKEN", "hive_bad"}});
  EXPECT_EQ(flag_token.code, 0) << flag_token.output;
  // token_file, relative to the config file's directory.
  std::ofstream{dir_.path / "admin.key"} << hive::test::test_admin_key << "\n";
  std::ofstream{cfg, std::ios::trunc} << "url = \"" << url_ << "\"\ntoken_file = \"admin.key\"\n";
  auto with_file = run({"--config", cfg, "agents"});
  EXPECT_EQ(with_file.code, 0) << with_file.output;
  // A bad config file: exit 2, naming the file and the key.
  std::ofstream{cfg, std::ios::trunc} << "url = \"" << url_ << "\"\ntokn = \"x\"\n";
  auto bad_key = run({"--config", cfg, "agents"});
  EXPECT_EQ(bad_key.code, 2) << bad_key.output;
  EXPECT_NE(bad_key.output.find(cfg), std::string::npos) << bad_key.output;
  EXPECT_NE(bad_key.output.find("'tokn'"), std::string::npos) << bad_key.output;
  std::ofstream{cfg, std::ios::trunc} << "url = 8080\n";
  auto bad_type = run({"--config", cfg, "agents"});
  EXPECT_EQ(bad_type.code, 2) << bad_type.output;
  EXPECT_NE(bad_type.output.find("key 'url'"), std::string::npos) << bad_type.output;
  std::ofstream{cfg, std::ios::trunc} << "url = \"unterminated\n";
  auto bad_toml = run({"--config", cfg, "agents"});
  EXPECT_EQ(bad_toml.code, 2) << bad_toml.output;
  EXPECT_NE(bad_toml.output.find("line 1"), std::string::npos) << bad_toml.output;
  auto missing = run({"--config", (dir_.path / "nope.toml").string(), "agents"});
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_NE(missing.output.find("nope.toml"), std::string::npos) << missing.output;
}

TEST_F(agentctl_test, agents_filters_by_tenant_kind_and_node) {
  spawn("acme/c1", "counter");
  spawn("acme/k1", "kv");
  spawn("beta/c2", "counter");
  auto acme = ctl({"--json", "agents", "--tenant", "acme"});
  ASSERT_EQ(acme.code, 0) << acme.output;
  auto j = json::parse(acme.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << acme.output;
  EXPECT_EQ(j["agents"].size(), 2u) << acme.output;
  auto counters = ctl({"agents", "--kind", "counter", "--node", "ctl"});
  ASSERT_EQ(counters.code, 0) << counters.output;
  EXPECT_NE(counters.output.find("acme/c1"), std::string::npos) << counters.output;
  EXPECT_NE(counters.output.find("beta/c2"), std::string::npos) << counters.output;
  EXPECT_EQ(counters.output.find("acme/k1"), std::string::npos) << counters.output;
  EXPECT_NE(counters.output.find("2 agents"), std::string::npos) << counters.output;
  auto elsewhere = ctl({"agents", "--node", "other"});
  ASSERT_EQ(elsewhere.code, 0) << elsewhere.output;
  EXPECT_NE(elsewhere.output.find("0 agents"), std::string::npos) << elsewhere.output;
  // Aligned columns and no colour when stdout is not a terminal.
  EXPECT_EQ(counters.output.find("\x1b["), std::string::npos) << counters.output;
  EXPECT_NE(counters.output.find("ID       KIND     NODE"), std::string::npos) << counters.output;
}

TEST_F(agentctl_test, breakers_lists_only_agents_with_a_breaker_and_its_state) {
  spawn("acme/b1", "counter", true);
  spawn("acme/c1", "counter");
  auto r = ctl({"breakers"});
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("acme/b1"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("acme/c1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("closed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 breakers"), std::string::npos) << r.output;
  auto j = json::parse(ctl({"--json", "breakers"}).output, nullptr, false);
  ASSERT_TRUE(j.is_object());
  ASSERT_EQ(j["breakers"].size(), 1u) << j.dump();
  EXPECT_EQ(j["breakers"][0]["id"], "acme/b1");
  EXPECT_EQ(j["breakers"][0]["breaker"]["state"], "closed") << j.dump();
}

TEST_F(agentctl_test, restarts_lists_a_tenants_agents_most_restarts_first) {
  spawn("acme/a2", "counter");
  spawn("acme/a1", "kv");
  spawn("beta/b1", "counter");
  auto r = ctl({"restarts", "--tenant", "acme"});
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("acme/a1"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("beta/b1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("RESTARTS"), std::string::npos) << r.output;
  auto j = json::parse(ctl({"--json", "restarts"}).output, nullptr, false);
  ASSERT_TRUE(j.is_object());
  ASSERT_EQ(j["agents"].size(), 3u) << j.dump();
  // Ties (no restarts here) in id order; more restarts would come first.
  for (size_t i = 1; i < j["agents"].size(); ++i) {
    auto& a = j["agents"][i - 1];
    auto& b = j["agents"][i];
    EXPECT_TRUE(a["restarts"] > b["restarts"]
                || (a["restarts"] == b["restarts"] && a["id"] < b["id"]))
      << j.dump();
  }
  EXPECT_EQ(j["agents"][0]["id"], "acme/a1") << j.dump();
}

TEST_F(agentctl_test, events_prints_the_events_that_happen_while_it_runs) {
  ctl_process tail{{"--url", url_, "--json", "events", "--count", "1"},
                   {{"HIVE_TOKEN", hive::test::test_admin_key}}};
  // The subscription is in place once agentctl says it streams.
  ASSERT_TRUE(tail.wait_output("streaming events", 20s)) << tail.output;
  spawn("acme/e1", "echo");
  ASSERT_EQ(tail.finish(), 0) << tail.output;
  std::istringstream lines{tail.output};
  std::optional<json> event;
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line.front() == '{')
      event = json::parse(line, nullptr, false);
  ASSERT_TRUE(event && event->is_object()) << tail.output;
  EXPECT_EQ((*event)["type"], "agent_started") << tail.output;
  EXPECT_EQ((*event)["agent"], "acme/e1") << tail.output;
  // Readable lines, filtered by agent: another agent's events do not show.
  ctl_process one{{"--url", url_, "events", "--agent", "acme/e2", "--count", "2"},
                  {{"HIVE_TOKEN", hive::test::test_admin_key}}};
  ASSERT_TRUE(one.wait_output("streaming events", 20s)) << one.output;
  spawn("acme/other", "echo");
  spawn("acme/e2", "echo");
  ASSERT_EQ(ctl({"stop", "acme/e2"}).code, 0);
  ASSERT_EQ(one.finish(), 0) << one.output;
  EXPECT_EQ(count_lines(one.output, "agent_started acme/e2 (echo) on ctl"), 1u) << one.output;
  EXPECT_EQ(count_lines(one.output, "agent_stopped acme/e2"), 1u) << one.output;
  EXPECT_EQ(one.output.find("acme/other"), std::string::npos) << one.output;
  // A refused upgrade: exit 1, saying why.
  auto refused = run({"--url", url_, "events"}, {{"HIVE_TOKEN", "hive_bad"}});
  EXPECT_EQ(refused.code, 1) << refused.output;
  EXPECT_NE(refused.output.find("refused the stream: HTTP 401"), std::string::npos)
    << refused.output;
}

TEST_F(agentctl_test, events_streams_a_workflows_progress_filtered_by_kind) {
  // Workflow progress travels the same WebSocket stream: the planner's workflow_step and
  // workflow_finished events, here selected by --kind planner (the providers' own lifecycle
  // events, of kind counter, stay out).
  ctl_process tail{{"--url", url_, "--json", "events", "--kind", "planner", "--count", "6"},
                   {{"HIVE_TOKEN", hive::test::test_admin_key}}};
  ASSERT_TRUE(tail.wait_output("streaming events", 20s)) << tail.output;
  hive::test::http_client http{node_->gateway_port};
  auto r = http.request("POST", "/v1/agents",
                        R"({"id":"acme/sink","kind":"counter","capabilities":["counting"]})");
  ASSERT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
  r = http.request("POST", "/v1/workflows",
                   R"({"id":"acme/wf","steps":[{"id":"a","capability":"counting",)"
                   R"("input":{"op":"add","by":1}},{"id":"b","capability":"counting",)"
                   R"("depends_on":["a"],"input":{"op":"add","by":1}}]})");
  ASSERT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
  ASSERT_EQ(tail.finish(), 0) << tail.output;
  std::vector<std::string> flow;
  std::istringstream lines{tail.output};
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line.front() != '{')
      continue;
    auto e = json::parse(line, nullptr, false);
    ASSERT_TRUE(e.is_object()) << line;
    EXPECT_EQ(e["kind"], "planner") << line;
    EXPECT_EQ(e["agent"], "acme/wf") << line;
    flow.push_back(e["type"].get<std::string>() + ":" + e.value("step", "") + ":"
                   + e.value("status", ""));
  }
  EXPECT_EQ(flow,
            (std::vector<std::string>{"agent_started::", "workflow_step:a:running",
                                      "workflow_step:a:done", "workflow_step:b:running",
                                      "workflow_step:b:done", "workflow_finished::succeeded"}))
    << tail.output;
}

TEST_F(agentctl_test, top_shows_rates_and_handled_counts_as_plain_lines_or_json) {
  spawn("acme/c1", "counter");
  spawn("acme/c2", "counter");
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(ctl({"ask", "acme/c1", R"({"op":"add","by":1})"}).code, 0);
  auto plain = ctl({"top", "--iterations", "2", "--interval-ms", "100"});
  ASSERT_EQ(plain.code, 0) << plain.output;
  EXPECT_EQ(count_lines(plain.output, "MSGS/S"), 2u) << plain.output;
  EXPECT_EQ(count_lines(plain.output, "acme/c1"), 2u) << plain.output;
  EXPECT_EQ(plain.output.find("\x1b["), std::string::npos) << "escapes on a non-terminal";
  auto as_json =
    ctl({"--json", "top", "--iterations", "2", "--interval-ms", "100", "--limit", "1"});
  ASSERT_EQ(as_json.code, 0) << as_json.output;
  std::istringstream lines{as_json.output};
  size_t n = 0;
  for (std::string line; std::getline(lines, line);) {
    auto j = json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    ++n;
    EXPECT_EQ(j["agents_sampled"], 2) << line;
    ASSERT_EQ(j["agents"].size(), 1u) << line; // --limit 1
    for (auto& a : j["agents"]) {
      EXPECT_GE(a["rate"].get<double>(), 0.0) << line;
      if (a["id"] == "acme/c1") {
        EXPECT_GE(a["handled"].get<uint64_t>(), 5u) << line;
      }
    }
  }
  EXPECT_EQ(n, 2u) << as_json.output;
}

TEST_F(agentctl_test, migrate_takes_the_node_as_positional_or_flag_and_refuses_two) {
  spawn("acme/c1", "counter");
  auto positional = ctl({"migrate", "acme/c1", "elsewhere"});
  EXPECT_EQ(positional.code, 1) << positional.output; // a standalone node cannot migrate
  EXPECT_NE(positional.output.find("migrate acme/c1 to elsewhere refused"), std::string::npos)
    << positional.output;
  auto both = ctl({"migrate", "acme/c1", "a", "--to", "b"});
  EXPECT_EQ(both.code, 2) << both.output;
  EXPECT_EQ(ctl({"migrate", "acme/c1"}).code, 2);
}

// -- against a scripted gateway: what a real node cannot easily be made to do ------------------

/// A stand-in gateway on 127.0.0.1: answers GETs from a path -> body table (404 otherwise) and
/// accepts a WebSocket upgrade on /v1/events only to close it at once with `close_code`.
class fake_gateway {
public:
  fake_gateway(std::map<std::string, std::string> bodies, uint16_t close_code)
      : bodies_(std::move(bodies)), close_code_(close_code),
        acceptor_(ioc_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread{[this] { serve(); }};
  }

  ~fake_gateway() {
    stop_ = true;
    boost::system::error_code ec;
    // Wake the blocking accept with a connection of our own.
    boost::asio::ip::tcp::socket s{ioc_};
    s.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }

  [[nodiscard]] std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }

private:
  void serve() {
    namespace beast = boost::beast;
    namespace http = beast::http;
    while (!stop_) {
      boost::asio::ip::tcp::socket sock{ioc_};
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      if (ec || stop_)
        return;
      beast::flat_buffer buf;
      http::request<http::string_body> req;
      http::read(sock, buf, req, ec);
      if (ec)
        continue;
      if (beast::websocket::is_upgrade(req)) {
        beast::websocket::stream<boost::asio::ip::tcp::socket> ws{std::move(sock)};
        ws.accept(req, ec);
        if (!ec)
          ws.close(
            beast::websocket::close_reason{static_cast<beast::websocket::close_code>(close_code_),
                                           "too slow"},
            ec);
        // Read until the client's close answer arrives (or it goes away).
        beast::flat_buffer rest;
        while (!ec)
          ws.read(rest, ec);
        continue;
      }
      std::string target{req.target()};
      auto it = bodies_.find(target.substr(0, target.find('?')));
      http::response<http::string_body> res{
        it == bodies_.end() ? http::status::not_found : http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      res.body() =
        it == bodies_.end() ? R"({"error":{"code":"not_found","message":"no"}})" : it->second;
      res.prepare_payload();
      http::write(sock, res, ec);
    }
  }

  std::map<std::string, std::string> bodies_;
  uint16_t close_code_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(agentctl, restarts_sorts_most_restarts_first_and_events_reports_falling_behind) {
  fake_gateway gw{{{"/v1/agents",
                    R"({"agents":[)"
                    R"({"id":"acme/a","kind":"counter","node":"n1","restarts":1,"running":true},)"
                    R"({"id":"acme/b","kind":"counter","node":"n1","restarts":7,"running":true},)"
                    R"({"id":"acme/c","kind":"kv","node":"n1","restarts":0,"running":false},)"
                    R"({"id":"acme/d","kind":"kv","node":"n1","restarts":7,"running":true}],)"
                    R"("next":null})"}},
                  4008};
  auto r = run({"--url", gw.url(), "restarts"}, {{"HIVE_TOKEN", "x"}});
  ASSERT_EQ(r.code, 0) << r.output;
  auto b = r.output.find("acme/b"), d = r.output.find("acme/d");
  auto a = r.output.find("acme/a"), c = r.output.find("acme/c");
  ASSERT_TRUE(a != std::string::npos && b != std::string::npos && c != std::string::npos
              && d != std::string::npos)
    << r.output;
  EXPECT_TRUE(b < d && d < a && a < c) << r.output; // 7, 7 (by id), 1, 0
  auto j = json::parse(run({"--url", gw.url(), "--json", "restarts"}, {{"HIVE_TOKEN", "x"}}).output,
                       nullptr, false);
  ASSERT_TRUE(j.is_object());
  ASSERT_EQ(j["agents"].size(), 4u);
  EXPECT_EQ(j["agents"][0]["id"], "acme/b");
  EXPECT_EQ(j["agents"][3]["id"], "acme/c");
  // The stream closed with 4008: exit 1 and the reason.
  auto ev = run({"--url", gw.url(), "events"}, {{"HIVE_TOKEN", "x"}});
  EXPECT_EQ(ev.code, 1) << ev.output;
  EXPECT_NE(ev.output.find("code 4008"), std::string::npos) << ev.output;
  EXPECT_NE(ev.output.find("fell behind"), std::string::npos) << ev.output;
}

// -- the shell through a pty (tmux) ------------------------------------------------------------

/// Runs a shell command line; returns its stdout.
std::string sh(const std::string& cmd) {
  std::string out;
  if (auto* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0)
      out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

/// The last non-blank line of a pane, trailing blanks removed.
std::string last_line(const std::string& pane) {
  std::istringstream in{pane};
  std::string last;
  for (std::string line; std::getline(in, line);) {
    line.erase(line.find_last_not_of(' ') + 1);
    if (!line.empty())
      last = line;
  }
  return last;
}

/// A tmux server of its own (-L) with one session running agentctl shell.
class tmux_session {
public:
  /// A socket name of its own per session (a killed server may still hold the last one).
  tmux_session(const std::string& command)
      : tmux_("tmux -L agentctl-test-" + std::to_string(::getpid()) + "-"
              + std::to_string(next_id()++) + " ") {
    sh(tmux_ + "new-session -d -s t -x 200 -y 50 '" + command + "' 2>&1");
  }

  ~tmux_session() {
    sh(tmux_ + "kill-server 2>/dev/null");
  }

  void keys(const std::string& k) {
    sh(tmux_ + "send-keys -t t " + k);
  }

  /// The pane's text; with `escapes`, its colours as ANSI escapes too.
  std::string pane(bool escapes = false) {
    return sh(tmux_ + "capture-pane -p " + (escapes ? "-e " : "") + "-t t");
  }

  /// Polls the pane (up to 15 s) until `pred` holds; returns whether it did.
  template <class Pred>
  bool wait(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + 15s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred(pane()))
        return true;
      std::this_thread::sleep_for(50ms);
    }
    return pred(pane());
  }

  bool running() {
    return sh(tmux_ + "has-session -t t 2>/dev/null && echo yes") == "yes\n";
  }

private:
  static int& next_id() {
    static int id = 0;
    return id;
  }

  std::string tmux_;
};

TEST_F(agentctl_test, shell_completes_commands_and_agent_ids_and_recalls_history) {
  if (std::system("command -v tmux >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "tmux is not installed (scripts/setup.sh installs it): the shell test needs "
                    "a pty";
  spawn("acme/worker1", "counter");
  spawn("acme/c1", "counter");
  auto hist = (dir_.path / "history").string();
  tmux_session t{"env HOME=" + dir_.path.string() + " HIVE_TOKEN=" + hive::test::test_admin_key
                 + " HIVE_HISTORY=" + hist + " NO_COLOR=1 " + HIVE_AGENTCTL + " --url " + url_
                 + " shell"};
  auto last_is = [](std::string want) {
    return [want](const std::string& pane) { return last_line(pane) == want; };
  };
  ASSERT_TRUE(t.wait(last_is("agentctl>"))) << t.pane();
  // An error keeps the shell running.
  t.keys("bogus Enter");
  ASSERT_TRUE(t.wait([](const std::string& p) {
    return p.find("unknown subcommand 'bogus'") != std::string::npos && last_line(p) == "agentctl>";
  }))
    << t.pane();
  // Ctrl-C at the prompt does not end it either (the steps below need it running).
  t.keys("C-c");
  // A partial command + Tab completes it.
  t.keys("insp Tab");
  ASSERT_TRUE(t.wait(last_is("agentctl> inspect"))) << t.pane();
  // A partial agent id + Tab completes it (fetched from the node).
  t.keys("acme/wor Tab");
  ASSERT_TRUE(t.wait(last_is("agentctl> inspect acme/worker1"))) << t.pane();
  t.keys("Enter");
  ASSERT_TRUE(t.wait([](const std::string& p) {
    return p.find("supervisor:") != std::string::npos && last_line(p) == "agentctl>";
  }))
    << t.pane();
  EXPECT_NE(t.pane().find("acme/worker1"), std::string::npos);
  // Up recalls it from the history.
  t.keys("Up");
  ASSERT_TRUE(t.wait(last_is("agentctl> inspect acme/worker1"))) << t.pane();
  // Leave: the line is cleared, `exit` ends the shell, the history file holds the command.
  t.keys("C-u exit Enter");
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (t.running() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(t.running()) << t.pane();
  auto saved = read_file(hist);
  EXPECT_NE(saved.find("acme/worker1"), std::string::npos) << saved;
}

TEST_F(agentctl_test, on_a_terminal_tables_have_colour_unless_no_color_and_top_redraws) {
  if (std::system("command -v tmux >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "tmux is not installed (scripts/setup.sh installs it): this test needs a pty";
  spawn("acme/c1", "counter");
  auto env = "env HOME=" + dir_.path.string() + " HIVE_TOKEN=" + hive::test::test_admin_key + " ";
  auto bin = std::string{HIVE_AGENTCTL} + " --url " + url_;
  auto finished = [](const std::string& p) { return p.find("DONE") != std::string::npos; };
  {
    // The pane stays after the commands ended (sleep) until the server is killed.
    tmux_session t{env + bin + " agents; " + env + "NO_COLOR=1 " + bin
                   + " agents; echo DONE; sleep 60"};
    ASSERT_TRUE(t.wait(finished)) << t.pane();
    auto coloured = t.pane(true);
    auto first = coloured.find("1 agents");
    ASSERT_NE(first, std::string::npos) << coloured;
    EXPECT_NE(coloured.substr(0, first).find("\x1b["), std::string::npos)
      << "no colour on a terminal: " << coloured;
    auto second = coloured.find("1 agents", first + 1);
    ASSERT_NE(second, std::string::npos) << coloured;
    EXPECT_EQ(coloured.substr(first + 8, second - first - 8).find("\x1b["), std::string::npos)
      << "colour despite NO_COLOR: " << coloured;
  }
  {
    tmux_session t{env + bin + " top --iterations 3 --interval-ms 100; echo DONE; sleep 60"};
    ASSERT_TRUE(t.wait(finished)) << t.pane();
    // Redrawn in place: one table on the screen, not three.
    EXPECT_EQ(count_lines(t.pane(), "MSGS/S"), 1u) << t.pane();
    EXPECT_EQ(count_lines(t.pane(), "acme/c1"), 1u) << t.pane();
  }
}

/// A node whose gateway speaks HTTPS only (`gateway.tls_*`): agentctl reaches it at https://
/// when it trusts the CA (flag, environment or config file), over plain requests and the
/// WebSocket event stream; an untrusted certificate, plain http:// and a missing CA file fail
/// with their exit codes.
TEST(agentctl_tls, https_works_with_the_ca_and_fails_without_it) {
  temp_dir dir;
  ASSERT_TRUE(hive::test::make_ca(dir.path, "ca")) << "openssl failed (is it installed?)";
  ASSERT_TRUE(hive::test::make_signed_cert(dir.path, "node", "ca"));
  ASSERT_TRUE(hive::test::make_ca(dir.path, "other"));
  auto args = node_args(dir);
  for (auto kv : {"gateway.tls_cert_file=" + (dir.path / "node.crt").string(),
                  "gateway.tls_key_file=" + (dir.path / "node.key").string()}) {
    args.push_back("--set");
    args.push_back(kv);
  }
  auto log = (dir.path / "node.log").string();
  node_process node{args, log};
  ASSERT_TRUE(node.wait_ready()) << read_file(log);
  auto url = "https://127.0.0.1:" + std::to_string(node.gateway_port);
  auto ca = (dir.path / "ca.crt").string();
  env_changes admin{{"HIVE_TOKEN", hive::test::test_admin_key}, {"HIVE_CA_FILE", std::nullopt}};
  auto ctl = [&](std::vector<std::string> a, env_changes env) {
    a.insert(a.begin(), {"--url", url});
    return run(std::move(a), env);
  };

  // --ca-file: spawn and ask over HTTPS.
  auto made = ctl({"--ca-file", ca, "spawn", "acme/c", "--kind", "counter"}, admin);
  ASSERT_EQ(made.code, 0) << made.output;
  auto asked = ctl({"--ca-file", ca, "--json", "ask", "acme/c", R"({"op":"add","by":4})"}, admin);
  ASSERT_EQ(asked.code, 0) << asked.output;
  EXPECT_NE(asked.output.find("\"value\":4"), std::string::npos) << asked.output;

  // $HIVE_CA_FILE, and the event stream over wss://.
  auto env_ca = admin;
  env_ca["HIVE_CA_FILE"] = ca;
  ctl_process tail{{"--url", url, "events", "--count", "1", "--agent", "acme/d"}, env_ca};
  ASSERT_TRUE(tail.wait_output("streaming events", 10s)) << tail.output;
  auto spawned = ctl({"spawn", "acme/d", "--kind", "counter"}, env_ca);
  ASSERT_EQ(spawned.code, 0) << spawned.output;
  EXPECT_EQ(tail.finish(), 0) << tail.output;
  EXPECT_NE(tail.output.find("acme/d"), std::string::npos) << tail.output;

  // A config file's ca_file, relative to the file.
  {
    std::ofstream cfg{dir.path / "agentctl.toml"};
    cfg << "url = \"" << url << "\"\nca_file = \"ca.crt\"\n";
  }
  auto listed = run({"--config", (dir.path / "agentctl.toml").string(), "agents"}, admin);
  ASSERT_EQ(listed.code, 0) << listed.output;
  EXPECT_NE(listed.output.find("acme/d"), std::string::npos) << listed.output;

  // A CA that did not sign the node's certificate: the handshake fails, exit 1.
  auto untrusted = ctl({"--ca-file", (dir.path / "other.crt").string(), "agents"}, admin);
  EXPECT_EQ(untrusted.code, 1) << untrusted.output;
  EXPECT_NE(untrusted.output.find("certificate verify failed"), std::string::npos)
    << untrusted.output;
  // Without any CA: the system's trust store does not know the test CA either.
  auto system_store = ctl({"agents"}, admin);
  EXPECT_EQ(system_store.code, 1) << system_store.output;
  // Plain HTTP to the HTTPS port gets no answer it can read: exit 1.
  auto plain =
    run({"--url", "http://127.0.0.1:" + std::to_string(node.gateway_port), "agents"}, admin);
  EXPECT_EQ(plain.code, 1) << plain.output;
  // A CA file that is not there is a usage error naming it.
  auto missing = ctl({"--ca-file", (dir.path / "absent.crt").string(), "agents"}, admin);
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_NE(missing.output.find("absent.crt"), std::string::npos) << missing.output;
}

} // namespace
