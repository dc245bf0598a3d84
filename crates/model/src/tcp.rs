//! Connections relayed as a byte stream instead of being parsed as HTTP, and the
//! listener a flow came through.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::Body;

/// The listener a flow came through: its proxy mode as the user wrote it (without
/// the listen address and without credentials), and the address it listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// `regular`, `reverse:https://example.com`, `upstream:http://proxy:3128`,
    /// `socks5`, `transparent`.
    pub mode: String,
    pub address: Option<SocketAddr>,
}

impl ListenerInfo {
    /// The mode's name, the part before its data: `reverse` for
    /// `reverse:https://example.com`.
    pub fn mode_name(&self) -> &str {
        self.mode.split(':').next().unwrap_or_default()
    }
}

/// Why a connection was relayed as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpReason {
    /// `--ignore-hosts` (or not in `--allow-hosts`): passed through untouched, TLS
    /// included; the client saw the server's own certificate.
    IgnoredHost,
    /// `--tcp-hosts`: TLS (if any) intercepted, the bytes inside relayed as they are.
    TcpHost,
    /// A script's `tls_clienthello` set `ignore_connection`: passed through untouched,
    /// TLS included, as an ignored host is.
    IgnoredByScript,
    /// Neither TLS nor HTTP (or the server spoke first, as SMTP and SSH do).
    NotHttp,
}

impl TcpReason {
    pub fn describe(self) -> &'static str {
        match self {
            TcpReason::IgnoredHost => "ignored host, passed through untouched",
            TcpReason::TcpHost => "--tcp-hosts, relayed as TCP",
            TcpReason::IgnoredByScript => {
                "ignored by a script's tls_clienthello, passed through untouched"
            }
            TcpReason::NotHttp => "neither TLS nor HTTP",
        }
    }
}

/// A connection relayed as bytes (mitmproxy's TCP flow). The flow's request names
/// the server (`TCP tcp://host:port`); it has no response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSession {
    pub reason: TcpReason,
    /// The server name the client's ClientHello asked for, when it spoke TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Bytes from the client to the server: all of them counted, the first ones
    /// kept up to the body limit (none for an ignored host: they are its own).
    pub from_client: Body,
    /// Bytes from the server to the client, counted and kept likewise.
    pub from_server: Body,
}
