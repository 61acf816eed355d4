#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "protocols/records.hpp"

namespace rocksdb {
class FileSystem;
} // namespace rocksdb

namespace hive {

/// What the store reports about its commits (implemented by the runtime's metrics).
struct store_observer {
  virtual ~store_observer() = default;
  /// One group commit: how many writes it carried and how long the sync write took.
  virtual void on_commit(size_t writes, double write_seconds) = 0;
  /// The time from enqueueing one journal append to its durable completion.
  virtual void on_append_latency(double seconds) = 0;
  /// A storage failure (`errc` name: storage_error, storage_full, corrupt_record, conflict).
  virtual void on_failure(std::string_view code) = 0;
};

/// Settings of a store (from `storage.*` config).
struct store_options {
  /// Directory of the RocksDB database (created if missing).
  std::string path;
  /// Most writes one group commit carries.
  size_t commit_batch_writes_max = 4096;
  /// Writes waiting for a commit beyond which new ones are refused (`overloaded`).
  size_t commit_queue_writes_max = 65536;
  /// Largest encoded record accepted (`too_large`).
  size_t record_bytes_max = 4 << 20;
  /// RocksDB block cache size.
  size_t block_cache_bytes = 64 << 20;
  /// RocksDB memtable size per column family.
  size_t write_buffer_bytes = 32 << 20;
  /// Test hook: the file system RocksDB uses (fault injection); null = the default one.
  std::shared_ptr<rocksdb::FileSystem> file_system;
  std::shared_ptr<store_observer> observer;
};

/// A node's durable store: one RocksDB database with column families `meta` (agent id ->
/// kind and config), `snapshots` (agent id -> latest snapshot) and `journal` (agent id, NUL,
/// big-endian sequence -> event: one agent's journal is one key range in sequence order).
/// Every value is a checksummed Cap'n Proto record (protocols/records.hpp), verified on every
/// read and before every write.
///
/// Writes are asynchronous and durable: one writer thread group-commits everything queued
/// into one `WriteBatch` written with `sync = true`, then hands the completions, in commit
/// order, to a completion thread (they must not block) and starts the next batch at once.
/// Completions of writes refused before queueing (full queue, too large, closing) run on the
/// calling thread. A completion without error means the write survives a crash of the process
/// and of the machine. Reads are synchronous and thread-safe.
///
/// A write that fails (storage_error, storage_full) is not acknowledged and does not come back
/// later: before the next write the writer reopens the database once a probe write succeeds,
/// replaying the WAL only up to the last acknowledged write (RocksDB's own Resume() cannot
/// recover from a failed WAL write). Reads keep working meanwhile, and fail with storage_error
/// only while a reopen fails (retried every second). Only a crash of the process between the
/// failure and that reopen may still recover a write whose sync failed.
class store {
public:
  using done_fn = std::function<void(caf::error)>;

  /// Opens (creating if missing) the database at `opts.path`. Errors: storage_error naming
  /// the path and RocksDB's reason.
  [[nodiscard]] static caf::expected<std::unique_ptr<store>> open(store_options opts);

  /// Waits for queued writes to finish, then closes the database.
  ~store();

  store(const store&) = delete;
  store& operator=(const store&) = delete;

  // -- agents -------------------------------------------------------------------------------

  /// Records an agent's meta durably. With `must_be_new`, fails with `agent_exists` if one
  /// is stored already (checked in commit order, so two concurrent creations cannot both win).
  void put_meta(records::meta_record meta, bool must_be_new, done_fn done);

  /// The stored meta of `agent` (`tenant/name`), nullopt if none.
  [[nodiscard]] caf::expected<std::optional<records::meta_record>> get_meta(
    std::string_view agent) const;

  /// Metas in id order strictly after `after`, at most `limit`, of `tenant` if non-empty.
  [[nodiscard]] caf::expected<std::vector<records::meta_record>> list_meta(std::string_view tenant,
                                                                           std::string_view after,
                                                                           size_t limit) const;

  /// Removes an agent durably: its meta, snapshot and whole journal.
  void erase_agent(std::string agent, done_fn done);

  // -- journal ------------------------------------------------------------------------------

  /// Appends one event durably. Its `hdr.seq` must be the agent's last sequence number + 1,
  /// checked in commit order against what is stored: otherwise `conflict`. Errors also:
  /// overloaded (queue full), too_large, storage_error, storage_full.
  void append(records::event_record ev, done_fn done);

  /// Events of `agent` with `from_seq <= seq <= to_seq`, in order, at most `limit`; each one
  /// verified. Errors: corrupt_record (never skipped), storage_error.
  [[nodiscard]] caf::expected<std::vector<records::event_record>> read_events(
    std::string_view agent, uint64_t from_seq, uint64_t to_seq, size_t limit) const;

  /// Events of `agent` from `from_seq` on, in order, up to the first sequence number not
  /// stored, at most `limit`: point lookups (bloom filters), no iterator, so its cost does not
  /// depend on what else the journal holds. Recovery uses it (a journal has no gaps: appends
  /// carry the expected sequence). Errors: corrupt_record, storage_error.
  [[nodiscard]] caf::expected<std::vector<records::event_record>> read_journal_from(
    std::string_view agent, uint64_t from_seq, size_t limit) const;

  /// The agent's last sequence number: the larger of its last journal event and its
  /// snapshot's sequence (0 if neither).
  [[nodiscard]] caf::expected<uint64_t> last_seq(std::string_view agent) const;

  // -- snapshots ----------------------------------------------------------------------------

  /// Stores a snapshot durably (replacing the previous one) and, in the same atomic batch,
  /// deletes the agent's journal events with `seq <= prune_through` (0: none). With
  /// `require_journal` (journaled agents), refuses with `conflict` unless the journal holds
  /// every event up to the snapshot's sequence at commit time: a snapshot never includes an
  /// event whose append failed. Refused with `agent_not_found` if the agent has no meta (it
  /// was deleted), so a late snapshot cannot resurrect a deleted agent.
  ///
  /// `prune_from` > 0 says the journal holds nothing below it: the events
  /// `prune_from..prune_through` are deleted without reading the journal (faster; with 0 the
  /// writer reads which events exist).
  void put_snapshot(records::snapshot_record snap, uint64_t prune_through, done_fn done,
                    bool require_journal = false, uint64_t prune_from = 0);

  /// The same for a snapshot encoded already (`records::encode`; a migration stores the
  /// bytes it received, verified by `records::decode_snapshot`), of `agent` at `seq` (which
  /// must be the record's own: the writer checks only the checksum).
  void put_snapshot_encoded(std::string agent, uint64_t seq, std::string record,
                            uint64_t prune_through, done_fn done, bool require_journal = false,
                            uint64_t prune_from = 0);

  /// The latest snapshot of `agent`, nullopt if none.
  [[nodiscard]] caf::expected<std::optional<records::snapshot_record>> get_snapshot(
    std::string_view agent) const;

  // -- misc ---------------------------------------------------------------------------------

  /// Drops the writer's cached last sequence of `agent` (after its activation ended), in
  /// order with the writes queued before.
  void forget(std::string agent);

  /// Calls `done` once every write queued before has completed and their completions ran.
  /// It runs on the writer thread: the next batch waits for it.
  void barrier(done_fn done);

  /// Blocks until every write queued before has completed and its completion ran (a
  /// `barrier`, waited for). A completion may queue further writes: call it again to wait
  /// for those. Not on this store's writer or completion thread (asserted). Before the last
  /// reference to a store drops, its owner drains it, so that the completions still running
  /// (a replica round's late answers, which hold the store) are not the last to let go.
  void drain();

  /// A fresh activation epoch: unique and increasing across restarts of the node.
  [[nodiscard]] uint64_t next_epoch();

  /// While one lives, the writer starts no group commit: the writes queued meanwhile share
  /// the next one, which starts when the last hold ends (a migration's target queues its
  /// replica promise and the shipped state together: one synced write, not two in a row).
  /// Hold it only around a few calls that queue writes: every writer of the store waits.
  struct impl;
  class commit_hold {
  public:
    commit_hold(commit_hold&& other) noexcept : impl_(std::exchange(other.impl_, nullptr)) {}
    commit_hold(const commit_hold&) = delete;
    commit_hold& operator=(const commit_hold&) = delete;
    commit_hold& operator=(commit_hold&&) = delete;
    ~commit_hold();

  private:
    friend class store;
    explicit commit_hold(impl* p) noexcept : impl_(p) {}
    impl* impl_;
  };
  [[nodiscard]] commit_hold hold_commits();

  /// Writes an online, consistent copy of the database to `dir` (must not exist) as a
  /// RocksDB checkpoint. Errors: invalid_argument (dir exists), storage_error.
  [[nodiscard]] caf::error checkpoint(const std::string& dir);

  /// Counts of what is stored (estimates from RocksDB), and disk use.
  [[nodiscard]] caf::expected<std::string> stats_json() const;

  [[nodiscard]] const std::string& path() const noexcept;

  /// Builds the journal key of (`agent`, `seq`).
  [[nodiscard]] static std::string journal_key(std::string_view agent, uint64_t seq);

private:
  explicit store(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// Copies a checkpoint made by `store::checkpoint` into `data_dir/db` of a new data directory
/// (which must not contain a database yet) and checks that it opens and reads.
[[nodiscard]] caf::error restore_checkpoint(const std::string& checkpoint_dir,
                                            const std::string& data_dir);

} // namespace hive
