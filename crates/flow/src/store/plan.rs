//! How much of each stored flow a filter needs, so a list query reads as little as
//! it can: the index columns alone, the flow without bodies, or the whole flow.
//!
//! [`Filter`] does not say which parts of a flow it reads, so this reads its
//! canonical printed form: every filter term prints as `~name`, and a bare regex
//! cannot contain `~`, so each `~name` outside quotes is a term. A `~` inside a
//! quoted regex can only add a term that is not there, which costs speed, never
//! correctness. A method on `Filter` that says which parts of a flow it reads
//! would make this exact and independent of the printed form.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::filter::Filter;
use crate::model::{
    Annotations, Body, ConnectionInfo, Flow, FlowError, FlowErrorKind, FlowId, Headers, Request,
    Response, Timestamp,
};
use crate::timeline::Timeline;

/// What to load per flow, cheapest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Need {
    /// The `flows` table: enough for [`Columns::skeleton`].
    Columns,
    /// Also the flow's JSON, with empty bodies.
    Head,
    /// Everything.
    Bodies,
}

/// Filter terms that look only at data kept in the `flows` table.
const COLUMN_TERMS: [&str; 14] = [
    "all", "d", "m", "u", "c", "q", "s", "e", "marked", "src", "dst", "comment", "replay",
    "replayq",
];
/// Filter terms that look at bodies.
const BODY_TERMS: [&str; 3] = ["b", "bq", "bs"];

/// The least a scan must load to evaluate `filter` exactly.
pub(super) fn need(filter: &Filter) -> Need {
    let printed = filter.to_string();
    printed
        .split('~')
        .skip(1)
        .map(|rest| {
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            term_need(&rest[..end])
        })
        .max()
        // No term at all is not the printed form this module expects: load everything.
        .unwrap_or(Need::Bodies)
}

fn term_need(name: &str) -> Need {
    if COLUMN_TERMS.contains(&name) {
        Need::Columns
    } else if BODY_TERMS.contains(&name) {
        Need::Bodies
    } else {
        Need::Head
    }
}

/// The `flows` columns a skeleton is made of.
pub(super) struct Columns {
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub status: Option<u16>,
    pub has_error: bool,
    pub marked: bool,
    pub client_peer: Option<String>,
    pub server_target: Option<String>,
    pub server_peer: Option<String>,
    pub annotations: Annotations,
}

impl Columns {
    /// A flow that answers every [`COLUMN_TERMS`] filter exactly as the stored flow
    /// does; everything else in it is empty.
    pub fn skeleton(self) -> Flow {
        let parse_peer = |text: Option<String>| text.and_then(|t| t.parse::<SocketAddr>().ok());
        let connection = |peer: Option<SocketAddr>, target: Option<String>| ConnectionInfo {
            id: 0,
            peer,
            local: None,
            target,
            tls: None,
        };
        let server_peer = parse_peer(self.server_peer);
        let server = (server_peer.is_some() || self.server_target.is_some())
            .then(|| connection(server_peer, self.server_target));
        let empty_body = Body {
            content: Bytes::new(),
            size: 0,
            truncated: false,
        };
        Flow {
            id: FlowId(uuid::Uuid::nil()),
            client: connection(parse_peer(self.client_peer), None),
            server,
            request: Request {
                method: self.method,
                scheme: self.scheme,
                host: self.host,
                port: self.port,
                path: self.path,
                http_version: String::new(),
                stream_id: None,
                headers: Headers::default(),
                body: empty_body.clone(),
                trailers: None,
            },
            response: self.status.map(|status| Response {
                status,
                reason: String::new(),
                http_version: String::new(),
                stream_id: None,
                headers: Headers::default(),
                body: empty_body,
                trailers: None,
                generated: false,
            }),
            error: self.has_error.then(|| FlowError {
                kind: FlowErrorKind::Other,
                message: String::new(),
                at: Timestamp(0),
            }),
            timeline: Timeline::new(),
            marked: self.marked,
            intercepted_tls: false,
            websocket: None,
            intercepted: None,
            annotations: self.annotations,
            listener: None,
            tcp: None,
            rules: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need_of(filter: &str) -> Need {
        need(&Filter::parse(filter).unwrap())
    }

    #[test]
    fn simple_filters_need_only_columns() {
        for filter in [
            "~d example",
            "~m POST & ~c 200",
            "example.com/api",
            "!~q | ~e",
            "~marked",
            "~src 127.0.0.1 & ~dst :443",
            "~all",
        ] {
            assert_eq!(need_of(filter), Need::Columns, "{filter}");
        }
    }

    #[test]
    fn header_and_tls_filters_need_the_head() {
        for filter in [
            "~h foo",
            "~d a & ~t json",
            "~tls",
            "~tls reneg",
            "~a",
            "~websocket",
        ] {
            assert_eq!(need_of(filter), Need::Head, "{filter}");
        }
    }

    #[test]
    fn body_filters_need_bodies_even_when_nested() {
        for filter in ["~b foo", "~d a & !(~bs x | ~c 200)", "~bq x"] {
            assert_eq!(need_of(filter), Need::Bodies, "{filter}");
        }
    }

    #[test]
    fn a_tilde_inside_a_quoted_regex_only_makes_the_plan_more_careful() {
        assert_eq!(need_of(r#"~d "a~b""#), Need::Bodies);
        assert_eq!(need_of(r#"~d "a~zz""#), Need::Head);
    }
}
