#!/usr/bin/env bash
# Runs the whole test suite: tools/test.sh [extra args for the test runner]
#
# The integration tests start real Redis servers (redis-server, redis-cli,
# Redis >= 7 built with TLS). On Debian/Ubuntu this script installs them with
# apt-get when they are missing (with sudo when not root); elsewhere it says
# what to install and exits non-zero. Then it runs every test of the
# workspace (unit, integration and doc tests) with cargo-nextest when it is
# installed (one process per test, cluster tests at most 4 at a time: see
# .config/nextest.toml), and with plain `cargo test` otherwise; nextest does
# not run doctests, so `cargo test --doc` runs them then.
# REDCORE_REDIS_SERVER / REDCORE_REDIS_CLI may point at other binaries.
#
# The connection, cluster and executor tests run twice: once on the default
# transport (glommio's sockets) and once more with REDCORE_TRANSPORT=io_uring,
# so both transports keep every guarantee those tests check.
#
# Extra arguments go to both runners as they are: a test name filter works
# with either (`tools/test.sh reconnect`), runner options only with one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

server_bin="${REDCORE_REDIS_SERVER:-redis-server}"
cli_bin="${REDCORE_REDIS_CLI:-redis-cli}"

have() { command -v "$1" >/dev/null 2>&1; }

install_hint() {
    cat >&2 <<'MSG'
tools/test.sh: the tests need Redis >= 7 (redis-server and redis-cli, built with TLS).
  Debian/Ubuntu:  sudo apt-get install redis-server redis-tools
  Other systems:  install Redis >= 7 with your package manager (e.g. `brew install redis`,
                  `dnf install redis`) or from https://redis.io/download, and put
                  redis-server and redis-cli on PATH (or set REDCORE_REDIS_SERVER and
                  REDCORE_REDIS_CLI to their paths).
MSG
}

if ! have "$server_bin" || ! have "$cli_bin"; then
    if have apt-get; then
        sudo=()
        if [ "$(id -u)" -ne 0 ]; then
            if have sudo; then
                sudo=(sudo)
            else
                echo "tools/test.sh: redis-server/redis-cli are missing and installing them needs root or sudo." >&2
                install_hint
                exit 1
            fi
        fi
        echo "tools/test.sh: installing redis-server and redis-tools with apt-get" >&2
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends redis-server redis-tools
    else
        echo "tools/test.sh: redis-server and/or redis-cli not found, and this is not a Debian-like system (no apt-get)." >&2
        install_hint
        exit 1
    fi
fi

for bin in "$server_bin" "$cli_bin"; do
    if ! have "$bin"; then
        echo "tools/test.sh: $bin is still not on PATH." >&2
        install_hint
        exit 1
    fi
done

version="$("$server_bin" --version | sed -n 's/.* v=\([0-9][0-9]*\)\..*/\1/p')"
if [ -z "$version" ] || [ "$version" -lt 7 ]; then
    echo "tools/test.sh: $("$server_bin" --version) is too old." >&2
    install_hint
    exit 1
fi

# The test binaries that also run on the io_uring transport. Cluster-wide
# features built on the node connections (scan, scripts, fan-out, replica
# reads) add nothing the transport could break that the connection and
# cluster suites do not already cover there, and they are the slowest
# cluster suites: they run once, to keep CI short. Client-side caching runs
# its standalone suite (tests/cache.rs: invalidation pushes read by either
# transport's I/O loop) on both, its cluster suite once.
io_uring_once_only=" cluster_scan cluster_scripts cluster_fanout cluster_replicas cluster_cache "
io_uring_tests=()
for t in tests/connection_*.rs tests/cluster_*.rs tests/executor.rs tests/cache.rs; do
    name="$(basename "$t" .rs)"
    case "$io_uring_once_only" in *" $name "*) continue ;; esac
    io_uring_tests+=(--test "$name")
done

status=0
if cargo nextest --version >/dev/null 2>&1; then
    profile=default
    if [ "${CI:-}" = "true" ]; then
        profile=ci
    fi
    cargo nextest run --workspace --no-fail-fast --profile "$profile" "$@" || status=$?
    echo "tools/test.sh: connection, cluster and executor tests again on the io_uring transport" >&2
    REDCORE_TRANSPORT=io_uring cargo nextest run -p redcore --no-fail-fast --profile "$profile" \
        "${io_uring_tests[@]}" "$@" || status=$?
    # nextest does not run doctests.
    cargo test --workspace --doc || status=$?
else
    echo "tools/test.sh: cargo-nextest not found, using cargo test (cargo install cargo-nextest --locked is faster)" >&2
    cargo test --workspace --no-fail-fast "$@" || status=$?
    echo "tools/test.sh: connection, cluster and executor tests again on the io_uring transport" >&2
    REDCORE_TRANSPORT=io_uring cargo test -p redcore --no-fail-fast \
        "${io_uring_tests[@]}" "$@" || status=$?
fi
exit "$status"
