//! The edge's own actions on `edge/{id}/cmd`: `ping`, `status`. Later issues add config, rules,
//! OTA and registry actions here; every action returns an [`Outcome`].

use std::sync::atomic::Ordering::Relaxed;

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

/// Runs one edge command.
pub fn execute(edge: &EdgeInfo, metrics: &Metrics, command: &Value) -> Outcome {
    match command.get("action").and_then(Value::as_str) {
        Some("ping") => Outcome::Answer(json!({"pong": true, "edge_id": edge.edge_id})),
        Some("status") => Outcome::Answer(status(edge, metrics)),
        Some(other) => Outcome::Rejected(format!("unknown action `{other}` (known: ping, status)")),
        None => Outcome::Rejected("missing `action`".into()),
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

    #[test]
    fn ping_answers_pong() {
        let m = Metrics::default();
        assert_eq!(
            execute(&edge(), &m, &json!({"action": "ping"})),
            Outcome::Answer(json!({"pong": true, "edge_id": "cab"}))
        );
    }

    #[test]
    fn unknown_or_missing_actions_are_rejected() {
        let m = Metrics::default();
        assert!(matches!(
            execute(&edge(), &m, &json!({"action": "fly"})),
            Outcome::Rejected(_)
        ));
        assert!(matches!(execute(&edge(), &m, &json!({})), Outcome::Rejected(_)));
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
