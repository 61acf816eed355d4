#include "actors/binary_gateway.hpp"

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <array>
#include <atomic>
#include <cassert>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <nlohmann/json.hpp>

#include "actors/auth.hpp"
#include "actors/json_check.hpp"
#include "actors/listener.hpp"
#include "actors/post_gate.hpp"
#include "protocols/agent_id.hpp"
#include "protocols/errc.hpp"
#include "protocols/messages.hpp"
#include "protocols/wire.hpp"
#include "runtime/cluster.hpp"
#include "runtime/logging.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_runtime.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/tls.hpp"

namespace hive {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

/// Bytes asked of the socket per read.
constexpr size_t read_chunk_bytes = 64 * 1024;

/// How often a connection checks its deadlines (unanswered requests, idleness).
constexpr milliseconds tick{250};

/// Grace after a call's deadline before the listener answers timeout itself.
constexpr milliseconds guard_grace{1000};

int64_t unix_ms() {
  return std::chrono::duration_cast<milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

// -- shared state -----------------------------------------------------------------------------

struct binary_gateway::impl {
  impl(node_runtime& runtime, const node_config& config, security& security)
      : rt(runtime), cfg(config.binary), gw_cfg(config.gateway), sec(security),
        gate(std::make_shared<post_gate>()) {}

  node_runtime& rt;
  const node_config::binary_section cfg;
  const node_config::gateway_section gw_cfg;
  security& sec;
  std::shared_ptr<post_gate> gate;
  std::optional<asio::io_context> ioc;
  /// Set when the listener serves TLS (the gateway's `gateway.tls_cert_file`/`tls_key_file`).
  std::optional<asio::ssl::context> tls;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;

  std::mutex acceptor_mtx;
  std::optional<tcp::acceptor> acceptor;
  uint16_t port = 0;
  std::string address;

  std::atomic<bool> not_accepting{false};
  std::atomic<size_t> connections{0};
  std::atomic<cluster*> cluster_view{nullptr};

  request_gauge in_flight;

  void begin_request() {
    in_flight.begin();
  }

  void end_request() {
    in_flight.end();
  }

  void do_accept();
  void on_accept(boost::system::error_code ec, tcp::socket socket);
};

namespace {

/// One connection: reads frames, dispatches requests, writes answers (all on its strand).
class binary_session : public std::enable_shared_from_this<binary_session> {
public:
  binary_session(binary_gateway::impl& gw, tcp::socket sock)
      : gw_(gw), sock_(std::move(sock)), timer_(sock_.get_executor()) {
    if (gw_.tls)
      tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(sock_, *gw_.tls);
    gw_.connections.fetch_add(1);
    gw_.rt.metrics().binary_connections(1);
    boost::system::error_code ec;
    sock_.set_option(tcp::no_delay(true), ec);
    auto ep = sock_.remote_endpoint(ec);
    if (!ec)
      peer_ = ep.address().to_string() + ':' + std::to_string(ep.port());
  }

  ~binary_session() {
    // Requests still unanswered (the gateway is being destroyed) no longer count as in flight.
    for (size_t i = 0; i < pending_.size(); ++i)
      gw_.end_request();
    gw_.connections.fetch_sub(1);
    gw_.rt.metrics().binary_connections(-1);
  }

  [[nodiscard]] asio::any_io_executor executor() {
    return sock_.get_executor();
  }

  /// Serves the connection (after the TLS handshake, when the listener serves TLS). The hello
  /// deadline (`binary.idle_timeout_ms`) covers the handshake too.
  void start() {
    opened_ = last_activity_ = steady_clock::now();
    arm_timer();
    handshake_then([](binary_session& s) { s.do_read(); });
  }

  /// Answers overloaded (request id 0) and closes once that is written.
  void refuse() {
    opened_ = last_activity_ = steady_clock::now();
    arm_timer();
    handshake_then([](binary_session& s) { s.refuse_now(); });
  }

private:
  template <class Next>
  void handshake_then(Next next) {
    if (!tls_)
      return next(*this);
    handshaking_ = true;
    tls_->async_handshake(asio::ssl::stream_base::server,
                          [self = shared_from_this(), next](boost::system::error_code ec) {
                            self->handshaking_ = false;
                            if (ec) {
                              log::event(spdlog::level::info, "binary_tls_handshake_failed",
                                         {{"peer", self->peer_}, {"reason", ec.message()}});
                              return self->close_now();
                            }
                            next(*self);
                          });
  }

  void refuse_now() {
    respond_error(0, 0, "invalid", steady_clock::now(),
                  make_error(errc::overloaded,
                             "node '" + gw_.rt.node_name() + "' has binary.connections_max ("
                               + std::to_string(gw_.cfg.connections_max) + ") connections open"),
                  1000);
    close_after_write();
  }

  /// A request handed to the runtime and not answered yet.
  struct pending {
    uint64_t id;
    uint64_t cid;
    std::string_view kind;
    steady_clock::time_point started;
    steady_clock::time_point guard_deadline;
  };

  // -- reading --------------------------------------------------------------------------------

  void do_read() {
    if (reading_ || closing_ || handshaking_ || pending_.size() >= inflight_max())
      return;
    reading_ = true;
    if (!chunk_)
      chunk_ = std::make_unique<std::array<char, read_chunk_bytes>>();
    auto on_read = [self = shared_from_this()](boost::system::error_code ec, size_t n) {
      self->on_read(ec, n);
    };
    if (tls_)
      tls_->async_read_some(asio::buffer(*chunk_), std::move(on_read));
    else
      sock_.async_read_some(asio::buffer(*chunk_), std::move(on_read));
  }

  /// Below the in-flight bound again: handles the frames already buffered, then reads on.
  void resume() {
    if (closing_)
      return;
    process_frames();
    do_read();
  }

  void on_read(boost::system::error_code ec, size_t n) {
    reading_ = false;
    if (!ec)
      in_.append(chunk_->data(), n);
    if (ec) {
      // EOF or reset: answers still owed cannot be delivered; drop the connection.
      return close_now();
    }
    last_activity_ = steady_clock::now();
    process_frames();
    do_read();
  }

  size_t inflight_max() const {
    return static_cast<size_t>(gw_.cfg.inflight_requests_max);
  }

  void process_frames() {
    while (!closing_ && pending_.size() < inflight_max()) {
      std::string_view rest{in_.data() + in_pos_, in_.size() - in_pos_};
      auto f = wire::next_frame(rest, static_cast<size_t>(gw_.cfg.frame_bytes_max));
      if (!f)
        return protocol_error(f.error());
      if (f->consumed == 0)
        break;
      auto req = wire::decode_request(f->payload);
      in_pos_ += f->consumed;
      if (!req)
        return protocol_error(req.error());
      handle(std::move(*req));
    }
    // Keep only the unread tail (at most one partial frame).
    if (in_pos_ == in_.size()) {
      in_.clear();
      in_pos_ = 0;
    } else if (in_pos_ > 0 && in_pos_ >= in_.size() / 2) {
      in_.erase(0, in_pos_);
      in_pos_ = 0;
    }
  }

  void protocol_error(const caf::error& err) {
    log::event(spdlog::level::info, "binary_protocol_error",
               {{"peer", peer_}, {"reason", describe(err)}});
    respond_error(0, 0, "invalid", steady_clock::now(), err);
    close_after_write();
  }

  // -- requests -------------------------------------------------------------------------------

  void handle(wire::request req) {
    auto t0 = steady_clock::now();
    auto cid = req.correlation_id != 0 ? req.correlation_id : random_cid();
    auto kind = wire::kind_name(req);
    if (!principal_) {
      auto* h = std::get_if<wire::hello>(&req.body);
      if (h == nullptr) {
        respond_error(req.id, cid, kind, t0,
                      make_error(errc::unauthenticated,
                                 "the first request of a connection must be hello (with the "
                                 "protocol version and a token)"));
        return close_after_write();
      }
      return hello(req.id, cid, t0, *h);
    }
    if (std::holds_alternative<wire::hello>(req.body))
      return respond_error(
        req.id, cid, kind, t0,
        make_error(errc::invalid_argument, "hello was already sent on this connection"));
    // Checked again on every request: a revoked key or an expired token stops at once.
    auto who = gw_.sec.authenticate(bearer_);
    if (!who) {
      respond_error(req.id, cid, kind, t0, who.error());
      return close_after_write();
    }
    principal_ = std::move(*who);
    if (gw_.not_accepting.load() || gw_.rt.stopping())
      return respond_error(req.id, cid, kind, t0,
                           make_error(errc::shutting_down, "node is shutting down"), 1000);
    if (auto wait_ms = gw_.sec.limiter().admit(principal_->tenant, t0); wait_ms > 0) {
      auto& q = gw_.sec.quota();
      return respond_error(
        req.id, cid, kind, t0,
        make_error(errc::rate_limited,
                   "tenant '" + principal_->tenant
                     + "' exceeds quota.requests_per_s = " + std::to_string(q.requests_per_s)
                     + " (quota.burst_requests = " + std::to_string(q.burst_requests)
                     + "); retry in " + std::to_string(wait_ms) + " ms"),
        static_cast<uint32_t>(wait_ms));
    }
    std::visit(
      [&](auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, wire::spawn>)
          spawn(req.id, cid, t0, std::move(x));
        else if constexpr (std::is_same_v<T, wire::tell>)
          tell(req.id, cid, t0, std::move(x));
        else if constexpr (std::is_same_v<T, wire::ask>)
          ask(req.id, cid, t0, std::move(x));
        else if constexpr (std::is_same_v<T, wire::stop>)
          stop(req.id, cid, t0, x);
      },
      req.body);
  }

  void hello(uint64_t id, uint64_t cid, steady_clock::time_point t0, const wire::hello& h) {
    if (h.version != wire::protocol_version) {
      respond_error(id, cid, "hello", t0,
                    make_error(errc::invalid_argument,
                               "protocol version " + std::to_string(h.version)
                                 + " is not spoken here (this node speaks "
                                 + std::to_string(wire::protocol_version) + ")"));
      return close_after_write();
    }
    bearer_ = "Bearer " + h.token;
    auto who = gw_.sec.authenticate(bearer_);
    if (!who) {
      log::event(spdlog::level::info, "binary_hello_refused",
                 {{"peer", peer_}, {"reason", message_of(who.error())}, {"correlation_id", cid}});
      respond_error(id, cid, "hello", t0, who.error());
      return close_after_write();
    }
    principal_ = std::move(*who);
    nlohmann::json out{{"node", gw_.rt.node_name()},
                       {"principal", principal_->subject},
                       {"tenant", principal_->tenant},
                       {"role", to_string(principal_->level)},
                       {"version", wire::protocol_version}};
    respond_ok(id, cid, "hello", t0, out.dump());
  }

  /// Checks the agent id and the caller's right to act on it (operator, own tenant).
  caf::expected<agent_id> target(const std::string& text, std::string_view kind) {
    auto id = parse_agent_id(text);
    if (!id)
      return id.error();
    if (auto err =
          authorize(*principal_, role::operator_, id->tenant, "binary " + std::string{kind}))
      return err;
    return id;
  }

  caf::error check_body(const std::string& body) const {
    auto max = gw_.sec.quota().message_bytes_max;
    if (static_cast<int64_t>(body.size()) > max)
      return make_error(errc::too_large,
                        "message body of " + std::to_string(body.size())
                          + " bytes exceeds quota.message_bytes_max (" + std::to_string(max)
                          + " bytes)");
    return check_json(body, static_cast<size_t>(gw_.gw_cfg.json_depth_max));
  }

  void spawn(uint64_t id, uint64_t cid, steady_clock::time_point t0, wire::spawn s) {
    auto aid = target(s.agent, "spawn");
    if (!aid)
      return respond_error(id, cid, "spawn", t0, aid.error());
    spawn_request sr;
    sr.id = std::move(*aid);
    sr.kind = std::move(s.kind);
    if (sr.kind.empty())
      return respond_error(
        id, cid, "spawn", t0,
        make_error(errc::invalid_argument, "field 'kind' is required (a registered agent kind)"));
    if (!s.config.empty()) {
      if (auto err = check_json(s.config, static_cast<size_t>(gw_.gw_cfg.json_depth_max)))
        return respond_error(id, cid, "spawn", t0, err);
      sr.config = nlohmann::json::parse(s.config, nullptr, false);
      if (!sr.config.is_object())
        return respond_error(
          id, cid, "spawn", t0,
          make_error(errc::invalid_argument, "field 'config' must be a JSON object"));
    }
    sr.breaker = s.breaker;
    if (!s.restart.empty()) {
      auto r = parse_restart_type(s.restart);
      if (!r)
        return respond_error(id, cid, "spawn", t0,
                             make_error(errc::invalid_argument,
                                        "field 'restart' must be \"permanent\", \"transient\" "
                                        "or \"temporary\": "
                                          + message_of(r.error())));
      sr.restart = *r;
    }
    sr.correlation_id = cid;
    auto done = bind<caf::expected<agent_view>>(
      id, cid, "spawn", t0, default_timeout(), [](caf::expected<agent_view>& res) {
        if (!res)
          return caf::expected<std::string>{res.error()};
        return caf::expected<std::string>{
          nlohmann::json{{"id", res->id.str()}, {"kind", res->kind}, {"node", res->node}}.dump()};
      });
    if (auto* c = gw_.cluster_view.load())
      return c->spawn(std::move(sr), s.node, std::move(done));
    if (!s.node.empty() && s.node != gw_.rt.node_name())
      return done(make_error(errc::invalid_argument,
                             "node '" + gw_.rt.node_name()
                               + "' is not in a cluster: it cannot spawn on '" + s.node + "'"));
    gw_.rt.spawn(std::move(sr), std::move(done));
  }

  void tell(uint64_t id, uint64_t cid, steady_clock::time_point t0, wire::tell t) {
    auto aid = target(t.agent, "tell");
    if (!aid)
      return respond_error(id, cid, "tell", t0, aid.error());
    if (auto err = check_body(t.body))
      return respond_error(id, cid, "tell", t0, err);
    agent_call call{envelope{cid, aid->tenant, 0, "gateway", std::move(t.client_id), t.client_seq},
                    std::move(t.body)};
    if (auto* c = gw_.cluster_view.load())
      return c->call("tell", *aid, std::move(call), default_timeout(),
                     bind<caf::expected<std::string>>(
                       id, cid, "tell", t0, default_timeout(), [](caf::expected<std::string>& res) {
                         if (!res)
                           return caf::expected<std::string>{res.error()};
                         return caf::expected<std::string>{R"({"accepted":true})"};
                       }));
    if (auto err = gw_.rt.tell(*aid, std::move(call)))
      return respond_error(id, cid, "tell", t0, err);
    respond_ok(id, cid, "tell", t0, R"({"accepted":true})");
  }

  void ask(uint64_t id, uint64_t cid, steady_clock::time_point t0, wire::ask a) {
    auto aid = target(a.agent, "ask");
    if (!aid)
      return respond_error(id, cid, "ask", t0, aid.error());
    int64_t timeout_ms = a.timeout_ms == 0 ? gw_.gw_cfg.ask_timeout_ms_default : a.timeout_ms;
    if (timeout_ms > gw_.gw_cfg.ask_timeout_ms_max)
      return respond_error(id, cid, "ask", t0,
                           make_error(errc::invalid_argument,
                                      "timeout_ms must be 0 (the default) or 1.."
                                        + std::to_string(gw_.gw_cfg.ask_timeout_ms_max)
                                        + " (gateway.ask_timeout_ms_max), got "
                                        + std::to_string(a.timeout_ms)));
    if (auto err = check_body(a.body))
      return respond_error(id, cid, "ask", t0, err);
    agent_call call{envelope{cid, aid->tenant, unix_ms() + timeout_ms, "gateway",
                             std::move(a.client_id), a.client_seq},
                    std::move(a.body)};
    auto done = bind<caf::expected<std::string>>(
      id, cid, "ask", t0, milliseconds{timeout_ms},
      [](caf::expected<std::string>& res) { return std::move(res); });
    if (auto* c = gw_.cluster_view.load())
      return c->ask(*aid, std::move(call), milliseconds{timeout_ms}, std::move(done));
    gw_.rt.ask(*aid, std::move(call), milliseconds{timeout_ms}, std::move(done));
  }

  void stop(uint64_t id, uint64_t cid, steady_clock::time_point t0, const wire::stop& s) {
    auto aid = target(s.agent, "stop");
    if (!aid)
      return respond_error(id, cid, "stop", t0, aid.error());
    if (auto* c = gw_.cluster_view.load())
      return c->call("stop", *aid, agent_call{envelope{cid, aid->tenant, 0, "gateway", {}, 0}, {}},
                     default_timeout(),
                     bind<caf::expected<std::string>>(
                       id, cid, "stop", t0, default_timeout(), [](caf::expected<std::string>& res) {
                         if (!res)
                           return caf::expected<std::string>{res.error()};
                         return caf::expected<std::string>{"{}"};
                       }));
    auto done = bind<caf::error>(id, cid, "stop", t0, default_timeout(), [](caf::error& err) {
      if (err)
        return caf::expected<std::string>{std::move(err)};
      return caf::expected<std::string>{"{}"};
    });
    gw_.rt.stop(*aid, std::move(done));
  }

  milliseconds default_timeout() const {
    return milliseconds{gw_.gw_cfg.ask_timeout_ms_default};
  }

  /// Registers request `id` as pending and makes the runtime callback that answers it on this
  /// connection's strand (`to_text` turns the runtime's result into the answer). Answers once:
  /// a late callback after the guard answered timeout is dropped.
  template <class Result, class F>
  std::function<void(Result)> bind(uint64_t id, uint64_t cid, std::string_view kind,
                                   steady_clock::time_point t0, milliseconds timeout, F to_text) {
    auto key = next_key_++;
    pending_.emplace(key, pending{id, cid, kind, t0, t0 + timeout + guard_grace});
    gw_.begin_request();
    std::weak_ptr<binary_session> weak = shared_from_this();
    return [gate = gw_.gate, weak, key, to_text = std::move(to_text)](Result res) mutable {
      gate->post(
        weak, [key, to_text = std::move(to_text), res = std::move(res)](binary_session& s) mutable {
          auto i = s.pending_.find(key);
          if (i == s.pending_.end())
            return; // answered timeout already
          auto p = i->second;
          s.pending_.erase(i);
          s.gw_.end_request();
          auto text = to_text(res);
          if (text)
            s.respond_ok(p.id, p.cid, p.kind, p.started, std::move(*text));
          else
            s.respond_error(p.id, p.cid, p.kind, p.started, text.error());
          s.resume();
        });
    };
  }

  // -- answering ------------------------------------------------------------------------------

  void respond_ok(uint64_t id, uint64_t cid, std::string_view kind, steady_clock::time_point t0,
                  std::string text) {
    wire::response res;
    res.id = id;
    res.correlation_id = cid;
    res.ok = true;
    res.text = std::move(text);
    wire::append_frame(out_, res);
    record(kind, "ok", t0);
    start_write();
  }

  void respond_error(uint64_t id, uint64_t cid, std::string_view kind, steady_clock::time_point t0,
                     const caf::error& err, uint32_t retry_after_ms = 0) {
    wire::response res;
    res.id = id;
    res.correlation_id = cid;
    res.code = code_of(err);
    if (res.code == errc::none)
      res.code = errc::internal;
    res.text = message_of(err);
    res.retry_after_ms = retry_after_ms;
    if (res.code == errc::overloaded && retry_after_ms == 0)
      res.retry_after_ms = 1000;
    wire::append_frame(out_, res);
    record(kind, to_string(res.code), t0);
    start_write();
  }

  void record(std::string_view kind, std::string_view code, steady_clock::time_point t0) {
    gw_.rt.metrics().binary_request(
      kind, code, std::chrono::duration<double>(steady_clock::now() - t0).count());
  }

  void start_write() {
    if (writing_ || out_.empty() || closed_)
      return;
    writing_ = true;
    std::swap(wbuf_, out_);
    auto on_write = [self = shared_from_this()](boost::system::error_code ec, size_t) {
      self->on_write(ec);
    };
    if (tls_)
      asio::async_write(*tls_, asio::buffer(wbuf_), std::move(on_write));
    else
      asio::async_write(sock_, asio::buffer(wbuf_), std::move(on_write));
  }

  void on_write(boost::system::error_code ec) {
    writing_ = false;
    wbuf_.clear();
    if (ec)
      return close_now();
    last_activity_ = steady_clock::now();
    if (!out_.empty())
      return start_write();
    if (closing_)
      close_now();
  }

  /// Reads nothing more; closes once what is queued is written.
  void close_after_write() {
    closing_ = true;
    if (!writing_ && out_.empty())
      close_now();
  }

  void close_now() {
    if (closed_)
      return;
    closed_ = true;
    closing_ = true;
    boost::system::error_code ec;
    sock_.shutdown(tcp::socket::shutdown_both, ec);
    sock_.close(ec);
    timer_.cancel();
  }

  // -- deadlines ------------------------------------------------------------------------------

  void arm_timer() {
    timer_.expires_after(tick);
    // The armed timer owns the connection (a paused one has no read pending to own it);
    // close_now cancels it, destroying the io_context drops it.
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec)
        return;
      self->on_tick();
    });
  }

  void on_tick() {
    if (closed_)
      return;
    auto now = steady_clock::now();
    // Requests the runtime never answered: timeout, one second after their deadline.
    for (auto i = pending_.begin(); i != pending_.end();) {
      if (now < i->second.guard_deadline) {
        ++i;
        continue;
      }
      auto p = i->second;
      i = pending_.erase(i);
      gw_.end_request();
      respond_error(p.id, p.cid, p.kind, p.started,
                    make_error(errc::timeout, "no answer from the runtime in time"));
    }
    auto idle = milliseconds{gw_.cfg.idle_timeout_ms};
    if (!principal_ && now - opened_ >= idle) {
      log::event(spdlog::level::info, "binary_hello_timeout", {{"peer", peer_}});
      return close_now();
    }
    if (pending_.empty() && !writing_ && now - last_activity_ >= idle)
      return close_now();
    resume();
    arm_timer();
  }

  binary_gateway::impl& gw_;
  tcp::socket sock_;
  /// TLS over `sock_` (when the listener serves TLS). Closing `sock_` ends its operations.
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls_;
  asio::steady_timer timer_;
  std::string peer_;
  /// What the socket delivers (allocated at the first read).
  std::unique_ptr<std::array<char, read_chunk_bytes>> chunk_;
  /// Received bytes; those before `in_pos_` are handled.
  std::string in_;
  size_t in_pos_ = 0;
  std::string out_;
  std::string wbuf_;
  bool handshaking_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool closed_ = false;
  std::string bearer_;
  std::optional<principal> principal_;
  std::unordered_map<uint64_t, pending> pending_;
  uint64_t next_key_ = 1;
  steady_clock::time_point opened_;
  steady_clock::time_point last_activity_;
};

} // namespace

void binary_gateway::impl::do_accept() {
  std::lock_guard<std::mutex> guard{acceptor_mtx};
  if (!acceptor || !acceptor->is_open())
    return;
  acceptor->async_accept(
    asio::make_strand(*ioc),
    [this](boost::system::error_code ec, tcp::socket s) { on_accept(ec, std::move(s)); });
}

void binary_gateway::impl::on_accept(boost::system::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || not_accepting.load())
    return;
  if (ec) {
    log::event(spdlog::level::warn, "binary_accept_failed", {{"reason", ec.message()}});
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
      auto timer = std::make_shared<asio::steady_timer>(*ioc, milliseconds{50});
      timer->async_wait([this, timer](boost::system::error_code) { do_accept(); });
      return;
    }
  } else {
    try {
      auto s = std::make_shared<binary_session>(*this, std::move(socket));
      if (connections.load() > static_cast<size_t>(cfg.connections_max)) {
        log::event(spdlog::level::warn, "binary_connection_refused",
                   {{"connections_max", cfg.connections_max}});
        asio::post(s->executor(), [s] { s->refuse(); });
      } else {
        asio::post(s->executor(), [s] { s->start(); });
      }
    } catch (const std::exception& ex) {
      log::event(spdlog::level::warn, "binary_session_failed", {{"reason", ex.what()}});
    }
  }
  do_accept();
}

// -- binary_gateway ---------------------------------------------------------------------------

binary_gateway::binary_gateway(std::shared_ptr<impl> state) : impl_(std::move(state)) {}

caf::expected<std::unique_ptr<binary_gateway>> binary_gateway::start(node_runtime& rt,
                                                                     const node_config& cfg,
                                                                     security& sec) {
  if (cfg.binary.listen.empty())
    return make_error(errc::invalid_config, "binary.listen is empty: no binary listener");
  auto ep_cfg = parse_endpoint(cfg.binary.listen, "binary.listen");
  if (!ep_cfg)
    return ep_cfg.error();
  auto st = std::make_shared<impl>(rt, cfg, sec);
  auto where = cfg.binary.listen;
  try {
    if (!cfg.gateway.tls_cert_file.empty())
      if (auto err = load_tls_files(st->tls.emplace(asio::ssl::context::tls_server), "gateway",
                                    {cfg.gateway.tls_cert_file, cfg.gateway.tls_key_file, {}}))
        return err;
    st->ioc.emplace(static_cast<int>(cfg.binary.threads));
    auto& acc = st->acceptor.emplace(*st->ioc);
    auto bound = open_listener(*st->ioc, acc, ep_cfg->host, ep_cfg->port, "binary.listen");
    if (!bound)
      return bound.error();
    st->port = *bound;
    st->address = ep_cfg->host + ':' + std::to_string(st->port);
    st->work.emplace(st->ioc->get_executor());
    st->do_accept();
    std::unique_ptr<binary_gateway> gw{new binary_gateway(st)};
    run_threads(*st->ioc, cfg.binary.threads, st->threads, "binary_handler_failed");
    log::event(
      spdlog::level::info, "binary_listening",
      {{"address", st->address}, {"threads", cfg.binary.threads}, {"tls", st->tls.has_value()}});
    return gw;
  } catch (const std::exception& ex) {
    return make_error(errc::io_error,
                      "cannot start the binary listener on " + where + ": "
                        + std::string{ex.what()});
  }
}

binary_gateway::~binary_gateway() {
  if (!impl_)
    return;
  stop_accepting();
  impl_->gate->close();
  impl_->work.reset();
  impl_->ioc->stop();
  for (auto& t : impl_->threads) {
    assert(t.get_id() != std::this_thread::get_id());
    if (t.joinable())
      t.join();
  }
  {
    std::lock_guard<std::mutex> guard{impl_->acceptor_mtx};
    impl_->acceptor.reset();
  }
  impl_->ioc.reset();
  assert(impl_->connections.load() == 0);
  log::event(spdlog::level::info, "binary_stopped", {{"address", impl_->address}});
}

uint16_t binary_gateway::port() const noexcept {
  return impl_->port;
}

void binary_gateway::set_cluster(cluster* c) noexcept {
  impl_->cluster_view.store(c);
}

void binary_gateway::stop_accepting() {
  if (impl_->not_accepting.exchange(true))
    return;
  std::lock_guard<std::mutex> guard{impl_->acceptor_mtx};
  if (impl_->acceptor && impl_->acceptor->is_open()) {
    boost::system::error_code ec;
    impl_->acceptor->close(ec);
  }
}

bool binary_gateway::drain(milliseconds max) {
  return impl_->in_flight.wait_idle(max);
}

size_t binary_gateway::connections() const noexcept {
  return impl_->connections.load();
}

} // namespace hive
