#pragma once
// Session error reasons. Every string is a literal (static storage), so Session::error() can
// hand out the pointer and callers can compare or log it without copying.

#include <cstddef>
#include <cstdint>

namespace sidecar::tls::mbed {

namespace reason {
inline constexpr const char* kPlainHttpToServer = "client sent plain HTTP to a TLS port";
inline constexpr const char* kPlainHttpFromServer = "server answered with plain HTTP, not TLS";
inline constexpr const char* kNotTlsFromClient = "not a TLS handshake";
inline constexpr const char* kNotTlsFromServer = "server is not speaking TLS";
inline constexpr const char* kClientCertRequired = "handshake failed: client certificate required";
inline constexpr const char* kClientNotAllowed = "client certificate not allowed";
inline constexpr const char* kCertExpired = "handshake failed: certificate expired";
inline constexpr const char* kCertNotYetValid = "handshake failed: certificate not yet valid";
inline constexpr const char* kSessionFailed = "TLS session setup failed";
inline constexpr const char* kOutOfMemory = "out of memory";
}  // namespace reason

// "peer sent an alert: <description>" for a received fatal alert.
const char* receivedAlertText(int description);

// Why certificate verification failed, from mbedTLS verification flags.
const char* verifyFailureText(uint32_t flags);

// The alert that reports a verification failure with these flags.
uint8_t alertForVerifyFlags(uint32_t flags);

// A reason for an mbedTLS error code returned by the handshake or by record processing.
const char* errorText(int ret, bool during_handshake);

// When the first bytes from the peer are not a TLS handshake record, what they look like
// (plain HTTP, or something else); nullptr when they look like TLS.
const char* notTlsText(const uint8_t* first, size_t n, bool server_side);

}  // namespace sidecar::tls::mbed
