#pragma once

// The security of an in-process test gateway: `test_admin_key` as its bootstrap admin key,
// API keys in memory, and an audit log only when a path is given.

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "actors/auth.hpp"
#include "config/node_config.hpp"
#include "protocols/errc.hpp"
#include "support/http_client.hpp"

namespace hive::test {

/// Opens a `security` for `cfg` (aborting the test on failure). `jwt_secret` empty: no JWTs.
inline std::unique_ptr<security> make_test_security(const node_config& cfg,
                                                    std::string audit_path = {},
                                                    std::string jwt_secret = {}) {
  security::settings s;
  s.admin_key = test_admin_key;
  s.node_name = cfg.node.name;
  s.audit_path = std::move(audit_path);
  s.jwt_secret = std::move(jwt_secret);
  auto sec = security::open(cfg, std::move(s));
  if (!sec) {
    ADD_FAILURE() << "security::open: " << message_of(sec.error());
    return nullptr;
  }
  return std::move(*sec);
}

} // namespace hive::test
