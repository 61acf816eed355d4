// The tool run by tests/actors/sandbox_test.cpp: a standalone program (no hive dependencies)
// whose behaviour is chosen by argv[1]:
//
//   echo ARGS...            prints each argument on its own line
//   env                     prints its whole environment, one variable per line
//   spin                    burns CPU forever
//   alloc MB                allocates and touches MB MiB in 1 MiB chunks, prints "allocated";
//                           exits 3 when malloc returns null
//   print BYTES             writes BYTES bytes of 'x' to stdout
//   sleep MS                sleeps MS milliseconds
//   effect PATH MS          appends "ran" to the file PATH, sleeps MS ms, prints "done"
//   fork-sleep MS PATH      forks a child that sleeps MS ms and then creates the file PATH
//                           (absolute); the parent exits 0 immediately
//   pwd                     prints the working directory
//   write FILE BYTES        writes BYTES bytes of 'x' to FILE in the working directory
//   cat                     copies stdin to stdout
//   connect PORT            TCP connect to 127.0.0.1:PORT; prints "connected" or
//                           "failed: <errno text>"
//   exit N                  exits with status N
//
// Exit status 2: bad usage.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

extern char** environ;

namespace {

int usage() {
  std::fprintf(stderr, "test_tool: bad usage\n");
  return 2;
}

bool write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void sleep_ms(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int write_x(int fd, unsigned long long bytes) {
  std::vector<char> chunk(64 * 1024, 'x');
  while (bytes > 0) {
    size_t n = bytes < chunk.size() ? static_cast<size_t>(bytes) : chunk.size();
    if (!write_all(fd, chunk.data(), n))
      return 1;
    bytes -= n;
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    return usage();
  std::string mode = argv[1];
  if (mode == "echo") {
    for (int i = 2; i < argc; ++i)
      std::printf("%s\n", argv[i]);
    return 0;
  }
  if (mode == "env") {
    for (char** e = environ; *e != nullptr; ++e)
      std::printf("%s\n", *e);
    return 0;
  }
  if (mode == "spin") {
    volatile unsigned long long n = 0;
    for (;;)
      n = n + 1;
  }
  if (mode == "alloc" && argc == 3) {
    long mb = std::atol(argv[2]);
    std::vector<char*> chunks;
    chunks.reserve(static_cast<size_t>(mb > 0 ? mb : 0));
    for (long i = 0; i < mb; ++i) {
      auto* p = static_cast<char*>(std::malloc(1 << 20));
      if (p == nullptr)
        return 3;
      std::memset(p, 1, 1 << 20);
      chunks.push_back(p);
    }
    std::printf("allocated\n");
    return 0;
  }
  if (mode == "print" && argc == 3)
    return write_x(1, std::strtoull(argv[2], nullptr, 10));
  if (mode == "effect" && argc == 4) {
    // An effect outside the sandbox: appends "ran" to the absolute file argv[2], then sleeps
    // argv[3] ms (so a test can kill the node while the tool runs).
    int fd = ::open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || ::write(fd, "ran\n", 4) != 4)
      return 1;
    ::close(fd);
    sleep_ms(std::atol(argv[3]));
    std::printf("done\n");
    return 0;
  }
  if (mode == "sleep" && argc == 3) {
    sleep_ms(std::atol(argv[2]));
    return 0;
  }
  if (mode == "fork-sleep" && argc == 4) {
    pid_t pid = ::fork();
    if (pid < 0)
      return 1;
    if (pid == 0) {
      sleep_ms(std::atol(argv[2]));
      int fd = ::open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0)
        ::close(fd);
      ::_exit(0);
    }
    return 0;
  }
  if (mode == "pwd") {
    char buf[4096];
    if (::getcwd(buf, sizeof buf) == nullptr)
      return 1;
    std::printf("%s\n", buf);
    return 0;
  }
  if (mode == "write" && argc == 4) {
    int fd = ::open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
      return 1;
    int rc = write_x(fd, std::strtoull(argv[3], nullptr, 10));
    ::close(fd);
    return rc;
  }
  if (mode == "cat") {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return 1;
      if (n == 0)
        return 0;
      if (!write_all(1, buf, static_cast<size_t>(n)))
        return 1;
    }
  }
  if (mode == "connect" && argc == 3) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
      std::printf("failed: %s\n", std::strerror(errno));
      return 1;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[2])));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::printf("failed: %s\n", std::strerror(errno));
      return 1;
    }
    std::printf("connected\n");
    ::close(fd);
    return 0;
  }
  if (mode == "exit" && argc == 3)
    return std::atoi(argv[2]);
  return usage();
}
