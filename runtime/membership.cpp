#include "runtime/membership.hpp"

#include <algorithm>

namespace hive {

member_table::member_table(member_info self) : self_(std::move(self)) {
  // nop
}

bool member_table::introduce(const member_info& m) {
  if (m.name == self_.name)
    return false;
  auto i = others_.find(m.name);
  if (i != others_.end() && i->second.incarnation > m.incarnation)
    return false; // an older incarnation than the one known: stale
  bool fresh =
    i == others_.end() || i->second.incarnation < m.incarnation || i->second.status != "up";
  auto& entry = others_[m.name];
  entry = m;
  entry.status = "up";
  linked_[m.name] = true;
  return fresh;
}

bool member_table::link_lost(const std::string& name) {
  linked_[name] = false;
  auto i = others_.find(name);
  if (i == others_.end() || i->second.status != "up")
    return false;
  i->second.status = "down";
  return true;
}

member_table::change member_table::merge(const std::vector<member_info>& list,
                                         const std::string& from) {
  change out;
  for (auto& m : list) {
    if (m.name == self_.name)
      continue; // nobody else speaks for this node
    auto i = others_.find(m.name);
    if (i == others_.end()) {
      others_.emplace(m.name, m);
      linked_[m.name] = false;
      out.changed = true;
      if (m.status == "up")
        out.connect.push_back(m.name);
      continue;
    }
    auto& known = i->second;
    if (m.incarnation > known.incarnation) {
      // A restart of that node: the old incarnation is gone, and so is any link to it.
      known = m;
      linked_[m.name] = false;
      out.changed = true;
      if (m.status == "up")
        out.connect.push_back(m.name);
    } else if (m.incarnation == known.incarnation && m.status != known.status
               && known.status == "up" && (m.name == from || !linked(m.name))) {
      known.status = m.status;
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
