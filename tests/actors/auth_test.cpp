// Gateway security parts on their own: base64url, HS256 JWT verification (every claim check and
// every forgery), the API key store (hashing, persistence, damaged files, bounds), the tenant
// token buckets (counted on a hand-moved clock) and the audit log (lines, rotation).

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/auth.hpp"
#include "protocols/errc.hpp"
#include "support/node_process.hpp"

namespace {

using hive::errc;
using hive::role;
using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string secret = "0123456789abcdef0123456789abcdef-test-secret";
constexpr int64_t now_ms = 1'800'000'000'000; // a fixed "now" (Unix ms)

hive::jwt_rules rules() {
  return {secret, "hive", "hive", 30000};
}

json good_claims() {
  return {{"iss", "hive"},
          {"aud", "hive"},
          {"sub", "ci-bot"},
          {"tenant", "beta"},
          {"role", "operator"},
          {"exp", now_ms / 1000 + 600},
          {"nbf", now_ms / 1000 - 10}};
}

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in{p};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// -- base64url ------------------------------------------------------------------------------------

TEST(Base64Url, RoundTripsEveryLengthAndRejectsOutsiders) {
  std::string data;
  for (int i = 0; i < 70; ++i) {
    auto enc = hive::base64url_encode(data);
    EXPECT_EQ(enc.find_first_of("+/="), std::string::npos) << enc;
    auto dec = hive::base64url_decode(enc);
    ASSERT_TRUE(dec) << enc;
    EXPECT_EQ(*dec, data);
    data.push_back(static_cast<char>(i * 37));
  }
  EXPECT_EQ(hive::base64url_encode("hi?"), "aGk_");
  EXPECT_FALSE(hive::base64url_decode("aGk/")); // '/' is base64, not base64url
  EXPECT_FALSE(hive::base64url_decode("aGk=")); // no padding
  EXPECT_FALSE(hive::base64url_decode("a"));    // impossible length
  EXPECT_FALSE(hive::base64url_decode("aGl"));  // non-zero leftover bits ("aGk" is canonical)
}

TEST(Crypto, Sha256AndHmacMatchKnownVectors) {
  EXPECT_EQ(hive::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // RFC 4231 test case 2.
  auto mac = hive::hmac_sha256("Jefe", "what do ya want for nothing?");
  std::string hex;
  for (unsigned char c : mac) {
    static const char* d = "0123456789abcdef";
    hex += d[c >> 4];
    hex += d[c & 15];
  }
  EXPECT_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_NE(hive::random_hex(16), hive::random_hex(16));
  EXPECT_EQ(hive::random_hex(16).size(), 32u);
}

// -- JWT ------------------------------------------------------------------------------------------

TEST(Jwt, AValidTokenYieldsItsPrincipal) {
  auto p = hive::verify_jwt(hive::sign_jwt(good_claims(), secret), rules(), now_ms);
  ASSERT_TRUE(p) << hive::message_of(p.error());
  EXPECT_EQ(p->subject, "jwt:ci-bot");
  EXPECT_EQ(p->tenant, "beta");
  EXPECT_EQ(p->level, role::operator_);
  // aud may be an array holding ours.
  auto c = good_claims();
  c["aud"] = json::array({"other", "hive"});
  EXPECT_TRUE(hive::verify_jwt(hive::sign_jwt(c, secret), rules(), now_ms));
}

/// Each row: what is changed, and a word the error must name.
struct bad_case {
  std::string what;
  std::function<std::string()> token;
  std::string names;
};

TEST(Jwt, EveryBrokenOrForgedTokenIsUnauthenticated) {
  auto with = [](std::function<void(json&)> f) {
    auto c = good_claims();
    f(c);
    return hive::sign_jwt(c, secret);
  };
  auto good = hive::sign_jwt(good_claims(), secret);
  std::vector<bad_case> cases{
    {"expired", [&] { return with([](json& c) { c["exp"] = now_ms / 1000 - 31; }); }, "expired"},
    {"not yet valid", [&] { return with([](json& c) { c["nbf"] = now_ms / 1000 + 31; }); },
     "not valid before"},
    {"no exp", [&] { return with([](json& c) { c.erase("exp"); }); }, "exp"},
    {"exp a string", [&] { return with([](json& c) { c["exp"] = "soon"; }); }, "exp"},
    {"wrong audience", [&] { return with([](json& c) { c["aud"] = "other"; }); }, "aud"},
    {"no audience", [&] { return with([](json& c) { c.erase("aud"); }); }, "aud"},
    {"wrong issuer", [&] { return with([](json& c) { c["iss"] = "evil"; }); }, "iss"},
    {"bad role", [&] { return with([](json& c) { c["role"] = "root"; }); }, "role"},
    {"no tenant", [&] { return with([](json& c) { c.erase("tenant"); }); }, "tenant"},
    {"bad tenant", [&] { return with([](json& c) { c["tenant"] = "Beta!"; }); }, "tenant"},
    {"star tenant for operator", [&] { return with([](json& c) { c["tenant"] = "*"; }); },
     "tenant"},
    {"no sub", [&] { return with([](json& c) { c.erase("sub"); }); }, "sub"},
    {"other secret",
     [&] { return hive::sign_jwt(good_claims(), "another-secret-another-secret-another"); },
     "signature"},
    {"alg none",
     [&] {
       auto t = hive::sign_jwt(good_claims(), secret, json{{"alg", "none"}, {"typ", "JWT"}});
       return t.substr(0, t.rfind('.') + 1);
     },
     "alg"},
    {"alg HS512 header",
     [&] {
       return hive::sign_jwt(good_claims(), secret, json{{"alg", "HS512"}});
     },
     "alg"},
    {"alg RS256 header",
     [&] {
       return hive::sign_jwt(good_claims(), secret, json{{"alg", "RS256"}});
     },
     "alg"},
    {"typ not JWT",
     [&] {
       return hive::sign_jwt(good_claims(), secret, json{{"alg", "HS256"}, {"typ", "x"}});
     },
     "typ"},
    {"payload swapped (role raised)",
     [&] {
       auto c = good_claims();
       c["role"] = "admin";
       auto forged = hive::sign_jwt(c, secret);
       auto d1 = good.find('.');
       auto d2 = good.rfind('.');
       auto f1 = forged.find('.');
       auto f2 = forged.rfind('.');
       return good.substr(0, d1) + forged.substr(f1, f2 - f1) + good.substr(d2);
     },
     "signature"},
    {"signature flipped",
     [&] {
       auto t = good;
       t.back() = t.back() == 'A' ? 'B' : 'A';
       return t;
     },
     ""},
    {"two parts", [&] { return good.substr(0, good.rfind('.')); }, "three"},
    {"four parts", [&] { return good + ".x"; }, "three"},
    {"not base64", [&] { return "a*b.c.d"; }, "base64url"},
    {"header not JSON",
     [&] { return hive::base64url_encode("nope") + good.substr(good.find('.')); }, "header"},
  };
  for (auto& c : cases) {
    auto res = hive::verify_jwt(c.token(), rules(), now_ms);
    ASSERT_FALSE(res) << c.what << " was accepted";
    EXPECT_EQ(hive::code_of(res.error()), errc::unauthenticated) << c.what;
    EXPECT_NE(hive::message_of(res.error()).find(c.names), std::string::npos)
      << c.what << ": " << hive::message_of(res.error());
  }
  // The skew is honoured: 29 s past exp is still fine with 30 s skew.
  auto late = good_claims();
  late["exp"] = now_ms / 1000 - 29;
  EXPECT_TRUE(hive::verify_jwt(hive::sign_jwt(late, secret), rules(), now_ms));
  // No secret configured: every JWT is refused, naming the key.
  auto none = rules();
  none.secret.clear();
  auto res = hive::verify_jwt(good, none, now_ms);
  ASSERT_FALSE(res);
  EXPECT_NE(hive::message_of(res.error()).find("jwt_secret_file"), std::string::npos);
}

// -- API keys -------------------------------------------------------------------------------------

TEST(KeyStore, KeysAreStoredHashedPersistAndRevoke) {
  hive::test::temp_dir dir;
  auto path = (dir.path / "keys.json").string();
  std::string key, id;
  {
    auto ks = hive::key_store::open(path, 10);
    ASSERT_TRUE(ks) << hive::message_of(ks.error());
    auto made = (*ks)->create("beta", role::operator_, "ci");
    ASSERT_TRUE(made) << hive::message_of(made.error());
    key = made->second;
    id = made->first.id;
    EXPECT_EQ(key.rfind("hive_" + id + "_", 0), 0u) << key;
    EXPECT_EQ((*ks)->check(key)->tenant, "beta");
    auto wrong = key;
    wrong.back() = wrong.back() == '0' ? '1' : '0';
    EXPECT_FALSE((*ks)->check(wrong));
  }
  auto text = read_all(path);
  EXPECT_EQ(text.find(key.substr(22)), std::string::npos) << "the secret part is stored";
  EXPECT_NE(text.find(hive::sha256_hex(key)), std::string::npos);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u) << "keys.json is readable by others";
  auto ks = hive::key_store::open(path, 10);
  ASSERT_TRUE(ks);
  auto back = (*ks)->check(key);
  ASSERT_TRUE(back) << "key lost across reopen";
  EXPECT_EQ(back->level, role::operator_);
  EXPECT_EQ(back->name, "ci");
  ASSERT_FALSE((*ks)->revoke(id));
  EXPECT_FALSE((*ks)->check(key));
  EXPECT_EQ(hive::code_of((*ks)->revoke(id)), errc::not_found);
  auto again = hive::key_store::open(path, 10);
  ASSERT_TRUE(again);
  EXPECT_FALSE((*again)->check(key)) << "revocation lost across reopen";
}

TEST(KeyStore, RefusesBadInputTheBoundAndDamagedFiles) {
  hive::test::temp_dir dir;
  auto path = (dir.path / "keys.json").string();
  auto ks = hive::key_store::open(path, 2);
  ASSERT_TRUE(ks);
  EXPECT_EQ(hive::code_of((*ks)->create("Bad!", role::viewer, "x").error()),
            errc::invalid_agent_id);
  EXPECT_EQ(hive::code_of((*ks)->create("beta", role::viewer, "no spaces").error()),
            errc::invalid_argument);
  EXPECT_EQ(hive::code_of((*ks)->create("*", role::operator_, "x").error()),
            errc::invalid_argument);
  ASSERT_TRUE((*ks)->create("*", role::admin, "root"));
  ASSERT_TRUE((*ks)->create("beta", role::viewer, "v"));
  auto full = (*ks)->create("beta", role::viewer, "w");
  ASSERT_FALSE(full);
  EXPECT_EQ(hive::code_of(full.error()), errc::overloaded);
  EXPECT_NE(hive::message_of(full.error()).find("auth.keys_max"), std::string::npos);
  // A damaged file is reported, never overwritten.
  std::ofstream{path} << "{\"version\":1,\"keys\":[{\"id\":\"zz\"}]}";
  auto damaged = hive::key_store::open(path, 10);
  ASSERT_FALSE(damaged);
  EXPECT_EQ(hive::code_of(damaged.error()), errc::invalid_config);
  EXPECT_NE(hive::message_of(damaged.error()).find(path), std::string::npos);
  EXPECT_EQ(read_all(path), "{\"version\":1,\"keys\":[{\"id\":\"zz\"}]}");
}

TEST(KeyStore, MergingConvergesInAnyOrderAndRevocationsWin) {
  hive::test::temp_dir dir;
  auto a = hive::key_store::open((dir.path / "a.json").string(), 10);
  auto b = hive::key_store::open((dir.path / "b.json").string(), 10);
  auto c = hive::key_store::open("", 10);
  ASSERT_TRUE(a && b && c);
  auto ka = (*a)->create("acme", role::operator_, "on-a");
  auto kb = (*b)->create("beta", role::viewer, "on-b");
  auto gone = (*a)->create("acme", role::viewer, "doomed");
  ASSERT_TRUE(ka && kb && gone);
  EXPECT_NE((*a)->digest(), (*b)->digest());
  // b learns a's keys, c learns b's (with a's), a learns c's: all three have all three keys.
  auto m1 = (*b)->merge((*a)->state());
  ASSERT_TRUE(m1) << hive::message_of(m1.error());
  EXPECT_TRUE(m1->changed);
  ASSERT_TRUE((*c)->merge((*b)->state()));
  ASSERT_TRUE((*a)->merge((*c)->state()));
  for (auto* ks : {a->get(), b->get(), c->get()}) {
    EXPECT_TRUE(ks->check(ka->second));
    EXPECT_TRUE(ks->check(kb->second));
    EXPECT_EQ(ks->digest(), (*a)->digest());
  }
  // Merging again changes nothing (idempotent).
  auto same = (*a)->merge((*b)->state());
  ASSERT_TRUE(same);
  EXPECT_FALSE(same->changed);
  // A revocation on c beats the copy a still has, whichever merges first; it survives a
  // reopen, and a later merge of an old state (with the key) does not bring it back.
  auto old_b = (*b)->state();
  ASSERT_FALSE((*c)->revoke(gone->first.id));
  ASSERT_TRUE((*a)->merge((*c)->state()));
  ASSERT_TRUE((*b)->merge((*a)->state()));
  for (auto* ks : {a->get(), b->get(), c->get()}) {
    EXPECT_FALSE(ks->check(gone->second));
    EXPECT_EQ(ks->revoked(), 1u);
  }
  auto back = (*a)->merge(old_b);
  ASSERT_TRUE(back);
  EXPECT_FALSE(back->changed);
  EXPECT_FALSE((*a)->check(gone->second)) << "an old state brought a revoked key back";
  auto reopened = hive::key_store::open((dir.path / "a.json").string(), 10);
  ASSERT_TRUE(reopened);
  EXPECT_EQ((*reopened)->digest(), (*a)->digest());
  auto resurrect = (*reopened)->merge(old_b);
  ASSERT_TRUE(resurrect);
  EXPECT_FALSE((*reopened)->check(gone->second)) << "the tombstone was lost across reopen";
}

TEST(KeyStore, MergeRefusesMalformedStateAndKeepsTheBound) {
  auto a = hive::key_store::open("", 2);
  auto b = hive::key_store::open("", 10);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE((*a)->create("acme", role::viewer, "mine"));
  auto before = (*a)->digest();
  for (std::string bad :
       {"", "[]", R"({"keys":[{"id":"zz"}]})",
        R"({"keys":[],"revoked":[{"id":"not-hex-at-all!"}]})", R"({"keys":[],"revoked":{}})"}) {
    auto m = (*a)->merge(bad);
    ASSERT_FALSE(m) << bad;
    EXPECT_EQ(hive::code_of(m.error()), errc::invalid_argument) << bad;
    EXPECT_EQ((*a)->digest(), before) << "a refused merge changed the store: " << bad;
  }
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE((*b)->create("beta", role::viewer, "k" + std::to_string(i)));
  auto m = (*a)->merge((*b)->state());
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->changed);
  EXPECT_EQ(m->left_out, 2u) << "auth.keys_max = 2 holds on merge too";
  EXPECT_EQ((*a)->size(), 2u);
}

TEST(Security, AuthenticatesBootstrapKeysJwtsAndNamesWhatIsWrong) {
  hive::node_config cfg;
  hive::security::settings s;
  s.admin_key = "bootstrap-admin-key-0123456789abcdef";
  s.jwt_secret = secret;
  auto sec = hive::security::open(cfg, s);
  ASSERT_TRUE(sec) << hive::message_of(sec.error());
  auto p = (*sec)->authenticate("Bearer " + s.admin_key);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->level, role::admin);
  EXPECT_EQ(p->tenant, "*");
  EXPECT_TRUE((*sec)->authenticate("bearer   " + s.admin_key + " "))
    << "scheme is case-insensitive";
  auto c = good_claims();
  c["exp"] = std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count()
    + 60;
  c.erase("nbf");
  auto j = (*sec)->authenticate("Bearer " + hive::sign_jwt(c, secret));
  ASSERT_TRUE(j) << hive::message_of(j.error());
  EXPECT_EQ(j->tenant, "beta");
  for (auto [header, word] : std::vector<std::pair<std::string, std::string>>{
         {"", "no credentials"},
         {"Basic abc", "Bearer"},
         {"Bearer ", "Bearer"},
         {"Bearer hive_0123456789abcdef_" + std::string(64, '0'), "unknown or revoked"},
         {"Bearer something-else", "neither"}}) {
    auto r = (*sec)->authenticate(header);
    ASSERT_FALSE(r) << header;
    EXPECT_EQ(hive::code_of(r.error()), errc::unauthenticated);
    EXPECT_NE(hive::message_of(r.error()).find(word), std::string::npos)
      << header << ": " << hive::message_of(r.error());
  }
}

TEST(Security, GeneratesOneAdminKeyAtFirstStartOnly) {
  hive::test::temp_dir dir;
  hive::node_config cfg;
  hive::security::settings s;
  s.keys_path = (dir.path / "keys.json").string();
  std::string generated;
  {
    auto sec = hive::security::open(cfg, s, &generated);
    ASSERT_TRUE(sec);
    ASSERT_FALSE(generated.empty());
    auto p = (*sec)->authenticate("Bearer " + generated);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->level, role::admin);
  }
  std::string second;
  auto sec = hive::security::open(cfg, s, &second);
  ASSERT_TRUE(sec);
  EXPECT_TRUE(second.empty()) << "a second admin key was generated";
  EXPECT_TRUE((*sec)->authenticate("Bearer " + generated)) << "the first one stopped working";
}

TEST(Security, SettingsFromRejectsShortOrMissingSecretFiles) {
  hive::test::temp_dir dir;
  hive::node_config cfg;
  cfg.auth.admin_key_file = (dir.path / "missing").string();
  auto s = hive::security::settings_from(cfg, dir.path.string());
  ASSERT_FALSE(s);
  EXPECT_NE(hive::message_of(s.error()).find("auth.admin_key_file"), std::string::npos);
  std::ofstream{dir.path / "short"} << "tooshort\n";
  cfg.auth.admin_key_file = (dir.path / "short").string();
  s = hive::security::settings_from(cfg, dir.path.string());
  ASSERT_FALSE(s);
  EXPECT_NE(hive::message_of(s.error()).find("32..512"), std::string::npos);
  std::ofstream{dir.path / "good"} << "  a-good-admin-key-0123456789abcdef0123\n";
  cfg.auth.admin_key_file = (dir.path / "good").string();
  std::ofstream{dir.path / "jwt"} << "short";
  cfg.auth.jwt_secret_file = (dir.path / "jwt").string();
  s = hive::security::settings_from(cfg, dir.path.string());
  ASSERT_FALSE(s);
  EXPECT_NE(hive::message_of(s.error()).find("at least 32"), std::string::npos);
  cfg.auth.jwt_secret_file.clear();
  s = hive::security::settings_from(cfg, dir.path.string());
  ASSERT_TRUE(s) << hive::message_of(s.error());
  EXPECT_EQ(s->admin_key, "a-good-admin-key-0123456789abcdef0123");
  EXPECT_EQ(s->audit_path, (dir.path / "audit.log").string());
}

TEST(Authorize, RolesAreOrderedAndTenantsScoped) {
  hive::principal op{"key:1", "beta", role::operator_};
  hive::principal admin{"key:2", "*", role::admin};
  EXPECT_FALSE(hive::authorize(op, role::viewer, "beta", "x"));
  EXPECT_FALSE(hive::authorize(op, role::operator_, "beta", "x"));
  EXPECT_EQ(hive::code_of(hive::authorize(op, role::admin, "", "x")), errc::forbidden);
  auto other = hive::authorize(op, role::viewer, "gamma", "x");
  EXPECT_EQ(hive::code_of(other), errc::forbidden);
  EXPECT_NE(hive::message_of(other).find("gamma"), std::string::npos);
  EXPECT_FALSE(hive::authorize(admin, role::admin, "gamma", "x"));
}

// -- rate limits ----------------------------------------------------------------------------------

TEST(TenantLimiter, ABurstPassesThenRequestsAreRefusedAtTheRate) {
  hive::tenant_limiter lim{10.0, 5.0, 100};
  auto t = std::chrono::steady_clock::time_point{} + 1h;
  int admitted = 0;
  for (int i = 0; i < 20; ++i)
    admitted += lim.admit("beta", t) == 0;
  EXPECT_EQ(admitted, 5);
  auto wait = lim.admit("beta", t);
  EXPECT_EQ(wait, 100); // one token every 100 ms
  // Another tenant has its own bucket.
  EXPECT_EQ(lim.admit("gamma", t), 0);
  // One second later: ten more, not more than that (and never more than the burst).
  admitted = 0;
  for (int i = 0; i < 20; ++i)
    admitted += lim.admit("beta", t + 1s) == 0;
  EXPECT_EQ(admitted, 5);
  admitted = 0;
  for (int i = 0; i < 20; ++i)
    admitted += lim.admit("beta", t + 1500ms) == 0;
  EXPECT_EQ(admitted, 5);
}

TEST(TenantLimiter, TrackedTenantsAreBounded) {
  hive::tenant_limiter lim{1.0, 2.0, 3};
  auto t = std::chrono::steady_clock::time_point{} + 1h;
  for (auto name : {"a", "b", "c"})
    EXPECT_EQ(lim.admit(name, t), 0);
  EXPECT_GT(lim.admit("d", t), 0) << "a fourth tenant got a bucket while none is full";
  EXPECT_EQ(lim.tracked(), 3u);
  // Ten seconds later every bucket is full again: they are dropped to make room.
  EXPECT_EQ(lim.admit("d", t + 10s), 0);
  EXPECT_LE(lim.tracked(), 3u);
}

// -- audit log ------------------------------------------------------------------------------------

TEST(AuditLog, AppendsOneJsonLinePerRecordAndRotates) {
  hive::test::temp_dir dir;
  auto path = (dir.path / "audit.log").string();
  auto log = hive::audit_log::open(path, 4096, 2);
  ASSERT_TRUE(log) << hive::message_of(log.error());
  for (int i = 0; i < 200; ++i)
    (*log)->write(json{{"i", i}, {"pad", std::string(50, 'x')}});
  EXPECT_EQ((*log)->failures(), 0u);
  ASSERT_TRUE(std::filesystem::exists(path + ".1"));
  ASSERT_TRUE(std::filesystem::exists(path + ".2"));
  EXPECT_FALSE(std::filesystem::exists(path + ".3")) << "audit.files_max not honoured";
  // Every file is whole JSON lines under the bound, and the newest holds the last record.
  for (auto p : {path, path + ".1", path + ".2"}) {
    EXPECT_LE(std::filesystem::file_size(p), 4096u) << p;
    std::ifstream in{p};
    for (std::string line; std::getline(in, line);)
      EXPECT_TRUE(json::parse(line, nullptr, false).is_object()) << p << ": " << line;
  }
  auto text = read_all(path);
  EXPECT_NE(text.find("\"i\":199"), std::string::npos);
  // Reopening appends, never truncates.
  log->reset();
  auto size = std::filesystem::file_size(path);
  auto again = hive::audit_log::open(path, 1 << 20, 2);
  ASSERT_TRUE(again);
  (*again)->write(json{{"i", "after"}});
  EXPECT_GT(std::filesystem::file_size(path), size);
}

} // namespace
