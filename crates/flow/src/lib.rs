//! Periscope's data model.
//!
//! A [`Flow`] is one HTTP exchange with both of its connections, a [`Timeline`] of
//! milestones and TLS events, and an error if it failed. Front ends, the session
//! store and the exporters work on these types alone; they never see sockets or
//! OpenSSL.
//!
//! ```
//! use periscope_flow::{Milestone, Timeline, Timestamp};
//!
//! let mut timeline = Timeline::new();
//! timeline.mark(Milestone::RequestStarted, Timestamp(1_000));
//! timeline.mark(Milestone::ResponseComplete, Timestamp(3_500));
//! assert_eq!(timeline.milestone(Milestone::RequestStarted), Some(Timestamp(1_000)));
//! ```

pub mod content;
pub mod events;
pub mod filter;
pub mod har;
pub mod live;
pub mod model;
pub mod store;
pub mod timeline;
pub mod websocket;

pub use events::{FlowEvent, LogEntry, LogLevel};
pub use model::{
    Body, CertificateSummary, ConnectionInfo, Flow, FlowError, FlowErrorKind, FlowId, Header,
    Headers, Request, Response, Timestamp, TlsInfo,
};
pub use timeline::{
    Direction, Initiator, Leg, Milestone, Timeline, TimelineEntry, TimelineEvent, TlsEvent,
    TlsEventKind,
};
pub use websocket::{WebSocketMessage, WebSocketOpcode, WebSocketSession};
