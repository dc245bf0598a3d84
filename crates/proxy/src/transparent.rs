//! The transparent mode's one question: where was a redirected connection going?
//! An `iptables`/`nft` REDIRECT (or DNAT) rewrites the destination; Linux keeps the
//! original for `getsockopt(SO_ORIGINAL_DST)` (`IP6T_SO_ORIGINAL_DST` for IPv6),
//! which `nix` wraps safely.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{getsockopt, sockopt, SockaddrIn, SockaddrIn6};
use tokio::net::TcpStream;

/// The address the client connected to before the kernel redirected it here.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    let original = if local.is_ipv4() {
        let address = getsockopt(stream, sockopt::OriginalDst).map_err(io::Error::from)?;
        SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(address)))
    } else {
        let address = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
        SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(address)))
    };
    Ok(original)
}
