//! Data units of the link-management commands: vehicle login (both editions), logout,
//! platform login/logout, activation and activation response (2025), key exchange (2025),
//! the vehicle signature block, and the platform's reply data unit.
//!
//! Owns: the byte layouts of facts sheet §2.1 and §3 (login, 0x09, 0x0A, 0x0B) and their EMQX
//! JSON (§4.2).
//! Must not: interpret the signature or key material (that is the security layer's job).

use bytes::BufMut;
use serde_json::{Map, Value};

use super::error::{BodyError, EncodeError};
use super::json::{hex_upper, text_value, write_hex_upper, write_text};
use super::types::Time;
use super::wire::{put_word_prefixed, wire_record, Reader, TextToEnd, WireField};
use crate::protocol::json::JsonWriter;

wire_record! {
    /// 2016 vehicle login (0x01, table 6). `codes` is everything after the code length: the
    /// standard says `subsystem_count × code_len` bytes, and EMQX publishes the whole rest as
    /// `Id`, so extra bytes are kept rather than rejected.
    pub struct Login2016 {
        /// Collection time.
        time: Time => "Time",
        /// Login serial number (1–65531, counts up daily).
        serial: u16 => "Seq",
        /// SIM ICCID, 20-byte STRING.
        iccid: [u8; 20] => "ICCID",
        /// RESS subsystem count n (0–250).
        subsystem_count: u8 => "Num",
        /// RESS code length m (0–50; 0 = codes not uploaded).
        code_len: u8 => "Length",
        /// The n × m code bytes (to the end of the data unit).
        codes: TextToEnd => "Id",
    }
}

/// Length of one 2025 battery-pack code (GB/T 34014).
pub const PACK_CODE_LEN: usize = 24;

/// 2025 vehicle login (0x01): BMS count n, n pack counts, then all 24-byte pack codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login2025 {
    /// Collection time.
    pub time: Time,
    /// Login serial number.
    pub serial: u16,
    /// SIM ICCID, 20-byte STRING.
    pub iccid: [u8; 20],
    /// Per BMS, its battery-pack codes (the count bytes are the lengths of these lists).
    pub bms_pack_codes: Vec<Vec<[u8; PACK_CODE_LEN]>>,
}

impl Login2025 {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let time = Time::read(r)?;
        let serial = r.u16()?;
        let iccid = r.array()?;
        let bms_count = r.u8()?;
        let pack_counts = r.take(usize::from(bms_count))?.to_vec();
        let mut bms_pack_codes = Vec::with_capacity(pack_counts.len());
        for pack_count in pack_counts {
            let pack_count = usize::from(pack_count);
            let mut codes = Vec::with_capacity(pack_count.min(r.remaining() / PACK_CODE_LEN));
            for _ in 0..pack_count {
                codes.push(r.array()?);
            }
            bms_pack_codes.push(codes);
        }
        r.finish()?;
        Ok(Self {
            time,
            serial,
            iccid,
            bms_pack_codes,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.time.write(out);
        out.put_u16(self.serial);
        out.extend_from_slice(&self.iccid);
        out.put_u8(count_u8("BMS list", self.bms_pack_codes.len())?);
        for codes in &self.bms_pack_codes {
            out.put_u8(count_u8("battery-pack list", codes.len())?);
        }
        for code in self.bms_pack_codes.iter().flatten() {
            out.extend_from_slice(code);
        }
        Ok(())
    }

    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("Time".to_owned(), self.time.to_json());
        map.insert("Seq".to_owned(), Value::from(self.serial));
        map.insert("ICCID".to_owned(), text_value(&self.iccid));
        map.insert("BmsNum".to_owned(), Value::from(self.bms_pack_codes.len()));
        map.insert(
            "BatteryPackCounts".to_owned(),
            self.bms_pack_codes.iter().map(Vec::len).collect(),
        );
        map.insert(
            "BatteryPackEncodings".to_owned(),
            self.bms_pack_codes
                .iter()
                .map(|codes| codes.iter().map(|code| text_value(code)).collect::<Value>())
                .collect(),
        );
    }

    /// EMQX keys: `BatteryPackCounts, BatteryPackEncodings, BmsNum, ICCID, Seq, Time`.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.key("BatteryPackCounts");
        w.begin_array();
        for codes in &self.bms_pack_codes {
            w.u64(codes.len() as u64);
        }
        w.end_array();
        w.key("BatteryPackEncodings");
        w.begin_array();
        for codes in &self.bms_pack_codes {
            w.begin_array();
            for code in codes {
                write_text(w, code);
            }
            w.end_array();
        }
        w.end_array();
        w.member_u64("BmsNum", self.bms_pack_codes.len() as u64);
        w.key("ICCID");
        write_text(w, &self.iccid);
        w.member_u64("Seq", self.serial);
        w.key("Time");
        self.time.write_json(w);
    }
}

fn count_u8(what: &'static str, len: usize) -> Result<u8, EncodeError> {
    u8::try_from(len).map_err(|_| EncodeError::CountOverflow {
        what,
        len,
        max: usize::from(u8::MAX),
    })
}

wire_record! {
    /// Vehicle logout (0x04, table 20) and platform logout (0x06).
    pub struct Logout {
        /// Logout time.
        time: Time => "Time",
        /// Serial number (equal to the login serial).
        serial: u16 => "Seq",
    }
}

wire_record! {
    /// Platform login (0x05, table 21), 41 bytes.
    pub struct PlatformLogin {
        /// Login time.
        time: Time => "Time",
        /// Login serial number.
        serial: u16 => "Seq",
        /// User name, 12-byte STRING (may be GB 18030).
        username: [u8; 12] => "Username",
        /// Password, 20-byte STRING.
        password: [u8; 20] => "Password",
        /// Encryption rule (same codes as the frame's encryption byte).
        encryption: u8 => "Encrypt",
    }
}

wire_record! {
    /// Activation response (0x0A, 2025), platform to terminal.
    pub struct ActivationResponse {
        /// 1 activated, 2 failed.
        status: u8 => "Status",
        /// 0 ok, 1 chip already activated, 2 VIN duplicate.
        info: u8 => "Info",
    }
}

/// Vehicle signature (2025, table 8): type, then R and S each with a WORD length. In real-time
/// data it follows the 0xFF marker; in the activation message it has no marker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    /// 1 SM2, 2 RSA, 3 ECC.
    pub signature_type: u8,
    /// R value.
    pub r: Vec<u8>,
    /// S value.
    pub s: Vec<u8>,
}

impl Signature {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(Self {
            signature_type: r.u8()?,
            r: r.word_prefixed()?,
            s: r.word_prefixed()?,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.put_u8(self.signature_type);
        put_word_prefixed(out, "signature R", &self.r)?;
        put_word_prefixed(out, "signature S", &self.s)
    }

    /// EMQX keys: `SignatureType, RLength, RValue, SLength, SValue` (values uppercase hex).
    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("Type".to_owned(), Value::from("Signature"));
        map.insert("SignatureType".to_owned(), Value::from(self.signature_type));
        map.insert("RLength".to_owned(), Value::from(self.r.len()));
        map.insert("RValue".to_owned(), Value::from(hex_upper(&self.r)));
        map.insert("SLength".to_owned(), Value::from(self.s.len()));
        map.insert("SValue".to_owned(), Value::from(hex_upper(&self.s)));
    }

    /// The members but `"Type"` (the caller places it: `"Signature"`), in key order.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.member_u64("RLength", self.r.len() as u64);
        w.key("RValue");
        write_hex_upper(w, &self.r);
        w.member_u64("SLength", self.s.len() as u64);
        w.key("SValue");
        write_hex_upper(w, &self.s);
        w.member_u64("SignatureType", self.signature_type);
    }
}

/// Activation (0x09, 2025): time, chip id, public key, VIN, signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// Activation time.
    pub time: Time,
    /// Security chip id, 16-byte STRING (space padded).
    pub chip_id: [u8; 16],
    /// Public key (WORD length on the wire).
    pub public_key: Vec<u8>,
    /// VIN, 17-byte STRING.
    pub vin: [u8; 17],
    /// Signature over the message.
    pub signature: Signature,
}

impl Activation {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let activation = Self {
            time: Time::read(r)?,
            chip_id: r.array()?,
            public_key: r.word_prefixed()?,
            vin: r.array()?,
            signature: Signature::read(r)?,
        };
        r.finish()?;
        Ok(activation)
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.time.write(out);
        out.extend_from_slice(&self.chip_id);
        put_word_prefixed(out, "public key", &self.public_key)?;
        out.extend_from_slice(&self.vin);
        self.signature.write(out)
    }

    /// EMQX keys: `Time, ChipID, PubKeyLen, PubKey (hex), VIN, Signature{…}`.
    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("Time".to_owned(), self.time.to_json());
        map.insert("ChipID".to_owned(), text_value(&self.chip_id));
        map.insert("PubKeyLen".to_owned(), Value::from(self.public_key.len()));
        map.insert("PubKey".to_owned(), Value::from(hex_upper(&self.public_key)));
        map.insert("VIN".to_owned(), text_value(&self.vin));
        let mut signature = Map::new();
        self.signature.json_into(&mut signature);
        map.insert("Signature".to_owned(), Value::Object(signature));
    }

    /// EMQX keys in key order: `ChipID, PubKey, PubKeyLen, Signature{…}, Time, VIN`.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.key("ChipID");
        write_text(w, &self.chip_id);
        w.key("PubKey");
        write_hex_upper(w, &self.public_key);
        w.member_u64("PubKeyLen", self.public_key.len() as u64);
        w.key("Signature");
        w.begin_object();
        w.defer_member_str("Type", "Signature");
        self.signature.write_json_members(w);
        w.end_object();
        w.key("Time");
        self.time.write_json(w);
        w.key("VIN");
        write_text(w, &self.vin);
    }
}

/// Data-unit key exchange (0x0B, 2025, table 31). No leading collection time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchange {
    /// 2 RSA, 3 AES, 4 SM2, 5 SM4 (other values kept raw).
    pub key_type: u8,
    /// Key material (WORD length on the wire).
    pub key: Vec<u8>,
    /// When the key becomes active.
    pub active_time: Time,
    /// When the key expires.
    pub expire_time: Time,
}

impl KeyExchange {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let exchange = Self {
            key_type: r.u8()?,
            key: r.word_prefixed()?,
            active_time: Time::read(r)?,
            expire_time: Time::read(r)?,
        };
        r.finish()?;
        Ok(exchange)
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.put_u8(self.key_type);
        put_word_prefixed(out, "key", &self.key)?;
        self.active_time.write(out);
        self.expire_time.write(out);
        Ok(())
    }

    /// EMQX keys: `KeyType, KeyLength, Key (hex), ActiveTime, ExpireTime`.
    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("KeyType".to_owned(), Value::from(self.key_type));
        map.insert("KeyLength".to_owned(), Value::from(self.key.len()));
        map.insert("Key".to_owned(), Value::from(hex_upper(&self.key)));
        map.insert("ActiveTime".to_owned(), self.active_time.to_json());
        map.insert("ExpireTime".to_owned(), self.expire_time.to_json());
    }

    /// EMQX keys in key order: `ActiveTime, ExpireTime, Key, KeyLength, KeyType`.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.key("ActiveTime");
        self.active_time.write_json(w);
        w.key("ExpireTime");
        self.expire_time.write_json(w);
        w.key("Key");
        write_hex_upper(w, &self.key);
        w.member_u64("KeyLength", self.key.len() as u64);
        w.member_u64("KeyType", self.key_type);
    }
}

/// The data unit of a platform reply to a terminal command (login, real-time, heartbeat, ...).
///
/// The sources disagree on its content (facts sheet §7.1), so it is kept as it comes: empty
/// (standard heartbeat reply), a time only (2016 main body and 2025: original time kept, rest
/// deleted; EMQX heartbeat/time-sync reply: gateway time), or a time followed by the echoed rest
/// of the command's data unit (2016 Annex B.3.3.2; EMQX login reply).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// The time, absent for an empty data unit.
    pub time: Option<Time>,
    /// Bytes after the time, echoed from the command.
    pub echo: Vec<u8>,
}

impl Ack {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        if r.is_empty() {
            return Ok(Self::default());
        }
        Ok(Self {
            time: Some(Time::read(r)?),
            echo: r.rest().to_vec(),
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        if let Some(time) = self.time {
            time.write(out);
        }
        out.extend_from_slice(&self.echo);
    }

    /// `{"Time"?, "Echo"?: "<HEX>"}` (EMQX publishes no platform replies; this shape is ours).
    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        if let Some(time) = self.time {
            map.insert("Time".to_owned(), time.to_json());
        }
        if !self.echo.is_empty() {
            map.insert("Echo".to_owned(), Value::from(hex_upper(&self.echo)));
        }
    }

    /// `Echo?, Time?` in key order.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        if !self.echo.is_empty() {
            w.key("Echo");
            write_hex_upper(w, &self.echo);
        }
        if let Some(time) = self.time {
            w.key("Time");
            time.write_json(w);
        }
    }
}
