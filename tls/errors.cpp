#include "tls/errors.h"

namespace sidecar::tls {

const char* receivedAlertText(int description) {
    switch (description) {
        case 10:
            return "peer sent an alert: unexpected_message";
        case 20:
            return "peer sent an alert: bad_record_mac";
        case 22:
            return "peer sent an alert: record_overflow";
        case 40:
            return "peer sent an alert: handshake_failure";
        case 41:
            return "peer sent an alert: no_certificate";
        case 42:
            return "peer sent an alert: bad_certificate";
        case 43:
            return "peer sent an alert: unsupported_certificate";
        case 44:
            return "peer sent an alert: certificate_revoked";
        case 45:
            return "peer sent an alert: certificate_expired";
        case 46:
            return "peer sent an alert: certificate_unknown";
        case 47:
            return "peer sent an alert: illegal_parameter";
        case 48:
            return "peer sent an alert: unknown_ca";
        case 49:
            return "peer sent an alert: access_denied";
        case 50:
            return "peer sent an alert: decode_error";
        case 51:
            return "peer sent an alert: decrypt_error";
        case 70:
            return "peer sent an alert: protocol_version";
        case 71:
            return "peer sent an alert: insufficient_security";
        case 80:
            return "peer sent an alert: internal_error";
        case 86:
            return "peer sent an alert: inappropriate_fallback";
        case 90:
            return "peer sent an alert: user_canceled";
        case 100:
            return "peer sent an alert: no_renegotiation";
        case 109:
            return "peer sent an alert: missing_extension";
        case 110:
            return "peer sent an alert: unsupported_extension";
        case 112:
            return "peer sent an alert: unrecognized_name";
        case 115:
            return "peer sent an alert: unknown_psk_identity";
        case 116:
            return "peer sent an alert: certificate_required";
        case 120:
            return "peer sent an alert: no_application_protocol";
        default:
            return "peer sent an alert";
    }
}

const char* notTlsText(const uint8_t* first, size_t n, bool server_side) {
    // TLS records start with a content type: change_cipher_spec (20), alert, handshake,
    // application data (23).
    if (n == 0 || (first[0] >= 20 && first[0] <= 23)) return nullptr;
    // An HTTP/1.x request starts with an upper-case method and a space; a response with "HTTP/".
    size_t letters = 0;
    while (letters < n && first[letters] >= 'A' && first[letters] <= 'Z') ++letters;
    bool method = letters > 0 && (letters == n || first[letters] == ' ');
    bool response = n >= 5 && first[0] == 'H' && first[1] == 'T' && first[2] == 'T' &&
                    first[3] == 'P' && first[4] == '/';
    if (server_side) return method ? reason::kPlainHttpToServer : reason::kNotTlsFromClient;
    return response ? reason::kPlainHttpFromServer : reason::kNotTlsFromServer;
}

}  // namespace sidecar::tls
