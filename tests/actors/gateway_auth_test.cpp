// The gateway's security over real HTTP: the auth matrix (every route x every kind of
// principal x same/other tenant), listings scoped to the caller's tenant, API key life cycle,
// the audit log, per-tenant rate limits (counted, not timed), the message size quota, the
// OpenAPI document against the route table, and 1,000 idle connections beside a real client.

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <caf/all.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/auth.hpp"
#include "actors/gateway.hpp"
#include "actors/sample_kinds.hpp"
#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_runtime.hpp"
#include "support/http_client.hpp"
#include "support/node_process.hpp"
#include "support/test_security.hpp"

namespace {

using namespace hive;
using json = nlohmann::json;
using test::http_client;

const std::string jwt_secret = "gateway-auth-test-secret-0123456789abcdef";

int64_t unix_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

std::string jwt(json changes) {
  json c{{"iss", "hive"},    {"aud", "hive"},      {"sub", "tester"},
         {"tenant", "beta"}, {"role", "operator"}, {"exp", unix_s() + 600}};
  for (auto& [k, v] : changes.items())
    if (v.is_null())
      c.erase(k);
    else
      c[k] = v;
  return sign_jwt(c, jwt_secret);
}

class gateway_auth_test : public ::testing::Test {
public:
  virtual void configure(node_config&) {}

  void SetUp() override {
    cfg.node.name = "ga";
    cfg.node.scheduler_threads = 2;
    cfg.gateway.listen = {"127.0.0.1", 0};
    configure(cfg);
    configure_actor_system(sys_cfg, cfg);
    sys.emplace(sys_cfg);
    kind_registry kinds;
    ASSERT_FALSE(register_sample_kinds(kinds));
    m = std::make_shared<metrics>();
    auto r = node_runtime::start(*sys, cfg, std::move(kinds), m);
    ASSERT_TRUE(r) << describe(r.error());
    rt = std::move(*r);
    audit_path = (dir.path / "audit.log").string();
    sec = test::make_test_security(cfg, audit_path, jwt_secret);
    ASSERT_TRUE(sec);
    auto g = gateway::start(*rt, cfg.gateway, *sec);
    ASSERT_TRUE(g) << describe(g.error());
    gw = std::move(*g);
  }

  void TearDown() override {
    gw.reset();
    if (rt)
      rt->shutdown();
  }

  /// One request with `token` as the credential (empty: none).
  test::http_response call(const std::string& token, const std::string& method,
                           const std::string& target, const std::string& body = {}) {
    http_client c{gw->port(), token};
    auto r = c.request(method, target, body);
    EXPECT_TRUE(r) << method << " " << target << ": no response";
    return r ? *r : test::http_response{};
  }

  /// Creates a key with the admin key; returns {id, key}.
  std::pair<std::string, std::string> make_key(const std::string& tenant, const std::string& role,
                                               const std::string& name = "k") {
    auto r = call(test::test_admin_key, "POST", "/v1/keys",
                  json{{"tenant", tenant}, {"role", role}, {"name", name}}.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    auto j = json::parse(r.body, nullptr, false);
    return {j.value("id", ""), j.value("key", "")};
  }

  void spawn(const std::string& id) {
    auto r = call(test::test_admin_key, "POST", "/v1/agents",
                  json{{"id", id}, {"kind", "counter"}}.dump());
    ASSERT_EQ(r.status, 201) << r.body;
  }

  std::vector<std::string> audit_lines() {
    std::ifstream in{audit_path};
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);)
      lines.push_back(line);
    return lines;
  }

  test::temp_dir dir;
  node_config cfg;
  caf::actor_system_config sys_cfg;
  std::optional<caf::actor_system> sys;
  std::shared_ptr<metrics> m;
  std::unique_ptr<node_runtime> rt;
  std::string audit_path;
  std::unique_ptr<security> sec;
  std::unique_ptr<gateway> gw;
};

/// A kind of caller in the matrix.
struct caller {
  std::string what;
  std::string token;
  /// 0: unauthenticated; else the role's rank + 1 (viewer 1, operator 2, admin 3).
  int rank;
  std::string tenant;
};

/// A route in the matrix; `{T}` in the target and body is the tenant acted on, `{N}` a fresh
/// number.
struct route_row {
  std::string method;
  std::string target;
  std::string body;
  int needed_rank;
  bool scoped;
};

TEST_F(gateway_auth_test, every_route_by_every_principal_and_tenant) {
  spawn("beta/c1");
  spawn("gamma/c1");
  auto [revoked_id, revoked_key] = make_key("beta", "admin", "gone");
  ASSERT_EQ(call(test::test_admin_key, "DELETE", "/v1/keys/" + revoked_id).status, 204);
  std::vector<caller> callers{
    {"anonymous", "", 0, ""},
    {"garbage token", "not-a-token", 0, ""},
    {"revoked key", revoked_key, 0, ""},
    {"expired jwt", jwt({{"exp", unix_s() - 3600}}), 0, ""},
    {"not-yet-valid jwt", jwt({{"nbf", unix_s() + 3600}}), 0, ""},
    {"forged jwt",
     sign_jwt(json{{"iss", "hive"},
                   {"aud", "hive"},
                   {"sub", "x"},
                   {"tenant", "beta"},
                   {"role", "admin"},
                   {"exp", unix_s() + 600}},
              "not-the-secret-not-the-secret-not-the-secret"),
     0, ""},
    {"wrong-audience jwt", jwt({{"aud", "elsewhere"}}), 0, ""},
    {"admin key", test::test_admin_key, 3, "*"},
    {"beta admin key", make_key("beta", "admin").second, 3, "beta"},
    {"beta operator key", make_key("beta", "operator").second, 2, "beta"},
    {"beta viewer key", make_key("beta", "viewer").second, 1, "beta"},
    {"beta operator jwt", jwt({}), 2, "beta"},
    {"beta viewer jwt", jwt({{"role", "viewer"}}), 1, "beta"},
  };
  auto backup_root = dir.path / "backups";
  std::vector<route_row> routes{
    {"GET", "/v1/agents?tenant={T}", "", 1, true},
    {"POST", "/v1/agents", R"({"id":"{T}/n{N}","kind":"counter"})", 2, true},
    {"GET", "/v1/agents/{T}/c1", "", 1, true},
    {"DELETE", "/v1/agents/{T}/d{N}", "", 2, true},
    {"POST", "/v1/agents/{T}/c1/tell", R"({"op":"add","by":1})", 2, true},
    {"POST", "/v1/agents/{T}/c1/ask", R"({"op":"get"})", 2, true},
    {"POST", "/v1/agents/{T}/c1/migrate", R"({"to":"elsewhere"})", 3, false},
    {"POST", "/v1/admin/backup", R"({"to":")" + (backup_root / "b{N}").string() + "\"}", 3, false},
    {"GET", "/v1/cluster/nodes", "", 1, false},
    {"GET", "/v1/keys?tenant={T}", "", 2, true},
    {"POST", "/v1/keys", R"({"tenant":"{T}","role":"viewer","name":"m{N}"})", 2, true},
    {"DELETE", "/v1/keys/{KEY}", "", 2, true},
    {"GET", "/v1/no-such-route", "", 1, false},
  };
  int n = 0;
  size_t checked = 0;
  for (auto& r : routes) {
    for (auto& c : callers) {
      for (std::string tenant : {"beta", "gamma"}) {
        if (!r.scoped && tenant == "gamma")
          continue;
        ++n;
        auto fill = [&](std::string s) {
          for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
                 {"{T}", tenant}, {"{N}", std::to_string(n)}}) {
            for (auto p = s.find(from); p != std::string::npos; p = s.find(from))
              s.replace(p, from.size(), to);
          }
          if (auto p = s.find("{KEY}"); p != std::string::npos)
            s.replace(p, 5, make_key(tenant, "viewer", "victim").first);
          return s;
        };
        auto target = fill(r.target);
        auto res = call(c.token, r.method, target, fill(r.body));
        int expected_class;
        if (c.rank == 0)
          expected_class = 401;
        else if (c.rank < r.needed_rank || (r.scoped && c.rank < 3 && tenant != c.tenant))
          expected_class = 403;
        else
          expected_class = 0; // anything but 401/403
        auto where = c.what + ": " + r.method + " " + target + " -> " + std::to_string(res.status)
          + " " + res.body;
        if (expected_class == 0) {
          EXPECT_NE(res.status, 401) << where;
          EXPECT_NE(res.status, 403) << where;
          EXPECT_GE(res.status, 200) << where;
        } else {
          EXPECT_EQ(res.status, expected_class) << where;
          auto code = json::parse(res.body, nullptr, false)["error"].value("code", "");
          EXPECT_EQ(code, expected_class == 401 ? "unauthenticated" : "forbidden") << where;
          if (expected_class == 401) {
            EXPECT_EQ(res.headers["www-authenticate"], R"(Bearer realm="hive")") << where;
          }
        }
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 13u * (9u * 2u + 4u));
  // The probes need no credentials.
  EXPECT_EQ(call("", "GET", "/healthz").status, 200);
  EXPECT_EQ(call("", "GET", "/readyz").status, 200);
}

TEST_F(gateway_auth_test, listings_never_show_another_tenants_agents_or_keys) {
  spawn("beta/a1");
  spawn("beta/a2");
  spawn("gamma/a1");
  auto beta_op = make_key("beta", "operator").second;
  make_key("gamma", "operator");
  auto r = call(beta_op, "GET", "/v1/agents");
  ASSERT_EQ(r.status, 200) << r.body;
  auto agents = json::parse(r.body)["agents"];
  ASSERT_EQ(agents.size(), 2u) << r.body;
  for (auto& a : agents)
    EXPECT_EQ(a["id"].get<std::string>().rfind("beta/", 0), 0u) << r.body;
  // Paging from another tenant's id is refused rather than leaking the order.
  EXPECT_EQ(call(beta_op, "GET", "/v1/agents?after=gamma/a1").status, 403);
  auto all = call(test::test_admin_key, "GET", "/v1/agents");
  EXPECT_EQ(json::parse(all.body)["agents"].size(), 3u) << all.body;
  auto keys = call(beta_op, "GET", "/v1/keys");
  ASSERT_EQ(keys.status, 200);
  auto key_list = json::parse(keys.body);
  for (auto& k : key_list["keys"]) {
    EXPECT_EQ(k["tenant"], "beta") << keys.body;
    EXPECT_FALSE(k.contains("hash")) << keys.body;
    EXPECT_FALSE(k.contains("key")) << keys.body;
  }
}

TEST_F(gateway_auth_test, keys_cannot_escalate_and_stop_working_when_revoked) {
  auto [op_id, op_key] = make_key("beta", "operator", "ci");
  // An operator may hand out operator and viewer keys of its own tenant only.
  auto up = call(op_key, "POST", "/v1/keys", R"({"role":"admin","name":"up"})");
  EXPECT_EQ(up.status, 403) << up.body;
  auto other = call(op_key, "POST", "/v1/keys", R"({"tenant":"gamma","role":"viewer","name":"x"})");
  EXPECT_EQ(other.status, 403) << other.body;
  auto star = call(op_key, "POST", "/v1/keys", R"({"tenant":"*","role":"viewer","name":"x"})");
  EXPECT_EQ(star.status, 403) << star.body;
  auto mine = call(op_key, "POST", "/v1/keys", R"({"role":"viewer","name":"dash"})");
  ASSERT_EQ(mine.status, 201) << mine.body;
  auto viewer = json::parse(mine.body);
  EXPECT_EQ(viewer["tenant"], "beta");
  EXPECT_EQ(call(viewer["key"], "GET", "/v1/agents").status, 200);
  // An operator cannot revoke an admin key of its tenant.
  auto [admin_id, admin_key] = make_key("beta", "admin", "boss");
  EXPECT_EQ(call(op_key, "DELETE", "/v1/keys/" + admin_id).status, 403);
  // Revocation takes effect at once.
  EXPECT_EQ(call(op_key, "DELETE", "/v1/keys/" + viewer["id"].get<std::string>()).status, 204);
  auto after = call(viewer["key"], "GET", "/v1/agents");
  EXPECT_EQ(after.status, 401) << after.body;
  EXPECT_NE(after.body.find("revoked"), std::string::npos) << after.body;
  EXPECT_EQ(call(op_key, "DELETE", "/v1/keys/" + viewer["id"].get<std::string>()).status, 404);
  // Bad bodies name the field.
  auto bad = call(test::test_admin_key, "POST", "/v1/keys", R"({"role":"root","name":"x"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("role"), std::string::npos) << bad.body;
  auto extra =
    call(test::test_admin_key, "POST", "/v1/keys", R"({"role":"viewer","name":"x","y":1})");
  EXPECT_EQ(extra.status, 400);
  EXPECT_NE(extra.body.find("'y'"), std::string::npos) << extra.body;
  EXPECT_EQ(call(test::test_admin_key, "DELETE", "/v1/keys/bootstrap").status, 404);
}

TEST_F(gateway_auth_test, the_audit_log_records_changes_and_refusals_with_their_principal) {
  auto [op_id, op_key] = make_key("beta", "operator", "ci");
  ASSERT_EQ(call(op_key, "POST", "/v1/agents", R"({"id":"beta/a","kind":"counter"})").status, 201);
  ASSERT_EQ(call(op_key, "POST", "/v1/agents", R"({"id":"gamma/a","kind":"counter"})").status, 403);
  ASSERT_EQ(call("", "DELETE", "/v1/agents/beta/a").status, 401);
  ASSERT_EQ(call(op_key, "DELETE", "/v1/agents/beta/a").status, 204);
  // Reads and messages are not audited.
  ASSERT_EQ(call(op_key, "GET", "/v1/agents").status, 200);
  auto lines = audit_lines();
  // Key creation by the admin, then the four calls above.
  ASSERT_EQ(lines.size(), 5u) << audit_path;
  std::vector<json> recs;
  for (auto& l : lines)
    recs.push_back(json::parse(l));
  EXPECT_EQ(recs[0]["principal"], "key:bootstrap");
  EXPECT_EQ(recs[0]["action"], "POST /v1/keys");
  EXPECT_EQ(recs[0]["target"], op_id);
  EXPECT_EQ(recs[1]["principal"], "key:" + op_id);
  EXPECT_EQ(recs[1]["tenant"], "beta");
  EXPECT_EQ(recs[1]["target"], "beta/a");
  EXPECT_EQ(recs[1]["status"], 201);
  EXPECT_EQ(recs[1]["result"], "ok");
  EXPECT_EQ(recs[2]["status"], 403);
  EXPECT_EQ(recs[2]["result"], "forbidden");
  EXPECT_EQ(recs[2]["target"], "gamma/a");
  EXPECT_EQ(recs[3]["principal"], "anonymous");
  EXPECT_EQ(recs[3]["status"], 401);
  EXPECT_EQ(recs[4]["action"], "DELETE /v1/agents/{id}");
  EXPECT_EQ(recs[4]["status"], 204);
  for (auto& r : recs) {
    EXPECT_EQ(r["node"], "ga");
    EXPECT_EQ(r["correlation_id"].get<std::string>().size(), 16u);
    EXPECT_GT(r["ts_ms"].get<int64_t>(), 0);
  }
}

class gateway_quota_test : public gateway_auth_test {
public:
  void configure(node_config& c) override {
    c.quota.requests_per_s = 1;
    c.quota.burst_requests = 5;
    c.quota.message_bytes_max = 64;
  }
};

TEST_F(gateway_quota_test, a_burst_passes_then_429_with_retry_after_per_tenant) {
  auto beta = make_key("beta", "viewer").second; // the admin's own bucket ("*") pays these
  auto gamma = make_key("gamma", "viewer").second;
  int ok = 0;
  int limited = 0;
  std::string retry_after;
  std::string message;
  for (int i = 0; i < 8; ++i) {
    auto r = call(beta, "GET", "/v1/cluster/nodes");
    if (r.status == 200) {
      ++ok;
    } else if (r.status == 429) {
      ++limited;
      retry_after = r.headers["retry-after"];
      message = r.body;
    }
  }
  // One token may have come back while the loop ran (1 per second).
  EXPECT_GE(ok, 5);
  EXPECT_LE(ok, 6);
  EXPECT_EQ(ok + limited, 8);
  EXPECT_EQ(retry_after, "1");
  EXPECT_NE(message.find("rate_limited"), std::string::npos) << message;
  EXPECT_NE(message.find("quota.requests_per_s"), std::string::npos) << message;
  // Another tenant has its own bucket.
  EXPECT_EQ(call(gamma, "GET", "/v1/cluster/nodes").status, 200);
  // Probes are never limited.
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(call("", "GET", "/healthz").status, 200);
}

TEST_F(gateway_quota_test, a_message_above_message_bytes_max_is_413_naming_the_key) {
  spawn("beta/c");
  auto body = R"({"op":"add","by":1,"pad":")" + std::string(100, 'x') + "\"}";
  auto r = call(test::test_admin_key, "POST", "/v1/agents/beta/c/ask", body);
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_NE(r.body.find("quota.message_bytes_max"), std::string::npos) << r.body;
  auto t = call(test::test_admin_key, "POST", "/v1/agents/beta/c/tell", body);
  EXPECT_EQ(t.status, 413) << t.body;
  EXPECT_EQ(call(test::test_admin_key, "POST", "/v1/agents/beta/c/ask", R"({"op":"get"})").status,
            200);
}

} // namespace

namespace {

// -- the OpenAPI document -------------------------------------------------------------------------

TEST_F(gateway_auth_test, the_openapi_document_lists_exactly_the_routes_the_gateway_serves) {
  auto r = call(test::test_admin_key, "GET", "/v1/openapi.json");
  ASSERT_EQ(r.status, 200) << r.body;
  auto doc = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["openapi"].get<std::string>().rfind("3.", 0), 0u);
  EXPECT_EQ(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
  EXPECT_EQ(call("", "GET", "/v1/openapi.json").status, 401);
  // The same paths and methods as the gateway's route table, both ways.
  std::map<std::string, std::set<std::string>> documented;
  for (auto& [path, item] : doc["paths"].items())
    for (auto& [method, op] : item.items())
      if (method != "parameters") {
        auto upper = method;
        for (auto& c : upper)
          c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        documented[path].insert(upper);
        EXPECT_TRUE(op.contains("responses")) << method << " " << path;
      }
  std::map<std::string, std::set<std::string>> served;
  for (auto& route : gateway::routes())
    served[route.path] = {route.methods.begin(), route.methods.end()};
  EXPECT_EQ(documented, served);
  // Every documented operation is routed (no 404 route_not_found, no 405), and every other
  // method on its path is a 405.
  spawn("acme/x");
  auto concrete = [](std::string p) {
    for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"{tenant}", "acme"}, {"{name}", "x"}, {"{id}", "0000000000000000"}, {"{op}", "pause"}})
      if (auto i = p.find(from); i != std::string::npos)
        p.replace(i, from.size(), to);
    return p;
  };
  for (auto& [path, methods] : documented) {
    for (std::string m : {"GET", "POST", "PUT", "DELETE", "PATCH"}) {
      std::string body;
      if (m == "POST" && methods.count(m)) {
        auto& op = doc["paths"][path]["post"];
        body =
          op["requestBody"]["content"]["application/json"].value("example", json::object()).dump();
        if (path == "/v1/admin/backup")
          body = json{{"to", (dir.path / "openapi-backup").string()}}.dump();
      }
      auto res = call(test::test_admin_key, m, concrete(path), body);
      auto code = json::parse(res.body, nullptr, false);
      auto err = code.is_object() && code.contains("error") ? code["error"].value("code", "") : "";
      auto where = m + " " + path + " -> " + std::to_string(res.status) + " " + res.body;
      if (methods.count(m)) {
        EXPECT_NE(err, "route_not_found") << where;
        EXPECT_NE(res.status, 405) << where;
      } else {
        EXPECT_EQ(res.status, 405) << where;
      }
    }
  }
  // Every errc name is in the documented error code enum.
  auto codes =
    doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
  for (int i = 1; i <= static_cast<int>(errc::not_found); ++i) {
    auto name = std::string{to_string(static_cast<errc>(i))};
    EXPECT_NE(std::find(codes.begin(), codes.end(), name), codes.end()) << name << " undocumented";
  }
}

} // namespace

namespace {

// -- idle connections -----------------------------------------------------------------------------

TEST_F(gateway_auth_test, a_thousand_idle_connections_do_not_stop_a_legitimate_client) {
  // Both ends live in this process: 2,000 descriptors and some.
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_cur < 2200) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4096);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0);
  }
  if (lim.rlim_cur < 2200)
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << lim.rlim_max << " is below 2200";
  spawn("acme/c");
  std::vector<int> idle;
  for (int i = 0; i < 1000; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(gw->port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << i;
    // Half of them send a partial request and stall (slowloris), half send nothing.
    if (i % 2 == 0) {
      std::string part = "POST /v1/agents/acme/c/ask HTTP/1.1\r\nHost: h\r\n";
      ASSERT_EQ(::send(fd, part.data(), part.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(part.size()));
    }
    idle.push_back(fd);
  }
  // Wait until the gateway holds them all.
  for (int i = 0; i < 500 && gw->connections() < 1000; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(gw->connections(), 1000u);
  for (int i = 1; i <= 20; ++i) {
    auto r = call(test::test_admin_key, "POST", "/v1/agents/acme/c/ask", R"({"op":"add","by":1})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body)["value"], i);
  }
  for (int fd : idle)
    ::close(fd);
}

} // namespace

namespace {

// -- the event stream -----------------------------------------------------------------------------

namespace ws = boost::beast::websocket;

/// A WebSocket client of `/v1/events`.
class event_client {
public:
  /// Connects and upgrades; `status()` is 101 on success, else the HTTP status of the refusal.
  event_client(uint16_t port, const std::string& token, const std::string& target) : ws_(ioc_) {
    auto& tcp_layer = boost::beast::get_lowest_layer(ws_);
    tcp_layer.expires_after(std::chrono::seconds(5));
    tcp_layer.connect({boost::asio::ip::make_address("127.0.0.1"), port}, ec_);
    if (ec_)
      return;
    ws_.set_option(ws::stream_base::decorator([token](ws::request_type& req) {
      req.set(boost::beast::http::field::authorization, "Bearer " + token);
    }));
    ws::response_type res;
    ws_.handshake(res, "127.0.0.1", target, ec_);
    status_ = res.result_int();
    // The deadline above was for connecting; left set, it would also cut short every later
    // read once 5 s have passed since construction (a slow, sanitized run got there).
    tcp_layer.expires_never();
  }

  [[nodiscard]] unsigned status() const {
    return status_;
  }

  /// The next event, nullopt after `timeout` or when the stream ended (see `error()`).
  /// (Beast's stream timeouts apply to asynchronous operations only: the read is one, run
  /// for at most `timeout`; a read cut short leaves the stream unusable.)
  std::optional<json> next(std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    boost::beast::flat_buffer buf;
    bool done = false;
    ws_.async_read(buf, [&](boost::beast::error_code ec, size_t) {
      ec_ = ec;
      done = true;
    });
    ioc_.restart();
    ioc_.run_for(timeout);
    if (!done) {
      boost::beast::get_lowest_layer(ws_).cancel();
      ioc_.restart();
      ioc_.run();
      return std::nullopt;
    }
    if (ec_)
      return std::nullopt;
    return json::parse(boost::beast::buffers_to_string(buf.data()), nullptr, false);
  }

  [[nodiscard]] boost::beast::error_code error() const {
    return ec_;
  }

  [[nodiscard]] ws::close_reason reason() const {
    return ws_.reason();
  }

private:
  boost::asio::io_context ioc_;
  ws::stream<boost::beast::tcp_stream> ws_;
  boost::beast::error_code ec_;
  unsigned status_ = 0;
};

TEST_F(gateway_auth_test, the_event_stream_shows_a_tenant_its_own_events_only) {
  auto beta_viewer = make_key("beta", "viewer").second;
  event_client beta{gw->port(), beta_viewer, "/v1/events"};
  ASSERT_EQ(beta.status(), 101u) << beta.error().message();
  event_client one{gw->port(), test::test_admin_key, "/v1/events?agent=beta/b"};
  ASSERT_EQ(one.status(), 101u) << one.error().message();
  event_client all{gw->port(), test::test_admin_key, "/v1/events"};
  ASSERT_EQ(all.status(), 101u) << all.error().message();
  // Subscriptions are in place once the upgrade answered; these spawns come after it.
  spawn("gamma/a");
  spawn("beta/a");
  spawn("beta/b");
  ASSERT_EQ(call(test::test_admin_key, "DELETE", "/v1/agents/beta/a").status, 204);
  std::vector<std::string> seen;
  for (auto e = beta.next(); e; e = beta.next(std::chrono::milliseconds(500))) {
    EXPECT_EQ((*e)["tenant"], "beta") << e->dump();
    EXPECT_EQ((*e)["node"], "ga") << e->dump();
    seen.push_back((*e)["type"].get<std::string>() + " " + (*e)["agent"].get<std::string>());
  }
  std::vector<std::string> expected{"agent_started beta/a", "agent_started beta/b",
                                    "agent_stopped beta/a"};
  EXPECT_EQ(seen, expected);
  auto b = one.next();
  ASSERT_TRUE(b) << one.error().message();
  EXPECT_EQ((*b)["agent"], "beta/b");
  EXPECT_EQ((*b)["kind"], "counter");
  EXPECT_FALSE(one.next(std::chrono::milliseconds(300))) << "an event of another agent";
  // The admin sees every tenant's.
  size_t n = 0;
  for (auto e = all.next(); e; e = all.next(std::chrono::milliseconds(300)))
    ++n;
  EXPECT_EQ(n, 4u);
}

TEST_F(gateway_auth_test, the_event_stream_refuses_other_tenants_and_plain_requests) {
  auto beta_viewer = make_key("beta", "viewer").second;
  // Upgrade requests by hand: the refusal is an ordinary HTTP answer.
  auto upgrade = [&](const std::string& token, const std::string& target) {
    http_client c{gw->port(), token};
    auto r = c.request("GET", target, {},
                       {{"Connection", "Upgrade"},
                        {"Upgrade", "websocket"},
                        {"Sec-WebSocket-Version", "13"},
                        {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}});
    return r ? r->status : 0;
  };
  EXPECT_EQ(upgrade(beta_viewer, "/v1/events?tenant=gamma"), 403);
  EXPECT_EQ(upgrade(beta_viewer, "/v1/events?agent=gamma/x"), 403);
  EXPECT_EQ(upgrade("", "/v1/events"), 401);
  EXPECT_EQ(upgrade(beta_viewer, "/v1/events?tenant=Bad!"), 400);
  EXPECT_EQ(upgrade(beta_viewer, "/v1/events?agent=beta/x&tenant=gamma"), 400);
  event_client refused{gw->port(), beta_viewer, "/v1/events?tenant=gamma"};
  EXPECT_NE(refused.status(), 101u);
  auto plain = call(beta_viewer, "GET", "/v1/events");
  EXPECT_EQ(plain.status, 400) << plain.body;
  EXPECT_NE(plain.body.find("WebSocket"), std::string::npos) << plain.body;
}

class gateway_events_test : public gateway_auth_test {
public:
  void configure(node_config& c) override {
    c.gateway.events_buffer_max = 64;
  }
};

TEST_F(gateway_events_test, a_consumer_that_stops_reading_is_disconnected) {
  event_client stalled{gw->port(), test::test_admin_key, "/v1/events"};
  ASSERT_EQ(stalled.status(), 101u);
  event_client reader{gw->port(), test::test_admin_key, "/v1/events?agent=acme/last"};
  ASSERT_EQ(reader.status(), 101u);
  auto before = gw->connections();
  EXPECT_EQ(before, 2u);
  // Far more than the socket buffers hold: the stalled consumer falls behind its 64 events.
  std::string pad(200, 'x');
  for (int i = 0; i < 100000 && gw->connections() == before; ++i)
    m->events().publish(
      {"agent_started", "acme/a" + std::to_string(i % 100), "counter", {{"pad", pad}}});
  for (int i = 0; i < 300 && gw->connections() == before; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(gw->connections(), before - 1) << "the stalled consumer is still connected";
  // The stalled one finds its stream ended (after what the socket buffers held).
  size_t got = 0;
  while (stalled.next(std::chrono::milliseconds(2000)))
    ++got;
  EXPECT_TRUE(stalled.error()) << "the stream did not end";
  // The other consumer is unaffected.
  m->events().publish({"agent_started", "acme/last", "counter", {}});
  auto last = reader.next();
  ASSERT_TRUE(last) << reader.error().message();
  EXPECT_EQ((*last)["agent"], "acme/last");
}

class gateway_agents_quota_test : public gateway_auth_test {
public:
  void configure(node_config& c) override {
    c.quota.agents_max = 3;
  }
};

TEST_F(gateway_agents_quota_test, a_tenant_spawns_at_most_agents_max_and_others_are_unaffected) {
  auto spawn_as = [&](const std::string& id) {
    return call(test::test_admin_key, "POST", "/v1/agents",
                json{{"id", id}, {"kind", "counter"}}.dump());
  };
  for (auto id : {"acme/a1", "acme/a2", "acme/a3"})
    EXPECT_EQ(spawn_as(id).status, 201) << id;
  auto over = spawn_as("acme/a4");
  EXPECT_EQ(over.status, 403) << over.body;
  EXPECT_NE(over.body.find("quota_exceeded"), std::string::npos) << over.body;
  EXPECT_NE(over.body.find("quota.agents_max = 3"), std::string::npos) << over.body;
  // Refused means not created; another tenant still has its whole quota.
  EXPECT_EQ(call(test::test_admin_key, "GET", "/v1/agents/acme/a4").status, 404);
  EXPECT_EQ(spawn_as("beta/b1").status, 201);
  // Stopping one frees its place.
  EXPECT_EQ(call(test::test_admin_key, "DELETE", "/v1/agents/acme/a1").status, 204);
  EXPECT_EQ(spawn_as("acme/a4").status, 201);
  EXPECT_EQ(spawn_as("acme/a5").status, 403);
}

} // namespace
