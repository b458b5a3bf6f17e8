//! Wiring of the appliance: opens the store, starts the uplink, the command plane, the device
//! gateways and the web page, and shuts them down in order (stop intake, drain, flush the store)
//! within 10 s.
//! Holds no logic of its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::command::{CommandPlane, EdgeInfo};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ops::systemd;
use crate::store::{Store, StoreOptions};
use crate::time::now_ms;
use crate::uplink::{self, UplinkSettings};

/// Version of the crate this binary was built from; what it reports is [`version`] (its stamp).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version string reported on the status topic, the web page and `--version`: the binary's
/// version stamp (see [`crate::ops::ota::version`]).
pub fn version() -> &'static str {
    crate::ops::ota::version::current()
}

/// Starts an extra record source beside the configured gateways: given the store and the intake
/// stop token, it returns its task. The source stops with the intake, before the store flushes.
pub type IntakeSource = Arc<dyn Fn(Store, CancellationToken) -> tokio::task::JoinHandle<()> + Send + Sync>;

/// Extra sources started beside the configured ones (the caller's, e.g. `roadedge sim synthetic`
/// for the durability tests); the appliance itself starts no simulator.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Started at every start of the core.
    pub sources: Vec<IntakeSource>,
    /// The file the configuration was read from: remote management (`config.*`, the page's
    /// Configuration) writes it. `None`: started from a configuration in memory, which cannot
    /// be changed remotely. Set by [`run_from_file`].
    pub config_path: Option<std::path::PathBuf>,
    /// The web page's sessions, kept across in-process restarts of the core (a configuration
    /// apply must not log out the person who has to confirm it).
    pub sessions: Arc<crate::web::auth::SessionCarry>,
}

/// Returned by [`run_with`] when the core stopped to start again with the configuration file
/// (a configuration apply, its revert, or the `restart` command); [`run_from_file`] does that.
#[derive(Debug, thiserror::Error)]
#[error("restarting the core with the configuration file")]
pub struct ReloadRequired;

/// Runs the appliance from the configuration file at `path` until `shutdown`: the supervisor of
/// in-process restarts. The core (store, uplink, gateways, web) stops gracefully and starts
/// again with the file on disk whenever a configuration apply, its revert or `restart` asks for
/// it; a pending apply whose deadline passed while nothing ran is reverted before the start, and
/// a new configuration whose core cannot start is reverted at once. `started` is called at every
/// start of the core. An OTA restart ([`crate::ops::ota::RestartRequired`]) still ends the
/// process (a new binary cannot start in place).
pub async fn run_from_file(
    path: &std::path::Path,
    options: RunOptions,
    shutdown: CancellationToken,
    mut started: impl FnMut(&Appliance),
) -> anyhow::Result<()> {
    let mut options = options;
    options.config_path = Some(path.to_path_buf());
    let mut first = true;
    loop {
        if crate::ops::config_apply::recover_at_start(path, now_ms()) {
            tracing::warn!(path = %path.display(), "a configuration apply expired unconfirmed while the appliance was not running: the previous file was restored");
        }
        let config = Config::load(path, crate::config::FileCheck::Check)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if !first {
            crate::ops::logging::apply_configured(&config.logging.level);
        }
        first = false;
        let result = run_with(config, options.clone(), shutdown.clone(), |a| started(a)).await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is::<ReloadRequired>() => {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                tracing::warn!("starting the core again with {}", path.display());
            }
            Err(e) if e.is::<crate::ops::ota::RestartRequired>() => return Err(e),
            Err(e) => {
                if crate::ops::config_apply::revert_failed_start(path, &format!("{e:#}")) {
                    tracing::error!("the new configuration could not start ({e:#}): the previous one was restored");
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// A running appliance: what the demo and tests need to look at.
#[derive(Clone)]
pub struct Appliance {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub plane: Arc<CommandPlane>,
    /// The edge's own alarms (raise once, clear once).
    pub alarms: Arc<crate::ops::alarms::Alarms>,
    /// The GB/T 37987 reader service (when `readers` is configured).
    pub readers: Option<Arc<crate::reader::ReaderService>>,
    /// The identity registry (plates, VINs, phones, tags): the service the `registry.*` edge
    /// commands and the web page call.
    pub registry: Arc<crate::fusion::Registry>,
    /// Where the web page is served (when `web` is configured).
    pub web: Option<std::net::SocketAddr>,
    /// Updates of roadedge itself (`ota.*` commands, the web page's Update page).
    pub ota: Arc<crate::ops::ota::OtaService>,
    /// Vehicle data fusion (when `fusion` is configured): the recent passages.
    pub fusion: Option<Arc<crate::fusion::FusionService>>,
    /// Remote management of the configuration (`config.*`, `log_level`, `restart`, the page's
    /// Configuration).
    pub config: Arc<crate::ops::config_apply::ConfigService>,
    /// JT/T 808 terminal provisioning (when `jt808` is configured).
    pub jt808: Option<Arc<crate::gateway::jt808::Provisioning>>,
}

/// Delays between attempts to open a database that is busy, locked by another instance,
/// unreadable or failing; after the last one the start fails (exit 1) and systemd restarts the unit.
const STORE_RETRY_DELAYS: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Opens the store, retrying with backoff while it is unavailable (never moving it aside for
/// that). `None` when `shutdown` came first.
async fn open_store(
    options: StoreOptions,
    space: crate::store::SpaceOptions,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(Store, crate::store::OpenReport)>> {
    let path = options.path.clone();
    let mut delays = STORE_RETRY_DELAYS.iter();
    loop {
        let attempt = {
            let (options, metrics) = (options.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || Store::open_with(options, space, metrics))
                .await
                .context("the store opening task failed")?
        };
        match attempt {
            Ok(opened) => return Ok(Some(opened)),
            Err(crate::store::StoreError::Unavailable(why)) => match delays.next() {
                Some(delay) => {
                    tracing::error!(path = %path.display(), "the database is not usable now ({why}); it is left in place, retrying in {delay:?}");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(*delay) => {}
                    }
                }
                None => {
                    return Err(anyhow::anyhow!(
                        "the database at {} stayed unusable ({why}); it was left in place; giving up so the service manager restarts us",
                        path.display()
                    ))
                }
            },
            Err(e) => return Err(e).with_context(|| format!("opening the store at {}", path.display())),
        }
    }
}

/// Runs the appliance until `shutdown` is cancelled.
pub async fn run(config: Config, options: RunOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(config, options, shutdown, |_| {}).await
}

/// Like [`run`], calling `started` once everything is up.
pub async fn run_with(
    config: Config,
    options: RunOptions,
    shutdown: CancellationToken,
    started: impl FnOnce(&Appliance),
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    // Before the store: a new version that keeps failing before its health gate is rolled back.
    let ota = crate::ops::ota::OtaService::new(
        config
            .ota
            .as_ref()
            .map(|o| crate::ops::ota::OtaSettings::new(o, &config.storage.path)),
    );
    if ota.boot() == crate::ops::ota::BootAction::Restart {
        return Err(crate::ops::ota::RestartRequired("previous").into());
    }
    let store_options = StoreOptions {
        path: config.storage.path.clone(),
        max_bytes: config.storage.max_bytes,
        edge_id: config.edge.id.to_string(),
    };
    let space = crate::store::SpaceOptions {
        reserve_bytes: config.storage.reserve_bytes,
        disk_low_bytes: config.storage.disk_low_bytes,
    };
    let Some((store, report)) = open_store(store_options, space, metrics.clone(), &shutdown).await? else {
        return Ok(());
    };
    if let Some(moved) = &report.moved_aside {
        tracing::error!(
            moved_to = %moved.display(),
            reason = report.corruption.as_deref().unwrap_or(""),
            "the database was unusable: moved aside, started with a fresh one"
        );
    }

    let alarms = crate::ops::alarms::Alarms::open(store.clone())
        .await
        .context("loading the active alarms")?;

    let edge = EdgeInfo {
        edge_id: config.edge.id.to_string(),
        version: version().to_string(),
        started_ms: now_ms(),
    };
    let plane = Arc::new(
        CommandPlane::new(store.clone(), edge, config.uplink.command_ttl, metrics.clone())
            .with_max_ttl(config.uplink.max_command_ttl),
    );
    let registry_max = config
        .fusion
        .as_ref()
        .map_or(crate::config::FusionConfig::DEFAULT_REGISTRY_MAX_ENTRIES, |f| {
            f.registry_max_entries
        });
    let registry = crate::fusion::Registry::open(store.clone(), registry_max, metrics.clone())
        .await
        .context("opening the identity registry")?;
    crate::fusion::registry::register_actions(registry.clone(), plane.edge_actions());
    ota.attach(plane.clone(), alarms.clone(), metrics.clone());
    let config_service = crate::ops::config_apply::ConfigService::new(&config, options.config_path.clone());
    config_service.attach(plane.clone(), metrics.clone(), ota.clone());
    // Weak: the configuration service holds the OTA service already.
    let pending_apply = Arc::downgrade(&config_service);
    ota.refuse_while(move || {
        pending_apply.upgrade()?.pending().map(|p| {
            format!(
                "a configuration apply (request `{}`) is waiting for confirmation",
                p.request_id
            )
        })
    });
    match plane.requeue_in_flight().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "commands delivered before the restart are queued again"),
        Err(e) => tracing::warn!("cannot requeue commands of the previous run: {e}"),
    }

    let tls = if config.uplink.url.tls {
        let cert_and_key = config
            .uplink
            .cert_file
            .as_deref()
            .zip(config.uplink.key_file.as_deref());
        Some(Arc::new(
            crate::tls::client_config(config.uplink.ca_file.as_deref(), cert_and_key).context("uplink TLS")?,
        ))
    } else {
        None
    };
    let settings = UplinkSettings {
        url: config.uplink.url.clone(),
        tls,
        edge_id: config.edge.id.to_string(),
        version: version().to_string(),
        prefix: config.uplink.topic_prefix.clone(),
        keep_alive: config.uplink.keep_alive,
        max_inflight: config.uplink.max_inflight,
        metrics_interval: config.uplink.metrics_interval,
    };

    // Intake stops first, the uplink and the store last, so everything accepted gets committed.
    let intake_stop = CancellationToken::new();
    let core_stop = CancellationToken::new();
    let mut intake = Vec::new();
    // Fusion first: it switches on the store's tag-report journal before any reader can commit
    // (and be acknowledged for) a tag report. It follows committed records only; it stops with
    // the intake, and the passes it leaves open are derived again from the journal next start.
    let fusion = match crate::fusion::FusionSettings::from_config(&config) {
        Some(settings) => {
            let deps = crate::fusion::service::FusionDeps {
                store: store.clone(),
                registry: registry.clone(),
                metrics: metrics.clone(),
            };
            let (service, task) = crate::fusion::service::start(settings, deps, intake_stop.clone());
            crate::fusion::service::register_actions(service.clone(), plane.edge_actions());
            intake.push(task);
            Some(service)
        }
        None => None,
    };
    let mut provisioning = None;
    if let Some(jt808) = &config.jt808 {
        let listener = crate::link::bind(jt808.server.listen)
            .await
            .with_context(|| format!("jt808.listen: binding {}", jt808.server.listen))?;
        let settings = crate::gateway::jt808::ServerSettings::from_config(jt808).context("jt808.tls")?;
        let live = Arc::new(crate::link::Registry::default());
        let service =
            crate::gateway::jt808::Provisioning::new(store.clone(), jt808.auth, jt808.max_terminals, live.clone());
        crate::gateway::jt808::provisioning::register_actions(service.clone(), plane.edge_actions());
        provisioning = Some(service);
        intake.push(crate::gateway::jt808::spawn_with(
            listener,
            settings,
            store.clone(),
            plane.clone(),
            metrics.clone(),
            live,
            intake_stop.clone(),
        ));
    }
    for source in &options.sources {
        intake.push(source(store.clone(), intake_stop.clone()));
    }
    if let Some(section) = &config.gbt32960 {
        let settings = crate::gateway::gbt32960::GatewaySettings::from_config(section).context("gbt32960.tls")?;
        let gateway = crate::gateway::gbt32960::start(
            settings,
            store.clone(),
            plane.clone(),
            metrics.clone(),
            intake_stop.clone(),
        )
        .await
        .with_context(|| format!("gbt32960: listening on {}", section.server.listen))?;
        intake.push(gateway.task);
    }
    // GB/T 37987 readers (link supervisors, dial-in listener, reader service) and the cron jobs.
    let readers = match &config.readers {
        Some(section) => {
            let firmware_dir = config
                .storage
                .path
                .parent()
                .map(|d| d.join("firmware"))
                .unwrap_or_else(|| std::path::PathBuf::from("firmware"));
            let _ = std::fs::create_dir_all(&firmware_dir);
            let deps = crate::reader::ReaderDeps {
                store: store.clone(),
                plane: plane.clone(),
                metrics: metrics.clone(),
                firmware_dir,
            };
            let (service, task) = crate::reader::start(section, deps, intake_stop.clone()).await?;
            intake.push(task);
            Some(service)
        }
        None => None,
    };
    // The web page, last of the intake so it can show every service.
    let web_addr = match &config.web {
        Some(section) => {
            let services = crate::web::Services {
                metrics: metrics.clone(),
                store: store.clone(),
                plane: plane.clone(),
                alarms: alarms.clone(),
                readers: readers.clone(),
                registry: registry.clone(),
                ota: ota.clone(),
                fusion: fusion.clone(),
                config: config_service.clone(),
                sessions: options.sessions.clone(),
                jt808: provisioning.clone(),
                gbt32960_enabled: config.gbt32960.is_some(),
                jt808_enabled: config.jt808.is_some(),
                core: tokio::runtime::Handle::current(),
            };
            let server = crate::web::start(section, services, intake_stop.clone()).await?;
            intake.push(server.task);
            Some(server.local_addr)
        }
        None => None,
    };
    if !config.schedule.is_empty() {
        let ctx = crate::ops::scheduler::JobContext {
            store: store.clone(),
            metrics: metrics.clone(),
            edge_id: config.edge.id.to_string(),
            readers: readers.clone(),
        };
        intake.push(tokio::spawn(crate::ops::scheduler::run(
            config.schedule.clone(),
            ctx,
            intake_stop.clone(),
        )));
    }
    let uplink_task = tokio::spawn(uplink::run(
        settings,
        store.clone(),
        plane.clone(),
        metrics.clone(),
        core_stop.clone(),
    ));
    let expiry_task = tokio::spawn(plane.clone().run_expiry(core_stop.clone()));
    let watchdog_task = tokio::spawn(systemd::watchdog(store.clone(), core_stop.clone()));
    // Reader links, the wall clock and certificate expiry raise and clear the edge's alarms.
    intake.push(tokio::spawn(crate::ops::monitors::run(
        crate::ops::monitors::MonitorSettings::from_config(&config),
        alarms.clone(),
        metrics.clone(),
        intake_stop.clone(),
    )));

    started(&Appliance {
        metrics: metrics.clone(),
        store: store.clone(),
        plane: plane.clone(),
        alarms: alarms.clone(),
        readers: readers.clone(),
        registry: registry.clone(),
        web: web_addr,
        ota: ota.clone(),
        fusion: fusion.clone(),
        config: config_service.clone(),
        jt808: provisioning.clone(),
    });
    systemd::notify_ready();
    tracing::info!(edge = %config.edge.id, version = version(), "roadedge running");
    // Reports a decided update and runs the health gate of a new version.
    intake.push(tokio::spawn(ota.clone().after_start(intake_stop.clone())));
    // Confirms or reverts a configuration applied before this start.
    intake.push(tokio::spawn(config_service.clone().watch(intake_stop.clone())));

    let restart = ota.restart_token();
    let reload = config_service.reload_token();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = restart.cancelled() => tracing::warn!("stopping to restart into the {} binary", ota.restart_kind()),
        _ = reload.cancelled() => tracing::warn!("stopping the core to start it again with the configuration file"),
    }
    systemd::notify_stopping();
    tracing::info!("shutting down");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(9);
    intake_stop.cancel();
    for t in intake {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    core_stop.cancel();
    for t in [uplink_task, expiry_task, watchdog_task] {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    let _ = tokio::time::timeout_at(deadline, store.close()).await;
    tracing::info!("stopped");
    if restart.is_cancelled() {
        return Err(crate::ops::ota::RestartRequired(ota.restart_kind()).into());
    }
    if reload.is_cancelled() && !shutdown.is_cancelled() {
        return Err(ReloadRequired.into());
    }
    Ok(())
}
