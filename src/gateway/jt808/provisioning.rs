//! The JT/T 808 provisioning service: which terminals may register under `jt808.auth: registry`.
//! One implementation behind two doors: the edge commands `jt808.provision`, `jt808.deprovision`
//! and `jt808.terminals` (registered here with [`register_actions`]) and the web page's
//! `/api/jt808/*` routes call the same methods.
//!
//! Owns: validating what an operator sends (phones as BCD digits, plates, plate colours) and
//! revoking a live session when its terminal is deprovisioned. The rows and the registration rule
//! itself live in [`super::terminals`]. Must not: speak the protocol (the gateway does).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::terminals::{self, Provisioned, ProvisionedRow};
use crate::command::{EdgeActions, Outcome};
use crate::config::Jt808Auth;
use crate::link::Registry;
use crate::store::{Store, StoreError};

/// Terminals at most in one `jt808.provision` / `jt808.deprovision`.
pub const MAX_BATCH: usize = 1000;

/// Rows at most in one listing.
pub const MAX_LIST: usize = 10_000;

/// Plate colours of the JT/T 808 register (JT/T 697.7): 0 no plate (the plate field holds the
/// VIN), 1 blue, 2 yellow, 3 black, 4 white, 5 green, 9 other.
const PLATE_COLORS: [u8; 7] = [0, 1, 2, 3, 4, 5, 9];

/// Longest plate (or VIN, for colour 0) accepted, in characters.
const MAX_PLATE_CHARS: usize = 20;

/// One terminal as an operator provisions it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalInput {
    pub phone: String,
    #[serde(default)]
    pub plate: Option<String>,
    #[serde(default)]
    pub plate_color: Option<u8>,
}

/// Why one item of a batch was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    pub index: usize,
    pub phone: Option<String>,
    pub error: String,
}

/// Why a request was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Nothing was changed: every item's problem is listed.
    #[error("nothing was provisioned: {}", describe(.0))]
    Invalid(Vec<ItemError>),
    #[error("too many terminals in one request: {0}; at most {MAX_BATCH}")]
    TooMany(usize),
    #[error("the terminals table is full ({0} rows, `jt808.max_terminals`)")]
    TableFull(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(errors: &[ItemError]) -> String {
    errors
        .iter()
        .map(|e| format!("item {}: {}", e.index, e.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What `provision` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvisionReport {
    /// Phones newly provisioned.
    pub added: Vec<String>,
    /// Phones already provisioned whose plate or colour was replaced.
    pub updated: Vec<String>,
    /// `open` or `registry`: under `open`, provisioning is kept but not required to register.
    pub auth: &'static str,
}

/// What `deprovision` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeprovisionReport {
    pub removed: Vec<String>,
    pub not_found: Vec<String>,
    /// Phones whose live session was closed.
    pub disconnected: Vec<String>,
}

/// The listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TerminalList {
    pub terminals: Vec<ProvisionedRow>,
    pub total: u64,
    pub auth: &'static str,
    pub online: Vec<String>,
}

/// Normalises a phone as the terminal's header carries it (BCD, rendered digit by digit): only
/// decimal digits; up to 12 digits are left-padded with zeros to the 12 of a 2011/2013 header,
/// 13 to 20 digits to the 20 of a 2019 header.
pub fn normalize_phone(phone: &str) -> Result<String, String> {
    let phone = phone.trim();
    if phone.is_empty() {
        return Err("`phone` is empty".into());
    }
    if let Some(bad) = phone.chars().find(|c| !c.is_ascii_digit()) {
        return Err(format!(
            "`phone` {phone:?} has {bad:?}: a terminal phone is BCD, decimal digits only"
        ));
    }
    let width = match phone.len() {
        1..=12 => 12,
        13..=20 => 20,
        n => {
            return Err(format!(
                "`phone` has {n} digits; at most 20 (12 for 2011/2013 terminals, 20 for 2019)"
            ))
        }
    };
    Ok(format!("{phone:0>width$}"))
}

fn validate_plate(plate: &str) -> Result<String, String> {
    let plate = plate.trim();
    if plate.is_empty() {
        return Err("`plate` is empty (leave it out to accept any plate)".into());
    }
    let chars = plate.chars().count();
    if chars > MAX_PLATE_CHARS {
        return Err(format!("`plate` has {chars} characters; at most {MAX_PLATE_CHARS}"));
    }
    if let Some(bad) = plate.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("`plate` {plate:?} has the character {bad:?}"));
    }
    Ok(plate.to_string())
}

/// Validates one item into the row it provisions.
pub fn validate(input: &TerminalInput) -> Result<Provisioned, String> {
    let phone = normalize_phone(&input.phone)?;
    let plate = input.plate.as_deref().map(validate_plate).transpose()?;
    if let Some(c) = input.plate_color {
        if !PLATE_COLORS.contains(&c) {
            return Err(format!(
                "`plate_color` {c} is not a JT/T 808 colour (0 none, 1 blue, 2 yellow, 3 black, 4 white, 5 green, 9 other)"
            ));
        }
    }
    Ok(Provisioned {
        phone,
        plate,
        plate_color: input.plate_color,
        ..Provisioned::default()
    })
}

/// The provisioning service; shared as `Arc<Provisioning>`.
pub struct Provisioning {
    store: Store,
    auth: Jt808Auth,
    max_terminals: usize,
    /// The gateway's live phones (to close a revoked terminal's session).
    live: Arc<Registry>,
}

impl Provisioning {
    pub fn new(store: Store, auth: Jt808Auth, max_terminals: usize, live: Arc<Registry>) -> Arc<Provisioning> {
        Arc::new(Provisioning {
            store,
            auth,
            max_terminals,
            live,
        })
    }

    fn auth_name(&self) -> &'static str {
        match self.auth {
            Jt808Auth::Open => "open",
            Jt808Auth::Registry => "registry",
        }
    }

    /// Provisions every terminal, or none when any item is invalid (each problem listed).
    pub async fn provision(&self, items: Vec<TerminalInput>) -> Result<ProvisionReport, ProvisionError> {
        if items.len() > MAX_BATCH {
            return Err(ProvisionError::TooMany(items.len()));
        }
        let mut rows = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match validate(item) {
                Ok(row) if rows.iter().any(|r: &Provisioned| r.phone == row.phone) => errors.push(ItemError {
                    index,
                    phone: Some(row.phone),
                    error: "the phone appears twice in this request".into(),
                }),
                Ok(row) => rows.push(row),
                Err(error) => errors.push(ItemError {
                    index,
                    phone: Some(item.phone.clone()),
                    error,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ProvisionError::Invalid(errors));
        }
        let max = self.max_terminals;
        let (added, updated) = self
            .store
            .write(move |ctx| {
                let conn = ctx.conn();
                let (mut added, mut updated) = (Vec::new(), Vec::new());
                for row in &rows {
                    let known: bool = conn
                        .prepare_cached("SELECT COUNT(*) FROM jt808_terminals WHERE phone = ?1")?
                        .query_row([&row.phone], |r| r.get::<_, i64>(0))?
                        > 0;
                    if !known {
                        let n: i64 = conn
                            .prepare_cached("SELECT COUNT(*) FROM jt808_terminals")?
                            .query_row([], |r| r.get(0))?;
                        if n as u64 >= max as u64 {
                            return Ok(Err(max));
                        }
                    }
                    if terminals::provision(conn, row)? {
                        added.push(row.phone.clone());
                    } else {
                        updated.push(row.phone.clone());
                    }
                }
                Ok(Ok((added, updated)))
            })
            .await?
            .map_err(ProvisionError::TableFull)?;
        tracing::info!(
            added = added.len(),
            updated = updated.len(),
            "JT/T 808 terminals provisioned"
        );
        Ok(ProvisionReport {
            added,
            updated,
            auth: self.auth_name(),
        })
    }

    /// Revokes every phone; a revoked phone with a live session is disconnected.
    pub async fn deprovision(&self, phones: Vec<String>) -> Result<DeprovisionReport, ProvisionError> {
        if phones.len() > MAX_BATCH {
            return Err(ProvisionError::TooMany(phones.len()));
        }
        let mut normalized = Vec::with_capacity(phones.len());
        let mut errors = Vec::new();
        for (index, phone) in phones.iter().enumerate() {
            match normalize_phone(phone) {
                Ok(p) => normalized.push(p),
                Err(error) => errors.push(ItemError {
                    index,
                    phone: Some(phone.clone()),
                    error,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ProvisionError::Invalid(errors));
        }
        let (removed, not_found) = self
            .store
            .write(move |ctx| {
                let (mut removed, mut not_found) = (Vec::new(), Vec::new());
                for phone in normalized {
                    if terminals::deprovision(ctx.conn(), &phone)? {
                        removed.push(phone);
                    } else {
                        not_found.push(phone);
                    }
                }
                Ok((removed, not_found))
            })
            .await?;
        // After the commit: a terminal reconnecting now finds no row.
        let disconnected: Vec<String> = removed.iter().filter(|p| self.live.disconnect(p)).cloned().collect();
        tracing::info!(
            removed = removed.len(),
            disconnected = disconnected.len(),
            "JT/T 808 terminals deprovisioned"
        );
        Ok(DeprovisionReport {
            removed,
            not_found,
            disconnected,
        })
    }

    /// The provisioned terminals, by phone (at most `limit`, capped at [`MAX_LIST`]).
    pub async fn list(&self, limit: Option<usize>) -> Result<TerminalList, StoreError> {
        let limit = limit.unwrap_or(MAX_LIST).min(MAX_LIST);
        let (terminals, total) = self
            .store
            .read(move |c| Ok((terminals::provisioned(c, limit)?, terminals::provisioned_count(c)?)))
            .await?;
        let mut online: Vec<String> = self
            .live
            .online()
            .into_iter()
            .filter(|p| terminals.iter().any(|t| &t.phone == p))
            .collect();
        online.sort();
        Ok(TerminalList {
            terminals,
            total,
            auth: self.auth_name(),
            online,
        })
    }
}

/// The outcome of a refused request, for the command plane.
pub fn rejected(e: &ProvisionError) -> Outcome {
    Outcome::Rejected(e.to_string())
}

/// Registers `jt808.provision`, `jt808.deprovision` and `jt808.terminals`.
pub fn register_actions(service: Arc<Provisioning>, actions: &EdgeActions) {
    let s = service.clone();
    actions.register("jt808.provision", move |command: Value| {
        let s = s.clone();
        async move {
            let Some(items) = command.get("terminals").and_then(Value::as_array) else {
                return Outcome::Rejected("`terminals` must be an array of {phone, plate?, plate_color?}".into());
            };
            let mut inputs = Vec::with_capacity(items.len());
            let mut errors = Vec::new();
            for (index, item) in items.iter().enumerate() {
                match TerminalInput::deserialize(item) {
                    Ok(t) => inputs.push(t),
                    Err(e) => errors.push(ItemError {
                        index,
                        phone: item.get("phone").and_then(Value::as_str).map(str::to_string),
                        error: e.to_string(),
                    }),
                }
            }
            if !errors.is_empty() {
                return rejected(&ProvisionError::Invalid(errors));
            }
            match s.provision(inputs).await {
                Ok(report) => Outcome::Answer(json!(report)),
                Err(e) => rejected(&e),
            }
        }
    });
    let s = service.clone();
    actions.register("jt808.deprovision", move |command: Value| {
        let s = s.clone();
        async move {
            let Some(phones) = command.get("phones").and_then(Value::as_array).and_then(|p| {
                p.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            }) else {
                return Outcome::Rejected("`phones` must be an array of phone strings".into());
            };
            match s.deprovision(phones).await {
                Ok(report) => Outcome::Answer(json!(report)),
                Err(e) => rejected(&e),
            }
        }
    });
    actions.register("jt808.terminals", move |command: Value| {
        let s = service.clone();
        async move {
            let limit = command
                .get("limit")
                .and_then(Value::as_u64)
                .map(|l| usize::try_from(l).unwrap_or(MAX_LIST));
            match s.list(limit).await {
                Ok(list) => Outcome::Answer(json!(list)),
                Err(e) => Outcome::Rejected(format!("the terminals could not be read: {e}")),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::StoreOptions;

    fn terminal(phone: &str) -> TerminalInput {
        TerminalInput {
            phone: phone.into(),
            plate: None,
            plate_color: None,
        }
    }

    #[tokio::test]
    async fn a_batch_is_all_or_nothing_bounded_by_the_table_and_deprovision_closes_the_live_session() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(
            StoreOptions {
                path: dir.path().join("edge.db"),
                max_bytes: 1 << 24,
                edge_id: "cab".into(),
            },
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let live = Arc::new(Registry::default());
        let service = Provisioning::new(store.clone(), Jt808Auth::Registry, 2, live.clone());
        let Err(ProvisionError::Invalid(errors)) = service
            .provision(vec![terminal("13800000001"), terminal("013800000001"), terminal("x")])
            .await
        else {
            panic!("accepted")
        };
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].error.contains("twice"), "{errors:?}");
        assert_eq!(service.list(None).await.unwrap().total, 0, "nothing was written");
        let report = service
            .provision(vec![terminal("13800000001"), terminal("13800000002")])
            .await
            .unwrap();
        assert_eq!(report.added, ["013800000001", "013800000002"]);
        let full = service.provision(vec![terminal("13800000003")]).await;
        assert!(matches!(full, Err(ProvisionError::TableFull(2))), "{full:?}");
        // Updating a known phone needs no new row.
        let again = service.provision(vec![terminal("13800000002")]).await.unwrap();
        assert_eq!(again.updated, ["013800000002"]);

        let claim = live.claim("013800000001", live.connection_id());
        assert_eq!(service.list(None).await.unwrap().online, ["013800000001"]);
        let report = service
            .deprovision(vec!["13800000001".into(), "13800000009".into()])
            .await
            .unwrap();
        assert_eq!(report.removed, ["013800000001"]);
        assert_eq!(report.not_found, ["013800000009"]);
        assert_eq!(report.disconnected, ["013800000001"]);
        assert!(claim.replaced.is_cancelled(), "the live session was not told to close");
        assert!(!live.is_online("013800000001"));
        assert!(matches!(
            service.deprovision(vec!["1-2".into()]).await,
            Err(ProvisionError::Invalid(_))
        ));
        store.close().await;
    }

    #[test]
    fn phones_are_bcd_digits_padded_to_the_header_width() {
        assert_eq!(normalize_phone("13800000001").unwrap(), "013800000001");
        assert_eq!(normalize_phone(" 013800000001 ").unwrap(), "013800000001");
        assert_eq!(normalize_phone("1380000000100").unwrap(), "00000001380000000100");
        assert!(normalize_phone("").unwrap_err().contains("empty"));
        assert!(normalize_phone("1380000000a").unwrap_err().contains("digits only"));
        assert!(normalize_phone("+8613800000001").unwrap_err().contains("'+'"));
        assert!(normalize_phone(&"1".repeat(21)).unwrap_err().contains("at most 20"));
    }

    #[test]
    fn plates_and_colours_are_checked_with_a_reason() {
        let input = |plate: Option<&str>, plate_color| TerminalInput {
            phone: "13800000001".into(),
            plate: plate.map(str::to_string),
            plate_color,
        };
        let ok = validate(&input(Some("京A12345"), Some(1))).unwrap();
        assert_eq!(ok.plate.as_deref(), Some("京A12345"));
        assert_eq!(ok.plate_color, Some(1));
        assert!(validate(&input(Some("  "), None)).unwrap_err().contains("empty"));
        assert!(validate(&input(Some("京A 12345"), None))
            .unwrap_err()
            .contains("character"));
        assert!(validate(&input(Some(&"A".repeat(21)), None))
            .unwrap_err()
            .contains("at most 20"));
        assert!(validate(&input(None, Some(7)))
            .unwrap_err()
            .contains("not a JT/T 808 colour"));
        assert!(validate(&input(None, None)).is_ok());
    }
}
