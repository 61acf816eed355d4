#pragma once

// A GoogleTest fixture around CAF 0.17's deterministic test coordinator: actors run only when
// the test says so (`run()`), and time only moves when the test advances the virtual clock.

#include <chrono>
#include <optional>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <gtest/gtest.h>

#include "protocols/errc.hpp"
#include "protocols/type_ids.hpp"

namespace hive::test {

/// Builds an actor system that uses the test coordinator.
class caf_fixture : public ::testing::Test {
public:
  using scheduler_type = caf::scheduler::test_coordinator;

  static caf::actor_system_config& init_config(caf::actor_system_config& cfg) {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.inline-output", true);
    cfg.set("middleman.network-backend", caf::atom("testing"));
    cfg.set("middleman.manual-multiplexing", true);
    cfg.set("middleman.workers", size_t{0});
    cfg.add_message_types<caf::id_block::hive>();
    cfg.add_error_category(errc_category, render_error);
    return cfg;
  }

  caf_fixture()
      : sys(init_config(cfg)), self(sys, true),
        sched(dynamic_cast<scheduler_type&>(sys.scheduler())) {}

  ~caf_fixture() override {
    run();
  }

  /// Runs every ready actor until no message is left (does not advance time).
  size_t run() {
    return sched.run();
  }

  /// Advances the virtual clock by `d` and runs everything that became ready.
  size_t advance(caf::timespan d) {
    auto n = sched.advance_time(d);
    run();
    return n;
  }

  /// Time from now to the next pending timeout, if any.
  std::optional<caf::timespan> next_timeout_in() {
    auto& clock = sched.clock();
    if (!clock.has_pending_timeout())
      return std::nullopt;
    return clock.schedule().begin()->first - clock.now();
  }

  /// Pops and returns the next message in the scoped actor's mailbox as `T`, or nullopt.
  template <class... Ts>
  std::optional<std::tuple<Ts...>> receive_now() {
    std::optional<std::tuple<Ts...>> result;
    self->receive([&](Ts&... xs) { result = std::make_tuple(xs...); }, [&](caf::error&) {},
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return result;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  scheduler_type& sched;
};

} // namespace hive::test
