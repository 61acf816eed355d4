// agentctl: the admin command line and shell of hive. One subcommand per task; each parses its
// own flags, runs, prints its result on stdout (tables with aligned columns, or the node's JSON
// with --json; errors on stderr as `agentctl: error: ...`) and exits with one of:
//
//   0  done (also --help, and `events`/`top` ended by Ctrl-C, --count or --iterations)
//   1  the task failed: node unreachable, an HTTP error (401/403/404/409/...), the event
//      stream refused (401/403) or closed by the node (4008: this client fell behind), bad
//      backup
//   2  bad command line: unknown subcommand, bad flag, bad agent id or JSON, bad config file
//
// Settings, each from the first place that has it (flags > environment > config file >
// defaults):
//   gateway  --url URL, $HIVE_URL, the config file's `url`, http://127.0.0.1:8080 (the older
//            subcommands also take `--node URL`, which wins over all of them). http:// or
//            https:// (TLS 1.2+; the node's certificate must verify and name the host)
//   CA       --ca-file FILE, $HIVE_CA_FILE, the config file's `ca_file` (relative to the
//            config file's directory), else the system's trust store: for https:// only
//   token    --token, --token-file FILE, $HIVE_TOKEN, $HIVE_TOKEN_FILE, the config file's
//            `token` or `token_file` (relative to the config file's directory); an API key or
//            a JWT, sent as `Authorization: Bearer <token>` (`agent-node` prints its generated
//            admin key once)
//   config   --config FILE, else $HIVE_CONFIG, else ~/.config/hive/agentctl.toml if it exists.
//            TOML with the keys `url`, `token`, `token_file`, `ca_file` (strings; token and
//            token_file not both); an unknown key, a wrong type or a TOML syntax error is exit 2
//            naming the file and the key (or line), and so is a --config/$HIVE_CONFIG file that is
//            missing.
// Colour (ANSI) only when stdout is a terminal and $NO_COLOR is unset or empty.
//
// Subcommands:
//   agentctl agents [--tenant T] [--kind K] [--node NAME] [--max N]
//   agentctl inspect TENANT/NAME
//   agentctl spawn TENANT/NAME --kind K [--config JSON] [--restart R] [--on NODE] [--breaker]
//   agentctl tell TENANT/NAME JSON
//   agentctl ask TENANT/NAME JSON [--timeout-ms N]
//   agentctl stop TENANT/NAME
//   agentctl migrate TENANT/NAME NODE   (or --to NODE) [--node http://127.0.0.1:8080]
//   agentctl nodes [--node http://127.0.0.1:8080]
//   agentctl breakers [--tenant T]       agents with a circuit breaker and its state
//   agentctl restarts [--tenant T]       agents by restart count, most first
//   agentctl events [--tenant T] [--agent ID] [--kind K] [--count N]
//                                        tails GET /v1/events (WebSocket), one line per event
//   agentctl top [--interval-ms N] [--iterations N] [--limit N] [--agents-max N] [--tenant T]
//                                        msgs/s per agent from the inspections' `handled`
//                                        counts; redrawn in place on a terminal
//   agentctl backup --to /abs/dir [--node http://127.0.0.1:8080] [--timeout-ms N]
//   agentctl keys create --role admin|operator|viewer --name NAME [--tenant T]
//   agentctl keys list [--tenant T]
//   agentctl keys revoke ID
//   agentctl restore --from BACKUP_DIR --data-dir NEW_DATA_DIR
//   agentctl shell
//
// The shell (libedit): each line is split like a POSIX shell line ('...' literal, "..." with
// \" and \\, a backslash escapes one character) and runs as an agentctl command line, with
// the global settings of the `agentctl ... shell` invocation unless the line gives its own. Tab
// completes subcommand names, `keys` actions and agent ids (GET /v1/agents, cached, refreshed
// after spawn, stop and migrate); Up/Down walk the history, kept in $HIVE_HISTORY
// else ~/.local/state/hive/agentctl_history (at most 1000 lines). `help` lists the
// commands, `exit`, `quit` or Ctrl-D leaves; a failing command prints its error and the shell
// goes on; Ctrl-C stops a running `events` or `top`.
//
// To add a subcommand: write an `add_<name>(CLI::App&)` that registers it and returns its
// `command`, and list it in `run_command_line`.

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
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
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <caf/all.hpp>
#include <editline/readline.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "actors/http_exchange.hpp"
#include "protocols/agent_id.hpp"
#include "protocols/errc.hpp"
#include "runtime/replication.hpp"
#include "storage/data_dir.hpp"
#include "storage/store.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

/// Exit codes of every subcommand.
constexpr int exit_ok = 0;
constexpr int exit_failed = 1;
constexpr int exit_usage = 2;

/// Largest response body agentctl reads from a node.
constexpr uint64_t response_bytes_max = 8 << 20;

/// While true, `fail` prints nothing (the shell's tab completion fetches quietly).
bool quiet_errors = false;

int fail(int code, const std::string& what) {
  if (!quiet_errors)
    std::cerr << "agentctl: error: " << what << std::endl;
  return code;
}

/// The bearer credential sent with every request (empty: none).
std::string bearer_token;

/// The gateway talked to: `--url`, else $HIVE_URL, else http://127.0.0.1:8080 (a subcommand's
/// own `--node URL` wins over it).
std::string gateway_url = "http://127.0.0.1:8080";

/// For https:// gateways: the PEM CA file their certificates must chain to (`--ca-file`, else
/// $HIVE_CA_FILE, else the config file's `ca_file`); empty: the system's trust store.
std::string ca_file;

/// `--json`: print the node's JSON answer as it is instead of a table or a summary.
bool json_output = false;

/// Colour (ANSI escapes): only when stdout is a terminal and $NO_COLOR is unset.
bool use_colour = false;

/// Set by SIGINT while `events`, `top` or the shell run: the loop ends, the process stays.
std::atomic<bool> interrupted{false};

extern "C" void on_sigint(int) {
  interrupted.store(true);
}

/// Wraps `text` in the ANSI SGR `code` when colour is on.
std::string paint(const std::string& text, const char* code) {
  if (!use_colour || text.empty())
    return text;
  return std::string{"\x1b["} + code + "m" + text + "\x1b[0m";
}

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

/// A node address `http://HOST[:PORT]` or `https://HOST[:PORT]` (no path).
struct node_url {
  std::string host;
  std::string port;
  bool tls = false;

  [[nodiscard]] std::string str() const {
    return (tls ? "https://" : "http://") + host + ":" + port;
  }
};

/// Parses `http[s]://HOST[:PORT][/]`; the port defaults to 80 (http) or 443 (https).
caf::expected<node_url> parse_node_url(std::string text) {
  auto bad = [&](const std::string& why) {
    return hive::make_error(hive::errc::invalid_argument,
                            "--node '" + text
                              + "' must be http://HOST[:PORT] or "
                                "https://HOST[:PORT] ("
                              + why + ")");
  };
  bool tls = text.rfind("https://", 0) == 0;
  if (!tls && text.rfind("http://", 0) != 0)
    return bad("only http:// and https:// are supported");
  auto rest = text.substr(tls ? 8 : 7);
  if (!rest.empty() && rest.back() == '/')
    rest.pop_back();
  if (rest.empty())
    return bad("no host");
  if (rest.find('/') != std::string::npos)
    return bad("no path allowed");
  node_url url;
  url.tls = tls;
  auto colon = rest.rfind(':');
  if (colon == std::string::npos) {
    url.host = rest;
    url.port = tls ? "443" : "80";
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

/// A TLS client context for https:// gateways: TLS 1.2 or later, the peer's certificate
/// verified against `ca_file` (else the system's trust store). Errors: invalid_argument naming
/// the CA file.
caf::expected<std::shared_ptr<ssl::context>> client_tls_context() {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  beast::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2
                     | ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ec);
  ctx->set_verify_mode(ssl::verify_peer, ec);
  if (ca_file.empty())
    ctx->set_default_verify_paths(ec);
  else
    ctx->load_verify_file(ca_file, ec);
  if (ec)
    return hive::make_error(
      hive::errc::invalid_argument,
      ca_file.empty() ? "cannot load the system's trusted certificates: " + ec.message()
                      : "cannot load the CA file '" + ca_file + "' (--ca-file): " + ec.message());
  return ctx;
}

/// Makes `stream` check that the node's certificate is issued for `host` (and sends it as SNI
/// when it is a name, not an address).
template <class SslStream>
void expect_host(SslStream& stream, const std::string& host) {
  stream.set_verify_callback(ssl::host_name_verification(host));
  beast::error_code ec;
  asio::ip::make_address(host, ec);
  if (ec)
    SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
}

/// Sends one request to `node` and reads the reply; the whole exchange (connect, TLS
/// handshake, write, read) must finish within `timeout`. Errors, naming the node and the step:
/// io_error (for https also a certificate that does not verify), timeout, invalid_argument
/// (a CA file that cannot be loaded).
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
  http::response_parser<http::string_body> parser;
  parser.body_limit(response_bytes_max);
  std::string step = "connect";
  beast::error_code result;
  // The deadline covers every operation started below (Beast's tcp_stream closes the socket
  // when it passes, and the pending operation completes with beast::error::timeout).
  if (node.tls) {
    auto ctx = client_tls_context();
    if (!ctx)
      return ctx.error();
    beast::ssl_stream<beast::tcp_stream> stream{ioc, **ctx};
    expect_host(stream, node.host);
    beast::get_lowest_layer(stream).expires_after(timeout);
    result = hive::run_exchange(ioc, stream, endpoints, req, parser, step);
  } else {
    beast::tcp_stream stream{ioc};
    stream.expires_after(timeout);
    result = hive::run_exchange(ioc, stream, endpoints, req, parser, step);
  }
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

/// Pads `s` with spaces to `w` columns.
std::string col(std::string s, size_t w) {
  s.resize(std::max(s.size(), w), ' ');
  return s;
}

/// Aligned columns: each as wide as its widest cell, two spaces apart; the header bold and
/// cells coloured by `colour` (column, text -> SGR code or nullptr) when colour is on.
struct table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::function<const char*(size_t, const std::string&)> colour;

  void print(std::ostream& out) const {
    std::vector<size_t> w(header.size(), 0);
    for (size_t i = 0; i < header.size(); ++i)
      w[i] = header[i].size();
    for (auto& r : rows)
      for (size_t i = 0; i < r.size() && i < w.size(); ++i)
        w[i] = std::max(w[i], r[i].size());
    auto line = [&](const std::vector<std::string>& r, bool head) {
      std::string text;
      for (size_t i = 0; i < w.size(); ++i) {
        auto cell = i < r.size() ? r[i] : std::string{};
        bool last = i + 1 == w.size();
        auto padded = last ? cell : col(cell, w[i]);
        const char* code = head ? "1" : (colour ? colour(i, cell) : nullptr);
        if (code != nullptr && !cell.empty())
          padded = paint(cell, code) + padded.substr(cell.size());
        text += padded;
        if (!last)
          text += "  ";
      }
      text.erase(text.find_last_not_of(' ') + 1);
      out << text << "\n";
    };
    line(header, true);
    for (auto& r : rows)
      line(r, false);
    out.flush();
  }
};

/// A JSON value as a table cell: strings as they are, null as "-", the rest as JSON.
std::string cell_of(const nlohmann::json& v) {
  if (v.is_string())
    return v.get<std::string>();
  if (v.is_null())
    return "-";
  if (v.is_boolean())
    return v.get<bool>() ? "yes" : "no";
  return v.dump();
}

/// Colours of table cells: "no"/"open"/"half_open" and the like stand out.
const char* state_colour(size_t, const std::string& cell) {
  if (cell == "open" || cell == "no")
    return "31"; // red
  if (cell == "half_open")
    return "33"; // yellow
  if (cell == "closed" || cell == "yes" || cell == "up" || cell == "alive")
    return "32"; // green
  return nullptr;
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
    std::string to_positional;
    std::string node;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand(
    "migrate", "Move a persisted agent live to another node (POST /v1/agents/{id}/migrate)");
  app->add_option("id", opts->id, "The agent, TENANT/NAME")->required();
  app->add_option("to_node", opts->to_positional,
                  "The node to move it to (a member's node.name; or --to NODE)");
  app->add_option("--to", opts->to, "The node to move it to (a member's node.name)");
  app->add_option("--node", opts->node, "Any node's gateway, http://HOST[:PORT] (default: --url)");
  return {app, [opts] {
            if (!opts->to_positional.empty() && !opts->to.empty()
                && opts->to_positional != opts->to)
              return fail(exit_usage,
                          "migrate: the target node is given twice, as '" + opts->to_positional
                            + "' and as --to '" + opts->to + "'");
            if (opts->to.empty())
              opts->to = opts->to_positional;
            if (opts->to.empty())
              return fail(exit_usage, "migrate: which node to? (migrate ID NODE or --to NODE)");
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
            if (json_output) {
              std::cout << reply->body << std::endl;
              return exit_ok;
            }
            table t{{"NAME", "STATUS", "AGENTS", "ADDRESS", "GATEWAY"}, {}, state_colour};
            for (auto& n : j["nodes"])
              t.rows.push_back({cell_of(n.value("name", nlohmann::json{})),
                                cell_of(n.value("status", nlohmann::json{})),
                                cell_of(n.value("agents", nlohmann::json{})),
                                cell_of(n.value("address", nlohmann::json{})),
                                cell_of(n.value("gateway", nlohmann::json{}))});
            t.print(std::cout);
            return exit_ok;
          }};
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

/// Every agent the caller may see (of `tenant` if set), following the pages, filtered by kind
/// and node, at most `max`; nullopt (with `code` set and the reason printed) on failure.
std::optional<nlohmann::json> list_agents(const std::string& tenant, const std::string& kind,
                                          const std::string& node, size_t max,
                                          const std::string& what, int& code) {
  std::string after;
  nlohmann::json all = nlohmann::json::array();
  for (;;) {
    std::string target = "/v1/agents?limit=1000";
    if (!tenant.empty())
      target += "&tenant=" + tenant;
    if (!after.empty())
      target += "&after=" + after;
    auto body = call_gateway(http::verb::get, target, {}, 200, what, code);
    if (!body)
      return std::nullopt;
    auto page = nlohmann::json::parse(*body, nullptr, false);
    if (!page.is_object() || !page["agents"].is_array()) {
      code = fail(exit_failed, what + ": unexpected reply " + body->substr(0, 500));
      return std::nullopt;
    }
    for (auto& a : page["agents"]) {
      if (!kind.empty() && a.value("kind", "") != kind)
        continue;
      if (!node.empty() && a.value("node", "") != node)
        continue;
      if (all.size() >= max)
        return all;
      all.push_back(a);
    }
    if (!page["next"].is_string() || all.size() >= max)
      return all;
    after = page["next"].get<std::string>();
  }
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
            auto all = list_agents(opts->tenant, opts->kind, opts->node, opts->max, "agents", code);
            if (!all)
              return code;
            if (json_output) {
              std::cout << nlohmann::json{{"agents", *all}}.dump() << std::endl;
              return exit_ok;
            }
            table t{{"ID", "KIND", "NODE", "RUNNING", "RESTARTS", "BREAKER"}, {}, state_colour};
            for (auto& a : *all)
              t.rows.push_back({a.value("id", ""), a.value("kind", ""), a.value("node", ""),
                                a.value("running", false) ? "yes" : "no",
                                std::to_string(a.value("restarts", 0)),
                                a.value("breaker", false) ? "yes" : "-"});
            t.print(std::cout);
            std::cout << all->size() << " agents" << std::endl;
            return exit_ok;
          }};
}

/// `capabilities NAME`: the agents that offer a capability, cluster-wide, least loaded first.
command add_capabilities(CLI::App& parent) {
  struct options {
    std::string name;
    std::string tenant;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand(
    "capabilities", "List the providers of a capability (GET /v1/capabilities/{name})");
  app->add_option("name", opts->name, "The capability")->required();
  app->add_option("--tenant", opts->tenant, "Only this tenant's (admin: default all)");
  return {app, [opts] {
            int code = exit_ok;
            auto target = "/v1/capabilities/" + opts->name;
            if (!opts->tenant.empty())
              target += "?tenant=" + opts->tenant;
            auto body = call_gateway(http::verb::get, target, {}, 200, "capabilities", code);
            if (!body)
              return code;
            auto j = nlohmann::json::parse(*body, nullptr, false);
            if (!j.is_object() || !j["providers"].is_array())
              return fail(exit_failed, "capabilities: unexpected reply " + body->substr(0, 500));
            if (json_output) {
              std::cout << *body << std::endl;
              return exit_ok;
            }
            table t{{"ID", "NODE", "STATE", "LOAD"}, {}, state_colour};
            for (auto& p : j["providers"])
              t.rows.push_back({cell_of(p.value("id", nlohmann::json{})),
                                cell_of(p.value("node", nlohmann::json{})),
                                cell_of(p.value("state", nlohmann::json{})),
                                cell_of(p.value("load", nlohmann::json{}))});
            t.print(std::cout);
            std::cout << j["providers"].size() << " providers of " << opts->name << std::endl;
            for (auto& f : j.value("nodes_failed", nlohmann::json::array()))
              std::cerr << "agentctl: node " << f.value("node", "?")
                        << " did not answer: " << f.value("reason", "?") << std::endl;
            return exit_ok;
          }};
}

/// `restarts`: agents by restart count, most first.
command add_restarts(CLI::App& parent) {
  auto tenant = std::make_shared<std::string>();
  auto* app = parent.add_subcommand("restarts", "List agents by restart count, most first");
  app->add_option("--tenant", *tenant, "Only this tenant's agents");
  return {app, [tenant] {
            int code = exit_ok;
            auto all = list_agents(*tenant, {}, {}, 1000000, "restarts", code);
            if (!all)
              return code;
            std::vector<nlohmann::json> v(all->begin(), all->end());
            std::stable_sort(v.begin(), v.end(), [](const auto& x, const auto& y) {
              auto rx = x.value("restarts", uint64_t{0});
              auto ry = y.value("restarts", uint64_t{0});
              return rx != ry ? rx > ry : x.value("id", "") < y.value("id", "");
            });
            if (json_output) {
              std::cout << nlohmann::json{{"agents", v}}.dump() << std::endl;
              return exit_ok;
            }
            table t{{"RESTARTS", "ID", "KIND", "NODE", "RUNNING"}, {}, state_colour};
            for (auto& a : v)
              t.rows.push_back({std::to_string(a.value("restarts", 0)), a.value("id", ""),
                                a.value("kind", ""), a.value("node", ""),
                                a.value("running", false) ? "yes" : "no"});
            t.print(std::cout);
            std::cout << v.size() << " agents" << std::endl;
            return exit_ok;
          }};
}

/// `breakers`: the agents fronted by a circuit breaker, with the breaker's state.
command add_breakers(CLI::App& parent) {
  auto tenant = std::make_shared<std::string>();
  auto* app = parent.add_subcommand(
    "breakers", "List agents with a circuit breaker and its state (GET /v1/agents/{id})");
  app->add_option("--tenant", *tenant, "Only this tenant's agents");
  return {
    app, [tenant] {
      int code = exit_ok;
      auto all = list_agents(*tenant, {}, {}, 1000000, "breakers", code);
      if (!all)
        return code;
      nlohmann::json out = nlohmann::json::array();
      for (auto& a : *all) {
        if (!a.value("breaker", false))
          continue;
        auto id = a.value("id", "");
        auto body = call_gateway(http::verb::get, "/v1/agents/" + id, {}, 200, "breakers", code);
        if (!body) {
          if (code == exit_failed) // gone meanwhile, or the node failed: report, go on
            continue;
          return code;
        }
        auto j = nlohmann::json::parse(*body, nullptr, false);
        nlohmann::json b =
          j.is_object() && j["breaker"].is_object() ? j["breaker"] : nlohmann::json{};
        out.push_back({{"id", id},
                       {"kind", a.value("kind", "")},
                       {"node", a.value("node", "")},
                       {"breaker", b}});
      }
      if (json_output) {
        std::cout << nlohmann::json{{"breakers", out}}.dump() << std::endl;
        return exit_ok;
      }
      table t{{"ID", "KIND", "NODE", "STATE", "OPENED", "REFUSED", "FAILURES", "RETRY_MS"},
              {},
              state_colour};
      for (auto& e : out) {
        auto& b = e["breaker"];
        auto f = [&](const char* k) {
          return b.is_object() && b.contains(k) ? cell_of(b[k]) : std::string{"-"};
        };
        t.rows.push_back(
          {e["id"].get<std::string>(), e["kind"].get<std::string>(), e["node"].get<std::string>(),
           b.is_object() && b.contains("error") ? "error: " + f("error") : f("state"),
           f("times_opened"), f("calls_refused"), f("failures_consecutive"), f("retry_after_ms")});
      }
      t.print(std::cout);
      std::cout << out.size() << " breakers" << std::endl;
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
              table t{{"ID", "TENANT", "ROLE", "NAME"}, {}, {}};
              for (auto& k : j["keys"])
                t.rows.push_back({k.value("id", ""), k.value("tenant", ""), k.value("role", ""),
                                  k.value("name", "")});
              t.print(std::cout);
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

/// Percent-encodes a query parameter value (agent ids hold '/').
std::string query_escape(const std::string& v) {
  std::string out;
  for (unsigned char c : v) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

/// A wall-clock time in ms since the epoch as local `HH:MM:SS.mmm`.
std::string clock_text(int64_t ts_ms) {
  std::time_t secs = static_cast<std::time_t>(ts_ms / 1000);
  std::tm tm{};
  ::localtime_r(&secs, &tm);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ts_ms % 1000));
  return buf;
}

/// One event as a readable line: time, type, agent, kind, node, then the other fields.
std::string event_line(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object())
    return text;
  std::string type = j.value("type", "?");
  const char* code = type == "agent_crashed" ? "31"
    : type == "breaker_transition"           ? "33"
    : type == "agent_started"                ? "32"
                                             : "36";
  std::string out = clock_text(j.value("ts_ms", int64_t{0})) + " " + paint(type, code) + " "
    + j.value("agent", "?");
  if (auto k = j.value("kind", ""); !k.empty())
    out += " (" + k + ")";
  out += " on " + j.value("node", "?");
  std::string rest;
  for (auto& [k, v] : j.items()) {
    if (k == "type" || k == "agent" || k == "tenant" || k == "kind" || k == "node" || k == "ts_ms")
      continue;
    rest += " " + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out + rest;
}

/// Tails the event stream at `url` + `target` over `ws` (plain or TLS WebSocket) until
/// Ctrl-C, `count` events (0: no limit) or the node closes it. Returns the exit code.
template <class WebSocket>
int tail_events(asio::io_context& ioc, WebSocket& ws, const node_url& url,
                const std::string& target, int64_t count) {
  beast::error_code ec;
  tcp::resolver resolver{ioc};
  auto endpoints = resolver.resolve(url.host, url.port, ec);
  if (ec)
    return fail(exit_failed, "events: cannot resolve " + url.host + ": " + ec.message());
  auto& lowest = beast::get_lowest_layer(ws);
  lowest.expires_after(std::chrono::seconds(10));
  lowest.connect(endpoints, ec);
  if (ec)
    return fail(exit_failed, "events: cannot reach node " + url.str() + ": " + ec.message());
  if constexpr (!std::is_same_v<typename WebSocket::next_layer_type, beast::tcp_stream>) {
    ws.next_layer().async_handshake(ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
    ioc.run();
    if (ec)
      return fail(exit_failed,
                  "events: TLS handshake with " + url.str() + " failed: " + ec.message());
    ioc.restart();
  }
  ws.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
    req.set(http::field::user_agent, "agentctl");
    if (!bearer_token.empty())
      req.set(http::field::authorization, "Bearer " + bearer_token);
  }));
  websocket::response_type res;
  // The asynchronous handshake (unlike the blocking one in Boost 1.74) fills `res`
  // also when the upgrade is refused, so the node's reason can be shown.
  ws.async_handshake(res, url.host, target, [&](beast::error_code e) { ec = e; });
  ioc.run();
  if (ec || res.result_int() != 101) {
    if (res.result_int() != 0 && res.result_int() != 101)
      return fail(exit_failed,
                  "events: the node refused the stream: "
                    + describe_reply({static_cast<int>(res.result_int()), res.body()}));
    return fail(exit_failed,
                "events: WebSocket upgrade at " + url.str() + target + " failed: " + ec.message());
  }
  lowest.expires_never();
  std::cerr << "agentctl: streaming events from " << url.str() << target << " (Ctrl-C to stop)"
            << std::endl;
  interrupted.store(false);
  auto old_handler = std::signal(SIGINT, on_sigint);
  int64_t seen = 0;
  int result = exit_ok;
  beast::flat_buffer buf;
  while (count == 0 || seen < count) {
    bool done = false;
    beast::error_code read_ec;
    buf.clear();
    ws.async_read(buf, [&](beast::error_code e, size_t) {
      read_ec = e;
      done = true;
    });
    while (!done && !interrupted.load()) {
      ioc.restart();
      ioc.run_for(milliseconds{200});
    }
    if (!done) { // Ctrl-C: cancel the read, leave
      lowest.cancel();
      ioc.restart();
      ioc.run();
      break;
    }
    if (read_ec) {
      auto reason = ws.reason();
      if (read_ec == websocket::error::closed && reason.code == 4008)
        result = fail(exit_failed,
                      "events: the node closed the stream (code 4008): this client fell "
                      "behind by more than gateway.events_buffer_max events");
      else if (read_ec == websocket::error::closed)
        result = fail(exit_failed,
                      "events: the node closed the stream (code " + std::to_string(reason.code)
                        + " " + std::string{reason.reason.c_str()} + ")");
      else
        result =
          fail(exit_failed, "events: stream from " + url.str() + " ended: " + read_ec.message());
      break;
    }
    auto text = beast::buffers_to_string(buf.data());
    std::cout << (json_output ? text : event_line(text)) << std::endl;
    ++seen;
  }
  std::signal(SIGINT, old_handler);
  if (ws.is_open()) {
    lowest.expires_after(std::chrono::seconds(1));
    ws.close(websocket::close_code::normal, ec);
  }
  return result;
}

/// `events`: tails the node's event stream (WebSocket GET /v1/events).
command add_events(CLI::App& parent) {
  struct options {
    std::string tenant;
    std::string agent;
    std::string kind;
    int64_t count = 0;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand(
    "events",
    "Print agent lifecycle events as they happen (WebSocket GET /v1/events), until "
    "Ctrl-C or --count events");
  app->add_option("--tenant", opts->tenant, "Only this tenant's events");
  app->add_option("--agent", opts->agent, "Only this agent's events (TENANT/NAME)");
  app->add_option("--kind", opts->kind, "Only events of agents of this kind");
  app->add_option("--count", opts->count, "Stop after this many events (0: never)")
    ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  return {app, [opts] {
            int code = exit_ok;
            if (!opts->agent.empty() && !cli_agent_id(opts->agent, code))
              return code;
            auto url = parse_node_url(gateway_url);
            if (!url)
              return fail(exit_usage, hive::message_of(url.error()));
            std::string target = "/v1/events";
            std::string sep = "?";
            for (auto& [k, v] : {std::pair{"tenant", opts->tenant}, std::pair{"agent", opts->agent},
                                 std::pair{"kind", opts->kind}})
              if (!v.empty()) {
                target += sep + k + "=" + query_escape(v);
                sep = "&";
              }
            asio::io_context ioc;
            if (url->tls) {
              auto ctx = client_tls_context();
              if (!ctx)
                return fail(exit_usage, "events: " + hive::message_of(ctx.error()));
              websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws{ioc, **ctx};
              expect_host(ws.next_layer(), url->host);
              return tail_events(ioc, ws, *url, target, opts->count);
            }
            websocket::stream<beast::tcp_stream> ws{ioc};
            return tail_events(ioc, ws, *url, target, opts->count);
          }};
}

/// One sample of `top`: per agent id, its kind, node and handled-message count.
struct top_sample {
  struct entry {
    std::string kind;
    std::string node;
    uint64_t handled = 0;
  };
  std::map<std::string, entry> agents;
  std::chrono::steady_clock::time_point at;
};

/// Takes one `top` sample: the listing, then each agent's inspection (its `handled` count).
std::optional<top_sample> take_top_sample(const std::string& tenant, size_t agents_max, int& code) {
  auto all = list_agents(tenant, {}, {}, agents_max, "top", code);
  if (!all)
    return std::nullopt;
  top_sample s;
  for (auto& a : *all) {
    auto id = a.value("id", "");
    top_sample::entry e{a.value("kind", ""), a.value("node", ""), 0};
    int ignored = exit_ok;
    auto body = call_gateway(http::verb::get, "/v1/agents/" + id, {}, 200, "top", ignored);
    if (!body) // stopped meanwhile: left out
      continue;
    auto j = nlohmann::json::parse(*body, nullptr, false);
    if (j.is_object() && j.contains("handled") && j["handled"].is_number_unsigned())
      e.handled = j["handled"].get<uint64_t>();
    s.agents.emplace(id, std::move(e));
  }
  s.at = std::chrono::steady_clock::now();
  return s;
}

/// Sleeps `d`, waking early on Ctrl-C.
void sleep_interruptible(milliseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (!interrupted.load() && std::chrono::steady_clock::now() < until) {
    auto left = std::chrono::duration_cast<milliseconds>(until - std::chrono::steady_clock::now());
    ::usleep(static_cast<useconds_t>(std::clamp<int64_t>(left.count(), 0, 100) * 1000));
  }
}

/// `top`: per-agent message rates, polled.
command add_top(CLI::App& parent) {
  struct options {
    int64_t interval_ms = 2000;
    int64_t iterations = 0;
    size_t limit = 20;
    size_t agents_max = 500;
    std::string tenant;
  };
  auto opts = std::make_shared<options>();
  auto* app = parent.add_subcommand(
    "top",
    "Show per-agent message rates (msgs/s, from each inspection's 'handled' count), "
    "busiest first, refreshed every --interval-ms until Ctrl-C or --iterations");
  app->add_option("--interval-ms", opts->interval_ms, "Time between two samples")
    ->check(CLI::Range(int64_t{50}, int64_t{3600000}))
    ->capture_default_str();
  app->add_option("--iterations", opts->iterations, "Stop after this many tables (0: never)")
    ->check(CLI::Range(int64_t{0}, int64_t{1000000}))
    ->capture_default_str();
  app->add_option("--limit", opts->limit, "Show at most this many agents")
    ->check(CLI::Range(size_t{1}, size_t{100000}))
    ->capture_default_str();
  app->add_option("--agents-max", opts->agents_max, "Sample at most this many agents")
    ->check(CLI::Range(size_t{1}, size_t{100000}))
    ->capture_default_str();
  app->add_option("--tenant", opts->tenant, "Only this tenant's agents");
  return {
    app, [opts] {
      int code = exit_ok;
      bool redraw = ::isatty(STDOUT_FILENO) == 1 && !json_output;
      interrupted.store(false);
      auto old_handler = std::signal(SIGINT, on_sigint);
      auto prev = take_top_sample(opts->tenant, opts->agents_max, code);
      int result = exit_ok;
      for (int64_t i = 0; prev && (opts->iterations == 0 || i < opts->iterations); ++i) {
        sleep_interruptible(milliseconds{opts->interval_ms});
        if (interrupted.load())
          break;
        auto now = take_top_sample(opts->tenant, opts->agents_max, code);
        if (!now) {
          result = code;
          break;
        }
        double secs = std::chrono::duration<double>(now->at - prev->at).count();
        struct row {
          std::string id;
          const top_sample::entry* e;
          double rate;
        };
        std::vector<row> rows;
        for (auto& [id, e] : now->agents) {
          auto p = prev->agents.find(id);
          uint64_t before = p == prev->agents.end() ? 0 : p->second.handled;
          double rate =
            e.handled >= before && secs > 0 ? static_cast<double>(e.handled - before) / secs : 0.0;
          rows.push_back({id, &e, rate});
        }
        std::stable_sort(rows.begin(), rows.end(), [](const row& x, const row& y) {
          return x.rate != y.rate ? x.rate > y.rate : x.id < y.id;
        });
        if (rows.size() > opts->limit)
          rows.resize(opts->limit);
        if (json_output) {
          auto arr = nlohmann::json::array();
          for (auto& r : rows)
            arr.push_back({{"id", r.id},
                           {"kind", r.e->kind},
                           {"node", r.e->node},
                           {"handled", r.e->handled},
                           {"rate", r.rate}});
          std::cout << nlohmann::json{{"interval_s", secs},
                                      {"agents_sampled", now->agents.size()},
                                      {"agents", arr}}
                         .dump()
                    << std::endl;
        } else {
          if (redraw)
            std::cout << "\x1b[H\x1b[2J";
          else if (i > 0)
            std::cout << "\n";
          char head[160];
          std::snprintf(head, sizeof(head), "top: %zu agents on %s, rates over %.2f s",
                        now->agents.size(), gateway_url.c_str(), secs);
          std::cout << paint(head, "1") << "\n";
          table t{{"MSGS/S", "HANDLED", "ID", "KIND", "NODE"}, {}, {}};
          for (auto& r : rows) {
            char rate[32];
            std::snprintf(rate, sizeof(rate), "%.1f", r.rate);
            t.rows.push_back({rate, std::to_string(r.e->handled), r.id, r.e->kind, r.e->node});
          }
          t.print(std::cout);
        }
        prev = std::move(now);
      }
      std::signal(SIGINT, old_handler);
      if (!prev)
        return code;
      return result;
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
      if (!hive::replicator::is_copy_key(m.hdr.agent)) // replica copies are not agents here
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

// -- settings: flags > environment > config file > defaults -------------------------------

/// What a config file (TOML) may set: `url`, `token` or `token_file`, and `ca_file`.
struct config_file {
  std::string path;
  std::string url;
  std::string token;
  std::string token_file;
  std::string ca_file;
};

/// The config file to read: `--config`, else $HIVE_CONFIG, else ~/.config/hive/agentctl.toml
/// if it exists (else none: empty).
std::string config_path(const std::string& flag) {
  if (!flag.empty())
    return flag;
  if (auto* env = std::getenv("HIVE_CONFIG"); env != nullptr && *env != '\0')
    return env;
  if (auto* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    auto p = std::filesystem::path{home} / ".config" / "hive" / "agentctl.toml";
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec))
      return p.string();
  }
  return {};
}

/// Reads a config file. Errors (invalid_config) name the file and, if it is one, the key.
caf::expected<config_file> load_config_file(const std::string& path) {
  config_file cfg;
  cfg.path = path;
  auto bad = [&](const std::string& why) {
    return hive::make_error(hive::errc::invalid_config, "config file '" + path + "': " + why);
  };
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return bad("cannot be read (no such file)");
  toml::table tbl;
  try {
    tbl = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    auto& where = e.source().begin;
    return bad("line " + std::to_string(where.line) + ", column " + std::to_string(where.column)
               + ": " + std::string{e.description()});
  }
  for (auto& [key, node] : tbl) {
    std::string k{key.str()};
    std::string* field = k == "url" ? &cfg.url
      : k == "token"                ? &cfg.token
      : k == "token_file"           ? &cfg.token_file
      : k == "ca_file"              ? &cfg.ca_file
                                    : nullptr;
    if (field == nullptr)
      return bad("unknown key '" + k + "' (known: url, token, token_file, ca_file)");
    auto v = node.value<std::string>();
    if (!v || node.type() != toml::node_type::string || v->empty())
      return bad("key '" + k + "' must be a non-empty string");
    *field = *v;
  }
  if (!cfg.token.empty() && !cfg.token_file.empty())
    return bad("keys 'token' and 'token_file' are both set: keep one");
  if (!cfg.url.empty())
    if (auto u = parse_node_url(cfg.url); !u)
      return bad("key 'url': " + hive::message_of(u.error()));
  for (auto* f : {&cfg.token_file, &cfg.ca_file})
    if (!f->empty() && f->front() != '/') // relative to the file
      *f = (std::filesystem::path{path}.parent_path() / *f).lexically_normal().string();
  return cfg;
}

/// The global flags of one command line.
struct global_flags {
  std::string url;
  std::string token;
  std::string token_file;
  std::string ca_file;
  std::string config;
  bool json = false;
};

/// What the shell started with; each of its lines starts from these.
struct shell_base {
  std::string url;
  std::string token;
  std::string ca_file;
  bool json = false;
};

/// Sets `gateway_url`, `ca_file`, `bearer_token` and `json_output` from `f`, then (outside the
/// shell) the environment, then the config file, then the defaults; in the shell, from `f`, then a
/// `--config` given on the line, then what the shell started with. Errors: exit code 2.
int apply_settings(const global_flags& f, const shell_base* base) {
  config_file cfg;
  auto path = base != nullptr ? f.config : config_path(f.config);
  if (!path.empty()) {
    auto loaded = load_config_file(path);
    if (!loaded)
      return fail(exit_usage, hive::message_of(loaded.error()));
    cfg = std::move(*loaded);
  }
  auto env = [&](const char* name) -> std::string {
    if (base != nullptr)
      return {};
    auto* v = std::getenv(name);
    return v != nullptr ? v : "";
  };
  json_output = f.json || (base != nullptr && base->json);
  // The first that is set: the flag, the environment, the config file, the shell's, else
  // `fallback`.
  auto pick = [&](const std::string& flag, const char* var, const std::string& file,
                  const std::string* shell, std::string fallback) {
    if (!flag.empty())
      return flag;
    if (auto e = env(var); !e.empty())
      return e;
    if (!file.empty())
      return file;
    return shell != nullptr ? *shell : fallback;
  };
  gateway_url = pick(f.url, "HIVE_URL", cfg.url, base != nullptr ? &base->url : nullptr,
                     "http://127.0.0.1:8080");
  ca_file =
    pick(f.ca_file, "HIVE_CA_FILE", cfg.ca_file, base != nullptr ? &base->ca_file : nullptr, {});
  if (!ca_file.empty()) {
    std::ifstream probe{ca_file};
    if (!probe)
      return fail(exit_usage,
                  "CA file '" + ca_file
                    + "' cannot be read (--ca-file, "
                      "$HIVE_CA_FILE or the config file's ca_file)");
  }
  auto from_file = [&](const std::string& file, const std::string& what) -> int {
    auto t = read_token_file(file, what);
    if (!t)
      return fail(exit_usage, hive::message_of(t.error()));
    bearer_token = *t;
    return exit_ok;
  };
  bearer_token.clear();
  if (!f.token.empty())
    bearer_token = f.token;
  else if (!f.token_file.empty())
    return from_file(f.token_file, "--token-file");
  else if (auto e = env("HIVE_TOKEN"); !e.empty())
    bearer_token = e;
  else if (auto ef = env("HIVE_TOKEN_FILE"); !ef.empty())
    return from_file(ef, "$HIVE_TOKEN_FILE");
  else if (!cfg.token.empty())
    bearer_token = cfg.token;
  else if (!cfg.token_file.empty())
    return from_file(cfg.token_file, "token_file of config file '" + cfg.path + "'");
  else if (base != nullptr)
    bearer_token = base->token;
  return exit_ok;
}

// -- the shell ------------------------------------------------------------------------------

/// Splits a shell line into words: blanks separate; '...' is literal; "..." and a backslash
/// outside quotes escape the next character (\" \\ inside "..."). Error: an open quote.
caf::expected<std::vector<std::string>> split_words(const std::string& line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == ' ' || c == '\t') {
      if (in_word)
        words.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'') {
      auto end = line.find('\'', i + 1);
      if (end == std::string::npos)
        return hive::make_error(hive::errc::invalid_argument, "unterminated ' quote");
      word += line.substr(i + 1, end - i - 1);
      i = end;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < line.size() && line[j] != '"'; ++j) {
        if (line[j] == '\\' && j + 1 < line.size() && (line[j + 1] == '"' || line[j + 1] == '\\'))
          ++j;
        word += line[j];
      }
      if (j >= line.size())
        return hive::make_error(hive::errc::invalid_argument, "unterminated \" quote");
      i = j;
    } else if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
    } else {
      word += c;
    }
  }
  if (in_word)
    words.push_back(std::move(word));
  return words;
}

/// Words the shell completes: the subcommand names (set at start), agent ids (cached).
std::vector<std::string> shell_commands;
std::vector<std::string> agent_id_cache;
bool agent_id_cache_valid = false;
std::vector<std::string> completion_candidates;

/// The ids of agents the caller may see (at most 10,000), fetched quietly once and cached.
const std::vector<std::string>& agent_ids() {
  if (!agent_id_cache_valid) {
    int code = exit_ok;
    quiet_errors = true;
    auto all = list_agents({}, {}, {}, 10000, "agents", code);
    quiet_errors = false;
    agent_id_cache.clear();
    if (all)
      for (auto& a : *all)
        agent_id_cache.push_back(a.value("id", ""));
    agent_id_cache_valid = all.has_value();
  }
  return agent_id_cache;
}

char* completion_generator(const char* text, int state) {
  static size_t next = 0;
  if (state == 0)
    next = 0;
  std::string_view prefix{text};
  while (next < completion_candidates.size()) {
    auto& c = completion_candidates[next++];
    if (c.compare(0, prefix.size(), prefix) == 0)
      return ::strdup(c.c_str());
  }
  return nullptr;
}

/// Tab: the first word completes to a subcommand, `keys` to its own, the others to agent ids.
char** complete_word(const char* text, int start, int) {
  rl_attempted_completion_over = 1; // never file names
  auto before = split_words(std::string{rl_line_buffer, static_cast<size_t>(std::max(start, 0))});
  std::vector<std::string> words = before ? *before : std::vector<std::string>{};
  if (words.empty())
    completion_candidates = shell_commands;
  else if (words.front() == "keys" && words.size() == 1)
    completion_candidates = {"create", "list", "revoke"};
  else if (text[0] == '-')
    completion_candidates.clear();
  else
    completion_candidates = agent_ids();
  return rl_completion_matches(text, completion_generator);
}

/// The history file: $HIVE_HISTORY, else ~/.local/state/hive/agentctl_history.
std::string history_path() {
  if (auto* env = std::getenv("HIVE_HISTORY"); env != nullptr && *env != '\0')
    return env;
  auto* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0')
    return {};
  auto dir = std::filesystem::path{home} / ".local" / "state" / "hive";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  return (dir / "agentctl_history").string();
}

/// Lines of history kept (in memory and in the file).
constexpr int history_lines_max = 1000;

int run_command_line(std::vector<std::string> args, const shell_base* base);

/// `shell`: reads lines with libedit and runs each as an agentctl command line.
int run_shell(const shell_base& base) {
  auto hist = history_path();
  using_history();
  stifle_history(history_lines_max);
  if (!hist.empty())
    read_history(hist.c_str());
  rl_readline_name = "agentctl";
  static char breaks[] = " \t\n\"'";
  rl_completer_word_break_characters = breaks;
  rl_attempted_completion_function = complete_word;
  // Ctrl-C at the prompt must not end the shell; in `events` and `top` it ends the command.
  std::signal(SIGINT, on_sigint);
  bool tty = ::isatty(STDIN_FILENO) == 1;
  if (tty)
    std::cout << "agentctl shell on " << base.url
              << ": Tab completes, Up/Down recall history, 'help' lists commands, "
                 "'exit' or Ctrl-D leaves"
              << std::endl;
  for (;;) {
    interrupted.store(false);
    char* raw = ::readline("agentctl> ");
    if (raw == nullptr && interrupted.load()) { // Ctrl-C: libedit gives up the line
      std::cout << std::endl;
      continue;
    }
    if (raw == nullptr) { // Ctrl-D
      if (tty)
        std::cout << std::endl;
      break;
    }
    std::string line{raw};
    ::free(raw);
    auto words = split_words(line);
    if (!words) {
      fail(exit_usage, hive::message_of(words.error()));
      continue;
    }
    if (words->empty())
      continue;
    add_history(line.c_str());
    if (!hist.empty())
      write_history(hist.c_str());
    auto& first = words->front();
    if (first == "exit" || first == "quit")
      break;
    if (first == "help") {
      words->front() = "--help";
    }
    run_command_line(*words, &base);
    if (first == "spawn" || first == "stop" || first == "migrate")
      agent_id_cache_valid = false;
  }
  if (!hist.empty()) {
    write_history(hist.c_str());
    history_truncate_file(hist.c_str(), history_lines_max);
  }
  return exit_ok;
}

/// Parses and runs one agentctl command line (`args` without the program name). In the shell
/// (`base` set) there is no `shell` subcommand and settings start from the shell's.
int run_command_line(std::vector<std::string> args, const shell_base* base) {
  CLI::App app{"agentctl: administer hive nodes", "agentctl"};
  app.require_subcommand(0, 1); // none given: reported below, after --help had its turn
  app.fallthrough();            // --token may follow the subcommand
  global_flags flags;
  app.add_option("--token", flags.token,
                 "Bearer credential: an API key or a JWT (else $HIVE_TOKEN)");
  app.add_option("--token-file", flags.token_file,
                 "File holding the credential (else $HIVE_TOKEN_FILE)");
  app.add_option("--url", flags.url,
                 "The gateway to talk to, http://HOST[:PORT] or https://HOST[:PORT] (else "
                 "$HIVE_URL, else the config file's url, else http://127.0.0.1:8080)");
  app.add_option("--ca-file", flags.ca_file,
                 "For https://: the PEM CA file the node's certificate must chain to (else "
                 "$HIVE_CA_FILE, else the config file's ca_file, else the system's trust "
                 "store)");
  app.add_option("--config", flags.config,
                 "Config file (TOML: url, token or token_file, ca_file; else $HIVE_CONFIG, else "
                 "~/.config/hive/agentctl.toml if it exists)");
  app.add_flag("--json", flags.json, "Print the node's JSON answers as they are");
  std::vector<command> commands{
    add_agents(app),        add_inspect(app),  add_spawn(app),   add_message(app, false),
    add_message(app, true), add_stop(app),     add_migrate(app), add_nodes(app),
    add_breakers(app),      add_restarts(app), add_events(app),  add_top(app),
    add_keys(app),          add_backup(app),   add_restore(app), add_capabilities(app)};
  CLI::App* shell = nullptr;
  if (base == nullptr)
    shell = app.add_subcommand("shell",
                               "Interactive shell: each line is an agentctl command "
                               "line; Tab completes commands and agent ids");
  if (!args.empty() && !args.front().empty() && args.front().front() != '-') {
    auto named = [&](const command& c) { return c.app->check_name(args.front()); };
    if (std::none_of(commands.begin(), commands.end(), named)
        && !(shell != nullptr && shell->check_name(args.front()))) {
      std::string names;
      for (auto& c : commands)
        names += (names.empty() ? "" : ", ") + c.app->get_name();
      if (shell != nullptr)
        names += ", shell";
      return fail(
        exit_usage,
        "unknown subcommand '" + args.front() + "' (known: " + names
          + (base != nullptr ? "; 'help' lists them, 'exit' leaves)" : "; run 'agentctl --help')"));
    }
  }
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    // --help (of agentctl or of a subcommand) arrives as a ParseError with exit code 0; CLI11
    // prints the help of the subcommand given, if any.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success))
      return app.exit(e);
    std::cerr << "agentctl: error: " << e.what() << "\n(run '"
              << (base != nullptr ? "help" : "agentctl --help") << "' for usage)" << std::endl;
    return exit_usage;
  }
  if (int code = apply_settings(flags, base); code != exit_ok)
    return code;
  if (shell != nullptr && shell->parsed()) {
    shell_commands.clear();
    for (auto& c : commands)
      shell_commands.push_back(c.app->get_name());
    shell_commands.insert(shell_commands.end(), {"exit", "help", "quit"});
    std::sort(shell_commands.begin(), shell_commands.end());
    return run_shell({gateway_url, bearer_token, ca_file, json_output});
  }
  for (auto& c : commands)
    if (c.app->parsed()) {
      try {
        return c.run();
      } catch (const std::exception& e) {
        return fail(exit_failed, c.app->get_name() + ": " + e.what());
      }
    }
  return fail(exit_usage,
              base != nullptr ? "no subcommand given ('help' lists them)"
                              : "no subcommand given (run 'agentctl --help')");
}

} // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  auto* no_colour = std::getenv("NO_COLOR");
  use_colour = ::isatty(STDOUT_FILENO) == 1 && (no_colour == nullptr || *no_colour == '\0');
  return run_command_line(std::vector<std::string>(argv + 1, argv + argc), nullptr);
}
