//! The audit and error log streams (`/v1/log/audit`, `/v1/log/error`).
//!
//! Events are serialized once and fanned out through broadcast channels; a subscriber that falls
//! behind loses the oldest events instead of slowing requests down. The audit stream records
//! every key operation and every policy, identity and membership change, refused attempts
//! included (who, which route and key, policy, identity or node, outcome, latency) and never
//! key material or request bodies: the event holds only the path, the caller's identity and
//! address, and the status.

use kes_types::to_go_json_line;
use kes_types::wire::{AuditEvent, ErrorEvent};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Events buffered per subscriber before the oldest are dropped.
pub const STREAM_BUFFER: usize = 4096;

/// The fan-out point of both log streams.
#[derive(Clone)]
pub struct LogHub {
    audit: broadcast::Sender<Arc<[u8]>>,
    error: broadcast::Sender<Arc<[u8]>>,
    audit_stdout: Arc<AtomicBool>,
}

impl Default for LogHub {
    fn default() -> Self {
        Self::new()
    }
}

impl LogHub {
    pub fn new() -> Self {
        Self {
            audit: broadcast::channel(STREAM_BUFFER).0,
            error: broadcast::channel(STREAM_BUFFER).0,
            audit_stdout: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Also print audit events on stdout (KES's `log.audit` level other than `off`).
    pub fn set_audit_stdout(&self, on: bool) {
        self.audit_stdout.store(on, Ordering::Relaxed);
    }

    /// Publishes an audit event; returns how many subscribers it reached.
    pub fn audit(&self, event: &AuditEvent) -> usize {
        let stdout = self.audit_stdout.load(Ordering::Relaxed);
        if !stdout && self.audit.receiver_count() == 0 {
            return 0;
        }
        let line: Arc<[u8]> = to_go_json_line(event).into();
        if stdout {
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(&line);
        }
        self.audit.send(line).unwrap_or(0)
    }

    /// Publishes an error-log line; returns how many subscribers it reached.
    pub fn error(&self, message: String) -> usize {
        if self.error.receiver_count() == 0 {
            return 0;
        }
        let line: Arc<[u8]> = to_go_json_line(&ErrorEvent { message }).into();
        self.error.send(line).unwrap_or(0)
    }

    pub fn subscribe_audit(&self) -> broadcast::Receiver<Arc<[u8]>> {
        self.audit.subscribe()
    }

    pub fn subscribe_error(&self) -> broadcast::Receiver<Arc<[u8]>> {
        self.error.subscribe()
    }

    /// A tracing layer that copies WARN and ERROR events into the error stream.
    pub fn error_layer(&self) -> ErrorLayer {
        ErrorLayer { hub: self.clone() }
    }
}

pub struct ErrorLayer {
    hub: LogHub,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for ErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN || self.hub.error.receiver_count() == 0 {
            return;
        }
        let mut line = Line(format!("{level} "));
        event.record(&mut line);
        self.hub.error(line.0);
    }
}
