// The circuit breaker seen from the outside: an agent spawned with "breaker":true over HTTP
// fails repeatedly; the gateway then answers 503 circuit_open at once, inspection shows the
// open breaker, and after the reset timeout a successful probe closes it again.

#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/circuit_breaker.hpp"
#include "actors/gateway.hpp"
#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/node_runtime.hpp"
#include "support/http_client.hpp"
#include "support/test_security.hpp"

using namespace std::chrono_literals;
using namespace hive;
using nlohmann::json;

namespace {

/// Answers {"op":"fail"} with an internal error (a failure for the breaker), anything else
/// with {"ok":true}.
class flaky_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    if ((*body)->value("op", "") == "fail")
      return make_error(errc::internal, "failing on request");
    return std::string{R"({"ok":true})"};
  }
};

class gateway_breaker_test : public ::testing::Test {
public:
  void SetUp() override {
    cfg.node.name = "gb";
    cfg.node.scheduler_threads = 2;
    cfg.gateway.listen = {"127.0.0.1", 0};
    cfg.breaker.failures_consecutive_max = 3;
    cfg.breaker.reset_timeout_ms = 300;
    cfg.breaker.reset_timeout_ms_max = 1000;
    cfg.breaker.half_open_probes = 1;
    configure_actor_system(sys_cfg, cfg);
    sys.emplace(sys_cfg);
    kind_registry kinds;
    ASSERT_FALSE(kinds.add(
      {"flaky", "fails on request", [](const json&) -> caf::expected<std::unique_ptr<agent>> {
         return std::unique_ptr<agent>{new flaky_agent};
       }}));
    m = std::make_shared<metrics>();
    auto r =
      node_runtime::start(*sys, cfg, std::move(kinds), m, make_breaker_factory(cfg.breaker, m));
    ASSERT_TRUE(r) << describe(r.error());
    rt = std::move(*r);
    sec = test::make_test_security(cfg);
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

  json inspect(test::http_client& http) {
    auto r = http.request("GET", "/v1/agents/acme/f");
    EXPECT_TRUE(r && r->status == 200);
    return r ? json::parse(r->body) : json{};
  }

  node_config cfg;
  caf::actor_system_config sys_cfg;
  std::optional<caf::actor_system> sys;
  std::shared_ptr<metrics> m;
  std::unique_ptr<node_runtime> rt;
  std::unique_ptr<security> sec;
  std::unique_ptr<gateway> gw;
};

} // namespace

TEST_F(gateway_breaker_test, repeated_failures_open_the_breaker_and_a_probe_closes_it) {
  test::http_client http{gw->port()};
  auto spawned = http.request("POST", "/v1/agents",
                              R"({"id":"acme/f","kind":"flaky","config":{},"breaker":true})");
  ASSERT_TRUE(spawned);
  ASSERT_EQ(spawned->status, 201) << spawned->body;
  EXPECT_EQ(inspect(http)["breaker"]["state"], "closed");
  for (int i = 0; i < 3; ++i) {
    auto r = http.request("POST", "/v1/agents/acme/f/ask", R"({"op":"fail"})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 500) << "failure " << i << ": " << r->body;
  }
  auto refused = http.request("POST", "/v1/agents/acme/f/ask", R"({"op":"ok"})");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503) << refused->body;
  EXPECT_EQ(json::parse(refused->body)["error"]["code"], "circuit_open");
  EXPECT_TRUE(refused->headers.count("retry-after"));
  auto open = inspect(http);
  EXPECT_EQ(open["breaker"]["state"], "open") << open.dump();
  EXPECT_EQ(open["state"], json::object()) << "inspection still reaches the agent";
  EXPECT_NE(m->render().find("hive_breaker_transitions_total{to=\"open\"} 1"), std::string::npos);
  // After the reset timeout one probe goes through; its success closes the breaker.
  std::this_thread::sleep_for(400ms);
  auto probe = http.request("POST", "/v1/agents/acme/f/ask", R"({"op":"ok"})");
  ASSERT_TRUE(probe);
  EXPECT_EQ(probe->status, 200) << probe->body;
  EXPECT_EQ(inspect(http)["breaker"]["state"], "closed");
}
