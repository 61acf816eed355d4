#pragma once

// The `tool_runner` agent kind: runs the tools declared in its spawn config as sandboxed child
// processes (actors/sandbox.hpp), within the node's `tools.*` ceilings.
//
// Spawn config:
//
//   {"tools": {"NAME": {"executable": "/abs/path",        (in tools.allowed_executables)
//                       "args": ["--n", "{n}", "x={s}"],  (argv after argv[0]; {param} is
//                                                           replaced by the call's value)
//                       "params": {"n": {"type": "integer", "min": 0, "max": 9},
//                                  "s": {"type": "string", "max_bytes": 64,
//                                        "pattern": "[a-z]+", "enum": ["a", "b"],
//                                        "required": false}},
//                       "env": {"LC_ALL": "C"},           (the tool's whole environment)
//                       "offline": true,                  (no network namespace access)
//                       "limits": {"cpu_seconds": 1, "wall_ms": 2000, "output_bytes": 4096,
//                                  "address_space_bytes": N, "open_files": N,
//                                  "file_bytes": N}}}}
//
// Calls: `{"op":"tools"}` lists the tools; `{"op":"run","tool":NAME,"params":{...},
// "stdin":"..."}` runs one and answers the sandbox result (exit code or signal, stopped_by,
// stdout/stderr with truncated flags, CPU seconds, peak RSS, wall ms, network_isolated).
// A tool's failure is a result, not an error; errors are for calls that cannot run (unknown
// tool, bad params: invalid_argument; not allow-listed: forbidden; cannot start: io_error).
//
// At most once: a call with an idempotency key (HTTP `Idempotency-Key: CLIENT:SEQ`) first
// journals its intent durably (call_context::commit), then runs, then journals the result.
// A retry of a finished call gets the original result; a retry of a call whose node died
// while it ran gets `conflict` ("outcome unknown") and the tool is not run again. Calls
// without a key are not remembered. The kind is blocking: each agent has its own thread.

#include <caf/all.hpp>

#include "config/node_config.hpp"
#include "runtime/kind.hpp"

namespace hive {

/// Registers the `tool_runner` kind with the node's `tools` settings; `scratch_root` is where
/// runs get their scratch directories (created if missing).
[[nodiscard]] caf::error register_tool_kinds(kind_registry& registry,
                                             const node_config::tools_section& cfg,
                                             std::string scratch_root);

} // namespace hive
