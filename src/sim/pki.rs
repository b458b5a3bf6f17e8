//! Throwaway certificate authorities for the demo and the tests: a CA, a server certificate for
//! loopback names, and client certificates, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// PEM file paths of one generated pair.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA able to issue server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub ca_file: PathBuf,
    dir: PathBuf,
}

impl TestCa {
    /// Creates a CA named `name` and writes `{name}-ca.pem` into `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<TestCa, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, issuer.pem()).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok(TestCa {
            issuer,
            ca_file,
            dir: dir.to_path_buf(),
        })
    }

    fn issue(&self, file_stem: &str, cn: &str, server: bool) -> Result<CertFiles, rcgen::Error> {
        self.issue_until(file_stem, cn, server, None)
    }

    /// A server (`server`) or client certificate valid until `not_after` (a fresh key pair; both
    /// files are written again), for the certificate expiry checks.
    pub fn issue_valid_until(
        &self,
        file_stem: &str,
        cn: &str,
        server: bool,
        not_after: time::OffsetDateTime,
    ) -> Result<CertFiles, rcgen::Error> {
        self.issue_until(file_stem, cn, server, Some(not_after))
    }

    fn issue_until(
        &self,
        file_stem: &str,
        cn: &str,
        server: bool,
        not_after: Option<time::OffsetDateTime>,
    ) -> Result<CertFiles, rcgen::Error> {
        let names = if server {
            vec!["localhost".to_string()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        if server {
            params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if let Some(not_after) = not_after {
            params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
            params.not_after = not_after;
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        self.write_pair(file_stem, cert.pem(), key.serialize_pem())
    }

    /// A server certificate for localhost, 127.0.0.1 and ::1.
    pub fn server(&self, file_stem: &str) -> Result<CertFiles, rcgen::Error> {
        self.issue(file_stem, "localhost", true)
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, file_stem: &str, cn: &str) -> Result<CertFiles, rcgen::Error> {
        self.issue(file_stem, cn, false)
    }

    /// A signing certificate with common name `cn`, as RAUC wants for signing bundles: digital
    /// signature only and no extended key usage (so OpenSSL's default CMS purpose check passes).
    pub fn signer(&self, file_stem: &str, cn: &str) -> Result<CertFiles, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        self.write_pair(file_stem, cert.pem(), key.serialize_pem())
    }

    fn write_pair(&self, file_stem: &str, cert: String, key: String) -> Result<CertFiles, rcgen::Error> {
        let files = CertFiles {
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        let write = |p: &Path, s: String| std::fs::write(p, s).map_err(|_| rcgen::Error::CouldNotParseCertificate);
        write(&files.cert, cert)?;
        write(&files.key, key)?;
        Ok(files)
    }
}
