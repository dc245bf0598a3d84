//! Session files in and out (mitmweb's `/flows/dump`): `GET` writes the flows that
//! match a filter to a new session file and sends it; `POST` takes a session file
//! and adds its flows to the running session.
//!
//! A session file is the store's SQLite file. It is built in (or read from) a
//! private temporary directory, whose file is read only after the store's last
//! connection closed, so that nothing is left in its write-ahead log.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use periscope_flow::scratch::ScratchDir;
use periscope_flow::store::FlowStore;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::flows::parse_filter;
use crate::state::{blocking, Shared};

/// Flows written to the session per transaction when a file is opened.
const BATCH: usize = 500;

#[derive(Deserialize)]
pub struct DumpQuery {
    filter: Option<String>,
}

/// A directory for a session being saved or opened, removed with what is in it when
/// dropped (or by the next Periscope if this one is killed meanwhile).
fn scratch() -> Result<ScratchDir, ApiError> {
    ScratchDir::create("periscope-transfer-")
        .map_err(|e| ApiError::internal(format!("cannot make a temporary directory: {e}")))
}

/// `GET /flows/dump?filter=`: the matching flows as a session file.
pub async fn save(
    State(shared): State<Arc<Shared>>,
    params: Result<Query<DumpQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = parse_filter(params.filter.as_deref())?;
    let bytes = blocking(move || {
        let scratch = scratch()?;
        let path = scratch.path().join("session.periscope");
        {
            let copy = FlowStore::open(&path)?;
            let mut failure = None;
            shared
                .store
                .try_for_each(filter.as_ref(), |flow| match copy.insert(&flow) {
                    Ok(()) => std::ops::ControlFlow::Continue(()),
                    Err(error) => {
                        failure = Some(error);
                        std::ops::ControlFlow::Break(())
                    }
                })?;
            if let Some(error) = failure {
                return Err(error.into());
            }
        }
        std::fs::read(&path)
            .map_err(|e| ApiError::internal(format!("cannot read the session file: {e}")))
    })
    .await?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"flows.periscope\""),
    );
    Ok(response)
}

/// `POST /flows/dump`, the body a session file (`Content-Type:
/// application/octet-stream`, which a page elsewhere cannot send without a CORS
/// preflight, as with JSON): its flows join the session. Answers `{"added": n}`;
/// every `/updates` WebSocket gets `flows/reset`.
pub async fn open(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !content_type.eq_ignore_ascii_case("application/octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the session file as Content-Type: application/octet-stream",
        ));
    }
    let session = Arc::clone(&shared);
    let added = blocking(move || {
        let scratch = scratch()?;
        let path = scratch.path().join("upload.periscope");
        std::fs::write(&path, &body)
            .map_err(|e| ApiError::internal(format!("cannot keep the upload: {e}")))?;
        let upload = FlowStore::open_existing(&path)
            .map_err(|e| ApiError::bad_request(format!("not a session file: {e}")))?;
        let mut batch = Vec::with_capacity(BATCH);
        let mut added = 0;
        let mut failure = None;
        upload
            .try_for_each(None, |flow| {
                batch.push(Arc::new(flow));
                if batch.len() == BATCH {
                    if let Err(error) = session.store.insert_many(&batch) {
                        failure = Some(error);
                        return std::ops::ControlFlow::Break(());
                    }
                    added += batch.len();
                    batch.clear();
                }
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| ApiError::bad_request(format!("not a session file: {e}")))?;
        if let Some(error) = failure {
            return Err(error.into());
        }
        session.store.insert_many(&batch)?;
        Ok(added + batch.len())
    })
    .await?;
    shared.announce(json!({"type": "flows/reset"}).to_string());
    Ok(Json(json!({ "added": added })))
}
