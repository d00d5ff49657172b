#!/usr/bin/env bash
# Chaos check: redcore-load --verify against a local 3-master/3-replica
# cluster while the cluster changes under it, then a report: ops/s over
# time, errors by kind, recovery time after each change, and the lost
# acknowledged writes (must be 0; the script exits 1 otherwise).
#
# Usage:
#   tools/chaos.sh [--freeze] [--short] [--hard] [--release] [--duration SECS]
#                  [--cores N] [--tasks N] [--timeout TIME] [--keep DIR]
#
# What happens, in order, while the load runs (SET:GET 1:1, --verify,
# --timeline, call deadline 10 s: longer than a failover takes, so calls
# ride through it instead of timing out):
#   1. a baseline of a few seconds;
#   2. `redis-cli --cluster reshard` moves slots (1000, or 300 with --short)
#      from one master to another, keys and all (MIGRATE; the client sees
#      ASK and MOVED);
#   3. the master that just received them is killed, and its replica takes
#      over once the cluster marks it failed (cluster-node-timeout 2 s);
#   4. the killed node is started again and rejoins as a replica;
#   5. (not with --short) the new master gives slots back by another reshard.
# Then the load ends, every acknowledged write is read back, and the
# report is printed (tools/chaos_report.py).
#
# The kill is SIGTERM by default: since Redis 7 a master that gets it stops
# taking writes and waits for its replicas to catch up before it exits, so
# every write it acknowledged is on the replica that takes over. --hard
# sends SIGKILL instead: Redis replicates asynchronously, so writes the
# master acknowledged in its last moments may never reach the replica and
# the verification may then report them lost. That loss is Redis's, not
# the client's; --hard shows the client still recovers.
#
# --freeze runs another scenario instead: a master is frozen with SIGSTOP
# (its sockets stay open, nothing answers: a hung host, a stuck disk),
# the cluster promotes its replica (cluster-node-timeout 2 s), the load
# runs on for a while, then the old master gets SIGCONT and rejoins as a
# replica. The load uses the default 5 s call deadline and --stall-limit 0
# (a freeze must not end the run); the moment every other node agrees the
# replica is master is noted (polled every 50 ms) and the report measures
# from it: throughput back to half the pre-freeze baseline within 2 s, no
# call ended later than its deadline + 100 ms, no command failed after the
# old master's return, no acknowledged write lost; the script exits 1
# otherwise. (A master frozen mid-stream may have acknowledged writes its
# replica never got, as with --hard; Redis's loss, not the client's.)
#
# --short: a 30 s load (25 s with --freeze; under a minute in all with
# start-up and checks), as CI runs it. --release: build redcore-load in
# release (default: debug, which the test suite has already built).
# --timeout TIME: the load's call deadline instead (10s, or 5s with
# --freeze). --keep DIR: keep the cluster's files, the load's report and
# timeline in DIR. Servers are started on free loopback ports and stopped
# (by pid) on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/ensure-redis.sh
source tools/cluster-lib.sh

usage() {
    sed -n '/^# Usage:/,/^# What happens/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

short="" hard="" freeze="" profile=debug duration="" cores=2 tasks=16 keep="" timeout=""
while [ $# -gt 0 ]; do
    case "$1" in
        --freeze) freeze=1 ;;
        --short) short=1 ;;
        --hard) hard=1 ;;
        --release) profile=release ;;
        --duration) [ $# -ge 2 ] || usage; duration=$2; shift ;;
        --cores) [ $# -ge 2 ] || usage; cores=$2; shift ;;
        --tasks) [ $# -ge 2 ] || usage; tasks=$2; shift ;;
        --keep) [ $# -ge 2 ] || usage; keep=$2; shift ;;
        --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift ;;
        *) usage ;;
    esac
    shift
done
if [ -n "$freeze" ] && [ -n "$hard" ]; then
    echo "$0: --hard is for the kill; --freeze stops the master instead" >&2
    exit 2
fi
# --freeze: seconds of load before the freeze, after the promotion and
# after the old master's return.
if [ -n "$freeze" ] && [ -n "$short" ]; then
    duration=${duration:-25} before=3 after_promotion=5 after_return=3
elif [ -n "$freeze" ]; then
    duration=${duration:-40} before=5 after_promotion=10 after_return=5
elif [ -n "$short" ]; then
    duration=${duration:-30} slots=300 give_back=""
else
    duration=${duration:-60} slots=1000 give_back=1
fi
case "$duration" in '' | *[!0-9]*) echo "$0: --duration takes whole seconds" >&2; exit 2 ;; esac
if [ "$duration" -lt 25 ]; then echo "$0: --duration must be at least 25 s" >&2; exit 2; fi

ensure_redis
ensure_python3
if [ "$profile" = release ]; then
    cargo build --release -p redcore-load
else
    cargo build -p redcore-load
fi
bin=$(cargo_target_dir)/$profile/redcore-load

if [ -n "$keep" ]; then
    mkdir -p "$keep"
    dir=$(cd "$keep" && pwd)
else
    dir=$(mktemp -d)
fi
pids=()
load_pid=""
cleanup() {
    if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null || true; fi
    # A node still frozen (--freeze) takes SIGTERM only once continued.
    for pid in ${pids[@]+"${pids[@]}"}; do kill -CONT "$pid" 2>/dev/null || true; done
    for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
    [ -z "$keep" ] && rm -rf "$dir"
    return 0
}
cleanup_on_exit cleanup

now_ms() { date +%s%3N; }
# event change|promotion|mark TEXT: notes the time of a change made to the
# cluster (the report measures the recovery from it), of a replica's
# promotion (--freeze measures from it) or of a milestone.
event() { event_at "$(now_ms)" "$@"; }
# event_at MS KIND TEXT: the same, at a time taken earlier.
event_at() { echo "$1 $2 ${*:3}" >>"$dir/events"; echo "chaos: ${*:3}" >&2; }
# What each node thinks, for a step that did not complete (a frozen node
# would not answer: redis-cli would wait for ever).
frozen=""
diagnose() {
    local port
    for port in ${ports[@]+"${ports[@]}"}; do
        if [ "$port" = "$frozen" ]; then
            echo "--- 127.0.0.1:$port: frozen (SIGSTOP)" >&2
            continue
        fi
        echo "--- 127.0.0.1:$port: $(cli "$port" cluster info | grep '^cluster_state' || echo 'not answering')" >&2
        cli "$port" cluster nodes | sed 's/^/    /' >&2
    done
}
fail() {
    echo "$0: $*" >&2
    diagnose
    exit 1
}

# wait_for SECS WHAT COMMAND...: runs COMMAND every 50 ms until it
# succeeds; fails the script after SECS.
wait_for() {
    local secs=$1 what=$2 until
    shift 2
    until=$(($(now_ms) + secs * 1000))
    until "$@"; do
        [ "$(now_ms)" -lt "$until" ] || fail "$what: not within $secs s"
        sleep 0.05
    done
}

cli() { redis-cli -p "$1" "${@:2}" 2>/dev/null | tr -d '\r'; }
my_id() { cli "$1" cluster myid; }
# masters_with_slots PORT: "id port" of each master serving slots.
masters_with_slots() {
    cli "$1" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF >= 9 {split($2, a, "[:@]"); print $1, a[2]}'
}
replica_of() { # replica_of PORT MASTER_ID: port of a replica of that master
    cli "$1" cluster nodes | awk -v m="$2" '$4 == m {split($2, a, "[:@]"); print a[2]; exit}'
}
is_master() { cli "$1" role | head -1 | grep -qx master; }
cluster_ok() {
    local port
    for port in "$@"; do cli "$port" cluster info | grep -q '^cluster_state:ok' || return 1; done
}
# The cluster agrees on one slot map (no migration left half-done).
slots_agree() {
    local port first="" mine
    for port in "$@"; do
        mine=$(cli "$port" cluster slots | md5sum)
        [ -z "$first" ] && first=$mine
        [ "$mine" = "$first" ] || return 1
    done
}
timeline_lines() { [ -f "$dir/timeline.jsonl" ] && wc -l <"$dir/timeline.jsonl" || echo 0; }
# load_running: fails the script at once if the load has ended.
load_running() {
    kill -0 "$load_pid" 2>/dev/null && return 0
    cat "$dir/load.err" >&2
    load_pid=""
    fail "redcore-load ended early"
}
# has_lines N: the timeline has N lines; the script fails at once if the
# load ended before that.
has_lines() {
    [ "$(timeline_lines)" -ge "$1" ] && return 0
    load_running
    return 1
}

# reshard FROM_ID TO_ID N: moves N slots, keys included.
reshard() {
    redis-cli --cluster reshard "127.0.0.1:${ports[0]}" --cluster-from "$1" --cluster-to "$2" \
        --cluster-slots "$3" --cluster-yes >>"$dir/reshard.log" 2>&1 ||
        { tail -20 "$dir/reshard.log" >&2; fail "redis-cli --cluster reshard failed"; }
}

cluster_ports
cluster_start_nodes "$dir" child
cluster_create "$dir"
declare -A pid_of
for i in "${!ports[@]}"; do pid_of[${ports[$i]}]=${pids[$i]}; done
seeds=$(IFS=,; echo "${ports[*]/#/127.0.0.1:}")

read -r -a first <<<"$(masters_with_slots "${ports[0]}" | sed -n 1p)"
read -r -a second <<<"$(masters_with_slots "${ports[0]}" | sed -n 2p)"
[ ${#first[@]} -eq 2 ] && [ ${#second[@]} -eq 2 ] || fail "could not find two masters"

is_replica() { cli "$1" role | head -1 | grep -qx slave; }
# replicas_synced: every replica has finished its first sync with its
# master (until then it cannot take over: Redis counts it as too far
# behind).
replicas_synced() {
    local port
    for port in "${ports[@]}"; do
        is_replica "$port" || continue
        cli "$port" info replication | grep -qx 'master_link_status:up' || return 1
    done
}

# The default scenario: resharding, a master killed, resharding back.
reshard_and_kill() {
    # 1. Baseline.
    wait_for 30 "the load's first seconds" has_lines 3

    # 2. Move slots from the first master to the second.
    event change "reshard: $slots slots from 127.0.0.1:${first[1]} to 127.0.0.1:${second[1]}"
    reshard "${first[0]}" "${second[0]}" "$slots"
    wait_for 20 "the slot map after resharding" slots_agree "${ports[@]}"
    event mark "reshard done"
    seen=$(timeline_lines)
    wait_for 10 "load after resharding" has_lines $((seen + 2))

    # 3. Kill the second master (it just received the slots).
    victim=${second[1]}
    heir=$(replica_of "${ports[0]}" "${second[0]}")
    [ -n "$heir" ] || fail "no replica of 127.0.0.1:$victim"
    signal=TERM
    [ -n "$hard" ] && signal=KILL
    event change "kill -$signal master 127.0.0.1:$victim (its replica is 127.0.0.1:$heir)"
    kill "-$signal" "${pid_of[$victim]}"
    wait "${pid_of[$victim]}" 2>/dev/null || true
    live=()
    for p in "${ports[@]}"; do [ "$p" = "$victim" ] || live+=("$p"); done
    wait_for 30 "the replica's promotion" is_master "$heir"
    wait_for 30 "cluster_state:ok after the failover" cluster_ok "${live[@]}"
    # Every node has taken the slots off the old master before it comes back.
    victim_id=${second[0]}
    slotless() {
        local port
        for port in "$@"; do
            cli "$port" cluster nodes | awk -v id="$victim_id" '$1 == id && NF >= 9 {found = 1} END {exit found}' || return 1
        done
    }
    wait_for 30 "every node's view of the failover" slotless "${live[@]}"
    event mark "failover done: 127.0.0.1:$heir is master"

    # 4. Start the killed node again; it rejoins as a replica.
    saved=("${ports[@]}")
    ports=("$victim")
    cluster_start_nodes "$dir" child
    ports=("${saved[@]}")
    pid_of[$victim]=${pids[-1]}
    wait_for 30 "the old master's return as a replica" is_replica "$victim"
    event mark "127.0.0.1:$victim back, as a replica"
    settle_after_return

    # 5. The new master gives slots back.
    if [ -n "$give_back" ]; then
        seen=$(timeline_lines)
        wait_for 10 "load after the failover" has_lines $((seen + 3))
        heir_id=$(my_id "$heir")
        event change "reshard: $slots slots from 127.0.0.1:$heir to 127.0.0.1:${first[1]}"
        reshard "$heir_id" "${first[0]}" "$slots"
        wait_for 20 "the slot map after resharding" slots_agree "${ports[@]}"
        event mark "reshard done"
    fi
}

# Redis sometimes keeps a node in cluster_state:fail for a while after an
# old master's return; the load's errors then show what clients see of it.
settle_after_return() {
    if ! (wait_for 10 "cluster_state:ok on every node" cluster_ok "${ports[@]}") 2>/dev/null; then
        echo "chaos: not every node reports cluster_state:ok 10 s after the old master's return:" >&2
        diagnose
        event mark "not every node reports cluster_state:ok"
    fi
}

# agree_master ID PORT...: every node named sees node ID as a master.
agree_master() {
    local id=$1 port
    shift
    for port in "$@"; do
        cli "$port" cluster nodes | awk -v id="$id" '$1 == id && $3 ~ /master/ {found = 1} END {exit !found}' || return 1
    done
}

# --freeze: the first master is stopped (SIGSTOP) until its replica has
# been promoted and the load has run on for a while, then continued.
freeze_master() {
    local victim=${first[1]} heir heir_id live=() p polled until seen
    heir=$(replica_of "${ports[0]}" "${first[0]}")
    [ -n "$heir" ] || fail "no replica of 127.0.0.1:$victim"
    heir_id=$(my_id "$heir")
    for p in "${ports[@]}"; do [ "$p" = "$victim" ] || live+=("$p"); done

    # 1. Baseline.
    wait_for 30 "the load's first seconds" has_lines "$before"

    # 2. Freeze the master. The promotion is the moment every other node
    # sees its replica as master: the start of the first poll (every
    # 50 ms) that found them all agreeing.
    event change "freeze: SIGSTOP master 127.0.0.1:$victim (its replica is 127.0.0.1:$heir)"
    frozen=$victim
    kill -STOP "${pid_of[$victim]}"
    until=$(($(now_ms) + 30000))
    while :; do
        polled=$(now_ms)
        agree_master "$heir_id" "${live[@]}" && break
        [ "$polled" -lt "$until" ] || fail "the replica's promotion: not within 30 s"
        load_running
        sleep 0.05
    done
    event_at "$polled" promotion "promotion: every other node sees 127.0.0.1:$heir as master"

    # 3. The load runs on without the frozen master.
    seen=$(timeline_lines)
    wait_for $((after_promotion + 10)) "load after the promotion" has_lines $((seen + after_promotion))

    # 4. Continue the old master; it rejoins as a replica.
    event change "thaw: SIGCONT 127.0.0.1:$victim"
    kill -CONT "${pid_of[$victim]}"
    frozen=""
    wait_for 30 "the old master's return as a replica" is_replica "$victim"
    event mark "127.0.0.1:$victim back, as a replica"
    settle_after_return
    seen=$(timeline_lines)
    wait_for $((after_return + 10)) "load after the return" has_lines $((seen + after_return))
}

: >"$dir/events"
if [ -n "$freeze" ]; then
    # Redis 7 waits 5 s before a first (diskless) sync: no freeze before
    # the replica can take over, and no forks in the baseline.
    wait_for 60 "the replicas' first sync" replicas_synced
    # The default call deadline; a freeze must not stop the run (the
    # script watches the load itself).
    load_opts=(--timeout "${timeout:-5s}" --stall-limit 0)
else
    load_opts=(--timeout "${timeout:-10s}")
fi
"$bin" --cluster "$seeds" --cores "$cores" --tasks "$tasks" --duration "${duration}s" \
    --keys 20000 --ratio 1:1 "${load_opts[@]}" --verify --json --timeline "$dir/timeline.jsonl" \
    >"$dir/report.json" 2>"$dir/load.err" &
load_pid=$!
started=$(now_ms)
if [ -n "$freeze" ]; then
    freeze_master
else
    reshard_and_kill
fi

chaos_ended=$(now_ms)
if [ $((chaos_ended - started)) -gt $((duration * 1000 - 5000)) ]; then
    echo "$0: the changes took until the last 5 s of the load; a longer --duration would show the recovery better" >&2
fi
status=0
wait "$load_pid" || status=$?
load_pid=""
if [ ! -s "$dir/report.json" ]; then
    cat "$dir/load.err" >&2
    fail "redcore-load gave no report (exit $status)"
fi
# redcore-load exits 1 when --verify found a lost write; the report says.
python3 tools/chaos_report.py "$dir/report.json" "$dir/timeline.jsonl" "$dir/events"
