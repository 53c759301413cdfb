"""Request lines the proxy refuses itself: other protocols that llhttp also parses (RTSP, ICE),
HTTP versions other than 1.0/1.1, and request-targets outside RFC 9112 section 3.2. Raw bytes over
TLS to the real binary; a scripted app records every byte it receives, so a refused request that
reached it would show."""
import json
import threading

import pytest

from conftest import ScriptedUpstream
from test_http import Client, get, start_http_proxy

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class RecordingApp:
    """Answers every request head with 200 and keeps all the bytes it was sent, in order."""

    def __init__(self):
        self.received = b""
        self.cond = threading.Condition()
        self.upstream = ScriptedUpstream(self._serve)
        self.port = self.upstream.port

    def _serve(self, conn):
        pending = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            with self.cond:
                self.received += data
                self.cond.notify_all()
            pending += data
            while b"\r\n\r\n" in pending:  # the requests sent here have no body
                pending = pending[pending.index(b"\r\n\r\n") + 4:]
                conn.sendall(OK)

    def wait_for(self, needle, timeout=10.0):
        with self.cond:
            if not self.cond.wait_for(lambda: needle in self.received, timeout):
                raise TimeoutError(f"the app never received {needle!r}; got {self.received!r}")
            return self.received

    def close(self):
        self.upstream.close()


@pytest.fixture
def app():
    a = RecordingApp()
    yield a
    a.close()


def sync(app, port, cert, tag):
    """A marker request on a fresh connection; once the app has it, a request forwarded before it
    would have arrived too. Returns everything the app received."""
    c = Client(port, cert[0])
    c.send(get(f"/sync-{tag}"))
    assert c.response().status == 200
    c.close()
    return app.wait_for(f"/sync-{tag}".encode())


def forwarded(path):
    """The request line the app receives for get(path) and the sync requests."""
    return f"GET {path} HTTP/1.1\r\n".encode()


REFUSED = {
    # other protocols llhttp parses
    "rtsp": (b"DESCRIBE /t-{t} RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400),
    "rtsp_version_with_get": (b"GET /t-{t} RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400),
    "rtsp_method_with_http": (b"SETUP /t-{t} HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "ice": (b"SOURCE /t-{t} ICE/1.0\r\nContent-Type: audio/mpeg\r\n\r\n", 400),
    "ice_method_with_http": (b"SOURCE /t-{t} HTTP/1.0\r\n\r\n", 400),
    "ice_version_with_get": (b"GET /t-{t} ICE/1.0\r\n\r\n", 400),
    # versions
    "http_0_9_version": (b"GET /t-{t} HTTP/0.9\r\nHost: localhost\r\n\r\n", 505),
    "http_1_2": (b"GET /t-{t} HTTP/1.2\r\nHost: localhost\r\n\r\n", 505),
    "http_3_0": (b"GET /t-{t} HTTP/3.0\r\nHost: localhost\r\n\r\n", 505),
    "http_0_9_request": (b"GET /t-{t}\r\n\r\n", 400),
    # request-targets
    "fragment": (b"GET /t-{t}#frag HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "fragment_in_absolute_form": (b"GET http://localhost/t-{t}#f HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "backslash": (b"GET /t-{t}/..\\..\\etc HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "braces_in_query": (b"GET /t-{t}?q={x} HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "quote_and_angles": (b"GET /t-{t}?q=\"<a>\" HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "bad_percent": (b"GET /t-{t}%zz HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "utf8_in_query": (b"GET /t-{t}?q=\xc3\xa9 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "asterisk_with_get": (b"GET * HTTP/1.1\r\nHost: localhost\r\nX-Tag: t-{t}\r\n\r\n", 400),
    "connect_with_origin_form": (b"CONNECT /t-{t} HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    # CONNECT with its authority-form is a tunnel request, which the proxy does not offer
    "connect": (b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\nX-Tag: t-{t}\r\n\r\n", 501),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_and_never_reaches_the_app(proxies, workdir, app, cert, case):
    p, port = start_http_proxy(proxies, workdir, app.port, cert)
    raw, status = REFUSED[case]
    c = Client(port, cert[0])
    c.send(raw.replace(b"{t}", case.encode()) + get(f"/after-{case}"))
    r = c.response()
    assert r.status == status, (r.status, r.body)
    assert (r.header("connection") or "").lower() == "close"
    assert c.closed_after()  # the request pipelined after it is not answered either
    received = sync(app, port, cert, case)
    assert received.startswith(forwarded(f"/sync-{case}")), received  # and nothing else:
    assert received.count(b"\r\n\r\n") == 1, received
    logged = json.loads(p.access.wait_for(f'"status":{status}'))
    assert logged["status"] == status


def test_refused_behind_pipelined_requests_after_their_responses(proxies, workdir, app, cert):
    p, port = start_http_proxy(proxies, workdir, app.port, cert)
    c = Client(port, cert[0])
    c.send(get("/first") + get("/second") + b"GET /third#frag HTTP/1.1\r\nHost: localhost\r\n\r\n"
           + get("/fourth"))
    assert [c.response().status for _ in range(3)] == [200, 200, 400]
    assert c.closed_after()
    received = sync(app, port, cert, "pipelined")
    assert received.count(b"GET ") == 3
    assert forwarded("/first") in received and forwarded("/second") in received
    assert b"/third" not in received and b"/fourth" not in received


def test_refused_when_the_request_line_ends(proxies, workdir, app, cert):
    # No header follows and the header timeout is long: the answer comes from the line alone.
    p, port = start_http_proxy(proxies, workdir, app.port, cert, timeouts={"header": "60s"})
    c = Client(port, cert[0], timeout=10)
    c.send(b"DESCRIBE rtsp://localhost/stream RTSP/1.0\r\n")
    r = c.response()
    assert r.status == 400
    assert c.closed_after()
    logged = json.loads(p.access.wait_for('"status":400'))
    assert (logged["method"], logged["path"]) == ("DESCRIBE", "rtsp://localhost/stream")
    assert app.received == b""


def test_accepted_target_forms_are_forwarded_as_sent(proxies, workdir, app, cert):
    p, port = start_http_proxy(proxies, workdir, app.port, cert)
    lines = [
        b"OPTIONS * HTTP/1.1",
        b"GET http://localhost:8080/p?q=1 HTTP/1.1",
        b"GET http://[::1]/v6 HTTP/1.1",
        b"GET /a;b=c,d!$&'()*+:@-._~/%2F?x=/?y HTTP/1.1",
        b"GET /old HTTP/1.0",
    ]
    c = Client(port, cert[0])
    for line in lines:
        c.send(line + b"\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        assert c.response().status == 200
        assert line + b"\r\n" in app.wait_for(line + b"\r\n")
