# Sourced by the example scripts: installs redis-server and redis-tools with
# apt-get (Debian/Ubuntu; with sudo when not root) when redis-server or
# redis-cli is missing; elsewhere says what to install and exits.
ensure_redis() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$0: install Redis >= 7 so that redis-server and redis-cli are on PATH" >&2
        exit 1
    fi
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends redis-server redis-tools
}
