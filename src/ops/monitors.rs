//! The edge's own checks that raise and clear alarms through [`Alarms`] (CONTRACT 4):
//! `reader_offline` (a configured reader's link down longer than `readers.offline_after`),
//! `clock_jump` (the wall clock moved against the monotonic clock by more than
//! `edge.clock_jump_threshold` between two checks) and `cert_expiry` (the uplink client
//! certificate or a device-side server certificate within [`CERT_EXPIRY_WITHIN`] of its notAfter).
//!
//! The decisions are pure: each checker takes the times (wall clock in ms, monotonic as a
//! [`Duration`] since an arbitrary origin) and what it looks at, and returns [`Change`]s. The
//! async shell [`run`] samples the clocks, the reader links (from the metrics) and the certificate
//! files every `edge.monitor_interval` and applies the changes. Must not: publish anything itself
//! (the alarm service does, with the store).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::alarms::Alarms;
use crate::metrics::Metrics;
use crate::time::{now_ms, rfc3339_ms};

/// A certificate this close to its notAfter (or past it) raises `cert_expiry`.
pub const CERT_EXPIRY_WITHIN: Duration = Duration::from_secs(30 * 86_400);

/// `clock_jump` clears after this many checks in a row without a jump.
pub const CLOCK_STABLE_CHECKS: u32 = 6;

/// An alarm change a checker decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Raise {
        name: &'static str,
        subject: String,
        detail: Value,
    },
    Clear {
        name: &'static str,
        subject: String,
        detail: Value,
    },
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `reader_offline`, per configured reader.
#[derive(Debug)]
pub struct ReaderOffline {
    offline_after: Duration,
    readers: Vec<String>,
    /// Monotonic time each reader was first seen down (since its link was last up).
    down_since: BTreeMap<String, Duration>,
    raised: BTreeSet<String>,
}

impl ReaderOffline {
    /// `readers` are the configured ids; `raised` the subjects active from before (a restart):
    /// they clear when their reader is up, or at the first check when it is no longer configured.
    pub fn new(offline_after: Duration, readers: Vec<String>, raised: impl IntoIterator<Item = String>) -> Self {
        ReaderOffline {
            offline_after,
            readers,
            down_since: BTreeMap::new(),
            raised: raised.into_iter().collect(),
        }
    }

    /// One check at monotonic time `now`; `link_up` tells a reader's link state.
    pub fn check(&mut self, now: Duration, link_up: impl Fn(&str) -> bool) -> Vec<Change> {
        let mut changes = Vec::new();
        let gone: Vec<String> = self
            .raised
            .iter()
            .filter(|r| !self.readers.contains(r))
            .cloned()
            .collect();
        for reader in gone {
            self.raised.remove(&reader);
            changes.push(Change::Clear {
                name: "reader_offline",
                subject: reader.clone(),
                detail: json!({"reader": reader, "reason": "no longer configured"}),
            });
        }
        for reader in &self.readers {
            if link_up(reader) {
                let was_down = self.down_since.remove(reader);
                if self.raised.remove(reader) {
                    let mut detail = json!({"reader": reader});
                    if let Some(since) = was_down {
                        detail["down_s"] = json!(now.saturating_sub(since).as_secs());
                    }
                    changes.push(Change::Clear {
                        name: "reader_offline",
                        subject: reader.clone(),
                        detail,
                    });
                }
                continue;
            }
            let since = *self.down_since.entry(reader.clone()).or_insert(now);
            let down = now.saturating_sub(since);
            if down >= self.offline_after && self.raised.insert(reader.clone()) {
                changes.push(Change::Raise {
                    name: "reader_offline",
                    subject: reader.clone(),
                    detail: json!({"reader": reader, "down_s": down.as_secs(), "offline_after_s": self.offline_after.as_secs()}),
                });
            }
        }
        changes
    }
}

/// `clock_jump`: compares how far the wall clock and the monotonic clock moved between checks.
#[derive(Debug)]
pub struct ClockJump {
    threshold: Duration,
    last: Option<(i64, Duration)>,
    raised: bool,
    stable_checks: u32,
}

impl ClockJump {
    pub fn new(threshold: Duration, raised: bool) -> Self {
        ClockJump {
            threshold,
            last: None,
            raised,
            stable_checks: 0,
        }
    }

    /// One check with the wall clock `wall_ms` (ms since the epoch) and the monotonic `mono`.
    pub fn check(&mut self, wall_ms: i64, mono: Duration) -> Option<Change> {
        let (last_wall, last_mono) = self.last.replace((wall_ms, mono))?;
        let wall_moved = wall_ms.saturating_sub(last_wall);
        let mono_moved = ms(mono.saturating_sub(last_mono));
        let delta = wall_moved.saturating_sub(mono_moved);
        if delta.unsigned_abs() > self.threshold.as_millis() as u64 {
            self.stable_checks = 0;
            if self.raised {
                return None;
            }
            self.raised = true;
            return Some(Change::Raise {
                name: "clock_jump",
                subject: String::new(),
                detail: json!({
                    "delta_ms": delta,
                    "from": rfc3339_ms(last_wall.saturating_add(mono_moved)),
                    "to": rfc3339_ms(wall_ms),
                    "threshold_ms": ms(self.threshold),
                }),
            });
        }
        if !self.raised {
            return None;
        }
        self.stable_checks += 1;
        if self.stable_checks < CLOCK_STABLE_CHECKS {
            return None;
        }
        self.raised = false;
        self.stable_checks = 0;
        Some(Change::Clear {
            name: "clock_jump",
            subject: String::new(),
            detail: json!({"stable_checks": CLOCK_STABLE_CHECKS, "now": rfc3339_ms(wall_ms)}),
        })
    }
}

/// What reading one certificate file gave.
pub type CertReading = Result<i64, String>;

/// `cert_expiry`, per certificate file (the alarm's subject is the path).
#[derive(Debug)]
pub struct CertExpiry {
    within: Duration,
    raised: BTreeSet<String>,
}

impl CertExpiry {
    pub fn new(within: Duration, raised: impl IntoIterator<Item = String>) -> Self {
        CertExpiry {
            within,
            raised: raised.into_iter().collect(),
        }
    }

    /// One check at wall time `now_ms` over every watched file and its notAfter (ms since the
    /// epoch). An unreadable file changes nothing (the shell logs it); a raised file that is no
    /// longer watched clears.
    pub fn check(&mut self, now_ms: i64, certs: &[(String, CertReading)]) -> Vec<Change> {
        let mut changes = Vec::new();
        let gone: Vec<String> = self
            .raised
            .iter()
            .filter(|f| !certs.iter().any(|(p, _)| p == *f))
            .cloned()
            .collect();
        for file in gone {
            self.raised.remove(&file);
            changes.push(Change::Clear {
                name: "cert_expiry",
                subject: file.clone(),
                detail: json!({"file": file, "reason": "no longer configured"}),
            });
        }
        for (file, reading) in certs {
            let Ok(not_after) = reading else { continue };
            let left = not_after.saturating_sub(now_ms);
            let detail = json!({
                "file": file,
                "not_after": rfc3339_ms(*not_after),
                "days_left": left.div_euclid(86_400_000),
                "expired": left <= 0,
            });
            if left <= ms(self.within) {
                if self.raised.insert(file.clone()) {
                    changes.push(Change::Raise {
                        name: "cert_expiry",
                        subject: file.clone(),
                        detail,
                    });
                }
            } else if self.raised.remove(file) {
                changes.push(Change::Clear {
                    name: "cert_expiry",
                    subject: file.clone(),
                    detail,
                });
            }
        }
        changes
    }
}

/// The notAfter (ms since the epoch) of the first certificate in a PEM file.
pub fn not_after_ms(pem: &[u8]) -> Result<i64, String> {
    let mut reader = pem;
    let der = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| "no certificate in the file".to_string())?
        .map_err(|e| format!("unreadable PEM: {e}"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp().saturating_mul(1000))
}

/// What the shell watches.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    pub interval: Duration,
    pub clock_jump_threshold: Duration,
    /// Configured reader ids and `readers.offline_after` (when readers are configured).
    pub readers: Vec<String>,
    pub offline_after: Duration,
    /// Certificate files: the uplink client certificate and every `tls.cert_file`.
    pub cert_files: Vec<PathBuf>,
}

impl MonitorSettings {
    pub fn from_config(config: &crate::config::Config) -> MonitorSettings {
        let mut cert_files: Vec<PathBuf> = config.uplink.cert_file.iter().cloned().collect();
        let tls = [
            config.gbt32960.as_ref().and_then(|g| g.server.tls.as_ref()),
            config.jt808.as_ref().and_then(|j| j.server.tls.as_ref()),
            config.readers.as_ref().and_then(|r| r.tls.as_ref()),
            config.web.as_ref().and_then(|w| w.tls.as_ref()),
        ];
        for t in tls.into_iter().flatten() {
            if !cert_files.contains(&t.cert_file) {
                cert_files.push(t.cert_file.clone());
            }
        }
        MonitorSettings {
            interval: config.edge.monitor_interval,
            clock_jump_threshold: config.edge.clock_jump_threshold,
            readers: config
                .readers
                .as_ref()
                .map(|r| r.devices.iter().map(|d| d.id.to_string()).collect())
                .unwrap_or_default(),
            offline_after: config
                .readers
                .as_ref()
                .map_or(crate::config::ReadersConfig::DEFAULT_OFFLINE_AFTER, |r| r.offline_after),
            cert_files,
        }
    }
}

fn active_subjects(alarms: &Alarms, name: &str) -> Vec<String> {
    alarms
        .active()
        .into_iter()
        .filter(|a| a.name == name)
        .map(|a| a.subject)
        .collect()
}

async fn apply(alarms: &Alarms, changes: Vec<Change>) {
    for change in changes {
        let result = match &change {
            Change::Raise { name, subject, detail } => alarms.raise(name, subject, detail.clone()).await,
            Change::Clear { name, subject, detail } => alarms.clear(name, subject, detail.clone()).await,
        };
        if let Err(e) = result {
            tracing::error!(?change, "the alarm change could not be committed: {e}");
        }
    }
}

/// Runs the checks every `settings.interval` until `shutdown`.
pub async fn run(settings: MonitorSettings, alarms: Arc<Alarms>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let origin = Instant::now();
    let mut readers = ReaderOffline::new(
        settings.offline_after,
        settings.readers.clone(),
        active_subjects(&alarms, "reader_offline"),
    );
    let mut clock = ClockJump::new(settings.clock_jump_threshold, alarms.is_active("clock_jump", ""));
    let mut certs = CertExpiry::new(CERT_EXPIRY_WITHIN, active_subjects(&alarms, "cert_expiry"));
    let mut unreadable: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mono = origin.elapsed();
        let wall = now_ms();
        let mut changes: Vec<Change> = clock.check(wall, mono).into_iter().collect();
        let links: BTreeMap<String, bool> = metrics
            .readers
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.link_up)).collect())
            .unwrap_or_default();
        changes.extend(readers.check(mono, |r| links.get(r).copied().unwrap_or(false)));
        let mut readings = Vec::with_capacity(settings.cert_files.len());
        for file in &settings.cert_files {
            let name = file.display().to_string();
            let reading = match tokio::fs::read(file).await {
                Ok(pem) => not_after_ms(&pem),
                Err(e) => Err(e.to_string()),
            };
            match &reading {
                Err(e) if unreadable.insert(name.clone()) => {
                    tracing::warn!(file = %name, "cannot read the certificate to check its expiry: {e}")
                }
                Ok(_) => {
                    unreadable.remove(&name);
                }
                Err(_) => {}
            }
            readings.push((name, reading));
        }
        changes.extend(certs.check(wall, &readings));
        apply(&alarms, changes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Raise { name, subject, .. } => format!("raise {name} {subject}"),
                Change::Clear { name, subject, .. } => format!("clear {name} {subject}"),
            })
            .collect()
    }

    #[test]
    fn a_reader_down_longer_than_offline_after_raises_once_and_clears_once_when_back() {
        let mut r = ReaderOffline::new(60 * S, vec!["north".into(), "south".into()], []);
        let up = |id: &'static str| move |r: &str| r == id;
        assert!(
            r.check(Duration::ZERO, up("south")).is_empty(),
            "down, not for long yet"
        );
        assert!(r.check(59 * S, up("south")).is_empty());
        assert_eq!(names(&r.check(60 * S, up("south"))), ["raise reader_offline north"]);
        assert!(r.check(70 * S, up("south")).is_empty(), "raised once");
        let back = r.check(80 * S, |_| true);
        assert_eq!(names(&back), ["clear reader_offline north"]);
        let Change::Clear { detail, .. } = &back[0] else {
            panic!()
        };
        assert_eq!(detail["down_s"], 80);
        assert!(r.check(90 * S, |_| true).is_empty(), "cleared once");
        // A short outage does not count; the clock restarts when the link comes back.
        assert!(r.check(100 * S, up("north")).is_empty());
        assert!(r.check(130 * S, |_| true).is_empty());
        assert!(r.check(140 * S, up("north")).is_empty());
        assert!(r.check(199 * S, up("north")).is_empty());
        assert_eq!(names(&r.check(200 * S, up("north"))), ["raise reader_offline south"]);
    }

    #[test]
    fn an_alarm_from_before_a_restart_clears_when_the_reader_is_up_or_no_longer_configured() {
        let mut r = ReaderOffline::new(60 * S, vec!["north".into()], ["north".to_string(), "old".to_string()]);
        assert_eq!(names(&r.check(Duration::ZERO, |_| false)), ["clear reader_offline old"]);
        assert!(
            r.check(61 * S, |_| false).is_empty(),
            "still raised from before: not again"
        );
        assert_eq!(names(&r.check(62 * S, |_| true)), ["clear reader_offline north"]);
    }

    #[test]
    fn a_wall_clock_jump_raises_with_its_delta_and_clears_after_stable_checks() {
        let t0 = 1_800_000_000_000i64;
        let mut c = ClockJump::new(60 * S, false);
        assert_eq!(c.check(t0, Duration::ZERO), None, "the first check only records");
        assert_eq!(c.check(t0 + 10_000, 10 * S), None);
        // Drift within the threshold is no jump.
        assert_eq!(c.check(t0 + 20_000 + 59_000, 20 * S), None);
        let Some(Change::Raise { name, detail, .. }) = c.check(t0 + 79_000 + 10_000 + 3_600_000, 30 * S) else {
            panic!("no raise")
        };
        assert_eq!(name, "clock_jump");
        assert_eq!(detail["delta_ms"], 3_600_000);
        assert_eq!(detail["threshold_ms"], 60_000);
        let mut wall = t0 + 89_000 + 3_600_000;
        let mut mono = 30 * S;
        // A second jump while raised raises nothing and restarts the stable count.
        wall += 10_000 - 120_000;
        mono += 10 * S;
        assert_eq!(c.check(wall, mono), None);
        for i in 0..CLOCK_STABLE_CHECKS {
            wall += 10_000;
            mono += 10 * S;
            let change = c.check(wall, mono);
            if i + 1 < CLOCK_STABLE_CHECKS {
                assert_eq!(change, None, "check {i}");
            } else {
                assert_eq!(names(&change.into_iter().collect::<Vec<_>>()), ["clear clock_jump "]);
            }
        }
        wall += 10_000;
        mono += 10 * S;
        assert_eq!(c.check(wall, mono), None, "cleared once");
        // Backwards counts too.
        assert!(matches!(
            c.check(wall - 120_000, mono + 10 * S),
            Some(Change::Raise { .. })
        ));
    }

    #[test]
    fn a_certificate_within_thirty_days_raises_and_a_renewed_one_clears() {
        let day = 86_400_000i64;
        let now = 1_800_000_000_000i64;
        let mut c = CertExpiry::new(CERT_EXPIRY_WITHIN, ["/etc/old.pem".to_string()]);
        let certs = vec![
            ("/etc/edge.pem".to_string(), Ok(now + 10 * day)),
            ("/etc/web.pem".to_string(), Ok(now + 300 * day)),
            ("/etc/gone.pem".to_string(), Err("no such file".to_string())),
        ];
        let changes = c.check(now, &certs);
        assert_eq!(
            names(&changes),
            ["clear cert_expiry /etc/old.pem", "raise cert_expiry /etc/edge.pem"]
        );
        let Change::Raise { detail, .. } = &changes[1] else {
            panic!()
        };
        assert_eq!(detail["file"], "/etc/edge.pem");
        assert_eq!(detail["days_left"], 10);
        assert_eq!(detail["expired"], false);
        assert!(detail["not_after"].as_str().unwrap().starts_with("2027-"), "{detail}");
        assert!(c.check(now + day, &certs).is_empty(), "raised once");
        let renewed = vec![("/etc/edge.pem".to_string(), Ok(now + 400 * day))];
        assert_eq!(
            names(&c.check(now + 2 * day, &renewed)),
            ["clear cert_expiry /etc/edge.pem"]
        );
        assert!(c.check(now + 3 * day, &renewed).is_empty(), "cleared once");
        let expired = vec![("/etc/edge.pem".to_string(), Ok(now - day))];
        let changes = c.check(now, &expired);
        let Change::Raise { detail, .. } = &changes[0] else {
            panic!()
        };
        assert_eq!(detail["expired"], true);
    }

    #[test]
    fn the_uplink_client_certificate_and_every_tls_cert_file_are_watched_once_each() {
        let text = "edge: {id: cab, monitor_interval: 2s, clock_jump_threshold: 30s}\n\
            uplink: {url: 'mqtts://broker:8883', ca_file: /c/ca.pem, cert_file: /c/edge.pem, key_file: /c/edge.key}\n\
            gbt32960: {listen: '0.0.0.0:8999', tls: {cert_file: /c/dev.pem, key_file: /c/dev.key}}\n\
            jt808: {listen: '0.0.0.0:7999', tls: {cert_file: /c/dev.pem, key_file: /c/dev.key}}\n\
            readers:\n  listen: '0.0.0.0:5084'\n  tls: {cert_file: /c/readers.pem, key_file: /c/readers.key}\n  offline_after: 90s\n  devices: [{id: north, tcp: '10.0.0.5:5084'}]\n";
        let config = crate::config::Config::parse(text, crate::config::FileCheck::Skip).expect("valid");
        let s = MonitorSettings::from_config(&config);
        assert_eq!(
            s.cert_files,
            [
                PathBuf::from("/c/edge.pem"),
                "/c/dev.pem".into(),
                "/c/readers.pem".into()
            ]
        );
        assert_eq!(s.readers, ["north"]);
        assert_eq!(s.offline_after, 90 * S);
        assert_eq!(s.interval, 2 * S);
        assert_eq!(s.clock_jump_threshold, 30 * S);
        let errors = crate::config::Config::parse(
            "edge: {id: cab, monitor_interval: 1ms}\nuplink: {url: 'mqtt://b:1883'}\nreaders: {offline_after: soon}\n",
            crate::config::FileCheck::Skip,
        )
        .expect_err("invalid")
        .to_string();
        assert!(errors.contains("edge.monitor_interval"), "{errors}");
        assert!(errors.contains("readers.offline_after"), "{errors}");
    }

    #[test]
    fn not_after_is_read_from_a_pem_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        params.not_after = time::macros::datetime!(2031-05-06 07:08:09 UTC);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        assert_eq!(
            not_after_ms(pem.as_bytes()).unwrap(),
            time::macros::datetime!(2031-05-06 07:08:09 UTC).unix_timestamp() * 1000
        );
        assert!(not_after_ms(b"not a pem").unwrap_err().contains("no certificate"));
    }
}
