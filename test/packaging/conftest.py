"""Shared fixtures for the packaging tests: the static binary, rendered manifests, the validators.

The static binary is SIDECAR_STATIC_BIN when set (scripts/test builds it with scripts/build-static
first); otherwise the session builds it once with scripts/build-static into build-static/, exactly
as the Dockerfile's build stage does.
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MANIFESTS = ROOT / "manifests"
DOCKERFILE = ROOT / "Dockerfile"
BUILD_STATIC = ROOT / "scripts" / "build-static"
NODE = shutil.which("node") or "/usr/bin/node"


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run([str(c) for c in cmd], **kw)


_handed_out = set()


def free_port():
    """A port nothing listens on, and not handed out before in this run (see the integration
    suite's free_port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port, proc=None, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # nothing to await on a port that is not bound yet
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


# ---- kustomize -------------------------------------------------------------------------------

def kustomize_command(directory):
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(directory)]
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(directory)]
    pytest.fail("neither kubectl nor kustomize is installed (scripts/bootstrap installs kubectl)")


def kustomizations():
    """Every buildable kustomization under manifests/ (components are built through overlays)."""
    found = []
    for path in sorted(MANIFESTS.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent.relative_to(MANIFESTS).as_posix())
    return found


_rendered = {}


def render(name):
    """kustomize build of manifests/NAME: (text, [objects])."""
    if name not in _rendered:
        r = run(kustomize_command(MANIFESTS / name))
        assert r.returncode == 0, f"kustomize build {name} failed:\n{r.stderr}"
        _rendered[name] = (r.stdout, [d for d in yaml.safe_load_all(r.stdout) if d])
    return _rendered[name]


def find(objects, kind, name=None):
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


# ---- node validators -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def node_modules():
    """The pinned validators, installed by `npm ci` in test/packaging (scripts/test does it)."""
    if not (HERE / "node_modules" / "kubernetes-models").is_dir():
        pytest.fail("test/packaging/node_modules is missing: run `cd test/packaging && npm ci`")
    return HERE / "node_modules"


def validate_k8s(path):
    return run([NODE, HERE / "validate-k8s.mjs", path])


def lint_dockerfile(path):
    return run([NODE, HERE / "lint-dockerfile.mjs", path])


# ---- the static binary -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def static_bin():
    env = os.environ.get("SIDECAR_STATIC_BIN")
    if env:
        path = Path(env)
        assert path.is_file(), f"SIDECAR_STATIC_BIN={env} does not exist"
        return path
    out = ROOT / "build-static" / "out" / "sidecar"
    r = run([BUILD_STATIC, ROOT / "build-static", out], timeout=3600)
    assert r.returncode == 0, f"scripts/build-static failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return out


@pytest.fixture(scope="session")
def static_mbedtls_bin():
    """The mbedTLS-only static binary (the smallest backend set): SIDECAR_STATIC_MBEDTLS_BIN when
    set (scripts/test builds it), otherwise built here without its unit tests, which the
    both-backends build runs over the same sources."""
    env = os.environ.get("SIDECAR_STATIC_MBEDTLS_BIN")
    if env:
        path = Path(env)
        assert path.is_file(), f"SIDECAR_STATIC_MBEDTLS_BIN={env} does not exist"
        return path
    build = ROOT / "build-static-mbedtls"
    out = build / "out" / "sidecar"
    env = dict(os.environ, SIDECAR_BACKENDS="mbedtls", SIDECAR_STATIC_TESTS="OFF")
    r = run([BUILD_STATIC, build, out], timeout=3600, env=env)
    assert r.returncode == 0, f"scripts/build-static failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return out


@pytest.fixture(scope="session")
def certs(static_bin, tmp_path_factory):
    """tls.crt / tls.key for localhost, 127.0.0.1 and ::1, made by `sidecar gen-cert`."""
    out = tmp_path_factory.mktemp("tls")
    r = run([static_bin, "gen-cert", "--out", out])
    assert r.returncode == 0, r.stderr
    return out


def memory_bytes(quantity):
    """A Kubernetes memory quantity ("64Mi", "100M", "1Gi", "1048576") in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}
    text = str(quantity)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)
