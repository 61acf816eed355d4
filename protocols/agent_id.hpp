#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include <caf/all.hpp>

namespace hive {

/// Longest tenant part of an agent id, in bytes.
inline constexpr size_t tenant_bytes_max = 63;

/// Longest name part of an agent id, in bytes.
inline constexpr size_t agent_name_bytes_max = 191;

/// The stable identity of an agent: `tenant/name`. Users and other agents address agents by
/// id, never by CAF handle. Both parts are non-empty and use lower-case ASCII letters, digits,
/// `-`, `_` and `.` only; neither part may be `.` or `..`.
struct agent_id {
  std::string tenant;
  std::string name;

  /// Returns `tenant/name`.
  [[nodiscard]] std::string str() const {
    return tenant + '/' + name;
  }

  friend bool operator==(const agent_id&, const agent_id&) = default;
  friend auto operator<=>(const agent_id&, const agent_id&) = default;
};

/// Checks one part (tenant or name) of an id; returns an error naming the problem.
[[nodiscard]] caf::error validate_id_part(std::string_view part, std::string_view what,
                                          size_t bytes_max);

/// Parses and validates `tenant/name`.
[[nodiscard]] caf::expected<agent_id> parse_agent_id(std::string_view text);

/// Builds and validates an id from its two parts.
[[nodiscard]] caf::expected<agent_id> make_agent_id(std::string_view tenant, std::string_view name);

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_id& x) {
  return f(caf::meta::type_name("hive.agent_id"), x.tenant, x.name);
}

} // namespace hive

template <>
struct std::hash<hive::agent_id> {
  size_t operator()(const hive::agent_id& x) const noexcept {
    auto h = std::hash<std::string>{}(x.tenant);
    return h ^ (std::hash<std::string>{}(x.name) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  }
};
