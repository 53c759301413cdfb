"""Rate limits end to end: the real binary, nginx as the app, real TLS clients from two source
addresses. Connections over a limit are closed at accept (no handshake) and counted by reason;
requests over a limit get 429 with Retry-After, never reach nginx, and leave the connection usable."""
import json
import signal
import socket
import ssl
import threading
import time

import pytest

from conftest import BIN, Nginx, ScriptedUpstream, base_config, free_port, run, tls_listener
from test_http import Client, get, metric, start_http_proxy, sync_nginx_log, wait_file_contains


@pytest.fixture
def web(workdir):
    n = Nginx(workdir).start()
    yield n
    n.stop()


class ClientFrom(Client):
    """A Client whose socket is bound to a given loopback source address."""

    def __init__(self, port, cafile, source="127.0.0.1", timeout=10):
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                       source_address=(source, 0))
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""


def refused_at_accept(port, cert, source="127.0.0.1"):
    """True when the proxy closes the connection before answering the ClientHello."""
    try:
        c = ClientFrom(port, cert[0], source=source)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    c.close()
    return False


def served(port, cert, path, source="127.0.0.1"):
    c = ClientFrom(port, cert[0], source=source)
    c.send(get(path))
    r = c.response()
    c.close()
    return r.status


def access_lines(proxy):
    out = []
    for line in proxy.access.text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "status" in rec and "path" in rec:
            out.append(rec)
    return out


# ---- request rate: 429 ----

def test_pipelined_burst_exactly_burst_forwarded_rest_429_connection_stays(
        proxies, workdir, web, cert):
    admin = free_port()
    p, port = start_http_proxy(proxies, workdir, web.port, cert, admin_port=admin,
                               limits={"request_rate": "{ rate: 1/s, burst: 3 }"})
    c = Client(port, cert[0])
    c.send(b"".join(get(f"/burst-{i}") for i in range(5)))
    statuses = [c.response() for _ in range(5)]
    assert [r.status for r in statuses] == [404, 404, 404, 429, 429]
    for r in statuses[3:]:
        assert r.reason == "Too Many Requests"
        assert r.header("Retry-After") == "1"
        assert r.header("Connection") is None  # keep-alive: the connection stays open
        assert r.body == b"Too Many Requests\n"

    # Await the refill as a client would: retry after Retry-After on the same connection.
    deadline = time.monotonic() + 10
    while True:
        c.send(get("/burst-after"))
        r = c.response()
        if r.status != 429:
            break
        assert time.monotonic() < deadline, "never admitted again"
        time.sleep(int(r.header("Retry-After")))
    assert r.status == 404
    # nginx handles one connection's requests in order: once it logged the last one, it has
    # logged every forwarded request before it.
    log = wait_file_contains(web.access_log, "/burst-after")
    assert [f"/burst-{i} " in log for i in range(5)] == [True, True, True, False, False], log
    c.close()

    assert metric(admin, "sidecar_http_requests_rate_limited_total", listener="web") >= 2
    p.access.wait_for('"/burst-after"')
    limited = [r for r in access_lines(p) if r["status"] == 429]
    assert {r["path"] for r in limited} >= {"/burst-3", "/burst-4"}
    assert all(r["local"] == "yes" for r in limited)


def test_refused_request_body_is_discarded_and_next_request_parsed(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert,
                               limits={"request_rate": "{ rate: 1/m, burst: 1 }"})
    c = Client(port, cert[0])
    c.send(get("/first"))
    assert c.response().status == 404
    body = b"x" * 5000
    c.send(b"POST /upload/refused HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n" + body
           + get("/second"))
    r1, r2 = c.response(), c.response()
    assert (r1.status, r2.status) == (429, 429)  # the body was skipped, not read as a request
    assert int(r1.header("Retry-After")) >= 59
    c.close()
    log = web.access_log()
    assert "/upload/refused" not in log and "/second" not in log


def test_per_client_request_rate_keeps_two_addresses_apart(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert,
                               limits={"request_rate": "{ rate: 1/m, burst: 2, key: client }"})
    a = ClientFrom(port, cert[0], source="127.0.0.1")
    b = ClientFrom(port, cert[0], source="127.0.0.2")
    for i in range(2):
        a.send(get(f"/a-{i}"))
        assert a.response().status == 404
    a.send(get("/a-2"))
    assert a.response().status == 429
    for i in range(2):
        b.send(get(f"/b-{i}"))
        assert b.response().status == 404  # the other address has its own bucket
    b.send(get("/b-2"))
    assert b.response().status == 429
    a.close()
    b.close()


def test_header_keyed_request_rate(proxies, workdir, web, cert):
    p, port = start_http_proxy(
        proxies, workdir, web.port, cert,
        limits={"request_rate": "{ rate: 1/m, burst: 1, key: header, header: X-API-Key }"})
    c = Client(port, cert[0])
    c.send(get("/k1", extra="X-API-Key: alpha\r\n"))
    assert c.response().status == 404
    c.send(get("/k2", extra="x-api-key: alpha\r\n"))
    assert c.response().status == 429
    c.send(get("/k3", extra="X-API-Key: beta\r\n"))
    assert c.response().status == 404
    c.close()
    log = web.wait_access("/k3")
    assert "/k1 " in log and "/k2 " not in log


# ---- connections at accept ----

def test_connection_rate_closes_before_handshake_and_counts(proxies, workdir, web, cert):
    admin = free_port()
    p, port = start_http_proxy(proxies, workdir, web.port, cert, admin_port=admin,
                               limits={"connection_rate": "{ rate: 1/m, burst: 2 }"})
    kept = [Client(port, cert[0]) for _ in range(2)]
    assert [refused_at_accept(port, cert) for _ in range(3)] == [True, True, True]
    for c in kept:  # the admitted ones are served
        c.send(get("/kept"))
        assert c.response().status == 404
        c.close()
    assert metric(admin, "sidecar_connections_rejected_total", listener="web",
                  reason="connection_rate") == 3
    assert metric(admin, "sidecar_connections_rejected_total", listener="web",
                  reason="max_connections") == 0
    ok = sum(metric(admin, "sidecar_tls_handshakes_total", listener="web", version=v, result="ok")
             for v in ("1.2", "1.3"))
    assert ok == 2  # refused connections cost no handshake


def test_per_client_max_connections(proxies, workdir, web, cert):
    admin = free_port()
    p, port = start_http_proxy(proxies, workdir, web.port, cert, admin_port=admin,
                               limits={"per_client": "{ max_connections: 2 }"})
    a = [ClientFrom(port, cert[0], source="127.0.0.1") for _ in range(2)]
    assert refused_at_accept(port, cert, source="127.0.0.1")
    b = ClientFrom(port, cert[0], source="127.0.0.2")  # another client is unaffected
    b.send(get("/b"))
    assert b.response().status == 404
    assert metric(admin, "sidecar_connections_rejected_total", listener="web",
                  reason="client_connections") == 1
    # A closed connection frees its slot once the proxy has seen the close.
    a[0].send(b"GET /bye HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert a[0].response().status == 404
    assert a[0].closed_after()
    deadline = time.monotonic() + 10
    while metric(admin, "sidecar_connections_active", listener="web") > 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert served(port, cert, "/again", source="127.0.0.1") == 404
    for c in a[1:] + [b]:
        c.close()


def test_per_client_connection_rate(proxies, workdir, web, cert):
    admin = free_port()
    p, port = start_http_proxy(
        proxies, workdir, web.port, cert, admin_port=admin,
        limits={"per_client": "{ connection_rate: { rate: 1/m, burst: 1 }, table_size: 16 }"})
    assert served(port, cert, "/one", source="127.0.0.1") == 404
    assert refused_at_accept(port, cert, source="127.0.0.1")
    assert served(port, cert, "/two", source="127.0.0.2") == 404
    assert metric(admin, "sidecar_connections_rejected_total", listener="web",
                  reason="client_connection_rate") == 1


# ---- config ----

# The limits line is line 14 of the generated file; columns point at the offending value or map.
@pytest.mark.parametrize("limits, where, message", [
    ("request_rate: { rate: 0/s }", ":14:29:", "a rate of 0 admits nothing"),
    ("request_rate: { rate: 10/s, burst: 0 }", ":14:42:", "out of range"),
    ("request_rate: { rate: ten }", ":14:29:", "invalid rate"),
    ("request_rate: { rate: 10/s, key: header }", ":14:21:", "key: header needs the header's name"),
    ("connection_rate: { burst: 5 }", ":14:24:", 'the required key "rate" is missing'),
    ("per_client: { table_size: 5 }", ":14:19:", "sets no limit"),
    ("upstream_concurrency: { queue: 5 }", ":14:29:", 'the required key "max" is missing'),
    ("upstream_concurrency: { max: 0 }", ":14:36:", "out of range"),
])
def test_check_config_rejects_nonsense(workdir, cert, limits, where, message):
    cfg = base_config(tls_listener("web", free_port(), 80, cert, protocol="http",
                                   extra=f"    limits:\n      {limits}"))
    path = workdir / "bad.yaml"
    path.write_text(cfg)
    r = run([str(BIN), "check-config", "-c", str(path)], timeout=30)
    assert r.returncode == 1, r.stdout
    assert where in r.stderr and message in r.stderr, (cfg, r.stderr)


@pytest.mark.parametrize("limits, message", [
    ("request_rate: { rate: 1/s }", "request limits need protocol: http"),
    ("upstream_concurrency: { max: 4 }", "upstream_concurrency needs protocol: http"),
])
def test_request_limits_on_tcp_listener_are_an_error(workdir, cert, limits, message):
    cfg = base_config(tls_listener("web", free_port(), 80, cert, protocol="tcp",
                                   extra=f"    limits:\n      {limits}"))
    path = workdir / "bad.yaml"
    path.write_text(cfg)
    r = run([str(BIN), "check-config", "-c", str(path)], timeout=30)
    assert r.returncode == 1
    assert message in r.stderr, r.stderr


# ---- upstream concurrency: queue, then 503 ----

class GatedApp:
    """An HTTP/1.1 app that records each request head and answers only when the test lets it:
    `release(n)` lets n more responses go, in arrival order."""

    def __init__(self):
        self.heads = []
        self.cond = threading.Condition()
        self.allowed = 0
        self.upstream = ScriptedUpstream(self._serve)
        self.port = self.upstream.port

    def _serve(self, conn):
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
            head, pending = pending.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1].decode()
            with self.cond:
                self.heads.append(path)
                self.cond.notify_all()
                if not self.cond.wait_for(lambda: self.allowed > 0, 30):
                    return
                self.allowed -= 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    def release(self, n=1):
        with self.cond:
            self.allowed += n
            self.cond.notify_all()

    def wait_heads(self, count, timeout=10.0):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.heads) >= count, timeout):
                raise TimeoutError(f"the app has {self.heads}, wanted {count} requests")
            return list(self.heads)

    def close(self):
        self.release(1000)
        self.upstream.close()


@pytest.fixture
def gated():
    a = GatedApp()
    yield a
    a.close()


def wait_metric(admin, name, value, timeout=10.0, **labels):
    deadline = time.monotonic() + timeout
    while (got := metric(admin, name, **labels)) != value:
        assert time.monotonic() < deadline, f"{name} stayed {got}, wanted {value}"
        time.sleep(0.02)  # a metric has no readiness to await


def test_upstream_cap_queues_in_order_then_503_and_drains(proxies, workdir, gated, cert):
    admin = free_port()
    p, port = start_http_proxy(
        proxies, workdir, gated.port, cert, admin_port=admin,
        limits={"upstream_concurrency": "{ max: 2, queue: 2, queue_timeout: 30s }"})
    clients = [Client(port, cert[0]) for _ in range(5)]
    for i, c in enumerate(clients[:2]):
        c.send(get(f"/run-{i}"))
    assert sorted(gated.wait_heads(2)) == ["/run-0", "/run-1"]
    for i, c in enumerate(clients[2:4], start=2):
        c.send(get(f"/wait-{i}"))
        wait_metric(admin, "sidecar_upstream_requests_queued", i - 1, listener="web")
    # The queue is full: the fifth is answered at once and never reaches the app.
    clients[4].send(get("/over"))
    r = clients[4].response()
    assert (r.status, r.reason) == (503, "Service Unavailable")
    assert r.header("Retry-After") == "30"
    assert r.header("Connection") is None  # the connection stays usable
    assert metric(admin, "sidecar_upstream_requests_in_flight", listener="web") == 2
    # One answer frees one slot: the oldest waiter goes next, the other still waits.
    gated.release(1)
    assert gated.wait_heads(3)[2] == "/wait-2"
    assert len(gated.heads) == 3
    gated.release(3)
    for c in clients[:4]:
        assert c.response().status == 200
    assert gated.wait_heads(4)[3] == "/wait-3"
    wait_metric(admin, "sidecar_upstream_requests_in_flight", 0, listener="web")
    assert metric(admin, "sidecar_upstream_requests_queued", listener="web") == 0
    assert metric(admin, "sidecar_http_requests_queued_total", listener="web") == 2
    assert metric(admin, "sidecar_http_requests_overloaded_total", listener="web") == 1
    # Drained: the refused client's next request goes straight through.
    gated.release(1)
    clients[4].send(get("/again"))
    assert clients[4].response().status == 200
    assert "/over" not in gated.heads
    for c in clients:
        c.close()
    p.access.wait_for('"/over"')
    over = [r for r in access_lines(p) if r["path"] == "/over"]
    assert over[0]["status"] == 503 and over[0]["local"] == "yes"


def test_upstream_queue_timeout_answers_503_and_keeps_the_connection(proxies, workdir, gated, cert):
    p, port = start_http_proxy(
        proxies, workdir, gated.port, cert,
        limits={"upstream_concurrency": "{ max: 1, queue: 5, queue_timeout: 300ms }"})
    a, b = Client(port, cert[0]), Client(port, cert[0])
    a.send(get("/holder"))
    gated.wait_heads(1)
    started = time.monotonic()
    # A request with a body: the body is discarded with it, not parsed as a request.
    b.send(b"POST /late HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n\r\nGET /x")
    r = b.response()
    waited = time.monotonic() - started
    assert (r.status, r.header("Retry-After")) == (503, "1")
    assert 0.25 <= waited < 5, waited
    gated.release(2)
    assert a.response().status == 200
    b.send(get("/after"))
    assert b.response().status == 200
    assert gated.wait_heads(2) == ["/holder", "/after"]
    a.close()
    b.close()


def test_idle_keepalive_connection_holds_no_slot(proxies, workdir, gated, cert):
    p, port = start_http_proxy(
        proxies, workdir, gated.port, cert,
        limits={"upstream_concurrency": "{ max: 1, queue: 0 }"})
    gated.release(3)
    a, b = Client(port, cert[0]), Client(port, cert[0])
    a.send(get("/a1"))
    assert a.response().status == 200
    # a stays open between requests; b is served at once, and a after it.
    b.send(get("/b1"))
    assert b.response().status == 200
    a.send(get("/a2"))
    assert a.response().status == 200
    assert gated.heads == ["/a1", "/b1", "/a2"]
    a.close()
    b.close()


def test_reload_raising_the_cap_lets_waiters_in(proxies, workdir, gated, cert):
    admin = free_port()
    limits = "{ max: 1, queue: 5, queue_timeout: 30s }"
    p, port = start_http_proxy(proxies, workdir, gated.port, cert, admin_port=admin,
                               limits={"upstream_concurrency": limits})
    a, b = Client(port, cert[0]), Client(port, cert[0])
    a.send(get("/first"))
    gated.wait_heads(1)
    b.send(get("/second"))
    wait_metric(admin, "sidecar_upstream_requests_queued", 1, listener="web")
    cfg = p.config_path.read_text().replace(limits, "{ max: 2, queue: 5, queue_timeout: 30s }")
    p.config_path.write_text(cfg)
    p.signal(signal.SIGHUP)
    # The waiter goes in without the first request finishing.
    assert gated.wait_heads(2) == ["/first", "/second"]
    gated.release(2)
    assert a.response().status == 200 and b.response().status == 200
    a.close()
    b.close()


def test_plain_http_listener_over_max_connections_answers_503(proxies, workdir, nginx):
    admin = free_port()
    port = free_port()
    cfg = base_config(f"""
  - name: plain
    listen: 127.0.0.1:{port}
    protocol: http
    upstream:
      address: 127.0.0.1:{nginx.port}
    limits:
      max_connections: 1
""", admin_port=admin)
    proxies(cfg, workdir).start()
    first = socket.create_connection(("127.0.0.1", port), timeout=10)
    first.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert first.recv(65536).startswith(b"HTTP/1.1 200")
    second = socket.create_connection(("127.0.0.1", port), timeout=10)
    second.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    answer = b""
    while chunk := second.recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
    assert b"Retry-After: 1\r\n" in answer and b"Connection: close\r\n" in answer
    assert metric(admin, "sidecar_connections_rejected_total", listener="plain",
                  reason="max_connections") == 1
    first.close()
    second.close()



def test_a_flood_of_refusals_logs_one_summary_line(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert,
                               limits={"request_rate": "{ rate: 1/m, burst: 1 }"})
    c = Client(port, cert[0])
    c.send(b"".join(get(f"/flood-{i}") for i in range(30)))
    statuses = [c.response().status for _ in range(30)]
    assert statuses == [404] + [429] * 29
    # One warning per listener and reason per interval (10 s), not one per request.
    line = json.loads(p.log.wait_for("refused by limits", timeout=20))
    assert (line["level"], line["listener"], line["reason"], line["count"]) == \
        ("warn", "web", "request_rate", 29)
    assert p.log.text().count("refused by limits") == 1
    c.close()


def test_path_prefix_rules_first_match_wins(proxies, workdir, web, cert):
    rules = ("\n        - { path_prefix: /api/, rate: 1/m, burst: 1 }"
             "\n        - { path_prefix: /, rate: 1/m, burst: 2, key: client }")
    p, port = start_http_proxy(proxies, workdir, web.port, cert, limits={"request_rate": rules})
    c = Client(port, cert[0])
    statuses = []
    for path in ("/api/a", "/api/b", "/x", "/y", "/z", "/api/c"):
        c.send(get(path))
        statuses.append(c.response().status)
    # /api/ has its own bucket of 1; the rest share the second rule's 2.
    assert statuses == [404, 429, 404, 404, 429, 429]
    c.close()


def test_a_client_that_keeps_hammering_is_closed(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert,
                               limits={"request_rate": "{ rate: 1/m, burst: 1 }"})
    c = Client(port, cert[0])
    c.send(b"".join(get(f"/h-{i}") for i in range(40)))
    responses = [c.response() for _ in range(33)]
    assert [r.status for r in responses] == [404] + [429] * 32
    assert all(r.header("Connection") is None for r in responses[1:32])
    # The 32nd refusal in a row ends the connection; nothing after it is answered.
    assert responses[32].header("Connection") == "close"
    assert c.closed_after()


def test_request_rules_must_share_one_header(workdir, cert):
    rules = ("\n        - { path_prefix: /a, rate: 1/s, key: header, header: X-A }"
             "\n        - { rate: 1/s, key: header, header: X-B }")
    cfg = base_config(tls_listener("web", free_port(), 80, cert, protocol="http",
                                   extra=f"    limits:\n      request_rate:{rules}"))
    path = workdir / "bad.yaml"
    path.write_text(cfg)
    r = run([str(BIN), "check-config", "-c", str(path)], timeout=30)
    assert r.returncode == 1
    assert "every rule of a listener keys by the same header (x-a)" in r.stderr, r.stderr
