#!/usr/bin/env python3
"""The report of tools/chaos.sh, from redcore-load's JSON report, its
--timeline (one JSON line per second) and the script's events file (lines
"UNIX_MS change|promotion|mark TEXT").

Prints the events, ops/s over time, errors by kind, the slowest call and
the late calls, the recovery after each change, and the verification;
exits 1 when an acknowledged write was lost or wrong, the verification
could not run, or the load did not recover by its end.

Recovery from a change: the baseline is the median ops/s of the seconds
before the first change. A second is disturbed when it had errors or less
than half the baseline. The recovery time runs from the change to the
start of the first undisturbed second after the first disturbed one (before
the next change); resolution one second, the timeline's. Seconds disturbed
later on are counted apart: on a busy machine throughput also dips for
reasons of its own. A last timeline line covering less than half a second
(the end of the run) is shown but not judged.

A freeze run (tools/chaos.sh --freeze; its events hold a "promotion": the
moment every other node agreed the frozen master's replica is master) is
judged from the promotion. The baseline is the median ops/s of the seconds
that ended before the freeze (as above). The recovery is the start of the
first timeline second ending after the promotion whose ops/s is at least
half that baseline, minus the promotion time; 0 when that second began
before the promotion. With one-second resolution this is an estimate: if
the load came back at full speed at some moment, a second holding at least
half the baseline began less than half a second before that moment and the
second before it, which did not, began less than half a second after it
(so the moment lies within about half a second of the figure). The run
fails when the recovery is above 2 s, when any call ended more than its
deadline + 100 ms after it was sent (the report's late_calls), when a
command failed after the old master's return (SIGCONT), or when an
acknowledged write was lost or wrong. The recovery after each change above
is printed for a freeze run too, but not judged: the freeze is judged from
the promotion, and after the return only errors count (throughput dips on
a shared machine for reasons of its own).
"""

import json
import statistics
import sys


def load_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_events(path):
    events = []
    with open(path) as f:
        for line in f:
            ms, kind, text = line.rstrip("\n").split(" ", 2)
            events.append((int(ms), kind, text))
    return events


def kinds_text(kinds):
    if not kinds:
        return "none"
    return ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def add_kinds(into, kinds):
    for k, n in kinds.items():
        into[k] = into.get(k, 0) + n


# How long after the promotion a freeze run must be back at half its
# baseline, seconds.
FREEZE_RECOVERY_LIMIT = 2.0


def freeze_check(lines, events, baseline_of):
    """The freeze run's figures and verdict: (ok, text lines)."""
    promotion = next(((ms, text) for ms, kind, text in events if kind == "promotion"), None)
    if promotion is None:
        return True, []
    promoted = promotion[0]
    freeze = next((ms for ms, kind, text in events if kind == "change" and text.startswith("freeze")), None)
    out = []
    ok = True
    if freeze is None:
        return False, ["  no freeze event before the promotion"]
    baseline = baseline_of(freeze)
    half = baseline / 2
    out.append(f"  the cluster promoted the replica {(promoted - freeze) / 1000:.2f} s after the freeze "
               f"(every other node agreeing; polled every 50 ms)")
    after = [l for l in lines if l["unix_ms"] > promoted]
    back = next((l for l in after if l["ops_per_sec"] >= half), None)
    if back is None:
        out.append(f"  NOT back to half the pre-freeze baseline ({half:,.0f} ops/s) by the end of the load")
        return False, out
    recovery = max(0, back["start_ms"] - promoted) / 1000
    first_success = next((l for l in after if l["ops"] > 0), None)
    span = (f"{(back['start_ms'] - promoted) / 1000:+.2f} to {(back['unix_ms'] - promoted) / 1000:+.2f} s "
            f"from the promotion, {back['ops_per_sec']:,.0f} ops/s")
    if back["start_ms"] < promoted:
        out.append(f"  recovery {recovery:.2f} s (limit {FREEZE_RECOVERY_LIMIT:.0f} s): the second that "
                   f"included the promotion already ran at half the pre-freeze baseline "
                   f"({half:,.0f} ops/s) or more ({span})")
    else:
        out.append(f"  recovery {recovery:.2f} s (limit {FREEZE_RECOVERY_LIMIT:.0f} s): the first second "
                   f"back at half the pre-freeze baseline ({half:,.0f} ops/s) or more began then ({span})")
    if first_success is not back and first_success is not None:
        out.append(f"  (some commands succeeded already in the second ending "
                   f"{(first_success['unix_ms'] - promoted) / 1000:+.2f} s after the promotion: "
                   f"{first_success['ops_per_sec']:,.0f} ops/s)")
    if recovery > FREEZE_RECOVERY_LIMIT:
        out.append(f"  recovery {recovery:.2f} s is above {FREEZE_RECOVERY_LIMIT:.0f} s")
        ok = False
    frozen = [l for l in lines if l["unix_ms"] > freeze and l["unix_ms"] <= back["unix_ms"]]
    kinds = {}
    for l in frozen:
        add_kinds(kinds, l["errors_by_kind"])
    out.append(f"  from the freeze to the end of the first second back: lowest "
               f"{min(l['ops_per_sec'] for l in frozen):,.0f} ops/s, errors: {kinds_text(kinds)}")
    # The old master's return must cost no call; throughput is shown above,
    # not judged (on a shared machine it dips for reasons of its own).
    thaw = next((ms for ms, kind, text in events if kind == "change" and text.startswith("thaw")), None)
    if thaw is not None:
        kinds = {}
        for l in lines:
            if l["unix_ms"] > thaw:
                add_kinds(kinds, l["errors_by_kind"])
        out.append(f"  errors after the old master's return: {kinds_text(kinds)}")
        if kinds:
            ok = False
    return ok, out


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: chaos_report.py REPORT.json TIMELINE.jsonl EVENTS")
    with open(sys.argv[1]) as f:
        report = json.load(f)
    lines = load_lines(sys.argv[2])
    events = load_events(sys.argv[3])
    if not lines:
        sys.exit("chaos: the timeline is empty")

    # Each line covers (start, end]; the first starts a second before it.
    for i, line in enumerate(lines):
        line["start_ms"] = lines[i - 1]["unix_ms"] if i else line["unix_ms"] - round(line["t"] * 1000)
    t0 = lines[0]["start_ms"]
    # The last line covers the moments between the last whole second and
    # the end: a few hundredths of a second give no rate worth judging.
    judged = [l for l in lines if l["unix_ms"] - l["start_ms"] >= 500]

    def rel(ms):
        return (ms - t0) / 1000.0

    changes = [e for e in events if e[1] == "change"]
    first_change = changes[0][0] if changes else lines[-1]["unix_ms"] + 1

    def baseline_of(until_ms):
        before = [l["ops_per_sec"] for l in lines if l["unix_ms"] <= until_ms and l["t"] >= 0.5]
        return statistics.median(before) if before else max(l["ops_per_sec"] for l in lines)

    baseline = baseline_of(first_change)

    def disturbed(line):
        return line["errors"] > 0 or line["ops_per_sec"] < baseline / 2

    print(f"chaos check: {report['target']}, {report['cores']} cores x "
          f"{report['tasks_per_core']} tasks, {report['elapsed_secs']:.0f} s, "
          f"baseline {baseline:,.0f} ops/s")
    print()
    print("events (seconds since measuring began):")
    for ms, kind, text in events:
        print(f"  {rel(ms):6.1f}  {text}")
    print()

    print("ops/s over time (1 s intervals; > marks a second with an event; slowest ok: the slowest")
    print("successful command; slowest call: the slowest call of any outcome that ended then):")
    print(f"  {'t (s)':>6}  {'ops/s':>10}  {'errors':>7}  {'slowest ok ms':>13}  {'slowest call ms':>15}  "
          f"{'late':>4}  errors by kind")
    for line in lines:
        mark = ">" if any(line["start_ms"] < ms <= line["unix_ms"] for ms, _, _ in events) else " "
        kinds = kinds_text(line["errors_by_kind"]) if line["errors"] else ""
        call = line.get("slowest_call_us")
        call = f"{call / 1000:15.1f}" if call is not None else f"{'-':>15}"
        print(f"{mark} {line['t']:6.1f}  {line['ops_per_sec']:10,.0f}  {line['errors']:7}  "
              f"{line['slowest_us'] / 1000:13.1f}  {call}  {line.get('late_calls', 0):4}  {kinds}")
    print()

    total = report["total"]
    print(f"commands: {total['ops']:,} succeeded, {total['errors']:,} failed; "
          f"errors by kind: {kinds_text(total['errors_by_kind'])}")
    late = report.get("late_calls")
    if late is not None:
        print(f"slowest call (any outcome, from its send to its end): "
              f"{report['slowest_call_us'] / 1000:,.1f} ms; calls that ended more than "
              f"{report['late_call_threshold_us'] / 1000:,.0f} ms (deadline + 100 ms) after they were sent: {late}")
    print()

    ok = True
    freeze_run = any(kind == "promotion" for _, kind, _ in events)
    print("recovery after each change:")
    for i, (ms, _, text) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else None
        # Seconds after the change and wholly before the next one.
        window = [l for l in judged if l["unix_ms"] > ms and (until is None or l["unix_ms"] <= until)]
        kinds = {}
        for l in window:
            add_kinds(kinds, l["errors_by_kind"])
        bad = [j for j, l in enumerate(window) if disturbed(l)]
        if not bad:
            print(f"  {text}: no disturbance (every second >= half the baseline, no errors)")
            continue
        good = [j for j in range(bad[0] + 1, len(window)) if not disturbed(window[j])]
        if good:
            back = window[good[0]]["start_ms"]
            low = min(l["ops_per_sec"] for l in window[: good[0]])
            later = sum(1 for j in bad if j > good[0])
            also = f"; {later} later seconds disturbed too" if later else ""
            print(f"  {text}: recovered in {max(0, back - ms) / 1000:.1f} s "
                  f"(lowest {low:,.0f} ops/s; errors: {kinds_text(kinds)}{also})")
        elif until is not None:
            low = min(l["ops_per_sec"] for l in window)
            print(f"  {text}: still disturbed when the next change began "
                  f"(lowest {low:,.0f} ops/s; errors: {kinds_text(kinds)})")
        else:
            low = min(l["ops_per_sec"] for l in window)
            print(f"  {text}: NOT recovered by the end of the load "
                  f"(lowest {low:,.0f} ops/s; errors: {kinds_text(kinds)})")
            if freeze_run:
                print("    (not judged in a freeze run: that is judged from the promotion, below)")
            else:
                ok = False
    # Server side: how long the cluster itself took.
    kill = next((ms for ms, kind, text in events if text.startswith("kill")), None)
    promoted = next((ms for ms, kind, text in events if text.startswith("failover done")), None)
    if kill and promoted:
        print(f"  (the cluster promoted the replica {(promoted - kill) / 1000:.1f} s after the kill)")
    print()

    freeze_ok, freeze_text = freeze_check(judged, events, baseline_of)
    if freeze_text:
        print("the frozen master (measured from the promotion):")
        for text in freeze_text:
            print(text)
        if late is None:
            print("  late calls: missing from the report")
            freeze_ok = False
        elif late:
            print(f"  {late} calls ended past their deadline + 100 ms")
            freeze_ok = False
        print()
    ok = ok and freeze_ok

    verify = report.get("verify")
    if not verify:
        print("verification: missing from the report")
        return 1
    print(f"verification: {verify['checked']:,} keys checked, {verify['ok']:,} ok, "
          f"{verify['lost']} lost, {verify['wrong']} wrong, {verify['read_errors']} read errors; "
          f"{verify['unknown']:,} keys skipped because their last write failed "
          f"and may or may not have been applied")
    for example in verify.get("examples", []):
        print(f"  e.g. {example}")
    if verify.get("error"):
        print(f"  verification error: {verify['error']}")
        ok = False
    if verify["lost"] or verify["wrong"] or verify["read_errors"] or not verify["checked"]:
        ok = False
    print()
    if freeze_text:
        passed = (f"PASS: no acknowledged write lost, back within {FREEZE_RECOVERY_LIMIT:.0f} s "
                  f"of the promotion, no late call")
    else:
        passed = "PASS: no acknowledged write lost"
    print("RESULT: " + (passed if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
