// Replicated journals on real agent-node processes (issue #5, runtime/replication.hpp): an
// acknowledged write survives kill -9 of the agent's node and a survivor serves the agent; a
// node cut off from the majority acknowledges no writes and serves no reads; a frozen host
// that wakes up after a survivor took over is fenced or stands down (its write refused, its
// activation stopped) instead of committing beside the new one, and serves no stale read;
// replica sets that take in new members (others removed for good) get copies made.

#include <algorithm>
#include <chrono>
#include <csignal>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/cluster.hpp"
#include "support/test_cluster.hpp"

using namespace hive::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

class failover_test : public cluster_test {
protected:
  /// POST .../ask with an Idempotency-Key; the response (status 0: no answer).
  http_response keyed_add(size_t via, const std::string& id, const std::string& key, int by = 1) {
    http_client http{nodes[via].proc->gateway_port};
    auto r =
      http.request("POST", "/v1/agents/" + id + "/ask",
                   R"({"op":"add","by":)" + std::to_string(by) + "}", {{"Idempotency-Key", key}});
    return r ? *r : http_response{};
  }

  http_response get(size_t via, const std::string& id) {
    http_client http{nodes[via].proc->gateway_port};
    auto r = http.request("POST", "/v1/agents/" + id + "/ask", R"({"op":"get"})");
    return r ? *r : http_response{};
  }

  static int value_of(const http_response& r) {
    if (r.status != 200)
      return -1;
    auto j = json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("value") ? j["value"].get<int>() : -1;
  }

  void kill9(size_t i) {
    nodes[i].proc->signal(SIGKILL);
    ASSERT_TRUE(nodes[i].proc->wait_exit(10s));
  }
};

} // namespace

TEST_F(failover_test, an_acknowledged_write_survives_kill_9_of_its_node_and_a_survivor_serves_it) {
  form_three();
  spawn_agent(0, "acme/f", "counter", "n1");
  for (int i = 1; i <= 20; ++i)
    ASSERT_EQ(value_of(keyed_add(1, "acme/f", "cl:" + std::to_string(i))), i);
  auto t0 = std::chrono::steady_clock::now();
  kill9(0);
  // A survivor activates it from its replica with every acknowledged increment.
  int seen = -1;
  auto took = within(15s, [&] {
    seen = value_of(get(1, "acme/f"));
    return seen >= 0;
  });
  ASSERT_TRUE(took) << "no survivor served acme/f\n" << log_tails(6000);
  EXPECT_EQ(seen, 20);
  std::cout << "failover: kill -9 to the first answer from a survivor took "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - t0)
                 .count()
            << " ms" << std::endl;
  auto logs = read_file(nodes[1].log) + read_file(nodes[2].log);
  EXPECT_NE(logs.find(R"("event":"agent_failover")"), std::string::npos) << log_tails(6000);
  // A retry of the last acknowledged command gets its original reply, through the other
  // survivor: the de-duplication window survived with the state.
  EXPECT_EQ(value_of(keyed_add(2, "acme/f", "cl:20")), 20);
  EXPECT_EQ(value_of(keyed_add(2, "acme/f", "cl:21")), 21);
  // The old host comes back: it does not serve its stale copy; whichever node has the agent
  // now, every gateway sees one history.
  start(0, nodes[1].proc->cluster_port);
  http_response last;
  auto back = within(15s, [&] {
    last = keyed_add(0, "acme/f", "cl:22");
    return value_of(last) == 22;
  });
  ASSERT_TRUE(back) << last.status << " " << last.body << "\n" << log_tails(6000);
  for (size_t via = 0; via < 3; ++via)
    EXPECT_EQ(value_of(get(via, "acme/f")), 22) << "through " << nodes[via].name;
}

TEST_F(failover_test, a_node_cut_off_from_the_majority_acknowledges_no_writes_and_serves_no_reads) {
  form_three();
  spawn_agent(0, "acme/m", "counter", "n1");
  ASSERT_EQ(value_of(keyed_add(0, "acme/m", "m:1", 5)), 5);
  kill9(1);
  kill9(2);
  ASSERT_TRUE(within(10s, [&] { return all_see({0}, "n2", "down") && all_see({0}, "n3", "down"); }))
    << json(view(0)).dump();
  auto w = keyed_add(0, "acme/m", "m:2");
  EXPECT_EQ(w.status, 503) << w.body;
  EXPECT_NE(w.body.find("no_quorum"), std::string::npos) << w.body;
  auto r = get(0, "acme/m");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("no_quorum"), std::string::npos) << r.body;
  // One member back makes a majority again: the refused write may or may not have taken
  // effect (the client was told so), a retry with its key applies it at most once.
  start(1, nodes[0].proc->cluster_port);
  int v = -1;
  ASSERT_TRUE(within(15s,
                     [&] {
                       v = value_of(keyed_add(0, "acme/m", "m:2"));
                       return v >= 0;
                     }))
    << log_tails(6000);
  EXPECT_EQ(v, 6);
  EXPECT_EQ(value_of(get(1, "acme/m")), 6);
}

TEST_F(failover_test, a_frozen_host_that_wakes_up_after_a_takeover_is_fenced) {
  form_three();
  spawn_agent(0, "acme/z", "counter", "n1");
  ASSERT_EQ(value_of(keyed_add(0, "acme/z", "z:1", 10)), 10);
  spawn_agent(0, "acme/r", "counter", "n1");
  ASSERT_EQ(value_of(keyed_add(0, "acme/r", "r:1", 10)), 10);
  ASSERT_TRUE(nodes[0].proc->freeze()) << "n1 did not stop";
  ASSERT_TRUE(within(10s, [&] { return all_see({1, 2}, "n1", "down"); }));
  int v = -1;
  ASSERT_TRUE(within(15s,
                     [&] {
                       v = value_of(keyed_add(1, "acme/z", "z:2"));
                       return v >= 0;
                     }))
    << log_tails(6000);
  EXPECT_EQ(v, 11);
  ASSERT_TRUE(within(15s, [&] { return value_of(keyed_add(2, "acme/r", "r:2")) == 11; }));
  // n1 wakes up; its old activation of acme/r was idle past its read lease: a read through
  // n1 asks the majority first and does not serve the stale 10.
  nodes[0].proc->signal(SIGCONT);
  auto read = get(0, "acme/r");
  EXPECT_NE(value_of(read), 10) << "a stale read was served as fresh: " << read.body;
  ASSERT_TRUE(within(15s, [&] { return value_of(get(0, "acme/r")) == 11; }))
    << get(0, "acme/r").body << "\n"
    << log_tails(6000);
  // Its old activation of acme/z still runs; a write through n1's own gateway goes to it. Depending
  // on whether n1 already sees that it lost the others, the replicas (which promised the survivor's
  // newer epoch) refuse it (fenced), or it finds no majority (stood down): either way the old
  // activation ends without committing.
  auto stale = keyed_add(0, "acme/z", "z:3");
  EXPECT_NE(value_of(stale), 11) << "the stale activation committed beside the new one";
  EXPECT_TRUE(within(10s,
                     [&] {
                       auto log = read_file(nodes[0].log);
                       return log.find(R"("event":"agent_fenced")") != std::string::npos
                         || log.find(R"("event":"agent_stood_down")") != std::string::npos;
                     }))
    << stale.status << " " << stale.body << "\n"
    << log_tails(6000);
  // The write was not acknowledged (or went through the new activation): retried with its
  // key, it applies once, and every gateway sees one history.
  ASSERT_TRUE(within(15s,
                     [&] {
                       v = value_of(keyed_add(0, "acme/z", "z:3"));
                       return v >= 0;
                     }))
    << log_tails(6000);
  EXPECT_EQ(v, 12);
  for (size_t via = 0; via < 3; ++via) {
    auto r = get(via, "acme/z");
    EXPECT_EQ(value_of(r), 12) << "through " << nodes[via].name << ": " << r.status << " " << r.body
                               << "\n"
                               << log_tails(6000);
  }
}

TEST_F(failover_test, replica_sets_that_gain_members_get_copies_made_in_the_background) {
  // Five nodes, replication factor 3. The agent's set is the first three of its rendezvous
  // order; two of them are killed and removed for good (one after the other), so the set
  // takes in the two others. Nothing is written meanwhile: only the background repair can
  // give them copies. Then the host dies too, and the two new members must serve the state.
  ASSERT_NO_FATAL_FAILURE(
    form({"n1", "n2", "n3", "n4", "n5"}, {"--set", "cluster.removed_after_ms=300"}, 20s));
  const std::string id = "acme/kept";
  std::vector<size_t> order{0, 1, 2, 3, 4};
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return hive::rendezvous_score(nodes[a].name, id) > hive::rendezvous_score(nodes[b].name, id);
  });
  spawn_agent(order[3], id, "counter", nodes[order[0]].name);
  ASSERT_EQ(value_of(keyed_add(order[3], id, "k:1", 7)), 7);
  std::set<size_t> dead;
  auto gone = [&](size_t victim) {
    kill9(victim);
    dead.insert(victim);
    std::vector<size_t> others;
    for (size_t i = 0; i < 5; ++i)
      if (dead.count(i) == 0)
        others.push_back(i);
    return within(15s, [&] {
      for (auto o : others) {
        auto v = view(o);
        auto e = v.find(nodes[victim].name);
        if (e != v.end() && e->second["status"] != "removed")
          return false;
      }
      return true;
    });
  };
  ASSERT_TRUE(gone(order[1]));
  std::this_thread::sleep_for(2500ms); // the host checks and repairs the set's new member
  ASSERT_TRUE(gone(order[2]));
  std::this_thread::sleep_for(2500ms);
  auto logs = read_file(nodes[order[0]].log);
  EXPECT_NE(logs.find(R"("event":"replica_checks_scheduled")"), std::string::npos);
  kill9(order[0]);
  int v = -1;
  ASSERT_TRUE(within(15s,
                     [&] {
                       v = value_of(get(order[3], id));
                       return v >= 0;
                     }))
    << get(order[3], id).body << "\n"
    << log_tails(4000);
  EXPECT_EQ(v, 7) << "the copies made in the background lost the acknowledged write";
}
