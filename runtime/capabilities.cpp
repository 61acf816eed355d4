#include "runtime/capabilities.hpp"

#include <algorithm>

#include "protocols/errc.hpp"

namespace hive {

caf::error validate_capability(std::string_view name, std::string_view what) {
  auto shown = std::string{name.substr(0, 80)};
  if (name.empty() || name.size() > capability_bytes_max)
    return make_error(errc::invalid_argument,
                      std::string{what} + ": capability '" + shown + "' must be 1.."
                        + std::to_string(capability_bytes_max) + " bytes");
  auto ok_first = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!ok_first(name.front()))
    return make_error(errc::invalid_argument,
                      std::string{what} + ": capability '" + shown
                        + "' must start with a-z or 0-9");
  for (char c : name)
    if (!ok_first(c) && c != '.' && c != '_' && c != ':' && c != '-')
      return make_error(errc::invalid_argument,
                        std::string{what} + ": capability '" + shown
                          + "' may hold only a-z 0-9 . _ : -");
  return {};
}

caf::error validate_capabilities(const std::vector<std::string>& names, size_t count_max) {
  if (names.size() > count_max)
    return make_error(errc::invalid_argument,
                      "an agent may declare at most agents.capabilities_per_agent_max = "
                        + std::to_string(count_max) + " capabilities, got "
                        + std::to_string(names.size()));
  for (size_t i = 0; i < names.size(); ++i) {
    if (auto err = validate_capability(names[i], "capabilities"))
      return err;
    if (std::find(names.begin(), names.begin() + static_cast<ptrdiff_t>(i), names[i])
        != names.begin() + static_cast<ptrdiff_t>(i))
      return make_error(errc::invalid_argument, "capabilities: '" + names[i] + "' is listed twice");
  }
  return {};
}

nlohmann::json to_json(const provider& p) {
  return {{"id", p.id.str()}, {"node", p.node}, {"state", p.state}, {"load", p.load}};
}

void capability_index::add(const agent_id& id, const std::vector<std::string>& names) {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& n : names)
    if (by_name_[n].insert(id.str()).second)
      ++size_;
}

std::vector<agent_id> capability_index::find(std::string_view name, std::string_view tenant,
                                             size_t limit) const {
  std::vector<agent_id> out;
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = by_name_.find(std::string{name});
  if (i == by_name_.end())
    return out;
  auto from = tenant.empty() ? i->second.begin() : i->second.lower_bound(std::string{tenant} + "/");
  for (auto j = from; j != i->second.end() && out.size() < limit; ++j) {
    auto id = parse_agent_id(*j);
    if (!id)
      continue;
    if (!tenant.empty() && id->tenant != tenant)
      break;
    out.push_back(std::move(*id));
  }
  return out;
}

void capability_index::drop(std::string_view name, const agent_id& id) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = by_name_.find(std::string{name});
  if (i == by_name_.end())
    return;
  size_ -= i->second.erase(id.str());
  if (i->second.empty())
    by_name_.erase(i);
}

size_t capability_index::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return size_;
}

} // namespace hive
