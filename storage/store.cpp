#include "storage/store.hpp"

#include <atomic>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
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
    bool must_be_new = false;
    done_fn done;
    std::chrono::steady_clock::time_point enqueued;
  };

  store_options opts;
  /// The Env over `opts.file_system` (if any); outlives the database (closed in ~impl).
  std::unique_ptr<rocksdb::Env> env;
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
  std::thread writer;

  /// Writer-thread only: last sequence per agent with an activation (bounded by forget()).
  std::unordered_map<std::string, uint64_t> last_seqs;
  static constexpr size_t last_seqs_max = 1 << 20;
  /// Writer-thread only: the last batch failed, try `Resume()` before the next.
  bool needs_resume = false;

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
      // Completions must never hold the last reference to the store (they run on the writer).
      assert(writer.get_id() != std::this_thread::get_id());
      writer.join();
    }
    if (db) {
      for (auto h : handles)
        db->DestroyColumnFamilyHandle(h);
      handles.clear();
      auto s = db->Close();
      (void) s;
      db.reset();
    }
  }

  void failure(std::string_view code) {
    if (opts.observer)
      opts.observer->on_failure(code);
  }

  /// Queues `o`, or completes it at once (on the calling thread) with the reason it was
  /// refused: the store is closing, the queue is full, the record is too large.
  void submit(op o) {
    caf::error refused;
    if (o.value.size() > opts.record_bytes_max) {
      refused = make_error(errc::too_large, "record of " + o.agent.substr(0, 256) + " is "
                                              + std::to_string(o.value.size())
                                              + " bytes; storage.record_bytes_max is "
                                              + std::to_string(opts.record_bytes_max));
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

  caf::expected<uint64_t> stored_last_seq(std::string_view agent) const {
    uint64_t last = 0;
    {
      std::unique_ptr<rocksdb::Iterator> it{db->NewIterator(read_options(), h_journal)};
      auto end = journal_end(agent);
      it->SeekForPrev(end);
      if (it->Valid() && it->key().ToStringView() == end)
        it->Prev();
      auto prefix = journal_prefix(agent);
      if (it->Valid() && it->key().starts_with(prefix)
          && it->key().size() == prefix.size() + 8)
        last = get_be64(it->key().ToStringView().substr(prefix.size()));
      if (!it->status().ok())
        return error_of(it->status(), "reading the journal of " + std::string{agent});
    }
    std::string value;
    auto s = db->Get(read_options(), h_snapshots, rocksdb::Slice{agent.data(), agent.size()},
                     &value);
    if (s.ok()) {
      auto snap = records::decode_snapshot(value);
      if (!snap)
        return std::move(snap.error());
      last = std::max(last, snap->hdr.seq);
    } else if (!s.IsNotFound()) {
      return error_of(s, "reading the snapshot of " + std::string{agent});
    }
    return last;
  }

  void run() {
    std::vector<op> batch_ops;
    for (;;) {
      batch_ops.clear();
      {
        std::unique_lock<std::mutex> guard{mtx};
        cv.wait(guard, [this] { return stopping || !queue.empty(); });
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
    rocksdb::WriteBatch batch;
    std::vector<caf::error> results(ops.size());
    std::vector<bool> in_batch(ops.size(), false);
    std::unordered_map<std::string, uint64_t> tentative;
    std::unordered_set<std::string> new_metas;
    std::unordered_set<std::string> erased;
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
          if (!tentative.count(o.agent) && !last_seqs.count(o.agent)
              && !new_metas.count(o.agent)) {
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
          auto cur = current_seq(o.agent);
          if (!cur) {
            results[i] = std::move(cur.error());
            break;
          }
          if (o.seq != *cur + 1) {
            results[i] = make_error(errc::conflict, "append to " + o.agent + " at seq "
                                                      + std::to_string(o.seq) + ": last is "
                                                      + std::to_string(*cur));
            break;
          }
          // The record was verified when it was encoded; assert it again right before the write.
          assert(!records::verify(o.value));
          batch.Put(h_journal, store::journal_key(o.agent, o.seq), o.value);
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
          if (o.must_be_new) {
            // A new agent starts clean, whatever an earlier one of this id left behind.
            batch.Delete(h_snapshots, o.agent);
            batch.DeleteRange(h_journal, journal_prefix(o.agent), journal_end(o.agent));
            tentative[o.agent] = 0;
          }
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
          batch.DeleteRange(h_journal, journal_prefix(o.agent), journal_end(o.agent));
          tentative[o.agent] = 0;
          new_metas.erase(o.agent);
          erased.insert(o.agent);
          in_batch[i] = true;
          ++writes;
          break;
        }
        case op_type::snapshot: {
          if (!new_metas.count(o.agent)) {
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
              results[i] = make_error(errc::conflict, "snapshot of " + o.agent + " at seq "
                                                        + std::to_string(o.seq)
                                                        + " refused: the journal ends at "
                                                        + std::to_string(*cur));
              break;
            }
          }
          assert(!records::verify(o.value));
          batch.Put(h_snapshots, o.agent, o.value);
          if (o.prune_through > 0)
            batch.DeleteRange(h_journal, store::journal_key(o.agent, 0),
                              store::journal_key(o.agent, o.prune_through + 1));
          auto cur = current_seq(o.agent);
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
    if (writes > 0) {
      if (needs_resume) {
        auto s = db->Resume();
        if (s.ok())
          needs_resume = false;
      }
      rocksdb::WriteOptions wo;
      wo.sync = true;          // durable before any completion runs
      wo.disableWAL = false;   // the WAL is what makes it durable
      wo.no_slowdown = false;  // wait for stalls rather than fail
      auto t0 = std::chrono::steady_clock::now();
      auto s = db->Write(wo, &batch);
      auto dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!s.ok()) {
        batch_error = error_of(s, "group commit of " + std::to_string(writes) + " writes");
        needs_resume = true;
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
      if (o.done)
        o.done(std::move(results[i]));
    }
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
  rocksdb::DBOptions dbo;
  dbo.create_if_missing = true;
  dbo.create_missing_column_families = true;
  dbo.paranoid_checks = true;
  // Synced writes are never lost; a torn tail after a crash is cut at the last whole record.
  dbo.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  dbo.max_background_jobs = 2;
  dbo.keep_log_file_num = 4;
  dbo.max_total_wal_size = 256ull << 20;
  dbo.avoid_flush_during_shutdown = false;
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
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs{
    {rocksdb::kDefaultColumnFamilyName, cfo},
    {cf_meta, cfo},
    {cf_snapshots, cfo},
    {cf_journal, cfo},
  };
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(dbo, p->opts.path, cfs, &p->handles, &raw);
  if (!s.ok())
    return error_of(s, "cannot open database " + p->opts.path);
  p->db.reset(raw);
  p->h_default = p->handles[0];
  p->h_meta = p->handles[1];
  p->h_snapshots = p->handles[2];
  p->h_journal = p->handles[3];
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
  p->writer = std::thread{[ip] { ip->run(); }};
  return std::unique_ptr<store>{new store(std::move(p))};
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
      // A failed reservation write is not fatal to uniqueness within this process; the next
      // start re-reads the last reservation that did land and may reuse higher values only
      // if this write was lost, which then also lost every record carrying them.
      (void) impl_->db->Put(wo, impl_->h_default, epoch_key, nv);
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
                         bool require_journal) {
  assert(prune_through <= snap.hdr.seq);
  impl::op o;
  o.must_be_new = require_journal; // for snapshots: "require the journal to cover seq"
  o.type = impl::op_type::snapshot;
  o.agent = snap.hdr.agent;
  o.seq = snap.hdr.seq;
  o.prune_through = prune_through;
  o.value = records::encode(snap);
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

caf::expected<std::optional<records::meta_record>> store::get_meta(std::string_view agent) const {
  std::string v;
  auto s = impl_->db->Get(read_options(), impl_->h_meta, rocksdb::Slice{agent.data(), agent.size()},
                          &v);
  if (s.IsNotFound())
    return std::optional<records::meta_record>{};
  if (!s.ok())
    return error_of(s, "reading the meta of " + std::string{agent});
  auto m = records::decode_meta(v);
  if (!m) {
    impl_->failure("corrupt_record");
    return std::move(m.error());
  }
  if (m->hdr.agent != agent) {
    impl_->failure("corrupt_record");
    return make_error(errc::corrupt_record, "meta stored under " + std::string{agent}
                                              + " names agent " + m->hdr.agent.substr(0, 256));
  }
  return std::optional<records::meta_record>{std::move(*m)};
}

caf::expected<std::vector<records::meta_record>> store::list_meta(std::string_view tenant,
                                                                  std::string_view after,
                                                                  size_t limit) const {
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
      return make_error(errc::corrupt_record, "meta stored under " + std::string{key}.substr(0, 256)
                                                + " names agent " + m->hdr.agent.substr(0, 256));
    }
    out.push_back(std::move(*m));
  }
  if (!it->status().ok())
    return error_of(it->status(), "listing agents");
  return out;
}

caf::expected<std::vector<records::event_record>> store::read_events(std::string_view agent,
                                                                     uint64_t from_seq,
                                                                     uint64_t to_seq,
                                                                     size_t limit) const {
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
    auto ev = records::decode_event(it->value().ToStringView());
    if (!ev) {
      impl_->failure("corrupt_record");
      return std::move(ev.error());
    }
    if (ev->hdr.agent != agent || ev->hdr.seq != seq) {
      impl_->failure("corrupt_record");
      return make_error(errc::corrupt_record,
                        "journal key " + std::string{agent} + "#" + std::to_string(seq)
                          + " holds the event of " + ev->hdr.agent.substr(0, 256) + "#"
                          + std::to_string(ev->hdr.seq));
    }
    out.push_back(std::move(*ev));
  }
  if (!it->status().ok())
    return error_of(it->status(), "reading the journal of " + std::string{agent});
  return out;
}

caf::expected<uint64_t> store::last_seq(std::string_view agent) const {
  return impl_->stored_last_seq(agent);
}

caf::expected<std::optional<records::snapshot_record>> store::get_snapshot(
  std::string_view agent) const {
  std::string v;
  auto s = impl_->db->Get(read_options(), impl_->h_snapshots,
                          rocksdb::Slice{agent.data(), agent.size()}, &v);
  if (s.IsNotFound())
    return std::optional<records::snapshot_record>{};
  if (!s.ok())
    return error_of(s, "reading the snapshot of " + std::string{agent});
  auto snap = records::decode_snapshot(v);
  if (!snap) {
    impl_->failure("corrupt_record");
    return std::move(snap.error());
  }
  if (snap->hdr.agent != agent) {
    impl_->failure("corrupt_record");
    return make_error(errc::corrupt_record, "snapshot stored under " + std::string{agent}
                                              + " names agent " + snap->hdr.agent.substr(0, 256));
  }
  return std::optional<records::snapshot_record>{std::move(*snap)};
}

caf::error store::checkpoint(const std::string& dir) {
  std::error_code ec;
  if (dir.empty() || dir[0] != '/')
    return make_error(errc::invalid_argument,
                      "backup directory '" + dir.substr(0, 256) + "' must be an absolute path");
  if (std::filesystem::exists(dir, ec))
    return make_error(errc::invalid_argument,
                      "backup directory " + dir.substr(0, 256) + " exists; give a new one");
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
  nlohmann::json out;
  auto prop = [&](rocksdb::ColumnFamilyHandle* h, const char* name) {
    uint64_t v = 0;
    impl_->db->GetIntProperty(h, name, &v);
    return v;
  };
  for (auto [h, name] : {std::pair{impl_->h_meta, cf_meta}, std::pair{impl_->h_snapshots, cf_snapshots},
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
  if (!fs::is_directory(checkpoint_dir, ec) || !fs::exists(fs::path{checkpoint_dir} / "CURRENT", ec))
    return make_error(errc::invalid_argument,
                      checkpoint_dir + " is not a backup (no RocksDB CURRENT file in it)");
  auto db_dir = fs::path{data_dir} / "db";
  if (fs::exists(db_dir, ec))
    return make_error(errc::invalid_argument,
                      db_dir.string() + " exists: restore only into a new data directory");
  fs::create_directories(data_dir, ec);
  if (ec)
    return make_error(errc::io_error, "cannot create " + data_dir + ": " + ec.message());
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
  return {};
}

} // namespace hive
