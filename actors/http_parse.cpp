#include "actors/http_parse.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "protocols/errc.hpp"

namespace hive {

/// Parses 1..16 hex digits into a non-zero id.
std::optional<uint64_t> parse_cid(std::string_view text) {
  if (text.empty() || text.size() > 16)
    return std::nullopt;
  uint64_t x = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), x, 16);
  if (ec != std::errc{} || ptr != text.data() + text.size() || x == 0)
    return std::nullopt;
  return x;
}

/// Parses a whole decimal integer.
std::optional<int64_t> parse_int(std::string_view text) {
  int64_t x = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), x, 10);
  if (text.empty() || ec != std::errc{} || ptr != text.data() + text.size())
    return std::nullopt;
  return x;
}

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

} // namespace

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`).
std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size())
        return std::nullopt;
      int hi = hex_value(in[i + 1]);
      int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0)
        return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

/// Splits `s` at every `sep`.
std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  for (;;) {
    auto next = s.find(sep, pos);
    if (next == std::string_view::npos) {
      parts.push_back(s.substr(pos));
      return parts;
    }
    parts.push_back(s.substr(pos, next - pos));
    pos = next + 1;
  }
}

/// Parses a query string into decoded key/value pairs. Duplicate keys and keys outside
/// `allowed` are errors.
caf::expected<query_map> parse_query(std::string_view query,
                                     std::initializer_list<std::string_view> allowed) {
  query_map result;
  if (query.empty())
    return result;
  for (auto part : split(query, '&')) {
    if (part.empty())
      continue;
    auto eq = part.find('=');
    auto raw_key = part.substr(0, eq);
    auto raw_val = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
    auto key = percent_decode(raw_key, true);
    auto val = percent_decode(raw_val, true);
    if (!key || !val)
      return make_error(errc::invalid_argument,
                        "query parameter '" + std::string{part} + "' has a bad %-escape");
    if (std::find(allowed.begin(), allowed.end(), *key) == allowed.end()) {
      std::string names;
      for (auto a : allowed) {
        if (!names.empty())
          names += ", ";
        names += a;
      }
      return make_error(errc::invalid_argument,
                        "unknown query parameter '" + *key
                          + "' (allowed: " + (names.empty() ? std::string{"none"} : names) + ")");
    }
    if (!result.emplace(*key, *val).second)
      return make_error(errc::invalid_argument, "query parameter '" + *key + "' given twice");
  }
  return result;
}

/// Parses `Idempotency-Key: CLIENT:SEQ`: CLIENT is 1..128 bytes of A-Z a-z 0-9 `-_.`, SEQ a
/// decimal integer in 0..2^64-1.
caf::expected<std::pair<std::string, uint64_t>> parse_idempotency_key(std::string_view text) {
  auto bad = [&](std::string why) {
    return make_error(errc::invalid_argument,
                      "header Idempotency-Key must be CLIENT:SEQ (" + why + "), got '"
                        + std::string{text.substr(0, 200)} + "'");
  };
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos)
    return bad("no ':'");
  auto client = text.substr(0, colon);
  auto seq_text = text.substr(colon + 1);
  if (client.empty() || client.size() > 128)
    return bad("CLIENT must be 1..128 bytes");
  for (char c : client)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return bad("CLIENT may hold only A-Z a-z 0-9 '-' '_' '.'");
  uint64_t seq = 0;
  auto [end, ec] = std::from_chars(seq_text.data(), seq_text.data() + seq_text.size(), seq);
  if (seq_text.empty() || ec != std::errc{} || end != seq_text.data() + seq_text.size())
    return bad("SEQ must be a decimal integer below 2^64");
  return std::pair{std::string{client}, seq};
}

} // namespace hive
