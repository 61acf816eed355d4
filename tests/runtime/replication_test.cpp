// The replicator's own side of the wire (runtime/replication.hpp) on one real store: malformed
// replication calls get clear errors and change nothing; epochs are fenced (an older prepare
// or append is refused, naming the promise); and the bundle codec refuses truncated input.
// Then activations among three replicators in one process: a migration's target skips the
// query round (and falls back to it when fenced), and a round needs only a majority.

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protocols/errc.hpp"
#include "runtime/replication.hpp"
#include "support/node_process.hpp"
#include "support/store_drain.hpp"

using namespace hive;

namespace {

class replication_test : public ::testing::Test {
protected:
  test::temp_dir dir;
  std::shared_ptr<store> db;
  std::shared_ptr<replicator> rep;

  void SetUp() override {
    store_options o;
    o.path = (dir.path / "db").string();
    auto s = store::open(std::move(o));
    ASSERT_TRUE(s) << describe(s.error());
    db = std::shared_ptr<store>{std::move(*s)};
    rep = replicator::make(
      db, "n1", replication_options{},
      [] {
        return std::vector<replica_peer>{{"n1", {}, true}};
      },
      [](const std::string&, const remote_call&, std::chrono::milliseconds,
         replicator::reply_fn done) { done(make_error(errc::unavailable, "no peers here")); });
  }

  void TearDown() override {
    rep->shutdown();
  }

  caf::expected<std::string> call(const std::string& op, const std::string& body) {
    remote_call req;
    req.op = op;
    req.id = *parse_agent_id("acme/r");
    req.call.body = body;
    std::promise<caf::expected<std::string>> p;
    rep->handle(req, [&p](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  std::string meta_bytes() {
    records::meta_record m;
    m.hdr = {"acme/r", 1, 0};
    m.kind = "counter";
    m.persistence = "journaled";
    return records::encode(m);
  }
};

} // namespace

TEST_F(replication_test, malformed_calls_get_clear_errors_and_store_nothing) {
  auto bad_prepare = call("r.prepare", "not a bundle");
  ASSERT_FALSE(bad_prepare);
  EXPECT_EQ(code_of(bad_prepare.error()), errc::invalid_argument) << describe(bad_prepare.error());
  auto bad_append = call("r.append", "not a record");
  ASSERT_FALSE(bad_append);
  EXPECT_EQ(code_of(bad_append.error()), errc::corrupt_record) << describe(bad_append.error());
  auto bad_sync = call("r.sync", replicator::pack({"5"}));
  ASSERT_FALSE(bad_sync);
  EXPECT_EQ(code_of(bad_sync.error()), errc::invalid_argument);
  // Numbers that are not numbers (an epoch, the drain epoch of a promise, a prune point):
  // refused, never read as 0.
  for (auto [op, body, part] :
       {std::tuple{"r.prepare", replicator::pack({"x7", "n2", meta_bytes(), "n1,n2,n3"}), "epoch"},
        std::tuple{"r.prepare", replicator::pack({"7", "n2", meta_bytes(), "n1,n2,n3", "6 "}),
                   "drain epoch"},
        std::tuple{"r.prepare", replicator::pack({"7", "n2", meta_bytes(), "n1,n2,n3", ""}),
                   "drain epoch"},
        std::tuple{"r.sync", replicator::pack({"-1", meta_bytes(), ""}), "epoch"},
        std::tuple{"r.snapshot", replicator::pack({"1e3", "x"}), "prune"}}) {
    auto r = call(op, body);
    ASSERT_FALSE(r) << op << " took a malformed " << part;
    EXPECT_EQ(code_of(r.error()), errc::invalid_argument) << describe(r.error());
    EXPECT_NE(message_of(r.error()).find(part), std::string::npos) << describe(r.error());
  }
  auto unknown = call("r.nonsense", "");
  ASSERT_FALSE(unknown);
  EXPECT_NE(message_of(unknown.error()).find("r.nonsense"), std::string::npos);
  auto stored = db->get_meta(replicator::copy_key("acme/r"));
  ASSERT_TRUE(stored);
  EXPECT_FALSE(stored->has_value()) << "a malformed call stored a copy";
}

TEST_F(replication_test, a_copy_refuses_an_older_epoch_after_promising_a_newer_one) {
  auto ok = call("r.prepare", replicator::pack({"7", "n2", meta_bytes(), "n1,n2,n3"}));
  ASSERT_TRUE(ok) << describe(ok.error());
  auto older = call("r.prepare", replicator::pack({"6", "n3", meta_bytes(), "n1,n2,n3"}));
  ASSERT_FALSE(older);
  EXPECT_EQ(code_of(older.error()), errc::fenced);
  EXPECT_NE(message_of(older.error()).find("promised epoch 7 to n2"), std::string::npos)
    << message_of(older.error());
  records::event_record ev;
  ev.hdr = {"acme/r", 6, 1};
  ev.payload = "1";
  auto stale = call("r.append", records::encode(ev));
  ASSERT_FALSE(stale);
  EXPECT_EQ(code_of(stale.error()), errc::fenced);
  ev.hdr.epoch = 7;
  auto current = call("r.append", records::encode(ev));
  EXPECT_TRUE(current) << describe(current.error());
  auto state = call("r.query", "");
  ASSERT_TRUE(state);
  EXPECT_NE(state->find(R"("last_seq":1)"), std::string::npos) << *state;
  EXPECT_NE(state->find(R"("promised":7)"), std::string::npos) << *state;
  // A write that names no epoch (0) is refused too: 0 is "no draining epoch", not one.
  records::event_record zero_ev;
  zero_ev.hdr = {"acme/r", 0, 1};
  zero_ev.payload = "1";
  auto zero = call("r.append", records::encode(zero_ev));
  ASSERT_FALSE(zero) << "a copy that promised epoch 7 took a write at epoch 0";
  EXPECT_EQ(code_of(zero.error()), errc::fenced) << describe(zero.error());
}

TEST(replication_bundle, truncated_bundles_are_refused) {
  auto whole = replicator::pack({"ab", "", "cde"});
  auto parts = replicator::unpack(whole);
  ASSERT_TRUE(parts);
  EXPECT_EQ(*parts, (std::vector<std::string>{"ab", "", "cde"}));
  for (size_t cut = 1; cut < whole.size(); ++cut) {
    auto r = replicator::unpack(std::string_view{whole}.substr(0, cut));
    if (cut == 6 || cut == 10) // part boundaries: a shorter, valid bundle
      continue;
    EXPECT_FALSE(r) << "cut at " << cut;
  }
}

// -- activations: three replicators, calls passed in process -------------------------------------

namespace {

/// Three members' replicators on their own stores; a call to member X runs X's `handle`.
/// Calls to a member in `silent` are never answered (held until the end).
class replication_rounds : public ::testing::Test {
protected:
  static constexpr const char* agent = "acme/h";
  test::temp_dir dir;
  std::map<std::string, std::shared_ptr<store>> dbs;
  std::map<std::string, std::shared_ptr<replicator>> reps;
  std::mutex mtx;
  std::vector<std::string> calls; ///< "member op", in order
  std::set<std::string> silent;
  std::vector<replicator::reply_fn> held;

  void SetUp() override {
    std::vector<replica_peer> all{{"n1", "n1", true}, {"n2", "n2", true}, {"n3", "n3", true}};
    for (auto& p : all) {
      store_options o;
      o.path = (dir.path / p.name).string();
      auto s = store::open(std::move(o));
      ASSERT_TRUE(s) << describe(s.error());
      dbs[p.name] = std::shared_ptr<store>{std::move(*s)};
    }
    for (auto& p : all) {
      replication_options ro;
      ro.timeout = std::chrono::seconds(60); // a round waits for a majority, never for this
      ro.handover_wait = std::chrono::seconds(2);
      reps[p.name] = replicator::make(
        dbs[p.name], p.name, ro, [all] { return all; },
        [this](const std::string& address, const remote_call& req, std::chrono::milliseconds,
               replicator::reply_fn done) {
          std::shared_ptr<replicator> to;
          {
            std::lock_guard<std::mutex> guard{mtx};
            calls.push_back(address + " " + req.op);
            if (silent.count(address) > 0) {
              held.push_back(std::move(done));
              return;
            }
            if (auto r = reps.find(address); r != reps.end())
              to = r->second;
          }
          if (!to) // (the test is over: TearDown released the replicators)
            return done(make_error(errc::shutting_down, address + " is gone (test over)"));
          to->handle(req, std::move(done));
        });
    }
  }

  void TearDown() override {
    std::vector<replicator::reply_fn> late;
    {
      std::lock_guard<std::mutex> guard{mtx};
      late.swap(held);
    }
    for (auto& done : late)
      done(make_error(errc::shutting_down, "test over"));
    for (auto& [_, r] : reps)
      r->shutdown();
    test::drain_completions(dbs); // (see tests/support/store_drain.hpp)
    {
      std::lock_guard<std::mutex> guard{mtx};
      reps.clear(); // (the call function looks members up in it under mtx)
    }
    test::drain_until_only_held_here(dbs);
  }

  records::meta_record meta() {
    records::meta_record m;
    m.hdr = {agent, 1, 0};
    m.kind = "counter";
    m.persistence = "journaled";
    return m;
  }

  std::vector<std::string> ops_since(size_t from) {
    std::lock_guard<std::mutex> guard{mtx};
    return {calls.begin() + static_cast<ptrdiff_t>(from), calls.end()};
  }

  size_t calls_so_far() {
    std::lock_guard<std::mutex> guard{mtx};
    return calls.size();
  }

  /// Member `on` has its copy promise `epoch` to `holder` (a call as another member makes it).
  void promise(const std::string& on, uint64_t epoch, const std::string& holder) {
    remote_call req;
    req.op = "r.prepare";
    req.id = *parse_agent_id(agent);
    req.call.body =
      replicator::pack({std::to_string(epoch), holder, records::encode(meta()), "n1,n2,n3"});
    std::promise<caf::expected<std::string>> p;
    reps.at(on)->handle(req, [&p](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    ASSERT_TRUE(r) << describe(r.error());
  }

  caf::expected<uint64_t> acquire(const std::string& on, uint64_t min_epoch, bool fresh,
                                  replicator::activation_hints* hints = nullptr) {
    auto f = std::async(std::launch::async, [&] {
      return reps.at(on)->acquire(*parse_agent_id(agent), meta(), min_epoch, fresh, hints);
    });
    // Liveness, not speed: a round that waited for the silent member would take 60 s.
    if (f.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      ADD_FAILURE() << "acquire on " << on << " still waits after 20 s";
      f.wait();
    }
    return f.get();
  }
};

} // namespace

TEST_F(replication_rounds, a_migrations_target_asks_for_its_promise_without_the_query_round) {
  auto first = acquire("n1", 5, true);
  ASSERT_TRUE(first) << describe(first.error());
  EXPECT_EQ(*first, 5u);
  auto mark = calls_so_far();
  reps.at("n2")->expect_handover(*parse_agent_id(agent), *first);
  auto moved = acquire("n2", 1, false);
  ASSERT_TRUE(moved) << describe(moved.error());
  EXPECT_EQ(*moved, 6u) << "the epoch after the one the agent left with";
  for (auto& c : ops_since(mark))
    EXPECT_EQ(c.find("r.query"), std::string::npos) << "a handover ran the query round: " << c;
  // A plain activation elsewhere now finds n2 holding it (the promise moved).
  auto stolen = acquire("n3", 1, false);
  ASSERT_FALSE(stolen);
  EXPECT_EQ(code_of(stolen.error()), errc::agent_not_found) << describe(stolen.error());
}

TEST_F(replication_rounds, a_handover_round_sent_early_is_the_one_its_activation_waits_for) {
  auto first = acquire("n1", 5, true);
  ASSERT_TRUE(first) << describe(first.error());
  auto id = *parse_agent_id(agent);
  auto mark = calls_so_far();
  // The shipment arrives on n2: the round goes out at once, before any activation runs.
  auto round = reps.at("n2")->begin_handover(id, meta(), *first, 3);
  ASSERT_NE(round, nullptr);
  auto sent = ops_since(mark);
  EXPECT_EQ(std::count_if(sent.begin(), sent.end(),
                          [](auto& c) { return c.find(" r.prepare") != std::string::npos; }),
            2)
    << "one prepare to each other member of the set";
  // The activation takes that round over: it sends no round of its own.
  auto mark2 = calls_so_far();
  replicator::activation_hints hints;
  hints.round = round;
  hints.position = std::make_pair(*first, uint64_t{0});
  auto moved = acquire("n2", 3, false, &hints);
  ASSERT_TRUE(moved) << describe(moved.error());
  EXPECT_EQ(*moved, *first + 1);
  EXPECT_FALSE(hints.replaced);
  for (auto& c : ops_since(mark2))
    EXPECT_EQ(c.find("r.prepare"), std::string::npos) << "the activation sent a round: " << c;
  // (The round ended at a majority: n3's promise may still be on its way to its store.)
  test::drain_completions(dbs);
  auto copy = dbs.at("n3")->get_meta(replicator::copy_key(agent));
  ASSERT_TRUE(copy && copy->has_value());
  EXPECT_EQ((*copy)->promised_epoch, *first + 1);
  EXPECT_EQ((*copy)->holder, "n2");
  // A round is used once: a later activation of n2 asks again.
  auto mark3 = calls_so_far();
  auto again = acquire("n2", 1, false, &hints);
  ASSERT_TRUE(again) << describe(again.error());
  EXPECT_GT(*again, *moved);
  auto ops = ops_since(mark3);
  EXPECT_TRUE(std::any_of(ops.begin(), ops.end(),
                          [](auto& c) { return c.find("r.prepare") != std::string::npos; }));
}

TEST_F(replication_rounds, a_handover_refused_as_too_old_runs_both_rounds_and_wins_a_newer_epoch) {
  // A majority promised epoch 50 to n3 meanwhile: the target's first prepare (epoch 11) is
  // fenced, so it queries, then asks for 51.
  promise("n2", 50, "n3");
  promise("n3", 50, "n3");
  auto mark = calls_so_far();
  reps.at("n1")->expect_handover(*parse_agent_id(agent), 10);
  auto got = acquire("n1", 1, false);
  ASSERT_TRUE(got) << describe(got.error());
  EXPECT_EQ(*got, 51u);
  auto ops = ops_since(mark);
  auto first_query = std::find_if(ops.begin(), ops.end(),
                                  [](auto& c) { return c.find("r.query") != std::string::npos; });
  ASSERT_NE(first_query, ops.end()) << "no query round after the refused prepare";
  EXPECT_NE(ops.front().find("r.prepare"), std::string::npos) << ops.front();
}

TEST_F(replication_rounds, an_activation_needs_a_majority_of_answers_not_all_of_them) {
  {
    std::lock_guard<std::mutex> guard{mtx};
    silent.insert("n3");
  }
  auto got = acquire("n1", 3, true);
  ASSERT_TRUE(got) << describe(got.error());
  EXPECT_EQ(*got, 3u);
  // n3 holds no promise; the majority (n1, n2) does.
  auto copy = dbs.at("n2")->get_meta(replicator::copy_key(agent));
  ASSERT_TRUE(copy && copy->has_value());
  EXPECT_EQ((*copy)->promised_epoch, 3u);
  EXPECT_EQ((*copy)->holder, "n1");
}

TEST_F(
  replication_rounds,
  a_source_promises_its_target_the_next_epoch_while_it_writes_and_the_target_takes_it_without_a_round) {
  auto id = *parse_agent_id(agent);
  auto wait = [](auto& p) { return p.get_future().get(); };
  // n1 hosts the agent at epoch 5 and writes one event, acknowledged by a majority.
  std::promise<caf::error> meta_written;
  dbs.at("n1")->put_meta(meta(), false,
                         [&meta_written](caf::error e) { meta_written.set_value(std::move(e)); });
  ASSERT_FALSE(wait(meta_written));
  auto first = acquire("n1", 5, true);
  ASSERT_TRUE(first) << describe(first.error());
  ASSERT_EQ(*first, 5u);
  records::event_record ev;
  ev.hdr = {agent, 5, 1};
  ev.payload = "{}";
  std::promise<caf::error> wrote;
  reps.at("n1")->append(ev, [&wrote](caf::error e) { wrote.set_value(std::move(e)); });
  auto wrote_err = wait(wrote);
  ASSERT_FALSE(wrote_err) << describe(wrote_err);
  // It moves to n2: n1 has the set promise the next epoch to n2.
  std::promise<caf::expected<replicator::grant>> granted;
  reps.at("n1")->promise_to(id, meta(), 5, "n2", [&granted](caf::expected<replicator::grant> g) {
    granted.set_value(std::move(g));
  });
  auto g = wait(granted);
  ASSERT_TRUE(g) << describe(g.error());
  EXPECT_EQ(g->epoch, 6u);
  EXPECT_EQ(std::make_pair(g->newest_epoch, g->newest_seq),
            std::make_pair(uint64_t{5}, uint64_t{1}))
    << "the newest copy among the promising members is the last write";
  test::drain_completions(dbs);
  size_t holding = 0;
  for (auto* n : {"n1", "n2", "n3"}) {
    auto copy = dbs.at(n)->get_meta(replicator::copy_key(agent));
    ASSERT_TRUE(copy && copy->has_value()) << n;
    holding += (*copy)->promised_epoch == 6 && (*copy)->holder == "n2" ? 1 : 0;
  }
  EXPECT_GE(holding, 2u) << "a majority promised epoch 6 to n2";
  // Until n2 writes, n1's activation still writes at epoch 5 (it serves until it stops for
  // the move), and a read there is still confirmed.
  ev.hdr.seq = 2;
  std::promise<caf::error> still;
  reps.at("n1")->append(ev, [&still](caf::error e) { still.set_value(std::move(e)); });
  auto still_err = wait(still);
  EXPECT_FALSE(still_err) << "a write of the source before its target wrote: "
                          << describe(still_err);
  auto confirmed = reps.at("n1")->confirm(id, 5);
  EXPECT_FALSE(confirmed) << describe(confirmed);
  // n2 does not take the agent over from its copy while the shipment may still come.
  EXPECT_FALSE(reps.at("n2")->may_take_over(id));
  // The target activates at the granted epoch, asking no replica anything.
  auto mark = calls_so_far();
  replicator::activation_hints hints;
  hints.granted = g->epoch;
  auto moved = acquire("n2", 1, false, &hints);
  ASSERT_TRUE(moved) << describe(moved.error());
  EXPECT_EQ(*moved, 6u);
  EXPECT_EQ(ops_since(mark), std::vector<std::string>{}) << "the target sent a round";
  // Once the target wrote at its epoch (to the copies on n1 and n3 here), a write of the
  // source is fenced, and so is its read.
  test::drain_completions(dbs);
  records::event_record next;
  next.hdr = {agent, 6, 3};
  next.payload = "{}";
  remote_call w{"r.append", id, {}, 2000};
  w.call.body = records::encode(next);
  for (auto* on : {"n1", "n3"}) {
    std::promise<caf::expected<std::string>> ok;
    reps.at(on)->handle(w, [&ok](caf::expected<std::string> r) { ok.set_value(std::move(r)); });
    auto r = ok.get_future().get();
    ASSERT_TRUE(r) << on << ": " << describe(r.error());
  }
  ev.hdr.seq = 3;
  std::promise<caf::error> late;
  reps.at("n1")->append(ev, [&late](caf::error e) { late.set_value(std::move(e)); });
  auto late_err = wait(late);
  EXPECT_EQ(code_of(late_err), errc::fenced) << describe(late_err);
  EXPECT_EQ(code_of(reps.at("n1")->confirm(id, 5)), errc::fenced);
}

TEST_F(replication_rounds,
       a_promise_made_for_a_shipment_that_never_came_lets_its_holder_take_over_later) {
  auto id = *parse_agent_id(agent);
  auto first = acquire("n1", 5, true);
  ASSERT_TRUE(first) << describe(first.error());
  std::promise<caf::expected<replicator::grant>> granted;
  reps.at("n1")->promise_to(id, meta(), 5, "n2", [&granted](caf::expected<replicator::grant> g) {
    granted.set_value(std::move(g));
  });
  auto g = granted.get_future().get();
  ASSERT_TRUE(g) << describe(g.error());
  test::drain_completions(dbs);
  // n1 failed before it shipped the state. n2 holds the promise and serves calls, so no other
  // member takes the agent over; n2 waits for the shipment (handover_wait, 2 s here), then
  // takes it over from its copy.
  EXPECT_FALSE(reps.at("n3")->may_take_over(id)) << "n3 took over from a serving holder";
  EXPECT_FALSE(reps.at("n2")->may_take_over(id)) << "n2 did not wait for the shipment";
  std::this_thread::sleep_for(std::chrono::milliseconds(2300));
  EXPECT_TRUE(reps.at("n2")->may_take_over(id));
  EXPECT_FALSE(reps.at("n3")->may_take_over(id));
  auto taken = acquire("n2", 1, false);
  ASSERT_TRUE(taken) << describe(taken.error());
  EXPECT_GT(*taken, g->epoch);
}

TEST_F(replication_rounds, a_copy_that_misses_an_event_keeps_the_later_ones_for_its_repair) {
  auto id = *parse_agent_id(agent);
  auto on_n3 = [&](const std::string& op, std::string body) {
    remote_call req{op, id, {}, 2000};
    req.call.body = std::move(body);
    std::promise<caf::expected<std::string>> p;
    reps.at("n3")->handle(req, [&p](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  auto event = [&](uint64_t seq) {
    records::event_record ev;
    ev.hdr = {agent, 5, seq};
    ev.payload = std::to_string(seq);
    return records::encode(ev);
  };
  auto last_seq = [&] {
    test::drain_completions(dbs);
    auto q = on_n3("r.query", "");
    EXPECT_TRUE(q) << describe(q.error());
    if (!q)
      return uint64_t{0};
    return nlohmann::json::parse(*q).value("last_seq", uint64_t{0});
  };
  ASSERT_TRUE(
    on_n3("r.prepare", replicator::pack({"5", "n1", records::encode(meta()), "n1,n2,n3"})));
  for (uint64_t seq : {1, 2}) {
    auto r = on_n3("r.append", event(seq));
    ASSERT_TRUE(r) << seq << ": " << describe(r.error());
  }
  // Event 3 never reaches n3. 4 leaves a hole; 5 and 6 come while the repair travels.
  for (uint64_t seq : {4, 5, 6}) {
    auto r = on_n3("r.append", event(seq));
    ASSERT_FALSE(r) << seq << " was taken past a hole";
    EXPECT_EQ(code_of(r.error()), errc::conflict) << describe(r.error());
    test::drain_completions(dbs);
  }
  EXPECT_EQ(last_seq(), 2u);
  // The repair: the holder's copy as it was when it read it, up to 4.
  auto sync = on_n3(
    "r.sync",
    replicator::pack({"5", records::encode(meta()), "", event(1), event(2), event(3), event(4)}));
  ASSERT_TRUE(sync) << describe(sync.error());
  EXPECT_EQ(last_seq(), 6u) << "the writes made while the repair travelled were lost";
  auto next = on_n3("r.append", event(7));
  EXPECT_TRUE(next) << describe(next.error());
  EXPECT_EQ(last_seq(), 7u);
}
