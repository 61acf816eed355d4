// libFuzzer target: the HTTP request path up to routing, as the gateway runs it: Beast's
// request parser with the gateway's default limits (16 KiB of headers, 1 MiB of body), then
// for a complete request the target split into path and query, %-decoding of the path
// segments, the query parser with the parameters the gateway knows, the X-Correlation-Id and
// Idempotency-Key parsers, and the JSON check of the body.
#include <utility> // before Asio: Boost 1.74 under C++20 misses std::exchange otherwise

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "actors/http_parse.hpp"
#include "actors/json_check.hpp"

namespace http = boost::beast::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  http::request_parser<http::string_body> parser;
  parser.header_limit(16 << 10);
  parser.body_limit(1 << 20);
  parser.eager(true);
  boost::beast::error_code ec;
  size_t used = 0;
  while (used < size && !ec && !parser.is_done()) {
    auto n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    if (n == 0)
      break;
    used += n;
  }
  if (ec || !parser.is_header_done())
    return 0;
  auto& req = parser.get();
  std::string_view target{req.target().data(), req.target().size()};
  auto q = target.find('?');
  auto path = target.substr(0, q);
  auto query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  for (auto seg : hive::split(path, '/'))
    (void)hive::percent_decode(seg, false);
  (void)hive::parse_query(query, {"limit", "after", "tenant", "timeout_ms", "agent", "kind"});
  if (auto t = hive::parse_query(query, {"timeout_ms"}); t)
    if (auto i = t->find("timeout_ms"); i != t->end())
      (void)hive::parse_int(i->second);
  auto c = req["X-Correlation-Id"];
  (void)hive::parse_cid({c.data(), c.size()});
  auto k = req["Idempotency-Key"];
  if (!k.empty())
    (void)hive::parse_idempotency_key({k.data(), k.size()});
  if (parser.is_done() && !req.body().empty())
    (void)hive::check_json(req.body(), 32);
  return 0;
}
