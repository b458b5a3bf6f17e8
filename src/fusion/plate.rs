//! Plates: the printed plate a GB/T 37987 tag carries (issuing authority + plate characters), and
//! the normal form of plates, VINs, phones and TIDs as the registry stores them.
//!
//! Tag facts (shared/protocols/gbt37987.md §4, item 1002 FPDH and 1009 HPHMXH): FPDH is the
//! issuing authority, byte 0 the province index and byte 1 the authority letter (0–25 = A–Z);
//! HPHMXH is the plate characters, codes 0–25 = A–Z and 26–35 = 0–9. The province index table is
//! data ([`PROVINCES`], from the SFDH table of the S1 implementation's lookup file).
//! Must not: do I/O; it is used by the pure engine.

/// Province abbreviations by the tag's province index (FPDH byte 0).
pub const PROVINCES: &[(u8, &str)] = &[
    (1, "京"),
    (2, "津"),
    (3, "冀"),
    (4, "晋"),
    (5, "蒙"),
    (6, "辽"),
    (7, "吉"),
    (8, "黑"),
    (9, "沪"),
    (10, "苏"),
    (11, "浙"),
    (12, "皖"),
    (13, "闽"),
    (14, "赣"),
    (15, "鲁"),
    (16, "豫"),
    (17, "鄂"),
    (18, "湘"),
    (19, "粤"),
    (20, "桂"),
    (21, "琼"),
    (22, "渝"),
    (23, "川"),
    (24, "贵"),
    (25, "云"),
    (26, "藏"),
    (27, "陕"),
    (28, "甘"),
    (29, "青"),
    (30, "宁"),
    (31, "新"),
    (32, "港"),
    (33, "澳"),
    (34, "台"),
];

/// Why a tag's plate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagPlateError {
    #[error("the tag carries no plate characters (HPHMXH)")]
    Missing,
    #[error("plate character code {0} is outside 0..35")]
    CharacterOutOfRange(u8),
    #[error("{0} plate characters (a plate has 5 or 6 after the authority)")]
    Length(usize),
    #[error("issuing authority {0} is not a province index and letter")]
    Authority(String),
}

/// Index of `province` (e.g. "京") in [`PROVINCES`].
pub fn province_index(province: &str) -> Option<u8> {
    PROVINCES.iter().find(|(_, p)| *p == province).map(|(i, _)| *i)
}

/// The plate as printed (`粤B01AAB`) from the tag's FPDH and HPHMXH bytes. Without an issuing
/// authority the plate characters alone are returned (some tags leave FPDH out).
pub fn tag_plate(authority: Option<&[u8]>, characters: Option<&[u8]>) -> Result<String, TagPlateError> {
    let characters = characters.filter(|c| !c.is_empty()).ok_or(TagPlateError::Missing)?;
    let mut text = String::with_capacity(characters.len() + 4);
    if let Some(authority) = authority {
        let [province, letter] = authority else {
            return Err(TagPlateError::Authority(hex(authority)));
        };
        let province = PROVINCES
            .iter()
            .find(|(i, _)| i == province)
            .map(|(_, p)| *p)
            .ok_or_else(|| TagPlateError::Authority(hex(authority)))?;
        if *letter > 25 {
            return Err(TagPlateError::Authority(hex(authority)));
        }
        text.push_str(province);
        text.push(char::from(b'A' + letter));
    }
    if !(5..=6).contains(&characters.len()) {
        return Err(TagPlateError::Length(characters.len()));
    }
    for &code in characters {
        text.push(match code {
            0..=25 => char::from(b'A' + code),
            26..=35 => char::from(b'0' + (code - 26)),
            _ => return Err(TagPlateError::CharacterOutOfRange(code)),
        });
    }
    Ok(text)
}

/// The tag bytes of a printed plate (`京A12345` → FPDH `[1, 0]`, HPHMXH `[27, 28, 29, 30, 31]`);
/// for simulators and tests. `None` when the plate has no province from [`PROVINCES`].
pub fn tag_bytes(plate: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut chars = plate.chars();
    let province = chars.next()?;
    let index = province_index(&province.to_string())?;
    let letter = chars.next().filter(char::is_ascii_uppercase)?;
    let codes = chars
        .map(|c| match c {
            'A'..='Z' => Some(c as u8 - b'A'),
            '0'..='9' => Some(c as u8 - b'0' + 26),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()?;
    Some((vec![index, letter as u8 - b'A'], codes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a value was refused by the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidValue {
    InvalidValue {
        field,
        reason: reason.into(),
    }
}

/// A plate as the registry keys it: separators (`·`, spaces, `-`) removed, ASCII upper-cased;
/// 2 to 12 characters, each an ASCII letter or digit or a CJK character (provinces and the
/// special plate characters such as 警, 学, 挂, 使, 领).
pub fn normalize_plate(text: &str) -> Result<String, InvalidValue> {
    let plate: String = text
        .chars()
        .filter(|c| !matches!(c, '·' | '•' | '.' | ' ' | '-' | '\u{3000}'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let n = plate.chars().count();
    if !(2..=12).contains(&n) {
        return Err(invalid("plate", format!("`{text}` must have 2 to 12 characters")));
    }
    if let Some(c) = plate
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ('\u{4e00}'..='\u{9fff}').contains(c)))
    {
        return Err(invalid("plate", format!("`{text}` has the character {c:?}")));
    }
    Ok(plate)
}

/// A VIN: 17 ASCII letters or digits, upper-cased (GB/T 32960 pads shorter ones; they are
/// accepted from 1 character on, as a terminal logs in with them).
pub fn normalize_vin(text: &str) -> Result<String, InvalidValue> {
    let vin = text
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_ascii_uppercase();
    if vin.is_empty() || vin.len() > 17 || !vin.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("vin", format!("`{text}` is not 1 to 17 letters and digits")));
    }
    Ok(vin)
}

/// A JT/T 808 phone as rendered in topics: 1 to 20 digits (hex digits where a BCD nibble is not
/// decimal), leading zeros kept.
pub fn normalize_phone(text: &str) -> Result<String, InvalidValue> {
    let phone = text.trim().to_ascii_lowercase();
    if phone.is_empty() || phone.len() > 20 || !phone.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("phone", format!("`{text}` is not 1 to 20 digits")));
    }
    Ok(phone)
}

/// A TID: 2 to 64 hex digits (1 to 32 bytes), lower-cased as reports render it.
pub fn normalize_tid(text: &str) -> Result<String, InvalidValue> {
    let tid = text.trim().to_ascii_lowercase();
    if !(2..=64).contains(&tid.len()) || tid.len() % 2 != 0 || !tid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("tid", format!("`{text}` is not 1 to 32 bytes of hex")));
    }
    Ok(tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_captured_tag_reads_as_a_guangdong_plate() {
        // shared/vectors/gbt37987.json: FPDH 1301, HPHMXH 1a1b000001.
        assert_eq!(
            tag_plate(Some(&[0x13, 0x01]), Some(&[0x1a, 0x1b, 0, 0, 1])),
            Ok("粤B01AAB".to_string())
        );
    }

    #[test]
    fn plate_bytes_round_trip_and_bad_codes_are_named() {
        let (authority, chars) = tag_bytes("京A12345").unwrap();
        assert_eq!(authority, [1, 0]);
        assert_eq!(tag_plate(Some(&authority), Some(&chars)).unwrap(), "京A12345");
        assert_eq!(
            tag_plate(Some(&[1, 0]), Some(&[1, 2, 3, 99, 4])),
            Err(TagPlateError::CharacterOutOfRange(99))
        );
        assert_eq!(tag_plate(Some(&[1, 0]), None), Err(TagPlateError::Missing));
        assert_eq!(tag_plate(Some(&[1, 0]), Some(&[])), Err(TagPlateError::Missing));
        assert!(matches!(
            tag_plate(Some(&[0, 0]), Some(&[1; 5])),
            Err(TagPlateError::Authority(_))
        ));
        assert!(matches!(
            tag_plate(Some(&[1, 26]), Some(&[1; 5])),
            Err(TagPlateError::Authority(_))
        ));
        assert!(matches!(
            tag_plate(Some(&[1]), Some(&[1; 5])),
            Err(TagPlateError::Authority(_))
        ));
        assert_eq!(tag_plate(None, Some(&[1; 9])), Err(TagPlateError::Length(9)));
        assert_eq!(tag_plate(None, Some(&[0, 1, 2, 3, 4])).unwrap(), "ABCDE");
    }

    #[test]
    fn registry_values_are_normalised_or_refused_with_their_field() {
        assert_eq!(normalize_plate(" 京a·12345 ").unwrap(), "京A12345");
        assert_eq!(normalize_plate("粤B D1234警").unwrap(), "粤BD1234警");
        assert_eq!(normalize_plate("x").unwrap_err().field, "plate");
        assert!(normalize_plate("京A12345;DROP").is_err());
        assert!(normalize_plate(&"京".repeat(13)).is_err());
        assert_eq!(normalize_vin("lsim0000000000001\0\0").unwrap(), "LSIM0000000000001");
        assert!(normalize_vin("LSIM-000").is_err());
        assert!(normalize_vin(&"A".repeat(18)).is_err());
        assert_eq!(normalize_phone("013900000001").unwrap(), "013900000001");
        assert!(normalize_phone("0139-0000").is_err());
        assert_eq!(normalize_tid("E2801234").unwrap(), "e2801234");
        assert!(normalize_tid("e28").is_err());
        assert!(normalize_tid("zz").is_err());
    }
}
