// The binary protocol listener in process (actors/binary_gateway.hpp) through the C++ client
// (protocols/client.hpp): hello and credentials, spawn/tell/ask/stop, pipelining with
// out-of-order completion, roles and tenant scoping, revocation on a live connection, rate
// limits (counted), quotas, protocol errors, the in-flight bound and the connection bound;
// TLS with the gateway's certificate (verified by the client, plain and wrong-CA refused).

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include <caf/all.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/auth.hpp"
#include "actors/binary_gateway.hpp"
#include "actors/sample_kinds.hpp"
#include "protocols/client.hpp"
#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "protocols/wire.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_runtime.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"
#include "support/test_security.hpp"

namespace {

using namespace hive;
using json = nlohmann::json;
using std::chrono::milliseconds;

class binary_gateway_test : public ::testing::Test {
public:
  virtual void configure(node_config&) {}

  void SetUp() override {
    cfg.node.name = "bg";
    cfg.node.scheduler_threads = 2;
    cfg.gateway.listen = {"127.0.0.1", 0};
    cfg.binary.listen = "127.0.0.1:0";
    cfg.binary.idle_timeout_ms = 2000;
    configure(cfg);
    configure_actor_system(sys_cfg, cfg);
    sys.emplace(sys_cfg);
    kind_registry kinds;
    ASSERT_FALSE(register_sample_kinds(kinds));
    m = std::make_shared<metrics>();
    auto r = node_runtime::start(*sys, cfg, std::move(kinds), m);
    ASSERT_TRUE(r) << describe(r.error());
    rt = std::move(*r);
    sec = test::make_test_security(cfg);
    ASSERT_TRUE(sec);
    auto g = binary_gateway::start(*rt, cfg, *sec);
    ASSERT_TRUE(g) << describe(g.error());
    gw = std::move(*g);
  }

  void TearDown() override {
    gw.reset();
    if (rt)
      rt->shutdown();
  }

  caf::expected<binary_client> connect(const std::string& token) {
    return binary_client::connect("127.0.0.1", gw->port(), token);
  }

  binary_client admin() {
    auto c = connect(test::test_admin_key);
    EXPECT_TRUE(c) << describe(c.error());
    return std::move(*c);
  }

  std::string key(const std::string& tenant, role level) {
    auto k = sec->keys().create(tenant, level, "t");
    EXPECT_TRUE(k);
    return k->second;
  }

  /// A raw TCP connection for bytes the client would never send.
  int raw_connect() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(gw->port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  }

  /// Reads until the peer closes (or 5 s); returns what arrived.
  static std::string read_to_close(int fd) {
    std::string got;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0)
        continue;
      char buf[4096];
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0)
        return got;
      got.append(buf, static_cast<size_t>(n));
    }
    ADD_FAILURE() << "the node did not close the connection";
    return got;
  }

  static wire::response only_response(const std::string& bytes) {
    auto f = wire::next_frame(bytes, 1 << 20);
    EXPECT_TRUE(f && f->consumed > 0) << "no complete frame in " << bytes.size() << " bytes";
    if (!f || f->consumed == 0)
      return {};
    EXPECT_EQ(f->consumed, bytes.size()) << "more than one answer";
    auto r = wire::decode_response(f->payload);
    EXPECT_TRUE(r);
    return r ? *r : wire::response{};
  }

  node_config cfg;
  caf::actor_system_config sys_cfg;
  std::optional<caf::actor_system> sys;
  std::shared_ptr<metrics> m;
  std::unique_ptr<node_runtime> rt;
  std::unique_ptr<security> sec;
  std::unique_ptr<binary_gateway> gw;
};

TEST_F(binary_gateway_test, hello_spawn_tell_ask_and_stop) {
  auto c = admin();
  auto hello = json::parse(c.hello_reply());
  EXPECT_EQ(hello["node"], "bg");
  EXPECT_EQ(hello["role"], "admin");
  EXPECT_EQ(hello["version"], 1);

  auto made = c.spawn({"acme/c1", "counter", "", false, "", ""});
  ASSERT_TRUE(made) << describe(made.error());
  EXPECT_EQ(json::parse(*made)["id"], "acme/c1");
  auto again = c.spawn({"acme/c1", "counter", "", false, "", ""});
  ASSERT_FALSE(again);
  EXPECT_EQ(code_of(again.error()), errc::agent_exists);

  ASSERT_FALSE(c.tell("acme/c1", R"({"op":"add","by":5})"));
  auto v = c.ask("acme/c1", R"({"op":"add","by":2})");
  ASSERT_TRUE(v) << describe(v.error());
  auto got = c.ask("acme/c1", R"({"op":"get"})");
  ASSERT_TRUE(got) << describe(got.error());
  EXPECT_EQ(json::parse(*got)["value"], 7) << *got;

  ASSERT_FALSE(c.stop("acme/c1"));
  auto gone = c.ask("acme/c1", R"({"op":"get"})", 500);
  ASSERT_FALSE(gone);
  EXPECT_EQ(code_of(gone.error()), errc::agent_not_found);
}

TEST_F(binary_gateway_test, pipelined_asks_all_come_back_with_their_ids) {
  auto c = admin();
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(c.spawn({"acme/p" + std::to_string(i), "counter", "", false, "", ""}));
  // 2,000 requests written before the first answer is read; each adds to one of 4 counters.
  std::map<uint64_t, int> sent; // id -> counter
  for (int i = 0; i < 2000; ++i) {
    auto id = c.send(
      {0, 0, wire::ask{"acme/p" + std::to_string(i % 4), R"({"op":"add","by":1})", 0, "", 0}});
    sent[id] = i % 4;
  }
  ASSERT_FALSE(c.flush());
  std::set<uint64_t> answered;
  while (answered.size() < sent.size()) {
    auto r = c.receive(std::chrono::seconds(10));
    ASSERT_TRUE(r) << describe(r.error()) << " after " << answered.size();
    ASSERT_TRUE(r->ok) << r->text;
    ASSERT_TRUE(sent.count(r->id)) << "unknown id " << r->id;
    ASSERT_TRUE(answered.insert(r->id).second) << "id " << r->id << " answered twice";
  }
  EXPECT_EQ(c.outstanding(), 0u);
  for (int i = 0; i < 4; ++i) {
    auto v = c.ask("acme/p" + std::to_string(i), R"({"op":"get"})");
    ASSERT_TRUE(v);
    EXPECT_EQ(json::parse(*v)["value"], 500);
  }
}

TEST_F(binary_gateway_test, credentials_are_checked_at_hello_and_on_every_request) {
  auto bad = connect("hive_0000000000000000_" + std::string(64, '0'));
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of(bad.error()), errc::unauthenticated);
  auto empty = connect("");
  ASSERT_FALSE(empty);
  EXPECT_EQ(code_of(empty.error()), errc::unauthenticated);

  // A key revoked while its connection is open stops working on the next request.
  auto k = sec->keys().create("acme", role::operator_, "live");
  ASSERT_TRUE(k);
  auto c = connect(k->second);
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(json::parse(c->hello_reply())["tenant"], "acme");
  auto ok = c->spawn({"acme/r1", "counter", "", false, "", ""});
  ASSERT_TRUE(ok) << describe(ok.error());
  ASSERT_FALSE(sec->keys().revoke(k->first.id));
  auto refused = c->ask("acme/r1", R"({"op":"get"})");
  ASSERT_FALSE(refused);
  EXPECT_EQ(code_of(refused.error()), errc::unauthenticated);
  auto closed = c->ask("acme/r1", R"({"op":"get"})");
  ASSERT_FALSE(closed);
  EXPECT_EQ(code_of(closed.error()), errc::io_error) << describe(closed.error());
}

TEST_F(binary_gateway_test, the_first_request_must_be_hello_of_version_1) {
  for (auto req : {wire::request{1, 0, wire::ask{"acme/x", "{}", 0, "", 0}},
                   wire::request{2, 0, wire::hello{2, test::test_admin_key}}}) {
    int fd = raw_connect();
    std::string out;
    wire::append_frame(out, req);
    ASSERT_EQ(::send(fd, out.data(), out.size(), 0), static_cast<ssize_t>(out.size()));
    auto r = only_response(read_to_close(fd));
    EXPECT_EQ(r.id, req.id);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.code, req.id == 1 ? errc::unauthenticated : errc::invalid_argument) << r.text;
    ::close(fd);
  }
}

TEST_F(binary_gateway_test, roles_and_tenants_are_enforced) {
  auto admin_c = admin();
  ASSERT_TRUE(admin_c.spawn({"beta/b1", "counter", "", false, "", ""}));
  ASSERT_TRUE(admin_c.spawn({"acme/a1", "counter", "", false, "", ""}));
  auto op = connect(key("acme", role::operator_));
  ASSERT_TRUE(op);
  EXPECT_TRUE(op->ask("acme/a1", R"({"op":"get"})"));
  for (auto& r : {op->ask("beta/b1", R"({"op":"get"})"),
                  op->spawn({"beta/b2", "counter", "", false, "", ""})}) {
    ASSERT_FALSE(r);
    EXPECT_EQ(code_of(r.error()), errc::forbidden) << describe(r.error());
  }
  EXPECT_EQ(code_of(op->tell("beta/b1", "{}")), errc::forbidden);
  EXPECT_EQ(code_of(op->stop("beta/b1")), errc::forbidden);
  auto viewer = connect(key("acme", role::viewer));
  ASSERT_TRUE(viewer);
  auto v = viewer->ask("acme/a1", R"({"op":"get"})");
  ASSERT_FALSE(v);
  EXPECT_EQ(code_of(v.error()), errc::forbidden);
  // Nothing of beta's changed.
  auto b = admin_c.ask("beta/b1", R"({"op":"get"})");
  ASSERT_TRUE(b);
  EXPECT_EQ(json::parse(*b)["value"], 0);
}

TEST_F(binary_gateway_test, bad_input_gets_a_clear_error_and_the_connection_stays) {
  auto c = admin();
  ASSERT_TRUE(c.spawn({"acme/v1", "counter", "", false, "", ""}));
  struct expectation {
    caf::expected<std::string> got;
    errc code;
    std::string words;
  };
  std::vector<expectation> cases;
  cases.push_back({c.ask("Bad Id", "{}"), errc::invalid_agent_id, "Bad Id"});
  cases.push_back({c.ask("acme/v1", "{not json"), errc::invalid_argument, "JSON"});
  cases.push_back({c.ask("acme/v1", std::string(40, '[') + std::string(40, ']')), errc::too_large,
                   "json_depth_max"});
  cases.push_back({c.ask("acme/v1", "{}", 1000000), errc::invalid_argument, "ask_timeout_ms_max"});
  cases.push_back({c.spawn({"acme/v2", "", "", false, "", ""}), errc::invalid_argument, "kind"});
  cases.push_back({c.spawn({"acme/v2", "nope", "", false, "", ""}), errc::unknown_kind, "nope"});
  cases.push_back(
    {c.spawn({"acme/v2", "counter", "[1]", false, "", ""}), errc::invalid_argument, "config"});
  cases.push_back({c.spawn({"acme/v2", "counter", "", false, "sometimes", ""}),
                   errc::invalid_argument, "restart"});
  for (auto& e : cases) {
    ASSERT_FALSE(e.got) << *e.got;
    EXPECT_EQ(code_of(e.got.error()), e.code) << describe(e.got.error());
    EXPECT_NE(message_of(e.got.error()).find(e.words), std::string::npos)
      << describe(e.got.error());
  }
  // The connection still serves.
  EXPECT_TRUE(c.ask("acme/v1", R"({"op":"get"})"));
}

TEST_F(binary_gateway_test, protocol_errors_are_answered_with_id_0_then_closed) {
  // A length beyond binary.frame_bytes_max; a length not a multiple of 8; undecodable bytes.
  std::vector<std::string> inputs;
  inputs.push_back(std::string{"\xff\xff\xff\x7f", 4});
  inputs.push_back(std::string{"\x09\x00\x00\x00", 4} + std::string(9, 'x'));
  inputs.push_back(std::string{"\x10\x00\x00\x00", 4} + std::string(16, '\xff'));
  std::vector<errc> codes{errc::too_large, errc::invalid_argument, errc::invalid_argument};
  for (size_t i = 0; i < inputs.size(); ++i) {
    int fd = raw_connect();
    // Authenticated first: protocol errors close authenticated connections too.
    std::string out;
    wire::append_frame(out, wire::request{1, 0, wire::hello{1, test::test_admin_key}});
    out += inputs[i];
    ASSERT_EQ(::send(fd, out.data(), out.size(), 0), static_cast<ssize_t>(out.size()));
    auto bytes = read_to_close(fd);
    auto f = wire::next_frame(bytes, 1 << 20);
    ASSERT_TRUE(f && f->consumed > 0);
    auto hello = wire::decode_response(f->payload);
    ASSERT_TRUE(hello && hello->ok);
    auto err = only_response(bytes.substr(f->consumed));
    EXPECT_EQ(err.id, 0u);
    EXPECT_FALSE(err.ok);
    EXPECT_EQ(err.code, codes[i]) << i << ": " << err.text;
    ::close(fd);
  }
}

TEST_F(binary_gateway_test, a_connection_without_hello_is_closed_after_the_idle_timeout) {
  int fd = raw_connect();
  auto t0 = std::chrono::steady_clock::now();
  auto bytes = read_to_close(fd);
  EXPECT_TRUE(bytes.empty());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds{cfg.binary.idle_timeout_ms - 300});
  ::close(fd);
}

class binary_gateway_limits_test : public binary_gateway_test {
public:
  void configure(node_config& c) override {
    c.quota.requests_per_s = 1;
    c.quota.burst_requests = 20;
    c.quota.message_bytes_max = 256;
    c.binary.inflight_requests_max = 3;
    c.binary.connections_max = 2;
  }
};

TEST_F(binary_gateway_limits_test, rate_limits_quotas_and_bounds) {
  auto c = admin();
  // The hello is not rate limited; spawn takes one token.
  ASSERT_TRUE(c.spawn({"acme/q1", "counter", "", false, "", ""}));
  auto big = c.ask("acme/q1", R"({"op":"get","pad":")" + std::string(300, 'x') + "\"}");
  ASSERT_FALSE(big);
  EXPECT_EQ(code_of(big.error()), errc::too_large);
  EXPECT_NE(message_of(big.error()).find("quota.message_bytes_max"), std::string::npos);
  // 30 pipelined asks with an in-flight bound of 3: the burst (20, two taken) passes, the
  // rest are rate_limited with a retry time; all are answered.
  std::vector<uint64_t> ids;
  for (int i = 0; i < 30; ++i)
    ids.push_back(c.send({0, 0, wire::ask{"acme/q1", R"({"op":"add","by":1})", 0, "", 0}}));
  int ok = 0, limited = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto r = c.receive(std::chrono::seconds(10));
    ASSERT_TRUE(r) << describe(r.error());
    if (r->ok) {
      ++ok;
    } else {
      EXPECT_EQ(r->code, errc::rate_limited) << r->text;
      EXPECT_GT(r->retry_after_ms, 0u);
      ++limited;
    }
  }
  EXPECT_EQ(ok, 18);
  EXPECT_EQ(limited, 12);
  // connections_max = 2: a second one is served, a third refused with overloaded.
  auto second = connect(test::test_admin_key);
  ASSERT_TRUE(second) << describe(second.error());
  auto third = connect(test::test_admin_key);
  ASSERT_FALSE(third);
  EXPECT_EQ(code_of(third.error()), errc::overloaded) << describe(third.error());
}

/// The listener with `gateway.tls_cert_file`/`tls_key_file` set: it serves TLS only.
class binary_gateway_tls_test : public binary_gateway_test {
public:
  void configure(node_config& c) override {
    ASSERT_TRUE(test::make_ca(dir.path, "ca")) << "openssl failed (is the openssl tool installed?)";
    ASSERT_TRUE(test::make_signed_cert(dir.path, "node", "ca"));
    ASSERT_TRUE(test::make_ca(dir.path, "other"));
    c.gateway.tls_cert_file = (dir.path / "node.crt").string();
    c.gateway.tls_key_file = (dir.path / "node.key").string();
  }

  caf::expected<binary_client> connect_tls(const std::string& ca, const std::string& name = {}) {
    return binary_client::connect(
      "127.0.0.1", gw->port(), test::test_admin_key, std::chrono::seconds(5), 1 << 20,
      binary_client::tls_options{(dir.path / (ca + ".crt")).string(), name});
  }

  test::temp_dir dir;
};

TEST_F(binary_gateway_tls_test, a_client_that_verifies_the_certificate_is_served_pipelined) {
  auto c = connect_tls("ca");
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(json::parse(c->hello_reply())["role"], "admin");
  ASSERT_TRUE(c->spawn({"acme/t1", "counter", "", false, "", ""}));
  // Far more than one TLS record each way, written before the first answer is read.
  std::set<uint64_t> sent;
  for (int i = 0; i < 1000; ++i)
    sent.insert(c->send({0, 0, wire::ask{"acme/t1", R"({"op":"add","by":1})", 0, "", 0}}));
  ASSERT_FALSE(c->flush());
  for (size_t i = 0; i < sent.size(); ++i) {
    auto r = c->receive(std::chrono::seconds(10));
    ASSERT_TRUE(r) << describe(r.error()) << " after " << i;
    ASSERT_TRUE(r->ok) << r->text;
    EXPECT_EQ(sent.count(r->id), 1u);
  }
  auto v = c->ask("acme/t1", R"({"op":"get"})");
  ASSERT_TRUE(v) << describe(v.error());
  EXPECT_EQ(json::parse(*v)["value"], 1000);
}

TEST_F(binary_gateway_tls_test, plain_wrong_ca_and_wrong_name_are_refused_and_it_keeps_serving) {
  // Plain frames to a TLS listener: no answer the client can read; the hello never succeeds.
  auto plain = binary_client::connect("127.0.0.1", gw->port(), test::test_admin_key,
                                      std::chrono::milliseconds(1500));
  ASSERT_FALSE(plain);
  EXPECT_TRUE(code_of(plain.error()) == errc::io_error || code_of(plain.error()) == errc::timeout)
    << describe(plain.error());
  // A certificate from a CA the client does not trust.
  auto stranger = connect_tls("other");
  ASSERT_FALSE(stranger);
  EXPECT_EQ(code_of(stranger.error()), errc::io_error);
  EXPECT_NE(message_of(stranger.error()).find("certificate"), std::string::npos)
    << describe(stranger.error());
  // The right CA, but the certificate is for 127.0.0.1, not this name.
  auto misnamed = connect_tls("ca", "nodes.example.org");
  ASSERT_FALSE(misnamed);
  EXPECT_NE(message_of(misnamed.error()).find("certificate"), std::string::npos)
    << describe(misnamed.error());
  // A CA file that is not there names itself.
  auto missing = connect_tls("absent");
  ASSERT_FALSE(missing);
  EXPECT_EQ(code_of(missing.error()), errc::invalid_config);
  EXPECT_NE(message_of(missing.error()).find("absent.crt"), std::string::npos);
  // None of that disturbed the listener.
  auto good = connect_tls("ca");
  ASSERT_TRUE(good) << describe(good.error());
  ASSERT_TRUE(good->spawn({"acme/t2", "counter", "", false, "", ""}));
  EXPECT_EQ(gw->connections(), 1u);
}

TEST(binary_gateway_tls_files, a_key_file_that_cannot_be_loaded_is_refused_naming_it) {
  test::temp_dir dir;
  ASSERT_TRUE(test::make_ca(dir.path, "ca"));
  node_config cfg;
  cfg.node.name = "bgk";
  cfg.node.scheduler_threads = 1;
  cfg.binary.listen = "127.0.0.1:0";
  cfg.gateway.tls_cert_file = (dir.path / "ca.crt").string();
  cfg.gateway.tls_key_file = (dir.path / "missing.key").string();
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  kind_registry kinds;
  ASSERT_FALSE(register_sample_kinds(kinds));
  auto rt = node_runtime::start(sys, cfg, std::move(kinds), std::make_shared<metrics>());
  ASSERT_TRUE(rt) << describe(rt.error());
  auto sec = test::make_test_security(cfg);
  ASSERT_TRUE(sec);
  auto g = binary_gateway::start(**rt, cfg, *sec);
  ASSERT_FALSE(g);
  EXPECT_EQ(code_of(g.error()), errc::invalid_config);
  EXPECT_NE(message_of(g.error()).find("gateway.tls_key_file"), std::string::npos)
    << describe(g.error());
  (*rt)->shutdown();
}

} // namespace
