"""HTTP/2 terminated by the proxy (http.http2): real h2 clients (curl --http2, h2load, nghttp, and
raw frames from a TLS socket for the abuse cases) through the real binary to an HTTP/1.1 nginx or
to small scripted upstreams. What the app received is read from nginx's access log and echo
locations."""
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import threading
import time

import pytest

from conftest import BIN, Nginx, ScriptedUpstream, base_config, free_port, run, stop_process, tls_listener
from test_mtls import SPIFFE_WEB, Pki, curl_mtls, headers_of, mtls_listener

# AddressSanitizer's allocator keeps freed memory in quarantine: RSS bounds hold for the normal
# build only.
SANITIZED = b"__asan_init" in BIN.read_bytes()

LOCATIONS = r"""
    location = /conn { default_type text/plain; return 200 "conn=$connection proto=$server_protocol\n"; }
    location = /echo-te { default_type text/plain; return 200 "te=$http_transfer_encoding cl=$http_content_length cookie=$http_cookie\n"; }
"""


@pytest.fixture(scope="module")
def h2_pki(session_dir):
    """A CA, a server certificate and one client certificate with a SPIFFE URI."""
    p = Pki(session_dir / "pki-h2")
    p.ca_crt, _ = p.ca("ca", "sidecar h2 test CA")
    p.server = p.leaf("server", "ca", "/CN=localhost", san="DNS:localhost,IP:127.0.0.1", eku="serverAuth")
    p.good = p.leaf("good", "ca", "/O=acme/CN=web", san=f"URI:{SPIFFE_WEB}")
    return p


@pytest.fixture
def web(workdir):
    n = Nginx(workdir, extra_server=LOCATIONS).start()
    big = n.root / "big.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    yield n
    n.stop()


def h2_listener(port, upstream_port, cert, http2="true", http="", limits="", timeouts=""):
    extra = f"    http:\n      http2: {http2}\n{http}"
    if limits:
        extra += f"    limits:\n{limits}"
    if timeouts:
        extra += f"    timeouts:\n{timeouts}"
    return tls_listener("h2", port, upstream_port, cert, protocol="http", extra=extra)


def start_h2(proxies, workdir, upstream_port, cert, **kw):
    port = free_port()
    p = proxies(base_config(h2_listener(port, upstream_port, cert, **kw)), workdir).start()
    return p, port


def curl(*args, timeout=30):
    return run(["curl", "-sS", "--max-time", str(timeout), *map(str, args)], timeout=timeout + 10)


def curl_h2(port, cert, path, *args, timeout=30):
    return curl("--http2", "--cacert", cert[0], *args, f"https://localhost:{port}{path}", timeout=timeout)


def access_record(proxy, path):
    """The access record of the request for `path` (the proxy writes it once the stream is done)."""
    return json.loads(proxy.access.wait_for(f'"path":"{path}"'))


# ---- raw frames, for what no well-behaved client sends ----

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """An HPACK literal header field without indexing, new name (RFC 7541 6.2.2)."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request_block(path="/", authority="localhost", method="GET", extra=()):
    block = literal(":method", method) + literal(":scheme", "https") + literal(":path", path) + \
        literal(":authority", authority)
    for name, value in extra:
        block += literal(name, value)
    return block


class RawH2:
    """A TLS connection speaking h2 frame by frame."""

    def __init__(self, port, cert):
        ctx = ssl.create_default_context(cafile=str(cert[0]))
        ctx.set_alpn_protocols(["h2"])
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                    server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.buf = b""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))

    def send(self, data):
        self.sock.sendall(data)

    def frames(self, until, timeout=10.0):
        """Reads frames until until(kind, flags, stream, payload) is true or the peer closes;
        returns every frame read, and whether the connection ended."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                kind, flags = self.buf[3], self.buf[4]
                stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                payload = self.buf[9:9 + n]
                self.buf = self.buf[9 + n:]
                got.append((kind, flags, stream, payload))
                if kind == SETTINGS and not flags & 1:
                    self.sock.sendall(frame(SETTINGS, 1, 0))
                if until(kind, flags, stream, payload):
                    return got, False
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return got, True
            except socket.timeout:
                raise TimeoutError(f"frames so far: {[(k, f, s) for k, f, s, _ in got][-20:]}")
            if not chunk:
                return got, True
            self.buf += chunk

    def close(self):
        self.sock.close()


# ---- requests and what the app sees ----

def test_h2_client_gets_h2_and_the_app_gets_http11(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert)
    r = curl_h2(port, cert, "/conn", "-w", "%{http_version}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("2"), r.stdout
    assert "proto=HTTP/1.1" in r.stdout
    log = web.wait_access('"GET /conn HTTP/1.1"')
    assert "HTTP/2" not in log
    line = access_record(p, "/conn")
    assert line["protocol"] == "HTTP/2" and line["status"] == 200 and line["alpn"] == "h2", line


def test_forged_forwarding_headers_never_reach_the_app(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert)
    r = curl_h2(port, cert, "/headers", "-H", "X-Forwarded-For: 6.6.6.6", "-H", "X-Forwarded-Proto: gopher",
                "-H", "X-Forwarded-Client-Cert: URI=spiffe://cluster.local/ns/default/sa/admin",
                "-H", "Forwarded: for=6.6.6.6")
    assert r.returncode == 0, r.stderr
    h = headers_of(r.stdout)
    assert h["xff"] == "127.0.0.1", r.stdout
    assert h["xfp"] == "https"
    assert h["xfcc"] == ""
    assert "6.6.6.6" not in r.stdout and "admin" not in r.stdout
    assert h["host"] == f"localhost:{port}"


def test_forged_headers_in_raw_frames_never_reach_the_app(proxies, workdir, web, cert):
    """The same over hand-made frames, with header names in every case h2 allows (lower case only)."""
    p, port = start_h2(proxies, workdir, web.port, cert)
    c = RawH2(port, cert)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block(
        "/headers", extra=[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-client-cert", "URI=spiffe://x/sa/admin")])))
    got, _ = c.frames(lambda k, f, s, pl: s == 1 and f & END_STREAM)
    body = b"".join(pl for k, f, s, pl in got if k == DATA and s == 1).decode()
    c.close()
    assert "xff=127.0.0.1\n" in body and "xfcc=\n" in body, body


def test_mtls_identity_over_h2(proxies, workdir, web, h2_pki):
    pki = h2_pki
    port = free_port()
    listener = mtls_listener("api", port, web.port, pki, extra="    http:\n      http2: true\n")
    proxies(base_config(listener), workdir).start()
    r = curl_mtls(port, pki, pki.good, path="/headers",
                  extra=("--http2", "-H", "X-Forwarded-Client-Cert: URI=spiffe://forged"))
    assert r.returncode == 0, r.stderr
    fields = dict(f.split("=", 1) for f in headers_of(r.stdout)["xfcc"].split(";"))
    assert fields["URI"] == SPIFFE_WEB and fields["Hash"] == pki.der_sha256(pki.good[0])
    assert "forged" not in r.stdout


def test_bodies_both_ways_with_and_without_length(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert)
    src = workdir / "up.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    # With a length (curl sends content-length), then streamed from stdin (no length: chunked to the app).
    r = curl_h2(port, cert, "/upload/a.bin", "-T", src, "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == "201", (r.stdout, r.stderr)
    with open(src, "rb") as f:
        r2 = run(["curl", "-sS", "--http2", "--cacert", str(cert[0]), "-T", "-", "-o", "/dev/null",
                  "-w", "%{http_code}", f"https://localhost:{port}/upload/b.bin"], stdin=f, text=True, timeout=60)
    assert r2.stdout == "201", (r2.stdout, r2.stderr)
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    for name in ("a.bin", "b.bin"):
        assert hashlib.sha256((web.root / "upload" / name).read_bytes()).hexdigest() == want
    r = curl_h2(port, cert, "/big.bin", "-o", workdir / "down.bin")
    assert r.returncode == 0, r.stderr
    assert (workdir / "down.bin").read_bytes() == (web.root / "big.bin").read_bytes()


def test_cookies_are_joined_for_the_app(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert)
    c = RawH2(port, cert)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                 request_block("/echo-te", extra=[("cookie", "a=1"), ("cookie", "b=2")])))
    got, _ = c.frames(lambda k, f, s, pl: s == 1 and f & END_STREAM)
    c.close()
    body = b"".join(pl for k, f, s, pl in got if k == DATA).decode()
    assert "cookie=a=1; b=2" in body, body


def test_h2load_many_streams_reuse_app_connections(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert)
    r = run(["h2load", "-n", "3000", "-c", "4", "-m", "8", f"https://localhost:{port}/small"], timeout=120)
    assert "Application protocol: h2" in r.stdout, r.stdout
    assert "3000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout
    assert "status codes: 3000 2xx" in r.stdout, r.stdout
    web.wait_access('"GET /small HTTP/1.1"', count=3000)
    # Every stream has its access record, and the streams rode pooled keep-alive app connections:
    # nginx numbers its connections, and it saw far fewer than one per request.
    p.access.wait_for('"path":"/small"', timeout=10)
    deadline = time.monotonic() + 10
    while p.access.count() < 3000 and time.monotonic() < deadline:
        time.sleep(0.05)  # records are written as streams finish; the count has no notification
    records = [json.loads(line) for line in p.access.text().splitlines() if '"path":"/small"' in line]
    assert len(records) == 3000 and all(r["protocol"] == "HTTP/2" and r["status"] == 200 for r in records)
    r = curl_h2(port, cert, "/conn")
    first_conn = int(r.stdout.split("conn=")[1].split()[0])
    assert first_conn < 3000 // 4, r.stdout


def keep_alive_app(answer):
    """A scripted app serving body-less requests on keep-alive connections: answer(head) gives the
    response bytes, or None to leave that request unanswered."""
    def app(c):
        buf = b""
        while True:
            data = c.recv(65536)
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                response = answer(head)
                if response is not None:
                    c.sendall(response)
    return app


def test_streams_are_independent(proxies, workdir, cert):
    """A slow stream does not hold up another on the same connection."""
    release = threading.Event()

    def answer(head):
        if b"GET /slow" in head:
            release.wait(20)
        body = b"slow\n" if b"GET /slow" in head else b"fast\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    up = ScriptedUpstream(keep_alive_app(answer))
    try:
        p, port = start_h2(proxies, workdir, up.port, cert)
        c = RawH2(port, cert)
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block("/slow")))
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, request_block("/fast")))
        got, _ = c.frames(lambda k, f, s, pl: s == 3 and f & END_STREAM)
        assert not any(s == 1 and k == DATA for k, f, s, _ in got)
        release.set()
        got, _ = c.frames(lambda k, f, s, pl: s == 1 and f & END_STREAM)
        assert b"slow" in b"".join(pl for k, f, s, pl in got if k == DATA and s == 1)
        c.close()
    finally:
        release.set()
        up.close()


# ---- an h2c app (upstream.http2): streams multiplexed onto one app connection ----

H2C_LOCATIONS = r"""
    location = /grpc {
      default_type application/grpc;
      add_trailer grpc-status 0 always;
      add_trailer grpc-message "all good" always;
      echo_read_request_body;
      echo -n "reply";
    }
    location = /h2c-headers {
      default_type text/plain;
      return 200 "xff=$http_x_forwarded_for xfcc=$http_x_forwarded_client_cert te=$http_te ct=$http_content_type proto=$server_protocol\n";
    }
"""


@pytest.fixture
def h2c_app(workdir):
    n = Nginx(workdir, http2=True, extra_server=H2C_LOCATIONS).start()
    yield n
    n.stop()


def start_h2c(proxies, workdir, app, cert):
    port = free_port()
    listener = tls_listener("h2", port, app.port, cert, protocol="http", upstream_extra="      http2: true",
                            extra="    http:\n      http2: true\n")
    return proxies(base_config(listener), workdir).start(), port


def test_h2c_app_gets_rewritten_streams(proxies, workdir, h2c_app, cert):
    p, port = start_h2c(proxies, workdir, h2c_app, cert)
    r = curl_h2(port, cert, "/h2c-headers", "-H", "X-Forwarded-For: 6.6.6.6",
                "-H", "X-Forwarded-Client-Cert: URI=spiffe://forged")
    assert r.returncode == 0, r.stderr
    assert "xff=127.0.0.1 xfcc= " in r.stdout and "proto=HTTP/2.0" in r.stdout, r.stdout
    h2c_app.wait_access('"GET /h2c-headers HTTP/2.0"')
    assert access_record(p, "/h2c-headers")["protocol"] == "HTTP/2"


def test_http11_client_of_an_h2c_app(proxies, workdir, h2c_app, cert):
    """An HTTP/1.1 client on the same listener reaches the h2c app too: its keep-alive requests,
    one after another, are h2 streams on its own app connection, trailers included."""
    p, port = start_h2c(proxies, workdir, h2c_app, cert)
    url = f"https://localhost:{port}"
    r = curl("--http1.1", "--cacert", cert[0], "-H", "X-Forwarded-For: 6.6.6.6",
             f"{url}/h2c-headers", f"{url}/small", f"{url}/h2c-headers")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("xff=127.0.0.1 xfcc= ") == 2 and "proto=HTTP/2.0" in r.stdout, r.stdout
    assert "ok\n" in r.stdout
    h2c_app.wait_access('"GET /h2c-headers HTTP/2.0"', count=2)
    record = access_record(p, "/small")
    assert record["protocol"] == "HTTP/1.1" and record["status"] == 200
    body = workdir / "grpc.bin"
    body.write_bytes(b"\x00\x00\x00\x00\x05hello")
    r = curl("--http1.1", "--cacert", cert[0], "-H", "TE: trailers", "-H", "Content-Type: application/grpc",
             "--data-binary", f"@{body}", "--raw", "-i", f"{url}/grpc")
    # The h2c app's trailers reach an HTTP/1.1 client as chunked trailer fields.
    assert "transfer-encoding: chunked" in r.stdout.lower(), r.stdout
    assert "grpc-status: 0" in r.stdout, r.stdout


def test_grpc_style_request_with_trailers_through_h2c(proxies, workdir, h2c_app, cert):
    p, port = start_h2c(proxies, workdir, h2c_app, cert)
    body = workdir / "grpc.bin"
    body.write_bytes(b"\x00\x00\x00\x00\x05hello")
    r = run(["nghttp", "-v", "-H", ":method: POST", "-H", "content-type: application/grpc", "-H", "te: trailers",
             "-d", str(body), f"https://localhost:{port}/grpc"], timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # The response: status, DATA, then a trailing HEADERS that ends the stream.
    assert "recv (stream_id=13) :status: 200" in out, out
    tail = out[out.index("recv DATA frame"):]
    assert "grpc-status: 0" in tail and "grpc-message: all good" in tail, out
    assert re.search(r"recv HEADERS frame <length=\d+, flags=0x05, stream_id=13>", tail), out
    h2c_app.wait_access('"POST /grpc HTTP/2.0" 200')


def test_h2c_many_streams_share_one_app_connection(proxies, workdir, h2c_app, cert):
    p, port = start_h2c(proxies, workdir, h2c_app, cert)
    r = run(["h2load", "-n", "2000", "-c", "2", "-m", "20", f"https://localhost:{port}/small"], timeout=120)
    assert "2000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout
    log = h2c_app.wait_access('"GET /small HTTP/2.0"', count=2000)
    assert log.count("GET /small HTTP/2.0") == 2000


def test_h2c_app_down_gives_502(proxies, workdir, cert):
    dead = free_port()
    port = free_port()
    listener = tls_listener("h2", port, dead, cert, protocol="http", upstream_extra="      http2: true",
                            extra="    http:\n      http2: true\n")
    proxies(base_config(listener), workdir).start()
    r = curl_h2(port, cert, "/x", "-w", "%{http_code}", "-o", "/dev/null")
    assert r.stdout == "502", (r.stdout, r.stderr)


# ---- limits, timeouts and failures per stream ----

def test_header_list_over_the_limit_gets_431(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert, limits="      max_header_bytes: 4096\n")
    r = curl_h2(port, cert, "/small", "-H", "X-Big: " + "a" * 8000, "-w", "%{http_code}", "-o", "/dev/null")
    assert r.stdout == "431", (r.stdout, r.stderr)
    r = curl_h2(port, cert, "/small", "-w", "%{http_code}", "-o", "/dev/null")
    assert r.stdout == "200"
    web.wait_access('"GET /small HTTP/1.1"')
    assert "X-Big" not in web.access_log() and web.access_log().count("GET /small") == 1


def test_upstream_response_timeout_is_504_and_other_streams_go_on(proxies, workdir, cert):
    def answer(head):
        return None if b"GET /never" in head else b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"

    up = ScriptedUpstream(keep_alive_app(answer))
    try:
        p, port = start_h2(proxies, workdir, up.port, cert, timeouts="      upstream_response: 500ms\n")
        c = RawH2(port, cert)
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block("/never")))
        got, _ = c.frames(lambda k, f, s, pl: s == 1 and k == HEADERS)
        status = [pl for k, f, s, pl in got if k == HEADERS and s == 1][0]
        # :status 504 arrives as a literal or an indexed field; the digits are there either way.
        assert b"504" in status
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, request_block("/ok")))
        got, closed = c.frames(lambda k, f, s, pl: s == 3 and f & END_STREAM)
        assert not closed
        c.close()
        line = access_record(p, "/never")
        assert line["status"] == 504 and line["protocol"] == "HTTP/2"
    finally:
        up.close()


def test_request_rate_answers_429_per_stream(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert,
                       limits="      request_rate: { rate: 1/m, burst: 3, key: client }\n")
    r = run(["h2load", "-n", "10", "-c", "1", "-m", "1", f"https://localhost:{port}/small"], timeout=60)
    assert "status codes: 3 2xx, 0 3xx, 7 4xx" in r.stdout, r.stdout
    web.wait_access('"GET /small HTTP/1.1"', count=3)
    assert web.access_log().count("GET /small") == 3
    refused = json.loads(p.access.wait_for('"status":429'))
    assert refused["reason"] == "rate_limited" and refused["protocol"] == "HTTP/2"


def test_app_down_gives_502_per_stream(proxies, workdir, cert):
    dead = free_port()
    p, port = start_h2(proxies, workdir, dead, cert)
    r = curl_h2(port, cert, "/x", "-w", "%{http_code} %{http_version}", "-o", "/dev/null")
    assert r.stdout == "502 2", (r.stdout, r.stderr)


def test_idle_connection_gets_goaway_then_close(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert, timeouts="      idle: 500ms\n")
    c = RawH2(port, cert)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block("/small")))
    c.frames(lambda k, f, s, pl: s == 1 and f & END_STREAM)
    started = time.monotonic()
    got, closed = c.frames(lambda k, f, s, pl: False, timeout=10)
    waited = time.monotonic() - started
    c.close()
    goaway = [pl for k, f, s, pl in got if k == GOAWAY]
    assert closed and goaway, got
    assert struct.unpack(">I", goaway[0][:4])[0] == 1  # the last stream it processed
    assert struct.unpack(">I", goaway[0][4:8])[0] == 0  # NO_ERROR
    assert 0.4 < waited < 5, waited


# ---- abuse: rapid reset, CONTINUATION flood, a client that stops reading ----

def test_rapid_reset_is_cut_off(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert)
    c = RawH2(port, cert)
    burst = b""
    for i in range(2000):
        stream = 2 * i + 1
        burst += frame(HEADERS, END_HEADERS | END_STREAM, stream, request_block("/small")) + \
            frame(RST_STREAM, 0, stream, struct.pack(">I", 8))
    try:
        c.send(burst)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    got, closed = c.frames(lambda k, f, s, pl: k == GOAWAY, timeout=20)
    goaway = [pl for k, f, s, pl in got if k == GOAWAY]
    assert goaway, got[-5:]
    assert struct.unpack(">I", goaway[0][4:8])[0] == 0xB  # ENHANCE_YOUR_CALM
    c.close()
    # The app saw far fewer requests than were opened, and the proxy still serves.
    assert curl_h2(port, cert, "/small", "-w", "%{http_code}", "-o", "/dev/null").stdout == "200"
    assert web.access_log().count("GET /small") < 1000


def test_continuation_flood_is_bounded(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert)
    c = RawH2(port, cert)
    c.send(frame(HEADERS, 0, 1, request_block("/small")))
    sent = 0
    closed = False
    try:
        for _ in range(20000):
            c.send(frame(CONTINUATION, 0, 1, literal("x-flood", "y" * 100)))
            sent += 1
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
        closed = True
    refused = closed
    if not closed:
        got, closed = c.frames(lambda k, f, s, pl: k == GOAWAY or (k == RST_STREAM and s == 1) or
                               (k == HEADERS and s == 1), timeout=20)
        # The header block is refused (GOAWAY, RST_STREAM, or a 431 answer), never forwarded.
        refused = closed or any(k in (GOAWAY, RST_STREAM) or (k == HEADERS and s == 1 and b"431" in pl)
                                for k, f, s, pl in got)
    c.close()
    assert refused
    assert "x-flood" not in web.access_log()
    pid = p.proc.pid
    rss_kb = int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0])
    assert SANITIZED or rss_kb < 64 * 1024, rss_kb
    assert curl_h2(port, cert, "/small", "-w", "%{http_code}", "-o", "/dev/null").stdout == "200"


def test_client_that_stops_reading_holds_bounded_memory(proxies, workdir, web, cert):
    p, port = start_h2(proxies, workdir, web.port, cert)
    pid = p.proc.pid

    def rss():
        return int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0])

    before = rss()
    clients = []
    for _ in range(20):
        c = RawH2(port, cert)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        # A huge window so that only the socket stops the proxy, then several big downloads.
        c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))
        for i in range(4):
            c.send(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, request_block("/big.bin")))
        clients.append(c)
    # Wait until the proxy has read what it will read: its RSS stops moving.
    last, stable_since = rss(), time.monotonic()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and time.monotonic() - stable_since < 1.0:
        time.sleep(0.1)  # RSS has no change notification
        now = rss()
        if abs(now - last) > 64:
            last, stable_since = now, time.monotonic()
    grown = rss() - before
    for c in clients:
        c.close()
    # 80 streams of 8 MB each (640 MB): the proxy holds a bounded amount per connection (its
    # streams' buffers, at most 128 KiB together, a read, what is queued for the client, the TLS
    # session and the streams' codecs), not the files.
    assert SANITIZED or grown < 20 * 512, f"RSS grew {grown} KiB for 20 stalled connections"


def test_drain_lets_streams_in_flight_finish(proxies, workdir, cert):
    release = threading.Event()

    def app(c):
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = c.recv(65536)
            if not data:
                return
            buf += data
        release.wait(20)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlate\n")

    up = ScriptedUpstream(app)
    try:
        p, port = start_h2(proxies, workdir, up.port, cert)
        c = RawH2(port, cert)
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block("/slow")))
        deadline = time.monotonic() + 10
        while not up.conns and time.monotonic() < deadline:
            time.sleep(0.01)  # the app's accept has no outside notification
        p.signal(signal.SIGTERM)
        got, _ = c.frames(lambda k, f, s, pl: k == GOAWAY)
        release.set()
        got, closed = c.frames(lambda k, f, s, pl: s == 1 and f & END_STREAM)
        assert b"late" in b"".join(pl for k, f, s, pl in got if k == DATA and s == 1)
        c.close()
        assert p.wait_exit(timeout=15) == 0
    finally:
        release.set()
        up.close()


# ---- configuration ----

def test_check_config_refuses_http2_on_a_plain_listener(workdir, bin_path):
    port = free_port()
    cfg = workdir / "h2.yaml"
    cfg.write_text(base_config(f"""
  - name: plain
    listen: 127.0.0.1:{port}
    protocol: http
    upstream:
      address: 127.0.0.1:{free_port()}
    http:
      http2: true
"""))
    r = run([str(bin_path), "check-config", "-c", str(cfg)])
    assert r.returncode != 0
    assert "listeners[0].http.http2: http2 needs a TLS listener" in r.stderr, r.stderr
