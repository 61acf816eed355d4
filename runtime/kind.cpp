#include "runtime/kind.hpp"

#include <cassert>

#include "protocols/errc.hpp"

namespace hive {

namespace {

/// Returns the nesting depth of `j` (scalars are depth 0).
size_t depth_of(const nlohmann::json& j, size_t limit) {
  if (!j.is_structured() || limit == 0)
    return 0;
  size_t deepest = 0;
  for (auto& child : j)
    deepest = std::max(deepest, depth_of(child, limit - 1));
  return deepest + 1;
}

} // namespace

std::string_view to_string(persistence_mode x) noexcept {
  switch (x) {
    case persistence_mode::ephemeral: return "ephemeral";
    case persistence_mode::snapshot: return "snapshot";
    case persistence_mode::journaled: return "journaled";
  }
  return "unknown";
}

caf::error call_context::emit(std::string event) {
  assert(target_ != nullptr);
  if (auto err = target_->apply(event))
    return err;
  events_.push_back(std::move(event));
  return {};
}

caf::error call_context::commit() {
  if (!committer_)
    return make_error(errc::internal,
                      self_id_.str()
                        + ": commit() needs a journaled kind marked blocking (kind_spec)");
  return committer_(events_);
}

caf::error call_context::check_send(const agent_id& to) const {
  if (to.tenant != self_id_.tenant)
    return make_error(errc::invalid_argument,
                      self_id_.str() + " may not send to " + to.str()
                        + ": agents talk within their tenant only");
  if (outbox_.size() >= outbox_messages_max)
    return make_error(errc::too_large,
                      "a call may send at most " + std::to_string(outbox_messages_max)
                        + " messages");
  return {};
}

caf::error call_context::send(const agent_id& to, std::string body) {
  if (auto err = check_send(to))
    return err;
  outgoing out;
  out.to = to;
  out.body = std::move(body);
  outbox_.push_back(std::move(out));
  return {};
}

caf::error call_context::send(const agent_id& to, caf::message content) {
  if (auto err = check_send(to))
    return err;
  outgoing out;
  out.to = to;
  out.content = std::move(content);
  outbox_.push_back(std::move(out));
  return {};
}

caf::error call_context::ask(const agent_id& to, std::string body,
                             std::chrono::milliseconds timeout, std::string tag,
                             std::string client_id, uint64_t client_seq, std::string ensure_kind) {
  if (auto err = check_send(to))
    return err;
  if (auto err = check_timeout(timeout))
    return err;
  timeout = cut_to_deadline(timeout);
  outgoing out;
  out.to = to;
  out.body = std::move(body);
  out.type = outgoing::ask;
  out.after = timeout;
  out.tag = std::move(tag);
  out.client_id = std::move(client_id);
  out.client_seq = client_seq;
  out.ensure_kind = std::move(ensure_kind);
  outbox_.push_back(std::move(out));
  return {};
}

std::chrono::milliseconds call_context::cut_to_deadline(std::chrono::milliseconds timeout) const {
  if (env_.deadline_unix_ms == 0)
    return timeout;
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  auto left = std::chrono::milliseconds(std::max<int64_t>(1, env_.deadline_unix_ms - now_ms));
  return std::min(timeout, left);
}

caf::error call_context::check_timeout(std::chrono::milliseconds timeout) {
  if (timeout < std::chrono::milliseconds(1) || timeout > std::chrono::hours(1))
    return make_error(errc::invalid_argument,
                      "an ask's timeout must be 1 ms..1 h, not " + std::to_string(timeout.count())
                        + " ms");
  return {};
}

caf::expected<std::vector<caf::expected<std::string>>> call_context::ask_now(
  std::vector<request> requests, std::chrono::milliseconds timeout) {
  if (!waiter_)
    return make_error(errc::internal,
                      self_id_.str() + ": ask_now() needs a kind marked blocking (kind_spec)");
  if (auto err = check_timeout(timeout))
    return err;
  if (requests.size() > outbox_messages_max)
    return make_error(errc::too_large,
                      "ask_now takes at most " + std::to_string(outbox_messages_max) + " asks, not "
                        + std::to_string(requests.size()));
  for (auto& r : requests) {
    if (r.to.tenant != self_id_.tenant)
      return make_error(errc::invalid_argument,
                        self_id_.str() + " may not ask " + r.to.str()
                          + ": agents talk within their tenant only");
    if (r.to == self_id_)
      return make_error(errc::invalid_argument,
                        self_id_.str()
                          + " may not ask_now itself: it would wait for its own reply");
  }
  if (requests.empty())
    return std::vector<caf::expected<std::string>>{};
  return waiter_(requests, cut_to_deadline(timeout));
}

caf::error call_context::schedule(std::chrono::milliseconds delay, std::string tag) {
  if (auto err = check_send(self_id_))
    return err;
  if (delay.count() < 0 || delay > std::chrono::hours(24))
    return make_error(errc::invalid_argument,
                      "a timer's delay must be 0 ms..24 h, not " + std::to_string(delay.count())
                        + " ms");
  outgoing out;
  out.to = self_id_;
  out.type = outgoing::timer;
  out.after = delay;
  out.tag = std::move(tag);
  outbox_.push_back(std::move(out));
  return {};
}

caf::error call_context::find_providers(std::string capability, std::string tag, size_t limit) {
  if (auto err = check_send(self_id_))
    return err;
  if (capability.empty() || capability.size() > 128)
    return make_error(errc::invalid_argument, "a capability name must be 1..128 bytes");
  outgoing out;
  out.to = self_id_;
  out.body = std::move(capability);
  out.type = outgoing::lookup;
  out.tag = std::move(tag);
  out.limit = std::max<size_t>(1, std::min<size_t>(limit, 1024));
  outbox_.push_back(std::move(out));
  return {};
}

caf::error call_context::broadcast(std::string capability, std::string body,
                                   broadcast_filter filter, std::string tag) {
  if (auto err = check_send(self_id_))
    return err;
  if (auto err = validate_capability(capability, "broadcast capability"))
    return err;
  filter.exclude.push_back(self_id_.str());
  outgoing out;
  out.to = self_id_;
  out.body = std::move(body);
  out.type = outgoing::broadcast;
  out.tag = std::move(tag);
  out.capability = std::move(capability);
  out.filter = std::make_shared<const broadcast_filter>(std::move(filter));
  outbox_.push_back(std::move(out));
  return {};
}

caf::error call_context::publish(std::string type, nlohmann::json detail) {
  if (auto err = check_send(self_id_))
    return err;
  if (type.empty() || type.size() > 64)
    return make_error(errc::invalid_argument, "an event type must be 1..64 bytes");
  if (!detail.is_object())
    return make_error(errc::invalid_argument, "an event's detail must be a JSON object");
  outgoing out;
  out.to = self_id_;
  out.body = detail.dump();
  out.type = outgoing::event;
  out.tag = std::move(type);
  outbox_.push_back(std::move(out));
  return {};
}

caf::expected<const nlohmann::json*> call_context::json() {
  if (!parsed_) {
    auto parsed = nlohmann::json::parse(body_, nullptr, false);
    if (parsed.is_discarded())
      return make_error(errc::invalid_argument, "body is not valid JSON");
    if (depth_of(parsed, json_depth_max_ + 1) > json_depth_max_)
      return make_error(errc::too_large,
                        "body nests deeper than " + std::to_string(json_depth_max_) + " levels");
    parsed_ = std::move(parsed);
  }
  return &*parsed_;
}

caf::error kind_registry::add(kind_spec spec) {
  if (auto err = validate_id_part(spec.name, "kind name", tenant_bytes_max))
    return err;
  if (!spec.make)
    return make_error(errc::invalid_argument, "kind '" + spec.name + "' has no factory");
  auto name = spec.name;
  if (!kinds_.emplace(name, std::move(spec)).second)
    return make_error(errc::invalid_argument, "kind '" + name + "' is already registered");
  return {};
}

const kind_spec* kind_registry::find(std::string_view name) const {
  auto i = kinds_.find(name);
  return i == kinds_.end() ? nullptr : &i->second;
}

std::vector<std::string> kind_registry::names() const {
  std::vector<std::string> out;
  for (auto& [name, _] : kinds_)
    out.push_back(name);
  return out;
}

} // namespace hive
