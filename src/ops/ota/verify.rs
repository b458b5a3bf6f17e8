//! Signature checks of updates (CONTRACT 7): a detached ed25519 signature (64 bytes) over the raw
//! 32-byte SHA-256 digest of the update file, checked against the public key in
//! `ota.public_key_file` (SubjectPublicKeyInfo PEM, as `openssl pkey -pubout` writes it).
//!
//! Signing (what a release does, see README "Updates"):
//! `openssl dgst -sha256 -binary UPDATE > UPDATE.sha256` then
//! `openssl pkeyutl -sign -rawin -inkey ota.key -in UPDATE.sha256 -out UPDATE.sig`.

use std::io::Read;
use std::path::Path;

use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Why an update was refused before anything was installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(
        "unsigned update: `signature` (base64 of the 64-byte ed25519 signature over the file's SHA-256) is required"
    )]
    Unsigned,
    #[error("the signature is not valid base64 of 64 bytes: {0}")]
    SignatureFormat(String),
    #[error("`sha256` must be 64 hex digits")]
    DigestFormat,
    #[error("sha256 mismatch: the file ({bytes} bytes) hashes to {actual}, the request says {expected}; it is truncated or corrupted")]
    DigestMismatch {
        expected: String,
        actual: String,
        bytes: u64,
    },
    #[error("bad signature: the update is not signed by the key in ota.public_key_file")]
    BadSignature,
    #[error("the OTA public key {path} is unusable: {why}")]
    Key { path: String, why: String },
    #[error("cannot read the staged update: {0}")]
    Io(String),
}

/// Loads the ed25519 public key (SubjectPublicKeyInfo PEM).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, VerifyError> {
    let key_error = |why: String| VerifyError::Key {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
    VerifyingKey::from_public_key_pem(&text)
        .map_err(|e| key_error(format!("not an ed25519 SubjectPublicKeyInfo PEM ({e})")))
}

/// Decodes a base64 signature (standard alphabet, padding optional; whitespace ignored).
pub fn decode_signature(text: &str) -> Result<Signature, VerifyError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(VerifyError::Unsigned);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .map_err(|e| VerifyError::SignatureFormat(e.to_string()))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| VerifyError::SignatureFormat(format!("{} bytes", b.len())))?;
    Ok(Signature::from_bytes(&bytes))
}

/// A signature file beside an upload: raw 64 bytes, or base64 text.
pub fn decode_signature_file(bytes: &[u8]) -> Result<Signature, VerifyError> {
    if bytes.len() == 64 {
        if let Ok(raw) = <[u8; 64]>::try_from(bytes) {
            // Raw bytes, unless it is 64 characters of base64 text (which decodes to 48 bytes).
            if std::str::from_utf8(bytes).map_or(true, |t| decode_signature(t).is_err()) {
                return Ok(Signature::from_bytes(&raw));
            }
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => decode_signature(text),
        Err(_) => Err(VerifyError::SignatureFormat(format!(
            "{} bytes, neither 64 raw bytes nor base64 text",
            bytes.len()
        ))),
    }
}

/// Parses a hex SHA-256.
pub fn parse_digest(hex_text: &str) -> Result<[u8; 32], VerifyError> {
    let t = hex_text.trim();
    if t.len() != 64 {
        return Err(VerifyError::DigestFormat);
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| VerifyError::DigestFormat)?;
    }
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file and its length, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<([u8; 32], u64), VerifyError> {
    let mut file = std::fs::File::open(path).map_err(|e| VerifyError::Io(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| VerifyError::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().into(), total))
}

/// Checks a staged file: its digest against `expected` (when the request gave one), then the
/// signature over the digest. Returns the digest.
pub fn verify_file(
    path: &Path,
    key: &VerifyingKey,
    signature: &Signature,
    expected: Option<&[u8; 32]>,
) -> Result<[u8; 32], VerifyError> {
    let (digest, bytes) = sha256_file(path)?;
    if let Some(expected) = expected {
        if &digest != expected {
            return Err(VerifyError::DigestMismatch {
                expected: hex(expected),
                actual: hex(&digest),
                bytes,
            });
        }
    }
    key.verify(&digest, signature).map_err(|_| VerifyError::BadSignature)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
    use ed25519_dalek::{Signer, SigningKey};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_signature_over_the_digest_verifies_and_anything_else_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("update");
        std::fs::write(&file, b"new binary").unwrap();
        let pem = key().verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        std::fs::write(dir.path().join("ota.pub"), pem).unwrap();
        let public = load_public_key(&dir.path().join("ota.pub")).unwrap();
        let digest: [u8; 32] = Sha256::digest(b"new binary").into();
        let sig = key().sign(&digest);
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
        let sig = decode_signature(&b64).unwrap();
        assert_eq!(verify_file(&file, &public, &sig, Some(&digest)).unwrap(), digest);
        assert_eq!(verify_file(&file, &public, &sig, None).unwrap(), digest);

        let other = SigningKey::from_bytes(&[8u8; 32]).sign(&digest);
        assert_eq!(
            verify_file(&file, &public, &other, None),
            Err(VerifyError::BadSignature)
        );
        std::fs::write(&file, b"new bin").unwrap();
        assert!(matches!(
            verify_file(&file, &public, &sig, Some(&digest)),
            Err(VerifyError::DigestMismatch { bytes: 7, .. })
        ));
        assert_eq!(verify_file(&file, &public, &sig, None), Err(VerifyError::BadSignature));
        assert_eq!(decode_signature(" "), Err(VerifyError::Unsigned));
        assert!(matches!(decode_signature("AAAA"), Err(VerifyError::SignatureFormat(_))));
        assert_eq!(decode_signature_file(&sig.to_bytes()).unwrap(), sig);
        assert_eq!(decode_signature_file(format!("{b64}\n").as_bytes()).unwrap(), sig);
        assert!(parse_digest("zz").is_err());
        assert_eq!(parse_digest(&hex(&digest)).unwrap(), digest);
    }

    #[test]
    fn a_key_that_is_not_ed25519_spki_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
        assert!(matches!(load_public_key(&p), Err(VerifyError::Key { .. })));
        assert!(matches!(
            load_public_key(&dir.path().join("none")),
            Err(VerifyError::Key { .. })
        ));
    }
}
