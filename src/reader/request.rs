//! Reader commands as the cloud (`gbt37987/{reader_id}/dn`) and the web page send them, parsed
//! into what the hub or the reader's link executes.
//!
//! Two forms: a raw message `{"request_id","msg":"AddSelectSpec","body":{...}}` (codec JSON), or a
//! high-level action `{"request_id","action":"set_rules",...}`. A raw message changes the reader
//! only: the desired rules the edge keeps are changed by the rule actions, and the next
//! reconciliation (after any reconnect, or `reconcile`) brings the reader back to them.
//!
//! | action | members | done by |
//! |---|---|---|
//! | `set_rules` | `select_specs`, `access_specs` (codec JSON of SelectSpec / AccessSpec) | hub: store, then reconcile |
//! | `add_rule` | `select_spec` or `access_spec` | hub: store, then reconcile |
//! | `delete_rule` | `spec_id`, `kind` (`select` default, or `access`) | hub: store, then reconcile |
//! | `start_rule`, `stop_rule`, `enable_rule`, `disable_rule` | `spec_id` | hub: store the state, then the link |
//! | `get_rules`, `alarms` | — | hub (desired rules; active-alarm table) |
//! | `reconcile`, `alarm_sync`, `reset`, `time_sync` | — | link |
//! | `get_capabilities` | `requested_data` \[0\] | link |
//! | `get_config` / `set_config` | `requested_data` \[0\], `antenna_id` \[0\] / `body` (SetDeviceConfig body) | link |
//! | `firmware_query`, `firmware_activate`, `firmware_deactivate` | `ver_type` \[1\] | link |
//! | `firmware_download` | `ver_type` \[1\] and `file` (served by the edge over TFTP) or `url` (`tftp://` / `ftp://`, relayed) | link |
//! | `log_count`, `log_pull`, `log_clear` | `log` (`device` default, or `tag`); `count` for `log_pull` | link |
//! | `diagnostics` | `tests` \[\[2\]\] (2 = antenna VSWR) | link |

use serde_json::Value as Json;

use super::rules::{parse_rule, DesiredRules, RuleKind, SpecState};
use crate::protocol::gbt37987::builders::{LogKind, VersionCommand};
use crate::protocol::gbt37987::json::{body_from_json, command_from_json, param_from_json};
use crate::protocol::gbt37987::{Content, Dialect, Parameter};

/// Largest image the edge serves over TFTP (65535 blocks of 512 bytes, no block-number wrap).
pub const MAX_FIRMWARE_BYTES: u64 = 65_535 * 512;

/// A parsed reader command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Work for the reader's live link.
    Link(Request),
    /// Work for the hub (storage and local tables), possibly followed by link work.
    Hub(HubAction),
}

/// What a link executes.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Any message of the code table, answered with the reader's response.
    Raw { code: u16, body: Content },
    /// Query the reader's rules and make them the desired ones.
    Reconcile,
    /// Bring one select spec to a state (Enable/Start/Stop/Disable as needed).
    SpecState { spec_id: u32, state: SpecState },
    /// GetDeviceCapabilities.
    Capabilities { requested_data: u8 },
    /// GetDeviceConfig.
    GetConfig { requested_data: u8, antenna_id: u8 },
    /// SetDeviceConfig with this body.
    SetConfig { body: Content },
    /// GetVersion / ActiveVersion / UnActiveVersion.
    Version { command: VersionCommand, ver_type: u8 },
    /// SetVersion with a file the edge serves over TFTP (the link fills in its address).
    FirmwareServe { ver_type: u8, file: String },
    /// SetVersion with a ready VersionDownload parameter.
    FirmwareDownload { ver_type: u8, download: Parameter },
    /// TagLogCount / DeviceLogCount.
    LogCount(LogKind),
    /// Count (unless given), upload in segments, confirm each segment after its commit.
    LogPull { kind: LogKind, count: Option<u32> },
    /// ClearTagLog / ClearDeviceLog.
    LogClear(LogKind),
    /// Send the edge's active alarms; the reader re-reports or restores.
    AlarmSync,
    /// DiagnosticTest.
    Diagnostics { tests: Vec<u16> },
    /// ResetDevice.
    Reset,
    /// Set the reader's clock to the edge's.
    TimeSync,
}

impl Request {
    /// A short name for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Request::Raw { .. } => "raw",
            Request::Reconcile => "reconcile",
            Request::SpecState { .. } => "rule_state",
            Request::Capabilities { .. } => "get_capabilities",
            Request::GetConfig { .. } => "get_config",
            Request::SetConfig { .. } => "set_config",
            Request::Version { .. } => "firmware",
            Request::FirmwareServe { .. } | Request::FirmwareDownload { .. } => "firmware_download",
            Request::LogCount(_) => "log_count",
            Request::LogPull { .. } => "log_pull",
            Request::LogClear(_) => "log_clear",
            Request::AlarmSync => "alarm_sync",
            Request::Diagnostics { .. } => "diagnostics",
            Request::Reset => "reset",
            Request::TimeSync => "time_sync",
        }
    }
}

/// What the hub executes.
#[derive(Debug, Clone, PartialEq)]
pub enum HubAction {
    /// Replace the desired rules.
    SetRules(DesiredRules),
    /// Add or replace one rule.
    AddRule(RuleKind, u32, Parameter),
    /// Remove one rule.
    DeleteRule(RuleKind, u32),
    /// Change a select spec's desired state.
    RuleState { spec_id: u32, state: SpecState },
    /// The desired rules.
    GetRules,
    /// The active-alarm table.
    Alarms,
}

/// Parses a command document; `Err` is the rejection reason.
pub fn parse(document: &Json, dialect: Dialect) -> Result<Command, String> {
    if document.get("msg").is_some() {
        let command = command_from_json(document).map_err(|e| e.to_string())?;
        crate::protocol::gbt37987::Message {
            header: crate::protocol::gbt37987::Header::new([0; 8], command.code, 0),
            body: command.body.clone(),
        }
        .encode(dialect)
        .map_err(|e| format!("the body does not encode in {dialect}: {e}"))?;
        return Ok(Command::Link(Request::Raw {
            code: command.code,
            body: command.body,
        }));
    }
    let action = document
        .get("action")
        .and_then(Json::as_str)
        .ok_or("a command needs `msg` (a code-table message) or `action`")?;
    let u8_of = |key: &str, default: u8| -> Result<u8, String> {
        match document.get(key) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("`{key}` must be an integer 0-255")),
        }
    };
    let spec_id = || -> Result<u32, String> {
        document
            .get("spec_id")
            .and_then(Json::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n != 0)
            .ok_or_else(|| "`spec_id` must be a non-zero u32".to_string())
    };
    let log_kind = || -> Result<LogKind, String> {
        match document.get("log").and_then(Json::as_str).unwrap_or("device") {
            "device" => Ok(LogKind::Device),
            "tag" => Ok(LogKind::Tag),
            other => Err(format!("`log` must be `device` or `tag`, not `{other}`")),
        }
    };
    let link = |r: Request| Ok(Command::Link(r));
    let hub = |a: HubAction| Ok(Command::Hub(a));
    match action {
        "set_rules" => hub(HubAction::SetRules(
            DesiredRules::from_json(document, &[dialect]).map_err(|e| e.to_string())?,
        )),
        "add_rule" => {
            let (kind, item) = match (document.get("select_spec"), document.get("access_spec")) {
                (Some(s), None) => (RuleKind::Select, s),
                (None, Some(a)) => (RuleKind::Access, a),
                _ => return Err("`add_rule` needs exactly one of `select_spec` or `access_spec`".into()),
            };
            let (id, param) = parse_rule(kind, item, &[dialect]).map_err(|e| e.to_string())?;
            hub(HubAction::AddRule(kind, id, param))
        }
        "delete_rule" => {
            let kind = match document.get("kind").and_then(Json::as_str).unwrap_or("select") {
                "select" => RuleKind::Select,
                "access" => RuleKind::Access,
                other => return Err(format!("`kind` must be `select` or `access`, not `{other}`")),
            };
            hub(HubAction::DeleteRule(kind, spec_id()?))
        }
        "start_rule" | "stop_rule" | "enable_rule" | "disable_rule" => {
            let state = match action {
                "start_rule" => SpecState::Active,
                "disable_rule" => SpecState::Disabled,
                _ => SpecState::Inactive,
            };
            hub(HubAction::RuleState {
                spec_id: spec_id()?,
                state,
            })
        }
        "get_rules" => hub(HubAction::GetRules),
        "alarms" => hub(HubAction::Alarms),
        "reconcile" => link(Request::Reconcile),
        "alarm_sync" => link(Request::AlarmSync),
        "reset" => link(Request::Reset),
        "time_sync" => link(Request::TimeSync),
        "get_capabilities" => link(Request::Capabilities {
            requested_data: u8_of("requested_data", 0)?,
        }),
        "get_config" => link(Request::GetConfig {
            requested_data: u8_of("requested_data", 0)?,
            antenna_id: u8_of("antenna_id", 0)?,
        }),
        "set_config" => {
            let body = document.get("body").ok_or("`set_config` needs `body`")?;
            link(Request::SetConfig {
                body: body_from_json("SetDeviceConfig", body).map_err(|e| e.to_string())?,
            })
        }
        "firmware_query" | "firmware_activate" | "firmware_deactivate" => link(Request::Version {
            command: match action {
                "firmware_query" => VersionCommand::Query,
                "firmware_activate" => VersionCommand::Activate,
                _ => VersionCommand::Deactivate,
            },
            ver_type: u8_of("ver_type", 1)?,
        }),
        "firmware_download" => {
            let ver_type = u8_of("ver_type", 1)?;
            match (
                document.get("file").and_then(Json::as_str),
                document.get("url").and_then(Json::as_str),
            ) {
                (Some(file), None) => {
                    if file.is_empty() || file.contains('/') || file.contains('\\') || file.starts_with('.') {
                        return Err("`file` must be a plain file name in the edge's firmware directory".into());
                    }
                    link(Request::FirmwareServe {
                        ver_type,
                        file: file.to_string(),
                    })
                }
                (None, Some(url)) => link(Request::FirmwareDownload {
                    ver_type,
                    download: version_download_from_url(url)?,
                }),
                _ => Err("`firmware_download` needs exactly one of `file` or `url`".into()),
            }
        }
        "log_count" => link(Request::LogCount(log_kind()?)),
        "log_clear" => link(Request::LogClear(log_kind()?)),
        "log_pull" => {
            let count = match document.get("count") {
                None | Some(Json::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or("`count` must be a u32")?,
                ),
            };
            link(Request::LogPull {
                kind: log_kind()?,
                count,
            })
        }
        "diagnostics" => {
            let tests = match document.get("tests") {
                None | Some(Json::Null) => vec![2],
                Some(Json::Array(items)) if !items.is_empty() && items.len() <= 32 => items
                    .iter()
                    .map(|t| t.as_u64().and_then(|n| u16::try_from(n).ok()))
                    .collect::<Option<Vec<u16>>>()
                    .ok_or("`tests` must be test ids (u16)")?,
                Some(_) => return Err("`tests` must be a list of 1 to 32 test ids".into()),
            };
            link(Request::Diagnostics { tests })
        }
        other => Err(format!("unknown action `{other}`")),
    }
}

/// A VersionDownload parameter from `tftp://host[:port]/path` or `ftp://[user[:pass]@]host[:port]/path`
/// (the host must be an IPv4 address: the parameter carries an address, not a name).
pub fn version_download_from_url(url: &str) -> Result<Parameter, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("`url` needs a scheme (tftp:// or ftp://)")?;
    let (server_type, default_port) = match scheme {
        "ftp" => (0u8, 21u16),
        "tftp" => (1, 69),
        other => return Err(format!("`{other}://` is not supported: use tftp:// or ftp://")),
    };
    let (authority, path) = rest.split_once('/').ok_or("`url` needs a path")?;
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    let (user, pass) = match credentials {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (u, p),
            None => (c, ""),
        },
        None => ("", ""),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?),
        None => (host_port, default_port),
    };
    let ip: std::net::Ipv4Addr = host.parse().map_err(|_| format!("`{host}` is not an IPv4 address"))?;
    version_download(server_type, user, pass, path, ip, port)
}

/// The VersionDownload parameter (ServerType 0 FTP, 1 TFTP).
pub fn version_download(
    server_type: u8,
    user: &str,
    pass: &str,
    path: &str,
    ip: std::net::Ipv4Addr,
    port: u16,
) -> Result<Parameter, String> {
    param_from_json(
        "VersionDownload",
        &serde_json::json!({
            "ServerType": server_type,
            "UserName": user,
            "UserPass": pass,
            "VersionPath": path,
            "ServerPort": port,
            "IPAddress": {"Version": 0, "Address": [u32::from(ip)]},
        }),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_messages_and_actions_are_told_apart() {
        let raw = parse(
            &json!({"request_id": "1", "msg": "StartSelectSpec", "body": {"SelectSpecID": 7}}),
            Dialect::Hb2017,
        )
        .unwrap();
        assert!(matches!(raw, Command::Link(Request::Raw { code: 404, .. })));
        let start = parse(&json!({"action": "start_rule", "spec_id": 7}), Dialect::Hb2017).unwrap();
        assert_eq!(
            start,
            Command::Hub(HubAction::RuleState {
                spec_id: 7,
                state: SpecState::Active
            })
        );
        let pull = parse(
            &json!({"action": "log_pull", "log": "tag", "count": 5}),
            Dialect::Hb2017,
        )
        .unwrap();
        assert_eq!(
            pull,
            Command::Link(Request::LogPull {
                kind: LogKind::Tag,
                count: Some(5)
            })
        );
    }

    #[test]
    fn bad_commands_are_rejected_with_a_reason() {
        for bad in [
            json!({"request_id": "1"}),
            json!({"action": "dance"}),
            json!({"action": "start_rule"}),
            json!({"action": "start_rule", "spec_id": 0}),
            json!({"action": "log_pull", "log": "kernel"}),
            json!({"action": "firmware_download", "file": "../etc/passwd"}),
            json!({"action": "firmware_download", "url": "http://10.0.0.1/x"}),
            json!({"action": "firmware_download", "url": "ftp://example.com/x"}),
            json!({"msg": "NoSuchMessage"}),
            json!({"msg": "StartSelectSpec", "body": {"SelectSpecID": "seven"}}),
        ] {
            assert!(parse(&bad, Dialect::Gbt37987_2019).is_err(), "{bad}");
        }
    }

    #[test]
    fn firmware_urls_become_version_download_parameters() {
        let p = version_download_from_url("ftp://fw:secret@10.1.2.3:2121/images/r.bin").unwrap();
        assert_eq!(p.field("ServerType").and_then(|v| v.as_u64()), Some(0));
        assert_eq!(p.field("ServerPort").and_then(|v| v.as_u64()), Some(2121));
        assert_eq!(
            p.field("VersionPath").and_then(|v| v.as_text()).as_deref(),
            Some("images/r.bin")
        );
        let t = version_download_from_url("tftp://192.168.1.1/r.bin").unwrap();
        assert_eq!(t.field("ServerPort").and_then(|v| v.as_u64()), Some(69));
    }
}
