//! The GB/T 37987 code table, as data: every message and parameter code with its name, 2019
//! identifier, provenance, positional fields, allowed sub-parameters and (for requests) the response.
//!
//! Owns: the only place where a numeric code is written. Rows refer to each other by name, so
//! correcting a code (e.g. M_ConnectionAck's real Appendix B code) is an edit of that row's `code`.
//! Message and parameter codes are separate number spaces (300 is both Keepalive and Status).
//! Must not contain wire logic or dialect rules (those are `codec.rs` and `dialect.rs`).

/// Positional field type (facts sheet §2.3). Flags are sub-byte fields packed MSB-first and padded
/// with reserved bits to 1 (`Flags8`) or 2 (`Flags16`) bytes; the names list the bits from the MSB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Unsigned 8-bit.
    U8,
    /// Unsigned 16-bit.
    U16,
    /// Unsigned 32-bit.
    U32,
    /// Unsigned 64-bit.
    U64,
    /// Signed 8-bit.
    S8,
    /// Signed 16-bit.
    S16,
    /// Signed 32-bit.
    S32,
    /// Signed 64-bit.
    S64,
    /// Byte array with an element-count prefix.
    U8v,
    /// u16 array with an element-count prefix.
    U16v,
    /// u32 array with an element-count prefix.
    U32v,
    /// UTF-8 string with a byte-length prefix.
    Utf8v,
    /// Bit array with a bit- or byte-count prefix (per dialect).
    U1v,
    /// One byte of named flag bits (MSB first), the rest reserved.
    Flags8(&'static [&'static str]),
    /// Two bytes of named flag bits (MSB first), the rest reserved.
    Flags16(&'static [&'static str]),
}

/// One positional field of a message or parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDef {
    /// Field name (D_* identifier or the implementations' name).
    pub name: &'static str,
    /// Wire type.
    pub ty: FieldType,
}

/// How many times a sub-parameter may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    /// Exactly one.
    One,
    /// Zero or one.
    Optional,
    /// Zero or more.
    Many,
    /// One or more.
    AtLeastOne,
}

impl Cardinality {
    /// Whether more than one occurrence is allowed (rendered as a JSON array).
    pub fn is_repeated(self) -> bool {
        matches!(self, Cardinality::Many | Cardinality::AtLeastOne)
    }
}

/// A sub-parameter slot, naming the parameter row (never its code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamRef {
    /// Name of the parameter row.
    pub name: &'static str,
    /// Allowed occurrences.
    pub card: Cardinality,
}

/// Where a row's code and layout come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// The 2019 text names this item; the code is the observed one (Appendix B/D not public).
    StdNamed(&'static str),
    /// Code and layout observed in implementations (the listed sources of the facts sheet).
    Observed(&'static str),
    /// Code, name or layout partly assumed; the text says what.
    Provisional(&'static str),
}

/// Who sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The reader sends it to the edge (the "client" of the facts sheet).
    ReaderToEdge,
    /// The edge sends it to the reader.
    EdgeToReader,
    /// Not confirmed by any source (722/723).
    Unconfirmed,
}

/// A message row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageDef {
    /// Message code (header, 16 bits).
    pub code: u16,
    /// Draft / implementation name (JSON `msg`).
    pub name: &'static str,
    /// 2019 identifier (`M_…`) when the text has one.
    pub ident: Option<&'static str>,
    /// Other names accepted on input (e.g. `M_ConnectionAck`).
    pub aliases: &'static [&'static str],
    /// Source of the row.
    pub provenance: Provenance,
    /// Sender.
    pub direction: Direction,
    /// Positional fields, in wire order, before any parameter.
    pub fields: &'static [FieldDef],
    /// Sub-parameters, in encoding order.
    pub params: &'static [ParamRef],
    /// Name of the response message, for requests.
    pub response: Option<&'static str>,
}

/// A parameter row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamDef {
    /// Parameter code (TLV type, 16 bits).
    pub code: u16,
    /// Draft / implementation name (JSON key).
    pub name: &'static str,
    /// 2019 identifier (`P_…`) when the text has one.
    pub ident: Option<&'static str>,
    /// Other names accepted on input (e.g. `P_ConnectionAck`).
    pub aliases: &'static [&'static str],
    /// Source of the row.
    pub provenance: Provenance,
    /// Positional fields, in wire order, before any sub-parameter.
    pub fields: &'static [FieldDef],
    /// Sub-parameters, in encoding order.
    pub params: &'static [ParamRef],
}

impl ParamDef {
    /// The single integer field of a one-value parameter (e.g. AntennaID 504), whose width is
    /// taken from the TLV length when decoding.
    pub fn sole_integer(&self) -> Option<FieldType> {
        match (self.fields, self.params) {
            ([only], []) if is_integer(only.ty) => Some(only.ty),
            _ => None,
        }
    }

    /// Whether the parameter is a single field and nothing else (rendered as a bare JSON value).
    pub fn is_single_value(&self) -> bool {
        match (self.fields, self.params) {
            ([only], []) => !matches!(only.ty, FieldType::Flags8(_) | FieldType::Flags16(_)),
            _ => false,
        }
    }

    /// Whether `name` is this row's name, identifier or alias.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.ident == Some(name) || self.aliases.contains(&name)
    }
}

impl MessageDef {
    /// Whether `name` is this row's name, identifier or alias.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.ident == Some(name) || self.aliases.contains(&name)
    }

    /// The response row, for requests.
    pub fn response_def(&self) -> Option<&'static MessageDef> {
        self.response.and_then(message_by_name)
    }
}

/// Whether a field type is a plain integer.
pub fn is_integer(ty: FieldType) -> bool {
    matches!(
        ty,
        FieldType::U8
            | FieldType::U16
            | FieldType::U32
            | FieldType::U64
            | FieldType::S8
            | FieldType::S16
            | FieldType::S32
            | FieldType::S64
    )
}

/// The message row for a code.
pub fn message_by_code(code: u16) -> Option<&'static MessageDef> {
    MESSAGES.iter().find(|m| m.code == code)
}

/// The message row for a name, 2019 identifier or alias.
pub fn message_by_name(name: &str) -> Option<&'static MessageDef> {
    MESSAGES.iter().find(|m| m.answers_to(name))
}

/// The parameter row for a code.
pub fn param_by_code(code: u16) -> Option<&'static ParamDef> {
    PARAMETERS.iter().find(|p| p.code == code)
}

/// The parameter row for a name, 2019 identifier or alias.
pub fn param_by_name(name: &str) -> Option<&'static ParamDef> {
    PARAMETERS.iter().find(|p| p.answers_to(name))
}

const fn f(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef { name, ty }
}
const fn one(name: &'static str) -> ParamRef {
    ParamRef {
        name,
        card: Cardinality::One,
    }
}
const fn opt(name: &'static str) -> ParamRef {
    ParamRef {
        name,
        card: Cardinality::Optional,
    }
}
const fn many(name: &'static str) -> ParamRef {
    ParamRef {
        name,
        card: Cardinality::Many,
    }
}
const fn some(name: &'static str) -> ParamRef {
    ParamRef {
        name,
        card: Cardinality::AtLeastOne,
    }
}

use Direction::{EdgeToReader as E2R, ReaderToEdge as R2E, Unconfirmed};
use FieldType::*;
use Provenance::{Observed, Provisional, StdNamed};

/// Base message row: filled in by each entry with struct-update syntax.
const M: MessageDef = MessageDef {
    code: 0,
    name: "",
    ident: None,
    aliases: &[],
    provenance: Observed("S1"),
    direction: Unconfirmed,
    fields: &[],
    params: &[],
    response: None,
};

/// Base parameter row: filled in by each entry with struct-update syntax.
const P: ParamDef = ParamDef {
    code: 0,
    name: "",
    ident: None,
    aliases: &[],
    provenance: Observed("S1"),
    fields: &[],
    params: &[],
};

const STATUS_ONLY: &[ParamRef] = &[one("Status")];
const SELECT_SPEC_ID: &[FieldDef] = &[f("SelectSpecID", U32)];
const ACCESS_SPEC_ID: &[FieldDef] = &[f("AccessSpecID", U32)];
const VER_TYPE: &[FieldDef] = &[f("VerType", U8)];
const LOG_UPLOAD_REQUEST: &[FieldDef] = &[f("UploadType", U8), f("UploadCount", U32), f("Milliseconds", U32)];
const LOG_RANGE: &[ParamRef] = &[opt("StartLogTimestamp"), opt("EndLogTimestamp")];
const LOG_SEGMENT: &[FieldDef] = &[f("SequenceId", U16), f("IsLastedFrame", U8)];
const LOG_SEQUENCE: &[FieldDef] = &[f("SequenceId", U16)];
const LOG_COUNT: &[FieldDef] = &[f("LogCount", U32)];
const TAG_DATA_BYTES: &[FieldDef] = &[f("Data", U8v)];
const TIMESTAMP_US: &[FieldDef] = &[f("Microseconds", U64)];
const INDEXED_RATE: &[FieldDef] = &[f("Index", U16), f("DataRate", U32)];
const WRITE_RESULT: &[FieldDef] = &[f("Result", U8), f("ResultDescription", U8v), f("OpSpecID", U16)];
const DEVICE_CONFIG_GET: &[ParamRef] = &[
    one("Status"),
    opt("Identification"),
    opt("DeviceEventNotificationSpec"),
    opt("AlarmConfiguration"),
    many("AntennaProperties"),
    many("AntennaConfiguration"),
    opt("ModuleDepth"),
    opt("SelectReportSpec"),
    opt("AccessReportSpec"),
    opt("CommunicationConfiguration"),
    opt("LocationConfiguration"),
    opt("SecurityModuleConfiguration"),
];
const DEVICE_CONFIG_SET: &[ParamRef] = &[
    opt("Identification"),
    opt("DeviceEventNotificationSpec"),
    opt("AlarmConfiguration"),
    many("AntennaConfiguration"),
    opt("ModuleDepth"),
    opt("SelectReportSpec"),
    opt("AccessReportSpec"),
    opt("CommunicationConfiguration"),
    opt("LocationConfiguration"),
    opt("SecurityModuleConfiguration"),
];
const OP_SPECS: &[ParamRef] = &[
    many("HbReadSpec"),
    many("ClientRequestSpec"),
    many("HbWriteSpec"),
    many("HbPrivateWriteSpec"),
];

/// Every known message (facts sheet §3). Codes observed in S1 (TYPENUMs), provisional for 2019.
/// One row per code; kept unformatted so each row reads as one table line.
#[rustfmt::skip]
pub const MESSAGES: &[MessageDef] = &[
    MessageDef { code: 300, name: "Keepalive", ident: Some("M_Keepalive"), provenance: StdNamed("S1, S2"), direction: R2E, response: Some("KeepaliveAck"), ..M },
    MessageDef { code: 301, name: "KeepaliveAck", ident: Some("M_KeepaliveAck"), provenance: StdNamed("S1, S2"), direction: E2R, ..M },
    MessageDef {
        code: 302,
        name: "DeviceEventNotification",
        aliases: &["M_ConnectionAck"],
        provenance: Provisional("S1, S2 code; M_ConnectionAck carried here until Appendix B is known"),
        direction: R2E,
        params: &[
            opt("UTCTimestamp"),
            opt("GPIEvent"),
            opt("SelectSpecEvent"),
            opt("AntennaSpecEvent"),
            opt("AntennaStatusEvent"),
            opt("ConnectionAttemptEvent"),
        ],
        ..M
    },
    MessageDef { code: 303, name: "Disconnect", ident: Some("M_Disconnect"), provenance: StdNamed("S1, S2, S3"), direction: E2R, response: Some("DisconnectAck"), ..M },
    MessageDef { code: 304, name: "DisconnectAck", ident: Some("M_DisconnectAck"), provenance: StdNamed("S1, S2, S3"), direction: R2E, ..M },
    MessageDef { code: 305, name: "ErrorAck", direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 350, name: "GetDeviceCapabilities", direction: E2R, fields: &[f("RequestedData", U8)], response: Some("GetDeviceCapabilitiesAck"), ..M },
    MessageDef {
        code: 351,
        name: "GetDeviceCapabilitiesAck",
        direction: R2E,
        params: &[
            one("Status"),
            opt("GenaralCapabilities"),
            opt("CommunicationCapabilities"),
            opt("SpecCapabilities"),
            opt("RfCapabilities"),
            opt("AirProtocolCapabilities"),
        ],
        ..M
    },
    MessageDef { code: 400, name: "AddSelectSpec", ident: Some("M_AddSelectSpec"), provenance: StdNamed("S1, S2"), direction: E2R, params: &[one("SelectSpec")], response: Some("AddSelectSpecAck"), ..M },
    MessageDef { code: 401, name: "AddSelectSpecAck", ident: Some("M_AddSelectSpecAck"), provenance: StdNamed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 402, name: "DeleteSelectSpec", ident: Some("M_DeleteSelectSpec"), provenance: StdNamed("S1, S2"), direction: E2R, fields: SELECT_SPEC_ID, response: Some("DeleteSelectSpecAck"), ..M },
    MessageDef { code: 403, name: "DeleteSelectSpecAck", ident: Some("M_DeleteSelectSpecAck"), provenance: StdNamed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 404, name: "StartSelectSpec", ident: Some("M_StartSelectSpec"), provenance: StdNamed("S1, S2"), direction: E2R, fields: SELECT_SPEC_ID, response: Some("StartSelectSpecAck"), ..M },
    MessageDef { code: 405, name: "StartSelectSpecAck", ident: Some("M_StartSelectSpecAck"), provenance: StdNamed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 406, name: "StopSelectSpec", ident: Some("M_StopSelectSpec"), provenance: StdNamed("S1, S2"), direction: E2R, fields: SELECT_SPEC_ID, response: Some("StopSelectSpecAck"), ..M },
    MessageDef { code: 407, name: "StopSelectSpecAck", ident: Some("M_StopSelectSpecAck"), provenance: StdNamed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 408, name: "EnableSelectSpec", ident: Some("M_EnableSelectSpec"), provenance: StdNamed("S1, S2"), direction: E2R, fields: SELECT_SPEC_ID, response: Some("EnableSelectSpecAck"), ..M },
    MessageDef { code: 409, name: "EnableSelectSpecAck", ident: Some("M_EnableSelectSpecAck"), provenance: StdNamed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 410, name: "DisableSelectSpec", ident: Some("M_DisableSelectSpec"), provenance: StdNamed("S1, S2"), direction: E2R, fields: SELECT_SPEC_ID, response: Some("DisableSelectSpecAck"), ..M },
    MessageDef { code: 411, name: "DisableSelectSpecAck", ident: Some("M_DisableSelectSpecAck"), provenance: StdNamed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 412, name: "GetSelectSpec", provenance: Observed("S1, S2"), direction: E2R, response: Some("GetSelectSpecAck"), ..M },
    MessageDef { code: 413, name: "GetSelectSpecAck", provenance: Observed("S1, S2"), direction: R2E, params: &[one("Status"), many("SelectSpec")], ..M },
    MessageDef { code: 450, name: "AddAccessSpec", provenance: Observed("S1, S2"), direction: E2R, params: &[one("AccessSpec")], response: Some("AddAccessSpecAck"), ..M },
    MessageDef { code: 451, name: "AddAccessSpecAck", provenance: Observed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 452, name: "DeleteAccessSpec", provenance: Observed("S1, S2"), direction: E2R, fields: ACCESS_SPEC_ID, response: Some("DeleteAccessSpecAck"), ..M },
    MessageDef { code: 453, name: "DeleteAccessSpecAck", provenance: Observed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 454, name: "EnableAccessSpec", direction: E2R, fields: ACCESS_SPEC_ID, response: Some("EnableAccessSpecAck"), ..M },
    MessageDef { code: 455, name: "EnableAccessSpecAck", direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 456, name: "DisableAccessSpec", direction: E2R, fields: ACCESS_SPEC_ID, response: Some("DisableAccessSpecAck"), ..M },
    MessageDef { code: 457, name: "DisableAccessSpecAck", direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 458, name: "GetAccessSpec", direction: E2R, response: Some("GetAccessSpecAck"), ..M },
    MessageDef { code: 459, name: "GetAccessSpecAck", direction: R2E, params: &[one("Status"), many("AccessSpec")], ..M },
    MessageDef { code: 500, name: "TagSelectAccessReport", provenance: Observed("S1, S2; real capture"), direction: R2E, params: &[many("TagReportData")], ..M },
    MessageDef { code: 580, name: "EnableCachedEventsAndReport", direction: E2R, ..M },
    MessageDef {
        code: 581,
        name: "CachedSelectAccessReport",
        direction: R2E,
        fields: &[f("SequenceID", U16), f("IsLastedFrame", U8)],
        params: &[one("Status"), many("TagReportData")],
        response: Some("CachedSelectAccessReportAck"),
        ..M
    },
    MessageDef { code: 582, name: "CachedSelectAccessReportAck", direction: E2R, fields: &[f("SequenceID", U16)], ..M },
    MessageDef { code: 590, name: "ClientRequestOp", direction: R2E, params: &[one("TagReportData")], response: Some("ClientRequestOpAck"), ..M },
    MessageDef { code: 591, name: "ClientRequestOpAck", direction: E2R, params: &[one("ClientRequestAck")], ..M },
    MessageDef {
        code: 600,
        name: "DeviceBinding",
        provenance: Observed("S1, S3"),
        direction: R2E,
        fields: &[f("BindingType", U8), f("BindingData", U8v)],
        response: Some("DeviceBindingAck"),
        ..M
    },
    MessageDef { code: 601, name: "DeviceBindingAck", provenance: Observed("S1, S3"), direction: E2R, fields: &[f("BindingResultData", U8v)], params: STATUS_ONLY, ..M },
    MessageDef {
        code: 602,
        name: "DeviceCertificateConfig",
        provenance: Observed("S1, S3"),
        direction: E2R,
        fields: &[f("CertificateData", U8v), f("UserData", U8v)],
        response: Some("DeviceCertificateConfigAck"),
        ..M
    },
    MessageDef { code: 603, name: "DeviceCertificateConfigAck", provenance: Observed("S1, S3"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 604, name: "DeviceBindingResultNotification", provenance: Observed("S1, S3"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 620, name: "UploadTagLog", direction: E2R, fields: LOG_UPLOAD_REQUEST, params: LOG_RANGE, response: Some("UploadTagLogAck"), ..M },
    MessageDef { code: 621, name: "UploadTagLogAck", direction: R2E, fields: LOG_SEGMENT, params: &[one("Status"), many("TagLog")], ..M },
    MessageDef { code: 622, name: "ClearTagLog", direction: E2R, response: Some("ClearTagLogAck"), ..M },
    MessageDef { code: 623, name: "ClearTagLogAck", direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 624, name: "TagLogCount", direction: E2R, response: Some("TagLogCountAck"), ..M },
    MessageDef { code: 625, name: "TagLogCountAck", direction: R2E, fields: LOG_COUNT, params: STATUS_ONLY, ..M },
    MessageDef { code: 626, name: "UploadTagLogConfirm", direction: E2R, fields: LOG_SEQUENCE, ..M },
    MessageDef { code: 640, name: "UploadDeviceLog", direction: E2R, fields: LOG_UPLOAD_REQUEST, params: LOG_RANGE, response: Some("UploadDeviceLogAck"), ..M },
    MessageDef { code: 641, name: "UploadDeviceLogAck", direction: R2E, fields: LOG_SEGMENT, params: &[one("Status"), many("DeviceLog")], ..M },
    MessageDef { code: 642, name: "ClearDeviceLog", direction: E2R, response: Some("ClearDeviceLogAck"), ..M },
    MessageDef { code: 643, name: "ClearDeviceLogAck", direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 644, name: "DeviceLogCount", direction: E2R, response: Some("DeviceLogCountAck"), ..M },
    MessageDef { code: 645, name: "DeviceLogCountAck", direction: R2E, fields: LOG_COUNT, params: STATUS_ONLY, ..M },
    MessageDef { code: 646, name: "UploadDeviceLogConfirm", direction: E2R, fields: LOG_SEQUENCE, ..M },
    MessageDef {
        code: 660,
        name: "GetDeviceConfig",
        provenance: Observed("S1, S2"),
        direction: E2R,
        fields: &[f("RequestedData", U8), f("AntennaID", U8)],
        response: Some("GetDeviceConfigAck"),
        ..M
    },
    MessageDef { code: 661, name: "GetDeviceConfigAck", provenance: Observed("S1, S2"), direction: R2E, params: DEVICE_CONFIG_GET, ..M },
    MessageDef {
        code: 662,
        name: "SetDeviceConfig",
        provenance: Observed("S1, S2"),
        direction: E2R,
        fields: &[f("Flags", Flags8(&["ResetToFactoryDefault"]))],
        params: DEVICE_CONFIG_SET,
        response: Some("SetDeviceConfigAck"),
        ..M
    },
    MessageDef { code: 663, name: "SetDeviceConfigAck", provenance: Observed("S1, S2"), direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 700, name: "GetVersion", provenance: Observed("S1, S2"), direction: E2R, fields: VER_TYPE, response: Some("GetVersionAck"), ..M },
    MessageDef { code: 701, name: "GetVersionAck", provenance: Observed("S1, S2"), direction: R2E, params: &[one("Status"), many("VersionInfo")], ..M },
    MessageDef { code: 702, name: "SetVersion", direction: E2R, fields: VER_TYPE, params: &[one("VersionDownload")], response: Some("SetVersionAck"), ..M },
    MessageDef { code: 703, name: "SetVersionAck", direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 704, name: "ActiveVersion", direction: E2R, fields: VER_TYPE, response: Some("ActiveVersionAck"), ..M },
    MessageDef { code: 705, name: "ActiveVersionAck", direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 706, name: "UnActiveVersion", direction: E2R, fields: VER_TYPE, response: Some("UnActiveVersionAck"), ..M },
    MessageDef { code: 707, name: "UnActiveVersionAck", direction: R2E, params: STATUS_ONLY, ..M },
    MessageDef { code: 720, name: "AlarmReport", direction: R2E, fields: &[f("AlarmID", U32)], params: &[one("AlarmReportInfo")], ..M },
    MessageDef { code: 721, name: "AlarmRestore", direction: R2E, fields: &[f("AlarmID", U32)], params: &[one("AlarmRestoreInfo")], ..M },
    MessageDef { code: 722, name: "AlarmDelete", direction: Unconfirmed, fields: &[f("AlarmID", U32)], ..M },
    MessageDef { code: 723, name: "AlarmSync", direction: Unconfirmed, params: &[one("AlarmSyncInfo")], ..M },
    MessageDef { code: 740, name: "DiagnosticTest", provenance: Observed("S1, S2"), direction: E2R, params: &[some("DiagnosticTestItem")], response: Some("DiagnosticTestAck"), ..M },
    MessageDef {
        code: 741,
        name: "DiagnosticTestAck",
        provenance: Observed("S1, S2"),
        direction: R2E,
        params: &[one("Status"), many("DiagnosticTestResultItem")],
        ..M
    },
    MessageDef { code: 760, name: "ResetDevice", provenance: Observed("S1, S3"), direction: E2R, response: Some("ResetDeviceAck"), ..M },
    MessageDef { code: 761, name: "ResetDeviceAck", provenance: Observed("S1, S3"), direction: R2E, params: STATUS_ONLY, ..M },
];

/// Every known parameter (facts sheet §4). Codes observed in S1 (TYPENUMs), provisional for 2019.
/// One row per code; kept unformatted so each row reads as one table line.
#[rustfmt::skip]
pub const PARAMETERS: &[ParamDef] = &[
    // General (300–306)
    ParamDef { code: 300, name: "Status", ident: Some("P_Status"), provenance: StdNamed("S1, S2"), fields: &[f("StatusCode", U32), f("ErrorDescription", Utf8v)], ..P },
    ParamDef { code: 301, name: "UTCTimestamp", fields: TIMESTAMP_US, ..P },
    ParamDef { code: 302, name: "GPIEvent", fields: &[f("Port", U8), f("Flags", Flags8(&["Event"]))], ..P },
    ParamDef {
        code: 303,
        name: "SelectSpecEvent",
        fields: &[f("EventType", U8), f("SelectSpecID", U32), f("PreemptingSelectSpecID", U32)],
        ..P
    },
    ParamDef { code: 304, name: "AntennaSpecEvent", fields: &[f("EventType", U8), f("SelectSpecID", U32), f("SpecIndex", U16)], ..P },
    ParamDef { code: 305, name: "AntennaStatusEvent", fields: &[f("EventType", U8), f("AntennaID", U8)], ..P },
    ParamDef {
        code: 306,
        name: "ConnectionAttemptEvent",
        aliases: &["P_ConnectionAck"],
        provenance: Provisional("S1, S2, S3 code; P_ConnectionAck carried here until Appendix D is known"),
        fields: &[f("Status", U16)],
        ..P
    },
    // Capabilities (350–368)
    ParamDef {
        code: 350,
        name: "GenaralCapabilities",
        fields: &[
            f("ManufacturerName", Utf8v),
            f("DeviceSN", U8v),
            f("ModelType", U16),
            f("SpecificationType", U16),
            f("MaxAntennas", U8),
            f("Flags", Flags8(&["HasUTCClock", "HasLocation", "IsDeviceBinded"])),
        ],
        params: &[one("GPIOCapabilities")],
        ..P
    },
    ParamDef { code: 351, name: "GPIOCapabilities", fields: &[f("NumGPIs", U8), f("NumGPOs", U8)], ..P },
    ParamDef {
        code: 352,
        name: "CommunicationCapabilities",
        fields: &[
            f(
                "Flags",
                Flags8(&["SupportEthernet", "SupportWIFI", "SupportMobile", "SupportUSB", "SupportHttpLink", "SupportIPv6", "SupportSSL"]),
            ),
            f("TcpLinkNum", U8),
        ],
        params: &[opt("SupportRS232"), opt("SupportRS485")],
        ..P
    },
    ParamDef { code: 353, name: "SupportRS232", fields: &[f("PortNum", U8)], params: &[many("SerialAttribute")], ..P },
    ParamDef {
        code: 354,
        name: "SerialAttribute",
        fields: &[
            f("Index", U16),
            f("BaudRate", U32),
            f("DataBit", U8),
            f("StopBit", U8),
            f("Parity", U8),
            f("FlowControl", U8),
        ],
        ..P
    },
    ParamDef { code: 355, name: "SupportRS485", fields: &[f("PortNum", U8)], params: &[many("SerialAttribute")], ..P },
    ParamDef {
        code: 356,
        name: "SpecCapabilities",
        fields: &[
            f("Flags", Flags8(&["SupportsClientRequestOpSpec", "SupportsEventAndReportHolding"])),
            f("ClientRequestOpSpecTimeout", U16),
            f("MaxPriority", U8),
            f("MaxSelectSpecs", U8),
            f("MaxAntennaSpecsPerSelectSpec", U8),
            f("MaxRfSpecsPerAntennaSpec", U8),
            f("MaxAccessSpecs", U8),
            f("MaxOpSpecsPerAccessSpec", U8),
        ],
        ..P
    },
    ParamDef {
        code: 357,
        name: "RfCapabilities",
        fields: &[f("CountryCode", U16), f("CommunicationsStandard", U16)],
        params: &[
            many("TransmitPowerLevel"),
            opt("FrequencyInformation"),
            many("ForDataRate"),
            many("RevDataRate"),
            many("ForModulation"),
            many("RevDataEncoding"),
            many("ModuleDepthTable"),
        ],
        ..P
    },
    ParamDef { code: 358, name: "TransmitPowerLevel", fields: &[f("Index", U16), f("Power", S16)], ..P },
    ParamDef { code: 359, name: "FrequencyInformation", fields: &[f("Flags", Flags8(&["Hopping"]))], params: &[many("Frequency")], ..P },
    ParamDef { code: 360, name: "Frequency", provenance: Provisional("S1 code and fields; name assumed"), fields: &[f("Index", U16), f("Frequency", U32)], ..P },
    ParamDef { code: 361, name: "ForDataRate", fields: INDEXED_RATE, ..P },
    ParamDef { code: 362, name: "RevDataRate", fields: INDEXED_RATE, ..P },
    ParamDef { code: 363, name: "ForModulation", fields: &[f("Index", U16), f("Modulation", U8)], ..P },
    ParamDef { code: 364, name: "RevDataEncoding", fields: &[f("Index", U16), f("Encoding", U8)], ..P },
    ParamDef {
        code: 365,
        name: "ModuleDepthTable",
        provenance: Provisional("S1 code; the sources call it ModuleDepth like 664, renamed to keep names unique"),
        fields: &[f("Index", U16), f("Depth", U16)],
        ..P
    },
    ParamDef { code: 366, name: "AirProtocolCapabilities", params: &[many("PerAntennaAirProtocol"), many("HbProtocolCapabilities")], ..P },
    ParamDef { code: 367, name: "PerAntennaAirProtocol", fields: &[f("AntennaID", U8), f("ProtocolIDs", U8v)], ..P },
    ParamDef { code: 368, name: "HbProtocolCapabilities", fields: &[f("Flags", Flags8(&["Query", "ReadData", "WriteData", "WriteKey"]))], ..P },
    // SelectSpec (400–411)
    ParamDef {
        code: 400,
        name: "SelectSpec",
        provenance: Observed("S1, S2"),
        fields: &[
            f("SelectSpecID", U32),
            f("Priority", U8),
            f("CurrentState", U8),
            f("Flags", Flags8(&["Persistence"])),
        ],
        params: &[
            one("SelectSpecStartTrigger"),
            one("SelectSpecStopTrigger"),
            some("AntennaSpec"),
            opt("SelectReportSpec"),
        ],
        ..P
    },
    ParamDef {
        code: 401,
        name: "SelectSpecStartTrigger",
        ident: Some("P_SelectSpecStartTrigger"),
        provenance: StdNamed("S1, S2"),
        fields: &[f("Type", U8)],
        params: &[opt("PeriodicTrigger"), opt("GPITrigger")],
        ..P
    },
    ParamDef { code: 402, name: "PeriodicTrigger", fields: &[f("Offset", U32), f("Period", U32)], params: &[opt("UTCTimestamp")], ..P },
    ParamDef { code: 403, name: "GPITrigger", fields: &[f("Port", U8), f("Flags", Flags8(&["Event"])), f("Timeout", U32)], ..P },
    ParamDef {
        code: 404,
        name: "SelectSpecStopTrigger",
        ident: Some("P_SelectSpecStopTrigger"),
        provenance: StdNamed("S1, S2"),
        fields: &[f("Type", U8), f("DurationValue", U32)],
        params: &[opt("GPITrigger")],
        ..P
    },
    ParamDef { code: 405, name: "AntennaSpec", fields: &[f("AntennaIDs", U8v)], params: &[one("AntennaSpecStopTrigger"), some("RfSpec")], ..P },
    ParamDef {
        code: 406,
        name: "AntennaSpecStopTrigger",
        fields: &[f("Type", U8), f("Duration", U32)],
        params: &[opt("GPITrigger"), opt("TagObservationTrigger")],
        ..P
    },
    ParamDef {
        code: 407,
        name: "TagObservationTrigger",
        fields: &[
            f("TriggerType", U8),
            f("NumberOfTags", U16),
            f("NumberOfAttempts", U16),
            f("TValue", U16),
            f("Timeout", U32),
        ],
        ..P
    },
    ParamDef {
        code: 408,
        name: "RfSpec",
        fields: &[f("RfSpecID", U16), f("ProtocolID", U8), f("SelectType", U8)],
        params: &[opt("MemoryBank"), many("AntennaConfiguration")],
        ..P
    },
    ParamDef {
        code: 409,
        name: "MemoryBank",
        fields: &[
            f("MemoryBankID", U8),
            f("ReadType", U8),
            f("Pointer", U16),
            f("Count", U16),
            f("BankType", U8),
        ],
        ..P
    },
    ParamDef {
        code: 410,
        name: "SelectReportSpec",
        ident: Some("P_SelectReportSpec"),
        provenance: StdNamed("S1, S2 (S2 adds EnableProtocolID and EnableTagSpeed in the 2017 reserved bits)"),
        fields: &[
            f("Trigger", U8),
            f("NValue", U16),
            f(
                "Flags",
                Flags16(&[
                    "EnableSelectSpecID",
                    "EnableSpecIndex",
                    "EnableRfSpecID",
                    "EnableAntennaID",
                    "EnablePeakRSSI",
                    "EnableFirstSeenTimestamp",
                    "EnableLastSeenTimestamp",
                    "EnableTagSeenCount",
                    "EnableAccessSpecID",
                    "EnableProtocolID",
                    "EnableTagSpeed",
                ]),
            ),
        ],
        params: &[opt("ReportDestination")],
        ..P
    },
    ParamDef {
        code: 411,
        name: "ReportDestination",
        ident: Some("P_ReportDestination"),
        provenance: StdNamed("S1, S2"),
        params: &[some("CommLinkConfiguration")],
        ..P
    },
    // AccessSpec (450–460)
    ParamDef {
        code: 450,
        name: "AccessSpec",
        fields: &[
            f("AccessSpecID", U32),
            f("SelectSpecID", U32),
            f("AntennaID", U8),
            f("ProtocolID", U8),
            f("Flags", Flags8(&["CurrentState", "Persistence"])),
        ],
        params: &[one("AccessSpecStopTrigger"), one("AccessCommand"), opt("AccessReportSpec")],
        ..P
    },
    ParamDef { code: 451, name: "AccessSpecStopTrigger", fields: &[f("Type", U8), f("OperationCountValue", U16)], ..P },
    ParamDef {
        code: 452,
        name: "AccessCommand",
        params: &[
            one("HbMatchSpec"),
            many("HbReadSpec"),
            many("ClientRequestSpec"),
            many("HbWriteSpec"),
            many("HbPrivateWriteSpec"),
            opt("SecurityModuleSpec"),
        ],
        ..P
    },
    ParamDef { code: 453, name: "HbMatchSpec", params: &[some("HbTargetTag")], ..P },
    ParamDef {
        code: 454,
        name: "HbTargetTag",
        fields: &[
            f("MemoryType", U8),
            f("Flags", Flags8(&["MatchType"])),
            f("Pointer", U16),
            f("TagMask", U1v),
            f("TagData", U1v),
        ],
        ..P
    },
    ParamDef { code: 455, name: "HbReadSpec", fields: &[f("OpSpecID", U16)], params: &[one("MemoryBank")], ..P },
    ParamDef { code: 456, name: "ClientRequestSpec", fields: &[f("OpSpecID", U16)], ..P },
    ParamDef { code: 457, name: "AccessReportSpec", fields: &[f("Trigger", U8)], params: &[opt("ReportDestination")], ..P },
    ParamDef {
        code: 458,
        name: "HbWriteSpec",
        fields: &[f("OpSpecID", U16), f("MemoryBankID", U8), f("Pointer", U16), f("Data", U16v)],
        ..P
    },
    ParamDef { code: 459, name: "HbPrivateWriteSpec", fields: &[f("OpSpecID", U16), f("WriteType", U8), f("Data", U16v)], ..P },
    ParamDef { code: 460, name: "SecurityModuleSpec", params: &[opt("ReadMode")], ..P },
    // Reports (500–517)
    ParamDef {
        code: 500,
        name: "TagReportData",
        provenance: Observed("S1, S2; real capture"),
        fields: &[f("TID", U8v)],
        params: &[
            opt("SelectSpecID"),
            opt("SpecIndex"),
            opt("RfSpecID"),
            opt("AntennaID"),
            opt("PeakRSSI"),
            opt("FirstSeen"),
            opt("LastSeen"),
            opt("TagSeenCount"),
            opt("AccessSpecID"),
            opt("GenaralSelectSpecResult"),
            opt("CustomizedSelectSpecResult"),
            many("HbReadSpecResult"),
            many("HbWriteSpecResult"),
            many("HbPrivateWriteSpecResult"),
            many("HbCustomizedReadSpecResult"),
            many("ClientRequestSpecResult"),
            opt("ProtocolID"),
            opt("TagSpeed"),
        ],
        ..P
    },
    ParamDef { code: 501, name: "SelectSpecID", fields: &[f("SelectSpecID", U32)], ..P },
    ParamDef { code: 502, name: "SpecIndex", fields: &[f("SpecIndex", U16)], ..P },
    ParamDef { code: 503, name: "RfSpecID", fields: &[f("RfSpecID", U16)], ..P },
    ParamDef { code: 504, name: "AntennaID", fields: &[f("AntennaID", U8)], ..P },
    ParamDef { code: 505, name: "PeakRSSI", fields: &[f("PeakRSSI", S8)], ..P },
    ParamDef { code: 506, name: "FirstSeen", aliases: &["FirstSeenTimestampUTC"], fields: TIMESTAMP_US, ..P },
    ParamDef { code: 507, name: "LastSeen", aliases: &["LastSeenTimestampUTC"], fields: TIMESTAMP_US, ..P },
    ParamDef { code: 508, name: "TagSeenCount", fields: &[f("TagSeenCount", U16)], ..P },
    ParamDef { code: 509, name: "AccessSpecID", fields: &[f("AccessSpecID", U32)], ..P },
    ParamDef { code: 510, name: "GenaralSelectSpecResult", fields: &[f("Result", U8), f("TagData", U16v)], ..P },
    ParamDef { code: 511, name: "HbReadSpecResult", fields: &[f("Result", U8), f("OpSpecID", U16), f("ReadData", U16v)], ..P },
    ParamDef { code: 512, name: "ClientRequestSpecResult", fields: &[f("OpSpecID", U16)], ..P },
    ParamDef { code: 513, name: "HbWriteSpecResult", fields: WRITE_RESULT, ..P },
    ParamDef { code: 514, name: "HbPrivateWriteSpecResult", fields: WRITE_RESULT, ..P },
    ParamDef {
        code: 515,
        name: "HbCustomizedReadSpecResult",
        fields: &[f("Result", U8), f("OpSpecID", U16)],
        params: &[one("ReadDataInfo")],
        ..P
    },
    ParamDef {
        code: 516,
        name: "ReadDataInfo",
        provenance: Observed("S1, S2; real capture"),
        params: &[
            opt("CID"),
            opt("FPDH"),
            opt("SYXZ"),
            opt("CCRQ"),
            opt("CLLX"),
            opt("GL"),
            opt("PL"),
            opt("HPZL"),
            opt("HPHMXH"),
            opt("JYYXQ"),
            opt("QZBFQ"),
            opt("ZKZL"),
            opt("CSYS"),
        ],
        ..P
    },
    ParamDef { code: 517, name: "CustomizedSelectSpecResult", fields: &[f("Result", U8)], params: &[one("ReadDataInfo")], ..P },
    ParamDef { code: 1518, name: "ProtocolID", provenance: Provisional("S2 (dual mode); width taken from the TLV"), fields: &[f("ProtocolID", U8)], ..P },
    ParamDef { code: 41479, name: "TagSpeed", provenance: Provisional("S2 (dual mode); type unknown, width taken from the TLV"), fields: &[f("TagSpeed", U16)], ..P },
    // Client request (590)
    ParamDef { code: 590, name: "ClientRequestAck", fields: &[f("AccessSpecID", U32), f("TID", U8v)], params: OP_SPECS, ..P },
    // Logs (620–622, 640)
    ParamDef {
        code: 620,
        name: "TagLog",
        fields: &[f("LogSequence", U64), f("TID", U8v), f("CardID", U8v), f("OpNum", U32)],
        params: &[one("UTCTimestamp")],
        ..P
    },
    ParamDef { code: 621, name: "StartLogTimestamp", fields: &[f("Timestamp", U64)], ..P },
    ParamDef { code: 622, name: "EndLogTimestamp", fields: &[f("Timestamp", U64)], ..P },
    ParamDef {
        code: 640,
        name: "DeviceLog",
        fields: &[f("LogSequence", U64), f("LogType", U8), f("LogCode", U32), f("LogDescInfo", Utf8v)],
        params: &[one("UTCTimestamp")],
        ..P
    },
    // Configuration (660–690)
    ParamDef { code: 660, name: "DeviceEventNotificationSpec", params: &[some("EventNotificationState")], ..P },
    ParamDef {
        code: 661,
        name: "EventNotificationState",
        provenance: Observed("S1 (EventType u8; S2 has u16)"),
        fields: &[f("EventType", U8), f("Flags", Flags8(&["State"]))],
        ..P
    },
    ParamDef {
        code: 662,
        name: "AntennaProperties",
        fields: &[f("Flags", Flags8(&["Connected"])), f("AntennaID", U8), f("Gain", S16)],
        ..P
    },
    ParamDef {
        code: 663,
        name: "AntennaConfiguration",
        fields: &[
            f("AntennaID", U8),
            f("TxPowerIndex", U16),
            f("FrequencyIndexes", U16v),
            f("ForDataRateIndex", U16),
            f("RevDataRateIndex", U16),
            f("ForModulationIndex", U16),
            f("RevDataEncodingIndex", U16),
        ],
        ..P
    },
    ParamDef { code: 664, name: "ModuleDepth", fields: &[f("Index", U16)], ..P },
    ParamDef { code: 665, name: "Identification", fields: &[f("DeviceName", Utf8v)], ..P },
    ParamDef { code: 666, name: "AlarmConfiguration", fields: &[f("AlarmMask", U8)], params: &[opt("AlarmThreshod")], ..P },
    ParamDef { code: 667, name: "AlarmThreshod", fields: &[f("TemperatureMax", S8), f("TemperatureMin", S8)], ..P },
    ParamDef {
        code: 668,
        name: "CommunicationConfiguration",
        params: &[
            many("CommLinkConfiguration"),
            many("EthernetIpv4"),
            many("EthernetIpv6"),
            many("SerialPortConfiguration"),
            opt("NTPConfiguration"),
        ],
        ..P
    },
    ParamDef {
        code: 669,
        name: "CommLinkConfiguration",
        fields: &[f("LinkType", U8)],
        params: &[
            one("KeepaliveSpec"),
            opt("TcpLinkConfiguration"),
            opt("SerialLinkConfiguration"),
            opt("HttpLinkConfiguration"),
        ],
        ..P
    },
    ParamDef { code: 670, name: "KeepaliveSpec", fields: &[f("Trigger", U8), f("PeriodicTriggerValue", U32)], ..P },
    ParamDef {
        code: 671,
        name: "TcpLinkConfiguration",
        fields: &[f("CommMode", U8), f("Flags", Flags8(&["IsSSL"]))],
        params: &[opt("ClientMode"), opt("ServerMode")],
        ..P
    },
    ParamDef { code: 672, name: "ClientMode", fields: &[f("Port", U16)], params: &[one("IPAddress")], ..P },
    ParamDef { code: 673, name: "IPAddress", fields: &[f("Version", U8), f("Address", U32v)], ..P },
    ParamDef { code: 674, name: "ServerMode", fields: &[f("Port", U16)], ..P },
    ParamDef {
        code: 675,
        name: "SerialLinkConfiguration",
        provenance: Provisional("S1 code and field names; u8 widths assumed"),
        fields: &[f("IfIndex", U8), f("SrcAddr", U8), f("DstAddr", U8)],
        ..P
    },
    ParamDef {
        code: 676,
        name: "HttpLinkConfiguration",
        provenance: Provisional("S1 code and ServerUrl; other fields unknown (kept as trailing bytes)"),
        fields: &[f("ServerUrl", Utf8v)],
        ..P
    },
    ParamDef {
        code: 677,
        name: "EthernetIpv4",
        fields: &[
            f("IfIndex", U8),
            f("IP", U32),
            f("Mask", U32),
            f("Gateway", U32),
            f("DNS", U32),
            f("Flags", Flags8(&["IsDHCP"])),
        ],
        ..P
    },
    ParamDef {
        code: 678,
        name: "EthernetIpv6",
        fields: &[
            f("IfIndex", U8),
            f("IP", U32v),
            f("Mask", U8),
            f("Gateway", U32v),
            f("DNS", U32v),
            f("Flags", Flags8(&["IsDHCP"])),
        ],
        ..P
    },
    ParamDef { code: 679, name: "NTPConfiguration", fields: &[f("Period", U32)], params: &[some("IPAddress")], ..P },
    ParamDef {
        code: 680,
        name: "SerialPortConfiguration",
        provenance: Provisional("S1 code and field names; IfIndex u8 and AttributeIndex u16 (as SerialAttribute.Index) assumed"),
        fields: &[f("IfIndex", U8), f("AttributeIndex", U16)],
        ..P
    },
    ParamDef { code: 681, name: "LocationConfiguration", fields: &[f("Type", U8)], params: &[opt("GpsLocation"), opt("BeidouLocation")], ..P },
    ParamDef {
        code: 682,
        name: "GpsLocation",
        provenance: Provisional("S1 code and fields; name assumed from Type 0 = GPS; units unknown"),
        fields: &[f("Longitude", S32), f("Latitude", S32), f("Altitude", S32)],
        ..P
    },
    ParamDef {
        code: 683,
        name: "BeidouLocation",
        provenance: Provisional("S1 code and fields; name assumed from Type 1 = BeiDou; units unknown"),
        fields: &[f("Longitude", S32), f("Latitude", S32), f("Altitude", S32)],
        ..P
    },
    ParamDef { code: 684, name: "SecurityModuleConfiguration", params: &[opt("GenaralConfigData"), opt("PrivateConfigData")], ..P },
    ParamDef { code: 685, name: "GenaralConfigData", params: &[opt("RTCTime"), opt("SecurityModuleSN"), opt("ReadMode")], ..P },
    ParamDef { code: 686, name: "RTCTime", fields: &[f("Seconds", U64)], ..P },
    ParamDef { code: 687, name: "SecurityModuleSN", fields: &[f("SN", U8v)], ..P },
    ParamDef { code: 688, name: "ReadMode", fields: &[f("Flags", Flags8(&["RepeatReadFlag"])), f("Timer", U32)], ..P },
    ParamDef { code: 690, name: "PrivateConfigData", fields: &[f("Data", U8v)], ..P },
    // Versions (700–701)
    ParamDef {
        code: 700,
        name: "VersionInfo",
        fields: &[
            f("VersionData", U8v),
            f("Flags", Flags8(&["UsedOrSpare", "SetUse", "HasRun", "CanRun"])),
            f("VerDescInfo", Utf8v),
        ],
        ..P
    },
    ParamDef {
        code: 701,
        name: "VersionDownload",
        fields: &[
            f("ServerType", U8),
            f("UserName", Utf8v),
            f("UserPass", Utf8v),
            f("VersionPath", Utf8v),
            f("ServerPort", U16),
        ],
        params: &[one("IPAddress")],
        ..P
    },
    // Alarms (720–722)
    ParamDef {
        code: 720,
        name: "AlarmReportInfo",
        fields: &[
            f("AlarmCode", U32),
            f("AlarmReason", U32),
            f("Level", U8),
            f("Seconds", U32),
            f("Description", Utf8v),
        ],
        ..P
    },
    ParamDef { code: 721, name: "AlarmRestoreInfo", fields: &[f("RestoreType", U8), f("Seconds", U32)], ..P },
    ParamDef {
        code: 722,
        name: "AlarmSyncInfo",
        fields: &[
            f("SyncSeq", U32),
            f("SyncType", U8),
            f("PackageNo", U16),
            f("PackageNum", U16),
            f("AlarmIDs", U32v),
        ],
        ..P
    },
    // Diagnostics (740–743)
    ParamDef {
        code: 740,
        name: "DiagnosticTestItem",
        provenance: Observed("S1, S2; test data after TestID is kept as trailing bytes"),
        fields: &[f("TestID", U16)],
        ..P
    },
    ParamDef {
        code: 741,
        name: "DiagnosticTestResultItem",
        fields: &[f("TestID", U16), f("ResultCode", U32)],
        params: &[many("AntennaConnectionResult"), many("AntennaVswrResult")],
        ..P
    },
    ParamDef {
        code: 742,
        name: "AntennaConnectionResult",
        provenance: Provisional("S1 code and fields; name assumed"),
        fields: &[f("AntennaID", U8), f("Flags", Flags8(&["Connected"]))],
        ..P
    },
    ParamDef {
        code: 743,
        name: "AntennaVswrResult",
        provenance: Provisional("S1 code and fields; VSWR x100 per S2; name assumed"),
        fields: &[f("AntennaID", U8), f("VSWR", U16)],
        ..P
    },
    // Tag data (1001–1013): each a u8v of the 行标 tag memory (S1, S2, real capture).
    ParamDef { code: 1001, name: "CID", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1002, name: "FPDH", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1003, name: "SYXZ", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1004, name: "CCRQ", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1005, name: "CLLX", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1006, name: "GL", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1007, name: "PL", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1008, name: "HPZL", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1009, name: "HPHMXH", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1010, name: "JYYXQ", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1011, name: "QZBFQ", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1012, name: "ZKZL", fields: TAG_DATA_BYTES, ..P },
    ParamDef { code: 1013, name: "CSYS", fields: TAG_DATA_BYTES, ..P },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn all_names_of_messages() -> Vec<&'static str> {
        MESSAGES
            .iter()
            .flat_map(|m| std::iter::once(m.name).chain(m.ident).chain(m.aliases.iter().copied()))
            .collect()
    }

    fn all_names_of_params() -> Vec<&'static str> {
        PARAMETERS
            .iter()
            .flat_map(|p| std::iter::once(p.name).chain(p.ident).chain(p.aliases.iter().copied()))
            .collect()
    }

    fn assert_unique<T: PartialEq + std::fmt::Debug>(items: &[T], what: &str) {
        for (i, item) in items.iter().enumerate() {
            assert!(!items[..i].contains(item), "duplicate {what}: {item:?}");
        }
    }

    #[test]
    fn codes_are_unique_within_each_number_space() {
        assert_unique(&MESSAGES.iter().map(|m| m.code).collect::<Vec<_>>(), "message code");
        assert_unique(&PARAMETERS.iter().map(|p| p.code).collect::<Vec<_>>(), "parameter code");
    }

    #[test]
    fn names_identifiers_and_aliases_are_unique_within_each_space() {
        assert_unique(&all_names_of_messages(), "message name");
        assert_unique(&all_names_of_params(), "parameter name");
    }

    #[test]
    fn every_sub_parameter_reference_names_a_row() {
        let refs = MESSAGES
            .iter()
            .flat_map(|m| m.params)
            .chain(PARAMETERS.iter().flat_map(|p| p.params));
        for r in refs {
            assert!(param_by_name(r.name).is_some(), "no parameter row {:?}", r.name);
        }
    }

    #[test]
    fn every_response_names_a_row_one_code_above_its_request() {
        for m in MESSAGES.iter().filter(|m| m.response.is_some()) {
            let response = m
                .response_def()
                .unwrap_or_else(|| panic!("no response row for {}", m.name));
            assert_eq!(response.code, m.code + 1, "{} -> {}", m.name, response.name);
        }
    }

    #[test]
    fn flag_fields_name_no_more_bits_than_they_hold() {
        let fields = MESSAGES
            .iter()
            .flat_map(|m| m.fields)
            .chain(PARAMETERS.iter().flat_map(|p| p.fields));
        for field in fields {
            match field.ty {
                FieldType::Flags8(names) => assert!(names.len() <= 8, "{}", field.name),
                FieldType::Flags16(names) => assert!(names.len() <= 16, "{}", field.name),
                _ => {}
            }
        }
    }

    /// Longest chain of nested parameter rows below `def` (None when a row contains itself).
    fn depth(def: &ParamDef, path: &mut Vec<u16>) -> Option<usize> {
        if path.contains(&def.code) {
            return None;
        }
        path.push(def.code);
        let mut deepest = 0;
        for r in def.params {
            let child = param_by_name(r.name)?;
            deepest = deepest.max(depth(child, path)? + 1);
        }
        path.pop();
        Some(deepest)
    }

    #[test]
    fn the_schema_has_no_cycles_and_nests_within_the_decoders_cap() {
        for p in PARAMETERS {
            let d = depth(p, &mut Vec::new()).unwrap_or_else(|| panic!("cycle through {}", p.name));
            assert!(
                d < crate::protocol::gbt37987::codec::MAX_NESTING,
                "{} nests {d} deep",
                p.name
            );
        }
    }

    #[test]
    fn the_2019_identifiers_of_the_facts_sheet_map_to_the_observed_codes() {
        let expected_messages = [
            ("M_Keepalive", 300),
            ("M_KeepaliveAck", 301),
            ("M_ConnectionAck", 302),
            ("M_Disconnect", 303),
            ("M_DisconnectAck", 304),
            ("M_AddSelectSpec", 400),
            ("M_DeleteSelectSpec", 402),
            ("M_StartSelectSpec", 404),
            ("M_StopSelectSpec", 406),
            ("M_EnableSelectSpec", 408),
            ("M_DisableSelectSpec", 410),
        ];
        for (ident, code) in expected_messages {
            assert_eq!(message_by_name(ident).map(|m| m.code), Some(code), "{ident}");
        }
        let expected_params = [
            ("P_Status", 300),
            ("P_ConnectionAck", 306),
            ("P_SelectSpecStartTrigger", 401),
            ("P_SelectSpecStopTrigger", 404),
            ("P_SelectReportSpec", 410),
            ("P_ReportDestination", 411),
        ];
        for (ident, code) in expected_params {
            assert_eq!(param_by_name(ident).map(|p| p.code), Some(code), "{ident}");
        }
    }
}
