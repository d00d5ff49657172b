#!/usr/bin/env bash
# A local 3-master/3-replica Redis Cluster on free loopback ports (127.0.0.1
# only), for redcore-load and for trying redcore by hand. Installs
# redis-server/redis-tools with apt-get when missing (Debian/Ubuntu).
#
# Usage:
#   tools/local-cluster.sh demo [REDCORE-LOAD ARGS...]
#       Builds redcore-load (release), starts a throwaway cluster in a
#       temporary directory, runs
#         redcore-load --cluster SEEDS --duration 5s --warmup 1s --verify ARGS...
#       (an option given in ARGS replaces its default), prints its report,
#       stops the cluster (also on failure or Ctrl-C) and exits with
#       redcore-load's status.
#   tools/local-cluster.sh start [--dir DIR]
#       Starts a cluster that keeps running (daemonized nodes, pidfiles and
#       logs in DIR, default /tmp/redcore-cluster) and prints its seeds.
#   tools/local-cluster.sh stop [--dir DIR]
#       Stops the nodes started there (by their pidfiles) and removes DIR.
#   tools/local-cluster.sh status [--dir DIR]
#       Each node of DIR: port, pid, running or not, cluster_state.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/ensure-redis.sh
source tools/cluster-lib.sh

usage() {
    sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# Marks a directory as made by `start`, so that `stop` never removes another.
marker=.redcore-local-cluster

# The pid in DIR/PORT/redis.pid when it is still that node's redis-server
# (its title names the port; guards against a reused pid), else nothing.
node_pid() {
    local pidfile=$1/$2/redis.pid pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if ps -p "$pid" -o command= 2>/dev/null | grep -Eq "redis-server .*:$2( |\$)"; then echo "$pid"; fi
}

# Ports of the nodes in DIR (one subdirectory each).
dir_ports() {
    local d
    for d in "$1"/[0-9]*/; do [ -d "$d" ] && basename "$d"; done
}

# Stops the nodes of DIR by their pidfiles, waits for them, removes DIR.
stop_dir() {
    local dir=$1 port pid left=()
    [ -e "$dir" ] || return 0
    if [ ! -f "$dir/$marker" ]; then
        echo "$0: $dir was not made by tools/local-cluster.sh start; not touching it" >&2
        exit 1
    fi
    for port in $(dir_ports "$dir"); do
        pid=$(node_pid "$dir" "$port")
        if [ -n "$pid" ]; then kill "$pid" && left+=("$pid"); fi
    done
    for pid in ${left[@]+"${left[@]}"}; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then echo "$0: redis-server $pid did not stop" >&2; exit 1; fi
    done
    rm -rf "$dir"
}

seeds() { local IFS=,; echo "${addrs[*]}"; }

cmd=${1:-}
[ $# -gt 0 ] && shift
dir=/tmp/redcore-cluster
if [ "$cmd" != demo ]; then
    case "${1:-}" in
        --dir) [ $# -eq 2 ] || usage; dir=$2 ;;
        --dir=*) [ $# -eq 1 ] || usage; dir=${1#--dir=} ;;
        "") ;;
        *) usage ;;
    esac
fi

case "$cmd" in
demo)
    ensure_redis
    ensure_python3
    cargo build --release -p redcore-load

    # Throwaway cluster: nodes are children of this shell, killed on exit.
    dir=$(mktemp -d)
    pids=()
    cleanup() {
        for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
        for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
        rm -rf "$dir"
    }
    cleanup_on_exit cleanup
    cluster_ports
    cluster_start_nodes "$dir" child
    cluster_create "$dir"
    addrs=("${ports[@]/#/127.0.0.1:}")

    # Defaults, each left out when the caller gives that option (clap
    # refuses an option given twice; --requests excludes --duration,
    # --server excludes --cluster, --command excludes --verify).
    given() { # given OPTION...: whether the caller's args hold one of them
        local name arg
        for name in "$@"; do for arg in ${opts[@]+"${opts[@]}"}; do
            case "$arg" in "$name" | "$name"=*) return 0 ;; esac
        done; done
        return 1
    }
    args=()
    opts=("$@")
    given --cluster --server || args+=(--cluster "$(seeds)")
    given --duration --requests || args+=(--duration 5s)
    given --warmup || args+=(--warmup 1s)
    given --verify --command || args+=(--verify)

    status=0
    "$(cargo_target_dir)/release/redcore-load" "${args[@]}" "$@" || status=$?
    exit "$status"
    ;;
start)
    ensure_redis
    ensure_python3
    if [ -e "$dir" ]; then
        echo "$0: $dir exists (a cluster already started? see status, stop)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    touch "$dir/$marker"
    trap 'stop_dir "$dir"' EXIT # undo a half-made cluster
    cluster_ports
    cluster_start_nodes "$dir" daemon
    cluster_create "$dir"
    for port in "${ports[@]}"; do
        [ -n "$(node_pid "$dir" "$port")" ] || { echo "$0: node $port has no live pidfile" >&2; exit 1; }
    done
    trap - EXIT
    addrs=("${ports[@]/#/127.0.0.1:}")
    printf '%s\n' "${addrs[@]}" >"$dir/seeds"
    echo "cluster running in $dir; seeds:"
    printf '  %s\n' "${addrs[@]}"
    echo "e.g. target/release/redcore-load --cluster $(seeds) --duration 5s"
    echo "stop it with: $0 stop --dir $dir"
    ;;
stop)
    stop_dir "$dir"
    ;;
status)
    if [ ! -f "$dir/$marker" ]; then echo "no cluster in $dir"; exit 1; fi
    for port in $(dir_ports "$dir"); do
        pid=$(node_pid "$dir" "$port")
        if [ -n "$pid" ]; then
            state=$(redis-cli -p "$port" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p')
            echo "127.0.0.1:$port pid $pid running cluster_state:${state:-?}"
        else
            echo "127.0.0.1:$port stopped"
        fi
    done
    ;;
*) usage ;;
esac
