#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <caf/all.hpp>

namespace hive {

/// Runs actors that a callback of the call transport made ready on the transport's own thread,
/// right after the callback, instead of waking a scheduler worker for them.
///
/// Why: a call from another node reaches its agent through the transport's I/O thread, then a
/// router, then the agent. Handing the router to a sleeping worker costs a thread wake-up per
/// call (a futex wake and, in a VM, an inter-processor interrupt), the largest cost of a
/// cross-node round trip here (bench/HISTORY.md). Erlang's schedulers poll their sockets and
/// run the process in the same thread; this does the same for the calls that allow it.
///
/// Which actors run here (`may_run_inline`): routers, and agents of ephemeral, non-blocking
/// kinds. Those never wait for the transport inside a handler (a replicated agent confirms its
/// epoch over the transport synchronously, a blocking kind waits for its asks; both stay on the
/// workers, or the I/O thread would wait for itself). Every other actor made ready goes to the
/// scheduler as before.
///
/// Bounds: at most `resumes_max` resumptions per callback and `messages_per_resume_max`
/// messages per resumption; an actor with more work left goes to the scheduler. A callback
/// opened with `allow = false` (the I/O thread has more frames waiting: parallelism beats
/// latency there) sends everything to the scheduler.
class inline_executor final : public caf::execution_unit {
public:
  /// Resumptions per callback.
  static constexpr size_t resumes_max = 16;
  /// Messages an actor handles per resumption here.
  static constexpr size_t messages_per_resume_max = 4;

  explicit inline_executor(caf::actor_system& sys);
  ~inline_executor() override;

  inline_executor(const inline_executor&) = delete;
  inline_executor& operator=(const inline_executor&) = delete;

  /// Runs `f` with this executor as the thread's `current()`, then runs (or hands to the
  /// scheduler) the actors `f` made ready through it. Not re-entrant on one executor.
  template <class F>
  void run(bool allow, F&& f) {
    auto* prev = current_;
    current_ = this;
    allow_ = allow;
    f();
    drain();
    current_ = prev;
  }

  /// The executor of the callback running on this thread, or nullptr (then a message goes
  /// through the scheduler, as `caf::anon_send` does). Pass it as the execution unit of an
  /// `enqueue` (see `send_here`).
  [[nodiscard]] static caf::execution_unit* current() noexcept {
    return current_;
  }

  /// `caf::execution_unit`: queues `job` to run after the callback, or hands it to the
  /// scheduler when it may not run here.
  void exec_later(caf::resumable* job) override;

  /// Counters since start (for metrics and tests).
  struct counters {
    /// Actors resumed on the transport's thread.
    uint64_t resumed_inline = 0;
    /// Actors made ready in a callback that went to the scheduler.
    uint64_t handed_over = 0;
  };
  [[nodiscard]] counters stats() const noexcept {
    return {resumed_inline_.load(std::memory_order_relaxed),
            handed_over_.load(std::memory_order_relaxed)};
  }

  /// Whether `job` may run on the transport's thread (see the class comment).
  [[nodiscard]] static bool may_run_inline(caf::resumable* job);

private:
  void drain();
  void hand_over(caf::resumable* job);

  static thread_local inline_executor* current_;
  std::vector<caf::resumable*> jobs_;
  bool allow_ = false;
  bool draining_ = false;
  std::atomic<uint64_t> resumed_inline_{0};
  std::atomic<uint64_t> handed_over_{0};
};

/// Sends `xs...` to `to` without a sender, like `caf::anon_send`, but on the current
/// `inline_executor` when there is one (the receiver may then run on this thread).
template <class... Ts>
void send_here(const caf::actor& to, Ts&&... xs) {
  if (!to)
    return;
  to->enqueue(
    caf::make_mailbox_element(nullptr, caf::make_message_id(), {}, std::forward<Ts>(xs)...),
    inline_executor::current());
}

/// Whether an agent actor (`caf::scheduled_actor` named "hive.agent") may run on the
/// transport's thread: its kind is ephemeral and not blocking (agent_actor.cpp).
[[nodiscard]] bool agent_runs_inline(caf::scheduled_actor* agent) noexcept;

} // namespace hive
