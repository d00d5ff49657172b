//! Unit tests of the multiplexer: the stream offsets, the admission
//! queue's grants, deadlines.

use super::*;
use crate::conn::health::Finding;
use std::task::Poll;

use crate::conn::admission::{Counter, counter};

fn call(timeout: Duration) -> Call {
    Call {
        watch: None,
        timeout,
        replies: 1,
        gather: false,
        detached: false,
        blocking: false,
    }
}

fn queue(st: &mut Mux, config: &ConnectionConfig, timeout: Duration, bytes: &[u8]) -> usize {
    match st.admit(
        config,
        &call(timeout),
        &mut |out| out.extend_from_slice(bytes),
        &mut None,
    ) {
        Ok(Admit::Queued(slot)) => slot,
        _ => panic!("not queued"),
    }
}

/// Bytes a transport gives back go in front of the batch buffer; a
/// call cut by the boundary stays written, a call wholly in them whose
/// caller was told "timed out, may have been applied" is withdrawn,
/// and the others are sent on the next socket.
#[test]
fn unwritten_bytes_come_back_in_front() {
    let config = ConnectionConfig::default();
    let shared = Shared::new(config.clone(), None);
    let mut st = shared.mux.borrow_mut();
    st.link = Link::Up;
    let long = Duration::from_secs(60);
    let a = queue(&mut st, &config, long, b"AAAA");
    let b = queue(&mut st, &config, long, b"BBBB");
    let c = queue(&mut st, &config, Duration::from_millis(1), b"CCCC");
    let d = queue(&mut st, &config, long, b"DDDD");
    let batch = st.take_out(BytesMut::new());
    assert_eq!(&batch[..], b"AAAABBBBCCCCDDDD");
    let e = queue(&mut st, &config, long, b"EEEE");
    // C times out while its batch is with the transport.
    st.expire(Instant::now() + Duration::from_millis(5), config.timeout);
    let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
        std::task::Poll::Ready(cx.waker().clone())
    }));
    assert!(matches!(
        st.poll_slot(c, &waker),
        Some(Err(Error::Timeout {
            maybe_applied: true
        }))
    ));
    // The socket took "AAAAB" only.
    st.unwrite(&batch[5..]);
    assert_eq!(&st.out[..], b"BBBCCCCDDDDEEEE");
    st.on_disconnect(&config, false);
    assert!(matches!(
        st.poll_slot(a, &waker),
        Some(Err(Error::ConnectionLost))
    ));
    assert!(matches!(
        st.poll_slot(b, &waker),
        Some(Err(Error::ConnectionLost))
    ));
    // C is gone from the stream; D and E wait for the next socket.
    assert_eq!(&st.out[..], b"DDDDEEEE");
    assert!(st.poll_slot(d, &waker).is_none());
    assert!(st.poll_slot(e, &waker).is_none());
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec().into())
}

/// A state up on a socket, with room for `in_flight` calls.
fn up(in_flight: usize) -> (ConnectionConfig, Shared) {
    let config = ConnectionConfig::builder()
        .max_in_flight(in_flight)
        .build()
        .unwrap();
    let shared = Shared::new(config.clone(), None);
    shared.mux.borrow_mut().link = Link::Up;
    (config, shared)
}

/// A caller of the admission queue: its place and a counting waker.
struct Caller {
    key: Option<usize>,
    wakes: Arc<Counter>,
    waker: Waker,
}

impl Caller {
    fn woken(&self) -> usize {
        self.wakes.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A fresh call that must wait: it queues and polls once.
fn waiting(st: &mut Mux, config: &ConnectionConfig, c: &Call) -> Caller {
    let (wakes, waker) = counter();
    let mut key = None;
    let r = st.admit(config, c, &mut |out| out.extend_from_slice(b"W"), &mut key);
    assert!(matches!(r, Ok(Admit::Wait)), "the call did not wait");
    assert!(st.poll_waiter(Queue::Calls, &mut key, &waker).is_pending());
    Caller { key, wakes, waker }
}

/// Polls a waiting caller: true when woken.
fn ready(st: &mut Mux, w: &mut Caller) -> bool {
    st.poll_waiter(Queue::Calls, &mut w.key, &w.waker)
        .is_ready()
}

/// A waiting caller tries again: its slot if it was queued.
fn retry(st: &mut Mux, config: &ConnectionConfig, c: &Call, w: &mut Caller) -> Option<usize> {
    match st.admit(
        config,
        c,
        &mut |out| out.extend_from_slice(b"W"),
        &mut w.key,
    ) {
        Ok(Admit::Queued(slot)) => {
            assert_eq!(w.key, None);
            Some(slot)
        }
        Ok(Admit::Wait) => {
            assert!(
                st.poll_waiter(Queue::Calls, &mut w.key, &w.waker)
                    .is_pending()
            );
            None
        }
        Err(e) => panic!("admit failed: {e}"),
    }
}

/// Writes the batch and answers the oldest call.
fn answer_one(st: &mut Mux) {
    st.take_out(BytesMut::new());
    st.read_batch();
    st.on_reply(bulk("r")).unwrap();
}

/// Each freed place wakes exactly one waiter, the oldest; a fresh
/// call does not pass the waiters; a waiter without a grant that
/// tries anyway stays in line.
#[test]
fn one_freed_place_wakes_the_oldest_waiter_only() {
    let (config, shared) = up(2);
    let mut st = shared.mux.borrow_mut();
    let c = call(config.timeout);
    queue(&mut st, &config, config.timeout, b"A");
    queue(&mut st, &config, config.timeout, b"B");
    let mut ws: Vec<Caller> = (0..4).map(|_| waiting(&mut st, &config, &c)).collect();
    answer_one(&mut st);
    let woken: Vec<usize> = ws.iter().map(Caller::woken).collect();
    assert_eq!(woken, [1, 0, 0, 0]);
    // A fresh call and a waiter further back find no room for them.
    let late = waiting(&mut st, &config, &c);
    assert_eq!(retry(&mut st, &config, &c, &mut ws[2]), None);
    assert_eq!(late.woken(), 0);
    // The granted waiter goes.
    assert!(ready(&mut st, &mut ws[0]));
    assert!(retry(&mut st, &config, &c, &mut ws[0]).is_some());
    // Two more replies: the next two in line, one each.
    answer_one(&mut st);
    answer_one(&mut st);
    let woken: Vec<usize> = ws.iter().map(Caller::woken).collect();
    assert_eq!(woken, [1, 1, 1, 0]);
    assert_eq!(late.woken(), 0);
}

/// A waiter that gives up while holding a grant passes it to the next
/// in line; one whose deadline passes too.
#[test]
fn a_grant_given_up_goes_to_the_next_waiter() {
    let (config, shared) = up(1);
    let mut st = shared.mux.borrow_mut();
    let c = call(config.timeout);
    queue(&mut st, &config, config.timeout, b"A");
    let ws: Vec<Caller> = (0..3).map(|_| waiting(&mut st, &config, &c)).collect();
    answer_one(&mut st);
    assert_eq!(ws[0].woken(), 1);
    // Its future is dropped before it could use the grant.
    st.leave(Queue::Calls, ws[0].key.unwrap());
    assert_eq!((ws[1].woken(), ws[2].woken()), (1, 0));
    // The next one's deadline passes, grant in hand.
    let deadline = st.admission.deadline(ws[1].key.unwrap());
    st.expire(deadline, config.timeout);
    let mut key = ws[1].key;
    assert!(matches!(
        st.poll_waiter(Queue::Calls, &mut key, &ws[1].waker),
        Poll::Ready(Err(Error::Timeout {
            maybe_applied: false
        }))
    ));
    assert_eq!(key, None);
    assert_eq!(ws[2].woken(), 1);
}

/// Calls of the watch session that holds the connection never queue
/// behind other callers: they go at once when there is room, and
/// otherwise get the first place that frees.
#[test]
fn watch_session_calls_go_before_waiting_callers() {
    let (config, shared) = up(2);
    let mut st = shared.mux.borrow_mut();
    let c = call(config.timeout);
    queue(&mut st, &config, config.timeout, b"A");
    let token = st
        .begin_exclusive(config.timeout, &mut None)
        .unwrap()
        .expect("the connection is free");
    let generation = st.generation;
    let session = Call {
        watch: Some((token, generation)),
        ..c
    };
    // Another task's call waits for the session to end.
    let mut other = waiting(&mut st, &config, &c);
    // The session's call goes, though someone waits.
    assert!(retry_fresh(&mut st, &config, &session).is_some());
    // Full now: the session's next call waits, in front.
    let mut mine = waiting(&mut st, &config, &session);
    answer_one(&mut st);
    assert_eq!((mine.woken(), other.woken()), (1, 0));
    assert!(ready(&mut st, &mut mine));
    assert!(retry(&mut st, &config, &session, &mut mine).is_some());
    // The session ends: the other task's call goes on the next place.
    st.release_exclusive(token);
    assert_eq!(other.woken(), 0);
    answer_one(&mut st);
    assert_eq!(other.woken(), 1);
    assert!(ready(&mut st, &mut other));
    assert!(retry(&mut st, &config, &c, &mut other).is_some());
}

fn retry_fresh(st: &mut Mux, config: &ConnectionConfig, c: &Call) -> Option<usize> {
    match st.admit(config, c, &mut |out| out.extend_from_slice(b"S"), &mut None) {
        Ok(Admit::Queued(slot)) => Some(slot),
        _ => None,
    }
}

/// With the batch buffer full, a granted waiter keeps its grant and
/// its place; the write that makes room wakes it, and the next.
#[test]
fn a_full_batch_buffer_holds_grants_until_written() {
    let config = ConnectionConfig::builder()
        .max_in_flight(8)
        .max_batch_bytes(4)
        .build()
        .unwrap();
    let shared = Shared::new(config.clone(), None);
    let mut st = shared.mux.borrow_mut();
    st.link = Link::Up;
    let c = call(config.timeout);
    queue(&mut st, &config, config.timeout, b"AAAA");
    let mut ws: Vec<Caller> = (0..3).map(|_| waiting(&mut st, &config, &c)).collect();
    assert_eq!(ws.iter().map(Caller::woken).sum::<usize>(), 0);
    // Written: room for bytes, and places: grants in order.
    st.wrote(4);
    assert!(ws.iter().all(|w| w.woken() == 1));
    for w in ws.iter_mut() {
        assert!(ready(&mut st, w));
    }
    // The first fills the buffer again (it takes "W", 1 byte, so use
    // a big one), the others hold their grants.
    let big = &mut |out: &mut BytesMut| out.extend_from_slice(b"WWWW");
    let r = st.admit(&config, &c, big, &mut ws[0].key).unwrap();
    assert!(matches!(r, Admit::Queued(_)));
    assert_eq!(retry(&mut st, &config, &c, &mut ws[2]), None);
    assert_eq!(retry(&mut st, &config, &c, &mut ws[1]), None);
    // The write wakes the oldest held one, which goes; then the next.
    st.wrote(4);
    assert_eq!((ws[1].woken(), ws[2].woken()), (2, 1));
    assert!(ready(&mut st, &mut ws[1]));
    assert!(retry(&mut st, &config, &c, &mut ws[1]).is_some());
    assert_eq!(ws[2].woken(), 2);
    assert!(ready(&mut st, &mut ws[2]));
    assert!(retry(&mut st, &config, &c, &mut ws[2]).is_some());
}

/// A reply read after its call's deadline, before the sweeper got to
/// it, is a timeout that may have been applied, never a success; so is a
/// reply read in time whose caller runs too late to see it in time.
#[test]
fn a_reply_after_the_deadline_is_a_timeout() {
    let (config, shared) = up(16);
    let mut st = shared.mux.borrow_mut();
    let a = queue(&mut st, &config, config.timeout, b"A");
    let b = queue(&mut st, &config, config.timeout, b"B");
    // A call with a microsecond left: its caller cannot run in time.
    let c = queue(&mut st, &config, Duration::from_micros(1), b"C");
    let deadline = st.entries[0].deadline;
    let c_deadline = st.entries[2].deadline;
    st.take_out(BytesMut::new());
    // Read before the deadline: a success.
    st.reply_clock = Some(deadline - config.timeout / 2);
    st.on_reply(bulk("a")).unwrap();
    // Read at the deadline: a timeout.
    st.reply_clock = Some(deadline);
    st.on_reply(bulk("b")).unwrap();
    // Read just in time, handed over too late.
    st.reply_clock = Some(c_deadline - Duration::from_nanos(1));
    st.on_reply(bulk("c")).unwrap();
    let (_, waker) = counter();
    assert_eq!(st.poll_slot(a, &waker).unwrap().unwrap(), bulk("a"));
    for slot in [b, c] {
        assert!(matches!(
            st.poll_slot(slot, &waker),
            Some(Err(Error::Timeout {
                maybe_applied: true
            }))
        ));
    }
    assert_eq!(st.stats.timeouts, 2);
}

/// The sweep passes calls with other deadlines once and for all: the
/// next sweep starts after them.
#[test]
fn the_sweep_does_not_walk_odd_calls_again() {
    let (config, shared) = up(64);
    let mut st = shared.mux.borrow_mut();
    for _ in 0..10 {
        queue(&mut st, &config, config.timeout * 2, b"odd");
    }
    queue(&mut st, &config, config.timeout, b"D");
    let odd_end = st.entries[9].end;
    st.expire(Instant::now(), config.timeout);
    assert_eq!(st.swept, odd_end);
}

/// A call is judged by the health check only once wholly written and
/// when it does not block on purpose; a silent node connection fails
/// its unwritten calls as not sent.
#[test]
fn health_check_judges_wholly_written_calls_only() {
    let h = Duration::from_millis(100);
    let config = ConnectionConfig {
        health_interval: Some(h),
        ..ConnectionConfig::default()
    };
    let shared = Shared::new(config.clone(), None);
    let mut st = shared.mux.borrow_mut();
    st.link = Link::Up;
    st.fail_fast = true;
    let t0 = Instant::now();
    let big = queue(&mut st, &config, config.timeout, &[b'x'; 100]);
    // Half of it is out: its reply cannot come yet.
    st.wrote(50);
    assert_eq!(st.check_health(&config, t0).0, Finding::Fine);
    assert_eq!(st.check_health(&config, t0 + 3 * h).0, Finding::Fine);
    st.wrote(50);
    let later = queue(&mut st, &config, config.timeout, b"later");
    let t1 = t0 + 4 * h;
    assert_eq!(st.check_health(&config, t1).0, Finding::Fine);
    assert_eq!(st.check_health(&config, t1 + h).0, Finding::Silent);
    assert_eq!(st.stats.stalls, 1);
    let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
        std::task::Poll::Ready(cx.waker().clone())
    }));
    // The unwritten call failed as not sent; the written one waits.
    assert!(matches!(
        st.poll_slot(later, &waker),
        Some(Err(Error::Connect { .. }))
    ));
    assert!(st.poll_slot(big, &waker).is_none());
    assert!(st.down_error(&config).is_some());
    // A byte ends the silence.
    assert!(st.note_bytes_in(1));
    assert!(st.down_error(&config).is_none());
}
