#pragma once

// Internal to actors/: what the HTTP gateway and the binary listener share about serving TCP
// on Asio threads of their own: counting requests in flight for draining, binding a listening
// socket with errors that name the address and the step, and running the threads.

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <atomic>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <caf/all.hpp>

#include "protocols/errc.hpp"
#include "runtime/logging.hpp"

namespace hive {

/// A random non-zero 64-bit correlation id (for requests that bring none).
[[nodiscard]] inline uint64_t random_cid() {
  thread_local std::mt19937_64 rng{
    std::random_device{}()
    ^ static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};
  uint64_t x = 0;
  while (x == 0)
    x = rng();
  return x;
}

/// Requests read and not yet answered, and a wait until there are none.
class request_gauge {
public:
  void begin() {
    std::lock_guard<std::mutex> guard{mtx_};
    n_.fetch_add(1);
  }

  void end() {
    std::lock_guard<std::mutex> guard{mtx_};
    auto before = n_.fetch_sub(1);
    assert(before > 0);
    if (before == 1)
      idle_.notify_all();
  }

  /// Waits until none is in flight, at most `max`; true if none is left.
  [[nodiscard]] bool wait_idle(std::chrono::milliseconds max) {
    std::unique_lock<std::mutex> guard{mtx_};
    return idle_.wait_for(guard, max, [this] { return n_.load() == 0; });
  }

  [[nodiscard]] size_t value() const noexcept {
    return n_.load();
  }

private:
  std::mutex mtx_;
  std::condition_variable idle_;
  std::atomic<size_t> n_{0};
};

/// Opens `acc` listening on `host:port` (a numeric address, or a name resolved passively).
/// Returns the bound port. Errors: io_error naming `what` (e.g. "gateway.listen"), the
/// address and the step that failed.
[[nodiscard]] inline caf::expected<uint16_t> open_listener(boost::asio::io_context& ioc,
                                                           boost::asio::ip::tcp::acceptor& acc,
                                                           const std::string& host, uint16_t port,
                                                           std::string_view what) {
  namespace asio = boost::asio;
  using tcp = asio::ip::tcp;
  auto where = host + ':' + std::to_string(port);
  boost::system::error_code ec;
  tcp::endpoint ep;
  auto addr = asio::ip::make_address(host, ec);
  if (!ec) {
    ep = tcp::endpoint{addr, port};
  } else {
    tcp::resolver resolver{ioc};
    auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
    if (ec || results.empty())
      return make_error(errc::io_error,
                        "cannot resolve " + std::string{what} + " address " + where + ": "
                          + (ec ? ec.message() : std::string{"no address"}));
    ep = results.begin()->endpoint();
  }
  auto fail = [&](std::string_view step) {
    return make_error(errc::io_error,
                      "cannot listen on " + where + " (" + std::string{what} + ", "
                        + std::string{step} + "): " + ec.message());
  };
  if (acc.open(ep.protocol(), ec); ec)
    return fail("open");
  if (acc.set_option(asio::socket_base::reuse_address(true), ec); ec)
    return fail("reuse_address");
  if (acc.bind(ep, ec); ec)
    return fail("bind");
  if (acc.listen(asio::socket_base::max_listen_connections, ec); ec)
    return fail("listen");
  auto bound = acc.local_endpoint(ec).port();
  if (ec)
    return fail("local_endpoint");
  return bound;
}

/// Starts `n` threads running `ioc` until it stops; an exception escaping a handler is logged
/// as `failed_event` and the thread runs on.
inline void run_threads(boost::asio::io_context& ioc, int64_t n, std::vector<std::thread>& out,
                        const char* failed_event) {
  for (int64_t i = 0; i < n; ++i)
    out.emplace_back([&ioc, failed_event] {
      for (;;) {
        try {
          ioc.run();
          return;
        } catch (const std::exception& ex) {
          log::event(spdlog::level::warn, failed_event, {{"reason", ex.what()}});
        }
      }
    });
}

} // namespace hive
