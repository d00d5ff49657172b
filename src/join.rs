//! Waiting on many futures of one task at once, without spawning: the
//! parts of a split call, the subscribe commands of a subscription.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Polls every future to completion, results in order.
pub(crate) async fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    join_until(futs, |_| false)
        .await
        .into_iter()
        .map(|o| o.expect("every future is done"))
        .collect()
}

/// Polls every future until all are done or `enough` says the results so
/// far suffice; results in order, `None` for those not waited for.
pub(crate) async fn join_until<F: Future>(
    futs: impl IntoIterator<Item = F>,
    mut enough: impl FnMut(&[Option<F::Output>]) -> bool,
) -> Vec<Option<F::Output>> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (f, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if !waiting || enough(&outs) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outs
}
