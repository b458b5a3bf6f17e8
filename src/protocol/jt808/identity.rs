//! Terminal identity bodies: 0x0100 register, 0x8100 register reply, 0x0102 authentication,
//! 0x0107 attributes.
//!
//! Owns the edition-dependent fixed widths of these bodies and the 2011-vs-2013 register detection
//! (a 2013 register body is at least 37 bytes, a 2011 one with any real plate is shorter). Fixed
//! text fields keep their wire bytes, padding included, so odd device padding (left-padded ASCII
//! '0', leading NULs) round-trips; trimming happens only in the JSON view. Must not judge auth codes.

use super::error::{BodyError, EncodeError};
use super::header::Edition;
use super::wire::{put_fixed, put_len_u8, Reader};

/// Smallest 2013 register body (5/20/7 widths, empty plate); anything shorter is 2011.
pub const REGISTER_2013_MIN_LEN: usize = 37;

/// Fixed widths `(manufacturer, model, terminal id)` of 0x0100 per edition.
fn register_widths(edition: Edition) -> (usize, usize, usize) {
    match edition {
        Edition::V2011 => (5, 8, 7),
        Edition::V2013 => (5, 20, 7),
        Edition::V2019 => (11, 30, 30),
    }
}

/// 0x0100 terminal register.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Register {
    /// Which layout the body uses (2011 5/8/7, 2013 5/20/7, 2019 11/30/30); the session takes the
    /// connection's edition from it.
    pub edition: Edition,
    /// Province id.
    pub province: u16,
    /// City/county id.
    pub city: u16,
    /// Manufacturer id, fixed width, as on the wire.
    pub manufacturer: Vec<u8>,
    /// Terminal model, fixed width, as on the wire.
    pub model: Vec<u8>,
    /// Terminal id, fixed width, as on the wire.
    pub terminal_id: Vec<u8>,
    /// Plate colour (0 = no plate, then `plate` holds the VIN).
    pub plate_color: u8,
    /// Plate or VIN (STRING).
    pub plate: Vec<u8>,
}

impl Register {
    /// The layout a register body follows: 2019 under a 2019 header, else 2011 or 2013 by length.
    pub fn detect_edition(body_len: usize, header_edition: Edition) -> Edition {
        if header_edition == Edition::V2019 {
            Edition::V2019
        } else if body_len < REGISTER_2013_MIN_LEN {
            Edition::V2011
        } else {
            Edition::V2013
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        let (manufacturer, model, terminal_id) = register_widths(edition);
        Ok(Register {
            edition,
            province: r.u16("province")?,
            city: r.u16("city")?,
            manufacturer: r.take(manufacturer, "manufacturer")?.to_vec(),
            model: r.take(model, "terminal model")?.to_vec(),
            terminal_id: r.take(terminal_id, "terminal id")?.to_vec(),
            plate_color: r.u8("plate colour")?,
            plate: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (manufacturer, model, terminal_id) = register_widths(self.edition);
        out.extend_from_slice(&self.province.to_be_bytes());
        out.extend_from_slice(&self.city.to_be_bytes());
        put_fixed(out, &self.manufacturer, manufacturer, "manufacturer")?;
        put_fixed(out, &self.model, model, "terminal model")?;
        put_fixed(out, &self.terminal_id, terminal_id, "terminal id")?;
        out.push(self.plate_color);
        out.extend_from_slice(&self.plate);
        Ok(())
    }
}

/// Register results of 0x8100.
pub mod register_result {
    /// Registered; the auth code follows.
    pub const OK: u8 = 0;
    /// Vehicle already registered.
    pub const VEHICLE_REGISTERED: u8 = 1;
    /// Vehicle not in the database.
    pub const VEHICLE_UNKNOWN: u8 = 2;
    /// Terminal already registered.
    pub const TERMINAL_REGISTERED: u8 = 3;
    /// Terminal not in the database.
    pub const TERMINAL_UNKNOWN: u8 = 4;
}

/// 0x8100 register reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegisterReply {
    /// Serial of the 0x0100 answered.
    pub reply_serial: u16,
    /// See [`register_result`].
    pub result: u8,
    /// Auth code (STRING); sent only on success, empty otherwise.
    pub auth_code: Vec<u8>,
}

impl RegisterReply {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(RegisterReply {
            reply_serial: r.u16("reply serial")?,
            result: r.u8("result")?,
            auth_code: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.reply_serial.to_be_bytes());
        out.push(self.result);
        out.extend_from_slice(&self.auth_code);
    }
}

/// Width of the 2019 IMEI field.
pub const IMEI_LEN: usize = 15;
/// Width of the 2019 software version field.
pub const SOFTWARE_VERSION_LEN: usize = 20;

/// The fields 2019 adds to 0x0102.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthExtension2019 {
    /// IMEI, BYTE\[15\].
    pub imei: Vec<u8>,
    /// Software version, BYTE\[20\], 0x00-padded.
    pub software_version: Vec<u8>,
}

/// 0x0102 authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authenticate {
    /// Auth code bytes (2011/2013: the whole body; 2019: length-prefixed).
    pub code: Vec<u8>,
    /// 2019 layout fields; `None` for 2011/2013.
    pub extension: Option<AuthExtension2019>,
}

impl Authenticate {
    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        if edition != Edition::V2019 {
            return Ok(Authenticate {
                code: r.rest().to_vec(),
                extension: None,
            });
        }
        let len = usize::from(r.u8("auth code length")?);
        Ok(Authenticate {
            code: r.take(len, "auth code")?.to_vec(),
            extension: Some(AuthExtension2019 {
                imei: r.take(IMEI_LEN, "IMEI")?.to_vec(),
                software_version: r.take(SOFTWARE_VERSION_LEN, "software version")?.to_vec(),
            }),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match &self.extension {
            None => out.extend_from_slice(&self.code),
            Some(ext) => {
                put_len_u8(out, &self.code, "auth code")?;
                put_fixed(out, &ext.imei, IMEI_LEN, "IMEI")?;
                put_fixed(out, &ext.software_version, SOFTWARE_VERSION_LEN, "software version")?;
            }
        }
        Ok(())
    }
}

/// Fixed widths `(model, terminal id)` of 0x0107 per edition; the manufacturer stays 5 bytes in
/// 2019 (YZ, EMQX and SmallChi's reading of the 2019 PDF).
fn attribute_widths(edition: Edition) -> (usize, usize) {
    match edition {
        Edition::V2019 => (30, 30),
        Edition::V2011 | Edition::V2013 => (20, 7),
    }
}

/// Width of the manufacturer id in 0x0107 and 0x8108.
pub const MANUFACTURER_LEN: usize = 5;

/// 0x0107 terminal attributes (answer to 0x8107).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Layout: 2019 widens model and id to 30 bytes.
    pub edition: Edition,
    /// Terminal type bit field.
    pub terminal_type: u16,
    /// Manufacturer id, BYTE\[5\].
    pub manufacturer: Vec<u8>,
    /// Terminal model, fixed width.
    pub model: Vec<u8>,
    /// Terminal id, fixed width.
    pub terminal_id: Vec<u8>,
    /// SIM ICCID, BCD\[10\] (may hold hex letters; rendered nibble by nibble).
    pub iccid: [u8; 10],
    /// Hardware version (length-prefixed STRING).
    pub hardware_version: Vec<u8>,
    /// Firmware version (length-prefixed STRING).
    pub firmware_version: Vec<u8>,
    /// GNSS module attributes.
    pub gnss: u8,
    /// Communication module attributes.
    pub comm: u8,
}

impl Attributes {
    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        // 0x0107 first appears in 2013; a 2011 connection gets the 2013 layout.
        let edition = if edition == Edition::V2019 {
            Edition::V2019
        } else {
            Edition::V2013
        };
        let (model, terminal_id) = attribute_widths(edition);
        let terminal_type = r.u16("terminal type")?;
        let manufacturer = r.take(MANUFACTURER_LEN, "manufacturer")?.to_vec();
        let model = r.take(model, "terminal model")?.to_vec();
        let terminal_id = r.take(terminal_id, "terminal id")?.to_vec();
        let iccid = r.array("ICCID")?;
        let hw_len = usize::from(r.u8("hardware version length")?);
        let hardware_version = r.take(hw_len, "hardware version")?.to_vec();
        let fw_len = usize::from(r.u8("firmware version length")?);
        let firmware_version = r.take(fw_len, "firmware version")?.to_vec();
        Ok(Attributes {
            edition,
            terminal_type,
            manufacturer,
            model,
            terminal_id,
            iccid,
            hardware_version,
            firmware_version,
            gnss: r.u8("GNSS attributes")?,
            comm: r.u8("communication attributes")?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (model, terminal_id) = attribute_widths(self.edition);
        out.extend_from_slice(&self.terminal_type.to_be_bytes());
        put_fixed(out, &self.manufacturer, MANUFACTURER_LEN, "manufacturer")?;
        put_fixed(out, &self.model, model, "terminal model")?;
        put_fixed(out, &self.terminal_id, terminal_id, "terminal id")?;
        out.extend_from_slice(&self.iccid);
        put_len_u8(out, &self.hardware_version, "hardware version")?;
        put_len_u8(out, &self.firmware_version, "firmware version")?;
        out.push(self.gnss);
        out.push(self.comm);
        Ok(())
    }
}
