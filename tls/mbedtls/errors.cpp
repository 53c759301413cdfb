#include "tls/mbedtls/errors.h"

#include <mbedtls/ssl.h>
#include <mbedtls/x509.h>

namespace sidecar::tls::mbed {

// The order follows how specific each finding is: a name or usage mismatch says more than
// "untrusted", which is also set whenever anything in the chain is off.
const char* verifyFailureText(uint32_t flags) {
    if (flags & MBEDTLS_X509_BADCERT_OTHER) return reason::kClientNotAllowed;
    if (flags & MBEDTLS_X509_BADCERT_MISSING) return reason::kClientCertRequired;
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) return reason::kCertNameMismatch;
    if (flags & (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
                 MBEDTLS_X509_BADCERT_NS_CERT_TYPE))
        return reason::kCertUsage;
    if (flags &
        (MBEDTLS_X509_BADCERT_BAD_MD | MBEDTLS_X509_BADCERT_BAD_PK | MBEDTLS_X509_BADCERT_BAD_KEY))
        return reason::kCertWeak;
    if (flags & MBEDTLS_X509_BADCERT_EXPIRED) return reason::kCertExpired;
    if (flags & MBEDTLS_X509_BADCERT_FUTURE) return reason::kCertNotYetValid;
    if (flags & MBEDTLS_X509_BADCERT_REVOKED) return reason::kCertRevoked;
    if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) return reason::kCertUnknownCa;
    return reason::kCertVerifyFailed;
}

uint8_t alertForVerifyFlags(uint32_t flags) {
    if (flags & MBEDTLS_X509_BADCERT_OTHER) return MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED;
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) return MBEDTLS_SSL_ALERT_MSG_BAD_CERT;
    if (flags & (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
                 MBEDTLS_X509_BADCERT_NS_CERT_TYPE | MBEDTLS_X509_BADCERT_BAD_MD |
                 MBEDTLS_X509_BADCERT_BAD_PK | MBEDTLS_X509_BADCERT_BAD_KEY))
        return MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT;
    if (flags & MBEDTLS_X509_BADCERT_EXPIRED) return MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED;
    if (flags & MBEDTLS_X509_BADCERT_FUTURE) return MBEDTLS_SSL_ALERT_MSG_BAD_CERT;
    if (flags & MBEDTLS_X509_BADCERT_REVOKED) return MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED;
    if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) return MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA;
    return MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN;
}

const char* errorText(int ret, bool during_handshake) {
    switch (ret) {
        case MBEDTLS_ERR_SSL_NO_APPLICATION_PROTOCOL:
            return reason::kNoAlpn;
        case MBEDTLS_ERR_SSL_BAD_PROTOCOL_VERSION:
            return reason::kNoVersion;
        case MBEDTLS_ERR_SSL_HANDSHAKE_FAILURE:
            return reason::kNoCommonParameters;
        case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
            return reason::kClientCertRequired;
        case MBEDTLS_ERR_SSL_UNRECOGNIZED_NAME:
            return reason::kUnrecognizedName;
        case MBEDTLS_ERR_SSL_UNSUPPORTED_EXTENSION:
            return reason::kUnsupportedExtension;
        case MBEDTLS_ERR_SSL_CERTIFICATE_VERIFICATION_WITHOUT_HOSTNAME:
            return reason::kNoServerName;
        case MBEDTLS_ERR_SSL_DECODE_ERROR:
        case MBEDTLS_ERR_SSL_ILLEGAL_PARAMETER:
            return during_handshake ? reason::kMalformedHandshake : reason::kMalformed;
        case MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE:
            return during_handshake ? reason::kUnexpectedHandshake : reason::kUnexpected;
        case MBEDTLS_ERR_SSL_INVALID_RECORD:
            return reason::kInvalidRecord;
        case MBEDTLS_ERR_SSL_INVALID_MAC:
            return reason::kBadMac;
        case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
            return reason::kPeerClosedDuringHandshake;
        case MBEDTLS_ERR_SSL_CONN_EOF:
            return reason::kClosedDuringHandshake;
        case MBEDTLS_ERR_SSL_ALLOC_FAILED:
            return reason::kOutOfMemory;
        case MBEDTLS_ERR_SSL_COUNTER_WRAPPING:
            return reason::kCounterExhausted;
        case MBEDTLS_ERR_SSL_INTERNAL_ERROR:
            return reason::kInternal;
        default:
            return during_handshake ? reason::kHandshakeFailed : reason::kTlsError;
    }
}

}  // namespace sidecar::tls::mbed
