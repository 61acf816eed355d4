// Deterministic tests of the live-migration protocol (node_runtime::migrate_out on the
// source, adopt on the target) under CAF's test coordinator: two runtimes with their stores
// in one process, every actor step run by the test, time virtual. The transport of the state
// is the test's: it holds the state until the test lets it go, loses it, or loses the answer,
// at the step the test chooses, while calls keep arriving at the source.
//
// The stores write on their own threads; `settle()` alternates running the actors and
// waiting for both stores to finish what is queued (and the completions they send to actors),
// so no actor runs while a store thread hands it a message.

#include <future>
#include <string>
#include <vector>

#include "actors/sample_kinds.hpp"
#include "protocols/records.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/node_runtime.hpp"
#include "support/caf_fixture.hpp"
#include "support/node_process.hpp"
#include "support/remote_runner.hpp"

namespace {

using namespace hive;
using namespace std::chrono_literals;

/// `prefix` and `i` (appended: g++ 12's -Wrestrict misfires on `tag("x", i)`).
std::string tag(const char* prefix, int i) {
  std::string s = prefix;
  s += std::to_string(i);
  return s;
}

class migration_protocol_test : public hive::test::caf_fixture {
protected:
  node_config ncfg;
  test::temp_dir dir_a;
  test::temp_dir dir_b;
  std::shared_ptr<store> db_a;
  std::shared_ptr<store> db_b;
  std::unique_ptr<node_runtime> a;
  std::unique_ptr<node_runtime> b;
  /// B's node manager as the source's forwarder sees it: remote_calls run on B.
  caf::actor remote_b;

  /// A state the test's transport holds, and its answer.
  struct shipment {
    migration_payload payload;
    std::function<void(caf::expected<caf::actor>)> done;
  };
  std::vector<shipment> shipments;

  /// Answers to the calls the test made, in the order they came.
  struct answer {
    std::string tag;
    caf::expected<std::string> reply;
  };
  std::vector<answer> answers;

  migration_protocol_test() {
    ncfg.persistence.passivate_idle_ms = 3600000;
    ncfg.cluster.migration_timeout_ms = 1000;
    ncfg.cluster.migration_forward_ms = 500;
    ncfg.node.shutdown_drain_ms = 1; // (shutdown waits in real time; the test runs the actors)
    db_a = open_store("a", dir_a);
    db_b = open_store("b", dir_b);
    a = start_runtime("a", db_a);
    b = start_runtime("b", db_b);
    remote_b = test::spawn_remote_runner(sys, b.get());
    settle();
  }

  ~migration_protocol_test() override {
    caf::anon_send_exit(remote_b, caf::exit_reason::user_shutdown);
    for (auto* rt : {a.get(), b.get()}) {
      rt->shutdown();
      settle();
    }
    a.reset();
    b.reset();
    settle();
  }

  std::shared_ptr<store> open_store(const std::string& name, test::temp_dir& dir) {
    auto nc = ncfg;
    nc.node.name = name;
    auto db = open_node_store(nc, dir.path.string(), std::make_shared<metrics>());
    EXPECT_TRUE(db) << describe(db.error());
    return db ? std::shared_ptr<store>{std::move(*db)} : nullptr;
  }

  std::unique_ptr<node_runtime> start_runtime(const std::string& name, std::shared_ptr<store> db) {
    auto nc = ncfg;
    nc.node.name = name;
    kind_registry kinds;
    EXPECT_FALSE(register_sample_kinds(kinds));
    auto rt = node_runtime::start(sys, nc, std::move(kinds), std::make_shared<metrics>(), {},
                                  std::move(db));
    EXPECT_TRUE(rt) << describe(rt.error());
    return rt ? std::move(*rt) : nullptr;
  }

  /// Runs the actors until nothing is left to do, waiting for the stores in between.
  void settle() {
    for (int round = 0; round < 10000; ++round) {
      sched.run();
      for (auto& db : {db_a, db_b})
        if (db)
          db->drain();
      if (!sched.has_job())
        return;
    }
    FAIL() << "the actors did not settle";
  }

  /// Lets `d` of virtual time pass in steps of 10 ms.
  void pass_time(caf::timespan d) {
    for (caf::timespan t{0}; t < d; t += 10ms) {
      sched.advance_time(10ms);
      settle();
    }
  }

  void spawn(node_runtime& rt, const std::string& id) {
    std::optional<caf::expected<agent_view>> v;
    rt.spawn(spawn_request{*parse_agent_id(id), "counter"},
             [&](caf::expected<agent_view> r) { v = std::move(r); });
    settle();
    ASSERT_TRUE(v && *v) << (v ? describe(v->error()) : "no answer");
  }

  /// Asks `id` on `rt` to add `by`; the answer lands in `answers` under `tag`.
  void add(node_runtime& rt, const std::string& id, int by, const std::string& tag) {
    rt.ask(*parse_agent_id(id),
           agent_call{envelope{1, "acme", 0, "test", {}, 0},
                      nlohmann::json{{"op", "add"}, {"by", by}}.dump()},
           5s, [this, tag](caf::expected<std::string> r) {
             answers.push_back({tag, std::move(r)});
           });
  }

  /// The value an answer reports (-1: an error).
  int64_t value_of(const std::string& tag) {
    for (auto& x : answers)
      if (x.tag == tag)
        return x.reply ? nlohmann::json::parse(*x.reply)["value"].get<int64_t>() : -1;
    return -2; // no answer yet
  }

  /// Starts moving `id` from A to B; the state waits in `shipments`.
  void start_move(const std::string& id, std::optional<caf::expected<migration_result>>& out) {
    a->migrate_out(
      *parse_agent_id(id), "b",
      [this](migration_payload p, std::function<void(caf::expected<caf::actor>)> done) {
        shipments.push_back({std::move(p), std::move(done)});
      },
      [&out](caf::expected<migration_result> r) { out = std::move(r); });
    settle();
  }

  /// What B says of shipment `s` when its source asks (the cluster's `m.settle`).
  caf::expected<node_runtime::adoption_outcome> settle_with_b(const shipment& s) {
    auto snap = records::decode_snapshot(s.payload.snapshot);
    if (!snap)
      return std::move(snap.error());
    return b->settle_adoption(s.payload.id, snap->hdr.epoch, s.payload.shipment);
  }

  /// Delivers the held state to B; the answer goes back to A unless `lose_answer`.
  void deliver(shipment& s, bool lose_answer = false) {
    std::optional<caf::error> stored;
    b->adopt(s.payload, [&stored](caf::error err) { stored = std::move(err); });
    settle();
    ASSERT_TRUE(stored.has_value()) << "B did not answer the adoption";
    ASSERT_FALSE(*stored) << describe(*stored);
    if (!lose_answer)
      s.done(remote_b);
    settle();
  }
};

TEST_F(migration_protocol_test,
       calls_that_arrive_during_the_move_wait_and_reach_the_new_node_in_order) {
  spawn(*a, "acme/m");
  add(*a, "acme/m", 1, "before");
  settle();
  ASSERT_EQ(value_of("before"), 1);
  std::optional<caf::expected<migration_result>> moved;
  start_move("acme/m", moved);
  ASSERT_EQ(shipments.size(), 1u) << "the state was not captured and shipped";
  EXPECT_FALSE(moved) << "the move ended before the state arrived";
  // The state is on its way: calls to A are stashed, not answered, not applied.
  for (int i = 0; i < 5; ++i)
    add(*a, "acme/m", 1, tag("during", i));
  settle();
  EXPECT_EQ(value_of("during0"), -2) << "a call was answered while the agent was in transit";
  deliver(shipments[0]);
  ASSERT_TRUE(moved && *moved) << (moved ? describe(moved->error()) : "no result");
  EXPECT_TRUE((*moved)->moved);
  // Each stashed call went to B, in the order it came: values 2..6.
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(value_of(tag("during", i)), 2 + i) << "call " << i;
  // A's copy is gone; B answers by itself.
  add(*b, "acme/m", 1, "after");
  settle();
  EXPECT_EQ(value_of("after"), 7);
  auto left = db_a->get_meta("acme/m");
  ASSERT_TRUE(left);
  EXPECT_FALSE(*left) << "A kept its copy after the move";
}

TEST_F(migration_protocol_test, a_state_whose_answer_times_out_leaves_the_agent_serving_its_stash) {
  spawn(*a, "acme/m");
  std::optional<caf::expected<migration_result>> moved;
  start_move("acme/m", moved);
  ASSERT_EQ(shipments.size(), 1u);
  add(*a, "acme/m", 5, "stashed");
  settle();
  // Nothing comes back for a second: the call waits, unapplied.
  pass_time(1s);
  EXPECT_FALSE(moved) << "the move ended without an answer";
  EXPECT_EQ(value_of("stashed"), -2) << "a stashed call was answered during the move";
  // The transport gives up (the cluster's request times out after migration_timeout_ms):
  // the move is called off and the stash is served where the agent is.
  shipments[0].done(make_error(errc::timeout, "no answer from b in time"));
  settle();
  ASSERT_TRUE(moved);
  EXPECT_FALSE(*moved) << "the move succeeded without its state arriving";
  EXPECT_EQ(value_of("stashed"), 5);
  add(*a, "acme/m", 1, "later");
  settle();
  EXPECT_EQ(value_of("later"), 6);
  // A second answer for the same move (a duplicate, late) changes nothing.
  shipments[0].done(make_error(errc::io_error, "too late"));
  settle();
  add(*a, "acme/m", 1, "last");
  settle();
  EXPECT_EQ(value_of("last"), 7);
}

TEST_F(migration_protocol_test, a_refused_state_leaves_the_agent_where_it_was_with_every_call) {
  spawn(*a, "acme/m");
  std::optional<caf::expected<migration_result>> moved;
  start_move("acme/m", moved);
  ASSERT_EQ(shipments.size(), 1u);
  for (int i = 0; i < 3; ++i)
    add(*a, "acme/m", 1, tag("c", i));
  settle();
  shipments[0].done(make_error(errc::unavailable, "B refused it"));
  settle();
  ASSERT_TRUE(moved);
  EXPECT_FALSE(*moved);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(value_of(tag("c", i)), 1 + i) << "call " << i;
}

TEST_F(migration_protocol_test,
       calls_reordered_behind_the_answer_still_reach_the_new_node_in_order) {
  spawn(*a, "acme/m");
  std::optional<caf::expected<migration_result>> moved;
  start_move("acme/m", moved);
  add(*a, "acme/m", 1, "x0");
  settle();
  // B has stored and activated it, and its answer is on the way; more calls reach A
  // before that answer does.
  std::optional<caf::error> stored;
  b->adopt(shipments[0].payload, [&stored](caf::error err) { stored = std::move(err); });
  add(*a, "acme/m", 1, "x1");
  add(*a, "acme/m", 1, "x2");
  settle();
  ASSERT_TRUE(stored && !*stored);
  shipments[0].done(remote_b);
  add(*a, "acme/m", 1, "x3"); // (after the answer: forwarded behind the stash)
  settle();
  ASSERT_TRUE(moved && *moved);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(value_of(tag("x", i)), 1 + i) << "call " << i;
  // Once no call came for cluster.migration_forward_ms, A forwards no more: a call to A
  // finds nothing there (the cluster then looks for it; here there is no cluster).
  pass_time(1200ms);
  add(*a, "acme/m", 1, "stale");
  settle();
  EXPECT_EQ(value_of("stale"), -1);
  add(*b, "acme/m", 1, "fresh");
  settle();
  EXPECT_EQ(value_of("fresh"), 5);
}

TEST_F(migration_protocol_test,
       a_lost_answer_is_settled_as_adopted_and_the_stash_goes_to_the_new_node) {
  spawn(*a, "acme/m");
  add(*a, "acme/m", 1, "before");
  std::optional<caf::expected<migration_result>> moved;
  start_move("acme/m", moved);
  ASSERT_EQ(shipments.size(), 1u);
  add(*a, "acme/m", 1, "stashed");
  settle();
  // B stores and activates it; its answer is lost on the way back.
  deliver(shipments[0], true);
  EXPECT_FALSE(moved) << "the move ended without an answer";
  // The source asks B what became of it (the cluster's settle_atom, on the call transport):
  // adopted, so the move completes as if the answer had come, and the stash goes to B.
  auto outcome = settle_with_b(shipments[0]);
  ASSERT_TRUE(outcome) << describe(outcome.error());
  ASSERT_EQ(*outcome, node_runtime::adoption_outcome::adopted);
  shipments[0].done(remote_b);
  settle();
  ASSERT_TRUE(moved && *moved) << (moved ? describe(moved->error()) : "no result");
  EXPECT_EQ(value_of("stashed"), 2);
  add(*b, "acme/m", 1, "after");
  settle();
  EXPECT_EQ(value_of("after"), 3);
  // Asked again (a settle that was itself retried): still adopted.
  outcome = settle_with_b(shipments[0]);
  ASSERT_TRUE(outcome);
  EXPECT_EQ(*outcome, node_runtime::adoption_outcome::adopted);
}

TEST_F(migration_protocol_test,
       a_shipment_settled_as_refused_is_refused_when_it_arrives_late_and_the_agent_stays) {
  spawn(*a, "acme/m");
  std::optional<caf::expected<migration_result>> moved;
  start_move("acme/m", moved);
  ASSERT_EQ(shipments.size(), 1u);
  add(*a, "acme/m", 4, "stashed");
  settle();
  // The state is held up on the way; the source's call times out and it settles with B,
  // which has not seen it: refused, and fenced.
  auto outcome = settle_with_b(shipments[0]);
  ASSERT_TRUE(outcome) << describe(outcome.error());
  ASSERT_EQ(*outcome, node_runtime::adoption_outcome::refused);
  shipments[0].done(make_error(errc::timeout, "no answer from b in time"));
  settle();
  ASSERT_TRUE(moved);
  EXPECT_FALSE(*moved);
  EXPECT_EQ(value_of("stashed"), 4);
  // Now the held state arrives after all: B refuses it and keeps no copy.
  std::optional<caf::error> stored;
  b->adopt(shipments[0].payload, [&stored](caf::error err) { stored = std::move(err); });
  settle();
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(code_of(*stored), errc::rejected) << describe(*stored);
  auto meta = db_b->get_meta("acme/m");
  ASSERT_TRUE(meta);
  EXPECT_FALSE(*meta) << "B stored the state of a move its source called off";
  add(*a, "acme/m", 1, "later");
  settle();
  EXPECT_EQ(value_of("later"), 5);
  // A later move of the agent (another shipment) is not fenced.
  std::optional<caf::expected<migration_result>> again;
  start_move("acme/m", again);
  ASSERT_EQ(shipments.size(), 2u);
  EXPECT_NE(shipments[1].payload.shipment, shipments[0].payload.shipment);
  deliver(shipments[1]);
  ASSERT_TRUE(again && *again) << (again ? describe(again->error()) : "no result");
  add(*b, "acme/m", 1, "moved");
  settle();
  EXPECT_EQ(value_of("moved"), 6);
}

TEST_F(migration_protocol_test,
       a_shipment_past_its_deadlines_is_refused_or_given_up_and_the_agent_stays_at_its_source) {
  // A source that hears nothing goes on with the agent 2T after it shipped it (T: its
  // cluster.migration_timeout_ms), so B refuses a shipment it reads after 1.5T and gives up an
  // adoption whose activation reaches the working copy after 1.75T (migration_payload).
  spawn(*a, "acme/m");
  add(*a, "acme/m", 3, "before");
  settle();
  auto now_ms = [] {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
  };
  // Shipment `i` as B reads it `age_ms` after it was sent, with T = 1 s.
  auto aged = [&](size_t i, uint64_t age_ms) {
    auto p = shipments.at(i).payload;
    p.timeout_ms = 1000;
    p.sent_unix_ms = now_ms() - age_ms;
    return p;
  };
  auto b_refuses_in_the_end = [&](const shipment& s) {
    // (A failed adoption stays pending until its copy is erased, on the store's thread.)
    for (int i = 0; i < 500; ++i) {
      auto outcome = settle_with_b(s);
      if (!outcome || *outcome != node_runtime::adoption_outcome::pending)
        return outcome && *outcome == node_runtime::adoption_outcome::refused;
      std::this_thread::sleep_for(10ms);
      settle();
    }
    return false;
  };
  // 1. Read 1.6 s after it was sent: refused at once, and for good.
  std::optional<caf::expected<migration_result>> first;
  start_move("acme/m", first);
  ASSERT_EQ(shipments.size(), 1u);
  std::optional<caf::error> stored;
  b->adopt(aged(0, 1600), [&stored](caf::error err) { stored = std::move(err); });
  settle();
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(code_of(*stored), errc::rejected) << describe(*stored);
  EXPECT_NE(describe(*stored).find("after it was sent (deadline 1500 ms"), std::string::npos)
    << describe(*stored);
  EXPECT_TRUE(b_refuses_in_the_end(shipments[0]));
  shipments[0].done(make_error(errc::timeout, "no answer from b in time"));
  settle();
  ASSERT_TRUE(first);
  EXPECT_FALSE(*first);
  // 2. Read in time (1.4 s: under 1.5T), but its activation comes to the working copy only
  //    after 1.75T (B's actors are held back here): given up, and its copy erased.
  std::optional<caf::expected<migration_result>> second;
  start_move("acme/m", second);
  ASSERT_EQ(shipments.size(), 2u);
  stored.reset();
  b->adopt(aged(1, 1400), [&stored](caf::error err) { stored = std::move(err); });
  std::this_thread::sleep_for(500ms); // past 1.75T before B's supervisor runs the activation
  for (int i = 0; i < 500 && !stored; ++i) {
    settle();
    if (!stored)
      std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(stored.has_value()) << "B did not answer the adoption";
  EXPECT_EQ(code_of(*stored), errc::rejected) << describe(*stored);
  EXPECT_NE(describe(*stored).find("past its deadline"), std::string::npos) << describe(*stored);
  EXPECT_TRUE(b_refuses_in_the_end(shipments[1]));
  EXPECT_EQ(b->agent_count(), 0u);
  auto meta = db_b->get_meta("acme/m");
  ASSERT_TRUE(meta);
  EXPECT_FALSE(*meta) << "B kept the state of an adoption it gave up";
  shipments[1].done(make_error(errc::timeout, "no answer from b in time"));
  settle();
  ASSERT_TRUE(second);
  EXPECT_FALSE(*second);
  // The agent went on at A all along.
  add(*a, "acme/m", 1, "after");
  settle();
  EXPECT_EQ(value_of("after"), 4);
}

TEST_F(migration_protocol_test, a_settle_during_the_adoption_is_pending_then_adopted) {
  spawn(*a, "acme/m");
  std::optional<caf::expected<migration_result>> moved;
  start_move("acme/m", moved);
  ASSERT_EQ(shipments.size(), 1u);
  std::optional<caf::error> stored;
  b->adopt(shipments[0].payload, [&stored](caf::error err) { stored = std::move(err); });
  // (B's actors have not run: its activation is under way.)
  auto outcome = settle_with_b(shipments[0]);
  ASSERT_TRUE(outcome) << describe(outcome.error());
  EXPECT_EQ(*outcome, node_runtime::adoption_outcome::pending);
  settle();
  ASSERT_TRUE(stored && !*stored);
  outcome = settle_with_b(shipments[0]);
  ASSERT_TRUE(outcome);
  EXPECT_EQ(*outcome, node_runtime::adoption_outcome::adopted);
  shipments[0].done(remote_b);
  settle();
  ASSERT_TRUE(moved && *moved);
}

} // namespace
