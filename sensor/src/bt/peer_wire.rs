//! The BitTorrent peer wire over TCP (spec `bt-wire.md` §6, §7): the 68-byte handshake, message
//! framing, the BEP 10 extended handshake, ut_pex (BEP 11), the PORT message (BEP 5) and
//! ut_holepunch `connect` (BEP 55).
//!
//! Predictions (spec §0.3), the learner is always the *receiver* of the message:
//! * ut_pex `added`/`added6` → TCP and uTP ([`PeerTransport::Udp`]) on [`Channel::Pex`], as
//!   `values` in the DHT; `dropped`/`dropped6` → a [`RetractedPeer`] on [`Channel::Pex`].
//! * extended handshake `p` → TCP on [`Channel::PeerWire`] to (sender IP, `p`), only when the
//!   sender initiated the connection (a responder's `p` is the port already connected to); and
//!   (`ipv4`/`ipv6`, `p`) whatever the direction, except link-local, Teredo and the sender's
//!   own address.
//! * PORT → UDP on [`Channel::PeerWire`] to (sender IP, DHT port).
//! * ut_holepunch `connect` → UDP (uTP, no TCP fallback: spec §7.4) on [`Channel::PeerWire`].
//!
//! Endpoints are dropped when unusable (port 0), when they are the learner (its address on the
//! connection, the `yourip` the sender reported to it, the `ipv4`/`ipv6` it announced itself:
//! PEX lists the receiver itself, spec PEX-R1) or, for PEX, the sender itself.
//!
//! **Extension ids** (spec §6.3): a message travelling A → B carries the id that *B* announced
//! in its `m` dict, so each side's `m` is kept per connection and later handshakes add to it.
//! When B's extended handshake was not seen (capture or sensor started mid-session, spec
//! PEX-R2), an extended message with id 1 (the id every known client uses for ut_pex) is read as
//! PEX if it parses as one; such messages are counted in `pex_fallback`.
//!
//! **Framing under loss.** Chunks come from a budgeted pre-filter: big `piece` segments are
//! dropped, so `gap` chunks are normal. Nothing large is ever buffered: every message is skipped
//! by counting its bytes except PORT (read in the fixed header) and extended messages we parse
//! (at most [`PeerWireConfig::max_message`] bytes, one per direction, under a global
//! [`PeerWireConfig::max_buffered`] budget). After a gap, or a header that breaks the §6.2
//! rules, the direction waits for a chunk whose start passes [`plausible_start`] and resumes
//! there. A direction's first chunk is read as a handshake if it starts like one, else as
//! messages if it starts plausibly (a connection first seen mid-session, spec PEX-R2: the
//! reassembler cannot tell whether it saw a stream's start); otherwise the direction is counted
//! in `opaque_streams` (MSE/PE ciphertext, §8, another protocol, or a mid-message start) and
//! waits like a direction after a gap. Ciphertext does not pass [`plausible_start`] in practice
//! (it needs e.g. `00 00 00 05 04` at a chunk start, then a chain of valid headers).
//!
//! Not read: Azureus messaging (both handshakes with `reserved[0] & 0x80` switch the connection
//! to AMP framing, spec §7.3; counted, then opaque), and the plaintext-after-MSE handshake
//! heuristic of §8.2 (unverified on captures).
//!
//! Bencode: the crate and options of [`super::dht`] (depth cap, unsorted keys accepted:
//! µTorrent's extended handshakes are unsorted, spec EXT-R1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bencode::ext::BRefAccessExt;
use bencode::{BRefAccess, BencodeRef};

use super::stream::{ConnKey, Dir, StreamChunk};
use super::{compact_v4, compact_v6, unfit, Bounded, ChannelCounts, EntryCounts, TableStats};
use crate::event::Timestamp;
use crate::predict::{Channel, PeerTransport, PredictedPeer, RetractedPeer};

/// `pstrlen` + `pstr`: the first 20 bytes of every plaintext connection.
pub const PROTOCOL: &[u8; 20] = b"\x13BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// Longest frame accepted in sync (Zeek's `MSGLEN_LIMIT`, spec §6.2); longer means lost sync
/// or a hostile peer.
pub const MAX_FRAME: u32 = 0x40000;
/// Resynchronisation maxima (Wireshark's `test_type_length`, spec §6.2): a 16 KiB block plus
/// the piece header, and a bitfield.
pub const RESYNC_MAX_BLOCK: u32 = 0x4009;
pub const RESYNC_MAX_BITFIELD: u32 = 0x20000;
/// Nesting the decoder accepts: the extended handshake needs 3 (dict, `m` dict, value).
pub const MAX_DEPTH: usize = 8;
/// Endpoints read per PEX list (BEP 11 allows 50 added and 50 dropped; clients cap at 50).
pub const MAX_ENTRIES: usize = 200;
/// The ut_pex id assumed when the receiver's extended handshake was not seen.
pub const FALLBACK_PEX_ID: u8 = 1;

pub const MSG_PIECE: u8 = 7;
pub const MSG_PORT: u8 = 9;
pub const MSG_EXTENDED: u8 = 20;
/// BEP 55 message types.
pub const HOLEPUNCH_CONNECT: u8 = 1;

/// Why bytes were not read as the structure asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Fewer bytes than the structure needs.
    Truncated,
    /// Not `0x13 "BitTorrent protocol"`.
    NotHandshake,
    /// A message length its id never has, or over the maximum.
    BadLength,
    /// An id outside BEP 3/4/6/10/52 (refused only when resynchronising).
    UnknownId,
    /// A bencoded string's declared length runs past the end.
    LengthBeyondEnd,
    TrailingData,
    TooDeep,
    DuplicateKey,
    /// Not bencode.
    Syntax,
    NotDict,
    /// A PEX key whose value is not a string.
    WrongType,
    /// None of `added`, `added6`, `dropped`, `dropped6` (BEP 11 requires one).
    NoPexKeys,
    /// ut_holepunch address type other than 0 (IPv4) or 1 (IPv6).
    BadAddressType,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::NotHandshake => "not_handshake",
            Reject::BadLength => "bad_length",
            Reject::UnknownId => "unknown_id",
            Reject::LengthBeyondEnd => "length_beyond_end",
            Reject::TrailingData => "trailing_data",
            Reject::TooDeep => "too_deep",
            Reject::DuplicateKey => "duplicate_key",
            Reject::Syntax => "syntax",
            Reject::NotDict => "not_dict",
            Reject::WrongType => "wrong_type",
            Reject::NoPexKeys => "no_pex_keys",
            Reject::BadAddressType => "bad_address_type",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake

/// The 68-byte handshake (spec §6.1). Byte fields borrow from the input.
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
    let hs = b.get(..HANDSHAKE_LEN).ok_or(Reject::Truncated)?;
    let (_, rest) = hs.split_at(PROTOCOL.len());
    let (reserved, rest) = rest.split_at(8);
    let (info_hash, peer_id) = rest.split_at(20);
    Ok(Handshake {
        reserved: reserved.try_into().map_err(|_| Reject::Truncated)?,
        info_hash: info_hash.try_into().map_err(|_| Reject::Truncated)?,
        peer_id: peer_id.try_into().map_err(|_| Reject::Truncated)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Framing

/// How strictly a message header is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Inside a stream already in sync: fixed lengths enforced, any length up to [`MAX_FRAME`],
    /// unknown ids allowed (skipped).
    InSync,
    /// At a chunk start after loss: the §6.2 maxima and known ids only.
    Resync,
}

/// Spec §6.2 plausibility of a header: `len` counts the id byte and the payload (> 0).
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
    let Some(len) = buf.first_chunk::<4>().map(|l| u32::from_be_bytes(*l)) else {
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

// ---------------------------------------------------------------------------------------------
// Bencode payloads

type Dict<'s, 'a> = &'s dyn bencode::BDictAccess<&'a [u8], BencodeRef<'a>>;

super::from_bencode_fault!(Reject);

fn decode(payload: &[u8]) -> Result<BencodeRef<'_>, Reject> {
    Ok(super::decode_bencode(payload, MAX_DEPTH)?)
}

/// The BEP 10 extended handshake, as far as prediction needs it. Fields of the wrong type or
/// size are ignored as libtorrent ignores them, and counted in `bad_fields`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake<'a> {
    /// Whether an `m` dict was present.
    pub has_m: bool,
    /// `m.ut_pex` / `m.ut_holepunch` when present (0 = disabled).
    pub ut_pex: Option<u8>,
    pub ut_holepunch: Option<u8>,
    /// The sender's TCP listen port (1..=65535).
    pub p: Option<u16>,
    pub v: Option<&'a [u8]>,
    /// The receiver's address as the sender sees it: never a target.
    pub yourip: Option<IpAddr>,
    /// The sender's other addresses.
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub bad_fields: u8,
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(v4.into()))
    } else {
        <[u8; 16]>::try_from(b).ok().map(|v6| IpAddr::V6(v6.into()))
    }
}

/// Reads an extended handshake (the payload after the `20, 0` bytes).
pub fn parse_ext_handshake(payload: &[u8]) -> Result<ExtHandshake<'_>, Reject> {
    let root = decode(payload)?;
    let d = root.dict().ok_or(Reject::NotDict)?;
    let mut hs = ExtHandshake::default();
    let mut bad = 0u8;
    let mut note = |ok: bool| {
        if !ok {
            bad = bad.saturating_add(1);
        }
    };
    if let Some(m) = d.lookup(b"m") {
        match m.dict() {
            Some(m) => {
                hs.has_m = true;
                let id = |name: &[u8], note: &mut dyn FnMut(bool)| {
                    let v = m.lookup(name)?;
                    let id = v.int().and_then(|i| u8::try_from(i).ok());
                    note(id.is_some());
                    id
                };
                hs.ut_pex = id(b"ut_pex", &mut note);
                hs.ut_holepunch = id(b"ut_holepunch", &mut note);
            }
            None => note(false),
        }
    }
    if let Some(p) = d.lookup(b"p") {
        hs.p = p
            .int()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        note(hs.p.is_some());
    }
    if let Some(v) = d.lookup(b"v") {
        hs.v = v.bytes_ext();
        note(hs.v.is_some());
    }
    if let Some(y) = d.lookup(b"yourip") {
        hs.yourip = y.bytes_ext().and_then(ip_of);
        note(hs.yourip.is_some());
    }
    if let Some(a) = d.lookup(b"ipv4") {
        hs.ipv4 = a
            .bytes_ext()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from);
        note(hs.ipv4.is_some());
    }
    if let Some(a) = d.lookup(b"ipv6") {
        hs.ipv6 = a
            .bytes_ext()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from);
        note(hs.ipv6.is_some());
    }
    hs.bad_fields = bad;
    Ok(hs)
}

/// A ut_pex message: the raw compact lists, borrowed. Read them with [`Pex::for_each_added`] and
/// [`Pex::for_each_dropped`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pex<'a> {
    pub added: &'a [u8],
    pub added_f: Option<&'a [u8]>,
    pub added6: &'a [u8],
    pub added6_f: Option<&'a [u8]>,
    pub dropped: &'a [u8],
    pub dropped6: &'a [u8],
}

fn opt_bytes<'a>(d: Dict<'_, 'a>, key: &[u8]) -> Result<Option<&'a [u8]>, Reject> {
    d.lookup(key)
        .map(|v| v.bytes_ext().ok_or(Reject::WrongType))
        .transpose()
}

/// Reads a ut_pex payload (after the `20, id` bytes). `added` without `added.f` is accepted
/// (Transmission does; libtorrent would ignore the list).
pub fn parse_pex(payload: &[u8]) -> Result<Pex<'_>, Reject> {
    let root = decode(payload)?;
    let d = root.dict().ok_or(Reject::NotDict)?;
    let added = opt_bytes(d, b"added")?;
    let added6 = opt_bytes(d, b"added6")?;
    let dropped = opt_bytes(d, b"dropped")?;
    let dropped6 = opt_bytes(d, b"dropped6")?;
    if added.is_none() && added6.is_none() && dropped.is_none() && dropped6.is_none() {
        return Err(Reject::NoPexKeys);
    }
    Ok(Pex {
        added: added.unwrap_or_default(),
        added_f: opt_bytes(d, b"added.f")?,
        added6: added6.unwrap_or_default(),
        added6_f: opt_bytes(d, b"added6.f")?,
        dropped: dropped.unwrap_or_default(),
        dropped6: dropped6.unwrap_or_default(),
    })
}

/// Calls `f` with each entry of a compact list (6- or 18-byte `stride`) and its flag byte when
/// `flags` has exactly one per entry; reads at most `max`, counts the rest and a partial tail.
fn each_entry(
    list: &[u8],
    flags: Option<&[u8]>,
    stride: usize,
    max: usize,
    n: &mut EntryCounts,
    f: &mut dyn FnMut(SocketAddr, Option<u8>),
) {
    if !list.len().is_multiple_of(stride) {
        n.malformed += 1;
    }
    let total = list.len() / stride;
    let flags = flags.filter(|fl| fl.len() == total);
    n.capped += total.saturating_sub(max) as u64;
    for (i, e) in list.chunks_exact(stride).take(max).enumerate() {
        let addr = if let Ok(c4) = <&[u8; 6]>::try_from(e) {
            compact_v4(c4)
        } else if let Ok(c6) = <&[u8; 18]>::try_from(e) {
            compact_v6(c6)
        } else {
            continue;
        };
        n.decoded += 1;
        f(addr, flags.and_then(|fl| fl.get(i).copied()));
    }
}

impl Pex<'_> {
    /// Each `added` then `added6` endpoint with its flags (BEP 11), at most `max` per list.
    pub fn for_each_added(
        &self,
        max: usize,
        mut f: impl FnMut(SocketAddr, Option<u8>),
    ) -> EntryCounts {
        let mut n = EntryCounts::default();
        each_entry(self.added, self.added_f, 6, max, &mut n, &mut f);
        each_entry(self.added6, self.added6_f, 18, max, &mut n, &mut f);
        n
    }

    /// Each `dropped` then `dropped6` endpoint, at most `max` per list.
    pub fn for_each_dropped(&self, max: usize, mut f: impl FnMut(SocketAddr)) -> EntryCounts {
        let mut n = EntryCounts::default();
        let mut g = |a, _| f(a);
        each_entry(self.dropped, None, 6, max, &mut n, &mut g);
        each_entry(self.dropped6, None, 18, max, &mut n, &mut g);
        n
    }
}

/// A BEP 55 ut_holepunch message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holepunch {
    /// 0 rendezvous, 1 connect, 2 error.
    pub msg_type: u8,
    pub addr: SocketAddr,
    pub error: u32,
}

/// Reads a ut_holepunch payload: `msg_type, addr_type, addr, be16 port, be32 err_code`.
pub fn parse_holepunch(payload: &[u8]) -> Result<Holepunch, Reject> {
    let [msg_type, addr_type, rest @ ..] = payload else {
        return Err(Reject::Truncated);
    };
    let addr_len = match addr_type {
        0 => 4,
        1 => 16,
        _ => return Err(Reject::BadAddressType),
    };
    if rest.len() < addr_len + 6 {
        return Err(Reject::Truncated);
    }
    if rest.len() > addr_len + 6 {
        return Err(Reject::TrailingData);
    }
    let (ip, tail) = rest.split_at(addr_len);
    let ip = ip_of(ip).ok_or(Reject::Truncated)?;
    let (port, err) = tail.split_at(2);
    let port = u16::from_be_bytes(port.try_into().map_err(|_| Reject::Truncated)?);
    let error = u32::from_be_bytes(err.try_into().map_err(|_| Reject::Truncated)?);
    Ok(Holepunch {
        msg_type: *msg_type,
        addr: SocketAddr::new(ip, port),
        error,
    })
}

/// Whether an `ipv4`/`ipv6` from an extended handshake can be dialled from elsewhere:
/// link-local and Teredo (2001:0::/32) values are real (spec §6.3) but useless as targets.
fn routable(ip: IpAddr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) != 0xfe80 && !(s[0] == 0x2001 && s[1] == 0)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The channel

#[derive(Clone, Debug)]
pub struct PeerWireConfig {
    /// Connections tracked at once (oldest evicted first).
    pub max_connections: usize,
    /// A connection with no traffic for this long is forgotten.
    pub connection_ttl: Duration,
    /// Longest extended message buffered across chunks; longer ones are skipped.
    pub max_message: usize,
    /// Bytes buffered over all connections at most.
    pub max_buffered: usize,
    /// Endpoints read per PEX list.
    pub max_entries: usize,
}

impl Default for PeerWireConfig {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            connection_ttl: Duration::from_secs(30 * 60),
            max_message: 64 * 1024,
            max_buffered: 16 * 1024 * 1024,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// Counters of the peer wire channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerWireStats {
    /// Chunks offered and the bytes they held.
    pub chunks: u64,
    pub bytes: u64,
    /// Valid handshakes, and those advertising BEP 10, DHT (PORT) and the fast extension.
    pub handshakes: u64,
    pub handshakes_extension: u64,
    pub handshakes_dht: u64,
    pub handshakes_fast: u64,
    /// Directions that began like a handshake and then differed.
    pub bad_handshakes: u64,
    /// Directions whose first chunk was neither a handshake nor a plausible message (MSE/PE
    /// ciphertext, another protocol, or a start mid-message), and bad handshakes.
    pub opaque_streams: u64,
    /// Bytes of directions never read again (bad handshakes, Azureus messaging).
    pub opaque_bytes: u64,
    /// Connections where both handshakes asked for Azureus messaging (not read).
    pub azureus_messaging: u64,
    /// Message headers read in sync (keep-alives included).
    pub messages: u64,
    /// In-sync messages with an id outside BEP 3/4/6/10/52 (skipped by length).
    pub unknown_ids: u64,
    /// In-sync headers that broke the §6.2 rules: sync lost there.
    pub invalid_frames: u64,
    /// Chunks announcing lost bytes.
    pub gaps: u64,
    /// Times framing resumed at a chunk start after loss (or mid-session).
    pub resyncs: u64,
    /// Chunks (and their bytes) passed over while waiting for a plausible start.
    pub unsynced_chunks: u64,
    pub unsynced_bytes: u64,
    /// Message bytes skipped by counting (pieces, bitfields, unread extensions...).
    pub skipped_bytes: u64,
    /// Extended messages we would read, skipped for being over `max_message`, or for the
    /// global `max_buffered` budget.
    pub oversized: u64,
    pub over_budget: u64,
    pub port_messages: u64,
    pub ext_handshakes: ChannelCounts,
    /// ut_pex messages by the receiver's id or, for `pex_fallback` of them, by the id-1
    /// assumption.
    pub pex: ChannelCounts,
    pub pex_fallback: u64,
    pub holepunch: ChannelCounts,
    pub holepunch_connects: u64,
    /// Extended messages of other extensions (or id-1 messages that were not PEX).
    pub unknown_extension: u64,
    /// PEX `added`/`added6` entries.
    pub entries: EntryCounts,
    /// PEX entries naming the sender itself.
    pub sender_listed: u64,
    /// PEX `dropped`/`dropped6` entries.
    pub dropped: EntryCounts,
    /// Predictions on [`Channel::Pex`] and [`Channel::PeerWire`], and retractions.
    pub predicted_pex: u64,
    pub predicted_peer_wire: u64,
    pub retracted: u64,
    /// Bytes reserved now for extended messages split across chunks.
    pub buffered_bytes: u64,
    pub connections: TableStats,
}

/// What the sender of one direction told the other side about itself.
#[derive(Clone, Copy, Debug, Default)]
struct Announced {
    reserved: Option<[u8; 8]>,
    /// An extended handshake was read: `ut_pex`/`ut_holepunch` are then authoritative.
    ext_seen: bool,
    ut_pex: Option<u8>,
    ut_holepunch: Option<u8>,
    p: Option<u16>,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    /// The other side's address as this side reported it.
    yourip: Option<IpAddr>,
}

impl Announced {
    /// BEP 10: later handshakes add to (or override) earlier ones.
    fn merge(&mut self, hs: &ExtHandshake<'_>) {
        self.ext_seen = true;
        self.ut_pex = hs.ut_pex.or(self.ut_pex);
        self.ut_holepunch = hs.ut_holepunch.or(self.ut_holepunch);
        self.p = hs.p.or(self.p);
        self.ipv4 = hs.ipv4.or(self.ipv4);
        self.ipv6 = hs.ipv6.or(self.ipv6);
        self.yourip = hs.yourip.or(self.yourip);
    }

    /// Which extended ids sent *to* this side are worth buffering.
    fn wants(&self, ext: u8) -> bool {
        if ext == 0 {
            return true;
        }
        if !self.ext_seen {
            return ext == FALLBACK_PEX_ID;
        }
        Some(ext) == self.ut_pex || Some(ext) == self.ut_holepunch
    }

    fn azureus(&self) -> bool {
        self.reserved.is_some_and(|r| r[0] & 0x80 != 0)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Nothing read yet.
    #[default]
    Fresh,
    Handshake,
    Frames,
    /// Out of sync: waiting for a plausible chunk start.
    Lost,
    /// Not BitTorrent framing as far as we can read: ignored.
    Opaque,
}

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
struct Body {
    ext: u8,
    want: usize,
    buf: Vec<u8>,
    _hold: Reservation,
}

/// One direction of a connection.
#[derive(Debug, Default)]
struct Stream {
    phase: Phase,
    hs: Vec<u8>,
    /// Header bytes so far: length, id, and the extension id or PORT's port.
    hdr: [u8; 7],
    hdr_len: u8,
    /// Bytes of the current message still to pass over.
    skip: u32,
    body: Option<Body>,
    /// `body` was handed out: drop it before reading on.
    delivered: bool,
}

/// A complete message worth reading.
enum Step<'a> {
    Port(u16),
    Extended { ext: u8, body: &'a [u8] },
}

enum Advance<'a> {
    Wait,
    Port(u16),
    /// The whole message lay in the chunk.
    Direct {
        ext: u8,
        body: &'a [u8],
    },
    /// `Stream::body` is complete.
    Buffered,
}

struct Limits<'c> {
    max_message: usize,
    max_buffered: usize,
    pool: &'c Arc<AtomicUsize>,
}

impl Stream {
    /// Drops any partial message: bytes were lost.
    fn lose(&mut self) {
        self.body = None;
        self.delivered = false;
        self.skip = 0;
        self.hdr_len = 0;
        self.hs = Vec::new();
        if matches!(self.phase, Phase::Handshake | Phase::Frames) {
            self.phase = Phase::Lost;
        }
    }

    fn make_opaque(&mut self) {
        self.lose();
        self.phase = Phase::Opaque;
    }

    /// Reads on to the next message worth handing out, or the end of `data`.
    fn next<'s, 'a: 's>(
        &'s mut self,
        data: &mut &'a [u8],
        receiver: &Announced,
        limits: &Limits<'_>,
        stats: &mut PeerWireStats,
    ) -> Option<Step<'s>> {
        match self.advance(data, receiver, limits, stats) {
            Advance::Wait => None,
            Advance::Port(p) => Some(Step::Port(p)),
            Advance::Direct { ext, body } => Some(Step::Extended { ext, body }),
            Advance::Buffered => self.body.as_ref().map(|b| Step::Extended {
                ext: b.ext,
                body: &b.buf,
            }),
        }
    }

    fn advance<'a>(
        &mut self,
        data: &mut &'a [u8],
        receiver: &Announced,
        limits: &Limits<'_>,
        stats: &mut PeerWireStats,
    ) -> Advance<'a> {
        if self.delivered {
            self.body = None;
            self.delivered = false;
        }
        while self.phase == Phase::Frames {
            if self.skip > 0 {
                let n = (self.skip as usize).min(data.len());
                self.skip -= n as u32;
                stats.skipped_bytes += n as u64;
                *data = data.get(n..).unwrap_or_default();
                if self.skip > 0 {
                    return Advance::Wait;
                }
                continue;
            }
            if let Some(body) = &mut self.body {
                let n = (body.want - body.buf.len()).min(data.len());
                let (head, rest) = data.split_at(n);
                body.buf.extend_from_slice(head);
                *data = rest;
                if body.buf.len() < body.want {
                    return Advance::Wait;
                }
                self.delivered = true;
                return Advance::Buffered;
            }
            // Header: length, then id, then (extended) the extension id or (PORT) the port.
            if !self.fill_header(data, 4) {
                return Advance::Wait;
            }
            let len = u32::from_be_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]]);
            if len == 0 {
                stats.messages += 1;
                self.hdr_len = 0;
                continue;
            }
            if !self.fill_header(data, 5) {
                return Advance::Wait;
            }
            let id = self.hdr[4];
            if check_header(len, id, Check::InSync).is_err() {
                stats.invalid_frames += 1;
                stats.unsynced_bytes += data.len() as u64;
                *data = &[];
                self.lose();
                return Advance::Wait;
            }
            let need = match id {
                MSG_EXTENDED => 6,
                MSG_PORT => 7,
                _ => 5,
            };
            if !self.fill_header(data, need) {
                return Advance::Wait;
            }
            stats.messages += 1;
            self.hdr_len = 0;
            if !known_id(id) {
                stats.unknown_ids += 1;
            }
            match id {
                MSG_PORT => return Advance::Port(u16::from_be_bytes([self.hdr[5], self.hdr[6]])),
                MSG_EXTENDED => {
                    let ext = self.hdr[5];
                    let want = len as usize - 2;
                    if !receiver.wants(ext) {
                        stats.unknown_extension += 1;
                    } else if want > limits.max_message {
                        stats.oversized += 1;
                    } else if let Some((body, rest)) = data.split_at_checked(want) {
                        *data = rest;
                        return Advance::Direct { ext, body };
                    } else if limits.pool.load(Relaxed) + want > limits.max_buffered {
                        stats.over_budget += 1;
                    } else {
                        limits.pool.fetch_add(want, Relaxed);
                        let mut buf = Vec::with_capacity(want);
                        buf.extend_from_slice(data);
                        *data = &[];
                        self.body = Some(Body {
                            ext,
                            want,
                            buf,
                            _hold: Reservation {
                                pool: Arc::clone(limits.pool),
                                n: want,
                            },
                        });
                        return Advance::Wait;
                    }
                    self.skip = len - 2;
                }
                _ => self.skip = len - 1,
            }
        }
        Advance::Wait
    }

    /// Moves header bytes from `data` until `n` are held; false if `data` ran out first.
    fn fill_header(&mut self, data: &mut &[u8], n: usize) -> bool {
        while usize::from(self.hdr_len) < n {
            let Some((&b, rest)) = data.split_first() else {
                return false;
            };
            if let Some(slot) = self.hdr.get_mut(usize::from(self.hdr_len)) {
                *slot = b;
            }
            self.hdr_len += 1;
            *data = rest;
        }
        true
    }
}

/// One TCP connection: its two directions and what each sender announced; index 0 is the
/// client's bytes ([`Dir::ToServer`]).
#[derive(Debug, Default)]
struct Conn {
    streams: [Stream; 2],
    peers: [Announced; 2],
    /// When the table entry's TTL last restarted.
    touched: u64,
}

fn index(dir: Dir) -> usize {
    match dir {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

/// Reads the peer wire of every tracked TCP connection; see the module docs.
#[derive(Debug)]
pub struct PeerWire {
    config: PeerWireConfig,
    conns: Bounded<ConnKey, Conn>,
    buffered: Arc<AtomicUsize>,
    stats: PeerWireStats,
}

impl PeerWire {
    pub fn new(config: PeerWireConfig) -> Self {
        Self {
            conns: Bounded::new(config.max_connections, config.connection_ttl),
            config,
            buffered: Arc::new(AtomicUsize::new(0)),
            stats: PeerWireStats::default(),
        }
    }

    pub fn stats(&self) -> PeerWireStats {
        let mut s = self.stats.clone();
        s.connections = self.conns.stats();
        s.buffered_bytes = self.buffered.load(Relaxed) as u64;
        s
    }

    /// Forgets connections idle for longer than the TTL (also done lazily).
    pub fn expire(&mut self, now: Timestamp) {
        self.conns.expire(now);
    }

    /// The connection ended (FIN/RST): its state and buffers are released.
    pub fn on_close(&mut self, conn: ConnKey, ts: Timestamp) {
        self.conns.take(&conn, ts);
    }

    /// Reads one chunk of one direction. Predictions for the chunk's receiver are appended to
    /// `out`, PEX `dropped` entries to `retracted`.
    pub fn on_chunk(
        &mut self,
        chunk: &StreamChunk<'_>,
        out: &mut Vec<PredictedPeer>,
        retracted: &mut Vec<RetractedPeer>,
    ) {
        let Self {
            config,
            conns,
            buffered,
            stats,
        } = self;
        stats.chunks += 1;
        stats.bytes += chunk.data.len() as u64;
        if chunk.data.is_empty() && !chunk.gap {
            return;
        }
        let Some(conn) = lookup(conns, chunk.conn, chunk.ts, config.connection_ttl) else {
            return;
        };
        let i = index(chunk.dir);
        let (sender, receiver) = chunk.conn.endpoints(chunk.dir);
        let Conn { streams, peers, .. } = conn;
        let [s0, s1] = streams;
        let (stream, other) = if i == 0 { (s0, s1) } else { (s1, s0) };
        let mut data = chunk.data;
        if chunk.gap {
            stats.gaps += 1;
            stream.lose();
        }
        if data.is_empty() {
            return;
        }
        match stream.phase {
            Phase::Opaque => {
                stats.opaque_bytes += data.len() as u64;
                return;
            }
            Phase::Fresh => {
                if starts_like_handshake(data) {
                    stream.phase = Phase::Handshake;
                } else if plausible_start(data) {
                    // Picked up mid-session.
                    stream.phase = Phase::Frames;
                    stats.resyncs += 1;
                } else {
                    stream.phase = Phase::Lost;
                    stats.opaque_streams += 1;
                    stats.unsynced_chunks += 1;
                    stats.unsynced_bytes += data.len() as u64;
                    return;
                }
            }
            Phase::Lost => {
                if plausible_start(data) {
                    stream.phase = Phase::Frames;
                    stats.resyncs += 1;
                } else {
                    stats.unsynced_chunks += 1;
                    stats.unsynced_bytes += data.len() as u64;
                    return;
                }
            }
            Phase::Handshake | Phase::Frames => {}
        }
        if stream.phase == Phase::Handshake {
            let take = (HANDSHAKE_LEN - stream.hs.len()).min(data.len());
            let (head, rest) = data.split_at(take);
            stream.hs.extend_from_slice(head);
            data = rest;
            if !starts_like_handshake(&stream.hs) {
                stats.bad_handshakes += 1;
                stats.opaque_streams += 1;
                stats.opaque_bytes += data.len() as u64;
                stream.make_opaque();
                return;
            }
            if stream.hs.len() < HANDSHAKE_LEN {
                return;
            }
            let Ok(hs) = parse_handshake(&stream.hs) else {
                stream.make_opaque();
                return;
            };
            stats.handshakes += 1;
            stats.handshakes_extension += u64::from(hs.extension_protocol());
            stats.handshakes_dht += u64::from(hs.dht());
            stats.handshakes_fast += u64::from(hs.fast());
            peers[i].reserved = Some(hs.reserved);
            stream.hs = Vec::new();
            if peers[0].azureus() && peers[1].azureus() {
                // AMP framing from here on (spec §7.3): not read.
                stats.azureus_messaging += 1;
                stream.make_opaque();
                other.make_opaque();
                return;
            }
            stream.phase = Phase::Frames;
        }
        let limits = Limits {
            max_message: config.max_message,
            max_buffered: config.max_buffered,
            pool: buffered,
        };
        let recv_announced = peers[1 - i];
        let mut ctx = Ctx {
            ts: chunk.ts,
            sender,
            receiver,
            sender_is_client: chunk.dir == Dir::ToServer,
            max_entries: config.max_entries,
            out,
            retracted,
        };
        while let Some(step) = stream.next(&mut data, &recv_announced, &limits, stats) {
            match step {
                Step::Port(port) => ctx.on_port(port, stats),
                Step::Extended { ext, body } => ctx.on_extended(peers, i, ext, body, stats),
            }
        }
    }
}

/// The live connection `key`, created if new; its TTL restarts when a quarter of it has
/// passed, so only idle connections expire.
fn lookup(
    conns: &mut Bounded<ConnKey, Conn>,
    key: ConnKey,
    now: Timestamp,
    ttl: Duration,
) -> Option<&mut Conn> {
    let refresh = crate::detect::ns(ttl) / 4;
    let stale = match conns.get_mut(&key, now) {
        Some(c) => now.0.saturating_sub(c.touched) > refresh,
        None => {
            let conn = Conn {
                touched: now.0,
                ..Default::default()
            };
            conns.insert(key, conn, now);
            false
        }
    };
    if stale {
        if let Some(mut c) = conns.take(&key, now) {
            c.touched = now.0;
            conns.insert(key, c, now);
        }
    }
    conns.get_mut(&key, now)
}

/// What one message is read against: who sent it to whom, and where predictions go.
struct Ctx<'o> {
    ts: Timestamp,
    sender: SocketAddr,
    receiver: SocketAddr,
    sender_is_client: bool,
    max_entries: usize,
    out: &'o mut Vec<PredictedPeer>,
    retracted: &'o mut Vec<RetractedPeer>,
}

impl Ctx<'_> {
    fn predict(
        &mut self,
        peer: SocketAddr,
        transport: PeerTransport,
        channel: Channel,
        stats: &mut PeerWireStats,
    ) {
        match channel {
            Channel::Pex => stats.predicted_pex += 1,
            _ => stats.predicted_peer_wire += 1,
        }
        self.out.push(PredictedPeer {
            ts: self.ts,
            host: self.receiver.ip(),
            peer,
            transport,
            channel,
        });
    }

    /// BEP 5: the sender's DHT node, contacted over UDP.
    fn on_port(&mut self, port: u16, stats: &mut PeerWireStats) {
        stats.port_messages += 1;
        let node = SocketAddr::new(self.sender.ip(), port);
        if unfit(node, self.receiver.ip(), None).is_none() {
            self.predict(node, PeerTransport::Udp, Channel::PeerWire, stats);
        }
    }

    fn on_extended(
        &mut self,
        peers: &mut [Announced; 2],
        i: usize,
        ext: u8,
        body: &[u8],
        stats: &mut PeerWireStats,
    ) {
        let recv = peers[1 - i];
        if ext == 0 {
            self.on_ext_handshake(&mut peers[i], body, stats);
        } else if !recv.ext_seen {
            // Mid-session: id 1 is PEX only if it reads as PEX.
            match parse_pex(body) {
                Ok(pex) if ext == FALLBACK_PEX_ID => {
                    stats.pex.seen += 1;
                    stats.pex.parsed += 1;
                    stats.pex_fallback += 1;
                    self.on_pex(&pex, peers, i, stats);
                }
                _ => stats.unknown_extension += 1,
            }
        } else if Some(ext) == recv.ut_pex {
            stats.pex.seen += 1;
            match parse_pex(body) {
                Ok(pex) => {
                    stats.pex.parsed += 1;
                    self.on_pex(&pex, peers, i, stats);
                }
                Err(r) => stats.pex.reject(r.as_str()),
            }
        } else if Some(ext) == recv.ut_holepunch {
            stats.holepunch.seen += 1;
            match parse_holepunch(body) {
                Ok(h) => {
                    stats.holepunch.parsed += 1;
                    if h.msg_type == HOLEPUNCH_CONNECT {
                        stats.holepunch_connects += 1;
                        let own = peers[i].yourip;
                        if unfit(h.addr, self.receiver.ip(), own).is_none() {
                            self.predict(h.addr, PeerTransport::Udp, Channel::PeerWire, stats);
                        }
                    }
                }
                Err(r) => stats.holepunch.reject(r.as_str()),
            }
        } else {
            // The receiver's ids changed while the message was buffered.
            stats.unknown_extension += 1;
        }
    }

    fn on_ext_handshake(&mut self, me: &mut Announced, body: &[u8], stats: &mut PeerWireStats) {
        stats.ext_handshakes.seen += 1;
        let hs = match parse_ext_handshake(body) {
            Ok(hs) => hs,
            Err(r) => return stats.ext_handshakes.reject(r.as_str()),
        };
        stats.ext_handshakes.parsed += 1;
        me.merge(&hs);
        let Some(p) = hs.p else { return };
        let learner = self.receiver.ip();
        // A responder's `p` is the port the receiver already dialled.
        if self.sender_is_client {
            let peer = SocketAddr::new(self.sender.ip(), p);
            if unfit(peer, learner, me.yourip).is_none() {
                self.predict(peer, PeerTransport::Tcp, Channel::PeerWire, stats);
            }
        }
        let alts = [me.ipv4.map(IpAddr::V4), me.ipv6.map(IpAddr::V6)];
        for ip in alts.into_iter().flatten() {
            if ip == self.sender.ip() || !routable(ip) {
                continue;
            }
            let peer = SocketAddr::new(ip, p);
            if unfit(peer, learner, me.yourip).is_none() {
                self.predict(peer, PeerTransport::Tcp, Channel::PeerWire, stats);
            }
        }
    }

    fn on_pex(
        &mut self,
        pex: &Pex<'_>,
        peers: &[Announced; 2],
        i: usize,
        stats: &mut PeerWireStats,
    ) {
        let learner = self.receiver.ip();
        // The learner as the sender saw it, and as it described itself.
        let own = peers[i].yourip;
        let own_alt = [
            peers[1 - i].ipv4.map(IpAddr::V4),
            peers[1 - i].ipv6.map(IpAddr::V6),
        ];
        let sender = self.sender.ip();
        let mut counts = EntryCounts::default();
        let mut keep = Vec::new();
        let decoded = pex.for_each_added(self.max_entries, |peer, _flags| {
            if let Some(why) = unfit(peer, learner, own) {
                counts.count_unfit(why);
            } else if own_alt.contains(&Some(peer.ip())) {
                counts.own_address += 1;
            } else if peer.ip() == sender {
                stats.sender_listed += 1;
            } else {
                keep.push(peer);
            }
        });
        counts.add(&decoded);
        stats.entries.add(&counts);
        for peer in keep {
            for transport in [PeerTransport::Tcp, PeerTransport::Udp] {
                self.predict(peer, transport, Channel::Pex, stats);
            }
        }
        let mut gone = EntryCounts::default();
        let mut drop = Vec::new();
        let decoded =
            pex.for_each_dropped(self.max_entries, |peer| match unfit(peer, learner, own) {
                Some(why) => gone.count_unfit(why),
                None => drop.push(peer),
            });
        gone.add(&decoded);
        stats.dropped.add(&gone);
        for peer in drop {
            stats.retracted += 1;
            self.retracted.push(RetractedPeer {
                ts: self.ts,
                host: learner,
                peer,
                channel: Channel::Pex,
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod capture {
    //! Test-only: the TCP payload of every flow in a capture, in sequence order per direction,
    //! as the stream reassembler would hand it to the channel.
    //!
    //! Rules (documented because tests depend on them):
    //! * client = the sender of a SYN (the receiver of a SYN+ACK); for a flow first seen
    //!   mid-session, the sender of its first payload segment;
    //! * retransmitted bytes are delivered once (by sequence number); segments that arrive
    //!   ahead of a hole wait until the hole is filled, or until the other side acknowledges
    //!   bytes past it (the capture, not the network, lost them), or the capture ends: they
    //!   are then delivered with `gap`;
    //! * a direction whose SYN was not captured starts at its first payload segment, without
    //!   `gap` (as `stream::TcpStreams` does: it cannot know what came before).
    use std::collections::{BTreeMap, HashMap};
    use std::net::{IpAddr, SocketAddr};

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use crate::bt::stream::{ConnKey, Dir, StreamChunk};
    use crate::bt::test_support::shared;
    use crate::capture::pcap::read_frames;
    use crate::event::Timestamp;

    #[derive(Clone, Debug)]
    pub struct Chunk {
        pub ts: Timestamp,
        pub conn: ConnKey,
        pub dir: Dir,
        pub gap: bool,
        pub data: Vec<u8>,
    }

    impl Chunk {
        pub fn chunk(&self) -> StreamChunk<'_> {
            StreamChunk {
                ts: self.ts,
                conn: self.conn,
                dir: self.dir,
                gap: self.gap,
                data: &self.data,
            }
        }

        pub fn sender(&self) -> SocketAddr {
            self.conn.endpoints(self.dir).0
        }
    }

    #[derive(Default)]
    struct Half {
        /// Sequence number of stream offset 0.
        base: Option<u32>,
        next: u64,
        /// Highest offset the other side acknowledged.
        acked: u64,
        held: BTreeMap<u64, (Timestamp, Vec<u8>)>,
    }

    impl Half {
        fn offset(&self, seq: u32) -> Option<u64> {
            let off = seq.wrapping_sub(self.base?);
            (off < 1 << 31).then_some(u64::from(off))
        }
    }

    #[derive(Default)]
    struct Flow {
        client: Option<SocketAddr>,
        /// Indexed by "the sender is the lower endpoint".
        halves: [Half; 2],
    }

    fn side(lo: SocketAddr, sender: SocketAddr) -> usize {
        usize::from(sender != lo)
    }

    struct Reassembler {
        flows: HashMap<(SocketAddr, SocketAddr), Flow>,
        out: Vec<Chunk>,
    }

    impl Reassembler {
        fn emit(
            out: &mut Vec<Chunk>,
            flow_key: (SocketAddr, SocketAddr),
            client: Option<SocketAddr>,
            sender_side: usize,
            h: &mut Half,
            at_end: bool,
        ) {
            let (lo, hi) = flow_key;
            let sender = if sender_side == 0 { lo } else { hi };
            let receiver = if sender_side == 0 { hi } else { lo };
            let client = client.unwrap_or(sender);
            let conn = if client == sender {
                ConnKey {
                    client: sender,
                    server: receiver,
                }
            } else {
                ConnKey {
                    client: receiver,
                    server: sender,
                }
            };
            let dir = if client == sender {
                Dir::ToServer
            } else {
                Dir::ToClient
            };
            while let Some((&off, _)) = h.held.first_key_value() {
                let hole = off > h.next;
                if hole && !at_end && h.acked <= h.next {
                    break;
                }
                let Some((off, (ts, data))) = h.held.pop_first() else {
                    break;
                };
                let end = off + data.len() as u64;
                if end <= h.next {
                    continue;
                }
                let from = h.next.saturating_sub(off) as usize;
                let gap = hole;
                h.next = end;
                out.push(Chunk {
                    ts,
                    conn,
                    dir,
                    gap,
                    data: data[from..].to_vec(),
                });
            }
        }

        #[allow(clippy::too_many_arguments)]
        fn segment(
            &mut self,
            ts: Timestamp,
            src: SocketAddr,
            dst: SocketAddr,
            seq: u32,
            ack: Option<u32>,
            syn: bool,
            payload: &[u8],
        ) {
            let key = (src.min(dst), src.max(dst));
            let flow = self.flows.entry(key).or_default();
            let s = side(key.0, src);
            if syn {
                if ack.is_none() {
                    flow.client = Some(src);
                } else if flow.client.is_none() {
                    flow.client = Some(dst);
                }
                let h = &mut flow.halves[s];
                if h.base.is_none() {
                    h.base = Some(seq.wrapping_add(1));
                }
            }
            if let Some(a) = ack {
                let other = &mut flow.halves[1 - s];
                if let Some(off) = other.offset(a) {
                    other.acked = other.acked.max(off);
                }
            }
            if !payload.is_empty() {
                if flow.client.is_none() {
                    flow.client = Some(src);
                }
                let h = &mut flow.halves[s];
                if h.base.is_none() {
                    h.base = Some(seq);
                }
                if let Some(off) = h.offset(seq) {
                    let slot = h.held.entry(off).or_insert((ts, Vec::new()));
                    if slot.1.len() < payload.len() {
                        slot.1 = payload.to_vec();
                    }
                }
            }
            for i in 0..2 {
                Self::emit(
                    &mut self.out,
                    key,
                    flow.client,
                    i,
                    &mut flow.halves[i],
                    false,
                );
            }
        }
    }

    /// Every TCP flow's payload chunks of a shared capture, in capture order.
    pub fn tcp_chunks(rel: &str) -> Vec<Chunk> {
        let mut r = Reassembler {
            flows: HashMap::new(),
            out: Vec::new(),
        };
        read_frames(&shared(rel), |ts, frame| {
            let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                return;
            };
            let (src, dst): (IpAddr, IpAddr) = match &p.net {
                Some(NetSlice::Ipv4(v4)) => (
                    v4.header().source_addr().into(),
                    v4.header().destination_addr().into(),
                ),
                Some(NetSlice::Ipv6(v6)) => (
                    v6.header().source_addr().into(),
                    v6.header().destination_addr().into(),
                ),
                _ => return,
            };
            let Some(TransportSlice::Tcp(t)) = &p.transport else {
                return;
            };
            r.segment(
                ts,
                SocketAddr::new(src, t.source_port()),
                SocketAddr::new(dst, t.destination_port()),
                t.sequence_number(),
                t.ack().then(|| t.acknowledgment_number()),
                t.syn(),
                t.payload(),
            );
        })
        .unwrap();
        let Reassembler { mut flows, mut out } = r;
        let mut keys: Vec<_> = flows.keys().copied().collect();
        keys.sort();
        for key in keys {
            if let Some(flow) = flows.get_mut(&key) {
                for i in 0..2 {
                    Reassembler::emit(&mut out, key, flow.client, i, &mut flow.halves[i], true);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::capture::{tcp_chunks, Chunk};
    use super::*;
    use crate::bt::test_support::unhex;
    use std::collections::BTreeMap as Map;

    // Spec §6.4 / §7.5 vectors, byte for byte.
    const BTH_R1: &str = "13 426974546f7272656e742070726f746f636f6c 0000000000100005
        dcfcdccfb9e670ccc3dd40c78c161f2bea243126 2d554d313836302d418e124c7011d02f89ddaef0";
    const EXT_R1: &str =
        "000000e7 14 00 64313a65693065343a69707634343a5239615331323a636f6d706c6574655f61676f6933
        65313a6d6431313a75706c6f61645f6f6e6c7969336531313a6c745f646f6e746861766569376531323a75
        745f686f6c6570756e636869346531313a75745f6d65746164617461693265363a75745f70657869316531
        303a75745f636f6d6d656e746936656531333a6d657461646174615f73697a6569313930303965313a7069
        353331333765343a726571716932353565313a7631353acebc546f7272656e7420332e342e35323a797069
        353238383765363a796f75726970343a5237cd0165";
    const EXT_R2: &str =
        "000000cd 14 00 6431323a636f6d706c6574655f61676f693065313a6d6431313a6c745f646f6e746861
        766569376531303a73686172655f6d6f646569386531313a75706c6f61645f6f6e6c7969336531323a7574
        5f686f6c6570756e636869346531313a75745f6d65746164617461693265363a75745f7065786931656531
        333a6d657461646174615f73697a6569313831383565313a7069353634303065343a726571716935303065
        313a7631383a6c6962746f7272656e742f312e312e302e30363a796f75726970343a4f18be0365";
    const PEX_R1: &str =
        "00000094 14 01 64353a616464656436363a4c6d0f74ef29185b63332aaeb915d905e9c4516a63dd679b
        5162771ef37749368b5895ad051dfa483eb44f18be039fffbf21809de86a4f4ef9b5c8d529654e39c06437
        3a61646465642e6631313a0e0a0a0e0a0e0e0c0e060e363a616464656436303a383a6164646564362e6630
        3a373a64726f70706564303a383a64726f7070656436303a65";
    const PEX_R2: &str =
        "000000f8140164353a61646465643138303ad890e46447c941175a06efaa56082d0cf714188da450e502
        1851c4cd8bb244c4a54a1ae1415d76c5c05b42cbd14b4e05dce9c698bf5418b3280b1ae147f6361c35ad47
        1c4b5644ea185f28e36b3618af67631ae1432aa3a61ae118deb9b3ef62424379a31ae155354f881ae1598a
        bc5679d44aecf9dc1ae1d31a3c7f1ae13f6e7d0d1ae14496da79c3594caecc86750a43a236291ae1d1a1c5
        2a1ae14495be3a634a40e5b6421ae1459e779fb272520276182710373a61646465642e6633303a00000000
        0000000000000000000000000000000000000000000000000000373a64726f70706564303a65";
    const PEX_D2_H: &str = "00000014 14 00 64313a6d64363a75745f7065786933656565";
    const PEX_D2_P: &str =
        "0000001e 14 00 64313a6d64363a75745f70657869316565313a706935313431336565";
    const PEX_D2: &str =
        "00000062 14 03 64353a616464656431323ac00002281ae1c6336429c8d5373a61646465642e66323a
        1006363a61646465643631383a20010db80000000000000000000000281ae1383a6164646564362e6631
        3a11373a64726f70706564363ac00002321ae165";
    const HP_D1: &str = "0000000e 14 04 01 00 c0000214 1ae1 00000000";
    const PORT_R: &str = "00000003 09 c8d5";

    /// PEX-D2's host H (the client) and peer P.
    const H: &str = "192.0.2.1:50000";
    const P: &str = "203.0.113.9:51413";

    fn conn(client: &str, server: &str) -> ConnKey {
        ConnKey {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
        }
    }

    fn at(s: u64) -> Timestamp {
        Timestamp(s * 1_000_000_000)
    }

    /// A channel and everything it produced.
    struct Wire {
        pw: PeerWire,
        out: Vec<PredictedPeer>,
        ret: Vec<RetractedPeer>,
    }

    impl Wire {
        fn new() -> Self {
            Self::with(PeerWireConfig::default())
        }

        fn with(config: PeerWireConfig) -> Self {
            Self {
                pw: PeerWire::new(config),
                out: Vec::new(),
                ret: Vec::new(),
            }
        }

        fn feed(&mut self, key: ConnKey, dir: Dir, gap: bool, ts: u64, data: &[u8]) {
            let chunk = StreamChunk {
                ts: at(ts),
                conn: key,
                dir,
                gap,
                data,
            };
            self.pw.on_chunk(&chunk, &mut self.out, &mut self.ret);
        }

        fn targets(&self, channel: Channel, transport: PeerTransport) -> Vec<String> {
            self.out
                .iter()
                .filter(|p| p.channel == channel && p.transport == transport)
                .map(|p| format!("{} {}", p.host, p.peer))
                .collect()
        }
    }

    fn handshake(reserved: [u8; 8]) -> Vec<u8> {
        let mut v = PROTOCOL.to_vec();
        v.extend_from_slice(&reserved);
        v.extend_from_slice(&[0xab; 20]);
        v.extend_from_slice(b"-XX0001-abcdefghijkl");
        v
    }

    const LTEP: [u8; 8] = [0, 0, 0, 0, 0, 0x10, 0, 0x05];

    fn message(id: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32 + 1).to_be_bytes().to_vec();
        v.push(id);
        v.extend_from_slice(payload);
        v
    }

    fn extended(ext: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![ext];
        p.extend_from_slice(body);
        message(MSG_EXTENDED, &p)
    }

    fn piece(len: usize) -> Vec<u8> {
        let mut p = vec![0, 0, 0, 1, 0, 0, 0x40, 0];
        p.extend((0..len).map(|i| (i * 7 + 3) as u8));
        message(MSG_PIECE, &p)
    }

    /// Deterministic high-entropy bytes (MSE keys and padding look like this).
    fn noise(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    // ---- pure parsers on the spec vectors

    #[test]
    fn spec_bth_r1_handshake() {
        let raw = unhex(BTH_R1);
        assert_eq!(raw.len(), 68);
        let h = parse_handshake(&raw).unwrap();
        assert!(h.extension_protocol() && h.dht() && h.fast());
        assert!(!h.azureus_messaging());
        assert_eq!(&h.peer_id[..8], b"-UM1860-");
        assert_eq!(h.info_hash[0], 0xdc);
        for cut in 0..68 {
            let want = if cut == 0 || starts_like_handshake(&raw[..cut]) {
                Reject::Truncated
            } else {
                Reject::NotHandshake
            };
            assert_eq!(parse_handshake(&raw[..cut]).err(), Some(want));
        }
        let mut bad = raw.clone();
        bad[5] = b'X';
        assert_eq!(parse_handshake(&bad).err(), Some(Reject::NotHandshake));
        assert_eq!(
            parse_handshake(b"GET /announce?info_hash=").err(),
            Some(Reject::NotHandshake)
        );
    }

    fn ext_body(hex: &str) -> Vec<u8> {
        let raw = unhex(hex);
        let Frame::Complete { id, payload } = frame(&raw, Check::InSync) else {
            panic!("not one whole message")
        };
        assert_eq!(id, MSG_EXTENDED);
        assert_eq!(5 + payload.len(), raw.len());
        payload.to_vec()
    }

    #[test]
    fn spec_ext_r1_unsorted_utorrent_handshake() {
        let p = ext_body(EXT_R1);
        assert_eq!(p[0], 0);
        // Unsorted: `e` before `ipv4` before `complete_ago`.
        assert!(p[1..].starts_with(b"d1:ei0e4:ipv4"));
        let hs = parse_ext_handshake(&p[1..]).unwrap();
        assert!(hs.has_m);
        assert_eq!((hs.ut_pex, hs.ut_holepunch), (Some(1), Some(4)));
        assert_eq!(hs.p, Some(53137));
        assert_eq!(hs.yourip, Some("82.55.205.1".parse().unwrap()));
        assert_eq!(hs.ipv4, Some("82.57.97.83".parse().unwrap()));
        assert_eq!(hs.ipv6, None);
        // U+03BC (Greek mu, `ce bc`), not the micro sign of BEP 10's example.
        assert_eq!(hs.v, Some("\u{3bc}Torrent 3.4.5".as_bytes()));
        assert_eq!(hs.bad_fields, 0);
    }

    #[test]
    fn spec_ext_r2_libtorrent_handshake() {
        let p = ext_body(EXT_R2);
        let hs = parse_ext_handshake(&p[1..]).unwrap();
        assert_eq!((hs.ut_pex, hs.ut_holepunch), (Some(1), Some(4)));
        assert_eq!(hs.p, Some(56400));
        assert_eq!(hs.yourip, Some("79.24.190.3".parse().unwrap()));
        assert_eq!(hs.v, Some(&b"libtorrent/1.1.0.0"[..]));
    }

    fn added(pex: &Pex<'_>) -> (Vec<(String, Option<u8>)>, EntryCounts) {
        let mut v = Vec::new();
        let n = pex.for_each_added(MAX_ENTRIES, |a, f| v.push((a.to_string(), f)));
        (v, n)
    }

    #[test]
    fn spec_pex_r1_entries_and_flags() {
        let p = ext_body(PEX_R1);
        assert_eq!(p[0], 1);
        let pex = parse_pex(&p[1..]).unwrap();
        let (v, n) = added(&pex);
        let want = [
            ("76.109.15.116:61225", 0x0e),
            ("24.91.99.51:10926", 0x0a),
            ("185.21.217.5:59844", 0x0a),
            ("81.106.99.221:26523", 0x0e),
            ("81.98.119.30:62327", 0x0a),
            ("73.54.139.88:38317", 0x0e),
            ("5.29.250.72:16052", 0x0e),
            ("79.24.190.3:40959", 0x0c),
            ("191.33.128.157:59498", 0x0e),
            ("79.78.249.181:51413", 0x06),
            ("41.101.78.57:49252", 0x0e),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(a, f)| (a.to_string(), Some(*f)))
            .collect();
        assert_eq!(v, want);
        assert_eq!((n.decoded, n.malformed, n.capped), (11, 0, 0));
        assert_eq!(pex.added6, b"");
        assert_eq!(pex.added6_f, Some(&b""[..]));
        assert_eq!(pex.for_each_dropped(MAX_ENTRIES, |_| {}).decoded, 0);
    }

    #[test]
    fn spec_pex_r2_thirty_peers_without_added6() {
        let p = ext_body(PEX_R2);
        assert_eq!(p[0], 1);
        let pex = parse_pex(&p[1..]).unwrap();
        let (v, n) = added(&pex);
        assert_eq!(n.decoded, 30);
        let addrs: Vec<&str> = v.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            addrs[..3],
            [
                "216.144.228.100:18377",
                "65.23.90.6:61354",
                "86.8.45.12:63252"
            ]
        );
        assert_eq!(addrs[29], "82.2.118.24:10000");
        assert_eq!(addrs.iter().filter(|a| a.ends_with(":6881")).count(), 12);
        assert!(v.iter().all(|(_, f)| *f == Some(0)));
        assert_eq!((pex.added6, pex.added6_f), (&b""[..], None));
    }

    #[test]
    fn spec_pex_d2_entries() {
        let p = ext_body(PEX_D2);
        assert_eq!(p[0], 3);
        let pex = parse_pex(&p[1..]).unwrap();
        let (v, _) = added(&pex);
        assert_eq!(
            v,
            [
                ("192.0.2.40:6881".to_string(), Some(0x10)),
                ("198.51.100.41:51413".to_string(), Some(0x06)),
                ("[2001:db8::28]:6881".to_string(), Some(0x11)),
            ]
        );
        let mut d = Vec::new();
        pex.for_each_dropped(MAX_ENTRIES, |a| d.push(a.to_string()));
        assert_eq!(d, ["192.0.2.50:6881"]);
        // The two handshakes.
        let (hb, pb) = (ext_body(PEX_D2_H), ext_body(PEX_D2_P));
        let h = parse_ext_handshake(&hb[1..]).unwrap();
        assert_eq!((h.ut_pex, h.p), (Some(3), None));
        let p = parse_ext_handshake(&pb[1..]).unwrap();
        assert_eq!((p.ut_pex, p.p), (Some(1), Some(51413)));
    }

    #[test]
    fn spec_hp_d1_connect() {
        let p = ext_body(HP_D1);
        assert_eq!(p[0], 4);
        let h = parse_holepunch(&p[1..]).unwrap();
        assert_eq!(h.msg_type, HOLEPUNCH_CONNECT);
        assert_eq!(h.addr, "192.0.2.20:6881".parse().unwrap());
        assert_eq!(h.error, 0);
        let v6 = unhex("01 01 20010db8000000000000000000000001 1ae1 00000000");
        assert_eq!(
            parse_holepunch(&v6).unwrap().addr,
            "[2001:db8::1]:6881".parse().unwrap()
        );
        assert_eq!(
            parse_holepunch(&unhex("01 02 c0000214 1ae1 00000000")),
            Err(Reject::BadAddressType)
        );
        for cut in 0..p.len() - 1 {
            assert_eq!(parse_holepunch(&p[1..1 + cut]), Err(Reject::Truncated));
        }
        let mut long = p[1..].to_vec();
        long.push(0);
        assert_eq!(parse_holepunch(&long), Err(Reject::TrailingData));
    }

    #[test]
    fn port_message_frame() {
        let raw = unhex(PORT_R);
        assert_eq!(
            frame(&raw, Check::Resync),
            Frame::Complete {
                id: MSG_PORT,
                payload: &[0xc8, 0xd5]
            }
        );
        assert!(plausible_start(&raw));
        // PORT is always 3 bytes long.
        assert_eq!(
            frame(&unhex("00000004 09 c8d5 00"), Check::InSync),
            Frame::Invalid(Reject::BadLength)
        );
    }

    #[test]
    fn framing_rules() {
        assert_eq!(frame(&[0, 0, 0, 0], Check::InSync), Frame::KeepAlive);
        assert_eq!(frame(&[0, 0], Check::InSync), Frame::NeedMore { needed: 4 });
        assert_eq!(
            frame(&[0, 0, 0, 5], Check::InSync),
            Frame::NeedMore { needed: 5 }
        );
        assert_eq!(
            frame(&[0, 0, 0, 5, 4, 0, 0], Check::InSync),
            Frame::NeedMore { needed: 9 }
        );
        let cases: &[(u32, u8, Check, Result<(), Reject>)] = &[
            (1, 0, Check::Resync, Ok(())),
            (2, 1, Check::InSync, Err(Reject::BadLength)),
            (5, 4, Check::Resync, Ok(())),
            (13, 6, Check::Resync, Ok(())),
            (12, 6, Check::InSync, Err(Reject::BadLength)),
            (0x4009, MSG_PIECE, Check::Resync, Ok(())),
            (0x400a, MSG_PIECE, Check::Resync, Err(Reject::BadLength)),
            (0x8009, MSG_PIECE, Check::InSync, Ok(())),
            (
                MAX_FRAME + 1,
                MSG_PIECE,
                Check::InSync,
                Err(Reject::BadLength),
            ),
            (8, MSG_PIECE, Check::InSync, Err(Reject::BadLength)),
            (1, MSG_EXTENDED, Check::InSync, Err(Reject::BadLength)),
            (0x20000, 5, Check::Resync, Ok(())),
            (0x20001, 5, Check::Resync, Err(Reject::BadLength)),
            (49, 0x15, Check::Resync, Ok(())),
            (100, 0x42, Check::Resync, Err(Reject::UnknownId)),
            (100, 0x42, Check::InSync, Ok(())),
            (u32::MAX, 0x42, Check::InSync, Err(Reject::BadLength)),
        ];
        for &(len, id, check, want) in cases {
            assert_eq!(check_header(len, id, check), want, "len {len} id {id}");
        }
        // Every proper prefix of a message needs more.
        let m = unhex(PEX_R1);
        for cut in 0..m.len() {
            assert!(matches!(
                frame(&m[..cut], Check::InSync),
                Frame::NeedMore { .. }
            ));
        }
        // Resync wants a real message and a plausible chain around it.
        assert!(!plausible_start(&[0, 0, 0, 0, 0, 0, 0, 9, 1]));
        assert!(
            plausible_start(&[0, 0, 0, 0, 0, 0, 0, 1, 2]),
            "keep-alive, interested"
        );
        assert!(!plausible_start(&[0, 0, 0, 1]));
        assert!(!plausible_start(&[0; 1400]), "zero-filled piece data");
        let mut ka = vec![0; 8];
        ka.extend(unhex(PEX_D2));
        assert!(plausible_start(&ka));
        assert!(
            plausible_start(&ka[..20]),
            "whole PEX header after keep-alives"
        );
        assert!(!plausible_start(&ka[..12]), "header cut short");
        let mut chain = unhex(PORT_R);
        chain.extend_from_slice(&[0, 0, 0, 0]);
        chain.extend_from_slice(&message(2, &[]));
        assert!(plausible_start(&chain));
        chain.extend_from_slice(&[0, 0, 0, 9, 1]);
        assert!(!plausible_start(&chain), "unchoke of length 9");
        assert!(plausible_start(&piece(100)[..50]));
        assert!(!plausible_start(&noise(1400, 7)));
    }

    #[test]
    fn every_truncation_of_a_payload_is_rejected() {
        for hex in [EXT_R1, EXT_R2, PEX_D2_H, PEX_D2_P] {
            let p = ext_body(hex);
            for cut in 1..p.len() {
                assert!(parse_ext_handshake(&p[1..cut]).is_err(), "{hex} at {cut}");
            }
        }
        for hex in [PEX_R1, PEX_R2, PEX_D2] {
            let p = ext_body(hex);
            for cut in 1..p.len() {
                assert!(parse_pex(&p[1..cut]).is_err(), "{hex} at {cut}");
            }
        }
    }

    #[test]
    fn malformed_payloads() {
        let cases: &[(&[u8], Reject)] = &[
            (b"le", Reject::NotDict),
            (b"de", Reject::NoPexKeys),
            (b"d8:msg_typei0e5:piecei0ee", Reject::NoPexKeys),
            (b"d5:addedi1ee", Reject::WrongType),
            (b"d5:added0:5:added0:e", Reject::DuplicateKey),
            (b"d5:added0:eXX", Reject::TrailingData),
            (b"d5:added99:abce", Reject::LengthBeyondEnd),
            (b"d5:added0:", Reject::Truncated),
            (b"d5:addedi01ee", Reject::Syntax),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_pex(raw).err(), Some(*want), "{:?}", raw);
        }
        let mut deep = b"d1:m".to_vec();
        deep.extend(std::iter::repeat_n(b'l', 1000));
        deep.extend(std::iter::repeat_n(b'e', 1001));
        assert_eq!(parse_ext_handshake(&deep).err(), Some(Reject::TooDeep));
        // Wrong field types are ignored and counted, as clients ignore them.
        let hs = parse_ext_handshake(
            b"d1:md6:ut_pexi300e12:ut_holepunch1:xe1:pi0e6:yourip3:abc4:ipv46:abcdefe",
        )
        .unwrap();
        assert_eq!((hs.ut_pex, hs.ut_holepunch, hs.p), (None, None, None));
        assert_eq!((hs.yourip, hs.ipv4), (None, None));
        assert_eq!(hs.bad_fields, 5);
        // `added` without flags (Transmission-style), a partial tail, flags of the wrong size.
        let pex = parse_pex(
            b"d5:added13:\xc0\x00\x02\x01\x1a\xe1\xc0\x00\x02\x02\x1a\xe1X7:added.f1:\x10e",
        )
        .unwrap();
        let (v, n) = added(&pex);
        assert_eq!(
            v,
            [
                ("192.0.2.1:6881".to_string(), None),
                ("192.0.2.2:6881".to_string(), None)
            ]
        );
        assert_eq!((n.decoded, n.malformed), (2, 1));
    }

    #[test]
    fn entries_are_capped_per_list() {
        let mut raw = b"d5:added3000:".to_vec();
        for i in 0..500u32 {
            raw.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0x1a, 0xe1]);
        }
        raw.extend_from_slice(b"7:dropped3000:");
        raw.extend_from_within(13..3013);
        raw.push(b'e');
        let pex = parse_pex(&raw).unwrap();
        let n = pex.for_each_added(MAX_ENTRIES, |_, _| {});
        assert_eq!((n.decoded, n.capped), (200, 300));
        let n = pex.for_each_dropped(MAX_ENTRIES, |_| {});
        assert_eq!((n.decoded, n.capped), (200, 300));
        // Through the channel (mid-session, id-1 fallback): 200 × (TCP, uTP), 200 retractions.
        let mut w = Wire::new();
        let msg = extended(1, &raw);
        w.feed(conn(P, H), Dir::ToServer, true, 0, &msg);
        assert_eq!(w.out.len(), 400);
        assert_eq!(w.ret.len(), 200);
        let s = w.pw.stats();
        assert_eq!((s.entries.capped, s.dropped.capped), (300, 300));
        assert_eq!(s.pex_fallback, 1);
    }

    // ---- the channel

    /// PEX-D2 as a TCP connection: H (client) and P (server) exchange handshakes, then P sends
    /// a bitfield, PORT, a piece, the PEX message (id 3), a holepunch connect and a keep-alive.
    fn d2_conversation() -> (Vec<u8>, Vec<u8>) {
        let mut h = handshake(LTEP);
        // H also announces ut_holepunch 4 and its listen port.
        h.extend(extended(
            0,
            b"d1:md6:ut_pexi3e12:ut_holepunchi4ee1:pi6881ee",
        ));
        h.extend(message(2, &[]));
        let mut p = handshake(LTEP);
        p.extend(unhex(PEX_D2_P));
        p.extend(message(5, &[0xff; 9]));
        p.extend(unhex(PORT_R));
        p.extend(piece(3000));
        p.extend(unhex(PEX_D2));
        p.extend(unhex(HP_D1));
        p.extend([0, 0, 0, 0]);
        p.extend(message(4, &[0, 0, 0, 7]));
        (h, p)
    }

    fn d2_expected(w: &Wire) {
        assert_eq!(
            w.targets(Channel::Pex, PeerTransport::Tcp),
            [
                "192.0.2.1 192.0.2.40:6881",
                "192.0.2.1 198.51.100.41:51413",
                "192.0.2.1 [2001:db8::28]:6881"
            ]
        );
        assert_eq!(
            w.targets(Channel::Pex, PeerTransport::Udp),
            w.targets(Channel::Pex, PeerTransport::Tcp)
        );
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Udp),
            ["192.0.2.1 203.0.113.9:51413", "192.0.2.1 192.0.2.20:6881"]
        );
        // H initiated: its `p` is news to P; P's `p` is the port H dialled.
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            ["203.0.113.9 192.0.2.1:6881"]
        );
        let ret: Vec<String> = w
            .ret
            .iter()
            .map(|r| format!("{} {}", r.host, r.peer))
            .collect();
        assert_eq!(ret, ["192.0.2.1 192.0.2.50:6881"]);
        assert!(w.ret.iter().all(|r| r.channel == Channel::Pex));
        let s = w.pw.stats();
        assert_eq!(s.handshakes, 2);
        assert_eq!(
            (s.handshakes_extension, s.handshakes_dht, s.handshakes_fast),
            (2, 2, 2)
        );
        assert_eq!((s.ext_handshakes.seen, s.ext_handshakes.parsed), (2, 2));
        assert_eq!((s.pex.seen, s.pex.parsed, s.pex_fallback), (1, 1, 0));
        assert_eq!((s.holepunch.parsed, s.holepunch_connects), (1, 1));
        assert_eq!(s.port_messages, 1);
        // H: ext handshake, interested. P: ext handshake, bitfield, PORT, piece, PEX,
        // holepunch, keep-alive, have.
        assert_eq!(s.messages, 10);
        assert_eq!(s.skipped_bytes, 9 + 3008 + 4);
        assert_eq!(
            (s.gaps, s.resyncs, s.invalid_frames, s.unknown_extension),
            (0, 0, 0, 0)
        );
        assert_eq!(s.buffered_bytes, 0);
    }

    #[test]
    fn spec_pex_d2_asymmetric_ids() {
        let (h, p) = d2_conversation();
        let key = conn(H, P);
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &h);
        w.feed(key, Dir::ToClient, false, 0, &p);
        d2_expected(&w);
    }

    #[test]
    fn spec_pex_d2_fails_under_the_id_1_assumption() {
        let (_, p) = d2_conversation();
        let key = conn(H, P);
        // H's extended handshake not seen: the fallback takes id 1 only, so id 3 is missed,
        // which is what a decoder assuming id 1 would do.
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &handshake(LTEP));
        w.feed(key, Dir::ToClient, false, 0, &p);
        assert!(w.targets(Channel::Pex, PeerTransport::Tcp).is_empty());
        assert!(w.ret.is_empty());
        assert_eq!(w.pw.stats().pex.seen, 0);
        assert_eq!(
            w.pw.stats().unknown_extension,
            2,
            "PEX (3) and holepunch (4)"
        );
        // Using P's own id (1) for P → H is wrong too: H announced 3.
        let (h, _) = d2_conversation();
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &h);
        let mut p1 = handshake(LTEP);
        p1.extend(unhex(PEX_D2_P));
        let mut msg = unhex(PEX_D2);
        msg[5] = 1;
        p1.extend_from_slice(&msg);
        w.feed(key, Dir::ToClient, false, 0, &p1);
        assert!(w.targets(Channel::Pex, PeerTransport::Tcp).is_empty());
        assert_eq!(w.pw.stats().unknown_extension, 1);
        // ...while H → P PEX uses P's id 1.
        let mut w = Wire::new();
        let mut h = handshake(LTEP);
        h.extend(unhex(PEX_D2_H));
        w.feed(key, Dir::ToServer, false, 0, &h);
        let mut p2 = handshake(LTEP);
        p2.extend(unhex(PEX_D2_P));
        w.feed(key, Dir::ToClient, false, 0, &p2);
        w.feed(key, Dir::ToServer, false, 1, &msg);
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        assert!(w.out.iter().all(|p| p.host.to_string() == "203.0.113.9"));
    }

    #[test]
    fn split_at_every_byte_gives_the_same_result() {
        let (h, p) = d2_conversation();
        let key = conn(H, P);
        let comparable = |w: &Wire| {
            let mut s = w.pw.stats();
            s.chunks = 0;
            (w.out.clone(), w.ret.clone(), s)
        };
        let mut base = Wire::new();
        base.feed(key, Dir::ToServer, false, 0, &h);
        base.feed(key, Dir::ToClient, false, 0, &p);
        d2_expected(&base);
        let want = comparable(&base);
        for cut in 0..=p.len() {
            let mut w = Wire::new();
            w.feed(key, Dir::ToServer, false, 0, &h);
            w.feed(key, Dir::ToClient, false, 0, &p[..cut]);
            w.feed(key, Dir::ToClient, false, 0, &p[cut..]);
            assert_eq!(comparable(&w), want, "cut at {cut}");
        }
        for cut in 0..=h.len() {
            let mut w = Wire::new();
            w.feed(key, Dir::ToServer, false, 0, &h[..cut]);
            w.feed(key, Dir::ToServer, false, 0, &h[cut..]);
            w.feed(key, Dir::ToClient, false, 0, &p);
            assert_eq!(comparable(&w), want, "cut at {cut}");
        }
        // One byte per chunk.
        let mut w = Wire::new();
        for b in h.chunks(1) {
            w.feed(key, Dir::ToServer, false, 0, b);
        }
        for b in p.chunks(1) {
            w.feed(key, Dir::ToClient, false, 0, b);
        }
        assert_eq!(comparable(&w), want);
    }

    /// Handshakes and extended handshakes of PEX-D2, then `gap`-free framing from there.
    fn d2_synced() -> (Wire, ConnKey) {
        let key = conn(H, P);
        let mut w = Wire::new();
        let mut h = handshake(LTEP);
        h.extend(unhex(PEX_D2_H));
        w.feed(key, Dir::ToServer, false, 0, &h);
        let mut p = handshake(LTEP);
        p.extend(unhex(PEX_D2_P));
        w.feed(key, Dir::ToClient, false, 0, &p);
        (w, key)
    }

    #[test]
    fn a_gap_inside_a_piece_resyncs_at_the_next_plausible_boundary() {
        let (mut w, key) = d2_synced();
        let big = piece(16_384);
        // The piece header and its first bytes, then bytes lost: the next chunk starts inside
        // the piece and the one after too; the chunk after that starts with the PEX message.
        w.feed(key, Dir::ToClient, false, 1, &big[..1000]);
        w.feed(key, Dir::ToClient, true, 2, &big[5000..6400]);
        w.feed(key, Dir::ToClient, false, 3, &big[6400..7800]);
        assert!(w.out.is_empty());
        let s = w.pw.stats();
        assert_eq!((s.gaps, s.resyncs, s.unsynced_chunks), (1, 0, 2));
        let mut tail = unhex(PEX_D2);
        tail.extend(unhex(PORT_R));
        w.feed(key, Dir::ToClient, false, 4, &tail);
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        assert_eq!(w.targets(Channel::PeerWire, PeerTransport::Udp).len(), 1);
        assert_eq!(w.ret.len(), 1);
        let s = w.pw.stats();
        assert_eq!((s.resyncs, s.unsynced_bytes), (1, 2800));
        // A gap chunk that itself starts at a boundary resumes at once, and a PEX message cut
        // by a gap is dropped, not misread.
        let (mut w, key) = d2_synced();
        let pex = unhex(PEX_D2);
        w.feed(key, Dir::ToClient, false, 1, &pex[..40]);
        w.feed(key, Dir::ToClient, true, 2, &pex);
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        let s = w.pw.stats();
        assert_eq!((s.pex.seen, s.resyncs, s.buffered_bytes), (1, 1, 0));
    }

    #[test]
    fn hostile_lengths_are_skipped_without_buffering() {
        let (mut w, key) = d2_synced();
        // 0xfffffff0: over any maximum, sync is lost; nothing is buffered; the next chunk that
        // starts at a message resumes.
        let mut bad = vec![0xff, 0xff, 0xff, 0xf0, MSG_EXTENDED, 0];
        bad.extend(noise(1000, 1));
        w.feed(key, Dir::ToClient, false, 1, &bad);
        assert_eq!(w.pw.stats().invalid_frames, 1);
        assert_eq!(w.pw.stats().buffered_bytes, 0);
        w.feed(key, Dir::ToClient, false, 2, &unhex(PEX_D2));
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);

        // An extended handshake of 0x30000 bytes (within MAX_FRAME, over max_message): passed
        // over by counting, across chunks, and the PEX message after it is read.
        let (mut w, key) = d2_synced();
        let len = 0x30000u32;
        let mut stream = len.to_be_bytes().to_vec();
        stream.extend([MSG_EXTENDED, 0]);
        stream.extend(std::iter::repeat_n(b'x', len as usize - 2));
        stream.extend(unhex(PEX_D2));
        for (i, c) in stream.chunks(1400).enumerate() {
            w.feed(key, Dir::ToClient, false, i as u64, c);
            assert_eq!(w.pw.stats().buffered_bytes, 0);
        }
        let s = w.pw.stats();
        assert_eq!((s.oversized, s.skipped_bytes), (1, u64::from(len) - 2));
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        assert_eq!(s.ext_handshakes.seen, 2, "the oversized one was not read");
    }

    #[test]
    fn buffering_is_bounded_by_the_global_budget_and_released() {
        let mut w = Wire::with(PeerWireConfig {
            max_buffered: 150,
            ..Default::default()
        });
        let pex = unhex(PEX_D2); // body of 96 bytes after the 6-byte header
        let a = conn(H, P);
        let b = conn("192.0.2.2:50001", P);
        for key in [a, b] {
            let mut h = handshake(LTEP);
            h.extend(unhex(PEX_D2_H));
            w.feed(key, Dir::ToServer, false, 0, &h);
            w.feed(key, Dir::ToClient, false, 0, &handshake(LTEP));
            w.feed(key, Dir::ToClient, false, 0, &pex[..50]);
        }
        let s = w.pw.stats();
        assert_eq!((s.buffered_bytes, s.over_budget), (96, 1));
        // The skipped one still frames correctly; the buffered one completes.
        w.feed(b, Dir::ToClient, false, 1, &pex[50..]);
        w.feed(a, Dir::ToClient, false, 1, &pex[50..]);
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        assert_eq!(w.pw.stats().buffered_bytes, 0);
        // A connection closed (or evicted) mid-message gives its bytes back.
        w.feed(a, Dir::ToClient, false, 2, &pex[..50]);
        assert_eq!(w.pw.stats().buffered_bytes, 96);
        w.pw.on_close(a, at(3));
        assert_eq!(w.pw.stats().buffered_bytes, 0);
        let mut w = Wire::with(PeerWireConfig {
            max_connections: 1,
            ..Default::default()
        });
        let mut h = handshake(LTEP);
        h.extend(unhex(PEX_D2_H));
        w.feed(a, Dir::ToServer, false, 0, &h);
        w.feed(a, Dir::ToClient, false, 0, &handshake(LTEP));
        w.feed(a, Dir::ToClient, false, 0, &pex[..50]);
        assert_eq!(w.pw.stats().buffered_bytes, 96);
        w.feed(b, Dir::ToServer, false, 1, &handshake(LTEP));
        let s = w.pw.stats();
        assert_eq!((s.buffered_bytes, s.connections.evicted), (0, 1));
    }

    #[test]
    fn encrypted_streams_yield_nothing_and_are_counted() {
        // MSE: Ya + PadA, Yb + PadB, then RC4 traffic.
        let key = conn(H, P);
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &noise(96 + 200, 1));
        w.feed(key, Dir::ToClient, false, 0, &noise(96 + 31, 2));
        for i in 0..50 {
            w.feed(key, Dir::ToServer, false, 1, &noise(1400, 10 + i));
            w.feed(key, Dir::ToClient, i % 7 == 0, 1, &noise(1400, 100 + i));
        }
        assert!(w.out.is_empty() && w.ret.is_empty());
        let s = w.pw.stats();
        assert_eq!((s.opaque_streams, s.handshakes, s.messages), (2, 0, 0));
        assert_eq!((s.resyncs, s.unsynced_bytes), (0, s.bytes));
        // Another protocol, and a handshake that turns out not to be one.
        let mut w = Wire::new();
        w.feed(
            key,
            Dir::ToServer,
            false,
            0,
            b"GET /announce?info_hash=x HTTP/1.1\r\n",
        );
        w.feed(key, Dir::ToClient, false, 0, b"\x13BitTorrent");
        w.feed(key, Dir::ToClient, false, 0, b" protokol and more");
        let s = w.pw.stats();
        assert_eq!(
            (s.opaque_streams, s.bad_handshakes, s.handshakes),
            (2, 1, 0)
        );
    }

    #[test]
    fn azureus_messaging_is_not_read() {
        let key = conn(H, P);
        let mut w = Wire::new();
        let az = [0x80, 0, 0, 0, 0, 0x13, 0, 0x05];
        w.feed(key, Dir::ToServer, false, 0, &handshake(az));
        let mut p = handshake(az);
        p.extend(unhex(PEX_R2));
        w.feed(key, Dir::ToClient, false, 0, &p);
        assert!(w.out.is_empty());
        assert_eq!(w.pw.stats().azureus_messaging, 1);
        // One side only: plain BitTorrent framing.
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &handshake(az));
        let mut p = handshake(LTEP);
        p.extend(unhex(PEX_R2));
        w.feed(key, Dir::ToClient, false, 0, &p);
        assert_eq!(w.out.len(), 60);
    }

    #[test]
    fn spec_pex_r1_through_the_channel_filters_the_receiver() {
        // Sender 82.243.113.43 (libtorrent, EXT-R2, initiator here), receiver 192.168.1.5
        // whose handshake announced ut_pex 1 and whose public address the sender reported.
        let key = conn("82.243.113.43:64969", "192.168.1.5:40959");
        let mut w = Wire::new();
        let mut s = handshake(LTEP);
        s.extend(unhex(EXT_R2));
        w.feed(key, Dir::ToServer, false, 0, &s);
        let mut r = handshake(LTEP);
        r.extend(extended(0, b"d1:md6:ut_pexi1eee"));
        w.feed(key, Dir::ToClient, false, 0, &r);
        w.feed(key, Dir::ToServer, false, 1, &unhex(PEX_R1));
        let expected: Vec<String> = [
            "76.109.15.116:61225",
            "24.91.99.51:10926",
            "185.21.217.5:59844",
            "81.106.99.221:26523",
            "81.98.119.30:62327",
            "73.54.139.88:38317",
            "5.29.250.72:16052",
            "191.33.128.157:59498",
            "79.78.249.181:51413",
            "41.101.78.57:49252",
        ]
        .iter()
        .map(|a| format!("192.168.1.5 {a}"))
        .collect();
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp), expected);
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Udp), expected);
        // EXT-R2: `p` beats the observed source port.
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            ["192.168.1.5 82.243.113.43:56400"]
        );
        let s = w.pw.stats();
        assert_eq!((s.entries.decoded, s.entries.own_address), (11, 1));
        assert_eq!(s.pex_fallback, 0);
    }

    #[test]
    fn spec_pex_r2_mid_session_uses_the_id_1_fallback() {
        // No handshake in either direction: the capture started mid-session.
        let key = conn("74.57.96.48:6881", "192.168.0.193:4377");
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, true, 0, &unhex(PEX_R2));
        let tcp = w.targets(Channel::Pex, PeerTransport::Tcp);
        assert_eq!(tcp.len(), 30);
        assert_eq!(tcp[0], "192.168.0.193 216.144.228.100:18377");
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Udp), tcp);
        let s = w.pw.stats();
        assert_eq!((s.pex_fallback, s.resyncs, s.pex.parsed), (1, 1, 1));
        // Picked up inside a message: nothing until a chunk starts plausibly.
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &piece(3000)[1000..2400]);
        w.feed(key, Dir::ToServer, false, 1, &unhex(PEX_R2));
        assert_eq!(w.out.len(), 60);
        let s = w.pw.stats();
        assert_eq!((s.opaque_streams, s.resyncs, s.unsynced_chunks), (1, 1, 1));
        // Another extension on id 1 is not taken for PEX.
        let mut w = Wire::new();
        w.feed(
            key,
            Dir::ToServer,
            true,
            0,
            &extended(1, b"d8:msg_typei0e5:piecei0ee"),
        );
        assert!(w.out.is_empty());
        assert_eq!(w.pw.stats().unknown_extension, 1);
        assert_eq!(w.pw.stats().pex.seen, 0);
    }

    #[test]
    fn extended_handshake_listen_port_and_other_addresses() {
        let utorrent = "82.57.97.83:53137";
        let me = "192.168.1.3:52887";
        let hs = |hex: &str| {
            let mut v = handshake(LTEP);
            v.extend(unhex(hex));
            v
        };
        // EXT-R1 from the responder: `p` is the port already dialled, `ipv4` its own address.
        let mut w = Wire::new();
        let key = conn(me, utorrent);
        w.feed(key, Dir::ToServer, false, 0, &unhex(BTH_R1));
        w.feed(key, Dir::ToClient, false, 0, &hs(EXT_R1));
        assert!(w.out.is_empty());
        // The same from the initiator: one prediction for the receiver.
        let mut w = Wire::new();
        let key = conn(utorrent, me);
        w.feed(key, Dir::ToServer, false, 0, &hs(EXT_R1));
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            ["192.168.1.3 82.57.97.83:53137"]
        );
        // Other addresses from the responder (whose `p` alone predicts nothing): another IPv4
        // is kept, and a global IPv6, but not link-local or Teredo ones.
        let key = conn(me, utorrent);
        for (ipv6, want) in [
            (&b"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x09"[..], true),
            (&b"\xfe\x80\0\0\0\0\0\0\0\0\0\0\0\0\0\x09"[..], false),
            (
                &b"\x20\x01\0\0\x5e\xf5\x79\xfb\x38\x68\x20\x29\x41\x98\x3c\xc7"[..],
                false,
            ),
        ] {
            let mut d = b"d4:ipv44:\xc6\x33\x64\x074:ipv616:".to_vec();
            d.extend_from_slice(ipv6);
            d.extend_from_slice(b"1:pi6881ee");
            let mut w = Wire::new();
            w.feed(key, Dir::ToServer, false, 0, &handshake(LTEP));
            let mut v = handshake(LTEP);
            v.extend(extended(0, &d));
            w.feed(key, Dir::ToClient, false, 0, &v);
            let mut want_v = vec!["192.168.1.3 198.51.100.7:6881".to_string()];
            if want {
                want_v.push("192.168.1.3 [2001:db8::9]:6881".into());
            }
            assert_eq!(w.targets(Channel::PeerWire, PeerTransport::Tcp), want_v);
        }
    }

    #[test]
    fn later_extended_handshakes_add_to_the_id_map() {
        let (mut w, key) = d2_synced();
        // H adds ut_holepunch 9 in a second handshake; ut_pex 3 still stands.
        w.feed(
            key,
            Dir::ToServer,
            false,
            1,
            &extended(0, b"d1:md12:ut_holepunchi9eee"),
        );
        let mut hp = unhex(HP_D1);
        hp[5] = 9;
        w.feed(key, Dir::ToClient, false, 2, &hp);
        w.feed(key, Dir::ToClient, false, 3, &unhex(PEX_D2));
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Udp),
            ["192.0.2.1 192.0.2.20:6881"]
        );
        // Then disables PEX (id 0): the next PEX message is not read.
        w.feed(
            key,
            Dir::ToServer,
            false,
            4,
            &extended(0, b"d1:md6:ut_pexi0eee"),
        );
        w.feed(key, Dir::ToClient, false, 5, &unhex(PEX_D2));
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        assert_eq!(w.pw.stats().unknown_extension, 1);
    }

    #[test]
    fn connections_are_bounded_and_expire_when_idle() {
        let mut w = Wire::with(PeerWireConfig {
            max_connections: 4,
            connection_ttl: Duration::from_secs(60),
            ..Default::default()
        });
        for i in 0..10u16 {
            let key = conn(&format!("192.0.2.1:{}", 40000 + i), P);
            w.feed(key, Dir::ToServer, false, 0, &handshake(LTEP));
        }
        let s = w.pw.stats().connections;
        assert_eq!((s.len, s.evicted), (4, 6));
        w.pw.expire(at(1000));
        assert_eq!(w.pw.stats().connections.len, 0);
        // An active connection outlives the TTL: its id map is still known at t = 300 s.
        let mut w = Wire::with(PeerWireConfig {
            connection_ttl: Duration::from_secs(60),
            ..Default::default()
        });
        let key = conn(H, P);
        let mut h = handshake(LTEP);
        h.extend(unhex(PEX_D2_H));
        w.feed(key, Dir::ToServer, false, 0, &h);
        w.feed(key, Dir::ToClient, false, 0, &handshake(LTEP));
        for t in (10..300).step_by(10) {
            w.feed(key, Dir::ToClient, false, t, &[0, 0, 0, 0]);
        }
        w.feed(key, Dir::ToClient, false, 300, &unhex(PEX_D2));
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        assert_eq!(w.pw.stats().connections.expired, 0);
        // An idle one is forgotten: what comes later is read as a new stream.
        w.feed(key, Dir::ToClient, false, 1000, &unhex(PEX_D2));
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
        assert_eq!(w.pw.stats().connections.expired, 1);
    }

    #[test]
    fn port_zero_and_the_receiver_itself_are_dropped() {
        let (mut w, key) = d2_synced();
        // added: port 0, H itself, H's reported address, the sender, one good entry.
        let mut body = b"d5:added30:".to_vec();
        for e in [
            [198, 51, 100, 1, 0, 0],
            [192, 0, 2, 1, 0x1a, 0xe1],
            [198, 51, 100, 99, 0x1a, 0xe1],
            [203, 0, 113, 9, 0x1a, 0xe1],
            [198, 51, 100, 2, 0x1a, 0xe1],
        ] {
            body.extend_from_slice(&e);
        }
        body.push(b'e');
        w.feed(
            key,
            Dir::ToClient,
            false,
            1,
            &extended(0, b"d6:yourip4:\xc6\x33\x64\x63e"),
        );
        w.feed(key, Dir::ToClient, false, 2, &extended(3, &body));
        assert_eq!(
            w.targets(Channel::Pex, PeerTransport::Tcp),
            ["192.0.2.1 198.51.100.2:6881"]
        );
        let s = w.pw.stats();
        assert_eq!(
            (s.entries.decoded, s.entries.unusable, s.entries.own_address),
            (5, 1, 2)
        );
        assert_eq!(s.sender_listed, 1);
        // PORT 0 predicts nothing.
        w.feed(key, Dir::ToClient, false, 3, &unhex("00000003 09 0000"));
        assert!(w.targets(Channel::PeerWire, PeerTransport::Udp).is_empty());
        assert_eq!(w.pw.stats().port_messages, 1);
    }

    // ---- real bytes from the shared captures
    //
    // Expected numbers come from tshark 4.0.17 (`-Y 'bittorrent.info_hash'` for handshakes,
    // `-T fields -e bittorrent.msg.type -e bittorrent.extended.id -e bittorrent.port` for
    // messages, `-z follow,tcp,raw` plus a separate Python bencode decoder for the extended
    // payloads), then the documented rules applied by hand, not from this code.

    fn replay(rel: &str) -> (Wire, Vec<Chunk>) {
        let chunks = tcp_chunks(rel);
        let mut w = Wire::new();
        for c in &chunks {
            w.pw.on_chunk(&c.chunk(), &mut w.out, &mut w.ret);
        }
        (w, chunks)
    }

    fn by_channel(out: &[PredictedPeer]) -> Map<(Channel, PeerTransport), usize> {
        let mut m = Map::new();
        for p in out {
            *m.entry((p.channel, p.transport)).or_default() += 1;
        }
        m
    }

    #[test]
    fn torrential_slowness_pex_r2() {
        // 100 frames, all flows mid-session; frame 61 is PEX-R2 from 74.57.96.48:6881 to
        // 192.168.0.193:4377. Nothing else in the capture predicts.
        let (w, chunks) = replay("markofu-pcaps/torrential-slowness.pcap");
        let r2 = unhex(PEX_R2);
        assert!(chunks
            .iter()
            .any(|c| c.data == r2 && c.sender() == "74.57.96.48:6881".parse().unwrap()));
        let tcp = w.targets(Channel::Pex, PeerTransport::Tcp);
        assert_eq!(tcp.len(), 30);
        assert!(tcp.iter().all(|t| t.starts_with("192.168.0.193 ")));
        assert_eq!(
            tcp[..3],
            [
                "192.168.0.193 216.144.228.100:18377",
                "192.168.0.193 65.23.90.6:61354",
                "192.168.0.193 86.8.45.12:63252"
            ]
        );
        assert_eq!(tcp[29], "192.168.0.193 82.2.118.24:10000");
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Udp), tcp);
        assert_eq!(w.out.len(), 60);
        let s = w.pw.stats();
        assert_eq!((s.pex.seen, s.pex.parsed, s.pex_fallback), (1, 1, 1));
        assert_eq!(s.handshakes, 0);
        assert!(w.ret.is_empty());
    }

    #[test]
    fn ndpi_bittorrent_capture() {
        // 24 flows, no SYN captured, many segments missing. tshark: 41 handshakes, 16
        // extended handshakes, 21 PORT messages, no PEX.
        let (w, chunks) = replay("ntop-nDPI/bittorrent.pcap");
        let s = w.pw.stats();
        assert_eq!(s.handshakes, 41);
        assert_eq!(s.handshakes_extension, 41);
        assert_eq!((s.ext_handshakes.seen, s.ext_handshakes.parsed), (16, 16));
        assert_eq!(s.port_messages, 21);
        assert_eq!(s.pex.seen, 0);
        assert!(s.gaps > 0 && s.resyncs > 0);
        // BTH-R1 opens 192.168.1.3:52887 → 82.57.97.83:53137; EXT-R1 (unsorted) follows the
        // reply.
        let bth = unhex(BTH_R1);
        let ext = unhex(EXT_R1);
        let utorrent: SocketAddr = "82.57.97.83:53137".parse().unwrap();
        let me: SocketAddr = "192.168.1.3:52887".parse().unwrap();
        assert!(chunks
            .iter()
            .any(|c| c.sender() == me && c.data.starts_with(&bth)));
        let reply: Vec<u8> = chunks
            .iter()
            .filter(|c| c.sender() == utorrent && c.conn.client == me)
            .flat_map(|c| c.data.iter().copied())
            .collect();
        assert!(reply[68..].starts_with(&ext), "EXT-R1 spans two segments");
        // Every PORT is a UDP prediction for its receiver; the µTorrent 1.8.8 one is
        // `00000003 09 c8d5` (stream 2, server → client).
        let m = by_channel(&w.out);
        assert_eq!(m.get(&(Channel::PeerWire, PeerTransport::Udp)), Some(&21));
        assert!(w
            .targets(Channel::PeerWire, PeerTransport::Udp)
            .contains(&"192.168.1.3 83.216.184.241:51413".to_string()));
        let port = unhex(PORT_R);
        assert!(chunks
            .iter()
            .any(|c| c.data.starts_with(&port)
                && c.sender() == "83.216.184.241:51413".parse().unwrap()));
        // Only 192.168.1.3's handshake to 82.58.216.115 (it initiated every flow) gives `p`
        // and its public `ipv4` (82.55.205.1); the others come from responders, whose `ipv4`
        // is their own address and whose `ipv6` is link-local or Teredo.
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            [
                "82.58.216.115 192.168.1.3:40959",
                "82.58.216.115 82.55.205.1:40959"
            ]
        );
        assert_eq!(m.len(), 2, "{m:?}");
        // Messages cut by the end of the capture stay buffered until their connection goes.
        let mut pw = w.pw;
        pw.expire(at(4_000_000_000));
        let s = pw.stats();
        assert_eq!((s.buffered_bytes, s.connections.len), (0, 0));
    }

    #[test]
    fn small_torrent_capture() {
        // tshark: 7 TCP handshakes (the other BitTorrent connections of the capture run over
        // uTP), 4 extended handshakes, 3 PORT messages, 2 ut_pex messages (Transmission 2.84
        // → 192.168.0.102, id 1 as 192.168.0.102's `m` says), each listing 217.129.96.104:36360:
        // the `ipv4` and `p` 192.168.0.102 announced itself, so no PEX prediction.
        let (w, chunks) = replay("goncalo-rodrigues-360BitScoping/small_torrent.pcap");
        let s = w.pw.stats();
        assert_eq!(s.handshakes, 7);
        assert_eq!((s.ext_handshakes.seen, s.ext_handshakes.parsed), (4, 4));
        assert_eq!((s.pex.seen, s.pex.parsed, s.pex_fallback), (2, 2, 0));
        assert_eq!((s.entries.decoded, s.entries.own_address), (2, 2));
        assert_eq!(s.port_messages, 3);
        let m = by_channel(&w.out);
        assert_eq!(m.get(&(Channel::Pex, PeerTransport::Tcp)), None);
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Udp),
            [
                "192.168.0.102 200.87.172.190:51413",
                "192.168.0.102 200.87.172.190:51413",
                "200.87.172.190 192.168.0.102:36360"
            ]
        );
        // 192.168.0.102 initiated both connections: its `p` and its `ipv4` (its Teredo
        // `ipv6` is dropped), twice.
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            [
                "200.87.172.190 192.168.0.102:36360",
                "200.87.172.190 217.129.96.104:36360",
                "200.87.172.190 192.168.0.102:36360",
                "200.87.172.190 217.129.96.104:36360"
            ]
        );
        // The MSE connection to 190.88.147.206:51413 (tshark stream 40: 133 bytes of key and
        // padding, no reply) is opaque.
        let mse: SocketAddr = "190.88.147.206:51413".parse().unwrap();
        let mut only = Wire::new();
        let mut n = 0;
        for c in chunks.iter().filter(|c| c.conn.server == mse) {
            only.pw.on_chunk(&c.chunk(), &mut only.out, &mut only.ret);
            n += c.data.len();
        }
        let o = only.pw.stats();
        assert_eq!(
            n,
            133 + 68,
            "stream 24's unanswered handshake plus the MSE stream"
        );
        assert_eq!(
            (o.handshakes, o.opaque_streams, o.unsynced_bytes),
            (1, 1, 133)
        );
        assert!(only.out.is_empty());
    }

    #[test]
    fn lookaway_capture() {
        // One BitTorrent connection, 10.0.0.3:48702 (libTorrent 0.12.2, initiator, `p` 6965)
        // to 10.0.0.2:52833 (Deluge 1.1.9): 2 handshakes, 2 extended handshakes, ~1.9 MB of
        // pieces with losses and retransmissions, then 1 ut_pex message with every list empty
        // (id 1 = 10.0.0.3's `m.ut_pex`). Three HTTP tracker connections (6 directions).
        let (w, _) = replay("tcoppi-BittorrentReconstituter/lookaway.pcap");
        let s = w.pw.stats();
        assert_eq!(s.handshakes, 2);
        assert_eq!((s.ext_handshakes.seen, s.ext_handshakes.parsed), (2, 2));
        assert_eq!((s.pex.seen, s.pex.parsed, s.pex_fallback), (1, 1, 0));
        assert_eq!((s.entries.decoded, s.dropped.decoded), (0, 0));
        assert_eq!(s.opaque_streams, 6);
        assert!(s.skipped_bytes > 1_800_000, "{}", s.skipped_bytes);
        assert_eq!(s.buffered_bytes, 0);
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            ["10.0.0.2 10.0.0.3:6965"]
        );
        assert_eq!(w.out.len(), 1);
    }
}
