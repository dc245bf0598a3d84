//! The per-connection and per-flow pieces this round changed: reading the client's
//! ClientHello (which now also decides whether the server is offered post-quantum key
//! exchange), and publishing a finished flow on the bus (which now keeps it as unsaved
//! until the store's writer has committed it).
//!
//!     cargo bench --workspace --bench bus_and_hello
//!
//! (`--workspace` builds it on the OpenSSL Periscope ships; `-p periscope-proxy` alone
//! would link the system library, which has no ML-KEM.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use openssl::ssl::{SslConnector, SslMethod};
use periscope_flow::{Flow, FlowEvent};
use periscope_proxy::{parse_client_hello, FlowBus};

/// A flow recorded by the proxy (TLS on both legs, a JSON response).
fn sample_flow() -> Flow {
    serde_json::from_str(include_str!("../../flow/benches/sample_flow.json"))
        .expect("the sample flow parses")
}

/// The ClientHello this build's OpenSSL sends with `groups` (SNI, ALPN h2 + http/1.1).
fn client_hello(groups: &'static str) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
        builder.set_groups_list(groups).unwrap();
        let stream = TcpStream::connect(address).unwrap();
        // Fails once the listener closes; only the hello matters.
        let _ = builder.build().connect("example.com", stream);
    });
    let (mut server, _) = listener.accept().unwrap();
    let mut data = vec![0u8; 16384];
    let mut filled = 0;
    loop {
        let n = server.read(&mut data[filled..]).unwrap();
        filled += n;
        if n == 0 || parse_client_hello(&data[..filled]).unwrap().is_some() {
            break;
        }
    }
    server.flush().unwrap();
    drop(server);
    client.join().unwrap();
    data.truncate(filled);
    data
}

fn hello(c: &mut Criterion) {
    let mut group = c.benchmark_group("client hello");
    let classic = client_hello("X25519:P-256");
    group.bench_function("parse (classic groups)", |b| {
        b.iter(|| parse_client_hello(&classic).unwrap().unwrap())
    });
    // OpenSSL 3.5 on offers a 1,216-byte ML-KEM key share: the largest hello a
    // browser sends today.
    if openssl::version::number() >= 0x3050_0000 {
        let hybrid = client_hello("X25519MLKEM768:X25519");
        group.bench_function("parse (X25519MLKEM768 key share)", |b| {
            b.iter(|| parse_client_hello(&hybrid).unwrap().unwrap())
        });
    }
    group.finish();
}

fn bus(c: &mut Criterion) {
    let flow = Arc::new(sample_flow());
    let mut group = c.benchmark_group("bus");
    group.bench_function("publish a finished flow, no store", |b| {
        let bus = FlowBus::new();
        b.iter(|| bus.publish(FlowEvent::Completed(Arc::clone(&flow))))
    });
    group.bench_function("publish a finished flow, store subscribed, saved", |b| {
        let bus = FlowBus::new();
        let mut store = bus.subscribe_reliable();
        b.iter(|| {
            bus.publish(FlowEvent::Completed(Arc::clone(&flow)));
            let event = store.try_recv().expect("the store's copy");
            bus.saved(std::slice::from_ref(&flow));
            bus.release(FlowBus::cost_of(&event));
        })
    });
    group.finish();
}

criterion_group!(benches, hello, bus);
criterion_main!(benches);
