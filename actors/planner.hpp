#pragma once

// The `planner` agent kind: one agent runs one durable workflow (its spawn config), a DAG of
// steps each sent to an agent that offers the step's capability.
//
// Workflow (the spawn config, also the body of `POST /v1/workflows`):
//
//   {"steps": [{"id": "fetch",                  (1..64 of [A-Za-z0-9_-], unique)
//               "capability": "web",             (who can do it: GET /v1/capabilities/web)
//               "input": {"url": "x", "n": "${plan.output.count}"},
//                                                (the body sent; "${STEP.output[.path]}"
//                                                 names an earlier step's output, which must
//                                                 be among this step's dependencies)
//               "depends_on": ["plan"],          (steps that must be done (or skipped) first)
//               "timeout_ms": 30000,             (per attempt, 1..3600000)
//               "retries": 2,                    (attempts after the first, 0..100)
//               "backoff_ms": 100,               (before retry k: backoff_ms * 2^(k-1) ...)
//               "backoff_max_ms": 10000,         (... at most this)
//               "on_failure": "fail",            (once retries are spent: fail the workflow |
//                                                 skip the step | fallback to ...)
//               "fallback": "web-cache"}],       (... this capability, with fresh retries)
//    "parallel_max": 64,                         (steps in flight at once, <= the node's)
//    "breaker": {"failures": 3, "open_ms": 5000}} (per provider: after this many failures in a
//                                                 row it gets no step for open_ms, then one)
//
// A cycle is refused naming an edge of it, as are unknown dependencies and references to
// steps that are not dependencies.
//
// Calls: `{"op":"status"}` -> `{"id","status","created_ms","finished_ms","steps":[{"id",
// "capability","status","attempts","provider","started_ms","finished_ms","duration_ms",
// "output","error"}]}` (workflow status running | paused | succeeded | failed | cancelled;
// step status pending | running | backoff | done | skipped | failed | cancelled);
// `{"op":"pause"}` (no new dispatches; running steps finish), `{"op":"resume"}`,
// `{"op":"cancel"}`.
//
// Durability: the kind is journaled and resident: each dispatch is journaled before its ask
// goes out and each result before it counts, and after a crash, restart or failover the
// workflow's new activation asks again for every step that was running, with the same
// idempotency key (client `wf:TENANT/NAME/STEP`, seq 1: the same on every attempt) and to
// the same provider, so a journaled provider applies a step's effect once. A retry goes to
// the same provider when it is still offered with a closed breaker; moved to another provider
// (breaker open, fallback), a timed-out attempt's effect may happen twice.
//
// Progress goes to the event stream: `workflow_step` ({step, status, attempt, provider,
// error}) and `workflow_finished` ({status}).

#include <cstdint>

#include "config/node_config.hpp"
#include "runtime/kind.hpp"

namespace hive {

/// Registers the `planner` kind with the node's `planner.*` limits.
[[nodiscard]] caf::error register_planner_kind(kind_registry& registry,
                                               const node_config::planner_section& cfg);

} // namespace hive
