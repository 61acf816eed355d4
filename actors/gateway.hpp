#pragma once

// The HTTP/1.1 + JSON gateway of an agent-node (Boost.Beast on its own Asio threads).
//
// Routes (all bodies are JSON, `Content-Type: application/json`):
//
//   GET    /healthz                          200 {"status":"ok"}
//   GET    /readyz                           200 {"status":"ready"}; 503 once stopping
//   POST   /v1/agents                        201 {"id","kind","node"}
//          body {"id":"acme/c1","kind":"counter","config":{},"breaker":false,
//                "restart":"permanent"|"transient"|"temporary","node":"n2",
//                "capabilities":["summarize"]}  (all but id and kind optional; unknown
//                fields are a 400)
//   GET    /v1/agents?limit=&after=&tenant=  200 {"agents":[{"id","kind","node","restarts",
//                                            "breaker"}...],"next":"<id>"|null}
//   GET    /v1/agents/{tenant}/{name}        200 the agent's inspection JSON
//   DELETE /v1/agents/{tenant}/{name}        204
//   POST   /v1/agents/{tenant}/{name}/tell   202 {"accepted":true}; body = any JSON document
//   GET    /v1/cluster/nodes                 200 {"nodes":[{"name","address","gateway","status",
//                                            "incarnation","agents"}...]}: the member list as
//                                            this node sees it (a standalone node: itself,
//                                            address null)
//   POST   /v1/agents/{tenant}/{name}/ask    200 the agent's reply, verbatim
//          ?timeout_ms=N (1..gateway.ask_timeout_ms_max, default ask_timeout_ms_default)
//   POST   /v1/agents/{tenant}/{name}/migrate  200 {"moved","from","to","pause_ms",...}
//          body {"to":"NODE"}
//   POST   /v1/workflows                     201 {"id","node","status"}: spawns a `planner`
//          body: a workflow (actors/planner.hpp), optional "id":"tenant/name" (default the
//          caller's tenant and wf-<16 hex>; an admin key of every tenant must name it)
//   GET    /v1/workflows/{tenant}/{name}     200 the planner's status (steps, attempts, ...)
//   POST   /v1/workflows/{tenant}/{name}/pause|resume|cancel  200 {"id","status"}; 409 once
//                                            the workflow finished
//   POST   /v1/admin/backup                  200 {"backup","elapsed_ms"}; body {"to":"/abs/dir"}
//   POST   /v1/keys                          201 {"id","key","tenant","role","name","created_ms"}
//          body {"tenant":"beta","role":"operator","name":"ci"} (tenant: default the caller's;
//          "*" only for admin keys). The key is in this answer only; the node keeps its SHA-256.
//   GET    /v1/keys?tenant=                  200 {"keys":[{"id","tenant","role","name",
//                                            "created_ms"}...]} (never a key or hash)
//   DELETE /v1/keys/{id}                     204; the key stops working at once
//   GET    /v1/events?tenant=&agent=&kind=   101 WebSocket: one text message per lifecycle
//                                            event (runtime/events.hpp), the caller's tenant
//                                            only unless admin; a consumer more than
//                                            events_buffer_max events behind: close code 4008
//                                            (the socket outright if that cannot be sent in 1 s)
//   GET    /v1/capabilities/{name}?tenant=&limit=  200 {"capability","providers":[{"id",
//                                            "node","state","load"}...],"nodes_failed":[...]}:
//                                            every member's agents that declared it, least
//                                            loaded first (state active|starting|passivated)
//   POST   /v1/capabilities/{name}/broadcast?tenant=  {"message":M,"filter":{"state",
//                                            "nodes","load_max","name_prefix","exclude",
//                                            "limit"}} -> 202 {"capability","sent_to":[ids],
//                                            "nodes_failed"}: M one way to each provider
//                                            of the tenant that passes the filter
//   GET    /v1/openapi.json                  200 the OpenAPI 3 document of these routes
//                                            (protocols/openapi.json; a test checks it against
//                                            `routes()` and the behaviour, both ways)
//
// HTTPS: with `tls_cert_file` and `tls_key_file` set, every connection starts with a TLS
// handshake (TLS 1.2 or later, within `idle_timeout_ms`); plain HTTP on that port gets no
// answer. Both empty: plain HTTP.
//
// Authentication: every route except /healthz and /readyz needs `Authorization: Bearer X`,
// X an API key (`hive_<16 hex id>_<64 hex>`), the bootstrap admin key (auth.admin_key_file)
// or an HS256 JWT (auth.jwt_*). Missing or bad: 401 unauthenticated with
// `WWW-Authenticate: Bearer realm="hive"`, also on unknown paths (nothing is revealed to an
// anonymous caller).
//
// Permissions (least role; "own tenant" = the agent's or key's tenant must be the caller's,
// unless the caller is admin, who acts on every tenant). Otherwise 403 forbidden.
//
//   GET  /v1/agents, GET /v1/agents/{id}          viewer, own tenant (listings show only it;
//                                                 ?tenant= of another tenant is a 403)
//   GET  /v1/cluster/nodes, GET /v1/openapi.json  viewer
//   GET  /v1/events                               viewer, own tenant
//   GET  /v1/capabilities/{name}                  viewer, own tenant (?tenant= of another
//                                                 tenant is a 403; admin: all or ?tenant=)
//   POST /v1/agents, DELETE /v1/agents/{id},
//   POST .../tell, POST .../ask                   operator, own tenant
//   POST /v1/capabilities/{name}/broadcast        operator, own tenant (admin: ?tenant=)
//   GET  /v1/workflows/{id}                       viewer, own tenant
//   POST /v1/workflows, POST .../pause|resume|cancel  operator, own tenant
//   GET/POST /v1/keys, DELETE /v1/keys/{id}       operator, own tenant; nobody creates or
//                                                 revokes a key of a higher role than its own
//   POST .../migrate, POST /v1/admin/backup       admin
//
// Quotas per tenant: at most `quota.agents_max` live agents of a tenant per node (a spawn
// beyond: 403 quota_exceeded), `quota.requests_per_s` with bucket `quota.burst_requests`
// (429 rate_limited with Retry-After in seconds; the probes are never limited), tell and ask
// bodies up to `quota.message_bytes_max` (413 too_large).
//
// Audit: spawn, stop, migrate, backup, key creation and revocation, and every 401 and 403,
// whatever their outcome, are one JSON line each in the audit log (audit.path): ts_ms, node,
// principal ("key:<id>", "key:bootstrap", "jwt:<sub>" or "anonymous"), tenant, role, action
// (route), method, path, target (agent or key id), status, result (errc name or "ok"),
// correlation_id. Reads, tells and asks are not audited (they are counted in metrics).
//
// Errors answer `{"error":{"code":"...","message":"..."}}`. `code` is an `errc` name
// (protocols/errc.hpp), except for three HTTP-level codes: `route_not_found` (404, unknown
// path), `method_not_allowed` (405, with an `Allow` header) and `bad_request` (400,
// malformed HTTP; the connection is closed afterwards). Status by errc:
//
//   invalid_argument, invalid_agent_id, unknown_kind, invalid_config   400
//   unauthenticated                                                    401
//   forbidden, quota_exceeded (quota.agents_max)                       403
//   agent_not_found, not_found                                         404
//   rate_limited                                                       429 (+ Retry-After)
//   agent_exists                                                       409
//   too_large (body > body_bytes_max, header > header_bytes_max,
//              JSON nested deeper than json_depth_max)                 413
//   rejected (the agent refused the call)                              422
//   overloaded (connections_max, agents_max), circuit_open,
//   shutting_down, agent_failed, escalated, unavailable, migrated,
//   fenced, no_quorum (replication), storage_error, corrupt_record     503 (+ Retry-After: 1)
//   timeout                                                            504
//   anything else                                                      500
//
// Every response carries `X-Correlation-Id` (16 hex digits): the request's header if it held
// 1..16 hex digits and was not 0 (anything else is a 400), else a random non-zero 64-bit id. It
// goes into the envelope of tells and asks (`tenant` = the id's tenant, `sender` = "gateway") and
// into every log line about the request.
//
// Limits: a connection that does not deliver a complete request within `idle_timeout_ms`
// (also between keep-alive requests) is closed without an answer; connections beyond
// `connections_max` get one 503 and are closed; oversize headers or bodies get a 413 and the
// connection is closed (the rest of the request is not parsed: it is read and discarded for
// at most 1 s / 4 MiB so that the client sees the answer instead of a reset). Unknown or
// repeated query parameters are a 400. `Expect: 100-continue` is honoured. If the runtime
// never calls back, the gateway itself answers 504 one second after the call's deadline
// (ask: `timeout_ms`; spawn, inspect, stop: `ask_timeout_ms_default`).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/all.hpp>

#include "config/node_config.hpp"

namespace hive {

class node_runtime;
class cluster;
class security;

/// The HTTP gateway: accepts connections on `gateway.listen`, translates requests into
/// `node_runtime` calls and answers with JSON. Runs `gateway.threads` threads of its own;
/// runtime callbacks are posted back to the connection's strand, never blocked on.
///
/// Shutdown sequence for a node: `stop_accepting()` (readyz turns 503, the listener closes,
/// kept-alive connections close after their next response), `drain(...)` (waits for requests
/// in flight), `node_runtime::shutdown()`, then destroy the gateway. The destructor is safe at
/// any point: it closes every connection, joins the threads, and late runtime callbacks are
/// dropped. The `node_runtime` must outlive the gateway.
class gateway {
public:
  /// Binds `cfg.listen` (port 0 = ephemeral) and starts serving, authenticating and
  /// authorizing every request through `sec` (which must outlive the gateway). Errors:
  /// `io_error` naming the address and the reason when resolving or binding fails,
  /// `invalid_config` for limits out of range and for a TLS certificate or key that cannot be
  /// loaded or do not match (naming the file).
  [[nodiscard]] static caf::expected<std::unique_ptr<gateway>> start(
    node_runtime& rt, const node_config::gateway_section& cfg, security& sec);

  /// Stops accepting, closes every connection and joins the threads.
  ~gateway();

  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  /// The bound TCP port (the real one when `listen.port` was 0).
  [[nodiscard]] uint16_t port() const noexcept;

  /// Whether it serves HTTPS (TLS 1.2 or later; `gateway.tls_cert_file` and
  /// `gateway.tls_key_file`) rather than plain HTTP.
  [[nodiscard]] bool tls() const noexcept;

  /// Closes the listener and marks the gateway not ready: `/readyz` answers 503 and responses
  /// carry `Connection: close`. Requests in flight still complete. Idempotent.
  void stop_accepting();

  /// Waits until no request is in flight (read but not yet answered), at most `max`.
  /// Returns true if none is left.
  [[nodiscard]] bool drain(std::chrono::milliseconds max);

  /// Number of requests read and not yet answered.
  [[nodiscard]] size_t in_flight() const noexcept;

  /// Number of open connections.
  [[nodiscard]] size_t connections() const noexcept;

  /// Serves the cluster routes from `c` (nullptr: standalone). `c` must outlive the gateway or
  /// be unset first.
  void set_cluster(cluster* c) noexcept;

  /// The OpenAPI 3 document served at `/v1/openapi.json` (protocols/openapi.json).
  [[nodiscard]] static std::string_view openapi_json() noexcept;

  /// One route as the OpenAPI document names it: path (`/v1/agents/{tenant}/{name}`) and
  /// its methods in upper case.
  struct route_info {
    std::string path;
    std::vector<std::string> methods;
  };

  /// Every route the gateway serves (tests check the OpenAPI document against it).
  [[nodiscard]] static std::vector<route_info> routes();

  /// Opaque implementation state (public only so that the .cpp can name it).
  struct impl;

private:
  explicit gateway(std::shared_ptr<impl> state);

  std::shared_ptr<impl> impl_;
};

} // namespace hive
