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
    let dir = tempfile::tempdir().expect("a temporary directory");
    let saved = FlowStore::open(&dir.path().join("bench.periscope")).expect("a session file");
    let temporary = FlowStore::temporary().expect("a temporary session");
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(INSERT_BATCH as u64));
    insert_batches(&mut group, "insert a batch of 100 flows", &saved);
    insert_batches(
        &mut group,
        "insert a batch of 100 flows, temporary session",
        &temporary,
    );
    group.finish();
}

const INSERT_BATCH: usize = 100;

fn insert_batches(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    store: &FlowStore,
) {
    let template = sample_flow();
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                (0..INSERT_BATCH)
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
}

criterion_group!(benches, filters, serialization, store);
criterion_main!(benches);
