//! The BEP 3 handshake that opens every plaintext peer connection, in both directions: 68
//! bytes, `pstrlen` 19, `pstr` "BitTorrent protocol", 8 reserved bytes (the extension bits of
//! BEP 4), the info hash and the peer id. A stream that does not open with it is MSE/PE
//! ciphertext, another protocol, or one picked up mid-session (see [`super::plausible_start`]).

use super::Reject;
use crate::bt::wire::Reader;

/// `pstrlen` + `pstr`: the first 20 bytes of every plaintext connection.
pub const PROTOCOL: &[u8; 20] = b"\x13BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;

/// The 68-byte handshake (BEP 3 "handshake"). Byte fields borrow from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake<'a> {
    pub reserved: [u8; 8],
    pub info_hash: &'a [u8; 20],
    pub peer_id: &'a [u8; 20],
}

impl Handshake<'_> {
    /// BEP 10 extension protocol (`reserved[5] & 0x10`).
    pub fn extension_protocol(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// BEP 5 DHT: the peer may send PORT (`reserved[7] & 0x01`).
    pub fn dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }

    /// BEP 6 fast extension (`reserved[7] & 0x04`).
    pub fn fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// Azureus Messaging Protocol (`reserved[0] & 0x80`).
    pub fn azureus_messaging(&self) -> bool {
        self.reserved[0] & 0x80 != 0
    }
}

/// Whether `data` starts like a handshake (as far as it goes).
pub fn starts_like_handshake(data: &[u8]) -> bool {
    let n = data.len().min(PROTOCOL.len());
    data.get(..n) == PROTOCOL.get(..n)
}

/// Reads the handshake at the start of `b`; bytes after the 68th are ignored.
pub fn parse_handshake(b: &[u8]) -> Result<Handshake<'_>, Reject> {
    if !starts_like_handshake(b) {
        return Err(Reject::NotHandshake);
    }
    let mut r = Reader::new(b.get(..HANDSHAKE_LEN).ok_or(Reject::Truncated)?);
    r.skip(PROTOCOL.len())?;
    Ok(Handshake {
        reserved: *r.array::<8>()?,
        info_hash: r.array::<20>()?,
        peer_id: r.array::<20>()?,
    })
}
