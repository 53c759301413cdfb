"""Upstream addresses given as DNS names, against a real DNS server: dnsmasq on a loopback address
of its own (127.53.x.y, port 53), which the proxy reads from a resolv.conf written for the test
(dns.resolv_conf). Records come from a hosts-style file dnsmasq re-reads on SIGHUP, served with a
1 s TTL, so a changed record reaches the proxy by TTL expiry, without a restart.

Covers: search domains with ndots:5 as Kubernetes writes them, TTL expiry, failover to the next
address when one refuses (and the back-off that skips it afterwards), stale-while-error when the
DNS server goes away, not-ready-until-resolved at start, the hosts file, and the TLS name verified
for an upstream given by name.
"""
import http.client
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import LogReader, base_config, free_port, gen_cert, stop_process

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(DNSMASQ), reason="dnsmasq is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a DNS server on port 53 needs root"),
]


def dns_query(server, name, timeout=0.3):
    """One A query over UDP; returns the raw answer (raises on timeout)."""
    qid = random.randint(0, 0xFFFF)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, 53))
        return s.recvfrom(4096)[0]


class DnsServer:
    """dnsmasq answering for the zone "test." from a records file, on a loopback address."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.address = f"127.53.{random.randint(1, 250)}.{random.randint(1, 250)}"
        self.records = self.dir / "records"
        self.records.write_text("")
        self.proc = None

    def set_records(self, text):
        self.records.write_text(text)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)  # re-reads the records file

    def start(self):
        self.proc = subprocess.Popen(
            [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--user=root", "--local=/test/", f"--addn-hosts={self.records}", "--local-ttl=1",
             f"--listen-address={self.address}", "--bind-interfaces", "--port=53",
             f"--pid-file={self.dir / 'dnsmasq.pid'}", "--log-queries",
             f"--log-facility={self.dir / 'dnsmasq.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited: " + self.proc.stderr.read().decode())
            try:
                dns_query(self.address, "ready.test")
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("dnsmasq does not answer")

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=10)


class Responder:
    """An HTTP app on host:port that answers every request with `body` and closes."""

    def __init__(self, host, port, body):
        self.body = body.encode()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        with c:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                          % (len(self.body), self.body))
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def dns(workdir):
    server = DnsServer(workdir).start()
    yield server
    server.stop()


@pytest.fixture
def responders():
    made = []

    def make(host, port, body):
        r = Responder(host, port, body)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def port_free_on(*hosts):
    """A port that is free on 127.0.0.1 and on each of hosts."""
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def dns_proxy(proxies, workdir, dns_server, upstream, admin_port, upstream_extra="",
              dns_extra="", resolv_options="ndots:5 timeout:1 attempts:1"):
    (workdir / "resolv.conf").write_text(
        "search ns.test svc.test\n"
        f"nameserver {dns_server.address}\n"
        f"options {resolv_options}\n")
    hosts = workdir / "hosts"
    if not hosts.exists():
        hosts.write_text("127.0.0.1 localhost\n")
    port = free_port()
    listeners = f"""
  - name: web
    listen: 127.0.0.1:{port}
    protocol: http
    upstream:
      address: {upstream}
      connect_timeout: 2s
{upstream_extra}
"""
    extra = (f"dns:\n  resolv_conf: {workdir / 'resolv.conf'}\n  hosts: {hosts}\n"
             f"  min_ttl: 200ms\n  max_ttl: 1s\n{dns_extra}")
    p = proxies(base_config(listeners, admin_port=admin_port, extra=extra), workdir)
    p.port = port
    p.admin_port = admin_port
    return p


def get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def admin(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(admin_port, name, **labels):
    text = admin(admin_port, "/metrics")[1]
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$', line)
        if m and m.group(1) == name and (m.group(2) or "") == want:
            return float(m.group(3))
    raise KeyError(f"{name}{{{want}}} not in metrics")


def wait_until(condition, timeout=10.0, what="condition"):
    """Polls condition() until it is true (a DNS TTL or a retry timer has no event to await)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_name_resolves_with_search_domains(proxies, workdir, dns, responders):
    port = port_free_on("127.0.0.2")
    responders("127.0.0.2", port, "two")
    dns.set_records("127.0.0.2 api.svc.test\n")
    p = dns_proxy(proxies, workdir, dns, f"api:{port}", free_port()).start()
    line = p.log.wait_for("upstream name resolved")
    assert "127.0.0.2" in line and "dns" in line
    assert get(p.port) == (200, "two")
    assert admin(p.admin_port, "/readyz") == (200, "ready\n")
    assert metric(p.admin_port, "sidecar_upstream_addresses", upstream=f"api:{port}") == 1
    assert metric(p.admin_port, "sidecar_upstream_resolutions_total", upstream=f"api:{port}",
                  result="ok") >= 1
    # ndots:5: the search list was tried in order, the first domain has no such name.
    queries = (workdir / "dnsmasq.log").read_text()
    assert "api.ns.test" in queries and "api.svc.test" in queries


def test_ttl_expiry_picks_up_a_changed_record(proxies, workdir, dns, responders):
    port = port_free_on("127.0.0.2", "127.0.0.3")
    responders("127.0.0.2", port, "two")
    responders("127.0.0.3", port, "three")
    dns.set_records("127.0.0.2 api.svc.test\n")
    p = dns_proxy(proxies, workdir, dns, f"api:{port}", free_port()).start()
    p.log.wait_for("upstream name resolved")
    assert get(p.port) == (200, "two")
    pid = p.proc.pid
    dns.set_records("127.0.0.3 api.svc.test\n")
    p.log.wait_for("upstream addresses changed", timeout=10)
    assert get(p.port) == (200, "three")
    assert p.proc.pid == pid and p.proc.poll() is None


def test_failover_to_the_next_address_and_back_off(proxies, workdir, dns, responders):
    # 127.0.0.2 refuses (nothing listens there); 127.0.0.3 answers. dnsmasq rotates the order
    # of the two records, so within a few TTLs 127.0.0.2 comes first and must be failed over.
    port = port_free_on("127.0.0.2", "127.0.0.3")
    responders("127.0.0.3", port, "three")
    dns.set_records("127.0.0.2 multi.svc.test\n127.0.0.3 multi.svc.test\n")
    p = dns_proxy(proxies, workdir, dns, f"multi:{port}", free_port(),
                  dns_extra="  failure_backoff: 1m\n").start()
    p.log.wait_for("upstream name resolved")
    failures = lambda: metric(p.admin_port, "sidecar_upstream_connect_failures_total",
                              listener="web")

    def one_request():
        assert get(p.port) == (200, "three")
        return failures() >= 1

    wait_until(one_request, timeout=15, what="a connect to 127.0.0.2 that fails over")
    assert "trying the next address" in p.log.wait_for('"address":"127.0.0.2"')
    assert failures() == 1
    # Within failure_backoff the refusing address is tried last: no new failure, whatever order
    # the next answers bring.
    ok = metric(p.admin_port, "sidecar_upstream_resolutions_total", upstream=f"multi:{port}",
                result="ok")
    for _ in range(3):
        wait_until(lambda: metric(p.admin_port, "sidecar_upstream_resolutions_total",
                                  upstream=f"multi:{port}", result="ok") > ok,
                   what="a re-resolution")
        ok += 1
        for _ in range(3):
            assert get(p.port) == (200, "three")
    assert failures() == 1
    assert metric(p.admin_port, "sidecar_upstream_addresses", upstream=f"multi:{port}") == 2


def test_stale_while_error_when_the_dns_server_goes_away(proxies, workdir, dns, responders):
    port = port_free_on("127.0.0.2")
    responders("127.0.0.2", port, "two")
    dns.set_records("127.0.0.2 api.svc.test\n")
    p = dns_proxy(proxies, workdir, dns, f"api:{port}", free_port()).start()
    p.log.wait_for("upstream name resolved")
    dns.stop()
    failed = lambda: sum(metric(p.admin_port, "sidecar_upstream_resolutions_total",
                                upstream=f"api:{port}", result=r) for r in ("error", "timeout"))
    line = p.log.wait_for("keeping the last addresses", timeout=15)
    assert "127.0.0.2" in line
    wait_until(lambda: failed() >= 3, timeout=15, what="three failed resolutions")
    # Logged once per change of state, not once per failure.
    assert p.log.text().count("keeping the last addresses") == 1
    assert get(p.port) == (200, "two")
    assert admin(p.admin_port, "/readyz") == (200, "ready\n")
    assert metric(p.admin_port, "sidecar_upstream_addresses", upstream=f"api:{port}") == 1


def test_not_ready_until_the_name_resolves(proxies, workdir, dns, responders):
    port = port_free_on("127.0.0.2")
    responders("127.0.0.2", port, "two")
    p = dns_proxy(proxies, workdir, dns, f"late.test:{port}", free_port()).start()
    p.log.wait_for("upstream name does not resolve")
    status, body = admin(p.admin_port, "/readyz")
    assert status == 503
    assert f"late.test:{port} does not resolve" in body
    # The listener is up: a request is answered, with 503, not refused.
    assert get(p.port)[0] == 503
    assert metric(p.admin_port, "sidecar_upstream_resolutions_total",
                  upstream=f"late.test:{port}", result="not_found") >= 1
    dns.set_records("127.0.0.2 late.test\n")
    wait_until(lambda: admin(p.admin_port, "/readyz") == (200, "ready\n"), timeout=15,
               what="readiness")
    assert get(p.port) == (200, "two")


def test_reload_resolves_the_new_name(proxies, workdir, dns, responders):
    port = port_free_on("127.0.0.2", "127.0.0.3")
    responders("127.0.0.2", port, "two")
    responders("127.0.0.3", port, "three")
    dns.set_records("127.0.0.2 api.svc.test\n127.0.0.3 other.svc.test\n")
    p = dns_proxy(proxies, workdir, dns, f"api:{port}", free_port()).start()
    p.log.wait_for("upstream name resolved")
    assert get(p.port) == (200, "two")
    start = p.log.count()
    p.config_path.write_text(p.config_path.read_text().replace(f"api:{port}", f"other:{port}"))
    p.signal(signal.SIGHUP)
    p.log.wait_for("configuration reloaded", start=start)
    assert "127.0.0.3" in p.log.wait_for("upstream name resolved", start=start)
    assert get(p.port) == (200, "three")
    text = admin(p.admin_port, "/metrics")[1]
    assert f'upstream="other:{port}"' in text and f'upstream="api:{port}"' not in text


def test_hosts_file_is_read_before_dns(proxies, workdir, dns, responders):
    port = port_free_on("127.0.0.2", "127.0.0.3")
    responders("127.0.0.2", port, "two")
    responders("127.0.0.3", port, "three")
    dns.set_records("127.0.0.3 pinned.test\n")
    (workdir / "hosts").write_text("127.0.0.1 localhost\n127.0.0.2 pinned.test other\n")
    p = dns_proxy(proxies, workdir, dns, f"pinned.test:{port}", free_port()).start()
    assert '"source":"hosts"' in p.log.wait_for("upstream name resolved")
    assert get(p.port) == (200, "two")


@pytest.mark.parametrize("certified", ["api.svc.test", "other.test"])
def test_tls_origination_verifies_the_upstream_name(proxies, workdir, dns, certified):
    # Without server_name, the name in upstream.address is the one verified (and sent as SNI).
    crt, key = gen_cert(workdir / "upstream-cert", certified)
    port = port_free_on("127.0.0.2")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.2", port))
    server.listen(8)
    sni = []

    def serve():
        context.sni_callback = lambda s, name, ctx: sni.append(name)
        while True:
            try:
                raw, _ = server.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as c:
                    c.recv(4096)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                              b"Connection: close\r\n\r\ntls")
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        dns.set_records("127.0.0.2 api.svc.test\n")
        p = dns_proxy(proxies, workdir, dns, f"api.svc.test:{port}", free_port(),
                      upstream_extra=f"      tls: {{ ca: {crt} }}\n").start()
        p.log.wait_for("upstream name resolved")
        status, body = get(p.port)
        if certified == "api.svc.test":
            assert (status, body) == (200, "tls")
            assert sni == ["api.svc.test"]
        else:
            assert status == 502
            p.log.wait_for("upstream TLS handshake failed")
    finally:
        server.close()


def static_binary():
    """A static build that knows dns settings, if one has been made (scripts/build-static)."""
    root = Path(__file__).resolve().parents[2]
    for candidate in [os.environ.get("SIDECAR_STATIC_BIN", ""),
                      root / "build-static" / "out" / "sidecar"]:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def test_static_binary_resolves_in_an_empty_root(workdir, dns, responders):
    binary = static_binary()
    if binary is None:
        pytest.skip("no static build (scripts/build-static makes one)")
    root = workdir / "root"
    (root / "etc").mkdir(parents=True)
    shutil.copy(binary, root / "sidecar")
    port = port_free_on("127.0.0.2")
    responders("127.0.0.2", port, "two")
    dns.set_records("127.0.0.2 api.svc.test\n")
    (root / "etc" / "resolv.conf").write_text(
        f"search svc.test\nnameserver {dns.address}\noptions ndots:5 timeout:1 attempts:1\n")
    listen = free_port()
    (root / "sidecar.yaml").write_text(
        f"listeners:\n  - name: web\n    listen: 127.0.0.1:{listen}\n    protocol: http\n"
        f"    upstream: {{ address: \"api:{port}\" }}\nadmin: {{ enabled: false }}\n")
    check = subprocess.run(
        ["chroot", str(root), "/sidecar", "check-config", "-c", "/sidecar.yaml"],
        capture_output=True, text=True, timeout=30)
    if check.returncode != 0 and "not an IP address or localhost" in check.stderr:
        pytest.skip("the static build predates upstream names; rebuild it with scripts/build-static")
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(["chroot", str(root), "/sidecar", "run", "-c", "/sidecar.yaml"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        log = LogReader(proc.stderr)
        assert "127.0.0.2" in log.wait_for("upstream name resolved", timeout=20)
        assert get(listen) == (200, "two")
    finally:
        stop_process(proc)
