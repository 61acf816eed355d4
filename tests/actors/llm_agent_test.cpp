// Pure parts of actors/llm_agent: the endpoint URL, the chat completion parser, the spawn
// config check, and the kinds' factories (no endpoint configured; the budget's config).

#include <cstdlib>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/llm_agent.hpp"
#include "protocols/errc.hpp"

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
