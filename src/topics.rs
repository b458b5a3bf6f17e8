//! Every MQTT topic of CONTRACT 4, built and parsed in one place (without `uplink.topic_prefix`,
//! which the uplink adds on the way out and removes on the way in), and the per-device order key
//! each protocol's records carry in the store.
//!
//! Owns: the topic shapes. Must not: know sessions, the store or the broker; callers pass ids
//! already rendered as CONTRACT 4 says (VIN without padding, phone nibble by nibble, reader id).

/// `gbt32960/{vin}/upstream/{suffix}` (suffix: `vlogin`, `info`, ..., `response`).
pub fn gbt32960_up(vin: &str, suffix: &str) -> String {
    format!("gbt32960/{vin}/upstream/{suffix}")
}

/// `gbt32960/{vin}/dnstream`.
pub fn gbt32960_dn(vin: &str) -> String {
    format!("gbt32960/{vin}/dnstream")
}

/// `jt808/{phone}/{phone}/up`: every upstream message, answers to commands included.
pub fn jt808_up(phone: &str) -> String {
    format!("jt808/{phone}/{phone}/up")
}

/// `jt808/{phone}/{phone}/dn`.
pub fn jt808_dn(phone: &str) -> String {
    format!("jt808/{phone}/{phone}/dn")
}

/// `gbt37987/{reader_id}/up/{leaf}` (leaf: `report`, `event`, `alarm`, `log`, `status`, `response`).
pub fn gbt37987_up(reader: &str, leaf: &str) -> String {
    format!("gbt37987/{reader}/up/{leaf}")
}

/// `gbt37987/{reader_id}/dn`.
pub fn gbt37987_dn(reader: &str) -> String {
    format!("gbt37987/{reader}/dn")
}

/// The edge's own topics, `edge/{edge_id}/...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeTopic {
    /// Retained online/offline state; "offline" is the Last Will.
    Status,
    Metrics,
    Passage,
    Alarm,
    /// Commands to the edge (downstream).
    Cmd,
    CmdResult,
}

impl EdgeTopic {
    fn leaf(self) -> &'static str {
        match self {
            EdgeTopic::Status => "status",
            EdgeTopic::Metrics => "metrics",
            EdgeTopic::Passage => "passage",
            EdgeTopic::Alarm => "alarm",
            EdgeTopic::Cmd => "cmd",
            EdgeTopic::CmdResult => "cmd/result",
        }
    }
}

/// `edge/{edge_id}/{status,metrics,passage,alarm,cmd,cmd/result}`.
pub fn edge(edge_id: &str, topic: EdgeTopic) -> String {
    format!("edge/{edge_id}/{}", topic.leaf())
}

/// The device filters the uplink subscribes to (besides the edge's own `cmd`).
pub const DOWNSTREAM_FILTERS: [&str; 3] = ["gbt32960/+/dnstream", "jt808/+/+/dn", "gbt37987/+/dn"];

/// What a downstream topic (prefix removed) addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downstream<'t> {
    /// `edge/{id}/cmd`, with the id it names (the caller checks it is ours).
    Edge(&'t str),
    Gbt32960(&'t str),
    Jt808(&'t str),
    Gbt37987(&'t str),
}

/// Parses a downstream topic; `None` for anything that is not one of CONTRACT 4's.
pub fn parse_downstream(topic: &str) -> Option<Downstream<'_>> {
    let mut parts = topic.split('/');
    let levels = [parts.next(), parts.next(), parts.next(), parts.next(), parts.next()];
    match levels {
        [Some("edge"), Some(id), Some("cmd"), None, None] if !id.is_empty() => Some(Downstream::Edge(id)),
        [Some("gbt32960"), Some(vin), Some("dnstream"), None, None] if !vin.is_empty() => {
            Some(Downstream::Gbt32960(vin))
        }
        [Some("jt808"), Some(phone), Some(again), Some("dn"), None] if !phone.is_empty() && phone == again => {
            Some(Downstream::Jt808(phone))
        }
        [Some("gbt37987"), Some(reader), Some("dn"), None, None] if !reader.is_empty() => {
            Some(Downstream::Gbt37987(reader))
        }
        _ => None,
    }
}

/// The store's per-device order key of a protocol's records (`gbt32960/{vin}`, ...).
pub fn device_key(protocol: &str, device: &str) -> String {
    format!("{protocol}/{device}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_follow_contract_4() {
        assert_eq!(gbt32960_up("LVIN", "vlogin"), "gbt32960/LVIN/upstream/vlogin");
        assert_eq!(jt808_up("013900000000"), "jt808/013900000000/013900000000/up");
        assert_eq!(gbt37987_up("north", "report"), "gbt37987/north/up/report");
        assert_eq!(edge("cab", EdgeTopic::CmdResult), "edge/cab/cmd/result");
        assert_eq!(edge("cab", EdgeTopic::Passage), "edge/cab/passage");
        assert_eq!(device_key("jt808", "1"), "jt808/1");
    }

    #[test]
    fn every_downstream_topic_we_build_parses_back_and_nothing_else_does() {
        assert_eq!(
            parse_downstream(&edge("cab", EdgeTopic::Cmd)),
            Some(Downstream::Edge("cab"))
        );
        assert_eq!(
            parse_downstream(&gbt32960_dn("LVIN")),
            Some(Downstream::Gbt32960("LVIN"))
        );
        assert_eq!(parse_downstream(&jt808_dn("0139")), Some(Downstream::Jt808("0139")));
        assert_eq!(
            parse_downstream(&gbt37987_dn("north")),
            Some(Downstream::Gbt37987("north"))
        );
        for bad in [
            "",
            "edge/cab/cmd/result",
            "edge//cmd",
            "jt808/1/2/dn",
            "jt808/1/1/dn/x",
            "gbt32960/V/upstream/info",
            "gbt37987/r/up/report",
            "other/x/dn",
        ] {
            assert_eq!(parse_downstream(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_subscriptions_match_what_parses() {
        for (filter, topic) in DOWNSTREAM_FILTERS
            .iter()
            .zip([gbt32960_dn("V"), jt808_dn("1"), gbt37987_dn("r")])
        {
            let matches = filter.split('/').zip(topic.split('/')).all(|(f, t)| f == "+" || f == t)
                && filter.split('/').count() == topic.split('/').count();
            assert!(matches, "{filter} vs {topic}");
        }
    }
}
