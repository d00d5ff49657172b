#!/usr/bin/env bash
# Client-side caching, measured: a read-heavy load (SET:GET 1:9, keys
# drawn by zipf(0.99) over 100000 keys, 32-byte values) on one core,
# `redcore-load` without a cache against `redcore-load --cache 64MB`,
# interleaved round by round on the same server (or cluster), with
# `redis-benchmark` on the same server in every round as a reference.
# Prints per run: ops/s, client CPU per command (the tool's own figure:
# getrusage of its process over the measured phase), server CPU per
# command (user + system time of the redis-server processes from
# /proc/PID/stat, before and after the run, over the commands the run
# completed), the hit ratio and the p50/p99 of GET hits and misses; then
# the median of each figure over the rounds, per mode.
#
# Usage: tools/bench-cache.sh [--cluster] [ROUNDS] [DURATION]
#   --cluster  a 3-master/3-replica cluster (tools/cluster-lib.sh) instead
#              of one server; redcore-load --cluster --cores 1 (one core of
#              the per-core runtime); no redis-benchmark row (it has no
#              cluster mode here)
#   ROUNDS     rounds (default 3); odd rounds run no-cache first, even
#              rounds cache first
#   DURATION   measured time of each redcore-load run (default 10s)
#
# What it does: builds redcore-load in release mode, installs redis when
# missing (tools/ensure-redis.sh), starts the server(s) on free 127.0.0.1
# ports in a temporary directory, writes every key once (so that GETs find
# a value), runs the rounds, and stops every server it started, by pid
# (also on failure or Ctrl-C). On 2+ CPUs the servers are pinned to the
# CPUs after the first (taskset) and the clients run on the first CPU
# (redcore-load pins its executor there; redis-benchmark through
# taskset). Runs have no warm-up: the cache starts empty in each run and
# its filling is part of the figures; server CPU counts the whole run.
# redis-benchmark: `-c 64 -n 400000 -r 100000 -d 32 -t get` (uniform keys,
# GET only: the server's plain GET rate, not the same mix) and its CPU per
# request (getrusage of the child).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cluster=""
if [ "${1:-}" = --cluster ]; then cluster=1; shift; fi
rounds=${1:-3}
duration=${2:-10s}
case "$rounds" in
    '' | *[!0-9]*) echo "usage: tools/bench-cache.sh [--cluster] [ROUNDS] [DURATION]" >&2; exit 2 ;;
esac

source tools/ensure-redis.sh
ensure_redis
ensure_python3
source tools/cluster-lib.sh

cargo build --release -p redcore-load >&2
bin="$(cargo_target_dir)/release/redcore-load"

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
cleanup_on_exit cleanup

if [ -n "$cluster" ]; then
    cluster_ports
    cluster_start_nodes "$dir" child
    cluster_create "$dir"
    target=(--cluster "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}")
    bench_port=""
else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" &
    pids+=($!)
    for _ in $(seq 1 200); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    redis-cli -p "$port" ping >/dev/null
    target=(--server "redis://127.0.0.1:$port")
    bench_port=$port
fi

client_cpu=""
if [ "$(nproc)" -ge 2 ]; then
    first=$(python3 -c 'import os; print(min(os.sched_getaffinity(0)))')
    others=$(python3 -c 'import os; c=sorted(os.sched_getaffinity(0)); print(",".join(map(str,c[1:])))')
    for pid in "${pids[@]}"; do taskset -pc "$others" "$pid" >/dev/null; done
    client_cpu=$first
fi

# Every key written once: GETs find 32-byte values.
"$bin" "${target[@]}" --cores 1 --ratio 1:0 --key-pattern sequential --keys 100000 \
    --requests 100000 --json >/dev/null

echo "# tools/bench-cache.sh ${cluster:+--cluster }$rounds $duration: $(date -u +%FT%TZ), $(nproc) CPUs, $(uname -r), $(redis-server --version | grep -o 'v=[0-9.]*')"
echo "# redcore-load ${target[*]} --cores 1 --tasks 64 --ratio 1:9 --key-pattern zipf:0.99 --keys 100000 --duration $duration --json [--cache 64MB]"
if [ -n "$bench_port" ]; then
    echo "# redis-benchmark -p $bench_port -c 64 -n 400000 -r 100000 -d 32 -t get --csv${client_cpu:+ (taskset -c $client_cpu)}"
fi

python3 - "$bin" "$dir" "$rounds" "$duration" "${bench_port:-}" "${client_cpu:-}" "${target[@]}" -- "${pids[@]}" <<'PY'
import json, os, resource, statistics, subprocess, sys

bin_, dir_, rounds, duration, bench_port, client_cpu = sys.argv[1:7]
rest = sys.argv[7:]
sep = rest.index("--")
target, pids = rest[:sep], [int(p) for p in rest[sep + 1:]]
rounds = int(rounds)
ticks = os.sysconf("SC_CLK_TCK")

def server_cpu():
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat (1-based).
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total

def redcore(cache):
    args = [bin_, *target, "--cores", "1", "--tasks", "64", "--ratio", "1:9",
            "--key-pattern", "zipf:0.99", "--keys", "100000", "--duration", duration, "--json"]
    if cache:
        args += ["--cache", "64MB"]
    before = server_cpu()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    after = server_cpu()
    r = json.loads(out)
    ended = r["total"]["ops"] + r["total"]["errors"]
    get = next(c for c in r["commands"] if c["name"] == "GET")
    row = {
        "mode": "cache" if cache else "no cache",
        "ops_s": r["total"]["ops_per_sec"],
        "client_us": r["client_cpu_us_per_cmd"],
        "server_us": (after - before) * 1e6 / ended,
        "get_p50": get["latency_us"]["p50"],
        "get_p99": get["latency_us"]["p99"],
    }
    if cache:
        c = r["cache"]
        row.update(hit_ratio=r["hit_ratio"], hit_p50=c["hit_latency_us"]["p50"],
                   hit_p99=c["hit_latency_us"]["p99"], miss_p50=c["miss_latency_us"]["p50"],
                   miss_p99=c["miss_latency_us"]["p99"])
    return row

def bench():
    n = 400000
    args = ["redis-benchmark", "-p", bench_port, "-c", "64", "-n", str(n), "-r", "100000",
            "-d", "32", "-t", "get", "--csv"]
    if client_cpu:
        args = ["taskset", "-c", client_cpu, *args]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = server_cpu()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    after = server_cpu()
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (now.ru_utime - children.ru_utime) + (now.ru_stime - children.ru_stime)
    line = [l for l in out.splitlines() if l.startswith('"GET"')][0]
    cells = [c.strip('"') for c in line.split(",")]
    return {"mode": "redis-benchmark GET", "ops_s": float(cells[1]),
            "client_us": cpu * 1e6 / n, "server_us": (after - before) * 1e6 / n,
            "get_p50": float(cells[4]) * 1000, "get_p99": float(cells[6]) * 1000}

def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"

head = (f"{'round':<5} {'mode':<20} {'ops/s':>9} {'cli us/op':>9} {'srv us/op':>9} "
        f"{'GET p50':>8} {'GET p99':>8} {'hit':>6} {'hit p50':>8} {'hit p99':>8} "
        f"{'miss p50':>8} {'miss p99':>8}")
def show(label, r):
    print(f"{label:<5} {r['mode']:<20} {fmt(r['ops_s'], '9.0f')} {fmt(r['client_us'], '9.2f')} "
          f"{fmt(r['server_us'], '9.2f')} {fmt(r['get_p50'], '8.1f')} {fmt(r['get_p99'], '8.1f')} "
          f"{fmt(r.get('hit_ratio'), '6.3f')} {fmt(r.get('hit_p50'), '8.2f')} "
          f"{fmt(r.get('hit_p99'), '8.2f')} {fmt(r.get('miss_p50'), '8.1f')} "
          f"{fmt(r.get('miss_p99'), '8.1f')}", flush=True)

print("latencies in microseconds; hit: hit ratio")
print(head)
runs = []
for i in range(1, rounds + 1):
    order = [False, True] if i % 2 else [True, False]
    for cache in order:
        r = redcore(cache)
        runs.append(r)
        show(str(i), r)
    if bench_port:
        r = bench()
        runs.append(r)
        show(str(i), r)

print("\nmedians over the rounds")
print(head)
for mode in ["no cache", "cache", "redis-benchmark GET"]:
    rs = [r for r in runs if r["mode"] == mode]
    if not rs:
        continue
    med = {"mode": mode}
    for k in rs[0]:
        if k != "mode":
            med[k] = statistics.median(r[k] for r in rs)
    show("med", med)
meds = {m: statistics.median(r["ops_s"] for r in runs if r["mode"] == m) for m in ["no cache", "cache"]}
cli = {m: statistics.median(r["client_us"] for r in runs if r["mode"] == m) for m in ["no cache", "cache"]}
srv = {m: statistics.median(r["server_us"] for r in runs if r["mode"] == m) for m in ["no cache", "cache"]}
print(f"\ncache / no cache: ops/s {meds['cache'] / meds['no cache']:.2f}x, "
      f"client CPU per command {cli['cache'] / cli['no cache']:.2f}x, "
      f"server CPU per command {srv['cache'] / srv['no cache']:.2f}x")
PY
