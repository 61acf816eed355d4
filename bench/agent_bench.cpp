// agent-bench: the benchmark harness. Scenarios measure the runtime against raw CAF in the same
// process and run, alternating the order each repetition, and report medians.
//
//   agent-bench local [--messages N] [--window W] [--runs R] [--json FILE]
//
// `local`: one driver thread sends N small `agent_call` messages (a 2-byte JSON body) with at
// most W in flight to one receiver, three ways:
//   raw-caf    anon_send to a plain CAF actor whose behaviour only counts  (the baseline)
//   by-handle  anon_send to a runtime agent actor (agent wrapper, metrics, no lookup)
//   by-id      node_runtime::tell(id, ...): directory lookup + the same agent actor
// and prints msgs/s per way and the ratios by-id/raw-caf and by-handle/raw-caf.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors/sample_kinds.hpp"
#include "config/node_config.hpp"
#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/logging.hpp"
#include "runtime/node_runtime.hpp"

namespace {

using namespace hive;
using counter_ptr = std::shared_ptr<std::atomic<uint64_t>>;

/// A runtime agent that counts what it receives into a shared counter.
class bench_sink : public agent {
public:
  explicit bench_sink(counter_ptr c) : count_(std::move(c)) {}

  caf::expected<std::string> handle(call_context&) override {
    count_->fetch_add(1, std::memory_order_release);
    return std::string{};
  }

private:
  counter_ptr count_;
};

/// The raw-CAF twin: a plain actor that only counts.
caf::behavior raw_sink(caf::event_based_actor*, counter_ptr count) {
  return {[count](const agent_call&) { count->fetch_add(1, std::memory_order_release); }};
}

/// Sends `n` messages through `send` with at most `window` in flight; returns msgs/s.
template <class Send>
double drive(uint64_t n, uint64_t window, const counter_ptr& count, Send send) {
  count->store(0);
  agent_call call{envelope{1, "bench", 0, "bench"}, "{}"};
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t sent = 0; sent < n; ++sent) {
    while (sent - count->load(std::memory_order_acquire) >= window)
      std::this_thread::yield();
    send(call);
  }
  while (count->load(std::memory_order_acquire) < n)
    std::this_thread::yield();
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(n) / secs;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

int run_local(uint64_t n, uint64_t window, int runs, const std::string& json_file) {
  node_config cfg;
  cfg.node.name = "bench";
  cfg.log.level = "warn";
  log::init(cfg.node.name, cfg.log.level);
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  auto count = std::make_shared<std::atomic<uint64_t>>(0);
  kind_registry kinds;
  if (auto err = kinds.add({"bench-sink", "counts messages",
                            [count](const nlohmann::json&) -> caf::expected<std::unique_ptr<agent>> {
                              return std::unique_ptr<agent>{new bench_sink(count)};
                            }})) {
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
  (*rt)->spawn(spawn_request{id, "bench-sink", nlohmann::json::object(), false,
                             restart_type::permanent, 1},
               [&](caf::expected<agent_view> v) { spawned.set_value(std::move(v)); });
  auto view = spawned.get_future().get();
  if (!view) {
    std::cerr << "agent-bench: spawn failed: " << describe(view.error()) << "\n";
    return 1;
  }
  auto agent_handle = view->agent;
  auto raw = sys.spawn(raw_sink, count);
  std::vector<double> raw_r, handle_r, id_r;
  std::cerr << "agent-bench local: " << n << " messages, window " << window << ", " << runs
            << " runs, " << scheduler_threads(cfg) << " scheduler threads\n";
  for (int r = 0; r < runs; ++r) {
    // Alternate the order so that warm-up and drift hit every way alike.
    auto do_raw = [&] {
      raw_r.push_back(drive(n, window, count, [&](const agent_call& c) { caf::anon_send(raw, c); }));
    };
    auto do_handle = [&] {
      handle_r.push_back(
        drive(n, window, count, [&](const agent_call& c) { caf::anon_send(agent_handle, c); }));
    };
    auto do_id = [&] {
      id_r.push_back(drive(n, window, count, [&](const agent_call& c) {
        if (auto err = (*rt)->tell(id, c)) {
          std::cerr << "tell failed: " << describe(err) << "\n";
          std::abort();
        }
      }));
    };
    if (r % 2 == 0) {
      do_raw(); do_handle(); do_id();
    } else {
      do_id(); do_handle(); do_raw();
    }
    std::cerr << "\r  run " << (r + 1) << "/" << runs << "  raw-caf " << uint64_t(raw_r.back())
              << "  by-handle " << uint64_t(handle_r.back()) << "  by-id "
              << uint64_t(id_r.back()) << " msgs/s      " << std::flush;
  }
  std::cerr << "\n";
  auto m_raw = median(raw_r), m_handle = median(handle_r), m_id = median(id_r);
  std::printf("%-12s %14s %10s\n", "way", "median msg/s", "vs raw");
  std::printf("%-12s %14.0f %10.2f\n", "raw-caf", m_raw, 1.0);
  std::printf("%-12s %14.0f %10.2f\n", "by-handle", m_handle, m_handle / m_raw);
  std::printf("%-12s %14.0f %10.2f\n", "by-id", m_id, m_id / m_raw);
  if (!json_file.empty()) {
    nlohmann::json out{{"scenario", "local"},
                       {"messages", n},
                       {"window", window},
                       {"runs", runs},
                       {"scheduler_threads", scheduler_threads(cfg)},
                       {"raw_caf_msgs_per_s", raw_r},
                       {"by_handle_msgs_per_s", handle_r},
                       {"by_id_msgs_per_s", id_r},
                       {"median", {{"raw_caf", m_raw}, {"by_handle", m_handle}, {"by_id", m_id}}},
                       {"ratio", {{"by_id_vs_raw", m_id / m_raw},
                                  {"by_handle_vs_raw", m_handle / m_raw}}}};
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
  int runs = 5;
  std::string json_file;
  auto local = app.add_subcommand("local", "by-id tell vs raw CAF handle send, one process");
  local->add_option("--messages", messages, "messages per run")->check(CLI::Range(1000, 1000000000));
  local->add_option("--window", window, "messages in flight at most")->check(CLI::Range(1, 1000000));
  local->add_option("--runs", runs, "repetitions (median reported)")->check(CLI::Range(1, 100));
  local->add_option("--json", json_file, "write the figures as JSON to FILE");
  CLI11_PARSE(app, argc, argv);
  if (local->parsed())
    return run_local(messages, window, runs, json_file);
  return 2;
}
