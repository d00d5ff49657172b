//! What the two load tools share, so that redcore and its peer are
//! measured by the same code: the process CPU clock ([`cpu`]), latency
//! percentiles ([`latency`]) and, for
//! pub/sub, the payload and its header, the publishers' pacing and
//! counts, the subscribers' loss and latency tracking and the report
//! ([`pubsub`]). `tools/redcore-load` (redcore) and `tools/redis-rs-load`
//! (redis-rs) each bring the client side.

pub mod cpu;
pub mod latency;

/// Pub/sub load: what both tools count and report the same way.
pub mod pubsub {
    pub mod hub;
    pub mod message;
    pub mod report;
}
