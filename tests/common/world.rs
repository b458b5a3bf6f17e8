//! One test world for every end-to-end test: a temporary directory with its certificates, a real
//! mosquitto with TLS and client certificates, the cloud's recording client, the appliance's
//! configuration built from typed sections, and the appliance itself, either inside the test
//! process ([`World::start_in_process`]) or as the `roadedge run` binary ([`EdgeChild`]).
//! Every e2e test starts from here, so a change to how the appliance is configured or started
//! is made once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Cloud, Mosquitto, Pki, RunningAppliance};

/// The appliance's logs in the test output for tests that run it in this process (`RUST_LOG`
/// overrides the level).
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "roadedge=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// The directory, certificates, broker and cloud client of one test.
pub struct World {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub broker: Mosquitto,
    pub cloud: Cloud,
}

impl World {
    /// A fresh world; `name` tells the cloud clients of parallel tests apart.
    pub async fn start(name: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let broker = Mosquitto::start(dir.path(), &pki);
        let cloud = Cloud::connect(broker.port, &pki, &format!("cloud-{name}")).await;
        World {
            dir,
            pki,
            broker,
            cloud,
        }
    }

    /// The parts as locals, for a test that holds them itself: (dir, pki, broker, cloud).
    pub fn into_parts(self) -> (tempfile::TempDir, Pki, Mosquitto, Cloud) {
        (self.dir, self.pki, self.broker, self.cloud)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The appliance's configuration for this world: edge `cab-1`, a store in the world's
    /// directory, the uplink to its broker with the edge's certificate.
    pub fn config(&self) -> EdgeConfig {
        EdgeConfig::new(self.path(), &self.pki, &self.broker.url())
    }

    /// Starts the appliance inside the test process from `config` and waits until it is up.
    pub async fn start_in_process(&self, config: &Path) -> RunningAppliance {
        super::start_appliance(config).await
    }
}

/// The appliance's configuration, section by section. Sections are YAML written the way the
/// README documents them; the typed methods cover what the e2e tests share, [`EdgeConfig::section`]
/// the rest.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    dir: PathBuf,
    edge: String,
    storage_path: PathBuf,
    max_bytes: String,
    broker_url: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    uplink_extra: String,
    log_level: String,
    /// Further top-level sections in order: (name, body indented under it).
    sections: Vec<(String, String)>,
}

impl EdgeConfig {
    pub fn new(dir: &Path, pki: &Pki, broker_url: &str) -> EdgeConfig {
        EdgeConfig {
            dir: dir.to_path_buf(),
            edge: "{id: cab-1}".into(),
            storage_path: dir.join("edge.db"),
            max_bytes: "256MiB".into(),
            broker_url: broker_url.into(),
            ca_file: pki.ca_file.clone(),
            cert_file: pki.edge.cert.clone(),
            key_file: pki.edge.key.clone(),
            uplink_extra: String::new(),
            log_level: "info".into(),
            sections: Vec::new(),
        }
    }

    /// The `edge:` section as a YAML flow mapping or block (default `{id: cab-1}`).
    pub fn edge(mut self, yaml: &str) -> Self {
        self.edge = yaml.into();
        self
    }

    /// `edge.site`, where fusion measures distances from.
    pub fn site(self, latitude: f64, longitude: f64) -> Self {
        self.edge(&format!(
            "{{id: cab-1, site: {{latitude: {latitude}, longitude: {longitude}}}}}"
        ))
    }

    pub fn max_bytes(mut self, max_bytes: &str) -> Self {
        self.max_bytes = max_bytes.into();
        self
    }

    pub fn storage_path(mut self, path: &Path) -> Self {
        self.storage_path = path.to_path_buf();
        self
    }

    /// The edge's client certificate for the uplink (default: the world's `edge`).
    pub fn uplink_identity(mut self, cert: &Path, key: &Path) -> Self {
        self.cert_file = cert.to_path_buf();
        self.key_file = key.to_path_buf();
        self
    }

    /// More `uplink:` keys, one `  key: value` line each.
    pub fn uplink(mut self, lines: &str) -> Self {
        self.uplink_extra.push_str(lines);
        if !self.uplink_extra.is_empty() && !self.uplink_extra.ends_with('\n') {
            self.uplink_extra.push('\n');
        }
        self
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }

    /// A JT/T 808 server on loopback `port`, with more `jt808:` keys (`  key: value` lines).
    pub fn jt808(self, port: u16, lines: &str) -> Self {
        self.section("jt808", &format!("  listen: 127.0.0.1:{port}\n{lines}"))
    }

    /// A GB/T 32960 server on loopback `port`, with more `gbt32960:` keys.
    pub fn gbt32960(self, port: u16, lines: &str) -> Self {
        self.section("gbt32960", &format!("  listen: 127.0.0.1:{port}\n{lines}"))
    }

    /// The `readers:` section body.
    pub fn readers(self, body: &str) -> Self {
        self.section("readers", body)
    }

    /// The `fusion:` section body.
    pub fn fusion(self, body: &str) -> Self {
        self.section("fusion", body)
    }

    /// Any other top-level section: `name:` followed by `body` (indented lines, or a flow
    /// mapping starting with `{` that stays on the same line).
    pub fn section(mut self, name: &str, body: &str) -> Self {
        self.sections.push((name.into(), body.into()));
        self
    }

    /// More top-level YAML, verbatim (sections the typed methods do not cover, several at once).
    pub fn yaml(mut self, text: &str) -> Self {
        self.sections.push((String::new(), text.into()));
        self
    }

    /// The YAML text.
    pub fn text(&self) -> String {
        let mut text = format!(
            "edge: {}\nstorage: {{path: {}, max_bytes: {}}}\nuplink:\n  url: {}\n  ca_file: {}\n  cert_file: {}\n  key_file: {}\n  metrics_interval: 1s\n{}logging: {{level: {}}}\n",
            self.edge,
            self.storage_path.display(),
            self.max_bytes,
            self.broker_url,
            self.ca_file.display(),
            self.cert_file.display(),
            self.key_file.display(),
            self.uplink_extra,
            self.log_level,
        );
        for (name, body) in &self.sections {
            if name.is_empty() {
                text.push_str(body);
                if !body.ends_with('\n') {
                    text.push('\n');
                }
            } else if body.trim_start().starts_with('{') {
                text.push_str(&format!("{name}: {}\n", body.trim()));
            } else {
                text.push_str(&format!("{name}:\n{body}"));
                if !body.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
        text
    }

    /// Writes `roadedge.yaml` in the world's directory; returns its path.
    pub fn write(&self) -> PathBuf {
        self.write_as("roadedge.yaml")
    }

    /// Writes the configuration under another file name in the world's directory.
    pub fn write_as(&self, file: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}

/// The appliance binary as a child process: `roadedge run -c <config>`, its log in a file
/// beside the configuration; killed on drop.
pub struct EdgeChild {
    pub child: Child,
    pub log: PathBuf,
}

impl EdgeChild {
    /// Starts `roadedge run`; `name` names its log file (`edge-<name>.log`).
    pub fn spawn(config: &Path, name: &str) -> EdgeChild {
        Self::spawn_with(config, name, |_| {})
    }

    /// As [`EdgeChild::spawn`], with the command adjusted first (environment, user).
    pub fn spawn_with(config: &Path, name: &str, adjust: impl FnOnce(&mut Command)) -> EdgeChild {
        let log = config.with_file_name(format!("edge-{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_roadedge"));
        command
            .args(["run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        adjust(&mut command);
        let child = command.spawn().expect("start roadedge run");
        EdgeChild { child, log }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies with whatever it had in memory.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded by `limit`) for its exit code; SIGKILL if it does not exit.
    pub fn terminate(mut self, limit: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// The exit status, if it exited already.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for EdgeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
