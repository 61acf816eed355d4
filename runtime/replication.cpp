#include "runtime/replication.hpp"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <charconv>
#include <future>
#include <tuple>

#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "protocols/errc.hpp"
#include "runtime/cluster.hpp"
#include "runtime/logging.hpp"

namespace hive {

namespace {

using clock_type = std::chrono::steady_clock;

/// What a copy reports of itself (`r.query`, `r.prepare`).
struct copy_info {
  bool exists = false;
  uint64_t promised = 0;
  std::string holder;
  /// The epoch whose writes the copy still takes below `promised` (`fence::draining`).
  uint64_t draining = 0;
  uint64_t last_epoch = 0;
  uint64_t last_seq = 0;
};

caf::expected<copy_info> parse_info(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object())
    return make_error(errc::invalid_argument, "replica state is not a JSON object");
  copy_info out;
  out.exists = j.value("exists", false);
  out.promised = j.value("promised", uint64_t{0});
  out.holder = j.value("holder", std::string{});
  out.draining = j.value("draining", uint64_t{0});
  out.last_epoch = j.value("last_epoch", uint64_t{0});
  out.last_seq = j.value("last_seq", uint64_t{0});
  return out;
}

/// (epoch of the last record, last sequence) of `key` in `db`: the journal's last event, or
/// the snapshot if the journal holds nothing after it.
caf::expected<std::pair<uint64_t, uint64_t>> position_of(store& db, const std::string& key) {
  auto last = db.last_seq(key);
  if (!last)
    return std::move(last.error());
  if (*last == 0)
    return std::make_pair(uint64_t{0}, uint64_t{0});
  auto ev = db.read_events(key, *last, *last, 1);
  if (!ev)
    return std::move(ev.error());
  if (!ev->empty())
    return std::make_pair(ev->front().hdr.epoch, *last);
  auto snap = db.get_snapshot(key);
  if (!snap)
    return std::move(snap.error());
  return std::make_pair(*snap ? (*snap)->hdr.epoch : uint64_t{0}, *last);
}

/// The decimal number `s` of a replication call's part `what` (`op`), or invalid_argument.
caf::expected<uint64_t> number_part(const std::string& s, const char* op, const char* what) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size())
    return make_error(errc::invalid_argument,
                      std::string{op} + ": malformed body: the " + what + " is not a number ("
                        + std::to_string(s.size()) + " bytes)");
  return v;
}

/// Waits for a store callback.
struct waiter {
  std::promise<caf::error> p;
  std::future<caf::error> f = p.get_future();
  store::done_fn fn() {
    return [this](caf::error err) { p.set_value(std::move(err)); };
  }
};

/// Writes `bundle` (meta, snapshot or empty, events) into `db` under `key` in place of what
/// is there, with `meta` (if set) instead of the bundle's meta. Calls `done` after the last
/// write (first error wins).
void rewrite(store& db, const std::string& key, const std::vector<std::string>& bundle,
             std::optional<records::meta_record> meta, store::done_fn done) {
  if (bundle.size() < 2)
    return done(make_error(errc::invalid_argument, "replica bundle of " + key + " is truncated"));
  if (!meta) {
    auto m = records::decode_meta(bundle[0]);
    if (!m)
      return done(std::move(m.error()));
    meta = std::move(*m);
  }
  std::optional<records::snapshot_record> snap;
  if (!bundle[1].empty()) {
    auto s = records::decode_snapshot(bundle[1]);
    if (!s)
      return done(std::move(s.error()));
    snap = std::move(*s);
  }
  std::vector<records::event_record> events;
  for (size_t i = 2; i < bundle.size(); ++i) {
    auto e = records::decode_event(bundle[i]);
    if (!e)
      return done(std::move(e.error()));
    events.push_back(std::move(*e));
  }
  auto first = std::make_shared<std::pair<std::mutex, caf::error>>();
  auto note = [first](caf::error err) {
    std::lock_guard<std::mutex> guard{first->first};
    if (err && !first->second)
      first->second = std::move(err);
  };
  db.erase_agent(key, note);
  meta->hdr.agent = key;
  db.put_meta(std::move(*meta), false, note);
  if (snap) {
    snap->hdr.agent = key;
    db.put_snapshot(std::move(*snap), 0, note, false);
  }
  for (auto& ev : events) {
    ev.hdr.agent = key;
    db.append(std::move(ev), note);
  }
  db.barrier([first, done = std::move(done)](caf::error err) {
    std::lock_guard<std::mutex> guard{first->first};
    done(first->second ? first->second : std::move(err));
  });
}

/// Combines the host's write with the votes of the replica set.
struct vote_book {
  std::mutex mtx;
  size_t need = 0;
  size_t n = 0;
  size_t ok = 0;
  size_t failed = 0;
  bool primary_done = false;
  bool fenced = false;
  bool answered = false;
  caf::error primary_err;
  std::string last_reason;
  std::string agent;
  store::done_fn done;
};

} // namespace

std::shared_ptr<replicator> replicator::make(std::shared_ptr<store> db, std::string self,
                                             replication_options opts, peers_fn peers,
                                             call_fn call) {
  std::shared_ptr<replicator> r{
    new replicator(std::move(db), std::move(self), opts, std::move(peers), std::move(call))};
  r->worker_ = std::thread{[p = r.get()] { p->run_worker(); }};
  return r;
}

replicator::replicator(std::shared_ptr<store> db, std::string self, replication_options opts,
                       peers_fn peers, call_fn call)
    : db_(std::move(db)), self_(std::move(self)), opts_(opts), peers_(std::move(peers)),
      call_(std::move(call)) {
  assert(db_ != nullptr);
  if (opts_.factor == 0)
    opts_.factor = 1;
}

replicator::~replicator() {
  shutdown();
}

void replicator::shutdown() {
  {
    std::lock_guard<std::mutex> guard{wmtx_};
    stop_ = true;
    tasks_.clear();
  }
  wcv_.notify_all();
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id())
    worker_.join();
}

std::string replicator::copy_key(std::string_view agent) {
  std::string out;
  out.reserve(agent.size() + 1);
  out += '~';
  out += agent;
  return out;
}

std::string replicator::pack(const std::vector<std::string>& parts) {
  std::string out;
  for (auto& p : parts) {
    auto n = static_cast<uint32_t>(p.size());
    for (int shift = 24; shift >= 0; shift -= 8)
      out += static_cast<char>((n >> shift) & 0xFF);
    out += p;
  }
  return out;
}

caf::expected<std::vector<std::string>> replicator::unpack(std::string_view bytes) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < bytes.size()) {
    if (bytes.size() - at < 4)
      return make_error(errc::invalid_argument, "replication bundle: truncated length");
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i)
      n = (n << 8) | static_cast<uint8_t>(bytes[at + static_cast<size_t>(i)]);
    at += 4;
    if (bytes.size() - at < n)
      return make_error(errc::invalid_argument, "replication bundle: truncated part");
    out.emplace_back(bytes.substr(at, n));
    at += n;
  }
  return out;
}

std::vector<replica_peer> replicator::replica_set(const std::string& agent) const {
  auto all = peers_();
  std::vector<std::pair<uint64_t, replica_peer>> scored;
  scored.reserve(all.size());
  for (auto& p : all)
    scored.emplace_back(rendezvous_score(p.name, agent), std::move(p));
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second.name < b.second.name;
  });
  std::vector<replica_peer> out;
  for (auto& [_, p] : scored) {
    if (out.size() >= opts_.factor)
      break;
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<replica_peer> replicator::effective_set(const std::string& agent) {
  auto set = replica_set(agent);
  std::vector<std::string> recorded;
  {
    std::lock_guard<std::mutex> guard{fmtx_};
    recorded = fence_of(copy_key(agent)).replicas;
  }
  if (recorded.empty())
    return set;
  std::vector<replica_peer> all;
  for (auto& name : recorded) {
    bool in = std::any_of(set.begin(), set.end(), [&](auto& p) { return p.name == name; });
    if (in)
      continue;
    if (all.empty())
      all = peers_();
    auto known = std::find_if(all.begin(), all.end(), [&](auto& p) { return p.name == name; });
    set.push_back(known != all.end() ? *known : replica_peer{name, {}, false});
  }
  return set;
}

replicator::counters replicator::stats() const {
  std::lock_guard<std::mutex> guard{cmtx_};
  return counters_;
}

// -- rounds ----------------------------------------------------------------------------------

struct replicator::round_book {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<std::optional<caf::expected<std::string>>> r;
  size_t left = 0;
  size_t ok = 0;
  size_t enough = 0;
  /// Runs once the round is done (`send_round`'s `then`).
  round_fn then;
  bool done() const {
    return left == 0 || (enough > 0 && ok >= enough);
  }
  /// The answers so far (call with `mtx` held).
  std::vector<caf::expected<std::string>> answers(const std::vector<std::string>& names) const {
    std::vector<caf::expected<std::string>> out;
    for (size_t i = 0; i < r.size(); ++i)
      out.push_back(r[i] ? *r[i]
                         : caf::expected<std::string>{
                           make_error(errc::timeout, names[i] + " did not answer in time")});
    return out;
  }
  std::vector<std::string> names;
};

struct replicator::handover_round {
  std::string key;
  /// The epoch asked for, of the set the round went to.
  uint64_t epoch = 0;
  std::vector<replica_peer> set;
  std::shared_ptr<round_book> answers;
};

std::shared_ptr<replicator::round_book> replicator::send_round(
  const std::vector<replica_peer>& set, const remote_call& req,
  const std::function<void(reply_fn)>& local, size_t enough, round_fn then) {
  auto b = std::make_shared<round_book>();
  b->r.resize(set.size());
  b->left = set.size();
  b->enough = enough;
  b->then = std::move(then);
  for (auto& p : set)
    b->names.push_back(p.name);
  auto slot = [b](size_t i) {
    return [b, i](caf::expected<std::string> x) {
      // (Answers after the caller stopped waiting land here too, unread.)
      round_fn then;
      std::vector<caf::expected<std::string>> answers;
      {
        std::lock_guard<std::mutex> guard{b->mtx};
        if (b->r[i])
          return;
        if (x)
          ++b->ok;
        b->r[i] = std::move(x);
        --b->left;
        if (!b->done())
          return;
        b->cv.notify_all();
        if (!b->then)
          return;
        then = std::move(b->then);
        b->then = nullptr;
        answers = b->answers(b->names);
      }
      then(std::move(answers));
    };
  };
  for (size_t i = 0; i < set.size(); ++i) {
    if (set[i].name == self_)
      local(slot(i));
    else if (!set[i].serving || set[i].address.empty())
      slot(i)(make_error(errc::unavailable, set[i].name + " does not serve calls"));
    else
      call_(set[i].address, req, opts_.timeout, slot(i));
  }
  return b;
}

std::vector<caf::expected<std::string>> replicator::wait_round(
  const std::shared_ptr<round_book>& b, const std::vector<replica_peer>& set) {
  std::unique_lock<std::mutex> guard{b->mtx};
  b->cv.wait_for(guard, opts_.timeout + std::chrono::milliseconds(200), [&] { return b->done(); });
  assert(b->names.size() == set.size());
  return b->answers(b->names);
}

std::vector<caf::expected<std::string>> replicator::gather(
  const std::vector<replica_peer>& set, const remote_call& req,
  const std::function<void(reply_fn)>& local, size_t enough) {
  return wait_round(send_round(set, req, local, enough), set);
}

std::shared_ptr<replicator::round_book> replicator::send_prepare(
  const agent_id& id, uint64_t epoch, const std::string& meta_bytes,
  const std::vector<replica_peer>& set, const std::string& holder, uint64_t drain, round_fn then) {
  auto key = id.str();
  auto& to = holder.empty() ? self_ : holder;
  std::vector<std::string> names;
  std::string joined;
  for (auto& m : replica_set(key)) {
    names.push_back(m.name);
    joined += (joined.empty() ? "" : ",") + m.name;
  }
  remote_call p{"r.prepare", id, {}, opts_.timeout.count()};
  p.call.body = pack({std::to_string(epoch), to, meta_bytes, joined, std::to_string(drain)});
  return send_round(
    set, p,
    [&](reply_fn done) {
      on_prepare(key, epoch, to, meta_bytes, std::move(names), drain, std::move(done));
    },
    set.size() / 2 + 1, std::move(then));
}

void replicator::promise_to(const agent_id& id, const records::meta_record& meta,
                            uint64_t epoch_now, const std::string& target,
                            std::function<void(caf::expected<grant>)> done) {
  assert(done);
  auto key = id.str();
  auto set = effective_set(key);
  auto need = set.size() / 2 + 1;
  auto epoch = epoch_now + 1;
  (void)send_prepare(
    id, epoch, records::encode(meta), set, target, epoch_now,
    [key, set, need, epoch, done = std::move(done)](std::vector<caf::expected<std::string>> rs) {
      grant g;
      g.epoch = epoch;
      size_t promised = 0;
      bool fenced = false;
      std::string reasons;
      for (size_t i = 0; i < rs.size(); ++i) {
        auto info = rs[i] ? parse_info(*rs[i]) : caf::expected<copy_info>{rs[i].error()};
        if (!info) {
          fenced = fenced || code_of(info.error()) == errc::fenced;
          reasons += (reasons.empty() ? "" : "; ") + set[i].name + ": " + describe(info.error());
          continue;
        }
        ++promised;
        if (std::tie(info->last_epoch, info->last_seq) > std::tie(g.newest_epoch, g.newest_seq)) {
          g.newest_epoch = info->last_epoch;
          g.newest_seq = info->last_seq;
        }
      }
      if (promised >= need)
        return done(g);
      done(make_error(fenced ? errc::fenced : errc::no_quorum,
                      "a majority of the replicas of " + key + " did not promise epoch "
                        + std::to_string(epoch) + " to the migration's target ("
                        + std::to_string(promised) + " of " + std::to_string(set.size()) + ": "
                        + reasons + ")"));
    });
}

std::shared_ptr<replicator::handover_round> replicator::begin_handover(
  const agent_id& id, const records::meta_record& meta, uint64_t epoch, uint64_t min_epoch) {
  expect_handover(id, epoch);
  auto key = id.str();
  auto round = std::make_shared<handover_round>();
  round->key = key;
  round->set = effective_set(key);
  for (auto& p : round->set)
    if (p.name == self_ && !p.serving)
      return nullptr; // (acquire refuses it: this node is still joining)
  round->epoch = std::max(min_epoch, epoch + 1);
  round->answers = send_prepare(id, round->epoch, records::encode(meta), round->set);
  return round;
}

caf::expected<uint64_t> replicator::acquire(const agent_id& id, const records::meta_record& meta,
                                            uint64_t min_epoch, bool fresh,
                                            activation_hints* hints) {
  auto key = id.str();
  // A round begun before (begin_handover): its set is the one its answers are of.
  auto round = hints != nullptr ? std::move(hints->round) : nullptr;
  assert(!round || round->key == key);
  auto set = round ? round->set : effective_set(key);
  auto need = set.size() / 2 + 1;
  std::optional<uint64_t> handover; // the epoch a migrating agent left its node with
  {
    // (Taken first: an expected handover is for this activation only, whatever its outcome.
    // Left behind, it would let a later one skip the check for another holder.)
    std::lock_guard<std::mutex> guard{fmtx_};
    if (auto h = handovers_.find(key); h != handovers_.end()) {
      handover = h->second;
      handovers_.erase(h);
    }
  }
  for (auto& p : set)
    if (p.name == self_ && !p.serving)
      return make_error(errc::no_quorum,
                        self_
                          + " is still joining the cluster: it activates no "
                            "replicated agent before it knows the members");
  if (hints != nullptr && hints->granted != 0) {
    // Promised to this node by a majority before the state left its source, which checked
    // that no copy is newer than that state (promise_to): nothing to ask, nothing to read.
    if (hints->settled)
      if (auto err = hints->settled())
        return err;
    std::lock_guard<std::mutex> guard{cmtx_};
    ++counters_.activations;
    return hints->granted;
  }
  auto meta_bytes = records::encode(meta);
  std::vector<caf::expected<std::string>> preps;
  std::optional<std::pair<copy_info, size_t>> best;
  uint64_t epoch = 0;
  // A migration's target asks for the promise at once (the agent's last epoch is known); if
  // that is refused as too old, it runs both rounds as any activation.
  for (bool skip_query = handover.has_value();; skip_query = false) {
    std::string reasons;
    if (skip_query) {
      epoch = std::max(min_epoch, *handover + 1);
    } else {
      // Round 1: what the copies promised, and to whom.
      remote_call q{"r.query", id, {}, opts_.timeout.count()};
      // (A majority's answers suffice: a promise a majority made is seen in any majority.)
      auto answers = gather(
        set, q, [&](reply_fn done) { done(copy_state(key)); }, need);
      std::vector<copy_info> infos;
      for (size_t i = 0; i < answers.size(); ++i) {
        if (answers[i]) {
          if (auto info = parse_info(*answers[i]))
            infos.push_back(std::move(*info));
        } else {
          reasons +=
            (reasons.empty() ? "" : "; ") + set[i].name + ": " + describe(answers[i].error());
        }
      }
      if (infos.size() < need)
        return make_error(errc::no_quorum,
                          "cannot reach a majority of the replicas of " + key + " ("
                            + std::to_string(infos.size()) + " of " + std::to_string(set.size())
                            + " answered: " + reasons + ")");
      auto top = *std::max_element(infos.begin(), infos.end(),
                                   [](auto& a, auto& b) { return a.promised < b.promised; });
      if (!handover && !top.holder.empty() && top.holder != self_) {
        for (auto& p : peers_())
          if (p.name == top.holder && p.serving)
            return make_error(errc::agent_not_found, key + " is active on " + top.holder);
      }
      epoch = std::max(min_epoch, top.promised + 1);
      reasons.clear();
    }
    // Round 2: a majority promises the new epoch.
    // A majority's promises make the epoch this activation's; the copy with the newest journal
    // among them holds every acknowledged write (a write's majority meets this one). The
    // others' answers (this node's own, say, queued behind a large write) are not waited for.
    if (skip_query && round && round->epoch >= epoch)
      epoch = round->epoch; // sent already (begin_handover), for an epoch at least this large
    else
      round.reset();
    preps = wait_round(round ? round->answers : send_prepare(id, epoch, meta_bytes, set), set);
    round.reset();
    size_t promised = 0;
    bool fenced = false;
    best.reset();
    for (size_t i = 0; i < preps.size(); ++i) {
      if (!preps[i]) {
        fenced = fenced || code_of(preps[i].error()) == errc::fenced;
        reasons += (reasons.empty() ? "" : "; ") + set[i].name + ": " + describe(preps[i].error());
        continue;
      }
      auto info = parse_info(*preps[i]);
      if (!info)
        continue;
      ++promised;
      if (!best
          || std::tie(info->last_epoch, info->last_seq)
            > std::tie(best->first.last_epoch, best->first.last_seq))
        best = std::make_pair(*info, i);
    }
    if (promised >= need)
      break;
    if (skip_query && fenced)
      continue;
    return make_error(fenced ? errc::fenced : errc::no_quorum,
                      "a majority of the replicas of " + key + " did not promise epoch "
                        + std::to_string(epoch) + " (" + std::to_string(promised) + " of "
                        + std::to_string(set.size()) + ": " + reasons + ")");
  }
  if (hints != nullptr && hints->settled)
    if (auto err = hints->settled())
      return err;
  // Catch up: the working copy becomes the newest copy, unless it is that already.
  auto local = hints != nullptr && hints->position
    ? caf::expected<std::pair<uint64_t, uint64_t>>{*hints->position}
    : position_of(*db_, key);
  if (!local)
    return std::move(local.error());
  auto& b = best->first;
  if (!fresh && b.last_seq > 0 && std::make_pair(b.last_epoch, b.last_seq) != *local) {
    auto& from = set[best->second];
    caf::expected<std::string> bundle{std::string{}};
    if (from.name == self_) {
      bundle = bundle_of(copy_key(key));
    } else {
      remote_call f{"r.fetch", id, {}, opts_.timeout.count()};
      auto got = gather({from}, f, [](reply_fn) {});
      bundle = std::move(got.front());
    }
    if (!bundle)
      return make_error(errc::no_quorum,
                        "cannot fetch the newest copy of " + key + " from " + from.name + ": "
                          + describe(bundle.error()));
    auto parts = unpack(*bundle);
    if (!parts)
      return std::move(parts.error());
    waiter w;
    rewrite(*db_, key, *parts, meta, w.fn());
    if (auto err = w.f.get())
      return err;
    if (hints != nullptr)
      hints->replaced = true;
    log::event(spdlog::level::info, "replica_caught_up",
               {{"from", from.name},
                {"seq", b.last_seq},
                {"epoch", b.last_epoch},
                {"had_seq", local->second}},
               key);
  }
  // Copies that promised but lag behind the newest one are repaired in the background (the
  // ones that did not answer get checked when their member comes back up).
  if (!fresh)
    for (size_t i = 0; i < preps.size(); ++i) {
      if (!preps[i] || i == best->second)
        continue;
      auto info = parse_info(*preps[i]);
      if (info && std::tie(info->last_epoch, info->last_seq) != std::tie(b.last_epoch, b.last_seq))
        schedule_repair(key, set[i], epoch);
    }
  {
    std::lock_guard<std::mutex> guard{cmtx_};
    ++counters_.activations;
  }
  return epoch;
}

caf::error replicator::confirm(const agent_id& id, uint64_t epoch) {
  auto key = id.str();
  auto set = effective_set(key);
  auto need = set.size() / 2 + 1;
  remote_call q{"r.query", id, {}, opts_.timeout.count()};
  auto answers = gather(set, q, [&](reply_fn done) { done(copy_state(key)); });
  size_t holding = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    if (!answers[i])
      continue;
    auto info = parse_info(*answers[i]);
    if (!info)
      continue;
    if (info->draining == epoch) {
      // Promised to a migration's target, which has not written yet: this activation still
      // writes, and is the only one that can (promise_to).
      ++holding;
      continue;
    }
    if (info->promised > epoch)
      return make_error(errc::fenced,
                        key + ": " + set[i].name + " promised epoch "
                          + std::to_string(info->promised) + " to " + info->holder
                          + " (this activation has " + std::to_string(epoch) + ")");
    if (info->promised == epoch && info->holder == self_)
      ++holding;
  }
  if (holding < need)
    return make_error(errc::no_quorum,
                      key + ": " + std::to_string(holding) + " of " + std::to_string(set.size())
                        + " replicas confirm this activation, " + std::to_string(need) + " needed");
  return {};
}

bool replicator::majority_reachable(const std::string& agent) {
  auto set = effective_set(agent);
  size_t reachable = 0;
  for (auto& p : set)
    if (p.name == self_ || p.serving)
      ++reachable;
  return reachable >= set.size() / 2 + 1;
}

void replicator::on_member_up(const std::string& name) {
  // A moment later: by then the member list shows it serving.
  post(clock_type::now() + std::chrono::seconds(1), [self = shared_from_this(), name] {
    std::string after;
    size_t scheduled = 0;
    for (;;) {
      auto page = self->db_->list_meta({}, after, 1024);
      if (!page || page->empty())
        break;
      after = page->back().hdr.agent;
      for (auto& meta : *page) {
        auto& key = meta.hdr.agent;
        if (is_copy_key(key) || meta.persistence != "journaled")
          continue;
        fence f;
        {
          std::lock_guard<std::mutex> guard{self->fmtx_};
          f = self->fence_of(copy_key(key));
        }
        if (f.holder != self->self_)
          continue; // only the holder repairs
        for (auto& peer : self->replica_set(key))
          if ((name.empty() ? peer.name != self->self_ : peer.name == name) && peer.serving) {
            self->schedule_repair(key, peer, f.promised, true);
            ++scheduled;
          }
      }
      if (page->size() < 1024)
        break;
    }
    if (scheduled > 0)
      log::event(spdlog::level::info, "replica_checks_scheduled",
                 {{"member", name}, {"agents", scheduled}});
  });
}

void replicator::expect_handover(const agent_id& id, uint64_t epoch) {
  std::lock_guard<std::mutex> guard{fmtx_};
  handovers_[id.str()] = epoch;
}

bool replicator::may_take_over(const agent_id& id) {
  auto key = id.str();
  auto meta = db_->get_meta(copy_key(key));
  if (!meta || !*meta)
    return false;
  std::string holder;
  {
    std::lock_guard<std::mutex> guard{fmtx_};
    holder = fence_of(copy_key(key)).holder;
  }
  auto peers = peers_();
  if (!holder.empty() && holder != self_)
    for (auto& p : peers)
      if (p.name == holder && p.serving)
        return false;
  if (holder == self_) {
    // Promised here by a migration's source, and no working copy: while its shipment may
    // still come, not; after that, nobody else would (this node serves), so this node does.
    {
      std::lock_guard<std::mutex> guard{fmtx_};
      if (auto g = grants_.find(key);
          g != grants_.end() && clock_type::now() - g->second < opts_.handover_wait)
        return false;
    }
    for (auto& p : effective_set(key))
      if (p.name == self_)
        return p.serving;
    return false;
  }
  for (auto& p : effective_set(key)) {
    if (p.name == self_)
      return p.serving;
    if (p.serving)
      return false; // another survivor comes first
  }
  return false;
}

caf::error replicator::take_over(const agent_id& id) {
  auto key = id.str();
  auto meta = db_->get_meta(copy_key(key));
  if (!meta)
    return std::move(meta.error());
  if (!*meta)
    return make_error(errc::agent_not_found, "no replica of " + key + " here");
  auto m = std::move(**meta);
  m.hdr.agent = key;
  m.promised_epoch = 0;
  m.holder.clear();
  waiter w;
  db_->put_meta(std::move(m), true, w.fn());
  auto err = w.f.get();
  if (err && code_of(err) != errc::agent_exists)
    return err;
  {
    std::lock_guard<std::mutex> guard{cmtx_};
    ++counters_.takeovers;
  }
  log::event(spdlog::level::info, "agent_failover", {{"node", self_}}, key);
  return {};
}

// -- the host's writes ---------------------------------------------------------------------

void replicator::append(records::event_record ev, store::done_fn done) {
  auto key = ev.hdr.agent;
  auto set = effective_set(key);
  auto b = std::make_shared<vote_book>();
  b->n = set.size();
  b->need = set.size() / 2 + 1;
  b->agent = key;
  b->done = std::move(done);
  auto self = shared_from_this();
  bool lazy = opts_.ack_before_quorum;
  auto settle = [self, b, lazy] {
    store::done_fn fn;
    caf::error result;
    {
      std::lock_guard<std::mutex> guard{b->mtx};
      if (b->answered)
        return;
      if (b->primary_done && b->primary_err) {
        result = b->primary_err;
      } else if (b->primary_done && (lazy || b->ok >= b->need)) {
        result = caf::error{};
      } else if (b->failed > b->n - b->need) {
        result = make_error(b->fenced ? errc::fenced : errc::no_quorum,
                            b->fenced ? b->agent + ": a newer activation holds the replicas ("
                                + b->last_reason + ")"
                                      : b->agent + ": " + std::to_string(b->ok) + " of "
                                + std::to_string(b->n) + " replicas acknowledged the write, "
                                + std::to_string(b->need) + " needed (" + b->last_reason + ")");
      } else {
        return;
      }
      b->answered = true;
      fn = std::move(b->done);
    }
    {
      std::lock_guard<std::mutex> guard{self->cmtx_};
      if (!result)
        ++self->counters_.writes_acknowledged;
      else if (code_of(result) == errc::fenced)
        ++self->counters_.fenced_writes;
      else if (code_of(result) == errc::no_quorum)
        ++self->counters_.writes_without_quorum;
    }
    fn(std::move(result));
  };
  auto vote = [self, b, settle, key, epoch = ev.hdr.epoch](const replica_peer& peer) {
    return [self, b, settle, key, epoch, peer](caf::expected<std::string> r) {
      {
        std::lock_guard<std::mutex> guard{b->mtx};
        if (r) {
          ++b->ok;
        } else {
          ++b->failed;
          b->fenced = b->fenced || code_of(r.error()) == errc::fenced;
          b->last_reason = peer.name + ": " + describe(r.error());
        }
      }
      if (!r && code_of(r.error()) == errc::conflict)
        self->schedule_repair(key, peer, epoch);
      settle();
    };
  };
  auto encoded = records::encode(ev);
  auto send_all = [self, set, ev, encoded, vote] {
    for (auto& peer : set) {
      if (peer.name == self->self_) {
        self->on_append(ev, vote(peer));
      } else if (!peer.serving || peer.address.empty()) {
        vote(peer)(make_error(errc::unavailable, peer.name + " does not serve calls"));
      } else {
        remote_call req{"r.append", agent_id{}, {}, self->opts_.timeout.count()};
        req.call.body = encoded;
        self->call_(peer.address, req, self->opts_.timeout, vote(peer));
      }
    }
  };
  db_->append(std::move(ev), [b, settle](caf::error err) {
    {
      std::lock_guard<std::mutex> guard{b->mtx};
      b->primary_done = true;
      b->primary_err = std::move(err);
    }
    settle();
  });
  if (lazy)
    post(clock_type::now() + std::chrono::milliseconds(200), send_all);
  else
    send_all();
}

void replicator::snapshot(const records::snapshot_record& snap, uint64_t prune_through) {
  auto key = snap.hdr.agent;
  auto bytes = records::encode(snap);
  for (auto& peer : replica_set(key)) {
    if (peer.name == self_) {
      on_snapshot(snap, prune_through);
    } else if (peer.serving && !peer.address.empty()) {
      remote_call req{"r.snapshot", agent_id{}, {}, opts_.timeout.count()};
      req.call.body = pack({std::to_string(prune_through), bytes});
      call_(peer.address, req, opts_.timeout, [](caf::expected<std::string>) {});
    }
  }
}

void replicator::erase(const agent_id& id, std::function<void()> done) {
  auto key = id.str();
  struct pending {
    std::atomic<size_t> left{1}; // (one for the loop below)
    std::function<void()> done;
    void one() {
      if (--left == 0 && done)
        done();
    }
  };
  auto p = std::make_shared<pending>();
  p->done = std::move(done);
  for (auto& peer : replica_set(key)) {
    if (peer.name == self_) {
      ++p->left;
      on_erase(key, [p](caf::expected<std::string>) { p->one(); });
    } else if (peer.serving && !peer.address.empty()) {
      ++p->left;
      remote_call req{"r.erase", id, {}, opts_.timeout.count()};
      call_(peer.address, req, opts_.timeout, [p](caf::expected<std::string>) { p->one(); });
    }
  }
  p->one();
}

// -- the replicas' side --------------------------------------------------------------------

replicator::fence& replicator::fence_of(const std::string& key) {
  auto i = fences_.find(key);
  if (i != fences_.end())
    return i->second;
  fence f;
  if (auto meta = db_->get_meta(key); meta && *meta) {
    f.promised = (*meta)->promised_epoch;
    f.holder = (*meta)->holder;
    f.replicas = (*meta)->replicas;
  }
  return fences_.emplace(key, std::move(f)).first->second;
}

std::string replicator::copy_state(const std::string& agent) {
  auto key = copy_key(agent);
  nlohmann::json j;
  auto meta = db_->get_meta(key);
  j["exists"] = meta && *meta;
  {
    std::lock_guard<std::mutex> guard{fmtx_};
    auto& f = fence_of(key);
    j["promised"] = f.promised;
    j["holder"] = f.holder;
    if (f.draining != 0)
      j["draining"] = f.draining;
  }
  auto pos = position_of(*db_, key);
  j["last_epoch"] = pos ? pos->first : 0;
  j["last_seq"] = pos ? pos->second : 0;
  return j.dump();
}

void replicator::on_prepare(const std::string& agent, uint64_t epoch, const std::string& holder,
                            const std::string& meta_bytes, std::vector<std::string> replicas,
                            uint64_t drain, reply_fn done) {
  auto meta = records::decode_meta(meta_bytes);
  if (!meta)
    return done(std::move(meta.error()));
  auto key = copy_key(agent);
  {
    std::lock_guard<std::mutex> guard{fmtx_};
    auto& f = fence_of(key);
    if (epoch < f.promised || (epoch == f.promised && holder != f.holder))
      return done(make_error(
        errc::fenced, self_ + " promised epoch " + std::to_string(f.promised) + " to " + f.holder));
    f.promised = epoch;
    f.holder = holder;
    f.draining = drain < epoch ? drain : 0;
    f.replicas = replicas;
    meta->hdr.agent = key;
    meta->promised_epoch = epoch;
    meta->holder = holder;
    meta->replicas = std::move(replicas);
    // Under the lock: writes queued after this see the promise; the answer is read once the
    // promise is durable, so it covers every write accepted before it.
    db_->put_meta(std::move(*meta), false,
                  [self = shared_from_this(), agent, done = std::move(done)](caf::error err) {
                    if (err)
                      return done(std::move(err));
                    done(self->copy_state(agent));
                  });
  }
}

void replicator::on_append(records::event_record ev, reply_fn done) {
  auto key = copy_key(ev.hdr.agent);
  std::lock_guard<std::mutex> guard{fmtx_};
  auto& f = fence_of(key);
  if (!f.takes(ev.hdr.epoch))
    return done(make_error(errc::fenced,
                           self_ + " promised epoch " + std::to_string(f.promised) + " to "
                             + f.holder + ", write has epoch " + std::to_string(ev.hdr.epoch)));
  if (ev.hdr.epoch >= f.promised)
    f.draining = 0; // the new holder writes: the one before it may not any more
  ev.hdr.agent = key;
  if (f.gap) {
    // Past a gap: kept for the repair that fills it (to the writer, still a miss).
    auto seq = ev.hdr.seq;
    if (f.held.size() < opts_.held_events_max || f.held.count(seq) > 0)
      f.held.insert_or_assign(seq, std::move(ev));
    return done(make_error(errc::conflict,
                           self_ + "'s copy of " + key + " misses events before "
                             + std::to_string(seq) + " (a repair is due)"));
  }
  db_->append(std::move(ev), note_gap(key, std::move(done)));
}

store::done_fn replicator::note_gap(const std::string& key, reply_fn done) {
  return [self = shared_from_this(), key, done = std::move(done)](caf::error err) {
    if (code_of(err) == errc::conflict) {
      std::lock_guard<std::mutex> guard{self->fmtx_};
      self->fence_of(key).gap = true;
    }
    if (!done)
      return;
    if (err)
      return done(std::move(err));
    done(std::string{});
  };
}

void replicator::on_snapshot(records::snapshot_record snap, uint64_t prune_through) {
  auto key = copy_key(snap.hdr.agent);
  std::lock_guard<std::mutex> guard{fmtx_};
  auto& f = fence_of(key);
  if (!f.takes(snap.hdr.epoch))
    return;
  snap.hdr.agent = key;
  // Refused (conflict) when the copy misses events: its next append conflict repairs it.
  db_->put_snapshot(
    std::move(snap), prune_through, [](caf::error) {}, true);
}

void replicator::on_sync(const std::string& agent, uint64_t epoch,
                         const std::vector<std::string>& bundle, reply_fn done) {
  auto key = copy_key(agent);
  auto meta = bundle.empty()
    ? caf::expected<records::meta_record>{make_error(errc::invalid_argument, "empty bundle")}
    : records::decode_meta(bundle[0]);
  if (!meta)
    return done(std::move(meta.error()));
  std::lock_guard<std::mutex> guard{fmtx_};
  auto& f = fence_of(key);
  if (!f.takes(epoch))
    return done(make_error(
      errc::fenced, self_ + " promised epoch " + std::to_string(f.promised) + " to " + f.holder));
  meta->promised_epoch = f.promised;
  meta->holder = f.holder;
  meta->replicas = f.replicas;
  // Where the bundle's journal ends: the events held past the gap follow on from there.
  uint64_t end = 0;
  if (bundle.size() > 2) {
    if (auto last = records::decode_event(bundle.back()))
      end = last->hdr.seq;
  } else if (bundle.size() == 2 && !bundle[1].empty()) {
    if (auto snap = records::decode_snapshot(bundle[1]))
      end = snap->hdr.seq;
  }
  rewrite(*db_, key, bundle, std::move(*meta), [done = std::move(done)](caf::error err) {
    if (err)
      return done(std::move(err));
    done(std::string{});
  });
  // (Queued behind the rewrite, under the lock: no append comes in between.)
  for (auto& [seq, ev] : f.held) {
    if (seq <= end)
      continue;
    if (seq != end + 1 || !f.takes(ev.hdr.epoch))
      break;
    db_->append(std::move(ev), note_gap(key, {}));
    end = seq;
  }
  f.held.clear();
  f.gap = false;
}

void replicator::on_erase(const std::string& agent, reply_fn done) {
  auto key = copy_key(agent);
  {
    std::lock_guard<std::mutex> guard{fmtx_};
    fences_.erase(key);
  }
  db_->erase_agent(key, [done = std::move(done)](caf::error err) {
    if (err)
      return done(std::move(err));
    done(std::string{});
  });
}

caf::expected<std::string> replicator::bundle_of(const std::string& key) {
  auto meta = db_->get_meta(key);
  if (!meta)
    return std::move(meta.error());
  if (!*meta)
    return make_error(errc::agent_not_found, "no copy " + key + " on " + self_);
  std::vector<std::string> parts{records::encode(**meta)};
  auto snap = db_->get_snapshot(key);
  if (!snap)
    return std::move(snap.error());
  uint64_t from = 1;
  if (*snap) {
    parts.push_back(records::encode(**snap));
    from = (*snap)->hdr.seq + 1;
  } else {
    parts.emplace_back();
  }
  for (;;) {
    auto events = db_->read_journal_from(key, from, 4096);
    if (!events)
      return std::move(events.error());
    for (auto& ev : *events) {
      parts.push_back(records::encode(ev));
      from = ev.hdr.seq + 1;
    }
    if (events->size() < 4096)
      break;
  }
  return pack(parts);
}

void replicator::handle(const remote_call& req, reply_fn done) {
  auto& op = req.op;
  auto agent = req.id.str();
  if (op == "r.query")
    return done(copy_state(agent));
  if (op == "r.append") {
    auto ev = records::decode_event(req.call.body);
    if (!ev)
      return done(std::move(ev.error()));
    return on_append(std::move(*ev), std::move(done));
  }
  if (op == "r.prepare") {
    auto parts = unpack(req.call.body);
    // (EPOCH HOLDER META REPLICAS [DRAIN])
    if (!parts || parts->size() < 4 || parts->size() > 5)
      return done(make_error(errc::invalid_argument, "r.prepare: malformed body"));
    auto epoch = number_part((*parts)[0], "r.prepare", "epoch");
    if (!epoch)
      return done(std::move(epoch.error()));
    auto drain = parts->size() == 5 ? number_part((*parts)[4], "r.prepare", "drain epoch")
                                    : caf::expected<uint64_t>{uint64_t{0}};
    if (!drain)
      return done(std::move(drain.error()));
    if ((*parts)[1] == self_) {
      // Another member asks the copy here to promise this node (promise_to): a shipment is on
      // its way (see may_take_over).
      auto now = clock_type::now();
      std::lock_guard<std::mutex> guard{fmtx_};
      if (grants_.size() >= 4096)
        for (auto g = grants_.begin(); g != grants_.end();)
          g = now - g->second >= opts_.handover_wait ? grants_.erase(g) : std::next(g);
      grants_[agent] = now;
    }
    return on_prepare(agent, *epoch, (*parts)[1], (*parts)[2], split_list((*parts)[3]), *drain,
                      std::move(done));
  }
  if (op == "r.snapshot") {
    auto parts = unpack(req.call.body);
    if (!parts || parts->size() != 2)
      return done(make_error(errc::invalid_argument, "r.snapshot: malformed body"));
    auto prune = number_part((*parts)[0], "r.snapshot", "prune sequence number");
    if (!prune)
      return done(std::move(prune.error()));
    auto snap = records::decode_snapshot((*parts)[1]);
    if (!snap)
      return done(std::move(snap.error()));
    on_snapshot(std::move(*snap), std::min(*prune, snap->hdr.seq));
    return done(std::string{});
  }
  if (op == "r.fetch")
    return done(bundle_of(copy_key(agent)));
  if (op == "r.sync") {
    auto parts = unpack(req.call.body);
    if (!parts || parts->size() < 3)
      return done(make_error(errc::invalid_argument, "r.sync: malformed body"));
    auto epoch = number_part(parts->front(), "r.sync", "epoch");
    if (!epoch)
      return done(std::move(epoch.error()));
    parts->erase(parts->begin());
    return on_sync(agent, *epoch, *parts, std::move(done));
  }
  if (op == "r.erase")
    return on_erase(agent, std::move(done));
  done(make_error(errc::invalid_argument, "unknown replication call '" + op + "'"));
}

// -- repairs -------------------------------------------------------------------------------

void replicator::schedule_repair(const std::string& agent, const replica_peer& peer, uint64_t epoch,
                                 bool check_first) {
  auto tag = agent + '\0' + peer.name;
  clock_type::time_point when;
  {
    std::lock_guard<std::mutex> guard{wmtx_};
    if (stop_ || !repairing_.insert(tag).second)
      return; // one at a time per copy
    auto gap = std::chrono::duration_cast<clock_type::duration>(
      std::chrono::duration<double>(1.0 / std::max(opts_.repairs_per_s, 0.001)));
    next_repair_ = std::max(next_repair_ + gap, clock_type::now());
    when = next_repair_;
  }
  post(when, [self = shared_from_this(), agent, peer, epoch, tag, check_first] {
    auto finish = [self, tag, agent, peer](caf::expected<std::string> r) {
      {
        std::lock_guard<std::mutex> guard{self->wmtx_};
        self->repairing_.erase(tag);
      }
      {
        std::lock_guard<std::mutex> guard{self->cmtx_};
        ++self->counters_.repairs;
      }
      log::event(r ? spdlog::level::debug : spdlog::level::warn, "replica_repaired",
                 {{"replica", peer.name},
                  {"ok", static_cast<bool>(r)},
                  {"reason", r ? std::string{} : describe(r.error())}},
                 agent);
    };
    if (check_first && peer.name != self->self_) {
      // Ask first (the answer runs on the transport's thread; the copy is sent from there).
      auto id = parse_agent_id(agent);
      if (!id)
        return finish(std::move(id.error()));
      remote_call q{"r.query", *id, {}, self->opts_.timeout.count()};
      return self->call_(peer.address, q, self->opts_.timeout,
                         [self, agent, peer, epoch, tag, finish](caf::expected<std::string> r) {
                           auto info = r ? parse_info(*r) : caf::expected<copy_info>{r.error()};
                           auto mine = position_of(*self->db_, agent);
                           if (info && mine
                               && std::make_pair(info->last_epoch, info->last_seq) == *mine) {
                             std::lock_guard<std::mutex> guard{self->wmtx_};
                             self->repairing_.erase(tag); // up to date: nothing to send
                             return;
                           }
                           self->post(clock_type::now(), [self, agent, peer, epoch, tag] {
                             {
                               std::lock_guard<std::mutex> guard{self->wmtx_};
                               self->repairing_.erase(tag);
                             }
                             self->schedule_repair(agent, peer, epoch, false);
                           });
                         });
    }
    auto bundle = self->bundle_of(agent); // the working copy
    if (!bundle)
      return finish(std::move(bundle.error()));
    auto parts = unpack(*bundle);
    if (!parts)
      return finish(std::move(parts.error()));
    if (peer.name == self->self_)
      return self->on_sync(agent, epoch, *parts, finish);
    parts->insert(parts->begin(), std::to_string(epoch));
    remote_call req{"r.sync", {}, {}, self->opts_.timeout.count()};
    auto id = parse_agent_id(agent);
    if (!id)
      return finish(std::move(id.error()));
    req.id = *id;
    req.call.body = pack(*parts);
    self->call_(peer.address, req, self->opts_.timeout, finish);
  });
}

void replicator::post(clock_type::time_point when, std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> guard{wmtx_};
    if (stop_)
      return;
    tasks_.emplace(when, std::move(fn));
  }
  wcv_.notify_all();
}

void replicator::run_worker() {
  std::unique_lock<std::mutex> guard{wmtx_};
  while (!stop_) {
    if (tasks_.empty()) {
      wcv_.wait(guard);
      continue;
    }
    auto first = tasks_.begin();
    if (first->first > clock_type::now()) {
      wcv_.wait_until(guard, first->first);
      continue;
    }
    auto fn = std::move(first->second);
    tasks_.erase(first);
    guard.unlock();
    fn();
    guard.lock();
  }
}

} // namespace hive
