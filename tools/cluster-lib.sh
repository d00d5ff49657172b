# Sourced by tools/cluster-example.sh and tools/local-cluster.sh: starts a
# 3-master/3-replica Redis Cluster on free loopback ports (127.0.0.1 only).
# Needs redis-server, redis-cli (see tools/ensure-redis.sh) and python3.
# shellcheck shell=bash

# cluster_ports: sets the array `ports` to six free ports whose cluster bus
# ports (port + 10000) fit below 65536.
cluster_ports() {
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
}

# cluster_start_nodes DIR child|daemon: starts one node per port of `ports`,
# with its files in DIR/PORT. child: a background child of this shell, its
# pid appended to the array `pids`. daemon: daemonized, its pid in
# DIR/PORT/redis.pid, so that it outlives this shell.
cluster_start_nodes() {
    local dir=$1 mode=$2 port
    for port in "${ports[@]}"; do
        mkdir -p "$dir/$port"
        local args=(--port "$port" --bind 127.0.0.1 --save "" --appendonly no
            --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf"
            --cluster-node-timeout 2000 --dir "$dir/$port" --logfile "$dir/$port/redis.log")
        if [ "$mode" = daemon ]; then
            redis-server "${args[@]}" --daemonize yes --pidfile "$dir/$port/redis.pid"
        else
            redis-server "${args[@]}" &
            pids+=($!)
        fi
    done
}

# cluster_create DIR: waits for every node to answer, joins them into 3
# masters with one replica each, and waits until every node reports the
# cluster healthy; exits the script on failure.
cluster_create() {
    local dir=$1 port addrs=() ok
    for port in "${ports[@]}"; do
        for _ in $(seq 1 200); do
            if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
            sleep 0.05
        done
    done

    for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || {
        echo "$0: redis-cli --cluster create failed:" >&2
        cat "$dir/create.log" >&2
        exit 1
    }

    for port in "${ports[@]}"; do
        ok=""
        for _ in $(seq 1 400); do
            if redis-cli -p "$port" cluster info 2>/dev/null | grep -q "cluster_state:ok"; then ok=1; break; fi
            sleep 0.05
        done
        if [ -z "$ok" ]; then
            echo "$0: node $port did not report cluster_state:ok" >&2
            exit 1
        fi
    done
}

# cargo_target_dir: where cargo puts build output (honours CARGO_TARGET_DIR
# and .cargo/config), so the scripts find the binaries they build.
cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
