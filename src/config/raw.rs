//! The YAML document as written: one struct per section, `deny_unknown_fields`, leaves as plain
//! strings and numbers so that validation (in `mod.rs`) can report every bad value with its path.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Default)]
pub struct RawConfig {
    /// Sections present in the document, whether or not they deserialized.
    pub present: Vec<String>,
    pub edge: Option<Edge>,
    pub storage: Option<Storage>,
    pub uplink: Option<Uplink>,
    pub gbt32960: Option<Gbt32960>,
    pub jt808: Option<Jt808>,
    pub readers: Option<Readers>,
    pub web: Option<Web>,
    pub schedule: Option<Vec<Job>>,
    pub logging: Option<Logging>,
    pub ota: Option<Ota>,
    pub fusion: Option<Fusion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub id: String,
    pub site: Option<Site>,
    pub monitor_interval: Option<String>,
    pub clock_jump_threshold: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub path: Option<String>,
    pub max_bytes: Option<String>,
    pub reserve_bytes: Option<String>,
    pub disk_low_bytes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    pub url: String,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub topic_prefix: Option<String>,
    pub keep_alive: Option<String>,
    pub command_ttl: Option<String>,
    pub max_inflight: Option<u16>,
    pub metrics_interval: Option<String>,
    pub max_command_ttl: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: Option<String>,
    pub bind_identity: Option<bool>,
    pub allow_plain: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleServer {
    pub listen: Option<String>,
    pub tls: Option<ServerTls>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_buffered_bytes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gbt32960 {
    pub listen: Option<String>,
    pub tls: Option<ServerTls>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_buffered_bytes: Option<String>,
    pub replace: Option<String>,
}

impl Gbt32960 {
    /// The server part shared with the other vehicle gateways (serde's `flatten` cannot be combined
    /// with `deny_unknown_fields`, hence the explicit split).
    pub fn server(&self) -> VehicleServer {
        VehicleServer {
            listen: self.listen.clone(),
            tls: self.tls.clone(),
            idle_timeout: self.idle_timeout.clone(),
            max_connections: self.max_connections,
            max_buffered_bytes: self.max_buffered_bytes.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jt808 {
    pub listen: Option<String>,
    pub tls: Option<ServerTls>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_buffered_bytes: Option<String>,
    pub auth: Option<String>,
    pub encoding: Option<String>,
    pub reassembly_timeout: Option<String>,
    pub max_reassembly_bytes: Option<String>,
    pub max_terminals: Option<usize>,
}

impl Jt808 {
    /// The server part shared with the other vehicle gateways.
    pub fn server(&self) -> VehicleServer {
        VehicleServer {
            listen: self.listen.clone(),
            tls: self.tls.clone(),
            idle_timeout: self.idle_timeout.clone(),
            max_connections: self.max_connections,
            max_buffered_bytes: self.max_buffered_bytes.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readers {
    pub listen: Option<String>,
    pub tls: Option<ServerTls>,
    pub allowed_serials: Option<Vec<String>>,
    pub max_unknown: Option<usize>,
    pub max_buffered_bytes: Option<String>,
    pub dialect: Option<String>,
    pub keepalive_interval: Option<String>,
    pub offline_after: Option<String>,
    pub devices: Option<Vec<ReaderDevice>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderDevice {
    pub id: String,
    pub tcp: Option<String>,
    pub serial: Option<Serial>,
    pub sn: Option<String>,
    pub dialect: Option<String>,
    pub position: Option<ReaderPosition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderPosition {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub lane: Option<String>,
    pub direction: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    pub port: String,
    pub baud: Option<u32>,
    pub address: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    pub listen: Option<String>,
    pub tls: Option<ServerTls>,
    pub users: Option<Vec<WebUser>>,
    pub confirm_within: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebUser {
    pub name: String,
    pub password_hash: String,
    pub role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: String,
    pub cron: String,
    pub job: String,
    pub reader: Option<String>,
    pub spec_id: Option<u32>,
    pub action: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ota {
    pub public_key_file: String,
    pub confirm_within: Option<String>,
    pub binary_path: Option<String>,
    pub installer: Option<String>,
    pub max_bytes: Option<String>,
    pub ca_file: Option<String>,
    pub stall_timeout: Option<String>,
    pub download_timeout: Option<String>,
    pub reboot_command: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fusion {
    pub window: Option<String>,
    pub radius_m: Option<f64>,
    pub checks: Option<Vec<String>>,
    pub merge_window: Option<String>,
    pub max_clock_skew: Option<String>,
    pub registry_max_entries: Option<u64>,
}

/// Deserializes each top-level section on its own so an error in one does not hide the others.
/// Returns `None` only when the document itself is not a YAML mapping.
pub fn parse_sections(text: &str, errors: &mut Vec<ConfigError>) -> Option<RawConfig> {
    let doc: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(serde_yaml::Value::Null) => serde_yaml::Value::Mapping(Default::default()),
        Ok(v) => v,
        Err(e) => {
            errors.push(ConfigError {
                path: String::new(),
                message: format!("not valid YAML: {e}"),
            });
            return None;
        }
    };
    let serde_yaml::Value::Mapping(map) = doc else {
        errors.push(ConfigError {
            path: String::new(),
            message: "the document must be a mapping of sections".into(),
        });
        return None;
    };
    let mut raw = RawConfig::default();
    for (key, value) in map {
        let Some(name) = key.as_str() else {
            errors.push(ConfigError {
                path: String::new(),
                message: format!("section names must be strings, found {key:?}"),
            });
            continue;
        };
        raw.present.push(name.to_string());
        match name {
            "edge" => raw.edge = section(name, value, errors),
            "storage" => raw.storage = section(name, value, errors),
            "uplink" => raw.uplink = section(name, value, errors),
            "gbt32960" => raw.gbt32960 = section(name, value, errors),
            "jt808" => raw.jt808 = section(name, value, errors),
            "readers" => raw.readers = section(name, value, errors),
            "web" => raw.web = section(name, value, errors),
            "schedule" => raw.schedule = section(name, value, errors),
            "logging" => raw.logging = section(name, value, errors),
            "ota" => raw.ota = section(name, value, errors),
            "fusion" => {
                // `fusion:` with nothing under it enables fusion with every default.
                raw.fusion = if value.is_null() {
                    Some(Fusion::default())
                } else {
                    section(name, value, errors)
                }
            }
            other => errors.push(ConfigError {
                path: other.to_string(),
                message: "unknown section (expected one of: edge, storage, uplink, gbt32960, jt808, readers, web, schedule, logging, ota, fusion)".into(),
            }),
        }
    }
    Some(raw)
}

/// Deserializes one section; on failure records the error with the full path and returns `None`.
/// Numbers and booleans where strings are expected (e.g. `max_bytes: 1024`) are accepted as text.
fn section<T: DeserializeOwned>(name: &str, value: serde_yaml::Value, errors: &mut Vec<ConfigError>) -> Option<T> {
    let value = stringify_scalars_where_needed(value);
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                name.to_string()
            } else if inner.starts_with('[') {
                format!("{name}{inner}")
            } else {
                format!("{name}.{inner}")
            };
            let message = e.into_inner().to_string();
            // serde_yaml appends " at line N column M" for the sub-value, which is relative to the
            // section and would mislead; the path says where.
            let message = message.split(" at line ").next().unwrap_or(&message).to_string();
            // For an unknown field, serde reports the field name itself; put it into the path.
            let (path, message) = match message.strip_prefix("unknown field `") {
                Some(rest) => {
                    let field = rest.split('`').next().unwrap_or("");
                    let expected = rest.split_once(", expected ").map(|(_, e)| e).unwrap_or("");
                    let path = if path.ends_with(field) {
                        path
                    } else {
                        format!("{path}.{field}")
                    };
                    (path, format!("unknown key (expected {expected})"))
                }
                None => (path, message),
            };
            errors.push(ConfigError { path, message });
            None
        }
    }
}

/// Sizes such as `max_bytes: 1048576` are plain YAML integers; the raw structs keep them as strings.
fn stringify_scalars_where_needed(value: serde_yaml::Value) -> serde_yaml::Value {
    use serde_yaml::Value;
    match value {
        Value::Mapping(m) => Value::Mapping(
            m.into_iter()
                .map(|(k, v)| {
                    let is_text_leaf = matches!(
                        k.as_str(),
                        Some(
                            "max_bytes"
                                | "reserve_bytes"
                                | "disk_low_bytes"
                                | "keep_alive"
                                | "idle_timeout"
                                | "command_ttl"
                                | "metrics_interval"
                                | "window"
                                | "merge_window"
                                | "max_clock_skew"
                                | "lane"
                                | "keepalive_interval"
                                | "offline_after"
                                | "monitor_interval"
                                | "clock_jump_threshold"
                                | "max_buffered_bytes"
                                | "reassembly_timeout"
                                | "max_reassembly_bytes"
                                | "max_command_ttl"
                                | "confirm_within"
                                | "id"
                                | "sn"
                                | "name"
                        )
                    );
                    // Serial numbers of only digits read as YAML integers; they are text.
                    let text_list = matches!(k.as_str(), Some("allowed_serials"));
                    let v = match v {
                        Value::Number(n) if is_text_leaf => Value::String(n.to_string()),
                        Value::Sequence(items) if text_list => Value::Sequence(
                            items
                                .into_iter()
                                .map(|i| match i {
                                    Value::Number(n) => Value::String(n.to_string()),
                                    other => other,
                                })
                                .collect(),
                        ),
                        other => stringify_scalars_where_needed(other),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(stringify_scalars_where_needed).collect()),
        other => other,
    }
}
