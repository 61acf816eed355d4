#pragma once

#include <memory>
#include <string>

#include <caf/all.hpp>

#include "protocols/agent_id.hpp"
#include "runtime/kind.hpp"
#include "runtime/metrics.hpp"

namespace hive {

/// What an agent actor needs besides its behaviour instance.
struct agent_actor_config {
  agent_id id;
  std::string kind;
  /// Limit on the nesting of JSON bodies parsed for this agent.
  size_t json_depth_max = 32;
  std::shared_ptr<hive::metrics> metrics;
};

/// Spawns the CAF actor that hosts one activation of an agent: it feeds `agent_call`s to the
/// instance one at a time, answers asks with `agent_reply` or an error, answers
/// `inspect_request` with `{"summary":..., "mailbox_size":N, "handled":N}`, refuses (with
/// `timeout`, without handling it) a call whose envelope deadline has passed, counts every
/// message (`hive_messages_handled_total`, batched) and times one in eight
/// (`hive_message_handling_seconds`), and quits with `agent_failed` when the instance throws,
/// so its supervisor restarts it.
[[nodiscard]] caf::actor spawn_agent_actor(caf::actor_system& sys, agent_actor_config cfg,
                                           std::shared_ptr<agent> instance);

} // namespace hive
