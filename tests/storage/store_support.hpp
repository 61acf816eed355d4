#pragma once

// Helpers of the storage tests: temporary directories, blocking wrappers around the store's
// asynchronous writes, a recording observer, and raw RocksDB access for planting corruption.

#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include "protocols/errc.hpp"
#include "protocols/records.hpp"
#include "storage/store.hpp"

namespace hive::test {

/// The seed of a randomized test: `HIVE_SEED` if set, else a fresh one (print it!).
inline uint64_t test_seed() {
  if (const char* s = std::getenv("HIVE_SEED"))
    return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

/// A fresh directory under /tmp (mkdtemp), removed with everything in it on destruction.
class temp_dir {
public:
  temp_dir() {
    std::string tmpl = "/tmp/hive-storage-test-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }

  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }

  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  [[nodiscard]] const std::string& path() const noexcept {
    return path_;
  }

  /// `path()/name` (not created).
  [[nodiscard]] std::string sub(const std::string& name) const {
    return path_ + "/" + name;
  }

private:
  std::string path_;
};

/// How long a blocking wrapper waits for a completion before it fails the test.
inline constexpr auto completion_timeout = std::chrono::seconds{30};

/// Starts an asynchronous store operation with a completion and waits for it.
inline caf::error wait_done(const std::function<void(store::done_fn)>& start) {
  auto p = std::make_shared<std::promise<caf::error>>();
  auto f = p->get_future();
  start([p](caf::error err) { p->set_value(std::move(err)); });
  if (f.wait_for(completion_timeout) != std::future_status::ready) {
    ADD_FAILURE() << "store completion did not arrive within 30 s";
    return make_error(errc::timeout, "store completion did not arrive");
  }
  return f.get();
}

inline records::event_record make_event(const std::string& agent, uint64_t seq,
                                        std::string payload = {}, uint64_t epoch = 1) {
  records::event_record ev;
  ev.hdr = {agent, epoch, seq};
  ev.payload = payload.empty() ? "ev#" + std::to_string(seq) : std::move(payload);
  return ev;
}

inline records::meta_record make_meta(const std::string& agent, std::string kind = "counter") {
  records::meta_record m;
  m.hdr.agent = agent;
  m.kind = std::move(kind);
  m.config = R"({"id":")" + agent + R"("})";
  return m;
}

inline records::snapshot_record make_snapshot(const std::string& agent, uint64_t seq,
                                              std::string state) {
  records::snapshot_record s;
  s.hdr = {agent, 1, seq};
  s.state = std::move(state);
  s.dedup = {{"client", seq, "reply#" + std::to_string(seq)}};
  return s;
}

inline caf::error append_sync(store& st, const std::string& agent, uint64_t seq,
                              std::string payload = {}) {
  return wait_done([&](store::done_fn done) {
    st.append(make_event(agent, seq, std::move(payload)), std::move(done));
  });
}

inline caf::error put_meta_sync(store& st, records::meta_record m, bool must_be_new) {
  return wait_done(
    [&](store::done_fn done) { st.put_meta(std::move(m), must_be_new, std::move(done)); });
}

inline caf::error put_snapshot_sync(store& st, records::snapshot_record s, uint64_t prune_through) {
  return wait_done(
    [&](store::done_fn done) { st.put_snapshot(std::move(s), prune_through, std::move(done)); });
}

inline caf::error erase_sync(store& st, const std::string& agent) {
  return wait_done([&](store::done_fn done) { st.erase_agent(agent, std::move(done)); });
}

/// Opens a store at `path` with `opts` (path set here) or fails the test.
inline std::unique_ptr<store> open_store(const std::string& path, store_options opts = {}) {
  opts.path = path;
  auto st = store::open(std::move(opts));
  if (!st) {
    ADD_FAILURE() << "cannot open the store at " << path << ": " << describe(st.error());
    return nullptr;
  }
  return std::move(*st);
}

/// Sequence numbers of events, for comparisons.
inline std::vector<uint64_t> seqs_of(const std::vector<records::event_record>& evs) {
  std::vector<uint64_t> out;
  for (auto& ev : evs)
    out.push_back(ev.hdr.seq);
  return out;
}

inline std::vector<uint64_t> iota_seqs(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (auto s = first; s <= last; ++s)
    out.push_back(s);
  return out;
}

/// Records what the store reports.
class recording_observer : public store_observer {
public:
  void on_commit(size_t writes, double) override {
    std::lock_guard<std::mutex> guard{mtx_};
    commits_.push_back(writes);
  }

  void on_append_latency(double) override {
    std::lock_guard<std::mutex> guard{mtx_};
    ++appends_;
  }

  void on_failure(std::string_view code) override {
    std::lock_guard<std::mutex> guard{mtx_};
    failures_.emplace_back(code);
  }

  [[nodiscard]] std::vector<size_t> commits() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return commits_;
  }

  [[nodiscard]] size_t appends() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return appends_;
  }

  [[nodiscard]] std::vector<std::string> failures() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return failures_;
  }

  void clear() {
    std::lock_guard<std::mutex> guard{mtx_};
    commits_.clear();
    failures_.clear();
    appends_ = 0;
  }

private:
  mutable std::mutex mtx_;
  std::vector<size_t> commits_;
  std::vector<std::string> failures_;
  size_t appends_ = 0;
};

/// Holds the store's writer thread inside a barrier's completion until `release()`, so that
/// everything submitted meanwhile lands in the next group commit.
class writer_gate {
public:
  explicit writer_gate(store& st) {
    auto entered = std::make_shared<std::promise<void>>();
    auto entered_f = entered->get_future();
    auto released = release_.get_future().share();
    st.barrier([entered, released](caf::error) {
      entered->set_value();
      released.wait();
    });
    entered_f.wait();
  }

  ~writer_gate() {
    release();
  }

  writer_gate(const writer_gate&) = delete;
  writer_gate& operator=(const writer_gate&) = delete;

  void release() {
    if (!released_) {
      released_ = true;
      release_.set_value();
    }
  }

private:
  std::promise<void> release_;
  bool released_ = false;
};

/// The database at `path` opened with plain RocksDB and all its column families, for
/// planting corruption behind the store's back (the store must be closed).
class raw_db {
public:
  explicit raw_db(const std::string& path) {
    std::vector<std::string> names;
    auto s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{}, path, &names);
    if (!s.ok())
      throw std::runtime_error("ListColumnFamilies: " + s.ToString());
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (auto& n : names)
      cfs.emplace_back(n, rocksdb::ColumnFamilyOptions{});
    rocksdb::DB* raw = nullptr;
    s = rocksdb::DB::Open(rocksdb::DBOptions{}, path, cfs, &handles_, &raw);
    if (!s.ok())
      throw std::runtime_error("Open: " + s.ToString());
    db_.reset(raw);
    for (size_t i = 0; i < names.size(); ++i)
      by_name_.emplace_back(names[i], handles_[i]);
  }

  ~raw_db() {
    for (auto* h : handles_)
      db_->DestroyColumnFamilyHandle(h);
    (void)db_->Close();
  }

  raw_db(const raw_db&) = delete;
  raw_db& operator=(const raw_db&) = delete;

  [[nodiscard]] rocksdb::ColumnFamilyHandle* cf(const std::string& name) const {
    for (auto& [n, h] : by_name_)
      if (n == name)
        return h;
    throw std::runtime_error("no column family " + name);
  }

  [[nodiscard]] std::string get(const std::string& cf_name, const std::string& key) const {
    std::string v;
    auto s = db_->Get(rocksdb::ReadOptions{}, cf(cf_name), key, &v);
    if (!s.ok())
      throw std::runtime_error("Get: " + s.ToString());
    return v;
  }

  void put(const std::string& cf_name, const std::string& key, const std::string& value) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    auto s = db_->Put(wo, cf(cf_name), key, value);
    if (!s.ok())
      throw std::runtime_error("Put: " + s.ToString());
  }

private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::vector<std::pair<std::string, rocksdb::ColumnFamilyHandle*>> by_name_;
};

} // namespace hive::test
