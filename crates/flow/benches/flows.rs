//! The per-flow work outside the relay: matching filters (dump, the console, store
//! queries), serializing a flow (JSON for `--json`, HAR entries) and writing flows to
//! the session store in the batches the recorder uses.
//!
//!     cargo bench -p periscope-flow --bench flows

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use periscope_flow::filter::Filter;
use periscope_flow::store::FlowStore;
use periscope_flow::{Flow, FlowId};

/// A flow recorded by the proxy (TLS on both legs, a JSON response).
fn sample_flow() -> Flow {
    serde_json::from_str(include_str!("sample_flow.json")).expect("the sample flow parses")
}

fn filters(c: &mut Criterion) {
    let flow = sample_flow();
    let mut group = c.benchmark_group("filter");
    for text in [
        "~d localhost",
        "~c 200 & ~m GET",
        "!(~d example.org | ~u /static/) & ~t json",
        "~b periscope",
        "~tls renegotiation",
    ] {
        let filter = Filter::parse(text).expect("a valid filter");
        group.bench_function(format!("match {text:?}"), |b| {
            b.iter(|| filter.matches(&flow))
        });
    }
    group.bench_function("parse a compound filter", |b| {
        b.iter(|| Filter::parse("!(~d example.org | ~u /static/) & ~t json & ~c 200"))
    });
    group.finish();
}

fn serialization(c: &mut Criterion) {
    let flow = sample_flow();
    let json = serde_json::to_vec(&flow).expect("the flow encodes");
    let mut group = c.benchmark_group("serialize");
    group.throughput(Throughput::Elements(1));
    group.bench_function("flow to JSON", |b| {
        b.iter(|| serde_json::to_vec(&flow).expect("the flow encodes"))
    });
    group.bench_function("flow from JSON", |b| {
        b.iter(|| serde_json::from_slice::<Flow>(&json).expect("the flow decodes"))
    });
    group.bench_function("HAR entry", |b| {
        b.iter(|| periscope_flow::har::entry(&flow))
    });
    group.finish();
}

fn store(c: &mut Criterion) {
    const BATCH: usize = 100;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = FlowStore::open(&dir.path().join("bench.periscope")).expect("a session file");
    let template = sample_flow();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("insert a batch of 100 flows", |b| {
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|_| {
                        let mut flow = template.clone();
                        flow.id = FlowId::new();
                        Arc::new(flow)
                    })
                    .collect::<Vec<_>>()
            },
            |flows| store.insert_many(&flows).expect("the batch is stored"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, filters, serialization, store);
criterion_main!(benches);
