#pragma once
// Session error reasons shared by every backend. Every string is a literal (static storage), so
// Session::error() can hand out the pointer and callers can compare or log it without copying,
// and the same failure reads the same whichever backend runs.

#include <cstddef>
#include <cstdint>

namespace sidecar::tls {

namespace reason {
inline constexpr const char* kPlainHttpToServer = "client sent plain HTTP to a TLS port";
inline constexpr const char* kPlainHttpFromServer = "server answered with plain HTTP, not TLS";
inline constexpr const char* kNotTlsFromClient = "not a TLS handshake";
inline constexpr const char* kNotTlsFromServer = "server is not speaking TLS";
inline constexpr const char* kClientCertRequired = "handshake failed: client certificate required";
inline constexpr const char* kClientNotAllowed = "client certificate not allowed";
inline constexpr const char* kCertExpired = "handshake failed: certificate expired";
inline constexpr const char* kCertNotYetValid = "handshake failed: certificate not yet valid";
inline constexpr const char* kCertNameMismatch =
    "handshake failed: certificate does not match the server name";
inline constexpr const char* kCertUsage =
    "handshake failed: certificate key usage does not allow this use";
inline constexpr const char* kCertWeak =
    "handshake failed: certificate uses a weak or unsupported algorithm or key";
inline constexpr const char* kCertRevoked = "handshake failed: certificate revoked";
inline constexpr const char* kCertUnknownCa =
    "handshake failed: certificate verify failed (unknown CA)";
inline constexpr const char* kCertVerifyFailed = "handshake failed: certificate verify failed";
inline constexpr const char* kNoAlpn = "handshake failed: no common ALPN protocol";
inline constexpr const char* kNoVersion = "handshake failed: no common TLS version";
inline constexpr const char* kNoCommonParameters =
    "handshake failed: no common cipher suite, group or signature algorithm";
inline constexpr const char* kUnrecognizedName = "handshake failed: unrecognized server name";
inline constexpr const char* kUnsupportedExtension = "handshake failed: unsupported extension";
inline constexpr const char* kNoServerName =
    "handshake failed: no server name to verify the certificate against";
inline constexpr const char* kMalformedHandshake = "handshake failed: malformed message";
inline constexpr const char* kMalformed = "malformed TLS message";
inline constexpr const char* kUnexpectedHandshake = "handshake failed: unexpected message";
inline constexpr const char* kUnexpected = "unexpected TLS message";
inline constexpr const char* kInvalidRecord = "invalid TLS record";
inline constexpr const char* kBadMac = "TLS record failed authentication (bad MAC)";
inline constexpr const char* kPeerClosedDuringHandshake =
    "peer closed the connection during the handshake";
inline constexpr const char* kClosedDuringHandshake = "connection closed during the handshake";
inline constexpr const char* kCounterExhausted = "TLS record counter exhausted";
inline constexpr const char* kInternal = "TLS internal error";
inline constexpr const char* kHandshakeFailed = "handshake failed";
inline constexpr const char* kTlsError = "TLS error";
inline constexpr const char* kWriteAfterShutdown = "write after shutdown";
inline constexpr const char* kSessionFailed = "TLS session setup failed";
inline constexpr const char* kOutOfMemory = "out of memory";
}  // namespace reason

// TLS alert descriptions (RFC 8446 section 6), as they travel on the wire.
namespace alert {
inline constexpr uint8_t kHandshakeFailure = 40;
inline constexpr uint8_t kBadCertificate = 42;
inline constexpr uint8_t kUnsupportedCertificate = 43;
inline constexpr uint8_t kCertificateRevoked = 44;
inline constexpr uint8_t kCertificateExpired = 45;
inline constexpr uint8_t kCertificateUnknown = 46;
inline constexpr uint8_t kUnknownCa = 48;
inline constexpr uint8_t kAccessDenied = 49;
inline constexpr uint8_t kCertificateRequired = 116;
}  // namespace alert

// "peer sent an alert: <description>" for a received fatal alert.
const char* receivedAlertText(int description);

// When the first bytes from the peer are not a TLS record, what they look like (plain HTTP, or
// something else); nullptr when they look like TLS.
const char* notTlsText(const uint8_t* first, size_t n, bool server_side);

}  // namespace sidecar::tls
