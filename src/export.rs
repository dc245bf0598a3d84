//! `periscope export`: a saved session (or part of it) as HAR 1.2.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;
use periscope_flow::filter::Filter;
use periscope_flow::har::HarWriter;
use periscope_flow::store::FlowStore;

/// Writes the flows of `session` that match `filter` to `out` as HAR; returns how many.
pub fn har(session: &Path, out: &Path, filter: Option<&Filter>) -> anyhow::Result<usize> {
    // The store's errors name the file.
    let store = FlowStore::open_existing(session)?;
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer = HarWriter::new(BufWriter::new(file), env!("CARGO_PKG_VERSION"))
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut failure = None;
    store.try_for_each(filter, |flow| match writer.write_flow(&flow) {
        Ok(()) => std::ops::ControlFlow::Continue(()),
        Err(error) => {
            failure = Some(error);
            std::ops::ControlFlow::Break(())
        }
    })?;
    if let Some(error) = failure {
        return Err(error).with_context(|| format!("cannot write {}", out.display()));
    }
    let written = writer.entries();
    writer
        .finish()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(written)
}

/// Exports one flow for the control API: as a command line that sends its request
/// again, as raw HTTP, or as HAR.
pub struct Exporter;

impl periscope_api::FlowExporter for Exporter {
    fn export(
        &self,
        flow: &periscope_flow::Flow,
        format: periscope_api::ExportFormat,
    ) -> Result<Vec<u8>, String> {
        use periscope_api::ExportFormat;
        use periscope_flow::export;
        Ok(match format {
            ExportFormat::Curl => export::curl(flow).into_bytes(),
            ExportFormat::Httpie => export::httpie(flow).into_bytes(),
            ExportFormat::Raw => export::raw(flow),
            ExportFormat::RawRequest => export::raw_request(flow),
            ExportFormat::RawResponse => {
                export::raw_response(flow).ok_or_else(|| "the flow has no response".to_owned())?
            }
            ExportFormat::Har => serde_json::to_vec_pretty(&periscope_flow::har::to_har(
                [flow.clone()],
                env!("CARGO_PKG_VERSION"),
            ))
            .map_err(|e| e.to_string())?,
        })
    }
}
