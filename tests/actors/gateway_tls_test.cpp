// The gateway over HTTPS: a certificate made here with the openssl tool, a client that verifies
// it, plain HTTP and old TLS versions refused on the TLS port, and bad certificate or key files
// refused at start naming the file.

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <caf/all.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/gateway.hpp"
#include "actors/sample_kinds.hpp"
#include "protocols/errc.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_runtime.hpp"
#include "support/http_client.hpp"
#include "support/node_process.hpp"
#include "support/test_security.hpp"

namespace {

using namespace hive;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

/// Makes a self-signed certificate for 127.0.0.1 (and its key) in `dir` with the openssl tool.
bool make_cert(const std::filesystem::path& dir, const std::string& stem) {
  auto cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
             " -addext subjectAltName=IP:127.0.0.1 -keyout '"
    + (dir / (stem + ".key")).string() + "' -out '" + (dir / (stem + ".crt")).string()
    + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

class gateway_tls_test : public ::testing::Test {
public:
  void SetUp() override {
    ASSERT_TRUE(make_cert(dir.path, "a")) << "openssl req failed (is the openssl tool installed?)";
    cfg.node.name = "tls";
    cfg.node.scheduler_threads = 2;
    cfg.gateway.listen = {"127.0.0.1", 0};
    cfg.gateway.tls_cert_file = (dir.path / "a.crt").string();
    cfg.gateway.tls_key_file = (dir.path / "a.key").string();
    configure_actor_system(sys_cfg, cfg);
    sys.emplace(sys_cfg);
    kind_registry kinds;
    ASSERT_FALSE(register_sample_kinds(kinds));
    auto r = node_runtime::start(*sys, cfg, std::move(kinds), std::make_shared<metrics>());
    ASSERT_TRUE(r) << describe(r.error());
    rt = std::move(*r);
    sec = test::make_test_security(cfg);
    ASSERT_TRUE(sec);
    auto g = gateway::start(*rt, cfg.gateway, *sec);
    ASSERT_TRUE(g) << describe(g.error());
    gw = std::move(*g);
    ASSERT_TRUE(gw->tls());
  }

  void TearDown() override {
    gw.reset();
    if (rt)
      rt->shutdown();
  }

  /// One HTTPS request; the client trusts `a.crt` only and checks the host name. nullopt with
  /// `error` set when the handshake or the exchange fails.
  std::optional<http::response<http::string_body>> https(
    http::verb verb, const std::string& target, const std::string& body = {},
    std::function<void(ssl::context&)> tweak = {}) {
    asio::io_context ioc;
    ssl::context ctx{ssl::context::tls_client};
    ctx.load_verify_file((dir.path / "a.crt").string());
    ctx.set_verify_mode(ssl::verify_peer);
    if (tweak)
      tweak(ctx);
    beast::ssl_stream<beast::tcp_stream> stream{ioc, ctx};
    stream.set_verify_callback(ssl::host_name_verification("127.0.0.1"));
    beast::get_lowest_layer(stream).expires_after(5s);
    beast::get_lowest_layer(stream).connect(
      tcp::endpoint{asio::ip::make_address("127.0.0.1"), gw->port()}, error);
    if (error)
      return std::nullopt;
    stream.handshake(ssl::stream_base::client, error);
    if (error)
      return std::nullopt;
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, "Bearer " + test::test_admin_key);
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    http::write(stream, req, error);
    if (error)
      return std::nullopt;
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res, error);
    if (error)
      return std::nullopt;
    return res;
  }

  test::temp_dir dir;
  node_config cfg;
  caf::actor_system_config sys_cfg;
  std::optional<caf::actor_system> sys;
  std::unique_ptr<node_runtime> rt;
  std::unique_ptr<security> sec;
  std::unique_ptr<gateway> gw;
  beast::error_code error;
};

TEST_F(gateway_tls_test, serves_https_to_a_client_that_verifies_the_certificate) {
  auto health = https(http::verb::get, "/healthz");
  ASSERT_TRUE(health) << error.message();
  EXPECT_EQ(health->result_int(), 200u);
  auto made = https(http::verb::post, "/v1/agents", R"({"id":"acme/c","kind":"counter"})");
  ASSERT_TRUE(made) << error.message();
  EXPECT_EQ(made->result_int(), 201u) << made->body();
  auto asked = https(http::verb::post, "/v1/agents/acme/c/ask", R"({"op":"add","by":3})");
  ASSERT_TRUE(asked) << error.message();
  EXPECT_EQ(asked->body(), R"({"value":3})");
}

TEST_F(gateway_tls_test, a_client_that_trusts_another_certificate_fails_the_handshake) {
  ASSERT_TRUE(make_cert(dir.path, "other"));
  auto res = https(http::verb::get, "/healthz", {}, [&](ssl::context& ctx) {
    // A fresh context would still hold a.crt: trust only the other one.
    ctx = ssl::context{ssl::context::tls_client};
    ctx.load_verify_file((dir.path / "other.crt").string());
    ctx.set_verify_mode(ssl::verify_peer);
  });
  EXPECT_FALSE(res);
  EXPECT_TRUE(error) << "the handshake succeeded against an untrusted certificate";
}

TEST_F(gateway_tls_test, plain_http_and_tls_1_1_are_refused_and_the_gateway_keeps_serving) {
  test::http_client plain{gw->port()};
  auto r = plain.request("GET", "/healthz");
  EXPECT_FALSE(r && r->status == 200) << "plain HTTP was served on the TLS port";
  auto old = https(http::verb::get, "/healthz", {}, [](ssl::context& ctx) {
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx.native_handle(), TLS1_1_VERSION);
    SSL_CTX_set_security_level(ctx.native_handle(), 0);
  });
  EXPECT_FALSE(old) << "a TLS 1.1 client was served";
  auto ok = https(http::verb::get, "/healthz");
  ASSERT_TRUE(ok) << error.message();
  EXPECT_EQ(ok->result_int(), 200u);
}

TEST_F(gateway_tls_test, bad_certificate_or_key_files_are_refused_at_start_naming_them) {
  ASSERT_TRUE(make_cert(dir.path, "b"));
  auto try_start = [&](std::string cert, std::string key) {
    auto c = cfg.gateway;
    c.tls_cert_file = std::move(cert);
    c.tls_key_file = std::move(key);
    auto g = gateway::start(*rt, c, *sec);
    EXPECT_FALSE(g);
    return g ? std::string{} : message_of(g.error());
  };
  auto crt = (dir.path / "a.crt").string();
  auto key = (dir.path / "a.key").string();
  auto mismatch = try_start(crt, (dir.path / "b.key").string());
  EXPECT_NE(mismatch.find("gateway.tls_key_file"), std::string::npos) << mismatch;
  EXPECT_NE(mismatch.find("b.key"), std::string::npos) << mismatch;
  EXPECT_TRUE(mismatch.find("mismatch") != std::string::npos
              || mismatch.find("does not belong") != std::string::npos)
    << mismatch;
  auto missing = try_start((dir.path / "nope.crt").string(), key);
  EXPECT_NE(missing.find("gateway.tls_cert_file"), std::string::npos) << missing;
  EXPECT_NE(missing.find("nope.crt"), std::string::npos) << missing;
  auto not_a_key = try_start(crt, crt);
  EXPECT_NE(not_a_key.find("gateway.tls_key_file"), std::string::npos) << not_a_key;
  auto half = try_start(crt, "");
  EXPECT_NE(half.find("together"), std::string::npos) << half;
}

} // namespace
