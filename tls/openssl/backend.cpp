// The OpenSSL 3 backend: Backend's factory methods and config-time helpers. Contexts live in
// context.cpp, sessions in session.cpp, certificate handling in x509.cpp.

#include "tls/backend.h"

#include <memory>

#include "tls/factory.h"
#include "tls/openssl/context.h"
#include "tls/openssl/selfsigned.h"
#include "tls/openssl/x509.h"

namespace sidecar::tls {
namespace {

class OpensslBackend final : public Backend {
public:
    OpensslBackend() : state_(std::make_shared<ossl::BackendState>()) {}

    const char* name() const override { return "openssl"; }

    std::shared_ptr<Context> serverContext(const ServerOptions& options,
                                           std::string* error) override {
        return ossl::OsslContext::makeServer(state_, options, error);
    }

    std::shared_ptr<Context> clientContext(const ClientOptions& options,
                                           std::string* error) override {
        return ossl::OsslContext::makeClient(state_, options, error);
    }

    std::optional<std::string> checkKeyPair(const std::string& certificate_path,
                                            const std::string& private_key_path) override {
        KeyPairSource source;
        source.certificate_path = certificate_path;
        source.private_key_path = private_key_path;
        ossl::KeyPair pair;
        std::string error;
        if (!ossl::loadKeyPair(source, &pair, &error)) return error;
        return std::nullopt;
    }

    std::optional<std::string> checkCaBundle(const std::string& ca_path) override {
        std::vector<ossl::X509Ptr> ca;
        std::string error;
        if (!ossl::loadCaBundle(ca_path, &ca, &error)) return error;
        return std::nullopt;
    }

    std::optional<std::string> checkCrl(const std::string& crl_path,
                                        const std::string& ca_path) override {
        std::vector<ossl::X509Ptr> ca;
        std::vector<ossl::X509CrlPtr> crl;
        std::string error;
        if (!ossl::loadCaBundle(ca_path, &ca, &error) || !ossl::loadCrl(crl_path, ca, &crl, &error))
            return error;
        return std::nullopt;
    }

    bool issueCertificate(const CertificateRequest& request, std::string* certificate_pem,
                          std::string* private_key_pem, std::string* error) override {
        return ossl::issueCertificate(request, certificate_pem, private_key_pem, error);
    }

private:
    std::shared_ptr<ossl::BackendState> state_;  // shared with every context made here
};

}  // namespace

std::unique_ptr<Backend> makeOpensslBackend() { return std::make_unique<OpensslBackend>(); }

}  // namespace sidecar::tls
