//! One JT/T 808 terminal connection as a pure state machine: frames, ticks and cloud commands in,
//! [`Action`]s out. No sockets, no database, no clock: time comes in as [`Now`].
//!
//! Owns the connection's protocol rules:
//! - Nothing but register (0x0100), authentication (0x0102) and logout (0x0003) before the
//!   terminal has authenticated; anything else gets a 0x8001 failure and the connection closes.
//! - The edition is fixed per connection: 2019 from the header (the codec cross-checks the header
//!   layout with the body length), 2011 vs 2013 from the register body or the stored registration.
//! - Data-carrying messages become a [`Commit`]: records plus the reply frames to send only after
//!   the records are committed (CONTRACT 5.1). Heartbeats, time queries and refusals are answered
//!   at once.
//! - Subpackages are reassembled by phone + message id + total (the codec's [`Reassembler`]):
//!   every packet is acknowledged, the packet that completes a transfer only after the merged
//!   message is committed; transfers that go quiet get 0x8003 for their missing packets.
//! - Cloud commands become downlinks (split into subpackages above [`Settings::downlink_chunk`]),
//!   matched to their answer (0x0001 quoting id + serial, or the specific reply such as 0x0104),
//!   retransmitted byte-identical after T(n+1) = T(n)·(n+1), and ended with exactly one
//!   [`Action::Complete`] or handed back with [`Action::Release`].
//!
//! Must not: perform I/O, read clocks, or hold anything unbounded (reassembly, in-flight commands,
//! queued commands and the recent-transfer memory all have caps).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::terminals::{AuthRequest, AuthVerdict, RegisterOutcome, RegisterRequest};
use crate::command::{DeviceCommand, Outcome};
use crate::limits::ByteBudget;
use crate::protocol::jt808::{
    downlink_from_json, general_result, header_json, ids, register_result, reply, split_into_packets, BcdTime, Body,
    DownlinkContext, Edition, Header, Message, Packet, Phone, PushOutcome, Reassembler, ReassemblyLimits, TextEncoding,
    TimeoutAction, TransferKey,
};
use crate::store::{EnvelopeKey, Record, RecordClass};

/// The session's limits and timings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// STRING encoding of the JSON view.
    pub text: TextEncoding,
    /// An authenticated connection with no frame for this long is closed.
    pub idle_timeout_ms: u64,
    /// A connection that has not authenticated within this long after its last frame is closed.
    pub auth_timeout_ms: u64,
    /// T1: how long the first send of a downlink waits for its answer.
    pub ack_timeout_ms: u64,
    /// Retransmissions after the first send before a command ends with `timeout`.
    pub max_retransmissions: u32,
    /// Downlinks awaiting their answer at once.
    pub max_inflight: usize,
    /// Commands held while the in-flight window is full.
    pub max_queued_commands: usize,
    /// Bounds of subpackage reassembly per connection.
    pub reassembly: ReassemblyLimits,
    /// Largest body per downlink packet; longer bodies are subpackaged.
    pub downlink_chunk: usize,
    /// Consecutive corrupt frames tolerated before the connection is closed.
    pub max_bad_frames: u32,
    /// Failed authentications, refused registrations and registrations in all tolerated on one
    /// connection.
    pub max_auth_failures: u32,
    /// Subpackage bytes held by all connections together (`jt808.max_reassembly_bytes`).
    pub reassembly_budget: Arc<ByteBudget>,
}

impl Default for Settings {
    /// The standard's usual values: 10 s ack timeout with 3 retransmissions (10 + 20 + 60 + 240 s),
    /// 180 s idle; reassembly bounded to 4 transfers and 1 MiB per connection.
    fn default() -> Self {
        Settings {
            text: TextEncoding::Gbk,
            idle_timeout_ms: 180_000,
            auth_timeout_ms: 60_000,
            ack_timeout_ms: 10_000,
            max_retransmissions: 3,
            max_inflight: 8,
            max_queued_commands: 32,
            reassembly: ReassemblyLimits {
                max_packets: 1024,
                max_transfer_bytes: 512 * 1024,
                max_total_bytes: 1024 * 1024,
                max_transfers: 4,
                timeout_ms: 30_000,
                max_resend_requests: 3,
            },
            downlink_chunk: 1000,
            max_bad_frames: 8,
            max_auth_failures: 3,
            reassembly_budget: Arc::new(ByteBudget::default()),
        }
    }
}

/// The time an event happens: `mono_ms` for timers (never steps back), `wall_ms` (ms since the
/// Unix epoch) for records and the 0x8004 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a clock that never steps back (timers).
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch (records, 0x8004).
    pub wall_ms: i64,
}

/// Records to commit and the frames to send once they are committed.
///
/// A commit with no records still waits for the commits before it: that is how the repeated
/// acknowledgement of a transfer's packet waits for the merged message's commit.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Records appended in one transaction.
    pub records: Vec<Record>,
    /// A terminal whose auth code is withdrawn in the same transaction (0x0003).
    pub deregister: Option<String>,
    /// Replies, sent only after the commit succeeded.
    pub replies: Vec<Bytes>,
    /// Sent instead when the commit failed (0x8001 result 1): the terminal keeps the data and
    /// sends it again; the connection then closes so it resends in order.
    pub refusals: Vec<Bytes>,
}

/// What the connection task must do, in order.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write these frames now.
    Send(Vec<Bytes>),
    /// Commit, then send the replies.
    Commit(Commit),
    /// Decide a registration (and commit `record` when it succeeds), then call
    /// [`Session::on_register`].
    Register { request: RegisterRequest, record: Record },
    /// Verify an authentication (and commit `record` when it passes), then call
    /// [`Session::on_auth`].
    Authenticate { request: AuthRequest, record: Record },
    /// The terminal authenticated as `device`: claim the id and deliver its queued commands.
    Online { device: String },
    /// End a delivered command.
    Complete { id: i64, outcome: Outcome },
    /// Hand a delivered command back to the plane (it stays queued until its TTL).
    Release { id: i64 },
    /// Bad input from the terminal: log it and count it.
    Bad(String),
    /// A global bound refused something (counted by the shell).
    LimitHit(Limit),
    /// Close the connection once the actions before this one are done.
    Close(String),
    /// Read nothing more from this connection for this many ms (after the actions before it).
    Pause(u64),
}

/// The global bounds a session draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `jt808.max_reassembly_bytes`.
    Reassembly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Unauthenticated,
    Registering {
        header: Header,
        edition: Edition,
        resume_online: bool,
    },
    Authenticating {
        header: Header,
        resume_online: bool,
    },
    Online,
    Closed,
}

/// A downlink awaiting its answer.
#[derive(Debug)]
struct Inflight {
    command: i64,
    msg_id: u16,
    /// The specific reply id that answers it besides 0x0001, and whether that reply quotes the serial.
    expect: Option<(u16, bool)>,
    /// Serial of every packet (one unless subpackaged).
    serials: Vec<u16>,
    /// The encoded packets, resent byte-identical.
    frames: Vec<Bytes>,
    sends: u32,
    wait_ms: u64,
    deadline_ms: u64,
}

/// Completed transfers remembered so a resent packet of one is acknowledged again instead of
/// starting a new transfer (which would publish the message twice).
const RECENT_PACKETS: usize = 64;

/// Subpackets refused in a row (budget or per-transfer limits) before the connection is slowed
/// down: a terminal that goes on sending what it was told is refused only costs the appliance
/// work that every other connection waits behind. Each further refusal pauses its reads for
/// [`REFUSED_PAUSE_MS`]; it is still served, only slowly, until a subpacket is accepted again.
pub const MAX_REFUSED_SUBPACKETS: u32 = 32;
pub const REFUSED_PAUSE_MS: u64 = 100;

/// One terminal connection.
pub struct Session {
    settings: Arc<Settings>,
    phase: Phase,
    phone: Option<Phone>,
    device: String,
    edition: Edition,
    protocol_version: Option<u8>,
    /// The edition of a register seen on this connection.
    registered_edition: Option<Edition>,
    serial: u16,
    reassembler: Reassembler,
    recent: VecDeque<(TransferKey, u16, u16)>,
    inflight: Vec<Inflight>,
    queue: VecDeque<DeviceCommand>,
    last_frame_ms: u64,
    bad_frames: u32,
    /// Subpackets refused in a row.
    refused_subpackets: u32,
    auth_failures: u32,
    registrations: u32,
}

impl Session {
    /// A new connection accepted at `now`.
    pub fn new(settings: Arc<Settings>, now: Now) -> Session {
        let reassembler = Reassembler::new(settings.reassembly);
        Session {
            settings,
            phase: Phase::Unauthenticated,
            phone: None,
            device: String::new(),
            edition: Edition::V2013,
            protocol_version: None,
            registered_edition: None,
            serial: 0,
            reassembler,
            recent: VecDeque::new(),
            inflight: Vec::new(),
            queue: VecDeque::new(),
            last_frame_ms: now.mono_ms,
            bad_frames: 0,
            refused_subpackets: 0,
            auth_failures: 0,
            registrations: 0,
        }
    }

    /// The authenticated phone as rendered in topics, once online.
    pub fn device(&self) -> Option<&str> {
        self.phone.map(|_| self.device.as_str())
    }

    /// The connection's edition (meaningful once authenticated).
    pub fn edition(&self) -> Edition {
        self.edition
    }

    /// Whether the terminal has authenticated on this connection.
    pub fn is_online(&self) -> bool {
        match self.phase {
            Phase::Online => true,
            Phase::Registering { resume_online, .. } | Phase::Authenticating { resume_online, .. } => resume_online,
            Phase::Unauthenticated | Phase::Closed => false,
        }
    }

    /// Whether another command may be handed in (the caller leaves the rest in its channel).
    pub fn can_take_command(&self) -> bool {
        self.is_online() && self.queue.len() < self.settings.max_queued_commands
    }

    /// Subpackage bytes held (for tests and metrics).
    pub fn reassembly_bytes(&self) -> usize {
        self.reassembler.held_bytes()
    }

    /// When [`Session::handle_tick`] must run next (monotonic ms).
    pub fn next_deadline(&self, now: Now) -> u64 {
        let limit = if self.is_online() {
            self.settings.idle_timeout_ms
        } else {
            self.settings.auth_timeout_ms
        };
        let mut next = self.last_frame_ms.saturating_add(limit);
        for f in &self.inflight {
            next = next.min(f.deadline_ms);
        }
        // The reassembler keeps its deadlines to itself: poll it every second (or its timeout,
        // if shorter) while it holds data.
        if !self.reassembler.is_empty() {
            let poll = self.settings.reassembly.timeout_ms.clamp(1, 1000);
            next = next.min(now.mono_ms.saturating_add(poll));
        }
        next
    }

    fn next_serial(&mut self) -> u16 {
        let s = self.serial;
        self.serial = s.wrapping_add(1);
        s
    }

    fn frame(message: &Message) -> Option<Bytes> {
        message.to_bytes().ok()
    }

    fn general(&mut self, to: &Header, result: u8) -> Vec<Bytes> {
        let serial = self.next_serial();
        Self::frame(&reply::general_reply(to, result, serial))
            .into_iter()
            .collect()
    }

    fn record(&self, message: &Message, class: RecordClass, now: Now) -> Record {
        let phone = message.header.phone.to_string();
        let body = message.to_json_bytes(self.settings.text).unwrap_or_else(|_| {
            let fallback = json!({"header": header_json(&message.header, 0), "body": {}});
            serde_json::to_vec(&fallback).unwrap_or_else(|_| b"{}".to_vec())
        });
        Record {
            device: crate::topics::device_key("jt808", &phone),
            topic: crate::topics::jt808_up(&phone),
            class,
            envelope: EnvelopeKey::Lower,
            received_at_ms: now.wall_ms,
            body,
        }
    }

    /// A frame from the terminal.
    pub fn handle_frame(&mut self, packet: Packet, now: Now) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        self.last_frame_ms = now.mono_ms;
        self.bad_frames = 0;
        if self.phase == Phase::Online {
            self.online_frame(packet, now)
        } else {
            self.unauthenticated_frame(packet, now, false)
        }
    }

    /// A corrupt frame (already logged and counted by the caller): too many in a row close.
    pub fn handle_bad_frame(&mut self) -> Vec<Action> {
        self.bad_frames += 1;
        if self.bad_frames >= self.settings.max_bad_frames {
            self.phase = Phase::Closed;
            return vec![Action::Close(format!("{} corrupt frames in a row", self.bad_frames))];
        }
        Vec::new()
    }

    /// The store could not commit what `header`'s message needs: refuse it and close (the
    /// terminal tries again on a new connection; nothing was acknowledged).
    fn store_failed(&mut self, header: &Header, why: &str) -> Vec<Action> {
        let reply = self.general(header, general_result::FAILED);
        self.phase = Phase::Closed;
        vec![Action::Send(reply), Action::Close(why.to_string())]
    }

    fn refuse_and_close(&mut self, header: &Header, why: String) -> Vec<Action> {
        let reply = self.general(header, general_result::FAILED);
        self.phase = Phase::Closed;
        vec![Action::Bad(why.clone()), Action::Send(reply), Action::Close(why)]
    }

    fn unauthenticated_frame(&mut self, packet: Packet, now: Now, resume_online: bool) -> Vec<Action> {
        let header = packet.header;
        let allowed = matches!(header.msg_id, ids::REGISTER | ids::AUTHENTICATE | ids::LOGOUT);
        if !allowed || header.subpackage.is_some() {
            return self.refuse_and_close(
                &header,
                format!(
                    "message 0x{:04X} from {} before authentication",
                    header.msg_id, header.phone
                ),
            );
        }
        let edition = if header.is_2019() {
            Edition::V2019
        } else {
            self.registered_edition.unwrap_or(Edition::V2013)
        };
        let message = match Message::decode(&packet, edition) {
            Ok(m) => m,
            Err(e) => {
                let reply = self.general(&header, general_result::MESSAGE_ERROR);
                return vec![
                    Action::Bad(format!("0x{:04X} from {}: {e}", header.msg_id, header.phone)),
                    Action::Send(reply),
                ];
            }
        };
        match &message.body {
            Body::Register(register) => {
                // Each registration is a database write (and, in open mode, a new row): a
                // connection gets a few, not an unbounded stream.
                self.registrations += 1;
                if self.registrations > self.settings.max_auth_failures {
                    self.phase = Phase::Closed;
                    let why = format!(
                        "more than {} registrations on one connection",
                        self.settings.max_auth_failures
                    );
                    return vec![Action::Bad(why.clone()), Action::Close(why)];
                }
                let body = message.to_json(self.settings.text).unwrap_or(Value::Null);
                let text = |key: &str| body["body"][key].as_str().unwrap_or_default().trim().to_string();
                let request = RegisterRequest {
                    phone: header.phone.to_string(),
                    terminal_id: text("dev_id"),
                    plate: text("license_number"),
                    plate_color: body["body"]["color"].as_u64().and_then(|c| u8::try_from(c).ok()),
                    edition: register.edition,
                };
                self.phase = Phase::Registering {
                    header,
                    edition: register.edition,
                    resume_online,
                };
                let record = self.record(&message, RecordClass::Critical, now);
                vec![Action::Register { request, record }]
            }
            Body::Authenticate(auth) => {
                let trimmed = |bytes: &[u8]| {
                    String::from_utf8_lossy(bytes)
                        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                        .to_string()
                };
                let request = AuthRequest {
                    phone: header.phone.to_string(),
                    code: auth.code.clone(),
                    imei: auth.extension.as_ref().map(|e| trimmed(&e.imei)),
                    software_version: auth.extension.as_ref().map(|e| trimmed(&e.software_version)),
                };
                self.phase = Phase::Authenticating { header, resume_online };
                let record = self.record(&message, RecordClass::Critical, now);
                vec![Action::Authenticate { request, record }]
            }
            _ => {
                // 0x0003 before authentication: nothing of this terminal's is trusted yet, so
                // nothing is withdrawn; answer as the standard says and close.
                let reply = self.general(&header, general_result::OK);
                self.phase = Phase::Closed;
                vec![
                    Action::Send(reply),
                    Action::Close("logout before authentication".into()),
                ]
            }
        }
    }

    /// The outcome of [`Action::Register`]; `None` when it could not be stored: the terminal is
    /// told so (0x8001 result 1) and the connection closes; it registers again later.
    pub fn on_register(&mut self, outcome: Option<RegisterOutcome>) -> Vec<Action> {
        let Phase::Registering {
            header,
            edition,
            resume_online,
        } = self.phase
        else {
            return Vec::new();
        };
        self.phase = if resume_online {
            Phase::Online
        } else {
            Phase::Unauthenticated
        };
        let Some(outcome) = outcome else {
            return self.store_failed(&header, "the registration could not be stored");
        };
        let mut actions = Vec::new();
        if outcome.result == register_result::OK {
            self.registered_edition = Some(edition);
        } else {
            self.auth_failures += 1;
            actions.push(Action::Bad(format!(
                "register of {} refused with result {}",
                header.phone, outcome.result
            )));
        }
        let serial = self.next_serial();
        let frame = Self::frame(&reply::register_reply(
            &header,
            outcome.result,
            &outcome.auth_code,
            serial,
        ));
        actions.push(Action::Send(frame.into_iter().collect()));
        if self.auth_failures >= self.settings.max_auth_failures && !resume_online {
            self.phase = Phase::Closed;
            actions.push(Action::Close("too many refused registrations".into()));
        }
        actions
    }

    /// The verdict of [`Action::Authenticate`]; `None` when it could not be checked or stored:
    /// the terminal is told so (0x8001 result 1) and the connection closes.
    pub fn on_auth(&mut self, verdict: Option<AuthVerdict>) -> Vec<Action> {
        let Phase::Authenticating { header, resume_online } = self.phase else {
            return Vec::new();
        };
        self.phase = if resume_online {
            Phase::Online
        } else {
            Phase::Unauthenticated
        };
        let Some(verdict) = verdict else {
            return self.store_failed(&header, "the authentication could not be stored");
        };
        if !verdict.ok {
            self.auth_failures += 1;
            let reply = self.general(&header, general_result::FAILED);
            let mut actions = vec![
                Action::Bad(format!("authentication of {} refused", header.phone)),
                Action::Send(reply),
            ];
            // A terminal that fails to re-authenticate has lost its claim on the connection.
            if resume_online || self.auth_failures >= self.settings.max_auth_failures {
                self.phase = Phase::Closed;
                actions.push(Action::Close("authentication refused".into()));
            }
            return actions;
        }
        let reply = self.general(&header, general_result::OK);
        if resume_online {
            return vec![Action::Send(reply)];
        }
        self.phase = Phase::Online;
        self.phone = Some(header.phone);
        self.device = header.phone.to_string();
        self.protocol_version = header.protocol_version;
        self.edition = if header.is_2019() {
            Edition::V2019
        } else {
            match self.registered_edition.or(verdict.edition) {
                Some(Edition::V2011) => Edition::V2011,
                _ => Edition::V2013,
            }
        };
        vec![
            Action::Send(reply),
            Action::Online {
                device: self.device.clone(),
            },
        ]
    }

    fn online_frame(&mut self, packet: Packet, now: Now) -> Vec<Action> {
        let header = packet.header;
        if Some(header.phone) != self.phone {
            self.phase = Phase::Closed;
            let why = format!("frame from phone {} on the connection of {}", header.phone, self.device);
            return vec![Action::Bad(why.clone()), Action::Close(why)];
        }
        if header.subpackage.is_some() {
            return self.subpackage(packet, now);
        }
        match Message::decode(&packet, self.edition) {
            Ok(message) => self.message(message, &header, now),
            Err(e) => self.undecodable(&header, e.to_string()),
        }
    }

    fn undecodable(&mut self, header: &Header, why: String) -> Vec<Action> {
        let mut actions = vec![Action::Bad(format!(
            "0x{:04X} from {}: {why}",
            header.msg_id, header.phone
        ))];
        if header.msg_id < 0x8000 {
            actions.push(Action::Send(self.general(header, general_result::MESSAGE_ERROR)));
        }
        actions
    }

    fn subpackage(&mut self, packet: Packet, now: Now) -> Vec<Action> {
        let header = packet.header;
        let Some(sub) = header.subpackage else {
            return Vec::new();
        };
        let key = TransferKey {
            phone: header.phone,
            msg_id: header.msg_id,
            total: sub.total,
        };
        if self.recent.contains(&(key, sub.index, header.serial)) {
            // A packet of a transfer already merged, sent again: acknowledged again, but only
            // once the merged message's commit (queued before this) has succeeded.
            let replies = self.general(&header, general_result::OK);
            let refusals = self.general(&header, general_result::FAILED);
            return vec![Action::Commit(Commit {
                replies,
                refusals,
                ..Commit::default()
            })];
        }
        // The packet's bytes come from the budget all connections share; what the reassembler
        // does not keep (a completed, restarted or refused transfer) goes straight back.
        // A packet that completes its transfer frees the transfer's bytes: it never waits for the
        // budget, so a full budget cannot keep transfers from finishing.
        let completes = self.reassembler.missing(&key).is_some_and(|m| m == [sub.index]);
        let len = if completes { 0 } else { packet.body.len() as u64 };
        if !self.settings.reassembly_budget.try_take(len) {
            let reply = self.general(&header, general_result::FAILED);
            let mut actions = vec![
                Action::LimitHit(Limit::Reassembly),
                Action::Bad(format!(
                    "subpackage 0x{:04X} from {} refused: all connections hold {} bytes of unfinished transfers",
                    header.msg_id,
                    header.phone,
                    self.settings.reassembly_budget.limit()
                )),
                Action::Send(reply),
            ];
            actions.extend(self.subpacket_refused());
            return actions;
        }
        let held_before = self.reassembler.held_bytes() as u64;
        let pushed = self.reassembler.push(&packet, now.mono_ms);
        let held_after = self.reassembler.held_bytes() as u64;
        let returned = (held_before + len).saturating_sub(held_after);
        self.settings.reassembly_budget.give(returned);
        if held_after > held_before + len {
            // Only a completing packet is added without taking: take what it added after all.
            let _ = self.settings.reassembly_budget.try_take(held_after - held_before - len);
        }
        match pushed {
            Ok(PushOutcome::Complete(done)) => {
                self.refused_subpackets = 0;
                for (index, serial) in (1..=done.total).zip(done.serials.iter()) {
                    if self.recent.len() == RECENT_PACKETS {
                        self.recent.pop_front();
                    }
                    self.recent.push_back((key, index, *serial));
                }
                match Message::from_parts(done.header, &done.body, self.edition) {
                    Ok(message) => {
                        // Answers get no reply of their own, but every packet is acknowledged.
                        let answer = is_answer(&message);
                        let mut actions = self.message(message, &header, now);
                        if answer {
                            actions.insert(0, Action::Send(self.general(&header, general_result::OK)));
                        }
                        actions
                    }
                    Err(e) => self.undecodable(&header, format!("reassembled body: {e}")),
                }
            }
            Ok(PushOutcome::Pending { .. }) | Ok(PushOutcome::Duplicate) => {
                self.refused_subpackets = 0;
                vec![Action::Send(self.general(&header, general_result::OK))]
            }
            Err(e) => {
                let reply = self.general(&header, general_result::FAILED);
                let mut actions = vec![
                    Action::Bad(format!("subpackage 0x{:04X} from {}: {e}", header.msg_id, header.phone)),
                    Action::Send(reply),
                ];
                actions.extend(self.subpacket_refused());
                actions
            }
        }
    }

    /// Counts a refused subpacket; past [`MAX_REFUSED_SUBPACKETS`] in a row the connection's
    /// reads pause.
    fn subpacket_refused(&mut self) -> Option<Action> {
        self.refused_subpackets = self.refused_subpackets.saturating_add(1);
        (self.refused_subpackets > MAX_REFUSED_SUBPACKETS).then_some(Action::Pause(REFUSED_PAUSE_MS))
    }

    /// A commit of `message` whose 0x8001 (answering `reply_to`) waits for it.
    fn commit(&mut self, message: &Message, class: RecordClass, reply_to: &Header, now: Now) -> Vec<Action> {
        let record = self.record(message, class, now);
        let replies = self.general(reply_to, general_result::OK);
        let refusals = self.general(reply_to, general_result::FAILED);
        vec![Action::Commit(Commit {
            records: vec![record],
            deregister: None,
            replies,
            refusals,
        })]
    }

    fn message(&mut self, message: Message, reply_to: &Header, now: Now) -> Vec<Action> {
        let msg_id = message.header.msg_id;
        match &message.body {
            Body::TerminalGeneralReply(g) => self.answer(
                ids::TERMINAL_GENERAL_REPLY,
                Some((g.reply_id, g.reply_serial)),
                &message,
                now,
            ),
            Body::Heartbeat(_) => vec![Action::Send(self.general(reply_to, general_result::OK))],
            Body::Logout => {
                let record = self.record(&message, RecordClass::Critical, now);
                let replies = self.general(reply_to, general_result::OK);
                let refusals = self.general(reply_to, general_result::FAILED);
                self.phase = Phase::Closed;
                vec![
                    Action::Commit(Commit {
                        records: vec![record],
                        deregister: Some(self.device.clone()),
                        replies,
                        refusals,
                    }),
                    Action::Close("logout".into()),
                ]
            }
            Body::ServerTimeQuery => {
                let serial = self.next_serial();
                let time = utc_bcd(now.wall_ms);
                let frame = Self::frame(&reply::server_time_reply(reply_to, time, serial));
                vec![Action::Send(frame.into_iter().collect())]
            }
            Body::TerminalResendRequest(request) => {
                let mut frames = Vec::new();
                if let Some(f) = self
                    .inflight
                    .iter()
                    .find(|f| f.serials.first() == Some(&request.first_serial))
                {
                    for index in &request.indexes {
                        if let Some(frame) = usize::from(*index).checked_sub(1).and_then(|i| f.frames.get(i)) {
                            frames.push(frame.clone());
                        }
                    }
                }
                frames.extend(self.general(reply_to, general_result::OK));
                vec![Action::Send(frames)]
            }
            Body::Register(_) | Body::Authenticate(_) => {
                let packet = match message.to_packet() {
                    Ok(p) => p,
                    Err(e) => return self.undecodable(reply_to, e.to_string()),
                };
                self.unauthenticated_frame(packet, now, true)
            }
            Body::Location(location) => {
                let class = if location.basic.alarm != 0 {
                    RecordClass::Critical
                } else {
                    RecordClass::Telemetry
                };
                self.commit(&message, class, reply_to, now)
            }
            Body::BatchLocation(batch) => {
                let class = if batch.items.iter().any(|l| l.basic.alarm != 0) {
                    RecordClass::Critical
                } else {
                    RecordClass::Telemetry
                };
                self.commit(&message, class, reply_to, now)
            }
            Body::ParamsReply(r) => self.answer(ids::PARAMS_REPLY, Some((0, r.reply_serial)), &message, now),
            Body::Attributes(_) => self.answer(ids::ATTRIBUTES, None, &message, now),
            Body::LocationQueryReply(r) => {
                self.answer(ids::LOCATION_QUERY_REPLY, Some((0, r.reply_serial)), &message, now)
            }
            Body::VehicleControlReply(r) => {
                self.answer(ids::VEHICLE_CONTROL_REPLY, Some((0, r.reply_serial)), &message, now)
            }
            Body::MediaUpload(upload) => {
                let record = self.record(&message, RecordClass::Event, now);
                let mut replies = self.general(reply_to, general_result::OK);
                let serial = self.next_serial();
                let done = Message::new(
                    reply_to.reply(ids::MEDIA_UPLOAD_REPLY, serial),
                    Body::MediaUploadReply(crate::protocol::jt808::MediaUploadReply {
                        media_id: upload.event.media_id,
                        retransmit: Vec::new(),
                    }),
                );
                replies.extend(Self::frame(&done));
                let refusals = self.general(reply_to, general_result::FAILED);
                vec![Action::Commit(Commit {
                    records: vec![record],
                    deregister: None,
                    replies,
                    refusals,
                })]
            }
            Body::Raw(bytes) if raw_answer(msg_id).is_some() => {
                let quotes_serial = raw_answer(msg_id) == Some(true);
                let quoted = match bytes.as_ref() {
                    [a, b, ..] if quotes_serial => Some((0, u16::from_be_bytes([*a, *b]))),
                    _ if quotes_serial => None,
                    _ => None,
                };
                if quotes_serial && quoted.is_none() {
                    return self.undecodable(reply_to, "answer too short to quote a serial".into());
                }
                let matched = self.answer(msg_id, quoted, &message, now);
                // 0x0702 is also sent unprompted (a driver swiped a card): then it is data.
                if msg_id == 0x0702 && matched.iter().all(|a| !matches!(a, Action::Complete { .. })) {
                    return self.commit(&message, RecordClass::Event, reply_to, now);
                }
                matched
            }
            _ if msg_id >= 0x8000 => {
                let reply = self.general(reply_to, general_result::UNSUPPORTED);
                vec![
                    Action::Bad(format!(
                        "platform message 0x{msg_id:04X} sent by terminal {}",
                        self.device
                    )),
                    Action::Send(reply),
                ]
            }
            // Everything else a terminal originates (0x0108, 0x0800, 0x0900, 0x0901, unmodelled
            // ids, encrypted bodies) is data: publish it, acknowledge after commit.
            _ => self.commit(&message, RecordClass::Event, reply_to, now),
        }
    }

    /// An answer from the terminal. `quoted` is `(answered id, serial)` for 0x0001, `(0, serial)`
    /// for specific replies quoting a serial, `None` for replies that quote nothing. A matching
    /// in-flight downlink is completed with the answer's JSON; an answer nobody waits for (a late
    /// one) is published as data without an acknowledgement, since answers are not acknowledged.
    fn answer(&mut self, reply_id: u16, quoted: Option<(u16, u16)>, message: &Message, now: Now) -> Vec<Action> {
        let position = self.inflight.iter().position(|f| match (reply_id, quoted) {
            (ids::TERMINAL_GENERAL_REPLY, Some((id, serial))) => f.msg_id == id && f.serials.contains(&serial),
            (_, Some((_, serial))) => f.expect == Some((reply_id, true)) && f.serials.contains(&serial),
            (_, None) => f.expect == Some((reply_id, false)),
        });
        let Some(position) = position else {
            if reply_id == ids::TERMINAL_GENERAL_REPLY {
                return Vec::new();
            }
            let record = self.record(message, RecordClass::Event, now);
            return vec![Action::Commit(Commit {
                records: vec![record],
                ..Commit::default()
            })];
        };
        let done = self.inflight.remove(position);
        let answer = message.to_json(self.settings.text).unwrap_or(Value::Null);
        let mut actions = vec![Action::Complete {
            id: done.command,
            outcome: Outcome::Answer(answer),
        }];
        actions.extend(self.fill_window(now));
        actions
    }

    /// A command from the cloud for this terminal.
    pub fn handle_command(&mut self, command: DeviceCommand, now: Now) -> Vec<Action> {
        if !self.is_online() || self.phase == Phase::Closed {
            return vec![Action::Release { id: command.id }];
        }
        if self.inflight.len() >= self.settings.max_inflight || !self.queue.is_empty() {
            if self.queue.len() >= self.settings.max_queued_commands {
                return vec![Action::Release { id: command.id }];
            }
            self.queue.push_back(command);
            return Vec::new();
        }
        self.send_command(command, now)
    }

    fn fill_window(&mut self, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.inflight.len() < self.settings.max_inflight {
            let Some(command) = self.queue.pop_front() else { break };
            actions.extend(self.send_command(command, now));
        }
        actions
    }

    fn send_command(&mut self, command: DeviceCommand, now: Now) -> Vec<Action> {
        let reject = |why: String| {
            vec![Action::Complete {
                id: command.id,
                outcome: Outcome::Rejected(why),
            }]
        };
        let Some(phone) = self.phone else {
            return vec![Action::Release { id: command.id }];
        };
        let custom_serial = command
            .payload
            .get("header")
            .and_then(|h| h.get("msg_sn"))
            .is_some_and(|v| !v.is_null());
        let context = DownlinkContext {
            phone,
            protocol_version: self.protocol_version,
            serial: self.serial,
            text: self.settings.text,
        };
        let message = match downlink_from_json(&command.payload, &context) {
            Ok(m) => m,
            Err(e) => return reject(e.to_string()),
        };
        let msg_id = message.header.msg_id;
        if matches!(
            msg_id,
            ids::PLATFORM_GENERAL_REPLY
                | ids::PLATFORM_RESEND_REQUEST
                | ids::SERVER_TIME_REPLY
                | ids::REGISTER_REPLY
                | ids::MEDIA_UPLOAD_REPLY
        ) {
            return reject(format!("0x{msg_id:04X} is a reply the edge sends by itself"));
        }
        let body = match message.encode_body() {
            Ok(b) => b,
            Err(e) => return reject(e.to_string()),
        };
        let packets = match split_into_packets(&message.header, &body, self.settings.downlink_chunk) {
            Ok(p) => p,
            Err(e) => return reject(e.to_string()),
        };
        let frames: Vec<Bytes> = packets.iter().filter_map(|p| p.to_bytes().ok()).collect();
        if frames.len() != packets.len() {
            return reject("the downlink could not be encoded".into());
        }
        if !custom_serial {
            let used = u16::try_from(packets.len()).unwrap_or(u16::MAX);
            self.serial = self.serial.wrapping_add(used);
        }
        let wait_ms = self.settings.ack_timeout_ms;
        self.inflight.push(Inflight {
            command: command.id,
            msg_id,
            expect: expected_reply(msg_id),
            serials: packets.iter().map(|p| p.header.serial).collect(),
            frames: frames.clone(),
            sends: 1,
            wait_ms,
            deadline_ms: now.mono_ms.saturating_add(wait_ms),
        });
        vec![Action::Send(frames)]
    }

    /// Timers: idle and authentication timeouts, subpackage resend requests, downlink
    /// retransmissions and command timeouts.
    pub fn handle_tick(&mut self, now: Now) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        let limit = if self.is_online() {
            self.settings.idle_timeout_ms
        } else {
            self.settings.auth_timeout_ms
        };
        if now.mono_ms.saturating_sub(self.last_frame_ms) >= limit {
            self.phase = Phase::Closed;
            let what = if self.is_online() { "frame" } else { "authentication" };
            return vec![Action::Close(format!("no {what} for {limit} ms"))];
        }
        let mut actions = Vec::new();
        let held_before = self.reassembler.held_bytes();
        let timeouts = self.reassembler.poll_timeouts(now.mono_ms);
        self.settings
            .reassembly_budget
            .give(held_before.saturating_sub(self.reassembler.held_bytes()) as u64);
        for timeout in timeouts {
            match timeout {
                TimeoutAction::RequestResend {
                    header,
                    first_serial,
                    missing,
                    ..
                } => {
                    // A 2013 request counts with a BYTE: send long lists in several requests.
                    let per_request = if header.is_2019() { 1000 } else { 255 };
                    let mut frames = Vec::new();
                    for chunk in missing.chunks(per_request) {
                        let serial = self.next_serial();
                        frames.extend(Self::frame(&reply::resend_request(
                            &header,
                            first_serial,
                            chunk,
                            serial,
                        )));
                    }
                    actions.push(Action::Send(frames));
                }
                TimeoutAction::Abandon { key, missing } => actions.push(Action::Bad(format!(
                    "subpackaged 0x{:04X} from {} abandoned: {} of {} packets never arrived",
                    key.msg_id,
                    key.phone,
                    missing.len(),
                    key.total
                ))),
            }
        }
        let mut index = 0;
        while index < self.inflight.len() {
            let f = &mut self.inflight[index];
            if f.deadline_ms > now.mono_ms {
                index += 1;
                continue;
            }
            if f.sends <= self.settings.max_retransmissions {
                // T(n+1) = T(n)·(n+1), n being the number of sends so far.
                f.sends += 1;
                f.wait_ms = f.wait_ms.saturating_mul(u64::from(f.sends));
                f.deadline_ms = now.mono_ms.saturating_add(f.wait_ms);
                actions.push(Action::Send(f.frames.clone()));
                index += 1;
            } else {
                let done = self.inflight.remove(index);
                actions.push(Action::Complete {
                    id: done.command,
                    outcome: Outcome::Timeout,
                });
            }
        }
        actions.extend(self.fill_window(now));
        actions
    }

    /// The connection is closing: every command not ended goes back to the plane.
    pub fn close(&mut self) -> Vec<Action> {
        self.phase = Phase::Closed;
        self.release_reassembly();
        let mut actions: Vec<Action> = self
            .inflight
            .drain(..)
            .map(|f| Action::Release { id: f.command })
            .collect();
        actions.extend(self.queue.drain(..).map(|c| Action::Release { id: c.id }));
        actions
    }
}

impl Session {
    /// Drops unfinished transfers and gives their bytes back to the shared budget.
    fn release_reassembly(&mut self) {
        self.settings
            .reassembly_budget
            .give(self.reassembler.held_bytes() as u64);
        self.reassembler.clear();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release_reassembly();
    }
}

/// The specific reply answering downlink `msg_id` besides 0x0001, and whether it quotes the
/// downlink's serial (EMQX's table; facts sheet 3.6).
fn expected_reply(msg_id: u16) -> Option<(u16, bool)> {
    Some(match msg_id {
        ids::QUERY_ALL_PARAMS | ids::QUERY_PARAMS => (ids::PARAMS_REPLY, true),
        ids::QUERY_ATTRIBUTES => (ids::ATTRIBUTES, false),
        ids::QUERY_LOCATION => (ids::LOCATION_QUERY_REPLY, true),
        ids::VEHICLE_CONTROL => (ids::VEHICLE_CONTROL_REPLY, true),
        0x8700 => (0x0700, true),
        0x8702 => (0x0702, false),
        0x8801 => (0x0805, true),
        0x8802 => (0x0802, true),
        0x8608 => (0x0608, false),
        _ => return None,
    })
}

/// Whether `message` answers a platform message (such messages are not acknowledged).
fn is_answer(message: &Message) -> bool {
    match &message.body {
        Body::TerminalGeneralReply(_)
        | Body::ParamsReply(_)
        | Body::Attributes(_)
        | Body::LocationQueryReply(_)
        | Body::VehicleControlReply(_) => true,
        Body::Raw(_) => raw_answer(message.header.msg_id).is_some() && message.header.msg_id != 0x0702,
        _ => false,
    }
}

/// For answers the codec keeps raw: `Some(quotes_serial)`.
fn raw_answer(msg_id: u16) -> Option<bool> {
    match msg_id {
        0x0700 | 0x0805 | 0x0802 => Some(true),
        0x0702 | 0x0608 => Some(false),
        _ => None,
    }
}

/// `wall_ms` as the BCD UTC time of 0x8004.
fn utc_bcd(wall_ms: i64) -> BcdTime {
    let t =
        time::OffsetDateTime::from_unix_timestamp(wall_ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    BcdTime::from_parts(
        u16::try_from(t.year()).unwrap_or(0),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use serde_json::json;

    use super::*;
    use crate::protocol::jt808::{
        AuthExtension2019, Authenticate, BatchLocation, FrameDecoder, GeneralReply, Location, LocationBasic,
        LocationExtra, Param, ParamsReply, PassThrough, Register, Subpackage,
    };

    const PHONE: &str = "013800138000";

    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            wall_ms: 1_795_000_000_000 + ms as i64,
        }
    }

    fn phone() -> Phone {
        Phone::parse(PHONE).unwrap()
    }

    fn header(version: Option<u8>, serial: u16) -> Header {
        let phone = match version {
            Some(_) => Phone::parse("00000000013800138000").unwrap(),
            None => phone(),
        };
        Header::new(0, phone, version, serial)
    }

    fn packet(body: Body, serial: u16) -> Packet {
        Message::new(header(None, serial), body).to_packet().unwrap()
    }

    fn location(n: u32, alarm: u32) -> Location {
        Location {
            basic: LocationBasic {
                alarm,
                status: 3,
                latitude: 31_230_400,
                longitude: 121_473_700,
                altitude: 12,
                speed: 600,
                direction: 90,
                time: BcdTime::parse("261122083000").unwrap(),
            },
            extras: vec![LocationExtra::Mileage(n)],
            trailing: Vec::new(),
        }
    }

    fn settings() -> Arc<Settings> {
        Arc::new(Settings::default())
    }

    fn decode(frames: &[Bytes]) -> Vec<Message> {
        frames
            .iter()
            .map(|f| {
                let mut buf = BytesMut::from(&f[..]);
                let p = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
                Message::decode(&p, Edition::V2013).unwrap()
            })
            .collect()
    }

    fn sent(actions: &[Action]) -> Vec<Message> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(f) => Some(decode(f)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn general(m: &Message) -> GeneralReply {
        match &m.body {
            Body::PlatformGeneralReply(g) => *g,
            other => panic!("expected 0x8001, got {other:?}"),
        }
    }

    fn commits(actions: &[Action]) -> Vec<&Commit> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Commit(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn closes(actions: &[Action]) -> bool {
        actions.iter().any(|a| matches!(a, Action::Close(_)))
    }

    fn online_with(settings: Arc<Settings>) -> Session {
        let mut s = Session::new(settings, at(0));
        let auth = Body::Authenticate(Authenticate {
            code: b"CODE".to_vec(),
            extension: None,
        });
        let actions = s.handle_frame(packet(auth, 1), at(0));
        assert!(matches!(actions.as_slice(), [Action::Authenticate { .. }]));
        let actions = s.on_auth(Some(AuthVerdict {
            ok: true,
            edition: Some(Edition::V2013),
        }));
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Online { device } if device == PHONE)));
        s
    }

    fn online() -> Session {
        online_with(settings())
    }

    fn command(id: i64, payload: Value) -> DeviceCommand {
        DeviceCommand {
            id,
            request_id: format!("r{id}"),
            device: PHONE.into(),
            payload,
        }
    }

    #[test]
    fn a_location_before_authentication_gets_a_failure_and_closes_the_connection() {
        let mut s = Session::new(settings(), at(0));
        let actions = s.handle_frame(packet(Body::Location(location(1, 0)), 7), at(5));
        assert!(commits(&actions).is_empty(), "nothing may be stored before auth");
        let replies = sent(&actions);
        assert_eq!(replies.len(), 1);
        let g = general(&replies[0]);
        assert_eq!(
            (g.reply_id, g.reply_serial, g.result),
            (ids::LOCATION, 7, general_result::FAILED)
        );
        assert!(closes(&actions));
        assert!(s.handle_frame(packet(Body::Heartbeat(vec![]), 8), at(6)).is_empty());
    }

    #[test]
    fn a_2013_terminal_registers_and_authenticates_with_the_issued_code() {
        let mut s = Session::new(settings(), at(0));
        let register = Body::Register(Register {
            edition: Edition::V2013,
            province: 31,
            city: 115,
            manufacturer: b"ROADE".to_vec(),
            model: b"SIM-808".to_vec(),
            terminal_id: b"T000001".to_vec(),
            plate_color: 1,
            plate: "沪A12345".as_bytes().to_vec(),
        });
        let actions = s.handle_frame(packet(register, 0), at(1));
        let [Action::Register { request, record }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(request.phone, PHONE);
        assert_eq!(request.terminal_id, "T000001");
        assert_eq!(request.edition, Edition::V2013);
        assert_eq!(record.class, RecordClass::Critical);
        assert_eq!(record.topic, format!("jt808/{PHONE}/{PHONE}/up"));
        let actions = s.on_register(Some(RegisterOutcome {
            result: register_result::OK,
            auth_code: b"ABC123".to_vec(),
            ..RegisterOutcome::default()
        }));
        let replies = sent(&actions);
        match &replies[0].body {
            Body::RegisterReply(r) => assert_eq!(
                (r.reply_serial, r.result, r.auth_code.as_slice()),
                (0, 0, &b"ABC123"[..])
            ),
            other => panic!("{other:?}"),
        }
        assert!(!s.is_online());
        let auth = Body::Authenticate(Authenticate {
            code: b"ABC123".to_vec(),
            extension: None,
        });
        let actions = s.handle_frame(packet(auth, 1), at(2));
        let [Action::Authenticate { request, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(request.code, b"ABC123");
        assert_eq!(request.imei, None);
        let actions = s.on_auth(Some(AuthVerdict {
            ok: true,
            edition: Some(Edition::V2013),
        }));
        let g = general(&sent(&actions)[0]);
        assert_eq!((g.reply_id, g.reply_serial, g.result), (ids::AUTHENTICATE, 1, 0));
        assert!(s.is_online());
        assert_eq!(s.device(), Some(PHONE));
        assert_eq!(s.edition(), Edition::V2013);
    }

    #[test]
    fn text_is_gbk_by_default_and_utf8_when_configured() {
        for (encoding, plate) in [
            (TextEncoding::Gbk, TextEncoding::Gbk.encode("粤B88888").unwrap()),
            (TextEncoding::Utf8, "粤B88888".as_bytes().to_vec()),
        ] {
            let mut s = Session::new(
                Arc::new(Settings {
                    text: encoding,
                    ..Settings::default()
                }),
                at(0),
            );
            let register = Body::Register(Register {
                edition: Edition::V2013,
                manufacturer: b"ROADE".to_vec(),
                model: b"M".to_vec(),
                terminal_id: b"T".to_vec(),
                plate_color: 2,
                plate,
                ..Register::default()
            });
            let actions = s.handle_frame(packet(register, 0), at(1));
            let [Action::Register { request, record }] = actions.as_slice() else {
                panic!("{actions:?}")
            };
            assert_eq!(request.plate, "粤B88888", "{encoding:?}");
            let json: Value = serde_json::from_slice(&record.body).unwrap();
            assert_eq!(json["body"]["license_number"], "粤B88888", "{encoding:?}");
        }
    }

    #[test]
    fn a_connection_may_register_only_a_few_times() {
        let mut s = Session::new(settings(), at(0));
        let register = || {
            Body::Register(Register {
                edition: Edition::V2013,
                manufacturer: b"ROADE".to_vec(),
                model: b"M".to_vec(),
                terminal_id: b"T".to_vec(),
                ..Register::default()
            })
        };
        for n in 0..3 {
            let actions = s.handle_frame(packet(register(), n), at(1));
            assert!(matches!(actions.as_slice(), [Action::Register { .. }]), "{actions:?}");
            s.on_register(Some(RegisterOutcome {
                result: register_result::OK,
                auth_code: b"C".to_vec(),
                ..RegisterOutcome::default()
            }));
        }
        let actions = s.handle_frame(packet(register(), 3), at(2));
        assert!(closes(&actions), "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, Action::Register { .. })));
    }

    #[test]
    fn a_2019_authentication_carries_imei_and_version_and_fixes_the_edition() {
        let mut s = Session::new(settings(), at(0));
        let auth = Body::Authenticate(Authenticate {
            code: b"CODE".to_vec(),
            extension: Some(AuthExtension2019 {
                imei: b"123456789012345".to_vec(),
                software_version: b"3.7.15".to_vec(),
            }),
        });
        let p = Message::new(header(Some(1), 3), auth).to_packet().unwrap();
        let actions = s.handle_frame(p, at(1));
        let [Action::Authenticate { request, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(request.phone, "00000000013800138000");
        assert_eq!(request.imei.as_deref(), Some("123456789012345"));
        assert_eq!(request.software_version.as_deref(), Some("3.7.15"));
        let actions = s.on_auth(Some(AuthVerdict {
            ok: true,
            edition: None,
        }));
        assert_eq!(s.edition(), Edition::V2019);
        let reply = match &actions[0] {
            Action::Send(f) => f[0].clone(),
            other => panic!("{other:?}"),
        };
        let mut buf = BytesMut::from(&reply[..]);
        let p = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
        assert!(p.header.is_2019(), "replies to a 2019 terminal use the 2019 header");
    }

    #[test]
    fn a_refused_authentication_is_answered_with_failure_and_the_third_closes() {
        let mut s = Session::new(settings(), at(0));
        for attempt in 1..=3 {
            let auth = Body::Authenticate(Authenticate {
                code: b"WRONG".to_vec(),
                extension: None,
            });
            s.handle_frame(packet(auth, attempt), at(1));
            let actions = s.on_auth(Some(AuthVerdict {
                ok: false,
                edition: None,
            }));
            assert_eq!(general(&sent(&actions)[0]).result, general_result::FAILED);
            assert_eq!(closes(&actions), attempt == 3, "attempt {attempt}");
        }
        assert!(!s.is_online());
    }

    #[test]
    fn a_location_is_acknowledged_only_through_its_commit() {
        let mut s = online();
        let actions = s.handle_frame(packet(Body::Location(location(42, 0)), 9), at(10));
        assert!(sent(&actions).is_empty(), "no reply before the commit");
        let c = commits(&actions);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].records.len(), 1);
        assert_eq!(c[0].records[0].class, RecordClass::Telemetry);
        assert_eq!(c[0].records[0].device, format!("jt808/{PHONE}"));
        assert_eq!(c[0].records[0].received_at_ms, at(10).wall_ms);
        let body: Value = serde_json::from_slice(&c[0].records[0].body).unwrap();
        assert_eq!(body["header"]["msg_id"], 0x0200);
        assert_eq!(body["header"]["phone"], PHONE);
        assert_eq!(body["body"]["extra"]["mileage"], 42);
        let g = general(&decode(&c[0].replies)[0]);
        assert_eq!((g.reply_id, g.reply_serial, g.result), (ids::LOCATION, 9, 0));
    }

    #[test]
    fn an_alarm_location_and_a_batch_with_an_alarm_are_critical_and_a_plain_batch_is_one_telemetry_record() {
        let mut s = online();
        let actions = s.handle_frame(packet(Body::Location(location(1, 1)), 2), at(1));
        assert_eq!(commits(&actions)[0].records[0].class, RecordClass::Critical);
        let batch = |alarm| {
            Body::BatchLocation(BatchLocation {
                location_type: 1,
                items: vec![location(1, 0), location(2, alarm), location(3, 0)],
            })
        };
        let actions = s.handle_frame(packet(batch(0), 3), at(2));
        let c = commits(&actions);
        assert_eq!(c[0].records.len(), 1);
        assert_eq!(c[0].records[0].class, RecordClass::Telemetry);
        let body: Value = serde_json::from_slice(&c[0].records[0].body).unwrap();
        assert_eq!(body["body"]["location"].as_array().unwrap().len(), 3);
        let actions = s.handle_frame(packet(batch(4), 4), at(3));
        assert_eq!(commits(&actions)[0].records[0].class, RecordClass::Critical);
    }

    #[test]
    fn a_heartbeat_is_answered_at_once_and_a_time_query_gets_utc() {
        let mut s = online();
        let actions = s.handle_frame(packet(Body::Heartbeat(vec![1, 2, 3]), 5), at(1));
        assert!(commits(&actions).is_empty());
        assert_eq!(general(&sent(&actions)[0]).reply_id, ids::HEARTBEAT);
        let actions = s.handle_frame(packet(Body::ServerTimeQuery, 6), at(1));
        match &sent(&actions)[0].body {
            // 1_795_000_000 s after the epoch is 2026-11-18T11:06:40Z.
            Body::ServerTimeReply(t) => assert_eq!(t.to_string(), "261118110640"),
            other => panic!("{other:?}"),
        }
    }

    fn subpackets(msg_id: u16, body: &[u8], serials: &[u16]) -> Vec<Packet> {
        let chunk = body.len().div_ceil(serials.len());
        let total = serials.len() as u16;
        body.chunks(chunk)
            .zip(serials)
            .enumerate()
            .map(|(i, (piece, serial))| {
                let mut h = header(None, *serial);
                h.msg_id = msg_id;
                h.subpackage = Some(Subpackage {
                    total,
                    index: i as u16 + 1,
                });
                Packet {
                    header: h,
                    body: Bytes::copy_from_slice(piece),
                }
            })
            .collect()
    }

    #[test]
    fn a_subpackaged_parameter_answer_out_of_order_with_serial_gaps_completes_its_query_once() {
        let mut s = online();
        let actions = s.handle_command(command(11, json!({"header": {"msg_id": 0x8104}})), at(100));
        let query = sent(&actions);
        assert_eq!(query[0].header.msg_id, ids::QUERY_ALL_PARAMS);
        let query_serial = query[0].header.serial;
        let answer = Body::ParamsReply(ParamsReply {
            reply_serial: query_serial,
            params: (0..30u32)
                .map(|i| Param {
                    id: 0xF000 + i,
                    value: (i * 10).to_be_bytes().to_vec(),
                })
                .collect(),
        });
        let body = Message::new(header(None, 0), answer).encode_body().unwrap();
        let packets = subpackets(ids::PARAMS_REPLY, &body, &[1233, 1250, 1301]);
        let mut completes = Vec::new();
        let mut acked = Vec::new();
        for i in [2, 0, 1] {
            let actions = s.handle_frame(packets[i].clone(), at(200));
            acked.extend(sent(&actions).iter().map(|m| general(m).reply_serial));
            completes.extend(actions.into_iter().filter_map(|a| match a {
                Action::Complete { id, outcome } => Some((id, outcome)),
                _ => None,
            }));
        }
        acked.sort();
        assert_eq!(acked, [1233, 1250, 1301], "every packet is acknowledged");
        assert_eq!(completes.len(), 1);
        let (id, Outcome::Answer(json)) = &completes[0] else {
            panic!("{completes:?}")
        };
        assert_eq!(*id, 11);
        assert_eq!(json["header"]["msg_id"], 0x0104);
        assert_eq!(json["body"]["seq"], query_serial);
        assert_eq!(json["body"]["length"], 30);
        assert!(json["header"].get("frag_total").is_none(), "published reassembled");
        // The same packet again is acknowledged, not merged into a second answer; the repeated
        // acknowledgement waits behind the commits before it (a commit without records).
        let again = s.handle_frame(packets[1].clone(), at(300));
        assert!(again
            .iter()
            .all(|a| !matches!(a, Action::Complete { .. } | Action::Send(_))));
        let c = commits(&again);
        assert_eq!(c.len(), 1);
        assert!(c[0].records.is_empty());
        assert_eq!(general(&decode(&c[0].replies)[0]).reply_serial, 1250);
        assert_eq!(general(&decode(&c[0].refusals)[0]).result, general_result::FAILED);
    }

    #[test]
    fn a_subpackaged_pass_through_is_committed_once_and_its_last_packet_acknowledged_after_the_commit() {
        let mut s = online();
        let body = Message::new(
            header(None, 0),
            Body::UplinkPassThrough(PassThrough {
                kind: 0x41,
                data: vec![0x5A; 2000],
            }),
        )
        .encode_body()
        .unwrap();
        let packets = subpackets(ids::UPLINK_PASS_THROUGH, &body, &[10, 11, 12]);
        let first = s.handle_frame(packets[0].clone(), at(1));
        assert!(commits(&first).is_empty());
        assert_eq!(general(&sent(&first)[0]).reply_serial, 10);
        s.handle_frame(packets[1].clone(), at(2));
        let last = s.handle_frame(packets[2].clone(), at(3));
        assert!(sent(&last).is_empty(), "the completing packet waits for the commit");
        let c = commits(&last);
        assert_eq!(c.len(), 1);
        assert_eq!(general(&decode(&c[0].replies)[0]).reply_serial, 12);
        let json: Value = serde_json::from_slice(&c[0].records[0].body).unwrap();
        assert_eq!(json["header"]["msg_id"], 0x0900);
        assert_eq!(json["header"]["len"], body.len());
        assert_eq!(s.reassembly_bytes(), 0);
    }

    #[test]
    fn a_resent_last_packet_of_a_merged_transfer_is_acknowledged_only_behind_the_merged_commit() {
        let mut s = online();
        let body = vec![0x22; 1500];
        let packets = subpackets(0x0900, &body, &[50, 51, 52]);
        s.handle_frame(packets[0].clone(), at(1));
        s.handle_frame(packets[1].clone(), at(2));
        let last = s.handle_frame(packets[2].clone(), at(3));
        let merged = commits(&last);
        assert_eq!(merged[0].records.len(), 1);
        assert!(sent(&last).is_empty());
        // The terminal did not hear back in time and sends the last packet again while the merged
        // message is still being committed: no immediate "accepted".
        let again = s.handle_frame(packets[2].clone(), at(4));
        assert!(
            sent(&again).is_empty(),
            "acknowledged before the merged message committed"
        );
        let c = commits(&again);
        assert!(c[0].records.is_empty(), "the message is not published twice");
        assert_eq!(general(&decode(&c[0].replies)[0]).reply_serial, 52);
    }

    #[test]
    fn a_store_failure_at_authentication_is_refused_and_closes() {
        let mut s = Session::new(settings(), at(0));
        let auth = Body::Authenticate(Authenticate {
            code: b"CODE".to_vec(),
            extension: None,
        });
        s.handle_frame(packet(auth, 1), at(0));
        let actions = s.on_auth(None);
        assert_eq!(general(&sent(&actions)[0]).result, general_result::FAILED);
        assert!(closes(&actions));
    }

    #[test]
    fn a_transfer_with_a_missing_packet_gets_a_resend_request_after_the_timeout() {
        let mut s = online();
        let body = vec![0x11; 900];
        let packets = subpackets(0x0900, &body, &[40, 41, 42]);
        s.handle_frame(packets[0].clone(), at(1_000));
        s.handle_frame(packets[2].clone(), at(1_000));
        // The connection's timer wakes while the transfer is unfinished (at most a second
        // apart), not only at the idle timeout, so the resend request goes out on time.
        assert!(s.next_deadline(at(1_000)) <= 2_000);
        assert!(s.next_deadline(at(30_500)) <= 31_000 + 1_000);
        assert!(sent(&s.handle_tick(at(30_999))).is_empty());
        let actions = s.handle_tick(at(31_000));
        let requests = sent(&actions);
        match &requests[0].body {
            Body::PlatformResendRequest(r) => {
                assert_eq!(r.first_serial, 40);
                assert_eq!(r.indexes, [2]);
            }
            other => panic!("{other:?}"),
        }
        // The terminal sends the missing packet: the message is complete.
        let actions = s.handle_frame(packets[1].clone(), at(32_000));
        assert_eq!(commits(&actions).len(), 1);
    }

    #[test]
    fn a_subpackage_flood_is_refused_past_the_limits_and_memory_stays_bounded() {
        let mut s = online();
        let mut refused = 0;
        for n in 0..200u16 {
            // Every packet opens a new transfer (its own total), none ever completes.
            let p = subpackets(0x0900, &[0xAB; 1000 * 3], &[n, n, n])[0].clone();
            let mut p = p;
            p.header.subpackage = Some(Subpackage { total: 3 + n, index: 1 });
            let actions = s.handle_frame(p, at(u64::from(n)));
            if sent(&actions)
                .iter()
                .any(|m| general(m).result == general_result::FAILED)
            {
                refused += 1;
            }
            assert!(!closes(&actions));
        }
        assert!(refused >= 190, "{refused}");
        assert!(s.reassembly_bytes() <= Settings::default().reassembly.max_total_bytes);
    }

    #[test]
    fn a_terminal_that_goes_on_sending_refused_subpackets_is_slowed_down_until_one_is_accepted() {
        // Room for one big packet and one small one.
        let budget = Arc::new(ByteBudget::new(1300));
        let mut s = online_with(Arc::new(Settings {
            reassembly_budget: budget,
            ..Settings::default()
        }));
        let packets = subpackets(0x0900, &[0x55; 1000 * 40], &(0..40).collect::<Vec<u16>>());
        let paused = |a: &[Action]| a.iter().any(|a| matches!(a, Action::Pause(REFUSED_PAUSE_MS)));
        let mut first_pause = None;
        let mut packets = packets.into_iter().enumerate();
        for (i, p) in packets.by_ref().take(38) {
            let actions = s.handle_frame(p, at(i as u64));
            assert!(!closes(&actions));
            if paused(&actions) && first_pause.is_none() {
                first_pause = Some(i);
            }
        }
        // Packet 0 fits the budget; MAX_REFUSED_SUBPACKETS refusals are free, the next pauses.
        assert_eq!(first_pause, Some(MAX_REFUSED_SUBPACKETS as usize + 1));
        // An accepted subpacket (of another, small transfer) ends the slow-down.
        let small = subpackets(0x0900, &[0x66; 600], &[900, 901]);
        assert!(!paused(&s.handle_frame(small[0].clone(), at(100))));
        let (_, p) = packets.next().unwrap();
        assert!(
            !paused(&s.handle_frame(p, at(101))),
            "the count starts again after an acceptance"
        );
    }

    #[test]
    fn unfinished_transfers_of_all_connections_share_one_budget_and_give_it_back_when_closed() {
        let budget = Arc::new(ByteBudget::new(2500));
        let shared = Arc::new(Settings {
            reassembly_budget: budget.clone(),
            ..Settings::default()
        });
        let mut a = online_with(shared.clone());
        let mut b = online_with(shared);
        let big = subpackets(0x0900, &[0x33; 3000], &[1, 2, 3]);
        a.handle_frame(big[0].clone(), at(1));
        a.handle_frame(big[1].clone(), at(2));
        assert_eq!(budget.used(), 2000);
        let refused = b.handle_frame(subpackets(0x0900, &[0x44; 3000], &[7, 8, 9])[0].clone(), at(3));
        assert!(refused.iter().any(|x| matches!(x, Action::LimitHit(Limit::Reassembly))));
        assert_eq!(general(&sent(&refused)[0]).result, general_result::FAILED);
        // The last packet completes `a`'s transfer: its bytes go back.
        a.handle_frame(big[2].clone(), at(4));
        assert_eq!(budget.used(), 0);
        b.handle_frame(subpackets(0x0900, &[0x44; 3000], &[7, 8, 9])[0].clone(), at(5));
        assert_eq!(budget.used(), 1000);
        drop(b);
        assert_eq!(budget.used(), 0, "a dropped session gives its bytes back");
    }

    #[test]
    fn retransmissions_wait_t_then_2t_then_6t_then_24t_and_the_command_then_times_out() {
        let mut s = online();
        let control = json!({"header": {"msg_id": 0x8105}, "body": {"command": 4, "param": ""}});
        let first = s.handle_command(command(5, control), at(0));
        let original = match &first[0] {
            Action::Send(f) => f.clone(),
            other => panic!("{other:?}"),
        };
        let mut resends = Vec::new();
        let mut timeout_at = None;
        for ms in (0..=400_000u64).step_by(500) {
            for action in s.handle_tick(at(ms)) {
                match action {
                    Action::Send(frames) => {
                        assert_eq!(frames, original, "a resend is byte-identical");
                        resends.push(ms);
                    }
                    Action::Complete {
                        id: 5,
                        outcome: Outcome::Timeout,
                    } => timeout_at = Some(ms),
                    Action::Close(_) => {}
                    other => panic!("{other:?}"),
                }
            }
            // Keep the link alive.
            s.handle_frame(packet(Body::Heartbeat(vec![]), 1), at(ms));
        }
        assert_eq!(resends, [10_000, 30_000, 90_000]);
        assert_eq!(timeout_at, Some(330_000));
    }

    #[test]
    fn a_general_reply_quoting_the_last_packet_of_a_split_upgrade_completes_it() {
        let mut s = online();
        let firmware = crate::protocol::jt808::base64_encode(&vec![7u8; 2500]);
        let upgrade = json!({"header": {"msg_id": 0x8108}, "body": {"type": 0, "manufacturer": "ROADE",
            "version": "1.2.3", "firmware": firmware}});
        let actions = s.handle_command(command(9, upgrade), at(0));
        let frames = match &actions[0] {
            Action::Send(f) => f.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(frames.len(), 3, "2500 bytes of firmware need three packets");
        let packets: Vec<Packet> = frames
            .iter()
            .map(|f| {
                FrameDecoder::new()
                    .decode(&mut BytesMut::from(&f[..]))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(
                p.header.subpackage,
                Some(Subpackage {
                    total: 3,
                    index: i as u16 + 1
                })
            );
        }
        let last = packets[2].header.serial;
        let reply = Body::TerminalGeneralReply(GeneralReply {
            reply_serial: last,
            reply_id: ids::UPGRADE,
            result: 0,
        });
        let actions = s.handle_frame(packet(reply, 77), at(10));
        let [Action::Complete {
            id: 9,
            outcome: Outcome::Answer(json),
        }] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(json["body"]["id"], 0x8108);
        // The next downlink's serial follows the three packets.
        let next = s.handle_command(command(10, json!({"header": {"msg_id": 0x8107}})), at(11));
        assert_eq!(sent(&next)[0].header.serial, last.wrapping_add(1));
    }

    #[test]
    fn terminal_control_is_answered_by_a_general_reply_and_attributes_by_0x0107() {
        let mut s = online();
        let control = s.handle_command(
            command(
                1,
                json!({"header": {"msg_id": 0x8105}, "body": {"command": 4, "param": ""}}),
            ),
            at(0),
        );
        let control_serial = sent(&control)[0].header.serial;
        let wrong = Body::TerminalGeneralReply(GeneralReply {
            reply_serial: control_serial.wrapping_add(100),
            reply_id: ids::TERMINAL_CONTROL,
            result: 0,
        });
        assert!(
            s.handle_frame(packet(wrong, 1), at(1)).is_empty(),
            "another serial answers nothing"
        );
        let right = Body::TerminalGeneralReply(GeneralReply {
            reply_serial: control_serial,
            reply_id: ids::TERMINAL_CONTROL,
            result: 0,
        });
        let actions = s.handle_frame(packet(right, 2), at(2));
        assert!(
            matches!(actions.as_slice(), [Action::Complete { id: 1, outcome: Outcome::Answer(j) }] if j["body"]["result"] == 0)
        );
    }

    #[test]
    fn a_malformed_command_is_rejected_with_its_reason_and_a_reply_id_is_refused() {
        let mut s = online();
        let actions = s.handle_command(command(3, json!({"header": {"msg_id": 0x8103}, "body": {}})), at(0));
        assert!(
            matches!(&actions[..], [Action::Complete { id: 3, outcome: Outcome::Rejected(r) }] if r.contains("params")),
            "{actions:?}"
        );
        let actions = s.handle_command(
            command(
                4,
                json!({"header": {"msg_id": 0x8001}, "body": {"seq": 1, "id": 2, "result": 0}}),
            ),
            at(0),
        );
        assert!(matches!(
            &actions[..],
            [Action::Complete {
                id: 4,
                outcome: Outcome::Rejected(_)
            }]
        ));
    }

    #[test]
    fn commands_beyond_the_window_wait_and_closing_releases_every_unfinished_one() {
        let mut s = online_with(Arc::new(Settings {
            max_inflight: 2,
            max_queued_commands: 2,
            ..Settings::default()
        }));
        let query = || json!({"header": {"msg_id": 0x8107}});
        let mut sends = 0;
        let mut released = Vec::new();
        for id in 1..=6 {
            for a in s.handle_command(command(id, query()), at(0)) {
                match a {
                    Action::Send(_) => sends += 1,
                    Action::Release { id } => released.push(id),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(sends, 2);
        assert_eq!(released, [5, 6]);
        assert!(!s.can_take_command());
        let mut rest: Vec<i64> = s
            .close()
            .into_iter()
            .map(|a| match a {
                Action::Release { id } => id,
                other => panic!("{other:?}"),
            })
            .collect();
        rest.sort();
        assert_eq!(rest, [1, 2, 3, 4]);
    }

    #[test]
    fn a_frame_from_another_phone_closes_the_connection() {
        let mut s = online();
        let mut h = header(None, 1);
        h.phone = Phone::parse("013999999999").unwrap();
        let p = Message::new(h, Body::Location(location(1, 0))).to_packet().unwrap();
        let actions = s.handle_frame(p, at(1));
        assert!(commits(&actions).is_empty());
        assert!(closes(&actions));
    }

    #[test]
    fn logout_withdraws_the_code_in_the_same_commit_as_its_record_then_closes() {
        let mut s = online();
        let actions = s.handle_frame(packet(Body::Logout, 30), at(1));
        let c = commits(&actions);
        assert_eq!(c[0].deregister.as_deref(), Some(PHONE));
        assert_eq!(c[0].records[0].class, RecordClass::Critical);
        assert_eq!(general(&decode(&c[0].replies)[0]).reply_id, ids::LOGOUT);
        assert!(matches!(actions.last(), Some(Action::Close(_))));
    }

    #[test]
    fn silent_connections_close_after_the_auth_timeout_or_the_idle_timeout() {
        let mut s = Session::new(settings(), at(0));
        assert_eq!(s.next_deadline(at(0)), 60_000);
        assert!(!closes(&s.handle_tick(at(59_999))));
        assert!(closes(&s.handle_tick(at(60_000))));
        let mut s = online();
        s.handle_frame(packet(Body::Heartbeat(vec![]), 2), at(1_000));
        assert!(!closes(&s.handle_tick(at(180_999))));
        assert!(closes(&s.handle_tick(at(181_000))));
    }

    #[test]
    fn eight_corrupt_frames_in_a_row_close_but_a_good_frame_resets_the_count() {
        let mut s = online();
        for _ in 0..7 {
            assert!(!closes(&s.handle_bad_frame()));
        }
        s.handle_frame(packet(Body::Heartbeat(vec![]), 2), at(1));
        for _ in 0..7 {
            assert!(!closes(&s.handle_bad_frame()));
        }
        assert!(closes(&s.handle_bad_frame()));
    }

    #[test]
    fn an_undecodable_body_gets_a_message_error_reply_and_is_not_stored() {
        let mut s = online();
        let p = Packet {
            header: {
                let mut h = header(None, 3);
                h.msg_id = ids::LOCATION;
                h
            },
            body: Bytes::from_static(&[1, 2, 3]),
        };
        let actions = s.handle_frame(p, at(1));
        assert!(commits(&actions).is_empty());
        assert!(actions.iter().any(|a| matches!(a, Action::Bad(_))));
        assert_eq!(general(&sent(&actions)[0]).result, general_result::MESSAGE_ERROR);
    }
}
