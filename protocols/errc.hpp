#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <caf/all.hpp>

namespace hive {

/// The project's one error enum. Every operating error that crosses a module boundary is a
/// `caf::error` in the `hive` category with one of these codes and a message naming what was
/// wrong. Values are stable: they travel between nodes.
enum class errc : uint8_t {
  /// Not an error.
  none = 0,
  /// A request, body, flag or config value is malformed or out of range.
  invalid_argument = 1,
  /// An agent id does not match `tenant/name` (lower-case letters, digits, `-_.`) or is too long.
  invalid_agent_id = 2,
  /// The agent kind is not registered on this node.
  unknown_kind = 3,
  /// No agent with this id exists.
  agent_not_found = 4,
  /// An agent with this id already exists.
  agent_exists = 5,
  /// The agent's circuit breaker is open: the call was refused without reaching the agent.
  circuit_open = 6,
  /// The call did not complete before its deadline.
  timeout = 7,
  /// A payload, header or structure exceeds its configured limit.
  too_large = 8,
  /// A configured capacity (agents, connections, mailbox) is exhausted.
  overloaded = 9,
  /// The node is shutting down and accepts no new work.
  shutting_down = 10,
  /// The agent failed while handling the call (it is being restarted by its supervisor).
  agent_failed = 11,
  /// The agent answered the call with an application-level error.
  rejected = 12,
  /// A supervisor exceeded its restart intensity and escalated to its parent.
  escalated = 13,
  /// A configuration file or key is invalid.
  invalid_config = 14,
  /// An operating-system or library call failed (I/O, bind, lock).
  io_error = 15,
  /// An internal invariant failed in a way that is reported rather than asserted.
  internal = 16,
  /// A journal append or write lost a race: the expected sequence number was not the last one.
  conflict = 17,
  /// The storage engine failed to read or write (I/O error); nothing was acknowledged.
  storage_error = 18,
  /// The storage device is full; nothing was acknowledged.
  storage_full = 19,
  /// A stored record failed its checksum or could not be decoded; it is never served as state.
  corrupt_record = 20,
  /// The agent moved to another node (live migration): its old activation stopped with this
  /// reason; re-resolve the id.
  migrated = 21,
  /// The node that has the agent cannot be reached (the connection to it failed or broke
  /// before the answer); the call may or may not have taken effect there.
  unavailable = 22,
  /// The request carries no credentials, or ones that are malformed, unknown, revoked,
  /// expired or forged (HTTP 401).
  unauthenticated = 23,
  /// The credentials are valid but their role or tenant does not allow the call (HTTP 403).
  forbidden = 24,
  /// The tenant's request rate exceeds its quota; retry after the time given (HTTP 429).
  rate_limited = 25,
  /// The named object (an API key, ...) does not exist.
  not_found = 26,
  /// A per-tenant count quota is used up (quota.agents_max: agents of the tenant on the node);
  /// stop some first (HTTP 403).
  quota_exceeded = 27,
  /// A newer activation of the agent holds its replicas (epoch fencing): this activation's
  /// write was refused and it stopped; re-resolve the id (HTTP 503).
  fenced = 28,
  /// A majority of the agent's replica set did not acknowledge the write in time, or cannot
  /// be reached: the write is not acknowledged (it may still take effect) (HTTP 503).
  no_quorum = 29,
};

/// The error category atom of `errc` ("hive").
inline constexpr caf::atom_value errc_category = caf::atom("hive");

/// Returns the stable snake_case name of `x`, used as the `code` field of HTTP errors.
[[nodiscard]] std::string_view to_string(errc x) noexcept;

/// Makes a `caf::error` in the `hive` category with a human-readable context message.
[[nodiscard]] caf::error make_error(errc x, std::string message);

/// Makes a `caf::error` in the `hive` category without context.
[[nodiscard]] caf::error make_error(errc x);

/// Returns the `errc` of `err`, mapping CAF's own codes (request timeout, receiver down)
/// onto the closest project code; `errc::none` for an empty error.
[[nodiscard]] errc code_of(const caf::error& err) noexcept;

/// Returns the context message of `err` if it carries one, otherwise a rendering of it.
[[nodiscard]] std::string message_of(const caf::error& err);

/// Describes any error for logs: `code: message` for `hive` errors, CAF's rendering otherwise.
[[nodiscard]] std::string describe(const caf::error& err);

/// Renders a `hive` error for CAF's error renderer registry.
[[nodiscard]] std::string render_error(uint8_t code, caf::atom_value category,
                                       const caf::message& context);

} // namespace hive
