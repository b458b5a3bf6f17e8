//! GB/T 37987 reader management: the edge is the client of its readers (it dials them, or they
//! dial in to `readers.listen`, or they sit on a serial line), keeps their links alive, holds the
//! desired select/access rules per reader and re-applies them after every (re)connect, stores
//! and publishes tag reports, events, alarms and logs, and runs management commands.
//!
//! Owns: the link supervisors (`link.rs`: dial with jittered backoff, accept, serial), the pure
//! per-link session (`session/`: the link phase, its jobs and its alarms), rules (`rules.rs`), the reader tables (`db.rs`), upstream
//! payloads (`records.rs`), command parsing (`request.rs`), firmware serving (`tftp.rs`), and
//! [`ReaderService`]: the command plane's gateway for `Protocol::Gbt37987` and the Rust API the
//! web page and the scheduler call.
//! Must not: speak MQTT (records go through the store), or keep anything unbounded per reader.

pub mod db;
pub mod link;
pub mod records;
pub mod request;
pub mod rules;
pub mod session;
pub mod tftp;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::command::{CommandPlane, DeviceCommand, DeviceGateway, Outcome, Protocol};
use crate::config::{ReaderDevice, ReaderDialect, ReaderLink, ReadersConfig};
use crate::metrics::Metrics;
use crate::protocol::gbt37987::Dialect;
use crate::store::{Store, StoreError};
use crate::time::{now_ms, now_rfc3339};
use request::{Command, HubAction, Request};
use rules::{DesiredRules, RuleKind};

/// Inputs a live link takes from the hub.
pub(crate) enum LinkInput {
    /// Run a request; its outcome goes to `origin`.
    Command { origin: Origin, request: Request },
    /// New desired rules, then a request that applies them (one input, so neither goes alone).
    Rules {
        origin: Origin,
        desired: DesiredRules,
        request: Request,
    },
    /// Close the link (e.g. a forced reconnect from the web page).
    Close(String),
}

/// Who waits for a command's outcome.
pub(crate) enum Origin {
    /// A command of the command plane (row id).
    Plane(i64),
    /// A direct call of the service API.
    Direct(oneshot::Sender<Outcome>),
    /// Nobody (scheduled work whose outcome is only logged).
    Nobody(String),
}

/// Commands one link may have waiting in its channel.
const LINK_QUEUE: usize = 64;

struct LinkEntry {
    connection: u64,
    tx: mpsc::Sender<LinkInput>,
    /// Cancelled when a newer link claims the same reader (works even with a full channel).
    replaced: CancellationToken,
}

/// What the service shows about one reader (the web page's reader list).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReaderInfo {
    pub id: String,
    /// `tcp-dial`, `tcp-listen` or `serial`.
    pub transport: String,
    /// Where the reader is (address or serial port).
    pub address: String,
    pub dialect: String,
    /// Whether the reader is in the configuration (dial-in readers may not be).
    pub configured: bool,
    /// `up` or `down`.
    pub link: String,
    pub device_sn: Option<String>,
    /// When the link last changed state.
    pub since: Option<String>,
    /// Why the link last went down (or `connected`).
    pub reason: Option<String>,
    pub last_seen: Option<String>,
    pub tag_reports_total: u64,
    pub alarms_active: u64,
    /// The reader's general capabilities (GenaralCapabilities), read at connect.
    pub capabilities: Option<Json>,
    /// Select-spec states last seen on the reader.
    pub select_specs: BTreeMap<u32, String>,
}

/// Errors of the service API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReaderError {
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("reader `{0}` is not connected")]
    Offline(String),
    #[error("the reader did not answer")]
    Timeout,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the reader service needs from the appliance.
#[derive(Clone)]
pub struct ReaderDeps {
    pub store: Store,
    pub plane: Arc<CommandPlane>,
    pub metrics: Arc<Metrics>,
    /// Files the edge may serve to readers as firmware (`firmware_download` with `file`).
    pub firmware_dir: PathBuf,
}

/// The reader hub: live links by reader id, reader infos, and the service API.
pub struct ReaderService {
    store: Store,
    plane: Weak<CommandPlane>,
    metrics: Arc<Metrics>,
    links: Mutex<HashMap<String, LinkEntry>>,
    infos: Mutex<BTreeMap<String, ReaderInfo>>,
    dialects: HashMap<String, Dialect>,
    default_dialect: Dialect,
    next_connection: AtomicU64,
    /// Unconfigured dial-in readers remembered at most.
    max_unknown: usize,
    pub(crate) firmware_dir: PathBuf,
    /// Itself, for tasks spawned from `deliver` (which has only `&self`).
    me: Weak<ReaderService>,
}

/// The codec dialect of a configured dialect.
pub fn dialect_of(d: ReaderDialect) -> Dialect {
    match d {
        ReaderDialect::Gbt37987_2019 => Dialect::Gbt37987_2019,
        ReaderDialect::Hb2017 => Dialect::Hb2017,
    }
}

/// Starts the readers section: one supervisor per configured dialled or serial reader, the
/// listener for readers that dial in, and the gateway registration. Runs until `shutdown`.
pub async fn start(
    config: &ReadersConfig,
    deps: ReaderDeps,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<ReaderService>, tokio::task::JoinHandle<()>)> {
    let service = Arc::new_cyclic(|me| ReaderService::new(config, &deps, me.clone()));
    deps.plane.register(Protocol::Gbt37987, service.clone());
    if let Ok(counts) = deps.store.read(db::alarm_counts).await {
        if let Ok(mut readers) = deps.metrics.readers.lock() {
            for (reader, n) in counts {
                readers.entry(reader).or_default().alarms_active = n;
            }
        }
    }
    let listener = match config.listen {
        Some(addr) => Some(
            crate::link::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("readers.listen {addr}: {e}"))?,
        ),
        None => None,
    };
    if let Some(l) = &listener {
        tracing::info!(addr = %l.local_addr()?, "listening for readers that dial in");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for device in &config.devices {
        let supervisor = link::Supervisor {
            service: service.clone(),
            deps: deps.clone(),
            device: device.clone(),
            keepalive: config.keepalive_interval,
        };
        match device.link {
            ReaderLink::Tcp(_) | ReaderLink::Serial { .. } => {
                tasks.spawn(supervisor.run(shutdown.clone()));
            }
            ReaderLink::DialIn => {}
        }
    }
    if let Some(listener) = listener {
        tasks.spawn(link::listen(
            listener,
            service.clone(),
            deps.clone(),
            config.clone(),
            shutdown.clone(),
        ));
    }
    let task = tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
    Ok((service, task))
}

impl ReaderService {
    fn new(config: &ReadersConfig, deps: &ReaderDeps, me: Weak<ReaderService>) -> ReaderService {
        let default_dialect = dialect_of(config.dialect);
        let mut infos = BTreeMap::new();
        let mut dialects = HashMap::new();
        for d in &config.devices {
            let (transport, address) = describe(d);
            dialects.insert(d.id.to_string(), dialect_of(d.dialect));
            infos.insert(
                d.id.to_string(),
                ReaderInfo {
                    id: d.id.to_string(),
                    transport: transport.into(),
                    address,
                    dialect: dialect_of(d.dialect).as_str().into(),
                    configured: true,
                    link: "down".into(),
                    device_sn: d.sn.map(|sn| crate::protocol::gbt37987::model::hex_string(&sn)),
                    ..ReaderInfo::default()
                },
            );
            if let Ok(mut m) = deps.metrics.readers.lock() {
                m.entry(d.id.to_string()).or_default();
            }
        }
        ReaderService {
            store: deps.store.clone(),
            plane: Arc::downgrade(&deps.plane),
            metrics: deps.metrics.clone(),
            links: Mutex::new(HashMap::new()),
            infos: Mutex::new(infos),
            dialects,
            default_dialect,
            next_connection: AtomicU64::new(1),
            max_unknown: config.max_unknown,
            firmware_dir: deps.firmware_dir.clone(),
            me,
        }
    }

    /// The dialect a reader speaks (configured, else the section's default).
    pub fn dialect(&self, reader: &str) -> Dialect {
        let known = self
            .infos
            .lock()
            .ok()
            .and_then(|i| i.get(reader).and_then(|r| r.dialect.parse().ok()));
        known
            .or_else(|| self.dialects.get(reader).copied())
            .unwrap_or(self.default_dialect)
    }

    /// Every known reader (configured ones and those that dialled in), with live counters.
    pub fn readers(&self) -> Vec<ReaderInfo> {
        let mut list: Vec<ReaderInfo> = self
            .infos
            .lock()
            .map(|i| i.values().cloned().collect())
            .unwrap_or_default();
        if let Ok(m) = self.metrics.readers.lock() {
            for info in &mut list {
                if let Some(state) = m.get(&info.id) {
                    info.tag_reports_total = state.tag_reports_total;
                    info.alarms_active = state.alarms_active;
                    info.last_seen = state.last_seen.clone();
                }
            }
        }
        list
    }

    /// One reader's info.
    pub fn reader(&self, id: &str) -> Option<ReaderInfo> {
        self.readers().into_iter().find(|r| r.id == id)
    }

    /// Whether a reader's link is up.
    pub fn is_online(&self, id: &str) -> bool {
        self.links.lock().map(|l| l.contains_key(id)).unwrap_or(false)
    }

    /// The desired rules of a reader.
    pub async fn rules(&self, reader: &str) -> Result<DesiredRules, ReaderError> {
        let (r, d) = (reader.to_string(), self.dialect(reader));
        Ok(self.store.read(move |c| db::load_rules(c, &r, d)).await?)
    }

    /// The active-alarm table of a reader.
    pub async fn alarms(&self, reader: &str) -> Result<Vec<db::ActiveAlarm>, ReaderError> {
        let r = reader.to_string();
        Ok(self.store.read(move |c| db::load_alarms(c, &r)).await?)
    }

    /// Runs a command document (the same JSON as on `gbt37987/{reader_id}/dn`) and returns its
    /// answer. Link work needs the reader online; rule changes are stored either way.
    pub async fn execute(&self, reader: &str, command: &Json) -> Result<Json, ReaderError> {
        let parsed = request::parse(command, self.dialect(reader)).map_err(ReaderError::Rejected)?;
        let (tx, rx) = oneshot::channel();
        match parsed {
            Command::Hub(action) => self.hub_action(reader, action, Origin::Direct(tx)).await,
            Command::Link(request) => {
                if !self.send_to_link(reader, Origin::Direct(tx), request) {
                    return Err(ReaderError::Offline(reader.to_string()));
                }
            }
        }
        match tokio::time::timeout(DIRECT_COMMAND_LIMIT, rx)
            .await
            .map_err(|_| ReaderError::Timeout)?
        {
            Ok(Outcome::Answer(v)) => Ok(v),
            Ok(Outcome::Rejected(r)) | Ok(Outcome::Failed(r)) => Err(ReaderError::Rejected(r)),
            Ok(Outcome::Timeout) | Ok(Outcome::Expired) => Err(ReaderError::Timeout),
            Err(_) => Err(ReaderError::Rejected("the link closed before the command ended".into())),
        }
    }

    /// The firmware images the edge can serve to readers (`firmware_download` with `file`):
    /// (name, bytes), sorted by name.
    pub fn firmware_files(&self) -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(&self.firmware_dir)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let meta = e.metadata().ok()?;
                        (meta.is_file() && firmware_name_ok(&name)).then_some((name, meta.len()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Where an uploaded image named `name` is written (a temporary file, renamed into place by
    /// [`FirmwareUpload::finish`], so a reader never downloads half a file).
    pub fn firmware_upload(&self, name: &str) -> Result<FirmwareUpload, ReaderError> {
        if !firmware_name_ok(name) {
            return Err(ReaderError::Rejected(
                "a firmware file name is 1 to 128 of A-Z a-z 0-9 . _ - and does not start with a dot".into(),
            ));
        }
        Ok(FirmwareUpload {
            temporary: self.firmware_dir.join(format!(".upload-{name}")),
            target: self.firmware_dir.join(name),
        })
    }

    /// Closes a reader's link (it is re-established by its supervisor or by the reader).
    pub fn disconnect(&self, reader: &str, reason: &str) -> bool {
        let tx = self.links.lock().ok().and_then(|l| l.get(reader).map(|e| e.tx.clone()));
        tx.is_some_and(|tx| tx.try_send(LinkInput::Close(reason.to_string())).is_ok())
    }

    fn send_to_link(&self, reader: &str, origin: Origin, request: Request) -> bool {
        let tx = self.links.lock().ok().and_then(|l| l.get(reader).map(|e| e.tx.clone()));
        match tx {
            Some(tx) => tx.try_send(LinkInput::Command { origin, request }).is_ok(),
            None => false,
        }
    }

    /// Stores a rule change, then hands the work to the link when it is up; otherwise the
    /// change is applied by the reconciliation at the next connect.
    async fn hub_action(&self, reader: &str, action: HubAction, origin: Origin) {
        let outcome = self.apply_hub_action(reader, action).await;
        let (answer, follow_up) = match outcome {
            Ok(x) => x,
            Err(e) => {
                finish(origin, Outcome::Rejected(e.to_string()), self.plane.upgrade()).await;
                return;
            }
        };
        match follow_up {
            Some((desired, request)) => {
                let tx = self.links.lock().ok().and_then(|l| l.get(reader).map(|e| e.tx.clone()));
                let queued = match tx {
                    Some(tx) => tx
                        .try_send(LinkInput::Rules {
                            origin,
                            desired,
                            request,
                        })
                        .map_err(|e| match e.into_inner() {
                            LinkInput::Rules { origin, .. } | LinkInput::Command { origin, .. } => origin,
                            LinkInput::Close(_) => Origin::Nobody(String::new()),
                        }),
                    None => Err(origin),
                };
                if let Err(origin) = queued {
                    let mut answer = answer;
                    answer["applied"] = json!("at the next connection");
                    finish(origin, Outcome::Answer(answer), self.plane.upgrade()).await;
                }
            }
            None => finish(origin, Outcome::Answer(answer), self.plane.upgrade()).await,
        }
    }

    /// The storage part of a hub action: its answer, and the rules and link request to follow.
    async fn apply_hub_action(
        &self,
        reader: &str,
        action: HubAction,
    ) -> Result<(Json, Option<(DesiredRules, Request)>), ReaderError> {
        let r = reader.to_string();
        let dialect = self.dialect(reader);
        match action {
            HubAction::GetRules => Ok((self.rules(reader).await?.to_json(), None)),
            HubAction::Alarms => {
                let alarms = self.alarms(reader).await?;
                Ok((
                    json!({"alarms": alarms.iter().map(db::ActiveAlarm::to_json).collect::<Vec<_>>()}),
                    None,
                ))
            }
            HubAction::SetRules(rules) => {
                let summary =
                    json!({"stored": true, "select_specs": rules.select.len(), "access_specs": rules.access.len()});
                let stored = rules.clone();
                self.store
                    .write(move |ctx| db::replace_rules(ctx.conn(), &r, &stored, now_ms()))
                    .await?;
                Ok((summary, Some((rules, Request::Reconcile))))
            }
            HubAction::AddRule(kind, id, param) => {
                let rules = self
                    .store
                    .write(move |ctx| {
                        db::put_rule(ctx.conn(), &r, kind, id, &param, now_ms())?;
                        db::load_rules(ctx.conn(), &r, dialect)
                    })
                    .await?;
                Ok((
                    json!({"stored": true, "kind": kind.as_str(), "spec_id": id}),
                    Some((rules, Request::Reconcile)),
                ))
            }
            HubAction::DeleteRule(kind, id) => {
                let (existed, rules) = self
                    .store
                    .write(move |ctx| {
                        let existed = db::delete_rule(ctx.conn(), &r, kind, id)?;
                        Ok((existed, db::load_rules(ctx.conn(), &r, dialect)?))
                    })
                    .await?;
                if !existed {
                    return Err(ReaderError::Rejected(format!("no {} rule {id}", kind.as_str())));
                }
                Ok((
                    json!({"deleted": true, "kind": kind.as_str(), "spec_id": id}),
                    Some((rules, Request::Reconcile)),
                ))
            }
            HubAction::RuleState { spec_id, state } => {
                let rules = self
                    .store
                    .write(move |ctx| {
                        let mut rules = db::load_rules(ctx.conn(), &r, dialect)?;
                        let Some(param) = rules.select.get(&spec_id) else {
                            return Ok(None);
                        };
                        let updated = rules::with_select_state(param, state);
                        db::put_rule(ctx.conn(), &r, RuleKind::Select, spec_id, &updated, now_ms())?;
                        rules.select.insert(spec_id, updated);
                        Ok(Some(rules))
                    })
                    .await?
                    .ok_or_else(|| ReaderError::Rejected(format!("no select rule {spec_id} for `{reader}`")))?;
                Ok((
                    json!({"stored": true, "spec_id": spec_id, "state": state.name()}),
                    Some((rules, Request::SpecState { spec_id, state })),
                ))
            }
        }
    }

    /// Claims `reader` for a new live link, replacing (closing) an older one.
    pub(crate) fn claim(&self, reader: &str) -> (u64, mpsc::Receiver<LinkInput>, CancellationToken) {
        let connection = self.next_connection.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let replaced = CancellationToken::new();
        let entry = LinkEntry {
            connection,
            tx,
            replaced: replaced.clone(),
        };
        let old = self
            .links
            .lock()
            .ok()
            .and_then(|mut l| l.insert(reader.to_string(), entry));
        if let Some(old) = old {
            tracing::info!(reader, "a new link replaces the previous one");
            old.replaced.cancel();
        }
        (connection, rx, replaced)
    }

    /// Forgets `reader`'s link if `connection` still holds it.
    pub(crate) fn release(&self, reader: &str, connection: u64) {
        if let Ok(mut l) = self.links.lock() {
            if l.get(reader).is_some_and(|e| e.connection == connection) {
                l.remove(reader);
            }
        }
    }

    /// Makes room for the unconfigured reader `id` (named by its serial) before it is shown:
    /// at `readers.max_unknown` unconfigured readers, the one whose link went down longest ago is
    /// forgotten (its info and its metrics). `false` when every unconfigured reader is up.
    pub(crate) fn admit_unknown(&self, id: &str) -> bool {
        let Ok(mut infos) = self.infos.lock() else {
            return false;
        };
        if infos.contains_key(id) {
            return true;
        }
        let unknown = infos.values().filter(|i| !i.configured).count();
        if unknown < self.max_unknown {
            return true;
        }
        let stalest = infos
            .values()
            .filter(|i| !i.configured && i.link != "up")
            .min_by(|a, b| a.since.cmp(&b.since))
            .map(|i| i.id.clone());
        let Some(stalest) = stalest else {
            self.metrics.limits.reader_refused_total.fetch_add(1, Relaxed);
            tracing::warn!(
                reader = id,
                max = self.max_unknown,
                "refused: readers.max_unknown unconfigured readers are up"
            );
            return false;
        };
        infos.remove(&stalest);
        drop(infos);
        if let Ok(mut m) = self.metrics.readers.lock() {
            m.remove(&stalest);
        }
        self.metrics.limits.reader_infos_evicted_total.fetch_add(1, Relaxed);
        tracing::info!(
            forgotten = stalest,
            reader = id,
            "readers.max_unknown reached: the stalest unconfigured reader is forgotten"
        );
        true
    }

    /// Updates what the service shows about a reader.
    pub(crate) fn update_info(&self, reader: &str, f: impl FnOnce(&mut ReaderInfo)) {
        if let Ok(mut infos) = self.infos.lock() {
            let info = infos.entry(reader.to_string()).or_insert_with(|| ReaderInfo {
                id: reader.to_string(),
                link: "down".into(),
                ..ReaderInfo::default()
            });
            f(info);
        }
    }

    /// Link state for the metrics and the reader list.
    pub(crate) fn set_link(&self, reader: &str, up: bool, reason: &str, dialect: Dialect, sn: Option<[u8; 8]>) {
        let now = now_rfc3339();
        self.update_info(reader, |i| {
            i.link = if up { "up" } else { "down" }.into();
            i.reason = Some(reason.to_string());
            i.since = Some(now.clone());
            i.dialect = dialect.as_str().into();
            if let Some(sn) = sn {
                i.device_sn = Some(crate::protocol::gbt37987::model::hex_string(&sn));
            }
        });
        if let Ok(mut m) = self.metrics.readers.lock() {
            let state = m.entry(reader.to_string()).or_default();
            state.link_up = up;
            if up {
                state.last_seen = Some(now);
            }
        }
    }

    pub(crate) fn plane(&self) -> Option<Arc<CommandPlane>> {
        self.plane.upgrade()
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }
}

/// A firmware image being uploaded into the firmware folder.
#[derive(Debug, Clone)]
pub struct FirmwareUpload {
    /// Write here first.
    pub temporary: PathBuf,
    /// Where [`FirmwareUpload::finish`] puts it.
    pub target: PathBuf,
}

impl FirmwareUpload {
    /// Moves the complete file into place.
    pub fn finish(&self) -> std::io::Result<()> {
        std::fs::rename(&self.temporary, &self.target)
    }

    /// Removes the temporary file of a failed upload.
    pub fn abandon(&self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Whether `name` may name a file in the firmware folder (the same rule as `firmware_download`'s
/// `file`, and nothing a shell or a path could misread).
pub fn firmware_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Ends a command for whoever waits for it.
pub(crate) async fn finish(origin: Origin, outcome: Outcome, plane: Option<Arc<CommandPlane>>) {
    match origin {
        Origin::Plane(id) => {
            if let Some(plane) = plane {
                if let Err(e) = plane.complete(id, outcome).await {
                    tracing::warn!(id, "recording a command result failed: {e}");
                }
            }
        }
        Origin::Direct(tx) => {
            let _ = tx.send(outcome);
        }
        Origin::Nobody(what) => match outcome {
            Outcome::Answer(_) => tracing::debug!("{what}: done"),
            other => tracing::warn!("{what}: {other:?}"),
        },
    }
}

fn describe(d: &ReaderDevice) -> (&'static str, String) {
    match &d.link {
        ReaderLink::Tcp(addr) => ("tcp-dial", addr.to_string()),
        ReaderLink::Serial { port, baud, address } => {
            ("serial", format!("{} {baud} bit/s, address {address}", port.display()))
        }
        ReaderLink::DialIn => ("tcp-listen", String::new()),
    }
}

impl DeviceGateway for ReaderService {
    fn online(&self) -> Vec<String> {
        self.links
            .lock()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn deliver(&self, command: DeviceCommand) -> Result<(), DeviceCommand> {
        let parsed = request::parse(&command.payload, self.dialect(&command.device));
        match parsed {
            Ok(Command::Link(request)) => {
                let tx = self
                    .links
                    .lock()
                    .ok()
                    .and_then(|l| l.get(&command.device).map(|e| e.tx.clone()));
                let Some(tx) = tx else { return Err(command) };
                tx.try_send(LinkInput::Command {
                    origin: Origin::Plane(command.id),
                    request,
                })
                .map_err(|_| command)
            }
            Ok(Command::Hub(action)) => {
                let Some(service) = self.me.upgrade() else {
                    return Err(command);
                };
                let reader = command.device.clone();
                tokio::spawn(async move { service.hub_action(&reader, action, Origin::Plane(command.id)).await });
                Ok(())
            }
            Err(reason) => {
                let plane = self.plane.upgrade();
                tokio::spawn(finish(Origin::Plane(command.id), Outcome::Rejected(reason), plane));
                Ok(())
            }
        }
    }
}

/// A timeout for direct commands, beyond the link's own request timeouts.
pub const DIRECT_COMMAND_LIMIT: Duration = Duration::from_secs(900);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{EdgeInfo, Target};
    use crate::config::ReaderDialect;
    use crate::store::StoreOptions;

    async fn service(dir: &std::path::Path) -> (Arc<ReaderService>, Store, Arc<CommandPlane>, CancellationToken) {
        service_with(dir, 64).await
    }

    async fn service_with(
        dir: &std::path::Path,
        max_unknown: usize,
    ) -> (Arc<ReaderService>, Store, Arc<CommandPlane>, CancellationToken) {
        let metrics = Arc::new(Metrics::default());
        let (store, _) = Store::open(
            StoreOptions {
                path: dir.join("r.db"),
                max_bytes: 1 << 24,
                edge_id: "e".into(),
            },
            metrics.clone(),
        )
        .unwrap();
        let edge = EdgeInfo {
            edge_id: "e".into(),
            version: "t".into(),
            started_ms: 0,
        };
        let plane = Arc::new(CommandPlane::new(
            store.clone(),
            edge,
            Duration::from_secs(60),
            metrics.clone(),
        ));
        let config = ReadersConfig {
            listen: None,
            tls: None,
            allowed_serials: None,
            max_unknown,
            max_buffered_bytes: crate::config::DEFAULT_MAX_BUFFERED,
            dialect: ReaderDialect::Hb2017,
            keepalive_interval: Duration::from_secs(1),
            offline_after: ReadersConfig::DEFAULT_OFFLINE_AFTER,
            devices: Vec::new(),
        };
        let deps = ReaderDeps {
            store: store.clone(),
            plane: plane.clone(),
            metrics,
            firmware_dir: dir.to_path_buf(),
        };
        let stop = CancellationToken::new();
        let (service, _task) = start(&config, deps, stop.clone()).await.unwrap();
        (service, store, plane, stop)
    }

    #[tokio::test]
    async fn unknown_dial_in_readers_are_bounded_and_the_stalest_one_that_is_down_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (service, store, _plane, stop) = service_with(dir.path(), 2).await;
        let counters = &service.metrics().limits;
        let up = |id: &str| service.set_link(id, true, "connected", Dialect::Hb2017, None);
        assert!(service.admit_unknown("aa01"));
        up("aa01");
        assert!(service.admit_unknown("aa02"));
        up("aa02");
        // Both unknown readers are up: a third is refused, nobody is forgotten.
        assert!(!service.admit_unknown("aa03"));
        assert_eq!(counters.reader_refused_total.load(Relaxed), 1);
        assert_eq!(counters.reader_infos_evicted_total.load(Relaxed), 0);
        // A known reader is always admitted again.
        assert!(service.admit_unknown("aa01"));
        service.set_link("aa01", false, "closed", Dialect::Hb2017, None);
        tokio::time::sleep(Duration::from_millis(5)).await;
        service.set_link("aa02", false, "closed", Dialect::Hb2017, None);
        // aa01 went down first: it is the one forgotten, with its metrics.
        assert!(service.admit_unknown("aa03"));
        up("aa03");
        assert_eq!(counters.reader_infos_evicted_total.load(Relaxed), 1);
        let ids: Vec<String> = service.readers().into_iter().map(|i| i.id).collect();
        assert!(
            !ids.contains(&"aa01".to_string()) && ids.contains(&"aa02".to_string()),
            "{ids:?}"
        );
        assert!(!service.metrics().readers.lock().unwrap().contains_key("aa01"));
        assert_eq!(ids.iter().filter(|i| i.starts_with("aa")).count(), 2);
        stop.cancel();
        store.close().await;
    }

    #[tokio::test]
    async fn rules_for_an_offline_reader_are_stored_and_wait_for_its_next_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (service, store, _plane, stop) = service(dir.path()).await;
        let rule = rules::default_select_spec(7, rules::SpecState::Inactive, 0, &[1]);
        let answer = service
            .execute("gate", &json!({"action": "set_rules", "select_specs": [rule]}))
            .await
            .unwrap();
        assert_eq!(answer["applied"], "at the next connection");
        let started = service
            .execute("gate", &json!({"action": "start_rule", "spec_id": 7}))
            .await
            .unwrap();
        assert_eq!(started["state"], "active");
        let held = service.rules("gate").await.unwrap();
        assert_eq!(
            held.select.get(&7).and_then(rules::select_state),
            Some(rules::SpecState::Active)
        );
        assert!(matches!(
            service
                .execute("gate", &json!({"action": "start_rule", "spec_id": 8}))
                .await,
            Err(ReaderError::Rejected(_))
        ));
        assert!(matches!(
            service.execute("gate", &json!({"action": "reset"})).await,
            Err(ReaderError::Offline(_))
        ));
        assert!(matches!(
            service.execute("gate", &json!({"action": "fly"})).await,
            Err(ReaderError::Rejected(_))
        ));
        stop.cancel();
        store.close().await;
    }

    #[tokio::test]
    async fn cloud_commands_end_in_one_result_each_even_when_they_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let (_service, store, plane, stop) = service(dir.path()).await;
        let target = Target::Device {
            protocol: Protocol::Gbt37987,
            device: "gate".into(),
        };
        plane
            .submit(target.clone(), br#"{"request_id":"a","action":"alarms"}"#)
            .await
            .unwrap();
        plane
            .submit(target.clone(), br#"{"request_id":"b","action":"nope"}"#)
            .await
            .unwrap();
        // A link command for an offline reader stays queued: no result yet.
        plane
            .submit(target, br#"{"request_id":"c","action":"reset"}"#)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut settled = false;
        let results = loop {
            let results: Vec<(String, String)> = store
                .read(|c| {
                    let mut stmt =
                        c.prepare("SELECT payload FROM outbox WHERE topic = 'gbt37987/gate/up/response' ORDER BY seq")?;
                    let rows = stmt
                        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows
                        .into_iter()
                        .filter_map(|p| serde_json::from_slice::<Json>(&p).ok())
                        .map(|v| {
                            (
                                v["request_id"].as_str().unwrap_or("").to_string(),
                                v["result"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect())
                })
                .await
                .unwrap();
            if settled || std::time::Instant::now() > deadline {
                break results;
            }
            // Once two results are in, look once more a little later: the third must not come.
            if results.len() >= 2 {
                settled = true;
                tokio::time::sleep(Duration::from_millis(300)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        assert_eq!(
            results,
            vec![
                ("a".to_string(), "answer".to_string()),
                ("b".to_string(), "rejected".to_string())
            ]
        );
        stop.cancel();
        store.close().await;
    }
}
