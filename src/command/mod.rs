//! The command plane: downstream commands from the cloud (MQTT) or the web page, routed to the
//! edge itself or to a device gateway, persisted while the device is offline (up to a TTL), and
//! ended with exactly one result each (CONTRACT 4: the device's answer, `timeout`, `expired` or
//! `rejected` with a reason).
//!
//! Exactly-once results come from the database: a command's state moves out of `pending`/`sent`
//! in the same transaction that appends its result record, guarded by the current state.
//!
//! Owns: the `commands` table, topic routing, the edge's own actions. Must not: speak any device
//! protocol (gateways do, through [`DeviceGateway`]).

mod edge;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rusqlite::params;
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::store::{EnvelopeKey, Record, RecordClass, Store, StoreError};
use crate::time::now_ms;
use crate::topics::{self, Downstream, EdgeTopic};

pub use crate::link::command::{DeviceCommand, DeviceGateway, Outcome};
pub use edge::{status, ActionFuture, EdgeAction, EdgeActions, EdgeInfo};

/// The device protocols commands can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Gbt32960,
    Jt808,
    Gbt37987,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Gbt32960 => "gbt32960",
            Protocol::Jt808 => "jt808",
            Protocol::Gbt37987 => "gbt37987",
        }
    }

    fn from_name(s: &str) -> Option<Protocol> {
        match s {
            "gbt32960" => Some(Protocol::Gbt32960),
            "jt808" => Some(Protocol::Jt808),
            "gbt37987" => Some(Protocol::Gbt37987),
            _ => None,
        }
    }

    /// Topic on which results and device answers for `device` are published.
    pub fn response_topic(self, device: &str) -> String {
        match self {
            Protocol::Gbt32960 => topics::gbt32960_up(device, "response"),
            Protocol::Jt808 => topics::jt808_up(device),
            Protocol::Gbt37987 => topics::gbt37987_up(device, "response"),
        }
    }

    fn envelope(self) -> EnvelopeKey {
        match self {
            Protocol::Gbt32960 => EnvelopeKey::Capitalised,
            _ => EnvelopeKey::Lower,
        }
    }
}

/// Whom a downstream message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Edge,
    Device { protocol: Protocol, device: String },
}

impl Target {
    /// The stored form, `edge` or `{protocol}/{device}`.
    fn key(&self) -> String {
        match self {
            Target::Edge => "edge".to_string(),
            Target::Device { protocol, device } => format!("{}/{device}", protocol.name()),
        }
    }

    fn from_key(key: &str) -> Option<Target> {
        if key == "edge" {
            return Some(Target::Edge);
        }
        let (p, d) = key.split_once('/')?;
        Some(Target::Device {
            protocol: Protocol::from_name(p)?,
            device: d.to_string(),
        })
    }
}

/// Errors of command submission.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} commands are already waiting for their result; try again when one has ended")]
    Busy(usize),
    #[error("a command with request_id `{0}` is already waiting for its result")]
    DuplicateRequest(String),
}

/// Commands that may wait for their result at once through [`CommandPlane::submit_and_wait`].
pub const MAX_WAITING_COMMANDS: usize = 256;

type WaiterKey = (String, String);

/// The command plane; shared as `Arc<CommandPlane>`.
pub struct CommandPlane {
    store: Store,
    edge: EdgeInfo,
    ttl: Duration,
    /// The longest TTL a command may ask for.
    max_ttl: Duration,
    gateways: RwLock<HashMap<Protocol, Arc<dyn DeviceGateway>>>,
    edge_actions: EdgeActions,
    metrics: Arc<Metrics>,
    /// Callers of `submit_and_wait` by (target key, request id), told the command's one result.
    waiters: Mutex<HashMap<WaiterKey, tokio::sync::oneshot::Sender<Outcome>>>,
    /// Request ids of edge commands being run (a second delivery meanwhile is not run).
    running_edge: Mutex<HashSet<String>>,
}

/// An edge command's claim on its request id while it runs.
struct RunningGuard<'a> {
    plane: &'a CommandPlane,
    request_id: Option<String>,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let (Some(rid), Ok(mut running)) = (&self.request_id, self.plane.running_edge.lock()) {
            running.remove(rid);
        }
    }
}

/// `uplink.max_command_ttl` unless configured.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest command payload accepted.
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

impl CommandPlane {
    pub fn new(store: Store, edge: EdgeInfo, ttl: Duration, metrics: Arc<Metrics>) -> CommandPlane {
        CommandPlane {
            store,
            edge,
            ttl,
            max_ttl: ttl.max(DEFAULT_MAX_TTL),
            gateways: RwLock::new(HashMap::new()),
            edge_actions: EdgeActions::default(),
            metrics,
            waiters: Mutex::new(HashMap::new()),
            running_edge: Mutex::new(HashSet::new()),
        }
    }

    /// Takes a command like [`CommandPlane::submit`] (same path, same result record on the
    /// response topic) and waits up to `limit` for its one result: the web page's door. `None`
    /// when it has not ended by then (a device command waiting for its device keeps waiting in
    /// the queue and still ends in exactly one result).
    pub async fn submit_and_wait(
        &self,
        target: Target,
        command: &Value,
        limit: Duration,
    ) -> Result<Option<Outcome>, CommandError> {
        let request_id = match command.get("request_id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let key = (target.key(), request_id.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut waiters = self.waiters.lock().map_err(|_| CommandError::Busy(0))?;
            if waiters.len() >= MAX_WAITING_COMMANDS {
                return Err(CommandError::Busy(waiters.len()));
            }
            if waiters.contains_key(&key) {
                return Err(CommandError::DuplicateRequest(request_id));
            }
            waiters.insert(key.clone(), tx);
        }
        let payload = serde_json::to_vec(command).unwrap_or_default();
        let submitted = self.submit(target, &payload).await;
        let outcome = match submitted {
            Ok(()) => tokio::time::timeout(limit, rx).await.ok().and_then(Result::ok),
            Err(e) => {
                self.forget_waiter(&key);
                return Err(e);
            }
        };
        self.forget_waiter(&key);
        Ok(outcome)
    }

    fn forget_waiter(&self, key: &WaiterKey) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(key);
        }
    }

    /// Tells a `submit_and_wait` caller its command's result.
    fn notify(&self, target: &str, request_id: &str, outcome: &Outcome) {
        let waiter = self
            .waiters
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&(target.to_string(), request_id.to_string())));
        if let Some(tx) = waiter {
            let _ = tx.send(outcome.clone());
        }
    }

    /// Caps the TTL commands may ask for (`uplink.max_command_ttl`).
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> CommandPlane {
        self.max_ttl = max_ttl;
        self
    }

    /// The edge's own actions; services register theirs here at wiring time.
    pub fn edge_actions(&self) -> &EdgeActions {
        &self.edge_actions
    }

    /// Who this edge is.
    pub fn edge(&self) -> &EdgeInfo {
        &self.edge
    }

    /// Makes `protocol`'s gateway reachable; commands for it are queued from now on.
    pub fn register(&self, protocol: Protocol, gateway: Arc<dyn DeviceGateway>) {
        if let Ok(mut g) = self.gateways.write() {
            g.insert(protocol, gateway);
        }
    }

    /// Whether `protocol`'s gateway is registered (the protocol is enabled).
    pub fn has_gateway(&self, protocol: Protocol) -> bool {
        self.gateways.read().map(|g| g.contains_key(&protocol)).unwrap_or(false)
    }

    /// Devices of `protocol` connected now, sorted.
    pub fn online(&self, protocol: Protocol) -> Vec<String> {
        let gateway = self.gateways.read().ok().and_then(|g| g.get(&protocol).cloned());
        let mut ids = gateway.map(|g| g.online()).unwrap_or_default();
        ids.sort();
        ids
    }

    /// Which target a downstream topic (prefix already removed) addresses.
    pub fn route(&self, topic: &str) -> Option<Target> {
        let device = |protocol, device: &str| Target::Device {
            protocol,
            device: device.to_string(),
        };
        match topics::parse_downstream(topic)? {
            Downstream::Edge(id) => (id == self.edge.edge_id).then_some(Target::Edge),
            Downstream::Gbt32960(vin) => Some(device(Protocol::Gbt32960, vin)),
            Downstream::Jt808(phone) => Some(device(Protocol::Jt808, phone)),
            Downstream::Gbt37987(reader) => Some(device(Protocol::Gbt37987, reader)),
        }
    }

    /// The topic filters (without prefix) the uplink subscribes to.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut v = vec![topics::edge(&self.edge.edge_id, EdgeTopic::Cmd)];
        v.extend(topics::DOWNSTREAM_FILTERS.iter().map(|s| s.to_string()));
        v
    }

    /// Takes a downstream message for `topic` (prefix removed). Returns once the command is
    /// persisted (device commands) or answered (edge commands); the MQTT message may then be acked.
    pub async fn submit_topic(&self, topic: &str, payload: &[u8]) -> Result<(), CommandError> {
        match self.route(topic) {
            Some(target) => self.submit(target, payload).await,
            None => {
                tracing::warn!(topic, "downstream message on an unknown topic dropped");
                Ok(())
            }
        }
    }

    /// Takes a command for `target` from any source (MQTT, web).
    pub async fn submit(&self, target: Target, payload: &[u8]) -> Result<(), CommandError> {
        self.metrics
            .uplink
            .commands_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let parsed = if payload.len() > MAX_COMMAND_BYTES {
            Err(format!(
                "command of {} bytes exceeds {MAX_COMMAND_BYTES}",
                payload.len()
            ))
        } else {
            serde_json::from_slice::<Value>(payload)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| {
                    if v.is_object() {
                        Ok(v)
                    } else {
                        Err("not a JSON object".to_string())
                    }
                })
        };
        let request_id = parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get("request_id"))
            .map(|r| match r {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        let command = match parsed {
            Ok(v) => v,
            Err(reason) => {
                tracing::warn!(target = %target.key(), "command rejected: {reason}");
                return Ok(self
                    .append_result(&target, &request_id, Outcome::Rejected(reason))
                    .await?);
            }
        };
        match target {
            Target::Edge => {
                // A command the broker delivers again (persistent session, an acknowledgement
                // lost with a connection) runs once and has one result.
                let Some(_running) = self.begin_edge_command(&request_id).await? else {
                    tracing::info!(request_id, "edge command delivered again: already taken, not run twice");
                    return Ok(());
                };
                let outcome = self.edge_actions.execute(&self.edge, &self.metrics, command).await;
                Ok(self.record_edge_result(&request_id, outcome).await?)
            }
            Target::Device { protocol, ref device } => {
                let gateway = self.gateways.read().ok().and_then(|g| g.get(&protocol).cloned());
                if gateway.is_none() {
                    let reason = format!("{} is not enabled on this edge", protocol.name());
                    return Ok(self
                        .append_result(&target, &request_id, Outcome::Rejected(reason))
                        .await?);
                }
                let asked_ms = command
                    .get("ttl_s")
                    .and_then(Value::as_u64)
                    .map(|s| s.saturating_mul(1000))
                    .unwrap_or(self.ttl.as_millis() as u64);
                let max_ms = u64::try_from(self.max_ttl.as_millis()).unwrap_or(u64::MAX);
                if asked_ms > max_ms {
                    self.metrics
                        .limits
                        .command_ttl_capped_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        request_id,
                        asked_s = asked_ms / 1000,
                        max_s = max_ms / 1000,
                        "command TTL cut to uplink.max_command_ttl"
                    );
                }
                let ttl_ms = asked_ms.min(max_ms).min(i64::MAX as u64) as i64;
                let key = target.key();
                let body = serde_json::to_vec(&command).unwrap_or_default();
                let rid = request_id.clone();
                let id = self
                    .store
                    .write(move |ctx| {
                        let now = now_ms();
                        // Once per request id: a command delivered again is not queued again.
                        let inserted = ctx.conn().execute(
                            "INSERT INTO commands(target, request_id, payload, state, created_ms, expires_ms)
                             SELECT ?1, ?2, ?3, 'pending', ?4, ?5
                             WHERE ?2 = '' OR NOT EXISTS
                               (SELECT 1 FROM commands WHERE target = ?1 AND request_id = ?2)",
                            params![key, rid, body, now, now.saturating_add(ttl_ms)],
                        )? == 1;
                        Ok(inserted.then(|| ctx.conn().last_insert_rowid()))
                    })
                    .await?;
                let Some(id) = id else {
                    self.metrics
                        .uplink
                        .commands_repeated_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(target = %target.key(), request_id, "command delivered again: already queued, ignored");
                    return Ok(());
                };
                tracing::info!(target = %target.key(), id, request_id, "command queued");
                self.dispatch(protocol, device).await
            }
        }
    }

    /// Delivers every pending command of `device` to its gateway (call when the device connects).
    pub async fn device_online(&self, protocol: Protocol, device: &str) -> Result<(), CommandError> {
        self.dispatch(protocol, device).await
    }

    async fn dispatch(&self, protocol: Protocol, device: &str) -> Result<(), CommandError> {
        let Some(gateway) = self.gateways.read().ok().and_then(|g| g.get(&protocol).cloned()) else {
            return Ok(());
        };
        let key = Target::Device {
            protocol,
            device: device.to_string(),
        }
        .key();
        let now = now_ms();
        let pending: Vec<(i64, String, Vec<u8>)> = self
            .store
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, request_id, payload FROM commands
                     WHERE target = ?1 AND state = 'pending' AND expires_ms > ?2 ORDER BY id",
                )?;
                let rows = stmt
                    .query_map(params![key, now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        for (id, request_id, payload) in pending {
            let payload = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            // Marked sent before delivery so a fast answer finds it in the `sent` state.
            let marked = self
                .store
                .write(move |ctx| {
                    Ok(ctx.conn().execute(
                        "UPDATE commands SET state='sent', attempts=attempts+1 WHERE id=?1 AND state='pending'",
                        [id],
                    )? == 1)
                })
                .await?;
            if !marked {
                continue;
            }
            let command = DeviceCommand {
                id,
                request_id,
                device: device.to_string(),
                payload,
            };
            if gateway.deliver(command).is_err() {
                self.release(id).await?;
                break;
            }
        }
        Ok(())
    }

    /// Puts every command delivered by a previous run back in the queue: the connection that
    /// would have answered it is gone (restart, crash, power cut). Call once at start.
    pub async fn requeue_in_flight(&self) -> Result<usize, CommandError> {
        Ok(self
            .store
            .write(|ctx| {
                Ok(ctx
                    .conn()
                    .execute("UPDATE commands SET state='pending' WHERE state='sent'", [])?)
            })
            .await?)
    }

    /// Puts a delivered but unanswered command back in the queue (the device disconnected).
    pub async fn release(&self, id: i64) -> Result<(), CommandError> {
        self.store
            .write(move |ctx| {
                ctx.conn()
                    .execute("UPDATE commands SET state='pending' WHERE id=?1 AND state='sent'", [id])?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Ends command `id` with `outcome`: one result, the first completion wins.
    pub async fn complete(&self, id: i64, outcome: Outcome) -> Result<bool, CommandError> {
        let state = outcome_state(&outcome);
        let recorded = outcome.clone();
        let ended = self
            .store
            .write(move |ctx| {
                let row: Option<(String, String)> = ctx
                    .conn()
                    .query_row(
                        "UPDATE commands SET state=?2, finished_ms=?3 WHERE id=?1 AND state IN ('pending','sent')
                         RETURNING target, request_id",
                        params![id, state, now_ms()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                let Some((target, request_id)) = row else {
                    return Ok(None);
                };
                if let Some(parsed) = Target::from_key(&target) {
                    let edge_id = ctx.edge_id().to_string();
                    ctx.append(&result_record(&parsed, &request_id, &recorded, &edge_id))?;
                }
                Ok(Some((target, request_id)))
            })
            .await?;
        match ended {
            Some((target, request_id)) => {
                self.notify(&target, &request_id, &outcome);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Ends every command whose TTL has passed with `expired`; returns how many.
    pub async fn expire_due(&self) -> Result<usize, CommandError> {
        let expired = self
            .store
            .write(move |ctx| {
                let now = now_ms();
                let expired: Vec<(String, String)> = {
                    let mut stmt = ctx.conn().prepare_cached(
                        "UPDATE commands SET state='expired', finished_ms=?1
                         WHERE state IN ('pending','sent') AND expires_ms <= ?1 RETURNING target, request_id",
                    )?;
                    let rows = stmt
                        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<_>, _>>()?;
                    rows
                };
                let edge_id = ctx.edge_id().to_string();
                for (target, request_id) in &expired {
                    if let Some(target) = Target::from_key(target) {
                        ctx.append(&result_record(&target, request_id, &Outcome::Expired, &edge_id))?;
                    }
                }
                Ok(expired)
            })
            .await?;
        for (target, request_id) in &expired {
            self.notify(target, request_id, &Outcome::Expired);
        }
        Ok(expired.len())
    }

    /// Claims an edge command's request id for one run. `None` when it runs or ran already
    /// (delivered again); the guard lets it go when the run ends.
    async fn begin_edge_command(&self, request_id: &str) -> Result<Option<RunningGuard<'_>>, StoreError> {
        if request_id.is_empty() {
            return Ok(Some(RunningGuard {
                plane: self,
                request_id: None,
            }));
        }
        let rid = request_id.to_string();
        let ran = self
            .store
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT COUNT(*) FROM commands WHERE target = 'edge' AND request_id = ?1")?
                        .query_row([rid], |r| r.get::<_, i64>(0))?
                        > 0,
                )
            })
            .await?;
        let fresh = !ran
            && self
                .running_edge
                .lock()
                .map(|mut r| r.insert(request_id.to_string()))
                .unwrap_or(false);
        if !fresh {
            self.metrics
                .uplink
                .commands_repeated_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(None);
        }
        Ok(Some(RunningGuard {
            plane: self,
            request_id: Some(request_id.to_string()),
        }))
    }

    /// Appends an edge command's result and remembers its request id, in one transaction; a
    /// request id that already has its result gets no second one.
    async fn record_edge_result(&self, request_id: &str, outcome: Outcome) -> Result<(), StoreError> {
        self.finish_edge_command(request_id, outcome).await.map(|_| ())
    }

    /// Ends the edge command `request_id` with `outcome` from outside its action: for actions
    /// whose end comes later than their call (an update confirmed after the restart it needs).
    /// Exactly once per request id (also across restarts): returns whether this call recorded it.
    pub async fn finish_edge_command(&self, request_id: &str, outcome: Outcome) -> Result<bool, StoreError> {
        let record = result_record(&Target::Edge, request_id, &outcome, &self.edge.edge_id);
        let (rid, state) = (request_id.to_string(), outcome_state(&outcome));
        let recorded = self
            .store
            .write(move |ctx| {
                if !rid.is_empty() {
                    let now = now_ms();
                    let inserted = ctx.conn().execute(
                        "INSERT INTO commands(target, request_id, payload, state, created_ms, expires_ms, finished_ms)
                         SELECT 'edge', ?1, x'', ?2, ?3, ?3, ?3
                         WHERE NOT EXISTS (SELECT 1 FROM commands WHERE target = 'edge' AND request_id = ?1)",
                        params![rid, state, now],
                    )? == 1;
                    if !inserted {
                        return Ok(false);
                    }
                }
                ctx.append(&record)?;
                Ok(true)
            })
            .await?;
        if recorded {
            self.notify(&Target::Edge.key(), request_id, &outcome);
        }
        Ok(recorded)
    }

    async fn append_result(&self, target: &Target, request_id: &str, outcome: Outcome) -> Result<(), StoreError> {
        let record = result_record(target, request_id, &outcome, &self.edge.edge_id);
        self.store.append(record).await?;
        self.notify(&target.key(), request_id, &outcome);
        Ok(())
    }

    /// Periodically expires commands; runs until `shutdown`.
    pub async fn run_expiry(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    match self.expire_due().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(n, "commands expired"),
                        Err(e) => tracing::warn!("command expiry failed, retrying next tick: {e}"),
                    }
                }
            }
        }
    }
}

fn outcome_state(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Answer(_) => "answered",
        Outcome::Timeout => "timeout",
        Outcome::Rejected(_) => "rejected",
        Outcome::Expired => "expired",
        Outcome::Failed(_) => "failed",
    }
}

fn result_record(target: &Target, request_id: &str, outcome: &Outcome, edge_id: &str) -> Record {
    let mut body = json!({"request_id": request_id, "ok": matches!(outcome, Outcome::Answer(_))});
    match outcome {
        Outcome::Answer(v) => {
            body["result"] = json!("answer");
            body["answer"] = v.clone();
        }
        Outcome::Timeout => {
            body["result"] = json!("timeout");
            body["error"] = json!("the device did not answer");
        }
        Outcome::Expired => {
            body["result"] = json!("expired");
            body["error"] = json!("the command's TTL passed before the device took it");
        }
        Outcome::Rejected(reason) => {
            body["result"] = json!("rejected");
            body["error"] = json!(reason);
        }
        Outcome::Failed(reason) => {
            body["result"] = json!("failed");
            body["error"] = json!(reason);
        }
    }
    let (topic, envelope, device) = match target {
        Target::Edge => (
            topics::edge(edge_id, EdgeTopic::CmdResult),
            EnvelopeKey::Lower,
            "edge".to_string(),
        ),
        Target::Device { protocol, device } => (
            protocol.response_topic(device),
            protocol.envelope(),
            format!("{}/{device}", protocol.name()),
        ),
    };
    let mut record = Record::new(device, topic, RecordClass::Critical, &body);
    record.envelope = envelope;
    record
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::store::StoreOptions;

    /// A gateway whose devices are never connected: commands stay queued.
    struct Offline;

    impl DeviceGateway for Offline {
        fn deliver(&self, command: DeviceCommand) -> Result<(), DeviceCommand> {
            Err(command)
        }
    }

    #[tokio::test]
    async fn a_command_asking_for_a_ttl_past_the_maximum_is_cut_to_it_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let (store, _) = Store::open(
            StoreOptions {
                path: dir.path().join("c.db"),
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
        let plane = CommandPlane::new(store.clone(), edge, Duration::from_secs(60), metrics.clone())
            .with_max_ttl(Duration::from_secs(3600));
        plane.register(Protocol::Jt808, Arc::new(Offline));
        let target = |d: &str| Target::Device {
            protocol: Protocol::Jt808,
            device: d.into(),
        };
        plane
            .submit(
                target("t1"),
                br#"{"request_id":"long","header":{"msg_id":33031},"ttl_s":31536000}"#,
            )
            .await
            .unwrap();
        plane
            .submit(
                target("t2"),
                br#"{"request_id":"short","header":{"msg_id":33031},"ttl_s":600}"#,
            )
            .await
            .unwrap();
        assert_eq!(metrics.limits.command_ttl_capped_total.load(Relaxed), 1);
        let ttls: Vec<(String, i64)> = store
            .read(|c| {
                let mut stmt = c.prepare("SELECT request_id, expires_ms - created_ms FROM commands ORDER BY id")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(ttls, [("long".to_string(), 3_600_000), ("short".to_string(), 600_000)]);
        store.close().await;
    }
}
