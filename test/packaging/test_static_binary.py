"""The static binary that the proxy image ships, run the way a FROM scratch image runs it: copied
alone into an empty root directory and started there under chroot, with the certificate files
mounted in (read-only, in a private mount namespace, like a Secret volume). It serves TLS to a
plain upstream on loopback (chroot shares the network namespace), answers its admin endpoint and
exits 0 on SIGTERM. Its memory is measured against the proxy container's resources in the base
manifests."""
import os
import re
import signal
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import MANIFESTS, free_port, memory_bytes, render, run, wait_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mount need root")

CHUNK = b"x" * 65536


class Upstream:
    """A plain HTTP server on loopback. GET / answers a token; POST /stall never reads the request
    body and streams an endless response, so a client that neither reads nor stops sending stalls
    the proxy in both directions (more than the kernel's socket buffers can absorb)."""

    def __init__(self):
        token = os.urandom(8).hex()
        self.token = f"hello from the upstream {token}\n".encode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def head(self, length):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def do_GET(self):
                self.head(len(outer.token))
                self.wfile.write(outer.token)

            def do_POST(self):
                self.close_connection = True
                self.head(1 << 40)
                while True:
                    self.wfile.write(CHUNK)  # blocks for good once the proxy stops reading

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # many clients connect at once; the default backlog is 5

            def server_bind(self):
                # Small kernel buffers, so that the proxy's own buffers are what fills up.
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                super().server_bind()

            def handle_error(self, request, client_address):
                pass  # stalled clients are closed at the end of the test: resets are expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.stop()


def base_config(listen_port, upstream_port, admin_port, cert_dir="/etc/sidecar/tls/"):
    """manifests/base/sidecar.yaml with free ports instead of 8443/80/9901. The listener stays on
    0.0.0.0 (the config refuses a redirected listener on loopback); the test dials 127.0.0.1."""
    text = (MANIFESTS / "base/sidecar.yaml").read_text()
    for old, new in (("0.0.0.0:8443", f"0.0.0.0:{listen_port}"),
                     ("127.0.0.1:80\n", f"127.0.0.1:{upstream_port}\n"),
                     ("0.0.0.0:9901", f"127.0.0.1:{admin_port}"),
                     ("/etc/sidecar/tls/", cert_dir)):
        assert old in text, old
        text = text.replace(old, new)
    return text


def rss_bytes(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024


def proxy_resources():
    _, objects = render("base")
    deployment = [o for o in objects if o["kind"] == "Deployment"][0]
    proxy = [c for c in deployment["spec"]["template"]["spec"]["initContainers"] if c["name"] == "proxy"][0]
    return proxy["resources"]


def https_get(port, path, cafile):
    r = run(["curl", "-sS", "--fail", "--max-time", "20", "--cacert", cafile,
             f"https://localhost:{port}{path}"])
    assert r.returncode == 0, r.stderr
    return r.stdout


def stop(proc, timeout=30):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_binary_is_static_and_stripped(static_bin):
    described = run(["file", "-b", static_bin]).stdout
    assert re.search(r"static(-pie)? linked|statically linked", described), described
    assert ", stripped" in described, described
    ldd = run(["ldd", static_bin])
    assert ldd.returncode != 0 and "not a dynamic executable" in ldd.stdout + ldd.stderr
    size = static_bin.stat().st_size
    print(f"static binary: {size} bytes ({size / (1 << 20):.2f} MiB): {described.strip()}")
    assert size < 16 << 20


@pytest.fixture
def empty_root(static_bin, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(static_bin, root / "sidecar")
    assert os.listdir(root) == ["sidecar"]
    return root


def test_version_in_an_empty_root(empty_root):
    r = run(["chroot", empty_root, "/sidecar", "version"])
    assert r.returncode == 0, r.stderr
    assert re.match(r"sidecar \d+\.\d+\.\d+ \(", r.stdout), r.stdout
    assert re.search(r"^TLS backends \(tls_backend\): mbedtls \(mbedTLS 3\.", r.stdout, re.M), r.stdout


def test_gen_cert_in_an_empty_root(empty_root):
    """Key generation needs randomness without /dev/urandom: the image has no /dev of its own
    beyond what the runtime mounts, and this root has none at all."""
    r = run(["chroot", empty_root, "/sidecar", "gen-cert", "--out", "/tls"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert (empty_root / "tls/tls.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert (empty_root / "tls/tls.key").stat().st_mode & 0o777 == 0o600


def secret_volume(certs, directory):
    """The certificate files as the base's Secret volume presents them: root-owned, group 65532
    (the Pod's fsGroup), mode 0440."""
    directory.mkdir()
    for name in ("tls.crt", "tls.key"):
        shutil.copyfile(certs / name, directory / name)
        os.chown(directory / name, 0, 65532)
        os.chmod(directory / name, 0o440)
    return directory


def test_serves_tls_in_an_empty_root_with_mounted_certificates(empty_root, certs, upstream, tmp_path):
    """As the proxy image runs it: user and group 65532, nothing in / but the binary and its config,
    the Secret's files mounted read-only."""
    listen, admin = free_port(), free_port()
    (empty_root / "sidecar.yaml").write_text(base_config(listen, upstream.port, admin))
    empty_root.chmod(0o755)
    mount_point = empty_root / "etc/sidecar/tls"
    mount_point.mkdir(parents=True)
    secret = secret_volume(certs, tmp_path / "secret")
    # unshare execs sh, which execs chroot, which execs the sidecar: one PID all along.
    script = ('mount --bind -o ro "$1" "$2" && '
              'exec chroot --userspec=65532:65532 "$3" /sidecar run -c /sidecar.yaml')
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                             "sh", str(secret), str(mount_point), str(empty_root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_port(admin, proc=proc)
        wait_port(listen, proc=proc)
        assert os.readlink(f"/proc/{proc.pid}/exe") == str(empty_root / "sidecar")
        assert os.readlink(f"/proc/{proc.pid}/root") == str(empty_root)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(r"^Uid:\s+65532\s+65532\s+65532\s+65532$", status, re.M), status
        assert re.search(r"^CapEff:\s+0+$", status, re.M), "runs with no capabilities"
        readyz = run(["curl", "-sS", f"http://127.0.0.1:{admin}/readyz"])
        assert readyz.stdout == "ready\n", readyz.stdout + readyz.stderr
        idle = rss_bytes(proc.pid)

        assert https_get(listen, "/", certs / "tls.crt").encode() == upstream.token
        for _ in range(20):
            https_get(listen, "/", certs / "tls.crt")
        busy = rss_bytes(proc.pid)
        print(f"idle RSS {idle / 1024:.0f} KiB; after 21 requests {busy / 1024:.0f} KiB")
    finally:
        code = stop(proc)
    out, err = proc.communicate()
    assert code == 0, err.decode(errors="replace")[-3000:]
    assert os.listdir(mount_point) == [], "the certificates were mounted, not copied"
    assert sorted(os.listdir(empty_root)) == ["etc", "sidecar", "sidecar.yaml"]


def stall(port, cafile, clients, errors):
    """One client that stalls its connection both ways: it sends a request body the upstream
    never reads until the proxy stops taking more, and never reads the response."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        tls = ssl.create_default_context(cafile=str(cafile)).wrap_socket(raw, server_hostname="localhost")
        clients.append(tls)
        tls.sendall(b"POST /stall HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
        tls.settimeout(2)
        chunk = b"y" * 65536
        while True:
            tls.sendall(chunk)  # ends in a timeout once nothing moves any more
    except socket.timeout:
        pass
    except OSError as e:
        errors.append(e)


def test_memory_fits_the_proxy_resources(static_bin, certs, upstream, tmp_path):
    """Idle RSS stays under the container's memory request, and max_connections connections that
    are all stalled both ways (every buffer of the proxy full to its watermark) fit in its memory
    limit."""
    listen, admin = free_port(), free_port()
    config = tmp_path / "sidecar.yaml"
    # Stalling takes a while on a loaded machine: keep the first stalled connections from timing out
    # as idle while the last ones are still filling up.
    text = base_config(listen, upstream.port, admin, f"{certs}/")
    assert "idle: 60s" in text
    config.write_text(text.replace("idle: 60s", "idle: 600s"))
    max_connections = yaml.safe_load(config.read_text())["listeners"][0]["limits"]["max_connections"]
    resources = proxy_resources()
    request = memory_bytes(resources["requests"]["memory"])
    limit = memory_bytes(resources["limits"]["memory"])

    proc = subprocess.Popen([static_bin, "run", "-c", config], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    clients, errors = [], []
    try:
        wait_port(admin, proc=proc)
        wait_port(listen, proc=proc)
        idle = rss_bytes(proc.pid)
        stalled = 20
        threads = [threading.Thread(target=stall, args=(listen, certs / "tls.crt", clients, errors))
                   for _ in range(stalled)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[:3]
        assert len(clients) == stalled
        current = rss_bytes(proc.pid)
        per_connection = max(0, current - idle) / stalled
        worst = idle + per_connection * max_connections
        print(f"idle RSS {idle / 1024:.0f} KiB; {stalled} connections stalled both ways "
              f"{current / 1024:.0f} KiB ({per_connection / 1024:.1f} KiB each); "
              f"{max_connections} connections ~ {worst / (1 << 20):.1f} MiB; "
              f"request {resources['requests']['memory']}, limit {resources['limits']['memory']}")
        assert idle < request, "idle RSS above the memory request"
        assert worst < limit, "max_connections stalled connections would pass the memory limit"
    finally:
        for c in clients:
            c.close()
        assert stop(proc) == 0
