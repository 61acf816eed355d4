// The `local` scenario's other parts (issue #8; the patterns of ../shared/peers' `call`,
// `pingpong` and `spawn`), each the runtime next to raw CAF in the same process and run:
//
//   asks      one client asks an echo agent by id, one ask in flight (node_runtime::ask from a
//             callback chain), vs a CAF actor's request(...).then(...) to a plain echo actor
//             with the same message types: round trips/s, p50/p99 latency
//   pingpong  two agents bounce a counter by id (call_context::send) until it reaches 0, vs two
//             plain CAF actors bouncing the same agent_call by handle: messages/s
//   spawn     agents spawned and stopped through the runtime (node_runtime::spawn, ::stop), at
//             most W alive, vs plain CAF actors spawned and sent an exit: spawns/s

#include "bench/local_bench.hpp"

#include "bench/erlang_peers.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <caf/all.hpp>

#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/kind.hpp"
#include "runtime/node_runtime.hpp"

namespace hive::bench {

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

[[noreturn]] void fail(const std::string& what) {
  std::cerr << "agent-bench local: " << what << "\n";
  std::exit(1);
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median_of(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/// Nearest-rank quantile of unsorted samples (sorted here).
double quantile_of(std::vector<float> v, double q) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

agent_call bench_call(std::string body) {
  return agent_call{envelope{1, "bench", 0, "bench", {}, 0}, std::move(body)};
}

/// Answers every call with its body.
class echo_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    return call.body_text();
  }
};

/// Where a ping-pong run reports that the count reached 0.
struct finish_line {
  std::mutex mtx;
  std::shared_ptr<std::promise<void>> done;

  void arrive() {
    std::lock_guard<std::mutex> guard{mtx};
    if (done) {
      done->set_value();
      done.reset();
    }
  }
};

std::shared_ptr<finish_line> the_finish_line() {
  static auto line = std::make_shared<finish_line>();
  return line;
}

/// Sends `n - 1` to its peer (config "peer") for a body `n` > 0; at 0 it signals the finish.
class pong_agent : public agent {
public:
  explicit pong_agent(agent_id peer) : peer_(std::move(peer)) {}

  caf::expected<std::string> handle(call_context& call) override {
    auto n = std::stoull(call.body_text());
    if (n == 0) {
      the_finish_line()->arrive();
      return std::string{};
    }
    if (auto err = call.send(peer_, std::to_string(n - 1)))
      return err;
    return std::string{};
  }

private:
  agent_id peer_;
};

/// The raw-CAF twins.
caf::behavior raw_echo(caf::event_based_actor*) {
  return {[](const agent_call& c) { return agent_reply{c.body}; }};
}

caf::behavior raw_pong(caf::event_based_actor* self) {
  auto peer = std::make_shared<caf::actor>();
  return {
    [peer](const caf::actor& p) { *peer = p; },
    [self, peer](const agent_call& c) {
      auto n = std::stoull(c.body);
      if (n == 0) {
        the_finish_line()->arrive();
        return;
      }
      self->send(*peer, bench_call(std::to_string(n - 1)));
    },
  };
}

struct asks_result {
  double per_s = 0;
  double p50_us = 0;
  double p99_us = 0;
};

asks_result hive_asks(node_runtime& rt, const agent_id& id, uint64_t n) {
  struct chain {
    node_runtime* rt;
    agent_id id;
    uint64_t left;
    std::vector<float> lat_us;
    clock_type::time_point sent;
    std::promise<std::string> done;
    std::function<void()> next;
  };
  auto c = std::make_shared<chain>();
  c->rt = &rt;
  c->id = id;
  c->left = n;
  c->lat_us.reserve(n);
  std::weak_ptr<chain> weak = c;
  c->next = [weak] {
    auto c = weak.lock();
    c->sent = clock_type::now();
    c->rt->ask(c->id, bench_call("{}"), std::chrono::seconds{30},
               [c](caf::expected<std::string> r) {
                 if (!r)
                   return c->done.set_value(describe(r.error()));
                 c->lat_us.push_back(static_cast<float>(
                   std::chrono::duration<double, std::micro>(clock_type::now() - c->sent).count()));
                 if (--c->left == 0)
                   return c->done.set_value({});
                 c->next();
               });
  };
  auto fut = c->done.get_future();
  auto t0 = clock_type::now();
  c->next();
  auto err = fut.get();
  auto secs = seconds_since(t0);
  if (!err.empty())
    fail("ask by id failed: " + err);
  return {static_cast<double>(n) / secs, quantile_of(c->lat_us, 0.5), quantile_of(c->lat_us, 0.99)};
}

asks_result raw_asks(caf::actor_system& sys, const caf::actor& echo, uint64_t n) {
  auto lat = std::make_shared<std::vector<float>>();
  lat->reserve(n);
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  auto t0 = clock_type::now();
  sys.spawn([echo, n, lat, done](caf::event_based_actor* self) {
    auto left = std::make_shared<uint64_t>(n);
    auto step = std::make_shared<std::function<void()>>();
    *step = [self, echo, left, lat, done, step] {
      auto sent = clock_type::now();
      self->request(echo, caf::infinite, bench_call("{}"))
        .then([self, left, lat, done, step, sent](agent_reply&) {
          lat->push_back(static_cast<float>(
            std::chrono::duration<double, std::micro>(clock_type::now() - sent).count()));
          if (--*left == 0) {
            done->set_value();
            *step = nullptr; // break the cycle
            self->quit();
            return;
          }
          (*step)();
        });
    };
    (*step)();
  });
  fut.get();
  auto secs = seconds_since(t0);
  return {static_cast<double>(n) / secs, quantile_of(*lat, 0.5), quantile_of(*lat, 0.99)};
}

/// Time until a count of `n` has bounced down to 0 (n + 1 messages), started by `start`.
double pingpong_run(uint64_t n, const std::function<void()>& start) {
  auto line = the_finish_line();
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  {
    std::lock_guard<std::mutex> guard{line->mtx};
    line->done = done;
  }
  auto t0 = clock_type::now();
  start();
  if (fut.wait_for(std::chrono::minutes{5}) != std::future_status::ready)
    fail("a ping-pong run did not finish in 5 minutes");
  return static_cast<double>(n + 1) / seconds_since(t0);
}

/// Spawns (and stops) `n` agents through the runtime with at most `w` alive.
double hive_spawns(node_runtime& rt, uint64_t n, uint64_t w, uint64_t run) {
  struct shared {
    std::mutex mtx;
    std::condition_variable cv;
    uint64_t alive = 0;
    uint64_t finished = 0;
    std::string error;
  };
  auto sh = std::make_shared<shared>();
  auto t0 = clock_type::now();
  for (uint64_t i = 0; i < n; ++i) {
    {
      std::unique_lock<std::mutex> guard{sh->mtx};
      sh->cv.wait(guard, [&] { return sh->alive < w; });
      if (!sh->error.empty())
        fail("spawn: " + sh->error);
      ++sh->alive;
    }
    auto id = parse_agent_id("bench/s" + std::to_string(run) + "-" + std::to_string(i));
    if (!id)
      fail("bad id");
    auto end = [sh](const std::string& err) {
      std::lock_guard<std::mutex> guard{sh->mtx};
      if (!err.empty() && sh->error.empty())
        sh->error = err;
      --sh->alive;
      ++sh->finished;
      sh->cv.notify_all();
    };
    rt.spawn(spawn_request{*id, "bench-echo", json::object(), false, restart_type::temporary, i},
             [&rt, id = *id, end](caf::expected<agent_view> v) {
               if (!v)
                 return end(describe(v.error()));
               rt.stop(id, [end](caf::error err) { end(err ? describe(err) : std::string{}); });
             });
  }
  std::unique_lock<std::mutex> guard{sh->mtx};
  sh->cv.wait(guard, [&] { return sh->finished == n; });
  if (!sh->error.empty())
    fail("spawn: " + sh->error);
  return static_cast<double>(n) / seconds_since(t0);
}

/// Spawns `n` plain CAF actors with at most `w` alive (each sent an exit), waits until all
/// are gone.
double raw_spawns(caf::actor_system& sys, uint64_t n, uint64_t w) {
  auto before = sys.registry().running();
  std::vector<caf::actor> ring(w);
  auto t0 = clock_type::now();
  for (uint64_t i = 0; i < n; ++i) {
    auto& slot = ring[i % w];
    if (slot)
      caf::anon_send_exit(slot, caf::exit_reason::user_shutdown);
    slot = sys.spawn(raw_echo);
  }
  for (auto& a : ring)
    if (a)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  ring.clear();
  while (sys.registry().running() > before)
    std::this_thread::yield();
  return static_cast<double>(n) / seconds_since(t0);
}

/// Runs the raw-CAF twin first on even runs and the runtime first on odd ones, so that warm-up
/// and drift hit both alike.
template <class H, class R>
void alternate(int run, H& one_h, R& one_r) {
  if (run % 2 == 0) {
    one_r();
    one_h();
  } else {
    one_h();
    one_r();
  }
}

json pair_json(const std::string& unit, const std::vector<double>& hive,
               const std::vector<double>& raw) {
  auto mh = median_of(hive), mr = median_of(raw);
  return json{{"unit", unit},
              {"hive", hive},
              {"raw_caf", raw},
              {"median", {{"hive", mh}, {"raw_caf", mr}}},
              {"ratio_hive_vs_raw", mr > 0 ? mh / mr : 0}};
}

} // namespace

caf::error add_local_extra_kinds(kind_registry& kinds) {
  if (auto err = kinds.add({"bench-echo", "answers with the call's body",
                            [](const json&) -> caf::expected<std::unique_ptr<agent>> {
                              return std::unique_ptr<agent>{new echo_agent};
                            }}))
    return err;
  return kinds.add({"bench-pong", "bounces a counter to its peer",
                    [](const json& cfg) -> caf::expected<std::unique_ptr<agent>> {
                      auto peer = parse_agent_id(cfg.value("peer", ""));
                      if (!peer)
                        return std::move(peer.error());
                      return std::unique_ptr<agent>{new pong_agent(std::move(*peer))};
                    }});
}

json run_local_extra(caf::actor_system& sys, node_runtime& rt, const local_extra_options& opts) {
  json out = json::object();
  auto spawn_sync = [&rt](const std::string& id, const std::string& kind, json cfg) {
    std::promise<caf::expected<agent_view>> p;
    rt.spawn(
      spawn_request{*parse_agent_id(id), kind, std::move(cfg), false, restart_type::permanent, 1},
      [&p](caf::expected<agent_view> v) { p.set_value(std::move(v)); });
    auto v = p.get_future().get();
    if (!v)
      fail("spawning " + id + ": " + describe(v.error()));
  };
  auto progress = [](const char* what, int r, int runs, double hive, double raw) {
    std::cerr << "\r  " << what << " run " << (r + 1) << "/" << runs << "  hive "
              << static_cast<uint64_t>(hive) << "  raw-caf " << static_cast<uint64_t>(raw)
              << "      " << std::flush;
  };
  if (opts.asks > 0) {
    spawn_sync("bench/echo", "bench-echo", json::object());
    auto id = *parse_agent_id("bench/echo");
    auto echo = sys.spawn(raw_echo);
    std::vector<double> h, r, hp50, hp99, rp50, rp99;
    (void)hive_asks(rt, id, std::min<uint64_t>(opts.asks, 1000)); // warm-up
    for (int i = 0; i < opts.runs; ++i) {
      auto one_h = [&] {
        auto x = hive_asks(rt, id, opts.asks);
        h.push_back(x.per_s);
        hp50.push_back(x.p50_us);
        hp99.push_back(x.p99_us);
      };
      auto one_r = [&] {
        auto x = raw_asks(sys, echo, opts.asks);
        r.push_back(x.per_s);
        rp50.push_back(x.p50_us);
        rp99.push_back(x.p99_us);
      };
      alternate(i, one_h, one_r);
      progress("asks", i, opts.runs, h.back(), r.back());
    }
    std::cerr << "\n";
    caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
    auto j = pair_json("round trips/s", h, r);
    j["asks"] = opts.asks;
    j["p50_us"] = {{"hive", median_of(hp50)}, {"raw_caf", median_of(rp50)}};
    j["p99_us"] = {{"hive", median_of(hp99)}, {"raw_caf", median_of(rp99)}};
    out["asks"] = j;
  }
  if (opts.pingpong > 0) {
    spawn_sync("bench/ping", "bench-pong", json{{"peer", "bench/pong"}});
    spawn_sync("bench/pong", "bench-pong", json{{"peer", "bench/ping"}});
    auto ping = *parse_agent_id("bench/ping");
    auto a = sys.spawn(raw_pong);
    auto b = sys.spawn(raw_pong);
    caf::anon_send(a, b);
    caf::anon_send(b, a);
    std::vector<double> h, r;
    for (int i = 0; i < opts.runs; ++i) {
      auto one_h = [&] {
        h.push_back(pingpong_run(opts.pingpong, [&] {
          if (auto err = rt.tell(ping, bench_call(std::to_string(opts.pingpong))))
            fail("ping-pong tell: " + describe(err));
        }));
      };
      auto one_r = [&] {
        r.push_back(pingpong_run(
          opts.pingpong, [&] { caf::anon_send(a, bench_call(std::to_string(opts.pingpong))); }));
      };
      alternate(i, one_h, one_r);
      progress("ping-pong", i, opts.runs, h.back(), r.back());
    }
    std::cerr << "\n";
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
    auto j = pair_json("messages/s", h, r);
    j["messages"] = opts.pingpong + 1;
    out["pingpong"] = j;
  }
  if (opts.spawns > 0) {
    std::vector<double> h, r;
    for (int i = 0; i < opts.runs; ++i) {
      auto one_h = [&] {
        h.push_back(hive_spawns(rt, opts.spawns, opts.spawn_window, static_cast<uint64_t>(i)));
      };
      auto one_r = [&] { r.push_back(raw_spawns(sys, opts.spawns, opts.spawn_window)); };
      alternate(i, one_h, one_r);
      progress("spawn", i, opts.runs, h.back(), r.back());
    }
    std::cerr << "\n";
    auto j = pair_json("spawns/s", h, r);
    j["spawns"] = opts.spawns;
    j["window"] = opts.spawn_window;
    out["spawn"] = j;
  }
  std::printf("\n%-10s %-14s %14s %14s %8s\n", "part", "unit", "hive median", "raw-caf median",
              "vs raw");
  for (auto part : {"asks", "pingpong", "spawn"}) {
    if (!out.contains(part))
      continue;
    auto& j = out[part];
    std::printf("%-10s %-14s %14.0f %14.0f %7.2fx\n", part, j["unit"].get<std::string>().c_str(),
                j["median"]["hive"].get<double>(), j["median"]["raw_caf"].get<double>(),
                j["ratio_hive_vs_raw"].get<double>());
  }
  if (out.contains("asks"))
    std::printf("asks latency: hive p50 %.1f us, p99 %.1f us; raw-caf p50 %.1f us, p99 %.1f us\n",
                out["asks"]["p50_us"]["hive"].get<double>(),
                out["asks"]["p99_us"]["hive"].get<double>(),
                out["asks"]["p50_us"]["raw_caf"].get<double>(),
                out["asks"]["p99_us"]["raw_caf"].get<double>());
  return out;
}

json run_erlang_compare(const local_extra_options& opts, const window_sizes& win,
                        const json& ours) {
  erlang_peers peers{opts.peers_dir};
  if (!peers.skipped().empty())
    return {{"skipped", peers.skipped()}};
  auto erl = [&](const std::string& args, const std::string& name) {
    return peers.run_local(args, name);
  };
  // part -> (ab.erl arguments, RESULT name, factor from its unit to ours)
  struct part {
    std::string ours;
    std::string args;
    std::string name;
    double to_our_unit;
    double hive;
  };
  std::vector<part> parts;
  auto med = [&](const char* p) {
    return ours.contains(p) ? ours[p]["median"]["hive"].get<double>() : 0.0;
  };
  parts.push_back({"window",
                   "window " + std::to_string(win.messages) + " " + std::to_string(win.window) + " "
                     + std::to_string(win.ack_every),
                   "erl_window", 1.0,
                   ours.contains("window") ? ours["window"]["by_id"].get<double>() : 0.0});
  if (opts.asks > 0)
    parts.push_back({"asks", "call " + std::to_string(opts.asks), "erl_call", 1.0, med("asks")});
  // ab.erl's pingpong reports round trips/s; ours counts messages (two per round trip).
  if (opts.pingpong > 0)
    parts.push_back({"pingpong",
                     "pingpong " + std::to_string(std::max<uint64_t>(opts.pingpong / 2, 1)),
                     "erl_pingpong", 2.0, med("pingpong")});
  if (opts.spawns > 0)
    parts.push_back(
      {"spawn", "spawn " + std::to_string(opts.spawns) + " " + std::to_string(opts.spawn_window),
       "erl_spawn", 1.0, med("spawn")});
  json out = json::object();
  std::printf("\nErlang (%s, same sizes, %d runs each; hive figures: the medians above)\n",
              peers.source().c_str(), opts.runs);
  std::printf("%-10s %-14s %14s %14s %8s\n", "part", "unit", "hive median", "erlang median",
              "vs erl");
  for (auto& p : parts) {
    std::vector<double> runs;
    for (int r = 0; r < opts.runs; ++r) {
      runs.push_back(erl(p.args, p.name) * p.to_our_unit);
      std::cerr << "\r  erlang " << p.ours << " run " << (r + 1) << "/" << opts.runs << "  "
                << static_cast<uint64_t>(runs.back()) << "      " << std::flush;
    }
    std::cerr << "\n";
    auto m = median_of(runs);
    out[p.ours] = {{"erlang", runs},
                   {"median_erlang", m},
                   {"median_hive", p.hive},
                   {"ratio_hive_vs_erlang", m > 0 ? p.hive / m : 0},
                   {"erlang_command", peers.command(p.args)}};
    std::printf("%-10s %-14s %14.0f %14.0f %7.2fx\n", p.ours.c_str(),
                p.ours == "spawn" ? "spawns/s"
                                  : (p.ours == "asks" ? "round trips/s" : "messages/s"),
                p.hive, m, m > 0 ? p.hive / m : 0);
  }
  return out;
}

} // namespace hive::bench
