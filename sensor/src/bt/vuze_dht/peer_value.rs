//! BitTorrent registrations in Vuze DHT values.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::TransportValue;

/// A BitTorrent registration stored by BiglyBT's DHT tracker plugin (`DHTTrackerPlugin`
/// writes `[ip_override:]tcp_port[;flags][;udp_port]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerValue {
    /// `ip_override`; otherwise the peer is at the value's originator address.
    pub ip: Option<Ipv4Addr>,
    pub tcp_port: u16,
    /// Flag `C`: the peer requires an encrypted connection.
    pub crypto_required: bool,
    /// Flag `I`: the peer is (also) reachable over I2P.
    pub i2p: bool,
    /// Given only when it differs from the DHT (originator) port.
    pub udp_port: Option<u16>,
}

/// 1–5 ASCII digits, 1..=65535.
fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Reads value bytes as `[ip:]port[;letters][;udp_port]`, strictly: anything else is another
/// application's data. The address part ends at the first `:` as in BiglyBT, so an IPv6 or
/// bracketed override (which BiglyBT cannot read either) and host names are refused.
pub fn parse_peer_value(bytes: &[u8]) -> Option<PeerValue> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut tokens = s.split(';');
    let first = tokens.next()?;
    let (ip, port) = match first.split_once(':') {
        Some((ip, port)) => (Some(ip.parse::<Ipv4Addr>().ok()?), port),
        None => (None, first),
    };
    let tcp_port = port_number(port)?;
    let mut next = tokens.next();
    let mut letters = "";
    if let Some(t) = next {
        if !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphabetic()) {
            letters = t;
            next = tokens.next();
        }
    }
    let udp_port = match next {
        Some(t) => Some(port_number(t)?),
        None => None,
    };
    if tokens.next().is_some() {
        return None;
    }
    Some(PeerValue {
        ip,
        tcp_port,
        crypto_required: letters.contains('C'),
        i2p: letters.contains('I'),
        udp_port,
    })
}

impl PeerValue {
    /// The TCP and UDP endpoints a lookup of `value` learns (BiglyBT `DHTTrackerPlugin`):
    /// the override address or the originator's, and the explicit UDP port or the
    /// originator's.
    pub fn endpoints(&self, value: &TransportValue<'_>) -> (SocketAddr, SocketAddr) {
        let origin = value.originator.addr;
        let ip = self.ip.map_or(origin.ip(), IpAddr::V4);
        (
            SocketAddr::new(ip, self.tcp_port),
            SocketAddr::new(ip, self.udp_port.unwrap_or(origin.port())),
        )
    }
}
