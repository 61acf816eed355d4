#include "protocols/agent_id.hpp"

#include "protocols/errc.hpp"

namespace hive {

caf::error validate_id_part(std::string_view part, std::string_view what, size_t bytes_max) {
  if (part.empty())
    return make_error(errc::invalid_agent_id, std::string{what} + " is empty");
  if (part.size() > bytes_max)
    return make_error(errc::invalid_agent_id,
                      std::string{what} + " is " + std::to_string(part.size())
                        + " bytes, the limit is " + std::to_string(bytes_max));
  if (part == "." || part == "..")
    return make_error(errc::invalid_agent_id, std::string{what} + " may not be '.' or '..'");
  for (char c : part) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) {
      std::string shown =
        (c >= 0x20 && c < 0x7f) ? std::string(1, c) : "\\x" + std::to_string(uint8_t(c));
      return make_error(errc::invalid_agent_id,
                        std::string{what} + " contains '" + shown
                          + "': allowed are lower-case letters, digits, '-', '_' and '.'");
    }
  }
  return {};
}

caf::expected<agent_id> make_agent_id(std::string_view tenant, std::string_view name) {
  if (auto err = validate_id_part(tenant, "tenant", tenant_bytes_max))
    return err;
  if (auto err = validate_id_part(name, "agent name", agent_name_bytes_max))
    return err;
  return agent_id{std::string{tenant}, std::string{name}};
}

caf::expected<agent_id> parse_agent_id(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos)
    return make_error(errc::invalid_agent_id,
                      "agent id must be 'tenant/name', got no '/' in '"
                        + std::string{text.substr(0, 80)} + "'");
  return make_agent_id(text.substr(0, slash), text.substr(slash + 1));
}

} // namespace hive
