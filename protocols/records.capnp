# Stored records of hive (RocksDB values). Append-only evolution: never renumber or retype a
# field; add new ones at the end. `Record.version` is bumped only for changes an old reader
# could misread, and readers refuse versions they do not know.
@0xf7696028ea9bbb49;

$import "/capnp/c++.capnp".namespace("hive::capnp_records");

enum RecordType {
  event @0;
  snapshot @1;
  meta @2;
}

# The envelope of every stored value. `checksum` is CRC32C over version, type, agentId, epoch,
# seq and body (see protocols/records.hpp), verified on every read.
struct Record {
  version @0 :UInt16;
  type @1 :RecordType;
  agentId @2 :Text;
  epoch @3 :UInt64;
  seq @4 :UInt64;
  checksum @5 :UInt32;
  # A Cap'n Proto message of Event, Snapshot or Meta (by `type`).
  body @6 :Data;
}

# One journaled, state-changing event of an agent.
struct Event {
  # Kind-specific event (applied by the kind on replay).
  payload @0 :Data;
  # Idempotency key of the command that produced it (empty client = none).
  clientId @1 :Text;
  clientSeq @2 :UInt64;
  # The reply sent for that command, kept for duplicate suppression.
  reply @3 :Data;
}

struct DedupEntry {
  clientId @0 :Text;
  clientSeq @1 :UInt64;
  reply @2 :Data;
}

# An agent's state as of `Record.seq` (the last event it includes).
struct Snapshot {
  state @0 :Data;
  dedup @1 :List(DedupEntry);
}

# What is needed to re-create an agent: written durably when it is created.
struct Meta {
  kind @0 :Text;
  # The spawn config as JSON text.
  config @1 :Text;
  breaker @2 :Bool;
  restart @3 :Text;
  createdUnixMs @4 :Int64;
  persistence @5 :Text;
  # Spawned on a node the creator named, or moved there by hand: rebalancing leaves it.
  pinned @6 :Bool;
  # What it offers other agents (GET /v1/capabilities/{name}); the kind's defaults if the
  # creator named none.
  capabilities @7 :List(Text);
  # Replica copies only: the highest activation epoch promised (epoch fencing) and the node
  # of that activation.
  promisedEpoch @8 :UInt64;
  holder @9 :Text;
  # Replica copies only: the replica set that promise was made for (member names).
  replicas @10 :List(Text);
}
