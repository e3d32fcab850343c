// Certificate generation with OpenSSL's C API, no `openssl` binary needed.
//
// What it is: two helpers.
//  - GenerateTestPki(dir): a throw-away CA plus a server certificate (SANs
//    localhost, 127.0.0.1, ::1 and any extra names) and a client certificate,
//    all signed by that CA, written as PEM files into `dir`. Tests of the
//    backend and the orchestrator use it to run real TLS; call it twice with
//    two directories to get a "wrong CA" for negative tests.
//  - GenerateSelfSigned(cert, key, names): one self-signed certificate for
//    `sidetrace-backend --self-signed` demos.
// Keys are ECDSA P-256 (fast to generate on a loaded VM), validity 1 day back
// to 825 days ahead, SHA-256 signatures.
// Thread-safety: independent calls are safe; files are written 0600 (keys).
// Failure modes: returns a Status naming the file or the OpenSSL reason.
#pragma once

#include <string>
#include <vector>

#include "common/util/status.h"

namespace sidetrace::tls {

struct TestPki {
  std::string dir;
  std::string ca_cert, ca_key;
  std::string server_cert, server_key;
  std::string client_cert, client_key;
};

// `extra_names` are added to the server certificate's SAN: literal IPs become
// IP SANs, anything else a DNS SAN. `ca_name` is the CA's common name.
Result<TestPki> GenerateTestPki(const std::string& dir,
                                const std::vector<std::string>& extra_names = {},
                                const std::string& ca_name = "sidetrace test CA");

// Writes a self-signed server certificate and key. `names` go into the SAN
// (localhost, 127.0.0.1 and ::1 are always included).
Status GenerateSelfSigned(const std::string& cert_file, const std::string& key_file,
                          const std::vector<std::string>& names = {});

}  // namespace sidetrace::tls
