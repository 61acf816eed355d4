# The binary client protocol of hive (protocols/README.md, "Binary protocol", has the framing
# byte by byte). Every frame on the wire is a little-endian u32 length followed by one
# Cap'n Proto message (standard, unpacked serialization) of a `Request` (client to node) or a
# `Response` (node to client). Append-only evolution: never renumber or retype a field.
@0xb16c72535c215edd;

$import "/capnp/c++.capnp".namespace("hive::capnp_client");

# A client's call. `id` is chosen by the client and echoed in the answer; requests are
# pipelined (many may be in flight) and answered in completion order.
struct Request {
  id @0 :UInt64;
  # 1..2^64-1 ties the node's log lines and the agent's envelope to the client's; 0: the node
  # picks a random one (sent back in the Response).
  correlationId @1 :UInt64;
  union {
    hello @2 :Hello;
    spawn @3 :Spawn;
    tell @4 :Tell;
    ask @5 :Ask;
    # The agent id ("tenant/name") to stop for good.
    stop @6 :Text;
  }
}

# The first request of every connection: the protocol version and the credentials (an API key
# or an HS256 JWT, as in `Authorization: Bearer`).
struct Hello {
  version @0 :UInt16;
  token @1 :Text;
}

struct Spawn {
  agent @0 :Text;
  kind @1 :Text;
  # A JSON object ("" = {}).
  config @2 :Text;
  breaker @3 :Bool;
  # "permanent" (""), "transient" or "temporary".
  restart @4 :Text;
  # A pin: the node to spawn on ("" = placement decides).
  node @5 :Text;
}

struct Tell {
  agent @0 :Text;
  # A JSON document.
  body @1 :Text;
  # Idempotency key (`Idempotency-Key: CLIENT:SEQ` over HTTP); "" = none.
  clientId @2 :Text;
  clientSeq @3 :UInt64;
}

struct Ask {
  agent @0 :Text;
  body @1 :Text;
  # 0 = the node's gateway.ask_timeout_ms_default.
  timeoutMs @2 :UInt32;
  clientId @3 :Text;
  clientSeq @4 :UInt64;
}

struct Response {
  # The request's id; 0 when the node could not read one (a protocol error, then it closes).
  id @0 :UInt64;
  correlationId @1 :UInt64;
  union {
    # JSON: the agent's reply verbatim (ask), {"accepted":true} (tell), {"id","kind","node"}
    # (spawn), {} (stop), {"node","principal","tenant","role","version"} (hello).
    ok @2 :Text;
    error @3 :Error;
  }
}

struct Error {
  # The errc number (protocols/errc.hpp) and its snake_case name.
  code @0 :UInt16;
  name @1 :Text;
  message @2 :Text;
  # With rate_limited and overloaded: when to try again.
  retryAfterMs @3 :UInt32;
}
