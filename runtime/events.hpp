#pragma once

// The node's stream of agent lifecycle events (agent started/restarted/stopped/crashed,
// migrations, breaker transitions), for the gateway's `GET /v1/events` WebSocket stream.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace hive {

/// One lifecycle event.
struct agent_event {
  /// `agent_started` (spawned or activated), `agent_restarted`, `agent_stopped` (stopped,
  /// passivated or moved away), `agent_crashed`, `agent_migrated`, `breaker_transition`, and
  /// what agents publish (`call_context::publish`): the planner's `workflow_step` and
  /// `workflow_finished`.
  std::string type;
  /// The agent's id, `tenant/name`.
  std::string agent;
  /// The agent's kind, when the publisher knows it (else empty).
  std::string kind;
  /// What else belongs to the event (restarts, reason, from/to, ...).
  nlohmann::json detail = nlohmann::json::object();

  /// The tenant part of `agent`.
  [[nodiscard]] std::string_view tenant() const noexcept {
    return std::string_view{agent}.substr(0, agent.find('/'));
  }
};

/// Fans events out to subscribers. Publishing is cheap when nobody listens (one atomic
/// load). Sinks run on the publisher's thread under the bus lock: they must not block or call
/// back into the bus (the gateway's sink only posts to a connection's strand).
class event_bus {
public:
  using sink = std::function<void(const agent_event&, const std::string& json)>;

  /// The node name put into every event.
  void set_node(std::string node);

  /// Adds a sink; returns its id for `unsubscribe`.
  uint64_t subscribe(sink s);

  /// Removes a sink; after it returns, the sink is not running and will not run again.
  void unsubscribe(uint64_t id);

  /// Hands `e` (and its JSON text: `{"type","agent","tenant","kind","node","ts_ms",...detail}`)
  /// to every sink.
  void publish(agent_event e);

  /// Subscribers now.
  [[nodiscard]] size_t subscribers() const noexcept {
    return count_.load();
  }

private:
  std::mutex mtx_;
  std::string node_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, sink> sinks_;
  std::atomic<size_t> count_{0};
};

} // namespace hive
