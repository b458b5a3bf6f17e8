//! Message builders for both ends of a link: the requests and acks the edge sends, and the
//! notifications and responses a reader sends (used by the reader simulator and the tests).
//!
//! Owns: the body layouts of common messages, expressed by table names so codes stay in the table.
//! Every builder returns `Result<_, UnknownName>`: it fails only if the table lost a row it names.
//! Must not choose message numbers or device SNs (the session does) or encode bytes.

use super::dialect::{ConnectionAckForm, Dialect};
use super::error::UnknownName;
use super::model::{Body, Content, Header, Message, Parameter, Value};
use super::report::TagReport;
use super::table;

/// A device SN and the message number the session assigned: the header inputs of a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// Device SN learned from the reader's first message.
    pub device_sn: [u8; 8],
    /// Message number (the sender's counter).
    pub number: u32,
}

fn build(to: Addressing, name: &str, fields: Vec<Value>, params: Vec<Parameter>) -> Result<Message, UnknownName> {
    Message::named(name, to.device_sn, to.number, Body::new(fields, params))
}

/// The response to `request` (code from the table's pairing, number and SN echoed).
pub fn reply_to(request: &Header, body: Body) -> Result<Message, UnknownName> {
    let response = table::message_by_code(request.code)
        .and_then(|d| d.response_def())
        .ok_or_else(|| UnknownName {
            kind: "response to message",
            name: request.code.to_string(),
        })?;
    Ok(Message {
        header: Header {
            code: response.code,
            ..*request
        },
        body: Content::Decoded(body),
    })
}

/// A Status parameter.
pub fn status(code: u32, description: &str) -> Result<Parameter, UnknownName> {
    Parameter::named(
        "Status",
        Body::from_fields(vec![Value::U32(code), Value::Text(description.as_bytes().to_vec())]),
    )
}

/// The status-only response to `request` (e.g. AddSelectSpecAck); reader side.
pub fn status_reply(request: &Header, code: u32, description: &str) -> Result<Message, UnknownName> {
    reply_to(request, Body::from_params(vec![status(code, description)?]))
}

/// KeepaliveAck echoing the reader's Keepalive (edge side).
pub fn keepalive_ack(keepalive: &Header) -> Result<Message, UnknownName> {
    reply_to(keepalive, Body::default())
}

/// Keepalive (reader side).
pub fn keepalive(from: Addressing) -> Result<Message, UnknownName> {
    build(from, "Keepalive", vec![], vec![])
}

/// Disconnect (edge side); the reader answers DisconnectAck with the same number.
pub fn disconnect(to: Addressing) -> Result<Message, UnknownName> {
    build(to, "Disconnect", vec![], vec![])
}

/// The connection acknowledgement a reader sends on a new link, in the dialect's form: hb-2017
/// sends DeviceEventNotification {UTCTimestamp, ConnectionAttemptEvent}; gbt37987-2019 sends
/// M_ConnectionAck {P_ConnectionAck} (provisionally the same codes, without the timestamp).
pub fn connection_ack(
    dialect: Dialect,
    from: Addressing,
    status: u16,
    timestamp_us: u64,
) -> Result<Message, UnknownName> {
    let mut params = Vec::new();
    if dialect.profile().connection_ack == ConnectionAckForm::EventWithTimestamp {
        params.push(Parameter::single("UTCTimestamp", Value::U64(timestamp_us))?);
    }
    params.push(Parameter::single("P_ConnectionAck", Value::U16(status))?);
    build(from, "M_ConnectionAck", vec![], params)
}

/// The select-spec and access-spec commands that carry only an id (0 = all for Delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecCommand {
    /// DeleteSelectSpec.
    DeleteSelectSpec,
    /// StartSelectSpec.
    StartSelectSpec,
    /// StopSelectSpec.
    StopSelectSpec,
    /// EnableSelectSpec (Disabled → Inactive).
    EnableSelectSpec,
    /// DisableSelectSpec.
    DisableSelectSpec,
    /// DeleteAccessSpec.
    DeleteAccessSpec,
    /// EnableAccessSpec.
    EnableAccessSpec,
    /// DisableAccessSpec.
    DisableAccessSpec,
}

impl SpecCommand {
    /// The table name of the message.
    pub fn message_name(self) -> &'static str {
        match self {
            SpecCommand::DeleteSelectSpec => "DeleteSelectSpec",
            SpecCommand::StartSelectSpec => "StartSelectSpec",
            SpecCommand::StopSelectSpec => "StopSelectSpec",
            SpecCommand::EnableSelectSpec => "EnableSelectSpec",
            SpecCommand::DisableSelectSpec => "DisableSelectSpec",
            SpecCommand::DeleteAccessSpec => "DeleteAccessSpec",
            SpecCommand::EnableAccessSpec => "EnableAccessSpec",
            SpecCommand::DisableAccessSpec => "DisableAccessSpec",
        }
    }
}

/// A select-spec or access-spec command for one id (edge side).
pub fn spec_command(to: Addressing, command: SpecCommand, spec_id: u32) -> Result<Message, UnknownName> {
    build(to, command.message_name(), vec![Value::U32(spec_id)], vec![])
}

/// AddSelectSpec carrying a SelectSpec parameter (edge side).
pub fn add_select_spec(to: Addressing, select_spec: Parameter) -> Result<Message, UnknownName> {
    build(to, "AddSelectSpec", vec![], vec![select_spec])
}

/// AddAccessSpec carrying an AccessSpec parameter (edge side).
pub fn add_access_spec(to: Addressing, access_spec: Parameter) -> Result<Message, UnknownName> {
    build(to, "AddAccessSpec", vec![], vec![access_spec])
}

/// A request without a body (edge side): GetSelectSpec, GetAccessSpec, ClearTagLog, TagLogCount,
/// ClearDeviceLog, DeviceLogCount, ResetDevice, EnableCachedEventsAndReport, Disconnect.
pub fn bodiless(to: Addressing, message_name: &str) -> Result<Message, UnknownName> {
    build(to, message_name, vec![], vec![])
}

/// GetDeviceCapabilities (RequestedData: 0 all, 1 general, 2 communication, 3 spec, 4 RF, 5 air protocol).
pub fn get_device_capabilities(to: Addressing, requested_data: u8) -> Result<Message, UnknownName> {
    build(to, "GetDeviceCapabilities", vec![Value::U8(requested_data)], vec![])
}

/// GetDeviceConfig (RequestedData 0 = all; AntennaID 0 = all).
pub fn get_device_config(to: Addressing, requested_data: u8, antenna_id: u8) -> Result<Message, UnknownName> {
    build(
        to,
        "GetDeviceConfig",
        vec![Value::U8(requested_data), Value::U8(antenna_id)],
        vec![],
    )
}

/// SetDeviceConfig with the given configuration parameters.
pub fn set_device_config(
    to: Addressing,
    reset_to_factory_default: bool,
    params: Vec<Parameter>,
) -> Result<Message, UnknownName> {
    let flags = if reset_to_factory_default { 0x80 } else { 0 };
    build(to, "SetDeviceConfig", vec![Value::U8(flags)], params)
}

/// Time set: SetDeviceConfig carrying RTCTime (686, seconds since the epoch) in
/// SecurityModuleConfiguration / GenaralConfigData — the only clock setting the table has
/// besides NTPConfiguration.
pub fn set_time(to: Addressing, unix_seconds: u64) -> Result<Message, UnknownName> {
    let rtc = Parameter::single("RTCTime", Value::U64(unix_seconds))?;
    let general = Parameter::named("GenaralConfigData", Body::from_params(vec![rtc]))?;
    let security = Parameter::named("SecurityModuleConfiguration", Body::from_params(vec![general]))?;
    set_device_config(to, false, vec![security])
}

/// Firmware version operations that take only VerType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionCommand {
    /// GetVersion: query.
    Query,
    /// ActiveVersion: activate.
    Activate,
    /// UnActiveVersion: deactivate.
    Deactivate,
}

/// GetVersion / ActiveVersion / UnActiveVersion (VerType: 0 boot, 1 system, 2 security-module
/// system, 3 security-chip system).
pub fn version_command(to: Addressing, command: VersionCommand, ver_type: u8) -> Result<Message, UnknownName> {
    let name = match command {
        VersionCommand::Query => "GetVersion",
        VersionCommand::Activate => "ActiveVersion",
        VersionCommand::Deactivate => "UnActiveVersion",
    };
    build(to, name, vec![Value::U8(ver_type)], vec![])
}

/// SetVersion: download an image (VersionDownload parameter) for VerType.
pub fn set_version(to: Addressing, ver_type: u8, version_download: Parameter) -> Result<Message, UnknownName> {
    build(to, "SetVersion", vec![Value::U8(ver_type)], vec![version_download])
}

/// Which log a log request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// Tag logs (620–626).
    Tag,
    /// Device logs (640–646).
    Device,
}

/// The range of an upload request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogUpload {
    /// UploadType: 0 by sequence, 1 by time.
    pub upload_type: u8,
    /// UploadCount.
    pub upload_count: u32,
    /// Milliseconds.
    pub milliseconds: u32,
    /// StartLogTimestamp, if any.
    pub start: Option<u64>,
    /// EndLogTimestamp, if any.
    pub end: Option<u64>,
}

/// UploadTagLog / UploadDeviceLog.
pub fn upload_log(to: Addressing, kind: LogKind, upload: LogUpload) -> Result<Message, UnknownName> {
    let name = match kind {
        LogKind::Tag => "UploadTagLog",
        LogKind::Device => "UploadDeviceLog",
    };
    let mut params = Vec::new();
    if let Some(start) = upload.start {
        params.push(Parameter::single("StartLogTimestamp", Value::U64(start))?);
    }
    if let Some(end) = upload.end {
        params.push(Parameter::single("EndLogTimestamp", Value::U64(end))?);
    }
    let fields = vec![
        Value::U8(upload.upload_type),
        Value::U32(upload.upload_count),
        Value::U32(upload.milliseconds),
    ];
    build(to, name, fields, params)
}

/// UploadTagLogConfirm / UploadDeviceLogConfirm for one received segment.
pub fn confirm_log_segment(to: Addressing, kind: LogKind, sequence_id: u16) -> Result<Message, UnknownName> {
    let name = match kind {
        LogKind::Tag => "UploadTagLogConfirm",
        LogKind::Device => "UploadDeviceLogConfirm",
    };
    build(to, name, vec![Value::U16(sequence_id)], vec![])
}

/// CachedSelectAccessReportAck for one received segment (edge side).
pub fn cached_report_ack(report: &Header, sequence_id: u16) -> Result<Message, UnknownName> {
    reply_to(report, Body::from_fields(vec![Value::U16(sequence_id)]))
}

/// AlarmSync carrying an AlarmSyncInfo parameter.
pub fn alarm_sync(to: Addressing, alarm_sync_info: Parameter) -> Result<Message, UnknownName> {
    build(to, "AlarmSync", vec![], vec![alarm_sync_info])
}

/// DiagnosticTest with one DiagnosticTestItem per TestID (2 = antenna VSWR).
pub fn diagnostic_test(to: Addressing, test_ids: &[u16]) -> Result<Message, UnknownName> {
    let items = test_ids
        .iter()
        .map(|id| Parameter::single("DiagnosticTestItem", Value::U16(*id)))
        .collect::<Result<Vec<_>, _>>()?;
    build(to, "DiagnosticTest", vec![], items)
}

/// TagSelectAccessReport of the given tags (reader side).
pub fn tag_select_access_report(from: Addressing, tags: &[TagReport]) -> Result<Message, UnknownName> {
    let params = tags.iter().map(TagReport::to_param).collect::<Result<Vec<_>, _>>()?;
    build(from, "TagSelectAccessReport", vec![], params)
}

/// DeviceEventNotification with a UTCTimestamp and one event parameter (reader side).
pub fn event_notification(from: Addressing, timestamp_us: u64, event: Parameter) -> Result<Message, UnknownName> {
    let timestamp = Parameter::single("UTCTimestamp", Value::U64(timestamp_us))?;
    build(from, "DeviceEventNotification", vec![], vec![timestamp, event])
}

/// SelectSpecEvent (EventType 0 start, 1 end, 2 preempted).
pub fn select_spec_event(event_type: u8, select_spec_id: u32, preempting_id: u32) -> Result<Parameter, UnknownName> {
    Parameter::named(
        "SelectSpecEvent",
        Body::from_fields(vec![
            Value::U8(event_type),
            Value::U32(select_spec_id),
            Value::U32(preempting_id),
        ]),
    )
}

/// An alarm as a reader raises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// AlarmID (instance).
    pub alarm_id: u32,
    /// AlarmCode (Appendix F; e.g. 1 over-temperature).
    pub alarm_code: u32,
    /// AlarmReason.
    pub reason: u32,
    /// Level: 0 fatal … 4 info.
    pub level: u8,
    /// Seconds (time of the alarm).
    pub seconds: u32,
    /// Description.
    pub description: String,
}

/// AlarmReport (reader side).
pub fn alarm_report(from: Addressing, alarm: &Alarm) -> Result<Message, UnknownName> {
    let info = Parameter::named(
        "AlarmReportInfo",
        Body::from_fields(vec![
            Value::U32(alarm.alarm_code),
            Value::U32(alarm.reason),
            Value::U8(alarm.level),
            Value::U32(alarm.seconds),
            Value::Text(alarm.description.as_bytes().to_vec()),
        ]),
    )?;
    build(from, "AlarmReport", vec![Value::U32(alarm.alarm_id)], vec![info])
}

/// AlarmRestore (reader side; RestoreType 0 auto, 1 sync, 2 manual).
pub fn alarm_restore(from: Addressing, alarm_id: u32, restore_type: u8, seconds: u32) -> Result<Message, UnknownName> {
    let info = Parameter::named(
        "AlarmRestoreInfo",
        Body::from_fields(vec![Value::U8(restore_type), Value::U32(seconds)]),
    )?;
    build(from, "AlarmRestore", vec![Value::U32(alarm_id)], vec![info])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::gbt37987::dialect::ALL_DIALECTS;
    use crate::protocol::gbt37987::report::{tag_reports, VehicleTagData};

    const READER: Addressing = Addressing {
        device_sn: *b"BL123456",
        number: 77,
    };

    /// The smallest valid parameter of a row: zero fields, one of each required sub-parameter.
    fn minimal(name: &str) -> Parameter {
        use crate::protocol::gbt37987::table::{Cardinality, FieldType};
        let def = table::param_by_name(name).expect("row");
        let fields = def
            .fields
            .iter()
            .map(|f| match f.ty {
                FieldType::U8 | FieldType::Flags8(_) => Value::U8(0),
                FieldType::U16 | FieldType::Flags16(_) => Value::U16(0),
                FieldType::U32 => Value::U32(0),
                FieldType::U64 => Value::U64(0),
                FieldType::S8 => Value::S8(0),
                FieldType::S16 => Value::S16(0),
                FieldType::S32 => Value::S32(0),
                FieldType::S64 => Value::S64(0),
                FieldType::U8v => Value::Bytes(vec![]),
                FieldType::U16v => Value::Words(vec![]),
                FieldType::U32v => Value::Dwords(vec![]),
                FieldType::Utf8v => Value::Text(vec![]),
                FieldType::U1v => Value::Bits {
                    bit_count: 0,
                    data: vec![],
                },
            })
            .collect();
        let params = def
            .params
            .iter()
            .filter(|r| matches!(r.card, Cardinality::One | Cardinality::AtLeastOne))
            .map(|r| minimal(r.name))
            .collect();
        Parameter::named(name, Body::new(fields, params)).expect("row")
    }

    fn round_trips(message: &Message) {
        for dialect in ALL_DIALECTS {
            let bytes = message.encode(dialect).expect("encodes");
            assert_eq!(
                &Message::decode(&bytes, dialect).expect("decodes"),
                message,
                "{dialect}"
            );
        }
    }

    #[test]
    fn every_edge_builder_names_table_rows_and_round_trips() {
        let select_spec = minimal("SelectSpec");
        let access_spec = minimal("AccessSpec");
        let download = minimal("VersionDownload");
        let sync = minimal("AlarmSyncInfo");
        let upload = LogUpload {
            upload_type: 1,
            upload_count: 10,
            milliseconds: 0,
            start: Some(1),
            end: Some(2),
        };
        let mut built = vec![
            keepalive(READER),
            disconnect(READER),
            add_select_spec(READER, select_spec),
            add_access_spec(READER, access_spec),
            get_device_capabilities(READER, 0),
            get_device_config(READER, 0, 0),
            set_device_config(READER, true, vec![]),
            set_time(READER, 1_700_000_000),
            set_version(READER, 1, download),
            upload_log(READER, LogKind::Tag, upload),
            upload_log(READER, LogKind::Device, upload),
            confirm_log_segment(READER, LogKind::Tag, 3),
            confirm_log_segment(READER, LogKind::Device, 3),
            alarm_sync(READER, sync),
            diagnostic_test(READER, &[2, 0x81]),
        ];
        for command in [
            SpecCommand::DeleteSelectSpec,
            SpecCommand::StartSelectSpec,
            SpecCommand::StopSelectSpec,
            SpecCommand::EnableSelectSpec,
            SpecCommand::DisableSelectSpec,
            SpecCommand::DeleteAccessSpec,
            SpecCommand::EnableAccessSpec,
            SpecCommand::DisableAccessSpec,
        ] {
            built.push(spec_command(READER, command, 9));
        }
        for command in [
            VersionCommand::Query,
            VersionCommand::Activate,
            VersionCommand::Deactivate,
        ] {
            built.push(version_command(READER, command, 0));
        }
        for name in [
            "GetSelectSpec",
            "GetAccessSpec",
            "ClearTagLog",
            "TagLogCount",
            "ClearDeviceLog",
            "DeviceLogCount",
            "ResetDevice",
            "EnableCachedEventsAndReport",
        ] {
            built.push(bodiless(READER, name));
        }
        for message in built {
            round_trips(&message.expect("builder names table rows"));
        }
    }

    #[test]
    fn replies_echo_the_request_number_and_sn_with_the_paired_code() {
        let request = spec_command(READER, SpecCommand::EnableSelectSpec, 5).expect("built");
        let ack = status_reply(&request.header, 0, "").expect("paired");
        assert_eq!(ack.name(), Some("EnableSelectSpecAck"));
        assert_eq!((ack.header.number, ack.header.device_sn), (77, READER.device_sn));
        assert_eq!(ack.status().map(|s| s.code), Some(0));
        let keepalive_msg = keepalive(READER).expect("built");
        let answer = keepalive_ack(&keepalive_msg.header).expect("paired");
        assert_eq!((answer.name(), answer.header.number), (Some("KeepaliveAck"), 77));
        assert!(keepalive_ack(&answer.header).is_err());
    }

    #[test]
    fn connection_ack_takes_each_dialects_form() {
        let hb = connection_ack(Dialect::Hb2017, READER, 0, 5).expect("built");
        let names: Vec<_> = hb.params().iter().filter_map(Parameter::name).collect();
        assert_eq!(names, ["UTCTimestamp", "ConnectionAttemptEvent"]);
        let v2019 = connection_ack(Dialect::Gbt37987_2019, READER, 0, 5).expect("built");
        let names: Vec<_> = v2019.params().iter().filter_map(Parameter::name).collect();
        assert_eq!(names, ["ConnectionAttemptEvent"]);
        for ack in [hb, v2019] {
            assert_eq!(ack.connection_attempt_status(), Some(0));
            round_trips(&ack);
        }
    }

    #[test]
    fn reader_side_builders_round_trip() {
        let tag = TagReport {
            tid: vec![0xE8, 0x82, 0, 0, 0x28, 0x57, 0x02, 0x30],
            antenna: Some(300),
            rssi: Some(-60),
            first_seen: Some(1_700_000_000_000_000),
            seen_count: Some(2),
            select_spec_id: Some(250),
            tag_data: Some(VehicleTagData {
                items: vec![("HPHMXH", vec![26, 27, 0, 0, 1]), ("HPZL", vec![1])],
            }),
            read_result: Some(0),
            ..TagReport::default()
        };
        let report = tag_select_access_report(READER, std::slice::from_ref(&tag)).expect("built");
        round_trips(&report);
        assert_eq!(tag_reports(&report), vec![tag]);
        let event = select_spec_event(1, 250, 0).expect("row");
        round_trips(&event_notification(READER, 1, event).expect("built"));
        let alarm = Alarm {
            alarm_id: 1,
            alarm_code: 1,
            reason: 0,
            level: 1,
            seconds: 100,
            description: "过温".into(),
        };
        round_trips(&alarm_report(READER, &alarm).expect("built"));
        round_trips(&alarm_restore(READER, 1, 0, 200).expect("built"));
        let report_header = Header::new(READER.device_sn, 581, 3);
        let ack = cached_report_ack(&report_header, 12).expect("paired");
        assert_eq!(ack.field("SequenceID"), Some(&Value::U16(12)));
    }
}
