#pragma once

// Gateway security: who is calling (API keys, HS256 JWTs), what they may do (roles, tenant
// scoping), how fast (per-tenant token buckets) and what they did (the audit log).
//
// Everything here is thread-safe and never throws across its interface: operating errors are
// `caf::error`s with an `errc` code (unauthenticated, forbidden, rate_limited, not_found,
// overloaded, io_error, invalid_config).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "runtime/cluster.hpp"

namespace hive {

// -- roles and principals -----------------------------------------------------------------------

/// What a credential may do. Ordered: each role may do everything the ones below it may.
enum class role : uint8_t {
  /// Reads its own tenant's agents and the member list.
  viewer = 0,
  /// Also spawns, stops, tells and asks its own tenant's agents, and manages its own
  /// tenant's keys of role operator or viewer.
  operator_ = 1,
  /// Everything, in every tenant: migration, backup, keys of any role.
  admin = 2,
};

/// "admin", "operator" or "viewer".
[[nodiscard]] std::string_view to_string(role r) noexcept;

/// Parses "admin", "operator" or "viewer". Errors: invalid_argument naming the value.
[[nodiscard]] caf::expected<role> parse_role(std::string_view text);

/// The tenant of the bootstrap admin key: it belongs to no tenant.
inline constexpr std::string_view all_tenants = "*";

/// An authenticated caller.
struct principal {
  /// "key:<id>" for an API key, "jwt:<sub>" for a token.
  std::string subject;
  /// The caller's tenant (`all_tenants` for the bootstrap admin key).
  std::string tenant;
  role level = role::viewer;

  /// Whether this principal may act on `tenant`'s agents and keys.
  [[nodiscard]] bool may_access(std::string_view t) const noexcept {
    return level == role::admin || t == tenant;
  }
};

/// Checks that `p` holds at least `needed` and may act on `tenant` (empty: no tenant
/// involved). Errors: forbidden, naming the role or the tenant that is missing.
[[nodiscard]] caf::error authorize(const principal& p, role needed, std::string_view tenant,
                                   std::string_view action);

// -- crypto helpers -------------------------------------------------------------------------------

/// SHA-256 of `data` as 64 lower-case hex digits.
[[nodiscard]] std::string sha256_hex(std::string_view data);

/// HMAC-SHA256 of `data` under `key` (32 raw bytes).
[[nodiscard]] std::string hmac_sha256(std::string_view key, std::string_view data);

/// `n` random bytes from the operating system's CSPRNG, as 2n lower-case hex digits.
[[nodiscard]] std::string random_hex(size_t n);

/// Base64url without padding (RFC 7515 section 2).
[[nodiscard]] std::string base64url_encode(std::string_view data);

/// Decodes base64url without padding; nullopt on any character outside the alphabet or an
/// impossible length.
[[nodiscard]] std::optional<std::string> base64url_decode(std::string_view text);

// -- JWT ------------------------------------------------------------------------------------------

/// What a JWT must satisfy.
struct jwt_rules {
  /// The HS256 secret (empty: every JWT is refused).
  std::string secret;
  std::string issuer;
  std::string audience;
  int64_t clock_skew_ms = 0;
};

/// Verifies an HS256 JWT (compact form) at `now_ms` (Unix time, milliseconds): three parts,
/// header `alg` exactly "HS256" (a `typ`, if present, must be "JWT"), a valid signature
/// (compared in constant time), `iss` and `aud` as configured, `exp` in the future, `nbf`
/// (if present) in the past (both with the skew), and claims `sub` (1..256 bytes), `tenant`
/// (a tenant id part) and `role`. Errors: unauthenticated, naming the first check that
/// failed (never echoing the token).
[[nodiscard]] caf::expected<principal> verify_jwt(std::string_view token, const jwt_rules& rules,
                                                  int64_t now_ms);

/// Signs `claims` as an HS256 JWT with header `{"alg":"HS256","typ":"JWT"}` (or `header`,
/// when given: tests forge tokens with it).
[[nodiscard]] std::string sign_jwt(const nlohmann::json& claims, std::string_view secret,
                                   const nlohmann::json& header = nullptr);

// -- API keys -------------------------------------------------------------------------------------

/// A stored API key. The key itself is never stored, only its SHA-256.
struct api_key_record {
  /// 16 hex digits, also the middle part of the key: `hive_<id>_<64 hex digits>`.
  std::string id;
  std::string tenant;
  role level = role::viewer;
  /// Free text given at creation (1..64 bytes of A-Z a-z 0-9 `-_.`).
  std::string name;
  std::string hash;
  int64_t created_ms = 0;
};

/// The API keys of a node, kept in memory and (when `path` is not empty) in a JSON file
/// written atomically (temporary file, fsync, rename, fsync of the directory) on every change.
///
/// Replicated across a cluster as a state-based CRDT (a two-phase set): the state is the keys
/// plus the ids of revoked keys (tombstones, at most `keys_max`, the oldest dropped first);
/// `merge` takes the union of keys, and a tombstone removes its key for good, whichever node
/// saw which first. Two stores that merged each other's `state` have the same `digest`.
class key_store {
public:
  /// Loads `path` if it exists (empty: memory only). Errors: io_error or invalid_config
  /// naming the file and what is wrong with it (the file is never overwritten then).
  [[nodiscard]] static caf::expected<std::unique_ptr<key_store>> open(std::string path,
                                                                      size_t keys_max);

  /// Creates a key; returns the record and the key text (shown once). Errors: invalid_argument
  /// (bad tenant or name), overloaded (`auth.keys_max` reached), io_error (the file could not
  /// be written: nothing changed).
  [[nodiscard]] caf::expected<std::pair<api_key_record, std::string>> create(std::string tenant,
                                                                             role level,
                                                                             std::string name);

  /// Removes a key and remembers its id as revoked (a merge never brings it back). Errors:
  /// not_found, io_error (nothing changed).
  [[nodiscard]] caf::error revoke(std::string_view id);

  /// The replicated state as JSON text: `{"keys":[...],"revoked":[{"id","revoked_ms"}]}`, in
  /// id order (hashes only, never key texts).
  [[nodiscard]] std::string state() const;

  /// SHA-256 of `state()`: equal for stores with the same keys and tombstones.
  [[nodiscard]] std::string digest() const;

  /// Merges another store's `state()`: adds the keys this one has neither stored nor revoked
  /// (at most `keys_max` in all: the rest are left out and counted in the result), and removes
  /// and remembers every revoked id. Returns {changed, keys left out}. Errors: invalid_argument
  /// naming what is malformed (nothing changed), io_error (the file could not be written:
  /// nothing changed).
  struct merge_result {
    bool changed = false;
    size_t left_out = 0;
  };
  [[nodiscard]] caf::expected<merge_result> merge(std::string_view other_state);

  /// Revoked ids remembered.
  [[nodiscard]] size_t revoked() const;

  /// The key `id`, if stored.
  [[nodiscard]] std::optional<api_key_record> find(std::string_view id) const;

  /// Keys in id order; of `tenant` only unless it is empty.
  [[nodiscard]] std::vector<api_key_record> list(std::string_view tenant) const;

  /// Checks a presented key text: `hive_<id>_<secret>` whose SHA-256 matches the stored hash
  /// (compared in constant time). Returns the record, nullopt if unknown or wrong.
  [[nodiscard]] std::optional<api_key_record> check(std::string_view key) const;

  [[nodiscard]] size_t size() const;

private:
  key_store(std::string path, size_t keys_max) : path_(std::move(path)), keys_max_(keys_max) {}

  using key_map = std::map<std::string, api_key_record, std::less<>>;
  using tombstone_map = std::map<std::string, int64_t, std::less<>>;

  /// Writes `keys` and `revoked` to the file (nothing if memory only).
  caf::error save(const key_map& keys, const tombstone_map& revoked) const;

  std::string path_;
  size_t keys_max_;
  mutable std::mutex mtx_;
  key_map keys_;
  /// Revoked id -> when (Unix ms); at most keys_max_ entries.
  tombstone_map revoked_;
};

/// `keys` as the cluster replicates it (cluster::replicate): merges are logged
/// (`api_keys_merged` with the counts; `api_keys_left_out` at warn when auth.keys_max left
/// keys out).
[[nodiscard]] cluster::replicated_state replicated_keys(key_store& keys);

// -- rate limits ----------------------------------------------------------------------------------

/// Token buckets, one per tenant: refilled at `rate_per_s`, holding at most `burst`.
class tenant_limiter {
public:
  tenant_limiter(double rate_per_s, double burst, size_t tenants_max)
      : rate_per_s_(rate_per_s), burst_(burst), tenants_max_(tenants_max) {}

  /// Takes one token of `tenant` at `now`. Returns 0 if admitted, else the milliseconds until
  /// a token is available (at least 1).
  [[nodiscard]] int64_t admit(std::string_view tenant, std::chrono::steady_clock::time_point now);

  /// Tenants with a bucket.
  [[nodiscard]] size_t tracked() const;

private:
  struct bucket {
    double tokens;
    std::chrono::steady_clock::time_point at;
  };

  double rate_per_s_;
  double burst_;
  size_t tenants_max_;
  mutable std::mutex mtx_;
  std::map<std::string, bucket, std::less<>> buckets_;
};

// -- audit log ------------------------------------------------------------------------------------

/// An append-only JSON-lines file, rotated at `file_bytes_max` into `<path>.1 .. <path>.N`.
class audit_log {
public:
  /// Opens (creating) `path` with O_APPEND. Errors: io_error naming the path.
  [[nodiscard]] static caf::expected<std::unique_ptr<audit_log>> open(std::string path,
                                                                      int64_t file_bytes_max,
                                                                      int64_t files_max);

  ~audit_log();
  audit_log(const audit_log&) = delete;
  audit_log& operator=(const audit_log&) = delete;

  /// Appends `record` as one line with one write(2). A failed write is logged and counted, and
  /// never fails the call it records.
  void write(const nlohmann::json& record);

  /// Lines that could not be written.
  [[nodiscard]] uint64_t failures() const;

  [[nodiscard]] const std::string& path() const noexcept {
    return path_;
  }

private:
  audit_log(std::string path, int fd, int64_t size, int64_t file_bytes_max, int64_t files_max)
      : path_(std::move(path)), fd_(fd), size_(size), file_bytes_max_(file_bytes_max),
        files_max_(files_max) {}

  void rotate();

  std::string path_;
  int fd_;
  int64_t size_;
  int64_t file_bytes_max_;
  int64_t files_max_;
  uint64_t failures_ = 0;
  mutable std::mutex mtx_;
};

// -- the whole ------------------------------------------------------------------------------------

/// The security state of one node's gateway.
class security {
public:
  /// What `open` needs besides config.
  struct settings {
    /// The bootstrap admin key (the contents of `auth.admin_key_file`, trimmed); empty: the
    /// key store must hold an admin key, and one is generated if it holds none.
    std::string admin_key;
    /// The JWT secret (the contents of `auth.jwt_secret_file`); empty: JWTs are refused.
    std::string jwt_secret;
    /// The key file (empty: keys live in memory only).
    std::string keys_path;
    /// The audit log file (empty: no audit log).
    std::string audit_path;
    std::string node_name;
  };

  /// Opens the key store and the audit log. When `s.admin_key` is empty and the store has no
  /// admin key, one is created and returned in `generated_admin_key`. Errors: io_error,
  /// invalid_config.
  [[nodiscard]] static caf::expected<std::unique_ptr<security>> open(
    const node_config& cfg, settings s, std::string* generated_admin_key = nullptr);

  /// Reads the settings from `cfg`: the admin key and JWT secret files, and the key store and
  /// audit paths under `data_dir`. Errors: invalid_config naming the file and the problem.
  [[nodiscard]] static caf::expected<settings> settings_from(const node_config& cfg,
                                                             const std::string& data_dir);

  /// Authenticates the value of an `Authorization` header: `Bearer <API key or JWT>`.
  /// Errors: unauthenticated, saying what is missing or wrong.
  [[nodiscard]] caf::expected<principal> authenticate(std::string_view authorization) const;

  [[nodiscard]] key_store& keys() noexcept {
    return *keys_;
  }

  [[nodiscard]] tenant_limiter& limiter() noexcept {
    return limiter_;
  }

  /// The audit log, nullptr if none.
  [[nodiscard]] audit_log* audit() noexcept {
    return audit_.get();
  }

  [[nodiscard]] const node_config::quota_section& quota() const noexcept {
    return quota_;
  }

  [[nodiscard]] const std::string& node_name() const noexcept {
    return node_name_;
  }

private:
  security(const node_config& cfg, settings s, std::unique_ptr<key_store> keys,
           std::unique_ptr<audit_log> audit);

  std::string admin_key_hash_; ///< SHA-256 of the bootstrap key from the file, if any
  jwt_rules jwt_;
  node_config::quota_section quota_;
  std::string node_name_;
  std::unique_ptr<key_store> keys_;
  tenant_limiter limiter_;
  std::unique_ptr<audit_log> audit_;
};

} // namespace hive
