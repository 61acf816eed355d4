#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/agent_id.hpp"
#include "protocols/messages.hpp"

namespace hive {

class node_runtime;

/// What an agent sees of the call it is handling. The JSON body is parsed lazily: kinds that
/// pass the body through (echo) never pay for parsing.
class call_context {
public:
  call_context(const agent_id& self_id, const envelope& env, const std::string& body,
               size_t json_depth_max)
      : self_id_(self_id), env_(env), body_(body), json_depth_max_(json_depth_max) {}

  /// The id of the agent handling the call.
  [[nodiscard]] const agent_id& self_id() const noexcept {
    return self_id_;
  }

  /// The envelope: correlation id, tenant, deadline, sender.
  [[nodiscard]] const envelope& env() const noexcept {
    return env_;
  }

  /// The raw JSON text of the body.
  [[nodiscard]] const std::string& body_text() const noexcept {
    return body_;
  }

  /// The parsed body; an `invalid_argument` error names the parse problem.
  [[nodiscard]] caf::expected<const nlohmann::json*> json();

private:
  const agent_id& self_id_;
  const envelope& env_;
  const std::string& body_;
  size_t json_depth_max_;
  std::optional<nlohmann::json> parsed_;
};

/// An agent's behaviour. The runtime owns one instance per activation inside a CAF actor and
/// calls it one message at a time, so an agent needs no locking.
///
/// Failure model (as in Erlang): returning an error answers the caller with it and the agent
/// keeps running; throwing an exception crashes the agent: callers get `agent_failed` and its
/// supervisor restarts it with a fresh instance from its kind.
class agent {
public:
  virtual ~agent() = default;

  /// Handles one call. The returned JSON text is the reply to an ask (ignored for a tell).
  [[nodiscard]] virtual caf::expected<std::string> handle(call_context& call) = 0;

  /// A small JSON summary of the state, shown when the agent is inspected.
  [[nodiscard]] virtual nlohmann::json summary() const {
    return nlohmann::json::object();
  }
};

/// A registered agent kind: a name and a factory that validates a JSON config and makes a
/// fresh agent (called at spawn and at every restart).
struct kind_spec {
  std::string name;
  std::string description;
  std::function<caf::expected<std::unique_ptr<agent>>(const nlohmann::json& config)> make;
};

/// The kinds a node can spawn, registered at start-up (not thread-safe to modify afterwards).
class kind_registry {
public:
  /// Registers `spec`; an error if the name is taken or invalid.
  [[nodiscard]] caf::error add(kind_spec spec);

  /// Returns the kind called `name`, or nullptr.
  [[nodiscard]] const kind_spec* find(std::string_view name) const;

  /// Names of all kinds, sorted.
  [[nodiscard]] std::vector<std::string> names() const;

private:
  std::map<std::string, kind_spec, std::less<>> kinds_;
};

} // namespace hive
