//! The connections one client connection holds to its servers: per host, the shared
//! HTTP/2 connection and the HTTP/1.1 connections not in use. Which connection a
//! request takes, and which pooled connections are let go, are pure decisions
//! ([`choose`], [`to_close`]) tested as the situations they stand for; the pool
//! applies them.
//!
//! Bounded: at most [`MAX_IDLE_PER_HOST`] idle HTTP/1.1 connections per host, and a
//! pooled connection unused for the idle timeout is closed (a sweeper runs while the
//! pool holds any).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use periscope_tls::TlsConnectionState;
use tokio::sync::Mutex;

use crate::core::ProxyCore;

/// How long a new HTTP/2 connection may take to say (in its SETTINGS) whether it
/// allows extended CONNECT.
const SETTINGS_WAIT: Duration = Duration::from_millis(500);
use crate::error::UpstreamError;
use crate::mode::UpstreamProxy;
use crate::upstream::{
    connect_tcp, establish, establish_with_fallback, HttpSender, ParkedServer, TlsParameters,
    UpstreamConnection, UpstreamKey, ALPN_H2, ALPN_HTTP11,
};

/// Idle HTTP/1.1 connections kept per host; more are closed as they come back.
pub const MAX_IDLE_PER_HOST: usize = 16;

/// What a request needs of its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionKind {
    /// Whatever the server chose: HTTP/2 or HTTP/1.1.
    Any,
    /// HTTP/1.1 only (a WebSocket handshake by Upgrade).
    Http1Only,
}

/// Where one request goes, for the pool.
#[derive(Clone, Debug)]
pub struct PoolTarget {
    pub key: UpstreamKey,
    pub tls: Option<TlsParameters>,
    /// The client multiplexes (HTTP/2): a busy HTTP/1.1 connection is not waited for.
    pub concurrent: bool,
}

/// A pooled connection as the decisions see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pooled {
    pub closed: bool,
    /// Takes a request now (an HTTP/1.1 connection whose response is done).
    pub ready: bool,
    pub idle_for: Duration,
}

/// Which connection a request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The host's HTTP/2 connection.
    Shared,
    /// This idle HTTP/1.1 connection.
    Idle(usize),
    /// This HTTP/1.1 connection, whose response is still streaming: an HTTP/1.1
    /// client sends one request at a time, so its connection is about to be free.
    WaitFor(usize),
    /// A new connection.
    Open,
}

/// `shared`: the host's HTTP/2 connection, if it has a live one; `idle`: its HTTP/1.1
/// connections (closed ones already removed).
pub fn choose(shared: bool, idle: &[Pooled], kind: ConnectionKind, concurrent: bool) -> Choice {
    if shared && kind == ConnectionKind::Any {
        return Choice::Shared;
    }
    if let Some(ready) = idle.iter().position(|c| c.ready) {
        return Choice::Idle(ready);
    }
    if !concurrent && kind == ConnectionKind::Any && !idle.is_empty() {
        return Choice::WaitFor(idle.len() - 1);
    }
    Choice::Open
}

/// Which pooled HTTP/1.1 connections to close: the closed ones, those idle longer
/// than `idle_timeout`, and the oldest idle ones beyond `max_idle`. Busy connections
/// (a response still streaming) are never closed here.
pub fn to_close(pooled: &[Pooled], idle_timeout: Duration, max_idle: usize) -> Vec<usize> {
    let mut close: Vec<usize> = pooled
        .iter()
        .enumerate()
        .filter(|(_, c)| c.closed || (c.ready && c.idle_for >= idle_timeout))
        .map(|(i, _)| i)
        .collect();
    let mut idle: Vec<(usize, Duration)> = pooled
        .iter()
        .enumerate()
        .filter(|(i, c)| c.ready && !close.contains(i))
        .map(|(i, c)| (i, c.idle_for))
        .collect();
    if idle.len() > max_idle {
        // Longest idle first.
        idle.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        close.extend(idle[..idle.len() - max_idle].iter().map(|(i, _)| *i));
    }
    close.sort_unstable();
    close
}

struct Entry {
    connection: UpstreamConnection,
    since: Instant,
    /// When the connection joined the pool (`since` moves with each use).
    opened: Instant,
}

impl Entry {
    fn state(&self, now: Instant) -> Pooled {
        Pooled {
            closed: self.connection.sender.is_closed(),
            ready: self.connection.is_ready(),
            idle_for: now.saturating_duration_since(self.since),
        }
    }
}

#[derive(Default)]
struct HostPool {
    idle: Vec<Entry>,
    shared: Option<Entry>,
    /// The eager connection made for a tunnel failed; the first request reports it.
    failed: Option<Box<UpstreamError>>,
}

impl HostPool {
    fn sweep(&mut self, now: Instant, idle_timeout: Duration) {
        let states: Vec<Pooled> = self.idle.iter().map(|e| e.state(now)).collect();
        for index in to_close(&states, idle_timeout, MAX_IDLE_PER_HOST)
            .into_iter()
            .rev()
        {
            self.idle.swap_remove(index);
        }
        let shared_done = self.shared.as_ref().is_some_and(|shared| {
            shared.connection.sender.is_closed()
                || now.saturating_duration_since(shared.since) >= idle_timeout
        });
        if shared_done {
            // Streams in flight keep the connection open until they end.
            self.shared = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.shared.is_none() && self.failed.is_none()
    }
}

type Hosts = Mutex<HashMap<UpstreamKey, HostPool>>;

pub struct UpstreamPool {
    hosts: Arc<Hosts>,
    idle_timeout: Duration,
    sweeping: Arc<AtomicBool>,
    /// The proxy every connection goes through (an `upstream:` mode). A pool serves
    /// one client connection of one listener, so connections made through different
    /// proxies, or none, never share a pool.
    via: Option<UpstreamProxy>,
}

impl UpstreamPool {
    pub fn new(idle_timeout: Duration, via: Option<UpstreamProxy>) -> Self {
        UpstreamPool {
            hosts: Arc::default(),
            idle_timeout,
            sweeping: Arc::default(),
            via,
        }
    }

    /// Hands over the connection made eagerly for a tunnel (or why it failed).
    pub fn seed(&self, key: UpstreamKey, connection: Result<UpstreamConnection, UpstreamError>) {
        let mut pool = HostPool {
            idle: Vec::with_capacity(1),
            ..HostPool::default()
        };
        let since = Instant::now();
        match connection {
            Ok(connection) if connection.is_http2() => {
                pool.shared = Some(Entry {
                    connection,
                    since,
                    opened: since,
                })
            }
            Ok(connection) => pool.idle.push(Entry {
                connection,
                since,
                opened: since,
            }),
            Err(error) => pool.failed = Some(Box::new(error)),
        }
        // Nothing else holds the lock before the session starts serving.
        if let Ok(mut hosts) = self.hosts.try_lock() {
            hosts.insert(key, pool);
        }
        self.start_sweeping();
    }

    /// A connection for `target`, and whether an earlier request used it.
    pub async fn checkout(
        &self,
        core: &ProxyCore,
        target: &PoolTarget,
        kind: ConnectionKind,
    ) -> Result<(UpstreamConnection, bool), UpstreamError> {
        {
            let mut hosts = self.hosts.lock().await;
            let pool = hosts.entry(target.key.clone()).or_default();
            if let Some(error) = pool.failed.take() {
                return Err(*error);
            }
            let now = Instant::now();
            pool.idle.retain(|e| e.connection.reusable(core));
            if pool
                .shared
                .as_ref()
                .is_some_and(|s| !s.connection.reusable(core))
            {
                pool.shared = None;
            }
            let states: Vec<Pooled> = pool.idle.iter().map(|e| e.state(now)).collect();
            match choose(pool.shared.is_some(), &states, kind, target.concurrent) {
                Choice::Shared => {
                    if let Some(shared) = pool.shared.as_mut() {
                        shared.since = now;
                        if let Some(connection) = shared.connection.share() {
                            return Ok((connection, true));
                        }
                    }
                }
                Choice::Idle(index) | Choice::WaitFor(index) => {
                    return Ok((pool.idle.swap_remove(index).connection, true));
                }
                Choice::Open => {}
            }
        }
        let connection = self.open(core, target, kind).await?;
        if let Some(shared) = connection.share() {
            let mut hosts = self.hosts.lock().await;
            hosts.entry(target.key.clone()).or_default().shared = Some(Entry {
                connection: shared,
                since: Instant::now(),
                opened: Instant::now(),
            });
            drop(hosts);
            self.start_sweeping();
        }
        Ok((connection, false))
    }

    async fn open(
        &self,
        core: &ProxyCore,
        target: &PoolTarget,
        kind: ConnectionKind,
    ) -> Result<UpstreamConnection, UpstreamError> {
        let mut tls = target.tls.clone();
        if let Some(tls) = tls.as_mut() {
            let host = &target.key.host;
            if kind == ConnectionKind::Http1Only || core.requires_http11(host) {
                tls.alpn = vec![ALPN_HTTP11.to_vec()];
            } else if core.offers_http2(host) && !tls.alpn.iter().any(|p| p == ALPN_H2) {
                tls.alpn.push(ALPN_H2.to_vec());
            }
        }
        let via = self.via.as_ref();
        let socket = connect_tcp(core, via, &target.key).await?;
        if kind == ConnectionKind::Http1Only {
            let connection = establish(core, socket, tls.as_ref()).await?;
            if connection.is_http2() {
                return Err(UpstreamError::exchange(format!(
                    "{} chose HTTP/2 although only HTTP/1.1 was offered",
                    target.key.label()
                )));
            }
            return Ok(connection);
        }
        establish_with_fallback(core, via, socket, &target.key, tls.as_ref()).await
    }

    /// Gives an HTTP/1.1 connection back once its response head arrived (it takes the
    /// next request when that response is done).
    pub async fn checkin(&self, key: &UpstreamKey, connection: UpstreamConnection) {
        if connection.is_http2() {
            return;
        }
        let mut hosts = self.hosts.lock().await;
        let pool = hosts.entry(key.clone()).or_default();
        // Only HTTP/2 entries ask how old they are.
        pool.idle.push(Entry {
            connection,
            since: Instant::now(),
            opened: Instant::now(),
        });
        if pool.idle.len() > MAX_IDLE_PER_HOST {
            pool.sweep(Instant::now(), self.idle_timeout);
        }
        drop(hosts);
        self.start_sweeping();
    }

    /// Takes the idle HTTP/1.1 connections out of hyper while their client connection
    /// is parked (see `park`); HTTP/2 connections and busy ones stay as they are.
    pub async fn park_idle(&self) -> Vec<(UpstreamKey, ParkedServer)> {
        let mut taken = Vec::new();
        {
            let mut hosts = self.hosts.lock().await;
            for (key, pool) in hosts.iter_mut() {
                let (parkable, staying) = std::mem::take(&mut pool.idle)
                    .into_iter()
                    .partition(|entry| entry.connection.is_ready());
                pool.idle = staying;
                taken.extend(
                    parkable
                        .into_iter()
                        .map(|entry: Entry| (key.clone(), entry.connection)),
                );
            }
        }
        let mut parked = Vec::with_capacity(taken.len());
        for (key, connection) in taken {
            match connection.park().await {
                Ok(Some(server)) => parked.push((key, server)),
                // Closed while being parked: nothing to keep.
                Ok(None) => {}
                Err(connection) => self.checkin(&key, connection).await,
            }
        }
        parked
    }

    /// Gives parked connections back to the pool, each under a new hyper connection.
    pub async fn unpark(&self, parked: Vec<(UpstreamKey, ParkedServer)>) {
        for (key, server) in parked {
            if let Ok(connection) = server.resume().await {
                self.checkin(&key, connection).await;
            }
        }
    }

    /// The host's HTTP/2 connection is not to be used for new requests.
    pub async fn forget_http2(&self, key: &UpstreamKey) {
        if let Some(pool) = self.hosts.lock().await.get_mut(key) {
            pool.shared = None;
        }
    }

    /// The host's HTTP/2 connection, when it has one that allows extended CONNECT.
    pub async fn extended_connect(
        &self,
        core: &ProxyCore,
        key: &UpstreamKey,
    ) -> Option<UpstreamConnection> {
        // A server allows RFC 8441 in its first SETTINGS, which may still be on its way
        // on a connection opened a moment ago (a tunnel's, opened before the client's
        // first request): a young connection is given a moment to hear it.
        let deadline = Instant::now() + SETTINGS_WAIT;
        loop {
            {
                let hosts = self.hosts.lock().await;
                let entry = hosts.get(key)?.shared.as_ref()?;
                let HttpSender::Http2(sender) = &entry.connection.sender else {
                    return None;
                };
                if !entry.connection.reusable(core) {
                    return None;
                }
                if sender.supports_extended_connect() {
                    return entry.connection.share();
                }
                if entry.opened.elapsed() >= SETTINGS_WAIT || Instant::now() >= deadline {
                    return None;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The TLS state of every pooled connection.
    pub async fn tls_states(&self) -> Vec<Arc<TlsConnectionState>> {
        let hosts = self.hosts.lock().await;
        hosts
            .values()
            .flat_map(|pool| pool.idle.iter().chain(pool.shared.iter()))
            .filter_map(|entry| entry.connection.tls.clone())
            .collect()
    }

    /// Starts the task that closes connections idle past the timeout, unless it runs.
    /// It stops when the pool is empty or gone.
    fn start_sweeping(&self) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let hosts: Weak<Hosts> = Arc::downgrade(&self.hosts);
        let sweeping = Arc::clone(&self.sweeping);
        let idle_timeout = self.idle_timeout;
        let period = (idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(hosts) = hosts.upgrade() else {
                    return;
                };
                let mut hosts = hosts.lock().await;
                let now = Instant::now();
                for pool in hosts.values_mut() {
                    pool.sweep(now, idle_timeout);
                }
                hosts.retain(|_, pool| !pool.is_empty());
                if hosts.is_empty() {
                    // Decided under the lock: a checkin after this starts a new sweeper.
                    sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Pooled = Pooled {
        closed: false,
        ready: true,
        idle_for: Duration::from_secs(1),
    };
    const BUSY: Pooled = Pooled {
        closed: false,
        ready: false,
        idle_for: Duration::from_secs(1),
    };

    #[test]
    fn an_http2_connection_to_the_host_takes_every_request_but_a_websocket_upgrade() {
        assert_eq!(
            choose(true, &[IDLE], ConnectionKind::Any, false),
            Choice::Shared
        );
        assert_eq!(
            choose(true, &[IDLE], ConnectionKind::Http1Only, false),
            Choice::Idle(0)
        );
        assert_eq!(
            choose(true, &[], ConnectionKind::Http1Only, false),
            Choice::Open
        );
    }

    #[test]
    fn a_keep_alive_client_reuses_its_idle_connection() {
        assert_eq!(
            choose(false, &[BUSY, IDLE], ConnectionKind::Any, false),
            Choice::Idle(1)
        );
    }

    #[test]
    fn an_http11_client_waits_for_its_busy_connection_an_http2_client_opens_another() {
        assert_eq!(
            choose(false, &[BUSY], ConnectionKind::Any, false),
            Choice::WaitFor(0)
        );
        assert_eq!(
            choose(false, &[BUSY], ConnectionKind::Any, true),
            Choice::Open
        );
        assert_eq!(choose(false, &[], ConnectionKind::Any, false), Choice::Open);
    }

    #[test]
    fn closed_and_long_idle_connections_are_closed_busy_ones_never() {
        let closed = Pooled {
            closed: true,
            ..IDLE
        };
        let stale = Pooled {
            idle_for: Duration::from_secs(120),
            ..IDLE
        };
        let long_busy = Pooled {
            idle_for: Duration::from_secs(120),
            ..BUSY
        };
        assert_eq!(
            to_close(
                &[IDLE, closed, stale, long_busy],
                Duration::from_secs(60),
                16
            ),
            vec![1, 2]
        );
    }

    #[test]
    fn idle_connections_beyond_the_cap_are_closed_longest_idle_first() {
        let idle_for = |secs| Pooled {
            idle_for: Duration::from_secs(secs),
            ..IDLE
        };
        let pooled = [idle_for(5), idle_for(30), BUSY, idle_for(10), idle_for(1)];
        assert_eq!(to_close(&pooled, Duration::from_secs(60), 2), vec![1, 3]);
        assert!(to_close(&pooled, Duration::from_secs(60), 4).is_empty());
    }
}
