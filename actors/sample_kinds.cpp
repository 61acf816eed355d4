#include "actors/sample_kinds.hpp"

#include <map>

#include "protocols/errc.hpp"

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
    const json* body = nullptr;
    auto op = op_of(call, body);
    if (!op)
      return std::move(op.error());
    if (*op == "add") {
      auto by = body->find("by");
      if (by == body->end() || !by->is_number_integer())
        return make_error(errc::invalid_argument, "'add' needs an integer field 'by'");
      auto n = by->get<int64_t>();
      int64_t sum = 0;
      if (__builtin_add_overflow(value_, n, &sum))
        return make_error(errc::invalid_argument, "'add' would overflow the counter");
      value_ = sum;
    } else if (*op != "get") {
      return make_error(errc::invalid_argument,
                        "unknown op '" + op->substr(0, 40) + "': counter knows add|get");
    }
    return json{{"value", value_}}.dump();
  }

  json summary() const override {
    return {{"value", value_}};
  }

private:
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
      data_[key] = *value;
      return json{{"ok", true}}.dump();
    }
    if (*op == "get") {
      auto i = data_.find(key);
      if (i == data_.end())
        return json{{"found", false}, {"value", nullptr}}.dump();
      return json{{"found", true}, {"value", i->second}}.dump();
    }
    if (*op == "delete")
      return json{{"deleted", data_.erase(key) > 0}}.dump();
    return make_error(errc::invalid_argument,
                      "unknown op '" + op->substr(0, 40) + "': kv knows put|get|delete");
  }

  json summary() const override {
    return {{"entries", data_.size()}, {"entries_max", entries_max_}};
  }

  static constexpr size_t key_bytes_max = 1024;

private:
  size_t entries_max_;
  std::map<std::string, json> data_;
};

} // namespace

caf::error register_sample_kinds(kind_registry& registry) {
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
                               }}))
    return err;
  return registry.add(
    {"kv", "a bounded key-value map: {op:put|get|delete,key,value}",
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
     }});
}

} // namespace hive
