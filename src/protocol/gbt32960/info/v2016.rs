//! GB/T 32960.3-2016 (`##`) information types 0x01–0x09 (facts sheet §2.2; 0x08/0x09 from
//! Annex B): their records and the edition's type table.
//!
//! Owns: the 2016 layouts and EMQX names. Must not: hold anything the 2025 edition also uses
//! (that lives in the parent module).

use serde_json::{Map, Value};

use super::{
    info_types, number_json, put_byte, put_record, put_word, record_json, record_object, write_listed, Alarm,
    CountWidth, HydrogenSystem, InfoItem, Listed, ProbeGroup,
};
use crate::protocol::gbt32960::wire::{wire_record, WireField};

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

info_types! {
    0x01 => Vehicle2016(Vehicle2016) as "Vehicle" {
        read: Vehicle2016::read,
        write: |vehicle, out| {
            vehicle.write(out);
            Ok(())
        },
        json: Vehicle2016::json_into,
        write_json: Vehicle2016::write_json_members,
    },
    0x02 => DriveMotors2016(Listed<Motor2016>) as "DriveMotor" {
        read: |r| Listed::read(r, CountWidth::Byte, Motor2016::read),
        write: |list, out| list.write(out, CountWidth::Byte, "drive motors", put_record(Motor2016::write)),
        json: |list, map| {
            list.json_into(map, CountWidth::Byte, "Number", "Motors", record_json(Motor2016::json_into))
        },
        write_json: |list, w| {
            write_listed(w, list, CountWidth::Byte, "Number", "Motors", record_object(Motor2016::write_json_members))
        },
    },
    0x03 => FuelCell2016(FuelCell2016) as "FuelCell" {
        read: |r| {
            Ok(FuelCell2016 {
                head: FuelCellHead2016::read(r)?,
                probe_temps: Listed::read(r, CountWidth::Word, u8::read)?,
                hydrogen: HydrogenSystem::read(r)?,
            })
        },
        write: |cell, out| {
            cell.head.write(out);
            cell.probe_temps
                .write(out, CountWidth::Word, "fuel-cell probes", put_byte)?;
            cell.hydrogen.write(out);
            Ok(())
        },
        json: |cell, map| {
            cell.head.json_into(map);
            cell.probe_temps
                .json_into(map, CountWidth::Word, "ProbeNum", "ProbeTemps", |t| Value::from(*t));
            cell.hydrogen.json_into(map);
        },
        write_json: |cell, w| {
            w.member_u64("CellCurrent", cell.head.current);
            w.member_u64("CellVoltage", cell.head.voltage);
            cell.hydrogen.write_dc_status_json(w);
            w.member_u64("FuelConsumption", cell.head.consumption);
            cell.hydrogen.write_h_json(w);
            write_listed(w, &cell.probe_temps, CountWidth::Word, "ProbeNum", "ProbeTemps", number_json);
        },
    },
    0x04 => Engine2016(Engine2016) as "Engine" {
        read: Engine2016::read,
        write: |engine, out| {
            engine.write(out);
            Ok(())
        },
        json: Engine2016::json_into,
        write_json: Engine2016::write_json_members,
    },
    0x05 => Location2016(Location2016) as "Location" {
        read: Location2016::read,
        write: |location, out| {
            location.write(out);
            Ok(())
        },
        json: Location2016::json_into,
        write_json: Location2016::write_json_members,
    },
    0x06 => Extremes2016(Extremes) as "Extreme" {
        read: Extremes::read,
        write: |extremes, out| {
            extremes.write(out);
            Ok(())
        },
        json: Extremes::json_into,
        write_json: Extremes::write_json_members,
    },
    0x07 => Alarm2016(Alarm) as "Alarm" {
        read: Alarm::read,
        write: Alarm::write,
        // EMQX `~4.16.0B`: fault codes as at least four hex digits.
        json: |alarm, map| alarm.json_into(map, 4),
        write_json: |alarm, w| alarm.write_json_members(w, 4, None),
    },
    0x08 => CellVoltages2016(Listed<CellVoltageSubsystem>) as "ChargeableVoltage" {
        read: |r| {
            Listed::read(r, CountWidth::Byte, |r| {
                Ok(CellVoltageSubsystem {
                    head: CellVoltageHead::read(r)?,
                    cell_voltages: Listed::read(r, CountWidth::Byte, u16::read)?,
                })
            })
        },
        write: |list, out| {
            list.write(out, CountWidth::Byte, "RESS subsystems", |subsystem, out| {
                subsystem.head.write(out);
                subsystem
                    .cell_voltages
                    .write(out, CountWidth::Byte, "cell voltages", put_word)
            })
        },
        json: |list, map| {
            list.json_into(map, CountWidth::Byte, "Number", "SubSystems", |s| {
                let mut sub = Map::new();
                s.head.json_into(&mut sub);
                s.cell_voltages
                    .json_into(&mut sub, CountWidth::Byte, "FrameCellsCount", "CellsVoltage", |v| {
                        Value::from(*v)
                    });
                Value::Object(sub)
            })
        },
        write_json: |list, w| {
            write_listed(w, list, CountWidth::Byte, "Number", "SubSystems", |s, w| {
                w.begin_object();
                w.member_u64("CellsTotal", s.head.cells_total);
                w.key("CellsVoltage");
                s.cell_voltages.write_json_items(w, number_json);
                w.member_u64("ChargeableCurrent", s.head.current);
                w.member_u64("ChargeableSubsysNo", s.head.no);
                w.member_u64("ChargeableVoltage", s.head.voltage);
                w.key("FrameCellsCount");
                s.cell_voltages.write_json_count(w, CountWidth::Byte);
                w.member_u64("FrameCellsIndex", s.head.first_cell);
                w.end_object();
            })
        },
    },
    0x09 => ProbeTemps2016(Listed<ProbeGroup>) as "ChargeableTemp" {
        read: ProbeGroup::read_list,
        write: ProbeGroup::write_list,
        json: |list, map| ProbeGroup::list_json_into(list, map, "ChargeableSubsysNo"),
        write_json: |list, w| ProbeGroup::write_list_json(list, w, "ChargeableSubsysNo"),
    },
}
