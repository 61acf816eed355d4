#pragma once

// A cluster of real agent-node processes on 127.0.0.1 for tests (tests/nodes/cluster_test.cpp,
// tests/nodes/failover_test.cpp): members whose data directories survive restarts, their views
// of the member list, polling helpers and asks through any gateway.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/http_client.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"

namespace hive::test {

using namespace std::chrono_literals;
using json = nlohmann::json;

/// One member of a test cluster: its data directory survives restarts of its process.
struct member {
  std::string name;
  std::filesystem::path data;
  std::string log;
  std::unique_ptr<node_process> proc;
  int starts = 0;
};

class cluster_test : public ::testing::Test {
protected:
  temp_dir dir;
  std::vector<member> nodes;

  /// Starts (or restarts) node `i`, seeded by `seed_port` (0: none).
  /// The nodes' log level: info, or `HIVE_TEST_NODE_LOG_LEVEL` (e.g. debug, to read why a
  /// join failed in a kept test directory).
  static std::string log_level() {
    auto env = std::getenv("HIVE_TEST_NODE_LOG_LEVEL");
    return env != nullptr && *env != '\0' ? env : "info";
  }

  void start(size_t i, uint16_t seed_port, std::vector<std::string> extra = {}) {
    auto& m = nodes[i];
    m.log = (dir.path / (m.name + "-" + std::to_string(m.starts++) + ".log")).string();
    std::vector<std::string> args{"--name",    m.name,        "--data-dir",  m.data.string(),
                                  "--gateway", "127.0.0.1:0", "--metrics",   "127.0.0.1:0",
                                  "--cluster", "127.0.0.1:0", "--log-level", log_level()};
    if (seed_port != 0) {
      args.push_back("--seed");
      args.push_back("127.0.0.1:" + std::to_string(seed_port));
    }
    args.insert(args.end(), extra.begin(), extra.end());
    m.proc = std::make_unique<node_process>(args, m.log);
    ASSERT_TRUE(m.proc->wait_ready()) << read_file(m.log);
    ASSERT_NE(m.proc->cluster_port, 0) << "no cluster address in the ready line";
  }

  void add(const std::string& name) {
    member m;
    m.name = name;
    m.data = dir.path / name;
    nodes.push_back(std::move(m));
  }

  /// `GET /v1/cluster/nodes` of node `i`: name -> entry.
  std::map<std::string, json> view(size_t i) {
    http_client http{nodes[i].proc->gateway_port};
    auto r = http.request("GET", "/v1/cluster/nodes");
    std::map<std::string, json> out;
    if (!r || r->status != 200) {
      std::cout << "GET /v1/cluster/nodes on " << nodes[i].name << " (port "
                << nodes[i].proc->gateway_port
                << "): " << (r ? std::to_string(r->status) + " " + r->body : "no answer")
                << std::endl;
      return out;
    }
    auto doc = json::parse(r->body); // (a range-for over parse(...)["nodes"] would dangle)
    for (auto& n : doc["nodes"])
      out[n["name"].get<std::string>()] = n;
    return out;
  }

  /// Polls until `pred` holds or `max` passes; returns how long it took (nullopt: never).
  template <class Pred>
  std::optional<std::chrono::milliseconds> within(std::chrono::milliseconds max, Pred pred) {
    auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < max) {
      if (pred())
        return std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - t0);
      std::this_thread::sleep_for(5ms);
    }
    return std::nullopt;
  }

  bool all_see(const std::vector<size_t>& observers, const std::string& who,
               const std::string& status) {
    for (auto o : observers) {
      auto v = view(o);
      auto i = v.find(who);
      if (i == v.end() || i->second["status"] != status)
        return false;
    }
    return true;
  }

  /// Starts nodes `names` (the first alone, the others seeded by it, all with `extra`) and
  /// waits up to `limit` until every node sees every one up.
  void form(const std::vector<std::string>& names, const std::vector<std::string>& extra,
            std::chrono::milliseconds limit = 30s) {
    auto first = nodes.size();
    for (auto& n : names)
      add(n);
    start(first, 0, extra);
    for (size_t i = first + 1; i < nodes.size(); ++i)
      start(i, nodes[first].proc->cluster_port, extra);
    auto formed = within(limit, [&] {
      for (size_t i = first; i < nodes.size(); ++i)
        for (auto& n : names)
          if (!all_see({i}, n, "up"))
            return false;
      return true;
    });
    ASSERT_TRUE(formed) << "the " << names.size() << " nodes did not all see each other up; "
                        << nodes[first].name << " sees " << json(view(first)).dump() << "\n"
                        << log_tails(6000);
    std::cout << "cluster of " << names.size() << " formed in " << formed->count() << " ms"
              << std::endl;
  }

  /// Starts n1, then n2 and n3 seeded by n1, and waits until every node sees all three up.
  void form_three(const std::vector<std::string>& extra = {}) {
    form({"n1", "n2", "n3"}, extra, 20s);
  }

  /// Spawns `id` of `kind` through node `via`, pinned to `node` (empty: placement decides).
  void spawn_agent(size_t via, const std::string& id, const std::string& kind,
                   const std::string& node = {}) {
    http_client http{nodes[via].proc->gateway_port};
    json body{{"id", id}, {"kind", kind}};
    if (!node.empty())
      body["node"] = node;
    auto r = http.request("POST", "/v1/agents", body.dump());
    ASSERT_TRUE(r) << "spawn of " << id << ": no answer";
    ASSERT_EQ(r->status, 201) << "spawn of " << id << ": " << r->body;
  }

  /// The end of every node's log (for failure messages).
  std::string log_tails(size_t bytes = 3000) {
    std::string out;
    for (auto& m : nodes) {
      auto text = read_file(m.log);
      out += "--- " + m.name + " (" + m.log + "):\n";
      out += text.size() > bytes ? text.substr(text.size() - bytes) : text;
    }
    return out;
  }

  /// `--set` flags for node-to-node TLS with `name`'s certificate, trusting CA `ca`.
  std::vector<std::string> tls_flags(const std::string& name, const std::string& ca) {
    auto f = hive::test::cert_files(dir.path, name, ca);
    return {"--set", "cluster.tls_cert_file=" + f.cert_file,
            "--set", "cluster.tls_key_file=" + f.key_file,
            "--set", "cluster.tls_ca_file=" + f.ca_file};
  }

  /// The `value` the agent answers, or -1 (printing why) when the ask fails.
  int ask_value(size_t via, const std::string& id, const std::string& body) {
    http_client http{nodes[via].proc->gateway_port};
    auto r = http.request("POST", "/v1/agents/" + id + "/ask", body);
    if (!r || r->status != 200) {
      std::cerr << "ask " << id << " through " << nodes[via].name << " failed: "
                << (r ? std::to_string(r->status) + " " + r->body : std::string{"no response"})
                << "\n";
      return -1;
    }
    return json::parse(r->body)["value"].get<int>();
  }
};

} // namespace hive::test
