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
  outbox_.push_back({to, std::move(body), {}});
  return {};
}

caf::error call_context::send(const agent_id& to, caf::message content) {
  if (auto err = check_send(to))
    return err;
  outbox_.push_back({to, {}, std::move(content)});
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
