//! [`ClusterExecutor`]: starting one executor per CPU, the life of each
//! core (join the mesh, get the topology, run the function, drain, close),
//! and the [`ExecutorHandle`] that joins or shuts them down.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use super::core_client::CoreClient;
use super::mesh::{CoreMesh, CoreNumbers, Message};
use super::overdue::OverdueWatch;
use super::remote_client::{ExtCall, RemoteClient, intake};
use crate::cluster::router::Router;
use crate::config::{ClusterConfig, IntoClusterConfig};
use crate::{Cluster, Error};

/// Which core connects to which node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// Each node is owned by one core; other cores reach it through the
    /// owner (the default).
    #[default]
    Sharded,
    /// Every core connects to every node: no cross-core hops, cores ×
    /// nodes connections.
    EveryCore,
}

/// Why a core has no result.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The function panicked on this core.
    #[error("core {core}: the function panicked: {message}")]
    Panicked {
        /// The core, in the order of [`ClusterExecutor::cpus_in_use`].
        core: usize,
        /// The panic message, when it was a string.
        message: String,
    },
    /// The function was still running when the shutdown's drain timeout
    /// passed, and was cancelled.
    #[error("core {core}: the function was cancelled at shutdown")]
    Cancelled {
        /// The core.
        core: usize,
    },
    /// The executor of this core failed (it could not start, or its
    /// thread ended abnormally).
    #[error("core {core}: the executor failed: {reason}")]
    Executor {
        /// The core.
        core: usize,
        /// What went wrong.
        reason: String,
    },
}

/// What the spawning thread tells a core.
enum Control {
    /// Every core is ready: run the function.
    Go,
    /// Stop taking work and drain.
    Shutdown,
    /// Every core drained (or start-up failed): close and end.
    Close,
}

/// State the cores and the handles share.
pub(super) struct Hub {
    controls: Vec<async_channel::Sender<Control>>,
    /// Each core's entry for calls from outside the executors.
    pub calls: Vec<async_channel::Sender<ExtCall>>,
    /// The core (in `cpus` order) of each mesh peer.
    cores: Arc<CoreNumbers>,
    users_running: AtomicUsize,
    drained: AtomicUsize,
    /// A shutdown started: new calls are refused.
    pub shutdown_started: AtomicBool,
    /// The configured call timeout.
    pub timeout: Duration,
    /// The core the next outside call enters (taken modulo the cores).
    pub next: AtomicUsize,
    /// Answers outside calls their core did not answer by their deadline.
    pub overdue: Arc<OverdueWatch>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.overdue.close();
    }
}

impl Hub {
    /// How many cores the runtime has.
    pub fn cores(&self) -> usize {
        self.controls.len()
    }

    fn send_all(&self, what: impl Fn() -> Control) {
        for c in &self.controls {
            let _ = c.try_send(what());
        }
    }

    fn shutdown(&self) {
        if !self.shutdown_started.swap(true, Ordering::AcqRel) {
            self.send_all(|| Control::Shutdown);
        }
    }

    fn user_finished(&self) {
        if self.users_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shutdown();
        }
    }

    fn core_drained(&self) {
        if self.drained.fetch_add(1, Ordering::AcqRel) + 1 == self.controls.len() {
            self.send_all(|| Control::Close);
        }
    }
}

/// Builds and starts the per-core runtime.
/// [`spawn_per_core`](Self::spawn_per_core) uses the defaults: every
/// online CPU, sharded ownership.
#[derive(Debug, Clone)]
pub struct ClusterExecutor {
    config: ClusterConfig,
    cpus: Vec<usize>,
    ownership: Ownership,
    io_memory: usize,
    drain_timeout: Duration,
    channel_capacity: usize,
    spin_before_park: Option<Duration>,
}

impl ClusterExecutor {
    /// A runtime for the cluster `config` describes (a [`ClusterConfig`],
    /// a URI, `"host:port"` or a list of seeds), on every online CPU.
    pub fn new(config: impl IntoClusterConfig) -> Result<ClusterExecutor, Error> {
        let config = config.into_cluster_config()?;
        let cpus = online_cpus()?;
        Ok(ClusterExecutor {
            drain_timeout: config.timeout(),
            config,
            cpus,
            ownership: Ownership::default(),
            io_memory: 64 << 10,
            channel_capacity: 1024,
            spin_before_park: None,
        })
    }

    /// Starts `f` on every online CPU with sharded ownership; see
    /// [`spawn`](Self::spawn).
    pub fn spawn_per_core<T, F, Fut>(
        config: impl IntoClusterConfig,
        f: F,
    ) -> Result<ExecutorHandle<T>, Error>
    where
        T: Send + 'static,
        F: Fn(CoreClient) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
    {
        ClusterExecutor::new(config)?.spawn(f)
    }

    /// Runs on the first `n` online CPUs (more than there are wraps
    /// round, two executors sharing a CPU).
    pub fn cores(mut self, n: usize) -> Result<ClusterExecutor, Error> {
        if n == 0 {
            return Err(invalid("cores", "at least one core is needed".into()));
        }
        let online = online_cpus()?;
        self.cpus = (0..n).map(|i| online[i % online.len()]).collect();
        Ok(self)
    }

    /// Runs one executor pinned to each of these CPUs, in this order.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Result<ClusterExecutor, Error> {
        let cpus: Vec<usize> = cpus.into_iter().collect();
        if cpus.is_empty() {
            return Err(invalid("cpus", "the list is empty".into()));
        }
        let online = online_cpus()?;
        if let Some(c) = cpus.iter().find(|c| !online.contains(c)) {
            return Err(invalid("cpus", format!("CPU {c} is not online")));
        }
        self.cpus = cpus;
        Ok(self)
    }

    /// Who connects to which node ([`Ownership::Sharded`] by default).
    pub fn ownership(mut self, ownership: Ownership) -> ClusterExecutor {
        self.ownership = ownership;
        self
    }

    /// glommio's registered I/O memory per executor (64 KiB by default;
    /// it counts against `RLIMIT_MEMLOCK`, and the sockets do not use it).
    pub fn io_memory(mut self, bytes: usize) -> ClusterExecutor {
        self.io_memory = bytes;
        self
    }

    /// Lets each executor spin this long for new work before it sleeps in
    /// the kernel (glommio's `spin_before_park`; off by default). A reply
    /// that comes back within the spin wakes its caller without a context
    /// switch, which lowers the latency of lone requests (a round trip on
    /// loopback measured 28 µs p50 without, 24.5 µs with 50 µs of spin) at
    /// the price of CPU burnt while idle: for latency-critical services
    /// with a core to spare, not for machines shared with the servers.
    pub fn spin_before_park(mut self, spin: Duration) -> ClusterExecutor {
        self.spin_before_park = (!spin.is_zero()).then_some(spin);
        self
    }

    /// How long a shutdown waits for calls in flight and for the cores'
    /// functions to return (the call timeout by default); a function
    /// still running then is cancelled.
    pub fn drain_timeout(mut self, timeout: Duration) -> ClusterExecutor {
        self.drain_timeout = timeout;
        self
    }

    /// The CPUs the executors run on, one per core, in core order.
    pub fn cpus_in_use(&self) -> &[usize] {
        &self.cpus
    }

    /// Starts one executor per CPU; on each, builds the core's client,
    /// waits until every core has the topology, then runs `f(client)`.
    /// Returns once every core runs; an error if one could not start
    /// (bad CPU, no topology: [`Error::NoTopology`] lists the seeds
    /// tried), after stopping the others.
    pub fn spawn<T, F, Fut>(self, f: F) -> Result<ExecutorHandle<T>, Error>
    where
        T: Send + 'static,
        F: Fn(CoreClient) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.config.validate()?;
        let n = self.cpus.len();
        let (controls, control_rxs): (Vec<_>, Vec<_>) =
            (0..n).map(|_| async_channel::unbounded()).unzip();
        let (calls, call_rxs): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| async_channel::bounded(self.channel_capacity))
            .unzip();
        let hub = Arc::new(Hub {
            controls,
            calls,
            cores: Arc::new(CoreNumbers::new(n)),
            users_running: AtomicUsize::new(n),
            drained: AtomicUsize::new(0),
            shutdown_started: AtomicBool::new(false),
            timeout: self.config.timeout(),
            next: AtomicUsize::new(0),
            overdue: Arc::default(),
        });
        let mesh = (n > 1).then(|| MeshBuilder::<Message, Full>::full(n, self.channel_capacity));
        let f = Arc::new(f);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        let mut failed = None;
        for (core, (control, calls)) in control_rxs.into_iter().zip(call_rxs).enumerate() {
            let start = CoreStart {
                core,
                cpu: self.cpus[core],
                config: self.config.clone(),
                every_core: self.ownership == Ownership::EveryCore,
                mesh: mesh.clone(),
                hub: hub.clone(),
                control,
                calls,
                ready: ready_tx.clone(),
                drain: self.drain_timeout,
                f: f.clone(),
            };
            let mut builder = LocalExecutorBuilder::new(Placement::Fixed(self.cpus[core]))
                .io_memory(self.io_memory);
            if let Some(spin) = self.spin_before_park {
                builder = builder.spin_before_park(spin);
            }
            let spawned = builder
                .name(&format!("redcore-{core}"))
                .spawn(move || run_core(start));
            match spawned {
                Ok(t) => threads.push(Some(t)),
                Err(e) => {
                    failed = Some(Error::Io(Arc::new(std::io::Error::other(format!(
                        "starting the executor on CPU {}: {e}",
                        self.cpus[core]
                    )))));
                    break;
                }
            }
        }
        drop(ready_tx);
        let mut handle = ExecutorHandle {
            hub,
            threads,
            cpus: self.cpus.clone(),
        };
        if failed.is_none() {
            // Discovery is bounded by the call timeout; the margin covers
            // starting threads and joining the mesh.
            let until = Instant::now() + self.config.timeout() + Duration::from_secs(5);
            let mut ready = 0;
            while ready < n {
                let left = until.saturating_duration_since(Instant::now());
                match ready_rx.recv_timeout(left) {
                    Ok((_, Ok(()))) => ready += 1,
                    // The first failure is the cause: the other cores
                    // are still waiting and are called off below.
                    Ok((_, Err(e))) => {
                        failed = Some(e);
                        break;
                    }
                    Err(_) => {
                        failed = Some(Error::Closed(
                            "a core of the executor did not start in time",
                        ));
                        break;
                    }
                }
            }
        }
        match failed {
            None => {
                handle.hub.send_all(|| Control::Go);
                Ok(handle)
            }
            Some(e) => {
                handle.hub.shutdown_started.store(true, Ordering::Release);
                handle.hub.send_all(|| Control::Close);
                drop(handle.join_all());
                Err(e)
            }
        }
    }
}

fn invalid(option: &'static str, reason: String) -> Error {
    Error::InvalidConfig { option, reason }
}

fn online_cpus() -> Result<Vec<usize>, Error> {
    let set = glommio::CpuSet::online().map_err(|e| {
        Error::Io(Arc::new(std::io::Error::other(format!(
            "reading the online CPUs: {e}"
        ))))
    })?;
    let mut cpus: Vec<usize> = set.into_iter().map(|l| l.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The running runtime: join it, shut it down, or reach it from outside.
/// Dropping it without joining starts a shutdown.
pub struct ExecutorHandle<T: Send + 'static> {
    hub: Arc<Hub>,
    threads: Vec<Option<ExecutorJoinHandle<Result<T, CoreError>>>>,
    cpus: Vec<usize>,
}

impl<T: Send + 'static> std::fmt::Debug for ExecutorHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorHandle")
            .field("cpus", &self.cpus)
            .finish()
    }
}

impl<T: Send + 'static> ExecutorHandle<T> {
    /// The CPU of each core.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// A client for code outside the executors.
    pub fn remote(&self) -> RemoteClient {
        RemoteClient::new(self.hub.clone())
    }

    /// Starts a graceful shutdown and returns at once: calls made from now
    /// on fail with [`Error::Closed`], calls in flight finish within the
    /// drain timeout, functions still running then are cancelled.
    pub fn shutdown(&self) {
        self.hub.shutdown();
    }

    /// Waits for every core to end (after its function returned and the
    /// runtime shut down); each core's result, in core order.
    pub fn join(mut self) -> Vec<Result<T, CoreError>> {
        self.join_all()
    }

    /// [`shutdown`](Self::shutdown), then [`join`](Self::join).
    pub fn shutdown_and_join(self) -> Vec<Result<T, CoreError>> {
        self.shutdown();
        self.join()
    }

    fn join_all(&mut self) -> Vec<Result<T, CoreError>> {
        let results = self
            .threads
            .iter_mut()
            .enumerate()
            .filter_map(|(core, t)| Some((core, t.take()?)))
            .map(|(core, t)| match t.join() {
                Ok(result) => result,
                Err(e) => Err(CoreError::Executor {
                    core,
                    reason: e.to_string(),
                }),
            })
            .collect();
        // Every core has ended: no outside call is in flight any more.
        self.hub.overdue.close();
        results
    }
}

impl<T: Send + 'static> Drop for ExecutorHandle<T> {
    fn drop(&mut self) {
        if self.threads.iter().any(Option::is_some) {
            self.hub.shutdown();
        }
    }
}

/// Everything a core needs to start.
struct CoreStart<F> {
    core: usize,
    cpu: usize,
    config: ClusterConfig,
    every_core: bool,
    mesh: Option<MeshBuilder<Message, Full>>,
    hub: Arc<Hub>,
    control: async_channel::Receiver<Control>,
    calls: async_channel::Receiver<ExtCall>,
    ready: std::sync::mpsc::Sender<(usize, Result<(), Error>)>,
    drain: Duration,
    f: Arc<F>,
}

/// The life of one core: join the mesh, get the topology, run the
/// function, drain, close.
async fn run_core<T, F, Fut>(s: CoreStart<F>) -> Result<T, CoreError>
where
    T: Send + 'static,
    F: Fn(CoreClient) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + 'static,
{
    let core = s.core;
    let count = s.hub.controls.len();
    let parts = match s.mesh {
        Some(builder) => match builder.join().await {
            Ok((tx, mut rx)) => {
                let streams = rx.streams();
                Some((tx, streams))
            }
            Err(e) => {
                let e = Error::Io(Arc::new(std::io::Error::other(format!(
                    "joining the channel mesh: {e}"
                ))));
                let _ = s.ready.send((core, Err(e.clone())));
                return Err(CoreError::Executor {
                    core,
                    reason: e.to_string(),
                });
            }
        },
        None => None,
    };
    let peer = parts.as_ref().map_or(0, |(tx, _)| tx.peer_id());
    s.hub.cores.set(peer, core);
    let mesh = Rc::new(CoreMesh::new(
        peer,
        count,
        s.every_core,
        s.hub.cores.clone(),
    ));
    let router = match Router::new(s.config, mesh.clone()) {
        Ok(r) => Rc::new(r),
        Err(e) => {
            let _ = s.ready.send((core, Err(e.clone())));
            return Err(CoreError::Executor {
                core,
                reason: e.to_string(),
            });
        }
    };
    mesh.set_router(&router);
    if let Some(cache) = &router.cache {
        super::caching::relay_through(cache, &mesh);
    }
    if let Some((tx, streams)) = parts {
        mesh.start(tx, streams);
    }

    // The topology: the leader (the mesh's first peer) asks the seeds, the others wait for its news
    // (or for the start-up to be called off).
    let started = if mesh.is_leader() {
        router.discover().await
    } else {
        async {
            router.first_topology().await;
            Ok(())
        }
        .or(async {
            let _ = s.control.recv().await;
            Err(Error::Closed("the executor's start-up was called off"))
        })
        .await
    };
    let _ = s.ready.send((core, started.clone()));
    let go = match started {
        Ok(()) => matches!(s.control.recv().await, Ok(Control::Go)),
        Err(_) => false,
    };
    if !go {
        // Nothing ran: no other core needs this one any more.
        router.close();
        mesh.stop();
        return Err(CoreError::Executor {
            core,
            reason: "the runtime did not start".into(),
        });
    }

    let client = CoreClient {
        cluster: Cluster::started(router),
        mesh: mesh.clone(),
        hub: s.hub.clone(),
        core,
        cpu: s.cpu,
    };
    glommio::spawn_local(intake(client.clone(), s.calls)).detach();
    client.cluster.read_policies_in_background();
    // Tells the other cores this core's function ended and it drained,
    // also when the core's thread dies (a panic in a task the function
    // spawned): their shutdown must not wait for it. glommio does not drop
    // the tasks of an executor whose thread panicked, so the guard lives
    // in a thread-local, whose destructor runs as the thread ends.
    let exit = Rc::new(Exit {
        hub: s.hub.clone(),
        user_running: Cell::new(true),
        draining: Cell::new(true),
    });
    EXIT.with(|e| *e.borrow_mut() = Some(ExitOnThreadEnd(exit.clone())));
    let mut user = Some(glommio::spawn_local(
        AssertUnwindSafe((s.f)(client.clone())).catch_unwind(),
    ));
    let mut result = None;

    // Run until the function returns and a shutdown starts.
    loop {
        enum Event<O> {
            User(O),
            Control(Option<Control>),
        }
        let control = async { Event::Control(s.control.recv().await.ok()) };
        let event = match user.as_mut() {
            Some(task) => async { Event::User(task.await) }.or(control).await,
            None => control.await,
        };
        match event {
            Event::User(out) => {
                user = None;
                result = Some(user_result(core, out));
                exit.user_finished();
            }
            Event::Control(Some(Control::Go)) => {}
            Event::Control(_) => break,
        }
    }

    // Drain: no new calls; calls in flight and the function get the drain
    // timeout to finish.
    mesh.closing.set(true);
    let drained = async {
        let out = match user.as_mut() {
            Some(task) => Some(task.await),
            None => None,
        };
        mesh.idle().await;
        Some(out)
    }
    .or(async {
        glommio::timer::Timer::new(s.drain).await;
        None
    })
    .await;
    if let Some(Some(out)) = drained {
        user = None;
        result = Some(user_result(core, out));
    }
    if user.take().is_some() {
        result = Some(Err(CoreError::Cancelled { core }));
    }
    exit.user_finished();
    exit.drained();
    // Other cores may still be draining through this core's connections.
    wait_for_close(&s.control, s.drain).await;
    client.cluster.close();
    mesh.stop();
    result.unwrap_or(Err(CoreError::Cancelled { core }))
}

/// A core's part in the shutdown, each reported once.
struct Exit {
    hub: Arc<Hub>,
    user_running: Cell<bool>,
    draining: Cell<bool>,
}

impl Exit {
    fn user_finished(&self) {
        if self.user_running.replace(false) {
            self.hub.user_finished();
        }
    }

    fn drained(&self) {
        if self.draining.replace(false) {
            self.hub.core_drained();
        }
    }
}

/// Reports what a core did not, when its thread ends.
struct ExitOnThreadEnd(Rc<Exit>);

impl Drop for ExitOnThreadEnd {
    fn drop(&mut self) {
        self.0.user_finished();
        self.0.drained();
    }
}

thread_local! {
    static EXIT: RefCell<Option<ExitOnThreadEnd>> = const { RefCell::new(None) };
}

/// Waits for the word that every core drained, at most `limit`.
async fn wait_for_close(control: &async_channel::Receiver<Control>, limit: Duration) {
    async {
        while let Ok(c) = control.recv().await {
            if matches!(c, Control::Close) {
                break;
            }
        }
    }
    .or(async {
        glommio::timer::Timer::new(limit).await;
    })
    .await
}

fn user_result<T>(core: usize, out: Result<T, Box<dyn Any + Send>>) -> Result<T, CoreError> {
    out.map_err(|panic| CoreError::Panicked {
        core,
        message: panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
    })
}
