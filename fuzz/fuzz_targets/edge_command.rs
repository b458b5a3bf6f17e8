//! Fuzz target over what the cloud and the web page send the appliance's services:
//! `edge/{id}/cmd` payloads (the web API's edge and registry writes call the same command plane
//! and registry) and the registry's CSV import (the page's upload body).
//!
//! The services run for real: a store on a temporary file, the command plane with every built-in
//! and registry action registered, on one runtime kept across inputs. Input: the first byte picks
//! the door; the rest is the payload. Checks: nothing panics, every command payload ends in
//! exactly one stored result (the plane either runs it or records why not), and the registry
//! stays within its bound.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use roadedge::command::{CommandPlane, EdgeInfo, Target};
use roadedge::fusion::Registry;
use roadedge::metrics::Metrics;
use roadedge::store::{Store, StoreOptions};

const REGISTRY_MAX: usize = 5_000;

struct World {
    runtime: tokio::runtime::Runtime,
    plane: Arc<CommandPlane>,
    registry: Arc<Registry>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("temporary directory");
        let metrics = Arc::new(Metrics::default());
        let (store, _) = Store::open(
            StoreOptions { path: dir.path().join("edge.db"), max_bytes: 64 << 20, edge_id: "fuzz".into() },
            metrics.clone(),
        )
        .expect("store");
        let edge = EdgeInfo { edge_id: "fuzz".into(), version: "fuzz".into(), started_ms: 0 };
        let plane = Arc::new(CommandPlane::new(store.clone(), edge, Duration::from_secs(60), metrics.clone()));
        let registry = runtime
            .block_on(Registry::open(store, REGISTRY_MAX, metrics))
            .expect("registry");
        roadedge::fusion::registry::register_actions(registry.clone(), plane.edge_actions());
        World { runtime, plane, registry, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, payload)) = data.split_first() else {
        return;
    };
    let w = world();
    match selector % 2 {
        0 => {
            w.runtime
                .block_on(w.plane.submit(Target::Edge, payload))
                .expect("a command always ends in a stored result");
        }
        _ => {
            let _ = w.runtime.block_on(w.registry.import_csv(payload.to_vec()));
        }
    }
    assert!(w.registry.len() <= REGISTRY_MAX, "registry over its bound");
});
