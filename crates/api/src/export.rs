//! `GET /flows/{id}/export/{format}`: a flow as a curl or HTTPie command line, as
//! raw HTTP, or as HAR.
//!
//! The formats themselves live in `periscope_flow::export`; the API reaches them
//! through [`FlowExporter`], which the binary implements (`src/export.rs`), so this
//! crate does not depend on their signatures.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use periscope_model::Flow;

use crate::error::ApiError;
use crate::flows::{find_flow, parse_id};
use crate::state::{blocking, Shared};

/// A format a flow can be exported in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A `curl` command line that sends the request again.
    Curl,
    /// An HTTPie (`http`) command line.
    Httpie,
    /// The request and the response as raw HTTP/1.1.
    Raw,
    RawRequest,
    RawResponse,
    /// A HAR 1.2 document with this one entry.
    Har,
}

impl ExportFormat {
    /// The format a path segment names (mitmproxy's `export` names).
    pub fn from_name(name: &str) -> Option<ExportFormat> {
        Some(match name {
            "curl" => ExportFormat::Curl,
            "httpie" => ExportFormat::Httpie,
            "raw" => ExportFormat::Raw,
            "raw-request" | "raw_request" => ExportFormat::RawRequest,
            "raw-response" | "raw_response" => ExportFormat::RawResponse,
            "har" => ExportFormat::Har,
            _ => return None,
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Curl | ExportFormat::Httpie => "text/plain; charset=utf-8",
            ExportFormat::Har => "application/json",
            // Raw HTTP may carry any bytes in its bodies.
            ExportFormat::Raw | ExportFormat::RawRequest | ExportFormat::RawResponse => {
                "application/octet-stream"
            }
        }
    }
}

/// Turns a flow into one of the export formats; `Err` says why it cannot (a raw
/// response of a flow without one).
pub trait FlowExporter: Send + Sync {
    fn export(&self, flow: &Flow, format: ExportFormat) -> Result<Vec<u8>, String>;
}

pub async fn export(
    State(shared): State<Arc<Shared>>,
    Path((id, format)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let format = ExportFormat::from_name(&format).ok_or_else(|| {
        ApiError::not_found(format!(
            "no export format {format:?}: curl, httpie, raw, raw-request, raw-response or har"
        ))
    })?;
    let Some(exporter) = shared.exporter.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "export is not available in this build",
        ));
    };
    let bytes = blocking(move || {
        let flow = find_flow(&shared, id)?;
        exporter
            .export(&flow, format)
            .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))
    })
    .await?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_are_mitmproxys() {
        assert_eq!(ExportFormat::from_name("curl"), Some(ExportFormat::Curl));
        assert_eq!(
            ExportFormat::from_name("raw-response"),
            Some(ExportFormat::RawResponse)
        );
        assert_eq!(ExportFormat::from_name("har"), Some(ExportFormat::Har));
        assert_eq!(ExportFormat::from_name("wget"), None);
    }
}
