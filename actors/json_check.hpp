#pragma once

// Internal to actors/: the syntax and nesting check every JSON text from outside passes before
// it is parsed into a document (HTTP bodies, binary protocol bodies and configs).

#include <cstddef>
#include <string>

#include <caf/all.hpp>

namespace hive {

/// Checks that `text` is one JSON document nested at most `depth_max` deep. Errors:
/// invalid_argument (not JSON, naming the position), too_large (too deep).
[[nodiscard]] caf::error check_json(const std::string& text, size_t depth_max);

} // namespace hive
