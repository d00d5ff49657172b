#!/usr/bin/env bash
# Reads from replicas, measured: a read-heavy load (SET:GET 1:9) on a
# 3-master/3-replica cluster, primary-only against prefer-replica
# (`redcore-load --read-from primary|replica`), interleaved round by round
# on the same cluster, printing per round ops/s, client CPU per command
# and the GETs each node served (from INFO commandstats before and after
# each run, as redcore-load reports them).
#
# Usage: tools/bench-replicas.sh [ROUNDS] [DURATION]
#   ROUNDS    rounds, each one primary run then one replica run (default 3)
#   DURATION  measured time of each run (default 10s; 1s of warm-up more)
#
# What it does: builds redcore-load in release mode, installs redis when
# missing (tools/ensure-redis.sh), starts six nodes on free 127.0.0.1
# ports in a temporary directory (tools/cluster-lib.sh), writes a key per
# shard and waits until every node sees every replica online (a replica
# still at replication offset 0 is left out of the topology), runs the
# load with --cores 2 --tasks 64, and stops every node it started, by pid
# (also on failure or Ctrl-C). The client and the servers share the
# machine's CPUs: the figures compare the two strategies with each other,
# not with other machines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds=${1:-3}
duration=${2:-10s}
case "$rounds" in
    '' | *[!0-9]*) echo "usage: tools/bench-replicas.sh [ROUNDS] [DURATION]" >&2; exit 2 ;;
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

cluster_ports
cluster_start_nodes "$dir" child
cluster_create "$dir"

# One key per shard gives every replica a replication offset above 0.
for tag in a b c d e f g h i j; do
    redis-cli -c -p "${ports[0]}" set "{$tag}warm" x >/dev/null
done
for port in "${ports[@]}"; do
    ok=""
    for _ in $(seq 1 400); do
        if [ "$(redis-cli -p "$port" cluster shards | grep -c '^online$')" = 6 ]; then ok=1; break; fi
        sleep 0.05
    done
    [ -n "$ok" ] || { echo "$0: node $port does not see every node online" >&2; exit 1; }
done

seeds="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}"
echo "# tools/bench-replicas.sh $rounds $duration: $(date -u +%FT%TZ), $(nproc) CPUs, $(redis-server --version | grep -o 'v=[0-9.]*')"
echo "# redcore-load --cluster SEEDS --read-from MODE --ratio 1:9 --cores 2 --tasks 64 --warmup 1s --duration $duration --json"
printf '%-6s %-8s %12s %14s  %s\n' round mode ops/s cpu_us/cmd "GETs served (master M / replica R, by port)"
for round in $(seq 1 "$rounds"); do
    for mode in primary replica; do
        "$bin" --cluster "$seeds" --read-from "$mode" --ratio 1:9 --cores 2 --tasks 64 \
            --keys 100000 --warmup 1s --duration "$duration" --json >"$dir/run.json"
        python3 - "$round" "$mode" "$dir/run.json" <<'PY'
import json, sys
round_, mode, path = sys.argv[1:]
r = json.load(open(path))
nodes = " ".join(
    f"{n['addr'].rsplit(':', 1)[1]}{'M' if n['role'] == 'master' else 'R'}={n['gets']}"
    for n in r["gets_by_node"]
)
cpu = r["client_cpu_us_per_cmd"]
print(f"{round_:<6} {mode:<8} {r['total']['ops_per_sec']:>12.0f} {cpu if cpu is None else round(cpu, 2):>14}  {nodes}")
PY
    done
done
