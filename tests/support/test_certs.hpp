#pragma once

// Certificates for TLS tests, made with the openssl tool (EC P-256: fast to generate).

#include <cstdlib>
#include <filesystem>
#include <string>

#include "runtime/tls.hpp"

namespace hive::test {

/// Makes a self-signed CA `dir/<ca>.crt` with its key `dir/<ca>.key`. False if openssl failed.
inline bool make_ca(const std::filesystem::path& dir, const std::string& ca) {
  auto key = (dir / (ca + ".key")).string();
  auto crt = (dir / (ca + ".crt")).string();
  auto cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
             " -subj '/CN="
    + ca + "' -keyout '" + key + "' -out '" + crt + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

/// Makes `dir/<name>.crt` (CN=name, for 127.0.0.1) signed by the CA `dir/<ca>.*`, and its key
/// `dir/<name>.key`. False if openssl failed.
inline bool make_signed_cert(const std::filesystem::path& dir, const std::string& name,
                             const std::string& ca) {
  auto p = [&](const std::string& stem, const char* ext) {
    return "'" + (dir / (stem + ext)).string() + "'";
  };
  auto ext = (dir / (name + ".ext")).string();
  auto cmd = "printf 'subjectAltName=IP:127.0.0.1\\n' > '" + ext
    + "' && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=" + name
    + "' -keyout " + p(name, ".key") + " -out " + p(name, ".csr")
    + " >/dev/null 2>&1 && openssl x509 -req -days 2 -in " + p(name, ".csr") + " -CA "
    + p(ca, ".crt") + " -CAkey " + p(ca, ".key") + " -CAcreateserial -extfile '" + ext + "' -out "
    + p(name, ".crt") + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

/// The files of `name` in `dir` with `ca` as the trusted CA (as `cluster.tls_*` take them).
inline tls_files cert_files(const std::filesystem::path& dir, const std::string& name,
                            const std::string& ca) {
  return {(dir / (name + ".crt")).string(), (dir / (name + ".key")).string(),
          (dir / (ca + ".crt")).string()};
}

} // namespace hive::test
