#pragma once

// Internal to actors/: the pure parsing steps of an HTTP request after Beast has framed it
// (query strings, %-escapes, correlation ids, Idempotency-Key), shared by the gateway and the
// fuzz target of the request path (tests/fuzz/).

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/all.hpp>

namespace hive {

/// Decoded query parameters.
using query_map = std::map<std::string, std::string, std::less<>>;

/// Parses 1..16 hex digits into a non-zero id (an `X-Correlation-Id`).
[[nodiscard]] std::optional<uint64_t> parse_cid(std::string_view text);

/// Parses a whole decimal integer.
[[nodiscard]] std::optional<int64_t> parse_int(std::string_view text);

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`); nullopt for a bad escape.
[[nodiscard]] std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space);

/// Splits `s` at every `sep` (n separators: n + 1 parts).
[[nodiscard]] std::vector<std::string_view> split(std::string_view s, char sep);

/// Parses a query string into decoded key/value pairs. Errors (invalid_argument): a bad
/// %-escape, a key outside `allowed`, a key given twice.
[[nodiscard]] caf::expected<query_map> parse_query(std::string_view query,
                                                   std::initializer_list<std::string_view> allowed);

/// Parses `Idempotency-Key: CLIENT:SEQ`: CLIENT is 1..128 bytes of A-Z a-z 0-9 `-_.`, SEQ a
/// decimal integer in 0..2^64-1. Errors: invalid_argument naming what is wrong.
[[nodiscard]] caf::expected<std::pair<std::string, uint64_t>> parse_idempotency_key(
  std::string_view text);

} // namespace hive
