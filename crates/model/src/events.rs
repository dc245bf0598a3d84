//! What the proxy tells its front ends: flows as they progress, and log entries.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Flow, FlowId, Timestamp};
use crate::websocket::WebSocketMessage;

/// A change a front end may want to show. Flows are shared snapshots: the proxy
/// never mutates a flow after publishing it.
#[derive(Clone, Debug)]
pub enum FlowEvent {
    /// A flow in flight: its request head arrived, or it changed before it ended
    /// (intercepted, resumed, edited). The response is not complete yet.
    RequestReceived(Arc<Flow>),
    /// The exchange ended: with a full response, or with an error.
    Completed(Arc<Flow>),
    /// A completed flow changed later (its WebSocket connection closed): the new
    /// version replaces the old one.
    Updated(Arc<Flow>),
    /// A message passed on a flow's WebSocket connection.
    WebSocketMessage {
        flow: FlowId,
        message: WebSocketMessage,
    },
    /// Something worth a line in the event log that belongs to no single flow.
    Log(LogEntry),
    /// A flow was removed from the session.
    Removed(FlowId),
    /// Every flow that had ended was removed from the session; flows in flight go
    /// on. `generation` numbers the clears of this process: the session store's
    /// writer gets the event in order with the flows (it drops what was published
    /// before it), and front ends get it once the store is empty.
    Cleared { generation: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at: Timestamp,
    pub level: LogLevel,
    pub message: String,
}

impl LogEntry {
    pub fn new(level: LogLevel, message: impl Into<String>) -> Self {
        LogEntry {
            at: Timestamp::now(),
            level,
            message: message.into(),
        }
    }
}
