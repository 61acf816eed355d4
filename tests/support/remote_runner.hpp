#pragma once

// A stand-in for a target node's manager in in-process migration tests: the actor a source's
// forwarder sends the calls of a moved agent to (`remote_call`s), run on the target runtime.

#include <chrono>
#include <string>

#include <caf/all.hpp>

#include "protocols/cluster.hpp"
#include "runtime/node_runtime.hpp"

namespace hive::test {

/// Spawns an actor that runs each `remote_call` it gets (tell, else ask) on `rt` and answers
/// with an `agent_reply` or the error. `rt` must outlive it.
inline caf::actor spawn_remote_runner(caf::actor_system& sys, node_runtime* rt) {
  return sys.spawn(
    [rt](caf::event_based_actor* self, int) -> caf::behavior {
      return {[self, rt](remote_call& req) {
        auto rp = self->make_response_promise();
        auto done = [rp](caf::expected<std::string> r) mutable {
          if (r)
            rp.deliver(agent_reply{std::move(*r)});
          else
            rp.deliver(std::move(r.error()));
        };
        if (req.op == "tell") {
          if (auto err = rt->tell(req.id, req.call))
            return done(std::move(err));
          return done(std::string{"{}"});
        }
        rt->ask(req.id, std::move(req.call), std::chrono::milliseconds(req.timeout_ms),
                std::move(done));
      }};
    },
    0); // (the int: UBSan flags argument-less function-actor spawns in CAF 0.17)
}

} // namespace hive::test
