//! Cluster `SCAN` from the per-core runtime: [`CoreClient::scan`] runs the
//! cluster scan on its core (nodes other cores own are reached over the
//! mesh, as for any command); [`RemoteClient::scan`] runs each page as a
//! job on one of the cores, the [`ScanState`] travelling with it.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;

use super::commands::CoreJob;
use super::core_client::CoreClient;
use super::remote_client::{ExtKind, RemoteClient};
use crate::cluster::scan::{Pages, next_page, poll_next_key};
use crate::cluster::{ClusterScan, ScanCommands, ScanOptions, ScanState};
use crate::{Error, Value};

impl CoreClient {
    /// A scan over every key of every master, run on this core: the
    /// [`Cluster`](crate::Cluster) scan ([`ClusterScan`]) over this core's
    /// client, whose pages reach the nodes other cores own through them.
    /// Pages are not counted as work in flight: one running during a
    /// shutdown fails with [`Error::Closed`] once the connections close.
    pub fn scan(&self, options: ScanOptions) -> ClusterScan {
        self.cluster.scan(options)
    }
}

impl ScanCommands for CoreClient {
    type Scan = ClusterScan;

    fn scan(&self, options: ScanOptions) -> ClusterScan {
        CoreClient::scan(self, options)
    }
}

impl RemoteClient {
    /// A scan over every key of every master, from outside the executors:
    /// each page is a job run on one of the cores (taking turns) with the
    /// [`ScanState`], which comes back with the page. The scan is `Send`.
    pub fn scan(&self, options: ScanOptions) -> RemoteScan {
        RemoteScan::resume(self, options, ScanState::new())
    }
}

impl ScanCommands for RemoteClient {
    type Scan = RemoteScan;

    fn scan(&self, options: ScanOptions) -> RemoteScan {
        RemoteClient::scan(self, options)
    }
}

/// What a page job answers: the state it left (when its page reached
/// the caller) and the page.
type PageOutcome = (Option<Box<ScanState>>, Result<Option<Vec<Bytes>>, Error>);

/// A page as the job on the core left it: the state after it, and what it
/// returned.
type PageLeft = (Box<ScanState>, Result<Option<Vec<Bytes>>, Error>);

/// A page in flight on a core.
type RemotePage = Pin<Box<dyn Future<Output = PageOutcome> + Send>>;

/// [`ClusterScan`] for a [`RemoteClient`]: the same pages and guarantee,
/// each page run on one of the cores. `Send`; pages with
/// [`next_page`](Self::next_page), or keys as a
/// [`Stream`](futures_lite::Stream).
///
/// The state and the page travel together: the scan takes the state a
/// job left only with the page (or the page's own error) that job
/// returned. When the job's answer does not reach the caller (its core
/// did not answer by the deadline, or stopped), the scan stays where it
/// was before that page, even if the job went on and finished a pass on
/// its core: that page's keys are returned again by a later page rather
/// than lost.
pub struct RemoteScan {
    client: RemoteClient,
    options: Arc<ScanOptions>,
    /// The state after the last page that came back.
    state: Box<ScanState>,
    in_flight: Option<RemotePage>,
    buffered: VecDeque<Bytes>,
    done: bool,
}

impl fmt::Debug for RemoteScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteScan")
            .field("options", &self.options)
            .field("state", &self.state)
            .field("done", &self.done)
            .finish()
    }
}

impl RemoteScan {
    /// A scan through `client` from `state` (a new one, or one a previous
    /// scan left). Pass the options the state was made with (see
    /// [`ClusterScan`]'s limits).
    pub fn resume(client: &RemoteClient, options: ScanOptions, state: ScanState) -> RemoteScan {
        RemoteScan {
            client: client.clone(),
            options: Arc::new(options),
            done: state.is_done(),
            state: Box::new(state),
            in_flight: None,
            buffered: VecDeque::new(),
        }
    }

    /// Where the scan is, as of the last page that came back.
    pub fn state(&self) -> &ScanState {
        &self.state
    }

    /// The next page of keys: `Ok(None)` when the scan is over; a page may
    /// be empty. Dropping the future before it finishes loses nothing:
    /// the next call waits for that page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Bytes>>, Error> {
        std::future::poll_fn(|cx| self.poll_page(cx)).await
    }

    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Vec<Bytes>>, Error>> {
        if self.in_flight.is_none() {
            if self.done {
                return Poll::Ready(Ok(None));
            }
            self.in_flight = Some(Box::pin(remote_page(
                self.client.clone(),
                self.options.clone(),
                self.state.clone(),
            )));
        }
        let page = self.in_flight.as_mut().expect("a page in flight");
        let (state, result) = std::task::ready!(page.as_mut().poll(cx));
        self.in_flight = None;
        if let Some(state) = state {
            self.state = state;
        }
        self.done = self.state.is_done() || matches!(result, Ok(None));
        Poll::Ready(result)
    }
}

/// Runs one page on a core with a copy of the state; the state comes back
/// with the page, in one piece.
async fn remote_page(
    client: RemoteClient,
    options: Arc<ScanOptions>,
    mut state: Box<ScanState>,
) -> PageOutcome {
    let back: Arc<Mutex<Option<PageLeft>>> = Arc::new(Mutex::new(None));
    let slot = back.clone();
    let job: CoreJob = Box::new(move |core| {
        Box::pin(async move {
            let page = core
                .entered(next_page(&core.cluster, &options, &mut state))
                .await;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((state, page));
            Ok(Value::Nil)
        })
    });
    let submitted = client.submit(ExtKind::Job(job)).await;
    let left = back.lock().unwrap_or_else(PoisonError::into_inner).take();
    settle(submitted, left)
}

/// The outcome of a page job: the state it left, and its page, only when
/// the job's own answer reached the caller; otherwise no state (the scan
/// stays where it was) and the error the caller got.
fn settle(submitted: Result<Value, Error>, left: Option<PageLeft>) -> PageOutcome {
    match (submitted, left) {
        (Ok(_), Some((state, page))) => (Some(state), page),
        (Ok(_), None) => (
            None,
            Err(Error::Closed("the scan job ended without its page")),
        ),
        (Err(e), _) => (None, Err(e)),
    }
}

/// Keys one by one; an error is yielded once, and polling again goes on
/// with the scan.
impl futures_lite::Stream for RemoteScan {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        poll_next_key(&mut *self, cx)
    }
}

impl Pages for RemoteScan {
    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Vec<Bytes>>, Error>> {
        RemoteScan::poll_page(self, cx)
    }

    fn buffered(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advanced() -> Box<ScanState> {
        Box::new(ScanState::for_tests_with_finished(100))
    }

    #[test]
    fn the_state_moves_on_only_with_a_page_that_reached_the_caller() {
        let keys = vec![Bytes::from_static(b"k")];
        // The job finished its page, but the caller's wait had expired:
        // the keys never reach the caller, so neither does the state.
        let timeout = Error::Timeout {
            maybe_applied: false,
        };
        let (state, page) = settle(Err(timeout), Some((advanced(), Ok(Some(keys.clone())))));
        assert!(state.is_none());
        assert!(matches!(page, Err(Error::Timeout { .. })), "{page:?}");
        // The core stopped before the job ran.
        let stopped = Error::CoreStopped {
            core: 0,
            maybe_applied: true,
        };
        let (state, page) = settle(Err(stopped), None);
        assert!(state.is_none() && page.is_err());
        // The page reached the caller: the state with it.
        let (state, page) = settle(Ok(Value::Nil), Some((advanced(), Ok(Some(keys.clone())))));
        assert_eq!(state.unwrap().finished_slots(), 100);
        assert_eq!(page.unwrap(), Some(keys));
        // The page's own error reached the caller: the state it left too.
        let unserved = Error::SlotUnserved { slot: 3 };
        let (state, page) = settle(Ok(Value::Nil), Some((advanced(), Err(unserved))));
        assert_eq!(state.unwrap().finished_slots(), 100);
        assert!(matches!(page, Err(Error::SlotUnserved { slot: 3 })));
    }
}
