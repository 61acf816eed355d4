#include "storage/data_dir.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "protocols/errc.hpp"

namespace hive {

caf::expected<data_dir> data_dir::open(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec)
    return make_error(errc::io_error,
                      "cannot create data directory '" + path + "': " + ec.message());
  auto abs = std::filesystem::absolute(path, ec);
  std::string abs_path = ec ? path : abs.lexically_normal().string();
  auto lock_path = abs_path + "/LOCK";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return make_error(errc::io_error, "cannot open '" + lock_path + "': " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    auto reason = errno == EWOULDBLOCK ? std::string{"in use by another agent-node process"}
                                       : std::string{std::strerror(errno)};
    ::close(fd);
    return make_error(errc::io_error, "cannot lock data directory '" + abs_path + "': " + reason);
  }
  return data_dir{abs_path, fd};
}

data_dir::data_dir(data_dir&& other) noexcept
    : path_(std::move(other.path_)), lock_fd_(other.lock_fd_) {
  other.lock_fd_ = -1;
}

data_dir& data_dir::operator=(data_dir&& other) noexcept {
  if (this != &other) {
    if (lock_fd_ >= 0)
      ::close(lock_fd_);
    path_ = std::move(other.path_);
    lock_fd_ = other.lock_fd_;
    other.lock_fd_ = -1;
  }
  return *this;
}

data_dir::~data_dir() {
  if (lock_fd_ >= 0)
    ::close(lock_fd_);
}

} // namespace hive
