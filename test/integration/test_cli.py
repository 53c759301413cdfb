"""The command line as an operator meets it: options, exit codes and messages of every command,
where the config file comes from, gen-cert's CA and signed certificates used for real mTLS,
signals the proxy ignores, and why a start failed."""
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import stat
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, LogReader, base_config, free_port, run, tls_listener, with_tls_backend

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def sidecar(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if k != "SIDECAR_CONFIG"}
    full_env.update(env or {})
    return run([str(BIN), *map(str, args)], env=full_env)


@pytest.fixture
def good_config(workdir, cert):
    path = workdir / "good.yaml"
    path.write_text(base_config(tls_listener("web", free_port(), free_port(), cert)))
    return path


@pytest.fixture
def bad_config(workdir):
    path = workdir / "bad.yaml"
    path.write_text(with_tls_backend("listeners: []\nfrobnicate: 1\n"))
    return path


# (arguments, exit status, text on stderr). "GOOD"/"BAD" stand for a valid/invalid config file.
CASES = [
    ([], EXIT_USAGE, "usage: sidecar <command>"),
    (["frobnicate"], EXIT_USAGE, "unknown command 'frobnicate'"),
    (["version", "extra"], EXIT_USAGE, "takes no arguments"),
    (["run", "--bogus"], EXIT_USAGE, "sidecar run: unknown option '--bogus'"),
    (["run", "-x"], EXIT_USAGE, "sidecar run: unknown option '-x'"),
    (["run", "-c"], EXIT_USAGE, "sidecar run: option '-c' needs a value"),
    (["run", "GOOD", "GOOD"], EXIT_USAGE, "unexpected argument"),
    (["run", "BAD"], EXIT_FAILURE, "2 error(s); not started"),
    (["run", "/nonexistent/sidecar.yaml"], EXIT_FAILURE, "/nonexistent/sidecar.yaml"),
    (["check-config"], EXIT_USAGE, "no config file: give FILE or -c FILE, or set SIDECAR_CONFIG"),
    (["check-config", "--config"], EXIT_USAGE, "option '--config' needs a value"),
    (["check-config", "--config="], EXIT_USAGE, "-c/--config needs a file name"),
    (["init-net", "apply", "-c", ""], EXIT_USAGE, "-c/--config needs a file name"),
    (["check-config", "BAD"], EXIT_FAILURE, "2 error(s)"),
    (["check-config", "-c", "BAD"], EXIT_FAILURE, "unknown key"),
    (["check-config", "--config=BAD"], EXIT_FAILURE, "2 error(s)"),
    (["check-config", "GOOD", "--verbose"], EXIT_USAGE, "unknown option '--verbose'"),
    (["gen-cert"], EXIT_USAGE, "--out DIR is required"),
    (["gen-cert", "--out", "OUT", "--days", "10x"], EXIT_USAGE,
     "--days takes a whole number of days from 1 to 3650, not '10x'"),
    (["gen-cert", "--out", "OUT", "--days", "0"], EXIT_USAGE, "not '0'"),
    (["gen-cert", "--out", "OUT", "--days", "3651"], EXIT_USAGE, "not '3651'"),
    (["gen-cert", "--out", "OUT", "--days", "-5"], EXIT_USAGE, "not '-5'"),
    (["gen-cert", "--out", "OUT", "--days", "99999999999999999999"], EXIT_USAGE, "whole number"),
    (["gen-cert", "--out", "OUT", "--ca", "--client"], EXIT_USAGE, "--ca makes a CA"),
    (["gen-cert", "--out", "OUT", "--ca", "--host", "x"], EXIT_USAGE, "--ca makes a CA"),
    (["gen-cert", "--out", "OUT", "stray"], EXIT_USAGE, "unexpected argument 'stray'"),
    (["gen-cert", "--out", "OUT", "--sign-with", "/nonexistent"], EXIT_FAILURE,
     "cannot read /nonexistent/ca.crt"),
    (["init-net"], EXIT_USAGE, "sidecar init-net: missing command"),
    (["init-net", "frobnicate", "-c", "GOOD"], EXIT_USAGE, "unknown command 'frobnicate'"),
    (["init-net", "apply", "-c"], EXIT_USAGE, "option '-c' needs a value"),
    (["init-net", "apply", "--force", "-c", "GOOD"], EXIT_USAGE, "unknown option '--force'"),
    (["init-net", "apply"], EXIT_USAGE, "no config file"),
    (["init-net", "apply", "-c", "BAD", "--dry-run"], EXIT_FAILURE, "unknown key"),
    (["init-net", "apply", "BAD", "--dry-run"], EXIT_FAILURE, "unknown key"),
]


@pytest.mark.parametrize("args,status,message", CASES, ids=[" ".join(c[0]) or "(none)" for c in CASES])
def test_usage_and_failures(args, status, message, good_config, bad_config, workdir):
    names = {"GOOD": str(good_config), "BAD": str(bad_config), "OUT": str(workdir / "out")}
    args = [a.replace("=BAD", "=" + str(bad_config)) if "=BAD" in a else names.get(a, a) for a in args]
    r = sidecar(*args)
    assert r.returncode == status, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    if status == EXIT_USAGE and args:
        assert "--help" in r.stderr or "usage:" in r.stderr, "a usage error says where to look"
    if "--out" in args and status != EXIT_OK:
        assert not (workdir / "out" / "tls.key").exists()


@pytest.mark.parametrize("command", [["run"], ["check-config"], ["gen-cert"], ["init-net"], []])
def test_help_exits_zero_on_stdout(command):
    for flag in ("--help", "-h"):
        r = sidecar(*command, flag)
        assert r.returncode == EXIT_OK, r.stderr
        assert "usage: sidecar" in r.stdout
        assert r.stderr == ""


def test_version_flags():
    outputs = set()
    for flag in ("-v", "--version", "version"):
        r = sidecar(flag)
        assert r.returncode == EXIT_OK, r.stderr
        assert r.stdout.startswith("sidecar "), r.stdout
        outputs.add(r.stdout)
    assert len(outputs) == 1


def test_config_file_precedence(good_config, bad_config, workdir):
    env_only = sidecar("check-config", env={"SIDECAR_CONFIG": str(good_config)})
    assert env_only.returncode == EXIT_OK and env_only.stdout.startswith(f"{good_config}: ok"), env_only.stderr

    positional_over_env = sidecar("check-config", bad_config, env={"SIDECAR_CONFIG": str(good_config)})
    assert positional_over_env.returncode == EXIT_FAILURE
    assert f"{bad_config}: 2 error(s)" in positional_over_env.stderr

    flag_over_positional = sidecar("check-config", "-c", good_config, bad_config)
    assert flag_over_positional.returncode == EXIT_OK
    assert f"using -c {good_config}, not {bad_config}" in flag_over_positional.stderr

    env_missing = sidecar("check-config", env={"SIDECAR_CONFIG": str(workdir / "missing.yaml")})
    assert env_missing.returncode == EXIT_FAILURE
    assert str(workdir / "missing.yaml") in env_missing.stderr


def test_run_takes_the_config_as_an_argument(proxies, workdir, nginx, cert):
    port = free_port()
    p = proxies(base_config(tls_listener("web", port, nginx.port, cert, protocol="http")), workdir)
    p.proc = subprocess.Popen([str(BIN), "run", str(p.config_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    p.log = LogReader(p.proc.stderr)
    p.access = LogReader(p.proc.stdout)
    p.log.wait_for("sidecar started", timeout=20)
    r = run(["curl", "-sS", "--cacert", cert[0], f"https://localhost:{port}/small"])
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


# ---- gen-cert ----

def test_gen_cert_ca_server_and_client_for_real_mtls(proxies, workdir, nginx):
    ca, server, client = workdir / "ca", workdir / "server", workdir / "client"
    spiffe = "spiffe://example.org/ns/default/sa/web"
    r = sidecar("gen-cert", "--ca", "--out", ca, "--name", "test CA", "--days", "30")
    assert r.returncode == EXIT_OK, r.stderr
    assert "CA" in r.stdout and "CN=test CA" in r.stdout
    r = sidecar("gen-cert", "--sign-with", ca, "--out", server, "--host", "localhost", "--host", "127.0.0.1")
    assert r.returncode == EXIT_OK, r.stderr
    r = sidecar("gen-cert", "--sign-with", ca, "--client", "--out", client, "--host", "web", "--host", spiffe)
    assert r.returncode == EXIT_OK, r.stderr
    for d, names in ((ca, ("ca.crt", "ca.key")), (server, ("tls.crt", "tls.key")), (client, ("tls.crt", "tls.key"))):
        crt, key = (d / n for n in names)
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert crt.read_text().startswith("-----BEGIN CERTIFICATE-----")

    # openssl agrees on the chain and the purposes
    assert run(["openssl", "verify", "-CAfile", ca / "ca.crt", "-purpose", "sslserver", server / "tls.crt"]).returncode == 0
    assert run(["openssl", "verify", "-CAfile", ca / "ca.crt", "-purpose", "sslclient", client / "tls.crt"]).returncode == 0
    assert run(["openssl", "verify", "-CAfile", ca / "ca.crt", "-purpose", "sslclient", server / "tls.crt"]).returncode != 0

    port = free_port()
    tls = (f"      client_auth: required\n      client_ca: {ca / 'ca.crt'}\n"
           f"      allow:\n        san_uri: [\"{spiffe}\"]\n")
    listener = tls_listener("api", port, nginx.port, (server / "tls.crt", server / "tls.key"),
                            protocol="http", extra_tls=tls)
    proxies(base_config(listener), workdir).start()
    url = f"https://localhost:{port}/headers"
    ok = run(["curl", "-sS", "--cacert", ca / "ca.crt", "--cert", client / "tls.crt", "--key", client / "tls.key", url])
    assert ok.returncode == 0, ok.stderr
    assert f"URI={spiffe}" in ok.stdout, ok.stdout
    no_cert = run(["curl", "-sS", "--cacert", ca / "ca.crt", url])
    assert no_cert.returncode != 0
    # a self-signed client certificate (not from the CA) is refused
    r = sidecar("gen-cert", "--client", "--out", workdir / "stranger", "--host", spiffe)
    assert r.returncode == EXIT_OK, r.stderr
    stranger = run(["curl", "-sS", "--cacert", ca / "ca.crt", "--cert", workdir / "stranger" / "tls.crt",
                    "--key", workdir / "stranger" / "tls.key", url])
    assert stranger.returncode != 0


@pytest.mark.parametrize("kind", [[], ["--ca"]])
def test_gen_cert_does_not_overwrite_without_force(workdir, kind):
    out = workdir / "out"
    names = ("ca.crt", "ca.key") if kind else ("tls.crt", "tls.key")
    r = sidecar("gen-cert", *kind, "--out", out)
    assert r.returncode == EXIT_OK, r.stderr
    before = {n: (out / n).read_bytes() for n in names}

    again = sidecar("gen-cert", *kind, "--out", out)
    assert again.returncode == EXIT_FAILURE
    assert f"{out / names[0]} exists; --force replaces it" in again.stderr
    assert {n: (out / n).read_bytes() for n in names} == before

    # one of the two is enough to refuse, and nothing is written then
    (out / names[0]).unlink()
    partial = sidecar("gen-cert", *kind, "--out", out)
    assert partial.returncode == EXIT_FAILURE and f"{out / names[1]} exists" in partial.stderr
    assert not (out / names[0]).exists()

    forced = sidecar("gen-cert", *kind, "--out", out, "--force")
    assert forced.returncode == EXIT_OK, forced.stderr
    assert (out / names[1]).read_bytes() != before[names[1]]
    assert stat.S_IMODE((out / names[1]).stat().st_mode) == 0o600


def test_gen_cert_refuses_a_leaf_as_issuer(workdir):
    assert sidecar("gen-cert", "--out", workdir / "leaf").returncode == EXIT_OK
    shutil.copy(workdir / "leaf" / "tls.crt", workdir / "leaf" / "ca.crt")
    shutil.copy(workdir / "leaf" / "tls.key", workdir / "leaf" / "ca.key")
    r = sidecar("gen-cert", "--sign-with", workdir / "leaf", "--out", workdir / "x")
    assert r.returncode == EXIT_FAILURE
    assert "the issuer is not a CA certificate" in r.stderr
    assert not (workdir / "x" / "tls.crt").exists()


# ---- signals and start failures ----

def test_sigusr1_is_ignored_and_keep_alive_connection_keeps_working(proxies, workdir, nginx, cert):
    port = free_port()
    p = proxies(base_config(tls_listener("web", port, nginx.port, cert, protocol="http")), workdir).start()
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    conn.request("GET", "/small")
    first = conn.getresponse()
    assert first.status == 200 and first.read() == b"ok\n"
    sock = conn.sock

    p.signal(signal.SIGUSR1)
    ignored = int(next(l for l in Path(f"/proc/{p.proc.pid}/status").read_text().splitlines()
                       if l.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (signal.SIGUSR1 - 1))

    for _ in range(3):
        conn.request("GET", "/small")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b"ok\n"
    assert conn.sock is sock, "the same connection served every request"
    assert p.proc.poll() is None
    conn.close()
    assert p.stop() == 0


def run_until_exit(args, **kw):
    r = run([str(BIN), *map(str, args)], timeout=30, **kw)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    return r, lines


def test_failed_start_ends_with_the_reason(workdir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = workdir / "busy.yaml"
        config.write_text(with_tls_backend(
            f"listeners:\n  - name: web\n    listen: 127.0.0.1:{port}\n    protocol: tcp\n"
            f"    upstream: {{ address: 127.0.0.1:{free_port()} }}\nadmin: {{ enabled: false }}\n"))
        r, lines = run_until_exit(["run", config])
    assert r.returncode == EXIT_FAILURE, r.stderr
    assert "sidecar started" not in r.stderr
    assert "sidecar did not start" in lines[-1], lines
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in lines[-1]
    assert "CAP_NET_BIND_SERVICE" not in r.stderr, "the hint is for privileged ports only"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_privileged_port_hint_for_a_non_root_user():
    # Everything the unprivileged user reads lives in a world-readable directory.
    d = Path(tempfile.mkdtemp(prefix="sidecar-eacces-"))
    try:
        os.chmod(d, 0o755)
        config = d / "sidecar.yaml"
        config.write_text(with_tls_backend(
            "listeners:\n  - name: web\n    listen: 127.0.0.1:443\n    protocol: tcp\n"
            f"    upstream: {{ address: 127.0.0.1:{free_port()} }}\nadmin: {{ enabled: false }}\n"))
        os.chmod(config, 0o644)
        r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                 str(BIN), "run", str(config)], timeout=30)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == EXIT_FAILURE, r.stderr
        assert "sidecar did not start" in lines[-1], lines
        assert "cannot listen on 127.0.0.1:443: permission denied" in lines[-1]
        assert "ports below 1024 need root or the CAP_NET_BIND_SERVICE capability" in lines[-1]
        assert "sidecar started" not in r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
