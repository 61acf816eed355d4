#include "runtime/cluster.hpp"
#include "runtime/replication.hpp"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/errc.hpp"
#include "protocols/records.hpp"
#include "protocols/type_ids.hpp"
#include "runtime/logging.hpp"
#include "runtime/membership.hpp"
#include "runtime/node_runtime.hpp"
#include "runtime/transport.hpp"

namespace hive {

namespace {

/// A call by id forwarded to the other members over the call transport, tried in order
/// (`targets`: the location cache's member first, then placement order) until one has the id.
struct forward_job {
  std::string op;
  agent_id id;
  agent_call call;
  std::chrono::steady_clock::time_point deadline;
  cluster::reply_fn done;
  /// The member the location cache named (tried first), or empty.
  std::string preferred;
  /// Whether this node was asked already (else it is tried last).
  bool tried_local = true;
  /// (member name, transport address), in the order to try.
  std::vector<std::pair<std::string, std::string>> targets;
  size_t next = 0;
  /// Whether `targets` holds the ranked list already; a call to a cached location starts with
  /// that member alone and ranks the others only if it answers agent_not_found.
  bool ranked = true;
  /// The member an owner record named (see `owner_record`), or empty.
  std::string hinted;
};

/// A migrating agent's records to carry to another member (local message).
struct ship_job {
  std::string to;
  migration_payload payload;
  std::function<void(caf::expected<caf::actor>)> done;
  /// Too large for a frame of the call transport: sent as a BASP request.
  bool via_basp = false;
  /// Settling (the target's answer never came): the shipped snapshot's epoch, the error the
  /// shipment got, and until when the target is asked what became of it.
  uint64_t epoch = 0;
  caf::error unanswered;
  std::chrono::steady_clock::time_point settle_until{};
  /// When the shipment left (the target's deadlines count from then: migration_payload).
  std::chrono::steady_clock::time_point shipped_at{};
};

/// A migration's grant (or refusal), for its target (`grant_fn`).
struct grant_job {
  std::string to;
  agent_id id;
  uint64_t shipment = 0;
  caf::expected<uint64_t> epoch{uint64_t{0}};
};

/// A spawn to place on another member (local message).
struct forward_spawn_job {
  std::string node;
  remote_spawn req;
  cluster::spawn_fn done;
};

} // namespace

} // namespace hive

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::forward_spawn_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::ship_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hive::grant_job)

namespace hive {

namespace {

/// Milliseconds since the Unix epoch (the wall clock).
uint64_t unix_ms_now() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
}

using forward_atom = caf::atom_constant<caf::atom("hcfwd")>;
using spawn_done_atom = caf::atom_constant<caf::atom("hcspdone")>;
using tick_atom = caf::atom_constant<caf::atom("hctick")>;
using connected_atom = caf::atom_constant<caf::atom("hcconn")>;
using connect_failed_atom = caf::atom_constant<caf::atom("hcconnfail")>;
using leave_atom = caf::atom_constant<caf::atom("hcleave")>;
/// The last word of a leaving node: its member list (answered with `true`).
using farewell_atom = caf::atom_constant<caf::atom("hcbye")>;
using ask_done_atom = caf::atom_constant<caf::atom("hcaskdone")>;
using start_atom = caf::atom_constant<caf::atom("hcstart")>;
using ship_atom = caf::atom_constant<caf::atom("hcship")>;
/// Asks a migration's target what became of a shipment whose answer never came.
using settle_atom = caf::atom_constant<caf::atom("hcsettle")>;
/// Sends a migration's target its grant or refusal (grant_job).
using grant_atom = caf::atom_constant<caf::atom("hcgrant")>;
using keys_changed_atom = caf::atom_constant<caf::atom("hckeys")>;
/// Every `cluster.heartbeat_interval_ms`: pings the linked members, checks for silent ones.
using beat_atom = caf::atom_constant<caf::atom("hcbeat")>;
/// A member's heartbeat: (ping_atom, its name).
using ping_atom = caf::atom_constant<caf::atom("hcping")>;

/// How node_runtime::migrate_out ships a migrating agent to member `to`: through this node's
/// manager `mgr`, which sends the `migrate_in` and reports the answer.
ship_fn ship_via(caf::actor mgr, std::string to) {
  return [mgr = std::move(mgr), to = std::move(to)](
           migration_payload p, std::function<void(caf::expected<caf::actor>)> shipped) {
    ship_job job;
    job.to = to;
    job.payload = std::move(p);
    job.done = std::move(shipped);
    caf::anon_send(mgr, ship_atom::value, std::move(job));
  };
}

/// How node_runtime::migrate_out tells member `to` the grant for a shipment that went ahead
/// of the agent's last appends: through this node's manager `mgr` (op `m.grant`, body
/// `SHIPMENT EPOCH`, or `SHIPMENT 0 REASON` for none).
grant_fn grant_via(caf::actor mgr, std::string to) {
  return [mgr = std::move(mgr), to = std::move(to)](const agent_id& id, uint64_t shipment,
                                                    caf::expected<uint64_t> epoch) {
    caf::anon_send(mgr, grant_atom::value, grant_job{to, id, shipment, std::move(epoch)});
  };
}

/// This node's persisted agents (running and stored), in id order; `skipped` counts the
/// ephemeral ones.
std::vector<agent_id> persisted_agents(const node_runtime& rt, size_t& skipped) {
  std::vector<agent_id> ids;
  std::string after;
  for (;;) {
    auto page = rt.list("", after, 1000);
    for (auto& v : page) {
      auto kind = rt.kinds().find(v.kind);
      if (kind == nullptr || kind->persistence == persistence_mode::ephemeral || !rt.db())
        ++skipped;
      else
        ids.push_back(v.id);
    }
    if (page.size() < 1000)
      return ids;
    after = page.back().id.str();
  }
}

struct manager_state {
  std::shared_ptr<cluster::shared_state> shared;
  node_runtime* rt = nullptr;
  std::string cluster_name;
  /// BASP links are mutual TLS (CAF's openssl module; `cluster.tls_*`).
  bool tls = false;
  /// The member list and its rules (runtime/membership.hpp).
  std::unique_ptr<member_table> table;
  /// Live links: the node managers of other members, by name (invalid: not connected).
  std::map<std::string, caf::actor> handles;
  std::vector<std::string> seeds;
  std::chrono::milliseconds join_retry{500};
  /// Addresses a connection attempt is under way to.
  std::set<std::string> connecting;
  bool leaving = false;
  /// This node's agent count in the last gossip it sent.
  uint64_t gossiped_agents = 0;
  uint64_t next_ask = 1;
  std::unordered_map<uint64_t, caf::response_promise> asks;
  size_t asks_max = 0;
  /// Failure detection: when each linked member was last heard (its ping), and the members
  /// silent for longer than `suspect_after` (shown as `suspect`; this node's view only).
  std::map<std::string, std::chrono::steady_clock::time_point> heard;
  std::set<std::string> suspects;
  std::chrono::milliseconds heartbeat{100};
  std::chrono::milliseconds suspect_after{300};
  std::chrono::milliseconds migration_timeout{5000};
  /// Joining: when this node started, and how long it stays joining at most.
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::chrono::milliseconds join_timeout{5000};
  /// A seeded node forms a cluster of its own only after its seeds failed for this long.
  std::chrono::milliseconds seed_wait{1000};
  /// Down members are removed after this, removed ones forgotten after this more.
  std::chrono::milliseconds removed_after{30000};
  /// Seeds whose first join attempt ended (joined, refused or failed), with why the last
  /// one failed (empty: it did not).
  std::map<std::string, std::string> seeds_tried;

  void tried(const std::string& address, std::string failure = {}) {
    if (std::find(seeds.begin(), seeds.end(), address) != seeds.end())
      seeds_tried[address] = std::move(failure);
  }

  static inline const char* name = "hive.node_manager";

  /// Whether this node opens the connection to member `n` (the other one waits for it): of
  /// two members the one with the smaller name dials. Two nodes dialling each other at the
  /// same moment can leave both of CAF 0.17's `remote_actor` calls hanging until the
  /// connection timeout, with neither link up. (Seeds are dialled regardless.)
  bool dials(const std::string& n) const {
    return table->self().name < n;
  }

  /// The member whose node manager is `addr` (empty if none).
  std::string name_of(const caf::actor_addr& addr) const {
    for (auto& [n, h] : handles)
      if (h && h.address() == addr)
        return n;
    return {};
  }

  /// A live link to a joining or up member (those get the member list), or an invalid handle.
  caf::actor gossip_handle(const std::string& n) const {
    auto h = handles.find(n);
    auto m = table->find(n);
    return h != handles.end() && m != nullptr && member_table::status_rank(m->status) <= 1
      ? h->second
      : caf::actor{};
  }

  /// A live link to an up member, or an invalid handle.
  caf::actor up_handle(const std::string& n) const {
    auto h = handles.find(n);
    auto m = table->find(n);
    return h != handles.end() && m != nullptr && m->status == "up" ? h->second : caf::actor{};
  }

  /// A live link to a member that still serves calls (up, or leaving: handing its agents
  /// off), or an invalid handle.
  caf::actor serving_handle(const std::string& n) const {
    auto h = handles.find(n);
    auto m = table->find(n);
    return h != handles.end() && m != nullptr && (m->status == "up" || m->status == "leaving")
      ? h->second
      : caf::actor{};
  }
};

using manager_actor = caf::stateful_actor<manager_state>;

std::vector<member_info> member_list(const manager_state& st) {
  return st.table->list();
}

void publish(manager_actor* self) {
  auto& st = self->state;
  st.table->self().agents = st.rt != nullptr ? st.rt->agent_count() : 0;
  auto list = member_list(st);
  for (auto& m : list) // this node's suspicion shows in its own view, never in its gossip
    if (m.status == "up" && st.suspects.count(m.name) > 0)
      m.status = "suspect";
  std::set<std::string> linked;
  for (auto& [n, h] : st.handles)
    if (h)
      linked.insert(n);
  // Resident agents (kind_spec::resident) carry on by themselves: when this node comes up its
  // own are activated, and when a member goes down the survivor first in line takes over its.
  bool self_up = false;
  std::vector<std::string> lost;
  {
    std::lock_guard<std::mutex> guard{st.shared->mtx};
    auto serving = [](const std::string& status) {
      return status == "up" || status == "suspect" || status == "leaving";
    };
    for (auto& m : list) {
      auto old = std::find_if(st.shared->members.begin(), st.shared->members.end(),
                              [&](const member_info& o) { return o.name == m.name; });
      bool was = old != st.shared->members.end() && serving(old->status);
      if (m.name == st.shared->self_name)
        self_up = m.status == "up" && !was;
      else if (was && (m.status == "down" || m.status == "removed"))
        lost.push_back(m.name);
    }
    st.shared->members = std::move(list);
    st.shared->linked = std::move(linked);
  }
  if (st.rt != nullptr) {
    if (self_up)
      st.rt->wake_residents();
    for (auto& n : lost)
      st.rt->wake_taken_over(n);
  }
}

/// What `cluster::replicate` set (empty functions before).
cluster::replicated_state replicated(const manager_state& st) {
  std::lock_guard<std::mutex> guard{st.shared->mtx};
  return st.shared->replicated;
}

/// Sends the replicated state's digest (or, with `full`, the whole state, asking for the
/// receiver's if it differs) to every linked member; digest and state are computed once.
void send_key_sync(manager_actor* self, bool full) {
  auto& st = self->state;
  auto r = replicated(st);
  if (!r.digest)
    return;
  key_sync msg{r.digest(), full ? r.state() : std::string{}, full};
  for (auto& [n, h] : st.handles)
    if (auto peer = st.gossip_handle(n))
      self->send(peer, msg);
}

/// Sends the member list to every connected member.
void gossip(manager_actor* self) {
  auto& st = self->state;
  member_gossip g{member_list(st)};
  for (auto& [n, h] : st.handles)
    if (auto peer = st.gossip_handle(n))
      self->send(peer, g);
}

/// A joining node is up once it has a live link to every up member it knows (at least one),
/// or when every seed failed and `cluster.seed_wait_ms` passed (it forms a cluster), or after
/// `cluster.join_timeout_ms` (logged: some member did not let it in).
void maybe_up(manager_actor* self) {
  auto& st = self->state;
  if (st.table->self().status != "joining")
    return;
  size_t links = 0;
  bool all = true;
  for (auto& [n, m] : st.table->others()) {
    if (m.status != "up" && m.status != "joining")
      continue;
    if (st.table->linked(n))
      ++links;
    else if (m.status == "up")
      all = false;
  }
  const char* why = nullptr;
  auto waited = self->clock().now() - st.started;
  if (links > 0 && all)
    why = "joined";
  else if (links == 0 && st.connecting.empty() && st.seeds_tried.size() >= st.seeds.size()
           && waited >= st.seed_wait)
    why = "no seed took it in: formed a cluster";
  else if (waited >= st.join_timeout)
    why = "cluster.join_timeout_ms passed without a link to every up member";
  if (why == nullptr)
    return;
  st.table->self().status = "up";
  nlohmann::json fs{
    {"member", st.table->self().name},
    {"reason", why},
    {"members", st.table->others().size() + 1},
    {"joining_ms", std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()}};
  if (links == 0) { // the seeds' last failures say why none took it in
    auto& seeds = fs["seeds"] = nlohmann::json::object();
    for (auto& [address, failure] : st.seeds_tried)
      seeds[address] = failure.empty() ? "no failure" : failure;
  }
  log::event(links > 0 && all ? spdlog::level::info : spdlog::level::warn, "member_up",
             std::move(fs));
  gossip(self);
  publish(self);
}

void log_member(const member_info& m, const char* event) {
  log::event(spdlog::level::info, event,
             {{"member", m.name},
              {"address", m.address},
              {"status", m.status},
              {"incarnation", m.incarnation}});
}

/// Connects to `address` off the scheduler (CAF's remote_actor blocks): the answer comes back
/// as (connected_atom, address, handle) or (connect_failed_atom, address, reason).
void connect(manager_actor* self, const std::string& address) {
  auto& st = self->state;
  if (address == st.table->self().address || st.connecting.count(address) > 0)
    return;
  auto ep = parse_endpoint(address, "cluster address");
  if (!ep)
    return;
  st.connecting.insert(address);
  auto mgr = caf::actor_cast<caf::actor>(self);
  if (st.shared->connector) // tests: links without sockets (cluster.hpp)
    return st.shared->connector(mgr, address);
  // (The int argument: UBSan flags argument-less function-actor spawns in CAF 0.17.)
  self->system().spawn<caf::detached>(
    [mgr, address, host = ep->host, tls = st.tls](caf::event_based_actor* helper, uint16_t port) {
      auto& sys = helper->system();
      auto handle = tls ? caf::openssl::remote_actor(sys, host, port)
                        : sys.middleman().remote_actor(host, port);
      if (handle)
        caf::anon_send(mgr, connected_atom::value, address, *handle);
      else
        caf::anon_send(mgr, connect_failed_atom::value, address,
                       helper->system().render(handle.error()));
    },
    ep->port);
}

/// Drops the links that the table no longer counts as live (a member restarted: its old
/// incarnation's node manager is gone).
void sync_links(manager_actor* self) {
  auto& st = self->state;
  for (auto& [n, h] : st.handles)
    if (h && !st.table->linked(n)) {
      self->demonitor(h);
      h = caf::actor{};
    }
}

/// Takes in a member list gossiped by the node manager `from`. True if anything changed.
bool merge(manager_actor* self, const std::vector<member_info>& list, const caf::actor_addr& from) {
  auto& st = self->state;
  auto before = st.table->list();
  auto ch = st.table->merge(list, st.name_of(from), self->clock().now());
  sync_links(self);
  if (ch.changed)
    for (auto& m : st.table->list()) {
      auto old = std::find_if(before.begin(), before.end(),
                              [&](const member_info& b) { return b.name == m.name; });
      if (old == before.end()) {
        log_member(m, "member_added");
        continue;
      }
      const char* event = old->incarnation != m.incarnation ? "member_rejoined"
        : old->status == m.status                           ? nullptr
        : m.status == "up"                                  ? "member_up"
        : m.status == "down"                                ? "member_down"
        : m.status == "removed"                             ? "member_removed"
                                                            : "member_leaving";
      if (event == nullptr)
        continue;
      log_member(m, event);
      if (old->incarnation != m.incarnation || m.status != "up") { // (joining -> up moves none)
        st.shared->forget_member(m.name); // its agents are elsewhere now, or nowhere
        if (m.status == "down" || old->transport != m.transport)
          if (st.shared->transport)
            st.shared->transport->drop(old->transport); // its waiting calls fail now
      }
    }
  for (auto& n : ch.connect)
    if (auto m = st.table->find(n); m != nullptr && st.dials(n))
      connect(self, m->address);
  return ch.changed;
}

/// Adds (or refreshes) the member behind a live link that just introduced itself.
bool add_member(manager_actor* self, const member_info& m, const caf::actor& handle) {
  auto& st = self->state;
  bool known = st.table->find(m.name) != nullptr;
  bool fresh = st.table->introduce(m);
  auto entry = st.table->find(m.name);
  if (entry == nullptr || entry->incarnation != m.incarnation)
    return false; // stale: an older incarnation than the one known
  auto& h = st.handles[m.name];
  if (h != handle) {
    if (h)
      self->demonitor(h);
    h = handle;
    self->monitor(handle);
    // A new link: the peer hears this node's view now, whatever changed since it last did
    // (e.g. this node went up while the peer knew it joining).
    self->send(handle, member_gossip{member_list(st)});
    if (auto r = replicated(st); r.digest)
      self->send(handle, key_sync{r.digest(), {}, false});
  }
  st.heard[m.name] = self->clock().now();
  st.suspects.erase(m.name);
  if (fresh) {
    log_member(*entry, known ? "member_rejoined" : "member_joined");
    if (auto rep = st.rt != nullptr ? st.rt->replication() : nullptr)
      rep->on_member_up(m.name);
  }
  return fresh;
}

/// An `agent_not_found` answer that names the member holding the agent (`owner_record`): the
/// caller asks that member next instead of going on in placement order. The hint travels as a
/// second string of the error's context (message_of and describe show the first).
caf::error with_hint(const caf::error& err, const std::string& member) {
  return caf::error{err.code(), err.category(), caf::make_message(message_of(err), member)};
}

/// The member an `agent_not_found` answer names, if any.
std::optional<std::string> hint_of(const caf::error& err) {
  if (code_of(err) == errc::agent_not_found
      && err.context().match_elements<std::string, std::string>())
    return err.context().get_as<std::string>(1);
  return std::nullopt;
}

/// `moved_not_remembered`: a move must not change the path of any sender's calls while
/// calls of that sender can still be on the old path. Calls a node sent before the move took a
/// path through the source (its stash, then its forwarder, in arrival order), so:
///
/// - The source remembers the new node when its shipment is answered, but as `moved_away`:
///   its own calls still go to its runtime first, where they find the moved entry and queue
///   in the forwarder behind the stash. They go straight to the new node only once the
///   forwarder has ended (the runtime answers agent_not_found). Until then the entry serves
///   as a hint for others (`owner_record`) and for passing tells on (`relayed_tell`).
/// - The target does not forget where it had located the agent when the state arrives: its
///   calls keep going through the source's forwarder, behind those it sent earlier. They
///   switch to the agent here when the source answers that it no longer has it.
///
/// The cost: while calls keep coming, a caller on the new node reaches the agent through the
/// source (two extra hops) until the forwarder has a quiet spell of
/// `cluster.migration_forward_ms`.
///
/// Where this node's records say `id` lives, when that is another member that serves calls.
///
/// The records are the directory: each journaled agent's replica copy (replication.factor > 1)
/// holds the node and epoch of the activation that a majority of its replica set last
/// promised (runtime/replication.hpp), written durably by every promise, a migration's
/// included. The *owner* of an id is the first member of its placement order: it is in the
/// replica set (the set is the first `factor` members of that order), so the first member a
/// call asks knows where the agent is and says so in its `agent_not_found` answer: a call
/// finds any agent with at most one miss, however many members there are (unless that copy
/// missed the last promise, its member being down then: a stale hint costs another miss,
/// never a wrong answer). Second, a node an agent moved away from remembers where it went
/// (the location cache).
///
/// Kinds without replicas (ephemeral, snapshot kinds, replication.factor = 1) have no owner
/// record: calls for them ask members in placement order.
std::optional<std::string> owner_record(cluster::shared_state& shared, const agent_id& id) {
  auto key = id.str();
  std::string member;
  if (shared.rt != nullptr && shared.rt->db()) {
    auto meta = shared.rt->db()->get_meta(replicator::copy_key(key));
    if (meta && *meta)
      member = (*meta)->holder;
  }
  if (member.empty() || member == shared.self_name || !shared.transport_of(member))
    member = shared.where(key).value_or(std::string{});
  if (member.empty() || member == shared.self_name || !shared.transport_of(member))
    return std::nullopt;
  return member;
}

/// Puts `member` (named by an owner record) next in `job`'s order, unless it was asked already
/// or does not serve calls.
void redirect(cluster::shared_state& shared, forward_job& job, const std::string& member) {
  if (member == shared.self_name)
    return;
  auto at = [&](size_t from) {
    return std::find_if(job.targets.begin() + static_cast<ptrdiff_t>(from), job.targets.end(),
                        [&](const auto& t) { return t.first == member; });
  };
  if (at(0) < job.targets.begin() + static_cast<ptrdiff_t>(job.next))
    return; // asked already
  auto i = at(job.next);
  std::pair<std::string, std::string> target;
  if (i != job.targets.end()) {
    target = std::move(*i);
    job.targets.erase(i);
  } else if (auto address = shared.transport_of(member)) {
    target = {member, std::move(*address)};
  } else {
    return;
  }
  job.targets.insert(job.targets.begin() + static_cast<ptrdiff_t>(job.next), std::move(target));
  job.hinted = member;
}

/// A shipment that failed. If the target said no (a bad or unwanted state, a full or stopping
/// node), the move is called off at once. Otherwise the answer was lost or never came, and
/// the target may have taken the agent in: the manager `mgr` settles it with the target
/// (settle_atom) before the source decides, so that the agent never runs on both nodes.
void unanswered_shipment(const caf::actor& mgr, ship_job& job, caf::error err) {
  switch (code_of(err)) {
    case errc::invalid_argument:
    case errc::corrupt_record:
    case errc::unknown_kind:
    case errc::agent_exists:
    case errc::rejected:
    case errc::conflict:
    case errc::shutting_down:
    case errc::overloaded:
    case errc::too_large: return job.done(std::move(err));
    default: break;
  }
  if (job.epoch == 0)
    if (auto snap = records::decode_snapshot(job.payload.snapshot))
      job.epoch = snap->hdr.epoch;
  log::event(spdlog::level::info, "migration_settling", {{"to", job.to}, {"error", describe(err)}},
             job.payload.id.str());
  job.unanswered = std::move(err);
  caf::anon_send(mgr, settle_atom::value, std::move(job));
}

/// Reads `A B` (two unsigned decimals and one space) from `body`. With `rest`, a space and
/// any text may follow (it goes there, without the space); without, nothing may.
bool two_numbers(std::string_view body, uint64_t& a, uint64_t& b,
                 std::string_view* rest = nullptr) {
  auto* last = body.data() + body.size();
  auto [mid, ec] = std::from_chars(body.data(), last, a);
  if (ec != std::errc{} || mid == last || *mid != ' ')
    return false;
  auto [end, ec2] = std::from_chars(mid + 1, last, b);
  if (ec2 != std::errc{})
    return false;
  if (end == last)
    return true;
  if (rest == nullptr || *end != ' ')
    return false;
  *rest = std::string_view{end + 1, static_cast<size_t>(last - end - 1)};
  return true;
}

/// Takes in an agent another member ships on the call transport (op `m.adopt`, body
/// `replicator::pack({meta, snapshot, from, shipment, sent_unix_ms, granted_epoch})`, the call's
/// timeout the source's cluster.migration_timeout_ms; see the manager's ship_atom): answers
/// `{"node":NAME}` once it is stored and active here.
void adopt_shipped(cluster::shared_state& shared, remote_call req, call_transport::reply_fn done) {
  auto parts = replicator::unpack(req.call.body);
  uint64_t shipment = 0;
  uint64_t sent_unix_ms = 0;
  auto number = [](const std::string& s, uint64_t& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && end == s.data() + s.size();
  };
  uint64_t granted_epoch = 0;
  bool ok = parts && parts->size() == 6 && number((*parts)[3], shipment)
    && number((*parts)[4], sent_unix_ms) && number((*parts)[5], granted_epoch)
    && req.timeout_ms > 0;
  if (!ok)
    return done(make_error(errc::invalid_argument,
                           "m.adopt of " + req.id.str()
                             + ": body is not (meta, snapshot, from, shipment, sent_unix_ms, "
                               "granted_epoch) with a timeout"));
  // (The location cache keeps what it has: see `moved_not_remembered`.)
  log::event(spdlog::level::debug, "agent_migrating_in",
             {{"from", (*parts)[2]}, {"state_bytes", (*parts)[1].size()}}, req.id.str());
  shared.rt->adopt(migration_payload{req.id, std::move((*parts)[0]), std::move((*parts)[1]),
                                     shipment, sent_unix_ms, static_cast<uint64_t>(req.timeout_ms),
                                     granted_epoch},
                   [done = std::move(done), node = shared.self_name](caf::error err) {
                     if (err)
                       return done(std::move(err));
                     done(nlohmann::json{{"node", node}}.dump());
                   });
}

/// Runs a by-id call on this node only (no forwarding); `mgr` is this node's manager (it ships
/// migrating agents). Unknown `op`: invalid_argument.
void run_local(node_runtime& rt, const caf::actor& mgr, const std::string& op, const agent_id& id,
               agent_call call, std::chrono::milliseconds timeout, cluster::reply_fn done) {
  if (op == "migrate") {
    auto to = call.body;
    return rt.migrate_out(
      id, to, ship_via(mgr, to),
      [id, done = std::move(done)](caf::expected<migration_result> r) {
        if (!r)
          return done(std::move(r.error()));
        done(nlohmann::json{{"id", id.str()},
                            {"from", r->from},
                            {"to", r->to},
                            {"moved", r->moved},
                            {"pause_ms", r->pause_ms},
                            {"held_calls", r->held_calls},
                            {"capture_ms", r->capture_ms},
                            {"waited_for_appends", r->waited_for_appends},
                            {"state_bytes", r->state_bytes}}
               .dump());
      },
      true, // moved by hand: rebalancing leaves it where it was sent
      grant_via(mgr, to));
  }
  if (op == "ask")
    return rt.ask(id, std::move(call), timeout, std::move(done));
  if (op == "tell") {
    if (auto err = rt.tell(id, call))
      return done(std::move(err));
    return done(std::string{R"({"accepted":true})"});
  }
  if (op == "inspect")
    return rt.inspect(id, call.env.correlation_id,
                      [done = std::move(done)](caf::expected<nlohmann::json> r) {
                        if (!r)
                          return done(std::move(r.error()));
                        done(r->dump());
                      });
  if (op == "providers") {
    // Capability providers of this node: body {"name","tenant","limit"}.
    auto q = nlohmann::json::parse(call.body, nullptr, false);
    if (!q.is_object() || !q.contains("name") || !q["name"].is_string() || !q.contains("limit")
        || !q["limit"].is_number_unsigned())
      return done(make_error(errc::invalid_argument, "providers: body is not {name,tenant,limit}"));
    auto list = nlohmann::json::array();
    for (auto& p : rt.providers(q["name"].get<std::string>(), q.value("tenant", std::string{}),
                                q["limit"].get<size_t>()))
      list.push_back(to_json(p));
    return done(list.dump());
  }
  if (op == "stop")
    return rt.stop(id, [done = std::move(done)](caf::error err) {
      if (err)
        return done(std::move(err));
      done(std::string{"{}"});
    });
  done(make_error(errc::invalid_argument, "unknown remote call '" + op + "'"));
}

/// Tries `job` on its next target, then on the ones after while they answer agent_not_found,
/// then (if not done yet) on this node. Runs on any thread (the caller's, then the transport's).
void forward(const std::shared_ptr<cluster::shared_state>& shared,
             std::shared_ptr<forward_job> job) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    job->deadline - std::chrono::steady_clock::now());
  left = std::max(left, std::chrono::milliseconds{1});
  if (job->next >= job->targets.size() && !job->ranked) {
    job->ranked = true;
    for (auto& t : shared->call_targets(job->id, {}))
      if (std::none_of(job->targets.begin(), job->targets.end(),
                       [&](const auto& x) { return x.first == t.first; }))
        job->targets.push_back(std::move(t));
  }
  if (job->next >= job->targets.size()) {
    if (!job->tried_local && shared->rt != nullptr) {
      job->tried_local = true;
      return run_local(*shared->rt, shared->manager, job->op, job->id, std::move(job->call), left,
                       std::move(job->done));
    }
    return job->done(make_error(errc::agent_not_found,
                                "no agent " + job->id.str() + " on any up member of the cluster"));
  }
  auto [member, address] = job->targets[job->next++];
  remote_call req{job->op, job->id, job->call, left.count()};
  // The callee times out after `left`; wait a little longer for its answer.
  shared->transport->call(address, req, left + std::chrono::seconds(1),
                          [shared, job, member = member](caf::expected<std::string> r) {
                            if (r) {
                              if (job->op != "stop"
                                  && job->op != "migrate") // (a migrated agent is elsewhere now)
                                shared->remember(job->id.str(), member);
                              else
                                shared->forget(job->id.str());
                              auto& way = member == job->preferred ? shared->routed_cached
                                : member == job->hinted            ? shared->routed_owner
                                                                   : shared->routed_placement;
                              way.fetch_add(1, std::memory_order_relaxed);
                              return job->done(std::move(r));
                            }
                            if (code_of(r.error()) == errc::agent_not_found) {
                              shared->misses.fetch_add(1, std::memory_order_relaxed);
                              if (member == job->preferred)
                                shared->forget(job->id.str());
                              if (auto at = hint_of(r.error()))
                                redirect(*shared, *job, *at);
                              return forward(shared, job);
                            }
                            job->done(std::move(r));
                          });
}

void refuse_log(const std::string& peer_text, const std::string& reason) {
  log::event(spdlog::level::warn, "cluster_join_refused",
             {{"peer", peer_text}, {"reason", reason}});
}

caf::behavior manager_fn(manager_actor* self, std::shared_ptr<cluster::shared_state> shared,
                         node_runtime* rt, node_config cfg, member_info me) {
  auto& st = self->state;
  st.shared = std::move(shared);
  st.rt = rt;
  st.cluster_name = cfg.cluster.name;
  st.tls = cfg.cluster.tls();
  st.table =
    std::make_unique<member_table>(std::move(me), static_cast<size_t>(cfg.cluster.members_max));
  st.join_timeout = std::chrono::milliseconds(cfg.cluster.join_timeout_ms);
  st.seed_wait = std::chrono::milliseconds(cfg.cluster.seed_wait_ms);
  st.removed_after = std::chrono::milliseconds(cfg.cluster.removed_after_ms);
  st.join_retry = std::chrono::milliseconds(cfg.cluster.join_retry_ms);
  st.heartbeat = std::chrono::milliseconds(cfg.cluster.heartbeat_interval_ms);
  st.suspect_after = std::chrono::milliseconds(cfg.cluster.suspect_after_ms);
  st.asks_max = static_cast<size_t>(cfg.node.asks_pending_max);
  st.migration_timeout = std::chrono::milliseconds(cfg.cluster.migration_timeout_ms);
  if (auto seeds = parse_endpoint_list(cfg.cluster.seeds, "cluster.seeds"))
    for (auto& ep : *seeds)
      st.seeds.push_back(ep.str());
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    auto n = st.name_of(msg.source);
    if (n.empty())
      return;
    st.handles[n] = caf::actor{};
    st.suspects.erase(n);
    st.heard.erase(n);
    st.shared->forget_member(n);
    if (st.table->link_lost(n, self->clock().now())) {
      auto m = st.table->find(n);
      if (st.shared->transport)
        st.shared->transport->drop(m->transport); // its waiting calls fail now
      bool left = m->status == "removed";
      log::event(left ? spdlog::level::info : spdlog::level::warn,
                 left ? "member_removed" : "member_down",
                 {{"member", n},
                  {"address", m->address},
                  {"incarnation", m->incarnation},
                  {"reason", self->system().render(msg.reason)}});
      gossip(self);
    }
    publish(self);
  });
  return {
    [self](start_atom, const std::string& address) {
      // Published: now the node knows its own address and may introduce itself.
      auto& st = self->state;
      st.table->self().address = address;
      // Seeded by others: joining until linked to the members (maybe_up); else up at once.
      st.seeds.erase(std::remove(st.seeds.begin(), st.seeds.end(), address), st.seeds.end());
      st.started = self->clock().now();
      if (!st.seeds.empty())
        st.table->self().status = "joining";
      publish(self);
      for (auto& s : st.seeds)
        connect(self, s);
      self->send(self, tick_atom::value);
      self->send(self, beat_atom::value);
    },
    [self](beat_atom) {
      auto& st = self->state;
      if (st.leaving)
        return;
      auto now = self->clock().now();
      bool changed = false;
      for (auto& [n, h] : st.handles) {
        if (!h)
          continue;
        self->send(h, ping_atom::value, st.table->self().name);
        auto m = st.table->find(n);
        auto heard = st.heard.find(n);
        if (m == nullptr || m->status != "up" || heard == st.heard.end()
            || now - heard->second <= st.suspect_after || st.suspects.count(n) > 0)
          continue;
        st.suspects.insert(n);
        changed = true;
        log::event(
          spdlog::level::warn, "member_suspect",
          {{"member", n},
           {"silent_ms",
            std::chrono::duration_cast<std::chrono::milliseconds>(now - heard->second).count()},
           {"incarnation", m->incarnation}});
      }
      if (changed)
        publish(self);
      self->delayed_send(self, st.heartbeat, beat_atom::value);
    },
    [self](ping_atom, const std::string& from) {
      auto& st = self->state;
      auto h = st.handles.find(from);
      if (h == st.handles.end() || !h->second)
        return;
      st.heard[from] = self->clock().now();
      if (st.suspects.erase(from) > 0) {
        log::event(spdlog::level::info, "member_reachable", {{"member", from}});
        publish(self);
      }
    },
    [self](tick_atom) {
      auto& st = self->state;
      if (st.leaving)
        return;
      // Keep trying the seeds while alone, and reconnect to members not connected.
      bool alone = std::none_of(st.handles.begin(), st.handles.end(),
                                [](auto& kv) { return kv.second != caf::actor{}; });
      if (alone)
        for (auto& s : st.seeds)
          connect(self, s);
      // Down members too: a node that was only frozen or cut off comes back at the same
      // incarnation once a connection and a join succeed again (a dead one refuses at once).
      for (auto& [n, m] : st.table->others())
        if (!st.handles[n] && m.status != "leaving" && m.status != "removed" && st.dials(n))
          connect(self, m.address);
      // Down members are removed after cluster.removed_after_ms, then forgotten.
      auto aged = st.table->expire(self->clock().now(), st.removed_after);
      for (auto& n : aged) {
        auto m = st.table->find(n);
        log::event(spdlog::level::info, m != nullptr ? "member_removed" : "member_forgotten",
                   {{"member", n}});
        if (m == nullptr) {
          st.handles.erase(n);
          st.heard.erase(n);
        }
      }
      if (!aged.empty()) {
        gossip(self);
        // Replica sets may name other members now: their copies are checked (and made).
        if (auto rep = st.rt != nullptr ? st.rt->replication() : nullptr)
          rep->on_member_up({});
      }
      maybe_up(self);
      publish(self); // refreshes this node's agent count
      if (st.rt != nullptr) {
        auto t = st.shared->transport->stats();
        st.rt->metrics().transport_totals(t.frames_sent, t.frames_received, t.direct_writes,
                                          t.queued_writes, t.connections_refused, t.tells_failed,
                                          t.tls_refused, t.actors_inline, t.actors_handed_over);
        auto& sh = *st.shared;
        st.rt->metrics().directory_totals(sh.routed_cached.load(), sh.routed_owner.load(),
                                          sh.routed_placement.load(), sh.misses.load());
        if (auto rep = st.rt->replication()) {
          auto r = rep->stats();
          st.rt->metrics().replication_totals(r.writes_acknowledged, r.writes_without_quorum,
                                              r.fenced_writes, r.repairs, r.takeovers,
                                              r.activations);
        }
      }
      if (st.table->self().agents != st.gossiped_agents) {
        st.gossiped_agents = st.table->self().agents;
        gossip(self);
      }
      send_key_sync(self, false); // anti-entropy of the replicated state (API keys)
      self->delayed_send(self, st.join_retry, tick_atom::value);
    },
    [self](connected_atom, const std::string& address, caf::actor& handle) {
      auto& st = self->state;
      st.connecting.erase(address);
      if (st.leaving)
        return;
      join_request req{st.cluster_name, cluster_protocol_version, st.table->self()};
      self->request(handle, std::chrono::seconds(5), std::move(req))
        .then(
          [self, address, handle](join_reply& reply) {
            auto& st = self->state;
            st.tried(address, reply.accepted ? std::string{} : "refused: " + reply.reason);
            if (!reply.accepted) {
              refuse_log(address, reply.reason);
              return maybe_up(self);
            }
            // The peer's own entry is the first with its address; take it with its handle.
            bool changed = false;
            for (auto& m : reply.members)
              if (m.address == address && m.name != st.table->self().name)
                changed |= add_member(self, m, handle);
            changed |= merge(self, reply.members, handle.address());
            publish(self);
            if (changed)
              gossip(self);
            maybe_up(self);
          },
          [self, address](caf::error& err) {
            auto reason = self->system().render(err);
            log::event(spdlog::level::debug, "cluster_join_failed",
                       {{"peer", address}, {"reason", reason}});
            self->state.tried(address, "join failed: " + reason);
            maybe_up(self);
          });
    },
    [self](connect_failed_atom, const std::string& address, const std::string& reason) {
      self->state.connecting.erase(address);
      log::event(spdlog::level::debug, "cluster_connect_failed",
                 {{"peer", address}, {"reason", reason}});
      self->state.tried(address, "connection failed: " + reason);
      maybe_up(self);
    },
    [self](join_request& req) -> join_reply {
      auto& st = self->state;
      auto who = req.self.name + " at " + req.self.address;
      if (req.cluster_name != st.cluster_name) {
        auto reason = "cluster name '" + req.cluster_name + "' differs from this cluster's '"
          + st.cluster_name + "'";
        refuse_log(who, reason);
        return {false, reason, {}};
      }
      if (req.protocol_version != cluster_protocol_version) {
        auto reason = "protocol version " + std::to_string(req.protocol_version)
          + " differs from this node's " + std::to_string(cluster_protocol_version);
        refuse_log(who, reason);
        return {false, reason, {}};
      }
      if (req.self.name == st.table->self().name) {
        auto reason = req.self.incarnation == st.table->self().incarnation
          ? std::string{"a node cannot join itself"}
          : "node name '" + req.self.name + "' is taken by this node";
        if (req.self.incarnation != st.table->self().incarnation)
          refuse_log(who, reason);
        return {false, reason, {}};
      }
      if (st.table->find(req.self.name) == nullptr && st.table->full()) {
        auto reason = "the member list is full (cluster.members_max = "
          + std::to_string(st.table->others().size() + 1) + ")";
        refuse_log(who, reason);
        return {false, reason, {}};
      }
      auto handle = caf::actor_cast<caf::actor>(self->current_sender());
      if (add_member(self, req.self, handle))
        gossip(self);
      publish(self);
      maybe_up(self);
      return {true, {}, member_list(st)};
    },
    [self](member_gossip& g) {
      if (merge(self, g.members,
                self->current_sender() ? self->current_sender()->address() : caf::actor_addr{})) {
        gossip(self);
      }
      publish(self);
      maybe_up(self);
    },
    [self](remote_call& req) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      if (st.rt == nullptr || st.asks.size() >= st.asks_max) {
        rp.deliver(
          make_error(errc::overloaded, st.table->self().name + " has too many calls in flight"));
        return;
      }
      auto key = st.next_ask++;
      st.asks.emplace(key, rp);
      auto mgr = caf::actor_cast<caf::actor>(self);
      run_local(*st.rt, mgr, req.op, req.id, std::move(req.call),
                std::chrono::milliseconds(req.timeout_ms),
                [mgr, key](caf::expected<std::string> r) {
                  if (r)
                    caf::anon_send(mgr, ask_done_atom::value, key, agent_reply{std::move(*r)});
                  else
                    caf::anon_send(mgr, ask_done_atom::value, key, std::move(r.error()));
                });
    },
    [self](ask_done_atom, uint64_t key, agent_reply& reply) {
      auto& st = self->state;
      if (auto i = st.asks.find(key); i != st.asks.end()) {
        i->second.deliver(std::move(reply));
        st.asks.erase(i);
      }
    },
    [self](ask_done_atom, uint64_t key, caf::error& err) {
      auto& st = self->state;
      if (auto i = st.asks.find(key); i != st.asks.end()) {
        i->second.deliver(std::move(err));
        st.asks.erase(i);
      }
    },
    [self](forward_atom, forward_spawn_job& job) {
      auto& st = self->state;
      auto target = st.up_handle(job.node);
      if (!target)
        return job.done(make_error(errc::invalid_argument,
                                   "node '" + job.node + "' is not an up member of the cluster"));
      auto done = std::make_shared<cluster::spawn_fn>(std::move(job.done));
      self->request(target, std::chrono::seconds(30), std::move(job.req))
        .then(
          [done](agent_reply& reply) {
            auto doc = nlohmann::json::parse(reply.body, nullptr, false);
            auto id = doc.is_object() && doc["id"].is_string()
              ? parse_agent_id(doc["id"].get<std::string>())
              : caf::expected<agent_id>{make_error(errc::internal, "bad reply")};
            if (!id)
              return (*done)(make_error(errc::internal, "remote spawn answered " + reply.body));
            agent_view view;
            view.id = std::move(*id);
            view.kind = doc.value("kind", "");
            view.node = doc.value("node", "");
            view.activated = true;
            (*done)(std::move(view));
          },
          [done](caf::error& err) { (*done)(std::move(err)); });
    },
    [self](remote_spawn& req) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      if (st.rt == nullptr)
        return rp.deliver(make_error(errc::shutting_down, "node is shutting down"));
      if (st.asks.size() >= st.asks_max) // spawns share the bound of forwarded calls
        return rp.deliver(
          make_error(errc::overloaded, st.table->self().name + " has too many calls in flight"));
      spawn_request sr;
      sr.id = req.id;
      sr.kind = req.kind;
      sr.config = nlohmann::json::parse(req.config, nullptr, false);
      if (sr.config.is_discarded())
        return rp.deliver(make_error(errc::invalid_argument, "spawn config is not JSON"));
      sr.breaker = req.breaker;
      auto restart = parse_restart_type(req.restart);
      if (!restart)
        return rp.deliver(std::move(restart.error()));
      sr.restart = *restart;
      sr.correlation_id = req.correlation_id;
      sr.pinned = req.pinned;
      sr.capabilities = std::move(req.capabilities);
      auto key = st.next_ask++;
      st.asks.emplace(key, rp);
      auto mgr = caf::actor_cast<caf::actor>(self);
      st.rt->spawn(std::move(sr), [mgr, key](caf::expected<agent_view> v) {
        if (!v)
          return caf::anon_send(mgr, ask_done_atom::value, key, std::move(v.error()));
        nlohmann::json out{{"id", v->id.str()}, {"kind", v->kind}, {"node", v->node}};
        caf::anon_send(mgr, ask_done_atom::value, key, agent_reply{out.dump()});
      });
    },
    [self](ship_atom, ship_job& job) {
      auto& st = self->state;
      auto target = st.up_handle(job.to);
      if (!target)
        return job.done(make_error(errc::invalid_argument,
                                   "node '" + job.to + "' is not an up member of the cluster"));
      auto done = std::make_shared<ship_job>(std::move(job));
      done->shipped_at = std::chrono::steady_clock::now();
      done->payload.sent_unix_ms = unix_ms_now();
      done->payload.timeout_ms = static_cast<uint64_t>(st.migration_timeout.count());
      auto address =
        st.shared->transport ? st.shared->transport_of(done->to) : std::optional<std::string>{};
      if (address && !done->via_basp) {
        // On the call transport: a hop and a serialization fewer than a BASP request (half a
        // millisecond of a 64 KiB migration's pause). A state too large for one of its frames
        // goes by BASP instead.
        remote_call req{"m.adopt", done->payload.id, {}, st.migration_timeout.count()};
        req.call.body = replicator::pack(
          {done->payload.meta, done->payload.snapshot, st.table->self().name,
           std::to_string(done->payload.shipment), std::to_string(done->payload.sent_unix_ms),
           std::to_string(done->payload.granted_epoch)});
        st.shared->transport->call(*address, req, st.migration_timeout,
                                   [mgr = caf::actor_cast<caf::actor>(self), shared = st.shared,
                                    done, target](caf::expected<std::string> r) {
                                     if (!r && code_of(r.error()) == errc::too_large) {
                                       done->via_basp = true;
                                       return caf::anon_send(mgr, ship_atom::value,
                                                             std::move(*done));
                                     }
                                     if (!r)
                                       return unanswered_shipment(mgr, *done, std::move(r.error()));
                                     shared->remember(done->payload.id.str(), done->to, true);
                                     done->done(target);
                                   });
        return;
      }
      if (auto snap = records::decode_snapshot(done->payload.snapshot))
        done->epoch = snap->hdr.epoch; // (for settling: the payload is moved below)
      migrate_in msg{
        done->payload.id,         std::move(done->payload.meta), std::move(done->payload.snapshot),
        st.table->self().name,    done->payload.shipment,        done->payload.sent_unix_ms,
        done->payload.timeout_ms, done->payload.granted_epoch};
      self->request(target, st.migration_timeout, std::move(msg))
        .then(
          [self, done, target](agent_reply&) {
            self->state.shared->remember(done->payload.id.str(), done->to, true);
            done->done(target); // (forwarders send on the call transport: set_remote_forwarder)
          },
          [self, done](caf::error& err) {
            unanswered_shipment(caf::actor_cast<caf::actor>(self), *done, std::move(err));
          });
    },
    [self](grant_atom, grant_job& job) {
      auto& st = self->state;
      auto address =
        st.shared->transport ? st.shared->transport_of(job.to) : std::optional<std::string>{};
      if (!address) {
        // (The target gives the adoption up at its deadline; its answer calls the move off.)
        log::event(spdlog::level::warn, "migration_grant_not_sent",
                   {{"to", job.to}, {"reason", "no call transport address"}}, job.id.str());
        return;
      }
      remote_call req{"m.grant", job.id, {}, st.migration_timeout.count()};
      req.call.body = std::to_string(job.shipment) + " "
        + (job.epoch ? std::to_string(*job.epoch) : "0 " + describe(job.epoch.error()));
      st.shared->transport->call(*address, req, st.migration_timeout,
                                 [id = job.id, to = job.to](caf::expected<std::string> r) {
                                   if (!r)
                                     log::event(spdlog::level::warn, "migration_grant_not_sent",
                                                {{"to", to}, {"reason", describe(r.error())}},
                                                id.str());
                                 });
    },
    [self](settle_atom, ship_job& job) {
      // Asks the target what became of the shipment: adopted (the move happened after all),
      // refused (it will refuse the shipment if it still arrives: the agent stays here) or
      // pending (asked again shortly), until cluster.migration_timeout_ms has passed.
      auto& st = self->state;
      auto done = std::make_shared<ship_job>(std::move(job));
      // Until 2T after the shipment left: by then the target refuses it if it still comes
      // (after 1.5T), and an adoption that began in time has activated or given up (1.75T).
      if (done->settle_until == std::chrono::steady_clock::time_point{})
        done->settle_until =
          std::max(done->shipped_at + 2 * st.migration_timeout,
                   std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
      auto address =
        st.shared->transport ? st.shared->transport_of(done->to) : std::optional<std::string>{};
      auto mgr = caf::actor_cast<caf::actor>(self);
      auto again = [mgr, done, pause = st.join_retry / 5](caf::error why) {
        if (std::chrono::steady_clock::now() >= done->settle_until) {
          log::event(spdlog::level::warn, "migration_unsettled",
                     {{"to", done->to},
                      {"error", describe(done->unanswered)},
                      {"last", describe(why)},
                      {"effect", "the agent goes on here; the target may hold a copy"}},
                     done->payload.id.str());
          return done->done(std::move(done->unanswered));
        }
        caf::delayed_anon_send(mgr, pause, settle_atom::value, std::move(*done));
      };
      if (!address)
        return again(make_error(errc::unavailable, done->to + " has no call transport address"));
      // (Each question gets a quarter of the time, so that a lost one is asked again.)
      auto wait = std::max(std::chrono::milliseconds(100), st.migration_timeout / 4);
      remote_call req{"m.settle", done->payload.id, {}, wait.count()};
      req.call.body = std::to_string(done->epoch) + " " + std::to_string(done->payload.shipment);
      st.shared->transport->call(
        *address, req, wait,
        [shared = st.shared, done, again,
         target = st.serving_handle(done->to)](caf::expected<std::string> r) mutable {
          if (r && *r == "adopted" && target) {
            log::event(spdlog::level::info, "migration_settled",
                       {{"to", done->to}, {"outcome", "adopted"}}, done->payload.id.str());
            shared->remember(done->payload.id.str(), done->to, true);
            return done->done(target);
          }
          if (r && *r == "refused") {
            log::event(spdlog::level::info, "migration_settled",
                       {{"to", done->to}, {"outcome", "refused"}}, done->payload.id.str());
            return done->done(std::move(done->unanswered));
          }
          again(r ? make_error(errc::unavailable, "the target answered " + *r)
                  : std::move(r.error()));
        });
    },
    [self](migrate_in& req) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      if (st.rt == nullptr)
        return rp.deliver(make_error(errc::shutting_down, "node is shutting down"));
      if (st.asks.size() >= st.asks_max)
        return rp.deliver(
          make_error(errc::overloaded, st.table->self().name + " has too many calls in flight"));
      // (The location cache keeps what it has: see `moved_not_remembered`.)
      auto key = st.next_ask++;
      st.asks.emplace(key, rp);
      auto mgr = caf::actor_cast<caf::actor>(self);
      log::event(spdlog::level::debug, "agent_migrating_in",
                 {{"from", req.from}, {"state_bytes", req.snapshot.size()}}, req.id.str());
      st.rt->adopt(migration_payload{req.id, std::move(req.meta), std::move(req.snapshot),
                                     req.shipment, req.sent_unix_ms, req.timeout_ms,
                                     req.granted_epoch},
                   [mgr, key, node = st.table->self().name](caf::error err) {
                     if (err)
                       return caf::anon_send(mgr, ask_done_atom::value, key, std::move(err));
                     caf::anon_send(mgr, ask_done_atom::value, key,
                                    agent_reply{nlohmann::json{{"node", node}}.dump()});
                   });
    },
    [self](leave_atom, bool final) {
      auto& st = self->state;
      if (!final) {
        // Stage 1: the others stop placing agents here; calls still come while the agents
        // are handed off (node_runtime::migrate_out per agent, driven by cluster::leave).
        st.leaving = true;
        st.table->self().status = "leaving";
        gossip(self);
        publish(self);
        log::event(spdlog::level::info, "cluster_leaving",
                   {{"members", st.table->others().size()}});
        return;
      }
      // Stage 2: tell every member, wait for their answers (at most a second), then quit.
      // A bare gossip could still sit in the transport when the process exits, and the
      // others would see the closed connection first: `down` instead of `leaving`.
      st.table->self().status = "leaving";
      member_gossip g{member_list(st)};
      auto waiting = std::make_shared<size_t>(0);
      for (auto& [n, h] : st.handles)
        if (auto peer = st.serving_handle(n)) {
          ++*waiting;
          self->request(peer, std::chrono::seconds(1), farewell_atom::value, g)
            .then(
              [self, waiting](bool) {
                if (--*waiting == 0)
                  self->quit();
              },
              [self, waiting](caf::error&) {
                if (--*waiting == 0)
                  self->quit();
              });
        }
      log::event(spdlog::level::info, "cluster_left", {{"members", st.table->others().size()}});
      if (*waiting == 0)
        self->quit();
    },
    [self](keys_changed_atom) { send_key_sync(self, true); },
    [self](key_sync& ks) {
      auto r = replicated(self->state);
      auto sender = caf::actor_cast<caf::actor>(self->current_sender());
      if (!r.digest || !sender)
        return;
      if (!ks.state.empty())
        if (auto err = r.merge(ks.state))
          log::event(spdlog::level::warn, "key_sync_refused", {{"reason", describe(err)}});
      auto mine = r.digest();
      if (mine == ks.digest)
        return;
      // A digest that differs: send ours (and ask for theirs). A state that differs even
      // after merging it: send ours back, once.
      if (ks.state.empty() || ks.reply)
        self->send(sender, key_sync{mine, r.state(), ks.state.empty()});
    },
    [self](farewell_atom, member_gossip& g) {
      if (merge(self, g.members,
                self->current_sender() ? self->current_sender()->address() : caf::actor_addr{}))
        gossip(self);
      publish(self);
      return true;
    },
  };
}

} // namespace

namespace cluster_testing {

caf::actor spawn_manager(caf::actor_system& sys, std::shared_ptr<cluster::shared_state> shared,
                         const node_config& cfg, member_info me) {
  if (shared->self_name.empty())
    shared->self_name = me.name;
  auto mgr = sys.spawn(manager_fn, shared, nullptr, cfg, std::move(me));
  shared->manager = mgr;
  return mgr;
}

void start(const caf::actor& manager, const std::string& address) {
  caf::anon_send(manager, start_atom::value, address);
}

void connected(const caf::actor& manager, const std::string& address, const caf::actor& peer) {
  caf::anon_send(manager, connected_atom::value, address, peer);
}

void connect_failed(const caf::actor& manager, const std::string& address,
                    const std::string& reason) {
  caf::anon_send(manager, connect_failed_atom::value, address, reason);
}

void leave(const caf::actor& manager, bool final) {
  caf::anon_send(manager, leave_atom::value, final);
}

} // namespace cluster_testing

void configure_cluster_transport(caf::actor_system_config& sys_cfg, const node_config& cfg) {
  sys_cfg.load<caf::io::middleman>();
  if (cfg.cluster.tls()) {
    // Certificate, key and CA together (config validation refuses fewer): CAF's openssl
    // module then requires and verifies a peer certificate on every BASP connection, instead
    // of its anonymous-ECDH fallback.
    assert(!cfg.cluster.tls_key_file.empty() && !cfg.cluster.tls_ca_file.empty());
    sys_cfg.load<caf::openssl::manager>();
    sys_cfg.openssl_certificate = cfg.cluster.tls_cert_file;
    sys_cfg.openssl_key = cfg.cluster.tls_key_file;
    sys_cfg.openssl_cafile = cfg.cluster.tls_ca_file;
  }
  sys_cfg.set("middleman.heartbeat-interval",
              caf::timespan{std::chrono::milliseconds(cfg.cluster.heartbeat_interval_ms)});
  sys_cfg.set("middleman.connection-timeout",
              caf::timespan{std::chrono::milliseconds(cfg.cluster.down_after_ms)});
}

namespace {
caf::error send_via(const std::shared_ptr<cluster::shared_state>& shared, const agent_id& id,
                    agent_call call);
} // namespace

caf::expected<std::unique_ptr<cluster>> cluster::start(caf::actor_system& sys, node_runtime& rt,
                                                       const node_config& cfg,
                                                       std::string gateway) {
  auto ep = parse_endpoint(cfg.cluster.listen, "cluster.listen");
  if (!ep)
    return std::move(ep.error());
  if (!sys.has_middleman())
    return make_error(errc::internal,
                      "cluster.listen is set but the actor system has no middleman "
                      "(configure_actor_system loads it)");
  if (cfg.cluster.tls() && !sys.has_openssl_manager())
    return make_error(errc::internal,
                      "cluster.tls_cert_file is set but the actor system has no openssl module "
                      "(configure_actor_system loads it)");
  std::unique_ptr<cluster> c{new cluster};
  c->rt_ = &rt;
  c->self_name_ = cfg.node.name;
  c->shared_ = std::make_shared<shared_state>();
  c->shared_->located_max = static_cast<size_t>(cfg.cluster.location_cache_entries_max);
  c->migration_timeout_ = std::chrono::milliseconds(cfg.cluster.migration_timeout_ms);
  member_info me;
  me.name = cfg.node.name;
  me.gateway = std::move(gateway);
  me.status = "up";
  me.incarnation = unix_ms_now();
  // The call transport first: its address goes into this node's member entry.
  transport_limits limits;
  limits.frame_bytes_max = static_cast<size_t>(cfg.cluster.frame_bytes_max);
  limits.send_queue_bytes_max =
    std::max(limits.frame_bytes_max, static_cast<size_t>(cfg.cluster.send_queue_bytes_max));
  limits.calls_pending_max = static_cast<size_t>(cfg.node.asks_pending_max);
  limits.connections_max = static_cast<size_t>(cfg.cluster.transport_connections_max);
  limits.inline_runs = cfg.cluster.transport_inline_runs != 0;
  auto shared = c->shared_;
  auto transport = call_transport::start(
    sys, ep->host, static_cast<uint16_t>(cfg.cluster.transport_port), cfg.cluster.name,
    cfg.node.name, limits,
    [weak = std::weak_ptr<shared_state>{shared}](remote_call req, call_transport::reply_fn done) {
      auto shared = weak.lock();
      if (!shared)
        return done(make_error(errc::shutting_down, "node is shutting down"));
      if (replicator::is_replication_op(req.op)) {
        std::shared_ptr<replicator> rep;
        {
          std::lock_guard<std::mutex> guard{shared->mtx};
          rep = shared->rep;
        }
        if (!rep)
          return done(make_error(errc::unavailable,
                                 shared->self_name + " does not replicate (replication.factor)"));
        return rep->handle(req, std::move(done));
      }
      if (req.op == "tell") {
        // Not here (any more): if it moved on from here and its forwarder has ended, the
        // location cache knows where it went; pass the tell on once ("relayed_tell") rather
        // than lose it. A sender with a stale location keeps its stream this way.
        auto err = shared->rt->tell(req.id, req.call);
        if (err && code_of(err) == errc::agent_not_found)
          if (auto where = owner_record(*shared, req.id))
            if (auto address = shared->transport_of(*where)) {
              req.op = "relayed_tell";
              err = shared->transport->tell(*address, req);
            }
        if (err)
          return done(std::move(err));
        return done(std::string{R"({"accepted":true})"});
      }
      if (req.op == "m.adopt")
        return adopt_shipped(*shared, std::move(req), std::move(done));
      if (req.op == "m.grant") {
        // SHIPMENT EPOCH, or SHIPMENT 0 REASON
        uint64_t shipment = 0;
        uint64_t epoch = 0;
        std::string_view reason;
        auto ok = two_numbers(req.call.body, shipment, epoch, &reason)
          && (epoch == 0 || reason.empty()) && shipment != 0;
        if (!ok)
          return done(make_error(errc::invalid_argument,
                                 "m.grant of " + req.id.str()
                                   + ": body is not 'SHIPMENT EPOCH' or 'SHIPMENT 0 REASON'"));
        caf::expected<uint64_t> outcome{epoch};
        if (epoch == 0)
          outcome = make_error(errc::rejected, std::string{reason});
        shared->rt->grant_adoption(req.id, shipment, std::move(outcome));
        return done(std::string{"ok"});
      }
      if (req.op == "m.settle") {
        uint64_t epoch = 0;
        uint64_t shipment = 0;
        auto ok = two_numbers(req.call.body, epoch, shipment);
        if (!ok)
          return done(make_error(errc::invalid_argument,
                                 "m.settle of " + req.id.str() + ": body is not 'EPOCH SHIPMENT'"));
        auto r = shared->rt->settle_adoption(req.id, epoch, shipment);
        if (!r)
          return done(std::move(r.error()));
        using outcome = node_runtime::adoption_outcome;
        return done(std::string{*r == outcome::adopted     ? "adopted"
                                  : *r == outcome::refused ? "refused"
                                                           : "pending"});
      }
      if (req.op == "relayed_tell")
        req.op = "tell";
      auto id = req.id;
      run_local(*shared->rt, shared->manager, req.op, req.id, std::move(req.call),
                std::chrono::milliseconds(req.timeout_ms),
                [weak, id, done = std::move(done)](caf::expected<std::string> r) {
                  // Not here: say where this node's records have it (the caller asks there).
                  if (!r && code_of(r.error()) == errc::agent_not_found && !hint_of(r.error()))
                    if (auto shared = weak.lock())
                      if (auto at = owner_record(*shared, id))
                        return done(with_hint(r.error(), *at));
                  done(std::move(r));
                });
    },
    cfg.cluster.tls()
      ? tls_files{cfg.cluster.tls_cert_file, cfg.cluster.tls_key_file, cfg.cluster.tls_ca_file}
      : tls_files{});
  if (!transport)
    return std::move(transport.error());
  c->shared_->transport = std::shared_ptr<call_transport>{std::move(*transport)};
  c->shared_->rt = &rt;
  c->shared_->self_name = cfg.node.name;
  if (rt.db() && cfg.replication.factor > 1) {
    replication_options ro;
    ro.factor = static_cast<size_t>(cfg.replication.factor);
    ro.timeout = std::chrono::milliseconds(cfg.replication.timeout_ms);
    ro.repairs_per_s = static_cast<double>(cfg.replication.repairs_per_s);
    ro.held_events_max = static_cast<size_t>(cfg.replication.held_events_max);
    ro.ack_before_quorum = cfg.replication.ack_before_quorum != 0;
    ro.handover_wait = 3 * std::chrono::milliseconds(cfg.cluster.migration_timeout_ms);
    std::weak_ptr<shared_state> weak = c->shared_;
    auto rep = replicator::make(
      rt.db(), cfg.node.name, ro,
      [weak] {
        std::vector<replica_peer> out;
        auto s = weak.lock();
        if (!s)
          return out;
        std::lock_guard<std::mutex> guard{s->mtx};
        bool self_seen = false;
        for (auto& m : s->members) {
          if (m.status == "removed")
            continue;
          bool self = m.name == s->self_name;
          self_seen = self_seen || self;
          // This node serves once it joined (a restarted node knows the members only then).
          out.push_back({m.name, m.transport, self ? m.status != "joining" : s->serves_calls(m)});
        }
        if (!self_seen)
          out.push_back({s->self_name, {}, true});
        return out;
      },
      [weak](const std::string& address, const remote_call& req, std::chrono::milliseconds timeout,
             replicator::reply_fn done) {
        auto s = weak.lock();
        if (!s || !s->transport)
          return done(make_error(errc::shutting_down, "node is shutting down"));
        s->transport->call(address, req, timeout, std::move(done));
      });
    {
      std::lock_guard<std::mutex> guard{c->shared_->mtx};
      c->shared_->rep = rep;
    }
    rt.set_replicator(rep);
  }
  me.transport = ep->host + ":" + std::to_string(c->shared_->transport->port());
  c->manager_ = sys.spawn(manager_fn, c->shared_, &rt, cfg, std::move(me));
  c->shared_->manager = c->manager_;
  auto bound = cfg.cluster.tls()
    ? caf::openssl::publish(c->manager_, ep->port, ep->host.c_str(), true)
    : sys.middleman().publish(c->manager_, ep->port, ep->host.c_str(), true);
  if (!bound) {
    caf::anon_send_exit(c->manager_, caf::exit_reason::user_shutdown);
    return make_error(errc::io_error,
                      "cannot listen on cluster.listen " + ep->str() + ": "
                        + sys.render(bound.error()));
  }
  c->port_ = *bound;
  c->address_ = ep->host + ":" + std::to_string(c->port_);
  caf::anon_send(c->manager_, start_atom::value, c->address_);
  if (cfg.cluster.rebalance_migrations_per_s > 0)
    c->rebalancer_ = std::thread{[p = c.get()] { p->rebalance_loop(); }};
  rt.set_agent_sender([shared = c->shared_](const agent_id& to, agent_call call) {
    return send_via(shared, to, std::move(call));
  });
  rt.set_agent_asker(
    [p = c.get()](const agent_id& to, agent_call call, std::chrono::milliseconds timeout,
                  std::function<void(caf::expected<std::string>)> done) {
      p->ask(to, std::move(call), timeout, std::move(done));
    },
    [p = c.get()](const std::string& cap, const std::string& tenant, size_t limit,
                  std::function<void(std::string)> done) {
      p->providers(cap, tenant, limit, std::chrono::seconds(2),
                   [done = std::move(done)](nlohmann::json j) { done(j.dump()); });
    });
  rt.set_agent_spawner(
    [p = c.get()](spawn_request req, std::function<void(caf::expected<agent_view>)> done) {
      p->spawn(std::move(req), {}, std::move(done));
    });
  // Forwarders of moved agents send on the call transport: the connection new calls to that
  // member take, so forwarded and later messages keep one order.
  rt.set_remote_forwarder(
    [weak = std::weak_ptr<shared_state>{c->shared_}](const std::string& member, remote_call req,
                                                     remote_forwarder::reply_fn done) {
      auto shared = weak.lock();
      auto address = shared ? shared->transport_of(member) : std::nullopt;
      if (!address) {
        if (done)
          done(make_error(errc::unavailable, member + " does not take calls from this node now"));
        return;
      }
      if (!done) {
        if (auto err = shared->transport->tell(*address, req))
          log::event(spdlog::level::warn, "forwarded_tell_failed",
                     {{"to", member}, {"reason", describe(err)}}, req.id.str());
        return;
      }
      auto timeout = std::chrono::milliseconds(req.timeout_ms) + std::chrono::seconds(1);
      shared->transport->call(*address, req, timeout, std::move(done));
    });
  log::event(spdlog::level::info, "cluster_listening",
             {{"address", c->address_},
              {"cluster", cfg.cluster.name},
              {"seeds", cfg.cluster.seeds},
              {"tls", cfg.cluster.tls()}});
  return c;
}

uint64_t rendezvous_score(std::string_view node, std::string_view id) noexcept {
  uint64_t h = 0xcbf29ce484222325ULL; // FNV-1a over node, a separator, id
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 0x100000001b3ULL;
  };
  for (auto c : node)
    mix(static_cast<unsigned char>(c));
  mix(0);
  for (auto c : id)
    mix(static_cast<unsigned char>(c));
  // splitmix64's finalizer: FNV alone leaves similar inputs with correlated high bits.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

std::string cluster::place(const agent_id& id) const {
  auto key = id.str();
  std::string best = self_name_;
  uint64_t best_score = rendezvous_score(self_name_, key);
  for (auto& m : members()) {
    if (m.status != "up" || m.name == self_name_)
      continue;
    auto score = rendezvous_score(m.name, key);
    if (score > best_score || (score == best_score && m.name < best)) {
      best = m.name;
      best_score = score;
    }
  }
  return best;
}

void cluster::spawn(spawn_request req, const std::string& node, spawn_fn done) {
  req.pinned = !node.empty();
  auto where = node.empty() ? place(req.id) : node;
  if (where == self_name_)
    return rt_->spawn(std::move(req), std::move(done));
  remote_spawn rs{req.id,
                  req.kind,
                  req.config.dump(),
                  req.breaker,
                  std::string{to_string(req.restart)},
                  req.correlation_id,
                  req.pinned,
                  req.capabilities};
  caf::anon_send(manager_, forward_atom::value,
                 forward_spawn_job{std::move(where), std::move(rs), std::move(done)});
}

namespace {

/// `cluster::call` on the shared state (also used after the cluster object is gone).
void call_via(const std::shared_ptr<cluster::shared_state>& shared, const std::string& op,
              const agent_id& id, agent_call call, std::chrono::milliseconds timeout,
              cluster::reply_fn done) {
  auto job = std::make_shared<forward_job>();
  job->op = op;
  job->id = id;
  job->deadline = std::chrono::steady_clock::now() + timeout;
  // (An entry of an agent moved away from here: this node's runtime first, see
  // `moved_not_remembered`; the entry names the new node when the runtime has no longer the id.)
  if (auto at = shared->route(id.str()); at && at->member != shared->self_name && !at->moved_away) {
    if (auto address = shared->transport_of(at->member)) {
      // Found there last time: go straight there; the other members are ranked only if it
      // no longer has the id (and this node comes last).
      job->call = std::move(call);
      job->done = std::move(done);
      job->preferred = at->member;
      job->tried_local = false;
      job->ranked = false;
      job->targets.emplace_back(at->member, std::move(*address));
      return forward(shared, std::move(job));
    }
  }
  job->call = call;
  run_local(*shared->rt, shared->manager, op, id, std::move(call), timeout,
            [shared, job, done = std::move(done)](caf::expected<std::string> r) mutable {
              if (r || code_of(r.error()) != errc::agent_not_found)
                return done(std::move(r));
              job->done = std::move(done);
              job->tried_local = true;
              job->targets = shared->call_targets(job->id, {});
              if (auto at = owner_record(*shared, job->id))
                redirect(*shared, *job, *at);
              forward(shared, std::move(job));
            });
}

/// `cluster::send` on the shared state.
caf::error send_via(const std::shared_ptr<cluster::shared_state>& shared, const agent_id& id,
                    agent_call call) {
  auto key = id.str();
  auto at = shared->route(key);
  if (at && at->member == shared->self_name)
    at.reset();
  if (at && !at->moved_away)
    if (auto address = shared->transport_of(at->member)) {
      remote_call req{"tell", id, std::move(call), 0};
      return shared->transport->tell(*address, req);
    }
  auto err = shared->rt->tell(id, call);
  if (!err || code_of(err) != errc::agent_not_found)
    return err;
  if (at && at->moved_away)
    if (auto address = shared->transport_of(at->member)) {
      // Moved away from here and its forwarder has ended: straight there from now on.
      shared->remember(key, at->member);
      remote_call req{"tell", id, std::move(call), 0};
      return shared->transport->tell(*address, req);
    }
  // Neither here nor located: an acknowledged tell finds it (and remembers where).
  call_via(
    shared, "tell", id, std::move(call), std::chrono::seconds(10),
    [key](caf::expected<std::string> r) {
      if (!r)
        log::event(spdlog::level::warn, "send_failed", {{"reason", describe(r.error())}}, key);
    });
  return {};
}

} // namespace

void cluster::providers(const std::string& name, const std::string& tenant, size_t limit,
                        std::chrono::milliseconds timeout,
                        std::function<void(nlohmann::json)> done) {
  struct gathering {
    std::mutex mtx;
    nlohmann::json providers = nlohmann::json::array();
    nlohmann::json failed = nlohmann::json::array();
    size_t left = 0;
    size_t limit = 0;
    std::function<void(nlohmann::json)> done;
    void finish() {
      auto& list = providers;
      std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
        return a["load"].template get<uint64_t>() < b["load"].template get<uint64_t>();
      });
      if (list.size() > limit)
        list.erase(list.begin() + static_cast<ptrdiff_t>(limit), list.end());
      done(nlohmann::json{{"providers", std::move(list)}, {"nodes_failed", std::move(failed)}});
    }
  };
  auto g = std::make_shared<gathering>();
  g->limit = limit;
  g->done = std::move(done);
  for (auto& p : rt_->providers(name, tenant, limit))
    g->providers.push_back(to_json(p));
  // Any id works for the ranking: every member that serves calls is asked.
  agent_id any{tenant.empty() ? std::string{"all"} : tenant, "capabilities"};
  auto targets = shared_->call_targets(any, {});
  if (targets.empty())
    return g->finish();
  g->left = targets.size();
  remote_call req{
    "providers", any,
    agent_call{envelope{0, any.tenant, 0, "gateway", {}, 0},
               nlohmann::json{{"name", name}, {"tenant", tenant}, {"limit", limit}}.dump()},
    timeout.count()};
  for (auto& [member, address] : targets)
    shared_->transport->call(
      address, req, timeout, [g, member = member](caf::expected<std::string> r) {
        std::unique_lock<std::mutex> guard{g->mtx};
        auto list = r ? nlohmann::json::parse(*r, nullptr, false) : nlohmann::json{};
        if (r && list.is_array())
          for (auto& p : list)
            g->providers.push_back(std::move(p));
        else
          g->failed.push_back(
            {{"node", member},
             {"reason", r ? std::string{"a malformed answer"} : describe(r.error())}});
        if (--g->left == 0) {
          guard.unlock();
          g->finish();
        }
      });
}

void cluster::call(const std::string& op, const agent_id& id, agent_call call,
                   std::chrono::milliseconds timeout, reply_fn done) {
  call_via(shared_, op, id, std::move(call), timeout, std::move(done));
}

caf::error cluster::send(const agent_id& id, agent_call call) {
  return send_via(shared_, id, std::move(call));
}

bool cluster::shared_state::serves_calls(const member_info& m) const {
  return m.name != self_name && !m.transport.empty() && linked.count(m.name) > 0
    && (m.status == "joining" || m.status == "up" || m.status == "suspect"
        || m.status == "leaving");
}

std::optional<std::string> cluster::shared_state::transport_of(const std::string& member) const {
  std::lock_guard<std::mutex> guard{mtx};
  for (auto& m : members)
    if (m.name == member && serves_calls(m))
      return m.transport;
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> cluster::shared_state::call_targets(
  const agent_id& id, const std::string& preferred) const {
  std::vector<std::tuple<uint64_t, std::string, std::string>> scored;
  auto key = id.str();
  {
    std::lock_guard<std::mutex> guard{mtx};
    for (auto& m : members)
      if (serves_calls(m))
        scored.emplace_back(m.name == preferred ? UINT64_MAX : rendezvous_score(m.name, key),
                            m.name, m.transport);
  }
  std::sort(scored.begin(), scored.end(),
            [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(scored.size());
  for (auto& [_, n, t] : scored)
    out.emplace_back(std::move(n), std::move(t));
  return out;
}

void cluster::replicate(replicated_state s) {
  std::lock_guard<std::mutex> guard{shared_->mtx};
  shared_->replicated = std::move(s);
}

void cluster::state_changed() {
  caf::anon_send(shared_->manager, keys_changed_atom::value);
}

void cluster::migrate(const agent_id& id, const std::string& to, uint64_t correlation_id,
                      reply_fn done) {
  auto list = members();
  auto m =
    std::find_if(list.begin(), list.end(), [&](const member_info& x) { return x.name == to; });
  if (m == list.end() || m->status != "up")
    return done(
      make_error(errc::invalid_argument, "node '" + to + "' is not an up member of the cluster"));
  // Time to capture the state, ship it and hear back, twice over, plus the hops.
  auto timeout = 2 * migration_timeout_ + std::chrono::seconds(1);
  call("migrate", id, agent_call{envelope{correlation_id, id.tenant, 0, "gateway", {}, 0}, to},
       timeout, std::move(done));
}

void cluster::ask(const agent_id& id, agent_call call, std::chrono::milliseconds timeout,
                  reply_fn done) {
  this->call("ask", id, std::move(call), timeout, std::move(done));
}

std::optional<std::string> cluster::shared_state::where(const std::string& id) {
  if (auto at = route(id))
    return std::move(at->member);
  return std::nullopt;
}

std::optional<cluster::shared_state::location> cluster::shared_state::route(const std::string& id) {
  std::lock_guard<std::mutex> guard{loc_mtx};
  auto i = located.find(id);
  if (i == located.end())
    return std::nullopt;
  return i->second;
}

void cluster::shared_state::remember(const std::string& id, const std::string& member,
                                     bool moved_away) {
  if (located_max == 0)
    return;
  std::lock_guard<std::mutex> guard{loc_mtx};
  if (located.size() >= located_max && located.count(id) == 0)
    located.clear(); // bounded: start over (entries are hints, never needed for correctness)
  located[id] = {member, moved_away};
}

void cluster::shared_state::forget(const std::string& id) {
  std::lock_guard<std::mutex> guard{loc_mtx};
  located.erase(id);
}

void cluster::shared_state::forget_member(const std::string& member) {
  std::lock_guard<std::mutex> guard{loc_mtx};
  for (auto i = located.begin(); i != located.end();)
    i = i->second.member == member ? located.erase(i) : std::next(i);
}

cluster::~cluster() {
  if (rt_ != nullptr) {
    rt_->set_agent_sender({}); // agents' sends stay on this node from now on
    rt_->set_agent_asker({}, {});
    rt_->set_agent_spawner({});
    rt_->set_remote_forwarder({});
  }
  std::shared_ptr<replicator> rep;
  if (shared_) {
    std::lock_guard<std::mutex> guard{shared_->mtx};
    rep = shared_->rep;
  }
  leave();
  stop_rebalancer();
  // Pending calls fail with shutting_down; the transport's thread ends here. (The object
  // itself lives on in callbacks that still hold it, closed.)
  if (shared_ && shared_->transport)
    shared_->transport->shutdown();
  if (rep) {
    rt_->set_replicator(nullptr);
    rep->shutdown();
  }
  // The manager has stopped; its handle in the shared state (which its own state holds) would
  // keep it from ever being freed.
  if (shared_)
    shared_->manager = caf::actor{};
}

void cluster::stop_rebalancer() {
  {
    std::lock_guard<std::mutex> guard{rb_mtx_};
    rb_stop_ = true;
  }
  rb_cv_.notify_all();
  if (rebalancer_.joinable())
    rebalancer_.join();
}

bool cluster::move_and_wait(const agent_id& id, const std::string& to) {
  auto result = std::make_shared<std::promise<caf::expected<migration_result>>>();
  auto fut = result->get_future();
  rt_->migrate_out(
    id, to, ship_via(manager_, to),
    [result](caf::expected<migration_result> r) { result->set_value(std::move(r)); }, false,
    grant_via(manager_, to));
  if (fut.wait_for(2 * migration_timeout_ + std::chrono::seconds(1)) != std::future_status::ready) {
    log::event(spdlog::level::warn, "rebalance_move_timed_out", {{"to", to}}, id.str());
    return false;
  }
  auto r = fut.get();
  if (!r)
    log::event(spdlog::level::warn, "rebalance_move_failed",
               {{"to", to}, {"reason", describe(r.error())}}, id.str());
  return r && r->moved;
}

void cluster::rebalance_loop() {
  auto& cfg = rt_->config().cluster;
  auto tick = std::chrono::milliseconds(cfg.join_retry_ms);
  auto gap =
    std::chrono::microseconds(1000000 / std::max<int64_t>(1, cfg.rebalance_migrations_per_s));
  auto signature = [this] {
    std::string sig;
    size_t up = 0;
    for (auto& m : members())
      if (m.status == "up") {
        sig += m.name + "@" + std::to_string(m.incarnation) + ",";
        ++up;
      }
    return up > 1 ? sig : std::string{}; // alone: nothing to move anywhere
  };
  std::string done_sig;
  std::string seen_sig;
  std::unique_lock<std::mutex> lock{rb_mtx_};
  while (!rb_stop_) {
    rb_cv_.wait_for(lock, tick, [this] { return rb_stop_; });
    if (rb_stop_)
      break;
    auto sig = signature();
    if (sig == done_sig)
      continue;
    if (sig != seen_sig) { // changed since the last tick: let the membership settle first
      seen_sig = sig;
      continue;
    }
    done_sig = sig;
    if (sig.empty() || !rt_->db())
      continue;
    lock.unlock();
    size_t moved = 0;
    size_t looked = 0;
    size_t ephemeral = 0;
    bool stop = false;
    for (auto& id : persisted_agents(*rt_, ephemeral)) {
      {
        std::lock_guard<std::mutex> guard{rb_mtx_};
        stop = rb_stop_;
      }
      if (stop || signature() != sig) {
        stop = true;
        break;
      }
      auto meta = rt_->db()->get_meta(id.str());
      if (!meta || !*meta || (*meta)->pinned)
        continue;
      ++looked;
      auto to = place(id);
      if (to == self_name_)
        continue;
      if (move_and_wait(id, to))
        ++moved;
      std::unique_lock<std::mutex> pause{rb_mtx_};
      rb_cv_.wait_for(pause, gap, [this] { return rb_stop_; });
    }
    if (stop)
      done_sig.clear(); // the members changed again (or the node stops): scan anew
    if (moved > 0 || stop)
      log::event(spdlog::level::info, "rebalanced",
                 {{"moved", moved}, {"unpinned_agents", looked}, {"interrupted", stop}});
    lock.lock();
  }
}

std::vector<member_info> cluster::members() const {
  std::lock_guard<std::mutex> guard{shared_->mtx};
  return shared_->members;
}

void cluster::leave() {
  if (left_ || !manager_)
    return;
  left_ = true;
  stop_rebalancer();
  caf::scoped_actor waiter{manager_.home_system()};
  waiter->monitor(manager_);
  caf::anon_send(manager_, leave_atom::value, false);
  hand_off();
  caf::anon_send(manager_, leave_atom::value, true);
  waiter->receive([](const caf::down_msg&) {}, caf::after(std::chrono::seconds(5)) >> [] {});
}

void cluster::hand_off() {
  auto& cfg = rt_->config().cluster;
  if (cfg.handoff_timeout_ms <= 0)
    return;
  auto deadline =
    std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg.handoff_timeout_ms);
  size_t ephemeral = 0;
  auto ids = persisted_agents(*rt_, ephemeral);
  log::event(spdlog::level::info, "handoff_started",
             {{"agents", ids.size()}, {"ephemeral_not_moved", ephemeral}});
  struct progress {
    std::mutex mtx;
    std::condition_variable cv;
    size_t running = 0;
    size_t moved = 0;
    size_t failed = 0;
  };
  auto p = std::make_shared<progress>();
  auto parallel = static_cast<size_t>(std::max<int64_t>(1, cfg.handoff_migrations_max));
  size_t next = 0;
  bool timed_out = false;
  for (; next < ids.size(); ++next) {
    std::unique_lock<std::mutex> lock{p->mtx};
    if (!p->cv.wait_until(lock, deadline, [&] { return p->running < parallel; })) {
      timed_out = true;
      break;
    }
    auto to = place_among_others(ids[next]);
    if (to.empty())
      break; // no other member: the agents stay on disk here
    ++p->running;
    lock.unlock();
    rt_->migrate_out(
      ids[next], to, ship_via(manager_, to),
      [p, id = ids[next], to](caf::expected<migration_result> r) {
        std::lock_guard<std::mutex> guard{p->mtx};
        --p->running;
        if (r) {
          ++p->moved;
        } else {
          ++p->failed;
          log::event(spdlog::level::warn, "handoff_failed",
                     {{"to", to}, {"reason", describe(r.error())}}, id.str());
        }
        p->cv.notify_all();
      },
      false, grant_via(manager_, to));
  }
  std::unique_lock<std::mutex> lock{p->mtx};
  if (!p->cv.wait_until(lock, deadline, [&] { return p->running == 0; }))
    timed_out = true;
  log::event(timed_out || p->failed > 0 || next < ids.size() ? spdlog::level::warn
                                                             : spdlog::level::info,
             "handoff_done",
             {{"moved", p->moved},
              {"failed", p->failed},
              {"not_tried", ids.size() - next},
              {"timed_out", timed_out},
              {"handoff_timeout_ms", cfg.handoff_timeout_ms}});
}

std::string cluster::place_among_others(const agent_id& id) const {
  auto key = id.str();
  std::string best;
  uint64_t best_score = 0;
  for (auto& m : members()) {
    if (m.status != "up" || m.name == self_name_)
      continue;
    auto score = rendezvous_score(m.name, key);
    if (best.empty() || score > best_score || (score == best_score && m.name < best)) {
      best = m.name;
      best_score = score;
    }
  }
  return best;
}

} // namespace hive
