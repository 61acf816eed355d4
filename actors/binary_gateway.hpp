#pragma once

// The binary protocol listener of an agent-node (`binary.listen`): Cap'n Proto frames over TCP
// (protocols/wire.hpp, protocols/client.capnp; the framing byte by byte in
// protocols/README.md), on Asio threads of its own. With `gateway.tls_cert_file` and
// `gateway.tls_key_file` set it speaks TLS 1.2 or later only, with the gateway's certificate;
// the hello deadline (`binary.idle_timeout_ms`) covers the handshake, and a failed handshake
// is logged (`binary_tls_handshake_failed`) and closes the connection.
//
// A connection's first request must be `hello` with protocol version 1 and a token: an API
// key, the bootstrap admin key or an HS256 JWT, exactly as `Authorization: Bearer` over HTTP.
// Refused: an error answer (unauthenticated, or invalid_argument for another version), then
// the node closes the connection. After it, `spawn`, `tell`, `ask` and `stop` need the role
// operator on the agent's tenant (admin: every tenant), as over HTTP; the token is checked
// again on every request, so a revoked key or an expired JWT stops working at once (answer
// unauthenticated, connection closed). Each request takes a token of its tenant's rate limit
// (`quota.requests_per_s`; rate_limited with `retry_after_ms`), tell and ask bodies are
// bounded by `quota.message_bytes_max` (too_large) and checked as JSON like HTTP bodies
// (`gateway.json_depth_max`).
//
// Pipelining: a client may send many requests without waiting. Answers carry the request's
// id and go out in completion order, batched into as few writes as possible. With
// `binary.inflight_requests_max` requests of a connection unanswered the node reads nothing
// more from it until answers go out (TCP back-pressure). An ask's deadline is its
// `timeout_ms` (0: `gateway.ask_timeout_ms_default`; above `gateway.ask_timeout_ms_max`:
// invalid_argument); should the runtime never answer, the listener answers timeout one
// second after the deadline.
//
// Protocol errors (a length above `binary.frame_bytes_max`, not a multiple of 8, a payload
// that does not decode) get one error answer with request id 0, then the connection closes.
// A connection without hello, or idle (nothing in flight), for `binary.idle_timeout_ms` is
// closed. Connections beyond `binary.connections_max` get an overloaded answer (id 0) and
// are closed.
//
// Metrics: `hive_binary_requests_total{kind,code}`, `hive_binary_request_seconds{kind}`,
// `hive_binary_connections`.

#include <chrono>
#include <cstdint>
#include <memory>

#include <caf/all.hpp>

#include "config/node_config.hpp"

namespace hive {

class node_runtime;
class cluster;
class security;

/// The binary protocol listener. Same lifetime rules as `gateway`: the runtime and the
/// security facade must outlive it; the destructor closes every connection and joins its
/// threads, late runtime callbacks are dropped.
class binary_gateway {
public:
  /// Binds `cfg.binary.listen` (port 0 = ephemeral) and starts serving. Errors: io_error naming
  /// the address when resolving or binding fails, invalid_config when `binary.listen` is
  /// empty or a `gateway.tls_*` file cannot be loaded (naming the key).
  [[nodiscard]] static caf::expected<std::unique_ptr<binary_gateway>> start(node_runtime& rt,
                                                                            const node_config& cfg,
                                                                            security& sec);

  ~binary_gateway();

  binary_gateway(const binary_gateway&) = delete;
  binary_gateway& operator=(const binary_gateway&) = delete;

  /// The bound TCP port.
  [[nodiscard]] uint16_t port() const noexcept;

  /// Serves calls through the cluster `c` (nullptr: this node only). `c` must outlive the
  /// listener or be unset first.
  void set_cluster(cluster* c) noexcept;

  /// Closes the listener; requests on open connections still complete, new ones are answered
  /// shutting_down. Idempotent.
  void stop_accepting();

  /// Waits until no request is in flight, at most `max`. Returns true if none is left.
  [[nodiscard]] bool drain(std::chrono::milliseconds max);

  /// Number of open connections.
  [[nodiscard]] size_t connections() const noexcept;

  /// Opaque implementation state (public only so that the .cpp can name it).
  struct impl;

private:
  explicit binary_gateway(std::shared_ptr<impl> state);

  std::shared_ptr<impl> impl_;
};

} // namespace hive
