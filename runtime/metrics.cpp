#include "runtime/metrics.hpp"

#include <prometheus/text_serializer.h>

#include "protocols/errc.hpp"

namespace hive {

namespace {

prometheus::Histogram::BucketBoundaries latency_buckets() {
  return {1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1, 5, 10};
}

} // namespace

metrics::metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  using namespace prometheus;
  messages_handled_ = &BuildCounter()
                         .Name("hive_messages_handled_total")
                         .Help("Messages handled by agents, per agent kind")
                         .Register(*registry_);
  messages_sent_ = &BuildCounter()
                      .Name("hive_messages_sent_total")
                      .Help("Messages agents sent to other agents (tells, asks, broadcasts, "
                            "published), per sending agent's kind")
                      .Register(*registry_);
  mailbox_ = &BuildHistogram()
                .Name("hive_mailbox_messages")
                .Help("Messages queued in an agent's mailbox behind the one it handles (one "
                      "handled message in eight is sampled), per agent kind")
                .Register(*registry_);
  failures_ = &BuildCounter()
                 .Name("hive_agent_failures_total")
                 .Help("Agent crashes (exceptions or failed starts), per agent kind")
                 .Register(*registry_);
  handling_ = &BuildHistogram()
                 .Name("hive_message_handling_seconds")
                 .Help("Time an agent spends handling one message, per agent kind")
                 .Register(*registry_);
  restarts_ = &BuildCounter()
                 .Name("hive_restarts_total")
                 .Help("Agent restarts by their supervisor, per agent kind")
                 .Register(*registry_);
  escalations_ = &BuildCounter()
                    .Name("hive_escalations_total")
                    .Help("Supervisors that exceeded their restart intensity and escalated")
                    .Register(*registry_);
  agents_live_ = &BuildGauge()
                    .Name("hive_agents_live")
                    .Help("Agents currently running on this node")
                    .Register(*registry_)
                    .Add({});
  hibernations_ = &BuildCounter()
                     .Name("hive_hibernations_total")
                     .Help("Agents that released their actor while idle and kept their state in "
                           "memory (agents.hibernate_idle_ms)")
                     .Register(*registry_)
                     .Add({});
  hibernated_ = &BuildGauge()
                   .Name("hive_agents_hibernated")
                   .Help("Agents hibernated now: in the directory, state in memory, no actor")
                   .Register(*registry_)
                   .Add({});
  breaker_transitions_ = &BuildCounter()
                            .Name("hive_breaker_transitions_total")
                            .Help("Circuit breaker transitions, by the state entered")
                            .Register(*registry_);
  breakers_ = &BuildGauge()
                 .Name("hive_breakers")
                 .Help("Circuit breakers on this node, by state")
                 .Register(*registry_);
  for (auto s : {"closed", "open", "half_open"})
    breakers_->Add({{"state", s}});
  gateway_requests_ = &BuildCounter()
                         .Name("hive_gateway_requests_total")
                         .Help("Gateway HTTP requests, by route template and status code")
                         .Register(*registry_);
  gateway_latency_ = &BuildHistogram()
                        .Name("hive_gateway_request_seconds")
                        .Help("Gateway HTTP request latency, by route template")
                        .Register(*registry_);
  binary_requests_ = &BuildCounter()
                        .Name("hive_binary_requests_total")
                        .Help("Binary protocol requests, by request kind and result (errc name)")
                        .Register(*registry_);
  binary_latency_ = &BuildHistogram()
                       .Name("hive_binary_request_seconds")
                       .Help("Binary protocol request latency, read to answer queued, by kind")
                       .Register(*registry_);
  binary_connections_ = &BuildGauge()
                           .Name("hive_binary_connections")
                           .Help("Open connections of the binary protocol listener")
                           .Register(*registry_)
                           .Add({});
  activations_ = &BuildCounter()
                    .Name("hive_activations_total")
                    .Help("Persisted agents activated from the store, per agent kind")
                    .Register(*registry_);
  passivations_ = &BuildCounter()
                     .Name("hive_passivations_total")
                     .Help("Persisted agents passivated after being idle, per agent kind")
                     .Register(*registry_);
  duplicates_ = &BuildCounter()
                   .Name("hive_duplicate_commands_total")
                   .Help("Commands answered from the idempotency window, per agent kind")
                   .Register(*registry_);
  commit_batch_ =
    &BuildHistogram()
       .Name("hive_journal_commit_batch_writes")
       .Help("Writes carried by one group commit (one synced WriteBatch)")
       .Register(*registry_)
       .Add({},
            Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096});
  commit_seconds_ = &BuildHistogram()
                       .Name("hive_journal_commit_seconds")
                       .Help("Time of one synced group-commit write")
                       .Register(*registry_)
                       .Add({}, latency_buckets());
  append_seconds_ = &BuildHistogram()
                       .Name("hive_journal_append_seconds")
                       .Help("Time from queueing a journal append to its durable completion")
                       .Register(*registry_)
                       .Add({}, latency_buckets());
  storage_failures_ = &BuildCounter()
                         .Name("hive_storage_failures_total")
                         .Help("Storage failures, by error code")
                         .Register(*registry_);
  migrations_ = &BuildCounter()
                   .Name("hive_migrations_total")
                   .Help("Live migrations out of this node, by result (moved, aborted)")
                   .Register(*registry_);
  migration_pause_ = &BuildHistogram()
                        .Name("hive_migration_pause_seconds")
                        .Help("Pause of a live migration: the agent out of the directory (calls "
                              "wait from then on) to the stash forwarded to the new node")
                        .Register(*registry_)
                        .Add({}, latency_buckets());
  replication_writes_ = &BuildCounter()
                           .Name("hive_replication_writes_total")
                           .Help("Replicated journal writes by result: acknowledged (host and a "
                                 "majority of the replica set), no_quorum, fenced")
                           .Register(*registry_);
  replication_repairs_ = &BuildCounter()
                            .Name("hive_replication_repairs_total")
                            .Help("Whole agent copies sent to replicas that missed writes")
                            .Register(*registry_)
                            .Add({});
  failovers_ = &BuildCounter()
                  .Name("hive_failovers_total")
                  .Help("Agents this node activated from its replica after their node died")
                  .Register(*registry_)
                  .Add({});
  replication_epochs_ = &BuildCounter()
                           .Name("hive_replication_epochs_total")
                           .Help("Activations that took a new epoch from a majority of their "
                                 "replica set")
                           .Register(*registry_)
                           .Add({});
  transport_frames_ = &BuildCounter()
                         .Name("hive_transport_frames_total")
                         .Help("Frames of the call transport, by direction (sent, received)")
                         .Register(*registry_);
  transport_writes_ = &BuildCounter()
                         .Name("hive_transport_writes_total")
                         .Help("Frames written by the caller's thread (direct) or handed to the "
                               "transport's I/O thread (queued)")
                         .Register(*registry_);
  transport_actor_runs_ =
    &BuildCounter()
       .Name("hive_transport_actor_runs_total")
       .Help("Actors made ready by a frame of the call transport: run on its thread right away "
             "(inline: routers and ephemeral agents, when no other frame waits) or handed to the "
             "scheduler's workers (scheduler)")
       .Register(*registry_);
  transport_refused_ = &BuildCounter()
                          .Name("hive_transport_connections_refused_total")
                          .Help("Transport connections refused: another cluster or protocol "
                                "version, or no hello first")
                          .Register(*registry_)
                          .Add({});
  transport_tells_failed_ = &BuildCounter()
                               .Name("hive_transport_tells_failed_total")
                               .Help("One-way messages from other nodes that failed here (agent "
                                     "not found, overloaded, ...)")
                               .Register(*registry_)
                               .Add({});
  transport_tls_refused_ = &BuildCounter()
                              .Name("hive_transport_tls_refused_total")
                              .Help("Call-transport TLS handshakes that failed, on either side "
                                    "(no certificate, one from another CA, not TLS)")
                              .Register(*registry_)
                              .Add({});
  directory_routes_ = &BuildCounter()
                         .Name("hive_directory_routes_total")
                         .Help("Calls forwarded to another member, by how they found the agent: "
                               "cached (location cache), owner (an owner record), placement "
                               "(members asked in placement order)")
                         .Register(*registry_);
  directory_misses_ = &BuildCounter()
                         .Name("hive_directory_misses_total")
                         .Help("Members asked for an agent by id that did not have it")
                         .Register(*registry_)
                         .Add({});
}

namespace {

/// Adds to each counter what its total grew by since `seen` (and remembers the new totals).
template <size_t N>
void add_growth(const std::array<uint64_t, N>& now, std::array<uint64_t, N>& seen,
                const std::array<prometheus::Counter*, N>& counters) {
  for (size_t i = 0; i < N; ++i)
    if (now[i] > seen[i]) {
      counters[i]->Increment(static_cast<double>(now[i] - seen[i]));
      seen[i] = now[i];
    }
}

} // namespace

void metrics::transport_totals(uint64_t sent, uint64_t received, uint64_t direct, uint64_t queued,
                               uint64_t refused, uint64_t tells_failed, uint64_t tls_refused,
                               uint64_t runs_inline, uint64_t runs_handed_over) {
  std::lock_guard<std::mutex> guard{mtx_};
  std::array<uint64_t, 9> now{sent,         received,    direct,      queued,          refused,
                              tells_failed, tls_refused, runs_inline, runs_handed_over};
  std::array<prometheus::Counter*, 9> counters{
    &transport_frames_->Add({{"direction", "sent"}}),
    &transport_frames_->Add({{"direction", "received"}}),
    &transport_writes_->Add({{"way", "direct"}}),
    &transport_writes_->Add({{"way", "queued"}}),
    transport_refused_,
    transport_tells_failed_,
    transport_tls_refused_,
    &transport_actor_runs_->Add({{"where", "inline"}}),
    &transport_actor_runs_->Add({{"where", "scheduler"}})};
  add_growth(now, transport_seen_, counters);
}

void metrics::directory_totals(uint64_t cached, uint64_t owner, uint64_t placement,
                               uint64_t misses) {
  std::lock_guard<std::mutex> guard{mtx_};
  std::array<uint64_t, 4> now{cached, owner, placement, misses};
  std::array<prometheus::Counter*, 4> counters{
    &directory_routes_->Add({{"way", "cached"}}), &directory_routes_->Add({{"way", "owner"}}),
    &directory_routes_->Add({{"way", "placement"}}), directory_misses_};
  add_growth(now, directory_seen_, counters);
}

void metrics::replication_totals(uint64_t acknowledged, uint64_t no_quorum, uint64_t fenced,
                                 uint64_t repairs, uint64_t failovers, uint64_t epochs) {
  std::lock_guard<std::mutex> guard{mtx_};
  std::array<uint64_t, 6> now{acknowledged, no_quorum, fenced, repairs, failovers, epochs};
  std::array<prometheus::Counter*, 6> counters{
    &replication_writes_->Add({{"result", "acknowledged"}}),
    &replication_writes_->Add({{"result", "no_quorum"}}),
    &replication_writes_->Add({{"result", "fenced"}}),
    replication_repairs_,
    failovers_,
    replication_epochs_};
  add_growth(now, replication_seen_, counters);
}

void metrics::journal_commit(size_t writes, double seconds) {
  commit_batch_->Observe(static_cast<double>(writes));
  commit_seconds_->Observe(seconds);
}

void metrics::journal_append(double seconds) {
  append_seconds_->Observe(seconds);
}

void metrics::migration(bool moved, double pause_seconds) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    migrations_->Add({{"result", moved ? "moved" : "aborted"}}).Increment();
  }
  if (moved)
    migration_pause_->Observe(pause_seconds);
}

void metrics::storage_failure(std::string_view code) {
  std::lock_guard<std::mutex> guard{mtx_};
  storage_failures_->Add({{"code", std::string{code}}}).Increment();
}

kind_metrics& metrics::for_kind(const std::string& kind) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = kinds_.find(kind);
  if (i != kinds_.end())
    return i->second;
  kind_metrics km;
  km.messages_handled = &messages_handled_->Add({{"kind", kind}});
  km.failures = &failures_->Add({{"kind", kind}});
  km.handling = &handling_->Add({{"kind", kind}}, latency_buckets());
  km.restarts = &restarts_->Add({{"kind", kind}});
  km.activations = &activations_->Add({{"kind", kind}});
  km.passivations = &passivations_->Add({{"kind", kind}});
  km.duplicates = &duplicates_->Add({{"kind", kind}});
  km.messages_sent = &messages_sent_->Add({{"kind", kind}});
  km.mailbox = &mailbox_->Add(
    {{"kind", kind}},
    prometheus::Histogram::BucketBoundaries{0, 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536});
  return kinds_.emplace(kind, km).first->second;
}

void metrics::escalation(std::string_view level) {
  std::lock_guard<std::mutex> guard{mtx_};
  escalations_->Add({{"level", std::string{level}}}).Increment();
}

void metrics::hibernated_add(int delta) {
  if (delta > 0)
    hibernations_->Increment(delta);
  hibernated_->Increment(delta);
}

void metrics::agents_live_add(double delta) {
  agents_live_->Increment(delta);
}

void metrics::breaker_transition(std::string_view from, std::string_view to) {
  std::lock_guard<std::mutex> guard{mtx_};
  breaker_transitions_->Add({{"to", std::string{to}}}).Increment();
  breakers_->Add({{"state", std::string{from}}}).Decrement();
  breakers_->Add({{"state", std::string{to}}}).Increment();
}

void metrics::breaker_added() {
  std::lock_guard<std::mutex> guard{mtx_};
  breakers_->Add({{"state", "closed"}}).Increment();
}

void metrics::breaker_removed(std::string_view state) {
  std::lock_guard<std::mutex> guard{mtx_};
  breakers_->Add({{"state", std::string{state}}}).Decrement();
}

void metrics::gateway_request(const std::string& route, int status, double seconds) {
  prometheus::Histogram* hist = nullptr;
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    counter = &gateway_requests_->Add({{"route", route}, {"code", std::to_string(status)}});
    auto i = gateway_hist_.find(route);
    if (i == gateway_hist_.end())
      i =
        gateway_hist_.emplace(route, &gateway_latency_->Add({{"route", route}}, latency_buckets()))
          .first;
    hist = i->second;
  }
  counter->Increment();
  hist->Observe(seconds);
}

void metrics::binary_request(std::string_view kind, std::string_view code, double seconds) {
  prometheus::Histogram* hist = nullptr;
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    std::string key{kind};
    key += ' ';
    key += code;
    auto c = binary_counters_.find(key);
    if (c == binary_counters_.end())
      c =
        binary_counters_
          .emplace(
            key, &binary_requests_->Add({{"kind", std::string{kind}}, {"code", std::string{code}}}))
          .first;
    counter = c->second;
    auto h = binary_hist_.find(kind);
    if (h == binary_hist_.end())
      h = binary_hist_
            .emplace(std::string{kind},
                     &binary_latency_->Add({{"kind", std::string{kind}}}, latency_buckets()))
            .first;
    hist = h->second;
  }
  counter->Increment();
  hist->Observe(seconds);
}

void metrics::binary_connections(int delta) {
  binary_connections_->Increment(delta);
}

caf::expected<uint16_t> metrics::serve(const endpoint& ep) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(ep.str(), 2);
    exposer_->RegisterCollectable(registry_);
    auto ports = exposer_->GetListeningPorts();
    if (ports.empty())
      return make_error(errc::io_error, "metrics: no listening port on " + ep.str());
    return static_cast<uint16_t>(ports.front());
  } catch (const std::exception& e) {
    exposer_.reset();
    return make_error(errc::io_error, "metrics: cannot listen on " + ep.str() + ": " + e.what());
  }
}

std::string metrics::render() const {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(registry_->Collect());
}

} // namespace hive
