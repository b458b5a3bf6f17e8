//! RAUC test world: real bundles built with Debian's `rauc`, a private `dbus-daemon`, and a
//! stand-in for the RAUC service on that bus (the one mock the tests allow: a real RAUC service
//! needs real A/B slots and a bootloader).
//!
//! What the stand-in does: it owns `de.pengutronix.rauc` on the private bus and serves
//! `de.pengutronix.rauc.Installer` on `/` with RAUC's signatures: `InstallBundle(s, a{sv})`,
//! `Mark(s, s) -> (s, s)`, `GetPrimary() -> s`, the `Completed(i)` signal and the properties
//! `Operation`, `LastError`, `Progress (isi)`, `Compatible`, `Variant`, `BootSlot` (with
//! `PropertiesChanged`). An installation checks the bundle for real with `rauc info` against the
//! keyring (signature, compatible string), extracts it for real with `rauc extract`, and copies
//! the image into the other slot, which is a plain file here; then it makes that slot primary and
//! emits `Completed(0)`, or sets `LastError` and emits `Completed(1)`. One operation at a time
//! ("Already processing a different method", as RAUC answers). Two slots `rootfs.0` (boot name
//! `A`) and `rootfs.1` (`B`); [`RaucStandIn::reboot`] plays the bootloader: it boots the primary
//! slot if it is not marked bad, else the other one.
//!
//! A roadedge process reaches it with `DBUS_SYSTEM_BUS_ADDRESS` set to [`DbusDaemon::address`].
//! Not part of `common` (it would compile zbus servers into every test): a test that needs it
//! says `#[path = "common/rauc.rs"] mod rauc_world;` beside `mod common;`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roadedge::sim::pki::{CertFiles, TestCa};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedValue;

/// `rauc` from Debian (scripts/test installs it).
pub fn rauc_binary() -> PathBuf {
    for p in ["/usr/bin/rauc", "/usr/local/bin/rauc"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("rauc is not installed (scripts/test installs it)");
}

/// A bundle signing identity: a CA (the device keyring) and a signing certificate under it.
pub struct SigningKeys {
    pub keyring: PathBuf,
    pub signer: CertFiles,
}

impl SigningKeys {
    pub fn new(dir: &Path, name: &str) -> SigningKeys {
        let ca = TestCa::new(dir, name).unwrap();
        let signer = ca
            .signer(&format!("{name}-signer"), &format!("{name} bundle signer"))
            .unwrap();
        SigningKeys {
            keyring: ca.ca_file.clone(),
            signer,
        }
    }
}

/// Builds a verity-format bundle for `compatible` at `version` holding one `rootfs` image with
/// `image` as its content; returns the bundle's path.
pub fn build_bundle(dir: &Path, keys: &SigningKeys, compatible: &str, version: &str, image: &[u8]) -> PathBuf {
    let content = dir.join(format!("bundle-{version}"));
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("rootfs.img"), image).unwrap();
    std::fs::write(
        content.join("manifest.raucm"),
        format!(
            "[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.img\n"
        ),
    )
    .unwrap();
    let bundle = dir.join(format!("roadedge-{version}.raucb"));
    let _ = std::fs::remove_file(&bundle);
    let out = Command::new(rauc_binary())
        .arg("bundle")
        .arg(format!("--cert={}", keys.signer.cert.display()))
        .arg(format!("--key={}", keys.signer.key.display()))
        .arg(&content)
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rauc bundle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle
}

/// What `rauc info --output-format=json` tells of a bundle, or its error text.
pub fn rauc_info(bundle: &Path, keyring: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(rauc_binary())
        .arg("info")
        .arg(format!("--keyring={}", keyring.display()))
        .arg("--output-format=json")
        .arg(bundle)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("rauc info printed no JSON: {e}"))
}

/// A private `dbus-daemon` on a unix socket in a test directory.
pub struct DbusDaemon {
    pub address: String,
    child: Child,
}

impl DbusDaemon {
    pub fn start(dir: &Path) -> DbusDaemon {
        let dir = dir.join("dbus");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let daemon = ["/usr/bin/dbus-daemon", "/bin/dbus-daemon"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dbus-daemon is not installed (scripts/test installs it)");
        let child = Command::new(daemon)
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "dbus-daemon did not listen on {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        DbusDaemon {
            address: format!("unix:path={}", socket.display()),
            child,
        }
    }
}

impl Drop for DbusDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One slot of the stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: &'static str,
    pub bootname: &'static str,
    /// `good` or `bad`.
    pub state: String,
    /// The slot's "device": a plain file the installation writes the image into.
    pub device: PathBuf,
}

/// The stand-in's state, visible to the test.
#[derive(Debug)]
pub struct StandInState {
    pub compatible: String,
    pub keyring: PathBuf,
    pub slots: [Slot; 2],
    /// Index of the booted slot.
    pub booted: usize,
    /// Index of the slot the bootloader boots next.
    pub primary: usize,
    pub operation: String,
    pub last_error: String,
    pub progress: (i32, String, i32),
    /// When set, an installation stops after the bundle check and never completes (to test the
    /// client's bound and RAUC's one-operation-at-a-time answer).
    pub stall: bool,
    /// Every method call, in order (`InstallBundle <path>`, `Mark <state> <slot>`).
    pub calls: Vec<String>,
    work_dir: PathBuf,
}

impl StandInState {
    fn slot_index(&self, identifier: &str) -> Option<usize> {
        match identifier {
            "booted" => Some(self.booted),
            "other" => Some(1 - self.booted),
            name => self.slots.iter().position(|s| s.name == name),
        }
    }
}

/// The RAUC stand-in on a bus.
pub struct RaucStandIn {
    pub state: Arc<Mutex<StandInState>>,
    connection: zbus::Connection,
}

struct Installer {
    state: Arc<Mutex<StandInState>>,
}

impl RaucStandIn {
    /// Serves the stand-in on the bus at `address`; slot files and extraction space in `dir`.
    pub async fn start(address: &str, dir: &Path, compatible: &str, keyring: &Path) -> RaucStandIn {
        let dir = dir.join("rauc-standin");
        std::fs::create_dir_all(&dir).unwrap();
        let slot = |name: &'static str, bootname: &'static str| {
            let device = dir.join(format!("{name}.img"));
            std::fs::write(&device, format!("{name} as shipped")).unwrap();
            Slot {
                name,
                bootname,
                state: "good".into(),
                device,
            }
        };
        let state = Arc::new(Mutex::new(StandInState {
            compatible: compatible.to_string(),
            keyring: keyring.to_path_buf(),
            slots: [slot("rootfs.0", "A"), slot("rootfs.1", "B")],
            booted: 0,
            primary: 0,
            operation: "idle".into(),
            last_error: String::new(),
            progress: (0, String::new(), 0),
            stall: false,
            calls: Vec::new(),
            work_dir: dir.clone(),
        }));
        let connection = zbus::connection::Builder::address(address)
            .unwrap()
            .name(roadedge::ops::rauc::BUS_NAME)
            .unwrap()
            .serve_at(roadedge::ops::rauc::OBJECT_PATH, Installer { state: state.clone() })
            .unwrap()
            .build()
            .await
            .expect("the RAUC stand-in connects to the bus");
        RaucStandIn { state, connection }
    }

    /// The bootloader at a reboot: the primary slot unless it is marked bad, else the other one.
    pub fn reboot(&self) {
        let mut s = self.state.lock().unwrap();
        let next = if s.slots[s.primary].state == "bad" {
            1 - s.primary
        } else {
            s.primary
        };
        s.booted = next;
        s.primary = next;
    }

    pub fn booted_bootname(&self) -> &'static str {
        let s = self.state.lock().unwrap();
        s.slots[s.booted].bootname
    }

    pub fn slot(&self, name: &str) -> Slot {
        let s = self.state.lock().unwrap();
        s.slots.iter().find(|x| x.name == name).cloned().unwrap()
    }

    pub fn set_stall(&self, stall: bool) {
        self.state.lock().unwrap().stall = stall;
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Leaves the bus (as if RAUC stopped).
    pub async fn stop(self) {
        let _ = self.connection.close().await;
    }
}

type Shared = Arc<Mutex<StandInState>>;
type InstallerRef = zbus::object_server::InterfaceRef<Installer>;

async fn emit_progress(state: &Shared, iface: &InstallerRef, step: (i32, &str, i32)) {
    state.lock().unwrap().progress = (step.0, step.1.to_string(), step.2);
    let _ = iface.get().await.progress_changed(iface.signal_emitter()).await;
}

/// The installation job: runs after `InstallBundle` has answered, as in RAUC.
async fn install_job(connection: zbus::Connection, state: Shared, source: String) {
    let Ok(iface) = connection
        .object_server()
        .interface::<_, Installer>(roadedge::ops::rauc::OBJECT_PATH)
        .await
    else {
        return;
    };
    let emitter = iface.signal_emitter().clone();
    let code = match install_steps(&state, &iface, &source).await {
        Ok(()) => {
            emit_progress(&state, &iface, (100, "Installing done.", 1)).await;
            0
        }
        Err(message) => {
            state.lock().unwrap().last_error = message;
            let _ = iface.get().await.last_error_changed(&emitter).await;
            emit_progress(&state, &iface, (100, "Installing failed.", 1)).await;
            1
        }
    };
    state.lock().unwrap().operation = "idle".into();
    let _ = iface.get().await.operation_changed(&emitter).await;
    let _ = Installer::completed(&emitter, code).await;
}

async fn install_steps(state: &Shared, iface: &InstallerRef, source: &str) -> Result<(), String> {
    let (keyring, compatible, work_dir, target) = {
        let s = state.lock().unwrap();
        let target = 1 - s.booted;
        (
            s.keyring.clone(),
            s.compatible.clone(),
            s.work_dir.clone(),
            s.slots[target].clone(),
        )
    };
    emit_progress(state, iface, (0, "Installing", 1)).await;
    emit_progress(state, iface, (10, "Checking bundle", 2)).await;
    let info = tokio::process::Command::new(rauc_binary())
        .arg("info")
        .arg(format!("--keyring={}", keyring.display()))
        .arg("--output-format=json")
        .arg(source)
        .output()
        .await
        .map_err(|e| format!("cannot run rauc info: {e}"))?;
    if !info.status.success() {
        return Err(format!(
            "Failed to check bundle: {}",
            String::from_utf8_lossy(&info.stderr).trim()
        ));
    }
    let info: serde_json::Value =
        serde_json::from_slice(&info.stdout).map_err(|e| format!("rauc info printed no JSON: {e}"))?;
    let bundle_compatible = info["compatible"].as_str().unwrap_or_default();
    if bundle_compatible != compatible {
        return Err(format!(
            "Compatible mismatch: Expected '{compatible}' but bundle manifest has '{bundle_compatible}'"
        ));
    }
    emit_progress(state, iface, (20, "Checking bundle done.", 2)).await;
    let stall = state.lock().unwrap().stall;
    if stall {
        std::future::pending::<()>().await;
    }
    let filename = info["images"]
        .as_array()
        .and_then(|images| images.iter().find_map(|i| i.get("rootfs")))
        .and_then(|i| i["filename"].as_str())
        .ok_or("the bundle has no image for slot class rootfs")?
        .to_string();
    let extract_dir = work_dir.join("extract");
    let _ = std::fs::remove_dir_all(&extract_dir);
    emit_progress(state, iface, (40, &format!("Updating slot {}", target.name), 2)).await;
    let extract = tokio::process::Command::new(rauc_binary())
        .arg("extract")
        .arg(format!("--keyring={}", keyring.display()))
        .arg(source)
        .arg(&extract_dir)
        .output()
        .await
        .map_err(|e| format!("cannot run rauc extract: {e}"))?;
    if !extract.status.success() {
        return Err(format!(
            "Failed to extract bundle: {}",
            String::from_utf8_lossy(&extract.stderr).trim()
        ));
    }
    std::fs::copy(extract_dir.join(&filename), &target.device)
        .map_err(|e| format!("writing slot {}: {e}", target.name))?;
    let _ = std::fs::remove_dir_all(&extract_dir);
    emit_progress(state, iface, (80, &format!("Updating slot {} done", target.name), 2)).await;
    {
        let mut s = state.lock().unwrap();
        let index = s.slot_index(target.name).unwrap();
        s.slots[index].state = "good".into();
        s.primary = index;
    }
    Ok(())
}

#[zbus::interface(name = "de.pengutronix.rauc.Installer")]
impl Installer {
    async fn install_bundle(
        &self,
        source: String,
        _args: HashMap<String, OwnedValue>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<()> {
        {
            let mut s = self.state.lock().unwrap();
            s.calls.push(format!("InstallBundle {source}"));
            if s.operation != "idle" {
                return Err(zbus::fdo::Error::Failed("Already processing a different method".into()));
            }
            s.operation = "installing".into();
            s.last_error.clear();
        }
        let _ = self.operation_changed(&emitter).await;
        tokio::spawn(install_job(connection.clone(), self.state.clone(), source));
        Ok(())
    }

    async fn mark(&self, state: String, slot_identifier: String) -> zbus::fdo::Result<(String, String)> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("Mark {state} {slot_identifier}"));
        let index = s
            .slot_index(&slot_identifier)
            .ok_or_else(|| zbus::fdo::Error::Failed(format!("No slot with class or name '{slot_identifier}' found")))?;
        match state.as_str() {
            "good" => s.slots[index].state = "good".into(),
            "bad" => {
                s.slots[index].state = "bad".into();
                if s.primary == index {
                    s.primary = 1 - index;
                }
            }
            "active" => {
                s.slots[index].state = "good".into();
                s.primary = index;
            }
            other => return Err(zbus::fdo::Error::Failed(format!("unknown subcommand {other}"))),
        }
        let name = s.slots[index].name;
        Ok((name.to_string(), format!("marked slot {name} as {state}")))
    }

    async fn get_primary(&self) -> String {
        let s = self.state.lock().unwrap();
        s.slots[s.primary].name.to_string()
    }

    #[zbus(signal)]
    async fn completed(emitter: &SignalEmitter<'_>, result: i32) -> zbus::Result<()>;

    #[zbus(property)]
    async fn operation(&self) -> String {
        self.state.lock().unwrap().operation.clone()
    }

    #[zbus(property)]
    async fn last_error(&self) -> String {
        self.state.lock().unwrap().last_error.clone()
    }

    #[zbus(property)]
    async fn progress(&self) -> (i32, String, i32) {
        self.state.lock().unwrap().progress.clone()
    }

    #[zbus(property)]
    async fn compatible(&self) -> String {
        self.state.lock().unwrap().compatible.clone()
    }

    #[zbus(property)]
    async fn variant(&self) -> String {
        String::new()
    }

    #[zbus(property)]
    async fn boot_slot(&self) -> String {
        let s = self.state.lock().unwrap();
        s.slots[s.booted].bootname.to_string()
    }
}
