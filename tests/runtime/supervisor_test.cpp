// Deterministic tests of the supervisor: exact restart sequences per strategy, restart types,
// intensity -> escalation, and back-off delays on CAF's virtual clock.

#include "runtime/supervisor.hpp"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "protocols/errc.hpp"
#include "support/caf_fixture.hpp"

using namespace std::chrono_literals;
using namespace hive;

namespace {

using crash_atom = caf::atom_constant<caf::atom("crash")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;

/// A child that crashes (abnormal exit) or finishes (normal exit) on command.
caf::behavior worker(caf::event_based_actor* self, int) {
  return {
    [self](crash_atom) { self->quit(make_error(errc::agent_failed, "crash on command")); },
    [self](finish_atom) { self->quit(caf::exit_reason::normal); },
  };
}

/// Records what the supervisor did to its children.
struct journal {
  std::vector<std::string> starts;
  std::vector<std::string> removed;
  std::map<std::string, caf::actor> current;
};

child_spec make_child(std::shared_ptr<journal> j, std::string id,
                      restart_type restart = restart_type::permanent) {
  child_spec spec;
  spec.id = id;
  spec.restart = restart;
  spec.start = [j, id](caf::local_actor* sup) -> caf::expected<caf::actor> {
    auto h = sup->system().spawn(worker, 0); // UBSan trips on arg-less spawns in CAF 0.17
    j->starts.push_back(id);
    j->current[id] = h;
    return h;
  };
  spec.on_removed = [j, id](const caf::error&) { j->removed.push_back(id); };
  return spec;
}

supervisor_flags flags(restart_strategy s, int64_t intensity = 100) {
  supervisor_flags f;
  f.name = "test";
  f.strategy = s;
  f.intensity_max = intensity;
  f.period = 1s;
  f.backoff_initial = 10ms;
  f.backoff_max = 40ms;
  f.jitter_percent = 0;
  f.seed = 42;
  return f;
}

class supervisor_test : public hive::test::caf_fixture {
public:
  std::shared_ptr<journal> j = std::make_shared<journal>();

  caf::actor start(supervisor_flags f, std::vector<std::string> ids) {
    std::vector<child_spec> children;
    for (auto& id : ids)
      children.push_back(make_child(j, id));
    auto sup = spawn_supervisor(sys, std::move(f), std::move(children));
    run();
    return sup;
  }

  void crash(const std::string& id) {
    caf::anon_send(j->current.at(id), crash_atom::value);
    run();
  }

  /// Returns the exit reason of `a` once it terminates (set by an attached functor).
  std::shared_ptr<std::optional<caf::error>> watch(const caf::actor& a) {
    auto out = std::make_shared<std::optional<caf::error>>();
    caf::actor_cast<caf::abstract_actor*>(a)->attach_functor(
      [out](const caf::error& reason) { *out = reason; });
    return out;
  }
};

using starts = std::vector<std::string>;

} // namespace

TEST_F(supervisor_test, one_for_one_restarts_only_the_failed_child_after_the_backoff) {
  auto sup = start(flags(restart_strategy::one_for_one), {"a", "b", "c"});
  ASSERT_EQ(j->starts, (starts{"a", "b", "c"}));
  auto a = j->current["a"];
  auto c = j->current["c"];
  crash("b");
  EXPECT_EQ(j->starts, (starts{"a", "b", "c"})) << "restarted before the back-off elapsed";
  ASSERT_EQ(next_timeout_in(), caf::timespan{10ms});
  advance(9ms);
  EXPECT_EQ(j->starts.size(), 3u) << "restarted 1 ms early";
  advance(1ms);
  EXPECT_EQ(j->starts, (starts{"a", "b", "c", "b"}));
  EXPECT_EQ(j->current["a"], a);
  EXPECT_EQ(j->current["c"], c);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, one_for_all_stops_all_then_restarts_all_in_start_order) {
  auto sup = start(flags(restart_strategy::one_for_all), {"a", "b", "c"});
  auto a_done = watch(j->current["a"]);
  auto c_done = watch(j->current["c"]);
  crash("b");
  EXPECT_TRUE(a_done->has_value()) << "sibling a was not stopped";
  EXPECT_TRUE(c_done->has_value()) << "sibling c was not stopped";
  advance(10ms);
  EXPECT_EQ(j->starts, (starts{"a", "b", "c", "a", "b", "c"}));
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, rest_for_one_restarts_the_failed_child_and_those_after_it) {
  auto sup = start(flags(restart_strategy::rest_for_one), {"a", "b", "c"});
  auto a = j->current["a"];
  auto a_done = watch(a);
  auto c_done = watch(j->current["c"]);
  crash("b");
  EXPECT_FALSE(a_done->has_value()) << "a started before b and must survive";
  EXPECT_TRUE(c_done->has_value()) << "c started after b and must be stopped";
  advance(10ms);
  EXPECT_EQ(j->starts, (starts{"a", "b", "c", "b", "c"}));
  EXPECT_EQ(j->current["a"], a);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, transient_child_is_restarted_after_a_crash_but_not_a_normal_exit) {
  std::vector<child_spec> children{make_child(j, "t", restart_type::transient)};
  auto sup = spawn_supervisor(sys, flags(restart_strategy::one_for_one), std::move(children));
  run();
  crash("t");
  advance(10ms);
  EXPECT_EQ(j->starts, (starts{"t", "t"}));
  caf::anon_send(j->current["t"], finish_atom::value);
  run();
  advance(1s);
  EXPECT_EQ(j->starts, (starts{"t", "t"}));
  EXPECT_EQ(j->removed, (starts{"t"}));
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, temporary_child_is_never_restarted) {
  std::vector<child_spec> children{make_child(j, "t", restart_type::temporary)};
  auto sup = spawn_supervisor(sys, flags(restart_strategy::one_for_one), std::move(children));
  run();
  crash("t");
  advance(1s);
  EXPECT_EQ(j->starts, (starts{"t"}));
  EXPECT_EQ(j->removed, (starts{"t"}));
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, permanent_child_is_restarted_even_after_a_normal_exit) {
  auto sup = start(flags(restart_strategy::one_for_one), {"p"});
  caf::anon_send(j->current["p"], finish_atom::value);
  run();
  advance(10ms);
  EXPECT_EQ(j->starts, (starts{"p", "p"}));
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, backoff_doubles_per_restart_and_is_capped) {
  auto sup = start(flags(restart_strategy::one_for_one), {"a"});
  std::vector<caf::timespan> delays;
  for (int i = 0; i < 4; ++i) {
    crash("a");
    auto d = next_timeout_in();
    ASSERT_TRUE(d.has_value());
    delays.push_back(*d);
    advance(*d);
  }
  EXPECT_EQ(delays, (std::vector<caf::timespan>{10ms, 20ms, 40ms, 40ms}));
  EXPECT_EQ(j->starts.size(), 5u);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, backoff_jitter_stays_within_bounds_and_is_reproducible_per_seed) {
  auto f = flags(restart_strategy::one_for_one);
  f.jitter_percent = 20;
  f.backoff_max = 1s;
  std::vector<caf::timespan> first_run;
  for (int round = 0; round < 2; ++round) {
    auto jr = std::make_shared<journal>();
    std::vector<child_spec> children{make_child(jr, "a")};
    auto sup = spawn_supervisor(sys, f, std::move(children));
    run();
    std::vector<caf::timespan> delays;
    for (int i = 0; i < 5; ++i) {
      caf::anon_send(jr->current["a"], crash_atom::value);
      run();
      auto d = next_timeout_in();
      ASSERT_TRUE(d.has_value());
      auto base = caf::timespan{10ms} * (1 << i);
      EXPECT_GE(*d, base * 8 / 10) << "restart " << i;
      EXPECT_LE(*d, base * 12 / 10) << "restart " << i;
      delays.push_back(*d);
      advance(*d);
    }
    if (round == 0)
      first_run = delays;
    else
      EXPECT_EQ(delays, first_run) << "same seed must give the same delays";
    caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
    run();
  }
  std::set<caf::timespan> distinct(first_run.begin(), first_run.end());
  EXPECT_GT(distinct.size(), 1u);
}

TEST_F(supervisor_test, exceeding_the_intensity_escalates_and_stops_all_children) {
  auto sup = start(flags(restart_strategy::one_for_one, 2), {"a", "b"});
  auto sup_done = watch(sup);
  auto b_done = watch(j->current["b"]);
  crash("a");
  advance(10ms);
  crash("a");
  advance(20ms);
  EXPECT_FALSE(sup_done->has_value()) << "two restarts are within an intensity of 2";
  crash("a");
  ASSERT_TRUE(sup_done->has_value()) << "third restart within the period must escalate";
  EXPECT_EQ(code_of(**sup_done), errc::escalated);
  EXPECT_TRUE(b_done->has_value()) << "children must be stopped on escalation";
  EXPECT_EQ(j->starts, (starts{"a", "b", "a", "a"}));
}

TEST_F(supervisor_test, restarts_outside_the_period_do_not_count_towards_the_intensity) {
  auto sup = start(flags(restart_strategy::one_for_one, 2), {"a"});
  auto sup_done = watch(sup);
  for (int i = 0; i < 5; ++i) {
    crash("a");
    advance(1100ms); // past the 1 s period: the window forgets earlier restarts
  }
  EXPECT_FALSE(sup_done->has_value());
  EXPECT_EQ(j->starts.size(), 6u);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, escalation_reaches_the_parent_which_restarts_the_child_supervisor) {
  // root (one_for_one) -> mid (intensity 0) -> worker w
  auto mid_starts = std::make_shared<int>(0);
  child_spec mid;
  mid.id = "mid";
  mid.start = [this, mid_starts](caf::local_actor* parent) -> caf::expected<caf::actor> {
    ++*mid_starts;
    auto f = flags(restart_strategy::one_for_one, 0);
    f.name = "mid";
    return spawn_supervisor(parent, f, {make_child(j, "w")});
  };
  auto root_flags = flags(restart_strategy::one_for_one, 5);
  root_flags.name = "root";
  auto root = spawn_supervisor(sys, root_flags, {mid});
  run();
  ASSERT_EQ(*mid_starts, 1);
  ASSERT_EQ(j->starts, (starts{"w"}));
  auto root_done = watch(root);
  crash("w"); // mid may not restart anything: it escalates, root sees mid die
  EXPECT_EQ(*mid_starts, 1);
  advance(10ms);
  EXPECT_EQ(*mid_starts, 2) << "root must restart the escalated supervisor";
  EXPECT_EQ(j->starts, (starts{"w", "w"})) << "the new mid starts its child again";
  EXPECT_FALSE(root_done->has_value());
  caf::anon_send_exit(root, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, terminate_child_stops_it_for_good) {
  auto sup = start(flags(restart_strategy::one_for_one), {"a", "b"});
  auto a_done = watch(j->current["a"]);
  self->request(sup, caf::infinite, terminate_child_atom::value, std::string{"a"});
  run();
  advance(1s);
  EXPECT_TRUE(a_done->has_value());
  EXPECT_EQ(j->removed, (starts{"a"}));
  EXPECT_EQ(j->starts, (starts{"a", "b"}));
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, start_child_adds_a_child_and_rejects_a_duplicate_id) {
  auto sup = start(flags(restart_strategy::one_for_one), {"a"});
  caf::actor got;
  caf::error err;
  auto first = self->request(sup, caf::infinite, start_child_atom::value, make_child(j, "n"));
  run();
  first.receive([&](caf::actor& h) { got = h; }, [&](caf::error& e) { err = e; });
  EXPECT_TRUE(got);
  EXPECT_EQ(j->starts, (starts{"a", "n"}));
  auto second = self->request(sup, caf::infinite, start_child_atom::value, make_child(j, "n"));
  run();
  second.receive([&](caf::actor&) { ADD_FAILURE() << "duplicate accepted"; },
                 [&](caf::error& e) { err = e; });
  EXPECT_EQ(code_of(err), errc::invalid_argument);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(supervisor_test, exit_message_stops_children_then_the_supervisor) {
  auto sup = start(flags(restart_strategy::one_for_one), {"a", "b"});
  auto a_done = watch(j->current["a"]);
  auto b_done = watch(j->current["b"]);
  auto sup_done = watch(sup);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  run();
  EXPECT_TRUE(a_done->has_value());
  EXPECT_TRUE(b_done->has_value());
  EXPECT_TRUE(sup_done->has_value());
  EXPECT_EQ(j->starts.size(), 2u) << "nothing may restart during shutdown";
}

namespace {

using hib_atom = caf::atom_constant<caf::atom("thib")>;
using wake_atom = caf::atom_constant<caf::atom("twake")>;
using sweep_atom = caf::atom_constant<caf::atom("tsweep")>;

/// Test hooks into the supervisor's state (run inside it, so the test stays deterministic).
supervisor_extension hibernation_hooks(std::shared_ptr<journal> j,
                                       std::shared_ptr<std::vector<std::string>> swept,
                                       std::shared_ptr<size_t> count) {
  return [j, swept, count](supervisor_actor* self) -> caf::message_handler {
    return {
      [self, j, count](hib_atom, const std::string& id) {
        auto h = j->current.at(id);
        EXPECT_FALSE(self->state.hibernate_child(id, h)) << id;
        caf::anon_send(h, finish_atom::value); // its actor leaves by itself
        *count = self->state.hibernated_count();
      },
      [self, count](wake_atom, const std::string& id) {
        EXPECT_TRUE(self->state.wake_child(id)) << id;
        *count = self->state.hibernated_count();
      },
      [self, swept, count](sweep_atom) {
        *swept = self->state.sweep_hibernated();
        *count = self->state.hibernated_count();
      },
    };
  };
}

} // namespace

TEST_F(supervisor_test, a_sweep_returns_the_children_hibernated_since_the_previous_one) {
  auto swept = std::make_shared<std::vector<std::string>>();
  auto count = std::make_shared<size_t>(0);
  std::vector<child_spec> children;
  for (auto id : {"a", "b", "c"})
    children.push_back(make_child(j, id));
  auto sup = spawn_supervisor(sys, flags(restart_strategy::one_for_one), std::move(children),
                              hibernation_hooks(j, swept, count));
  run();
  auto do_ = [&](auto atom, std::string id = {}) {
    if (id.empty())
      caf::anon_send(sup, atom);
    else
      caf::anon_send(sup, atom, id);
    run();
  };
  do_(hib_atom::value, "a");
  do_(hib_atom::value, "b");
  EXPECT_EQ(*count, 2u);
  EXPECT_EQ(j->starts, (starts{"a", "b", "c"})) << "a hibernated child's exit is no crash";
  do_(sweep_atom::value);
  EXPECT_EQ(*swept, (starts{})) << "the first sweep only marks";
  do_(wake_atom::value, "b"); // woken: its mark goes
  EXPECT_EQ(*count, 1u);
  EXPECT_EQ(j->starts, (starts{"a", "b", "c", "b"}));
  do_(sweep_atom::value);
  EXPECT_EQ(*swept, (starts{"a"}));
  do_(hib_atom::value, "b"); // asleep again: a fresh mark
  do_(sweep_atom::value);
  EXPECT_EQ(*swept, (starts{"a"}));
  do_(sweep_atom::value);
  EXPECT_EQ(*swept, (starts{"a", "b"}));
  EXPECT_EQ(*count, 2u) << "a sweep removes nothing itself";
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}
