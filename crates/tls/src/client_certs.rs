//! Client certificates to present when a server asks (`--client-certs`): one PEM
//! file for every host, or a directory of `<host>.pem` files (mitmproxy's layout).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::certs::format_name;
use crate::error::ClientCertError;

/// A certificate with its key, and any intermediates to send with it.
pub struct ClientIdentity {
    pub certificate: X509,
    pub key: PKey<Private>,
    pub chain: Vec<X509>,
    pub subject: String,
    pub source: PathBuf,
}

impl ClientIdentity {
    /// Reads a PEM file holding a certificate, its private key and optionally a chain.
    pub fn load(path: &Path) -> Result<Self, ClientCertError> {
        let pem = std::fs::read(path).map_err(|source| ClientCertError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| ClientCertError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let mut certs = X509::stack_from_pem(&pem)
            .map_err(|e| invalid(format!("no readable certificate ({e})")))?
            .into_iter();
        let certificate = certs
            .next()
            .ok_or_else(|| invalid("no certificate in the file".into()))?;
        let key = PKey::private_key_from_pem(&pem)
            .map_err(|e| invalid(format!("no readable private key ({e})")))?;
        let matches = certificate
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(invalid(
                "the private key does not belong to the first certificate".into(),
            ));
        }
        Ok(ClientIdentity {
            subject: format_name(certificate.subject_name()),
            certificate,
            key,
            chain: certs.collect(),
            source: path.to_owned(),
        })
    }
}

/// Which identity to present to which host.
pub struct ClientCertificates {
    for_every_host: Option<Arc<ClientIdentity>>,
    by_host: HashMap<String, Arc<ClientIdentity>>,
}

impl ClientCertificates {
    /// A file: one identity for every host. A directory: `<host>.pem` per host
    /// (files that fail to load are errors: a typo must not silently mean "no cert").
    pub fn load(path: &Path) -> Result<Self, ClientCertError> {
        let metadata = std::fs::metadata(path).map_err(|source| ClientCertError::Read {
            path: path.to_owned(),
            source,
        })?;
        if metadata.is_file() {
            return Ok(ClientCertificates {
                for_every_host: Some(Arc::new(ClientIdentity::load(path)?)),
                by_host: HashMap::new(),
            });
        }
        let entries = std::fs::read_dir(path).map_err(|source| ClientCertError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut by_host = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| ClientCertError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file = entry.path();
            if file.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let Some(host) = file.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let identity = ClientIdentity::load(&file)?;
            by_host.insert(host.to_ascii_lowercase(), Arc::new(identity));
        }
        Ok(ClientCertificates {
            for_every_host: None,
            by_host,
        })
    }

    pub fn for_host(&self, host: &str) -> Option<Arc<ClientIdentity>> {
        self.by_host
            .get(&host.to_ascii_lowercase())
            .or(self.for_every_host.as_ref())
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.for_every_host.is_none() && self.by_host.is_empty()
    }
}
