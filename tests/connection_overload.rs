//! One connection on one core under far more callers than it takes at once
//! (100,000 tasks, `max_in_flight` well below that): callers wait in line
//! for room. The server is paused (`CLIENT PAUSE`) past the calls'
//! deadline, so calls time out written and unwritten, and replies arrive
//! after their deadline; still every call ends by its deadline (plus a
//! margin for the executor to get to it), none succeeds after it, and the
//! server applied every acknowledged write and none reported as not sent.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::spawn_local;
use redcore::Commands;
use redcore::{Connection, Error};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{base, error_kind, run, within};

const TASKS: usize = 100_000;

/// How long past its deadline a failed call may end: the sweeper's wake-up
/// and the wait for the executor to run the task. Up to 100,000 tasks wake
/// at one deadline; in a debug build on a quiet machine the last ends some
/// 50-100 ms late, on a 2-core machine running three times its share of
/// other work about 1.6 s late.
const MARGIN: Duration = Duration::from_secs(1);

/// What the tasks saw.
#[derive(Default)]
struct Tally {
    ok: Cell<u64>,
    /// Successes that ended after the server's pause ended.
    ok_after_pause: Cell<u64>,
    /// Timeouts that may have been applied (the INCR was written).
    maybe_applied: Cell<u64>,
    not_applied: Cell<u64>,
    /// Successes that came after the caller's deadline, and the slowest
    /// success.
    late_ok: Cell<u64>,
    slowest_ok: Cell<Duration>,
    /// Calls of any outcome that ended past deadline + margin, and the
    /// slowest call of all.
    overdue: Cell<u64>,
    slowest: Cell<Duration>,
    /// Errors other than timeouts, by kind.
    other: RefCell<Vec<String>>,
    /// When the server's pause ends.
    pause_over: Cell<Option<Instant>>,
}

impl Tally {
    fn record(&self, took: Duration, timeout: Duration, result: Result<i64, Error>) {
        self.slowest.set(self.slowest.get().max(took));
        if took > timeout + MARGIN {
            self.overdue.set(self.overdue.get() + 1);
        }
        match result {
            Ok(_) => {
                self.ok.set(self.ok.get() + 1);
                if self.pause_over.get().is_some_and(|t| Instant::now() > t) {
                    self.ok_after_pause.set(self.ok_after_pause.get() + 1);
                }
                self.slowest_ok.set(self.slowest_ok.get().max(took));
                // No margin: the caller's own clock says when it got it.
                if took > timeout {
                    self.late_ok.set(self.late_ok.get() + 1);
                }
            }
            Err(Error::Timeout { maybe_applied }) => {
                let n = if maybe_applied {
                    &self.maybe_applied
                } else {
                    &self.not_applied
                };
                n.set(n.get() + 1);
            }
            Err(e) => self.other.borrow_mut().push(error_kind(&e)),
        }
    }

    fn check(&self, applied: u64, load: &Load) {
        let what = load.what;
        let (ok, maybe) = (self.ok.get(), self.maybe_applied.get());
        let summary = format!(
            "{what}: {ok} ok ({} after the pause; slowest {:?}), {maybe} timeouts after \
             sending, {} before; slowest call {:?}; the server counted {applied}",
            self.ok_after_pause.get(),
            self.slowest_ok.get(),
            self.not_applied.get(),
            self.slowest.get()
        );
        println!("{summary}");
        assert_eq!(
            self.late_ok.get(),
            0,
            "successes after the deadline: {summary}"
        );
        assert_eq!(
            self.overdue.get(),
            0,
            "calls ended later than {MARGIN:?} past their deadline: {summary}"
        );
        assert!(
            self.other.borrow().is_empty(),
            "errors other than timeouts: {:?}; {summary}",
            &self.other.borrow()[..self.other.borrow().len().min(10)]
        );
        assert!(
            self.ok_after_pause.get() > 0,
            "nothing succeeded after the pause: {summary}"
        );
        if load.pause > load.timeout {
            assert!(
                maybe > 0 && self.not_applied.get() > 0,
                "a pause past the deadline did not time calls out: {summary}"
            );
        }
        // Every acknowledged INCR was applied before its reply; INCRs
        // still on their way only add to the count, and only timeouts
        // after sending may have sent them.
        assert!(
            ok <= applied && applied <= ok + maybe,
            "the count does not match the outcomes: {summary}"
        );
    }
}

/// How the load runs.
struct Load {
    max_in_flight: usize,
    timeout: Duration,
    /// Tasks call again until this has passed (once, when zero).
    run_for: Duration,
    /// The server pauses this long once this many calls succeeded (at
    /// once, when zero). A pause longer than `timeout` must time out
    /// calls both written and not.
    pause: Duration,
    pause_after_ok: u64,
    what: &'static str,
}

/// Runs `TASKS` tasks calling `INCR` on one connection, pauses the server
/// on the way, and checks what the tasks saw and the server's count.
fn overload(load: Load) {
    let server = RedisServer::start();
    let config = base(server.port())
        .timeout(load.timeout)
        .max_in_flight(load.max_in_flight)
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config.clone()).await.unwrap();
        let pauser = Connection::connect(config).await.unwrap();
        let pause_ms = load.pause.as_millis().to_string();
        let tally = Rc::new(Tally::default());
        let pause = {
            let tally = tally.clone();
            Rc::new(move || {
                let (pauser, pause_ms) = (pauser.clone(), pause_ms.clone());
                tally.pause_over.set(Some(Instant::now() + load.pause));
                spawn_local(async move {
                    pauser
                        .command::<()>(["CLIENT", "PAUSE", pause_ms.as_str()])
                        .await
                        .unwrap()
                })
            })
        };
        if load.pause_after_ok == 0 {
            pause().await;
        }
        let (timeout, started) = (load.timeout, Instant::now());
        let stop = started + load.run_for;
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (conn, tally, pause) = (conn.clone(), tally.clone(), pause.clone());
                spawn_local(async move {
                    loop {
                        let start = Instant::now();
                        let r = conn.command::<i64>(["INCR", "overload"]).await;
                        tally.record(start.elapsed(), timeout, r);
                        if tally.ok.get() == load.pause_after_ok && tally.pause_over.get().is_none()
                        {
                            pause().detach();
                        }
                        if Instant::now() >= stop {
                            break;
                        }
                    }
                })
            })
            .collect();
        // Every task ends within its last call's deadline and the margin.
        let bound = load.run_for + timeout + MARGIN;
        within("the tasks", bound + Duration::from_secs(10), async {
            for t in tasks {
                t.await;
            }
        })
        .await;
        let took = started.elapsed();
        println!("{}: the run took {took:?}", load.what);
        let applied: u64 = server.cmd(&["GET", "overload"]).parse().unwrap_or(0);
        tally.check(applied, &load);
        assert!(took <= bound, "the run took {took:?}, more than {bound:?}");
    });
}

/// 100,000 tasks in a closed loop on the default `max_in_flight`, most
/// of them waiting in line at any moment; the server stops answering
/// for longer than the deadline, then answers again.
#[test]
fn a_hundred_thousand_tasks_in_a_closed_loop_keep_their_deadlines() {
    overload(Load {
        max_in_flight: 16_384,
        timeout: Duration::from_secs(2),
        run_for: Duration::from_secs(5),
        pause: Duration::from_millis(2_500),
        pause_after_ok: 50_000,
        what: "closed loop",
    });
}

/// 100,000 calls at once with room for 1,000 in flight, behind a server
/// that starts answering shortly before their deadline: the first calls
/// succeed late in their time, and (unless the machine drains the line in
/// the time left) the line's end reaches its deadline while waiting.
#[test]
fn a_hundred_thousand_calls_at_once_keep_their_deadlines() {
    overload(Load {
        max_in_flight: 1_000,
        timeout: Duration::from_secs(2),
        run_for: Duration::ZERO,
        pause: Duration::from_millis(1_700),
        pause_after_ok: 0,
        what: "one call each",
    });
}
