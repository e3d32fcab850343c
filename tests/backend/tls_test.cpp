// Real TLS handshakes over loopback with certificates generated in the test:
// the right CA passes, a different CA and a wrong peer name are rejected.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <filesystem>
#include <thread>

#include "common/tls/cert_gen.h"
#include "common/tls/tls.h"

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using namespace sidetrace;

namespace {

tls::ServerConfig Server(std::string cert, std::string key) {
  tls::ServerConfig c;
  c.cert_file = std::move(cert);
  c.key_file = std::move(key);
  return c;
}
tls::ClientConfig Client(std::string ca) {
  tls::ClientConfig c;
  c.ca_file = std::move(ca);
  return c;
}

std::string TempDir() {
  char tmpl[] = "/tmp/backend_tls_test.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

// Runs one server handshake on an ephemeral port and one client handshake
// against it; returns the client's error (empty on success).
std::string Handshake(ssl::context& server_ctx, ssl::context& client_ctx, const std::string& peer_name) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto port = acceptor.local_endpoint().port();
  std::thread server([&] {
    boost::system::error_code ec;
    ssl::stream<tcp::socket> s(io, server_ctx);
    acceptor.accept(s.next_layer(), ec);
    if (!ec) s.handshake(ssl::stream_base::server, ec);
  });
  ssl::stream<tcp::socket> c(io, client_ctx);
  boost::system::error_code ec;
  c.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  REQUIRE(!ec);
  REQUIRE(tls::SetPeerName(c.native_handle(), peer_name).ok());
  c.handshake(ssl::stream_base::client, ec);
  c.next_layer().close();
  server.join();
  return ec ? ec.message() : "";
}

}  // namespace

TEST_CASE("backend_tls: generated PKI verifies, wrong CA and wrong name fail", "[integration]") {
  std::string dir = TempDir();
  auto pki = tls::GenerateTestPki(dir + "/a", {"backend.test", "203.0.113.7"});
  REQUIRE(pki.ok());
  auto other = tls::GenerateTestPki(dir + "/b", {}, "another CA");
  REQUIRE(other.ok());

  auto server = tls::MakeServerContext(Server(pki->server_cert, pki->server_key));
  REQUIRE(server.ok());
  auto good = tls::MakeClientContext(Client(pki->ca_cert));
  REQUIRE(good.ok());
  auto wrong_ca = tls::MakeClientContext(Client(other->ca_cert));
  REQUIRE(wrong_ca.ok());

  CHECK(Handshake(*server, *good, "127.0.0.1") == "");
  CHECK(Handshake(*server, *good, "localhost") == "");
  CHECK(Handshake(*server, *good, "backend.test") == "");
  CHECK(Handshake(*server, *wrong_ca, "127.0.0.1").find("certificate verify failed") != std::string::npos);
  CHECK(Handshake(*server, *good, "other.test").find("certificate verify failed") != std::string::npos);
  CHECK(Handshake(*server, *good, "203.0.113.8").find("certificate verify failed") != std::string::npos);

  auto fp = tls::CertificateFingerprint(pki->server_cert);
  REQUIRE(fp.ok());
  CHECK(fp->size() == 32 * 3 - 1);

  std::string ss_cert = dir + "/ss.pem", ss_key = dir + "/ss-key.pem";
  REQUIRE(tls::GenerateSelfSigned(ss_cert, ss_key, {"demo.test"}).ok());
  auto ss_server = tls::MakeServerContext(Server(ss_cert, ss_key));
  REQUIRE(ss_server.ok());
  auto pinned = tls::MakeClientContext(Client(ss_cert));
  REQUIRE(pinned.ok());
  CHECK(Handshake(*ss_server, *pinned, "demo.test") == "");
  CHECK(Handshake(*ss_server, *good, "demo.test") != "");

  auto bad = tls::MakeServerContext(Server(pki->server_cert, pki->client_key));
  REQUIRE(!bad.ok());
  CHECK(bad.status().message().find("client-key.pem") != std::string::npos);
  std::filesystem::remove_all(dir);
}
