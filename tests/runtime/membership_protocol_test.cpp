// Deterministic tests of the membership protocol: the node managers of runtime/cluster.cpp
// (joins, gossip, heartbeats, suspicion, leaving) under CAF's test coordinator, several in one
// process, on a virtual clock. Their links are relay actors that model the network between
// them, so a test can lose, hold back (reorder) and cut what travels between two members,
// and kill a member, at exactly the step it chooses.

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "runtime/cluster.hpp"
#include "support/caf_fixture.hpp"

namespace {

using namespace hive;
using namespace std::chrono_literals;

using via_atom = caf::atom_constant<caf::atom("tvia")>;
using twin_atom = caf::atom_constant<caf::atom("ttwin")>;
using release_atom = caf::atom_constant<caf::atom("trelease")>;

/// What a test decides about the messages between two members (by name, one direction).
struct network {
  /// Node managers by cluster address, and their names.
  std::map<std::string, caf::actor> managers;
  std::map<std::string, std::string> names;
  /// Directions whose dials fail (a partition).
  std::set<std::pair<std::string, std::string>> cut;
  /// Whether a message from -> to is lost (what: the message type, e.g. "join_request").
  std::function<bool(const std::string& from, const std::string& to, const std::string& what)>
    lose = [](auto&, auto&, auto&) { return false; };
  /// Whether a message from -> to is held back until `release` (then sent newest first).
  std::function<bool(const std::string& from, const std::string& to, const std::string& what)>
    hold = [](auto&, auto&, auto&) { return false; };
  /// The live relay of each direction.
  std::map<std::pair<std::string, std::string>, caf::actor> links;
  /// Messages lost and held back so far, by type.
  std::map<std::string, size_t> lost;
  std::map<std::string, size_t> held;
};

/// A message's type as the tests name it.
std::string what_of(const caf::message& msg) {
  if (msg.match_element<caf::atom_value>(0)) {
    auto a = msg.get_as<caf::atom_value>(0);
    if (a == caf::atom("hcping"))
      return "ping";
    if (a == caf::atom("hcbye"))
      return "farewell";
    return caf::to_string(a);
  }
  if (msg.match_element<member_gossip>(0))
    return "gossip";
  if (msg.match_element<join_request>(0))
    return "join_request";
  return "other";
}

/// One direction of a link, held by `owner` as its handle for `dest`: it delivers to `dest`
/// as if sent by `twin` (the opposite direction), so `dest` answers through the link too.
/// Requests are made by the twin (CAF routes a response only to the actor that asked).
struct relay_state {
  caf::actor dest;
  caf::actor owner;
  caf::actor twin;
  std::string from;
  std::string to;
  network* net = nullptr;
  std::vector<caf::message> held;
  static inline const char* name = "test.relay";
};

using relay_actor = caf::stateful_actor<relay_state>;

/// Whether `msg` is lost or held on the way; else delivers it.
void pass(relay_actor* self, caf::message msg) {
  auto& st = self->state;
  auto what = what_of(msg);
  if (st.net->lose(st.from, st.to, what)) {
    ++st.net->lost[what];
    return;
  }
  if (st.net->hold(st.from, st.to, what)) {
    ++st.net->held[what];
    st.held.push_back(std::move(msg));
    return;
  }
  st.dest->enqueue(caf::make_mailbox_element(caf::actor_cast<caf::strong_actor_ptr>(st.twin),
                                             caf::make_message_id(), {}, std::move(msg)),
                   self->context());
}

caf::behavior relay_fn(relay_actor* self, caf::actor dest, caf::actor owner, std::string from,
                       std::string to, network* net) {
  auto& st = self->state;
  st.dest = std::move(dest);
  st.owner = std::move(owner);
  st.from = std::move(from);
  st.to = std::move(to);
  st.net = net;
  // Either end gone: the link breaks, and the member holding it sees its peer down.
  self->monitor(st.dest);
  self->monitor(st.owner);
  self->set_down_handler([self](caf::down_msg&) { self->quit(); });
  self->set_default_handler(
    [self](caf::scheduled_actor*, caf::message_view& x) -> caf::result<caf::message> {
      pass(self, x.move_content_to_message());
      return caf::message{};
    });
  return {
    [self](twin_atom, caf::actor& twin) { self->state.twin = std::move(twin); },
    [self](release_atom) {
      auto held = std::move(self->state.held);
      self->state.held.clear();
      std::reverse(held.begin(), held.end()); // newest first: the reordering
      for (auto& m : held)
        self->state.dest->enqueue(
          caf::make_mailbox_element(caf::actor_cast<caf::strong_actor_ptr>(self->state.twin),
                                    caf::make_message_id(), {}, std::move(m)),
          self->context());
    },
    // Requests from the owner: lost, or made by the twin so that `dest` answers it.
    [self](join_request& req) -> caf::result<join_reply> {
      auto& st = self->state;
      if (st.net->lose(st.from, st.to, "join_request")) {
        ++st.net->lost["join_request"];
        return self->make_response_promise<join_reply>(); // never answered: times out
      }
      self->delegate(st.twin, via_atom::value, std::move(req));
      return caf::delegated<join_reply>{};
    },
    [self](via_atom, join_request& req) -> caf::result<join_reply> {
      auto rp = self->make_response_promise<join_reply>();
      self->request(self->state.owner, caf::infinite, std::move(req))
        .then([rp](join_reply& r) mutable { rp.deliver(std::move(r)); },
              [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    [self](caf::atom_value a, member_gossip& g) -> caf::result<bool> {
      auto& st = self->state;
      if (a != caf::atom("hcbye"))
        return caf::make_error(caf::sec::unexpected_message);
      if (st.net->lose(st.from, st.to, "farewell")) {
        ++st.net->lost["farewell"];
        return self->make_response_promise<bool>();
      }
      self->delegate(st.twin, via_atom::value, a, std::move(g));
      return caf::delegated<bool>{};
    },
    [self](via_atom, caf::atom_value a, member_gossip& g) -> caf::result<bool> {
      auto rp = self->make_response_promise<bool>();
      self->request(self->state.owner, caf::infinite, a, std::move(g))
        .then([rp](bool ok) mutable { rp.deliver(ok); },
              [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
  };
}

class membership_protocol_test : public hive::test::caf_fixture {
protected:
  struct node {
    std::string name;
    std::string address;
    uint64_t incarnation = 0;
    std::shared_ptr<cluster::shared_state> shared;
    caf::actor mgr;
  };

  network net;
  std::map<std::string, node> nodes;
  node_config ncfg;

  membership_protocol_test() {
    ncfg.cluster.name = "test";
    ncfg.cluster.heartbeat_interval_ms = 100;
    ncfg.cluster.suspect_after_ms = 300;
    ncfg.cluster.join_retry_ms = 500;
    ncfg.cluster.join_timeout_ms = 5000;
    ncfg.cluster.removed_after_ms = 30000;
  }

  ~membership_protocol_test() override {
    for (auto& [_, n] : nodes)
      if (n.mgr)
        caf::anon_send_exit(n.mgr, caf::exit_reason::kill);
    run();
  }

  /// Dials `address` for the manager of `from`: a pair of relays, or a failure.
  void dial(const std::string& from, const caf::actor& mgr, const std::string& address) {
    auto i = net.managers.find(address);
    auto to = i == net.managers.end() ? std::string{} : net.names[address];
    if (i == net.managers.end() || net.cut.count({from, to}) > 0) {
      cluster_testing::connect_failed(mgr, address, "unreachable (test network)");
      return;
    }
    auto there = sys.spawn(relay_fn, i->second, mgr, from, to, &net);
    auto back = sys.spawn(relay_fn, mgr, i->second, to, from, &net);
    caf::anon_send(there, twin_atom::value, back);
    caf::anon_send(back, twin_atom::value, there);
    net.links[{from, to}] = there;
    net.links[{to, from}] = back;
    cluster_testing::connected(mgr, address, there);
  }

  /// Starts member `name` (a new incarnation if it ran before), seeded by `seeds`.
  void start(const std::string& name, const std::vector<std::string>& seeds = {}) {
    auto& n = nodes[name];
    n.name = name;
    n.address = "10.0.0." + std::to_string(nodes.size()) + ":4000";
    if (auto old = std::find_if(net.names.begin(), net.names.end(),
                                [&](auto& kv) { return kv.second == name; });
        old != net.names.end())
      n.address = old->first;
    ++n.incarnation;
    auto c = ncfg;
    c.node.name = name;
    c.cluster.seeds.clear();
    for (auto& s : seeds)
      c.cluster.seeds += (c.cluster.seeds.empty() ? "" : ",") + nodes.at(s).address;
    n.shared = std::make_shared<cluster::shared_state>();
    n.shared->connector = [this, name](const caf::actor& mgr, const std::string& address) {
      dial(name, mgr, address);
    };
    member_info me;
    me.name = name;
    me.address = n.address;
    me.status = "up";
    me.incarnation = n.incarnation;
    n.mgr = cluster_testing::spawn_manager(sys, n.shared, c, me);
    net.managers[n.address] = n.mgr;
    net.names[n.address] = name;
    cluster_testing::start(n.mgr, n.address);
    run();
  }

  /// Kills member `name`'s manager (kill -9: no goodbye).
  void kill(const std::string& name) {
    caf::anon_send_exit(nodes.at(name).mgr, caf::exit_reason::kill);
    net.managers.erase(nodes.at(name).address);
    run();
  }

  /// Breaks the link between `a` and `b` (both directions) and refuses new dials.
  void partition(const std::string& a, const std::string& b) {
    net.cut.insert({a, b});
    net.cut.insert({b, a});
    for (auto key : {std::make_pair(a, b), std::make_pair(b, a)})
      if (auto i = net.links.find(key); i != net.links.end())
        caf::anon_send_exit(i->second, caf::exit_reason::user_shutdown);
    run();
  }

  void heal(const std::string& a, const std::string& b) {
    net.cut.erase({a, b});
    net.cut.erase({b, a});
  }

  /// Lets `d` of virtual time pass in steps of 10 ms, running everything in between.
  void pass_time(caf::timespan d) {
    for (caf::timespan t{0}; t < d; t += 10ms)
      advance(10ms);
  }

  /// Member `who` as `observer` published it ("" if not listed).
  std::string status(const std::string& observer, const std::string& who) {
    auto& sh = *nodes.at(observer).shared;
    std::lock_guard<std::mutex> guard{sh.mtx};
    for (auto& m : sh.members)
      if (m.name == who)
        return m.status;
    return {};
  }

  uint64_t incarnation(const std::string& observer, const std::string& who) {
    auto& sh = *nodes.at(observer).shared;
    std::lock_guard<std::mutex> guard{sh.mtx};
    for (auto& m : sh.members)
      if (m.name == who)
        return m.incarnation;
    return 0;
  }

  /// Every listed member sees every listed member with `want`.
  bool all_see(const std::vector<std::string>& members, const std::string& want = "up") {
    for (auto& o : members)
      for (auto& w : members)
        if (status(o, w) != want)
          return false;
    return true;
  }

  std::string views() {
    std::string out;
    for (auto& [name, n] : nodes) {
      out += name + ":";
      std::lock_guard<std::mutex> guard{n.shared->mtx};
      for (auto& m : n.shared->members)
        out += " " + m.name + "=" + m.status + "@" + std::to_string(m.incarnation);
      out += "\n";
    }
    return out;
  }

  void form_three() {
    start("n1");
    start("n2", {"n1"});
    start("n3", {"n1"});
    pass_time(100ms);
    ASSERT_TRUE(all_see({"n1", "n2", "n3"})) << views();
  }
};

TEST_F(membership_protocol_test, three_members_join_through_a_seed_and_every_view_shows_all_up) {
  start("n1");
  EXPECT_EQ(status("n1", "n1"), "up"); // no seeds: forms the cluster
  start("n2", {"n1"});
  start("n3", {"n1"});
  // Of two members the smaller name dials: n2 dials n3 once it hears of it from n1.
  pass_time(50ms);
  EXPECT_TRUE(all_see({"n1", "n2", "n3"})) << views();
  EXPECT_TRUE(net.links.count({"n2", "n3"}) > 0) << "n2 never dialled n3";
}

TEST_F(membership_protocol_test, a_seeded_member_is_joining_until_linked_to_every_up_member) {
  start("n1");
  start("n2", {"n1"});
  start("n3", {"n1"});
  pass_time(50ms);
  ASSERT_TRUE(all_see({"n1", "n2", "n3"})) << views();
  // n4 reaches n1, but every dial to n2 fails: it stays joining (calls may reach it, nothing
  // is placed on it) until the join timeout says otherwise.
  net.cut.insert({"n4", "n2"});
  net.cut.insert({"n2", "n4"});
  start("n4", {"n1"});
  pass_time(1s);
  EXPECT_EQ(status("n1", "n4"), "joining") << views();
  EXPECT_EQ(status("n4", "n4"), "joining") << views();
  heal("n2", "n4");
  pass_time(600ms); // n2 < n4: n2 dials on its next tick
  EXPECT_EQ(status("n4", "n4"), "up") << views();
  EXPECT_TRUE(all_see({"n1", "n2", "n3", "n4"})) << views();
}

TEST_F(membership_protocol_test, a_lost_join_request_is_sent_again_after_join_retry_ms) {
  start("n1");
  // Its start dials the seed, and its first tick (at once, while it has no link) dials again:
  // both join requests are lost.
  int first = 2;
  net.lose = [&](auto& from, auto&, auto& what) {
    return from == "n2" && what == "join_request" && first-- > 0;
  };
  start("n2", {"n1"});
  pass_time(400ms);
  EXPECT_EQ(net.lost["join_request"], 2u);
  EXPECT_EQ(status("n1", "n2"), "") << "n1 heard of n2 although its join was lost\n" << views();
  EXPECT_EQ(status("n2", "n2"), "joining") << views();
  // While it has no link, n2 dials its seeds again every cluster.join_retry_ms (500).
  pass_time(200ms);
  EXPECT_TRUE(all_see({"n1", "n2"})) << views();
  EXPECT_EQ(net.lost["join_request"], 2u);
}

TEST_F(membership_protocol_test, a_seed_that_fails_at_first_is_dialled_again_before_forming_alone) {
  start("n1");
  // Every dial from n2 to its seed fails at first (a seed starting late, a broken connection).
  net.cut.insert({"n2", "n1"});
  start("n2", {"n1"});
  pass_time(600ms);
  // Still joining: it forms a cluster of its own only after cluster.seed_wait_ms (1 s).
  EXPECT_EQ(status("n2", "n2"), "joining") << views();
  EXPECT_EQ(status("n1", "n2"), "") << views();
  heal("n2", "n1");
  pass_time(500ms); // its next dial (every cluster.join_retry_ms, 500) gets through
  EXPECT_TRUE(all_see({"n1", "n2"})) << views();
}

TEST_F(membership_protocol_test,
       a_node_whose_seed_never_answers_forms_a_cluster_after_seed_wait_ms) {
  ncfg.cluster.seed_wait_ms = 2000;
  start("n1");
  net.cut.insert({"n2", "n1"});
  start("n2", {"n1"});
  pass_time(1900ms);
  EXPECT_EQ(status("n2", "n2"), "joining") << "formed a cluster before seed_wait_ms\n" << views();
  pass_time(700ms); // the tick after 2 s (ticks every 500 ms) finds the wait over
  EXPECT_EQ(status("n2", "n2"), "up") << views();
  EXPECT_EQ(status("n1", "n2"), "") << views();
  // It keeps dialling its seed while alone: once reachable, the two clusters merge.
  heal("n2", "n1");
  pass_time(600ms);
  EXPECT_TRUE(all_see({"n1", "n2"})) << views();
}

TEST_F(membership_protocol_test, lost_heartbeats_make_a_member_suspect_and_a_heartbeat_clears_it) {
  form_three();
  bool silent = true;
  net.lose = [&](auto& from, auto& to, auto& what) {
    return silent && from == "n3" && to == "n1" && what == "ping";
  };
  pass_time(250ms);
  EXPECT_EQ(status("n1", "n3"), "up") << "suspect before cluster.suspect_after_ms\n" << views();
  pass_time(200ms);
  EXPECT_EQ(status("n1", "n3"), "suspect") << views();
  EXPECT_EQ(status("n2", "n3"), "up") << "suspicion is n1's own view\n" << views();
  EXPECT_GT(net.lost["ping"], 0u);
  silent = false;
  pass_time(150ms);
  EXPECT_EQ(status("n1", "n3"), "up") << views();
}

TEST_F(membership_protocol_test, a_lost_gossip_still_reaches_a_member_through_another) {
  form_three();
  // n3 leaves (stage 1: still serving); its gossip to n1 is lost, n2 passes the news on.
  net.lose = [&](auto& from, auto& to, auto& what) {
    return from == "n3" && to == "n1" && what == "gossip";
  };
  cluster_testing::leave(nodes.at("n3").mgr, false);
  run();
  EXPECT_GE(net.lost["gossip"], 1u);
  EXPECT_EQ(status("n2", "n3"), "leaving") << views();
  EXPECT_EQ(status("n1", "n3"), "leaving") << views();
}

TEST_F(membership_protocol_test, a_stale_down_arriving_after_a_rejoin_does_not_undo_it) {
  form_three();
  // Gossip from n2 to n1 is held back from here on.
  bool holding = true;
  net.hold = [&](auto& from, auto& to, auto& what) {
    return holding && from == "n2" && to == "n1" && what == "gossip";
  };
  kill("n3");
  EXPECT_EQ(status("n1", "n3"), "down") << views();
  EXPECT_EQ(status("n2", "n3"), "down") << views();
  auto old = incarnation("n1", "n3");
  // n3 restarts (a new incarnation) and rejoins through n1 ...
  start("n3", {"n1"});
  pass_time(100ms);
  ASSERT_EQ(status("n1", "n3"), "up") << views();
  ASSERT_GT(incarnation("n1", "n3"), old);
  // ... and only now do n2's old words reach n1 ("n3 down", the old incarnation), newest first.
  ASSERT_GE(net.held["gossip"], 1u) << "n2 said nothing to n1 meanwhile: nothing to reorder";
  holding = false;
  caf::anon_send(net.links.at({"n2", "n1"}), release_atom::value);
  run();
  pass_time(100ms);
  EXPECT_EQ(status("n1", "n3"), "up") << views();
  EXPECT_GT(incarnation("n1", "n3"), old) << views();
  EXPECT_TRUE(all_see({"n1", "n2", "n3"})) << views();
}

TEST_F(membership_protocol_test, a_killed_member_is_down_at_once_and_then_removed) {
  form_three();
  kill("n3");
  EXPECT_EQ(status("n1", "n3"), "down") << views();
  EXPECT_EQ(status("n2", "n3"), "down") << views();
  // Removed after cluster.removed_after_ms (30 s), forgotten after that long again.
  pass_time(31s);
  EXPECT_EQ(status("n1", "n3"), "removed") << views();
  pass_time(31s);
  EXPECT_EQ(status("n1", "n3"), "") << views();
  EXPECT_TRUE(all_see({"n1", "n2"})) << views();
}

TEST_F(membership_protocol_test, a_member_that_leaves_is_leaving_then_removed_never_down) {
  form_three();
  cluster_testing::leave(nodes.at("n3").mgr, false);
  run();
  EXPECT_EQ(status("n1", "n3"), "leaving") << views();
  EXPECT_EQ(status("n2", "n3"), "leaving") << views();
  cluster_testing::leave(nodes.at("n3").mgr, true); // farewell to each, answered, then quit
  run();
  EXPECT_EQ(status("n1", "n3"), "removed") << views();
  EXPECT_EQ(status("n2", "n3"), "removed") << views();
}

TEST_F(membership_protocol_test, a_lost_farewell_still_ends_in_removed_once_the_link_closes) {
  form_three();
  cluster_testing::leave(nodes.at("n3").mgr, false);
  run();
  net.lose = [&](auto& from, auto& to, auto& what) {
    return from == "n3" && to == "n1" && what == "farewell";
  };
  cluster_testing::leave(nodes.at("n3").mgr, true);
  run();
  pass_time(1100ms); // n3 waits at most 1 s for the farewell it lost, then quits anyway
  EXPECT_EQ(net.lost["farewell"], 1u);
  EXPECT_EQ(status("n1", "n3"), "removed") << views();
  EXPECT_EQ(status("n2", "n3"), "removed") << views();
}

TEST_F(membership_protocol_test,
       a_cut_link_is_down_on_both_sides_and_heals_at_the_same_incarnation) {
  form_three();
  auto inc = incarnation("n1", "n3");
  partition("n1", "n3");
  EXPECT_EQ(status("n1", "n3"), "down") << views();
  EXPECT_EQ(status("n3", "n1"), "down") << views();
  EXPECT_EQ(status("n2", "n3"), "up") << "n2 has a live link to n3: it believes that\n" << views();
  heal("n1", "n3");
  pass_time(600ms); // n1 < n3: n1 dials on its next tick
  EXPECT_TRUE(all_see({"n1", "n2", "n3"})) << views();
  EXPECT_EQ(incarnation("n1", "n3"), inc);
}

} // namespace
