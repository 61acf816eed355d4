#include "protocols/errc.hpp"

namespace hive {

std::string_view to_string(errc x) noexcept {
  switch (x) {
    case errc::none: return "none";
    case errc::invalid_argument: return "invalid_argument";
    case errc::invalid_agent_id: return "invalid_agent_id";
    case errc::unknown_kind: return "unknown_kind";
    case errc::agent_not_found: return "agent_not_found";
    case errc::agent_exists: return "agent_exists";
    case errc::circuit_open: return "circuit_open";
    case errc::timeout: return "timeout";
    case errc::too_large: return "too_large";
    case errc::overloaded: return "overloaded";
    case errc::shutting_down: return "shutting_down";
    case errc::agent_failed: return "agent_failed";
    case errc::rejected: return "rejected";
    case errc::escalated: return "escalated";
    case errc::invalid_config: return "invalid_config";
    case errc::io_error: return "io_error";
    case errc::internal: return "internal";
    case errc::conflict: return "conflict";
    case errc::storage_error: return "storage_error";
    case errc::storage_full: return "storage_full";
    case errc::corrupt_record: return "corrupt_record";
    case errc::migrated: return "migrated";
    case errc::unavailable: return "unavailable";
    case errc::unauthenticated: return "unauthenticated";
    case errc::forbidden: return "forbidden";
    case errc::rate_limited: return "rate_limited";
    case errc::not_found: return "not_found";
    case errc::quota_exceeded: return "quota_exceeded";
    case errc::fenced: return "fenced";
    case errc::no_quorum: return "no_quorum";
  }
  return "unknown";
}

caf::error make_error(errc x, std::string message) {
  return caf::error{static_cast<uint8_t>(x), errc_category, caf::make_message(std::move(message))};
}

caf::error make_error(errc x) {
  return caf::error{static_cast<uint8_t>(x), errc_category};
}

errc code_of(const caf::error& err) noexcept {
  if (!err)
    return errc::none;
  if (err.category() == errc_category)
    return static_cast<errc>(err.code());
  if (err.category() == caf::atom("system")) {
    switch (static_cast<caf::sec>(err.code())) {
      case caf::sec::request_timeout: return errc::timeout;
      case caf::sec::request_receiver_down: return errc::agent_failed;
      case caf::sec::invalid_argument: return errc::invalid_argument;
      default: return errc::internal;
    }
  }
  if (err.category() == caf::atom("exit"))
    return errc::agent_failed;
  return errc::internal;
}

std::string message_of(const caf::error& err) {
  if (!err)
    return {};
  if (err.category() == errc_category
      && (err.context().match_elements<std::string>()
          || err.context().match_elements<std::string, std::string>()))
    return err.context().get_as<std::string>(0); // (a second string is a hint, see runtime)
  if (err.category() == errc_category)
    return std::string{to_string(static_cast<errc>(err.code()))};
  return caf::to_string(err);
}

std::string describe(const caf::error& err) {
  if (!err)
    return "none";
  if (err.category() == errc_category)
    return render_error(err.code(), err.category(), err.context());
  return caf::to_string(err);
}

std::string render_error(uint8_t code, caf::atom_value, const caf::message& context) {
  std::string result{to_string(static_cast<errc>(code))};
  if (context.match_elements<std::string>() || context.match_elements<std::string, std::string>()) {
    result += ": ";
    result += context.get_as<std::string>(0);
  }
  return result;
}

} // namespace hive
