// Durable workflows on real agent-node processes (issue #7, actors/planner.hpp): the HTTP API
// (POST /v1/workflows, GET /v1/workflows/{id}, pause/resume/cancel, clear 400s), and a kill -9
// of the node hosting the planner mid-workflow: a survivor takes the workflow over and it
// completes, each step's effect counted exactly once by journaled sink agents.

#include <chrono>
#include <csignal>
#include <iostream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/test_cluster.hpp"

using namespace hive::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

class workflow_test : public cluster_test {
protected:
  std::optional<http_response> call(size_t via, const std::string& method,
                                    const std::string& target, const std::string& body = {}) {
    http_client http{nodes[via].proc->gateway_port};
    return http.request(method, target, body);
  }

  /// Spawns a counter offering capability "counting" on `node`.
  void spawn_sink(size_t via, const std::string& id, const std::string& node) {
    auto r = call(
      via, "POST", "/v1/agents",
      json{{"id", id}, {"kind", "counter"}, {"node", node}, {"capabilities", {"counting"}}}.dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << r->body;
  }

  json status(size_t via, const std::string& wf) {
    auto r = call(via, "GET", "/v1/workflows/" + wf);
    if (!r || r->status != 200)
      return json{{"status", r ? "http " + std::to_string(r->status) + " " + r->body : "none"}};
    return json::parse(r->body, nullptr, false);
  }
};

TEST_F(workflow_test, the_http_api_starts_inspects_pauses_and_cancels_workflows) {
  add("n1");
  start(0, 0);
  auto r =
    call(0, "POST", "/v1/agents",
         json{{"id", "acme/sink"}, {"kind", "counter"}, {"capabilities", {"counting"}}}.dump());
  ASSERT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
  // A cycle is a 400 naming it.
  json cyc{{"id", "acme/bad"},
           {"steps",
            {{{"id", "a"}, {"capability", "counting"}, {"depends_on", {"b"}}},
             {{"id", "b"}, {"capability", "counting"}, {"depends_on", {"a"}}}}}};
  r = call(0, "POST", "/v1/workflows", cyc.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("cycle"), std::string::npos) << r->body;
  r = call(0, "POST", "/v1/workflows", R"({"steps":"no"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  // A two-step workflow.
  json wf{{"id", "acme/two"},
          {"steps",
           {{{"id", "a"}, {"capability", "counting"}, {"input", {{"op", "add"}, {"by", 2}}}},
            {{"id", "b"},
             {"capability", "counting"},
             {"depends_on", {"a"}},
             {"input", {{"op", "add"}, {"by", "${a.output.value}"}}}}}}};
  r = call(0, "POST", "/v1/workflows", wf.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  auto id = json::parse(r->body)["id"].get<std::string>();
  EXPECT_EQ(id, "acme/two");
  EXPECT_EQ(r->headers["location"], "/v1/workflows/acme/two");
  json st;
  ASSERT_TRUE(within(20s,
                     [&] {
                       st = status(0, id);
                       return st["status"] == "succeeded";
                     }))
    << st.dump();
  EXPECT_EQ(st["steps"][1]["output"]["value"], 4);
  // Pause / resume / cancel, and the 404 of an unknown operation.
  json slow{{"id", "acme/slow"},
            {"steps",
             {{{"id", "a"},
               {"capability", "nobody"},
               {"retries", 50},
               {"backoff_ms", 200},
               {"backoff_max_ms", 200}}}}};
  r = call(0, "POST", "/v1/workflows", slow.dump());
  ASSERT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
  r = call(0, "POST", "/v1/workflows/acme/slow/pause");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["status"], "paused");
  EXPECT_EQ(status(0, "acme/slow")["status"], "paused");
  r = call(0, "POST", "/v1/workflows/acme/slow/resume");
  ASSERT_TRUE(r && r->status == 200);
  r = call(0, "POST", "/v1/workflows/acme/slow/cancel");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_EQ(status(0, "acme/slow")["status"], "cancelled");
  r = call(0, "POST", "/v1/workflows/acme/slow/resume");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;
  r = call(0, "POST", "/v1/workflows/acme/slow/explode");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404) << r->body;
  // Survives a restart of the node (the workflow's record and its result).
  nodes[0].proc->signal(SIGKILL);
  ASSERT_TRUE(nodes[0].proc->wait_exit(10s));
  start(0, 0);
  EXPECT_EQ(status(0, id)["status"], "succeeded");
}

TEST_F(workflow_test, kill_9_of_the_planners_node_mid_workflow_the_workflow_completes_once) {
  form_three();
  spawn_sink(0, "acme/sink1", "n1");
  spawn_sink(0, "acme/sink2", "n2");
  spawn_sink(0, "acme/sink3", "n3");
  // A chain of slow steps (each first finds no provider of "nobody", waits 250 ms, then falls
  // back to "counting"), and a fan-out of 20 adds in the middle of it.
  json steps = json::array();
  const int chain = 10;
  const int fan = 20;
  for (int i = 0; i < chain; ++i) {
    // Attempt 1 finds nobody, attempt 2 (250 ms later) too, then the fallback runs it.
    json s{{"id", "c" + std::to_string(i)},
           {"capability", "nobody"},
           {"retries", 1},
           {"backoff_ms", 250},
           {"on_failure", "fallback"},
           {"fallback", "counting"},
           {"input", {{"op", "add"}, {"by", 1}}}};
    if (i > 0)
      s["depends_on"] = {"c" + std::to_string(i - 1)};
    steps.push_back(s);
  }
  for (int i = 0; i < fan; ++i)
    steps.push_back({{"id", "f" + std::to_string(i)},
                     {"capability", "counting"},
                     {"depends_on", {"c3"}},
                     {"input", {{"op", "add"}, {"by", 1}}}});
  auto r = call(0, "POST", "/v1/workflows", json{{"id", "acme/wf"}, {"steps", steps}}.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  auto host = json::parse(r->body)["node"].get<std::string>();
  size_t victim = host == "n1" ? 0 : host == "n2" ? 1 : 2;
  size_t survivor = victim == 0 ? 1 : 0;
  // Kill it once a few steps are done and others run.
  json st;
  ASSERT_TRUE(within(20s,
                     [&] {
                       st = status(victim, "acme/wf");
                       if (!st.contains("steps"))
                         return false;
                       int done = 0;
                       for (auto& s : st["steps"])
                         done += s["status"] == "done";
                       return done >= 3;
                     }))
    << st.dump();
  std::cout << "kill -9 " << host << " (the planner's node) mid-workflow" << std::endl;
  nodes[victim].proc->signal(SIGKILL);
  ASSERT_TRUE(nodes[victim].proc->wait_exit(10s));
  // Nobody calls the planner now: the survivor first in line takes the workflow over by
  // itself (a resident kind) and carries it on. Only the sinks are read until all is done.
  auto sum = [&] {
    int total = 0;
    for (auto& id : {"acme/sink1", "acme/sink2", "acme/sink3"}) {
      http_client http{nodes[survivor].proc->gateway_port};
      auto a = http.request("POST", std::string{"/v1/agents/"} + id + "/ask", R"({"op":"get"})");
      if (!a || a->status != 200)
        return -1; // (the dead node's sink fails over on this call)
      total += json::parse(a->body)["value"].get<int>();
    }
    return total;
  };
  int total = -1;
  auto finished = within(60s, [&] {
    total = sum();
    return total >= chain + fan;
  });
  ASSERT_TRUE(finished) << "sinks count " << total << "\n" << log_tails(4000);
  std::cout << "every step's effect was counted " << finished->count() << " ms after the kill"
            << std::endl;
  std::this_thread::sleep_for(500ms);
  total = sum();
  st = status(survivor, "acme/wf");
  EXPECT_EQ(st["status"], "succeeded") << st.dump();
  EXPECT_EQ(total, chain + fan) << "every step's effect exactly once";
}

} // namespace
