#!/usr/bin/python3
"""Footprint of the static binary: what it weighs on disk and what it holds in memory.

  sizes     size in bytes of each static binary given (one per TLS backend set)
  archives  what each input archive contributes to a static binary, from its link map
            (build-static writes BUILD_DIR/sidecar.map): bytes in the file, and .bss
  memory    for each binary: idle RSS at start, idle RSS after a burst of --requests keep-alive
            HTTPS requests (wrk, 10 connections, against a local nginx upstream) once the proxy
            has been idle for a few seconds, and RSS per idle TLS connection (--idle clients
            that finished their handshake and sent nothing)
  all       sizes and memory

Usage: test/bench/footprint.py [sizes|archives|memory|all]
         [--bin mbedtls=build-size-mbedtls/out/sidecar] [--bin both=build-static/out/sidecar]
         [--map build-static/sidecar.map] [--requests 10000] [--idle 1000]

Binaries are built with scripts/build-static (SIDECAR_CMAKE_ARGS=-DSIDECAR_WITH_OPENSSL=OFF for
the mbedTLS-only one). Memory is measured with the proxy's default tls_backend (mbedTLS).
"""
import argparse
import collections
import os
import re
import resource
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

KIB = 1024
MIB = 1 << 20


def rss_kib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def anon_kib(pid):
    """The anonymous part of RSS (heap, stacks): what the process itself holds, as opposed to the
    binary's pages, which are file-backed and shared with the page cache."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^RssAnon:\s+(\d+) kB", status, re.M).group(1))


def settle_rss(pid, max_seconds, window=1.5):
    """RSS (KiB) once it has not moved for `window` seconds, or after max_seconds."""
    deadline = time.monotonic() + max_seconds
    samples = []
    while True:
        now = time.monotonic()
        samples.append((now, rss_kib(pid)))
        recent = [v for t, v in samples if t >= now - window]
        if samples[0][0] <= now - window and max(recent) - min(recent) <= 8:
            return recent[-1]
        if now >= deadline:
            return recent[-1]
        time.sleep(0.1)  # RSS has no change notification


# ---- sizes -----------------------------------------------------------------------------------

def print_sizes(bins):
    print("| backends | static binary (bytes) | MiB | MB |")
    print("|---|---:|---:|---:|")
    for name, path in bins.items():
        size = Path(path).stat().st_size
        print(f"| {name} | {size:,} | {size / MIB:.2f} | {size / 1e6:.2f} |")


# ---- archives --------------------------------------------------------------------------------

GROUPS = [
    (r"libstdc\+\+\.a", "libstdc++"),
    (r"lib(c|m|m-[\d.]+|pthread|dl|rt|resolv)\.a|/crt[1in]\.o", "glibc"),
    (r"libgcc(_eh)?\.a|crtbegin|crtend", "libgcc (unwinder, builtins)"),
    (r"libyaml-cpp\.a", "yaml-cpp"),
    (r"libmbed(tls|x509|crypto)\.a", "mbedTLS (libmbedtls, libmbedx509, libmbedcrypto)"),
    (r"libssl\.a", "OpenSSL libssl"),
    (r"libcrypto\.a", "OpenSSL libcrypto"),
    (r"libuv(_a)?\.a", "libuv"),
    (r"libllhttp\.a", "llhttp"),
    (r"libcares\.a", "c-ares"),
    (r"libnghttp2\.a", "nghttp2"),
]
OURS = "sidecar's own code (core, tls, http, config, initnet)"


def archive_group(input_file):
    for pattern, name in GROUPS:
        if re.search(pattern, input_file):
            return name
    return OURS  # our archives, main.cpp.o, and with LTO the link-time partitions of our code


def parse_map(path):
    """{(output section, input file): bytes} from the memory map part of a GNU ld map file."""
    sizes = collections.Counter()
    section = None
    started = False
    pending = False  # an input section name alone on its line: its address and size follow
    for line in open(path, errors="replace"):
        if not started:
            started = line.startswith("Linker script and memory map")
            continue
        if not line.startswith(" "):
            m = re.match(r"^(\S+)", line)
            if m:
                section = m.group(1)
            continue
        if re.match(r"^ \S+\s*$", line):
            pending = True
            continue
        m = re.match(r"^ (\S+)?\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S.*)$", line)
        if m and (m.group(1) or pending) and section:
            sizes[(section, m.group(3).strip())] += int(m.group(2), 16)
        pending = False
    return sizes


def print_archives(map_path):
    in_file, bss = collections.Counter(), collections.Counter()
    for (section, input_file), n in parse_map(map_path).items():
        if section.startswith((".debug", ".comment", ".note.GNU-stack", ".gnu.attributes")):
            continue
        group = archive_group(input_file)
        if "bss" in section:
            bss[group] += n
        else:
            in_file[group] += n
    total = sum(in_file.values())
    print(f"What each archive contributes ({map_path}; bytes of loaded sections, stripped):\n")
    print("| archive | bytes in the binary | share | .bss |")
    print("|---|---:|---:|---:|")
    for group, n in sorted(in_file.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {n:,} | {100 * n / total:.1f}% | {bss[group]:,} |")
    print(f"| total | {total:,} | 100% | {sum(bss.values()):,} |")


# ---- memory ----------------------------------------------------------------------------------

def make_cert(binary, workdir):
    out = Path(workdir) / "tls"
    subprocess.run([binary, "gen-cert", "--out", str(out), "--force"], check=True, capture_output=True)
    return out / "tls.crt", out / "tls.key"


class Proxy:
    def __init__(self, binary, workdir, upstream_port, cert, key, idle):
        self.port = free_port()
        cfg = Path(workdir) / "footprint.yaml"
        cfg.write_text(f"""listeners:
  - name: footprint
    listen: 127.0.0.1:{self.port}
    protocol: http
    tls:
      certificate: {cert}
      private_key: {key}
    upstream:
      address: 127.0.0.1:{upstream_port}
    http:
      access_log: false
    timeouts: {{ handshake: 300s, idle: 300s, header: 300s }}
    limits:
      max_connections: {idle + 100}
admin:
  enabled: false
log:
  level: warn
""")
        self.log = cfg.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([binary, "run", "-c", str(cfg)], stdout=subprocess.DEVNULL,
                                         stderr=log)
        wait_port(self.port, proc=self.proc)

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, timeout=30)


def burst(port, requests):
    """Exactly `requests` keep-alive HTTPS requests over 10 connections (one wrk thread)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(f"""local n = 0
response = function(status, headers, body)
  n = n + 1
  if n >= {requests} then wrk.thread:stop() end
end
""")
    try:
        r = subprocess.run(["wrk", "-t1", "-c10", "-d60s", "-s", str(script),
                            f"https://127.0.0.1:{port}/small"], capture_output=True, text=True)
    finally:
        script.unlink()
    m = re.search(r"(\d+) requests in", r.stdout)
    if r.returncode != 0 or not m or "Non-2xx" in r.stdout or "Socket errors" in r.stdout:
        raise RuntimeError(f"wrk failed:\n{r.stdout}{r.stderr}")
    return int(m.group(1))


def idle_clients(port, count):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    socks = []
    for _ in range(count):
        socks.append(ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))))
    return socks


def measure(binary, args, workdir, nginx):
    cert, key = make_cert(binary, workdir)
    proxy = Proxy(binary, workdir, nginx.port, cert, key, args.idle)
    try:
        start = settle_rss(proxy.proc.pid, 10)
        start_anon = anon_kib(proxy.proc.pid)
        try:
            done = burst(proxy.port, args.requests)
        except RuntimeError as e:
            sys.exit(f"footprint: {e}\nproxy log:\n{proxy.log.read_text()[-2000:]}")
        busy = rss_kib(proxy.proc.pid)
        time.sleep(2.5)  # the proxy gives memory back a second after the last connection closed
        after = settle_rss(proxy.proc.pid, 10)
        after_anon = anon_kib(proxy.proc.pid)
        base = after
        socks = idle_clients(proxy.port, args.idle)
        try:
            loaded = settle_rss(proxy.proc.pid, 20)
        finally:
            for s in socks:
                s.close()
        per_conn = (loaded - base) * KIB / args.idle
    finally:
        proxy.stop()
    return start, done, busy, after, per_conn, start_anon, after_anon


def print_memory(bins, args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle * 3 + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sidecar-footprint-") as workdir:
        nginx = Nginx(workdir).start()
        try:
            for name, binary in bins.items():
                rows.append((name, *measure(binary, args, workdir, nginx)))
        finally:
            nginx.stop()
    print(f"| backends | idle RSS at start (KiB) | RSS at the end of {args.requests} requests (KiB) "
          f"| idle RSS after the burst (KiB) | after - start (KiB) | per idle TLS connection "
          f"(KiB, N={args.idle}) | anonymous at start / after the burst (KiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, start, done, busy, after, per_conn, start_anon, after_anon in rows:
        print(f"| {name} | {start} | {busy} | {after} | {after - start:+d} | {per_conn / KIB:.1f} "
              f"| {start_anon} / {after_anon} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=["sizes", "archives", "memory", "all"])
    ap.add_argument("--bin", action="append", default=[], metavar="NAME=PATH",
                    help="a static binary and the backend set it carries (repeatable)")
    ap.add_argument("--map", default=str(ROOT / "build-static" / "sidecar.map"))
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--idle", type=int, default=1000)
    args = ap.parse_args()
    bins = dict(b.split("=", 1) for b in args.bin) or {"both": str(ROOT / "build-static/out/sidecar")}
    if args.what in ("sizes", "all"):
        print_sizes(bins)
        print()
    if args.what == "archives":
        print_archives(args.map)
    if args.what in ("memory", "all"):
        print_memory(bins, args)


if __name__ == "__main__":
    main()
