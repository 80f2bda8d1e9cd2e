//! The audit and error log streams (`/v1/log/audit`, `/v1/log/error`).
//!
//! Events are serialized once and fanned out through broadcast channels; a subscriber that falls
//! behind loses the oldest events instead of slowing requests down. The audit stream records
//! every key operation and every policy, identity and membership change, refused attempts
//! included (who, which route and key, policy, identity or node, outcome, latency) and never
//! key material or request bodies: the event holds only the path, the caller's identity and
//! address, and the status.
//!
//! Standard output gets a subset, chosen by `log.audit` the way KES's level filter chooses:
//! KES writes an audit record, at INFO, only when a key is created, imported or deleted. Here
//! the changes of state (key create, import and delete; policy write, assign and delete;
//! identity delete; cluster add and remove) are INFO events and every other operation is a
//! DEBUG event, so `on`/`INFO` (the default) prints the changes, `DEBUG` prints every
//! operation, and `WARN`, `ERROR` and `off` print none. Subscribers of the stream get every
//! event whatever the level.

use kes_config::LogLevel;
use kes_types::to_go_json_line;
use kes_types::wire::{AuditEvent, ErrorEvent};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{Filtered, LevelFilter};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Events buffered per subscriber before the oldest are dropped.
pub const STREAM_BUFFER: usize = 4096;

/// The fan-out point of both log streams.
#[derive(Clone)]
pub struct LogHub {
    audit: broadcast::Sender<Arc<[u8]>>,
    error: broadcast::Sender<Arc<[u8]>>,
    /// Which audit events go to stdout: [`STDOUT_NONE`], [`STDOUT_CHANGES`] or [`STDOUT_ALL`].
    audit_stdout: Arc<AtomicU8>,
}

const STDOUT_NONE: u8 = 0;
const STDOUT_CHANGES: u8 = 1;
const STDOUT_ALL: u8 = 2;

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
            audit_stdout: Arc::new(AtomicU8::new(STDOUT_NONE)),
        }
    }

    /// Which audit events to print on stdout, by `log.audit` (see the module docs): DEBUG
    /// every event, INFO the changes of state, anything above none.
    pub fn set_audit_stdout(&self, level: LogLevel) {
        let v = match level {
            LogLevel::Debug => STDOUT_ALL,
            LogLevel::Info => STDOUT_CHANGES,
            LogLevel::Warn | LogLevel::Error | LogLevel::Off => STDOUT_NONE,
        };
        self.audit_stdout.store(v, Ordering::Relaxed);
    }

    fn audit_to_stdout(&self, change: bool) -> bool {
        let v = self.audit_stdout.load(Ordering::Relaxed);
        v == STDOUT_ALL || (change && v == STDOUT_CHANGES)
    }

    /// Whether an audit event of this kind (`change`: it changes state) goes anywhere. Checked
    /// before the event is built, so an operation nobody listens to costs two atomic loads.
    pub fn wants_audit(&self, change: bool) -> bool {
        self.audit_to_stdout(change) || self.audit.receiver_count() > 0
    }

    /// Publishes an audit event (`change`: it changes state, an INFO event); returns how many
    /// subscribers it reached.
    pub fn audit(&self, event: &AuditEvent, change: bool) -> usize {
        let stdout = self.audit_to_stdout(change);
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
    ///
    /// It carries its own WARN filter: an unfiltered layer is interested in every callsite,
    /// which lifts the subscriber's maximum level to TRACE, and then every TRACE span of h2
    /// (several per HTTP/2 request) was created, entered and closed in the span registry
    /// although nothing recorded it, about a third of the server's CPU under HTTP/2 load.
    pub fn error_layer<S>(&self) -> Filtered<ErrorLayer, LevelFilter, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        ErrorLayer { hub: self.clone() }.with_filter(LevelFilter::WARN)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_takes_changes_at_info_and_everything_at_debug() {
        let hub = LogHub::new();
        let cases = [
            (LogLevel::Debug, true, true),
            (LogLevel::Info, true, false),
            (LogLevel::Warn, false, false),
            (LogLevel::Error, false, false),
            (LogLevel::Off, false, false),
        ];
        for (level, change, other) in cases {
            hub.set_audit_stdout(level);
            assert_eq!(hub.audit_to_stdout(true), change, "{level:?} change");
            assert_eq!(hub.audit_to_stdout(false), other, "{level:?} other");
        }
    }

    #[test]
    fn error_layer_keeps_trace_spans_disabled() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let hub = LogHub::new();
        let mut rx = hub.subscribe_error();
        let info_only = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(LevelFilter::INFO);
        let subscriber = tracing_subscriber::registry()
            .with(info_only)
            .with(hub.error_layer());
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(tracing::Level::TRACE));
            assert!(tracing::span!(tracing::Level::TRACE, "poll").is_disabled());
            tracing::warn!("disk almost full");
            tracing::info!("not for the error stream");
        });
        let line = rx.try_recv();
        assert!(line.is_ok(), "the warning reaches the error stream");
        let line = line.unwrap_or_default();
        assert!(String::from_utf8_lossy(&line).contains("disk almost full"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn subscribers_get_every_event_whatever_the_level() {
        let hub = LogHub::new();
        hub.set_audit_stdout(LogLevel::Off);
        assert!(!hub.wants_audit(false));
        let mut rx = hub.subscribe_audit();
        assert!(hub.wants_audit(false));
        let event = AuditEvent {
            time: kes_types::GoTime::now_utc(),
            request: kes_types::wire::AuditRequest {
                ip: "127.0.0.1".into(),
                path: "/v1/key/generate/k".into(),
                identity: "id".into(),
            },
            response: kes_types::wire::AuditResponse { code: 200, time: 0 },
        };
        assert_eq!(hub.audit(&event, false), 1);
        assert!(rx.try_recv().is_ok());
    }
}
