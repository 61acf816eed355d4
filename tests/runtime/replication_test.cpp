// The replicator's own side of the wire (runtime/replication.hpp) on one real store: malformed
// replication calls get clear errors and change nothing; epochs are fenced (an older prepare
// or append is refused, naming the promise); and the bundle codec refuses truncated input.

#include <chrono>
#include <future>
#include <string>

#include <gtest/gtest.h>

#include "protocols/errc.hpp"
#include "runtime/replication.hpp"
#include "support/node_process.hpp"

using namespace hive;

namespace {

class replication_test : public ::testing::Test {
protected:
  test::temp_dir dir;
  std::shared_ptr<store> db;
  std::shared_ptr<replicator> rep;

  void SetUp() override {
    store_options o;
    o.path = (dir.path / "db").string();
    auto s = store::open(std::move(o));
    ASSERT_TRUE(s) << describe(s.error());
    db = std::shared_ptr<store>{std::move(*s)};
    rep = replicator::make(
      db, "n1", replication_options{},
      [] {
        return std::vector<replica_peer>{{"n1", {}, true}};
      },
      [](const std::string&, const remote_call&, std::chrono::milliseconds,
         replicator::reply_fn done) { done(make_error(errc::unavailable, "no peers here")); });
  }

  void TearDown() override {
    rep->shutdown();
  }

  caf::expected<std::string> call(const std::string& op, const std::string& body) {
    remote_call req;
    req.op = op;
    req.id = *parse_agent_id("acme/r");
    req.call.body = body;
    std::promise<caf::expected<std::string>> p;
    rep->handle(req, [&p](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  std::string meta_bytes() {
    records::meta_record m;
    m.hdr = {"acme/r", 1, 0};
    m.kind = "counter";
    m.persistence = "journaled";
    return records::encode(m);
  }
};

} // namespace

TEST_F(replication_test, malformed_calls_get_clear_errors_and_store_nothing) {
  auto bad_prepare = call("r.prepare", "not a bundle");
  ASSERT_FALSE(bad_prepare);
  EXPECT_EQ(code_of(bad_prepare.error()), errc::invalid_argument) << describe(bad_prepare.error());
  auto bad_append = call("r.append", "not a record");
  ASSERT_FALSE(bad_append);
  EXPECT_EQ(code_of(bad_append.error()), errc::corrupt_record) << describe(bad_append.error());
  auto bad_sync = call("r.sync", replicator::pack({"5"}));
  ASSERT_FALSE(bad_sync);
  EXPECT_EQ(code_of(bad_sync.error()), errc::invalid_argument);
  auto unknown = call("r.nonsense", "");
  ASSERT_FALSE(unknown);
  EXPECT_NE(message_of(unknown.error()).find("r.nonsense"), std::string::npos);
  auto stored = db->get_meta(replicator::copy_key("acme/r"));
  ASSERT_TRUE(stored);
  EXPECT_FALSE(stored->has_value()) << "a malformed call stored a copy";
}

TEST_F(replication_test, a_copy_refuses_an_older_epoch_after_promising_a_newer_one) {
  auto ok = call("r.prepare", replicator::pack({"7", "n2", meta_bytes(), "n1,n2,n3"}));
  ASSERT_TRUE(ok) << describe(ok.error());
  auto older = call("r.prepare", replicator::pack({"6", "n3", meta_bytes(), "n1,n2,n3"}));
  ASSERT_FALSE(older);
  EXPECT_EQ(code_of(older.error()), errc::fenced);
  EXPECT_NE(message_of(older.error()).find("promised epoch 7 to n2"), std::string::npos)
    << message_of(older.error());
  records::event_record ev;
  ev.hdr = {"acme/r", 6, 1};
  ev.payload = "1";
  auto stale = call("r.append", records::encode(ev));
  ASSERT_FALSE(stale);
  EXPECT_EQ(code_of(stale.error()), errc::fenced);
  ev.hdr.epoch = 7;
  auto current = call("r.append", records::encode(ev));
  EXPECT_TRUE(current) << describe(current.error());
  auto state = call("r.query", "");
  ASSERT_TRUE(state);
  EXPECT_NE(state->find(R"("last_seq":1)"), std::string::npos) << *state;
  EXPECT_NE(state->find(R"("promised":7)"), std::string::npos) << *state;
}

TEST(replication_bundle, truncated_bundles_are_refused) {
  auto whole = replicator::pack({"ab", "", "cde"});
  auto parts = replicator::unpack(whole);
  ASSERT_TRUE(parts);
  EXPECT_EQ(*parts, (std::vector<std::string>{"ab", "", "cde"}));
  for (size_t cut = 1; cut < whole.size(); ++cut) {
    auto r = replicator::unpack(std::string_view{whole}.substr(0, cut));
    if (cut == 6 || cut == 10) // part boundaries: a shorter, valid bundle
      continue;
    EXPECT_FALSE(r) << "cut at " << cut;
  }
}
