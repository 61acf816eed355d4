#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/agent_id.hpp"

namespace hive {

/// Longest capability name, in bytes.
inline constexpr size_t capability_bytes_max = 64;

/// The most agents one broadcast reaches (one call sends at most 1024 messages).
inline constexpr size_t broadcast_recipients_max = 1024;

/// Checks one capability name: 1..64 bytes of `a-z 0-9 . _ : -`, starting with a letter or a
/// digit. An `invalid_argument` error names `what` and the problem.
[[nodiscard]] caf::error validate_capability(std::string_view name, std::string_view what);

/// Checks a declared list: at most `count_max` names, each valid, no duplicates.
[[nodiscard]] caf::error validate_capabilities(const std::vector<std::string>& names,
                                               size_t count_max);

/// One agent that offers a capability, as a node sees it.
struct provider {
  agent_id id;
  std::string node;
  /// "active" (running here) or "passivated" (stored here, activated by its next message).
  std::string state;
  /// Messages waiting in its mailbox when last sampled (0 when passivated).
  uint64_t load = 0;
};

/// `{"id","node","state","load"}`.
[[nodiscard]] nlohmann::json to_json(const provider& p);

/// Which providers of a capability a broadcast reaches (`call_context::broadcast`,
/// `POST /v1/capabilities/{name}/broadcast`). Every field is optional; a provider must pass all
/// that are set. JSON: `{"state":"active"|"any", "nodes":[NAME...], "load_max":N,
/// "name_prefix":"...", "exclude":[ID...], "limit":N}`.
struct broadcast_filter {
  /// Active providers only (the default, "any", also reaches passivated ones, which the
  /// message activates).
  bool active_only = false;
  /// Providers on these nodes only (empty: any node).
  std::vector<std::string> nodes;
  /// Providers whose sampled load is at most this.
  std::optional<uint64_t> load_max;
  /// Providers whose agent name (the part after `tenant/`) starts with this.
  std::string name_prefix;
  /// Agents left out (a broadcasting agent leaves itself out).
  std::vector<std::string> exclude;
  /// At most this many recipients, least loaded first (1..1024).
  size_t limit = broadcast_recipients_max;

  /// Parses a filter object; invalid_argument names the bad field.
  [[nodiscard]] static caf::expected<broadcast_filter> parse(const nlohmann::json& j);

  /// The JSON form (`parse` reads it back).
  [[nodiscard]] nlohmann::json to_json() const;

  /// True if provider entry `p` (`{"id","node","state","load"}`) passes.
  [[nodiscard]] bool matches(const nlohmann::json& p) const;

  /// The ids of the providers of a lookup answer (`{"providers":[...]}`) that pass, in the
  /// answer's order (least loaded first), at most `limit`.
  [[nodiscard]] std::vector<agent_id> select(const nlohmann::json& answer) const;
};

/// The node-local map from capability to the agents of this node that declared it. Entries
/// are added when an agent is spawned, adopted (migration) or found in the store at start;
/// they are never removed eagerly: `node_runtime::providers` checks each against the
/// directory and the store when it is asked and drops those that are gone (stopped, moved
/// away, failed for good). Thread-safe.
class capability_index {
public:
  /// Records that `id` offers `names`.
  void add(const agent_id& id, const std::vector<std::string>& names);

  /// The ids that declared `name` (of `tenant` only if non-empty), in id order, at most
  /// `limit`.
  [[nodiscard]] std::vector<agent_id> find(std::string_view name, std::string_view tenant,
                                           size_t limit) const;

  /// Forgets `id` under `name` (found gone by a query).
  void drop(std::string_view name, const agent_id& id);

  /// Entries (capability, agent) held.
  [[nodiscard]] size_t size() const;

private:
  mutable std::mutex mtx_;
  std::unordered_map<std::string, std::set<std::string>> by_name_;
  size_t size_ = 0;
};

} // namespace hive
