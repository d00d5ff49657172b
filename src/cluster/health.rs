//! What the cluster client does about a node that goes silent.
//!
//! Each node connection runs the connection health check (see the
//! [crate docs](crate#failure)): a socket on which a
//! reply has been due for a whole health interval without a byte arriving
//! is *silent*. A node connection then fails new calls at once as not
//! sent, so callers refresh the topology and try again, and it tells this
//! client, which checks the topology with the other nodes (refreshes put
//! silent nodes last) every quarter interval for as long as any of its
//! nodes stays silent. When the cluster says another node serves a silent
//! node's slots (its replica was promoted), the new routes are installed
//! at once and the silent node's socket is given up: calls written to it
//! fail with [`Error::ConnectionLost`](crate::Error::ConnectionLost)
//! (reads among them go again), calls not yet written go to the new
//! master. A node that answers again is used again.
//!
//! A call that times out after its command was written to a node also
//! asks for a topology check.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::NodeAddr;
use super::router::Router;

/// Raised by a node connection whose socket went silent; wakes the
/// client's health task.
#[derive(Default)]
pub(crate) struct SilenceSignal {
    raised: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl SilenceSignal {
    /// A node connection's socket went silent.
    pub fn raise(&self) {
        self.raised.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits until raised (or `stop` says to stop), and lowers it.
    async fn wait(&self, stop: impl Fn() -> bool) {
        poll_fn(|cx| {
            if self.raised.replace(false) || stop() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Router {
    /// The nodes whose connection on this core is silent now.
    pub fn silent_nodes(&self) -> Vec<NodeAddr> {
        self.nodes()
            .iter()
            .filter(|n| n.via.connection().is_some_and(|c| c.is_silent()))
            .map(|n| n.addr.clone())
            .collect()
    }

    /// Gives up the sockets of silent nodes that `masters` no longer
    /// lists: the cluster moved their slots to other nodes.
    pub(super) fn give_up_demoted(&self, masters: &[NodeAddr]) {
        for node in self.nodes() {
            let Some(conn) = node.via.connection() else {
                continue;
            };
            if !masters.contains(&node.addr) && conn.is_silent() {
                tracing::warn!(node = %node.addr, "a silent node's slots moved to another node; giving its socket up");
                conn.give_up_socket(
                    "the node went silent and the cluster moved its slots to another node",
                );
            }
        }
    }
}

/// The client's health task on one core: while any node connection of
/// this core is silent, asks for a topology check every quarter health
/// interval (refreshes are merged and rate-limited; with peers, the one
/// that leads refreshes runs them for all).
pub(crate) async fn watch_silent_nodes(router: Rc<Router>) {
    let Some(interval) = router.config.node.health_interval else {
        return;
    };
    let every = (interval / 4).max(router.config.refresh_min_interval);
    loop {
        router.silence.wait(|| router.closed.get()).await;
        loop {
            if router.closed.get() {
                return;
            }
            let silent = router.silent_nodes();
            if silent.is_empty() {
                break;
            }
            tracing::debug!(?silent, "checking the topology: nodes are silent");
            router.request_refresh();
            glommio::timer::sleep(every).await;
        }
    }
}
