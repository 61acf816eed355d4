#pragma once

#include <caf/all.hpp>

#include "runtime/kind.hpp"

/// The debate example (issue #7): N debater agents answer a question, a judge agent asks them
/// all at once and picks (or merges) an answer. It runs with scripted debaters, so it needs no
/// LLM; pointed at `llm` agents (actors/llm_agent.hpp) it runs a real debate.
///
/// `debater` (capability `debate`; its own thread: it may wait for an LLM):
/// - config `{"answer":"TEXT","confidence":0..1}`: scripted; `{question}` in TEXT is replaced
///   by the question. Or `{"llm":"NAME","persona":"TEXT"}`: asks the `llm` agent `TENANT/NAME`
///   `{"op":"chat","message":PERSONA + question}` and answers its reply (confidence from
///   `"confidence"`, default 0.5).
/// - ask `{"op":"answer","question":Q}` -> `{"debater":ID,"answer":A,"confidence":C}`.
///
/// `judge` (its own thread):
/// - config `{"debaters":["NAME",...], "rule":"confidence"|"merge", "llm":"NAME",
///   "timeout_ms":N}`: 1..16 debaters of its tenant; rule `confidence` (default) picks the most
///   confident answer (ties: the first listed), `merge` joins all answers; with `llm` set the
///   judge asks that agent to pick a number among the answers (falling back to `confidence`
///   when its reply names none).
/// - ask `{"op":"debate","question":Q}` -> `{"question":Q,"answers":[{"debater","answer",
///   "confidence"} | {"debater","error"}],"verdict":{"rule","winner","answer"}}`: every
///   debater is asked in parallel, each within `timeout_ms` (default 10000) and the call's
///   deadline; a debater that fails or is too slow is listed with its error and left out.
///   All failing: `unavailable`.
namespace hive::debate {

/// Registers the kinds `debater` and `judge`.
[[nodiscard]] caf::error register_debate_kinds(kind_registry& registry);

} // namespace hive::debate
