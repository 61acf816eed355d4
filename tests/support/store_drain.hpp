#pragma once

// Ends tests that run replica rounds on in-process stores. A round returns once a majority has
// answered; the other answers' writes may still be running, and their completions hold a
// replicator, and through it a store. The last reference to a store must not drop on that
// store's own completion thread (store.cpp asserts it), so a fixture waits for them first.

#include "storage/store.hpp"

namespace hive::test {

/// Waits until every write queued so far on each store of `stores` (a map of name to
/// `std::shared_ptr<store>`) has completed and its completion ran. Two passes: a completion
/// on one store may queue a write on another.
template <class StoreMap>
void drain_completions(const StoreMap& stores) {
  for (int pass = 0; pass < 2; ++pass)
    for (auto& [_, db] : stores)
      db->drain();
}

} // namespace hive::test
