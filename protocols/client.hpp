#pragma once

// A small blocking client of the binary protocol (protocols/wire.hpp): one TCP connection, one
// thread. Plain calls (`ask`, `tell`, `spawn`, `stop`) wait for their answer; for pipelining,
// `send` queues requests, `flush` writes them, and `receive` returns answers in the order the
// node completes them (match them by `response::id`).
//
//   auto c = hive::binary_client::connect("127.0.0.1", 8081, key);
//   if (!c) ...;
//   auto reply = c->ask("acme/c1", R"({"op":"get"})");
//
// Over TLS (a node with `gateway.tls_cert_file` set serves the binary protocol over TLS too):
//
//   auto c = hive::binary_client::connect("127.0.0.1", 8081, key, 5s, 1 << 20,
//                                         hive::binary_client::tls_options{"/etc/hive/ca.crt"});

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <caf/all.hpp>

#include "protocols/wire.hpp"

namespace hive {

/// One connection to an agent-node's binary listener (`binary.listen`). Not thread-safe.
class binary_client {
public:
  /// How to speak TLS 1.2 or later to the node. Its certificate is always verified: against
  /// `ca_file` (PEM), or the system's trust store when that is empty; and it must be issued for
  /// `server_name` (an IP address or a DNS name; empty: the host passed to `connect`).
  struct tls_options {
    std::string ca_file;
    std::string server_name;
  };

  /// Connects to `host:port` (numeric IPv4/IPv6 or a name), with TLS when `tls` is set, sends
  /// `hello` with `token` and waits for its answer, each step within `timeout`. Errors:
  /// io_error naming the address (for TLS also why the handshake or the verification failed),
  /// invalid_config for a CA file that cannot be loaded, timeout, and the node's refusal
  /// (unauthenticated, invalid_argument for a version it does not speak).
  [[nodiscard]] static caf::expected<binary_client> connect(
    const std::string& host, uint16_t port, const std::string& token,
    std::chrono::milliseconds timeout = std::chrono::seconds(5), size_t frame_bytes_max = 1 << 20,
    const std::optional<tls_options>& tls = std::nullopt);

  binary_client(binary_client&&) noexcept;
  binary_client& operator=(binary_client&&) noexcept;
  ~binary_client();

  /// What the node said about the credentials: {"node","principal","tenant","role","version"}.
  [[nodiscard]] const std::string& hello_reply() const noexcept;

  /// Asks `agent` (`tenant/name`) with the JSON `body`; the agent's reply. `timeout_ms` 0 =
  /// the node's default; the client waits that long plus 1 s (or 6 s with 0).
  [[nodiscard]] caf::expected<std::string> ask(std::string_view agent, std::string_view body,
                                               uint32_t timeout_ms = 0);

  /// Tells `agent`; returns once the node accepted it.
  [[nodiscard]] caf::error tell(std::string_view agent, std::string_view body);

  /// Spawns; returns {"id","kind","node"}.
  [[nodiscard]] caf::expected<std::string> spawn(const wire::spawn& req);

  /// Stops `agent` for good.
  [[nodiscard]] caf::error stop(std::string_view agent);

  /// Queues `req` with a fresh id (returned; `req.id` is ignored). Nothing is written before
  /// `flush`.
  uint64_t send(wire::request req);

  /// Writes every queued request. Errors: io_error.
  [[nodiscard]] caf::error flush();

  /// Flushes, then waits up to `timeout` for the next answer. Errors: timeout, io_error (the
  /// node closed the connection), invalid_argument (an undecodable frame).
  [[nodiscard]] caf::expected<wire::response> receive(std::chrono::milliseconds timeout);

  /// Number of requests sent and not answered yet.
  [[nodiscard]] size_t outstanding() const noexcept;

private:
  struct impl;
  explicit binary_client(std::unique_ptr<impl> p);

  /// Sends one request and waits for its own answer, or an error answer with id 0 (about the
  /// connection). Answers to other ids are an error: plain calls are not mixed with
  /// pipelining.
  caf::expected<wire::response> call(wire::request req, std::chrono::milliseconds timeout);

  std::unique_ptr<impl> impl_;
};

} // namespace hive
