#include "runtime/membership.hpp"

#include <algorithm>

namespace hive {

member_table::member_table(member_info self, size_t members_max)
    : self_(std::move(self)), members_max_(std::max<size_t>(members_max, 1)) {
  // nop
}

int member_table::status_rank(const std::string& status) noexcept {
  if (status == "joining")
    return 0;
  if (status == "up" || status == "suspect")
    return 1;
  if (status == "leaving")
    return 2;
  if (status == "down")
    return 3;
  return 4; // removed (and anything unknown: never takes over a known entry)
}

void member_table::set_status(member_info& known, const std::string& status,
                              clock::time_point now) {
  known.status = status;
  if (status == "down" || status == "removed")
    since_[known.name] = now;
  else
    since_.erase(known.name);
}

bool member_table::introduce(const member_info& m) {
  if (m.name == self_.name)
    return false;
  auto i = others_.find(m.name);
  if (i != others_.end() && i->second.incarnation > m.incarnation)
    return false; // an older incarnation than the one known: stale
  if (i == others_.end() && full())
    return false; // the list is full
  std::string status = m.status == "joining" ? "joining" : "up";
  bool fresh =
    i == others_.end() || i->second.incarnation < m.incarnation || i->second.status != status;
  auto& entry = others_[m.name];
  entry = m;
  entry.status = std::move(status);
  since_.erase(m.name);
  linked_[m.name] = true;
  return fresh;
}

bool member_table::link_lost(const std::string& name, clock::time_point now) {
  linked_[name] = false;
  auto i = others_.find(name);
  if (i == others_.end())
    return false;
  auto rank = status_rank(i->second.status);
  if (rank <= 1) {
    set_status(i->second, "down", now);
    return true;
  }
  if (i->second.status == "leaving") { // it handed its agents off and went
    set_status(i->second, "removed", now);
    return true;
  }
  return false;
}

std::vector<std::string> member_table::expire(clock::time_point now,
                                              std::chrono::milliseconds removed_after) {
  std::vector<std::string> out;
  for (auto i = since_.begin(); i != since_.end();) {
    auto m = others_.find(i->first);
    if (m == others_.end()) {
      i = since_.erase(i);
      continue;
    }
    if (now - i->second < removed_after || linked(m->first)) {
      ++i;
      continue;
    }
    out.push_back(m->first);
    if (m->second.status == "down") {
      m->second.status = "removed";
      i->second = now;
      ++i;
    } else {
      others_.erase(m);
      linked_.erase(i->first);
      i = since_.erase(i);
    }
  }
  return out;
}

member_table::change member_table::merge(const std::vector<member_info>& list,
                                         const std::string& from, clock::time_point now) {
  change out;
  auto live = [](const std::string& status) { return status_rank(status) <= 1; };
  for (auto& m : list) {
    if (m.name == self_.name)
      continue; // nobody else speaks for this node
    auto i = others_.find(m.name);
    if (i == others_.end()) {
      if (m.status == "removed" || full())
        continue; // gone already, or no room
      auto& known = others_.emplace(m.name, m).first->second;
      set_status(known, m.status == "suspect" ? "up" : m.status, now);
      linked_[m.name] = false;
      out.changed = true;
      if (live(m.status))
        out.connect.push_back(m.name);
      continue;
    }
    auto& known = i->second;
    if (m.incarnation > known.incarnation) {
      // A restart of that node: the old incarnation is gone, and so is any link to it.
      known = m;
      set_status(known, m.status == "suspect" ? "up" : m.status, now);
      linked_[m.name] = false;
      out.changed = true;
      if (live(m.status))
        out.connect.push_back(m.name);
    } else if (m.incarnation == known.incarnation
               && status_rank(m.status) > status_rank(known.status)
               && (m.name == from || !linked(m.name) || m.status == "up"
                   || m.status == "leaving")) {
      // `up` (from joining) and `leaving` only the member itself declares: whoever passes
      // them on repeats its word, so they are believed from anyone (its own gossip may have
      // been lost). `down` and `removed` are another node's verdicts: a live link outweighs
      // them.
      set_status(known, m.status, now);
      out.changed = true;
    } else if (m.incarnation == known.incarnation && m.name == from) {
      known.agents = m.agents; // each member reports its own count; not worth a gossip
    }
  }
  return out;
}

const member_info* member_table::find(const std::string& name) const {
  auto i = others_.find(name);
  return i == others_.end() ? nullptr : &i->second;
}

bool member_table::linked(const std::string& name) const {
  auto i = linked_.find(name);
  return i != linked_.end() && i->second;
}

std::vector<member_info> member_table::list() const {
  std::vector<member_info> out;
  out.reserve(others_.size() + 1);
  out.push_back(self_);
  for (auto& [_, m] : others_)
    out.push_back(m);
  std::sort(out.begin(), out.end(),
            [](const member_info& a, const member_info& b) { return a.name < b.name; });
  return out;
}

} // namespace hive
