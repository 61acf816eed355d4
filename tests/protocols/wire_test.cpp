// The binary protocol's codec (protocols/wire.hpp): round trips of every request and response
// kind, the framing rules (length prefix, multiple of 8, bound), and refusal of bytes that are
// not a message, with a seeded random corruption sweep (HIVE_TEST_SEED to repeat one).

#include <cstdlib>
#include <iostream>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "protocols/wire.hpp"

namespace {

using namespace hive;
using namespace hive::wire;

request round_trip(const request& in) {
  std::string buf;
  append_frame(buf, in);
  auto f = next_frame(buf, 1 << 20);
  EXPECT_TRUE(f);
  EXPECT_EQ(f->consumed, buf.size());
  auto out = decode_request(f->payload);
  EXPECT_TRUE(out) << describe(out.error());
  return out ? *out : request{};
}

TEST(wire, every_request_kind_round_trips) {
  auto h = round_trip({7, 9, hello{1, "hive_0123_abc"}});
  EXPECT_EQ(h.id, 7u);
  EXPECT_EQ(h.correlation_id, 9u);
  ASSERT_TRUE(std::holds_alternative<hello>(h.body));
  EXPECT_EQ(std::get<hello>(h.body).token, "hive_0123_abc");
  EXPECT_EQ(kind_name(h), "hello");

  auto s = round_trip({1, 0, spawn{"acme/c1", "counter", R"({"x":1})", true, "transient", "n2"}});
  ASSERT_TRUE(std::holds_alternative<spawn>(s.body));
  auto& sp = std::get<spawn>(s.body);
  EXPECT_EQ(sp.agent, "acme/c1");
  EXPECT_EQ(sp.kind, "counter");
  EXPECT_EQ(sp.config, R"({"x":1})");
  EXPECT_TRUE(sp.breaker);
  EXPECT_EQ(sp.restart, "transient");
  EXPECT_EQ(sp.node, "n2");

  auto t = round_trip({2, 0, tell{"acme/c1", R"({"op":"add","by":2})", "cli", 42}});
  ASSERT_TRUE(std::holds_alternative<tell>(t.body));
  EXPECT_EQ(std::get<tell>(t.body).client_id, "cli");
  EXPECT_EQ(std::get<tell>(t.body).client_seq, 42u);

  auto a = round_trip({UINT64_MAX, 3, ask{"acme/c1", R"({"op":"get"})", 250, "", 0}});
  EXPECT_EQ(a.id, UINT64_MAX);
  ASSERT_TRUE(std::holds_alternative<ask>(a.body));
  EXPECT_EQ(std::get<ask>(a.body).timeout_ms, 250u);
  EXPECT_EQ(std::get<ask>(a.body).body, R"({"op":"get"})");

  auto st = round_trip({4, 0, stop{"acme/c1"}});
  ASSERT_TRUE(std::holds_alternative<stop>(st.body));
  EXPECT_EQ(std::get<stop>(st.body).agent, "acme/c1");
}

TEST(wire, responses_round_trip_with_their_error_codes) {
  std::string buf;
  append_frame(buf, response{5, 6, true, R"({"value":3})", errc::none, 0});
  append_frame(buf, response{8, 0, false, "tenant 'a' exceeds ...", errc::rate_limited, 1500});
  auto f1 = next_frame(buf, 1 << 20);
  ASSERT_TRUE(f1);
  auto r1 = decode_response(f1->payload);
  ASSERT_TRUE(r1);
  EXPECT_TRUE(r1->ok);
  EXPECT_EQ(r1->id, 5u);
  EXPECT_EQ(r1->text, R"({"value":3})");
  auto f2 = next_frame(std::string_view{buf}.substr(f1->consumed), 1 << 20);
  ASSERT_TRUE(f2);
  auto r2 = decode_response(f2->payload);
  ASSERT_TRUE(r2);
  EXPECT_FALSE(r2->ok);
  EXPECT_EQ(r2->code, errc::rate_limited);
  EXPECT_EQ(r2->retry_after_ms, 1500u);
  EXPECT_EQ(f1->consumed + f2->consumed, buf.size());
}

TEST(wire, framing_waits_for_whole_frames_and_enforces_its_rules) {
  std::string buf;
  append_frame(buf, request{1, 0, ask{"a/b", std::string(1000, 'x'), 0, "", 0}});
  // The little-endian length prefix names the payload's size, a multiple of 8.
  uint32_t len = static_cast<unsigned char>(buf[0]) | (static_cast<unsigned char>(buf[1]) << 8)
    | (static_cast<unsigned char>(buf[2]) << 16)
    | (static_cast<uint32_t>(static_cast<unsigned char>(buf[3])) << 24);
  EXPECT_EQ(len + 4, buf.size());
  EXPECT_EQ(len % 8, 0u);
  // Any prefix of a frame is incomplete, not an error.
  for (size_t n : {size_t{0}, size_t{3}, size_t{4}, size_t{11}, buf.size() - 1}) {
    auto f = next_frame(std::string_view{buf}.substr(0, n), 1 << 20);
    ASSERT_TRUE(f) << n;
    EXPECT_EQ(f->consumed, 0u) << n;
  }
  // Above the bound: too_large, naming both sizes, before the payload arrives.
  auto big = next_frame(std::string_view{buf}.substr(0, 4), 512);
  ASSERT_FALSE(big);
  EXPECT_EQ(code_of(big.error()), errc::too_large);
  EXPECT_NE(message_of(big.error()).find(std::to_string(len)), std::string::npos);
  // Lengths that cannot be a Cap'n Proto message.
  for (uint32_t bad : {0u, 4u, 9u, 1001u}) {
    std::string h(4, '\0');
    for (int i = 0; i < 4; ++i)
      h[i] = static_cast<char>((bad >> (8 * i)) & 0xff);
    auto f = next_frame(h, 1 << 20);
    ASSERT_FALSE(f) << bad;
    EXPECT_EQ(code_of(f.error()), errc::invalid_argument) << bad;
  }
}

TEST(wire, garbage_and_truncated_messages_are_errors_not_crashes) {
  std::string zeros(64, '\0'); // a segment table claiming one empty segment, then zeros
  auto r = decode_request(zeros);
  // Either refused or decoded as a default request: never a crash; a default hello is fine.
  if (!r) {
    EXPECT_EQ(code_of(r.error()), errc::invalid_argument);
  }
  std::string ff(64, '\xff');
  auto r2 = decode_request(ff);
  ASSERT_FALSE(r2);
  EXPECT_EQ(code_of(r2.error()), errc::invalid_argument);
  EXPECT_FALSE(decode_request(std::string(7, 'a')));
  EXPECT_FALSE(decode_response(std::string(12, '\0')));

  // Seeded sweep: flip bytes of a valid frame; decoding returns a value or an error.
  uint64_t seed = std::random_device{}();
  if (auto* s = std::getenv("HIVE_TEST_SEED"))
    seed = std::strtoull(s, nullptr, 10);
  std::cout << "seed " << seed << " (HIVE_TEST_SEED to repeat)\n";
  std::mt19937_64 rng{seed};
  std::string buf;
  append_frame(buf, request{3, 4, spawn{"acme/c1", "counter", "{}", false, "", ""}});
  auto payload = buf.substr(4);
  size_t refused = 0;
  for (int i = 0; i < 5000; ++i) {
    auto p = payload;
    auto flips = 1 + rng() % 4;
    for (size_t k = 0; k < flips; ++k)
      p[rng() % p.size()] = static_cast<char>(rng());
    auto d = decode_request(p);
    if (!d) {
      ++refused;
      EXPECT_EQ(code_of(d.error()), errc::invalid_argument);
    }
  }
  std::cout << refused << " of 5000 corrupted payloads refused\n";
  EXPECT_GT(refused, 0u) << "seed " << seed;
}

} // namespace

TEST(errc, a_second_context_string_is_a_hint_not_part_of_the_message) {
  // The cluster adds where an agent is to an agent_not_found answer (runtime/cluster.cpp).
  caf::error hinted{static_cast<uint8_t>(errc::agent_not_found), errc_category,
                    caf::make_message(std::string{"no agent acme/x here"}, std::string{"n3"})};
  EXPECT_EQ(code_of(hinted), errc::agent_not_found);
  EXPECT_EQ(message_of(hinted), "no agent acme/x here");
  EXPECT_EQ(describe(hinted), "agent_not_found: no agent acme/x here");
  EXPECT_EQ(message_of(make_error(errc::timeout, "late")), "late");
}
