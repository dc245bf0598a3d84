//! A flow's timeline: the milestones mitmproxy's Detail tab shows (connected, TLS
//! done, first request byte, ...) and, between them, every TLS event that happened on
//! either connection while the flow was in flight — renegotiations, certificate
//! requests, KeyUpdates, alerts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

/// A point in a flow's life. Connection milestones are copied from the connection
/// the flow used, so a reused connection shows when it was set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    ClientConnected,
    ClientTlsEstablished,
    ServerConnectInitiated,
    ServerTcpConnected,
    ServerTlsEstablished,
    RequestStarted,
    RequestComplete,
    ResponseStarted,
    ResponseComplete,
}

impl Milestone {
    pub const ALL: [Milestone; 9] = [
        Milestone::ClientConnected,
        Milestone::ClientTlsEstablished,
        Milestone::ServerConnectInitiated,
        Milestone::ServerTcpConnected,
        Milestone::ServerTlsEstablished,
        Milestone::RequestStarted,
        Milestone::RequestComplete,
        Milestone::ResponseStarted,
        Milestone::ResponseComplete,
    ];

    /// The label mitmproxy users know from its Detail tab.
    pub fn label(self) -> &'static str {
        match self {
            Milestone::ClientConnected => "Client conn. established",
            Milestone::ClientTlsEstablished => "Client conn. TLS handshake",
            Milestone::ServerConnectInitiated => "Server conn. initiated",
            Milestone::ServerTcpConnected => "Server conn. TCP handshake",
            Milestone::ServerTlsEstablished => "Server conn. TLS handshake",
            Milestone::RequestStarted => "First request byte",
            Milestone::RequestComplete => "Request complete",
            Milestone::ResponseStarted => "First response byte",
            Milestone::ResponseComplete => "Response complete",
        }
    }
}

/// Which of a flow's two connections an event happened on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// Between the client and Periscope.
    Client,
    /// Between Periscope and the server.
    Server,
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leg::Client => "client",
            Leg::Server => "server",
        })
    }
}

/// Seen from Periscope: did it send the message or receive it?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Sent,
    Received,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        })
    }
}

/// Who started something on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// Periscope itself.
    Periscope,
    /// The peer at the other end of the leg (the client, or the server).
    Peer,
}

/// Something that happened at the TLS layer after a connection's first handshake,
/// or that explains why a handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TlsEventKind {
    /// A TLS 1.2 HelloRequest: the server asks the client to renegotiate.
    HelloRequest { direction: Direction },
    /// A new handshake began on an established connection.
    RenegotiationStarted { initiator: Initiator },
    /// That handshake finished; the connection now uses these parameters.
    RenegotiationCompleted { version: String, cipher: String },
    /// A renegotiation was refused (disabled by option, or over the rate limit).
    RenegotiationRefused { reason: String },
    /// The server asked for a client certificate, accepting these CA names (empty: any).
    CertificateRequested {
        ca_names: Vec<String>,
        /// TLS 1.3 post-handshake authentication rather than part of a handshake.
        post_handshake: bool,
    },
    /// A server's certificate request after the first handshake waited for the user
    /// (`--intercept-tls`), who then chose what to present: "the configured
    /// certificate", "no certificate", or the path of a PEM file. `None`: the request was
    /// abandoned (its flow killed), which fails the connection.
    CertificateRequestHeld { answer: Option<String> },
    /// The certificate sent in answer: its subject, or `None` for an empty Certificate.
    CertificatePresented {
        direction: Direction,
        subject: Option<String>,
    },
    /// A TLS 1.3 KeyUpdate.
    KeyUpdate {
        direction: Direction,
        update_requested: bool,
    },
    /// A TLS alert other than the close_notify that ends every connection.
    Alert {
        direction: Direction,
        fatal: bool,
        description: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsEvent {
    pub leg: Leg,
    #[serde(flatten)]
    pub kind: TlsEventKind,
}

impl TlsEvent {
    pub fn is_renegotiation(&self) -> bool {
        matches!(
            self.kind,
            TlsEventKind::HelloRequest { .. }
                | TlsEventKind::RenegotiationStarted { .. }
                | TlsEventKind::RenegotiationCompleted { .. }
                | TlsEventKind::RenegotiationRefused { .. }
        )
    }
}

impl fmt::Display for TlsEvent {
    /// One short line, as `periscope dump` prints it under the flow.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leg = self.leg;
        let peer = match leg {
            Leg::Client => "client",
            Leg::Server => "server",
        };
        match &self.kind {
            TlsEventKind::HelloRequest { direction } => {
                write!(
                    f,
                    "{leg} leg: HelloRequest {direction} (renegotiation requested)"
                )
            }
            TlsEventKind::RenegotiationStarted { initiator } => {
                let by = match initiator {
                    Initiator::Periscope => "periscope",
                    Initiator::Peer => peer,
                };
                write!(f, "{leg} leg: renegotiation started by {by}")
            }
            TlsEventKind::RenegotiationCompleted { version, cipher } => {
                write!(f, "{leg} leg: renegotiation completed: {version} {cipher}")
            }
            TlsEventKind::RenegotiationRefused { reason } => {
                write!(f, "{leg} leg: renegotiation refused: {reason}")
            }
            TlsEventKind::CertificateRequested {
                ca_names,
                post_handshake,
            } => {
                let what = if *post_handshake {
                    "post-handshake CertificateRequest"
                } else {
                    "CertificateRequest"
                };
                if ca_names.is_empty() {
                    write!(f, "{leg} leg: {what} (any CA)")
                } else {
                    write!(
                        f,
                        "{leg} leg: {what}, accepted CAs: {}",
                        ca_names.join("; ")
                    )
                }
            }
            TlsEventKind::CertificateRequestHeld { answer } => match answer {
                Some(answer) => write!(
                    f,
                    "{leg} leg: certificate request held for the user, answered with {answer}"
                ),
                None => write!(
                    f,
                    "{leg} leg: certificate request held for the user, then abandoned"
                ),
            },
            TlsEventKind::CertificatePresented { direction, subject } => match subject {
                Some(subject) => write!(f, "{leg} leg: client certificate {direction}: {subject}"),
                None => write!(
                    f,
                    "{leg} leg: empty client certificate {direction} (none configured)"
                ),
            },
            TlsEventKind::KeyUpdate {
                direction,
                update_requested,
            } => {
                let requested = if *update_requested {
                    "update requested"
                } else {
                    "update not requested"
                };
                write!(f, "{leg} leg: KeyUpdate {direction} ({requested})")
            }
            TlsEventKind::Alert {
                direction,
                fatal,
                description,
            } => {
                let level = if *fatal { "fatal" } else { "warning" };
                write!(f, "{leg} leg: alert {direction}: {level} {description}")
            }
        }
    }
}

/// One entry of a timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum TimelineEvent {
    Milestone {
        milestone: Milestone,
    },
    Tls(TlsEvent),
    /// Something Periscope did on the flow's behalf (an HTTP/1.1 fallback, a retry).
    Note {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Timestamp,
    #[serde(flatten)]
    pub event: TimelineEvent,
}

/// Entries in time order. Milestones appear at most once; TLS events any number of
/// times.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline {
    entries: Vec<TimelineEntry>,
}

impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entries(&self) -> &[TimelineEntry] {
        &self.entries
    }

    /// Records `milestone` at `at`. A milestone already present keeps its first time:
    /// "first response byte" must not move when a later byte arrives.
    pub fn mark(&mut self, milestone: Milestone, at: Timestamp) {
        if self.milestone(milestone).is_none() {
            self.insert(TimelineEntry {
                at,
                event: TimelineEvent::Milestone { milestone },
            });
        }
    }

    pub fn push_tls(&mut self, at: Timestamp, event: TlsEvent) {
        self.insert(TimelineEntry {
            at,
            event: TimelineEvent::Tls(event),
        });
    }

    pub fn push_note(&mut self, at: Timestamp, message: String) {
        self.insert(TimelineEntry {
            at,
            event: TimelineEvent::Note { message },
        });
    }

    pub fn notes(&self) -> impl Iterator<Item = (Timestamp, &str)> {
        self.entries.iter().filter_map(|entry| match &entry.event {
            TimelineEvent::Note { message } => Some((entry.at, message.as_str())),
            _ => None,
        })
    }

    pub fn milestone(&self, milestone: Milestone) -> Option<Timestamp> {
        self.entries.iter().find_map(|entry| match entry.event {
            TimelineEvent::Milestone { milestone: m } if m == milestone => Some(entry.at),
            _ => None,
        })
    }

    pub fn tls_events(&self) -> impl Iterator<Item = (Timestamp, &TlsEvent)> {
        self.entries.iter().filter_map(|entry| match &entry.event {
            TimelineEvent::Tls(event) => Some((entry.at, event)),
            TimelineEvent::Milestone { .. } | TimelineEvent::Note { .. } => None,
        })
    }

    pub fn has_tls_events(&self) -> bool {
        self.tls_events().next().is_some()
    }

    pub fn has_renegotiation(&self) -> bool {
        self.tls_events().any(|(_, event)| event.is_renegotiation())
    }

    /// Keeps entries sorted by time; entries with equal times keep arrival order.
    fn insert(&mut self, entry: TimelineEntry) {
        let position = self.entries.partition_point(|e| e.at <= entry.at);
        self.entries.insert(position, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renegotiation(version: &str) -> TlsEvent {
        TlsEvent {
            leg: Leg::Server,
            kind: TlsEventKind::RenegotiationCompleted {
                version: version.into(),
                cipher: "ECDHE-RSA-AES128-GCM-SHA256".into(),
            },
        }
    }

    #[test]
    fn milestones_keep_their_first_time() {
        let mut timeline = Timeline::new();
        timeline.mark(Milestone::ResponseStarted, Timestamp(10));
        timeline.mark(Milestone::ResponseStarted, Timestamp(20));
        assert_eq!(
            timeline.milestone(Milestone::ResponseStarted),
            Some(Timestamp(10))
        );
        assert_eq!(timeline.entries().len(), 1);
    }

    #[test]
    fn entries_are_sorted_by_time_whatever_the_order_they_arrive_in() {
        let mut timeline = Timeline::new();
        timeline.mark(Milestone::ResponseComplete, Timestamp(50));
        timeline.mark(Milestone::RequestStarted, Timestamp(10));
        timeline.push_tls(Timestamp(30), renegotiation("TLSv1.2"));
        timeline.push_tls(Timestamp(30), renegotiation("second"));
        let times: Vec<i64> = timeline.entries().iter().map(|e| e.at.0).collect();
        assert_eq!(times, vec![10, 30, 30, 50]);
        let versions: Vec<&str> = timeline
            .tls_events()
            .filter_map(|(_, e)| match &e.kind {
                TlsEventKind::RenegotiationCompleted { version, .. } => Some(version.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            versions,
            vec!["TLSv1.2", "second"],
            "equal times keep arrival order"
        );
    }

    #[test]
    fn renegotiation_is_detected_and_printed_with_the_word() {
        let mut timeline = Timeline::new();
        assert!(!timeline.has_renegotiation());
        timeline.push_tls(
            Timestamp(1),
            TlsEvent {
                leg: Leg::Server,
                kind: TlsEventKind::KeyUpdate {
                    direction: Direction::Received,
                    update_requested: true,
                },
            },
        );
        assert!(timeline.has_tls_events());
        assert!(!timeline.has_renegotiation());
        timeline.push_tls(Timestamp(2), renegotiation("TLSv1.2"));
        assert!(timeline.has_renegotiation());
        let line = renegotiation("TLSv1.2").to_string();
        assert!(line.contains("renegotiation"), "{line}");
    }

    #[test]
    fn timeline_round_trips_through_json() {
        let mut timeline = Timeline::new();
        timeline.mark(Milestone::ClientConnected, Timestamp(1));
        timeline.push_tls(
            Timestamp(2),
            TlsEvent {
                leg: Leg::Server,
                kind: TlsEventKind::CertificateRequested {
                    ca_names: vec!["CN=Test CA".into()],
                    post_handshake: false,
                },
            },
        );
        let json = serde_json::to_string(&timeline).unwrap();
        let back: Timeline = serde_json::from_str(&json).unwrap();
        assert_eq!(back, timeline);
    }

    #[test]
    fn a_held_certificate_request_says_how_it_ended() {
        let held = |answer: Option<&str>| TlsEvent {
            leg: Leg::Server,
            kind: TlsEventKind::CertificateRequestHeld {
                answer: answer.map(str::to_owned),
            },
        };
        assert_eq!(
            held(Some("no certificate")).to_string(),
            "server leg: certificate request held for the user, answered with no certificate"
        );
        assert_eq!(
            held(None).to_string(),
            "server leg: certificate request held for the user, then abandoned"
        );
        let json = serde_json::to_string(&held(None)).unwrap();
        assert_eq!(serde_json::from_str::<TlsEvent>(&json).unwrap(), held(None));
    }
}
