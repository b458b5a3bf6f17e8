//! The RAUC client (`roadedge::ops::rauc`) against real bundles built and checked with Debian's
//! `rauc`, over a real private `dbus-daemon`, talking to the RAUC stand-in of
//! `tests/common/rauc.rs` (the stand-in checks and extracts the bundles with `rauc` for real).

mod common;
#[path = "common/rauc.rs"]
mod rauc_world;

use std::path::Path;
use std::time::Duration;

use rauc_world::{build_bundle, rauc_info, DbusDaemon, RaucStandIn, SigningKeys};
use roadedge::ops::rauc::{MarkState, Progress, Rauc, RaucError};

const COMPATIBLE: &str = "roadedge-cabinet-arm64";
const LIMIT: Duration = Duration::from_secs(60);

/// An image of `label` followed by 16 KiB that do not compress (RAUC wants a squashfs larger
/// than one 4 KiB block).
fn image(label: &str) -> Vec<u8> {
    let mut bytes = label.as_bytes().to_vec();
    bytes.extend((0..16 * 1024).map(|_| rand::random::<u8>()));
    bytes
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 90 s"))
}

struct World {
    _dir: tempfile::TempDir,
    keys: SigningKeys,
    bus: DbusDaemon,
    standin: RaucStandIn,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let keys = SigningKeys::new(dir.path(), "device");
        let bus = DbusDaemon::start(dir.path());
        let standin = bounded(
            "starting the stand-in",
            RaucStandIn::start(&bus.address, dir.path(), COMPATIBLE, &keys.keyring),
        )
        .await;
        World {
            _dir: dir,
            keys,
            bus,
            standin,
        }
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    async fn client(&self) -> Rauc {
        bounded("connecting", Rauc::connect(&self.bus.address)).await.unwrap()
    }
}

#[tokio::test]
async fn a_real_bundle_is_signed_and_verified_by_rauc_info_and_a_foreign_keyring_rejects_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = SigningKeys::new(dir.path(), "device");
    let other = SigningKeys::new(dir.path(), "other");
    let rootfs = image("root filesystem 0.2.0");
    let bundle = build_bundle(dir.path(), &keys, COMPATIBLE, "0.2.0", &rootfs);

    let info = rauc_info(&bundle, &keys.keyring).expect("rauc info verifies the bundle");
    assert_eq!(info["compatible"], COMPATIBLE);
    assert_eq!(info["version"], "0.2.0");
    let image = &info["images"][0]["rootfs"];
    assert_eq!(image["filename"], "rootfs.img");
    assert_eq!(image["size"], rootfs.len());

    let refused = rauc_info(&bundle, &other.keyring).expect_err("a foreign keyring does not verify it");
    assert!(refused.to_lowercase().contains("signature"), "{refused}");
}

#[tokio::test]
async fn an_install_over_dbus_reports_progress_writes_the_other_slot_and_mark_good_keeps_it() {
    let world = World::new().await;
    let rauc = world.client().await;
    assert_eq!(bounded("compatible", rauc.compatible()).await.unwrap(), COMPATIBLE);
    assert_eq!(bounded("booted slot", rauc.booted_slot()).await.unwrap(), "A");
    assert_eq!(bounded("operation", rauc.operation()).await.unwrap(), "idle");

    let rootfs = image("root filesystem 0.2.0 for the cabinet");
    let bundle = build_bundle(world.dir(), &world.keys, COMPATIBLE, "0.2.0", &rootfs);
    let mut steps: Vec<Progress> = Vec::new();
    let installed = bounded("install", rauc.install(&bundle, LIMIT, |p| steps.push(p.clone())))
        .await
        .expect("the install completes");

    let percents: Vec<i32> = steps.iter().map(|p| p.percent).collect();
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress goes forward: {percents:?}"
    );
    assert_eq!(percents.first(), Some(&0), "{steps:?}");
    assert_eq!(steps.last().map(|p| p.message.as_str()), Some("Installing done."));
    assert!(steps.iter().any(|p| p.message == "Checking bundle done."), "{steps:?}");
    assert_eq!(installed.last_progress.as_ref(), steps.last());
    assert_eq!(installed.primary.as_deref(), Some("rootfs.1"));
    assert_eq!(std::fs::read(world.standin.slot("rootfs.1").device).unwrap(), rootfs);
    assert_eq!(
        std::fs::read_to_string(world.standin.slot("rootfs.0").device).unwrap(),
        "rootfs.0 as shipped",
        "the booted slot is not touched"
    );
    assert_eq!(
        world.standin.calls(),
        vec![format!("InstallBundle {}", bundle.display())]
    );

    world.standin.reboot();
    assert_eq!(bounded("booted slot", rauc.booted_slot()).await.unwrap(), "B");
    let marked = bounded("mark good", rauc.mark_good()).await.unwrap();
    assert_eq!(marked.slot, "rootfs.1");
    assert!(marked.message.contains("good"), "{marked:?}");
    assert_eq!(world.standin.slot("rootfs.1").state, "good");
    world.standin.reboot();
    assert_eq!(
        world.standin.booted_bootname(),
        "B",
        "a slot marked good is booted again"
    );
    assert_eq!(
        world.standin.calls().last().map(String::as_str),
        Some("Mark good booted")
    );
}

#[tokio::test]
async fn mark_bad_after_an_update_falls_back_to_the_previous_slot_at_the_next_boot() {
    let world = World::new().await;
    let rauc = world.client().await;
    let bundle = build_bundle(
        world.dir(),
        &world.keys,
        COMPATIBLE,
        "0.3.0",
        &image("an update that fails its health gate"),
    );
    bounded("install", rauc.install(&bundle, LIMIT, |_| {})).await.unwrap();
    world.standin.reboot();
    assert_eq!(bounded("booted slot", rauc.booted_slot()).await.unwrap(), "B");

    let marked = bounded("mark bad", rauc.mark_bad()).await.unwrap();
    assert_eq!(marked.slot, "rootfs.1");
    assert_eq!(world.standin.slot("rootfs.1").state, "bad");
    assert_eq!(bounded("primary", rauc.primary_slot()).await.unwrap(), "rootfs.0");
    world.standin.reboot();
    assert_eq!(bounded("booted slot", rauc.booted_slot()).await.unwrap(), "A");
}

#[tokio::test]
async fn a_bundle_signed_by_an_unknown_key_fails_with_raucs_reason_and_leaves_the_slots_untouched() {
    let world = World::new().await;
    let rauc = world.client().await;
    let rogue = SigningKeys::new(world.dir(), "rogue");
    let bundle = build_bundle(
        world.dir(),
        &rogue,
        COMPATIBLE,
        "9.9.9",
        &image("rogue root filesystem"),
    );

    let err = bounded("install", rauc.install(&bundle, LIMIT, |_| {}))
        .await
        .unwrap_err();
    match &err {
        RaucError::Failed { code, message } => {
            assert_eq!(*code, 1);
            assert!(message.to_lowercase().contains("signature"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(world.standin.slot("rootfs.1").device).unwrap(),
        "rootfs.1 as shipped"
    );
    assert_eq!(bounded("primary", rauc.primary_slot()).await.unwrap(), "rootfs.0");
    assert_eq!(bounded("operation", rauc.operation()).await.unwrap(), "idle");
}

#[tokio::test]
async fn a_bundle_for_another_device_is_refused_as_incompatible() {
    let world = World::new().await;
    let rauc = world.client().await;
    let bundle = build_bundle(
        world.dir(),
        &world.keys,
        "some-other-board",
        "0.2.0",
        &image("not for this cabinet"),
    );
    let err = bounded("install", rauc.install(&bundle, LIMIT, |_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RaucError::Failed { message, .. } if message.contains("Compatible mismatch")),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read_to_string(world.standin.slot("rootfs.1").device).unwrap(),
        "rootfs.1 as shipped"
    );
}

#[tokio::test]
async fn an_install_that_does_not_complete_in_time_is_a_timeout_and_a_second_install_meanwhile_is_busy() {
    let world = World::new().await;
    let rauc = world.client().await;
    world.standin.set_stall(true);
    let bundle = build_bundle(
        world.dir(),
        &world.keys,
        COMPATIBLE,
        "0.2.0",
        &image("stalls after the check"),
    );

    let mut last = None;
    let err = bounded(
        "install",
        rauc.install(&bundle, Duration::from_secs(3), |p| last = Some(p.clone())),
    )
    .await
    .unwrap_err();
    match &err {
        RaucError::Timeout { limit, last } => {
            assert_eq!(*limit, Duration::from_secs(3));
            assert!(last.contains("Checking bundle done."), "{last}");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(last.map(|p| p.percent), Some(20));

    let busy = bounded("second install", rauc.install(&bundle, LIMIT, |_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(&busy, RaucError::Busy { operation } if operation == "installing"),
        "{busy:?}"
    );
    assert_eq!(
        world.standin.calls().len(),
        1,
        "the client did not start a second install"
    );
}

#[tokio::test]
async fn marking_an_unknown_slot_is_a_mark_error_with_raucs_message() {
    let world = World::new().await;
    let rauc = world.client().await;
    let err = bounded("mark", rauc.mark(MarkState::Good, "rootfs.7"))
        .await
        .unwrap_err();
    match err {
        RaucError::Mark { state, slot, message } => {
            assert_eq!(state, MarkState::Good);
            assert_eq!(slot, "rootfs.7");
            assert!(message.contains("rootfs.7"), "{message}");
        }
        other => panic!("expected Mark, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bus_without_rauc_says_rauc_is_not_running_and_no_bus_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let bus = DbusDaemon::start(dir.path());
    let err = bounded("connect", Rauc::connect(&bus.address)).await.err().unwrap();
    assert!(matches!(err, RaucError::NotRunning(_)), "{err:?}");
    assert!(err.to_string().contains("de.pengutronix.rauc"), "{err}");

    let nowhere = format!("unix:path={}", dir.path().join("no-bus-here").display());
    let err = bounded("connect", Rauc::connect(&nowhere)).await.err().unwrap();
    assert!(matches!(err, RaucError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("no-bus-here"), "{err}");
}

#[tokio::test]
async fn when_rauc_leaves_the_bus_the_client_says_so() {
    let world = World::new().await;
    let rauc = world.client().await;
    // Keep the bus and the directory; only the stand-in goes.
    let World {
        standin,
        bus: _bus,
        _dir: _keep,
        ..
    } = world;
    bounded("stand-in stop", standin.stop()).await;
    let err = bounded("booted slot", rauc.booted_slot()).await.unwrap_err();
    assert!(matches!(err, RaucError::NotRunning(_)), "{err:?}");
}
