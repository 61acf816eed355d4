#pragma once

#include <string>

#include <caf/all.hpp>

namespace hive {

/// A node's data directory, created if missing and locked for exclusive use (an `flock` on
/// `<dir>/LOCK`) for as long as this object lives: two nodes can never share one directory.
class data_dir {
public:
  /// Creates (mkdir -p) and locks `path`. Errors: io_error naming the path and the reason,
  /// including "in use by another process" when the lock is held.
  [[nodiscard]] static caf::expected<data_dir> open(const std::string& path);

  data_dir(data_dir&& other) noexcept;
  data_dir& operator=(data_dir&& other) noexcept;
  data_dir(const data_dir&) = delete;
  data_dir& operator=(const data_dir&) = delete;
  ~data_dir();

  /// The absolute path.
  [[nodiscard]] const std::string& path() const noexcept {
    return path_;
  }

private:
  data_dir(std::string path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}

  std::string path_;
  int lock_fd_ = -1;
};

} // namespace hive
