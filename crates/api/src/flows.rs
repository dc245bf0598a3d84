//! Reading flows: the filtered, paged list (the session store's flows, then the flows
//! in flight), counts, one flow, its bodies, and the event log.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use periscope_control::ControlError;
use periscope_flow::content::decode_body;
use periscope_flow::filter::Filter;
use periscope_flow::store::{ListOrder, SortBy};
use periscope_model::{Flow, FlowId, Headers};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::flow_json::{flow_json, Detail, LogJson};
use crate::state::{blocking, Shared};

/// Flows a page holds when the caller does not say.
pub const DEFAULT_PAGE: usize = 1_000;
/// The most flows one page may hold: a page is built in memory.
pub const MAX_PAGE: usize = 10_000;
/// Log entries `GET /events` returns when the caller does not say.
pub const DEFAULT_EVENTS: usize = 1_000;

pub fn parse_id(text: &str) -> Result<FlowId, ApiError> {
    text.parse::<uuid::Uuid>()
        .map(FlowId)
        .map_err(|_| ApiError::not_found(format!("no flow {text:?}: not a flow id")))
}

/// `None` for an absent or blank filter (every flow); a bad one is the caller's error.
pub fn parse_filter(text: Option<&str>) -> Result<Option<Filter>, ApiError> {
    match text {
        None => Ok(None),
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => Filter::parse(text)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("invalid filter {text:?}: {e}"))),
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The flow in flight with this id (with its intercept state), else the recorded one.
/// Blocking: it may read the store.
pub fn find_flow(shared: &Shared, id: FlowId) -> Result<Flow, ApiError> {
    match shared.control.flow(id) {
        Ok(flow) => Ok(flow),
        // FlowControl reads recorded flows too; the store is asked again so the API
        // finds every recorded flow whatever the implementation covers.
        Err(ControlError::NotFound(_)) => shared
            .store
            .get(id)?
            .ok_or_else(|| ApiError::not_found(format!("no flow {id}"))),
        Err(other) => Err(other.into()),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    filter: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
    /// A column of [`SortBy`] (`time` when absent).
    sort: Option<String>,
    /// `asc` (the default) or `desc`.
    order: Option<String>,
    /// Flows of the page that match this filter carry `"highlighted": true`.
    highlight: Option<String>,
}

fn list_order(sort: Option<&str>, order: Option<&str>) -> Result<ListOrder, ApiError> {
    let by = match sort {
        None | Some("") => SortBy::Time,
        Some(text) => SortBy::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "cannot sort by {text:?}: one of time, method, url, status, size, duration, tls"
            ))
        })?,
    };
    let descending = match order {
        None | Some("" | "asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order {other:?}: asc or desc"
            )))
        }
    };
    Ok(ListOrder { by, descending })
}

/// `GET /flows`: the stored flows matching the filter in time order, then the flows in
/// flight that match it, `offset` and `limit` counted across both.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let params = query(params)?;
    let filter = parse_filter(params.filter.as_deref())?;
    let highlight = parse_filter(params.highlight.as_deref())?;
    let order = list_order(params.sort.as_deref(), params.order.as_deref())?;
    let offset = params.offset.unwrap_or(0);
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let page = blocking(move || {
        let view = View {
            filter: filter.as_ref(),
            order,
            highlight: highlight.as_ref(),
        };
        page(&shared, &view, offset, limit)
    })
    .await?;
    Ok(Json(page))
}

fn in_flight_matching(shared: &Shared, filter: Option<&Filter>) -> Vec<Flow> {
    let mut flows = shared.control.flows_in_flight();
    if let Some(filter) = filter {
        flows.retain(|flow| filter.matches(flow));
    }
    flows
}

/// What a page shows: which flows, in which order, which of them highlighted.
struct View<'a> {
    filter: Option<&'a Filter>,
    order: ListOrder,
    highlight: Option<&'a Filter>,
}

impl View<'_> {
    fn json(&self, flow: &Flow) -> Value {
        let mut json = flow_json(flow, Detail::Summary);
        if let (Some(highlight), Some(object)) = (self.highlight, json.as_object_mut()) {
            object.insert("highlighted".to_owned(), highlight.matches(flow).into());
        }
        json
    }
}

/// The stored flows in the view's order, then the flows in flight (in the order they
/// started, whatever the sort: they are still changing).
fn page(
    shared: &Shared,
    view: &View<'_>,
    offset: usize,
    limit: usize,
) -> Result<Vec<Value>, ApiError> {
    let filter = view.filter;
    let in_flight = in_flight_matching(shared, filter);
    let in_flight_ids: HashSet<FlowId> = in_flight.iter().map(|flow| flow.id).collect();
    // A flow stored and still in flight (a WebSocket, or a flow being saved) is listed
    // once, with the flows in flight: the store's page leaves it out before it is
    // cut, as `count` does, so pages neither skip nor repeat a row.
    let summaries =
        shared
            .store
            .summaries_sorted(filter, view.order, offset, limit, &in_flight_ids)?;
    let mut page = Vec::with_capacity(summaries.len());
    for summary in &summaries {
        // Deleted since the summaries were read: skipped.
        if let Some(flow) = shared.store.get(summary.id)? {
            page.push(view.json(&flow));
        }
    }
    if summaries.len() < limit {
        // The page reaches past the stored flows: the flows in flight follow them.
        let stored = if !summaries.is_empty() || offset == 0 {
            offset + summaries.len()
        } else {
            shared.store.count_except(filter, &in_flight_ids)?
        };
        let skip = offset.saturating_sub(stored);
        let room = limit - summaries.len();
        page.extend(
            in_flight
                .iter()
                .skip(skip)
                .take(room)
                .map(|flow| view.json(flow)),
        );
    }
    Ok(page)
}

#[derive(Deserialize)]
pub struct CountQuery {
    filter: Option<String>,
}

/// `GET /flows/count`: `{"count": n, "stored": s, "in_flight": f}`.
pub async fn count(
    State(shared): State<Arc<Shared>>,
    params: Result<Query<CountQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let filter = parse_filter(query(params)?.filter.as_deref())?;
    let (stored, in_flight) = blocking(move || {
        // In flight first: a flow that is saved after this read is then in the store,
        // counted once (as in flight) since the count leaves the flows in flight out.
        let in_flight: HashSet<FlowId> = in_flight_matching(&shared, filter.as_ref())
            .iter()
            .map(|flow| flow.id)
            .collect();
        let stored = shared.store.count_except(filter.as_ref(), &in_flight)?;
        Ok((stored, in_flight.len()))
    })
    .await?;
    Ok(Json(serde_json::json!({
        "count": stored + in_flight,
        "stored": stored,
        "in_flight": in_flight,
    })))
}

/// `GET /flows/{id}`: the flow with its WebSocket messages.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let flow = blocking(move || find_flow(&shared, id)).await?;
    Ok(Json(flow_json(&flow, Detail::Full)))
}

#[derive(Deserialize)]
pub struct ContentQuery {
    #[serde(default)]
    decode: bool,
}

#[derive(Clone, Copy)]
pub enum Part {
    Request,
    Response,
}

pub async fn request_content(
    state: State<Arc<Shared>>,
    id: Path<String>,
    params: Result<Query<ContentQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    content(state, id, params, Part::Request).await
}

pub async fn response_content(
    state: State<Arc<Shared>>,
    id: Path<String>,
    params: Result<Query<ContentQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    content(state, id, params, Part::Response).await
}

/// `GET /flows/{id}/{request|response}/content.data`: the recorded body bytes with
/// the recorded content type; `?decode=true` undoes Content-Encoding.
///
/// The bytes come from whoever the proxy talked to, and a browser would run an HTML
/// body as a page of the API's own origin, where it could call the API. So the
/// answer is a sandbox (`Content-Security-Policy: sandbox`: an origin of its own,
/// no scripts) that is never sniffed into another type.
async fn content(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    params: Result<Query<ContentQuery>, QueryRejection>,
    part: Part,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let decode = query(params)?.decode;
    let flow = blocking(move || find_flow(&shared, id)).await?;
    let (headers, body) = match part {
        Part::Request => (&flow.request.headers, &flow.request.body),
        Part::Response => match &flow.response {
            Some(response) => (&response.headers, &response.body),
            None => return Err(ApiError::not_found(format!("flow {id} has no response"))),
        },
    };
    let bytes = if decode {
        let encoding = headers.get_str("content-encoding");
        decode_body(encoding.as_deref(), &body.content)
            .map_err(|e| {
                ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            })?
            .into_owned()
    } else {
        body.content.to_vec()
    };
    let mut response = bytes.into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, content_type(headers));
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if body.truncated {
        out.insert("x-periscope-truncated", HeaderValue::from_static("true"));
    }
    out.insert("x-periscope-body-size", HeaderValue::from(body.size));
    Ok(response)
}

fn content_type(headers: &Headers) -> HeaderValue {
    headers
        .get("content-type")
        .and_then(|h| HeaderValue::from_bytes(&h.value).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    limit: Option<usize>,
}

/// `GET /events`: the last log entries of the session, oldest first.
pub async fn events(
    State(shared): State<Arc<Shared>>,
    params: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let limit = query(params)?.limit.unwrap_or(DEFAULT_EVENTS).min(MAX_PAGE);
    let entries = {
        let shared = Arc::clone(&shared);
        blocking(move || Ok(shared.store.log_entries(limit)?)).await?
    };
    let json = entries
        .iter()
        .map(|entry| serde_json::to_value(LogJson::new(shared.log_id(), entry)).unwrap_or_default())
        .collect();
    Ok(Json(json))
}
