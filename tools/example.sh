#!/usr/bin/env bash
# Runs an example (examples/basic.rs, or the one named: `tools/example.sh
# pubsub`) against a throwaway local redis-server:
# installs redis-server/redis-tools with apt-get when missing (Debian/Ubuntu),
# starts a server on a free loopback port in a temporary directory, runs the
# example, and stops the server (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source tools/ensure-redis.sh
ensure_redis

dir=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
cleanup_on_exit cleanup

# A free port: ask the kernel for one, then hand it to redis-server.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" &
pid=$!

for _ in $(seq 1 200); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "tools/example.sh: redis-server did not start:" >&2
        cat "$dir/redis.log" >&2
        exit 1
    fi
    sleep 0.05
done

cargo run --quiet --example "${1:-basic}" -- "redis://127.0.0.1:$port"
