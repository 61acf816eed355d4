#pragma once

#include <string>
#include <string_view>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "runtime/kind.hpp"

/// Pub/sub topics for agents, built as virtual agents (as Orleans streams are built on
/// grains): a topic `NAME` of tenant `T` is the journaled agent `T/topic.NAME` of kind
/// `topic`, which keeps its subscriber list (agent ids of its tenant) durably and, like any
/// journaled agent, survives passivation, restarts, migration and (replicated) node loss.
///
/// Ops (JSON asks to the topic agent, from agents or through the gateway's ask route):
/// - `{"op":"subscribe","agent":"T/x"}` -> `{"topic":NAME,"subscribers":N,"subscribed":bool}`
///   (`subscribed` false: it was already); beyond `topics.subscribers_max`: quota_exceeded.
/// - `{"op":"unsubscribe","agent":"T/x"}` -> `{"topic":NAME,"subscribers":N,"removed":bool}`.
/// - `{"op":"publish","message":M}` -> `{"topic":NAME,"delivered_to":N}`: M (any JSON) is sent
///   one way, as it is, to every subscriber; the envelope's sender is the topic's id, so a
///   subscriber can tell where it came from. Messages from one publisher reach each subscriber
///   in the order they were published (one topic agent handles them one at a time).
/// - `{"op":"subscribers"}` -> `{"topic":NAME,"subscribers":[ids]}`.
///
/// Guarantees: a subscription, once answered, is durable. Delivery is at most once per
/// subscriber (a one-way send by id, which activates a passivated subscriber); a subscriber
/// stopped for good stays on the list until it is unsubscribed (its deliveries fail and are
/// logged as `agent_send_failed`).
namespace hive::pubsub {

/// The agent name of topic `topic` (`topic.` + the topic's name).
[[nodiscard]] std::string agent_name(std::string_view topic);

/// The id of topic `topic` in `tenant`, or invalid_argument naming a bad topic name (1..128
/// bytes of a-z 0-9 . _ -).
[[nodiscard]] caf::expected<agent_id> topic_id(std::string_view tenant, std::string_view topic);

/// Subscribes the calling agent to `topic` of its tenant (the topic agent is spawned if it
/// does not exist yet). Goes out when this call succeeds; the topic's answer comes back as a
/// `reply` notice with tag `topic.subscribe:` + topic, which the agent may ignore.
[[nodiscard]] caf::error subscribe(call_context& call, std::string_view topic);

/// Unsubscribes the calling agent from `topic` (answer: a `reply` notice with tag
/// `topic.unsubscribe:` + topic).
[[nodiscard]] caf::error unsubscribe(call_context& call, std::string_view topic);

/// Publishes `message` on `topic` of the caller's tenant, one way, when this call succeeds.
/// A topic nobody ever subscribed to does not exist: the message goes nowhere (logged).
[[nodiscard]] caf::error publish(call_context& call, std::string_view topic,
                                 const nlohmann::json& message);

/// Registers the kind `topic` (journaled), bounded by `topics.subscribers_max`.
[[nodiscard]] caf::error register_topic_kind(kind_registry& registry,
                                             const node_config::topics_section& cfg);

} // namespace hive::pubsub
