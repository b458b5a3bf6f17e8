//! The reader's alarms as the session sees them: reports raised and restored, and the
//! synchronisation of the active set after a (re)connect.

use super::*;

impl Session {
    pub(super) fn alarm_sync_message(&self) -> Result<Message, crate::protocol::gbt37987::UnknownName> {
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

    pub(super) fn alarm_report(&mut self, message: &Message, now: Now, actions: &mut Vec<Action>) {
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
    pub(super) fn alarm_sync(&mut self, message: &Message, now: Now, actions: &mut Vec<Action>) {
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
}
