#include "actors/tool_runner.hpp"

#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/sandbox.hpp"
#include "protocols/errc.hpp"

namespace hive {

namespace {

using nlohmann::json;

/// What the node allows (`tools.*`), shared by every tool_runner agent.
struct tool_policy {
  std::vector<std::string> allowed;
  std::string scratch_root;
  sandbox_limits ceiling;
  uint64_t stdin_bytes_max = 0;
  size_t tools_max = 0;
  size_t remembered_max = 0;
};

struct param_spec {
  std::string type; // string | integer | boolean
  bool required = true;
  int64_t min = INT64_MIN;
  int64_t max = INT64_MAX;
  size_t max_bytes = 4096;
  std::optional<std::regex> pattern;
  std::vector<json> one_of;
};

struct tool_spec {
  std::string executable;
  std::vector<std::string> args;
  std::map<std::string, param_spec> params;
  std::map<std::string, std::string> env;
  bool offline = false;
  sandbox_limits limits;
};

caf::error bad(const std::string& what) {
  return make_error(errc::invalid_argument, what);
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64)
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

/// Reads limit `key` of a declaration: at most the node's ceiling (which is the default).
caf::error read_limit(const json& limits, const char* key, uint64_t ceiling, uint64_t& out,
                      const std::string& where) {
  out = ceiling;
  if (!limits.contains(key))
    return {};
  auto& v = limits[key];
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    return bad(where + ".limits." + key + " must be a non-negative integer");
  auto n = v.get<uint64_t>();
  if (n > ceiling)
    return bad(where + ".limits." + key + " = " + std::to_string(n)
               + " is above the node's ceiling " + std::to_string(ceiling) + " (tools.*)");
  out = n;
  return {};
}

caf::expected<param_spec> parse_param(const std::string& where, const json& j) {
  if (!j.is_object())
    return bad(where + " must be an object");
  param_spec p;
  for (auto& [k, v] : j.items())
    if (k != "type" && k != "required" && k != "min" && k != "max" && k != "max_bytes"
        && k != "pattern" && k != "enum")
      return bad(where + " has an unknown field '" + k + "'");
  if (!j.contains("type") || !j["type"].is_string())
    return bad(where + ".type must be \"string\", \"integer\" or \"boolean\"");
  p.type = j["type"].get<std::string>();
  if (p.type != "string" && p.type != "integer" && p.type != "boolean")
    return bad(where + ".type must be \"string\", \"integer\" or \"boolean\"");
  if (j.contains("required")) {
    if (!j["required"].is_boolean())
      return bad(where + ".required must be a boolean");
    p.required = j["required"].get<bool>();
  }
  for (auto [key, field] : {std::pair{"min", &p.min}, std::pair{"max", &p.max}})
    if (j.contains(key)) {
      if (!j[key].is_number_integer())
        return bad(where + "." + key + " must be an integer");
      *field = j[key].get<int64_t>();
    }
  if (j.contains("max_bytes")) {
    if (!j["max_bytes"].is_number_unsigned() || j["max_bytes"].get<uint64_t>() > 65536)
      return bad(where + ".max_bytes must be an integer 0..65536");
    p.max_bytes = j["max_bytes"].get<size_t>();
  }
  if (j.contains("pattern")) {
    if (!j["pattern"].is_string() || j["pattern"].get<std::string>().size() > 256)
      return bad(where + ".pattern must be a regular expression of at most 256 bytes");
    try {
      p.pattern.emplace(j["pattern"].get<std::string>(), std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return bad(where + ".pattern is not a valid regular expression: " + e.what());
    }
  }
  if (j.contains("enum")) {
    if (!j["enum"].is_array() || j["enum"].empty() || j["enum"].size() > 256)
      return bad(where + ".enum must be a non-empty array of at most 256 values");
    p.one_of.assign(j["enum"].begin(), j["enum"].end());
  }
  return p;
}

caf::expected<tool_spec> parse_tool(const tool_policy& policy, const std::string& name,
                                    const json& j) {
  auto where = "tools." + name;
  if (!valid_name(name))
    return bad("tool name '" + name.substr(0, 80) + "' must be 1..64 of [A-Za-z0-9._-]");
  if (!j.is_object())
    return bad(where + " must be an object");
  for (auto& [k, v] : j.items())
    if (k != "executable" && k != "args" && k != "params" && k != "env" && k != "offline"
        && k != "limits")
      return bad(where + " has an unknown field '" + k + "'");
  tool_spec t;
  if (!j.contains("executable") || !j["executable"].is_string())
    return bad(where + ".executable must be an absolute path");
  t.executable = j["executable"].get<std::string>();
  if (t.executable.empty() || t.executable.front() != '/')
    return bad(where + ".executable must be an absolute path");
  // Refused at spawn already (run_sandboxed checks again at every run, after realpath).
  std::error_code ec;
  auto real = std::filesystem::weakly_canonical(t.executable, ec);
  bool allowed = false;
  for (auto& a : policy.allowed) {
    auto ra = std::filesystem::weakly_canonical(a, ec);
    if (a == t.executable || (!ec && ra == real))
      allowed = true;
  }
  if (!allowed)
    return make_error(errc::forbidden,
                      where + ".executable '" + t.executable
                        + "' is not in tools.allowed_executables");
  if (j.contains("args")) {
    if (!j["args"].is_array() || j["args"].size() > 256)
      return bad(where + ".args must be an array of at most 256 strings");
    for (auto& a : j["args"]) {
      if (!a.is_string() || a.get<std::string>().size() > 4096)
        return bad(where + ".args must hold strings of at most 4096 bytes");
      t.args.push_back(a.get<std::string>());
    }
  }
  if (j.contains("params")) {
    if (!j["params"].is_object() || j["params"].size() > 64)
      return bad(where + ".params must be an object of at most 64 parameters");
    for (auto& [k, v] : j["params"].items()) {
      if (!valid_name(k))
        return bad(where + ".params: name '" + k.substr(0, 80)
                   + "' must be 1..64 of [A-Za-z0-9._-]");
      auto p = parse_param(where + ".params." + k, v);
      if (!p)
        return std::move(p.error());
      t.params.emplace(k, std::move(*p));
    }
  }
  // Every placeholder names a declared parameter.
  for (auto& a : t.args)
    for (size_t open = a.find('{'); open != std::string::npos; open = a.find('{', open + 1)) {
      auto close = a.find('}', open);
      if (close == std::string::npos)
        return bad(where + ".args: '" + a.substr(0, 80) + "' has a '{' without '}'");
      auto p = a.substr(open + 1, close - open - 1);
      if (t.params.count(p) == 0)
        return bad(where + ".args: '{" + p.substr(0, 80) + "}' is not a declared parameter");
    }
  if (j.contains("env")) {
    if (!j["env"].is_object() || j["env"].size() > 64)
      return bad(where + ".env must be an object of at most 64 strings");
    for (auto& [k, v] : j["env"].items()) {
      if (k.empty() || k.find('=') != std::string::npos || !v.is_string()
          || v.get<std::string>().size() > 4096)
        return bad(where + ".env." + k.substr(0, 80)
                   + " must be a string of at most 4096 bytes with a name without '='");
      t.env.emplace(k, v.get<std::string>());
    }
  }
  if (j.contains("offline")) {
    if (!j["offline"].is_boolean())
      return bad(where + ".offline must be a boolean");
    t.offline = j["offline"].get<bool>();
  }
  json limits = j.value("limits", json::object());
  if (!limits.is_object())
    return bad(where + ".limits must be an object");
  for (auto& [k, v] : limits.items())
    if (k != "cpu_seconds" && k != "wall_ms" && k != "output_bytes" && k != "address_space_bytes"
        && k != "open_files" && k != "file_bytes")
      return bad(where + ".limits has an unknown field '" + k + "'");
  auto& c = policy.ceiling;
  auto& l = t.limits;
  if (auto err = read_limit(limits, "cpu_seconds", c.cpu_seconds_max, l.cpu_seconds_max, where))
    return err;
  if (auto err = read_limit(limits, "wall_ms", c.wall_ms_max, l.wall_ms_max, where))
    return err;
  if (auto err = read_limit(limits, "output_bytes", c.output_bytes_max, l.output_bytes_max, where))
    return err;
  if (auto err = read_limit(limits, "address_space_bytes", c.address_space_bytes_max,
                            l.address_space_bytes_max, where))
    return err;
  if (auto err = read_limit(limits, "open_files", c.open_files_max, l.open_files_max, where))
    return err;
  if (auto err = read_limit(limits, "file_bytes", c.file_bytes_max, l.file_bytes_max, where))
    return err;
  if (auto err = validate(l))
    return bad(where + ".limits: " + message_of(err));
  return t;
}

/// The text of a parameter value checked against its declaration.
caf::expected<std::string> param_text(const std::string& name, const param_spec& p, const json& v) {
  auto where = "params." + name;
  if (!p.one_of.empty() && std::find(p.one_of.begin(), p.one_of.end(), v) == p.one_of.end())
    return bad(where + " is not one of the allowed values");
  if (p.type == "integer") {
    if (!v.is_number_integer())
      return bad(where + " must be an integer");
    auto n = v.get<int64_t>();
    if (n < p.min || n > p.max)
      return bad(where + " = " + std::to_string(n) + " is outside " + std::to_string(p.min) + ".."
                 + std::to_string(p.max));
    return std::to_string(n);
  }
  if (p.type == "boolean") {
    if (!v.is_boolean())
      return bad(where + " must be a boolean");
    return std::string{v.get<bool>() ? "true" : "false"};
  }
  if (!v.is_string())
    return bad(where + " must be a string");
  auto s = v.get<std::string>();
  if (s.size() > p.max_bytes)
    return bad(where + " is longer than " + std::to_string(p.max_bytes) + " bytes");
  if (s.find('\0') != std::string::npos)
    return bad(where + " holds a NUL byte");
  if (p.pattern && !std::regex_match(s, *p.pattern))
    return bad(where + " does not match the declared pattern");
  return s;
}

/// The argument vector of one run: placeholders replaced; an argument naming an optional
/// parameter the call left out is dropped.
caf::expected<std::vector<std::string>> build_args(const tool_spec& t, const json& params) {
  if (!params.is_object())
    return bad("'params' must be an object");
  for (auto& [k, v] : params.items())
    if (t.params.count(k) == 0)
      return bad("params." + k.substr(0, 80) + " is not a parameter of this tool");
  std::map<std::string, std::string> values;
  for (auto& [name, p] : t.params) {
    if (!params.contains(name)) {
      if (p.required)
        return bad("params." + name + " is required");
      continue;
    }
    auto text = param_text(name, p, params[name]);
    if (!text)
      return std::move(text.error());
    values.emplace(name, std::move(*text));
  }
  std::vector<std::string> out;
  for (auto& a : t.args) {
    std::string arg;
    bool drop = false;
    size_t pos = 0;
    for (size_t open = a.find('{'); open != std::string::npos; open = a.find('{', pos)) {
      auto close = a.find('}', open);
      arg.append(a, pos, open - pos);
      auto i = values.find(a.substr(open + 1, close - open - 1));
      if (i == values.end())
        drop = true;
      else
        arg += i->second;
      pos = close + 1;
    }
    arg.append(a, pos, std::string::npos);
    if (!drop)
      out.push_back(std::move(arg));
  }
  return out;
}

class tool_runner final : public agent {
public:
  tool_runner(std::shared_ptr<const tool_policy> policy, std::map<std::string, tool_spec> tools)
      : policy_(std::move(policy)), tools_(std::move(tools)) {}

  caf::expected<std::string> handle(call_context& call) override {
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    auto& j = **body;
    if (!j.is_object() || !j.contains("op") || !j["op"].is_string())
      return bad("tool_runner: the body needs a field 'op': run|tools");
    auto op = j["op"].get<std::string>();
    if (op == "tools") {
      json out = json::object();
      for (auto& [name, t] : tools_) {
        json params = json::object();
        for (auto& [p, spec] : t.params)
          params[p] = {{"type", spec.type}, {"required", spec.required}};
        out[name] = {{"executable", t.executable}, {"params", params}, {"offline", t.offline}};
      }
      return json{{"tools", out}}.dump();
    }
    if (op != "run")
      return bad("unknown op '" + op.substr(0, 40) + "': tool_runner knows run|tools");
    if (!j.contains("tool") || !j["tool"].is_string())
      return bad("'run' needs a field 'tool'");
    auto name = j["tool"].get<std::string>();
    auto ti = tools_.find(name);
    if (ti == tools_.end())
      return bad("no tool '" + name.substr(0, 80) + "' (declared: " + declared() + ")");
    auto args = build_args(ti->second, j.value("params", json::object()));
    if (!args)
      return std::move(args.error());
    sandbox_request req;
    req.executable = ti->second.executable;
    req.args = std::move(*args);
    req.env = ti->second.env;
    req.scratch_root = policy_->scratch_root;
    req.offline = ti->second.offline;
    req.limits = ti->second.limits;
    if (j.contains("stdin")) {
      if (!j["stdin"].is_string())
        return bad("'stdin' must be a string");
      req.stdin_data = j["stdin"].get<std::string>();
      if (req.stdin_data.size() > policy_->stdin_bytes_max)
        return make_error(errc::too_large,
                          "'stdin' is longer than tools.stdin_bytes_max ("
                            + std::to_string(policy_->stdin_bytes_max) + " bytes)");
    }
    auto& env = call.env();
    std::string key;
    if (!env.client_id.empty()) {
      key = env.client_id + ":" + std::to_string(env.client_seq);
      if (auto i = calls_.find(key); i != calls_.end()) {
        if (i->second.is_null())
          return make_error(errc::conflict,
                            "the tool call with idempotency key " + key
                              + " started before its node stopped and its outcome is unknown; "
                                "it is not run again (at most once)");
        return i->second.dump();
      }
      // The intent is durable before the tool runs: a crash from here on never runs it twice.
      if (auto err = call.emit(json{{"started", key}, {"tool", name}}.dump()))
        return err;
      if (auto err = call.commit())
        return err;
    }
    auto result = run_sandboxed(req, policy_->allowed);
    if (!result) {
      if (!key.empty())
        (void)call.emit(json{{"finished", key}, {"error", message_of(result.error())}}.dump());
      return std::move(result.error());
    }
    auto out = result->to_json();
    out.erase("scratch_dir"); // (gone, and a path of the node's)
    out["tool"] = name;
    if (!key.empty())
      if (auto err = call.emit(json{{"finished", key}, {"result", out}}.dump()))
        return err;
    return out.dump();
  }

  json summary() const override {
    size_t unknown = 0;
    for (auto& [k, v] : calls_)
      unknown += v.is_null() ? 1 : 0;
    return {{"tools", tools_.size()},
            {"calls_remembered", calls_.size()},
            {"calls_outcome_unknown", unknown}};
  }

  std::string snapshot() const override {
    json calls = json::array();
    for (auto& k : order_)
      calls.push_back({k, calls_.at(k)});
    return json{{"calls", calls}}.dump();
  }

  caf::error restore(std::string_view state) override {
    calls_.clear();
    order_.clear();
    if (state.empty())
      return {};
    auto j = json::parse(state, nullptr, false);
    if (!j.is_object() || !j.contains("calls") || !j["calls"].is_array())
      return make_error(errc::corrupt_record, "tool_runner snapshot is not {calls:[...]}");
    for (auto& c : j["calls"]) {
      if (!c.is_array() || c.size() != 2 || !c[0].is_string())
        return make_error(errc::corrupt_record, "tool_runner snapshot holds a bad call entry");
      remember(c[0].get<std::string>(), c[1]);
    }
    return {};
  }

  caf::error apply(std::string_view event) override {
    auto j = json::parse(event, nullptr, false);
    if (j.is_object() && j.contains("started") && j["started"].is_string()) {
      remember(j["started"].get<std::string>(), nullptr);
      return {};
    }
    if (j.is_object() && j.contains("finished") && j["finished"].is_string()) {
      auto key = j["finished"].get<std::string>();
      // A finished call that could not start is forgotten: a retry may run it.
      if (j.contains("result"))
        remember(key, j["result"]);
      else
        forget(key);
      return {};
    }
    return make_error(errc::corrupt_record, "tool_runner event is not a start or a finish");
  }

private:
  std::string declared() const {
    std::string out;
    for (auto& [name, t] : tools_)
      out += (out.empty() ? "" : ", ") + name;
    return out.empty() ? "none" : out;
  }

  void remember(const std::string& key, json value) {
    auto [i, fresh] = calls_.insert_or_assign(key, std::move(value));
    (void)i;
    if (fresh)
      order_.push_back(key);
    while (order_.size() > policy_->remembered_max) {
      calls_.erase(order_.front());
      order_.pop_front();
    }
  }

  void forget(const std::string& key) {
    if (calls_.erase(key) > 0)
      order_.erase(std::find(order_.begin(), order_.end(), key));
  }

  std::shared_ptr<const tool_policy> policy_;
  std::map<std::string, tool_spec> tools_;
  /// Keyed calls: null while started (outcome unknown after a crash), else the result.
  std::map<std::string, json> calls_;
  std::deque<std::string> order_;
};

} // namespace

caf::error register_tool_kinds(kind_registry& registry, const node_config::tools_section& cfg,
                               std::string scratch_root) {
  auto policy = std::make_shared<tool_policy>();
  policy->allowed = split_list(cfg.allowed_executables);
  policy->scratch_root = std::move(scratch_root);
  policy->ceiling.cpu_seconds_max = static_cast<uint64_t>(cfg.cpu_seconds_max);
  policy->ceiling.wall_ms_max = static_cast<uint64_t>(cfg.wall_ms_max);
  policy->ceiling.output_bytes_max = static_cast<uint64_t>(cfg.output_bytes_max);
  policy->ceiling.address_space_bytes_max = static_cast<uint64_t>(cfg.address_space_bytes_max);
  policy->ceiling.open_files_max = static_cast<uint64_t>(cfg.open_files_max);
  policy->ceiling.file_bytes_max = static_cast<uint64_t>(cfg.file_bytes_max);
  policy->stdin_bytes_max = static_cast<uint64_t>(cfg.stdin_bytes_max);
  policy->tools_max = static_cast<size_t>(cfg.tools_per_agent_max);
  policy->remembered_max = static_cast<size_t>(cfg.calls_remembered_max);
  if (auto err = validate(policy->ceiling))
    return make_error(errc::invalid_config, "tools.*: " + message_of(err));
  std::error_code ec;
  std::filesystem::create_directories(policy->scratch_root, ec);
  if (ec)
    return make_error(errc::io_error,
                      "cannot create the tool scratch directory '" + policy->scratch_root
                        + "': " + ec.message());
  // Scratch directories left by runs of a node that was killed (this node's own only).
  for (auto& e : std::filesystem::directory_iterator(policy->scratch_root, ec))
    if (e.path().filename().string().rfind("sandbox-", 0) == 0)
      std::filesystem::remove_all(e.path(), ec);
  kind_spec spec{"tool_runner",
                 "runs declared tools in a sandbox: {op:run,tool,params,stdin} | {op:tools}; "
                 "keyed calls run at most once",
                 [policy](const json& config) -> caf::expected<std::unique_ptr<agent>> {
                   if (!config.is_object() || !config.contains("tools")
                       || !config["tools"].is_object() || config["tools"].empty())
                     return bad("tool_runner config needs 'tools': an object of tool declarations");
                   for (auto& [k, v] : config.items())
                     if (k != "tools")
                       return bad("tool_runner config has an unknown field '" + k + "'");
                   if (config["tools"].size() > policy->tools_max)
                     return make_error(errc::too_large,
                                       "tool_runner declares more than "
                                       "tools.tools_per_agent_max ("
                                         + std::to_string(policy->tools_max) + ") tools");
                   std::map<std::string, tool_spec> tools;
                   for (auto& [name, decl] : config["tools"].items()) {
                     auto t = parse_tool(*policy, name, decl);
                     if (!t)
                       return std::move(t.error());
                     tools.emplace(name, std::move(*t));
                   }
                   return std::unique_ptr<agent>{new tool_runner(policy, std::move(tools))};
                 },
                 persistence_mode::journaled};
  spec.blocking = true;
  spec.capabilities = {"tools"};
  return registry.add(std::move(spec));
}

} // namespace hive
