#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/agent_id.hpp"

namespace hive {

/// What the runtime knows about one agent.
struct agent_view {
  agent_id id;
  std::string kind;
  std::string node;
  /// Name of the supervisor that owns it (`tenant:<tenant>`).
  std::string supervisor;
  /// Restarts since it was spawned.
  uint64_t restarts = 0;
  /// Whether a circuit breaker fronts it.
  bool has_breaker = false;
  /// Hibernated (agents.hibernate_idle_ms): no actor, its state in memory; the next call wakes
  /// it. Cleared by every set_handles.
  bool hibernated = false;
  /// Where messages go: the breaker if any, else the agent. Invalid while not yet started.
  caf::actor target;
  /// The agent itself (current activation). Invalid while restarting.
  caf::actor agent;
  /// The spawn config, kept so that restarts (also after escalation) can recreate it.
  std::shared_ptr<const nlohmann::json> config;
  /// True once the agent started for the first time (a mere reservation is false).
  bool activated = false;
  /// Restart type: permanent | transient | temporary.
  std::string restart = "permanent";
  /// Messages in its mailbox as last sampled by the agent (its load for capability queries);
  /// shared by its activations on this node.
  std::shared_ptr<std::atomic<uint64_t>> load = std::make_shared<std::atomic<uint64_t>>(0);
};

/// The node-local map from agent id to its current handles. Readers (every by-id send) take a
/// shared lock on one of `stripes` shards; writers (spawn, restart, stop) an exclusive one.
class directory {
public:
  directory();

  /// Inserts a reservation for `view.id`; false if the id exists.
  [[nodiscard]] bool reserve(agent_view view);

  /// Updates the handles of an id after a (re)start. Returns false if the id is gone.
  bool set_handles(const agent_id& id, caf::actor agent, caf::actor target, uint64_t restarts);

  /// Marks an id hibernated (its handles must be cleared already). Returns false if the id is
  /// gone.
  bool set_hibernated(const agent_id& id);

  /// Removes an id; returns the removed view.
  std::optional<agent_view> erase(const agent_id& id);

  /// Returns the view of `id`.
  [[nodiscard]] std::optional<agent_view> find(const agent_id& id) const;

  /// Returns the message target of `id` (breaker or agent): nullopt if the id is unknown, an
  /// invalid handle while the agent is (re)starting.
  [[nodiscard]] std::optional<caf::actor> target_of(const agent_id& id) const;

  /// Lists views in id order (`tenant/name`), after `after`, at most `limit`; if `tenant` is
  /// non-empty only that tenant's.
  [[nodiscard]] std::vector<agent_view> list(std::string_view tenant, std::string_view after,
                                             size_t limit) const;

  /// All views of `tenant`.
  [[nodiscard]] std::vector<agent_view> tenant_agents(std::string_view tenant) const;

  /// Number of ids of `tenant` (kept per tenant: O(1)).
  [[nodiscard]] size_t tenant_size(std::string_view tenant) const;

  /// Number of ids.
  [[nodiscard]] size_t size() const noexcept {
    return size_.load(std::memory_order_relaxed);
  }

  /// Unique among the directories this process ever created (caches key on it, not on the
  /// address, which a later directory may reuse).
  [[nodiscard]] uint64_t uid() const noexcept {
    return uid_;
  }

  /// Changes with every reservation, handle update and removal: a cached handle read at
  /// generation g is current while `generation()` still returns g.
  [[nodiscard]] uint64_t generation() const noexcept {
    return generation_.load(std::memory_order_acquire);
  }

private:
  static constexpr size_t stripes = 16;

  struct shard {
    mutable std::shared_mutex mtx;
    std::unordered_map<agent_id, agent_view> map;
  };

  shard& shard_of(const agent_id& id) const;

  std::unique_ptr<shard[]> shards_;
  mutable std::mutex tenants_mtx_;
  std::unordered_map<std::string, size_t> tenant_sizes_;
  std::atomic<size_t> size_{0};
  uint64_t uid_;
  std::atomic<uint64_t> generation_{1};
};

} // namespace hive
