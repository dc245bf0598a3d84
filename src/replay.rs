//! `--client-replay FILE`: the requests of a saved session sent again, in their order,
//! with at most `--client-replay-concurrency` in flight; their flows are printed and
//! recorded like live ones, and Periscope exits when the last has ended.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use periscope_flow::filter::Filter;
use periscope_flow::live::RecvError;
use periscope_flow::store::FlowStore;
use periscope_flow::{FlowEvent, FlowId};
use periscope_proxy::FlowBus;

use crate::control::SessionControl;

pub async fn client_replay(
    control: &Arc<SessionControl>,
    bus: &FlowBus,
    file: &Path,
    filter: Option<&Filter>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let source = FlowStore::open_existing(file)
        .with_context(|| format!("cannot open the session to replay, {}", file.display()))?;
    let ids = source
        .ids(filter)
        .with_context(|| format!("cannot read {}", file.display()))?;
    // Subscribed before the first replay starts, so no end is missed.
    let mut events = bus.subscribe();
    let mut queue = ids.into_iter();
    let mut in_flight: HashSet<FlowId> = HashSet::new();
    let mut failed = 0usize;
    loop {
        while in_flight.len() < concurrency.max(1) {
            let Some(id) = queue.next() else { break };
            let Some(flow) = source
                .get(id)
                .with_context(|| format!("cannot read {}", file.display()))?
            else {
                continue;
            };
            match control.proxy().replay(&flow) {
                Ok(new) => {
                    in_flight.insert(new);
                }
                Err(error) => {
                    failed += 1;
                    eprintln!(
                        "periscope: cannot replay {} {}: {error}",
                        flow.request.method,
                        flow.request.url()
                    );
                }
            }
        }
        if in_flight.is_empty() {
            break;
        }
        match events.recv().await {
            Ok(FlowEvent::Completed(flow)) => {
                in_flight.remove(&flow.id);
            }
            Ok(_) => {}
            // Missed events: what is no longer in flight has ended.
            Err(RecvError::Lagged(_)) => {
                in_flight.retain(|id| control.proxy().live_flow(*id).is_some())
            }
            Err(RecvError::Closed) => break,
        }
        // Take what is already queued before starting more.
        while let Ok(event) = events.try_recv() {
            if let FlowEvent::Completed(flow) = event {
                in_flight.remove(&flow.id);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of the session's requests could not be replayed");
    }
    Ok(())
}
