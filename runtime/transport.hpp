#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <caf/all.hpp>

#include "protocols/cluster.hpp"
#include "runtime/tls.hpp"

namespace hive {

/// Bounds of a `call_transport` (from `cluster.*` and `node.asks_pending_max`).
struct transport_limits {
  /// A frame (header included) larger than this closes the connection that sent it, and a
  /// call or reply that would encode larger fails with invalid_argument.
  size_t frame_bytes_max = 16 << 20;
  /// Bytes queued for one connection while the peer does not read; a send beyond it fails
  /// the call with overloaded.
  size_t send_queue_bytes_max = 64 << 20;
  /// Calls this node waits on over all connections, and calls one incoming connection may
  /// have in flight here; beyond it a call fails with overloaded.
  size_t calls_pending_max = 10000;
  /// Incoming connections open at once; one more is closed at once (and counted as refused).
  size_t connections_max = 1024;
  /// Actors a frame's callback makes ready may run on the I/O thread right away (when no other
  /// frame waits and they allow it: runtime/inline_exec.hpp); false: always on the workers.
  bool inline_runs = true;
};

/// The data plane between the members of a cluster: by-id calls (`remote_call`) and their
/// answers, CAF-serialized (binary_serializer, the same inspectors BASP uses) in frames on
/// plain TCP connections, one per pair of nodes and direction. Membership, spawns and
/// migration state stay on CAF's BASP (runtime/cluster.cpp); this carries only the hot path.
///
/// Why not BASP: a remote request/response through CAF 0.17's middleman takes ~200-300 us
/// here (a pipe wake-up of the multiplexer thread and two thread hops per message), while
/// loopback TCP does a round trip in ~18 us. Here a caller writes its frame to the socket
/// directly from its own thread (one `send`, no hand-over) when nothing is queued; only a
/// partial write is handed to the transport's I/O thread, which then writes everything
/// queued meanwhile in one go (batching under load). Replies are written the same way from
/// the thread that produces them.
///
/// Frame layout (all integers big-endian):
///
/// | bytes | field |
/// | ---: | --- |
/// | 4 | length L of what follows (type, request id, payload) |
/// | 1 | type: 1 hello, 2 call, 3 reply, 4 error, 5 tell (one way: never answered) |
/// | 8 | request id (0 in hello and tell) |
/// | L - 9 | payload: hello = `transport_hello`, call and tell = `remote_call`, reply =
/// `agent_reply`, error = `caf::error`, each CAF binary-serialized |
///
/// With TLS (`cluster.tls_*`), each connection is a mutual TLS 1.2+ session first: both sides
/// present a certificate that must chain to the cluster's CA, or the handshake fails and the
/// connection closes (logged as transport_tls_refused). Frames then travel inside TLS, all
/// written by the I/O thread (an SSL session is not shared between threads: no direct writes).
///
/// A connection starts with the dialler's hello (cluster name, protocol version, node name);
/// the acceptor closes it, logging why, if the name or version differs, if no hello came
/// within 2 s, and also on a frame above `frame_bytes_max`, an unknown type or a payload that
/// does not decode. At most `connections_max` accepted connections are open at once.
class call_transport {
public:
  using reply_fn = std::function<void(caf::expected<std::string>)>;
  /// Runs an incoming call; `done` may be called from any thread, exactly once.
  using call_handler = std::function<void(remote_call req, reply_fn done)>;

  /// Listens on `host:port` (0: any free port) and starts the I/O thread; with `tls.cert_file`
  /// set, every connection is mutual TLS with `tls` (see above). Errors: io_error when the
  /// port cannot be bound, invalid_config when a TLS file cannot be loaded.
  [[nodiscard]] static caf::expected<std::unique_ptr<call_transport>> start(
    caf::actor_system& sys, const std::string& host, uint16_t port, std::string cluster_name,
    std::string node_name, transport_limits limits, call_handler on_call, tls_files tls = {});

  /// Closes every connection (pending calls fail with shutting_down, later calls too) and
  /// joins the I/O thread. Idempotent; must not be called from a callback of this transport.
  void shutdown();

  /// `shutdown()`.
  ~call_transport();
  call_transport(const call_transport&) = delete;
  call_transport& operator=(const call_transport&) = delete;

  /// The port it listens on.
  [[nodiscard]] uint16_t port() const noexcept;

  /// Sends `req` to the member whose transport listens at `address` (`HOST:PORT`), connecting
  /// first if needed. `done` gets the peer's answer, or: unavailable (cannot connect, or the
  /// connection broke before the answer), timeout (no answer within `timeout`), overloaded
  /// (too many calls pending or too many bytes queued), shutting_down. Called from any
  /// thread; `done` runs on the transport's I/O thread or, for an immediate failure, on the
  /// caller's.
  void call(const std::string& address, const remote_call& req, std::chrono::milliseconds timeout,
            reply_fn done);

  /// Sends `req` one way (like Erlang's `!`): nobody answers; the receiver counts and logs a
  /// failure. Frames from one thread to one address arrive in the order sent, calls
  /// included. Queued for the I/O thread, which writes bursts in one system call. Errors
  /// (immediate): overloaded (too many bytes queued), unavailable (the connection just
  /// closed), too_large, shutting_down. A tell on a connection that breaks later is lost.
  [[nodiscard]] caf::error tell(const std::string& address, const remote_call& req);

  /// Closes the connection to `address` (a member went down or restarted): its pending calls
  /// fail with unavailable; the next call dials again.
  void drop(const std::string& address);

  /// Counters since start (for metrics and tests).
  struct counters {
    uint64_t frames_sent = 0;
    uint64_t frames_received = 0;
    uint64_t direct_writes = 0;
    uint64_t queued_writes = 0;
    uint64_t connections_refused = 0;
    /// One-way tells that failed on this (receiving) node.
    uint64_t tells_failed = 0;
    /// TLS handshakes that failed (either side): no or an untrusted certificate, not TLS.
    uint64_t tls_refused = 0;
    /// Actors a frame made ready that ran on the I/O thread right away, and those handed to
    /// the scheduler's workers (runtime/inline_exec.hpp).
    uint64_t actors_inline = 0;
    uint64_t actors_handed_over = 0;
  };
  [[nodiscard]] counters stats() const;

  struct impl;

private:
  call_transport() = default;
  std::shared_ptr<impl> impl_;
};

/// The first frame on a transport connection.
struct transport_hello {
  std::string cluster_name;
  uint32_t protocol_version = 0;
  std::string node;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, transport_hello& x) {
  return f(caf::meta::type_name("hive.transport_hello"), x.cluster_name, x.protocol_version,
           x.node);
}

} // namespace hive
