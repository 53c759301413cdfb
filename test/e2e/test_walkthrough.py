"""The "sidecar from scratch" walkthrough, reproduced on one machine.

The walkthrough's Pod runs stock nginx on :80, a TLS proxy on :8080 and an init container that
redirects the Pod's port 80 to the proxy, so that HTTPS to the Pod's port 80 works while nginx
stays unchanged. Here a network namespace is the Pod, joined to the host namespace by a veth pair
(its inside end is called eth0, as in a Pod); nginx runs inside it with a default-like config,
`sidecar run` is the proxy and `sidecar init-net apply` is the init container. The host namespace
is the client outside the Pod.

Addresses come from 198.18.0.0/15 only (reserved for benchmarking, so nothing real is shadowed),
one /30 per run chosen from the pid. Everything the test makes (namespace, veth, processes, temp
files) is removed even when a step fails; the teardown checks that nothing is left.

Needs root (network namespaces, iptables) and `ip netns`; skipped otherwise.
"""
import errno
import importlib.util
import ipaddress
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# LogReader and wait_port come from the integration harness, so both suites await things the same
# way. Loaded by path under their own name: two modules called "conftest" would clash.
_spec = importlib.util.spec_from_file_location(
    "sidecar_integration_harness", ROOT / "test" / "integration" / "conftest.py")
_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)
LogReader, wait_port, run = _harness.LogReader, _harness.wait_port, _harness.run
stop_process = _harness.stop_process

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BENCHMARK_NET = ipaddress.ip_network("198.18.0.0/15")
PAGE = "hello from nginx in the pod"
APP_PORT, PROXY_PORT, ADMIN_PORT = 80, 8080, 9901


def sidecar_binary():
    if os.environ.get("SIDECAR_BIN"):
        return Path(os.environ["SIDECAR_BIN"])
    for candidate in (ROOT / "build" / "sidecar", ROOT / "build" / "core" / "sidecar"):
        if candidate.exists():
            return candidate
    return ROOT / "build" / "sidecar"


BIN = sidecar_binary()


def why_not_runnable():
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, iptables)"
    if shutil.which("ip") is None:
        return "needs ip (iproute2) for network namespaces"
    r = run(["ip", "netns", "list"])
    if r.returncode != 0:
        return f"`ip netns` unavailable: {r.stderr.strip()}"
    return None


SKIP_REASON = why_not_runnable()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def free_subnet():
    """A /30 of 198.18.0.0/15 that no host address or route overlaps, starting from the pid."""
    taken = []
    for line in run(["ip", "-o", "-4", "addr", "show"]).stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            taken.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for line in run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
        try:
            taken.append(ipaddress.ip_network(line.split()[0], strict=False))
        except (ValueError, IndexError):
            pass  # "default", "broadcast ...", "local ..." and the like
    count = BENCHMARK_NET.num_addresses // 4
    first = os.getpid() % count
    for i in range(count):
        base = int(BENCHMARK_NET.network_address) + ((first + i) % count) * 4
        subnet = ipaddress.ip_network((base, 30))
        if not any(subnet.overlaps(net) for net in taken):
            return subnet
    raise RuntimeError("no free /30 left in 198.18.0.0/15")


def await_exit(pids, timeout=10.0):
    """Waits until every pid is gone (pidfd readiness, not sleeping); returns the survivors."""
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise
    poller = select.poll()
    for fd in fds.values():
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    alive = dict(fds)
    while alive and time.monotonic() < deadline:
        for fd, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            poller.unregister(fd)
            alive = {p: f for p, f in alive.items() if f != fd}
    for fd in fds.values():
        os.close(fd)
    return sorted(alive)


class Pod:
    """A network namespace with loopback up and an eth0 veth'd to the host namespace."""

    def __init__(self, workdir):
        token = secrets.token_hex(2)
        self.workdir = workdir
        self.name = f"sidecar-e2e-{os.getpid()}-{token}"
        self.host_if = f"sce{os.getpid():x}{token}"[:15]
        subnet = free_subnet()
        self.host_ip, self.pod_ip = (str(a) for a in subnet.hosts())
        self.prefix = subnet.prefixlen
        self.created = False

    def exec_argv(self, *argv):
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(self, *argv, **kw):
        return run(self.exec_argv(*argv), **kw)

    def spawn(self, *argv):
        return subprocess.Popen(self.exec_argv(*argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def create(self):
        r = run(["ip", "netns", "add", self.name])
        if r.returncode != 0:
            pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
        self.created = True
        steps = [
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0",
             "netns", self.name],
            ["ip", "addr", "add", f"{self.host_ip}/{self.prefix}", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            self.exec_argv("ip", "link", "set", "lo", "up"),
            self.exec_argv("ip", "addr", "add", f"{self.pod_ip}/{self.prefix}", "dev", "eth0"),
            self.exec_argv("ip", "link", "set", "eth0", "up"),
        ]
        for argv in steps:
            r = run(argv)
            assert r.returncode == 0, f"{' '.join(argv)}: {r.stderr}"

    def pids(self):
        r = run(["ip", "netns", "pids", self.name])
        return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []

    def destroy(self):
        """Kills whatever still runs inside, then removes the veth and the namespace."""
        if not self.created:
            return
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        survivors = await_exit(pids)
        # Deleting one end removes both, synchronously (a namespace is freed asynchronously, so
        # its veth end would linger for a moment after `ip netns del`).
        run(["ip", "link", "del", self.host_if])
        run(["ip", "netns", "del", self.name])
        assert not survivors, f"processes left in {self.name}: {survivors}"

    def leftovers(self):
        found = []
        if self.name in run(["ip", "netns", "list"]).stdout:
            found.append(f"network namespace {self.name}")
        if run(["ip", "link", "show", self.host_if]).returncode == 0:
            found.append(f"link {self.host_if}")
        return found


class PodNginx:
    """nginx inside the Pod, configured like Debian's default site: port 80, a static page.

    Its access log goes to stdout (read by a LogReader) with the X-Forwarded-For header, so a test
    sees who connected to nginx and whether the request came through the proxy.
    """

    def __init__(self, pod, workdir):
        self.pod = pod
        self.dir = workdir / "nginx"
        (self.dir / "html").mkdir(parents=True)
        (self.dir / "tmp").mkdir()
        (self.dir / "html" / "index.html").write_text(f"<h1>{PAGE}</h1>\n")
        mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
        tmp = self.dir / "tmp"
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(f"""
user www-data;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 768; }}
http {{
  {mime}
  default_type application/octet-stream;
  log_format walkthrough '$remote_addr "$request" $status xff="$http_x_forwarded_for"';
  access_log /dev/stdout walkthrough;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen {APP_PORT} default_server;
    root html;
    index index.html;
    server_name _;
    location / {{ try_files $uri $uri/ =404; }}
  }}
}}
""")
        self.proc = None

    def start(self):
        self.proc = self.pod.spawn(NGINX, "-p", self.dir, "-c", self.conf, "-g", "daemon off;")
        self.access = LogReader(self.proc.stdout)
        self.errors = LogReader(self.proc.stderr)
        try:
            wait_port(APP_PORT, host=self.pod.pod_ip, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"nginx in the pod did not start: {e}\n{self.errors.text()}") from e
        return self

    def stop(self):
        if self.proc:
            stop_process(self.proc, signal.SIGQUIT, timeout=10)

    def request_line(self, path, start=0):
        """nginx's access log line for GET path, awaited."""
        return self.access.wait_for(f'"GET {path} HTTP/1.1"', start=start)

    def access_lines(self, start=0):
        with self.access.cond:
            return self.access.lines[start:]


class PodProxy:
    """`sidecar run` inside the Pod, configured as in the walkthrough."""

    def __init__(self, pod, workdir):
        self.pod = pod
        cert_dir = workdir / "tls"
        r = run([str(BIN), "gen-cert", "--out", str(cert_dir), "--host", pod.pod_ip])
        assert r.returncode == 0, r.stderr
        self.ca = cert_dir / "tls.crt"  # self-signed: the certificate is its own CA
        self.config = workdir / "sidecar.yaml"
        self.config.write_text(f"""\
listeners:
  - name: web
    listen: 0.0.0.0:{PROXY_PORT}
    protocol: http
    tls: {{ certificate: {cert_dir / "tls.crt"}, private_key: {cert_dir / "tls.key"} }}
    upstream: {{ address: 127.0.0.1:{APP_PORT} }}
admin: {{ listen: 0.0.0.0:{ADMIN_PORT} }}
redirect:
  inbound:
    - port: {APP_PORT}
      listener: web
log: {{ level: info, format: json }}
""")
        self.proc = None

    def start(self):
        self.proc = self.pod.spawn(BIN, "run", "-c", self.config)
        self.log = LogReader(self.proc.stderr)
        self.access = LogReader(self.proc.stdout)
        self.log.wait_for("sidecar started", timeout=20)
        for port in (PROXY_PORT, ADMIN_PORT):
            wait_port(port, host=self.pod.pod_ip, proc=self.proc)
        return self

    def stop(self):
        if self.proc:
            stop_process(self.proc)

    def init_net(self, *args):
        r = self.pod.run(BIN, "init-net", *args, "-c", self.config)
        assert r.returncode == 0, f"init-net {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout

    def access_entries(self, start=0):
        with self.access.cond:
            lines = self.access.lines[start:]
        return [json.loads(line) for line in lines if line.startswith("{")]


class Response:
    def __init__(self, completed):
        self.returncode = completed.returncode
        self.stderr = completed.stderr
        self.body, _, code = completed.stdout.rpartition("\n")
        self.status = int(code) if code.isdigit() else 0

    def __repr__(self):
        return f"<curl exit {self.returncode}, status {self.status}: {self.body!r} {self.stderr!r}>"


def curl(*args, pod=None):
    """curl from the host namespace (or inside pod), never through an environment proxy."""
    argv = ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-w", r"\n%{http_code}", *args]
    if pod is not None:
        argv = pod.exec_argv(*argv)
    return Response(run(argv, timeout=30))


@pytest.fixture(scope="module")
def host_nat_before():
    if shutil.which("iptables-save") is None:
        return None
    return run(["iptables-save", "-t", "nat"]).stdout


@pytest.fixture(scope="module")
def pod(host_nat_before):
    assert BIN.exists(), f"{BIN} not built (or set SIDECAR_BIN)"
    assert Path(NGINX).exists(), "needs nginx (apt-get install nginx-light)"
    assert shutil.which("curl"), "needs curl"
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-e2e-"))
    workdir.chmod(0o755)  # nginx workers run as www-data and must reach html/
    p = Pod(workdir)
    try:
        p.create()
        yield p
    finally:
        try:
            p.destroy()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    assert p.leftovers() == []
    if host_nat_before is not None and "SIDECAR" not in host_nat_before:
        assert "SIDECAR" not in run(["iptables-save", "-t", "nat"]).stdout, \
            "init-net touched the host namespace"


@pytest.fixture(scope="module")
def walkthrough(pod):
    """The Pod after the walkthrough: nginx, the proxy, and the redirect in place."""
    nginx = PodNginx(pod, pod.workdir)
    proxy = PodProxy(pod, pod.workdir)
    try:
        nginx.start()
        # Before the sidecar: the Pod's port 80 is nginx, in plain HTTP (the walkthrough's start).
        r = curl(f"http://{pod.pod_ip}/before-sidecar")
        assert r.status == 404 and "nginx" in r.body, r
        assert nginx.request_line("/before-sidecar").startswith(f"{pod.host_ip} ")

        proxy.start()
        plan = proxy.init_net("apply", "--dry-run")
        assert f"--dport {APP_PORT} -j REDIRECT --to-ports {PROXY_PORT}" in plan, plan
        assert f"--dport {ADMIN_PORT} -j RETURN" in plan, plan
        proxy.init_net("apply")
        yield pod, nginx, proxy
    finally:
        proxy.stop()
        nginx.stop()


def test_https_to_pod_port_80_is_served_by_nginx_through_the_proxy(walkthrough):
    pod, nginx, proxy = walkthrough
    seen_by_proxy, seen_by_nginx = proxy.access.count(), nginx.access.count()

    r = curl("--cacert", proxy.ca, f"https://{pod.pod_ip}:{APP_PORT}/")
    assert r.returncode == 0 and r.status == 200, r
    assert PAGE in r.body

    entry = json.loads(proxy.access.wait_for('"type":"access"', start=seen_by_proxy))
    assert (entry["client"], entry["path"], entry["status"]) == (pod.host_ip, "/", 200), entry
    line = nginx.request_line("/", start=seen_by_nginx)
    # nginx was reached over the Pod's loopback by the proxy, which named the real client.
    assert line.startswith("127.0.0.1 "), line
    assert f'xff="{pod.host_ip}"' in line, line


def test_plain_http_to_pod_port_80_no_longer_reaches_nginx(walkthrough):
    pod, nginx, proxy = walkthrough
    seen_by_proxy, seen_by_nginx = proxy.log.count(), nginx.access.count()

    r = curl(f"http://{pod.pod_ip}:{APP_PORT}/plain-probe")
    assert PAGE not in r.body and r.status != 200, r
    if r.returncode == 0:  # the proxy answered instead of closing: its 400 for plain HTTP
        assert r.status == 400 and "plain HTTP request to an HTTPS port" in r.body, r
        line = proxy.log.wait_for("plain HTTP to a TLS port", start=seen_by_proxy)
        assert json.loads(line)["client"] == pod.host_ip, line

    # A later request that does reach nginx bounds its log: the probe must not be in it.
    curl(f"http://127.0.0.1:{APP_PORT}/after-plain-probe", pod=pod)
    nginx.request_line("/after-plain-probe", start=seen_by_nginx)
    assert not [line for line in nginx.access_lines(seen_by_nginx) if "/plain-probe " in line]


def test_inside_the_pod_loopback_still_reaches_nginx_directly(walkthrough):
    pod, nginx, proxy = walkthrough
    seen_by_proxy, seen_by_nginx = proxy.access.count(), nginx.access.count()

    r = curl(f"http://127.0.0.1:{APP_PORT}/", pod=pod)
    assert r.returncode == 0 and r.status == 200 and PAGE in r.body, r

    line = nginx.request_line("/", start=seen_by_nginx)
    assert line.startswith("127.0.0.1 ") and 'xff="-"' in line, line
    assert proxy.access_entries(start=seen_by_proxy) == []


def test_admin_port_is_not_redirected(walkthrough):
    pod, _, _ = walkthrough
    r = curl(f"http://{pod.pod_ip}:{ADMIN_PORT}/readyz")
    assert r.returncode == 0 and r.status == 200, r
    # Reachable for probes from outside the Pod, but only processes inside may stop the proxy.
    r = curl("-X", "POST", f"http://{pod.pod_ip}:{ADMIN_PORT}/shutdown")
    assert r.returncode == 0 and r.status == 403, r
    r = curl(f"http://{pod.pod_ip}:{ADMIN_PORT}/readyz")
    assert r.returncode == 0 and r.status == 200, r


def test_init_net_clean_gives_port_80_back_to_nginx(walkthrough):
    pod, nginx, proxy = walkthrough
    proxy.init_net("clean")
    try:
        seen_by_nginx = nginx.access.count()
        r = curl(f"http://{pod.pod_ip}:{APP_PORT}/")
        assert r.returncode == 0 and r.status == 200 and PAGE in r.body, r
        line = nginx.request_line("/", start=seen_by_nginx)
        assert line.startswith(f"{pod.host_ip} ") and 'xff="-"' in line, line
    finally:
        proxy.init_net("apply")
    # Applying again after a clean brings the walkthrough back.
    r = curl("--cacert", proxy.ca, f"https://{pod.pod_ip}:{APP_PORT}/")
    assert r.returncode == 0 and r.status == 200 and PAGE in r.body, r
