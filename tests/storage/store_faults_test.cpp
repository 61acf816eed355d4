// The store under injected I/O faults: a RocksDB FileSystem whose writable files fail Append or
// Sync with NoSpace or IOError while a fault is set. A failed write must never be reported as a
// success, must surface as storage_full / storage_error, and the store must recover by itself
// once the fault stops; a reopen then shows every acknowledged event.

#include "storage/store.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <rocksdb/file_system.h>

#include "protocols/errc.hpp"
#include "tests/storage/store_support.hpp"
#include "tests/support/faulty_fs.hpp"

namespace {

using namespace hive;
using namespace hive::test;

struct fault_case {
  const char* name;
  fault_plan::where at;
  bool no_space;
  errc expected;
};

std::ostream& operator<<(std::ostream& out, const fault_case& c) {
  return out << c.name;
}

class StoreFaults : public ::testing::TestWithParam<fault_case> {
protected:
  void SetUp() override {
    plan_ = std::make_shared<fault_plan>();
    plan_->at = GetParam().at;
    plan_->status = GetParam().no_space ? rocksdb::IOStatus::NoSpace("injected: disk full")
                                        : rocksdb::IOStatus::IOError("injected: I/O error");
    observer_ = std::make_shared<recording_observer>();
    open();
  }

  void open() {
    st_.reset();
    store_options opts;
    opts.file_system = std::make_shared<faulty_fs>(plan_);
    opts.observer = observer_;
    st_ = open_store(dir_.sub("db"), opts);
    ASSERT_NE(st_, nullptr);
  }

  /// Appends the next event of `agent`, remembering whether it was acknowledged.
  caf::error append_next(const std::string& agent) {
    auto seq = next_[agent] + 1;
    auto err = append_sync(*st_, agent, seq, agent + "#" + std::to_string(seq));
    if (!err) {
      acked_[agent].push_back(seq);
      next_[agent] = seq;
    } else {
      failed_[agent].push_back(seq);
    }
    return err;
  }

  /// After a failed append the outcome is "not acknowledged": continue after what is stored.
  void resync(const std::string& agent) {
    auto last = st_->last_seq(agent);
    ASSERT_TRUE(last) << describe(last.error());
    next_[agent] = *last;
  }

  temp_dir dir_;
  std::shared_ptr<fault_plan> plan_;
  std::shared_ptr<recording_observer> observer_;
  std::unique_ptr<store> st_;
  std::map<std::string, uint64_t> next_;
  std::map<std::string, std::vector<uint64_t>> acked_;
  std::map<std::string, std::vector<uint64_t>> failed_;
};

TEST_P(StoreFaults, FailedWriteIsNeverAcknowledgedAndTheStoreRecovers) {
  const std::vector<std::string> agents{"acme/a", "acme/b"};
  for (auto& a : agents) {
    ASSERT_FALSE(put_meta_sync(*st_, make_meta(a), true));
    for (int i = 0; i < 3; ++i)
      ASSERT_FALSE(append_next(a));
  }
  // The fault: every write fails with the expected code, none is acknowledged.
  plan_->armed = true;
  for (int i = 0; i < 3; ++i)
    for (auto& a : agents) {
      auto err = append_next(a);
      ASSERT_TRUE(err) << a << ": a write under a fault was acknowledged";
      EXPECT_EQ(code_of(err), GetParam().expected) << describe(err);
    }
  EXPECT_GT(plan_->injected.load(), 0);
  auto failures = observer_->failures();
  EXPECT_FALSE(failures.empty());
  // Reads keep working during the fault, and show no unacknowledged event.
  for (auto& a : agents) {
    auto evs = st_->read_events(a, 0, UINT64_MAX, SIZE_MAX);
    ASSERT_TRUE(evs) << describe(evs.error());
    EXPECT_EQ(seqs_of(*evs), acked_[a]);
  }
  // The fault stops: the store recovers by itself, without a reopen.
  plan_->armed = false;
  for (auto& a : agents)
    resync(a);
  for (int i = 0; i < 5; ++i)
    for (auto& a : agents) {
      auto err = append_next(a);
      ASSERT_FALSE(err) << a << " after the fault stopped: " << describe(err);
    }
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/c"), true));
  // A reopen shows exactly the acknowledged events.
  open();
  for (auto& a : agents) {
    auto evs = st_->read_events(a, 0, UINT64_MAX, SIZE_MAX);
    ASSERT_TRUE(evs) << describe(evs.error());
    EXPECT_EQ(seqs_of(*evs), acked_[a]) << a;
    for (auto& ev : *evs)
      EXPECT_EQ(ev.payload, a + "#" + std::to_string(ev.hdr.seq));
  }
  auto m = st_->get_meta("acme/c");
  ASSERT_TRUE(m && m->has_value());
}

TEST_P(StoreFaults, ReadsAndWritesWorkAfterARecoveryAcrossManyFaults) {
  ASSERT_FALSE(put_meta_sync(*st_, make_meta("acme/a"), true));
  for (int round = 0; round < 4; ++round) {
    ASSERT_FALSE(append_next("acme/a")) << "round " << round;
    plan_->armed = true;
    auto err = append_next("acme/a");
    ASSERT_TRUE(err) << "round " << round << ": acknowledged under a fault";
    EXPECT_EQ(code_of(err), GetParam().expected) << describe(err);
    plan_->armed = false;
    resync("acme/a");
    ASSERT_FALSE(append_next("acme/a")) << "round " << round;
  }
  open();
  auto evs = st_->read_events("acme/a", 0, UINT64_MAX, SIZE_MAX);
  ASSERT_TRUE(evs) << describe(evs.error());
  EXPECT_EQ(seqs_of(*evs), acked_["acme/a"]);
}

/// A fault the store's write probe does not see (it spares the probe file): the reopen itself
/// fails, the database stays closed (reads fail with storage_error), and the writer reopens it
/// by itself once the fault stops, with no write to trigger it.
TEST(StoreFaultsClosed, ReopenFailureClosesTheStoreUntilStorageWorksAgain) {
  auto plan = std::make_shared<fault_plan>();
  plan->at = fault_plan::where::append;
  plan->spared = "hive-write-probe";
  temp_dir dir;
  store_options opts;
  opts.path = dir.sub("db");
  opts.file_system = std::make_shared<faulty_fs>(plan);
  auto st = open_store(opts.path, opts);
  ASSERT_NE(st, nullptr);
  ASSERT_FALSE(put_meta_sync(*st, make_meta("acme/a"), true));
  ASSERT_FALSE(append_sync(*st, "acme/a", 1));
  plan->armed = true;
  EXPECT_EQ(code_of(append_sync(*st, "acme/a", 2)), errc::storage_error);
  // The probe passes, the reopen fails: closed.
  EXPECT_EQ(code_of(append_sync(*st, "acme/a", 2)), errc::storage_error);
  auto closed = st->read_events("acme/a", 0, UINT64_MAX, SIZE_MAX);
  ASSERT_FALSE(closed) << "read " << closed->size() << " events from a closed store";
  EXPECT_EQ(code_of(closed.error()), errc::storage_error) << describe(closed.error());
  EXPECT_EQ(code_of(st->last_seq("acme/a").error()), errc::storage_error);
  plan->armed = false;
  // No write: the writer's retry (every second) reopens it; reads come back.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  caf::expected<std::vector<records::event_record>> evs = closed;
  while (!evs && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
    evs = st->read_events("acme/a", 0, UINT64_MAX, SIZE_MAX);
  }
  ASSERT_TRUE(evs) << "still closed 10 s after the fault stopped: " << describe(evs.error());
  EXPECT_EQ(seqs_of(*evs), iota_seqs(1, 1));
  ASSERT_FALSE(append_sync(*st, "acme/a", 2));
  st.reset();
  st = open_store(opts.path);
  ASSERT_NE(st, nullptr);
  auto after = st->read_events("acme/a", 0, UINT64_MAX, SIZE_MAX);
  ASSERT_TRUE(after) << describe(after.error());
  EXPECT_EQ(seqs_of(*after), iota_seqs(1, 2));
}

/// An epoch reservation that fails to write is carried by the writer's next batch: after a
/// restart, no epoch handed out before it comes again.
TEST(StoreFaultsEpochs, FailedReservationIsWrittenWithTheNextBatch) {
  auto plan = std::make_shared<fault_plan>();
  plan->at = fault_plan::where::sync;
  temp_dir dir;
  store_options opts;
  opts.path = dir.sub("db");
  opts.file_system = std::make_shared<faulty_fs>(plan);
  auto st = open_store(opts.path, opts);
  ASSERT_NE(st, nullptr);
  ASSERT_FALSE(put_meta_sync(*st, make_meta("acme/a"), true));
  // Epochs are reserved in blocks of 2^20: walk up to the end of the first block.
  uint64_t e = 0;
  for (uint64_t i = 1; i < (uint64_t{1} << 20); ++i)
    e = st->next_epoch();
  ASSERT_EQ(e, (uint64_t{1} << 20) - 1) << "the reservation block size changed";
  plan->armed = true;
  uint64_t handed_max = 0;
  for (int i = 0; i < 10; ++i)
    handed_max = st->next_epoch(); // the first one's reservation write fails
  plan->armed = false;
  EXPECT_GT(plan->injected.load(), 0);
  // The first write after the failure fails too (the database is in its error state), the
  // next one recovers and carries the reservation.
  uint64_t seq = 1;
  for (int attempt = 0; attempt < 3 && append_sync(*st, "acme/a", seq); ++attempt) {
  }
  auto last = st->last_seq("acme/a");
  ASSERT_TRUE(last && *last == 1) << "the store did not recover";
  st.reset();
  st = open_store(opts.path);
  ASSERT_NE(st, nullptr);
  auto next = st->next_epoch();
  EXPECT_GT(next, handed_max) << "epoch handed out again after a restart";
}

INSTANTIATE_TEST_SUITE_P(
  Faults, StoreFaults,
  ::testing::Values(
    fault_case{"AppendNoSpace", fault_plan::where::append, true, errc::storage_full},
    fault_case{"AppendIOError", fault_plan::where::append, false, errc::storage_error},
    fault_case{"SyncNoSpace", fault_plan::where::sync, true, errc::storage_full},
    fault_case{"SyncIOError", fault_plan::where::sync, false, errc::storage_error}),
  [](const ::testing::TestParamInfo<fault_case>& info) { return std::string{info.param.name}; });

} // namespace
