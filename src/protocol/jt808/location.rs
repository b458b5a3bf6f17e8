//! Location bodies: 0x0200 report, 0x0201/0x0500 replies that carry one, 0x0704 batches.
//!
//! Owns the 28-byte basic information and the TLV extras after it. Extras are walked by their
//! length byte; an id is decoded only when its length is the one the standard gives, otherwise it
//! is kept raw, so vendor reuse of ids (0x05 len 1, 0x64, 0xEB, JT/T 1078's 0x14-0x18) never
//! breaks a report. The rule is the same in every edition: the extras 2019 added, 0x05 (tyre
//! pressure, 30 bytes) and 0x06 (carriage temperature, 2 bytes), are decoded from 2011/2013
//! terminals too, which send them (EMQX reads them in every edition). Bit fields 0x25/0x2A use
//! the standard's order (bit 0 = least significant bit). Must not scale or sign-convert values:
//! the JSON carries raw wire integers like EMQX.

use super::error::{BodyError, EncodeError};
use super::header::Edition;
use super::wire::{count_u16, BcdTime, Reader};

/// Length of the basic location information.
pub const LOCATION_BASIC_LEN: usize = 28;

/// The 28-byte basic location information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocationBasic {
    /// Alarm flags (bit 0 = emergency, ...).
    pub alarm: u32,
    /// Status flags (bit 0 = ACC, bit 1 = fixed, bit 2 = south, bit 3 = west, ...).
    pub status: u32,
    /// Latitude ×10⁶ degrees, unsigned; the hemisphere is status bit 2.
    pub latitude: u32,
    /// Longitude ×10⁶ degrees, unsigned; the hemisphere is status bit 3.
    pub longitude: u32,
    /// Altitude in metres.
    pub altitude: u16,
    /// Speed in 1/10 km/h.
    pub speed: u16,
    /// Direction 0-359, north = 0, clockwise.
    pub direction: u16,
    /// Time `YYMMDDhhmmss`, GMT+8.
    pub time: BcdTime,
}

impl LocationBasic {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(LocationBasic {
            alarm: r.u32("alarm")?,
            status: r.u32("status")?,
            latitude: r.u32("latitude")?,
            longitude: r.u32("longitude")?,
            altitude: r.u16("altitude")?,
            speed: r.u16("speed")?,
            direction: r.u16("direction")?,
            time: BcdTime(r.array("time")?),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.alarm.to_be_bytes());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.latitude.to_be_bytes());
        out.extend_from_slice(&self.longitude.to_be_bytes());
        out.extend_from_slice(&self.altitude.to_be_bytes());
        out.extend_from_slice(&self.speed.to_be_bytes());
        out.extend_from_slice(&self.direction.to_be_bytes());
        out.extend_from_slice(&self.time.0);
    }
}

/// Names of the 0x25 extended vehicle signal bits, index = bit number (bit 0 = LSB). The names are
/// EMQX's JSON keys, including its spelling `cluth`.
pub const VEHICLE_SIGNAL_BITS: [&str; 15] = [
    "low_beam",
    "high_beam",
    "right_turn",
    "left_turn",
    "brake",
    "reverse",
    "fog",
    "side_marker",
    "horn",
    "air_conditioner",
    "neutral",
    "retarder",
    "abs",
    "heater",
    "cluth",
];

/// Names of the 0x2A IO status bits, index = bit number (bit 0 = LSB).
pub const IO_STATUS_BITS: [&str; 2] = ["deep_sleep", "sleep"];

/// One TLV extra after the basic information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationExtra {
    /// 0x01: mileage, 1/10 km.
    Mileage(u32),
    /// 0x02: fuel, 1/10 L.
    Fuel(u16),
    /// 0x03: tachograph speed, 1/10 km/h.
    RecorderSpeed(u16),
    /// 0x04: id of an alarm event needing manual confirmation.
    AlarmEventId(u16),
    /// 0x05 (defined in 2019, 30 bytes; read in every edition): tyre pressures in Pa, 0xFF = invalid.
    TyrePressure(Vec<u8>),
    /// 0x06 (defined in 2019, 2 bytes; read in every edition): carriage temperature, raw WORD; see
    /// [`LocationExtra::carriage_celsius`].
    CarriageTemperature(u16),
    /// 0x11: overspeed; the area id is present unless the location type is 0.
    Overspeed {
        /// 0 none, 1 circle, 2 rectangle, 3 polygon, 4 segment.
        location_type: u8,
        /// Area or segment id.
        area_id: Option<u32>,
    },
    /// 0x12: area or route entered/left.
    AreaRoute {
        /// Location type as in 0x11.
        location_type: u8,
        /// Area or route id.
        area_id: u32,
        /// 0 in, 1 out.
        direction: u8,
    },
    /// 0x13: route segment driving time too short or too long.
    SegmentTime {
        /// Segment id.
        segment_id: u32,
        /// Driving time in seconds.
        seconds: u16,
        /// 0 too short, 1 too long.
        result: u8,
    },
    /// 0x25: extended vehicle signals, see [`VEHICLE_SIGNAL_BITS`].
    VehicleSignals(u32),
    /// 0x2A: IO status, see [`IO_STATUS_BITS`].
    IoStatus(u16),
    /// 0x2B: analog inputs, AD0 in bits 0-15, AD1 in bits 16-31.
    Analog(u32),
    /// 0x30: wireless signal strength.
    SignalStrength(u8),
    /// 0x31: GNSS satellites in view.
    SatelliteCount(u8),
    /// Any other id, or a known id with a length the standard does not give.
    Raw {
        /// Extra id.
        id: u8,
        /// Value bytes.
        value: Vec<u8>,
    },
}

impl LocationExtra {
    /// Interprets one TLV by id and length; unknown ids and unexpected lengths stay raw. The
    /// edition does not change the reading (see the module header); it is taken so callers need
    /// not know that.
    pub fn from_wire(id: u8, value: &[u8], _edition: Edition) -> LocationExtra {
        match (id, value) {
            (0x01, &[a, b, c, d]) => LocationExtra::Mileage(u32::from_be_bytes([a, b, c, d])),
            (0x02, &[a, b]) => LocationExtra::Fuel(u16::from_be_bytes([a, b])),
            (0x03, &[a, b]) => LocationExtra::RecorderSpeed(u16::from_be_bytes([a, b])),
            (0x04, &[a, b]) => LocationExtra::AlarmEventId(u16::from_be_bytes([a, b])),
            (0x05, bytes) if bytes.len() == 30 => LocationExtra::TyrePressure(bytes.to_vec()),
            (0x06, &[a, b]) => LocationExtra::CarriageTemperature(u16::from_be_bytes([a, b])),
            (0x11, &[location_type]) => LocationExtra::Overspeed {
                location_type,
                area_id: None,
            },
            (0x11, &[location_type, a, b, c, d]) => LocationExtra::Overspeed {
                location_type,
                area_id: Some(u32::from_be_bytes([a, b, c, d])),
            },
            (0x12, &[location_type, a, b, c, d, direction]) => LocationExtra::AreaRoute {
                location_type,
                area_id: u32::from_be_bytes([a, b, c, d]),
                direction,
            },
            (0x13, &[a, b, c, d, e, f, result]) => LocationExtra::SegmentTime {
                segment_id: u32::from_be_bytes([a, b, c, d]),
                seconds: u16::from_be_bytes([e, f]),
                result,
            },
            (0x25, &[a, b, c, d]) => LocationExtra::VehicleSignals(u32::from_be_bytes([a, b, c, d])),
            (0x2A, &[a, b]) => LocationExtra::IoStatus(u16::from_be_bytes([a, b])),
            (0x2B, &[a, b, c, d]) => LocationExtra::Analog(u32::from_be_bytes([a, b, c, d])),
            (0x30, &[v]) => LocationExtra::SignalStrength(v),
            (0x31, &[v]) => LocationExtra::SatelliteCount(v),
            (id, bytes) => LocationExtra::Raw {
                id,
                value: bytes.to_vec(),
            },
        }
    }

    /// The extra's id and value bytes as they go on the wire.
    pub fn to_wire(&self) -> (u8, Vec<u8>) {
        match self {
            LocationExtra::Mileage(v) => (0x01, v.to_be_bytes().to_vec()),
            LocationExtra::Fuel(v) => (0x02, v.to_be_bytes().to_vec()),
            LocationExtra::RecorderSpeed(v) => (0x03, v.to_be_bytes().to_vec()),
            LocationExtra::AlarmEventId(v) => (0x04, v.to_be_bytes().to_vec()),
            LocationExtra::TyrePressure(v) => (0x05, v.clone()),
            LocationExtra::CarriageTemperature(v) => (0x06, v.to_be_bytes().to_vec()),
            LocationExtra::Overspeed { location_type, area_id } => {
                let mut value = vec![*location_type];
                if let Some(id) = area_id {
                    value.extend_from_slice(&id.to_be_bytes());
                }
                (0x11, value)
            }
            LocationExtra::AreaRoute {
                location_type,
                area_id,
                direction,
            } => {
                let mut value = vec![*location_type];
                value.extend_from_slice(&area_id.to_be_bytes());
                value.push(*direction);
                (0x12, value)
            }
            LocationExtra::SegmentTime {
                segment_id,
                seconds,
                result,
            } => {
                let mut value = segment_id.to_be_bytes().to_vec();
                value.extend_from_slice(&seconds.to_be_bytes());
                value.push(*result);
                (0x13, value)
            }
            LocationExtra::VehicleSignals(v) => (0x25, v.to_be_bytes().to_vec()),
            LocationExtra::IoStatus(v) => (0x2A, v.to_be_bytes().to_vec()),
            LocationExtra::Analog(v) => (0x2B, v.to_be_bytes().to_vec()),
            LocationExtra::SignalStrength(v) => (0x30, vec![*v]),
            LocationExtra::SatelliteCount(v) => (0x31, vec![*v]),
            LocationExtra::Raw { id, value } => (*id, value.clone()),
        }
    }

    /// The length of the value bytes [`LocationExtra::to_wire`] gives, without building them.
    pub fn value_len(&self) -> usize {
        match self {
            LocationExtra::Mileage(_) | LocationExtra::VehicleSignals(_) | LocationExtra::Analog(_) => 4,
            LocationExtra::Fuel(_)
            | LocationExtra::RecorderSpeed(_)
            | LocationExtra::AlarmEventId(_)
            | LocationExtra::CarriageTemperature(_)
            | LocationExtra::IoStatus(_) => 2,
            LocationExtra::TyrePressure(value) | LocationExtra::Raw { value, .. } => value.len(),
            LocationExtra::Overspeed { area_id, .. } => 1 + if area_id.is_some() { 4 } else { 0 },
            LocationExtra::AreaRoute { .. } => 6,
            LocationExtra::SegmentTime { .. } => 7,
            LocationExtra::SignalStrength(_) | LocationExtra::SatelliteCount(_) => 1,
        }
    }

    /// Carriage temperature in °C for a 0x06 extra, read as the 2019 text says: the top bit is
    /// the sign and the rest the magnitude (EMQX reads two's complement instead; see the report).
    pub fn carriage_celsius(&self) -> Option<i32> {
        match self {
            LocationExtra::CarriageTemperature(raw) => {
                let magnitude = i32::from(raw & 0x7FFF);
                Some(if raw & 0x8000 != 0 { -magnitude } else { magnitude })
            }
            _ => None,
        }
    }
}

/// A location report body (0x0200, and the location inside 0x0201/0x0500/0x0704).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// Basic information.
    pub basic: LocationBasic,
    /// Extras in wire order (ids may repeat).
    pub extras: Vec<LocationExtra>,
    /// Bytes after the last whole extra (a TLV whose length runs past the body). Kept so the
    /// report is not lost and re-encodes byte for byte.
    pub trailing: Vec<u8>,
}

impl Location {
    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        let basic = LocationBasic::decode(r)?;
        let mut rest = r.rest();
        let mut extras = Vec::new();
        while let [id, len, tail @ ..] = rest {
            let Some((value, after)) = tail.split_at_checked(usize::from(*len)) else {
                break;
            };
            extras.push(LocationExtra::from_wire(*id, value, edition));
            rest = after;
        }
        Ok(Location {
            basic,
            extras,
            trailing: rest.to_vec(),
        })
    }

    /// The length [`Location::encode`] writes (and the same error when it cannot).
    pub(crate) fn encoded_len(&self) -> Result<usize, EncodeError> {
        let mut len = LOCATION_BASIC_LEN + self.trailing.len();
        for extra in &self.extras {
            let value = extra.value_len();
            if value > usize::from(u8::MAX) {
                return Err(EncodeError::FieldTooLong {
                    field: "location extra",
                    len: value,
                    max: usize::from(u8::MAX),
                });
            }
            len += 2 + value;
        }
        Ok(len)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.basic.encode(out);
        for extra in &self.extras {
            let (id, value) = extra.to_wire();
            let len = u8::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong {
                field: "location extra",
                len: value.len(),
                max: usize::from(u8::MAX),
            })?;
            out.push(id);
            out.push(len);
            out.extend_from_slice(&value);
        }
        out.extend_from_slice(&self.trailing);
        Ok(())
    }
}

/// 0x0201 (answer to 0x8201) and 0x0500 (answer to 0x8500): the serial answered plus a location.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocationReply {
    /// Serial of the platform message answered.
    pub reply_serial: u16,
    /// The location.
    pub location: Location,
}

impl LocationReply {
    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        Ok(LocationReply {
            reply_serial: r.u16("reply serial")?,
            location: Location::decode(r, edition)?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.reply_serial.to_be_bytes());
        self.location.encode(out)
    }
}

/// 0x0704 batch upload: WORD count, BYTE type, then `len WORD + location body` per item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchLocation {
    /// 0 normal batch, 1 blind-area re-send.
    pub location_type: u8,
    /// The reports.
    pub items: Vec<Location>,
}

impl BatchLocation {
    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        let count = usize::from(r.u16("item count")?);
        let location_type = r.u8("location type")?;
        // Each item is at least its WORD length plus the 28-byte basic information.
        r.check_count("item count", count, 2 + LOCATION_BASIC_LEN)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u16("item length")?);
            let bytes = r.take(len, "location item")?;
            let mut item = Reader::new(bytes, r.msg_id());
            items.push(Location::decode(&mut item, edition)?);
        }
        Ok(BatchLocation { location_type, items })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&count_u16("location items", self.items.len())?.to_be_bytes());
        out.push(self.location_type);
        for item in &self.items {
            let mut body = Vec::new();
            item.encode(&mut body)?;
            let len = u16::try_from(body.len()).map_err(|_| EncodeError::FieldTooLong {
                field: "location item",
                len: body.len(),
                max: usize::from(u16::MAX),
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&body);
        }
        Ok(())
    }
}
