// issueCertificate: a CA, and server and client certificates signed by it, made by every
// backend and used across backends for a mutually authenticated handshake.

#include <mbedtls/oid.h>
#include <mbedtls/x509_crt.h>

#include <string>

#include "harness.h"

namespace sidecar::tls::test {
namespace {

struct Made {
    std::string cert, key;
};

Made issue(Backend& backend, const CertificateRequest& request) {
    Made m;
    std::string error;
    INFO("issuing with " << backend.name());
    bool ok = backend.issueCertificate(request, &m.cert, &m.key, &error);
    INFO(error);
    REQUIRE(ok);
    return m;
}

CertificateRequest request(CertificateProfile profile, std::vector<std::string> names,
                           const Made* issuer = nullptr) {
    CertificateRequest r;
    r.profile = profile;
    r.names = std::move(names);
    r.days = 10;
    if (issuer != nullptr) {
        r.issuer_certificate_pem = issuer->cert;
        r.issuer_private_key_pem = issuer->key;
    }
    return r;
}

// Parsed with mbedTLS whatever made it: what the certificate says about itself.
struct Parsed {
    Parsed(const std::string& pem) {
        mbedtls_x509_crt_init(&crt);
        REQUIRE(mbedtls_x509_crt_parse(&crt, reinterpret_cast<const unsigned char*>(pem.c_str()),
                                       pem.size() + 1) == 0);
    }
    ~Parsed() { mbedtls_x509_crt_free(&crt); }
    bool hasExtendedUsage(const char* oid, size_t len) {
        return mbedtls_x509_crt_check_extended_key_usage(&crt, oid, len) == 0;
    }
    mbedtls_x509_crt crt;
};

TEST_CASE("a CA from one backend signs server and client certificates of another",
          "[tls][config][issue]") {
    std::vector<BackendFactory> all = backendFactories();
    const BackendFactory& caMaker = GENERATE_COPY(from_range(all));
    const BackendFactory& leafMaker = GENERATE_COPY(from_range(all));
    const BackendFactory& serverSide = GENERATE_COPY(from_range(all));
    INFO("CA by " << caMaker.name << ", leaves by " << leafMaker.name << ", server "
                  << serverSide.name);
    std::unique_ptr<Backend> caBackend = caMaker.make();
    std::unique_ptr<Backend> leafBackend = leafMaker.make();
    std::unique_ptr<Backend> backend = serverSide.make();

    CertificateRequest caRequest = request(CertificateProfile::Authority, {});
    caRequest.common_name = "test CA";
    const Made ca = issue(*caBackend, caRequest);
    const Made server =
        issue(*leafBackend, request(CertificateProfile::Server, {"localhost", "127.0.0.1"}, &ca));
    const Made client =
        issue(*leafBackend, request(CertificateProfile::Client,
                                    {"web", "spiffe://example.org/ns/default/sa/web"}, &ca));

    {
        Parsed p(ca.cert);
        CHECK(p.crt.MBEDTLS_PRIVATE(ca_istrue) == 1);
        CHECK(p.crt.MBEDTLS_PRIVATE(max_pathlen) == 1);  // mbedTLS stores pathlen + 1
        CHECK(mbedtls_x509_crt_check_key_usage(&p.crt, MBEDTLS_X509_KU_KEY_CERT_SIGN) == 0);
        CHECK(mbedtls_x509_crt_check_key_usage(&p.crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0);
    }
    {
        Parsed p(server.cert);
        CHECK(p.crt.MBEDTLS_PRIVATE(ca_istrue) == 0);
        CHECK(
            p.hasExtendedUsage(MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)));
        CHECK_FALSE(
            p.hasExtendedUsage(MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)));
    }
    {
        Parsed p(client.cert);
        CHECK(p.crt.MBEDTLS_PRIVATE(ca_istrue) == 0);
        CHECK(
            p.hasExtendedUsage(MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)));
        CHECK_FALSE(
            p.hasExtendedUsage(MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)));
    }

    const std::string caPath = writeTempFile("issued-ca.crt", ca.cert);
    std::string error;
    ServerOptions so;
    so.pair.certificate_pem = server.cert;
    so.pair.private_key_pem = server.key;
    so.client_auth = ClientAuth::Required;
    so.client_ca_path = caPath;
    so.allow.san_uri = {"spiffe://example.org/ns/default/sa/web"};
    auto sctx = backend->serverContext(so, &error);
    INFO(error);
    REQUIRE(sctx);
    CHECK(sctx->certificates().at(0).subject == "CN=localhost");

    for (const char* name : {"localhost", "127.0.0.1"}) {
        INFO(name);
        ClientOptions co;
        co.ca_path = caPath;
        co.server_name = name;
        co.pair.certificate_pem = client.cert;
        co.pair.private_key_pem = client.key;
        auto cctx = backend->clientContext(co, &error);
        REQUIRE(cctx);
        auto c = cctx->newSession();
        auto s = sctx->newSession();
        HandshakeResult r = handshake(*c, *s);
        INFO(c->error() << " / " << s->error());
        REQUIRE(r.ok());
        const PeerIdentity& peer = s->info().peer;
        CHECK(peer.verified);
        CHECK(peer.cn == "web");
        CHECK(peer.san_dns == std::vector<std::string>{"web"});
        CHECK(peer.san_uri == std::vector<std::string>{"spiffe://example.org/ns/default/sa/web"});
    }
}

TEST_CASE("issueCertificate refuses what cannot be issued", "[tls][config][issue]") {
    SIDECAR_BACKEND(backend);
    CertificateRequest caRequest = request(CertificateProfile::Authority, {});
    caRequest.common_name = "test CA";
    const Made ca = issue(*backend, caRequest);
    const Made leaf = issue(*backend, request(CertificateProfile::Server, {"localhost"}, &ca));
    const Made other = issue(*backend, caRequest);
    std::string cert, key, error;

    SECTION("a leaf is not a CA") {
        CHECK_FALSE(backend->issueCertificate(request(CertificateProfile::Server, {"x"}, &leaf),
                                              &cert, &key, &error));
        CHECK(error == "cannot make certificate: the issuer is not a CA certificate");
    }
    SECTION("the issuer's key must match its certificate") {
        CertificateRequest r = request(CertificateProfile::Client, {"x"}, &ca);
        r.issuer_private_key_pem = other.key;
        CHECK_FALSE(backend->issueCertificate(r, &cert, &key, &error));
        CHECK(error.find("cannot make certificate: issuer: private key does not match") == 0);
    }
    SECTION("a certificate without its key") {
        CertificateRequest r = request(CertificateProfile::Client, {"x"}, &ca);
        r.issuer_private_key_pem.clear();
        CHECK_FALSE(backend->issueCertificate(r, &cert, &key, &error));
        CHECK(error ==
              "cannot make certificate: the issuer needs both its certificate and its key");
    }
    SECTION("a CA needs a name") {
        CHECK_FALSE(backend->issueCertificate(request(CertificateProfile::Authority, {}), &cert,
                                              &key, &error));
        CHECK(error == "cannot make certificate: a CA needs a name");
    }
    SECTION("a leaf needs a name") {
        CHECK_FALSE(backend->issueCertificate(request(CertificateProfile::Client, {}, &ca), &cert,
                                              &key, &error));
        CHECK(error == "cannot make certificate: at least one host name is needed");
    }
    CHECK(cert.empty());
    CHECK(key.empty());
}

}  // namespace
}  // namespace sidecar::tls::test
