"""Logs never stall the proxy, and every line parses: the real binary with stdout a pipe nobody
reads, nginx behind it, and clients that put hostile bytes into the TLS server name and the path."""
import fcntl
import http.client
import json
import os
import pty
import re
import ssl
import subprocess
import threading
import time
import urllib.request

from conftest import BIN, base_config, free_port, run, stop_process, tls_listener


class RawLines:
    """Reads a stream's raw bytes in a thread, so that a test can check them byte for byte."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.closed = False
        self.tail = b""
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        while True:
            chunk = stream.read1(1 << 16)
            with self.cond:
                if not chunk:
                    self.closed = True
                    self.cond.notify_all()
                    return
                *whole, self.tail = (self.tail + chunk).split(b"\n")
                self.lines.extend(whole)
                self.cond.notify_all()

    def wait_for(self, needle, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    raise TimeoutError(f"no line with {needle!r}; last lines: {self.lines[-10:]!r}")
                self.cond.wait(remaining)

    def wait_closed(self, timeout=30.0):
        with self.cond:
            assert self.cond.wait_for(lambda: self.closed, timeout), "stream never closed"
            return list(self.lines), self.tail


class RawProxy:
    """The proxy with both output streams as pipes that the test reads only when it chooses."""

    def __init__(self, workdir, config_text):
        path = workdir / "sidecar.yaml"
        path.write_text(config_text)
        self.proc = subprocess.Popen([str(BIN), "run", "-c", str(path)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.log = RawLines(self.proc.stderr)
        self.log.wait_for(b"sidecar started", timeout=20)
        self.access = None

    def read_access(self):
        self.access = RawLines(self.proc.stdout)
        return self.access

    def stop(self):
        assert stop_process(self.proc) == 0


def http_config(port, upstream_port, cert, admin_port=None, fmt="json", level="debug"):
    cfg = base_config(tls_listener("web", port, upstream_port, cert, protocol="http"),
                      admin_port=admin_port)
    return cfg.replace("log:\n  level: debug\n  format: json\n",
                       f"log:\n  level: {level}\n  format: {fmt}\n")


def dropped_metric(admin_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
    m = re.search(r'^sidecar_log_lines_dropped_total\{stream="access"\} (\d+)$', text, re.M)
    assert m, text
    return int(m.group(1))


def healthz(admin_port):
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=5) as r:
        assert r.status == 200
    return time.monotonic() - started


def test_unread_stdout_never_stalls_the_proxy(workdir, nginx, cert):
    port, admin = free_port(), free_port()
    # info level: the stderr pipe is read, but keep the test about stdout.
    p = RawProxy(workdir, http_config(port, nginx.port, cert, admin_port=admin, level="info"))
    try:
        # Each access line is about 1.3 KB: 2500 requests make some 3 MiB of access lines, far
        # past the 64 KiB pipe and the 1 MiB queue. Nothing reads stdout meanwhile.
        total = 2500
        path = "/small?" + "q" * 1000
        ctx = ssl.create_default_context(cafile=str(cert[0]))
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
        slowest_health = 0.0
        for i in range(total):
            conn.request("GET", path)
            r = conn.getresponse()
            assert r.status == 200 and r.read() == b"ok\n", i
            if i % 250 == 0:
                slowest_health = max(slowest_health, healthz(admin))
        conn.close()
        slowest_health = max(slowest_health, healthz(admin))
        assert slowest_health < 2, slowest_health
        dropped = dropped_metric(admin)
        assert dropped > 0

        # The reader comes back: whole JSON lines, the summary of what was lost, nothing else lost.
        access = p.read_access()
        summary = access.wait_for(b"log lines dropped", timeout=10)
        assert json.loads(summary)["dropped"] == dropped, summary
        p.stop()
        lines, tail = access.wait_closed()
        assert tail == b"", tail[-200:]
        records = [json.loads(line.decode("utf-8")) for line in lines]
        served = [r for r in records if r.get("type") == "access"]
        summaries = [r for r in records if r.get("stream") == "access" and "dropped" in r]
        assert all(r["path"] == path and r["status"] == 200 for r in served)
        assert sum(r["dropped"] for r in summaries) == dropped
        assert len(served) + dropped == total
        assert re.match(rf"{dropped} log lines dropped", summaries[0]["msg"]), summaries
    finally:
        stop_process(p.proc)


def hostile_request(port, server_name, target):
    """One request over TLS with raw bytes in the SNI (openssl passes them as given; Python's ssl
    module refuses such names) and in the request target."""
    request = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    r = run([b"openssl", b"s_client", b"-connect", f"127.0.0.1:{port}".encode(),
             b"-servername", server_name, b"-quiet", b"-ign_eof"], input=request, text=False, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


SERVER_NAME = b"ev\xffil\x01\x1b[2J\xc3\xa9.example"
SNI_ESCAPED = "ev\\u00ffil\\u0001\\u001b[2J\xe9.example"  # as it appears in a line (\xe9 = é)
SNI_DECODED = "ev\u00ffil\u0001\u001b[2J\u00e9.example"  # as json.loads returns it
TARGET = b"/caf\xe9/\xff\x80?q=\xc3\xa9"


def test_hostile_sni_and_path_json_lines_parse(workdir, nginx, cert):
    p = RawProxy(workdir, http_config(free_port(), nginx.port, cert))
    port = int(re.search(rb'"address":"127.0.0.1:(\d+)"', p.log.wait_for(b'"msg":"listening"')).group(1))
    access = p.read_access()
    answer = hostile_request(port, SERVER_NAME, TARGET)
    assert answer.startswith(b"HTTP/1.1 "), answer
    record_line = access.wait_for(b'"type":"access"')
    handshake_line = p.log.wait_for(b"TLS handshake done")
    p.stop()
    out, _ = access.wait_closed()
    err, _ = p.log.wait_closed()
    for line in out + err:
        json.loads(line.decode("utf-8"))  # strict: invalid UTF-8 or a raw control byte fails
    for line in (record_line, handshake_line):
        assert ('"sni":"' + SNI_ESCAPED + '"').encode() in line, line
        assert json.loads(line)["sni"] == SNI_DECODED
    record = json.loads(record_line)
    # llhttp may refuse such a target (400, no path); if it lets it through, it is escaped.
    if record["path"]:
        assert record["path"] == "/caf\u00e9/\u00ff\u0080?q=\u00e9", record_line
        assert b'"path":"/caf\\u00e9/\\u00ff\\u0080?q=\xc3\xa9"' in record_line


def test_hostile_sni_text_format_stays_one_line(workdir, nginx, cert):
    port = free_port()
    p = RawProxy(workdir, http_config(port, nginx.port, cert, fmt="text"))
    p.read_access()
    hostile_request(port, SERVER_NAME, TARGET)
    line = p.log.wait_for(b"TLS handshake done")
    p.stop()
    err, tail = p.log.wait_closed()
    assert tail == b""
    assert (' sni="' + SNI_ESCAPED + '" ').encode() in line, line
    for each in err:
        each.decode("utf-8")  # strict
        assert b"\r" not in each and b"\x1b" not in each and b"\x01" not in each, each
        assert re.match(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) ", each), each


def test_inherited_stdout_and_stderr_keep_blocking_mode(workdir, nginx, cert):
    """The proxy's stdout/stderr descriptions are shared with its parent (here the test, as a
    shell's terminal or a runtime's pipe would be): switching them to non-blocking mode would
    break the parent's writes. The proxy must leave their flags alone."""
    read_end, pipe_end = os.pipe()
    master, tty_end = pty.openpty()
    path = workdir / "sidecar.yaml"
    port = free_port()
    path.write_text(http_config(port, nginx.port, cert, level="info"))
    before = {fd: fcntl.fcntl(fd, fcntl.F_GETFL) for fd in (pipe_end, tty_end)}
    proc = subprocess.Popen([str(BIN), "run", "-c", str(path)], stdout=pipe_end, stderr=tty_end)
    try:
        with os.fdopen(read_end, "rb", buffering=0) as out:
            # A request makes an access line on the pipe: by then the streams are set up.
            ctx = ssl.create_default_context(cafile=str(cert[0]))
            deadline = time.monotonic() + 20
            while True:
                try:
                    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
                    conn.request("GET", "/small")
                    assert conn.getresponse().status == 200
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.02)  # the port is not bound yet; nothing to await instead
            assert b'"type":"access"' in out.readline()
            for fd, flags in before.items():
                assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags
                assert not flags & os.O_NONBLOCK
            conn.close()
            assert stop_process(proc) == 0
    finally:
        stop_process(proc)
        for fd in (pipe_end, master, tty_end):
            os.close(fd)
