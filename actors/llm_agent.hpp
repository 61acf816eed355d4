#pragma once

// The `llm` agent kind: a conversation with a model behind an OpenAI-compatible API, and the
// `token_budget` kind that counts what a tenant's llm agents spend.
//
// llm (journaled, blocking: one thread per agent; it waits for the endpoint synchronously)
//
//   Spawn config (every field optional; anything else is refused naming the field):
//     {"model": "NAME",          (default llm.model, else HIVE_LLM_MODEL; one of them needed)
//      "system": "PROMPT",       (sent first in every request; at most 64 KiB)
//      "max_tokens": N,          (1..llm.reply_tokens_max, default llm.reply_tokens_max)
//      "temperature": X}         (0..2; not sent when absent)
//   The endpoint (llm.base_url) and the key (the variable llm.api_key_env names) are the
//   node's: a tenant cannot point its agent anywhere else.
//
//   Calls (ask bodies):
//     {"op":"chat","message":"..."}  appends the user turn, POSTs {model, messages: [system?,
//        ...history], max_tokens, temperature?} to <base_url>/chat/completions, answers
//        {"reply","tokens":{"prompt","completion","total"},"budget_left","model"}.
//     {"op":"history"}  {"system","messages":[{"role","content"}...],"turns","tokens_total"}
//     {"op":"reset"}    forgets the conversation (journaled), answers {"reset":true,"dropped":N}
//
//   A turn (the user message and the answer) is one journaled event, emitted only after the
//   endpoint answered well: a failed call leaves nothing, a crash never leaves half a turn.
//   Errors: invalid_argument (bad call), quota_exceeded (the tenant's budget is spent),
//   circuit_open (the agent's breaker is open: nothing is sent), timeout (the endpoint did not
//   answer within llm.request_timeout_ms or before the call's deadline: the connection is
//   closed then), unavailable (cannot connect; HTTP 408/429/5xx; unreadable answer), rejected
//   (other HTTP 4xx, e.g. a refused key), too_large (answer above llm.reply_bytes_max).
//
//   Breaker (per agent, not journaled): llm.breaker_failures consecutive failed endpoint calls
//   (unavailable or timeout above) open it; for llm.breaker_open_ms every chat fails at once;
//   then one probe goes through: success closes it, failure opens it again.
//
// token_budget (journaled, not blocking), one per tenant at TENANT/llm-budget, spawned by the
//   runtime on first use (call_context::request::ensure_kind). Its limit is the node's
//   llm.tenant_tokens_max (its spawn config must be empty: a tenant cannot raise it).
//     {"op":"check"}             {"spent","limit","left"} or quota_exceeded once spent >= limit
//     {"op":"charge","tokens":N} adds N (an event; send it keyed: a retry counts once)
//     {"op":"status"}            the figures, never refusing
//
//   An llm agent asks `check` before every endpoint call and `charge` (keyed: client_id = its
//   id, client_seq = its turn number) after every answered one. The turn is made durable
//   before the charge (call_context::commit); a charge that does not get through is kept as
//   owed in the journal and settled before the next call, so every answered turn is counted
//   exactly once, also across crashes. Agents of one tenant that check at the same time may
//   overshoot the budget by their calls in flight; the call that crosses it completes.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "runtime/kind.hpp"
#include "runtime/metrics.hpp"

namespace hive {

/// The name of each tenant's budget agent (`TENANT/llm-budget`).
inline constexpr std::string_view llm_budget_agent_name = "llm-budget";

/// The most bytes of conversation text (user and assistant messages) an llm agent keeps, so
/// its snapshot stays below storage.record_bytes_max; the oldest turns are dropped first.
inline constexpr size_t llm_history_bytes_max = size_t{2} << 20;

/// The most bytes of a system prompt in a spawn config.
inline constexpr size_t llm_system_bytes_max = size_t{64} << 10;

/// How long an llm agent waits for its tenant's budget agent (cut to the call's deadline).
inline constexpr int64_t llm_budget_ask_timeout_ms = 5000;

/// The most tokens one `charge` may add.
inline constexpr int64_t llm_charge_tokens_max = int64_t{1} << 40;

/// The parts of an endpoint base URL (`llm.base_url`).
struct llm_url {
  /// `https://`: TLS with the server's certificate checked (system CA store, host name).
  bool tls = false;
  /// Host name or address (IPv6 without brackets).
  std::string host;
  /// Port (default 80 / 443).
  uint16_t port = 0;
  /// Path prefix without a trailing '/', e.g. `/v1` (may be empty).
  std::string path;

  /// `http[s]://host:port/path`.
  [[nodiscard]] std::string str() const;
};

/// Parses `http[s]://HOST[:PORT][/PATH]`; an `invalid_config` error names `what` and the
/// problem.
[[nodiscard]] caf::expected<llm_url> parse_llm_url(std::string_view text, std::string_view what);

/// What one chat completion answered.
struct llm_completion {
  /// `choices[0].message.content`.
  std::string content;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t total_tokens = 0;
  /// The answer had no `usage`: the figures are estimated (4 bytes a token, at least 1).
  bool estimated = false;
};

/// Parses a `/chat/completions` response body (OpenAI's format). `request_bytes` (the bytes of
/// the messages sent) feeds the estimate when `usage` is missing. Errors (`unavailable`) name
/// what is missing or malformed.
[[nodiscard]] caf::expected<llm_completion> parse_chat_completion(std::string_view body,
                                                                  size_t request_bytes);

/// The settings of one llm agent: its spawn config checked against the node's `llm.*`.
struct llm_agent_settings {
  std::string model;
  std::string system;
  int64_t max_tokens = 0;
  std::optional<double> temperature;
};

/// Checks an llm spawn config (null or an object) against `cfg`; `default_model` is what the
/// node resolved for `llm.model`. Errors are `invalid_argument` naming the field.
[[nodiscard]] caf::expected<llm_agent_settings> parse_llm_agent_config(
  const nlohmann::json& config, const node_config::llm_section& cfg,
  const std::string& default_model);

/// Registers the `llm` and `token_budget` kinds with the node's `llm` settings. The base URL,
/// model and key are read from the environment here (once) where the config leaves them
/// empty. With `m`, every endpoint call is counted in `m`'s registry:
/// `hive_llm_requests_total{result}` (`ok` or the errc name of the failure),
/// `hive_llm_request_seconds` and `hive_llm_tokens_total{type}` (`prompt`, `completion`).
/// Errors: invalid_config (a malformed HIVE_LLM_BASE_URL, or an https endpoint whose TLS
/// context cannot be set up).
[[nodiscard]] caf::error register_llm_kinds(kind_registry& registry,
                                            const node_config::llm_section& cfg,
                                            std::shared_ptr<metrics> m = nullptr);

} // namespace hive
