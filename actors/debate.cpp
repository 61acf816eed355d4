#include "actors/debate.hpp"

#include <cctype>

#include "protocols/errc.hpp"

namespace hive::debate {

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr size_t debaters_max = 16;
constexpr size_t text_bytes_max = 4096;
constexpr auto llm_timeout = 60s;

caf::error unknown_keys(const json& config, std::initializer_list<std::string_view> allowed,
                        std::string_view kind) {
  if (!config.is_object())
    return make_error(errc::invalid_argument, std::string{kind} + " config must be a JSON object");
  for (auto& [key, _] : config.items()) {
    bool ok = false;
    for (auto a : allowed)
      ok = ok || key == a;
    if (!ok)
      return make_error(errc::invalid_argument,
                        std::string{kind} + ": unknown config key '" + key.substr(0, 40) + "'");
  }
  return {};
}

caf::expected<std::string> text_field(const json& j, const char* key, bool required,
                                      std::string_view what) {
  auto i = j.find(key);
  if (i == j.end()) {
    if (required)
      return make_error(errc::invalid_argument, std::string{what} + " needs a field '" + key + "'");
    return std::string{};
  }
  if (!i->is_string() || i->get_ref<const std::string&>().size() > text_bytes_max)
    return make_error(errc::invalid_argument,
                      std::string{what} + ": field '" + key + "' must be a string of at most "
                        + std::to_string(text_bytes_max) + " bytes");
  return i->get<std::string>();
}

caf::expected<double> confidence_field(const json& config, double fallback) {
  auto i = config.find("confidence");
  if (i == config.end())
    return fallback;
  if (!i->is_number() || i->get<double>() < 0 || i->get<double>() > 1)
    return make_error(errc::invalid_argument, "debater: 'confidence' must be a number 0..1");
  return i->get<double>();
}

/// The question of an ask `{"op":OP,"question":Q}`.
caf::expected<std::string> question_of(call_context& call, std::string_view op) {
  auto body = call.json();
  if (!body)
    return std::move(body.error());
  auto& b = **body;
  if (!b.is_object() || !b.contains("op") || b["op"] != op)
    return make_error(errc::invalid_argument,
                      "body must be {\"op\":\"" + std::string{op} + "\",\"question\":\"...\"}");
  auto q = text_field(b, "question", true, op);
  if (!q)
    return q;
  if (q->empty())
    return make_error(errc::invalid_argument, "field 'question' is empty");
  return q;
}

/// Asks the `llm` agent `name` of the caller's tenant one chat message; returns its reply text.
caf::expected<std::string> ask_llm(call_context& call, const std::string& name,
                                   const std::string& message) {
  auto id = make_agent_id(call.self_id().tenant, name);
  if (!id)
    return std::move(id.error());
  auto answers = call.ask_now(
    {call_context::request{*id, json{{"op", "chat"}, {"message", message}}.dump()}}, llm_timeout);
  if (!answers)
    return std::move(answers.error());
  auto& r = answers->front();
  if (!r)
    return std::move(r.error());
  auto j = json::parse(*r, nullptr, false);
  if (!j.is_object() || !j.contains("reply") || !j["reply"].is_string())
    return make_error(errc::internal, id->str() + " answered without a text field 'reply'");
  return j["reply"].get<std::string>();
}

class debater_agent : public agent {
public:
  debater_agent(std::string answer, double confidence, std::string llm, std::string persona)
      : answer_(std::move(answer)), confidence_(confidence), llm_(std::move(llm)),
        persona_(std::move(persona)) {}

  caf::expected<std::string> handle(call_context& call) override {
    auto q = question_of(call, "answer");
    if (!q)
      return std::move(q.error());
    std::string text;
    if (!llm_.empty()) {
      auto reply = ask_llm(call, llm_, persona_.empty() ? *q : persona_ + "\n\n" + *q);
      if (!reply)
        return std::move(reply.error());
      text = std::move(*reply);
    } else {
      text = answer_;
      for (auto at = text.find("{question}"); at != std::string::npos;
           at = text.find("{question}", at + q->size()))
        text.replace(at, 10, *q);
    }
    ++answered_;
    return json{{"debater", call.self_id().str()}, {"answer", text}, {"confidence", confidence_}}
      .dump();
  }

  json summary() const override {
    return {{"answered", answered_}, {"llm", llm_}};
  }

private:
  std::string answer_;
  double confidence_;
  std::string llm_;
  std::string persona_;
  uint64_t answered_ = 0;
};

class judge_agent : public agent {
public:
  judge_agent(std::vector<std::string> debaters, std::string rule, std::string llm,
              std::chrono::milliseconds timeout)
      : debaters_(std::move(debaters)), rule_(std::move(rule)), llm_(std::move(llm)),
        timeout_(timeout) {}

  caf::expected<std::string> handle(call_context& call) override {
    auto q = question_of(call, "debate");
    if (!q)
      return std::move(q.error());
    std::vector<call_context::request> asks;
    for (auto& d : debaters_) {
      auto id = make_agent_id(call.self_id().tenant, d);
      if (!id)
        return std::move(id.error());
      asks.push_back({*id, json{{"op", "answer"}, {"question", *q}}.dump()});
    }
    auto answers = call.ask_now(asks, timeout_);
    if (!answers)
      return std::move(answers.error());
    json listed = json::array();
    std::vector<json> good;
    for (size_t i = 0; i < answers->size(); ++i) {
      auto who = call.self_id().tenant + "/" + debaters_[i];
      auto& r = (*answers)[i];
      auto j = r ? json::parse(*r, nullptr, false) : json{};
      if (!r || !j.is_object() || !j.contains("answer") || !j["answer"].is_string()) {
        listed.push_back(
          {{"debater", who},
           {"error",
            r ? std::string{"no text field 'answer' in its reply"} : describe(r.error())}});
        continue;
      }
      json a{{"debater", who},
             {"answer", j["answer"]},
             {"confidence",
              j.contains("confidence") && j["confidence"].is_number()
                ? j["confidence"].get<double>()
                : 0.0}};
      listed.push_back(a);
      good.push_back(std::move(a));
    }
    if (good.empty())
      return make_error(errc::unavailable,
                        call.self_id().str() + ": none of the " + std::to_string(debaters_.size())
                          + " debaters answered: " + listed.dump());
    ++debates_;
    return json{
      {"question", *q}, {"answers", std::move(listed)}, {"verdict", verdict(call, *q, good)}}
      .dump();
  }

  json summary() const override {
    return {{"debates", debates_}, {"debaters", debaters_}, {"rule", rule_}};
  }

private:
  json verdict(call_context& call, const std::string& question, const std::vector<json>& good) {
    if (rule_ == "merge") {
      std::string merged;
      for (auto& a : good) {
        if (!merged.empty())
          merged += "\n";
        merged += a["debater"].get<std::string>() + ": " + a["answer"].get<std::string>();
      }
      return {{"rule", "merge"}, {"winner", nullptr}, {"answer", merged}};
    }
    if (!llm_.empty()) {
      std::string prompt = "Question: " + question + "\nAnswers:\n";
      for (size_t i = 0; i < good.size(); ++i)
        prompt += std::to_string(i + 1) + ". " + good[i]["answer"].get<std::string>() + "\n";
      prompt += "Reply with the number of the best answer only.";
      if (auto reply = ask_llm(call, llm_, prompt)) {
        size_t pick = 0;
        for (size_t i = 0; i < reply->size() && pick == 0; ++i)
          if (std::isdigit(static_cast<unsigned char>((*reply)[i])))
            pick = static_cast<size_t>(std::strtoul(reply->c_str() + i, nullptr, 10));
        if (pick >= 1 && pick <= good.size())
          return {{"rule", "llm"},
                  {"winner", good[pick - 1]["debater"]},
                  {"answer", good[pick - 1]["answer"]}};
      }
    }
    const json* best = &good.front();
    for (auto& a : good)
      if (a["confidence"].get<double>() > (*best)["confidence"].get<double>())
        best = &a;
    return {{"rule", llm_.empty() ? "confidence" : "confidence (the llm named no answer)"},
            {"winner", (*best)["debater"]},
            {"answer", (*best)["answer"]}};
  }

  std::vector<std::string> debaters_;
  std::string rule_;
  std::string llm_;
  std::chrono::milliseconds timeout_;
  uint64_t debates_ = 0;
};

caf::error check_name(const std::string& name, std::string_view what) {
  return validate_id_part(name, what, agent_name_bytes_max);
}

} // namespace

caf::error register_debate_kinds(kind_registry& registry) {
  kind_spec debater{
    "debater", "answers a question (scripted, or through an llm agent); the debate example",
    [](const json& config) -> caf::expected<std::unique_ptr<agent>> {
      if (auto err = unknown_keys(config, {"answer", "confidence", "llm", "persona"}, "debater"))
        return err;
      auto answer = text_field(config, "answer", false, "debater");
      auto llm = text_field(config, "llm", false, "debater");
      auto persona = text_field(config, "persona", false, "debater");
      if (!answer)
        return std::move(answer.error());
      if (!llm)
        return std::move(llm.error());
      if (!persona)
        return std::move(persona.error());
      if (answer->empty() == llm->empty())
        return make_error(errc::invalid_argument,
                          "debater needs exactly one of 'answer' (scripted) and 'llm'");
      if (!llm->empty())
        if (auto err = check_name(*llm, "debater field 'llm'"))
          return err;
      auto confidence = confidence_field(config, 0.5);
      if (!confidence)
        return std::move(confidence.error());
      return std::unique_ptr<agent>{
        new debater_agent(std::move(*answer), *confidence, std::move(*llm), std::move(*persona))};
    }};
  debater.blocking = true;
  debater.capabilities = {"debate"};
  if (auto err = registry.add(std::move(debater)))
    return err;
  kind_spec judge{
    "judge", "asks every debater at once and picks or merges an answer; the debate example",
    [](const json& config) -> caf::expected<std::unique_ptr<agent>> {
      if (auto err = unknown_keys(config, {"debaters", "rule", "llm", "timeout_ms"}, "judge"))
        return err;
      auto list = config.find("debaters");
      if (list == config.end() || !list->is_array() || list->empty() || list->size() > debaters_max)
        return make_error(errc::invalid_argument,
                          "judge needs 'debaters': an array of 1.." + std::to_string(debaters_max)
                            + " agent names of its tenant");
      std::vector<std::string> names;
      for (auto& d : *list) {
        if (!d.is_string())
          return make_error(errc::invalid_argument, "judge: 'debaters' holds a non-string");
        if (auto err = check_name(d.get<std::string>(), "judge: a name in 'debaters'"))
          return err;
        names.push_back(d.get<std::string>());
      }
      auto rule_field = text_field(config, "rule", false, "judge");
      if (!rule_field)
        return std::move(rule_field.error());
      auto rule = rule_field->empty() ? std::string{"confidence"} : *rule_field;
      if (rule != "confidence" && rule != "merge")
        return make_error(errc::invalid_argument,
                          "judge: 'rule' must be \"confidence\" or \"merge\", not '"
                            + rule.substr(0, 40) + "'");
      auto llm = text_field(config, "llm", false, "judge");
      if (!llm)
        return std::move(llm.error());
      if (!llm->empty())
        if (auto err = check_name(*llm, "judge field 'llm'"))
          return err;
      int64_t timeout_ms = 10000;
      if (auto t = config.find("timeout_ms"); t != config.end())
        timeout_ms = t->is_number_integer() ? t->get<int64_t>() : 0;
      if (timeout_ms < 1 || timeout_ms > 3600000)
        return make_error(errc::invalid_argument, "judge: 'timeout_ms' must be 1..3600000");
      return std::unique_ptr<agent>{new judge_agent(
        std::move(names), std::move(rule), std::move(*llm), std::chrono::milliseconds{timeout_ms})};
    }};
  judge.blocking = true;
  judge.capabilities = {"judge"};
  return registry.add(std::move(judge));
}

} // namespace hive::debate
