//! Changing flows: edit, delete, resume, kill, replay, duplicate, revert, and the
//! answers to what an intercepted flow waits for (a client certificate, a WebSocket
//! message). Each is one [`FlowControl`](periscope_control::FlowControl) call; the
//! running proxy publishes the changed flow on the live feed itself.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use periscope_control::{CertificateChoice, FlowControl, FlowEdit, Injection, MessageDecision};
use periscope_model::FlowId;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::flow_json::{flow_json, Detail};
use crate::flows::parse_id;
use crate::state::{blocking, Shared};

/// Reads a JSON request body. `Content-Type: application/json` is required, as by
/// mitmweb: besides saying what the body is, a browser cannot send it from another
/// site's page without asking first (a CORS preflight, which the API never grants).
pub fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON, sent with Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed body: {e}")))
}

/// Runs one control call for the flow in the path, on the blocking pool.
async fn on_flow<T: Send + 'static>(
    shared: Arc<Shared>,
    id: &str,
    call: impl FnOnce(&dyn FlowControl, FlowId) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let id = parse_id(id)?;
    blocking(move || call(shared.control.as_ref(), id)).await
}

fn done() -> Json<Value> {
    Json(json!({}))
}

/// `PUT /flows/{id}`: a partial edit in mitmweb's shape; answers the edited flow.
pub async fn edit(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut edit: Value = json_body(&headers, &body)?;
    accept_mitmweb_names(&mut edit);
    let edit: FlowEdit = serde_json::from_value(edit)
        .map_err(|e| ApiError::bad_request(format!("malformed edit: {e}")))?;
    let flow = on_flow(shared, &id, move |control, id| Ok(control.edit(id, edit)?)).await?;
    Ok(Json(flow_json(&flow, Detail::Full)))
}

/// mitmweb's front end and scripts send a response's status as `code`; the edit type
/// calls it `status_code`.
fn accept_mitmweb_names(edit: &mut Value) {
    if let Some(response) = edit.get_mut("response").and_then(Value::as_object_mut) {
        if !response.contains_key("status_code") {
            if let Some(code) = response.remove("code") {
                response.insert("status_code".to_owned(), code);
            }
        }
    }
}

/// `DELETE /flows/{id}`.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    on_flow(shared, &id, |control, id| Ok(control.delete(id)?)).await?;
    Ok(done())
}

pub async fn resume(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    on_flow(shared, &id, |control, id| Ok(control.resume(id)?)).await?;
    Ok(done())
}

pub async fn kill(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    on_flow(shared, &id, |control, id| Ok(control.kill(id)?)).await?;
    Ok(done())
}

/// `POST /flows/{id}/replay`: answers `{"id": "<the new flow>"}`.
pub async fn replay(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let new = on_flow(shared, &id, |control, id| Ok(control.replay(id)?)).await?;
    Ok(Json(json!({ "id": new })))
}

/// `POST /flows/{id}/duplicate`: answers `{"id": "<the copy>"}`.
pub async fn duplicate(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let new = on_flow(shared, &id, |control, id| Ok(control.duplicate(id)?)).await?;
    Ok(Json(json!({ "id": new })))
}

/// `POST /flows/{id}/revert`: answers the flow as recorded.
pub async fn revert(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let flow = on_flow(shared, &id, |control, id| Ok(control.revert(id)?)).await?;
    Ok(Json(flow_json(&flow, Detail::Full)))
}

/// `POST /flows/resume`: answers `{"resumed": n}`.
pub async fn resume_all(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let resumed = blocking(move || Ok(shared.control.resume_all())).await?;
    Ok(Json(json!({ "resumed": resumed })))
}

/// `POST /flows/kill`: answers `{"killed": n}`.
pub async fn kill_all(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let killed = blocking(move || Ok(shared.control.kill_all())).await?;
    Ok(Json(json!({ "killed": killed })))
}

/// `POST /flows/{id}/client-certificate`, body [`CertificateChoice`].
pub async fn client_certificate(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let choice: CertificateChoice = json_body(&headers, &body)?;
    on_flow(shared, &id, move |control, id| {
        Ok(control.choose_client_certificate(id, choice)?)
    })
    .await?;
    Ok(done())
}

/// `POST /flows/{id}/websocket/decision`, body [`MessageDecision`].
pub async fn websocket_decision(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let decision: MessageDecision = json_body(&headers, &body)?;
    on_flow(shared, &id, move |control, id| {
        Ok(control.decide_message(id, decision)?)
    })
    .await?;
    Ok(done())
}

/// `POST /flows/{id}/websocket/inject`, body [`Injection`].
pub async fn websocket_inject(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let injection: Injection = json_body(&headers, &body)?;
    on_flow(shared, &id, move |control, id| {
        Ok(control.inject_message(id, injection)?)
    })
    .await?;
    Ok(done())
}

/// `POST /clear` (mitmweb's): deletes every flow that has ended, those not yet in
/// the session store included; flows in flight go on and are recorded when they end.
/// Answers once the store is empty; every `/updates` WebSocket gets `flows/reset`
/// from the live feed then.
pub async fn clear(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let control = Arc::clone(&shared.control);
    blocking(move || Ok(control.clear()?)).await?;
    Ok(done())
}
