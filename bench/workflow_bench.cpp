// agent-bench workflow: steps dispatched per second by the planner in a fan-out/fan-in workflow
// (one start step, N independent steps, one join step), against the same N asks sent directly
// to the same providers with the same number in flight, in the same process and run.
//
// Both sides use one journaled node (the planner journals every dispatch and every result;
// group commit batches them); the providers are echo agents offering capability "work".

#include "bench/workflow_bench.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/planner.hpp"
#include "actors/sample_kinds.hpp"
#include "config/node_config.hpp"
#include "protocols/errc.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/logging.hpp"
#include "runtime/node_runtime.hpp"

namespace hive::bench {

namespace {

using nlohmann::json;
using clock_type = std::chrono::steady_clock;

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/// `prefix` + `i` (built with += : GCC 12 flags `named("s", i)` with a false
/// -Wrestrict).
std::string named(const char* prefix, uint64_t i) {
  std::string out = prefix;
  out += std::to_string(i);
  return out;
}

[[noreturn]] void die(const std::string& why) {
  std::cerr << "agent-bench workflow: " << why << "\n";
  std::exit(1);
}

caf::expected<std::string> ask_sync(node_runtime& rt, const agent_id& id, std::string body) {
  std::promise<caf::expected<std::string>> p;
  rt.ask(id, agent_call{envelope{1, id.tenant, 0, "bench", {}, 0}, std::move(body)},
         std::chrono::seconds(30),
         [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

/// The workflow run: seconds from the POST-equivalent spawn until the status says succeeded
/// (polled every millisecond; the planner's own created/finished times are reported too).
struct wf_run {
  double wall_s = 0;
  double planner_s = 0;
};

wf_run run_one_workflow(node_runtime& rt, const workflow_options& o, int r) {
  json steps = json::array();
  steps.push_back({{"id", "start"}, {"capability", "work"}, {"input", {{"n", 0}}}});
  for (uint64_t i = 0; i < o.steps; ++i)
    steps.push_back({{"id", named("s", i)},
                     {"capability", "work"},
                     {"depends_on", {"start"}},
                     {"input", {{"n", i}}}});
  json all = json::array();
  for (uint64_t i = 0; i < o.steps; ++i)
    all.push_back(named("s", i));
  steps.push_back({{"id", "join"}, {"capability", "work"}, {"depends_on", all}});
  auto id = *make_agent_id("bench", named("wf", r));
  auto t0 = clock_type::now();
  std::promise<caf::expected<agent_view>> p;
  rt.spawn(spawn_request{id, "planner", json{{"steps", steps}, {"parallel_max", o.parallel}}},
           [&](caf::expected<agent_view> v) { p.set_value(std::move(v)); });
  if (auto v = p.get_future().get(); !v)
    die("spawning the workflow failed: " + describe(v.error()));
  for (;;) {
    auto st = ask_sync(rt, id, R"({"op":"status"})");
    if (!st)
      die("status failed: " + describe(st.error()));
    auto j = json::parse(*st);
    auto s = j["status"].get<std::string>();
    if (s == "succeeded") {
      wf_run out;
      out.wall_s = std::chrono::duration<double>(clock_type::now() - t0).count();
      out.planner_s =
        static_cast<double>(j["finished_ms"].get<int64_t>() - j["created_ms"].get<int64_t>())
        / 1000.0;
      return out;
    }
    if (s != "running")
      die("the workflow ended " + s + ": " + j.dump().substr(0, 400));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// The baseline: the same step count of asks to the providers, round robin, at most
/// `parallel` in flight, plus the start and join asks before and after. Seconds.
double run_direct(node_runtime& rt, const workflow_options& o) {
  std::vector<agent_id> providers;
  for (uint64_t i = 0; i < o.providers; ++i)
    providers.push_back(*make_agent_id("bench", named("p", i)));
  auto t0 = clock_type::now();
  if (!ask_sync(rt, providers[0], R"({"n":0})"))
    die("direct start ask failed");
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t in_flight = 0;
  uint64_t done = 0;
  bool failed = false;
  for (uint64_t i = 0; i < o.steps; ++i) {
    {
      std::unique_lock<std::mutex> guard{mtx};
      cv.wait(guard, [&] { return in_flight < o.parallel; });
      ++in_flight;
    }
    auto& to = providers[i % providers.size()];
    rt.ask(to, agent_call{envelope{1, "bench", 0, "bench", {}, 0}, json{{"n", i}}.dump()},
           std::chrono::seconds(30), [&](caf::expected<std::string> r) {
             std::lock_guard<std::mutex> guard{mtx};
             failed = failed || !r;
             --in_flight;
             ++done;
             cv.notify_all();
           });
  }
  {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait(guard, [&] { return done == o.steps; });
  }
  if (failed)
    die("a direct ask failed");
  if (!ask_sync(rt, providers[0], R"({"join":true})"))
    die("direct join ask failed");
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

} // namespace

int run_workflow(const workflow_options& o) {
  node_config cfg;
  cfg.node.name = "bench";
  cfg.log.level = "warn";
  cfg.planner.parallel_steps_max = static_cast<int64_t>(std::min<uint64_t>(o.parallel, 500));
  cfg.planner.steps_max = static_cast<int64_t>(o.steps + 2);
  log::init(cfg.node.name, cfg.log.level);
  std::string tmpl = o.parent_dir + "/hive-wfbench-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr)
    die("cannot make a temporary directory under " + o.parent_dir);
  std::string dir = buf.data();
  int rc = 0;
  {
    caf::actor_system_config sys_cfg;
    configure_actor_system(sys_cfg, cfg);
    caf::actor_system sys{sys_cfg};
    kind_registry kinds;
    if (auto err = register_sample_kinds(kinds))
      die(describe(err));
    if (auto err = register_planner_kind(kinds, cfg.planner))
      die(describe(err));
    auto m = std::make_shared<metrics>();
    auto db = open_node_store(cfg, dir, m);
    if (!db)
      die(describe(db.error()));
    auto rt = node_runtime::start(sys, cfg, std::move(kinds), m, {}, *db);
    if (!rt)
      die(describe(rt.error()));
    for (uint64_t i = 0; i < o.providers; ++i) {
      std::promise<caf::expected<agent_view>> p;
      spawn_request req{*make_agent_id("bench", named("p", i)), "echo"};
      req.capabilities = {"work"};
      (*rt)->spawn(std::move(req), [&](caf::expected<agent_view> v) { p.set_value(std::move(v)); });
      if (auto v = p.get_future().get(); !v)
        die("spawning a provider failed: " + describe(v.error()));
    }
    auto total_steps = static_cast<double>(o.steps + 2);
    std::vector<double> wf_steps_s, planner_steps_s, direct_asks_s, overhead_us;
    std::cerr << "agent-bench workflow: 1 + " << o.steps << " + 1 steps over " << o.providers
              << " echo providers, " << o.parallel << " in flight, " << o.runs << " runs\n";
    for (int r = 0; r < o.runs; ++r) {
      wf_run w;
      double d = 0;
      if (r % 2 == 0) {
        w = run_one_workflow(**rt, o, r);
        d = run_direct(**rt, o);
      } else {
        d = run_direct(**rt, o);
        w = run_one_workflow(**rt, o, r);
      }
      wf_steps_s.push_back(total_steps / w.wall_s);
      planner_steps_s.push_back(w.planner_s > 0 ? total_steps / w.planner_s : 0);
      direct_asks_s.push_back(total_steps / d);
      overhead_us.push_back((w.wall_s - d) / total_steps * 1e6);
      std::cerr << "\r  run " << (r + 1) << "/" << o.runs << "  workflow "
                << uint64_t(wf_steps_s.back()) << " steps/s  direct "
                << uint64_t(direct_asks_s.back()) << " asks/s      " << std::flush;
    }
    std::cerr << "\n";
    auto m_wf = median_of(wf_steps_s), m_pl = median_of(planner_steps_s),
         m_d = median_of(direct_asks_s), m_o = median_of(overhead_us);
    std::printf("%-34s %14s\n", "measure", "median");
    std::printf("%-34s %14.0f\n", "workflow steps/s (spawn to done)", m_wf);
    std::printf("%-34s %14.0f\n", "workflow steps/s (planner clock)", m_pl);
    std::printf("%-34s %14.0f\n", "direct asks/s (same providers)", m_d);
    std::printf("%-34s %14.2f\n", "workflow vs direct", m_wf / m_d);
    std::printf("%-34s %14.1f\n", "dispatch overhead per step (us)", m_o);
    if (!o.json_file.empty()) {
      json out{{"scenario", "workflow"},
               {"steps", o.steps + 2},
               {"providers", o.providers},
               {"parallel", o.parallel},
               {"runs", o.runs},
               {"workflow_steps_per_s", wf_steps_s},
               {"planner_steps_per_s", planner_steps_s},
               {"direct_asks_per_s", direct_asks_s},
               {"overhead_us_per_step", overhead_us},
               {"median",
                {{"workflow_steps_per_s", m_wf},
                 {"planner_steps_per_s", m_pl},
                 {"direct_asks_per_s", m_d},
                 {"overhead_us_per_step", m_o}}},
               {"ratio", {{"workflow_vs_direct", m_wf / m_d}}}};
      std::ofstream{o.json_file} << out.dump(2) << "\n";
    }
    (*rt)->shutdown();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

} // namespace hive::bench
