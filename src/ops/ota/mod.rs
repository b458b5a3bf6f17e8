//! OTA for roadedge itself (CONTRACT 7): signed updates, installed through RAUC or by swapping
//! the binary, confirmed by a health gate after the restart or rolled back by themselves.
//!
//! **Doors.** `ota.install {"url"|"path", "sha256"?, "signature"}` and `ota.status` on
//! `edge/{id}/cmd`; the web page uploads a file and its `.sig` into [`OtaService::upload_dir`]
//! and sends the same `ota.install` (with `upload`) through the command plane: one
//! implementation, [`OtaService::install`].
//!
//! **Steps of an install** (each logged; progress in [`OtaService::status`]):
//! 1. *refuse early*: unsigned, busy (one install at a time), OTA not configured;
//! 2. *stage*: the file is downloaded (HTTPS only, resumable, bounded by `ota.max_bytes`, stall
//!    timeout) or copied (a path on the device, an upload) into `<state>/ota/staging/`;
//! 3. *verify*: its SHA-256 against `sha256` (when given: a mismatch means truncated or
//!    corrupted), the ed25519 signature over the digest against `ota.public_key_file`, then its
//!    version (a binary: `<staged> --version`, see [`version`]; a RAUC bundle: `rauc info`),
//!    which must be newer than the running one (an older or equal one is a replay). Nothing
//!    outside the staging area changes before this passed; a refused file is deleted;
//! 4. *install*: the journal (`<state>/ota/journal.json`, the rollback marker) is written first;
//!    binary swap: the running binary is copied to `<binary>.previous`, the new one written to
//!    `<binary>.new` and renamed over `<binary>` (atomic), then the process exits with code 75 so
//!    the service manager starts the new binary. RAUC: `InstallBundle` over D-Bus, then
//!    `ota.reboot_command`;
//! 5. *confirm*: the new version, started, must within `ota.confirm_within` (counted from its
//!    first start, also across crashes and restarts) have its store open and migrated, its
//!    gateways listening (both hold once the appliance is up) and a PUBACK from the broker. Then
//!    it is marked good (journal `confirmed`; RAUC `mark good`; the previous binary stays beside)
//!    and the request's result is published. Otherwise it rolls back by itself (the previous
//!    binary renamed back and exit 75; RAUC `mark bad` + reboot) and the previous version,
//!    started again, raises `update_failed` and publishes the request's failed result.
//!    A new version that does not even get as far as the gate is rolled back at its
//!    [`MAX_BOOTS`]-th start.
//!
//! Exactly one result per install request: refusals answer at once; an installed update's
//! result comes from whichever version decides (through
//! [`crate::command::CommandPlane::finish_edge_command`], once per request id) and the journal
//! remembers that it was reported. A command the broker delivers again after the restart waits
//! for the same decision instead of installing again.
//!
//! kill -9 at any point leaves a working version: before the rename the old binary is in place
//! (the journal says `installing` and the old version cleans up and reports the interruption);
//! after it the new binary is (it confirms or rolls back); a rollback is a rename as well.

pub mod download;
pub mod verify;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::command::{CommandPlane, Outcome};
use crate::config::{OtaConfig, OtaInstaller};
use crate::metrics::Metrics;
use crate::ops::alarms::Alarms;
use crate::time::{now_ms, rfc3339_ms};

/// Exit code of a process that stops so the service manager starts the (new or restored) binary.
pub const RESTART_EXIT_CODE: u8 = 75;
/// A new version is rolled back at its start when this is its start number without confirming.
pub const MAX_BOOTS: u32 = 3;
/// The name of the edge alarm raised when an update was rolled back.
pub const ALARM: &str = "update_failed";

/// Returned by the appliance when it stopped to be restarted into another binary.
#[derive(Debug, thiserror::Error)]
#[error("restarting into the {0} binary")]
pub struct RestartRequired(pub &'static str);

/// Where an update comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Url(String),
    Path(PathBuf),
    /// A file uploaded through the web page (its name in the upload folder).
    Upload(String),
}

/// One `ota.install` request.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub request_id: String,
    pub source: Source,
    pub sha256: Option<String>,
    /// Base64 of the ed25519 signature; `None` for an upload with its `.sig` file.
    pub signature: Option<String>,
}

impl InstallRequest {
    /// Reads the command's fields.
    pub fn from_command(command: &Value) -> Result<InstallRequest, String> {
        let request_id = match command.get("request_id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let text = |k: &str| command.get(k).and_then(Value::as_str).map(str::to_string);
        let sources = [text("url"), text("path"), text("upload")];
        let source = match sources {
            [Some(u), None, None] => Source::Url(u),
            [None, Some(p), None] => Source::Path(PathBuf::from(p)),
            [None, None, Some(n)] => Source::Upload(n),
            [None, None, None] => return Err("ota.install needs `url` (https) or `path` (a file on the device)".into()),
            _ => return Err("ota.install takes one of `url`, `path` or `upload`, not several".into()),
        };
        Ok(InstallRequest {
            request_id,
            source,
            sha256: text("sha256"),
            signature: text("signature"),
        })
    }
}

/// What the service is doing now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// `idle`, `downloading`, `staging`, `verifying`, `installing`, `restarting`,
    /// `confirming`, `rolling_back`, `rebooting`.
    pub phase: String,
    pub request_id: String,
    pub bytes: u64,
    pub total: Option<u64>,
    pub percent: Option<u32>,
    pub message: String,
    pub since: String,
}

/// The install journal: written before anything outside the staging area changes, kept after
/// the end for the status (previous version, last result).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    pub request_id: String,
    /// `binary` or `rauc`.
    pub installer: String,
    pub from_version: String,
    pub to_version: String,
    pub sha256: String,
    pub source: String,
    /// `installing`, `confirming`, `rolling_back`, `rolled_back`, `confirmed`, `failed`.
    pub state: String,
    pub started_ms: i64,
    pub first_boot_ms: Option<i64>,
    pub boots: u32,
    /// RAUC: the slot booted when the install started.
    pub booted_from: Option<String>,
    /// The request's result once decided: `{"ok", "answer"?, "error"?}`.
    pub result: Option<Value>,
    pub reported: bool,
    pub updated_ms: i64,
}

impl Journal {
    fn open(&self) -> bool {
        matches!(self.state.as_str(), "installing" | "confirming" | "rolling_back")
    }

    fn outcome(&self) -> Option<Outcome> {
        let r = self.result.as_ref()?;
        Some(if r["ok"] == true {
            Outcome::Answer(r["answer"].clone())
        } else {
            Outcome::Failed(r["error"].as_str().unwrap_or("the update failed").to_string())
        })
    }
}

/// What the service needs from the configuration.
#[derive(Debug, Clone)]
pub struct OtaSettings {
    pub config: OtaConfig,
    /// `<storage dir>/ota`.
    pub state_dir: PathBuf,
    /// The binary a swap replaces.
    pub binary_path: PathBuf,
}

impl OtaSettings {
    pub fn new(config: &OtaConfig, storage_path: &Path) -> OtaSettings {
        let state_dir = storage_path
            .parent()
            .map(|d| d.join("ota"))
            .unwrap_or_else(|| PathBuf::from("ota"));
        let binary_path = config
            .binary_path
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("/usr/bin/roadedge"));
        OtaSettings {
            config: config.clone(),
            state_dir,
            binary_path,
        }
    }

    fn journal_path(&self) -> PathBuf {
        self.state_dir.join("journal.json")
    }
    fn last_result_path(&self) -> PathBuf {
        self.state_dir.join("last_result.json")
    }
    fn staging(&self) -> PathBuf {
        self.state_dir.join("staging")
    }
    fn uploads(&self) -> PathBuf {
        self.state_dir.join("uploads")
    }
    fn with_suffix(&self, suffix: &str) -> PathBuf {
        let mut name = self.binary_path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.binary_path.with_file_name(name)
    }
    /// The kept binary of the version before the last swap.
    pub fn previous_path(&self) -> PathBuf {
        self.with_suffix(".previous")
    }
    fn new_path(&self) -> PathBuf {
        self.with_suffix(".new")
    }
}

/// What the start-up check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum BootAction {
    /// Go on starting (and, if the journal says so, run the health gate).
    Continue,
    /// A rollback was done at start: exit with [`RESTART_EXIT_CODE`] now.
    Restart,
}

struct Wiring {
    plane: Arc<CommandPlane>,
    alarms: Arc<Alarms>,
    metrics: Arc<Metrics>,
}

/// The OTA service; shared as `Arc<OtaService>`.
pub struct OtaService {
    settings: Option<OtaSettings>,
    current: String,
    progress: Mutex<Progress>,
    /// One install at a time.
    busy: tokio::sync::Mutex<()>,
    journal_lock: Mutex<()>,
    /// Told the decision about the journal's request (for a redelivered command waiting on it).
    decided: tokio::sync::watch::Sender<u64>,
    restart: CancellationToken,
    restart_kind: Mutex<&'static str>,
    wiring: Mutex<Option<Wiring>>,
    /// Answers `ota.install` with busy while the process stops for a restart.
    stopping: std::sync::atomic::AtomicBool,
    /// Another change that must end first (a configuration apply waiting for confirmation).
    refusal: Mutex<Option<Refusal>>,
}

/// Says why an install must wait, or `None`.
type Refusal = Box<dyn Fn() -> Option<String> + Send + Sync>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl OtaService {
    /// The service; `settings` is `None` without an `ota:` section (installs are refused).
    pub fn new(settings: Option<OtaSettings>) -> Arc<OtaService> {
        if let Some(s) = &settings {
            let _ = std::fs::create_dir_all(s.staging());
            let _ = std::fs::create_dir_all(s.uploads());
        }
        Arc::new(OtaService {
            settings,
            current: version::current().to_string(),
            progress: Mutex::new(Progress {
                phase: "idle".into(),
                since: rfc3339_ms(now_ms()),
                ..Progress::default()
            }),
            busy: tokio::sync::Mutex::new(()),
            journal_lock: Mutex::new(()),
            decided: tokio::sync::watch::channel(0).0,
            restart: CancellationToken::new(),
            restart_kind: Mutex::new("new"),
            wiring: Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            refusal: Mutex::new(None),
        })
    }

    /// Installs are refused while `why` says so (e.g. a configuration apply waiting for its
    /// confirmation: an update's restart in the middle of it would mix two trials).
    pub fn refuse_while(&self, why: impl Fn() -> Option<String> + Send + Sync + 'static) {
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(Box::new(why));
        }
    }

    /// Cancelled when the process must stop to be restarted (see [`RestartRequired`]).
    pub fn restart_token(&self) -> CancellationToken {
        self.restart.clone()
    }

    /// Why another change of the appliance (a configuration apply, a restart) must wait now: an
    /// update being installed, awaiting its health gate, or the process stopping for it.
    pub fn busy_reason(&self) -> Option<String> {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Some("the appliance is restarting into another version".into());
        }
        if self.busy.try_lock().is_err() {
            let p = self.progress.lock().map(|p| p.clone()).unwrap_or_default();
            return Some(format!(
                "update request `{}` is being installed ({})",
                p.request_id, p.phase
            ));
        }
        self.journal().filter(Journal::open).map(|j| {
            format!(
                "the update to {} (request `{}`) is still {}",
                j.to_version, j.request_id, j.state
            )
        })
    }

    /// Which binary the restart goes to (`new` or `previous`).
    pub fn restart_kind(&self) -> &'static str {
        self.restart_kind.lock().map(|k| *k).unwrap_or("new")
    }

    /// Where the web page stores uploads (`None` without OTA).
    pub fn upload_dir(&self) -> Option<PathBuf> {
        self.settings.as_ref().map(|s| s.uploads())
    }

    /// Largest update accepted.
    pub fn max_bytes(&self) -> u64 {
        self.settings
            .as_ref()
            .map_or(OtaConfig::DEFAULT_MAX_BYTES, |s| s.config.max_bytes)
    }

    fn set_progress(&self, phase: &str, request_id: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(phase, request_id, "OTA: {message}");
        if let Ok(mut p) = self.progress.lock() {
            *p = Progress {
                phase: phase.into(),
                request_id: request_id.into(),
                bytes: 0,
                total: None,
                percent: None,
                message,
                since: rfc3339_ms(now_ms()),
            };
        }
    }

    fn set_bytes(&self, bytes: u64, total: Option<u64>) {
        if let Ok(mut p) = self.progress.lock() {
            p.bytes = bytes;
            p.total = total;
            p.percent = total.filter(|t| *t > 0).map(|t| ((bytes.min(t) * 100) / t) as u32);
        }
    }

    fn idle(&self, message: impl Into<String>) {
        self.set_progress("idle", "", message);
    }

    // ----- journal -----

    /// The journal, if an install was ever journalled.
    pub fn journal(&self) -> Option<Journal> {
        let s = self.settings.as_ref()?;
        let text = std::fs::read(s.journal_path()).ok()?;
        match serde_json::from_slice(&text) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::warn!("OTA journal unreadable, ignored: {e}");
                None
            }
        }
    }

    fn write_journal(&self, journal: &Journal) -> Result<(), String> {
        let s = self.settings.as_ref().ok_or("OTA is not configured")?;
        let _guard = self.journal_lock.lock().map_err(|_| "journal lock poisoned")?;
        let mut j = journal.clone();
        j.updated_ms = now_ms();
        write_atomic(
            &s.journal_path(),
            &serde_json::to_vec_pretty(&j).map_err(err("journal"))?,
        )
    }

    fn remember_result(&self, request_id: &str, result: &Value) {
        let Some(s) = &self.settings else { return };
        let doc = json!({"request_id": request_id, "at": rfc3339_ms(now_ms()), "result": result});
        if let Err(e) = write_atomic(&s.last_result_path(), doc.to_string().as_bytes()) {
            tracing::warn!("OTA: cannot keep the last result: {e}");
        }
    }

    fn last_result(&self) -> Option<Value> {
        let s = self.settings.as_ref()?;
        serde_json::from_slice(&std::fs::read(s.last_result_path()).ok()?).ok()
    }

    // ----- start-up -----

    /// Runs before the store opens: moves the journal on after a restart, rolls back at start a
    /// new version that keeps failing before its health gate.
    pub fn boot(&self) -> BootAction {
        let Some(s) = &self.settings else {
            return BootAction::Continue;
        };
        let Some(mut j) = self.journal() else {
            clean_dir(&s.staging());
            return BootAction::Continue;
        };
        if !j.open() {
            clean_dir(&s.staging());
            return BootAction::Continue;
        }
        if j.installer == "rauc" {
            // Decided once RAUC can be asked which slot booted (`after_start`).
            return BootAction::Continue;
        }
        let running_new = self.current == j.to_version;
        match (j.state.as_str(), running_new) {
            ("installing", false) => {
                // Killed before the new binary was in place: nothing changed, report it.
                let _ = std::fs::remove_file(s.new_path());
                let _ = std::fs::remove_file(s.with_suffix(".previous.tmp"));
                clean_dir(&s.staging());
                j.state = "failed".into();
                j.result = Some(json!({"ok": false, "error": format!(
                    "the install of {} was interrupted (the appliance stopped) before the new binary was in place; {} kept running", j.to_version, j.from_version)}));
                let _ = self.write_journal(&j);
                BootAction::Continue
            }
            ("installing" | "confirming", true) => {
                clean_dir(&s.staging());
                j.state = "confirming".into();
                j.boots += 1;
                let now = now_ms();
                let first = *j.first_boot_ms.get_or_insert(now);
                let limit = s.config.confirm_within.as_millis() as i64;
                let overdue = now.saturating_sub(first) > limit || first > now + limit;
                if j.boots >= MAX_BOOTS || overdue {
                    let why = if overdue {
                        format!(
                            "{} showed no health within ota.confirm_within ({:?})",
                            j.to_version, s.config.confirm_within
                        )
                    } else {
                        format!(
                            "{} was started {} times without becoming healthy",
                            j.to_version,
                            j.boots - 1
                        )
                    };
                    return match self.roll_back_binary(&mut j, &why) {
                        Ok(()) => BootAction::Restart,
                        Err(e) => {
                            tracing::error!("OTA: rollback at start failed: {e}; going on with {}", j.to_version);
                            BootAction::Continue
                        }
                    };
                }
                let _ = self.write_journal(&j);
                tracing::info!(version = %j.to_version, boot = j.boots, "OTA: new version started; confirming its health");
                BootAction::Continue
            }
            ("rolling_back", true) => {
                let why = j
                    .result
                    .as_ref()
                    .and_then(|r| r["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "rollback".into());
                match self.roll_back_binary(&mut j, &why) {
                    Ok(()) => BootAction::Restart,
                    Err(e) => {
                        tracing::error!("OTA: rollback failed: {e}");
                        BootAction::Continue
                    }
                }
            }
            (_, false) => {
                // confirming or rolling_back, running the previous version: the rollback is done.
                j.state = "rolled_back".into();
                if j.result.is_none() {
                    j.result = Some(
                        json!({"ok": false, "error": format!("{} was rolled back to {}", j.to_version, j.from_version)}),
                    );
                }
                let _ = self.write_journal(&j);
                BootAction::Continue
            }
            _ => BootAction::Continue,
        }
    }

    /// Restores `<binary>.previous` over `<binary>` and asks for the restart.
    fn roll_back_binary(&self, j: &mut Journal, why: &str) -> Result<(), String> {
        let s = self.settings.as_ref().ok_or("OTA is not configured")?;
        self.set_progress("rolling_back", &j.request_id, format!("rolling back: {why}"));
        tracing::error!(from = %j.to_version, to = %j.from_version, "OTA: rolling back: {why}");
        j.state = "rolling_back".into();
        j.result =
            Some(json!({"ok": false, "error": format!("update_failed: {why}; rolled back to {}", j.from_version)}));
        self.write_journal(j)?;
        let previous = s.previous_path();
        // Copy, then rename: the kept binary stays for the next look, the swap is atomic.
        let restoring = s.with_suffix(".restore");
        copy_synced(&previous, &restoring, 0o755).map_err(err("copying the previous binary"))?;
        std::fs::rename(&restoring, &s.binary_path).map_err(err("restoring the previous binary"))?;
        sync_dir(&s.binary_path);
        j.state = "rolled_back".into();
        self.write_journal(j)?;
        *self.restart_kind.lock().map_err(|_| "poisoned")? = "previous";
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Registers `ota.install` and `ota.status` and keeps what the gate and reports need.
    pub fn attach(self: &Arc<Self>, plane: Arc<CommandPlane>, alarms: Arc<Alarms>, metrics: Arc<Metrics>) {
        let service = self.clone();
        plane.edge_actions().register("ota.install", move |command: Value| {
            let service = service.clone();
            async move {
                match InstallRequest::from_command(&command) {
                    Ok(request) => service.install(request).await,
                    Err(reason) => Outcome::Rejected(reason),
                }
            }
        });
        let service = self.clone();
        plane.edge_actions().register("ota.status", move |_command: Value| {
            let service = service.clone();
            async move { Outcome::Answer(service.status()) }
        });
        if let Ok(mut w) = self.wiring.lock() {
            *w = Some(Wiring { plane, alarms, metrics });
        }
    }

    fn wiring(&self) -> Option<(Arc<CommandPlane>, Arc<Alarms>, Arc<Metrics>)> {
        let w = self.wiring.lock().ok()?;
        let w = w.as_ref()?;
        Some((w.plane.clone(), w.alarms.clone(), w.metrics.clone()))
    }

    /// After the appliance is up: reports a decided but unreported install, and runs the
    /// health gate of a new version. Returns when both are done (or `shutdown`).
    pub async fn after_start(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(s) = self.settings.clone() else { return };
        let Some(mut j) = self.journal() else { return };
        if j.installer == "rauc" && j.open() {
            if let Err(e) = self.rauc_after_boot(&mut j, &s, &shutdown).await {
                tracing::error!("OTA: RAUC confirmation failed: {e}");
            }
        } else if j.state == "confirming" && self.current == j.to_version {
            self.set_progress(
                "confirming",
                &j.request_id,
                format!("{} waits for a PUBACK from the broker", j.to_version),
            );
            let healthy = self.wait_healthy(&j, &s, &shutdown).await;
            match healthy {
                None => return,
                Some(true) => self.confirmed(&mut j).await,
                Some(false) => {
                    let why = format!(
                        "{} showed no health within ota.confirm_within ({:?}): no PUBACK from the broker",
                        j.to_version, s.config.confirm_within
                    );
                    if let Err(e) = self.roll_back_binary(&mut j, &why) {
                        tracing::error!("OTA: rollback failed: {e}; {} keeps running", j.to_version);
                        return;
                    }
                    self.restart.cancel();
                    return;
                }
            }
        }
        self.report(&mut j).await;
    }

    /// `Some(true)` once the uplink got a PUBACK, `Some(false)` at the deadline, `None` on shutdown.
    async fn wait_healthy(&self, j: &Journal, s: &OtaSettings, shutdown: &CancellationToken) -> Option<bool> {
        let metrics = self.wiring().map(|w| w.2)?;
        let limit = s.config.confirm_within.as_millis() as i64;
        let first = j.first_boot_ms.unwrap_or_else(now_ms);
        let left = (first + limit - now_ms()).clamp(0, limit) as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(left);
        loop {
            if metrics.uplink.pubacks_total.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                return Some(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Some(false);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    async fn confirmed(&self, j: &mut Journal) {
        let after_s = j.first_boot_ms.map(|f| (now_ms() - f).max(0) / 1000).unwrap_or(0);
        tracing::info!(version = %j.to_version, previous = %j.from_version, after_s, "OTA: update confirmed healthy");
        j.state = "confirmed".into();
        j.result = Some(json!({"ok": true, "answer": {
            "installed": j.to_version, "previous": j.from_version, "installer": j.installer,
            "sha256": j.sha256, "confirmed_after_s": after_s,
        }}));
        if let Err(e) = self.write_journal(j) {
            tracing::error!("OTA: cannot mark the update good: {e}");
        }
        if let Some((_, alarms, _)) = self.wiring() {
            if let Err(e) = alarms.clear(ALARM, "", json!({"installed": j.to_version})).await {
                tracing::warn!("OTA: clearing {ALARM} failed: {e}");
            }
        }
    }

    /// Publishes the journal's decided result once (and the alarm of a rollback).
    async fn report(&self, j: &mut Journal) {
        if j.reported || j.open() {
            return;
        }
        if let Some(s) = &self.settings {
            clean_dir(&s.staging());
        }
        let Some(outcome) = j.outcome() else { return };
        let Some((plane, alarms, _)) = self.wiring() else {
            return;
        };
        if let Outcome::Failed(reason) = &outcome {
            if j.state == "rolled_back" {
                let detail =
                    json!({"from": j.from_version, "to": j.to_version, "request_id": j.request_id, "reason": reason});
                if let Err(e) = alarms.raise(ALARM, "", detail).await {
                    tracing::error!("OTA: raising {ALARM} failed: {e}");
                }
            }
        }
        match plane.finish_edge_command(&j.request_id, outcome).await {
            Ok(first) => {
                if !first {
                    tracing::info!(request_id = %j.request_id, "OTA: the result was already published");
                }
                j.reported = true;
                if let Some(r) = &j.result {
                    self.remember_result(&j.request_id, r);
                }
                let _ = self.write_journal(j);
                self.decided.send_modify(|n| *n += 1);
                let phase = if j.state == "confirmed" { "installed" } else { "failed" };
                self.idle(format!("last update {}: {phase}", j.to_version));
            }
            Err(e) => tracing::error!("OTA: publishing the result failed (retried at the next start): {e}"),
        }
    }

    // ----- status -----

    /// The `ota.status` document (also `GET /api/ota`).
    pub fn status(&self) -> Value {
        let progress = self.progress.lock().map(|p| p.clone()).unwrap_or_default();
        let journal = self.journal();
        let installer = match &self.settings {
            None => "none",
            Some(s) => match s.config.installer {
                OtaInstaller::Rauc => "rauc",
                OtaInstaller::Binary => "binary",
                OtaInstaller::Auto => "auto",
            },
        };
        let previous = journal.as_ref().and_then(|j| match j.state.as_str() {
            "confirmed" | "confirming" => Some(j.from_version.clone()),
            _ => None,
        });
        let staged = self.settings.as_ref().and_then(|s| {
            let f = s.staging().join("update");
            let m = std::fs::metadata(&f).ok()?;
            Some(json!({"bytes": m.len(), "request_id": progress.request_id}))
        });
        let uploads: Vec<Value> = self
            .upload_dir()
            .and_then(|d| std::fs::read_dir(d).ok())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.starts_with('.') {
                            return None;
                        }
                        Some(json!({"name": name, "bytes": e.metadata().ok()?.len()}))
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "current_version": self.current,
            "previous_version": previous,
            "installer": installer,
            "configured": self.settings.is_some(),
            "max_bytes": self.max_bytes(),
            "confirm_within_s": self.settings.as_ref().map(|s| s.config.confirm_within.as_secs()),
            "staged": staged,
            "uploads": uploads,
            "progress": progress,
            "journal": journal,
            "last_result": self.last_result(),
        })
    }

    // ----- install -----

    /// Runs one install request to its one outcome. An installed binary update does not return
    /// here: the process restarts and the new version publishes the result.
    pub async fn install(self: &Arc<Self>, request: InstallRequest) -> Outcome {
        let rid = request.request_id.clone();
        if let Some(j) = self.journal() {
            if !rid.is_empty() && j.request_id == rid && !j.reported {
                tracing::info!(request_id = %rid, "OTA: the install request came again; it ends with the pending decision");
                return self.wait_decision(&rid).await;
            }
        }
        let Some(settings) = self.settings.clone() else {
            return Outcome::Rejected(
                "OTA is not configured on this edge (no `ota:` section with public_key_file)".into(),
            );
        };
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Outcome::Rejected(
                "busy: the appliance is restarting into another version; try again after it".into(),
            );
        }
        let refused = self.refusal.lock().ok().and_then(|r| r.as_ref().and_then(|why| why()));
        if let Some(why) = refused {
            return Outcome::Rejected(format!("busy: {why}; try again when it has ended"));
        }
        let Ok(_guard) = self.busy.try_lock() else {
            let p = self.progress.lock().map(|p| p.clone()).unwrap_or_default();
            return Outcome::Rejected(format!(
                "busy: update request `{}` is being installed ({}); try again when it has ended",
                p.request_id, p.phase
            ));
        };
        if let Some(j) = self.journal().filter(Journal::open) {
            return Outcome::Rejected(format!(
                "busy: the update to {} (request `{}`) is still {}",
                j.to_version, j.request_id, j.state
            ));
        }
        let outcome = self.run_install(&settings, request).await;
        match &outcome {
            Some(outcome) => {
                let shown = match outcome {
                    Outcome::Answer(a) => json!({"ok": true, "answer": a}),
                    Outcome::Rejected(e) | Outcome::Failed(e) => json!({"ok": false, "error": e}),
                    other => json!({"ok": false, "error": format!("{other:?}")}),
                };
                self.remember_result(&rid, &shown);
                clean_dir(&settings.staging());
                if let Outcome::Rejected(e) | Outcome::Failed(e) = outcome {
                    tracing::warn!(request_id = %rid, "OTA: refused or failed: {e}");
                    self.idle(format!("last request refused: {e}"));
                }
                outcome.clone()
            }
            None => {
                // Installed; the process stops for the restart. The result comes from the
                // version that decides.
                self.restart.cancel();
                std::future::pending::<Outcome>().await
            }
        }
    }

    async fn wait_decision(&self, rid: &str) -> Outcome {
        let mut rx = self.decided.subscribe();
        let limit = self.settings.as_ref().map_or(Duration::from_secs(600), |s| {
            s.config.confirm_within + Duration::from_secs(60)
        });
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(j) = self.journal().filter(|j| j.request_id == rid) {
                if !j.open() {
                    if let Some(o) = j.outcome() {
                        return o;
                    }
                }
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Outcome::Failed("the update's health decision did not come in time".into());
                }
            }
        }
    }

    /// `None` when the update is installed and the process must restart.
    async fn run_install(self: &Arc<Self>, s: &OtaSettings, request: InstallRequest) -> Option<Outcome> {
        let rid = request.request_id.clone();
        let rejected = |e: String| Some(Outcome::Rejected(e));
        // 1. Refuse what can be refused before any byte moves.
        let signature = match (&request.signature, &request.source) {
            (Some(sig), _) => match verify::decode_signature(sig) {
                Ok(sig) => sig,
                Err(e) => return rejected(e.to_string()),
            },
            (None, Source::Upload(name)) => {
                let sig_path = match upload_file(s, &format!("{name}.sig")) {
                    Ok(p) => p,
                    Err(e) => return rejected(e),
                };
                match std::fs::read(&sig_path) {
                    Ok(bytes) if bytes.len() <= 4096 => match verify::decode_signature_file(&bytes) {
                        Ok(sig) => sig,
                        Err(e) => return rejected(format!("{name}.sig: {e}")),
                    },
                    Ok(_) => return rejected(format!("{name}.sig is too large to be a signature")),
                    Err(_) => {
                        return rejected(format!(
                            "unsigned update: upload {name}.sig (the signature) beside {name}"
                        ))
                    }
                }
            }
            (None, _) => return rejected(verify::VerifyError::Unsigned.to_string()),
        };
        let expected = match request.sha256.as_deref().map(verify::parse_digest) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => return rejected(e.to_string()),
        };
        let key = match verify::load_public_key(&s.config.public_key_file) {
            Ok(k) => k,
            Err(e) => return rejected(e.to_string()),
        };

        // 2. Stage.
        clean_dir(&s.staging());
        if let Err(e) = std::fs::create_dir_all(s.staging()) {
            return rejected(format!("cannot create the staging area {}: {e}", s.staging().display()));
        }
        let part = s.staging().join("update.part");
        let staged = s.staging().join("update");
        let source_text = match &request.source {
            Source::Url(u) => u.clone(),
            Source::Path(p) => p.display().to_string(),
            Source::Upload(n) => format!("upload:{n}"),
        };
        let staged_ok = match &request.source {
            Source::Url(url) => {
                self.set_progress("downloading", &rid, format!("downloading {url}"));
                let tls = match crate::tls::client_config(s.config.ca_file.as_deref(), None) {
                    Ok(c) => Arc::new(c),
                    Err(e) => return rejected(format!("TLS for the download: {e}")),
                };
                let options = download::DownloadOptions {
                    tls,
                    max_bytes: s.config.max_bytes,
                    stall_timeout: s.config.stall_timeout,
                    total_timeout: s.config.download_timeout,
                };
                let (url, dest, me) = (url.clone(), part.clone(), self.clone());
                tokio::task::spawn_blocking(move || {
                    download::download(&url, &dest, &options, |b, t| me.set_bytes(b, t)).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("the download task failed: {e}")))
            }
            Source::Path(path) => {
                self.set_progress("staging", &rid, format!("copying {}", path.display()));
                self.stage_copy(path, &part, s.config.max_bytes).await
            }
            Source::Upload(name) => {
                let path = match upload_file(s, name) {
                    Ok(p) => p,
                    Err(e) => return rejected(e),
                };
                self.set_progress("staging", &rid, format!("taking the upload {name}"));
                // The upload is consumed (moved into staging; its signature read above).
                let _ = std::fs::remove_file(s.uploads().join(format!("{name}.sig")));
                match std::fs::metadata(&path) {
                    Ok(m) if m.len() > s.config.max_bytes => {
                        let _ = std::fs::remove_file(&path);
                        Err(format!(
                            "the update is {} bytes, more than ota.max_bytes ({})",
                            m.len(),
                            s.config.max_bytes
                        ))
                    }
                    Ok(m) => std::fs::rename(&path, &part)
                        .map(|()| m.len())
                        .map_err(|e| format!("staging the upload failed: {e}")),
                    Err(_) => Err(format!("no uploaded file `{name}`: upload it first")),
                }
            }
        };
        if let Err(e) = staged_ok {
            return rejected(e);
        }
        if let Err(e) = std::fs::rename(&part, &staged) {
            return rejected(format!("staging failed: {e}"));
        }

        // 3. Verify.
        self.set_progress("verifying", &rid, "checking the SHA-256 and the ed25519 signature");
        let digest = {
            let (path, key) = (staged.clone(), key);
            tokio::task::spawn_blocking(move || verify::verify_file(&path, &key, &signature, expected.as_ref()))
                .await
                .unwrap_or_else(|e| Err(verify::VerifyError::Io(e.to_string())))
        };
        let digest = match digest {
            Ok(d) => verify::hex(&d),
            Err(e) => return rejected(e.to_string()),
        };
        let use_rauc = match s.config.installer {
            OtaInstaller::Rauc => true,
            OtaInstaller::Binary => false,
            OtaInstaller::Auto => rauc_present().await,
        };
        let to_version = if use_rauc {
            bundle_version(&staged).await
        } else {
            binary_version(&staged).await
        };
        let to_version = match to_version {
            Ok(v) => v,
            Err(e) => return rejected(e),
        };
        if version::compare(&to_version, &self.current) != std::cmp::Ordering::Greater {
            return rejected(format!(
                "refused: the update is version {to_version}, not newer than the running {} (an older or equal version is a replay)",
                self.current
            ));
        }
        tracing::info!(request_id = %rid, version = %to_version, sha256 = %digest, "OTA: update verified");

        // 4. Install.
        let mut journal = Journal {
            request_id: rid.clone(),
            installer: if use_rauc { "rauc" } else { "binary" }.into(),
            from_version: self.current.clone(),
            to_version: to_version.clone(),
            sha256: digest,
            source: source_text,
            state: "installing".into(),
            started_ms: now_ms(),
            first_boot_ms: None,
            boots: 0,
            booted_from: None,
            result: None,
            reported: false,
            updated_ms: now_ms(),
        };
        if use_rauc {
            return self.rauc_install(s, &mut journal, &staged).await;
        }
        self.set_progress(
            "installing",
            &rid,
            format!("swapping the binary {} for {to_version}", s.binary_path.display()),
        );
        if let Err(e) = self.write_journal(&journal) {
            return Some(Outcome::Failed(format!("cannot write the install journal: {e}")));
        }
        let swap = {
            let (s, staged) = (s.clone(), staged.clone());
            tokio::task::spawn_blocking(move || swap_binary(&s, &staged))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        };
        if let Err(e) = swap {
            let _ = std::fs::remove_file(s.new_path());
            journal.state = "failed".into();
            let error = format!("installing failed, {} kept: {e}", self.current);
            journal.result = Some(json!({"ok": false, "error": error}));
            journal.reported = true;
            let _ = self.write_journal(&journal);
            return Some(Outcome::Failed(error));
        }
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.set_progress(
            "restarting",
            &rid,
            format!("{to_version} is in place; restarting into it"),
        );
        *self.restart_kind.lock().ok()? = "new";
        None
    }

    async fn stage_copy(&self, from: &Path, to: &Path, max: u64) -> Result<u64, String> {
        let meta = std::fs::metadata(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", from.display()));
        }
        if meta.len() > max {
            return Err(format!(
                "the update is {} bytes, more than ota.max_bytes ({max})",
                meta.len()
            ));
        }
        self.set_bytes(0, Some(meta.len()));
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        tokio::task::spawn_blocking(move || copy_bounded(&from, &to, max))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .inspect(|n| self.set_bytes(*n, Some(*n)))
    }

    // ----- RAUC -----

    async fn rauc_install(&self, s: &OtaSettings, j: &mut Journal, staged: &Path) -> Option<Outcome> {
        let rid = j.request_id.clone();
        let rauc = match crate::ops::rauc::Rauc::connect_system().await {
            Ok(r) => r,
            Err(e) => return Some(Outcome::Rejected(format!("RAUC: {e}"))),
        };
        j.booted_from = rauc.booted_slot().await.ok();
        if let Err(e) = self.write_journal(j) {
            return Some(Outcome::Failed(format!("cannot write the install journal: {e}")));
        }
        self.set_progress(
            "installing",
            &rid,
            format!("RAUC installs {} into the other slot", j.to_version),
        );
        let limit = s.config.download_timeout;
        let result = rauc
            .install(staged, limit, |p| {
                if let Ok(mut progress) = self.progress.lock() {
                    progress.percent = Some(p.percent.clamp(0, 100) as u32);
                    progress.message = format!("RAUC: {}", p.message);
                }
            })
            .await;
        if let Err(e) = result {
            j.state = "failed".into();
            let error = format!("RAUC installation failed, {} kept: {e}", self.current);
            j.result = Some(json!({"ok": false, "error": error}));
            j.reported = true;
            let _ = self.write_journal(j);
            return Some(Outcome::Failed(error));
        }
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.set_progress(
            "rebooting",
            &rid,
            format!("{} is in the other slot; rebooting into it", j.to_version),
        );
        if let Err(e) = reboot(&s.config.reboot_command).await {
            // The slot stays written; booting the current one again keeps the running version.
            let _ = rauc.mark(crate::ops::rauc::MarkState::Active, "booted").await;
            self.stopping.store(false, std::sync::atomic::Ordering::SeqCst);
            j.state = "failed".into();
            let error = format!("the reboot into {} failed ({e}); {} stays", j.to_version, self.current);
            j.result = Some(json!({"ok": false, "error": error}));
            j.reported = true;
            let _ = self.write_journal(j);
            return Some(Outcome::Failed(error));
        }
        // The system goes down; the result comes from the version that boots.
        std::future::pending::<()>().await;
        None
    }

    async fn rauc_after_boot(
        &self,
        j: &mut Journal,
        s: &OtaSettings,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let rauc = crate::ops::rauc::Rauc::connect_system()
            .await
            .map_err(|e| e.to_string())?;
        let booted = rauc.booted_slot().await.map_err(|e| e.to_string())?;
        let in_new_slot = j.booted_from.as_deref().is_some_and(|from| from != booted);
        match (j.state.as_str(), in_new_slot) {
            ("installing" | "confirming", true) => {
                j.state = "confirming".into();
                j.boots += 1;
                j.first_boot_ms.get_or_insert(now_ms());
                self.write_journal(j)?;
                self.set_progress(
                    "confirming",
                    &j.request_id,
                    format!("slot {booted} waits for a PUBACK from the broker"),
                );
                match self.wait_healthy(j, s, shutdown).await {
                    None => Ok(()),
                    Some(true) => {
                        let marked = rauc.mark_good().await.map_err(|e| e.to_string())?;
                        tracing::info!(slot = %marked.slot, "OTA: RAUC slot marked good");
                        self.confirmed(j).await;
                        Ok(())
                    }
                    Some(false) => {
                        let why = format!(
                            "{} (slot {booted}) showed no health within ota.confirm_within ({:?}): no PUBACK from the broker",
                            j.to_version, s.config.confirm_within
                        );
                        self.set_progress("rolling_back", &j.request_id, format!("rolling back: {why}"));
                        j.state = "rolling_back".into();
                        j.result = Some(
                            json!({"ok": false, "error": format!("update_failed: {why}; rolled back to {}", j.from_version)}),
                        );
                        self.write_journal(j)?;
                        let marked = rauc.mark_bad().await.map_err(|e| e.to_string())?;
                        tracing::error!(slot = %marked.slot, "OTA: RAUC slot marked bad; rebooting into the other slot");
                        reboot(&s.config.reboot_command).await
                    }
                }
            }
            (_, false) => {
                // Booted the slot the install started from: RAUC's fallback or our mark-bad.
                let was_installing = j.state == "installing";
                j.state = "rolled_back".into();
                if j.result.is_none() || was_installing {
                    j.result = Some(json!({"ok": false, "error": format!(
                        "update_failed: the system booted slot {booted} again (the new slot did not come up healthy); {} kept", j.from_version)}));
                }
                self.write_journal(j)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Whether RAUC answers on the system bus (bounded).
async fn rauc_present() -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), crate::ops::rauc::Rauc::connect_system()).await,
        Ok(Ok(_))
    )
}

async fn reboot(command: &[String]) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("no reboot command")?;
    tracing::warn!(command = ?command, "OTA: rebooting");
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program).args(args).status(),
    )
    .await
    .map_err(|_| "the reboot command did not end within 60 s".to_string())?
    .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}

/// The version of a staged binary: `<staged> --version`, run (after the signature check) with a
/// bound on time and output.
async fn binary_version(staged: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o700))
        .map_err(err("making the staged binary executable"))?;
    let mut last = String::new();
    // A file just written may still be open for writing in a forked child for an instant.
    for _ in 0..5 {
        let run = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(staged)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match run {
            Err(_) => return Err("refused: the update did not answer `--version` within 10 s (not a roadedge binary?)".into()),
            Ok(Err(e)) if e.raw_os_error() == Some(26) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => return Err(format!("refused: the update cannot run on this device ({e}); a binary update must be a roadedge binary for this CPU")),
            Ok(Ok(out)) => {
                let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(4096)]).into_owned();
                return version::from_version_output(&text).filter(|_| out.status.success()).ok_or_else(|| {
                    format!("refused: the update is not a roadedge binary (`--version` printed {:?})", text.lines().next().unwrap_or(""))
                });
            }
        }
    }
    Err(format!("refused: cannot run the staged binary: {last}"))
}

/// The version of a staged RAUC bundle, from `rauc info` (its manifest's `update.version`).
async fn bundle_version(staged: &Path) -> Result<String, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("rauc")
            .args(["info", "--no-verify", "--output-format=json"])
            .arg(staged)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "rauc info did not answer within 60 s".to_string())?
    .map_err(|e| format!("cannot run `rauc info` to read the bundle's version: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "refused: not a RAUC bundle RAUC can read: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let info: Value = serde_json::from_slice(&out.stdout).map_err(err("rauc info printed no JSON"))?;
    let v = info["update"]["version"]
        .as_str()
        .or(info["version"].as_str())
        .unwrap_or("")
        .to_string();
    if version::valid(&v) {
        Ok(v)
    } else {
        Err(format!("refused: the bundle's manifest has no usable version ({v:?})"))
    }
}

/// A file in the upload folder by its plain name (no path parts).
fn upload_file(s: &OtaSettings, name: &str) -> Result<PathBuf, String> {
    if !valid_upload_name(name) {
        return Err(format!("`{name}` is not a plain file name"));
    }
    Ok(s.uploads().join(name))
}

/// `[A-Za-z0-9._-]{1,128}`, not starting with a dot.
pub fn valid_upload_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Swaps the binary: `<binary>.previous` <- the running one, `<binary>.new` <- the staged one,
/// then the rename of `.new` over `<binary>`.
fn swap_binary(s: &OtaSettings, staged: &Path) -> Result<(), String> {
    let keep = s.with_suffix(".previous.tmp");
    copy_synced(&s.binary_path, &keep, 0o755).map_err(err("keeping the running binary"))?;
    std::fs::rename(&keep, s.previous_path()).map_err(err("keeping the running binary"))?;
    copy_synced(staged, &s.new_path(), 0o755).map_err(err("writing the new binary"))?;
    std::fs::rename(s.new_path(), &s.binary_path).map_err(err("putting the new binary in place"))?;
    sync_dir(&s.binary_path);
    tracing::info!(binary = %s.binary_path.display(), kept = %s.previous_path().display(), "OTA: binary swapped");
    Ok(())
}

fn copy_synced(from: &Path, to: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    std::fs::File::open(to)?.sync_all()
}

fn copy_bounded(from: &Path, to: &Path, max: u64) -> Result<u64, String> {
    use std::io::{Read, Write};
    let src = std::fs::File::open(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let mut src = src.take(max + 1);
    let mut dst = std::fs::File::create(to).map_err(|e| format!("cannot stage: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = src
            .read(&mut buf)
            .map_err(|e| format!("reading {}: {e}", from.display()))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        if n > max {
            return Err(format!("the update is more than ota.max_bytes ({max}) bytes"));
        }
        dst.write_all(&buf[..k]).map_err(|e| format!("staging: {e}"))?;
    }
    dst.sync_all().map_err(|e| format!("staging: {e}"))?;
    Ok(n)
}

fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("creating the OTA state directory"))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err("writing"))?;
    f.write_all(bytes).map_err(err("writing"))?;
    f.sync_all().map_err(err("writing"))?;
    std::fs::rename(&tmp, path).map_err(err("writing"))?;
    sync_dir(path);
    Ok(())
}

/// Empties a directory (the staging area); keeps the directory.
fn clean_dir(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_requests_need_exactly_one_source() {
        let r =
            InstallRequest::from_command(&json!({"request_id": "r", "url": "https://x/u", "signature": "s"})).unwrap();
        assert_eq!(r.source, Source::Url("https://x/u".into()));
        assert!(InstallRequest::from_command(&json!({"url": "a", "path": "b"})).is_err());
        assert!(InstallRequest::from_command(&json!({})).is_err());
    }

    fn settings_in(dir: &Path) -> OtaSettings {
        let config = crate::config::Config::parse(
            &format!(
                "edge: {{id: cab}}\nuplink: {{url: 'mqtt://127.0.0.1:1883'}}\nstorage: {{path: {}}}\nota: {{public_key_file: /k.pub, binary_path: {}, confirm_within: 60s}}\n",
                dir.join("edge.db").display(),
                dir.join("bin/roadedge").display()
            ),
            crate::config::FileCheck::Skip,
        )
        .unwrap();
        OtaSettings::new(config.ota.as_ref().unwrap(), &config.storage.path)
    }

    fn journal(state: &str, from: &str, to: &str, boots: u32, first_boot_ms: Option<i64>) -> Journal {
        Journal {
            request_id: "r1".into(),
            installer: "binary".into(),
            from_version: from.into(),
            to_version: to.into(),
            sha256: String::new(),
            source: String::new(),
            state: state.into(),
            started_ms: now_ms(),
            first_boot_ms,
            boots,
            booted_from: None,
            result: None,
            reported: false,
            updated_ms: 0,
        }
    }

    /// A new version that keeps dying before its health gate (it is the running version here)
    /// is rolled back at its next start once it used its starts, or once `confirm_within`
    /// passed since its first start; before that it goes on confirming.
    #[test]
    fn a_new_version_that_never_reaches_its_gate_is_rolled_back_at_start() {
        let current = version::current();
        for (boots, first, expect_rollback) in [
            (1, Some(now_ms()), false),
            (MAX_BOOTS, Some(now_ms()), true),
            (1, Some(now_ms() - 61_000), true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let s = settings_in(dir.path());
            std::fs::create_dir_all(dir.path().join("bin")).unwrap();
            std::fs::write(&s.binary_path, b"new").unwrap();
            std::fs::write(s.previous_path(), b"old").unwrap();
            let service = OtaService::new(Some(s.clone()));
            service
                .write_journal(&journal("confirming", "0.0.1", current, boots, first))
                .unwrap();
            let action = service.boot();
            let j = service.journal().unwrap();
            if expect_rollback {
                assert_eq!(action, BootAction::Restart, "boots {boots}");
                assert_eq!(std::fs::read(&s.binary_path).unwrap(), b"old");
                assert_eq!(j.state, "rolled_back");
                assert!(j.result.unwrap()["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("update_failed"));
                assert_eq!(service.restart_kind(), "previous");
            } else {
                assert_eq!(action, BootAction::Continue);
                assert_eq!(std::fs::read(&s.binary_path).unwrap(), b"new");
                assert_eq!((j.state.as_str(), j.boots), ("confirming", 2));
            }
        }
    }

    /// While another change says so (a pending configuration apply), an install is refused before
    /// anything is read or written.
    #[test]
    fn an_install_is_refused_while_another_change_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings_in(dir.path());
        let service = OtaService::new(Some(s));
        service.refuse_while(|| Some("a configuration apply (request `c1`) is waiting for confirmation".into()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(service.install(InstallRequest {
            request_id: "u1".into(),
            source: Source::Path(dir.path().join("missing.bin")),
            sha256: None,
            signature: None,
        }));
        let Outcome::Rejected(why) = outcome else {
            panic!("not refused: {outcome:?}")
        };
        assert!(why.starts_with("busy: a configuration apply (request `c1`)"), "{why}");
        assert!(service.journal().is_none(), "nothing written");
    }

    /// A configuration apply or a restart asks this before it goes on: busy while an update's
    /// journal is open (installing, confirming, rolling back), idle once it is decided.
    #[test]
    fn an_open_journal_makes_the_service_busy_for_other_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings_in(dir.path());
        let service = OtaService::new(Some(s.clone()));
        assert_eq!(service.busy_reason(), None);
        for state in ["installing", "confirming", "rolling_back"] {
            service
                .write_journal(&journal(state, "0.1.0", "99.0.0", 0, None))
                .unwrap();
            let why = service.busy_reason().expect(state);
            assert!(why.contains("99.0.0") && why.contains(state), "{why}");
        }
        for state in ["confirmed", "rolled_back", "failed"] {
            service
                .write_journal(&journal(state, "0.1.0", "99.0.0", 0, None))
                .unwrap();
            assert_eq!(service.busy_reason(), None, "{state}");
        }
        assert_eq!(OtaService::new(None).busy_reason(), None);
    }

    /// The previous version started with the journal still open: the swap never completed (it
    /// reports the interruption) or the rollback did (it reports the rollback).
    #[test]
    fn the_previous_version_closes_an_open_journal_at_start() {
        let current = version::current();
        let dir = tempfile::tempdir().unwrap();
        let s = settings_in(dir.path());
        let service = OtaService::new(Some(s.clone()));
        std::fs::write(s.staging().join("update"), b"x").unwrap();
        service
            .write_journal(&journal("installing", current, "99.0.0", 0, None))
            .unwrap();
        assert_eq!(service.boot(), BootAction::Continue);
        let j = service.journal().unwrap();
        assert_eq!(j.state, "failed");
        assert!(matches!(j.outcome(), Some(Outcome::Failed(e)) if e.contains("interrupted")));
        assert!(
            std::fs::read_dir(s.staging()).unwrap().next().is_none(),
            "staging cleaned"
        );

        service
            .write_journal(&journal("rolling_back", current, "99.0.0", 1, None))
            .unwrap();
        assert_eq!(service.boot(), BootAction::Continue);
        let j = service.journal().unwrap();
        assert_eq!(j.state, "rolled_back");
        assert!(matches!(j.outcome(), Some(Outcome::Failed(_))));
    }

    #[test]
    fn upload_names_are_plain() {
        assert!(valid_upload_name("roadedge-0.2.0.bin"));
        assert!(!valid_upload_name("../etc/passwd"));
        assert!(!valid_upload_name(".hidden"));
        assert!(!valid_upload_name("a/b"));
    }
}
