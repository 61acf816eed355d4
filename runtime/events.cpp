#include "runtime/events.hpp"

#include <chrono>

namespace hive {

void event_bus::set_node(std::string node) {
  std::lock_guard<std::mutex> guard{mtx_};
  node_ = std::move(node);
}

uint64_t event_bus::subscribe(sink s) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto id = next_id_++;
  sinks_.emplace(id, std::move(s));
  count_.store(sinks_.size());
  return id;
}

void event_bus::unsubscribe(uint64_t id) {
  std::lock_guard<std::mutex> guard{mtx_};
  sinks_.erase(id);
  count_.store(sinks_.size());
}

void event_bus::publish(agent_event e) {
  if (count_.load() == 0)
    return;
  auto ts_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  std::lock_guard<std::mutex> guard{mtx_};
  nlohmann::json j{{"type", e.type}, {"agent", e.agent}, {"tenant", std::string{e.tenant()}},
                   {"kind", e.kind}, {"node", node_},    {"ts_ms", ts_ms}};
  if (e.detail.is_object())
    for (auto& [k, v] : e.detail.items())
      if (!j.contains(k))
        j[k] = v;
  auto text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  for (auto& [id, s] : sinks_)
    s(e, text);
}

} // namespace hive
