// Pure parts of actors/llm_agent: the endpoint URL, the chat completion parser, the spawn
// config check, and the kinds' factories (no endpoint configured; the budget's config). And
// one llm agent driven by hand (a call_context whose budget asks a test function answers,
// against tests/support/fake_llm.py): a charge that does not get through stays owed, also
// across a snapshot, and is settled with the same idempotency key before the next call.

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/llm_agent.hpp"
#include "protocols/errc.hpp"
#include "support/fake_llm.hpp"

using nlohmann::json;
using testing::HasSubstr;

namespace {

std::string error_text(const caf::error& err) {
  return hive::message_of(err);
}

} // namespace

TEST(LlmUrl, ParsesSchemeHostPortAndPath) {
  auto u = hive::parse_llm_url("http://127.0.0.1:8000/v1/", "llm.base_url");
  ASSERT_TRUE(u) << error_text(u.error());
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8000);
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->str(), "http://127.0.0.1:8000/v1");
  auto s = hive::parse_llm_url("https://api.example.com", "x");
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->tls);
  EXPECT_EQ(s->port, 443);
  EXPECT_EQ(s->path, "");
  auto v6 = hive::parse_llm_url("http://[::1]:9/v1", "x");
  ASSERT_TRUE(v6) << error_text(v6.error());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 9);
  EXPECT_EQ(v6->str(), "http://[::1]:9/v1");
}

TEST(LlmUrl, RefusesWhatIsNotAPlainHttpUrl) {
  for (auto bad : {"", "ftp://h/", "127.0.0.1:80", "http://", "http://:80/", "http://h:0/",
                   "http://h:99999/", "http://h:/", "http://user@h/", "http://h/v1?x=1",
                   "http://h/#f", "http://h x/", "http://[::1/", "http://h_1/"}) {
    auto u = hive::parse_llm_url(bad, "llm.base_url");
    EXPECT_FALSE(u) << bad;
    if (!u) {
      EXPECT_EQ(hive::code_of(u.error()), hive::errc::invalid_config) << bad;
      EXPECT_THAT(error_text(u.error()), HasSubstr("llm.base_url")) << bad;
    }
  }
}

TEST(ChatCompletion, ReadsContentAndUsage) {
  auto c = hive::parse_chat_completion(
    R"({"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],
        "usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})",
    100);
  ASSERT_TRUE(c) << error_text(c.error());
  EXPECT_EQ(c->content, "hi");
  EXPECT_EQ(c->prompt_tokens, 5);
  EXPECT_EQ(c->completion_tokens, 2);
  EXPECT_EQ(c->total_tokens, 7);
  EXPECT_FALSE(c->estimated);
  // total_tokens missing: the sum.
  c = hive::parse_chat_completion(
    R"({"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}})",
    0);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->total_tokens, 7);
}

TEST(ChatCompletion, EstimatesWithoutUsage) {
  auto c = hive::parse_chat_completion(R"({"choices":[{"message":{"content":"12345678"}}]})", 40);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->estimated);
  EXPECT_EQ(c->prompt_tokens, 10);
  EXPECT_EQ(c->completion_tokens, 2);
  EXPECT_EQ(c->total_tokens, 12);
}

TEST(ChatCompletion, RefusesMalformedAnswers) {
  for (auto bad : {"", "not json", "[]", "{}", R"({"choices":[]})", R"({"choices":[1]})",
                   R"({"choices":[{"message":{"content":null}}]})",
                   R"({"choices":[{"message":{"content":"x"}}],"usage":{"total_tokens":-1}})",
                   R"({"choices":[{"message":{"content":"x"}}],"usage":{"total_tokens":"7"}})"}) {
    auto c = hive::parse_chat_completion(bad, 0);
    EXPECT_FALSE(c) << bad;
    if (!c) {
      EXPECT_EQ(hive::code_of(c.error()), hive::errc::unavailable) << bad;
    }
  }
}

TEST(LlmConfig, DefaultsComeFromTheNode) {
  hive::node_config::llm_section cfg;
  cfg.reply_tokens_max = 300;
  auto s = hive::parse_llm_agent_config(json{}, cfg, "node-model");
  ASSERT_TRUE(s) << error_text(s.error());
  EXPECT_EQ(s->model, "node-model");
  EXPECT_EQ(s->max_tokens, 300);
  EXPECT_FALSE(s->temperature);
  s = hive::parse_llm_agent_config(
    json{{"model", "m2"}, {"system", "be brief"}, {"max_tokens", 300}, {"temperature", 0}}, cfg,
    "node-model");
  ASSERT_TRUE(s) << error_text(s.error());
  EXPECT_EQ(s->model, "m2");
  EXPECT_EQ(s->system, "be brief");
  EXPECT_EQ(s->max_tokens, 300);
  ASSERT_TRUE(s->temperature);
  EXPECT_EQ(*s->temperature, 0.0);
}

TEST(LlmConfig, RefusesBadFieldsNamingThem) {
  hive::node_config::llm_section cfg;
  cfg.reply_tokens_max = 300;
  auto refused = [&](const json& config, const std::string& model = "m") {
    auto s = hive::parse_llm_agent_config(config, cfg, model);
    if (s)
      return std::string{"accepted"};
    EXPECT_EQ(hive::code_of(s.error()), hive::errc::invalid_argument);
    return error_text(s.error());
  };
  EXPECT_THAT(refused({{"max_tokens", 301}}), HasSubstr("'max_tokens' must be an integer 1..300"));
  EXPECT_THAT(refused({{"max_tokens", 0}}), HasSubstr("'max_tokens'"));
  EXPECT_THAT(refused({{"temperature", -0.1}}), HasSubstr("'temperature'"));
  EXPECT_THAT(refused({{"temperature", "hot"}}), HasSubstr("'temperature'"));
  EXPECT_THAT(refused({{"base_url", "http://10.0.0.1/"}}), HasSubstr("'base_url' is not allowed"));
  EXPECT_THAT(refused({{"api_key_env", "PATH"}}), HasSubstr("'api_key_env' is not allowed"));
  EXPECT_THAT(refused({{"modle", "x"}}), HasSubstr("unknown field 'modle'"));
  EXPECT_THAT(refused({{"model", "a\nb"}}), HasSubstr("control character"));
  EXPECT_THAT(refused({{"system", std::string(hive::llm_system_bytes_max + 1, 'x')}}),
              HasSubstr("'system'"));
  EXPECT_THAT(refused(json::object(), ""), HasSubstr("no default model"));
  EXPECT_THAT(refused(json::array()), HasSubstr("must be an object"));
}

TEST(LlmKinds, SpawnIsRefusedWithoutAnEndpointAndTheBudgetTakesNoConfig) {
  ::unsetenv("HIVE_LLM_BASE_URL");
  hive::kind_registry kinds;
  hive::node_config::llm_section cfg;
  cfg.model = "m";
  ASSERT_FALSE(hive::register_llm_kinds(kinds, cfg));
  auto llm = kinds.find("llm");
  ASSERT_NE(llm, nullptr);
  EXPECT_TRUE(llm->blocking);
  EXPECT_EQ(llm->persistence, hive::persistence_mode::journaled);
  EXPECT_EQ(llm->capabilities, std::vector<std::string>{"llm"});
  auto a = llm->make(json::object());
  ASSERT_FALSE(a);
  EXPECT_EQ(hive::code_of(a.error()), hive::errc::invalid_config);
  EXPECT_THAT(error_text(a.error()), HasSubstr("llm.base_url"));

  auto budget = kinds.find("token_budget");
  ASSERT_NE(budget, nullptr);
  EXPECT_FALSE(budget->blocking);
  EXPECT_EQ(budget->persistence, hive::persistence_mode::journaled);
  EXPECT_TRUE(budget->make(json{}));
  EXPECT_TRUE(budget->make(json::object()));
  auto b = budget->make(json{{"limit", 5}});
  ASSERT_FALSE(b);
  EXPECT_THAT(error_text(b.error()), HasSubstr("llm.tenant_tokens_max"));
}

TEST(LlmKinds, ABadBaseUrlFromTheEnvironmentStopsRegistration) {
  ::setenv("HIVE_LLM_BASE_URL", "ftp://nope", 1);
  hive::kind_registry kinds;
  auto err = hive::register_llm_kinds(kinds, hive::node_config::llm_section{});
  ::unsetenv("HIVE_LLM_BASE_URL");
  ASSERT_TRUE(err);
  EXPECT_THAT(error_text(err), HasSubstr("HIVE_LLM_BASE_URL"));
  // The config key wins over the environment.
  ::setenv("HIVE_LLM_BASE_URL", "ftp://nope", 1);
  hive::node_config::llm_section cfg;
  cfg.base_url = "http://127.0.0.1:1/v1";
  hive::kind_registry kinds2;
  EXPECT_FALSE(hive::register_llm_kinds(kinds2, cfg));
  ::unsetenv("HIVE_LLM_BASE_URL");
}

namespace {

/// One budget ask the agent made.
struct budget_ask {
  std::string to;
  json body;
  std::string client_id;
  uint64_t client_seq = 0;
  std::string ensure_kind;
};

/// Runs one call of `body` on `a` as agent acme/bot; budget asks go to `budget`.
caf::expected<std::string> run_call(
  hive::agent& a, const json& body, std::vector<budget_ask>& asks,
  const std::function<caf::expected<std::string>(const budget_ask&)>& budget) {
  hive::agent_id self{"acme", "bot"};
  hive::envelope env{1, "acme", 0, "test", {}, 0};
  std::string text = body.dump();
  hive::call_context ctx{self, env, text, 32};
  ctx.bind(&a);
  ctx.set_committer([](std::vector<std::string>& events) {
    events.clear();
    return caf::error{};
  });
  ctx.set_waiter([&](std::vector<hive::call_context::request>& reqs, std::chrono::milliseconds) {
    std::vector<caf::expected<std::string>> out;
    for (auto& r : reqs) {
      budget_ask b{r.to.str(), json::parse(r.body), r.client_id, r.client_seq, r.ensure_kind};
      asks.push_back(b);
      out.push_back(budget(b));
    }
    return out;
  });
  return a.handle(ctx);
}

} // namespace

TEST(LlmAgent, AChargeThatFailsStaysOwedAcrossASnapshotAndIsSettledOnceBeforeTheNextCall) {
  hive::test::fake_llm fake{std::filesystem::temp_directory_path() / "hive-fake-llm-unit.jsonl"};
  ASSERT_NE(fake.port, 0);
  hive::kind_registry kinds;
  hive::node_config::llm_section cfg;
  cfg.base_url = "http://127.0.0.1:" + std::to_string(fake.port) + "/v1";
  cfg.model = "m";
  cfg.tenant_tokens_max = 1000;
  ASSERT_FALSE(hive::register_llm_kinds(kinds, cfg));
  auto a = kinds.find("llm")->make(json::object());
  ASSERT_TRUE(a) << error_text(a.error());

  std::vector<budget_ask> asks;
  bool budget_down = false;
  int64_t spent = 0;
  auto budget = [&](const budget_ask& b) -> caf::expected<std::string> {
    if (b.body["op"] == "charge") {
      if (budget_down)
        return hive::make_error(hive::errc::unavailable, "budget node down");
      spent += b.body["tokens"].get<int64_t>();
    }
    return json{{"spent", spent}, {"limit", 1000}, {"left", 1000 - spent}}.dump();
  };

  // Turn 1 is answered, but its charge does not get through: answered anyway, marked.
  budget_down = true;
  auto r1 = run_call(**a, {{"op", "chat"}, {"message", "one two"}}, asks, budget);
  ASSERT_TRUE(r1) << error_text(r1.error());
  auto j1 = json::parse(*r1);
  EXPECT_EQ(j1["charge_pending"], true) << j1.dump();
  auto tokens1 = j1["tokens"]["total"].get<int64_t>();
  ASSERT_EQ(asks.size(), 2u);
  EXPECT_EQ(asks[0].body, (json{{"op", "check"}}));
  EXPECT_EQ(asks[0].to, "acme/llm-budget");
  EXPECT_EQ(asks[0].ensure_kind, "token_budget");
  EXPECT_EQ(asks[1].body, (json{{"op", "charge"}, {"tokens", tokens1}}));
  EXPECT_EQ(asks[1].client_id, "acme/bot");
  EXPECT_EQ(asks[1].client_seq, 1u);

  // The owed charge survives a restart (snapshot + restore into a fresh instance).
  auto state = (*a)->snapshot();
  auto b = kinds.find("llm")->make(json::object());
  ASSERT_TRUE(b);
  ASSERT_FALSE((*b)->restore(state));
  EXPECT_EQ((*b)->summary()["charge_owed"], true);

  // While the budget cannot be charged, no new call goes to the endpoint.
  asks.clear();
  auto r2 = run_call(**b, {{"op", "chat"}, {"message", "three"}}, asks, budget);
  ASSERT_FALSE(r2);
  EXPECT_EQ(hive::code_of(r2.error()), hive::errc::unavailable);
  EXPECT_THAT(error_text(r2.error()), HasSubstr("not charged"));

  // Back up: turn 1 is charged first, with its own key, then turn 2 runs and is charged.
  budget_down = false;
  asks.clear();
  auto r3 = run_call(**b, {{"op", "chat"}, {"message", "four"}}, asks, budget);
  ASSERT_TRUE(r3) << error_text(r3.error());
  auto j3 = json::parse(*r3);
  EXPECT_FALSE(j3.contains("charge_pending"));
  ASSERT_EQ(asks.size(), 3u);
  EXPECT_EQ(asks[0].body["op"], "charge");
  EXPECT_EQ(asks[0].client_seq, 1u);
  EXPECT_EQ(asks[0].body["tokens"], tokens1);
  EXPECT_EQ(asks[1].body["op"], "check");
  EXPECT_EQ(asks[2].body["op"], "charge");
  EXPECT_EQ(asks[2].client_seq, 2u);
  EXPECT_EQ(spent, tokens1 + j3["tokens"]["total"].get<int64_t>());
  EXPECT_EQ(j3["budget_left"], 1000 - spent);
  EXPECT_EQ((*b)->summary()["charge_owed"], false);
}
