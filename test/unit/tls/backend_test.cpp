// Config-time helpers: key pair and CA bundle checks, self-signed certificates, and the
// certificate facts a context reports for metrics.

#include <mbedtls/oid.h>
#include <mbedtls/x509_crt.h>

#include <ctime>
#include <string>

#include "harness.h"

namespace sidecar::tls::test {
namespace {

TEST_CASE("checkKeyPair", "[tls][config]") {
    SIDECAR_BACKEND(backend);
    const Fixture& f = fixture();
    const std::string cert = writeTempFile("pair.crt", f.server.cert_pem);
    const std::string key = writeTempFile("pair.key", f.server.key_pem);
    const std::string otherKey = writeTempFile("other.key", f.server_a.key_pem);
    const std::string chain = writeTempFile("chain.crt", f.server.cert_pem + f.ca.cert_pem);
    const std::string rsaCert = writeTempFile("rsa.crt", f.server_rsa.cert_pem);
    const std::string rsaKey = writeTempFile("rsa.key", f.server_rsa.key_pem);
    const std::string garbage = writeTempFile("garbage.pem", "not a certificate\n");

    CHECK_FALSE(backend->checkKeyPair(cert, key).has_value());
    CHECK_FALSE(backend->checkKeyPair(chain, key).has_value());
    CHECK_FALSE(backend->checkKeyPair(rsaCert, rsaKey).has_value());

    auto mismatch = backend->checkKeyPair(cert, otherKey);
    REQUIRE(mismatch.has_value());
    CHECK(mismatch->find("private key does not match certificate") == 0);
    CHECK(mismatch->find(otherKey) != std::string::npos);

    CHECK(backend->checkKeyPair(cert, rsaKey).value().find("does not match") != std::string::npos);
    CHECK(backend->checkKeyPair("/x/tls.crt", key).value() ==
          "cannot read /x/tls.crt: No such file or directory");
    CHECK(backend->checkKeyPair(cert, "/x/tls.key").value() ==
          "cannot read /x/tls.key: No such file or directory");
    CHECK(backend->checkKeyPair(garbage, key).value().find("cannot parse certificate " + garbage) ==
          0);
    CHECK(
        backend->checkKeyPair(cert, garbage).value().find("cannot parse private key " + garbage) ==
        0);
    CHECK(backend->checkKeyPair(f.dir, key).value().find("cannot read " + f.dir + ": ") == 0);
}

TEST_CASE("checkCaBundle", "[tls][config]") {
    SIDECAR_BACKEND(backend);
    const Fixture& f = fixture();
    CHECK_FALSE(backend->checkCaBundle(f.ca_path).has_value());
    const std::string two = writeTempFile("two-cas.pem", f.ca.cert_pem + f.other_ca.cert_pem);
    CHECK_FALSE(backend->checkCaBundle(two).has_value());
    const std::string garbage = writeTempFile("garbage-ca.pem", "nothing to see\n");
    CHECK(backend->checkCaBundle(garbage).value().find("cannot parse CA bundle " + garbage) == 0);
    CHECK(backend->checkCaBundle("/nonexistent.pem").value() ==
          "cannot read /nonexistent.pem: No such file or directory");
}

TEST_CASE("selfSigned makes a usable server certificate", "[tls][config]") {
    SIDECAR_BACKEND(backend);
    std::string cert, key, error;
    REQUIRE(backend->selfSigned({"localhost", "127.0.0.1", "::1"}, 30, &cert, &key, &error));
    CHECK(cert.find("-----BEGIN CERTIFICATE-----") == 0);
    CHECK(key.find("PRIVATE KEY-----") != std::string::npos);

    // What it says about itself.
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    REQUIRE(mbedtls_x509_crt_parse(&crt, reinterpret_cast<const unsigned char*>(cert.c_str()),
                                   cert.size() + 1) == 0);
    CHECK(crt.version == 3);
    CHECK(mbedtls_pk_get_type(&crt.pk) == MBEDTLS_PK_ECKEY);
    CHECK(mbedtls_x509_crt_check_key_usage(&crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) == 0);
    CHECK(mbedtls_x509_crt_check_key_usage(&crt, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0);
    CHECK(mbedtls_x509_crt_check_extended_key_usage(
              &crt, MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) == 0);
    CHECK(mbedtls_x509_crt_check_extended_key_usage(
              &crt, MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0);
    mbedtls_x509_crt_free(&crt);

    ServerOptions so;
    so.pair.certificate_pem = cert;
    so.pair.private_key_pem = key;
    auto sctx = backend->serverContext(so, &error);
    REQUIRE(sctx);
    const std::vector<CertificateInfo> infos = sctx->certificates();
    REQUIRE(infos.size() == 1);
    CHECK(infos[0].source == "<memory>");
    CHECK(infos[0].subject == "CN=localhost");
    CHECK(infos[0].serial_hex.size() == 32);
    const int64_t now = int64_t(std::time(nullptr));
    CHECK(infos[0].not_before <= now - 3600 + 60);
    CHECK(infos[0].not_before >= now - 3600 - 60);
    CHECK(infos[0].not_after >= now + 30 * 86400 - 60);
    CHECK(infos[0].not_after <= now + 30 * 86400 + 60);

    // It verifies as itself, by DNS name and by IP address (v4 and v6 SANs).
    const std::string caPath = writeTempFile("self-signed.pem", cert);
    for (const char* name : {"localhost", "127.0.0.1", "::1"}) {
        INFO(name);
        ClientOptions co;
        co.ca_path = caPath;
        co.server_name = name;
        auto cctx = backend->clientContext(co, &error);
        REQUIRE(cctx);
        auto client = cctx->newSession();
        auto server = sctx->newSession();
        HandshakeResult r = handshake(*client, *server);
        INFO(client->error());
        CHECK(r.ok());
    }

    std::string unused;
    CHECK_FALSE(backend->selfSigned({}, 30, &unused, &unused, &error));
    CHECK_FALSE(backend->selfSigned({"localhost"}, 0, &unused, &unused, &error));
    CHECK(error.find("days") != std::string::npos);
}

TEST_CASE("certificates() lists default then SNI certificates", "[tls][config]") {
    SIDECAR_BACKEND(backend);
    const Fixture& f = fixture();
    ServerOptions so = serverOptions();
    so.pair.certificate_pem.clear();
    so.pair.certificate_path = writeTempFile("default.crt", f.server.cert_pem);
    so.sni.push_back({{"a.example.com"}, pemPair(f.server_a)});
    std::string error;
    auto ctx = backend->serverContext(so, &error);
    REQUIRE(ctx);
    std::vector<CertificateInfo> infos = ctx->certificates();
    REQUIRE(infos.size() == 2);
    CHECK(infos[0].source == so.pair.certificate_path);
    CHECK(infos[0].subject == "CN=localhost,O=sidecar tests");
    CHECK(infos[1].source == "<memory>");
    CHECK(infos[1].subject == "CN=a.example.com");
    CHECK(infos[0].not_after > int64_t(std::time(nullptr)) + 29 * 86400);
    CHECK(infos[0].serial_hex != infos[1].serial_hex);

    ClientOptions co = clientOptions();
    co.pair = pemPair(f.client);
    auto cctx = backend->clientContext(co, &error);
    REQUIRE(cctx);
    REQUIRE(cctx->certificates().size() == 1);
    CHECK(cctx->certificates()[0].subject == "CN=client-good,O=acme");
    CHECK(backend->clientContext(clientOptions(), &error)->certificates().empty());

    so.sni.push_back({{"a*.example.com"}, pemPair(f.server_a)});
    CHECK_FALSE(backend->serverContext(so, &error));
    CHECK(error.find("a*.example.com") != std::string::npos);
}

}  // namespace
}  // namespace sidecar::tls::test
