#pragma once

#include <string>
#include <vector>

#include <caf/error.hpp>

#include "config/node_config.hpp"
#include "protocols/errc.hpp"

namespace hive::bench {

/// Applies `--set KEY=VALUE` overrides of an agent-bench scenario to `cfg`, in order; the
/// first malformed or rejected one is an invalid_config error naming it.
[[nodiscard]] inline caf::error apply_settings(node_config& cfg,
                                               const std::vector<std::string>& settings) {
  for (auto& kv : settings) {
    auto eq = kv.find('=');
    if (eq == std::string::npos)
      return make_error(errc::invalid_config, "--set needs KEY=VALUE, got '" + kv + "'");
    if (auto err = set_config_key(cfg, kv.substr(0, eq), kv.substr(eq + 1)))
      return make_error(errc::invalid_config, "--set " + kv + ": " + describe(err));
  }
  return {};
}

} // namespace hive::bench
