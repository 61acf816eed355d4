#include "actors/pubsub.hpp"

#include <set>

#include "protocols/errc.hpp"
#include "runtime/logging.hpp"

namespace hive::pubsub {

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr std::string_view prefix = "topic.";
constexpr size_t topic_bytes_max = 128;
/// How long a subscribe / unsubscribe ask made for an agent waits for the topic's answer.
constexpr auto subscribe_timeout = 10s;

/// One topic: its subscribers, kept through journaled events `+ID` / `-ID` (ids of its tenant).
class topic_agent : public agent {
public:
  explicit topic_agent(size_t subscribers_max) : subscribers_max_(subscribers_max) {}

  caf::expected<std::string> handle(call_context& call) override {
    if (call.notice() != nullptr)
      return std::string{"{}"};
    auto parsed = call.json();
    if (!parsed)
      return std::move(parsed.error());
    const json& body = **parsed;
    if (!body.is_object() || !body.contains("op") || !body["op"].is_string())
      return make_error(errc::invalid_argument, "body must be an object with a string field 'op'");
    auto op = body["op"].get<std::string>();
    auto& self = call.self_id().name;
    auto name = self.compare(0, prefix.size(), prefix) == 0 ? self.substr(prefix.size()) : self;
    if (op == "publish") {
      auto m = body.find("message");
      if (m == body.end())
        return make_error(errc::invalid_argument, "'publish' needs a field 'message'");
      auto text = m->dump();
      size_t sent = 0;
      for (auto& s : subscribers_) {
        auto id = parse_agent_id(s);
        if (!id) // never: ids are checked before they are stored
          continue;
        if (auto err = call.send(*id, text))
          return err;
        ++sent;
      }
      return json{{"topic", name}, {"delivered_to", sent}}.dump();
    }
    if (op == "subscribers")
      return json{{"topic", name}, {"subscribers", subscribers_}}.dump();
    if (op != "subscribe" && op != "unsubscribe")
      return make_error(errc::invalid_argument,
                        "unknown op '" + op.substr(0, 40)
                          + "': topic knows subscribe|unsubscribe|publish|subscribers");
    auto who = body.find("agent");
    if (who == body.end() || !who->is_string())
      return make_error(errc::invalid_argument, "'" + op + "' needs a string field 'agent'");
    auto id = parse_agent_id(who->get<std::string>());
    if (!id)
      return make_error(errc::invalid_argument, "field 'agent': " + message_of(id.error()));
    if (id->tenant != call.self_id().tenant)
      return make_error(errc::forbidden,
                        "topic " + call.self_id().str()
                          + " takes subscribers of "
                            "tenant '"
                          + call.self_id().tenant + "' only, not " + id->str());
    auto key = id->str();
    bool present = subscribers_.count(key) > 0;
    if (op == "subscribe") {
      if (!present) {
        if (subscribers_.size() >= subscribers_max_)
          return make_error(errc::quota_exceeded,
                            "topic " + call.self_id().str() + " has "
                              + std::to_string(subscribers_.size())
                              + " subscribers, the most topics.subscribers_max allows");
        if (auto err = call.emit("+" + key))
          return err;
      }
      return json{{"topic", name}, {"subscribers", subscribers_.size()}, {"subscribed", !present}}
        .dump();
    }
    if (present)
      if (auto err = call.emit("-" + key))
        return err;
    return json{{"topic", name}, {"subscribers", subscribers_.size()}, {"removed", present}}.dump();
  }

  json summary() const override {
    return {{"subscribers", subscribers_.size()}};
  }

  /// The snapshot: the subscriber ids, one per line.
  std::string snapshot() const override {
    std::string out;
    for (auto& s : subscribers_) {
      out += s;
      out.push_back('\n');
    }
    return out;
  }

  caf::error restore(std::string_view state) override {
    subscribers_.clear();
    while (!state.empty()) {
      auto nl = state.find('\n');
      if (nl == std::string_view::npos)
        return make_error(errc::corrupt_record, "topic snapshot does not end with a newline");
      auto line = state.substr(0, nl);
      if (!parse_agent_id(line))
        return make_error(errc::corrupt_record, "topic snapshot holds a bad id");
      subscribers_.emplace(line);
      state.remove_prefix(nl + 1);
    }
    return {};
  }

  caf::error apply(std::string_view event) override {
    if (event.size() < 2 || (event[0] != '+' && event[0] != '-')
        || !parse_agent_id(event.substr(1)))
      return make_error(errc::corrupt_record, "topic event is not +ID or -ID");
    if (event[0] == '+')
      subscribers_.emplace(event.substr(1));
    else
      subscribers_.erase(std::string{event.substr(1)});
    return {};
  }

private:
  size_t subscribers_max_;
  std::set<std::string> subscribers_;
};

caf::error check_topic(std::string_view topic) {
  if (topic.empty() || topic.size() > topic_bytes_max)
    return make_error(errc::invalid_argument,
                      "a topic name must be 1.." + std::to_string(topic_bytes_max) + " bytes");
  return validate_id_part(topic, "topic name", topic_bytes_max);
}

} // namespace

std::string agent_name(std::string_view topic) {
  return std::string{prefix} + std::string{topic};
}

caf::expected<agent_id> topic_id(std::string_view tenant, std::string_view topic) {
  if (auto err = check_topic(topic))
    return err;
  return make_agent_id(tenant, agent_name(topic));
}

namespace {

caf::error change(call_context& call, std::string_view topic, const char* op) {
  auto id = topic_id(call.self_id().tenant, topic);
  if (!id)
    return std::move(id.error());
  return call.ask(*id, json{{"op", op}, {"agent", call.self_id().str()}}.dump(), subscribe_timeout,
                  std::string{"topic."} + op + ":" + std::string{topic}, {}, 0, "topic");
}

} // namespace

caf::error subscribe(call_context& call, std::string_view topic) {
  return change(call, topic, "subscribe");
}

caf::error unsubscribe(call_context& call, std::string_view topic) {
  return change(call, topic, "unsubscribe");
}

caf::error publish(call_context& call, std::string_view topic, const nlohmann::json& message) {
  auto id = topic_id(call.self_id().tenant, topic);
  if (!id)
    return std::move(id.error());
  return call.send(*id, json{{"op", "publish"}, {"message", message}}.dump());
}

caf::error register_topic_kind(kind_registry& registry, const node_config::topics_section& cfg) {
  auto max = static_cast<size_t>(cfg.subscribers_max);
  kind_spec spec{"topic",
                 "a pub/sub topic: keeps its subscribers durably, sends each published message "
                 "to all of them",
                 [max](const json& config) -> caf::expected<std::unique_ptr<agent>> {
                   if (!config.is_object() || !config.empty())
                     return make_error(errc::invalid_argument, "topic takes no config");
                   return std::unique_ptr<agent>{new topic_agent(max)};
                 },
                 persistence_mode::journaled};
  return registry.add(std::move(spec));
}

} // namespace hive::pubsub
