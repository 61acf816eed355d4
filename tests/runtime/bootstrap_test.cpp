// Bootstrap, logging and the kind registry: the small pieces every node starts with.

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protocols/errc.hpp"
#include "runtime/bootstrap.hpp"
#include "runtime/kind.hpp"
#include "runtime/logging.hpp"

using namespace hive;

TEST(bootstrap, scheduler_is_sized_to_the_machine_unless_configured) {
  node_config cfg;
  auto cores = std::thread::hardware_concurrency();
  EXPECT_EQ(scheduler_threads(cfg), cores == 0 ? 2u : cores);
  cfg.node.scheduler_threads = 3;
  EXPECT_EQ(scheduler_threads(cfg), 3u);
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  EXPECT_EQ(sys.scheduler().num_workers(), 3u)
    << "CAF's default would start 4 workers regardless of the machine";
}

TEST(bootstrap, hive_errors_render_with_their_code_and_message) {
  node_config cfg;
  cfg.node.scheduler_threads = 1;
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  auto err = make_error(errc::agent_exists, "agent acme/c1 exists");
  EXPECT_EQ(sys.render(err).find("agent_exists"), 0u) << sys.render(err);
  EXPECT_NE(sys.render(err).find("acme/c1"), std::string::npos);
  EXPECT_EQ(code_of(err), errc::agent_exists);
  EXPECT_EQ(message_of(err), "agent acme/c1 exists");
  EXPECT_EQ(code_of(caf::error{}), errc::none);
  EXPECT_EQ(message_of(caf::error{}), "");
  EXPECT_EQ(code_of(caf::make_error(caf::sec::request_timeout)), errc::timeout);
}

TEST(logging, every_line_is_json_with_node_level_event_actor_and_correlation_id) {
  char path[] = "/tmp/hive-log-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  int saved = ::dup(2);
  ::dup2(fd, 2);
  log::init("n7", "debug");
  log::event(spdlog::level::info, "agent_started",
             {{"restarts", 2}, {"note", "a \"quoted\"\nline"}}, "acme/c1", 0xabc);
  log::event(spdlog::level::trace, "too_detailed"); // below the level: not written
  auto errors_before = log::error_lines();
  log::event(spdlog::level::err, "something_failed");
  EXPECT_EQ(log::error_lines(), errors_before + 1);
  ::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(fd);
  log::init("-", "info");
  std::ifstream in{path};
  std::string first, second, third;
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_FALSE(std::getline(in, third)) << "trace line was written: " << third;
  ::unlink(path);
  auto j = nlohmann::json::parse(first, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << first;
  EXPECT_EQ(j["node"], "n7");
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["event"], "agent_started");
  EXPECT_EQ(j["actor"], "acme/c1");
  EXPECT_EQ(j["cid"], "0000000000000abc");
  EXPECT_EQ(j["restarts"], 2);
  EXPECT_EQ(j["note"], "a \"quoted\"\nline");
  EXPECT_TRUE(j.contains("ts"));
  auto k = nlohmann::json::parse(second, nullptr, false);
  ASSERT_FALSE(k.is_discarded()) << second;
  EXPECT_EQ(k["level"], "error");
  EXPECT_FALSE(k.contains("actor")) << "empty actor and cid are omitted";
  EXPECT_FALSE(k.contains("cid"));
}

namespace {

kind_spec trivial_kind(std::string name) {
  return {std::move(name), "test",
          [](const nlohmann::json&) -> caf::expected<std::unique_ptr<agent>> {
            return make_error(errc::invalid_argument, "never made");
          }};
}

} // namespace

TEST(kind_registry, names_are_validated_and_unique) {
  kind_registry kinds;
  EXPECT_FALSE(kinds.add(trivial_kind("counter")));
  EXPECT_EQ(code_of(kinds.add(trivial_kind("counter"))), errc::invalid_argument);
  EXPECT_EQ(code_of(kinds.add(trivial_kind("Counter"))), errc::invalid_agent_id);
  EXPECT_EQ(code_of(kinds.add(trivial_kind(""))), errc::invalid_agent_id);
  EXPECT_EQ(code_of(kinds.add(kind_spec{"nofactory", "", {}})), errc::invalid_argument);
  EXPECT_FALSE(kinds.add(trivial_kind("alpha")));
  EXPECT_EQ(kinds.names(), (std::vector<std::string>{"alpha", "counter"}));
  EXPECT_NE(kinds.find("counter"), nullptr);
  EXPECT_EQ(kinds.find("nope"), nullptr);
}

TEST(call_context, parses_lazily_and_bounds_the_nesting) {
  agent_id id{"acme", "a"};
  envelope env;
  std::string ok = R"({"a":[1,{"b":2}]})";
  call_context c1{id, env, ok, 3};
  auto j = c1.json();
  ASSERT_TRUE(j);
  EXPECT_EQ((**j)["a"][1]["b"], 2);
  std::string deep = R"({"a":[[[1]]]})"; // 4 levels
  call_context c2{id, env, deep, 3};
  auto d = c2.json();
  ASSERT_FALSE(d);
  EXPECT_EQ(code_of(d.error()), errc::too_large);
  std::string bad = "{nope";
  call_context c3{id, env, bad, 3};
  auto b = c3.json();
  ASSERT_FALSE(b);
  EXPECT_EQ(code_of(b.error()), errc::invalid_argument);
  EXPECT_EQ(c3.body_text(), "{nope");
}
