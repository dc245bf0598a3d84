//! Which kind of key exchange each leg offers.
//!
//! Periscope offers a server what the client offered: the library's default groups
//! (an ML-KEM hybrid first, from OpenSSL 3.5 on) when the client listed a
//! post-quantum group, classic groups otherwise. Two more rules keep each side seeing
//! the kind of key exchange it would have had without Periscope, and keep a
//! post-quantum client's connections from costing ML-KEM work nobody uses:
//!
//! - A server that answered a post-quantum offer with a classic group is remembered
//!   ([`ClassicServers`], per address and name, for an hour) and offered classic
//!   groups only on the next connections: the ML-KEM key share it would not use costs
//!   a key generation per connection (about 5% of a new connection's CPU) and memory
//!   for the connection's life. A handshake that fails while the server is offered
//!   classic groups for this reason forgets it, so a server that changed (to
//!   post-quantum groups only, say) costs one failed connection, not an hour of them.
//! - A client whose server agreed on a classic group is offered classic groups too
//!   (the proxy decides once the server's handshake is done, before the client's),
//!   which spares an ML-KEM encapsulation (about 6%) that the server side does not
//!   match.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Classic key-exchange groups, most preferred first (OpenSSL 3.0's default list).
pub(crate) const CLASSIC_GROUPS: &str =
    "X25519:P-256:X448:P-521:P-384:ffdhe2048:ffdhe3072:ffdhe4096";

/// How many servers are remembered; past that, expired entries go, and then all.
const SERVERS_REMEMBERED: usize = 1024;

/// How long a server's classic answer is trusted: a server that starts to support a
/// post-quantum group is offered one again after this.
const REMEMBERED_FOR: Duration = Duration::from_secs(3600);

/// True for a group with a post-quantum part, by libssl's name for it
/// (`X25519MLKEM768`, `SecP256r1MLKEM768`, `MLKEM1024`, the Kyber drafts).
pub fn is_post_quantum(group: &str) -> bool {
    let group = group.to_ascii_uppercase();
    group.contains("MLKEM") || group.contains("KYBER")
}

/// The servers that chose a classic group when offered a post-quantum one.
#[derive(Default)]
pub(crate) struct ClassicServers {
    inner: Mutex<HashMap<(String, String), Instant>>,
}

impl ClassicServers {
    /// Whether the server at `peer` (`host:port`), asked for `server_name`, answered
    /// a post-quantum offer with a classic group within the last hour.
    pub(crate) fn chose_classic(&self, peer: &str, server_name: &str) -> bool {
        let servers = self.lock();
        servers
            .get(&(peer.to_owned(), server_name.to_owned()))
            .is_some_and(|since| since.elapsed() < REMEMBERED_FOR)
    }

    /// Records what the server chose when offered a post-quantum group: `group` is
    /// the group agreed on (`None`: none, as with RSA key exchange).
    pub(crate) fn learn(&self, peer: &str, server_name: &str, group: Option<&str>) {
        let key = (peer.to_owned(), server_name.to_owned());
        let mut servers = self.lock();
        if group.is_some_and(is_post_quantum) {
            servers.remove(&key);
            return;
        }
        if servers.len() >= SERVERS_REMEMBERED && !servers.contains_key(&key) {
            servers.retain(|_, since| since.elapsed() < REMEMBERED_FOR);
            if servers.len() >= SERVERS_REMEMBERED {
                servers.clear();
            }
        }
        servers.insert(key, Instant::now());
    }

    /// Forgets what the server chose: a connection offered only classic groups
    /// because of it failed.
    pub(crate) fn forget(&self, peer: &str, server_name: &str) {
        self.lock()
            .remove(&(peer.to_owned(), server_name.to_owned()));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Instant>> {
        // Every update is a single map operation: a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_and_pure_ml_kem_groups_are_post_quantum_and_the_curves_are_not() {
        for group in [
            "X25519MLKEM768",
            "SecP256r1MLKEM768",
            "MLKEM1024",
            "X25519Kyber768Draft00",
        ] {
            assert!(is_post_quantum(group), "{group}");
        }
        for group in ["x25519", "secp256r1", "X448", "ffdhe2048"] {
            assert!(!is_post_quantum(group), "{group}");
        }
    }

    #[test]
    fn a_server_is_remembered_by_address_and_name_until_it_answers_post_quantum() {
        let servers = ClassicServers::default();
        assert!(!servers.chose_classic("example.com:443", "example.com"));
        servers.learn("example.com:443", "example.com", Some("x25519"));
        assert!(servers.chose_classic("example.com:443", "example.com"));
        assert!(!servers.chose_classic("example.com:443", "other.example"));
        assert!(!servers.chose_classic("example.com:8443", "example.com"));
        servers.learn("example.com:443", "example.com", Some("X25519MLKEM768"));
        assert!(!servers.chose_classic("example.com:443", "example.com"));
        servers.learn("example.com:443", "example.com", None);
        assert!(servers.chose_classic("example.com:443", "example.com"));
        servers.forget("example.com:443", "example.com");
        assert!(!servers.chose_classic("example.com:443", "example.com"));
    }

    #[test]
    fn the_memory_is_bounded() {
        let servers = ClassicServers::default();
        for port in 0..SERVERS_REMEMBERED + 10 {
            servers.learn(&format!("h:{port}"), "h", Some("x25519"));
        }
        assert!(servers.lock().len() <= SERVERS_REMEMBERED);
        assert!(servers.chose_classic(&format!("h:{}", SERVERS_REMEMBERED + 9), "h"));
    }
}
