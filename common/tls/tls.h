// TLS set-up shared by the orchestrator (client) and the backend (server).
//
// What it is: thin helpers over OpenSSL / Boost.Asio's ssl::context that fix
// the policy in one place: TLS 1.2 minimum, peer verification on by default
// for clients (CA file or the system store), hostname or IP-address checking
// of the server certificate (RFC 6125 via X509_VERIFY_PARAM), and SNI.
//
// Typical use, client side:
//   tls::ClientConfig cc; cc.ca_file = "ca.pem";
//   auto ctx = tls::MakeClientContext(cc);
//   boost::asio::ssl::stream<tcp::socket> s(io, *ctx);
//   auto st = tls::SetPeerName(s.native_handle(), "backend.example");  // or "127.0.0.1"
//   s.handshake(client);   // fails unless the cert chains to ca.pem and names the peer
// Server side:
//   tls::ServerConfig sc; sc.cert_file = "c.pem"; sc.key_file = "k.pem";
//   auto ctx = tls::MakeServerContext(sc);
//
// Ownership: the returned contexts are plain values (movable), owned by the
// caller; they must outlive every stream built on them.
// Thread-safety: configure a context before sharing it; afterwards OpenSSL
// allows concurrent use of one SSL_CTX from many connections.
// Failure modes: every function returns a Status / Result naming the file
// and the OpenSSL reason (ERR_error_string), never throws.
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <string>
#include <string_view>

#include "common/util/status.h"

namespace sidetrace::tls {

struct ServerConfig {
  std::string cert_file;  // PEM, leaf first then intermediates
  std::string key_file;   // PEM private key for the leaf
  // When set, clients must present a certificate chaining to this CA (mTLS).
  std::string client_ca_file;
};

struct ClientConfig {
  // PEM bundle of trusted CAs; empty means the system default store.
  std::string ca_file;
  // Skip certificate verification entirely. Only for demos against a
  // --self-signed backend; logged loudly by callers.
  bool insecure_skip_verify = false;
  // Optional client certificate for mTLS.
  std::string cert_file;
  std::string key_file;
};

// A TLS 1.2+ server context with the certificate and key loaded and checked
// against each other.
Result<boost::asio::ssl::context> MakeServerContext(const ServerConfig& config);

// A TLS 1.2+ client context with verify_peer on (unless insecure_skip_verify).
// Call SetPeerName on each connection before the handshake.
Result<boost::asio::ssl::context> MakeClientContext(const ClientConfig& config);

// Sets SNI (for host names) and the name the server certificate must carry:
// a DNS SAN for a host name, an IP SAN for a literal IPv4/IPv6 address.
Status SetPeerName(SSL* ssl, std::string_view host);

// The last OpenSSL error queue entries as one line ("" when empty); clears it.
std::string LastOpenSslError();

// SHA-256 fingerprint of a PEM certificate file, "AB:CD:..." upper-case hex.
Result<std::string> CertificateFingerprint(const std::string& cert_file);

}  // namespace sidetrace::tls
