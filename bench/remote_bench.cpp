// agent-bench remote: cross-node asks through the runtime vs raw CAF, measured in one run.
//
//   raw CAF   this process's actor system asks an echo actor published by a child process
//             (`remote_actor`, request/response of the same `agent_call`/`agent_reply` types)
//   hive      this process runs a cluster member without agents; an `agent-node` child process
//             joins it and hosts an `echo` agent; asks go by id through `cluster::ask` (a local
//             miss, then the node manager forwards a `remote_call` to the other member, whose
//             runtime asks the agent and answers back)
//
// Both: sequential asks (one in flight: round-trip latency p50/p99) and windowed asks (W in
// flight: throughput). The two ways alternate run by run; medians over the runs.

#include "bench/remote_bench.hpp"

#include "bench/erlang_peers.hpp"
#include "bench/settings.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/cluster.hpp"
#include "runtime/kind.hpp"
#include "runtime/logging.hpp"
#include "runtime/node_runtime.hpp"

namespace hive::bench {

namespace {

using clock_type = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::cerr << "agent-bench remote: " << what << std::endl;
  std::exit(1);
}

node_config member_config(const std::string& name) {
  node_config cfg;
  cfg.node.name = name;
  cfg.log.level = "warn";
  cfg.cluster.listen = "127.0.0.1:0";
  return cfg;
}

/// The raw-CAF server: a child process with an echo actor published on an ephemeral port.
/// Writes the port to `port_fd`, then serves until `stop_fd` reaches end of file.
[[noreturn]] void raw_caf_server(int port_fd, int stop_fd) {
  auto cfg = member_config("rawcaf");
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  int code = 0;
  {
    caf::actor_system sys{sys_cfg};
    // (The int argument: UBSan flags argument-less function-actor spawns in CAF 0.17.)
    auto echo = sys.spawn(
      [](int) -> caf::behavior {
        return {[](agent_call& call) { return agent_reply{std::move(call.body)}; }};
      },
      0);
    auto port = sys.middleman().publish(echo, 0, "127.0.0.1", true);
    uint16_t p = port ? *port : 0;
    if (::write(port_fd, &p, sizeof(p)) != sizeof(p))
      code = 1;
    char c;
    while (::read(stop_fd, &c, 1) > 0) {
    }
    caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
  }
  ::_exit(code);
}

double quantile(std::vector<double> xs, double q) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  return xs[std::min(xs.size() - 1, static_cast<size_t>(q * static_cast<double>(xs.size())))];
}

double median(std::vector<double> xs) {
  return quantile(std::move(xs), 0.5);
}

struct run_figures {
  double p50_us = 0;
  double p99_us = 0;
  double window_per_s = 0;
  double tells_per_s = 0;
  /// hive only: an agent asking an agent on the other member (`pinger`), sequentially.
  double a2a_p50_us = 0;
  double a2a_p99_us = 0;
  /// Means of the sequential round trips (Erlang's figure is a mean).
  double mean_us = 0;
  double a2a_mean_us = 0;
};

double mean(const std::vector<double>& xs) {
  double sum = 0;
  for (auto x : xs)
    sum += x;
  return xs.empty() ? 0 : sum / static_cast<double>(xs.size());
}

/// One sequential series of the `pinger` agent: `left` asks to `to`, each sent when the reply
/// of the one before arrived; the round trips in microseconds.
struct ping_series {
  std::mutex mtx;
  agent_id to;
  uint64_t left = 0;
  uint64_t failed = 0;
  clock_type::time_point sent;
  std::vector<double> lat;
  std::promise<void> done;
};

/// The agent-to-agent way (the peers' process-to-process ping-pong): a `pinger` agent on this
/// process's member asks the echo agent on the other member by id (`call_context::ask`); the
/// reply comes back as a notice, whose handling sends the next ask. A series starts with any
/// call that is not a notice.
class pinger_agent final : public agent {
public:
  explicit pinger_agent(std::shared_ptr<ping_series> s) : s_(std::move(s)) {}

  caf::expected<std::string> handle(call_context& call) override {
    auto now = clock_type::now();
    std::lock_guard<std::mutex> lk{s_->mtx};
    if (auto* n = call.notice()) {
      if (n->what != agent_notice::reply || s_->left == 0)
        return std::string{"{}"};
      s_->lat.push_back(std::chrono::duration<double, std::micro>(now - s_->sent).count());
      if (n->code != 0)
        ++s_->failed;
      if (--s_->left == 0) {
        s_->done.set_value();
        return std::string{"{}"};
      }
    }
    s_->sent = clock_type::now(); // (the ask leaves when this call returns)
    if (auto err = call.ask(s_->to, R"({"n":1})", std::chrono::milliseconds(10000), "ping")) {
      ++s_->failed;
      s_->left = 0;
      s_->done.set_value();
    }
    return std::string{"{}"};
  }

private:
  std::shared_ptr<ping_series> s_;
};

agent_call echo_call(uint64_t i) {
  agent_call call;
  call.env.correlation_id = i + 1;
  call.env.tenant = "bench";
  call.body = R"({"n":)" + std::to_string(i) + "}";
  return call;
}

run_figures raw_caf_run(caf::actor_system& sys, const caf::actor& echo,
                        const remote_options& opts) {
  run_figures f;
  std::vector<double> lat;
  lat.reserve(opts.asks);
  {
    caf::scoped_actor self{sys};
    for (uint64_t i = 0; i < opts.asks; ++i) {
      auto t0 = clock_type::now();
      bool ok = false;
      self->request(echo, caf::infinite, echo_call(i))
        .receive([&](agent_reply&) { ok = true; },
                 [&](caf::error& err) { die("raw CAF ask failed: " + sys.render(err)); });
      if (!ok)
        die("raw CAF ask got no reply");
      lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
    }
  }
  f.p50_us = quantile(lat, 0.5);
  f.p99_us = quantile(lat, 0.99);
  std::promise<void> done;
  auto t0 = clock_type::now();
  auto n = opts.window_asks;
  auto w = std::min(opts.window, n);
  sys.spawn(
    [&done, echo, n](caf::event_based_actor* self, uint64_t w) {
      auto sent = std::make_shared<uint64_t>(0);
      auto got = std::make_shared<uint64_t>(0);
      auto next = std::make_shared<std::function<void()>>();
      *next = [=, &done] {
        auto i = (*sent)++;
        self->request(echo, caf::infinite, echo_call(i)).then([=, &done](agent_reply&) {
          if (++*got == n) {
            done.set_value();
            self->quit();
          } else if (*sent < n) {
            (*next)();
          }
        });
      };
      for (uint64_t i = 0; i < w; ++i)
        (*next)();
    },
    w);
  done.get_future().wait();
  f.window_per_s =
    static_cast<double>(n) / std::chrono::duration<double>(clock_type::now() - t0).count();
  // Windowed one-way sends, acknowledged every K-th message by an ask.
  auto k = std::max<uint64_t>(1, opts.ack_every);
  auto tells = std::max<uint64_t>(k, opts.tells / k * k);
  std::promise<void> tells_done;
  t0 = clock_type::now();
  sys.spawn(
    [&tells_done, echo, tells, k, w = opts.tell_window](caf::event_based_actor* self, int) {
      auto sent = std::make_shared<uint64_t>(0);
      auto acked = std::make_shared<uint64_t>(0);
      auto pump = std::make_shared<std::function<void()>>();
      *pump = [=, &tells_done] {
        while (*sent < tells && *sent - *acked * k < w) {
          auto i = (*sent)++;
          if ((i + 1) % k != 0) {
            caf::anon_send(echo, echo_call(i)); // (no sender: the echo's answer is dropped)
            continue;
          }
          self->request(echo, caf::infinite, echo_call(i)).then([=, &tells_done](agent_reply&) {
            if (++*acked == tells / k) {
              tells_done.set_value();
              self->quit();
            } else {
              (*pump)();
            }
          });
        }
      };
      (*pump)();
    },
    0);
  tells_done.get_future().wait();
  f.tells_per_s =
    static_cast<double>(tells) / std::chrono::duration<double>(clock_type::now() - t0).count();
  return f;
}

/// The pinger's series of `n` asks; its round trips (dies on a failed ask).
std::vector<double> pinger_run(cluster& c, const agent_id& pinger, ping_series& s, uint64_t n) {
  std::future<void> finished;
  {
    std::lock_guard<std::mutex> lk{s.mtx};
    s.left = n;
    s.failed = 0;
    s.lat.clear();
    s.lat.reserve(n);
    s.done = std::promise<void>{};
    finished = s.done.get_future();
  }
  if (auto err = c.send(pinger, echo_call(0)))
    die("starting the pinger: " + describe(err));
  if (finished.wait_for(std::chrono::seconds(120)) != std::future_status::ready)
    die("the pinger's series did not finish within 120 s");
  std::lock_guard<std::mutex> lk{s.mtx};
  if (s.failed > 0)
    die(std::to_string(s.failed) + " asks of the pinger failed");
  return std::move(s.lat);
}

run_figures hive_run(cluster& c, const agent_id& id, const agent_id& pinger, ping_series& series,
                     const remote_options& opts) {
  run_figures f;
  {
    auto a2a = pinger_run(c, pinger, series, opts.asks);
    f.a2a_p50_us = quantile(a2a, 0.5);
    f.a2a_p99_us = quantile(a2a, 0.99);
    f.a2a_mean_us = mean(a2a);
  }
  std::vector<double> lat;
  lat.reserve(opts.asks);
  for (uint64_t i = 0; i < opts.asks; ++i) {
    std::promise<caf::expected<std::string>> p;
    auto t0 = clock_type::now();
    c.ask(id, echo_call(i), std::chrono::milliseconds(10000),
          [&p](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    if (!r)
      die("hive ask failed: " + describe(r.error()));
    lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
  }
  f.p50_us = quantile(lat, 0.5);
  f.p99_us = quantile(lat, 0.99);
  f.mean_us = mean(lat);
  auto n = opts.window_asks;
  auto w = std::min(opts.window, n);
  std::promise<void> done;
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> got{0};
  std::atomic<uint64_t> failed{0};
  std::function<void()> next = [&] {
    auto i = sent.fetch_add(1);
    if (i >= n)
      return;
    c.ask(id, echo_call(i), std::chrono::milliseconds(10000), [&](caf::expected<std::string> r) {
      if (!r)
        ++failed;
      if (got.fetch_add(1) + 1 == n)
        done.set_value();
      else
        next();
    });
  };
  auto t0 = clock_type::now();
  for (uint64_t i = 0; i < w; ++i)
    next();
  done.get_future().wait();
  f.window_per_s =
    static_cast<double>(n) / std::chrono::duration<double>(clock_type::now() - t0).count();
  if (failed > 0)
    die(std::to_string(failed.load()) + " windowed hive asks failed");
  // Windowed one-way sends (cluster::send), acknowledged every K-th message by an ask.
  auto k = std::max<uint64_t>(1, opts.ack_every);
  auto tells = std::max<uint64_t>(k, opts.tells / k * k);
  std::mutex mtx;
  std::condition_variable cv;
  uint64_t acked = 0;
  t0 = clock_type::now();
  for (uint64_t i = 0; i < tells; ++i) {
    {
      std::unique_lock<std::mutex> lk{mtx};
      cv.wait(lk, [&] { return i - acked * k < opts.tell_window; });
    }
    if ((i + 1) % k != 0) {
      if (auto err = c.send(id, echo_call(i)))
        die("hive send failed: " + describe(err));
      continue;
    }
    c.ask(id, echo_call(i), std::chrono::milliseconds(10000), [&](caf::expected<std::string> r) {
      if (!r)
        ++failed;
      std::lock_guard<std::mutex> lk{mtx};
      ++acked;
      cv.notify_one();
    });
  }
  {
    std::unique_lock<std::mutex> lk{mtx};
    cv.wait(lk, [&] { return acked == tells / k; });
  }
  f.tells_per_s =
    static_cast<double>(tells) / std::chrono::duration<double>(clock_type::now() - t0).count();
  if (failed > 0)
    die(std::to_string(failed.load()) + " acknowledging hive asks failed");
  return f;
}

} // namespace

int run_remote(const remote_options& opts, const char* argv0) {
  // The raw-CAF server forks first, before this process starts any thread.
  int port_pipe[2];
  int stop_pipe[2];
  if (::pipe(port_pipe) != 0 || ::pipe(stop_pipe) != 0)
    die("pipe failed");
  auto raw_pid = ::fork();
  if (raw_pid == 0) {
    ::close(port_pipe[0]);
    ::close(stop_pipe[1]);
    raw_caf_server(port_pipe[1], stop_pipe[0]);
  }
  ::close(port_pipe[1]);
  ::close(stop_pipe[0]);
  uint16_t raw_port = 0;
  if (::read(port_pipe[0], &raw_port, sizeof(raw_port)) != sizeof(raw_port) || raw_port == 0)
    die("the raw-CAF server did not start");

  auto node_bin = opts.node_binary;
  if (node_bin.empty())
    node_bin =
      (std::filesystem::path{argv0}.parent_path() / ".." / "nodes" / "agent-node").string();
  auto cfg = member_config("bench-a");
  if (auto err = apply_settings(cfg, opts.settings))
    die(message_of(err));
  log::init(cfg.node.name, cfg.log.level);
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  int status = 0;
  pid_t node_pid = -1;
  char tmpl[] = "/tmp/hive-remote-XXXXXX";
  std::string data_dir = ::mkdtemp(tmpl);
  {
    caf::actor_system sys{sys_cfg};
    // This member hosts only the pinger (the agent-to-agent way), pinned here.
    auto series = std::make_shared<ping_series>();
    kind_registry kinds;
    if (auto err =
          kinds.add({"pinger", "asks config-less: see agent-bench remote",
                     [series](const nlohmann::json&) -> caf::expected<std::unique_ptr<agent>> {
                       return std::unique_ptr<agent>{new pinger_agent(series)};
                     }}))
      die("pinger kind: " + describe(err));
    auto rt = node_runtime::start(sys, cfg, std::move(kinds), std::make_shared<metrics>());
    if (!rt)
      die("runtime: " + describe(rt.error()));
    auto member = cluster::start(sys, **rt, cfg, "-");
    if (!member)
      die("cluster: " + describe(member.error()));
    // The other member: a real agent-node, joining through this one.
    int node_out[2];
    if (::pipe(node_out) != 0)
      die("pipe failed");
    // Its arguments are made before the fork: the child of a threaded process only execs.
    std::string seed = "127.0.0.1:" + std::to_string((*member)->port());
    std::string dd = data_dir + "/b";
    std::vector<std::string> args{
      node_bin,      "--name",      "bench-b",   "--data-dir",  dd,
      "--gateway",   "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--cluster",
      "127.0.0.1:0", "--seed",      seed,        "--log-level", "warn"};
    for (auto& kv : opts.settings) {
      args.emplace_back("--set");
      args.push_back(kv);
    }
    std::vector<char*> node_argv;
    for (auto& a : args)
      node_argv.push_back(a.data());
    node_argv.push_back(nullptr);
    node_pid = ::fork();
    if (node_pid == 0) {
      ::dup2(node_out[1], 1);
      ::close(node_out[0]);
      ::execv(node_bin.c_str(), node_argv.data());
      ::_exit(127);
    }
    ::close(node_out[1]);
    std::string line;
    char ch;
    while (::read(node_out[0], &ch, 1) == 1 && ch != '\n')
      line.push_back(ch);
    if (line.find(" ready: ") == std::string::npos)
      die("agent-node (" + node_bin + ") did not start: " + line);
    auto joined = [&] {
      for (auto& m : (*member)->members())
        if (m.name == "bench-b" && m.status == "up")
          return true;
      return false;
    };
    for (int i = 0; i < 2000 && !joined(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!joined())
      die("the agent-node did not join");
    auto id = *make_agent_id("bench", "echo1");
    std::promise<caf::expected<agent_view>> spawned;
    spawn_request req;
    req.id = id;
    req.kind = "echo";
    (*member)->spawn(req, "bench-b",
                     [&](caf::expected<agent_view> v) { spawned.set_value(std::move(v)); });
    auto v = spawned.get_future().get();
    if (!v)
      die("spawn on bench-b: " + describe(v.error()));
    series->to = id;
    auto pinger = *make_agent_id("bench", "pinger1");
    {
      std::promise<caf::expected<agent_view>> made;
      spawn_request preq;
      preq.id = pinger;
      preq.kind = "pinger";
      (*member)->spawn(preq, "bench-a",
                       [&](caf::expected<agent_view> pv) { made.set_value(std::move(pv)); });
      auto pv = made.get_future().get();
      if (!pv)
        die("spawn of the pinger on bench-a: " + describe(pv.error()));
    }
    auto raw = sys.middleman().remote_actor("127.0.0.1", raw_port);
    if (!raw)
      die("remote_actor to the raw-CAF server: " + sys.render(raw.error()));
    std::printf("agent-bench remote: %d runs; sequential %llu asks, windowed %llu asks with "
                "%llu in flight, %llu tells with %llu unacknowledged (an ask every %llu); echo "
                "of a %zu-byte JSON body in an agent_call\n",
                opts.runs, static_cast<unsigned long long>(opts.asks),
                static_cast<unsigned long long>(opts.window_asks),
                static_cast<unsigned long long>(opts.window),
                static_cast<unsigned long long>(opts.tells),
                static_cast<unsigned long long>(opts.tell_window),
                static_cast<unsigned long long>(opts.ack_every), echo_call(0).body.size());
    // Warm-up of both paths.
    auto warm = opts;
    warm.asks = 200;
    warm.window_asks = 2000;
    warm.tells = 20000;
    (void)raw_caf_run(sys, *raw, warm);
    (void)hive_run(**member, id, pinger, *series, warm);
    std::unique_ptr<erlang_peers> erl;
    std::string erl_skipped;
    if (opts.compare) {
      erl = std::make_unique<erlang_peers>(opts.peers_dir);
      if (!erl->skipped().empty()) {
        erl_skipped = erl->skipped();
        std::printf("--compare: Erlang skipped: %s\n", erl_skipped.c_str());
        erl.reset();
      }
    }
    std::vector<run_figures> raws, hives;
    std::vector<erlang_remote_figures> erls;
    for (int r = 0; r < opts.runs; ++r) {
      // The ways take turns going first, run by run.
      int ways = erl ? 3 : 2;
      for (int k = 0; k < ways; ++k) {
        switch ((k + r) % ways) {
          case 0: raws.push_back(raw_caf_run(sys, *raw, opts)); break;
          case 1: hives.push_back(hive_run(**member, id, pinger, *series, opts)); break;
          default:
            erls.push_back(
              erl->run_remote(opts.asks, opts.tells, opts.tell_window, opts.ack_every));
        }
      }
      auto& a = raws.back();
      auto& b = hives.back();
      std::printf("  run %d/%d  raw CAF: p50 %.0f us, p99 %.0f us, %.0f asks/s windowed, %.0f "
                  "tells/s | hive: p50 %.0f us, p99 %.0f us, %.0f asks/s windowed, %.0f tells/s, "
                  "agent to agent p50 %.0f us, p99 %.0f us",
                  r + 1, opts.runs, a.p50_us, a.p99_us, a.window_per_s, a.tells_per_s, b.p50_us,
                  b.p99_us, b.window_per_s, b.tells_per_s, b.a2a_p50_us, b.a2a_p99_us);
      if (erl)
        std::printf(" | Erlang: %.0f round trips/s, %.0f tells/s",
                    erls.back().pingpong_round_trips_per_s, erls.back().window_msgs_per_s);
      std::printf("\n");
      std::fflush(stdout);
    }
    auto med = [](const std::vector<run_figures>& xs, double run_figures::*field) {
      std::vector<double> v;
      for (auto& x : xs)
        v.push_back(x.*field);
      return median(std::move(v));
    };
    nlohmann::json out;
    std::printf("\n%-10s %10s %10s %14s %14s\n", "way", "p50 us", "p99 us", "asks/s (W)",
                "tells/s (W)");
    for (auto [name, xs] : {std::pair{"raw-caf", &raws}, std::pair{"hive", &hives}}) {
      auto p50 = med(*xs, &run_figures::p50_us);
      auto p99 = med(*xs, &run_figures::p99_us);
      auto win = med(*xs, &run_figures::window_per_s);
      auto tps = med(*xs, &run_figures::tells_per_s);
      std::printf("%-10s %10.0f %10.0f %14.0f %14.0f\n", name, p50, p99, win, tps);
      out[name] = {{"p50_us", p50},
                   {"p99_us", p99},
                   {"windowed_asks_per_s", win},
                   {"windowed_tells_per_s", tps}};
    }
    {
      auto p50 = med(hives, &run_figures::a2a_p50_us);
      auto p99 = med(hives, &run_figures::a2a_p99_us);
      auto avg = med(hives, &run_figures::a2a_mean_us);
      std::printf("%-10s %10.0f %10.0f   (an agent asking an agent on the other member; mean %.0f "
                  "us)\n",
                  "hive a2a", p50, p99, avg);
      out["hive_agent_to_agent"] = {{"p50_us", p50}, {"p99_us", p99}, {"mean_us", avg}};
      out["hive"]["mean_us"] = med(hives, &run_figures::mean_us);
    }
    auto ratio_p50 = out["hive"]["p50_us"].get<double>() / out["raw-caf"]["p50_us"].get<double>();
    auto ratio_win = out["hive"]["windowed_asks_per_s"].get<double>()
      / out["raw-caf"]["windowed_asks_per_s"].get<double>();
    auto ratio_tells = out["hive"]["windowed_tells_per_s"].get<double>()
      / out["raw-caf"]["windowed_tells_per_s"].get<double>();
    std::printf("hive / raw CAF: p50 latency %.2fx, windowed asks %.2fx, windowed tells %.2fx\n",
                ratio_p50, ratio_win, ratio_tells);
    out["hive_vs_raw_tells"] = ratio_tells;
    out["hive_vs_raw_p50"] = ratio_p50;
    out["hive_vs_raw_windowed"] = ratio_win;
    if (erl) {
      std::vector<double> rts, tells;
      for (auto& e : erls) {
        rts.push_back(e.pingpong_round_trips_per_s);
        tells.push_back(e.window_msgs_per_s);
      }
      auto rt_med = median(rts);
      auto tells_med = median(tells);
      // ab.erl reports round trips per second of a sequential loop: its mean round trip.
      auto erl_rt_us = 1e6 / rt_med;
      auto hive_p50 = out["hive"]["p50_us"].get<double>();
      auto hive_tells = out["hive"]["windowed_tells_per_s"].get<double>();
      std::printf("\nErlang distribution (%s, same run, same sizes: %llu sequential round trips, "
                  "%llu tells with %llu unacknowledged, an ack every %llu)\n",
                  erl->source().c_str(), static_cast<unsigned long long>(opts.asks),
                  static_cast<unsigned long long>(opts.tells),
                  static_cast<unsigned long long>(opts.tell_window),
                  static_cast<unsigned long long>(opts.ack_every));
      std::printf("%-28s %12s %12s %10s\n", "", "hive", "Erlang", "hive/erl");
      std::printf("%-28s %12.0f %12.0f %9.2fx   (goal: <= 1.00x)\n", "ask round trip us (p50|mean)",
                  hive_p50, erl_rt_us, hive_p50 / erl_rt_us);
      auto a2a_p50 = out["hive_agent_to_agent"]["p50_us"].get<double>();
      auto a2a_mean = out["hive_agent_to_agent"]["mean_us"].get<double>();
      std::printf("%-28s %12.0f %12.0f %9.2fx   (process to process, as the peers)\n",
                  "agent to agent us (p50|mean)", a2a_p50, erl_rt_us, a2a_p50 / erl_rt_us);
      std::printf("%-28s %12.0f %12.0f %9.2fx\n", "agent to agent us (mean|mean)", a2a_mean,
                  erl_rt_us, a2a_mean / erl_rt_us);
      std::printf("%-28s %12.0f %12.0f %9.2fx   (goal: >= 1.50x)\n", "windowed tells/s", hive_tells,
                  tells_med, hive_tells / tells_med);
      out["erlang"] = {
        {"pingpong_round_trips_per_s", rts},
        {"windowed_tells_per_s", tells},
        {"median_pingpong_round_trips_per_s", rt_med},
        {"median_windowed_tells_per_s", tells_med},
        {"mean_round_trip_us", erl_rt_us},
        {"hive_p50_vs_erlang_round_trip", hive_p50 / erl_rt_us},
        {"hive_vs_erlang_tells", hive_tells / tells_med},
        {"command",
         erl->command("remote SRV " + std::to_string(opts.asks) + " " + std::to_string(opts.tells)
                      + " " + std::to_string(opts.tell_window) + " "
                      + std::to_string(opts.ack_every))
           + " on a second node SRV, both on 127.0.0.1"}};
    } else if (opts.compare) {
      out["erlang"] = {{"skipped", erl_skipped}};
    }
    out["runs"] = opts.runs;
    if (!opts.json_file.empty())
      std::ofstream{opts.json_file} << out.dump(1) << "\n";
    ::kill(node_pid, SIGTERM);
    ::waitpid(node_pid, nullptr, 0);
    (*member)->leave();
    member->reset();
    (*rt)->shutdown();
  }
  ::close(stop_pipe[1]); // the raw-CAF server exits
  ::waitpid(raw_pid, nullptr, 0);
  std::error_code ec;
  std::filesystem::remove_all(data_dir, ec);
  return status;
}

} // namespace hive::bench
