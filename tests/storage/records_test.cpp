// The stored record codec (protocols/records.hpp): round trips, the schema version gate, the
// CRC32C checksum over envelope and body, and refusal of truncated, garbage or mistyped input.

#include "protocols/records.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include "protocols/errc.hpp"
#include "protocols/records.capnp.h"

namespace {

using namespace hive;
using namespace hive::records;

uint64_t test_seed() {
  if (const char* s = std::getenv("HIVE_SEED"))
    return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

std::string all_bytes() {
  std::string s;
  for (int i = 0; i < 256; ++i)
    s.push_back(static_cast<char>(i));
  return s;
}

event_record sample_event() {
  event_record ev;
  ev.hdr = {"acme/c1", 7, 42};
  ev.payload = std::string{"add\0by\xff", 7};
  ev.client_id = "client-9";
  ev.client_seq = 1234567890123ull;
  ev.reply = all_bytes();
  return ev;
}

snapshot_record sample_snapshot() {
  snapshot_record snap;
  snap.hdr = {"acme/kv1", 3, 99};
  snap.state = all_bytes() + all_bytes();
  snap.dedup = {{"a", 1, "r1"}, {"b", UINT64_MAX, std::string{"\0\0", 2}}, {"", 0, ""}};
  return snap;
}

meta_record sample_meta() {
  meta_record m;
  m.hdr = {"acme/c1", 0, 0};
  m.kind = "counter";
  m.config = R"({"start":5})";
  m.breaker = true;
  m.restart = "transient";
  m.created_unix_ms = -17;
  m.persistence = "journal";
  return m;
}

void expect_corrupt(const caf::error& err, std::string_view what) {
  ASSERT_TRUE(err) << what << ": accepted";
  EXPECT_EQ(code_of(err), errc::corrupt_record) << what << ": " << describe(err);
}

template <class T>
void expect_corrupt(const caf::expected<T>& x, std::string_view what) {
  ASSERT_FALSE(x) << what << ": decoded";
  EXPECT_EQ(code_of(x.error()), errc::corrupt_record) << what << ": " << describe(x.error());
}

/// Re-encodes `bytes` (a valid record) with `version` and `type` (raw enum value, -1: keep),
/// and with a checksum computed as the header documents; with `version = schema_version` and
/// the record's own type it must decode again.
std::string with_header(std::string_view bytes, uint16_t version, int type = -1) {
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  capnp::FlatArrayMessageReader reader{words};
  auto in = reader.getRoot<capnp_records::Record>();
  capnp::MallocMessageBuilder msg;
  msg.setRoot(in);
  auto out = msg.getRoot<capnp_records::Record>();
  out.setVersion(version);
  if (type >= 0)
    out.setType(static_cast<capnp_records::RecordType>(type));
  std::string fixed;
  auto put = [&](uint64_t x, size_t n) {
    for (size_t i = 0; i < n; ++i)
      fixed.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
  };
  auto agent = out.getAgentId();
  auto body = out.getBody();
  put(version, 2);
  put(static_cast<uint64_t>(out.getType()), 1);
  put(agent.size(), 8);
  put(out.getEpoch(), 8);
  put(out.getSeq(), 8);
  auto crc = crc32c(fixed);
  crc = crc32c({agent.cStr(), agent.size()}, crc);
  crc = crc32c({reinterpret_cast<const char*>(body.begin()), body.size()}, crc);
  out.setChecksum(crc);
  auto flat = capnp::messageToFlatArray(msg);
  auto b = flat.asBytes();
  return {reinterpret_cast<const char*>(b.begin()), b.size()};
}

// -- crc32c ------------------------------------------------------------------------------------

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, and of 0xFF.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
}

TEST(Crc32c, ContinuesFromAPreviousValue) {
  EXPECT_EQ(crc32c("56789", crc32c("1234")), 0xE3069283u);
  EXPECT_EQ(crc32c("", crc32c("123456789")), 0xE3069283u);
  auto seed = test_seed();
  SCOPED_TRACE("HIVE_SEED=" + std::to_string(seed));
  std::mt19937_64 rng{seed};
  for (int i = 0; i < 200; ++i) {
    std::string s(rng() % 300, '\0');
    for (auto& c : s)
      c = static_cast<char>(rng());
    auto cut = s.empty() ? 0 : rng() % (s.size() + 1);
    ASSERT_EQ(crc32c(s.substr(cut), crc32c(s.substr(0, cut))), crc32c(s)) << "cut " << cut;
  }
}

TEST(Crc32c, TheCpuInstructionAndTheTableAgree) {
  // crc32c uses SSE 4.2 where the CPU has it (8 bytes a step, then the tail a byte at a
  // time): lengths around 8 and unaligned starts cover both parts.
  EXPECT_EQ(crc32c_portable("123456789"), 0xE3069283u);
  auto seed = test_seed();
  SCOPED_TRACE("HIVE_SEED=" + std::to_string(seed));
  std::mt19937_64 rng{seed};
  std::string buf(70000, '\0');
  for (auto& c : buf)
    c = static_cast<char>(rng());
  for (int i = 0; i < 500; ++i) {
    auto len = i < 40 ? static_cast<size_t>(i) : rng() % (i < 450 ? 300 : buf.size());
    auto at = rng() % (buf.size() - len + 1);
    auto from = static_cast<uint32_t>(rng());
    std::string_view s{buf.data() + at, len};
    ASSERT_EQ(crc32c(s, from), crc32c_portable(s, from)) << "length " << len << " at " << at;
  }
}

// -- round trips -------------------------------------------------------------------------------

TEST(Records, EventRoundTrip) {
  auto ev = sample_event();
  auto bytes = encode(ev);
  EXPECT_EQ(bytes.size() % 8, 0u);
  EXPECT_FALSE(verify(bytes));
  auto back = decode_event(bytes);
  ASSERT_TRUE(back) << describe(back.error());
  EXPECT_EQ(back->hdr.agent, "acme/c1");
  EXPECT_EQ(back->hdr.epoch, 7u);
  EXPECT_EQ(back->hdr.seq, 42u);
  EXPECT_EQ(back->payload, ev.payload);
  EXPECT_EQ(back->payload.size(), 7u);
  EXPECT_EQ(back->client_id, "client-9");
  EXPECT_EQ(back->client_seq, 1234567890123ull);
  EXPECT_EQ(back->reply, all_bytes());
}

TEST(Records, EmptyEventRoundTrip) {
  event_record ev;
  ev.hdr = {"t/n", 0, 1};
  auto back = decode_event(encode(ev));
  ASSERT_TRUE(back) << describe(back.error());
  EXPECT_EQ(back->hdr.agent, "t/n");
  EXPECT_EQ(back->hdr.seq, 1u);
  EXPECT_TRUE(back->payload.empty());
  EXPECT_TRUE(back->client_id.empty());
  EXPECT_EQ(back->client_seq, 0u);
  EXPECT_TRUE(back->reply.empty());
}

TEST(Records, SnapshotRoundTripWithDedupEntries) {
  auto snap = sample_snapshot();
  auto back = decode_snapshot(encode(snap));
  ASSERT_TRUE(back) << describe(back.error());
  EXPECT_EQ(back->hdr.agent, "acme/kv1");
  EXPECT_EQ(back->hdr.epoch, 3u);
  EXPECT_EQ(back->hdr.seq, 99u);
  EXPECT_EQ(back->state, snap.state);
  EXPECT_EQ(back->dedup, snap.dedup);
  ASSERT_EQ(back->dedup.size(), 3u);
  EXPECT_EQ(back->dedup[1].client_seq, UINT64_MAX);
  EXPECT_EQ(back->dedup[1].reply.size(), 2u);
}

TEST(Records, EmptySnapshotRoundTrip) {
  snapshot_record snap;
  snap.hdr = {"t/n", 1, 0};
  auto back = decode_snapshot(encode(snap));
  ASSERT_TRUE(back) << describe(back.error());
  EXPECT_TRUE(back->state.empty());
  EXPECT_TRUE(back->dedup.empty());
}

TEST(Records, MetaRoundTrip) {
  auto m = sample_meta();
  auto back = decode_meta(encode(m));
  ASSERT_TRUE(back) << describe(back.error());
  EXPECT_EQ(back->hdr.agent, "acme/c1");
  EXPECT_EQ(back->kind, "counter");
  EXPECT_EQ(back->config, R"({"start":5})");
  EXPECT_TRUE(back->breaker);
  EXPECT_EQ(back->restart, "transient");
  EXPECT_EQ(back->created_unix_ms, -17);
  EXPECT_EQ(back->persistence, "journal");
  meta_record defaults;
  defaults.hdr.agent = "a/b";
  auto d = decode_meta(encode(defaults));
  ASSERT_TRUE(d) << describe(d.error());
  EXPECT_EQ(d->config, "{}");
  EXPECT_FALSE(d->breaker);
  EXPECT_EQ(d->restart, "permanent");
  EXPECT_TRUE(d->persistence.empty());
}

TEST(Records, EncodingIsDeterministic) {
  EXPECT_EQ(encode(sample_event()), encode(sample_event()));
  auto other = sample_event();
  other.hdr.seq += 1;
  EXPECT_NE(encode(other), encode(sample_event()));
}

// -- refusals ----------------------------------------------------------------------------------

TEST(Records, UnknownSchemaVersionIsRefused) {
  auto bytes = encode(sample_event());
  // The test's re-encoder is faithful: the current version decodes again.
  auto same = with_header(bytes, schema_version);
  auto ok = decode_event(same);
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(ok->payload, sample_event().payload);
  for (uint16_t v : {uint16_t{0}, uint16_t{2}, uint16_t{0xffff}}) {
    auto other = with_header(bytes, v);
    auto x = decode_event(other);
    expect_corrupt(x, "version " + std::to_string(v));
    EXPECT_NE(message_of(x.error()).find("version " + std::to_string(v)), std::string::npos)
      << message_of(x.error());
    expect_corrupt(verify(other), "verify version " + std::to_string(v));
  }
}

TEST(Records, UnknownRecordTypeIsRefused) {
  auto bytes = encode(sample_snapshot());
  auto same = with_header(bytes, schema_version, 1);
  ASSERT_TRUE(decode_snapshot(same)) << "the re-encoder changed the record";
  for (int t : {3, 7, 0xffff}) {
    auto other = with_header(bytes, schema_version, t);
    auto x = decode_snapshot(other);
    expect_corrupt(x, "type " + std::to_string(t));
    EXPECT_NE(message_of(x.error()).find("type " + std::to_string(t)), std::string::npos)
      << message_of(x.error());
    expect_corrupt(verify(other), "verify type " + std::to_string(t));
  }
  // A known type that is not the one asked for.
  expect_corrupt(decode_snapshot(with_header(bytes, schema_version, 0)), "as event");
  EXPECT_FALSE(verify(with_header(bytes, schema_version, 0)));
}

TEST(Records, ChecksumMismatchInAgentIdIsDetected) {
  auto bytes = encode(sample_event());
  auto at = bytes.find("acme/c1");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5] = 'x'; // acme/x1: a different, well-formed agent id
  auto x = decode_event(bytes);
  expect_corrupt(x, "agent id changed");
  EXPECT_NE(message_of(x.error()).find("checksum"), std::string::npos) << message_of(x.error());
  expect_corrupt(verify(bytes), "verify agent id changed");
}

TEST(Records, ChecksumMismatchInBodyIsDetected) {
  auto ev = sample_event();
  ev.payload = "PAYLOAD-MARKER";
  auto bytes = encode(ev);
  auto at = bytes.find("PAYLOAD-MARKER");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = 'Q';
  auto x = decode_event(bytes);
  expect_corrupt(x, "body changed");
  EXPECT_NE(message_of(x.error()).find("checksum"), std::string::npos) << message_of(x.error());
}

TEST(Records, ChecksumMismatchInSeqIsDetected) {
  auto ev = sample_event();
  ev.hdr.seq = 0x1122334455667788ull;
  auto bytes = encode(ev);
  auto at = bytes.find("\x88\x77\x66\x55\x44\x33\x22\x11");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = '\x89';
  expect_corrupt(decode_event(bytes), "seq changed");
}

TEST(Records, EveryBitFlipIsDetectedOrHarmless) {
  // A flip may only land in padding (decodes to the same record) or be refused.
  for (auto original : {encode(sample_event()), encode(sample_snapshot()), encode(sample_meta())}) {
    size_t detected = 0;
    size_t flips = 0;
    for (size_t i = 0; i < original.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        auto bytes = original;
        bytes[i] = static_cast<char>(bytes[i] ^ (1 << bit));
        ++flips;
        auto err = verify(bytes);
        if (err) {
          ASSERT_EQ(code_of(err), errc::corrupt_record) << "byte " << i << " bit " << bit;
          ++detected;
          continue;
        }
        // Accepted: it must decode to exactly the original record.
        if (auto ev = decode_event(original)) {
          auto flipped = decode_event(bytes);
          ASSERT_TRUE(flipped) << "byte " << i << " bit " << bit;
          ASSERT_EQ(encode(*flipped), original) << "byte " << i << " bit " << bit;
        } else if (auto snap = decode_snapshot(original)) {
          auto flipped = decode_snapshot(bytes);
          ASSERT_TRUE(flipped) << "byte " << i << " bit " << bit;
          ASSERT_EQ(encode(*flipped), original) << "byte " << i << " bit " << bit;
        } else {
          auto flipped = decode_meta(bytes);
          ASSERT_TRUE(flipped) << "byte " << i << " bit " << bit;
          ASSERT_EQ(encode(*flipped), original) << "byte " << i << " bit " << bit;
        }
      }
    }
    // Only padding may go unnoticed: far fewer than one byte in ten.
    EXPECT_GT(detected * 10, flips * 9) << detected << " of " << flips << " flips detected";
  }
}

TEST(Records, TruncatedInputIsRefused) {
  auto bytes = encode(sample_snapshot());
  expect_corrupt(decode_snapshot(""), "empty");
  expect_corrupt(verify(""), "verify empty");
  for (size_t n = 1; n < bytes.size(); ++n)
    expect_corrupt(decode_snapshot(std::string_view{bytes}.substr(0, n)),
                   "first " + std::to_string(n) + " bytes");
  // Not a whole number of words.
  expect_corrupt(decode_snapshot(bytes + "x"), "one byte more");
}

TEST(Records, GarbageIsRefused) {
  auto seed = test_seed();
  SCOPED_TRACE("HIVE_SEED=" + std::to_string(seed));
  std::mt19937_64 rng{seed};
  expect_corrupt(decode_event(std::string(64, '\0')), "zeros");
  expect_corrupt(decode_event(std::string(64, '\xff')), "ones");
  expect_corrupt(decode_meta("not a record at all...."), "text");
  for (int i = 0; i < 2000; ++i) {
    std::string s(8 * (1 + rng() % 40), '\0');
    for (auto& c : s)
      c = static_cast<char>(rng());
    // Half the time, a plausible segment table: one segment of the right size.
    if (i % 2 == 0) {
      uint32_t words = static_cast<uint32_t>(s.size() / 8 - 1);
      std::memset(s.data(), 0, 4);
      std::memcpy(s.data() + 4, &words, 4);
    }
    expect_corrupt(decode_event(s), "garbage #" + std::to_string(i));
    expect_corrupt(decode_snapshot(s), "garbage #" + std::to_string(i));
    expect_corrupt(decode_meta(s), "garbage #" + std::to_string(i));
  }
}

TEST(Records, WrongTypeIsRefused) {
  auto ev = encode(sample_event());
  auto snap = encode(sample_snapshot());
  auto meta = encode(sample_meta());
  expect_corrupt(decode_snapshot(ev), "event as snapshot");
  expect_corrupt(decode_meta(ev), "event as meta");
  expect_corrupt(decode_event(snap), "snapshot as event");
  expect_corrupt(decode_meta(snap), "snapshot as meta");
  expect_corrupt(decode_event(meta), "meta as event");
  expect_corrupt(decode_snapshot(meta), "meta as snapshot");
  // Each of them is a valid record of its own type.
  EXPECT_FALSE(verify(ev));
  EXPECT_FALSE(verify(snap));
  EXPECT_FALSE(verify(meta));
}

TEST(Records, UnalignedInputDecodes) {
  // RocksDB hands out values at any address: the codec must not require alignment.
  auto bytes = encode(sample_event());
  std::string buf = "x" + bytes;
  auto back = decode_event(std::string_view{buf}.substr(1));
  ASSERT_TRUE(back) << describe(back.error());
  EXPECT_EQ(back->reply, all_bytes());
}

} // namespace
