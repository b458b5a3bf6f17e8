//! The running binary's version, and how versions are ordered.
//!
//! The version lives in the binary itself, in a *version stamp*: a fixed-size, NUL-padded field
//! after a marker, initialised at build time to the crate version (`CARGO_PKG_VERSION`). A release
//! step may overwrite the field in the built binary (`scripts/ota-stamp BINARY VERSION`, e.g.
//! a build number `0.1.0.417`) without rebuilding; `roadedge --version`, the status topic, the
//! web page and the OTA replay check all read the field, so what a binary says it is and what
//! OTA compares are the same bytes. The OTA service learns a staged binary's version by running
//! `<staged> --version` (only after its signature was checked), so a stamped binary is an honest
//! update, and a binary that cannot run on this device is refused before it is installed.
//!
//! Ordering ([`compare`]): components split at `.`, `-` and `+`, numeric components compare as
//! numbers, others as text; a version that extends another (`0.1.0.1` vs `0.1.0`) is newer, except
//! a pre-release suffix after `-` (`0.2.0-rc1` < `0.2.0`).

use std::cmp::Ordering;
use std::sync::OnceLock;

/// Bytes of the stamp's value field.
pub const STAMP_LEN: usize = 48;
/// The marker before the field (16 bytes). Tools find the field by it; it appears once in a binary.
pub const STAMP_MARKER: &[u8; 16] = b"\x00RDEDGE-VERSION=";

const fn build_stamp() -> [u8; 16 + STAMP_LEN] {
    let mut out = [0u8; 16 + STAMP_LEN];
    let mut i = 0;
    while i < 16 {
        out[i] = STAMP_MARKER[i];
        i += 1;
    }
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    let mut j = 0;
    while j < v.len() && j < STAMP_LEN {
        out[16 + j] = v[j];
        j += 1;
    }
    out
}

#[used]
static STAMP: [u8; 16 + STAMP_LEN] = build_stamp();

/// One byte of the stamp as it is in the mapped binary, never the build-time value folded in.
#[allow(
    unsafe_code,
    reason = "read_volatile is the only guaranteed way to keep the compiler from folding the stamp \
              (the one unsafe of the crate, see [lints] in Cargo.toml)"
)]
fn read_stamp_byte(byte: &u8) -> u8 {
    // SAFETY: the pointer comes from a reference: valid, aligned and initialised.
    unsafe { std::ptr::read_volatile(byte) }
}

/// The running binary's version (its stamp).
pub fn current() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut field = [0u8; STAMP_LEN];
        for (i, b) in field.iter_mut().enumerate() {
            // Volatile: the field may have been rewritten in the file after the build, so the
            // compiler must not fold the initial value in.
            *b = read_stamp_byte(&STAMP[16 + i]);
        }
        let end = field.iter().position(|b| *b == 0).unwrap_or(STAMP_LEN);
        match std::str::from_utf8(&field[..end]) {
            Ok(v) if valid(v) => v.to_string(),
            _ => env!("CARGO_PKG_VERSION").to_string(),
        }
    })
}

/// Whether `v` is a usable version: 1..=48 characters of `[0-9A-Za-z.+-]`, starting with a digit.
pub fn valid(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= STAMP_LEN
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

/// The version in the output of `roadedge --version` (`roadedge 0.1.0 (target, profile)`).
pub fn from_version_output(output: &str) -> Option<String> {
    let line = output.lines().next()?.trim();
    let mut words = line.split_whitespace();
    if words.next()? != "roadedge" {
        return None;
    }
    let v = words.next()?;
    valid(v).then(|| v.to_string())
}

/// Orders two versions (see the module doc).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a_main, a_pre) = split_pre(a);
    let (b_main, b_pre) = split_pre(b);
    let main = compare_parts(a_main, b_main);
    if main != Ordering::Equal {
        return main;
    }
    match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => compare_parts(x, y),
    }
}

fn split_pre(v: &str) -> (&str, Option<&str>) {
    match v.split_once('-') {
        Some((main, pre)) => (main, Some(pre)),
        None => (v, None),
    }
}

fn compare_parts(a: &str, b: &str) -> Ordering {
    let mut x = a.split(['.', '+']);
    let mut y = b.split(['.', '+']);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Greater,
                    (Err(_), Ok(_)) => Ordering::Less,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unstamped_version_is_the_crate_version() {
        assert_eq!(current(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn versions_order_numerically_with_pre_releases_first() {
        assert_eq!(compare("0.10.0", "0.9.9"), Ordering::Greater);
        assert_eq!(compare("0.1.0", "0.1.0"), Ordering::Equal);
        assert_eq!(compare("0.1.0.1", "0.1.0"), Ordering::Greater);
        assert_eq!(compare("0.2.0-rc1", "0.2.0"), Ordering::Less);
        assert_eq!(compare("0.2.0-rc2", "0.2.0-rc1"), Ordering::Greater);
        assert_eq!(compare("1.0.0", "0.99.99"), Ordering::Greater);
    }

    #[test]
    fn the_version_is_read_from_version_output_and_checked() {
        assert_eq!(
            from_version_output("roadedge 0.2.0 (x86_64-unknown-linux-gnu, debug)\n").as_deref(),
            Some("0.2.0")
        );
        assert_eq!(from_version_output("busybox v1.36"), None);
        assert_eq!(from_version_output("roadedge ;rm -rf"), None);
        assert!(!valid(""));
        assert!(!valid(&"1".repeat(49)));
    }
}
