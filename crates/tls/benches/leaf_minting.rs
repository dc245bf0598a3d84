//! Leaf certificates per host: a cache hit is what nearly every CONNECT costs, a miss
//! (a P-256 signature with the CA key) what the first one to a host costs.
//!
//!     cargo bench -p periscope-tls --features vendored --bench leaf_minting
//!
//! (`--features vendored`: the OpenSSL the proxy ships with, not the system's.)

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use periscope_tls::CertificateAuthority;

fn leaf_minting(c: &mut Criterion) {
    let confdir = tempfile::tempdir().expect("a temporary directory");
    let ca = CertificateAuthority::load_or_create(confdir.path()).expect("a CA");
    ca.leaf_for("warm.example.com", &[]).expect("a leaf");
    c.bench_function("leaf for a cached host", |b| {
        b.iter(|| ca.leaf_for("warm.example.com", &[]).expect("a leaf"))
    });
    let next = AtomicU64::new(0);
    c.bench_function("leaf for a new host", |b| {
        b.iter(|| {
            let host = format!("host{}.example.com", next.fetch_add(1, Ordering::Relaxed));
            ca.leaf_for(&host, &[]).expect("a leaf")
        })
    });
}

criterion_group!(benches, leaf_minting);
criterion_main!(benches);
