#!/usr/bin/env bash
# redcore-load against redis-benchmark, in one go (issue 6): the same
# settings on one server and on a 3-master/3-replica cluster, at concurrency
# 1, concurrency 64 and pipelines of 64, for SET and for GET; prints a
# Markdown table (ops/s, p50 and p99 latency, client CPU per command, and
# the ratios redcore / redis-benchmark) with a header line naming the date,
# the kernel, the CPU, the Redis version and this command.
#
# Usage: tools/compare.sh [--quick] [--requests N] [--repeat K] [--out FILE]
#   --quick        small request counts (a smoke check, under a minute)
#   --requests N   base request count per run (default 200000, --quick 20000):
#                  c64 runs N commands, c1 N/4 and P64 4N (c1 is the slowest
#                  per command, P64 the fastest), so each run lasts seconds
#   --repeat K     run every cell K times and keep the median by ops/s
#                  (default 1)
#   --out FILE     also write the table to FILE
#
# What it does: builds redcore-load (release), installs redis when missing
# (tools/ensure-redis.sh), starts one redis-server and a 3+3 cluster
# (tools/cluster-lib.sh) on free 127.0.0.1 ports in a temporary directory,
# runs tools/compare.py, and stops every server it started, by pid (also on
# failure or Ctrl-C), and removes the directory.
#
# Equivalent settings. redis-benchmark is single-threaded, so redcore-load
# runs with --cores 1. Shapes: c1 = `redis-benchmark -c 1 -P 1` vs
# `redcore-load --tasks 1`; c64 = `-c 64` vs `--tasks 64` (redcore's 64
# tasks share one auto-pipelined connection per node, where redis-benchmark
# opens 64 connections: that difference is the point of the comparison);
# P64 = `-c 1 -P 64` vs `--tasks 1 --pipeline 64`. Both: 32-byte values,
# 100000 keys picked uniformly at random (key:N vs key:__rand_int__).
# On 2+ CPUs the clients run on the first online CPU (redcore-load pins its
# executor there itself; redis-benchmark through taskset) and the servers on
# the others, so that neither tool competes with a server for its core.
#
# SET/GET fairness: redis-benchmark reports SET and GET as separate tests,
# so both tools measure them apart, each run its own process (`-t set` /
# `-t get` against `--ratio 1:0` / `--ratio 0:1`). Before a target's runs
# every key of both tools' key spaces is written, so GETs hit (32-byte
# replies, not nils); the table shows the hit rate the servers counted.
#
# Client CPU: user + system time of the client process and all its threads,
# getrusage(RUSAGE_CHILDREN) just before and after the run, divided by the
# commands it completed. Measured the same way for both tools; it includes
# start-up and connecting (a few ms).
set -euo pipefail

usage() {
    sed -n '/^# Usage:/,/^#$/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
die() {
    echo "tools/compare.sh: $*" >&2
    exit 1
}

# The command as given, for the table's header.
command_line="tools/compare.sh"
for arg in "$@"; do command_line+=" $(printf '%q' "$arg")"; done

quick=""
requests=""
repeat=1
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --requests) [ $# -ge 2 ] || usage; requests=$2; shift ;;
        --requests=*) requests=${1#--requests=} ;;
        --repeat) [ $# -ge 2 ] || usage; repeat=$2; shift ;;
        --repeat=*) repeat=${1#--repeat=} ;;
        --out) [ $# -ge 2 ] || usage; out=$2; shift ;;
        --out=*) out=${1#--out=} ;;
        -h | --help) usage ;;
        *) echo "tools/compare.sh: unknown argument: $1" >&2; usage ;;
    esac
    shift
done
if [ -z "$requests" ]; then
    if [ -n "$quick" ]; then requests=20000; else requests=200000; fi
fi
if ! [[ "$requests" =~ ^[0-9]+$ ]] || [ "$requests" -lt 256 ]; then die "--requests needs a number >= 256, not '$requests'"; fi
if ! [[ "$repeat" =~ ^[0-9]+$ ]] || [ "$repeat" -lt 1 ]; then die "--repeat needs a number >= 1, not '$repeat'"; fi
out_args=()
if [ -n "$out" ]; then
    # Relative to the caller's directory, not the repository's.
    if [ "${out#/}" = "$out" ]; then out="$PWD/$out"; fi
    out_args=(--out "$out")
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v python3 >/dev/null 2>&1 || die "python3 is needed (tools/compare.py, tools/cluster-lib.sh)"
source tools/ensure-redis.sh
ensure_redis
for bin in redis-server redis-cli redis-benchmark; do
    command -v "$bin" >/dev/null 2>&1 || die "$bin is not on PATH (Debian/Ubuntu: apt-get install redis-server redis-tools)"
done

echo "compare: building redcore-load (release)" >&2
cargo build --release -p redcore-load >&2 || die "cargo build --release -p redcore-load failed"
load_bin=$(source tools/cluster-lib.sh && cargo_target_dir)/release/redcore-load
[ -x "$load_bin" ] || die "$load_bin is missing after the build"
git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then git_rev+="+uncommitted changes"; fi

# Everything started from here on is stopped on exit, by pid.
dir=$(mktemp -d "${TMPDIR:-/tmp}/redcore-compare.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
    pids=()
    rm -rf "$dir"
}
cleanup_on_exit cleanup

# CPUs: clients on the first online CPU (where redcore-load --cores 1 pins
# itself), servers on the others.
read -r client_cpu server_cpus < <(python3 - <<'PY'
cpus = []
for part in open("/sys/devices/system/cpu/online").read().strip().split(","):
    lo, _, hi = part.partition("-")
    cpus += range(int(lo), int(hi or lo) + 1)
cpus.sort()
print(cpus[0], ",".join(map(str, cpus[1:])) or "-")
PY
) || die "could not read the online CPUs"
pin_args=()
if [ "$server_cpus" = "-" ]; then
    client_cpu=""
else
    command -v taskset >/dev/null 2>&1 || die "taskset is needed to pin the servers and redis-benchmark (util-linux)"
    pin_args=(--client-cpu "$client_cpu" --server-cpus "$server_cpus")
fi

# pin_servers PID...: moves every thread of these servers to $server_cpus.
pin_servers() {
    local pid
    [ -n "$client_cpu" ] || return 0
    for pid in "$@"; do
        taskset -a -p -c "$server_cpus" "$pid" >/dev/null || die "taskset could not pin redis-server $pid"
    done
}

# wait_ping PORT: waits until the server on PORT answers PING.
wait_ping() {
    local _
    for _ in $(seq 1 200); do
        if redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; then return 0; fi
        sleep 0.05
    done
    die "redis-server on port $1 did not answer (log: $dir/$1/redis.log)"
}

# The single server.
single_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
    die "could not find a free port"
mkdir -p "$dir/$single_port"
redis-server --port "$single_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$dir/$single_port" --logfile "$dir/$single_port/redis.log" &
pids+=($!)
wait_ping "$single_port"
pin_servers "${pids[0]}"

# The cluster (cluster_start_nodes appends its nodes' pids to `pids`).
echo "compare: starting a 3-master/3-replica cluster" >&2
source tools/cluster-lib.sh
cluster_ports
cluster_start_nodes "$dir" child
cluster_create "$dir"
pin_servers "${pids[@]:1}"
# cluster-lib's 2 s node timeout lets a loaded machine (6 nodes sharing the
# server CPUs under full load) fail a master over in the middle of a run.
for port in "${ports[@]}"; do
    redis-cli -p "$port" config set cluster-node-timeout 60000 >/dev/null ||
        die "could not raise cluster-node-timeout on node $port"
done
cluster_csv=$(IFS=,; echo "${ports[*]}")

python3 tools/compare.py \
    --redcore-load "$load_bin" \
    --server "127.0.0.1:$single_port" \
    --cluster "127.0.0.1:${ports[0]}" \
    --cluster-ports "$cluster_csv" \
    --requests "$requests" \
    --repeat "$repeat" \
    ${pin_args[@]+"${pin_args[@]}"} \
    --git-rev "$git_rev" \
    --command "$command_line" \
    ${out_args[@]+"${out_args[@]}"} || die "the comparison failed (see above)"
