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

caf::expected<broadcast_filter> broadcast_filter::parse(const nlohmann::json& j) {
  broadcast_filter f;
  if (j.is_null())
    return f;
  if (!j.is_object())
    return make_error(errc::invalid_argument, "field 'filter' must be a JSON object");
  auto bad = [](const std::string& field, const std::string& what) {
    return make_error(errc::invalid_argument, "filter field '" + field + "' " + what);
  };
  auto strings = [&](const nlohmann::json& v, const std::string& field,
                     std::vector<std::string>& out) -> caf::error {
    if (!v.is_array() || v.size() > broadcast_recipients_max)
      return bad(field,
                 "must be an array of at most " + std::to_string(broadcast_recipients_max)
                   + " strings");
    for (auto& x : v) {
      if (!x.is_string() || x.get_ref<const std::string&>().size() > 256)
        return bad(field, "must hold strings of at most 256 bytes");
      out.push_back(x.get<std::string>());
    }
    return {};
  };
  for (auto& [key, v] : j.items()) {
    if (key == "state") {
      if (v != "active" && v != "any")
        return bad(key, "must be \"active\" or \"any\"");
      f.active_only = v == "active";
    } else if (key == "nodes") {
      if (auto err = strings(v, key, f.nodes))
        return err;
    } else if (key == "exclude") {
      if (auto err = strings(v, key, f.exclude))
        return err;
    } else if (key == "load_max") {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        return bad(key, "must be a non-negative integer");
      f.load_max = v.get<uint64_t>();
    } else if (key == "name_prefix") {
      if (!v.is_string() || v.get_ref<const std::string&>().size() > agent_name_bytes_max)
        return bad(
          key, "must be a string of at most " + std::to_string(agent_name_bytes_max) + " bytes");
      f.name_prefix = v.get<std::string>();
    } else if (key == "limit") {
      if (!v.is_number_integer() || v.get<int64_t>() < 1
          || v.get<int64_t>() > static_cast<int64_t>(broadcast_recipients_max))
        return bad(key, "must be an integer 1.." + std::to_string(broadcast_recipients_max));
      f.limit = v.get<size_t>();
    } else {
      return make_error(errc::invalid_argument,
                        "unknown filter field '" + key.substr(0, 40)
                          + "' (known: state, nodes, load_max, name_prefix, exclude, limit)");
    }
  }
  return f;
}

nlohmann::json broadcast_filter::to_json() const {
  nlohmann::json j{{"state", active_only ? "active" : "any"}, {"limit", limit}};
  if (!nodes.empty())
    j["nodes"] = nodes;
  if (!exclude.empty())
    j["exclude"] = exclude;
  if (load_max)
    j["load_max"] = *load_max;
  if (!name_prefix.empty())
    j["name_prefix"] = name_prefix;
  return j;
}

bool broadcast_filter::matches(const nlohmann::json& p) const {
  if (!p.is_object())
    return false;
  auto id = p.value("id", "");
  if (active_only && p.value("state", "") != "active")
    return false;
  if (!nodes.empty() && std::find(nodes.begin(), nodes.end(), p.value("node", "")) == nodes.end())
    return false;
  if (load_max && p.value("load", uint64_t{0}) > *load_max)
    return false;
  if (std::find(exclude.begin(), exclude.end(), id) != exclude.end())
    return false;
  if (!name_prefix.empty()) {
    auto slash = id.find('/');
    if (slash == std::string::npos || id.compare(slash + 1, name_prefix.size(), name_prefix) != 0)
      return false;
  }
  return true;
}

std::vector<agent_id> broadcast_filter::select(const nlohmann::json& answer) const {
  std::vector<agent_id> out;
  auto list = answer.find("providers");
  if (list == answer.end() || !list->is_array())
    return out;
  for (auto& p : *list) {
    if (out.size() >= limit)
      break;
    if (!matches(p))
      continue;
    auto id = parse_agent_id(p.value("id", ""));
    if (id && std::find(out.begin(), out.end(), *id) == out.end())
      out.push_back(std::move(*id));
  }
  return out;
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
