#include "actors/planner.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocols/errc.hpp"

namespace hive {

namespace {

using nlohmann::json;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

caf::error bad(const std::string& what) {
  return make_error(errc::invalid_argument, what);
}

bool valid_step_id(const std::string& s) {
  if (s.empty() || s.size() > 64)
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'))
      return false;
  return true;
}

enum class on_failure_t { fail, skip, fallback };

struct step_def {
  std::string id;
  std::string capability;
  json input;
  std::vector<size_t> deps;
  int64_t timeout_ms = 30000;
  uint32_t retries = 0;
  int64_t backoff_ms = 100;
  int64_t backoff_max_ms = 10000;
  on_failure_t on_failure = on_failure_t::fail;
  std::string fallback;
};

struct workflow_def {
  std::vector<step_def> steps;
  /// Step id -> position in `steps`.
  std::unordered_map<std::string, size_t> index;
  size_t parallel_max = 64;
  uint32_t breaker_failures = 3;
  int64_t breaker_open_ms = 5000;
};

struct limits {
  size_t steps_max = 10000;
  size_t parallel_max = 256;
  size_t output_bytes_max = 65536;
  int64_t providers_cache_ms = 1000;
};

/// Reads integer field `key` of `j` into `out` if present, within lo..hi.
template <class T>
caf::error read_int(const json& j, const char* key, int64_t lo, int64_t hi, T& out,
                    const std::string& where) {
  auto i = j.find(key);
  if (i == j.end())
    return {};
  if (!i->is_number_integer() || i->get<int64_t>() < lo || i->get<int64_t>() > hi)
    return bad(where + "." + key + " must be an integer " + std::to_string(lo) + ".."
               + std::to_string(hi));
  out = static_cast<T>(i->get<int64_t>());
  return {};
}

/// The references `${STEP.output...}` in the strings of `j`.
void collect_refs(const json& j, std::vector<std::string>& out) {
  if (j.is_string()) {
    auto& s = j.get_ref<const std::string&>();
    for (size_t pos = s.find("${"); pos != std::string::npos; pos = s.find("${", pos + 2)) {
      auto end = s.find('}', pos);
      if (end == std::string::npos)
        return;
      auto ref = s.substr(pos + 2, end - pos - 2);
      out.push_back(ref.substr(0, ref.find('.')));
    }
  } else if (j.is_structured()) {
    for (auto& child : j)
      collect_refs(child, out);
  }
}

/// Names an edge of a cycle among the steps that Kahn's algorithm could not order.
std::string describe_cycle(const workflow_def& wf, const std::vector<size_t>& indegree) {
  // Walk back along dependencies from a step left over: every one has a dependency left over,
  // so the walk repeats a step, and the repeat closes a cycle.
  size_t start = 0;
  while (indegree[start] == 0)
    ++start;
  std::vector<int> seen(wf.steps.size(), -1);
  std::vector<size_t> path;
  size_t at = start;
  while (seen[at] < 0) {
    seen[at] = static_cast<int>(path.size());
    path.push_back(at);
    for (auto d : wf.steps[at].deps)
      if (indegree[d] > 0) {
        at = d;
        break;
      }
  }
  std::string text;
  for (size_t i = static_cast<size_t>(seen[at]); i < path.size(); ++i)
    text += wf.steps[path[i]].id + " -> ";
  text += wf.steps[at].id;
  return "the steps' dependencies form a cycle: " + text + " (edge " + wf.steps[path.back()].id
    + " depends on " + wf.steps[at].id + ")";
}

caf::expected<workflow_def> parse_workflow(const json& j, const limits& lim) {
  if (!j.is_object())
    return bad("a workflow must be a JSON object");
  for (auto& [k, v] : j.items())
    if (k != "steps" && k != "parallel_max" && k != "breaker" && k != "id")
      return bad("a workflow has no field '" + k.substr(0, 40)
                 + "' (steps, parallel_max, breaker, id)");
  workflow_def wf;
  wf.parallel_max = lim.parallel_max;
  if (auto err = read_int(j, "parallel_max", 1, static_cast<int64_t>(lim.parallel_max),
                          wf.parallel_max, "workflow"))
    return err;
  if (j.contains("breaker")) {
    auto& b = j["breaker"];
    if (!b.is_object())
      return bad("workflow.breaker must be an object {failures, open_ms}");
    for (auto& [k, v] : b.items())
      if (k != "failures" && k != "open_ms")
        return bad("workflow.breaker has no field '" + k.substr(0, 40) + "'");
    if (auto err = read_int(b, "failures", 1, 1000, wf.breaker_failures, "workflow.breaker"))
      return err;
    if (auto err = read_int(b, "open_ms", 1, 3600000, wf.breaker_open_ms, "workflow.breaker"))
      return err;
  }
  auto steps = j.find("steps");
  if (steps == j.end() || !steps->is_array() || steps->empty())
    return bad("a workflow needs a non-empty array 'steps'");
  if (steps->size() > lim.steps_max)
    return make_error(errc::too_large,
                      "a workflow may have at most " + std::to_string(lim.steps_max)
                        + " steps (planner."
                          "steps_max), this one has "
                        + std::to_string(steps->size()));
  std::unordered_map<std::string, size_t> index;
  for (auto& s : *steps) {
    auto where = "steps[" + std::to_string(wf.steps.size()) + "]";
    if (!s.is_object())
      return bad(where + " must be an object");
    step_def d;
    if (!s.contains("id") || !s["id"].is_string() || !valid_step_id(s["id"].get<std::string>()))
      return bad(where + ".id must be 1..64 of [A-Za-z0-9_-]");
    d.id = s["id"].get<std::string>();
    where = "step '" + d.id + "'";
    for (auto& [k, v] : s.items())
      if (k != "id" && k != "capability" && k != "input" && k != "depends_on" && k != "timeout_ms"
          && k != "retries" && k != "backoff_ms" && k != "backoff_max_ms" && k != "on_failure"
          && k != "fallback")
        return bad(where + " has no field '" + k.substr(0, 40) + "'");
    if (!index.emplace(d.id, wf.steps.size()).second)
      return bad("two steps have the id '" + d.id + "'");
    if (!s.contains("capability") || !s["capability"].is_string()
        || s["capability"].get<std::string>().empty()
        || s["capability"].get<std::string>().size() > 128)
      return bad(where + ".capability must be a string of 1..128 bytes");
    d.capability = s["capability"].get<std::string>();
    d.input = s.value("input", json::object());
    if (auto err = read_int(s, "timeout_ms", 1, 3600000, d.timeout_ms, where))
      return err;
    if (auto err = read_int(s, "retries", 0, 100, d.retries, where))
      return err;
    if (auto err = read_int(s, "backoff_ms", 0, 3600000, d.backoff_ms, where))
      return err;
    if (auto err = read_int(s, "backoff_max_ms", 0, 3600000, d.backoff_max_ms, where))
      return err;
    auto policy = s.value("on_failure", std::string{"fail"});
    if (policy == "fail")
      d.on_failure = on_failure_t::fail;
    else if (policy == "skip")
      d.on_failure = on_failure_t::skip;
    else if (policy == "fallback")
      d.on_failure = on_failure_t::fallback;
    else
      return bad(where + ".on_failure must be \"fail\", \"skip\" or \"fallback\"");
    if (d.on_failure == on_failure_t::fallback) {
      if (!s.contains("fallback") || !s["fallback"].is_string()
          || s["fallback"].get<std::string>().empty()
          || s["fallback"].get<std::string>().size() > 128)
        return bad(where + " has on_failure \"fallback\": it needs a capability 'fallback'");
      d.fallback = s["fallback"].get<std::string>();
    } else if (s.contains("fallback")) {
      return bad(where + ".fallback needs on_failure \"fallback\"");
    }
    wf.steps.push_back(std::move(d));
  }
  // Dependencies (second pass: a step may depend on one listed after it).
  for (size_t i = 0; i < steps->size(); ++i) {
    auto& s = (*steps)[i];
    auto& d = wf.steps[i];
    if (!s.contains("depends_on"))
      continue;
    if (!s["depends_on"].is_array())
      return bad("step '" + d.id + "'.depends_on must be an array of step ids");
    for (auto& dep : s["depends_on"]) {
      if (!dep.is_string())
        return bad("step '" + d.id + "'.depends_on must be an array of step ids");
      auto k = index.find(dep.get<std::string>());
      if (k == index.end())
        return bad("step '" + d.id + "' depends on '" + dep.get<std::string>().substr(0, 64)
                   + "', which is not a step of this workflow");
      if (k->second == i)
        return bad("step '" + d.id + "' depends on itself");
      if (std::find(d.deps.begin(), d.deps.end(), k->second) == d.deps.end())
        d.deps.push_back(k->second);
    }
  }
  // Kahn's algorithm: what it cannot order lies on or behind a cycle.
  std::vector<size_t> indegree(wf.steps.size(), 0);
  std::vector<std::vector<size_t>> dependents(wf.steps.size());
  for (size_t i = 0; i < wf.steps.size(); ++i) {
    indegree[i] = wf.steps[i].deps.size();
    for (auto d : wf.steps[i].deps)
      dependents[d].push_back(i);
  }
  std::vector<size_t> ready;
  for (size_t i = 0; i < indegree.size(); ++i)
    if (indegree[i] == 0)
      ready.push_back(i);
  size_t ordered = 0;
  while (!ready.empty()) {
    auto i = ready.back();
    ready.pop_back();
    ++ordered;
    for (auto n : dependents[i])
      if (--indegree[n] == 0)
        ready.push_back(n);
  }
  if (ordered < wf.steps.size())
    return bad(describe_cycle(wf, indegree));
  // References must name (transitive) dependencies: their outputs exist by then.
  for (size_t i = 0; i < wf.steps.size(); ++i) {
    std::vector<std::string> refs;
    collect_refs(wf.steps[i].input, refs);
    if (refs.empty())
      continue;
    std::set<size_t> before;
    std::vector<size_t> todo = wf.steps[i].deps;
    while (!todo.empty()) {
      auto k = todo.back();
      todo.pop_back();
      if (before.insert(k).second)
        for (auto d : wf.steps[k].deps)
          todo.push_back(d);
    }
    for (auto& r : refs) {
      auto k = index.find(r);
      if (k == index.end() || before.count(k->second) == 0)
        return bad("step '" + wf.steps[i].id + "' uses the output of '" + r.substr(0, 64)
                   + "', which is not among its dependencies");
    }
  }
  wf.index = std::move(index);
  return wf;
}

/// Navigates `path` (".a.b.0") into `j`; null if absent.
json navigate(const json& j, std::string_view path) {
  const json* at = &j;
  while (!path.empty()) {
    path.remove_prefix(1); // '.'
    auto dot = path.find('.');
    auto part = std::string{path.substr(0, dot)};
    path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot);
    if (at->is_object() && at->contains(part)) {
      at = &(*at)[part];
    } else if (at->is_array() && !part.empty()
               && std::all_of(part.begin(), part.end(),
                              [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); })
               && std::stoul(part) < at->size()) {
      at = &(*at)[std::stoul(part)];
    } else {
      return nullptr;
    }
  }
  return *at;
}

enum class step_status { pending, running, backoff, done, skipped, failed, cancelled };

const char* to_text(step_status s) {
  switch (s) {
    case step_status::pending: return "pending";
    case step_status::running: return "running";
    case step_status::backoff: return "backoff";
    case step_status::done: return "done";
    case step_status::skipped: return "skipped";
    case step_status::failed: return "failed";
    case step_status::cancelled: return "cancelled";
  }
  return "?";
}

step_status step_status_of(const std::string& s) {
  for (auto x :
       {step_status::pending, step_status::running, step_status::backoff, step_status::done,
        step_status::skipped, step_status::failed, step_status::cancelled})
    if (s == to_text(x))
      return x;
  return step_status::pending;
}

struct step_state {
  step_status status = step_status::pending;
  /// Attempts dispatched (or failed before dispatch: no provider) so far.
  uint32_t attempts = 0;
  /// `attempts` when the current capability (the step's or its fallback) began.
  uint32_t phase_start = 0;
  bool on_fallback = false;
  std::string provider;
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  int64_t retry_at_ms = 0;
  json output;
  std::string error;
};

/// A provider as a lookup listed it.
struct candidate {
  std::string id;
  uint64_t load = 0;
};

struct breaker_state {
  uint32_t failures = 0;
  int64_t open_until_ms = 0;
};

class planner_agent : public agent {
public:
  planner_agent(workflow_def wf, limits lim)
      : wf_(std::move(wf)), lim_(lim), steps_(wf_.steps.size()) {}

  caf::expected<std::string> handle(call_context& call) override {
    if (auto n = call.notice())
      return on_notice(call, *n);
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    const json& b = **body;
    if (!b.is_object() || !b.contains("op") || !b["op"].is_string())
      return bad("a planner call needs a string field 'op' (status|pause|resume|cancel)");
    auto op = b["op"].get<std::string>();
    if (op == "status")
      return status_json(call.self_id()).dump();
    if (op == "pause" || op == "resume" || op == "cancel") {
      if (finished())
        return make_error(errc::conflict, "the workflow " + status_ + " already; it cannot " + op);
      if (op == "pause" && status_ == "running")
        (void)call.emit(json{{"e", "pause"}, {"t", now_ms()}}.dump());
      else if (op == "resume" && status_ == "paused")
        (void)call.emit(json{{"e", "resume"}, {"t", now_ms()}}.dump());
      else if (op == "cancel")
        (void)call.emit(json{{"e", "cancel"}, {"t", now_ms()}}.dump());
      if (op == "cancel")
        (void)call.publish("workflow_finished", {{"status", status_}});
      advance(call);
      return json{{"id", call.self_id().str()}, {"status", status_}}.dump();
    }
    return bad("unknown op '" + op.substr(0, 40) + "': planner knows status|pause|resume|cancel");
  }

  json summary() const override {
    size_t done = 0;
    for (auto& s : steps_)
      done += s.status == step_status::done || s.status == step_status::skipped;
    return {{"status", status_}, {"steps", steps_.size()}, {"steps_done", done}};
  }

  std::string snapshot() const override {
    json steps = json::array();
    for (auto& s : steps_)
      steps.push_back({{"st", to_text(s.status)},
                       {"a", s.attempts},
                       {"ps", s.phase_start},
                       {"fb", s.on_fallback},
                       {"p", s.provider},
                       {"t0", s.started_ms},
                       {"t1", s.finished_ms},
                       {"ra", s.retry_at_ms},
                       {"out", s.output},
                       {"err", s.error}});
    return json{{"status", status_},
                {"started", started_},
                {"created", created_ms_},
                {"finished", finished_ms_},
                {"steps", std::move(steps)}}
      .dump();
  }

  caf::error restore(std::string_view state) override {
    auto j = json::parse(state, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("steps") || !j["steps"].is_array()
        || j["steps"].size() != steps_.size())
      return make_error(errc::corrupt_record, "planner snapshot does not fit its workflow");
    try {
      status_ = j.at("status").get<std::string>();
      started_ = j.at("started").get<bool>();
      created_ms_ = j.at("created").get<int64_t>();
      finished_ms_ = j.at("finished").get<int64_t>();
      for (size_t i = 0; i < steps_.size(); ++i) {
        auto& s = j["steps"][i];
        auto& st = steps_[i];
        st.status = step_status_of(s.at("st").get<std::string>());
        st.attempts = s.at("a").get<uint32_t>();
        st.phase_start = s.at("ps").get<uint32_t>();
        st.on_fallback = s.at("fb").get<bool>();
        st.provider = s.at("p").get<std::string>();
        st.started_ms = s.at("t0").get<int64_t>();
        st.finished_ms = s.at("t1").get<int64_t>();
        st.retry_at_ms = s.at("ra").get<int64_t>();
        st.output = s.at("out");
        st.error = s.at("err").get<std::string>();
      }
    } catch (const json::exception& e) {
      return make_error(errc::corrupt_record, std::string{"planner snapshot: "} + e.what());
    }
    return {};
  }

  caf::error apply(std::string_view event) override {
    auto e = json::parse(event, nullptr, false);
    if (e.is_discarded() || !e.is_object() || !e.contains("e"))
      return make_error(errc::corrupt_record, "planner event is not a JSON object with 'e'");
    try {
      auto type = e["e"].get<std::string>();
      auto t = e.value("t", int64_t{0});
      if (type == "start") {
        started_ = true;
        created_ms_ = t;
        return {};
      }
      if (type == "pause") {
        status_ = "paused";
        return {};
      }
      if (type == "resume") {
        status_ = "running";
        return {};
      }
      if (type == "cancel") {
        status_ = "cancelled";
        finished_ms_ = t;
        for (auto& s : steps_)
          if (s.status == step_status::pending || s.status == step_status::running
              || s.status == step_status::backoff)
            s.status = step_status::cancelled;
        return {};
      }
      auto i = e.at("s").get<size_t>();
      if (i >= steps_.size())
        return make_error(errc::corrupt_record,
                          "planner event names step " + std::to_string(i) + " of "
                            + std::to_string(steps_.size()));
      auto& s = steps_[i];
      auto a = e.at("a").get<uint32_t>();
      if (type == "dispatch") {
        s.status = step_status::running;
        s.attempts = a;
        s.provider = e.at("p").get<std::string>();
        if (s.started_ms == 0)
          s.started_ms = t;
      } else if (type == "done") {
        s.status = step_status::done;
        s.output = e.at("out");
        s.error.clear();
        s.finished_ms = t;
      } else if (type == "fail") {
        s.attempts = std::max(s.attempts, a);
        s.error = e.at("err").get<std::string>();
        auto next = e.at("next").get<std::string>();
        if (next == "retry") {
          s.status = step_status::backoff;
          s.retry_at_ms = e.at("at").get<int64_t>();
        } else if (next == "fallback") {
          s.status = step_status::pending;
          s.on_fallback = true;
          s.phase_start = s.attempts;
        } else if (next == "skip") {
          s.status = step_status::skipped;
          s.finished_ms = t;
        } else {
          s.status = step_status::failed;
          s.finished_ms = t;
          status_ = "failed";
          finished_ms_ = t;
        }
      } else {
        return make_error(errc::corrupt_record, "unknown planner event '" + type + "'");
      }
      if (status_ == "running" || status_ == "paused") {
        bool all = std::all_of(steps_.begin(), steps_.end(), [](const step_state& x) {
          return x.status == step_status::done || x.status == step_status::skipped;
        });
        if (all) {
          status_ = "succeeded";
          finished_ms_ = t;
        }
      }
    } catch (const json::exception& ex) {
      return make_error(errc::corrupt_record, std::string{"planner event: "} + ex.what());
    }
    return {};
  }

private:
  bool finished() const {
    return status_ == "succeeded" || status_ == "failed" || status_ == "cancelled";
  }

  const std::string& capability_of(size_t i) const {
    return steps_[i].on_fallback ? wf_.steps[i].fallback : wf_.steps[i].capability;
  }

  caf::expected<std::string> on_notice(call_context& call, const agent_notice& n) {
    switch (n.what) {
      case agent_notice::wake:
        if (!woken_) {
          woken_ = true;
          if (!started_)
            (void)call.emit(json{{"e", "start"}, {"t", now_ms()}}.dump());
          resume_inflight(call);
        }
        break;
      case agent_notice::providers: on_providers(call, n); break;
      case agent_notice::reply: on_reply(call, n); break;
      case agent_notice::timer: timer_at_ = 0; break; // a back-off passed: advance looks
      default: break;
    }
    advance(call);
    return std::string{"{}"};
  }

  /// A new activation: the asks of running steps were lost with the old one (or never left):
  /// they go again, same key, same provider; back-off timers are set again.
  void resume_inflight(call_context& call) {
    if (finished())
      return;
    for (size_t i = 0; i < steps_.size(); ++i)
      if (steps_[i].status == step_status::running && asked_.count(i) == 0)
        send_ask(call, i);
  }

  /// The idempotency key of step `i`: the same for every attempt and activation.
  std::string key_of(const agent_id& self, size_t i) const {
    return "wf:" + self.str() + "/" + wf_.steps[i].id;
  }

  /// The step's input with references to earlier outputs filled in.
  json resolve(const json& j) const {
    if (j.is_string()) {
      auto& s = j.get_ref<const std::string&>();
      if (s.find("${") == std::string::npos)
        return j;
      auto value_of = [this](const std::string& ref) -> json {
        auto dot = ref.find('.');
        auto k = wf_.index.find(ref.substr(0, dot));
        if (k == wf_.index.end())
          return nullptr;
        // "${a.output.x}": rest is ".output.x"
        auto rest = dot == std::string::npos ? std::string{} : ref.substr(dot);
        if (rest.rfind(".output", 0) == 0)
          return navigate(steps_[k->second].output, std::string_view{rest}.substr(7));
        return nullptr;
      };
      if (s.size() > 3 && s.rfind("${", 0) == 0 && s.find("${", 2) == std::string::npos
          && s.find('}') == s.size() - 1)
        return value_of(s.substr(2, s.size() - 3)); // the whole string: the value itself
      std::string out;
      size_t pos = 0;
      for (auto at = s.find("${"); at != std::string::npos; at = s.find("${", pos)) {
        auto end = s.find('}', at);
        if (end == std::string::npos)
          break;
        out += s.substr(pos, at - pos);
        auto v = value_of(s.substr(at + 2, end - at - 2));
        out += v.is_string() ? v.get<std::string>() : v.dump();
        pos = end + 1;
      }
      out += s.substr(pos);
      return out;
    }
    if (j.is_object()) {
      json out = json::object();
      for (auto& [k, v] : j.items())
        out[k] = resolve(v);
      return out;
    }
    if (j.is_array()) {
      json out = json::array();
      for (auto& v : j)
        out.push_back(resolve(v));
      return out;
    }
    return j;
  }

  void send_ask(call_context& call, size_t i) {
    auto& s = steps_[i];
    auto to = parse_agent_id(s.provider);
    if (!to) {
      fail_attempt(call, i, s.attempts, "provider id '" + s.provider + "' is not valid");
      return;
    }
    auto err = call.ask(
      *to, resolve(wf_.steps[i].input).dump(), std::chrono::milliseconds(wf_.steps[i].timeout_ms),
      "s:" + std::to_string(i) + ":" + std::to_string(s.attempts), key_of(call.self_id(), i), 1);
    if (err) {
      fail_attempt(call, i, s.attempts, message_of(err));
      return;
    }
    asked_.insert(i);
    ++inflight_to_[s.provider];
  }

  bool breaker_open(const std::string& provider, int64_t now) const {
    auto b = breakers_.find(provider);
    return b != breakers_.end() && b->second.failures >= wf_.breaker_failures
      && now < b->second.open_until_ms;
  }

  void breaker_result(const std::string& provider, bool ok) {
    auto& b = breakers_[provider];
    if (ok) {
      b = {};
      return;
    }
    if (++b.failures >= wf_.breaker_failures)
      b.open_until_ms = now_ms() + wf_.breaker_open_ms; // (again after a half-open failure)
  }

  /// Picks a provider of step `i`'s capability from a fresh list, or asks for one.
  void dispatch(call_context& call, size_t i) {
    auto& cap = capability_of(i);
    auto now = now_ms();
    auto c = cache_.find(cap);
    if (c == cache_.end() || now - c->second.fetched_ms > lim_.providers_cache_ms) {
      auto& waiting = waiting_[cap];
      if (waiting.empty())
        (void)call.find_providers(cap, cap, 256);
      if (std::find(waiting.begin(), waiting.end(), i) == waiting.end())
        waiting.push_back(i);
      return;
    }
    auto& s = steps_[i];
    const candidate* pick = nullptr;
    uint64_t best = UINT64_MAX;
    for (auto& p : c->second.list) {
      if (breaker_open(p.id, now))
        continue;
      if (p.id == s.provider) { // sticky: a retry goes where the effect may already be
        pick = &p;
        break;
      }
      auto score = p.load + inflight_to_[p.id];
      if (score < best) {
        best = score;
        pick = &p;
      }
    }
    auto attempt = s.attempts + 1;
    if (pick == nullptr) {
      fail_attempt(call, i, attempt,
                   "no agent offers capability '" + cap + "'"
                     + (c->second.list.empty() ? std::string{} : " with a closed breaker"));
      return;
    }
    (void)call.emit(
      json{{"e", "dispatch"}, {"s", i}, {"a", attempt}, {"p", pick->id}, {"t", now}}.dump());
    (void)call.publish("workflow_step",
                       {{"step", wf_.steps[i].id},
                        {"status", "running"},
                        {"attempt", attempt},
                        {"provider", pick->id}});
    send_ask(call, i);
  }

  void on_providers(call_context& call, const agent_notice& n) {
    auto& cap = n.tag;
    auto j = json::parse(n.body, nullptr, false);
    auto& entry = cache_[cap];
    entry.list.clear();
    entry.fetched_ms = now_ms();
    if (j.is_object() && j.contains("providers") && j["providers"].is_array())
      for (auto& p : j["providers"])
        if (p.is_object() && p.contains("id") && p["id"].is_string())
          entry.list.push_back({p["id"].get<std::string>(), p.value("load", uint64_t{0})});
    auto waiting = std::move(waiting_[cap]);
    waiting_.erase(cap);
    if (finished() || status_ != "running")
      return;
    for (auto i : waiting)
      if (ready(i))
        dispatch(call, i);
  }

  void on_reply(call_context& call, const agent_notice& n) {
    // tag "s:I:ATTEMPT"
    auto c1 = n.tag.find(':', 2);
    if (n.tag.rfind("s:", 0) != 0 || c1 == std::string::npos)
      return;
    size_t i = std::stoul(n.tag.substr(2, c1 - 2));
    uint32_t attempt = static_cast<uint32_t>(std::stoul(n.tag.substr(c1 + 1)));
    if (i >= steps_.size())
      return;
    auto& s = steps_[i];
    if (asked_.erase(i) > 0 && inflight_to_[s.provider] > 0)
      --inflight_to_[s.provider];
    if (s.status != step_status::running || s.attempts != attempt || finished())
      return; // stale: an earlier attempt, or the workflow ended
    if (n.code == 0) {
      if (n.body.size() > lim_.output_bytes_max) {
        fail_attempt(call, i, attempt,
                     "the output of " + std::to_string(n.body.size())
                       + " bytes is above planner.step_output_bytes_max");
        return;
      }
      breaker_result(s.provider, true);
      auto out = json::parse(n.body, nullptr, false);
      if (out.is_discarded())
        out = n.body;
      auto provider = s.provider;
      (void)call.emit(
        json{{"e", "done"}, {"s", i}, {"a", attempt}, {"out", std::move(out)}, {"t", now_ms()}}
          .dump());
      (void)call.publish("workflow_step",
                         {{"step", wf_.steps[i].id},
                          {"status", "done"},
                          {"attempt", attempt},
                          {"provider", provider}});
      if (status_ == "succeeded")
        (void)call.publish("workflow_finished", {{"status", status_}});
      return;
    }
    // A provider that refused the input is not unhealthy; anything else counts against it.
    bool provider_fault = n.code != static_cast<uint16_t>(errc::invalid_argument);
    if (provider_fault)
      breaker_result(s.provider, false);
    fail_attempt(call, i, attempt,
                 std::string{to_string(static_cast<errc>(n.code))} + ": " + n.body);
  }

  /// Attempt `attempt` of step `i` failed: retry after a back-off, or apply the step's policy.
  void fail_attempt(call_context& call, size_t i, uint32_t attempt, const std::string& why) {
    auto& d = wf_.steps[i];
    auto& s = steps_[i];
    auto now = now_ms();
    uint32_t phase_attempts = attempt - s.phase_start;
    std::string next;
    int64_t at = 0;
    if (phase_attempts <= d.retries) {
      next = "retry";
      int64_t delay = d.backoff_ms;
      for (uint32_t k = 1; k < phase_attempts && delay < d.backoff_max_ms; ++k)
        delay *= 2;
      delay = std::min(delay, d.backoff_max_ms);
      at = now + delay; // (advance sets the timer)
    } else if (d.on_failure == on_failure_t::fallback && !s.on_fallback) {
      next = "fallback";
    } else if (d.on_failure == on_failure_t::skip) {
      next = "skip";
    } else {
      next = "failed";
    }
    auto err = why.substr(0, 1024);
    (void)call.emit(json{
      {"e", "fail"}, {"s", i}, {"a", attempt}, {"err", err}, {"next", next}, {"at", at}, {"t", now}}
                      .dump());
    (void)call.publish("workflow_step",
                       {{"step", d.id},
                        {"status", to_text(s.status)},
                        {"attempt", attempt},
                        {"provider", s.provider},
                        {"error", err}});
    if (finished())
      (void)call.publish("workflow_finished", {{"status", status_}});
  }

  /// Whether step `i` may be dispatched now.
  bool ready(size_t i) const {
    auto& s = steps_[i];
    if (s.status == step_status::backoff) {
      if (s.retry_at_ms > now_ms())
        return false;
    } else if (s.status != step_status::pending) {
      return false;
    }
    for (auto d : wf_.steps[i].deps)
      if (steps_[d].status != step_status::done && steps_[d].status != step_status::skipped)
        return false;
    return true;
  }

  /// Dispatches ready steps, up to the parallelism limit.
  void advance(call_context& call) {
    if (status_ != "running" || !started_)
      return;
    size_t inflight = 0;
    for (auto& s : steps_)
      inflight += s.status == step_status::running;
    for (auto& [cap, w] : waiting_)
      inflight += w.size();
    // Passes until nothing changes: a dispatch can settle a step at once (no provider: skipped,
    // or moved to its fallback, which is ready again), which may make others ready.
    for (size_t pass = 0, changed = 1; changed > 0 && pass <= steps_.size(); ++pass) {
      changed = 0;
      for (size_t i = 0; i < steps_.size() && inflight < wf_.parallel_max; ++i) {
        if (!ready(i) || waiting_for(i))
          continue;
        auto before = steps_[i].attempts;
        dispatch(call, i);
        if (status_ != "running")
          return;
        if (steps_[i].status == step_status::running || waiting_for(i))
          ++inflight;
        else if (steps_[i].attempts != before)
          ++changed; // failed before it left: its policy ran
      }
    }
    // One timer, for the earliest back-off still to pass.
    int64_t earliest = 0;
    for (auto& s : steps_)
      if (s.status == step_status::backoff && (earliest == 0 || s.retry_at_ms < earliest))
        earliest = s.retry_at_ms;
    if (earliest != 0 && (timer_at_ == 0 || earliest < timer_at_)) {
      timer_at_ = earliest;
      (void)call.schedule(std::chrono::milliseconds(std::max<int64_t>(1, earliest - now_ms() + 1)),
                          "retry");
    }
  }

  bool waiting_for(size_t i) const {
    auto w = waiting_.find(capability_of(i));
    return w != waiting_.end()
      && std::find(w->second.begin(), w->second.end(), i) != w->second.end();
  }

  json status_json(const agent_id& self) const {
    json steps = json::array();
    for (size_t i = 0; i < steps_.size(); ++i) {
      auto& s = steps_[i];
      json x{
        {"id", wf_.steps[i].id},
        {"capability", capability_of(i)},
        {"status", to_text(s.status)},
        {"attempts", s.attempts},
        {"provider", s.provider},
        {"started_ms", s.started_ms},
        {"finished_ms", s.finished_ms},
        {"duration_ms", s.finished_ms > 0 && s.started_ms > 0 ? s.finished_ms - s.started_ms : 0}};
      if (s.status == step_status::done)
        x["output"] = s.output;
      if (!s.error.empty())
        x["error"] = s.error;
      if (s.status == step_status::backoff)
        x["retry_at_ms"] = s.retry_at_ms;
      steps.push_back(std::move(x));
    }
    return {{"id", self.str()},
            {"status", status_},
            {"created_ms", created_ms_},
            {"finished_ms", finished_ms_},
            {"steps", std::move(steps)}};
  }

  struct cached_list {
    std::vector<candidate> list;
    int64_t fetched_ms = 0;
  };

  workflow_def wf_;
  limits lim_;
  // -- journaled state -------------------------------------------------------------------
  std::vector<step_state> steps_;
  std::string status_ = "running";
  bool started_ = false;
  int64_t created_ms_ = 0;
  int64_t finished_ms_ = 0;
  // -- this activation only ----------------------------------------------------------------
  bool woken_ = false;
  /// When the back-off timer this activation set goes off (0: none set).
  int64_t timer_at_ = 0;
  /// Steps whose ask this activation sent and whose reply has not come.
  std::set<size_t> asked_;
  /// Steps waiting for a provider lookup, by capability.
  std::map<std::string, std::vector<size_t>> waiting_;
  std::map<std::string, cached_list> cache_;
  std::map<std::string, uint64_t> inflight_to_;
  std::map<std::string, breaker_state> breakers_;
};

} // namespace

caf::error register_planner_kind(kind_registry& registry, const node_config::planner_section& cfg) {
  limits lim;
  lim.steps_max = static_cast<size_t>(cfg.steps_max);
  lim.parallel_max = static_cast<size_t>(cfg.parallel_steps_max);
  lim.output_bytes_max = static_cast<size_t>(cfg.step_output_bytes_max);
  lim.providers_cache_ms = cfg.providers_cache_ms;
  kind_spec spec{
    "planner",
    "runs one durable workflow (its config): a DAG of steps sent to the least-loaded provider "
    "of each step's capability; {op:status|pause|resume|cancel}",
    [lim](const json& config) -> caf::expected<std::unique_ptr<agent>> {
      auto wf = parse_workflow(config, lim);
      if (!wf)
        return std::move(wf.error());
      return std::unique_ptr<agent>{new planner_agent(std::move(*wf), lim)};
    },
    persistence_mode::journaled};
  spec.resident = true;
  spec.capabilities = {"planner"};
  return registry.add(std::move(spec));
}

} // namespace hive
