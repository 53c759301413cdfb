"""The TLS-terminating proxy end to end (L4): real curl / openssl s_client, real nginx upstream."""
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (BIN, Nginx, ScriptedUpstream, base_config, free_port, gen_cert, run, sha256_file,
                      tls_listener, wait_port)


def start_tcp_proxy(proxies, workdir, upstream_port, cert, extra="", extra_tls="", upstream_extra=""):
    port = free_port()
    cfg = base_config(tls_listener("web", port, upstream_port, cert, extra=extra, extra_tls=extra_tls,
                                   upstream_extra=upstream_extra))
    p = proxies(cfg, workdir).start()
    return p, port


def curl(*args, timeout=120):
    return run(["curl", "-sS", "--max-time", str(timeout), *args], timeout=timeout + 10)


def test_request_round_trip(proxies, workdir, nginx, cert):
    p, port = start_tcp_proxy(proxies, workdir, nginx.port, cert)
    r = curl("--cacert", str(cert[0]), f"https://localhost:{port}/")
    assert r.returncode == 0, r.stderr
    assert "hello from nginx" in r.stdout
    # nginx saw the request through the proxy's upstream connection
    nginx.wait_access("GET / HTTP/1.1")


@pytest.mark.parametrize("flag,version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_openssl_forced_versions(proxies, workdir, nginx, cert, flag, version):
    p, port = start_tcp_proxy(proxies, workdir, nginx.port, cert)
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", flag, "-CAfile", str(cert[0]),
                        "-servername", "localhost", "-verify_return_error", "-quiet"],
                       input=b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n", capture_output=True, timeout=30)
    assert b"hello from nginx" in r.stdout, r.stderr
    p.log.wait_for(f'"version":"{version}"')


def test_min_version_refuses_older_client(proxies, workdir, nginx, cert):
    p, port = start_tcp_proxy(proxies, workdir, nginx.port, cert, extra_tls='      min_version: "1.3"')
    r = curl("--cacert", str(cert[0]), "--tls-max", "1.2", f"https://localhost:{port}/")
    assert r.returncode != 0
    r = curl("--cacert", str(cert[0]), "--tlsv1.3", f"https://localhost:{port}/")
    assert r.returncode == 0 and "hello from nginx" in r.stdout


def test_100mb_download_and_upload_checksums(proxies, workdir, nginx, cert):
    p, port = start_tcp_proxy(proxies, workdir, nginx.port, cert)
    big = nginx.root / "big.bin"
    with open(big, "wb") as f:
        f.write(os.urandom(100 * 1024 * 1024))
    want = sha256_file(big)
    got = workdir / "got.bin"
    r = curl("--cacert", str(cert[0]), "-o", str(got), f"https://localhost:{port}/big.bin")
    assert r.returncode == 0, r.stderr
    assert sha256_file(got) == want
    r = curl("--cacert", str(cert[0]), "-T", str(big), f"https://localhost:{port}/upload/copy.bin")
    assert r.returncode == 0, r.stderr
    assert sha256_file(nginx.root / "upload" / "copy.bin") == want


class SinkServer(ScriptedUpstream):
    """Plain TCP peer: reads until EOF, then answers with the sha256 of what it got and closes."""

    def __init__(self):
        self.received = []
        super().__init__(self._sink)

    def _sink(self, c):
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(65536)
            if not d:
                break
            h.update(d)
            n += len(d)
        self.received.append(n)
        c.sendall(f"{n} {h.hexdigest()}\n".encode())
        c.close()


def tls_client(port, cafile, server_hostname="localhost"):
    """A TLS client over a raw socket with memory BIOs, so that close_notify and FIN can be sent
    separately from reading (a real half-close)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_hostname)

    def flush():
        data = out.read()
        if data:
            sock.sendall(data)

    while True:
        try:
            obj.do_handshake()
            flush()
            break
        except ssl.SSLWantReadError:
            flush()
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("closed during handshake")
            inc.write(d)
    return sock, obj, inc, flush


def test_half_close_both_ways(proxies, workdir, cert):
    sink = SinkServer()
    try:
        p, port = start_tcp_proxy(proxies, workdir, sink.port, cert)
        sock, obj, inc, flush = tls_client(port, cert[0])
        payload = os.urandom(3 * 1024 * 1024 + 17)
        obj.write(payload)
        flush()
        # close_notify then FIN: the client is done sending but still reads.
        try:
            obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        flush()
        sock.shutdown(socket.SHUT_WR)
        # The upstream sees EOF (its answer proves it), the answer comes back, then close_notify.
        answer = b""
        eof = False
        while not eof:
            d = sock.recv(65536)
            if not d:
                break
            inc.write(d)
            while True:
                try:
                    chunk = obj.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    eof = True
                    break
                if not chunk:
                    eof = True
                    break
                answer += chunk
        sock.close()
        assert answer == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()
    finally:
        sink.close()


def test_upstream_refused_closes_client_with_log(proxies, workdir, cert):
    dead = free_port()
    p, port = start_tcp_proxy(proxies, workdir, dead, cert)
    r = curl("--cacert", str(cert[0]), f"https://localhost:{port}/")
    assert r.returncode != 0
    line = p.log.wait_for("upstream connect failed")
    assert "connection refused" in line.lower()


def test_handshake_timeout(proxies, workdir, nginx, cert):
    p, port = start_tcp_proxy(proxies, workdir, nginx.port, cert,
                              extra="    timeouts:\n      handshake: 300ms")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        t0 = time.monotonic()
        assert s.recv(1) == b""  # closed by the proxy, nothing sent
        assert time.monotonic() - t0 < 5
    p.log.wait_for("TLS handshake timeout")


def test_idle_timeout_closes_quiet_connection(proxies, workdir, cert):
    sink = SinkServer()
    try:
        p, port = start_tcp_proxy(proxies, workdir, sink.port, cert,
                                  extra="    timeouts:\n      idle: 400ms")
        sock, obj, inc, flush = tls_client(port, cert[0])
        sock.settimeout(10)
        # nothing more is sent: the proxy closes the connection after the idle timeout
        while True:
            d = sock.recv(65536)
            if not d:
                break
        p.log.wait_for("idle timeout")
    finally:
        sink.close()


def test_plain_http_to_tls_port_gets_clear_400(proxies, workdir, nginx, cert):
    p, port = start_tcp_proxy(proxies, workdir, nginx.port, cert)
    r = curl("-i", f"http://127.0.0.1:{port}/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("HTTP/1.1 400")
    assert "plain HTTP request to an HTTPS port" in r.stdout
    assert "GET" not in nginx.access_log()


def test_sni_picks_certificate(proxies, workdir, nginx, session_dir):
    a = gen_cert(session_dir / "sni-a", "a.test")
    b = gen_cert(session_dir / "sni-b", "b.test")
    default = gen_cert(session_dir / "sni-default", "default.test")
    port = free_port()
    extra_tls = f"""      sni:
        - server_names: [a.test]
          certificate: {a[0]}
          private_key: {a[1]}
        - server_names: ["*.b.test", b.test]
          certificate: {b[0]}
          private_key: {b[1]}"""
    cfg = base_config(tls_listener("web", port, nginx.port, default, extra_tls=extra_tls))
    proxies(cfg, workdir).start()
    for name, crt in (("a.test", a[0]), ("b.test", b[0]), ("default.test", default[0])):
        r = curl("--cacert", str(crt), "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/")
        assert r.returncode == 0, (name, r.stderr)
        assert "hello from nginx" in r.stdout
    r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "a.test"],
            input="", timeout=30)
    assert "CN = a.test" in r.stdout or "CN=a.test" in r.stdout


def test_max_connections(proxies, workdir, cert):
    sink = SinkServer()
    try:
        p, port = start_tcp_proxy(proxies, workdir, sink.port, cert,
                                  extra="    limits:\n      max_connections: 1")
        first = tls_client(port, cert[0])
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            tls_client(port, cert[0])
        p.log.wait_for("connection rejected")
        first[0].close()
    finally:
        sink.close()


def test_sigterm_drains_and_exits_zero(proxies, workdir, nginx, cert):
    p, port = start_tcp_proxy(proxies, workdir, nginx.port, cert)
    r = curl("--cacert", str(cert[0]), f"https://localhost:{port}/")
    assert r.returncode == 0
    p.signal(signal.SIGTERM)
    assert p.wait_exit(timeout=30) == 0
    p.log.wait_for("drained")


def test_sigterm_waits_for_open_connection_until_drain_timeout(proxies, workdir, cert):
    sink = SinkServer()
    try:
        port = free_port()
        cfg = base_config(tls_listener("web", port, sink.port, cert), extra="drain_timeout: 500ms\n")
        p = proxies(cfg, workdir).start()
        sock, obj, inc, flush = tls_client(port, cert[0])
        p.signal(signal.SIGTERM)
        p.log.wait_for("draining")
        # the open connection keeps the process alive until the drain deadline
        with pytest.raises(subprocess.TimeoutExpired):
            p.proc.wait(timeout=0.2)
        assert p.wait_exit(timeout=30) == 0
        p.log.wait_for("drain timeout")
        sock.close()
    finally:
        sink.close()


def test_bad_config_rejected_with_positions(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("listeners:\n  - name: web\n    listen: 127.0.0.1:99999\n    bogus: 1\n"
                   "    upstream:\n      address: 127.0.0.1:80\n")
    r = run([str(BIN), "check-config", "-c", str(bad)])
    assert r.returncode == 1
    assert f"{bad}:3:" in r.stderr
    assert f"{bad}:4:5" in r.stderr
    r = run([str(BIN), "run", "-c", str(bad)])
    assert r.returncode == 1
    assert f"{bad}:3:" in r.stderr


def test_examples_pass_check_config(workdir, cert):
    examples = Path(__file__).resolve().parents[2] / "examples"
    files = sorted(examples.glob("*.yaml"))
    assert files
    for f in files:
        text = f.read_text()
        # the examples point at a mounted Secret; use real files for the check
        text = text.replace("/etc/sidecar/tls/tls.crt", str(cert[0])).replace(
            "/etc/sidecar/tls/tls.key", str(cert[1])).replace("/etc/sidecar/tls/ca.crt", str(cert[0]))
        text = text.replace("/etc/sidecar/tls/", str(cert[0].parent) + "/")
        local = workdir / f.name
        local.write_text(text)
        r = run([str(BIN), "check-config", "-c", str(local)])
        assert r.returncode == 0, f"{f.name}: {r.stderr}"


def test_gen_cert_writes_usable_pair(workdir):
    crt, key = gen_cert(workdir / "g", "example.test", "10.1.2.3")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    r = run(["openssl", "x509", "-in", str(crt), "-noout", "-text"])
    assert "example.test" in r.stdout and "10.1.2.3" in r.stdout
    assert "prime256v1" in r.stdout or "P-256" in r.stdout


def test_cli_help_and_version():
    r = run([str(BIN), "version"])
    assert r.returncode == 0 and "mbedTLS 3.6" in r.stdout
    for cmd in ("run", "check-config", "gen-cert", "init-net"):
        r = run([str(BIN), cmd, "--help"])
        assert r.returncode == 0 and "usage" in r.stdout.lower(), cmd
    r = run([str(BIN), "nope"])
    assert r.returncode == 2


def test_embedded_default_serves_tls(tmp_path):
    """`sidecar run` with no file: 127.0.0.1:8443 with an ephemeral certificate -> 127.0.0.1:8080."""
    try:
        wait_port(8443, timeout=0.1)
        pytest.skip("port 8443 is in use on this machine")
    except TimeoutError:
        pass
    n = Nginx(tmp_path)
    n.port = 8080
    n.conf.write_text(n.conf.read_text().replace("listen 127.0.0.1:", "listen 127.0.0.1:8080; #"))
    n.start()
    proc = subprocess.Popen([str(BIN), "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        from conftest import LogReader
        log = LogReader(proc.stderr)
        log.wait_for("sidecar started")
        assert "ephemeral self-signed certificate" in log.text()
        r = curl("-k", "https://127.0.0.1:8443/")
        assert r.returncode == 0 and "hello from nginx" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        n.stop()
