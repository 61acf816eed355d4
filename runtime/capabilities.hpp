#pragma once

#include <cstdint>
#include <mutex>
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
