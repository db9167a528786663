//! Peer-wire message framing (BEP 3 "peer messages"): `be32 length | u8 id | payload`, length
//! 0 a keep-alive. Lengths are checked against what each id can have (the fixed sizes of BEP 3,
//! BEP 4's id list, BEP 5 PORT, BEP 6 fast, BEP 10 extended, BEP 52 hash messages) to stay in
//! sync and to find a message boundary again after loss.

use super::{Reject, MSG_EXTENDED, MSG_PIECE, MSG_PORT};
use crate::bt::wire::be32_at;

/// Longest frame accepted in sync (Zeek's `bittorrent.pac` `MSGLEN_LIMIT`); longer means lost
/// sync or a hostile peer.
pub const MAX_FRAME: u32 = 0x40000;
/// Resynchronisation maxima (Wireshark's `packet-bittorrent.c` `test_type_length`): a 16 KiB
/// block plus the piece header, and a bitfield.
pub const RESYNC_MAX_BLOCK: u32 = 0x4009;
pub const RESYNC_MAX_BITFIELD: u32 = 0x20000;

/// How strictly a message header is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Inside a stream already in sync: fixed lengths enforced, any length up to [`MAX_FRAME`],
    /// unknown ids allowed (skipped).
    InSync,
    /// At a chunk start after loss: the resynchronisation maxima and known ids only.
    Resync,
}

/// Plausibility of a header (the message sizes of BEP 3, 5, 6, 10 and 52, Wireshark's
/// `test_type_length` maxima): `len` counts the id byte and the payload (> 0).
pub fn check_header(len: u32, id: u8, check: Check) -> Result<(), Reject> {
    let resync = check == Check::Resync;
    let max = |resync_max: u32| if resync { resync_max } else { MAX_FRAME };
    let ok = match id {
        // choke, unchoke, interested, not interested, have all, have none
        0..=3 | 0x0e | 0x0f => len == 1,
        // have, suggest, allowed fast
        4 | 0x0d | 0x11 => len == 5,
        5 => (2..=max(RESYNC_MAX_BITFIELD)).contains(&len),
        // request, cancel, reject request
        6 | 8 | 0x10 => len == 13,
        MSG_PIECE => (9..=max(RESYNC_MAX_BLOCK)).contains(&len),
        MSG_PORT => len == 3,
        MSG_EXTENDED => (2..=max(RESYNC_MAX_BLOCK)).contains(&len),
        // BEP 52 hash request / hash reject: pieces root (32) + four be32.
        0x15 | 0x17 => len == 49,
        0x16 => (49..=max(RESYNC_MAX_BITFIELD)).contains(&len),
        _ if resync => return Err(Reject::UnknownId),
        _ => len <= MAX_FRAME,
    };
    if ok {
        Ok(())
    } else {
        Err(Reject::BadLength)
    }
}

/// Whether `id` is one [`check_header`] knows.
pub fn known_id(id: u8) -> bool {
    check_header(1, id, Check::Resync) != Err(Reject::UnknownId)
}

/// One message read from the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Length 0; 4 bytes consumed.
    KeepAlive,
    /// A whole message; `5 + payload.len()` bytes consumed.
    Complete {
        id: u8,
        payload: &'a [u8],
    },
    /// The buffer holds only part of it: `needed` bytes in all (header included).
    NeedMore {
        needed: usize,
    },
    Invalid(Reject),
}

/// Reads the message at the start of `buf`, checking its header with `check`.
pub fn frame(buf: &[u8], check: Check) -> Frame<'_> {
    let Some(len) = be32_at(buf, 0) else {
        return Frame::NeedMore { needed: 4 };
    };
    if len == 0 {
        return Frame::KeepAlive;
    }
    let Some(&id) = buf.get(4) else {
        return Frame::NeedMore { needed: 5 };
    };
    if let Err(r) = check_header(len, id, check) {
        return Frame::Invalid(r);
    }
    let total = 4 + len as usize;
    match buf.get(5..total) {
        Some(payload) => Frame::Complete { id, payload },
        None => Frame::NeedMore { needed: total },
    }
}

/// Whether a chunk after loss may start at a message boundary: the frames that start inside
/// `data` (up to four are looked at) pass [`Check::Resync`], and at least one of them is a real
/// message with its whole header in `data`. Keep-alives alone do not count: runs of zero bytes
/// inside pieces read as keep-alives.
pub fn plausible_start(data: &[u8]) -> bool {
    let mut rest = data;
    let mut real = false;
    for _ in 0..4 {
        match frame(rest, Check::Resync) {
            Frame::KeepAlive => rest = rest.get(4..).unwrap_or_default(),
            Frame::Complete { payload, .. } => {
                real = true;
                rest = rest.get(5 + payload.len()..).unwrap_or_default();
            }
            // `needed > 5`: the header was whole and passed.
            Frame::NeedMore { needed } => return real || needed > 5,
            Frame::Invalid(_) => return false,
        }
        if rest.is_empty() {
            break;
        }
    }
    real
}
