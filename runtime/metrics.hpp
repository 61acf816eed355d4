#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <caf/all.hpp>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "config/node_config.hpp"
#include "runtime/events.hpp"

namespace hive {

/// Prometheus series of one agent kind, created once and cached by the agents of that kind.
struct kind_metrics {
  prometheus::Counter* messages_handled = nullptr; ///< hive_messages_handled_total{kind}
  prometheus::Counter* failures = nullptr;         ///< hive_agent_failures_total{kind}
  prometheus::Histogram* handling = nullptr;       ///< hive_message_handling_seconds{kind}
  prometheus::Counter* restarts = nullptr;         ///< hive_restarts_total{kind}
  prometheus::Counter* activations = nullptr;      ///< hive_activations_total{kind}
  prometheus::Counter* passivations = nullptr;     ///< hive_passivations_total{kind}
  prometheus::Counter* duplicates = nullptr;       ///< hive_duplicate_commands_total{kind}
  prometheus::Counter* messages_sent = nullptr;    ///< hive_messages_sent_total{kind}
  /// hive_mailbox_messages{kind}: the mailbox depth seen by a handled message (sampled with
  /// the handling time, one message in eight).
  prometheus::Histogram* mailbox = nullptr;
};

/// The node's metrics registry. Every series is named `hive_<thing>_<unit>`, label sets are
/// bounded (kind, supervisor level, breaker state, route, code: never an agent id).
/// Thread-safe: series are created under a mutex, then updated lock-free.
class metrics {
public:
  metrics();
  metrics(const metrics&) = delete;
  metrics& operator=(const metrics&) = delete;

  /// The series of agent kind `kind` (created on first use).
  [[nodiscard]] kind_metrics& for_kind(const std::string& kind);

  /// The node's lifecycle event stream (it travels with the metrics: every component that
  /// reports metrics reports events too).
  [[nodiscard]] event_bus& events() noexcept {
    return events_;
  }

  /// Counts one supervisor escalation (`hive_escalations_total{level}`), level is
  /// `root`, `tenant` or `other`.
  void escalation(std::string_view level);

  /// Adds `delta` to `hive_agents_live`.
  void agents_live_add(double delta);

  /// An agent hibernated (`delta` 1: `hive_hibernations_total` and `hive_agents_hibernated`
  /// grow) or a hibernated one woke or left (-1: the gauge shrinks).
  void hibernated_add(int delta);

  /// Records a breaker transition: `hive_breaker_transitions_total{to}` and the gauges
  /// `hive_breakers{state}` (number of breakers in each state).
  void breaker_transition(std::string_view from, std::string_view to);

  /// Adds a breaker that starts closed (`hive_breakers{state="closed"}` += 1); `remove`
  /// takes one away in its current state.
  void breaker_added();
  void breaker_removed(std::string_view state);

  /// Records one gateway request: `hive_gateway_requests_total{route,code}` and
  /// `hive_gateway_request_seconds{route}`. `route` is a route template, never a raw path.
  void gateway_request(const std::string& route, int status, double seconds);

  /// Records one request of the binary protocol: `hive_binary_requests_total{kind,code}`
  /// (`code` an errc name, "ok" on success) and `hive_binary_request_seconds{kind}`. `kind` is
  /// one of hello, spawn, tell, ask, stop, invalid.
  void binary_request(std::string_view kind, std::string_view code, double seconds);

  /// `hive_binary_connections`: open connections of the binary listener (+1 / -1).
  void binary_connections(int delta);

  /// One group commit of the store: `hive_journal_commit_batch_writes` (writes per commit)
  /// and `hive_journal_commit_seconds` (the synced write).
  void journal_commit(size_t writes, double seconds);

  /// `hive_journal_append_seconds`: enqueue of one journal append to its durable completion.
  void journal_append(double seconds);

  /// `hive_storage_failures_total{code}`: storage_error, storage_full, corrupt_record, ...
  void storage_failure(std::string_view code);

  /// One live migration out of this node: `hive_migrations_total{result}` (`moved` or
  /// `aborted`) and, when moved, `hive_migration_pause_seconds` (the agent out of the
  /// directory, so that calls wait, to the stash forwarded to the new node, whose activation
  /// is then running: `migration_result::pause_ms`).
  void migration(bool moved, double pause_seconds);

  /// Totals of the call transport since start (runtime/transport.hpp), copied in now and then:
  /// `hive_transport_frames_total{direction}` (sent, received),
  /// `hive_transport_writes_total{way}` (direct: from the caller's thread; queued: handed to
  /// the I/O thread), `hive_transport_connections_refused_total` (bad hello),
  /// `hive_transport_tells_failed_total` (one-way messages that failed here) and
  /// `hive_transport_tls_refused_total` (failed TLS handshakes, either side). Totals that
  /// did not grow leave the counters as they are.
  /// `hive_transport_actor_runs_total{where}` counts the actors a frame made ready: run on
  /// the transport's thread (inline) or handed to the workers (scheduler; see
  /// runtime/inline_exec.hpp).
  void transport_totals(uint64_t sent, uint64_t received, uint64_t direct, uint64_t queued,
                        uint64_t refused, uint64_t tells_failed, uint64_t tls_refused,
                        uint64_t runs_inline, uint64_t runs_handed_over);

  /// Totals of the replicator since start (runtime/replication.hpp), copied in now and then:
  /// `hive_replication_writes_total{result}` (acknowledged, no_quorum, fenced),
  /// `hive_replication_repairs_total` (whole copies sent to lagging replicas),
  /// `hive_failovers_total` (agents this node took over from a dead host) and
  /// `hive_replication_epochs_total` (activations that took a new epoch from a majority).
  void replication_totals(uint64_t acknowledged, uint64_t no_quorum, uint64_t fenced,
                          uint64_t repairs, uint64_t failovers, uint64_t epochs);

  /// Totals of the cluster's routing of calls by id since start (runtime/cluster.hpp), copied
  /// in now and then: `hive_directory_routes_total{way}` (cached, owner, placement: how a
  /// call forwarded to another member found its agent) and `hive_directory_misses_total`
  /// (members asked that did not have the agent).
  void directory_totals(uint64_t cached, uint64_t owner, uint64_t placement, uint64_t misses);

  /// The registry, for components that add their own families.
  [[nodiscard]] std::shared_ptr<prometheus::Registry> registry() const {
    return registry_;
  }

  /// Serves `/metrics` on `ep` (port 0 = ephemeral). Returns the bound port.
  [[nodiscard]] caf::expected<uint16_t> serve(const endpoint& ep);

  /// Text exposition of every series (what `/metrics` returns).
  [[nodiscard]] std::string render() const;

private:
  event_bus events_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::mutex mtx_;
  std::map<std::string, kind_metrics, std::less<>> kinds_;
  prometheus::Family<prometheus::Counter>* messages_handled_;
  prometheus::Family<prometheus::Counter>* failures_;
  prometheus::Family<prometheus::Histogram>* handling_;
  prometheus::Family<prometheus::Counter>* messages_sent_;
  prometheus::Counter* hibernations_ = nullptr;
  prometheus::Gauge* hibernated_ = nullptr;
  prometheus::Family<prometheus::Histogram>* mailbox_;
  prometheus::Family<prometheus::Counter>* restarts_;
  prometheus::Family<prometheus::Counter>* escalations_;
  prometheus::Gauge* agents_live_;
  prometheus::Family<prometheus::Counter>* breaker_transitions_;
  prometheus::Family<prometheus::Gauge>* breakers_;
  prometheus::Family<prometheus::Counter>* gateway_requests_;
  prometheus::Family<prometheus::Histogram>* gateway_latency_;
  prometheus::Family<prometheus::Counter>* migrations_;
  prometheus::Histogram* migration_pause_;
  prometheus::Family<prometheus::Counter>* transport_frames_;
  prometheus::Family<prometheus::Counter>* transport_writes_;
  prometheus::Family<prometheus::Counter>* transport_actor_runs_;
  prometheus::Counter* transport_refused_;
  prometheus::Counter* transport_tells_failed_;
  prometheus::Counter* transport_tls_refused_;
  prometheus::Family<prometheus::Counter>* directory_routes_;
  prometheus::Counter* directory_misses_;
  std::array<uint64_t, 4> directory_seen_{};
  /// The transport totals last copied in (counters grow by the difference).
  std::array<uint64_t, 9> transport_seen_{};
  prometheus::Family<prometheus::Counter>* replication_writes_;
  prometheus::Counter* replication_repairs_;
  prometheus::Counter* failovers_;
  prometheus::Counter* replication_epochs_;
  std::array<uint64_t, 6> replication_seen_{};
  std::map<std::string, prometheus::Histogram*, std::less<>> gateway_hist_;
  prometheus::Family<prometheus::Counter>* binary_requests_;
  prometheus::Family<prometheus::Histogram>* binary_latency_;
  prometheus::Gauge* binary_connections_;
  /// Cached children of the binary families, keyed by "kind code" and kind.
  std::map<std::string, prometheus::Counter*, std::less<>> binary_counters_;
  std::map<std::string, prometheus::Histogram*, std::less<>> binary_hist_;
  prometheus::Family<prometheus::Counter>* activations_;
  prometheus::Family<prometheus::Counter>* passivations_;
  prometheus::Family<prometheus::Counter>* duplicates_;
  prometheus::Histogram* commit_batch_;
  prometheus::Histogram* commit_seconds_;
  prometheus::Histogram* append_seconds_;
  prometheus::Family<prometheus::Counter>* storage_failures_;
};

} // namespace hive
