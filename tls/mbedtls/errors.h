#pragma once
// mbedTLS error codes and verification flags mapped to the backend-neutral reasons of
// tls/errors.h (static storage, compared and logged without copying).

#include <cstddef>
#include <cstdint>

#include "tls/errors.h"

namespace sidecar::tls::mbed {

// Why certificate verification failed, from mbedTLS verification flags.
const char* verifyFailureText(uint32_t flags);

// The alert that reports a verification failure with these flags.
uint8_t alertForVerifyFlags(uint32_t flags);

// A reason for an mbedTLS error code returned by the handshake or by record processing.
const char* errorText(int ret, bool during_handshake);

}  // namespace sidecar::tls::mbed
