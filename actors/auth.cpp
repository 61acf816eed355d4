#include "actors/auth.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "protocols/agent_id.hpp"
#include "protocols/errc.hpp"
#include "runtime/logging.hpp"

namespace hive {

namespace {

constexpr std::string_view key_prefix = "hive_";
constexpr size_t key_id_hex = 16;
constexpr size_t key_secret_hex = 64;
/// The subject id of the key read from `auth.admin_key_file`.
constexpr std::string_view bootstrap_id = "bootstrap";
/// Bounds of a bootstrap key from a file.
constexpr size_t admin_key_bytes_min = 32;
constexpr size_t admin_key_bytes_max = 512;
/// Shortest accepted JWT secret.
constexpr size_t jwt_secret_bytes_min = 32;
/// Longest JWT accepted (the header limit bounds it too).
constexpr size_t jwt_bytes_max = 8192;

std::string to_hex(const unsigned char* data, size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 15]);
  }
  return out;
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

/// Constant-time equality of two strings of public length.
bool same(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

caf::error unauth(std::string why) {
  return make_error(errc::unauthenticated, std::move(why));
}

caf::error validate_key_name(std::string_view name) {
  if (name.empty() || name.size() > 64)
    return make_error(errc::invalid_argument, "key name must be 1..64 bytes");
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return make_error(errc::invalid_argument,
                        "key name may hold only A-Z a-z 0-9 '-' '_' '.', got '" + std::string{name}
                          + "'");
  return {};
}

caf::error validate_key_tenant(std::string_view tenant, role level) {
  if (tenant == all_tenants)
    return level == role::admin
      ? caf::error{}
      : make_error(errc::invalid_argument,
                   "tenant '*' (all tenants) is only for keys of role admin");
  return validate_id_part(tenant, "tenant", tenant_bytes_max);
}

/// Reads a whole small file. Errors: invalid_config naming the key and the file.
caf::expected<std::string> read_secret_file(const std::string& path, std::string_view key) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::invalid_config,
                      std::string{key} + ": cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  auto text = buf.str();
  if (text.size() > 65536)
    return make_error(errc::invalid_config,
                      std::string{key} + ": '" + path + "' is larger than 64 KiB");
  auto first = text.find_first_not_of(" \t\r\n");
  auto last = text.find_last_not_of(" \t\r\n");
  if (first == std::string::npos)
    return std::string{};
  return text.substr(first, last - first + 1);
}

} // namespace

// -- roles ----------------------------------------------------------------------------------------

std::string_view to_string(role r) noexcept {
  switch (r) {
    case role::admin: return "admin";
    case role::operator_: return "operator";
    case role::viewer: return "viewer";
  }
  return "?";
}

caf::expected<role> parse_role(std::string_view text) {
  if (text == "admin")
    return role::admin;
  if (text == "operator")
    return role::operator_;
  if (text == "viewer")
    return role::viewer;
  return make_error(errc::invalid_argument,
                    "role must be \"admin\", \"operator\" or \"viewer\", got '"
                      + std::string{text.substr(0, 64)} + "'");
}

caf::error authorize(const principal& p, role needed, std::string_view tenant,
                     std::string_view action) {
  if (p.level < needed)
    return make_error(errc::forbidden,
                      std::string{action} + " needs role " + std::string{to_string(needed)} + "; "
                        + p.subject + " has role " + std::string{to_string(p.level)});
  if (!tenant.empty() && !p.may_access(tenant))
    return make_error(errc::forbidden,
                      p.subject + " of tenant '" + p.tenant + "' may not act on tenant '"
                        + std::string{tenant} + "'");
  return {};
}

// -- crypto ---------------------------------------------------------------------------------------

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> md{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md.data());
  return to_hex(md.data(), md.size());
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned len = 0;
  auto* res =
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), md.data(), &len);
  assert(res != nullptr && len == 32);
  (void)res;
  return std::string{reinterpret_cast<const char*>(md.data()), len};
}

std::string random_hex(size_t n) {
  std::vector<unsigned char> buf(n);
  // RAND_bytes fails only if the OS entropy source does: a broken machine, not an operating
  // error to carry on from with a predictable key.
  auto ok = RAND_bytes(buf.data(), static_cast<int>(n));
  if (ok != 1) {
    std::fprintf(stderr, "hive: RAND_bytes failed: no secure randomness\n");
    std::abort();
  }
  return to_hex(buf.data(), n);
}

std::string base64url_encode(std::string_view data) {
  static constexpr char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(data[k])); };
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out.push_back(alphabet[v >> 18 & 63]);
    out.push_back(alphabet[v >> 12 & 63]);
    out.push_back(alphabet[v >> 6 & 63]);
    out.push_back(alphabet[v & 63]);
  }
  if (data.size() - i == 1) {
    uint32_t v = byte(i) << 16;
    out.push_back(alphabet[v >> 18 & 63]);
    out.push_back(alphabet[v >> 12 & 63]);
  } else if (data.size() - i == 2) {
    uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    out.push_back(alphabet[v >> 18 & 63]);
    out.push_back(alphabet[v >> 12 & 63]);
    out.push_back(alphabet[v >> 6 & 63]);
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1)
    return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    if (c == '-')
      return 62;
    if (c == '_')
      return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = value(c);
    if (v < 0)
      return std::nullopt;
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>(acc >> bits & 0xff));
    }
  }
  // Leftover bits must be zero (canonical encoding).
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return std::nullopt;
  return out;
}

// -- JWT ------------------------------------------------------------------------------------------

std::string sign_jwt(const nlohmann::json& claims, std::string_view secret,
                     const nlohmann::json& header) {
  auto hdr = header.is_null() ? nlohmann::json{{"alg", "HS256"}, {"typ", "JWT"}} : header;
  auto input = base64url_encode(hdr.dump()) + '.' + base64url_encode(claims.dump());
  return input + '.' + base64url_encode(hmac_sha256(secret, input));
}

caf::expected<principal> verify_jwt(std::string_view token, const jwt_rules& rules,
                                    int64_t now_ms) {
  if (rules.secret.empty())
    return unauth("JWT bearer tokens are not accepted by this node (auth.jwt_secret_file is "
                  "not set)");
  if (token.size() > jwt_bytes_max)
    return unauth("JWT is longer than " + std::to_string(jwt_bytes_max) + " bytes");
  auto d1 = token.find('.');
  auto d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    return unauth("JWT must have three dot-separated parts");
  auto header_text = base64url_decode(token.substr(0, d1));
  auto payload_text = base64url_decode(token.substr(d1 + 1, d2 - d1 - 1));
  auto sig = base64url_decode(token.substr(d2 + 1));
  if (!header_text || !payload_text || !sig)
    return unauth("JWT part is not base64url");
  auto header = nlohmann::json::parse(*header_text, nullptr, false);
  if (!header.is_object())
    return unauth("JWT header is not a JSON object");
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string() || *alg != "HS256")
    return unauth("JWT header alg must be \"HS256\"");
  if (auto typ = header.find("typ"); typ != header.end() && (!typ->is_string() || *typ != "JWT"))
    return unauth("JWT header typ must be \"JWT\" when present");
  // The signature before any claim: nothing of an unsigned payload is trusted or reported.
  auto expected_sig = hmac_sha256(rules.secret, token.substr(0, d2));
  if (!same(*sig, expected_sig))
    return unauth("JWT signature does not verify");
  auto claims = nlohmann::json::parse(*payload_text, nullptr, false);
  if (!claims.is_object())
    return unauth("JWT payload is not a JSON object");
  auto str_claim = [&](const char* name) -> std::optional<std::string> {
    auto i = claims.find(name);
    if (i == claims.end() || !i->is_string())
      return std::nullopt;
    return i->get<std::string>();
  };
  auto num_claim = [&](const char* name) -> std::optional<int64_t> {
    auto i = claims.find(name);
    if (i == claims.end() || !i->is_number())
      return std::nullopt;
    auto v = i->get<double>();
    if (!std::isfinite(v) || std::abs(v) > 1e15)
      return std::nullopt;
    return static_cast<int64_t>(v);
  };
  if (str_claim("iss") != rules.issuer)
    return unauth("JWT iss must be '" + rules.issuer + "'");
  bool aud_ok = false;
  if (auto aud = claims.find("aud"); aud != claims.end()) {
    if (aud->is_string())
      aud_ok = *aud == rules.audience;
    else if (aud->is_array())
      aud_ok = std::any_of(aud->begin(), aud->end(),
                           [&](const nlohmann::json& a) { return a == rules.audience; });
  }
  if (!aud_ok)
    return unauth("JWT aud must be or contain '" + rules.audience + "'");
  auto exp = num_claim("exp");
  if (!exp)
    return unauth("JWT has no numeric exp claim");
  if (*exp * 1000 + rules.clock_skew_ms <= now_ms)
    return unauth("JWT expired at " + std::to_string(*exp) + " (Unix seconds)");
  if (claims.contains("nbf")) {
    auto nbf = num_claim("nbf");
    if (!nbf)
      return unauth("JWT nbf claim is not a number");
    if (*nbf * 1000 - rules.clock_skew_ms > now_ms)
      return unauth("JWT is not valid before " + std::to_string(*nbf) + " (Unix seconds)");
  }
  auto sub = str_claim("sub");
  if (!sub || sub->empty() || sub->size() > 256)
    return unauth("JWT sub claim must be a string of 1..256 bytes");
  auto tenant = str_claim("tenant");
  if (!tenant)
    return unauth("JWT has no string tenant claim");
  auto role_text = str_claim("role");
  if (!role_text)
    return unauth("JWT has no string role claim");
  auto level = parse_role(*role_text);
  if (!level)
    return unauth("JWT role claim: " + message_of(level.error()));
  if (auto err = validate_key_tenant(*tenant, *level))
    return unauth("JWT tenant claim: " + message_of(err));
  return principal{"jwt:" + *sub, *tenant, *level};
}

// -- key store ------------------------------------------------------------------------------------

namespace {

/// Reads the keys and tombstones of a key file or a replicated state into `keys` and
/// `revoked`. Returns what is malformed (empty: nothing).
std::string parse_key_state(const nlohmann::json& doc,
                            std::map<std::string, api_key_record, std::less<>>& keys,
                            std::map<std::string, int64_t, std::less<>>& revoked) {
  if (!doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array())
    return "expected {\"version\":1,\"keys\":[...]}";
  for (auto& k : doc["keys"]) {
    if (!k.is_object())
      return "a key entry is not an object";
    api_key_record r;
    try {
      r.id = k.at("id").get<std::string>();
      r.tenant = k.at("tenant").get<std::string>();
      auto lvl = parse_role(k.at("role").get<std::string>());
      if (!lvl)
        return "key " + r.id.substr(0, 32) + ": " + message_of(lvl.error());
      r.level = *lvl;
      r.name = k.at("name").get<std::string>();
      r.hash = k.at("hash").get<std::string>();
      r.created_ms = k.at("created_ms").get<int64_t>();
    } catch (const std::exception& ex) {
      return std::string{"a key entry lacks a field: "} + ex.what();
    }
    if (r.id.size() != key_id_hex || !is_hex(r.id) || r.hash.size() != 64 || !is_hex(r.hash))
      return "key '" + r.id.substr(0, 32) + "' has a malformed id or hash";
    if (validate_key_tenant(r.tenant, r.level) || validate_key_name(r.name))
      return "key '" + r.id + "' has a malformed tenant or name";
    keys.emplace(r.id, std::move(r));
  }
  if (doc.contains("revoked")) {
    if (!doc["revoked"].is_array())
      return "\"revoked\" is not an array";
    for (auto& t : doc["revoked"]) {
      std::string id;
      int64_t at = 0;
      try {
        id = t.at("id").get<std::string>();
        at = t.at("revoked_ms").get<int64_t>();
      } catch (const std::exception& ex) {
        return std::string{"a revoked entry lacks a field: "} + ex.what();
      }
      if (id.size() != key_id_hex || !is_hex(id))
        return "revoked id '" + id.substr(0, 32) + "' is malformed";
      revoked.emplace(std::move(id), at);
    }
  }
  return {};
}

/// The canonical JSON of keys and tombstones (id order), as stored and replicated.
nlohmann::json key_state_json(const std::map<std::string, api_key_record, std::less<>>& keys,
                              const std::map<std::string, int64_t, std::less<>>& revoked) {
  nlohmann::json arr = nlohmann::json::array();
  for (auto& [id, r] : keys)
    arr.push_back({{"id", r.id},
                   {"tenant", r.tenant},
                   {"role", std::string{to_string(r.level)}},
                   {"name", r.name},
                   {"hash", r.hash},
                   {"created_ms", r.created_ms}});
  nlohmann::json gone = nlohmann::json::array();
  for (auto& [id, at] : revoked)
    gone.push_back({{"id", id}, {"revoked_ms", at}});
  return {{"version", 1}, {"keys", std::move(arr)}, {"revoked", std::move(gone)}};
}

/// Drops the oldest tombstones beyond `max`.
void bound_tombstones(std::map<std::string, int64_t, std::less<>>& revoked, size_t max) {
  while (revoked.size() > max) {
    auto oldest = std::min_element(revoked.begin(), revoked.end(),
                                   [](auto& a, auto& b) { return a.second < b.second; });
    revoked.erase(oldest);
  }
}

} // namespace

caf::expected<std::unique_ptr<key_store>> key_store::open(std::string path, size_t keys_max) {
  std::unique_ptr<key_store> ks{new key_store(path, keys_max)};
  if (path.empty())
    return ks;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return ks;
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::io_error,
                      "cannot read key file '" + path + "': " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  auto doc = nlohmann::json::parse(buf.str(), nullptr, false);
  std::string why = doc.is_object() && doc.value("version", 0) == 1
    ? parse_key_state(doc, ks->keys_, ks->revoked_)
    : std::string{"expected {\"version\":1,\"keys\":[...]}"};
  if (!why.empty())
    return make_error(errc::invalid_config,
                      "key file '" + path + "' is damaged (" + why
                        + "); it is left as it is: repair it or move it away");
  return ks;
}

caf::error key_store::save(const key_map& keys, const tombstone_map& revoked) const {
  if (path_.empty())
    return {};
  auto text = key_state_json(keys, revoked).dump(1) + "\n";
  auto tmp = path_ + ".tmp";
  auto fail = [&](std::string_view step) {
    auto err = make_error(errc::io_error,
                          "cannot write key file '" + path_ + "' (" + std::string{step}
                            + "): " + std::strerror(errno));
    ::unlink(tmp.c_str());
    return err;
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return fail("open");
  size_t off = 0;
  while (off < text.size()) {
    auto n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      ::close(fd);
      return fail("write");
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return fail("fsync");
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0)
    return fail("rename");
  auto dir = std::filesystem::path{path_}.parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

caf::expected<std::pair<api_key_record, std::string>> key_store::create(std::string tenant,
                                                                        role level,
                                                                        std::string name) {
  if (auto err = validate_key_tenant(tenant, level))
    return err;
  if (auto err = validate_key_name(name))
    return err;
  std::lock_guard<std::mutex> guard{mtx_};
  if (keys_.size() >= keys_max_)
    return make_error(errc::overloaded,
                      "the node stores auth.keys_max = " + std::to_string(keys_max_)
                        + " API keys; revoke one first");
  api_key_record r;
  do
    r.id = random_hex(key_id_hex / 2);
  while (keys_.count(r.id) > 0);
  auto key = std::string{key_prefix} + r.id + '_' + random_hex(key_secret_hex / 2);
  r.tenant = std::move(tenant);
  r.level = level;
  r.name = std::move(name);
  r.hash = sha256_hex(key);
  r.created_ms = now_unix_ms();
  auto next = keys_;
  next.emplace(r.id, r);
  if (auto err = save(next, revoked_))
    return err;
  keys_ = std::move(next);
  return std::pair{std::move(r), std::move(key)};
}

caf::error key_store::revoke(std::string_view id) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = keys_.find(id);
  if (i == keys_.end())
    return make_error(errc::not_found,
                      "no API key with id '" + std::string{id.substr(0, 64)} + "'");
  auto next = keys_;
  next.erase(std::string{id});
  auto gone = revoked_;
  gone[std::string{id}] = now_unix_ms();
  bound_tombstones(gone, keys_max_);
  if (auto err = save(next, gone))
    return err;
  keys_ = std::move(next);
  revoked_ = std::move(gone);
  return {};
}

std::string key_store::state() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return key_state_json(keys_, revoked_).dump();
}

std::string key_store::digest() const {
  return sha256_hex(state());
}

caf::expected<key_store::merge_result> key_store::merge(std::string_view other_state) {
  auto doc = nlohmann::json::parse(other_state, nullptr, false);
  key_map theirs;
  tombstone_map their_revoked;
  if (auto why = parse_key_state(doc, theirs, their_revoked); !why.empty())
    return make_error(errc::invalid_argument, "replicated key state is malformed: " + why);
  std::lock_guard<std::mutex> guard{mtx_};
  merge_result out;
  auto next = keys_;
  auto gone = revoked_;
  for (auto& [id, at] : their_revoked) {
    auto [it, fresh] = gone.emplace(id, at);
    if (!fresh && at < it->second)
      it->second = at; // the earliest revocation, so that every node keeps the same time
    next.erase(id);
  }
  bound_tombstones(gone, keys_max_);
  for (auto& [id, r] : theirs) {
    if (next.count(id) > 0 || gone.count(id) > 0)
      continue;
    if (next.size() >= keys_max_) {
      ++out.left_out;
      continue;
    }
    next.emplace(id, r);
  }
  auto same_ids = [](const key_map& a, const key_map& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](auto& x, auto& y) {
             return x.first == y.first;
           });
  };
  out.changed = !same_ids(next, keys_) || gone != revoked_;
  if (!out.changed)
    return out;
  if (auto err = save(next, gone))
    return err;
  keys_ = std::move(next);
  revoked_ = std::move(gone);
  return out;
}

size_t key_store::revoked() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return revoked_.size();
}

cluster::replicated_state replicated_keys(key_store& keys) {
  cluster::replicated_state r;
  r.digest = [&keys] { return keys.digest(); };
  r.state = [&keys] { return keys.state(); };
  r.merge = [&keys](const std::string& other) -> caf::error {
    auto res = keys.merge(other);
    if (!res)
      return res.error();
    if (res->left_out > 0)
      log::event(spdlog::level::warn, "api_keys_left_out",
                 {{"left_out", res->left_out}, {"keys", keys.size()}});
    if (res->changed)
      log::event(spdlog::level::info, "api_keys_merged",
                 {{"keys", keys.size()}, {"revoked", keys.revoked()}});
    return {};
  };
  return r;
}

std::optional<api_key_record> key_store::find(std::string_view id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = keys_.find(id);
  if (i == keys_.end())
    return std::nullopt;
  return i->second;
}

std::vector<api_key_record> key_store::list(std::string_view tenant) const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<api_key_record> out;
  for (auto& [id, r] : keys_)
    if (tenant.empty() || r.tenant == tenant)
      out.push_back(r);
  return out;
}

std::optional<api_key_record> key_store::check(std::string_view key) const {
  if (key.size() != key_prefix.size() + key_id_hex + 1 + key_secret_hex
      || key.substr(0, key_prefix.size()) != key_prefix
      || key[key_prefix.size() + key_id_hex] != '_')
    return std::nullopt;
  auto id = key.substr(key_prefix.size(), key_id_hex);
  auto found = find(id);
  if (!found || !same(sha256_hex(key), found->hash))
    return std::nullopt;
  return found;
}

size_t key_store::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return keys_.size();
}

// -- rate limits ----------------------------------------------------------------------------------

int64_t tenant_limiter::admit(std::string_view tenant, std::chrono::steady_clock::time_point now) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = buckets_.find(tenant);
  if (i == buckets_.end()) {
    if (buckets_.size() >= tenants_max_) {
      // Drop the buckets that are full again: they are the same as new ones.
      for (auto j = buckets_.begin(); j != buckets_.end();) {
        auto secs = std::chrono::duration<double>(now - j->second.at).count();
        if (j->second.tokens + secs * rate_per_s_ >= burst_)
          j = buckets_.erase(j);
        else
          ++j;
      }
      if (buckets_.size() >= tenants_max_)
        return 1000;
    }
    i = buckets_.emplace(std::string{tenant}, bucket{burst_, now}).first;
  }
  auto& b = i->second;
  auto secs = std::chrono::duration<double>(now - b.at).count();
  if (secs > 0) {
    b.tokens = std::min(burst_, b.tokens + secs * rate_per_s_);
    b.at = now;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return 0;
  }
  auto wait_ms = std::ceil((1.0 - b.tokens) / rate_per_s_ * 1000.0);
  return std::max<int64_t>(1, static_cast<int64_t>(wait_ms));
}

size_t tenant_limiter::tracked() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return buckets_.size();
}

// -- audit log ------------------------------------------------------------------------------------

caf::expected<std::unique_ptr<audit_log>> audit_log::open(std::string path, int64_t file_bytes_max,
                                                          int64_t files_max) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_error(errc::io_error,
                      "cannot open audit log '" + path + "': " + std::strerror(errno));
  struct stat st {};
  int64_t size = ::fstat(fd, &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
  return std::unique_ptr<audit_log>{
    new audit_log(std::move(path), fd, size, file_bytes_max, files_max)};
}

audit_log::~audit_log() {
  if (fd_ >= 0)
    ::close(fd_);
}

void audit_log::rotate() {
  // <path>.N is deleted, <path>.k becomes <path>.k+1, <path> becomes <path>.1.
  auto name = [&](int64_t k) { return path_ + "." + std::to_string(k); };
  ::unlink(name(files_max_).c_str());
  for (int64_t k = files_max_ - 1; k >= 1; --k)
    ::rename(name(k).c_str(), name(k + 1).c_str());
  ::rename(path_.c_str(), name(1).c_str());
  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    log::event(spdlog::level::err, "audit_log_failed",
               {{"path", path_}, {"step", "rotate"}, {"reason", std::strerror(errno)}});
    return; // keep writing to the renamed file rather than losing records
  }
  ::close(fd_);
  fd_ = fd;
  size_ = 0;
}

void audit_log::write(const nlohmann::json& record) {
  auto line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> guard{mtx_};
  if (size_ > 0 && size_ + static_cast<int64_t>(line.size()) > file_bytes_max_)
    rotate();
  auto n = ::write(fd_, line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) {
    ++failures_;
    log::event(spdlog::level::err, "audit_log_failed",
               {{"path", path_}, {"step", "write"}, {"reason", std::strerror(errno)}});
    return;
  }
  size_ += n;
}

uint64_t audit_log::failures() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return failures_;
}

// -- security -------------------------------------------------------------------------------------

security::security(const node_config& cfg, settings s, std::unique_ptr<key_store> keys,
                   std::unique_ptr<audit_log> audit)
    : jwt_{std::move(s.jwt_secret), cfg.auth.jwt_issuer, cfg.auth.jwt_audience,
           cfg.auth.jwt_clock_skew_ms},
      quota_(cfg.quota), node_name_(std::move(s.node_name)), keys_(std::move(keys)),
      limiter_(static_cast<double>(cfg.quota.requests_per_s),
               static_cast<double>(cfg.quota.burst_requests),
               static_cast<size_t>(cfg.quota.tenants_tracked_max)),
      audit_(std::move(audit)) {
  if (!s.admin_key.empty())
    admin_key_hash_ = sha256_hex(s.admin_key);
}

caf::expected<security::settings> security::settings_from(const node_config& cfg,
                                                          const std::string& data_dir) {
  settings s;
  s.node_name = cfg.node.name;
  auto in_dir = [&](std::string_view file) {
    return (std::filesystem::path{data_dir} / file).string();
  };
  s.keys_path = in_dir("keys.json");
  s.audit_path = cfg.audit.path.empty() ? in_dir("audit.log") : cfg.audit.path;
  if (!cfg.auth.admin_key_file.empty()) {
    auto key = read_secret_file(cfg.auth.admin_key_file, "auth.admin_key_file");
    if (!key)
      return std::move(key.error());
    if (key->size() < admin_key_bytes_min || key->size() > admin_key_bytes_max)
      return make_error(errc::invalid_config,
                        "auth.admin_key_file: the key in '" + cfg.auth.admin_key_file + "' is "
                          + std::to_string(key->size()) + " bytes; it must be "
                          + std::to_string(admin_key_bytes_min) + ".."
                          + std::to_string(admin_key_bytes_max));
    for (char c : *key)
      if (c <= ' ' || c > '~')
        return make_error(errc::invalid_config,
                          "auth.admin_key_file: the key in '" + cfg.auth.admin_key_file
                            + "' must be visible ASCII without spaces");
    s.admin_key = std::move(*key);
  }
  if (!cfg.auth.jwt_secret_file.empty()) {
    auto secret = read_secret_file(cfg.auth.jwt_secret_file, "auth.jwt_secret_file");
    if (!secret)
      return std::move(secret.error());
    if (secret->size() < jwt_secret_bytes_min)
      return make_error(errc::invalid_config,
                        "auth.jwt_secret_file: the secret in '" + cfg.auth.jwt_secret_file + "' is "
                          + std::to_string(secret->size()) + " bytes; HS256 needs at least "
                          + std::to_string(jwt_secret_bytes_min));
    s.jwt_secret = std::move(*secret);
  }
  return s;
}

caf::expected<std::unique_ptr<security>> security::open(const node_config& cfg, settings s,
                                                        std::string* generated_admin_key) {
  auto keys = key_store::open(s.keys_path, static_cast<size_t>(cfg.auth.keys_max));
  if (!keys)
    return std::move(keys.error());
  if (s.admin_key.empty()) {
    auto all = (*keys)->list({});
    bool has_admin = std::any_of(all.begin(), all.end(),
                                 [](const api_key_record& r) { return r.level == role::admin; });
    if (!has_admin) {
      auto made = (*keys)->create(std::string{all_tenants}, role::admin, "bootstrap");
      if (!made)
        return std::move(made.error());
      if (generated_admin_key != nullptr)
        *generated_admin_key = made->second;
      log::event(spdlog::level::warn, "admin_key_generated",
                 {{"id", made->first.id}, {"keys_path", s.keys_path}});
    }
  }
  std::unique_ptr<audit_log> audit;
  if (!s.audit_path.empty()) {
    auto opened = audit_log::open(s.audit_path, cfg.audit.file_bytes_max, cfg.audit.files_max);
    if (!opened)
      return std::move(opened.error());
    audit = std::move(*opened);
  }
  return std::unique_ptr<security>{
    new security(cfg, std::move(s), std::move(*keys), std::move(audit))};
}

caf::expected<principal> security::authenticate(std::string_view authorization) const {
  if (authorization.empty())
    return unauth("no credentials: send 'Authorization: Bearer <API key or JWT>'");
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.size() <= scheme.size()
      || !std::equal(scheme.begin(), scheme.end(), authorization.begin(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
    return unauth("the Authorization header must be 'Bearer <API key or JWT>'");
  auto cred = authorization.substr(scheme.size());
  while (!cred.empty() && cred.front() == ' ')
    cred.remove_prefix(1);
  while (!cred.empty() && cred.back() == ' ')
    cred.remove_suffix(1);
  if (cred.empty())
    return unauth("the Authorization header holds an empty bearer credential");
  if (!admin_key_hash_.empty() && same(sha256_hex(cred), admin_key_hash_))
    return principal{"key:" + std::string{bootstrap_id}, std::string{all_tenants}, role::admin};
  if (cred.substr(0, key_prefix.size()) == key_prefix) {
    if (auto rec = keys_->check(cred))
      return principal{"key:" + rec->id, rec->tenant, rec->level};
    return unauth("unknown or revoked API key");
  }
  if (std::count(cred.begin(), cred.end(), '.') == 2)
    return verify_jwt(cred, jwt_, now_unix_ms());
  return unauth("the bearer credential is neither an API key nor a JWT");
}

} // namespace hive
