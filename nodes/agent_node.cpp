// agent-node: one node of a hive cluster. Starts from config and flags, prints one ready line
// with its addresses, stops cleanly on SIGINT/SIGTERM (stop accepting, drain, stop actors,
// exit 0). A bad flag or config exits 2 with the reason; a start-up failure exits 1.

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <future>
#include <iostream>
#include <limits>

#include <malloc.h>
#include <pthread.h>
#include <unistd.h>

#include <caf/all.hpp>

#include "actors/auth.hpp"
#include "actors/binary_gateway.hpp"
#include "actors/circuit_breaker.hpp"
#include "actors/debate.hpp"
#include "actors/gateway.hpp"
#include "actors/llm_agent.hpp"
#include "actors/planner.hpp"
#include "actors/pubsub.hpp"
#include "actors/sample_kinds.hpp"
#include "actors/tool_runner.hpp"
#include "config/node_config.hpp"
#include "protocols/errc.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/cluster.hpp"
#include "runtime/logging.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_runtime.hpp"
#include "storage/data_dir.hpp"

namespace {

std::atomic<bool> fatal{false};

int fail(int code, const std::string& what) {
  std::cerr << "agent-node: error: " << what << std::endl;
  return code;
}

int run(const hive::node_config& cfg, const sigset_t& signals) {
  using namespace hive;
  auto dir = data_dir::open(cfg.node.data_dir);
  if (!dir)
    return fail(1, message_of(dir.error()));
  auto sec_settings = security::settings_from(cfg, dir->path());
  if (!sec_settings)
    return fail(2, message_of(sec_settings.error()));
  std::string generated_admin_key;
  auto sec = security::open(cfg, std::move(*sec_settings), &generated_admin_key);
  if (!sec)
    return fail(1, message_of(sec.error()));
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  auto m = std::make_shared<metrics>();
  kind_registry kinds;
  if (auto err = register_sample_kinds(kinds))
    return fail(1, message_of(err));
  auto scratch =
    cfg.tools.scratch_dir.empty() ? dir->path() + "/tool-scratch" : cfg.tools.scratch_dir;
  if (auto err = register_tool_kinds(kinds, cfg.tools, scratch))
    return fail(2, message_of(err));
  if (auto err = register_planner_kind(kinds, cfg.planner))
    return fail(2, message_of(err));
  if (auto err = register_llm_kinds(kinds, cfg.llm, m))
    return fail(2, message_of(err));
  if (auto err = pubsub::register_topic_kind(kinds, cfg.topics))
    return fail(2, message_of(err));
  if (auto err = debate::register_debate_kinds(kinds))
    return fail(2, message_of(err));
  auto metrics_port = m->serve(cfg.metrics.listen);
  if (!metrics_port)
    return fail(1, message_of(metrics_port.error()));
  auto db = open_node_store(cfg, dir->path(), m);
  if (!db)
    return fail(1, message_of(db.error()));
  auto breaker_cfg = cfg.breaker;
  auto rt = node_runtime::start(
    sys, cfg, std::move(kinds), m,
    [breaker_cfg, m](caf::actor_system& s, const agent_id& id) {
      return spawn_circuit_breaker(s, id, breaker_cfg, m);
    },
    *db);
  if (!rt)
    return fail(1, message_of(rt.error()));
  (*rt)->set_fatal_handler([](const caf::error& reason) {
    log::event(spdlog::level::critical, "root_supervisor_failed", {{"reason", describe(reason)}});
    fatal = true;
    kill(getpid(), SIGTERM);
  });
  auto gw = gateway::start(**rt, cfg.gateway, **sec);
  if (!gw)
    return fail(1, message_of(gw.error()));
  auto gateway_addr = cfg.gateway.listen.host + ":" + std::to_string((*gw)->port());
  std::unique_ptr<binary_gateway> bin;
  std::string binary_text;
  if (!cfg.binary.listen.empty()) {
    auto b = binary_gateway::start(**rt, cfg, **sec);
    if (!b)
      return fail(1, message_of(b.error()));
    bin = std::move(*b);
    auto host = parse_endpoint(cfg.binary.listen, "binary.listen")->host;
    binary_text =
      std::string{cfg.gateway.tls_cert_file.empty() ? " binary tcp://" : " binary tls://"} + host
      + ":" + std::to_string(bin->port());
  }
  auto metrics_addr = cfg.metrics.listen.host + ":" + std::to_string(*metrics_port);
  std::unique_ptr<cluster> member;
  if (!cfg.cluster.listen.empty()) {
    auto c = cluster::start(sys, **rt, cfg, gateway_addr);
    if (!c)
      return fail(1, message_of(c.error()));
    member = std::move(*c);
    member->replicate(replicated_keys((*sec)->keys())); // API keys: the same on every member
    (*gw)->set_cluster(member.get());
    if (bin)
      bin->set_cluster(member.get());
  }
  if (!member)
    (*rt)->wake_residents(); // (in a cluster: once this node is up)
  std::string cluster_text = member ? " cluster " + member->address() : "";
  log::event(spdlog::level::info, "node_ready",
             {{"gateway", gateway_addr},
              {"metrics", metrics_addr},
              {"data_dir", dir->path()},
              {"pid", getpid()},
              {"cluster", member ? member->address() : std::string{}},
              {"scheduler_threads", scheduler_threads(cfg)}});
  std::cout << "agent-node " << cfg.node.name << " ready: gateway "
            << ((*gw)->tls() ? "https://" : "http://") << gateway_addr << " metrics http://"
            << metrics_addr << "/metrics data_dir " << dir->path() << cluster_text << binary_text
            << " pid " << getpid() << std::endl;
  if (!generated_admin_key.empty())
    std::cout << "agent-node " << cfg.node.name
              << " generated the bootstrap admin key (shown this once; only its hash is kept, in "
              << dir->path() << "/keys.json): " << generated_admin_key << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  log::event(spdlog::level::info, "node_stopping",
             {{"signal", sig}, {"agents", (*rt)->agent_count()}});
  (*gw)->stop_accepting();
  if (bin)
    bin->stop_accepting();
  if (member) {
    // The others see this node `leaving` at once rather than `down` after a timeout.
    member->leave();
    (*gw)->set_cluster(nullptr);
    if (bin)
      bin->set_cluster(nullptr);
  }
  if (!(*gw)->drain(std::chrono::milliseconds(cfg.node.shutdown_drain_ms)))
    log::event(spdlog::level::warn, "drain_incomplete",
               {{"shutdown_drain_ms", cfg.node.shutdown_drain_ms}});
  if (bin && !bin->drain(std::chrono::milliseconds(cfg.node.shutdown_drain_ms)))
    log::event(spdlog::level::warn, "binary_drain_incomplete",
               {{"shutdown_drain_ms", cfg.node.shutdown_drain_ms}});
  (*rt)->shutdown();
  bin.reset();
  gw->reset();
  member.reset();
  rt->reset();
  // Completions still running (a replica round returns at a majority, and the other answers'
  // writes complete later) hold the replicator, and through it the store: wait for them, so
  // that the last reference drops here and not on the store's own completion thread.
  for (int pass = 0; pass < 2; ++pass) // (a completion may queue one more write)
    (*db)->drain();
  db->reset(); // waits for queued writes, then closes the database
  log::event(spdlog::level::info, "node_stopped", {{"fatal", fatal.load()}});
  return fatal ? 1 : 0;
}

/// Keeps up to `bytes` of freed heap for reuse, and serves blocks below that size from the
/// heap (see `node.heap_retain_bytes_max` in config/hive.toml). 0: the C library's defaults.
void retain_heap(int64_t bytes) {
  if (bytes <= 0)
    return;
  auto n = static_cast<int>(std::min<int64_t>(bytes, std::numeric_limits<int>::max()));
  // (Setting either also turns glibc's adaptive mmap threshold off, which would otherwise
  // move these limits as blocks are freed.)
  if (mallopt(M_TRIM_THRESHOLD, n) != 1 || mallopt(M_MMAP_THRESHOLD, std::min(n, 32 << 20)) != 1)
    hive::log::event(spdlog::level::warn, "heap_tuning_refused", {{"bytes", bytes}});
}

} // namespace

int main(int argc, char** argv) {
  // Block the stop signals in every thread (CAF's and Asio's inherit the mask); the main
  // thread waits for them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  auto parsed = hive::parse_command_line(argc, argv);
  if (!parsed)
    return fail(2, hive::message_of(parsed.error()));
  if (parsed->exit_now)
    return 0;
  hive::log::init(parsed->config.node.name, parsed->config.log.level);
  retain_heap(parsed->config.node.heap_retain_bytes_max);
  return run(parsed->config, signals);
}
