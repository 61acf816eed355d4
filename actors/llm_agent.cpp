#include "actors/llm_agent.hpp"

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <algorithm>
#include <cassert>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "actors/circuit_breaker.hpp"
#include "actors/http_exchange.hpp"
#include "protocols/errc.hpp"
#include "runtime/logging.hpp"

namespace hive {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using nlohmann::json;
using std::chrono::milliseconds;

caf::error bad(const std::string& what) {
  return make_error(errc::invalid_argument, what);
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// At most `n` bytes of `s` (for messages that quote a remote answer).
std::string clip(std::string_view s, size_t n = 300) {
  if (s.size() <= n)
    return std::string{s};
  return std::string{s.substr(0, n)} + "...";
}

/// What every llm agent of the node shares: the endpoint, the key and the limits.
struct llm_policy {
  std::optional<llm_url> url;
  /// Set for an https endpoint.
  std::shared_ptr<ssl::context> tls;
  /// Never logged, never in a reply.
  std::string api_key;
  std::string default_model;
  node_config::llm_section cfg;
  node_config::breaker_section breaker;
  /// Endpoint call metrics (null: not counted); the registry owns the families.
  std::shared_ptr<metrics> m;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Histogram* latency = nullptr;
  prometheus::Counter* prompt_tokens = nullptr;
  prometheus::Counter* completion_tokens = nullptr;

  /// Counts one endpoint call that ended with `result` after `seconds`.
  void count(const caf::expected<llm_completion>& result, double seconds) const {
    if (requests == nullptr)
      return;
    requests
      ->Add(
        {{"result", result ? std::string{"ok"} : std::string{to_string(code_of(result.error()))}}})
      .Increment();
    latency->Observe(seconds);
    if (result) {
      prompt_tokens->Increment(static_cast<double>(std::max<int64_t>(0, result->prompt_tokens)));
      completion_tokens->Increment(
        static_cast<double>(std::max<int64_t>(0, result->completion_tokens)));
    }
  }
};

// -- the HTTP exchange --------------------------------------------------------------------------

struct http_answer {
  int status = 0;
  std::string body;
};

/// POSTs `body` to `<base>/chat/completions` within `timeout`. Errors: timeout, unavailable
/// (cannot resolve or connect, connection broken, certificate refused), too_large (answer
/// above llm.reply_bytes_max).
caf::expected<http_answer> post_chat(const llm_policy& p, const std::string& body,
                                     milliseconds timeout) {
  assert(p.url.has_value());
  assert(timeout.count() >= 1);
  auto& url = *p.url;
  asio::io_context ioc;
  beast::error_code ec;
  tcp::resolver resolver{ioc};
  auto endpoints = resolver.resolve(url.host, std::to_string(url.port), ec);
  if (ec)
    return make_error(errc::unavailable,
                      "the llm endpoint's host cannot be resolved: " + ec.message());
  http::request<http::string_body> req{http::verb::post, url.path + "/chat/completions", 11};
  bool v6 = url.host.find(':') != std::string::npos;
  auto host = v6 ? "[" + url.host + "]" : url.host;
  auto default_port = url.tls ? 443 : 80;
  req.set(http::field::host,
          url.port == default_port ? host : host + ":" + std::to_string(url.port));
  req.set(http::field::user_agent, "hive-llm-agent");
  req.set(http::field::content_type, "application/json");
  req.set(http::field::accept, "application/json");
  req.set(http::field::connection, "close");
  if (!p.api_key.empty())
    req.set(http::field::authorization, "Bearer " + p.api_key);
  req.body() = body;
  req.prepare_payload();
  http::response_parser<http::string_body> parser;
  parser.body_limit(static_cast<uint64_t>(p.cfg.reply_bytes_max));
  std::string step = "connect";
  beast::error_code result;
  if (url.tls) {
    assert(p.tls != nullptr);
    beast::ssl_stream<beast::tcp_stream> stream{ioc, *p.tls};
    stream.set_verify_mode(ssl::verify_peer);
    stream.set_verify_callback(ssl::host_name_verification(url.host));
    asio::ip::make_address(url.host, ec);
    if (ec)
      SSL_set_tlsext_host_name(stream.native_handle(), url.host.c_str());
    beast::get_lowest_layer(stream).expires_after(timeout);
    result = run_exchange(ioc, stream, endpoints, req, parser, step);
  } else {
    beast::tcp_stream stream{ioc};
    stream.expires_after(timeout);
    result = run_exchange(ioc, stream, endpoints, req, parser, step);
  }
  if (result == beast::error::timeout)
    return make_error(errc::timeout,
                      "the llm endpoint did not answer within " + std::to_string(timeout.count())
                        + " ms (" + step + "); the connection was closed");
  if (result == http::error::body_limit)
    return make_error(errc::too_large,
                      "the llm endpoint's answer is larger than "
                      "llm.reply_bytes_max ("
                        + std::to_string(p.cfg.reply_bytes_max) + " bytes)");
  if (result)
    return make_error(errc::unavailable,
                      "the llm endpoint cannot be reached (" + step + "): " + result.message());
  auto& res = parser.get();
  return http_answer{static_cast<int>(res.result_int()), std::move(res.body())};
}

// -- llm agent ----------------------------------------------------------------------------------

/// Whether an endpoint error counts against the breaker (the endpoint is down or overloaded,
/// not the request at fault).
bool endpoint_failure(errc code) {
  return code == errc::unavailable || code == errc::timeout;
}

class llm_agent final : public agent {
public:
  llm_agent(std::shared_ptr<const llm_policy> policy, llm_agent_settings settings)
      : policy_(std::move(policy)), settings_(std::move(settings)), breaker_(policy_->breaker) {}

  caf::expected<std::string> handle(call_context& call) override {
    if (call.notice() != nullptr)
      return std::string{"{}"}; // (no asynchronous work of its own)
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    auto& j = **body;
    if (!j.is_object() || !j.contains("op") || !j["op"].is_string())
      return bad("llm: the body needs a field 'op': chat|history|reset");
    auto op = j["op"].get<std::string>();
    if (op == "chat")
      return chat(call, j);
    if (op == "history") {
      json messages = json::array();
      for (auto& m : history_)
        messages.push_back(m);
      return json{{"model", settings_.model},
                  {"system", settings_.system.empty() ? json() : json(settings_.system)},
                  {"messages", std::move(messages)},
                  {"turns", turns_},
                  {"tokens_total", tokens_total_},
                  {"charge_owed", owed_.has_value()}}
        .dump();
    }
    if (op == "reset") {
      auto dropped = history_.size();
      if (auto err = call.emit(json{{"reset", true}}.dump()))
        return err;
      return json{{"reset", true}, {"dropped", dropped}}.dump();
    }
    return bad("unknown op '" + op.substr(0, 40) + "': llm knows chat|history|reset");
  }

  json summary() const override {
    return {{"model", settings_.model},
            {"messages", history_.size()},
            {"turns", turns_},
            {"tokens_total", tokens_total_},
            {"charge_owed", owed_.has_value()},
            {"breaker", breaker_.to_json(caf::actor_clock::clock_type::now())}};
  }

  std::string snapshot() const override {
    json h = json::array();
    for (auto& m : history_)
      h.push_back(m);
    return json{{"history", std::move(h)},
                {"turns", turns_},
                {"tokens_total", tokens_total_},
                {"owed", owed_ ? json{owed_->first, owed_->second} : json{}}}
      .dump();
  }

  caf::error restore(std::string_view state) override {
    history_.clear();
    history_bytes_ = 0;
    turns_ = 0;
    tokens_total_ = 0;
    owed_.reset();
    if (state.empty())
      return {};
    auto j = json::parse(state, nullptr, false);
    if (!j.is_object() || !j.contains("history") || !j["history"].is_array()
        || !j.value("turns", json{}).is_number_unsigned()
        || !j.value("tokens_total", json{}).is_number_unsigned())
      return make_error(errc::corrupt_record, "llm snapshot is not {history,turns,tokens_total}");
    for (auto& m : j["history"]) {
      if (!m.is_object() || !m.value("role", json{}).is_string()
          || !m.value("content", json{}).is_string())
        return make_error(errc::corrupt_record, "llm snapshot holds a bad message");
      push(m["role"].get<std::string>(), m["content"].get<std::string>());
    }
    turns_ = j["turns"].get<uint64_t>();
    tokens_total_ = j["tokens_total"].get<uint64_t>();
    auto& owed = j["owed"];
    if (owed.is_array() && owed.size() == 2 && owed[0].is_number_unsigned()
        && owed[1].is_number_unsigned())
      owed_.emplace(owed[0].get<uint64_t>(), owed[1].get<uint64_t>());
    return {};
  }

  caf::error apply(std::string_view event) override {
    auto j = json::parse(event, nullptr, false);
    if (!j.is_object())
      return make_error(errc::corrupt_record, "llm event is not a JSON object");
    if (j.contains("turn") && j["turn"].is_object()) {
      auto& t = j["turn"];
      if (!t.value("seq", json{}).is_number_unsigned() || !t.value("user", json{}).is_string()
          || !t.value("assistant", json{}).is_string()
          || !t.value("tokens", json{}).is_number_unsigned())
        return make_error(errc::corrupt_record, "llm turn event lacks seq/user/assistant/tokens");
      push("user", t["user"].get<std::string>());
      push("assistant", t["assistant"].get<std::string>());
      trim();
      turns_ = t["seq"].get<uint64_t>();
      auto tokens = t["tokens"].get<uint64_t>();
      tokens_total_ += tokens;
      if (t.value("owed", false))
        owed_.emplace(turns_, tokens);
      return {};
    }
    if (j.contains("charged") && j["charged"].is_number_unsigned()) {
      if (owed_ && owed_->first == j["charged"].get<uint64_t>())
        owed_.reset();
      return {};
    }
    if (j.value("reset", false)) {
      history_.clear();
      history_bytes_ = 0;
      return {};
    }
    return make_error(errc::corrupt_record, "llm event is not a turn, a charge or a reset");
  }

private:
  using clock = caf::actor_clock::clock_type;

  /// Asks the tenant's budget agent (spawning it when missing); the answer's figures.
  caf::expected<json> ask_budget(call_context& call, const json& body, uint64_t seq = 0) {
    auto& self = call.self_id();
    agent_id to{self.tenant, std::string{llm_budget_agent_name}};
    call_context::request r{to, body.dump(), seq == 0 ? std::string{} : self.str(), seq,
                            "token_budget"};
    auto answers = call.ask_now({std::move(r)}, milliseconds{llm_budget_ask_timeout_ms});
    if (!answers)
      return std::move(answers.error());
    assert(answers->size() == 1);
    auto& a = answers->front();
    if (!a) {
      auto code = code_of(a.error());
      if (code == errc::quota_exceeded || code == errc::timeout)
        return std::move(a.error());
      return make_error(errc::unavailable,
                        "the tenant's LLM token budget (" + to.str()
                          + ") cannot be reached: " + describe(a.error()));
    }
    auto j = json::parse(*a, nullptr, false);
    if (!j.is_object() || !j.value("spent", json{}).is_number_integer() || !j.contains("left"))
      return make_error(errc::unavailable,
                        to.str() + " is not a token_budget agent (it answered " + clip(*a, 120)
                          + ")");
    return j;
  }

  /// Pays what an earlier turn still owes the budget (its charge did not get through).
  caf::error settle(call_context& call) {
    assert(owed_.has_value());
    auto [seq, tokens] = *owed_;
    auto r = ask_budget(call, json{{"op", "charge"}, {"tokens", tokens}}, seq);
    if (!r)
      return make_error(code_of(r.error()) == errc::timeout ? errc::timeout : errc::unavailable,
                        "turn " + std::to_string(seq) + "'s " + std::to_string(tokens)
                          + " tokens are not charged to the tenant's budget yet, and charging "
                            "them failed: "
                          + message_of(r.error()));
    return call.emit(json{{"charged", seq}}.dump());
  }

  caf::expected<std::string> chat(call_context& call, const json& j) {
    if (!j.contains("message") || !j["message"].is_string()
        || j["message"].get_ref<const std::string&>().empty())
      return bad("'chat' needs a non-empty string field 'message'");
    for (auto& [k, v] : j.items())
      if (k != "op" && k != "message")
        return bad("'chat' has an unknown field '" + k.substr(0, 40) + "' (op, message)");
    auto& message = j["message"].get_ref<const std::string&>();
    if (message.size() > llm_history_bytes_max / 2)
      return make_error(errc::too_large,
                        "'message' is longer than " + std::to_string(llm_history_bytes_max / 2)
                          + " bytes");
    auto& p = *policy_;
    auto& id = call.self_id();
    auto cid = call.env().correlation_id;
    // Fail fast while the breaker is open (before asking anyone anything).
    breaker_.tick(clock::now());
    if (breaker_.state() == breaker_state::open)
      return open_error();
    bool budgeted = p.cfg.tenant_tokens_max > 0;
    if (budgeted && owed_)
      if (auto err = settle(call))
        return err;
    if (budgeted) {
      auto figures = ask_budget(call, json{{"op", "check"}});
      if (!figures)
        return std::move(figures.error());
    }
    // The endpoint call's timeout: the node's, cut to the caller's deadline.
    auto timeout = milliseconds{p.cfg.request_timeout_ms};
    if (auto deadline = call.env().deadline_unix_ms; deadline != 0) {
      auto left = deadline - unix_ms_now();
      if (left <= 0)
        return make_error(errc::timeout,
                          id.str() + ": the call's deadline passed " + std::to_string(-left)
                            + " ms ago; the llm endpoint is not called");
      timeout = std::min(timeout, milliseconds{left});
    }
    auto ticket = breaker_.try_acquire(clock::now());
    if (!ticket)
      return open_error();
    json messages = json::array();
    size_t request_bytes = message.size();
    if (!settings_.system.empty()) {
      messages.push_back({{"role", "system"}, {"content", settings_.system}});
      request_bytes += settings_.system.size();
    }
    for (auto& m : history_) {
      messages.push_back(m);
      request_bytes += m["content"].get_ref<const std::string&>().size();
    }
    messages.push_back({{"role", "user"}, {"content", message}});
    json req{{"model", settings_.model},
             {"messages", std::move(messages)},
             {"max_tokens", settings_.max_tokens},
             {"stream", false}};
    if (settings_.temperature)
      req["temperature"] = *settings_.temperature;
    auto t0 = clock::now();
    auto completion = call_endpoint(req.dump(), timeout, request_bytes);
    auto elapsed_ms = std::chrono::duration_cast<milliseconds>(clock::now() - t0).count();
    bool failed = !completion && endpoint_failure(code_of(completion.error()));
    breaker_.record(*ticket, failed, clock::now());
    if (!completion) {
      log::event(spdlog::level::warn, "llm_call_failed",
                 {{"endpoint", p.url->str()},
                  {"elapsed_ms", elapsed_ms},
                  {"timeout_ms", timeout.count()},
                  {"reason", describe(completion.error())},
                  {"breaker", to_string(breaker_.state())}},
                 id.str(), cid);
      return std::move(completion.error());
    }
    auto& c = *completion;
    auto seq = turns_ + 1;
    auto tokens = static_cast<uint64_t>(std::max<int64_t>(0, c.total_tokens));
    // One event for the whole turn: a crash never leaves a question without its answer.
    json turn{{"seq", seq},
              {"user", message},
              {"assistant", c.content},
              {"tokens", tokens},
              {"owed", budgeted}};
    if (auto err = call.emit(json{{"turn", std::move(turn)}}.dump()))
      return err;
    json budget_left;
    bool charge_pending = false;
    if (budgeted) {
      // The turn is durable before the charge: a crash in between leaves it owed (settled
      // before the next call), never charged twice (the charge is keyed by the turn).
      if (auto err = call.commit())
        return err;
      auto figures = ask_budget(call, json{{"op", "charge"}, {"tokens", tokens}}, seq);
      if (figures) {
        budget_left = (*figures)["left"];
        if (auto err = call.emit(json{{"charged", seq}}.dump()))
          return err;
      } else {
        charge_pending = true;
        log::event(spdlog::level::warn, "llm_charge_pending",
                   {{"turn", seq}, {"tokens", tokens}, {"reason", describe(figures.error())}},
                   id.str(), cid);
      }
    }
    json out{{"reply", c.content},
             {"tokens",
              {{"prompt", c.prompt_tokens},
               {"completion", c.completion_tokens},
               {"total", c.total_tokens}}},
             {"budget_left", budget_left},
             {"model", settings_.model},
             {"turn", seq}};
    if (c.estimated)
      out["tokens_estimated"] = true;
    if (charge_pending)
      out["charge_pending"] = true;
    return out.dump();
  }

  /// One endpoint call: the HTTP exchange and the answer's status and body.
  caf::expected<llm_completion> call_endpoint(const std::string& body, milliseconds timeout,
                                              size_t request_bytes) {
    auto t0 = clock::now();
    auto result = exchange(body, timeout, request_bytes);
    policy_->count(result, std::chrono::duration<double>(clock::now() - t0).count());
    return result;
  }

  caf::expected<llm_completion> exchange(const std::string& body, milliseconds timeout,
                                         size_t request_bytes) {
    auto answer = post_chat(*policy_, body, timeout);
    if (!answer)
      return std::move(answer.error());
    auto status = answer->status;
    if (status >= 200 && status < 300)
      return parse_chat_completion(answer->body, request_bytes);
    auto what =
      "the llm endpoint answered HTTP " + std::to_string(status) + ": " + clip(answer->body);
    if (status == 408 || status == 429 || status >= 500)
      return make_error(errc::unavailable, what);
    if (status == 401 || status == 403)
      what += " (check the key in the environment variable llm.api_key_env names)";
    return make_error(errc::rejected, what);
  }

  caf::error open_error() const {
    auto now = clock::now();
    return make_error(errc::circuit_open,
                      "the llm endpoint's circuit breaker is open after "
                        + std::to_string(policy_->cfg.breaker_failures)
                        + " consecutive failed calls: calls fail at once; a probe call may go "
                          "through in "
                        + std::to_string(breaker_.retry_after(now).count()) + " ms");
  }

  void push(std::string role, std::string content) {
    history_bytes_ += content.size();
    history_.push_back(json{{"role", std::move(role)}, {"content", std::move(content)}});
  }

  /// Drops the oldest turns (a user message and what follows it up to the next user message)
  /// while the history is above its bounds; the latest turn always stays.
  void trim() {
    auto messages_max = static_cast<size_t>(policy_->cfg.conversation_messages_max);
    while (history_.size() > 2
           && (history_.size() > messages_max || history_bytes_ > llm_history_bytes_max)) {
      do {
        history_bytes_ -= history_.front()["content"].get_ref<const std::string&>().size();
        history_.pop_front();
      } while (history_.size() > 2 && history_.front()["role"] != "user");
    }
  }

  std::shared_ptr<const llm_policy> policy_;
  llm_agent_settings settings_;
  breaker_state_machine breaker_;
  /// The conversation, oldest first: {"role","content"} objects (user and assistant).
  std::deque<json> history_;
  size_t history_bytes_ = 0;
  /// Turns answered so far (the last turn's number; the charge's idempotency key).
  uint64_t turns_ = 0;
  uint64_t tokens_total_ = 0;
  /// A turn whose charge did not get through: its number and tokens.
  std::optional<std::pair<uint64_t, uint64_t>> owed_;
};

// -- token budget -------------------------------------------------------------------------------

class token_budget final : public agent {
public:
  explicit token_budget(int64_t limit) : limit_(limit) {}

  caf::expected<std::string> handle(call_context& call) override {
    if (call.notice() != nullptr)
      return std::string{"{}"};
    auto body = call.json();
    if (!body)
      return std::move(body.error());
    auto& j = **body;
    if (!j.is_object() || !j.contains("op") || !j["op"].is_string())
      return bad("token_budget: the body needs a field 'op': check|charge|status");
    auto op = j["op"].get<std::string>();
    auto& tenant = call.self_id().tenant;
    if (op == "status")
      return figures().dump();
    if (op == "check") {
      if (limit_ > 0 && spent_ >= limit_)
        return make_error(errc::quota_exceeded,
                          "tenant " + tenant
                            + " spent its LLM token budget: " + std::to_string(spent_) + " of "
                            + std::to_string(limit_) + " tokens (llm.tenant_tokens_max)");
      return figures().dump();
    }
    if (op == "charge") {
      json t = j.value("tokens", json{});
      if (!t.is_number_integer() || t.get<int64_t>() < 0
          || t.get<int64_t>() > llm_charge_tokens_max)
        return bad("'charge' needs 'tokens': an integer 0.."
                   + std::to_string(llm_charge_tokens_max));
      if (auto n = t.get<int64_t>(); n > 0)
        if (auto err = call.emit(json{{"charge", n}}.dump()))
          return err;
      return figures().dump();
    }
    return bad("unknown op '" + op.substr(0, 40) + "': token_budget knows check|charge|status");
  }

  json summary() const override {
    return figures();
  }

  std::string snapshot() const override {
    return json{{"spent", spent_}}.dump();
  }

  caf::error restore(std::string_view state) override {
    spent_ = 0;
    if (state.empty())
      return {};
    auto j = json::parse(state, nullptr, false);
    if (!j.is_object() || !j.value("spent", json{}).is_number_integer())
      return make_error(errc::corrupt_record, "token_budget snapshot is not {spent}");
    spent_ = j["spent"].get<int64_t>();
    return {};
  }

  caf::error apply(std::string_view event) override {
    auto j = json::parse(event, nullptr, false);
    if (!j.is_object() || !j.value("charge", json{}).is_number_integer()
        || j["charge"].get<int64_t>() < 0)
      return make_error(errc::corrupt_record, "token_budget event is not {charge}");
    auto n = j["charge"].get<int64_t>();
    spent_ = spent_ > INT64_MAX - n ? INT64_MAX : spent_ + n; // (saturating)
    return {};
  }

private:
  json figures() const {
    if (limit_ == 0)
      return {{"spent", spent_}, {"limit", json{}}, {"left", json{}}};
    return {{"spent", spent_}, {"limit", limit_}, {"left", std::max<int64_t>(0, limit_ - spent_)}};
  }

  int64_t limit_;
  int64_t spent_ = 0;
};

/// The value of environment variable `name`, or "".
std::string env_text(const std::string& name) {
  auto v = std::getenv(name.c_str());
  return v == nullptr ? std::string{} : std::string{v};
}

} // namespace

// -- public functions ---------------------------------------------------------------------------

std::string llm_url::str() const {
  bool v6 = host.find(':') != std::string::npos;
  return std::string{tls ? "https://" : "http://"} + (v6 ? "[" + host + "]" : host) + ":"
    + std::to_string(port) + path;
}

caf::expected<llm_url> parse_llm_url(std::string_view text, std::string_view what) {
  auto fail = [&](const std::string& why) {
    return make_error(errc::invalid_config,
                      std::string{what} + " = '" + std::string{text.substr(0, 200)}
                        + "' is invalid: " + why);
  };
  llm_url u;
  auto rest = text;
  if (rest.rfind("http://", 0) == 0) {
    rest.remove_prefix(7);
  } else if (rest.rfind("https://", 0) == 0) {
    rest.remove_prefix(8);
    u.tls = true;
  } else {
    return fail("it must start with http:// or https://");
  }
  if (text.size() > 2048)
    return fail("longer than 2048 bytes");
  for (char ch : text)
    if (static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f || ch == '?' || ch == '#' || ch == '@'
        || ch == '\\')
      return fail("no spaces, control characters, user info, query or fragment allowed");
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return fail("an IPv6 address needs its closing ']'");
    u.host = std::string{authority.substr(1, close - 1)};
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return fail("unexpected text after ']'");
      port_text = after.substr(1);
      if (port_text.empty())
        return fail("empty port");
    }
  } else {
    auto colon = authority.find(':');
    u.host = std::string{authority.substr(0, colon)};
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty())
        return fail("empty port");
    }
    for (char ch : u.host)
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-'))
        return fail("the host may hold letters, digits, '.' and '-' only");
  }
  if (u.host.empty() || u.host.size() > 253)
    return fail("the host must be 1..253 bytes");
  u.port = u.tls ? 443 : 80;
  if (!port_text.empty()) {
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || port == 0
        || port > 65535)
      return fail("the port must be 1..65535");
    u.port = static_cast<uint16_t>(port);
  }
  while (!path.empty() && path.back() == '/')
    path.remove_suffix(1);
  u.path = std::string{path};
  return u;
}

caf::expected<llm_completion> parse_chat_completion(std::string_view body, size_t request_bytes) {
  auto fail = [&](const std::string& why) {
    return make_error(errc::unavailable,
                      "the llm endpoint's answer is not a chat completion: " + why
                        + " (answer: " + clip(body, 200) + ")");
  };
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail("not a JSON object");
  if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
    return fail("no 'choices'");
  auto& first = j["choices"][0];
  if (!first.is_object() || !first.contains("message") || !first["message"].is_object())
    return fail("no 'choices[0].message'");
  auto& msg = first["message"];
  if (!msg.contains("content") || !msg["content"].is_string())
    return fail("'choices[0].message.content' is not a string");
  llm_completion out;
  out.content = msg["content"].get<std::string>();
  auto read = [](const json& usage, const char* key, int64_t& field) {
    if (!usage.contains(key))
      return true;
    auto& v = usage[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      return false;
    field = v.get<int64_t>();
    return true;
  };
  if (j.contains("usage") && j["usage"].is_object()) {
    auto& u = j["usage"];
    if (!read(u, "prompt_tokens", out.prompt_tokens)
        || !read(u, "completion_tokens", out.completion_tokens)
        || !read(u, "total_tokens", out.total_tokens))
      return fail("a 'usage' figure is not a non-negative integer");
    if (!u.contains("total_tokens"))
      out.total_tokens = out.prompt_tokens + out.completion_tokens;
    return out;
  }
  // No usage: estimated, so a budget still counts something.
  out.estimated = true;
  out.prompt_tokens = static_cast<int64_t>(std::max<size_t>(1, request_bytes / 4));
  out.completion_tokens = static_cast<int64_t>(std::max<size_t>(1, out.content.size() / 4));
  out.total_tokens = out.prompt_tokens + out.completion_tokens;
  return out;
}

caf::expected<llm_agent_settings> parse_llm_agent_config(const json& config,
                                                         const node_config::llm_section& cfg,
                                                         const std::string& default_model) {
  if (!config.is_null() && !config.is_object())
    return bad("llm config must be an object");
  llm_agent_settings s;
  s.model = default_model;
  s.max_tokens = cfg.reply_tokens_max;
  if (config.is_object())
    for (auto& [k, v] : config.items()) {
      if (k == "model") {
        if (!v.is_string() || v.get_ref<const std::string&>().empty()
            || v.get_ref<const std::string&>().size() > 256)
          return bad("llm config field 'model' must be a string of 1..256 bytes");
        s.model = v.get<std::string>();
      } else if (k == "system") {
        if (!v.is_string() || v.get_ref<const std::string&>().size() > llm_system_bytes_max)
          return bad("llm config field 'system' must be a string of at most "
                     + std::to_string(llm_system_bytes_max) + " bytes");
        s.system = v.get<std::string>();
      } else if (k == "max_tokens") {
        if (!v.is_number_integer() || v.get<int64_t>() < 1
            || v.get<int64_t>() > cfg.reply_tokens_max)
          return bad("llm config field 'max_tokens' must be an integer 1.."
                     + std::to_string(cfg.reply_tokens_max) + " (llm.reply_tokens_max)");
        s.max_tokens = v.get<int64_t>();
      } else if (k == "temperature") {
        if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 2)
          return bad("llm config field 'temperature' must be a number 0..2");
        s.temperature = v.get<double>();
      } else if (k == "base_url" || k == "url" || k == "api_key" || k == "api_key_env"
                 || k == "key") {
        return bad("llm config field '" + k
                   + "' is not allowed: the endpoint and its key are the node's (llm.base_url, "
                     "llm.api_key_env)");
      } else {
        return bad("llm config has an unknown field '" + k.substr(0, 40)
                   + "' (model, system, max_tokens, temperature)");
      }
    }
  for (char ch : s.model)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f)
      return bad("llm config field 'model' holds a control character");
  if (s.model.empty())
    return bad("llm config field 'model' is needed: the node has no default model (llm.model, "
               "HIVE_LLM_MODEL)");
  return s;
}

caf::error register_llm_kinds(kind_registry& registry, const node_config::llm_section& cfg,
                              std::shared_ptr<metrics> m) {
  auto policy = std::make_shared<llm_policy>();
  policy->cfg = cfg;
  if (m) {
    using namespace prometheus;
    auto& reg = *m->registry();
    policy->requests = &BuildCounter()
                          .Name("hive_llm_requests_total")
                          .Help("Calls of llm agents to their endpoint, by result (ok or errc)")
                          .Register(reg);
    policy->latency =
      &BuildHistogram()
         .Name("hive_llm_request_seconds")
         .Help("Time of one llm endpoint call (connect to whole answer)")
         .Register(reg)
         .Add({}, Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
    auto& tokens = BuildCounter()
                     .Name("hive_llm_tokens_total")
                     .Help("Tokens llm agents spent, as their endpoint counted them, by type")
                     .Register(reg);
    policy->prompt_tokens = &tokens.Add({{"type", "prompt"}});
    policy->completion_tokens = &tokens.Add({{"type", "completion"}});
    policy->m = std::move(m);
  }
  auto base = cfg.base_url.empty() ? env_text("HIVE_LLM_BASE_URL") : cfg.base_url;
  if (!base.empty()) {
    auto u = parse_llm_url(base, cfg.base_url.empty() ? "HIVE_LLM_BASE_URL" : "llm.base_url");
    if (!u)
      return std::move(u.error());
    policy->url = std::move(*u);
  }
  if (policy->url && policy->url->tls) {
    boost::system::error_code ec;
    policy->tls = std::make_shared<ssl::context>(ssl::context::tls_client);
    policy->tls->set_default_verify_paths(ec);
    if (ec)
      return make_error(errc::invalid_config,
                        "the llm endpoint is https but the system's CA certificates cannot be "
                        "loaded: "
                          + ec.message());
    policy->tls->set_verify_mode(ssl::verify_peer);
  }
  policy->default_model = cfg.model.empty() ? env_text("HIVE_LLM_MODEL") : cfg.model;
  policy->api_key = env_text(cfg.api_key_env);
  auto& b = policy->breaker;
  b.failures_consecutive_max = cfg.breaker_failures;
  // Only consecutive failures open it: the rate rule would need more calls than ever happen.
  b.failure_rate_percent_max = 100;
  b.window_ms = 10000;
  b.window_calls_min = 1000000;
  b.reset_timeout_ms = cfg.breaker_open_ms;
  b.reset_timeout_ms_max = cfg.breaker_open_ms;
  b.half_open_probes = 1;
  b.call_timeout_ms = cfg.request_timeout_ms;
  log::event(spdlog::level::info, "llm_endpoint",
             {{"endpoint", policy->url ? policy->url->str() : std::string{"none"}},
              {"model", policy->default_model},
              {"key_set", !policy->api_key.empty()},
              {"key_env", cfg.api_key_env},
              {"tenant_tokens_max", cfg.tenant_tokens_max}});
  std::shared_ptr<const llm_policy> shared = policy;
  kind_spec llm{"llm",
                "a conversation with a model behind an OpenAI-compatible endpoint: "
                "{op:chat,message} | {op:history} | {op:reset}",
                [shared](const json& config) -> caf::expected<std::unique_ptr<agent>> {
                  auto s = parse_llm_agent_config(config, shared->cfg, shared->default_model);
                  if (!s)
                    return std::move(s.error());
                  if (!shared->url)
                    return make_error(errc::invalid_config,
                                      "this node has no llm endpoint: set llm.base_url or "
                                      "HIVE_LLM_BASE_URL");
                  return std::unique_ptr<agent>{new llm_agent(shared, std::move(*s))};
                },
                persistence_mode::journaled};
  llm.blocking = true;
  llm.capabilities = {"llm"};
  if (auto err = registry.add(std::move(llm)))
    return err;
  auto limit = cfg.tenant_tokens_max;
  kind_spec budget{"token_budget",
                   "a tenant's LLM token budget (llm.tenant_tokens_max), at TENANT/llm-budget: "
                   "{op:check} | {op:charge,tokens} | {op:status}",
                   [limit](const json& config) -> caf::expected<std::unique_ptr<agent>> {
                     if (!config.is_null() && !(config.is_object() && config.empty()))
                       return bad("token_budget takes no config: its limit is the node's "
                                  "llm.tenant_tokens_max");
                     return std::unique_ptr<agent>{new token_budget(limit)};
                   },
                   persistence_mode::journaled};
  budget.capabilities = {"token_budget"};
  return registry.add(std::move(budget));
}

} // namespace hive
