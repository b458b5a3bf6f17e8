//! RAUC client over D-Bus (`de.pengutronix.rauc.Installer` on `/`, bus name `de.pengutronix.rauc`).
//!
//! Role: the one door to the A/B update service of a RAUC image. It installs a bundle into the
//! inactive slot (reporting progress, waiting for RAUC's `Completed` signal within a bound), marks
//! the booted slot good (after the health gate) or bad (to fall back to the other slot at the next
//! boot), and reads the booted slot and the system's compatible string.
//!
//! Owns: the D-Bus connection and the mapping of RAUC's answers to [`RaucError`].
//! Must not: decide when to install, check update signatures, stage files or reboot. That is the
//! OTA service's job (it calls this client through its installer abstraction).
//!
//! Usage:
//! ```no_run
//! # async fn example() -> Result<(), roadedge::ops::rauc::RaucError> {
//! use std::time::Duration;
//! use roadedge::ops::rauc::Rauc;
//! let rauc = Rauc::connect_system().await?;          // Err(NotRunning) on images without RAUC
//! let done = rauc
//!     .install("/var/lib/roadedge/ota/update.raucb".as_ref(), Duration::from_secs(600), |p| {
//!         println!("{}% {}", p.percent, p.message);
//!     })
//!     .await?;
//! println!("installed {:?}; booted from {}", done.last_progress, rauc.booted_slot().await?);
//! // ... reboot into the new slot; the new version then calls one of:
//! rauc.mark_good().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::zvariant::Value;

/// Well-known bus name of the RAUC service.
pub const BUS_NAME: &str = "de.pengutronix.rauc";
/// Object path of the installer.
pub const OBJECT_PATH: &str = "/";
/// Interface name of the installer.
pub const INTERFACE: &str = "de.pengutronix.rauc.Installer";

/// Every method call to RAUC is answered within this bound (RAUC answers `InstallBundle` as soon
/// as it has started the job; the job itself is bounded by [`Rauc::install`]'s `limit`).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The installer interface as RAUC exports it (see RAUC's `de.pengutronix.rauc.Installer.xml`).
#[zbus::proxy(
    interface = "de.pengutronix.rauc.Installer",
    default_service = "de.pengutronix.rauc",
    default_path = "/"
)]
trait Installer {
    /// Starts installing `source` (a path or URL); answers once started. `args` are RAUC's
    /// install options (e.g. `ignore-compatible`); none are used here.
    fn install_bundle(&self, source: &str, args: HashMap<&str, Value<'_>>) -> zbus::Result<()>;

    /// Marks a slot (`booted`, `other` or a slot name) `good`, `bad` or `active`; answers the
    /// affected slot's name and a message.
    fn mark(&self, state: &str, slot_identifier: &str) -> zbus::Result<(String, String)>;

    /// The slot the bootloader will boot next.
    fn get_primary(&self) -> zbus::Result<String>;

    /// An installation finished: 0 on success, otherwise `LastError` tells why.
    #[zbus(signal)]
    fn completed(&self, result: i32) -> zbus::Result<()>;

    /// `idle` or the running operation (`installing`).
    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;

    /// The error of the last failed operation.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;

    /// (percentage, message, nesting depth) of the running installation.
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;

    /// The system's compatible string (bundles must carry the same).
    #[zbus(property)]
    fn compatible(&self) -> zbus::Result<String>;

    /// The boot name of the slot the system booted from.
    #[zbus(property)]
    fn boot_slot(&self) -> zbus::Result<String>;
}

/// What went wrong talking to RAUC.
#[derive(Debug, thiserror::Error)]
pub enum RaucError {
    /// No D-Bus bus at the address (no system bus, wrong address, permission).
    #[error("cannot connect to the D-Bus bus{}: {source}", address.as_deref().map(|a| format!(" at {a}")).unwrap_or_default())]
    Connect {
        address: Option<String>,
        #[source]
        source: zbus::Error,
    },
    /// The bus is there but no RAUC service answers on it (an image without RAUC).
    #[error("RAUC is not running on the bus ({BUS_NAME}): {0}")]
    NotRunning(String),
    /// RAUC is already running an operation (one installation at a time).
    #[error("RAUC is busy ({operation})")]
    Busy { operation: String },
    /// RAUC refused to start the installation (unreadable path, RAUC's own refusal).
    #[error("RAUC refused to install {bundle}: {message}")]
    Refused { bundle: String, message: String },
    /// The installation ran and failed (bad signature, incompatible bundle, write error).
    #[error("RAUC installation failed (result {code}): {message}")]
    Failed { code: i32, message: String },
    /// No `Completed` signal within the bound; RAUC may still be working.
    #[error("RAUC did not complete the installation within {limit:?} (last progress: {last})")]
    Timeout { limit: Duration, last: String },
    /// RAUC refused to mark the slot.
    #[error("RAUC refused to mark slot {slot} {state}: {message}")]
    Mark {
        state: MarkState,
        slot: String,
        message: String,
    },
    /// The bus connection broke mid-operation, or RAUC answered something unexpected.
    #[error("D-Bus: {0}")]
    Bus(#[source] zbus::Error),
}

type Result<T> = std::result::Result<T, RaucError>;

/// One progress step of an installation, as RAUC reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 0..=100.
    pub percent: i32,
    pub message: String,
    /// Nesting of the step (RAUC reports sub-steps deeper).
    pub depth: i32,
}

/// A finished, successful installation.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The last progress step RAUC reported (normally `100`, "Installing done.").
    pub last_progress: Option<Progress>,
    /// The slot the bootloader boots next (the freshly written one).
    pub primary: Option<String>,
}

/// What a slot can be marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkState {
    /// Boot it again (the update is healthy).
    Good,
    /// Do not boot it again (the bootloader falls back to the other slot).
    Bad,
    /// Boot it next.
    Active,
}

impl MarkState {
    /// RAUC's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkState::Good => "good",
            MarkState::Bad => "bad",
            MarkState::Active => "active",
        }
    }
}

impl std::fmt::Display for MarkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RAUC's answer to a mark request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// The slot that was marked (e.g. `rootfs.1`).
    pub slot: String,
    pub message: String,
}

/// A connection to the RAUC service.
#[derive(Clone)]
pub struct Rauc {
    installer: InstallerProxy<'static>,
    properties: zbus::fdo::PropertiesProxy<'static>,
}

impl Rauc {
    /// Connects to RAUC on the system bus (`$DBUS_SYSTEM_BUS_ADDRESS` if set, else the standard
    /// socket) and checks that RAUC answers: [`RaucError::NotRunning`] tells an image without RAUC.
    pub async fn connect_system() -> Result<Rauc> {
        let builder =
            zbus::connection::Builder::system().map_err(|source| RaucError::Connect { address: None, source })?;
        let connection = builder
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(|source| RaucError::Connect { address: None, source })?;
        Rauc::on(connection).await
    }

    /// Connects to RAUC on the bus at `address` (a D-Bus address such as
    /// `unix:path=/run/dbus/system_bus_socket`).
    pub async fn connect(address: &str) -> Result<Rauc> {
        let connect_error = |source| RaucError::Connect {
            address: Some(address.to_string()),
            source,
        };
        let connection = zbus::connection::Builder::address(address)
            .map_err(connect_error)?
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(connect_error)?;
        Rauc::on(connection).await
    }

    async fn on(connection: zbus::Connection) -> Result<Rauc> {
        // Properties are read fresh each time: a cached `Operation` could hide a running install.
        let installer = InstallerProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(RaucError::Bus)?;
        let properties = zbus::fdo::PropertiesProxy::builder(&connection)
            .destination(BUS_NAME)
            .map_err(RaucError::Bus)?
            .path(OBJECT_PATH)
            .map_err(RaucError::Bus)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(RaucError::Bus)?;
        let rauc = Rauc { installer, properties };
        // Probes the service (and starts it where the bus activates RAUC on demand).
        rauc.compatible().await?;
        Ok(rauc)
    }

    /// The system's compatible string.
    pub async fn compatible(&self) -> Result<String> {
        self.installer.compatible().await.map_err(service_error)
    }

    /// The boot name of the slot the system booted from (e.g. `A`).
    pub async fn booted_slot(&self) -> Result<String> {
        self.installer.boot_slot().await.map_err(service_error)
    }

    /// The slot the bootloader boots next.
    pub async fn primary_slot(&self) -> Result<String> {
        self.installer.get_primary().await.map_err(service_error)
    }

    /// `idle`, or the operation RAUC is running.
    pub async fn operation(&self) -> Result<String> {
        self.installer.operation().await.map_err(service_error)
    }

    /// Installs the bundle at `bundle` (a path on this device, readable by RAUC) into the inactive
    /// slot. Calls `on_progress` for every progress step RAUC reports, in order, and returns once
    /// RAUC signals completion; waits at most `limit` for it. The next boot uses the new slot.
    pub async fn install(
        &self,
        bundle: &Path,
        limit: Duration,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Installed> {
        let source = bundle.to_string_lossy().into_owned();
        let operation = self.operation().await?;
        if operation != "idle" {
            return Err(RaucError::Busy { operation });
        }
        // Subscribe before starting so neither the progress nor the completion can be missed.
        let mut completed = self.installer.receive_completed().await.map_err(RaucError::Bus)?;
        let mut changes = self
            .properties
            .receive_properties_changed()
            .await
            .map_err(RaucError::Bus)?;
        self.installer
            .install_bundle(&source, HashMap::new())
            .await
            .map_err(|e| match service_error(e) {
                RaucError::Bus(e) => {
                    let Some((_, message)) = error_reply(&e) else {
                        return RaucError::Bus(e);
                    };
                    // RAUC answers "Already processing a different method" while it is busy.
                    if message.to_lowercase().contains("already processing") {
                        RaucError::Busy { operation: message }
                    } else {
                        RaucError::Refused {
                            bundle: source.clone(),
                            message,
                        }
                    }
                }
                other => other,
            })?;

        let mut last: Option<Progress> = None;
        let deadline = tokio::time::Instant::now() + limit;
        let code = loop {
            tokio::select! {
                // Progress queued before the completion is delivered first.
                biased;
                change = changes.next() => {
                    let Some(change) = change else {
                        return Err(RaucError::Bus(zbus::Error::Failure("the bus connection closed during the installation".into())));
                    };
                    if let Some(progress) = progress_of(&change) {
                        on_progress(&progress);
                        last = Some(progress);
                    }
                }
                signal = completed.next() => {
                    let Some(signal) = signal else {
                        return Err(RaucError::Bus(zbus::Error::Failure("the bus connection closed during the installation".into())));
                    };
                    break signal.args().map_err(RaucError::Bus)?.result;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(RaucError::Timeout {
                        limit,
                        last: last.map(|p| format!("{}% {}", p.percent, p.message)).unwrap_or_else(|| "none".into()),
                    });
                }
            }
        };
        if code != 0 {
            let message = self
                .installer
                .last_error()
                .await
                .unwrap_or_else(|e| format!("(LastError unreadable: {e})"));
            return Err(RaucError::Failed { code, message });
        }
        Ok(Installed {
            last_progress: last,
            primary: self.primary_slot().await.ok(),
        })
    }

    /// Marks the booted slot good: the update passed its health gate and is kept.
    pub async fn mark_good(&self) -> Result<Marked> {
        self.mark(MarkState::Good, "booted").await
    }

    /// Marks the booted slot bad: the bootloader falls back to the other slot at the next boot.
    pub async fn mark_bad(&self) -> Result<Marked> {
        self.mark(MarkState::Bad, "booted").await
    }

    /// Marks `slot` (`booted`, `other`, or a slot name such as `rootfs.1`).
    pub async fn mark(&self, state: MarkState, slot: &str) -> Result<Marked> {
        match self.installer.mark(state.as_str(), slot).await.map_err(service_error) {
            Ok((slot, message)) => Ok(Marked { slot, message }),
            Err(RaucError::Bus(e)) => match error_reply(&e) {
                Some((_, message)) => Err(RaucError::Mark {
                    state,
                    slot: slot.to_string(),
                    message,
                }),
                None => Err(RaucError::Bus(e)),
            },
            Err(e) => Err(e),
        }
    }
}

/// The D-Bus error name and message of a refused call. zbus delivers a method's error as
/// `MethodError`, and the same error read through the `Properties` interface as `FDO`.
fn error_reply(e: &zbus::Error) -> Option<(String, String)> {
    use zbus::DBusError;
    match e {
        zbus::Error::MethodError(name, message, _) => Some((name.to_string(), message.clone().unwrap_or_default())),
        zbus::Error::FDO(fdo) => Some((
            fdo.name().to_string(),
            fdo.description().unwrap_or_default().to_string(),
        )),
        _ => None,
    }
}

/// `NotRunning` when nobody owns RAUC's name on the bus; everything else stays a bus error.
fn service_error(e: zbus::Error) -> RaucError {
    match error_reply(&e) {
        Some((name, message))
            if name == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
        {
            RaucError::NotRunning(if message.is_empty() { name } else { message })
        }
        _ => RaucError::Bus(e),
    }
}

/// The `Progress` value of a `PropertiesChanged` signal of the installer, if it carries one.
fn progress_of(change: &zbus::fdo::PropertiesChanged) -> Option<Progress> {
    let args = change.args().ok()?;
    if args.interface_name.as_str() != INTERFACE {
        return None;
    }
    let value = args.changed_properties.get("Progress")?;
    let (percent, message, depth) = <(i32, String, i32)>::try_from(value.try_clone().ok()?).ok()?;
    Some(Progress {
        percent,
        message,
        depth,
    })
}
