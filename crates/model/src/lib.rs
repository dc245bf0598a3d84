//! Periscope's data model, as plain serde types.
//!
//! A [`Flow`] is one HTTP exchange with both of its connections, a [`Timeline`] of
//! milestones and TLS events, and an error if it failed. The proxy and the TLS
//! layer produce these types; the session store, the exporters and the front ends
//! consume them. None of them sees sockets or OpenSSL. [`units`] is how sizes and
//! durations read wherever they are printed.
//!
//! Architecture invariant: this crate depends on nothing heavier than serde, so that
//! `periscope-tls` can record TLS events into a flow without compiling the store
//! (SQLite, regex, codecs), which lives in `periscope-flow`.
//!
//! ```
//! use periscope_model::{Milestone, Timeline, Timestamp};
//!
//! let mut timeline = Timeline::new();
//! timeline.mark(Milestone::RequestStarted, Timestamp(1_000));
//! timeline.mark(Milestone::ResponseComplete, Timestamp(3_500));
//! assert_eq!(timeline.milestone(Milestone::RequestStarted), Some(Timestamp(1_000)));
//! ```

pub mod events;
pub mod model;
pub mod tcp;
pub mod timeline;
pub mod units;
pub mod websocket;

pub use events::{FlowEvent, LogEntry, LogLevel};
pub use model::{
    Annotations, AppliedRule, Body, CertificateSummary, ConnectionInfo, Flow, FlowError,
    FlowErrorKind, FlowId, Header, Headers, Interception, Request, Response, Timestamp, TlsInfo,
};
pub use tcp::{ListenerInfo, TcpReason, TcpSession};
pub use timeline::{
    Direction, Initiator, Leg, Milestone, Timeline, TimelineEntry, TimelineEvent, TlsEvent,
    TlsEventKind,
};
pub use websocket::{MessageFate, WebSocketMessage, WebSocketOpcode, WebSocketSession};
