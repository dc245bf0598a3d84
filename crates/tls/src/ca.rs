//! The certificate authority that lets Periscope read TLS traffic.
//!
//! An intercepting proxy terminates the client's TLS connection itself, so it must present
//! a certificate the client accepts for whatever host the client asked for. Users trust one
//! CA certificate once (the files written here follow mitmproxy's layout, so existing habits
//! and docs carry over), and this module mints a leaf for every host on demand.
//!
//! Leaf minting sits on the path of every new intercepted connection, so it is kept cheap:
//! ECDSA P-256 keys, one leaf key shared by all leaves of a process (a per-host key would
//! buy nothing, since the proxy holds every key anyway), and a bounded cache so a host's
//! leaf is signed once and then reused.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509Ref, X509};
use tracing::{debug, info, warn};

/// Private key + CA certificate (PEM). The only file needed to load the CA.
pub const CA_KEY_AND_CERT_FILE: &str = "periscope-ca.pem";
/// The CA certificate alone (PEM), to hand to clients.
pub const CA_CERT_PEM_FILE: &str = "periscope-ca-cert.pem";
/// The CA certificate alone (DER), the form Android and some Windows tools import.
pub const CA_CERT_CER_FILE: &str = "periscope-ca-cert.cer";
/// The CA certificate alone in PKCS#12 (no key, empty password), for Windows/macOS import.
pub const CA_CERT_P12_FILE: &str = "periscope-ca-cert.p12";

/// How many leaves the cache keeps before it evicts the oldest.
pub const DEFAULT_LEAF_CACHE_CAPACITY: usize = 10_000;

const CA_COMMON_NAME: &str = "Periscope CA";
const ORGANIZATION: &str = "Periscope";
const DAY_SECS: i64 = 24 * 60 * 60;
/// Clients with a clock a little behind ours must not see a "not yet valid" certificate.
const BACKDATE_SECS: i64 = 2 * DAY_SECS;
const CA_VALIDITY_SECS: i64 = 3650 * DAY_SECS;
/// One year keeps leaves under the 398-day limit Apple and browsers enforce.
const LEAF_VALIDITY_SECS: i64 = 365 * DAY_SECS;
/// A cached leaf is re-minted after this long, so a long-running proxy never serves a leaf
/// close to its notAfter.
const LEAF_REFRESH_AFTER: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// OpenSSL refuses a commonName longer than this (RFC 5280 ub-common-name).
const MAX_COMMON_NAME_LEN: usize = 64;
const MAX_DNS_NAME_LEN: usize = 253;

/// Why the CA could not be loaded or created, or a leaf could not be minted.
#[derive(thiserror::Error, Debug)]
pub enum CaError {
    #[error("cannot create the config directory {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read the CA file {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The CA file exists but cannot be used. It is never overwritten: it may be the CA the
    /// user's devices already trust.
    #[error(
        "the CA file {} is not usable ({reason}); fix or remove it (a new CA is created \
         when it is missing, and clients must then trust the new one)",
        .path.display()
    )]
    InvalidCaFile {
        path: PathBuf,
        reason: &'static str,
        #[source]
        source: Option<ErrorStack>,
    },
    #[error("cannot generate the CA: {0}")]
    Generate(#[source] ErrorStack),
    #[error("cannot encode the CA certificate for {}: {source}", .path.display())]
    Encode { path: PathBuf, source: ErrorStack },
    #[error("cannot mint a certificate for host {host:?}: {reason}")]
    InvalidHost { host: String, reason: &'static str },
    #[error("cannot mint a certificate for host {host:?}: {source}")]
    Mint { host: String, source: ErrorStack },
}

/// A certificate for one host, signed by the CA, ready to configure an OpenSSL server.
#[derive(Debug)]
pub struct LeafCertificate {
    pub certificate: X509,
    /// The process-wide shared leaf key (ECDSA P-256).
    pub key: PKey<Private>,
    /// Certificates to send after the leaf: the CA certificate.
    pub chain: Vec<X509>,
}

/// The CA: loads or creates the CA files and mints cached leaf certificates.
pub struct CertificateAuthority {
    cert: X509,
    key: PKey<Private>,
    cert_pem_path: PathBuf,
    leaf_key: PKey<Private>,
    cache: Mutex<LeafCache>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.cert.subject_name())
            .field("cert_pem_path", &self.cert_pem_path)
            .field("cached_leaves", &self.cached_leaf_count())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from `confdir`, creating the dir (0700) and the CA on first use.
    ///
    /// Only `periscope-ca.pem` is read; the derived files (`-cert.pem`, `.cer`, `.p12`) are
    /// written when missing or when they hold a different certificate (say, after the user
    /// replaced `periscope-ca.pem` with their own CA).
    pub fn load_or_create(confdir: &Path) -> Result<Self, CaError> {
        create_confdir(confdir)?;
        let ca_path = confdir.join(CA_KEY_AND_CERT_FILE);
        let (cert, key) = match fs::read(&ca_path) {
            Ok(pem) => parse_ca_file(&ca_path, &pem)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_ca_file(&ca_path)?,
            Err(source) => {
                return Err(CaError::Read {
                    path: ca_path,
                    source,
                })
            }
        };
        warn_if_exposed(&ca_path);
        write_derived_files(confdir, &cert)?;
        let leaf_key = generate_p256_key().map_err(CaError::Generate)?;
        Ok(CertificateAuthority {
            cert,
            key,
            cert_pem_path: confdir.join(CA_CERT_PEM_FILE),
            leaf_key,
            cache: Mutex::new(LeafCache::new(DEFAULT_LEAF_CACHE_CAPACITY)),
        })
    }

    /// Sets how many leaves the cache keeps (at least one); the default is
    /// [`DEFAULT_LEAF_CACHE_CAPACITY`].
    pub fn with_cache_capacity(self, capacity: usize) -> Self {
        self.lock_cache().set_capacity(capacity);
        self
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &X509Ref {
        &self.cert
    }

    /// The CA certificate encoded for clients to import (what the confdir's
    /// `periscope-ca-cert.*` files hold).
    pub fn certificate_as(&self, form: CertificateForm) -> Result<Vec<u8>, ErrorStack> {
        encode_derived(&self.cert, form)
    }

    /// `confdir/periscope-ca-cert.pem`: the file users install in their clients.
    pub fn cert_pem_path(&self) -> &Path {
        &self.cert_pem_path
    }

    /// How many leaves are cached now.
    pub fn cached_leaf_count(&self) -> usize {
        self.lock_cache().map.len()
    }

    /// A leaf for `host` (DNS name or IP literal, IPv6 without brackets), cached.
    /// `extra_names` are further SANs (DNS names or IPs) to include, e.g. from the upstream cert.
    ///
    /// Host names are lowercased and a trailing dot is dropped; `[::1]` and zone ids
    /// (`fe80::1%eth0`) are accepted. An invalid `host` is an error; invalid extra names
    /// (they come from untrusted upstream certificates) are skipped.
    pub fn leaf_for(
        &self,
        host: &str,
        extra_names: &[String],
    ) -> Result<Arc<LeafCertificate>, CaError> {
        let primary = SanName::parse(host).map_err(|reason| CaError::InvalidHost {
            host: host.to_owned(),
            reason,
        })?;
        let mut extras: Vec<SanName> = extra_names
            .iter()
            .filter_map(|raw| match SanName::parse(raw) {
                Ok(name) => Some(name),
                Err(reason) => {
                    debug!(name = %raw, host, reason, "skipping an extra SAN");
                    None
                }
            })
            .filter(|name| *name != primary)
            .collect();
        extras.sort();
        extras.dedup();
        let key = (primary, extras);

        if let Some(leaf) = self.lock_cache().get(&key) {
            return Ok(leaf);
        }
        // Mint without holding the lock: other hosts' handshakes must not wait on this one.
        let leaf = Arc::new(
            self.mint_leaf(&key.0, &key.1)
                .map_err(|source| CaError::Mint {
                    host: host.to_owned(),
                    source,
                })?,
        );
        debug!(host = %key.0, extra_sans = key.1.len(), "minted a leaf certificate");
        // If another thread minted the same leaf meanwhile, everyone gets the cached one.
        Ok(self.lock_cache().insert(key, leaf))
    }

    fn lock_cache(&self) -> MutexGuard<'_, LeafCache> {
        // A panic while the lock was held cannot leave the cache inconsistent (every update
        // is a single map/queue operation), so a poisoned lock is still usable.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn mint_leaf(&self, host: &SanName, extras: &[SanName]) -> Result<LeafCertificate, ErrorStack> {
        let common_name = host.to_string();
        let mut builder = X509Builder::new()?;
        builder.set_version(2)?;
        let serial = random_serial()?;
        builder.set_serial_number(&serial)?;
        let cn = (common_name.len() <= MAX_COMMON_NAME_LEN).then_some(common_name.as_str());
        let subject = build_name(cn)?;
        builder.set_subject_name(&subject)?;
        builder.set_issuer_name(self.cert.subject_name())?;
        builder.set_pubkey(&self.leaf_key)?;

        let now = unix_now();
        let not_before = Asn1Time::from_unix(to_time_t(now - BACKDATE_SECS))?;
        builder.set_not_before(&not_before)?;
        let not_after = Asn1Time::from_unix(to_time_t(now + LEAF_VALIDITY_SECS))?;
        // A leaf outliving its CA would only fail later with a more confusing error.
        if self.cert.not_after() < not_after {
            builder.set_not_after(self.cert.not_after())?;
        } else {
            builder.set_not_after(&not_after)?;
        }

        builder.append_extension(BasicConstraints::new().build()?)?;
        builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        builder.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let ski =
            SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(aki)?;
        let mut san = SubjectAlternativeName::new();
        for name in std::iter::once(host).chain(extras) {
            match name {
                SanName::Dns(dns) => san.dns(dns),
                SanName::Ip(ip) => san.ip(&ip.to_string()),
            };
        }
        let san = san.build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(san)?;

        builder.sign(&self.key, MessageDigest::sha256())?;
        Ok(LeafCertificate {
            certificate: builder.build(),
            key: self.leaf_key.clone(),
            chain: vec![self.cert.clone()],
        })
    }
}

/// A subjectAltName entry, normalised so equal names compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SanName {
    Dns(String),
    Ip(IpAddr),
}

impl SanName {
    fn parse(raw: &str) -> Result<SanName, &'static str> {
        let name = raw.trim();
        if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return parse_ipv6(inner)
                .map(SanName::Ip)
                .ok_or("brackets around something that is not an IPv6 address");
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(SanName::Ip(ip));
        }
        if let Some(ip) = parse_ipv6(name) {
            return Ok(SanName::Ip(ip));
        }
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        validate_dns_name(&name)?;
        Ok(SanName::Dns(name))
    }
}

impl fmt::Display for SanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanName::Dns(name) => f.write_str(name),
            SanName::Ip(ip) => ip.fmt(f),
        }
    }
}

/// An IPv6 literal, with or without a zone id (`fe80::1%eth0`; certificates have no zones).
fn parse_ipv6(s: &str) -> Option<IpAddr> {
    let addr = s.split_once('%').map_or(s, |(addr, _zone)| addr);
    addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_DNS_NAME_LEN {
        return Err("name longer than 253 characters");
    }
    for (i, label) in name.split('.').enumerate() {
        if label.is_empty() {
            return Err("empty label in name");
        }
        if label == "*" {
            if i != 0 {
                return Err("wildcard not in the leftmost label");
            }
            continue;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("not a DNS name (letters, digits, '-', '_', '.') or IP address");
        }
    }
    Ok(())
}

type CacheKey = (SanName, Vec<SanName>);

struct CacheEntry {
    leaf: Arc<LeafCertificate>,
    minted: Instant,
}

/// A map bounded by evicting in insertion order (simple, and O(1) per insert).
struct LeafCache {
    map: HashMap<CacheKey, CacheEntry>,
    order: VecDeque<CacheKey>,
    capacity: usize,
}

impl LeafCache {
    fn new(capacity: usize) -> Self {
        LeafCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.evict_to(self.capacity);
    }

    fn get(&self, key: &CacheKey) -> Option<Arc<LeafCertificate>> {
        self.map
            .get(key)
            .filter(|entry| entry.minted.elapsed() < LEAF_REFRESH_AFTER)
            .map(|entry| entry.leaf.clone())
    }

    /// Inserts `leaf` unless a fresh leaf for `key` is already there; returns the cached one.
    fn insert(&mut self, key: CacheKey, leaf: Arc<LeafCertificate>) -> Arc<LeafCertificate> {
        if let Some(existing) = self.get(&key) {
            return existing;
        }
        let entry = CacheEntry {
            leaf: leaf.clone(),
            minted: Instant::now(),
        };
        if self.map.insert(key.clone(), entry).is_none() {
            // A new key (not a refresh of a stale one): make room and remember its age.
            self.evict_to(self.capacity - 1);
            self.order.push_back(key);
        }
        leaf
    }

    /// Evicts the oldest entries until at most `len` remain besides the one being added.
    fn evict_to(&mut self, len: usize) {
        while self.order.len() > len {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
    }
}

fn create_confdir(confdir: &Path) -> Result<(), CaError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(confdir)
        .map_err(|source| CaError::CreateDir {
            path: confdir.to_owned(),
            source,
        })
}

fn parse_ca_file(path: &Path, pem: &[u8]) -> Result<(X509, PKey<Private>), CaError> {
    let invalid = |reason, source| CaError::InvalidCaFile {
        path: path.to_owned(),
        reason,
        source,
    };
    let cert = X509::from_pem(pem).map_err(|e| invalid("no PEM certificate in it", Some(e)))?;
    let key = PKey::private_key_from_pem(pem)
        .map_err(|e| invalid("no PEM private key in it", Some(e)))?;
    let cert_key = cert
        .public_key()
        .map_err(|e| invalid("unreadable certificate public key", Some(e)))?;
    if !cert_key.public_eq(&key) {
        return Err(invalid(
            "the private key does not belong to the certificate",
            None,
        ));
    }
    Ok((cert, key))
}

/// Creates a new CA and writes it to `path` without ever replacing an existing file. If
/// another process created the file first, that CA is loaded instead.
fn create_ca_file(path: &Path) -> Result<(X509, PKey<Private>), CaError> {
    let (cert, key) = generate_ca().map_err(CaError::Generate)?;
    let mut pem = key.private_key_to_pem_pkcs8().map_err(CaError::Generate)?;
    pem.extend(cert.to_pem().map_err(CaError::Generate)?);
    let created = write_new_private_file(path, &pem).map_err(|source| CaError::Write {
        path: path.to_owned(),
        source,
    })?;
    if created {
        info!(path = %path.display(), "created a new CA");
        Ok((cert, key))
    } else {
        let pem = fs::read(path).map_err(|source| CaError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse_ca_file(path, &pem)
    }
}

/// Writes `contents` to a new file at `path`, created with mode 0600 (never chmod-ed later:
/// the key is never readable by others, even briefly). Returns false if `path` already
/// exists. Readers never see a half-written file: the content is written to a temporary file
/// first and then hard-linked into place, which fails rather than replacing an existing file.
fn write_new_private_file(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let tmp = temp_sibling(path);
    let written = write_file(&tmp, contents, Some(0o600));
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => {
            // Some file systems have no hard links: write in place, still never replacing.
            debug!(path = %path.display(), error = %e, "hard link failed; writing in place");
            match write_file(path, contents, Some(0o600)) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Creates `path` (which must not exist) with `mode` and writes `contents` durably.
fn write_file(path: &Path, contents: &[u8], mode: Option<u32>) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    let result = file.write_all(contents).and_then(|()| file.sync_all());
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Replaces `path` atomically (write a temporary file, then rename over it).
fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let result = write_file(&tmp, contents, None).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "periscope".into(), |n| n.to_string_lossy().into_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    path.with_file_name(format!(".{name}.{}.{nanos}.tmp", std::process::id()))
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the CA private key is readable by other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

/// The CA certificate in a form clients import: PEM, DER (`.cer`), or a key-less
/// PKCS#12 (`.p12`, for the macOS keychain and Windows). The confdir holds each as a
/// file; [`CertificateAuthority::certificate_as`] makes them for onboarding pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateForm {
    Pem,
    Der,
    Pkcs12,
}

/// Writes each derived certificate file that is missing or holds another certificate.
fn write_derived_files(confdir: &Path, cert: &X509Ref) -> Result<(), CaError> {
    let ca_der = cert.to_der().map_err(|source| CaError::Encode {
        path: confdir.join(CA_CERT_CER_FILE),
        source,
    })?;
    for (file, form) in [
        (CA_CERT_PEM_FILE, CertificateForm::Pem),
        (CA_CERT_CER_FILE, CertificateForm::Der),
        (CA_CERT_P12_FILE, CertificateForm::Pkcs12),
    ] {
        let path = confdir.join(file);
        let existing = match fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read; rewriting it");
                None
            }
        };
        if let Some(bytes) = &existing {
            if derived_cert_der(&bytes[..], form).as_deref() == Some(&ca_der[..]) {
                continue;
            }
            warn!(path = %path.display(), "holds another certificate than the CA; rewriting it");
        }
        let contents = encode_derived(cert, form).map_err(|source| CaError::Encode {
            path: path.clone(),
            source,
        })?;
        replace_file(&path, &contents).map_err(|source| CaError::Write { path, source })?;
    }
    Ok(())
}

fn derived_cert_der(bytes: &[u8], form: CertificateForm) -> Option<Vec<u8>> {
    let cert = match form {
        CertificateForm::Pem => X509::from_pem(bytes).ok()?,
        CertificateForm::Der => X509::from_der(bytes).ok()?,
        CertificateForm::Pkcs12 => p12_certificate(bytes)?,
    };
    cert.to_der().ok()
}

/// The certificate in a key-less PKCS#12 file. OpenSSL's parser reports a certificate as
/// `cert` only when it matches the key, so ours comes back among the "CA" certificates.
fn p12_certificate(der: &[u8]) -> Option<X509> {
    let parsed = Pkcs12::from_der(der).ok()?.parse2("").ok()?;
    parsed
        .cert
        .or_else(|| parsed.ca.and_then(|certs| certs.into_iter().next()))
}

fn encode_derived(cert: &X509Ref, form: CertificateForm) -> Result<Vec<u8>, ErrorStack> {
    match form {
        CertificateForm::Pem => cert.to_pem(),
        CertificateForm::Der => cert.to_der(),
        CertificateForm::Pkcs12 => Pkcs12::builder()
            .name(CA_COMMON_NAME)
            .cert(cert)
            // -1 = no encryption of the certificate bag, and a SHA-1 MAC: OpenSSL 3's
            // defaults (AES-256, SHA-256 MAC) are refused by the macOS keychain import, and
            // a public certificate has nothing to hide.
            .cert_algorithm(Nid::from_raw(-1))
            .mac_md(MessageDigest::sha1())
            .build2("")?
            .to_der(),
    }
}

fn generate_p256_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn generate_ca() -> Result<(X509, PKey<Private>), ErrorStack> {
    let key = generate_p256_key()?;
    let name = build_name(Some(CA_COMMON_NAME))?;
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let serial = random_serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&key)?;
    let now = unix_now();
    let not_before = Asn1Time::from_unix(to_time_t(now - BACKDATE_SECS))?;
    builder.set_not_before(&not_before)?;
    let not_after = Asn1Time::from_unix(to_time_t(now + CA_VALIDITY_SECS))?;
    builder.set_not_after(&not_after)?;
    builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    builder.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
    builder.append_extension(ski)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok((builder.build(), key))
}

/// `CN=<common_name>, O=Periscope` (no CN when `None`).
fn build_name(common_name: Option<&str>) -> Result<X509Name, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    if let Some(cn) = common_name {
        name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    }
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, ORGANIZATION)?;
    Ok(name.build())
}

/// A random positive 128-bit serial (top bit set, so never zero and always 16 bytes).
fn random_serial() -> Result<Asn1Integer, ErrorStack> {
    let mut serial = BigNum::new()?;
    serial.rand(128, MsbOption::ONE, false)?;
    serial.to_asn1_integer()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// On 32-bit `time_t` platforms dates past 2038 saturate instead of wrapping.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn to_time_t(secs: i64) -> libc::time_t {
    libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ssl::{SslAcceptor, SslConnector, SslMethod};
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::verify::X509VerifyParam;
    use openssl::x509::{X509PurposeId, X509StoreContext, X509VerifyResult};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;

    fn new_ca() -> (tempfile::TempDir, CertificateAuthority) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        (dir, ca)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn dns_sans(cert: &X509Ref) -> Vec<String> {
        cert.subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.dnsname().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn ip_sans(cert: &X509Ref) -> Vec<IpAddr> {
        cert.subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.ipaddress())
                    .map(|bytes| match bytes.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap()),
                        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap()),
                        n => panic!("IP SAN of {n} bytes"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn common_names(cert: &X509Ref) -> Vec<String> {
        cert.subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .map(|e| e.data().to_string().unwrap())
            .collect()
    }

    /// The certificate's text form with whitespace collapsed, for extension checks.
    fn text(cert: &X509Ref) -> String {
        let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Verifies `leaf` the way a TLS client does: trusting only our CA, for TLS server use,
    /// with the name check `configure` sets up.
    fn verify(
        ca: &CertificateAuthority,
        leaf: &LeafCertificate,
        configure: impl FnOnce(&mut X509VerifyParam),
    ) -> X509VerifyResult {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.certificate().to_owned()).unwrap();
        let mut param = X509VerifyParam::new().unwrap();
        param.set_purpose(X509PurposeId::SSL_SERVER).unwrap();
        configure(&mut param);
        store.set_param(&param).unwrap();
        let store = store.build();
        let mut chain = Stack::new().unwrap();
        for cert in &leaf.chain {
            chain.push(cert.clone()).unwrap();
        }
        let mut ctx = X509StoreContext::new().unwrap();
        ctx.init(&store, &leaf.certificate, &chain, |ctx| {
            ctx.verify_cert()?;
            Ok(ctx.error())
        })
        .unwrap()
    }

    fn days_from_now(time: &openssl::asn1::Asn1TimeRef) -> f64 {
        let diff = Asn1Time::days_from_now(0).unwrap().diff(time).unwrap();
        f64::from(diff.days) + f64::from(diff.secs) / 86_400.0
    }

    #[test]
    fn first_start_creates_all_four_files_with_the_right_modes_and_contents() {
        let root = tempfile::tempdir().unwrap();
        let confdir = root.path().join("nested").join("conf");
        let ca = CertificateAuthority::load_or_create(&confdir).unwrap();
        let ca_der = ca.certificate().to_der().unwrap();

        assert_eq!(mode(&confdir), 0o700);
        let key_file = confdir.join(CA_KEY_AND_CERT_FILE);
        assert_eq!(mode(&key_file), 0o600);
        let pem = fs::read(&key_file).unwrap();
        let text_pem = String::from_utf8(pem.clone()).unwrap();
        assert!(text_pem.contains("-----BEGIN PRIVATE KEY-----"));
        assert!(text_pem.contains("-----BEGIN CERTIFICATE-----"));
        let key = PKey::private_key_from_pem(&pem).unwrap();
        assert!(ca.certificate().public_key().unwrap().public_eq(&key));
        assert_eq!(X509::from_pem(&pem).unwrap().to_der().unwrap(), ca_der);

        assert_eq!(ca.cert_pem_path(), confdir.join(CA_CERT_PEM_FILE));
        let cert_pem = fs::read(ca.cert_pem_path()).unwrap();
        assert!(!String::from_utf8_lossy(&cert_pem).contains("PRIVATE KEY"));
        assert_eq!(X509::from_pem(&cert_pem).unwrap().to_der().unwrap(), ca_der);

        let cer = fs::read(confdir.join(CA_CERT_CER_FILE)).unwrap();
        assert_eq!(cer, ca_der);

        let p12 = fs::read(confdir.join(CA_CERT_P12_FILE)).unwrap();
        let parsed = Pkcs12::from_der(&p12).unwrap().parse2("").unwrap();
        assert!(parsed.pkey.is_none(), "the p12 must not hold the CA key");
        let certs: Vec<X509> = parsed
            .cert
            .into_iter()
            .chain(parsed.ca.into_iter().flatten())
            .collect();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].to_der().unwrap(), ca_der);

        let leftovers: Vec<_> = fs::read_dir(&confdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn ca_certificate_is_a_p256_sha256_ca_valid_for_ten_years() {
        let (_dir, ca) = new_ca();
        let cert = ca.certificate();
        assert_eq!(cert.version(), 2);
        assert_eq!(common_names(cert), ["Periscope CA"]);
        let org: Vec<_> = cert
            .subject_name()
            .entries_by_nid(Nid::ORGANIZATIONNAME)
            .map(|e| e.data().to_string().unwrap())
            .collect();
        assert_eq!(org, ["Periscope"]);
        let serial = cert.serial_number().to_bn().unwrap();
        assert_eq!(serial.num_bits(), 128);
        assert!(!serial.is_negative());
        assert_eq!(
            cert.signature_algorithm().object().nid(),
            Nid::ECDSA_WITH_SHA256
        );
        let key = cert.public_key().unwrap().ec_key().unwrap();
        assert_eq!(key.group().curve_name(), Some(Nid::X9_62_PRIME256V1));
        let text = text(cert);
        assert!(
            text.contains("X509v3 Basic Constraints: critical CA:TRUE"),
            "{text}"
        );
        assert!(
            text.contains("X509v3 Key Usage: critical Certificate Sign, CRL Sign"),
            "{text}"
        );
        assert!(cert.subject_key_id().is_some());
        let before = days_from_now(cert.not_before());
        assert!((-2.01..=-1.99).contains(&before), "notBefore {before} days");
        let after = days_from_now(cert.not_after());
        assert!((3649.9..=3650.1).contains(&after), "notAfter {after} days");
    }

    #[test]
    fn second_load_returns_the_same_ca() {
        let (dir, first) = new_ca();
        let second = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(
            first.certificate().to_der().unwrap(),
            second.certificate().to_der().unwrap()
        );
        // Leaves from the reloaded CA chain to the certificate clients already trust.
        let leaf = second.leaf_for("example.com", &[]).unwrap();
        assert_eq!(
            verify(&first, &leaf, |p| p.set_host("example.com").unwrap()),
            X509VerifyResult::OK
        );
    }

    #[test]
    fn corrupt_ca_file_is_an_error_naming_the_path_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CA_KEY_AND_CERT_FILE);
        fs::write(&path, b"-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
        let err = CertificateAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, CaError::InvalidCaFile { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            b"-----BEGIN CERTIFICATE-----\ngarbage\n"
        );
    }

    #[test]
    fn ca_file_whose_key_does_not_match_the_certificate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _key) = generate_ca().unwrap();
        let other_key = generate_p256_key().unwrap();
        let mut pem = other_key.private_key_to_pem_pkcs8().unwrap();
        pem.extend(cert.to_pem().unwrap());
        let path = dir.path().join(CA_KEY_AND_CERT_FILE);
        fs::write(&path, &pem).unwrap();
        let err = CertificateAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn ca_file_without_a_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _key) = generate_ca().unwrap();
        fs::write(
            dir.path().join(CA_KEY_AND_CERT_FILE),
            cert.to_pem().unwrap(),
        )
        .unwrap();
        let err = CertificateAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no PEM private key"), "{err}");
    }

    #[test]
    fn missing_or_stale_derived_files_are_rewritten_on_load() {
        let (dir, ca) = new_ca();
        let ca_der = ca.certificate().to_der().unwrap();
        fs::remove_file(dir.path().join(CA_CERT_CER_FILE)).unwrap();
        fs::remove_file(dir.path().join(CA_CERT_P12_FILE)).unwrap();
        let (other, _) = generate_ca().unwrap();
        fs::write(dir.path().join(CA_CERT_PEM_FILE), other.to_pem().unwrap()).unwrap();

        let reloaded = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(reloaded.certificate().to_der().unwrap(), ca_der);
        assert_eq!(fs::read(dir.path().join(CA_CERT_CER_FILE)).unwrap(), ca_der);
        let pem = fs::read(dir.path().join(CA_CERT_PEM_FILE)).unwrap();
        assert_eq!(X509::from_pem(&pem).unwrap().to_der().unwrap(), ca_der);
        let p12 = fs::read(dir.path().join(CA_CERT_P12_FILE)).unwrap();
        assert_eq!(p12_certificate(&p12).unwrap().to_der().unwrap(), ca_der);
    }

    #[test]
    fn current_derived_files_are_not_rewritten() {
        let (dir, _ca) = new_ca();
        let p12_path = dir.path().join(CA_CERT_P12_FILE);
        let before = fs::read(&p12_path).unwrap();
        CertificateAuthority::load_or_create(dir.path()).unwrap();
        // The p12 has a random salt, so identical bytes mean the file was left alone.
        assert_eq!(fs::read(&p12_path).unwrap(), before);
    }

    #[test]
    fn leaf_for_dns_name_has_dns_san_and_cn_and_the_expected_extensions() {
        let (_dir, ca) = new_ca();
        let leaf = ca.leaf_for("Example.COM", &[]).unwrap();
        let cert = &leaf.certificate;
        assert_eq!(dns_sans(cert), ["example.com"]);
        assert!(ip_sans(cert).is_empty());
        assert_eq!(common_names(cert), ["example.com"]);
        assert_eq!(
            cert.issuer_name().to_der().unwrap(),
            ca.certificate().subject_name().to_der().unwrap()
        );
        assert_eq!(cert.version(), 2);
        assert_eq!(cert.serial_number().to_bn().unwrap().num_bits(), 128);
        assert_eq!(
            cert.signature_algorithm().object().nid(),
            Nid::ECDSA_WITH_SHA256
        );
        let text = text(cert);
        assert!(
            text.contains("X509v3 Basic Constraints: CA:FALSE"),
            "{text}"
        );
        assert!(
            text.contains("X509v3 Key Usage: critical Digital Signature X509v3"),
            "{text}"
        );
        assert!(
            text.contains("X509v3 Extended Key Usage: TLS Web Server Authentication"),
            "{text}"
        );
        assert!(cert.subject_key_id().is_some());
        assert_eq!(
            cert.authority_key_id().unwrap().as_slice(),
            ca.certificate().subject_key_id().unwrap().as_slice()
        );
        assert_eq!(leaf.chain.len(), 1);
        assert_eq!(
            leaf.chain[0].to_der().unwrap(),
            ca.certificate().to_der().unwrap()
        );
        assert!(cert.public_key().unwrap().public_eq(&leaf.key));
    }

    #[test]
    fn leaf_for_ip_literals_has_ip_sans_not_dns() {
        let (_dir, ca) = new_ca();
        for (host, ip) in [
            ("127.0.0.1", IpAddr::from([127, 0, 0, 1])),
            ("::1", IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ("[::1]", IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ("fe80::1%eth0", "fe80::1".parse().unwrap()),
        ] {
            let leaf = ca.leaf_for(host, &[]).unwrap();
            assert_eq!(ip_sans(&leaf.certificate), [ip], "{host}");
            assert!(dns_sans(&leaf.certificate).is_empty(), "{host}");
            assert_eq!(common_names(&leaf.certificate), [ip.to_string()]);
            assert_eq!(
                verify(&ca, &leaf, |p| p.set_ip(ip).unwrap()),
                X509VerifyResult::OK,
                "{host}"
            );
        }
        // `::1` and `[::1]` are the same name, so the same cached leaf.
        assert!(Arc::ptr_eq(
            &ca.leaf_for("::1", &[]).unwrap(),
            &ca.leaf_for("[::1]", &[]).unwrap()
        ));
    }

    #[test]
    fn extra_names_are_added_classified_and_deduplicated() {
        let (_dir, ca) = new_ca();
        let extras: Vec<String> = [
            "www.example.com",
            "WWW.Example.com",
            "example.com", // the host itself
            "*.example.com",
            "10.0.0.1",
            "10.0.0.1",
            "2001:db8::1",
            "2001:0db8:0:0::1",
            "not a name!",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let leaf = ca.leaf_for("example.com", &extras).unwrap();
        let cert = &leaf.certificate;
        assert_eq!(
            dns_sans(cert),
            ["example.com", "*.example.com", "www.example.com"]
        );
        assert_eq!(
            ip_sans(cert),
            [
                IpAddr::from([10, 0, 0, 1]),
                "2001:db8::1".parse::<IpAddr>().unwrap()
            ]
        );
        for host in ["example.com", "www.example.com", "api.example.com"] {
            assert_eq!(
                verify(&ca, &leaf, |p| p.set_host(host).unwrap()),
                X509VerifyResult::OK,
                "{host}"
            );
        }
        assert_eq!(
            verify(&ca, &leaf, |p| p
                .set_ip("2001:db8::1".parse().unwrap())
                .unwrap()),
            X509VerifyResult::OK
        );
    }

    #[test]
    fn leaf_validity_is_backdated_two_days_and_ends_in_a_year() {
        let (_dir, ca) = new_ca();
        let leaf = ca.leaf_for("example.com", &[]).unwrap();
        let before = days_from_now(leaf.certificate.not_before());
        assert!((-2.01..=-1.99).contains(&before), "notBefore {before} days");
        let after = days_from_now(leaf.certificate.not_after());
        assert!((364.99..=365.01).contains(&after), "notAfter {after} days");
    }

    #[test]
    fn leaf_chain_verifies_for_its_name_only() {
        let (_dir, ca) = new_ca();
        let leaf = ca.leaf_for("example.com", &[]).unwrap();
        assert_eq!(
            verify(&ca, &leaf, |p| p.set_host("example.com").unwrap()),
            X509VerifyResult::OK
        );
        let wrong_host = verify(&ca, &leaf, |p| p.set_host("example.org").unwrap());
        assert_ne!(wrong_host, X509VerifyResult::OK);
        let wrong_ip = verify(&ca, &leaf, |p| {
            p.set_ip(IpAddr::from([127, 0, 0, 1])).unwrap()
        });
        assert_ne!(wrong_ip, X509VerifyResult::OK);

        // A leaf signed by another CA must not verify against ours.
        let (_other_dir, other) = new_ca();
        let foreign = other.leaf_for("example.com", &[]).unwrap();
        let foreign_result = verify(&ca, &foreign, |p| p.set_host("example.com").unwrap());
        assert_ne!(foreign_result, X509VerifyResult::OK);
    }

    #[test]
    fn tls_client_trusting_the_ca_completes_a_handshake_with_a_leaf() {
        let (_dir, ca) = new_ca();
        for host in ["example.com", "127.0.0.1", "::1"] {
            let leaf = ca.leaf_for(host, &[]).unwrap();
            let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
            acceptor.set_certificate(&leaf.certificate).unwrap();
            acceptor.set_private_key(&leaf.key).unwrap();
            for cert in &leaf.chain {
                acceptor.add_extra_chain_cert(cert.clone()).unwrap();
            }
            acceptor.check_private_key().unwrap();
            let acceptor = acceptor.build();
            let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
            connector
                .cert_store_mut()
                .add_cert(ca.certificate().to_owned())
                .unwrap();
            let connector = connector.build();

            let (client_sock, server_sock) = UnixStream::pair().unwrap();
            let server = std::thread::spawn(move || {
                let mut tls = acceptor.accept(server_sock).unwrap();
                tls.write_all(b"ok").unwrap();
                tls.shutdown().ok();
            });
            let mut tls = connector
                .connect(host, client_sock)
                .unwrap_or_else(|e| panic!("handshake for {host}: {e}"));
            let mut buf = [0u8; 2];
            io::Read::read_exact(&mut tls, &mut buf).unwrap();
            assert_eq!(&buf, b"ok");
            server.join().unwrap();
        }
    }

    #[test]
    fn long_host_name_gets_no_cn_but_a_san_that_verifies() {
        let (_dir, ca) = new_ca();
        let host = format!("{}.example.com", ["a".repeat(60), "b".repeat(60)].join("."));
        assert!(host.len() > MAX_COMMON_NAME_LEN);
        let leaf = ca.leaf_for(&host, &[]).unwrap();
        assert!(common_names(&leaf.certificate).is_empty());
        assert_eq!(dns_sans(&leaf.certificate), [host.as_str()]);
        assert_eq!(
            verify(&ca, &leaf, |p| p.set_host(&host).unwrap()),
            X509VerifyResult::OK
        );
    }

    #[test]
    fn host_names_are_lowercased_and_wildcards_kept() {
        let (_dir, ca) = new_ca();
        let upper = ca.leaf_for("API.Example.COM.", &[]).unwrap();
        assert_eq!(dns_sans(&upper.certificate), ["api.example.com"]);
        assert!(Arc::ptr_eq(
            &upper,
            &ca.leaf_for("api.example.com", &[]).unwrap()
        ));
        let wildcard = ca.leaf_for("*.Example.com", &[]).unwrap();
        assert_eq!(dns_sans(&wildcard.certificate), ["*.example.com"]);
    }

    #[test]
    fn invalid_host_is_an_error_naming_it() {
        let (_dir, ca) = new_ca();
        for host in [
            "",
            "exa mple.com",
            "a..b",
            "foo.*.com",
            "bücher.de",
            "[not-ip]",
        ] {
            let err = ca.leaf_for(host, &[]).unwrap_err();
            assert!(
                matches!(err, CaError::InvalidHost { .. }),
                "{host}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("{host:?}")), "{err}");
        }
    }

    #[test]
    fn cached_leaf_is_the_same_arc() {
        let (_dir, ca) = new_ca();
        let first = ca.leaf_for("example.com", &[]).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &ca.leaf_for("example.com", &[]).unwrap()
        ));

        let extras = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let with_extras = ca
            .leaf_for("example.com", &extras(&["b.example.com", "a.example.com"]))
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &with_extras));
        // Order and case of the extra names do not matter.
        let reordered = ca
            .leaf_for("example.com", &extras(&["A.example.com", "b.example.com"]))
            .unwrap();
        assert!(Arc::ptr_eq(&with_extras, &reordered));
        assert_eq!(ca.cached_leaf_count(), 2);
    }

    #[test]
    fn all_leaves_share_one_p256_key_and_have_distinct_serials() {
        let (_dir, ca) = new_ca();
        let a = ca.leaf_for("a.example.com", &[]).unwrap();
        let b = ca.leaf_for("b.example.com", &[]).unwrap();
        assert!(a.key.public_eq(&b.key));
        assert_eq!(
            a.key.ec_key().unwrap().group().curve_name(),
            Some(Nid::X9_62_PRIME256V1)
        );
        assert_ne!(
            a.certificate.serial_number().to_bn().unwrap(),
            b.certificate.serial_number().to_bn().unwrap()
        );
        // A different CA instance (another process) has its own leaf key.
        let (_dir2, other) = new_ca();
        let c = other.leaf_for("a.example.com", &[]).unwrap();
        assert!(!a.key.public_eq(&c.key));
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_oldest() {
        let (_dir, ca) = new_ca();
        let ca = ca.with_cache_capacity(3);
        let first = ca.leaf_for("h0.example.com", &[]).unwrap();
        for i in 1..10 {
            ca.leaf_for(&format!("h{i}.example.com"), &[]).unwrap();
            assert!(ca.cached_leaf_count() <= 3);
        }
        assert_eq!(ca.cached_leaf_count(), 3);
        let newest = ca.leaf_for("h9.example.com", &[]).unwrap();
        assert!(Arc::ptr_eq(
            &newest,
            &ca.leaf_for("h9.example.com", &[]).unwrap()
        ));
        // The evicted leaf is minted again: still valid, but a new certificate.
        let again = ca.leaf_for("h0.example.com", &[]).unwrap();
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(ca.cached_leaf_count(), 3);
    }

    #[test]
    fn leaves_for_many_hosts_from_several_threads() {
        let (_dir, ca) = new_ca();
        let ca = Arc::new(ca);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let ca = ca.clone();
                std::thread::spawn(move || {
                    (0..40)
                        .map(|i| {
                            // Half the hosts are shared by all threads, half are per thread.
                            let host = if i % 2 == 0 {
                                format!("shared{i}.example.com")
                            } else {
                                format!("t{t}-{i}.example.com")
                            };
                            let leaf = ca.leaf_for(&host, &[]).unwrap();
                            assert_eq!(dns_sans(&leaf.certificate), [host.as_str()]);
                            (host, leaf)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(ca.cached_leaf_count(), 20 + 8 * 20);
        for (host, leaf) in &results {
            assert_eq!(
                verify(&ca, leaf, |p| p.set_host(host).unwrap()),
                X509VerifyResult::OK
            );
            // Concurrent first calls for one host all end up with the cached leaf.
            assert!(Arc::ptr_eq(leaf, &ca.leaf_for(host, &[]).unwrap()));
        }
    }

    #[test]
    fn certificate_authority_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CertificateAuthority>();
        assert_send_sync::<LeafCertificate>();
    }
}
