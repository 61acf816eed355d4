// agent-bench durable: journaled agents against RocksDB alone, in one process (issue #3).
//
//  1. writers: W independent closed-loop writers (W from --writers), each asking its own
//     journaled `counter` {"op":"add","by":1} and waiting for the reply (durable before it is
//     sent) before the next. Writers are callback chains on CAF threads, not OS threads. Per W:
//     acks/s, ack latency p50/p99, mean group-commit size, commits/s, CPU cores used.
//     Every reply is checked (writer i's counter answers exactly its own ack count), then
//     every counter's value, live and again after the store is closed and reopened.
//  2. rocksdb: a plain rocksdb::DB in the same file system, one thread writing journal-sized
//     records with sync=true, single puts and batches of --rocksdb-batch, measured next to
//     every writers run; the ratios durable acks/s / synced puts/s per W (median over runs).
//     A warm-up of one second at the largest W comes first.
//  3. activation: N counters with some state are passivated (passivate_idle_ms = 50), then
//     each is asked once, one after the other: the first ask activates it (restore from
//     snapshot + journal), a second ask right after measures the live path.
//  4. footprint: N counters created with one add each; RSS (and heap in use) per live idle
//     agent, next to ephemeral counters and plain CAF actors; then (after a restart, an
//     activation and passivation of each) bytes on disk per passivated agent: the closed
//     database is opened with plain RocksDB, flushed, measured, fully compacted, measured.

#include "bench/durable_bench.hpp"
#include "bench/settings.hpp"

#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include "actors/sample_kinds.hpp"
#include "config/node_config.hpp"
#include "protocols/errc.hpp"
#include "protocols/records.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/logging.hpp"
#include "runtime/node_runtime.hpp"
#include "storage/store.hpp"

namespace hive::bench {

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

/// Deadline of every ask the benchmark makes.
constexpr auto ask_timeout = std::chrono::seconds{30};
/// Longest the benchmark waits for anything (a phase that takes longer is stuck).
constexpr auto wait_max = std::chrono::seconds{600};
/// Creations and asks in flight at most while setting up many agents.
constexpr uint64_t setup_window = 512;

const std::string add_body = R"({"op":"add","by":1})";
const std::string get_body = R"({"op":"get"})";

/// A fatal error (setup failed, something stuck): says what, and ends the process (the data
/// directory stays, its path was printed at the start).
[[noreturn]] void die(const std::string& what) {
  std::cerr << "\nagent-bench durable: " << what << "\n" << std::flush;
  std::_Exit(1);
}

std::string value_reply(uint64_t v) {
  return R"({"value":)" + std::to_string(v) + "}";
}

agent_call make_call(const std::string& body, uint64_t correlation_id) {
  return agent_call{envelope{correlation_id, "bench", 0, "bench", {}, 0}, body};
}

double seconds_since(clock_type::time_point t0, clock_type::time_point t1 = clock_type::now()) {
  return std::chrono::duration<double>(t1 - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/// Nearest-rank quantile of sorted samples.
double quantile(const std::vector<float>& sorted, double q) {
  if (sorted.empty())
    return 0;
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

uint64_t rss_bytes() {
  std::ifstream f{"/proc/self/statm"};
  uint64_t size = 0;
  uint64_t resident = 0;
  f >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

/// RSS after giving freed heap memory back to the kernel, so that deltas count what is in use.
uint64_t trimmed_rss_bytes() {
  malloc_trim(0);
  return rss_bytes();
}

/// Memory of the process: resident set (trimmed, see above) and heap bytes in use by malloc
/// (all arenas and mmapped chunks: unaffected by the reuse of freed memory).
struct memory_use {
  uint64_t rss = 0;
  uint64_t heap = 0;

  [[nodiscard]] double rss_delta(const memory_use& before) const {
    return static_cast<double>(rss) - static_cast<double>(before.rss);
  }

  [[nodiscard]] double heap_delta(const memory_use& before) const {
    return static_cast<double>(heap) - static_cast<double>(before.heap);
  }
};

memory_use memory_now() {
  memory_use m;
  m.rss = trimmed_rss_bytes();
  auto mi = mallinfo2();
  m.heap = mi.uordblks + mi.hblkhd;
  return m;
}

/// Waits until CAF runs no more actors than `running` (a stopped runtime's actors are gone).
void settle(caf::actor_system& sys, size_t running) {
  auto t0 = clock_type::now();
  while (sys.registry().running() > running) {
    if (clock_type::now() - t0 > std::chrono::seconds{60}) {
      std::cerr << "agent-bench durable: " << sys.registry().running() - running
                << " actors still running 60 s after their runtime stopped\n";
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  std::this_thread::sleep_for(std::chrono::milliseconds{50});
}

/// The first three fields of /proc/loadavg (the machine is shared: say how busy it was).
std::string load_average() {
  std::ifstream f{"/proc/loadavg"};
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

/// CPU time of the whole process (all threads), user + system.
double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

/// "ext4 on /dev/vda (mounted at /)": the mount that holds `path` (/proc/self/mounts).
std::string filesystem_of(const std::string& path) {
  std::ifstream f{"/proc/self/mounts"};
  std::string dev, mnt, type, rest, best_dev, best_mnt, best_type;
  while (f >> dev >> mnt >> type) {
    std::getline(f, rest);
    bool inside = path.compare(0, mnt.size(), mnt) == 0
      && (mnt == "/" || path.size() == mnt.size() || path[mnt.size()] == '/');
    if (inside && mnt.size() >= best_mnt.size()) {
      best_dev = dev;
      best_mnt = mnt;
      best_type = type;
    }
  }
  return best_type + " on " + best_dev + " (mounted at " + best_mnt + ")";
}

struct disk_usage {
  uint64_t apparent = 0;  ///< sum of file sizes
  uint64_t allocated = 0; ///< blocks allocated (what du reports)
};

disk_usage du(const std::string& dir) {
  disk_usage out;
  std::error_code ec;
  for (auto& e : std::filesystem::recursive_directory_iterator{dir, ec}) {
    struct stat st {};
    if (e.is_regular_file(ec) && ::stat(e.path().c_str(), &st) == 0) {
      out.apparent += static_cast<uint64_t>(st.st_size);
      out.allocated += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return out;
}

/// Sum of every series `name` (with or without labels) in a Prometheus text exposition.
double metric_value(const std::string& text, const std::string& name) {
  double sum = 0;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, name.size(), name) != 0 || line.size() <= name.size())
      continue;
    auto c = line[name.size()];
    if (c != ' ' && c != '{')
      continue;
    auto sp = line.rfind(' ');
    sum += std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return sum;
}

/// Group commits so far: how many, how many writes they carried, their synced-write time.
struct commit_stats {
  double commits = 0;
  double commits_within_5ms = 0;
  double writes = 0;
  double write_seconds = 0;
  double appends = 0;
  double append_seconds = 0;
};

commit_stats read_commits(const metrics& m) {
  auto text = m.render();
  return {metric_value(text, "hive_journal_commit_batch_writes_count"),
          metric_value(text, "hive_journal_commit_seconds_bucket{le=\"0.005\"}"),
          metric_value(text, "hive_journal_commit_batch_writes_sum"),
          metric_value(text, "hive_journal_commit_seconds_sum"),
          metric_value(text, "hive_journal_append_seconds_count"),
          metric_value(text, "hive_journal_append_seconds_sum")};
}

std::vector<agent_id> make_ids(const std::string& prefix, uint64_t n) {
  std::vector<agent_id> ids;
  ids.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    auto id = parse_agent_id("bench/" + prefix + std::to_string(i));
    if (!id)
      die("bad agent id: " + describe(id.error()));
    ids.push_back(std::move(*id));
  }
  return ids;
}

// -- nodes ---------------------------------------------------------------------------------

node_config bench_config(const durable_options& opts) {
  node_config cfg;
  cfg.node.name = "bench";
  cfg.log.level = "warn";
  cfg.agents.agents_max =
    std::max<int64_t>(cfg.agents.agents_max, static_cast<int64_t>(opts.footprint_agents) + 1000);
  if (auto err = apply_settings(cfg, opts.settings))
    die(message_of(err));
  return cfg;
}

std::shared_ptr<store> open_store(const node_config& cfg, const std::string& data_dir,
                                  std::shared_ptr<metrics> m) {
  std::filesystem::create_directories(data_dir);
  auto db = open_node_store(cfg, data_dir, std::move(m));
  if (!db)
    die("cannot open the store in " + data_dir + ": " + describe(db.error()));
  return std::move(*db);
}

std::unique_ptr<node_runtime> start_runtime(caf::actor_system& sys, const node_config& cfg,
                                            std::shared_ptr<metrics> m, std::shared_ptr<store> db) {
  kind_registry kinds;
  if (auto err = register_sample_kinds(kinds))
    die(describe(err));
  auto rt = node_runtime::start(sys, cfg, std::move(kinds), std::move(m), {}, std::move(db));
  if (!rt)
    die("cannot start the runtime: " + describe(rt.error()));
  return std::move(*rt);
}

void stop_runtime(std::unique_ptr<node_runtime>& rt) {
  rt->shutdown();
  rt.reset();
}

/// Closes the store once the runtime's actors have let go of it (waits for queued writes).
void close_store(std::shared_ptr<store>& db) {
  auto t0 = clock_type::now();
  while (db.use_count() > 1) {
    if (clock_type::now() - t0 > std::chrono::seconds{60})
      die("the store is still referenced 60 s after the runtime stopped");
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  db.reset();
}

void wait_agent_count_at_most(const node_runtime& rt, size_t n, const char* what) {
  auto t0 = clock_type::now();
  while (rt.agent_count() > n) {
    if (clock_type::now() - t0 > wait_max)
      die(std::string{"timed out waiting for "} + what + ": " + std::to_string(rt.agent_count())
          + " agents still live");
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
}

// -- many operations, a window at a time ---------------------------------------------------

struct outcome {
  uint64_t failed = 0;
  std::string first_error;
  /// Failures by message (the first 80 characters), for the report.
  std::map<std::string, uint64_t> errors;

  [[nodiscard]] std::string summary() const {
    std::string out;
    for (auto& [what, count] : errors)
      out += (out.empty() ? "" : "; ") + std::to_string(count) + " x " + what;
    return out;
  }
};

using done_fn = std::function<void(const std::string& error)>;

/// Calls `start(i, done)` for every i < n with at most `window` unfinished; `done` (error
/// empty on success) may run on any thread, also inline.
template <class Start>
outcome windowed(uint64_t n, uint64_t window, Start start) {
  struct shared {
    std::mutex mtx;
    std::condition_variable cv;
    uint64_t inflight = 0;
    outcome out;
  };
  auto sh = std::make_shared<shared>();
  done_fn done = [sh](const std::string& err) {
    std::lock_guard<std::mutex> guard{sh->mtx};
    --sh->inflight;
    if (!err.empty()) {
      if (sh->out.failed++ == 0)
        sh->out.first_error = err;
      ++sh->out.errors[err.substr(0, 80)];
    }
    sh->cv.notify_all();
  };
  for (uint64_t i = 0; i < n; ++i) {
    {
      std::unique_lock<std::mutex> guard{sh->mtx};
      if (!sh->cv.wait_for(guard, wait_max, [&] { return sh->inflight < window; }))
        die("an operation did not finish in time");
      ++sh->inflight;
    }
    start(i, done);
  }
  std::unique_lock<std::mutex> guard{sh->mtx};
  if (!sh->cv.wait_for(guard, wait_max, [&] { return sh->inflight == 0; }))
    die("an operation did not finish in time");
  return sh->out;
}

outcome spawn_counters(node_runtime& rt, const std::vector<agent_id>& ids) {
  return windowed(ids.size(), setup_window, [&](uint64_t i, const done_fn& done) {
    rt.spawn(
      spawn_request{ids[i], "counter", json::object(), false, restart_type::permanent, i},
      [done](caf::expected<agent_view> v) { done(v ? std::string{} : describe(v.error())); });
  });
}

/// Asks every agent `body`, `rounds` times each (rounds one after the other), expecting
/// `expect(i, round)` as the reply.
template <class Expect>
outcome ask_all(node_runtime& rt, const std::vector<agent_id>& ids, const std::string& body,
                uint64_t rounds, Expect expect) {
  outcome total;
  for (uint64_t r = 0; r < rounds; ++r) {
    auto out = windowed(ids.size(), setup_window, [&](uint64_t i, const done_fn& done) {
      rt.ask(ids[i], make_call(body, i), ask_timeout,
             [done, want = expect(i, r)](caf::expected<std::string> reply) {
               if (!reply)
                 return done(describe(reply.error()));
               done(*reply == want ? std::string{} : "reply " + *reply + ", expected " + want);
             });
    });
    if (out.failed > 0 && total.failed == 0)
      total.first_error = out.first_error;
    total.failed += out.failed;
    for (auto& [what, count] : out.errors)
      total.errors[what] += count;
  }
  return total;
}

caf::expected<std::string> ask_sync(node_runtime& rt, const agent_id& id, const std::string& body,
                                    uint64_t correlation_id) {
  auto p = std::make_shared<std::promise<caf::expected<std::string>>>();
  auto f = p->get_future();
  rt.ask(id, make_call(body, correlation_id), ask_timeout,
         [p](caf::expected<std::string> r) { p->set_value(std::move(r)); });
  if (f.wait_for(wait_max) != std::future_status::ready)
    die("an ask to " + id.str() + " did not finish in time");
  return f.get();
}

// -- 1. closed-loop writers ----------------------------------------------------------------

/// One writer: a closed loop on its own counter. Touched only by its own callback chain
/// while a run is on, by the main thread between runs.
struct writer {
  agent_id id;
  /// Acks of this counter over all runs: the value it must hold.
  uint64_t value = 0;
  /// This run:
  uint64_t acks = 0;
  uint64_t errors = 0;
  uint64_t wrong_replies = 0;
  std::string first_problem;
  std::vector<float> latency_us;
  clock_type::time_point sent;
  clock_type::time_point ended;
  uint64_t asks = 0;
};

struct writer_run {
  node_runtime* rt = nullptr;
  std::vector<writer>* ws = nullptr;
  clock_type::time_point deadline;
  uint64_t ops_each = 0; ///< 0: run until `deadline`
  std::atomic<size_t> running{0};
  std::promise<void> finished;
};

void issue(const std::shared_ptr<writer_run>& run, size_t i) {
  auto& w = (*run->ws)[i];
  w.sent = clock_type::now();
  // The correlation id picks the router: keep each writer on one.
  auto cid = (++w.asks << 10) + i;
  run->rt->ask(
    w.id, make_call(add_body, cid), ask_timeout, [run, i](caf::expected<std::string> reply) {
      auto now = clock_type::now();
      auto& w = (*run->ws)[i];
      w.latency_us.push_back(
        static_cast<float>(std::chrono::duration<double, std::micro>(now - w.sent).count()));
      if (reply) {
        ++w.value;
        ++w.acks;
        if (*reply != value_reply(w.value) && w.wrong_replies++ == 0)
          w.first_problem = "reply " + *reply + ", expected " + value_reply(w.value);
      } else if (w.errors++ == 0) {
        w.first_problem = describe(reply.error());
      }
      // An error leaves the counter's value unknown: that writer stops.
      bool more =
        w.errors == 0 && (run->ops_each > 0 ? w.acks < run->ops_each : now < run->deadline);
      if (more)
        return issue(run, i);
      w.ended = now;
      if (run->running.fetch_sub(1) == 1)
        run->finished.set_value();
    });
}

/// RocksDB alone, measured right next to one writers run.
struct rocksdb_figures {
  double single_puts_per_s = 0;
  double single_p99_ms = 0;
  double batched_puts_per_s = 0;
  double batched_p50_ms = 0;
  double batched_p99_ms = 0;
};

struct writers_figures {
  uint64_t writers = 0;
  uint64_t acks = 0;
  double seconds = 0;
  double acks_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  double commits_per_s = 0;
  double writes_per_commit = 0;
  double commit_ms_mean = 0;
  /// Share of the run the store's writer thread spent inside the synced DB::Write.
  double in_write_share = 0;
  /// Mean time from queueing a journal append to its durable completion.
  double append_ms_mean = 0;
  /// Share of the group commits whose synced write took more than 5 ms.
  double commits_over_5ms = 0;
  double cpu_cores = 0;
  uint64_t errors = 0;
  uint64_t wrong_replies = 0;
  std::string first_problem;
  /// RocksDB alone, measured right before (odd runs: after) this run.
  rocksdb_figures rocks;

  [[nodiscard]] json to_json() const {
    return {{"writers", writers},
            {"acks", acks},
            {"seconds", seconds},
            {"acks_per_s", acks_per_s},
            {"p50_ms", p50_ms},
            {"p99_ms", p99_ms},
            {"max_ms", max_ms},
            {"commits_per_s", commits_per_s},
            {"writes_per_commit", writes_per_commit},
            {"commit_ms_mean", commit_ms_mean},
            {"in_write_share", in_write_share},
            {"append_ms_mean", append_ms_mean},
            {"cpu_cores", cpu_cores},
            {"errors", errors},
            {"wrong_replies", wrong_replies},
            {"commits_over_5ms", commits_over_5ms},
            {"rocksdb_single_puts_per_s", rocks.single_puts_per_s},
            {"rocksdb_single_p99_ms", rocks.single_p99_ms},
            {"rocksdb_batched_puts_per_s", rocks.batched_puts_per_s},
            {"rocksdb_batched_p50_ms", rocks.batched_p50_ms},
            {"rocksdb_batched_p99_ms", rocks.batched_p99_ms}};
  }
};

/// One run with the first `n` writers.
writers_figures run_writers(node_runtime& rt, const metrics& m, std::vector<writer>& ws, size_t n,
                            const durable_options& opts, double seconds) {
  auto run = std::make_shared<writer_run>();
  run->rt = &rt;
  run->ws = &ws;
  run->ops_each = opts.ops > 0 ? std::max<uint64_t>(1, opts.ops / n) : 0;
  run->running = n;
  for (size_t i = 0; i < n; ++i) {
    auto& w = ws[i];
    w.acks = w.errors = w.wrong_replies = 0;
    w.first_problem.clear();
    w.latency_us.clear();
  }
  auto finished = run->finished.get_future();
  auto c0 = read_commits(m);
  auto cpu0 = cpu_seconds();
  auto t0 = clock_type::now();
  run->deadline =
    t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
  for (size_t i = 0; i < n; ++i)
    issue(run, i);
  if (finished.wait_for(wait_max) != std::future_status::ready)
    die("writers did not finish in time");
  auto cpu1 = cpu_seconds();
  auto c1 = read_commits(m);
  writers_figures f;
  f.writers = n;
  auto t1 = t0;
  std::vector<float> lat;
  for (size_t i = 0; i < n; ++i) {
    auto& w = ws[i];
    t1 = std::max(t1, w.ended);
    f.acks += w.acks;
    f.errors += w.errors;
    f.wrong_replies += w.wrong_replies;
    if (f.first_problem.empty() && !w.first_problem.empty())
      f.first_problem = w.id.str() + ": " + w.first_problem;
    lat.insert(lat.end(), w.latency_us.begin(), w.latency_us.end());
  }
  std::sort(lat.begin(), lat.end());
  f.seconds = seconds_since(t0, t1);
  f.acks_per_s = static_cast<double>(f.acks) / f.seconds;
  f.p50_ms = quantile(lat, 0.50) / 1000;
  f.p99_ms = quantile(lat, 0.99) / 1000;
  f.max_ms = lat.empty() ? 0 : lat.back() / 1000;
  auto commits = c1.commits - c0.commits;
  f.commits_per_s = commits / f.seconds;
  f.writes_per_commit = commits > 0 ? (c1.writes - c0.writes) / commits : 0;
  f.commit_ms_mean = commits > 0 ? 1000 * (c1.write_seconds - c0.write_seconds) / commits : 0;
  f.in_write_share = (c1.write_seconds - c0.write_seconds) / f.seconds;
  f.commits_over_5ms =
    commits > 0 ? 1 - (c1.commits_within_5ms - c0.commits_within_5ms) / commits : 0;
  auto appends = c1.appends - c0.appends;
  f.append_ms_mean = appends > 0 ? 1000 * (c1.append_seconds - c0.append_seconds) / appends : 0;
  f.cpu_cores = (cpu1 - cpu0) / f.seconds;
  return f;
}

// -- 2. RocksDB alone ----------------------------------------------------------------------

struct sync_puts {
  double puts_per_s = 0;
  double p50_ms = 0; ///< of one synced Write
  double p99_ms = 0;
};

/// One thread writing synced WriteBatches of `batch` puts of `value_bytes` each under
/// journal-like keys, `n` puts in all or for `seconds_max`, whichever ends first.
sync_puts rocksdb_sync_puts(rocksdb::DB& db, uint64_t n, uint64_t batch, size_t value_bytes,
                            double seconds_max, uint64_t& next_seq) {
  std::string value(value_bytes, '\0');
  for (size_t i = 0; i < value.size(); ++i)
    value[i] = static_cast<char>((i * 131 + 7) & 0xff);
  rocksdb::WriteOptions wo;
  wo.sync = true;        // durable before Write returns: the figure to compare with
  wo.disableWAL = false; // the WAL is what makes it durable
  auto t0 = clock_type::now();
  uint64_t done = 0;
  std::vector<float> lat_us;
  while (done < n && seconds_since(t0) < seconds_max) {
    rocksdb::WriteBatch wb;
    for (uint64_t i = 0; i < batch; ++i) {
      auto key = store::journal_key("bench/rocksdb" + std::to_string(i % 256), ++next_seq);
      value[0] = static_cast<char>(next_seq & 0xff);
      auto s = wb.Put(key, value);
      if (!s.ok())
        die("rocksdb WriteBatch::Put: " + s.ToString());
    }
    auto w0 = clock_type::now();
    auto s = db.Write(wo, &wb);
    if (!s.ok())
      die("rocksdb Write: " + s.ToString());
    lat_us.push_back(static_cast<float>(
      std::chrono::duration<double, std::micro>(clock_type::now() - w0).count()));
    done += batch;
  }
  std::sort(lat_us.begin(), lat_us.end());
  return {static_cast<double>(done) / seconds_since(t0), quantile(lat_us, 0.5) / 1000,
          quantile(lat_us, 0.99) / 1000};
}

// -- 4. the footprint on disk --------------------------------------------------------------

struct disk_figures {
  disk_usage after_flush;
  disk_usage after_compaction;
  uint64_t sst_after_flush = 0;
  uint64_t sst_after_compaction = 0;
  json sst_per_cf = json::object();
  uint64_t logical_bytes = 0;
};

/// Opens the closed store's database with plain RocksDB (the store's table settings), flushes
/// the memtables, measures, compacts everything, measures again.
disk_figures measure_disk(const std::string& path) {
  rocksdb::Options o;
  o.create_if_missing = false;
  std::vector<std::string> names;
  auto s = rocksdb::DB::ListColumnFamilies(o, path, &names);
  if (!s.ok())
    die("listing column families of " + path + ": " + s.ToString());
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10)); // as storage/store.cpp
  rocksdb::ColumnFamilyOptions cfo;
  cfo.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (auto& n : names)
    cfs.emplace_back(n, cfo);
  std::vector<rocksdb::ColumnFamilyHandle*> hs;
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::Open(rocksdb::DBOptions{o}, path, cfs, &hs, &raw);
  if (!s.ok())
    die("opening " + path + " with plain RocksDB: " + s.ToString());
  std::unique_ptr<rocksdb::DB> db{raw};
  auto sst = [&] {
    uint64_t total = 0;
    for (auto h : hs) {
      uint64_t v = 0;
      db->GetIntProperty(h, "rocksdb.total-sst-files-size", &v);
      total += v;
    }
    return total;
  };
  disk_figures out;
  s = db->Flush(rocksdb::FlushOptions{}, hs);
  if (!s.ok())
    die("flush: " + s.ToString());
  out.sst_after_flush = sst();
  out.after_flush = du(path);
  rocksdb::CompactRangeOptions co;
  co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (auto h : hs) {
    s = db->CompactRange(co, h, nullptr, nullptr);
    if (!s.ok())
      die("compaction: " + s.ToString());
  }
  out.sst_after_compaction = sst();
  out.after_compaction = du(path);
  for (size_t i = 0; i < hs.size(); ++i) {
    uint64_t v = 0;
    db->GetIntProperty(hs[i], "rocksdb.total-sst-files-size", &v);
    out.sst_per_cf[names[i]] = v;
    std::unique_ptr<rocksdb::Iterator> it{db->NewIterator(rocksdb::ReadOptions{}, hs[i])};
    for (it->SeekToFirst(); it->Valid(); it->Next())
      out.logical_bytes += it->key().size() + it->value().size();
  }
  for (auto h : hs)
    db->DestroyColumnFamilyHandle(h);
  s = db->Close();
  if (!s.ok())
    die("closing " + path + ": " + s.ToString());
  return out;
}

/// The end of a scenario: the load average and "ok" into `out`, `out` to `json_file` (if
/// any), the data directory removed unless `keep`; "OK"/"FAIL" printed. The exit code.
int finish_run(nlohmann::json& out, bool ok, const std::string& json_file, bool keep,
               const std::string& data_dir) {
  out["load_average_end"] = load_average();
  out["ok"] = ok;
  if (!json_file.empty())
    std::ofstream{json_file} << out.dump(2) << "\n";
  if (keep) {
    std::printf("data dir kept: %s\n", data_dir.c_str());
  } else {
    std::error_code ec;
    std::filesystem::remove_all(data_dir, ec);
  }
  std::printf("%s\n", ok ? "OK" : "FAIL");
  return ok ? 0 : 1;
}

std::string fmt(double v, int decimals = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

} // namespace

int run_durable(const durable_options& opts) {
  bool ok = true;
  json out{{"scenario", "durable"}};
  // -- the data directory
  std::string tmpl = opts.parent_dir + "/hive-bench-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr)
    die("cannot make a temporary directory under " + opts.parent_dir);
  std::string data_dir = buf.data();
  auto fs_name = filesystem_of(data_dir);
  out["data_dir"] = data_dir;
  out["filesystem"] = fs_name;
  auto base_cfg = bench_config(opts);
  log::init(base_cfg.node.name, base_cfg.log.level);
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, base_cfg);
  caf::actor_system sys{sys_cfg};
  // The size of the record one add journals (key + Cap'n Proto event with its checksum).
  records::event_record sample_ev;
  sample_ev.hdr = {"bench/c0", 1, 1};
  sample_ev.payload = "1";
  auto record_bytes = records::encode(sample_ev).size();
  auto key_bytes = store::journal_key("bench/c0", 1).size();
  std::cerr << "agent-bench durable: data dir " << data_dir << " on " << fs_name << ", "
            << std::thread::hardware_concurrency() << " cores, " << scheduler_threads(base_cfg)
            << " scheduler threads, " << opts.runs << " runs, journal record " << record_bytes
            << " + key " << key_bytes << " bytes\n";
  std::printf("data dir: %s\nfilesystem: %s\nload average at start: %s\n", data_dir.c_str(),
              fs_name.c_str(), load_average().c_str());
  out["load_average_start"] = load_average();
  out["runs"] = opts.runs;
  out["scheduler_threads"] = scheduler_threads(base_cfg);
  out["journal_record_bytes"] = record_bytes;
  out["journal_key_bytes"] = key_bytes;

  // -- 1 + 2: writers, and RocksDB alone, alternating
  size_t writers_max = *std::max_element(opts.writers.begin(), opts.writers.end());
  auto m1 = std::make_shared<metrics>();
  auto db1 = open_store(base_cfg, data_dir + "/writers", m1);
  auto rt1 = start_runtime(sys, base_cfg, m1, db1);
  std::vector<writer> ws(writers_max);
  {
    auto ids = make_ids("c", writers_max);
    for (size_t i = 0; i < writers_max; ++i)
      ws[i].id = ids[i];
    auto made = spawn_counters(*rt1, ids);
    if (made.failed > 0)
      die("spawning counters: " + made.first_error);
  }
  rocksdb::DB* rdb_raw = nullptr;
  {
    rocksdb::Options o;
    o.create_if_missing = true;
    auto s = rocksdb::DB::Open(o, data_dir + "/rocksdb-alone", &rdb_raw);
    if (!s.ok())
      die("opening the plain RocksDB: " + s.ToString());
  }
  std::unique_ptr<rocksdb::DB> rdb{rdb_raw};
  uint64_t rdb_seq = 0;
  // Warm-up: the largest writer count for a second (its acks count for the final check).
  (void)run_writers(*rt1, *m1, ws, writers_max, opts, std::min(1.0, opts.seconds));
  std::vector<std::vector<writers_figures>> runs(opts.writers.size());
  // RocksDB alone next to every writers run: the disk's speed drifts on a shared machine.
  auto rocksdb_alone = [&] {
    rocksdb_figures rf;
    auto single = rocksdb_sync_puts(*rdb, opts.rocksdb_puts, 1, record_bytes, 2.0, rdb_seq);
    auto batched = rocksdb_sync_puts(*rdb, opts.rocksdb_puts * opts.rocksdb_batch,
                                     opts.rocksdb_batch, record_bytes, 2.0, rdb_seq);
    rf.single_puts_per_s = single.puts_per_s;
    rf.single_p99_ms = single.p99_ms;
    rf.batched_puts_per_s = batched.puts_per_s;
    rf.batched_p50_ms = batched.p50_ms;
    rf.batched_p99_ms = batched.p99_ms;
    return rf;
  };
  for (int r = 0; r < opts.runs; ++r) {
    std::vector<size_t> order(opts.writers.size());
    for (size_t k = 0; k < order.size(); ++k)
      order[k] = r % 2 == 0 ? k : order.size() - 1 - k;
    for (auto k : order) {
      rocksdb_figures rf;
      if (r % 2 == 0)
        rf = rocksdb_alone();
      auto f = run_writers(*rt1, *m1, ws, opts.writers[k], opts, opts.seconds);
      if (r % 2 == 1)
        rf = rocksdb_alone();
      f.rocks = rf;
      if (f.errors > 0 || f.wrong_replies > 0) {
        ok = false;
        std::cerr << "\nFAIL: " << f.errors << " errors, " << f.wrong_replies
                  << " wrong replies with " << f.writers << " writers; first: " << f.first_problem
                  << "\n";
      }
      std::cerr << "  run " << (r + 1) << "/" << opts.runs << "  writers " << f.writers << ": "
                << uint64_t(f.acks_per_s) << " acks/s, p50 " << fmt(f.p50_ms, 2) << " ms, p99 "
                << fmt(f.p99_ms, 2) << " ms, " << fmt(f.writes_per_commit, 1) << " writes/commit, "
                << uint64_t(f.commits_per_s) << " commits/s, commit " << fmt(f.commit_ms_mean, 3)
                << " ms (" << fmt(100 * f.commits_over_5ms, 1) << "% > 5 ms, writer in it "
                << fmt(100 * f.in_write_share) << "%), append " << fmt(f.append_ms_mean, 2)
                << " ms, " << fmt(f.cpu_cores, 2) << " cores; rocksdb alone "
                << uint64_t(rf.single_puts_per_s) << " synced puts/s (p99 "
                << fmt(rf.single_p99_ms, 2) << " ms), " << uint64_t(rf.batched_puts_per_s)
                << " in batches of " << opts.rocksdb_batch << " (batch p50 "
                << fmt(rf.batched_p50_ms, 2) << " ms, p99 " << fmt(rf.batched_p99_ms, 2)
                << " ms)\n";
      runs[k].push_back(f);
    }
  }
  rdb.reset();
  // Check: every counter holds exactly the acks its writer counted, live and after a reopen.
  auto check_counters = [&](node_runtime& rt, const char* when) {
    uint64_t bad = 0;
    uint64_t total = 0;
    std::string first;
    for (size_t i = 0; i < ws.size(); ++i) {
      auto v = ask_sync(rt, ws[i].id, get_body, i);
      total += ws[i].value;
      if (!v || *v != value_reply(ws[i].value)) {
        if (bad++ == 0)
          first = ws[i].id.str() + ": " + (v ? *v : describe(v.error())) + ", expected "
            + value_reply(ws[i].value);
      }
    }
    bool good = bad == 0;
    std::printf("check %s: %s (%zu counters, %llu acks in total%s%s)\n", when, good ? "OK" : "FAIL",
                ws.size(), static_cast<unsigned long long>(total),
                good ? "" : "; first wrong: ", first.c_str());
    out["check"][when] = good;
    ok = ok && good;
  };
  check_counters(*rt1, "live");
  stop_runtime(rt1);
  close_store(db1);
  db1 = open_store(base_cfg, data_dir + "/writers", m1);
  rt1 = start_runtime(sys, base_cfg, m1, db1);
  check_counters(*rt1, "after_reopen");
  stop_runtime(rt1);
  close_store(db1);

  // RocksDB alone over every measurement, and the ratios: per W, the median of the ratios of
  // each run to the RocksDB figure measured next to it.
  std::vector<double> single_all;
  std::vector<double> batched_all;
  std::vector<double> single_p99_all;
  std::vector<double> batched_p50_all;
  std::vector<double> batched_p99_all;
  for (auto& per_w : runs)
    for (auto& f : per_w) {
      single_all.push_back(f.rocks.single_puts_per_s);
      batched_all.push_back(f.rocks.batched_puts_per_s);
      single_p99_all.push_back(f.rocks.single_p99_ms);
      batched_p50_all.push_back(f.rocks.batched_p50_ms);
      batched_p99_all.push_back(f.rocks.batched_p99_ms);
    }
  auto m_single = median(single_all);
  auto m_batched = median(batched_all);
  auto minmax = [](const std::vector<double>& v) {
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    return fmt(*lo) + ".." + fmt(*hi);
  };
  std::printf("\nrocksdb alone, 1 thread, sync=1, %zu-byte values (medians over %zu "
              "measurements, range in brackets):\n  single puts: %.0f puts/s (%s), put p99 %.2f "
              "ms\n  WriteBatches of %llu: %.0f puts/s (%s), batch p50 %.2f ms, p99 %.2f ms\n",
              record_bytes, single_all.size(), m_single, minmax(single_all).c_str(),
              median(single_p99_all), static_cast<unsigned long long>(opts.rocksdb_batch),
              m_batched, minmax(batched_all).c_str(), median(batched_p50_all),
              median(batched_p99_all));
  std::printf("\n%-7s %9s %7s %7s %7s %8s %8s %10s %9s %9s %6s %8s %9s %5s\n", "writers", "acks/s",
              "p50 ms", "p99 ms", "max ms", "vs sync", "vs batch", "writes/cmt", "commits/s",
              "commit ms", ">5 ms", "in write", "append ms", "cores");
  std::optional<std::pair<double, double>> goal; // acks/s and p99 at 256 writers
  json jw = json::array();
  for (size_t k = 0; k < opts.writers.size(); ++k) {
    auto pick = [&](auto field) {
      std::vector<double> v;
      for (auto& f : runs[k])
        v.push_back(field(f));
      return median(v);
    };
    auto acks = pick([](auto& f) { return f.acks_per_s; });
    auto p50 = pick([](auto& f) { return f.p50_ms; });
    auto p99 = pick([](auto& f) { return f.p99_ms; });
    auto mx = pick([](auto& f) { return f.max_ms; });
    auto wpc = pick([](auto& f) { return f.writes_per_commit; });
    auto cps = pick([](auto& f) { return f.commits_per_s; });
    auto cms = pick([](auto& f) { return f.commit_ms_mean; });
    auto inw = pick([](auto& f) { return f.in_write_share; });
    auto ams = pick([](auto& f) { return f.append_ms_mean; });
    auto cores = pick([](auto& f) { return f.cpu_cores; });
    auto slow = pick([](auto& f) { return f.commits_over_5ms; });
    auto vs_single = pick([](auto& f) { return f.acks_per_s / f.rocks.single_puts_per_s; });
    auto vs_batched = pick([](auto& f) { return f.acks_per_s / f.rocks.batched_puts_per_s; });
    std::printf(
      "%-7llu %9.0f %7.2f %7.2f %7.2f %7.2fx %7.2fx %10.1f %9.0f %9.3f %5.1f%% %7.0f%% %9.2f "
      "%5.2f\n",
      static_cast<unsigned long long>(opts.writers[k]), acks, p50, p99, mx, vs_single, vs_batched,
      wpc, cps, cms, 100 * slow, 100 * inw, ams, cores);
    json per_run = json::array();
    for (auto& f : runs[k])
      per_run.push_back(f.to_json());
    jw.push_back({{"writers", opts.writers[k]},
                  {"median",
                   {{"acks_per_s", acks},
                    {"p50_ms", p50},
                    {"p99_ms", p99},
                    {"max_ms", mx},
                    {"writes_per_commit", wpc},
                    {"commits_per_s", cps},
                    {"commit_ms_mean", cms},
                    {"in_write_share", inw},
                    {"append_ms_mean", ams},
                    {"commits_over_5ms", slow},
                    {"cpu_cores", cores}}},
                  {"ratio_vs_rocksdb_sync_puts", vs_single},
                  {"ratio_vs_rocksdb_batched_puts", vs_batched},
                  {"ratio_of_medians_vs_rocksdb_sync_puts", acks / m_single},
                  {"runs", per_run}});
    if (opts.writers[k] == 256)
      goal = std::pair{acks, p99};
  }
  std::printf("(vs sync / vs batch: the median over runs of acks/s divided by RocksDB alone "
              "measured next to that run, single synced puts / synced batches of %llu)\n",
              static_cast<unsigned long long>(opts.rocksdb_batch));
  if (goal) {
    bool met = goal->first >= 50000 && goal->second < 10;
    std::printf("goal (256 writers: >= 50000 acks/s with p99 < 10 ms): %s (%.0f acks/s, p99 "
                "%.2f ms)\n",
                met ? "met" : "NOT met", goal->first, goal->second);
    out["goal_met"] = met;
  }
  out["writers"] = jw;
  out["rocksdb_sync_puts_per_s_median"] = m_single;
  out["rocksdb_batched_puts_per_s_median"] = m_batched;
  out["rocksdb_batch"] = opts.rocksdb_batch;
  out["rocksdb_single_p99_ms_median"] = median(single_p99_all);
  out["rocksdb_batched_p50_ms_median"] = median(batched_p50_all);
  out["rocksdb_batched_p99_ms_median"] = median(batched_p99_all);

  // -- 3. activation latency of passivated agents
  if (opts.activation_agents > 0) {
    auto cfg = base_cfg;
    cfg.persistence.passivate_idle_ms = 50;
    auto m = std::make_shared<metrics>();
    auto db = open_store(cfg, data_dir + "/activation", m);
    auto rt = start_runtime(sys, cfg, m, db);
    auto n = opts.activation_agents;
    auto ids = make_ids("a", n);
    auto made = spawn_counters(*rt, ids);
    if (made.failed > 0)
      die("spawning counters: " + made.first_error);
    auto added = ask_all(*rt, ids, add_body, opts.activation_adds,
                         [](uint64_t, uint64_t r) { return value_reply(r + 1); });
    if (added.failed > 0)
      die("adding to counters: " + added.first_error);
    auto t0 = clock_type::now();
    wait_agent_count_at_most(*rt, 0, "passivation");
    auto passivate_s = seconds_since(t0);
    auto activations0 = metric_value(m->render(), "hive_activations_total");
    std::vector<float> cold;
    std::vector<float> warm;
    uint64_t bad = 0;
    std::string first;
    auto want = value_reply(opts.activation_adds);
    for (uint64_t i = 0; i < n; ++i) {
      auto a = clock_type::now();
      auto v1 = ask_sync(*rt, ids[i], get_body, i);
      auto b = clock_type::now();
      auto v2 = ask_sync(*rt, ids[i], get_body, i);
      auto c = clock_type::now();
      cold.push_back(static_cast<float>(std::chrono::duration<double, std::micro>(b - a).count()));
      warm.push_back(static_cast<float>(std::chrono::duration<double, std::micro>(c - b).count()));
      for (auto* v : {&v1, &v2})
        if ((!*v || **v != want) && bad++ == 0)
          first = ids[i].str() + ": " + (*v ? **v : describe(v->error()));
    }
    auto activations = metric_value(m->render(), "hive_activations_total") - activations0;
    std::sort(cold.begin(), cold.end());
    std::sort(warm.begin(), warm.end());
    bool good = bad == 0 && activations == static_cast<double>(n);
    ok = ok && good;
    std::printf("\nactivation: %llu counters with %llu adds each, passivated (idle 50 ms) in "
                "%.2f s; asked one by one:\n",
                static_cast<unsigned long long>(n),
                static_cast<unsigned long long>(opts.activation_adds), passivate_s);
    std::printf("  first ask (activates): p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
                quantile(cold, 0.5) / 1000, quantile(cold, 0.99) / 1000, cold.back() / 1000);
    std::printf("  second ask (live):     p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
                quantile(warm, 0.5) / 1000, quantile(warm, 0.99) / 1000, warm.back() / 1000);
    std::printf("  check: %s (%.0f activations for %llu agents%s%s)\n", good ? "OK" : "FAIL",
                activations, static_cast<unsigned long long>(n), bad ? "; first wrong: " : "",
                first.c_str());
    out["activation"] = {{"agents", n},
                         {"adds_each", opts.activation_adds},
                         {"passivate_all_s", passivate_s},
                         {"first_ask_p50_ms", quantile(cold, 0.5) / 1000},
                         {"first_ask_p99_ms", quantile(cold, 0.99) / 1000},
                         {"first_ask_max_ms", cold.back() / 1000},
                         {"live_ask_p50_ms", quantile(warm, 0.5) / 1000},
                         {"live_ask_p99_ms", quantile(warm, 0.99) / 1000},
                         {"activations", activations},
                         {"check", good}};
    stop_runtime(rt);
    close_store(db);
  }

  // -- 4. footprint: RSS per live idle agent, bytes on disk per passivated agent
  if (opts.footprint_agents > 0) {
    auto n = opts.footprint_agents;
    auto ids = make_ids("f", n);
    json fp{{"agents", n}};
    // Journaled counters: spawned and given one add each, all live and idle. Measured first
    // (a heap that held agents before would be reused and hide their cost).
    auto cfg = base_cfg;
    cfg.persistence.passivate_idle_ms = 3600000;
    auto m = std::make_shared<metrics>();
    auto db = open_store(cfg, data_dir + "/footprint", m);
    auto rt = start_runtime(sys, cfg, m, db);
    auto memtables = [&] {
      auto st = db->stats_json();
      if (!st)
        die("store stats: " + describe(st.error()));
      auto j = json::parse(*st);
      double sum = 0;
      for (auto& [cf, v] : j.items())
        if (v.is_object())
          sum += v.value("memtable_bytes", 0.0);
      return sum;
    };
    auto actors_before = sys.registry().running();
    auto mem0 = memory_now();
    auto mt0 = memtables();
    auto t0 = clock_type::now();
    auto made = spawn_counters(*rt, ids);
    if (made.failed > 0)
      die("spawning counters: " + made.first_error);
    auto spawn_s = seconds_since(t0);
    t0 = clock_type::now();
    auto added = ask_all(*rt, ids, add_body, 1, [](uint64_t, uint64_t) { return value_reply(1); });
    if (added.failed > 0)
      die("adding to counters: " + added.first_error);
    auto add_s = seconds_since(t0);
    std::this_thread::sleep_for(std::chrono::milliseconds{200}); // counter flushes, timers
    auto live = rt->agent_count();
    auto mem1 = memory_now();
    auto mt1 = memtables();
    auto dn = static_cast<double>(n);
    auto rss_per = mem1.rss_delta(mem0) / dn;
    auto heap_per = mem1.heap_delta(mem0) / dn;
    auto mt_per = (mt1 - mt0) / dn;
    std::printf("\nfootprint, %llu counters:\n  live, journaled (%zu live, idle): %.0f bytes RSS "
                "per agent (heap in use: %.0f), of which RocksDB memtables %.0f; spawned in %.1f "
                "s, one add each in %.1f s (%.0f adds/s with %llu in flight)\n",
                static_cast<unsigned long long>(n), live, rss_per, heap_per, mt_per, spawn_s, add_s,
                dn / add_s, static_cast<unsigned long long>(setup_window));
    fp["journaled_live_rss_bytes_per_agent"] = rss_per;
    fp["journaled_live_heap_bytes_per_agent"] = heap_per;
    fp["journaled_memtable_bytes_per_agent"] = mt_per;
    fp["journaled_spawn_s"] = spawn_s;
    fp["journaled_add_s"] = add_s;
    stop_runtime(rt);
    settle(sys, actors_before);
    // Ephemeral counters (no store): what the runtime itself keeps per live agent.
    {
      auto me = std::make_shared<metrics>();
      auto rte = start_runtime(sys, base_cfg, me, nullptr);
      auto e0 = memory_now();
      t0 = clock_type::now();
      auto made_e = spawn_counters(*rte, ids);
      if (made_e.failed > 0)
        die("spawning counters: " + made_e.first_error);
      auto spawn_e = seconds_since(t0);
      std::this_thread::sleep_for(std::chrono::milliseconds{200});
      auto e1 = memory_now();
      std::printf("  live, ephemeral (no store): %.0f bytes RSS per agent (heap in use: %.0f; "
                  "spawned in %.1f s; measured after the journaled ones, on a heap they freed)\n",
                  e1.rss_delta(e0) / dn, e1.heap_delta(e0) / dn, spawn_e);
      fp["ephemeral_live_rss_bytes_per_agent"] = e1.rss_delta(e0) / dn;
      fp["ephemeral_live_heap_bytes_per_agent"] = e1.heap_delta(e0) / dn;
      fp["ephemeral_spawn_s"] = spawn_e;
      stop_runtime(rte);
      settle(sys, actors_before);
    }
    // Plain CAF actors with an empty behaviour: the floor under any agent.
    {
      std::vector<caf::actor> raw;
      raw.reserve(n);
      auto r0 = memory_now();
      for (uint64_t i = 0; i < n; ++i)
        raw.push_back(sys.spawn([]() -> caf::behavior { return {[](int32_t) {}}; }));
      std::this_thread::sleep_for(std::chrono::milliseconds{200});
      auto r1 = memory_now();
      std::printf("  plain CAF actors (floor): %.0f bytes RSS per actor (heap in use: %.0f)\n",
                  r1.rss_delta(r0) / dn, r1.heap_delta(r0) / dn);
      fp["caf_actor_rss_bytes"] = r1.rss_delta(r0) / dn;
      fp["caf_actor_heap_bytes"] = r1.heap_delta(r0) / dn;
      for (auto& a : raw)
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
      raw.clear();
      settle(sys, actors_before);
    }
    // A restarted node with a short idle time: each counter is activated by a get (checking
    // its value survived) and passivated a second later, leaving meta + snapshot on disk. (Not
    // 50 ms: with 512 activations queued, the router's request could reach an agent that had
    // already passivated, which fails the ask with request_receiver_down.)
    cfg.persistence.passivate_idle_ms = 1000;
    rt = start_runtime(sys, cfg, m, db);
    t0 = clock_type::now();
    auto got = ask_all(*rt, ids, get_body, 1, [](uint64_t, uint64_t) { return value_reply(1); });
    auto activate_s = seconds_since(t0);
    t0 = clock_type::now();
    wait_agent_count_at_most(*rt, 0, "passivation");
    auto passivate_s = seconds_since(t0);
    bool good = got.failed == 0;
    ok = ok && good;
    std::printf("  check after restart: %s (%llu activated and read in %.1f s with %llu in "
                "flight, all passivated %.1f s later%s%s)\n",
                good ? "OK" : "FAIL", static_cast<unsigned long long>(n), activate_s,
                static_cast<unsigned long long>(setup_window), passivate_s,
                good ? "" : "; failures: ", got.summary().c_str());
    fp["check_after_restart"] = good;
    fp["check_after_restart_failures"] = got.summary();
    fp["activate_all_s"] = activate_s;
    fp["passivate_all_s"] = passivate_s;
    stop_runtime(rt);
    auto db_path = db->path();
    close_store(db);
    auto d = measure_disk(db_path);
    std::printf(
      "  passivated, on disk: %.0f bytes per agent in SST files after a flush (%.0f "
      "after a full compaction; %.0f bytes of keys + values); du of the db dir: %.0f "
      "after the flush, %.0f after compaction\n",
      static_cast<double>(d.sst_after_flush) / dn, static_cast<double>(d.sst_after_compaction) / dn,
      static_cast<double>(d.logical_bytes) / dn, static_cast<double>(d.after_flush.allocated) / dn,
      static_cast<double>(d.after_compaction.allocated) / dn);
    std::printf("  SST bytes per column family after compaction:");
    for (auto& [cf, v] : d.sst_per_cf.items())
      std::printf(" %s %.0f/agent", cf.c_str(), v.get<double>() / dn);
    std::printf("\n");
    fp["sst_bytes_per_agent_after_flush"] = static_cast<double>(d.sst_after_flush) / dn;
    fp["sst_bytes_per_agent_after_compaction"] = static_cast<double>(d.sst_after_compaction) / dn;
    fp["logical_bytes_per_agent"] = static_cast<double>(d.logical_bytes) / dn;
    fp["du_bytes_per_agent_after_flush"] = static_cast<double>(d.after_flush.allocated) / dn;
    fp["du_bytes_per_agent_after_compaction"] =
      static_cast<double>(d.after_compaction.allocated) / dn;
    fp["sst_bytes_per_cf_after_compaction"] = d.sst_per_cf;
    out["footprint"] = fp;
  }

  std::printf("load average at end: %s\n", load_average().c_str());
  return finish_run(out, ok, opts.json_file, opts.keep, data_dir);
}

// -- agent-bench density ---------------------------------------------------------------------

namespace {

/// Prints "what: done/total (rate/s, elapsed)" to stderr every second while alive: in place
/// on a terminal, one line each 10 s otherwise.
class progress {
public:
  progress(std::string what, uint64_t total, const std::atomic<uint64_t>& done)
      : what_(std::move(what)), total_(total), done_(done), tty_(isatty(2) != 0),
        t0_(clock_type::now()), thread_([this] { loop(); }) {}

  ~progress() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    print(true);
  }

  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;

private:
  void loop() {
    std::unique_lock<std::mutex> guard{mtx_};
    int ticks = 0;
    while (!cv_.wait_for(guard, std::chrono::seconds{1}, [this] { return stop_; }))
      if (tty_ || ++ticks % 10 == 0)
        print(false);
  }

  void print(bool last) {
    auto n = done_.load();
    auto s = seconds_since(t0_);
    std::fprintf(stderr, "%s  %s: %llu/%llu (%.0f/s, %.0f s)%s", tty_ ? "\r" : "", what_.c_str(),
                 static_cast<unsigned long long>(n), static_cast<unsigned long long>(total_),
                 s > 0 ? static_cast<double>(n) / s : 0.0, s, tty_ && !last ? "" : "\n");
    std::fflush(stderr);
  }

  std::string what_;
  uint64_t total_;
  const std::atomic<uint64_t>& done_;
  bool tty_;
  clock_type::time_point t0_;
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

agent_id density_id(char prefix, uint64_t i) {
  auto id = parse_agent_id("bench/" + std::string(1, prefix) + std::to_string(i));
  if (!id)
    die("bad agent id: " + describe(id.error()));
  return std::move(*id);
}

/// Spawns counters `bench/<prefix><i>` for i < n and gives each one add, `window` operations in
/// flight, showing progress.
outcome create_counters(node_runtime& rt, char prefix, uint64_t n, uint64_t window,
                        const std::string& what) {
  std::atomic<uint64_t> done_count{0};
  progress p{what, n, done_count};
  return windowed(n, window, [&](uint64_t i, const done_fn& done) {
    auto id = density_id(prefix, i);
    auto finish = [done, &done_count](const std::string& err) {
      ++done_count;
      done(err);
    };
    rt.spawn(
      spawn_request{id, "counter", json::object(), false, restart_type::permanent, i},
      [&rt, id, i, finish](caf::expected<agent_view> v) {
        if (!v)
          return finish(describe(v.error()));
        rt.ask(id, make_call(add_body, i), ask_timeout, [finish](caf::expected<std::string> reply) {
          if (!reply)
            return finish(describe(reply.error()));
          finish(*reply == value_reply(1) ? std::string{} : "reply " + *reply + ", expected 1");
        });
      });
  });
}

/// Asks `get` of a seeded sample of `k` counters out of `n`; returns the outcome and the ask
/// latencies (ms, sorted).
std::pair<outcome, std::vector<float>> check_sample(node_runtime& rt, char prefix, uint64_t n,
                                                    uint64_t k, uint64_t seed) {
  std::mt19937_64 rng{seed};
  std::uniform_int_distribution<uint64_t> pick{0, n - 1};
  outcome out;
  std::vector<float> lat_ms;
  for (uint64_t j = 0; j < std::min(k, n); ++j) {
    auto i = pick(rng);
    auto t0 = clock_type::now();
    auto r = ask_sync(rt, density_id(prefix, i), get_body, i);
    lat_ms.push_back(static_cast<float>(seconds_since(t0) * 1000));
    std::string err = !r ? describe(r.error())
                         : (*r == value_reply(1) ? std::string{} : "reply " + *r + ", expected 1");
    if (!err.empty()) {
      if (out.failed++ == 0)
        out.first_error = "bench/" + std::string(1, prefix) + std::to_string(i) + ": " + err;
      ++out.errors[err.substr(0, 80)];
    }
  }
  std::sort(lat_ms.begin(), lat_ms.end());
  return {out, lat_ms};
}

std::string make_data_dir(const std::string& parent) {
  std::string tmpl = parent + "/hive-density-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr)
    die("cannot make a temporary directory under " + parent);
  return buf.data();
}

constexpr uint64_t live_goal_agents = 1000000;
constexpr uint64_t live_goal_rss_bytes = uint64_t{2} << 30;
constexpr uint64_t passivated_goal_agents = 10000000;

} // namespace

int run_density(const density_options& opts) {
  bool ok = true;
  json out{{"scenario", "density"}};
  auto data_dir = make_data_dir(opts.parent_dir);
  auto fs_name = filesystem_of(data_dir);
  auto seed = opts.seed != 0 ? opts.seed
                             : static_cast<uint64_t>(clock_type::now().time_since_epoch().count());
  durable_options base;
  base.settings = opts.settings;
  base.footprint_agents =
    std::max(opts.live_agents, std::min<uint64_t>(opts.passivated_agents, 1000000));
  auto cfg = bench_config(base);
  cfg.quota.agents_max = std::max<int64_t>(cfg.quota.agents_max, cfg.agents.agents_max);
  log::init(cfg.node.name, cfg.log.level);
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  std::printf("agent-bench density: data dir %s on %s, %u cores, %zu scheduler threads, sample "
              "seed %llu (--seed), load average at start %s\n",
              data_dir.c_str(), fs_name.c_str(), std::thread::hardware_concurrency(),
              static_cast<size_t>(scheduler_threads(cfg)), static_cast<unsigned long long>(seed),
              load_average().c_str());
  std::fflush(stdout);
  out["data_dir"] = data_dir;
  out["filesystem"] = fs_name;
  out["seed"] = seed;
  out["load_average_start"] = load_average();
  auto mem_start = memory_now();
  out["process_rss_bytes_at_start"] = mem_start.rss;

  // -- 1. live idle agents: journaled counters, one add each, never passivated; once with
  // their actors running, once hibernated (agents.hibernate_idle_ms: actor released, state in
  // memory, still in the directory and supervised)
  auto live_phase = [&](uint64_t hibernate_ms) -> json {
    auto n = opts.live_agents;
    bool hib = hibernate_ms > 0;
    auto lcfg = cfg;
    lcfg.persistence.passivate_idle_ms = 0;
    lcfg.agents.hibernate_idle_ms = static_cast<int64_t>(hibernate_ms);
    auto m = std::make_shared<metrics>();
    auto db = open_store(lcfg, data_dir + "/live", m);
    auto rt = start_runtime(sys, lcfg, m, db);
    auto mem0 = memory_now();
    auto t0 = clock_type::now();
    auto made =
      create_counters(*rt, 'l', n, opts.window,
                      hib ? "live (hibernating): spawned + one add" : "live: spawned + one add");
    auto create_s = seconds_since(t0);
    if (made.failed > 0)
      die("creating live counters: " + std::to_string(made.failed)
          + " failed, first: " + made.first_error);
    double hibernated = 0;
    double hibernate_wait_s = 0;
    if (hib) {
      // Wait until (nearly) all have released their actors.
      t0 = clock_type::now();
      auto dn = static_cast<double>(n);
      while (seconds_since(t0) < 600) {
        hibernated = metric_value(m->render(), "hive_agents_hibernated");
        if (hibernated >= dn * 0.999)
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds{200});
      }
      hibernate_wait_s = seconds_since(t0);
      std::this_thread::sleep_for(std::chrono::milliseconds{300}); // the lingering actors quit
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{500}); // counter flushes, timers
    auto live = rt->agent_count();
    auto actors = metric_value(m->render(), "hive_agents_live");
    auto mem1 = memory_now();
    auto dn = static_cast<double>(n);
    auto [check, lat] = check_sample(*rt, 'l', n, opts.check_agents, seed);
    bool good = check.failed == 0 && live >= n;
    ok = ok && good;
    bool goal = n >= live_goal_agents && mem1.rss < live_goal_rss_bytes;
    std::printf(
      "\nlive idle agents (journaled counters, one add each%s): %zu in the directory, "
      "%.0f with a running actor%s\n"
      "  process RSS %.0f MiB (%.0f MiB before the runtime started), %.0f bytes RSS "
      "per agent, heap in use %.0f bytes per agent\n"
      "  created in %.1f s (%.0f/s, spawn + one durable add, %llu in flight)%s\n"
      "  check: %s (%zu sampled, get p50 %.3f ms, p99 %.3f ms%s%s)\n"
      "  goal >= %llu live idle agents under %.0f MiB RSS: %s\n",
      hib ? ", hibernated" : "", live, actors,
      hib ? (", " + std::to_string(static_cast<uint64_t>(hibernated)) + " hibernated").c_str() : "",
      static_cast<double>(mem1.rss) / (1 << 20), static_cast<double>(mem_start.rss) / (1 << 20),
      mem1.rss_delta(mem0) / dn, mem1.heap_delta(mem0) / dn, create_s, dn / create_s,
      static_cast<unsigned long long>(opts.window),
      hib ? ("; all hibernated " + fmt(hibernate_wait_s, 1) + " s after the last").c_str() : "",
      good ? "OK" : "FAIL", lat.size(), quantile(lat, 0.5), quantile(lat, 0.99), good ? "" : "; ",
      good ? "" : check.summary().c_str(), static_cast<unsigned long long>(live_goal_agents),
      static_cast<double>(live_goal_rss_bytes) / (1 << 20),
      goal ? "MET" : (n < live_goal_agents ? "not measured (fewer agents)" : "MISSED"));
    std::fflush(stdout);
    json j{{"agents", n},
           {"kind", "counter"},
           {"persistence", "journaled"},
           {"hibernate_idle_ms", hibernate_ms},
           {"live_after", live},
           {"actors_running", actors},
           {"hibernated", hibernated},
           {"rss_bytes", mem1.rss},
           {"rss_bytes_before_runtime", mem_start.rss},
           {"rss_bytes_per_agent", mem1.rss_delta(mem0) / dn},
           {"heap_bytes_per_agent", mem1.heap_delta(mem0) / dn},
           {"create_seconds", create_s},
           {"checked", lat.size()},
           {"check_failures", check.failed},
           {"get_p50_ms", quantile(lat, 0.5)},
           {"get_p99_ms", quantile(lat, 0.99)},
           {"goal_agents", live_goal_agents},
           {"goal_rss_bytes", live_goal_rss_bytes},
           {"goal_met", goal}};
    t0 = clock_type::now();
    stop_runtime(rt);
    close_store(db);
    std::printf("  stopped %zu agents and closed the store in %.1f s\n", live, seconds_since(t0));
    std::fflush(stdout);
    std::error_code ec;
    std::filesystem::remove_all(data_dir + "/live", ec);
    return j;
  };
  if (opts.live_agents > 0) {
    out["live"] = live_phase(0);
    if (opts.hibernate_idle_ms > 0)
      out["live_hibernated"] = live_phase(opts.hibernate_idle_ms);
  }

  // -- 2. passivated agents: journaled counters, one add each, passivated; left on disk
  if (opts.passivated_agents > 0) {
    auto n = opts.passivated_agents;
    auto pcfg = cfg;
    pcfg.persistence.passivate_idle_ms = static_cast<int64_t>(opts.passivate_idle_ms);
    auto m = std::make_shared<metrics>();
    auto db = open_store(pcfg, data_dir + "/passivated", m);
    auto rt = start_runtime(sys, pcfg, m, db);
    auto t0 = clock_type::now();
    auto made = create_counters(*rt, 'p', n, opts.window, "passivated: spawned + one add");
    auto create_s = seconds_since(t0);
    if (made.failed > 0)
      die("creating passivated counters: " + std::to_string(made.failed)
          + " failed, first: " + made.first_error);
    t0 = clock_type::now();
    wait_agent_count_at_most(*rt, 0, "passivation");
    auto passivate_s = seconds_since(t0);
    auto mem_idle = memory_now();
    stop_runtime(rt);
    auto db_path = db->path();
    close_store(db);
    auto disk = du(db_path);
    auto dn = static_cast<double>(n);
    // A restarted node serves them: a seeded sample is activated from disk and read.
    db = open_store(pcfg, data_dir + "/passivated", m);
    rt = start_runtime(sys, pcfg, m, db);
    auto [check, lat] = check_sample(*rt, 'p', n, opts.check_agents, seed);
    bool good = check.failed == 0;
    ok = ok && good;
    stop_runtime(rt);
    close_store(db);
    bool goal = n >= passivated_goal_agents;
    std::printf(
      "\npassivated agents (journaled counters, one add each, then idle %llu ms): %llu\n"
      "  created in %.1f s (%.0f/s), all passivated %.1f s after the last; process RSS "
      "then %.0f MiB\n"
      "  on disk (du of the database directory, store closed): %.2f GiB, %.0f bytes per "
      "agent\n"
      "  check after a restart: %s (%zu sampled, activated and read: p50 %.3f ms, p99 "
      "%.3f ms%s%s)\n"
      "  goal >= %llu passivated agents on one node's disk: %s\n",
      static_cast<unsigned long long>(opts.passivate_idle_ms), static_cast<unsigned long long>(n),
      create_s, dn / create_s, passivate_s, static_cast<double>(mem_idle.rss) / (1 << 20),
      static_cast<double>(disk.allocated) / (1 << 30), static_cast<double>(disk.allocated) / dn,
      good ? "OK" : "FAIL", lat.size(), quantile(lat, 0.5), quantile(lat, 0.99), good ? "" : "; ",
      good ? "" : check.summary().c_str(), static_cast<unsigned long long>(passivated_goal_agents),
      goal ? "MET" : "not measured (fewer agents)");
    out["passivated"] = {{"agents", n},
                         {"kind", "counter"},
                         {"disk_bytes", disk.allocated},
                         {"disk_bytes_per_agent", static_cast<double>(disk.allocated) / dn},
                         {"create_seconds", create_s},
                         {"passivate_seconds", passivate_s},
                         {"rss_bytes_all_passivated", mem_idle.rss},
                         {"checked", lat.size()},
                         {"check_failures", check.failed},
                         {"activation_p50_ms", quantile(lat, 0.5)},
                         {"activation_p99_ms", quantile(lat, 0.99)},
                         {"goal_agents", passivated_goal_agents},
                         {"goal_met", goal}};
  }

  return finish_run(out, ok, opts.json_file, opts.keep, data_dir);
}

} // namespace hive::bench
