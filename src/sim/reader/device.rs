//! The simulated reader itself, without any I/O: what it holds (tags, select and access specs,
//! alarms, logs, cached reports, firmware) and how it answers each message from the edge, ticks
//! its rules and uploads in confirmed segments. Time comes in as [`Now`]; the shell
//! (`super`) owns the sockets, the serial port, the timers and the TFTP download, and hands
//! every message and tick to [`Device`]. So the device is tested here without a runtime.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::gbt37987::builders::{self, Addressing, Alarm};
use crate::protocol::gbt37987::{Body, Dialect, Header, Message, Parameter, TagReport, Value};
use crate::reader::rules::{self, transition, SpecEvent, SpecState};
pub use crate::reader::session::Now;

use super::{population, SimReaderOptions, SimTag};

#[derive(Debug, Clone)]
struct SimSpec {
    param: Parameter,
    state: SpecState,
    since: Instant,
    last_report: Instant,
    cursor: usize,
}

#[derive(Debug, Clone)]
struct SimAccess {
    param: Parameter,
    enabled: bool,
    operations_left: Option<u16>,
}

#[derive(Debug, Clone)]
struct LogEntry {
    sequence: u64,
    kind: u8,
    code: u32,
    text: String,
    tid: Vec<u8>,
    at_us: u64,
}

/// Firmware of one VerType: what runs and what was downloaded beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub running: String,
    pub spare: Option<String>,
}

#[derive(Debug)]
enum Outbound {
    Alarm(Alarm),
    Restore(u32),
    /// A reply finished in the background (a firmware download).
    Message(Box<Message>),
}

/// A segmented upload in progress: the request it answers and what is left.
#[derive(Debug)]
struct Upload {
    request: Header,
    kind: UploadKind,
    next_sequence: u16,
    /// The last segment went out; its confirmation ends the upload.
    finished: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadKind {
    TagLog,
    DeviceLog,
    Cached,
}

pub(super) struct State {
    specs: BTreeMap<u32, SimSpec>,
    access: BTreeMap<u32, SimAccess>,
    tags: Vec<SimTag>,
    alarms: BTreeMap<u32, Alarm>,
    next_alarm: u32,
    device_log: Vec<LogEntry>,
    tag_log: Vec<LogEntry>,
    cache: VecDeque<TagReport>,
    firmware: BTreeMap<u8, Firmware>,
    outbound: VecDeque<Outbound>,
    upload: Option<Upload>,
    number: u32,
    time_set: Option<u64>,
    resets: u64,
    /// Scripted traffic: the tags in front of the antennas now (indexes into `tags`); every
    /// report of an active spec carries exactly these, and none is sent while it is empty.
    present: Option<Vec<usize>>,
}

/// Reports kept while no link is up (tags).
const CACHE_CAP: usize = 10_000;

/// What the shell does after sending a message's replies.
#[derive(Debug)]
pub enum After {
    Continue,
    /// Close the link (Disconnect, ResetDevice).
    Close,
    /// Download the image `request` (a SetVersion) points at, then call
    /// [`Device::download_finished`]; the link goes on meanwhile.
    Download {
        ver_type: u8,
        request: Box<Message>,
    },
}

/// The answer to one message.
#[derive(Debug)]
pub struct Handled {
    pub replies: Vec<Message>,
    pub then: After,
}

impl Handled {
    fn replies(replies: Vec<Message>) -> Handled {
        Handled {
            replies,
            then: After::Continue,
        }
    }

    fn close(replies: Vec<Message>) -> Handled {
        Handled {
            replies,
            then: After::Close,
        }
    }
}

/// One simulated reader's state and behaviour.
pub struct Device {
    options: SimReaderOptions,
    state: State,
    /// Test switch: whether edge keepalives get a KeepaliveAck.
    pub answer_keepalives: bool,
    /// Test switch: whether log and cached-report uploads stop after their first segment.
    pub stall_uploads: bool,
    /// Tag reports sent live (messages, tags).
    pub reports_sent: u64,
    pub tags_sent: u64,
}

fn wall_us(now: Now) -> u64 {
    (now.wall_ms.max(0) as u64) * 1000
}

impl Device {
    pub fn new(options: SimReaderOptions) -> Device {
        let log = |kind: u8| -> Vec<LogEntry> {
            (0..options.log_entries)
                .map(|i| LogEntry {
                    sequence: i as u64 + 1,
                    kind,
                    code: 100 + i as u32,
                    text: format!("simulated log entry {}", i + 1),
                    tid: vec![0xE2, 0x80, 0, i as u8],
                    at_us: 1_700_000_000_000_000 + i as u64 * 1_000_000,
                })
                .collect()
        };
        let state = State {
            specs: BTreeMap::new(),
            access: BTreeMap::new(),
            tags: population(options.tags, options.sn, options.plate_prefix),
            alarms: BTreeMap::new(),
            next_alarm: 1,
            device_log: log(2),
            tag_log: log(0),
            cache: VecDeque::new(),
            firmware: [0u8, 1, 2]
                .into_iter()
                .map(|t| {
                    (
                        t,
                        Firmware {
                            running: format!("sim-{t}.1.0"),
                            spare: None,
                        },
                    )
                })
                .collect(),
            outbound: VecDeque::new(),
            upload: None,
            number: 0,
            time_set: None,
            resets: 0,
            present: None,
        };
        Device {
            options,
            state,
            answer_keepalives: true,
            stall_uploads: false,
            reports_sent: 0,
            tags_sent: 0,
        }
    }

    pub fn options(&self) -> &SimReaderOptions {
        &self.options
    }

    fn next_addressing(&mut self) -> Addressing {
        let s = &mut self.state;
        s.number = s.number.checked_add(1).unwrap_or(1);
        Addressing {
            device_sn: self.options.sn,
            number: s.number,
        }
    }

    /// A link came up: on TCP the acknowledgement opens it; on a serial line it announces a
    /// (re)start.
    pub fn link_up(&mut self, now: Now) -> Vec<Message> {
        let to = self.next_addressing();
        builders::connection_ack(self.options.dialect, to, 0, wall_us(now))
            .into_iter()
            .collect()
    }

    /// The link dropped: an upload in progress ends (the edge asks again).
    pub fn link_down(&mut self) {
        self.state.upload = None;
    }

    /// The reader's own keepalive.
    pub fn keepalive(&mut self) -> Vec<Message> {
        let to = self.next_addressing();
        builders::keepalive(to).into_iter().collect()
    }

    /// What waits to go out by itself: raised and restored alarms, finished downloads.
    pub fn outbound(&mut self, now: Now) -> Vec<Message> {
        let pending: Vec<Outbound> = self.state.outbound.drain(..).collect();
        pending
            .into_iter()
            .filter_map(|o| {
                let to = self.next_addressing();
                match o {
                    Outbound::Alarm(a) => builders::alarm_report(to, &a).ok(),
                    Outbound::Restore(id) => builders::alarm_restore(to, id, 0, (now.wall_ms / 1000) as u32).ok(),
                    Outbound::Message(m) => Some(*m),
                }
            })
            .collect()
    }

    /// The result of the download an [`After::Download`] asked for: the answer to its
    /// SetVersion waits in [`Device::outbound`].
    pub fn download_finished(&mut self, ver_type: u8, request: &Message, result: Result<String, String>) {
        let reply = match result {
            Ok(version) => {
                if let Some(fw) = self.state.firmware.get_mut(&ver_type) {
                    fw.spare = Some(version);
                }
                ok_reply(&request.header)
            }
            Err(e) => error_reply(&request.header, 401, &e),
        };
        self.state
            .outbound
            .extend(reply.into_iter().map(|m| Outbound::Message(Box::new(m))));
    }

    /// Scripted traffic: replaces the tag population; reports carry only the tags
    /// [`Device::present`] puts in front of the antennas.
    pub fn script_tags(&mut self, tags: Vec<SimTag>) {
        self.state.tags = tags;
        self.state.present = Some(Vec::new());
    }

    /// Scripted traffic: the tags (indexes) in front of the antennas now.
    pub fn present(&mut self, tags: Vec<usize>) {
        let n = self.state.tags.len();
        self.state.present = Some(tags.into_iter().filter(|i| *i < n).collect());
    }

    pub fn plates(&self) -> Vec<String> {
        self.state.tags.iter().map(|t| t.plate.clone()).collect()
    }

    pub fn select_specs(&self) -> BTreeMap<u32, SpecState> {
        self.state.specs.iter().map(|(id, s)| (*id, s.state)).collect()
    }

    pub fn access_specs(&self) -> BTreeMap<u32, bool> {
        self.state.access.iter().map(|(id, a)| (*id, a.enabled)).collect()
    }

    pub fn firmware(&self, ver_type: u8) -> Option<Firmware> {
        self.state.firmware.get(&ver_type).cloned()
    }

    pub fn time_set(&self) -> Option<u64> {
        self.state.time_set
    }

    pub fn alarms(&self) -> Vec<u32> {
        self.state.alarms.keys().copied().collect()
    }

    pub fn cached(&self) -> usize {
        self.state.cache.len()
    }

    pub fn resets(&self) -> u64 {
        self.state.resets
    }

    /// Raises an alarm (it waits in [`Device::outbound`]); returns its AlarmID.
    pub fn raise_alarm(&mut self, alarm_code: u32, level: u8, description: &str, now: Now) -> u32 {
        let s = &mut self.state;
        let id = s.next_alarm;
        s.next_alarm += 1;
        let alarm = Alarm {
            alarm_id: id,
            alarm_code,
            reason: 0,
            level,
            seconds: (now.wall_ms / 1000) as u32,
            description: description.to_string(),
        };
        s.alarms.insert(id, alarm.clone());
        s.outbound.push_back(Outbound::Alarm(alarm));
        id
    }

    /// Ends an alarm (AlarmRestore, automatic).
    pub fn restore_alarm(&mut self, id: u32) {
        if self.state.alarms.remove(&id).is_some() {
            self.state.outbound.push_back(Outbound::Restore(id));
        }
    }

    /// Ends an alarm without telling anyone (the edge learns it at the next alarm sync).
    pub fn forget_alarm(&mut self, id: u32) {
        self.state.alarms.remove(&id);
    }

    /// Loses every rule, as a reboot does.
    pub fn wipe_rules(&mut self) {
        self.state.specs.clear();
        self.state.access.clear();
    }

    /// Advances the rules by one clock tick: start/stop triggers, reports of the active specs.
    /// With no link (`linked` false) the reports go to the cache.
    pub fn tick(&mut self, now: Now, linked: bool) -> Vec<Message> {
        let options = &self.options;
        let at = now.mono;
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut reports: Vec<Vec<Parameter>> = Vec::new();
        {
            let state = &mut self.state;
            let ids: Vec<u32> = state.specs.keys().copied().collect();
            for id in ids {
                let Some(spec) = state.specs.get_mut(&id) else { continue };
                // The stop trigger: Duration.
                if spec.state == SpecState::Active {
                    let stop = spec.param.child("SelectSpecStopTrigger");
                    let kind = stop.and_then(|t| t.field("Type")).and_then(Value::as_u64).unwrap_or(0);
                    let ms = stop
                        .and_then(|t| t.field("DurationValue"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    if kind == 1 && at.duration_since(spec.since) >= Duration::from_millis(ms) {
                        spec.state = SpecState::Inactive;
                        events.push((1u8, id));
                        continue;
                    }
                }
                if spec.state != SpecState::Active || at.duration_since(spec.last_report) < options.report_interval {
                    continue;
                }
                spec.last_report = at;
                let tags = match &state.present {
                    Some(present) if present.is_empty() => continue,
                    Some(present) => present.clone(),
                    None => {
                        let n = options.tags_per_report.min(state.tags.len());
                        let mut tags = Vec::with_capacity(n);
                        for _ in 0..n {
                            let index = spec.cursor % state.tags.len().max(1);
                            spec.cursor = spec.cursor.wrapping_add(1);
                            tags.push(index);
                        }
                        tags
                    }
                };
                let spec = spec.clone();
                let mut params = Vec::new();
                for index in tags {
                    params.extend(tag_report(state, &spec, id, index, wall_us(now)));
                }
                reports.push(params);
            }
            if !linked {
                for params in reports.drain(..) {
                    for p in params {
                        if state.cache.len() < CACHE_CAP {
                            if let Some(t) = TagReport::from_param(&p) {
                                state.cache.push_back(t);
                            }
                        }
                    }
                }
            }
        }
        for (kind, id) in events {
            let to = self.next_addressing();
            if let Ok(event) = builders::select_spec_event(kind, id, 0) {
                out.extend(builders::event_notification(to, wall_us(now), event));
            }
        }
        for params in reports {
            let to = self.next_addressing();
            let count = params.len() as u64;
            if let Ok(m) = Message::named(
                "TagSelectAccessReport",
                to.device_sn,
                to.number,
                Body::from_params(params),
            ) {
                self.reports_sent += 1;
                self.tags_sent += count;
                out.push(m);
            }
        }
        out
    }

    /// The reader's answer to one message from the edge, and whether to close the link after it.
    pub fn handle(&mut self, m: &Message, now: Now) -> Handled {
        let h = &m.header;
        let id_field = |name: &str| m.field(name).and_then(Value::as_u64).unwrap_or(0) as u32;
        let reply = |body: Body| builders::reply_to(h, body).into_iter().collect::<Vec<_>>();
        let name = m.name().unwrap_or("");
        let replies = match name {
            "Keepalive" => {
                if self.answer_keepalives {
                    builders::keepalive_ack(h).into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            "KeepaliveAck" | "CachedSelectAccessReportAck" | "UploadTagLogConfirm" | "UploadDeviceLogConfirm" => {
                return Handled::replies(self.next_segment(m))
            }
            "Disconnect" => return Handled::close(builders::reply_to(h, Body::default()).into_iter().collect()),
            "GetDeviceCapabilities" => {
                let general = Parameter::named(
                    "GenaralCapabilities",
                    Body::new(
                        vec![
                            Value::Text(b"roadedge-sim".to_vec()),
                            Value::Bytes(self.options.sn.to_vec()),
                            Value::U16(1),
                            Value::U16(match self.options.dialect {
                                Dialect::Gbt37987_2019 => 2019,
                                Dialect::Hb2017 => 2017,
                            }),
                            Value::U8(4),
                            Value::U8(0x80),
                        ],
                        Parameter::named("GPIOCapabilities", Body::from_fields(vec![Value::U8(0), Value::U8(0)]))
                            .into_iter()
                            .collect(),
                    ),
                );
                let mut params = status_param();
                params.extend(general);
                reply(Body::from_params(params))
            }
            "GetDeviceConfig" => {
                let mut params = status_param();
                params.extend(Parameter::single(
                    "Identification",
                    Value::Text(b"simulated reader".to_vec()),
                ));
                for antenna in 1..=4u8 {
                    params.extend(Parameter::named(
                        "AntennaProperties",
                        Body::from_fields(vec![Value::U8(0x80), Value::U8(antenna), Value::S16(6)]),
                    ));
                }
                reply(Body::from_params(params))
            }
            "SetDeviceConfig" => {
                let rtc = m
                    .child("SecurityModuleConfiguration")
                    .and_then(|s| s.child("GenaralConfigData"))
                    .and_then(|g| g.child("RTCTime"))
                    .and_then(|r| r.single_value())
                    .and_then(Value::as_u64);
                if let Some(seconds) = rtc {
                    self.state.time_set = Some(seconds);
                }
                ok_reply(h)
            }
            "AddSelectSpec" => match m.child("SelectSpec").cloned() {
                Some(param) => {
                    let id = rules::spec_id(&param).unwrap_or(0);
                    let s = &mut self.state;
                    if id == 0 || s.specs.contains_key(&id) {
                        error_reply(h, 100, "duplicate or zero SelectSpecID")
                    } else {
                        let now = now.mono;
                        s.specs.insert(
                            id,
                            SimSpec {
                                param: rules::with_select_state(&param, SpecState::Disabled),
                                state: SpecState::Disabled,
                                since: now,
                                last_report: now,
                                cursor: 0,
                            },
                        );
                        ok_reply(h)
                    }
                }
                None => error_reply(h, 103, "missing SelectSpec"),
            },
            "DeleteSelectSpec" => {
                let id = id_field("SelectSpecID");
                let s = &mut self.state;
                let found = if id == 0 {
                    s.specs.clear();
                    true
                } else {
                    s.specs.remove(&id).is_some()
                };
                if found {
                    ok_reply(h)
                } else {
                    error_reply(h, 300, "no such SelectSpec")
                }
            }
            "EnableSelectSpec" | "DisableSelectSpec" | "StartSelectSpec" | "StopSelectSpec" => {
                let event = match name {
                    "EnableSelectSpec" => SpecEvent::Enable,
                    "DisableSelectSpec" => SpecEvent::Disable,
                    "StartSelectSpec" => SpecEvent::Start,
                    _ => SpecEvent::Stop,
                };
                let id = id_field("SelectSpecID");
                let mut events = Vec::new();
                let result = {
                    let s = &mut self.state;
                    match s.specs.get_mut(&id) {
                        None => Err("no such SelectSpec".to_string()),
                        Some(spec) => match transition(spec.state, event) {
                            Err(e) => Err(e.to_string()),
                            Ok(mut to) => {
                                // An Immediate (or Periodic) start trigger runs the spec as soon as it is enabled.
                                if event == SpecEvent::Enable
                                    && to == SpecState::Inactive
                                    && matches!(rules::start_trigger(&spec.param), 1 | 2)
                                {
                                    to = SpecState::Active;
                                }
                                if to == SpecState::Active && spec.state != SpecState::Active {
                                    spec.since = now.mono;
                                    events.push(0u8);
                                } else if to != SpecState::Active && spec.state == SpecState::Active {
                                    events.push(1u8);
                                }
                                spec.state = to;
                                Ok(())
                            }
                        },
                    }
                };
                let mut out = match result {
                    Ok(()) => ok_reply(h),
                    Err(e) => error_reply(h, 300, &e),
                };
                for kind in events {
                    let to = self.next_addressing();
                    if let Ok(event) = builders::select_spec_event(kind, id, 0) {
                        out.extend(builders::event_notification(to, wall_us(now), event));
                    }
                }
                out
            }
            "GetSelectSpec" => {
                let mut params = status_param();
                let s = &self.state;
                params.extend(
                    s.specs
                        .values()
                        .map(|spec| rules::with_select_state(&spec.param, spec.state)),
                );
                reply(Body::from_params(params))
            }
            "AddAccessSpec" => match m.child("AccessSpec").cloned() {
                Some(param) => {
                    let id = rules::spec_id(&param).unwrap_or(0);
                    let stop = param.child("AccessSpecStopTrigger");
                    let operations_left = match stop.and_then(|t| t.field("Type")).and_then(Value::as_u64) {
                        Some(1) => stop
                            .and_then(|t| t.field("OperationCountValue"))
                            .and_then(Value::as_u64)
                            .map(|n| n as u16),
                        _ => None,
                    };
                    let s = &mut self.state;
                    if id == 0 || s.access.contains_key(&id) {
                        error_reply(h, 100, "duplicate or zero AccessSpecID")
                    } else {
                        s.access.insert(
                            id,
                            SimAccess {
                                param: rules::with_access_enabled(&param, false),
                                enabled: false,
                                operations_left,
                            },
                        );
                        ok_reply(h)
                    }
                }
                None => error_reply(h, 103, "missing AccessSpec"),
            },
            "DeleteAccessSpec" | "EnableAccessSpec" | "DisableAccessSpec" => {
                let id = id_field("AccessSpecID");
                let s = &mut self.state;
                let found = match name {
                    "DeleteAccessSpec" if id == 0 => {
                        s.access.clear();
                        true
                    }
                    "DeleteAccessSpec" => s.access.remove(&id).is_some(),
                    _ => match s.access.get_mut(&id) {
                        Some(a) => {
                            a.enabled = name == "EnableAccessSpec";
                            true
                        }
                        None => false,
                    },
                };
                if found {
                    ok_reply(h)
                } else {
                    error_reply(h, 300, "no such AccessSpec")
                }
            }
            "GetAccessSpec" => {
                let mut params = status_param();
                let s = &self.state;
                params.extend(
                    s.access
                        .values()
                        .map(|a| rules::with_access_enabled(&a.param, a.enabled)),
                );
                reply(Body::from_params(params))
            }
            "DeviceLogCount" | "TagLogCount" => {
                let s = &self.state;
                let n = if name == "DeviceLogCount" {
                    s.device_log.len()
                } else {
                    s.tag_log.len()
                };
                reply(Body::new(vec![Value::U32(n as u32)], status_param()))
            }
            "ClearDeviceLog" | "ClearTagLog" => {
                let s = &mut self.state;
                if name == "ClearDeviceLog" {
                    s.device_log.clear();
                } else {
                    s.tag_log.clear();
                }
                ok_reply(h)
            }
            "UploadDeviceLog" | "UploadTagLog" => {
                let kind = if name == "UploadDeviceLog" {
                    UploadKind::DeviceLog
                } else {
                    UploadKind::TagLog
                };
                self.state.upload = Some(Upload {
                    request: *h,
                    kind,
                    next_sequence: 1,
                    finished: false,
                });
                self.segment()
            }
            "EnableCachedEventsAndReport" => {
                let empty = self.state.cache.is_empty();
                if empty {
                    Vec::new()
                } else {
                    let to = self.next_addressing();
                    self.state.upload = Some(Upload {
                        request: Header::new(to.device_sn, 581, to.number),
                        kind: UploadKind::Cached,
                        next_sequence: 1,
                        finished: false,
                    });
                    self.segment()
                }
            }
            "AlarmSync" => {
                let listed: Vec<u32> = match m.child("AlarmSyncInfo").and_then(|i| i.field("AlarmIDs")) {
                    Some(Value::Dwords(ids)) => ids.clone(),
                    _ => Vec::new(),
                };
                let seq = m
                    .child("AlarmSyncInfo")
                    .and_then(|i| i.field("SyncSeq"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as u32;
                let active: Vec<Alarm> = self.state.alarms.values().cloned().collect();
                let mut out = Vec::new();
                for alarm in active.iter().filter(|a| !listed.contains(&a.alarm_id)) {
                    let to = self.next_addressing();
                    out.extend(builders::alarm_report(to, alarm));
                }
                let ids: Vec<u32> = active.iter().map(|a| a.alarm_id).collect();
                let info = Parameter::named(
                    "AlarmSyncInfo",
                    Body::from_fields(vec![
                        Value::U32(seq),
                        Value::U8(1),
                        Value::U16(1),
                        Value::U16(1),
                        Value::Dwords(ids),
                    ]),
                );
                if let Ok(info) = info {
                    let to = self.next_addressing();
                    out.extend(builders::alarm_sync(to, info));
                }
                out
            }
            "GetVersion" => {
                let ver_type = m.field("VerType").and_then(Value::as_u64).unwrap_or(1) as u8;
                let firmware = self.state.firmware.get(&ver_type).cloned();
                match firmware {
                    None => error_reply(h, 300, "no such VerType"),
                    Some(fw) => {
                        let mut params = status_param();
                        params.extend(version_info(&fw.running, true, "running"));
                        if let Some(spare) = &fw.spare {
                            params.extend(version_info(spare, false, "downloaded"));
                        }
                        reply(Body::from_params(params))
                    }
                }
            }
            "SetVersion" => {
                // The download runs beside the link (keepalives go on): the shell performs it and hands the
                // result to `download_finished`; the answer follows it.
                let ver_type = m.field("VerType").and_then(Value::as_u64).unwrap_or(1) as u8;
                return Handled {
                    replies: Vec::new(),
                    then: After::Download {
                        ver_type,
                        request: Box::new(m.clone()),
                    },
                };
            }
            "ActiveVersion" | "UnActiveVersion" => {
                let ver_type = m.field("VerType").and_then(Value::as_u64).unwrap_or(1) as u8;
                let s = &mut self.state;
                let swapped = match s.firmware.get_mut(&ver_type) {
                    Some(fw) if fw.spare.is_some() => {
                        let spare = fw.spare.take().unwrap_or_default();
                        fw.spare = Some(std::mem::replace(&mut fw.running, spare));
                        true
                    }
                    _ => false,
                };
                if swapped {
                    ok_reply(h)
                } else {
                    error_reply(h, 401, "no other version to switch to")
                }
            }
            "DiagnosticTest" => {
                let mut params = status_param();
                for item in m.body.children("DiagnosticTestItem") {
                    let test = item.field("TestID").and_then(Value::as_u64).unwrap_or(0) as u16;
                    let (code, results): (u32, Vec<Parameter>) = match test {
                        2 => (
                            0,
                            (1..=4u8)
                                .filter_map(|a| {
                                    Parameter::named(
                                        "AntennaVswrResult",
                                        Body::from_fields(vec![Value::U8(a), Value::U16(115 + u16::from(a) * 5)]),
                                    )
                                    .ok()
                                })
                                .collect(),
                        ),
                        1 => (
                            0,
                            (1..=4u8)
                                .filter_map(|a| {
                                    Parameter::named(
                                        "AntennaConnectionResult",
                                        Body::from_fields(vec![Value::U8(a), Value::U8(0x80)]),
                                    )
                                    .ok()
                                })
                                .collect(),
                        ),
                        _ => (1, Vec::new()),
                    };
                    params.extend(Parameter::named(
                        "DiagnosticTestResultItem",
                        Body::new(vec![Value::U16(test), Value::U32(code)], results),
                    ));
                }
                reply(Body::from_params(params))
            }
            "ResetDevice" => {
                let s = &mut self.state;
                s.resets += 1;
                // A reboot keeps only the rules marked persistent.
                s.specs
                    .retain(|_, spec| spec.param.field("Flags").and_then(Value::as_u64).unwrap_or(0) & 0x80 != 0);
                s.access
                    .retain(|_, a| a.param.field("Flags").and_then(Value::as_u64).unwrap_or(0) & 0x40 != 0);
                return Handled::close(ok_reply(h));
            }
            _ => Message::named(
                "ErrorAck",
                self.options.sn,
                h.number,
                Body::from_params(builders::status(109, "unsupported message").into_iter().collect()),
            )
            .into_iter()
            .collect(),
        };
        Handled::replies(replies)
    }

    /// The next segment of the upload in progress, after a confirmation of the previous one.
    fn next_segment(&mut self, m: &Message) -> Vec<Message> {
        let confirms = matches!(
            m.name(),
            Some("CachedSelectAccessReportAck") | Some("UploadTagLogConfirm") | Some("UploadDeviceLogConfirm")
        );
        if !confirms {
            return Vec::new();
        }
        let confirmed = m
            .field("SequenceID")
            .or_else(|| m.field("SequenceId"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u16;
        {
            let s = &mut self.state;
            let size = self.options.segment_size.max(1);
            let Some((kind, next, finished)) = s.upload.as_ref().map(|u| (u.kind, u.next_sequence, u.finished)) else {
                return Vec::new();
            };
            if confirmed.wrapping_add(1) != next {
                return Vec::new();
            }
            // The confirmed segment's data is delivered: drop it from the reader.
            match kind {
                UploadKind::Cached => {
                    let n = size.min(s.cache.len());
                    s.cache.drain(..n);
                }
                UploadKind::DeviceLog | UploadKind::TagLog => {}
            }
            if finished {
                s.upload = None;
                return Vec::new();
            }
            if self.stall_uploads {
                return Vec::new();
            }
        }
        self.segment()
    }

    /// Sends the segment `next_sequence` of the upload in progress.
    fn segment(&mut self) -> Vec<Message> {
        let size = self.options.segment_size.max(1);
        let s = &mut self.state;
        let Some(upload) = s.upload.as_mut() else {
            return Vec::new();
        };
        let sequence = upload.next_sequence;
        let kind = upload.kind;
        let request = upload.request;
        upload.next_sequence = sequence.wrapping_add(1);
        let start = usize::from(sequence.wrapping_sub(1)) * size;
        let (params, last) = match kind {
            UploadKind::Cached => {
                let take: Vec<TagReport> = s.cache.iter().take(size).cloned().collect();
                let last = s.cache.len() <= size;
                (take.iter().filter_map(|t| t.to_param().ok()).collect::<Vec<_>>(), last)
            }
            UploadKind::DeviceLog => {
                let entries = &s.device_log;
                let chunk: Vec<Parameter> = entries
                    .iter()
                    .skip(start)
                    .take(size)
                    .filter_map(|e| {
                        Parameter::named(
                            "DeviceLog",
                            Body::new(
                                vec![
                                    Value::U64(e.sequence),
                                    Value::U8(e.kind),
                                    Value::U32(e.code),
                                    Value::Text(e.text.as_bytes().to_vec()),
                                ],
                                Parameter::single("UTCTimestamp", Value::U64(e.at_us))
                                    .into_iter()
                                    .collect(),
                            ),
                        )
                        .ok()
                    })
                    .collect();
                (chunk, start + size >= entries.len())
            }
            UploadKind::TagLog => {
                let entries = &s.tag_log;
                let chunk: Vec<Parameter> = entries
                    .iter()
                    .skip(start)
                    .take(size)
                    .filter_map(|e| {
                        Parameter::named(
                            "TagLog",
                            Body::new(
                                vec![
                                    Value::U64(e.sequence),
                                    Value::Bytes(e.tid.clone()),
                                    Value::Bytes(e.tid.clone()),
                                    Value::U32(1),
                                ],
                                Parameter::single("UTCTimestamp", Value::U64(e.at_us))
                                    .into_iter()
                                    .collect(),
                            ),
                        )
                        .ok()
                    })
                    .collect();
                (chunk, start + size >= entries.len())
            }
        };
        if let (true, Some(upload)) = (last, s.upload.as_mut()) {
            upload.finished = true;
        }
        let mut all = status_param();
        all.extend(params);
        let code = match kind {
            UploadKind::Cached => "CachedSelectAccessReport",
            UploadKind::DeviceLog => "UploadDeviceLogAck",
            UploadKind::TagLog => "UploadTagLogAck",
        };
        let number = if kind == UploadKind::Cached {
            self.next_addressing().number
        } else {
            request.number
        };
        Message::named(
            code,
            self.options.sn,
            number,
            Body::new(vec![Value::U16(sequence), Value::U8(u8::from(last))], all),
        )
        .into_iter()
        .collect()
    }
}

/// The TagReportData of one tag seen by `spec`, with the report fields the spec enables, the
/// vehicle data when its RfSpec reads, and the results of matching access specs.
fn tag_report(state: &mut State, spec: &SimSpec, spec_id: u32, index: usize, seen: u64) -> Option<Parameter> {
    let report_spec = spec.param.child("SelectReportSpec");
    let flags = report_spec
        .and_then(|r| r.field("Flags"))
        .and_then(Value::as_u64)
        .unwrap_or(0xFF80);
    let on = |bit: u32| flags >> (15 - bit) & 1 == 1;
    let antenna_spec = spec.param.child("AntennaSpec");
    let antenna = antenna_spec
        .and_then(|a| a.field("AntennaIDs"))
        .and_then(Value::as_bytes)
        .and_then(|ids| ids.get(index % ids.len().max(1)).copied())
        .unwrap_or(1);
    let reads = antenna_spec
        .and_then(|a| a.child("RfSpec"))
        .and_then(|r| r.field("SelectType"))
        .and_then(Value::as_u64)
        == Some(1);
    let tag = state.tags.get(index)?.clone();
    let report = TagReport {
        tid: tag.tid.clone(),
        select_spec_id: on(0).then_some(u64::from(spec_id)),
        spec_index: on(1).then_some(1),
        rf_spec_id: on(2).then_some(1),
        antenna: on(3).then_some(u64::from(antenna)),
        rssi: on(4).then_some(-40 - (index % 30) as i64),
        first_seen: on(5).then_some(seen),
        last_seen: on(6).then_some(seen),
        seen_count: on(7).then_some(1 + (index % 4) as u64),
        tag_data: reads.then(|| tag.data.clone()),
        read_result: reads.then_some(0),
        ..TagReport::default()
    };
    let mut param = report.to_param().ok()?;
    let results = run_access_specs(state, spec_id, index);
    if let crate::protocol::gbt37987::Content::Decoded(body) = &mut param.body {
        body.params.extend(results);
    }
    Some(param)
}

fn run_access_specs(state: &mut State, spec_id: u32, index: usize) -> Vec<Parameter> {
    let mut results = Vec::new();
    let ids: Vec<u32> = state.access.keys().copied().collect();
    for id in ids {
        let Some(access) = state.access.get(&id).cloned() else {
            continue;
        };
        let bound = access.param.field("SelectSpecID").and_then(Value::as_u64).unwrap_or(0);
        if !access.enabled || (bound != 0 && bound != u64::from(spec_id)) {
            continue;
        }
        let Some(command) = access.param.child("AccessCommand") else {
            continue;
        };
        let Some(tag) = state.tags.get(index).cloned() else {
            continue;
        };
        let matches = command
            .child("HbMatchSpec")
            .map(|m| m.params().iter().all(|target| target_matches(target, &tag.tid)))
            .unwrap_or(true);
        if !matches {
            continue;
        }
        for op in command.params() {
            match op.name() {
                Some("HbReadSpec") => {
                    let op_id = op.field("OpSpecID").and_then(Value::as_u64).unwrap_or(0) as u16;
                    let bank = op.child("MemoryBank");
                    let pointer = bank
                        .and_then(|b| b.field("Pointer"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0) as usize;
                    let count = bank.and_then(|b| b.field("Count")).and_then(Value::as_u64).unwrap_or(0) as usize;
                    let words: Vec<u16> = tag.user.iter().skip(pointer).take(count).copied().collect();
                    results.extend(Parameter::named(
                        "HbReadSpecResult",
                        Body::from_fields(vec![Value::U8(0), Value::U16(op_id), Value::Words(words)]),
                    ));
                }
                Some("HbWriteSpec") => {
                    let op_id = op.field("OpSpecID").and_then(Value::as_u64).unwrap_or(0) as u16;
                    let pointer = op.field("Pointer").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let data = match op.field("Data") {
                        Some(Value::Words(w)) => w.clone(),
                        _ => Vec::new(),
                    };
                    if let Some(tag) = state.tags.get_mut(index) {
                        for (i, w) in data.iter().enumerate() {
                            if let Some(slot) = tag.user.get_mut(pointer + i) {
                                *slot = *w;
                            }
                        }
                    }
                    results.extend(Parameter::named(
                        "HbWriteSpecResult",
                        Body::from_fields(vec![Value::U8(0), Value::Bytes(Vec::new()), Value::U16(op_id)]),
                    ));
                }
                _ => {}
            }
        }
        if let Some(access) = state.access.get_mut(&id) {
            if let Some(left) = access.operations_left.as_mut() {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    state.access.remove(&id);
                }
            }
        }
    }
    results
}

fn target_matches(target: &Parameter, tid: &[u8]) -> bool {
    let bits = |name: &str| match target.field(name) {
        Some(Value::Bits { data, .. }) => data.clone(),
        _ => Vec::new(),
    };
    let (mask, data) = (bits("TagMask"), bits("TagData"));
    let inverse = target.field("Flags").and_then(Value::as_u64).unwrap_or(0) & 0x80 != 0;
    let equal = data.iter().enumerate().all(|(i, d)| {
        tid.get(i)
            .is_some_and(|t| t & mask.get(i).copied().unwrap_or(0xFF) == d & mask.get(i).copied().unwrap_or(0xFF))
    });
    equal != inverse
}

fn ok_reply(request: &Header) -> Vec<Message> {
    builders::status_reply(request, 0, "").into_iter().collect()
}

fn error_reply(request: &Header, code: u32, text: &str) -> Vec<Message> {
    builders::status_reply(request, code, text).into_iter().collect()
}

fn status_param() -> Vec<Parameter> {
    builders::status(0, "").into_iter().collect()
}

fn version_info(version: &str, running: bool, description: &str) -> Option<Parameter> {
    // Flags: UsedOrSpare (in use), SetUse, HasRun, CanRun.
    let flags = if running { 0x80 | 0x40 | 0x20 | 0x10 } else { 0x10 };
    Parameter::named(
        "VersionInfo",
        Body::from_fields(vec![
            Value::Bytes(version.as_bytes().to_vec()),
            Value::U8(flags),
            Value::Text(description.as_bytes().to_vec()),
        ]),
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::gbt37987::builders::{LogKind, LogUpload, SpecCommand, VersionCommand};
    use crate::reader::rules::{default_select_spec, parse_rule, RuleKind};
    use crate::sim::reader::SimMode;

    const SN: [u8; 8] = *b"TEST0001";

    fn at(ms: u64, base: Instant) -> Now {
        Now {
            mono: base + Duration::from_millis(ms),
            wall_ms: 1_750_000_000_000 + ms as i64,
        }
    }

    fn device() -> (Device, Instant) {
        let mut options = SimReaderOptions::new(SN, Dialect::Gbt37987_2019, SimMode::Dial(([127, 0, 0, 1], 1).into()));
        options.tags = 5;
        options.tags_per_report = 2;
        options.report_interval = Duration::from_millis(100);
        options.segment_size = 2;
        options.log_entries = 3;
        (Device::new(options), Instant::now())
    }

    fn to(number: u32) -> Addressing {
        Addressing { device_sn: SN, number }
    }

    fn names(messages: &[Message]) -> Vec<&'static str> {
        messages.iter().map(|m| m.name().unwrap_or("?")).collect()
    }

    fn status_code(m: &Message) -> u64 {
        m.child("StatusCode")
            .or_else(|| m.child("Status"))
            .and_then(|s| s.field("StatusCode").or_else(|| s.field("Code")))
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
    }

    /// Adds select spec 1 (immediate start) and enables it: it is then active.
    fn active_spec(d: &mut Device, now: Now) {
        let rule = default_select_spec(1, SpecState::Disabled, 1, &[1, 2]);
        let (id, param) = parse_rule(RuleKind::Select, &rule, &[Dialect::Gbt37987_2019]).expect("rule");
        assert_eq!(id, 1);
        let added = d.handle(&builders::add_select_spec(to(1), param).unwrap(), now);
        assert_eq!(names(&added.replies), ["AddSelectSpecAck"]);
        let enabled = d.handle(
            &builders::spec_command(to(2), SpecCommand::EnableSelectSpec, 1).unwrap(),
            now,
        );
        // The acknowledgement, then the event that the spec started.
        assert_eq!(names(&enabled.replies)[0], "EnableSelectSpecAck");
        assert!(
            names(&enabled.replies).contains(&"DeviceEventNotification"),
            "{:?}",
            names(&enabled.replies)
        );
        assert_eq!(d.select_specs()[&1], SpecState::Active);
    }

    #[test]
    fn an_active_spec_reports_its_tags_each_interval_and_caches_them_without_a_link() {
        let (mut d, base) = device();
        active_spec(&mut d, at(0, base));
        // Not yet an interval since the start.
        assert!(d.tick(at(50, base), true).is_empty());
        let reports = d.tick(at(100, base), true);
        assert_eq!(names(&reports), ["TagSelectAccessReport"]);
        assert_eq!((d.reports_sent, d.tags_sent), (1, 2));
        // Without a link the reports go to the cache instead.
        assert!(d.tick(at(200, base), false).is_empty());
        assert_eq!(d.cached(), 2);
        assert_eq!((d.reports_sent, d.tags_sent), (1, 2));
    }

    #[test]
    fn cached_reports_upload_in_confirmed_segments_and_leave_the_reader_once_confirmed() {
        let (mut d, base) = device();
        active_spec(&mut d, at(0, base));
        for i in 1..=3 {
            d.tick(at(100 * i, base), false);
        }
        assert_eq!(d.cached(), 6);
        let first = d.handle(
            &builders::bodiless(to(3), "EnableCachedEventsAndReport").unwrap(),
            at(400, base),
        );
        assert_eq!(names(&first.replies), ["CachedSelectAccessReport"]);
        let header = first.replies[0].header;
        // Segment 1 of 3 confirmed: its two tags leave, segment 2 follows.
        let second = d.handle(&builders::cached_report_ack(&header, 1).unwrap(), at(410, base));
        assert_eq!(names(&second.replies), ["CachedSelectAccessReport"]);
        assert_eq!(d.cached(), 4);
        // A stale confirmation changes nothing.
        assert!(d
            .handle(&builders::cached_report_ack(&header, 1).unwrap(), at(420, base))
            .replies
            .is_empty());
        d.handle(&builders::cached_report_ack(&header, 2).unwrap(), at(430, base));
        d.handle(&builders::cached_report_ack(&header, 3).unwrap(), at(440, base));
        assert_eq!(d.cached(), 0);
    }

    #[test]
    fn log_uploads_stall_after_the_first_segment_when_asked() {
        let (mut d, base) = device();
        d.stall_uploads = true;
        let upload = LogUpload {
            upload_type: 0,
            upload_count: 0,
            milliseconds: 0,
            start: None,
            end: None,
        };
        let first = d.handle(
            &builders::upload_log(to(1), LogKind::Device, upload).unwrap(),
            at(0, base),
        );
        assert_eq!(names(&first.replies), ["UploadDeviceLogAck"]);
        let next = d.handle(
            &builders::confirm_log_segment(to(2), LogKind::Device, 1).unwrap(),
            at(1, base),
        );
        assert!(next.replies.is_empty(), "stalled");
        d.stall_uploads = false;
        // A new request starts over and runs to the end: 3 entries in segments of 2.
        d.handle(
            &builders::upload_log(to(3), LogKind::Device, upload).unwrap(),
            at(2, base),
        );
        let second = d.handle(
            &builders::confirm_log_segment(to(4), LogKind::Device, 1).unwrap(),
            at(3, base),
        );
        assert_eq!(names(&second.replies), ["UploadDeviceLogAck"]);
        let done = d.handle(
            &builders::confirm_log_segment(to(5), LogKind::Device, 2).unwrap(),
            at(4, base),
        );
        assert!(done.replies.is_empty(), "the last segment was confirmed");
    }

    #[test]
    fn keepalives_are_answered_unless_switched_off_and_disconnect_closes() {
        let (mut d, base) = device();
        let keepalive = builders::keepalive(to(1)).unwrap();
        assert_eq!(names(&d.handle(&keepalive, at(0, base)).replies), ["KeepaliveAck"]);
        d.answer_keepalives = false;
        assert!(d.handle(&keepalive, at(1, base)).replies.is_empty());
        let bye = d.handle(&builders::disconnect(to(2)).unwrap(), at(2, base));
        assert!(matches!(bye.then, After::Close));
        assert_eq!(bye.replies.len(), 1);
    }

    #[test]
    fn a_firmware_download_is_the_shells_job_and_its_result_is_answered_and_activated() {
        let (mut d, base) = device();
        let set =
            builders::set_version(to(1), 1, Parameter::named("VersionDownload", Body::default()).unwrap()).unwrap();
        let handled = d.handle(&set, at(0, base));
        assert!(handled.replies.is_empty(), "the answer waits for the download");
        let After::Download { ver_type, request } = handled.then else {
            panic!("a download: {:?}", handled.then)
        };
        assert_eq!(ver_type, 1);
        d.download_finished(ver_type, &request, Ok("sim-1.2.0".into()));
        let out = d.outbound(at(10, base));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header.number, set.header.number, "the answer to the SetVersion");
        assert_eq!(d.firmware(1).unwrap().spare.as_deref(), Some("sim-1.2.0"));
        let active = d.handle(
            &builders::version_command(to(2), VersionCommand::Activate, 1).unwrap(),
            at(20, base),
        );
        assert_eq!(status_code(&active.replies[0]), 0);
        assert_eq!(d.firmware(1).unwrap().running, "sim-1.2.0");
        // A failed download is answered with an error and changes nothing.
        d.download_finished(2, &request, Err("timed out".into()));
        assert_eq!(d.outbound(at(30, base)).len(), 1);
        assert_eq!(d.firmware(2).unwrap().spare, None);
    }

    #[test]
    fn alarms_wait_for_the_link_and_a_sync_resends_those_the_edge_does_not_list() {
        let (mut d, base) = device();
        let a = d.raise_alarm(0x2001, 2, "antenna 3 open", at(0, base));
        let b = d.raise_alarm(0x2002, 1, "fan", at(0, base));
        assert_eq!(names(&d.outbound(at(1, base))), ["AlarmReport", "AlarmReport"]);
        d.restore_alarm(b);
        assert_eq!(names(&d.outbound(at(2, base))), ["AlarmRestore"]);
        assert_eq!(d.alarms(), vec![a]);
        let info = Parameter::named(
            "AlarmSyncInfo",
            Body::from_fields(vec![
                Value::U32(7),
                Value::U8(1),
                Value::U16(1),
                Value::U16(1),
                Value::Dwords(Vec::new()),
            ]),
        )
        .unwrap();
        let sync = d.handle(&builders::alarm_sync(to(3), info).unwrap(), at(3, base));
        assert_eq!(names(&sync.replies), ["AlarmReport", "AlarmSync"]);
    }

    #[test]
    fn a_reset_keeps_only_persistent_rules_and_closes_the_link() {
        let (mut d, base) = device();
        active_spec(&mut d, at(0, base));
        let reset = d.handle(&builders::bodiless(to(9), "ResetDevice").unwrap(), at(1, base));
        assert!(matches!(reset.then, After::Close));
        assert_eq!(d.resets(), 1);
        assert!(d.select_specs().is_empty(), "the default rule is not persistent");
    }
}
