#include "actors/sample_kinds.hpp"

#include <charconv>
#include <map>
#include <optional>

#include "protocols/errc.hpp"
#include "protocols/messages.hpp"
#include "protocols/type_ids.hpp"

namespace hive {

namespace {

using nlohmann::json;

/// Checks that `config` is an object whose keys are all in `allowed`.
caf::error check_config_keys(const json& config, std::initializer_list<const char*> allowed) {
  if (!config.is_object())
    return make_error(errc::invalid_argument, "config must be a JSON object");
  for (auto& [key, _] : config.items()) {
    bool ok = false;
    for (auto a : allowed)
      ok = ok || key == a;
    if (!ok)
      return make_error(errc::invalid_argument, "unknown config key '" + key + "'");
  }
  return {};
}

caf::expected<std::string> op_of(call_context& call, const json*& body) {
  auto parsed = call.json();
  if (!parsed)
    return std::move(parsed.error());
  body = *parsed;
  if (!body->is_object() || !body->contains("op") || !(*body)["op"].is_string())
    return make_error(errc::invalid_argument, "body must be an object with a string field 'op'");
  return (*body)["op"].get<std::string>();
}

class echo_agent : public agent {
public:
  caf::expected<std::string> handle(call_context& call) override {
    ++echoed_;
    return call.body_text();
  }

  json summary() const override {
    return {{"echoed", echoed_}};
  }

private:
  uint64_t echoed_ = 0;
};

class counter_agent : public agent {
public:
  explicit counter_agent(int64_t initial) : value_(initial) {}

  caf::expected<std::string> handle(call_context& call) override {
    if (!call.content().empty()) {
      // A typed call: add_request from another agent (C++ values, serialized by CAF).
      if (!call.content().match_elements<add_request>())
        return make_error(errc::invalid_argument,
                          "counter takes the typed message add_request only, not "
                            + caf::to_string(call.content()).substr(0, 80));
      if (auto err = add(call, call.content().get_as<add_request>(0).by))
        return err;
      return json{{"value", value_}}.dump();
    }
    const json* body = nullptr;
    auto op = op_of(call, body);
    if (!op)
      return std::move(op.error());
    if (*op == "add") {
      auto by = body->find("by");
      if (by == body->end() || !by->is_number_integer())
        return make_error(errc::invalid_argument, "'add' needs an integer field 'by'");
      if (auto err = add(call, by->get<int64_t>()))
        return err;
    } else if (*op != "get") {
      return make_error(errc::invalid_argument,
                        "unknown op '" + op->substr(0, 40) + "': counter knows add|get");
    }
    return json{{"value", value_}}.dump();
  }

  /// Adds `n` through a journaled event (the state changes only as emit applies it).
  caf::error add(call_context& call, int64_t n) {
    int64_t sum = 0;
    if (__builtin_add_overflow(value_, n, &sum))
      return make_error(errc::invalid_argument, "'add' would overflow the counter");
    return call.emit(std::to_string(n));
  }

  json summary() const override {
    return {{"value", value_}};
  }

  // Events are the decimal amount added; the snapshot is the decimal value.
  std::string snapshot() const override {
    return std::to_string(value_);
  }

  caf::error restore(std::string_view state) override {
    auto v = parse_int(state);
    if (!v)
      return make_error(errc::corrupt_record, "counter snapshot is not an integer");
    value_ = *v;
    return {};
  }

  caf::error apply(std::string_view event) override {
    auto n = parse_int(event);
    if (!n)
      return make_error(errc::corrupt_record, "counter event is not an integer");
    int64_t sum = 0;
    if (__builtin_add_overflow(value_, *n, &sum))
      return make_error(errc::invalid_argument, "'add' would overflow the counter");
    value_ = sum;
    return {};
  }

private:
  static std::optional<int64_t> parse_int(std::string_view text) {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || text.empty())
      return std::nullopt;
    return v;
  }

  int64_t value_;
};

class kv_agent : public agent {
public:
  explicit kv_agent(size_t entries_max) : entries_max_(entries_max) {}

  caf::expected<std::string> handle(call_context& call) override {
    const json* body = nullptr;
    auto op = op_of(call, body);
    if (!op)
      return std::move(op.error());
    auto key_it = body->find("key");
    if (key_it == body->end() || !key_it->is_string())
      return make_error(errc::invalid_argument, "'" + *op + "' needs a string field 'key'");
    auto key = key_it->get<std::string>();
    if (key.size() > key_bytes_max)
      return make_error(errc::too_large,
                        "key is " + std::to_string(key.size()) + " bytes, the limit is "
                          + std::to_string(key_bytes_max));
    if (*op == "put") {
      auto value = body->find("value");
      if (value == body->end())
        return make_error(errc::invalid_argument, "'put' needs a field 'value'");
      if (!data_.contains(key) && data_.size() >= entries_max_)
        return make_error(errc::too_large,
                          "kv holds entries_max = " + std::to_string(entries_max_) + " entries");
      if (auto err = call.emit(json{{"put", key}, {"value", *value}}.dump()))
        return err;
      return json{{"ok", true}}.dump();
    }
    if (*op == "append") {
      // Appends to the list at `key` (created empty): one way to see the order calls came in.
      auto value = body->find("value");
      if (value == body->end())
        return make_error(errc::invalid_argument, "'append' needs a field 'value'");
      auto i = data_.find(key);
      if (i == data_.end() && data_.size() >= entries_max_)
        return make_error(errc::too_large,
                          "kv holds entries_max = " + std::to_string(entries_max_) + " entries");
      if (i != data_.end() && !i->second.is_array())
        return make_error(errc::invalid_argument, "'" + key.substr(0, 40) + "' is not a list");
      if (i != data_.end() && i->second.size() >= list_items_max)
        return make_error(errc::too_large,
                          "a kv list holds at most " + std::to_string(list_items_max) + " items");
      if (auto err = call.emit(json{{"append", key}, {"value", *value}}.dump()))
        return err;
      return json{{"ok", true}}.dump();
    }
    if (*op == "get") {
      auto i = data_.find(key);
      if (i == data_.end())
        return json{{"found", false}, {"value", nullptr}}.dump();
      return json{{"found", true}, {"value", i->second}}.dump();
    }
    if (*op == "delete") {
      if (!data_.contains(key))
        return json{{"deleted", false}}.dump();
      if (auto err = call.emit(json{{"delete", key}}.dump()))
        return err;
      return json{{"deleted", true}}.dump();
    }
    return make_error(errc::invalid_argument,
                      "unknown op '" + op->substr(0, 40) + "': kv knows put|append|get|delete");
  }

  json summary() const override {
    return {{"entries", data_.size()}, {"entries_max", entries_max_}};
  }

  // Events: {"put":K,"value":V} | {"delete":K}; the snapshot is the map as a JSON object.
  std::string snapshot() const override {
    json out = json::object();
    for (auto& [k, v] : data_)
      out[k] = v;
    return out.dump();
  }

  caf::error restore(std::string_view state) override {
    auto j = json::parse(state, nullptr, false);
    if (!j.is_object())
      return make_error(errc::corrupt_record, "kv snapshot is not a JSON object");
    data_.clear();
    for (auto& [k, v] : j.items())
      data_[k] = v;
    return {};
  }

  caf::error apply(std::string_view event) override {
    auto j = json::parse(event, nullptr, false);
    if (j.is_object() && j.contains("put") && j["put"].is_string() && j.contains("value")) {
      data_[j["put"].get<std::string>()] = j["value"];
      return {};
    }
    if (j.is_object() && j.contains("append") && j["append"].is_string() && j.contains("value")) {
      auto& list = data_[j["append"].get<std::string>()];
      if (!list.is_array())
        list = json::array();
      list.push_back(j["value"]);
      return {};
    }
    if (j.is_object() && j.contains("delete") && j["delete"].is_string()) {
      data_.erase(j["delete"].get<std::string>());
      return {};
    }
    return make_error(errc::corrupt_record, "kv event is not a put, append or delete");
  }

  static constexpr size_t key_bytes_max = 1024;
  static constexpr size_t list_items_max = 10000;

private:
  size_t entries_max_;
  std::map<std::string, json> data_;
};

/// Passes every call's body on to the agent `to` (one way, `call_context::send`) and answers
/// how many it relayed. Journaled: the count is an event, so a message leaves only once its
/// relaying is durable, and a retried command (idempotency key) is not relayed twice.
class relay_agent : public agent {
public:
  relay_agent(agent_id to, bool typed) : to_(std::move(to)), typed_(typed) {}

  caf::expected<std::string> handle(call_context& call) override {
    if (typed_) {
      // {"op":"add","by":N} goes on as the typed message add_request{N}.
      auto body = call.json();
      if (!body)
        return std::move(body.error());
      auto& j = **body;
      if (!j.is_object() || !j.contains("op") || j["op"] != "add" || !j.contains("by")
          || !j["by"].is_number_integer())
        return make_error(errc::invalid_argument,
                          "a typed relay takes {\"op\":\"add\",\"by\":N} only");
      if (auto err = call.send(to_, caf::make_message(add_request{j["by"].get<int64_t>()})))
        return err;
    } else if (auto err = call.send(to_, call.body_text())) {
      return err;
    }
    if (auto err = call.emit("r"))
      return err;
    return json{{"relayed", relayed_}, {"to", to_.str()}}.dump();
  }

  caf::error apply(std::string_view event) override {
    if (event != "r")
      return make_error(errc::internal, "relay: unknown event");
    ++relayed_;
    return {};
  }

  std::string snapshot() const override {
    return std::to_string(relayed_);
  }

  caf::error restore(std::string_view state) override {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(state.data(), state.data() + state.size(), v);
    if (ec != std::errc{} || p != state.data() + state.size())
      return make_error(errc::corrupt_record, "relay: bad snapshot");
    relayed_ = v;
    return {};
  }

  json summary() const override {
    return {{"relayed", relayed_}, {"to", to_.str()}};
  }

private:
  agent_id to_;
  bool typed_ = false;
  uint64_t relayed_ = 0;
};

} // namespace

caf::error register_sample_kinds(kind_registry& registry) {
  if (auto err = registry.add(
        {"relay",
         "passes each body on to the agent config.to (same tenant), one way; with "
         "config.typed, {op:add,by:N} goes on as the typed C++ message add_request{N}",
         [](const json& config) -> caf::expected<std::unique_ptr<agent>> {
           if (auto err = check_config_keys(config, {"to", "typed"}))
             return err;
           if (!config.contains("to") || !config["to"].is_string())
             return make_error(errc::invalid_argument, "config 'to' (an agent id) is required");
           auto to = parse_agent_id(config["to"].get<std::string>());
           if (!to)
             return std::move(to.error());
           if (config.contains("typed") && !config["typed"].is_boolean())
             return make_error(errc::invalid_argument, "config 'typed' must be true or false");
           return std::unique_ptr<agent>{
             new relay_agent(std::move(*to), config.value("typed", false))};
         },
         persistence_mode::journaled}))
    return err;
  if (auto err = registry.add({"echo", "answers with the body it got",
                               [](const json& config) -> caf::expected<std::unique_ptr<agent>> {
                                 if (auto err = check_config_keys(config, {}))
                                   return err;
                                 return std::unique_ptr<agent>{new echo_agent};
                               }}))
    return err;
  if (auto err = registry.add({"counter", "an integer: {op:add,by:N} | {op:get} -> {value:V}",
                               [](const json& config) -> caf::expected<std::unique_ptr<agent>> {
                                 if (auto err = check_config_keys(config, {"initial"}))
                                   return err;
                                 int64_t initial = 0;
                                 if (config.contains("initial")) {
                                   if (!config["initial"].is_number_integer())
                                     return make_error(errc::invalid_argument,
                                                       "config 'initial' must be an integer");
                                   initial = config["initial"].get<int64_t>();
                                 }
                                 return std::unique_ptr<agent>{new counter_agent(initial)};
                               },
                               persistence_mode::journaled}))
    return err;
  return registry.add(
    {"kv",
     "a bounded key-value map: {op:put|append|get|delete,key,value} (append: to a list, at most 10000 items)",
     [](const json& config) -> caf::expected<std::unique_ptr<agent>> {
       if (auto err = check_config_keys(config, {"entries_max"}))
         return err;
       int64_t entries_max = 10000;
       if (config.contains("entries_max")) {
         if (!config["entries_max"].is_number_integer())
           return make_error(errc::invalid_argument, "config 'entries_max' must be an integer");
         entries_max = config["entries_max"].get<int64_t>();
         if (entries_max < 1 || entries_max > 10000000)
           return make_error(errc::invalid_argument,
                             "config 'entries_max' = " + std::to_string(entries_max)
                               + " is out of range 1..10000000");
       }
       return std::unique_ptr<agent>{new kv_agent(static_cast<size_t>(entries_max))};
     },
     persistence_mode::journaled});
}

} // namespace hive
