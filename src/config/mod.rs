//! Configuration: the YAML file of CONTRACT section 2, parsed into typed, validated structs.
//!
//! Parsing happens in two stages so that one run reports every mistake at once:
//! 1. each top-level section is deserialized on its own into `raw` structs (`deny_unknown_fields`,
//!    leaves kept as plain strings/numbers), so a structural error in one section does not hide
//!    the errors of another;
//! 2. a validation pass turns raw values into newtypes (`EdgeId`, `Duration`, sizes, URLs, paths)
//!    and records every failure with its YAML path (`uplink.url: ...`).
//!
//! This module owns no I/O besides reading the file and checking that referenced files exist.

mod raw;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use values::{parse_duration, parse_size, BrokerUrl, DeviceId, EdgeId, TopicPrefix};

/// A device serial number written as 16 hex digits (the `device_sn` of the reader payloads).
pub fn parse_device_sn(text: &str) -> Option<[u8; 8]> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut sn = [0u8; 8];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        sn[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(sn)
}

/// Where `roadedge run` looks for its configuration when neither `-c` nor `$ROADEDGE_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/roadedge/roadedge.yaml";

/// One validation failure, with the YAML path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path into the YAML document, e.g. `readers.devices[0].id`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the errors found in one configuration document.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration error(s):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Whether validation checks that referenced files (certificates, keys) exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCheck {
    Check,
    Skip,
}

/// The validated appliance configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub edge: EdgeConfig,
    pub storage: StorageConfig,
    pub uplink: UplinkConfig,
    pub gbt32960: Option<Gbt32960Config>,
    pub jt808: Option<Jt808Config>,
    pub readers: Option<ReadersConfig>,
    pub web: Option<WebConfig>,
    pub schedule: Vec<ScheduledJob>,
    pub logging: LoggingConfig,
    pub ota: Option<OtaConfig>,
    /// Vehicle data fusion (`fusion:`); `None` when the section is omitted.
    pub fusion: Option<FusionConfig>,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub id: EdgeId,
    pub site: Option<Site>,
    /// Period of the edge's own checks (reader links, the wall clock, certificate expiry).
    pub monitor_interval: Duration,
    /// A wall-clock move against the monotonic clock larger than this between two checks raises
    /// `clock_jump`.
    pub clock_jump_threshold: Duration,
}

impl EdgeConfig {
    pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_CLOCK_JUMP_THRESHOLD: Duration = Duration::from_secs(60);
}

#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    /// Budget of the database files on disk (main file + WAL + shared memory; CONTRACT 5.4).
    pub max_bytes: u64,
    /// Space held back beside the database and released when the disk fills.
    pub reserve_bytes: u64,
    /// Free space of the store's file system below which `disk_low` is raised.
    pub disk_low_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct UplinkConfig {
    pub url: BrokerUrl,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub topic_prefix: TopicPrefix,
    pub keep_alive: Duration,
    /// How long a command for an offline device is kept before it ends `expired`.
    pub command_ttl: Duration,
    /// Upper bound of QoS 1 publishes awaiting PUBACK.
    pub max_inflight: u16,
    /// The longest TTL a command may ask for (`ttl_s`); longer ones are cut to it.
    pub max_command_ttl: Duration,
    /// Period of `edge/{id}/metrics`.
    pub metrics_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca_file: Option<PathBuf>,
    /// The client certificate's CN or a SAN must equal the identity the device then claims
    /// (VIN, phone, reader serial); otherwise the session closes.
    pub bind_identity: bool,
    /// Also accept plain TCP, and TLS without a client certificate, on this port: such sessions
    /// are unbound (a mixed fleet while certificates roll out).
    pub allow_plain: bool,
}

#[derive(Debug, Clone)]
pub struct VehicleServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<ServerTls>,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Bytes buffered (incomplete frames) across all connections of the protocol.
    pub max_buffered_bytes: u64,
}

/// Whether a GB/T 32960 login may take a VIN from a connection that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Any login replaces an unbound holder; a bound holder only by a bound login.
    Allow,
    /// Only a login bound to its certificate replaces a holder.
    DenyUnbound,
}

#[derive(Debug, Clone)]
pub struct Gbt32960Config {
    pub server: VehicleServerConfig,
    pub replace: Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jt808Auth {
    /// Any terminal may register.
    Open,
    /// Only terminals in the edge's registry may register.
    Registry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    Gbk,
    Utf8,
}

#[derive(Debug, Clone)]
pub struct Jt808Config {
    pub server: VehicleServerConfig,
    pub auth: Jt808Auth,
    pub encoding: TextEncoding,
    /// A subpackaged transfer with no new packet for this long gets 0x8003 for its missing packets.
    pub reassembly_timeout: Duration,
    /// Subpackage bytes held across all connections.
    pub max_reassembly_bytes: u64,
    /// Rows of `jt808_terminals` at most (registrations past it are refused in open mode).
    pub max_terminals: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderDialect {
    Gbt37987_2019,
    Hb2017,
}

impl ReaderDialect {
    pub fn name(self) -> &'static str {
        match self {
            ReaderDialect::Gbt37987_2019 => "gbt37987-2019",
            ReaderDialect::Hb2017 => "hb-2017",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderLink {
    /// The edge dials the reader.
    Tcp(SocketAddr),
    /// The reader is on a serial line (RS-232/485) at a bus address.
    Serial { port: PathBuf, baud: u32, address: u8 },
    /// The reader dials in to `readers.listen`; recognised by its device serial number.
    DialIn,
}

#[derive(Debug, Clone)]
pub struct ReaderDevice {
    pub id: DeviceId,
    pub link: ReaderLink,
    /// Device serial number (the 64-bit header field): names a dial-in reader, and a dialled or
    /// serial reader answering with another serial number is refused.
    pub sn: Option<[u8; 8]>,
    /// This reader's dialect (`readers.dialect` unless set).
    pub dialect: ReaderDialect,
    /// Where the reader's antennas are and which lane they cover (for passages).
    pub position: ReaderPosition,
}

/// A reader's place at the site (`readers.devices[].position`); every part is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReaderPosition {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// Lane label, as the operator names lanes.
    pub lane: Option<String>,
    /// Travel direction of the covered lane in degrees (0 = north, clockwise), as JT/T 808
    /// reports a vehicle's direction.
    pub direction: Option<f64>,
}

/// The anomaly checks of `fusion.checks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusionChecks {
    pub cloned_tag: bool,
    pub missing_tag: bool,
    pub plate_mismatch: bool,
}

/// `fusion:` (CONTRACT 2): joining tag reads with vehicle telemetry into passages.
#[derive(Debug, Clone, PartialEq)]
pub struct FusionConfig {
    /// Telemetry this close in time to a tag read may match it.
    pub window: Duration,
    /// The site's zone: telemetry farther from the site does not count as "here".
    pub radius_m: f64,
    pub checks: FusionChecks,
    /// Reads of one tag closer in time than this belong to one pass (one passage).
    pub merge_window: Duration,
    /// A source whose clock is further off than this has its times corrected by its observed
    /// offset from the edge's receive time.
    pub max_clock_skew: Duration,
    /// Identity registry size; automatic entries are evicted least recently seen first.
    pub registry_max_entries: usize,
}

impl FusionConfig {
    /// Defaults of the registry size when `fusion:` is omitted (the registry exists anyway).
    pub const DEFAULT_REGISTRY_MAX_ENTRIES: usize = 200_000;
}

#[derive(Debug, Clone)]
pub struct ReadersConfig {
    pub listen: Option<SocketAddr>,
    /// TLS for readers that dial in (client certificates with `client_ca_file`).
    pub tls: Option<ServerTls>,
    /// When set, only these serials (and configured ones) may dial in.
    pub allowed_serials: Option<Vec<[u8; 8]>>,
    /// Unconfigured dial-in readers remembered at most (stale ones are forgotten first).
    pub max_unknown: usize,
    /// Bytes buffered across all reader links.
    pub max_buffered_bytes: u64,
    pub dialect: ReaderDialect,
    pub keepalive_interval: Duration,
    /// A configured reader whose link has been down this long raises `reader_offline`.
    pub offline_after: Duration,
    pub devices: Vec<ReaderDevice>,
}

impl ReadersConfig {
    pub const DEFAULT_OFFLINE_AFTER: Duration = Duration::from_secs(60);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Viewer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebUser {
    pub name: String,
    pub password_hash: String,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub tls: Option<ServerTls>,
    pub users: Vec<WebUser>,
    /// A configuration applied remotely (page or `config.set`) that is not confirmed within
    /// this, or whose uplink does not come back, is reverted to the previous file.
    pub confirm_within: Duration,
}

impl WebConfig {
    pub const DEFAULT_CONFIRM_WITHIN: Duration = Duration::from_secs(120);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Retention,
    ReaderTimeSync,
    ReaderLogPull,
    SelectSpec,
    Metrics,
}

#[derive(Debug, Clone)]
pub struct ScheduledJob {
    pub name: String,
    pub cron: cron::Schedule,
    pub job: JobKind,
    /// For `select_spec` windows: which reader (all when absent).
    pub reader: Option<DeviceId>,
    /// For `select_spec` windows: which rule.
    pub spec_id: Option<u32>,
    /// For `select_spec` windows: `start` or `stop`.
    pub action: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct OtaConfig {
    /// ed25519 public key (SubjectPublicKeyInfo PEM) that signs updates.
    pub public_key_file: PathBuf,
    /// A new version must show health within this, else it is rolled back.
    pub confirm_within: Duration,
    /// What a binary-swap update replaces; `None`: the running executable.
    pub binary_path: Option<PathBuf>,
    pub installer: OtaInstaller,
    /// Largest update file accepted (download, upload, path).
    pub max_bytes: u64,
    /// CA bundle for HTTPS downloads; `None`: the system's bundle.
    pub ca_file: Option<PathBuf>,
    /// A download with no byte for this long is stalled (resumed, then given up).
    pub stall_timeout: Duration,
    /// A download must finish within this.
    pub download_timeout: Duration,
    /// Run after a RAUC installation to boot the new slot (and after a RAUC rollback).
    pub reboot_command: Vec<String>,
}

/// How updates are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtaInstaller {
    /// RAUC when it answers on the system bus, else a binary swap.
    Auto,
    /// Always RAUC (bundles).
    Rauc,
    /// Always a binary swap.
    Binary,
}

impl OtaConfig {
    pub const DEFAULT_CONFIRM_WITHIN: Duration = Duration::from_secs(300);
    pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, files: FileCheck) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::parse(&text, files)
    }

    /// Parses and validates a YAML document, reporting every error found.
    pub fn parse(text: &str, files: FileCheck) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let raw = raw::parse_sections(text, &mut errors);
        let config = raw.and_then(|raw| validate(raw, files, &mut errors));
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// How long a remotely applied configuration waits for its confirmation (`web.confirm_within`,
    /// \[2m\] also without a `web:` section: `config.set` applies with auto-revert too).
    pub fn confirm_within(&self) -> Duration {
        self.web
            .as_ref()
            .map_or(WebConfig::DEFAULT_CONFIRM_WITHIN, |w| w.confirm_within)
    }

    /// Topic of the edge's own status (retained, Last Will).
    pub fn status_topic(&self) -> String {
        crate::topics::edge(self.edge.id.as_str(), crate::topics::EdgeTopic::Status)
    }
}

/// Collects errors while walking the raw document.
struct Validator<'a> {
    errors: &'a mut Vec<ConfigError>,
    files: FileCheck,
}

impl Validator<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn take<T, E: std::fmt::Display>(&mut self, path: &str, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(path, e.to_string());
                None
            }
        }
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => self.take(path, parse_duration(v)).unwrap_or(default),
        }
    }

    fn socket(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
        self.take(
            path,
            value
                .parse::<SocketAddr>()
                .map_err(|_| format!("`{value}` is not an address:port (e.g. 0.0.0.0:8999)")),
        )
    }

    fn file(&mut self, path: &str, value: &str) -> PathBuf {
        let p = PathBuf::from(value);
        if self.files == FileCheck::Check && !p.is_file() {
            self.error(path, format!("file `{value}` does not exist or is not a file"));
        }
        p
    }

    fn tls(&mut self, path: &str, raw: &raw::ServerTls) -> ServerTls {
        let tls = ServerTls {
            cert_file: self.file(&format!("{path}.cert_file"), &raw.cert_file),
            key_file: self.file(&format!("{path}.key_file"), &raw.key_file),
            client_ca_file: raw
                .client_ca_file
                .as_deref()
                .map(|f| self.file(&format!("{path}.client_ca_file"), f)),
            bind_identity: raw.bind_identity.unwrap_or(false),
            allow_plain: raw.allow_plain.unwrap_or(false),
        };
        if tls.bind_identity && tls.client_ca_file.is_none() {
            self.error(
                format!("{path}.bind_identity"),
                "needs client_ca_file (the identity comes from the client certificate)",
            );
        }
        tls
    }

    fn size(&mut self, path: &str, value: Option<&str>, default: u64) -> u64 {
        match value {
            None => default,
            Some(v) => self.take(path, parse_size(v)).unwrap_or(default),
        }
    }

    fn vehicle_server(&mut self, section: &str, raw: &raw::VehicleServer, default_port: u16) -> VehicleServerConfig {
        let listen = raw
            .listen
            .as_deref()
            .and_then(|l| self.socket(&format!("{section}.listen"), l))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port)));
        VehicleServerConfig {
            listen,
            tls: raw.tls.as_ref().map(|t| self.tls(&format!("{section}.tls"), t)),
            idle_timeout: self.duration(
                &format!("{section}.idle_timeout"),
                raw.idle_timeout.as_deref(),
                Duration::from_secs(180),
            ),
            max_connections: raw.max_connections.unwrap_or(20_000),
            max_buffered_bytes: self.size(
                &format!("{section}.max_buffered_bytes"),
                raw.max_buffered_bytes.as_deref(),
                DEFAULT_MAX_BUFFERED,
            ),
        }
    }
}

/// Default of `max_buffered_bytes` per protocol.
pub const DEFAULT_MAX_BUFFERED: u64 = 64 << 20;

fn validate(raw: raw::RawConfig, files: FileCheck, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let mut v = Validator { errors, files };

    let present = |name: &str| raw.present.iter().any(|p| p == name);
    let (edge_present, uplink_present) = (present("edge"), present("uplink"));
    let edge = match raw.edge {
        None => {
            if !edge_present {
                v.error("edge", "section is required (at least `edge.id`)");
            }
            None
        }
        Some(e) => {
            let id = v.take("edge.id", EdgeId::new(&e.id));
            let site = e.site.map(|s| {
                if !(-90.0..=90.0).contains(&s.latitude) {
                    v.error("edge.site.latitude", format!("{} is outside -90..90", s.latitude));
                }
                if !(-180.0..=180.0).contains(&s.longitude) {
                    v.error("edge.site.longitude", format!("{} is outside -180..180", s.longitude));
                }
                Site {
                    name: s.name.unwrap_or_default(),
                    latitude: s.latitude,
                    longitude: s.longitude,
                }
            });
            let monitor_interval = v.duration(
                "edge.monitor_interval",
                e.monitor_interval.as_deref(),
                EdgeConfig::DEFAULT_MONITOR_INTERVAL,
            );
            if monitor_interval < Duration::from_millis(100) || monitor_interval > Duration::from_secs(3600) {
                v.error("edge.monitor_interval", "must be between 100ms and 1h");
            }
            let clock_jump_threshold = v.duration(
                "edge.clock_jump_threshold",
                e.clock_jump_threshold.as_deref(),
                EdgeConfig::DEFAULT_CLOCK_JUMP_THRESHOLD,
            );
            if clock_jump_threshold < Duration::from_secs(1) {
                v.error("edge.clock_jump_threshold", "must be at least 1s");
            }
            id.map(|id| EdgeConfig {
                id,
                site,
                monitor_interval,
                clock_jump_threshold,
            })
        }
    };

    let raw_storage = raw.storage.unwrap_or_default();
    let max_bytes = match raw_storage.max_bytes {
        None => 2 << 30,
        Some(s) => v.take("storage.max_bytes", parse_size(&s)).unwrap_or(2 << 30),
    };
    if max_bytes < 1 << 20 {
        v.error("storage.max_bytes", "must be at least 1MiB");
    }
    let derived = crate::store::SpaceOptions::for_budget(max_bytes);
    let mut size = |path: &str, value: Option<String>, default: u64| match value {
        None => default,
        Some(s) => v.take(path, parse_size(&s)).unwrap_or(default),
    };
    let reserve_bytes = size(
        "storage.reserve_bytes",
        raw_storage.reserve_bytes,
        derived.reserve_bytes,
    );
    let disk_low_bytes = size("storage.disk_low_bytes", raw_storage.disk_low_bytes, 4 * reserve_bytes);
    if reserve_bytes < 256 << 10 {
        v.error("storage.reserve_bytes", "must be at least 256KiB");
    }
    if disk_low_bytes <= reserve_bytes {
        v.error("storage.disk_low_bytes", "must be larger than storage.reserve_bytes");
    }
    let storage = StorageConfig {
        path: PathBuf::from(
            raw_storage
                .path
                .unwrap_or_else(|| "/var/lib/roadedge/roadedge.db".to_string()),
        ),
        max_bytes,
        reserve_bytes,
        disk_low_bytes,
    };

    let uplink = match raw.uplink {
        None => {
            if !uplink_present {
                v.error("uplink", "section is required (at least `uplink.url`)");
            }
            None
        }
        Some(u) => {
            let url = v.take("uplink.url", BrokerUrl::parse(&u.url));
            let ca_file = u.ca_file.as_deref().map(|f| v.file("uplink.ca_file", f));
            let cert_file = u.cert_file.as_deref().map(|f| v.file("uplink.cert_file", f));
            let key_file = u.key_file.as_deref().map(|f| v.file("uplink.key_file", f));
            if cert_file.is_some() != key_file.is_some() {
                v.error("uplink.key_file", "cert_file and key_file must be given together");
            }
            let topic_prefix = v
                .take(
                    "uplink.topic_prefix",
                    TopicPrefix::new(u.topic_prefix.as_deref().unwrap_or("")),
                )
                .unwrap_or_default();
            let keep_alive = v.duration("uplink.keep_alive", u.keep_alive.as_deref(), Duration::from_secs(30));
            if keep_alive < Duration::from_secs(5) {
                v.error("uplink.keep_alive", "must be at least 5s");
            }
            let max_inflight = u.max_inflight.unwrap_or(100);
            if !(1..=1000).contains(&max_inflight) {
                v.error("uplink.max_inflight", "must be between 1 and 1000");
            }
            let command_ttl = v.duration(
                "uplink.command_ttl",
                u.command_ttl.as_deref(),
                Duration::from_secs(24 * 3600),
            );
            let max_command_ttl = v.duration(
                "uplink.max_command_ttl",
                u.max_command_ttl.as_deref(),
                Duration::from_secs(7 * 24 * 3600),
            );
            if command_ttl > max_command_ttl {
                v.error("uplink.command_ttl", "must not exceed uplink.max_command_ttl");
            }
            url.map(|url| UplinkConfig {
                url,
                ca_file,
                cert_file,
                key_file,
                topic_prefix,
                keep_alive,
                command_ttl,
                max_inflight,
                max_command_ttl,
                metrics_interval: v.duration(
                    "uplink.metrics_interval",
                    u.metrics_interval.as_deref(),
                    Duration::from_secs(60),
                ),
            })
        }
    };

    let gbt32960 = raw.gbt32960.map(|s| {
        let server = v.vehicle_server("gbt32960", &s.server(), 8999);
        // Safe by default where certificates exist: only a bound login replaces a session.
        let default = if server.tls.is_some() { "deny-unbound" } else { "allow" };
        let replace = match s.replace.as_deref().unwrap_or(default) {
            "allow" => Replace::Allow,
            "deny-unbound" => Replace::DenyUnbound,
            other => {
                v.error(
                    "gbt32960.replace",
                    format!("`{other}` is not one of: allow, deny-unbound"),
                );
                Replace::DenyUnbound
            }
        };
        Gbt32960Config { server, replace }
    });
    let jt808 = raw.jt808.map(|s| {
        let server = v.vehicle_server("jt808", &s.server(), 7999);
        let auth = match s.auth.as_deref().unwrap_or("open") {
            "open" => Jt808Auth::Open,
            "registry" => Jt808Auth::Registry,
            other => {
                v.error("jt808.auth", format!("`{other}` is not one of: open, registry"));
                Jt808Auth::Open
            }
        };
        let encoding = match s.encoding.as_deref().unwrap_or("gbk") {
            "gbk" => TextEncoding::Gbk,
            "utf8" | "utf-8" => TextEncoding::Utf8,
            other => {
                v.error("jt808.encoding", format!("`{other}` is not one of: gbk, utf8"));
                TextEncoding::Gbk
            }
        };
        let reassembly_timeout = v.duration(
            "jt808.reassembly_timeout",
            s.reassembly_timeout.as_deref(),
            Duration::from_secs(30),
        );
        if reassembly_timeout < Duration::from_secs(1) {
            v.error("jt808.reassembly_timeout", "must be at least 1s");
        }
        let max_reassembly_bytes = v.size(
            "jt808.max_reassembly_bytes",
            s.max_reassembly_bytes.as_deref(),
            64 << 20,
        );
        let max_terminals = s.max_terminals.unwrap_or(100_000);
        if max_terminals == 0 {
            v.error("jt808.max_terminals", "must be at least 1");
        }
        Jt808Config {
            server,
            auth,
            encoding,
            reassembly_timeout,
            max_reassembly_bytes,
            max_terminals,
        }
    });

    let readers = raw.readers.map(|r| {
        let listen = r.listen.as_deref().and_then(|l| v.socket("readers.listen", l));
        let tls = r.tls.as_ref().map(|t| v.tls("readers.tls", t));
        if tls.is_some() && listen.is_none() {
            v.error("readers.tls", "is for readers that dial in: it needs readers.listen");
        }
        let allowed_serials = r.allowed_serials.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    let parsed = parse_device_sn(text);
                    if parsed.is_none() {
                        v.error(
                            format!("readers.allowed_serials[{i}]"),
                            format!("`{text}` is not 16 hex digits"),
                        );
                    }
                    parsed
                })
                .collect::<Vec<_>>()
        });
        let max_unknown = r.max_unknown.unwrap_or(64);
        let max_buffered_bytes = v.size(
            "readers.max_buffered_bytes",
            r.max_buffered_bytes.as_deref(),
            DEFAULT_MAX_BUFFERED,
        );
        let mut dialect_of = |path: &str, name: &str| match name {
            "gbt37987-2019" => ReaderDialect::Gbt37987_2019,
            "hb-2017" => ReaderDialect::Hb2017,
            other => {
                v.error(path, format!("`{other}` is not one of: gbt37987-2019, hb-2017"));
                ReaderDialect::Gbt37987_2019
            }
        };
        let dialect = dialect_of("readers.dialect", r.dialect.as_deref().unwrap_or("gbt37987-2019"));
        let devices: Vec<_> = r
            .devices
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let path = format!("readers.devices[{i}]");
                let device_dialect = d
                    .dialect
                    .as_deref()
                    .map_or(dialect, |name| dialect_of(&format!("{path}.dialect"), name));
                (i, d, device_dialect)
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut seen_sn = std::collections::HashSet::new();
        let devices = devices
            .into_iter()
            .filter_map(|(i, d, dialect)| {
                let path = format!("readers.devices[{i}]");
                let id = v.take(&format!("{path}.id"), DeviceId::new(&d.id));
                if let Some(id) = &id {
                    if !seen.insert(id.to_string()) {
                        v.error(format!("{path}.id"), format!("duplicate reader id `{id}`"));
                    }
                }
                let sn = d.sn.as_deref().and_then(|text| {
                    let parsed = parse_device_sn(text);
                    if parsed.is_none() {
                        v.error(format!("{path}.sn"), format!("`{text}` is not 16 hex digits"));
                    } else if !seen_sn.insert(text.to_ascii_lowercase()) {
                        v.error(format!("{path}.sn"), format!("duplicate reader serial number `{text}`"));
                    }
                    parsed
                });
                let link = match (d.tcp, d.serial) {
                    (Some(tcp), None) => v.socket(&format!("{path}.tcp"), &tcp).map(ReaderLink::Tcp),
                    (None, Some(s)) => {
                        let baud = s.baud.unwrap_or(19200);
                        if ![1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200].contains(&baud) {
                            v.error(
                                format!("{path}.serial.baud"),
                                format!("{baud} is not a standard baud rate"),
                            );
                        }
                        Some(ReaderLink::Serial {
                            port: PathBuf::from(s.port),
                            baud,
                            address: s.address.unwrap_or(1),
                        })
                    }
                    (None, None) if d.sn.is_some() => {
                        if listen.is_none() {
                            v.error(
                                path.clone(),
                                "a reader that dials in (`sn` only) needs `readers.listen`",
                            );
                        }
                        Some(ReaderLink::DialIn)
                    }
                    _ => {
                        v.error(
                            path.clone(),
                            "exactly one of `tcp` or `serial` is required, or `sn` alone for a reader that dials in",
                        );
                        None
                    }
                };
                let position = d
                    .position
                    .map(|p| {
                        let pos = ReaderPosition {
                            latitude: p.latitude,
                            longitude: p.longitude,
                            lane: p.lane,
                            direction: p.direction,
                        };
                        if pos.latitude.is_some_and(|l| !(-90.0..=90.0).contains(&l)) {
                            v.error(format!("{path}.position.latitude"), "must be within -90..90");
                        }
                        if pos.longitude.is_some_and(|l| !(-180.0..=180.0).contains(&l)) {
                            v.error(format!("{path}.position.longitude"), "must be within -180..180");
                        }
                        if pos.latitude.is_some() != pos.longitude.is_some() {
                            v.error(
                                format!("{path}.position"),
                                "latitude and longitude must be given together",
                            );
                        }
                        if pos.direction.is_some_and(|d| !(0.0..360.0).contains(&d)) {
                            v.error(
                                format!("{path}.position.direction"),
                                "must be degrees within 0..360 (0 = north, clockwise)",
                            );
                        }
                        if pos
                            .lane
                            .as_ref()
                            .is_some_and(|l| l.is_empty() || l.chars().count() > 32)
                        {
                            v.error(format!("{path}.position.lane"), "must be 1 to 32 characters");
                        }
                        pos
                    })
                    .unwrap_or_default();
                Some(ReaderDevice {
                    id: id?,
                    link: link?,
                    sn,
                    dialect,
                    position,
                })
            })
            .collect();
        ReadersConfig {
            listen,
            tls,
            allowed_serials,
            max_unknown,
            max_buffered_bytes,
            dialect,
            keepalive_interval: v.duration(
                "readers.keepalive_interval",
                r.keepalive_interval.as_deref(),
                Duration::from_secs(10),
            ),
            offline_after: v.duration(
                "readers.offline_after",
                r.offline_after.as_deref(),
                ReadersConfig::DEFAULT_OFFLINE_AFTER,
            ),
            devices,
        }
    });

    let web = raw.web.map(|w| {
        let listen = v
            .socket("web.listen", w.listen.as_deref().unwrap_or("127.0.0.1:8080"))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let users = w
            .users
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, u)| {
                let path = format!("web.users[{i}]");
                if u.name.is_empty() || u.name.len() > 64 {
                    v.error(format!("{path}.name"), "must be 1 to 64 characters");
                }
                if !u.password_hash.starts_with("$argon2id$") || argon2::PasswordHash::new(&u.password_hash).is_err() {
                    v.error(
                        format!("{path}.password_hash"),
                        "must be an argon2id PHC string (make one with `roadedge passwd`)",
                    );
                }
                let role = match u.role.as_deref().unwrap_or("viewer") {
                    "admin" => Role::Admin,
                    "viewer" => Role::Viewer,
                    other => {
                        v.error(
                            format!("{path}.role"),
                            format!("`{other}` is not one of: admin, viewer"),
                        );
                        return None;
                    }
                };
                Some(WebUser {
                    name: u.name,
                    password_hash: u.password_hash,
                    role,
                })
            })
            .collect();
        WebConfig {
            listen,
            tls: w.tls.as_ref().map(|t| {
                if t.bind_identity.is_some() || t.allow_plain.is_some() {
                    v.error(
                        "web.tls",
                        "bind_identity and allow_plain are for device ports, not the web page",
                    );
                }
                v.tls("web.tls", t)
            }),
            users,
            confirm_within: {
                let d = v.duration(
                    "web.confirm_within",
                    w.confirm_within.as_deref(),
                    WebConfig::DEFAULT_CONFIRM_WITHIN,
                );
                // Below a few seconds nobody could confirm in time; a day is an unattended risk.
                if !(Duration::from_secs(2)..=Duration::from_secs(24 * 3600)).contains(&d) {
                    v.error("web.confirm_within", "must be between 2s and 24h");
                }
                d
            },
        }
    });

    let schedule = raw
        .schedule
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, j)| {
            let path = format!("schedule[{i}]");
            let cron = v.take(
                &format!("{path}.cron"),
                j.cron
                    .parse::<cron::Schedule>()
                    .map_err(|e| format!("`{}` is not a 6-field cron expression: {e}", j.cron)),
            );
            let job = match j.job.as_str() {
                "retention" => Some(JobKind::Retention),
                "reader_time_sync" => Some(JobKind::ReaderTimeSync),
                "reader_log_pull" => Some(JobKind::ReaderLogPull),
                "select_spec" => Some(JobKind::SelectSpec),
                "metrics" => Some(JobKind::Metrics),
                other => {
                    v.error(
                        format!("{path}.job"),
                        format!(
                            "`{other}` is not one of: retention, reader_time_sync, reader_log_pull, select_spec, metrics"
                        ),
                    );
                    None
                }
            };
            if job == Some(JobKind::SelectSpec) {
                if j.spec_id.is_none() {
                    v.error(format!("{path}.spec_id"), "required for a select_spec job");
                }
                if !matches!(j.action.as_deref(), Some("start" | "stop")) {
                    v.error(format!("{path}.action"), "must be `start` or `stop` for a select_spec job");
                }
            }
            let reader = j
                .reader
                .as_deref()
                .and_then(|r| v.take(&format!("{path}.reader"), DeviceId::new(r)));
            Some(ScheduledJob {
                name: j.name,
                cron: cron?,
                job: job?,
                reader,
                spec_id: j.spec_id,
                action: j.action,
            })
        })
        .collect();

    let logging = LoggingConfig {
        level: raw.logging.and_then(|l| l.level).unwrap_or_else(|| "info".to_string()),
    };
    if tracing_subscriber::EnvFilter::try_new(&logging.level).is_err() {
        v.error(
            "logging.level",
            format!("`{}` is not a log level or filter", logging.level),
        );
    }

    let ota = raw.ota.map(|o| {
        let installer = match o.installer.as_deref() {
            None | Some("auto") => OtaInstaller::Auto,
            Some("rauc") => OtaInstaller::Rauc,
            Some("binary") => OtaInstaller::Binary,
            Some(other) => {
                v.error(
                    "ota.installer",
                    format!("`{other}` is not an installer (expected auto, rauc or binary)"),
                );
                OtaInstaller::Auto
            }
        };
        let confirm_within = v.duration(
            "ota.confirm_within",
            o.confirm_within.as_deref(),
            OtaConfig::DEFAULT_CONFIRM_WITHIN,
        );
        if confirm_within < Duration::from_secs(1) {
            v.error("ota.confirm_within", "must be at least 1s");
        }
        let max_bytes = v.size("ota.max_bytes", o.max_bytes.as_deref(), OtaConfig::DEFAULT_MAX_BYTES);
        if max_bytes == 0 {
            v.error("ota.max_bytes", "must be more than 0");
        }
        let stall_timeout = v.duration("ota.stall_timeout", o.stall_timeout.as_deref(), Duration::from_secs(60));
        if stall_timeout < Duration::from_secs(1) {
            v.error("ota.stall_timeout", "must be at least 1s");
        }
        let reboot_command = o
            .reboot_command
            .unwrap_or_else(|| vec!["systemctl".to_string(), "reboot".to_string()]);
        if reboot_command.is_empty() || reboot_command[0].is_empty() {
            v.error("ota.reboot_command", "needs a program (e.g. [systemctl, reboot])");
        }
        OtaConfig {
            public_key_file: v.file("ota.public_key_file", &o.public_key_file),
            confirm_within,
            binary_path: o.binary_path.map(PathBuf::from),
            installer,
            max_bytes,
            ca_file: o.ca_file.as_deref().map(|f| v.file("ota.ca_file", f)),
            stall_timeout,
            download_timeout: v.duration(
                "ota.download_timeout",
                o.download_timeout.as_deref(),
                Duration::from_secs(3600),
            ),
            reboot_command,
        }
    });

    let site_given = edge.as_ref().is_some_and(|e| e.site.is_some());
    let fusion = raw
        .fusion
        .map(|f| fusion_section(&mut v, f, site_given || !edge_present));

    Some(Config {
        edge: edge?,
        storage,
        uplink: uplink?,
        gbt32960,
        jt808,
        readers,
        web,
        schedule,
        logging,
        ota,
        fusion,
    })
}

fn fusion_section(v: &mut Validator<'_>, f: raw::Fusion, site_known: bool) -> FusionConfig {
    if !site_known {
        v.error("fusion", "needs `edge.site` (latitude and longitude of the site)");
    }
    let window = v.duration("fusion.window", f.window.as_deref(), Duration::from_secs(10));
    if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&window) {
        v.error("fusion.window", "must be between 1s and 10m");
    }
    let radius_m = f.radius_m.unwrap_or(300.0);
    if !(1.0..=100_000.0).contains(&radius_m) {
        v.error("fusion.radius_m", format!("{radius_m} is outside 1..100000"));
    }
    let mut checks = FusionChecks {
        cloned_tag: f.checks.is_none(),
        missing_tag: f.checks.is_none(),
        plate_mismatch: f.checks.is_none(),
    };
    for (i, name) in f.checks.iter().flatten().enumerate() {
        match name.as_str() {
            "cloned_tag" => checks.cloned_tag = true,
            "missing_tag" => checks.missing_tag = true,
            "plate_mismatch" => checks.plate_mismatch = true,
            other => v.error(
                format!("fusion.checks[{i}]"),
                format!("`{other}` is not one of: cloned_tag, missing_tag, plate_mismatch"),
            ),
        }
    }
    let merge_window = v.duration("fusion.merge_window", f.merge_window.as_deref(), Duration::from_secs(5));
    if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&merge_window) {
        v.error("fusion.merge_window", "must be between 100ms and 5m");
    }
    let max_clock_skew = v.duration(
        "fusion.max_clock_skew",
        f.max_clock_skew.as_deref(),
        Duration::from_secs(2),
    );
    if max_clock_skew > Duration::from_secs(3600) {
        v.error("fusion.max_clock_skew", "must be at most 1h");
    }
    let registry_max_entries = f
        .registry_max_entries
        .unwrap_or(FusionConfig::DEFAULT_REGISTRY_MAX_ENTRIES as u64);
    if !(1..=10_000_000).contains(&registry_max_entries) {
        v.error("fusion.registry_max_entries", "must be between 1 and 10000000");
    }
    FusionConfig {
        window,
        radius_m,
        checks,
        merge_window,
        max_clock_skew,
        registry_max_entries: registry_max_entries.clamp(1, 10_000_000) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "edge: {id: cab-1}\nuplink: {url: 'mqtt://127.0.0.1:1883'}\n";

    #[test]
    fn ota_keys_get_defaults_and_are_checked_with_their_paths() {
        let c = Config::parse(&format!("{MINIMAL}ota: {{public_key_file: /k.pub}}\n"), FileCheck::Skip).unwrap();
        let o = c.ota.unwrap();
        assert_eq!(o.confirm_within, OtaConfig::DEFAULT_CONFIRM_WITHIN);
        assert_eq!(o.installer, OtaInstaller::Auto);
        assert_eq!(o.max_bytes, OtaConfig::DEFAULT_MAX_BYTES);
        assert_eq!(o.reboot_command, ["systemctl", "reboot"]);
        assert!(o.binary_path.is_none());
        let errors = Config::parse(
            &format!(
                "{MINIMAL}ota: {{public_key_file: /k.pub, installer: usb, confirm_within: 0s, max_bytes: 0, stall_timeout: soon, reboot_command: []}}\n"
            ),
            FileCheck::Skip,
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "ota.installer",
            "ota.confirm_within",
            "ota.max_bytes",
            "ota.stall_timeout",
            "ota.reboot_command",
        ] {
            assert!(paths.contains(&p), "{p}: {errors}");
        }
        let missing = Config::parse(
            &format!("{MINIMAL}ota: {{public_key_file: /nonexistent.pub}}\n"),
            FileCheck::Check,
        )
        .unwrap_err();
        assert!(missing.0.iter().any(|e| e.path == "ota.public_key_file"), "{missing}");
    }

    #[test]
    fn minimal_config_gets_contract_defaults() {
        let c = Config::parse(MINIMAL, FileCheck::Check).unwrap();
        assert_eq!(c.edge.id.as_str(), "cab-1");
        assert_eq!(c.storage.max_bytes, 2 << 30);
        assert_eq!(c.uplink.keep_alive, Duration::from_secs(30));
        assert_eq!(c.uplink.command_ttl, Duration::from_secs(86400));
        assert!(c.gbt32960.is_none());
        assert_eq!(c.confirm_within(), Duration::from_secs(120));
    }

    #[test]
    fn web_confirm_within_is_read_and_bounded() {
        let c = Config::parse(&format!("{MINIMAL}web: {{confirm_within: 5s}}\n"), FileCheck::Check).unwrap();
        assert_eq!(c.confirm_within(), Duration::from_secs(5));
        for bad in ["1s", "2d", "soon"] {
            let errs = Config::parse(&format!("{MINIMAL}web: {{confirm_within: {bad}}}\n"), FileCheck::Check)
                .unwrap_err()
                .0;
            assert_eq!(errs[0].path, "web.confirm_within", "{bad}: {errs:?}");
        }
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let text =
            "edge: {id: 'bad id!'}\nstorage: {max_bytes: 12XB}\nuplink: {url: 'http://x', keep_alive: 5 minutes}\n";
        let errs = Config::parse(text, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["edge.id", "storage.max_bytes", "uplink.url", "uplink.keep_alive"],
            "{errs:?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_in_every_section() {
        let text = "edge: {id: a, colour: red}\nuplink: {url: 'mqtt://h:1', qos: 2}\nextra: 1\n";
        let errs = Config::parse(text, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"edge.colour"), "{errs:?}");
        assert!(paths.contains(&"uplink.qos"), "{errs:?}");
        assert!(paths.contains(&"extra"), "{errs:?}");
    }

    #[test]
    fn missing_files_are_reported_when_checked() {
        let text = "edge: {id: a}\nuplink: {url: 'mqtts://h:8883', ca_file: /nonexistent/ca.pem}\n";
        let errs = Config::parse(text, FileCheck::Check).unwrap_err().0;
        assert_eq!(errs[0].path, "uplink.ca_file");
        assert!(Config::parse(text, FileCheck::Skip).is_ok());
    }

    #[test]
    fn reader_needs_exactly_one_link() {
        let text = "edge: {id: a}\nuplink: {url: 'mqtt://h:1'}\nreaders:\n  devices:\n    - {id: r1}\n    - {id: r1, tcp: '127.0.0.1:5084'}\n    - {id: r2, serial: {port: /dev/ttyS1}}\n";
        let errs = Config::parse(text, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["readers.devices[0]", "readers.devices[1].id"], "{errs:?}");
    }

    #[test]
    fn readers_take_a_serial_number_and_their_own_dialect() {
        let text = "edge: {id: a}\nuplink: {url: 'mqtt://h:1'}\nreaders:\n  listen: 127.0.0.1:5084\n  dialect: hb-2017\n  devices:\n    - {id: r1, sn: 424C303030303031}\n    - {id: r2, tcp: '127.0.0.1:6000', dialect: gbt37987-2019}\n";
        let c = Config::parse(text, FileCheck::Skip).unwrap();
        let readers = c.readers.unwrap();
        assert_eq!(readers.devices[0].link, ReaderLink::DialIn);
        assert_eq!(readers.devices[0].sn, Some(*b"BL000001"));
        assert_eq!(readers.devices[0].dialect, ReaderDialect::Hb2017);
        assert_eq!(readers.devices[1].dialect, ReaderDialect::Gbt37987_2019);
        let bad = "edge: {id: a}\nuplink: {url: 'mqtt://h:1'}\nreaders:\n  devices:\n    - {id: r1, sn: 424C3030}\n    - {id: r2, sn: 424C303030303031, dialect: hb}\n";
        let errs = Config::parse(bad, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "readers.devices[1].dialect",
                "readers.devices[0].sn",
                "readers.devices[0]",
                "readers.devices[1]"
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn global_bounds_and_identity_keys_have_safe_defaults_and_are_checked() {
        let text = "edge: {id: a}\nuplink: {url: 'mqtt://h:1'}\ngbt32960: {}\njt808: {}\nreaders: {listen: '127.0.0.1:5084'}\n";
        let c = Config::parse(text, FileCheck::Skip).unwrap();
        assert_eq!(c.uplink.max_command_ttl, Duration::from_secs(7 * 86400));
        let g = c.gbt32960.unwrap();
        assert_eq!(g.replace, Replace::Allow, "plain TCP keeps replacing");
        assert_eq!(g.server.max_buffered_bytes, 64 << 20);
        let j = c.jt808.unwrap();
        assert_eq!((j.max_reassembly_bytes, j.max_terminals), (64 << 20, 100_000));
        assert_eq!(j.reassembly_timeout, Duration::from_secs(30));
        let r = c.readers.unwrap();
        assert_eq!((r.max_unknown, r.allowed_serials.is_none()), (64, true));
        assert!(c.storage.reserve_bytes >= 256 << 10 && c.storage.disk_low_bytes > c.storage.reserve_bytes);

        let bound = "edge: {id: a}\nuplink: {url: 'mqtt://h:1'}\ngbt32960: {tls: {cert_file: c, key_file: k, client_ca_file: ca, bind_identity: true}}\nreaders: {listen: '127.0.0.1:5084', allowed_serials: [3030303030303031, 424C303030303032]}\n";
        let c = Config::parse(bound, FileCheck::Skip).unwrap();
        assert_eq!(
            c.gbt32960.unwrap().replace,
            Replace::DenyUnbound,
            "safe by default with identities"
        );
        assert_eq!(
            c.readers.unwrap().allowed_serials.unwrap().len(),
            2,
            "digit-only serials are text"
        );

        let bad = "edge: {id: a}\nstorage: {max_bytes: 512KiB, reserve_bytes: 1KiB}\nuplink: {url: 'mqtt://h:1', command_ttl: 30d, max_command_ttl: 1d}\njt808: {tls: {cert_file: c, key_file: k, bind_identity: true}, max_terminals: 0, reassembly_timeout: 10ms}\ngbt32960: {replace: never}\nreaders: {tls: {cert_file: c, key_file: k}, allowed_serials: [xyz]}\nweb: {tls: {cert_file: c, key_file: k, allow_plain: true}}\n";
        let errs = Config::parse(bad, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "storage.max_bytes",
            "storage.reserve_bytes",
            "uplink.command_ttl",
            "jt808.tls.bind_identity",
            "jt808.max_terminals",
            "jt808.reassembly_timeout",
            "gbt32960.replace",
            "readers.tls",
            "readers.allowed_serials[0]",
            "web.tls",
        ] {
            assert!(paths.contains(&p), "{p} missing in {errs:?}");
        }
    }

    #[test]
    fn fusion_gets_contract_defaults_and_needs_the_site() {
        let with_site =
            "edge: {id: a, site: {latitude: 31.2, longitude: 121.4}}\nuplink: {url: 'mqtt://h:1'}\nfusion:\n";
        let f = Config::parse(with_site, FileCheck::Skip).unwrap().fusion.unwrap();
        assert_eq!(f.window, Duration::from_secs(10));
        assert_eq!(f.radius_m, 300.0);
        assert_eq!(
            f.checks,
            FusionChecks {
                cloned_tag: true,
                missing_tag: true,
                plate_mismatch: true
            }
        );
        assert_eq!(f.registry_max_entries, 200_000);
        let no_site = "edge: {id: a}\nuplink: {url: 'mqtt://h:1'}\nfusion: {window: 5s}\n";
        let errs = Config::parse(no_site, FileCheck::Skip).unwrap_err().0;
        assert_eq!(errs[0].path, "fusion", "{errs:?}");
        let bad = "edge: {id: a, site: {latitude: 31.2, longitude: 121.4}}\nuplink: {url: 'mqtt://h:1'}\n\
                   fusion: {window: 0s, radius_m: 0, checks: [cloned_tag, speeding], merge_window: 1h, registry_max_entries: 0, colour: red}\n";
        let errs = Config::parse(bad, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["fusion.colour"], "{errs:?}");
        let bad = bad.replace(", colour: red", "");
        let errs = Config::parse(&bad, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "fusion.window",
                "fusion.radius_m",
                "fusion.checks[1]",
                "fusion.merge_window",
                "fusion.registry_max_entries"
            ],
            "{errs:?}"
        );
        let only = "edge: {id: a, site: {latitude: 31.2, longitude: 121.4}}\nuplink: {url: 'mqtt://h:1'}\nfusion: {checks: [missing_tag]}\n";
        let f = Config::parse(only, FileCheck::Skip).unwrap().fusion.unwrap();
        assert!(f.checks.missing_tag && !f.checks.cloned_tag && !f.checks.plate_mismatch);
    }

    #[test]
    fn reader_positions_are_checked() {
        let text = "edge: {id: a}\nuplink: {url: 'mqtt://h:1'}\nreaders:\n  devices:\n    - {id: r1, tcp: '127.0.0.1:1', position: {latitude: 31.2, longitude: 121.4, lane: 2, direction: 90}}\n    - {id: r2, tcp: '127.0.0.1:2', position: {latitude: 91, direction: 360}}\n";
        let errs = Config::parse(text, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "readers.devices[1].position.latitude",
                "readers.devices[1].position",
                "readers.devices[1].position.direction"
            ],
            "{errs:?}"
        );
        let ok = text.replace(
            "    - {id: r2, tcp: '127.0.0.1:2', position: {latitude: 91, direction: 360}}\n",
            "",
        );
        let c = Config::parse(&ok, FileCheck::Skip).unwrap();
        let p = &c.readers.unwrap().devices[0].position;
        assert_eq!(p.lane.as_deref(), Some("2"));
        assert_eq!(p.direction, Some(90.0));
    }

    #[test]
    fn bad_cron_and_job_are_reported() {
        let text = "edge: {id: a}\nuplink: {url: 'mqtt://h:1'}\nschedule:\n  - {name: x, cron: 'every day', job: retention}\n  - {name: y, cron: '0 0 3 * * *', job: dance}\n";
        let errs = Config::parse(text, FileCheck::Skip).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["schedule[0].cron", "schedule[1].job"], "{errs:?}");
    }
}
