#include "config/node_config.hpp"

#include <cctype>
#include <charconv>
#include <fstream>
#include <functional>
#include <sstream>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "protocols/agent_id.hpp"
#include "protocols/errc.hpp"

namespace hive {

namespace {

caf::error config_error(std::string msg) {
  return make_error(errc::invalid_config, std::move(msg));
}

/// One row of the key table: how to read, check and write a key.
struct key_spec {
  std::string path;
  std::string unit;
  /// integer keys: inclusive range; other kinds ignore it.
  int64_t min = 0;
  int64_t max = 0;
  enum kind_t { integer, string, endpoint_kind, level } kind = integer;
  std::function<int64_t*(node_config&)> int_field;
  std::function<std::string*(node_config&)> str_field;
  std::function<endpoint*(node_config&)> ep_field;
  /// Extra check for strings (empty error = fine).
  std::function<caf::error(std::string_view)> check;
  /// What `check` accepts, in words (string keys).
  std::string allowed = {};
};

const std::vector<std::string>& log_levels() {
  static const std::vector<std::string> levels{"trace", "debug",    "info", "warn",
                                               "error", "critical", "off"};
  return levels;
}

std::string allowed_text(const key_spec& k) {
  switch (k.kind) {
    case key_spec::integer: return std::to_string(k.min) + ".." + std::to_string(k.max);
    case key_spec::endpoint_kind: return "HOST:PORT, port 0..65535 (0 = ephemeral)";
    case key_spec::level: {
      std::string out;
      for (auto& l : log_levels())
        out += (out.empty() ? "" : "|") + l;
      return out;
    }
    case key_spec::string:
      if (!k.allowed.empty())
        return k.allowed;
      break;
  }
  return k.unit;
}

} // namespace

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    auto comma = text.find(',', pos);
    if (comma == std::string_view::npos)
      comma = text.size();
    auto item = text.substr(pos, comma - pos);
    while (!item.empty() && item.front() == ' ')
      item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ')
      item.remove_suffix(1);
    if (!item.empty())
      out.emplace_back(item);
    pos = comma + 1;
  }
  return out;
}

namespace {

/// `llm.base_url` (or HIVE_LLM_BASE_URL): empty, or an http(s) URL without user info, query
/// or fragment. The URL's parts are parsed again (and checked) by actors/llm_agent.cpp.
caf::error check_llm_base_url(std::string_view v, std::string_view what) {
  if (v.empty())
    return {};
  auto bad = [&](const std::string& why) { return config_error(std::string{what} + ": " + why); };
  if (v.size() > 2048)
    return bad("longer than 2048 bytes");
  auto rest = v;
  if (rest.rfind("http://", 0) == 0)
    rest.remove_prefix(7);
  else if (rest.rfind("https://", 0) == 0)
    rest.remove_prefix(8);
  else
    return bad("must start with http:// or https://");
  for (char ch : v)
    if (static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f || ch == '?' || ch == '#' || ch == '@')
      return bad("must not hold spaces, control characters, user info, a query or a fragment");
  if (rest.empty() || rest.front() == '/' || rest.front() == ':')
    return bad("has no host");
  return {};
}

// The key table is aligned by hand: clang-format 14 puts every member of a braced list that
// holds lambdas on its own line.
// clang-format off
#define HIVE_INT_KEY(section, key, lo, hi, unit_text)                                          \
  key_spec {                                                                                   \
    #section "." #key, unit_text, lo, hi, key_spec::integer,                                   \
      [](node_config& c) { return &c.section.key; }, {}, {}, {}                                \
  }

const std::vector<key_spec>& key_table() {
  static const std::vector<key_spec> table = [] {
    std::vector<key_spec> t;
    t.push_back(key_spec{"node.name", "node name", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.node.name; }, {},
                         [](std::string_view v) {
                           return validate_id_part(v, "node.name", tenant_bytes_max);
                         },
                         "1.." + std::to_string(tenant_bytes_max)
                           + " bytes of a-z 0-9 '-' '_' '.', not '.' or '..'"});
    t.push_back(key_spec{"node.data_dir", "directory path", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.node.data_dir; }, {},
                         [](std::string_view v) -> caf::error {
                           if (v.empty())
                             return config_error("node.data_dir is empty");
                           if (v.size() > 4096)
                             return config_error("node.data_dir is longer than 4096 bytes");
                           return {};
                         },
                         "1..4096 bytes, relative to the working directory or absolute"});
    t.push_back(HIVE_INT_KEY(node, scheduler_threads, 0, 256, "threads (0 = one per core)"));
    t.push_back(HIVE_INT_KEY(node, routers, 0, 4096, "actors (0 = 16 per scheduler thread)"));
    t.push_back(HIVE_INT_KEY(node, asks_pending_max, 1, 100000000, "asks"));
    t.push_back(HIVE_INT_KEY(node, shutdown_drain_ms, 0, 600000, "milliseconds"));
    t.push_back(
      HIVE_INT_KEY(node, heap_retain_bytes_max, 0, int64_t{1} << 40, "bytes (0 = C library default)"));
    t.push_back(key_spec{"gateway.listen", "HOST:PORT", 0, 0, key_spec::endpoint_kind, {}, {},
                         [](node_config& c) { return &c.gateway.listen; }, {}});
    t.push_back(HIVE_INT_KEY(gateway, threads, 1, 64, "threads"));
    t.push_back(HIVE_INT_KEY(gateway, body_bytes_max, 1, 64 << 20, "bytes"));
    t.push_back(HIVE_INT_KEY(gateway, header_bytes_max, 1024, 1 << 20, "bytes"));
    t.push_back(HIVE_INT_KEY(gateway, json_depth_max, 1, 256, "nesting levels"));
    t.push_back(HIVE_INT_KEY(gateway, connections_max, 1, 1000000, "connections"));
    t.push_back(HIVE_INT_KEY(gateway, idle_timeout_ms, 100, 3600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(gateway, ask_timeout_ms_default, 1, 3600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(gateway, ask_timeout_ms_max, 1, 3600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(gateway, page_size_max, 1, 100000, "agents"));
    t.push_back(HIVE_INT_KEY(gateway, events_buffer_max, 1, 1000000, "events"));
    t.push_back(key_spec{"binary.listen", "HOST:PORT", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.binary.listen; }, {},
                         [](std::string_view v) -> caf::error {
                           if (v.empty())
                             return {};
                           auto ep = parse_endpoint(v, "binary.listen");
                           return ep ? caf::error{} : ep.error();
                         },
                         "empty (no binary listener) or HOST:PORT, port 0..65535 (0 = ephemeral)"});
    t.push_back(HIVE_INT_KEY(binary, threads, 1, 64, "threads"));
    t.push_back(HIVE_INT_KEY(binary, frame_bytes_max, 64, 64 << 20, "bytes"));
    t.push_back(HIVE_INT_KEY(binary, connections_max, 1, 1000000, "connections"));
    t.push_back(HIVE_INT_KEY(binary, inflight_requests_max, 1, 1000000, "requests"));
    t.push_back(HIVE_INT_KEY(binary, idle_timeout_ms, 100, 3600000, "milliseconds"));
    t.push_back(key_spec{"metrics.listen", "HOST:PORT", 0, 0, key_spec::endpoint_kind, {}, {},
                         [](node_config& c) { return &c.metrics.listen; }, {}});
    t.push_back(key_spec{"log.level", "level", 0, 0, key_spec::level, {},
                         [](node_config& c) { return &c.log.level; }, {}, {}});
    t.push_back(key_spec{"cluster.name", "cluster name", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.cluster.name; }, {},
                         [](std::string_view v) {
                           return validate_id_part(v, "cluster.name", tenant_bytes_max);
                         },
                         "1.." + std::to_string(tenant_bytes_max)
                           + " bytes of a-z 0-9 '-' '_' '.', not '.' or '..'"});
    t.push_back(key_spec{"cluster.listen", "HOST:PORT", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.cluster.listen; }, {},
                         [](std::string_view v) -> caf::error {
                           if (v.empty())
                             return {};
                           auto ep = parse_endpoint(v, "cluster.listen");
                           return ep ? caf::error{} : ep.error();
                         },
                         "empty (standalone) or HOST:PORT, port 0..65535 (0 = ephemeral)"});
    t.push_back(key_spec{"cluster.seeds", "HOST:PORT list", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.cluster.seeds; }, {},
                         [](std::string_view v) -> caf::error {
                           auto eps = parse_endpoint_list(v, "cluster.seeds");
                           return eps ? caf::error{} : eps.error();
                         },
                         "comma-separated HOST:PORT, port 1..65535; empty = none"});
    t.push_back(HIVE_INT_KEY(cluster, heartbeat_interval_ms, 10, 60000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, down_after_ms, 50, 600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, suspect_after_ms, 20, 600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, join_retry_ms, 10, 600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, join_timeout_ms, 10, 600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, seed_wait_ms, 0, 600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, removed_after_ms, 100, 86400000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, members_max, 2, 100000, "members"));
    t.push_back(HIVE_INT_KEY(cluster, location_cache_entries_max, 0, 100000000, "entries (0 = off)"));
    t.push_back(HIVE_INT_KEY(cluster, migration_timeout_ms, 100, 600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, migration_forward_ms, 0, 3600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(cluster, migration_quiet_wait_ms, 0, 300000, "milliseconds (0 = none)"));
    t.push_back(HIVE_INT_KEY(cluster, handoff_timeout_ms, 0, 3600000, "milliseconds (0 = none)"));
    t.push_back(HIVE_INT_KEY(cluster, handoff_migrations_max, 1, 1024, "migrations"));
    t.push_back(
      HIVE_INT_KEY(cluster, rebalance_migrations_per_s, 0, 100000, "migrations per second (0 = off)"));
    t.push_back(HIVE_INT_KEY(cluster, transport_port, 0, 65535, "port (0 = any free one)"));
    t.push_back(HIVE_INT_KEY(cluster, frame_bytes_max, 4096, 1 << 30, "bytes"));
    t.push_back(HIVE_INT_KEY(cluster, send_queue_bytes_max, 4096, int64_t{1} << 34, "bytes"));
    t.push_back(HIVE_INT_KEY(cluster, transport_connections_max, 1, 1000000, "connections"));
    t.push_back(HIVE_INT_KEY(cluster, transport_inline_runs, 0, 1, "switch (0 = off, 1 = on)"));
    t.push_back(HIVE_INT_KEY(agents, agents_max, 1, 100000000, "agents"));
    t.push_back(HIVE_INT_KEY(agents, hibernate_idle_ms, 0, 86400000, "ms"));
    t.push_back(HIVE_INT_KEY(agents, capabilities_per_agent_max, 0, 256, "capabilities"));
    t.push_back(HIVE_INT_KEY(storage, commit_batch_writes_max, 1, 1000000, "writes"));
    t.push_back(HIVE_INT_KEY(storage, commit_queue_writes_max, 1, 100000000, "writes"));
    t.push_back(HIVE_INT_KEY(storage, record_bytes_max, 1024, 1 << 30, "bytes"));
    t.push_back(HIVE_INT_KEY(storage, block_cache_bytes, 1 << 20, int64_t{1} << 40, "bytes"));
    t.push_back(HIVE_INT_KEY(storage, write_buffer_bytes, 1 << 20, int64_t{1} << 32, "bytes"));
    t.push_back(HIVE_INT_KEY(persistence, snapshot_every_events, 1, 100000000, "events"));
    t.push_back(HIVE_INT_KEY(persistence, snapshot_every_messages, 1, 100000000, "messages"));
    t.push_back(HIVE_INT_KEY(persistence, snapshot_interval_ms, 0, 86400000, "milliseconds (0 = off)"));
    t.push_back(HIVE_INT_KEY(persistence, journal_retention_events, 0, 100000000, "events"));
    t.push_back(HIVE_INT_KEY(persistence, dedup_entries_max, 0, 1000000, "entries"));
    t.push_back(HIVE_INT_KEY(persistence, passivate_idle_ms, 0, 604800000, "milliseconds (0 = never)"));
    t.push_back(HIVE_INT_KEY(persistence, activation_queue_messages_max, 1, 10000000, "messages"));
    t.push_back(HIVE_INT_KEY(supervision, restart_intensity_max, 0, 1000000, "restarts"));
    t.push_back(HIVE_INT_KEY(supervision, restart_period_ms, 1, 86400000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(supervision, backoff_initial_ms, 0, 3600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(supervision, backoff_max_ms, 0, 3600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(supervision, backoff_jitter_percent, 0, 100, "percent"));
    t.push_back(HIVE_INT_KEY(breaker, failures_consecutive_max, 1, 1000000, "failures"));
    t.push_back(HIVE_INT_KEY(breaker, failure_rate_percent_max, 1, 100, "percent"));
    t.push_back(HIVE_INT_KEY(breaker, window_ms, 1, 86400000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(breaker, window_calls_min, 1, 1000000, "calls"));
    t.push_back(HIVE_INT_KEY(breaker, reset_timeout_ms, 1, 86400000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(breaker, reset_timeout_ms_max, 1, 86400000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(breaker, half_open_probes, 1, 10000, "calls"));
    t.push_back(HIVE_INT_KEY(breaker, call_timeout_ms, 1, 3600000, "milliseconds"));
    auto path_key = [](std::string path, std::function<std::string*(node_config&)> field) {
      return key_spec{path, "file path", 0, 0, key_spec::string, {}, std::move(field), {},
                      [path](std::string_view v) -> caf::error {
                        if (v.size() > 4096)
                          return config_error(path + " is longer than 4096 bytes");
                        return {};
                      },
                      "empty or a file path of at most 4096 bytes"};
    };
    auto name_key = [](std::string path, std::function<std::string*(node_config&)> field) {
      return key_spec{path, "claim value", 0, 0, key_spec::string, {}, std::move(field), {},
                      [path](std::string_view v) -> caf::error {
                        if (v.empty() || v.size() > 256)
                          return config_error(path + " must be 1..256 bytes");
                        return {};
                      },
                      "1..256 bytes"};
    };
    t.push_back(path_key("gateway.tls_cert_file", [](node_config& c) { return &c.gateway.tls_cert_file; }));
    t.push_back(path_key("gateway.tls_key_file", [](node_config& c) { return &c.gateway.tls_key_file; }));
    t.push_back(path_key("cluster.tls_cert_file", [](node_config& c) { return &c.cluster.tls_cert_file; }));
    t.push_back(path_key("cluster.tls_key_file", [](node_config& c) { return &c.cluster.tls_key_file; }));
    t.push_back(path_key("cluster.tls_ca_file", [](node_config& c) { return &c.cluster.tls_ca_file; }));
    t.push_back(path_key("auth.admin_key_file", [](node_config& c) { return &c.auth.admin_key_file; }));
    t.push_back(path_key("auth.jwt_secret_file", [](node_config& c) { return &c.auth.jwt_secret_file; }));
    t.push_back(name_key("auth.jwt_issuer", [](node_config& c) { return &c.auth.jwt_issuer; }));
    t.push_back(name_key("auth.jwt_audience", [](node_config& c) { return &c.auth.jwt_audience; }));
    t.push_back(HIVE_INT_KEY(auth, jwt_clock_skew_ms, 0, 600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(auth, keys_max, 1, 1000000, "keys"));
    t.push_back(HIVE_INT_KEY(quota, requests_per_s, 1, 100000000, "requests per second per tenant"));
    t.push_back(HIVE_INT_KEY(quota, burst_requests, 1, 1000000000, "requests"));
    t.push_back(HIVE_INT_KEY(quota, message_bytes_max, 1, 64 << 20, "bytes"));
    t.push_back(HIVE_INT_KEY(quota, agents_max, 1, 100000000, "agents per tenant per node"));
    t.push_back(HIVE_INT_KEY(quota, tenants_tracked_max, 1, 100000000, "tenants"));
    t.push_back(path_key("audit.path", [](node_config& c) { return &c.audit.path; }));
    t.push_back(HIVE_INT_KEY(audit, file_bytes_max, 4096, int64_t{1} << 40, "bytes"));
    t.push_back(HIVE_INT_KEY(audit, files_max, 1, 1000, "files"));
    t.push_back(key_spec{"tools.allowed_executables", "path list", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.tools.allowed_executables; }, {},
                         [](std::string_view v) -> caf::error {
                           for (auto& p : split_list(v))
                             if (p.empty() || p.front() != '/' || p.size() > 4096)
                               return config_error("tools.allowed_executables: '" + p
                                                   + "' is not an absolute path of at most "
                                                     "4096 bytes");
                           return {};
                         },
                         "comma-separated absolute paths; empty = none"});
    t.push_back(path_key("tools.scratch_dir", [](node_config& c) { return &c.tools.scratch_dir; }));
    t.push_back(HIVE_INT_KEY(replication, factor, 1, 7, "copies"));
    t.push_back(HIVE_INT_KEY(replication, timeout_ms, 10, 600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(replication, repairs_per_s, 1, 1000000, "repairs per second"));
    t.push_back(HIVE_INT_KEY(replication, held_events_max, 0, 1000000, "events"));
    t.push_back(HIVE_INT_KEY(replication, read_lease_ms, 0, 60000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(replication, ack_before_quorum, 0, 1, "0 or 1 (test only)"));
    t.push_back(HIVE_INT_KEY(tools, cpu_seconds_max, 1, 3600, "CPU seconds"));
    t.push_back(HIVE_INT_KEY(tools, wall_ms_max, 1, 3600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(tools, output_bytes_max, 1, 64 << 20, "bytes per stream"));
    t.push_back(HIVE_INT_KEY(tools, address_space_bytes_max, 16 << 20, int64_t{1} << 40, "bytes"));
    t.push_back(HIVE_INT_KEY(tools, open_files_max, 8, 65536, "files"));
    t.push_back(HIVE_INT_KEY(tools, file_bytes_max, 0, int64_t{1} << 40, "bytes"));
    t.push_back(HIVE_INT_KEY(tools, stdin_bytes_max, 0, 64 << 20, "bytes"));
    t.push_back(HIVE_INT_KEY(tools, tools_per_agent_max, 1, 10000, "tools"));
    t.push_back(HIVE_INT_KEY(tools, calls_remembered_max, 1, 10000000, "calls"));
    t.push_back(HIVE_INT_KEY(planner, steps_max, 1, 1000000, "steps"));
    t.push_back(HIVE_INT_KEY(planner, parallel_steps_max, 1, 500, "steps"));
    t.push_back(HIVE_INT_KEY(planner, step_output_bytes_max, 16, 64 << 20, "bytes"));
    t.push_back(HIVE_INT_KEY(planner, providers_cache_ms, 0, 600000, "milliseconds"));
    t.push_back(key_spec{"llm.base_url", "URL", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.llm.base_url; }, {},
                         [](std::string_view v) { return check_llm_base_url(v, "llm.base_url"); },
                         "empty (HIVE_LLM_BASE_URL) or http://HOST[:PORT][/PATH] or https://..., "
                         "at most 2048 bytes"});
    t.push_back(key_spec{"llm.model", "model name", 0, 0, key_spec::string, {},
                         [](node_config& c) { return &c.llm.model; }, {},
                         [](std::string_view v) -> caf::error {
                           if (v.size() > 256)
                             return config_error("llm.model is longer than 256 bytes");
                           for (char ch : v)
                             if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f)
                               return config_error("llm.model holds a control character");
                           return {};
                         },
                         "empty (HIVE_LLM_MODEL) or 1..256 bytes without control characters"});
    t.push_back(key_spec{"llm.api_key_env", "environment variable name", 0, 0, key_spec::string,
                         {}, [](node_config& c) { return &c.llm.api_key_env; }, {},
                         [](std::string_view v) -> caf::error {
                           bool ok = !v.empty() && v.size() <= 128
                                     && !(v.front() >= '0' && v.front() <= '9');
                           for (char ch : v)
                             ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_');
                           if (!ok)
                             return config_error("llm.api_key_env must be 1..128 of [A-Za-z0-9_], "
                                                 "not starting with a digit");
                           return {};
                         },
                         "1..128 of A-Z a-z 0-9 '_', not starting with a digit"});
    t.push_back(HIVE_INT_KEY(llm, request_timeout_ms, 1, 3600000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(llm, reply_bytes_max, 1024, 1 << 30, "bytes"));
    t.push_back(HIVE_INT_KEY(llm, reply_tokens_max, 1, 10000000, "tokens"));
    t.push_back(HIVE_INT_KEY(llm, conversation_messages_max, 2, 1000000, "messages"));
    t.push_back(HIVE_INT_KEY(llm, tenant_tokens_max, 0, int64_t{1} << 50, "tokens (0 = no budget)"));
    t.push_back(HIVE_INT_KEY(llm, breaker_failures, 1, 1000000, "failures"));
    t.push_back(HIVE_INT_KEY(llm, breaker_open_ms, 1, 86400000, "milliseconds"));
    t.push_back(HIVE_INT_KEY(topics, subscribers_max, 1, 1000, "agents"));
    return t;
  }();
  return table;
}

#undef HIVE_INT_KEY
// clang-format on

const key_spec* find_key(std::string_view path) {
  for (auto& k : key_table())
    if (k.path == path)
      return &k;
  return nullptr;
}

std::string current_value(const key_spec& k, const node_config& cfg) {
  auto& c = const_cast<node_config&>(cfg);
  switch (k.kind) {
    case key_spec::integer: return std::to_string(*k.int_field(c));
    case key_spec::endpoint_kind: return k.ep_field(c)->str();
    default: return *k.str_field(c);
  }
}

caf::error range_error(const key_spec& k, std::string_view value) {
  return config_error("config key '" + k.path + "' = '" + std::string{value.substr(0, 200)}
                      + "' is invalid: allowed " + allowed_text(k) + " (" + k.unit + ")");
}

caf::error set_int(const key_spec& k, node_config& cfg, int64_t v, std::string_view shown) {
  if (v < k.min || v > k.max)
    return range_error(k, shown);
  *k.int_field(cfg) = v;
  return {};
}

caf::error set_text(const key_spec& k, node_config& cfg, std::string_view value) {
  switch (k.kind) {
    case key_spec::integer: {
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc{} || ptr != value.data() + value.size())
        return range_error(k, value);
      return set_int(k, cfg, v, value);
    }
    case key_spec::endpoint_kind: {
      auto ep = parse_endpoint(value, k.path);
      if (!ep)
        return ep.error();
      *k.ep_field(cfg) = std::move(*ep);
      return {};
    }
    case key_spec::level: {
      for (auto& l : log_levels())
        if (l == value) {
          *k.str_field(cfg) = std::string{value};
          return {};
        }
      return range_error(k, value);
    }
    case key_spec::string: {
      if (k.check)
        if (auto err = k.check(value))
          return config_error("config key '" + k.path + "' = '" + std::string{value.substr(0, 200)}
                              + "' is invalid: " + message_of(err));
      *k.str_field(cfg) = std::string{value};
      return {};
    }
  }
  return range_error(k, value);
}

caf::error apply_table(node_config& cfg, const toml::table& tbl, const std::string& prefix,
                       std::string_view origin) {
  for (auto&& [key, node] : tbl) {
    std::string path =
      prefix.empty() ? std::string{key.str()} : prefix + "." + std::string{key.str()};
    if (auto sub = node.as_table()) {
      if (prefix.empty()) {
        if (auto err = apply_table(cfg, *sub, path, origin))
          return err;
        continue;
      }
    }
    auto spec = find_key(path);
    if (spec == nullptr)
      return config_error(std::string{origin} + ": unknown config key '" + path
                          + "' (see config/hive.toml for every key)");
    if (spec->kind == key_spec::integer) {
      auto v = node.value<int64_t>();
      if (!node.is_integer() || !v)
        return config_error(std::string{origin} + ": config key '" + path
                            + "' must be an integer in " + allowed_text(*spec) + " (" + spec->unit
                            + ")");
      if (auto err = set_int(*spec, cfg, *v, std::to_string(*v)))
        return config_error(std::string{origin} + ": " + message_of(err));
      continue;
    }
    auto s = node.value<std::string>();
    if (!node.is_string() || !s)
      return config_error(std::string{origin} + ": config key '" + path + "' must be a string ("
                          + allowed_text(*spec) + ")");
    if (auto err = set_text(*spec, cfg, *s))
      return config_error(std::string{origin} + ": " + message_of(err));
  }
  return {};
}

} // namespace

caf::expected<endpoint> parse_endpoint(std::string_view text, std::string_view what) {
  auto bad = [&](const std::string& why) {
    return config_error(std::string{what} + " = '" + std::string{text.substr(0, 200)}
                        + "' is invalid: " + why + " (expected HOST:PORT, port 0..65535)");
  };
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos)
    return bad("no ':'");
  auto host = text.substr(0, colon);
  auto port_text = text.substr(colon + 1);
  if (host.empty())
    return bad("empty host");
  if (host.size() > 253)
    return bad("host longer than 253 bytes");
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc{} || ptr != port_text.data() + port_text.size()
      || port > 65535)
    return bad("port '" + std::string{port_text} + "' is not a number in 0..65535");
  return endpoint{std::string{host}, static_cast<uint16_t>(port)};
}

std::vector<config_key_info> config_keys() {
  node_config defaults;
  std::vector<config_key_info> out;
  for (auto& k : key_table())
    out.push_back({k.path, k.unit, allowed_text(k), current_value(k, defaults)});
  return out;
}

caf::error set_config_key(node_config& cfg, std::string_view path, std::string_view value) {
  auto spec = find_key(path);
  if (spec == nullptr)
    return config_error("unknown config key '" + std::string{path}
                        + "' (see config/hive.toml for every key)");
  return set_text(*spec, cfg, value);
}

caf::error apply_toml(node_config& cfg, std::string_view toml_text, std::string_view origin) {
  toml::table tbl;
  try {
    tbl = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << origin << ':' << e.source().begin.line << ':' << e.source().begin.column
       << ": TOML syntax error: " << e.description();
    return config_error(os.str());
  }
  return apply_table(cfg, tbl, "", origin);
}

caf::error apply_toml_file(node_config& cfg, const std::string& file) {
  std::ifstream in{file, std::ios::binary};
  if (!in)
    return config_error("cannot read config file '" + file + "'");
  std::ostringstream buf;
  buf << in.rdbuf();
  auto text = buf.str();
  if (text.size() > (1 << 20))
    return config_error("config file '" + file + "' is larger than 1 MiB");
  return apply_toml(cfg, text, file);
}

caf::error validate(const node_config& cfg) {
  auto& g = cfg.gateway;
  if (g.ask_timeout_ms_default > g.ask_timeout_ms_max)
    return config_error(
      "config key 'gateway.ask_timeout_ms_default' = " + std::to_string(g.ask_timeout_ms_default)
      + " exceeds 'gateway.ask_timeout_ms_max' = " + std::to_string(g.ask_timeout_ms_max));
  if (g.tls_cert_file.empty() != g.tls_key_file.empty())
    return config_error("config keys 'gateway.tls_cert_file' and 'gateway.tls_key_file' must be "
                        "set together (both empty: plain HTTP)");
  auto& c = cfg.cluster;
  auto set = !c.tls_cert_file.empty() + !c.tls_key_file.empty() + !c.tls_ca_file.empty();
  if (set != 0 && set != 3) {
    std::string missing;
    for (auto [key, value] : {std::pair{"cluster.tls_cert_file", &c.tls_cert_file},
                              std::pair{"cluster.tls_key_file", &c.tls_key_file},
                              std::pair{"cluster.tls_ca_file", &c.tls_ca_file}})
      if (value->empty())
        missing.append(missing.empty() ? "'" : ", '").append(key).append("'");
    return config_error("node-to-node TLS needs a certificate, its key and the cluster's CA: "
                        "config key "
                        + missing
                        + " is not set (without them CAF 0.17 would "
                          "run anonymous, unauthenticated TLS; all three empty: plain TCP)");
  }
  if (c.migration_quiet_wait_ms * 2 > c.migration_timeout_ms)
    return config_error("config key 'cluster.migration_quiet_wait_ms' = "
                        + std::to_string(c.migration_quiet_wait_ms)
                        + " exceeds half of 'cluster.migration_timeout_ms' = "
                        + std::to_string(c.migration_timeout_ms));
  auto& s = cfg.supervision;
  if (s.backoff_initial_ms > s.backoff_max_ms)
    return config_error(
      "config key 'supervision.backoff_initial_ms' = " + std::to_string(s.backoff_initial_ms)
      + " exceeds 'supervision.backoff_max_ms' = " + std::to_string(s.backoff_max_ms));
  auto& b = cfg.breaker;
  if (b.reset_timeout_ms > b.reset_timeout_ms_max)
    return config_error(
      "config key 'breaker.reset_timeout_ms' = " + std::to_string(b.reset_timeout_ms)
      + " exceeds 'breaker.reset_timeout_ms_max' = " + std::to_string(b.reset_timeout_ms_max));
  return {};
}

caf::expected<std::vector<endpoint>> parse_endpoint_list(std::string_view text,
                                                         std::string_view what) {
  std::vector<endpoint> out;
  size_t pos = 0;
  while (pos <= text.size() && !text.empty()) {
    auto comma = text.find(',', pos);
    auto item = text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos);
    auto ep = parse_endpoint(item, what);
    if (!ep)
      return std::move(ep.error());
    if (ep->port == 0)
      return config_error("config key '" + std::string{what} + "': '" + std::string{item}
                          + "' has port 0; a seed needs a real port");
    out.push_back(std::move(*ep));
    if (out.size() > 64)
      return config_error("config key '" + std::string{what} + "' lists more than 64 endpoints");
    if (comma == std::string_view::npos)
      break;
    pos = comma + 1;
  }
  return out;
}

caf::expected<cli_result> parse_command_line(int argc, const char* const* argv) {
  CLI::App app{"agent-node: one node of a hive cluster of agents", "agent-node"};
  app.set_version_flag("--version", "agent-node 0.1.0");
  std::string config_file, name, data_dir, gateway, metrics, log_level;
  std::string cluster, binary;
  std::vector<std::string> sets, seeds;
  app.add_option("--config", config_file, "TOML config file (see config/hive.toml)");
  app.add_option("--name", name, "node name (node.name)");
  app.add_option("--data-dir", data_dir, "data directory (node.data_dir)");
  app.add_option("--gateway", gateway, "HTTP gateway HOST:PORT, port 0 = ephemeral");
  app.add_option("--binary", binary,
                 "binary protocol HOST:PORT (binary.listen), port 0 = ephemeral");
  app.add_option("--metrics", metrics, "Prometheus /metrics HOST:PORT, port 0 = ephemeral");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|critical|off");
  app.add_option("--cluster", cluster,
                 "cluster endpoint HOST:PORT of this node (cluster.listen); joins or forms a "
                 "cluster");
  app.add_option("--seed", seeds, "cluster endpoint HOST:PORT of a node to join, repeatable");
  std::string admin_key_file;
  app.add_option("--admin-key-file", admin_key_file,
                 "file holding the bootstrap admin API key (auth.admin_key_file)");
  app.add_option("--set", sets, "override any config key: --set section.key=value");
  cli_result result;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    result.exit_now = true;
    return result;
  } catch (const CLI::CallForVersion&) {
    std::cout << "agent-node 0.1.0\n";
    result.exit_now = true;
    return result;
  } catch (const CLI::ParseError& e) {
    return make_error(errc::invalid_argument, std::string{"command line: "} + e.what());
  }
  auto& cfg = result.config;
  if (!config_file.empty())
    if (auto err = apply_toml_file(cfg, config_file))
      return err;
  auto flag = [&](const std::string& value, std::string_view key,
                  std::string_view flag_name) -> caf::error {
    if (value.empty() && app.count(std::string{flag_name}) == 0)
      return {};
    if (auto err = set_config_key(cfg, key, value))
      return make_error(errc::invalid_config, std::string{flag_name} + ": " + message_of(err));
    return {};
  };
  if (auto err = flag(name, "node.name", "--name"))
    return err;
  if (auto err = flag(data_dir, "node.data_dir", "--data-dir"))
    return err;
  if (auto err = flag(gateway, "gateway.listen", "--gateway"))
    return err;
  if (auto err = flag(metrics, "metrics.listen", "--metrics"))
    return err;
  if (auto err = flag(log_level, "log.level", "--log-level"))
    return err;
  if (auto err = flag(binary, "binary.listen", "--binary"))
    return err;
  if (auto err = flag(cluster, "cluster.listen", "--cluster"))
    return err;
  if (auto err = flag(admin_key_file, "auth.admin_key_file", "--admin-key-file"))
    return err;
  for (auto& seed : seeds) {
    auto joined = cfg.cluster.seeds.empty() ? seed : cfg.cluster.seeds + "," + seed;
    if (auto err = set_config_key(cfg, "cluster.seeds", joined))
      return make_error(errc::invalid_config, "--seed: " + message_of(err));
  }
  for (auto& s : sets) {
    auto eq = s.find('=');
    if (eq == std::string::npos)
      return make_error(errc::invalid_config,
                        "--set '" + s + "' is invalid: expected section.key=value");
    if (auto err = set_config_key(cfg, s.substr(0, eq), s.substr(eq + 1)))
      return make_error(errc::invalid_config, "--set: " + message_of(err));
  }
  if (auto err = validate(cfg))
    return err;
  return result;
}

} // namespace hive
