// The call transport (runtime/transport.hpp): two transports in one process on 127.0.0.1,
// and raw sockets that speak the frame format badly.

#include "runtime/transport.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/inline_exec.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"

using namespace hive;
using namespace std::chrono_literals;

namespace {

caf::actor_system_config& plain_config(caf::actor_system_config& cfg) {
  cfg.set("scheduler.max-threads", size_t{2});
  cfg.set("logger.verbosity", caf::atom("quiet"));
  cfg.add_message_types<caf::id_block::hive>();
  cfg.add_error_category(errc_category, render_error);
  return cfg;
}

remote_call make_call(const std::string& op, const std::string& body) {
  remote_call req;
  req.op = op;
  req.id = *make_agent_id("acme", "a1");
  req.call.env.tenant = "acme";
  req.call.body = body;
  req.timeout_ms = 1000;
  return req;
}

/// Waits for one reply.
caf::expected<std::string> wait_reply(call_transport& t, const std::string& address,
                                      const remote_call& req,
                                      std::chrono::milliseconds timeout = 2000ms) {
  std::promise<caf::expected<std::string>> p;
  t.call(address, req, timeout, [&p](caf::expected<std::string> r) { p.set_value(std::move(r)); });
  auto f = p.get_future();
  if (f.wait_for(10s) != std::future_status::ready)
    return make_error(errc::internal, "no callback within 10 s");
  return f.get();
}

/// A TCP connection to 127.0.0.1:port (raw bytes).
int dial(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Whether the peer closes `fd` within 5 s (a read returns 0 or an error).
bool closed_by_peer(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[256];
  for (;;) {
    auto n = ::read(fd, buf, sizeof(buf));
    if (n == 0)
      return true;
    if (n < 0)
      return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

class transport_test : public ::testing::Test {
protected:
  transport_test() : sys(plain_config(cfg)) {}

  /// A transport on an ephemeral port whose handler is `h`.
  std::unique_ptr<call_transport> make(call_transport::call_handler h,
                                       const std::string& cluster_name = "hive",
                                       transport_limits limits = {}, tls_files tls = {}) {
    auto t = call_transport::start(sys, "127.0.0.1", 0, cluster_name, "n-" + cluster_name, limits,
                                   std::move(h), std::move(tls));
    EXPECT_TRUE(t) << describe(t.error());
    return t ? std::move(*t) : nullptr;
  }

  static std::string addr(const call_transport& t) {
    return "127.0.0.1:" + std::to_string(t.port());
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
};

/// A handler that keeps every call's `done` unanswered until the test answers it.
struct holder {
  std::mutex mtx;
  std::vector<call_transport::reply_fn> held;

  call_transport::call_handler handler() {
    return [this](remote_call, call_transport::reply_fn done) {
      std::lock_guard<std::mutex> lk{mtx};
      held.push_back(std::move(done));
    };
  }

  /// Waits (at most 5 s) until `n` calls are held; returns how many are.
  size_t wait_for(size_t n) {
    for (int i = 0; i < 1000; ++i) {
      {
        std::lock_guard<std::mutex> lk{mtx};
        if (held.size() >= n)
          return held.size();
      }
      std::this_thread::sleep_for(5ms);
    }
    std::lock_guard<std::mutex> lk{mtx};
    return held.size();
  }

  /// Answers every held call with `text` (and forgets them).
  void answer_all(const std::string& text) {
    std::vector<call_transport::reply_fn> all;
    {
      std::lock_guard<std::mutex> lk{mtx};
      all.swap(held);
    }
    for (auto& d : all)
      d(text);
  }
};

call_transport::call_handler echo_handler() {
  return [](remote_call req, call_transport::reply_fn done) {
    if (req.call.body == "fail")
      return done(make_error(errc::rejected, "told to fail"));
    done(req.op + ":" + req.id.str() + ":" + req.call.body);
  };
}

} // namespace

TEST_F(transport_test, a_call_gets_its_answer_and_an_error_keeps_its_code_and_text) {
  auto server = make(echo_handler());
  auto client = make(echo_handler());
  ASSERT_TRUE(server && client);
  auto r = wait_reply(*client, addr(*server), make_call("ask", R"({"x":1})"));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(*r, R"(ask:acme/a1:{"x":1})");
  auto e = wait_reply(*client, addr(*server), make_call("ask", "fail"));
  ASSERT_FALSE(e);
  EXPECT_EQ(code_of(e.error()), errc::rejected);
  EXPECT_NE(describe(e.error()).find("told to fail"), std::string::npos) << describe(e.error());
  auto big = std::string(1 << 20, 'b'); // 1 MiB: several reads and writes per frame
  auto rb = wait_reply(*client, addr(*server), make_call("ask", big));
  ASSERT_TRUE(rb) << describe(rb.error());
  EXPECT_EQ(rb->size(), big.size() + std::string{"ask:acme/a1:"}.size());
}

TEST_F(transport_test, tells_and_calls_from_one_thread_arrive_in_the_order_sent) {
  std::mutex mtx;
  std::vector<std::string> seen;
  auto server = make([&](remote_call req, call_transport::reply_fn done) {
    {
      std::lock_guard<std::mutex> lk{mtx};
      seen.push_back(req.call.body);
    }
    done(std::string{"ok"});
  });
  auto client = make(echo_handler());
  ASSERT_TRUE(server && client);
  std::vector<std::string> sent;
  std::atomic<int> answered{0};
  for (int i = 0; i < 5000; ++i) {
    auto body = std::to_string(i);
    sent.push_back(body);
    if (i % 7 == 0) {
      client->call(addr(*server), make_call("ask", body), 5000ms,
                   [&](caf::expected<std::string> r) {
                     EXPECT_TRUE(r);
                     ++answered;
                   });
    } else {
      ASSERT_FALSE(client->tell(addr(*server), make_call("tell", body)));
    }
  }
  auto last = wait_reply(*client, addr(*server), make_call("ask", "last"));
  ASSERT_TRUE(last) << describe(last.error());
  sent.push_back("last");
  std::lock_guard<std::mutex> lk{mtx};
  EXPECT_EQ(seen, sent);
  EXPECT_EQ(answered.load(), (5000 + 6) / 7);
  auto st = client->stats();
  EXPECT_GE(st.frames_sent, 5001u);
}

TEST_F(transport_test, no_listener_or_a_peer_that_goes_away_fails_the_call_as_unavailable) {
  auto client = make(echo_handler());
  ASSERT_TRUE(client);
  uint16_t free_port = 0;
  {
    auto tmp = make(echo_handler());
    free_port = tmp->port();
  } // closed: nobody listens there now
  auto r = wait_reply(*client, "127.0.0.1:" + std::to_string(free_port), make_call("ask", "x"));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::unavailable) << describe(r.error());
  // A server that holds the call and then shuts down: the waiting caller hears at once.
  holder h;
  auto server = make(h.handler());
  std::promise<caf::expected<std::string>> p;
  client->call(addr(*server), make_call("ask", "x"), 30000ms,
               [&p](caf::expected<std::string> r2) { p.set_value(std::move(r2)); });
  ASSERT_EQ(h.wait_for(1), 1u);
  server->shutdown();
  auto f = p.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  auto r2 = f.get();
  ASSERT_FALSE(r2);
  EXPECT_EQ(code_of(r2.error()), errc::unavailable) << describe(r2.error());
  h.answer_all("too late"); // answering on a closed connection is harmless
}

TEST_F(transport_test, an_unanswered_call_times_out_and_a_late_answer_is_ignored) {
  holder h;
  auto server = make(h.handler());
  auto client = make(echo_handler());
  auto t0 = std::chrono::steady_clock::now();
  auto r = wait_reply(*client, addr(*server), make_call("ask", "x"), 200ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::timeout) << describe(r.error());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms);
  ASSERT_EQ(h.wait_for(1), 1u);
  h.answer_all("late");
  // The connection still works.
  std::thread answerer{[&] {
    if (h.wait_for(1) == 1)
      h.answer_all("fresh");
  }};
  auto r2 = wait_reply(*client, addr(*server), make_call("ask", "y"));
  answerer.join();
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_EQ(*r2, "fresh");
}

TEST_F(transport_test, limits_are_enforced_with_clear_errors) {
  transport_limits small;
  small.frame_bytes_max = 64 << 10;
  small.send_queue_bytes_max = 1 << 20;
  small.calls_pending_max = 4;
  holder h;
  auto server = make(h.handler(), "hive", small);
  auto client = make(echo_handler(), "hive", small);
  // A call that would encode above frame_bytes_max fails at once, naming the limit.
  auto big = wait_reply(*client, addr(*server), make_call("ask", std::string(70 << 10, 'x')));
  ASSERT_FALSE(big);
  EXPECT_EQ(code_of(big.error()), errc::too_large);
  EXPECT_NE(describe(big.error()).find("cluster.frame_bytes_max"), std::string::npos);
  // calls_pending_max calls wait; the next one is refused as overloaded.
  std::atomic<int> done_count{0};
  for (int i = 0; i < 4; ++i)
    client->call(addr(*server), make_call("ask", "x"), 5000ms,
                 [&](caf::expected<std::string>) { ++done_count; });
  auto over = wait_reply(*client, addr(*server), make_call("ask", "y"));
  ASSERT_FALSE(over);
  EXPECT_EQ(code_of(over.error()), errc::overloaded) << describe(over.error());
  ASSERT_EQ(h.wait_for(4), 4u);
  h.answer_all("ok");
}

TEST_F(transport_test, a_peer_of_another_cluster_or_a_bad_frame_is_disconnected) {
  auto server = make(echo_handler(), "hive");
  auto stranger = make(echo_handler(), "other");
  ASSERT_TRUE(server && stranger);
  auto r = wait_reply(*stranger, addr(*server), make_call("ask", "x"));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::unavailable) << describe(r.error());
  EXPECT_EQ(server->stats().connections_refused, 1u);
  // A length above frame_bytes_max: closed without reading the rest.
  int fd = dial(server->port());
  ASSERT_GE(fd, 0);
  unsigned char huge[13] = {0x7f, 0xff, 0xff, 0xff, 2};
  ASSERT_EQ(::write(fd, huge, sizeof(huge)), 13);
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
  // A call before any hello: closed.
  fd = dial(server->port());
  ASSERT_GE(fd, 0);
  unsigned char early[15] = {0, 0, 0, 11, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0};
  ASSERT_EQ(::write(fd, early, sizeof(early)), 15);
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
  // Garbage: closed.
  fd = dial(server->port());
  ASSERT_GE(fd, 0);
  unsigned char junk[20] = {0, 0, 0, 16, 1, 9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7};
  ASSERT_EQ(::write(fd, junk, sizeof(junk)), 20);
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
  // And the server still serves a proper client.
  auto client = make(echo_handler(), "hive");
  auto ok = wait_reply(*client, addr(*server), make_call("ask", "after"));
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(*ok, "ask:acme/a1:after");
}

TEST_F(transport_test, a_first_connection_after_a_quiet_spell_gets_its_full_time_to_say_hello) {
  // The hello is due within 2 s of the connection, not of when the server began to wait for
  // one: after 2.5 s with no connection, a new one must not be cut off at the next sweep
  // (every 50 ms) while it is still setting up (its TLS handshake, under load).
  auto server = make(echo_handler());
  std::this_thread::sleep_for(2500ms);
  int fd = dial(server->port());
  ASSERT_GE(fd, 0);
  std::this_thread::sleep_for(400ms); // eight sweeps, no hello yet
  pollfd p{fd, POLLIN, 0};
  bool closed = ::poll(&p, 1, 0) > 0; // (nothing is ever sent to a silent dialler)
  EXPECT_FALSE(closed) << "closed 400 ms after it connected, without its 2 s to say hello";
  ::close(fd);
}

TEST_F(transport_test, connections_beyond_the_bound_are_closed_and_members_still_get_in) {
  transport_limits few;
  few.connections_max = 3;
  auto server = make(echo_handler(), "hive", few);
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    fds.push_back(dial(server->port()));
    ASSERT_GE(fds.back(), 0);
  }
  // The fourth is closed at once; the three stay open.
  int extra = dial(server->port());
  ASSERT_GE(extra, 0);
  EXPECT_TRUE(closed_by_peer(extra));
  ::close(extra);
  EXPECT_EQ(server->stats().connections_refused, 1u);
  // Once one closes, a member connects and is served.
  ::close(fds.back());
  fds.pop_back();
  auto client = make(echo_handler());
  caf::expected<std::string> ok{make_error(errc::internal, "not tried")};
  for (int i = 0; i < 50; ++i) { // (the server notices the closed socket shortly)
    ok = wait_reply(*client, addr(*server), make_call("ask", "in"));
    if (ok)
      break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(*ok, "ask:acme/a1:in");
  // Connections that never say hello do not keep their slot: closed after 2 s.
  for (auto fd : fds) {
    EXPECT_TRUE(closed_by_peer(fd));
    ::close(fd);
  }
}

/// Where the actors of the inline test ran, and the answers they give.
struct run_log {
  std::mutex mtx;
  /// Call body -> the transport thread that read it, the thread its actor ran on.
  std::map<std::string, std::thread::id> io;
  std::map<std::string, std::thread::id> ran_on;
  std::map<std::string, call_transport::reply_fn> done;
};

/// An actor named like a router (runtime/inline_exec.hpp lets routers run inline), and one
/// with another name: each notes its thread and answers the call whose body it got.
struct router_named_state {
  static inline const char* name = "hive.router";
};
struct other_named_state {
  static inline const char* name = "test.other";
};

template <class State>
caf::behavior note_thread(caf::stateful_actor<State>* self, std::shared_ptr<run_log> log) {
  (void)self;
  return {[log](agent_call& call) {
    call_transport::reply_fn done;
    {
      std::lock_guard<std::mutex> lk{log->mtx};
      log->ran_on[call.body] = std::this_thread::get_id();
      done = std::move(log->done[call.body]);
    }
    done(std::string{"ran"});
  }};
}

TEST_F(transport_test, actors_a_call_makes_ready_run_on_the_io_thread_only_when_they_allow_it) {
  auto log = std::make_shared<run_log>();
  auto router = sys.spawn(note_thread<router_named_state>, log);
  auto other = sys.spawn(note_thread<other_named_state>, log);
  auto handler = [&](remote_call req, call_transport::reply_fn done) {
    {
      std::lock_guard<std::mutex> lk{log->mtx};
      log->io[req.call.body] = std::this_thread::get_id();
      log->done[req.call.body] = std::move(done);
    }
    send_here(req.op == "router" ? router : other, std::move(req.call));
  };
  auto server = make(handler);
  transport_limits off;
  off.inline_runs = false;
  auto server_off = make(handler, "hive", off);
  auto client = make([](remote_call, call_transport::reply_fn done) { done(std::string{}); });
  ASSERT_TRUE(server && server_off && client);
  // Warm: the connections exist, so each call below is one frame read alone.
  ASSERT_TRUE(wait_reply(*client, addr(*server), make_call("other", "warm")));
  ASSERT_TRUE(wait_reply(*client, addr(*server_off), make_call("other", "warm-off")));
  auto before = server->stats();
  auto r1 = wait_reply(*client, addr(*server), make_call("router", "r1"));
  ASSERT_TRUE(r1) << describe(r1.error());
  EXPECT_EQ(*r1, "ran");
  auto r2 = wait_reply(*client, addr(*server), make_call("other", "o1"));
  ASSERT_TRUE(r2) << describe(r2.error());
  auto r3 = wait_reply(*client, addr(*server_off), make_call("router", "r-off"));
  ASSERT_TRUE(r3) << describe(r3.error());
  auto after = server->stats();
  // Outside a transport callback there is no executor: the scheduler runs the actor.
  EXPECT_EQ(inline_executor::current(), nullptr);
  std::lock_guard<std::mutex> lk{log->mtx};
  EXPECT_EQ(log->ran_on["r1"], log->io["r1"])
    << "the router-named actor did not run on the I/O thread";
  EXPECT_NE(log->ran_on["o1"], log->io["o1"])
    << "an actor that does not allow it ran on the I/O thread";
  EXPECT_NE(log->ran_on["o1"], std::thread::id{});
  EXPECT_NE(log->ran_on["r-off"], std::thread::id{});
  EXPECT_NE(log->ran_on["r-off"], log->io["r-off"])
    << "inline runs are off, yet it ran on the I/O thread";
  EXPECT_EQ(after.actors_inline - before.actors_inline, 1u);
  EXPECT_EQ(after.actors_handed_over - before.actors_handed_over, 1u);
  EXPECT_EQ(server_off->stats().actors_inline, 0u);
  caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(other, caf::exit_reason::user_shutdown);
}

TEST_F(transport_test, shutdown_fails_waiting_calls_and_refuses_new_ones) {
  holder h;
  auto server = make(h.handler());
  auto client = make(echo_handler());
  std::promise<caf::expected<std::string>> p;
  client->call(addr(*server), make_call("ask", "x"), 30000ms,
               [&p](caf::expected<std::string> r) { p.set_value(std::move(r)); });
  client->shutdown();
  auto r = p.get_future().get();
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::shutting_down);
  auto again = wait_reply(*client, addr(*server), make_call("ask", "y"));
  ASSERT_FALSE(again);
  EXPECT_EQ(code_of(again.error()), errc::shutting_down);
  EXPECT_TRUE(client->tell(addr(*server), make_call("tell", "z")));
  server->shutdown();
  h.answer_all("after the end");
}

/// Mutual TLS: CA `a` signs the members' certificates, CA `b` a stranger's.
class transport_tls_test : public transport_test {
protected:
  void SetUp() override {
    ASSERT_TRUE(test::make_ca(dir.path, "a") && test::make_ca(dir.path, "b"))
      << "openssl failed (is the openssl tool installed?)";
    for (auto name : {"m1", "m2"})
      ASSERT_TRUE(test::make_signed_cert(dir.path, name, "a"));
    ASSERT_TRUE(test::make_signed_cert(dir.path, "x1", "b"));
  }

  tls_files files(const std::string& name, const std::string& ca) const {
    return test::cert_files(dir.path, name, ca);
  }

  test::temp_dir dir;
};

TEST_F(transport_tls_test, members_with_certificates_of_the_cluster_ca_call_and_tell_over_tls) {
  std::mutex mtx;
  std::vector<std::string> seen;
  auto server = make(
    [&](remote_call req, call_transport::reply_fn done) {
      {
        std::lock_guard<std::mutex> lk{mtx};
        seen.push_back(req.call.body);
      }
      done(req.op + ":" + req.call.body);
    },
    "hive", {}, files("m1", "a"));
  auto client = make(echo_handler(), "hive", {}, files("m2", "a"));
  ASSERT_TRUE(server && client);
  auto r = wait_reply(*client, addr(*server), make_call("ask", "hello"));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(*r, "ask:hello");
  // A large call (many TLS records each way) and a stream of tells keep their bytes and order.
  auto big = std::string(1 << 20, 'b');
  auto rb = wait_reply(*client, addr(*server), make_call("ask", big));
  ASSERT_TRUE(rb) << describe(rb.error());
  EXPECT_EQ(rb->size(), big.size() + 4);
  std::vector<std::string> sent{"hello", big};
  for (int i = 0; i < 2000; ++i) {
    sent.push_back(std::to_string(i));
    ASSERT_FALSE(client->tell(addr(*server), make_call("tell", sent.back())));
  }
  ASSERT_TRUE(wait_reply(*client, addr(*server), make_call("ask", "last")));
  sent.push_back("last");
  {
    std::lock_guard<std::mutex> lk{mtx};
    EXPECT_EQ(seen, sent);
  }
  // An SSL session is the I/O thread's: nothing was written from a caller's thread.
  EXPECT_EQ(client->stats().direct_writes, 0u);
  EXPECT_EQ(server->stats().direct_writes, 0u);
  EXPECT_EQ(server->stats().tls_refused, 0u);
}

TEST_F(transport_tls_test, a_peer_without_a_certificate_of_the_cluster_ca_is_refused) {
  auto server = make(echo_handler(), "hive", {}, files("m1", "a"));
  ASSERT_TRUE(server);
  // A certificate from another CA (which trusts only its own CA): refused, by both sides.
  auto stranger = make(echo_handler(), "hive", {}, files("x1", "b"));
  ASSERT_TRUE(stranger);
  auto r = wait_reply(*stranger, addr(*server), make_call("ask", "x"));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::unavailable) << describe(r.error());
  // A stranger that trusts our CA but whose own certificate is from another: the server refuses.
  auto half =
    make(echo_handler(), "hive", {},
         {files("x1", "b").cert_file, files("x1", "b").key_file, files("m1", "a").ca_file});
  ASSERT_TRUE(half);
  auto rh = wait_reply(*half, addr(*server), make_call("ask", "x"));
  ASSERT_FALSE(rh);
  EXPECT_EQ(code_of(rh.error()), errc::unavailable) << describe(rh.error());
  // Plain TCP to a TLS transport, and TLS to a plain one: refused.
  auto plain = make(echo_handler());
  ASSERT_TRUE(plain);
  auto rp = wait_reply(*plain, addr(*server), make_call("ask", "x"));
  ASSERT_FALSE(rp);
  EXPECT_EQ(code_of(rp.error()), errc::unavailable) << describe(rp.error());
  auto member = make(echo_handler(), "hive", {}, files("m2", "a"));
  ASSERT_TRUE(member);
  auto rm = wait_reply(*member, addr(*plain), make_call("ask", "x"));
  ASSERT_FALSE(rm);
  EXPECT_EQ(code_of(rm.error()), errc::unavailable) << describe(rm.error());
  EXPECT_GE(member->stats().tls_refused, 1u);
  // The server counted its refusals (stranger, half, plain) and still serves a member.
  auto ok = wait_reply(*member, addr(*server), make_call("ask", "in"));
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(*ok, "ask:acme/a1:in");
  EXPECT_GE(server->stats().tls_refused, 3u);
  EXPECT_EQ(server->stats().frames_received, 2u); // the member's hello and call only
}

TEST_F(transport_tls_test, tls_files_that_cannot_be_loaded_are_refused_at_start_naming_the_key) {
  auto start = [&](tls_files f) {
    auto t = call_transport::start(sys, "127.0.0.1", 0, "hive", "n", {}, echo_handler(), f);
    return t ? std::string{} : describe(t.error());
  };
  auto good = files("m1", "a");
  auto missing = start({(dir.path / "nope.crt").string(), good.key_file, good.ca_file});
  EXPECT_NE(missing.find("cluster.tls_cert_file"), std::string::npos) << missing;
  EXPECT_NE(missing.find("nope.crt"), std::string::npos) << missing;
  auto wrong_key = start({good.cert_file, files("m2", "a").key_file, good.ca_file});
  EXPECT_NE(wrong_key.find("cluster.tls_key_file"), std::string::npos) << wrong_key;
  auto bad_ca = start({good.cert_file, good.key_file, good.key_file});
  EXPECT_NE(bad_ca.find("cluster.tls_ca_file"), std::string::npos) << bad_ca;
  auto no_ca = start({good.cert_file, good.key_file, {}});
  EXPECT_NE(no_ca.find("cluster.tls_ca_file"), std::string::npos) << no_ca;
  EXPECT_EQ(start(good), "");
}
