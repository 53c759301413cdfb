"""Shared fixtures: the real sidecar binary, a real nginx upstream, certificates, free ports.

Everything listens on loopback. Processes are awaited through their log lines or by connecting,
never by sleeping.
"""
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SIDECAR_BIN", ROOT / "build" / "sidecar"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The TLS backend every generated config names (tls_backend); scripts/test runs the suite with each.
TLS_BACKEND = os.environ.get("SIDECAR_TLS_BACKEND", "mbedtls")


def with_tls_backend(config_text):
    """The config with the suite's tls_backend, unless it names one itself."""
    if any(line.startswith("tls_backend:") for line in config_text.splitlines()):
        return config_text
    return f"tls_backend: {TLS_BACKEND}\n{config_text}"


_handed_out = set()


def free_port(family=socket.AF_INET):
    """A port nothing listens on, and not handed out before in this run: a test that asks for
    two ports before binding either must not get the same one twice."""
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # polling a port that is not yet bound; nothing to await instead
    raise TimeoutError(f"nothing listening on {host}:{port}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stop_process(proc, sig=signal.SIGTERM, timeout=30):
    """Sends sig to a running process, waits up to timeout, then kills it; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, **kw)


class LogReader:
    """Collects a process's output lines and lets a test wait for one."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, needle, timeout=10.0, start=0):
        """Waits for a line containing needle; returns it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    if needle in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    raise TimeoutError(f"no log line with {needle!r}; got:\n" + "\n".join(self.lines[-40:]))
                self.cond.wait(remaining)

    def text(self):
        with self.cond:
            return "\n".join(self.lines)

    def count(self):
        with self.cond:
            return len(self.lines)


class ScriptedUpstream:
    """A plain TCP upstream on loopback; `handle(conn)` runs in a thread per connection."""

    def __init__(self, handle):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handle(c)
        except OSError:
            pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


class Proxy:
    def __init__(self, config_text, workdir, name="sidecar", env=None):
        self.workdir = Path(workdir)
        self.config_path = self.workdir / f"{name}.yaml"
        self.config_path.write_text(with_tls_backend(config_text))
        self.proc = None
        self.env = env

    def start(self, wait=True):
        self.proc = subprocess.Popen([str(BIN), "run", "-c", str(self.config_path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        self.log = LogReader(self.proc.stderr)
        self.access = LogReader(self.proc.stdout)
        if wait:
            self.log.wait_for("sidecar started", timeout=20)
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        return stop_process(self.proc, timeout=timeout) if self.proc else None

    def wait_exit(self, timeout=30):
        return self.proc.wait(timeout=timeout)


class Nginx:
    """Stock nginx on a free loopback port: static files, WebDAV PUT, header echo, h2c option."""

    def __init__(self, workdir, http2=False, extra_server="", listen_extra=""):
        self.dir = Path(workdir) / f"nginx-{id(self)}"
        self.root = self.dir / "html"
        self.root.mkdir(parents=True)
        (self.dir / "tmp").mkdir()
        (self.root / "index.html").write_text("<h1>hello from nginx</h1>\n")
        self.port = free_port()
        h2 = " http2" if http2 else ""
        modules = "/usr/share/nginx/modules/ngx_http_echo_module.so"
        load = f"load_module {modules};" if os.path.exists(modules) else ""
        conf = f"""
{load}
user root;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log info;
events {{ worker_connections 4096; }}
http {{
  access_log {self.dir}/access.log;
  client_body_temp_path {self.dir}/tmp;
  proxy_temp_path {self.dir}/tmp;
  fastcgi_temp_path {self.dir}/tmp;
  uwsgi_temp_path {self.dir}/tmp;
  scgi_temp_path {self.dir}/tmp;
  default_type text/html;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{self.port}{h2}{listen_extra};
    root {self.root};
    client_max_body_size 0;
    location /upload/ {{ dav_methods PUT; create_full_put_path on; }}
    location = /headers {{
      default_type text/plain;
      echo "xff=$http_x_forwarded_for";
      echo "xfp=$http_x_forwarded_proto";
      echo "xfh=$http_x_forwarded_host";
      echo "fwd=$http_forwarded";
      echo "xfcc=$http_x_forwarded_client_cert";
      echo "host=$http_host";
    }}
    location = /small {{ default_type text/plain; return 200 "ok\\n"; }}
    {extra_server}
  }}
}}
"""
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(conf)

    def start(self):
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        stop_process(self.proc, signal.SIGQUIT, timeout=10)

    def access_log(self):
        return (self.dir / "access.log").read_text()

    def wait_access(self, needle, count=1, timeout=10.0):
        """nginx writes its access log line after the response has gone out: wait for it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.access_log()
            if text.count(needle) >= count:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx never logged {needle!r} {count}x; log:\n{text}")
            time.sleep(0.01)  # a file has no readiness to await


@pytest.fixture(scope="session")
def bin_path():
    assert BIN.exists(), f"{BIN} not built"
    return BIN


@pytest.fixture(scope="session")
def session_dir():
    d = tempfile.mkdtemp(prefix="sidecar-it-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def gen_cert(out, *hosts):
    cmd = [str(BIN), "gen-cert", "--out", str(out)]
    for h in hosts:
        cmd += ["--host", h]
    r = run(cmd)
    assert r.returncode == 0, r.stderr
    return Path(out) / "tls.crt", Path(out) / "tls.key"


@pytest.fixture(scope="session")
def cert(session_dir):
    """A self-signed certificate for localhost/127.0.0.1/::1 made by `sidecar gen-cert`."""
    return gen_cert(session_dir / "cert")


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def nginx(workdir):
    n = Nginx(workdir).start()
    yield n
    n.stop()


@pytest.fixture
def proxies():
    started = []

    def make(config_text, workdir, **kw):
        p = Proxy(config_text, workdir, name=f"sidecar{len(started)}", **kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def tls_listener(name, port, upstream_port, cert, protocol="tcp", extra_tls="", extra="", upstream_extra=""):
    crt, key = cert
    return f"""
  - name: {name}
    listen: 127.0.0.1:{port}
    protocol: {protocol}
    tls:
      certificate: {crt}
      private_key: {key}
{extra_tls}
    upstream:
      address: 127.0.0.1:{upstream_port}
{upstream_extra}
{extra}
"""


def base_config(listeners, admin_port=None, extra=""):
    admin = f"admin:\n  listen: 127.0.0.1:{admin_port}\n" if admin_port else "admin:\n  enabled: false\n"
    return with_tls_backend(f"listeners:{listeners}\n{admin}log:\n  level: debug\n  format: json\n{extra}")
