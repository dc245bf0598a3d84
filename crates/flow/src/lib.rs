//! Periscope's flows at rest: the session store, the filter language, HAR export,
//! curl/HTTPie/raw export and content decoding.
//!
//! The data model itself (flows, connections, the timeline of TLS events) lives in
//! `periscope-model`, which this crate re-exports whole: `periscope_flow::Flow`,
//! `periscope_flow::model::…` and `periscope_flow::timeline::…` are the same items
//! as in `periscope_model`.
//!
//! ```
//! use periscope_flow::filter::Filter;
//! use periscope_flow::{Milestone, Timeline, Timestamp};
//!
//! let mut timeline = Timeline::new();
//! timeline.mark(Milestone::RequestStarted, Timestamp(1_000));
//! assert_eq!(timeline.milestone(Milestone::RequestStarted), Some(Timestamp(1_000)));
//! assert!(Filter::parse("~d example.com & ~c 400").is_ok());
//! ```

pub mod content;
pub mod export;
pub mod filter;
pub mod har;
pub mod live;
pub mod scratch;
pub mod store;

pub use periscope_model::{events, model, tcp, timeline, websocket};
pub use periscope_model::{
    Annotations, AppliedRule, Body, CertificateSummary, ConnectionInfo, Direction, Flow, FlowError,
    FlowErrorKind, FlowEvent, FlowId, Header, Headers, Initiator, Interception, Leg, ListenerInfo,
    LogEntry, LogLevel, MessageFate, Milestone, Request, Response, TcpReason, TcpSession, Timeline,
    TimelineEntry, TimelineEvent, Timestamp, TlsEvent, TlsEventKind, TlsInfo, WebSocketMessage,
    WebSocketOpcode, WebSocketSession,
};
