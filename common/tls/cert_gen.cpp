#include "common/tls/cert_gen.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "common/tls/tls.h"

namespace sidetrace::tls {

namespace {

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

KeyPtr NewKey() { return KeyPtr(EVP_EC_gen("P-256"), &EVP_PKEY_free); }

bool IsIp(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

enum class Kind { kCa, kServer, kClient, kSelfSignedServer };

// Builds and signs one certificate. For kCa and kSelfSignedServer the
// certificate signs itself (issuer == nullptr).
Result<CertPtr> MakeCert(Kind kind, const std::string& cn, EVP_PKEY* key, X509* issuer,
                         EVP_PKEY* issuer_key, const std::vector<std::string>& names) {
  CertPtr cert(X509_new(), &X509_free);
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -86400);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 825L * 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("sidetrace"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));

  bool ok = AddExt(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (issuer) ok = ok && AddExt(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  switch (kind) {
    case Kind::kCa:
      ok = ok && AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
      ok = ok && AddExt(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
      break;
    case Kind::kClient:
      ok = ok && AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
      ok = ok && AddExt(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
      ok = ok && AddExt(cert.get(), signer, NID_ext_key_usage, "clientAuth");
      break;
    case Kind::kServer:
    case Kind::kSelfSignedServer: {
      ok = ok && AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
      ok = ok && AddExt(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
      ok = ok && AddExt(cert.get(), signer, NID_ext_key_usage, "serverAuth");
      std::string san = "DNS:localhost,IP:127.0.0.1,IP:::1";
      for (const auto& n : names) {
        if (n == "localhost" || n == "127.0.0.1" || n == "::1" || n.empty()) continue;
        san += (IsIp(n) ? ",IP:" : ",DNS:") + n;
      }
      ok = ok && AddExt(cert.get(), signer, NID_subject_alt_name, san);
      break;
    }
  }
  if (!ok) return Status::Internal(fmt::format("cannot build certificate {}: {}", cn, LastOpenSslError()));
  if (X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0)
    return Status::Internal(fmt::format("cannot sign certificate {}: {}", cn, LastOpenSslError()));
  return cert;
}

Status WritePem(const std::string& path, mode_t mode, X509* cert, EVP_PKEY* key) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::IoError(fmt::format("{}: cannot create", path));
  FILE* f = fdopen(fd, "w");
  if (!f) {
    ::close(fd);
    return Status::IoError(fmt::format("{}: cannot open", path));
  }
  bool ok = cert ? PEM_write_X509(f, cert) == 1
                 : PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return Status::IoError(fmt::format("{}: write failed", path));
  return Status::Ok();
}

}  // namespace

Result<TestPki> GenerateTestPki(const std::string& dir, const std::vector<std::string>& extra_names,
                                const std::string& ca_name) {
  ::mkdir(dir.c_str(), 0700);
  TestPki pki;
  pki.dir = dir;
  pki.ca_cert = dir + "/ca.pem";
  pki.ca_key = dir + "/ca-key.pem";
  pki.server_cert = dir + "/server.pem";
  pki.server_key = dir + "/server-key.pem";
  pki.client_cert = dir + "/client.pem";
  pki.client_key = dir + "/client-key.pem";

  KeyPtr ca_key = NewKey(), server_key = NewKey(), client_key = NewKey();
  if (!ca_key || !server_key || !client_key)
    return Status::Internal("EC key generation failed: " + LastOpenSslError());
  auto ca = MakeCert(Kind::kCa, ca_name, ca_key.get(), nullptr, nullptr, {});
  if (!ca.ok()) return ca.status();
  auto server = MakeCert(Kind::kServer, "localhost", server_key.get(), ca->get(), ca_key.get(), extra_names);
  if (!server.ok()) return server.status();
  auto client = MakeCert(Kind::kClient, "sidetrace client", client_key.get(), ca->get(), ca_key.get(), {});
  if (!client.ok()) return client.status();

  for (Status st : {WritePem(pki.ca_cert, 0644, ca->get(), nullptr),
                    WritePem(pki.ca_key, 0600, nullptr, ca_key.get()),
                    WritePem(pki.server_cert, 0644, server->get(), nullptr),
                    WritePem(pki.server_key, 0600, nullptr, server_key.get()),
                    WritePem(pki.client_cert, 0644, client->get(), nullptr),
                    WritePem(pki.client_key, 0600, nullptr, client_key.get())}) {
    if (!st.ok()) return st;
  }
  return pki;
}

Status GenerateSelfSigned(const std::string& cert_file, const std::string& key_file,
                          const std::vector<std::string>& names) {
  KeyPtr key = NewKey();
  if (!key) return Status::Internal("EC key generation failed: " + LastOpenSslError());
  auto cert = MakeCert(Kind::kSelfSignedServer, names.empty() ? "localhost" : names.front(), key.get(),
                       nullptr, nullptr, names);
  if (!cert.ok()) return cert.status();
  Status st = WritePem(key_file, 0600, nullptr, key.get());
  if (!st.ok()) return st;
  return WritePem(cert_file, 0644, cert->get(), nullptr);
}

}  // namespace sidetrace::tls
