# Sourced by the example scripts: installs what they need with apt-get
# (Debian/Ubuntu; with sudo when not root) when it is missing; elsewhere
# says what to install and exits. Also cleanup_on_exit, their exit trap.

# apt_install WHAT PACKAGE...: installs the packages, or says to install WHAT.
apt_install() {
    local what=$1
    shift
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$0: install $what" >&2
        exit 1
    fi
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "$@"
}

# redis-server and redis-cli (Redis >= 7).
ensure_redis() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    apt_install "Redis >= 7 so that redis-server and redis-cli are on PATH" redis-server redis-tools
}

# python3: the cluster scripts pick free ports and write reports with it.
ensure_python3() {
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3
}

# cleanup_on_exit FUNC: runs FUNC when the script exits, and makes Ctrl-C
# and TERM end the script (through that exit) instead of resuming it.
cleanup_on_exit() {
    trap "$1" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
