#pragma once

#include <caf/all.hpp>

#include "runtime/kind.hpp"

namespace hive {

/// Registers the sample kinds:
/// - `echo`: answers with the body it got (never parses it).
/// - `counter`: `{"op":"add","by":N}` and `{"op":"get"}` both answer `{"value":V}`;
///   config `{"initial":N}` (default 0).
/// - `kv`: `{"op":"put","key":K,"value":V}` -> `{"ok":true}`, `{"op":"get","key":K}` ->
///   `{"found":bool,"value":V}`, `{"op":"delete","key":K}` -> `{"deleted":bool}`;
///   config `{"entries_max":N}` (default 10000); keys are at most 1024 bytes.
[[nodiscard]] caf::error register_sample_kinds(kind_registry& registry);

} // namespace hive
