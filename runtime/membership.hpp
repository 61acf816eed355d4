#pragma once

#include <chrono>
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
/// - `down` and `removed` are taken from a third node only when this node has no live link
///   to that member: a live connection is better evidence than another node's detector.
///   `up` (from joining) and `leaving`, which only the member itself declares, are taken from
///   anyone: a third node repeats the member's word, which may have been lost on the way here
///   (tests/runtime/membership_protocol_test.cpp loses it).
/// - A member that introduces itself over a live link is up, or joining if it says so (a
///   thawed node comes back at the same incarnation; a restarted one with a new one).
/// - Otherwise the status of one incarnation only moves forward: joining -> up -> leaving ->
///   down -> removed (`status_rank`). A leaving member whose link ends has left: removed.
///   A member down for `removed_after` is removed; a removed entry is dropped from the list
///   after `removed_after` more (`expire`).
/// - At most `members_max` entries (this node's included): new names beyond it are ignored.
class member_table {
public:
  explicit member_table(member_info self, size_t members_max = 1024);

  using clock = std::chrono::steady_clock;

  /// joining 0, up 1, leaving 2, down 3, removed 4 (suspect, a local overlay, counts as up).
  [[nodiscard]] static int status_rank(const std::string& status) noexcept;

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

  /// The live link to `name` broke: an up or joining member is down, a leaving one removed.
  /// True if that changed its status.
  bool link_lost(const std::string& name, clock::time_point now = clock::now());

  /// Takes in a member list gossiped by the member `from` (empty: unknown sender).
  change merge(const std::vector<member_info>& list, const std::string& from,
               clock::time_point now = clock::now());

  /// Ages the list at `now`: members down for `removed_after` become removed; removed ones
  /// are dropped after `removed_after` more. Returns the names whose entry changed or went.
  std::vector<std::string> expire(clock::time_point now, std::chrono::milliseconds removed_after);

  /// The entry of `name` (nullptr if unknown; this node's own entry is `self()`).
  [[nodiscard]] const member_info* find(const std::string& name) const;

  /// Whether this node has a live link to `name`.
  [[nodiscard]] bool linked(const std::string& name) const;

  /// Every entry, this node's included, in name order.
  [[nodiscard]] std::vector<member_info> list() const;

  /// Whether the list has room for a member it does not know yet.
  [[nodiscard]] bool full() const noexcept {
    return others_.size() + 1 >= members_max_;
  }

  /// Other members, by name.
  [[nodiscard]] const std::map<std::string, member_info>& others() const noexcept {
    return others_;
  }

private:
  /// Sets `known`'s status, noting when it became down or removed.
  void set_status(member_info& known, const std::string& status, clock::time_point now);

  member_info self_;
  size_t members_max_;
  std::map<std::string, member_info> others_;
  std::map<std::string, bool> linked_;
  /// When each down or removed member got that status.
  std::map<std::string, clock::time_point> since_;
};

} // namespace hive
