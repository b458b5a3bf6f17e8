//! One reader link as a pure state machine: frames, ticks and commands in, actions out. No
//! sockets, no database, no clocks: time is passed in (`Now`), effects are returned (`Action`) for
//! the connection shell (`link.rs`) to perform in order.
//!
//! Owns: the link protocol of the facts sheet — connection acknowledgement first (TCP; on a serial
//! line any message from the reader's address, the edge probing with Keepalive), Keepalive both
//! ways (the edge answers the reader's and probes every `keepalive_interval`; 3 probes without a
//! KeepaliveAck, or silence past `silence_timeout`, close the link; a reader that refuses probes
//! with ErrorAck is then kept alive by its own keepalives), one request in flight at a
//! time with a per-request timeout, the connect-time work (reconcile the rules, read the general
//! capabilities, pull cached reports, synchronise alarms), and the upstream records of reports,
//! events, alarms and logs. Acknowledgements that confirm data (cached-report segments, log
//! segments) ride in `Persist::then_send`: the shell sends them only after the commit.
//! Must not: block, allocate from a peer-given length (the codec bounds frames), or keep
//! unbounded state (command queue, alarm-sync ids and tracked specs are capped).
//!
//! Split by concept: this file is the link phase (acknowledgement, keepalive, frames in, records
//! out); `jobs.rs` the work run one request at a time (single requests, reconciliation, rule
//! state changes, log pulls); `alarms.rs` the reader's alarm reports and their synchronisation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use super::db::{ActiveAlarm, AlarmChange};
use super::records::{self, edge_event, message_json, Leaf};
use super::request::Request;
use super::rules::{self, transition, DesiredRules, RuleKind, SpecEvent, SpecState, Step};
use crate::command::Outcome;
use crate::protocol::gbt37987::builders::{self, Addressing, LogKind, LogUpload, SpecCommand};
use crate::protocol::gbt37987::json::param_to_json;
use crate::protocol::gbt37987::{Body, Dialect, Header, Message, Parameter, Value};
use crate::store::Record;

/// Identifies a command handed to the session; the shell maps it back to its origin.
pub type Token = u64;

/// Time as the session sees it: a monotonic instant for timers, wall-clock ms for records.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall_ms: i64,
}

/// Link settings of one session.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub reader_id: String,
    pub dialect: Dialect,
    /// A serial line: no connection event, the edge probes until the reader answers.
    pub serial: bool,
    /// A reader with another device SN is refused.
    pub expected_sn: Option<[u8; 8]>,
    /// Period of the edge's Keepalive probes.
    pub keepalive_interval: Duration,
    /// Probes without an answer that close the link.
    pub max_missed_keepalives: u32,
    /// No frame at all for this long closes the link.
    pub silence_timeout: Duration,
    /// Time allowed for the connection acknowledgement.
    pub handshake_timeout: Duration,
    /// Time allowed for an answer (and between log segments).
    pub request_timeout: Duration,
    /// Time allowed for a firmware download (SetVersion is answered after the download).
    pub firmware_timeout: Duration,
}

impl SessionSettings {
    /// Defaults derived from the keepalive period.
    pub fn new(reader_id: &str, dialect: Dialect, keepalive_interval: Duration) -> SessionSettings {
        SessionSettings {
            reader_id: reader_id.to_string(),
            dialect,
            serial: false,
            expected_sn: None,
            keepalive_interval,
            max_missed_keepalives: 3,
            silence_timeout: keepalive_interval.saturating_mul(4).max(Duration::from_secs(1)),
            handshake_timeout: keepalive_interval.saturating_mul(2).max(Duration::from_secs(10)),
            request_timeout: Duration::from_secs(10),
            firmware_timeout: Duration::from_secs(600),
        }
    }
}

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Encode (in the session's dialect) and write.
    Send(Message),
    /// Commit records and table changes; only then send `then_send`.
    Persist(Persist),
    /// The link is established with the reader of this device SN.
    Up { device_sn: [u8; 8] },
    /// Close the link for this reason.
    Close(String),
    /// A command ended.
    Complete { token: Token, outcome: Outcome },
    /// An unusable frame (counted and logged by the shell).
    Bad(String),
    /// Something worth a warning that is not a bad frame (e.g. connect-time work that failed).
    Log(String),
    /// The reader's general capabilities (for the service's reader list).
    Capabilities(Json),
}

/// Records and alarm-table changes committed together, then acknowledgements.
#[derive(Debug, Default)]
pub struct Persist {
    pub records: Vec<Record>,
    pub alarms: Vec<AlarmChange>,
    pub then_send: Vec<Message>,
    /// Tag reports carried (for `tag_reports_total`).
    pub tags: u64,
}

/// Commands that may wait behind the one in flight.
pub const MAX_QUEUED: usize = 64;
/// Select specs tracked per reader (readers advertise a u8 maximum).
const MAX_TRACKED_SPECS: usize = 1024;
/// Alarm ids collected from one AlarmSync (all packages).
const MAX_SYNC_IDS: usize = 4096;
/// Unusable frames in a row that close the link.
pub const MAX_BAD_IN_ROW: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting {
        since: Instant,
        last_probe: Option<Instant>,
    },
    Up,
    Closed,
}

/// What an answered request changes in the tracked spec states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    None,
    AddSelect(u32),
    Spec(SpecCommand, u32),
    Capabilities,
    Version,
}

/// A request ready to go out (the number is assigned when it is sent).
mod alarms;
mod jobs;
#[cfg(test)]
mod tests;

use jobs::{Current, Job, Outgoing, Reconcile, Single, Work};

/// The session of one reader link.
pub struct Session {
    settings: SessionSettings,
    phase: Phase,
    device_sn: [u8; 8],
    next_number: u32,
    last_frame: Instant,
    keepalive_next: Instant,
    keepalive_outstanding: bool,
    keepalive_missed: u32,
    /// Number of the last probe sent (an ErrorAck naming it means the reader refuses probes).
    keepalive_number: u32,
    /// Cleared for readers that answer probes with ErrorAck: their own keepalives and the
    /// silence timeout then tell whether the link lives.
    keepalive_probes: bool,
    queue: VecDeque<Job>,
    running: Option<(Job, Option<Current>)>,
    desired: DesiredRules,
    specs: BTreeMap<u32, SpecState>,
    alarms: BTreeSet<u32>,
    alarm_sync: Option<(u32, BTreeSet<u32>)>,
    bad_in_row: u32,
}

impl Session {
    /// A session for a freshly opened transport, with the reader's desired rules and the alarm
    /// ids the edge holds as active.
    pub fn new(settings: SessionSettings, desired: DesiredRules, active_alarms: &[u32], now: Now) -> Session {
        Session {
            device_sn: settings.expected_sn.unwrap_or_default(),
            phase: Phase::Connecting {
                since: now.mono,
                last_probe: None,
            },
            settings,
            next_number: 1,
            last_frame: now.mono,
            keepalive_next: now.mono,
            keepalive_outstanding: false,
            keepalive_missed: 0,
            keepalive_number: 0,
            keepalive_probes: true,
            queue: VecDeque::new(),
            running: None,
            desired,
            specs: BTreeMap::new(),
            alarms: active_alarms.iter().copied().collect(),
            alarm_sync: None,
            bad_in_row: 0,
        }
    }

    /// Whether the link is established.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// The reader's device SN (zero until learned).
    pub fn device_sn(&self) -> [u8; 8] {
        self.device_sn
    }

    /// The dialect of this link.
    pub fn dialect(&self) -> Dialect {
        self.settings.dialect
    }

    /// Alarms the edge holds as active for this reader.
    pub fn active_alarms(&self) -> usize {
        self.alarms.len()
    }

    /// Select-spec states as last seen on the reader.
    pub fn spec_states(&self) -> &BTreeMap<u32, SpecState> {
        &self.specs
    }

    /// A sensible period for `handle_tick`.
    pub fn tick_period(&self) -> Duration {
        (self.settings.keepalive_interval / 10).clamp(Duration::from_millis(20), Duration::from_millis(250))
    }

    fn number(&mut self) -> u32 {
        let n = self.next_number;
        // Starts at 1 and wraps (the 2019 text); 0 is skipped so it never looks unset.
        self.next_number = self.next_number.checked_add(1).unwrap_or(1);
        n
    }

    fn to(&mut self) -> Addressing {
        Addressing {
            device_sn: self.device_sn,
            number: self.number(),
        }
    }

    /// Call once the transport is open: a serial line is probed at once.
    pub fn start(&mut self, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.settings.serial {
            self.probe(now, &mut actions);
        }
        actions
    }

    fn probe(&mut self, now: Now, actions: &mut Vec<Action>) {
        if let Phase::Connecting { since, .. } = self.phase {
            self.phase = Phase::Connecting {
                since,
                last_probe: Some(now.mono),
            };
        }
        let to = self.to();
        if let Ok(m) = builders::keepalive(to) {
            actions.push(Action::Send(m));
        }
    }

    /// Replaces the desired rules (applied by the next reconciliation).
    pub fn set_desired(&mut self, desired: DesiredRules) {
        self.desired = desired;
    }

    /// Queues a command. It runs once the link is up and the requests before it are done.
    pub fn handle_command(&mut self, token: Token, request: Request, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.phase == Phase::Closed {
            actions.push(Action::Complete {
                token,
                outcome: Outcome::Rejected("the link is closed".into()),
            });
            return actions;
        }
        if self.queue.len() >= MAX_QUEUED {
            actions.push(Action::Complete {
                token,
                outcome: Outcome::Rejected(format!("the reader has {MAX_QUEUED} commands queued")),
            });
            return actions;
        }
        match self.job_for(request) {
            Ok(work) => {
                self.queue.push_back(Job {
                    token: Some(token),
                    work,
                });
                self.pump(now, &mut actions);
            }
            Err(reason) => actions.push(Action::Complete {
                token,
                outcome: Outcome::Rejected(reason),
            }),
        }
        actions
    }

    /// A frame that could not be taken off the stream (framing error, already counted and
    /// logged by the shell): only its effect on the bad-frames-in-a-row limit is returned.
    pub fn handle_bad_frame(&mut self, _now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        self.count_bad(&mut actions);
        actions
    }

    fn count_bad(&mut self, actions: &mut Vec<Action>) {
        self.bad_in_row = self.bad_in_row.saturating_add(1);
        if self.bad_in_row >= MAX_BAD_IN_ROW {
            self.close_with(format!("{} unusable frames in a row", self.bad_in_row), actions);
        }
    }

    /// One complete message as taken off the stream (TCP frame or serial frame's message).
    pub fn handle_frame(&mut self, bytes: &[u8], now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.phase == Phase::Closed {
            return actions;
        }
        let message = match Message::decode(bytes, self.settings.dialect) {
            Ok(m) => m,
            Err(e) => {
                actions.push(Action::Bad(format!("undecodable message: {e}")));
                self.count_bad(&mut actions);
                return actions;
            }
        };
        self.last_frame = now.mono;
        match self.phase {
            Phase::Connecting { .. } => self.connecting(message, now, &mut actions),
            Phase::Up => {
                if message.header.device_sn != self.device_sn {
                    actions.push(Action::Bad(format!(
                        "message from device SN {} on the link of {}",
                        message.header.device_sn_hex(),
                        crate::protocol::gbt37987::model::hex_string(&self.device_sn)
                    )));
                    self.count_bad(&mut actions);
                    return actions;
                }
                self.bad_in_row = 0;
                self.dispatch(message, now, &mut actions);
                self.pump(now, &mut actions);
            }
            Phase::Closed => {}
        }
        actions
    }

    fn connecting(&mut self, message: Message, now: Now, actions: &mut Vec<Action>) {
        let sn = message.header.device_sn;
        if let Some(expected) = self.settings.expected_sn {
            if sn != expected {
                self.close_with(
                    format!(
                        "the reader's device SN {} is not the configured {}",
                        message.header.device_sn_hex(),
                        crate::protocol::gbt37987::model::hex_string(&expected)
                    ),
                    actions,
                );
                return;
            }
        }
        if let Some(status) = message.connection_attempt_status() {
            if status != 0 {
                self.close_with(
                    format!("the reader refused the connection: {}", connection_status_text(status)),
                    actions,
                );
                return;
            }
            self.bad_in_row = 0;
            self.go_up(sn, now, actions);
            // The acknowledgement itself is an event worth keeping.
            self.persist_event(&message, now, actions);
            self.pump(now, actions);
            return;
        }
        if message.name() == Some("Keepalive") {
            if let Ok(ack) = builders::keepalive_ack(&message.header) {
                actions.push(Action::Send(ack));
            }
        }
        if self.settings.serial {
            // A serial line has no connection event: any message from the reader's address is life.
            self.bad_in_row = 0;
            self.go_up(sn, now, actions);
            if !matches!(message.name(), Some("Keepalive") | Some("KeepaliveAck")) {
                self.dispatch(message, now, actions);
            }
            self.pump(now, actions);
        } else if message.name() != Some("Keepalive") {
            actions.push(Action::Bad(format!(
                "{} before the connection acknowledgement (dropped)",
                message.name().unwrap_or("an unknown message")
            )));
        }
    }

    fn go_up(&mut self, sn: [u8; 8], now: Now, actions: &mut Vec<Action>) {
        self.device_sn = sn;
        self.phase = Phase::Up;
        self.keepalive_next = now.mono + self.settings.keepalive_interval;
        self.keepalive_outstanding = false;
        self.keepalive_missed = 0;
        actions.push(Action::Up { device_sn: sn });
        self.queue_connect_work();
    }

    /// Puts the connect-time work at the front of the queue, in this order: reconcile the rules,
    /// read the general capabilities, ask for cached reports, synchronise alarms.
    fn queue_connect_work(&mut self) {
        let to = Addressing {
            device_sn: self.device_sn,
            number: 0,
        };
        let t = self.settings.request_timeout;
        let mut first: Vec<Work> = vec![Work::Reconcile(Reconcile::new(self.desired.clone()))];
        for m in [
            builders::get_device_capabilities(to, 1),
            builders::bodiless(to, "EnableCachedEventsAndReport"),
            self.alarm_sync_message(),
        ]
        .into_iter()
        .flatten()
        {
            first.push(Work::Single(Single {
                request: Some(Outgoing::new(m, t)),
                answer: None,
                time_sync: false,
            }));
        }
        for work in first.into_iter().rev() {
            self.queue.push_front(Job { token: None, work });
        }
    }

    /// Timers: handshake deadline, serial probes, keepalive probes, silence, request deadlines.
    pub fn handle_tick(&mut self, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.phase {
            Phase::Closed => {}
            Phase::Connecting { since, last_probe } => {
                if now.mono.saturating_duration_since(since) >= self.settings.handshake_timeout {
                    let what = if self.settings.serial {
                        "no answer from the reader"
                    } else {
                        "no connection acknowledgement"
                    };
                    self.close_with(
                        format!("{what} within {:?}", self.settings.handshake_timeout),
                        &mut actions,
                    );
                } else if self.settings.serial {
                    let every = self.settings.keepalive_interval.min(Duration::from_secs(1));
                    if last_probe.is_none_or(|t| now.mono.saturating_duration_since(t) >= every) {
                        self.probe(now, &mut actions);
                    }
                }
            }
            Phase::Up => {
                let silent = now.mono.saturating_duration_since(self.last_frame);
                if silent >= self.settings.silence_timeout {
                    self.close_with(format!("silent for {silent:?}"), &mut actions);
                    return actions;
                }
                if self.keepalive_probes && now.mono >= self.keepalive_next {
                    if self.keepalive_outstanding {
                        self.keepalive_missed += 1;
                        if self.keepalive_missed >= self.settings.max_missed_keepalives {
                            self.close_with(format!("{} keepalive acks missed", self.keepalive_missed), &mut actions);
                            return actions;
                        }
                    }
                    let to = self.to();
                    if let Ok(m) = builders::keepalive(to) {
                        actions.push(Action::Send(m));
                    }
                    self.keepalive_number = to.number;
                    self.keepalive_outstanding = true;
                    self.keepalive_next = now.mono + self.settings.keepalive_interval;
                }
                let expired = matches!(&self.running, Some((_, Some(c))) if now.mono >= c.deadline);
                if expired {
                    self.on_timeout(now, &mut actions);
                }
                self.pump(now, &mut actions);
            }
        }
        actions
    }

    /// Ends the session (the transport is gone or closing). Returns the commands that did not
    /// finish: the shell puts them back in the queue or fails them.
    pub fn close(&mut self) -> Vec<Token> {
        self.phase = Phase::Closed;
        let mut tokens: Vec<Token> = self.running.take().and_then(|(job, _)| job.token).into_iter().collect();
        tokens.extend(self.queue.drain(..).filter_map(|j| j.token));
        tokens
    }

    fn close_with(&mut self, reason: String, actions: &mut Vec<Action>) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            actions.push(Action::Close(reason));
        }
    }

    fn is_answer(&self, message: &Message) -> bool {
        match &self.running {
            Some((_, Some(c))) => {
                message.header.code == c.expect
                    || (message.name() == Some("ErrorAck") && message.header.number == c.number)
            }
            _ => false,
        }
    }

    fn dispatch(&mut self, message: Message, now: Now, actions: &mut Vec<Action>) {
        if self.is_answer(&message) {
            self.on_answer(message, now, actions);
            return;
        }
        match message.name() {
            Some("Keepalive") => {
                if let Ok(ack) = builders::keepalive_ack(&message.header) {
                    actions.push(Action::Send(ack));
                }
            }
            Some("KeepaliveAck") => {
                self.keepalive_outstanding = false;
                self.keepalive_missed = 0;
            }
            Some("ErrorAck") if self.keepalive_outstanding && message.header.number == self.keepalive_number => {
                // The table has Keepalive reader-to-edge only: a reader may refuse the edge's.
                self.keepalive_probes = false;
                self.keepalive_outstanding = false;
                self.keepalive_missed = 0;
                actions.push(Action::Log(
                    "the reader refuses keepalive probes (ErrorAck): liveness now rests on its own keepalives and the silence timeout".into(),
                ));
            }
            Some("TagSelectAccessReport") => {
                let tags = message.body.children("TagReportData").count() as u64;
                let record = self.record(Leaf::Report, &message, now);
                actions.push(Action::Persist(Persist {
                    records: vec![record],
                    tags,
                    ..Persist::default()
                }));
            }
            Some("CachedSelectAccessReport") => {
                let tags = message.body.children("TagReportData").count() as u64;
                let mut body = message_json(&message, self.settings.dialect);
                body["cached"] = json!(true);
                let record = records::record(&self.settings.reader_id, Leaf::Report, &body, now.wall_ms);
                let sequence = u16_field(&message, "SequenceID");
                let then_send = builders::cached_report_ack(&message.header, sequence)
                    .into_iter()
                    .collect();
                actions.push(Action::Persist(Persist {
                    records: vec![record],
                    then_send,
                    tags,
                    ..Persist::default()
                }));
            }
            Some("DeviceEventNotification") => {
                if message.connection_attempt_status() == Some(0) {
                    // The reader announces a fresh start (e.g. after a reboot on a serial line,
                    // where the link itself never dropped): its rules and alarms need the
                    // connect-time work again.
                    self.persist_event(&message, now, actions);
                    self.queue_connect_work();
                    return;
                }
                if let Some(event) = message.child("SelectSpecEvent") {
                    let id = event.field("SelectSpecID").and_then(Value::as_u64).map(|v| v as u32);
                    let kind = event.field("EventType").and_then(Value::as_u64);
                    if let Some(id) = id {
                        let state = match kind {
                            Some(0) => Some(SpecState::Active),
                            Some(1) | Some(2) => Some(SpecState::Inactive),
                            _ => None,
                        };
                        if let Some(state) = state {
                            self.track(id, state);
                        }
                    }
                }
                self.persist_event(&message, now, actions);
            }
            Some("AlarmReport") => self.alarm_report(&message, now, actions),
            Some("AlarmRestore") | Some("AlarmDelete") => {
                let id = message.field("AlarmID").and_then(Value::as_u64).unwrap_or(0) as u32;
                self.alarms.remove(&id);
                let record = self.record(Leaf::Alarm, &message, now);
                actions.push(Action::Persist(Persist {
                    records: vec![record],
                    alarms: vec![AlarmChange::Restore(id)],
                    ..Persist::default()
                }));
            }
            Some("AlarmSync") => self.alarm_sync(&message, now, actions),
            Some("UploadTagLogAck") | Some("UploadDeviceLogAck") => {
                // A segment nobody asked for (or after its request timed out): still kept and confirmed.
                let kind = if message.name() == Some("UploadTagLogAck") {
                    LogKind::Tag
                } else {
                    LogKind::Device
                };
                let persist = self.log_segment(kind, &message, now);
                actions.push(Action::Persist(persist));
            }
            _ => self.persist_event(&message, now, actions),
        }
    }

    fn record(&self, leaf: Leaf, message: &Message, now: Now) -> Record {
        records::record(
            &self.settings.reader_id,
            leaf,
            &message_json(message, self.settings.dialect),
            now.wall_ms,
        )
    }

    fn persist_event(&self, message: &Message, now: Now, actions: &mut Vec<Action>) {
        actions.push(Action::Persist(Persist {
            records: vec![self.record(Leaf::Event, message, now)],
            ..Persist::default()
        }));
    }

    fn log_segment(&self, kind: LogKind, message: &Message, now: Now) -> Persist {
        let sequence = u16_field(message, "SequenceId");
        let then_send = builders::confirm_log_segment(
            Addressing {
                device_sn: self.device_sn,
                number: message.header.number,
            },
            kind,
            sequence,
        )
        .into_iter()
        .collect();
        Persist {
            records: vec![self.record(Leaf::Log, message, now)],
            then_send,
            ..Persist::default()
        }
    }

    fn track(&mut self, id: u32, state: SpecState) {
        if self.specs.len() < MAX_TRACKED_SPECS || self.specs.contains_key(&id) {
            self.specs.insert(id, state);
        }
    }
}

fn log_count_name(kind: LogKind) -> &'static str {
    match kind {
        LogKind::Tag => "TagLogCount",
        LogKind::Device => "DeviceLogCount",
    }
}

fn u16_field(message: &Message, name: &str) -> u16 {
    message
        .field(name)
        .and_then(Value::as_u64)
        .and_then(|v| u16::try_from(v).ok())
        .unwrap_or(0)
}

/// Status code and description of an answer (an ErrorAck or a response's Status); a response
/// without a Status parameter counts as success.
fn status_of(message: &Message) -> (u32, String) {
    match message.status() {
        Some(s) => (s.code, s.description),
        None if message.name() == Some("ErrorAck") => (u32::MAX, "ErrorAck".into()),
        None => (0, String::new()),
    }
}

fn effect_of(message: &Message) -> Effect {
    let id = || message.field("SelectSpecID").and_then(Value::as_u64).map(|v| v as u32);
    let command = match message.name() {
        Some("AddSelectSpec") => {
            return message
                .child("SelectSpec")
                .and_then(rules::spec_id)
                .map_or(Effect::None, Effect::AddSelect)
        }
        Some("GetDeviceCapabilities") => return Effect::Capabilities,
        Some("GetVersion") | Some("SetVersion") | Some("ActiveVersion") | Some("UnActiveVersion") => {
            return Effect::Version
        }
        Some("DeleteSelectSpec") => SpecCommand::DeleteSelectSpec,
        Some("StartSelectSpec") => SpecCommand::StartSelectSpec,
        Some("StopSelectSpec") => SpecCommand::StopSelectSpec,
        Some("EnableSelectSpec") => SpecCommand::EnableSelectSpec,
        Some("DisableSelectSpec") => SpecCommand::DisableSelectSpec,
        _ => return Effect::None,
    };
    id().map_or(Effect::None, |id| Effect::Spec(command, id))
}

/// ConnectionAttemptEvent status in words (facts sheet §5).
pub fn connection_status_text(status: u16) -> String {
    let text = match status {
        0 => "success",
        1 => "a reader-initiated connection already exists",
        2 => "a client-initiated connection already exists",
        3 => "failed for another reason",
        4 => "another connection was attempted",
        _ => "unknown status",
    };
    format!("status {status} ({text})")
}
