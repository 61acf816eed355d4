#include "protocols/records.hpp"

#include <array>
#include <cstring>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include "protocols/errc.hpp"
#include "protocols/records.capnp.h"

namespace hive::records {

namespace cr = hive::capnp_records;

namespace {

/// Cap'n Proto reads words: copy the bytes into an aligned buffer (RocksDB values are not).
kj::Array<capnp::word> aligned_copy(std::string_view bytes) {
  auto words =
    kj::heapArray<capnp::word>((bytes.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  if (!bytes.empty())
    std::memcpy(words.begin(), bytes.data(), bytes.size());
  return words;
}

std::string to_string(kj::Array<capnp::word> words) {
  auto bytes = words.asBytes();
  return std::string{reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
}

std::string_view view_of(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

std::string_view view_of(capnp::Text::Reader t) {
  return {t.cStr(), t.size()};
}

capnp::Data::Reader data_of(std::string_view s) {
  return {reinterpret_cast<const capnp::byte*>(s.data()), s.size()};
}

template <class T>
void put_le(std::string& out, T x) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<char>((static_cast<uint64_t>(x) >> (8 * i)) & 0xff));
}

uint32_t checksum_of(uint16_t version, record_type type, std::string_view agent, uint64_t epoch,
                     uint64_t seq, std::string_view body) {
  std::string fixed;
  fixed.reserve(32);
  put_le(fixed, version);
  put_le(fixed, static_cast<uint8_t>(type));
  put_le(fixed, static_cast<uint64_t>(agent.size()));
  put_le(fixed, epoch);
  put_le(fixed, seq);
  auto crc = crc32c(fixed);
  crc = crc32c(agent, crc);
  return crc32c(body, crc);
}

std::string wrap(record_type type, const header& hdr, std::string_view body) {
  // One first segment that holds it all: no growing, one copy into the flat array.
  capnp::MallocMessageBuilder msg{
    static_cast<capnp::uint>((body.size() + hdr.agent.size()) / 8 + 32)};
  auto rec = msg.initRoot<cr::Record>();
  rec.setVersion(schema_version);
  rec.setType(static_cast<cr::RecordType>(type));
  rec.setAgentId(hdr.agent);
  rec.setEpoch(hdr.epoch);
  rec.setSeq(hdr.seq);
  rec.setChecksum(checksum_of(schema_version, type, hdr.agent, hdr.epoch, hdr.seq, body));
  rec.setBody(data_of(body));
  return to_string(capnp::messageToFlatArray(msg));
}

template <class Builder>
std::string body_bytes(capnp::MallocMessageBuilder& msg) {
  (void)sizeof(Builder);
  return to_string(capnp::messageToFlatArray(msg));
}

caf::error corrupt(std::string what) {
  return make_error(errc::corrupt_record, std::move(what));
}

/// The verified envelope of a record: header and body bytes.
struct unwrapped {
  record_type type = record_type::event;
  header hdr;
  std::string body;
};

caf::expected<unwrapped> unwrap(std::string_view bytes) {
  if (bytes.size() < sizeof(capnp::word) || bytes.size() % sizeof(capnp::word) != 0)
    return corrupt("record of " + std::to_string(bytes.size())
                   + " bytes is not a whole number of 8-byte words");
  try {
    auto words = aligned_copy(bytes);
    capnp::FlatArrayMessageReader reader{words};
    auto rec = reader.getRoot<cr::Record>();
    if (rec.getVersion() != schema_version)
      return corrupt("record schema version " + std::to_string(rec.getVersion())
                     + " is unknown (this build reads version " + std::to_string(schema_version)
                     + ")");
    auto type = static_cast<uint16_t>(rec.getType());
    if (type > static_cast<uint16_t>(record_type::meta))
      return corrupt("record type " + std::to_string(type) + " is unknown");
    unwrapped out;
    out.type = static_cast<record_type>(type);
    out.hdr.agent = std::string{view_of(rec.getAgentId())};
    out.hdr.epoch = rec.getEpoch();
    out.hdr.seq = rec.getSeq();
    out.body = std::string{view_of(rec.getBody())};
    auto expected =
      checksum_of(rec.getVersion(), out.type, out.hdr.agent, out.hdr.epoch, out.hdr.seq, out.body);
    if (expected != rec.getChecksum())
      return corrupt("checksum mismatch in the record of " + out.hdr.agent.substr(0, 256) + " seq "
                     + std::to_string(out.hdr.seq) + " (stored " + std::to_string(rec.getChecksum())
                     + ", computed " + std::to_string(expected) + ")");
    return out;
  } catch (const kj::Exception& e) {
    return corrupt(std::string{"record is not a valid Cap'n Proto message: "}
                   + e.getDescription().cStr());
  } catch (const std::exception& e) {
    return corrupt(std::string{"record could not be decoded: "} + e.what());
  }
}

caf::expected<unwrapped> unwrap_as(std::string_view bytes, record_type want) {
  auto u = unwrap(bytes);
  if (!u)
    return u;
  if (u->type != want)
    return corrupt("record of " + u->hdr.agent.substr(0, 256) + " has type "
                   + std::to_string(static_cast<int>(u->type)) + ", expected "
                   + std::to_string(static_cast<int>(want)));
  return u;
}

/// Decodes the body message with `fn(reader)`, turning Cap'n Proto exceptions into errors.
template <class Body, class Fn>
caf::error read_body(const std::string& body, Fn fn) {
  try {
    auto words = aligned_copy(body);
    capnp::FlatArrayMessageReader reader{words};
    fn(reader.getRoot<Body>());
    return {};
  } catch (const kj::Exception& e) {
    return corrupt(std::string{"record body is not a valid Cap'n Proto message: "}
                   + e.getDescription().cStr());
  }
}

} // namespace

uint32_t crc32c_portable(std::string_view data, uint32_t crc) noexcept {
  // Reflected CRC-32C (Castagnoli, polynomial 0x1EDC6F41 reversed: 0x82F63B78), initial value
  // and final xor 0xFFFFFFFF. Undoing the final xor first makes the function chainable:
  // crc32c(b, crc32c(a)) == crc32c(a + b), as the checksum layout relies on.
  static constexpr auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t r = i;
      for (int k = 0; k < 8; ++k)
        r = (r >> 1) ^ ((r & 1u) ? 0x82F63B78u : 0u);
      t[i] = r;
    }
    return t;
  }();
  uint32_t r = ~crc;
  for (auto ch : data)
    r = table[(r ^ static_cast<uint8_t>(ch)) & 0xffu] ^ (r >> 8);
  return ~r;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
namespace {

/// The same function with SSE 4.2's CRC32 instruction (the Castagnoli polynomial): about 20x
/// the table's speed, which a record's checksum (a snapshot's is one of a migration's costs)
/// is worth.
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(std::string_view data,
                                                        uint32_t crc) noexcept {
  uint64_t r = ~crc;
  auto p = reinterpret_cast<const unsigned char*>(data.data());
  auto n = data.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    r = __builtin_ia32_crc32di(r, word);
  }
  auto r32 = static_cast<uint32_t>(r);
  for (; n > 0; ++p, --n)
    r32 = __builtin_ia32_crc32qi(r32, *p);
  return ~r32;
}

} // namespace

uint32_t crc32c(std::string_view data, uint32_t crc) noexcept {
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  return hardware ? crc32c_sse42(data, crc) : crc32c_portable(data, crc);
}
#else
uint32_t crc32c(std::string_view data, uint32_t crc) noexcept {
  return crc32c_portable(data, crc);
}
#endif

std::string encode(const event_record& x) {
  capnp::MallocMessageBuilder msg;
  auto ev = msg.initRoot<cr::Event>();
  ev.setPayload(data_of(x.payload));
  ev.setClientId(x.client_id);
  ev.setClientSeq(x.client_seq);
  ev.setReply(data_of(x.reply));
  return wrap(record_type::event, x.hdr, body_bytes<cr::Event>(msg));
}

std::string encode(const snapshot_record& x) {
  size_t words = x.state.size() / 8 + 16;
  for (auto& d : x.dedup)
    words += 4 + (d.client_id.size() + 8) / 8 + (d.reply.size() + 7) / 8;
  capnp::MallocMessageBuilder msg{static_cast<capnp::uint>(words)};
  auto snap = msg.initRoot<cr::Snapshot>();
  snap.setState(data_of(x.state));
  auto list = snap.initDedup(static_cast<unsigned>(x.dedup.size()));
  for (unsigned i = 0; i < x.dedup.size(); ++i) {
    list[i].setClientId(x.dedup[i].client_id);
    list[i].setClientSeq(x.dedup[i].client_seq);
    list[i].setReply(data_of(x.dedup[i].reply));
  }
  return wrap(record_type::snapshot, x.hdr, body_bytes<cr::Snapshot>(msg));
}

std::string encode(const meta_record& x) {
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<cr::Meta>();
  m.setKind(x.kind);
  m.setConfig(x.config);
  m.setBreaker(x.breaker);
  m.setRestart(x.restart);
  m.setCreatedUnixMs(x.created_unix_ms);
  m.setPersistence(x.persistence);
  m.setPinned(x.pinned);
  auto caps = m.initCapabilities(static_cast<unsigned>(x.capabilities.size()));
  for (size_t i = 0; i < x.capabilities.size(); ++i)
    caps.set(static_cast<unsigned>(i), x.capabilities[i]);
  m.setPromisedEpoch(x.promised_epoch);
  m.setHolder(x.holder);
  auto reps = m.initReplicas(static_cast<unsigned>(x.replicas.size()));
  for (size_t i = 0; i < x.replicas.size(); ++i)
    reps.set(static_cast<unsigned>(i), x.replicas[i]);
  return wrap(record_type::meta, x.hdr, body_bytes<cr::Meta>(msg));
}

caf::expected<event_record> decode_event(std::string_view bytes) {
  auto u = unwrap_as(bytes, record_type::event);
  if (!u)
    return std::move(u.error());
  event_record out;
  out.hdr = std::move(u->hdr);
  auto err = read_body<cr::Event>(u->body, [&](cr::Event::Reader ev) {
    out.payload = std::string{view_of(ev.getPayload())};
    out.client_id = std::string{view_of(ev.getClientId())};
    out.client_seq = ev.getClientSeq();
    out.reply = std::string{view_of(ev.getReply())};
  });
  if (err)
    return err;
  return out;
}

caf::expected<snapshot_record> decode_snapshot(std::string_view bytes) {
  auto u = unwrap_as(bytes, record_type::snapshot);
  if (!u)
    return std::move(u.error());
  snapshot_record out;
  out.hdr = std::move(u->hdr);
  auto err = read_body<cr::Snapshot>(u->body, [&](cr::Snapshot::Reader snap) {
    out.state = std::string{view_of(snap.getState())};
    for (auto e : snap.getDedup())
      out.dedup.push_back({std::string{view_of(e.getClientId())}, e.getClientSeq(),
                           std::string{view_of(e.getReply())}});
  });
  if (err)
    return err;
  return out;
}

caf::expected<meta_record> decode_meta(std::string_view bytes) {
  auto u = unwrap_as(bytes, record_type::meta);
  if (!u)
    return std::move(u.error());
  meta_record out;
  out.hdr = std::move(u->hdr);
  auto err = read_body<cr::Meta>(u->body, [&](cr::Meta::Reader m) {
    out.kind = std::string{view_of(m.getKind())};
    out.config = std::string{view_of(m.getConfig())};
    out.breaker = m.getBreaker();
    out.restart = std::string{view_of(m.getRestart())};
    out.created_unix_ms = m.getCreatedUnixMs();
    out.persistence = std::string{view_of(m.getPersistence())};
    out.pinned = m.getPinned();
    for (auto c : m.getCapabilities())
      out.capabilities.emplace_back(view_of(c));
    out.promised_epoch = m.getPromisedEpoch();
    out.holder = std::string{view_of(m.getHolder())};
    for (auto r : m.getReplicas())
      out.replicas.emplace_back(view_of(r));
  });
  if (err)
    return err;
  return out;
}

caf::error verify(std::string_view bytes) {
  auto u = unwrap(bytes);
  if (!u)
    return std::move(u.error());
  return {};
}

} // namespace hive::records
