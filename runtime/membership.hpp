#pragma once

#include <map>
#include <string>
#include <vector>

#include "protocols/cluster.hpp"

namespace hive {

/// The rules of a node's member list, without actors or sockets (the node manager in
/// cluster.cpp applies them; tests/runtime/membership_test.cpp checks them under lost and
/// reordered messages).
///
/// - Each member speaks for itself: nothing another node says about this node changes its
///   own entry, and a member's own report of its status (`leaving`) is always believed.
/// - A larger incarnation replaces a smaller one (a restart); a smaller one is stale and
///   ignored.
/// - `down` and `leaving` are reported by a third node only when this node has no live link
///   to that member: a live connection is better evidence than another node's detector.
/// - A member that introduces itself over a live link is up (a thawed node comes back at the
///   same incarnation; a restarted one with a new one).
class member_table {
public:
  explicit member_table(member_info self);

  /// What a change asks of the caller.
  struct change {
    /// Whether the list changed (spread it: gossip).
    bool changed = false;
    /// Members to connect to (new, or back up under a new incarnation).
    std::vector<std::string> connect;
  };

  /// This node's own entry.
  [[nodiscard]] const member_info& self() const noexcept {
    return self_;
  }
  [[nodiscard]] member_info& self() noexcept {
    return self_;
  }

  /// `m` introduced itself over a live link (a join request, or the reply to ours). Ignored
  /// (returns false) for this node's own name or a stale incarnation.
  bool introduce(const member_info& m);

  /// The live link to `name` broke: an up member is down. True if that changed its status.
  bool link_lost(const std::string& name);

  /// Takes in a member list gossiped by the member `from` (empty: unknown sender).
  change merge(const std::vector<member_info>& list, const std::string& from);

  /// The entry of `name` (nullptr if unknown; this node's own entry is `self()`).
  [[nodiscard]] const member_info* find(const std::string& name) const;

  /// Whether this node has a live link to `name`.
  [[nodiscard]] bool linked(const std::string& name) const;

  /// Every entry, this node's included, in name order.
  [[nodiscard]] std::vector<member_info> list() const;

  /// Other members, by name.
  [[nodiscard]] const std::map<std::string, member_info>& others() const noexcept {
    return others_;
  }

private:
  member_info self_;
  std::map<std::string, member_info> others_;
  std::map<std::string, bool> linked_;
};

} // namespace hive
