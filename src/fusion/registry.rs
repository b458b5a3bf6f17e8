//! The identity registry: which plate, VIN, JT/T 808 phone and tag TID/CID belong to one vehicle
//! (CONTRACT 4). One table, one row per vehicle, each identifier unique, so a lookup by TID, by
//! plate, by VIN or by phone is one indexed query.
//!
//! Rows are *manual* (the `registry.*` edge commands, the web page, CSV imports) or *automatic*
//! (facts fusion reads from committed records: JT/T 808 registrations, GB/T 32960 logins, tag
//! reads). The table is bounded by `fusion.registry_max_entries`: a new row beyond it evicts the
//! least recently seen automatic row; manual rows are never evicted, and a manual insert into a
//! registry full of manual rows is refused with a clear error.
//!
//! [`Registry`] is the one implementation behind both doors: the edge commands registered by
//! [`register_actions`] and the web page call the same methods.
//! Owns: the `registry` table. Must not: be written other than through the store's writer.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::plate::{normalize_phone, normalize_plate, normalize_tid, normalize_vin, InvalidValue};
use crate::command::{EdgeActions, Outcome};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, WriteCtx};
use crate::time::{now_ms, rfc3339_ms};

/// Largest CSV accepted by [`Registry::import_csv`].
pub const MAX_IMPORT_BYTES: usize = 64 << 20;
/// Line errors an import report lists (all are counted).
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Vehicles one `upsert` call may carry.
pub const MAX_UPSERT: usize = 10_000;
/// Plates one `delete` call may carry.
pub const MAX_DELETE: usize = 10_000;
/// Rows one `list` call returns at most.
pub const MAX_LIST: usize = 1000;
/// Rows an import writes per store transaction, so the writer is never held long.
const IMPORT_CHUNK: usize = 500;

/// One vehicle of the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vehicle {
    /// Row id (stable while the row exists).
    #[serde(skip)]
    pub id: i64,
    /// The plate as printed, e.g. `京A12345`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    /// JT/T 808 plate colour (1 blue, 2 yellow, 3 black, 4 white, 5 green, 9 other).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plate_color: Option<u8>,
    /// Plate type code as the tag carries it (HPZL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plate_type: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vin: Option<String>,
    /// JT/T 808 terminal phone as rendered in topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Tag TID, lowercase hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// Tag CID (card id), lowercase hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// Entered by hand; never evicted.
    pub manual: bool,
    #[serde(skip)]
    pub updated_ms: i64,
    #[serde(skip)]
    pub last_seen_ms: i64,
    /// RFC 3339 of the last change.
    pub updated: String,
    /// RFC 3339 of the last time a device or a tag showed this vehicle (or of the last change).
    pub last_seen: String,
}

/// A lookup key: each is one indexed query.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Tid(String),
    Plate(String),
    Vin(String),
    Phone(String),
}

impl Key {
    fn sql(&self) -> &'static str {
        match self {
            Key::Tid(_) => "SELECT id, plate, plate_color, plate_type, vin, phone, tid, cid, manual, updated_ms, last_seen_ms FROM registry WHERE tid = ?1",
            Key::Plate(_) => "SELECT id, plate, plate_color, plate_type, vin, phone, tid, cid, manual, updated_ms, last_seen_ms FROM registry WHERE plate = ?1",
            Key::Vin(_) => "SELECT id, plate, plate_color, plate_type, vin, phone, tid, cid, manual, updated_ms, last_seen_ms FROM registry WHERE vin = ?1",
            Key::Phone(_) => "SELECT id, plate, plate_color, plate_type, vin, phone, tid, cid, manual, updated_ms, last_seen_ms FROM registry WHERE phone = ?1",
        }
    }

    fn value(&self) -> &str {
        match self {
            Key::Tid(v) | Key::Plate(v) | Key::Vin(v) | Key::Phone(v) => v,
        }
    }
}

const SELECT: &str =
    "SELECT id, plate, plate_color, plate_type, vin, phone, tid, cid, manual, updated_ms, last_seen_ms FROM registry";

fn vehicle(r: &rusqlite::Row<'_>) -> rusqlite::Result<Vehicle> {
    let updated_ms: i64 = r.get(9)?;
    let last_seen_ms: i64 = r.get(10)?;
    Ok(Vehicle {
        id: r.get(0)?,
        plate: r.get(1)?,
        plate_color: r.get::<_, Option<i64>>(2)?.map(|c| c.clamp(0, 255) as u8),
        plate_type: r
            .get::<_, Option<i64>>(3)?
            .map(|t| t.clamp(0, i64::from(u32::MAX)) as u32),
        vin: r.get(4)?,
        phone: r.get(5)?,
        tid: r.get(6)?,
        cid: r.get(7)?,
        manual: r.get::<_, i64>(8)? != 0,
        updated_ms,
        last_seen_ms,
        updated: rfc3339_ms(updated_ms),
        last_seen: rfc3339_ms(last_seen_ms),
    })
}

/// The row `key` names, if any (one indexed query).
pub fn find(conn: &Connection, key: &Key) -> rusqlite::Result<Option<Vehicle>> {
    conn.prepare_cached(key.sql())?
        .query_row([key.value()], vehicle)
        .optional()
}

/// Errors of the registry service.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::Store(e.into())
    }
}

/// One vehicle as a caller enters it (`registry.upsert`, the page, a CSV line). Absent fields
/// keep what the registry holds; an empty string clears a field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleInput {
    pub plate: String,
    #[serde(default)]
    pub plate_color: Option<u8>,
    #[serde(default)]
    pub vin: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub tid: Option<String>,
}

/// A change to one optional field.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    Keep,
    Clear,
    Set(String),
}

impl Change {
    fn parse(
        value: &Option<String>,
        normalize: fn(&str) -> Result<String, InvalidValue>,
    ) -> Result<Change, InvalidValue> {
        match value.as_deref().map(str::trim) {
            None => Ok(Change::Keep),
            Some("") => Ok(Change::Clear),
            Some(v) => normalize(v).map(Change::Set),
        }
    }

    fn key(&self, make: fn(String) -> Key) -> Option<Key> {
        match self {
            Change::Set(v) => Some(make(v.clone())),
            _ => None,
        }
    }

    fn apply(&self, current: Option<String>) -> Option<String> {
        match self {
            Change::Keep => current,
            Change::Clear => None,
            Change::Set(v) => Some(v.clone()),
        }
    }
}

/// A validated [`VehicleInput`].
#[derive(Debug, Clone, PartialEq)]
struct ValidInput {
    plate: String,
    plate_color: Option<u8>,
    vin: Change,
    phone: Change,
    tid: Change,
}

impl VehicleInput {
    fn validate(&self) -> Result<ValidInput, InvalidValue> {
        Ok(ValidInput {
            plate: normalize_plate(&self.plate)?,
            plate_color: self.plate_color,
            vin: Change::parse(&self.vin, normalize_vin)?,
            phone: Change::parse(&self.phone, normalize_phone)?,
            tid: Change::parse(&self.tid, normalize_tid)?,
        })
    }
}

/// Why one vehicle of a batch was not stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemError {
    /// Position in the request (0-based), or the CSV line (1-based).
    pub index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    pub error: String,
}

/// What an upsert did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpsertReport {
    pub created: usize,
    pub updated: usize,
    pub errors: Vec<ItemError>,
}

/// What a delete did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeleteReport {
    pub deleted: usize,
    pub not_found: Vec<String>,
    pub errors: Vec<ItemError>,
}

/// What a CSV import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// Data lines read (the header excluded).
    pub rows: usize,
    pub created: usize,
    pub updated: usize,
    /// Lines refused, all counted; the first [`MAX_REPORTED_ERRORS`] are listed with their line.
    pub errors_total: usize,
    pub errors: Vec<ItemError>,
    /// The file had more rows than the registry can hold; the rest was not read.
    pub truncated: bool,
}

/// Line errors of an import: all counted, the first [`MAX_REPORTED_ERRORS`] by line kept, in
/// bounded memory whatever the file holds.
#[derive(Default)]
struct ErrorList {
    total: usize,
    kept: Vec<ItemError>,
}

impl ErrorList {
    fn push(&mut self, e: ItemError) {
        self.total += 1;
        self.kept.push(e);
        if self.kept.len() > 2 * MAX_REPORTED_ERRORS {
            self.trim();
        }
    }

    fn trim(&mut self) {
        self.kept.sort_by_key(|e| e.index);
        self.kept.truncate(MAX_REPORTED_ERRORS);
    }
}

/// A page of [`Registry::list`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ListPage {
    /// Rows matching the query (all pages).
    pub total: usize,
    pub vehicles: Vec<Vehicle>,
}

/// What [`Registry::list`] looks for.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ListQuery {
    /// Text found in the plate, VIN, phone, TID or CID (case-insensitive); all rows when absent.
    #[serde(default)]
    pub query: Option<String>,
    /// Only manual (`true`) or only automatic (`false`) rows.
    #[serde(default)]
    pub manual: Option<bool>,
    /// Rows per page \[100\], at most [`MAX_LIST`].
    #[serde(default)]
    pub limit: Option<usize>,
    /// Rows to skip (paging).
    #[serde(default)]
    pub offset: Option<usize>,
}

/// A fact fusion read from a committed record, filling the registry automatically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fact {
    /// A tag was read: its TID, CID and the plate and plate type it carries.
    Tag {
        tid: String,
        cid: Option<String>,
        plate: Option<String>,
        plate_type: Option<u32>,
    },
    /// A JT/T 808 registration (0x0100): the phone with its plate and colour, or (colour 0) the VIN.
    Jt808Register {
        phone: String,
        plate: Option<String>,
        plate_color: u8,
        vin: Option<String>,
    },
    /// A vehicle identity showed up (GB/T 32960 login: VIN; JT/T 808 authentication: phone).
    Seen(Key),
}

/// What applying facts did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactReport {
    pub inserted: usize,
    pub updated: usize,
    /// Facts not stored (a registry full of manual rows).
    pub dropped: usize,
}

/// The registry service; shared as `Arc<Registry>`.
pub struct Registry {
    store: Store,
    max_entries: usize,
    metrics: Arc<Metrics>,
}

/// Count and eviction bookkeeping shared by every write job.
struct Room<'a> {
    max_entries: usize,
    metrics: &'a Metrics,
}

impl Room<'_> {
    /// Makes room for one new row; `false` when only manual rows are left.
    fn make(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let counters = &self.metrics.fusion;
        while counters.registry_entries.load(Relaxed) >= self.max_entries as i64 {
            let evicted = conn
                .prepare_cached(
                    "DELETE FROM registry WHERE id =
                       (SELECT id FROM registry WHERE manual = 0 ORDER BY last_seen_ms LIMIT 1)",
                )?
                .execute([])?;
            if evicted == 0 {
                return Ok(false);
            }
            counters.registry_entries.fetch_sub(1, Relaxed);
            counters.registry_evicted_total.fetch_add(1, Relaxed);
        }
        Ok(true)
    }

    fn inserted(&self) {
        self.metrics.fusion.registry_entries.fetch_add(1, Relaxed);
    }

    fn deleted(&self, n: usize) {
        self.metrics.fusion.registry_entries.fetch_sub(n as i64, Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upserted {
    Created,
    Updated,
}

fn set_row(conn: &Connection, v: &Vehicle) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE registry SET plate = ?2, plate_color = ?3, plate_type = ?4, vin = ?5, phone = ?6, tid = ?7,
         cid = ?8, manual = ?9, updated_ms = ?10, last_seen_ms = ?11 WHERE id = ?1",
    )?
    .execute(params![
        v.id,
        v.plate,
        v.plate_color,
        v.plate_type,
        v.vin,
        v.phone,
        v.tid,
        v.cid,
        v.manual,
        v.updated_ms,
        v.last_seen_ms
    ])?;
    Ok(())
}

fn insert_row(conn: &Connection, v: &Vehicle) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO registry(plate, plate_color, plate_type, vin, phone, tid, cid, manual, updated_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        v.plate,
        v.plate_color,
        v.plate_type,
        v.vin,
        v.phone,
        v.tid,
        v.cid,
        v.manual,
        v.updated_ms,
        v.last_seen_ms
    ])?;
    Ok(())
}

fn blank(now: i64) -> Vehicle {
    Vehicle {
        id: 0,
        plate: None,
        plate_color: None,
        plate_type: None,
        vin: None,
        phone: None,
        tid: None,
        cid: None,
        manual: false,
        updated_ms: now,
        last_seen_ms: now,
        updated: String::new(),
        last_seen: String::new(),
    }
}

/// Fills `target`'s empty identifiers from `other` (an automatic row being merged into it).
fn absorb(target: &mut Vehicle, other: &Vehicle) {
    target.plate_color = target.plate_color.or(other.plate_color);
    target.plate_type = target.plate_type.or(other.plate_type);
    target.vin = target.vin.take().or_else(|| other.vin.clone());
    target.phone = target.phone.take().or_else(|| other.phone.clone());
    target.tid = target.tid.take().or_else(|| other.tid.clone());
    target.cid = target.cid.take().or_else(|| other.cid.clone());
    target.last_seen_ms = target.last_seen_ms.max(other.last_seen_ms);
}

/// Stores one manual vehicle. `Ok(Err(reason))` when it conflicts with another manual row or the
/// registry is full of manual rows; nothing is changed then.
fn upsert_manual(
    conn: &Connection,
    input: &ValidInput,
    now: i64,
    room: &Room<'_>,
) -> rusqlite::Result<Result<Upserted, String>> {
    let by_plate = find(conn, &Key::Plate(input.plate.clone()))?;
    let mut others = Vec::new();
    for (field, key) in [
        ("vin", input.vin.key(Key::Vin)),
        ("phone", input.phone.key(Key::Phone)),
        ("tid", input.tid.key(Key::Tid)),
    ] {
        let Some(key) = key else { continue };
        if let Some(row) = find(conn, &key)? {
            if by_plate.as_ref().is_some_and(|p| p.id == row.id) {
                continue;
            }
            if row.manual {
                return Ok(Err(format!(
                    "{field} {} is already registered to plate {}",
                    key.value(),
                    row.plate.as_deref().unwrap_or("(none)")
                )));
            }
            if !others.iter().any(|o: &Vehicle| o.id == row.id) {
                others.push(row);
            }
        }
    }
    let mut others = others.into_iter();
    let (mut target, exists) = match by_plate {
        Some(row) => (row, true),
        None => match others.next() {
            Some(row) => (row, true),
            None => (blank(now), false),
        },
    };
    let absorbed: Vec<Vehicle> = others.collect();
    for other in &absorbed {
        absorb(&mut target, other);
    }
    if !exists && !room.make(conn)? {
        return Ok(Err(format!(
            "the registry is full: {} manual entries (fusion.registry_max_entries)",
            room.max_entries
        )));
    }
    if !absorbed.is_empty() {
        let mut delete = conn.prepare_cached("DELETE FROM registry WHERE id = ?1")?;
        for other in &absorbed {
            delete.execute([other.id])?;
        }
        room.deleted(absorbed.len());
    }
    target.plate = Some(input.plate.clone());
    target.plate_color = input.plate_color.or(target.plate_color);
    target.vin = input.vin.apply(target.vin.take());
    target.phone = input.phone.apply(target.phone.take());
    target.tid = input.tid.apply(target.tid.take());
    target.manual = true;
    target.updated_ms = now;
    target.last_seen_ms = target.last_seen_ms.max(now);
    if exists {
        set_row(conn, &target)?;
        Ok(Ok(Upserted::Updated))
    } else {
        insert_row(conn, &target)?;
        room.inserted();
        Ok(Ok(Upserted::Created))
    }
}

fn upsert_all(
    conn: &Connection,
    items: &[(u64, ValidInput)],
    now: i64,
    room: &Room<'_>,
    report: &mut UpsertReport,
) -> rusqlite::Result<()> {
    for (index, input) in items {
        match upsert_manual(conn, input, now, room)? {
            Ok(Upserted::Created) => report.created += 1,
            Ok(Upserted::Updated) => report.updated += 1,
            Err(error) => report.errors.push(ItemError {
                index: *index,
                plate: Some(input.plate.clone()),
                error,
            }),
        }
    }
    Ok(())
}

/// Whether `key` is free or held by the row `id`.
fn free_for(conn: &Connection, key: &Key, id: i64) -> rusqlite::Result<bool> {
    Ok(find(conn, key)?.is_none_or(|row| row.id == id))
}

/// Applies one automatic fact. Manual rows only get their `last_seen` refreshed and empty
/// tag details (CID, plate type) filled; automatic rows follow the devices.
fn apply_fact(
    conn: &Connection,
    fact: &Fact,
    now: i64,
    room: &Room<'_>,
    report: &mut FactReport,
) -> rusqlite::Result<()> {
    let insert = |row: Vehicle, report: &mut FactReport| -> rusqlite::Result<()> {
        if room.make(conn)? {
            insert_row(conn, &row)?;
            room.inserted();
            report.inserted += 1;
        } else {
            room.metrics.fusion.registry_auto_dropped_total.fetch_add(1, Relaxed);
            report.dropped += 1;
        }
        Ok(())
    };
    let update = |mut row: Vehicle, report: &mut FactReport| -> rusqlite::Result<()> {
        row.last_seen_ms = now;
        set_row(conn, &row)?;
        report.updated += 1;
        Ok(())
    };
    match fact {
        Fact::Tag {
            tid,
            cid,
            plate,
            plate_type,
        } => {
            if let Some(mut row) = find(conn, &Key::Tid(tid.clone()))? {
                row.cid = row.cid.or_else(|| cid.clone());
                row.plate_type = row.plate_type.or(*plate_type);
                if !row.manual && row.plate.is_none() {
                    if let Some(p) = plate {
                        if free_for(conn, &Key::Plate(p.clone()), row.id)? {
                            row.plate = Some(p.clone());
                        }
                    }
                }
                return update(row, report);
            }
            let by_plate = match plate {
                Some(p) => find(conn, &Key::Plate(p.clone()))?,
                None => None,
            };
            match by_plate {
                Some(mut row) if row.tid.is_none() => {
                    row.tid = Some(tid.clone());
                    row.cid = row.cid.or_else(|| cid.clone());
                    row.plate_type = row.plate_type.or(*plate_type);
                    update(row, report)
                }
                // The plate belongs to another tag's vehicle: this tag gets its own row, without
                // the plate (the conflict shows as plate_mismatch when it is read).
                Some(_) => insert(
                    Vehicle {
                        tid: Some(tid.clone()),
                        cid: cid.clone(),
                        plate_type: *plate_type,
                        ..blank(now)
                    },
                    report,
                ),
                None => insert(
                    Vehicle {
                        tid: Some(tid.clone()),
                        cid: cid.clone(),
                        plate: plate.clone(),
                        plate_type: *plate_type,
                        ..blank(now)
                    },
                    report,
                ),
            }
        }
        Fact::Jt808Register {
            phone,
            plate,
            plate_color,
            vin,
        } => {
            if let Some(mut row) = find(conn, &Key::Phone(phone.clone()))? {
                if !row.manual {
                    if let Some(p) = plate {
                        if free_for(conn, &Key::Plate(p.clone()), row.id)? {
                            row.plate = Some(p.clone());
                            row.plate_color = Some(*plate_color);
                        }
                    }
                    if let Some(v) = vin {
                        if free_for(conn, &Key::Vin(v.clone()), row.id)? {
                            row.vin = Some(v.clone());
                        }
                    }
                }
                return update(row, report);
            }
            let existing = match (plate, vin) {
                (Some(p), _) => find(conn, &Key::Plate(p.clone()))?,
                (None, Some(v)) => find(conn, &Key::Vin(v.clone()))?,
                (None, None) => None,
            };
            match existing {
                Some(mut row) if row.phone.is_none() => {
                    row.phone = Some(phone.clone());
                    if plate.is_some() {
                        row.plate_color = row.plate_color.or(Some(*plate_color));
                    }
                    update(row, report)
                }
                Some(_) => insert(
                    Vehicle {
                        phone: Some(phone.clone()),
                        ..blank(now)
                    },
                    report,
                ),
                None => insert(
                    Vehicle {
                        phone: Some(phone.clone()),
                        plate: plate.clone(),
                        plate_color: plate.as_ref().map(|_| *plate_color),
                        vin: vin.clone(),
                        ..blank(now)
                    },
                    report,
                ),
            }
        }
        Fact::Seen(key) => match find(conn, key)? {
            Some(row) => {
                conn.prepare_cached("UPDATE registry SET last_seen_ms = ?2 WHERE id = ?1")?
                    .execute(params![row.id, now])?;
                report.updated += 1;
                Ok(())
            }
            None => {
                let mut row = blank(now);
                match key {
                    Key::Vin(v) => row.vin = Some(v.clone()),
                    Key::Phone(p) => row.phone = Some(p.clone()),
                    Key::Tid(t) => row.tid = Some(t.clone()),
                    Key::Plate(p) => row.plate = Some(p.clone()),
                }
                insert(row, report)
            }
        },
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Columns a registry CSV may have; the last ones are written by exports and ignored on import.
const CSV_COLUMNS: &[&str] = &[
    "plate",
    "plate_color",
    "vin",
    "phone",
    "tid",
    "cid",
    "plate_type",
    "manual",
    "last_seen",
];

impl Registry {
    /// Opens the registry on `store`, bounded to `max_entries` rows.
    pub async fn open(store: Store, max_entries: usize, metrics: Arc<Metrics>) -> Result<Arc<Registry>, RegistryError> {
        let count: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM registry", [], |r| r.get(0))?))
            .await?;
        metrics.fusion.registry_entries.store(count, Relaxed);
        Ok(Arc::new(Registry {
            store,
            max_entries: max_entries.max(1),
            metrics,
        }))
    }

    /// The bound of the registry (`fusion.registry_max_entries`).
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Rows in the registry now.
    pub fn len(&self) -> usize {
        self.metrics.fusion.registry_entries.load(Relaxed).max(0) as usize
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn room(&self) -> (usize, Arc<Metrics>) {
        (self.max_entries, self.metrics.clone())
    }

    /// Creates or updates vehicles by plate (manual entries). Each vehicle stands alone: one that
    /// is invalid or conflicts with another manual entry is reported in `errors` (with its index)
    /// and the others are stored. Automatic entries holding one of its identifiers are merged
    /// into it.
    pub async fn upsert(&self, vehicles: Vec<VehicleInput>) -> Result<UpsertReport, RegistryError> {
        if vehicles.len() > MAX_UPSERT {
            return Err(RegistryError::Invalid(format!(
                "{} vehicles in one call; at most {MAX_UPSERT}",
                vehicles.len()
            )));
        }
        let mut report = UpsertReport::default();
        let mut valid = Vec::with_capacity(vehicles.len());
        for (i, v) in vehicles.iter().enumerate() {
            match v.validate() {
                Ok(input) => valid.push((i as u64, input)),
                Err(e) => report.errors.push(ItemError {
                    index: i as u64,
                    plate: Some(v.plate.clone()),
                    error: e.to_string(),
                }),
            }
        }
        let (max_entries, metrics) = self.room();
        let stored = self
            .store
            .write(move |ctx| {
                let room = Room {
                    max_entries,
                    metrics: &metrics,
                };
                let mut stored = UpsertReport::default();
                upsert_all(ctx.conn(), &valid, now_ms(), &room, &mut stored)?;
                Ok(stored)
            })
            .await?;
        report.created = stored.created;
        report.updated = stored.updated;
        report.errors.extend(stored.errors);
        report.errors.sort_by_key(|e| e.index);
        Ok(report)
    }

    /// Deletes vehicles by plate (manual or automatic).
    pub async fn delete(&self, plates: Vec<String>) -> Result<DeleteReport, RegistryError> {
        if plates.len() > MAX_DELETE {
            return Err(RegistryError::Invalid(format!(
                "{} plates in one call; at most {MAX_DELETE}",
                plates.len()
            )));
        }
        let mut report = DeleteReport::default();
        let mut valid = BTreeSet::new();
        for (i, p) in plates.iter().enumerate() {
            match normalize_plate(p) {
                Ok(p) => {
                    valid.insert(p);
                }
                Err(e) => report.errors.push(ItemError {
                    index: i as u64,
                    plate: Some(p.clone()),
                    error: e.to_string(),
                }),
            }
        }
        let metrics = self.metrics.clone();
        let (deleted, not_found) = self
            .store
            .write(move |ctx| {
                let mut stmt = ctx.conn().prepare_cached("DELETE FROM registry WHERE plate = ?1")?;
                let mut deleted = 0;
                let mut not_found = Vec::new();
                for plate in valid {
                    match stmt.execute([&plate])? {
                        0 => not_found.push(plate),
                        n => deleted += n,
                    }
                }
                metrics.fusion.registry_entries.fetch_sub(deleted as i64, Relaxed);
                Ok((deleted, not_found))
            })
            .await?;
        report.deleted = deleted;
        report.not_found = not_found;
        Ok(report)
    }

    /// Rows matching `query`, most recently seen first.
    pub async fn list(&self, query: ListQuery) -> Result<ListPage, RegistryError> {
        let limit = query.limit.unwrap_or(100).min(MAX_LIST);
        let offset = query.offset.unwrap_or(0).min(i64::MAX as usize);
        let pattern = query
            .query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(|q| like_pattern(&q.chars().filter(|c| !matches!(c, '·' | ' ')).collect::<String>()));
        if pattern.as_ref().is_some_and(|p| p.len() > 256) {
            return Err(RegistryError::Invalid("query: at most 254 bytes".into()));
        }
        let manual = query.manual;
        let page = self
            .store
            .read(move |c| {
                let filter = "WHERE (?1 IS NULL OR plate LIKE ?1 ESCAPE '\\' OR vin LIKE ?1 ESCAPE '\\'
                     OR phone LIKE ?1 ESCAPE '\\' OR tid LIKE ?1 ESCAPE '\\' OR cid LIKE ?1 ESCAPE '\\')
                     AND (?2 IS NULL OR manual = ?2)";
                let total: i64 = c.query_row(
                    &format!("SELECT COUNT(*) FROM registry {filter}"),
                    params![pattern, manual],
                    |r| r.get(0),
                )?;
                let mut stmt = c.prepare(&format!(
                    "{SELECT} {filter} ORDER BY last_seen_ms DESC, id DESC LIMIT ?3 OFFSET ?4"
                ))?;
                let vehicles = stmt
                    .query_map(params![pattern, manual, limit as i64, offset as i64], vehicle)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ListPage {
                    total: total.max(0) as usize,
                    vehicles,
                })
            })
            .await?;
        Ok(page)
    }

    /// The vehicle with this plate.
    pub async fn get(&self, plate: &str) -> Result<Option<Vehicle>, RegistryError> {
        let plate = normalize_plate(plate).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        self.lookup(Key::Plate(plate)).await
    }

    /// The vehicle `key` names (one indexed query).
    pub async fn lookup(&self, key: Key) -> Result<Option<Vehicle>, RegistryError> {
        Ok(self.store.read(move |c| Ok(find(c, &key)?)).await?)
    }

    /// Several lookups on one read connection, in order.
    pub async fn lookup_many(&self, keys: Vec<Key>) -> Result<Vec<Option<Vehicle>>, RegistryError> {
        Ok(self
            .store
            .read(move |c| Ok(keys.iter().map(|k| find(c, k)).collect::<Result<Vec<_>, _>>()?))
            .await?)
    }

    /// A handle for write jobs that outlive `&self` (fusion's passage jobs).
    pub fn facts_writer(&self) -> FactsWriter {
        FactsWriter {
            max_entries: self.max_entries,
            metrics: self.metrics.clone(),
        }
    }

    /// Imports a CSV file (header line first; columns by name: `plate` required, `plate_color`,
    /// `vin`, `phone`, `tid` optional, and the export's read-only columns ignored). Every line
    /// stands alone: bad ones are reported with their line number. At most
    /// `fusion.registry_max_entries` rows are read; the file is bounded to [`MAX_IMPORT_BYTES`].
    /// Rows are written a few hundred per transaction, so the writer is never held long.
    pub async fn import_csv(&self, data: Vec<u8>) -> Result<ImportReport, RegistryError> {
        if data.len() > MAX_IMPORT_BYTES {
            return Err(RegistryError::Invalid(format!(
                "the file has {} bytes; at most {MAX_IMPORT_BYTES}",
                data.len()
            )));
        }
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(data.as_slice());
        let header = reader
            .headers()
            .map_err(|e| RegistryError::Invalid(format!("line 1: {e}")))?
            .clone();
        let mut column = std::collections::HashMap::new();
        for (i, name) in header.iter().enumerate() {
            let name = name.trim_start_matches('\u{feff}').to_ascii_lowercase();
            if !CSV_COLUMNS.contains(&name.as_str()) {
                return Err(RegistryError::Invalid(format!(
                    "line 1: unknown column `{name}` (known: {})",
                    CSV_COLUMNS.join(", ")
                )));
            }
            column.insert(name, i);
        }
        let Some(&plate_at) = column.get("plate") else {
            return Err(RegistryError::Invalid(
                "line 1: the header has no `plate` column".into(),
            ));
        };
        let field = |record: &csv::StringRecord, name: &str| -> Option<String> {
            column.get(name).and_then(|&i| record.get(i)).map(str::to_string)
        };
        let mut report = ImportReport::default();
        let mut errors = ErrorList::default();
        let mut chunk: Vec<(u64, ValidInput)> = Vec::with_capacity(IMPORT_CHUNK);
        let mut record = csv::StringRecord::new();
        loop {
            let line = reader.position().line();
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    report.rows += 1;
                    errors.push(ItemError {
                        index: e.position().map_or(line, |p| p.line()),
                        plate: None,
                        error: e.to_string(),
                    });
                    if report.rows >= self.max_entries {
                        report.truncated = true;
                        break;
                    }
                    continue;
                }
            }
            if record.iter().all(str::is_empty) {
                continue;
            }
            if report.rows >= self.max_entries {
                report.truncated = true;
                break;
            }
            report.rows += 1;
            let line = record.position().map_or(line, |p| p.line());
            let plate_color = match field(&record, "plate_color").filter(|c| !c.is_empty()) {
                None => None,
                Some(c) => match c.parse::<u8>() {
                    Ok(c) => Some(c),
                    Err(_) => {
                        errors.push(ItemError {
                            index: line,
                            plate: record.get(plate_at).map(str::to_string),
                            error: format!("plate_color: `{c}` is not 0 to 255"),
                        });
                        continue;
                    }
                },
            };
            // Empty cells keep what the registry holds (a CSV cannot tell "empty" from "absent").
            let text = |name: &str| field(&record, name).filter(|v| !v.is_empty());
            let input = VehicleInput {
                plate: record.get(plate_at).unwrap_or("").to_string(),
                plate_color,
                vin: text("vin"),
                phone: text("phone"),
                tid: text("tid"),
            };
            match input.validate() {
                Ok(valid) => chunk.push((line, valid)),
                Err(e) => errors.push(ItemError {
                    index: line,
                    plate: Some(input.plate.clone()),
                    error: e.to_string(),
                }),
            }
            if chunk.len() >= IMPORT_CHUNK {
                self.import_chunk(std::mem::take(&mut chunk), &mut report, &mut errors)
                    .await?;
            }
        }
        if !chunk.is_empty() {
            self.import_chunk(chunk, &mut report, &mut errors).await?;
        }
        errors.trim();
        report.errors_total = errors.total;
        report.errors = errors.kept;
        Ok(report)
    }

    async fn import_chunk(
        &self,
        chunk: Vec<(u64, ValidInput)>,
        report: &mut ImportReport,
        errors: &mut ErrorList,
    ) -> Result<(), RegistryError> {
        let (max_entries, metrics) = self.room();
        let stored = self
            .store
            .write(move |ctx| {
                let room = Room {
                    max_entries,
                    metrics: &metrics,
                };
                let mut stored = UpsertReport::default();
                upsert_all(ctx.conn(), &chunk, now_ms(), &room, &mut stored)?;
                Ok(stored)
            })
            .await?;
        report.created += stored.created;
        report.updated += stored.updated;
        for e in stored.errors {
            errors.push(e);
        }
        Ok(())
    }

    /// The whole registry as CSV (the import's columns plus the read-only ones), by plate.
    pub async fn export_csv(&self) -> Result<Vec<u8>, RegistryError> {
        let rows = self
            .store
            .read(|c| {
                let mut stmt = c.prepare(&format!("{SELECT} ORDER BY plate IS NULL, plate, id"))?;
                let rows = stmt.query_map([], vehicle)?.collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        let mut out = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 64 + 64));
        let write = |out: &mut csv::Writer<Vec<u8>>| -> csv::Result<()> {
            out.write_record(CSV_COLUMNS)?;
            for v in &rows {
                out.write_record([
                    v.plate.clone().unwrap_or_default(),
                    v.plate_color.map(|c| c.to_string()).unwrap_or_default(),
                    v.vin.clone().unwrap_or_default(),
                    v.phone.clone().unwrap_or_default(),
                    v.tid.clone().unwrap_or_default(),
                    v.cid.clone().unwrap_or_default(),
                    v.plate_type.map(|t| t.to_string()).unwrap_or_default(),
                    v.manual.to_string(),
                    v.last_seen.clone(),
                ])?;
            }
            out.flush()?;
            Ok(())
        };
        write(&mut out).map_err(|e| RegistryError::Invalid(format!("writing the CSV: {e}")))?;
        out.into_inner()
            .map_err(|e| RegistryError::Invalid(format!("writing the CSV: {e}")))
    }
}

/// Applies automatic facts from a write job (see [`Registry::facts_writer`]).
#[derive(Clone)]
pub struct FactsWriter {
    max_entries: usize,
    metrics: Arc<Metrics>,
}

impl FactsWriter {
    /// Applies `facts` on the job's connection.
    pub fn apply(&self, ctx: &mut WriteCtx<'_>, facts: &[Fact], now: i64) -> Result<FactReport, StoreError> {
        apply_facts_on(ctx.conn(), facts, now, self.max_entries, &self.metrics)
    }
}

fn apply_facts_on(
    conn: &Connection,
    facts: &[Fact],
    now: i64,
    max_entries: usize,
    metrics: &Metrics,
) -> Result<FactReport, StoreError> {
    let room = Room { max_entries, metrics };
    let mut report = FactReport::default();
    for fact in facts {
        apply_fact(conn, fact, now, &room, &mut report)?;
    }
    Ok(report)
}

fn rejected(e: RegistryError) -> Outcome {
    Outcome::Rejected(e.to_string())
}

/// Registers `registry.upsert`, `registry.delete` and `registry.list` (CONTRACT 4) on the edge
/// command table: each parses its command and calls the one [`Registry`] method.
pub fn register_actions(registry: Arc<Registry>, actions: &EdgeActions) {
    let r = registry.clone();
    actions.register("registry.upsert", move |command: Value| {
        let r = r.clone();
        async move {
            let Some(items) = command.get("vehicles").and_then(Value::as_array) else {
                return Outcome::Rejected(
                    "`vehicles` must be an array of {plate, plate_color?, vin?, phone?, tid?}".into(),
                );
            };
            if items.len() > MAX_UPSERT {
                return Outcome::Rejected(format!("{} vehicles; at most {MAX_UPSERT} per command", items.len()));
            }
            let mut inputs = Vec::with_capacity(items.len());
            let mut unreadable = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match VehicleInput::deserialize(item) {
                    Ok(v) => inputs.push((i, v)),
                    Err(e) => unreadable.push(ItemError {
                        index: i as u64,
                        plate: item.get("plate").and_then(Value::as_str).map(str::to_string),
                        error: e.to_string(),
                    }),
                }
            }
            let positions: Vec<usize> = inputs.iter().map(|(i, _)| *i).collect();
            match r.upsert(inputs.into_iter().map(|(_, v)| v).collect()).await {
                Ok(mut report) => {
                    for e in &mut report.errors {
                        e.index = positions.get(e.index as usize).copied().unwrap_or(0) as u64;
                    }
                    report.errors.extend(unreadable);
                    report.errors.sort_by_key(|e| e.index);
                    Outcome::Answer(json!(report))
                }
                Err(e) => rejected(e),
            }
        }
    });
    let r = registry.clone();
    actions.register("registry.delete", move |command: Value| {
        let r = r.clone();
        async move {
            let Some(plates) = command.get("plates").and_then(Value::as_array).and_then(|p| {
                p.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            }) else {
                return Outcome::Rejected("`plates` must be an array of plate strings".into());
            };
            match r.delete(plates).await {
                Ok(report) => Outcome::Answer(json!(report)),
                Err(e) => rejected(e),
            }
        }
    });
    actions.register("registry.list", move |command: Value| {
        let r = registry.clone();
        async move {
            let query = ListQuery {
                query: command.get("query").and_then(Value::as_str).map(str::to_string),
                manual: command.get("manual").and_then(Value::as_bool),
                limit: command.get("limit").and_then(Value::as_u64).map(|l| l as usize),
                offset: command.get("offset").and_then(Value::as_u64).map(|o| o as usize),
            };
            if command.get("limit").is_some_and(|l| !l.is_u64()) {
                return Outcome::Rejected("`limit` must be a positive integer".into());
            }
            match r.list(query).await {
                Ok(page) => Outcome::Answer(json!({
                    "total": page.total,
                    "max_entries": r.max_entries(),
                    "vehicles": page.vehicles,
                })),
                Err(e) => rejected(e),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::EdgeInfo;
    use crate::store::StoreOptions;

    async fn open(dir: &std::path::Path, max_entries: usize) -> (Store, Arc<Registry>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let (store, _) = Store::open(
            StoreOptions {
                path: dir.join("edge.db"),
                max_bytes: 1 << 26,
                edge_id: "cab".into(),
            },
            metrics.clone(),
        )
        .expect("store");
        let registry = Registry::open(store.clone(), max_entries, metrics.clone())
            .await
            .expect("registry");
        (store, registry, metrics)
    }

    fn input(plate: &str) -> VehicleInput {
        VehicleInput {
            plate: plate.into(),
            ..VehicleInput::default()
        }
    }

    async fn facts(store: &Store, registry: &Registry, facts: Vec<Fact>, now: i64) -> FactReport {
        let writer = registry.facts_writer();
        store
            .write(move |ctx| writer.apply(ctx, &facts, now))
            .await
            .expect("facts")
    }

    fn tag(tid: &str, plate: Option<&str>) -> Fact {
        Fact::Tag {
            tid: tid.into(),
            cid: Some("0200004008".into()),
            plate: plate.map(str::to_string),
            plate_type: Some(2),
        }
    }

    #[tokio::test]
    async fn upsert_creates_and_updates_by_plate_keeping_absent_fields_and_clearing_empty_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, _) = open(dir.path(), 100).await;
        let report = registry
            .upsert(vec![VehicleInput {
                plate: "京A·12345".into(),
                plate_color: Some(1),
                vin: Some("lsim0000000000001".into()),
                phone: Some("013900000001".into()),
                tid: Some("E2801234".into()),
            }])
            .await
            .expect("upsert");
        assert_eq!((report.created, report.updated), (1, 0));
        let report = registry
            .upsert(vec![VehicleInput {
                phone: Some(String::new()),
                ..input("京A12345")
            }])
            .await
            .expect("upsert");
        assert_eq!((report.created, report.updated), (0, 1));
        let v = registry.get("京A12345").await.expect("get").expect("present");
        assert_eq!(v.vin.as_deref(), Some("LSIM0000000000001"));
        assert_eq!(v.tid.as_deref(), Some("e2801234"));
        assert_eq!(v.phone, None, "an empty string clears the field");
        assert_eq!(v.plate_color, Some(1));
        assert!(v.manual);
        for key in [
            Key::Tid("e2801234".into()),
            Key::Vin("LSIM0000000000001".into()),
            Key::Plate("京A12345".into()),
        ] {
            assert_eq!(registry.lookup(key).await.expect("lookup").map(|v| v.id), Some(v.id));
        }
        assert_eq!(registry.len(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn a_bad_or_conflicting_vehicle_is_reported_by_index_and_the_others_are_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, _) = open(dir.path(), 100).await;
        registry
            .upsert(vec![VehicleInput {
                tid: Some("aa01".into()),
                ..input("沪A00001")
            }])
            .await
            .expect("upsert");
        let report = registry
            .upsert(vec![
                input("沪A00002"),
                input("x"),
                VehicleInput {
                    tid: Some("AA01".into()),
                    ..input("沪A00003")
                },
                VehicleInput {
                    vin: Some("not a vin!".into()),
                    ..input("沪A00004")
                },
            ])
            .await
            .expect("upsert");
        assert_eq!(report.created, 1);
        let indexes: Vec<u64> = report.errors.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [1, 2, 3], "{report:?}");
        assert!(
            report.errors[1].error.contains("already registered to plate 沪A00001"),
            "{report:?}"
        );
        assert!(report.errors[2].error.starts_with("vin:"), "{report:?}");
        assert_eq!(registry.len(), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn automatic_facts_of_one_vehicle_meet_in_one_row_found_by_each_identifier() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, _) = open(dir.path(), 100).await;
        // The tag is read first, then the vehicle's 808 terminal registers with the same plate.
        facts(&store, &registry, vec![tag("e2800001", Some("京A12345"))], 1_000).await;
        facts(
            &store,
            &registry,
            vec![Fact::Jt808Register {
                phone: "013900000001".into(),
                plate: Some("京A12345".into()),
                plate_color: 2,
                vin: None,
            }],
            2_000,
        )
        .await;
        // A 32960 vehicle only gives its VIN: a row of its own.
        facts(
            &store,
            &registry,
            vec![Fact::Seen(Key::Vin("LSIM0000000000009".into()))],
            3_000,
        )
        .await;
        assert_eq!(registry.len(), 2);
        let by_tid = registry
            .lookup(Key::Tid("e2800001".into()))
            .await
            .expect("lookup")
            .expect("row");
        let by_phone = registry
            .lookup(Key::Phone("013900000001".into()))
            .await
            .expect("lookup")
            .expect("row");
        assert_eq!(by_tid.id, by_phone.id);
        assert_eq!(by_tid.plate.as_deref(), Some("京A12345"));
        assert_eq!(by_tid.plate_color, Some(2));
        assert_eq!(by_tid.cid.as_deref(), Some("0200004008"));
        assert!(!by_tid.manual);
        assert_eq!(by_tid.last_seen_ms, 2_000);
        // A second tag claiming the same plate gets its own row without the plate.
        facts(&store, &registry, vec![tag("e2800002", Some("京A12345"))], 4_000).await;
        let other = registry
            .lookup(Key::Tid("e2800002".into()))
            .await
            .expect("lookup")
            .expect("row");
        assert_eq!(other.plate, None);
        // A manual entry takes the automatic rows' identifiers over.
        let report = registry
            .upsert(vec![VehicleInput {
                vin: Some("LSIM0000000000009".into()),
                ..input("京A12345")
            }])
            .await
            .expect("upsert");
        assert_eq!(report.updated, 1, "{report:?}");
        let merged = registry.get("京A12345").await.expect("get").expect("row");
        assert_eq!(merged.vin.as_deref(), Some("LSIM0000000000009"));
        assert_eq!(merged.tid.as_deref(), Some("e2800001"));
        assert_eq!(merged.phone.as_deref(), Some("013900000001"));
        assert!(merged.manual);
        assert_eq!(registry.len(), 2, "the VIN-only row was absorbed");
        store.close().await;
    }

    #[tokio::test]
    async fn a_full_registry_evicts_the_least_recently_seen_automatic_row_and_never_a_manual_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, metrics) = open(dir.path(), 3).await;
        registry
            .upsert(vec![input("苏A00001"), input("苏A00002")])
            .await
            .expect("upsert");
        facts(&store, &registry, vec![tag("0001", None)], 1_000).await;
        facts(&store, &registry, vec![tag("0002", None)], 2_000).await;
        assert_eq!(registry.len(), 3);
        assert!(registry
            .lookup(Key::Tid("0001".into()))
            .await
            .expect("lookup")
            .is_none());
        assert!(registry
            .lookup(Key::Tid("0002".into()))
            .await
            .expect("lookup")
            .is_some());
        assert_eq!(metrics.fusion.registry_evicted_total.load(Relaxed), 1);
        // Manual rows fill the rest; then automatic facts are dropped and counted.
        registry.upsert(vec![input("苏A00003")]).await.expect("upsert");
        let report = facts(&store, &registry, vec![tag("0003", None)], 3_000).await;
        assert_eq!(report.dropped, 1);
        assert_eq!(metrics.fusion.registry_auto_dropped_total.load(Relaxed), 1);
        let refused = registry.upsert(vec![input("苏A00004")]).await.expect("upsert");
        assert_eq!(refused.created, 0);
        assert!(refused.errors[0].error.contains("registry is full"), "{refused:?}");
        assert_eq!(registry.list(ListQuery::default()).await.expect("list").total, 3);
        store.close().await;
        // The count survives a restart.
        let (store, registry, _) = open(dir.path(), 3).await;
        assert_eq!(registry.len(), 3);
        store.close().await;
    }

    #[tokio::test]
    async fn a_csv_import_reports_bad_lines_by_number_and_stores_the_good_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, _) = open(dir.path(), 100).await;
        let mut csv = b"plate,plate_color,vin,phone,tid\n\
                   \xe4\xba\xacA00001,1,LSIM0000000000001,013900000001,e2800001\n\
                   not a plate!,1,,,\n\
                   \xe4\xba\xacA00002,blue,,,\n\
                   \xff\xfe,1\n\
                   \xe4\xba\xacA00004\n"
            .to_vec();
        // An unterminated quote runs to the end of the file, as CSV reads it.
        csv.extend_from_slice("京A00005,\"2\n".as_bytes());
        let report = registry.import_csv(csv).await.expect("import");
        assert_eq!(report.created, 3, "{report:?}");
        let lines: Vec<u64> = report.errors.iter().map(|e| e.index).collect();
        assert_eq!(lines, [3, 4, 5], "{report:?}");
        assert_eq!(report.errors_total, 3);
        assert!(report.errors[2].error.contains("invalid utf-8"), "{report:?}");
        assert!(report.errors[1].error.contains("plate_color"), "{report:?}");
        assert!(!report.truncated);
        let unknown = registry
            .import_csv(b"plate,colour\nA1\n".to_vec())
            .await
            .expect_err("unknown column");
        assert!(unknown.to_string().contains("unknown column `colour`"), "{unknown}");
        let headless = registry
            .import_csv(b"\xff\xfe\n".to_vec())
            .await
            .expect_err("no header");
        assert!(headless.to_string().starts_with("line 1"), "{headless}");
        store.close().await;
    }

    #[tokio::test]
    async fn a_million_row_import_stops_at_the_registry_bound_in_bounded_memory() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, _) = open(dir.path(), 2_000).await;
        let mut csv = String::from("plate,tid\n");
        for i in 0..1_000_000u32 {
            if i % 3 == 0 {
                csv.push_str("bad plate!,zz\n");
            } else {
                csv.push_str(&format!("京A{:06},{:08x}\n", i, i));
            }
        }
        let report = registry.import_csv(csv.into_bytes()).await.expect("import");
        assert!(report.truncated, "{:?}", report.rows);
        assert_eq!(report.rows, 2_000);
        assert_eq!(report.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(report.errors_total + report.created, 2_000);
        assert_eq!(registry.len(), report.created);
        store.close().await;
    }

    #[tokio::test]
    async fn an_export_imports_back_into_an_empty_registry_unchanged() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, _) = open(dir.path(), 100).await;
        registry
            .upsert(vec![
                VehicleInput {
                    plate_color: Some(2),
                    phone: Some("013900000001".into()),
                    ..input("鲁B12345")
                },
                VehicleInput {
                    tid: Some("e2800009".into()),
                    vin: Some("LSIM0000000000001".into()),
                    ..input("鲁B54321")
                },
            ])
            .await
            .expect("upsert");
        let exported = registry.export_csv().await.expect("export");
        store.close().await;
        let other = tempfile::tempdir().expect("dir");
        let (store, copy, _) = open(other.path(), 100).await;
        let report = copy.import_csv(exported.clone()).await.expect("import");
        assert_eq!((report.created, report.errors_total), (2, 0), "{report:?}");
        let strip = |csv: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(csv)
                .lines()
                .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_string())
                .collect()
        };
        assert_eq!(strip(&copy.export_csv().await.expect("export")), strip(&exported));
        store.close().await;
    }

    #[tokio::test]
    async fn list_finds_text_in_any_identifier_and_pages() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, _) = open(dir.path(), 100).await;
        let vehicles = (0..30)
            .map(|i| VehicleInput {
                phone: Some(format!("0139000000{i:02}")),
                ..input(&format!("浙C{i:05}"))
            })
            .collect();
        registry.upsert(vehicles).await.expect("upsert");
        facts(&store, &registry, vec![tag("e2809999", None)], now_ms()).await;
        let page = registry
            .list(ListQuery {
                query: Some("013900000".into()),
                limit: Some(7),
                offset: Some(7),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!((page.total, page.vehicles.len()), (30, 7));
        let one = registry
            .list(ListQuery {
                query: Some("c00017".into()),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(one.vehicles[0].plate.as_deref(), Some("浙C00017"));
        let automatic = registry
            .list(ListQuery {
                manual: Some(false),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(automatic.total, 1);
        let wildcard = registry
            .list(ListQuery {
                query: Some("%".into()),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(wildcard.total, 0, "LIKE wildcards are searched for literally");
        store.close().await;
    }

    #[tokio::test]
    async fn the_edge_actions_parse_their_commands_and_answer_from_the_service() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, registry, metrics) = open(dir.path(), 100).await;
        let actions = EdgeActions::default();
        register_actions(registry.clone(), &actions);
        let edge = EdgeInfo {
            edge_id: "cab".into(),
            version: "t".into(),
            started_ms: 0,
        };
        let run = |command: Value| actions.execute(&edge, &metrics, command);
        let Outcome::Answer(up) = run(json!({"action": "registry.upsert", "vehicles": [
            {"plate": "京A12345", "plate_color": 1, "tid": "e2801234"},
            {"plate": "京A12346", "colour": "red"},
            {"plate": "??"}
        ]}))
        .await
        else {
            panic!("upsert not answered")
        };
        assert_eq!(up["created"], 1);
        let indexes: Vec<u64> = up["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["index"].as_u64())
            .collect();
        assert_eq!(indexes, [1, 2], "{up}");
        let Outcome::Answer(list) = run(json!({"action": "registry.list", "query": "12345", "limit": 10})).await else {
            panic!("list not answered")
        };
        assert_eq!(list["total"], 1);
        assert_eq!(list["vehicles"][0]["tid"], "e2801234");
        let Outcome::Answer(del) = run(json!({"action": "registry.delete", "plates": ["京A12345", "京A99999"]})).await
        else {
            panic!("delete not answered")
        };
        assert_eq!(del["deleted"], 1);
        assert_eq!(del["not_found"], json!(["京A99999"]));
        for bad in [
            json!({"action": "registry.upsert"}),
            json!({"action": "registry.upsert", "vehicles": {"plate": "x"}}),
            json!({"action": "registry.delete", "plates": [1]}),
            json!({"action": "registry.list", "limit": -1}),
        ] {
            assert!(matches!(run(bad.clone()).await, Outcome::Rejected(_)), "{bad}");
        }
        store.close().await;
    }
}
