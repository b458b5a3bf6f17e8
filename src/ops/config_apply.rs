//! Remote management of the configuration file (CONTRACT 4 `config.*`, CONTRACT 6 "Config
//! apply"): one service, two doors. The MQTT edge commands (`config.get`, `config.validate`,
//! `config.set`, `config.confirm`, `log_level`, `restart`) are registered here; the web page's
//! reads (`GET /api/config`, validate, diff) call [`ConfigService`] directly and its writes go
//! through the same edge commands on the command plane.
//!
//! Apply with auto-revert (after OpenWrt LuCI's "apply with rollback"), a state machine on disk:
//! 1. the proposed text is validated with the product's own parser (every error with its YAML
//!    path and, where it can be found, its line in the submitted text) and checked to start
//!    (TLS material loads); nothing is written when it fails;
//! 2. the current file is kept as `<config>.previous`, a pending marker
//!    (`<storage dir>/config-apply/pending.json`, with the deadline) is written and fsynced, then
//!    the new file replaces the old one atomically (temp + fsync + rename + directory fsync);
//! 3. the core restarts in process with the new file (see `app::run_from_file`): the process,
//!    its logging and the web sessions stay;
//! 4. the new core finds the marker: unless the uplink comes back (when it was up at the apply)
//!    and somebody confirms (`config.confirm`, `POST /api/config/confirm`) before the deadline,
//!    the previous file is restored and the core restarts into it by itself. A new core that
//!    cannot start at all is reverted at once. A marker found at a start after its deadline (the
//!    process was killed meanwhile) is reverted before the core starts.
//!
//! The pure parts (line mapping, diff, the decisions against an injected time) are functions
//! with unit tests; [`ConfigService`] is the thin I/O shell around them.
//!
//! Owns: the config file's writes, `.previous`, the pending marker and the last result. Must not:
//! interpret the configuration (that is `crate::config`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::command::{CommandPlane, Outcome};
use crate::config::{Config, FileCheck};
use crate::metrics::Metrics;
use crate::time::{now_ms, rfc3339_ms};

/// Largest configuration text accepted (the example with every section is about 10 KiB).
pub const MAX_CONFIG_BYTES: usize = 128 * 1024;
/// Suffix of the kept previous file beside the configuration.
pub const PREVIOUS_SUFFIX: &str = ".previous";
/// How often the pending apply's watcher looks at the uplink and the clock.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Between recording a restarting command's result and stopping the core.
const RESTART_GRACE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------------------

/// One validation error of a proposed configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatedError {
    /// The YAML path (`uplink.url`), empty for the whole document.
    pub path: String,
    pub message: String,
    /// 1-based line in the submitted text where the path (or its nearest parent) is written.
    pub line: Option<usize>,
}

impl std::fmt::Display for LocatedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Parses and validates `text` with the product's configuration code; every error carries its
/// line where one can be found.
pub fn validate_text(text: &str, files: FileCheck) -> Result<Config, Vec<LocatedError>> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(vec![LocatedError {
            path: String::new(),
            message: format!(
                "the configuration is {} bytes, more than {MAX_CONFIG_BYTES}",
                text.len()
            ),
            line: None,
        }]);
    }
    Config::parse(text, files).map_err(|errors| {
        // A syntax error has no path; the YAML parser knows its line.
        let syntax_line = serde_yaml::from_str::<serde_yaml::Value>(text)
            .err()
            .and_then(|e| e.location())
            .map(|l| l.line());
        errors
            .0
            .into_iter()
            .map(|e| {
                let line = if e.path.is_empty() {
                    syntax_line
                } else {
                    locate(text, &e.path)
                };
                LocatedError {
                    path: e.path,
                    message: e.message,
                    line,
                }
            })
            .collect()
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `readers.devices[0].id` -> [Key(readers), Key(devices), Index(0), Key(id)].
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key.to_string()));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(n) = rest[1..close].parse() {
                out.push(Segment::Index(n));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// One line of block YAML as the locator sees it.
struct Line<'a> {
    /// Column of the first character after indentation and any `- ` item markers.
    column: usize,
    /// Column of the first `- ` marker, when the line starts a sequence item.
    dash: Option<usize>,
    /// The mapping key the line starts with, quotes removed.
    key: Option<&'a str>,
    /// Whether anything follows `key:` on the line (an inline value or a flow collection).
    inline_value: bool,
    /// Blank or comment only.
    empty: bool,
}

fn scan(line: &str) -> Line<'_> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let mut rest = &line[indent..];
    let mut column = indent;
    let mut dash = None;
    while rest == "-" || rest.starts_with("- ") {
        dash.get_or_insert(column);
        let after = rest[1..].trim_start_matches(' ');
        column += rest.len() - after.len();
        rest = after;
    }
    let empty = rest.is_empty() && dash.is_none() || rest.starts_with('#');
    let (key, inline_value) = match key_of(rest) {
        Some((k, after)) => {
            let after = after.trim();
            (Some(k), !after.is_empty() && !after.starts_with('#'))
        }
        None => (None, !rest.is_empty()),
    };
    Line {
        column,
        dash,
        key,
        inline_value,
        empty,
    }
}

/// The key of `key: value`, `"key": value` or `'key': value`, and what follows the colon.
fn key_of(s: &str) -> Option<(&str, &str)> {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q) {
            let end = inner.find(q)?;
            let after = inner[end + 1..].strip_prefix(':')?;
            return (after.is_empty() || after.starts_with(' ')).then_some((&inner[..end], after));
        }
    }
    if s.starts_with(['{', '[', '#', '&', '*', '!', '|', '>']) {
        return None;
    }
    let mut search = 0;
    while let Some(i) = s[search..].find(':') {
        let at = search + i;
        let after = &s[at + 1..];
        if after.is_empty() || after.starts_with(' ') {
            return Some((s[..at].trim_end(), after));
        }
        search = at + 1;
    }
    None
}

/// The 1-based line of `path` in block-style YAML `text`; the nearest parent's line when the
/// path itself is not written (a missing key, or a value inside a flow collection `{a: b}`).
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<Line<'_>> = text.lines().map(scan).collect();
    let mut best = None;
    // The block being searched: lines lo..hi, whose entries sit right of `parent`.
    let (mut lo, mut hi, mut parent): (usize, usize, Option<usize>) = (0, lines.len(), None);
    // A sequence item's first key sits on the item's own line.
    let mut item_line: Option<usize> = None;
    for seg in segments(path) {
        match seg {
            Segment::Key(k) => {
                let inside = |l: &Line<'_>| !l.empty && parent.is_none_or(|p| l.column > p);
                let level = (lo..hi).filter(|&i| inside(&lines[i])).map(|i| lines[i].column).min();
                let level = match item_line {
                    Some(i) => Some(lines[i].column),
                    None => level,
                };
                let Some(level) = level else { return best };
                let found = (lo..hi).find(|&i| {
                    let l = &lines[i];
                    !l.empty && l.column == level && l.key == Some(k.as_str())
                });
                let Some(i) = found else { return best };
                best = Some(i + 1);
                if lines[i].inline_value {
                    // `edge: {id: a}` or `id: a`: whatever is deeper is on this line.
                    return best;
                }
                item_line = None;
                let column = lines[i].column;
                // The block ends at the next line at or left of the key (a sequence item at the
                // key's own column, `devices:\n- id: a`, has its content right of it).
                let end = (i + 1..hi)
                    .find(|&j| !lines[j].empty && lines[j].column <= column)
                    .unwrap_or(hi);
                (lo, hi, parent) = (i + 1, end, Some(column));
            }
            Segment::Index(n) => {
                let dash_level = (lo..hi).filter_map(|i| lines[i].dash).min();
                let Some(dash_level) = dash_level else { return best };
                let items: Vec<usize> = (lo..hi).filter(|&i| lines[i].dash == Some(dash_level)).collect();
                let Some(&i) = items.get(n) else { return best };
                best = Some(i + 1);
                let end = items.get(n + 1).copied().unwrap_or(hi);
                let l = &lines[i];
                if l.key.is_none() && l.inline_value {
                    // `- {id: a}` or `- text`.
                    return best;
                }
                if l.key.is_some() {
                    item_line = Some(i);
                    (lo, hi, parent) = (i, end, Some(dash_level));
                } else {
                    (lo, hi, parent) = (i + 1, end, Some(dash_level));
                }
            }
        }
    }
    best
}

/// A line diff of the current file against a proposed text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub changed: bool,
    pub added: usize,
    pub removed: usize,
    /// Unified diff with three lines of context (empty when unchanged).
    pub unified: String,
}

/// Diffs `current` against `proposed` by lines.
pub fn diff(current: &str, proposed: &str) -> Diff {
    let d = similar::TextDiff::from_lines(current, proposed);
    let (mut added, mut removed) = (0, 0);
    for change in d.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => added += 1,
            similar::ChangeTag::Delete => removed += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    let changed = added + removed > 0;
    let unified = if changed {
        d.unified_diff()
            .context_radius(3)
            .header("current", "proposed")
            .to_string()
    } else {
        String::new()
    };
    Diff {
        changed,
        added,
        removed,
        unified,
    }
}

/// The pending marker: an applied configuration waiting for its confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The command that applied it.
    pub request_id: String,
    pub applied_ms: i64,
    /// Unconfirmed by then, the previous file is restored.
    pub deadline_ms: i64,
    /// The uplink was connected when the change was applied: it must come back (a PUBACK with
    /// the new file) before a confirmation counts. An edge that was offline anyway may still be
    /// changed (e.g. to correct the broker's address) and confirmed from the page.
    pub uplink_required: bool,
}

/// How an apply ended, kept for `config.get` and the page ("reverted" must be visible).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastResult {
    /// `confirmed` or `reverted`.
    pub state: String,
    pub request_id: String,
    pub at_ms: i64,
    pub reason: String,
}

/// What to do with a pending marker found when the core starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// No apply is pending.
    Nothing,
    /// Wait for the confirmation for this much longer.
    Wait(Duration),
    /// The deadline passed while the appliance was not running: restore the previous file.
    Revert(String),
}

/// The decision at a start, at time `now_ms`.
pub fn decide_at_start(pending: Option<&Pending>, now_ms: i64) -> StartDecision {
    match pending {
        None => StartDecision::Nothing,
        Some(p) if now_ms >= p.deadline_ms => StartDecision::Revert(format!(
            "not confirmed by its deadline {} (the appliance was not running then)",
            rfc3339_ms(p.deadline_ms)
        )),
        Some(p) => StartDecision::Wait(Duration::from_millis((p.deadline_ms - now_ms) as u64)),
    }
}

/// What the watcher does at time `now_ms` while `pending` waits (`uplink_back`: a PUBACK with
/// the new configuration was seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchDecision {
    Wait,
    Revert(String),
}

/// The watcher's decision.
pub fn decide_while_pending(pending: &Pending, now_ms: i64, uplink_back: bool) -> WatchDecision {
    if now_ms < pending.deadline_ms {
        return WatchDecision::Wait;
    }
    let within = Duration::from_millis((pending.deadline_ms - pending.applied_ms).max(0) as u64);
    if pending.uplink_required && !uplink_back {
        WatchDecision::Revert(format!(
            "the uplink did not come back within {}s with the new configuration",
            within.as_secs()
        ))
    } else {
        WatchDecision::Revert(format!("nobody confirmed within {}s", within.as_secs()))
    }
}

/// Whether a confirmation counts now.
pub fn check_confirm(pending: Option<&Pending>, now_ms: i64, uplink_back: bool) -> Result<(), String> {
    let Some(p) = pending else {
        return Err("no configuration apply is waiting for confirmation".into());
    };
    if now_ms >= p.deadline_ms {
        return Err("too late: the deadline has passed and the previous configuration is being restored".into());
    }
    if p.uplink_required && !uplink_back {
        return Err(
            "the uplink has not come back with the new configuration yet (no PUBACK from the broker); \
             confirming now would keep an edge the cloud cannot reach: fix the configuration or let it revert"
                .into(),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Where the state of an apply lives for a configuration whose store is at `storage_path`.
pub fn state_dir_for(storage_path: &Path) -> PathBuf {
    storage_path
        .parent()
        .map(|d| d.join("config-apply"))
        .unwrap_or_else(|| PathBuf::from("config-apply"))
}

fn state_dir_of_text(text: &str) -> Option<PathBuf> {
    Config::parse(text, FileCheck::Skip)
        .ok()
        .map(|c| state_dir_for(&c.storage.path))
}

fn pending_path(state_dir: &Path) -> PathBuf {
    state_dir.join("pending.json")
}

fn last_path(state_dir: &Path) -> PathBuf {
    state_dir.join("last.json")
}

/// `<config>.previous`.
pub fn previous_path(config_path: &Path) -> PathBuf {
    let mut name = config_path.file_name().unwrap_or_default().to_os_string();
    name.push(PREVIOUS_SUFFIX);
    config_path.with_file_name(name)
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // A configuration that is a symlink (e.g. into a data partition) stays one: its target is
    // replaced.
    let resolved = std::fs::canonicalize(path).ok();
    let path = resolved.as_deref().unwrap_or(path);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    // The new file keeps the old one's permissions (it holds password hashes).
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

fn read_pending(state_dir: &Path) -> Option<Pending> {
    let bytes = std::fs::read(pending_path(state_dir)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            // Torn or foreign: keep the file for a look, act as if the apply was not confirmed.
            tracing::error!("config apply: unreadable pending marker ({e}); treating it as expired");
            Some(Pending {
                request_id: String::new(),
                applied_ms: 0,
                deadline_ms: 0,
                uplink_required: false,
            })
        }
    }
}

fn remove_pending(state_dir: &Path) {
    let path = pending_path(state_dir);
    if std::fs::remove_file(&path).is_ok() {
        sync_dir(&path);
    }
}

fn write_last(state_dir: &Path, last: &LastResult) {
    let _ = std::fs::create_dir_all(state_dir);
    if let Err(e) = write_atomic(&last_path(state_dir), &serde_json::to_vec(last).unwrap_or_default()) {
        tracing::warn!("config apply: cannot keep the last result: {e}");
    }
}

fn read_last(state_dir: &Path) -> Option<LastResult> {
    serde_json::from_slice(&std::fs::read(last_path(state_dir)).ok()?).ok()
}

/// Restores `<config>.previous` over the configuration and records why. The marker lives in the
/// state directory of the configuration being reverted (`state_dir`).
fn revert(config_path: &Path, state_dir: &Path, pending: &Pending, reason: &str) -> Result<(), String> {
    let previous = previous_path(config_path);
    let text = std::fs::read(&previous).map_err(|e| format!("cannot read {}: {e}", previous.display()))?;
    write_atomic(config_path, &text).map_err(|e| format!("cannot restore {}: {e}", config_path.display()))?;
    remove_pending(state_dir);
    let last = LastResult {
        state: "reverted".into(),
        request_id: pending.request_id.clone(),
        at_ms: now_ms(),
        reason: reason.to_string(),
    };
    // Told where the restored configuration keeps its state (its store may live elsewhere).
    let restored_dir = state_dir_of_text(&String::from_utf8_lossy(&text)).unwrap_or_else(|| state_dir.to_path_buf());
    write_last(&restored_dir, &last);
    if restored_dir != state_dir {
        write_last(state_dir, &last);
    }
    tracing::warn!(request_id = %pending.request_id, "config apply: reverted to the previous configuration: {reason}");
    Ok(())
}

/// At a start of the core, before the configuration is loaded: a pending apply whose deadline
/// passed while the appliance was not running is reverted. Returns whether it reverted.
pub fn recover_at_start(config_path: &Path, now_ms: i64) -> bool {
    let Ok(text) = std::fs::read_to_string(config_path) else {
        return false;
    };
    let Some(dir) = state_dir_of_text(&text) else {
        return false;
    };
    let pending = read_pending(&dir);
    match decide_at_start(pending.as_ref(), now_ms) {
        StartDecision::Revert(reason) => match pending.as_ref().map(|p| revert(config_path, &dir, p, &reason)) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::error!("config apply: {e}");
                false
            }
            None => false,
        },
        _ => false,
    }
}

/// When the core with the configuration at `config_path` could not start: reverts a pending
/// apply at once. Returns whether it reverted (then the caller starts again).
pub fn revert_failed_start(config_path: &Path, why: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(config_path) else {
        return false;
    };
    let Some(dir) = state_dir_of_text(&text) else {
        return false;
    };
    let Some(pending) = read_pending(&dir) else {
        return false;
    };
    match revert(
        config_path,
        &dir,
        &pending,
        &format!("the new configuration could not start: {why}"),
    ) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("config apply: {e}");
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

/// Errors of the service's writes, shown as a command's `rejected` reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("this appliance was started without a configuration file: nothing to manage")]
    NoFile,
    #[error("busy: {0}; try again when it has ended")]
    Busy(String),
    #[error("another configuration apply (request `{0}`) is waiting for confirmation for {1}s more: confirm it or let it revert first")]
    Pending(String, u64),
    #[error("invalid configuration, nothing was changed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<LocatedError>),
    #[error("the configuration is valid but cannot start, nothing was changed: {0}")]
    CannotStart(String),
    #[error("the proposed configuration is the same as the current file: nothing to apply")]
    Unchanged,
    #[error("{0}")]
    Io(String),
}

struct Wiring {
    plane: Arc<CommandPlane>,
    metrics: Arc<Metrics>,
    ota: Arc<crate::ops::ota::OtaService>,
}

/// The configuration service of one run of the core; shared as `Arc<ConfigService>`.
pub struct ConfigService {
    /// The file the core was started from (`None`: started from a [`Config`] in memory).
    path: Option<PathBuf>,
    /// Where this run's configuration keeps the apply's state.
    state_dir: PathBuf,
    confirm_within: Duration,
    /// Cancelled to restart the core with the file on disk.
    reload: CancellationToken,
    /// One write at a time.
    writing: tokio::sync::Mutex<()>,
    /// Set once a restart was asked for: later writes are refused.
    stopping: AtomicBool,
    /// A PUBACK with this run's configuration was seen (the uplink came back).
    uplink_back: AtomicBool,
    /// PUBACKs counted when this run's core was wired (before its uplink started).
    pubacks_at_start: std::sync::atomic::AtomicU64,
    wiring: Mutex<Option<Wiring>>,
}

impl ConfigService {
    /// The service for a core started with `config`, read from `path` when there is one.
    pub fn new(config: &Config, path: Option<PathBuf>) -> Arc<ConfigService> {
        Arc::new(ConfigService {
            path,
            state_dir: state_dir_for(&config.storage.path),
            confirm_within: config.confirm_within(),
            reload: CancellationToken::new(),
            writing: tokio::sync::Mutex::new(()),
            stopping: AtomicBool::new(false),
            uplink_back: AtomicBool::new(false),
            pubacks_at_start: std::sync::atomic::AtomicU64::new(0),
            wiring: Mutex::new(None),
        })
    }

    /// Cancelled when the core must restart with the file on disk.
    pub fn reload_token(&self) -> CancellationToken {
        self.reload.clone()
    }

    /// The configuration file, when the core was started from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The pending apply, if any.
    pub fn pending(&self) -> Option<Pending> {
        read_pending(&self.state_dir)
    }

    /// Whether the uplink came back with this run's configuration: connected, and a PUBACK
    /// (the retained status, a record) since the core was wired.
    fn uplink_back(&self) -> bool {
        if self.uplink_back.load(Ordering::SeqCst) {
            return true;
        }
        let back = self
            .wiring(|w| {
                w.metrics.uplink.connected.load(Ordering::Relaxed) == 1
                    && w.metrics.uplink.pubacks_total.load(Ordering::Relaxed)
                        > self.pubacks_at_start.load(Ordering::Relaxed)
            })
            .unwrap_or(false);
        if back && !self.uplink_back.swap(true, Ordering::SeqCst) {
            tracing::info!("config apply: the uplink came back with the new configuration");
        }
        back
    }

    fn wiring<T>(&self, f: impl FnOnce(&Wiring) -> T) -> Option<T> {
        self.wiring.lock().ok()?.as_ref().map(f)
    }

    /// The file's text, the pending apply with its seconds left, and how the last apply ended.
    pub fn get(&self) -> Result<Value, ApplyError> {
        let path = self.path.as_ref().ok_or(ApplyError::NoFile)?;
        let yaml = std::fs::read_to_string(path)
            .map_err(|e| ApplyError::Io(format!("cannot read {}: {e}", path.display())))?;
        let now = now_ms();
        let pending = self.pending().map(|p| {
            json!({
                "request_id": p.request_id,
                "applied_at": rfc3339_ms(p.applied_ms),
                "deadline": rfc3339_ms(p.deadline_ms),
                "seconds_left": ((p.deadline_ms - now).max(0) + 999) / 1000,
                "uplink_required": p.uplink_required,
                "uplink_back": self.uplink_back(),
            })
        });
        let last = read_last(&self.state_dir).map(
            |l| json!({"state": l.state, "request_id": l.request_id, "at": rfc3339_ms(l.at_ms), "reason": l.reason}),
        );
        Ok(json!({
            "path": path.display().to_string(),
            "yaml": yaml,
            "confirm_within_s": self.confirm_within.as_secs(),
            "pending": pending,
            "last": last,
            "log_level": crate::ops::logging::current_level(),
        }))
    }

    /// Validates a proposed text (referenced files must exist on this appliance).
    pub fn validate(&self, yaml: &str) -> Value {
        match validate_text(yaml, FileCheck::Check) {
            Ok(_) => json!({"valid": true, "errors": []}),
            Err(errors) => json!({"valid": false, "errors": errors}),
        }
    }

    /// The line diff of the current file against `yaml`.
    pub fn diff(&self, yaml: &str) -> Result<Diff, ApplyError> {
        let path = self.path.as_ref().ok_or(ApplyError::NoFile)?;
        let current = std::fs::read_to_string(path)
            .map_err(|e| ApplyError::Io(format!("cannot read {}: {e}", path.display())))?;
        Ok(diff(&current, yaml))
    }

    /// Refuses while an update is installed, a restart is under way or an apply is pending.
    fn check_idle(&self) -> Result<(), ApplyError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ApplyError::Busy("the appliance is restarting".into()));
        }
        if let Some(why) = self.wiring(|w| w.ota.busy_reason()).flatten() {
            return Err(ApplyError::Busy(why));
        }
        if let Some(p) = self.pending() {
            let left = ((p.deadline_ms - now_ms()).max(0) as u64).div_ceil(1000);
            return Err(ApplyError::Pending(p.request_id, left));
        }
        Ok(())
    }

    /// Validates and writes `yaml` with its pending marker; the caller then records the result
    /// and calls [`ConfigService::restart_core`]. Nothing is written when it fails.
    pub async fn apply(&self, yaml: &str, request_id: &str) -> Result<Value, ApplyError> {
        let path = self.path.clone().ok_or(ApplyError::NoFile)?;
        let Ok(_writing) = self.writing.try_lock() else {
            return Err(ApplyError::Busy("another configuration change is being written".into()));
        };
        self.check_idle()?;
        let proposed = validate_text(yaml, FileCheck::Check).map_err(ApplyError::Invalid)?;
        can_start(&proposed).map_err(ApplyError::CannotStart)?;
        let current =
            std::fs::read(&path).map_err(|e| ApplyError::Io(format!("cannot read {}: {e}", path.display())))?;
        if current == yaml.as_bytes() {
            return Err(ApplyError::Unchanged);
        }
        let connected = self
            .wiring(|w| w.metrics.uplink.connected.load(Ordering::Relaxed) == 1)
            .unwrap_or(false);
        let applied_ms = now_ms();
        let pending = Pending {
            request_id: request_id.to_string(),
            applied_ms,
            // The confirmation time in force when the change is made: a new file cannot
            // lengthen its own trial.
            deadline_ms: applied_ms + self.confirm_within.as_millis() as i64,
            uplink_required: connected,
        };
        let io = |what: &str, p: &Path| {
            let what = what.to_string();
            let p = p.display().to_string();
            move |e: std::io::Error| ApplyError::Io(format!("{what} {p}: {e}"))
        };
        let previous = previous_path(&path);
        write_atomic(&previous, &current).map_err(io("cannot keep the previous file as", &previous))?;
        // The marker goes where the new configuration's core will look for it.
        let new_dir = state_dir_for(&proposed.storage.path);
        std::fs::create_dir_all(&new_dir).map_err(io("cannot create", &new_dir))?;
        let marker = pending_path(&new_dir);
        write_atomic(&marker, &serde_json::to_vec(&pending).unwrap_or_default())
            .map_err(io("cannot write the pending marker", &marker))?;
        if let Err(e) = write_atomic(&path, yaml.as_bytes()) {
            remove_pending(&new_dir);
            return Err(io("cannot write", &path)(e));
        }
        let d = diff(&String::from_utf8_lossy(&current), yaml);
        tracing::warn!(
            request_id,
            added = d.added,
            removed = d.removed,
            "config apply: new configuration written; restarting the core with it"
        );
        Ok(json!({
            "applied": true,
            "path": path.display().to_string(),
            "previous": previous.display().to_string(),
            "deadline": rfc3339_ms(pending.deadline_ms),
            "confirm_within_s": self.confirm_within.as_secs(),
            "uplink_required": pending.uplink_required,
            "added": d.added,
            "removed": d.removed,
            "next": "the core restarts with the new configuration; confirm with config.confirm (or on the page) before the deadline, else it reverts",
        }))
    }

    /// Confirms the pending apply: the new file stays.
    pub fn confirm(&self, request_id: &str) -> Result<Value, ApplyError> {
        // Not while the watcher is restoring the previous file.
        let Ok(_writing) = self.writing.try_lock() else {
            return Err(ApplyError::Busy("the configuration is being written".into()));
        };
        let pending = self.pending();
        check_confirm(pending.as_ref(), now_ms(), self.uplink_back()).map_err(ApplyError::Io)?;
        let Some(pending) = pending else {
            return Err(ApplyError::Io(
                "no configuration apply is waiting for confirmation".into(),
            ));
        };
        remove_pending(&self.state_dir);
        write_last(
            &self.state_dir,
            &LastResult {
                state: "confirmed".into(),
                request_id: pending.request_id.clone(),
                at_ms: now_ms(),
                reason: format!("confirmed by request `{request_id}`"),
            },
        );
        tracing::info!(request_id, applied_by = %pending.request_id, "config apply: confirmed");
        Ok(json!({"confirmed": true, "applied_by": pending.request_id}))
    }

    /// Checks that a restart may happen now (no update, no pending apply).
    pub fn check_restart(&self) -> Result<(), ApplyError> {
        if self.path.is_none() {
            return Err(ApplyError::NoFile);
        }
        self.check_idle()
    }

    /// Restarts the core (graceful stop, start with the file on disk).
    pub fn restart_core(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.reload.cancel();
    }

    /// Attaches the command plane, metrics and OTA, and registers the edge actions.
    pub fn attach(
        self: &Arc<Self>,
        plane: Arc<CommandPlane>,
        metrics: Arc<Metrics>,
        ota: Arc<crate::ops::ota::OtaService>,
    ) {
        self.pubacks_at_start
            .store(metrics.uplink.pubacks_total.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Ok(mut w) = self.wiring.lock() {
            *w = Some(Wiring {
                plane: plane.clone(),
                metrics,
                ota,
            });
        }
        register_actions(self.clone(), &plane);
    }

    /// Watches a pending apply of this run: remembers the uplink's return, reverts at the
    /// deadline unless confirmed. Runs until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let Some(pending) = self.pending() else { return };
        match decide_at_start(Some(&pending), now_ms()) {
            StartDecision::Wait(left) => tracing::warn!(
                request_id = %pending.request_id,
                "config apply: waiting {}s for the confirmation of the new configuration",
                left.as_secs()
            ),
            StartDecision::Nothing | StartDecision::Revert(_) => {}
        }
        loop {
            let uplink_back = self.uplink_back();
            // Confirmed (or reverted by another door) meanwhile.
            let Some(pending) = self.pending() else { return };
            if let WatchDecision::Revert(reason) = decide_while_pending(&pending, now_ms(), uplink_back) {
                let Ok(_writing) = self.writing.try_lock() else {
                    tokio::time::sleep(WATCH_EVERY).await;
                    continue;
                };
                if let Some(path) = &self.path {
                    match revert(path, &self.state_dir, &pending, &reason) {
                        Ok(()) => self.restart_core(),
                        Err(e) => tracing::error!("config apply: cannot revert: {e}"),
                    }
                }
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    }
}

/// What a valid configuration still needs to start: its TLS material must load.
fn can_start(config: &Config) -> Result<(), String> {
    if config.uplink.url.tls {
        let cert_and_key = config
            .uplink
            .cert_file
            .as_deref()
            .zip(config.uplink.key_file.as_deref());
        crate::tls::client_config(config.uplink.ca_file.as_deref(), cert_and_key)
            .map_err(|e| format!("uplink TLS: {e}"))?;
    }
    let servers = [
        (
            "gbt32960.tls",
            config.gbt32960.as_ref().and_then(|g| g.server.tls.as_ref()),
        ),
        ("jt808.tls", config.jt808.as_ref().and_then(|j| j.server.tls.as_ref())),
        ("web.tls", config.web.as_ref().and_then(|w| w.tls.as_ref())),
    ];
    for (name, tls) in servers {
        if let Some(t) = tls {
            crate::tls::server_config(&t.cert_file, &t.key_file, t.client_ca_file.as_deref(), t.allow_plain)
                .map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}

fn text_field(command: &Value, name: &str) -> Result<String, Outcome> {
    command
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Outcome::Rejected(format!("`{name}` (a string) is missing")))
}

fn request_id_of(command: &Value) -> String {
    match command.get("request_id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn rejected(e: ApplyError) -> Outcome {
    Outcome::Rejected(e.to_string())
}

/// Records `outcome` for `request_id` now (before the core stops), then restarts the core. The
/// plane's own recording of the action's return finds it recorded and adds nothing.
async fn finish_then_restart(service: &ConfigService, request_id: &str, outcome: Outcome) -> Outcome {
    let plane = service.wiring(|w| w.plane.clone());
    if let Some(plane) = plane {
        match plane.finish_edge_command(request_id, outcome.clone()).await {
            Ok(_) => {}
            Err(e) => tracing::error!(
                request_id,
                "config apply: cannot record the result before the restart: {e}"
            ),
        }
    }
    // A moment for the web page's answer to leave before its server stops with the core.
    service.stopping.store(true, Ordering::SeqCst);
    let reload = service.reload.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RESTART_GRACE).await;
        reload.cancel();
    });
    outcome
}

/// Registers `config.get`, `config.validate`, `config.diff`, `config.set`, `config.confirm`,
/// `log_level` and `restart`.
pub fn register_actions(service: Arc<ConfigService>, plane: &CommandPlane) {
    let actions = plane.edge_actions();
    let s = service.clone();
    actions.register("config.get", move |_command: Value| {
        let s = s.clone();
        async move { s.get().map(Outcome::Answer).unwrap_or_else(rejected) }
    });
    let s = service.clone();
    actions.register("config.validate", move |command: Value| {
        let s = s.clone();
        async move {
            match text_field(&command, "yaml") {
                Ok(yaml) => Outcome::Answer(s.validate(&yaml)),
                Err(o) => o,
            }
        }
    });
    let s = service.clone();
    actions.register("config.diff", move |command: Value| {
        let s = s.clone();
        async move {
            match text_field(&command, "yaml") {
                Ok(yaml) => s
                    .diff(&yaml)
                    .map(|d| Outcome::Answer(json!(d)))
                    .unwrap_or_else(rejected),
                Err(o) => o,
            }
        }
    });
    let s = service.clone();
    actions.register("config.set", move |command: Value| {
        let s = s.clone();
        async move {
            let yaml = match text_field(&command, "yaml") {
                Ok(y) => y,
                Err(o) => return o,
            };
            let request_id = request_id_of(&command);
            if request_id.is_empty() {
                return Outcome::Rejected(
                    "`request_id` is required: the result is recorded before the core restarts".into(),
                );
            }
            match s.apply(&yaml, &request_id).await {
                Ok(answer) => finish_then_restart(&s, &request_id, Outcome::Answer(answer)).await,
                Err(e) => {
                    s.wiring(|w| {
                        w.metrics.config.refused_total.fetch_add(1, Ordering::Relaxed);
                        if matches!(e, ApplyError::Invalid(_)) {
                            w.metrics.config.invalid_total.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    tracing::warn!(request_id, "config apply refused: {e}");
                    rejected(e)
                }
            }
        }
    });
    let s = service.clone();
    actions.register("config.confirm", move |command: Value| {
        let s = s.clone();
        async move {
            s.confirm(&request_id_of(&command))
                .map(Outcome::Answer)
                .unwrap_or_else(rejected)
        }
    });
    actions.register("log_level", move |command: Value| async move {
        let level = match text_field(&command, "level") {
            Ok(l) => l,
            Err(o) => return o,
        };
        let previous = crate::ops::logging::current_level();
        match crate::ops::logging::set_level(&level) {
            Ok(()) => {
                tracing::info!(level = %level.trim(), previous, "log filter changed at run time");
                Outcome::Answer(json!({
                    "level": level.trim(),
                    "previous": previous,
                    "until": "the next restart or configuration apply (logging.level in the file is unchanged)",
                }))
            }
            Err(e) => Outcome::Rejected(e.to_string()),
        }
    });
    let s = service;
    actions.register("restart", move |command: Value| {
        let s = s.clone();
        async move {
            let request_id = request_id_of(&command);
            if request_id.is_empty() {
                return Outcome::Rejected("`request_id` is required: the result is recorded before the core restarts".into());
            }
            if let Err(e) = s.check_restart() {
                return rejected(e);
            }
            tracing::warn!(request_id, "restart requested: the core stops gracefully and starts again with the file on disk");
            let answer = json!({"restarting": true, "how": "in process: the core stops gracefully and starts again with the configuration file"});
            finish_then_restart(&s, &request_id, Outcome::Answer(answer)).await
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
edge:
  id: cab-1
  site: {name: x, latitude: 1, longitude: 2}
storage:
  path: /tmp/x.db
uplink:
  url: mqtt://127.0.0.1:1883
  # a comment
  keep_alive: 30s
readers:
  devices:
    - id: north
      tcp: 127.0.0.1:5084
    - {id: south, tcp: 127.0.0.1:5085}
    -
      id: east
      tcp: 127.0.0.1:5086
schedule:
- {name: a, cron: '0 0 3 * * *', job: retention}
- name: b
  cron: '0 0 4 * * *'
  job: retention
";

    #[test]
    fn paths_map_to_the_line_they_are_written_on() {
        for (path, line) in [
            ("edge", 1),
            ("edge.id", 2),
            ("edge.site.latitude", 3),
            ("storage.path", 5),
            ("uplink.url", 7),
            ("uplink.keep_alive", 9),
            ("readers.devices", 11),
            ("readers.devices[0]", 12),
            ("readers.devices[0].id", 12),
            ("readers.devices[0].tcp", 13),
            ("readers.devices[1].id", 14),
            ("readers.devices[2].id", 16),
            ("readers.devices[2].tcp", 17),
            ("schedule[0].cron", 19),
            ("schedule[1].cron", 21),
            ("schedule[1].job", 22),
        ] {
            assert_eq!(locate(DOC, path), Some(line), "{path}");
        }
    }

    #[test]
    fn a_path_not_written_maps_to_its_nearest_parent() {
        assert_eq!(locate(DOC, "uplink.ca_file"), Some(6));
        assert_eq!(locate(DOC, "readers.devices[7].id"), Some(11));
        assert_eq!(locate(DOC, "web.listen"), None);
        // A key must be at the block's own level, not deeper.
        assert_eq!(locate(DOC, "edge.name"), Some(1));
        assert_eq!(locate("a:\n  b:\n    id: 1\n  id: 2\n", "a.id"), Some(4));
    }

    #[test]
    fn validation_errors_carry_path_and_line() {
        let text = "edge:\n  id: 'bad id!'\nstorage: {path: /tmp/x.db}\nuplink:\n  url: mqtt://h:1\n  keep_alive: soon\n  colour: red\n";
        let errors = validate_text(text, FileCheck::Skip).unwrap_err();
        let got: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert!(got.contains(&("edge.id", Some(2))), "{errors:?}");
        assert!(got.contains(&("uplink.colour", Some(7))), "{errors:?}");
        let errors = validate_text(
            "edge: {id: a}\nstorage: {path: /tmp/x.db}\nuplink:\n  url: mqtt://h:1\n  keep_alive: soon\n",
            FileCheck::Skip,
        )
        .unwrap_err();
        assert_eq!(
            (errors[0].path.as_str(), errors[0].line),
            ("uplink.keep_alive", Some(5))
        );
        assert!(
            errors[0].to_string().starts_with("line 5: uplink.keep_alive: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_syntax_error_carries_the_parsers_line() {
        let errors = validate_text("edge:\n  id: a\nuplink: [unclosed\n  url: x\n", FileCheck::Skip).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "");
        assert!(errors[0].line.is_some_and(|l| (3..=5).contains(&l)), "{errors:?}");
    }

    #[test]
    fn an_oversized_text_is_refused_before_parsing() {
        let big = "#".repeat(MAX_CONFIG_BYTES + 1);
        let errors = validate_text(&big, FileCheck::Skip).unwrap_err();
        assert!(errors[0].message.contains("bytes"), "{errors:?}");
    }

    #[test]
    fn the_diff_counts_and_shows_changed_lines() {
        let d = diff("a: 1\nb: 2\nc: 3\n", "a: 1\nb: 20\nc: 3\nd: 4\n");
        assert!(d.changed);
        assert_eq!((d.added, d.removed), (2, 1));
        assert!(d.unified.contains("-b: 2\n"), "{}", d.unified);
        assert!(d.unified.contains("+b: 20\n"), "{}", d.unified);
        assert!(d.unified.contains("+d: 4\n"), "{}", d.unified);
        let same = diff("a: 1\n", "a: 1\n");
        assert!(!same.changed && same.unified.is_empty());
    }

    fn pending(uplink_required: bool) -> Pending {
        Pending {
            request_id: "r".into(),
            applied_ms: 1_000,
            deadline_ms: 6_000,
            uplink_required,
        }
    }

    #[test]
    fn at_start_a_pending_apply_waits_its_remaining_time_or_reverts_when_expired() {
        assert_eq!(decide_at_start(None, 0), StartDecision::Nothing);
        assert_eq!(
            decide_at_start(Some(&pending(true)), 2_500),
            StartDecision::Wait(Duration::from_millis(3_500))
        );
        assert!(matches!(
            decide_at_start(Some(&pending(true)), 6_000),
            StartDecision::Revert(_)
        ));
    }

    #[test]
    fn the_watcher_reverts_at_the_deadline_saying_why() {
        assert_eq!(decide_while_pending(&pending(true), 5_999, false), WatchDecision::Wait);
        let WatchDecision::Revert(why) = decide_while_pending(&pending(true), 6_000, false) else {
            panic!("no revert")
        };
        assert!(why.contains("uplink did not come back within 5s"), "{why}");
        let WatchDecision::Revert(why) = decide_while_pending(&pending(true), 6_000, true) else {
            panic!("no revert")
        };
        assert!(why.contains("nobody confirmed"), "{why}");
    }

    #[test]
    fn a_confirmation_counts_only_before_the_deadline_and_after_the_uplink_came_back() {
        assert!(check_confirm(None, 0, true).is_err());
        assert!(check_confirm(Some(&pending(true)), 2_000, false)
            .unwrap_err()
            .contains("uplink"));
        assert!(check_confirm(Some(&pending(true)), 2_000, true).is_ok());
        // An edge that was offline when changed may be confirmed without its uplink.
        assert!(check_confirm(Some(&pending(false)), 2_000, false).is_ok());
        assert!(check_confirm(Some(&pending(false)), 6_000, true)
            .unwrap_err()
            .contains("too late"));
    }

    fn files(dir: &Path) -> (PathBuf, String, String) {
        let db = dir.join("edge.db");
        let old = format!(
            "edge: {{id: cab}}\nstorage: {{path: {}}}\nuplink: {{url: 'mqtt://127.0.0.1:1'}}\n",
            db.display()
        );
        let new = format!("{old}logging: {{level: debug}}\n");
        let path = dir.join("roadedge.yaml");
        std::fs::write(&path, &new).unwrap();
        std::fs::write(previous_path(&path), &old).unwrap();
        (path, old, new)
    }

    #[test]
    fn a_start_after_the_deadline_restores_the_previous_file_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (path, old, new) = files(dir.path());
        let state = state_dir_for(&dir.path().join("edge.db"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(pending_path(&state), serde_json::to_vec(&pending(true)).unwrap()).unwrap();
        // Before the deadline: kept, still pending.
        assert!(!recover_at_start(&path, 5_000));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
        assert!(read_pending(&state).is_some());
        // After it: restored, marker gone, the reason kept.
        assert!(recover_at_start(&path, 6_001));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
        assert!(read_pending(&state).is_none());
        let last = read_last(&state).unwrap();
        assert_eq!(last.state, "reverted");
        assert!(last.reason.contains("not running"), "{}", last.reason);
        // Nothing pending: nothing to do.
        assert!(!recover_at_start(&path, 10_000));
    }

    #[test]
    fn a_new_configuration_that_cannot_start_is_reverted_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (path, old, _) = files(dir.path());
        assert!(!revert_failed_start(&path, "bind failed"), "nothing pending");
        let state = state_dir_for(&dir.path().join("edge.db"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(pending_path(&state), serde_json::to_vec(&pending(true)).unwrap()).unwrap();
        assert!(revert_failed_start(&path, "bind failed"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
        assert!(read_last(&state)
            .unwrap()
            .reason
            .contains("could not start: bind failed"));
    }

    #[test]
    fn an_atomic_write_replaces_the_content_keeps_the_mode_and_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.yaml");
        std::fs::write(&target, "old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("roadedge.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(!dir.path().join("real.yaml.tmp").exists());
    }

    #[test]
    fn a_torn_marker_counts_as_expired() {
        let dir = tempfile::tempdir().unwrap();
        let (path, old, _) = files(dir.path());
        let state = state_dir_for(&dir.path().join("edge.db"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(pending_path(&state), b"{\"request_id\": \"r\", \"appl").unwrap();
        assert!(recover_at_start(&path, 1));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
    }
}
