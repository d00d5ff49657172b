//! `--verify`: reads every key whose last write was acknowledged back,
//! with a fresh client on a fresh executor, and compares.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};
use redcore::Commands;
use redcore::cluster::Cluster;
use redcore::{Connection, Value};

use crate::Target;
use crate::plan::KeyState;
use crate::report::VerifyReport;
use crate::worker::Shared;

/// Keys read per pipeline.
const CHUNK: usize = 256;
/// Pipelines in flight.
const WORKERS: usize = 4;
/// Problems listed in the report.
const EXAMPLES: usize = 5;

enum Reader {
    Server(Connection),
    Cluster(Cluster),
}

impl Reader {
    async fn get_all(&self, keys: &[Vec<u8>]) -> redcore::Result<Vec<Value>> {
        let cmds = keys.iter().map(|k| [b"GET".as_slice(), k.as_slice()]);
        match self {
            Reader::Server(c) => c.pipeline(cmds).await,
            Reader::Cluster(c) => c.pipeline(cmds).await,
        }
    }
}

/// Checks the plan's write table against the target. An error when the
/// target cannot be reached at all.
pub fn verify(target: &Target, shared: &Arc<Shared>) -> Result<VerifyReport, String> {
    let shared = shared.clone();
    let target = target.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .name("redcore-load-verify")
        .spawn(move || async move { check(&target, shared).await })
        .map_err(|e| format!("starting the verification executor: {e}"))?
        .join()
        .map_err(|e| format!("the verification executor failed: {e}"))?
}

async fn check(target: &Target, shared: Arc<Shared>) -> Result<VerifyReport, String> {
    let plan = &shared.plan;
    let table = plan.verify.as_ref().expect("a write table with --verify");
    let mut report = VerifyReport::default();
    let mut written = Vec::new();
    for key in 0..table.len() {
        match table.state(key) {
            KeyState::Unwritten => {}
            KeyState::Unknown => report.unknown += 1,
            KeyState::Written(id) => written.push((key, id)),
        }
    }
    report.checked = written.len() as u64;
    let connected = match target {
        Target::Server(config) => Connection::connect(config.clone())
            .await
            .map(Reader::Server),
        Target::Cluster(config) => Cluster::connect(config.clone()).await.map(Reader::Cluster),
    };
    let reader = match connected {
        Ok(r) => Rc::new(r),
        Err(e) => {
            report.error = Some(format!("cannot connect to read the keys back: {e}"));
            return Ok(report);
        }
    };
    let written = Rc::new(written);
    let next = Rc::new(Cell::new(0usize));
    let report = Rc::new(RefCell::new(report));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (reader, written, next, report) = (
                reader.clone(),
                written.clone(),
                next.clone(),
                report.clone(),
            );
            let shared = shared.clone();
            glommio::spawn_local(async move {
                let plan = &shared.plan;
                let mut expected = Vec::new();
                loop {
                    let from = next.get();
                    if from >= written.len() {
                        break;
                    }
                    let to = (from + CHUNK).min(written.len());
                    next.set(to);
                    let chunk = &written[from..to];
                    let keys: Vec<Vec<u8>> = chunk
                        .iter()
                        .map(|&(k, _)| {
                            let mut key = Vec::new();
                            plan.key(k, &mut key);
                            key
                        })
                        .collect();
                    let replies = reader.get_all(&keys).await;
                    let mut r = report.borrow_mut();
                    match replies {
                        Err(e) => {
                            r.read_errors += chunk.len() as u64;
                            note(&mut r, format!("reading {} keys failed: {e}", chunk.len()));
                        }
                        Ok(values) => {
                            for ((&(_, id), key), value) in chunk.iter().zip(&keys).zip(values) {
                                plan.verified_value(id, &mut expected);
                                let key = String::from_utf8_lossy(key);
                                match value {
                                    Value::BulkString(b) if b[..] == expected[..] => r.ok += 1,
                                    Value::Nil => {
                                        r.lost += 1;
                                        note(
                                            &mut r,
                                            format!("{key}: missing, expected write {id:x}"),
                                        );
                                    }
                                    Value::Error(e) => {
                                        r.read_errors += 1;
                                        note(&mut r, format!("{key}: {}", e.message_lossy()));
                                    }
                                    other => {
                                        r.wrong += 1;
                                        note(
                                            &mut r,
                                            format!(
                                                "{key}: expected write {id:x}, found {}",
                                                show(&other)
                                            ),
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    match &*reader {
        Reader::Server(c) => c.close(),
        Reader::Cluster(c) => c.close(),
    }
    Ok(Rc::try_unwrap(report)
        .map(RefCell::into_inner)
        .unwrap_or_else(|r| std::mem::take(&mut r.borrow_mut())))
}

fn note(r: &mut VerifyReport, problem: String) {
    if r.examples.len() < EXAMPLES {
        r.examples.push(problem);
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::BulkString(b) | Value::SimpleString(b) => {
            let text = String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned();
            format!("{text:?}{}", if b.len() > 40 { "..." } else { "" })
        }
        other => format!("{other:?}"),
    }
}
