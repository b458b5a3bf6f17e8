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
            let reply = builders::reply_to(&request.header, Body::from_params(vec![status(0, "").unwrap()])).unwrap();
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
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Complete { token: 4, outcome: Outcome::Rejected(r) } if r.contains("401 busy"))));
}
