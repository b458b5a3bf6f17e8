//! One GB/T 32960 terminal connection as a pure state machine: frames, bad frames, downstream
//! commands and timer ticks go in, [`Action`]s come out. No sockets, no database, no clock (the
//! caller passes [`Now`]); the connection task in `mod.rs` performs the actions.
//!
//! Owns: the login gate (before a vehicle login only a vehicle login, or the platform link's
//! platform login/logout, heartbeat and time sync once a platform has logged in; one VIN per
//! connection), which frame is published where and with which eviction class, which frame gets
//! which reply (platform login/logout, 2025 activation and key exchange included), the error
//! reply for a frame that fails its checks, and the downstream command window (one command in
//! flight, resent at most `max_retries` times, then `timeout`; the rest queued, bounded; a 2025
//! activation response expects no answer and completes once sent).
//! Must not: acknowledge anything itself: replies that confirm data ride in
//! the `then` list of [`Action::Commit`], which the shell runs only after the commit.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::command::{DeviceCommand, Outcome};
use crate::protocol::gbt32960::reply::{self, ReplyData};
use crate::protocol::gbt32960::{
    downlink_from_json, Command, DecodeError, Edition, Frame, ResponseFlag, Time, TopicSuffix, Vin,
};
use crate::store::{EnvelopeKey, Record, RecordClass};

/// The time as the session sees it, passed in by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for the retry timer.
    pub at: Instant,
    /// Wall clock, ms since the Unix epoch (the records' `received_at`).
    pub unix_ms: i64,
    /// Wall clock as the standard's time (GMT+8), for replies and downlinks.
    pub local: Time,
}

impl Now {
    /// `unix_ms` rendered in GMT+8, as the standard's 6-byte time.
    pub fn new(at: Instant, unix_ms: i64) -> Now {
        Now {
            at,
            unix_ms,
            local: beijing_time(unix_ms),
        }
    }
}

/// `unix_ms` as the standard's time: Beijing time (GMT+8), year within the century.
pub fn beijing_time(unix_ms: i64) -> Time {
    let secs = unix_ms.div_euclid(1000) + 8 * 3600;
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // Every component is within u8 range by construction (year modulo 100).
    Time {
        year: t.year().rem_euclid(100) as u8,
        month: u8::from(t.month()),
        day: t.day(),
        hour: t.hour(),
        minute: t.minute(),
        second: t.second(),
    }
}

/// Limits and timers of a session.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// How long to wait for a terminal's answer before resending a downstream command.
    pub retry_interval: Duration,
    /// Resends after the first send (the standard: at most 3); then the command times out.
    pub max_retries: u32,
    /// Downstream commands held while one is in flight; more are rejected.
    pub max_queued_commands: usize,
    /// Bad frames in a row after which the connection is closed.
    pub max_consecutive_bad: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            // The standard resends control commands once a minute, at most 3 times (Annex B).
            retry_interval: Duration::from_secs(60),
            max_retries: 3,
            max_queued_commands: 32,
            max_consecutive_bad: 16,
        }
    }
}

/// Why the session wants the connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A frame other than a vehicle login arrived before the login.
    FrameBeforeLogin { command: u8 },
    /// A frame carried another VIN than the logged-in one.
    VinSwitch { logged_in: String, got: String },
    /// The login's VIN cannot be used as a topic level (empty, `/`, `+`, `#`, control bytes).
    UnusableVin(String),
    /// Too many bad frames in a row.
    TooManyBadFrames(u32),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::FrameBeforeLogin { command } => write!(f, "frame {command:#04x} before login"),
            CloseReason::VinSwitch { logged_in, got } => {
                write!(f, "frame for VIN {got:?} on the connection of VIN {logged_in:?}")
            }
            CloseReason::UnusableVin(vin) => write!(f, "login with unusable VIN {vin:?}"),
            CloseReason::TooManyBadFrames(n) => write!(f, "{n} bad frames in a row"),
        }
    }
}

/// What the connection task must do, in order.
#[derive(Debug)]
pub enum Action {
    /// The terminal logged in: make this connection the live one for `vin` (an older connection
    /// with the same VIN is closed) and accept downstream commands for it.
    Claim { vin: String },
    /// Append `records` atomically; once committed, perform `then` in order. When the commit
    /// fails nothing in `then` happens and the connection is closed.
    Commit { records: Vec<Record>, then: Vec<Action> },
    /// Send an encoded frame to the terminal.
    Send { frame: Vec<u8>, what: &'static str },
    /// Tell the command plane the vehicle is online (it delivers the commands queued for it).
    Online { vin: String },
    /// The vehicle logged out: stop taking downstream commands for it on this connection.
    Offline { vin: String },
    /// End a downstream command with its one result.
    Complete { id: i64, outcome: Outcome },
    /// Give a delivered but unfinished command back to the plane's queue.
    Release { id: i64 },
    /// Close the connection.
    Close(CloseReason),
}

#[derive(Debug, Clone)]
struct Vehicle {
    vin: Vin,
    text: String,
    edition: Edition,
}

#[derive(Debug)]
struct InFlight {
    id: i64,
    command: Command,
    frame: Vec<u8>,
    last_sent: Instant,
    resends: u32,
}

/// The state of one terminal connection.
#[derive(Debug)]
pub struct Session {
    settings: SessionSettings,
    vehicle: Option<Vehicle>,
    /// The identity (topic form) a platform logged in with (0x05), until its logout (0x06).
    platform: Option<String>,
    in_flight: Option<InFlight>,
    queue: VecDeque<DeviceCommand>,
    consecutive_bad: u32,
}

impl Session {
    pub fn new(settings: SessionSettings) -> Session {
        Session {
            settings,
            vehicle: None,
            platform: None,
            in_flight: None,
            queue: VecDeque::new(),
            consecutive_bad: 0,
        }
    }

    /// The logged-in VIN (topic form), if any.
    pub fn vin(&self) -> Option<&str> {
        self.vehicle.as_ref().map(|v| v.text.as_str())
    }

    /// The edition the vehicle logged in with.
    pub fn edition(&self) -> Option<Edition> {
        self.vehicle.as_ref().map(|v| v.edition)
    }

    /// A frame decoded from the terminal.
    pub fn handle_frame(&mut self, frame: Frame, now: Now) -> Vec<Action> {
        self.consecutive_bad = 0;
        let Some(vehicle) = self.vehicle.clone() else {
            return self.before_vehicle_login(frame, now);
        };
        if frame.vin.trimmed() != vehicle.vin.trimmed() {
            return vec![Action::Close(CloseReason::VinSwitch {
                logged_in: vehicle.text,
                got: frame.vin(),
            })];
        }
        let is_command = frame.response.is_command();
        match frame.command {
            Command::VEHICLE_LOGIN if is_command => self.login(frame, now),
            Command::VEHICLE_LOGOUT if is_command => self.logout(frame, &vehicle, now),
            Command::PLATFORM_LOGIN | Command::PLATFORM_LOGOUT if is_command => {
                self.platform_link(&frame, &vehicle.text, now)
            }
            Command::ACTIVATION if is_command => {
                // The edge cannot check the signature (that is the cloud's key material): it
                // answers "activated" once the activation is stored, and the cloud may send its
                // own verdict downstream (`"Action":"ActivationResponse"`).
                let answer = Ok(reply::activation_response(&frame, 1, 0));
                self.publish(&frame, &vehicle.text, now, send(answer, "activation response"))
            }
            Command::KEY_EXCHANGE if is_command => {
                let answer = reply::key_exchange_reply(&frame, ResponseFlag::SUCCESS);
                self.publish(&frame, &vehicle.text, now, send(answer, "key-exchange reply"))
            }
            Command::HEARTBEAT if is_command => send(
                reply::heartbeat_reply(&frame, ResponseFlag::SUCCESS, now.local),
                "heartbeat reply",
            ),
            Command::TIME_SYNC if is_command => send(reply::time_sync_reply(&frame, now.local), "time-sync reply"),
            // EMQX's own terminals answer with flag 0xFE, so any 0x80-0x82 frame is an answer.
            Command::PARAM_QUERY | Command::PARAM_SET | Command::TERMINAL_CONTROL => self.answer(frame, &vehicle, now),
            // The terminal's response to a key exchange the cloud sent.
            Command::KEY_EXCHANGE => self.answer(frame, &vehicle, now),
            _ => self.publish(&frame, &vehicle.text, now, Vec::new()),
        }
    }

    /// A frame before any vehicle login: a vehicle login, or the platform link (GB/T 32960.3
    /// platform login/logout, answered like a login; heartbeat and time sync once a platform has
    /// logged in). Anything else closes the connection, as EMQX does.
    fn before_vehicle_login(&mut self, frame: Frame, now: Now) -> Vec<Action> {
        let is_command = frame.response.is_command();
        match frame.command {
            Command::VEHICLE_LOGIN if is_command => self.login(frame, now),
            Command::PLATFORM_LOGIN | Command::PLATFORM_LOGOUT if is_command => {
                let identity = frame.vin();
                if !usable_vin(&frame.vin) {
                    return vec![Action::Close(CloseReason::UnusableVin(identity))];
                }
                self.platform_link(&frame, &identity, now)
            }
            Command::HEARTBEAT if is_command && self.platform.is_some() => send(
                reply::heartbeat_reply(&frame, ResponseFlag::SUCCESS, now.local),
                "heartbeat reply",
            ),
            Command::TIME_SYNC if is_command && self.platform.is_some() => {
                send(reply::time_sync_reply(&frame, now.local), "time-sync reply")
            }
            _ => vec![Action::Close(CloseReason::FrameBeforeLogin {
                command: frame.command.0,
            })],
        }
    }

    /// Platform login (0x05) or logout (0x06): published under `identity` (the vehicle's VIN
    /// once a vehicle has logged in, else the platform's own id), then answered with success
    /// after the commit.
    fn platform_link(&mut self, frame: &Frame, identity: &str, now: Now) -> Vec<Action> {
        let what = if frame.command == Command::PLATFORM_LOGIN {
            self.platform = Some(identity.to_owned());
            "platform login reply"
        } else {
            self.platform = None;
            "platform logout reply"
        };
        // An encrypted data unit cannot be echoed: that one gets the time only.
        let answer = reply::platform_reply(frame, ResponseFlag::SUCCESS, now.local)
            .or_else(|_| reply::reply(frame, ResponseFlag::SUCCESS, ReplyData::Time(now.local)));
        self.publish(frame, identity, now, send(answer, what))
    }

    /// A corrupt frame or skipped garbage (already counted by the link layer).
    pub fn handle_bad(&mut self, error: &DecodeError, now: Now) -> Vec<Action> {
        self.consecutive_bad += 1;
        if self.consecutive_bad > self.settings.max_consecutive_bad {
            return vec![Action::Close(CloseReason::TooManyBadFrames(self.consecutive_bad))];
        }
        let Some(header) = error.header() else {
            // Garbage between frames: nothing to answer.
            return Vec::new();
        };
        let Some(vehicle) = &self.vehicle else {
            if self.platform.is_some() {
                // A logged-in platform link: the same error reply as after a vehicle login.
                return match error.error_reply(ResponseFlag::ERROR, now.local) {
                    Some(frame) => send(Ok(frame), "error reply"),
                    None => Vec::new(),
                };
            }
            return vec![Action::Close(CloseReason::FrameBeforeLogin {
                command: header.command.0,
            })];
        };
        if header.vin.trimmed() != vehicle.vin.trimmed() {
            return vec![Action::Close(CloseReason::VinSwitch {
                logged_in: vehicle.text.clone(),
                got: header.vin.topic_text(),
            })];
        }
        // The standard's real-time flow: a frame that fails its checks gets an error reply and
        // the terminal sends it again. Responses are never answered (`error_reply` gives None).
        match error.error_reply(ResponseFlag::ERROR, now.local) {
            Some(frame) => send(Ok(frame), "error reply"),
            None => Vec::new(),
        }
    }

    /// A downstream command the command plane delivered for this vehicle.
    pub fn handle_command(&mut self, command: DeviceCommand, now: Now) -> Vec<Action> {
        if self.vehicle.is_none() {
            return vec![Action::Release { id: command.id }];
        }
        if self.in_flight.is_none() {
            let mut actions = Vec::new();
            self.queue.push_back(command);
            self.start_next(now, &mut actions);
            return actions;
        }
        if self.queue.len() >= self.settings.max_queued_commands {
            let reason = format!(
                "{} commands already wait for this vehicle",
                self.settings.max_queued_commands
            );
            return vec![Action::Complete {
                id: command.id,
                outcome: Outcome::Rejected(reason),
            }];
        }
        self.queue.push_back(command);
        Vec::new()
    }

    /// Timer tick: resends the command in flight or ends it with `timeout`.
    pub fn handle_tick(&mut self, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(in_flight) = self.in_flight.as_mut() else {
            return actions;
        };
        if now.at.saturating_duration_since(in_flight.last_sent) < self.settings.retry_interval {
            return actions;
        }
        if in_flight.resends < self.settings.max_retries {
            in_flight.resends += 1;
            in_flight.last_sent = now.at;
            actions.push(Action::Send {
                frame: in_flight.frame.clone(),
                what: "command resend",
            });
            return actions;
        }
        let id = in_flight.id;
        self.in_flight = None;
        actions.push(Action::Complete {
            id,
            outcome: Outcome::Timeout,
        });
        self.start_next(now, &mut actions);
        actions
    }

    /// Every command this session still holds, to give back when the connection ends.
    pub fn release_all(&mut self) -> Vec<Action> {
        self.in_flight
            .take()
            .map(|f| f.id)
            .into_iter()
            .chain(self.queue.drain(..).map(|c| c.id))
            .map(|id| Action::Release { id })
            .collect()
    }

    fn login(&mut self, frame: Frame, now: Now) -> Vec<Action> {
        let text = frame.vin();
        if !usable_vin(&frame.vin) {
            return vec![Action::Close(CloseReason::UnusableVin(text))];
        }
        let first = self.vehicle.is_none();
        let vehicle = Vehicle {
            vin: frame.vin,
            text: text.clone(),
            edition: frame.edition,
        };
        self.vehicle = Some(vehicle.clone());
        // EMQX's login reply echoes the data unit after a new time; an encrypted data unit
        // cannot be echoed, so that one gets the time only.
        let answer = reply::login_reply(&frame, ResponseFlag::SUCCESS, now.local)
            .or_else(|_| reply::reply(&frame, ResponseFlag::SUCCESS, ReplyData::Time(now.local)));
        let mut then = send(answer, "login reply");
        let mut actions = Vec::new();
        if first {
            actions.push(Action::Claim { vin: text.clone() });
            then.push(Action::Online { vin: text });
        }
        actions.extend(self.publish(&frame, &vehicle.text, now, then));
        actions
    }

    fn logout(&mut self, frame: Frame, vehicle: &Vehicle, now: Now) -> Vec<Action> {
        self.vehicle = None;
        let mut actions = self.publish(
            &frame,
            &vehicle.text,
            now,
            vec![Action::Offline {
                vin: vehicle.text.clone(),
            }],
        );
        actions.extend(self.release_all());
        actions
    }

    fn answer(&mut self, frame: Frame, vehicle: &Vehicle, now: Now) -> Vec<Action> {
        let matching = self.in_flight.as_ref().is_some_and(|f| f.command == frame.command);
        if !matching {
            // A late answer (after a timeout) or one nobody asked for: published as it is.
            return self.publish(&frame, &vehicle.text, now, Vec::new());
        }
        let mut actions = Vec::new();
        if let Some(done) = self.in_flight.take() {
            actions.push(Action::Complete {
                id: done.id,
                outcome: Outcome::Answer(frame.to_json()),
            });
        }
        self.start_next(now, &mut actions);
        actions
    }

    /// Sends the next queued command that can be encoded; rejects those that cannot.
    fn start_next(&mut self, now: Now, actions: &mut Vec<Action>) {
        let Some(vehicle) = &self.vehicle else {
            return;
        };
        while self.in_flight.is_none() {
            let Some(command) = self.queue.pop_front() else {
                return;
            };
            let built = downlink_from_json(&command.payload, vehicle.vin, vehicle.edition, now.local)
                .map_err(|e| e.to_string())
                .and_then(|frame| {
                    let bytes = frame.encode().map_err(|e| e.to_string())?;
                    Ok((frame.command, bytes))
                });
            match built {
                // The activation response is itself an answer: nothing comes back for it.
                Ok((cmd, bytes)) if cmd == Command::ACTIVATION_RESPONSE => {
                    let sent =
                        crate::protocol::gbt32960::decode_frame(&bytes, crate::protocol::gbt32960::Origin::Platform)
                            .map_or(Value::Null, |frame| frame.to_json());
                    actions.push(Action::Send {
                        frame: bytes,
                        what: "command",
                    });
                    actions.push(Action::Complete {
                        id: command.id,
                        outcome: Outcome::Answer(sent),
                    });
                }
                Ok((cmd, bytes)) => {
                    actions.push(Action::Send {
                        frame: bytes.clone(),
                        what: "command",
                    });
                    self.in_flight = Some(InFlight {
                        id: command.id,
                        command: cmd,
                        frame: bytes,
                        last_sent: now.at,
                        resends: 0,
                    });
                }
                Err(reason) => actions.push(Action::Complete {
                    id: command.id,
                    outcome: Outcome::Rejected(reason),
                }),
            }
        }
    }

    /// The frame as an upstream record under `identity` (if it is published at all), then
    /// `then`.
    fn publish(&self, frame: &Frame, identity: &str, now: Now, then: Vec<Action>) -> Vec<Action> {
        match frame.topic_suffix() {
            Some(suffix) => vec![Action::Commit {
                records: vec![record(frame, suffix, identity, now)],
                then,
            }],
            None => then,
        }
    }
}

/// Eviction class (CONTRACT 5.4): real-time data goes first, logins and the like last.
fn class_of(frame: &Frame) -> RecordClass {
    if !frame.response.is_command() {
        return RecordClass::Event;
    }
    match frame.command {
        Command::REALTIME => RecordClass::Telemetry,
        Command::VEHICLE_LOGIN
        | Command::VEHICLE_LOGOUT
        | Command::PLATFORM_LOGIN
        | Command::PLATFORM_LOGOUT
        | Command::ACTIVATION
        | Command::KEY_EXCHANGE => RecordClass::Critical,
        _ => RecordClass::Event,
    }
}

/// The upstream record of a frame: EMQX JSON on `gbt32960/{vin}/upstream/{suffix}`.
fn record(frame: &Frame, suffix: TopicSuffix, vin: &str, now: Now) -> Record {
    Record {
        device: crate::topics::device_key("gbt32960", vin),
        topic: crate::topics::gbt32960_up(vin, suffix.as_str()),
        class: class_of(frame),
        envelope: EnvelopeKey::Capitalised,
        received_at_ms: now.unix_ms,
        body: frame.to_json_bytes(),
    }
}

/// Whether a VIN can be a topic level: printable ASCII without `/`, `+`, `#`, and not empty
/// (trailing NUL/space padding aside). Anything else could break or redirect MQTT topics.
pub fn usable_vin(vin: &Vin) -> bool {
    let text = vin.trimmed();
    !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'+' | b'#'))
}

fn send(frame: Result<Frame, reply::ReplyError>, what: &'static str) -> Vec<Action> {
    match frame
        .map_err(|e| e.to_string())
        .and_then(|f| f.encode().map_err(|e| e.to_string()))
    {
        Ok(bytes) => vec![Action::Send { frame: bytes, what }],
        Err(e) => {
            tracing::warn!("cannot build the {what}: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::gbt32960::{decode_frame, Body, Origin};
    use crate::sim::gbt32960 as sim;
    use serde_json::json;

    const VIN: &str = "LSIMTEST000000001";

    fn now(start: Instant, secs: u64) -> Now {
        Now::new(
            start + Duration::from_secs(secs),
            1_763_712_000_000 + secs as i64 * 1000,
        )
    }

    fn login(edition: Edition) -> Frame {
        sim::login_frame(Vin::from_text(VIN), edition, Time::default(), 1)
    }

    fn logged_in(edition: Edition) -> (Session, Instant) {
        let mut s = Session::new(SessionSettings::default());
        let start = Instant::now();
        let actions = s.handle_frame(login(edition), now(start, 0));
        assert!(matches!(actions[0], Action::Claim { .. }));
        (s, start)
    }

    fn sent(actions: &[Action]) -> Vec<Frame> {
        let mut out = Vec::new();
        for a in actions {
            match a {
                Action::Send { frame, .. } => out.push(decode_frame(frame, Origin::Platform).unwrap()),
                Action::Commit { then, .. } => out.extend(sent(then)),
                _ => {}
            }
        }
        out
    }

    fn records(actions: &[Action]) -> Vec<&Record> {
        actions
            .iter()
            .flat_map(|a| match a {
                Action::Commit { records, .. } => records.iter().collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn command(id: i64, payload: Value) -> DeviceCommand {
        DeviceCommand {
            id,
            request_id: format!("r{id}"),
            device: VIN.into(),
            payload,
        }
    }

    #[test]
    fn the_login_reply_is_sent_only_after_the_login_record_commits() {
        let mut s = Session::new(SessionSettings::default());
        let actions = s.handle_frame(login(Edition::V2016), now(Instant::now(), 0));
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(&actions[0], Action::Claim { vin } if vin == VIN));
        let Action::Commit { records, then } = &actions[1] else {
            panic!("{actions:?}")
        };
        assert_eq!(records[0].topic, format!("gbt32960/{VIN}/upstream/vlogin"));
        assert_eq!(records[0].class, RecordClass::Critical);
        assert_eq!(records[0].envelope, EnvelopeKey::Capitalised);
        let reply = sent(then);
        assert_eq!(reply[0].response, ResponseFlag::SUCCESS);
        assert!(matches!(&then[1], Action::Online { vin } if vin == VIN));
    }

    #[test]
    fn any_frame_before_login_closes_the_session() {
        let mut s = Session::new(SessionSettings::default());
        let hb = sim::heartbeat_frame(Vin::from_text(VIN), Edition::V2016);
        let actions = s.handle_frame(hb, now(Instant::now(), 0));
        assert!(matches!(
            actions.as_slice(),
            [Action::Close(CloseReason::FrameBeforeLogin { command: 0x07 })]
        ));
    }

    #[test]
    fn a_frame_with_another_vin_closes_the_session() {
        let (mut s, start) = logged_in(Edition::V2016);
        let other = sim::realtime_frame(
            Vin::from_text("LSIMTEST000000002"),
            Edition::V2016,
            Time::default(),
            0,
            false,
        );
        let actions = s.handle_frame(other, now(start, 1));
        assert!(matches!(
            actions.as_slice(),
            [Action::Close(CloseReason::VinSwitch { .. })]
        ));
    }

    #[test]
    fn a_vin_that_would_break_topics_is_refused_at_login() {
        for bad in ["", "A/B", "ab+", "#", "A B"] {
            let mut s = Session::new(SessionSettings::default());
            let frame = sim::login_frame(Vin::from_text(bad), Edition::V2016, Time::default(), 1);
            let actions = s.handle_frame(frame, now(Instant::now(), 0));
            assert!(
                matches!(actions.as_slice(), [Action::Close(CloseReason::UnusableVin(_))]),
                "{bad:?}: {actions:?}"
            );
        }
    }

    #[test]
    fn real_time_is_telemetry_reissue_is_an_event_and_neither_gets_a_reply() {
        let (mut s, start) = logged_in(Edition::V2016);
        let vin = Vin::from_text(VIN);
        let rt = s.handle_frame(
            sim::realtime_frame(vin, Edition::V2016, Time::default(), 1, false),
            now(start, 1),
        );
        let re = s.handle_frame(
            sim::realtime_frame(vin, Edition::V2016, Time::default(), 1, true),
            now(start, 1),
        );
        assert_eq!(records(&rt)[0].class, RecordClass::Telemetry);
        assert!(records(&rt)[0].topic.ends_with("/upstream/info"));
        assert_eq!(records(&re)[0].class, RecordClass::Event);
        assert!(records(&re)[0].topic.ends_with("/upstream/reinfo"));
        assert!(sent(&rt).is_empty() && sent(&re).is_empty());
    }

    #[test]
    fn heartbeat_and_time_sync_are_answered_and_not_published() {
        let (mut s, start) = logged_in(Edition::V2025);
        let vin = Vin::from_text(VIN);
        let t = now(start, 5);
        for frame in [
            sim::heartbeat_frame(vin, Edition::V2025),
            sim::time_sync_frame(vin, Edition::V2025),
        ] {
            let actions = s.handle_frame(frame.clone(), t);
            assert!(records(&actions).is_empty());
            let reply = &sent(&actions)[0];
            assert_eq!(reply.command, frame.command);
            assert_eq!(reply.response, ResponseFlag::SUCCESS);
            assert_eq!(reply.edition, Edition::V2025);
            assert_eq!(reply.message_time(), Some(t.local));
        }
    }

    #[test]
    fn a_bad_checksum_after_login_gets_an_error_reply_with_the_frames_time() {
        let (mut s, start) = logged_in(Edition::V2016);
        let time = Time::from_bytes([25, 11, 21, 8, 0, 0]);
        let mut bytes = sim::realtime_frame(Vin::from_text(VIN), Edition::V2016, time, 1, false)
            .encode()
            .unwrap();
        *bytes.last_mut().unwrap() ^= 0xFF;
        let error = decode_frame(&bytes, Origin::Terminal).unwrap_err();
        let actions = s.handle_bad(&error, now(start, 1));
        let reply = &sent(&actions)[0];
        assert_eq!(reply.response, ResponseFlag::ERROR);
        assert_eq!(reply.command, Command::REALTIME);
        assert_eq!(reply.message_time(), Some(time));
    }

    #[test]
    fn too_many_bad_frames_in_a_row_close_the_session() {
        let (mut s, start) = logged_in(Edition::V2016);
        let garbage = DecodeError::Garbage { skipped: 3 };
        for _ in 0..16 {
            assert!(s.handle_bad(&garbage, now(start, 1)).is_empty());
        }
        assert!(matches!(
            s.handle_bad(&garbage, now(start, 1)).as_slice(),
            [Action::Close(CloseReason::TooManyBadFrames(17))]
        ));
    }

    #[test]
    fn a_command_is_sent_and_the_terminals_answer_completes_it() {
        let (mut s, start) = logged_in(Edition::V2016);
        let actions = s.handle_command(
            command(7, json!({"Action": "Query", "Total": 1, "Ids": ["0x01"]})),
            now(start, 1),
        );
        let query = &sent(&actions)[0];
        assert_eq!(query.command, Command::PARAM_QUERY);
        let answer = sim::answer(query, now(start, 1).local).unwrap();
        let actions = s.handle_frame(answer.clone(), now(start, 2));
        match actions.as_slice() {
            [Action::Complete {
                id: 7,
                outcome: Outcome::Answer(json),
            }] => {
                assert_eq!(json, &answer.to_json());
                assert_eq!(json["Cmd"], 0x80);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unanswered_command_is_resent_three_times_then_times_out_and_the_next_one_goes() {
        let (mut s, start) = logged_in(Edition::V2016);
        let control = json!({"Action": "Control", "Command": "0x02"});
        assert_eq!(
            sent(&s.handle_command(command(1, control.clone()), now(start, 0))).len(),
            1
        );
        assert!(
            s.handle_command(command(2, control), now(start, 0)).is_empty(),
            "queued behind 1"
        );
        assert!(s.handle_tick(now(start, 59)).is_empty());
        for minute in 1..=3 {
            let actions = s.handle_tick(now(start, 60 * minute));
            assert!(
                matches!(
                    actions.as_slice(),
                    [Action::Send {
                        what: "command resend",
                        ..
                    }]
                ),
                "{actions:?}"
            );
        }
        let actions = s.handle_tick(now(start, 240));
        assert!(
            matches!(
                &actions[0],
                Action::Complete {
                    id: 1,
                    outcome: Outcome::Timeout
                }
            ),
            "{actions:?}"
        );
        assert!(
            matches!(&actions[1], Action::Send { what: "command", .. }),
            "command 2 follows"
        );
    }

    #[test]
    fn a_command_that_cannot_be_encoded_is_rejected_with_the_reason() {
        let (mut s, start) = logged_in(Edition::V2016);
        let actions = s.handle_command(command(3, json!({"Action": "Reboot"})), now(start, 0));
        match actions.as_slice() {
            [Action::Complete {
                id: 3,
                outcome: Outcome::Rejected(reason),
            }] => assert!(reason.contains("Reboot")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn logout_publishes_goes_offline_and_gives_back_held_commands() {
        let (mut s, start) = logged_in(Edition::V2016);
        let q = json!({"Action": "Query", "Ids": [1]});
        s.handle_command(command(1, q.clone()), now(start, 0));
        s.handle_command(command(2, q), now(start, 0));
        let logout = sim::logout_frame(Vin::from_text(VIN), Edition::V2016, Time::default(), 1);
        let actions = s.handle_frame(logout, now(start, 1));
        let Action::Commit { records, then } = &actions[0] else {
            panic!("{actions:?}")
        };
        assert!(records[0].topic.ends_with("/upstream/vlogout"));
        assert_eq!(records[0].class, RecordClass::Critical);
        assert!(matches!(&then[0], Action::Offline { .. }));
        assert!(matches!(
            actions[1..],
            [Action::Release { id: 1 }, Action::Release { id: 2 }]
        ));
        assert!(s.vin().is_none());
    }

    #[test]
    fn encrypted_data_units_are_published_as_received() {
        let (mut s, start) = logged_in(Edition::V2025);
        let mut frame = sim::realtime_frame(Vin::from_text(VIN), Edition::V2025, Time::default(), 1, false);
        let bytes = frame.encode().unwrap();
        frame.encryption = crate::protocol::gbt32960::Encryption::SM4;
        frame.body = crate::protocol::gbt32960::Body::Encrypted(bytes[24..bytes.len() - 1].to_vec());
        let actions = s.handle_frame(frame, now(start, 1));
        let body: Value = serde_json::from_slice(&records(&actions)[0].body).unwrap();
        assert_eq!(body["Encrypt"], 5);
        assert!(body["Data"]["Ciphertext"].as_str().unwrap().len() > 20);
        assert!(body["Data"].get("Infos").is_none());
    }

    fn platform_frame(command: Command, id: &str, edition: Edition) -> Frame {
        use crate::protocol::gbt32960::message::{Logout, PlatformLogin};
        let time = Time::from_bytes([25, 11, 21, 8, 0, 0]);
        let body = if command == Command::PLATFORM_LOGIN {
            Body::PlatformLogin(PlatformLogin {
                time,
                serial: 7,
                username: *b"platformuser",
                password: *b"secret-password-0001",
                encryption: 1,
            })
        } else {
            Body::PlatformLogout(Logout { time, serial: 7 })
        };
        Frame::new(edition, command, ResponseFlag::COMMAND, Vin::from_text(id), body)
    }

    /// The replies in the `then` list of the only commit, and the commit's records.
    fn committed_then_sent(actions: &[Action]) -> (Vec<&Record>, Vec<Frame>) {
        match actions {
            [Action::Commit { records, then }] => (records.iter().collect(), sent(then)),
            other => panic!("expected one commit, got {other:?}"),
        }
    }

    #[test]
    fn a_platform_login_before_any_vehicle_login_is_stored_then_answered_and_opens_the_platform_link() {
        let mut s = Session::new(SessionSettings::default());
        let start = Instant::now();
        let login = platform_frame(Command::PLATFORM_LOGIN, "PLATFORM0001", Edition::V2016);
        let actions = s.handle_frame(login, now(start, 0));
        let (records, replies) = committed_then_sent(&actions);
        assert_eq!(records[0].topic, "gbt32960/PLATFORM0001/upstream/plogin");
        assert_eq!(records[0].class, RecordClass::Critical);
        assert_eq!(replies.len(), 1, "answered only through the commit");
        assert_eq!(replies[0].command, Command::PLATFORM_LOGIN);
        assert_eq!(replies[0].response, ResponseFlag::SUCCESS);
        assert_eq!(replies[0].message_time(), Some(now(start, 0).local));
        // The platform link is open: heartbeats are answered, and a vehicle may log in on it.
        let hb = s.handle_frame(
            sim::heartbeat_frame(Vin::from_text("PLATFORM0001"), Edition::V2016),
            now(start, 1),
        );
        assert_eq!(sent(&hb)[0].response, ResponseFlag::SUCCESS);
        let actions = s.handle_frame(login_frame_2016(), now(start, 2));
        assert!(
            matches!(&actions[0], Action::Claim { vin } if vin == VIN),
            "{actions:?}"
        );
        assert_eq!(s.vin(), Some(VIN));
    }

    fn login_frame_2016() -> Frame {
        login(Edition::V2016)
    }

    #[test]
    fn a_platform_logout_closes_the_platform_link_and_the_next_heartbeat_closes_the_connection() {
        let mut s = Session::new(SessionSettings::default());
        let start = Instant::now();
        s.handle_frame(
            platform_frame(Command::PLATFORM_LOGIN, "PLATFORM0001", Edition::V2025),
            now(start, 0),
        );
        let logout = platform_frame(Command::PLATFORM_LOGOUT, "PLATFORM0001", Edition::V2025);
        let actions = s.handle_frame(logout, now(start, 1));
        let (records, replies) = committed_then_sent(&actions);
        assert!(records[0].topic.ends_with("/upstream/plogout"));
        assert_eq!(replies[0].command, Command::PLATFORM_LOGOUT);
        assert_eq!(replies[0].edition, Edition::V2025);
        let hb = sim::heartbeat_frame(Vin::from_text("PLATFORM0001"), Edition::V2025);
        assert!(matches!(
            s.handle_frame(hb, now(start, 2)).as_slice(),
            [Action::Close(CloseReason::FrameBeforeLogin { command: 0x07 })]
        ));
    }

    #[test]
    fn platform_login_and_logout_after_a_vehicle_login_are_stored_under_the_vin_then_answered() {
        let (mut s, start) = logged_in(Edition::V2016);
        for command in [Command::PLATFORM_LOGIN, Command::PLATFORM_LOGOUT] {
            let actions = s.handle_frame(platform_frame(command, VIN, Edition::V2016), now(start, 1));
            let (records, replies) = committed_then_sent(&actions);
            assert!(records[0].topic.starts_with(&format!("gbt32960/{VIN}/upstream/p")));
            assert_eq!(replies[0].command, command);
            assert_eq!(replies[0].response, ResponseFlag::SUCCESS);
        }
        assert_eq!(s.vin(), Some(VIN), "the vehicle stays logged in");
    }

    #[test]
    fn a_platform_login_with_an_id_that_would_break_topics_closes_the_connection() {
        let mut s = Session::new(SessionSettings::default());
        let actions = s.handle_frame(
            platform_frame(Command::PLATFORM_LOGIN, "A/B", Edition::V2016),
            now(Instant::now(), 0),
        );
        assert!(matches!(
            actions.as_slice(),
            [Action::Close(CloseReason::UnusableVin(_))]
        ));
    }

    fn activation_frame() -> Frame {
        use crate::protocol::gbt32960::message::{Activation, Signature};
        let body = Body::Activation(Activation {
            time: Time::from_bytes([25, 11, 21, 8, 0, 0]),
            chip_id: *b"CHIP000000000001",
            public_key: vec![4; 65],
            vin: Vin::from_text(VIN).0,
            signature: Signature {
                signature_type: 1,
                r: vec![1; 32],
                s: vec![2; 32],
            },
        });
        Frame::new(
            Edition::V2025,
            Command::ACTIVATION,
            ResponseFlag::COMMAND,
            Vin::from_text(VIN),
            body,
        )
    }

    fn key_exchange_body() -> Body {
        use crate::protocol::gbt32960::message::KeyExchange;
        Body::KeyExchange(KeyExchange {
            key_type: 5,
            key: vec![0xAB; 16],
            active_time: Time::from_bytes([25, 11, 21, 8, 0, 0]),
            expire_time: Time::from_bytes([26, 11, 21, 8, 0, 0]),
        })
    }

    #[test]
    fn a_2025_activation_is_stored_then_answered_with_an_activation_response() {
        let (mut s, start) = logged_in(Edition::V2025);
        let actions = s.handle_frame(activation_frame(), now(start, 1));
        let (records, replies) = committed_then_sent(&actions);
        assert!(records[0].topic.ends_with("/upstream/activation"));
        assert_eq!(records[0].class, RecordClass::Critical);
        assert_eq!(replies[0].command, Command::ACTIVATION_RESPONSE);
        assert_eq!(replies[0].response, ResponseFlag::COMMAND);
        assert_eq!(
            replies[0].body,
            Body::ActivationResponse(crate::protocol::gbt32960::message::ActivationResponse { status: 1, info: 0 })
        );
    }

    #[test]
    fn a_2025_key_exchange_from_the_terminal_is_stored_then_answered_with_success() {
        let (mut s, start) = logged_in(Edition::V2025);
        let exchange = Frame::new(
            Edition::V2025,
            Command::KEY_EXCHANGE,
            ResponseFlag::COMMAND,
            Vin::from_text(VIN),
            key_exchange_body(),
        );
        let actions = s.handle_frame(exchange, now(start, 1));
        let (records, replies) = committed_then_sent(&actions);
        assert_eq!(records[0].class, RecordClass::Critical);
        let body: Value = serde_json::from_slice(&records[0].body).unwrap();
        assert_eq!(body["Data"]["KeyType"], 5);
        assert_eq!(replies[0].command, Command::KEY_EXCHANGE);
        assert_eq!(replies[0].response, ResponseFlag::SUCCESS);
    }

    #[test]
    fn the_cloud_can_send_an_activation_response_which_completes_once_sent() {
        let (mut s, start) = logged_in(Edition::V2025);
        let actions = s.handle_command(
            command(4, json!({"Action": "ActivationResponse", "Status": 2, "Info": 1})),
            now(start, 1),
        );
        let frames = sent(&actions);
        assert_eq!(frames[0].command, Command::ACTIVATION_RESPONSE);
        assert_eq!(
            frames[0].body,
            Body::ActivationResponse(crate::protocol::gbt32960::message::ActivationResponse { status: 2, info: 1 })
        );
        match actions.last() {
            Some(Action::Complete {
                id: 4,
                outcome: Outcome::Answer(json),
            }) => assert_eq!(json["Data"]["Status"], 2),
            other => panic!("{other:?}"),
        }
        assert!(s.handle_tick(now(start, 600)).is_empty(), "nothing left in flight");
    }

    #[test]
    fn a_key_exchange_from_the_cloud_completes_with_the_terminals_response() {
        let (mut s, start) = logged_in(Edition::V2025);
        let actions = s.handle_command(
            command(
                5,
                json!({"Action": "KeyExchange", "KeyType": 5, "Key": "00112233445566778899AABBCCDDEEFF",
                       "ActiveTime": {"Year": 25, "Month": 11, "Day": 21, "Hour": 8, "Minute": 0, "Second": 0},
                       "ExpireTime": {"Year": 26, "Month": 11, "Day": 21, "Hour": 8, "Minute": 0, "Second": 0}}),
            ),
            now(start, 1),
        );
        let downlink = &sent(&actions)[0];
        assert_eq!(downlink.command, Command::KEY_EXCHANGE);
        let answer = reply::key_exchange_reply(downlink, ResponseFlag::SUCCESS).unwrap();
        let actions = s.handle_frame(answer, now(start, 2));
        assert!(
            matches!(
                actions.as_slice(),
                [Action::Complete {
                    id: 5,
                    outcome: Outcome::Answer(_)
                }]
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn the_2025_only_actions_are_rejected_for_a_2016_vehicle() {
        let (mut s, start) = logged_in(Edition::V2016);
        let actions = s.handle_command(
            command(6, json!({"Action": "ActivationResponse", "Status": 1, "Info": 0})),
            now(start, 1),
        );
        match actions.as_slice() {
            [Action::Complete {
                id: 6,
                outcome: Outcome::Rejected(reason),
            }] => assert!(reason.contains("2025"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn beijing_time_is_utc_plus_eight_hours() {
        // 2025-11-21T08:00:00Z is 16:00 in Beijing.
        assert_eq!(
            beijing_time(1_763_712_000_000),
            Time::from_bytes([25, 11, 21, 16, 0, 0])
        );
    }
}
