#pragma once

// The binary client protocol: frames of Cap'n Proto messages over TCP (protocols/client.capnp;
// the byte-level layout is in protocols/README.md). This header has the plain C++ view of the
// messages and the codec; the node's server is actors/binary_gateway.hpp, a blocking client
// is protocols/client.hpp.
//
// A frame is a little-endian u32 length `L`, then `L` bytes: one Cap'n Proto message in the
// standard (unpacked) serialization, so `L` is a multiple of 8 and at least 8.

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include <caf/all.hpp>

#include "protocols/errc.hpp"

namespace hive::wire {

/// The protocol version a `hello` carries; a node refuses every other one.
inline constexpr uint16_t protocol_version = 1;

/// Bytes of the length prefix of a frame.
inline constexpr size_t frame_header_bytes = 4;

/// Smallest valid frame payload (one Cap'n Proto word: an empty segment table).
inline constexpr size_t frame_payload_bytes_min = 8;

/// Cap'n Proto nesting limit applied when decoding (our messages nest 3 levels).
inline constexpr int nesting_max = 8;

/// First request of a connection: protocol version and credentials.
struct hello {
  uint16_t version = protocol_version;
  std::string token;
};

struct spawn {
  std::string agent;
  std::string kind;
  /// A JSON object; empty = `{}`.
  std::string config;
  bool breaker = false;
  /// "permanent" (or empty), "transient", "temporary".
  std::string restart;
  /// Pin to this node; empty = placement decides.
  std::string node;
};

struct tell {
  std::string agent;
  std::string body;
  std::string client_id;
  uint64_t client_seq = 0;
};

struct ask {
  std::string agent;
  std::string body;
  /// 0 = the node's default.
  uint32_t timeout_ms = 0;
  std::string client_id;
  uint64_t client_seq = 0;
};

struct stop {
  std::string agent;
};

/// A client's call.
struct request {
  uint64_t id = 0;
  /// 0 = the node picks one.
  uint64_t correlation_id = 0;
  std::variant<hello, spawn, tell, ask, stop> body;
};

/// The node's answer to one request.
struct response {
  uint64_t id = 0;
  uint64_t correlation_id = 0;
  /// True: `text` is the JSON result. False: the call failed with `code`, `text` = message.
  bool ok = false;
  std::string text;
  errc code = errc::none;
  /// Set with rate_limited and overloaded: when to try again.
  uint32_t retry_after_ms = 0;
};

/// Appends one framed `request` (length prefix and message) to `out`.
void append_frame(std::string& out, const request& req);

/// Appends one framed `response` to `out`.
void append_frame(std::string& out, const response& res);

/// Result of looking at the start of a receive buffer.
struct frame_view {
  /// The payload (a Cap'n Proto message); empty when the frame is not complete yet.
  std::string_view payload;
  /// Bytes the frame takes in the buffer (header + payload); 0 when not complete.
  size_t consumed = 0;
};

/// Finds the first frame in `buf`. Errors: too_large when its length exceeds
/// `frame_bytes_max`, invalid_argument when it is below 8 or not a multiple of 8 (both name
/// the length). A complete frame, or an incomplete one (consumed 0) otherwise.
[[nodiscard]] caf::expected<frame_view> next_frame(std::string_view buf, size_t frame_bytes_max);

/// Decodes a request payload (as `next_frame` returns it). Errors: invalid_argument naming what
/// is wrong (not a Cap'n Proto message, traversal or nesting limit exceeded, no known request
/// kind, a text that is not UTF-8-free of NUL bytes ...). Never throws.
[[nodiscard]] caf::expected<request> decode_request(std::string_view payload);

/// Decodes a response payload. Errors: invalid_argument as for `decode_request`.
[[nodiscard]] caf::expected<response> decode_response(std::string_view payload);

/// The name of a request kind ("hello", "spawn", "tell", "ask", "stop").
[[nodiscard]] std::string_view kind_name(const request& req) noexcept;

} // namespace hive::wire
