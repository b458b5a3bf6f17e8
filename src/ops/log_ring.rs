//! The log ring: the appliance's own recent log events, kept in memory for the web page's Logs
//! view (a technician at the cabinet has no journald access). A `tracing` layer copies every event
//! the global filter lets through into a bounded ring; readers ask for the lines after a sequence
//! number, filtered by level and module, and wait on a watch for new ones (live tail).
//!
//! Owns: the ring and its layer. Must not: grow without bound (lines and line length are capped),
//! block the logging caller (one short mutex, no I/O), or depend on the web server.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept (the oldest is dropped first).
pub const RING_LINES: usize = 2000;
/// Longest message kept per line, in bytes; longer ones are cut and marked.
pub const MAX_LINE_BYTES: usize = 1024;

/// One log event as the page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    /// Increasing per process; the page asks for lines after the last one it has.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: &'static str,
    /// The module that logged it (e.g. `roadedge::reader::link`).
    pub target: String,
    /// The message followed by its fields as `key=value`.
    pub message: String,
}

/// Which lines a reader wants.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only lines at this level or more severe.
    pub min_level: Option<Level>,
    /// Only lines whose target contains this text.
    pub module: Option<String>,
    /// Only lines whose message contains this text (case-insensitive).
    pub text: Option<String>,
}

impl LogFilter {
    fn matches(&self, line: &LogLine) -> bool {
        if let Some(min) = self.min_level {
            if level_of(line.level) > min {
                return false;
            }
        }
        if let Some(m) = &self.module {
            if !line.target.contains(m.as_str()) {
                return false;
            }
        }
        if let Some(t) = &self.text {
            if !line.message.to_lowercase().contains(&t.to_lowercase()) {
                return false;
            }
        }
        true
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn level_of(name: &str) -> Level {
    match name {
        "error" => Level::ERROR,
        "warn" => Level::WARN,
        "info" => Level::INFO,
        "debug" => Level::DEBUG,
        _ => Level::TRACE,
    }
}

/// Parses `error`, `warn`, `info`, `debug`, `trace`.
pub fn parse_level(name: &str) -> Option<Level> {
    match name {
        "error" | "warn" | "info" | "debug" | "trace" => Some(level_of(name)),
        _ => None,
    }
}

/// The bounded ring.
pub struct LogRing {
    lines: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    last_seq: watch::Sender<u64>,
}

impl LogRing {
    pub fn new(capacity: usize) -> LogRing {
        LogRing {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(256))),
            capacity: capacity.max(1),
            last_seq: watch::channel(0).0,
        }
    }

    /// Appends a line, dropping the oldest when full.
    pub fn push(&self, level: &'static str, target: &str, mut message: String) {
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        let Ok(mut lines) = self.lines.lock() else { return };
        let seq = *self.last_seq.borrow() + 1;
        if lines.len() >= self.capacity {
            lines.pop_front();
        }
        lines.push_back(LogLine {
            seq,
            time: crate::time::now_rfc3339(),
            level,
            target: target.to_string(),
            message,
        });
        self.last_seq.send_replace(seq);
    }

    /// Up to `limit` matching lines with `seq > after`, oldest first (the newest `limit` of them).
    pub fn since(&self, after: u64, filter: &LogFilter, limit: usize) -> Vec<LogLine> {
        let Ok(lines) = self.lines.lock() else {
            return Vec::new();
        };
        let mut out: Vec<LogLine> = lines
            .iter()
            .rev()
            .take_while(|l| l.seq > after)
            .filter(|l| filter.matches(l))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The module names seen in the ring (for the page's filter list).
    pub fn modules(&self) -> Vec<String> {
        let Ok(lines) = self.lines.lock() else {
            return Vec::new();
        };
        let mut m: Vec<String> = lines.iter().map(|l| l.target.clone()).collect();
        m.sort();
        m.dedup();
        m
    }

    /// Changes whenever a line is added (its value is the newest `seq`).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }
}

/// The process-wide ring that [`layer`] fills.
pub fn global() -> Arc<LogRing> {
    static RING: OnceLock<Arc<LogRing>> = OnceLock::new();
    RING.get_or_init(|| Arc::new(LogRing::new(RING_LINES))).clone()
}

/// The `tracing` layer that copies events into the global ring.
pub fn layer() -> RingLayer {
    RingLayer { ring: global() }
}

/// See [`layer`].
pub struct RingLayer {
    ring: Arc<LogRing>,
}

struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = MessageVisitor {
            message: String::new(),
            fields: String::new(),
        };
        event.record(&mut visitor);
        visitor.message.push_str(&visitor.fields);
        self.ring.push(level_name(meta.level()), meta.target(), visitor.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_only_the_newest_lines_and_cuts_long_ones() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push("info", "roadedge::x", format!("line {i}"));
        }
        let all = ring.since(0, &LogFilter::default(), 100);
        assert_eq!(
            all.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            ["line 2", "line 3", "line 4"]
        );
        assert_eq!(all[0].seq, 3);
        ring.push("warn", "roadedge::y", "é".repeat(MAX_LINE_BYTES));
        let last = ring.since(5, &LogFilter::default(), 10);
        assert!(last[0].message.len() <= MAX_LINE_BYTES + 6, "{}", last[0].message.len());
        assert!(last[0].message.ends_with("[cut]"));
    }

    #[test]
    fn filters_select_by_level_module_and_text() {
        let ring = LogRing::new(10);
        ring.push("info", "roadedge::reader::link", "reader link up reader=north".into());
        ring.push("warn", "roadedge::gateway::jt808", "corrupt frame".into());
        ring.push("debug", "roadedge::reader::link", "keepalive".into());
        let warn = LogFilter {
            min_level: Some(Level::WARN),
            ..Default::default()
        };
        assert_eq!(ring.since(0, &warn, 10).len(), 1);
        let reader = LogFilter {
            module: Some("reader".into()),
            ..Default::default()
        };
        assert_eq!(ring.since(0, &reader, 10).len(), 2);
        let text = LogFilter {
            text: Some("NORTH".into()),
            ..Default::default()
        };
        assert_eq!(ring.since(0, &text, 10)[0].seq, 1);
        assert_eq!(
            ring.since(0, &LogFilter::default(), 1)[0].seq,
            3,
            "the newest within the limit"
        );
        assert_eq!(ring.modules(), ["roadedge::gateway::jt808", "roadedge::reader::link"]);
    }
}
