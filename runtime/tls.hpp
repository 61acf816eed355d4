#pragma once

#include <utility> // before Asio: Boost 1.74 under g++ 12 / C++20 misses std::exchange otherwise

#include <string>

#include <boost/asio/ssl/context.hpp>
#include <caf/error.hpp>

namespace hive {

/// The PEM files of one TLS endpoint. `ca_file` empty: peers are not asked for a certificate
/// (the gateway); set: every peer must present one that chains to it (node to node).
struct tls_files {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
};

/// Prepares `ctx` for TLS 1.2 or later with `files`: the certificate chain and its key, and,
/// when `files.ca_file` is set, peer verification against that CA with a peer certificate
/// required (mutual TLS). `prefix` names the config section in errors (`gateway`, `cluster`).
/// Errors: invalid_config naming the key and the file that cannot be loaded, or a key that
/// does not belong to the certificate.
[[nodiscard]] caf::error load_tls_files(boost::asio::ssl::context& ctx, const std::string& prefix,
                                        const tls_files& files);

} // namespace hive
