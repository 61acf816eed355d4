// Tests of the HTTP gateway over real HTTP on 127.0.0.1 (ephemeral port) against a real
// actor system and node_runtime with the sample kinds plus two test kinds.

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <caf/all.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/gateway.hpp"
#include "actors/sample_kinds.hpp"
#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/kind.hpp"
#include "runtime/logging.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_runtime.hpp"
#include "support/test_security.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

using response = http::response<http::string_body>;

/// The Authorization header line of the test admin key, for raw requests.
std::string auth_line() {
  return "Authorization: Bearer " + hive::test::test_admin_key + "\r\n";
}

std::string str(beast::string_view x) {
  return std::string{x.data(), x.size()};
}

// -- test kinds ---------------------------------------------------------------------------------

/// Sleeps `{"sleep_ms":N}` before answering `{"slept":N}`: a slow agent.
class sleeper_agent : public hive::agent {
public:
  caf::expected<std::string> handle(hive::call_context& call) override {
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    auto ms = (*body)->value("sleep_ms", 0);
    std::this_thread::sleep_for(milliseconds{ms});
    return json{{"slept", ms}}.dump();
  }
};

/// Answers with the envelope it got, so tests can check what the gateway put in it.
class whoami_agent : public hive::agent {
public:
  caf::expected<std::string> handle(hive::call_context& call) override {
    auto& env = call.env();
    return json{{"cid", hive::log::format_cid(env.correlation_id)},
                {"tenant", env.tenant},
                {"sender", env.sender},
                {"deadline_unix_ms", env.deadline_unix_ms},
                {"body", call.body_text()}}
      .dump();
  }
};

hive::kind_registry test_kinds() {
  hive::kind_registry kinds;
  EXPECT_FALSE(hive::register_sample_kinds(kinds));
  EXPECT_FALSE(kinds.add({"sleeper", "sleeps before answering",
                          [](const json&) -> caf::expected<std::unique_ptr<hive::agent>> {
                            return std::make_unique<sleeper_agent>();
                          }}));
  EXPECT_FALSE(kinds.add({"whoami", "answers with its envelope",
                          [](const json&) -> caf::expected<std::unique_ptr<hive::agent>> {
                            return std::make_unique<whoami_agent>();
                          }}));
  return kinds;
}

// -- a small blocking HTTP client with timeouts -------------------------------------------------

class http_client {
public:
  /// Connects to 127.0.0.1:port; `error()` tells whether that worked.
  explicit http_client(uint16_t port) {
    stream_.expires_after(2s);
    stream_.async_connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port},
                          [this](beast::error_code ec) { ec_ = ec; });
    run();
  }

  [[nodiscard]] beast::error_code error() const {
    return ec_;
  }

  /// The bearer credential of `request` (empty: none).
  std::string token = hive::test::test_admin_key;

  /// Sends raw bytes.
  beast::error_code write_raw(std::string data) {
    raw_ = std::move(data);
    stream_.expires_after(2s);
    asio::async_write(stream_, asio::buffer(raw_),
                      [this](beast::error_code ec, size_t) { ec_ = ec; });
    run();
    return ec_;
  }

  /// Reads one response; nullopt (and `error()`) on failure or after `timeout`.
  std::optional<response> read(milliseconds timeout = 5s) {
    response res;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    stream_.expires_after(timeout);
    http::async_read(stream_, buffer_, parser, [this](beast::error_code ec, size_t) { ec_ = ec; });
    run();
    if (ec_)
      return std::nullopt;
    return parser.release();
  }

  /// Reads the interim `100 Continue` response (no body).
  std::optional<unsigned> read_interim(milliseconds timeout = 5s) {
    http::response_parser<http::empty_body> parser;
    stream_.expires_after(timeout);
    http::async_read_header(stream_, buffer_, parser,
                            [this](beast::error_code ec, size_t) { ec_ = ec; });
    run();
    if (ec_)
      return std::nullopt;
    return parser.get().result_int();
  }

  /// Sends one request and reads its response.
  std::optional<response> request(http::verb method, const std::string& target,
                                  const std::string& body = {},
                                  std::vector<std::pair<std::string, std::string>> headers = {}) {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!token.empty())
      req.set(http::field::authorization, "Bearer " + token);
    for (auto& [k, v] : headers)
      req.set(k, v);
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    std::ostringstream os;
    os << req;
    if (write_raw(os.str()))
      return std::nullopt;
    return read();
  }

  /// Waits until the server closes the connection; returns false if it is still open after
  /// `timeout` or if the server sent data instead.
  bool wait_closed(milliseconds timeout, std::string* got = nullptr) {
    char byte = 0;
    stream_.expires_after(timeout);
    for (;;) {
      size_t n = 0;
      stream_.async_read_some(asio::buffer(&byte, 1), [this, &n](beast::error_code ec, size_t k) {
        ec_ = ec;
        n = k;
      });
      run();
      if (n > 0 && got)
        got->push_back(byte);
      if (n > 0)
        continue;
      return ec_ && ec_ != beast::error::timeout;
    }
  }

private:
  void run() {
    ioc_.restart();
    ioc_.run();
  }

  asio::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buffer_;
  std::string raw_;
  beast::error_code ec_;
};

json body_of(const response& res) {
  return json::parse(res.body(), nullptr, false);
}

std::string error_code_of(const response& res) {
  auto j = body_of(res);
  if (!j.is_object() || !j.contains("error"))
    return "<no error body: " + res.body() + ">";
  return j["error"].value("code", "<no code>");
}

std::string error_message_of(const response& res) {
  auto j = body_of(res);
  if (!j.is_object() || !j.contains("error"))
    return {};
  return j["error"].value("message", "");
}

// -- fixture ------------------------------------------------------------------------------------

class gateway_test : public ::testing::Test {
protected:
  gateway_test() {
    cfg.node.name = "gw-test";
    cfg.gateway.listen = {"127.0.0.1", 0};
    cfg.gateway.threads = 2;
    cfg.gateway.body_bytes_max = 64 << 10;
    cfg.gateway.header_bytes_max = 8 << 10;
    cfg.gateway.json_depth_max = 16;
    cfg.gateway.connections_max = 16;
    cfg.gateway.idle_timeout_ms = 5000;
    cfg.gateway.ask_timeout_ms_default = 2000;
    cfg.gateway.ask_timeout_ms_max = 10000;
    cfg.gateway.page_size_max = 50;
  }

  /// Lets a derived fixture change the config before start.
  virtual void configure(hive::node_config&) {}

  /// The audit log of the gateway (empty: none).
  virtual std::string audit_path() {
    return {};
  }

  void SetUp() override {
    configure(cfg);
    if (auto* level = std::getenv("HIVE_TEST_LOG_LEVEL")) // e.g. debug, to see every request
      hive::log::init(cfg.node.name, level);
    errors_before = hive::log::error_lines();
    sys_cfg.set("scheduler.max-threads", 2);
    sys_cfg.add_message_types<caf::id_block::hive>();
    sys_cfg.add_error_category(hive::errc_category, hive::render_error);
    sys = std::make_unique<caf::actor_system>(sys_cfg);
    m = std::make_shared<hive::metrics>();
    auto r = hive::node_runtime::start(*sys, cfg, test_kinds(), m);
    ASSERT_TRUE(r) << caf::to_string(r.error());
    rt = std::move(*r);
    sec = hive::test::make_test_security(cfg, audit_path());
    ASSERT_TRUE(sec);
    auto g = hive::gateway::start(*rt, cfg.gateway, *sec);
    ASSERT_TRUE(g) << hive::message_of(g.error());
    gw = std::move(*g);
    ASSERT_NE(gw->port(), 0);
  }

  void TearDown() override {
    gw.reset();
    if (rt)
      rt->shutdown();
    rt.reset();
    sys.reset();
    EXPECT_EQ(hive::log::error_lines(), errors_before) << "unexpected error-level log lines";
  }

  std::unique_ptr<http_client> client() {
    auto c = std::make_unique<http_client>(gw->port());
    EXPECT_FALSE(c->error()) << c->error().message();
    return c;
  }

  /// One request on a fresh connection.
  response call(http::verb method, const std::string& target, const std::string& body = {},
                std::vector<std::pair<std::string, std::string>> headers = {}) {
    auto c = client();
    auto res = c->request(method, target, body, std::move(headers));
    EXPECT_TRUE(res) << "no response to " << target << ": " << c->error().message();
    return res ? std::move(*res) : response{};
  }

  response spawn(const std::string& id, const std::string& kind, bool breaker = false) {
    json body{{"id", id}, {"kind", kind}, {"config", json::object()}};
    if (breaker)
      body["breaker"] = true;
    return call(http::verb::post, "/v1/agents", body.dump());
  }

  hive::node_config cfg;
  caf::actor_system_config sys_cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<hive::metrics> m;
  std::unique_ptr<hive::node_runtime> rt;
  std::unique_ptr<hive::security> sec;
  std::unique_ptr<hive::gateway> gw;
  uint64_t errors_before = 0;
};

// -- happy paths --------------------------------------------------------------------------------

TEST_F(gateway_test, healthz_and_readyz_answer_ok_with_a_correlation_id) {
  auto h = call(http::verb::get, "/healthz");
  EXPECT_EQ(h.result_int(), 200u);
  EXPECT_EQ(body_of(h), json({{"status", "ok"}}));
  EXPECT_EQ(str(h[http::field::content_type]), "application/json");
  auto cid = str(h["X-Correlation-Id"]);
  EXPECT_EQ(cid.size(), 16u) << cid;
  EXPECT_NE(cid, "0000000000000000");
  auto r = call(http::verb::get, "/readyz");
  EXPECT_EQ(r.result_int(), 200u);
  EXPECT_NE(str(r["X-Correlation-Id"]), cid) << "correlation ids must differ per request";
}

TEST_F(gateway_test, spawn_returns_201_with_id_kind_node) {
  auto res = spawn("acme/c1", "counter");
  ASSERT_EQ(res.result_int(), 201u) << res.body();
  EXPECT_EQ(body_of(res), json({{"id", "acme/c1"}, {"kind", "counter"}, {"node", "gw-test"}}));
  EXPECT_EQ(str(res[http::field::location]), "/v1/agents/acme/c1");
  ASSERT_TRUE(rt->find(hive::agent_id{"acme", "c1"}));
  EXPECT_EQ(rt->find(hive::agent_id{"acme", "c1"})->kind, "counter");
}

TEST_F(gateway_test, ask_counter_and_tell_then_ask_shows_the_effect) {
  ASSERT_EQ(spawn("acme/c1", "counter").result_int(), 201u);
  auto add = call(http::verb::post, "/v1/agents/acme/c1/ask", R"({"op":"add","by":5})");
  ASSERT_EQ(add.result_int(), 200u) << add.body();
  EXPECT_EQ(body_of(add), json({{"value", 5}}));
  auto tell = call(http::verb::post, "/v1/agents/acme/c1/tell", R"({"op":"add","by":2})");
  ASSERT_EQ(tell.result_int(), 202u) << tell.body();
  EXPECT_EQ(body_of(tell), json({{"accepted", true}}));
  // A tell is fire-and-forget: poll until its effect is visible (bounded).
  json last;
  auto deadline = steady_clock::now() + 3s;
  while (steady_clock::now() < deadline) {
    auto get = call(http::verb::post, "/v1/agents/acme/c1/ask?timeout_ms=1000", R"({"op":"get"})");
    ASSERT_EQ(get.result_int(), 200u) << get.body();
    last = body_of(get);
    if (last == json({{"value", 7}}))
      break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(last, json({{"value", 7}}));
}

TEST_F(gateway_test, ask_returns_the_reply_verbatim) {
  ASSERT_EQ(spawn("acme/e1", "echo").result_int(), 201u);
  std::string doc = "{ \"a\" : [1, 2.50, {\"b\":null}],\n \"s\":\"\\u00e9\" }";
  auto res = call(http::verb::post, "/v1/agents/acme/e1/ask", doc);
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_EQ(res.body(), doc);
  EXPECT_EQ(str(res[http::field::content_type]), "application/json");
}

TEST_F(gateway_test, envelope_carries_correlation_id_tenant_sender_and_deadline) {
  ASSERT_EQ(spawn("acme/w1", "whoami").result_int(), 201u);
  auto before =
    std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
  auto res = call(http::verb::post, "/v1/agents/acme/w1/ask?timeout_ms=3000", R"({"x":1})",
                  {{"X-Correlation-Id", "AbC123"}});
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_EQ(str(res["X-Correlation-Id"]), "0000000000abc123");
  auto j = body_of(res);
  EXPECT_EQ(j["cid"], "0000000000abc123");
  EXPECT_EQ(j["tenant"], "acme");
  EXPECT_EQ(j["sender"], "gateway");
  EXPECT_EQ(j["body"], R"({"x":1})");
  auto deadline = j["deadline_unix_ms"].get<int64_t>();
  EXPECT_GE(deadline, before + 3000);
  EXPECT_LE(deadline, before + 3000 + 2000);
}

TEST_F(gateway_test, list_pages_through_all_agents_in_id_order) {
  std::vector<std::string> ids{"acme/a1", "acme/a2", "acme/a3", "beta/b1", "beta/b2"};
  for (auto& id : ids)
    ASSERT_EQ(spawn(id, "echo").result_int(), 201u) << id;
  std::vector<std::string> seen;
  std::string target = "/v1/agents?limit=2";
  for (int page = 0; page < 10; ++page) {
    auto res = call(http::verb::get, target);
    ASSERT_EQ(res.result_int(), 200u) << res.body();
    auto j = body_of(res);
    ASSERT_TRUE(j["agents"].is_array()) << res.body();
    EXPECT_LE(j["agents"].size(), 2u);
    for (auto& a : j["agents"]) {
      seen.push_back(a["id"]);
      EXPECT_EQ(a["kind"], "echo");
      EXPECT_EQ(a["node"], "gw-test");
      EXPECT_EQ(a["restarts"], 0);
      EXPECT_EQ(a["breaker"], false);
    }
    if (j["next"].is_null())
      break;
    target = "/v1/agents?limit=2&after=" + j["next"].get<std::string>();
  }
  EXPECT_EQ(seen, ids);
  // Tenant filter (and a %-encoded `after`).
  auto beta = call(http::verb::get, "/v1/agents?tenant=beta&after=beta%2Fb1");
  ASSERT_EQ(beta.result_int(), 200u) << beta.body();
  auto bj = body_of(beta);
  ASSERT_EQ(bj["agents"].size(), 1u) << beta.body();
  EXPECT_EQ(bj["agents"][0]["id"], "beta/b2");
  EXPECT_TRUE(bj["next"].is_null());
  // Default limit, and a limit above page_size_max is capped rather than refused.
  auto all = call(http::verb::get, "/v1/agents?limit=100000");
  ASSERT_EQ(all.result_int(), 200u) << all.body();
  EXPECT_EQ(body_of(all)["agents"].size(), 5u);
}

TEST_F(gateway_test, list_limit_is_capped_by_page_size_max) {
  // page_size_max is 50: spawn 52 agents and ask for 1000, then for the default (100).
  for (int i = 0; i < 52; ++i) {
    auto id = "t/a" + std::to_string(100 + i);
    ASSERT_EQ(spawn(id, "echo").result_int(), 201u) << id;
  }
  auto res = call(http::verb::get, "/v1/agents?limit=1000");
  ASSERT_EQ(res.result_int(), 200u);
  auto j = body_of(res);
  EXPECT_EQ(j["agents"].size(), 50u);
  EXPECT_EQ(j["next"], "t/a149");
  auto dflt = call(http::verb::get, "/v1/agents");
  ASSERT_EQ(dflt.result_int(), 200u);
  EXPECT_EQ(body_of(dflt)["agents"].size(), 50u);
  auto rest = call(http::verb::get, "/v1/agents?after=t%2Fa149");
  ASSERT_EQ(rest.result_int(), 200u);
  EXPECT_EQ(body_of(rest)["agents"].size(), 2u);
  EXPECT_TRUE(body_of(rest)["next"].is_null());
}

TEST_F(gateway_test, inspect_shows_kind_node_and_state) {
  ASSERT_EQ(spawn("acme/c1", "counter").result_int(), 201u);
  ASSERT_EQ(call(http::verb::post, "/v1/agents/acme/c1/ask", R"({"op":"add","by":3})").result_int(),
            200u);
  auto res = call(http::verb::get, "/v1/agents/acme/c1");
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  auto j = body_of(res);
  EXPECT_EQ(j["kind"], "counter") << res.body();
  EXPECT_EQ(j["node"], "gw-test") << res.body();
  EXPECT_TRUE(j.contains("restarts")) << res.body();
  EXPECT_TRUE(j.contains("mailbox_size")) << res.body();
  EXPECT_TRUE(j.contains("supervisor")) << res.body();
  EXPECT_EQ(j["state"], json({{"value", 3}})) << res.body();
}

TEST_F(gateway_test, delete_stops_the_agent_then_it_is_not_found) {
  ASSERT_EQ(spawn("acme/c1", "counter").result_int(), 201u);
  auto del = call(http::verb::delete_, "/v1/agents/acme/c1");
  EXPECT_EQ(del.result_int(), 204u) << del.body();
  EXPECT_TRUE(del.body().empty());
  EXPECT_FALSE(rt->find(hive::agent_id{"acme", "c1"}));
  auto get = call(http::verb::get, "/v1/agents/acme/c1");
  EXPECT_EQ(get.result_int(), 404u);
  EXPECT_EQ(error_code_of(get), "agent_not_found");
  EXPECT_NE(error_message_of(get).find("acme/c1"), std::string::npos) << get.body();
  EXPECT_EQ(call(http::verb::delete_, "/v1/agents/acme/c1").result_int(), 404u);
  EXPECT_EQ(call(http::verb::post, "/v1/agents/acme/c1/ask", "{}").result_int(), 404u);
  // The id is free again.
  EXPECT_EQ(spawn("acme/c1", "echo").result_int(), 201u);
}

TEST_F(gateway_test, keep_alive_serves_many_requests_on_one_connection) {
  ASSERT_EQ(spawn("acme/c1", "counter").result_int(), 201u);
  auto c = client();
  for (int i = 1; i <= 5; ++i) {
    auto res = c->request(http::verb::post, "/v1/agents/acme/c1/ask", R"({"op":"add","by":1})");
    ASSERT_TRUE(res) << "request " << i << ": " << c->error().message();
    EXPECT_EQ(res->result_int(), 200u);
    EXPECT_TRUE(res->keep_alive());
    EXPECT_EQ(body_of(*res), json({{"value", i}}));
  }
  // Errors that are not protocol errors keep the connection too.
  auto nf = c->request(http::verb::get, "/nope");
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->result_int(), 404u);
  auto ok = c->request(http::verb::get, "/healthz");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->result_int(), 200u);
  EXPECT_EQ(gw->connections(), 1u);
  // Every answered request left the in-flight count, while the connection stays open.
  EXPECT_TRUE(gw->drain(1s));
  EXPECT_EQ(gw->in_flight(), 0u);
}

TEST_F(gateway_test, expect_100_continue_is_honoured) {
  auto c = client();
  std::string body = R"({"id":"acme/x1","kind":"echo"})";
  ASSERT_FALSE(c->write_raw("POST /v1/agents HTTP/1.1\r\nHost: h\r\n" + auth_line()
                            + "Expect: 100-continue\r\n"
                              "Content-Type: application/json\r\nContent-Length: "
                            + std::to_string(body.size()) + "\r\n\r\n"));
  auto interim = c->read_interim(2s);
  ASSERT_TRUE(interim) << c->error().message();
  EXPECT_EQ(*interim, 100u);
  ASSERT_FALSE(c->write_raw(body));
  auto res = c->read();
  ASSERT_TRUE(res) << c->error().message();
  EXPECT_EQ(res->result_int(), 201u) << res->body();
}

TEST_F(gateway_test, http_1_0_without_keep_alive_is_answered_then_closed) {
  auto c = client();
  ASSERT_FALSE(c->write_raw("GET /healthz HTTP/1.0\r\n\r\n"));
  auto res = c->read();
  ASSERT_TRUE(res) << c->error().message();
  EXPECT_EQ(res->result_int(), 200u);
  EXPECT_EQ(res->version(), 10u);
  EXPECT_TRUE(c->wait_closed(2s));
}

TEST_F(gateway_test, requests_are_counted_in_metrics_by_route_template) {
  ASSERT_EQ(spawn("acme/c1", "counter").result_int(), 201u);
  ASSERT_EQ(call(http::verb::post, "/v1/agents/acme/c1/ask", R"({"op":"get"})").result_int(), 200u);
  ASSERT_EQ(call(http::verb::get, "/v1/agents/acme/nobody").result_int(), 404u);
  auto text = m->render();
  EXPECT_NE(text.find(R"(code="201",route="POST /v1/agents")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(code="200",route="POST /v1/agents/{id}/ask")"), std::string::npos);
  EXPECT_NE(text.find(R"(code="404",route="GET /v1/agents/{id}")"), std::string::npos);
  EXPECT_EQ(text.find("acme/c1"), std::string::npos) << "agent ids must not become labels";
}

// -- errors -------------------------------------------------------------------------------------

TEST_F(gateway_test, bad_json_is_400_naming_the_problem) {
  auto res = call(http::verb::post, "/v1/agents", R"({"id":"acme/c1",)");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_EQ(error_code_of(res), "invalid_argument");
  EXPECT_NE(error_message_of(res).find("not valid JSON"), std::string::npos) << res.body();
  ASSERT_EQ(spawn("acme/e1", "echo").result_int(), 201u);
  for (auto target : {"/v1/agents/acme/e1/ask", "/v1/agents/acme/e1/tell"}) {
    auto r = call(http::verb::post, target, "{nope}");
    EXPECT_EQ(r.result_int(), 400u) << target;
    EXPECT_EQ(error_code_of(r), "invalid_argument") << target;
    auto empty = call(http::verb::post, target);
    EXPECT_EQ(empty.result_int(), 400u) << target;
    EXPECT_NE(error_message_of(empty).find("empty"), std::string::npos) << empty.body();
  }
}

TEST_F(gateway_test, bad_spawn_fields_are_400) {
  struct bad_case {
    std::string body;
    std::string code;
    std::string mentions;
  };
  std::vector<bad_case> cases{
    {R"(["acme/c1","counter"])", "invalid_argument", "JSON object"},
    {R"({"kind":"counter"})", "invalid_argument", "'id'"},
    {R"({"id":"acme/c1"})", "invalid_argument", "'kind'"},
    {R"({"id":5,"kind":"counter"})", "invalid_argument", "'id'"},
    {R"({"id":"acme/c1","kind":"counter","config":[]})", "invalid_argument", "'config'"},
    {R"({"id":"acme/c1","kind":"counter","breaker":"yes"})", "invalid_argument", "'breaker'"},
    {R"({"id":"acme/c1","kind":"counter","colour":"red"})", "invalid_argument", "'colour'"},
    {R"({"id":"acme/c1","kind":"counter","restart":"sometimes"})", "invalid_argument", "'restart'"},
    {R"({"id":"Acme/X","kind":"counter"})", "invalid_agent_id", ""},
    {R"({"id":"acme","kind":"counter"})", "invalid_agent_id", ""},
    {R"({"id":"acme/c1","kind":"no-such-kind"})", "unknown_kind", "no-such-kind"},
  };
  for (auto& c : cases) {
    auto res = call(http::verb::post, "/v1/agents", c.body);
    EXPECT_EQ(res.result_int(), 400u) << c.body << " -> " << res.body();
    EXPECT_EQ(error_code_of(res), c.code) << c.body << " -> " << res.body();
    EXPECT_FALSE(error_message_of(res).empty()) << c.body;
    EXPECT_NE(error_message_of(res).find(c.mentions), std::string::npos)
      << c.body << " -> " << res.body();
  }
  EXPECT_EQ(rt->agent_count(), 0u);
}

TEST_F(gateway_test, invalid_id_in_path_is_400) {
  auto res = call(http::verb::get, "/v1/agents/Acme/X");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_EQ(error_code_of(res), "invalid_agent_id");
  auto ask = call(http::verb::post, "/v1/agents/acme/bad%20name/ask", "{}");
  EXPECT_EQ(ask.result_int(), 400u);
  EXPECT_EQ(error_code_of(ask), "invalid_agent_id");
}

TEST_F(gateway_test, unknown_agent_is_404) {
  for (auto [method, target] : {std::pair{http::verb::get, "/v1/agents/acme/ghost"},
                                std::pair{http::verb::delete_, "/v1/agents/acme/ghost"},
                                std::pair{http::verb::post, "/v1/agents/acme/ghost/ask"},
                                std::pair{http::verb::post, "/v1/agents/acme/ghost/tell"}}) {
    auto res = call(method, target, "{}");
    EXPECT_EQ(res.result_int(), 404u) << target;
    EXPECT_EQ(error_code_of(res), "agent_not_found") << target << " -> " << res.body();
  }
}

TEST_F(gateway_test, unknown_route_is_404) {
  for (auto target : {"/", "/v2/agents", "/v1/agents/acme", "/v1/agents/acme/c1/poke",
                      "/v1/agents/acme/c1/ask/more", "/healthz/x"}) {
    auto res = call(http::verb::get, target);
    EXPECT_EQ(res.result_int(), 404u) << target;
    EXPECT_EQ(error_code_of(res), "route_not_found") << target;
  }
}

TEST_F(gateway_test, wrong_method_is_405_with_allow) {
  struct wrong {
    http::verb method;
    std::string target;
    std::string allow;
  };
  for (auto& w : std::vector<wrong>{{http::verb::put, "/v1/agents", "GET, POST"},
                                    {http::verb::post, "/v1/agents/acme/c1", "GET, DELETE"},
                                    {http::verb::get, "/v1/agents/acme/c1/ask", "POST"},
                                    {http::verb::delete_, "/v1/agents/acme/c1/tell", "POST"},
                                    {http::verb::post, "/healthz", "GET"}}) {
    auto res = call(w.method, w.target, "{}");
    EXPECT_EQ(res.result_int(), 405u) << w.target;
    EXPECT_EQ(str(res[http::field::allow]), w.allow) << w.target;
    EXPECT_EQ(error_code_of(res), "method_not_allowed");
  }
}

TEST_F(gateway_test, duplicate_spawn_is_409) {
  ASSERT_EQ(spawn("acme/c1", "counter").result_int(), 201u);
  auto res = spawn("acme/c1", "echo");
  EXPECT_EQ(res.result_int(), 409u) << res.body();
  EXPECT_EQ(error_code_of(res), "agent_exists");
  EXPECT_EQ(rt->find(hive::agent_id{"acme", "c1"})->kind, "counter");
}

TEST_F(gateway_test, oversize_body_is_413_and_closes) {
  ASSERT_EQ(spawn("acme/e1", "echo").result_int(), 201u);
  auto c = client();
  std::string big = "\"" + std::string(cfg.gateway.body_bytes_max + 10, 'x') + "\"";
  auto res = c->request(http::verb::post, "/v1/agents/acme/e1/ask", big);
  ASSERT_TRUE(res) << c->error().message();
  EXPECT_EQ(res->result_int(), 413u);
  EXPECT_EQ(error_code_of(*res), "too_large");
  EXPECT_NE(error_message_of(*res).find("body_bytes_max"), std::string::npos) << res->body();
  EXPECT_FALSE(res->keep_alive());
  EXPECT_TRUE(c->wait_closed(3s));
  // A body just under the limit passes.
  std::string fits = "\"" + std::string(cfg.gateway.body_bytes_max - 10, 'x') + "\"";
  auto ok = call(http::verb::post, "/v1/agents/acme/e1/ask", fits);
  EXPECT_EQ(ok.result_int(), 200u);
  EXPECT_EQ(ok.body(), fits);
}

TEST_F(gateway_test, oversize_header_is_413_and_closes) {
  auto c = client();
  auto res = c->request(http::verb::get, "/healthz", {},
                        {{"X-Filler", std::string(cfg.gateway.header_bytes_max + 1, 'a')}});
  ASSERT_TRUE(res) << c->error().message();
  EXPECT_EQ(res->result_int(), 413u);
  EXPECT_EQ(error_code_of(*res), "too_large");
  EXPECT_NE(error_message_of(*res).find("header_bytes_max"), std::string::npos) << res->body();
  EXPECT_TRUE(c->wait_closed(3s));
}

TEST_F(gateway_test, json_nested_deeper_than_json_depth_max_is_413) {
  ASSERT_EQ(spawn("acme/e1", "echo").result_int(), 201u);
  auto nest = [](size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  auto max = static_cast<size_t>(cfg.gateway.json_depth_max);
  auto deep = call(http::verb::post, "/v1/agents/acme/e1/ask", nest(max + 1));
  EXPECT_EQ(deep.result_int(), 413u) << deep.body();
  EXPECT_EQ(error_code_of(deep), "too_large");
  EXPECT_NE(error_message_of(deep).find("json_depth_max"), std::string::npos) << deep.body();
  auto at_max = call(http::verb::post, "/v1/agents/acme/e1/ask", nest(max));
  EXPECT_EQ(at_max.result_int(), 200u) << at_max.body();
  // Depth counting ignores brackets inside strings.
  auto in_string =
    call(http::verb::post, "/v1/agents/acme/e1/tell", "[\"" + std::string(100, '[') + "\"]");
  EXPECT_EQ(in_string.result_int(), 202u) << in_string.body();
  auto spawn_deep = call(http::verb::post, "/v1/agents",
                         R"({"id":"acme/d1","kind":"echo","config":)" + nest(max) + "}");
  EXPECT_EQ(spawn_deep.result_int(), 413u) << spawn_deep.body();
}

TEST_F(gateway_test, bad_query_parameters_are_400) {
  ASSERT_EQ(spawn("acme/c1", "counter").result_int(), 201u);
  for (auto q : {"timeout_ms=0", "timeout_ms=10001", "timeout_ms=abc", "timeout_ms=-5",
                 "timeout_ms=", "timeout_ms=5&timeout_ms=6", "colour=red"}) {
    auto res = call(http::verb::post, std::string{"/v1/agents/acme/c1/ask?"} + q, "{}");
    EXPECT_EQ(res.result_int(), 400u) << q << " -> " << res.body();
    EXPECT_EQ(error_code_of(res), "invalid_argument") << q;
  }
  for (auto q : {"limit=0", "limit=x", "after=Bad/Id", "tenant=UPPER", "page=2"}) {
    auto res = call(http::verb::get, std::string{"/v1/agents?"} + q);
    EXPECT_EQ(res.result_int(), 400u) << q << " -> " << res.body();
    EXPECT_EQ(error_code_of(res), "invalid_argument") << q;
  }
  auto edge = call(http::verb::post, "/v1/agents/acme/c1/ask?timeout_ms=10000", R"({"op":"get"})");
  EXPECT_EQ(edge.result_int(), 200u) << edge.body();
}

TEST_F(gateway_test, bad_correlation_id_header_is_400) {
  for (auto bad : {"xyz", "0", "12345678901234567", "-1"}) {
    auto res = call(http::verb::get, "/healthz", {}, {{"X-Correlation-Id", bad}});
    EXPECT_EQ(res.result_int(), 400u) << bad;
    EXPECT_NE(error_message_of(res).find("X-Correlation-Id"), std::string::npos);
  }
  auto ok = call(http::verb::get, "/healthz", {}, {{"X-Correlation-Id", "ffffffffffffffff"}});
  EXPECT_EQ(ok.result_int(), 200u);
  EXPECT_EQ(str(ok["X-Correlation-Id"]), "ffffffffffffffff");
}

TEST_F(gateway_test, agent_error_reply_maps_to_its_status) {
  ASSERT_EQ(spawn("acme/c1", "counter").result_int(), 201u);
  auto res = call(http::verb::post, "/v1/agents/acme/c1/ask", R"({"op":"explode"})");
  EXPECT_EQ(res.result_int(), 400u) << res.body();
  EXPECT_EQ(error_code_of(res), "invalid_argument");
  EXPECT_NE(error_message_of(res).find("explode"), std::string::npos) << res.body();
}

TEST_F(gateway_test, slow_agent_ask_times_out_with_504) {
  ASSERT_EQ(spawn("acme/s1", "sleeper").result_int(), 201u);
  auto started = steady_clock::now();
  auto res = call(http::verb::post, "/v1/agents/acme/s1/ask?timeout_ms=50", R"({"sleep_ms":400})");
  auto took = steady_clock::now() - started;
  EXPECT_EQ(res.result_int(), 504u) << res.body();
  EXPECT_EQ(error_code_of(res), "timeout");
  EXPECT_LT(took, 390ms) << "the gateway must answer at the deadline, not when the agent does";
  // The agent still works afterwards.
  auto ok = call(http::verb::post, "/v1/agents/acme/s1/ask?timeout_ms=3000", R"({"sleep_ms":1})");
  EXPECT_EQ(ok.result_int(), 200u) << ok.body();
}

TEST_F(gateway_test, malformed_request_line_is_400_then_closed) {
  for (std::string bad : {"GARBAGE\r\n\r\n", "GET /healthz HTTP/9\r\n\r\n",
                          "GET healthz nonsense\r\n\r\n", "GET / HTTP/1.1\r\nBad Header\r\n\r\n"}) {
    auto c = client();
    ASSERT_FALSE(c->write_raw(bad));
    auto res = c->read(3s);
    ASSERT_TRUE(res) << "no response to " << bad << ": " << c->error().message();
    EXPECT_EQ(res->result_int(), 400u) << bad;
    EXPECT_EQ(error_code_of(*res), "bad_request") << bad;
    EXPECT_TRUE(c->wait_closed(3s)) << bad;
  }
}

TEST_F(gateway_test, bind_failure_is_io_error_naming_the_address) {
  auto taken = cfg.gateway;
  taken.listen.port = gw->port();
  auto second = hive::gateway::start(*rt, taken, *sec);
  ASSERT_FALSE(second);
  EXPECT_EQ(hive::code_of(second.error()), hive::errc::io_error);
  auto msg = hive::message_of(second.error());
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(gw->port())), std::string::npos) << msg;
  auto bad_host = cfg.gateway;
  bad_host.listen.host = "no-such-host.invalid";
  auto third = hive::gateway::start(*rt, bad_host, *sec);
  ASSERT_FALSE(third);
  EXPECT_EQ(hive::code_of(third.error()), hive::errc::io_error);
}

TEST_F(gateway_test, readyz_turns_503_after_stop_accepting_and_listener_closes) {
  auto c = client();
  auto r1 = c->request(http::verb::get, "/readyz");
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->result_int(), 200u);
  EXPECT_TRUE(r1->keep_alive());
  gw->stop_accepting();
  auto r2 = c->request(http::verb::get, "/readyz");
  ASSERT_TRUE(r2) << c->error().message();
  EXPECT_EQ(r2->result_int(), 503u);
  EXPECT_EQ(error_code_of(*r2), "shutting_down");
  EXPECT_FALSE(r2->keep_alive()) << "connections close once the gateway stops accepting";
  EXPECT_TRUE(c->wait_closed(3s));
  http_client late{gw->port()};
  if (!late.error()) {
    // Connected to a closed listener is impossible; a lingering accept queue must not serve.
    EXPECT_FALSE(late.request(http::verb::get, "/healthz"));
  }
  EXPECT_TRUE(gw->drain(1s));
}

TEST_F(gateway_test, readyz_turns_503_when_the_runtime_shuts_down) {
  EXPECT_EQ(call(http::verb::get, "/readyz").result_int(), 200u);
  rt->shutdown();
  auto res = call(http::verb::get, "/readyz");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(str(res[http::field::retry_after]), "1");
  auto sp = spawn("acme/late", "echo");
  EXPECT_EQ(sp.result_int(), 503u) << sp.body();
  EXPECT_EQ(error_code_of(sp), "shutting_down");
  EXPECT_EQ(call(http::verb::get, "/healthz").result_int(), 200u);
}

TEST_F(gateway_test, drain_waits_for_requests_in_flight) {
  ASSERT_EQ(spawn("acme/s1", "sleeper").result_int(), 201u);
  // The spawn counts as in flight until its response is fully written: wait for that.
  ASSERT_TRUE(gw->drain(2s));
  auto c = client();
  std::string body = R"({"sleep_ms":400})";
  ASSERT_FALSE(c->write_raw("POST /v1/agents/acme/s1/ask HTTP/1.1\r\nHost: h\r\n" + auth_line()
                            + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n"
                            + body));
  auto deadline = steady_clock::now() + 2s;
  while (gw->in_flight() == 0 && steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  ASSERT_EQ(gw->in_flight(), 1u);
  auto sent = steady_clock::now();
  gw->stop_accepting();
  EXPECT_FALSE(gw->drain(10ms)) << "a request is still in flight";
  EXPECT_TRUE(gw->drain(3s));
  EXPECT_LT(steady_clock::now() - sent, 900ms) << "drain must end when the answer is written";
  EXPECT_EQ(gw->in_flight(), 0u);
  auto res = c->read();
  ASSERT_TRUE(res) << c->error().message();
  EXPECT_EQ(res->result_int(), 200u) << res->body();
  EXPECT_EQ(body_of(*res), json({{"slept", 400}}));
}

TEST_F(gateway_test, destroying_the_gateway_with_a_request_in_flight_is_safe) {
  ASSERT_EQ(spawn("acme/s1", "sleeper").result_int(), 201u);
  // The spawn counts as in flight until its response is fully written: wait for that.
  ASSERT_TRUE(gw->drain(2s));
  auto c = client();
  std::string body = R"({"sleep_ms":300})";
  ASSERT_FALSE(c->write_raw("POST /v1/agents/acme/s1/ask HTTP/1.1\r\nHost: h\r\n" + auth_line()
                            + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n"
                            + body));
  auto deadline = steady_clock::now() + 2s;
  while (gw->in_flight() == 0 && steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  ASSERT_EQ(gw->in_flight(), 1u);
  gw.reset(); // the runtime answers later into a closed gate
  EXPECT_TRUE(c->wait_closed(2s));
  std::this_thread::sleep_for(400ms);
}

// -- slow clients -------------------------------------------------------------------------------

class gateway_idle_test : public gateway_test {
protected:
  void configure(hive::node_config& c) override {
    c.gateway.idle_timeout_ms = 300;
  }
};

TEST_F(gateway_idle_test, half_sent_request_is_closed_after_idle_timeout) {
  auto c = client();
  auto started = steady_clock::now();
  ASSERT_FALSE(
    c->write_raw("POST /v1/agents HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n{\"id"));
  std::string got;
  EXPECT_TRUE(c->wait_closed(3s, &got));
  auto took = steady_clock::now() - started;
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 2s);
  EXPECT_TRUE(got.empty()) << "expected no answer, got: " << got;
  EXPECT_EQ(rt->agent_count(), 0u);
}

TEST_F(gateway_idle_test, trickling_headers_do_not_extend_the_deadline) {
  auto c = client();
  auto started = steady_clock::now();
  ASSERT_FALSE(c->write_raw("GET /healthz HTTP/1.1\r\n"));
  bool closed = false;
  for (int i = 0; i < 20 && !closed; ++i) {
    std::this_thread::sleep_for(100ms);
    closed = static_cast<bool>(c->write_raw("X-A: b\r\n"));
  }
  EXPECT_TRUE(closed || c->wait_closed(2s));
  EXPECT_LT(steady_clock::now() - started, 1500ms);
}

TEST_F(gateway_idle_test, idle_keep_alive_connection_is_closed) {
  auto c = client();
  auto res = c->request(http::verb::get, "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200u);
  auto started = steady_clock::now();
  EXPECT_TRUE(c->wait_closed(3s));
  EXPECT_GE(steady_clock::now() - started, 250ms);
  auto deadline = steady_clock::now() + 1s;
  while (gw->connections() != 0 && steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(gw->connections(), 0u);
}

// -- connection limit ---------------------------------------------------------------------------

class gateway_limit_test : public gateway_test {
protected:
  void configure(hive::node_config& c) override {
    c.gateway.connections_max = 2;
  }
};

TEST_F(gateway_limit_test, connections_beyond_the_limit_get_503) {
  auto a = std::make_unique<http_client>(gw->port());
  http_client b{gw->port()};
  ASSERT_EQ(a->request(http::verb::get, "/healthz")->result_int(), 200u);
  ASSERT_EQ(b.request(http::verb::get, "/healthz")->result_int(), 200u);
  EXPECT_EQ(gw->connections(), 2u);
  {
    http_client extra{gw->port()};
    ASSERT_FALSE(extra.error());
    auto res = extra.request(http::verb::get, "/healthz");
    ASSERT_TRUE(res) << extra.error().message();
    EXPECT_EQ(res->result_int(), 503u);
    EXPECT_EQ(error_code_of(*res), "overloaded");
    EXPECT_NE(error_message_of(*res).find("connections_max"), std::string::npos);
    EXPECT_TRUE(extra.wait_closed(3s));
  }
  a.reset();
  auto deadline = steady_clock::now() + 2s;
  while (gw->connections() > 1 && steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(gw->connections(), 1u);
  http_client again{gw->port()};
  auto res = again.request(http::verb::get, "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200u);
}

} // namespace
