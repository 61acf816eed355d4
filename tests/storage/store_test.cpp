// The RocksDB store (storage/store.hpp): journal appends with an expected sequence number,
// group commit, reads by range, snapshots with pruning, agent metas, erase, reopen, epochs,
// checkpoints, and corruption that must surface as corrupt_record, never as data.

#include "storage/store.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protocols/errc.hpp"
#include "protocols/records.hpp"
#include "tests/storage/store_support.hpp"

namespace {

using namespace hive;
using namespace hive::test;

class Store : public ::testing::Test {
protected:
  void SetUp() override {
    observer_ = std::make_shared<recording_observer>();
    reopen();
  }

  void reopen(store_options opts = {}) {
    st_.reset();
    opts.observer = observer_;
    st_ = open_store(db_path(), std::move(opts));
    ASSERT_NE(st_, nullptr);
  }

  void close() {
    st_.reset();
  }

  std::string db_path() const {
    return dir_.sub("db");
  }

  std::vector<records::event_record> events(const std::string& agent, uint64_t from = 0,
                                            uint64_t to = UINT64_MAX, size_t limit = SIZE_MAX) {
    auto evs = st_->read_events(agent, from, to, limit);
    EXPECT_TRUE(evs) << describe(evs.error());
    return evs ? std::move(*evs) : std::vector<records::event_record>{};
  }

  uint64_t last(const std::string& agent) {
    auto x = st_->last_seq(agent);
    EXPECT_TRUE(x) << describe(x.error());
    return x ? *x : UINT64_MAX;
  }

  /// Creates `agent` (its meta): appends and snapshots need an existing agent.
  void create(const std::string& agent, std::string kind = "counter") {
    if (auto err = put_meta_sync(*st_, make_meta(agent, std::move(kind)), true))
      FAIL() << "creating " << agent << ": " << describe(err);
  }

  void append_n(const std::string& agent, uint64_t first, uint64_t last_seq) {
    for (auto s = first; s <= last_seq; ++s)
      if (auto err = append_sync(*st_, agent, s))
        FAIL() << agent << " seq " << s << ": " << describe(err);
  }

  temp_dir dir_;
  std::shared_ptr<recording_observer> observer_;
  std::unique_ptr<store> st_;
};

// -- journal -----------------------------------------------------------------------------------

TEST_F(Store, AppendsInSequenceAndReadsThemBack) {
  create("acme/c1");
  for (uint64_t s = 1; s <= 3; ++s)
    ASSERT_FALSE(append_sync(*st_, "acme/c1", s, "payload-" + std::to_string(s)));
  auto evs = events("acme/c1");
  ASSERT_EQ(seqs_of(evs), iota_seqs(1, 3));
  for (auto& ev : evs) {
    EXPECT_EQ(ev.hdr.agent, "acme/c1");
    EXPECT_EQ(ev.payload, "payload-" + std::to_string(ev.hdr.seq));
  }
  EXPECT_EQ(last("acme/c1"), 3u);
  EXPECT_EQ(observer_->appends(), 3u);
  EXPECT_TRUE(observer_->failures().empty());
}

TEST_F(Store, GapAndDuplicateAreConflicts) {
  create("acme/c1");
  create("acme/c2");
  append_n("acme/c1", 1, 3);
  for (uint64_t bad : {5u, 3u, 1u, 0u}) {
    auto err = append_sync(*st_, "acme/c1", bad);
    ASSERT_TRUE(err) << "seq " << bad << " accepted";
    EXPECT_EQ(code_of(err), errc::conflict) << describe(err);
  }
  // A new agent starts at 1.
  EXPECT_EQ(code_of(append_sync(*st_, "acme/c2", 2)), errc::conflict);
  // Nothing of the refused appends is stored, and the right next one still works.
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(1, 3));
  EXPECT_FALSE(append_sync(*st_, "acme/c1", 4));
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(1, 4));
  EXPECT_TRUE(events("acme/c2").empty());
  auto failures = observer_->failures();
  EXPECT_EQ(std::count(failures.begin(), failures.end(), "conflict"), 5);
}

TEST_F(Store, AppendToAnAgentWithoutMetaIsRefused) {
  auto err = append_sync(*st_, "acme/ghost", 1);
  EXPECT_EQ(code_of(err), errc::agent_not_found) << describe(err);
  EXPECT_TRUE(events("acme/ghost").empty());
  err = put_snapshot_sync(*st_, make_snapshot("acme/ghost", 1, "x"), 0);
  EXPECT_EQ(code_of(err), errc::agent_not_found) << describe(err);
  auto snap = st_->get_snapshot("acme/ghost");
  ASSERT_TRUE(snap) << describe(snap.error());
  EXPECT_FALSE(snap->has_value());
}

TEST_F(Store, ConflictIsCheckedInCommitOrderWithinOneBatch) {
  create("acme/c1");
  std::vector<caf::error> results(6);
  std::atomic<int> done{0};
  {
    writer_gate gate{*st_};
    observer_->clear();
    uint64_t order[] = {1, 1, 2, 4, 3, 3};
    for (size_t i = 0; i < 6; ++i)
      st_->append(make_event("acme/c1", order[i], "try#" + std::to_string(i)),
                  [&, i](caf::error err) {
                    results[i] = std::move(err);
                    ++done;
                  });
  }
  ASSERT_FALSE(wait_done([&](store::done_fn d) { st_->barrier(std::move(d)); }));
  ASSERT_EQ(done.load(), 6);
  EXPECT_FALSE(results[0]);
  EXPECT_EQ(code_of(results[1]), errc::conflict);
  EXPECT_FALSE(results[2]);
  EXPECT_EQ(code_of(results[3]), errc::conflict);
  EXPECT_FALSE(results[4]);
  EXPECT_EQ(code_of(results[5]), errc::conflict);
  // One group commit carried the three winners.
  EXPECT_EQ(observer_->commits(), std::vector<size_t>{3});
  auto evs = events("acme/c1");
  ASSERT_EQ(seqs_of(evs), iota_seqs(1, 3));
  EXPECT_EQ(evs[0].payload, "try#0");
  EXPECT_EQ(evs[1].payload, "try#2");
  EXPECT_EQ(evs[2].payload, "try#4");
}

TEST_F(Store, WritesQueuedUnderACommitHoldShareOneGroupCommit) {
  observer_->clear();
  std::atomic<int> done{0};
  {
    auto hold = st_->hold_commits();
    st_->put_meta(make_meta("acme/h1", "counter"), false, [&](caf::error err) {
      EXPECT_FALSE(err) << describe(err);
      ++done;
    });
    // Time enough for an idle writer to commit the first write alone, were it not held.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(done.load(), 0) << "a write committed while the hold lived";
    st_->put_meta(make_meta("acme/h2", "counter"), false, [&](caf::error err) {
      EXPECT_FALSE(err) << describe(err);
      ++done;
    });
  }
  ASSERT_FALSE(wait_done([&](store::done_fn d) { st_->barrier(std::move(d)); }));
  EXPECT_EQ(done.load(), 2);
  EXPECT_EQ(observer_->commits(), std::vector<size_t>{2});
}

TEST_F(Store, ConcurrentAppendersToDifferentAgentsAllSucceedInGroupCommits) {
  constexpr int threads_n = 8;
  constexpr uint64_t per_thread = 60;
  observer_->clear();
  for (int t = 0; t < threads_n; ++t)
    create("acme/a" + std::to_string(t));
  observer_->clear();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < threads_n; ++t)
    threads.emplace_back([&, t] {
      auto agent = "acme/a" + std::to_string(t);
      for (uint64_t s = 1; s <= per_thread; ++s)
        if (auto err = append_sync(*st_, agent, s)) {
          ADD_FAILURE() << agent << " seq " << s << ": " << describe(err);
          ++failures;
          return;
        }
    });
  for (auto& t : threads)
    t.join();
  ASSERT_EQ(failures.load(), 0);
  for (int t = 0; t < threads_n; ++t)
    EXPECT_EQ(seqs_of(events("acme/a" + std::to_string(t))), iota_seqs(1, per_thread));
  auto commits = observer_->commits();
  size_t total = 0;
  for (auto w : commits)
    total += w;
  EXPECT_EQ(total, threads_n * per_thread);
  EXPECT_GT(*std::max_element(commits.begin(), commits.end()), 1u)
    << "no group commit carried more than one write in " << commits.size() << " commits";
  EXPECT_LT(commits.size(), threads_n * per_thread);
  EXPECT_EQ(observer_->appends(), threads_n * per_thread);
}

TEST_F(Store, GroupCommitTakesEverythingQueuedUpToTheBatchLimit) {
  store_options opts;
  opts.commit_batch_writes_max = 64;
  reopen(opts);
  for (int t = 0; t < 4; ++t)
    create("acme/p" + std::to_string(t));
  std::atomic<int> ok{0};
  {
    writer_gate gate{*st_};
    observer_->clear();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        // Pipelined: submission order is commit order, so 1..50 succeed without waiting.
        for (uint64_t s = 1; s <= 50; ++s)
          st_->append(make_event("acme/p" + std::to_string(t), s), [&](caf::error err) {
            EXPECT_FALSE(err) << describe(err);
            if (!err)
              ++ok;
          });
      });
    for (auto& t : threads)
      t.join();
  }
  ASSERT_FALSE(wait_done([&](store::done_fn d) { st_->barrier(std::move(d)); }));
  EXPECT_EQ(ok.load(), 200);
  EXPECT_EQ(observer_->commits(), (std::vector<size_t>{64, 64, 64, 8}));
  for (int t = 0; t < 4; ++t)
    EXPECT_EQ(seqs_of(events("acme/p" + std::to_string(t))), iota_seqs(1, 50));
}

TEST_F(Store, FullQueueRefusesWithOverloaded) {
  store_options opts;
  opts.commit_queue_writes_max = 10;
  reopen(opts);
  create("acme/q");
  std::atomic<int> ok{0};
  std::atomic<int> completed{0};
  {
    writer_gate gate{*st_};
    for (uint64_t s = 1; s <= 10; ++s)
      st_->append(make_event("acme/q", s), [&](caf::error err) {
        if (!err)
          ++ok;
        ++completed;
      });
    // The 11th is refused at once, on this thread.
    caf::error refused;
    bool called = false;
    st_->append(make_event("acme/q", 11), [&](caf::error err) {
      called = true;
      refused = std::move(err);
    });
    ASSERT_TRUE(called);
    EXPECT_EQ(code_of(refused), errc::overloaded) << describe(refused);
  }
  // (A barrier now could itself find the queue still full: wait for the completions.)
  auto deadline = std::chrono::steady_clock::now() + completion_timeout;
  while (completed.load() < 10 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  ASSERT_EQ(completed.load(), 10);
  EXPECT_EQ(ok.load(), 10);
  EXPECT_EQ(last("acme/q"), 10u);
  // Drained, the queue takes writes again.
  EXPECT_FALSE(append_sync(*st_, "acme/q", 11));
}

TEST_F(Store, OversizeRecordIsRefusedWithTooLarge) {
  store_options opts;
  opts.record_bytes_max = 1024;
  reopen(opts);
  create("acme/big");
  auto err = append_sync(*st_, "acme/big", 1, std::string(2000, 'x'));
  EXPECT_EQ(code_of(err), errc::too_large) << describe(err);
  EXPECT_EQ(last("acme/big"), 0u);
  EXPECT_FALSE(append_sync(*st_, "acme/big", 1, std::string(500, 'x')));
}

TEST_F(Store, ReadJournalFromStopsAtTheFirstMissingSequence) {
  for (auto id : {"acme/c1", "acme/c10"})
    create(id);
  append_n("acme/c1", 1, 10);
  append_n("acme/c10", 1, 3);
  auto all = st_->read_journal_from("acme/c1", 1, 100);
  ASSERT_TRUE(all) << describe(all.error());
  EXPECT_EQ(seqs_of(*all), iota_seqs(1, 10));
  auto tail = st_->read_journal_from("acme/c1", 8, 100);
  ASSERT_TRUE(tail);
  EXPECT_EQ(seqs_of(*tail), iota_seqs(8, 10));
  auto limited = st_->read_journal_from("acme/c1", 2, 3);
  ASSERT_TRUE(limited);
  EXPECT_EQ(seqs_of(*limited), iota_seqs(2, 4));
  auto none = st_->read_journal_from("acme/c1", 11, 100);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  // A neighbour's journal never mixes in.
  auto other = st_->read_journal_from("acme/c10", 1, 100);
  ASSERT_TRUE(other);
  EXPECT_EQ(seqs_of(*other), iota_seqs(1, 3));
  for (auto& ev : *other)
    EXPECT_EQ(ev.hdr.agent, "acme/c10");
  // After pruning by a snapshot, replay starts after it.
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/c1", 6, "s6"), 6));
  auto after = st_->read_journal_from("acme/c1", 7, 100);
  ASSERT_TRUE(after);
  EXPECT_EQ(seqs_of(*after), iota_seqs(7, 10));
  auto pruned = st_->read_journal_from("acme/c1", 1, 100);
  ASSERT_TRUE(pruned);
  EXPECT_TRUE(pruned->empty());
}

TEST_F(Store, ReadEventsHonoursFromToAndLimit) {
  for (auto id : {"acme/c1", "acme/c10", "acme/c", "acme/c1.x"})
    create(id);
  append_n("acme/c1", 1, 10);
  // Neighbours whose ids extend or share a prefix with acme/c1 must never mix in.
  append_n("acme/c10", 1, 2);
  append_n("acme/c", 1, 2);
  append_n("acme/c1.x", 1, 2);
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(1, 10));
  EXPECT_EQ(seqs_of(events("acme/c1", 3, 7)), iota_seqs(3, 7));
  EXPECT_EQ(seqs_of(events("acme/c1", 0, UINT64_MAX, 4)), iota_seqs(1, 4));
  EXPECT_EQ(seqs_of(events("acme/c1", 8, 100)), iota_seqs(8, 10));
  EXPECT_EQ(seqs_of(events("acme/c1", 5, 5)), iota_seqs(5, 5));
  EXPECT_EQ(seqs_of(events("acme/c1", 4, 9, 2)), iota_seqs(4, 5));
  EXPECT_TRUE(events("acme/c1", 11, 20).empty());
  EXPECT_TRUE(events("acme/c1", 5, 4).empty());
  EXPECT_TRUE(events("acme/c1", 1, 10, 0).empty());
  EXPECT_TRUE(events("acme/nobody").empty());
  EXPECT_EQ(seqs_of(events("acme/c10")), iota_seqs(1, 2));
  EXPECT_EQ(seqs_of(events("acme/c")), iota_seqs(1, 2));
  EXPECT_EQ(last("acme/c1"), 10u);
  EXPECT_EQ(last("acme/c10"), 2u);
  EXPECT_EQ(last("acme/c"), 2u);
  EXPECT_EQ(last("acme/nobody"), 0u);
  for (auto& ev : events("acme/c10"))
    EXPECT_EQ(ev.hdr.agent, "acme/c10");
}

// -- snapshots ---------------------------------------------------------------------------------

TEST_F(Store, SnapshotPrunesTheJournalThroughTheGivenSeq) {
  create("acme/c1");
  create("acme/c2");
  append_n("acme/c1", 1, 10);
  append_n("acme/c2", 1, 3);
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/c1", 6, "state@6"), 4));
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(5, 10));
  EXPECT_EQ(last("acme/c1"), 10u);
  EXPECT_EQ(seqs_of(events("acme/c2")), iota_seqs(1, 3)); // other agents untouched
  auto snap = st_->get_snapshot("acme/c1");
  ASSERT_TRUE(snap) << describe(snap.error());
  ASSERT_TRUE(snap->has_value());
  EXPECT_EQ((*snap)->hdr.seq, 6u);
  EXPECT_EQ((*snap)->state, "state@6");
  ASSERT_EQ((*snap)->dedup.size(), 1u);
  EXPECT_EQ((*snap)->dedup[0].reply, "reply#6");
  // The next append continues after the journal, not after the snapshot.
  EXPECT_EQ(code_of(append_sync(*st_, "acme/c1", 7)), errc::conflict);
  EXPECT_FALSE(append_sync(*st_, "acme/c1", 11));
  // A newer snapshot replaces the old one; pruning everything leaves the snapshot's seq.
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/c1", 11, "state@11"), 11));
  EXPECT_TRUE(events("acme/c1").empty());
  EXPECT_EQ(last("acme/c1"), 11u);
  EXPECT_EQ(code_of(append_sync(*st_, "acme/c1", 1)), errc::conflict);
  EXPECT_FALSE(append_sync(*st_, "acme/c1", 12));
  // Without the writer's cache (after a reopen) the same holds.
  reopen();
  EXPECT_EQ(last("acme/c1"), 12u);
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(12, 12));
  snap = st_->get_snapshot("acme/c1");
  ASSERT_TRUE(snap && snap->has_value());
  EXPECT_EQ((*snap)->state, "state@11");
  EXPECT_FALSE(append_sync(*st_, "acme/c1", 13));
}

TEST_F(Store, SnapshotRequiringTheJournalIsRefusedAheadOfIt) {
  create("acme/j");
  append_n("acme/j", 1, 3);
  auto err = wait_done([&](store::done_fn d) {
    st_->put_snapshot(make_snapshot("acme/j", 5, "ahead"), 0, std::move(d), true);
  });
  EXPECT_EQ(code_of(err), errc::conflict) << describe(err);
  auto snap = st_->get_snapshot("acme/j");
  ASSERT_TRUE(snap) << describe(snap.error());
  EXPECT_FALSE(snap->has_value());
  EXPECT_EQ(last("acme/j"), 3u);
  err = wait_done([&](store::done_fn d) {
    st_->put_snapshot(make_snapshot("acme/j", 3, "at3"), 2, std::move(d), true);
  });
  ASSERT_FALSE(err) << describe(err);
  EXPECT_EQ(seqs_of(events("acme/j")), iota_seqs(3, 3));
}

TEST_F(Store, AppendContinuesAfterASnapshotAheadOfTheJournal) {
  create("acme/ahead");
  append_n("acme/ahead", 1, 3);
  // Without require_journal a snapshot may be ahead of the journal: last_seq is then its seq.
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/ahead", 10, "ten"), 0));
  EXPECT_EQ(last("acme/ahead"), 10u);
  EXPECT_EQ(code_of(append_sync(*st_, "acme/ahead", 4)), errc::conflict);
  // The same without the writer's cache (first append of an activation).
  reopen();
  EXPECT_EQ(last("acme/ahead"), 10u);
  auto err = append_sync(*st_, "acme/ahead", 4);
  EXPECT_EQ(code_of(err), errc::conflict) << describe(err);
  reopen();
  EXPECT_FALSE(append_sync(*st_, "acme/ahead", 11));
  EXPECT_EQ(last("acme/ahead"), 11u);
}

TEST_F(Store, LastSeqFindsTheJournalPastTheSnapshotWhateverWasDeletedBelowIt) {
  // last_seq reads forward from the snapshot first (deleted events below it are not walked):
  // what lies past the snapshot must still count, from the cache-less writer too.
  create("acme/fwd");
  append_n("acme/fwd", 1, 50);
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/fwd", 50, "fifty"), 50));
  EXPECT_EQ(last("acme/fwd"), 50u);
  append_n("acme/fwd", 51, 53);
  EXPECT_EQ(last("acme/fwd"), 53u);
  reopen();
  EXPECT_EQ(last("acme/fwd"), 53u);
  // A snapshot behind the journal (stored by bytes, as a migration does), with no cached
  // sequence: the journal's end still counts for the next append.
  auto snap = make_snapshot("acme/fwd", 52, "fifty-two");
  auto err = wait_done([&](store::done_fn d) {
    st_->put_snapshot_encoded("acme/fwd", 52, records::encode(snap), 0, std::move(d));
  });
  ASSERT_FALSE(err) << describe(err);
  EXPECT_EQ(last("acme/fwd"), 53u);
  EXPECT_EQ(code_of(append_sync(*st_, "acme/fwd", 53)), errc::conflict);
  EXPECT_FALSE(append_sync(*st_, "acme/fwd", 54));
  EXPECT_EQ(last("acme/fwd"), 54u);
  // Erased and created again: the old journal's deleted events lie below the new snapshot.
  err = wait_done([&](store::done_fn d) { st_->erase_agent("acme/fwd", std::move(d)); });
  ASSERT_FALSE(err) << describe(err);
  reopen();
  create("acme/fwd");
  EXPECT_EQ(last("acme/fwd"), 0u);
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/fwd", 80, "eighty"), 0));
  EXPECT_EQ(last("acme/fwd"), 80u);
  EXPECT_FALSE(append_sync(*st_, "acme/fwd", 81));
  EXPECT_EQ(last("acme/fwd"), 81u);
}

TEST_F(Store, LastSeqComesFromTheSnapshotWhenTheJournalIsEmpty) {
  EXPECT_EQ(last("acme/s"), 0u);
  create("acme/s");
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/s", 40, "x"), 0));
  EXPECT_EQ(last("acme/s"), 40u);
  reopen();
  EXPECT_EQ(last("acme/s"), 40u);
  EXPECT_EQ(code_of(append_sync(*st_, "acme/s", 1)), errc::conflict);
  EXPECT_FALSE(append_sync(*st_, "acme/s", 41));
  EXPECT_EQ(last("acme/s"), 41u);
  auto none = st_->get_snapshot("acme/other");
  ASSERT_TRUE(none) << describe(none.error());
  EXPECT_FALSE(none->has_value());
}

// -- metas and erase ---------------------------------------------------------------------------

TEST_F(Store, PutMetaMustBeNewRefusesAnExistingAgent) {
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c1", "counter"), true));
  auto err = put_meta_sync(*st_, make_meta("acme/c1", "kv"), true);
  EXPECT_EQ(code_of(err), errc::agent_exists) << describe(err);
  auto m = st_->get_meta("acme/c1");
  ASSERT_TRUE(m && m->has_value());
  EXPECT_EQ((*m)->kind, "counter");
  // Without must_be_new it replaces.
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c1", "kv"), false));
  m = st_->get_meta("acme/c1");
  ASSERT_TRUE(m && m->has_value());
  EXPECT_EQ((*m)->kind, "kv");
  EXPECT_EQ((*m)->config, R"({"id":"acme/c1"})");
  auto none = st_->get_meta("acme/c2");
  ASSERT_TRUE(none) << describe(none.error());
  EXPECT_FALSE(none->has_value());
}

TEST_F(Store, TwoCreationsInOneBatchCannotBothWin) {
  std::vector<caf::error> results(3);
  {
    writer_gate gate{*st_};
    st_->put_meta(make_meta("acme/x", "counter"), true,
                  [&](caf::error e) { results[0] = std::move(e); });
    st_->put_meta(make_meta("acme/x", "kv"), true,
                  [&](caf::error e) { results[1] = std::move(e); });
    st_->put_meta(make_meta("acme/y", "kv"), true,
                  [&](caf::error e) { results[2] = std::move(e); });
  }
  ASSERT_FALSE(wait_done([&](store::done_fn d) { st_->barrier(std::move(d)); }));
  EXPECT_FALSE(results[0]);
  EXPECT_EQ(code_of(results[1]), errc::agent_exists);
  EXPECT_FALSE(results[2]);
  auto m = st_->get_meta("acme/x");
  ASSERT_TRUE(m && m->has_value());
  EXPECT_EQ((*m)->kind, "counter");
}

TEST_F(Store, EraseAgentRemovesMetaSnapshotAndJournal) {
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c1"), true));
  append_n("acme/c1", 1, 5);
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/c1", 3, "s"), 2));
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c10"), true));
  append_n("acme/c10", 1, 2);
  ASSERT_FALSE(erase_sync(*st_, "acme/c1"));
  auto check_gone = [&] {
    auto m = st_->get_meta("acme/c1");
    ASSERT_TRUE(m) << describe(m.error());
    EXPECT_FALSE(m->has_value());
    auto s = st_->get_snapshot("acme/c1");
    ASSERT_TRUE(s) << describe(s.error());
    EXPECT_FALSE(s->has_value());
    EXPECT_TRUE(events("acme/c1").empty());
    EXPECT_EQ(last("acme/c1"), 0u);
    // The neighbour is untouched.
    auto m10 = st_->get_meta("acme/c10");
    ASSERT_TRUE(m10 && m10->has_value());
    EXPECT_EQ(seqs_of(events("acme/c10")), iota_seqs(1, 2));
  };
  check_gone();
  reopen();
  check_gone();
  // A late append of the deleted agent is refused; created again, it restarts at seq 1.
  EXPECT_EQ(code_of(append_sync(*st_, "acme/c1", 6)), errc::agent_not_found);
  EXPECT_EQ(code_of(append_sync(*st_, "acme/c1", 1)), errc::agent_not_found);
  EXPECT_TRUE(events("acme/c1").empty());
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c1"), true));
  EXPECT_EQ(code_of(append_sync(*st_, "acme/c1", 6)), errc::conflict);
  EXPECT_FALSE(append_sync(*st_, "acme/c1", 1));
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(1, 1));
}

TEST_F(Store, EraseAndRecreateInOneBatchRestartsAtOne) {
  create("acme/c1");
  append_n("acme/c1", 1, 3);
  std::vector<caf::error> results(5);
  {
    writer_gate gate{*st_};
    auto into = [&](size_t i) {
      return [&results, i](caf::error e) { results[i] = std::move(e); };
    };
    st_->erase_agent("acme/c1", into(0));
    st_->append(make_event("acme/c1", 1), into(1)); // must not leave an orphan journal
    st_->put_meta(make_meta("acme/c1"), true, into(2));
    st_->append(make_event("acme/c1", 4), into(3));
    st_->append(make_event("acme/c1", 1), into(4));
  }
  ASSERT_FALSE(wait_done([&](store::done_fn d) { st_->barrier(std::move(d)); }));
  EXPECT_FALSE(results[0]);
  EXPECT_EQ(code_of(results[1]), errc::agent_not_found) << describe(results[1]);
  EXPECT_FALSE(results[2]);
  EXPECT_EQ(code_of(results[3]), errc::conflict) << describe(results[3]);
  EXPECT_FALSE(results[4]);
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(1, 1));
  EXPECT_EQ(last("acme/c1"), 1u);
  EXPECT_FALSE(append_sync(*st_, "acme/c1", 2));
}

TEST_F(Store, LateWritesInTheBatchOfAnEraseAreRefused) {
  create("acme/c1");
  append_n("acme/c1", 1, 3); // the writer now knows acme/c1 (its cached last seq)
  std::vector<caf::error> results(3);
  {
    writer_gate gate{*st_};
    auto into = [&](size_t i) {
      return [&results, i](caf::error e) { results[i] = std::move(e); };
    };
    st_->erase_agent("acme/c1", into(0));
    st_->put_snapshot(make_snapshot("acme/c1", 3, "late"), 0, into(1));
    st_->append(make_event("acme/c1", 4), into(2));
  }
  ASSERT_FALSE(wait_done([&](store::done_fn d) { st_->barrier(std::move(d)); }));
  EXPECT_FALSE(results[0]);
  EXPECT_EQ(code_of(results[1]), errc::agent_not_found) << describe(results[1]);
  EXPECT_EQ(code_of(results[2]), errc::agent_not_found) << describe(results[2]);
  auto snap = st_->get_snapshot("acme/c1");
  ASSERT_TRUE(snap) << describe(snap.error());
  EXPECT_FALSE(snap->has_value()) << "a late snapshot resurrected the erased agent";
  EXPECT_TRUE(events("acme/c1").empty());
  EXPECT_EQ(last("acme/c1"), 0u);
}

TEST_F(Store, ListMetaOrdersByIdFiltersByTenantAndPages) {
  for (auto id : {"beta/x", "acme/c", "acme-2/y", "acme/a", "acme0/z", "acme/b", "acme.x/w"})
    ASSERT_FALSE(put_meta_sync(*st_, make_meta(id), true)) << id;
  auto ids = [&](std::string_view tenant, std::string_view after, size_t limit) {
    std::vector<std::string> out;
    auto metas = st_->list_meta(tenant, after, limit);
    EXPECT_TRUE(metas) << describe(metas.error());
    if (metas)
      for (auto& m : *metas)
        out.push_back(m.hdr.agent);
    return out;
  };
  using v = std::vector<std::string>;
  EXPECT_EQ(ids("", "", 100),
            (v{"acme-2/y", "acme.x/w", "acme/a", "acme/b", "acme/c", "acme0/z", "beta/x"}));
  EXPECT_EQ(ids("acme", "", 100), (v{"acme/a", "acme/b", "acme/c"}));
  EXPECT_EQ(ids("acme", "acme/a", 100), (v{"acme/b", "acme/c"}));
  EXPECT_EQ(ids("acme", "acme/a", 1), (v{"acme/b"}));
  EXPECT_EQ(ids("acme", "acme/c", 100), v{});
  EXPECT_EQ(ids("acme", "acme-2/y", 100), (v{"acme/a", "acme/b", "acme/c"}));
  EXPECT_EQ(ids("acme", "beta/x", 100), v{});
  EXPECT_EQ(ids("", "acme/b", 3), (v{"acme/c", "acme0/z", "beta/x"}));
  EXPECT_EQ(ids("beta", "", 100), (v{"beta/x"}));
  EXPECT_EQ(ids("gamma", "", 100), v{});
  EXPECT_EQ(ids("", "", 0), v{});
  // Paging through everything two at a time sees each exactly once.
  v all;
  std::string after;
  for (int pages = 0; pages < 10; ++pages) {
    auto page = ids("", after, 2);
    if (page.empty())
      break;
    all.insert(all.end(), page.begin(), page.end());
    after = page.back();
  }
  EXPECT_EQ(all, ids("", "", 100));
}

// -- reopen, epochs, checkpoints ---------------------------------------------------------------

TEST_F(Store, ReopenPersistsEverything) {
  create("acme/c1");
  append_n("acme/c1", 1, 7);
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/c1", 5, "five"), 3));
  create("beta/k");
  append_n("beta/k", 1, 2);
  reopen();
  auto m = st_->get_meta("acme/c1");
  ASSERT_TRUE(m && m->has_value());
  EXPECT_EQ((*m)->kind, "counter");
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(4, 7));
  EXPECT_EQ(events("acme/c1").back().payload, "ev#7");
  auto s = st_->get_snapshot("acme/c1");
  ASSERT_TRUE(s && s->has_value());
  EXPECT_EQ((*s)->state, "five");
  EXPECT_EQ(seqs_of(events("beta/k")), iota_seqs(1, 2));
  EXPECT_EQ(last("acme/c1"), 7u);
  EXPECT_EQ(code_of(append_sync(*st_, "acme/c1", 7)), errc::conflict);
  EXPECT_FALSE(append_sync(*st_, "acme/c1", 8));
  auto list = st_->list_meta("", "", 10);
  ASSERT_TRUE(list) << describe(list.error());
  EXPECT_EQ(list->size(), 2u);
}

TEST_F(Store, QueuedWritesCompleteBeforeTheStoreCloses) {
  create("acme/c1");
  std::atomic<int> ok{0};
  for (uint64_t s = 1; s <= 300; ++s)
    st_->append(make_event("acme/c1", s), [&](caf::error err) {
      if (!err)
        ++ok;
    });
  close();
  EXPECT_EQ(ok.load(), 300);
  reopen();
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(1, 300));
}

TEST_F(Store, EpochsIncreaseWithinAndAcrossReopens) {
  uint64_t prev = 0;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 100; ++i) {
      auto e = st_->next_epoch();
      ASSERT_GT(e, prev) << "round " << round << " call " << i;
      prev = e;
    }
    reopen();
  }
  // Concurrent callers never get the same epoch.
  std::vector<std::vector<uint64_t>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i)
        got[t].push_back(st_->next_epoch());
    });
  for (auto& t : threads)
    t.join();
  std::vector<uint64_t> all;
  for (auto& g : got)
    all.insert(all.end(), g.begin(), g.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
  EXPECT_GT(all.front(), prev);
}

TEST_F(Store, CheckpointRestoresTheSameData) {
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c1"), true));
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("beta/k", "kv"), true));
  append_n("acme/c1", 1, 6);
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/c1", 4, "four"), 2));
  append_n("beta/k", 1, 3);
  auto cp = dir_.sub("backup");
  ASSERT_FALSE(st_->checkpoint(cp));
  // Writes after the checkpoint are not in it.
  append_n("acme/c1", 7, 8);
  auto data = dir_.sub("restored");
  auto err = restore_checkpoint(cp, data);
  ASSERT_FALSE(err) << describe(err);
  auto copy = open_store(data + "/db");
  ASSERT_NE(copy, nullptr);
  auto evs = copy->read_events("acme/c1", 0, UINT64_MAX, SIZE_MAX);
  ASSERT_TRUE(evs) << describe(evs.error());
  EXPECT_EQ(seqs_of(*evs), iota_seqs(3, 6));
  auto evs_k = copy->read_events("beta/k", 0, UINT64_MAX, SIZE_MAX);
  ASSERT_TRUE(evs_k) << describe(evs_k.error());
  EXPECT_EQ(seqs_of(*evs_k), iota_seqs(1, 3));
  auto snap = copy->get_snapshot("acme/c1");
  ASSERT_TRUE(snap && snap->has_value());
  EXPECT_EQ((*snap)->state, "four");
  auto metas = copy->list_meta("", "", 10);
  ASSERT_TRUE(metas) << describe(metas.error());
  ASSERT_EQ(metas->size(), 2u);
  EXPECT_EQ((*metas)[1].kind, "kv");
  EXPECT_GT(copy->next_epoch(), 0u);
  auto stats = copy->stats_json();
  ASSERT_TRUE(stats) << describe(stats.error());
  auto j = nlohmann::json::parse(*stats);
  EXPECT_TRUE(j.contains("journal")) << *stats;
  EXPECT_TRUE(j.contains("meta")) << *stats;
  // The original still has everything.
  EXPECT_EQ(seqs_of(events("acme/c1")), iota_seqs(3, 8));
}

TEST_F(Store, CheckpointAndRestoreRefuseExistingOrRelativeDirs) {
  create("acme/c1");
  append_n("acme/c1", 1, 1);
  auto existing = dir_.sub("exists");
  std::filesystem::create_directories(existing);
  EXPECT_EQ(code_of(st_->checkpoint(existing)), errc::invalid_argument);
  EXPECT_EQ(code_of(st_->checkpoint("relative/backup")), errc::invalid_argument);
  EXPECT_EQ(code_of(st_->checkpoint("")), errc::invalid_argument);
  // Restore: the source must be a checkpoint, the target must not hold a database yet.
  EXPECT_EQ(code_of(restore_checkpoint(existing, dir_.sub("r1"))), errc::invalid_argument);
  auto cp = dir_.sub("backup");
  ASSERT_FALSE(st_->checkpoint(cp));
  EXPECT_EQ(code_of(st_->checkpoint(cp)), errc::invalid_argument);
  ASSERT_FALSE(restore_checkpoint(cp, dir_.sub("r2")));
  EXPECT_EQ(code_of(restore_checkpoint(cp, dir_.sub("r2"))), errc::invalid_argument);
  EXPECT_EQ(code_of(restore_checkpoint(cp, dir_.path())), errc::invalid_argument)
    << "restored over the live database";
}

// -- corruption --------------------------------------------------------------------------------

TEST_F(Store, CorruptJournalRecordIsReportedNeverServed) {
  create("acme/c1");
  append_n("acme/c1", 1, 4);
  close();
  {
    raw_db raw{db_path()};
    auto key = store::journal_key("acme/c1", 2);
    auto v = raw.get("journal", key);
    auto at = v.find("ev#2");
    ASSERT_NE(at, std::string::npos);
    v[at + 3] = '9'; // the payload now reads ev#9: well-formed, but not what was written
    raw.put("journal", key, v);
  }
  reopen();
  observer_->clear();
  auto all = st_->read_events("acme/c1", 0, UINT64_MAX, SIZE_MAX);
  ASSERT_FALSE(all) << "served " << all->size() << " events";
  EXPECT_EQ(code_of(all.error()), errc::corrupt_record) << describe(all.error());
  auto from2 = st_->read_events("acme/c1", 2, 2, SIZE_MAX);
  ASSERT_FALSE(from2);
  EXPECT_EQ(code_of(from2.error()), errc::corrupt_record);
  // The intact ones around it still read.
  EXPECT_EQ(seqs_of(events("acme/c1", 1, 1)), iota_seqs(1, 1));
  EXPECT_EQ(seqs_of(events("acme/c1", 3, 4)), iota_seqs(3, 4));
  auto failures = observer_->failures();
  EXPECT_EQ(std::count(failures.begin(), failures.end(), "corrupt_record"), 2);
}

TEST_F(Store, RecordUnderTheWrongKeyIsCorrupt) {
  create("acme/c1");
  create("acme/c2");
  append_n("acme/c1", 1, 3);
  append_n("acme/c2", 1, 1);
  close();
  {
    raw_db raw{db_path()};
    // A valid record, but of seq 3, stored as seq 2; and one of another agent.
    raw.put("journal", store::journal_key("acme/c1", 2),
            raw.get("journal", store::journal_key("acme/c1", 3)));
    raw.put("journal", store::journal_key("acme/c1", 1),
            raw.get("journal", store::journal_key("acme/c2", 1)));
  }
  reopen();
  auto two = st_->read_events("acme/c1", 2, 2, SIZE_MAX);
  ASSERT_FALSE(two);
  EXPECT_EQ(code_of(two.error()), errc::corrupt_record) << describe(two.error());
  auto one = st_->read_events("acme/c1", 1, 1, SIZE_MAX);
  ASSERT_FALSE(one);
  EXPECT_EQ(code_of(one.error()), errc::corrupt_record) << describe(one.error());
}

TEST_F(Store, CorruptSnapshotAndMetaAreReported) {
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c1"), true));
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c2"), true));
  append_n("acme/c1", 1, 3);
  ASSERT_FALSE(put_snapshot_sync(*st_, make_snapshot("acme/c1", 3, "STATE-BYTES"), 0));
  close();
  {
    raw_db raw{db_path()};
    auto v = raw.get("snapshots", "acme/c1");
    auto at = v.find("STATE-BYTES");
    ASSERT_NE(at, std::string::npos);
    v[at] = 's';
    raw.put("snapshots", "acme/c1", v);
    // acme/c2's meta copied under acme/c3: valid record, wrong key.
    raw.put("meta", "acme/c3", raw.get("meta", "acme/c2"));
    auto m = raw.get("meta", "acme/c1");
    auto kind_at = m.find("counter");
    ASSERT_NE(kind_at, std::string::npos);
    m[kind_at] = 'k';
    raw.put("meta", "acme/c1", m);
  }
  reopen();
  auto snap = st_->get_snapshot("acme/c1");
  ASSERT_FALSE(snap);
  EXPECT_EQ(code_of(snap.error()), errc::corrupt_record) << describe(snap.error());
  // The last sequence depends on the snapshot: an error, and no append succeeds.
  auto ls = st_->last_seq("acme/c1");
  ASSERT_FALSE(ls);
  EXPECT_EQ(code_of(ls.error()), errc::corrupt_record);
  auto err = append_sync(*st_, "acme/c1", 4);
  EXPECT_EQ(code_of(err), errc::corrupt_record) << describe(err);
  auto meta = st_->get_meta("acme/c1");
  ASSERT_FALSE(meta);
  EXPECT_EQ(code_of(meta.error()), errc::corrupt_record);
  auto misplaced = st_->get_meta("acme/c3");
  ASSERT_FALSE(misplaced);
  EXPECT_EQ(code_of(misplaced.error()), errc::corrupt_record);
  auto list = st_->list_meta("acme", "acme/c1", 10);
  ASSERT_FALSE(list) << "listed " << list->size() << " metas";
  EXPECT_EQ(code_of(list.error()), errc::corrupt_record) << describe(list.error());
}

TEST_F(Store, JournalKeysSortBySeqWithinAnAgent) {
  EXPECT_LT(store::journal_key("a/b", 255), store::journal_key("a/b", 256));
  EXPECT_LT(store::journal_key("a/b", 1), store::journal_key("a/b", UINT64_MAX));
  EXPECT_LT(store::journal_key("a/b", UINT64_MAX), store::journal_key("a/b0", 0));
  EXPECT_EQ(store::journal_key("a/b", 1).size(), 3u + 1u + 8u);
}

} // namespace
