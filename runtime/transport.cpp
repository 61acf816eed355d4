#include "runtime/transport.hpp"

#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include "protocols/errc.hpp"
#include "runtime/inline_exec.hpp"
#include "runtime/logging.hpp"

namespace hive {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

enum frame_type : uint8_t { f_hello = 1, f_call = 2, f_reply = 3, f_error = 4, f_tell = 5 };

/// Length (4), type (1), request id (8).
constexpr size_t header_bytes = 13;
constexpr size_t read_chunk_bytes = 64 << 10;

void put_be(char* p, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

uint64_t get_be(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

/// One frame: header, then `payload` CAF binary-serialized.
template <class T>
caf::expected<std::vector<char>> encode_frame(caf::actor_system& sys, uint8_t type, uint64_t id,
                                              T& payload, size_t frame_bytes_max) {
  std::vector<char> buf(header_bytes);
  caf::binary_serializer sink{sys, buf};
  if (auto err = sink(payload))
    return make_error(errc::internal, "cannot encode a transport frame: " + sys.render(err));
  if (buf.size() > frame_bytes_max) {
    std::string msg = "a transport frame of ";
    msg.append(std::to_string(buf.size()))
      .append(" bytes exceeds cluster.frame_bytes_max (")
      .append(std::to_string(frame_bytes_max))
      .append(")");
    return make_error(errc::too_large, std::move(msg));
  }
  put_be(buf.data(), buf.size() - 4, 4);
  buf[4] = static_cast<char>(type);
  put_be(buf.data() + 5, id, 8);
  return buf;
}

template <class T>
bool decode_payload(caf::actor_system& sys, const char* data, size_t size, T& out) {
  caf::binary_deserializer source{sys, data, size};
  return !source(out) && source.remaining() == 0;
}

struct stats_block {
  std::atomic<uint64_t> frames_sent{0};
  std::atomic<uint64_t> frames_received{0};
  std::atomic<uint64_t> direct_writes{0};
  std::atomic<uint64_t> queued_writes{0};
  std::atomic<uint64_t> connections_refused{0};
  std::atomic<uint64_t> tells_failed{0};
  std::atomic<uint64_t> tls_refused{0};
};

} // namespace

/// One TCP connection, dialled (to `address`) or accepted. Its socket is used by the I/O
/// thread, except that `send` writes to the descriptor directly from the caller's thread
/// while no write of the I/O thread is under way (both under `mtx`, which also orders the
/// close: a closed connection never touches its descriptor again). With TLS the session
/// (`tls`, over `sock`) is used by the I/O thread only.
struct transport_conn : std::enable_shared_from_this<transport_conn> {
  transport_conn(std::shared_ptr<asio::io_context> ctx, call_transport::impl* o, bool dialled,
                 std::shared_ptr<stats_block> s, size_t queue_max, asio::ssl::context* tls_ctx)
      : io(std::move(ctx)), sock(*io), resolver(*io), owner(o), dialler(dialled),
        stats(std::move(s)), queue_bytes_max(queue_max) {
    if (tls_ctx != nullptr)
      tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(sock, *tls_ctx);
  }

  std::shared_ptr<asio::io_context> io;
  tcp::socket sock;
  /// Set when the transport runs TLS (declared after `sock`, which it refers to).
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;
  tcp::resolver resolver;
  /// Used on the I/O thread only (which ends before the transport does).
  call_transport::impl* owner;
  const bool dialler;
  std::shared_ptr<stats_block> stats;
  const size_t queue_bytes_max;
  /// Dialled: the peer's `HOST:PORT`; accepted: the peer's node name once it said hello.
  std::string address;
  clock_type::time_point created = clock_type::now();

  std::mutex mtx;
  bool ready = false;   // connected (dialled) / accepted
  bool writing = false; // the I/O thread owns the socket's write side
  bool closed = false;
  std::vector<char> out;      // queued bytes (dialled: starts with the hello)
  std::vector<char> inflight; // bytes the I/O thread is writing

  // I/O thread only:
  std::vector<char> in;
  size_t in_used = 0;
  bool greeted = false;
  /// Accepted: calls run here whose answers are not written yet.
  std::atomic<size_t> calls_running{0};

  enum class sent { ok, closed, full };

  /// Writes (`direct`: from this thread if nothing is queued) or queues `len` bytes.
  sent send(const char* data, size_t len, bool direct = true) {
    std::unique_lock<std::mutex> lk{mtx};
    if (closed)
      return sent::closed;
    if (direct && !tls && ready && !writing && out.empty()) {
      auto n = ::send(sock.native_handle(), data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n == static_cast<ssize_t>(len)) {
        stats->direct_writes.fetch_add(1, std::memory_order_relaxed);
        return sent::ok;
      }
      if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
          return sent::closed; // the read side sees the broken connection and closes it
        n = 0;
      }
      data += n;
      len -= static_cast<size_t>(n);
    }
    // (A frame is never larger than the queue bound, so a partly written frame always fits.)
    if (out.size() + len > queue_bytes_max && out.size() > 0)
      return sent::full;
    out.insert(out.end(), data, data + len);
    stats->queued_writes.fetch_add(1, std::memory_order_relaxed);
    if (ready && !writing) {
      writing = true;
      asio::post(*io, [self = shared_from_this()] { self->flush(); });
    }
    return sent::ok;
  }

  /// I/O thread: writes everything queued, until the queue stays empty.
  void flush() {
    {
      std::lock_guard<std::mutex> lk{mtx};
      if (closed)
        return;
      inflight.clear();
      std::swap(out, inflight);
      if (inflight.empty()) {
        writing = false;
        return;
      }
    }
    auto written = [self = shared_from_this()](boost::system::error_code ec, size_t) {
      if (ec)
        return self->close("write failed: " + ec.message());
      self->flush();
    };
    if (tls)
      asio::async_write(*tls, asio::buffer(inflight), std::move(written));
    else
      asio::async_write(sock, asio::buffer(inflight), std::move(written));
  }

  /// I/O thread: with TLS, the handshake (a failure closes the connection, logged), then
  /// `then`; without, `then` at once.
  template <class F>
  void start_session(F then) {
    if (!tls)
      return then();
    tls->async_handshake(
      dialler ? asio::ssl::stream_base::client : asio::ssl::stream_base::server,
      [self = shared_from_this(), then = std::move(then)](boost::system::error_code ec) mutable {
        if (!ec)
          return then();
        self->stats->tls_refused.fetch_add(1, std::memory_order_relaxed);
        std::string peer = self->address;
        if (peer.empty()) {
          boost::system::error_code ignored;
          auto ep = self->sock.remote_endpoint(ignored);
          peer = ep.address().to_string() + ":" + std::to_string(ep.port());
        }
        log::event(spdlog::level::warn, "transport_tls_refused",
                   {{"peer", peer},
                    {"side", self->dialler ? "client" : "server"},
                    {"reason", ec.message()}});
        self->close("TLS handshake failed: " + ec.message());
      });
  }

  /// I/O thread: closes the socket and tells the transport (idempotent).
  void close(const std::string& reason);

  /// I/O thread: reads frames until the connection closes.
  void read();
};

struct call_transport::impl {
  struct pending_call {
    reply_fn done;
    const transport_conn* via = nullptr;
    std::string address;
    std::multimap<clock_type::time_point, uint64_t>::iterator deadline;
  };

  caf::actor_system* sys = nullptr;
  std::string cluster_name;
  std::string node_name;
  transport_limits limits;
  std::chrono::milliseconds connect_timeout{2000};
  call_handler on_call;
  std::shared_ptr<stats_block> stats = std::make_shared<stats_block>();
  /// Set when the transport runs mutual TLS.
  std::optional<asio::ssl::context> tls_ctx;
  /// I/O thread: runs the actors a frame's callback made ready, when they allow it.
  std::optional<inline_executor> exec;

  std::shared_ptr<asio::io_context> io = std::make_shared<asio::io_context>(1);
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::steady_timer> sweep_timer;
  std::thread thread;
  uint16_t port = 0;
  /// I/O thread only: shutdown has begun (nothing re-arms).
  bool closing = false;

  std::mutex mtx;
  bool stopping = false;
  std::unordered_map<std::string, std::shared_ptr<transport_conn>> dialled;
  std::unordered_set<std::shared_ptr<transport_conn>> accepted;
  std::unordered_map<uint64_t, pending_call> pending;
  std::multimap<clock_type::time_point, uint64_t> deadlines;
  uint64_t next_id = 1;

  /// Removes the pending call `id` and returns its callback (empty if it already finished).
  reply_fn take(uint64_t id) {
    std::lock_guard<std::mutex> lk{mtx};
    auto i = pending.find(id);
    if (i == pending.end())
      return {};
    auto done = std::move(i->second.done);
    deadlines.erase(i->second.deadline);
    pending.erase(i);
    return done;
  }

  void accept() {
    auto c = std::make_shared<transport_conn>(io, this, false, stats, limits.send_queue_bytes_max,
                                              tls_ctx ? &*tls_ctx : nullptr);
    acceptor->async_accept(c->sock, [this, c](boost::system::error_code ec) {
      if (ec == asio::error::operation_aborted || closing) {
        boost::system::error_code ignored;
        c->sock.close(ignored);
        return;
      }
      if (!ec) {
        boost::system::error_code ignored;
        c->sock.set_option(tcp::no_delay(true), ignored);
        bool full = false;
        {
          std::lock_guard<std::mutex> lk{mtx};
          if (stopping) {
            c->sock.close(ignored);
            return;
          }
          full = accepted.size() >= limits.connections_max;
          // Its hello is due within connect_timeout from now, not from when this object
          // began to wait for a connection: the first one after a quiet spell was cut off
          // by the next sweep, mid TLS handshake (a mutual-TLS cluster test under load).
          c->created = clock_type::now();
          if (!full)
            accepted.insert(c);
        }
        if (full) {
          stats->connections_refused.fetch_add(1, std::memory_order_relaxed); // (before the
          c->sock.close(ignored); // peer can see the close)
          log::event(spdlog::level::warn, "transport_connection_refused",
                     {{"reason", "cluster.transport_connections_max reached"},
                      {"connections", limits.connections_max}});
          return accept();
        }
        c->start_session([c] {
          {
            std::lock_guard<std::mutex> lk{c->mtx};
            c->ready = true;
          }
          c->read();
        });
      }
      accept();
    });
  }

  /// The dialled connection to `address`, made (and dialling) if there is none. Under `mtx`.
  std::shared_ptr<transport_conn> conn_to(const std::string& address) {
    auto& c = dialled[address];
    if (c)
      return c;
    c = std::make_shared<transport_conn>(io, this, true, stats, limits.send_queue_bytes_max,
                                         tls_ctx ? &*tls_ctx : nullptr);
    c->address = address;
    transport_hello hello{cluster_name, cluster_protocol_version, node_name};
    auto frame = encode_frame(*sys, f_hello, 0, hello, limits.frame_bytes_max);
    assert(frame); // a hello is a few dozen bytes
    c->out = std::move(*frame);
    auto colon = address.rfind(':');
    auto host = colon == std::string::npos ? address : address.substr(0, colon);
    auto port_text = colon == std::string::npos ? std::string{} : address.substr(colon + 1);
    asio::post(*io, [c, host, port_text] {
      {
        std::lock_guard<std::mutex> lk{c->mtx};
        if (c->closed)
          return;
      }
      c->resolver.async_resolve(
        host, port_text,
        [c](boost::system::error_code ec, const tcp::resolver::results_type& results) {
          if (ec)
            return c->close("cannot resolve: " + ec.message());
          {
            std::lock_guard<std::mutex> lk{c->mtx};
            if (c->closed)
              return; // (async_connect would open the closed socket again)
          }
          asio::async_connect(c->sock, results,
                              [c](boost::system::error_code ec2, const tcp::endpoint&) {
                                if (ec2)
                                  return c->close("cannot connect: " + ec2.message());
                                boost::system::error_code ignored;
                                c->sock.set_option(tcp::no_delay(true), ignored);
                                c->start_session([c] {
                                  bool start_write = false;
                                  {
                                    std::lock_guard<std::mutex> lk{c->mtx};
                                    if (c->closed)
                                      return;
                                    c->ready = true;
                                    start_write = !c->out.empty();
                                    c->writing = start_write;
                                  }
                                  if (start_write)
                                    c->flush();
                                  c->read();
                                });
                              });
        });
    });
    return c;
  }

  /// I/O thread: a connection closed; fails the calls that waited on it.
  void closed(transport_conn* c, const std::string& reason) {
    std::vector<reply_fn> failed;
    {
      std::lock_guard<std::mutex> lk{mtx};
      if (c->dialler) {
        if (auto i = dialled.find(c->address); i != dialled.end() && i->second.get() == c)
          dialled.erase(i);
        for (auto i = pending.begin(); i != pending.end();) {
          if (i->second.via == c) {
            failed.push_back(std::move(i->second.done));
            deadlines.erase(i->second.deadline);
            i = pending.erase(i);
          } else {
            ++i;
          }
        }
      } else {
        for (auto i = accepted.begin(); i != accepted.end(); ++i)
          if (i->get() == c) {
            accepted.erase(i);
            break;
          }
      }
    }
    if (c->dialler)
      log::event(failed.empty() ? spdlog::level::debug : spdlog::level::warn,
                 "transport_connection_lost",
                 {{"peer", c->address}, {"reason", reason}, {"calls_failed", failed.size()}});
    for (auto& done : failed)
      done(make_error(errc::unavailable,
                      "the connection to " + c->address + " broke before the answer: " + reason));
  }

  /// I/O thread: one complete frame from `c`.
  void on_frame(transport_conn& c, uint8_t type, uint64_t id, const char* data, size_t size) {
    stats->frames_received.fetch_add(1, std::memory_order_relaxed);
    if (c.dialler) {
      if (type != f_reply && type != f_error)
        return c.close("unexpected frame type " + std::to_string(type));
      auto done = take(id);
      if (!done)
        return; // timed out meanwhile
      if (type == f_reply) {
        agent_reply reply;
        if (!decode_payload(*sys, data, size, reply)) {
          done(make_error(errc::internal, "an answer from " + c.address + " does not decode"));
          return c.close("a reply frame does not decode");
        }
        return done(std::move(reply.body));
      }
      caf::error err;
      if (!decode_payload(*sys, data, size, err) || !err)
        err = make_error(errc::internal, "an error answer from " + c.address + " does not decode");
      return done(std::move(err));
    }
    if (!c.greeted) {
      transport_hello hello;
      std::string why;
      if (type != f_hello || !decode_payload(*sys, data, size, hello))
        why = "the first frame is not a hello";
      else if (hello.cluster_name != cluster_name)
        why = "cluster name '" + hello.cluster_name + "' differs from this cluster's '"
          + cluster_name + "'";
      else if (hello.protocol_version != cluster_protocol_version)
        why = "protocol version " + std::to_string(hello.protocol_version)
          + " differs from this node's " + std::to_string(cluster_protocol_version);
      if (!why.empty()) {
        stats->connections_refused.fetch_add(1, std::memory_order_relaxed);
        log::event(spdlog::level::warn, "transport_refused",
                   {{"peer", hello.node}, {"reason", why}});
        return c.close(why);
      }
      c.greeted = true;
      c.address = hello.node;
      return;
    }
    if (type != f_call && type != f_tell)
      return c.close("unexpected frame type " + std::to_string(type));
    remote_call req;
    if (!decode_payload(*sys, data, size, req))
      return c.close("a call frame does not decode");
    if (type == f_tell) {
      // One way: nobody waits for an answer; a failure is counted and logged here.
      on_call(std::move(req), [st = stats, peer = c.address](caf::expected<std::string> r) {
        if (r)
          return;
        st->tells_failed.fetch_add(1, std::memory_order_relaxed);
        log::event(spdlog::level::debug, "transport_tell_failed",
                   {{"peer", peer}, {"reason", describe(r.error())}});
      });
      return;
    }
    auto self = c.shared_from_this();
    auto answer = [self, id, sys = sys,
                   max = limits.frame_bytes_max](caf::expected<std::string> r) {
      self->calls_running.fetch_sub(1, std::memory_order_relaxed);
      caf::expected<std::vector<char>> frame{std::vector<char>{}};
      if (r) {
        agent_reply reply{std::move(*r)};
        frame = encode_frame(*sys, f_reply, id, reply, max);
      } else {
        frame = encode_frame(*sys, f_error, id, r.error(), max);
      }
      if (!frame) {
        auto err = std::move(frame.error());
        frame = encode_frame(*sys, f_error, id, err, max);
      }
      if (frame && self->send(frame->data(), frame->size()) == transport_conn::sent::ok)
        self->stats->frames_sent.fetch_add(1, std::memory_order_relaxed);
    };
    if (c.calls_running.fetch_add(1, std::memory_order_relaxed) >= limits.calls_pending_max)
      return answer(make_error(errc::overloaded, node_name + " has too many calls in flight"));
    on_call(std::move(req), std::move(answer));
  }

  /// I/O thread, every 50 ms: fails calls past their deadline, gives up slow dials, closes
  /// accepted connections that said no hello within `connect_timeout`.
  void sweep() {
    sweep_timer->expires_after(std::chrono::milliseconds(50));
    sweep_timer->async_wait([this](boost::system::error_code ec) {
      if (ec || closing)
        return; // (an expiry queued before the cancel still arrives with success)
      auto now = clock_type::now();
      std::vector<std::pair<reply_fn, std::string>> expired;
      std::vector<std::shared_ptr<transport_conn>> slow;
      {
        std::lock_guard<std::mutex> lk{mtx};
        while (!deadlines.empty() && deadlines.begin()->first <= now) {
          auto i = pending.find(deadlines.begin()->second);
          deadlines.erase(deadlines.begin());
          if (i != pending.end()) {
            expired.emplace_back(std::move(i->second.done), i->second.address);
            pending.erase(i);
          }
        }
        for (auto& [_, c] : dialled)
          if (now - c->created > connect_timeout) {
            std::lock_guard<std::mutex> clk{c->mtx};
            if (!c->ready)
              slow.push_back(c);
          }
        for (auto& c : accepted) // (greeted is the I/O thread's, like this sweep)
          if (!c->greeted && now - c->created > connect_timeout)
            slow.push_back(c);
      }
      for (auto& c : slow)
        c->close(c->dialler
                   ? "no connection within " + std::to_string(connect_timeout.count()) + " ms"
                   : "no hello within " + std::to_string(connect_timeout.count()) + " ms");
      for (auto& [done, address] : expired)
        done(make_error(errc::timeout, "no answer from " + address + " in time"));
      sweep();
    });
  }
};

void transport_conn::close(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lk{mtx};
    if (closed)
      return;
    closed = true;
    boost::system::error_code ignored;
    resolver.cancel();
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
    out.clear();
  }
  owner->closed(this, reason);
}

void transport_conn::read() {
  if (in.size() - in_used < read_chunk_bytes)
    in.resize(in_used + read_chunk_bytes);
  auto got = [self = shared_from_this()](boost::system::error_code ec, size_t n) {
    if (ec)
      return self->close(ec == asio::error::eof ? std::string{"closed by the peer"} : ec.message());
    self->in_used += n;
    size_t pos = 0;
    auto max = self->owner->limits.frame_bytes_max;
    while (self->in_used - pos >= 4) {
      auto len = static_cast<size_t>(get_be(self->in.data() + pos, 4));
      if (len < header_bytes - 4 || len + 4 > max) {
        std::string why = "a frame of ";
        why.append(std::to_string(len + 4))
          .append(" bytes (limit cluster.frame_bytes_max = ")
          .append(std::to_string(max))
          .append(")");
        log::event(spdlog::level::warn, "transport_bad_frame",
                   {{"peer", self->address}, {"reason", why}});
        return self->close(why);
      }
      if (self->in_used - pos < len + 4) {
        if (self->in.size() < pos + len + 4 + read_chunk_bytes)
          self->in.resize(pos + len + 4 + read_chunk_bytes);
        break;
      }
      auto* p = self->in.data() + pos;
      // The last frame read runs its actors here; with more waiting, the workers take them.
      auto allow = self->owner->limits.inline_runs && pos + len + 4 == self->in_used;
      self->owner->exec->run(allow, [&] {
        self->owner->on_frame(*self, static_cast<uint8_t>(p[4]), get_be(p + 5, 8), p + header_bytes,
                              len + 4 - header_bytes);
      });
      {
        std::lock_guard<std::mutex> lk{self->mtx};
        if (self->closed)
          return;
      }
      pos += len + 4;
    }
    if (pos > 0) {
      std::memmove(self->in.data(), self->in.data() + pos, self->in_used - pos);
      self->in_used -= pos;
    }
    if (self->in.size() > 4 * read_chunk_bytes && self->in_used < read_chunk_bytes) {
      self->in.resize(read_chunk_bytes); // a large frame passed: give the memory back
      self->in.shrink_to_fit();
    }
    self->read();
  };
  auto buf = asio::buffer(in.data() + in_used, in.size() - in_used);
  if (tls)
    tls->async_read_some(buf, std::move(got));
  else
    sock.async_read_some(buf, std::move(got));
}

caf::expected<std::unique_ptr<call_transport>> call_transport::start(
  caf::actor_system& sys, const std::string& host, uint16_t port, std::string cluster_name,
  std::string node_name, transport_limits limits, call_handler on_call, tls_files tls) {
  assert(on_call);
  assert(limits.frame_bytes_max <= limits.send_queue_bytes_max);
  std::unique_ptr<call_transport> t{new call_transport};
  t->impl_ = std::make_shared<impl>();
  auto& im = *t->impl_;
  im.sys = &sys;
  im.exec.emplace(sys);
  im.cluster_name = std::move(cluster_name);
  im.node_name = std::move(node_name);
  im.limits = limits;
  im.on_call = std::move(on_call);
  if (!tls.cert_file.empty()) {
    if (tls.ca_file.empty())
      return make_error(errc::invalid_config,
                        "the call transport's TLS needs cluster.tls_ca_file (peers must present "
                        "a certificate from the cluster's CA)");
    if (auto err = load_tls_files(im.tls_ctx.emplace(asio::ssl::context::tls), "cluster", tls))
      return err;
  }
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) {
    tcp::resolver r{*im.io};
    auto res = r.resolve(host, std::to_string(port), ec);
    if (ec || res.empty())
      return make_error(errc::invalid_config, "cannot resolve transport host '" + host + "'");
    addr = res.begin()->endpoint().address();
  }
  im.acceptor.emplace(*im.io);
  tcp::endpoint ep{addr, port};
  im.acceptor->open(ep.protocol(), ec);
  if (!ec)
    im.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec)
    im.acceptor->bind(ep, ec);
  if (!ec)
    im.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return make_error(errc::io_error,
                      "cannot listen for cluster calls on " + host + ":" + std::to_string(port)
                        + ": " + ec.message());
  im.port = im.acceptor->local_endpoint().port();
  im.sweep_timer.emplace(*im.io);
  im.work.emplace(asio::make_work_guard(*im.io));
  im.accept();
  im.sweep();
  im.thread = std::thread{[io = im.io] { io->run(); }};
  return t;
}

call_transport::~call_transport() {
  shutdown();
}

void call_transport::shutdown() {
  if (!impl_)
    return;
  auto& im = *impl_;
  std::vector<reply_fn> failed;
  {
    std::lock_guard<std::mutex> lk{im.mtx};
    if (im.stopping)
      return;
    im.stopping = true;
    for (auto& [_, p] : im.pending)
      failed.push_back(std::move(p.done));
    im.pending.clear();
    im.deadlines.clear();
  }
  for (auto& done : failed)
    done(make_error(errc::shutting_down, "the node is shutting down"));
  if (!im.thread.joinable()) { // start() failed before the I/O thread ran
    im.on_call = nullptr;
    return;
  }
  asio::post(*im.io, [&im] {
    im.closing = true;
    boost::system::error_code ignored;
    im.acceptor->close(ignored);
    im.sweep_timer->cancel();
    std::vector<std::shared_ptr<transport_conn>> all;
    {
      std::lock_guard<std::mutex> lk{im.mtx};
      for (auto& [_, c] : im.dialled)
        all.push_back(c);
      all.insert(all.end(), im.accepted.begin(), im.accepted.end());
    }
    for (auto& c : all)
      c->close("shutting down");
  });
  im.work.reset();
  // Every operation ends (aborted) once its socket is closed; then run() returns.
  assert(std::this_thread::get_id() != im.thread.get_id());
  im.thread.join();
  // Nothing calls the handler any more: drop what it holds (the cluster's shared state holds
  // this transport; keeping the handler would make a cycle that is never freed).
  im.on_call = nullptr;
}

uint16_t call_transport::port() const noexcept {
  return impl_->port;
}

void call_transport::call(const std::string& address, const remote_call& req,
                          std::chrono::milliseconds timeout, reply_fn done) {
  assert(done);
  auto& im = *impl_;
  uint64_t id = 0;
  std::shared_ptr<transport_conn> c;
  {
    std::lock_guard<std::mutex> lk{im.mtx};
    if (im.stopping)
      return done(make_error(errc::shutting_down, "the node is shutting down"));
    if (im.pending.size() >= im.limits.calls_pending_max)
      return done(make_error(errc::overloaded,
                             im.node_name + " waits on too many calls ("
                               + std::to_string(im.pending.size()) + ")"));
    id = im.next_id++;
    c = im.conn_to(address);
    auto& p = im.pending[id];
    p.via = c.get();
    p.address = address;
    p.deadline = im.deadlines.emplace(clock_type::now() + timeout, id);
    p.done = std::move(done);
  }
  auto frame =
    encode_frame(*im.sys, f_call, id, const_cast<remote_call&>(req), im.limits.frame_bytes_max);
  if (!frame) {
    if (auto d = im.take(id))
      d(std::move(frame.error()));
    return;
  }
  auto r = c->send(frame->data(), frame->size());
  if (r == transport_conn::sent::ok) {
    im.stats->frames_sent.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (auto d = im.take(id))
    d(r == transport_conn::sent::full
        ? make_error(errc::overloaded,
                     "the connection to " + address
                       + " has too many bytes queued (cluster.send_queue_bytes_max)")
        : make_error(errc::unavailable,
                     "the connection to " + address + " closed before the call was sent"));
}

caf::error call_transport::tell(const std::string& address, const remote_call& req) {
  auto& im = *impl_;
  std::shared_ptr<transport_conn> c;
  {
    std::lock_guard<std::mutex> lk{im.mtx};
    if (im.stopping)
      return make_error(errc::shutting_down, "the node is shutting down");
    c = im.conn_to(address);
  }
  auto frame =
    encode_frame(*im.sys, f_tell, 0, const_cast<remote_call&>(req), im.limits.frame_bytes_max);
  if (!frame)
    return std::move(frame.error());
  // Queued, never written from here: the I/O thread writes a burst of tells in one go.
  auto r = c->send(frame->data(), frame->size(), false);
  if (r == transport_conn::sent::full)
    return make_error(errc::overloaded,
                      "the connection to " + address
                        + " has too many bytes queued (cluster.send_queue_bytes_max)");
  if (r == transport_conn::sent::closed)
    return make_error(errc::unavailable,
                      "the connection to " + address + " closed before the tell was sent");
  im.stats->frames_sent.fetch_add(1, std::memory_order_relaxed);
  return {};
}

void call_transport::drop(const std::string& address) {
  auto im = impl_.get();
  asio::post(*im->io, [im, address] {
    std::shared_ptr<transport_conn> c;
    {
      std::lock_guard<std::mutex> lk{im->mtx};
      if (auto i = im->dialled.find(address); i != im->dialled.end())
        c = i->second;
    }
    if (c)
      c->close("the member went down or restarted");
  });
}

call_transport::counters call_transport::stats() const {
  auto& s = *impl_->stats;
  auto x = impl_->exec->stats();
  return {s.frames_sent.load(),
          s.frames_received.load(),
          s.direct_writes.load(),
          s.queued_writes.load(),
          s.connections_refused.load(),
          s.tells_failed.load(),
          s.tls_refused.load(),
          x.resumed_inline,
          x.handed_over};
}

} // namespace hive
