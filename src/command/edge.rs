//! The edge's own actions on `edge/{id}/cmd`. `ping` and `status` are built in; every other
//! capability (registry, config, OTA, provisioning, ...) registers its actions at wiring time with
//! [`EdgeActions::register`], so the MQTT door and the web door reach the same service method and
//! this file stays free of their logic. Every action returns exactly one [`Outcome`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use super::Outcome;
use crate::metrics::Metrics;
use crate::time::now_ms;

/// Identity of the running appliance.
#[derive(Debug, Clone)]
pub struct EdgeInfo {
    pub edge_id: String,
    pub version: String,
    pub started_ms: i64,
}

/// The status document shared by the `status` action and the web page's `/api/status`.
pub fn status(edge: &EdgeInfo, metrics: &Metrics) -> Value {
    let now = now_ms();
    let readers: Vec<Value> = metrics
        .readers
        .lock()
        .map(|r| {
            r.iter()
                .map(|(id, s)| json!({"id": id, "link": if s.link_up { "up" } else { "down" }, "last_seen": s.last_seen}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "edge_id": edge.edge_id,
        "version": edge.version,
        "uptime_s": (now - edge.started_ms).max(0) / 1000,
        "uplink": {
            "connected": metrics.uplink.connected.load(Relaxed) == 1,
            "backlog_rows": metrics.store.backlog_rows.load(Relaxed),
            "backlog_bytes": metrics.store.backlog_bytes.load(Relaxed),
            "oldest_unsent_age_s": metrics.oldest_unsent_age_s(now),
        },
        "readers": readers,
        "vehicles": {
            "gbt32960": metrics.gbt32960.connections.load(Relaxed),
            "jt808": metrics.jt808.connections.load(Relaxed),
        },
    })
}

/// The future an action returns.
pub type ActionFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One edge action: takes the whole command object (with `action`, `request_id` and the
/// action's own fields) and ends in one outcome.
pub trait EdgeAction: Send + Sync {
    fn call(&self, command: Value) -> ActionFuture;
}

impl<F, Fut> EdgeAction for F
where
    F: Fn(Value) -> Fut + Send + Sync,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn call(&self, command: Value) -> ActionFuture {
        Box::pin(self(command))
    }
}

/// The table of edge actions by name.
#[derive(Default)]
pub struct EdgeActions {
    actions: RwLock<BTreeMap<String, Arc<dyn EdgeAction>>>,
}

impl EdgeActions {
    /// Makes `name` callable; a later registration of the same name replaces the earlier one.
    pub fn register(&self, name: &str, action: impl EdgeAction + 'static) {
        if let Ok(mut a) = self.actions.write() {
            a.insert(name.to_string(), Arc::new(action));
        }
    }

    /// Names of every action, built-in ones included, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["ping", "status"].iter().map(|s| s.to_string()).collect();
        if let Ok(a) = self.actions.read() {
            names.extend(a.keys().cloned());
        }
        names.sort();
        names.dedup();
        names
    }

    /// Runs one edge command.
    pub async fn execute(&self, edge: &EdgeInfo, metrics: &Metrics, command: Value) -> Outcome {
        let Some(name) = command.get("action").and_then(Value::as_str) else {
            return Outcome::Rejected("missing `action`".into());
        };
        match name {
            "ping" => return Outcome::Answer(json!({"pong": true, "edge_id": edge.edge_id})),
            "status" => return Outcome::Answer(status(edge, metrics)),
            _ => {}
        }
        let action = self.actions.read().ok().and_then(|a| a.get(name).cloned());
        match action {
            Some(action) => action.call(command).await,
            None => Outcome::Rejected(format!("unknown action `{name}` (known: {})", self.names().join(", "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> EdgeInfo {
        EdgeInfo {
            edge_id: "cab".into(),
            version: "0".into(),
            started_ms: now_ms(),
        }
    }

    fn run(actions: &EdgeActions, command: Value) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(actions.execute(&edge(), &Metrics::default(), command))
    }

    #[test]
    fn ping_answers_pong() {
        assert_eq!(
            run(&EdgeActions::default(), json!({"action": "ping"})),
            Outcome::Answer(json!({"pong": true, "edge_id": "cab"}))
        );
    }

    #[test]
    fn unknown_or_missing_actions_are_rejected() {
        let actions = EdgeActions::default();
        let Outcome::Rejected(reason) = run(&actions, json!({"action": "fly"})) else {
            panic!("not rejected")
        };
        assert!(reason.contains("known: ping, status"), "{reason}");
        assert!(matches!(run(&actions, json!({})), Outcome::Rejected(_)));
    }

    #[test]
    fn a_registered_action_gets_the_whole_command() {
        let actions = EdgeActions::default();
        actions.register(
            "echo",
            |command: Value| async move { Outcome::Answer(command["x"].clone()) },
        );
        assert_eq!(
            run(&actions, json!({"action": "echo", "x": 7})),
            Outcome::Answer(json!(7))
        );
        assert_eq!(actions.names(), ["echo", "ping", "status"]);
    }

    #[test]
    fn status_has_the_contract_keys() {
        let s = status(&edge(), &Metrics::default());
        for k in ["edge_id", "version", "uptime_s", "uplink", "readers", "vehicles"] {
            assert!(s.get(k).is_some(), "{k}");
        }
        for k in ["connected", "backlog_rows", "backlog_bytes", "oldest_unsent_age_s"] {
            assert!(s["uplink"].get(k).is_some(), "{k}");
        }
    }
}
