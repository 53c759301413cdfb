// The mbedTLS 3.6 backend: Backend's factory methods and config-time helpers. Contexts live in
// context.cpp, sessions in session.cpp, certificate handling in x509.cpp.

#include "tls/backend.h"

#include <memory>

#include "tls/factory.h"
#include "tls/mbedtls/context.h"
#include "tls/mbedtls/selfsigned.h"
#include "tls/mbedtls/x509.h"

namespace sidecar::tls {
namespace {

class MbedtlsBackend final : public Backend {
public:
    MbedtlsBackend() : state_(std::make_shared<mbed::BackendState>()) {}

    const char* name() const override { return "mbedtls"; }

    std::shared_ptr<Context> serverContext(const ServerOptions& options,
                                           std::string* error) override {
        return mbed::MbedContext::makeServer(state_, options, error);
    }

    std::shared_ptr<Context> clientContext(const ClientOptions& options,
                                           std::string* error) override {
        return mbed::MbedContext::makeClient(state_, options, error);
    }

    std::optional<std::string> checkKeyPair(const std::string& certificate_path,
                                            const std::string& private_key_path) override {
        if (!state_->ok()) return std::string("PSA crypto initialisation failed");
        KeyPairSource source;
        source.certificate_path = certificate_path;
        source.private_key_path = private_key_path;
        mbed::KeyPair pair;
        std::string error;
        if (!mbed::loadKeyPair(source, &pair, &error)) return error;
        return std::nullopt;
    }

    std::optional<std::string> checkCaBundle(const std::string& ca_path) override {
        mbed::Certificates ca;
        std::string error;
        if (!mbed::loadCaBundle(ca_path, &ca, &error)) return error;
        return std::nullopt;
    }

    std::optional<std::string> checkCrl(const std::string& crl_path,
                                        const std::string& ca_path) override {
        mbed::Certificates ca;
        mbed::Crls crl;
        std::string error;
        if (!mbed::loadCaBundle(ca_path, &ca, &error) || !mbed::loadCrl(crl_path, ca, &crl, &error))
            return error;
        return std::nullopt;
    }

    bool issueCertificate(const CertificateRequest& request, std::string* certificate_pem,
                          std::string* private_key_pem, std::string* error) override {
        if (!state_->ok()) {
            *error = "PSA crypto initialisation failed";
            return false;
        }
        return mbed::issueCertificate(request, certificate_pem, private_key_pem, error);
    }

private:
    std::shared_ptr<mbed::BackendState> state_;  // shared with every context made here
};

}  // namespace

std::unique_ptr<Backend> makeMbedtlsBackend() { return std::make_unique<MbedtlsBackend>(); }

}  // namespace sidecar::tls
