#pragma once

// Messages between the node managers of a cluster (runtime/cluster.hpp). They cross the
// network: each is registered in the `hive` type-ID block (protocols/type_ids.hpp), and every
// node must register the same types under the same names.

#include <cstdint>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "protocols/messages.hpp"

namespace hive {

/// Version of the node-manager protocol; a node refuses a peer that speaks another one.
constexpr uint32_t cluster_protocol_version = 13;

/// One node as the member list knows it.
struct member_info {
  /// `node.name`, unique in the cluster.
  std::string name;
  /// The node's cluster endpoint `HOST:PORT`.
  std::string address;
  /// The node's HTTP gateway `HOST:PORT` (informational).
  std::string gateway;
  /// `up`, `down` or `leaving` (see runtime/cluster.hpp).
  std::string status;
  /// Grows with every start of the node (milliseconds since the Unix epoch at start): the
  /// entry with the larger incarnation wins; a restarted node replaces its old entry.
  uint64_t incarnation = 0;
  /// Agents running on the node (as it last reported).
  uint64_t agents = 0;
  /// Where the node takes calls by id (`HOST:PORT` of its call transport,
  /// runtime/transport.hpp).
  std::string transport;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, member_info& x) {
  return f(caf::meta::type_name("hive.member_info"), x.name, x.address, x.gateway, x.transport,
           x.status, x.incarnation, x.agents);
}

/// A node asks to join: it tells who it is and what it speaks.
struct join_request {
  std::string cluster_name;
  uint32_t protocol_version = 0;
  member_info self;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, join_request& x) {
  return f(caf::meta::type_name("hive.join_request"), x.cluster_name, x.protocol_version, x.self);
}

/// The answer to a `join_request`: accepted with the member list, or refused with a reason.
struct join_reply {
  bool accepted = false;
  std::string reason;
  std::vector<member_info> members;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, join_reply& x) {
  return f(caf::meta::type_name("hive.join_reply"), x.accepted, x.reason, x.members);
}

/// The sender's member list, spread to every member after each change.
struct member_gossip {
  std::vector<member_info> members;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, member_gossip& x) {
  return f(caf::meta::type_name("hive.member_gossip"), x.members);
}

/// A call by id forwarded from another node's gateway or runtime to a node that may host the
/// agent. `op`: `ask` (answered with the agent's reply), `tell` (`{"accepted":true}`),
/// `inspect` (the inspection JSON), `stop` (`{}`) or `migrate` (the body names the target
/// node; answered with the migration's result); errors as errors (agent_not_found when the
/// agent is not there). A `tell` for an agent that moved on from the receiving node goes on
/// from there once, as `relayed_tell` (a tell that is not passed on again).
struct remote_call {
  std::string op;
  agent_id id;
  agent_call call;
  int64_t timeout_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, remote_call& x) {
  return f(caf::meta::type_name("hive.remote_call"), x.op, x.id, x.call, x.timeout_ms);
}

/// A spawn placed on another node (by rendezvous hashing or a pin). Answered with an
/// `agent_reply` whose body is `{"id","kind","node"}`, or an error.
struct remote_spawn {
  agent_id id;
  std::string kind;
  /// The spawn config as JSON text.
  std::string config;
  bool breaker = false;
  /// permanent | transient | temporary.
  std::string restart;
  uint64_t correlation_id = 0;
  /// The creator chose the node.
  bool pinned = false;
  /// Declared capabilities (empty: the kind's defaults).
  std::vector<std::string> capabilities;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, remote_spawn& x) {
  return f(caf::meta::type_name("hive.remote_spawn"), x.id, x.kind, x.config, x.breaker, x.restart,
           x.correlation_id, x.pinned, x.capabilities);
}

/// A live migration hands an agent to another node (runtime/cluster.hpp): its meta and its
/// state, as the checksummed records of protocols/records.hpp (verified by the receiver). The
/// receiver stores both durably, activates the agent, then answers an `agent_reply` with
/// `{"node","epoch"}`; on an error it keeps nothing.
struct migrate_in {
  agent_id id;
  /// `records::encode(meta_record)`.
  std::string meta;
  /// `records::encode(snapshot_record)`: the state as of the last event applied.
  std::string snapshot;
  /// The node the agent leaves.
  std::string from;
  /// Names this shipment (`migration_payload::shipment`).
  uint64_t shipment = 0;
  /// The source's wall clock when it sent this, and its `cluster.migration_timeout_ms`
  /// (`migration_payload`: the target's deadlines).
  uint64_t sent_unix_ms = 0;
  uint64_t timeout_ms = 0;
  /// The epoch the replica set promised the target (`migration_payload::granted_epoch`).
  uint64_t granted_epoch = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migrate_in& x) {
  return f(caf::meta::type_name("hive.migrate_in"), x.id, x.meta, x.snapshot, x.from, x.shipment,
           x.sent_unix_ms, x.timeout_ms, x.granted_epoch);
}

/// Anti-entropy for state every member keeps a copy of (the API keys, actors/auth.hpp
/// `key_store`: a CRDT, so merging in any order converges). `digest` alone: "this is what I
/// have"; a receiver whose digest differs answers with its whole `state` and `reply` set. With
/// `state`: merge it; with `reply` set and a digest that still differs after the merge, answer
/// with this node's `state` (reply unset). Two messages make two members equal.
struct key_sync {
  std::string digest;
  std::string state;
  bool reply = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, key_sync& x) {
  return f(caf::meta::type_name("hive.key_sync"), x.digest, x.state, x.reply);
}

} // namespace hive
