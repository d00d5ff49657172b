#!/usr/bin/env python3
"""Runs redcore-load and redis-benchmark with equivalent settings against
servers that tools/compare.sh started, and prints a Markdown table.

Not meant to be run by hand: tools/compare.sh starts the servers, pins them,
and passes their ports here. See tools/compare.sh for what is measured and
how (its header comment is the reference; the table's notes repeat it).
"""

import argparse
import csv
import datetime
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time

# The three shapes of issue 6: (name, connections / tasks, pipeline,
# multiple of the base request count).
SHAPES = [("c1", 1, 1, 0.25), ("c64", 64, 1, 1.0), ("P64", 1, 64, 4.0)]
COMMANDS = ["SET", "GET"]


def fail(msg):
    print(f"compare.py: {msg}", file=sys.stderr)
    sys.exit(1)


def time_limit(requests):
    """Seconds a run of this many commands may take before it counts as hung
    (redis-benchmark --cluster retries forever while a cluster is down)."""
    return 60 + requests / 2000


def run(cmd, what, requests):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=time_limit(requests))
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        fail(f"{what} did not finish in {time_limit(requests):.0f} s: {' '.join(cmd)}\n{err[-2000:]}")
    except OSError as e:
        fail(f"could not run {what}: {e}")


def run_measured(cmd, what, requests):
    """Runs cmd to completion; returns (stdout, client CPU seconds).

    The CPU is user + system time of the child and all its threads, from
    getrusage(RUSAGE_CHILDREN) just before and just after it (nothing else is
    waited for in between)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = run(cmd, what, requests)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, cpu


def run_quiet(cmd, what, requests=0):
    proc = run(cmd, what, requests)
    if proc.returncode != 0:
        fail(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def keyspace_counts(ports):
    """Sum of keyspace_hits and keyspace_misses over the given nodes."""
    hits = misses = 0
    for port in ports:
        out = run_quiet(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "info", "stats"], "redis-cli info stats")
        for line in out.splitlines():
            name, _, value = line.strip().partition(":")
            if name == "keyspace_hits":
                hits += int(value)
            elif name == "keyspace_misses":
                misses += int(value)
    return hits, misses


def cluster_masters(t):
    """The ids of the cluster's healthy masters that serve slots, and
    whether every node says cluster_state:ok. (Right after the cluster is
    created, its replicas still show as masters without slots for a while.)"""
    ok = all("cluster_state:ok" in run_quiet(["redis-cli", "-p", str(p), "cluster", "info"], "redis-cli cluster info")
             for p in t.node_ports)
    nodes = run_quiet(["redis-cli", "-p", t.port, "cluster", "nodes"], "redis-cli cluster nodes")
    ids = set()
    for line in nodes.splitlines():
        f = line.split()
        if len(f) > 8 and "master" in f[2].split(",") and "fail" not in f[2]:
            ids.add(f[0])
    return ok, frozenset(ids)


class Target:
    def __init__(self, name, host_port, node_ports, cluster):
        self.name = name
        self.host, self.port = host_port.rsplit(":", 1)
        self.node_ports = node_ports
        self.cluster = cluster


class Runner:
    def __init__(self, opts):
        self.o = opts
        self.pin = ["taskset", "-c", str(opts.client_cpu)] if opts.client_cpu is not None else []

    # --- redis-benchmark -------------------------------------------------
    def rb_cmd(self, t, test, conns, pipeline, requests):
        cmd = self.pin + ["redis-benchmark", "-h", t.host, "-p", t.port]
        if t.cluster:
            cmd.append("--cluster")
        cmd += ["-c", str(conns), "-P", str(pipeline), "-n", str(requests),
                "-d", str(self.o.data_size), "-r", str(self.o.keys), "-t", test.lower(), "--csv"]
        return cmd

    def rb(self, t, test, conns, pipeline, requests):
        cmd = self.rb_cmd(t, test, conns, pipeline, requests)
        out, cpu = run_measured(cmd, "redis-benchmark", requests)
        # In cluster mode, the CSV follows a few lines about the masters.
        at = out.find('"test",')
        rows = [r for r in csv.DictReader(io.StringIO(out[max(at, 0):])) if r.get("test") == test]
        if len(rows) != 1:
            fail(f"no {test} row in the CSV of redis-benchmark: {' '.join(cmd)}\n{out}")
        r = rows[0]
        try:
            return {
                "ops": requests,
                "ops_per_sec": float(r["rps"]),
                "p50": float(r["p50_latency_ms"]) * 1000.0,
                "p99": float(r["p99_latency_ms"]) * 1000.0,
                "cpu_us_per_op": cpu * 1e6 / requests,
                "errors": 0,
            }
        except (KeyError, ValueError) as e:
            fail(f"unexpected CSV from redis-benchmark ({e}): {' '.join(cmd)}\n{out}")

    # --- redcore-load ----------------------------------------------------
    def rl_cmd(self, t, test, tasks, pipeline, requests, pattern="uniform"):
        cmd = [self.o.redcore_load]
        cmd += ["--cluster", f"{t.host}:{t.port}"] if t.cluster else ["--server", f"redis://{t.host}:{t.port}"]
        cmd += ["--cores", "1", "--tasks", str(tasks), "--pipeline", str(pipeline),
                "--ratio", "1:0" if test == "SET" else "0:1", "--data-size", str(self.o.data_size),
                "--keys", str(self.o.keys), "--key-prefix", "key:", "--key-pattern", pattern,
                "--requests", str(requests), "--json"]
        return cmd

    def rl(self, t, test, tasks, pipeline, requests):
        cmd = self.rl_cmd(t, test, tasks, pipeline, requests)
        out, cpu = run_measured(cmd, "redcore-load", requests)
        try:
            rep = json.loads(out)
            total = rep["total"]
            ops = int(total["ops"])
            lat = total["latency_us"]
            res = {
                "ops": ops,
                "ops_per_sec": float(total["ops_per_sec"]),
                "p50": float(lat["p50"]),
                "p99": float(lat["p99"]),
                "cpu_us_per_op": cpu * 1e6 / max(ops, 1),
                "errors": int(total["errors"]),
            }
        except (KeyError, ValueError, TypeError) as e:
            fail(f"unexpected JSON from redcore-load ({e}): {' '.join(cmd)}\n{out}")
        if ops == 0:
            fail(f"redcore-load completed no command: {' '.join(cmd)}\n{out}")
        return res

    # --- one target ------------------------------------------------------
    def prefill(self, t, masters):
        """Writes every key of both key spaces, so that every GET hits."""
        print(f"compare: {t.name}: writing the keys of each tool", file=sys.stderr)
        started = time.monotonic()
        run_quiet(self.rl_cmd(t, "SET", 64, 64, self.o.keys, pattern="sequential"), "redcore-load (prefill)",
                  self.o.keys)
        # redis-benchmark cannot write keys in order: 8 x the key space at
        # random leaves e^-8 (0.03 %) of them unwritten. In cluster mode, its
        # key space is that many keys per master (each connection writes
        # the hash tag of its own master), and its 64 connections cover
        # every master.
        n = 8 * self.o.keys * masters
        n -= n % (64 * 64)
        run_quiet(self.rb_cmd(t, "SET", 64, 64, n), "redis-benchmark (prefill)", n)
        print(f"compare: {t.name}: keys written in {time.monotonic() - started:.0f} s", file=sys.stderr)

    def measure(self, t, tool, test, shape):
        name, conc, pipeline, mult = shape
        requests = max(64, int(self.o.requests * mult) // 64 * 64)
        runs = []
        for _ in range(self.o.repeat):
            h0 = keyspace_counts(t.node_ports)
            if tool == "rb":
                r = self.rb(t, test, conc, pipeline, requests)
            else:
                r = self.rl(t, test, conc, pipeline, requests)
            h1 = keyspace_counts(t.node_ports)
            looked = (h1[0] - h0[0]) + (h1[1] - h0[1])
            r["hit"] = (h1[0] - h0[0]) / looked if looked else None
            runs.append(r)
            print(f"compare: {t.name} {name} {test} {tool}: {r['ops_per_sec']:.0f} ops/s, "
                  f"{r['cpu_us_per_op']:.2f} us CPU/op", file=sys.stderr)
        # The median run by throughput (the whole row of that run).
        runs.sort(key=lambda r: r["ops_per_sec"])
        return runs[(len(runs) - 1) // 2]

    def target(self, t):
        masters = cluster_masters(t) if t.cluster else None
        if masters and not masters[0]:
            fail("the cluster is not healthy (cluster_state is not ok on every node)")
        self.prefill(t, len(masters[1]) if masters else 1)
        rows = []
        for shape in SHAPES:
            for test in COMMANDS:
                # Alternate the tools cell by cell, so that a slow spell of a
                # noisy machine does not land on one tool only.
                rb = self.measure(t, "rb", test, shape)
                rl = self.measure(t, "rl", test, shape)
                rows.append((t.name, shape[0], test, rb, rl))
        if t.cluster and cluster_masters(t) != masters:
            fail("the cluster's masters changed during the runs (a failover: the machine too loaded?); "
                 "its numbers are not comparable")
        return rows


def fmt_int(x):
    return f"{x:,.0f}".replace(",", " ")


def fmt_us(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def fmt_ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def fmt_hit(r):
    return "-" if r["hit"] is None else f"{100 * r['hit']:.0f}"


def header(opts, load, clients="redis-server, redis-benchmark"):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ver = run_quiet(["redis-server", "--version"], "redis-server --version")
    ver = next((w[2:] for w in ver.split() if w.startswith("v=")), ver.strip())
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rev = opts.git_rev or "?"
    return (f"{date} · Linux {platform.release()} · {cpu}, {os.cpu_count()} cores · "
            f"Redis {ver} ({clients}) · redcore {rev} · load average {load} before the runs · "
            f"`{opts.command}`")


def table(opts, rows, load):
    lines = [header(opts, load), ""]
    lines.append("| target | shape | cmd | rb ops/s | redcore ops/s | ops/s ratio "
                 "| rb p50 µs | redcore p50 µs | rb p99 µs | redcore p99 µs "
                 "| rb CPU µs/op | redcore CPU µs/op | CPU/op ratio | GET hits % rb / redcore |")
    lines.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    errors = []
    for target, shape, test, rb, rl in rows:
        hits = f"{fmt_hit(rb)} / {fmt_hit(rl)}" if test == "GET" else ""
        lines.append(
            f"| {target} | {shape} | {test} "
            f"| {fmt_int(rb['ops_per_sec'])} | {fmt_int(rl['ops_per_sec'])} "
            f"| {fmt_ratio(rl['ops_per_sec'], rb['ops_per_sec'])} "
            f"| {fmt_us(rb['p50'])} | {fmt_us(rl['p50'])} | {fmt_us(rb['p99'])} | {fmt_us(rl['p99'])} "
            f"| {rb['cpu_us_per_op']:.2f} | {rl['cpu_us_per_op']:.2f} "
            f"| {fmt_ratio(rl['cpu_us_per_op'], rb['cpu_us_per_op'])} | {hits} |")
        if rl["errors"]:
            errors.append(f"{target} {shape} {test}: redcore-load reported {rl['errors']} errors")
    c1, c64, p64 = (int(opts.requests * s[3]) // 64 * 64 for s in SHAPES)
    pin = (f"Clients pinned to CPU {opts.client_cpu} (redis-benchmark with taskset, redcore-load "
           f"pins its one executor there itself), servers to CPUs {opts.server_cpus}"
           if opts.client_cpu is not None else "Nothing pinned (one CPU only)")
    notes = [
        "",
        "Ratios are redcore / redis-benchmark (ops/s: higher is better for redcore; CPU/op: lower is).",
        f"Shapes: c1 = `redis-benchmark -c 1 -P 1` vs `redcore-load --cores 1 --tasks 1`; "
        f"c64 = `-c 64` (64 connections) vs `--tasks 64` (64 tasks sharing one auto-pipelined "
        f"connection per node); P64 = `-c 1 -P 64` vs `--tasks 1 --pipeline 64`. "
        f"Requests per run: c1 {max(64, c1)}, c64 {max(64, c64)}, P64 {max(64, p64)}; "
        f"{opts.data_size}-byte values, {opts.keys} keys picked uniformly at random; "
        f"median of {opts.repeat} run(s) by ops/s.",
        "SET and GET are measured apart for both tools, each run its own process: redis-benchmark "
        "`-t set` / `-t get`, redcore-load `--ratio 1:0` / `--ratio 0:1`. Before a target's runs, "
        "every key of both key spaces is written (redcore-load `--key-pattern sequential`, "
        "redis-benchmark 8 x its key space, which in cluster mode is the key count per master), so GETs return 32-byte values, not nils; the last "
        "column is the hit rate the servers counted during each GET run.",
        "Client CPU: user + system time of the client process (all its threads), from "
        "getrusage(RUSAGE_CHILDREN) around the run, divided by the commands it completed; it "
        "includes start-up and connecting (a few ms per run: noticeable only in `--quick`'s short runs). "
        "ops/s and latency are each tool's own figures (redis-benchmark's CSV, redcore-load's "
        "`--json`); with P64, both count a command's latency as that of its whole pipeline.",
        f"Cluster: 3 masters + 3 replicas on this machine. redis-benchmark `--cluster` gives each "
        f"connection one master (round robin) and only keys of that master (a hash tag), so at "
        f"c1 and P64 it talks to one master; redcore-load's keys spread over all slots, and its "
        f"pipeline of 64 is split by node and sent to the 3 masters at once. {pin}.",
    ]
    notes += [f"**{e}**" for e in errors]
    return "\n".join(lines + notes) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redcore-load", required=True)
    ap.add_argument("--server", required=True, help="host:port of the single server")
    ap.add_argument("--cluster", required=True, help="host:port of one cluster node")
    ap.add_argument("--cluster-ports", required=True, help="every cluster node's port, comma-separated")
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--data-size", type=int, default=32)
    ap.add_argument("--client-cpu", type=int)
    ap.add_argument("--server-cpus", default="")
    ap.add_argument("--git-rev", default="")
    ap.add_argument("--command", required=True, help="the command line to print in the header")
    ap.add_argument("--out")
    opts = ap.parse_args()
    if opts.requests < 64 or opts.repeat < 1:
        fail("--requests must be at least 64 and --repeat at least 1")

    runner = Runner(opts)
    server_port = opts.server.rsplit(":", 1)[1]
    targets = [
        Target("server", opts.server, [server_port], cluster=False),
        Target("cluster", opts.cluster, opts.cluster_ports.split(","), cluster=True),
    ]
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
    except OSError:
        load = "?"
    started = time.monotonic()
    rows = []
    for t in targets:
        rows += runner.target(t)
    print(f"compare: all runs took {time.monotonic() - started:.0f} s", file=sys.stderr)

    text = table(opts, rows, load)
    sys.stdout.write(text)
    if opts.out:
        try:
            with open(opts.out, "w") as f:
                f.write(text)
        except OSError as e:
            fail(f"writing {opts.out}: {e}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("compare.py: interrupted", file=sys.stderr)
        sys.exit(130)
