//! GB/T 32960.3-2025 (`$$`) information types 0x01–0x08, 0x30–0x32 and the 0xFF signature
//! (facts sheet §3): their records and the edition's type table.
//!
//! Owns: the 2025 layouts and EMQX names. Must not: hold anything the 2016 edition also uses
//! (that lives in the parent module).

use serde_json::{Map, Value};

use super::{
    info_types, number_json, put_byte, put_record, put_word, record_json, record_object, write_listed, Alarm,
    CountWidth, HydrogenSystem, InfoItem, Listed, ProbeGroup,
};
use crate::protocol::gbt32960::message::Signature;
use crate::protocol::gbt32960::wire::{wire_record, WireField};

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
    /// 0x04 engine, 2025 (2 bytes).
    pub struct Engine2025 {
        /// 1 rpm.
        crankshaft_speed: u16 => "CrankshaftSpeed",
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

info_types! {
    0x01 => Vehicle2025(Vehicle2025) as "Vehicle" {
        read: Vehicle2025::read,
        write: |vehicle, out| {
            vehicle.write(out);
            Ok(())
        },
        json: Vehicle2025::json_into,
        write_json: Vehicle2025::write_json_members,
    },
    0x02 => DriveMotors2025(Listed<Motor2025>) as "DriveMotor" {
        read: |r| Listed::read(r, CountWidth::Byte, Motor2025::read),
        write: |list, out| list.write(out, CountWidth::Byte, "drive motors", put_record(Motor2025::write)),
        json: |list, map| {
            list.json_into(map, CountWidth::Byte, "Number", "Motors", record_json(Motor2025::json_into))
        },
        write_json: |list, w| {
            write_listed(w, list, CountWidth::Byte, "Number", "Motors", record_object(Motor2025::write_json_members))
        },
    },
    0x03 => FuelCell2025(FuelCell2025) as "FuelCell" {
        read: |r| {
            Ok(FuelCell2025 {
                hydrogen: HydrogenSystem::read(r)?,
                tail: FuelCellTail2025::read(r)?,
            })
        },
        write: |cell, out| {
            cell.hydrogen.write(out);
            cell.tail.write(out);
            Ok(())
        },
        json: |cell, map| {
            cell.hydrogen.json_into(map);
            cell.tail.json_into(map);
        },
        write_json: |cell, w| {
            w.member_u64("DCDCTemp", cell.tail.dc_dc_temp);
            cell.hydrogen.write_dc_status_json(w);
            cell.hydrogen.write_h_json(w);
            w.member_u64("RemainingH2", cell.tail.remaining_h2);
        },
    },
    0x04 => Engine2025(Engine2025) as "Engine" {
        read: Engine2025::read,
        write: |engine, out| {
            engine.write(out);
            Ok(())
        },
        json: Engine2025::json_into,
        write_json: Engine2025::write_json_members,
    },
    0x05 => Location2025(Location2025) as "Location" {
        read: Location2025::read,
        write: |location, out| {
            location.write(out);
            Ok(())
        },
        json: Location2025::json_into,
        write_json: Location2025::write_json_members,
    },
    0x06 => Alarm2025(Alarm2025) as "Alarm" {
        read: |r| {
            Ok(Alarm2025 {
                alarm: Alarm::read(r)?,
                flag_levels: Listed::read(r, CountWidth::Byte, FlagLevel::read)?,
            })
        },
        write: |alarm, out| {
            alarm.alarm.write(out)?;
            alarm
                .flag_levels
                .write(out, CountWidth::Byte, "flag levels", put_record(FlagLevel::write))
        },
        // EMQX `~8.16.0B`: fault codes as at least eight hex digits.
        json: |alarm, map| {
            alarm.alarm.json_into(map, 8);
            alarm.flag_levels.json_into(
                map,
                CountWidth::Byte,
                "FaultGeneralNum",
                "FaultGeneralList",
                record_json(FlagLevel::json_into),
            );
        },
        write_json: |alarm, w| alarm.alarm.write_json_members(w, 8, Some(&alarm.flag_levels)),
    },
    0x07 => PackVoltages2025(Listed<PackVoltages>) as "MinVoltageOfPowerBattery" {
        read: |r| {
            Listed::read(r, CountWidth::Byte, |r| {
                Ok(PackVoltages {
                    head: PackVoltageHead::read(r)?,
                    unit_voltages: Listed::read(r, CountWidth::Word, u16::read)?,
                })
            })
        },
        write: |list, out| {
            list.write(out, CountWidth::Byte, "battery packs", |pack, out| {
                pack.head.write(out);
                pack.unit_voltages
                    .write(out, CountWidth::Word, "unit voltages", put_word)
            })
        },
        json: |list, map| {
            list.json_into(map, CountWidth::Byte, "Number", "SubSystems", |p| {
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
        },
        write_json: |list, w| {
            write_listed(w, list, CountWidth::Byte, "Number", "SubSystems", |p, w| {
                w.begin_object();
                p.head.write_json_members(w);
                write_listed(
                    w,
                    &p.unit_voltages,
                    CountWidth::Word,
                    "MinParallelUnitTotal",
                    "MinParallelUnitVoltage",
                    number_json,
                );
                w.end_object();
            })
        },
    },
    0x08 => PackTemps2025(Listed<ProbeGroup>) as "TempOfPowerBattery" {
        read: ProbeGroup::read_list,
        write: ProbeGroup::write_list,
        json: |list, map| ProbeGroup::list_json_into(list, map, "BatteryPackNo"),
        write_json: |list, w| ProbeGroup::write_list_json(list, w, "BatteryPackNo"),
    },
    0x30 => FuelCellStacks2025(Listed<FuelCellStack>) as "FuelCellStack" {
        read: |r| {
            Listed::read(r, CountWidth::Byte, |r| {
                Ok(FuelCellStack {
                    head: FuelCellStackHead::read(r)?,
                    probe_temps: Listed::read(r, CountWidth::Word, u8::read)?,
                })
            })
        },
        write: |list, out| {
            list.write(out, CountWidth::Byte, "fuel-cell stacks", |stack, out| {
                stack.head.write(out);
                stack.probe_temps.write(out, CountWidth::Word, "stack probes", put_byte)
            })
        },
        json: |list, map| {
            list.json_into(map, CountWidth::Byte, "Number", "Stacks", |s| {
                let mut stack = Map::new();
                s.head.json_into(&mut stack);
                s.probe_temps
                    .json_into(&mut stack, CountWidth::Word, "StackProbeNum", "StackProbeTemp", |t| {
                        Value::from(*t)
                    });
                Value::Object(stack)
            })
        },
        write_json: |list, w| {
            write_listed(w, list, CountWidth::Byte, "Number", "Stacks", |s, w| {
                w.begin_object();
                w.member_u64("AirInletPressure", s.head.air_inlet_pressure);
                w.member_u64("AirInletTemp", s.head.air_inlet_temp);
                w.member_u64("Current", s.head.current);
                w.member_u64("FuelCellStackNo", s.head.no);
                w.member_u64("H2InletPressure", s.head.h2_inlet_pressure);
                write_listed(w, &s.probe_temps, CountWidth::Word, "StackProbeNum", "StackProbeTemp", number_json);
                w.member_u64("Voltage", s.head.voltage);
                w.end_object();
            })
        },
    },
    0x31 => SuperCapacitor2025(SuperCapacitor) as "SuperCapacitor" {
        read: |r| {
            Ok(SuperCapacitor {
                head: SuperCapacitorHead::read(r)?,
                cell_voltages: Listed::read(r, CountWidth::Word, u16::read)?,
                probe_temps: Listed::read(r, CountWidth::Word, u8::read)?,
            })
        },
        write: |cap, out| {
            cap.head.write(out);
            cap.cell_voltages
                .write(out, CountWidth::Word, "supercapacitor cells", put_word)?;
            cap.probe_temps
                .write(out, CountWidth::Word, "supercapacitor probes", put_byte)
        },
        json: |cap, map| {
            cap.head.json_into(map);
            cap.cell_voltages
                .json_into(map, CountWidth::Word, "CellsTotal", "CellsVoltage", |v| Value::from(*v));
            cap.probe_temps
                .json_into(map, CountWidth::Word, "ProbeNum", "ProbeTemp", |t| Value::from(*t));
        },
        write_json: |cap, w| {
            write_listed(w, &cap.cell_voltages, CountWidth::Word, "CellsTotal", "CellsVoltage", number_json);
            w.member_u64("ManagerSysNo", cap.head.system_no);
            write_listed(w, &cap.probe_temps, CountWidth::Word, "ProbeNum", "ProbeTemp", number_json);
            w.member_u64("TotalCurrent", cap.head.total_current);
            w.member_u64("TotalVoltage", cap.head.total_voltage);
        },
    },
    0x32 => SuperCapacitorExtremes2025(SuperCapacitorExtremes) as "SuperCapacitorExtreme" {
        read: SuperCapacitorExtremes::read,
        write: |extremes, out| {
            extremes.write(out);
            Ok(())
        },
        json: SuperCapacitorExtremes::json_into,
        write_json: SuperCapacitorExtremes::write_json_members,
    },
    0xFF => Signature2025(Signature) as "Signature" {
        read: Signature::read,
        write: Signature::write,
        json: Signature::json_into,
        write_json: Signature::write_json_members,
    },
}
