"""HTTP mode (protocol: http) end to end: real clients (python ssl sockets for byte-level requests,
curl, wrk, h2load) through the real binary to a real nginx or to small scripted python upstreams."""
import json
import re
import select
import socket
import ssl
import threading
import time
import urllib.request

import pytest

from conftest import BIN, Nginx, ScriptedUpstream, base_config, free_port, run, tls_listener

# nginx locations used by these tests, on top of the stock ones in conftest.Nginx.
EXTRA_LOCATIONS = r"""
    location = /nocontent { return 204; }
    location = /conn { default_type text/plain; return 200 "conn=$connection\n"; }
    location = /chunked {
      default_type text/plain;
      chunked_transfer_encoding on;
      echo "line one";
      echo_flush;
      echo "line two";
    }
"""


@pytest.fixture
def web(workdir):
    n = Nginx(workdir, extra_server=EXTRA_LOCATIONS).start()
    yield n
    n.stop()


def section(name, values):
    """A listener sub-section at the listener's indentation: section("timeouts", {"header": "500ms"})."""
    if not values:
        return ""
    body = "".join(f"      {k}: {v}\n" for k, v in values.items())
    return f"    {name}:\n{body}"


def start_http_proxy(proxies, workdir, upstream_port, cert, timeouts=None, limits=None, http=None,
                     upstream_extra="", admin_port=None):
    port = free_port()
    extra = section("timeouts", timeouts) + section("limits", limits) + section("http", http)
    cfg = base_config(tls_listener("web", port, upstream_port, cert, protocol="http", extra=extra,
                                   upstream_extra=upstream_extra), admin_port=admin_port)
    p = proxies(cfg, workdir).start()
    return p, port


def curl(*args, timeout=30):
    return run(["curl", "-sS", "--max-time", str(timeout), *args], timeout=timeout + 10)


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[-1] if vals else None


class Client:
    """One TLS connection, byte-level: send exact request bytes, parse responses one by one."""

    def __init__(self, port, cafile, sni="localhost", timeout=10):
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=sni)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _recv(self):
        try:
            return self.sock.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError):
            return b""  # closed without close_notify: still the end of the stream

    def _fill(self):
        d = self._recv()
        if not d:
            raise EOFError(f"connection closed; unparsed: {self.buf[:200]!r}")
        self.buf += d

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n")
        out, self.buf = self.buf[:i], self.buf[i + 2:]
        return out

    def response(self, head_request=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n\r\n")
        head, self.buf = self.buf[:i].decode("latin-1"), self.buf[i + 4:]
        lines = head.split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", lines[0]
        headers = [tuple(s.strip() for s in line.split(":", 1)) for line in lines[1:]]
        r = Response(int(status), reason, headers, b"")
        if head_request or r.status in (204, 304) or r.status < 200:
            return r
        if (r.header("transfer-encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers
                        pass
                    break
                body += self._take(size)
                assert self._line() == b""
            r.body = body
        elif r.header("content-length") is not None:
            r.body = self._take(int(r.header("content-length")))
        else:
            r.body = self.read_to_eof()
        return r

    def read_to_eof(self):
        out, self.buf = self.buf, b""
        while True:
            d = self._recv()
            if not d:
                return out
            out += d

    def closed_after(self):
        """True when the server closes with nothing more to say."""
        return self.read_to_eof() == b""

    def close(self):
        self.sock.close()


def get(path, host="localhost", extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def wait_file_contains(path_fn, needle, timeout=10.0, count=1):
    """nginx writes its access log line right after the response: poll the file (nothing to await)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path_fn()
        if text.count(needle) >= count:
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} not in:\n{text[-2000:]}")
        time.sleep(0.02)


def sync_nginx_log(nginx, port, cert, tag):
    """A marker request on a fresh connection; once nginx has logged it, everything sent to nginx
    before it has been logged too (one worker, processed in order)."""
    c = Client(port, cert[0])
    c.send(get(f"/sync-{tag}"))
    assert c.response().status == 404
    c.close()
    return wait_file_contains(nginx.access_log, f"/sync-{tag}")


# ---- basic forwarding ----

def test_request_round_trip(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    r = curl("--cacert", str(cert[0]), "-i", f"https://localhost:{port}/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("HTTP/1.1 200"), r.stdout
    assert "hello from nginx" in r.stdout
    wait_file_contains(web.access_log, "GET / HTTP/1.1")


def test_x_forwarded_headers_replace_spoofed_ones(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(get("/headers", host="app.example", extra="X-Forwarded-For: 6.6.6.6\r\n"
               "X-Forwarded-Proto: gopher\r\nX-Forwarded-Host: evil.example\r\n"
               "Forwarded: for=6.6.6.6\r\nX-Forwarded-Client-Cert: Hash=evil\r\n"))
    r = c.response()
    assert r.status == 200
    body = r.body.decode()
    assert "xff=127.0.0.1\n" in body, body
    assert "xfp=https\n" in body
    assert "xfh=app.example\n" in body
    assert "fwd=\n" in body  # the spoofed Forwarded is removed too
    assert "xfcc=\n" in body
    assert "host=app.example\n" in body
    assert "6.6.6.6" not in body and "gopher" not in body and "evil" not in body


def test_forwarded_mode(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert, http={"forwarded": "forwarded"})
    c = Client(port, cert[0])
    c.send(get("/headers", host="app.example", extra="Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n"))
    r = c.response()
    assert r.status == 200
    body = r.body.decode()
    assert "fwd=for=127.0.0.1;proto=https;host=app.example\n" in body, body
    assert "xff=\n" in body and "xfp=\n" in body and "xfh=\n" in body
    assert "6.6.6.6" not in body


# ---- connection reuse and framing ----

def test_keep_alive_two_requests_one_upstream_connection(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(get("/conn"))
    first = c.response()
    c.send(get("/conn"))
    second = c.response()
    assert first.status == second.status == 200
    assert first.body.startswith(b"conn=") and first.body == second.body  # same nginx connection
    assert wait_file_contains(web.access_log, "GET /conn HTTP/1.1", count=2).count("/conn") == 2


def test_pipelining_three_requests_in_one_write(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(get("/small") + get("/") + get("/headers", host="third.example"))
    r1, r2, r3 = c.response(), c.response(), c.response()
    assert (r1.status, r1.body) == (200, b"ok\n")
    assert r2.status == 200 and b"hello from nginx" in r2.body
    assert r3.status == 200 and b"host=third.example\n" in r3.body


def test_head_response_has_no_body(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    r = c.response(head_request=True)
    assert r.status == 200 and int(r.header("content-length")) > 0
    c.send(get("/small"))  # a body leaking from HEAD would be read as this response
    r = c.response()
    assert (r.status, r.body) == (200, b"ok\n")


def test_204_then_next_request(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(get("/nocontent") + get("/small"))
    assert c.response().status == 204
    r = c.response()
    assert (r.status, r.body) == (200, b"ok\n")


def test_304_conditional_requests_then_next_request(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(get("/"))
    r = c.response()
    etag, modified = r.header("etag"), r.header("last-modified")
    assert r.status == 200 and etag and modified
    c.send(get("/", extra=f"If-None-Match: {etag}\r\n"))
    assert c.response().status == 304
    c.send(get("/", extra=f"If-Modified-Since: {modified}\r\n") + get("/small"))
    assert c.response().status == 304
    r = c.response()
    assert (r.status, r.body) == (200, b"ok\n")


def test_chunked_response(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(get("/chunked") + get("/small"))
    r = c.response()
    assert r.status == 200
    assert r.header("transfer-encoding").lower() == "chunked"
    assert r.body == b"line one\nline two\n"
    r = c.response()
    assert (r.status, r.body) == (200, b"ok\n")


# ---- refused requests: answered by the proxy, never reach the app ----

SMUGGLING = {
    "cl_te": (b"POST /smug-{t} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "duplicate_cl": (b"POST /smug-{t} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                     b"Content-Length: 6\r\n\r\nhello!", 400),
    "obs_fold": (b"GET /smug-{t} HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n  folded\r\n\r\n", 400),
    "bare_lf": (b"GET /smug-{t} HTTP/1.1\nHost: localhost\n\n", 400),
    "missing_host": (b"GET /smug-{t} HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400),
    "two_hosts": (b"GET /smug-{t} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "http2_request_line": (b"GET /smug-{t} HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
    "te_not_chunked": (b"POST /smug-{t} HTTP/1.1\r\nHost: localhost\r\n"
                       b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
}


def assert_refused_and_unseen(web, port, cert, tag, raw, status):
    c = Client(port, cert[0])
    c.send(raw.replace(b"{t}", tag.encode()) + get(f"/after-{tag}"))
    r = c.response()
    assert r.status == status, (r.status, r.body)
    assert (r.header("connection") or "").lower() == "close"
    assert c.closed_after()  # nothing of the pipelined request is answered either
    log = sync_nginx_log(web, port, cert, tag)
    assert f"/smug-{tag}" not in log and f"/after-{tag}" not in log, log


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_smuggling_attempts_refused(proxies, workdir, web, cert, case):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    raw, status = SMUGGLING[case]
    assert_refused_and_unseen(web, port, cert, case, raw, status)


def test_bad_chunk_size_refused(proxies, workdir, web, cert):
    # The head of a chunked request is forwarded before its body arrives (bodies are streamed),
    # so nginx may see an aborted upload; what must never reach it is a complete upload or the
    # request pipelined after the bad chunk.
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(b"PUT /upload/smug.txt HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"zz\r\nhello\r\n0\r\n\r\n" + get("/after-badchunk"))
    r = c.response()
    assert r.status == 400, (r.status, r.body)
    assert (r.header("connection") or "").lower() == "close"
    assert c.closed_after()
    log = sync_nginx_log(web, port, cert, "badchunk")
    assert "/after-badchunk" not in log
    assert not (web.root / "upload" / "smug.txt").exists()
    assert not re.search(r'"PUT /upload/smug.txt HTTP/1.1" 20[01]', log), log


def test_431_oversized_head(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert, limits={"max_header_bytes": 4096})
    c = Client(port, cert[0])
    c.send(get("/fits", extra="X-Pad: " + "a" * 3000 + "\r\n"))
    assert c.response().status == 404  # under the limit: reaches nginx
    raw = get("/smug-{t}", extra="X-Pad: " + "a" * 5000 + "\r\n")
    assert_refused_and_unseen(web, port, cert, "big", raw, 431)


def test_431_too_many_headers(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert, limits={"max_headers": 10})
    few = "".join(f"X-H{i}: v\r\n" for i in range(5))
    c = Client(port, cert[0])
    c.send(get("/fits", extra=few))
    assert c.response().status == 404
    many = "".join(f"X-H{i}: v\r\n" for i in range(20)).encode()
    raw = b"GET /smug-{t} HTTP/1.1\r\nHost: localhost\r\n" + many + b"\r\n"
    assert_refused_and_unseen(web, port, cert, "many", raw, 431)


# ---- timeouts and upstream failures ----

def test_408_header_timeout_while_bytes_trickle(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert, timeouts={"header": "500ms"})
    c = Client(port, cert[0])
    started = time.monotonic()
    c.send(b"GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    # One byte every 100 ms (each would reset an idle timer) until the answer starts arriving.
    # One thread only: an ssl socket must not be read and written concurrently.
    trickled = 0
    while c.buf == b"":
        assert time.monotonic() - started < 5, "no answer while the head trickled in"
        if select.select([c.sock], [], [], 0.1)[0]:
            c.sock.settimeout(0.0)
            try:
                c.buf += c._recv() or b"EOF"
            except ssl.SSLWantReadError:
                pass  # a record without application data (a TLS 1.3 session ticket)
            finally:
                c.sock.settimeout(10)
            continue
        c.send(b"a")
        trickled += 1
    assert trickled >= 3, trickled  # the bytes kept coming while the deadline ran out
    r = c.response()
    elapsed = time.monotonic() - started
    assert r.status == 408
    assert (r.header("connection") or "").lower() == "close"
    assert 0.4 <= elapsed < 5, elapsed
    assert "/slow" not in sync_nginx_log(web, port, cert, "trickle")


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        d = conn.recv(65536)
        if not d:
            return None, data
        data += d
    i = data.index(b"\r\n\r\n") + 4
    return data[:i], data[i:]


@pytest.fixture
def upstreams():
    made = []

    def make(handle):
        u = ScriptedUpstream(handle)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


def test_504_upstream_response_timeout(proxies, workdir, cert, upstreams):
    got = threading.Event()

    def silent(conn):
        head, _ = read_head(conn)
        if head:
            got.set()
        while conn.recv(65536):  # never answers
            pass

    up = upstreams(silent)
    p, port = start_http_proxy(proxies, workdir, up.port, cert, timeouts={"upstream_response": "500ms"})
    c = Client(port, cert[0])
    started = time.monotonic()
    c.send(get("/never"))
    r = c.response()
    assert r.status == 504
    assert (r.header("connection") or "").lower() == "close"
    assert 0.4 <= time.monotonic() - started < 5
    assert got.is_set()
    assert c.closed_after()
    line = json.loads(p.access.wait_for('"path":"/never"'))
    assert line["status"] == 504


def test_502_upstream_refused(proxies, workdir, cert):
    p, port = start_http_proxy(proxies, workdir, free_port(), cert)
    c = Client(port, cert[0])
    c.send(get("/"))
    r = c.response()
    assert r.status == 502
    assert (r.header("connection") or "").lower() == "close"
    assert c.closed_after()
    r = curl("--cacert", str(cert[0]), "-o", "/dev/null", "-w", "%{http_code}", f"https://localhost:{port}/")
    assert r.stdout == "502", r.stderr


@pytest.mark.parametrize("answer", [
    b"SPDY/9 banana\r\n\x00\x01garbage\r\n\r\n",
    # llhttp ends a status line at a bare CR; a client might read "OK\rContent-Length: 0" as one
    # line and then take the next response as this body. Such a head never reaches the client.
    b"HTTP/1.1 200 OK\r\rContent-Length: 0\r\n\r\nbanana",
], ids=["garbage", "bare-cr-status-line"])
def test_502_malformed_upstream_response(proxies, workdir, cert, upstreams, answer):
    def malformed(conn):
        read_head(conn)
        conn.sendall(answer)
        while conn.recv(65536):
            pass

    up = upstreams(malformed)
    p, port = start_http_proxy(proxies, workdir, up.port, cert)
    c = Client(port, cert[0])
    c.send(get("/malformed"))
    r = c.response()
    assert r.status == 502
    assert (r.header("connection") or "").lower() == "close"
    assert b"banana" not in r.body
    assert c.closed_after()


def test_1xx_forwarded_without_connection_fields_and_the_connection_goes_on(proxies, workdir, cert,
                                                                             upstreams):
    heads = []

    def early_hints(conn):
        while True:
            head, _ = read_head(conn)
            if not head:
                return
            heads.append(head)
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nConnection: close\r\nLink: </s.css>\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = upstreams(early_hints)
    p, port = start_http_proxy(proxies, workdir, up.port, cert)
    c = Client(port, cert[0])
    for _ in range(2):
        c.send(get("/hints"))
        hints = c.response()
        assert hints.status == 103
        assert hints.header("link") == "</s.css>"
        assert hints.header("connection") is None
        final = c.response()
        assert (final.status, final.body) == (200, b"ok")
    assert len(heads) == 2
    # An HTTP/1.0 client is sent no 1xx (HTTP/1.0 has none), only the final response.
    c10 = Client(port, cert[0])
    c10.send(b"GET /hints HTTP/1.0\r\nHost: localhost\r\n\r\n")
    raw = c10.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw
    assert b" 103 " not in raw


# ---- Upgrade ----

tunneled = []  # what upgrade_upstream received after its 101


def upgrade_upstream(conn):
    """101 then echo for an Upgrade request; a normal keep-alive 200 for /plain."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = conn.recv(65536)
            if not d:
                return
            buf += d
        i = buf.index(b"\r\n\r\n") + 4
        head, buf = buf[:i], buf[i:]
        if head.startswith(b"GET /ws "):
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            if buf:
                conn.sendall(buf)
            while True:
                d = conn.recv(65536)
                if not d:
                    return
                tunneled.append(d)
                conn.sendall(d)
        path = head.split(b" ")[1]
        body = b"plain " + path + b"\n"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


UPGRADE_HEADERS = "Connection: Upgrade\r\nUpgrade: websocket\r\n"


def test_upgrade_becomes_raw_tunnel(proxies, workdir, cert, upstreams):
    up = upstreams(upgrade_upstream)
    p, port = start_http_proxy(proxies, workdir, up.port, cert)
    c = Client(port, cert[0])
    c.send(get("/ws", extra=UPGRADE_HEADERS))
    r = c.response()
    assert r.status == 101
    assert r.header("upgrade").lower() == "websocket"
    # Not HTTP any more: bytes that would be refused as a request go through untouched.
    tunneled.clear()
    sent = b""
    for payload in (b"\x81\x05hello", b"GET nonsense\n\n\x00\xff", bytes(range(256)) * 400):
        c.send(payload)
        sent += payload
        assert c._take(len(payload)) == payload  # echoed by the app, through the proxy
    assert b"".join(tunneled) == sent  # the app got the raw bytes, not HTTP errors


def test_upgrade_refused_by_app_is_a_normal_response(proxies, workdir, cert, upstreams):
    up = upstreams(upgrade_upstream)
    p, port = start_http_proxy(proxies, workdir, up.port, cert)
    c = Client(port, cert[0])
    c.send(get("/plain-upgrade", extra=UPGRADE_HEADERS))
    r = c.response()
    assert (r.status, r.body) == (200, b"plain /plain-upgrade\n")
    c.send(get("/next"))  # still HTTP: the next request is parsed and answered
    r = c.response()
    assert (r.status, r.body) == (200, b"plain /next\n")


# ---- HTTP/2 (ALPN h2 tunneled to an h2c upstream) ----

# h2 is tunneled unparsed, so it is offered only on a listener that injects no headers.
NO_INJECTED_HEADERS = {"forwarded": "none", "client_cert_header": "false"}


@pytest.fixture
def h2_nginx(workdir):
    n = Nginx(workdir, http2=True).start()
    yield n
    n.stop()


def test_http2_negotiated_and_served(proxies, workdir, h2_nginx, cert):
    p, port = start_http_proxy(proxies, workdir, h2_nginx.port, cert, http=NO_INJECTED_HEADERS,
                               upstream_extra="      http2: true")
    r = curl("--http2", "--cacert", str(cert[0]), "-w", "\n%{http_version}", f"https://localhost:{port}/")
    assert r.returncode == 0, r.stderr
    body, version = r.stdout.rsplit("\n", 1)
    assert version == "2"
    assert "hello from nginx" in body
    wait_file_contains(h2_nginx.access_log, '"GET / HTTP/2.0"')


def test_h2load(proxies, workdir, h2_nginx, cert):
    p, port = start_http_proxy(proxies, workdir, h2_nginx.port, cert, http=NO_INJECTED_HEADERS,
                               upstream_extra="      http2: true")
    r = run(["h2load", "-n", "2000", "-c", "10", "-m", "10", f"https://localhost:{port}/small"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Application protocol: h2" in r.stdout, r.stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", r.stdout)
    assert m, r.stdout
    assert m.groups() == ("2000", "2000", "2000", "2000", "0", "0"), r.stdout
    assert re.search(r"status codes: 2000 2xx", r.stdout), r.stdout


@pytest.mark.parametrize("http", [{}, {"forwarded": "none"}, {"client_cert_header": "false"}],
                         ids=["defaults", "forwarded-none", "client_cert_header-false"])
def test_http2_refused_on_a_listener_that_injects_headers(workdir, cert, http):
    cfg = base_config(tls_listener("web", free_port(), free_port(), cert, protocol="http",
                                   extra=section("http", http), upstream_extra="      http2: true"))
    path = workdir / "h2.yaml"
    path.write_text(cfg)
    line = cfg.splitlines().index("      http2: true") + 1
    where = f"{path}:{line}:14: listeners[0].upstream.http2: h2 is tunneled to the app unparsed"
    forged = "a client's forged X-Forwarded-For, Forwarded or X-Forwarded-Client-Cert would reach the app"
    needed = [s for k, s in (("forwarded", "http.forwarded: none"),
                             ("client_cert_header", "http.client_cert_header: false")) if k not in http]
    for cmd in ("check-config", "run"):  # `run` exits before it starts
        r = run([str(BIN), cmd, "-c", str(path)], timeout=30)
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert where in r.stderr and forged in r.stderr, (cmd, r.stderr)
        assert "set " + " and ".join(needed) + ", or leave http2 off" in r.stderr, (cmd, r.stderr)
        assert "sidecar started" not in r.stderr


def test_without_http2_alpn_offers_only_http11(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    r = curl("--http2", "--cacert", str(cert[0]), "-w", "\n%{http_version}", f"https://localhost:{port}/")
    assert r.returncode == 0, r.stderr
    body, version = r.stdout.rsplit("\n", 1)
    assert version == "1.1"
    assert "hello from nginx" in body
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                assert s.selected_alpn_protocol() != "h2"
        except ssl.SSLError:
            pass  # refusing a client that offers only h2 is fine too


# ---- access log and metrics ----

def test_access_log_json_line_per_request(proxies, workdir, web, cert):
    p, port = start_http_proxy(proxies, workdir, web.port, cert)
    c = Client(port, cert[0])
    c.send(get("/small") + b"HEAD /missing HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert c.response().status == 200
    assert c.response(head_request=True).status == 404
    first = json.loads(p.access.wait_for('"path":"/small"'))
    second = json.loads(p.access.wait_for('"path":"/missing"'))
    assert first["type"] == "access" and first["listener"] == "web"
    assert (first["method"], first["status"]) == ("GET", 200)
    assert (second["method"], second["status"]) == ("HEAD", 404)
    assert first["bytes_out"] > len("ok\n") and first["bytes_in"] == len(get("/small"))
    assert first["duration_ms"] >= 0
    assert first["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert first["sni"] == "localhost"
    assert first["alpn"] == "http/1.1"
    assert first["client"] == "127.0.0.1"
    access_lines = [line for line in p.access.text().splitlines() if line.strip()]
    assert len(access_lines) == 2, access_lines
    for line in access_lines:
        json.loads(line)


def metric(admin_port, name, **labels):
    """The sum of the series of `name` whose labels include `labels`; 0 when the family has
    none (series appear once they move: status codes, for one)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10).read().decode()
    family = name
    for suffix in ("_count", "_sum", "_bucket"):
        if f"# TYPE {family} " not in text and family.endswith(suffix):
            family = family[:-len(suffix)]
    if f"# TYPE {family} " not in text:
        raise AssertionError(f"no {name} in:\n{text}")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_wrk_small_no_errors_and_metrics_match(proxies, workdir, web, cert):
    admin = free_port()
    p, port = start_http_proxy(proxies, workdir, web.port, cert, admin_port=admin)
    before = metric(admin, "sidecar_http_requests_total", code="200")
    r = run(["wrk", "-t2", "-c16", "-d2s", f"https://localhost:{port}/small"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Non-2xx" not in r.stdout, r.stdout
    assert "Socket errors" not in r.stdout, r.stdout
    done = int(re.search(r"(\d+) requests in", r.stdout).group(1))
    assert done > 100, r.stdout
    counted = metric(admin, "sidecar_http_requests_total", code="200") - before
    # wrk does not count the requests in flight when it stops (at most one per connection).
    assert done <= counted <= done + 16, (done, counted)
    assert metric(admin, "sidecar_http_requests_total", **{"class": "5xx"}) == 0
    assert metric(admin, "sidecar_http_requests_total", **{"class": "4xx"}) == 0
    # Every request has exactly one whole access line, also those written just before the drain
    # (access lines leave in batches, once per event-loop iteration).
    assert p.stop() == 0
    p.access.thread.join(timeout=10)
    lines = [json.loads(line) for line in p.access.text().splitlines() if line.strip()]
    assert counted <= len(lines) <= done + 16, (counted, len(lines))
    assert all(r["type"] == "access" and r["status"] == 200 and r["path"] == "/small" for r in lines)


def test_504_upstream_connect_timeout(proxies, workdir, cert):
    # A listener with a full accept queue: further SYNs are dropped, so connecting hangs.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(2):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(full.getsockname())
            fillers.append(f)
        p, port = start_http_proxy(proxies, workdir, full.getsockname()[1], cert,
                                   upstream_extra="      connect_timeout: 300ms")
        c = Client(port, cert[0])
        started = time.monotonic()
        c.send(get("/unreachable"))
        r = c.response()
        assert r.status == 504
        assert (r.header("connection") or "").lower() == "close"
        assert c.closed_after()
        assert time.monotonic() - started < 5
        p.log.wait_for("upstream connect timeout")
    finally:
        for f in fillers:
            f.close()
        full.close()
