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
#[derive(Debug, Clone)]
struct Outgoing {
    message: Message,
    timeout: Duration,
    label: String,
}

impl Outgoing {
    fn new(message: Message, timeout: Duration) -> Outgoing {
        let label = message.name().unwrap_or("message").to_string();
        Outgoing {
            message,
            timeout,
            label,
        }
    }
}

/// The request in flight.
#[derive(Debug)]
struct Current {
    number: u32,
    /// Response code of the table's pairing (segments of a log upload share it).
    expect: u16,
    deadline: Instant,
    timeout: Duration,
    effect: Effect,
    label: String,
}

/// Where a job stands after an answer.
enum Progress {
    /// Send the job's next request (or finish it).
    Next,
    /// More answers to the same request follow (log segments).
    More,
    /// The job ended early.
    Done(Outcome),
}

struct Job {
    token: Option<Token>,
    work: Work,
}

enum Work {
    Single(Single),
    Reconcile(Reconcile),
    LogPull(LogPull),
    SpecState {
        spec_id: u32,
        state: SpecState,
        steps: Option<Steps>,
    },
}

/// Shared inputs of the jobs.
struct Ctx<'a> {
    reader: &'a str,
    dialect: Dialect,
    sn: [u8; 8],
    now: Now,
    settings: &'a SessionSettings,
    specs: &'a mut BTreeMap<u32, SpecState>,
    actions: &'a mut Vec<Action>,
}

impl Ctx<'_> {
    fn template(&mut self, message: Result<Message, crate::protocol::gbt37987::UnknownName>) -> Option<Outgoing> {
        match message {
            Ok(m) => Some(Outgoing::new(m, self.settings.request_timeout)),
            Err(e) => {
                self.actions.push(Action::Log(format!("code table: {e}")));
                None
            }
        }
    }

    fn to(&self) -> Addressing {
        Addressing {
            device_sn: self.sn,
            number: 0,
        }
    }
}

/// One request, its answer as the result.
struct Single {
    request: Option<Outgoing>,
    answer: Option<Json>,
    /// The request is a time sync, built when it is sent (its body is the edge's time).
    time_sync: bool,
}

/// A sequence of status-answered requests (a reconciliation's steps, a state change).
struct Steps {
    pending: VecDeque<Outgoing>,
    done: Vec<Json>,
    failures: Vec<String>,
    sent_label: String,
}

impl Steps {
    fn new(pending: VecDeque<Outgoing>) -> Steps {
        Steps {
            pending,
            done: Vec::new(),
            failures: Vec::new(),
            sent_label: String::new(),
        }
    }

    fn next(&mut self) -> Option<Outgoing> {
        let out = self.pending.pop_front()?;
        self.sent_label = out.label.clone();
        Some(out)
    }

    fn answer(&mut self, msg: &Message) -> Progress {
        let (code, description) = status_of(msg);
        if code != 0 {
            self.failures
                .push(format!("{}: status {code} {description}", self.sent_label));
        }
        self.done.push(json!({"step": self.sent_label, "status": code}));
        Progress::Next
    }

    fn timeout(&mut self) {
        self.failures.push(format!("{}: no answer", self.sent_label));
    }

    fn outcome(&self) -> Outcome {
        if self.failures.is_empty() {
            Outcome::Answer(json!({"steps": self.done}))
        } else {
            Outcome::Rejected(format!(
                "{} of {} steps failed: {}",
                self.failures.len(),
                self.done.len(),
                self.failures.join("; ")
            ))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReconcilePhase {
    QueryAccess,
    QuerySelect,
    Execute,
}

struct Reconcile {
    phase: ReconcilePhase,
    desired: DesiredRules,
    actual_access: Vec<Parameter>,
    steps: Steps,
    kept: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogPhase {
    Count,
    Upload,
    Receiving,
    Finished,
}

struct LogPull {
    kind: LogKind,
    count: Option<u32>,
    phase: LogPhase,
    segments: u32,
    entries: u64,
}

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

    fn job_for(&self, request: Request) -> Result<Work, String> {
        let sn = self.device_sn;
        let to = Addressing {
            device_sn: sn,
            number: 0,
        };
        let t = self.settings.request_timeout;
        let single = |m: Result<Message, crate::protocol::gbt37987::UnknownName>, timeout: Duration| {
            m.map(|m| {
                Work::Single(Single {
                    request: Some(Outgoing::new(m, timeout)),
                    answer: None,
                    time_sync: false,
                })
            })
            .map_err(|e| format!("code table: {e}"))
        };
        match request {
            Request::Raw { code, body } => single(
                Ok(Message {
                    header: Header::new(sn, code, 0),
                    body,
                }),
                t,
            ),
            Request::Reconcile => Ok(Work::Reconcile(Reconcile::new(self.desired.clone()))),
            Request::SpecState { spec_id, state } => Ok(Work::SpecState {
                spec_id,
                state,
                steps: None,
            }),
            Request::Capabilities { requested_data } => {
                single(builders::get_device_capabilities(to, requested_data), t)
            }
            Request::GetConfig {
                requested_data,
                antenna_id,
            } => single(builders::get_device_config(to, requested_data, antenna_id), t),
            Request::SetConfig { body } => single(
                Message::named("SetDeviceConfig", sn, 0, Body::default()).map(|mut m| {
                    m.body = body;
                    m
                }),
                t,
            ),
            Request::Version { command, ver_type } => single(builders::version_command(to, command, ver_type), t),
            Request::FirmwareServe { .. } => Err("the firmware file was not prepared by the link".into()),
            Request::FirmwareDownload { ver_type, download } => single(
                builders::set_version(to, ver_type, download),
                self.settings.firmware_timeout,
            ),
            Request::LogCount(kind) => single(builders::bodiless(to, log_count_name(kind)), t),
            Request::LogClear(kind) => single(
                builders::bodiless(
                    to,
                    match kind {
                        LogKind::Tag => "ClearTagLog",
                        LogKind::Device => "ClearDeviceLog",
                    },
                ),
                t,
            ),
            Request::LogPull { kind, count } => Ok(Work::LogPull(LogPull {
                kind,
                count,
                phase: if count.is_some() {
                    LogPhase::Upload
                } else {
                    LogPhase::Count
                },
                segments: 0,
                entries: 0,
            })),
            Request::AlarmSync => single(self.alarm_sync_message(), t),
            Request::Diagnostics { tests } => single(builders::diagnostic_test(to, &tests), t),
            Request::Reset => single(builders::bodiless(to, "ResetDevice"), t),
            Request::TimeSync => Ok(Work::Single(Single {
                request: None,
                answer: None,
                time_sync: true,
            })),
        }
    }

    fn alarm_sync_message(&self) -> Result<Message, crate::protocol::gbt37987::UnknownName> {
        let info = Parameter::named(
            "AlarmSyncInfo",
            Body::from_fields(vec![
                Value::U32(0),
                Value::U8(0),
                Value::U16(1),
                Value::U16(1),
                Value::Dwords(self.alarms.iter().copied().collect()),
            ]),
        )?;
        builders::alarm_sync(
            Addressing {
                device_sn: self.device_sn,
                number: 0,
            },
            info,
        )
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

    fn ctx<'a>(
        settings: &'a SessionSettings,
        sn: [u8; 8],
        specs: &'a mut BTreeMap<u32, SpecState>,
        now: Now,
        actions: &'a mut Vec<Action>,
    ) -> Ctx<'a> {
        Ctx {
            reader: &settings.reader_id,
            dialect: settings.dialect,
            sn,
            now,
            settings,
            specs,
            actions,
        }
    }

    /// Sends the next request of the running job, starting queued jobs as needed.
    fn pump(&mut self, now: Now, actions: &mut Vec<Action>) {
        // Bounded: each round either sends and waits, or finishes a job.
        for _ in 0..(MAX_QUEUED * 8 + 64) {
            if self.phase != Phase::Up {
                return;
            }
            if matches!(self.running, Some((_, Some(_)))) {
                return;
            }
            if self.running.is_none() {
                match self.queue.pop_front() {
                    Some(job) => self.running = Some((job, None)),
                    None => return,
                }
            }
            let Some((mut job, _)) = self.running.take() else {
                return;
            };
            let next = {
                let mut ctx = Self::ctx(&self.settings, self.device_sn, &mut self.specs, now, actions);
                job.work.next(&mut ctx)
            };
            match next {
                Some(out) => {
                    let number = self.number();
                    let mut message = out.message;
                    message.header.number = number;
                    message.header.device_sn = self.device_sn;
                    let effect = effect_of(&message);
                    let expect = message.def().and_then(|d| d.response_def()).map(|d| d.code);
                    actions.push(Action::Send(message));
                    match expect {
                        Some(code) => {
                            self.running = Some((
                                job,
                                Some(Current {
                                    number,
                                    expect: code,
                                    deadline: now.mono + out.timeout,
                                    timeout: out.timeout,
                                    effect,
                                    label: out.label,
                                }),
                            ));
                        }
                        // Nothing answers this message (e.g. EnableCachedEventsAndReport).
                        None => self.running = Some((job, None)),
                    }
                }
                None => {
                    let outcome = {
                        let mut ctx = Self::ctx(&self.settings, self.device_sn, &mut self.specs, now, actions);
                        job.work.finish(&mut ctx)
                    };
                    if let Some(token) = job.token {
                        actions.push(Action::Complete { token, outcome });
                    } else if let Outcome::Rejected(reason) | Outcome::Answer(Json::String(reason)) = &outcome {
                        actions.push(Action::Log(format!("connect-time work: {reason}")));
                    }
                }
            }
        }
    }

    fn on_timeout(&mut self, now: Now, actions: &mut Vec<Action>) {
        let Some((mut job, Some(current))) = self.running.take() else {
            return;
        };
        let outcome = job.work.timeout(&current.label);
        match outcome {
            Some(outcome) => {
                if let Some(token) = job.token {
                    actions.push(Action::Complete { token, outcome });
                } else {
                    actions.push(Action::Log(format!("connect-time {}: no answer", current.label)));
                }
            }
            // The job goes on with its next step.
            None => self.running = Some((job, None)),
        }
        self.pump(now, actions);
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

    fn alarm_report(&mut self, message: &Message, now: Now, actions: &mut Vec<Action>) {
        let id = message.field("AlarmID").and_then(Value::as_u64).unwrap_or(0) as u32;
        let info = message.child("AlarmReportInfo");
        let field = |name: &str| info.and_then(|i| i.field(name)).and_then(Value::as_u64).unwrap_or(0);
        let alarm = ActiveAlarm {
            alarm_id: id,
            alarm_code: field("AlarmCode") as u32,
            level: field("Level") as u8,
            raised_ms: now.wall_ms,
            info: info.map(param_to_json).unwrap_or(Json::Null),
        };
        let mut alarms = Vec::new();
        if self.alarms.len() < MAX_SYNC_IDS || self.alarms.contains(&id) {
            self.alarms.insert(id);
            alarms.push(AlarmChange::Raise(alarm));
        } else {
            actions.push(Action::Log(format!(
                "alarm {id} not tracked: {MAX_SYNC_IDS} alarms already active"
            )));
        }
        let record = self.record(Leaf::Alarm, message, now);
        actions.push(Action::Persist(Persist {
            records: vec![record],
            alarms,
            ..Persist::default()
        }));
    }

    /// A reader's AlarmSync lists its active alarms (possibly in several packages); once the last
    /// package is in, every alarm the edge holds that the reader did not list is restored.
    fn alarm_sync(&mut self, message: &Message, now: Now, actions: &mut Vec<Action>) {
        let info = message.child("AlarmSyncInfo");
        let num = |name: &str| info.and_then(|i| i.field(name)).and_then(Value::as_u64).unwrap_or(0);
        let seq = num("SyncSeq") as u32;
        let (package, packages) = (num("PackageNo"), num("PackageNum"));
        let ids: Vec<u32> = match info.and_then(|i| i.field("AlarmIDs")) {
            Some(Value::Dwords(ids)) => ids.clone(),
            _ => Vec::new(),
        };
        let collected = match &mut self.alarm_sync {
            Some((s, set)) if *s == seq => set,
            _ => {
                self.alarm_sync = Some((seq, BTreeSet::new()));
                match &mut self.alarm_sync {
                    Some((_, set)) => set,
                    None => return,
                }
            }
        };
        for id in ids {
            if collected.len() < MAX_SYNC_IDS {
                collected.insert(id);
            }
        }
        let mut persist = Persist {
            records: vec![self.record(Leaf::Alarm, message, now)],
            ..Persist::default()
        };
        if package >= packages {
            let listed = self.alarm_sync.take().map(|(_, s)| s).unwrap_or_default();
            let gone: Vec<u32> = self.alarms.difference(&listed).copied().collect();
            for id in gone {
                self.alarms.remove(&id);
                persist.alarms.push(AlarmChange::Restore(id));
                let body = json!({
                    "msg": "AlarmRestore",
                    "code": 721,
                    "device_sn": message.header.device_sn_hex(),
                    "seq": message.header.number,
                    "body": {"AlarmID": id, "AlarmRestoreInfo": {"RestoreType": 1, "Seconds": 0}},
                    "reason": "not active on the reader at alarm synchronisation",
                });
                persist.records.push(records::record(
                    &self.settings.reader_id,
                    Leaf::Alarm,
                    &body,
                    now.wall_ms,
                ));
            }
        }
        actions.push(Action::Persist(persist));
    }

    fn track(&mut self, id: u32, state: SpecState) {
        if self.specs.len() < MAX_TRACKED_SPECS || self.specs.contains_key(&id) {
            self.specs.insert(id, state);
        }
    }

    fn on_answer(&mut self, message: Message, now: Now, actions: &mut Vec<Action>) {
        let Some((mut job, Some(current))) = self.running.take() else {
            return;
        };
        let (status, _) = status_of(&message);
        if status == 0 && message.name() != Some("ErrorAck") {
            match current.effect {
                Effect::AddSelect(id) => self.track(id, SpecState::Disabled),
                Effect::Spec(SpecCommand::DeleteSelectSpec, 0) => self.specs.clear(),
                Effect::Spec(SpecCommand::DeleteSelectSpec, id) => {
                    self.specs.remove(&id);
                }
                Effect::Spec(command, id) => {
                    if let Some(event) = SpecEvent::of_command(command) {
                        let from = self.specs.get(&id).copied().unwrap_or(SpecState::Disabled);
                        if let Ok(to) = transition(from, event) {
                            self.track(id, to);
                        }
                    }
                }
                Effect::Capabilities => {
                    if let Some(general) = message.child("GenaralCapabilities") {
                        actions.push(Action::Capabilities(param_to_json(general)));
                    }
                }
                Effect::Version | Effect::None => {}
            }
        }
        let progress = {
            let mut ctx = Self::ctx(&self.settings, self.device_sn, &mut self.specs, now, actions);
            job.work.answer(&message, &mut ctx)
        };
        match progress {
            Progress::Next => self.running = Some((job, None)),
            Progress::More => {
                self.running = Some((
                    job,
                    Some(Current {
                        deadline: now.mono + current.timeout,
                        ..current
                    }),
                ))
            }
            Progress::Done(outcome) => {
                if let Some(token) = job.token {
                    actions.push(Action::Complete { token, outcome });
                }
            }
        }
    }
}

impl Reconcile {
    fn new(desired: DesiredRules) -> Reconcile {
        Reconcile {
            phase: ReconcilePhase::QueryAccess,
            desired,
            actual_access: Vec::new(),
            steps: Steps::new(VecDeque::new()),
            kept: 0,
        }
    }
}

impl Work {
    fn next(&mut self, ctx: &mut Ctx<'_>) -> Option<Outgoing> {
        match self {
            Work::Single(single) => match single.request.take() {
                Some(out) => Some(out),
                None if single.time_sync => {
                    single.time_sync = false;
                    let seconds = (ctx.now.wall_ms.max(0) / 1000) as u64;
                    ctx.template(builders::set_time(ctx.to(), seconds))
                }
                None => None,
            },
            Work::Reconcile(r) => match r.phase {
                ReconcilePhase::QueryAccess => ctx.template(builders::bodiless(ctx.to(), "GetAccessSpec")),
                ReconcilePhase::QuerySelect => ctx.template(builders::bodiless(ctx.to(), "GetSelectSpec")),
                ReconcilePhase::Execute => r.steps.next(),
            },
            Work::LogPull(pull) => match pull.phase {
                LogPhase::Count => ctx.template(builders::bodiless(ctx.to(), log_count_name(pull.kind))),
                LogPhase::Upload => {
                    let count = pull.count.unwrap_or(0);
                    if count == 0 {
                        pull.phase = LogPhase::Finished;
                        return None;
                    }
                    pull.phase = LogPhase::Receiving;
                    ctx.template(builders::upload_log(
                        ctx.to(),
                        pull.kind,
                        LogUpload {
                            upload_type: 0,
                            upload_count: count,
                            milliseconds: 0,
                            start: None,
                            end: None,
                        },
                    ))
                }
                LogPhase::Receiving | LogPhase::Finished => None,
            },
            Work::SpecState { spec_id, state, steps } => {
                if steps.is_none() {
                    let current = ctx.specs.get(spec_id).copied();
                    let commands: Vec<SpecCommand> = match state {
                        SpecState::Active => match current {
                            Some(SpecState::Active) => vec![],
                            Some(SpecState::Inactive) => vec![SpecCommand::StartSelectSpec],
                            _ => vec![SpecCommand::EnableSelectSpec, SpecCommand::StartSelectSpec],
                        },
                        SpecState::Inactive => match current {
                            Some(SpecState::Active) => vec![SpecCommand::StopSelectSpec],
                            Some(SpecState::Inactive) => vec![],
                            _ => vec![SpecCommand::EnableSelectSpec],
                        },
                        SpecState::Disabled => match current {
                            Some(SpecState::Disabled) => vec![],
                            _ => vec![SpecCommand::DisableSelectSpec],
                        },
                    };
                    let pending = commands
                        .into_iter()
                        .filter_map(|c| ctx.template(builders::spec_command(ctx.to(), c, *spec_id)))
                        .collect();
                    *steps = Some(Steps::new(pending));
                }
                steps.as_mut().and_then(Steps::next)
            }
        }
    }

    fn answer(&mut self, msg: &Message, ctx: &mut Ctx<'_>) -> Progress {
        match self {
            Work::Single(single) => {
                single.answer = Some(message_json(msg, ctx.dialect));
                Progress::Next
            }
            Work::SpecState { steps, .. } => match steps {
                Some(steps) => steps.answer(msg),
                None => Progress::Next,
            },
            Work::Reconcile(r) => match r.phase {
                ReconcilePhase::QueryAccess => {
                    // A reader without access specs answers with an error: it holds none.
                    if status_of(msg).0 == 0 {
                        r.actual_access = msg.body.children("AccessSpec").cloned().collect();
                    }
                    r.phase = ReconcilePhase::QuerySelect;
                    Progress::Next
                }
                ReconcilePhase::QuerySelect => {
                    let (code, description) = status_of(msg);
                    if code != 0 {
                        return Progress::Done(Outcome::Rejected(format!(
                            "GetSelectSpec: status {code} {description}"
                        )));
                    }
                    let actual: Vec<Parameter> = msg.body.children("SelectSpec").cloned().collect();
                    ctx.specs.clear();
                    for p in &actual {
                        if let (Some(id), Some(state)) = (rules::spec_id(p), rules::select_state(p)) {
                            if ctx.specs.len() < MAX_TRACKED_SPECS {
                                ctx.specs.insert(id, state);
                            }
                        }
                    }
                    let plan = rules::plan(&r.desired, &actual, &r.actual_access, ctx.dialect);
                    r.kept = (r.desired.select.len() + r.desired.access.len())
                        .saturating_sub(plan.iter().filter(|s| matches!(s, Step::Add(..))).count());
                    let pending = plan
                        .iter()
                        .filter_map(|step| {
                            let message = match step {
                                Step::Add(RuleKind::Select, p) => builders::add_select_spec(ctx.to(), p.clone()),
                                Step::Add(RuleKind::Access, p) => builders::add_access_spec(ctx.to(), p.clone()),
                                Step::Command(c, id) => builders::spec_command(ctx.to(), *c, *id),
                            };
                            ctx.template(message).map(|mut out| {
                                out.label = step.describe();
                                out
                            })
                        })
                        .collect();
                    r.steps = Steps::new(pending);
                    r.phase = ReconcilePhase::Execute;
                    Progress::Next
                }
                ReconcilePhase::Execute => r.steps.answer(msg),
            },
            Work::LogPull(pull) => match pull.phase {
                LogPhase::Count => {
                    let (code, description) = status_of(msg);
                    if code != 0 {
                        return Progress::Done(Outcome::Rejected(format!("log count: status {code} {description}")));
                    }
                    pull.count = Some(msg.field("LogCount").and_then(Value::as_u64).unwrap_or(0) as u32);
                    pull.phase = LogPhase::Upload;
                    Progress::Next
                }
                LogPhase::Receiving => {
                    let (code, description) = status_of(msg);
                    let entries = msg
                        .params()
                        .iter()
                        .filter(|p| matches!(p.name(), Some("TagLog") | Some("DeviceLog")))
                        .count();
                    if code != 0 && entries == 0 {
                        return Progress::Done(Outcome::Rejected(format!("log upload: status {code} {description}")));
                    }
                    let sequence = u16_field(msg, "SequenceId");
                    let record =
                        records::record(ctx.reader, Leaf::Log, &message_json(msg, ctx.dialect), ctx.now.wall_ms);
                    let then_send = builders::confirm_log_segment(
                        Addressing {
                            device_sn: ctx.sn,
                            number: msg.header.number,
                        },
                        pull.kind,
                        sequence,
                    )
                    .into_iter()
                    .collect();
                    ctx.actions.push(Action::Persist(Persist {
                        records: vec![record],
                        then_send,
                        ..Persist::default()
                    }));
                    pull.segments = pull.segments.saturating_add(1);
                    pull.entries = pull.entries.saturating_add(entries as u64);
                    if msg.field("IsLastedFrame").and_then(Value::as_u64) == Some(1) {
                        pull.phase = LogPhase::Finished;
                        Progress::Next
                    } else {
                        Progress::More
                    }
                }
                LogPhase::Upload | LogPhase::Finished => Progress::Next,
            },
        }
    }

    /// The request in flight got no answer: `Some` ends the job, `None` goes on with the next step.
    fn timeout(&mut self, label: &str) -> Option<Outcome> {
        match self {
            Work::SpecState { steps: Some(steps), .. } => {
                steps.timeout();
                None
            }
            Work::Reconcile(r) if r.phase == ReconcilePhase::Execute => {
                r.steps.timeout();
                None
            }
            Work::Reconcile(r) if r.phase == ReconcilePhase::QueryAccess => {
                // Some readers ignore GetAccessSpec: go on with the select specs.
                r.phase = ReconcilePhase::QuerySelect;
                None
            }
            Work::LogPull(pull) if pull.phase == LogPhase::Receiving => Some(Outcome::Rejected(format!(
                "{label}: the reader stopped after {} segment(s) ({} entries)",
                pull.segments, pull.entries
            ))),
            _ => Some(Outcome::Timeout),
        }
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>) -> Outcome {
        match self {
            Work::Single(single) => match single.answer.take() {
                None => Outcome::Answer(json!({"sent": true})),
                Some(answer) => Outcome::Answer(answer),
            },
            Work::SpecState { steps, .. } => steps
                .as_ref()
                .map_or(Outcome::Answer(json!({"steps": []})), Steps::outcome),
            Work::Reconcile(r) => {
                let outcome = r.steps.outcome();
                let mut summary = json!({
                    "select_specs": r.desired.select.len(),
                    "access_specs": r.desired.access.len(),
                    "unchanged": r.kept,
                    "steps": r.steps.done,
                });
                if !r.steps.failures.is_empty() {
                    summary["errors"] = json!(r.steps.failures);
                }
                let event = edge_event("RulesReconciled", ctx.sn, summary.clone());
                ctx.actions.push(Action::Persist(Persist {
                    records: vec![records::record(ctx.reader, Leaf::Event, &event, ctx.now.wall_ms)],
                    ..Persist::default()
                }));
                match outcome {
                    Outcome::Answer(_) => Outcome::Answer(summary),
                    other => other,
                }
            }
            Work::LogPull(pull) => Outcome::Answer(json!({
                "log": match pull.kind { LogKind::Tag => "tag", LogKind::Device => "device" },
                "count": pull.count.unwrap_or(0),
                "segments": pull.segments,
                "entries": pull.entries,
            })),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::gbt37987::builders::{status, status_reply, Alarm};
    use crate::protocol::gbt37987::dialect::ALL_DIALECTS;
    use crate::protocol::gbt37987::TagReport;
    use crate::reader::rules::default_select_spec;

    const SN: [u8; 8] = *b"BL000001";

    struct Rig {
        session: Session,
        t0: Instant,
        dialect: Dialect,
        reader_number: u32,
    }

    impl Rig {
        fn new(dialect: Dialect, serial: bool, desired: DesiredRules) -> Rig {
            let t0 = Instant::now();
            let mut settings = SessionSettings::new("r1", dialect, Duration::from_secs(1));
            settings.serial = serial;
            settings.request_timeout = Duration::from_secs(2);
            let session = Session::new(settings, desired, &[], Now { mono: t0, wall_ms: 0 });
            Rig {
                session,
                t0,
                dialect,
                reader_number: 100,
            }
        }

        fn at(&self, ms: u64) -> Now {
            Now {
                mono: self.t0 + Duration::from_millis(ms),
                wall_ms: 1_700_000_000_000 + ms as i64,
            }
        }

        fn next_from_reader(&mut self) -> Addressing {
            self.reader_number += 1;
            Addressing {
                device_sn: SN,
                number: self.reader_number,
            }
        }

        /// Feeds `message` as encoded bytes (so every test also crosses the codec).
        fn feed(&mut self, message: &Message, ms: u64) -> Vec<Action> {
            let bytes = message.encode(self.dialect).unwrap();
            let now = self.at(ms);
            self.session.handle_frame(&bytes, now)
        }

        fn connect(&mut self, ms: u64) -> Vec<Action> {
            let to = self.next_from_reader();
            let ack = builders::connection_ack(self.dialect, to, 0, 5).unwrap();
            self.feed(&ack, ms)
        }

        /// Answers every request of the connect-time work with success and no specs; returns the
        /// names sent.
        fn settle(&mut self, mut actions: Vec<Action>, ms: u64) -> Vec<String> {
            let mut names = Vec::new();
            for _ in 0..50 {
                let batch: Vec<Message> = sent(&actions)
                    .into_iter()
                    .filter(|m| m.name() != Some("Keepalive"))
                    .collect();
                names.extend(batch.iter().map(|m| m.name().unwrap().to_string()));
                let Some(request) = batch
                    .into_iter()
                    .find(|m| m.def().and_then(|d| d.response_def()).is_some())
                else {
                    break;
                };
                let reply =
                    builders::reply_to(&request.header, Body::from_params(vec![status(0, "").unwrap()])).unwrap();
                actions = self.feed(&reply, ms);
            }
            names
        }
    }

    fn sent(actions: &[Action]) -> Vec<Message> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn names(actions: &[Action]) -> Vec<String> {
        sent(actions)
            .iter()
            .map(|m| m.name().unwrap_or("?").to_string())
            .collect()
    }

    fn closed(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::Close(r) => Some(r.clone()),
            _ => None,
        })
    }

    fn persists(actions: &[Action]) -> Vec<&Persist> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Persist(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn one_rule() -> DesiredRules {
        DesiredRules::from_json(
            &json!({"select_specs": [default_select_spec(7, SpecState::Active, 0, &[1])]}),
            &ALL_DIALECTS,
        )
        .unwrap()
    }

    #[test]
    fn the_link_comes_up_on_the_connection_ack_and_runs_the_connect_work_in_order() {
        for dialect in ALL_DIALECTS {
            let mut rig = Rig::new(dialect, false, one_rule());
            let actions = rig.connect(10);
            assert!(actions
                .iter()
                .any(|a| matches!(a, Action::Up { device_sn } if *device_sn == SN)));
            assert_eq!(persists(&actions).len(), 1, "the acknowledgement is kept as an event");
            let sent_names = rig.settle(actions, 20);
            assert_eq!(
                sent_names,
                [
                    "GetAccessSpec",
                    "GetSelectSpec",
                    "AddSelectSpec",
                    "EnableSelectSpec",
                    "StartSelectSpec",
                    "GetDeviceCapabilities",
                    "EnableCachedEventsAndReport",
                    "AlarmSync"
                ],
                "{dialect}"
            );
            assert_eq!(rig.session.spec_states().get(&7), Some(&SpecState::Active));
        }
    }

    #[test]
    fn messages_before_the_acknowledgement_are_dropped_and_a_missing_ack_closes_the_link() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        let to = rig.next_from_reader();
        let report = builders::tag_select_access_report(to, &[TagReport::default()]).unwrap();
        let actions = rig.feed(&report, 10);
        assert!(persists(&actions).is_empty());
        assert!(!rig.session.is_up());
        let actions = rig.session.handle_tick(rig.at(10_500));
        assert!(closed(&actions).unwrap().contains("no connection acknowledgement"));
    }

    #[test]
    fn a_refused_connection_or_a_foreign_serial_number_closes_the_link() {
        let mut rig = Rig::new(Dialect::Gbt37987_2019, false, DesiredRules::default());
        let to = rig.next_from_reader();
        let refused = builders::connection_ack(Dialect::Gbt37987_2019, to, 2, 0).unwrap();
        assert!(closed(&rig.feed(&refused, 5)).unwrap().contains("status 2"));

        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        rig.session.settings.expected_sn = Some(*b"BL999999");
        assert!(closed(&rig.connect(5)).unwrap().contains("not the configured"));
    }

    #[test]
    fn three_keepalive_probes_without_an_ack_close_the_link() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        // Acknowledged probes keep the link up.
        let actions = rig.session.handle_tick(rig.at(1000));
        let probe = sent(&actions)
            .into_iter()
            .find(|m| m.name() == Some("Keepalive"))
            .unwrap();
        let ack = builders::reply_to(&probe.header, Body::default()).unwrap();
        assert!(rig.feed(&ack, 1100).is_empty());
        assert_eq!(names(&rig.session.handle_tick(rig.at(2000))), ["Keepalive"]);
        // The reader's own keepalives are answered with their number but are not acks.
        let to = rig.next_from_reader();
        let theirs = builders::keepalive(to).unwrap();
        let answer = sent(&rig.feed(&theirs, 2500));
        assert_eq!(
            (answer[0].name(), answer[0].header.number),
            (Some("KeepaliveAck"), theirs.header.number)
        );
        assert_eq!(closed(&rig.session.handle_tick(rig.at(3000))), None);
        assert_eq!(closed(&rig.session.handle_tick(rig.at(3500))), None);
        let to = rig.next_from_reader();
        rig.feed(&builders::keepalive(to).unwrap(), 3600);
        assert_eq!(closed(&rig.session.handle_tick(rig.at(4000))), None);
        let to = rig.next_from_reader();
        rig.feed(&builders::keepalive(to).unwrap(), 4100);
        assert_eq!(
            closed(&rig.session.handle_tick(rig.at(5000))).as_deref(),
            Some("3 keepalive acks missed")
        );
    }

    #[test]
    fn a_reader_refusing_keepalive_probes_is_kept_by_its_own_keepalives() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        let probe = sent(&rig.session.handle_tick(rig.at(1000))).remove(0);
        let refusal = Message::named(
            "ErrorAck",
            SN,
            probe.header.number,
            Body::from_params(vec![status(109, "unsupported").unwrap()]),
        )
        .unwrap();
        let actions = rig.feed(&refusal, 1100);
        assert!(actions.iter().any(|a| matches!(a, Action::Log(_))));
        // No more probes; the reader's keepalives keep the link; silence would still end it.
        for ms in (1250..6000).step_by(250) {
            if ms % 1000 == 0 {
                let to = rig.next_from_reader();
                rig.feed(&builders::keepalive(to).unwrap(), ms);
            }
            let actions = rig.session.handle_tick(rig.at(ms));
            assert!(closed(&actions).is_none() && names(&actions).is_empty(), "at {ms}");
        }
        assert!(closed(&rig.session.handle_tick(rig.at(11_000)))
            .unwrap()
            .starts_with("silent"));
    }

    #[test]
    fn a_silent_reader_is_closed() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        rig.session.settings.max_missed_keepalives = 100;
        let mut reason = None;
        for ms in (250..5000).step_by(250) {
            reason = reason.or(closed(&rig.session.handle_tick(rig.at(ms))));
        }
        assert!(reason.unwrap().starts_with("silent for"));
    }

    #[test]
    fn a_serial_reader_is_probed_until_it_answers() {
        let mut rig = Rig::new(Dialect::Gbt37987_2019, true, DesiredRules::default());
        let first = rig.session.start(rig.at(0));
        assert_eq!(names(&first), ["Keepalive"]);
        assert!(names(&rig.session.handle_tick(rig.at(500))).is_empty());
        let again = sent(&rig.session.handle_tick(rig.at(1000)));
        assert_eq!(again[0].name(), Some("Keepalive"));
        let mut ack = builders::reply_to(&again[0].header, Body::default()).unwrap();
        ack.header.device_sn = SN;
        let actions = rig.feed(&ack, 1100);
        assert!(actions.iter().any(|a| matches!(a, Action::Up { .. })));
        assert_eq!(names(&actions), ["GetAccessSpec"]);
    }

    #[test]
    fn tag_reports_are_persisted_and_cached_segments_are_acknowledged_after_the_commit() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        let tags = vec![
            TagReport {
                tid: vec![1],
                ..TagReport::default()
            },
            TagReport {
                tid: vec![2],
                ..TagReport::default()
            },
        ];
        let to = rig.next_from_reader();
        let report = builders::tag_select_access_report(to, &tags).unwrap();
        let actions = rig.feed(&report, 10);
        let p = persists(&actions);
        assert_eq!(
            (p.len(), p[0].tags, p[0].records[0].topic.as_str()),
            (1, 2, "gbt37987/r1/up/report")
        );
        assert!(sent(&actions).is_empty());

        let to = rig.next_from_reader();
        let params = vec![status(0, "").unwrap(), tags[0].to_param().unwrap()];
        let cached = Message::named(
            "CachedSelectAccessReport",
            SN,
            to.number,
            Body::new(vec![Value::U16(4), Value::U8(0)], params),
        )
        .unwrap();
        let actions = rig.feed(&cached, 20);
        assert!(sent(&actions).is_empty(), "no ack before the commit");
        let p = persists(&actions);
        assert_eq!(p[0].then_send[0].name(), Some("CachedSelectAccessReportAck"));
        assert_eq!(p[0].then_send[0].field("SequenceID"), Some(&Value::U16(4)));
        let body: Json = serde_json::from_slice(&p[0].records[0].body).unwrap();
        assert_eq!(body["body"]["tags"][0]["tid"], "01");
        assert_eq!(body["body"]["cached"], json!(null));
        assert_eq!(body["cached"], true);
    }

    fn log_segment(rig: &mut Rig, request: &Message, sequence: u16, last: bool, entries: u64) -> Message {
        let mut params = vec![status(0, "").unwrap()];
        for n in 0..entries {
            params.push(
                Parameter::named(
                    "DeviceLog",
                    Body::new(
                        vec![
                            Value::U64(n),
                            Value::U8(2),
                            Value::U32(1),
                            Value::Text(b"boot".to_vec()),
                        ],
                        vec![Parameter::single("UTCTimestamp", Value::U64(1)).unwrap()],
                    ),
                )
                .unwrap(),
            );
        }
        let _ = rig.next_from_reader();
        builders::reply_to(
            &request.header,
            Body::new(vec![Value::U16(sequence), Value::U8(last as u8)], params),
        )
        .unwrap()
    }

    #[test]
    fn a_log_is_pulled_in_segments_each_confirmed_after_its_commit() {
        let mut rig = Rig::new(Dialect::Gbt37987_2019, false, DesiredRules::default());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        let actions = rig.session.handle_command(
            9,
            Request::LogPull {
                kind: LogKind::Device,
                count: None,
            },
            rig.at(10),
        );
        let count_req = sent(&actions).remove(0);
        assert_eq!(count_req.name(), Some("DeviceLogCount"));
        let count = builders::reply_to(
            &count_req.header,
            Body::new(vec![Value::U32(5)], vec![status(0, "").unwrap()]),
        )
        .unwrap();
        let actions = rig.feed(&count, 20);
        let upload = sent(&actions).remove(0);
        assert_eq!(upload.field("UploadCount"), Some(&Value::U32(5)));
        let seg = log_segment(&mut rig, &upload, 1, false, 3);
        let actions = rig.feed(&seg, 30);
        assert!(sent(&actions).is_empty());
        let p = persists(&actions);
        assert_eq!(p[0].records[0].topic, "gbt37987/r1/up/log");
        assert_eq!(p[0].then_send[0].name(), Some("UploadDeviceLogConfirm"));
        // The next segment only resets the deadline: 1.5 s later it is still waiting.
        assert!(closed(&rig.session.handle_tick(rig.at(1500))).is_none());
        let seg = log_segment(&mut rig, &upload, 2, true, 2);
        let actions = rig.feed(&seg, 1600);
        let done = actions.iter().find_map(|a| match a {
            Action::Complete { token: 9, outcome } => Some(outcome.clone()),
            _ => None,
        });
        assert_eq!(
            done,
            Some(Outcome::Answer(
                json!({"log": "device", "count": 5, "segments": 2, "entries": 5})
            ))
        );
    }

    #[test]
    fn a_reader_that_stops_mid_upload_fails_that_command_and_the_next_one_runs() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        let actions = rig.session.handle_command(
            1,
            Request::LogPull {
                kind: LogKind::Tag,
                count: Some(10),
            },
            rig.at(0),
        );
        let upload = sent(&actions).remove(0);
        assert_eq!(rig.session.handle_command(2, Request::Reset, rig.at(1)).len(), 0);
        let seg = log_segment(&mut rig, &upload, 1, false, 1);
        rig.feed(&seg, 100);
        let actions = rig.session.handle_tick(rig.at(2200));
        let failed = actions.iter().find_map(|a| match a {
            Action::Complete {
                token: 1,
                outcome: Outcome::Rejected(r),
            } => Some(r.clone()),
            _ => None,
        });
        assert!(failed.unwrap().contains("stopped after 1 segment"));
        assert!(names(&actions).contains(&"ResetDevice".to_string()));
    }

    #[test]
    fn alarms_are_raised_restored_and_synchronised() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        for id in [1, 2] {
            let to = rig.next_from_reader();
            let alarm = Alarm {
                alarm_id: id,
                alarm_code: 1,
                reason: 0,
                level: 1,
                seconds: 0,
                description: "hot".into(),
            };
            let actions = rig.feed(&builders::alarm_report(to, &alarm).unwrap(), 10);
            let p = persists(&actions);
            assert_eq!(p[0].records[0].topic, "gbt37987/r1/up/alarm");
            assert!(matches!(&p[0].alarms[0], AlarmChange::Raise(a) if a.alarm_id == id && a.level == 1));
        }
        assert_eq!(rig.session.active_alarms(), 2);
        let to = rig.next_from_reader();
        let actions = rig.feed(&builders::alarm_restore(to, 1, 0, 5).unwrap(), 20);
        assert_eq!(persists(&actions)[0].alarms, vec![AlarmChange::Restore(1)]);
        // The reader's sync lists nothing: alarm 2 ends too.
        let info = Parameter::named(
            "AlarmSyncInfo",
            Body::from_fields(vec![
                Value::U32(7),
                Value::U8(1),
                Value::U16(1),
                Value::U16(1),
                Value::Dwords(vec![]),
            ]),
        )
        .unwrap();
        let to = rig.next_from_reader();
        let actions = rig.feed(&builders::alarm_sync(to, info).unwrap(), 30);
        let p = persists(&actions);
        assert_eq!(p[0].alarms, vec![AlarmChange::Restore(2)]);
        assert_eq!(p[0].records.len(), 2);
        assert_eq!(rig.session.active_alarms(), 0);
    }

    #[test]
    fn a_flood_of_unusable_frames_closes_the_link_but_one_does_not() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        let actions = rig.session.handle_frame(&[0u8; 3], rig.at(1));
        assert!(matches!(actions[0], Action::Bad(_)) && closed(&actions).is_none());
        let mut reason = None;
        for _ in 0..MAX_BAD_IN_ROW {
            reason = reason.or(closed(&rig.session.handle_bad_frame(rig.at(2))));
        }
        assert!(reason.unwrap().contains("unusable frames in a row"));
    }

    #[test]
    fn commands_wait_for_the_link_and_are_handed_back_when_it_closes() {
        let mut rig = Rig::new(Dialect::Hb2017, false, DesiredRules::default());
        assert!(rig.session.handle_command(5, Request::Reset, rig.at(0)).is_empty());
        let actions = rig.connect(10);
        // Connect work first: the reset is still queued.
        assert_eq!(names(&actions), ["GetAccessSpec"]);
        assert_eq!(rig.session.close(), vec![5]);
        let late = rig.session.handle_command(6, Request::Reset, rig.at(20));
        assert!(matches!(
            late[0],
            Action::Complete {
                token: 6,
                outcome: Outcome::Rejected(_)
            }
        ));
    }

    #[test]
    fn a_reader_announcing_a_fresh_start_gets_its_rules_again() {
        let mut rig = Rig::new(Dialect::Gbt37987_2019, true, one_rule());
        let first = rig.session.start(rig.at(0));
        let probe = sent(&first).remove(0);
        let mut ack = builders::reply_to(&probe.header, Body::default()).unwrap();
        ack.header.device_sn = SN;
        let actions = rig.feed(&ack, 10);
        rig.settle(actions, 10);
        assert_eq!(rig.session.spec_states().get(&7), Some(&SpecState::Active));
        // The reader rebooted on its serial line: the link never dropped, but it says so.
        let actions = rig.connect(100);
        assert_eq!(persists(&actions).len(), 1);
        let again = rig.settle(actions, 110);
        assert_eq!(
            &again[..3],
            ["GetAccessSpec", "GetSelectSpec", "AddSelectSpec"].map(String::from)
        );
    }

    #[test]
    fn a_rule_state_change_follows_the_tracked_state() {
        let mut rig = Rig::new(Dialect::Hb2017, false, one_rule());
        let actions = rig.connect(0);
        rig.settle(actions, 0);
        assert_eq!(rig.session.spec_states().get(&7), Some(&SpecState::Active));
        let actions = rig.session.handle_command(
            3,
            Request::SpecState {
                spec_id: 7,
                state: SpecState::Inactive,
            },
            rig.at(10),
        );
        let stop = sent(&actions).remove(0);
        assert_eq!(stop.name(), Some("StopSelectSpec"));
        let actions = rig.feed(&status_reply(&stop.header, 0, "").unwrap(), 20);
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Complete {
                token: 3,
                outcome: Outcome::Answer(_)
            }
        )));
        assert_eq!(rig.session.spec_states().get(&7), Some(&SpecState::Inactive));
        // A failing step makes the command's result a rejection with the reader's status.
        let actions = rig.session.handle_command(
            4,
            Request::SpecState {
                spec_id: 7,
                state: SpecState::Active,
            },
            rig.at(30),
        );
        let start = sent(&actions).remove(0);
        let actions = rig.feed(&status_reply(&start.header, 401, "busy").unwrap(), 40);
        assert!(actions.iter().any(
            |a| matches!(a, Action::Complete { token: 4, outcome: Outcome::Rejected(r) } if r.contains("401 busy"))
        ));
    }
}
