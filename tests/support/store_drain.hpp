#pragma once

// Ends tests that run replica rounds on in-process stores. A round returns once a majority has
// answered; the other answers' writes may still be running, and their completions hold a
// replicator, and through it a store. The last reference to a store must not drop on that
// store's own completion thread (store.cpp asserts it), so a fixture waits for them first.

#include <chrono>
#include <thread>

#include "storage/store.hpp"

namespace hive::test {

/// Waits until every write queued so far on each store of `stores` (a map of name to
/// `std::shared_ptr<store>`) has completed and its completion ran. Several passes: a
/// completion on one store may queue a write on another, whose completion queues one on a
/// third (a round's late answer, then its repair).
template <class StoreMap>
void drain_completions(const StoreMap& stores) {
  for (int pass = 0; pass < 4; ++pass)
    for (auto& [_, db] : stores)
      db->drain();
}

/// For a fixture that has released everything else holding its stores (replicators): drains
/// until `stores` holds the only reference to each (a completion still running may hold a
/// replicator, and through it its store), so that the fixture drops the last one, never a
/// store's own completion thread. Gives up after about 5 s (the store then asserts).
template <class StoreMap>
void drain_until_only_held_here(const StoreMap& stores) {
  for (int round = 0; round < 500; ++round) {
    drain_completions(stores);
    bool only_here = true;
    for (auto& [_, db] : stores)
      only_here = only_here && db.use_count() == 1;
    if (only_here)
      return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

} // namespace hive::test
