#pragma once

// Typed messages that cross actor (and, later, node) boundaries. Each is registered in the
// `hive` type-ID block (protocols/type_ids.hpp) so CAF can serialize it.

#include <cstdint>
#include <string>

#include <caf/all.hpp>

#include "protocols/agent_id.hpp"

namespace hive {

/// Travels with every message to an agent.
struct envelope {
  /// Ties together every log line and message caused by one external request.
  uint64_t correlation_id = 0;
  /// Tenant on whose behalf the message is sent.
  std::string tenant;
  /// Absolute deadline in milliseconds since the Unix epoch; 0 means none.
  int64_t deadline_unix_ms = 0;
  /// Id (`tenant/name`) of the sending agent, or a gateway principal; may be empty.
  std::string sender;
  /// Idempotency key (`Idempotency-Key: CLIENT:SEQ`): a journaled agent that already handled
  /// (client_id, client_seq) answers with the original reply instead of handling it again.
  /// Empty client_id = none.
  std::string client_id;
  uint64_t client_seq = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, envelope& x) {
  return f(caf::meta::type_name("hive.envelope"), x.correlation_id, x.tenant, x.deadline_unix_ms,
           x.sender, x.client_id, x.client_seq);
}

/// A JSON call to an agent: as a request it expects an `agent_reply` (ask); as a plain send it
/// expects nothing (tell).
struct agent_call {
  envelope env;
  /// The JSON document given to the agent.
  std::string body;
  /// A typed message instead of a JSON body: CAF values whose types are in a type-ID block
  /// registered on every node (the `hive` block here, e.g. `add_request`), serialized by CAF
  /// when the call crosses nodes. Empty: a JSON call. Agents read it through
  /// `call_context::content()`.
  caf::message content = {};
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_call& x) {
  return f(caf::meta::type_name("hive.agent_call"), x.env, x.body, x.content);
}

/// A typed increment, understood by the `counter` kind: an example of a typed C++ message
/// between agents (the `relay` kind sends it with `"typed":true`), on one node or across
/// nodes.
struct add_request {
  int64_t by = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, add_request& x) {
  return f(caf::meta::type_name("hive.add_request"), x.by);
}

/// The answer of an agent to an `agent_call` sent as a request.
struct agent_reply {
  /// The JSON document the agent answered with.
  std::string body;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_reply& x) {
  return f(caf::meta::type_name("hive.agent_reply"), x.body);
}

/// What the runtime tells an agent about its own asynchronous work (runtime/kind.hpp,
/// `call_context::ask`, `schedule`, `find_providers`), and the wake-up of a resident kind's
/// activation. Arrives as the typed content of an `agent_call` sent to the agent by id, so it
/// finds the agent wherever it lives by then. Only the runtime makes these: the gateways
/// carry JSON bodies only.
struct agent_notice {
  /// What happened.
  enum what_type : uint8_t {
    /// The reply (or failure) of an ask the agent made; `tag` is the ask's.
    reply = 1,
    /// A timer the agent set went off; `tag` is the timer's.
    timer = 2,
    /// The activation started (resident kinds): pick up unfinished work.
    wake = 3,
    /// The answer of a provider lookup: `body` is `{"providers":[{"id","node","state",
    /// "load"}],...}`.
    providers = 4,
    /// A broadcast went out: `body` is `{"capability","sent_to":[ids],"nodes_failed":[...]}`.
    broadcast = 5,
  };
  uint8_t what = 0;
  std::string tag;
  /// 0: success (`body` is the reply's JSON text); else the `errc` of the failure (`body` is
  /// its message).
  uint16_t code = 0;
  std::string body;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_notice& x) {
  return f(caf::meta::type_name("hive.agent_notice"), x.what, x.tag, x.code, x.body);
}

/// Asks an agent (or breaker) for a JSON description of itself (answered with `agent_reply`).
struct inspect_request {
  uint64_t correlation_id = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, inspect_request& x) {
  return f(caf::meta::type_name("hive.inspect_request"), x.correlation_id);
}

} // namespace hive
