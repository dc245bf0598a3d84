//! Certificates as people read them: names, SANs, fingerprints.

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509Ref};
use periscope_model::CertificateSummary;

/// `C=US, O=Example, CN=www.example.com`, in the certificate's own order.
pub fn format_name(name: &X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry
                .data()
                .to_string()
                .unwrap_or_else(|_| String::from_utf8_lossy(entry.data().as_slice()).into_owned());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The common name, or the whole subject when there is none.
pub fn common_name(name: &X509NameRef) -> String {
    name.entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|entry| entry.data().to_string().ok())
        .unwrap_or_else(|| format_name(name))
}

pub fn summarize(cert: &X509Ref) -> CertificateSummary {
    let subject_alt_names = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|name| {
                    if let Some(dns) = name.dnsname() {
                        Some(format!("DNS:{dns}"))
                    } else if let Some(ip) = name.ipaddress() {
                        ip_to_string(ip).map(|ip| format!("IP:{ip}"))
                    } else {
                        name.email().map(|email| format!("email:{email}"))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let sha256_fingerprint = cert
        .digest(MessageDigest::sha256())
        .map(|digest| {
            digest
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default();
    let serial = cert
        .serial_number()
        .to_bn()
        .ok()
        .and_then(|bn| bn.to_hex_str().ok().map(|s| s.to_string()))
        .unwrap_or_default();
    CertificateSummary {
        subject: format_name(cert.subject_name()),
        issuer: format_name(cert.issuer_name()),
        subject_alt_names,
        not_before: cert.not_before().to_string(),
        not_after: cert.not_after().to_string(),
        serial,
        sha256_fingerprint,
    }
}

fn ip_to_string(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => {
            let octets: [u8; 4] = bytes.try_into().ok()?;
            Some(std::net::Ipv4Addr::from(octets).to_string())
        }
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(std::net::Ipv6Addr::from(octets).to_string())
        }
        _ => None,
    }
}
