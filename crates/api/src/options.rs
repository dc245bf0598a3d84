//! `GET /options` and `PUT /options`: the options a user changes while the proxy runs.
//! A change made here is announced on the updates WebSocket (`options/update`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use periscope_control::{Options, OptionsUpdate};

use crate::actions::json_body;
use crate::error::ApiError;
use crate::flows::parse_filter;
use crate::state::{blocking, Shared};

pub async fn get(State(shared): State<Arc<Shared>>) -> Result<Json<Options>, ApiError> {
    Ok(Json(blocking(move || Ok(shared.control.options())).await?))
}

/// Applies an [`OptionsUpdate`]; a bad value answers 400 with the reason and changes
/// nothing.
pub async fn put(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Options>, ApiError> {
    let update: OptionsUpdate = json_body(&headers, &body)?;
    // The proxy checks too; checking here first gives the same answer (and message)
    // whatever the FlowControl implementation does.
    if let Some(intercept) = &update.intercept {
        parse_filter(Some(intercept))
            .map_err(|e| ApiError::bad_request(format!("intercept: {}", e.message)))?;
    }
    let options = {
        let shared = Arc::clone(&shared);
        blocking(move || {
            // Only options the proxy has can be set (it says which in `options()`).
            let known = shared.control.options().settings;
            if let Some(name) = update.settings.keys().find(|k| !known.contains_key(*k)) {
                return Err(ApiError::bad_request(format!("unknown option {name:?}")));
            }
            Ok(shared.control.set_options(update)?)
        })
        .await?
    };
    shared
        .announce(serde_json::json!({ "type": "options/update", "payload": options }).to_string());
    Ok(Json(options))
}
