// Tests of config/: the reference file config/hive.toml against the key table, TOML loading
// errors, command-line precedence and validation.

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <toml++/toml.h>
#include <unistd.h>

#include "config/node_config.hpp"
#include "protocols/errc.hpp"

namespace {

using testing::HasSubstr;
using testing::Not;

const std::string reference_file = std::string{HIVE_SOURCE_DIR} + "/config/hive.toml";

std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

/// A file in the temp directory, removed at scope exit.
class temp_file {
public:
  explicit temp_file(const std::string& content) {
    static int counter = 0;
    path_ = (std::filesystem::temp_directory_path()
             / ("hive_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(++counter)
                + ".toml"))
              .string();
    std::ofstream out{path_, std::ios::binary};
    out << content;
  }
  ~temp_file() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;

  [[nodiscard]] const std::string& path() const {
    return path_;
  }

private:
  std::string path_;
};

/// Runs parse_command_line on `args` (argv[0] added).
caf::expected<hive::cli_result> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "agent-node");
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  return hive::parse_command_line(static_cast<int>(argv.size()), argv.data());
}

/// The message of a failed parse, or "" if it succeeded.
std::string parse_error(std::vector<std::string> args) {
  auto res = parse(std::move(args));
  if (res)
    return "";
  EXPECT_EQ(hive::code_of(res.error()), hive::errc::invalid_config)
    << hive::message_of(res.error());
  return hive::message_of(res.error());
}

/// The message of a failed apply_toml, or "" if it succeeded.
std::string toml_error(const std::string& text) {
  hive::node_config cfg;
  auto err = hive::apply_toml(cfg, text, "test.toml");
  if (!err)
    return "";
  EXPECT_EQ(hive::code_of(err), hive::errc::invalid_config) << hive::message_of(err);
  return hive::message_of(err);
}

/// The text form of a TOML value as config_keys() reports defaults.
std::string text_of(const toml::node& n) {
  if (auto i = n.as_integer())
    return std::to_string(i->get());
  if (auto s = n.as_string())
    return s->get();
  return "<not an integer or string>";
}

/// Integer keys' allowed text is a plain range `LO..HI`; the others (names, paths, endpoints,
/// levels) are strings.
bool is_string_key(const hive::config_key_info& k) {
  static const std::regex range{"-?[0-9]+\\.\\.-?[0-9]+"};
  return !std::regex_match(k.allowed, range);
}

// -- the reference file -------------------------------------------------------------------------

TEST(ReferenceFile, LoadsCleanlyThroughApplyTomlFile) {
  hive::node_config cfg;
  auto err = hive::apply_toml_file(cfg, reference_file);
  ASSERT_FALSE(err) << hive::message_of(err);
  EXPECT_FALSE(hive::validate(cfg)) << hive::message_of(hive::validate(cfg));
}

TEST(ReferenceFile, ListsEveryKeyWithItsDefaultValue) {
  toml::table tbl;
  ASSERT_NO_THROW(tbl = toml::parse_file(reference_file));
  auto keys = hive::config_keys();
  ASSERT_GE(keys.size(), 30u);
  for (auto& k : keys) {
    auto node = tbl.at_path(k.path);
    ASSERT_TRUE(node) << k.path << " is missing from config/hive.toml";
    EXPECT_EQ(text_of(*node.node()), k.default_value)
      << k.path << " in config/hive.toml differs from the built-in default";
    if (is_string_key(k))
      EXPECT_TRUE(node.is_string()) << k.path << " must be a string in config/hive.toml";
    else
      EXPECT_TRUE(node.is_integer()) << k.path << " must be an integer in config/hive.toml";
  }
}

TEST(ReferenceFile, HasNoKeyOutsideTheKeyTable) {
  auto tbl = toml::parse_file(reference_file);
  std::set<std::string> known;
  for (auto& k : hive::config_keys())
    known.insert(k.path);
  size_t seen = 0;
  for (auto&& [section, sub] : tbl) {
    ASSERT_TRUE(sub.is_table()) << "top-level key '" << section.str() << "' outside a section";
    for (auto&& [key, value] : *sub.as_table()) {
      auto path = std::string{section.str()} + "." + std::string{key.str()};
      EXPECT_TRUE(known.count(path)) << path << " is not a config key";
      ++seen;
    }
  }
  EXPECT_EQ(seen, known.size());
}

TEST(ReferenceFile, DocumentsUnitRangeAndDefaultAboveEachKey) {
  // Above each `key = value` line: a comment line `# <unit>, <allowed>, default <default>`.
  std::istringstream in{read_file(reference_file)};
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  for (auto& k : hive::config_keys()) {
    auto dot = k.path.find('.');
    auto section = "[" + k.path.substr(0, dot) + "]";
    auto key = k.path.substr(dot + 1);
    bool in_section = false;
    bool found = false;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (!lines[i].empty() && lines[i][0] == '[')
        in_section = lines[i] == section;
      if (!in_section || lines[i].rfind(key + " = ", 0) != 0)
        continue;
      found = true;
      ASSERT_GT(i, 0u);
      auto shown = is_string_key(k) ? "\"" + k.default_value + "\"" : k.default_value;
      auto expected = "# " + k.unit + ", " + k.allowed + ", default " + shown;
      EXPECT_EQ(lines[i - 1].substr(0, expected.size()), expected)
        << "the line above " << k.path << " in config/hive.toml";
      EXPECT_TRUE(i >= 2 && lines[i - 2].rfind("# ", 0) == 0)
        << k.path << " has no description line in config/hive.toml";
    }
    EXPECT_TRUE(found) << k.path << " has no `" << key << " = ` line under " << section;
  }
}

TEST(ConfigKeys, PathsAreUniqueAndSectioned) {
  std::set<std::string> seen;
  for (auto& k : hive::config_keys()) {
    EXPECT_TRUE(seen.insert(k.path).second) << "duplicate key " << k.path;
    EXPECT_NE(k.path.find('.'), std::string::npos) << k.path;
    EXPECT_FALSE(k.unit.empty()) << k.path;
    EXPECT_FALSE(k.allowed.empty()) << k.path;
  }
}

TEST(ConfigKeys, EveryDefaultIsAcceptedBySetConfigKey) {
  for (auto& k : hive::config_keys()) {
    hive::node_config cfg;
    auto err = hive::set_config_key(cfg, k.path, k.default_value);
    EXPECT_FALSE(err) << k.path << ": " << hive::message_of(err);
  }
  EXPECT_FALSE(hive::validate(hive::node_config{}));
}

// -- TOML errors ----------------------------------------------------------------------------------

TEST(Toml, AppliesValuesOfEveryKind) {
  hive::node_config cfg;
  auto err = hive::apply_toml(cfg, R"(
[node]
name = "n-2"
scheduler_threads = 3
[gateway]
listen = "0.0.0.0:0"
body_bytes_max = 2048
[metrics]
listen = "localhost:9999"
[log]
level = "debug"
)",
                              "test.toml");
  ASSERT_FALSE(err) << hive::message_of(err);
  EXPECT_EQ(cfg.node.name, "n-2");
  EXPECT_EQ(cfg.node.scheduler_threads, 3);
  EXPECT_EQ(cfg.gateway.listen.host, "0.0.0.0");
  EXPECT_EQ(cfg.gateway.listen.port, 0);
  EXPECT_EQ(cfg.gateway.body_bytes_max, 2048);
  EXPECT_EQ(cfg.metrics.listen.str(), "localhost:9999");
  EXPECT_EQ(cfg.log.level, "debug");
  // Keys the document does not name keep their defaults.
  EXPECT_EQ(cfg.gateway.threads, hive::node_config{}.gateway.threads);
}

TEST(Toml, UnknownKeyIsAnErrorNamingIt) {
  EXPECT_THAT(toml_error("[gateway]\nbogus_key = 1\n"), HasSubstr("'gateway.bogus_key'"));
  EXPECT_THAT(toml_error("[gateway]\nbogus_key = 1\n"), HasSubstr("test.toml"));
  EXPECT_THAT(toml_error("[nosuch]\nkey = \"x\"\n"), HasSubstr("'nosuch.key'"));
  EXPECT_THAT(toml_error("name = \"n1\"\n"), HasSubstr("'name'"));
  EXPECT_THAT(toml_error("[node.extra]\nx = 1\n"), HasSubstr("node.extra"));
}

TEST(Toml, OutOfRangeValueIsAnErrorNamingKeyValueAndRange) {
  auto msg = toml_error("[gateway]\nbody_bytes_max = 0\n");
  EXPECT_THAT(msg, HasSubstr("gateway.body_bytes_max"));
  EXPECT_THAT(msg, HasSubstr("'0'"));
  EXPECT_THAT(msg, HasSubstr("1..67108864"));
  EXPECT_THAT(msg, HasSubstr("bytes"));
  msg = toml_error("[supervision]\nbackoff_jitter_percent = 101\n");
  EXPECT_THAT(msg, HasSubstr("supervision.backoff_jitter_percent"));
  EXPECT_THAT(msg, HasSubstr("'101'"));
  EXPECT_THAT(msg, HasSubstr("0..100"));
  msg = toml_error("[node]\nscheduler_threads = -1\n");
  EXPECT_THAT(msg, HasSubstr("node.scheduler_threads"));
  EXPECT_THAT(msg, HasSubstr("'-1'"));
  EXPECT_THAT(msg, HasSubstr("0..256"));
  msg = toml_error("[log]\nlevel = \"loud\"\n");
  EXPECT_THAT(msg, HasSubstr("log.level"));
  EXPECT_THAT(msg, HasSubstr("'loud'"));
  EXPECT_THAT(msg, HasSubstr("trace|debug|info|warn|error|critical|off"));
  msg = toml_error("[node]\nname = \"Node One\"\n");
  EXPECT_THAT(msg, HasSubstr("node.name"));
  EXPECT_THAT(msg, HasSubstr("'Node One'"));
  msg = toml_error("[node]\ndata_dir = \"\"\n");
  EXPECT_THAT(msg, HasSubstr("node.data_dir"));
  msg = toml_error("[gateway]\nlisten = \"127.0.0.1:65536\"\n");
  EXPECT_THAT(msg, HasSubstr("gateway.listen"));
  EXPECT_THAT(msg, HasSubstr("127.0.0.1:65536"));
  EXPECT_THAT(msg, HasSubstr("0..65535"));
}

TEST(Toml, WrongTypeIsAnError) {
  auto msg = toml_error("[gateway]\nbody_bytes_max = \"1MiB\"\n");
  EXPECT_THAT(msg, HasSubstr("gateway.body_bytes_max"));
  EXPECT_THAT(msg, HasSubstr("integer"));
  msg = toml_error("[gateway]\nthreads = 1.5\n");
  EXPECT_THAT(msg, HasSubstr("gateway.threads"));
  EXPECT_THAT(msg, HasSubstr("integer"));
  msg = toml_error("[gateway]\nthreads = true\n");
  EXPECT_THAT(msg, HasSubstr("gateway.threads"));
  msg = toml_error("[gateway]\nlisten = 8080\n");
  EXPECT_THAT(msg, HasSubstr("gateway.listen"));
  EXPECT_THAT(msg, HasSubstr("string"));
  msg = toml_error("[gateway]\nlisten = { host = \"127.0.0.1\", port = 1 }\n");
  EXPECT_THAT(msg, HasSubstr("gateway.listen"));
  msg = toml_error("[log]\nlevel = 3\n");
  EXPECT_THAT(msg, HasSubstr("log.level"));
  msg = toml_error("gateway = 1\n");
  EXPECT_THAT(msg, HasSubstr("'gateway'"));
}

TEST(Toml, SyntaxErrorNamesOriginAndLine) {
  auto msg = toml_error("[node]\nname = \"a\"\nscheduler_threads = = 3\n");
  EXPECT_THAT(msg, HasSubstr("test.toml:3:"));
  EXPECT_THAT(msg, HasSubstr("syntax error"));
  msg = toml_error("[node]\nname = \"a\"\nname = \"b\"\n");
  EXPECT_THAT(msg, HasSubstr("test.toml:3:"));
}

TEST(Toml, MissingFileIsAnErrorNamingIt) {
  hive::node_config cfg;
  auto err = hive::apply_toml_file(cfg, "/nonexistent/hive.toml");
  ASSERT_TRUE(err);
  EXPECT_THAT(hive::message_of(err), HasSubstr("/nonexistent/hive.toml"));
}

TEST(Toml, ErrorInAFileNamesTheFileAndLine) {
  temp_file f{"[gateway]\n\nthreads = 0\n"};
  hive::node_config cfg;
  auto err = hive::apply_toml_file(cfg, f.path());
  ASSERT_TRUE(err);
  EXPECT_THAT(hive::message_of(err), HasSubstr(f.path()));
  EXPECT_THAT(hive::message_of(err), HasSubstr("gateway.threads"));
  temp_file g{"[gateway]\n\nthreads = \n"};
  err = hive::apply_toml_file(cfg, g.path());
  ASSERT_TRUE(err);
  EXPECT_THAT(hive::message_of(err), HasSubstr(g.path() + ":3:"));
}

// -- set_config_key -------------------------------------------------------------------------------

TEST(SetConfigKey, ParsesAndChecksText) {
  hive::node_config cfg;
  EXPECT_FALSE(hive::set_config_key(cfg, "gateway.threads", "4"));
  EXPECT_EQ(cfg.gateway.threads, 4);
  EXPECT_THAT(hive::message_of(hive::set_config_key(cfg, "gateway.threads", "4x")),
              HasSubstr("gateway.threads"));
  EXPECT_THAT(hive::message_of(hive::set_config_key(cfg, "gateway.threads", "")),
              HasSubstr("gateway.threads"));
  EXPECT_THAT(hive::message_of(hive::set_config_key(cfg, "gateway.threads", "65")),
              HasSubstr("1..64"));
  EXPECT_THAT(
    hive::message_of(hive::set_config_key(cfg, "gateway.threads", "99999999999999999999")),
    HasSubstr("gateway.threads"));
  EXPECT_THAT(hive::message_of(hive::set_config_key(cfg, "gateway.nope", "1")),
              HasSubstr("'gateway.nope'"));
  EXPECT_EQ(cfg.gateway.threads, 4) << "a rejected value must not change the config";
}

// -- command line ---------------------------------------------------------------------------------

TEST(CommandLine, NoArgumentsGiveTheDefaults) {
  auto res = parse({});
  ASSERT_TRUE(res) << hive::message_of(res.error());
  EXPECT_FALSE(res->exit_now);
  hive::node_config defaults;
  EXPECT_EQ(res->config.node.name, defaults.node.name);
  EXPECT_EQ(res->config.gateway.listen.str(), "127.0.0.1:8080");
  EXPECT_EQ(res->config.metrics.listen.str(), "127.0.0.1:9464");
  EXPECT_EQ(res->config.node.data_dir, "./hive-data");
  EXPECT_EQ(res->config.log.level, "info");
}

TEST(CommandLine, ConfigFileValuesApply) {
  temp_file f{"[node]\nname = \"fromfile\"\n[gateway]\nlisten = \"127.0.0.1:1111\"\n"};
  auto res = parse({"--config", f.path()});
  ASSERT_TRUE(res) << hive::message_of(res.error());
  EXPECT_EQ(res->config.node.name, "fromfile");
  EXPECT_EQ(res->config.gateway.listen.port, 1111);
}

TEST(CommandLine, FlagsOverrideTheConfigFile) {
  temp_file f{R"([node]
name = "fromfile"
data_dir = "/tmp/fromfile"
[gateway]
listen = "127.0.0.1:1111"
body_bytes_max = 2048
[metrics]
listen = "127.0.0.1:2222"
[log]
level = "debug"
)"};
  // Flags before and after --config: the file is applied first either way.
  auto res =
    parse({"--name", "fromcli", "--config", f.path(), "--data-dir", "/tmp/fromcli", "--gateway",
           "127.0.0.1:3333", "--metrics", "127.0.0.1:0", "--log-level", "warn", "--set",
           "gateway.body_bytes_max=4096", "--set", "breaker.half_open_probes=3"});
  ASSERT_TRUE(res) << hive::message_of(res.error());
  auto& cfg = res->config;
  EXPECT_EQ(cfg.node.name, "fromcli");
  EXPECT_EQ(cfg.node.data_dir, "/tmp/fromcli");
  EXPECT_EQ(cfg.gateway.listen.str(), "127.0.0.1:3333");
  EXPECT_EQ(cfg.metrics.listen.str(), "127.0.0.1:0");
  EXPECT_EQ(cfg.log.level, "warn");
  EXPECT_EQ(cfg.gateway.body_bytes_max, 4096);
  EXPECT_EQ(cfg.breaker.half_open_probes, 3);
}

TEST(CommandLine, SetOverridesFlags) {
  auto res = parse({"--gateway", "127.0.0.1:3333", "--set", "gateway.listen=127.0.0.1:4444"});
  ASSERT_TRUE(res) << hive::message_of(res.error());
  EXPECT_EQ(res->config.gateway.listen.port, 4444);
}

TEST(CommandLine, BadGatewayIsAnErrorNamingFlagAndValue) {
  auto msg = parse_error({"--gateway", "127.0.0.1"});
  EXPECT_THAT(msg, HasSubstr("--gateway"));
  EXPECT_THAT(msg, HasSubstr("'127.0.0.1'"));
  msg = parse_error({"--gateway", "127.0.0.1:70000"});
  EXPECT_THAT(msg, HasSubstr("--gateway"));
  EXPECT_THAT(msg, HasSubstr("70000"));
  EXPECT_THAT(msg, HasSubstr("0..65535"));
  EXPECT_THAT(parse_error({"--gateway", "127.0.0.1:"}), HasSubstr("--gateway"));
  EXPECT_THAT(parse_error({"--gateway", ":8080"}), HasSubstr("empty host"));
  EXPECT_THAT(parse_error({"--gateway", "127.0.0.1:80a"}), HasSubstr("80a"));
  EXPECT_THAT(parse_error({"--gateway", "127.0.0.1:-1"}), HasSubstr("-1"));
  EXPECT_THAT(parse_error({"--gateway", ""}), HasSubstr("--gateway"));
  EXPECT_THAT(parse_error({"--metrics", "localhost"}), HasSubstr("--metrics"));
}

TEST(CommandLine, PortZeroMeansEphemeralAndIsAccepted) {
  auto res = parse({"--gateway", "127.0.0.1:0", "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(res) << hive::message_of(res.error());
  EXPECT_EQ(res->config.gateway.listen.port, 0);
  EXPECT_EQ(res->config.metrics.listen.port, 0);
  auto ep = hive::parse_endpoint("[::1]:65535", "test");
  ASSERT_TRUE(ep);
  EXPECT_EQ(ep->host, "[::1]");
  EXPECT_EQ(ep->port, 65535);
}

TEST(CommandLine, OtherBadFlagsAreErrors) {
  EXPECT_THAT(parse_error({"--log-level", "loud"}), HasSubstr("--log-level"));
  EXPECT_THAT(parse_error({"--name", "Bad Name"}), HasSubstr("--name"));
  EXPECT_THAT(parse_error({"--name", ""}), HasSubstr("--name"));
  EXPECT_THAT(parse_error({"--data-dir", ""}), HasSubstr("--data-dir"));
  EXPECT_THAT(parse_error({"--set", "gateway.threads"}), HasSubstr("section.key=value"));
  EXPECT_THAT(parse_error({"--set", "gateway.nope=1"}), HasSubstr("'gateway.nope'"));
  EXPECT_THAT(parse_error({"--set", "gateway.threads=0"}), HasSubstr("1..64"));
  EXPECT_THAT(parse_error({"--config", "/nonexistent/x.toml"}), HasSubstr("/nonexistent/x.toml"));
  auto res = parse({"--no-such-flag"});
  ASSERT_FALSE(res);
  EXPECT_THAT(hive::message_of(res.error()), HasSubstr("--no-such-flag"));
  res = parse({"stray-positional"});
  EXPECT_FALSE(res);
}

TEST(CommandLine, HelpAndVersionAskTheCallerToExit) {
  testing::internal::CaptureStdout();
  auto res = parse({"--help"});
  auto out = testing::internal::GetCapturedStdout();
  ASSERT_TRUE(res);
  EXPECT_TRUE(res->exit_now);
  EXPECT_THAT(out, HasSubstr("--gateway"));
  testing::internal::CaptureStdout();
  res = parse({"--version"});
  out = testing::internal::GetCapturedStdout();
  ASSERT_TRUE(res);
  EXPECT_TRUE(res->exit_now);
  EXPECT_THAT(out, HasSubstr("0.1.0"));
}

// -- cross-key validation -------------------------------------------------------------------------

TEST(Validate, AskTimeoutDefaultAboveMaxIsAnError) {
  auto msg = parse_error({"--set", "gateway.ask_timeout_ms_default=70000"});
  EXPECT_THAT(msg, HasSubstr("gateway.ask_timeout_ms_default"));
  EXPECT_THAT(msg, HasSubstr("70000"));
  EXPECT_THAT(msg, HasSubstr("gateway.ask_timeout_ms_max"));
  // Equal is fine; raising the max with it is fine.
  EXPECT_TRUE(parse({"--set", "gateway.ask_timeout_ms_default=60000"}));
  EXPECT_TRUE(parse({"--set", "gateway.ask_timeout_ms_default=70000", "--set",
                     "gateway.ask_timeout_ms_max=70000"}));
}

TEST(Validate, OtherCrossKeyRules) {
  hive::node_config cfg;
  cfg.supervision.backoff_initial_ms = 6000;
  EXPECT_THAT(hive::message_of(hive::validate(cfg)), HasSubstr("supervision.backoff_initial_ms"));
  cfg = {};
  cfg.breaker.reset_timeout_ms = 40000;
  EXPECT_THAT(hive::message_of(hive::validate(cfg)), HasSubstr("breaker.reset_timeout_ms"));
  cfg = {};
  cfg.cluster.migration_quiet_wait_ms = 2501; // more than half of migration_timeout_ms 5000
  EXPECT_THAT(hive::message_of(hive::validate(cfg)),
              HasSubstr("'cluster.migration_quiet_wait_ms' = 2501 exceeds half"));
  cfg.cluster.migration_quiet_wait_ms = 2500;
  EXPECT_FALSE(hive::validate(cfg));
  // A config file that breaks a rule is refused at start-up (parse_command_line validates).
  temp_file f{"[breaker]\nreset_timeout_ms = 40000\n"};
  EXPECT_THAT(parse_error({"--config", f.path()}), HasSubstr("breaker.reset_timeout_ms_max"));
}

} // namespace

TEST(CommandLine, ClusterAndSeedFlagsSetTheClusterKeys) {
  auto r =
    parse({"--cluster", "127.0.0.1:7101", "--seed", "127.0.0.1:7102", "--seed", "10.0.0.3:7103"});
  ASSERT_TRUE(r) << hive::message_of(r.error());
  EXPECT_EQ(r->config.cluster.listen, "127.0.0.1:7101");
  EXPECT_EQ(r->config.cluster.seeds, "127.0.0.1:7102,10.0.0.3:7103");
  auto seeds = hive::parse_endpoint_list(r->config.cluster.seeds, "cluster.seeds");
  ASSERT_TRUE(seeds);
  ASSERT_EQ(seeds->size(), 2u);
  EXPECT_EQ((*seeds)[1].host, "10.0.0.3");
  EXPECT_EQ((*seeds)[1].port, 7103);
  // Standalone by default; seeds from a config file and flags add up.
  auto d = parse({});
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->config.cluster.listen.empty());
  EXPECT_TRUE(d->config.cluster.seeds.empty());
}

TEST(CommandLine, BinaryListenerIsOffByDefaultAndFlagOrKeyEnablesIt) {
  auto d = parse({});
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->config.binary.listen.empty());
  auto r = parse({"--binary", "127.0.0.1:0", "--set", "binary.inflight_requests_max=7"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->config.binary.listen, "127.0.0.1:0");
  EXPECT_EQ(r->config.binary.inflight_requests_max, 7);
  EXPECT_THAT(parse_error({"--binary", "nohost"}), HasSubstr("binary.listen"));
  EXPECT_THAT(parse_error({"--binary", "127.0.0.1:99999"}), HasSubstr("binary.listen"));
  EXPECT_THAT(parse_error({"--set", "binary.frame_bytes_max=8"}),
              HasSubstr("binary.frame_bytes_max"));
  EXPECT_THAT(parse_error({"--set", "quota.agents_max=0"}), HasSubstr("quota.agents_max"));
}

TEST(CommandLine, BadClusterAddressesAreErrorsNamingWhatWasWrong) {
  EXPECT_THAT(parse_error({"--seed", "127.0.0.1"}), HasSubstr("--seed"));
  EXPECT_THAT(parse_error({"--seed", "127.0.0.1:0"}), HasSubstr("port 0"));
  EXPECT_THAT(parse_error({"--cluster", "nohost"}), HasSubstr("cluster.listen"));
  EXPECT_THAT(parse_error({"--set", "cluster.name=Bad"}), HasSubstr("cluster.name"));
  EXPECT_THAT(parse_error({"--set", "cluster.down_after_ms=10"}),
              HasSubstr("cluster.down_after_ms"));
  std::string many;
  for (int i = 0; i < 65; ++i) {
    if (i > 0)
      many.push_back(',');
    many.append("h:").append(std::to_string(1000 + i));
  }
  EXPECT_THAT(parse_error({"--set", "cluster.seeds=" + many}), HasSubstr("more than 64"));
}
