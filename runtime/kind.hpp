#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/agent_id.hpp"
#include "protocols/messages.hpp"
#include "runtime/capabilities.hpp"

namespace hive {

class node_runtime;
class agent;

/// How an agent kind's state survives its activation (chosen per kind).
enum class persistence_mode : uint8_t {
  /// Lost when the activation ends (a restart starts from the kind's initial state).
  ephemeral,
  /// Snapshotted every `persistence.snapshot_every_messages` messages or
  /// `persistence.snapshot_interval_ms`, and at passivation and node stop. A crash loses what
  /// changed since the last snapshot; replies do not wait for storage.
  snapshot,
  /// Every state-changing event is journaled durably before the reply is sent; recovery is
  /// the latest snapshot plus the events after it. Nothing acknowledged is ever lost.
  journaled,
};

/// "ephemeral" | "snapshot" | "journaled".
[[nodiscard]] std::string_view to_string(persistence_mode x) noexcept;

/// What an agent sees of the call it is handling. The JSON body is parsed lazily: kinds that
/// pass the body through (echo) never pay for parsing.
class call_context {
public:
  call_context(const agent_id& self_id, const envelope& env, const std::string& body,
               size_t json_depth_max, const caf::message& content = empty_content())
      : self_id_(self_id), env_(env), body_(body), content_(content),
        json_depth_max_(json_depth_max) {}

  /// A typed call's message (`agent_call::content`); empty for a JSON call.
  [[nodiscard]] const caf::message& content() const noexcept {
    return content_;
  }

  /// The id of the agent handling the call.
  [[nodiscard]] const agent_id& self_id() const noexcept {
    return self_id_;
  }

  /// The envelope: correlation id, tenant, deadline, sender.
  [[nodiscard]] const envelope& env() const noexcept {
    return env_;
  }

  /// The raw JSON text of the body.
  [[nodiscard]] const std::string& body_text() const noexcept {
    return body_;
  }

  /// The parsed body; an `invalid_argument` error names the parse problem.
  [[nodiscard]] caf::expected<const nlohmann::json*> json();

  /// Journaled kinds: records one state-changing event. The runtime applies it at once (it
  /// calls `agent::apply`, so state changes only through events, the same way as on replay)
  /// and journals it durably before the reply to this call is sent. Returns apply's error.
  /// Other kinds: applies the event without journaling it.
  [[nodiscard]] caf::error emit(std::string event);

  /// Journaled kinds marked `kind_spec::blocking`: makes the events emitted so far durable
  /// now, before the call goes on (an intent recorded before an effect outside the agent,
  /// such as running a tool), blocking the agent's thread until the store has synced them.
  /// Errors: the store's (nothing after the failed event is durable), or `internal` for a
  /// kind that is not blocking and journaled.
  [[nodiscard]] caf::error commit();

  /// Set by the runtime before `handle` (blocking journaled kinds): what `commit` calls.
  void set_committer(std::function<caf::error(std::vector<std::string>&)> f) {
    committer_ = std::move(f);
  }

  /// Sends `body` (JSON text) one way to the agent `to` of the same tenant, wherever it lives
  /// in the cluster (like Erlang's `!` from inside a process). The message goes out only if
  /// this call succeeds, after its reply is released: for journaled kinds once this call's
  /// events are durable, so a crash never leaks a message about state that was lost. It
  /// carries this call's correlation id and this agent's id as sender. At most
  /// `outbox_messages_max` per call. Errors: invalid_argument (another tenant), too_large.
  [[nodiscard]] caf::error send(const agent_id& to, std::string body);

  /// Like `send`, with a typed message (CAF values of registered types, e.g.
  /// `caf::make_message(add_request{5})`) instead of a JSON body.
  [[nodiscard]] caf::error send(const agent_id& to, caf::message content);

  /// Asks agent `to` (same tenant, anywhere in the cluster) with `body`, without waiting: the
  /// ask goes out when this call succeeds (after its events are durable, like `send`), and its
  /// reply or failure comes back later as a call to this agent whose `notice()` is a `reply`
  /// with `tag` (code 0 and the reply's JSON, or the error's code and message). `timeout` is
  /// cut to this call's deadline, which the ask carries on (deadlines propagate). `client_id`
  /// non-empty: the ask carries that idempotency key (`client_seq`), so a journaled target
  /// handles it once however often it is re-sent. `ensure_kind` non-empty: a target that does
  /// not exist is spawned with that kind (empty config) and asked once more. Errors: those of
  /// `send`, invalid_argument (timeout not in 1 ms..1 h).
  [[nodiscard]] caf::error ask(const agent_id& to, std::string body,
                               std::chrono::milliseconds timeout, std::string tag,
                               std::string client_id = {}, uint64_t client_seq = 0,
                               std::string ensure_kind = {});

  /// One ask of `ask_now`: the target (same tenant), the JSON body, an optional
  /// idempotency key (`client_id` non-empty), and an optional kind: when `ensure_kind` is
  /// set and the target does not exist, the runtime spawns it with that kind (empty config,
  /// placed like any spawn) and asks again once.
  struct request {
    agent_id to = {};
    std::string body = {};
    std::string client_id = {};
    uint64_t client_seq = 0;
    std::string ensure_kind = {};
  };

  /// Blocking kinds only (`kind_spec::blocking`): sends every ask of `requests` at once (they
  /// run in parallel, anywhere in the cluster) and waits for all their answers, each at most
  /// `timeout`, cut to this call's deadline, which the asks carry on (deadlines propagate).
  /// Answer i is request i's reply JSON or its error. Unlike `ask`, these asks leave now,
  /// before the events of this call are durable: call `commit` first where a target must not
  /// learn of state that a crash could still lose. Errors of the whole call: internal (not a
  /// blocking kind), invalid_argument (timeout not in 1 ms..1 h, another tenant, the agent
  /// itself, which would wait for its own reply), too_large (more than outbox_messages_max).
  [[nodiscard]] caf::expected<std::vector<caf::expected<std::string>>> ask_now(
    std::vector<request> requests, std::chrono::milliseconds timeout);

  /// What `ask_now` calls (set by the runtime for blocking kinds): sends the asks with the
  /// timeout (already cut to the deadline) and returns their answers in order.
  using waiter_fn = std::function<std::vector<caf::expected<std::string>>(
    std::vector<request>&, std::chrono::milliseconds)>;

  /// Set by the runtime before `handle` (blocking kinds): what `ask_now` calls.
  void set_waiter(waiter_fn f) {
    waiter_ = std::move(f);
  }

  /// Sets a timer: after `delay` (0..24 h) this agent gets a call whose `notice()` is a
  /// `timer` with `tag` (set when this call succeeds; lost if the activation ends first, so
  /// a resident kind re-arms its timers when it wakes).
  [[nodiscard]] caf::error schedule(std::chrono::milliseconds delay, std::string tag);

  /// Looks up the providers of `capability` in this agent's tenant, cluster-wide, least
  /// loaded first (at most `limit`); the answer comes back as a `providers` notice with `tag`.
  [[nodiscard]] caf::error find_providers(std::string capability, std::string tag,
                                          size_t limit = 64);

  /// Sends `body` (JSON text) one way to every provider of `capability` in this agent's
  /// tenant, cluster-wide, that passes `filter` (never to this agent itself; passivated
  /// providers are activated by it unless the filter asks for active ones), when this call
  /// succeeds (like `send`). Who got it comes back as a `broadcast` notice with `tag`, whose
  /// body is `{"capability","sent_to":[ids],"nodes_failed":[...]}`. At most
  /// `filter.limit` recipients, least loaded first. Errors: invalid_argument (capability
  /// name), those of `send`.
  [[nodiscard]] caf::error broadcast(std::string capability, std::string body,
                                     broadcast_filter filter = {}, std::string tag = {});

  /// Publishes `{type, detail}` on the node's event stream (`GET /v1/events`) for this agent
  /// when this call succeeds (for journaled kinds once its events are durable). `type` is
  /// 1..64 bytes.
  [[nodiscard]] caf::error publish(std::string type, nlohmann::json detail);

  /// Non-null when this call is the runtime telling the agent about its own asynchronous work
  /// (protocols/messages.hpp `agent_notice`): an ask's reply, a timer, a provider lookup, or
  /// the wake-up of a resident kind's activation.
  [[nodiscard]] const agent_notice* notice() const noexcept {
    if (content_.match_elements<agent_notice>())
      return &content_.get_as<agent_notice>(0);
    return nullptr;
  }

  /// One message `send`, `ask`, `schedule` or `find_providers` queued.
  struct outgoing {
    enum type_t : uint8_t { tell, ask, timer, lookup, event, broadcast };
    agent_id to;
    std::string body;
    caf::message content;
    type_t type = tell;
    /// ask: the timeout (already cut to the call's deadline); timer: the delay.
    std::chrono::milliseconds after{0};
    /// ask, timer, lookup: the tag of the notice; lookup: the capability is `body`; event: the
    /// type (and `body` the detail).
    std::string tag;
    std::string client_id;
    uint64_t client_seq = 0;
    size_t limit = 0;
    /// ask: spawn the target with this kind if it does not exist.
    std::string ensure_kind = {};
    /// broadcast: the capability and the filter.
    std::string capability = {};
    std::shared_ptr<const broadcast_filter> filter = {};
  };

  /// Messages `send` queued by this call, in order.
  [[nodiscard]] std::vector<outgoing>& outbox() noexcept {
    return outbox_;
  }

  /// The most messages one call may send.
  static constexpr size_t outbox_messages_max = 1024;

  /// Events emitted by this call, in order.
  [[nodiscard]] std::vector<std::string>& events() noexcept {
    return events_;
  }

  /// Set by the runtime before `handle`: the agent that `emit` applies events to.
  void bind(agent* target) noexcept {
    target_ = target;
  }

private:
  static const caf::message& empty_content() {
    static const caf::message none;
    return none;
  }

  caf::error check_send(const agent_id& to) const;
  static caf::error check_timeout(std::chrono::milliseconds timeout);
  /// `timeout`, at most the time left until this call's deadline (at least 1 ms).
  [[nodiscard]] std::chrono::milliseconds cut_to_deadline(std::chrono::milliseconds timeout) const;

  const agent_id& self_id_;
  const envelope& env_;
  const std::string& body_;
  const caf::message& content_;
  size_t json_depth_max_;
  std::optional<nlohmann::json> parsed_;
  agent* target_ = nullptr;
  std::vector<std::string> events_;
  std::vector<outgoing> outbox_;
  std::function<caf::error(std::vector<std::string>&)> committer_;
  waiter_fn waiter_;
};

/// An agent's behaviour. The runtime owns one instance per activation inside a CAF actor and
/// calls it one message at a time, so an agent needs no locking.
///
/// Failure model (as in Erlang): returning an error answers the caller with it and the agent
/// keeps running; throwing an exception crashes the agent: callers get `agent_failed` and its
/// supervisor restarts it with a fresh instance from its kind.
class agent {
public:
  virtual ~agent() = default;

  /// Handles one call. The returned JSON text is the reply to an ask (ignored for a tell).
  [[nodiscard]] virtual caf::expected<std::string> handle(call_context& call) = 0;

  /// A small JSON summary of the state, shown when the agent is inspected.
  [[nodiscard]] virtual nlohmann::json summary() const {
    return nlohmann::json::object();
  }

  /// Snapshot and journaled kinds: the whole state as bytes (any format the kind reads back
  /// in `restore`).
  [[nodiscard]] virtual std::string snapshot() const {
    return {};
  }

  /// Snapshot and journaled kinds: replaces the state with one made by `snapshot`. An error
  /// fails the activation (the record is never served as state).
  [[nodiscard]] virtual caf::error restore(std::string_view state) {
    (void)state;
    return {};
  }

  /// Journaled kinds: applies one event (from `call_context::emit` or on replay). Must be
  /// deterministic and must not fail for an event this kind emitted.
  [[nodiscard]] virtual caf::error apply(std::string_view event) {
    (void)event;
    return {};
  }
};

/// A registered agent kind: a name and a factory that validates a JSON config and makes a
/// fresh agent (called at spawn and at every restart).
struct kind_spec {
  std::string name;
  std::string description;
  std::function<caf::expected<std::unique_ptr<agent>>(const nlohmann::json& config)> make;
  /// How its agents' state survives (needs a node with a store; otherwise ephemeral).
  persistence_mode persistence = persistence_mode::ephemeral;
  /// Its calls may block for long (a tool runner waits for a child process): each agent gets
  /// its own thread instead of sharing the scheduler's workers, and journaled ones may use
  /// `call_context::commit`. Costs a thread per live agent: keep such agents few.
  bool blocking = false;
  /// Capabilities its agents offer when their creator declares none.
  std::vector<std::string> capabilities = {};
  /// Its agents carry on work by themselves (a planner running a workflow): every activation
  /// gets a `wake` notice first, and the runtime activates them without a call after a
  /// restart of their node (single node), when their node comes up in a cluster, and on the
  /// survivor that takes over their replica set when their host goes down. An agent with
  /// asks or timers outstanding is not passivated. Journaled kinds only.
  bool resident = false;
};

/// The kinds a node can spawn, registered at start-up (not thread-safe to modify afterwards).
class kind_registry {
public:
  /// Registers `spec`; an error if the name is taken or invalid.
  [[nodiscard]] caf::error add(kind_spec spec);

  /// Returns the kind called `name`, or nullptr.
  [[nodiscard]] const kind_spec* find(std::string_view name) const;

  /// Names of all kinds, sorted.
  [[nodiscard]] std::vector<std::string> names() const;

private:
  std::map<std::string, kind_spec, std::less<>> kinds_;
};

} // namespace hive
