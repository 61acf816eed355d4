#include "protocols/client.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

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
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;

  ~impl() {
    if (ssl != nullptr) {
      ERR_clear_error();
      SSL_shutdown(ssl); // one non-blocking attempt at close_notify
      SSL_free(ssl);
    }
    if (ctx != nullptr)
      SSL_CTX_free(ctx);
    if (fd >= 0)
      ::close(fd);
  }

  /// What OpenSSL says went wrong (its error queue, else the certificate verification result).
  std::string tls_reason() const {
    std::string out;
    while (auto e = ERR_get_error()) {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      if (!out.empty())
        out += "; ";
      out += buf;
    }
    if (ssl != nullptr) {
      auto v = SSL_get_verify_result(ssl);
      if (v != X509_V_OK) {
        if (!out.empty())
          out += "; ";
        out += std::string{"certificate verification: "} + X509_verify_cert_error_string(v);
      }
    }
    return out.empty() ? std::string{"connection closed"} : out;
  }

  /// Waits as OpenSSL asked after `rc` (want read/write). Errors: the TLS failure, timeout.
  caf::error tls_wait(int rc, const char* what, steady_clock::time_point deadline) {
    auto e = SSL_get_error(ssl, rc);
    short events = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (events == 0) {
      if (e == SSL_ERROR_SYSCALL && errno != 0)
        return io_error(what, errno);
      return make_error(errc::io_error, std::string{what} + " " + address + ": " + tls_reason());
    }
    auto ready = wait(events, deadline);
    if (!ready)
      return ready.error();
    if (!*ready)
      return make_error(errc::timeout, std::string{what} + " " + address + " timed out");
    return {};
  }

  /// Sets up TLS on the connected `fd` and runs the handshake (certificate verified).
  caf::error start_tls(const std::string& host, const tls_options& opts,
                       steady_clock::time_point deadline) {
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr)
      return make_error(errc::internal, "SSL_CTX_new failed: " + tls_reason());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    ERR_clear_error();
    auto loaded = opts.ca_file.empty()
      ? SSL_CTX_set_default_verify_paths(ctx)
      : SSL_CTX_load_verify_locations(ctx, opts.ca_file.c_str(), nullptr);
    if (loaded != 1)
      return make_error(errc::invalid_config,
                        opts.ca_file.empty()
                          ? "cannot load the system's trusted certificates: " + tls_reason()
                          : "cannot load the CA file '" + opts.ca_file + "': " + tls_reason());
    ssl = SSL_new(ctx);
    if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1)
      return make_error(errc::internal, "SSL_new failed: " + tls_reason());
    auto name = opts.server_name.empty() ? host : opts.server_name;
    in6_addr probe{};
    bool is_ip = ::inet_pton(AF_INET, name.c_str(), &probe) == 1
      || ::inet_pton(AF_INET6, name.c_str(), &probe) == 1;
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl, name.c_str());
      SSL_set1_host(ssl, name.c_str());
    }
    for (;;) {
      ERR_clear_error();
      auto rc = SSL_connect(ssl);
      if (rc == 1)
        return {};
      if (auto err = tls_wait(rc, "TLS handshake with", deadline))
        return err;
    }
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
      if (ssl != nullptr) {
        ERR_clear_error();
        auto len = static_cast<int>(std::min<size_t>(out.size() - done, 1 << 30));
        auto rc = SSL_write(ssl, out.data() + done, len);
        if (rc > 0) {
          done += static_cast<size_t>(rc);
          continue;
        }
        if (auto err = tls_wait(rc, "writing to", deadline))
          return err;
        continue;
      }
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
      char buf[64 * 1024];
      if (ssl != nullptr) {
        // Records already decrypted or buffered come before the socket says anything.
        ERR_clear_error();
        auto rc = SSL_read(ssl, buf, sizeof buf);
        if (rc > 0) {
          in.append(buf, static_cast<size_t>(rc));
          continue;
        }
        auto e = SSL_get_error(ssl, rc);
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
          return make_error(errc::io_error, address + " closed the connection");
        if (auto err = tls_wait(rc, "reading from", deadline)) {
          if (code_of(err) == errc::timeout)
            return make_error(errc::timeout, "no answer from " + address + " in time");
          return err;
        }
        continue;
      }
      auto ready = wait(POLLIN, deadline);
      if (!ready)
        return ready.error();
      if (!*ready)
        return make_error(errc::timeout, "no answer from " + address + " in time");
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
                                                    size_t frame_bytes_max,
                                                    const std::optional<tls_options>& tls) {
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
  if (tls)
    if (auto err = p->start_tls(host, *tls, deadline))
      return err;
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
