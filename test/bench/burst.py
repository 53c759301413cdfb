#!/usr/bin/python3
"""Tail latency under connection storms: sidecar next to nginx as TLS-terminating reverse proxies,
in one run, on the same nginx upstream, printing ratios.

  burst   --established keep-alive connections (wrk) carry small requests; after a quiet window
          (the "no burst" figures), N new TLS clients connect at once (h2load --h1 -c N -n N: one
          full handshake and one request each). Latency p50/p99/p99.9 (us) of the established
          connections' requests that overlap the burst, next to the quiet window's; the burst's
          completion time, handshakes/s and slowest connect (TCP + TLS handshake)
  load    wrk with N connections for --seconds from a cold start (all connect at once): p50/p99/
          p99.9 over the whole run (wrk's own histogram, which wrk corrects for coordinated omission
          by adding the samples a constant-rate client would have seen; and the same per request,
          uncorrected); how many connections came up and when; and the steady-state tail: the
          requests sent once all N connections are up (and the queue they found has drained, +1 s).
          wrk times a request from its first byte, so a connection still waiting for its handshake
          adds nothing to the latency figures: read them next to "connections up"

Usage: test/bench/burst.py [burst|load|all] [--n 300,1000,5000] [--bin build/sidecar]
       [--bin-old /tmp/sidecar-old/build/sidecar] [--backends mbedtls,openssl] [--rounds 3] [--quick]

Targets it checks: p99 of the established connections during a 1,000-client burst <= 2x their
p99 without it; p99 over a whole wrk run at 300 and 1,000 connections <= nginx's; the steady-state
tail (p99, p99.9) at or below nginx's.

Every proxy runs one worker pinned to CPU 0 (bench.py's SidecarProxy and NginxTlsProxy, ECDSA
P-256 certificate, TLS 1.3 negotiated); this script, wrk, h2load and the nginx upstream run on
CPU 1. There the measuring client (wrk) and the upstream run at a higher priority (nice -10) than
the burst's clients (h2load), which take the rest of the CPU: otherwise h2load's own client
handshakes keep wrk waiting for the CPU (hundreds of ms per burst, read from wrk's
/proc/<pid>/task/*/schedstat), and that wait lands in the established connections' latency
whatever the proxy does. The tables show how long wrk still waited for CPU 1 during each burst,
and the burst's handshakes/s that the burst still comes at full speed. During the burst figures
each established connection sends its next request --think ms (10) after a response, a steady
load that leaves the proxy's CPU room; back to back (--think 0) the established connections alone
keep it saturated, and any CPU a handshake takes shows as queueing for all of them. nginx listens
with sidecar's backlog (1024) so that both queue the same number of connections the kernel has
completed. Latency is taken per request by a wrk Lua script: each
request carries an id that the upstream echoes in a response header, and the script logs the
request's send and completion times on the monotonic clock this script also reads, so that any
time window of the run can be cut out afterwards. Each figure starts its proxy afresh; proxies
alternate order by round, and tables show medians over the rounds.
"""
import argparse
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import (ROOT, TLS13_CIPHERS, TWO_CPUS, NginxTlsProxy, SidecarProxy, Tls,  # noqa: E402
                   Upstream, client_context, fmt, md_table, median, negotiated, print_ratios,
                   print_versions, ratio, rounds_order, sidecar_name, wait_children)

# Listen backlog sidecar uses (core/server.cpp); nginx gets the same.
SIDECAR_BACKLOG = 1024
# Generous: a request stalled behind a storm still lands in wrk's histogram, not in "timeout".
WRK_TIMEOUT_S = 60
# The measuring client and the upstream on CPU 1 run ahead of the burst's clients (see above).
MEASURING_NICE = -10

# wrk Lua: ids each request, logs "sent_us done_us" per response (CLOCK_MONOTONIC, the clock of
# Python's time.monotonic), and prints wrk's own percentiles from done().
LATENCY_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } burst_timespec;
int clock_gettime(int clock, burst_timespec *ts);
]]
local ts = ffi.new("burst_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local out, next_id, sent, think = nil, 0, {}, 0

function init(args)
  if args[1] then
    out = io.open(args[1], "w")
    out:setvbuf("full", 1048576)
  end
  think = tonumber(args[2] or "0")
end

-- Milliseconds a connection waits after a response before its next request (0: at once).
function delay()
  return think
end

function request()
  next_id = next_id + 1
  sent[next_id] = now_us()
  return wrk.format("GET", "/echo?id=" .. next_id)
end

function response(status, headers, body)
  local t = now_us()
  local id = tonumber(headers["X-Id"])
  local s = id and sent[id]
  if s and out then
    sent[id] = nil
    out:write(s, " ", t, " ", status, "\n")
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LATENCY_US p50=%d p99=%d p999=%d max=%d\n", latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9), latency.max))
  io.write(string.format("SUMMARY requests=%d duration_us=%d connect=%d read=%d write=%d " ..
    "status=%d timeout=%d\n", summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout))
end
"""


# ---------------------------------------------------------------------------------------------
# Load generators


class Wrk:
    """wrk -t1 with the latency script, started in the background; stop() or wait() for results."""

    def __init__(self, tmp, port, connections, seconds, tag, think_ms=0):
        self.samples_path = Path(tmp) / f"samples-{tag}.txt"
        script = Path(tmp) / "latency.lua"
        if not script.exists():
            script.write_text(LATENCY_LUA)
        argv = ["nice", f"-n{MEASURING_NICE}", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                f"--timeout={WRK_TIMEOUT_S}s", "-s", str(script), f"https://127.0.0.1:{port}/", "--",
                str(self.samples_path), str(think_ms)]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.seconds = seconds

    def cpu_wait_ms(self):
        """Milliseconds wrk's threads have spent runnable but waiting for a CPU, so far."""
        total = 0
        for stat in Path(f"/proc/{self.proc.pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                pass  # a thread that has just exited
        return total / 1e6

    def stop(self):
        """Ends the run now (wrk prints its results on SIGINT)."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self):
        out, _ = self.proc.communicate(timeout=self.seconds + WRK_TIMEOUT_S + 30)
        return WrkResult(out, self.samples_path)


class WrkResult:
    def __init__(self, out, samples_path):
        self.out = out
        m = re.search(r"LATENCY_US p50=(\d+) p99=(\d+) p999=(\d+) max=(\d+)", out)
        self.wrk_pcts = [int(v) for v in m.groups()[:3]] if m else [None] * 3
        m = re.search(r"SUMMARY requests=(\d+) duration_us=(\d+) connect=(\d+) read=(\d+) write=(\d+) "
                      r"status=(\d+) timeout=(\d+)", out)
        keys = ["requests", "duration_us", "connect", "read", "write", "status", "timeout"]
        self.summary = dict(zip(keys, (int(v) for v in m.groups()))) if m else {}
        if not self.summary.get("requests"):
            self.wrk_pcts = [None] * 3  # an empty histogram reads as 0 us
        # (sent s, done s, status), sorted by sending time; times on time.monotonic()'s clock.
        self.samples = []
        text = samples_path.read_text() if samples_path.exists() else ""
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3:
                self.samples.append((int(parts[0]) / 1e6, int(parts[1]) / 1e6, int(parts[2])))
        self.samples.sort()

    def errors(self):
        s = self.summary
        if not s:
            return "wrk printed no summary"
        bad = {k: s[k] for k in ("connect", "read", "write", "status", "timeout") if s[k]}
        return ", ".join(f"{k} {v}" for k, v in bad.items())

    def window(self, t0, t1):
        """Latencies (us) of the requests in flight at some point within [t0, t1]."""
        return [(d - s) * 1e6 for s, d, _ in self.samples if s <= t1 and d >= t0]

    def sent_within(self, t0, t1):
        """Latencies (us) of the requests sent within [t0, t1]."""
        return [(d - s) * 1e6 for s, d, _ in self.samples if t0 <= s <= t1]

    def all_connected_at(self):
        """When the number of requests in flight first reached its maximum: with one request in
        flight per connection, the moment every connection that came up was up."""
        events = sorted([(s, 1) for s, _, _ in self.samples] + [(d, -1) for _, d, _ in self.samples])
        level = peak = 0
        peak_at = None
        for t, step in events:
            level += step
            if level > peak:
                peak, peak_at = level, t
        return peak_at, peak


def percentiles(latencies, points=(50, 99, 99.9)):
    """Nearest-rank percentiles (wrk's histogram reports the same way)."""
    if not latencies:
        return [None] * len(points)
    v = sorted(latencies)
    return [v[min(len(v) - 1, max(0, math.ceil(len(v) * p / 100) - 1))] for p in points]


def parse_duration(value, unit):
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def h2load_burst(port, clients):
    """`clients` new TLS connections at once, one request each. Returns a dict: wall seconds (this
    script's clock), h2load's completion seconds, succeeded, failed, slowest connect seconds."""
    argv = ["h2load", "--h1", "-t1", f"--tls13-ciphers={TLS13_CIPHERS}", f"-c{clients}", f"-n{clients}",
            f"https://127.0.0.1:{port}/small"]
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        out = r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + "\nh2load: timed out after 300s"
    t1 = time.monotonic()
    result = {"t0": t0, "t1": t1, "completion": None, "succeeded": 0, "failed": clients,
              "slowest_connect": None, "tls": "?", "out": out}
    m = re.search(r"finished in ([\d.]+)(us|ms|s),", out)
    if m:
        result["completion"] = parse_duration(*m.groups())
    m = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        result["succeeded"] = int(m.group(1))
        result["failed"] = clients - int(m.group(1))
    m = re.search(r"time for connect:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    if m:
        result["slowest_connect"] = parse_duration(m.group(3), m.group(4))
    m = re.search(r"TLS Protocol: (\S+)\s+Cipher: (\S+)", out)
    if m:
        result["tls"] = f"{m.group(1)} {m.group(2)}"
    return result


# ---------------------------------------------------------------------------------------------
# Proxies and their logs


def proxy_log_lines(proxy):
    path = getattr(proxy, "log_path", None) or getattr(proxy, "error_log", None)
    if not path or not Path(path).exists():
        return []
    return [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]


def report_log(name, proxy, seen):
    """Prints the proxy's log lines written since `seen` of them (warnings and errors only: both
    log at warn)."""
    lines = proxy_log_lines(proxy)
    fresh = lines[seen:]
    if fresh:
        print(f"    {name} logged {len(fresh)} line(s); first: " + " | ".join(l[:200] for l in fresh[:3]))
    return len(lines)


def makers(args, tmp, tls, upstream):
    """name -> a function starting that proxy, sidecar row(s) first."""
    capacity = max(args.n + [args.established]) + args.established + 100
    up = upstream.port
    out = {}
    for backend in args.backends:
        name = sidecar_name(backend)
        out[name] = lambda b=backend: SidecarProxy(args.bin, tmp, up, tls, backend=b)
        if args.bin_old:
            out[f"{name} old"] = lambda b=backend: renamed(SidecarProxy(args.bin_old, tmp, up, tls, backend=b),
                                                           f"{sidecar_name(b)} old")
    out["nginx"] = lambda: NginxTlsProxy(tmp, up, tls, capacity, backlog=SIDECAR_BACKLOG)
    return out


def renamed(proxy, name):
    proxy.name = name
    return proxy


class EchoUpstream(Upstream):
    """bench.py's nginx upstream plus /echo: a small response carrying the request's id back in
    X-Id, which is how the latency script pairs each response with its request."""

    def __init__(self, workdir, files_dir, nofile):
        super().__init__(workdir, files_dir, nofile)
        text = self.conf.read_text()
        echo = 'location = /echo { default_type text/plain; add_header X-Id $arg_id; return 200 "ok\\n"; }'
        self.conf.write_text(text.replace("location = /small", f"{echo}\n    location = /small", 1))


# ---------------------------------------------------------------------------------------------
# burst


def burst_once(args, tmp, make, name, clients, tag):
    """One proxy, fresh: quiet window, then the burst. Returns a dict of figures."""
    proxy = make()
    seen = 0
    try:
        # Ended by stop() after the burst.
        w = Wrk(tmp, proxy.port, args.established, 600, tag, think_ms=args.think)
        time.sleep(args.warmup)  # wrk has no readiness signal: connections and upstream pool up
        quiet0 = time.monotonic()
        time.sleep(args.quiet)  # the quiet window is a span of time
        quiet1 = time.monotonic()
        waited = w.cpu_wait_ms()
        burst = h2load_burst(proxy.port, clients)
        waited = w.cpu_wait_ms() - waited
        time.sleep(args.after)  # lets requests stalled by the burst complete inside the run
        res = w.stop()
        seen = report_log(name, proxy, seen)
    finally:
        proxy.stop()
    quiet = percentiles(res.sent_within(quiet0, quiet1))
    during = res.window(burst["t0"], burst["t1"])
    fig = {
        "quiet": quiet,
        "burst": percentiles(during),
        "burst_requests": len(during),
        "completion": burst["completion"],
        "hs_per_s": burst["succeeded"] / burst["completion"] if burst["completion"] else None,
        "slowest_connect_ms": None if burst["slowest_connect"] is None else burst["slowest_connect"] * 1e3,
        "failed": burst["failed"],
        "wrk_errors": res.errors(),
        "wrk_cpu_wait_ms": waited,
    }
    line = (f"  {name:22s} N={clients:5d}  quiet p50/p99/p99.9={'/'.join(fmt(v, 0) for v in quiet)} us  "
            f"burst p50/p99/p99.9={'/'.join(fmt(v, 0) for v in fig['burst'])} us ({len(during)} req)  "
            f"burst {fmt(burst['completion'], 3)} s, {fmt(fig['hs_per_s'], 0)} hs/s, slowest connect "
            f"{fmt(fig['slowest_connect_ms'], 0)} ms, {burst['tls']}")
    if burst["failed"]:
        tail = " | ".join(l.strip() for l in burst["out"].splitlines() if l.strip())[-600:]
        line += f"\n    burst: {burst['failed']} of {clients} clients failed: {tail}"
    if fig["wrk_errors"]:
        line += f"\n    established wrk errors: {fig['wrk_errors']}"
    print(line, flush=True)
    return fig


def bench_burst(args, tmp, mk):
    pace = f"a request {args.think} ms after each response" if args.think else "requests back to back"
    print(f"\n== burst: {args.established} established keep-alive connections (wrk, {pace}), then N new TLS clients at "
          f"once (h2load --h1 -c N -n N); quiet window {args.quiet}s after {args.warmup}s of warm-up; "
          f"{args.rounds} round(s)")
    return run_rounds(args, tmp, mk, burst_once, "burst")


def run_rounds(args, tmp, mk, once, tag):
    """once(args, tmp, make, name, n, tag) for every round, proxy and N; medians per proxy and N."""
    runs = {name: {n: [] for n in args.n} for name in mk}
    for rnd in range(args.rounds):
        print(f"  round {rnd + 1}")
        for name in rounds_order(mk, rnd):
            for n in args.n:
                runs[name][n].append(once(args, tmp, mk[name], name, n, f"{tag}-{rnd}-{n}"))
    return {name: {n: med_figures(figs) for n, figs in per_n.items()} for name, per_n in runs.items()}


def med_figures(figs):
    """Median of every figure over the rounds (lists element-wise); None when no round had it."""
    out = {}
    for key, first in figs[0].items():
        if isinstance(first, list):
            out[key] = [med_or_none([f[key][i] for f in figs]) for i in range(len(first))]
        elif isinstance(first, str):
            out[key] = "; ".join(sorted({f[key] for f in figs if f[key]}))
        else:
            out[key] = med_or_none([f[key] for f in figs])
    return out


def med_or_none(values):
    values = [v for v in values if v is not None]
    return median(values) if values else None


def print_burst(args, med):
    rows, rows2 = [], []
    for n in args.n:
        for name, per_n in med.items():
            m = per_n[n]
            rows.append([name, f"{n:,}"] + [fmt(v, 0) for v in m["quiet"]] + [fmt(v, 0) for v in m["burst"]]
                        + [ratio(m["burst"][1], m["quiet"][1]), fmt(m["burst_requests"], 0)])
            rows2.append([name, f"{n:,}", fmt(m["completion"], 3), fmt(m["hs_per_s"], 0),
                          fmt(m["slowest_connect_ms"], 0), fmt(m["failed"], 0), m["wrk_errors"] or "none",
                          fmt(m["wrk_cpu_wait_ms"], 0)])
    pace = f"{args.think} ms between a response and the next request" if args.think else "back to back"
    md_table(f"established connections (wrk -c{args.established}, {pace}): latency in us without and during a burst "
             f"of N new TLS clients (medians)",
             ["proxy", "N", "quiet p50", "quiet p99", "quiet p99.9", "burst p50", "burst p99", "burst p99.9",
              "p99 burst/quiet", "requests in burst"], rows)
    md_table("the burst itself: N clients connect at once, one full TLS handshake and one request each "
             "(medians)",
             ["proxy", "N", "completion s", "handshakes/s", "slowest connect ms", "failed clients",
              "errors on the established connections", "wrk waited for CPU ms"], rows2)
    for n in args.n:
        values = {name: m[n]["quiet"] + m[n]["burst"] + [m[n]["completion"], m[n]["hs_per_s"]]
                  for name, m in med.items()}
        cols = ["quiet p50", "p99", "p99.9", "burst p50", "p99", "p99.9", "completion", "handshakes/s"]
        print(f"  N={n}:")
        print_ratios(list(values), cols, values)
        print_old_ratio(values, cols)


def print_old_ratio(values, columns):
    for name in values:
        old = f"{name} old"
        if old in values:
            parts = [f"{c} {ratio(a, b)}" for c, a, b in zip(columns, values[name], values[old])]
            print(f"  ratio {name}/{old}: " + ", ".join(parts))


# ---------------------------------------------------------------------------------------------
# load


def load_once(args, tmp, make, name, connections, tag):
    proxy = make()
    try:
        res = Wrk(tmp, proxy.port, connections, args.seconds, tag).wait()
        report_log(name, proxy, 0)
    finally:
        proxy.stop()
    n = res.summary.get("requests", 0)
    dur = res.summary.get("duration_us", 0) / 1e6
    up_at, peak = res.all_connected_at()
    start = res.samples[0][0] if res.samples else None
    steady = [None] * 3
    steady_s = None
    if up_at is not None:
        steady_from = up_at + 1.0
        steady_to = res.samples[-1][0] if res.samples else up_at
        if steady_to - steady_from >= 1.0:
            steady = percentiles(res.sent_within(steady_from, steady_to))
            steady_s = steady_to - steady_from
    script_pcts = percentiles([(d - s) * 1e6 for s, d, _ in res.samples])
    fig = {
        "whole": res.wrk_pcts,
        "whole_raw": script_pcts,
        "steady": steady,
        "connected_s": None if up_at is None else up_at - start,
        "steady_s": steady_s,
        "rps": n / dur if dur else None,
        "errors": res.errors(),
        "peak": peak,
    }
    print(f"  {name:22s} c={connections:5d}  whole p50/p99/p99.9={'/'.join(fmt(v, 0) for v in fig['whole'])} us  "
          f"all {peak} connected after {fmt(fig['connected_s'], 2)} s  steady ({fmt(steady_s, 1)} s) "
          f"p50/p99/p99.9={'/'.join(fmt(v, 0) for v in steady)} us  req/s={fmt(fig['rps'], 0)}  (whole run per "
          f"request, uncorrected: {'/'.join(fmt(v, 0) for v in script_pcts)} us)"
          + (f"  errors: {fig['errors']}" if fig["errors"] else ""), flush=True)
    return fig


def bench_load(args, tmp, mk):
    print(f"\n== load: wrk -cN for {args.seconds}s from a cold start (all N connect at once); {args.rounds} round(s)")
    return run_rounds(args, tmp, mk, load_once, "load")


def print_load(args, med):
    rows = []
    for n in args.n:
        for name, per_n in med.items():
            m = per_n[n]
            rows.append([name, f"{n:,}"] + [fmt(v, 0) for v in m["whole"]] + [fmt(v, 0) for v in m["whole_raw"][1:]]
                        + [fmt(m["peak"], 0), fmt(m["connected_s"], 2)]
                        + [fmt(v, 0) for v in m["steady"]] + [fmt(m["rps"], 0), m["errors"] or "none"])
    md_table(f"wrk -cN for {args.seconds}s from a cold start: latency in us over the whole run (wrk's figures, "
             f"which wrk corrects for coordinated omission; then per request, uncorrected), and the steady "
             f"state once all N are connected (+1 s, per request) (medians)",
             ["proxy", "N", "whole p50", "whole p99", "whole p99.9", "uncorrected p99", "uncorrected p99.9",
              "connections up", "all up after s", "steady p50",
              "steady p99", "steady p99.9", "req/s", "errors"], rows)
    for n in args.n:
        values = {name: m[n]["whole"] + m[n]["whole_raw"][1:] + m[n]["steady"] + [m[n]["rps"]]
                  for name, m in med.items()}
        print(f"  N={n}:")
        cols = ["whole p50", "p99", "p99.9", "uncorrected p99", "p99.9", "steady p50", "p99", "p99.9", "req/s"]
        print_ratios(list(values), cols, values)
        print_old_ratio(values, cols)


# ---------------------------------------------------------------------------------------------
# Targets


def verdict(value, limit):
    if value is None or limit is None:
        return "n/a"
    return "met" if value <= limit else "NOT met"


def print_targets(args, burst, load):
    print("\n== targets")
    sidecars = [n for n in (burst or load or {}) if n.startswith("sidecar-")]
    for name in sidecars:
        if burst and 1000 in args.n:
            m = burst[name][1000]
            q, b = m["quiet"][1], m["burst"][1]
            print(f"  {name}: p99 during a 1,000-client burst {fmt(b, 0)} us <= 2x quiet p99 "
                  f"({fmt(None if q is None else 2 * q, 0)} us): {verdict(b, None if q is None else 2 * q)}"
                  f" ({ratio(b, q)})")
        if load and "nginx" in load:
            for n in [c for c in (300, 1000) if c in args.n]:
                for key, label in (("whole", "wrk"), ("whole_raw", "uncorrected")):
                    ours, theirs = load[name][n][key][1], load["nginx"][n][key][1]
                    print(f"  {name}: whole-run p99 ({label}) at {n} connections {fmt(ours, 0)} us <= nginx's "
                          f"{fmt(theirs, 0)} us: {verdict(ours, theirs)} ({ratio(ours, theirs)})")
                up = load[name][n]["peak"]
                if up is not None and up < n:
                    print(f"    but only {up:.0f} of {n} connections came up within the {args.seconds}s run: "
                          f"the figures cover those alone")
            for n in args.n:
                for i, label in ((1, "p99"), (2, "p99.9")):
                    ours, theirs = load[name][n]["steady"][i], load["nginx"][n]["steady"][i]
                    print(f"  {name}: steady-state {label} at {n} connections {fmt(ours, 0)} us <= nginx's "
                          f"{fmt(theirs, 0)} us: {verdict(ours, theirs)} ({ratio(ours, theirs)})")
        if burst and "nginx" in burst:
            for n in args.n:
                for i, label in ((1, "p99"), (2, "p99.9")):
                    ours, theirs = burst[name][n]["quiet"][i], burst["nginx"][n]["quiet"][i]
                    print(f"  {name}: steady-state {label} of {args.established} established connections "
                          f"(quiet window, N={n} run) {fmt(ours, 0)} us <= nginx's {fmt(theirs, 0)} us: "
                          f"{verdict(ours, theirs)}")


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="?", default="all", choices=["burst", "load", "all"])
    ap.add_argument("--bin", default=str(ROOT / "build" / "sidecar"))
    ap.add_argument("--bin-old", help="a second sidecar binary, shown as a row of its own ('... old')")
    ap.add_argument("--backends", default="",
                    help="comma-separated sidecar tls_backend values, one row each, e.g. mbedtls,openssl "
                         "(default: one row, the binary's default backend)")
    ap.add_argument("--n", default="300,1000,5000", help="comma-separated client counts N")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10, help="wrk run length of the load figures")
    ap.add_argument("--established", type=int, default=50, help="keep-alive connections during the burst")
    ap.add_argument("--think", type=int, default=10,
                    help="ms each established connection waits after a response before its next request "
                         "during the burst figures (0: back to back, which keeps the proxy's CPU saturated)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of wrk before the quiet window")
    ap.add_argument("--quiet", type=float, default=3.0, help="seconds of the quiet (no burst) window")
    ap.add_argument("--after", type=float, default=1.0, help="seconds of wrk after the burst")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, N=300, 3s load, 1s quiet")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.n, args.seconds, args.quiet, args.after = 1, "300", 3, 1.0, 0.5
    args.n = [int(v) for v in str(args.n).split(",") if v]
    args.backends = [b for b in args.backends.split(",") if b] or [None]
    if not shutil.which("wrk") or not shutil.which("h2load"):
        sys.exit("burst: needs wrk and h2load (apt-get install -y wrk nghttp2-client)")

    if TWO_CPUS:
        os.sched_setaffinity(0, {1})  # this script, wrk, h2load and the upstream; proxies get CPU 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by proxies and clients
    needed = 2 * (max(args.n) + args.established) + 200  # sidecar pairs each client with an upstream
    if hard < needed:
        sys.exit(f"burst: RLIMIT_NOFILE hard limit {hard} is below the {needed} N={max(args.n)} needs")

    print_versions(args.bin)
    if args.bin_old:
        print("== old: " + subprocess.run([args.bin_old, "version"], capture_output=True, text=True).stdout
              .strip().replace("\n", "; ") + f" ({args.bin_old})")
    print("== h2load: " + subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip())
    tmp = tempfile.mkdtemp(prefix="sidecar-burst-")
    files = tempfile.mkdtemp(prefix="sidecar-burst-files-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    upstream = None
    try:
        tls = Tls(args.bin, tmp)
        upstream = EchoUpstream(tmp, files, hard).start()
        for pid in [upstream.proc.pid] + wait_children(upstream.proc, 1):
            os.setpriority(os.PRIO_PROCESS, pid, MEASURING_NICE)
        mk = makers(args, tmp, tls, upstream)
        ctx = client_context(tls.cert)
        for name, make in mk.items():
            p = make()
            try:
                print(f"== {name}: {negotiated(p.port, ctx)}")
            finally:
                p.stop()
        burst = load = None
        if args.what in ("burst", "all"):
            burst = bench_burst(args, tmp, mk)
        if args.what in ("load", "all"):
            load = bench_load(args, tmp, mk)
        if burst:
            print_burst(args, burst)
        if load:
            print_load(args, load)
        print_targets(args, burst, load)
        print(f"== load at the end: {os.getloadavg()[0]:.2f} (1-minute average)")
    finally:
        if upstream is not None:
            upstream.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)


if __name__ == "__main__":
    main()
