#!/usr/bin/env bash
# Runs a cluster example against a throwaway local Redis Cluster:
# installs redis-server/redis-tools with apt-get when missing (Debian/Ubuntu),
# starts six nodes on free loopback ports in a temporary directory, joins them
# into 3 masters with one replica each (redis-cli --cluster create), runs the
# example, and stops every node (also on failure or Ctrl-C).
#
# Usage: tools/cluster-example.sh [EXAMPLE]
#   EXAMPLE: cluster (examples/cluster.rs, the default) or per_core
#   (examples/per_core.rs, the per-core runtime).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

example=${1:-cluster}
case "$example" in
    cluster | per_core) ;;
    *)
        echo "usage: tools/cluster-example.sh [cluster|per_core]" >&2
        exit 2
        ;;
esac

source tools/ensure-redis.sh
ensure_redis

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# Six free ports whose cluster bus ports (port + 10000) fit below 65536.
read -r -a ports <<<"$(python3 - <<'PY'
import socket
ports, held = [], []
while len(ports) < 6:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    held.append(s)
    if p + 10000 < 65536:
        b = socket.socket()
        try:
            b.bind(("127.0.0.1", p + 10000)); held.append(b); ports.append(p)
        except OSError:
            b.close()
print(" ".join(map(str, ports)))
PY
)"

for port in "${ports[@]}"; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
        --cluster-node-timeout 2000 --dir "$dir/$port" --logfile "$dir/$port/redis.log" &
    pids+=($!)
done

for port in "${ports[@]}"; do
    for _ in $(seq 1 200); do
        if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
        sleep 0.05
    done
done

addrs=()
for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || {
    echo "tools/cluster-example.sh: redis-cli --cluster create failed:" >&2
    cat "$dir/create.log" >&2
    exit 1
}

# Wait until every node reports the cluster healthy.
for port in "${ports[@]}"; do
    ok=""
    for _ in $(seq 1 400); do
        if redis-cli -p "$port" cluster info 2>/dev/null | grep -q "cluster_state:ok"; then ok=1; break; fi
        sleep 0.05
    done
    if [ -z "$ok" ]; then
        echo "tools/cluster-example.sh: node $port did not report cluster_state:ok" >&2
        exit 1
    fi
done

cargo run --quiet --example "$example" -- "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}"
