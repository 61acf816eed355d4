#include "protocols/client.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace hive {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

struct binary_client::impl {
  int fd = -1;
  std::string address;
  size_t frame_bytes_max = 0;
  uint64_t next_id = 1;
  size_t outstanding = 0;
  std::string out;   // queued frames
  std::string in;    // received bytes not yet decoded
  size_t in_pos = 0; // start of undecoded bytes in `in`
  std::string hello;

  ~impl() {
    if (fd >= 0)
      ::close(fd);
  }

  caf::error io_error(const std::string& what, int err) const {
    return make_error(errc::io_error, what + " " + address + ": " + std::strerror(err));
  }

  /// Waits until `fd` is ready for `events` or `deadline`. Returns false on timeout.
  caf::expected<bool> wait(short events, steady_clock::time_point deadline) const {
    for (;;) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()).count();
      if (left < 0)
        left = 0;
      pollfd p{fd, events, 0};
      auto n = ::poll(&p, 1, static_cast<int>(left));
      if (n > 0)
        return true;
      if (n == 0)
        return false;
      if (errno != EINTR)
        return io_error("poll on", errno);
    }
  }

  caf::error flush(steady_clock::time_point deadline) {
    size_t done = 0;
    while (done < out.size()) {
      auto n = ::send(fd, out.data() + done, out.size() - done, MSG_NOSIGNAL);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        auto ready = wait(POLLOUT, deadline);
        if (!ready)
          return ready.error();
        if (!*ready)
          return make_error(errc::timeout, "writing to " + address + " timed out");
        continue;
      }
      return io_error("writing to", errno);
    }
    out.clear();
    return {};
  }

  caf::expected<wire::response> receive(steady_clock::time_point deadline) {
    for (;;) {
      std::string_view pending{in.data() + in_pos, in.size() - in_pos};
      auto f = wire::next_frame(pending, frame_bytes_max);
      if (!f)
        return f.error();
      if (f->consumed > 0) {
        auto res = wire::decode_response(f->payload);
        in_pos += f->consumed;
        if (in_pos == in.size()) {
          in.clear();
          in_pos = 0;
        }
        if (res && outstanding > 0)
          --outstanding;
        return res;
      }
      if (in_pos > 0) {
        in.erase(0, in_pos);
        in_pos = 0;
      }
      auto ready = wait(POLLIN, deadline);
      if (!ready)
        return ready.error();
      if (!*ready)
        return make_error(errc::timeout, "no answer from " + address + " in time");
      char buf[64 * 1024];
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        in.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0)
        return make_error(errc::io_error, address + " closed the connection");
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
        continue;
      return io_error("reading from", errno);
    }
  }
};

binary_client::binary_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
binary_client::binary_client(binary_client&&) noexcept = default;
binary_client& binary_client::operator=(binary_client&&) noexcept = default;
binary_client::~binary_client() = default;

caf::expected<binary_client> binary_client::connect(const std::string& host, uint16_t port,
                                                    const std::string& token, milliseconds timeout,
                                                    size_t frame_bytes_max) {
  auto p = std::make_unique<impl>();
  p->address = host + ":" + std::to_string(port);
  p->frame_bytes_max = frame_bytes_max;
  auto deadline = steady_clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  auto port_text = std::to_string(port);
  if (auto rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res); rc != 0)
    return make_error(errc::io_error, "cannot resolve " + p->address + ": " + ::gai_strerror(rc));
  caf::error last = make_error(errc::io_error, "no address for " + p->address);
  for (auto* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd =
      ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = p->io_error("socket for", errno);
      continue;
    }
    p->fd = fd;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
      auto ready = p->wait(POLLOUT, deadline);
      int soerr = 0;
      socklen_t len = sizeof soerr;
      if (ready && *ready && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0
          && soerr == 0) {
        last = {};
        break;
      }
      last = !ready ? ready.error()
        : !*ready   ? make_error(errc::timeout, "connecting to " + p->address + " timed out")
                    : p->io_error("connecting to", soerr);
    } else {
      last = p->io_error("connecting to", errno);
    }
    ::close(fd);
    p->fd = -1;
  }
  ::freeaddrinfo(res);
  if (last)
    return last;
  int one = 1;
  ::setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  binary_client c{std::move(p)};
  auto hello = c.call(wire::request{0, 0, wire::hello{wire::protocol_version, token}},
                      std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()));
  if (!hello)
    return hello.error();
  if (!hello->ok)
    return make_error(hello->code, hello->text);
  c.impl_->hello = std::move(hello->text);
  return c;
}

const std::string& binary_client::hello_reply() const noexcept {
  return impl_->hello;
}

uint64_t binary_client::send(wire::request req) {
  req.id = impl_->next_id++;
  wire::append_frame(impl_->out, req);
  ++impl_->outstanding;
  return req.id;
}

caf::error binary_client::flush() {
  return impl_->flush(steady_clock::now() + std::chrono::seconds(30));
}

caf::expected<wire::response> binary_client::receive(milliseconds timeout) {
  auto deadline = steady_clock::now() + timeout;
  if (auto err = impl_->flush(deadline))
    return err;
  return impl_->receive(deadline);
}

size_t binary_client::outstanding() const noexcept {
  return impl_->outstanding;
}

caf::expected<wire::response> binary_client::call(wire::request req, milliseconds timeout) {
  auto id = send(std::move(req));
  auto res = receive(timeout);
  if (!res)
    return res;
  if (res->id == 0 && !res->ok)
    return res; // about the connection (refused, protocol error): the node closes it
  if (res->id != id)
    return make_error(errc::internal,
                      "answer for request " + std::to_string(res->id) + " while waiting for "
                        + std::to_string(id) + " (plain calls and pipelining mixed?)");
  return res;
}

namespace {

milliseconds wait_for(uint32_t timeout_ms) {
  return milliseconds{timeout_ms == 0 ? 6000 : int64_t{timeout_ms} + 1000};
}

caf::expected<std::string> text_or_error(caf::expected<wire::response> res) {
  if (!res)
    return res.error();
  if (!res->ok)
    return make_error(res->code, std::move(res->text));
  return std::move(res->text);
}

} // namespace

caf::expected<std::string> binary_client::ask(std::string_view agent, std::string_view body,
                                              uint32_t timeout_ms) {
  return text_or_error(
    call(wire::request{0, 0, wire::ask{std::string{agent}, std::string{body}, timeout_ms, {}, 0}},
         wait_for(timeout_ms)));
}

caf::error binary_client::tell(std::string_view agent, std::string_view body) {
  auto res = text_or_error(call(
    wire::request{0, 0, wire::tell{std::string{agent}, std::string{body}, {}, 0}}, wait_for(0)));
  return res ? caf::error{} : res.error();
}

caf::expected<std::string> binary_client::spawn(const wire::spawn& req) {
  return text_or_error(call(wire::request{0, 0, req}, wait_for(0)));
}

caf::error binary_client::stop(std::string_view agent) {
  auto res = text_or_error(call(wire::request{0, 0, wire::stop{std::string{agent}}}, wait_for(0)));
  return res ? caf::error{} : res.error();
}

} // namespace hive
