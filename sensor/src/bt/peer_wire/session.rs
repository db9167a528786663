//! One direction of a peer-wire connection, as a state machine whose phases each hold only
//! their own data: nothing read yet, the 68-byte handshake being gathered, messages being
//! framed (a header, a message skipped by counting, an extended message gathered across
//! chunks), out of sync after loss, or opaque (ciphertext or another protocol).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::extended::Announced;
use super::framing::{check_header, known_id, plausible_start, Check};
use super::handshake::{parse_handshake, starts_like_handshake, HANDSHAKE_LEN};
use super::{PeerWireStats, MSG_EXTENDED, MSG_PORT};
use crate::bt::wire::{be16_at, be32_at};

/// Bytes reserved from the global buffer budget, given back when dropped (also when the
/// connection table drops the connection).
#[derive(Debug)]
struct Reservation {
    pool: Arc<AtomicUsize>,
    n: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.n, Relaxed);
    }
}

/// An extended message being gathered across chunks.
#[derive(Debug)]
pub(super) struct Body {
    ext: u8,
    want: usize,
    buf: Vec<u8>,
    _hold: Reservation,
}

/// One direction of a connection.
#[derive(Debug, Default)]
pub(super) enum Stream {
    /// Nothing read yet.
    #[default]
    Fresh,
    /// The handshake, gathered until its 68 bytes are in.
    Handshake(Vec<u8>),
    /// In sync: length-prefixed messages.
    Messages(Messages),
    /// Out of sync: waiting for a plausible chunk start.
    Lost,
    /// Not BitTorrent framing as far as we can read: ignored.
    Opaque,
}

/// Where the message reader of a direction in sync stands.
#[derive(Debug)]
pub(super) enum Messages {
    /// Header bytes so far: length, id, and the extension id or PORT's port.
    Header { hdr: [u8; 7], len: u8 },
    /// Bytes of the current message still to pass over (never 0).
    Skip(u32),
    /// An extended message we read, gathered across chunks.
    Gather(Body),
    /// A gathered message handed out: dropped before reading on.
    Delivered(Body),
}

impl Default for Messages {
    fn default() -> Self {
        Messages::Header {
            hdr: [0; 7],
            len: 0,
        }
    }
}

/// A complete message worth reading.
pub(super) enum Step<'a> {
    Port(u16),
    Extended { ext: u8, body: &'a [u8] },
}

enum Advance<'a> {
    Wait,
    /// A header broke the framing rules: sync is lost.
    Lost,
    Port(u16),
    /// The whole message lay in the chunk.
    Direct {
        ext: u8,
        body: &'a [u8],
    },
    /// [`Messages::Delivered`] holds the message.
    Buffered,
}

/// What an extended message may take of the buffers.
pub(super) struct Limits<'c> {
    pub(super) max_message: usize,
    pub(super) max_buffered: usize,
    pub(super) pool: &'c Arc<AtomicUsize>,
}

impl Stream {
    /// Drops any partial message: bytes were lost.
    pub(super) fn lose(&mut self) {
        if matches!(self, Stream::Handshake(_) | Stream::Messages(_)) {
            *self = Stream::Lost;
        }
    }

    pub(super) fn make_opaque(&mut self) {
        *self = Stream::Opaque;
    }

    /// At a chunk start: whether the chunk is read. A fresh direction is classified by its
    /// first bytes (a handshake, or messages when picked up mid-session); a direction out of
    /// sync resumes at a plausible message start.
    pub(super) fn enter(&mut self, data: &[u8], stats: &mut PeerWireStats) -> bool {
        let fresh = matches!(self, Stream::Fresh);
        match self {
            Stream::Opaque => {
                stats.opaque_bytes += data.len() as u64;
                false
            }
            Stream::Fresh if starts_like_handshake(data) => {
                *self = Stream::Handshake(Vec::new());
                true
            }
            Stream::Fresh | Stream::Lost if plausible_start(data) => {
                // Picked up mid-session, or back in sync after loss.
                *self = Stream::Messages(Messages::default());
                stats.resyncs += 1;
                true
            }
            Stream::Fresh | Stream::Lost => {
                *self = Stream::Lost;
                stats.opaque_streams += u64::from(fresh);
                stats.unsynced_chunks += 1;
                stats.unsynced_bytes += data.len() as u64;
                false
            }
            Stream::Handshake(_) | Stream::Messages(_) => true,
        }
    }

    /// Gathers the handshake of a direction in [`Stream::Handshake`], recording the sender's
    /// reserved bits in `me`. Returns whether messages follow in `data`; with both handshakes
    /// asking for Azureus messaging both directions turn opaque (`other` too).
    pub(super) fn handshake(
        &mut self,
        other: &mut Stream,
        peers: &mut [Announced; 2],
        i: usize,
        data: &mut &[u8],
        stats: &mut PeerWireStats,
    ) -> bool {
        let Stream::Handshake(hs) = self else {
            return true;
        };
        let take = (HANDSHAKE_LEN - hs.len()).min(data.len());
        let (head, rest) = data.split_at(take);
        hs.extend_from_slice(head);
        *data = rest;
        if !starts_like_handshake(hs) {
            stats.bad_handshakes += 1;
            stats.opaque_streams += 1;
            stats.opaque_bytes += data.len() as u64;
            self.make_opaque();
            return false;
        }
        if hs.len() < HANDSHAKE_LEN {
            return false;
        }
        let Ok(h) = parse_handshake(hs) else {
            self.make_opaque();
            return false;
        };
        stats.handshakes += 1;
        stats.handshakes_extension += u64::from(h.extension_protocol());
        stats.handshakes_dht += u64::from(h.dht());
        stats.handshakes_fast += u64::from(h.fast());
        peers[i].reserved = Some(h.reserved);
        if peers[0].azureus() && peers[1].azureus() {
            // Azureus Messaging Protocol framing from here on (BEP 4 `reserved[0] & 0x80`,
            // Vuze/BiglyBT only): not read.
            stats.azureus_messaging += 1;
            self.make_opaque();
            other.make_opaque();
            return false;
        }
        *self = Stream::Messages(Messages::default());
        true
    }

    /// Reads on to the next message worth handing out, or the end of `data`.
    pub(super) fn next<'s, 'a: 's>(
        &'s mut self,
        data: &mut &'a [u8],
        receiver: &Announced,
        limits: &Limits<'_>,
        stats: &mut PeerWireStats,
    ) -> Option<Step<'s>> {
        let advance = match self {
            Stream::Messages(m) => m.advance(data, receiver, limits, stats),
            _ => return None,
        };
        match advance {
            Advance::Wait => None,
            Advance::Lost => {
                *self = Stream::Lost;
                None
            }
            Advance::Port(p) => Some(Step::Port(p)),
            Advance::Direct { ext, body } => Some(Step::Extended { ext, body }),
            Advance::Buffered => match self {
                Stream::Messages(Messages::Delivered(b)) => Some(Step::Extended {
                    ext: b.ext,
                    body: &b.buf,
                }),
                _ => None,
            },
        }
    }
}

impl Messages {
    /// Passes over `n` bytes of message (none: the next header).
    fn skip(n: u32) -> Self {
        if n == 0 {
            Messages::default()
        } else {
            Messages::Skip(n)
        }
    }

    fn advance<'a>(
        &mut self,
        data: &mut &'a [u8],
        receiver: &Announced,
        limits: &Limits<'_>,
        stats: &mut PeerWireStats,
    ) -> Advance<'a> {
        loop {
            match self {
                Messages::Delivered(_) => *self = Messages::default(),
                Messages::Skip(left) => {
                    let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    // `n <= *left`, a u32.
                    *left -= u32::try_from(n).unwrap_or(*left);
                    stats.skipped_bytes += n as u64;
                    *data = data.get(n..).unwrap_or_default();
                    if *left > 0 {
                        return Advance::Wait;
                    }
                    *self = Messages::default();
                }
                Messages::Gather(body) => {
                    let n = (body.want - body.buf.len()).min(data.len());
                    let (head, rest) = data.split_at(n);
                    body.buf.extend_from_slice(head);
                    *data = rest;
                    if body.buf.len() < body.want {
                        return Advance::Wait;
                    }
                    if let Messages::Gather(b) = std::mem::take(self) {
                        *self = Messages::Delivered(b);
                    }
                    return Advance::Buffered;
                }
                Messages::Header { hdr, len } => match Self::header(hdr, len, data, stats) {
                    Header::Partial => return Advance::Wait,
                    Header::Invalid => return Advance::Lost,
                    Header::KeepAlive => *len = 0,
                    Header::Whole { len: msg_len, id } => {
                        let hdr = *hdr;
                        *self = Messages::default();
                        match id {
                            MSG_PORT => return Advance::Port(be16_at(&hdr, 5).unwrap_or_default()),
                            MSG_EXTENDED => {
                                let ext = hdr[5];
                                if let Some(a) =
                                    self.extended(msg_len, ext, data, receiver, limits, stats)
                                {
                                    return a;
                                }
                            }
                            _ => *self = Messages::skip(msg_len - 1),
                        }
                    }
                },
            }
        }
    }

    /// Reads header bytes: the length, then the id, then (extended) the extension id or
    /// (PORT) the port.
    fn header(
        hdr: &mut [u8; 7],
        held: &mut u8,
        data: &mut &[u8],
        stats: &mut PeerWireStats,
    ) -> Header {
        if !fill(hdr, held, data, 4) {
            return Header::Partial;
        }
        let len = be32_at(hdr, 0).unwrap_or_default();
        if len == 0 {
            stats.messages += 1;
            return Header::KeepAlive;
        }
        if !fill(hdr, held, data, 5) {
            return Header::Partial;
        }
        let id = hdr[4];
        if check_header(len, id, Check::InSync).is_err() {
            stats.invalid_frames += 1;
            stats.unsynced_bytes += data.len() as u64;
            *data = &[];
            return Header::Invalid;
        }
        let need = match id {
            MSG_EXTENDED => 6,
            MSG_PORT => 7,
            _ => 5,
        };
        if !fill(hdr, held, data, need) {
            return Header::Partial;
        }
        stats.messages += 1;
        if !known_id(id) {
            stats.unknown_ids += 1;
        }
        Header::Whole { len, id }
    }

    /// An extended message of length `len` whose header was read: handed out whole, gathered
    /// (`Some(Wait)`), or skipped (`None`, `self` set to skip it).
    fn extended<'a>(
        &mut self,
        len: u32,
        ext: u8,
        data: &mut &'a [u8],
        receiver: &Announced,
        limits: &Limits<'_>,
        stats: &mut PeerWireStats,
    ) -> Option<Advance<'a>> {
        // In sync an extended message is at least 2 bytes long (`check_header`).
        let want = usize::try_from(len - 2).unwrap_or(usize::MAX);
        if !receiver.wants(ext) {
            stats.unknown_extension += 1;
        } else if want > limits.max_message {
            stats.oversized += 1;
        } else if let Some((body, rest)) = data.split_at_checked(want) {
            *data = rest;
            return Some(Advance::Direct { ext, body });
        } else if limits.pool.load(Relaxed) + want > limits.max_buffered {
            stats.over_budget += 1;
        } else {
            limits.pool.fetch_add(want, Relaxed);
            let mut buf = Vec::with_capacity(want);
            buf.extend_from_slice(data);
            *data = &[];
            *self = Messages::Gather(Body {
                ext,
                want,
                buf,
                _hold: Reservation {
                    pool: Arc::clone(limits.pool),
                    n: want,
                },
            });
            return Some(Advance::Wait);
        }
        *self = Messages::skip(len - 2);
        None
    }
}

/// What [`Messages::header`] read.
enum Header {
    /// `data` ran out first.
    Partial,
    /// It broke the framing rules.
    Invalid,
    KeepAlive,
    Whole {
        len: u32,
        id: u8,
    },
}

/// Moves header bytes from `data` until `n` are held; false if `data` ran out first.
fn fill(hdr: &mut [u8; 7], held: &mut u8, data: &mut &[u8], n: usize) -> bool {
    while usize::from(*held) < n {
        let Some((&b, rest)) = data.split_first() else {
            return false;
        };
        if let Some(slot) = hdr.get_mut(usize::from(*held)) {
            *slot = b;
        }
        *held += 1;
        *data = rest;
    }
    true
}
