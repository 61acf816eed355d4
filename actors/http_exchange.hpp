#pragma once

// One HTTP/1.1 request over a fresh connection, for the clients the project makes (agentctl,
// the llm agent's endpoint calls): connect, TLS handshake when the stream is a TLS stream,
// write, read, close. Header-only (a template over the stream type).

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <string>
#include <type_traits>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace hive {

/// Connects `stream` to `endpoints` (and runs the TLS handshake when it is a TLS stream), then
/// writes `req` and reads the reply into `parser`, all under the deadline already set on the
/// stream's lowest layer (Beast closes the socket when it passes and the pending operation ends
/// with `error::timeout`); `step` names the step in progress ("connect" as the caller sets
/// it, then "TLS handshake", "send", "receive"). Runs `ioc` until the exchange is over, then
/// shuts the connection down and closes it. Returns the first error, or none.
template <class Stream>
boost::beast::error_code run_exchange(
  boost::asio::io_context& ioc, Stream& stream,
  const boost::asio::ip::tcp::resolver::results_type& endpoints,
  boost::beast::http::request<boost::beast::http::string_body>& req,
  boost::beast::http::response_parser<boost::beast::http::string_body>& parser, std::string& step) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  using tcp = boost::asio::ip::tcp;
  beast::flat_buffer buf;
  beast::error_code result;
  auto send = [&] {
    step = "send";
    http::async_write(stream, req, [&](beast::error_code e, size_t) {
      if (e) {
        result = e;
        return;
      }
      step = "receive";
      http::async_read(stream, buf, parser, [&](beast::error_code e, size_t) { result = e; });
    });
  };
  beast::get_lowest_layer(stream).async_connect(
    endpoints, [&](beast::error_code e, const tcp::endpoint&) {
      if (e) {
        result = e;
        return;
      }
      if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
        send();
      } else {
        step = "TLS handshake";
        stream.async_handshake(boost::asio::ssl::stream_base::client, [&](beast::error_code e) {
          if (e) {
            result = e;
            return;
          }
          send();
        });
      }
    });
  ioc.run();
  beast::error_code ec;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ec);
  beast::get_lowest_layer(stream).close();
  return result;
}

} // namespace hive
