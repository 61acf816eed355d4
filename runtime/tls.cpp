#include "runtime/tls.hpp"

#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cassert>

#include "protocols/errc.hpp"

// OpenSSL's contract: the calling thread's error queue must be empty before an SSL I/O call,
// or SSL_get_error() reports a stale error. libcaf_openssl 0.17 never clears it (its
// session::handle_ssl_result drops a failed handshake without reading the queue), so one
// stranger refused on CAF's multiplexer thread made the next "would block" read of every
// healthy member connection look like a TLS failure, and CAF closed them all, again at every
// retry of the stranger (seen: members flapping down/up every 500 ms). These definitions in
// the executable interpose libssl's (ELF symbol interposition: libcaf_openssl's calls bind to
// the executable first), clear the queue and call the real function. Boost.Asio clears the
// queue itself before its calls, so for it this changes nothing.
namespace {

template <class Fn>
Fn real_ssl_fn(const char* name) {
  auto fn = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
  assert(fn != nullptr && "libssl must define the function interposed here");
  return fn;
}

} // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static auto real = real_ssl_fn<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static auto real = real_ssl_fn<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_accept(SSL* ssl) {
  static auto real = real_ssl_fn<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

int SSL_connect(SSL* ssl) {
  static auto real = real_ssl_fn<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

} // extern "C"

namespace hive {

caf::error load_tls_files(boost::asio::ssl::context& ctx, const std::string& prefix,
                          const tls_files& files) {
  namespace ssl = boost::asio::ssl;
  boost::system::error_code ec;
  auto bad = [&](const char* key, const std::string& file, const std::string& why) {
    return make_error(errc::invalid_config, prefix + "." + key + " '" + file + "': " + why);
  };
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2
                    | ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1
                    | ssl::context::single_dh_use,
                  ec);
  if (!ec)
    ctx.use_certificate_chain_file(files.cert_file, ec);
  if (ec)
    return bad("tls_cert_file", files.cert_file, ec.message());
  ctx.use_private_key_file(files.key_file, ssl::context::pem, ec);
  if (ec)
    return bad("tls_key_file", files.key_file, ec.message());
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    return bad("tls_key_file", files.key_file,
               "does not belong to the certificate in '" + files.cert_file + "'");
  if (files.ca_file.empty())
    return {};
  ctx.load_verify_file(files.ca_file, ec);
  if (ec)
    return bad("tls_ca_file", files.ca_file, ec.message());
  ctx.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
  if (ec)
    return bad("tls_ca_file", files.ca_file, ec.message());
  return {};
}

} // namespace hive
