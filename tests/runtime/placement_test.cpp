// Rendezvous placement: stable scores, an even spread, and minimal movement when a node joins.

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/cluster.hpp"

using namespace hive;

namespace {

std::string owner(const std::vector<std::string>& nodes, const std::string& id) {
  std::string best;
  uint64_t best_score = 0;
  for (auto& n : nodes) {
    auto s = rendezvous_score(n, id);
    if (best.empty() || s > best_score) {
      best = n;
      best_score = s;
    }
  }
  return best;
}

} // namespace

TEST(placement, scores_are_stable_across_builds_and_processes) {
  // Fixed values: a change of the hash moves every agent of a running cluster.
  EXPECT_EQ(rendezvous_score("n1", "acme/c1"), rendezvous_score("n1", "acme/c1"));
  EXPECT_NE(rendezvous_score("n1", "acme/c1"), rendezvous_score("n2", "acme/c1"));
  EXPECT_NE(rendezvous_score("n1", "acme/c1"), rendezvous_score("n1", "acme/c2"));
  // The separator keeps ("n1", "2/x") and ("n12", "/x") apart.
  EXPECT_NE(rendezvous_score("n1", "2/x"), rendezvous_score("n12", "/x"));
  EXPECT_EQ(rendezvous_score("node1", "acme/c1"), 0x82095139ee7f5fecULL)
    << std::hex << rendezvous_score("node1", "acme/c1");
}

TEST(placement, ids_spread_evenly_and_a_joining_node_takes_only_its_share) {
  std::vector<std::string> three{"node1", "node2", "node3"};
  std::vector<std::string> four{"node1", "node2", "node3", "node4"};
  constexpr int n = 30000;
  std::map<std::string, int> per_node;
  int moved = 0;
  int moved_elsewhere = 0;
  for (int i = 0; i < n; ++i) {
    auto id = "acme/agent-" + std::to_string(i);
    auto before = owner(three, id);
    auto after = owner(four, id);
    ++per_node[before];
    if (before != after) {
      ++moved;
      if (after != "node4")
        ++moved_elsewhere;
    }
  }
  for (auto& [node, count] : per_node)
    EXPECT_NEAR(count, n / 3, n / 30) << node << " holds " << count << " of " << n;
  // Rendezvous hashing: only ids whose new owner is the new node move (about 1/4 of them).
  EXPECT_EQ(moved_elsewhere, 0);
  EXPECT_NEAR(moved, n / 4, n / 40);
}
