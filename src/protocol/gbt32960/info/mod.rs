//! Real-time / re-issued information (commands 0x02/0x03): the collection time followed by
//! `[type][body]` items, for both editions, and their EMQX JSON.
//!
//! Owns: the item enum, the walk over a report (user-defined 0x80–0xFE blocks walked by their
//! WORD length, so known items after them are still decoded; the raw tail kept when an item's
//! length cannot be known), and the records both editions share (hydrogen system, alarm, probe
//! groups). Each edition's information-type table lives in its own file (`v2016`, `v2025`: facts
//! sheet §2.2 and §3), one row per type code with its name, layout, encoding and JSON.
//! Must not: scale values, remove offsets, or treat 0xFE/0xFF markers as numbers to check.

mod v2016;
mod v2025;

use bytes::BufMut;
use serde_json::{Map, Value};

use super::error::{BodyError, EncodeError};
use super::json::{base64, base64_into, hex_upper_u32_into};
use super::message::Signature;
use super::types::{Edition, Time};
use super::wire::{put_word_prefixed, wire_record, CountWidth, Listed, Reader, WireField};
use crate::protocol::json::JsonWriter;

pub use v2016::{
    CellVoltageHead, CellVoltageSubsystem, Engine2016, Extremes, FuelCell2016, FuelCellHead2016, Location2016,
    Motor2016, Vehicle2016,
};
pub use v2025::{
    Alarm2025, Engine2025, FlagLevel, FuelCell2025, FuelCellStack, FuelCellStackHead, FuelCellTail2025, Location2025,
    Motor2025, PackVoltageHead, PackVoltages, SuperCapacitor, SuperCapacitorExtremes, SuperCapacitorHead, Vehicle2025,
};

/// Declares an edition's information-type table: one row per type code, giving the
/// [`InfoItem`] variant and its payload type, the EMQX `"Type"` name, and how the payload is
/// read, written and shown in JSON. From the rows come the edition's `read` (code → item),
/// `identity` (item → code and name), `write` and `json_into`, so each (edition, code) pair is
/// written once.
macro_rules! info_types {
    ($(
        $code:literal => $variant:ident($ty:ty) as $name:literal {
            read: $read:expr,
            write: $write:expr,
            json: $json:expr,
            write_json: $write_json:expr $(,)?
        }
    ),* $(,)?) => {
        /// Reads the body of an item of type `code` (the type byte already read), or `None`
        /// when this edition defines no such type.
        pub(super) fn read(
            code: u8,
            r: &mut $crate::protocol::gbt32960::wire::Reader<'_>,
        ) -> Option<Result<InfoItem, $crate::protocol::gbt32960::error::BodyError>> {
            match code {
                $( $code => {
                    let read: fn(
                        &mut $crate::protocol::gbt32960::wire::Reader<'_>,
                    ) -> Result<$ty, $crate::protocol::gbt32960::error::BodyError> = $read;
                    Some(read(r).map(InfoItem::$variant))
                } )*
                _ => None,
            }
        }

        /// The type code and EMQX name of `item`, or `None` when it is not of this edition.
        pub(super) fn identity(item: &InfoItem) -> Option<(u8, &'static str)> {
            match item {
                $( InfoItem::$variant(_) => Some(($code, $name)), )*
                _ => None,
            }
        }

        /// Writes the body of `item` (without its type byte), or `None` when it is not of this
        /// edition.
        pub(super) fn write(
            item: &InfoItem,
            out: &mut Vec<u8>,
        ) -> Option<Result<(), $crate::protocol::gbt32960::error::EncodeError>> {
            match item {
                $( InfoItem::$variant(body) => {
                    let write: fn(&$ty, &mut Vec<u8>) -> Result<(), $crate::protocol::gbt32960::error::EncodeError> =
                        $write;
                    Some(write(body, out))
                } )*
                _ => None,
            }
        }

        /// Adds the JSON members of `item` (all but `"Type"`); false when it is not of this
        /// edition.
        pub(super) fn json_into(item: &InfoItem, map: &mut serde_json::Map<String, serde_json::Value>) -> bool {
            match item {
                $( InfoItem::$variant(body) => {
                    let json: fn(&$ty, &mut serde_json::Map<String, serde_json::Value>) = $json;
                    json(body, map);
                    true
                } )*
                _ => false,
            }
        }

        /// Writes the JSON members of `item` but `"Type"`, in key order; false when it is not
        /// of this edition.
        pub(super) fn write_json(item: &InfoItem, w: &mut $crate::protocol::json::JsonWriter<'_>) -> bool {
            match item {
                $( InfoItem::$variant(body) => {
                    let write_json: fn(&$ty, &mut $crate::protocol::json::JsonWriter<'_>) = $write_json;
                    write_json(body, w);
                    true
                } )*
                _ => false,
            }
        }
    };
}
use info_types;

wire_record! {
    /// Hydrogen-system fields shared by the 2016 fuel cell (after its probes) and 2025 0x03.
    pub struct HydrogenSystem {
        /// H₂ max temperature (2016 0.1 °C, 2025 1 °C; offset 40).
        max_temp: u16 => "H_MaxTemp",
        /// Probe code of the max temperature.
        max_temp_probe: u8 => "H_TempProbeCode",
        /// H₂ max concentration.
        max_concentration: u16 => "H_MaxConc",
        /// Sensor code of the max concentration.
        concentration_sensor: u8 => "H_ConcSensorCode",
        /// H₂ max pressure, 0.1 MPa.
        max_pressure: u16 => "H_MaxPress",
        /// Sensor code of the max pressure.
        pressure_sensor: u8 => "H_PressSensorCode",
        /// High-voltage DC/DC status: 1 working, 2 off.
        dc_dc_status: u8 => "DCStatus",
    }
}

/// Alarm data common to both editions (2016 type 0x07, 2025 type 0x06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// Highest alarm level (2016 0–3, 2025 0–4).
    pub max_level: u8,
    /// General alarm flag bits (table 18).
    pub general_flags: u32,
    /// RESS fault codes (N1).
    pub ress_faults: Listed<u32>,
    /// Drive-motor fault codes (N2).
    pub motor_faults: Listed<u32>,
    /// Engine fault codes (N3).
    pub engine_faults: Listed<u32>,
    /// Other fault codes (N4).
    pub other_faults: Listed<u32>,
}

/// Probe temperatures of one subsystem / pack (2016 0x09, 2025 0x08): number, WORD probe count,
/// one BYTE per probe (offset 40).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeGroup {
    /// Subsystem / pack number.
    pub no: u8,
    /// Probe temperatures.
    pub temps: Listed<u8>,
}

/// One information item of a real-time / re-issue report. Variants named `…2016`/`…2025`
/// belong to that edition only (their type codes are in the `v2016` / `v2025` tables); the
/// frame's start bytes decide which table applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoItem {
    /// Vehicle data, 2016.
    Vehicle2016(Vehicle2016),
    /// Vehicle data, 2025.
    Vehicle2025(Vehicle2025),
    /// Drive motors, 2016 (BYTE count).
    DriveMotors2016(Listed<Motor2016>),
    /// Drive motors, 2025 (BYTE count).
    DriveMotors2025(Listed<Motor2025>),
    /// Fuel cell, 2016.
    FuelCell2016(FuelCell2016),
    /// Fuel-cell engine and hydrogen system, 2025.
    FuelCell2025(FuelCell2025),
    /// Engine, 2016.
    Engine2016(Engine2016),
    /// Engine, 2025.
    Engine2025(Engine2025),
    /// Location, 2016.
    Location2016(Location2016),
    /// Location, 2025.
    Location2025(Location2025),
    /// Extreme values, 2016.
    Extremes2016(Extremes),
    /// Alarm, 2016.
    Alarm2016(Alarm),
    /// Alarm with per-flag levels, 2025.
    Alarm2025(Alarm2025),
    /// RESS cell voltages, 2016.
    CellVoltages2016(Listed<CellVoltageSubsystem>),
    /// RESS temperatures, 2016.
    ProbeTemps2016(Listed<ProbeGroup>),
    /// Minimum-parallel-unit voltages, 2025.
    PackVoltages2025(Listed<PackVoltages>),
    /// Battery temperatures, 2025.
    PackTemps2025(Listed<ProbeGroup>),
    /// Fuel-cell stacks, 2025.
    FuelCellStacks2025(Listed<FuelCellStack>),
    /// Supercapacitor, 2025.
    SuperCapacitor2025(SuperCapacitor),
    /// Supercapacitor extremes, 2025.
    SuperCapacitorExtremes2025(SuperCapacitorExtremes),
    /// Vehicle signature, 2025.
    Signature2025(Signature),
    /// A user-defined 0x80–0xFE block (`len W` + bytes), in either edition.
    UserDefined {
        /// Type code (0x80–0xFE).
        code: u8,
        /// The block's bytes.
        payload: Vec<u8>,
    },
    /// Everything from an item whose length cannot be known (a type not defined in this
    /// edition, or a user-defined block whose length overruns the data unit) to the end of the
    /// data unit, type byte included. Only valid as the last item.
    Unparsed(Vec<u8>),
}

/// User-defined information types (both editions).
const USER_DEFINED_CODES: std::ops::RangeInclusive<u8> = 0x80..=0xFE;

/// EMQX `"Type"` of custom data (user-defined blocks and unparsed tails).
const CUSTOM_DATA: &str = "CustomData";

impl HydrogenSystem {
    /// `DCStatus` (it sorts before the `H_*` keys, with other members in between in 2016).
    fn write_dc_status_json(&self, w: &mut JsonWriter<'_>) {
        w.member_u64("DCStatus", self.dc_dc_status);
    }

    /// The six `H_*` members, in key order.
    fn write_h_json(&self, w: &mut JsonWriter<'_>) {
        w.member_u64("H_ConcSensorCode", self.concentration_sensor);
        w.member_u64("H_MaxConc", self.max_concentration);
        w.member_u64("H_MaxPress", self.max_pressure);
        w.member_u64("H_MaxTemp", self.max_temp);
        w.member_u64("H_PressSensorCode", self.pressure_sensor);
        w.member_u64("H_TempProbeCode", self.max_temp_probe);
    }
}

/// A counted list as its two members, `count_key: count` and `list_key: [items]`, in key
/// order (the caller puts them where that pair sorts among the object's other keys).
fn write_listed<T>(
    w: &mut JsonWriter<'_>,
    list: &Listed<T>,
    width: CountWidth,
    count_key: &str,
    list_key: &str,
    item_json: impl FnMut(&T, &mut JsonWriter<'_>),
) {
    if count_key < list_key {
        w.key(count_key);
        list.write_json_count(w, width);
        w.key(list_key);
        list.write_json_items(w, item_json);
    } else {
        w.key(list_key);
        list.write_json_items(w, item_json);
        w.key(count_key);
        list.write_json_count(w, width);
    }
}

/// A JSON array element that is a number.
fn number_json<T: Copy + Into<u64>>(value: &T, w: &mut JsonWriter<'_>) {
    w.u64((*value).into());
}

/// A JSON array element that is a fixed record's object.
fn record_object<T>(write_members: fn(&T, &mut JsonWriter<'_>)) -> impl Fn(&T, &mut JsonWriter<'_>) {
    move |record, w| {
        w.begin_object();
        write_members(record, w);
        w.end_object();
    }
}

impl Alarm {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(Self {
            max_level: r.u8()?,
            general_flags: r.u32()?,
            ress_faults: Listed::read(r, CountWidth::Byte, u32::read)?,
            motor_faults: Listed::read(r, CountWidth::Byte, u32::read)?,
            engine_faults: Listed::read(r, CountWidth::Byte, u32::read)?,
            other_faults: Listed::read(r, CountWidth::Byte, u32::read)?,
        })
    }

    fn fault_lists(&self) -> [(&Listed<u32>, &'static str); 4] {
        [
            (&self.ress_faults, "FaultChargeableDevice"),
            (&self.motor_faults, "FaultDriveMotor"),
            (&self.engine_faults, "FaultEngine"),
            (&self.other_faults, "FaultOthers"),
        ]
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.put_u8(self.max_level);
        out.put_u32(self.general_flags);
        for (list, _) in self.fault_lists() {
            list.write(out, CountWidth::Byte, "fault code list", |code, out| {
                out.put_u32(*code);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Fault codes are uppercase hex, at least `digits` wide (EMQX: 2016 `~4.16.0B`, 2025
    /// `~8.16.0B`).
    fn json_into(&self, map: &mut Map<String, Value>, digits: usize) {
        map.insert("MaxAlarmLevel".to_owned(), Value::from(self.max_level));
        map.insert("GeneralAlarmFlag".to_owned(), Value::from(self.general_flags));
        for (list, prefix) in self.fault_lists() {
            list.json_into(
                map,
                CountWidth::Byte,
                &format!("{prefix}Num"),
                &format!("{prefix}List"),
                |code| Value::from(format!("{code:0digits$X}")),
            );
        }
    }
}

impl Alarm {
    /// The members but `"Type"`, in key order: the four fault lists (`…List` sorts before
    /// `…Num`) with the 2025 per-flag levels (`FaultGeneral…`) in their place between engine
    /// and others, then `GeneralAlarmFlag, MaxAlarmLevel`. Fault codes as in `json_into`.
    fn write_json_members(&self, w: &mut JsonWriter<'_>, digits: usize, flag_levels: Option<&Listed<FlagLevel>>) {
        let fault = |w: &mut JsonWriter<'_>, list: &Listed<u32>, list_key: &str, count_key: &str| {
            write_listed(w, list, CountWidth::Byte, count_key, list_key, |code, w| {
                w.str_with(|out| hex_upper_u32_into(out, *code, digits));
            });
        };
        fault(
            w,
            &self.ress_faults,
            "FaultChargeableDeviceList",
            "FaultChargeableDeviceNum",
        );
        fault(w, &self.motor_faults, "FaultDriveMotorList", "FaultDriveMotorNum");
        fault(w, &self.engine_faults, "FaultEngineList", "FaultEngineNum");
        if let Some(levels) = flag_levels {
            write_listed(
                w,
                levels,
                CountWidth::Byte,
                "FaultGeneralNum",
                "FaultGeneralList",
                record_object(FlagLevel::write_json_members),
            );
        }
        fault(w, &self.other_faults, "FaultOthersList", "FaultOthersNum");
        w.member_u64("GeneralAlarmFlag", self.general_flags);
        w.member_u64("MaxAlarmLevel", self.max_level);
    }
}

impl ProbeGroup {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(Self {
            no: r.u8()?,
            temps: Listed::read(r, CountWidth::Word, u8::read)?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.put_u8(self.no);
        self.temps.write(out, CountWidth::Word, "probe list", put_byte)
    }

    fn to_json(&self, no_key: &str) -> Value {
        let mut map = Map::new();
        map.insert(no_key.to_owned(), Value::from(self.no));
        self.temps
            .json_into(&mut map, CountWidth::Word, "ProbeNum", "ProbesTemp", |t| {
                Value::from(*t)
            });
        Value::Object(map)
    }

    /// A BYTE-counted list of probe groups (2016 0x09, 2025 0x08).
    fn read_list(r: &mut Reader<'_>) -> Result<Listed<Self>, BodyError> {
        Listed::read(r, CountWidth::Byte, Self::read)
    }

    fn write_list(list: &Listed<Self>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        list.write(out, CountWidth::Byte, "probe groups", Self::write)
    }

    /// `{<no_key>, ProbeNum, ProbesTemp[]}` (both number keys sort before `ProbeNum`).
    fn write_json(&self, w: &mut JsonWriter<'_>, no_key: &str) {
        w.begin_object();
        w.member_u64(no_key, self.no);
        write_listed(w, &self.temps, CountWidth::Word, "ProbeNum", "ProbesTemp", number_json);
        w.end_object();
    }

    /// [`ProbeGroup::list_json_into`] written directly.
    fn write_list_json(list: &Listed<Self>, w: &mut JsonWriter<'_>, no_key: &str) {
        write_listed(w, list, CountWidth::Byte, "Number", "SubSystems", |group, w| {
            group.write_json(w, no_key)
        });
    }

    /// `Number, SubSystems[{<no_key>, ProbeNum, ProbesTemp[]}]`.
    fn list_json_into(list: &Listed<Self>, map: &mut Map<String, Value>, no_key: &str) {
        list.json_into(map, CountWidth::Byte, "Number", "SubSystems", |g| g.to_json(no_key));
    }
}

fn put_byte(value: &u8, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.put_u8(*value);
    Ok(())
}

fn put_word(value: &u16, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.put_u16(*value);
    Ok(())
}

/// Writes a fixed record as a list element.
fn put_record<T>(write: fn(&T, &mut Vec<u8>)) -> impl Fn(&T, &mut Vec<u8>) -> Result<(), EncodeError> {
    move |record, out| {
        write(record, out);
        Ok(())
    }
}

/// JSON object of a fixed record as a list element.
fn record_json<T>(json_into: fn(&T, &mut Map<String, Value>)) -> impl Fn(&T) -> Value {
    move |record| {
        let mut map = Map::new();
        json_into(record, &mut map);
        Value::Object(map)
    }
}

impl InfoItem {
    /// The edition, type code and EMQX name of this item; `None` for the edition-neutral
    /// user-defined and unparsed items.
    fn identity(&self) -> Option<(Edition, u8, &'static str)> {
        v2016::identity(self)
            .map(|(code, name)| (Edition::V2016, code, name))
            .or_else(|| v2025::identity(self).map(|(code, name)| (Edition::V2025, code, name)))
    }

    /// The EMQX `"Type"` name of this item.
    pub fn type_name(&self) -> &'static str {
        self.identity().map_or(CUSTOM_DATA, |(_, _, name)| name)
    }

    /// Reads one item starting at its type byte.
    fn read(r: &mut Reader<'_>, edition: Edition) -> Result<InfoItem, BodyError> {
        let start = r.clone();
        let code = r.u8()?;
        let known = match edition {
            Edition::V2016 => v2016::read(code, r),
            Edition::V2025 => v2025::read(code, r),
        };
        if let Some(item) = known {
            return item;
        }
        if USER_DEFINED_CODES.contains(&code) {
            // Walk the block by its WORD length; if the length overruns the data unit, fall
            // through and keep the tail raw, as EMQX does for its `CustomData`.
            let mut block = r.clone();
            if let Ok(payload) = block.word_prefixed() {
                *r = block;
                return Ok(InfoItem::UserDefined { code, payload });
            }
        }
        *r = start;
        Ok(InfoItem::Unparsed(r.rest().to_vec()))
    }

    fn write(&self, out: &mut Vec<u8>, edition: Edition) -> Result<(), EncodeError> {
        match self {
            InfoItem::UserDefined { code, payload } => {
                out.put_u8(*code);
                return put_word_prefixed(out, "user-defined block", payload);
            }
            InfoItem::Unparsed(bytes) => {
                out.extend_from_slice(bytes);
                return Ok(());
            }
            _ => {}
        }
        let identity = match edition {
            Edition::V2016 => v2016::identity(self),
            Edition::V2025 => v2025::identity(self),
        };
        let Some((code, _)) = identity else {
            return Err(EncodeError::WrongEdition {
                what: self.type_name(),
                edition,
            });
        };
        out.put_u8(code);
        let written = match edition {
            Edition::V2016 => v2016::write(self, out),
            Edition::V2025 => v2025::write(self, out),
        };
        written.unwrap_or(Ok(()))
    }

    /// EMQX JSON of the item (an element of `Infos`).
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("Type".to_owned(), Value::from(self.type_name()));
        match self {
            // EMQX base64-encodes the custom bytes from the type byte on.
            InfoItem::UserDefined { code, payload } => {
                let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
                let mut bytes = vec![*code];
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(payload);
                map.insert("Data".to_owned(), Value::from(base64(&bytes)));
            }
            InfoItem::Unparsed(bytes) => {
                map.insert("Data".to_owned(), Value::from(base64(bytes)));
            }
            item => {
                let _ = v2016::json_into(item, &mut map) || v2025::json_into(item, &mut map);
            }
        }
        Value::Object(map)
    }
}

impl InfoItem {
    /// Writes the item's object (an element of `Infos`), members in key order.
    pub(crate) fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.begin_object();
        w.defer_member_str("Type", self.type_name());
        match self {
            // EMQX base64-encodes the custom bytes from the type byte on.
            InfoItem::UserDefined { code, payload } => {
                let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
                w.key("Data");
                w.str_with(|out| {
                    let mut bytes = Vec::with_capacity(payload.len() + 3);
                    bytes.push(*code);
                    bytes.extend_from_slice(&len.to_be_bytes());
                    bytes.extend_from_slice(payload);
                    base64_into(out, &bytes);
                });
            }
            InfoItem::Unparsed(bytes) => {
                w.key("Data");
                w.str_with(|out| base64_into(out, bytes));
            }
            item => {
                let _ = v2016::write_json(item, w) || v2025::write_json(item, w);
            }
        }
        w.end_object();
    }
}

/// Real-time (0x02) or re-issued (0x03) information: collection time and items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealTimeReport {
    /// Collection time.
    pub time: Time,
    /// Items in wire order.
    pub items: Vec<InfoItem>,
}

impl RealTimeReport {
    pub(crate) fn read(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        let time = Time::read(r)?;
        let mut items = Vec::new();
        while !r.is_empty() {
            items.push(InfoItem::read(r, edition)?);
        }
        Ok(Self { time, items })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>, edition: Edition) -> Result<(), EncodeError> {
        self.time.write(out);
        let last = self.items.len().saturating_sub(1);
        for (index, item) in self.items.iter().enumerate() {
            if matches!(item, InfoItem::Unparsed(_)) && index != last {
                return Err(EncodeError::UnparsedNotLast {
                    what: "real-time items",
                });
            }
            item.write(out, edition)?;
        }
        Ok(())
    }

    /// EMQX keys: `Time, Infos[]`.
    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("Time".to_owned(), self.time.to_json());
        map.insert(
            "Infos".to_owned(),
            Value::Array(self.items.iter().map(InfoItem::to_json).collect()),
        );
    }

    /// `Infos, Time` in key order.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.key("Infos");
        w.begin_array();
        for item in &self.items {
            item.write_json(w);
        }
        w.end_array();
        w.key("Time");
        self.time.write_json(w);
    }
}
