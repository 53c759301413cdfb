"""What an operator debugging a Pod reads, with the real binary: handshake failures by reason,
exact status codes, process and build metrics, connection ends, and access records (HTTP fields,
TCP connection records, the text format)."""
import json
import socket
import ssl
import subprocess
import time

from conftest import BIN, Nginx, base_config, free_port, run, tls_listener
from test_http import Client, get, metric
from test_ops import admin, metrics, parse_prometheus, value

import pytest


@pytest.fixture
def web(workdir):
    n = Nginx(workdir).start()
    yield n
    n.stop()


def start(proxies, workdir, listeners, extra=""):
    admin_port = free_port()
    p = proxies(base_config(listeners, admin_port=admin_port, extra=extra), workdir).start()
    p.admin_port = admin_port
    return p


def wait_value(port, name, want, timeout=10.0, **labels):
    deadline = time.monotonic() + timeout
    while (got := metric(port, name, **labels)) != want:
        assert time.monotonic() < deadline, f"{name}{labels} stayed {got}, wanted {want}"
        time.sleep(0.02)  # a metric has no readiness to await


def access_records(p, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        recs = [json.loads(l) for l in p.access.text().splitlines() if l.startswith("{")]
        if len(recs) >= count or time.monotonic() > deadline:
            return recs
        time.sleep(0.02)  # a pipe read by a thread: poll its lines


def test_handshake_failures_are_counted_by_reason(proxies, workdir, web, cert):
    port = free_port()
    p = start(proxies, workdir, tls_listener("web", port, web.port, cert, protocol="http",
                                             extra_tls="      min_version: \"1.3\""))
    # Plain HTTP to the TLS port, then bytes that are neither TLS nor HTTP.
    for payload in (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"\x01\x02\x03"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(payload)
            while s.recv(4096):
                pass
    # A TLS 1.2-only client against a TLS 1.3-only listener.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost")
    for reason in ("plain_http", "not_tls", "no_common_version"):
        wait_value(p.admin_port, "sidecar_tls_handshake_failures_total", 1, listener="web",
                   reason=reason)
    assert metric(p.admin_port, "sidecar_tls_handshake_failures_total", listener="web",
                  reason="other") == 0
    # The handshake counter keeps its one failed total.
    assert metric(p.admin_port, "sidecar_tls_handshakes_total", listener="web",
                  result="failed") == 3


def test_status_codes_exact_and_tcp_listeners_export_no_http_series(proxies, workdir, web, cert):
    port, tcp_port = free_port(), free_port()
    p = start(proxies, workdir,
              tls_listener("web", port, web.port, cert, protocol="http")
              + tls_listener("raw", tcp_port, web.port, cert, protocol="tcp"))
    c = Client(port, cert[0])
    for path in ("/small", "/small", "/missing"):
        c.send(get(path))
        c.response()
    c.close()
    fam, body = metrics(p.admin_port)
    assert value(fam, "sidecar_http_requests_total", listener="web", code="200",
                 **{"class": "2xx"}) == 2
    assert value(fam, "sidecar_http_requests_total", listener="web", code="404",
                 **{"class": "4xx"}) == 1
    assert 'listener="raw"' in body
    http_families = [f for f in fam if f.startswith("sidecar_http_") or f.startswith("sidecar_upstream_requests")]
    for f in http_families:
        assert not any(l.get("listener") == "raw" for _, l, _ in fam[f]["samples"]), f
    assert value(fam, "sidecar_http_response_head_seconds_count", listener="web") == 3
    assert value(fam, "sidecar_upstream_connect_seconds_count", listener="web") == 1


def test_process_and_build_metrics(proxies, workdir, web, cert):
    p = start(proxies, workdir, tls_listener("web", free_port(), web.port, cert, protocol="http"))
    fam, _ = metrics(p.admin_port)
    version = run([str(BIN), "version"]).stdout.split()[1]
    info = [l for _, l, v in fam["sidecar_build_info"]["samples"] if v == 1]
    assert info and info[0]["version"] == version
    assert info[0]["tls_backend"] in info[0]["tls_backends"].split(",")
    status = open(f"/proc/{p.proc.pid}/status").read()
    rss_kib = int(status.split("VmRSS:")[1].split()[0])
    rss = value(fam, "process_resident_memory_bytes")
    assert abs(rss - rss_kib * 1024) < 4 << 20
    fds = len(list(__import__("os").scandir(f"/proc/{p.proc.pid}/fd")))
    assert abs(value(fam, "process_open_fds") - fds) <= 2
    assert value(fam, "process_max_fds") > 0
    assert value(fam, "process_cpu_seconds_total") >= 0
    assert abs(value(fam, "process_start_time_seconds") - time.time()) < 60


def test_access_record_fields_and_local_reasons(proxies, workdir, web, cert):
    port = free_port()
    p = start(proxies, workdir, tls_listener(
        "web", port, web.port, cert, protocol="http",
        extra="    limits:\n      request_rate: { rate: 1/m, burst: 1 }"))
    c = Client(port, cert[0])
    client_port = c.sock.getsockname()[1]
    c.send(b"GET /small HTTP/1.1\r\nHost: app.example\r\nUser-Agent: probe/1.0 (\xc3\xa9)\r\n"
           b"X-Request-Id: req-42\r\n\r\n")
    assert c.response().status == 200
    c.send(get("/again"))
    assert c.response().status == 429
    c.close()
    recs = access_records(p, 2)
    first, second = recs[0], recs[1]
    assert first["protocol"] == "HTTP/1.1"
    assert first["authority"] == "app.example"
    assert first["user_agent"] == "probe/1.0 (\u00e9)"
    assert first["request_id"] == "req-42"
    assert first["client_port"] == client_port
    assert first["local"] == "no" and first["reason"] == ""
    assert first["duration_us"] >= first["duration_ms"] * 1000
    assert second["status"] == 429 and second["reason"] == "rate_limited"


def test_tcp_connection_record_and_close_reasons(proxies, workdir, web, cert):
    port = free_port()
    p = start(proxies, workdir, tls_listener(
        "raw", port, web.port, cert, protocol="tcp",
        extra="    timeouts:\n      idle: 300ms"))
    c = Client(port, cert[0])
    c.send(get("/small"))
    assert c.response().status == 200
    # Left idle: the idle timeout ends it.
    assert c.closed_after()
    recs = access_records(p, 1)
    rec = recs[0]
    assert (rec["kind"], rec["listener"], rec["end"]) == ("connection", "raw", "idle_timeout")
    assert rec["bytes_in"] > 0 and rec["bytes_out"] > 0
    assert rec["tls_version"] == "TLSv1.3" and rec["sni"] == "localhost"
    wait_value(p.admin_port, "sidecar_connections_closed_total", 1, listener="raw",
               reason="idle_timeout")
    assert metric(p.admin_port, "sidecar_connection_duration_seconds_count", listener="raw") == 1


def test_text_format_applies_to_access_lines(proxies, workdir, web, cert):
    port = free_port()
    cfg = base_config(tls_listener("web", port, web.port, cert, protocol="http")).replace(
        "format: json", "format: text")
    p = proxies(cfg, workdir).start()
    c = Client(port, cert[0])
    c.send(get("/small"))
    assert c.response().status == 200
    c.close()
    line = p.access.wait_for(" access ")
    assert not line.startswith("{")
    assert " path=/small " in line and " status=200 " in line, line


def test_check_config_warns_of_a_certificate_about_to_expire(workdir, cert):
    crt, key = workdir / "soon.crt", workdir / "soon.key"
    r = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", "/CN=soon", "-days", "5", "-keyout", str(key), "-out", str(crt)])
    assert r.returncode == 0, r.stderr
    cfg = workdir / "soon.yaml"
    cfg.write_text(base_config(tls_listener("web", free_port(), 80, (crt, key), protocol="http")))
    r = run([str(BIN), "check-config", str(cfg)])
    assert r.returncode == 0, r.stderr  # still a valid file
    assert "expires within 30 days (not after " in r.stderr, r.stderr
    # The date is RFC 3339, the one openssl prints.
    end = run(["openssl", "x509", "-noout", "-enddate", "-in", str(crt)]).stdout
    when = time.strptime(end.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", when) in r.stderr, (end, r.stderr)
    # A certificate good for years draws no warning.
    cfg.write_text(base_config(tls_listener("web", free_port(), 80, cert, protocol="http")))
    r = run([str(BIN), "check-config", str(cfg)])
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("key_text, message", [
    (None, "cannot read"),
    ("junk\n", "cannot parse private key"),
])
def test_a_bad_key_file_is_reported_at_the_key(workdir, cert, key_text, message):
    key = workdir / "bad.key"
    if key_text is not None:
        key.write_text(key_text)
    cfg = workdir / "k.yaml"
    cfg.write_text(f"""listeners:
  - name: web
    listen: 127.0.0.1:{free_port()}
    tls:
      certificate: {cert[0]}
      private_key: {key}
    upstream: {{ address: 127.0.0.1:80 }}
""")
    r = run([str(BIN), "check-config", str(cfg)])
    assert r.returncode == 1
    assert f"k.yaml:6:7: listeners[0].tls.private_key: {message}" in r.stderr, r.stderr


def test_request_ids_generated_forwarded_and_logged(proxies, workdir, cert):
    from test_http_targets import RecordingApp
    app = RecordingApp()
    try:
        port = free_port()
        p = start(proxies, workdir, tls_listener("web", port, app.port, cert, protocol="http",
                                                 extra="    http:\n      request_id: true"))
        c = Client(port, cert[0])
        c.send(get("/one"))
        c.response()
        c.send(get("/two", extra="X-Request-Id: mine-7\r\n"))
        c.response()
        c.send(get("/three"))
        c.response()
        c.close()
        received = app.wait_for(b"/three").decode()
        ids = [line.split(": ", 1)[1] for line in received.split("\r\n")
               if line.lower().startswith("x-request-id:")]
        # Generated where the client sent none (one per request, the client's kept as it is).
        assert len(ids) == 3 and ids[1] == "mine-7", received
        assert ids[0] != ids[2] and ids[0].rsplit("-", 1)[0] == ids[2].rsplit("-", 1)[0]
        recs = access_records(p, 3)
        assert [r["request_id"] for r in recs] == ids
    finally:
        app.close()
