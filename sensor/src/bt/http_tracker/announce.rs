//! The announce itself: the request's query (BEP 3 `info_hash`, `peer_id`, `port`; BEP 23
//! `compact`) and the bencoded tracker reply, read into peers (BEP 3 dict list, BEP 23 compact
//! `peers`, BEP 7 `peers6`, BEP 24 `external ip`). Pure functions, no state.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Reject, MAX_DEPTH, MAX_REQUEST_LINE};
use crate::bt::bdecode::{self, Value};
use crate::bt::wire::{compact_v4, compact_v6};
use crate::bt::EntryCounts;

/// Whether the first payload of a client stream is an announce-like request: `GET ` and
/// `info_hash=` on the request line. Looks at most [`MAX_REQUEST_LINE`] bytes.
pub fn looks_like_announce(head: &[u8]) -> bool {
    if !head.starts_with(b"GET ") {
        return false;
    }
    let head = head.get(..head.len().min(MAX_REQUEST_LINE)).unwrap_or(head);
    let line = match head.iter().position(|&b| b == b'\n') {
        Some(end) => head.get(..end).unwrap_or(head),
        None => head,
    };
    contains(line, b"info_hash=")
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What an announce request's query says (BEP 3 request parameters, BEP 23 `compact`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnnounceQuery {
    /// `info_hash=` and `peer_id=` both carry a value.
    pub announce: bool,
    /// `port=`: the client's own listen port.
    pub port: Option<u16>,
    /// `compact=`: `Some(true)` for `1`.
    pub compact: Option<bool>,
}

impl AnnounceQuery {
    /// Reads the query (the request target after `?`); unknown parameters are ignored.
    pub fn parse(query: &str) -> Self {
        let (mut info_hash, mut peer_id, mut port, mut compact) = (false, false, None, None);
        for param in query.split('&') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let has_value = param.len() > key.len();
            match key {
                "info_hash" => info_hash |= has_value,
                "peer_id" => peer_id |= has_value,
                "port" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    port = value.parse::<u16>().ok();
                }
                "compact" => compact = Some(value == "1"),
                _ => {}
            }
        }
        Self {
            announce: info_hash && peer_id,
            port,
            compact,
        }
    }
}

/// The `peers` key of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeersField<'a> {
    /// C4 entries (BEP 23).
    Compact(&'a [u8]),
    /// A list of dicts (BEP 3); the number of elements.
    List(usize),
}

/// One entry of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer<'a> {
    Addr(SocketAddr),
    /// A dict entry whose `ip` is a DNS name.
    Name {
        host: &'a [u8],
        port: u16,
    },
}

/// What [`AnnounceReply::for_each_peer`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// `decoded` counts addresses; names are counted in `dns_names` only.
    pub entries: EntryCounts,
    pub dns_names: u64,
}

/// A decoded tracker reply. Byte fields borrow from the body.
#[derive(Debug)]
pub struct AnnounceReply<'a> {
    pub failure: Option<&'a [u8]>,
    pub warning: Option<&'a [u8]>,
    pub interval: Option<i64>,
    pub peers: Option<PeersField<'a>>,
    /// C6 entries (BEP 7).
    pub peers6: Option<&'a [u8]>,
    /// BEP 24: the requester's own address as the tracker sees it (never a target).
    pub external_ip: Option<IpAddr>,
    /// The `peers` list, validated, read again by [`AnnounceReply::for_each_peer`].
    peer_list: Option<bdecode::List<'a>>,
}

/// The top-level entries of a reply that are read.
#[derive(Default)]
struct Entries<'a> {
    failure: Option<Value<'a>>,
    warning: Option<Value<'a>>,
    interval: Option<Value<'a>>,
    peers: Option<Value<'a>>,
    peers6: Option<Value<'a>>,
    external_ip: Option<Value<'a>>,
}

/// Decodes an announce reply body (already de-chunked and inflated). Keys may come in any
/// order; trailing ASCII whitespace is tolerated. Pure, linear in `body`, depth ≤ [`MAX_DEPTH`].
/// One pass with no allocation ([`bdecode`]): the whole body validated, the keys read kept
/// as slices of it.
pub fn parse_announce_body(body: &[u8]) -> Result<AnnounceReply<'_>, Reject> {
    let body = body.trim_ascii_end();
    let mut top = Entries::default();
    let root = bdecode::scan(body, MAX_DEPTH, &mut |depth, key, value| {
        let slot = match key {
            _ if depth > 0 => return,
            b"failure reason" => &mut top.failure,
            b"warning message" => &mut top.warning,
            b"interval" => &mut top.interval,
            b"peers" => &mut top.peers,
            b"peers6" => &mut top.peers6,
            b"external ip" => &mut top.external_ip,
            _ => return,
        };
        *slot = Some(value);
    })?;
    if !root.is_dict() {
        return Err(Reject::NotDict);
    }
    let failure = string(top.failure)?;
    let peers6 = string(top.peers6)?;
    let mut peer_list = None;
    let peers = match top.peers {
        None => None,
        Some(Value::Bytes(s)) => Some(PeersField::Compact(s)),
        Some(Value::List(l)) => {
            peer_list = Some(l);
            Some(PeersField::List(l.iter().count()))
        }
        Some(_) => return Err(Reject::WrongType),
    };
    if failure.is_none() && peers.is_none() && peers6.is_none() {
        return Err(Reject::NotTrackerReply);
    }
    // Informational keys: a wrong type does not spoil the peers.
    Ok(AnnounceReply {
        failure,
        warning: top.warning.and_then(Value::bytes),
        interval: top.interval.and_then(Value::int),
        peers,
        peers6,
        external_ip: top
            .external_ip
            .and_then(Value::bytes)
            .and_then(ip_from_bytes),
        peer_list,
    })
}

fn string(v: Option<Value<'_>>) -> Result<Option<&[u8]>, Reject> {
    v.map(|v| v.bytes().ok_or(Reject::WrongType)).transpose()
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(Ipv4Addr::from(v4)))
    } else {
        <[u8; 16]>::try_from(b)
            .ok()
            .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
    }
}

/// A DNS name as BEP 3 allows in `ip`: letters, digits, `-`, `.`, `_`, at most 253 bytes.
fn is_hostname(b: &[u8]) -> bool {
    (1..=253).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
}

/// One dict of a `peers` list: `ip` (an address literal or a DNS name) and `port`.
fn dict_peer(e: Value<'_>) -> Option<Peer<'_>> {
    let d = e.dict()?;
    let ip = d.get(b"ip")?.bytes()?;
    let port = u16::try_from(d.get(b"port")?.int()?).ok()?;
    let text = std::str::from_utf8(ip).ok()?;
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(addr) = bare.parse::<IpAddr>() {
        Some(Peer::Addr(SocketAddr::new(addr, port)))
    } else if is_hostname(ip) {
        Some(Peer::Name { host: ip, port })
    } else {
        None
    }
}

impl<'a> AnnounceReply<'a> {
    /// Calls `f` with each entry of `peers` then `peers6`, reading at most `max` over both.
    /// Compact strings give `floor(len / stride)` entries, a remainder counts as one malformed
    /// (libtorrent would fail the whole reply; Zeek and Transmission read the whole entries).
    /// List elements that are not a dict with a usable `ip` and a `port` in 0..=65535 are
    /// malformed. The caller decides what a `failure reason` means for the entries.
    pub fn for_each_peer(&self, max: usize, mut f: impl FnMut(Peer<'a>)) -> PeerCounts {
        let mut n = PeerCounts::default();
        let mut budget = max;
        match self.peers {
            Some(PeersField::Compact(s)) => compact_entries(s, 6, &mut budget, &mut n, &mut f),
            Some(PeersField::List(total)) => {
                let take = total.min(budget);
                budget -= take;
                n.entries.capped += (total - take) as u64;
                let mut list = self.peer_list.into_iter().flat_map(bdecode::List::iter);
                for _ in 0..take {
                    match list.next().and_then(dict_peer) {
                        Some(p) => {
                            match p {
                                Peer::Addr(_) => n.entries.decoded += 1,
                                Peer::Name { .. } => n.dns_names += 1,
                            }
                            f(p);
                        }
                        None => n.entries.malformed += 1,
                    }
                }
            }
            None => {}
        }
        if let Some(s) = self.peers6 {
            compact_entries(s, 18, &mut budget, &mut n, &mut f);
        }
        n
    }
}

/// Whole C4 (`stride` 6) or C6 (18) entries of `s`, at most `budget`; a remainder is one
/// malformed entry.
fn compact_entries<'a>(
    s: &'a [u8],
    stride: usize,
    budget: &mut usize,
    n: &mut PeerCounts,
    f: &mut impl FnMut(Peer<'a>),
) {
    if !s.len().is_multiple_of(stride) {
        n.entries.malformed += 1;
    }
    let total = s.len() / stride;
    let take = total.min(*budget);
    *budget -= take;
    n.entries.capped += (total - take) as u64;
    for e in s.chunks_exact(stride).take(take) {
        n.entries.decoded += 1;
        let addr = match <&[u8; 6]>::try_from(e) {
            Ok(c4) => compact_v4(c4),
            Err(_) => compact_v6(e.try_into().unwrap_or(&[0; 18])),
        };
        f(Peer::Addr(addr));
    }
}
