#include "runtime/directory.hpp"

#include <algorithm>
#include <cassert>
#include <mutex>

namespace hive {

namespace {

std::atomic<uint64_t> next_directory_uid{1};

} // namespace

directory::directory()
    : shards_(std::make_unique<shard[]>(stripes)), uid_(next_directory_uid.fetch_add(1)) {}

directory::shard& directory::shard_of(const agent_id& id) const {
  return shards_[std::hash<agent_id>{}(id) % stripes];
}

bool directory::reserve(agent_view view) {
  assert(!view.id.tenant.empty() && !view.id.name.empty());
  auto& s = shard_of(view.id);
  std::unique_lock<std::shared_mutex> guard{s.mtx};
  auto id = view.id;
  auto tenant = id.tenant;
  if (!s.map.emplace(std::move(id), std::move(view)).second)
    return false;
  {
    std::lock_guard<std::mutex> t{tenants_mtx_};
    ++tenant_sizes_[tenant];
  }
  size_.fetch_add(1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  return true;
}

bool directory::set_handles(const agent_id& id, caf::actor agent, caf::actor target,
                            uint64_t restarts) {
  auto& s = shard_of(id);
  std::unique_lock<std::shared_mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end())
    return false;
  if (agent)
    i->second.activated = true;
  i->second.agent = std::move(agent);
  i->second.target = std::move(target);
  i->second.restarts = restarts;
  i->second.hibernated = false;
  generation_.fetch_add(1, std::memory_order_release);
  return true;
}

bool directory::set_hibernated(const agent_id& id) {
  auto& s = shard_of(id);
  std::unique_lock<std::shared_mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end())
    return false;
  assert(!i->second.agent && !i->second.target);
  i->second.hibernated = true;
  return true;
}

std::optional<agent_view> directory::erase(const agent_id& id) {
  auto& s = shard_of(id);
  std::unique_lock<std::shared_mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end())
    return std::nullopt;
  auto view = std::move(i->second);
  s.map.erase(i);
  {
    std::lock_guard<std::mutex> t{tenants_mtx_};
    auto n = tenant_sizes_.find(id.tenant);
    assert(n != tenant_sizes_.end() && n->second > 0);
    if (--n->second == 0)
      tenant_sizes_.erase(n);
  }
  size_.fetch_sub(1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  return view;
}

size_t directory::tenant_size(std::string_view tenant) const {
  std::lock_guard<std::mutex> t{tenants_mtx_};
  auto n = tenant_sizes_.find(std::string{tenant});
  return n == tenant_sizes_.end() ? 0 : n->second;
}

std::optional<agent_view> directory::find(const agent_id& id) const {
  auto& s = shard_of(id);
  std::shared_lock<std::shared_mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end())
    return std::nullopt;
  return i->second;
}

std::optional<caf::actor> directory::target_of(const agent_id& id) const {
  auto& s = shard_of(id);
  std::shared_lock<std::shared_mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end())
    return std::nullopt;
  return i->second.target;
}

std::vector<agent_view> directory::list(std::string_view tenant, std::string_view after,
                                        size_t limit) const {
  // Collect candidates > after from every shard, then keep the `limit` smallest ids.
  std::vector<std::pair<std::string, agent_view>> all;
  for (size_t k = 0; k < stripes; ++k) {
    auto& s = shards_[k];
    std::shared_lock<std::shared_mutex> guard{s.mtx};
    for (auto& [id, view] : s.map) {
      if (!tenant.empty() && id.tenant != tenant)
        continue;
      auto key = id.str();
      if (!after.empty() && key <= after)
        continue;
      all.emplace_back(std::move(key), view);
    }
  }
  auto n = std::min(limit, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<ptrdiff_t>(n), all.end(),
                    [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<agent_view> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i)
    out.push_back(std::move(all[i].second));
  return out;
}

std::vector<agent_view> directory::tenant_agents(std::string_view tenant) const {
  return list(tenant, {}, size_.load() + 1);
}

} // namespace hive
