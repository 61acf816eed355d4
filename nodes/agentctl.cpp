// agentctl: the admin command line of hive. One subcommand per task; each parses its own flags,
// runs, prints one human-readable result line on stdout (errors on stderr) and exits 0 on
// success, 1 when the task failed (node unreachable, HTTP error, bad backup, ...) and 2 for a
// bad command line.
//
// Credentials: every request carries `Authorization: Bearer <token>`, the token taken from
// `--token`, else the file of `--token-file`, else $HIVE_TOKEN, else the file named by
// $HIVE_TOKEN_FILE (an API key or a JWT; `agent-node` prints its generated admin key once).
//
// The gateway: `--url URL`, else $HIVE_URL, else http://127.0.0.1:8080 (the older
// subcommands also take `--node URL`). `--json` prints the node's JSON answers as they are.
// Exit codes: 0 done; 1 the task failed (node unreachable, HTTP error such as 401/403/404,
// bad backup); 2 bad command line (unknown subcommand, bad flag, bad agent id or JSON).
//
// Subcommands today:
//   agentctl agents [--tenant T] [--kind K] [--node NAME] [--max N]
//   agentctl inspect TENANT/NAME
//   agentctl spawn TENANT/NAME --kind K [--config JSON] [--restart R] [--on NODE] [--breaker]
//   agentctl tell TENANT/NAME JSON
//   agentctl ask TENANT/NAME JSON [--timeout-ms N]
//   agentctl stop TENANT/NAME
//   agentctl backup --to /abs/dir [--node http://127.0.0.1:8080] [--timeout-ms N]
//   agentctl keys create --role admin|operator|viewer --name NAME [--tenant T]
//   agentctl keys list [--tenant T]
//   agentctl keys revoke ID
//   agentctl restore --from BACKUP_DIR --data-dir NEW_DATA_DIR
//   agentctl migrate TENANT/NAME --to NODE [--node http://127.0.0.1:8080]
//   agentctl nodes [--node http://127.0.0.1:8080]
// To add one: write an `add_<name>(CLI::App&)` that registers the subcommand and returns its
// `command`, and list it in `main`.

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "protocols/agent_id.hpp"
#include "protocols/errc.hpp"
#include "storage/data_dir.hpp"
#include "storage/store.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

/// Exit codes of every subcommand.
constexpr int exit_ok = 0;
constexpr int exit_failed = 1;
constexpr int exit_usage = 2;

/// Largest response body agentctl reads from a node.
constexpr uint64_t response_bytes_max = 8 << 20;

int fail(int code, const std::string& what) {
  std::cerr << "agentctl: error: " << what << std::endl;
  return code;
}

/// The bearer credential sent with every request (empty: none).
std::string bearer_token;

/// The gateway talked to: `--url`, else $HIVE_URL, else http://127.0.0.1:8080 (a subcommand's
/// own `--node URL` wins over it).
std::string gateway_url = "http://127.0.0.1:8080";

/// `--json`: print the node's JSON answer as it is instead of a table or a summary.
bool json_output = false;

/// Reads a token file: its contents without surrounding whitespace.
caf::expected<std::string> read_token_file(const std::string& path, const std::string& what) {
  std::ifstream in{path};
  if (!in)
    return hive::make_error(hive::errc::invalid_argument, what + " '" + path + "' cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  auto text = ss.str();
  auto first = text.find_first_not_of(" \t\r\n");
  auto last = text.find_last_not_of(" \t\r\n");
  if (first == std::string::npos)
    return hive::make_error(hive::errc::invalid_argument, what + " '" + path + "' is empty");
  return text.substr(first, last - first + 1);
}

// -- HTTP to a node ---------------------------------------------------------------------------

/// A node address `http://HOST[:PORT]` (no path).
struct node_url {
  std::string host;
  std::string port;

  [[nodiscard]] std::string str() const {
    return "http://" + host + ":" + port;
  }
};

/// Parses `http://HOST[:PORT][/]`; the port defaults to 80.
caf::expected<node_url> parse_node_url(std::string text) {
  auto bad = [&](const std::string& why) {
    return hive::make_error(hive::errc::invalid_argument,
                            "--node '" + text + "' must be http://HOST[:PORT] (" + why + ")");
  };
  const std::string scheme = "http://";
  if (text.rfind(scheme, 0) != 0)
    return bad("only http:// is supported");
  auto rest = text.substr(scheme.size());
  if (!rest.empty() && rest.back() == '/')
    rest.pop_back();
  if (rest.empty())
    return bad("no host");
  if (rest.find('/') != std::string::npos)
    return bad("no path allowed");
  node_url url;
  auto colon = rest.rfind(':');
  if (colon == std::string::npos) {
    url.host = rest;
    url.port = "80";
  } else {
    url.host = rest.substr(0, colon);
    url.port = rest.substr(colon + 1);
    if (url.host.empty())
      return bad("no host");
    if (url.port.empty() || url.port.size() > 5
        || url.port.find_first_not_of("0123456789") != std::string::npos || std::stoi(url.port) < 1
        || std::stoi(url.port) > 65535)
      return bad("port must be 1..65535");
  }
  return url;
}

/// What a node answered.
struct http_reply {
  int status = 0;
  std::string body;
};

/// Sends one request to `node` and reads the reply; the whole exchange (connect, write, read)
/// must finish within `timeout`. Errors, naming the node and the step: io_error, timeout.
caf::expected<http_reply> http_call(const node_url& node, http::verb verb,
                                    const std::string& target, const std::string& body,
                                    milliseconds timeout) {
  asio::io_context ioc;
  beast::error_code ec;
  tcp::resolver resolver{ioc};
  auto endpoints = resolver.resolve(node.host, node.port, ec);
  if (ec)
    return hive::make_error(hive::errc::io_error,
                            "cannot resolve " + node.host + ": " + ec.message());
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, node.host);
  req.set(http::field::user_agent, "agentctl");
  req.set(http::field::connection, "close");
  if (!bearer_token.empty())
    req.set(http::field::authorization, "Bearer " + bearer_token);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(response_bytes_max);
  std::string step = "connect";
  beast::error_code result;
  // The deadline covers every operation started below (Beast's tcp_stream closes the socket
  // when it passes, and the pending operation completes with beast::error::timeout).
  stream.expires_after(timeout);
  stream.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) {
    if (e) {
      result = e;
      return;
    }
    step = "send";
    http::async_write(stream, req, [&](beast::error_code e, size_t) {
      if (e) {
        result = e;
        return;
      }
      step = "receive";
      http::async_read(stream, buf, parser, [&](beast::error_code e, size_t) { result = e; });
    });
  });
  ioc.run();
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  if (result == beast::error::timeout)
    return hive::make_error(hive::errc::timeout,
                            "no reply from node " + node.str() + " within "
                              + std::to_string(timeout.count()) + " ms (" + step + ")");
  if (result)
    return hive::make_error(hive::errc::io_error,
                            "cannot reach node " + node.str() + " (" + step
                              + "): " + result.message());
  auto& res = parser.get();
  return http_reply{static_cast<int>(res.result_int()), std::move(res.body())};
}

/// Describes an error reply: `HTTP 400 invalid_argument: message` from the gateway's
/// `{"error":{"code":..,"message":..}}`, or the raw body if it is not one.
std::string describe_reply(const http_reply& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  std::string out = "HTTP " + std::to_string(r.status);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    auto& e = j["error"];
    if (e.contains("code") && e["code"].is_string())
      out += " " + e["code"].get<std::string>();
    if (e.contains("message") && e["message"].is_string())
      out += ": " + e["message"].get<std::string>();
    return out;
  }
  return out + ": " + r.body.substr(0, 500);
}

// -- subcommands ------------------------------------------------------------------------------

/// One registered subcommand: its CLI11 app and what runs when it was chosen.
struct command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

/// `backup`: an online backup (RocksDB checkpoint) of a running node's store.
command add_backup(CLI::App& parent) {
  struct options {
    std::string to;
    std::string node;
    int64_t timeout_ms = 120000;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand(
    "backup",
    "Write an online, consistent backup of a running node's store to a new directory "
    "on the node's machine (POST /v1/admin/backup)");
  app->add_option("--to", opts->to, "Backup directory: an absolute path that does not exist yet")
    ->required();
  app->add_option("--node", opts->node, "The node's gateway, http://HOST[:PORT] (default: --url)");
  app->add_option("--timeout-ms", opts->timeout_ms, "Longest wait for the node's reply")
    ->check(CLI::Range(int64_t{1}, int64_t{86400000}))
    ->capture_default_str();
  return {
    app, [opts] {
      if (opts->to.empty() || opts->to.front() != '/')
        return fail(exit_usage,
                    "--to '" + opts->to + "' must be an absolute path (on the node's machine)");
      auto url = parse_node_url(opts->node.empty() ? gateway_url : opts->node);
      if (!url)
        return fail(exit_usage, hive::message_of(url.error()));
      auto reply =
        http_call(*url, http::verb::post, "/v1/admin/backup",
                  nlohmann::json{{"to", opts->to}}.dump(), milliseconds{opts->timeout_ms});
      if (!reply)
        return fail(exit_failed, "backup: " + hive::message_of(reply.error()));
      if (reply->status != 200)
        return fail(exit_failed,
                    "backup to " + opts->to + " refused by node " + url->str() + ": "
                      + describe_reply(*reply));
      auto j = nlohmann::json::parse(reply->body, nullptr, false);
      if (!j.is_object() || !j.contains("backup") || !j["backup"].is_string())
        return fail(exit_failed,
                    "backup: unexpected reply from node " + url->str() + ": "
                      + reply->body.substr(0, 500));
      std::cout << "backup of " << url->str() << " written to " << j["backup"].get<std::string>();
      if (j.contains("elapsed_ms") && j["elapsed_ms"].is_number())
        std::cout << " in " << j["elapsed_ms"].dump() << " ms";
      std::cout << std::endl;
      return exit_ok;
    }};
}

/// `migrate`: moves an agent live to another cluster member.
command add_migrate(CLI::App& parent) {
  struct options {
    std::string id;
    std::string to;
    std::string node;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand(
    "migrate", "Move a persisted agent live to another node (POST /v1/agents/{id}/migrate)");
  app->add_option("id", opts->id, "The agent, TENANT/NAME")->required();
  app->add_option("--to", opts->to, "The node to move it to (a member's node.name)")->required();
  app->add_option("--node", opts->node, "Any node's gateway, http://HOST[:PORT] (default: --url)");
  return {app, [opts] {
            auto id = hive::parse_agent_id(opts->id);
            if (!id)
              return fail(exit_usage, "agent id: " + hive::message_of(id.error()));
            auto url = parse_node_url(opts->node.empty() ? gateway_url : opts->node);
            if (!url)
              return fail(exit_usage, hive::message_of(url.error()));
            auto reply = http_call(*url, http::verb::post, "/v1/agents/" + id->str() + "/migrate",
                                   nlohmann::json{{"to", opts->to}}.dump(), milliseconds{60000});
            if (!reply)
              return fail(exit_failed, "migrate: " + hive::message_of(reply.error()));
            if (reply->status != 200)
              return fail(exit_failed,
                          "migrate " + id->str() + " to " + opts->to
                            + " refused: " + describe_reply(*reply));
            auto j = nlohmann::json::parse(reply->body, nullptr, false);
            if (!j.is_object())
              return fail(exit_failed, "migrate: unexpected reply " + reply->body.substr(0, 500));
            if (!j.value("moved", false))
              std::cout << id->str() << " already is on " << j.value("to", opts->to) << std::endl;
            else
              std::cout << id->str() << " moved from " << j.value("from", "?") << " to "
                        << j.value("to", "?") << ", pause " << j.value("pause_ms", 0.0) << " ms, "
                        << j.value("state_bytes", 0) << " bytes of state" << std::endl;
            return exit_ok;
          }};
}

/// `nodes`: the cluster's members as one node sees them.
command add_nodes(CLI::App& parent) {
  auto node = std::make_shared<std::string>();
  auto* app = parent.add_subcommand("nodes", "List the cluster's members (GET /v1/cluster/nodes)");
  app->add_option("--node", *node, "Any node's gateway, http://HOST[:PORT] (default: --url)");
  return {app, [node] {
            auto url = parse_node_url(node->empty() ? gateway_url : *node);
            if (!url)
              return fail(exit_usage, hive::message_of(url.error()));
            auto reply =
              http_call(*url, http::verb::get, "/v1/cluster/nodes", {}, milliseconds{10000});
            if (!reply)
              return fail(exit_failed, "nodes: " + hive::message_of(reply.error()));
            if (reply->status != 200)
              return fail(exit_failed, "nodes: " + describe_reply(*reply));
            auto j = nlohmann::json::parse(reply->body, nullptr, false);
            if (!j.is_object() || !j["nodes"].is_array())
              return fail(exit_failed, "nodes: unexpected reply " + reply->body.substr(0, 500));
            std::cout << "NAME      STATUS   AGENTS  ADDRESS               GATEWAY" << std::endl;
            for (auto& n : j["nodes"]) {
              auto col = [](std::string s, size_t w) {
                s.resize(std::max(s.size(), w), ' ');
                return s;
              };
              std::cout << col(n.value("name", ""), 9) << " " << col(n.value("status", ""), 8)
                        << " " << col(std::to_string(n.value("agents", 0)), 7) << " "
                        << col(n.value("address", ""), 21) << " " << n.value("gateway", "")
                        << std::endl;
            }
            return exit_ok;
          }};
}

/// Pads `s` with spaces to `w` columns.
std::string col(std::string s, size_t w) {
  s.resize(std::max(s.size(), w), ' ');
  return s;
}

/// Runs one request against the gateway; on success returns the body, else prints why (with
/// `what` in front) and returns the exit code in `code`.
std::optional<std::string> call_gateway(http::verb verb, const std::string& target,
                                        const std::string& body, int expected_status,
                                        const std::string& what, int& code,
                                        milliseconds timeout = milliseconds{10000},
                                        const std::string& node = {}) {
  auto url = parse_node_url(node.empty() ? gateway_url : node);
  if (!url) {
    code = fail(exit_usage, hive::message_of(url.error()));
    return std::nullopt;
  }
  auto reply = http_call(*url, verb, target, body, timeout);
  if (!reply) {
    code = fail(exit_failed, what + ": " + hive::message_of(reply.error()));
    return std::nullopt;
  }
  if (reply->status != expected_status) {
    code = fail(exit_failed, what + ": " + describe_reply(*reply));
    return std::nullopt;
  }
  return std::move(reply->body);
}

/// Parses a command-line agent id, printing why it is bad.
std::optional<hive::agent_id> cli_agent_id(const std::string& text, int& code) {
  auto id = hive::parse_agent_id(text);
  if (!id) {
    code = fail(exit_usage, "agent id '" + text + "': " + hive::message_of(id.error()));
    return std::nullopt;
  }
  return std::move(*id);
}

/// Parses a command-line JSON document, printing why it is bad.
std::optional<nlohmann::json> cli_json(const std::string& text, const std::string& what,
                                       int& code) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    code = fail(exit_usage, what + " is not valid JSON: '" + text.substr(0, 200) + "'");
    return std::nullopt;
  }
  return j;
}

/// `agents`: every agent the caller may see, following the pages.
command add_agents(CLI::App& parent) {
  struct options {
    std::string tenant;
    std::string kind;
    std::string node;
    size_t max = 100000;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand("agents", "List agents (GET /v1/agents, every page)");
  app->add_option("--tenant", opts->tenant, "Only this tenant's agents");
  app->add_option("--kind", opts->kind, "Only agents of this kind");
  app->add_option("--node", opts->node, "Only agents on this node (a node name)");
  app->add_option("--max", opts->max, "Stop after this many agents")->capture_default_str();
  return {app, [opts] {
            int code = exit_ok;
            std::string after;
            nlohmann::json all = nlohmann::json::array();
            for (;;) {
              std::string target = "/v1/agents?limit=1000";
              if (!opts->tenant.empty())
                target += "&tenant=" + opts->tenant;
              if (!after.empty())
                target += "&after=" + after;
              auto body = call_gateway(http::verb::get, target, {}, 200, "agents", code);
              if (!body)
                return code;
              auto page = nlohmann::json::parse(*body, nullptr, false);
              if (!page.is_object() || !page["agents"].is_array())
                return fail(exit_failed, "agents: unexpected reply " + body->substr(0, 500));
              for (auto& a : page["agents"]) {
                if (!opts->kind.empty() && a.value("kind", "") != opts->kind)
                  continue;
                if (!opts->node.empty() && a.value("node", "") != opts->node)
                  continue;
                all.push_back(a);
              }
              if (!page["next"].is_string() || all.size() >= opts->max)
                break;
              after = page["next"].get<std::string>();
            }
            if (json_output) {
              std::cout << nlohmann::json{{"agents", all}}.dump() << std::endl;
              return exit_ok;
            }
            size_t w = 5;
            for (auto& a : all)
              w = std::max(w, a.value("id", "").size());
            std::cout << col("ID", w) << "  " << col("KIND", 10) << " " << col("NODE", 10) << " "
                      << col("RUNNING", 7) << " RESTARTS" << std::endl;
            for (auto& a : all)
              std::cout << col(a.value("id", ""), w) << "  " << col(a.value("kind", ""), 10) << " "
                        << col(a.value("node", ""), 10) << " "
                        << col(a.value("running", false) ? "yes" : "no", 7) << " "
                        << a.value("restarts", 0) << std::endl;
            std::cout << all.size() << " agents" << std::endl;
            return exit_ok;
          }};
}

/// `inspect`: one agent's inspection.
command add_inspect(CLI::App& parent) {
  auto id_text = std::make_shared<std::string>();
  auto* app = parent.add_subcommand("inspect", "Show one agent (GET /v1/agents/{id})");
  app->add_option("id", *id_text, "The agent, TENANT/NAME")->required();
  return {app, [id_text] {
            int code = exit_ok;
            auto id = cli_agent_id(*id_text, code);
            if (!id)
              return code;
            auto body =
              call_gateway(http::verb::get, "/v1/agents/" + id->str(), {}, 200, "inspect", code);
            if (!body)
              return code;
            auto j = nlohmann::json::parse(*body, nullptr, false);
            if (json_output || !j.is_object()) {
              std::cout << *body << std::endl;
              return exit_ok;
            }
            for (auto& [k, v] : j.items())
              std::cout << col(k + ":", 14) << " "
                        << (v.is_string() ? v.get<std::string>() : v.dump()) << std::endl;
            return exit_ok;
          }};
}

/// `spawn`: creates an agent.
command add_spawn(CLI::App& parent) {
  struct options {
    std::string id;
    std::string kind;
    std::string config = "{}";
    std::string restart;
    std::string on;
    bool breaker = false;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand("spawn", "Create an agent (POST /v1/agents)");
  app->add_option("id", opts->id, "The agent, TENANT/NAME")->required();
  app->add_option("--kind", opts->kind, "A registered kind (echo, counter, kv, relay, ...)")
    ->required();
  app->add_option("--config", opts->config, "The kind's config, a JSON object")
    ->capture_default_str();
  app->add_option("--restart", opts->restart, "permanent, transient or temporary");
  app->add_option("--on", opts->on, "Pin it to this node (a node name)");
  app->add_flag("--breaker", opts->breaker, "Put a circuit breaker in front of it");
  return {app, [opts] {
            int code = exit_ok;
            auto id = cli_agent_id(opts->id, code);
            if (!id)
              return code;
            auto cfg = cli_json(opts->config, "--config", code);
            if (!cfg)
              return code;
            nlohmann::json body{{"id", id->str()}, {"kind", opts->kind}, {"config", *cfg}};
            if (opts->breaker)
              body["breaker"] = true;
            if (!opts->restart.empty())
              body["restart"] = opts->restart;
            if (!opts->on.empty())
              body["node"] = opts->on;
            auto reply =
              call_gateway(http::verb::post, "/v1/agents", body.dump(), 201, "spawn", code);
            if (!reply)
              return code;
            auto j = nlohmann::json::parse(*reply, nullptr, false);
            if (json_output)
              std::cout << *reply << std::endl;
            else
              std::cout << "spawned " << j.value("id", id->str()) << " (" << j.value("kind", "")
                        << ") on " << j.value("node", "?") << std::endl;
            return exit_ok;
          }};
}

/// `tell` and `ask`: one message to an agent.
command add_message(CLI::App& parent, bool ask) {
  struct options {
    std::string id;
    std::string body;
    int64_t timeout_ms = 5000;
  };
  auto opts = std::make_shared<options>();
  auto* app =
    parent.add_subcommand(ask ? "ask" : "tell",
                          ask ? "Ask an agent and print its reply (POST /v1/agents/{id}/ask)"
                              : "Send an agent a one-way message (POST /v1/agents/{id}/tell)");
  app->add_option("id", opts->id, "The agent, TENANT/NAME")->required();
  app->add_option("body", opts->body, "The message, a JSON document")->required();
  if (ask)
    app->add_option("--timeout-ms", opts->timeout_ms, "Deadline of the ask")
      ->check(CLI::Range(int64_t{1}, int64_t{3600000}))
      ->capture_default_str();
  return {app, [opts, ask] {
            int code = exit_ok;
            auto id = cli_agent_id(opts->id, code);
            if (!id)
              return code;
            if (!cli_json(opts->body, "the message", code))
              return code;
            std::string target = "/v1/agents/" + id->str() + (ask ? "/ask" : "/tell");
            if (ask)
              target += "?timeout_ms=" + std::to_string(opts->timeout_ms);
            auto reply =
              call_gateway(http::verb::post, target, opts->body, ask ? 200 : 202,
                           ask ? "ask" : "tell", code, milliseconds{opts->timeout_ms + 5000});
            if (!reply)
              return code;
            if (ask || json_output)
              std::cout << *reply << std::endl;
            else
              std::cout << "told " << id->str() << std::endl;
            return exit_ok;
          }};
}

/// `stop`: stops an agent for good (its stored state is deleted).
command add_stop(CLI::App& parent) {
  auto id_text = std::make_shared<std::string>();
  auto* app = parent.add_subcommand(
    "stop", "Stop an agent for good; a persisted one's state is deleted (DELETE /v1/agents/{id})");
  app->add_option("id", *id_text, "The agent, TENANT/NAME")->required();
  return {
    app, [id_text] {
      int code = exit_ok;
      auto id = cli_agent_id(*id_text, code);
      if (!id)
        return code;
      if (!call_gateway(http::verb::delete_, "/v1/agents/" + id->str(), {}, 204, "stop", code))
        return code;
      std::cout << "stopped " << id->str() << std::endl;
      return exit_ok;
    }};
}

/// `keys`: create, list and revoke API keys.
command add_keys(CLI::App& parent) {
  struct options {
    std::string node;
    std::string tenant;
    std::string role;
    std::string name;
    std::string id;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand("keys", "Create, list and revoke API keys (/v1/keys)");
  app->add_option("--node", opts->node, "The node's gateway, http://HOST[:PORT] (default: --url)");
  app->require_subcommand(1);
  auto* create = app->add_subcommand("create", "Create a key; it is printed this once");
  create->add_option("--tenant", opts->tenant, "Its tenant (default: the caller's)");
  create->add_option("--role", opts->role, "admin, operator or viewer")->required();
  create->add_option("--name", opts->name, "A name for it: 1..64 of A-Z a-z 0-9 - _ .")->required();
  auto* list = app->add_subcommand("list", "List the keys the caller may see (never the keys)");
  list->add_option("--tenant", opts->tenant, "Only this tenant's keys");
  auto* revoke = app->add_subcommand("revoke", "Revoke a key: it stops working at once");
  revoke->add_option("id", opts->id, "The key's id (16 hex digits)")->required();
  return {app, [opts, create, list, revoke] {
            int code = exit_ok;
            if (create->parsed()) {
              nlohmann::json body{{"role", opts->role}, {"name", opts->name}};
              if (!opts->tenant.empty())
                body["tenant"] = opts->tenant;
              auto reply = call_gateway(http::verb::post, "/v1/keys", body.dump(), 201,
                                        "keys create", code, milliseconds{10000}, opts->node);
              if (!reply)
                return code;
              auto j = nlohmann::json::parse(*reply, nullptr, false);
              if (!j.is_object() || !j.contains("key"))
                return fail(exit_failed, "keys create: unexpected reply " + reply->substr(0, 500));
              if (json_output)
                std::cout << *reply << std::endl;
              else
                std::cout << "created key " << j.value("id", "?") << " (tenant "
                          << j.value("tenant", "?") << ", role " << j.value("role", "?")
                          << ", name " << j.value("name", "?") << "); it is shown only now:\n"
                          << j.value("key", "") << std::endl;
              return exit_ok;
            }
            if (list->parsed()) {
              std::string target = "/v1/keys";
              if (!opts->tenant.empty())
                target += "?tenant=" + opts->tenant;
              auto reply = call_gateway(http::verb::get, target, {}, 200, "keys list", code,
                                        milliseconds{10000}, opts->node);
              if (!reply)
                return code;
              auto j = nlohmann::json::parse(*reply, nullptr, false);
              if (!j.is_object() || !j["keys"].is_array())
                return fail(exit_failed, "keys list: unexpected reply " + reply->substr(0, 500));
              if (json_output) {
                std::cout << *reply << std::endl;
                return exit_ok;
              }
              std::cout << "ID               TENANT           ROLE      NAME" << std::endl;
              for (auto& k : j["keys"])
                std::cout << col(k.value("id", ""), 16) << " " << col(k.value("tenant", ""), 16)
                          << " " << col(k.value("role", ""), 9) << " " << k.value("name", "")
                          << std::endl;
              return exit_ok;
            }
            (void)revoke;
            if (!call_gateway(http::verb::delete_, "/v1/keys/" + opts->id, {}, 204,
                              "keys revoke " + opts->id, code, milliseconds{10000}, opts->node))
              return code;
            std::cout << "revoked key " << opts->id << std::endl;
            return exit_ok;
          }};
}

/// Counts the agents stored in `db_dir`, per kind.
caf::expected<std::map<std::string, size_t>> count_agents(const std::string& db_dir) {
  hive::store_options o;
  o.path = db_dir;
  auto st = hive::store::open(o);
  if (!st)
    return std::move(st.error());
  std::map<std::string, size_t> kinds;
  std::string after;
  for (;;) {
    auto page = (*st)->list_meta({}, after, 1000);
    if (!page)
      return std::move(page.error());
    if (page->empty())
      return kinds;
    for (auto& m : *page)
      ++kinds[m.kind];
    after = page->back().hdr.agent;
  }
}

/// `restore`: offline; copies a backup into a new data directory and verifies every record.
command add_restore(CLI::App& parent) {
  struct options {
    std::string from;
    std::string data_dir;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand(
    "restore",
    "Restore a backup into a new data directory (offline: no node may use it); "
    "every restored record is verified");
  app->add_option("--from", opts->from, "Backup directory written by 'agentctl backup'")
    ->required();
  app
    ->add_option("--data-dir", opts->data_dir,
                 "Data directory to restore into; it must not hold a database (db/) yet")
    ->required();
  return {app, [opts] {
            namespace fs = std::filesystem;
            if (opts->from.empty() || opts->data_dir.empty())
              return fail(exit_usage, "--from and --data-dir must not be empty");
            std::error_code ec;
            auto from = fs::absolute(opts->from, ec).lexically_normal().string();
            auto dir_path = fs::absolute(opts->data_dir, ec).lexically_normal();
            if (dir_path.filename().empty()) // a trailing '/'
              dir_path = dir_path.parent_path();
            auto dir = dir_path.string();
            auto db_dir = (dir_path / "db").string();
            bool dir_existed = fs::exists(dir_path, ec);
            bool db_existed = fs::exists(db_dir, ec);
            // Lock the data directory as a node does, so no node can start on it meanwhile.
            auto lock = std::make_optional(hive::data_dir::open(dir));
            if (!*lock)
              return fail(exit_failed, "restore: " + hive::message_of(lock->error()));
            if (auto err = hive::restore_checkpoint(from, dir)) {
              // Leave nothing half-restored behind: only what this run created is removed.
              if (!db_existed)
                fs::remove_all(db_dir, ec);
              lock.reset();
              if (!dir_existed)
                fs::remove_all(dir_path, ec);
              return fail(exit_failed,
                          "restore from " + from + " into " + dir
                            + " failed: " + hive::message_of(err));
            }
            auto kinds = count_agents(db_dir);
            if (!kinds)
              return fail(exit_failed,
                          "restore: restored into " + db_dir
                            + " but cannot read it back: " + hive::message_of(kinds.error()));
            size_t total = 0;
            std::string breakdown;
            for (auto& [kind, n] : *kinds) {
              total += n;
              breakdown += (breakdown.empty() ? "" : ", ") + kind + " " + std::to_string(n);
            }
            std::cout << "restored " << total << " agents";
            if (!breakdown.empty())
              std::cout << " (" << breakdown << ")";
            std::cout << " from " << from << " into " << db_dir << std::endl;
            return exit_ok;
          }};
}

} // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"agentctl: administer hive nodes", "agentctl"};
  app.require_subcommand(0, 1); // none given: reported below, after --help had its turn
  app.fallthrough();            // --token may follow the subcommand
  std::string token, token_file;
  app.add_option("--token", token, "Bearer credential: an API key or a JWT (else $HIVE_TOKEN)");
  app.add_option("--token-file", token_file, "File holding the credential (else $HIVE_TOKEN_FILE)");
  std::string url;
  app.add_option("--url", url,
                 "The gateway to talk to, http://HOST[:PORT] (else $HIVE_URL, else "
                 "http://127.0.0.1:8080)");
  app.add_flag("--json", json_output, "Print the node's JSON answers as they are");
  std::vector<command> commands{add_agents(app),         add_inspect(app),       add_spawn(app),
                                add_message(app, false), add_message(app, true), add_stop(app),
                                add_migrate(app),        add_nodes(app),         add_keys(app),
                                add_backup(app),         add_restore(app)};
  if (argc > 1 && argv[1][0] != '-') {
    auto named = [&](const command& c) { return c.app->check_name(argv[1]); };
    if (std::none_of(commands.begin(), commands.end(), named)) {
      std::string names;
      for (auto& c : commands)
        names += (names.empty() ? "" : ", ") + c.app->get_name();
      return fail(exit_usage,
                  std::string{"unknown subcommand '"} + argv[1] + "' (known: " + names
                    + "; run 'agentctl --help')");
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help (of agentctl or of a subcommand) arrives as a ParseError with exit code 0; CLI11
    // prints the help of the subcommand given, if any.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success))
      return app.exit(e);
    std::cerr << "agentctl: error: " << e.what() << "\n(run 'agentctl --help' for usage)"
              << std::endl;
    return exit_usage;
  }
  if (!url.empty())
    gateway_url = url;
  else if (auto* env = std::getenv("HIVE_URL"); env != nullptr && *env != '\0')
    gateway_url = env;
  if (!token.empty()) {
    bearer_token = token;
  } else if (!token_file.empty()) {
    auto t = read_token_file(token_file, "--token-file");
    if (!t)
      return fail(exit_usage, hive::message_of(t.error()));
    bearer_token = *t;
  } else if (auto* env = std::getenv("HIVE_TOKEN"); env != nullptr && *env != '\0') {
    bearer_token = env;
  } else if (auto* envf = std::getenv("HIVE_TOKEN_FILE"); envf != nullptr && *envf != '\0') {
    auto t = read_token_file(envf, "$HIVE_TOKEN_FILE");
    if (!t)
      return fail(exit_usage, hive::message_of(t.error()));
    bearer_token = *t;
  }
  for (auto& c : commands)
    if (c.app->parsed())
      return c.run();
  return fail(exit_usage, "no subcommand given (run 'agentctl --help')");
}
