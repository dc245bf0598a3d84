//! WebSocket messages relayed on a flow after its `101 Switching Protocols`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebSocketOpcode {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

impl WebSocketOpcode {
    pub fn name(self) -> &'static str {
        match self {
            WebSocketOpcode::Text => "text",
            WebSocketOpcode::Binary => "binary",
            WebSocketOpcode::Ping => "ping",
            WebSocketOpcode::Pong => "pong",
            WebSocketOpcode::Close => "close",
        }
    }

    /// The RFC 6455 opcode number (HAR's `_webSocketMessages` uses it).
    pub fn number(self) -> u8 {
        match self {
            WebSocketOpcode::Text => 1,
            WebSocketOpcode::Binary => 2,
            WebSocketOpcode::Close => 8,
            WebSocketOpcode::Ping => 9,
            WebSocketOpcode::Pong => 10,
        }
    }
}

/// What Periscope did with a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFate {
    /// Passed on as it came.
    #[default]
    Relayed,
    /// Held by the intercept filter and passed on as the user changed it (the content
    /// recorded is what was delivered).
    Edited,
    /// Held by the intercept filter and never delivered.
    Dropped,
    /// Written by Periscope at the user's request; no peer sent it.
    Injected,
}

impl MessageFate {
    pub fn is_relayed(&self) -> bool {
        *self == MessageFate::Relayed
    }
}

/// One message (a data message reassembled from its fragments, or a control frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSocketMessage {
    pub from_client: bool,
    pub opcode: WebSocketOpcode,
    /// The payload as the application sees it (unmasked, and inflated when the
    /// connection uses permessage-deflate), up to the body limit.
    #[serde(with = "crate::model::body_bytes")]
    pub content: Bytes,
    /// Payload bytes of the message as the application sees it.
    pub size: u64,
    pub truncated: bool,
    /// Number of frames the message came in.
    pub frames: u32,
    /// When its last frame passed the proxy.
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "MessageFate::is_relayed")]
    pub fate: MessageFate,
}

impl WebSocketMessage {
    pub fn text(&self) -> Option<&str> {
        match self.opcode {
            WebSocketOpcode::Text => std::str::from_utf8(&self.content).ok(),
            _ => None,
        }
    }
}

/// Everything that happened on the WebSocket connection of a flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSocketSession {
    pub messages: Vec<WebSocketMessage>,
    /// Messages seen but not kept (the flow keeps up to the body limit in total).
    #[serde(default)]
    pub dropped_messages: u64,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    /// Which side sent the first Close frame.
    pub closed_by_client: Option<bool>,
    pub closed_at: Option<Timestamp>,
    /// `Sec-WebSocket-Extensions` the server accepted (e.g. permessage-deflate).
    pub extensions: Option<String>,
}
