"""Operations with the real binary: the admin endpoint and its metrics, certificate and config
reload (file watch, Kubernetes Secret layout, SIGHUP), and graceful drain (SIGTERM, POST /shutdown).
"""
import http.client
import math
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid

import pytest

from conftest import BIN, TLS_BACKEND, ScriptedUpstream, base_config, free_port, gen_cert, run, tls_listener


# ---- helpers ----

def admin(port, path, method="GET"):
    """One admin request; returns (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_prometheus(text):
    """A strict reader of the text exposition format 0.0.4. Returns
    {family: {"type": t, "help": h, "samples": [(name, {labels}, value)]}}; fails on anything
    malformed, on samples of a family without HELP/TYPE, and on duplicate series."""
    assert text.endswith("\n")
    families = {}
    seen = set()
    for line in text.splitlines():
        assert line.strip(), "empty line in exposition"
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert help_, line
            families.setdefault(name, {"samples": []})["help"] = help_
            continue
        if line.startswith("# TYPE "):
            name, _, type_ = line[7:].partition(" ")
            assert type_ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            fam = families.setdefault(name, {"samples": []})
            assert "type" not in fam, f"second TYPE for {name}"
            assert not fam["samples"], f"TYPE after samples for {name}"
            fam["type"] = type_
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        name, raw_labels, raw_value = m.groups()
        labels = {}
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = LABEL.match(raw_labels, pos)
                assert lm, f"malformed labels: {line!r}"
                assert lm.group(1) not in labels, line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        value = float(raw_value)  # raises on garbage; accepts +Inf/NaN as the format does
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and families.get(base, {}).get("type") == "histogram":
                family = base
        assert family in families, f"sample {name} without HELP/TYPE"
        fam = families[family]
        assert "help" in fam and "type" in fam, f"{family} lacks HELP or TYPE"
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f"duplicate series {line!r}"
        seen.add(key)
        if fam["type"] == "counter":
            assert value >= 0 and math.isfinite(value), line
        fam["samples"].append((name, labels, value))
    for name, fam in families.items():
        if fam["type"] == "histogram":
            check_histograms(name, fam["samples"])
    return families


def check_histograms(name, samples):
    """Buckets are cumulative, end with +Inf, and +Inf equals _count."""
    series = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(rest, {"buckets": [], "count": None})
        if sname == name + "_bucket":
            le = labels["le"]
            s["buckets"].append((math.inf if le == "+Inf" else float(le), value))
        elif sname == name + "_count":
            s["count"] = value
    for rest, s in series.items():
        b = s["buckets"]
        assert b and b[-1][0] == math.inf, (name, rest)
        assert [x[0] for x in b] == sorted(x[0] for x in b), (name, rest)
        assert [x[1] for x in b] == sorted(x[1] for x in b), f"{name}{rest}: buckets not cumulative"
        assert b[-1][1] == s["count"], (name, rest)


def value(families, name, **labels):
    """The value of one series; the family is found from the sample name."""
    for fam in families.values():
        for sname, l, v in fam["samples"]:
            if sname == name and all(l.get(k) == want for k, want in labels.items()):
                return v
    raise KeyError(f"{name}{labels} not exposed")


def metrics(port):
    status, headers, body = admin(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_prometheus(body), body


def file_serial(crt):
    r = run(["openssl", "x509", "-in", str(crt), "-noout", "-serial"])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split("=", 1)[1].upper()


def served_serial(port, servername="localhost"):
    s = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername],
                       input=b"", capture_output=True, timeout=30)
    r = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=s.stdout, capture_output=True,
                       timeout=30)
    assert r.returncode == 0, s.stderr.decode() + r.stderr.decode()
    return r.stdout.decode().strip().split("=", 1)[1].upper()


def https_get(port, path="/small", cafiles=(), timeout=10, headers=None):
    """One request on its own connection (so each one makes a TLS handshake)."""
    ctx = ssl.create_default_context()
    for f in cafiles:
        ctx.load_verify_locations(cafile=str(f))
    c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def http_listener(name, port, upstream_port, cert, extra=""):
    return tls_listener(name, port, upstream_port, cert, protocol="http", extra=extra)


def start(proxies, workdir, listeners, extra="", admin_port=None):
    admin_port = admin_port or free_port()
    p = proxies(base_config(listeners, admin_port=admin_port, extra=extra), workdir).start()
    p.admin_port = admin_port
    return p


class Load:
    """A bounded load: `threads` clients making one HTTPS request per connection for `seconds`
    (and at most `max_requests` in all), counting failures."""

    def __init__(self, port, cafiles, seconds=2.0, threads=2, max_requests=5000):
        self.port, self.cafiles, self.seconds = port, cafiles, seconds
        self.max_requests = max_requests
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        self.deadline = time.monotonic() + self.seconds
        for t in self.threads:
            t.start()
        return self

    def _run(self):
        while time.monotonic() < self.deadline:
            with self.lock:
                if self.ok + len(self.failures) >= self.max_requests:
                    return
            try:
                status, _, body = https_get(self.port, cafiles=self.cafiles)
                good = status == 200 and body == b"ok\n"
                err = None if good else f"status {status}"
            except Exception as e:  # any failure is what the test counts
                good, err = False, repr(e)
            with self.cond:
                if good:
                    self.ok += 1
                else:
                    self.failures.append(err)
                self.cond.notify_all()

    def wait_for_ok(self, n, timeout=20):
        with self.cond:
            assert self.cond.wait_for(lambda: self.ok >= n, timeout), (self.ok, self.failures[:5])

    def join(self):
        for t in self.threads:
            t.join(timeout=self.seconds + 30)
        return self


class SlowUpstream(ScriptedUpstream):
    """A plain HTTP/1.1 upstream that answers each request only when the test releases it."""

    def __init__(self):
        self.arrived = threading.Event()
        self.release = threading.Event()
        super().__init__(self._handle)

    def _handle(self, c):
        data = b""
        while b"\r\n\r\n" not in data:
            d = c.recv(65536)
            if not d:
                return
            data += d
        self.arrived.set()
        if not self.release.wait(60):
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nslow\n")
        # keep-alive: the upstream itself never closes; the proxy decides
        c.recv(65536)

    def close(self):
        self.release.set()
        super().close()


@pytest.fixture
def slow_upstream():
    u = SlowUpstream()
    yield u
    u.close()


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def tls_connect(port, cafile):
    """A TLS connection with its handshake done, held open by the caller."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


# ---- admin endpoint ----

DOCUMENTED_FAMILIES = {
    "sidecar_connections_accepted_total": "counter",
    "sidecar_connections_active": "gauge",
    "sidecar_connections_rejected_total": "counter",
    "sidecar_received_bytes_total": "counter",
    "sidecar_sent_bytes_total": "counter",
    "sidecar_tls_handshakes_total": "counter",
    "sidecar_tls_resumed_handshakes_total": "counter",
    "sidecar_tls_handshake_duration_seconds": "histogram",
    "sidecar_tls_handshakes_waiting": "gauge",
    "sidecar_tls_accept_pauses_total": "counter",
    "sidecar_upstream_connect_failures_total": "counter",
    "sidecar_upstream_connect_timeouts_total": "counter",
    "sidecar_idle_timeouts_total": "counter",
    "sidecar_http_requests_total": "counter",
    "sidecar_http_local_responses_total": "counter",
    "sidecar_http_request_duration_seconds": "histogram",
    "sidecar_certificate_reloads_total": "counter",
    "sidecar_certificate_not_after_seconds": "gauge",
    "sidecar_config_reloads_total": "counter",
    "sidecar_draining": "gauge",
    "sidecar_start_time_seconds": "gauge",
}


def test_admin_health_ready_and_unknown_path(proxies, workdir, nginx, cert):
    p = start(proxies, workdir, http_listener("web", free_port(), nginx.port, cert))
    assert admin(p.admin_port, "/healthz")[0] == 200
    status, _, body = admin(p.admin_port, "/readyz")
    assert status == 200 and body == "ready\n"
    assert admin(p.admin_port, "/nope")[0] == 404
    assert admin(p.admin_port, "/metrics/../healthz")[0] == 404
    assert admin(p.admin_port, "/shutdown")[0] == 405  # GET must not stop the proxy
    assert admin(p.admin_port, "/healthz")[0] == 200


def test_metrics_are_valid_and_move(proxies, workdir, nginx, cert):
    port, dead_port = free_port(), free_port()
    # the "dead" listener (TCP mode) forwards to a port where nothing listens
    listeners = http_listener("web", port, nginx.port, cert) + tls_listener("dead", dead_port, free_port(), cert)
    p = start(proxies, workdir, listeners)
    fam, _ = metrics(p.admin_port)
    for name, type_ in DOCUMENTED_FAMILIES.items():
        assert name in fam, f"{name} missing"
        assert fam[name]["type"] == type_, name
    before_failures = value(fam, "sidecar_upstream_connect_failures_total", listener="dead")
    assert value(fam, "sidecar_connections_accepted_total", listener="web") == 0
    assert value(fam, "sidecar_certificate_not_after_seconds", listener="web", path=str(cert[0])) > time.time()

    weird = f"/weird-{uuid.uuid4().hex}"
    for path in ("/small", "/small", weird):
        status, _, _ = https_get(port, path, cafiles=[cert[0]])
        assert status in (200, 404)
    with pytest.raises((ConnectionError, ssl.SSLError, OSError, http.client.HTTPException)):
        https_get(dead_port, "/", cafiles=[cert[0]])

    fam, body = metrics(p.admin_port)
    assert value(fam, "sidecar_connections_accepted_total", listener="web") >= 3
    assert value(fam, "sidecar_http_requests_total", listener="web", code="200",
                 **{"class": "2xx"}) >= 2
    assert sum(v for s, l, v in fam["sidecar_http_requests_total"]["samples"]
               if l.get("class") == "4xx") >= 1
    assert value(fam, "sidecar_http_request_duration_seconds_count", listener="web") >= 3
    assert value(fam, "sidecar_tls_handshake_duration_seconds_count", listener="web") >= 3
    hs = sum(value(fam, "sidecar_tls_handshakes_total", listener="web", version=v, result="ok")
             for v in ("1.2", "1.3"))
    assert hs >= 3
    assert value(fam, "sidecar_received_bytes_total", listener="web") > 0
    assert value(fam, "sidecar_sent_bytes_total", listener="web") > 0
    assert value(fam, "sidecar_upstream_connect_failures_total", listener="dead") == before_failures + 1
    assert value(fam, "sidecar_draining") == 0
    # labels come from configuration only, never from requests
    assert weird not in body and "weird" not in body
    # the 'active' gauge returns to 0 once the clients are gone (closes are logged at debug)
    for _ in range(10):
        mark = p.log.count()
        fam, _ = metrics(p.admin_port)
        if value(fam, "sidecar_connections_active", listener="web") == 0:
            break
        p.log.wait_for("connection closed", start=mark)
    assert value(fam, "sidecar_connections_active", listener="web") == 0


def test_refused_upstream_answers_502_and_counts(proxies, workdir, cert):
    port = free_port()
    p = start(proxies, workdir, http_listener("dead", port, free_port(), cert))
    status, _, _ = https_get(port, "/", cafiles=[cert[0]])
    assert status == 502
    fam, _ = metrics(p.admin_port)
    assert value(fam, "sidecar_upstream_connect_failures_total", listener="dead") == 1
    assert value(fam, "sidecar_http_requests_total", listener="dead", code="502") == 1
    assert value(fam, "sidecar_http_local_responses_total", listener="dead") == 1


def test_large_counters_render_exactly(proxies, workdir, nginx, cert):
    """Counters above 10^9 (bytes move fast) must not be rounded to 9 significant digits."""
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, cert))
    with open(nginx.root / "big.bin", "wb") as f:
        f.truncate(1_100_000_007)  # sparse; nginx sends it with sendfile
    r = run(["curl", "-sS", "--cacert", str(cert[0]), "-o", "/dev/null", f"https://localhost:{port}/big.bin"],
            timeout=120)
    assert r.returncode == 0, r.stderr
    fam, body = metrics(p.admin_port)
    sent = [line for line in body.splitlines() if line.startswith('sidecar_sent_bytes_total{listener="web"}')]
    assert sent and re.fullmatch(r'\S+ \d+', sent[0]), sent
    assert value(fam, "sidecar_sent_bytes_total", listener="web") > 1_100_000_007


def test_post_shutdown_drains_and_exits_zero(proxies, workdir, nginx, cert):
    port = free_port()
    p = start(proxies, workdir, tls_listener("web", port, nginx.port, cert))
    held = tls_connect(port, cert[0])  # a TCP-mode connection finishes only when its client does
    status, _, body = admin(p.admin_port, "/shutdown", method="POST")
    assert status == 200 and body == "draining\n"
    p.log.wait_for('"draining"')
    assert admin(p.admin_port, "/healthz")[0] == 200
    assert admin(p.admin_port, "/readyz")[0] == 503
    fam, _ = metrics(p.admin_port)
    assert value(fam, "sidecar_draining") == 1
    assert refused(port)
    with pytest.raises(subprocess.TimeoutExpired):
        p.proc.wait(timeout=0.2)
    held.close()
    assert p.wait_exit(timeout=30) == 0
    p.log.wait_for("drained; exiting")


# ---- certificate reload ----

def rotate_files(new_dir, target_dir):
    """What a careful writer does: complete files elsewhere, renamed into place."""
    for name in ("tls.key", "tls.crt"):
        tmp = target_dir / f".{name}.tmp"
        tmp.write_bytes((new_dir / name).read_bytes())
        os.replace(tmp, target_dir / name)


def test_certificate_rotation_under_load(proxies, workdir, nginx):
    live = workdir / "live"
    old_crt, old_key = gen_cert(live)
    new_crt, _ = gen_cert(workdir / "next")
    # the clients trust both certificates, from copies (the live files are replaced)
    old_copy, new_copy = workdir / "old-ca.crt", workdir / "next-ca.crt"
    old_copy.write_bytes(old_crt.read_bytes())
    new_copy.write_bytes(new_crt.read_bytes())
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, (old_crt, old_key)))
    old_serial, new_serial = file_serial(old_crt), file_serial(new_crt)
    assert old_serial != new_serial
    assert served_serial(port) == old_serial
    fam, _ = metrics(p.admin_port)
    reloads_ok = value(fam, "sidecar_certificate_reloads_total", result="ok")

    mark = p.log.count()
    load = Load(port, cafiles=[old_copy, new_copy], seconds=2.0).start()
    load.wait_for_ok(10)
    rotate_files(workdir / "next", live)
    line = p.log.wait_for("certificates reloaded", start=mark)
    assert new_serial in line.upper()
    load.join()
    assert load.failures == [], load.failures[:5]
    assert load.ok >= 20

    assert served_serial(port) == new_serial
    fam, _ = metrics(p.admin_port)
    assert value(fam, "sidecar_certificate_reloads_total", result="ok") == reloads_ok + 1
    assert value(fam, "sidecar_certificate_reloads_total", result="failed") == 0
    # the proxy serves and verifies with the new pair
    status, _, body = https_get(port, cafiles=[new_copy])
    assert status == 200 and body == b"ok\n"


@pytest.mark.parametrize("breakage", ["mismatched key", "half-written certificate"])
def test_broken_pair_keeps_old_certificate(proxies, workdir, nginx, breakage):
    live = workdir / "live"
    crt, key = gen_cert(live)
    other_crt, other_key = gen_cert(workdir / "other")
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, (crt, key)))
    serial = file_serial(crt)
    mark = p.log.count()
    if breakage == "mismatched key":
        tmp = live / ".tls.key.tmp"
        tmp.write_bytes(other_key.read_bytes())
        os.replace(tmp, key)
    else:
        pem = other_crt.read_bytes()
        crt.write_bytes(pem[: len(pem) // 2])  # a writer that stopped halfway, in place
    line = p.log.wait_for("certificate reload failed", start=mark)
    assert '"listener":"web"' in line
    assert served_serial(port) == serial
    fam, _ = metrics(p.admin_port)
    assert value(fam, "sidecar_certificate_reloads_total", result="failed") == 1
    assert value(fam, "sidecar_certificate_reloads_total", result="ok") == 0
    # a good pair afterwards is picked up
    mark = p.log.count()
    rotate_files(workdir / "other", live)
    p.log.wait_for("certificates reloaded", start=mark)
    assert served_serial(port) == file_serial(other_crt)


def test_broken_pair_old_certificate_still_verifies(proxies, workdir, nginx):
    live = workdir / "live"
    crt, key = gen_cert(live)
    trusted = workdir / "trusted.crt"
    trusted.write_bytes(crt.read_bytes())
    _, other_key = gen_cert(workdir / "other")
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, (crt, key)))
    mark = p.log.count()
    tmp = live / ".tls.key.tmp"
    tmp.write_bytes(other_key.read_bytes())
    os.replace(tmp, key)
    p.log.wait_for("certificate reload failed", start=mark)
    status, _, body = https_get(port, cafiles=[trusted])
    assert status == 200 and body == b"ok\n"


def make_secret_volume(root, pair_dir, stamp):
    """The layout kubelet writes for a Secret volume (atomic writer)."""
    root.mkdir(exist_ok=True)
    ts = root / f"..{stamp}"
    ts.mkdir()
    for name in ("tls.crt", "tls.key"):
        (ts / name).write_bytes((pair_dir / name).read_bytes())
    tmp_link = root / "..data_tmp"
    os.symlink(ts.name, tmp_link)
    os.replace(tmp_link, root / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (root / name).is_symlink():
            os.symlink(f"..data/{name}", root / name)
    return ts


def test_kubernetes_secret_volume_rotation(proxies, workdir, nginx):
    first, _ = gen_cert(workdir / "first")
    second, _ = gen_cert(workdir / "second")
    vol = workdir / "secret"
    old_ts = make_secret_volume(vol, workdir / "first", "2026_11_25_10_00_00.000000001")
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, (vol / "tls.crt", vol / "tls.key")))
    assert served_serial(port) == file_serial(first)
    mark = p.log.count()
    make_secret_volume(vol, workdir / "second", "2026_11_25_11_00_00.000000002")
    # kubelet removes the previous timestamped directory after the swap
    for f in old_ts.iterdir():
        f.unlink()
    old_ts.rmdir()
    line = p.log.wait_for("certificates reloaded", start=mark)
    assert file_serial(second) in line.upper()
    assert served_serial(port) == file_serial(second)
    fam, _ = metrics(p.admin_port)
    assert value(fam, "sidecar_certificate_reloads_total", result="ok") == 1
    assert value(fam, "sidecar_certificate_reloads_total", result="failed") == 0


def test_sighup_reloads_certificates(proxies, workdir, nginx):
    live = workdir / "live"
    crt, key = gen_cert(live)
    new_crt, _ = gen_cert(workdir / "next")
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, (crt, key)))
    mark = p.log.count()
    rotate_files(workdir / "next", live)
    p.signal(signal.SIGHUP)  # at once, before the watcher's 250 ms debounce
    p.log.wait_for("configuration reloaded", start=mark)
    assert served_serial(port) == file_serial(new_crt)
    line = p.log.wait_for("certificates reloaded", start=mark)
    assert file_serial(new_crt) in line.upper()
    fam, _ = metrics(p.admin_port)
    assert value(fam, "sidecar_config_reloads_total", result="ok") == 1
    assert value(fam, "sidecar_certificate_reloads_total", result="ok") == 1


# ---- config reload ----

def test_sighup_config_reload_limits_and_log_level(proxies, workdir, nginx, cert):
    port = free_port()
    admin_port = free_port()

    def config(max_conn, level):
        cfg = base_config(tls_listener("web", port, nginx.port, cert,
                                       extra=f"    limits:\n      max_connections: {max_conn}"),
                          admin_port=admin_port)
        return cfg.replace("level: debug", f"level: {level}")

    p = proxies(config(1, "info"), workdir).start()
    p.admin_port = admin_port
    first = tls_connect(port, cert[0])
    with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
        tls_connect(port, cert[0]).close()
    fam, _ = metrics(admin_port)
    assert value(fam, "sidecar_connections_rejected_total", listener="web") == 1
    assert "TLS handshake done" not in p.log.text()  # a debug line, not logged at info

    mark = p.log.count()
    p.config_path.write_text(config(10, "debug"))
    p.signal(signal.SIGHUP)
    p.log.wait_for("configuration reloaded", start=mark)
    second = tls_connect(port, cert[0])
    p.log.wait_for("TLS handshake done", start=mark)  # debug lines now appear
    fam, _ = metrics(admin_port)
    assert value(fam, "sidecar_connections_rejected_total", listener="web") == 1
    assert value(fam, "sidecar_connections_active", listener="web") == 2
    assert value(fam, "sidecar_config_reloads_total", result="ok") == 1
    first.close()
    second.close()


def test_tls_backend_change_on_sighup_needs_a_restart(proxies, workdir, nginx, cert):
    """The backend named at start keeps serving; the rest of the new config applies."""
    other = "openssl" if TLS_BACKEND == "mbedtls" else "mbedtls"
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, cert))
    assert f'"tls_backend":"{TLS_BACKEND}"' in p.log.wait_for("sidecar started")
    mark = p.log.count()
    text = p.config_path.read_text().replace(f"tls_backend: {TLS_BACKEND}", f"tls_backend: {other}")
    p.config_path.write_text(text.replace("level: debug", "level: info"))
    p.signal(signal.SIGHUP)
    line = p.log.wait_for("tls_backend changes take effect after a restart", start=mark)
    assert f'"running":"{TLS_BACKEND}"' in line and f'"configured":"{other}"' in line
    p.log.wait_for("configuration reloaded", start=mark)
    status, _, _ = https_get(port, cafiles=[cert[0]])
    assert status == 200


def test_tls_backend_is_checked_with_positions(workdir, cert):
    bad = workdir / "backend.yaml"
    bad.write_text(base_config(tls_listener("web", free_port(), free_port(), cert))
                   .replace(f"tls_backend: {TLS_BACKEND}", "tls_backend: gnutls"))
    r = run([str(BIN), "check-config", "-c", str(bad)])
    assert r.returncode == 1
    assert f'{bad}:1:14: tls_backend: "gnutls" is not one of the accepted values: mbedtls, openssl' \
        in r.stderr
    r = run([str(BIN), "version"])
    assert re.search(r"TLS backends \(tls_backend\): mbedtls \(mbedTLS 3\.6[^)]*, default\) "
                     r"openssl \(OpenSSL 3\.", r.stdout), r.stdout


def test_invalid_config_on_sighup_keeps_old(proxies, workdir, nginx, cert):
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, cert))
    good = p.config_path.read_text()
    bad = good.replace("    upstream:\n", "    bogus_key: 1\n    upstream:\n", 1).replace(
        f"listen: 127.0.0.1:{port}", "listen: 127.0.0.1:99999", 1)
    lines = bad.splitlines()
    bogus_line = next(i for i, l in enumerate(lines, 1) if "bogus_key" in l)
    listen_line = next(i for i, l in enumerate(lines, 1) if "99999" in l)
    mark = p.log.count()
    p.config_path.write_text(bad)
    p.signal(signal.SIGHUP)
    p.log.wait_for("keeping the previous configuration", start=mark)
    text = "\n".join(p.log.lines[mark:])
    assert f"{p.config_path}:{bogus_line}:5" in text
    assert f"{p.config_path}:{listen_line}:" in text
    # the old configuration still serves
    status, _, body = https_get(port, cafiles=[cert[0]])
    assert status == 200 and body == b"ok\n"
    assert admin(p.admin_port, "/readyz")[0] == 200
    fam, _ = metrics(p.admin_port)
    assert value(fam, "sidecar_config_reloads_total", result="failed") == 1
    assert value(fam, "sidecar_config_reloads_total", result="ok") == 0
    # and a fixed file is accepted
    mark = p.log.count()
    p.config_path.write_text(good)
    p.signal(signal.SIGHUP)
    p.log.wait_for("configuration reloaded", start=mark)
    fam, _ = metrics(p.admin_port)
    assert value(fam, "sidecar_config_reloads_total", result="ok") == 1


def test_reload_moves_listener_to_new_address(proxies, workdir, nginx, cert):
    port, new_port = free_port(), free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, cert))
    mark = p.log.count()
    p.config_path.write_text(p.config_path.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{new_port}"))
    p.signal(signal.SIGHUP)
    p.log.wait_for("configuration reloaded", start=mark)
    assert refused(port)
    status, _, body = https_get(new_port, cafiles=[cert[0]])
    assert status == 200 and body == b"ok\n"


def test_reload_with_unbindable_address_keeps_old(proxies, workdir, nginx, cert):
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, nginx.port, cert))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    busy_port = busy.getsockname()[1]
    try:
        mark = p.log.count()
        p.config_path.write_text(p.config_path.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{busy_port}"))
        p.signal(signal.SIGHUP)
        p.log.wait_for("keeping the previous configuration", start=mark)
        status, _, body = https_get(port, cafiles=[cert[0]])
        assert status == 200 and body == b"ok\n"
        fam, _ = metrics(p.admin_port)
        assert value(fam, "sidecar_config_reloads_total", result="failed") == 1
        assert value(fam, "sidecar_config_reloads_total", result="ok") == 0
    finally:
        busy.close()


# ---- drain ----

def test_sigterm_drains_in_flight_request(proxies, workdir, cert, slow_upstream):
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, slow_upstream.port, cert))
    result = {}

    def client():
        try:
            result["response"] = https_get(port, "/slow", cafiles=[cert[0]], timeout=30)
        except Exception as e:
            result["error"] = e

    t = threading.Thread(target=client)
    t.start()
    assert slow_upstream.arrived.wait(10)
    p.signal(signal.SIGTERM)
    p.log.wait_for('"draining"')
    assert admin(p.admin_port, "/readyz")[0] == 503
    assert refused(port)
    with pytest.raises(subprocess.TimeoutExpired):
        p.proc.wait(timeout=0.2)
    slow_upstream.release.set()
    t.join(30)
    assert "error" not in result, result.get("error")
    status, headers, body = result["response"]
    assert status == 200 and body == b"slow\n"
    assert {k.lower(): v for k, v in headers.items()}.get("connection", "").lower() == "close"
    assert p.wait_exit(timeout=30) == 0
    p.log.wait_for("drained; exiting")
    assert "drain timeout" not in p.log.text()


def test_drain_timeout_bounds_a_stuck_upstream(proxies, workdir, cert, slow_upstream):
    port = free_port()
    p = start(proxies, workdir, http_listener("web", port, slow_upstream.port, cert),
              extra="drain_timeout: 700ms\n")
    result = {}

    def client():
        try:
            result["response"] = https_get(port, "/never", cafiles=[cert[0]], timeout=30)
        except Exception as e:
            result["error"] = e

    t = threading.Thread(target=client)
    t.start()
    assert slow_upstream.arrived.wait(10)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.wait_exit(timeout=30) == 0
    elapsed = time.monotonic() - t0
    assert 0.6 <= elapsed < 10, elapsed
    p.log.wait_for("drain timeout")
    t.join(30)
    assert "error" in result  # the client saw its connection closed without an answer
