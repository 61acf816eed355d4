#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace hive::log {

/// Sets up the process-wide JSON-lines logger on stderr. Each line is one JSON object:
/// `{"ts":"...","level":"info","node":"n1","event":"agent_started","actor":"acme/c1",
/// "cid":"00000000000000ff", ...fields}`. `level` is one of trace|debug|info|warn|error|
/// critical|off. Safe to call again (replaces the settings).
void init(std::string node_name, std::string_view level);

/// Returns whether a line at `lvl` would be written (cheap; check before building fields).
[[nodiscard]] bool enabled(spdlog::level::level_enum lvl) noexcept;

/// Writes one structured log line. `actor` and `correlation_id` are omitted when empty/0.
void event(spdlog::level::level_enum lvl, std::string_view name,
           const nlohmann::json& fields = nlohmann::json::object(), std::string_view actor = {},
           uint64_t correlation_id = 0);

/// Counts log lines at level error or above since start (tests use it to fail on
/// unexpected errors).
[[nodiscard]] uint64_t error_lines() noexcept;

/// Formats a correlation id as 16 lower-case hex digits.
[[nodiscard]] std::string format_cid(uint64_t cid);

} // namespace hive::log
