"""The Dockerfile, checked without a Docker engine: a linter (dockerfile-utils, pinned by
package-lock.json) and the structure the images must have: a trixie build stage that runs
scripts/build-static, a FROM scratch proxy with nothing but the binary and the CA bundle, running as
65532, an init image with iptables, and no certificate or key copied anywhere."""
import fnmatch
import json
import os
import re
import shlex

import pytest

from conftest import BUILD_STATIC, DOCKERFILE, ROOT, lint_dockerfile, run

BUILD_DEPS = {"build-essential", "cmake", "pkg-config", "libuv1-dev", "libmbedtls-dev", "libssl-dev",
              "libllhttp-dev", "libyaml-cpp-dev", "libc-ares-dev", "libnghttp2-dev", "catch2"}
KEY_MATERIAL = ["*.key", "*.pem", "*.crt", "*.p12", "*.pfx", "*tls*", "*cert*", "*secret*"]
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def instructions(text):
    """[(INSTRUCTION, argument text)] with continuation lines joined and comments dropped."""
    result, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return result


def stages(text=None):
    """{stage name: {"from": image, "steps": [(INSTRUCTION, args)]}} in file order."""
    found = {}
    current = None
    for word, args in instructions(text if text is not None else DOCKERFILE.read_text()):
        if word == "ARG" and current is None:
            continue  # a global build argument, for FROM lines and stages that redeclare it
        if word == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, re.I)
            assert m, f"every stage is named: FROM {args}"
            current = m.group(2)
            assert current not in found, f"stage {current} twice"
            found[current] = {"from": m.group(1), "steps": []}
        else:
            assert current, f"{word} before FROM"
            found[current]["steps"].append((word, args))
    return found


def steps(stage, word):
    return [args for w, args in stages()[stage]["steps"] if w == word]


def exec_form(args):
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def copies(stage):
    """[(options, sources, destination)] of COPY and ADD in STAGE."""
    result = []
    for word, args in stages()[stage]["steps"]:
        if word in ("COPY", "ADD"):
            parts = shlex.split(args)
            options = [p for p in parts if p.startswith("--")]
            paths = [p for p in parts if not p.startswith("--")]
            result.append((word, options, paths[:-1], paths[-1]))
    return result


def test_linter_passes(node_modules):
    r = lint_dockerfile(DOCKERFILE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_linter_rejects_a_broken_dockerfile(node_modules, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:trixie-slim AS build\nFROM scratch AS build\nUSER\n")
    r = lint_dockerfile(bad)
    assert r.returncode == 1
    assert "duplicate name build" in r.stdout and "no arguments" in r.stdout


def test_stages():
    s = stages()
    assert list(s) == ["build", "init", "proxy"], "the proxy is last: the default target"
    assert re.fullmatch(r"debian:13\.\d+-slim", s["build"]["from"]), "trixie, pinned to a point release"
    assert s["init"]["from"] == s["build"]["from"]
    assert s["proxy"]["from"] == "scratch"


def test_base_images_are_pinned():
    for name, stage in stages().items():
        image = stage["from"]
        if image == "scratch":
            continue
        repository, _, tag = image.partition(":")
        assert tag and tag not in ("latest", "stable", "slim") and re.search(r"\d+\.\d+", tag), \
            f"{name}: {image} floats"


def global_args():
    return {name: value for name, _, value in
            (a.partition("=") for w, a in instructions(DOCKERFILE.read_text().split("\nFROM ")[0]) if w == "ARG")}


def labels(stage):
    found = {}
    for args in steps(stage, "LABEL"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            found[key] = value
    return found


@pytest.mark.parametrize("stage,title", [("proxy", "sidecar"), ("init", "sidecar-init")])
def test_images_carry_oci_labels_with_the_version(stage, title):
    version = re.search(r"project\(sidecar VERSION ([0-9.]+)", (ROOT / "CMakeLists.txt").read_text()).group(1)
    assert global_args()["VERSION"] == version, "the label default is the version the binary reports"
    assert "VERSION" in steps(stage, "ARG"), "a stage sees a global ARG only once it redeclares it"
    found = labels(stage)
    assert found["org.opencontainers.image.title"] == title
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert found["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert found["org.opencontainers.image.description"]


def test_license_is_the_apache_license():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(re.findall(r"^   \d+\. ", text, re.M)) == 9, "all nine sections"
    assert "LICENSE" not in (ROOT / ".dockerignore").read_text().split()


def test_build_stage_installs_the_dependencies_and_runs_build_static():
    runs = " ".join(steps("build", "RUN"))
    installed = set(re.search(r"apt-get install ([^&]*)", runs).group(1).split())
    installed = {p for p in installed if not p.startswith("-")}
    assert BUILD_DEPS <= installed, f"missing: {BUILD_DEPS - installed}"
    assert installed - BUILD_DEPS == {"ca-certificates"}, "only the CA bundle beyond the build deps"
    assert steps("build", "RUN")[-1] == "scripts/build-static /src/build-static /out/sidecar"
    assert copies("build") == [("COPY", [], ["."], ".")]
    assert steps("build", "WORKDIR") == ["/src"]


def test_build_static_is_the_script_the_tests_run():
    assert BUILD_STATIC.is_file() and os.access(BUILD_STATIC, os.X_OK)
    text = BUILD_STATIC.read_text()
    assert "-DSIDECAR_STATIC=ON" in text
    assert "ctest" in text, "the image build runs the unit tests"


def test_proxy_image_holds_only_the_binary_and_the_ca_bundle():
    assert copies("proxy") == [
        ("COPY", ["--from=build"], [CA_BUNDLE], CA_BUNDLE),
        ("COPY", ["--from=build"], ["/out/sidecar"], "/sidecar"),
    ]
    assert not steps("proxy", "RUN"), "scratch has no shell"
    assert steps("proxy", "USER") == ["65532:65532"]
    assert [exec_form(a) for a in steps("proxy", "ENTRYPOINT")] == [["/sidecar"]]
    assert [exec_form(a) for a in steps("proxy", "CMD")] == [["run", "-c", "/etc/sidecar/sidecar.yaml"]]


def test_init_image_has_iptables_and_runs_init_net():
    runs = " ".join(steps("init", "RUN"))
    assert re.search(r"apt-get install .*\biptables\b", runs)
    assert copies("init") == [("COPY", ["--from=build"], ["/out/sidecar"], "/sidecar")]
    assert [exec_form(a) for a in steps("init", "ENTRYPOINT")] == [
        ["/sidecar", "init-net", "apply", "-c", "/etc/sidecar/sidecar.yaml"]]
    assert not steps("init", "USER"), "init-net needs root (with NET_ADMIN and NET_RAW only)"


def test_no_key_material_is_copied_into_an_image():
    for stage in stages():
        for word, options, sources, dest in copies(stage):
            assert word == "COPY", "ADD fetches and unpacks: use COPY"
            for path in sources + [dest]:
                if path in (CA_BUNDLE, ".", "/src", "/out/sidecar", "/sidecar"):
                    continue
                name = path.rstrip("/").rsplit("/", 1)[-1]
                assert not any(fnmatch.fnmatch(name, p) for p in KEY_MATERIAL), f"{stage}: {path}"
    # Only the build stage sees the source tree, and only through .dockerignore.
    ignore = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".git", "build*", "**/node_modules", "*.key", "*.pem", "tls/tls.key"):
        assert pattern in ignore, pattern


def test_structural_check_catches_a_baked_in_key(tmp_path, monkeypatch):
    """The check above is real: the walkthrough's own Dockerfile fails it."""
    walkthrough = ("FROM golang:alpine AS build\nRUN go build -o /app .\n"
                   "FROM scratch AS proxy\nCOPY --from=build /app /app\n"
                   "COPY --from=build /src/server.key /server.key\nUSER appuser\n"
                   'ENTRYPOINT ["/app", "--cert", "server.crt", "--key", "server.key"]\n')
    bad = tmp_path / "Dockerfile"
    bad.write_text(walkthrough)
    import test_dockerfile
    monkeypatch.setattr(test_dockerfile, "DOCKERFILE", bad)
    with pytest.raises(AssertionError, match="server.key"):
        test_no_key_material_is_copied_into_an_image()
    with pytest.raises(AssertionError):
        test_proxy_image_holds_only_the_binary_and_the_ca_bundle()


def test_build_dependencies_are_in_trixie_main():
    """Every package the build stage installs exists in Debian trixie's main suite (checked against
    the apt lists when this machine has trixie's: scripts/bootstrap adds them on bookworm)."""
    r = run(["apt-cache", "policy"])
    if r.returncode != 0 or "n=trixie" not in r.stdout:
        pytest.skip("no Debian trixie package lists on this machine")
    for package in sorted(BUILD_DEPS | {"ca-certificates", "iptables"}):
        r = run(["apt-cache", "madison", package])
        assert re.search(r"trixie/main", r.stdout), f"{package} not in trixie/main:\n{r.stdout}"
