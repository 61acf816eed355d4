// libFuzzer target: JSON message decoding as the gateways do it (actors/json_check.hpp): the
// syntax and depth check with the default limit (32 levels), then, for accepted texts, the
// parse into a document and a serialization of it, which must not throw.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/json_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text{reinterpret_cast<const char*>(data), size};
  if (hive::check_json(text, 32))
    return 0;
  // Accepted: it must parse without an exception, within the depth.
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded())
    std::abort();
  (void)doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return 0;
}
