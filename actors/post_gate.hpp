#pragma once

// Internal to actors/: lets runtime callbacks (on CAF threads) post results to an Asio
// connection's strand while its server lives (the HTTP gateway, the binary gateway).

#include <memory>
#include <mutex>

#include <boost/asio/post.hpp>

namespace hive {

/// Lets runtime callbacks (on CAF threads) post results to a connection's strand while the
/// gateway lives, and makes them no-ops once it is being destroyed.
struct post_gate {
  std::mutex mtx;
  bool open = true;

  /// Runs `f(session&)` on the session's strand if the gateway and the session still live.
  template <class Session, class F>
  void post(const std::weak_ptr<Session>& weak, F f) {
    std::lock_guard<std::mutex> guard{mtx};
    if (!open)
      return;
    auto s = weak.lock();
    if (!s)
      return;
    auto ex = s->executor();
    boost::asio::post(ex, [s = std::move(s), f = std::move(f)]() mutable { f(*s); });
  }

  void close() {
    std::lock_guard<std::mutex> guard{mtx};
    open = false;
  }
};

} // namespace hive
