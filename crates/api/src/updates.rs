//! `GET /updates`: a WebSocket that tells a front end what changes, as it happens, in
//! mitmweb's messages (`{"type": ..., "payload": ...}`), from the live feed:
//!
//! | live feed event | message |
//! |---|---|
//! | `RequestReceived` (first time) | `flows/add` |
//! | `RequestReceived` (again), `Updated` | `flows/update` |
//! | `Completed` | `flows/update` if this socket announced the flow, else `flows/add` |
//! | `Removed(id)` | `flows/remove` (payload: the id) |
//! | `Cleared` (the session store is empty now) | `flows/reset` |
//! | `Log` | `events/add` |
//! | `WebSocketMessage` | `flows/websocketMessage` (Periscope's own) |
//! | missed events (this socket fell behind) | `flows/reset` and `events/reset`: reload |
//!
//! Flow messages carry `{"flow": ..., "matching_filters": {name: bool}}` for the
//! filters this socket registered with `flows/updateFilter`, as mitmweb's do.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use periscope_flow::filter::Filter;
use periscope_flow::live::{FlowReceiver, RecvError};
use periscope_model::{Flow, FlowEvent, FlowId};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::flow_json::{flow_json, Detail, LogJson, MessageJson};
use crate::flows::parse_filter;
use crate::state::{blocking, Shared};

/// A socket that takes longer than this to accept one message is closed: it holds
/// its share of the live feed's ring while it does not read.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Client messages are small commands; nothing bigger is read.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// WebSocket close code 1001: the server is going away.
const GOING_AWAY: u16 = 1001;
/// WebSocket close code 1008: the client broke the protocol.
const POLICY_VIOLATION: u16 = 1008;

pub async fn updates(
    State(shared): State<Arc<Shared>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // Subscribed before the flows in flight are read: a flow that starts in between
    // is in both, and shows as an update rather than being missed.
    let feed = shared.feed.subscribe();
    let announced = in_flight_ids(&shared).await?;
    let updates = Updates {
        announcements: shared.announcements.subscribe(),
        shared,
        feed,
        announced,
        filters: BTreeMap::new(),
    };
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| updates.run(socket)))
}

/// The flows the client has seen in `GET /flows`, or will: those in flight.
async fn in_flight_ids(shared: &Arc<Shared>) -> Result<HashSet<FlowId>, ApiError> {
    let shared = Arc::clone(shared);
    blocking(move || {
        Ok(shared
            .control
            .flows_in_flight()
            .iter()
            .map(|flow| flow.id)
            .collect())
    })
    .await
}

/// What a client may send.
#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum ClientMessage {
    /// Registers (or, with an empty `expr`, drops) a named filter; every flow message
    /// then says whether the flow matches it.
    #[serde(rename = "flows/updateFilter")]
    UpdateFilter { name: String, expr: String },
}

/// Why the loop ends.
enum End {
    /// The client left, or a send failed: nothing more to say.
    Gone,
    /// Close the socket with this code and reason.
    Close(u16, String),
}

struct Updates {
    shared: Arc<Shared>,
    feed: FlowReceiver,
    announcements: broadcast::Receiver<Arc<str>>,
    /// Flows this client knows (announced with `flows/add`, or in flight when it
    /// connected) and that have not completed yet.
    announced: HashSet<FlowId>,
    filters: BTreeMap<String, Filter>,
}

impl Updates {
    async fn run(mut self, mut socket: WebSocket) {
        let mut shutdown = self.shared.shutdown.clone();
        let end = loop {
            let step = tokio::select! {
                event = self.feed.recv() => self.on_event(&mut socket, event).await,
                incoming = socket.recv() => self.on_client(&mut socket, incoming).await,
                announcement = self.announcements.recv() => match announcement {
                    Ok(text) => send(&mut socket, text.to_string()).await,
                    // Missed option changes: the next one says it all again.
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => Err(End::Gone),
                },
                () = stopped(&mut shutdown) => {
                    Err(End::Close(GOING_AWAY, "Periscope is shutting down".to_owned()))
                }
            };
            if let Err(end) = step {
                break end;
            }
        };
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ =
                tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
        }
    }

    async fn on_event(
        &mut self,
        socket: &mut WebSocket,
        event: Result<FlowEvent, RecvError>,
    ) -> Result<(), End> {
        match event {
            Ok(event) => {
                if let Some(message) = self.message_for(event) {
                    send(socket, message.to_string()).await?;
                }
                Ok(())
            }
            Err(RecvError::Lagged(_)) => self.reset(socket).await,
            Err(RecvError::Closed) => Err(End::Close(
                GOING_AWAY,
                "the proxy's live feed ended".to_owned(),
            )),
        }
    }

    /// The message an event becomes on this socket, if any.
    fn message_for(&mut self, event: FlowEvent) -> Option<Value> {
        Some(match event {
            FlowEvent::RequestReceived(flow) => {
                let kind = if self.announced.insert(flow.id) {
                    "flows/add"
                } else {
                    "flows/update"
                };
                self.flow_message(kind, &flow)
            }
            FlowEvent::Completed(flow) => {
                let kind = if self.announced.remove(&flow.id) {
                    "flows/update"
                } else {
                    "flows/add"
                };
                self.flow_message(kind, &flow)
            }
            FlowEvent::Updated(flow) => self.flow_message("flows/update", &flow),
            FlowEvent::Removed(id) => {
                self.announced.remove(&id);
                json!({ "type": "flows/remove", "payload": id })
            }
            FlowEvent::Cleared { .. } => {
                self.announced.clear();
                json!({ "type": "flows/reset" })
            }
            FlowEvent::Log(entry) => json!({
                "type": "events/add",
                "payload": LogJson::new(self.shared.log_id(), &entry),
            }),
            FlowEvent::WebSocketMessage { flow, message } => json!({
                "type": "flows/websocketMessage",
                "payload": { "id": flow, "message": MessageJson::new(&message) },
            }),
        })
    }

    fn flow_message(&self, kind: &str, flow: &Flow) -> Value {
        let matching: BTreeMap<&str, bool> = self
            .filters
            .iter()
            .map(|(name, filter)| (name.as_str(), filter.matches(flow)))
            .collect();
        json!({
            "type": kind,
            "payload": { "flow": flow_json(flow, Detail::Summary), "matching_filters": matching },
        })
    }

    /// This socket missed events: the client reloads flows and events, and gets its
    /// filters' matches again, as after mitmweb's `flows/reset`.
    async fn reset(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        self.announced = in_flight_ids(&self.shared)
            .await
            .map_err(|e| End::Close(POLICY_VIOLATION, e.message))?;
        send(socket, json!({ "type": "flows/reset" }).to_string()).await?;
        send(socket, json!({ "type": "events/reset" }).to_string()).await?;
        let filters: Vec<(String, Filter)> = self
            .filters
            .iter()
            .map(|(name, filter)| (name.clone(), filter.clone()))
            .collect();
        for (name, filter) in filters {
            let update = self.filter_update(&name, Some(filter)).await;
            send(socket, update.to_string()).await?;
        }
        Ok(())
    }

    async fn on_client(
        &mut self,
        socket: &mut WebSocket,
        incoming: Option<Result<Message, axum::Error>>,
    ) -> Result<(), End> {
        let text = match incoming {
            Some(Ok(Message::Text(text))) => text,
            // Pings are answered by the WebSocket layer itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(()),
            Some(Ok(Message::Binary(_))) => {
                return Err(End::Close(
                    POLICY_VIOLATION,
                    "send JSON text messages".to_owned(),
                ))
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err(End::Gone),
        };
        match serde_json::from_str::<ClientMessage>(text.as_str()) {
            Ok(ClientMessage::UpdateFilter { name, expr }) => {
                let filter = match parse_filter(Some(&expr)) {
                    Ok(filter) => filter,
                    Err(error) => {
                        let refusal = json!({
                            "type": "flows/filterUpdate",
                            "payload": { "name": name, "matching_flow_ids": null, "error": error.message },
                        });
                        return send(socket, refusal.to_string()).await;
                    }
                };
                let update = self.filter_update(&name, filter.clone()).await;
                match filter {
                    Some(filter) => self.filters.insert(name, filter),
                    None => self.filters.remove(&name),
                };
                send(socket, update.to_string()).await
            }
            Err(error) => Err(End::Close(
                POLICY_VIOLATION,
                format!("unsupported message: {error}"),
            )),
        }
    }

    /// `flows/filterUpdate`: the ids of every flow (stored and in flight) the filter
    /// matches, or null when the filter was dropped.
    async fn filter_update(&self, name: &str, filter: Option<Filter>) -> Value {
        let Some(filter) = filter else {
            return json!({
                "type": "flows/filterUpdate",
                "payload": { "name": name, "matching_flow_ids": null },
            });
        };
        let shared = Arc::clone(&self.shared);
        let ids = blocking(move || {
            let mut ids = shared.store.ids(Some(&filter))?;
            let stored: HashSet<FlowId> = ids.iter().copied().collect();
            ids.extend(
                shared
                    .control
                    .flows_in_flight()
                    .iter()
                    .filter(|flow| !stored.contains(&flow.id) && filter.matches(flow))
                    .map(|flow| flow.id),
            );
            Ok(ids)
        })
        .await;
        match ids {
            Ok(ids) => json!({
                "type": "flows/filterUpdate",
                "payload": { "name": name, "matching_flow_ids": ids },
            }),
            Err(error) => json!({
                "type": "flows/filterUpdate",
                "payload": { "name": name, "matching_flow_ids": null, "error": error.message },
            }),
        }
    }
}

/// Completes when the server shuts down (or can no longer say it will).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the select's await.
    let _ = shutdown.wait_for(|stopping| *stopping).await.map(|_| ());
}

async fn send(socket: &mut WebSocket, text: String) -> Result<(), End> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(End::Gone),
    }
}
