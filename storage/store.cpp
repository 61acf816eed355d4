#include "storage/store.hpp"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/wal_filter.h>
#include <rocksdb/write_batch.h>

#include "protocols/errc.hpp"

namespace hive {

namespace {

constexpr const char* cf_meta = "meta";
constexpr const char* cf_snapshots = "snapshots";
constexpr const char* cf_journal = "journal";
constexpr const char* epoch_key = "epoch_reserved";
/// Epochs are reserved in blocks so that handing one out needs no write.
constexpr uint64_t epoch_block = uint64_t{1} << 20;

void put_be64(std::string& out, uint64_t x) {
  for (int i = 7; i >= 0; --i)
    out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
}

uint64_t get_be64(std::string_view in) {
  assert(in.size() >= 8);
  uint64_t x = 0;
  for (size_t i = 0; i < 8; ++i)
    x = (x << 8) | static_cast<uint8_t>(in[i]);
  return x;
}

/// The journal key range of one agent: [agent NUL, agent \x01).
std::string journal_prefix(std::string_view agent) {
  std::string k{agent};
  k.push_back('\0');
  return k;
}

std::string journal_end(std::string_view agent) {
  std::string k{agent};
  k.push_back('\1');
  return k;
}

caf::error error_of(const rocksdb::Status& s, std::string_view what) {
  auto code = s.IsNoSpace() ? errc::storage_full : errc::storage_error;
  return make_error(code, std::string{what} + ": " + s.ToString());
}

rocksdb::ReadOptions read_options() {
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true; // RocksDB's block checksums, besides our record checksums
  ro.fill_cache = true;
  return ro;
}

/// Replays WAL records only up to `durable_seq_max`, the last sequence number acknowledged
/// before a write failed: a failed group commit may have reached the log file (its append
/// worked, its sync did not), and a reopen must not bring back what was reported as failed.
class failed_tail_filter : public rocksdb::WalFilter {
public:
  explicit failed_tail_filter(uint64_t durable_seq_max) : durable_seq_max_(durable_seq_max) {}

  WalProcessingOption LogRecord(const rocksdb::WriteBatch& batch, rocksdb::WriteBatch*,
                                bool*) const override {
    // A WriteBatch's representation starts with its sequence number (fixed64, little-endian).
    const auto& rep = batch.Data();
    if (rep.size() < 8)
      return WalProcessingOption::kCorruptedRecord;
    uint64_t seq = 0;
    for (size_t i = 0; i < 8; ++i)
      seq |= uint64_t{static_cast<uint8_t>(rep[i])} << (8 * i);
    return seq > durable_seq_max_ ? WalProcessingOption::kIgnoreCurrentRecord
                                  : WalProcessingOption::kContinueProcessing;
  }

  const char* Name() const override {
    return "hive.failed_tail_filter";
  }

private:
  uint64_t durable_seq_max_;
};

/// Turns off RocksDB's automatic recovery from write errors (NoSpace): the store recovers
/// itself, by a filtered reopen (failed_tail_filter), so that no failed batch survives.
class no_auto_recovery : public rocksdb::EventListener {
public:
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }
};

} // namespace

namespace {

/// The agent part of a journal key: everything up to and including the first NUL.
class agent_prefix : public rocksdb::SliceTransform {
public:
  const char* Name() const override {
    return "hive.agent_prefix";
  }

  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    auto nul = static_cast<const char*>(std::memchr(key.data(), '\0', key.size()));
    return {key.data(), nul == nullptr ? key.size() : static_cast<size_t>(nul - key.data()) + 1};
  }

  bool InDomain(const rocksdb::Slice&) const override {
    return true;
  }
};

} // namespace

// -- the writer --------------------------------------------------------------------------------

struct store::impl {
  enum class op_type : uint8_t { append, put_meta, erase, snapshot, forget, barrier };

  struct op {
    op_type type = op_type::barrier;
    std::string agent;
    std::string value;
    uint64_t seq = 0;
    uint64_t prune_through = 0;
    uint64_t prune_from = 0;
    bool must_be_new = false;
    done_fn done;
    std::chrono::steady_clock::time_point enqueued;
  };

  store_options opts;
  /// The Env over `opts.file_system` (if any); outlives the database (closed in ~impl).
  std::unique_ptr<rocksdb::Env> env;
  /// What the database is opened with, kept for reopening it after a write failure.
  rocksdb::DBOptions dbo;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  /// Guards `db` and the handles: readers (and the writer while it builds and writes a batch)
  /// hold it shared; the writer's `recover()` replaces the database holding it exclusively.
  mutable std::shared_mutex db_mtx;
  /// Null only after a failed reopen (reads fail with storage_error until one succeeds).
  std::unique_ptr<rocksdb::DB> db;
  rocksdb::ColumnFamilyHandle* h_default = nullptr;
  rocksdb::ColumnFamilyHandle* h_meta = nullptr;
  rocksdb::ColumnFamilyHandle* h_snapshots = nullptr;
  rocksdb::ColumnFamilyHandle* h_journal = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;

  std::mutex mtx;
  std::condition_variable cv;
  std::deque<op> queue;
  bool stopping = false;
  /// Live `store::commit_hold`s: no group commit starts while there are any.
  size_t holds = 0;
  std::thread writer;

  /// Writer-thread only: last sequence per agent with an activation (bounded by forget()).
  std::unordered_map<std::string, uint64_t> last_seqs;
  static constexpr size_t last_seqs_max = 1 << 20;
  /// Writer-thread only: a write failed; reopen the database before the next write.
  bool needs_recovery = false;
  /// Writer-thread only, with `needs_recovery`: the database's last sequence number when the
  /// first write failed, i.e. the last acknowledged one (see failed_tail_filter).
  uint64_t durable_seq_max = 0;
  /// How long the writer waits between reopen attempts while the database is closed.
  static constexpr auto reopen_retry_interval = std::chrono::seconds{1};
  /// A reservation that next_epoch() could not write: the writer's next batch carries it,
  /// ahead of any record that could carry one of its epochs (0 = none).
  std::atomic<uint64_t> epoch_reservation_pending{0};

  std::atomic<uint64_t> next_epoch{1};
  std::atomic<uint64_t> epoch_reserved{0};
  std::mutex epoch_mtx;

  ~impl() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      stopping = true;
    }
    cv.notify_all();
    if (writer.joinable()) {
      assert(writer.get_id() != std::this_thread::get_id());
      writer.join();
    }
    {
      std::lock_guard<std::mutex> guard{done_mtx};
      done_stopping = true;
    }
    done_cv.notify_all();
    if (completer.joinable()) {
      // Completions must never hold the last reference to the store (they run on completer).
      assert(completer.get_id() != std::this_thread::get_id());
      completer.join();
    }
    close_db();
  }

  // -- completions ------------------------------------------------------------------------
  // They run on a thread of their own, in commit order: the writer starts the next batch
  // (and its sync) while the completions of the last one still run.

  using completion = std::pair<done_fn, caf::error>;
  std::mutex done_mtx;
  std::condition_variable done_cv;
  std::vector<completion> done_queue;
  /// Completions handed over and not yet run.
  size_t done_pending = 0;
  std::condition_variable drained_cv;
  bool done_stopping = false;
  std::thread completer;

  void hand_over(std::vector<completion>& items) {
    if (items.empty())
      return;
    {
      std::lock_guard<std::mutex> guard{done_mtx};
      done_pending += items.size();
      for (auto& x : items)
        done_queue.push_back(std::move(x));
    }
    items.clear();
    done_cv.notify_one();
  }

  /// Waits until every completion handed over so far has run.
  void wait_drained() {
    std::unique_lock<std::mutex> guard{done_mtx};
    drained_cv.wait(guard, [this] { return done_pending == 0; });
  }

  void run_completions() {
    std::vector<completion> local;
    for (;;) {
      {
        std::unique_lock<std::mutex> guard{done_mtx};
        done_cv.wait(guard, [this] { return done_stopping || !done_queue.empty(); });
        if (done_queue.empty() && done_stopping)
          return;
        local.swap(done_queue);
      }
      for (auto& [fn, err] : local)
        fn(std::move(err));
      {
        std::lock_guard<std::mutex> guard{done_mtx};
        done_pending -= local.size();
        if (done_pending == 0)
          drained_cv.notify_all();
      }
      local.clear();
    }
  }

  /// Opens the database (`dbo`, `cfs`), replaying the WAL through `filter` if given.
  rocksdb::Status open_db(rocksdb::WalFilter* filter) {
    assert(!db);
    auto o = dbo;
    o.wal_filter = filter;
    rocksdb::DB* raw = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> hs;
    auto s = rocksdb::DB::Open(o, opts.path, cfs, &hs, &raw);
    if (!s.ok())
      return s;
    assert(raw != nullptr && hs.size() == 4);
    db.reset(raw);
    handles = std::move(hs);
    h_default = handles[0];
    h_meta = handles[1];
    h_snapshots = handles[2];
    h_journal = handles[3];
    return s;
  }

  void close_db() {
    if (!db)
      return;
    for (auto h : handles)
      db->DestroyColumnFamilyHandle(h);
    handles.clear();
    h_default = h_meta = h_snapshots = h_journal = nullptr;
    auto s = db->Close(); // after a write failure: "Seen error", nothing more to do about it
    (void)s;
    db.reset();
  }

  /// The error of a read while the database is closed after a failed reopen.
  caf::error closed_error() const {
    return make_error(errc::storage_error,
                      "database " + opts.path
                        + " is closed after a write failure; it reopens"
                          " once storage works again");
  }

  /// Whether storage takes a synced write again: a small file next to the database, written,
  /// synced and removed. While it fails, the failed database stays open for reads.
  rocksdb::IOStatus probe() {
    const auto& fs = dbo.env->GetFileSystem();
    auto name = opts.path + "/hive-write-probe.tmp";
    rocksdb::IOOptions io;
    std::unique_ptr<rocksdb::FSWritableFile> f;
    auto s = fs->NewWritableFile(name, rocksdb::FileOptions{}, &f, nullptr);
    if (s.ok())
      s = f->Append(std::string(4096, '\0'), io, nullptr);
    if (s.ok())
      s = f->Sync(io, nullptr);
    if (f) {
      auto c = f->Close(io, nullptr);
      if (s.ok())
        s = c;
    }
    auto d = fs->DeleteFile(name, io, nullptr);
    d.PermitUncheckedError();
    return s;
  }

  /// Writer thread, after a write failure: once a probe write succeeds, closes the database
  /// and opens it again, replaying the WAL only up to the last acknowledged sequence number.
  /// RocksDB's Resume() cannot do this: an I/O error on the WAL is fatal to it, and it would
  /// keep a failed batch that reached the log file. Returns what still keeps writes failing.
  caf::error recover() {
    assert(needs_recovery || !db);
    if (db) {
      if (auto s = probe(); !s.ok())
        return error_of(s, "storage still fails (write probe in " + opts.path + ")");
    }
    failed_tail_filter filter{durable_seq_max};
    std::unique_lock<std::shared_mutex> guard{db_mtx};
    close_db();
    auto s = open_db(&filter);
    if (!s.ok())
      return error_of(s, "reopening database " + opts.path + " after a write failure");
    needs_recovery = false;
    last_seqs.clear();
    return {};
  }

  void failure(std::string_view code) const {
    if (opts.observer)
      opts.observer->on_failure(code);
  }

  /// Queues `o`, or completes it at once (on the calling thread) with the reason it was
  /// refused: the store is closing, the queue is full, the record is too large.
  void submit(op o) {
    caf::error refused;
    if (o.value.size() > opts.record_bytes_max) {
      refused = make_error(
        errc::too_large,
        "record of " + o.agent.substr(0, 256) + " is " + std::to_string(o.value.size())
          + " bytes; storage.record_bytes_max is " + std::to_string(opts.record_bytes_max));
    } else {
      o.enqueued = std::chrono::steady_clock::now();
      std::lock_guard<std::mutex> guard{mtx};
      if (stopping && o.type != op_type::forget)
        refused = make_error(errc::shutting_down, "store is closing");
      else if (queue.size() >= opts.commit_queue_writes_max && o.type != op_type::forget)
        refused = make_error(errc::overloaded,
                             "storage commit queue holds storage.commit_queue_writes_max = "
                               + std::to_string(opts.commit_queue_writes_max) + " writes");
      else
        queue.push_back(std::move(o));
    }
    if (refused) {
      failure(to_string(code_of(refused)));
      if (o.done)
        o.done(std::move(refused));
      return;
    }
    cv.notify_one();
  }

  /// The agent's last sequence number (see store::last_seq). The journal is read forward from
  /// just after the snapshot first: a memtable steps backwards at O(log n) a step, and the
  /// events deleted when an agent left a node (or by its prunes) all lie below its next
  /// snapshot, so a backward scan from the end would step over every one of them when the
  /// journal holds nothing past the snapshot (an agent that migrated back; a snapshot just
  /// taken). Only if something follows the snapshot is the end sought backwards.
  ///
  /// With `floor` > 0 (the writer storing a snapshot of that sequence): the larger of the
  /// two, read the same way (the snapshot not stored yet).
  caf::expected<uint64_t> stored_last_seq(std::string_view agent, uint64_t floor = 0) const {
    uint64_t last = floor;
    std::string value;
    auto s =
      db->Get(read_options(), h_snapshots, rocksdb::Slice{agent.data(), agent.size()}, &value);
    if (s.ok()) {
      auto snap = records::decode_snapshot(value);
      if (!snap)
        return std::move(snap.error());
      last = std::max(last, snap->hdr.seq);
    } else if (!s.IsNotFound()) {
      return error_of(s, "reading the snapshot of " + std::string{agent});
    }
    auto prefix = journal_prefix(agent);
    auto end = journal_end(agent);
    if (last > 0) {
      rocksdb::Slice upper{end};
      auto ro = read_options();
      ro.iterate_upper_bound = &upper; // (not beyond the agent: other agents' deletes)
      std::unique_ptr<rocksdb::Iterator> fwd{db->NewIterator(ro, h_journal)};
      fwd->Seek(store::journal_key(agent, last + 1));
      if (!fwd->status().ok())
        return error_of(fwd->status(), "reading the journal of " + std::string{agent});
      if (!fwd->Valid())
        return last;
    }
    std::unique_ptr<rocksdb::Iterator> it{db->NewIterator(read_options(), h_journal)};
    it->SeekForPrev(end);
    if (it->Valid() && it->key().ToStringView() == end)
      it->Prev();
    if (it->Valid() && it->key().starts_with(prefix) && it->key().size() == prefix.size() + 8)
      last = std::max(last, get_be64(it->key().ToStringView().substr(prefix.size())));
    if (!it->status().ok())
      return error_of(it->status(), "reading the journal of " + std::string{agent});
    return last;
  }

  /// True if an append of `seq` continues what is stored for `agent`: `seq` is not stored,
  /// and `seq - 1` is with no snapshot beyond it (or is the snapshot's sequence, or `seq` is 1
  /// with no snapshot). Point reads only; the journal is contiguous, so nothing lies past `seq`.
  caf::expected<bool> follows_stored(const std::string& agent, uint64_t seq) const {
    std::string v;
    auto s = db->Get(read_options(), h_journal, store::journal_key(agent, seq), &v);
    if (s.ok())
      return false;
    if (!s.IsNotFound())
      return error_of(s, "reading the journal of " + agent);
    // The snapshot counts too: it may be ahead of the journal (written without
    // require_journal), and a corrupt one must stop the append rather than be skipped.
    std::optional<uint64_t> snap_seq;
    s = db->Get(read_options(), h_snapshots, agent, &v);
    if (s.ok()) {
      auto snap = records::decode_snapshot(v);
      if (!snap)
        return std::move(snap.error());
      snap_seq = snap->hdr.seq;
    } else if (!s.IsNotFound()) {
      return error_of(s, "reading the snapshot of " + agent);
    }
    if (seq >= 2) {
      s = db->Get(read_options(), h_journal, store::journal_key(agent, seq - 1), &v);
      if (s.ok())
        return !snap_seq || *snap_seq <= seq - 1;
      if (!s.IsNotFound())
        return error_of(s, "reading the journal of " + agent);
    }
    return snap_seq ? *snap_seq == seq - 1 : seq == 1;
  }

  /// Deletes the journal events of `agent` with seq <= `upto`, stored or appended earlier in
  /// this batch, as point deletes: range tombstones would slow every journal read until they
  /// are compacted away (each passivation prunes).
  caf::error delete_journal(rocksdb::WriteBatch& batch,
                            const std::unordered_map<std::string, std::vector<uint64_t>>& appended,
                            const std::string& agent, uint64_t upto) {
    auto lower = store::journal_key(agent, 0);
    auto upper = upto == UINT64_MAX ? journal_end(agent) : store::journal_key(agent, upto + 1);
    rocksdb::Slice upper_slice{upper};
    auto ro = read_options();
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it{db->NewIterator(ro, h_journal)};
    for (it->Seek(lower); it->Valid(); it->Next())
      batch.Delete(h_journal, it->key());
    if (!it->status().ok())
      return error_of(it->status(), "reading the journal of " + agent);
    if (auto a = appended.find(agent); a != appended.end())
      for (auto seq : a->second)
        if (seq <= upto)
          batch.Delete(h_journal, store::journal_key(agent, seq));
    return {};
  }

  void run() {
    std::vector<op> batch_ops;
    for (;;) {
      batch_ops.clear();
      {
        std::unique_lock<std::mutex> guard{mtx};
        auto ready = [this] { return stopping || (!queue.empty() && holds == 0); };
        if (db) {
          cv.wait(guard, ready);
        } else if (!cv.wait_for(guard, reopen_retry_interval, ready)) {
          // Closed after a failed reopen and nothing to write: try again, so that reads
          // come back once storage works.
          guard.unlock();
          (void)recover();
          continue;
        }
        if (queue.empty() && stopping)
          return;
        while (!queue.empty() && batch_ops.size() < opts.commit_batch_writes_max) {
          batch_ops.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      commit(batch_ops);
    }
  }

  void commit(std::vector<op>& ops) {
    auto is_write = [](const op& o) {
      return o.type != op_type::forget && o.type != op_type::barrier;
    };
    std::vector<completion> completions;
    if ((needs_recovery || !db) && std::any_of(ops.begin(), ops.end(), is_write)) {
      if (auto err = recover()) {
        failure(to_string(code_of(err)));
        for (auto& o : ops) {
          if (o.type == op_type::forget)
            last_seqs.erase(o.agent);
          if (o.done)
            completions.emplace_back(std::move(o.done), is_write(o) ? err : caf::error{});
        }
        hand_over(completions);
        return;
      }
    }
    std::shared_lock<std::shared_mutex> db_guard{db_mtx};
    rocksdb::WriteBatch batch;
    std::vector<caf::error> results(ops.size());
    std::vector<bool> in_batch(ops.size(), false);
    std::unordered_map<std::string, uint64_t> tentative;
    std::unordered_set<std::string> new_metas;
    std::unordered_set<std::string> erased;
    /// Sequences appended in this batch, per agent (not yet visible to reads).
    std::unordered_map<std::string, std::vector<uint64_t>> batch_appends;
    size_t writes = 0;
    auto current_seq = [&](const std::string& agent) -> caf::expected<uint64_t> {
      if (auto t = tentative.find(agent); t != tentative.end())
        return t->second;
      if (auto c = last_seqs.find(agent); c != last_seqs.end())
        return c->second;
      return stored_last_seq(agent);
    };
    for (size_t i = 0; i < ops.size(); ++i) {
      auto& o = ops[i];
      switch (o.type) {
        case op_type::append: {
          if (erased.count(o.agent)) {
            // Erased earlier in this batch (and not created again): its tentative seq 0 must
            // not let an append through.
            results[i] = make_error(errc::agent_not_found,
                                    "append to " + o.agent + " refused: the agent is deleted");
            break;
          }
          if (!tentative.count(o.agent) && !last_seqs.count(o.agent) && !new_metas.count(o.agent)) {
            // First append of an activation: the agent must still exist (a late append of a
            // deleted agent must not leave an orphan journal behind).
            std::string v;
            auto s = erased.count(o.agent) ? rocksdb::Status::NotFound()
                                           : db->Get(read_options(), h_meta, o.agent, &v);
            if (!s.ok()) {
              results[i] = s.IsNotFound()
                ? make_error(errc::agent_not_found,
                             "append to " + o.agent + " refused: the agent is deleted")
                : error_of(s, "reading the meta of " + o.agent);
              break;
            }
          }
          caf::expected<uint64_t> cur{uint64_t{0}};
          if (tentative.count(o.agent) || last_seqs.count(o.agent)) {
            cur = current_seq(o.agent);
          } else {
            // First append of an activation: point reads (no iterator) tell whether it
            // continues the stored journal; the full read only for the error message.
            auto follows = follows_stored(o.agent, o.seq);
            if (!follows)
              cur = std::move(follows.error());
            else
              cur = *follows ? o.seq - 1 : stored_last_seq(o.agent);
          }
          if (!cur) {
            results[i] = std::move(cur.error());
            break;
          }
          if (o.seq != *cur + 1) {
            results[i] = make_error(errc::conflict,
                                    "append to " + o.agent + " at seq " + std::to_string(o.seq)
                                      + ": last is " + std::to_string(*cur));
            break;
          }
          // The record was verified when it was encoded; assert it again right before the write.
          assert(!records::verify(o.value));
          batch.Put(h_journal, store::journal_key(o.agent, o.seq), o.value);
          batch_appends[o.agent].push_back(o.seq);
          tentative[o.agent] = o.seq;
          in_batch[i] = true;
          ++writes;
          break;
        }
        case op_type::put_meta: {
          if (o.must_be_new) {
            bool exists = new_metas.count(o.agent) > 0;
            if (!exists && !erased.count(o.agent)) {
              std::string v;
              auto s = db->Get(read_options(), h_meta, o.agent, &v);
              if (!s.ok() && !s.IsNotFound()) {
                results[i] = error_of(s, "reading the meta of " + o.agent);
                break;
              }
              exists = s.ok();
            }
            if (exists) {
              results[i] = make_error(errc::agent_exists, "agent " + o.agent + " exists");
              break;
            }
          }
          assert(!records::verify(o.value));
          // (A new agent finds no journal or snapshot of an earlier one: erase removes them,
          // and appends and snapshots without a meta are refused.)
          batch.Put(h_meta, o.agent, o.value);
          new_metas.insert(o.agent);
          erased.erase(o.agent);
          in_batch[i] = true;
          ++writes;
          break;
        }
        case op_type::erase: {
          batch.Delete(h_meta, o.agent);
          batch.Delete(h_snapshots, o.agent);
          if (auto err = delete_journal(batch, batch_appends, o.agent, UINT64_MAX)) {
            results[i] = std::move(err);
            break;
          }
          tentative[o.agent] = 0;
          new_metas.erase(o.agent);
          erased.insert(o.agent);
          in_batch[i] = true;
          ++writes;
          break;
        }
        case op_type::snapshot: {
          // An agent the writer has seen appending exists (erase drops it from last_seqs,
          // but only once the erase is committed: `erased` covers this batch).
          if (!new_metas.count(o.agent) && (erased.count(o.agent) || !last_seqs.count(o.agent))) {
            bool gone = erased.count(o.agent) > 0;
            if (!gone) {
              std::string v;
              auto s = db->Get(read_options(), h_meta, o.agent, &v);
              if (!s.ok() && !s.IsNotFound()) {
                results[i] = error_of(s, "reading the meta of " + o.agent);
                break;
              }
              gone = s.IsNotFound();
            }
            if (gone) {
              results[i] = make_error(errc::agent_not_found,
                                      "snapshot of " + o.agent + " refused: the agent is deleted");
              break;
            }
          }
          if (o.must_be_new) {
            auto cur = current_seq(o.agent);
            if (!cur) {
              results[i] = std::move(cur.error());
              break;
            }
            if (*cur < o.seq) {
              results[i] = make_error(errc::conflict,
                                      "snapshot of " + o.agent + " at seq " + std::to_string(o.seq)
                                        + " refused: the journal ends at " + std::to_string(*cur));
              break;
            }
          }
          assert(!records::verify(o.value));
          if (o.prune_through > 0 && o.prune_from > 0) {
            // The caller knows what is stored: point deletes without reading.
            for (auto seq = o.prune_from; seq <= o.prune_through; ++seq)
              batch.Delete(h_journal, store::journal_key(o.agent, seq));
          } else if (o.prune_through > 0) {
            if (auto err = delete_journal(batch, batch_appends, o.agent, o.prune_through)) {
              results[i] = std::move(err);
              break;
            }
          }
          batch.Put(h_snapshots, o.agent, o.value);
          auto cur = tentative.count(o.agent) || last_seqs.count(o.agent)
            ? current_seq(o.agent)
            : stored_last_seq(o.agent, o.seq);
          tentative[o.agent] = std::max(cur ? *cur : 0, o.seq);
          if (!cur)
            tentative.erase(o.agent); // unknown: reload after the commit
          in_batch[i] = true;
          ++writes;
          break;
        }
        case op_type::forget:
        case op_type::barrier: in_batch[i] = true; break;
      }
    }
    caf::error batch_error;
    uint64_t reservation = 0;
    if (writes > 0) {
      if ((reservation = epoch_reservation_pending.exchange(0)) > 0) {
        std::string nv;
        put_be64(nv, reservation);
        batch.Put(h_default, epoch_key, nv);
      }
      rocksdb::WriteOptions wo;
      wo.sync = true;         // durable before any completion runs
      wo.disableWAL = false;  // the WAL is what makes it durable
      wo.no_slowdown = false; // wait for stalls rather than fail
      auto t0 = std::chrono::steady_clock::now();
      auto s = db->Write(wo, &batch);
      auto dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!s.ok()) {
        batch_error = error_of(s, "group commit of " + std::to_string(writes) + " writes");
        if (!needs_recovery) {
          // Nothing is written after a failure until the reopen: this is the last
          // acknowledged sequence number.
          needs_recovery = true;
          durable_seq_max = db->GetLatestSequenceNumber();
        }
        if (reservation > 0) {
          uint64_t none = 0;
          epoch_reservation_pending.compare_exchange_strong(none, reservation);
        }
        failure(to_string(code_of(batch_error)));
        // What the cache believed may be wrong now: reload lazily.
        for (auto& [agent, _] : tentative)
          last_seqs.erase(agent);
      } else {
        if (opts.observer)
          opts.observer->on_commit(writes, dt);
        for (auto& [agent, seq] : tentative)
          last_seqs[agent] = seq;
      }
    }
    db_guard.unlock(); // completions may read the store
    auto now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < ops.size(); ++i) {
      auto& o = ops[i];
      if (in_batch[i] && batch_error && o.type != op_type::forget && o.type != op_type::barrier)
        results[i] = batch_error;
      if (!in_batch[i] && results[i])
        failure(to_string(code_of(results[i])));
      if (o.type == op_type::forget || (o.type == op_type::erase && !results[i]))
        last_seqs.erase(o.agent);
      if (o.type == op_type::append && !results[i] && opts.observer)
        opts.observer->on_append_latency(std::chrono::duration<double>(now - o.enqueued).count());
      if (o.done && o.type == op_type::barrier) {
        // A barrier completes on the writer once every earlier completion ran (tests hold
        // the writer in one to gather the next group commit).
        hand_over(completions);
        wait_drained();
        o.done(std::move(results[i]));
      } else if (o.done) {
        completions.emplace_back(std::move(o.done), std::move(results[i]));
      }
    }
    hand_over(completions);
    if (last_seqs.size() > last_seqs_max)
      last_seqs.clear();
  }
};

// -- store -------------------------------------------------------------------------------------

store::store(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

store::~store() = default;

const std::string& store::path() const noexcept {
  return impl_->opts.path;
}

std::string store::journal_key(std::string_view agent, uint64_t seq) {
  auto k = journal_prefix(agent);
  put_be64(k, seq);
  return k;
}

caf::expected<std::unique_ptr<store>> store::open(store_options opts) {
  auto p = std::make_unique<impl>();
  p->opts = std::move(opts);
  std::error_code ec;
  std::filesystem::create_directories(p->opts.path, ec);
  if (ec)
    return make_error(errc::storage_error,
                      "cannot create database directory " + p->opts.path + ": " + ec.message());
  auto& dbo = p->dbo;
  dbo.create_if_missing = true;
  dbo.create_missing_column_families = true;
  dbo.paranoid_checks = true;
  // Synced writes are never lost; a torn tail after a crash is cut at the last whole record.
  dbo.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  dbo.max_background_jobs = 2;
  dbo.keep_log_file_num = 4;
  dbo.max_total_wal_size = 256ull << 20;
  dbo.avoid_flush_during_shutdown = false;
  dbo.listeners.push_back(std::make_shared<no_auto_recovery>());
  if (p->opts.file_system) {
    p->env = rocksdb::NewCompositeEnv(p->opts.file_system);
    dbo.env = p->env.get();
  }
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(p->opts.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  rocksdb::ColumnFamilyOptions cfo;
  cfo.write_buffer_size = p->opts.write_buffer_bytes;
  cfo.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Journal keys of one agent share the prefix `id NUL`: the memtable inserts with a hint
  // from the last insert of that prefix (measured ~3x faster per insert).
  auto journal_cfo = cfo;
  journal_cfo.memtable_insert_with_hint_prefix_extractor = std::make_shared<agent_prefix>();
  p->cfs = {
    {rocksdb::kDefaultColumnFamilyName, cfo},
    {cf_meta, cfo},
    {cf_snapshots, cfo},
    {cf_journal, journal_cfo},
  };
  auto s = p->open_db(nullptr);
  if (!s.ok())
    return error_of(s, "cannot open database " + p->opts.path);
  // Epochs: continue above the last reserved block.
  std::string v;
  s = p->db->Get(read_options(), p->h_default, epoch_key, &v);
  uint64_t base = 0;
  if (s.ok() && v.size() == 8)
    base = get_be64(v);
  else if (!s.ok() && !s.IsNotFound())
    return error_of(s, "reading the epoch reservation");
  p->next_epoch = base + 1;
  std::string nv;
  put_be64(nv, base + epoch_block);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  s = p->db->Put(wo, p->h_default, epoch_key, nv);
  if (!s.ok())
    return error_of(s, "writing the epoch reservation");
  p->epoch_reserved = base + epoch_block;
  auto* ip = p.get();
  p->completer = std::thread{[ip] { ip->run_completions(); }};
  p->writer = std::thread{[ip] { ip->run(); }};
  return std::unique_ptr<store>{new store(std::move(p))};
}

store::commit_hold::~commit_hold() {
  if (impl_ == nullptr)
    return;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    assert(impl_->holds > 0);
    --impl_->holds;
  }
  impl_->cv.notify_one();
}

store::commit_hold store::hold_commits() {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  ++impl_->holds;
  return commit_hold{impl_.get()};
}

uint64_t store::next_epoch() {
  auto e = impl_->next_epoch.fetch_add(1);
  if (e >= impl_->epoch_reserved.load()) {
    std::lock_guard<std::mutex> guard{impl_->epoch_mtx};
    if (e >= impl_->epoch_reserved.load()) {
      std::string nv;
      auto reserved = e + epoch_block;
      put_be64(nv, reserved);
      rocksdb::WriteOptions wo;
      wo.sync = true;
      std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
      auto s = impl_->db ? impl_->db->Put(wo, impl_->h_default, epoch_key, nv)
                         : rocksdb::Status::IOError("database closed");
      if (!s.ok()) {
        // The writer's next batch carries the reservation, ahead of any record with one of
        // these epochs: a restart never reuses an epoch that a durable record carries.
        auto pending = impl_->epoch_reservation_pending.load();
        while (pending < reserved
               && !impl_->epoch_reservation_pending.compare_exchange_weak(pending, reserved)) {
        }
      }
      impl_->epoch_reserved = reserved;
    }
  }
  return e;
}

void store::put_meta(records::meta_record meta, bool must_be_new, done_fn done) {
  impl::op o;
  o.type = impl::op_type::put_meta;
  o.agent = meta.hdr.agent;
  o.value = records::encode(meta);
  o.must_be_new = must_be_new;
  o.done = std::move(done);
  impl_->submit(std::move(o));
}

void store::erase_agent(std::string agent, done_fn done) {
  impl::op o;
  o.type = impl::op_type::erase;
  o.agent = std::move(agent);
  o.done = std::move(done);
  impl_->submit(std::move(o));
}

void store::append(records::event_record ev, done_fn done) {
  impl::op o;
  o.type = impl::op_type::append;
  o.agent = ev.hdr.agent;
  o.seq = ev.hdr.seq;
  o.value = records::encode(ev);
  o.done = std::move(done);
  impl_->submit(std::move(o));
}

void store::put_snapshot(records::snapshot_record snap, uint64_t prune_through, done_fn done,
                         bool require_journal, uint64_t prune_from) {
  auto bytes = records::encode(snap);
  put_snapshot_encoded(snap.hdr.agent, snap.hdr.seq, std::move(bytes), prune_through,
                       std::move(done), require_journal, prune_from);
}

void store::put_snapshot_encoded(std::string agent, uint64_t seq, std::string record,
                                 uint64_t prune_through, done_fn done, bool require_journal,
                                 uint64_t prune_from) {
  assert(prune_through <= seq);
  impl::op o;
  o.prune_from = prune_from;
  o.must_be_new = require_journal; // for snapshots: "require the journal to cover seq"
  o.type = impl::op_type::snapshot;
  o.agent = std::move(agent);
  o.seq = seq;
  o.prune_through = prune_through;
  o.value = std::move(record);
  o.done = std::move(done);
  impl_->submit(std::move(o));
}

void store::forget(std::string agent) {
  impl::op o;
  o.type = impl::op_type::forget;
  o.agent = std::move(agent);
  impl_->submit(std::move(o));
}

void store::barrier(done_fn done) {
  impl::op o;
  o.type = impl::op_type::barrier;
  o.done = std::move(done);
  impl_->submit(std::move(o));
}

void store::drain() {
  assert(impl_->writer.get_id() != std::this_thread::get_id());
  assert(impl_->completer.get_id() != std::this_thread::get_id());
  std::promise<caf::error> drained;
  barrier([&drained](caf::error err) { drained.set_value(std::move(err)); });
  (void)drained.get_future().get();
}

namespace {

/// Reads the record of `agent` in one column family and checks that it is the agent's:
/// nullopt if none; corrupt_record (counted) if it fails to decode or names another agent.
template <class Record, class Decode>
caf::expected<std::optional<Record>> get_record(const store::impl& st,
                                                rocksdb::ColumnFamilyHandle* cf,
                                                std::string_view agent, Decode decode,
                                                const char* what) {
  std::string v;
  auto s = st.db->Get(read_options(), cf, rocksdb::Slice{agent.data(), agent.size()}, &v);
  if (s.IsNotFound())
    return std::optional<Record>{};
  if (!s.ok())
    return error_of(s, std::string{"reading the "} + what + " of " + std::string{agent});
  auto rec = decode(v);
  if (!rec) {
    st.failure("corrupt_record");
    return std::move(rec.error());
  }
  if (rec->hdr.agent != agent) {
    st.failure("corrupt_record");
    return make_error(errc::corrupt_record,
                      std::string{what} + " stored under " + std::string{agent} + " names agent "
                        + rec->hdr.agent.substr(0, 256));
  }
  return std::optional<Record>{std::move(*rec)};
}

/// Decodes the journal event stored under (`agent`, `seq`) and checks that it is that one;
/// corrupt_record (counted) otherwise.
caf::expected<records::event_record> journal_entry(const store::impl& st, std::string_view agent,
                                                   uint64_t seq, std::string_view value) {
  auto ev = records::decode_event(value);
  if (!ev) {
    st.failure("corrupt_record");
    return std::move(ev.error());
  }
  if (ev->hdr.agent != agent || ev->hdr.seq != seq) {
    st.failure("corrupt_record");
    return make_error(errc::corrupt_record,
                      "journal key " + std::string{agent} + "#" + std::to_string(seq)
                        + " holds the event of " + ev->hdr.agent.substr(0, 256) + "#"
                        + std::to_string(ev->hdr.seq));
  }
  return ev;
}

} // namespace

caf::expected<std::optional<records::meta_record>> store::get_meta(std::string_view agent) const {
  std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
  if (!impl_->db)
    return impl_->closed_error();
  return get_record<records::meta_record>(*impl_, impl_->h_meta, agent, records::decode_meta,
                                          "meta");
}

caf::expected<std::vector<records::meta_record>> store::list_meta(std::string_view tenant,
                                                                  std::string_view after,
                                                                  size_t limit) const {
  std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
  if (!impl_->db)
    return impl_->closed_error();
  std::vector<records::meta_record> out;
  std::unique_ptr<rocksdb::Iterator> it{impl_->db->NewIterator(read_options(), impl_->h_meta)};
  std::string prefix = tenant.empty() ? std::string{} : std::string{tenant} + "/";
  std::string start = std::max(std::string{after}, prefix);
  for (it->Seek(start); it->Valid() && out.size() < limit; it->Next()) {
    auto key = it->key().ToStringView();
    if (!prefix.empty() && !key.starts_with(prefix))
      break;
    if (!after.empty() && key <= after)
      continue;
    auto m = records::decode_meta(it->value().ToStringView());
    if (!m) {
      impl_->failure("corrupt_record");
      return std::move(m.error());
    }
    if (m->hdr.agent != key) {
      impl_->failure("corrupt_record");
      return make_error(errc::corrupt_record,
                        "meta stored under " + std::string{key}.substr(0, 256) + " names agent "
                          + m->hdr.agent.substr(0, 256));
    }
    out.push_back(std::move(*m));
  }
  if (!it->status().ok())
    return error_of(it->status(), "listing agents");
  return out;
}

caf::expected<std::vector<records::event_record>> store::read_journal_from(std::string_view agent,
                                                                           uint64_t from_seq,
                                                                           size_t limit) const {
  std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
  if (!impl_->db)
    return impl_->closed_error();
  std::vector<records::event_record> out;
  std::string value;
  for (auto seq = from_seq; out.size() < limit; ++seq) {
    auto s = impl_->db->Get(read_options(), impl_->h_journal, journal_key(agent, seq), &value);
    if (s.IsNotFound())
      break;
    if (!s.ok())
      return error_of(s, "reading the journal of " + std::string{agent});
    auto ev = journal_entry(*impl_, agent, seq, value);
    if (!ev)
      return std::move(ev.error());
    out.push_back(std::move(*ev));
  }
  return out;
}

caf::expected<std::vector<records::event_record>> store::read_events(std::string_view agent,
                                                                     uint64_t from_seq,
                                                                     uint64_t to_seq,
                                                                     size_t limit) const {
  std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
  if (!impl_->db)
    return impl_->closed_error();
  std::vector<records::event_record> out;
  if (from_seq > to_seq)
    return out;
  auto lower = journal_key(agent, from_seq);
  auto upper = to_seq == UINT64_MAX ? journal_end(agent) : journal_key(agent, to_seq + 1);
  rocksdb::Slice upper_slice{upper};
  auto ro = read_options();
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it{impl_->db->NewIterator(ro, impl_->h_journal)};
  auto prefix = journal_prefix(agent);
  for (it->Seek(lower); it->Valid() && out.size() < limit; it->Next()) {
    auto key = it->key().ToStringView();
    if (!key.starts_with(prefix) || key.size() != prefix.size() + 8) {
      impl_->failure("corrupt_record");
      return make_error(errc::corrupt_record, "malformed journal key under " + std::string{agent});
    }
    auto seq = get_be64(key.substr(prefix.size()));
    auto ev = journal_entry(*impl_, agent, seq, it->value().ToStringView());
    if (!ev)
      return std::move(ev.error());
    out.push_back(std::move(*ev));
  }
  if (!it->status().ok())
    return error_of(it->status(), "reading the journal of " + std::string{agent});
  return out;
}

caf::expected<uint64_t> store::last_seq(std::string_view agent) const {
  std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
  if (!impl_->db)
    return impl_->closed_error();
  return impl_->stored_last_seq(agent);
}

caf::expected<std::optional<records::snapshot_record>> store::get_snapshot(
  std::string_view agent) const {
  std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
  if (!impl_->db)
    return impl_->closed_error();
  return get_record<records::snapshot_record>(*impl_, impl_->h_snapshots, agent,
                                              records::decode_snapshot, "snapshot");
}

caf::error store::checkpoint(const std::string& dir) {
  std::error_code ec;
  if (dir.empty() || dir[0] != '/')
    return make_error(errc::invalid_argument,
                      "backup directory '" + dir.substr(0, 256) + "' must be an absolute path");
  if (std::filesystem::exists(dir, ec))
    return make_error(errc::invalid_argument,
                      "backup directory " + dir.substr(0, 256) + " exists; give a new one");
  std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
  if (!impl_->db)
    return impl_->closed_error();
  rocksdb::Checkpoint* raw = nullptr;
  auto s = rocksdb::Checkpoint::Create(impl_->db.get(), &raw);
  if (!s.ok())
    return error_of(s, "creating a checkpoint");
  std::unique_ptr<rocksdb::Checkpoint> cp{raw};
  // log_size_for_flush = 0: flush the memtables first, so the copy is SST files only.
  s = cp->CreateCheckpoint(dir, 0);
  if (!s.ok())
    return error_of(s, "writing the checkpoint to " + dir);
  return {};
}

caf::expected<std::string> store::stats_json() const {
  std::shared_lock<std::shared_mutex> db_guard{impl_->db_mtx};
  if (!impl_->db)
    return impl_->closed_error();
  nlohmann::json out;
  auto prop = [&](rocksdb::ColumnFamilyHandle* h, const char* name) {
    uint64_t v = 0;
    impl_->db->GetIntProperty(h, name, &v);
    return v;
  };
  for (auto [h, name] :
       {std::pair{impl_->h_meta, cf_meta}, std::pair{impl_->h_snapshots, cf_snapshots},
        std::pair{impl_->h_journal, cf_journal}}) {
    out[name] = {{"keys_estimate", prop(h, "rocksdb.estimate-num-keys")},
                 {"sst_bytes", prop(h, "rocksdb.total-sst-files-size")},
                 {"memtable_bytes", prop(h, "rocksdb.cur-size-all-mem-tables")}};
  }
  out["path"] = impl_->opts.path;
  return out.dump();
}

caf::error restore_checkpoint(const std::string& checkpoint_dir, const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(checkpoint_dir, ec)
      || !fs::exists(fs::path{checkpoint_dir} / "CURRENT", ec))
    return make_error(errc::invalid_argument,
                      checkpoint_dir + " is not a backup (no RocksDB CURRENT file in it)");
  auto db_dir = fs::path{data_dir} / "db";
  if (fs::exists(db_dir, ec))
    return make_error(errc::invalid_argument,
                      db_dir.string() + " exists: restore only into a new data directory");
  fs::create_directories(data_dir, ec);
  if (ec)
    return make_error(errc::io_error, "cannot create " + data_dir + ": " + ec.message());
  // Whatever fails from here on removes the partial copy, so that a retry can succeed.
  struct cleanup {
    fs::path dir;
    bool keep = false;
    ~cleanup() {
      std::error_code ignored;
      if (!keep)
        fs::remove_all(dir, ignored);
    }
  } guard{db_dir};
  fs::copy(checkpoint_dir, db_dir, fs::copy_options::recursive, ec);
  if (ec)
    return make_error(errc::io_error,
                      "copying " + checkpoint_dir + " to " + db_dir.string() + ": " + ec.message());
  // Check that it opens and that every record verifies.
  store_options o;
  o.path = db_dir.string();
  auto st = store::open(o);
  if (!st)
    return std::move(st.error());
  std::string after;
  for (;;) {
    auto metas = (*st)->list_meta({}, after, 1000);
    if (!metas)
      return std::move(metas.error());
    if (metas->empty())
      break;
    for (auto& m : *metas) {
      if (auto snap = (*st)->get_snapshot(m.hdr.agent); !snap)
        return std::move(snap.error());
      if (auto evs = (*st)->read_events(m.hdr.agent, 0, UINT64_MAX, SIZE_MAX); !evs)
        return std::move(evs.error());
    }
    after = metas->back().hdr.agent;
  }
  guard.keep = true;
  return {};
}

} // namespace hive
