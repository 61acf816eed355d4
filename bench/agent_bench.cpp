// agent-bench: the benchmark harness. Scenarios measure the runtime against raw CAF in the same
// process and run, alternating the order each repetition, and report medians.
//
//   agent-bench local [--messages N] [--window W] [--ack-every K] [--runs R] [--json FILE]
//
// `local`: a source actor sends N small `agent_call` messages (a 2-byte JSON body) with at most
// W in flight to one receiver, which acks every K (the pattern of ../shared/peers' `window`),
// three ways:
//   raw-caf    anon_send to a plain CAF actor whose behaviour only counts  (the baseline)
//   by-handle  anon_send to a runtime agent actor (agent wrapper, metrics, no lookup)
//   by-id      node_runtime::tell(id, ...): a directory lookup per message + the same agent
//   by-ref     agent_ref::tell(...): by id, re-resolved only when the directory changes
// and prints msgs/s per way and each way's ratio to raw-caf. Then (bench/local_bench.cpp) the
// patterns of the peers' `call`, `pingpong` and `spawn`, each next to raw CAF: sequential asks
// by id (--asks), a counter bounced between two agents by id (--pingpong), agents spawned and
// stopped with at most W alive (--spawns, --spawn-window).
//
//   agent-bench durable [--writers 1,16,256] [--seconds S | --ops N] [--runs R] [--json FILE]
//
// `durable` (issue #3): journaled counters acknowledged per second by closed-loop writers vs
// RocksDB's own synced puts, activation latency of passivated agents, bytes per agent in
// memory and on disk. See durable_bench.cpp and README.md.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors/sample_kinds.hpp"
#include "bench/durable_bench.hpp"
#include "bench/gateway_bench.hpp"
#include "bench/local_bench.hpp"
#include "bench/remote_bench.hpp"
#include "bench/workflow_bench.hpp"
#include "config/node_config.hpp"
#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/logging.hpp"
#include "runtime/node_runtime.hpp"

namespace {

using namespace hive;
using ack_atom = caf::atom_constant<caf::atom("ack")>;
using go_atom = caf::atom_constant<caf::atom("go")>;

/// Where sinks send their acks (the current run's source); read once every K messages.
struct ack_slot {
  std::mutex mtx;
  caf::actor source;

  caf::actor get() {
    std::lock_guard<std::mutex> guard{mtx};
    return source;
  }

  void set(caf::actor a) {
    std::lock_guard<std::mutex> guard{mtx};
    source = std::move(a);
  }
};

using slot_ptr = std::shared_ptr<ack_slot>;

/// A runtime agent that acks every K messages it receives to the run's source.
class bench_sink : public agent {
public:
  bench_sink(slot_ptr slot, uint64_t k) : slot_(std::move(slot)), k_(k) {}

  caf::expected<std::string> handle(call_context&) override {
    if (++n_ % k_ == 0)
      caf::anon_send(slot_->get(), ack_atom::value);
    return std::string{};
  }

private:
  slot_ptr slot_;
  uint64_t k_;
  uint64_t n_ = 0;
};

/// The raw-CAF twin: a plain actor that only counts and acks every K messages.
caf::behavior raw_sink(caf::event_based_actor*, slot_ptr slot, uint64_t k) {
  auto n = std::make_shared<uint64_t>(0);
  return {[slot, k, n](const agent_call&) {
    if (++*n % k == 0)
      caf::anon_send(slot->get(), ack_atom::value);
  }};
}

using send_fn = std::function<void(const agent_call&)>;

/// The windowed source (as ../shared/peers' `window`): at most W messages in flight, the sink
/// acks every K; the run ends when all N are acked. Delivers msgs/s.
caf::behavior source(caf::event_based_actor* self, uint64_t n, uint64_t w, uint64_t k, send_fn send,
                     std::shared_ptr<std::promise<double>> result) {
  struct run_state {
    uint64_t sent = 0;
    uint64_t acked = 0;
    std::chrono::steady_clock::time_point t0;
  };
  auto st = std::make_shared<run_state>();
  auto call =
    std::make_shared<agent_call>(agent_call{envelope{1, "bench", 0, "bench", {}, 0}, "{}"});
  return {
    [=](go_atom) {
      st->t0 = std::chrono::steady_clock::now();
      for (; st->sent < std::min(n, w); ++st->sent)
        send(*call);
    },
    [=](ack_atom) {
      st->acked += k;
      for (uint64_t i = 0; i < k && st->sent < n; ++i, ++st->sent)
        send(*call);
      if (st->acked >= n) {
        auto secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - st->t0).count();
        result->set_value(static_cast<double>(n) / secs);
        self->quit();
      }
    },
  };
}

/// One run: spawns a source sending through `send`, waits for its figure.
double drive(caf::actor_system& sys, const slot_ptr& slot, uint64_t n, uint64_t w, uint64_t k,
             send_fn send) {
  auto result = std::make_shared<std::promise<double>>();
  auto fut = result->get_future();
  auto src = sys.spawn(source, n, w, k, std::move(send), result);
  slot->set(src);
  caf::anon_send(src, go_atom::value);
  auto msgs_per_s = fut.get();
  slot->set(caf::actor{});
  return msgs_per_s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

int run_local(uint64_t n, uint64_t window, uint64_t k, int runs, const std::string& json_file,
              bench::local_extra_options extra) {
  node_config cfg;
  cfg.node.name = "bench";
  cfg.log.level = "warn";
  log::init(cfg.node.name, cfg.log.level);
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  auto slot = std::make_shared<ack_slot>();
  kind_registry kinds;
  if (auto err =
        kinds.add({"bench-sink", "acks every K messages",
                   [slot, k](const nlohmann::json&) -> caf::expected<std::unique_ptr<agent>> {
                     return std::unique_ptr<agent>{new bench_sink(slot, k)};
                   }})) {
    std::cerr << "agent-bench: " << describe(err) << "\n";
    return 1;
  }
  if (auto err = bench::add_local_extra_kinds(kinds)) {
    std::cerr << "agent-bench: " << describe(err) << "\n";
    return 1;
  }
  auto rt = node_runtime::start(sys, cfg, std::move(kinds), std::make_shared<metrics>());
  if (!rt) {
    std::cerr << "agent-bench: " << describe(rt.error()) << "\n";
    return 1;
  }
  auto id = *parse_agent_id("bench/sink");
  std::promise<caf::expected<agent_view>> spawned;
  (*rt)->spawn(
    spawn_request{id, "bench-sink", nlohmann::json::object(), false, restart_type::permanent, 1},
    [&](caf::expected<agent_view> v) { spawned.set_value(std::move(v)); });
  auto view = spawned.get_future().get();
  if (!view) {
    std::cerr << "agent-bench: spawn failed: " << describe(view.error()) << "\n";
    return 1;
  }
  auto agent_handle = view->agent;
  auto raw = sys.spawn(raw_sink, slot, k);
  std::vector<double> raw_r, handle_r, id_r, ref_r;
  std::cerr << "agent-bench local: " << n << " messages, window " << window << ", ack every " << k
            << ", " << runs << " runs, " << scheduler_threads(cfg) << " scheduler threads\n";
  for (int r = 0; r < runs; ++r) {
    // Alternate the order so that warm-up and drift hit every way alike.
    auto do_raw = [&] {
      raw_r.push_back(
        drive(sys, slot, n, window, k, [raw](const agent_call& c) { caf::anon_send(raw, c); }));
    };
    auto do_handle = [&] {
      handle_r.push_back(drive(sys, slot, n, window, k, [agent_handle](const agent_call& c) {
        caf::anon_send(agent_handle, c);
      }));
    };
    auto do_id = [&] {
      id_r.push_back(drive(sys, slot, n, window, k, [&rt, id](const agent_call& c) {
        if (auto err = (*rt)->tell(id, c)) {
          std::cerr << "tell failed: " << describe(err) << "\n";
          std::abort();
        }
      }));
    };
    auto do_ref = [&] {
      auto ref = std::make_shared<agent_ref>((*rt)->ref(id));
      ref_r.push_back(drive(sys, slot, n, window, k, [ref](const agent_call& c) {
        if (auto err = ref->tell(c)) {
          std::cerr << "tell failed: " << describe(err) << "\n";
          std::abort();
        }
      }));
    };
    if (r % 2 == 0) {
      do_raw();
      do_handle();
      do_id();
      do_ref();
    } else {
      do_ref();
      do_id();
      do_handle();
      do_raw();
    }
    std::cerr << "\r  run " << (r + 1) << "/" << runs << "  raw-caf " << uint64_t(raw_r.back())
              << "  by-handle " << uint64_t(handle_r.back()) << "  by-id " << uint64_t(id_r.back())
              << "  by-ref " << uint64_t(ref_r.back()) << " msgs/s      " << std::flush;
  }
  std::cerr << "\n";
  auto m_raw = median(raw_r), m_handle = median(handle_r), m_id = median(id_r),
       m_ref = median(ref_r);
  std::printf("%-12s %14s %10s\n", "way", "median msg/s", "vs raw");
  std::printf("%-12s %14.0f %10.2f\n", "raw-caf", m_raw, 1.0);
  std::printf("%-12s %14.0f %10.2f\n", "by-handle", m_handle, m_handle / m_raw);
  std::printf("%-12s %14.0f %10.2f\n", "by-id", m_id, m_id / m_raw);
  std::printf("%-12s %14.0f %10.2f\n", "by-ref", m_ref, m_ref / m_raw);
  extra.runs = runs;
  auto extra_json = bench::run_local_extra(sys, **rt, extra);
  if (extra.compare) {
    nlohmann::json ours = extra_json;
    ours["window"] = {{"by_id", m_id}};
    extra_json["erlang"] = bench::run_erlang_compare(extra, {n, window, k}, ours);
    if (extra_json["erlang"].contains("skipped"))
      std::printf("--compare: Erlang skipped: %s\n",
                  extra_json["erlang"]["skipped"].get<std::string>().c_str());
  }
  if (!json_file.empty()) {
    nlohmann::json out{
      {"scenario", "local"},
      {"messages", n},
      {"window", window},
      {"ack_every", k},
      {"runs", runs},
      {"scheduler_threads", scheduler_threads(cfg)},
      {"raw_caf_msgs_per_s", raw_r},
      {"by_handle_msgs_per_s", handle_r},
      {"by_id_msgs_per_s", id_r},
      {"by_ref_msgs_per_s", ref_r},
      {"median", {{"raw_caf", m_raw}, {"by_handle", m_handle}, {"by_id", m_id}, {"by_ref", m_ref}}},
      {"ratio",
       {{"by_id_vs_raw", m_id / m_raw},
        {"by_ref_vs_raw", m_ref / m_raw},
        {"by_handle_vs_raw", m_handle / m_raw}}}};
    for (auto& [part, figures] : extra_json.items())
      out[part] = figures;
    std::ofstream{json_file} << out.dump(2) << "\n";
  }
  caf::anon_send_exit(raw, caf::exit_reason::user_shutdown);
  (*rt)->shutdown();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"agent-bench: benchmarks of the hive runtime against raw CAF", "agent-bench"};
  app.require_subcommand(1);
  uint64_t messages = 1000000;
  uint64_t window = 1000;
  uint64_t ack_every = 100;
  int runs = 5;
  std::string json_file;
  auto local = app.add_subcommand("local", "by-id tell vs raw CAF handle send, one process");
  local->add_option("--messages", messages, "messages per run")
    ->check(CLI::Range(1000, 1000000000));
  local->add_option("--window", window, "messages in flight at most")
    ->check(CLI::Range(1, 1000000));
  local->add_option("--ack-every", ack_every, "the sink acks every K messages (N % K == 0, W >= K)")
    ->check(CLI::Range(1, 1000000));
  local->add_option("--runs", runs, "repetitions (median reported)")->check(CLI::Range(1, 100));
  local->add_option("--json", json_file, "write the figures as JSON to FILE");
  bench::local_extra_options extra;
  local->add_option("--asks", extra.asks, "sequential asks by id per run (0 = skip)")
    ->check(CLI::Range(uint64_t{0}, uint64_t{100000000}));
  local->add_option("--pingpong", extra.pingpong, "messages bounced by id per run (0 = skip)")
    ->check(CLI::Range(uint64_t{0}, uint64_t{1000000000}));
  local->add_option("--spawns", extra.spawns, "agents spawned and stopped per run (0 = skip)")
    ->check(CLI::Range(uint64_t{0}, uint64_t{100000000}));
  local->add_option("--spawn-window", extra.spawn_window, "agents alive at most while spawning")
    ->check(CLI::Range(uint64_t{1}, uint64_t{1000000}));
  local->add_flag("--compare", extra.compare,
                  "also run the Erlang twins (../shared/peers/erlang/ab.erl) with the same sizes, "
                  "when erl is installed, and print hive/Erlang ratios");
  local->add_option("--peers", extra.peers_dir,
                    "the peers' folder (default: $HIVE_PEERS_DIR, else <source>/../shared/peers)");
  bench::durable_options dur;
  auto durable = app.add_subcommand(
    "durable", "journaled agents: durable acks/s vs RocksDB sync puts, activation, footprint");
  durable->add_option("--writers", dur.writers, "concurrent closed-loop writers, one run per count")
    ->delimiter(',')
    ->check(CLI::Range(1, 4096));
  auto secs = durable->add_option("--seconds", dur.seconds, "length of one run")
                ->check(CLI::Range(0.1, 3600.0));
  durable->add_option("--ops", dur.ops, "acks per run in total instead (split over the writers)")
    ->check(CLI::Range(1, 1000000000))
    ->excludes(secs);
  durable->add_option("--runs", dur.runs, "repetitions (medians reported)")
    ->check(CLI::Range(1, 100));
  durable
    ->add_option("--rocksdb-puts", dur.rocksdb_puts,
                 "RocksDB alone next to each run: this many synced puts, and as many batches "
                 "(each at most 2 s)")
    ->check(CLI::Range(10, 10000000));
  durable->add_option("--rocksdb-batch", dur.rocksdb_batch, "puts per synced batch")
    ->check(CLI::Range(1, 100000));
  durable
    ->add_option("--activation-agents", dur.activation_agents,
                 "passivated counters activated one by one (0 = skip)")
    ->check(CLI::Range(0, 1000000));
  durable
    ->add_option("--activation-adds", dur.activation_adds,
                 "adds each of them gets before it passivates")
    ->check(CLI::Range(1, 100000));
  durable
    ->add_option("--footprint-agents", dur.footprint_agents,
                 "counters created for the memory and disk footprint (0 = skip)")
    ->check(CLI::Range(0, 10000000));
  durable->add_option("--dir", dur.parent_dir, "the temporary data directory is made under DIR")
    ->check(CLI::ExistingDirectory);
  durable->add_flag("--keep", dur.keep, "keep the data directory");
  durable->add_option("--json", dur.json_file, "write the figures as JSON to FILE");
  durable->add_option("--set", dur.settings,
                      "node config override KEY=VALUE, repeatable (e.g. "
                      "persistence.snapshot_every_events=10000)");
  bench::remote_options rem;
  auto remote = app.add_subcommand(
    "remote", "cross-node asks by id through the cluster vs raw CAF remote request/response");
  remote->add_option("--asks", rem.asks, "sequential asks per run (latency)")
    ->check(CLI::Range(10, 100000000));
  remote->add_option("--window-asks", rem.window_asks, "asks per windowed run (throughput)")
    ->check(CLI::Range(10, 100000000));
  remote->add_option("--window", rem.window, "asks in flight in the windowed runs")
    ->check(CLI::Range(1, 100000));
  remote->add_option("--tells", rem.tells, "one-way messages per windowed tell run")
    ->check(CLI::Range(1, 100000000));
  remote->add_option("--tell-window", rem.tell_window, "unacknowledged tells at most")
    ->check(CLI::Range(1, 1000000));
  remote->add_option("--ack-every", rem.ack_every, "every N-th message is an acknowledging ask")
    ->check(CLI::Range(1, 1000000));
  remote->add_option("--runs", rem.runs, "repetitions (medians reported)")
    ->check(CLI::Range(1, 100));
  remote->add_option("--node", rem.node_binary, "the agent-node binary (default: ../nodes/)");
  remote->add_option("--json", rem.json_file, "write the figures as JSON to FILE");
  remote->add_option("--set", rem.settings,
                     "node config override KEY=VALUE for both members, repeatable (e.g. "
                     "cluster.transport_inline_runs=0)");
  remote->add_flag("--compare", rem.compare,
                   "also run the Erlang twin (../shared/peers/erlang/ab.erl, `remote`: two Erlang "
                   "nodes on 127.0.0.1) in each run and print hive/Erlang ratios");
  remote->add_option("--peers", rem.peers_dir,
                     "the peers' folder (default: $HIVE_PEERS_DIR, else <source>/../shared/peers)");
  bench::replicated_options repl;
  auto replicated = app.add_subcommand(
    "replicated", "journaled writes on 3 local nodes with replication.factor 1 and 3, same run");
  replicated->add_option("--writers", repl.writers, "closed-loop writers, one run per count")
    ->delimiter(',')
    ->check(CLI::Range(1, 4000));
  replicated->add_option("--factors", repl.factors, "replication factors compared")
    ->delimiter(',')
    ->check(CLI::Range(1, 3));
  replicated->add_option("--seconds", repl.seconds, "length of one run")
    ->check(CLI::Range(0.1, 3600.0));
  replicated->add_option("--runs", repl.runs, "repetitions (medians reported)")
    ->check(CLI::Range(1, 100));
  replicated->add_option("--agents", repl.agents, "counters the writes are spread over")
    ->check(CLI::Range(1, 100000));
  replicated->add_option("--node", repl.node_binary, "the agent-node binary (default: ../nodes/)");
  replicated->add_option("--json", repl.json_file, "write the figures as JSON to FILE");
  bench::gateway_options gw;
  auto gateway = app.add_subcommand(
    "gateway", "asks through a real node's gateway: HTTP keep-alive vs the binary protocol");
  gateway->add_option("--connections", gw.connections, "connection counts, one run each")
    ->delimiter(',')
    ->check(CLI::Range(1, 4000));
  gateway->add_option("--depth", gw.depth, "asks in flight per connection, pipelined binary runs")
    ->check(CLI::Range(0, 100000));
  gateway->add_option("--seconds", gw.seconds, "length of one closed-loop run")
    ->check(CLI::Range(0.1, 3600.0));
  gateway->add_option("--runs", gw.runs, "repetitions (medians reported)")
    ->check(CLI::Range(1, 100));
  gateway->add_option("--rate", gw.rate, "asks/s of the fixed-rate runs (0 = skip them)")
    ->check(CLI::Range(0, 1000000));
  gateway->add_option("--rate-seconds", gw.rate_seconds, "length of one fixed-rate run")
    ->check(CLI::Range(0.1, 3600.0));
  gateway->add_option("--agents", gw.agents, "echo agents the asks are spread over")
    ->check(CLI::Range(1, 100000));
  gateway->add_option("--threads", gw.gateway_threads, "gateway and binary listener threads")
    ->check(CLI::Range(1, 64));
  gateway->add_option("--node", gw.node_binary, "the agent-node binary (default: ../nodes/)");
  gateway->add_option("--json", gw.json_file, "write the figures as JSON to FILE");
  bench::workflow_options wfo;
  auto workflow = app.add_subcommand(
    "workflow", "planner steps/s in a fan-out/fan-in workflow vs the same asks sent directly");
  workflow->add_option("--steps", wfo.steps, "steps of the fan-out (plus a start and a join)")
    ->check(CLI::Range(1, 100000));
  workflow->add_option("--providers", wfo.providers, "echo providers of the steps' capability")
    ->check(CLI::Range(1, 10000));
  workflow->add_option("--parallel", wfo.parallel, "steps (and direct asks) in flight at most")
    ->check(CLI::Range(1, 500));
  workflow->add_option("--runs", wfo.runs, "repetitions (medians reported)")
    ->check(CLI::Range(1, 100));
  workflow->add_option("--dir", wfo.parent_dir, "the temporary data directory is made under DIR")
    ->check(CLI::ExistingDirectory);
  workflow->add_option("--json", wfo.json_file, "write the figures as JSON to FILE");
  bench::density_options den;
  auto density = app.add_subcommand(
    "density",
    "live idle agents in memory (goal: 1M under 2 GiB RSS) and passivated agents on disk "
    "(goal: 10M), one process");
  density->add_option("--live", den.live_agents, "journaled counters kept live and idle (0 = skip)")
    ->check(CLI::Range(uint64_t{0}, uint64_t{100000000}));
  density
    ->add_option("--passivated", den.passivated_agents,
                 "journaled counters created and passivated onto disk (0 = skip)")
    ->check(CLI::Range(uint64_t{0}, uint64_t{1000000000}));
  density->add_option("--check", den.check_agents, "agents of each phase read back (a sample)")
    ->check(CLI::Range(uint64_t{1}, uint64_t{1000000}));
  density->add_option("--seed", den.seed, "seed of the sample (0 = from the clock)");
  density->add_option("--window", den.window, "spawns (+ adds) in flight")
    ->check(CLI::Range(uint64_t{1}, uint64_t{100000}));
  density
    ->add_option("--hibernate-idle-ms", den.hibernate_idle_ms,
                 "the live phase again, hibernated after this idle time (0 = skip)")
    ->check(CLI::Range(uint64_t{0}, uint64_t{3600000}));
  density->add_option("--passivate-idle-ms", den.passivate_idle_ms, "idle time before passivation")
    ->check(CLI::Range(uint64_t{10}, uint64_t{3600000}));
  density->add_option("--dir", den.parent_dir, "the temporary data directory is made under DIR")
    ->check(CLI::ExistingDirectory);
  density->add_flag("--keep", den.keep, "keep the data directory");
  density->add_option("--json", den.json_file, "write the figures as JSON to FILE");
  density->add_option("--set", den.settings, "node config override KEY=VALUE, repeatable");
  // The cluster scenarios written in Python (bench/*.py): run as subcommands of this binary
  // so that one harness has them all; extra arguments are passed on (`-- --help` shows them).
  struct script_scenario {
    const char* name;
    const char* script;
    const char* what;
    CLI::App* sub = nullptr;
  };
  std::vector<script_scenario> scripts{
    {"migration", "migration_pause.py",
     "live-migration pause for 1 KiB, 64 KiB and 1 MiB states on 3 nodes (bench/migration_pause.py)"},
    {"failover", "failover_time.py",
     "kill -9 of an agent's node to the first answer from a survivor (bench/failover_time.py)"},
    {"down", "cluster_down.py",
     "kill -9 of a node to 'down' on both survivors (bench/cluster_down.py)"},
  };
  for (auto& sc : scripts) {
    sc.sub = app.add_subcommand(sc.name, sc.what);
    sc.sub->allow_extras();
    sc.sub->footer(std::string{"Runs python3 bench/"} + sc.script
                   + " --node <agent-node next to this binary> ARGS...; see its --help.");
  }
  CLI11_PARSE(app, argc, argv);
  for (auto& sc : scripts) {
    if (!sc.sub->parsed())
      continue;
    auto self_dir = std::filesystem::canonical("/proc/self/exe").parent_path();
    auto node = (self_dir / ".." / "nodes" / "agent-node").lexically_normal().string();
    auto script = std::string{HIVE_SOURCE_DIR} + "/bench/" + sc.script;
    std::vector<std::string> args{"python3", script};
    auto extras = sc.sub->remaining();
    if (std::find(extras.begin(), extras.end(), "--node") == extras.end()) {
      args.push_back("--node");
      args.push_back(node);
    }
    args.insert(args.end(), extras.begin(), extras.end());
    std::vector<char*> cargs;
    for (auto& a : args)
      cargs.push_back(a.data());
    cargs.push_back(nullptr);
    ::execvp("python3", cargs.data());
    std::cerr << "agent-bench " << sc.name << ": cannot run python3 " << script << ": "
              << std::strerror(errno) << "\n";
    return 1;
  }
  if (density->parsed())
    return bench::run_density(den);
  if (workflow->parsed())
    return bench::run_workflow(wfo);
  if (gateway->parsed())
    return bench::run_gateway(gw, argv[0]);
  if (*replicated)
    return bench::run_replicated(repl, argv[0]);
  if (remote->parsed())
    return bench::run_remote(rem, argv[0]);
  if (durable->parsed())
    return bench::run_durable(dur);
  if (local->parsed()) {
    if (messages % ack_every != 0 || window < ack_every) {
      std::cerr << "agent-bench: need --messages % --ack-every == 0 and --window >= --ack-every\n";
      return 2;
    }
    return run_local(messages, window, ack_every, runs, json_file, extra);
  }
  return 2;
}
