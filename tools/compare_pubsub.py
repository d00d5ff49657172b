#!/usr/bin/env python3
"""Pub/sub: redcore-load --pubsub against redis-rs-load --pubsub (issue 18),
on a server and on a cluster that tools/compare.sh started (`--pubsub`), and
prints a Markdown table.

Per target: (a) a saturation run (--rate 0) of every client, whose best
delivered msg/s is taken as the saturation rate; (b) runs at half that rate,
the clients interleaved over --rounds rounds, each figure the median of its
rounds. Not meant to be run by hand: tools/compare.sh starts and pins the
servers and passes their ports here; its header comment says what is
measured; the table's notes repeat it.
"""

import argparse
import json
import statistics
import sys
import time

from compare import Target, cluster_masters, fail, fmt_int, fmt_ratio, fmt_us, header, run, run_quiet
from compare_redis_rs import redis_rs_version

# What the table shows of a run; each the median over the rounds.
METRICS = ["delivered_per_sec", "p50", "p99", "cpu_us_per_msg", "published_per_sec"]
# The target for redcore at half the saturation rate (issue 18).
P99_TARGET_US = 1000.0


class Client:
    """One client of the comparison: its name and how to run it."""

    def __init__(self, name, tool, extra=(), only=None):
        self.name = name
        self.tool = tool
        self.extra = list(extra)
        # "server" or "cluster" when the client runs on one target only.
        self.only = only


CLIENTS = [
    Client("redcore", "redcore"),
    Client("redis-rs aio::PubSub", "redis-rs", ["--subscriber-api", "pubsub"], only="server"),
    Client("redis-rs RESP3 push", "redis-rs", ["--subscriber-api", "resp3"], only="server"),
    Client("redis-rs cluster RESP3 push", "redis-rs", only="cluster"),
]


class Runner:
    def __init__(self, opts):
        self.o = opts

    def kind(self, t):
        return self.o.cluster_pubsub if t.cluster else self.o.server_pubsub

    def cmd(self, client, t, rate, duration):
        if client.tool == "redcore":
            # --pubsub runs on one executor, pinned to the first online CPU:
            # the client CPU compare.sh chose.
            cmd = [self.o.redcore_load]
        else:
            cmd = [self.o.redis_rs_load]
            if self.o.client_cpu is not None:
                cmd += ["--cpu", str(self.o.client_cpu)]
        cmd += ["--cluster", f"{t.host}:{t.port}"] if t.cluster else ["--server", f"redis://{t.host}:{t.port}"]
        cmd += ["--pubsub", self.kind(t), "--channels", str(self.o.channels),
                "--publishers", str(self.o.publishers), "--subscribers", str(self.o.subscribers),
                "--in-flight", str(self.o.in_flight), "--message-size", str(self.o.message_size),
                "--rate", f"{rate:.0f}", "--tick", "0.001", "--duration", f"{duration:g}", "--warmup", f"{self.o.warmup:g}",
                "--json"]
        return cmd + client.extra

    def measure(self, client, t, rate, duration, phase):
        cmd = self.cmd(client, t, rate, duration)
        # A run publishes for warm-up + duration, then waits 2 s at most for
        # the tail; connecting a cluster takes a moment.
        limit_requests = int(2000 * (self.o.warmup + duration + 30))
        proc = run(cmd, client.name, limit_requests)
        if proc.returncode != 0:
            fail(f"{client.name} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                 f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}")
        try:
            rep = json.loads(proc.stdout)
            r = {
                "delivered": int(rep["delivered"]),
                "delivered_per_sec": float(rep["delivered_per_sec"]),
                "published_per_sec": float(rep["published_per_sec"]),
                "p50": float(rep["latency_us"]["p50"]),
                "p99": float(rep["latency_us"]["p99"]),
                "cpu_us_per_msg": float(rep["client_cpu_us_per_msg"]),
                "lost": int(rep["lost"]),
                "gaps": int(rep["gaps"]),
                "publish_errors": int(rep["publish_errors"]),
                "tail_timed_out": bool(rep["tail_timed_out"]),
                "send_lag_p99": float(rep["send_lag_us"]["p99"]) if rep.get("send_lag_us") else None,
            }
        except (KeyError, ValueError, TypeError) as e:
            fail(f"unexpected JSON from {client.name} ({e}): {' '.join(cmd)}\n{proc.stdout}")
        print(f"compare: {t.name} {phase} {client.name}: {r['delivered_per_sec']:.0f} msg/s delivered, "
              f"p50 {r['p50']:.1f} us, p99 {r['p99']:.1f} us, {r['cpu_us_per_msg']:.2f} us CPU/msg, "
              f"lost {r['lost']}, gaps {r['gaps']}", file=sys.stderr)
        return r


def median_row(runs):
    """Each metric's median over the rounds (each on its own); losses, gaps
    and errors summed."""
    row = {m: statistics.median(r[m] for r in runs) for m in METRICS}
    for m in ("lost", "gaps", "publish_errors"):
        row[m] = sum(r[m] for r in runs)
    lags = [r["send_lag_p99"] for r in runs if r["send_lag_p99"] is not None]
    row["send_lag_p99"] = statistics.median(lags) if lags else None
    row["rounds"] = len(runs)
    return row


def table(opts, load, results):
    lines = [header(opts, load, f"redis-server; redis-rs {redis_rs_version()}"), ""]
    lines.append("| target | phase | client | delivered msg/s | p50 µs | p99 µs | client CPU µs/msg "
                 "| lost | gaps | redcore / it: msg/s | p50 | p99 | CPU/msg |")
    lines.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    verdicts = []
    for (target, phase), rows in results.items():
        a = rows["redcore"]
        for name, r in rows.items():
            ratios = "| | | |" if name == "redcore" else (
                f"{fmt_ratio(a['delivered_per_sec'], r['delivered_per_sec'])} | {fmt_ratio(a['p50'], r['p50'])} "
                f"| {fmt_ratio(a['p99'], r['p99'])} | {fmt_ratio(a['cpu_us_per_msg'], r['cpu_us_per_msg'])} |")
            lines.append(f"| {target} | {phase} | {name} | {fmt_int(r['delivered_per_sec'])} | {fmt_us(r['p50'])} "
                         f"| {fmt_us(r['p99'])} | {r['cpu_us_per_msg']:.2f} | {r['lost']} | {r['gaps']} "
                         f"| {ratios}")
        if phase.startswith("half"):
            peers = [r for n, r in rows.items() if n != "redcore"]
            best = min(r["cpu_us_per_msg"] for r in peers)
            cpu_ok = a["cpu_us_per_msg"] <= best
            p99_ok = a["p99"] < P99_TARGET_US
            verdicts.append(
                f"{target}, {phase}: redcore's CPU per delivered message {a['cpu_us_per_msg']:.2f} µs against "
                f"the best peer's {best:.2f} µs ({'met' if cpu_ok else 'NOT met'}); p99 {fmt_us(a['p99'])} µs "
                f"against {P99_TARGET_US:.0f} µs ({'met' if p99_ok else 'NOT met'}).")
    pin = (f"Clients pinned to CPU {opts.client_cpu} (redcore-load pins its one executor there itself, "
           f"redis-rs-load with --cpu), servers to CPUs {opts.server_cpus}"
           if opts.client_cpu is not None else "Nothing pinned (one CPU only)")
    notes = [
        "",
        "Issue 18's targets, at half the saturation rate: " + " ".join(verdicts),
        "",
        "Ratios are redcore / that row's client (msg/s: higher is better for redcore; latency and CPU/msg: "
        "lower is).",
        f"Load: {opts.publishers} publisher(s) × at most {opts.in_flight} publishes in flight, "
        f"{opts.subscribers} subscriber(s) each on every one of {opts.channels} channel(s), "
        f"{opts.message_size}-byte payloads (publisher, sequence number, send time, padding); server: "
        f"{opts.server_pubsub} (`{'SUBSCRIBE/PUBLISH' if opts.server_pubsub == 'channels' else 'SSUBSCRIBE/SPUBLISH'}`), "
        f"cluster (3 masters + 3 replicas): {opts.cluster_pubsub}. Each run: {opts.warmup:g} s of warm-up, "
        f"then publishing for the run's time, then until every subscriber had every message (2 s at most).",
        f"Saturation: one run per client at --rate 0 ({opts.sat_duration:g} s); the best delivered msg/s of "
        f"the target's clients is its saturation rate (with one client core, it may be the client's limit "
        f"rather than the server's). Half rate: --rate = half of it, {opts.half_duration:g} s per run, "
        f"{opts.rounds} round(s) interleaved (round 1 in the listed order, round 2 reversed, ...), each figure "
        f"the median of its rounds, taken figure by figure; lost and gaps summed over the rounds. "
        f"Publishers pace in 1 ms ticks in both tools (`--tick 0.001`: the messages due within a "
        f"millisecond leave together, as tokio's millisecond timers make redis-rs-load do anyway).",
        "Clients: `redcore-load --pubsub` (one glommio executor; the publishers and every subscription share "
        "one `Connection` on the server, RESP3, and one `CoreClient` of a one-core `ClusterExecutor` on the "
        "cluster); `redis-rs-load --pubsub` (one tokio current-thread runtime; publishers share one "
        "`MultiplexedConnection` or one async cluster client; each subscriber its own connection: "
        "`aio::PubSub` (RESP2) or a RESP3 `MultiplexedConnection` with a push sender on the server, a RESP3 "
        "cluster client with a push sender on the cluster).",
        "Latency: from the send time the payload carries (just before the publish call) to the message's "
        "arrival in the subscriber's code (`CLOCK_MONOTONIC`, one process). Client CPU: user + system time "
        "of the whole client process (getrusage RUSAGE_SELF) from the first measured publish until every "
        f"subscriber had every message, over the measured messages delivered. {pin}.",
    ]
    problems = []
    for (target, phase), rows in results.items():
        for name, r in rows.items():
            if r["publish_errors"]:
                problems.append(f"{target} {phase}: {name} had {r['publish_errors']} failed publishes")
    notes += [f"**{p}**" for p in problems]
    return "\n".join(lines + notes) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redcore-load", required=True)
    ap.add_argument("--redis-rs-load", required=True)
    ap.add_argument("--server", required=True, help="host:port of the single server")
    ap.add_argument("--cluster", required=True, help="host:port of one cluster node")
    ap.add_argument("--cluster-ports", required=True, help="every cluster node's port, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short runs, one round (a smoke check)")
    ap.add_argument("--server-pubsub", choices=["channels", "sharded"], default="channels")
    ap.add_argument("--cluster-pubsub", choices=["channels", "sharded"], default="sharded")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--publishers", type=int, default=1)
    ap.add_argument("--subscribers", type=int, default=1)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--message-size", type=int, default=32)
    ap.add_argument("--client-cpu", type=int)
    ap.add_argument("--server-cpus", default="")
    ap.add_argument("--git-rev", default="")
    ap.add_argument("--command", required=True, help="the command line to print in the header")
    ap.add_argument("--out")
    opts = ap.parse_args()
    if opts.rounds < 1:
        fail("--rounds must be at least 1")
    if opts.quick:
        opts.rounds, opts.sat_duration, opts.half_duration, opts.warmup = 1, 0.5, 1.0, 0.2
    else:
        opts.sat_duration, opts.half_duration, opts.warmup = 2.0, 3.0, 0.5

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
    results = {}
    for t in targets:
        clients = [c for c in CLIENTS if c.only in (None, t.name)]
        sat = {c.name: runner.measure(c, t, 0, opts.sat_duration, "saturation") for c in clients}
        rate = max(r["delivered_per_sec"] for r in sat.values()) / opts.subscribers / 2
        sat_phase = "saturation (rate 0)"
        results[(t.name, sat_phase)] = {n: median_row([r]) for n, r in sat.items()}
        half_phase = f"half: {fmt_int(rate)} msg/s published"
        runs = {c.name: [] for c in clients}
        for rnd in range(opts.rounds):
            order = clients if rnd % 2 == 0 else clients[::-1]
            print(f"compare: {t.name}: half rate {rate:.0f}/s, round {rnd + 1} of {opts.rounds} "
                  f"({' then '.join(c.name for c in order)})", file=sys.stderr)
            for c in order:
                runs[c.name].append(runner.measure(c, t, rate, opts.half_duration, "half rate"))
        results[(t.name, half_phase)] = {n: median_row(r) for n, r in runs.items()}
    after = cluster_masters(targets[1])
    if after != masters:
        nodes = run_quiet(["redis-cli", "-p", targets[1].port, "cluster", "nodes"], "redis-cli cluster nodes")
        fail("the cluster's masters changed during the runs (a failover: the machine too loaded?); "
             f"its numbers are not comparable. CLUSTER NODES now:\n{nodes}")
    print(f"compare: all runs took {time.monotonic() - started:.0f} s", file=sys.stderr)

    text = table(opts, load, results)
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
        print("compare_pubsub.py: interrupted", file=sys.stderr)
        sys.exit(130)
