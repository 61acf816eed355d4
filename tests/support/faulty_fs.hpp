#pragma once

// A RocksDB FileSystem whose writable files fail Append or Sync (NoSpace, IOError) while a
// fault is armed: storage fault injection for the store and runtime tests.

#include <atomic>
#include <memory>
#include <string>

#include <rocksdb/file_system.h>

namespace hive::test {

/// What the faulty file system does to writable files while `armed`.
struct fault_plan {
  enum class where : uint8_t { append, sync };
  std::atomic<bool> armed{false};
  where at = where::append;
  rocksdb::IOStatus status = rocksdb::IOStatus::IOError("injected");
  /// Files whose name contains this are never failed (empty: none is spared).
  std::string spared;
  /// How many calls failed.
  std::atomic<int> injected{0};

  rocksdb::IOStatus check(where w, bool exempt) {
    if (!armed.load() || w != at || exempt)
      return rocksdb::IOStatus::OK();
    ++injected;
    return status;
  }
};

class faulty_file : public rocksdb::FSWritableFileOwnerWrapper {
public:
  faulty_file(std::unique_ptr<rocksdb::FSWritableFile> f, std::shared_ptr<fault_plan> plan,
              bool exempt)
      : FSWritableFileOwnerWrapper(std::move(f)), plan_(std::move(plan)), exempt_(exempt) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                           rocksdb::IODebugContext* dbg) override {
    if (auto s = plan_->check(fault_plan::where::append, exempt_); !s.ok())
      return s;
    return FSWritableFileOwnerWrapper::Append(data, o, dbg);
  }

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    if (auto s = plan_->check(fault_plan::where::append, exempt_); !s.ok())
      return s;
    return FSWritableFileOwnerWrapper::Append(data, o, info, dbg);
  }

  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& o,
                                     rocksdb::IODebugContext* dbg) override {
    if (auto s = plan_->check(fault_plan::where::append, exempt_); !s.ok())
      return s;
    return FSWritableFileOwnerWrapper::PositionedAppend(data, offset, o, dbg);
  }

  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& o,
                                     const rocksdb::DataVerificationInfo& info,
                                     rocksdb::IODebugContext* dbg) override {
    if (auto s = plan_->check(fault_plan::where::append, exempt_); !s.ok())
      return s;
    return FSWritableFileOwnerWrapper::PositionedAppend(data, offset, o, info, dbg);
  }

  rocksdb::IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    if (auto s = plan_->check(fault_plan::where::sync, exempt_); !s.ok())
      return s;
    return FSWritableFileOwnerWrapper::Sync(o, dbg);
  }

  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    if (auto s = plan_->check(fault_plan::where::sync, exempt_); !s.ok())
      return s;
    return FSWritableFileOwnerWrapper::Fsync(o, dbg);
  }

  rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& o,
                              rocksdb::IODebugContext* dbg) override {
    if (auto s = plan_->check(fault_plan::where::sync, exempt_); !s.ok())
      return s;
    return FSWritableFileOwnerWrapper::RangeSync(offset, nbytes, o, dbg);
  }

private:
  std::shared_ptr<fault_plan> plan_;
  bool exempt_;
};

class faulty_fs : public rocksdb::FileSystemWrapper {
public:
  explicit faulty_fs(std::shared_ptr<fault_plan> plan)
      : FileSystemWrapper(rocksdb::FileSystem::Default()), plan_(std::move(plan)) {}

  const char* Name() const override {
    return "HiveFaultyFileSystem";
  }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    return wrap(f, target()->NewWritableFile(f, o, r, dbg), r);
  }

  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override {
    return wrap(f, target()->ReopenWritableFile(f, o, r, dbg), r);
  }

  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override {
    return wrap(f, target()->ReuseWritableFile(f, old, o, r, dbg), r);
  }

private:
  rocksdb::IOStatus wrap(const std::string& name, rocksdb::IOStatus s,
                         std::unique_ptr<rocksdb::FSWritableFile>* r) {
    if (s.ok()) {
      bool exempt = !plan_->spared.empty() && name.find(plan_->spared) != std::string::npos;
      *r = std::make_unique<faulty_file>(std::move(*r), plan_, exempt);
    }
    return s;
  }

  std::shared_ptr<fault_plan> plan_;
};

} // namespace hive::test
