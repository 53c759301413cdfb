"""Size budgets of the static binaries. The figures in README's "Footprint" section are measured
(test/bench/footprint.py); each budget is that figure plus a small margin, so a change that makes
the binary noticeably bigger fails here and has to say why in the budget it raises."""
import re

from conftest import run

# mbedTLS only (SIDECAR_BACKENDS=mbedtls scripts/build-static): measured 3,593,224 bytes with
# HTTP/2 (nghttp2 153 KB, the h2 server and client sessions and their core side: 238 KB over the
# 3,355,528 before them, which had upstream name resolution, TLS policy, the CLI, rate limits and
# metrics over the 3,137,864 before those); plus about 2%.
MBEDTLS_ONLY_BUDGET = 3_665_000
# Both backends (the default image): measured 7,582,152 bytes; plus the same.
BOTH_BUDGET = 7_740_000


def backends(binary):
    r = run([binary, "version"])
    assert r.returncode == 0, r.stderr
    line = re.search(r"^TLS backends \(tls_backend\):(.*)$", r.stdout, re.M)
    assert line, r.stdout
    return set(re.findall(r"\b(mbedtls|openssl) \(", line.group(1)))


def check_budget(binary, budget, what):
    size = binary.stat().st_size
    print(f"{what}: {size} bytes ({size / 1e6:.2f} MB), budget {budget} bytes")
    assert size <= budget, (f"the {what} static binary is {size} bytes, past its budget of {budget}: "
                            f"see what grew with test/bench/footprint.py archives")


def test_mbedtls_only_binary_within_budget(static_mbedtls_bin):
    assert backends(static_mbedtls_bin) == {"mbedtls"}
    check_budget(static_mbedtls_bin, MBEDTLS_ONLY_BUDGET, "mbedTLS-only")


def test_default_binary_within_budget(static_bin):
    found = backends(static_bin)
    if found == {"mbedtls"}:
        check_budget(static_bin, MBEDTLS_ONLY_BUDGET, "mbedTLS-only")
    else:
        assert found == {"mbedtls", "openssl"}, found
        check_budget(static_bin, BOTH_BUDGET, "both-backends")
