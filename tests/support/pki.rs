//! The test PKI: a server CA with a `localhost` server certificate, a separate client CA
//! with a client certificate, an untrusted self-signed certificate and an expired one.
//!
//! RSA 2048 key generation is slow here (~0.4 s a key), and nextest runs every test in
//! its own process, so [`test_pki`] generates the set once per build directory
//! (`CARGO_TARGET_TMPDIR/periscope-test-pki-v1`, published with an atomic rename) and
//! every test process reuses it. [`TestPki::generate`] makes a fresh set anywhere.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509};

use super::tools::write_file;

/// Common name of the CA that signs the server certificates.
pub const ROOT_CA_CN: &str = "Periscope Test Root";
/// Common name of the CA that signs the client certificate (Apache's
/// `SSLCACertificateFile`; the CA name the server sends in its CertificateRequest).
pub const CLIENT_CA_CN: &str = "Periscope Test Client CA";
/// Common name of the client certificate.
pub const CLIENT_CERT_CN: &str = "periscope-test-client";
/// Bump when the set of files or their contents change: old caches are then ignored.
const CACHE_VERSION: &str = "v1";
/// A cached set older than this is regenerated (certificates are valid for 10 years).
const CACHE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Paths of the generated PEM files. All keys are unencrypted PKCS#8 PEM.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub dir: PathBuf,
    /// `ca.pem`: "Periscope Test Root" (trust this to trust the server certificates).
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// `server.pem`: CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1; signed by ca.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `client-ca.pem`: "Periscope Test Client CA".
    pub client_ca_cert: PathBuf,
    pub client_ca_key: PathBuf,
    /// `client.pem`: client certificate and key concatenated (`--client-certs FILE` form,
    /// also what `curl --cert` takes).
    pub client_pem: PathBuf,
    /// `client.crt` / `client.key`: the same certificate and key, separately.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// `untrusted.pem` / `untrusted.key`: self-signed for localhost; no test CA signs it.
    pub untrusted_cert: PathBuf,
    pub untrusted_key: PathBuf,
    /// `expired.pem` / `expired.key`: for localhost, signed by ca, expired yesterday.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
}

static PKI: OnceLock<TestPki> = OnceLock::new();

/// The shared test PKI (generated on first use, see the module doc).
pub fn test_pki() -> &'static TestPki {
    PKI.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        TestPki::cached(&base.join(format!("periscope-test-pki-{CACHE_VERSION}")))
    })
}

impl TestPki {
    fn paths(dir: &Path) -> TestPki {
        TestPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_ca_cert: dir.join("client-ca.pem"),
            client_ca_key: dir.join("client-ca.key"),
            client_pem: dir.join("client.pem"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            untrusted_cert: dir.join("untrusted.pem"),
            untrusted_key: dir.join("untrusted.key"),
            expired_cert: dir.join("expired.pem"),
            expired_key: dir.join("expired.key"),
        }
    }

    fn all_files(&self) -> [&PathBuf; 13] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.client_ca_cert,
            &self.client_ca_key,
            &self.client_pem,
            &self.client_cert,
            &self.client_key,
            &self.untrusted_cert,
            &self.untrusted_key,
            &self.expired_cert,
            &self.expired_key,
        ]
    }

    /// Uses the set in `dir` when it is complete and recent, else generates one into a
    /// sibling temp dir and renames it into place (a concurrent process may win the
    /// rename: then its set is used).
    fn cached(dir: &Path) -> TestPki {
        let fresh_enough = |pki: &TestPki| {
            pki.all_files().iter().all(|p| p.is_file())
                && std::fs::metadata(dir.join("complete"))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < CACHE_MAX_AGE)
        };
        let pki = TestPki::paths(dir);
        if fresh_enough(&pki) {
            return pki;
        }
        let parent = dir.parent().expect("cache dir has a parent");
        std::fs::create_dir_all(parent).expect("create CARGO_TARGET_TMPDIR");
        let staging = tempfile::Builder::new()
            .prefix(".pki-staging-")
            .tempdir_in(parent)
            .expect("staging dir");
        TestPki::generate(staging.path());
        write_file(&staging.path().join("complete"), b"ok\n");
        let staging = staging.keep();
        // Replace a stale or partial set; if another process just published a complete
        // one, the rename fails (directory not empty) and we use theirs.
        if dir.exists() && !fresh_enough(&pki) {
            let _ = std::fs::remove_dir_all(dir);
        }
        if std::fs::rename(&staging, dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        assert!(
            fresh_enough(&pki),
            "test PKI in {} incomplete",
            dir.display()
        );
        pki
    }

    /// Generates a complete fresh set into `dir` (created if missing; files 0644 so that
    /// a server dropping privileges can read them — these are throwaway test keys).
    pub fn generate(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir).expect("create PKI dir");
        let pki = TestPki::paths(dir);
        let now = unix_now();
        let day = 24 * 3600;
        let ten_years = 10 * 365 * day;

        let (ca, ca_key) = make_cert(Spec {
            cn: ROOT_CA_CN,
            kind: Kind::Ca,
            issuer: None,
            not_before: now - day,
            not_after: now + ten_years,
        });
        let (server, server_key) = make_cert(Spec {
            cn: "localhost",
            kind: Kind::Server,
            issuer: Some((&ca, &ca_key)),
            not_before: now - day,
            not_after: now + ten_years,
        });
        let (client_ca, client_ca_key) = make_cert(Spec {
            cn: CLIENT_CA_CN,
            kind: Kind::Ca,
            issuer: None,
            not_before: now - day,
            not_after: now + ten_years,
        });
        let (client, client_key) = make_cert(Spec {
            cn: CLIENT_CERT_CN,
            kind: Kind::Client,
            issuer: Some((&client_ca, &client_ca_key)),
            not_before: now - day,
            not_after: now + ten_years,
        });
        let (untrusted, untrusted_key) = make_cert(Spec {
            cn: "localhost",
            kind: Kind::Server,
            issuer: None,
            not_before: now - day,
            not_after: now + ten_years,
        });
        let (expired, expired_key) = make_cert(Spec {
            cn: "localhost",
            kind: Kind::Server,
            issuer: Some((&ca, &ca_key)),
            not_before: now - 30 * day,
            not_after: now - day,
        });

        let cert_pem = |c: &X509| c.to_pem().expect("cert to PEM");
        let key_pem = |k: &PKey<Private>| k.private_key_to_pem_pkcs8().expect("key to PEM");

        write_file(&pki.ca_cert, cert_pem(&ca));
        write_file(&pki.ca_key, key_pem(&ca_key));
        write_file(&pki.server_cert, cert_pem(&server));
        write_file(&pki.server_key, key_pem(&server_key));
        write_file(&pki.client_ca_cert, cert_pem(&client_ca));
        write_file(&pki.client_ca_key, key_pem(&client_ca_key));
        write_file(&pki.client_cert, cert_pem(&client));
        write_file(&pki.client_key, key_pem(&client_key));
        let mut combined = cert_pem(&client);
        combined.extend_from_slice(&key_pem(&client_key));
        write_file(&pki.client_pem, combined);
        write_file(&pki.untrusted_cert, cert_pem(&untrusted));
        write_file(&pki.untrusted_key, key_pem(&untrusted_key));
        write_file(&pki.expired_cert, cert_pem(&expired));
        write_file(&pki.expired_key, key_pem(&expired_key));
        pki
    }

    /// Loads one of the PEM certificates.
    pub fn load_cert(path: &Path) -> X509 {
        let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        X509::from_pem(&pem).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ca,
    Server,
    Client,
}

struct Spec<'a> {
    cn: &'a str,
    kind: Kind,
    /// None: self-signed.
    issuer: Option<(&'a X509, &'a PKey<Private>)>,
    not_before: i64,
    not_after: i64,
}

fn name(cn: &str) -> X509Name {
    let mut b = X509NameBuilder::new().unwrap();
    b.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Periscope tests")
        .unwrap();
    b.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    b.build()
}

fn random_serial() -> Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(127, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

fn make_cert(spec: Spec<'_>) -> (X509, PKey<Private>) {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("RSA keygen")).unwrap();
    let subject = name(spec.cn);
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&random_serial()).unwrap();
    b.set_subject_name(&subject).unwrap();
    match spec.issuer {
        Some((issuer, _)) => b.set_issuer_name(issuer.subject_name()).unwrap(),
        None => b.set_issuer_name(&subject).unwrap(),
    }
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(spec.not_before as _).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(spec.not_after as _).unwrap())
        .unwrap();

    match spec.kind {
        Kind::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
        Kind::Server | Kind::Client => {
            b.append_extension(BasicConstraints::new().critical().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_encipherment()
                    .build()
                    .unwrap(),
            )
            .unwrap();
            let mut eku = ExtendedKeyUsage::new();
            if spec.kind == Kind::Server {
                eku.server_auth();
            } else {
                eku.client_auth();
            }
            b.append_extension(eku.build().unwrap()).unwrap();
        }
    }

    let issuer_cert = spec.issuer.map(|(c, _)| &**c);
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer_cert, None))
        .unwrap();
    b.append_extension(ski).unwrap();
    if spec.kind == Kind::Server {
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .ip("::1")
            .build(&b.x509v3_context(issuer_cert, None))
            .unwrap();
        b.append_extension(san).unwrap();
    }
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(issuer_cert, None))
        .unwrap();
    b.append_extension(aki).unwrap();

    let signing_key = spec.issuer.map(|(_, k)| k).unwrap_or(&key);
    b.sign(signing_key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}
