#pragma once

// The `hive` type-ID block: every type that travels in a CAF message. Register on every node
// with `cfg.add_message_types<caf::id_block::hive>()` (runtime/bootstrap does it). Append new
// types at the end only: ids are positional.

#include <caf/all.hpp>

#include "protocols/agent_id.hpp"
#include "protocols/cluster.hpp"
#include "protocols/messages.hpp"

CAF_BEGIN_TYPE_ID_BLOCK(hive, caf::first_custom_type_id)

  CAF_ADD_TYPE_ID(hive, (hive::agent_id))
  CAF_ADD_TYPE_ID(hive, (hive::envelope))
  CAF_ADD_TYPE_ID(hive, (hive::agent_call))
  CAF_ADD_TYPE_ID(hive, (hive::agent_reply))
  CAF_ADD_TYPE_ID(hive, (hive::inspect_request))
  CAF_ADD_TYPE_ID(hive, (hive::member_info))
  CAF_ADD_TYPE_ID(hive, (std::vector<hive::member_info>))
  CAF_ADD_TYPE_ID(hive, (hive::join_request))
  CAF_ADD_TYPE_ID(hive, (hive::join_reply))
  CAF_ADD_TYPE_ID(hive, (hive::member_gossip))
  CAF_ADD_TYPE_ID(hive, (hive::remote_call))
  CAF_ADD_TYPE_ID(hive, (hive::remote_spawn))
  CAF_ADD_TYPE_ID(hive, (hive::migrate_in))
  CAF_ADD_TYPE_ID(hive, (hive::add_request))
  CAF_ADD_TYPE_ID(hive, (hive::key_sync))
  CAF_ADD_TYPE_ID(hive, (hive::agent_notice))

CAF_END_TYPE_ID_BLOCK(hive)
