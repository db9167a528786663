//! The one way binary coordination messages are read: a cursor over a borrowed byte slice whose
//! every read is bounds-checked and fails with [`Truncated`] instead of panicking, and
//! fixed-offset peeks for shape checks that look at a few bytes without consuming them.
//!
//! All integers on the BitTorrent wire are big-endian (network order): BEP 3 (peer wire
//! lengths), BEP 15 (UDP tracker), BEP 29 (uTP), BEP 5/23 compact endpoints and the Vuze DHT.
//! Each channel maps [`Truncated`] into its own rejection reason with `?` (`From`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A read ran past the end of the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

/// A cursor over a message's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
    consumed: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            consumed: 0,
        }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Bytes read so far (the offset of the next read).
    pub fn position(&self) -> usize {
        self.consumed
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        if self.rest.len() < n {
            return Err(Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        self.consumed += n;
        Ok(head)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), Truncated> {
        self.take(n).map(|_| ())
    }

    /// The next `N` bytes, borrowed.
    pub fn array<const N: usize>(&mut self) -> Result<&'a [u8; N], Truncated> {
        let head = self.take(N)?;
        Ok(head.try_into().expect("take returned N bytes"))
    }

    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.array::<1>()?[0])
    }

    pub fn be16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(*self.array()?))
    }

    pub fn be32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(*self.array()?))
    }

    pub fn be64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(*self.array()?))
    }

    /// A compact IPv4 endpoint (BEP 5/23 "C4"): 4-byte address, big-endian port.
    pub fn compact_v4(&mut self) -> Result<SocketAddr, Truncated> {
        let ip = Ipv4Addr::from(*self.array::<4>()?);
        Ok(SocketAddr::new(IpAddr::V4(ip), self.be16()?))
    }

    /// A compact IPv6 endpoint (BEP 7/32 "C6"): 16-byte address, big-endian port.
    pub fn compact_v6(&mut self) -> Result<SocketAddr, Truncated> {
        let ip = Ipv6Addr::from(*self.array::<16>()?);
        Ok(SocketAddr::new(IpAddr::V6(ip), self.be16()?))
    }
}

/// The `N` bytes at `at`, if the slice holds them.
pub fn array_at<const N: usize>(p: &[u8], at: usize) -> Option<&[u8; N]> {
    p.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub fn be16_at(p: &[u8], at: usize) -> Option<u16> {
    array_at(p, at).map(|a| u16::from_be_bytes(*a))
}

pub fn be32_at(p: &[u8], at: usize) -> Option<u32> {
    array_at(p, at).map(|a| u32::from_be_bytes(*a))
}

pub fn be64_at(p: &[u8], at: usize) -> Option<u64> {
    array_at(p, at).map(|a| u64::from_be_bytes(*a))
}

/// Compact IPv4 endpoint (BEP 5 "C4") from exactly 6 bytes.
pub fn compact_v4(b: &[u8; 6]) -> SocketAddr {
    Reader::new(b).compact_v4().expect("6 bytes")
}

/// Compact IPv6 endpoint (BEP 7/32 "C6") from exactly 18 bytes.
pub fn compact_v6(b: &[u8; 18]) -> SocketAddr {
    Reader::new(b).compact_v6().expect("18 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_network_order_and_stops_at_the_end() {
        // A BEP 15 connect request: protocol id, action 0, transaction id.
        let b = [
            0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef,
        ];
        let mut r = Reader::new(&b);
        assert_eq!(r.be64(), Ok(0x0417_2710_1980));
        assert_eq!(r.be32(), Ok(0));
        assert_eq!(r.position(), 12);
        assert_eq!(r.be16(), Ok(0xdead));
        assert_eq!(r.be32(), Err(Truncated));
        // A failed read consumes nothing.
        assert_eq!(r.remaining(), 2);
        assert_eq!(r.u8(), Ok(0xbe));
        assert_eq!(r.rest(), &[0xef]);
        assert_eq!(r.skip(2), Err(Truncated));
    }

    #[test]
    fn peeks_never_panic() {
        let b = [1, 2, 3, 4, 5];
        assert_eq!(be16_at(&b, 3), Some(0x0405));
        assert_eq!(be16_at(&b, 4), None);
        assert_eq!(be32_at(&b, usize::MAX), None);
        assert_eq!(be64_at(&b, 0), None);
    }

    #[test]
    fn compact_endpoints() {
        let v4 = [10, 0, 0, 1, 0x1a, 0xe1];
        assert_eq!(compact_v4(&v4).to_string(), "10.0.0.1:6881");
        let mut v6 = [0u8; 18];
        v6[15] = 1;
        v6[16..].copy_from_slice(&[0x1a, 0xe1]);
        assert_eq!(compact_v6(&v6).to_string(), "[::1]:6881");
    }
}
