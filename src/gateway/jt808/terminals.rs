//! The `jt808_terminals` table: auth codes issued at registration (they survive restarts), the
//! registry of pre-provisioned terminals for `jt808.auth: registry`, and what the last
//! authentication said (2019 IMEI and software version).
//!
//! Owns the registration and authentication rules. Every function runs on a connection handed in
//! by the caller, inside the store's group commit (`Store::write`), so a verdict and the record
//! that reports it commit together. Must not send anything or keep state outside the database.

use rusqlite::{params, Connection, OptionalExtension};

use crate::config::Jt808Auth;
use crate::protocol::jt808::{register_result, Edition};
use crate::store::StoreError;

/// What a 0x0100 register asks for, in the form the table stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The phone as rendered in topics (all digits kept).
    pub phone: String,
    /// Terminal id, padding trimmed.
    pub terminal_id: String,
    /// Plate (or VIN when the plate colour is 0).
    pub plate: String,
    /// The plate colour the register carries (JT/T 808 table: 0 no plate, 1 blue, 2 yellow, ...).
    pub plate_color: Option<u8>,
    /// The register body's layout (2011, 2013 or 2019).
    pub edition: Edition,
}

/// The answer to a register: a 0x8100 result and, on success, the auth code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// A [`register_result`] value.
    pub result: u8,
    /// The auth code (empty unless `result` is OK).
    pub auth_code: Vec<u8>,
    /// The phone had a code, which this registration replaced (the old one no longer works).
    pub replaced_code: bool,
    /// Refused because the table holds `jt808.max_terminals` rows.
    pub table_full: bool,
}

/// What a 0x0102 authentication presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The phone of the frame's header.
    pub phone: String,
    /// The auth code bytes as sent.
    pub code: Vec<u8>,
    /// 2019: the IMEI, padding trimmed.
    pub imei: Option<String>,
    /// 2019: the software version, padding trimmed.
    pub software_version: Option<String>,
}

/// The verdict on an authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthVerdict {
    /// The code matched (and the IMEI, for a provisioned terminal that has one).
    pub ok: bool,
    /// The edition the terminal registered with, when known (tells 2011 from 2013).
    pub edition: Option<Edition>,
}

fn edition_name(edition: Edition) -> &'static str {
    match edition {
        Edition::V2011 => "2011",
        Edition::V2013 => "2013",
        Edition::V2019 => "2019",
    }
}

fn edition_from_name(name: &str) -> Option<Edition> {
    match name {
        "2011" => Some(Edition::V2011),
        "2013" => Some(Edition::V2013),
        "2019" => Some(Edition::V2019),
        _ => None,
    }
}

struct Row {
    provisioned: bool,
    terminal_id: Option<String>,
    plate: Option<String>,
    plate_color: Option<u8>,
    imei: Option<String>,
    auth_code: Option<Vec<u8>>,
    edition: Option<String>,
}

fn row(conn: &Connection, phone: &str) -> Result<Option<Row>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT provisioned, terminal_id, plate, imei, auth_code, edition, plate_color FROM jt808_terminals WHERE phone = ?1",
        )?
        .query_row([phone], |r| {
            Ok(Row {
                provisioned: r.get::<_, i64>(0)? != 0,
                terminal_id: r.get(1)?,
                plate: r.get(2)?,
                imei: r.get(3)?,
                auth_code: r.get(4)?,
                edition: r.get(5)?,
                plate_color: r.get(6)?,
            })
        })
        .optional()?)
}

/// Decides a registration and stores it. Every successful registration issues `fresh_code`: a
/// phone that registers again gets a new code and its old one stops working (the standard's
/// intent; whoever registered before can no longer authenticate with what it was given).
/// In `registry` mode only provisioned terminals may register, and a provisioned terminal id or
/// plate must match. A phone not in the table is refused once it holds `max_rows` rows.
pub fn register(
    conn: &Connection,
    mode: Jt808Auth,
    request: &RegisterRequest,
    fresh_code: &[u8],
    now_ms: i64,
    max_rows: usize,
) -> Result<RegisterOutcome, StoreError> {
    let existing = row(conn, &request.phone)?;
    let refuse = |result| RegisterOutcome {
        result,
        ..RegisterOutcome::default()
    };
    if existing.is_none() {
        let rows: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM jt808_terminals")?
            .query_row([], |r| r.get(0))?;
        if rows as u64 >= max_rows as u64 {
            return Ok(RegisterOutcome {
                table_full: true,
                ..refuse(register_result::TERMINAL_UNKNOWN)
            });
        }
    }
    if mode == Jt808Auth::Registry {
        let Some(provisioned) = existing.as_ref().filter(|r| r.provisioned) else {
            return Ok(refuse(register_result::TERMINAL_UNKNOWN));
        };
        if provisioned
            .terminal_id
            .as_deref()
            .is_some_and(|id| id != request.terminal_id)
        {
            return Ok(refuse(register_result::TERMINAL_UNKNOWN));
        }
        if provisioned.plate.as_deref().is_some_and(|p| p != request.plate) {
            return Ok(refuse(register_result::VEHICLE_UNKNOWN));
        }
        if provisioned
            .plate_color
            .is_some_and(|c| request.plate_color.is_some_and(|got| got != c))
        {
            return Ok(refuse(register_result::VEHICLE_UNKNOWN));
        }
    }
    let replaced_code = existing.as_ref().is_some_and(|r| r.auth_code.is_some());
    let code = fresh_code.to_vec();
    // Provisioned values are the operator's: a registration never overwrites them.
    conn.prepare_cached(
        "INSERT INTO jt808_terminals(phone, terminal_id, plate, auth_code, edition, registered_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(phone) DO UPDATE SET
           terminal_id = CASE WHEN provisioned = 1 AND terminal_id IS NOT NULL THEN terminal_id ELSE excluded.terminal_id END,
           plate = CASE WHEN provisioned = 1 AND plate IS NOT NULL THEN plate ELSE excluded.plate END,
           auth_code = excluded.auth_code,
           edition = excluded.edition,
           registered_ms = excluded.registered_ms",
    )?
    .execute(params![
        request.phone,
        request.terminal_id,
        request.plate,
        code,
        edition_name(request.edition),
        now_ms
    ])?;
    Ok(RegisterOutcome {
        result: register_result::OK,
        auth_code: code,
        replaced_code,
        table_full: false,
    })
}

/// Checks an authentication and, when it passes, records the time and the 2019 fields. In
/// `registry` mode the terminal must also still be provisioned.
pub fn authenticate(
    conn: &Connection,
    mode: Jt808Auth,
    request: &AuthRequest,
    now_ms: i64,
) -> Result<AuthVerdict, StoreError> {
    let Some(existing) = row(conn, &request.phone)? else {
        return Ok(AuthVerdict {
            ok: false,
            edition: None,
        });
    };
    let edition = existing.edition.as_deref().and_then(edition_from_name);
    let code_ok = existing
        .auth_code
        .as_deref()
        .is_some_and(|code| !code.is_empty() && constant_time_eq(code, &request.code));
    let imei_ok = match (&existing.imei, &request.imei) {
        (Some(expected), Some(got)) if existing.provisioned => expected == got,
        _ => true,
    };
    let mode_ok = mode == Jt808Auth::Open || existing.provisioned;
    let ok = code_ok && imei_ok && mode_ok;
    if ok {
        conn.prepare_cached(
            "UPDATE jt808_terminals SET
               imei = CASE WHEN provisioned = 1 AND imei IS NOT NULL THEN imei ELSE COALESCE(?2, imei) END,
               software_version = COALESCE(?3, software_version),
               last_auth_ms = ?4
             WHERE phone = ?1",
        )?
        .execute(params![request.phone, request.imei, request.software_version, now_ms])?;
    }
    Ok(AuthVerdict { ok, edition })
}

/// 0x0003 (终端注销, deregistration): the terminal's auth code stops being valid; it must register
/// again. A provisioned terminal stays provisioned.
pub fn deregister(conn: &Connection, phone: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE jt808_terminals SET auth_code = NULL WHERE phone = ?1")?
        .execute([phone])?;
    Ok(())
}

/// What an operator provisions for one terminal (`jt808.auth: registry`). `None` fields are not
/// checked at registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provisioned {
    pub phone: String,
    pub terminal_id: Option<String>,
    pub plate: Option<String>,
    pub plate_color: Option<u8>,
    pub imei: Option<String>,
}

/// Adds (or updates) a pre-provisioned terminal. Returns whether the phone was new to the
/// provisioned set. A terminal already registered keeps its auth code.
pub fn provision(conn: &Connection, terminal: &Provisioned) -> Result<bool, StoreError> {
    let was = row(conn, &terminal.phone)?.is_some_and(|r| r.provisioned);
    conn.prepare_cached(
        "INSERT INTO jt808_terminals(phone, provisioned, terminal_id, plate, imei, plate_color)
         VALUES (?1, 1, ?2, ?3, ?4, ?5)
         ON CONFLICT(phone) DO UPDATE SET provisioned = 1, terminal_id = excluded.terminal_id,
           plate = excluded.plate, imei = excluded.imei, plate_color = excluded.plate_color",
    )?
    .execute(params![
        terminal.phone,
        terminal.terminal_id,
        terminal.plate,
        terminal.imei,
        terminal.plate_color
    ])?;
    Ok(!was)
}

/// Revokes a terminal: its row goes (provisioning and auth code alike), so it can neither
/// authenticate with the code it holds nor register again in `registry` mode. Returns whether
/// the phone was provisioned.
pub fn deprovision(conn: &Connection, phone: &str) -> Result<bool, StoreError> {
    let was = row(conn, phone)?.is_some_and(|r| r.provisioned);
    if was {
        conn.prepare_cached("DELETE FROM jt808_terminals WHERE phone = ?1")?
            .execute([phone])?;
    }
    Ok(was)
}

/// A provisioned terminal as listed for the operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProvisionedRow {
    pub phone: String,
    pub plate: Option<String>,
    pub plate_color: Option<u8>,
    pub terminal_id: Option<String>,
    /// Whether the terminal holds a valid auth code (it registered since it was provisioned).
    pub registered: bool,
    pub registered_ms: Option<i64>,
    pub last_auth_ms: Option<i64>,
}

/// Every provisioned terminal, by phone, at most `limit`.
pub fn provisioned(conn: &Connection, limit: usize) -> Result<Vec<ProvisionedRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT phone, plate, plate_color, terminal_id, auth_code IS NOT NULL, registered_ms, last_auth_ms
         FROM jt808_terminals WHERE provisioned = 1 ORDER BY phone LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(ProvisionedRow {
                phone: r.get(0)?,
                plate: r.get(1)?,
                plate_color: r.get(2)?,
                terminal_id: r.get(3)?,
                registered: r.get(4)?,
                registered_ms: r.get(5)?,
                last_auth_ms: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// How many terminals are provisioned.
pub fn provisioned_count(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM jt808_terminals WHERE provisioned = 1")?
        .query_row([], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// The stored auth code of `phone`, if it has one.
pub fn auth_code(conn: &Connection, phone: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(row(conn, phone)?.and_then(|r| r.auth_code))
}

/// A new random auth code: 16 characters a terminal can store and echo without encoding trouble.
pub fn fresh_code() -> Vec<u8> {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(16).collect()
}

/// Compares without an early exit, so response timing does not reveal how much of a code matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = crate::store::schema::open(&dir.path().join("t.db"), "t", 1).unwrap();
        (dir, conn)
    }

    fn request(phone: &str) -> RegisterRequest {
        RegisterRequest {
            phone: phone.into(),
            terminal_id: "T1".into(),
            plate: "京A12345".into(),
            plate_color: Some(1),
            edition: Edition::V2013,
        }
    }

    fn auth(phone: &str, code: &[u8]) -> AuthRequest {
        AuthRequest {
            phone: phone.into(),
            code: code.to_vec(),
            imei: None,
            software_version: None,
        }
    }

    const ROWS: usize = 1000;

    #[test]
    fn re_registration_issues_a_new_code_and_the_old_one_stops_working() {
        let (_d, c) = db();
        let first = register(&c, Jt808Auth::Open, &request("013800000001"), b"CODE1", 1, ROWS).unwrap();
        assert_eq!(first.result, register_result::OK);
        assert_eq!(first.auth_code, b"CODE1");
        assert!(!first.replaced_code);
        assert!(
            authenticate(&c, Jt808Auth::Open, &auth("013800000001", b"CODE1"), 2)
                .unwrap()
                .ok
        );
        let again = register(&c, Jt808Auth::Open, &request("013800000001"), b"CODE2", 2, ROWS).unwrap();
        assert_eq!(again.auth_code, b"CODE2");
        assert!(again.replaced_code);
        assert!(
            !authenticate(&c, Jt808Auth::Open, &auth("013800000001", b"CODE1"), 3)
                .unwrap()
                .ok,
            "the old code still works"
        );
        let verdict = authenticate(&c, Jt808Auth::Open, &auth("013800000001", b"CODE2"), 3).unwrap();
        assert!(verdict.ok);
        assert_eq!(verdict.edition, Some(Edition::V2013));
        assert!(
            !authenticate(&c, Jt808Auth::Open, &auth("013800000009", b"CODE2"), 3)
                .unwrap()
                .ok
        );
    }

    #[test]
    fn registry_mode_refuses_unprovisioned_terminals_and_mismatching_ids() {
        let (_d, c) = db();
        let refused = register(&c, Jt808Auth::Registry, &request("013800000002"), b"C", 1, ROWS).unwrap();
        assert_eq!(refused.result, register_result::TERMINAL_UNKNOWN);
        assert!(refused.auth_code.is_empty());
        provision(
            &c,
            &Provisioned {
                phone: "013800000002".into(),
                terminal_id: Some("OTHER".into()),
                plate: None,
                imei: None,
                ..Provisioned::default()
            },
        )
        .unwrap();
        let refused = register(&c, Jt808Auth::Registry, &request("013800000002"), b"C", 1, ROWS).unwrap();
        assert_eq!(refused.result, register_result::TERMINAL_UNKNOWN);
        provision(
            &c,
            &Provisioned {
                phone: "013800000002".into(),
                terminal_id: Some("T1".into()),
                plate: Some("沪B00000".into()),
                imei: None,
                ..Provisioned::default()
            },
        )
        .unwrap();
        let refused = register(&c, Jt808Auth::Registry, &request("013800000002"), b"C", 1, ROWS).unwrap();
        assert_eq!(refused.result, register_result::VEHICLE_UNKNOWN);
        provision(
            &c,
            &Provisioned {
                phone: "013800000002".into(),
                terminal_id: Some("T1".into()),
                plate: None,
                imei: None,
                ..Provisioned::default()
            },
        )
        .unwrap();
        let ok = register(&c, Jt808Auth::Registry, &request("013800000002"), b"C", 1, ROWS).unwrap();
        assert_eq!(ok.result, register_result::OK);
        assert!(
            authenticate(&c, Jt808Auth::Registry, &auth("013800000002", b"C"), 2)
                .unwrap()
                .ok
        );
    }

    #[test]
    fn a_terminal_registered_in_open_mode_cannot_authenticate_in_registry_mode() {
        let (_d, c) = db();
        register(&c, Jt808Auth::Open, &request("013800000003"), b"C", 1, ROWS).unwrap();
        assert!(
            !authenticate(&c, Jt808Auth::Registry, &auth("013800000003", b"C"), 2)
                .unwrap()
                .ok
        );
    }

    #[test]
    fn a_provisioned_imei_must_match_the_2019_authentication() {
        let (_d, c) = db();
        provision(
            &c,
            &Provisioned {
                phone: "00000000013800000004".into(),
                terminal_id: None,
                plate: None,
                imei: Some("123456789012345".into()),
                ..Provisioned::default()
            },
        )
        .unwrap();
        register(&c, Jt808Auth::Registry, &request("00000000013800000004"), b"C", 1, ROWS).unwrap();
        let mut a = auth("00000000013800000004", b"C");
        a.imei = Some("999999999999999".into());
        assert!(!authenticate(&c, Jt808Auth::Registry, &a, 2).unwrap().ok);
        a.imei = Some("123456789012345".into());
        assert!(authenticate(&c, Jt808Auth::Registry, &a, 2).unwrap().ok);
    }

    #[test]
    fn deregistration_invalidates_the_code() {
        let (_d, c) = db();
        register(&c, Jt808Auth::Open, &request("013800000005"), b"C", 1, ROWS).unwrap();
        deregister(&c, "013800000005").unwrap();
        assert!(
            !authenticate(&c, Jt808Auth::Open, &auth("013800000005", b"C"), 2)
                .unwrap()
                .ok
        );
        assert_eq!(auth_code(&c, "013800000005").unwrap(), None);
        let again = register(&c, Jt808Auth::Open, &request("013800000005"), b"NEW", 3, ROWS).unwrap();
        assert_eq!(again.auth_code, b"NEW");
    }

    #[test]
    fn open_registrations_stop_at_the_table_bound_but_known_phones_still_register() {
        let (_d, c) = db();
        for i in 0..3 {
            let r = register(&c, Jt808Auth::Open, &request(&format!("01380000010{i}")), b"C", 1, 3).unwrap();
            assert_eq!(r.result, register_result::OK);
        }
        let refused = register(&c, Jt808Auth::Open, &request("013800000199"), b"C", 1, 3).unwrap();
        assert!(refused.table_full);
        assert_eq!(refused.result, register_result::TERMINAL_UNKNOWN);
        let known = register(&c, Jt808Auth::Open, &request("013800000101"), b"D", 2, 3).unwrap();
        assert_eq!(known.result, register_result::OK);
    }

    #[test]
    fn a_provisioned_plate_colour_must_match_and_deprovisioning_revokes_the_code() {
        let (_d, c) = db();
        let mut p = Provisioned {
            phone: "013800000006".into(),
            plate: Some("京A12345".into()),
            plate_color: Some(2),
            ..Provisioned::default()
        };
        assert!(provision(&c, &p).unwrap());
        let refused = register(&c, Jt808Auth::Registry, &request("013800000006"), b"C", 1, ROWS).unwrap();
        assert_eq!(refused.result, register_result::VEHICLE_UNKNOWN);
        p.plate_color = Some(1);
        assert!(!provision(&c, &p).unwrap(), "already provisioned");
        let ok = register(&c, Jt808Auth::Registry, &request("013800000006"), b"C", 1, ROWS).unwrap();
        assert_eq!(ok.result, register_result::OK);
        let listed = provisioned(&c, 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].registered);
        assert_eq!(listed[0].plate_color, Some(1));
        assert!(deprovision(&c, "013800000006").unwrap());
        assert!(!deprovision(&c, "013800000006").unwrap());
        assert!(
            !authenticate(&c, Jt808Auth::Registry, &auth("013800000006", b"C"), 2)
                .unwrap()
                .ok
        );
        let refused = register(&c, Jt808Auth::Registry, &request("013800000006"), b"C", 3, ROWS).unwrap();
        assert_eq!(refused.result, register_result::TERMINAL_UNKNOWN);
        assert_eq!(provisioned_count(&c).unwrap(), 0);
    }

    #[test]
    fn fresh_codes_are_sixteen_alphanumerics_and_differ() {
        let (a, b) = (fresh_code(), fresh_code());
        assert_eq!(a.len(), 16);
        assert!(a.iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(a, b);
    }
}
