#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/all.hpp>

namespace hive::records {

/// The record schema version this build writes and the only one it reads.
inline constexpr uint16_t schema_version = 1;

/// What a stored record holds.
enum class record_type : uint8_t { event = 0, snapshot = 1, meta = 2 };

/// Fields every record carries.
struct header {
  /// `tenant/name` of the agent the record belongs to.
  std::string agent;
  /// Activation epoch of the writer.
  uint64_t epoch = 0;
  /// Journal sequence number (events), last included event (snapshots), 0 (meta).
  uint64_t seq = 0;
};

/// One journaled, state-changing event.
struct event_record {
  header hdr;
  std::string payload;
  /// Idempotency key of the command that produced the event; empty `client_id` = none.
  std::string client_id;
  uint64_t client_seq = 0;
  /// The reply the command got (kept so that a duplicate gets the same reply).
  std::string reply;
};

/// One remembered command of the de-duplication window.
struct dedup_entry {
  std::string client_id;
  uint64_t client_seq = 0;
  std::string reply;

  friend bool operator==(const dedup_entry&, const dedup_entry&) = default;
};

/// An agent's state as of `hdr.seq`.
struct snapshot_record {
  header hdr;
  std::string state;
  std::vector<dedup_entry> dedup;
};

/// What re-creates an agent: kind, config and options, written when it is created.
struct meta_record {
  header hdr;
  std::string kind;
  std::string config = "{}";
  bool breaker = false;
  std::string restart = "permanent";
  int64_t created_unix_ms = 0;
  std::string persistence;
  /// Placed on a node by its creator, or moved there by hand: rebalancing leaves it there.
  bool pinned = false;
  /// What the agent offers (capability names), as declared at spawn.
  std::vector<std::string> capabilities;
  /// Replica copies only (runtime/replication.hpp): the highest activation epoch this copy
  /// promised to accept writes from, and the node that activation runs on.
  uint64_t promised_epoch = 0;
  std::string holder;
  /// Replica copies only: the replica set the promise was made for.
  std::vector<std::string> replicas;
};

/// CRC32C (Castagnoli) of `data`, continuing from `crc` (0 to start):
/// `crc32c(b, crc32c(a)) == crc32c(a + b)`; `crc32c("123456789") == 0xE3069283`.
[[nodiscard]] uint32_t crc32c(std::string_view data, uint32_t crc = 0) noexcept;
/// The same, computed a byte at a time from a table on any CPU (`crc32c` uses the CPU's CRC32
/// instruction where it has one; tests compare the two).
[[nodiscard]] uint32_t crc32c_portable(std::string_view data, uint32_t crc = 0) noexcept;

/// Encodes a record as a Cap'n Proto `Record` with its checksum: CRC32C over, in this order,
/// version (2 bytes LE), type (1 byte), agent id length (8 bytes LE), epoch (8 bytes LE), seq
/// (8 bytes LE), the agent id bytes and the body bytes.
[[nodiscard]] std::string encode(const event_record& x);
[[nodiscard]] std::string encode(const snapshot_record& x);
[[nodiscard]] std::string encode(const meta_record& x);

/// Decodes and verifies a record. Errors (`corrupt_record`, naming the problem): not a Cap'n
/// Proto message, unknown schema version, wrong record type, checksum mismatch.
[[nodiscard]] caf::expected<event_record> decode_event(std::string_view bytes);
[[nodiscard]] caf::expected<snapshot_record> decode_snapshot(std::string_view bytes);
[[nodiscard]] caf::expected<meta_record> decode_meta(std::string_view bytes);

/// Checks a record's envelope and checksum without decoding its body.
[[nodiscard]] caf::error verify(std::string_view bytes);

} // namespace hive::records
