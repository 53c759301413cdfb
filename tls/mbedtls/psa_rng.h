#pragma once
// mbedtls_psa_get_random(), the RNG every part of this backend uses. mbedTLS 3.6's
// psa_util.h lacks the extern "C" guard its other headers have, hence the wrapper.

extern "C" {
#include <mbedtls/psa_util.h>
}
