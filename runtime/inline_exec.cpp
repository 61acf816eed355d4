#include "runtime/inline_exec.hpp"

#include <cassert>
#include <cstring>

namespace hive {

thread_local inline_executor* inline_executor::current_ = nullptr;

inline_executor::inline_executor(caf::actor_system& sys) : caf::execution_unit(&sys) {
  jobs_.reserve(resumes_max);
}

inline_executor::~inline_executor() {
  assert(jobs_.empty());
}

bool inline_executor::may_run_inline(caf::resumable* job) {
  if (job->subtype() != caf::resumable::scheduled_actor)
    return false;
  auto* self = static_cast<caf::scheduled_actor*>(job);
  auto* name = self->name();
  if (std::strcmp(name, "hive.router") == 0)
    return true;
  return std::strcmp(name, "hive.agent") == 0 && agent_runs_inline(self);
}

void inline_executor::exec_later(caf::resumable* job) {
  // (Called from `enqueue` of an actor that was idle: the reference it added is ours now.)
  if (current_ != this) {
    // Not inside `run` on this executor's thread (an actor resumed here keeps this as its
    // context until it runs elsewhere): the scheduler takes it, as with no context at all.
    system().scheduler().enqueue(job);
    return;
  }
  if (!allow_ || jobs_.size() >= resumes_max || !may_run_inline(job))
    return hand_over(job);
  jobs_.push_back(job);
}

void inline_executor::hand_over(caf::resumable* job) {
  handed_over_.fetch_add(1, std::memory_order_relaxed);
  system().scheduler().enqueue(job);
}

void inline_executor::drain() {
  assert(!draining_);
  draining_ = true;
  // FIFO: an actor resumed here makes others ready (a router its agent, the agent the
  // router again); they are appended and run in turn (exec_later keeps at most
  // `resumes_max` of them and hands the rest to the scheduler).
  for (size_t i = 0; i < jobs_.size(); ++i) {
    auto* job = jobs_[i];
    resumed_inline_.fetch_add(1, std::memory_order_relaxed);
    switch (job->resume(this, messages_per_resume_max)) {
      case caf::resumable::resume_later:
        hand_over(job); // (keeps the reference: the scheduler owns it now)
        break;
      case caf::resumable::done:
      case caf::resumable::awaiting_message:
      case caf::resumable::shutdown_execution_unit: caf::intrusive_ptr_release(job); break;
    }
  }
  jobs_.clear();
  draining_ = false;
}

} // namespace hive
