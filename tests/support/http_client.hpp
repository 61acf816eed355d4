#pragma once

// A minimal blocking HTTP/1.1 client over one keep-alive TCP connection to 127.0.0.1, for
// tests that talk to a real gateway. Only Content-Length bodies are supported. Every request
// carries `Authorization: Bearer <token>` (by default `test_admin_key`, which test nodes and
// test gateways accept as their bootstrap admin key) unless the token is empty or the request
// sets its own Authorization header.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace hive::test {

/// The bootstrap admin key of every test node and gateway (`--admin-key-file` holds it).
inline const std::string test_admin_key = "hive-test-admin-key-0123456789abcdef0123456789";

struct http_response {
  int status = 0;
  std::map<std::string, std::string> headers; ///< lower-case names
  std::string body;
};

class http_client {
public:
  explicit http_client(uint16_t port, std::string token = test_admin_key)
      : port_(port), token_(std::move(token)) {}

  /// The bearer credential sent from now on (empty: none).
  void set_token(std::string token) {
    token_ = std::move(token);
  }

  ~http_client() {
    close();
  }

  void close() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
    buf_.clear();
  }

  /// Sends one request; returns nullopt if the connection failed or closed.
  std::optional<http_response> request(const std::string& method, const std::string& target,
                                       const std::string& body = {},
                                       const std::map<std::string, std::string>& headers = {}) {
    if (fd_ < 0 && !connect())
      return std::nullopt;
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    bool own_auth = false;
    for (auto& [k, v] : headers) {
      req += k + ": " + v + "\r\n";
      std::string lower = k;
      for (auto& c : lower)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      own_auth = own_auth || lower == "authorization";
    }
    if (!own_auth && !token_.empty())
      req += "Authorization: Bearer " + token_ + "\r\n";
    if (!body.empty() || method == "POST")
      req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    req += "\r\n" + body;
    if (!send_all(req))
      return std::nullopt;
    return read_response();
  }

  /// Sends raw bytes (for malformed-request tests).
  bool send_all(const std::string& data) {
    if (fd_ < 0 && !connect())
      return false;
    size_t off = 0;
    while (off < data.size()) {
      auto n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  /// Reads one response from the connection.
  std::optional<http_response> read_response() {
    size_t header_end;
    while ((header_end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill())
        return std::nullopt;
    http_response resp;
    auto head = buf_.substr(0, header_end);
    buf_.erase(0, header_end + 4);
    auto line_end = head.find("\r\n");
    auto status_line = head.substr(0, line_end);
    auto sp = status_line.find(' ');
    if (sp == std::string::npos)
      return std::nullopt;
    resp.status = std::stoi(status_line.substr(sp + 1, 3));
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      auto end = head.find("\r\n", pos);
      if (end == std::string::npos)
        end = head.size();
      auto line = head.substr(pos, end - pos);
      auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (auto& c : name)
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        auto value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ')
          value.erase(0, 1);
        resp.headers[name] = value;
      }
      pos = end + 2;
    }
    size_t length = 0;
    if (auto i = resp.headers.find("content-length"); i != resp.headers.end())
      length = std::stoul(i->second);
    while (buf_.size() < length)
      if (!fill())
        return std::nullopt;
    resp.body = buf_.substr(0, length);
    buf_.erase(0, length);
    if (auto i = resp.headers.find("connection"); i != resp.headers.end() && i->second == "close")
      close();
    return resp;
  }

  /// True if the server closed the connection (reads EOF within `ms`).
  bool closed_by_peer(int ms) {
    if (fd_ < 0)
      return true;
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    auto n = ::recv(fd_, &c, 1, 0);
    return n == 0;
  }

private:
  bool connect() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close();
      return false;
    }
    timeval tv{30, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return true;
  }

  bool fill() {
    char tmp[65536];
    ssize_t n;
    do // (a signal handled meanwhile, e.g. SIGCHLD of a node a test stopped, is no failure)
      n = ::recv(fd_, tmp, sizeof(tmp), 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
      close();
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  uint16_t port_;
  std::string token_;
  int fd_ = -1;
  std::string buf_;
};

} // namespace hive::test
