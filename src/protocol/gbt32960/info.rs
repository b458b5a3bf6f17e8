//! Real-time / re-issued information (commands 0x02/0x03): the collection time followed by
//! `[type][body]` items, for both editions, and their EMQX JSON.
//!
//! Owns: the information-type table (facts sheet §2.2 for 2016, §3 for 2025: which code means
//! what in which edition), every item layout, user-defined 0x80–0xFE blocks walked by their
//! WORD length (so known items after them are still decoded), and the raw tail kept when an
//! item's length cannot be known.
//! Must not: scale values, remove offsets, or treat 0xFE/0xFF markers as numbers to check.

use bytes::BufMut;
use serde_json::{Map, Value};

use super::error::{BodyError, EncodeError};
use super::json::base64;
use super::message::Signature;
use super::types::{Edition, Time};
use super::wire::{put_word_prefixed, wire_record, CountWidth, Listed, Reader, WireField};

wire_record! {
    /// 0x01 vehicle data, 2016 (20 bytes, Annex B table B.4).
    pub struct Vehicle2016 {
        /// 1 started, 2 off, 3 other.
        status: u8 => "Status",
        /// 1 parked charging, 2 driving charging, 3 not charging, 4 complete.
        charging: u8 => "Charging",
        /// 1 EV, 2 hybrid, 3 fuel.
        mode: u8 => "Mode",
        /// 0.1 km/h.
        speed: u16 => "Speed",
        /// 0.1 km.
        mileage: u32 => "Mileage",
        /// 0.1 V.
        voltage: u16 => "Voltage",
        /// 0.1 A, offset 1000 A.
        current: u16 => "Current",
        /// 1 %.
        soc: u8 => "SOC",
        /// DC-DC: 1 working, 2 off.
        dc_dc: u8 => "DC",
        /// Gear bits (A.1).
        gear: u8 => "Gear",
        /// Insulation resistance, 1 kΩ.
        insulation: u16 => "Resistance",
        /// Accelerator pedal, 1 %.
        accelerator_pedal: u8 => "AcceleratorPedal",
        /// Brake pedal, 1 % (0x65 = braking, no travel value).
        brake_pedal: u8 => "BrakePedal",
    }
}

wire_record! {
    /// 0x01 vehicle data, 2025 (18 bytes: no pedal bytes; current offset 3000 A).
    pub struct Vehicle2025 {
        /// 1 started, 2 off, 3 other.
        status: u8 => "Status",
        /// Charging status.
        charging: u8 => "Charging",
        /// Run mode.
        mode: u8 => "Mode",
        /// 0.1 km/h.
        speed: u16 => "Speed",
        /// 0.1 km.
        mileage: u32 => "Mileage",
        /// 0.1 V.
        voltage: u16 => "Voltage",
        /// 0.1 A, offset 3000 A.
        current: u16 => "Current",
        /// 1 %.
        soc: u8 => "SOC",
        /// DC-DC status.
        dc_dc: u8 => "DC",
        /// Gear bits (bit 7 = gear invalid).
        gear: u8 => "Gear",
        /// Insulation resistance, 1 kΩ.
        insulation: u16 => "Resistance",
    }
}

wire_record! {
    /// One drive motor, 2016 (12 bytes).
    pub struct Motor2016 {
        /// Motor number.
        no: u8 => "No",
        /// 1 consuming, 2 generating, 3 off, 4 ready.
        status: u8 => "Status",
        /// Controller temperature, offset 40 °C.
        controller_temp: u8 => "CtrlTemp",
        /// Speed, 1 rpm, offset 20000.
        speed: u16 => "Rotating",
        /// Torque, 0.1 N·m, offset 20000 raw.
        torque: u16 => "Torque",
        /// Motor temperature, offset 40 °C.
        motor_temp: u8 => "MotorTemp",
        /// Controller input voltage, 0.1 V.
        input_voltage: u16 => "InputVoltage",
        /// DC bus current, 0.1 A, offset 1000 A.
        dc_bus_current: u16 => "DCBusCurrent",
    }
}

wire_record! {
    /// One drive motor, 2025 (10 bytes; torque is a DWORD).
    pub struct Motor2025 {
        /// Motor number.
        no: u8 => "No",
        /// Motor status.
        status: u8 => "Status",
        /// Controller temperature, offset 40 °C.
        controller_temp: u8 => "CtrlTemp",
        /// Speed, 1 rpm, offset 32000.
        speed: u16 => "Rotating",
        /// Torque, 0.1 N·m, offset 20000 N·m.
        torque: u32 => "Torque",
        /// Motor temperature, offset 40 °C.
        motor_temp: u8 => "MotorTemp",
    }
}

wire_record! {
    /// The fuel-cell fields before the probe list, 2016.
    pub struct FuelCellHead2016 {
        /// 0.1 V.
        voltage: u16 => "CellVoltage",
        /// 0.1 A.
        current: u16 => "CellCurrent",
        /// 0.01 kg/100 km.
        consumption: u16 => "FuelConsumption",
    }
}

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

/// 0x03 fuel cell, 2016 (18 + N bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuelCell2016 {
    /// Voltage, current, consumption.
    pub head: FuelCellHead2016,
    /// Probe temperatures (offset 40), WORD count.
    pub probe_temps: Listed<u8>,
    /// Hydrogen fields.
    pub hydrogen: HydrogenSystem,
}

wire_record! {
    /// The fields 2025 appended to the hydrogen block.
    pub struct FuelCellTail2025 {
        /// Remaining hydrogen, 1 %.
        remaining_h2: u8 => "RemainingH2",
        /// DC/DC controller temperature, offset 40 °C.
        dc_dc_temp: u8 => "DCDCTemp",
    }
}

/// 0x03 fuel-cell engine and on-board hydrogen system, 2025 (12 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuelCell2025 {
    /// Hydrogen fields.
    pub hydrogen: HydrogenSystem,
    /// Remaining H₂ and DC/DC temperature.
    pub tail: FuelCellTail2025,
}

wire_record! {
    /// 0x04 engine, 2016 (5 bytes).
    pub struct Engine2016 {
        /// 1 on, 2 off.
        status: u8 => "Status",
        /// 1 rpm.
        crankshaft_speed: u16 => "CrankshaftSpeed",
        /// 0.01 L/100 km.
        fuel_consumption: u16 => "FuelConsumption",
    }
}

wire_record! {
    /// 0x04 engine, 2025 (2 bytes).
    pub struct Engine2025 {
        /// 1 rpm.
        crankshaft_speed: u16 => "CrankshaftSpeed",
    }
}

wire_record! {
    /// 0x05 location, 2016 (9 bytes).
    pub struct Location2016 {
        /// Bit 0 invalid fix, bit 1 south, bit 2 west.
        status: u8 => "Status",
        /// Degrees × 10⁶, unsigned.
        longitude: u32 => "Longitude",
        /// Degrees × 10⁶, unsigned.
        latitude: u32 => "Latitude",
    }
}

wire_record! {
    /// 0x05 location, 2025 (10 bytes).
    pub struct Location2025 {
        /// Bit 0 invalid fix, bit 1 south, bit 2 west.
        status: u8 => "Status",
        /// 1 WGS84, 2 GCJ02, 3 other.
        coordinate_system: u8 => "CoordinateSystem",
        /// Degrees × 10⁶, unsigned.
        longitude: u32 => "Longitude",
        /// Degrees × 10⁶, unsigned.
        latitude: u32 => "Latitude",
    }
}

wire_record! {
    /// 0x06 extreme values, 2016 (14 bytes).
    pub struct Extremes {
        /// Subsystem of the highest cell voltage.
        max_voltage_subsystem: u8 => "MaxVoltageBatterySubsysNo",
        /// Cell of the highest voltage.
        max_voltage_cell: u8 => "MaxVoltageBatteryCode",
        /// Highest cell voltage, 0.001 V.
        max_cell_voltage: u16 => "MaxBatteryVoltage",
        /// Subsystem of the lowest cell voltage.
        min_voltage_subsystem: u8 => "MinVoltageBatterySubsysNo",
        /// Cell of the lowest voltage.
        min_voltage_cell: u8 => "MinVoltageBatteryCode",
        /// Lowest cell voltage, 0.001 V.
        min_cell_voltage: u16 => "MinBatteryVoltage",
        /// Subsystem of the highest temperature.
        max_temp_subsystem: u8 => "MaxTempSubsysNo",
        /// Probe of the highest temperature.
        max_temp_probe: u8 => "MaxTempProbeNo",
        /// Highest temperature, offset 40 °C.
        max_temp: u8 => "MaxTemp",
        /// Subsystem of the lowest temperature.
        min_temp_subsystem: u8 => "MinTempSubsysNo",
        /// Probe of the lowest temperature.
        min_temp_probe: u8 => "MinTempProbeNo",
        /// Lowest temperature, offset 40 °C.
        min_temp: u8 => "MinTemp",
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

wire_record! {
    /// One (general-flag bit, level) pair of the 2025 alarm (N5 list).
    pub struct FlagLevel {
        /// Index of the general alarm flag bit.
        flag_bit: u8 => "No",
        /// Alarm level of that bit.
        level: u8 => "Level",
    }
}

/// 0x06 alarm, 2025: the common alarm plus the N5 list of per-flag levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm2025 {
    /// Level, flags and fault-code lists.
    pub alarm: Alarm,
    /// Per general-flag levels (N5).
    pub flag_levels: Listed<FlagLevel>,
}

wire_record! {
    /// The fixed fields of one RESS subsystem in 2016 0x08.
    pub struct CellVoltageHead {
        /// Subsystem number.
        no: u8 => "ChargeableSubsysNo",
        /// Subsystem voltage, 0.1 V.
        voltage: u16 => "ChargeableVoltage",
        /// Subsystem current, 0.1 A, offset 1000 A.
        current: u16 => "ChargeableCurrent",
        /// Total number of cells.
        cells_total: u16 => "CellsTotal",
        /// Index of the first cell in this frame.
        first_cell: u16 => "FrameCellsIndex",
    }
}

/// One RESS subsystem of 2016 0x08: fixed fields plus this frame's cell voltages (BYTE count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellVoltageSubsystem {
    /// Fixed fields.
    pub head: CellVoltageHead,
    /// Cell voltages, 0.001 V.
    pub cell_voltages: Listed<u16>,
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

wire_record! {
    /// The fixed fields of one battery pack in 2025 0x07.
    pub struct PackVoltageHead {
        /// Pack number.
        no: u8 => "BatteryPackNo",
        /// Pack voltage, 0.1 V.
        voltage: u16 => "BatteryPackVoltage",
        /// Pack current, 0.1 A, offset 3000 A.
        current: u16 => "BatteryPackCurrent",
    }
}

/// One battery pack of 2025 0x07 (minimum parallel units): fixed fields plus unit voltages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackVoltages {
    /// Fixed fields.
    pub head: PackVoltageHead,
    /// Minimum-parallel-unit voltages, 0.001 V (WORD count).
    pub unit_voltages: Listed<u16>,
}

wire_record! {
    /// The fixed fields of one fuel-cell stack (2025 0x30).
    pub struct FuelCellStackHead {
        /// Stack number.
        no: u8 => "FuelCellStackNo",
        /// 0.1 V.
        voltage: u16 => "Voltage",
        /// 0.1 A.
        current: u16 => "Current",
        /// 0.1 kPa, offset 100 kPa.
        h2_inlet_pressure: u16 => "H2InletPressure",
        /// 0.1 kPa, offset 100 kPa.
        air_inlet_pressure: u16 => "AirInletPressure",
        /// Offset 40 °C.
        air_inlet_temp: u8 => "AirInletTemp",
    }
}

/// One fuel-cell stack (2025 0x30).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuelCellStack {
    /// Fixed fields.
    pub head: FuelCellStackHead,
    /// Coolant-outlet probe temperatures (WORD count).
    pub probe_temps: Listed<u8>,
}

wire_record! {
    /// The fixed fields of the supercapacitor block (2025 0x31).
    pub struct SuperCapacitorHead {
        /// Management system number.
        system_no: u8 => "ManagerSysNo",
        /// 0.1 V.
        total_voltage: u16 => "TotalVoltage",
        /// 0.1 A, offset 3000 A.
        total_current: u16 => "TotalCurrent",
    }
}

/// 0x31 supercapacitor (2025).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperCapacitor {
    /// Fixed fields.
    pub head: SuperCapacitorHead,
    /// Cell voltages, 0.001 V (WORD count).
    pub cell_voltages: Listed<u16>,
    /// Probe temperatures, offset 40 (WORD count).
    pub probe_temps: Listed<u8>,
}

wire_record! {
    /// 0x32 supercapacitor extremes (2025, 18 bytes).
    pub struct SuperCapacitorExtremes {
        /// System of the highest cell voltage.
        max_voltage_system: u8 => "MaxVoltageManagerSysNo",
        /// Cell code of the highest voltage.
        max_voltage_cell: u16 => "MaxVoltageCellCode",
        /// Highest cell voltage, 0.001 V.
        max_voltage: u16 => "MaxVoltageCellValue",
        /// System of the lowest cell voltage.
        min_voltage_system: u8 => "MinVoltageManagerSysNo",
        /// Cell code of the lowest voltage.
        min_voltage_cell: u16 => "MinVoltageCellCode",
        /// Lowest cell voltage, 0.001 V.
        min_voltage: u16 => "MinVoltageCellValue",
        /// System of the highest temperature.
        max_temp_system: u8 => "MaxTempManagerSysNo",
        /// Probe of the highest temperature.
        max_temp_probe: u16 => "MaxTempProbeCode",
        /// Highest temperature, offset 40 °C.
        max_temp: u8 => "MaxTempValue",
        /// System of the lowest temperature.
        min_temp_system: u8 => "MinTempManagerSysNo",
        /// Probe of the lowest temperature.
        min_temp_probe: u16 => "MinTempProbeCode",
        /// Lowest temperature, offset 40 °C.
        min_temp: u8 => "MinTempValue",
    }
}

/// One information item of a real-time / re-issue report. Variants named `…2016`/`…2025`
/// belong to that edition only; the frame's start bytes decide which table applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoItem {
    /// 2016 0x01.
    Vehicle2016(Vehicle2016),
    /// 2025 0x01.
    Vehicle2025(Vehicle2025),
    /// 2016 0x02 (BYTE count).
    DriveMotors2016(Listed<Motor2016>),
    /// 2025 0x02 (BYTE count).
    DriveMotors2025(Listed<Motor2025>),
    /// 2016 0x03.
    FuelCell2016(FuelCell2016),
    /// 2025 0x03.
    FuelCell2025(FuelCell2025),
    /// 2016 0x04.
    Engine2016(Engine2016),
    /// 2025 0x04.
    Engine2025(Engine2025),
    /// 2016 0x05.
    Location2016(Location2016),
    /// 2025 0x05.
    Location2025(Location2025),
    /// 2016 0x06.
    Extremes2016(Extremes),
    /// 2016 0x07.
    Alarm2016(Alarm),
    /// 2025 0x06.
    Alarm2025(Alarm2025),
    /// 2016 0x08 RESS cell voltages.
    CellVoltages2016(Listed<CellVoltageSubsystem>),
    /// 2016 0x09 RESS temperatures.
    ProbeTemps2016(Listed<ProbeGroup>),
    /// 2025 0x07 minimum-parallel-unit voltages.
    PackVoltages2025(Listed<PackVoltages>),
    /// 2025 0x08 battery temperatures.
    PackTemps2025(Listed<ProbeGroup>),
    /// 2025 0x30 fuel-cell stacks.
    FuelCellStacks2025(Listed<FuelCellStack>),
    /// 2025 0x31 supercapacitor.
    SuperCapacitor2025(SuperCapacitor),
    /// 2025 0x32 supercapacitor extremes.
    SuperCapacitorExtremes2025(SuperCapacitorExtremes),
    /// 2025 0xFF vehicle signature.
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

type ReadItem = fn(&mut Reader<'_>) -> Result<InfoItem, BodyError>;

/// One row of the information-type table.
struct InfoType {
    edition: Edition,
    code: u8,
    /// EMQX `"Type"` name.
    name: &'static str,
    read: ReadItem,
}

/// Information types per edition (facts sheet §2.2 and the table in §3).
const INFO_TYPES: [InfoType; 21] = [
    InfoType {
        edition: Edition::V2016,
        code: 0x01,
        name: "Vehicle",
        read: |r| Ok(InfoItem::Vehicle2016(Vehicle2016::read(r)?)),
    },
    InfoType {
        edition: Edition::V2016,
        code: 0x02,
        name: "DriveMotor",
        read: |r| {
            Ok(InfoItem::DriveMotors2016(Listed::read(
                r,
                CountWidth::Byte,
                Motor2016::read,
            )?))
        },
    },
    InfoType {
        edition: Edition::V2016,
        code: 0x03,
        name: "FuelCell",
        read: |r| {
            Ok(InfoItem::FuelCell2016(FuelCell2016 {
                head: FuelCellHead2016::read(r)?,
                probe_temps: Listed::read(r, CountWidth::Word, u8::read)?,
                hydrogen: HydrogenSystem::read(r)?,
            }))
        },
    },
    InfoType {
        edition: Edition::V2016,
        code: 0x04,
        name: "Engine",
        read: |r| Ok(InfoItem::Engine2016(Engine2016::read(r)?)),
    },
    InfoType {
        edition: Edition::V2016,
        code: 0x05,
        name: "Location",
        read: |r| Ok(InfoItem::Location2016(Location2016::read(r)?)),
    },
    InfoType {
        edition: Edition::V2016,
        code: 0x06,
        name: "Extreme",
        read: |r| Ok(InfoItem::Extremes2016(Extremes::read(r)?)),
    },
    InfoType {
        edition: Edition::V2016,
        code: 0x07,
        name: "Alarm",
        read: |r| Ok(InfoItem::Alarm2016(Alarm::read(r)?)),
    },
    InfoType {
        edition: Edition::V2016,
        code: 0x08,
        name: "ChargeableVoltage",
        read: |r| {
            Ok(InfoItem::CellVoltages2016(Listed::read(r, CountWidth::Byte, |r| {
                Ok(CellVoltageSubsystem {
                    head: CellVoltageHead::read(r)?,
                    cell_voltages: Listed::read(r, CountWidth::Byte, u16::read)?,
                })
            })?))
        },
    },
    InfoType {
        edition: Edition::V2016,
        code: 0x09,
        name: "ChargeableTemp",
        read: |r| {
            Ok(InfoItem::ProbeTemps2016(Listed::read(
                r,
                CountWidth::Byte,
                ProbeGroup::read,
            )?))
        },
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x01,
        name: "Vehicle",
        read: |r| Ok(InfoItem::Vehicle2025(Vehicle2025::read(r)?)),
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x02,
        name: "DriveMotor",
        read: |r| {
            Ok(InfoItem::DriveMotors2025(Listed::read(
                r,
                CountWidth::Byte,
                Motor2025::read,
            )?))
        },
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x03,
        name: "FuelCell",
        read: |r| {
            Ok(InfoItem::FuelCell2025(FuelCell2025 {
                hydrogen: HydrogenSystem::read(r)?,
                tail: FuelCellTail2025::read(r)?,
            }))
        },
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x04,
        name: "Engine",
        read: |r| Ok(InfoItem::Engine2025(Engine2025::read(r)?)),
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x05,
        name: "Location",
        read: |r| Ok(InfoItem::Location2025(Location2025::read(r)?)),
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x06,
        name: "Alarm",
        read: |r| {
            Ok(InfoItem::Alarm2025(Alarm2025 {
                alarm: Alarm::read(r)?,
                flag_levels: Listed::read(r, CountWidth::Byte, FlagLevel::read)?,
            }))
        },
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x07,
        name: "MinVoltageOfPowerBattery",
        read: |r| {
            Ok(InfoItem::PackVoltages2025(Listed::read(r, CountWidth::Byte, |r| {
                Ok(PackVoltages {
                    head: PackVoltageHead::read(r)?,
                    unit_voltages: Listed::read(r, CountWidth::Word, u16::read)?,
                })
            })?))
        },
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x08,
        name: "TempOfPowerBattery",
        read: |r| {
            Ok(InfoItem::PackTemps2025(Listed::read(
                r,
                CountWidth::Byte,
                ProbeGroup::read,
            )?))
        },
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x30,
        name: "FuelCellStack",
        read: |r| {
            Ok(InfoItem::FuelCellStacks2025(Listed::read(r, CountWidth::Byte, |r| {
                Ok(FuelCellStack {
                    head: FuelCellStackHead::read(r)?,
                    probe_temps: Listed::read(r, CountWidth::Word, u8::read)?,
                })
            })?))
        },
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x31,
        name: "SuperCapacitor",
        read: |r| {
            Ok(InfoItem::SuperCapacitor2025(SuperCapacitor {
                head: SuperCapacitorHead::read(r)?,
                cell_voltages: Listed::read(r, CountWidth::Word, u16::read)?,
                probe_temps: Listed::read(r, CountWidth::Word, u8::read)?,
            }))
        },
    },
    InfoType {
        edition: Edition::V2025,
        code: 0x32,
        name: "SuperCapacitorExtreme",
        read: |r| Ok(InfoItem::SuperCapacitorExtremes2025(SuperCapacitorExtremes::read(r)?)),
    },
    InfoType {
        edition: Edition::V2025,
        code: 0xFF,
        name: "Signature",
        read: |r| Ok(InfoItem::Signature2025(Signature::read(r)?)),
    },
];

fn info_type(edition: Edition, code: u8) -> Option<&'static InfoType> {
    INFO_TYPES.iter().find(|row| row.edition == edition && row.code == code)
}

/// User-defined information types (both editions).
const USER_DEFINED_CODES: std::ops::RangeInclusive<u8> = 0x80..=0xFE;

/// EMQX `"Type"` of custom data (user-defined blocks and unparsed tails).
const CUSTOM_DATA: &str = "CustomData";

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
    /// The edition and type code this item is written with; `None` for the edition-neutral
    /// user-defined and unparsed items.
    fn identity(&self) -> Option<(Edition, u8)> {
        let identity = match self {
            InfoItem::Vehicle2016(_) => (Edition::V2016, 0x01),
            InfoItem::DriveMotors2016(_) => (Edition::V2016, 0x02),
            InfoItem::FuelCell2016(_) => (Edition::V2016, 0x03),
            InfoItem::Engine2016(_) => (Edition::V2016, 0x04),
            InfoItem::Location2016(_) => (Edition::V2016, 0x05),
            InfoItem::Extremes2016(_) => (Edition::V2016, 0x06),
            InfoItem::Alarm2016(_) => (Edition::V2016, 0x07),
            InfoItem::CellVoltages2016(_) => (Edition::V2016, 0x08),
            InfoItem::ProbeTemps2016(_) => (Edition::V2016, 0x09),
            InfoItem::Vehicle2025(_) => (Edition::V2025, 0x01),
            InfoItem::DriveMotors2025(_) => (Edition::V2025, 0x02),
            InfoItem::FuelCell2025(_) => (Edition::V2025, 0x03),
            InfoItem::Engine2025(_) => (Edition::V2025, 0x04),
            InfoItem::Location2025(_) => (Edition::V2025, 0x05),
            InfoItem::Alarm2025(_) => (Edition::V2025, 0x06),
            InfoItem::PackVoltages2025(_) => (Edition::V2025, 0x07),
            InfoItem::PackTemps2025(_) => (Edition::V2025, 0x08),
            InfoItem::FuelCellStacks2025(_) => (Edition::V2025, 0x30),
            InfoItem::SuperCapacitor2025(_) => (Edition::V2025, 0x31),
            InfoItem::SuperCapacitorExtremes2025(_) => (Edition::V2025, 0x32),
            InfoItem::Signature2025(_) => (Edition::V2025, 0xFF),
            InfoItem::UserDefined { .. } | InfoItem::Unparsed(_) => return None,
        };
        Some(identity)
    }

    /// The EMQX `"Type"` name of this item.
    pub fn type_name(&self) -> &'static str {
        self.identity()
            .and_then(|(edition, code)| info_type(edition, code))
            .map_or(CUSTOM_DATA, |row| row.name)
    }

    /// Reads one item starting at its type byte.
    fn read(r: &mut Reader<'_>, edition: Edition) -> Result<InfoItem, BodyError> {
        let start = r.clone();
        let code = r.u8()?;
        if let Some(row) = info_type(edition, code) {
            return (row.read)(r);
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
        if let Some((item_edition, code)) = self.identity() {
            if item_edition != edition {
                return Err(EncodeError::WrongEdition {
                    what: self.type_name(),
                    edition,
                });
            }
            out.put_u8(code);
        }
        match self {
            InfoItem::Vehicle2016(v) => v.write(out),
            InfoItem::Vehicle2025(v) => v.write(out),
            InfoItem::DriveMotors2016(list) => {
                list.write(out, CountWidth::Byte, "drive motors", put_record(Motor2016::write))?
            }
            InfoItem::DriveMotors2025(list) => {
                list.write(out, CountWidth::Byte, "drive motors", put_record(Motor2025::write))?
            }
            InfoItem::FuelCell2016(cell) => {
                cell.head.write(out);
                cell.probe_temps
                    .write(out, CountWidth::Word, "fuel-cell probes", put_byte)?;
                cell.hydrogen.write(out);
            }
            InfoItem::FuelCell2025(cell) => {
                cell.hydrogen.write(out);
                cell.tail.write(out);
            }
            InfoItem::Engine2016(engine) => engine.write(out),
            InfoItem::Engine2025(engine) => engine.write(out),
            InfoItem::Location2016(location) => location.write(out),
            InfoItem::Location2025(location) => location.write(out),
            InfoItem::Extremes2016(extremes) => extremes.write(out),
            InfoItem::Alarm2016(alarm) => alarm.write(out)?,
            InfoItem::Alarm2025(alarm) => {
                alarm.alarm.write(out)?;
                alarm
                    .flag_levels
                    .write(out, CountWidth::Byte, "flag levels", put_record(FlagLevel::write))?;
            }
            InfoItem::CellVoltages2016(list) => {
                list.write(out, CountWidth::Byte, "RESS subsystems", |subsystem, out| {
                    subsystem.head.write(out);
                    subsystem
                        .cell_voltages
                        .write(out, CountWidth::Byte, "cell voltages", put_word)
                })?
            }
            InfoItem::ProbeTemps2016(list) | InfoItem::PackTemps2025(list) => {
                list.write(out, CountWidth::Byte, "probe groups", ProbeGroup::write)?
            }
            InfoItem::PackVoltages2025(list) => list.write(out, CountWidth::Byte, "battery packs", |pack, out| {
                pack.head.write(out);
                pack.unit_voltages
                    .write(out, CountWidth::Word, "unit voltages", put_word)
            })?,
            InfoItem::FuelCellStacks2025(list) => {
                list.write(out, CountWidth::Byte, "fuel-cell stacks", |stack, out| {
                    stack.head.write(out);
                    stack.probe_temps.write(out, CountWidth::Word, "stack probes", put_byte)
                })?
            }
            InfoItem::SuperCapacitor2025(cap) => {
                cap.head.write(out);
                cap.cell_voltages
                    .write(out, CountWidth::Word, "supercapacitor cells", put_word)?;
                cap.probe_temps
                    .write(out, CountWidth::Word, "supercapacitor probes", put_byte)?;
            }
            InfoItem::SuperCapacitorExtremes2025(extremes) => extremes.write(out),
            InfoItem::Signature2025(signature) => signature.write(out)?,
            InfoItem::UserDefined { code, payload } => {
                out.put_u8(*code);
                put_word_prefixed(out, "user-defined block", payload)?;
            }
            InfoItem::Unparsed(bytes) => out.extend_from_slice(bytes),
        }
        Ok(())
    }

    /// EMQX JSON of the item (an element of `Infos`).
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("Type".to_owned(), Value::from(self.type_name()));
        match self {
            InfoItem::Vehicle2016(v) => v.json_into(&mut map),
            InfoItem::Vehicle2025(v) => v.json_into(&mut map),
            InfoItem::DriveMotors2016(list) => list.json_into(
                &mut map,
                CountWidth::Byte,
                "Number",
                "Motors",
                record_json(Motor2016::json_into),
            ),
            InfoItem::DriveMotors2025(list) => list.json_into(
                &mut map,
                CountWidth::Byte,
                "Number",
                "Motors",
                record_json(Motor2025::json_into),
            ),
            InfoItem::FuelCell2016(cell) => {
                cell.head.json_into(&mut map);
                cell.probe_temps
                    .json_into(&mut map, CountWidth::Word, "ProbeNum", "ProbeTemps", |t| {
                        Value::from(*t)
                    });
                cell.hydrogen.json_into(&mut map);
            }
            InfoItem::FuelCell2025(cell) => {
                cell.hydrogen.json_into(&mut map);
                cell.tail.json_into(&mut map);
            }
            InfoItem::Engine2016(engine) => engine.json_into(&mut map),
            InfoItem::Engine2025(engine) => engine.json_into(&mut map),
            InfoItem::Location2016(location) => location.json_into(&mut map),
            InfoItem::Location2025(location) => location.json_into(&mut map),
            InfoItem::Extremes2016(extremes) => extremes.json_into(&mut map),
            InfoItem::Alarm2016(alarm) => alarm.json_into(&mut map, 4),
            InfoItem::Alarm2025(alarm) => {
                alarm.alarm.json_into(&mut map, 8);
                alarm.flag_levels.json_into(
                    &mut map,
                    CountWidth::Byte,
                    "FaultGeneralNum",
                    "FaultGeneralList",
                    record_json(FlagLevel::json_into),
                );
            }
            InfoItem::CellVoltages2016(list) => {
                list.json_into(&mut map, CountWidth::Byte, "Number", "SubSystems", |s| {
                    let mut sub = Map::new();
                    s.head.json_into(&mut sub);
                    s.cell_voltages
                        .json_into(&mut sub, CountWidth::Byte, "FrameCellsCount", "CellsVoltage", |v| {
                            Value::from(*v)
                        });
                    Value::Object(sub)
                })
            }
            InfoItem::ProbeTemps2016(list) => list.json_into(&mut map, CountWidth::Byte, "Number", "SubSystems", |g| {
                g.to_json("ChargeableSubsysNo")
            }),
            InfoItem::PackTemps2025(list) => list.json_into(&mut map, CountWidth::Byte, "Number", "SubSystems", |g| {
                g.to_json("BatteryPackNo")
            }),
            InfoItem::PackVoltages2025(list) => {
                list.json_into(&mut map, CountWidth::Byte, "Number", "SubSystems", |p| {
                    let mut pack = Map::new();
                    p.head.json_into(&mut pack);
                    p.unit_voltages.json_into(
                        &mut pack,
                        CountWidth::Word,
                        "MinParallelUnitTotal",
                        "MinParallelUnitVoltage",
                        |v| Value::from(*v),
                    );
                    Value::Object(pack)
                })
            }
            InfoItem::FuelCellStacks2025(list) => list.json_into(&mut map, CountWidth::Byte, "Number", "Stacks", |s| {
                let mut stack = Map::new();
                s.head.json_into(&mut stack);
                s.probe_temps
                    .json_into(&mut stack, CountWidth::Word, "StackProbeNum", "StackProbeTemp", |t| {
                        Value::from(*t)
                    });
                Value::Object(stack)
            }),
            InfoItem::SuperCapacitor2025(cap) => {
                cap.head.json_into(&mut map);
                cap.cell_voltages
                    .json_into(&mut map, CountWidth::Word, "CellsTotal", "CellsVoltage", |v| {
                        Value::from(*v)
                    });
                cap.probe_temps
                    .json_into(&mut map, CountWidth::Word, "ProbeNum", "ProbeTemp", |t| Value::from(*t));
            }
            InfoItem::SuperCapacitorExtremes2025(extremes) => extremes.json_into(&mut map),
            InfoItem::Signature2025(signature) => signature.json_into(&mut map),
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
        }
        Value::Object(map)
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
}
