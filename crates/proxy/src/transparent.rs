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
    // A dual-stack listener (`[::]`) sees an IPv4 client at an IPv4-mapped address;
    // the kernel keeps that connection's original destination as IPv4, so the family
    // of the connection, not of the socket, picks the option.
    let local = canonical(stream.local_addr()?);
    let original = if local.is_ipv4() {
        let address = getsockopt(stream, sockopt::OriginalDst).map_err(io::Error::from)?;
        SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(address)))
    } else {
        let address = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
        SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(address)))
    };
    Ok(original)
}

/// `address` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) written as IPv4.
pub fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

#[cfg(test)]
mod tests {
    use super::canonical;
    use std::net::SocketAddr;

    #[test]
    fn an_ipv4_mapped_address_is_ipv4_and_the_others_stay() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3:80".parse().unwrap());
        for same in ["10.1.2.3:80", "[fd00::1]:443", "[::1]:8080"] {
            let address: SocketAddr = same.parse().unwrap();
            assert_eq!(canonical(address), address);
        }
    }
}
