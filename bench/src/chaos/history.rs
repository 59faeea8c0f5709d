//! The chaos run's history: every request the load makes and every answer it gets, and every
//! Server-Sent Event a client receives, as JSON lines in a file and in memory for the checker.
//!
//! One record per line: `t` (milliseconds since the run started), `client`, `op`, and what the op
//! carries (`key`, `status`, `id`, `seq`, `room`, `event`, `cursor`, `error`).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

/// The shared history: cheap to clone.
#[derive(Clone)]
pub(crate) struct History {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

struct Inner {
    file: std::io::BufWriter<std::fs::File>,
    records: Vec<Value>,
}

impl History {
    /// A history written to `path` (created or truncated).
    pub(crate) fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                file,
                records: Vec::new(),
            })),
            start: Instant::now(),
        })
    }

    /// Milliseconds since the run started.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Appends one record; `fields` is a JSON object to which `t`, `client` and `op` are added.
    pub(crate) fn record(&self, client: &str, op: &str, mut fields: Value) {
        if let Value::Object(map) = &mut fields {
            map.insert("t".into(), json!(self.now()));
            map.insert("client".into(), json!(client));
            map.insert("op".into(), json!(op));
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = serde_json::to_writer(&mut inner.file, &fields);
        let _ = inner.file.write_all(b"\n");
        inner.records.push(fields);
    }

    /// Flushes the file and returns every record so far.
    pub(crate) fn records(&self) -> Vec<Value> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = inner.file.flush();
        inner.records.clone()
    }
}
