//! Issuing the cluster's certificates, for operators without a PKI (`wingkv cert`): a CA, server
//! certificates that carry their role, and user certificates. Keys are ECDSA P-256; private keys
//! are written readable by their owner only.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::identity::{Role, ROLE_URI_PREFIX};
use crate::SecurityError;

/// A certificate and its private key, PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (never printed: `Debug` leaves it out).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// How long a CA is valid, in years from the start of this year.
pub const CA_YEARS: i32 = 10;
/// How long a server or user certificate is valid, in years from the start of this year.
pub const LEAF_YEARS: i32 = 2;

fn issue_err(e: rcgen::Error) -> SecurityError {
    SecurityError::Issue(e.to_string())
}

fn this_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

fn params(common_name: &str, years: i32) -> Result<CertificateParams, SecurityError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(issue_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "wingkv");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    let year = this_year();
    p.not_before = rcgen::date_time_ymd(year, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + years, 1, 1);
    Ok(p)
}

/// Checks a user or server name: 1 to 64 characters of letters, digits, `.`, `_`, `-`, `@`
/// (no comma: table ACLs are comma-separated lists of user names).
pub fn check_name(what: &str, name: &str) -> Result<(), SecurityError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(SecurityError::InvalidName(format!(
            "{what} name '{name}' is not 1 to 64 characters of letters, digits, '.', '_', '-', '@'"
        )))
    }
}

/// A new self-signed CA named `name`.
pub fn new_ca(name: &str) -> Result<Issued, SecurityError> {
    let key = KeyPair::generate().map_err(issue_err)?;
    let mut p = params(name, CA_YEARS)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = p.self_signed(&key).map_err(issue_err)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn sign(ca: &Issued, p: CertificateParams) -> Result<Issued, SecurityError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(issue_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(issue_err)?;
    let key = KeyPair::generate().map_err(issue_err)?;
    let cert = p.signed_by(&key, &issuer).map_err(issue_err)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A certificate for a server of `role` named `name`, valid as TLS server and client (servers
/// call each other), for the host names and addresses in `hosts`.
pub fn issue_server(ca: &Issued, role: Role, name: &str, hosts: &[String]) -> Result<Issued, SecurityError> {
    check_name("server", name)?;
    let mut p = params(name, LEAF_YEARS)?;
    let uri = format!("{ROLE_URI_PREFIX}{}", role.as_str());
    let mut sans = vec![SanType::URI(uri.as_str().try_into().map_err(issue_err)?)];
    for h in hosts {
        sans.push(match h.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                h.as_str()
                    .try_into()
                    .map_err(|_| SecurityError::InvalidName(format!("host '{h}' is not a DNS name")))?,
            ),
        });
    }
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    sign(ca, p)
}

/// A certificate for user `user`.
pub fn issue_user(ca: &Issued, user: &str) -> Result<Issued, SecurityError> {
    check_name("user", user)?;
    let mut p = params(user, LEAF_YEARS)?;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(ca, p)
}

fn read(path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path).map_err(|source| SecurityError::Io { path: path.to_path_buf(), source })
}

/// Reads a certificate and its key (e.g. the CA, to issue with it).
pub fn load(cert: &Path, key: &Path) -> Result<Issued, SecurityError> {
    Ok(Issued { cert_pem: read(cert)?, key_pem: read(key)? })
}

/// Writes `issued` as `DIR/STEM.crt` (0644) and `DIR/STEM.key` (0600); returns both paths. An
/// existing file is replaced whole (written aside, then renamed), so a server reading it while
/// it rotates sees the old or the new one.
pub fn write(issued: &Issued, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), SecurityError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SecurityError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    write_file(&key, issued.key_pem.as_bytes(), 0o600).map_err(io(&key))?;
    write_file(&cert, issued.cert_pem.as_bytes(), 0o644).map_err(io(&cert))?;
    Ok((cert, key))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn issued_certificates_state_their_role_or_user() {
        let ca = new_ca("test CA").unwrap();
        let server = issue_server(&ca, Role::Replica, "n1", &["127.0.0.1".into(), "localhost".into()]).unwrap();
        let user = issue_user(&ca, "user1").unwrap();
        assert_eq!(
            Identity::from_certificate(&der(&server.cert_pem)).unwrap(),
            Identity::Server { role: Role::Replica, name: "n1".into() }
        );
        assert_eq!(Identity::from_certificate(&der(&user.cert_pem)).unwrap(), Identity::User("user1".into()));
        assert!(!format!("{user:?}").contains("PRIVATE KEY"), "a key in Debug output");
    }

    #[test]
    fn names_that_would_break_an_acl_are_refused() {
        let ca = new_ca("test CA").unwrap();
        for bad in ["", "a,b", "with space", &"x".repeat(65)] {
            assert!(issue_user(&ca, bad).is_err(), "'{bad}' accepted");
        }
    }

    #[test]
    fn keys_are_written_for_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write(&new_ca("c").unwrap(), dir.path(), "ca").unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&cert).unwrap().permissions().mode() & 0o777, 0o644);
    }
}
