#!/usr/bin/python3
"""Side-by-side benchmarks: sidecar against nginx as a TLS-terminating reverse proxy, in one run,
on the same upstream, printing ratios.

  cpu     CPU time (user+sys of the proxy processes) per 100k keep-alive HTTPS requests, wrk;
          next to it, sidecar as a plain TCP relay (no TLS, no HTTP): what the sockets alone cost
  memory  RSS idle, and with N idle TLS connections open
  resume  full vs resumed TLS handshake cost (CPU per handshake), openssl s_time

Usage: test/bench/bench.py [cpu|memory|resume|all] [--bin build/sidecar] [--seconds 10] [--rounds 3]
Both proxies run one worker process on the one loopback upstream, pinned to CPU 0; wrk runs on
CPU 1. The cpu rounds alternate the proxies and report medians, since a shared machine drifts.
"""
import argparse
import os
import re
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
from conftest import LogReader, Nginx, free_port, wait_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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


def pinned(cpu, argv):
    """argv run on one CPU when the machine has a second one for the load generator."""
    return ["taskset", "-c", str(cpu)] + argv if (os.cpu_count() or 1) > 1 else argv


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


class SidecarProxy:
    """sidecar terminating TLS in HTTP mode; with relay=True a plain TCP listener in tcp mode."""

    def __init__(self, binary, workdir, upstream_port, cert, key, relay=False):
        self.port = free_port()
        self.name = "relay" if relay else "sidecar"
        self.scheme = "http" if relay else "https"
        cfg = Path(workdir) / f"bench-{self.name}.yaml"
        front = "protocol: tcp" if relay else f"""protocol: http
    tls:
      certificate: {cert}
      private_key: {key}"""
        http_block = "" if relay else "    http:\n      access_log: false\n"
        cfg.write_text(f"""listeners:
  - name: bench
    listen: 127.0.0.1:{self.port}
    {front}
    upstream:
      address: 127.0.0.1:{upstream_port}
{http_block}    limits:
      max_connections: 100000
admin:
  enabled: false
log:
  level: warn
""")
        self.proc = subprocess.Popen(pinned(0, [binary, "run", "-c", str(cfg)]), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_port(self.port, proc=self.proc)
        self.pids = [self.proc.pid]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class NginxTlsProxy:
    name = "nginx"
    scheme = "https"

    def __init__(self, workdir, upstream_port, cert, key):
        self.port = free_port()
        d = Path(tempfile.mkdtemp(prefix="nginx-tls-", dir=workdir))
        (d / "tmp").mkdir()
        conf = d / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
worker_rlimit_nofile 200000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 100000; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp;
  proxy_temp_path {d}/tmp;
  fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp;
  scgi_temp_path {d}/tmp;
  keepalive_requests 1000000;
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
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
        self.pids = [self.proc.pid] + children(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=30)


def wrk(url, seconds, connections):
    out = subprocess.run(pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]),
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return int(m.group(1)), out, (errors.group(1) if errors else "0"), (sock_err.group(1) if sock_err else "none")


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def bench_cpu(args, tmp, cert, key, upstream):
    print(f"== CPU per 100k keep-alive requests (wrk -c{args.connections}, {args.seconds}s per run, "
          f"{args.rounds} rounds, small responses from the nginx upstream)")
    makers = {
        "sidecar": lambda: SidecarProxy(args.bin, tmp, upstream.port, cert, key),
        "nginx": lambda: NginxTlsProxy(tmp, upstream.port, cert, key),
        "relay": lambda: SidecarProxy(args.bin, tmp, upstream.port, cert, key, relay=True),
    }
    runs = {name: [] for name in makers}
    for rnd in range(args.rounds):
        order = list(makers) if rnd % 2 == 0 else list(reversed(makers))
        for name in order:
            proxy = makers[name]()
            url = f"{proxy.scheme}://127.0.0.1:{proxy.port}/small"
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
            runs[name].append(((u1 - u0 + s1 - s0) * scale, (u1 - u0) * scale, (s1 - s0) * scale, n))
            print(f"  round {rnd + 1} {name:8s} requests={n:8d} cpu/100k={runs[name][-1][0]:5.2f}s "
                  f"(user {runs[name][-1][1]:4.2f}s, sys {runs[name][-1][2]:4.2f}s)  req/s={n / args.seconds:7.0f}")
    labels = {"sidecar": "sidecar, TLS + HTTP mode",
              "nginx": "nginx, TLS reverse proxy",
              "relay": "sidecar, plain TCP relay (no TLS, no HTTP: the sockets alone)"}
    med = {}
    for name, rs in runs.items():
        med[name] = median([r[0] for r in rs])
        print(f"  median {name:8s} cpu/100k={med[name]:5.2f}s  user={median([r[1] for r in rs]):4.2f}s  "
              f"sys={median([r[2] for r in rs]):4.2f}s   {labels[name]}")
    ratio = med["sidecar"] / med["nginx"]
    print(f"  ratio sidecar/nginx CPU per request: {ratio:.2f}x  (target <= 0.6x)")
    print(f"  ratio relay/nginx (the same reads and writes with no TLS and no parsing): "
          f"{med['relay'] / med['nginx']:.2f}x")
    return ratio


def open_idle_tls(port, count, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s = ctx.wrap_socket(s, server_hostname="localhost")
        socks.append(s)
    return socks


def bench_memory(args, tmp, cert, key, upstream):
    print(f"== memory: RSS idle and with {args.idle} idle TLS connections (after handshake)")
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.idle * 2 + 100)), hard))
    results = {}
    for make in (lambda: SidecarProxy(args.bin, tmp, upstream.port, cert, key),
                 lambda: NginxTlsProxy(tmp, upstream.port, cert, key)):
        proxy = make()
        try:
            idle = rss_kib(proxy.pids)
            socks = open_idle_tls(proxy.port, args.idle, str(cert))
            loaded = rss_kib(proxy.pids)
            for s in socks:
                s.close()
        finally:
            proxy.stop()
        per_conn = (loaded - idle) / args.idle
        results[proxy.name] = (idle, loaded, per_conn)
        print(f"  {proxy.name:8s} idle={idle:7d} KiB  with {args.idle} conns={loaded:7d} KiB  "
              f"per connection={per_conn:6.1f} KiB")
    print(f"  ratio sidecar/nginx per-connection memory: "
          f"{results['sidecar'][2] / results['nginx'][2]:.2f}x")


def bench_resume(args, tmp, cert, key, upstream):
    print("== TLS handshakes: full vs resumed (openssl s_time -www /small, 5s each, CPU of the proxy)")
    proxy = SidecarProxy(args.bin, tmp, upstream.port, cert, key)
    try:
        for version in ("-tls1_2", "-tls1_3"):
            for mode in ("-new", "-reuse"):
                before = cpu_seconds(proxy.pids)
                # -www makes s_time read a response, so TLS 1.3 tickets arrive and can be reused.
                out = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{proxy.port}", version,
                                      mode, "-www", "/small", "-time", "5"],
                                     capture_output=True, text=True, timeout=60).stdout
                used = cpu_seconds(proxy.pids) - before
                m = re.search(r"(\d+) connections in", out)
                n = int(m.group(1)) if m else 0
                label = ("full" if mode == "-new" else "resumed") + " " + version[1:]
                print(f"  {label:16s} connections={n:6d} proxy cpu={used:5.2f}s  "
                      f"cpu/connection={used / max(n, 1) * 1e6:7.1f} us")
    finally:
        proxy.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all", choices=["cpu", "memory", "resume", "all"])
    ap.add_argument("--bin", default=str(ROOT / "build" / "sidecar"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=1000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sidecar-bench-")
    try:
        r = subprocess.run([args.bin, "gen-cert", "--out", f"{tmp}/cert"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        cert, key = f"{tmp}/cert/tls.crt", f"{tmp}/cert/tls.key"
        upstream = Nginx(tmp).start()
        try:
            if args.what in ("cpu", "all"):
                bench_cpu(args, tmp, cert, key, upstream)
            if args.what in ("memory", "all"):
                bench_memory(args, tmp, cert, key, upstream)
            if args.what in ("resume", "all"):
                bench_resume(args, tmp, cert, key, upstream)
        finally:
            upstream.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
