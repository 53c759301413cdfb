"""Rate limits end to end: the real binary, nginx as the app, real TLS clients from two source
addresses. Connections over a limit are closed at accept (no handshake) and counted by reason;
requests over a limit get 429 with Retry-After, never reach nginx, and leave the connection usable."""
import json
import socket
import ssl
import time

import pytest

from conftest import BIN, Nginx, base_config, free_port, run, tls_listener
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
])
def test_check_config_rejects_nonsense(workdir, cert, limits, where, message):
    cfg = base_config(tls_listener("web", free_port(), 80, cert, protocol="http",
                                   extra=f"    limits:\n      {limits}"))
    path = workdir / "bad.yaml"
    path.write_text(cfg)
    r = run([str(BIN), "check-config", "-c", str(path)], timeout=30)
    assert r.returncode == 1, r.stdout
    assert where in r.stderr and message in r.stderr, (cfg, r.stderr)


def test_request_rate_on_tcp_listener_is_an_error(workdir, cert):
    cfg = base_config(tls_listener("web", free_port(), 80, cert, protocol="tcp",
                                   extra="    limits:\n      request_rate: { rate: 1/s }"))
    path = workdir / "bad.yaml"
    path.write_text(cfg)
    r = run([str(BIN), "check-config", "-c", str(path)], timeout=30)
    assert r.returncode == 1
    assert "request limits need protocol: http" in r.stderr, r.stderr
