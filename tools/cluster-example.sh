#!/usr/bin/env bash
# Runs a cluster example against a throwaway local Redis Cluster:
# installs redis-server/redis-tools with apt-get when missing (Debian/Ubuntu),
# starts six nodes on free loopback ports in a temporary directory, joins them
# into 3 masters with one replica each (redis-cli --cluster create), runs the
# example, and stops every node (also on failure or Ctrl-C).
#
# Usage: tools/cluster-example.sh [EXAMPLE]
#   EXAMPLE: cluster (examples/cluster.rs, the default), per_core
#   (examples/per_core.rs, the per-core runtime), cluster_scan
#   (examples/cluster_scan.rs, SCAN over the whole cluster), cluster_wide
#   (examples/cluster_wide.rs, commands for every master or node) or
#   replica_reads (examples/replica_reads.rs, reads from replicas).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

example=${1:-cluster}
case "$example" in
    cluster | per_core | cluster_scan | cluster_wide | replica_reads) ;;
    *)
        echo "usage: tools/cluster-example.sh [cluster|per_core|cluster_scan|cluster_wide|replica_reads]" >&2
        exit 2
        ;;
esac

source tools/ensure-redis.sh
ensure_redis
ensure_python3

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
cleanup_on_exit cleanup

source tools/cluster-lib.sh
cluster_ports
cluster_start_nodes "$dir" child
cluster_create "$dir"

cargo run --quiet --example "$example" -- "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}"
