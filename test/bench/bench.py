#!/usr/bin/python3
"""Side-by-side benchmarks: sidecar against nginx and haproxy as TLS-terminating reverse proxies
(and hitch as a TCP TLS terminator), in one run, on the same upstream, printing ratios.

  cpu        CPU time (user+sys of the proxy) per 100k keep-alive HTTPS requests, wrk; next to
             it, sidecar as a plain TCP relay (no TLS, no HTTP): what the sockets alone cost
  memory     RSS idle, and RSS per connection (KiB, delta / N) for N connections that are
             (a) idle after the handshake, (b) idle after carrying one 1 MB response,
             (c) pending (TCP connected, no byte sent), (d) slow readers of an 8 MB response
  handshake  proxy CPU per TLS handshake (us) and handshakes/s with 16 concurrent clients:
             openssl s_time for full TLS 1.3 and 1.2, resumed from TLS 1.2 and TLS 1.3 tickets;
             h2load opening a connection per request (it resumes from TLS 1.3 tickets)
  bulk       one 256 MB response through one connection (curl, one TLS 1.3 cipher for all):
             proxy CPU per GiB and MiB/s
  resume     sidecar alone: full vs resumed handshake CPU, one client (contained in handshake)
  h2         HTTP/2 terminated by the proxy, each stream sent to the HTTP/1.1 upstream: proxy CPU
             per 100k requests (h2load -c 8 -m 10), sidecar (http.http2) next to nginx (http2)
  all        cpu, memory, handshake, bulk, h2

Usage: test/bench/bench.py [cpu|memory|handshake|bulk|resume|h2|all] [--bin build/sidecar]
       [--seconds 10] [--rounds 3] [--idle 1000] [--slow 200] [--proxies sidecar-mbedtls,nginx]

sidecar runs once per compiled TLS backend (`tls_backend`, from `sidecar version`). Every proxy
runs one worker (nginx `worker_processes 1`, haproxy `nbthread 1`, hitch `workers = 1`) pinned to
CPU 0; this script, its load generators and the nginx upstream (serving files from tmpfs) run on
CPU 1. CPU and memory count worker processes only: the nginx and hitch masters are left out
(they do no work), sidecar and haproxy are one process. Each round starts every proxy afresh,
in alternating order, and the tables show medians over the rounds: a shared machine drifts.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "test" / "integration"))
from conftest import Nginx, free_port, stop_process, wait_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
TWO_CPUS = (os.cpu_count() or 1) > 1
# Long enough that no proxy closes a connection while it is being measured.
PROXY_TIMEOUT_S = 300


# ---------------------------------------------------------------------------------------------
# Process measurements


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_split(pids):
    """(user, system) CPU seconds of the processes, from /proc/<pid>/stat."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])  # utime
        system += int(fields[12])  # stime
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids):
    return sum(cpu_split(pids))


def fd_count(pids):
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


def client_cpu_seconds():
    """CPU used by this script's waited-for children (the load generators)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pinned(cpu, argv):
    """argv run on one CPU when the machine has a second one for the load generator."""
    return ["taskset", "-c", str(cpu)] + argv if TWO_CPUS else argv


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def wait_children(proc, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(proc.pid)
        if len(kids) >= count:
            return kids
        if proc.poll() is not None:
            break
        time.sleep(0.02)  # a fork has no readiness to await from outside
    raise RuntimeError(f"pid {proc.pid} did not start {count} worker(s)")


def settle_rss(pids, max_seconds, window=1.5, step=0.1):
    """Polls RSS until it has not moved for `window` seconds (or max_seconds pass).
    Returns (rss KiB, settled?)."""
    deadline = time.monotonic() + max_seconds
    samples = []
    while True:
        now = time.monotonic()
        samples.append((now, rss_kib(pids)))
        recent = [v for t, v in samples if t >= now - window]
        if samples[0][0] <= now - window and max(recent) - min(recent) <= max(16, max(recent) // 1000):
            return recent[-1], True
        if now >= deadline:
            return recent[-1], False
        time.sleep(step)  # RSS has no change notification


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def tool_version(argv, pattern=None):
    if not shutil.which(argv[0]):
        return None
    r = subprocess.run(argv, capture_output=True, text=True)
    text = (r.stdout + r.stderr).strip()
    m = re.search(pattern, text) if pattern else None
    return m.group(0) if m else text.splitlines()[0] if text else argv[0]


# ---------------------------------------------------------------------------------------------
# Proxies. Each has: name, port, pids (the measured worker processes), stop().


class SidecarProxy:
    """sidecar terminating TLS (HTTP or TCP mode); relay=True: a plain TCP listener, no TLS."""

    def __init__(self, binary, workdir, upstream_port, tls, backend=None, protocol="http", relay=False,
                 limits=False, h2=False):
        self.port = free_port()
        self.name = sidecar_name(backend, protocol, relay) + (" +limits" if limits else "") + (" h2" if h2 else "")
        front = "protocol: tcp" if relay else f"""protocol: {protocol}
    tls:
      certificate: {tls.cert}
      private_key: {tls.key}"""
        http_block = "    http:\n      access_log: false\n" if protocol == "http" and not relay else ""
        if h2:
            http_block += "      http2: true\n"
        backend_line = f"tls_backend: {backend}\n" if backend else ""
        t = f"{PROXY_TIMEOUT_S}s"
        cfg = Path(workdir) / f"bench-{self.name.replace('/', '-')}.yaml"
        cfg.write_text(f"""{backend_line}listeners:
  - name: bench
    listen: 127.0.0.1:{self.port}
    {front}
    upstream:
      address: 127.0.0.1:{upstream_port}
{http_block}    timeouts: {{ handshake: {t}, idle: {t}, header: {t} }}
    limits:
      max_connections: 100000
{LIMITS if limits else ""}admin:
  enabled: false
log:
  level: warn
""")
        self.log_path = cfg.with_suffix(".log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(pinned(0, [binary, "run", "-c", str(cfg)]), stdout=subprocess.DEVNULL,
                                         stderr=log)
        try:
            wait_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{self.name}: {e}\n{self.log_path.read_text()[-2000:]}") from None
        self.pids = [self.proc.pid]

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, timeout=30)


# Every rate limit configured, none of them reached by the benchmark's load: their bookkeeping is
# what the "+limits" rows cost.
LIMITS = """      connection_rate: { rate: 1000000/s, burst: 1000000 }
      per_client: { max_connections: 1000000, connection_rate: { rate: 1000000/s, burst: 1000000 } }
      request_rate: { rate: 1000000/s, burst: 1000000, key: client }
      upstream_concurrency: { max: 1000000, queue: 1000 }
"""


def sidecar_name(backend, protocol="http", relay=False):
    if relay:
        return "sidecar relay"
    return f"sidecar-{backend or 'mbedtls'}" + ("/tcp" if protocol == "tcp" else "")


class NginxTlsProxy:
    """nginx 1 worker, TLS reverse proxy with an upstream keep-alive pool. Responses are streamed
    (proxy_max_temp_file_size 0) rather than spooled to disk, as the other proxies do."""

    name = "nginx"

    def __init__(self, workdir, upstream_port, tls, capacity, backlog=None, h2=False):
        self.port = free_port()
        if h2:
            self.name = "nginx h2"
        d = Path(tempfile.mkdtemp(prefix="nginx-tls-", dir=workdir))
        self.error_log = d / "error.log"
        listen_backlog = f" backlog={backlog}" if backlog else ""  # None: nginx's default (511)
        (d / "tmp").mkdir()
        conf = d / "nginx.conf"
        t = f"{PROXY_TIMEOUT_S}s"
        conf.write_text(f"""
worker_processes 1;
worker_rlimit_nofile {2 * capacity + 100};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {2 * capacity}; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp;
  proxy_temp_path {d}/tmp;
  fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp;
  scgi_temp_path {d}/tmp;
  keepalive_requests 1000000;
  keepalive_timeout {t};
  client_header_timeout {t};
  send_timeout {t};
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{self.port} ssl{" http2" if h2 else ""}{listen_backlog};
    ssl_certificate {tls.cert};
    ssl_certificate_key {tls.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_max_temp_file_size 0;
      proxy_read_timeout {t};
      proxy_send_timeout {t};
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Host $host;
    }}
  }}
}}
""")
        self.proc = subprocess.Popen(pinned(0, ["nginx", "-p", str(d), "-c", str(conf), "-g", "daemon off;"]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        self.pids = wait_children(self.proc, 1)

    def stop(self):
        stop_process(self.proc, signal.SIGQUIT, timeout=30)


class HaproxyTlsProxy:
    """haproxy, one process with one thread, TLS termination in http mode, upstream connections
    reused across requests (http-reuse always)."""

    name = "haproxy"

    def __init__(self, workdir, upstream_port, tls, capacity):
        self.port = free_port()
        d = Path(tempfile.mkdtemp(prefix="haproxy-", dir=workdir))
        cfg = d / "haproxy.cfg"
        t = f"{PROXY_TIMEOUT_S}s"
        # haproxy derives its fd limit from maxconn (two fds per proxied connection).
        cfg.write_text(f"""
global
    nbthread 1
    maxconn {capacity}
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client {t}
    timeout server {t}
    timeout http-request {t}
    timeout http-keep-alive {t}
frontend bench
    bind 127.0.0.1:{self.port} ssl crt {tls.pem}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend app
backend app
    http-reuse always
    server app 127.0.0.1:{upstream_port}
""")
        self.log_path = d / "haproxy.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(pinned(0, ["haproxy", "-db", "-f", str(cfg)]), stdout=log, stderr=log)
        try:
            wait_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"haproxy: {e}\n{self.log_path.read_text()[-2000:]}") from None
        self.pids = [self.proc.pid]

    def stop(self):
        stop_process(self.proc, signal.SIGUSR1, timeout=30)


class HitchProxy:
    """hitch, one worker: TLS termination at TCP level (no HTTP), a backend connection per client."""

    name = "hitch/tcp"

    def __init__(self, workdir, upstream_port, tls):
        self.port = free_port()
        d = Path(tempfile.mkdtemp(prefix="hitch-", dir=workdir))
        cfg = d / "hitch.conf"
        cfg.write_text(f"""
frontend = "[127.0.0.1]:{self.port}"
backend = "[127.0.0.1]:{upstream_port}"
pem-file = "{tls.pem}"
tls-protos = TLSv1.2 TLSv1.3
workers = 1
backlog = 1024
daemon = off
log-level = 1
user = "nobody"
""")
        self.log_path = d / "hitch.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(pinned(0, ["hitch", f"--config={cfg}"]), stdout=log, stderr=log)
        try:
            wait_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"hitch: {e}\n{self.log_path.read_text()[-2000:]}") from None
        # The children: the worker (and an idle OCSP helper); the master does no work.
        self.pids = wait_children(self.proc, 1)

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, timeout=30)


class Lineup:
    """Which proxies this run has, in a fixed order, and how to start each."""

    def __init__(self, args, tmp, tls, upstream):
        self.args, self.tmp, self.tls, self.upstream = args, tmp, tls, upstream
        # Client connections any proxy must hold at once in this run. nginx and haproxy
        # preallocate per-slot tables for their configured maximum, so it is sized to the run.
        self.capacity = max(args.idle, args.slow, args.connections, args.clients) + 100
        self.backends, note = sidecar_backends(args.bin, tmp, tls)
        self.notes = [note] if note else []
        self.notes.append(f"nginx worker_connections {2 * self.capacity} and haproxy maxconn {self.capacity}, "
                          f"sized to this run (their idle RSS grows with these settings)")
        self.have = {"nginx": True}
        for peer in ("haproxy", "hitch"):
            self.have[peer] = bool(shutil.which(peer))
            if not self.have[peer]:
                self.notes.append(f"{peer} is not installed: its rows are skipped "
                                  f"(apt-get install -y {peer})")

    def makers(self, http=True, tcp=False, relay=False):
        """name -> a function starting that proxy. http: the HTTP-mode TLS proxies; tcp: TCP-mode
        TLS (sidecar in tcp mode, hitch); relay: sidecar as a plain TCP relay."""
        a, up, tls = self.args, self.upstream.port, self.tls
        out = {}
        if http:
            for b in self.backends:
                out[sidecar_name(b)] = lambda b=b: SidecarProxy(a.bin, self.tmp, up, tls, backend=b)
                if getattr(a, "limits", False):
                    out[sidecar_name(b) + " +limits"] = lambda b=b: SidecarProxy(a.bin, self.tmp, up, tls,
                                                                                backend=b, limits=True)
            out["nginx"] = lambda: NginxTlsProxy(self.tmp, up, tls, self.capacity)
            if self.have["haproxy"]:
                out["haproxy"] = lambda: HaproxyTlsProxy(self.tmp, up, tls, self.capacity)
        if tcp:
            for b in self.backends:
                out[sidecar_name(b, "tcp")] = lambda b=b: SidecarProxy(a.bin, self.tmp, up, tls, backend=b,
                                                                      protocol="tcp")
            if self.have["hitch"]:
                out["hitch/tcp"] = lambda: HitchProxy(self.tmp, up, tls)
        if relay:
            out["sidecar relay"] = lambda: SidecarProxy(a.bin, self.tmp, up, tls, relay=True)
        if a.proxies:
            wanted = set(a.proxies.split(","))
            out = {k: v for k, v in out.items() if k in wanted}
        return out


def sidecar_backends(binary, tmp, tls):
    """The TLS backends to run sidecar with: [None] (no tls_backend key: the default, mbedTLS)
    when the binary does not take the key; else every backend `sidecar version` names."""
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.lower()
    compiled = [b for b in ("mbedtls", "openssl") if b in version] or ["mbedtls"]
    usable = []
    for backend in compiled:
        cfg = Path(tmp) / f"probe-{backend}.yaml"
        cfg.write_text(f"""tls_backend: {backend}
listeners:
  - name: probe
    listen: 127.0.0.1:{free_port()}
    tls: {{ certificate: {tls.cert}, private_key: {tls.key} }}
    upstream: {{ address: 127.0.0.1:9 }}
admin: {{ enabled: false }}
""")
        r = subprocess.run([binary, "check-config", "-c", str(cfg)], capture_output=True, text=True)
        if r.returncode == 0:
            usable.append(backend)
        elif "tls_backend" in r.stderr and "unknown key" in r.stderr:
            return [None], ("this sidecar binary does not take `tls_backend`: only its default "
                            "backend (mbedTLS) is measured")
        else:
            print(f"  note: sidecar with tls_backend {backend} is refused: {r.stderr.strip()}")
    return usable or [None], None


class Tls:
    """An ECDSA P-256 certificate from `sidecar gen-cert`, and the cert+key PEM haproxy/hitch read."""

    def __init__(self, binary, tmp):
        r = subprocess.run([binary, "gen-cert", "--out", f"{tmp}/cert"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self.cert, self.key = f"{tmp}/cert/tls.crt", f"{tmp}/cert/tls.key"
        self.pem = f"{tmp}/cert/combined.pem"
        Path(self.pem).write_text(Path(self.cert).read_text() + Path(self.key).read_text())


class Upstream(Nginx):
    """The integration tests' nginx upstream, serving /small and /files/<size> from tmpfs."""

    def __init__(self, workdir, files_dir, nofile):
        super().__init__(workdir, extra_server=f"location /files/ {{ alias {files_dir}/; }}")
        text = self.conf.read_text()
        text = text.replace("events { worker_connections 4096; }",
                            f"worker_rlimit_nofile {nofile};\nevents {{ worker_connections {nofile - 100}; }}")
        text = re.sub(r"access_log [^;]*;", "access_log off;", text)
        self.conf.write_text(text)


def make_files(directory, sizes_mib):
    block = os.urandom(MIB)
    for size in sizes_mib:
        with open(Path(directory) / f"{size}m.bin", "wb") as f:
            for _ in range(size):
                f.write(block)


def client_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    return ctx


def negotiated(port, ctx):
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as s:
        return f"{s.version()} {s.cipher()[0]}"


# ---------------------------------------------------------------------------------------------
# Output


def md_table(title, headers, rows):
    print(f"\n#### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def fmt(value, digits=1):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def print_ratios(names, columns, values):
    """One line per sidecar row and peer, column by column: the sidecar value over the peer's.
    HTTP-mode rows compare with nginx and haproxy, TCP-mode rows with hitch."""
    for name in names:
        if not name.startswith("sidecar-"):
            continue
        peers = ("hitch/tcp",) if name.endswith("/tcp") else ("nginx", "haproxy")
        for peer in peers:
            if peer not in values:
                continue
            parts = [f"{col} {ratio(values[name][i], values[peer][i])}" for i, col in enumerate(columns)]
            print(f"  ratio {name}/{peer}: " + ", ".join(parts))


def print_header(title, lineup):
    print(f"\n== {title}")
    for note in lineup.notes:
        print(f"  note: {note}")


def rounds_order(names, rnd):
    return list(names) if rnd % 2 == 0 else list(reversed(names))


# ---------------------------------------------------------------------------------------------
# cpu


def wrk(url, seconds, connections):
    out = subprocess.run(pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]),
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return (int(m.group(1)) if m else 0, out, (errors.group(1) if errors else "0"),
            (sock_err.group(1) if sock_err else "none"))


def bench_cpu(args, lineup):
    print_header(f"CPU per 100k keep-alive requests (wrk -c{args.connections}, {args.seconds}s per run, "
                 f"{args.rounds} rounds, small responses from the nginx upstream)", lineup)
    makers = lineup.makers(http=True, relay=True)
    runs = {name: [] for name in makers}
    for rnd in range(args.rounds):
        for name in rounds_order(makers, rnd):
            proxy = makers[name]()
            scheme = "http" if name == "sidecar relay" else "https"
            url = f"{scheme}://127.0.0.1:{proxy.port}/small"
            try:
                wrk(url, 1, args.connections)  # warm-up: handshakes, upstream connections
                u0, s0 = cpu_split(proxy.pids)
                n, out, non2xx, sock_err = wrk(url, args.seconds, args.connections)
                u1, s1 = cpu_split(proxy.pids)
            finally:
                proxy.stop()
            if not n or non2xx != "0" or sock_err != "none":
                sys.exit(f"bench: {name} failed: requests={n} non-2xx={non2xx} socket errors={sock_err}\n{out}")
            scale = 100000 / n
            runs[name].append(((u1 - u0 + s1 - s0) * scale, (u1 - u0) * scale, (s1 - s0) * scale,
                               n / args.seconds))
            r = runs[name][-1]
            print(f"  round {rnd + 1} {name:16s} requests={n:8d} cpu/100k={r[0]:5.2f}s "
                  f"(user {r[1]:4.2f}s, sys {r[2]:4.2f}s)  req/s={r[3]:7.0f}")
    med = {name: [median([r[i] for r in rs]) for i in range(4)] for name, rs in runs.items()}
    md_table("CPU per 100k keep-alive HTTPS requests (proxy user+sys, medians)",
             ["proxy", "CPU s / 100k req", "user s", "sys s", "req/s"],
             [[name, fmt(m[0], 2), fmt(m[1], 2), fmt(m[2], 2), fmt(m[3], 0)] for name, m in med.items()])
    print_ratios(list(med), ["CPU/request"], {k: [v[0]] for k, v in med.items()})
    for name in med:
        if name.endswith(" +limits") and name[:-len(" +limits")] in med:
            print(f"  ratio {name}/{name[:-len(' +limits')]} (rate limits and the upstream cap configured, "
                  f"none reached): {ratio(med[name][0], med[name[:-len(' +limits')]][0])}")
    if "sidecar relay" in med and "nginx" in med:
        print(f"  ratio sidecar relay/nginx (the same reads and writes with no TLS and no parsing): "
              f"{ratio(med['sidecar relay'][0], med['nginx'][0])}")
    return med


# ---------------------------------------------------------------------------------------------
# HTTP/2 terminated by the proxy, streams to the HTTP/1.1 upstream


def h2load(url, requests, clients, streams):
    out = subprocess.run(pinned(1, ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), url]),
                         capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    return (int(m.group(1)) if m else 0, int(codes.group(1)) if codes else 0, out)


def bench_h2(args, lineup):
    n = args.h2_requests
    print_header(f"HTTP/2: CPU per 100k requests, h2load -n {n} -c {args.h2_clients} -m {args.h2_streams} "
                 f"through each proxy terminating h2 to the HTTP/1.1 nginx upstream; {args.rounds} rounds", lineup)
    a, up, tls = args, lineup.upstream.port, lineup.tls
    makers = {sidecar_name(b) + " h2": (lambda b=b: SidecarProxy(a.bin, lineup.tmp, up, tls, backend=b, h2=True))
              for b in lineup.backends}
    makers["nginx h2"] = lambda: NginxTlsProxy(lineup.tmp, up, tls, lineup.capacity, h2=True)
    if a.proxies:
        wanted = set(a.proxies.split(","))
        makers = {k: v for k, v in makers.items() if k in wanted}
    runs = {name: [] for name in makers}
    for rnd in range(args.rounds):
        for name in rounds_order(makers, rnd):
            proxy = makers[name]()
            url = f"https://127.0.0.1:{proxy.port}/small"
            try:
                h2load(url, min(n, 2000), args.h2_clients, args.h2_streams)  # warm-up
                u0, s0 = cpu_split(proxy.pids)
                t0 = time.monotonic()
                ok, ok2xx, out = h2load(url, n, args.h2_clients, args.h2_streams)
                elapsed = time.monotonic() - t0
                u1, s1 = cpu_split(proxy.pids)
            finally:
                proxy.stop()
            if ok != n or ok2xx != n or "Application protocol: h2" not in out:
                sys.exit(f"bench: {name} failed: {ok} succeeded, {ok2xx} 2xx of {n}\n{out}")
            scale = 100000 / n
            runs[name].append(((u1 - u0 + s1 - s0) * scale, (u1 - u0) * scale, (s1 - s0) * scale, n / elapsed))
            r = runs[name][-1]
            print(f"  round {rnd + 1} {name:18s} cpu/100k={r[0]:5.2f}s (user {r[1]:4.2f}s, sys {r[2]:4.2f}s)  "
                  f"req/s={r[3]:7.0f}")
    med = {name: [median([r[i] for r in rs]) for i in range(4)] for name, rs in runs.items()}
    md_table("CPU per 100k HTTP/2 requests to an HTTP/1.1 app (proxy user+sys, medians)",
             ["proxy", "CPU s / 100k req", "user s", "sys s", "req/s"],
             [[name, fmt(m[0], 2), fmt(m[1], 2), fmt(m[2], 2), fmt(m[3], 0)] for name, m in med.items()])
    names = list(med)
    if "nginx h2" in med:
        for name in names:
            if name != "nginx h2":
                print(f"  ratio {name}/nginx h2: CPU/request {ratio(med[name][0], med['nginx h2'][0])}")
    return med


# ---------------------------------------------------------------------------------------------
# memory


def read_response(s):
    """Reads one HTTP/1.1 response with a Content-Length; returns the body length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected response: {head[:80]!r}")
    length = int(re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head).group(1))
    got = len(body)
    while got < length:
        chunk = s.recv(min(length - got, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        got += len(chunk)
    return length


def request(path):
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


SLOW_READER_RCVBUF = 64 * 1024


def open_connection(kind, port, ctx, slow_path):
    """One client connection left open in the state `kind` names."""
    if kind == "pending":
        return socket.create_connection(("127.0.0.1", port))
    raw = socket.socket()
    if kind == "slow":
        # A fixed small receive window: without it loopback autotuning would let the client's kernel
        # take the whole response, and the proxy would hold nothing.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READER_RCVBUF)
    raw.connect(("127.0.0.1", port))
    s = ctx.wrap_socket(raw)
    if kind == "after1m":
        s.sendall(request("/files/1m.bin"))
        read_response(s)
    elif kind == "slow":
        s.sendall(request(slow_path))
        if not s.recv(4096):
            raise ConnectionError("slow reader: no response")
    return s


MEMORY_KINDS = [
    ("handshake", "(a) idle after handshake"),
    ("after1m", "(b) idle after 1 MB"),
    ("pending", "(c) pending, no bytes"),
    ("slow", "(d) slow reader"),
]


def measure_memory(proxy, kind, count, ctx, slow_path, settle_s):
    """(idle RSS KiB, KiB per connection, settled?) for `count` connections of `kind`."""
    # Warm-up: one connection through the same path, closed, so that lazily set-up state
    # (TLS library tables, allocator arenas) is in the baseline rather than in the first connection.
    warm = open_connection("after1m", proxy.port, ctx, slow_path)
    warm.sendall(request(slow_path))
    read_response(warm)
    warm.close()
    base, _ = settle_rss(proxy.pids, settle_s)
    fds = fd_count(proxy.pids)
    socks = []
    try:
        for _ in range(count):
            socks.append(open_connection(kind, proxy.port, ctx, slow_path))
        # Wait until the proxy has accepted them all (pending connections are accepted after
        # connect() returns), then until its RSS stops moving.
        deadline = time.monotonic() + settle_s
        while fd_count(proxy.pids) < fds + count and time.monotonic() < deadline:
            time.sleep(0.05)  # accept has no outside notification
        loaded, settled = settle_rss(proxy.pids, settle_s, window=3.0 if kind == "slow" else 1.5)
    finally:
        for s in socks:
            s.close()
    return base, (loaded - base) / count, settled


def bench_memory(args, lineup, ctx):
    slow_path = f"/files/{args.slow_mb}m.bin"
    print_header(f"memory: RSS per connection (delta RSS / N) for N={args.idle} idle-after-handshake, "
                 f"idle-after-1MB and pending connections, N={args.slow} slow readers of {args.slow_mb} MB "
                 f"(client SO_RCVBUF {SLOW_READER_RCVBUF // 1024} KiB, reads only the first bytes); "
                 f"{args.rounds} rounds", lineup)
    makers = lineup.makers(http=True)
    runs = {name: {k: [] for k, _ in MEMORY_KINDS} | {"idle": []} for name in makers}
    for rnd in range(args.rounds):
        for name in rounds_order(makers, rnd):
            for kind, label in MEMORY_KINDS:
                count = args.slow if kind == "slow" else args.idle
                proxy = makers[name]()
                try:
                    base, per_conn, settled = measure_memory(proxy, kind, count, ctx, slow_path, args.settle)
                finally:
                    proxy.stop()
                runs[name][kind].append(per_conn)
                runs[name]["idle"].append(base)
                print(f"  round {rnd + 1} {name:16s} {label:26s} N={count:5d} idle={base:7d} KiB  "
                      f"per connection={per_conn:7.1f} KiB" + ("" if settled else "  (RSS still moving)"))
    med = {name: [median(r["idle"])] + [median(r[k]) for k, _ in MEMORY_KINDS] for name, r in runs.items()}
    headers = ["proxy", "idle RSS KiB"] + [f"{label} KiB/conn" for _, label in MEMORY_KINDS]
    md_table(f"memory per connection (KiB, medians; N={args.idle}, slow readers N={args.slow})", headers,
             [[name, fmt(m[0], 0)] + [fmt(v) for v in m[1:]] for name, m in med.items()])
    print_ratios(list(med), ["idle", "(a)", "(b)", "(c)", "(d)"], med)
    return med


# ---------------------------------------------------------------------------------------------
# handshake
#
# openssl s_time makes a full handshake per connection with -new and a resumed one with -reuse,
# and says which connections resumed. It is an expensive client (about twice the server's CPU per
# full handshake here), so its handshakes/s can be bound by the client CPU: the log line gives the
# client's share of its core. h2load with `Connection: close` is a cheaper client that opens a
# connection per request, but it resumes each from the TLS 1.3 ticket of the one before: its
# column is a resumed-handshake load, not a full one.


def s_time(port, version, mode, www, seconds, clients):
    """`clients` openssl s_time processes at once. Returns (connections, resumed or None, wall
    seconds, client CPU seconds)."""
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-time", str(seconds), version, mode]
    if www:
        argv += ["-www", "/small"]
    c0 = client_cpu_seconds()
    t0 = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(clients)]
    outs = [p.communicate(timeout=seconds + 60)[0] for p in procs]
    wall = time.monotonic() - t0
    connections = resumed = 0
    for out in outs:
        m = re.search(r"(\d+) connections in", out)
        connections += int(m.group(1)) if m else 0
        # s_time prints one character per connection: 'r' when the session was resumed.
        resumed += sum(line.count("r") for line in out.splitlines() if re.fullmatch(r"[rt3*]+", line))
    return connections, resumed, wall, client_cpu_seconds() - c0


# The order OpenSSL clients (s_time, curl, Python) offer by default; h2load's own puts AES-128 first.
TLS13_CIPHERS = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"


def h2load_reconnect(port, seconds, clients):
    """h2load, HTTP/1.1, a new connection per request. Its duration mode does not finish with
    `Connection: close`, so a short calibration run sizes the request count to about `seconds`."""

    def run(n):
        argv = ["h2load", "--h1", f"--tls13-ciphers={TLS13_CIPHERS}", f"-n{n}", f"-c{clients}",
                "-H", "Connection: close", f"https://127.0.0.1:{port}/small"]
        c0 = client_cpu_seconds()
        t0 = time.monotonic()
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds * 10 + 30).stdout
        except subprocess.TimeoutExpired:
            return 0, time.monotonic() - t0, client_cpu_seconds() - c0
        m = re.search(r"(\d+) succeeded", out)
        return (int(m.group(1)) if m else 0), time.monotonic() - t0, client_cpu_seconds() - c0

    done, wall, _ = run(clients * 20)
    return run(max(clients * 20, min(200000, int(done / max(wall, 1e-3) * seconds))))


HANDSHAKE_MODES = [
    # key, short label, label, runner(port, seconds, clients) -> (n, resumed|None, wall, client cpu)
    ("full13", "full1.3", "full TLS 1.3",
     lambda p, s, c: s_time(p, "-tls1_3", "-new", False, s, c)),
    ("full12", "full1.2", "full TLS 1.2",
     lambda p, s, c: s_time(p, "-tls1_2", "-new", False, s, c)),
    ("res12", "res1.2", "resumed TLS 1.2 ticket",
     lambda p, s, c: s_time(p, "-tls1_2", "-reuse", False, s, c)),
    # TLS 1.3 tickets arrive after the handshake, so the client must read: these carry one small
    # request per connection, and the full handshake beside them the same request.
    ("full13get", "full1.3+GET", "full TLS 1.3 + GET",
     lambda p, s, c: s_time(p, "-tls1_3", "-new", True, s, c)),
    ("res13get", "res1.3+GET", "resumed TLS 1.3 ticket + GET",
     lambda p, s, c: s_time(p, "-tls1_3", "-reuse", True, s, c)),
    ("h2load", "h2load", "h2load reconnect + GET (TLS 1.3 resumed)",
     lambda p, s, c: (lambda n, wall, cpu: (n, None, wall, cpu))(*h2load_reconnect(p, s, c))),
]


def handshake_row(proxy, seconds, clients, modes):
    """{key: (proxy CPU us per handshake, handshakes/s, resumed share or None, client CPU share)}."""
    row = {}
    for key, _, label, runner in modes:
        before = cpu_seconds(proxy.pids)
        n, resumed, wall, client_cpu = runner(proxy.port, seconds, clients)
        used = cpu_seconds(proxy.pids) - before
        if not n:
            row[key] = (None, None, None, None)
            print(f"    {label:40s} no connection completed")
            continue
        row[key] = (used / n * 1e6, n / wall, None if resumed is None else resumed / n, client_cpu / wall)
        share = "" if resumed is None else f"resumed={resumed / n:4.0%}  "
        print(f"    {label:40s} connections={n:7d} {share}proxy cpu={used:5.2f}s  "
              f"cpu/handshake={row[key][0]:7.1f} us  handshakes/s={row[key][1]:7.0f}  "
              f"client cpu={client_cpu / wall:4.0%} of a core")
    return row


def bench_handshake(args, lineup):
    print_header(f"TLS handshakes: {args.clients} concurrent clients, about {args.handshake_seconds}s per "
                 f"figure, {args.rounds} rounds, ECDSA P-256 certificate; openssl s_time unless the column "
                 f"says h2load", lineup)
    print("  note: hitch/tcp and sidecar in tcp mode connect to the upstream for every client connection; "
          "the HTTP-mode proxies only for a request")
    makers = lineup.makers(http=True, tcp=True)
    runs = {name: [] for name in makers}
    for rnd in range(args.rounds):
        for name in rounds_order(makers, rnd):
            proxy = makers[name]()
            try:
                print(f"  round {rnd + 1} {name} ({negotiated(proxy.port, lineup.ctx)})")
                runs[name].append(handshake_row(proxy, args.handshake_seconds, args.clients, HANDSHAKE_MODES))
            finally:
                proxy.stop()
    keys = [m[0] for m in HANDSHAKE_MODES]
    short = [m[1] for m in HANDSHAKE_MODES]
    labels = [m[2] for m in HANDSHAKE_MODES]

    def med(name, key, i):
        values = [r[key][i] for r in runs[name] if r[key][i] is not None]
        return median(values) if values else None

    cpu = {name: [med(name, k, 0) for k in keys] for name in runs}
    rate = {name: [med(name, k, 1) for k in keys] for name in runs}
    client = {name: [med(name, k, 3) for k in keys] for name in runs}
    md_table("proxy CPU per handshake (us, medians; lower is better)", ["proxy"] + labels,
             [[name] + [fmt(v) for v in cpu[name]] for name in runs])
    md_table(f"handshakes/s with {args.clients} clients (medians; in parentheses the load generator's "
             f"share of its one core: near 100% means the client, not the proxy, set the rate)",
             ["proxy"] + labels,
             [[name] + [f"{fmt(v, 0)} ({fmt(None if c is None else c * 100, 0)}%)"
                        for v, c in zip(rate[name], client[name])] for name in runs])
    print("  CPU per handshake:")
    print_ratios(list(cpu), short, cpu)
    print("  handshakes/s:")
    print_ratios(list(rate), short, rate)
    for name in runs:
        for i, key in enumerate(keys):
            shares = [r[key][2] for r in runs[name] if r[key][2] is not None]
            if key.startswith("res") and shares and min(shares) < 0.9:
                print(f"  note: {name} resumed only {min(shares):.0%} of '{labels[i]}' connections")
            if key.startswith("full") and shares and max(shares) > 0.1:
                print(f"  note: {name} resumed {max(shares):.0%} of '{labels[i]}' connections")
    return cpu, rate


def bench_resume(args, lineup):
    print_header("TLS handshakes, sidecar alone: full vs resumed (one openssl s_time client, 5s each)", lineup)
    for name, make in lineup.makers(http=True).items():
        if not name.startswith("sidecar"):
            continue
        proxy = make()
        try:
            print(f"  {name}")
            handshake_row(proxy, 5, 1, [m for m in HANDSHAKE_MODES if m[0] != "h2load"])
        finally:
            proxy.stop()

# ---------------------------------------------------------------------------------------------
# bulk


def bulk_transfer(port, path, cafile, tls13_cipher):
    """One response through one connection with curl. Returns (bytes, seconds, "version cipher")."""
    argv = ["curl", "-sSv", "--cacert", cafile, "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
    if tls13_cipher != "default":
        argv += ["--tls13-ciphers", tls13_cipher]
    out = subprocess.run(argv + [f"https://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=600)
    code, size, total = out.stdout.split()
    if code != "200":
        raise RuntimeError(f"bulk: HTTP {code}: {out.stderr[-2000:]}")
    m = re.search(r"SSL connection using (\S+) / (\S+)", out.stderr)
    return int(size), float(total), f"{m.group(1)} {m.group(2)}" if m else "?"


def bench_bulk(args, lineup):
    path = f"/files/{args.bulk_mb}m.bin"
    print_header(f"bulk: one {args.bulk_mb} MiB response through one connection (curl -o /dev/null, "
                 f"TLS 1.3 cipher offered: {args.bulk_cipher}), {args.rounds} rounds", lineup)
    makers = lineup.makers(http=True, tcp=True)
    runs = {name: [] for name in makers}
    for rnd in range(args.rounds):
        for name in rounds_order(makers, rnd):
            proxy = makers[name]()
            try:
                bulk_transfer(proxy.port, "/files/1m.bin", lineup.tls.cert, args.bulk_cipher)  # warm-up
                u0, s0 = cpu_split(proxy.pids)
                size, seconds, tls_used = bulk_transfer(proxy.port, path, lineup.tls.cert, args.bulk_cipher)
                u1, s1 = cpu_split(proxy.pids)
            finally:
                proxy.stop()
            if size != args.bulk_mb * MIB:
                sys.exit(f"bench: {name} delivered {size} bytes of {args.bulk_mb * MIB}")
            gib = size / (1 << 30)
            runs[name].append(((u1 - u0 + s1 - s0) / gib, (u1 - u0) / gib, (s1 - s0) / gib,
                               size / MIB / seconds))
            r = runs[name][-1]
            print(f"  round {rnd + 1} {name:16s} {size / MIB:5.0f} MiB in {seconds:5.2f}s  {r[3]:7.1f} MiB/s  "
                  f"cpu/GiB={r[0]:5.2f}s (user {r[1]:4.2f}s, sys {r[2]:4.2f}s)  {tls_used}")
    med = {name: [median([r[i] for r in rs]) for i in range(4)] for name, rs in runs.items()}
    md_table(f"one {args.bulk_mb} MiB response through one connection (medians)",
             ["proxy", "CPU s / GiB", "user s / GiB", "sys s / GiB", "MiB/s"],
             [[name, fmt(m[0], 2), fmt(m[1], 2), fmt(m[2], 2), fmt(m[3], 0)] for name, m in med.items()])
    print_ratios(list(med), ["CPU/GiB", "user/GiB", "sys/GiB", "MiB/s"], med)
    return med


# ---------------------------------------------------------------------------------------------


def print_versions(binary):
    versions = [
        subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip(),
        tool_version(["nginx", "-v"]),
        tool_version(["haproxy", "-v"], r"HAProxy version \S+"),
        tool_version(["hitch", "--version"]),
        tool_version(["openssl", "version"]),
        tool_version(["curl", "--version"]),
        tool_version(["wrk", "-v"]),
    ]
    print("== versions: " + "; ".join(" ".join(v.split()) for v in versions if v))
    print(f"== load: {os.getloadavg()[0]:.2f} (1-minute average) on {os.cpu_count()} CPUs")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="?", default="all", choices=["cpu", "memory", "handshake", "bulk", "resume", "h2", "all"])
    ap.add_argument("--bin", default=str(ROOT / "build" / "sidecar"))
    ap.add_argument("--seconds", type=int, default=10, help="wrk run length (cpu)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (cpu)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=1000, help="N for memory (a), (b), (c)")
    ap.add_argument("--slow", type=int, default=200, help="N slow readers for memory (d)")
    ap.add_argument("--slow-mb", type=int, default=8, help="response size for the slow readers")
    ap.add_argument("--settle", type=float, default=30, help="max seconds to wait for RSS to stop moving")
    ap.add_argument("--clients", type=int, default=16, help="concurrent handshake clients")
    ap.add_argument("--handshake-seconds", type=int, default=5, help="run length of each handshake figure")
    ap.add_argument("--bulk-mb", type=int, default=256)
    ap.add_argument("--bulk-cipher", default="TLS_AES_128_GCM_SHA256",
                    help="the one TLS 1.3 cipher curl offers in bulk, so that every proxy encrypts alike "
                         "('default': curl's list, and each proxy picks)")
    ap.add_argument("--proxies", help="comma-separated subset, e.g. sidecar-mbedtls,nginx")
    ap.add_argument("--h2-requests", type=int, default=200000, help="h2load -n (h2)")
    ap.add_argument("--h2-clients", type=int, default=8, help="h2load -c (h2)")
    ap.add_argument("--h2-streams", type=int, default=10, help="h2load -m (h2)")
    ap.add_argument("--limits", action="store_true",
                    help="cpu: also each sidecar row with every limit configured but never reached")
    args = ap.parse_args()

    if TWO_CPUS:
        os.sched_setaffinity(0, {1})  # this script, its clients and the upstream; proxies get CPU 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    needed = max(args.idle, args.slow) * 2 + 200  # sidecar pairs every connection with an upstream one
    if hard < needed:
        sys.exit(f"bench: RLIMIT_NOFILE hard limit {hard} is below the {needed} this N needs")

    print_versions(args.bin)
    tmp = tempfile.mkdtemp(prefix="sidecar-bench-")
    files = tempfile.mkdtemp(prefix="sidecar-bench-files-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    upstream = None
    try:
        make_files(files, sorted({1, args.slow_mb} | ({args.bulk_mb} if args.what in ("bulk", "all") else set())))
        tls = Tls(args.bin, tmp)
        upstream = Upstream(tmp, files, hard).start()
        lineup = Lineup(args, tmp, tls, upstream)
        lineup.ctx = client_context(tls.cert)
        if args.what in ("cpu", "all"):
            bench_cpu(args, lineup)
        if args.what in ("memory", "all"):
            bench_memory(args, lineup, lineup.ctx)
        if args.what in ("handshake", "all"):
            bench_handshake(args, lineup)
        if args.what in ("bulk", "all"):
            bench_bulk(args, lineup)
        if args.what == "resume":
            bench_resume(args, lineup)
        if args.what in ("h2", "all"):
            bench_h2(args, lineup)
        print(f"== load at the end: {os.getloadavg()[0]:.2f} (1-minute average)")
    finally:
        if upstream is not None:
            upstream.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)


if __name__ == "__main__":
    main()
