#!/usr/bin/env python3
"""Runs redcore-load and redis-rs-load in interleaved rounds against servers
that tools/compare.sh started (`--peer redis-rs`), and prints a Markdown
table of the medians and the ratios redcore / redis-rs.

Not meant to be run by hand: tools/compare.sh starts the servers, pins them,
and passes their ports here. Its header comment says what is measured and
how; the table's notes repeat it.
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

from compare import (Target, cluster_masters, fail, fmt_int, fmt_ratio, fmt_us, header, keyspace_counts,
                     run, run_quiet)

# Issue 17's shapes: (name, tasks, commands per pipeline, share of
# --requests a run sends: one command at a time is some 30x slower per
# command, so c1 runs send a twentieth, and still last seconds).
SHAPES = [("P64x4", 4, 64, 1.0), ("c1", 1, 1, 0.05), ("c64", 64, 1, 1.0)]
TOOLS = ["redcore", "redis-rs"]
# What the table shows of a run, each the median over the rounds.
METRICS = ["ops_per_sec", "p50", "p99", "cpu_us_per_cmd"]


class Runner:
    def __init__(self, opts):
        self.o = opts

    def layout(self, t):
        """Standalone: plain keys (`key:N`); cluster: tagged keys
        (`key:{T}:N`), so that a pipeline is one slot."""
        return "tagged" if t.cluster else "plain"

    def common(self, t, tasks, pipeline, requests):
        return ["--tasks", str(tasks), "--pipeline", str(pipeline), "--ratio", "1:1",
                "--data-size", str(self.o.data_size), "--keys", str(self.o.keys), "--key-prefix", "key:",
                "--key-layout", self.layout(t), "--requests", str(requests), "--json"]

    def cmd(self, tool, t, tasks, pipeline, requests):
        if tool == "redcore":
            # --cores 1 pins its one executor to the first online CPU: the
            # client CPU compare.sh chose.
            cmd = [self.o.redcore_load, "--cores", "1"]
            cmd += ["--cluster", f"{t.host}:{t.port}"] if t.cluster else ["--server", f"redis://{t.host}:{t.port}"]
        else:
            cmd = [self.o.redis_rs_load]
            if self.o.client_cpu is not None:
                cmd += ["--cpu", str(self.o.client_cpu)]
            cmd += ["--cluster", f"{t.host}:{t.port}"] if t.cluster else ["--server", f"redis://{t.host}:{t.port}"]
        return cmd + self.common(t, tasks, pipeline, requests)

    def prefill(self, t):
        """Writes every key of the target's layout once (redcore-load,
        sequential), so that every GET of both tools hits."""
        started = time.monotonic()
        cmd = [self.o.redcore_load, "--cores", "1"]
        cmd += ["--cluster", f"{t.host}:{t.port}"] if t.cluster else ["--server", f"redis://{t.host}:{t.port}"]
        cmd += self.common(t, 64, 64, self.o.keys)
        cmd[cmd.index("--ratio") + 1] = "1:0"
        cmd += ["--key-pattern", "sequential"]
        run_quiet(cmd, "redcore-load (prefill)", self.o.keys)
        print(f"compare: {t.name}: {self.o.keys} {self.layout(t)} keys written in "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)

    def requests(self, shape):
        return max(64, int(self.o.requests * shape[3]))

    def measure(self, tool, t, shape):
        name, tasks, pipeline, _ = shape
        requests = self.requests(shape)
        cmd = self.cmd(tool, t, tasks, pipeline, requests)
        h0 = keyspace_counts(t.node_ports)
        proc = run(cmd, tool, requests)
        h1 = keyspace_counts(t.node_ports)
        if proc.returncode != 0:
            fail(f"{tool} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                 f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}")
        try:
            rep = json.loads(proc.stdout)
            total = rep["total"]
            r = {
                "ops": int(total["ops"]),
                "errors": int(total["errors"]),
                "ops_per_sec": float(total["ops_per_sec"]),
                "p50": float(total["latency_us"]["p50"]),
                "p99": float(total["latency_us"]["p99"]),
                "cpu_us_per_cmd": float(rep["client_cpu_us_per_cmd"]),
            }
        except (KeyError, ValueError, TypeError) as e:
            fail(f"unexpected JSON from {tool} ({e}): {' '.join(cmd)}\n{proc.stdout}")
        looked = (h1[0] - h0[0]) + (h1[1] - h0[1])
        r["hit"] = (h1[0] - h0[0]) / looked if looked else None
        print(f"compare: {t.name} {name} {tool}: {r['ops_per_sec']:.0f} ops/s, p50 {r['p50']:.1f} us, "
              f"{r['cpu_us_per_cmd']:.2f} us CPU/cmd", file=sys.stderr)
        return r

    def floor(self, t, mode):
        """examples/glommio_floor: one command at a time over a bare glommio
        socket (mode bare, or deadline: with a timer per request), pinned
        where redcore-load pins itself."""
        requests = self.requests(SHAPES[1])
        cmd = [self.o.glommio_floor, f"{t.host}:{t.port}", str(requests), mode]
        if self.o.client_cpu is not None:
            cmd.append(str(self.o.client_cpu))
        proc = run(cmd, f"glommio_floor {mode}", requests)
        if proc.returncode != 0:
            fail(f"glommio_floor failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
        try:
            r = {"ops_per_sec": float(fields["ops_per_sec"]), "p50": float(fields["p50_us"]),
                 "cpu_us_per_cmd": float(fields["cpu_us_per_cmd"])}
        except (KeyError, ValueError) as e:
            fail(f"unexpected output from glommio_floor ({e}): {proc.stdout}")
        print(f"compare: {t.name} c1 glommio {mode}: {r['ops_per_sec']:.0f} ops/s, p50 {r['p50']:.1f} us, "
              f"{r['cpu_us_per_cmd']:.2f} us CPU/cmd", file=sys.stderr)
        return r


def median_row(runs):
    """Each metric's median over the rounds (each on its own), the errors
    summed, the lowest hit rate."""
    row = {m: statistics.median(r[m] for r in runs) for m in METRICS}
    row["errors"] = sum(r["errors"] for r in runs)
    hits = [r["hit"] for r in runs if r["hit"] is not None]
    row["hit"] = min(hits) if hits else None
    row["ops_spread"] = (min(r["ops_per_sec"] for r in runs), max(r["ops_per_sec"] for r in runs))
    return row


def redis_rs_version():
    """The redis crate's version in Cargo.lock (what redis-rs-load was built with)."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Cargo.lock")) as f:
            m = re.search(r'\[\[package\]\]\nname = "redis"\nversion = "([^"]+)"', f.read())
        return m.group(1) if m else "?"
    except OSError:
        return "?"


def fmt_spread(row):
    lo, hi = row["ops_spread"]
    return f"±{50 * (hi - lo) / row['ops_per_sec']:.0f}%" if row["ops_per_sec"] else "-"


def fmt_hit(row):
    return "-" if row["hit"] is None else f"{100 * row['hit']:.0f}"


# examples/glommio_floor's modes, as the floor table names them.
FLOOR_MODES = {"bare": "nothing else", "deadline": "a deadline timer per request"}


def table(opts, cells, load, floors):
    lines = [header(opts, load, f"redis-server; redis-rs {redis_rs_version()}"), ""]
    lines.append("| target | shape "
                 "| redcore ops/s | redcore p50 µs | redcore p99 µs | redcore CPU µs/cmd "
                 "| redis-rs ops/s | redis-rs p50 µs | redis-rs p99 µs | redis-rs CPU µs/cmd "
                 "| ops/s ratio | p50 ratio | CPU/cmd ratio | ops/s spread redcore / redis-rs "
                 "| GET hits % redcore / redis-rs |")
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    errors = []
    for (target, shape), by_tool in cells.items():
        a, b = by_tool["redcore"], by_tool["redis-rs"]
        lines.append(
            f"| {target} | {shape} "
            f"| {fmt_int(a['ops_per_sec'])} | {fmt_us(a['p50'])} | {fmt_us(a['p99'])} | {a['cpu_us_per_cmd']:.2f} "
            f"| {fmt_int(b['ops_per_sec'])} | {fmt_us(b['p50'])} | {fmt_us(b['p99'])} | {b['cpu_us_per_cmd']:.2f} "
            f"| {fmt_ratio(a['ops_per_sec'], b['ops_per_sec'])} | {fmt_ratio(a['p50'], b['p50'])} "
            f"| {fmt_ratio(a['cpu_us_per_cmd'], b['cpu_us_per_cmd'])} | {fmt_spread(a)} / {fmt_spread(b)} "
            f"| {fmt_hit(a)} / {fmt_hit(b)} |")
        for tool, row in by_tool.items():
            if row["errors"]:
                errors.append(f"{target} {shape}: {tool} reported {row['errors']} errors over the rounds")
    if floors:
        lines += ["", "The floor under c1 on the server: the same commands, one at a time, over a bare glommio "
                  "socket (`examples/glommio_floor.rs`), interleaved with the runs above; redcore's c1 "
                  "over it.", "",
                  "| client | ops/s | p50 µs | CPU µs/cmd | redcore c1 p50 / it | redcore c1 CPU / it |",
                  "|---|--:|--:|--:|--:|--:|"]
        a = cells[("server", "c1")]["redcore"]
        for mode, runs in floors.items():
            f = {m: statistics.median(r[m] for r in runs) for m in ("ops_per_sec", "p50", "cpu_us_per_cmd")}
            lines.append(f"| bare glommio, {FLOOR_MODES[mode]} | {fmt_int(f['ops_per_sec'])} | {fmt_us(f['p50'])} "
                         f"| {f['cpu_us_per_cmd']:.2f} | {fmt_ratio(a['p50'], f['p50'])} "
                         f"| {fmt_ratio(a['cpu_us_per_cmd'], f['cpu_us_per_cmd'])} |")
    pin = (f"Clients pinned to CPU {opts.client_cpu} (redcore-load pins its one executor there itself, "
           f"redis-rs-load with --cpu), servers to CPUs {opts.server_cpus}"
           if opts.client_cpu is not None else "Nothing pinned (one CPU only)")
    notes = [
        "",
        "Ratios are redcore / redis-rs (ops/s: higher is better for redcore; p50 and CPU/cmd: lower is).",
        "Clients: `redcore-load --cores 1` (one glommio executor) against `redis-rs-load` (one tokio "
        "current-thread runtime; its tasks share one `MultiplexedConnection`, or one async cluster "
        "client; pipelines are `redis::pipe()`, not atomic).",
        f"Shapes: P64x4 = 4 tasks, each sending pipelines of 64; c1 = 1 task, one command at a time; "
        f"c64 = 64 tasks, one command at a time. Every run: {opts.requests} commands (c1: "
        f"{max(64, int(opts.requests * SHAPES[1][3]))}), SET:GET 1:1 mixed "
        f"in the run, {opts.data_size}-byte values, {opts.keys} keys drawn uniformly at random. Server: "
        f"keys `key:N`; cluster (3 masters + 3 replicas): keys `key:{{T}}:N` (`--key-layout tagged`, "
        f"1024 hash tags), a pipeline's keys share its first key's tag, so each pipeline is one slot "
        f"(redis-rs's cluster client refuses others). Both tools use the same keys, all written before "
        f"the runs, so GETs hit (last column: the lowest hit rate the servers counted in a round).",
        f"{opts.rounds} round(s), interleaved: round 1 runs redcore then redis-rs for every cell, "
        f"round 2 redis-rs then redcore, and so on; each figure is the median of its rounds, taken "
        f"figure by figure. ops/s spread: half the range of the rounds' ops/s, over the median.",
        "ops/s, latency and client CPU are each tool's own report, measured the same way: latency "
        "from just before a call to its reply, a pipeline's commands each counting the pipeline's; "
        "client CPU = user + system time of the whole client process (getrusage RUSAGE_SELF) from "
        "the first measured command to the end of the load, divided by the commands that ended; "
        "start-up and connecting are left out (except redcore's cluster node connections, opened by "
        f"the first commands). {pin}.",
    ]
    notes += [f"**{e}**" for e in errors]
    return "\n".join(lines + notes) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redcore-load", required=True)
    ap.add_argument("--redis-rs-load", required=True)
    ap.add_argument("--glommio-floor", required=True, help="the built examples/glommio_floor")
    ap.add_argument("--server", required=True, help="host:port of the single server")
    ap.add_argument("--cluster", required=True, help="host:port of one cluster node")
    ap.add_argument("--cluster-ports", required=True, help="every cluster node's port, comma-separated")
    ap.add_argument("--requests", type=int, required=True, help="commands per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--data-size", type=int, default=32)
    ap.add_argument("--client-cpu", type=int)
    ap.add_argument("--server-cpus", default="")
    ap.add_argument("--git-rev", default="")
    ap.add_argument("--command", required=True, help="the command line to print in the header")
    ap.add_argument("--out")
    opts = ap.parse_args()
    if opts.requests < 64 or opts.rounds < 1:
        fail("--requests must be at least 64 and --rounds at least 1")

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
    masters = cluster_masters(targets[1])
    if not masters[0]:
        fail("the cluster is not healthy (cluster_state is not ok on every node)")
    started = time.monotonic()
    for t in targets:
        runner.prefill(t)
    runs = {(t.name, s[0]): {tool: [] for tool in TOOLS} for t in targets for s in SHAPES}
    floors = {mode: [] for mode in FLOOR_MODES}
    for rnd in range(opts.rounds):
        order = TOOLS if rnd % 2 == 0 else TOOLS[::-1]
        print(f"compare: round {rnd + 1} of {opts.rounds} ({' then '.join(order)})", file=sys.stderr)
        for t in targets:
            for shape in SHAPES:
                for tool in order:
                    runs[(t.name, shape[0])][tool].append(runner.measure(tool, t, shape))
                if not t.cluster and shape[0] == "c1":
                    for mode in FLOOR_MODES:
                        floors[mode].append(runner.floor(t, mode))
    after = cluster_masters(targets[1])
    if after != masters:
        nodes = run_quiet(["redis-cli", "-p", targets[1].port, "cluster", "nodes"], "redis-cli cluster nodes")
        fail("the cluster's masters changed during the runs (a failover: the machine too loaded?); "
             f"its numbers are not comparable. Before: healthy {masters[0]}, masters {sorted(masters[1])}; "
             f"after: healthy {after[0]}, masters {sorted(after[1])}; CLUSTER NODES now:\n{nodes}")
    print(f"compare: all runs took {time.monotonic() - started:.0f} s", file=sys.stderr)

    cells = {cell: {tool: median_row(r) for tool, r in by_tool.items()} for cell, by_tool in runs.items()}
    text = table(opts, cells, load, floors)
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
        print("compare_redis_rs.py: interrupted", file=sys.stderr)
        sys.exit(130)
