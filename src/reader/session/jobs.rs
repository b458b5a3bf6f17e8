//! The jobs a reader session runs one request at a time: single requests, rule reconciliation,
//! rule state changes and log pulls, with their progress through answers and timeouts.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    pub(super) message: Message,
    pub(super) timeout: Duration,
    pub(super) label: String,
}

impl Outgoing {
    pub(super) fn new(message: Message, timeout: Duration) -> Outgoing {
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
pub(super) struct Current {
    pub(super) number: u32,
    /// Response code of the table's pairing (segments of a log upload share it).
    pub(super) expect: u16,
    pub(super) deadline: Instant,
    pub(super) timeout: Duration,
    pub(super) effect: Effect,
    pub(super) label: String,
}

/// Where a job stands after an answer.
pub(super) enum Progress {
    /// Send the job's next request (or finish it).
    Next,
    /// More answers to the same request follow (log segments).
    More,
    /// The job ended early.
    Done(Outcome),
}

pub(super) struct Job {
    pub(super) token: Option<Token>,
    pub(super) work: Work,
}

pub(super) enum Work {
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
pub(super) struct Ctx<'a> {
    pub(super) reader: &'a str,
    pub(super) dialect: Dialect,
    pub(super) sn: [u8; 8],
    pub(super) now: Now,
    pub(super) settings: &'a SessionSettings,
    pub(super) specs: &'a mut BTreeMap<u32, SpecState>,
    pub(super) actions: &'a mut Vec<Action>,
}

impl Ctx<'_> {
    pub(super) fn template(
        &mut self,
        message: Result<Message, crate::protocol::gbt37987::UnknownName>,
    ) -> Option<Outgoing> {
        match message {
            Ok(m) => Some(Outgoing::new(m, self.settings.request_timeout)),
            Err(e) => {
                self.actions.push(Action::Log(format!("code table: {e}")));
                None
            }
        }
    }

    pub(super) fn to(&self) -> Addressing {
        Addressing {
            device_sn: self.sn,
            number: 0,
        }
    }
}

/// One request, its answer as the result.
pub(super) struct Single {
    pub(super) request: Option<Outgoing>,
    pub(super) answer: Option<Json>,
    /// The request is a time sync, built when it is sent (its body is the edge's time).
    pub(super) time_sync: bool,
}

/// A sequence of status-answered requests (a reconciliation's steps, a state change).
pub(super) struct Steps {
    pub(super) pending: VecDeque<Outgoing>,
    pub(super) done: Vec<Json>,
    pub(super) failures: Vec<String>,
    pub(super) sent_label: String,
}

impl Steps {
    pub(super) fn new(pending: VecDeque<Outgoing>) -> Steps {
        Steps {
            pending,
            done: Vec::new(),
            failures: Vec::new(),
            sent_label: String::new(),
        }
    }

    pub(super) fn next(&mut self) -> Option<Outgoing> {
        let out = self.pending.pop_front()?;
        self.sent_label = out.label.clone();
        Some(out)
    }

    pub(super) fn answer(&mut self, msg: &Message) -> Progress {
        let (code, description) = status_of(msg);
        if code != 0 {
            self.failures
                .push(format!("{}: status {code} {description}", self.sent_label));
        }
        self.done.push(json!({"step": self.sent_label, "status": code}));
        Progress::Next
    }

    pub(super) fn timeout(&mut self) {
        self.failures.push(format!("{}: no answer", self.sent_label));
    }

    pub(super) fn outcome(&self) -> Outcome {
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
pub(super) enum ReconcilePhase {
    QueryAccess,
    QuerySelect,
    Execute,
}

pub(super) struct Reconcile {
    pub(super) phase: ReconcilePhase,
    pub(super) desired: DesiredRules,
    pub(super) actual_access: Vec<Parameter>,
    pub(super) steps: Steps,
    pub(super) kept: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogPhase {
    Count,
    Upload,
    Receiving,
    Finished,
}

pub(super) struct LogPull {
    pub(super) kind: LogKind,
    pub(super) count: Option<u32>,
    pub(super) phase: LogPhase,
    pub(super) segments: u32,
    pub(super) entries: u64,
}

impl Session {
    pub(super) fn job_for(&self, request: Request) -> Result<Work, String> {
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

    pub(super) fn ctx<'a>(
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
    pub(super) fn pump(&mut self, now: Now, actions: &mut Vec<Action>) {
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

    pub(super) fn on_timeout(&mut self, now: Now, actions: &mut Vec<Action>) {
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

    pub(super) fn on_answer(&mut self, message: Message, now: Now, actions: &mut Vec<Action>) {
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
    pub(super) fn new(desired: DesiredRules) -> Reconcile {
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
    pub(super) fn next(&mut self, ctx: &mut Ctx<'_>) -> Option<Outgoing> {
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

    pub(super) fn answer(&mut self, msg: &Message, ctx: &mut Ctx<'_>) -> Progress {
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
    pub(super) fn timeout(&mut self, label: &str) -> Option<Outcome> {
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

    pub(super) fn finish(&mut self, ctx: &mut Ctx<'_>) -> Outcome {
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
