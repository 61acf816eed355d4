#include "actors/gateway.hpp"

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <nlohmann/json.hpp>

#include "actors/auth.hpp"
#include "actors/http_parse.hpp"
#include "actors/json_check.hpp"
#include "actors/listener.hpp"
#include "actors/llm_agent.hpp"
#include "actors/post_gate.hpp"
#include "protocols/agent_id.hpp"
#include "protocols/errc.hpp"
#include "protocols/messages.hpp"
#include "runtime/cluster.hpp"
#include "runtime/events.hpp"
#include "runtime/logging.hpp"
#include "runtime/node_runtime.hpp"
#include "runtime/tls.hpp"

namespace hive {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

/// Extra time the gateway waits beyond a runtime call's own deadline before it answers 504
/// itself (the runtime normally reports the timeout first).
constexpr milliseconds guard_grace{1000};

/// How long a connection we are closing may keep sending before we drop it (lingering close:
/// reading what the client still sends keeps the kernel from resetting the connection before
/// the client read our last response).
constexpr milliseconds linger_time_max{1000};

/// Bytes a lingering connection may still send us.
constexpr size_t linger_bytes_max = 4 << 20;

/// Largest accepted `gateway.threads`.
constexpr int64_t threads_max = 256;

/// Value of the `Server` header.
constexpr std::string_view server_name = "hive-gateway";

// -- small helpers ------------------------------------------------------------------------------

/// Converts Beast's (Boost) string_view.
std::string_view std_sv(beast::string_view x) {
  return {x.data(), x.size()};
}

/// Converts to Beast's (Boost) string_view.
beast::string_view beast_sv(std::string_view x) {
  return {x.data(), x.size()};
}

/// Serializes JSON, replacing invalid UTF-8 (user input may hold any bytes) instead of throwing.
std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// Maps an error code to its HTTP status.
http::status status_of(errc code) {
  switch (code) {
    case errc::invalid_argument:
    case errc::invalid_agent_id:
    case errc::unknown_kind:
    case errc::invalid_config: return http::status::bad_request;
    case errc::agent_not_found:
    case errc::not_found: return http::status::not_found;
    case errc::quota_exceeded: return http::status::forbidden;
    case errc::unauthenticated: return http::status::unauthorized;
    case errc::forbidden: return http::status::forbidden;
    case errc::rate_limited: return http::status::too_many_requests;
    case errc::agent_exists:
    case errc::conflict: return http::status::conflict;
    case errc::storage_full: return http::status::insufficient_storage;
    case errc::too_large: return http::status::payload_too_large;
    case errc::rejected: return http::status::unprocessable_entity;
    case errc::storage_error:
    case errc::corrupt_record:
    case errc::migrated:
    case errc::fenced:
    case errc::no_quorum:
    case errc::unavailable:
    case errc::overloaded:
    case errc::circuit_open:
    case errc::shutting_down:
    case errc::agent_failed:
    case errc::escalated: return http::status::service_unavailable;
    case errc::timeout: return http::status::gateway_timeout;
    default: return http::status::internal_server_error;
  }
}

/// The route templates, also the `route` label of the request metrics.
enum class route_id {
  healthz,
  readyz,
  agents,
  agent,
  tell,
  ask,
  migrate,
  backup,
  cluster_nodes,
  keys,
  key,
  openapi,
  events,
  capabilities,
  broadcast,
  workflows,
  workflow,
  workflow_op
};

/// Every route, for `gateway::routes()`.
constexpr route_id all_routes[] = {
  route_id::healthz,       route_id::readyz,       route_id::agents,    route_id::agent,
  route_id::tell,          route_id::ask,          route_id::migrate,   route_id::backup,
  route_id::cluster_nodes, route_id::keys,         route_id::key,       route_id::openapi,
  route_id::events,        route_id::capabilities, route_id::workflows, route_id::workflow,
  route_id::workflow_op,   route_id::broadcast};

std::string_view path_template(route_id r) {
  switch (r) {
    case route_id::healthz: return "/healthz";
    case route_id::readyz: return "/readyz";
    case route_id::agents: return "/v1/agents";
    case route_id::agent: return "/v1/agents/{id}";
    case route_id::tell: return "/v1/agents/{id}/tell";
    case route_id::ask: return "/v1/agents/{id}/ask";
    case route_id::migrate: return "/v1/agents/{id}/migrate";
    case route_id::backup: return "/v1/admin/backup";
    case route_id::cluster_nodes: return "/v1/cluster/nodes";
    case route_id::keys: return "/v1/keys";
    case route_id::key: return "/v1/keys/{id}";
    case route_id::openapi: return "/v1/openapi.json";
    case route_id::events: return "/v1/events";
    case route_id::capabilities: return "/v1/capabilities/{name}";
    case route_id::broadcast: return "/v1/capabilities/{name}/broadcast";
    case route_id::workflows: return "/v1/workflows";
    case route_id::workflow: return "/v1/workflows/{id}";
    case route_id::workflow_op: return "/v1/workflows/{id}/{op}";
  }
  return "?";
}

std::string_view allowed_methods(route_id r) {
  switch (r) {
    case route_id::agents:
    case route_id::keys: return "GET, POST";
    case route_id::agent: return "GET, DELETE";
    case route_id::key: return "DELETE";
    case route_id::cluster_nodes:
    case route_id::workflow: return "GET";
    case route_id::tell:
    case route_id::ask:
    case route_id::migrate:
    case route_id::workflows:
    case route_id::workflow_op:
    case route_id::broadcast:
    case route_id::backup: return "POST";
    default: return "GET";
  }
}

bool method_allowed(route_id r, http::verb v) {
  switch (r) {
    case route_id::agents:
    case route_id::keys: return v == http::verb::get || v == http::verb::post;
    case route_id::agent: return v == http::verb::get || v == http::verb::delete_;
    case route_id::key: return v == http::verb::delete_;
    case route_id::cluster_nodes:
    case route_id::workflow: return v == http::verb::get;
    case route_id::tell:
    case route_id::ask:
    case route_id::migrate:
    case route_id::workflows:
    case route_id::workflow_op:
    case route_id::broadcast:
    case route_id::backup: return v == http::verb::post;
    default: return v == http::verb::get;
  }
}

/// The least role a request needs (the permission table in gateway.hpp). Tenant scoping is
/// checked separately, against the agent or key the request names.
role required_role(route_id r, http::verb v) {
  switch (r) {
    case route_id::healthz:
    case route_id::readyz:
    case route_id::cluster_nodes:
    case route_id::openapi:
    case route_id::events:
    case route_id::workflow:
    case route_id::capabilities: return role::viewer;
    case route_id::agents:
    case route_id::agent: return v == http::verb::get ? role::viewer : role::operator_;
    case route_id::tell:
    case route_id::ask:
    case route_id::workflows:
    case route_id::workflow_op:
    case route_id::broadcast:
    case route_id::keys:
    case route_id::key: return role::operator_;
    case route_id::migrate:
    case route_id::backup: return role::admin;
  }
  return role::admin;
}

/// Whether a request on `r` changes state outside an agent's own message handling: those are
/// written to the audit log whatever their outcome.
bool audited(route_id r, http::verb v) {
  switch (r) {
    case route_id::agents:
    case route_id::keys: return v == http::verb::post;
    case route_id::agent:
    case route_id::key: return v == http::verb::delete_;
    case route_id::migrate:
    case route_id::workflows:
    case route_id::workflow_op:
    case route_id::backup: return true;
    default: return false;
  }
}

bool is_http_protocol_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category();
}

} // namespace

// -- shared state -----------------------------------------------------------------------------

struct gateway::impl {
  impl(node_runtime& runtime, const node_config::gateway_section& config, security& security)
      : rt(runtime), cfg(config), sec(security), gate(std::make_shared<post_gate>()) {}

  node_runtime& rt;
  const node_config::gateway_section cfg;
  security& sec;
  std::shared_ptr<post_gate> gate;
  std::optional<asio::io_context> ioc;
  /// Set when the gateway serves HTTPS (`gateway.tls_cert_file`, `gateway.tls_key_file`).
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

  /// True while `/readyz` should answer 200.
  [[nodiscard]] bool ready() const {
    return !not_accepting.load() && !rt.stopping();
  }

  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
};

namespace {

// -- one connection ---------------------------------------------------------------------------

/// What an event stream consumer asked for (empty: any).
struct event_filter {
  std::string tenant;
  std::string agent;
  std::string kind;

  [[nodiscard]] bool matches(const agent_event& e) const {
    return (tenant.empty() || e.tenant() == tenant) && (agent.empty() || e.agent == agent)
      && (kind.empty() || e.kind == kind);
  }
};

/// WebSocket close code for a consumer that fell `events_buffer_max` events behind.
constexpr uint16_t close_too_slow = 4008;

/// One `GET /v1/events` consumer: every matching event as one text message. Events wait in a
/// queue of at most `gateway.events_buffer_max`; one more closes the stream with code 4008
/// (the socket is closed outright if the close frame cannot be sent within a second).
template <class Stream>
class event_session : public std::enable_shared_from_this<event_session<Stream>> {
public:
  event_session(gateway::impl& gw, Stream&& stream, bool counted, event_filter f)
      : gw_(gw), ws_(std::move(stream)), timer_(ws_.get_executor()), counted_(counted),
        filter_(std::move(f)) {}

  ~event_session() {
    unsubscribe();
    if (counted_)
      gw_.connections.fetch_sub(1);
  }

  event_session(const event_session&) = delete;
  event_session& operator=(const event_session&) = delete;

  [[nodiscard]] asio::any_io_executor executor() {
    return ws_.get_executor();
  }

  void run(http::request<http::string_body> req) {
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(http::field::server, beast_sv(server_name)); }));
    ws_.read_message_max(4096);
    ws_.async_accept(req, [self = this->shared_from_this()](beast::error_code ec) {
      if (ec)
        return self->finish();
      self->subscribe();
      self->do_read();
    });
  }

  void enqueue(const std::string& text) {
    if (done_ || closing_)
      return;
    if (queue_.size() >= static_cast<size_t>(gw_.cfg.events_buffer_max)) {
      log::event(spdlog::level::warn, "event_consumer_too_slow",
                 {{"events_buffer_max", gw_.cfg.events_buffer_max}, {"tenant", filter_.tenant}});
      return close_slow();
    }
    queue_.push_back(text);
    if (!writing_)
      write_next();
  }

private:
  void subscribe() {
    auto weak = this->weak_from_this();
    auto gate = gw_.gate;
    auto f = filter_;
    sub_ = gw_.rt.metrics().events().subscribe(
      [weak, gate, f](const agent_event& e, const std::string& text) {
        if (f.matches(e))
          gate->post(weak, [text](event_session& s) { s.enqueue(text); });
      });
  }

  void unsubscribe() {
    if (sub_ != 0)
      gw_.rt.metrics().events().unsubscribe(sub_);
    sub_ = 0;
  }

  void write_next() {
    if (queue_.empty() || closing_) {
      writing_ = false;
      return;
    }
    writing_ = true;
    ws_.text(true);
    ws_.async_write(asio::buffer(queue_.front()),
                    [self = this->shared_from_this()](beast::error_code ec, size_t) {
                      if (ec)
                        return self->finish();
                      self->queue_.pop_front();
                      self->write_next();
                    });
  }

  /// Client frames are read (and dropped) so that pings and the close handshake work.
  void do_read() {
    ws_.async_read(in_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec)
        return self->finish();
      self->in_.consume(self->in_.size());
      self->do_read();
    });
  }

  void close_slow() {
    closing_ = true;
    unsubscribe();
    timer_.expires_after(std::chrono::seconds(1));
    timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (!ec)
        self->finish();
    });
    ws_.async_close(websocket::close_reason{static_cast<websocket::close_code>(close_too_slow),
                                            "consumer too slow: more than "
                                            "gateway.events_buffer_max events queued"},
                    [self = this->shared_from_this()](beast::error_code) { self->finish(); });
  }

  /// Ends the stream: no more events, the socket closed.
  void finish() {
    if (done_)
      return;
    done_ = true;
    unsubscribe();
    timer_.cancel();
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws_).close();
  }

  gateway::impl& gw_;
  websocket::stream<Stream> ws_;
  asio::steady_timer timer_;
  bool counted_;
  event_filter filter_;
  uint64_t sub_ = 0;
  /// Events not yet written; the front one is being written while `writing_`.
  std::deque<std::string> queue_;
  beast::flat_buffer in_;
  bool writing_ = false;
  bool closing_ = false;
  bool done_ = false;
};

/// One connection. `Stream` is `beast::tcp_stream` (HTTP) or
/// `beast::ssl_stream<beast::tcp_stream>` (HTTPS: the TLS handshake comes first, within
/// `idle_timeout_ms`).
template <class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
public:
  static constexpr bool is_tls = !std::is_same_v<Stream, beast::tcp_stream>;

  session(gateway::impl& gw, Stream&& stream, bool counted)
      : gw_(gw), stream_(std::move(stream)), guard_(stream_.get_executor()), counted_(counted) {
    if (counted_)
      gw_.connections.fetch_add(1);
  }

  ~session() {
    if (busy_)
      gw_.end_request();
    if (counted_)
      gw_.connections.fetch_sub(1);
  }

  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// The strand all of this connection's work runs on.
  [[nodiscard]] asio::any_io_executor executor() {
    return stream_.get_executor();
  }

  /// Serves requests until the client closes, times out or errs.
  void start() {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      self->handshake_then([](session& s) { s.do_read(); });
    });
  }

  /// Answers 503 (connection limit) and closes.
  void refuse() {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      self->handshake_then([](session& s) { s.refuse_now(); });
    });
  }

private:
  /// The TCP layer under TLS (or the stream itself).
  beast::tcp_stream& lowest() {
    return beast::get_lowest_layer(stream_);
  }

  /// Runs `next(*this)` after the TLS handshake (at once for plain HTTP). A failed or slow
  /// handshake closes the connection without an answer.
  template <class Next>
  void handshake_then(Next next) {
    if constexpr (is_tls) {
      lowest().expires_after(milliseconds{gw_.cfg.idle_timeout_ms});
      stream_.async_handshake(
        asio::ssl::stream_base::server,
        [self = this->shared_from_this(), next](beast::error_code ec) {
          if (ec) {
            if (log::enabled(spdlog::level::debug))
              log::event(spdlog::level::debug, "tls_handshake_failed", {{"reason", ec.message()}});
            return self->close_now();
          }
          next(*self);
        });
    } else {
      next(*this);
    }
  }

  void refuse_now() {
    new_exchange("refused");
    close_after_ = true;
    reply_error(http::status::service_unavailable, errc::overloaded,
                "connection limit gateway.connections_max ("
                  + std::to_string(gw_.cfg.connections_max) + ") reached");
  }

  // -- reading --------------------------------------------------------------------------------

  void do_read() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(gw_.cfg.header_bytes_max));
    parser_->body_limit(static_cast<uint64_t>(gw_.cfg.body_bytes_max));
    // One deadline for the whole request (headers and body), also the keep-alive idle time.
    lowest().expires_after(milliseconds{gw_.cfg.idle_timeout_ms});
    http::async_read_header(
      stream_, buffer_, *parser_,
      beast::bind_front_handler(&session::on_header, this->shared_from_this()));
  }

  void on_header(beast::error_code ec, size_t) {
    if (ec)
      return on_read_error(ec);
    auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      continue_res_ = {};
      continue_res_.version(req.version());
      continue_res_.result(http::status::continue_);
      http::async_write(stream_, continue_res_,
                        [self = this->shared_from_this()](beast::error_code wec, size_t) {
                          if (wec)
                            return self->close_now();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&session::on_read, this->shared_from_this()));
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::header_limit || ec == http::error::body_limit) {
      new_exchange("too_large");
      close_after_ = true;
      if (parser_ && parser_->is_header_done()) {
        method_ = std::string{std_sv(parser_->get().method_string())};
        target_ = std::string{std_sv(parser_->get().target())};
      }
      auto what = ec == http::error::header_limit
        ? "request headers exceed gateway.header_bytes_max ("
          + std::to_string(gw_.cfg.header_bytes_max) + " bytes)"
        : "request body exceeds gateway.body_bytes_max (" + std::to_string(gw_.cfg.body_bytes_max)
          + " bytes)";
      return reply_error(http::status::payload_too_large, errc::too_large, std::move(what));
    }
    if (is_http_protocol_error(ec) && ec != http::error::end_of_stream
        && ec != http::error::partial_message) {
      new_exchange("malformed");
      close_after_ = true;
      return reply_error(http::status::bad_request, "bad_request",
                         "malformed HTTP request: " + ec.message());
    }
    // End of stream, idle timeout, reset: nothing to answer.
    if (ec == beast::error::timeout && log::enabled(spdlog::level::debug))
      log::event(spdlog::level::debug, "http_idle_timeout",
                 {{"idle_timeout_ms", gw_.cfg.idle_timeout_ms}});
    close_now();
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec)
      return on_read_error(ec);
    lowest().expires_never();
    new_exchange("unmatched");
    busy_ = true;
    gw_.begin_request();
    auto req = parser_->release();
    parser_.reset();
    handle(std::move(req));
  }

  /// Resets the per-request state.
  void new_exchange(std::string route) {
    ++seq_;
    started_ = steady_clock::now();
    route_ = std::move(route);
    method_.clear();
    target_.clear();
    actor_.clear();
    client_id_.clear();
    client_seq_ = 0;
    cid_ = random_cid();
    version_ = 11;
    keep_alive_ = false;
    waiting_ = false;
    principal_.reset();
    audit_ = false;
    audit_target_.clear();
    retry_after_s_ = 1;
    code_.clear();
  }

  // -- routing --------------------------------------------------------------------------------

  void handle(http::request<http::string_body>&& req) {
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    method_ = std::string{std_sv(req.method_string())};
    target_ = std::string{std_sv(req.target())};
    if (auto hdr = req.find("X-Correlation-Id"); hdr != req.end()) {
      auto cid = parse_cid(std_sv(hdr->value()));
      if (!cid)
        return reply_error(http::status::bad_request, errc::invalid_argument,
                           "header X-Correlation-Id must be 1..16 hex digits and not 0, got '"
                             + std::string{std_sv(hdr->value())} + "'");
      cid_ = *cid;
    }
    if (auto hdr = req.find("Idempotency-Key"); hdr != req.end()) {
      auto key = parse_idempotency_key(std_sv(hdr->value()));
      if (!key)
        return reply_error(key.error());
      client_id_ = std::move(key->first);
      client_seq_ = key->second;
    }
    std::string_view target = std_sv(req.target());
    auto qpos = target.find('?');
    auto path = target.substr(0, qpos);
    auto query = qpos == std::string_view::npos ? std::string_view{} : target.substr(qpos + 1);
    if (path.empty() || path.front() != '/')
      return not_found("no route for '" + std::string{path} + "'");
    auto segs = split(path.substr(1), '/');
    // Decoded segments.
    std::vector<std::string> parts;
    for (auto s : segs) {
      auto d = percent_decode(s, false);
      if (!d)
        return reply_error(http::status::bad_request, errc::invalid_argument,
                           "path '" + std::string{path} + "' has a bad %-escape");
      parts.push_back(std::move(*d));
    }
    // Every route but the probes needs credentials: checked before routing, so that an
    // anonymous caller learns nothing about which paths exist.
    bool probe = parts.size() == 1 && (parts[0] == "healthz" || parts[0] == "readyz");
    if (!probe) {
      auto who = gw_.sec.authenticate(std_sv(req[http::field::authorization]));
      if (!who)
        return reply_error(who.error());
      principal_ = std::move(*who);
      auto wait_ms = gw_.sec.limiter().admit(principal_->tenant, steady_clock::now());
      if (wait_ms > 0) {
        retry_after_s_ = (wait_ms + 999) / 1000;
        auto& q = gw_.sec.quota();
        return reply_error(make_error(
          errc::rate_limited,
          "tenant '" + principal_->tenant + "' exceeds quota.requests_per_s = "
            + std::to_string(q.requests_per_s) + " (quota.burst_requests = "
            + std::to_string(q.burst_requests) + "); retry in " + std::to_string(wait_ms) + " ms"));
      }
    }
    std::optional<route_id> route;
    if (parts.size() == 1 && parts[0] == "healthz")
      route = route_id::healthz;
    else if (parts.size() == 1 && parts[0] == "readyz")
      route = route_id::readyz;
    else if (parts.size() == 3 && parts[0] == "v1" && parts[1] == "admin" && parts[2] == "backup")
      route = route_id::backup;
    else if (parts.size() == 3 && parts[0] == "v1" && parts[1] == "cluster" && parts[2] == "nodes")
      route = route_id::cluster_nodes;
    else if (parts.size() == 2 && parts[0] == "v1" && parts[1] == "keys")
      route = route_id::keys;
    else if (parts.size() == 2 && parts[0] == "v1" && parts[1] == "openapi.json")
      route = route_id::openapi;
    else if (parts.size() == 2 && parts[0] == "v1" && parts[1] == "events")
      route = route_id::events;
    else if (parts.size() == 3 && parts[0] == "v1" && parts[1] == "keys")
      route = route_id::key;
    else if (parts.size() == 3 && parts[0] == "v1" && parts[1] == "capabilities")
      route = route_id::capabilities;
    else if (parts.size() == 4 && parts[0] == "v1" && parts[1] == "capabilities"
             && parts[3] == "broadcast")
      route = route_id::broadcast;
    else if (parts.size() == 2 && parts[0] == "v1" && parts[1] == "workflows")
      route = route_id::workflows;
    else if (parts.size() >= 3 && parts[0] == "v1" && parts[1] == "workflows") {
      if (parts.size() == 4)
        route = route_id::workflow;
      else if (parts.size() == 5
               && (parts[4] == "pause" || parts[4] == "resume" || parts[4] == "cancel"))
        route = route_id::workflow_op;
      else if (parts.size() == 3)
        return not_found(
          "no route for '" + std::string{path}
          + "' (workflow ids have the form tenant/name: /v1/workflows/{tenant}/{name})");
      else if (parts.size() == 5)
        return not_found("no workflow operation '" + parts[4] + "' (pause, resume, cancel)");
    } else if (parts.size() >= 2 && parts[0] == "v1" && parts[1] == "agents") {
      if (parts.size() == 2)
        route = route_id::agents;
      else if (parts.size() == 4)
        route = route_id::agent;
      else if (parts.size() == 5 && parts[4] == "tell")
        route = route_id::tell;
      else if (parts.size() == 5 && parts[4] == "ask")
        route = route_id::ask;
      else if (parts.size() == 5 && parts[4] == "migrate")
        route = route_id::migrate;
      else if (parts.size() == 3)
        return not_found("no route for '" + std::string{path}
                         + "' (agent ids have the form tenant/name: /v1/agents/{tenant}/{name})");
    }
    if (!route)
      return not_found("no route for '" + std::string{path} + "'");
    if (!method_allowed(*route, req.method())) {
      route_ = "* " + std::string{path_template(*route)};
      return reply_error(http::status::method_not_allowed, "method_not_allowed",
                         "method " + method_ + " is not allowed on "
                           + std::string{path_template(*route)}
                           + " (allowed: " + std::string{allowed_methods(*route)} + ")",
                         allowed_methods(*route));
    }
    route_ = std::string{std_sv(req.method_string())} + ' ' + std::string{path_template(*route)};
    audit_ = audited(*route, req.method());
    if (principal_)
      if (auto err = authorize(*principal_, required_role(*route, req.method()), {}, route_))
        return reply_error(err);
    std::optional<agent_id> id;
    if (parts.size() >= 4) {
      auto parsed = make_agent_id(parts[2], parts[3]);
      if (!parsed)
        return reply_error(parsed.error());
      id = std::move(*parsed);
      actor_ = id->str();
      if (auto err = authorize(*principal_, role::viewer, id->tenant, route_))
        return reply_error(err);
    }
    switch (*route) {
      case route_id::healthz:
        if (auto err = no_query(query))
          return reply_error(err);
        return reply_json(http::status::ok, R"({"status":"ok"})");
      case route_id::readyz:
        if (auto err = no_query(query))
          return reply_error(err);
        if (!gw_.ready())
          return reply_error(http::status::service_unavailable, errc::shutting_down,
                             "node is shutting down");
        return reply_json(http::status::ok, R"({"status":"ready"})");
      case route_id::agents:
        if (req.method() == http::verb::post)
          return spawn(query, req.body());
        return list(query);
      case route_id::agent:
        if (auto err = no_query(query))
          return reply_error(err);
        if (req.method() == http::verb::get)
          return inspect(*id);
        return stop(*id);
      case route_id::tell: return tell(*id, query, std::move(req.body()));
      case route_id::ask: return ask(*id, query, std::move(req.body()));
      case route_id::migrate:
        if (auto err = no_query(query))
          return reply_error(err);
        return migrate(*id, req.body());
      case route_id::backup: return backup(query, req.body());
      case route_id::cluster_nodes:
        if (auto err = no_query(query))
          return reply_error(err);
        return cluster_nodes();
      case route_id::keys:
        if (req.method() == http::verb::post)
          return create_key(query, req.body());
        return list_keys(query);
      case route_id::key:
        if (auto err = no_query(query))
          return reply_error(err);
        return revoke_key(parts[2]);
      case route_id::openapi:
        if (auto err = no_query(query))
          return reply_error(err);
        return reply_json(http::status::ok, std::string{gateway::openapi_json()});
      case route_id::events: return events(query, std::move(req));
      case route_id::capabilities: return capability_providers(parts[2], query);
      case route_id::broadcast: return broadcast(parts[2], query, req.body());
      case route_id::workflows: return create_workflow(query, req.body());
      case route_id::workflow:
        if (auto err = no_query(query))
          return reply_error(err);
        return workflow_call(*id, "status");
      case route_id::workflow_op:
        if (auto err = no_query(query))
          return reply_error(err);
        if (auto err = authorize(*principal_, role::operator_, id->tenant, route_))
          return reply_error(err);
        return workflow_call(*id, parts[4]);
    }
  }

  /// The `limit` query parameter of a listing: a positive integer, capped at
  /// `gateway.page_size_max`; 100 (or that cap) when absent.
  caf::expected<size_t> page_limit(const query_map& q) const {
    auto page_max = static_cast<size_t>(gw_.cfg.page_size_max);
    auto i = q.find("limit");
    if (i == q.end())
      return std::min<size_t>(100, page_max);
    auto n = parse_int(i->second);
    if (!n || *n < 1)
      return make_error(errc::invalid_argument,
                        "query parameter 'limit' must be a positive integer, got '" + i->second
                          + "'");
    return std::min(static_cast<size_t>(*n), page_max);
  }

  /// The tenant a listing covers: the `tenant` query parameter, validated (empty when absent:
  /// every tenant), for an admin; the caller's own tenant for anyone else (naming another one
  /// is forbidden). Listings never show another tenant's agents.
  caf::expected<std::string> listing_tenant(const query_map& q) const {
    std::string tenant;
    if (auto i = q.find("tenant"); i != q.end() && !i->second.empty()) {
      if (auto err = validate_id_part(i->second, "tenant", tenant_bytes_max))
        return make_error(errc::invalid_argument, "query parameter 'tenant': " + message_of(err));
      tenant = i->second;
    }
    if (principal_->level == role::admin)
      return tenant;
    if (!tenant.empty())
      if (auto err = authorize(*principal_, role::viewer, tenant, route_))
        return err;
    return principal_->tenant;
  }

  /// `GET /v1/capabilities/{name}?tenant=&limit=`: the agents that offer `name`, cluster-wide,
  /// least loaded first. Non-admins see their own tenant's only.
  void capability_providers(const std::string& name, std::string_view query) {
    if (auto err = validate_capability(name, "path"))
      return reply_error(err);
    auto q = parse_query(query, {"tenant", "limit"});
    if (!q)
      return reply_error(q.error());
    auto limit_arg = page_limit(*q);
    if (!limit_arg)
      return reply_error(limit_arg.error());
    auto limit = *limit_arg;
    auto tenant_arg = listing_tenant(*q);
    if (!tenant_arg)
      return reply_error(tenant_arg.error());
    auto tenant = std::move(*tenant_arg);
    auto reply = [name](session& s, nlohmann::json& res) {
      res["capability"] = name;
      s.reply_json(http::status::ok, dump(res));
    };
    if (auto* c = gw_.cluster_view.load())
      return c->providers(name, tenant, limit, default_timeout(),
                          bind_reply<nlohmann::json>(default_guard(), reply));
    auto list = nlohmann::json::array();
    for (auto& p : gw_.rt.providers(name, tenant, limit))
      list.push_back(to_json(p));
    reply_json(http::status::ok,
               dump(nlohmann::json{{"capability", name},
                                   {"providers", std::move(list)},
                                   {"nodes_failed", nlohmann::json::array()}}));
  }

  /// `POST /v1/capabilities/{name}/broadcast?tenant=` `{"message":M,"filter":{...}}`: sends M
  /// one way to every provider of `name` in the tenant (the caller's; an admin names one with
  /// `?tenant=`) that passes the filter (runtime/capabilities.hpp `broadcast_filter`), cluster-
  /// wide. 202 `{"capability","sent_to":[ids],"nodes_failed":[...]}`.
  void broadcast(const std::string& name, std::string_view query, const std::string& body) {
    if (auto err = validate_capability(name, "path"))
      return reply_error(err);
    auto q = parse_query(query, {"tenant"});
    if (!q)
      return reply_error(q.error());
    auto tenant_arg = listing_tenant(*q);
    if (!tenant_arg)
      return reply_error(tenant_arg.error());
    auto tenant = std::move(*tenant_arg);
    if (tenant.empty())
      return reply_error(http::status::bad_request, errc::invalid_argument,
                         "a broadcast goes to one tenant: name it with ?tenant=");
    if (auto err = authorize(*principal_, role::operator_, tenant, route_))
      return reply_error(err);
    if (auto err = check_message_size(body))
      return reply_error(err);
    if (auto err = check_json(body, static_cast<size_t>(gw_.cfg.json_depth_max)))
      return reply_error(err);
    auto parsed = nlohmann::json::parse(body, nullptr, false);
    if (!parsed.is_object() || !parsed.contains("message"))
      return bad_field("body must be an object with a field 'message' (and optionally 'filter')");
    for (auto& [key, _] : parsed.items())
      if (key != "message" && key != "filter")
        return bad_field("unknown field '" + key.substr(0, 40) + "' (allowed: message, filter)");
    auto filter = broadcast_filter::parse(parsed.value("filter", nlohmann::json{}));
    if (!filter)
      return reply_error(filter.error());
    auto text = parsed["message"].dump();
    auto send = [tenant, name, f = std::move(*filter), text = std::move(text),
                 cid = cid_](session& s, nlohmann::json& res) {
      auto sent = nlohmann::json::array();
      auto* c = s.gw_.cluster_view.load();
      for (auto& id : f.select(res)) {
        agent_call call{envelope{cid, tenant, 0, "gateway", {}, 0}, text};
        auto err = c != nullptr ? c->send(id, std::move(call)) : s.gw_.rt.tell(id, call);
        if (err) {
          log::event(spdlog::level::warn, "broadcast_send_failed",
                     {{"to", id.str()}, {"reason", describe(err)}}, "gateway", cid);
          continue;
        }
        sent.push_back(id.str());
      }
      s.reply_json(
        http::status::accepted,
        dump(nlohmann::json{{"capability", name},
                            {"sent_to", std::move(sent)},
                            {"nodes_failed", res.value("nodes_failed", nlohmann::json::array())}}));
    };
    if (auto* c = gw_.cluster_view.load())
      return c->providers(name, tenant, broadcast_recipients_max, default_timeout(),
                          bind_reply<nlohmann::json>(default_guard(), std::move(send)));
    auto list = nlohmann::json::array();
    for (auto& p : gw_.rt.providers(name, tenant, broadcast_recipients_max))
      list.push_back(to_json(p));
    nlohmann::json res{{"providers", std::move(list)}, {"nodes_failed", nlohmann::json::array()}};
    send(*this, res);
  }

  // -- the event stream -----------------------------------------------------------------------

  /// `GET /v1/events?tenant=&agent=&kind=` with a WebSocket upgrade: hands the connection to
  /// an `event_session`.
  void events(std::string_view query, http::request<http::string_body>&& req) {
    auto q = parse_query(query, {"tenant", "agent", "kind"});
    if (!q)
      return reply_error(q.error());
    if (!websocket::is_upgrade(req))
      return reply_error(http::status::bad_request, errc::invalid_argument,
                         "GET /v1/events is a WebSocket: send 'Connection: Upgrade' and "
                         "'Upgrade: websocket'");
    event_filter f;
    if (auto i = q->find("tenant"); i != q->end() && !i->second.empty()) {
      if (auto err = validate_id_part(i->second, "tenant", tenant_bytes_max))
        return reply_error(
          make_error(errc::invalid_argument, "query parameter 'tenant': " + message_of(err)));
      f.tenant = i->second;
    }
    if (auto i = q->find("agent"); i != q->end() && !i->second.empty()) {
      auto id = parse_agent_id(i->second);
      if (!id)
        return reply_error(
          make_error(errc::invalid_argument, "query parameter 'agent': " + message_of(id.error())));
      f.agent = id->str();
      if (f.tenant.empty())
        f.tenant = id->tenant;
      else if (f.tenant != id->tenant)
        return reply_error(
          make_error(errc::invalid_argument, "query parameters 'agent' and 'tenant' disagree"));
    }
    if (auto i = q->find("kind"); i != q->end())
      f.kind = i->second;
    if (principal_->level != role::admin) {
      // Only the caller's tenant's events, ever.
      if (!f.tenant.empty())
        if (auto err = authorize(*principal_, role::viewer, f.tenant, route_))
          return reply_error(err);
      f.tenant = principal_->tenant;
    }
    auto secs = std::chrono::duration<double>(steady_clock::now() - started_).count();
    gw_.rt.metrics().gateway_request(route_, 101, secs);
    if (busy_) {
      busy_ = false;
      gw_.end_request();
    }
    guard_.cancel();
    // From here on the event session owns the connection (and counts it).
    auto counted = counted_;
    counted_ = false;
    std::make_shared<event_session<Stream>>(gw_, std::move(stream_), counted, std::move(f))
      ->run(std::move(req));
  }

  // -- API keys -------------------------------------------------------------------------------

  /// `POST /v1/keys {"tenant","role","name"}`: 201 with the key, shown this once.
  void create_key(std::string_view query, const std::string& body) {
    if (auto err = no_query(query))
      return reply_error(err);
    if (auto err = check_json(body, static_cast<size_t>(gw_.cfg.json_depth_max)))
      return reply_error(err);
    auto doc = nlohmann::json::parse(body, nullptr, false);
    if (!doc.is_object())
      return bad_field(
        R"(body must be {"tenant":"...","role":"admin|operator|viewer","name":"..."})");
    std::string tenant = principal_->tenant;
    std::optional<role> level;
    std::string name;
    for (auto& [k, v] : doc.items()) {
      if (k == "tenant") {
        if (!v.is_string())
          return bad_field("field 'tenant' must be a string");
        tenant = v.template get<std::string>();
      } else if (k == "role") {
        auto r = v.is_string() ? parse_role(v.template get<std::string>())
                               : caf::expected<role>{make_error(errc::invalid_argument, "")};
        if (!r)
          return bad_field(R"(field 'role' must be "admin", "operator" or "viewer")");
        level = *r;
      } else if (k == "name") {
        if (!v.is_string())
          return bad_field("field 'name' must be a string");
        name = v.template get<std::string>();
      } else {
        return bad_field("unknown field '" + k.substr(0, 64) + "' (allowed: tenant, role, name)");
      }
    }
    if (!level)
      return bad_field(R"(field 'role' is required ("admin", "operator" or "viewer"))");
    if (name.empty())
      return bad_field("field 'name' is required (1..64 bytes of A-Z a-z 0-9 '-' '_' '.')");
    if (*level > principal_->level)
      return reply_error(
        make_error(errc::forbidden,
                   principal_->subject + " has role " + std::string{to_string(principal_->level)}
                     + " and may not create a key of role " + std::string{to_string(*level)}));
    if (auto err = authorize(*principal_, role::operator_, tenant, route_))
      return reply_error(err);
    auto made = gw_.sec.keys().create(tenant, *level, name);
    if (!made)
      return reply_error(made.error());
    if (auto* c = gw_.cluster_view.load()) // every member has it a moment later
      c->state_changed();
    audit_target_ = made->first.id;
    log::event(spdlog::level::info, "api_key_created",
               {{"id", made->first.id},
                {"tenant", made->first.tenant},
                {"role", std::string{to_string(made->first.level)}},
                {"name", made->first.name},
                {"by", principal_->subject}},
               {}, cid_);
    reply_json(http::status::created,
               dump({{"id", made->first.id},
                     {"key", made->second},
                     {"tenant", made->first.tenant},
                     {"role", std::string{to_string(made->first.level)}},
                     {"name", made->first.name},
                     {"created_ms", made->first.created_ms}}),
               "/v1/keys/" + made->first.id);
  }

  /// `GET /v1/keys?tenant=`: the keys the caller may see (never their hashes).
  void list_keys(std::string_view query) {
    auto q = parse_query(query, {"tenant"});
    if (!q)
      return reply_error(q.error());
    std::string tenant;
    if (auto i = q->find("tenant"); i != q->end())
      tenant = i->second;
    if (principal_->level != role::admin) {
      if (!tenant.empty())
        if (auto err = authorize(*principal_, role::operator_, tenant, route_))
          return reply_error(err);
      tenant = principal_->tenant;
    }
    auto keys = nlohmann::json::array();
    for (auto& r : gw_.sec.keys().list(tenant))
      keys.push_back({{"id", r.id},
                      {"tenant", r.tenant},
                      {"role", std::string{to_string(r.level)}},
                      {"name", r.name},
                      {"created_ms", r.created_ms}});
    reply_json(http::status::ok, dump({{"keys", std::move(keys)}}));
  }

  /// `DELETE /v1/keys/{id}`: 204; the key stops working at once on this node.
  void revoke_key(const std::string& key_id) {
    audit_target_ = key_id.substr(0, 64);
    auto rec = gw_.sec.keys().find(key_id);
    if (!rec)
      return reply_error(
        make_error(errc::not_found,
                   "no API key with id '" + key_id.substr(0, 64) + "'"
                     + (key_id == "bootstrap" ? std::string{" (the key of auth.admin_key_file "
                                                            "is changed in that file)"}
                                              : std::string{})));
    if (auto err = authorize(*principal_, role::operator_, rec->tenant, route_))
      return reply_error(err);
    if (rec->level > principal_->level)
      return reply_error(
        make_error(errc::forbidden,
                   principal_->subject + " has role " + std::string{to_string(principal_->level)}
                     + " and may not revoke a key of role " + std::string{to_string(rec->level)}));
    if (auto err = gw_.sec.keys().revoke(key_id))
      return reply_error(err);
    if (auto* c = gw_.cluster_view.load())
      c->state_changed();
    log::event(spdlog::level::info, "api_key_revoked",
               {{"id", key_id}, {"tenant", rec->tenant}, {"by", principal_->subject}}, {}, cid_);
    reply_json(http::status::no_content, {});
  }

  /// `GET /v1/cluster/nodes`: the member list as this node sees it.
  void cluster_nodes() {
    nlohmann::json nodes = nlohmann::json::array();
    if (auto* c = gw_.cluster_view.load()) {
      for (auto& m : c->members())
        nodes.push_back(
          {{"name", m.name},
           {"address", m.address},
           {"gateway", m.gateway},
           {"transport", m.transport},
           {"status", m.status},
           {"incarnation", m.incarnation},
           {"agents", m.name == gw_.rt.node_name() ? gw_.rt.agent_count() : m.agents}});
    } else {
      nodes.push_back({{"name", gw_.rt.node_name()},
                       {"address", nullptr},
                       {"gateway", gw_.address},
                       {"status", "up"},
                       {"incarnation", 0},
                       {"agents", gw_.rt.agent_count()}});
    }
    reply_json(http::status::ok, nlohmann::json{{"nodes", std::move(nodes)}}.dump());
  }

  /// `POST /v1/admin/backup {"to":"/abs/dir"}`: an online, consistent copy of the store.
  void backup(std::string_view query, const std::string& body) {
    if (auto err = no_query(query))
      return reply_error(err);
    if (auto err = check_json(body, static_cast<size_t>(gw_.cfg.json_depth_max)))
      return reply_error(err);
    auto doc = nlohmann::json::parse(body, nullptr, false);
    if (!doc.is_object() || !doc.contains("to") || !doc["to"].is_string())
      return bad_field("body must be an object with a string field 'to' (an absolute path)");
    for (auto& [k, _] : doc.items())
      if (k != "to")
        return bad_field("unknown field '" + k.substr(0, 64) + "' (known: to)");
    auto dir = doc["to"].template get<std::string>();
    auto t0 = steady_clock::now();
    // The checkpoint flushes and syncs: it runs off the I/O thread, which keeps serving.
    auto done = bind_reply<caf::error>(
      milliseconds{gw_.cfg.ask_timeout_ms_max} + guard_grace,
      [dir, t0](session& s, caf::error& err) {
        if (err)
          return s.reply_error(err);
        auto ms = std::chrono::duration_cast<milliseconds>(steady_clock::now() - t0).count();
        s.reply_json(http::status::ok, dump({{"backup", dir}, {"elapsed_ms", ms}}));
      });
    gw_.rt.backup_async(dir, std::move(done));
  }

  caf::error no_query(std::string_view query) {
    auto q = parse_query(query, {});
    return q ? caf::error{} : std::move(q.error());
  }

  void not_found(std::string message) {
    route_ = "unmatched";
    reply_error(http::status::not_found, "route_not_found", std::move(message));
  }

  // -- handlers -------------------------------------------------------------------------------

  void spawn(std::string_view query, const std::string& body) {
    if (auto err = no_query(query))
      return reply_error(err);
    if (auto err = check_json(body, static_cast<size_t>(gw_.cfg.json_depth_max)))
      return reply_error(err);
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(body);
    } catch (const std::exception& ex) {
      return reply_error(make_error(errc::invalid_argument,
                                    std::string{"request body is not valid JSON: "} + ex.what()));
    }
    if (!doc.is_object())
      return reply_error(http::status::bad_request, errc::invalid_argument,
                         "request body must be a JSON object "
                         R"({"id":"tenant/name","kind":"...","config":{},"breaker":false})");
    spawn_request sr;
    std::string id_text;
    std::string node; // a pin: the node to spawn on (empty: placement decides)
    for (auto& [key, val] : doc.items()) {
      if (key == "id") {
        if (!val.is_string())
          return bad_field("field 'id' must be a string \"tenant/name\"");
        id_text = val.template get<std::string>();
      } else if (key == "kind") {
        if (!val.is_string())
          return bad_field("field 'kind' must be a string");
        sr.kind = val.template get<std::string>();
      } else if (key == "config") {
        if (!val.is_object())
          return bad_field("field 'config' must be a JSON object");
        sr.config = val;
      } else if (key == "breaker") {
        if (!val.is_boolean())
          return bad_field("field 'breaker' must be true or false");
        sr.breaker = val.template get<bool>();
      } else if (key == "restart") {
        auto rt = val.is_string()
          ? parse_restart_type(val.template get<std::string>())
          : caf::expected<restart_type>{make_error(errc::invalid_argument, "not a string")};
        if (!rt)
          return bad_field("field 'restart' must be \"permanent\", \"transient\" or "
                           "\"temporary\": "
                           + message_of(rt.error()));
        sr.restart = *rt;
      } else if (key == "node") {
        if (!val.is_string())
          return bad_field("field 'node' must be a node name (a string)");
        node = val.template get<std::string>();
      } else if (key == "capabilities") {
        if (!val.is_array())
          return bad_field("field 'capabilities' must be an array of capability names");
        for (auto& c : val) {
          if (!c.is_string())
            return bad_field("field 'capabilities' must be an array of capability names");
          sr.capabilities.push_back(c.template get<std::string>());
        }
        if (sr.capabilities.empty())
          return bad_field("field 'capabilities' is empty: leave it out for the kind's defaults");
      } else {
        return bad_field("unknown field '" + key
                         + "' (allowed: id, kind, config, breaker, restart, node, capabilities)");
      }
    }
    if (!doc.contains("id"))
      return bad_field("field 'id' is required (a string \"tenant/name\")");
    if (!doc.contains("kind"))
      return bad_field("field 'kind' is required (a registered agent kind)");
    spawn_as(id_text, std::move(sr), node, false);
  }

  /// A tenant's LLM token budget (`TENANT/llm-budget`, actors/llm_agent.hpp) is the admin's:
  /// an operator who could stop it (erasing what was spent) or spawn it (with another kind)
  /// could lift the tenant's budget. The runtime spawns it on first use.
  caf::error budget_guard(const agent_id& id, std::string_view what) const {
    if (id.name != llm_budget_agent_name || principal_->level == role::admin)
      return {};
    return make_error(errc::forbidden,
                      id.str() + " is the tenant's LLM token budget: only an admin may "
                        + std::string{what} + " it");
  }

  /// The end of both spawning routes: parses and authorizes `id_text` (role operator), spawns
  /// `sr` (on `node`, a pin; empty: placement) and answers 201 with a Location: an agent's
  /// `{"id","kind","node"}`, or a workflow's `{"id","node","status"}`.
  void spawn_as(const std::string& id_text, spawn_request sr, const std::string& node,
                bool workflow) {
    auto id = parse_agent_id(id_text);
    if (!id)
      return reply_error(id.error());
    actor_ = id->str();
    if (auto err = authorize(*principal_, role::operator_, id->tenant, route_))
      return reply_error(err);
    if (auto err = budget_guard(*id, "spawn"))
      return reply_error(err);
    sr.id = std::move(*id);
    sr.correlation_id = cid_;
    auto done = bind_reply<caf::expected<agent_view>>(
      default_guard(), [workflow](session& s, caf::expected<agent_view>& res) {
        if (!res)
          return s.reply_error(res.error());
        nlohmann::json out{{"id", res->id.str()}, {"node", res->node}};
        if (workflow)
          out["status"] = "running";
        else
          out["kind"] = res->kind;
        s.reply_json(http::status::created, dump(out),
                     std::string{workflow ? "/v1/workflows/" : "/v1/agents/"} + res->id.tenant + '/'
                       + res->id.name);
      });
    if (auto* c = gw_.cluster_view.load())
      return c->spawn(std::move(sr), node, std::move(done));
    if (!node.empty() && node != gw_.rt.node_name())
      return bad_field("field 'node' names '" + node + "', but this node ('" + gw_.rt.node_name()
                       + "') is not in a cluster");
    gw_.rt.spawn(std::move(sr), std::move(done));
  }

  /// `POST /v1/workflows`: spawns a `planner` agent (actors/planner.hpp) running the workflow
  /// of the body. `id` ("tenant/name") is optional: default the caller's tenant and a fresh
  /// name `wf-<16 hex>`.
  void create_workflow(std::string_view query, const std::string& body) {
    if (auto err = no_query(query))
      return reply_error(err);
    if (auto err = check_message_size(body))
      return reply_error(err);
    if (auto err = check_json(body, static_cast<size_t>(gw_.cfg.json_depth_max)))
      return reply_error(err);
    auto doc = nlohmann::json::parse(body, nullptr, false);
    if (!doc.is_object())
      return bad_field("request body must be a JSON object: a workflow {\"steps\":[...]} with an "
                       "optional \"id\":\"tenant/name\"");
    spawn_request sr;
    std::string id_text;
    if (auto i = doc.find("id"); i != doc.end()) {
      if (!i->is_string())
        return bad_field("field 'id' must be a string \"tenant/name\"");
      id_text = i->get<std::string>();
      doc.erase(i);
    } else {
      static thread_local std::mt19937_64 rng{std::random_device{}()};
      char name[32];
      std::snprintf(name, sizeof(name), "wf-%016llx", static_cast<unsigned long long>(rng()));
      id_text = principal_->tenant == "*" ? std::string{} : principal_->tenant + "/" + name;
      if (id_text.empty())
        return bad_field("an admin key of every tenant must name the workflow: "
                         "\"id\":\"tenant/name\"");
    }
    sr.kind = "planner";
    sr.config = std::move(doc);
    spawn_as(id_text, std::move(sr), {}, true);
  }

  /// `GET /v1/workflows/{id}` (op status) and `POST /v1/workflows/{id}/{pause|resume|cancel}`:
  /// the planner agent's answer.
  void workflow_call(const agent_id& id, const std::string& op) {
    auto timeout = default_timeout();
    auto now_ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
    agent_call call{envelope{cid_, id.tenant, now_ms + timeout.count(), "gateway", {}, 0},
                    nlohmann::json{{"op", op}}.dump()};
    auto done = bind_reply<caf::expected<std::string>>(
      default_guard(), [](session& s, caf::expected<std::string>& res) {
        if (!res)
          return s.reply_error(res.error());
        s.reply_json(http::status::ok, std::move(*res));
      });
    if (auto* c = gw_.cluster_view.load())
      return c->ask(id, std::move(call), timeout, std::move(done));
    gw_.rt.ask(id, std::move(call), timeout, std::move(done));
  }

  void list(std::string_view query) {
    auto q = parse_query(query, {"limit", "after", "tenant"});
    if (!q)
      return reply_error(q.error());
    auto limit_arg = page_limit(*q);
    if (!limit_arg)
      return reply_error(limit_arg.error());
    auto limit = *limit_arg;
    std::string after;
    if (auto i = q->find("after"); i != q->end() && !i->second.empty()) {
      auto id = parse_agent_id(i->second);
      if (!id)
        return reply_error(
          make_error(errc::invalid_argument,
                     "query parameter 'after' must be an agent id: " + message_of(id.error())));
      after = id->str();
    }
    auto tenant_arg = listing_tenant(*q);
    if (!tenant_arg)
      return reply_error(tenant_arg.error());
    auto tenant = std::move(*tenant_arg);
    if (principal_->level != role::admin) {
      if (!after.empty() && parse_agent_id(after)->tenant != tenant)
        return reply_error(make_error(errc::forbidden,
                                      "query parameter 'after' names an agent of "
                                      "another tenant"));
    }
    auto views = gw_.rt.list(tenant, after, limit + 1);
    nlohmann::json next = nullptr;
    if (views.size() > limit) {
      views.resize(limit);
      next = views.back().id.str();
    }
    auto agents = nlohmann::json::array();
    for (auto& v : views)
      agents.push_back({{"id", v.id.str()},
                        {"kind", v.kind},
                        {"node", v.node},
                        {"restarts", v.restarts},
                        {"running", static_cast<bool>(v.agent)},
                        {"breaker", v.has_breaker}});
    reply_json(http::status::ok, dump({{"agents", std::move(agents)}, {"next", std::move(next)}}));
  }

  void inspect(const agent_id& id) {
    auto done = bind_reply<caf::expected<nlohmann::json>>(
      default_guard(), [](session& s, caf::expected<nlohmann::json>& res) {
        if (!res)
          return s.reply_error(res.error());
        s.reply_json(http::status::ok, dump(*res));
      });
    if (auto* c = gw_.cluster_view.load()) {
      auto text_done = bind_reply<caf::expected<std::string>>(
        default_guard(), [](session& s, caf::expected<std::string>& res) {
          if (!res)
            return s.reply_error(res.error());
          s.reply_json(http::status::ok, std::move(*res));
        });
      return c->call("inspect", id, agent_call{envelope{cid_, id.tenant, 0, "gateway", {}, 0}, {}},
                     default_timeout(), std::move(text_done));
    }
    gw_.rt.inspect(id, cid_, std::move(done));
  }

  /// `POST /v1/agents/{id}/migrate` `{"to":"NODE"}`: moves the agent live to NODE.
  void migrate(const agent_id& id, const std::string& body) {
    if (auto err = check_json(body, static_cast<size_t>(gw_.cfg.json_depth_max)))
      return reply_error(err);
    auto doc = nlohmann::json::parse(body, nullptr, false);
    if (!doc.is_object() || !doc.contains("to") || !doc["to"].is_string()
        || doc["to"].template get<std::string>().empty())
      return bad_field(R"(body must be {"to":"NODE"}: the name of a cluster member)");
    for (auto& [k, _] : doc.items())
      if (k != "to")
        return bad_field("unknown field '" + k.substr(0, 64)
                         + "' in a migrate request (known: to)");
    auto* c = gw_.cluster_view.load();
    if (c == nullptr)
      return reply_error(http::status::bad_request, errc::invalid_argument,
                         "node '" + gw_.rt.node_name()
                           + "' is not in a cluster: there is nowhere to migrate to");
    auto done = bind_reply<caf::expected<std::string>>(
      milliseconds{2 * gw_.rt.config().cluster.migration_timeout_ms} + guard_grace
        + std::chrono::seconds(1),
      [](session& s, caf::expected<std::string>& res) {
        if (!res)
          return s.reply_error(res.error());
        s.reply_json(http::status::ok, std::move(*res));
      });
    c->migrate(id, doc["to"].template get<std::string>(), cid_, std::move(done));
  }

  void stop(const agent_id& id) {
    if (auto err = budget_guard(id, "stop"))
      return reply_error(err);
    auto done = bind_reply<caf::error>(default_guard(), [](session& s, caf::error& err) {
      if (err)
        return s.reply_error(err);
      s.reply_json(http::status::no_content, {});
    });
    if (auto* c = gw_.cluster_view.load()) {
      auto text_done = bind_reply<caf::expected<std::string>>(
        default_guard(), [](session& s, caf::expected<std::string>& res) {
          if (!res)
            return s.reply_error(res.error());
          s.reply_json(http::status::no_content, {});
        });
      return c->call("stop", id, agent_call{envelope{cid_, id.tenant, 0, "gateway", {}, 0}, {}},
                     default_timeout(), std::move(text_done));
    }
    gw_.rt.stop(id, std::move(done));
  }

  /// Checks a tell or ask body against `quota.message_bytes_max`.
  caf::error check_message_size(const std::string& body) const {
    auto max = gw_.sec.quota().message_bytes_max;
    if (static_cast<int64_t>(body.size()) > max)
      return make_error(errc::too_large,
                        "message body of " + std::to_string(body.size())
                          + " bytes exceeds quota.message_bytes_max (" + std::to_string(max)
                          + " bytes)");
    return {};
  }

  void tell(const agent_id& id, std::string_view query, std::string body) {
    if (auto err = no_query(query))
      return reply_error(err);
    if (auto err = check_message_size(body))
      return reply_error(err);
    if (auto err = check_json(body, static_cast<size_t>(gw_.cfg.json_depth_max)))
      return reply_error(err);
    agent_call call{envelope{cid_, id.tenant, 0, "gateway", client_id_, client_seq_},
                    std::move(body)};
    if (auto* c = gw_.cluster_view.load()) {
      // Found here or forwarded to the member that has the agent (which accepts it).
      auto done = bind_reply<caf::expected<std::string>>(
        default_guard(), [](session& s, caf::expected<std::string>& res) {
          if (!res)
            return s.reply_error(res.error());
          s.reply_json(http::status::accepted, R"({"accepted":true})");
        });
      return c->call("tell", id, std::move(call), default_timeout(), std::move(done));
    }
    if (auto err = gw_.rt.tell(id, std::move(call)))
      return reply_error(err);
    reply_json(http::status::accepted, R"({"accepted":true})");
  }

  void ask(const agent_id& id, std::string_view query, std::string body) {
    auto q = parse_query(query, {"timeout_ms"});
    if (!q)
      return reply_error(q.error());
    auto timeout_ms = gw_.cfg.ask_timeout_ms_default;
    if (auto i = q->find("timeout_ms"); i != q->end()) {
      auto n = parse_int(i->second);
      if (!n || *n < 1 || *n > gw_.cfg.ask_timeout_ms_max)
        return reply_error(http::status::bad_request, errc::invalid_argument,
                           "query parameter 'timeout_ms' must be an integer in 1.."
                             + std::to_string(gw_.cfg.ask_timeout_ms_max) + ", got '" + i->second
                             + "'");
      timeout_ms = *n;
    }
    if (auto err = check_message_size(body))
      return reply_error(err);
    if (auto err = check_json(body, static_cast<size_t>(gw_.cfg.json_depth_max)))
      return reply_error(err);
    auto now_ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
    agent_call call{
      envelope{cid_, id.tenant, now_ms + timeout_ms, "gateway", client_id_, client_seq_},
      std::move(body)};
    auto done = bind_reply<caf::expected<std::string>>(
      milliseconds{timeout_ms} + guard_grace, [](session& s, caf::expected<std::string>& res) {
        if (!res)
          return s.reply_error(res.error());
        s.reply_json(http::status::ok, std::move(*res));
      });
    if (auto* c = gw_.cluster_view.load())
      return c->ask(id, std::move(call), milliseconds{timeout_ms}, std::move(done));
    gw_.rt.ask(id, std::move(call), milliseconds{timeout_ms}, std::move(done));
  }

  void bad_field(std::string message) {
    reply_error(http::status::bad_request, errc::invalid_argument, std::move(message));
  }

  // -- waiting for the runtime ----------------------------------------------------------------

  /// The deadline of a call that has no timeout of its own (tell, inspect, stop).
  milliseconds default_timeout() const {
    return milliseconds{gw_.cfg.ask_timeout_ms_default};
  }

  milliseconds default_guard() const {
    return milliseconds{gw_.cfg.ask_timeout_ms_default} + guard_grace;
  }

  /// Makes a runtime callback that delivers its result to `on_result` on this connection's
  /// strand, unless the request was answered meanwhile. Arms a guard timer that answers 504
  /// after `guard` if the runtime never calls back; the pending timer also keeps the session
  /// alive while the callback holds only a weak reference.
  template <class Result, class OnResult>
  std::function<void(Result)> bind_reply(milliseconds guard, OnResult on_result) {
    auto seq = seq_;
    waiting_ = true;
    guard_.expires_after(guard);
    guard_.async_wait([self = this->shared_from_this(), seq, guard](beast::error_code ec) {
      if (ec || !self->accept_reply(seq))
        return;
      self->reply_error(http::status::gateway_timeout, errc::timeout,
                        "the runtime did not answer within " + std::to_string(guard.count())
                          + " ms");
    });
    return [gate = gw_.gate, weak = this->weak_from_this(), seq, on_result](Result res) {
      gate->post(weak, [seq, on_result, res = std::move(res)](session& s) mutable {
        if (s.accept_reply(seq))
          on_result(s, res);
      });
    };
  }

  /// Returns whether a runtime answer for request `seq` is still expected, and stops
  /// expecting it.
  bool accept_reply(uint64_t seq) {
    if (seq != seq_ || !waiting_)
      return false;
    waiting_ = false;
    guard_.cancel();
    return true;
  }

  // -- writing --------------------------------------------------------------------------------

  void reply_error(const caf::error& err) {
    auto code = code_of(err);
    reply_error(status_of(code), code, message_of(err));
  }

  void reply_error(http::status st, errc code, std::string message) {
    reply_error(st, to_string(code), std::move(message));
  }

  void reply_error(http::status st, std::string_view code, std::string message,
                   std::string_view allow = {}) {
    auto lvl = static_cast<unsigned>(st) >= 500 ? spdlog::level::warn : spdlog::level::info;
    if (log::enabled(lvl))
      log::event(lvl, "http_error",
                 {{"method", method_},
                  {"target", target_},
                  {"route", route_},
                  {"status", static_cast<unsigned>(st)},
                  {"code", std::string{code}},
                  {"message", message}},
                 actor_, cid_);
    code_ = std::string{code};
    nlohmann::json body{{"error", {{"code", std::string{code}}, {"message", std::move(message)}}}};
    res_ = {};
    if (!allow.empty())
      res_.set(http::field::allow, beast_sv(allow));
    if (st == http::status::service_unavailable)
      res_.set(http::field::retry_after, "1");
    if (st == http::status::too_many_requests)
      res_.set(http::field::retry_after, std::to_string(retry_after_s_));
    if (st == http::status::unauthorized)
      res_.set(http::field::www_authenticate, R"(Bearer realm="hive")");
    send(st, dump(body));
  }

  void reply_json(http::status st, std::string body, std::string location = {}) {
    res_ = {};
    if (!location.empty())
      res_.set(http::field::location, location);
    send(st, std::move(body));
  }

  void send(http::status st, std::string body) {
    res_.result(st);
    res_.version(version_);
    res_.set(http::field::server, beast_sv(server_name));
    res_.set("X-Correlation-Id", log::format_cid(cid_));
    if (!body.empty())
      res_.set(http::field::content_type, "application/json");
    res_.body() = std::move(body);
    bool keep = keep_alive_ && !close_after_ && !gw_.not_accepting.load();
    res_.keep_alive(keep);
    res_.prepare_payload();
    auto secs = std::chrono::duration<double>(steady_clock::now() - started_).count();
    gw_.rt.metrics().gateway_request(route_, static_cast<int>(st), secs);
    if (audit_ || st == http::status::unauthorized || st == http::status::forbidden)
      write_audit(st);
    if (log::enabled(spdlog::level::debug))
      log::event(spdlog::level::debug, "http_request",
                 {{"method", method_},
                  {"target", target_},
                  {"route", route_},
                  {"status", static_cast<unsigned>(st)},
                  {"ms", secs * 1000.0}},
                 actor_, cid_);
    lowest().expires_after(milliseconds{gw_.cfg.idle_timeout_ms});
    http::async_write(stream_, res_,
                      [self = this->shared_from_this(), keep](beast::error_code ec, size_t) {
                        self->on_write(ec, keep);
                      });
  }

  /// One audit line for this exchange.
  void write_audit(http::status st) {
    auto* log = gw_.sec.audit();
    if (log == nullptr)
      return;
    auto now_ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
    auto path = target_.substr(0, target_.find('?'));
    nlohmann::json rec{
      {"ts_ms", now_ms},
      {"node", gw_.sec.node_name()},
      {"principal", principal_ ? principal_->subject : std::string{"anonymous"}},
      {"tenant", principal_ ? nlohmann::json(principal_->tenant) : nlohmann::json(nullptr)},
      {"role",
       principal_ ? nlohmann::json(std::string{to_string(principal_->level)})
                  : nlohmann::json(nullptr)},
      {"action", route_},
      {"method", method_},
      {"path", path.substr(0, 512)},
      {"target", !actor_.empty() ? actor_ : audit_target_},
      {"status", static_cast<unsigned>(st)},
      {"result", code_.empty() ? std::string{"ok"} : code_},
      {"correlation_id", log::format_cid(cid_)}};
    log->write(rec);
  }

  void on_write(beast::error_code ec, bool keep) {
    if (busy_) {
      busy_ = false;
      gw_.end_request();
    }
    if (ec)
      return close_now();
    if (!keep)
      return linger_close();
    do_read();
  }

  // -- closing --------------------------------------------------------------------------------

  /// Half-closes, then discards what the client still sends (bounded in time and bytes) so
  /// that it reads our last response before the connection goes away.
  void linger_close() {
    if constexpr (is_tls) {
      // close_notify, then wait (bounded) for the client's.
      lowest().expires_after(std::min(linger_time_max, milliseconds{gw_.cfg.idle_timeout_ms}));
      stream_.async_shutdown(
        [self = this->shared_from_this()](beast::error_code) { self->close_now(); });
      return;
    }
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    lowest().expires_after(std::min(linger_time_max, milliseconds{gw_.cfg.idle_timeout_ms}));
    linger_read();
  }

  void linger_read() {
    stream_.async_read_some(asio::buffer(scratch_),
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              self->linger_bytes_ += n;
                              if (ec || self->linger_bytes_ > linger_bytes_max)
                                return self->close_now();
                              self->linger_read();
                            });
  }

  void close_now() {
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close();
  }

  gateway::impl& gw_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::empty_body> continue_res_;
  http::response<http::string_body> res_;
  asio::steady_timer guard_;
  bool counted_;
  std::array<char, 4096> scratch_{};
  size_t linger_bytes_ = 0;

  // Per exchange (request/response pair).
  uint64_t seq_ = 0;
  bool busy_ = false;        ///< Counted in the gateway's in-flight requests.
  bool waiting_ = false;     ///< Waiting for a runtime callback.
  bool close_after_ = false; ///< Close the connection after this response.
  bool keep_alive_ = false;
  unsigned version_ = 11;
  uint64_t cid_ = 0;
  /// From `Idempotency-Key: CLIENT:SEQ` (empty: none).
  std::string client_id_;
  uint64_t client_seq_ = 0;
  std::string route_;
  std::string method_;
  std::string target_;
  std::string actor_;
  steady_clock::time_point started_;
  /// Who sent the request (unset for the probes and before authentication).
  std::optional<principal> principal_;
  /// Write this exchange to the audit log whatever its status.
  bool audit_ = false;
  /// What the exchange acted on when that is not an agent (a key id).
  std::string audit_target_;
  /// The Retry-After of a 429, in seconds.
  int64_t retry_after_s_ = 1;
  /// The error code of the response (empty: success).
  std::string code_;
};

} // namespace

// -- accepting ----------------------------------------------------------------------------------

void gateway::impl::do_accept() {
  std::lock_guard<std::mutex> guard{acceptor_mtx};
  if (!acceptor || !acceptor->is_open())
    return;
  acceptor->async_accept(asio::make_strand(*ioc), [this](beast::error_code ec, tcp::socket s) {
    on_accept(ec, std::move(s));
  });
}

void gateway::impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || not_accepting.load())
    return;
  if (ec) {
    log::event(spdlog::level::warn, "gateway_accept_failed", {{"reason", ec.message()}});
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
      // Out of file descriptors: back off a little instead of spinning.
      auto timer = std::make_shared<asio::steady_timer>(*ioc, milliseconds{50});
      timer->async_wait([this, timer](beast::error_code) { do_accept(); });
      return;
    }
  } else {
    try {
      if (connections.load() >= static_cast<size_t>(cfg.connections_max)) {
        log::event(spdlog::level::warn, "gateway_connection_refused",
                   {{"connections_max", cfg.connections_max}});
        if (tls)
          std::make_shared<session<tls_stream>>(*this, tls_stream{std::move(socket), *tls}, false)
            ->refuse();
        else
          std::make_shared<session<beast::tcp_stream>>(*this, beast::tcp_stream{std::move(socket)},
                                                       false)
            ->refuse();
      } else if (tls) {
        std::make_shared<session<tls_stream>>(*this, tls_stream{std::move(socket), *tls}, true)
          ->start();
      } else {
        std::make_shared<session<beast::tcp_stream>>(*this, beast::tcp_stream{std::move(socket)},
                                                     true)
          ->start();
      }
    } catch (const std::exception& ex) {
      log::event(spdlog::level::warn, "gateway_session_failed", {{"reason", ex.what()}});
    }
  }
  do_accept();
}

// -- gateway --------------------------------------------------------------------------------------

gateway::gateway(std::shared_ptr<impl> state) : impl_(std::move(state)) {}

caf::expected<std::unique_ptr<gateway>> gateway::start(node_runtime& rt,
                                                       const node_config::gateway_section& cfg,
                                                       security& sec) {
  auto bad = [](std::string key, int64_t value, std::string range) {
    return make_error(errc::invalid_config,
                      "gateway." + key + " = " + std::to_string(value) + " is out of range ("
                        + range + ")");
  };
  if (cfg.threads < 1 || cfg.threads > threads_max)
    return bad("threads", cfg.threads, "1.." + std::to_string(threads_max));
  if (cfg.body_bytes_max < 0)
    return bad("body_bytes_max", cfg.body_bytes_max, ">= 0");
  if (cfg.header_bytes_max < 1 || cfg.header_bytes_max > int64_t{UINT32_MAX})
    return bad("header_bytes_max", cfg.header_bytes_max, "1..4294967295");
  if (cfg.json_depth_max < 1)
    return bad("json_depth_max", cfg.json_depth_max, ">= 1");
  if (cfg.connections_max < 1)
    return bad("connections_max", cfg.connections_max, ">= 1");
  if (cfg.idle_timeout_ms < 1)
    return bad("idle_timeout_ms", cfg.idle_timeout_ms, ">= 1");
  if (cfg.ask_timeout_ms_max < 1)
    return bad("ask_timeout_ms_max", cfg.ask_timeout_ms_max, ">= 1");
  if (cfg.ask_timeout_ms_default < 1 || cfg.ask_timeout_ms_default > cfg.ask_timeout_ms_max)
    return bad("ask_timeout_ms_default", cfg.ask_timeout_ms_default,
               "1..gateway.ask_timeout_ms_max");
  if (cfg.page_size_max < 1)
    return bad("page_size_max", cfg.page_size_max, ">= 1");
  auto st = std::make_shared<impl>(rt, cfg, sec);
  auto where = cfg.listen.str();
  if (cfg.tls_cert_file.empty() != cfg.tls_key_file.empty())
    return make_error(errc::invalid_config,
                      "gateway.tls_cert_file and gateway.tls_key_file must be set together "
                      "(both empty: plain HTTP)");
  if (!cfg.tls_cert_file.empty())
    if (auto err = load_tls_files(st->tls.emplace(asio::ssl::context::tls_server), "gateway",
                                  {cfg.tls_cert_file, cfg.tls_key_file, {}}))
      return err;
  try {
    st->ioc.emplace(static_cast<int>(cfg.threads));
    auto& acc = st->acceptor.emplace(*st->ioc);
    auto bound = open_listener(*st->ioc, acc, cfg.listen.host, cfg.listen.port, "gateway.listen");
    if (!bound)
      return bound.error();
    st->port = *bound;
    st->address = cfg.listen.host + ':' + std::to_string(st->port);
    st->work.emplace(st->ioc->get_executor());
    st->do_accept();
    std::unique_ptr<gateway> gw{new gateway(st)};
    run_threads(*st->ioc, cfg.threads, st->threads, "gateway_handler_failed");
    log::event(
      spdlog::level::info, "gateway_listening",
      {{"address", st->address}, {"threads", cfg.threads}, {"scheme", st->tls ? "https" : "http"}});
    return gw;
  } catch (const std::exception& ex) {
    return make_error(errc::io_error,
                      "cannot start the gateway on " + where + ": " + std::string{ex.what()});
  }
}

gateway::~gateway() {
  if (!impl_)
    return;
  stop_accepting();
  // From here on, runtime callbacks are dropped: no handler can be posted to a dead context.
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
  // Destroys the handlers still queued, and with them the connections they own.
  impl_->ioc.reset();
  assert(impl_->connections.load() == 0);
  log::event(spdlog::level::info, "gateway_stopped", {{"address", impl_->address}});
}

uint16_t gateway::port() const noexcept {
  return impl_->port;
}

bool gateway::tls() const noexcept {
  return impl_->tls.has_value();
}

void gateway::stop_accepting() {
  impl_->not_accepting.store(true);
  std::lock_guard<std::mutex> guard{impl_->acceptor_mtx};
  if (impl_->acceptor && impl_->acceptor->is_open()) {
    beast::error_code ignored;
    impl_->acceptor->close(ignored);
  }
}

bool gateway::drain(std::chrono::milliseconds max) {
  return impl_->in_flight.wait_idle(max);
}

size_t gateway::in_flight() const noexcept {
  return impl_->in_flight.value();
}

size_t gateway::connections() const noexcept {
  return impl_->connections.load();
}

std::vector<gateway::route_info> gateway::routes() {
  std::vector<route_info> out;
  for (auto r : all_routes) {
    route_info info;
    info.path = std::string{path_template(r)};
    // The metrics label `{id}` of agent routes is two path segments in the document.
    if (auto p = info.path.find("/v1/agents/{id}"); p == 0)
      info.path.replace(0, 15, "/v1/agents/{tenant}/{name}");
    if (auto p = info.path.find("/v1/workflows/{id}"); p == 0)
      info.path.replace(0, 18, "/v1/workflows/{tenant}/{name}");
    for (auto m : split(allowed_methods(r), ','))
      info.methods.emplace_back(m.substr(m.find_first_not_of(' ')));
    out.push_back(std::move(info));
  }
  return out;
}

void gateway::set_cluster(cluster* c) noexcept {
  impl_->cluster_view.store(c);
}

} // namespace hive
