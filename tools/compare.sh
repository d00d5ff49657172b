#!/usr/bin/env bash
# redcore's yardsticks, in one go: redcore-load against redis-benchmark
# (issue 6, the default) or against redis-rs (issue 17, `--peer redis-rs`),
# on one server and on a 3-master/3-replica cluster, printing a Markdown
# table with a header line naming the date, the kernel, the CPU, the Redis
# version and this command.
#
# Usage: tools/compare.sh [--peer redis-benchmark|redis-rs] [--pubsub] [--quick]
#                         [--requests N] [--repeat K] [--rounds K] [--out FILE]
#   --peer P       what redcore is compared with: redis-benchmark (default)
#                  or redis-rs (tools/redis-rs-load)
#   --pubsub       pub/sub instead of SET/GET, against redis-rs
#                  (tools/compare_pubsub.py; implies --peer redis-rs)
#   --quick        small request counts (a smoke check, a minute or two)
#   --requests N   redis-benchmark: base request count per run (default
#                  200000, --quick 20000): c64 runs N commands, c1 N/4 and
#                  P64 4N. redis-rs: commands per run, every shape (default
#                  600000, --quick 30000)
#   --repeat K     redis-benchmark: run every cell K times and keep the
#                  median run by ops/s (default 1)
#   --rounds K     redis-rs: interleaved rounds, medians per cell (default 3;
#                  --pubsub --quick: 1)
#   --out FILE     also write the table to FILE
#
# What it does: builds redcore-load (and, for redis-rs, redis-rs-load)
# in release mode, installs redis when missing (tools/ensure-redis.sh),
# starts one redis-server and a 3+3 cluster (tools/cluster-lib.sh) on free
# 127.0.0.1 ports in a temporary directory, runs tools/compare.py
# (redis-benchmark) or tools/compare_redis_rs.py (redis-rs), and stops
# every server it started, by pid (also on failure or Ctrl-C), and removes
# the directory. On 2+ CPUs the clients run on the first online CPU
# (redcore-load pins its executor there itself; redis-benchmark through
# taskset, redis-rs-load with --cpu) and the servers on the others, so that
# no client competes with a server for its core.
#
# --- Against redis-benchmark (the default) ---
# Equivalent settings. redis-benchmark is single-threaded, so redcore-load
# runs with --cores 1. Shapes: c1 = `redis-benchmark -c 1 -P 1` vs
# `redcore-load --tasks 1`; c64 = `-c 64` vs `--tasks 64` (redcore's 64
# tasks share one auto-pipelined connection per node, where redis-benchmark
# opens 64 connections: that difference is the point of the comparison);
# P64 = `-c 1 -P 64` vs `--tasks 1 --pipeline 64`. Both: 32-byte values,
# 100000 keys picked uniformly at random (key:N vs key:__rand_int__).
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
#
# --- Against redis-rs (--peer redis-rs) ---
# `redcore-load --cores 1` (one glommio executor) against
# `redis-rs-load` (tools/redis-rs-load: redis-rs 1.8 on ONE tokio
# current-thread runtime, its tasks sharing ONE MultiplexedConnection, or
# one async cluster client; pipelines through redis::pipe()). Shapes, on
# the server and on the cluster: P64x4 = 4 tasks x pipelines of 64; c1 =
# 1 task, one command at a time; c64 = 64 tasks x 1. Every run: SET:GET
# 1:1 mixed in one run, 32-byte values, 100000 keys drawn uniformly, N
# commands (600000; c1 runs N/20, as one command at a time is far slower
# per command). Beside the server's c1 runs, examples/glommio_floor sends
# the same commands one at a time over a bare glommio socket (with and
# without a deadline timer per request): the runtime's own floor under a
# lone request, shown in a second table. The server's keys are `key:N`; the cluster's are
# `key:{T}:N` (--key-layout tagged, 1024 tags) and each pipeline's keys
# share its first key's tag, so a pipeline is one slot (redis-rs's cluster
# client refuses pipelines across slots). Both tools name the same keys,
# written once before the runs, so GETs hit (the table shows the servers'
# hit rate).
# Rounds are interleaved: round 1 runs redcore then redis-rs for every
# cell, round 2 redis-rs then redcore, ...; each figure of the table is
# the median over the rounds of that figure. Ratios: redcore / redis-rs of
# ops/s, p50 and client CPU per command.
# Client CPU here is each tool's own report (client_cpu_us_per_cmd), the
# same code in both: user + system time of the whole client process
# (getrusage RUSAGE_SELF) from the first measured command to the end of the
# load, over the commands that ended; start-up and connecting left out
# (redcore's cluster connections open with the first commands: in).
#
# --- Pub/sub (--pubsub) ---
# `redcore-load --pubsub` (one glommio executor: publishers and every
# subscription on one Connection, or one CoreClient of a one-core
# ClusterExecutor) against `redis-rs-load --pubsub` (one tokio
# current-thread runtime: publishers on one MultiplexedConnection or cluster
# client, each subscriber its own connection: aio::PubSub or RESP3 push on
# the server, both measured; a RESP3 cluster client with a push sender on
# the cluster). The server's load is channels (SUBSCRIBE/PUBLISH), the
# cluster's sharded channels (SSUBSCRIBE/SPUBLISH); 1 publisher with up to 64
# publishes in flight, 1 subscriber, 1 channel, 32-byte payloads carrying
# publisher, sequence number and send time. Per target: a saturation run
# (--rate 0, 2 s) of every client, the best delivered msg/s taken as the
# saturation rate; then --rounds interleaved rounds at half that rate (3 s
# per run), medians; both tools pace their publishers in 1 ms ticks (tokio's
# timer resolution; --tick). The table: delivered msg/s, publish->receive p50/p99,
# client CPU per delivered message (each tool's own getrusage RUSAGE_SELF,
# as above), messages lost and gaps, the ratios redcore / each redis-rs
# client, and issue 18's targets (CPU/msg at most the best peer's, p99 under
# 1 ms at half the saturation rate). About two minutes; --quick: 0.5 s and
# 1 s runs, one round.
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

peer=redis-benchmark
peer_given=""
pubsub=""
quick=""
requests=""
repeat=""
rounds=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --peer) [ $# -ge 2 ] || usage; peer=$2; peer_given=1; shift ;;
        --peer=*) peer=${1#--peer=}; peer_given=1 ;;
        --pubsub) pubsub=1 ;;
        --rounds) [ $# -ge 2 ] || usage; rounds=$2; shift ;;
        --rounds=*) rounds=${1#--rounds=} ;;
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
if [ -n "$pubsub" ]; then
    [ -z "$peer_given" ] || [ "$peer" = redis-rs ] || die "--pubsub compares with redis-rs, not '$peer'"
    peer=redis-rs
    [ -z "$requests" ] || die "--requests is not for --pubsub (runs are timed)"
    [ -z "$repeat" ] || die "--repeat is not for --pubsub (--rounds)"
    # Only to pass the checks below; compare_pubsub.py times its runs.
    requests=256
fi
case "$peer" in
    redis-benchmark)
        [ -z "$rounds" ] || die "--rounds is for --peer redis-rs (redis-benchmark: --repeat)"
        repeat=${repeat:-1}
        if [ -z "$requests" ]; then
            if [ -n "$quick" ]; then requests=20000; else requests=200000; fi
        fi
        ;;
    redis-rs)
        [ -z "$repeat" ] || die "--repeat is for --peer redis-benchmark (redis-rs: --rounds)"
        rounds=${rounds:-3}
        if [ -z "$requests" ]; then
            if [ -n "$quick" ]; then requests=30000; else requests=600000; fi
        fi
        if ! [[ "$rounds" =~ ^[0-9]+$ ]] || [ "$rounds" -lt 1 ]; then die "--rounds needs a number >= 1, not '$rounds'"; fi
        ;;
    *) die "--peer is redis-benchmark or redis-rs, not '$peer'" ;;
esac
if ! [[ "$requests" =~ ^[0-9]+$ ]] || [ "$requests" -lt 256 ]; then die "--requests needs a number >= 256, not '$requests'"; fi
if [ "$peer" = redis-benchmark ] && { ! [[ "$repeat" =~ ^[0-9]+$ ]] || [ "$repeat" -lt 1 ]; }; then
    die "--repeat needs a number >= 1, not '$repeat'"
fi
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

packages=(-p redcore-load)
if [ "$peer" = redis-rs ]; then packages+=(-p redis-rs-load); fi
echo "compare: building ${packages[*]} (release)" >&2
cargo build --release "${packages[@]}" >&2 || die "cargo build --release ${packages[*]} failed"
release_dir=$(source tools/cluster-lib.sh && cargo_target_dir)/release
load_bin=$release_dir/redcore-load
rs_load_bin=$release_dir/redis-rs-load
[ -x "$load_bin" ] || die "$load_bin is missing after the build"
if [ "$peer" = redis-rs ] && [ ! -x "$rs_load_bin" ]; then die "$rs_load_bin is missing after the build"; fi
floor_bin=$release_dir/examples/glommio_floor
if [ "$peer" = redis-rs ] && [ -z "$pubsub" ]; then
    cargo build --release --example glommio_floor >&2 || die "cargo build --release --example glommio_floor failed"
    [ -x "$floor_bin" ] || die "$floor_bin is missing after the build"
fi
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

if [ -n "$pubsub" ]; then
    quick_args=()
    if [ -n "$quick" ]; then quick_args=(--quick); fi
    python3 tools/compare_pubsub.py \
        --redcore-load "$load_bin" \
        --redis-rs-load "$rs_load_bin" \
        --server "127.0.0.1:$single_port" \
        --cluster "127.0.0.1:${ports[0]}" \
        --cluster-ports "$cluster_csv" \
        --rounds "$rounds" \
        ${quick_args[@]+"${quick_args[@]}"} \
        ${pin_args[@]+"${pin_args[@]}"} \
        --git-rev "$git_rev" \
        --command "$command_line" \
        ${out_args[@]+"${out_args[@]}"} || die "the comparison failed (see above)"
    exit 0
fi
if [ "$peer" = redis-rs ]; then
    python3 tools/compare_redis_rs.py \
        --redcore-load "$load_bin" \
        --redis-rs-load "$rs_load_bin" \
        --glommio-floor "$floor_bin" \
        --server "127.0.0.1:$single_port" \
        --cluster "127.0.0.1:${ports[0]}" \
        --cluster-ports "$cluster_csv" \
        --requests "$requests" \
        --rounds "$rounds" \
        ${pin_args[@]+"${pin_args[@]}"} \
        --git-rev "$git_rev" \
        --command "$command_line" \
        ${out_args[@]+"${out_args[@]}"} || die "the comparison failed (see above)"
    exit 0
fi
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
