#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/all.hpp>

namespace hive {

/// A listening address `HOST:PORT`; port 0 asks the OS for an ephemeral port.
struct endpoint {
  std::string host;
  uint16_t port = 0;

  [[nodiscard]] std::string str() const {
    return host + ':' + std::to_string(port);
  }
};

/// Parses `HOST:PORT` (port 0..65535, host non-empty). The error names `what`.
[[nodiscard]] caf::expected<endpoint> parse_endpoint(std::string_view text, std::string_view what);

/// The typed configuration of one `agent-node`. Every field is a config key
/// (`section.key`); config/hive.toml documents each with its default, unit and range.
struct node_config {
  struct node_section {
    std::string name = "node1";
    std::string data_dir = "./hive-data";
    int64_t scheduler_threads = 0; ///< 0 = one per core
    int64_t routers = 0;           ///< 0 = 16 per scheduler thread
    int64_t asks_pending_max = 1000000;
    int64_t shutdown_drain_ms = 5000;
    int64_t heap_retain_bytes_max = 64 << 20; ///< 0 = the C library's defaults
  } node;

  struct gateway_section {
    endpoint listen{"127.0.0.1", 8080};
    int64_t threads = 1;
    int64_t body_bytes_max = 1 << 20;
    int64_t header_bytes_max = 16 << 10;
    int64_t json_depth_max = 32;
    int64_t connections_max = 1024;
    int64_t idle_timeout_ms = 30000;
    int64_t ask_timeout_ms_default = 5000;
    int64_t ask_timeout_ms_max = 60000;
    int64_t page_size_max = 1000;
    int64_t events_buffer_max = 1024;
    /// PEM certificate chain and private key: both set, the gateway serves HTTPS only.
    std::string tls_cert_file;
    std::string tls_key_file;
  } gateway;

  /// The binary client protocol (actors/binary_gateway.hpp, protocols/wire.hpp).
  struct binary_section {
    /// HOST:PORT; empty: no binary listener.
    std::string listen;
    int64_t threads = 1;
    int64_t frame_bytes_max = 2 << 20;
    int64_t connections_max = 1024;
    int64_t inflight_requests_max = 1024;
    int64_t idle_timeout_ms = 30000;
  } binary;

  struct metrics_section {
    endpoint listen{"127.0.0.1", 9464};
  } metrics;

  struct log_section {
    std::string level = "info";
  } log;

  struct cluster_section {
    /// Nodes only join a cluster of the same name.
    std::string name = "hive";
    /// Where this node's cluster endpoint listens (CAF BASP); empty = standalone node.
    std::string listen;
    /// Comma-separated `HOST:PORT` cluster endpoints tried when joining.
    std::string seeds;
    int64_t heartbeat_interval_ms = 100;
    int64_t down_after_ms = 1000;
    /// A member not heard from (its heartbeat) for this long is shown `suspect`.
    int64_t suspect_after_ms = 300;
    int64_t join_retry_ms = 500;
    /// A seeded node whose seeds all fail keeps dialling them (every `join_retry_ms`) for this
    /// long before it forms a cluster of its own.
    int64_t seed_wait_ms = 1000;
    /// A seeded node is `joining` until linked to every up member, for at most this long.
    int64_t join_timeout_ms = 5000;
    /// A member down this long is `removed`; a removed one is forgotten after this more.
    int64_t removed_after_ms = 30000;
    /// Entries in the member list, this node's included.
    int64_t members_max = 1024;
    int64_t location_cache_entries_max = 100000;
    /// A live migration whose target does not confirm within this is aborted.
    int64_t migration_timeout_ms = 5000;
    /// How long a node forwards calls for an agent that moved away.
    int64_t migration_forward_ms = 10000;
    /// A moving agent goes on serving for at most this long until none of its writes is in
    /// flight, and stops there, so that its pause does not wait for a write's acknowledgement
    /// (0 = it stops at once). At most half of migration_timeout_ms.
    int64_t migration_quiet_wait_ms = 50;
    /// A node that stops (SIGTERM) hands its agents off for at most this long (0 = not at all).
    int64_t handoff_timeout_ms = 30000;
    /// Migrations one hand-off runs at once.
    int64_t handoff_migrations_max = 8;
    /// Rebalancing moves at most this many agents per second (0 = no rebalancing).
    int64_t rebalance_migrations_per_s = 20;
    /// Port of the call transport (calls by id between nodes) on cluster.listen's host;
    /// 0 = any free port (members learn it from the member list).
    int64_t transport_port = 0;
    /// Largest frame the call transport sends or accepts.
    int64_t frame_bytes_max = 16 << 20;
    /// Bytes queued for one transport connection whose peer does not read.
    int64_t send_queue_bytes_max = 64 << 20;
    /// Incoming transport connections open at once.
    int64_t transport_connections_max = 1024;
    /// 1: a call from another node to an ephemeral agent runs on the transport's thread when
    /// no other frame waits (no worker wake-up; runtime/inline_exec.hpp); 0: always on the
    /// scheduler's workers.
    int64_t transport_inline_runs = 1;
    /// Mutual TLS between nodes (BASP and the call transport): this node's PEM certificate
    /// chain, its private key and the CA file that every member's certificate must chain to.
    /// All three set: TLS with certificates required on both sides; all empty: plain TCP.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_ca_file;
    /// Whether node-to-node TLS is configured.
    [[nodiscard]] bool tls() const noexcept {
      return !tls_cert_file.empty();
    }
  } cluster;

  /// Replicated journals of journaled agents in a cluster (runtime/replication.hpp).
  struct replication_section {
    /// Copies of each journaled agent's journal: its replica set is the first `factor`
    /// members in the id's placement order (capped by the cluster size); a write is
    /// acknowledged once a majority of the set holds it durably. 1 = no replication.
    int64_t factor = 3;
    /// How long a write, an activation's prepare round or a fetch waits for replicas.
    int64_t timeout_ms = 2000;
    /// Replica repairs (whole-copy syncs) one node starts per second.
    int64_t repairs_per_s = 200;
    /// Events a replica that misses some keeps in memory past the gap, per agent, until the
    /// repair that fills it.
    int64_t held_events_max = 1024;
    /// A read of a replicated agent more than this long after a majority last confirmed its
    /// activation (by an acknowledged write or such a check) asks the majority first. Keep it
    /// well below cluster.down_after_ms: a survivor takes over only after that.
    int64_t read_lease_ms = 500;
    /// TEST ONLY, a planted bug: 1 acknowledges a write once it is durable on the hosting
    /// node and replicates it later (batched every 200 ms), so a kill -9 of the host loses
    /// acknowledged writes. The failover soak test proves its checker catches this.
    int64_t ack_before_quorum = 0;
  } replication;

  struct agents_section {
    int64_t agents_max = 100000;
    /// An agent idle this long releases its actor and keeps its state in memory (0 = never).
    int64_t hibernate_idle_ms = 0;
    /// Capabilities one agent may declare at spawn.
    int64_t capabilities_per_agent_max = 16;
  } agents;

  struct storage_section {
    int64_t commit_batch_writes_max = 4096;
    int64_t commit_queue_writes_max = 65536;
    int64_t record_bytes_max = 4 << 20;
    int64_t block_cache_bytes = 64 << 20;
    int64_t write_buffer_bytes = 32 << 20;
  } storage;

  struct persistence_section {
    int64_t snapshot_every_events = 1000;
    int64_t snapshot_every_messages = 100;
    int64_t snapshot_interval_ms = 5000;
    int64_t journal_retention_events = 0;
    int64_t dedup_entries_max = 1000;
    int64_t passivate_idle_ms = 300000;
    int64_t activation_queue_messages_max = 10000;
  } persistence;

  struct supervision_section {
    int64_t restart_intensity_max = 10;
    int64_t restart_period_ms = 5000;
    int64_t backoff_initial_ms = 10;
    int64_t backoff_max_ms = 5000;
    int64_t backoff_jitter_percent = 20;
  } supervision;

  struct breaker_section {
    int64_t failures_consecutive_max = 5;
    int64_t failure_rate_percent_max = 50;
    int64_t window_ms = 10000;
    int64_t window_calls_min = 20;
    int64_t reset_timeout_ms = 1000;
    int64_t reset_timeout_ms_max = 30000;
    int64_t half_open_probes = 1;
    int64_t call_timeout_ms = 5000;
  } breaker;

  /// Gateway authentication: API keys and HS256 JWTs (actors/auth.hpp).
  struct auth_section {
    /// File holding the bootstrap admin key (`--admin-key-file`); empty: one is generated at
    /// first start, stored hashed in the data directory and printed once.
    std::string admin_key_file = {};
    /// File holding the HS256 secret for JWT bearer tokens; empty: JWTs are refused.
    std::string jwt_secret_file = {};
    std::string jwt_issuer = "hive";
    std::string jwt_audience = "hive";
    int64_t jwt_clock_skew_ms = 30000;
    int64_t keys_max = 10000;
  } auth;

  /// Per-tenant limits enforced by the gateway.
  struct quota_section {
    int64_t requests_per_s = 10000;
    int64_t burst_requests = 20000;
    int64_t message_bytes_max = 1 << 20;
    int64_t tenants_tracked_max = 100000;
    /// Live agents of one tenant on one node; a spawn beyond it: quota_exceeded.
    int64_t agents_max = 1000000;
  } quota;

  /// The audit log: one JSON line per state-changing or refused call.
  struct audit_section {
    /// Empty: `audit.log` in the data directory.
    std::string path = {};
    int64_t file_bytes_max = int64_t{256} << 20;
    int64_t files_max = 4;
  } audit;

  /// The `tool_runner` kind (actors/tool_runner.hpp): what tools may run and their ceilings.
  /// A tool declared at spawn names an executable from `allowed_executables` and limits at
  /// most these.
  struct tools_section {
    /// Comma-separated absolute paths of the executables tools may run; empty: none.
    std::string allowed_executables = {};
    /// Where each run gets its fresh scratch directory. Empty: `tool-scratch` in the data
    /// directory.
    std::string scratch_dir = {};
    int64_t cpu_seconds_max = 10;
    int64_t wall_ms_max = 10000;
    int64_t output_bytes_max = 1 << 20;
    int64_t address_space_bytes_max = int64_t{1} << 30;
    int64_t open_files_max = 64;
    int64_t file_bytes_max = int64_t{64} << 20;
    int64_t stdin_bytes_max = 1 << 20;
    /// Tools one tool_runner agent may declare.
    int64_t tools_per_agent_max = 64;
    /// Keyed calls a tool_runner remembers (their intent and result), oldest forgotten first.
    int64_t calls_remembered_max = 10000;
  } tools;

  /// The `planner` kind (durable workflows, actors/planner.hpp).
  struct planner_section {
    /// Steps one workflow may have.
    int64_t steps_max = 10000;
    /// Steps of one workflow dispatched at the same time, at most.
    int64_t parallel_steps_max = 256;
    /// Bytes of one step's output the workflow keeps (a larger reply fails the attempt).
    int64_t step_output_bytes_max = 65536;
    /// How long a provider list looked up for a capability is reused.
    int64_t providers_cache_ms = 1000;
  } planner;

  /// The `llm` and `token_budget` kinds (actors/llm_agent.hpp): the OpenAI-compatible
  /// endpoint every llm agent of the node calls, its limits, and the per-tenant token budget.
  /// Tenants never choose the endpoint or the key (a spawn config may not name them).
  struct llm_section {
    /// `http://HOST[:PORT][/PATH]` (or https) of the API, e.g. `http://127.0.0.1:8000/v1`;
    /// requests go to `<base_url>/chat/completions`. Empty: the environment variable
    /// `HIVE_LLM_BASE_URL` at node start; neither set: spawning an llm agent is refused.
    std::string base_url = {};
    /// The model asked for when a spawn config names none. Empty: `HIVE_LLM_MODEL`.
    std::string model = {};
    /// Name of the environment variable holding the API key (sent as `Authorization: Bearer`).
    /// The key itself is never in the config, in logs or in replies; unset or empty: no key.
    std::string api_key_env = "HIVE_LLM_API_KEY";
    /// One endpoint call at most (connect, send, answer), also cut to the call's deadline.
    int64_t request_timeout_ms = 60000;
    /// Largest HTTP response body accepted from the endpoint; a larger one is refused.
    int64_t reply_bytes_max = 1 << 20;
    /// Ceiling of `max_tokens` (and its default) that an llm agent's spawn config may ask.
    int64_t reply_tokens_max = 4096;
    /// Messages of an agent's journaled conversation (user and assistant turns, the system
    /// prompt not counted); beyond it the oldest turns are dropped first.
    int64_t conversation_messages_max = 200;
    /// Tokens (the endpoint's usage.total_tokens) one tenant may spend, all its llm agents
    /// together, counted by its `TENANT/llm-budget` agent; 0 = no budget.
    int64_t tenant_tokens_max = 1000000;
    /// Consecutive failed endpoint calls of one llm agent that open its circuit breaker.
    int64_t breaker_failures = 5;
    /// How long an open breaker refuses calls before one probe call may go through.
    int64_t breaker_open_ms = 30000;
  } llm;
  /// Pub/sub topics (the `topic` kind, actors/pubsub.hpp).
  struct topics_section {
    /// Agents one topic may have as subscribers (a publish sends one message to each, and
    /// one call sends at most 1024).
    int64_t subscribers_max = 1000;
  } topics;
};

/// The items of a comma-separated list, trimmed of spaces; empty items are dropped.
[[nodiscard]] std::vector<std::string> split_list(std::string_view text);

/// The endpoints of a comma-separated `HOST:PORT` list (`cluster.seeds`); empty text = none.
[[nodiscard]] caf::expected<std::vector<endpoint>> parse_endpoint_list(std::string_view text,
                                                                       std::string_view what);

/// Describes one config key: its dotted path, unit, range or allowed values, and default.
struct config_key_info {
  std::string path;
  std::string unit;
  std::string allowed;
  std::string default_value;
};

/// Lists every key `node_config` has, in reference-file order.
[[nodiscard]] std::vector<config_key_info> config_keys();

/// Sets the key `path` (e.g. `gateway.body_bytes_max`) from its text form, validating it.
[[nodiscard]] caf::error set_config_key(node_config& cfg, std::string_view path,
                                        std::string_view value);

/// Applies a TOML document to `cfg`. Unknown keys, wrong types and out-of-range values are
/// errors naming the key, the value and the allowed range. `origin` names the source.
[[nodiscard]] caf::error apply_toml(node_config& cfg, std::string_view toml_text,
                                    std::string_view origin);

/// Reads and applies a TOML file.
[[nodiscard]] caf::error apply_toml_file(node_config& cfg, const std::string& file);

/// Checks cross-key constraints (e.g. ask_timeout_ms_default <= ask_timeout_ms_max).
[[nodiscard]] caf::error validate(const node_config& cfg);

/// Result of parsing the command line.
struct cli_result {
  node_config config;
  /// True when `--help` or `--version` was handled and printed: the caller exits 0.
  bool exit_now = false;
};

/// Parses `agent-node` flags: `--config FILE` is applied first, then `--name`, `--data-dir`,
/// `--gateway HOST:PORT`, `--metrics HOST:PORT`, `--log-level`, `--cluster HOST:PORT`
/// (cluster.listen), `--seed HOST:PORT` (repeatable, appended to cluster.seeds), and
/// `--set key=value`
/// (repeatable) override it. Help text goes to stdout.
[[nodiscard]] caf::expected<cli_result> parse_command_line(int argc, const char* const* argv);

} // namespace hive
