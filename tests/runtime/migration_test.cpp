// The live-migration protocol of node_runtime (migrate_out on the source, adopt on the target)
// with two runtimes and two stores in one process, and a transport the test controls: it
// delivers the state at once, late, or fails, so that each step of the protocol can be made to
// go wrong. Calls keep arriving at the source all along; none may be lost or applied twice.

#include <atomic>
#include <future>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "actors/sample_kinds.hpp"
#include "protocols/errc.hpp"
#include "protocols/records.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/node_runtime.hpp"
#include "runtime/replication.hpp"
#include "support/node_process.hpp"
#include "support/remote_runner.hpp"
#include "support/store_drain.hpp"

using namespace std::chrono_literals;
using namespace hive;

namespace {

/// What the test's transport does with a migration.
enum class transport { deliver, fail_after_delay };

class migration_test : public ::testing::Test {
public:
  void SetUp() override {
    cfg.node.scheduler_threads = 2;
    cfg.persistence.passivate_idle_ms = 300000;
    sys_cfg.emplace();
    configure_actor_system(*sys_cfg, cfg);
    sys.emplace(*sys_cfg);
    a = start_runtime("a", dir_a);
    b = start_runtime("b", dir_b);
    // B's side of the "network": remote_calls as B's node manager would run them.
    remote_b = test::spawn_remote_runner(*sys, b.get());
  }

  void TearDown() override {
    caf::anon_send_exit(remote_b, caf::exit_reason::user_shutdown);
    for (auto* rt : {a.get(), b.get()})
      if (rt)
        rt->shutdown();
    a.reset();
    b.reset();
    for (auto& [_, r] : reps)
      r->shutdown();
    test::drain_completions(stores); // (see tests/support/store_drain.hpp)
    reps.clear();
    stores.clear();
    sys.reset();
  }

  /// Journaled agents of A and B get a replica set of three: A, B and a third member C (a
  /// store only), their replication calls delivered in process.
  void replicate() {
    store_options o;
    o.path = dir_c.path.string();
    auto c = store::open(std::move(o));
    ASSERT_TRUE(c) << describe(c.error());
    stores = {{"a", a->db()}, {"b", b->db()}, {"c", std::shared_ptr<store>{std::move(*c)}}};
    std::vector<replica_peer> all{{"a", "a", true}, {"b", "b", true}, {"c", "c", true}};
    for (auto& [name, db] : stores)
      reps[name] = replicator::make(
        db, name, {}, [all] { return all; },
        [this](const std::string& address, const remote_call& req, std::chrono::milliseconds,
               replicator::reply_fn done) {
          if (req.op == "r.prepare" && prepares_to_refuse.fetch_sub(1) > 0)
            return done(make_error(errc::unavailable, address + " is unreachable (the test)"));
          if (auto ms = append_delay_ms.load(); ms > 0 && req.op == "r.append" && address != "a") {
            // A slow disk on b and c: A's writes are acknowledged this much later.
            auto rep = reps.at(address);
            std::thread{[rep, req, done = std::move(done), ms]() mutable {
              std::this_thread::sleep_for(std::chrono::milliseconds(ms));
              rep->handle(req, std::move(done));
            }}.detach();
            return;
          }
          reps.at(address)->handle(req, std::move(done));
        });
    a->set_replicator(reps["a"]);
    b->set_replicator(reps["b"]);
  }

  /// `replicate()`, then a counter `id` on A, added to three times (value 3).
  void replicated_counter_at_3(const std::string& id) {
    replicate();
    spawn(id);
    for (int i = 1; i <= 3; ++i) {
      auto r = ask(*a, id, {{"op", "add"}, {"by", 1}});
      ASSERT_TRUE(r) << describe(r.error());
      ASSERT_EQ((*r)["value"], i);
    }
  }

  /// After a move of `id` (a counter at 3) was called off: it goes on at A with every
  /// acknowledged add and writes again, and every copy names A, at an epoch above `above`.
  void expect_serving_at_a_above(const std::string& id, uint64_t above) {
    for (int i = 4; i <= 6; ++i) {
      auto v = ask(*a, id, {{"op", "add"}, {"by", 1}});
      ASSERT_TRUE(v) << "add " << i << ": " << describe(v.error());
      EXPECT_EQ((*v)["value"], i);
    }
    for (auto on : {"a", "b", "c"}) {
      auto now = copy_state(on, id);
      EXPECT_EQ(now["holder"], "a") << on << ": " << now.dump();
      EXPECT_GT(now["promised"].get<uint64_t>(), above) << on << ": " << now.dump();
    }
  }

  /// What member `on`'s replica copy of `id` promised, and to whom (`replicator::copy_state`).
  nlohmann::json copy_state(const std::string& on, const std::string& id) {
    remote_call q{"r.query", *parse_agent_id(id), {}, 2000};
    std::promise<caf::expected<std::string>> p;
    reps.at(on)->handle(q, [&p](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    EXPECT_TRUE(r) << describe(r.error());
    return r ? nlohmann::json::parse(*r) : nlohmann::json{};
  }

  std::unique_ptr<node_runtime> start_runtime(const std::string& name, test::temp_dir& dir) {
    auto nc = cfg;
    nc.node.name = name;
    kind_registry kinds;
    EXPECT_FALSE(register_sample_kinds(kinds));
    auto m = std::make_shared<metrics>();
    auto db = open_node_store(nc, dir.path.string(), m);
    EXPECT_TRUE(db) << describe(db.error());
    auto rt = node_runtime::start(*sys, nc, std::move(kinds), m, {}, *db);
    EXPECT_TRUE(rt) << describe(rt.error());
    return std::move(*rt);
  }

  /// The ship function of a migration from A to B.
  ship_fn ship(transport how, std::chrono::milliseconds delay = 0ms) {
    auto* rt_b = b.get();
    auto remote = remote_b;
    return [rt_b, remote, how, delay](migration_payload p,
                                      std::function<void(caf::expected<caf::actor>)> done) {
      std::thread{[=, p = std::move(p)] {
        std::this_thread::sleep_for(delay);
        if (how != transport::deliver)
          return done(make_error(errc::io_error, "the test's transport lost the state"));
        rt_b->adopt(p, [remote, done](caf::error err) {
          if (err)
            return done(std::move(err));
          done(remote);
        });
      }}.detach();
    };
  }

  caf::expected<migration_result> migrate(const std::string& id, transport how,
                                          std::chrono::milliseconds delay = 0ms) {
    std::promise<caf::expected<migration_result>> p;
    a->migrate_out(*parse_agent_id(id), "b", ship(how, delay),
                   [&](caf::expected<migration_result> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  static caf::expected<nlohmann::json> ask(node_runtime& rt, const std::string& id,
                                           const nlohmann::json& body, std::string client = {},
                                           uint64_t seq = 0) {
    std::promise<caf::expected<std::string>> p;
    rt.ask(*parse_agent_id(id),
           agent_call{envelope{1, "acme", 0, "test", std::move(client), seq}, body.dump()}, 5s,
           [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    if (!r)
      return r.error();
    return nlohmann::json::parse(*r);
  }

  template <class Pred>
  static bool eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
    for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit;
         std::this_thread::sleep_for(10ms))
      if (pred())
        return true;
    return pred();
  }

  /// Restarts A's runtime on its store, with the current `cfg`.
  void restart_a() {
    a->shutdown();
    a.reset();
    a = start_runtime("a", dir_a);
  }

  /// Moves `id` from A to B, adds 1 through B and expects `value` back.
  void expect_moved_then_value(const std::string& id, int64_t value) {
    auto r = migrate(id, transport::deliver);
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_TRUE(r->moved);
    auto on_b = ask(*b, id, {{"op", "add"}, {"by", 1}});
    ASSERT_TRUE(on_b) << describe(on_b.error());
    EXPECT_EQ((*on_b)["value"], value);
  }

  void spawn(const std::string& id, const std::string& kind = "counter") {
    std::promise<caf::expected<agent_view>> p;
    a->spawn(spawn_request{*parse_agent_id(id), kind},
             [&](caf::expected<agent_view> v) { p.set_value(std::move(v)); });
    auto v = p.get_future().get();
    ASSERT_TRUE(v) << describe(v.error());
  }

  /// Clients that ask increments of `id` through A, one at a time, each with its own
  /// idempotency keys, retrying a failed one with the same key until it is acknowledged.
  struct load {
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    std::vector<int64_t> acked;
    std::vector<std::string> disorder;

    load(node_runtime& rt, const std::string& id, int clients)
        : acked(static_cast<size_t>(clients)), disorder(static_cast<size_t>(clients)) {
      for (int c = 0; c < clients; ++c)
        threads.emplace_back([this, &rt, id, c] {
          auto i = static_cast<size_t>(c);
          int64_t last = -1;
          for (uint64_t seq = 1; !stop.load(); ++seq)
            for (;;) {
              std::string client = "client-"; // (append: g++ 12's -Wrestrict misfires)
              client += std::to_string(c);
              auto r = ask(rt, id, {{"op", "add"}, {"by", 1}}, client, seq);
              if (r) {
                auto v = (*r)["value"].get<int64_t>();
                if (v <= last && disorder[i].empty())
                  disorder[i] = std::to_string(v) + " after " + std::to_string(last);
                last = v;
                ++acked[i];
                break;
              }
              std::this_thread::sleep_for(1ms);
            }
        });
    }

    int64_t finish() {
      stop = true;
      for (auto& t : threads)
        t.join();
      threads.clear();
      int64_t total = 0;
      for (auto n : acked)
        total += n;
      return total;
    }

    ~load() {
      if (!threads.empty())
        finish();
    }
  };

  /// A runs with `cfg`; a replicated counter at 3 there gets an add whose appends to b and c
  /// take 300 ms, and is moved to B while that add waits. Expects the move done, the add
  /// answered 4, and an add through B 5 (nothing lost); returns the move's result.
  std::optional<migration_result> move_while_an_add_is_in_flight() {
    restart_a();
    replicated_counter_at_3("acme/r");
    if (::testing::Test::HasFatalFailure())
      return std::nullopt;
    append_delay_ms = 300;
    auto add = std::async(std::launch::async, [this] {
      return ask(*a, "acme/r", {{"op", "add"}, {"by", 1}});
    });
    EXPECT_TRUE(eventually([this] { return copy_state("a", "acme/r")["last_seq"] == 4; }))
      << "the add was not applied";
    auto r = migrate("acme/r", transport::deliver);
    EXPECT_TRUE(r) << describe(r.error());
    auto added = add.get();
    EXPECT_TRUE(added && (*added)["value"] == 4)
      << (added ? added->dump() : describe(added.error()));
    append_delay_ms = 0;
    auto on_b = ask(*b, "acme/r", {{"op", "add"}, {"by", 1}});
    EXPECT_TRUE(on_b && (*on_b)["value"] == 5) << (on_b ? on_b->dump() : describe(on_b.error()));
    if (!r || !r->moved)
      return std::nullopt;
    return std::move(*r);
  }

  node_config cfg;
  test::temp_dir dir_a;
  test::temp_dir dir_b;
  test::temp_dir dir_c;
  std::map<std::string, std::shared_ptr<replicator>> reps;
  /// The next this many `r.prepare` calls between members fail as unreachable.
  std::atomic<int> prepares_to_refuse{0};
  /// Appends to b and c are handled this much later (0: at once).
  std::atomic<int> append_delay_ms{0};
  std::map<std::string, std::shared_ptr<store>> stores;
  std::optional<caf::actor_system_config> sys_cfg;
  std::optional<caf::actor_system> sys;
  std::unique_ptr<node_runtime> a;
  std::unique_ptr<node_runtime> b;
  caf::actor remote_b;
};

} // namespace

TEST_F(migration_test, a_slow_transport_holds_the_calls_and_then_they_reach_the_new_node) {
  spawn("acme/m");
  load clients{*a, "acme/m", 4};
  std::this_thread::sleep_for(100ms);
  // The state takes 300 ms to arrive: every call meanwhile waits in the stash.
  auto r = migrate("acme/m", transport::deliver, 300ms);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_TRUE(r->moved);
  EXPECT_GE(r->pause_ms, 300.0);
  EXPECT_GT(r->held_calls, 0u) << "four clients kept calling while the state travelled";
  std::this_thread::sleep_for(200ms); // calls through A now go on to B
  auto total = clients.finish();
  for (size_t c = 0; c < clients.disorder.size(); ++c)
    EXPECT_TRUE(clients.disorder[c].empty()) << "client " << c << ": " << clients.disorder[c];
  ASSERT_GT(total, 10);
  auto on_b = ask(*b, "acme/m", {{"op", "get"}});
  ASSERT_TRUE(on_b) << describe(on_b.error());
  EXPECT_EQ((*on_b)["value"], total) << "B holds a different count than was acknowledged";
  EXPECT_TRUE(b->find(*parse_agent_id("acme/m"))) << "not active on B";
  // A keeps no copy: its store forgot the agent (the erase follows the hand-over).
  ASSERT_TRUE(eventually([&] {
    auto meta = a->db()->get_meta("acme/m");
    return meta && !*meta;
  }));
}

TEST_F(migration_test, a_move_without_callers_holds_no_call_and_still_reports_its_pause) {
  spawn("acme/q");
  ASSERT_TRUE(ask(*a, "acme/q", {{"op", "add"}, {"by", 1}}));
  auto r = migrate("acme/q", transport::deliver, 100ms);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_TRUE(r->moved);
  EXPECT_GE(r->pause_ms, 100.0) << "the state took 100 ms to arrive";
  EXPECT_EQ(r->held_calls, 0u);
  auto on_b = ask(*b, "acme/q", {{"op", "get"}});
  ASSERT_TRUE(on_b) << describe(on_b.error());
  EXPECT_EQ((*on_b)["value"], 1);
}

namespace {

/// The numbers of 0..n-1 that `got` (a JSON array of numbers) lacks, as ranges ("5-9 12").
std::string missing_ranges(const nlohmann::json& got, int n) {
  std::vector<bool> seen(static_cast<size_t>(n), false);
  if (got.is_array())
    for (auto& v : got)
      if (v.is_number_integer() && v.get<int>() >= 0 && v.get<int>() < n)
        seen[static_cast<size_t>(v.get<int>())] = true;
  std::string out;
  for (int i = 0; i < n;) {
    if (seen[static_cast<size_t>(i)]) {
      ++i;
      continue;
    }
    int j = i;
    while (j + 1 < n && !seen[static_cast<size_t>(j + 1)])
      ++j;
    out += (out.empty() ? "" : " ") + std::to_string(i) + (j > i ? "-" + std::to_string(j) : "");
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

} // namespace

TEST_F(migration_test, one_way_tells_from_one_sender_arrive_in_order_across_the_move) {
  // One thread tells appends through A as fast as it can (paced only to stay below the
  // stash bound) before, during and after the move, and on past the end of A's forwarder;
  // B's list must be exactly 0..n-1. Every path a tell can take on A (the directory, the
  // stash, the forwarder while A's record is still being erased, the forwarder after that)
  // has to keep one order.
  cfg.cluster.migration_forward_ms = 50;
  a->shutdown(); // (restart A with the short forwarding spell)
  a.reset();
  a = start_runtime("a", dir_a);
  spawn("acme/log", "kv");
  auto id = *parse_agent_id("acme/log");
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0};
  std::string refused;
  std::thread sender{[&] {
    for (int i = 0; !stop.load() || i < 3000; ++i) {
      auto body = nlohmann::json{{"op", "append"}, {"key", "seq"}, {"value", i}}.dump();
      if (auto err = a->tell(id, agent_call{envelope{1, "acme", 0, "test", {}, 0}, body})) {
        refused = describe(err); // (A forgot the agent after its forwarder ended: stop)
        break;
      }
      sent = i + 1;
      if (i % 8 == 0)
        std::this_thread::sleep_for(50us);
      if (i >= 9000)
        break;
    }
  }};
  // The move starts once the sender is under way (a starved sender thread, ASan under load,
  // once had sent 1 tell by the time the forwarder ended).
  if (!eventually([&] { return sent.load() >= 200; })) {
    stop = true;
    sender.join();
    FAIL() << "the sender sent " << sent << " tells in 10 s " << refused;
  }
  auto r = migrate("acme/log", transport::deliver);
  ASSERT_TRUE(r) << describe(r.error());
  stop = true;
  sender.join();
  std::cout << "sent " << sent << " tells; the move paused " << r->pause_ms << " ms"
            << (refused.empty() ? "" : "; then A refused: " + refused) << std::endl;
  ASSERT_GT(sent.load(), 100);
  nlohmann::json got;
  auto all_there = eventually([&] {
    auto g = ask(*b, "acme/log", {{"op", "get"}, {"key", "seq"}});
    if (!g)
      return false;
    got = (*g)["value"];
    return got.is_array() && got.size() >= static_cast<size_t>(sent.load());
  });
  ASSERT_TRUE(all_there) << "B has " << got.size() << " of " << sent
                         << " appends; missing: " << missing_ranges(got, sent.load());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i].get<int>(), static_cast<int>(i))
      << "out of order at position " << i << ": ..."
      << nlohmann::json(std::vector<nlohmann::json>(
                          got.begin() + static_cast<long>(i > 5 ? i - 5 : 0),
                          got.begin() + static_cast<long>(std::min(got.size(), i + 6))))
           .dump()
      << "...";
  EXPECT_EQ(got.size(), static_cast<size_t>(sent.load()));
}

TEST_F(migration_test, a_lost_state_leaves_the_agent_where_it_was_with_every_call) {
  spawn("acme/m");
  load clients{*a, "acme/m", 4};
  std::this_thread::sleep_for(100ms);
  auto r = migrate("acme/m", transport::fail_after_delay, 200ms);
  ASSERT_FALSE(r) << "a migration whose state was lost reported success";
  EXPECT_EQ(code_of(r.error()), errc::io_error) << describe(r.error());
  std::this_thread::sleep_for(100ms); // the stash and later calls are served by A again
  auto total = clients.finish();
  for (size_t c = 0; c < clients.disorder.size(); ++c)
    EXPECT_TRUE(clients.disorder[c].empty()) << "client " << c << ": " << clients.disorder[c];
  auto on_a = ask(*a, "acme/m", {{"op", "get"}});
  ASSERT_TRUE(on_a) << describe(on_a.error());
  EXPECT_EQ((*on_a)["value"], total);
  auto meta = b->db()->get_meta("acme/m");
  ASSERT_TRUE(meta);
  EXPECT_FALSE(*meta) << "B stored the agent although the state never reached it";
  // And it can still move afterwards.
  auto again = migrate("acme/m", transport::deliver);
  ASSERT_TRUE(again) << describe(again.error());
  auto on_b = ask(*b, "acme/m", {{"op", "get"}});
  ASSERT_TRUE(on_b) << describe(on_b.error());
  EXPECT_EQ((*on_b)["value"], total);
}

TEST_F(migration_test, a_duplicate_command_after_the_move_gets_its_original_reply) {
  spawn("acme/m");
  auto first = ask(*a, "acme/m", {{"op", "add"}, {"by", 5}}, "client", 1);
  ASSERT_TRUE(first) << describe(first.error());
  ASSERT_TRUE(migrate("acme/m", transport::deliver));
  // The retry of an acknowledged command reaches the new node: the de-duplication window
  // moved with the state.
  auto retry = ask(*b, "acme/m", {{"op", "add"}, {"by", 5}}, "client", 1);
  ASSERT_TRUE(retry) << describe(retry.error());
  EXPECT_EQ((*retry)["value"], 5);
  EXPECT_EQ((*ask(*b, "acme/m", {{"op", "get"}}))["value"], 5);
}

TEST_F(migration_test, a_stored_agent_that_is_not_running_moves_too_and_epochs_grow) {
  spawn("acme/m");
  ASSERT_TRUE(ask(*a, "acme/m", {{"op", "add"}, {"by", 2}}));
  // Restart A's runtime on its store: the agent is stored, not running.
  restart_a();
  ASSERT_FALSE(a->find(*parse_agent_id("acme/m")));
  expect_moved_then_value("acme/m", 3);
  // B's activation writes with a larger epoch than any the agent had on A.
  auto shipped = b->db()->get_snapshot("acme/m");
  ASSERT_TRUE(shipped && *shipped);
  auto events = b->db()->read_events("acme/m", 0, UINT64_MAX, 100);
  ASSERT_TRUE(events);
  ASSERT_FALSE(events->empty());
  EXPECT_GT(events->back().hdr.epoch, (*shipped)->hdr.epoch)
    << "the activation on B writes with epoch " << events->back().hdr.epoch << ", not above A's "
    << (*shipped)->hdr.epoch;
}

TEST_F(migration_test, a_hibernated_agent_is_woken_and_moves) {
  // A with hibernation on: the agent sleeps (no actor) when the move starts.
  cfg.agents.hibernate_idle_ms = 10;
  restart_a();
  spawn("acme/m");
  ASSERT_TRUE(ask(*a, "acme/m", {{"op", "add"}, {"by", 4}}));
  ASSERT_TRUE(eventually([&] {
    auto v = a->find(*parse_agent_id("acme/m"));
    return v && v->hibernated;
  }));
  expect_moved_then_value("acme/m", 5);
  EXPECT_FALSE(a->find(*parse_agent_id("acme/m")));
}

TEST_F(migration_test, an_ephemeral_or_unknown_agent_does_not_migrate) {
  std::promise<caf::expected<agent_view>> p;
  a->spawn(spawn_request{*parse_agent_id("acme/e"), "echo"},
           [&](caf::expected<agent_view> v) { p.set_value(std::move(v)); });
  ASSERT_TRUE(p.get_future().get());
  auto eph = migrate("acme/e", transport::deliver);
  ASSERT_FALSE(eph);
  EXPECT_EQ(code_of(eph.error()), errc::invalid_argument) << describe(eph.error());
  EXPECT_TRUE(ask(*a, "acme/e", {{"x", 1}})) << "the ephemeral agent stopped serving";
  auto none = migrate("acme/nobody", transport::deliver);
  ASSERT_FALSE(none);
  EXPECT_EQ(code_of(none.error()), errc::agent_not_found) << describe(none.error());
  // A corrupted record is refused by the target, which keeps nothing.
  migration_payload bad{*parse_agent_id("acme/x"), "not a record", "not a record"};
  std::promise<caf::error> q;
  b->adopt(bad, [&](caf::error err) { q.set_value(std::move(err)); });
  auto err = q.get_future().get();
  EXPECT_EQ(code_of(err), errc::corrupt_record) << describe(err);
}

// A target can fail after its promise round went out (its write of the state fails, its
// deadline passes, a settle refuses it): a majority of the replica set then promised it a newer
// epoch. The source that goes on with the agent must take that promise back first; else its
// next write is fenced, it drops its working copy, and no member activates the agent again
// (the promise names a node that serves calls but never ran it).
TEST_F(migration_test, a_move_called_off_after_the_target_was_promised_leaves_the_agent_serving) {
  ASSERT_NO_FATAL_FAILURE(replicated_counter_at_3("acme/r"));
  auto left = copy_state("c", "acme/r");
  ASSERT_EQ(left["holder"], "a");
  // The target has a majority promise it the next epoch, then fails.
  auto rep_b = reps["b"];
  std::promise<uint64_t> promised;
  std::promise<caf::expected<migration_result>> moved;
  a->migrate_out(
    *parse_agent_id("acme/r"), "b",
    [rep_b, &promised](migration_payload p, std::function<void(caf::expected<caf::actor>)> done) {
      std::thread{[rep_b, &promised, p = std::move(p), done] {
        auto meta = records::decode_meta(p.meta);
        auto snap = records::decode_snapshot(p.snapshot);
        uint64_t epoch = 0;
        if (meta && snap) {
          rep_b->expect_handover(p.id, snap->hdr.epoch);
          auto e = rep_b->acquire(p.id, *meta, 0, true);
          epoch = e ? *e : 0;
        }
        promised.set_value(epoch);
        done(make_error(errc::storage_error, "the test's target failed after its promise round"));
      }}.detach();
    },
    [&moved](caf::expected<migration_result> r) { moved.set_value(std::move(r)); });
  auto target_epoch = promised.get_future().get();
  ASSERT_GT(target_epoch, left["promised"].get<uint64_t>()) << "the target was promised an epoch";
  auto r = moved.get_future().get();
  ASSERT_FALSE(r) << "the move was called off";
  // The agent goes on at its source, with every acknowledged add, and writes again.
  expect_serving_at_a_above("acme/r", target_epoch);
}

// The replicas' promise to the target is asked for while the agent still serves. When it
// fails (here b and c are unreachable for it), nothing is shipped: the move is called off once
// the agent stopped, the promise its own copy made taken back, and the agent goes on at A.
TEST_F(migration_test, a_move_whose_replicas_did_not_promise_the_target_ships_nothing) {
  ASSERT_NO_FATAL_FAILURE(replicated_counter_at_3("acme/r"));
  auto left = copy_state("c", "acme/r");
  ASSERT_EQ(left["holder"], "a");
  prepares_to_refuse = 2;
  std::atomic<int> shipped{0};
  std::promise<caf::expected<migration_result>> moved;
  a->migrate_out(
    *parse_agent_id("acme/r"), "b",
    [&shipped](migration_payload, std::function<void(caf::expected<caf::actor>)> done) {
      ++shipped;
      done(make_error(errc::rejected, "the test's target"));
    },
    [&moved](caf::expected<migration_result> r) { moved.set_value(std::move(r)); });
  auto r = moved.get_future().get();
  ASSERT_FALSE(r) << "the move went on without a majority's promise";
  EXPECT_EQ(code_of(r.error()), errc::no_quorum) << describe(r.error());
  EXPECT_NE(describe(r.error()).find("did not promise"), std::string::npos) << describe(r.error());
  EXPECT_EQ(shipped.load(), 0) << "the state left";
  expect_serving_at_a_above("acme/r", left["promised"].get<uint64_t>() + 1);
}

TEST_F(migration_test,
       a_replicated_agent_ships_with_its_targets_epoch_promised_and_a_refusal_takes_it_back) {
  ASSERT_NO_FATAL_FAILURE(replicated_counter_at_3("acme/r"));
  auto left = copy_state("c", "acme/r");
  ASSERT_EQ(left["holder"], "a");
  // The state leaves with the epoch after the source's already promised to the target by a
  // majority of the set (replicator::promise_to): the target needs no round of its own.
  uint64_t granted = 0;
  size_t promised_to_b = 0;
  std::promise<caf::expected<migration_result>> moved;
  a->migrate_out(
    *parse_agent_id("acme/r"), "b",
    [this, &granted, &promised_to_b](migration_payload p,
                                     std::function<void(caf::expected<caf::actor>)> done) {
      granted = p.granted_epoch;
      for (auto on : {"a", "b", "c"}) {
        auto now = copy_state(on, "acme/r");
        if (now["holder"] == "b" && now["promised"].get<uint64_t>() == granted)
          ++promised_to_b;
      }
      done(make_error(errc::rejected, "the test's target refuses the state"));
    },
    [&moved](caf::expected<migration_result> r) { moved.set_value(std::move(r)); });
  auto r = moved.get_future().get();
  ASSERT_FALSE(r) << "the move was called off";
  EXPECT_EQ(granted, left["promised"].get<uint64_t>() + 1);
  EXPECT_GE(promised_to_b, 2u) << "a majority promised the target before the state left";
  // Refused: the source took the promise back before the agent went on, so its writes are not
  // fenced, and every acknowledged add is there.
  expect_serving_at_a_above("acme/r", granted);
}

TEST_F(migration_test, a_move_called_off_after_the_target_wrote_goes_on_from_the_newer_copy) {
  // As above, but the target also had a write acknowledged at its epoch before it failed
  // (an activation there that took a call): the copies hold a newer journal than the source's
  // working copy. Taking the promise back must catch the source up (the working copy is
  // replaced) and reload the agent, or it would serve and build on a stale state.
  ASSERT_NO_FATAL_FAILURE(replicated_counter_at_3("acme/r"));
  auto reps_now = reps;
  std::promise<uint64_t> promised;
  std::promise<caf::expected<migration_result>> moved;
  a->migrate_out(
    *parse_agent_id("acme/r"), "b",
    [reps_now, &promised](migration_payload p,
                          std::function<void(caf::expected<caf::actor>)> done) {
      std::thread{[reps_now, &promised, p = std::move(p), done] {
        auto meta = records::decode_meta(p.meta);
        auto snap = records::decode_snapshot(p.snapshot);
        uint64_t epoch = 0;
        if (meta && snap) {
          reps_now.at("b")->expect_handover(p.id, snap->hdr.epoch);
          auto e = reps_now.at("b")->acquire(p.id, *meta, 0, true);
          epoch = e ? *e : 0;
          if (epoch != 0) {
            // The target's write of "add 10" as event 4, on two copies of three.
            records::event_record ev;
            ev.hdr = {p.id.str(), epoch, snap->hdr.seq + 1};
            ev.payload = "10";
            remote_call w{"r.append", p.id, {}, 2000};
            w.call.body = records::encode(ev);
            for (auto on : {"b", "c"}) {
              std::promise<caf::expected<std::string>> ok;
              reps_now.at(on)->handle(
                w, [&ok](caf::expected<std::string> r) { ok.set_value(std::move(r)); });
              if (!ok.get_future().get())
                epoch = 0;
            }
          }
        }
        promised.set_value(epoch);
        done(make_error(errc::storage_error, "the test's target failed after its write"));
      }}.detach();
    },
    [&moved](caf::expected<migration_result> r) { moved.set_value(std::move(r)); });
  auto target_epoch = promised.get_future().get();
  ASSERT_GT(target_epoch, 0u) << "the target was promised an epoch and wrote on two copies";
  auto r = moved.get_future().get();
  ASSERT_FALSE(r) << "the move was called off";
  // 3 + 10 (the target's write) + 1.
  auto v = ask(*a, "acme/r", {{"op", "add"}, {"by", 1}});
  ASSERT_TRUE(v) << describe(v.error());
  EXPECT_EQ((*v)["value"], 14) << "the source went on from its stale state";
  for (auto on : {"a", "b", "c"}) {
    auto now = copy_state(on, "acme/r");
    EXPECT_EQ(now["holder"], "a") << on << ": " << now.dump();
    EXPECT_GT(now["promised"].get<uint64_t>(), target_epoch) << on << ": " << now.dump();
  }
}

// A move does not stop the agent while one of its writes is in flight: it serves on until the
// write is acknowledged (at most cluster.migration_quiet_wait_ms) and stops there, so that its
// pause holds no wait for a replica's disk. Here b's and c's appends take 300 ms, and the move
// is asked while an add waits for them.
TEST_F(migration_test, a_move_stops_the_agent_once_its_write_in_flight_is_acknowledged) {
  cfg.cluster.migration_quiet_wait_ms = 2000;
  cfg.cluster.migration_timeout_ms = 10000;
  auto r = move_while_an_add_is_in_flight();
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->waited_for_appends) << "the agent stopped with its add in flight";
}

// An agent that is not quiet within cluster.migration_quiet_wait_ms (here 50 ms, and its
// write takes 300 ms) stops with the write in flight; the move then waits for it, and neither
// the add nor anything else is lost.
TEST_F(migration_test, a_move_whose_agent_is_not_quiet_in_time_waits_for_the_write_in_flight) {
  cfg.cluster.migration_quiet_wait_ms = 50;
  auto r = move_while_an_add_is_in_flight();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->waited_for_appends) << "the agent was quiet before its deadline";
}
