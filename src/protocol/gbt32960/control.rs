//! Terminal control (0x82): time, one command id, and its parameters, including the remote
//! upgrade string in both published layouts.
//!
//! Owns: the control command ids (Annex B tables B.14–B.17), the alarm parameter, and the
//! upgrade string. Its field order is an open question (facts sheet §2.4, §7.2):
//! * B.16 / EMQX ("binary"): `APN;user;pwd;<6-byte address>;<port W>;manufacturer;hw;fw;URL;<timeout W>`
//! * B.15 / JTNE ("text"): `URL;APN;user;pwd;address;port;manufacturer;hw;fw;timeout`, all ASCII.
//!
//! Both are decoded; the binary layout is tried first, by position rather than by splitting on
//! `;`, because its address, port and timeout bytes may themselves be 0x3B. The encoder writes
//! what it is given; downlinks built from JSON use the B.16 layout.
//! Must not: fail a frame because an upgrade string matches neither layout (it is kept raw).

use bytes::BufMut;
use serde_json::{Map, Value};

use super::error::{BodyError, EncodeError};
use super::json::{decode_text, hex_upper, text_value, write_hex_upper, write_text};
use super::types::Time;
use super::wire::{Reader, WireField};
use crate::protocol::json::JsonWriter;

/// 0x01 remote upgrade.
pub const REMOTE_UPGRADE: u8 = 0x01;
/// 0x02 shut down the terminal.
pub const SHUTDOWN: u8 = 0x02;
/// 0x03 reset the terminal.
pub const RESET: u8 = 0x03;
/// 0x04 factory reset.
pub const FACTORY_RESET: u8 = 0x04;
/// 0x05 disconnect the data link.
pub const DISCONNECT_LINK: u8 = 0x05;
/// 0x06 alarm / warning.
pub const ALARM: u8 = 0x06;
/// 0x07 open the sampling-inspection link.
pub const OPEN_INSPECTION_LINK: u8 = 0x07;

/// Terminal control message (0x82): the command from the platform, or the terminal's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalControl {
    /// Time of the message.
    pub time: Time,
    /// Control command id (see the constants in this module).
    pub command: u8,
    /// Its parameters.
    pub param: ControlParam,
}

/// Parameters of a control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlParam {
    /// No parameter bytes.
    None,
    /// 0x01 remote-upgrade string (boxed: it is far larger than the other variants).
    Upgrade(Box<Upgrade>),
    /// 0x06 alarm: level and message.
    Alarm(ControlAlarm),
    /// Parameter bytes of any other command, or an upgrade string matching neither layout
    /// (never empty: an empty parameter decodes as `None`).
    Raw(Vec<u8>),
}

/// 0x06 alarm parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlAlarm {
    /// 0 none, 1–3 (2025: 4 = highest), 0xFF invalid.
    pub level: u8,
    /// Message text (raw bytes).
    pub message: Vec<u8>,
}

/// The remote-upgrade string in one of its two layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Annex B.16 order with binary address/port/timeout (EMQX; what this codec sends).
    Binary(UpgradeB16),
    /// Annex B.15 order, every field ASCII text (JTNE).
    Text(UpgradeB15),
}

/// B.16 layout. Empty text and `None` mean "value absent" (an empty field between `;`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpgradeB16 {
    /// Dial-up APN.
    pub apn: Vec<u8>,
    /// Dial-up user name.
    pub user: Vec<u8>,
    /// Dial-up password.
    pub password: Vec<u8>,
    /// Server address, 6 bytes (IPv4: two zero bytes then the address).
    pub address: Option<[u8; 6]>,
    /// Server port.
    pub port: Option<u16>,
    /// Manufacturer id (4-byte STRING).
    pub manufacturer: Vec<u8>,
    /// Hardware version (5-byte STRING).
    pub hardware_version: Vec<u8>,
    /// Firmware version (5-byte STRING).
    pub firmware_version: Vec<u8>,
    /// Upgrade URL.
    pub url: Vec<u8>,
    /// Connection time limit, minutes.
    pub timeout_minutes: Option<u16>,
}

/// B.15 layout: ten ASCII fields, URL first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpgradeB15 {
    /// Upgrade URL.
    pub url: Vec<u8>,
    /// Dial-up APN.
    pub apn: Vec<u8>,
    /// Dial-up user name.
    pub user: Vec<u8>,
    /// Dial-up password.
    pub password: Vec<u8>,
    /// Server address (text).
    pub address: Vec<u8>,
    /// Server port (decimal text).
    pub port: Vec<u8>,
    /// Manufacturer id.
    pub manufacturer: Vec<u8>,
    /// Hardware version.
    pub hardware_version: Vec<u8>,
    /// Firmware version.
    pub firmware_version: Vec<u8>,
    /// Connection time limit (decimal text, minutes).
    pub timeout: Vec<u8>,
}

/// What one `;`-separated field of the upgrade string holds.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Text up to the next `;` (the whole rest when it is the last field).
    Text,
    /// Exactly this many binary bytes, or nothing when the value is absent.
    Binary(usize),
}

/// The B.16 fields in wire order.
const B16_SLOTS: [Slot; 10] = [
    Slot::Text,      // APN
    Slot::Text,      // user
    Slot::Text,      // password
    Slot::Binary(6), // address
    Slot::Binary(2), // port
    Slot::Text,      // manufacturer
    Slot::Text,      // hardware version
    Slot::Text,      // firmware version
    Slot::Text,      // URL
    Slot::Binary(2), // timeout
];

const SEPARATOR: u8 = b';';

/// Splits `bytes` into one value per slot, trying "present" before "absent" for binary slots
/// and backtracking. At most 2³ paths, so it stays cheap on hostile input.
fn split_slots<'a>(bytes: &'a [u8], slots: &[Slot], out: &mut Vec<&'a [u8]>) -> bool {
    let Some((slot, later)) = slots.split_first() else {
        return bytes.is_empty();
    };
    let is_last = later.is_empty();
    let candidates = match slot {
        Slot::Text if is_last => [Some(bytes.len()), None],
        Slot::Text => [bytes.iter().position(|b| *b == SEPARATOR), None],
        Slot::Binary(len) => [Some(*len), Some(0)],
    };
    for len in candidates.into_iter().flatten() {
        let (Some(value), Some(rest)) = (bytes.get(..len), bytes.get(len..)) else {
            continue;
        };
        let after = if is_last {
            rest.is_empty().then_some(rest)
        } else {
            rest.strip_prefix(&[SEPARATOR])
        };
        let Some(after) = after else {
            continue;
        };
        out.push(value);
        if split_slots(after, later, out) {
            return true;
        }
        out.pop();
    }
    false
}

fn optional_array<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

impl UpgradeB16 {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let mut fields = Vec::with_capacity(B16_SLOTS.len());
        if !split_slots(bytes, &B16_SLOTS, &mut fields) {
            return None;
        }
        let [apn, user, password, address, port, manufacturer, hardware_version, firmware_version, url, timeout] =
            <[&[u8]; 10]>::try_from(fields).ok()?;
        Some(Self {
            apn: apn.to_vec(),
            user: user.to_vec(),
            password: password.to_vec(),
            address: optional_array(address),
            port: optional_array(port).map(u16::from_be_bytes),
            manufacturer: manufacturer.to_vec(),
            hardware_version: hardware_version.to_vec(),
            firmware_version: firmware_version.to_vec(),
            url: url.to_vec(),
            timeout_minutes: optional_array(timeout).map(u16::from_be_bytes),
        })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let port = self.port.map(u16::to_be_bytes);
        let timeout = self.timeout_minutes.map(u16::to_be_bytes);
        let fields: [(&'static str, &[u8], bool); 10] = [
            ("APN", &self.apn, true),
            ("user", &self.user, true),
            ("password", &self.password, true),
            ("address", self.address.as_ref().map_or(&[][..], |a| a), false),
            ("port", port.as_ref().map_or(&[][..], |p| p), false),
            ("manufacturer", &self.manufacturer, true),
            ("hardware version", &self.hardware_version, true),
            ("firmware version", &self.firmware_version, true),
            ("URL", &self.url, true),
            ("timeout", timeout.as_ref().map_or(&[][..], |t| t), false),
        ];
        join_fields(out, &fields)
    }

    fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("DialingName".to_owned(), text_value(&self.apn));
        map.insert("Username".to_owned(), text_value(&self.user));
        map.insert("Password".to_owned(), text_value(&self.password));
        if let Some(address) = self.address {
            map.insert("Ip".to_owned(), Value::from(format_address(address)));
        }
        if let Some(port) = self.port {
            map.insert("Port".to_owned(), Value::from(port));
        }
        map.insert("ManufacturerId".to_owned(), text_value(&self.manufacturer));
        map.insert("HardwareVer".to_owned(), text_value(&self.hardware_version));
        map.insert("SoftwareVer".to_owned(), text_value(&self.firmware_version));
        map.insert("UpgradeUrl".to_owned(), text_value(&self.url));
        if let Some(timeout) = self.timeout_minutes {
            map.insert("Timeout".to_owned(), Value::from(timeout));
        }
    }

    /// The keys of [`UpgradeB16::json_into`], in key order.
    fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.key("DialingName");
        write_text(w, &self.apn);
        w.key("HardwareVer");
        write_text(w, &self.hardware_version);
        if let Some(address) = self.address {
            w.member_str("Ip", &format_address(address));
        }
        w.key("ManufacturerId");
        write_text(w, &self.manufacturer);
        w.key("Password");
        write_text(w, &self.password);
        if let Some(port) = self.port {
            w.member_u64("Port", port);
        }
        w.key("SoftwareVer");
        write_text(w, &self.firmware_version);
        if let Some(timeout) = self.timeout_minutes {
            w.member_u64("Timeout", timeout);
        }
        w.key("UpgradeUrl");
        write_text(w, &self.url);
        w.key("Username");
        write_text(w, &self.user);
    }
}

impl UpgradeB15 {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let fields: Vec<&[u8]> = bytes.split(|b| *b == SEPARATOR).collect();
        let [url, apn, user, password, address, port, manufacturer, hardware_version, firmware_version, timeout] =
            <[&[u8]; 10]>::try_from(fields).ok()?;
        Some(Self {
            url: url.to_vec(),
            apn: apn.to_vec(),
            user: user.to_vec(),
            password: password.to_vec(),
            address: address.to_vec(),
            port: port.to_vec(),
            manufacturer: manufacturer.to_vec(),
            hardware_version: hardware_version.to_vec(),
            firmware_version: firmware_version.to_vec(),
            timeout: timeout.to_vec(),
        })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let fields: [(&'static str, &[u8], bool); 10] = [
            ("URL", &self.url, true),
            ("APN", &self.apn, true),
            ("user", &self.user, true),
            ("password", &self.password, true),
            ("address", &self.address, true),
            ("port", &self.port, true),
            ("manufacturer", &self.manufacturer, true),
            ("hardware version", &self.hardware_version, true),
            ("firmware version", &self.firmware_version, true),
            ("timeout", &self.timeout, true),
        ];
        join_fields(out, &fields)
    }

    /// Same keys as the B.16 layout; port and timeout become numbers when they are plain
    /// decimal text, otherwise they stay text.
    fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("DialingName".to_owned(), text_value(&self.apn));
        map.insert("Username".to_owned(), text_value(&self.user));
        map.insert("Password".to_owned(), text_value(&self.password));
        map.insert("Ip".to_owned(), text_value(&self.address));
        map.insert("Port".to_owned(), decimal_or_text(&self.port));
        map.insert("ManufacturerId".to_owned(), text_value(&self.manufacturer));
        map.insert("HardwareVer".to_owned(), text_value(&self.hardware_version));
        map.insert("SoftwareVer".to_owned(), text_value(&self.firmware_version));
        map.insert("UpgradeUrl".to_owned(), text_value(&self.url));
        map.insert("Timeout".to_owned(), decimal_or_text(&self.timeout));
    }

    /// The keys of [`UpgradeB15::json_into`], in key order.
    fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.key("DialingName");
        write_text(w, &self.apn);
        w.key("HardwareVer");
        write_text(w, &self.hardware_version);
        w.key("Ip");
        write_text(w, &self.address);
        w.key("ManufacturerId");
        write_text(w, &self.manufacturer);
        w.key("Password");
        write_text(w, &self.password);
        w.key("Port");
        write_decimal_or_text(w, &self.port);
        w.key("SoftwareVer");
        write_text(w, &self.firmware_version);
        w.key("Timeout");
        write_decimal_or_text(w, &self.timeout);
        w.key("UpgradeUrl");
        write_text(w, &self.url);
        w.key("Username");
        write_text(w, &self.user);
    }
}

/// Joins fields with `;`. Text fields (flag `true`) must not contain `;`, or the receiver
/// would split them; binary fields are placed by position and may.
fn join_fields(out: &mut Vec<u8>, fields: &[(&'static str, &[u8], bool)]) -> Result<(), EncodeError> {
    for (index, (what, bytes, is_text)) in fields.iter().enumerate() {
        if *is_text && bytes.contains(&SEPARATOR) {
            return Err(EncodeError::SeparatorInField { what });
        }
        if index > 0 {
            out.put_u8(SEPARATOR);
        }
        out.extend_from_slice(bytes);
    }
    Ok(())
}

fn write_decimal_or_text(w: &mut JsonWriter<'_>, bytes: &[u8]) {
    let text = decode_text(bytes);
    match text.parse::<u16>() {
        Ok(number) if number.to_string() == text => w.u64(u64::from(number)),
        _ => w.str(&text),
    }
}

fn decimal_or_text(bytes: &[u8]) -> Value {
    let text = decode_text(bytes);
    match text.parse::<u16>() {
        Ok(number) if number.to_string() == text => Value::from(number),
        _ => Value::String(text),
    }
}

/// `a.b.c.d` for an IPv4 address (first two bytes zero), else all six bytes dotted.
pub fn format_address(address: [u8; 6]) -> String {
    let shown = match address {
        [0, 0, rest @ ..] => rest.to_vec(),
        all => all.to_vec(),
    };
    shown.iter().map(u8::to_string).collect::<Vec<_>>().join(".")
}

/// Parses `a.b.c.d` (IPv4, stored as `00 00 a b c d`) or six dotted decimals.
pub fn parse_address(text: &str) -> Option<[u8; 6]> {
    let parts = text
        .split('.')
        .map(|part| part.parse::<u8>().ok())
        .collect::<Option<Vec<u8>>>()?;
    match parts.as_slice() {
        [a, b, c, d] => Some([0, 0, *a, *b, *c, *d]),
        six => six.try_into().ok(),
    }
}

impl Upgrade {
    /// Decodes the upgrade string: B.16 by position first, then B.15 by splitting.
    fn parse(bytes: &[u8]) -> Option<Self> {
        UpgradeB16::parse(bytes)
            .map(Upgrade::Binary)
            .or_else(|| UpgradeB15::parse(bytes).map(Upgrade::Text))
    }
}

impl TerminalControl {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let time = Time::read(r)?;
        let command = r.u8()?;
        let bytes = r.rest();
        let param = match (command, bytes) {
            (_, []) => ControlParam::None,
            (REMOTE_UPGRADE, _) => Upgrade::parse(bytes)
                .map(Box::new)
                .map_or_else(|| ControlParam::Raw(bytes.to_vec()), ControlParam::Upgrade),
            (ALARM, [level, message @ ..]) => ControlParam::Alarm(ControlAlarm {
                level: *level,
                message: message.to_vec(),
            }),
            _ => ControlParam::Raw(bytes.to_vec()),
        };
        Ok(Self { time, command, param })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.time.write(out);
        out.put_u8(self.command);
        match &self.param {
            ControlParam::None => Ok(()),
            ControlParam::Upgrade(upgrade) => match upgrade.as_ref() {
                Upgrade::Binary(upgrade) => upgrade.write(out),
                Upgrade::Text(upgrade) => upgrade.write(out),
            },
            ControlParam::Alarm(alarm) => {
                out.put_u8(alarm.level);
                out.extend_from_slice(&alarm.message);
                Ok(())
            }
            ControlParam::Raw(bytes) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// EMQX keys: `Time, Command, Param` (`""` without parameters, a map for upgrade and
    /// alarm; other parameter bytes, which EMQX drops, as uppercase hex).
    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("Time".to_owned(), self.time.to_json());
        map.insert("Command".to_owned(), Value::from(self.command));
        let param = match &self.param {
            ControlParam::None => Value::from(""),
            ControlParam::Raw(bytes) => Value::from(hex_upper(bytes)),
            ControlParam::Alarm(alarm) => {
                let mut param = Map::new();
                param.insert("Level".to_owned(), Value::from(alarm.level));
                param.insert("Message".to_owned(), text_value(&alarm.message));
                Value::Object(param)
            }
            ControlParam::Upgrade(upgrade) => {
                let mut param = Map::new();
                match upgrade.as_ref() {
                    Upgrade::Binary(upgrade) => upgrade.json_into(&mut param),
                    Upgrade::Text(upgrade) => upgrade.json_into(&mut param),
                }
                Value::Object(param)
            }
        };
        map.insert("Param".to_owned(), param);
    }

    /// `Command, Param, Time` in key order.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.member_u64("Command", self.command);
        w.key("Param");
        match &self.param {
            ControlParam::None => w.str(""),
            ControlParam::Raw(bytes) => write_hex_upper(w, bytes),
            ControlParam::Alarm(alarm) => {
                w.begin_object();
                w.member_u64("Level", alarm.level);
                w.key("Message");
                write_text(w, &alarm.message);
                w.end_object();
            }
            ControlParam::Upgrade(upgrade) => {
                w.begin_object();
                match upgrade.as_ref() {
                    Upgrade::Binary(upgrade) => upgrade.write_json_members(w),
                    Upgrade::Text(upgrade) => upgrade.write_json_members(w),
                }
                w.end_object();
            }
        }
        w.key("Time");
        self.time.write_json(w);
    }
}
