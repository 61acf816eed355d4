// A real Prometheus server (/usr/bin/prometheus, Debian's package) on 127.0.0.1 scraping a real
// 3-node cluster every second: every target is up, and the hive metrics read back through
// Prometheus' HTTP API equal what the nodes expose and what the test did through the gateways
// (asks per node, asks in the latency histogram, live agents, messages handled).

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/http_client.hpp"
#include "support/metrics_text.hpp"
#include "support/node_process.hpp"

using namespace hive::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

constexpr const char* prometheus_bin = "/usr/bin/prometheus";
// The gateway labels requests by method and route template.
constexpr const char* ask_route = "POST /v1/agents/{id}/ask";

/// A port that was free a moment ago on 127.0.0.1 (bound to 0, read back, closed).
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0
      && ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

std::string url_encode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned>(c));
      out += buf;
    }
  }
  return out;
}

/// A Prometheus server process; stopped at destruction (SIGTERM, SIGKILL after 10 s), also
/// when the test fails half-way.
class prometheus_process {
public:
  prometheus_process(const std::string& config, const std::string& tsdb, uint16_t port,
                     const std::string& log_file) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      exec_child(prometheus_bin,
                 {"--config.file=" + config, "--storage.tsdb.path=" + tsdb,
                  "--web.listen-address=127.0.0.1:" + std::to_string(port), "--log.level=info"});
    }
  }

  ~prometheus_process() {
    if (pid_ <= 0 || exited())
      return;
    ::kill(pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (exited())
        return;
      std::this_thread::sleep_for(20ms);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  prometheus_process(const prometheus_process&) = delete;
  prometheus_process& operator=(const prometheus_process&) = delete;

  /// True once the process is gone (reaped here).
  bool exited() {
    if (reaped_)
      return true;
    int status = 0;
    reaped_ = ::waitpid(pid_, &status, WNOHANG) == pid_;
    return reaped_;
  }

  pid_t pid() const {
    return pid_;
  }

private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

struct member {
  std::string name;
  std::filesystem::path data;
  std::string log;
  std::unique_ptr<node_process> proc;
};

class prometheus_test : public ::testing::Test {
protected:
  temp_dir dir;
  std::vector<member> nodes;
  uint16_t prom_port = 0;
  std::string prom_log;
  std::unique_ptr<prometheus_process> prom; // destroyed before the nodes and the directory

  void start(size_t i, uint16_t seed_port) {
    auto& m = nodes[i];
    m.log = (dir.path / (m.name + ".log")).string();
    std::vector<std::string> args{"--name",    m.name,        "--data-dir",  m.data.string(),
                                  "--gateway", "127.0.0.1:0", "--metrics",   "127.0.0.1:0",
                                  "--cluster", "127.0.0.1:0", "--log-level", "info"};
    if (seed_port != 0) {
      args.push_back("--seed");
      args.push_back("127.0.0.1:" + std::to_string(seed_port));
    }
    m.proc = std::make_unique<node_process>(args, m.log);
    ASSERT_TRUE(m.proc->wait_ready()) << read_file(m.log);
    ASSERT_NE(m.proc->cluster_port, 0) << "no cluster address in the ready line";
  }

  /// Node `i`'s member list: name -> status.
  std::map<std::string, std::string> view(size_t i) {
    http_client http{nodes[i].proc->gateway_port};
    auto r = http.request("GET", "/v1/cluster/nodes");
    std::map<std::string, std::string> out;
    if (!r || r->status != 200)
      return out;
    auto doc = json::parse(r->body);
    for (auto& n : doc["nodes"])
      out[n["name"].get<std::string>()] = n["status"].get<std::string>();
    return out;
  }

  template <class Pred>
  bool within(std::chrono::milliseconds max, Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + max;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred())
        return true;
      std::this_thread::sleep_for(100ms);
    }
    return pred();
  }

  void form_three() {
    for (auto name : {"n1", "n2", "n3"})
      nodes.push_back(member{name, dir.path / name, {}, nullptr});
    start(0, 0);
    start(1, nodes[0].proc->cluster_port);
    start(2, nodes[0].proc->cluster_port);
    bool formed = within(20s, [&] {
      for (size_t i = 0; i < 3; ++i) {
        auto v = view(i);
        for (auto n : {"n1", "n2", "n3"})
          if (v[n] != "up")
            return false;
      }
      return true;
    });
    ASSERT_TRUE(formed) << "the three nodes did not all see each other up\n" << log_tails();
  }

  std::string log_tails(size_t bytes = 3000) {
    std::string out;
    auto tail = [&](const std::string& name, const std::string& file) {
      auto text = read_file(file);
      out += "--- " + name + " (" + file + "):\n";
      out += text.size() > bytes ? text.substr(text.size() - bytes) : text;
      out += "\n";
    };
    for (auto& m : nodes)
      tail(m.name, m.log);
    if (!prom_log.empty())
      tail("prometheus", prom_log);
    return out;
  }

  /// GET on Prometheus' HTTP API (no credentials); nullopt unless it answered 200.
  std::optional<http_response> prom_get(const std::string& target) {
    http_client http{prom_port, ""};
    auto r = http.request("GET", target);
    if (!r || r->status != 200)
      return std::nullopt;
    return r;
  }

  /// An instant query's result vector (`data.result`); nullopt if the query failed.
  std::optional<json> query(const std::string& promql) {
    auto r = prom_get("/api/v1/query?query=" + url_encode(promql));
    if (!r)
      return std::nullopt;
    auto doc = json::parse(r->body, nullptr, false);
    if (doc.is_discarded() || doc.value("status", "") != "success")
      return std::nullopt;
    return doc["data"]["result"];
  }

  /// The values of an instant query, by the value of `label` in each result ("" if absent).
  std::map<std::string, double> values_by(const std::string& promql, const std::string& label) {
    std::map<std::string, double> out;
    if (auto result = query(promql))
      for (auto& s : *result)
        out[s["metric"].value(label, "")] = std::stod(s["value"][1].get<std::string>());
    return out;
  }

  /// The single value of an instant query (nullopt if it has no or several results).
  std::optional<double> scalar(const std::string& promql) {
    auto v = values_by(promql, "__none__");
    if (v.size() != 1)
      return std::nullopt;
    return v.begin()->second;
  }

  /// Node `i`'s own /metrics text.
  std::string scrape(size_t i) {
    http_client http{nodes[i].proc->metrics_port, ""};
    auto r = http.request("GET", "/metrics");
    return r && r->status == 200 ? r->body : std::string{};
  }

  /// Writes prometheus.yml (the three metrics endpoints, every second) and starts Prometheus.
  void start_prometheus() {
    auto config = dir.path / "prometheus.yml";
    {
      std::ofstream out{config};
      out << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
             "  evaluation_interval: 1s\nscrape_configs:\n  - job_name: hive\n"
             "    metrics_path: /metrics\n    static_configs:\n";
      for (auto& m : nodes)
        out << "      - targets: [\"127.0.0.1:" << m.proc->metrics_port << "\"]\n"
            << "        labels:\n          node: " << m.name << "\n";
    }
    prom_port = free_port();
    ASSERT_NE(prom_port, 0);
    prom_log = (dir.path / "prometheus.log").string();
    prom = std::make_unique<prometheus_process>(config.string(), (dir.path / "tsdb").string(),
                                                prom_port, prom_log);
    ASSERT_GT(prom->pid(), 0) << "fork failed";
    bool ready = within(30s, [&] { return !prom->exited() && prom_get("/-/ready").has_value(); });
    ASSERT_TRUE(ready) << "Prometheus did not become ready on 127.0.0.1:" << prom_port << "\n"
                       << read_file(prom_log);
  }
};

} // namespace

TEST_F(prometheus_test, prometheus_scrapes_three_nodes_and_serves_their_hive_metrics) {
  ASSERT_EQ(::access(prometheus_bin, X_OK), 0)
    << prometheus_bin
    << " is missing: install Debian's prometheus package (bash scripts/setup.sh installs it)";
  form_three();
  if (HasFatalFailure())
    return;

  // One counter; asks to it through every gateway: 3 through n1, 2 through n2, 1 through n3.
  {
    http_client http{nodes[0].proc->gateway_port};
    auto r = http.request("POST", "/v1/agents", R"({"id":"acme/c1","kind":"counter"})");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << r->body;
  }
  const std::map<std::string, int> asks{{"n1", 3}, {"n2", 2}, {"n3", 1}};
  int value = 0;
  for (size_t i = 0; i < 3; ++i) {
    http_client http{nodes[i].proc->gateway_port};
    for (int k = 0; k < asks.at(nodes[i].name); ++k) {
      auto r = http.request("POST", "/v1/agents/acme/c1/ask", R"({"op":"add","by":1})");
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 200) << r->body;
      ASSERT_EQ(json::parse(r->body)["value"].get<int>(), ++value);
    }
  }

  // What the nodes themselves expose.
  std::map<std::string, double> direct_asks;
  double direct_live = 0;
  double direct_handled = 0;
  for (size_t i = 0; i < 3; ++i) {
    auto text = scrape(i);
    ASSERT_FALSE(text.empty()) << nodes[i].name << ": no /metrics";
    direct_asks[nodes[i].name] =
      metric_sum(text, "hive_gateway_requests_total",
                 {"route=\"" + std::string{ask_route} + "\"", "code=\"200\""});
    direct_live += metric_sum(text, "hive_agents_live");
    direct_handled += metric_sum(text, "hive_messages_handled_total", {"kind=\"counter\""});
  }
  for (auto& [node, n] : asks)
    ASSERT_EQ(direct_asks[node], n) << node << "'s own /metrics";
  ASSERT_GE(direct_live, 1);
  ASSERT_GE(direct_handled, 6);

  start_prometheus();
  if (HasFatalFailure())
    return;

  // Every target up.
  std::map<std::string, double> up;
  bool all_up = within(30s, [&] {
    up = values_by(R"(up{job="hive"})", "node");
    return up.size() == 3 && up["n1"] == 1 && up["n2"] == 1 && up["n3"] == 1;
  });
  ASSERT_TRUE(all_up) << "up{job=\"hive\"}: " << json(up).dump() << "\n"
                      << prom_get("/api/v1/targets").value_or(http_response{}).body << "\n"
                      << log_tails();

  // The asks each gateway counted, read back through Prometheus, per node.
  auto per_node = "sum by (node) (hive_gateway_requests_total{job=\"hive\",route=\""
    + std::string{ask_route} + "\",code=\"200\"})";
  std::map<std::string, double> got;
  bool counted = within(20s, [&] {
    got = values_by(per_node, "node");
    return got == std::map<std::string, double>{{"n1", 3}, {"n2", 2}, {"n3", 1}};
  });
  EXPECT_TRUE(counted) << per_node << " = " << json(got).dump();

  // Through a histogram's _count, across the cluster.
  auto count = "sum(hive_gateway_request_seconds_count{job=\"hive\",route=\""
    + std::string{ask_route} + "\"})";
  std::optional<double> asked;
  EXPECT_TRUE(within(20s, [&] { return (asked = scalar(count)) && *asked == 6; }))
    << count << " = " << (asked ? std::to_string(*asked) : "no result");

  // A gauge and another counter: the same values the nodes expose.
  std::optional<double> live;
  EXPECT_TRUE(within(20s,
                     [&] {
                       return (live = scalar(R"(sum(hive_agents_live{job="hive"}))"))
                         && *live == direct_live;
                     }))
    << "sum(hive_agents_live) = " << (live ? std::to_string(*live) : "no result")
    << ", the nodes expose " << direct_live;
  auto handled_query = R"(sum(hive_messages_handled_total{job="hive",kind="counter"}))";
  std::optional<double> handled;
  EXPECT_TRUE(
    within(20s, [&] { return (handled = scalar(handled_query)) && *handled == direct_handled; }))
    << handled_query << " = " << (handled ? std::to_string(*handled) : "no result")
    << ", the nodes expose " << direct_handled;
  // A series that no node has reads back as nothing (the checks above are not vacuous).
  auto none = query(R"(hive_no_such_metric_total{job="hive"})");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty()) << none->dump();
  std::cout << "prometheus on 127.0.0.1:" << prom_port << " read back: asks " << json(got).dump()
            << ", agents live " << direct_live << ", counter messages handled " << direct_handled
            << std::endl;
}
