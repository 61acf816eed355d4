#include "protocols/wire.hpp"

#include <cassert>
#include <cstring>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "protocols/client.capnp.h"

namespace hive::wire {

namespace cc = hive::capnp_client;

namespace {

/// Words of the first segment of every message we build: one allocation for typical calls.
constexpr unsigned first_segment_words = 128;

capnp::Text::Reader text_of(std::string_view s) {
  return {s.data(), s.size()};
}

std::string str(capnp::Text::Reader t) {
  return std::string{t.cStr(), t.size()};
}

void put_u32_le(std::string& out, uint32_t x) {
  char b[4] = {static_cast<char>(x & 0xff), static_cast<char>((x >> 8) & 0xff),
               static_cast<char>((x >> 16) & 0xff), static_cast<char>((x >> 24) & 0xff)};
  out.append(b, 4);
}

uint32_t get_u32_le(std::string_view in) {
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(in[i])); };
  return b(0) | (b(1) << 8) | (b(2) << 16) | (b(3) << 24);
}

void append_message(std::string& out, capnp::MessageBuilder& msg) {
  auto words = capnp::messageToFlatArray(msg);
  auto bytes = words.asBytes();
  // Programmer error, not input: our own messages are far below 4 GiB.
  assert(bytes.size() < (uint64_t{1} << 32));
  put_u32_le(out, static_cast<uint32_t>(bytes.size()));
  out.append(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

/// Calls `f(reader)` on a Cap'n Proto message read from `payload` (copied when not aligned),
/// with traversal limited to the payload's own size. Any decoding failure becomes an error.
template <class Root, class F>
auto with_reader(std::string_view payload, F f)
  -> decltype(f(std::declval<typename Root::Reader>())) {
  if (payload.size() < frame_payload_bytes_min || payload.size() % sizeof(capnp::word) != 0)
    return make_error(errc::invalid_argument,
                      "frame payload of " + std::to_string(payload.size())
                        + " bytes is not a Cap'n Proto message (a multiple of 8, at least 8)");
  kj::Array<capnp::word> copy;
  kj::ArrayPtr<const capnp::word> words;
  if (reinterpret_cast<uintptr_t>(payload.data()) % alignof(capnp::word) == 0) {
    words = {reinterpret_cast<const capnp::word*>(payload.data()),
             payload.size() / sizeof(capnp::word)};
  } else {
    copy = kj::heapArray<capnp::word>(payload.size() / sizeof(capnp::word));
    std::memcpy(copy.begin(), payload.data(), payload.size());
    words = copy.asPtr();
  }
  capnp::ReaderOptions opts;
  // Every byte may be read at most twice (amplification by shared pointers stays bounded).
  opts.traversalLimitInWords = 2 * words.size() + 8;
  opts.nestingLimit = nesting_max;
  try {
    capnp::FlatArrayMessageReader reader{words, opts};
    if (reader.getEnd() != words.end())
      return make_error(errc::invalid_argument,
                        "frame payload has bytes after its Cap'n Proto message");
    return f(reader.getRoot<Root>());
  } catch (const kj::Exception& ex) {
    auto what = std::string{ex.getDescription().cStr()};
    if (what.size() > 200)
      what.resize(200);
    return make_error(errc::invalid_argument, "frame payload is not a valid message: " + what);
  }
}

} // namespace

void append_frame(std::string& out, const request& req) {
  capnp::MallocMessageBuilder msg{first_segment_words};
  auto r = msg.initRoot<cc::Request>();
  r.setId(req.id);
  r.setCorrelationId(req.correlation_id);
  std::visit(
    [&](auto& x) {
      using T = std::decay_t<decltype(x)>;
      if constexpr (std::is_same_v<T, hello>) {
        auto h = r.initHello();
        h.setVersion(x.version);
        h.setToken(text_of(x.token));
      } else if constexpr (std::is_same_v<T, spawn>) {
        auto s = r.initSpawn();
        s.setAgent(text_of(x.agent));
        s.setKind(text_of(x.kind));
        s.setConfig(text_of(x.config));
        s.setBreaker(x.breaker);
        s.setRestart(text_of(x.restart));
        s.setNode(text_of(x.node));
      } else if constexpr (std::is_same_v<T, tell>) {
        auto t = r.initTell();
        t.setAgent(text_of(x.agent));
        t.setBody(text_of(x.body));
        t.setClientId(text_of(x.client_id));
        t.setClientSeq(x.client_seq);
      } else if constexpr (std::is_same_v<T, ask>) {
        auto a = r.initAsk();
        a.setAgent(text_of(x.agent));
        a.setBody(text_of(x.body));
        a.setTimeoutMs(x.timeout_ms);
        a.setClientId(text_of(x.client_id));
        a.setClientSeq(x.client_seq);
      } else {
        r.setStop(text_of(x.agent));
      }
    },
    req.body);
  append_message(out, msg);
}

void append_frame(std::string& out, const response& res) {
  capnp::MallocMessageBuilder msg{first_segment_words};
  auto r = msg.initRoot<cc::Response>();
  r.setId(res.id);
  r.setCorrelationId(res.correlation_id);
  if (res.ok) {
    r.setOk(text_of(res.text));
  } else {
    auto e = r.initError();
    e.setCode(static_cast<uint16_t>(res.code));
    e.setName(text_of(to_string(res.code)));
    e.setMessage(text_of(res.text));
    e.setRetryAfterMs(res.retry_after_ms);
  }
  append_message(out, msg);
}

caf::expected<frame_view> next_frame(std::string_view buf, size_t frame_bytes_max) {
  if (buf.size() < frame_header_bytes)
    return frame_view{};
  auto len = get_u32_le(buf);
  if (len > frame_bytes_max)
    return make_error(errc::too_large,
                      "frame of " + std::to_string(len) + " bytes exceeds binary.frame_bytes_max ("
                        + std::to_string(frame_bytes_max) + " bytes)");
  if (len < frame_payload_bytes_min || len % sizeof(capnp::word) != 0)
    return make_error(errc::invalid_argument,
                      "frame length " + std::to_string(len)
                        + " is not a Cap'n Proto message size (a multiple of 8, at least 8)");
  if (buf.size() - frame_header_bytes < len)
    return frame_view{};
  return frame_view{buf.substr(frame_header_bytes, len), frame_header_bytes + len};
}

caf::expected<request> decode_request(std::string_view payload) {
  return with_reader<cc::Request>(payload, [](cc::Request::Reader r) -> caf::expected<request> {
    request out;
    out.id = r.getId();
    out.correlation_id = r.getCorrelationId();
    switch (r.which()) {
      case cc::Request::HELLO: {
        auto h = r.getHello();
        out.body = hello{h.getVersion(), str(h.getToken())};
        break;
      }
      case cc::Request::SPAWN: {
        auto s = r.getSpawn();
        out.body = spawn{str(s.getAgent()), str(s.getKind()),    str(s.getConfig()),
                         s.getBreaker(),    str(s.getRestart()), str(s.getNode())};
        break;
      }
      case cc::Request::TELL: {
        auto t = r.getTell();
        out.body =
          tell{str(t.getAgent()), str(t.getBody()), str(t.getClientId()), t.getClientSeq()};
        break;
      }
      case cc::Request::ASK: {
        auto a = r.getAsk();
        out.body = ask{str(a.getAgent()), str(a.getBody()), a.getTimeoutMs(), str(a.getClientId()),
                       a.getClientSeq()};
        break;
      }
      case cc::Request::STOP: out.body = stop{str(r.getStop())}; break;
      default:
        return make_error(errc::invalid_argument,
                          "request kind " + std::to_string(static_cast<unsigned>(r.which()))
                            + " is unknown (known: hello, spawn, tell, ask, stop)");
    }
    return out;
  });
}

caf::expected<response> decode_response(std::string_view payload) {
  return with_reader<cc::Response>(payload, [](cc::Response::Reader r) -> caf::expected<response> {
    response out;
    out.id = r.getId();
    out.correlation_id = r.getCorrelationId();
    switch (r.which()) {
      case cc::Response::OK:
        out.ok = true;
        out.text = str(r.getOk());
        break;
      case cc::Response::ERROR: {
        auto e = r.getError();
        auto code = e.getCode();
        out.code = code == 0 || to_string(static_cast<errc>(code)) == "unknown"
          ? errc::internal
          : static_cast<errc>(code);
        out.text = str(e.getMessage());
        out.retry_after_ms = e.getRetryAfterMs();
        break;
      }
      default:
        return make_error(errc::invalid_argument,
                          "response kind " + std::to_string(static_cast<unsigned>(r.which()))
                            + " is unknown (known: ok, error)");
    }
    return out;
  });
}

std::string_view kind_name(const request& req) noexcept {
  switch (req.body.index()) {
    case 0: return "hello";
    case 1: return "spawn";
    case 2: return "tell";
    case 3: return "ask";
    default: return "stop";
  }
}

} // namespace hive::wire
