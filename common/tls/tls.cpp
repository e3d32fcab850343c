#include "common/tls/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>

#include <fmt/format.h>

namespace sidetrace::tls {

namespace ssl = boost::asio::ssl;

std::string LastOpenSslError() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

namespace {

void SetCommonOptions(SSL_CTX* ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Forward-secret AEAD suites only for TLS 1.2; TLS 1.3 suites are all fine.
  SSL_CTX_set_cipher_list(ctx,
                          "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                          "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                          "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
}

Status LoadCertAndKey(SSL_CTX* ctx, const std::string& cert, const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1)
    return Status::InvalidArgument(fmt::format("{}: cannot load certificate: {}", cert, LastOpenSslError()));
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
    return Status::InvalidArgument(fmt::format("{}: cannot load private key: {}", key, LastOpenSslError()));
  if (SSL_CTX_check_private_key(ctx) != 1)
    return Status::InvalidArgument(fmt::format("{}: key does not match certificate {}", key, cert));
  return Status::Ok();
}

}  // namespace

Result<ssl::context> MakeServerContext(const ServerConfig& config) {
  ssl::context ctx(ssl::context::tls_server);
  SSL_CTX* c = ctx.native_handle();
  SetCommonOptions(c);
  Status st = LoadCertAndKey(c, config.cert_file, config.key_file);
  if (!st.ok()) return st;
  if (!config.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(c, config.client_ca_file.c_str(), nullptr) != 1)
      return Status::InvalidArgument(
          fmt::format("{}: cannot load client CA: {}", config.client_ca_file, LastOpenSslError()));
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return ctx;
}

Result<ssl::context> MakeClientContext(const ClientConfig& config) {
  ssl::context ctx(ssl::context::tls_client);
  SSL_CTX* c = ctx.native_handle();
  SetCommonOptions(c);
  if (config.insecure_skip_verify) {
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
  } else {
    int ok = config.ca_file.empty() ? SSL_CTX_set_default_verify_paths(c)
                                    : SSL_CTX_load_verify_locations(c, config.ca_file.c_str(), nullptr);
    if (ok != 1)
      return Status::InvalidArgument(fmt::format(
          "{}: cannot load CA: {}", config.ca_file.empty() ? "<system store>" : config.ca_file,
          LastOpenSslError()));
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  }
  if (!config.cert_file.empty()) {
    Status st = LoadCertAndKey(c, config.cert_file, config.key_file);
    if (!st.ok()) return st;
  }
  return ctx;
}

Status SetPeerName(SSL* ssl, std::string_view host_view) {
  std::string host(host_view);
  // Strip brackets of "[::1]".
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned char buf[sizeof(in6_addr)];
  bool is_ip = inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (is_ip) {
    // RFC 6066: SNI carries host names only, never literal addresses.
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1)
      return Status::InvalidArgument(fmt::format("bad peer address {}", host));
  } else {
    if (SSL_set_tlsext_host_name(ssl, host.c_str()) != 1)
      return Status::InvalidArgument(fmt::format("bad SNI name {}: {}", host, LastOpenSslError()));
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size()) != 1)
      return Status::InvalidArgument(fmt::format("bad peer host name {}", host));
  }
  return Status::Ok();
}

Result<std::string> CertificateFingerprint(const std::string& cert_file) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(cert_file.c_str(), "r"), &std::fclose);
  if (!f) return Status::IoError(fmt::format("{}: cannot open", cert_file));
  std::unique_ptr<X509, void (*)(X509*)> x(PEM_read_X509(f.get(), nullptr, nullptr, nullptr), &X509_free);
  if (!x) return Status::InvalidArgument(fmt::format("{}: not a PEM certificate", cert_file));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(x.get(), EVP_sha256(), md, &n) != 1)
    return Status::Internal(fmt::format("{}: digest failed", cert_file));
  std::string out;
  for (unsigned i = 0; i < n; ++i) out += fmt::format("{}{:02X}", i ? ":" : "", md[i]);
  return out;
}

}  // namespace sidetrace::tls
