#include "tls/mbedtls/errors.h"

#include <mbedtls/ssl.h>
#include <mbedtls/x509.h>

namespace sidecar::tls::mbed {

const char* receivedAlertText(int description) {
    switch (description) {
        case MBEDTLS_SSL_ALERT_MSG_UNEXPECTED_MESSAGE:
            return "peer sent an alert: unexpected_message";
        case MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC:
            return "peer sent an alert: bad_record_mac";
        case MBEDTLS_SSL_ALERT_MSG_RECORD_OVERFLOW:
            return "peer sent an alert: record_overflow";
        case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE:
            return "peer sent an alert: handshake_failure";
        case MBEDTLS_SSL_ALERT_MSG_NO_CERT:
            return "peer sent an alert: no_certificate";
        case MBEDTLS_SSL_ALERT_MSG_BAD_CERT:
            return "peer sent an alert: bad_certificate";
        case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT:
            return "peer sent an alert: unsupported_certificate";
        case MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED:
            return "peer sent an alert: certificate_revoked";
        case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED:
            return "peer sent an alert: certificate_expired";
        case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN:
            return "peer sent an alert: certificate_unknown";
        case MBEDTLS_SSL_ALERT_MSG_ILLEGAL_PARAMETER:
            return "peer sent an alert: illegal_parameter";
        case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA:
            return "peer sent an alert: unknown_ca";
        case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED:
            return "peer sent an alert: access_denied";
        case MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR:
            return "peer sent an alert: decode_error";
        case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR:
            return "peer sent an alert: decrypt_error";
        case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION:
            return "peer sent an alert: protocol_version";
        case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY:
            return "peer sent an alert: insufficient_security";
        case MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR:
            return "peer sent an alert: internal_error";
        case MBEDTLS_SSL_ALERT_MSG_INAPROPRIATE_FALLBACK:
            return "peer sent an alert: inappropriate_fallback";
        case MBEDTLS_SSL_ALERT_MSG_USER_CANCELED:
            return "peer sent an alert: user_canceled";
        case MBEDTLS_SSL_ALERT_MSG_NO_RENEGOTIATION:
            return "peer sent an alert: no_renegotiation";
        case MBEDTLS_SSL_ALERT_MSG_MISSING_EXTENSION:
            return "peer sent an alert: missing_extension";
        case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_EXT:
            return "peer sent an alert: unsupported_extension";
        case MBEDTLS_SSL_ALERT_MSG_UNRECOGNIZED_NAME:
            return "peer sent an alert: unrecognized_name";
        case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_PSK_IDENTITY:
            return "peer sent an alert: unknown_psk_identity";
        case MBEDTLS_SSL_ALERT_MSG_CERT_REQUIRED:
            return "peer sent an alert: certificate_required";
        case MBEDTLS_SSL_ALERT_MSG_NO_APPLICATION_PROTOCOL:
            return "peer sent an alert: no_application_protocol";
        default:
            return "peer sent an alert";
    }
}

// The order follows how specific each finding is: a name or usage mismatch says more than
// "untrusted", which is also set whenever anything in the chain is off.
const char* verifyFailureText(uint32_t flags) {
    if (flags & MBEDTLS_X509_BADCERT_OTHER) return reason::kClientNotAllowed;
    if (flags & MBEDTLS_X509_BADCERT_MISSING) return reason::kClientCertRequired;
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
        return "handshake failed: certificate does not match the server name";
    if (flags & (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
                 MBEDTLS_X509_BADCERT_NS_CERT_TYPE))
        return "handshake failed: certificate key usage does not allow this use";
    if (flags &
        (MBEDTLS_X509_BADCERT_BAD_MD | MBEDTLS_X509_BADCERT_BAD_PK | MBEDTLS_X509_BADCERT_BAD_KEY))
        return "handshake failed: certificate uses a weak or unsupported algorithm or key";
    if (flags & MBEDTLS_X509_BADCERT_EXPIRED) return reason::kCertExpired;
    if (flags & MBEDTLS_X509_BADCERT_FUTURE) return reason::kCertNotYetValid;
    if (flags & MBEDTLS_X509_BADCERT_REVOKED) return "handshake failed: certificate revoked";
    if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        return "handshake failed: certificate verify failed (unknown CA)";
    return "handshake failed: certificate verify failed";
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
            return "handshake failed: no common ALPN protocol";
        case MBEDTLS_ERR_SSL_BAD_PROTOCOL_VERSION:
            return "handshake failed: no common TLS version";
        case MBEDTLS_ERR_SSL_HANDSHAKE_FAILURE:
            return "handshake failed: no common cipher suite, group or signature algorithm";
        case MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE:
            return reason::kClientCertRequired;
        case MBEDTLS_ERR_SSL_UNRECOGNIZED_NAME:
            return "handshake failed: unrecognized server name";
        case MBEDTLS_ERR_SSL_UNSUPPORTED_EXTENSION:
            return "handshake failed: unsupported extension";
        case MBEDTLS_ERR_SSL_CERTIFICATE_VERIFICATION_WITHOUT_HOSTNAME:
            return "handshake failed: no server name to verify the certificate against";
        case MBEDTLS_ERR_SSL_DECODE_ERROR:
        case MBEDTLS_ERR_SSL_ILLEGAL_PARAMETER:
            return during_handshake ? "handshake failed: malformed message"
                                    : "malformed TLS message";
        case MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE:
            return during_handshake ? "handshake failed: unexpected message"
                                    : "unexpected TLS message";
        case MBEDTLS_ERR_SSL_INVALID_RECORD:
            return "invalid TLS record";
        case MBEDTLS_ERR_SSL_INVALID_MAC:
            return "TLS record failed authentication (bad MAC)";
        case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
            return "peer closed the connection during the handshake";
        case MBEDTLS_ERR_SSL_CONN_EOF:
            return "connection closed during the handshake";
        case MBEDTLS_ERR_SSL_ALLOC_FAILED:
            return reason::kOutOfMemory;
        case MBEDTLS_ERR_SSL_COUNTER_WRAPPING:
            return "TLS record counter exhausted";
        case MBEDTLS_ERR_SSL_INTERNAL_ERROR:
            return "TLS internal error";
        default:
            return during_handshake ? "handshake failed" : "TLS error";
    }
}

const char* notTlsText(const uint8_t* first, size_t n, bool server_side) {
    // TLS records start with a content type: change_cipher_spec, alert, handshake, data.
    if (n == 0 || (first[0] >= MBEDTLS_SSL_MSG_CHANGE_CIPHER_SPEC &&
                   first[0] <= MBEDTLS_SSL_MSG_APPLICATION_DATA))
        return nullptr;
    // An HTTP/1.x request starts with an upper-case method and a space; a response with "HTTP/".
    size_t letters = 0;
    while (letters < n && first[letters] >= 'A' && first[letters] <= 'Z') ++letters;
    bool method = letters > 0 && (letters == n || first[letters] == ' ');
    bool response = n >= 5 && first[0] == 'H' && first[1] == 'T' && first[2] == 'T' &&
                    first[3] == 'P' && first[4] == '/';
    if (server_side) return method ? reason::kPlainHttpToServer : reason::kNotTlsFromClient;
    return response ? reason::kPlainHttpFromServer : reason::kNotTlsFromServer;
}

}  // namespace sidecar::tls::mbed
