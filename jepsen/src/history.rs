//! The operation history, in Jepsen's shape: every client operation is an `invoke` followed by
//! one completion, `ok` (it happened), `fail` (it certainly did not) or `info` (unknown: a
//! timeout, a broken connection, a 5xx). Times are nanoseconds since the start of the run.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Locks a mutex, shrugging off poisoning: the harness must keep recording and cleaning up.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// A client process number, or `"nemesis"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Named(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: String,
    pub value: serde_json::Value,
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Collects operations from every task; written out once at the end.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Nanoseconds since the start of the run.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        process: Process,
        kind: OpType,
        f: &str,
        value: serde_json::Value,
        node: Option<u64>,
        workload: &str,
        error: Option<String>,
    ) -> u64 {
        let mut ops = lock(&self.ops);
        let time = self.now();
        let index = ops.len() as u64;
        ops.push(Op {
            index,
            process,
            kind,
            f: f.to_owned(),
            value,
            time,
            node,
            workload: Some(workload.to_owned()),
            error,
        });
        time
    }

    pub fn snapshot(&self) -> Vec<Op> {
        lock(&self.ops).clone()
    }
}

pub fn write_jsonl(path: &Path, ops: &[Op]) -> anyhow::Result<()> {
    let f = std::fs::File::create(path)?;
    let mut w = std::io::BufWriter::new(f);
    for op in ops {
        serde_json::to_writer(&mut w, op)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        ops.push(op);
    }
    Ok(ops)
}
