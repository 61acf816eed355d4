// Capabilities: names are validated, the index finds providers by capability and tenant, and
// node_runtime::providers keeps the list current through spawn, load, passivation, stop and a
// restart of the runtime on the same store.

#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "actors/sample_kinds.hpp"
#include "protocols/errc.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/capabilities.hpp"
#include "runtime/node_runtime.hpp"
#include "support/node_process.hpp"

using namespace std::chrono_literals;
using namespace hive;

namespace {

agent_id id_of(const std::string& text) {
  return *parse_agent_id(text);
}

} // namespace

TEST(Capabilities, NamesAreValidatedNamingTheProblem) {
  EXPECT_FALSE(validate_capability("summarize", "x"));
  EXPECT_FALSE(validate_capability("tool:wc.v2-fast_1", "x"));
  for (std::string bad :
       std::vector<std::string>{"", "Summarize", "-x", "a b", "a/b", std::string(65, 'a')}) {
    auto err = validate_capability(bad, "capabilities");
    ASSERT_TRUE(err) << bad;
    EXPECT_EQ(code_of(err), errc::invalid_argument);
    EXPECT_NE(message_of(err).find("capabilities"), std::string::npos) << message_of(err);
  }
  EXPECT_FALSE(validate_capabilities({"a", "b"}, 2));
  auto many = validate_capabilities({"a", "b", "c"}, 2);
  ASSERT_TRUE(many);
  EXPECT_NE(message_of(many).find("agents.capabilities_per_agent_max"), std::string::npos);
  auto twice = validate_capabilities({"a", "a"}, 4);
  ASSERT_TRUE(twice);
  EXPECT_NE(message_of(twice).find("listed twice"), std::string::npos);
}

TEST(Capabilities, TheIndexFindsProvidersByNameAndTenantAndForgetsDroppedOnes) {
  capability_index idx;
  idx.add(id_of("acme/a"), {"sum", "echo"});
  idx.add(id_of("acme/b"), {"sum"});
  idx.add(id_of("beta/c"), {"sum"});
  idx.add(id_of("acme/a"), {"sum"}); // (again: no duplicate)
  EXPECT_EQ(idx.size(), 4u);
  auto all = idx.find("sum", "", 10);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].str(), "acme/a");
  EXPECT_EQ(all[2].str(), "beta/c");
  auto acme = idx.find("sum", "acme", 10);
  ASSERT_EQ(acme.size(), 2u);
  EXPECT_EQ(acme[1].str(), "acme/b");
  EXPECT_EQ(idx.find("sum", "beta", 10).size(), 1u);
  EXPECT_EQ(idx.find("sum", "acm", 10).size(), 0u) << "a tenant prefix is not a tenant";
  EXPECT_EQ(idx.find("sum", "", 2).size(), 2u);
  EXPECT_TRUE(idx.find("nothing", "", 10).empty());
  idx.drop("sum", id_of("acme/a"));
  EXPECT_EQ(idx.find("sum", "acme", 10).size(), 1u);
  EXPECT_EQ(idx.find("echo", "acme", 10).size(), 1u) << "only that capability's entry goes";
  EXPECT_EQ(idx.size(), 3u);
}

namespace {

class capabilities_runtime_test : public ::testing::Test {
public:
  void SetUp() override {
    cfg.node.name = "c1";
    cfg.node.scheduler_threads = 2;
    cfg.persistence.passivate_idle_ms = 300000;
    sys_cfg.emplace();
    configure_actor_system(*sys_cfg, cfg);
    sys.emplace(*sys_cfg);
    start_runtime();
  }

  void TearDown() override {
    stop_runtime();
    sys.reset();
  }

  void start_runtime() {
    kind_registry kinds;
    ASSERT_FALSE(register_sample_kinds(kinds));
    auto m = std::make_shared<metrics>();
    auto db = open_node_store(cfg, dir.path.string(), m);
    ASSERT_TRUE(db) << describe(db.error());
    auto r = node_runtime::start(*sys, cfg, std::move(kinds), m, {}, *db);
    ASSERT_TRUE(r) << describe(r.error());
    rt = std::move(*r);
  }

  void stop_runtime() {
    if (rt)
      rt->shutdown();
    rt.reset();
  }

  caf::expected<agent_view> spawn(const std::string& id, const std::string& kind,
                                  std::vector<std::string> caps) {
    std::promise<caf::expected<agent_view>> p;
    spawn_request req{id_of(id), kind};
    req.capabilities = std::move(caps);
    rt->spawn(std::move(req), [&](caf::expected<agent_view> v) { p.set_value(std::move(v)); });
    return p.get_future().get();
  }

  caf::error stop(const std::string& id) {
    std::promise<caf::error> p;
    rt->stop(id_of(id), [&](caf::error err) { p.set_value(std::move(err)); });
    return p.get_future().get();
  }

  caf::expected<std::string> ask(const std::string& id, const std::string& body) {
    std::promise<caf::expected<std::string>> p;
    rt->ask(id_of(id), agent_call{envelope{1, id_of(id).tenant, 0, "test", {}, 0}, body}, 5s,
            [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  /// Whether the providers of `name` become `want` within 10 s (a fresh activation shows as
  /// "starting" until its handle is in the directory).
  bool becomes(const std::string& name, const std::vector<std::string>& want,
               const std::string& tenant = {}) {
    for (int i = 0; i < 1000; ++i, std::this_thread::sleep_for(10ms))
      if (listed(name, tenant) == want)
        return true;
    return false;
  }

  /// "id:state" of each provider of `name`, in the order given.
  std::vector<std::string> listed(const std::string& name, const std::string& tenant = {}) {
    std::vector<std::string> out;
    for (auto& p : rt->providers(name, tenant, 100))
      out.push_back(p.id.str() + ":" + p.state);
    return out;
  }

  node_config cfg;
  test::temp_dir dir;
  std::optional<caf::actor_system_config> sys_cfg;
  std::optional<caf::actor_system> sys;
  std::unique_ptr<node_runtime> rt;
};

using strings = std::vector<std::string>;

} // namespace

TEST_F(capabilities_runtime_test, providers_follow_spawn_stop_passivation_and_a_restart) {
  ASSERT_TRUE(spawn("acme/s1", "counter", {"sum", "count"}));
  ASSERT_TRUE(spawn("acme/s2", "kv", {"sum"}));
  ASSERT_TRUE(spawn("beta/s3", "echo", {"sum"}));  // ephemeral
  ASSERT_TRUE(spawn("acme/plain", "counter", {})); // the kind's defaults: none
  EXPECT_TRUE(becomes("sum", {"acme/s1:active", "acme/s2:active", "beta/s3:active"}))
    << testing::PrintToString(listed("sum"));
  EXPECT_EQ(listed("sum", "beta"), (strings{"beta/s3:active"}));
  EXPECT_EQ(listed("count"), (strings{"acme/s1:active"}));
  // A bad declaration is refused before anything exists.
  auto bad = spawn("acme/bad", "counter", {"Not Valid"});
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of(bad.error()), errc::invalid_argument);
  EXPECT_FALSE(rt->find(id_of("acme/bad")));
  // Stopped: gone from the list (and from the index).
  ASSERT_FALSE(stop("acme/s2"));
  EXPECT_EQ(listed("sum"), (strings{"acme/s1:active", "beta/s3:active"}));
  auto entries = rt->capability_entries();
  EXPECT_EQ(entries, 3u) << "sum: s1, s3; count: s1";
  // A restart of the runtime on the same store: the stored agents are still providers,
  // passivated until a message activates them; the ephemeral one is gone.
  stop_runtime();
  ASSERT_NO_FATAL_FAILURE(start_runtime());
  EXPECT_EQ(listed("sum"), (strings{"acme/s1:passivated"}));
  EXPECT_EQ(listed("count"), (strings{"acme/s1:passivated"}));
  ASSERT_TRUE(ask("acme/s1", R"({"op":"get"})"));
  EXPECT_TRUE(becomes("sum", {"acme/s1:active"})) << testing::PrintToString(listed("sum"));
}

TEST_F(capabilities_runtime_test, the_least_loaded_provider_comes_first) {
  ASSERT_TRUE(spawn("acme/busy", "counter", {"add"}));
  ASSERT_TRUE(spawn("acme/idle", "counter", {"add"}));
  // Fill busy's mailbox with tells faster than it handles them (each one is journaled), then
  // look while it works through them: it shows a load, idle shows none, idle comes first.
  auto busy = id_of("acme/busy");
  bool seen = false;
  for (int round = 0; round < 20 && !seen; ++round) {
    for (int i = 0; i < 20000; ++i)
      ASSERT_FALSE(rt->tell(
        busy, agent_call{envelope{1, "acme", 0, "test", {}, 0}, R"({"op":"add","by":1})"}));
    auto list = rt->providers("add", "acme", 10);
    ASSERT_EQ(list.size(), 2u);
    if (list[1].id.str() == "acme/busy" && list[1].load > 0) {
      seen = true;
      EXPECT_EQ(list[0].id.str(), "acme/idle");
      EXPECT_EQ(list[0].load, 0u);
      std::cout << "busy showed a load of " << list[1].load << " in round " << round << std::endl;
    }
  }
  EXPECT_TRUE(seen) << "acme/busy never showed a load";
}
