#include "runtime/agent_actor.hpp"

#include <cassert>
#include <chrono>

#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/logging.hpp"

namespace hive {

namespace {

struct agent_actor_state {
  agent_actor_config cfg;
  std::shared_ptr<agent> instance;
  kind_metrics* km = nullptr;
  uint64_t handled = 0;
  /// Messages handled but not yet added to the shared counter (flushed in batches).
  uint64_t unflushed = 0;

  static inline const char* name = "hive.agent";
};

using agent_actor_type = caf::stateful_actor<agent_actor_state>;

/// Batch size of counter updates: the shared Prometheus counter is an atomic that every agent
/// of a kind touches, so each agent adds its count in batches (and whenever it goes idle).
/// Flushing whenever the mailbox was empty cost ~10% of the tell path (bench/RESULTS.md).
constexpr uint64_t flush_every = 256;

using flush_atom = caf::atom_constant<caf::atom("flush")>;

/// One message in this many is timed for `hive_message_handling_seconds`.
constexpr uint64_t time_every = 8;

void flush(agent_actor_type* self) {
  auto& st = self->state;
  if (st.unflushed > 0 && st.km != nullptr) {
    st.km->messages_handled->Increment(static_cast<double>(st.unflushed));
    st.unflushed = 0;
  }
}

caf::behavior agent_actor_fn(agent_actor_type* self, agent_actor_config cfg,
                             std::shared_ptr<agent> instance) {
  assert(instance != nullptr);
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.instance = std::move(instance);
  if (st.cfg.metrics) {
    st.km = &st.cfg.metrics->for_kind(st.cfg.kind);
    st.cfg.metrics->agents_live_add(1);
  }
  self->attach_functor([m = st.cfg.metrics](const caf::error&) {
    if (m)
      m->agents_live_add(-1);
  });
  return {
    [self](const agent_call& call) {
      // Tells need no answer: only a request gets a response promise (and the message that
      // carries the reply), which keeps the tell path free of that allocation.
      auto& st = self->state;
      bool is_request = self->current_mailbox_element()->mid.is_request();
      auto answer = [&](caf::expected<std::string> result) {
        if (!is_request)
          return;
        auto rp = self->make_response_promise();
        if (result)
          rp.deliver(agent_reply{std::move(*result)});
        else
          rp.deliver(std::move(result.error()));
      };
      if (call.env.deadline_unix_ms != 0) {
        auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
        if (now_ms > call.env.deadline_unix_ms)
          return answer(make_error(errc::timeout,
                                   st.cfg.id.str() + ": the call's deadline passed "
                                     + std::to_string(now_ms - call.env.deadline_unix_ms)
                                     + " ms before it was handled; not handled"));
      }
      // Latency is sampled (one message in `time_every`): reading the clock twice per message
      // cost ~6% of the tell path.
      bool timed = st.km != nullptr && st.handled % time_every == 0;
      std::chrono::steady_clock::time_point t0;
      if (timed)
        t0 = std::chrono::steady_clock::now();
      call_context ctx{st.cfg.id, call.env, call.body, st.cfg.json_depth_max};
      caf::expected<std::string> result{std::string{}};
      try {
        result = st.instance->handle(ctx);
      } catch (const std::exception& e) {
        result = make_error(errc::agent_failed, st.cfg.id.str() + " crashed: " + e.what());
      } catch (...) {
        result = make_error(errc::agent_failed, st.cfg.id.str() + " crashed");
      }
      ++st.handled;
      ++st.unflushed;
      if (timed) {
        auto dt = std::chrono::steady_clock::now() - t0;
        st.km->handling->Observe(std::chrono::duration<double>(dt).count());
      }
      // Counter updates go out in batches: after flush_every messages, or when the messages
      // queued behind this one are done (the flush message goes to the back of the mailbox),
      // so an idle agent's count is exact.
      if (st.unflushed >= flush_every)
        flush(self);
      else if (st.unflushed == 1)
        self->send(self, flush_atom::value);
      if (!result && code_of(result.error()) == errc::agent_failed) {
        // A crash: answer the caller, then die so the supervisor restarts a fresh instance.
        if (st.km != nullptr)
          st.km->failures->Increment();
        log::event(spdlog::level::warn, "agent_crashed",
                   {{"kind", st.cfg.kind}, {"reason", message_of(result.error())}}, st.cfg.id.str(),
                   call.env.correlation_id);
        flush(self);
        auto reason = result.error();
        answer(std::move(result));
        self->quit(std::move(reason));
        return;
      }
      answer(std::move(result));
    },
    [self](flush_atom) { flush(self); },
    [self](const inspect_request&) -> agent_reply {
      auto& st = self->state;
      flush(self);
      nlohmann::json out{{"summary", st.instance->summary()},
                         {"mailbox_size", self->mailbox().size()},
                         {"handled", st.handled}};
      return agent_reply{out.dump()};
    },
  };
}

} // namespace

caf::actor spawn_agent_actor(caf::actor_system& sys, agent_actor_config cfg,
                             std::shared_ptr<agent> instance) {
  return sys.spawn(agent_actor_fn, std::move(cfg), std::move(instance));
}

} // namespace hive
