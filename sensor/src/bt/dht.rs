//! Mainline DHT (BEP 5 KRPC, BEP 32 IPv6, BEP 42 `ip`): which peers and nodes a host learns.
//!
//! Predictions (BEP 5 "KRPC Protocol": a response goes back to the querier): the learner is the *destination* of a response (the
//! querier). `values` of a `get_peers` response are peers it will dial over TCP and uTP, so each
//! gives a [`PeerTransport::Tcp`] and a [`PeerTransport::Udp`] prediction on [`Channel::Dht`];
//! `nodes`/`nodes6` are DHT nodes it will query over UDP ([`Channel::DhtNodes`]). Queries
//! predict nothing outbound (`announce_peer` advertises the announcer's own port), and the
//! BEP 42 `ip` is the learner's own address, never a target; it is used to drop the learner
//! from the lists.
//!
//! Responses are matched to queries by (querier, responder, `t`). A response with no pending
//! query still predicts by default ([`DhtConfig::predict_unmatched`]): the receiver of a
//! response is the querier whatever we saw (BEP 5 only echoes `t` for the querier's benefit), a capture or a restarted sensor starts
//! mid-session, and matching would not stop an adversary, who controls both ends of a fake
//! exchange anyway. Such responses are counted apart (`unmatched`).
//!
//! Bencode: [`super::bdecode`], one pass over the datagram with no allocation: it validates
//! the whole message as the tree decoder used before did (same fault classes, depth cap,
//! duplicate keys rejected, unsorted keys accepted, which real traffic needs: BEP 3 asks for
//! sorted keys, but deployed KRPC and extension dicts are not always sorted, uTorrent 3.4.5's
//! extended handshake is not) and hands over the entries KRPC reads as slices of the datagram;
//! `values` stays the raw list, read again lazily. KRPC is most of the UDP a BitTorrent-heavy
//! link carries, and building a tree of maps per datagram was most of this channel's cost.
//! Why no crate does this pass is said in `bdecode`.

use std::net::SocketAddr;
use std::time::Duration;

use super::bdecode::{self, Value};
use super::channel::{Learnt, Sender};
use super::wire::{compact_v4, compact_v6};
use super::{unfit, Bounded, ChannelCounts, EntryCounts, Fairness, TableStats};
use crate::event::{PacketEvent, Timestamp, UdpDatagram};
use crate::predict::{Channel, PeerTransport, PredictedPeer};

/// Nesting the decoder accepts: KRPC needs 4 (dict, `r` dict, `values` list, string); the rest
/// leaves room for extensions without letting `llll…` cost more.
pub const MAX_DEPTH: usize = 8;
/// Longest transaction id kept (libtorrent uses 2 bytes, µTorrent 4).
pub const MAX_TID_LEN: usize = 16;
/// Endpoints read from one message, over `values`, `nodes` and `nodes6` (a 1472-byte
/// datagram holds at most 244 C4 peers).
pub const MAX_ENTRIES: usize = 256;

const N4: usize = 26;
const N6: usize = 38;

/// Why a datagram that looked like KRPC was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reject {
    /// The capture holds only the head of the datagram.
    Incomplete,
    /// The bencode ends before its last value does.
    Truncated,
    /// A string's declared length runs past the end of the datagram (truncation or hostile).
    LengthBeyondEnd,
    TrailingData,
    TooDeep,
    DuplicateKey,
    /// Not bencode (bad integer, bad byte, non-string key...).
    Syntax,
    NotDict,
    MissingTid,
    /// `t` is not a string or longer than [`MAX_TID_LEN`].
    BadTid,
    /// `y` missing or not one of `q`, `r`, `e`.
    BadType,
    /// `y` says query/response/error but `q`+`a`, `r` or `e` is missing or not a dict/list.
    MissingBody,
    /// Node `id` missing or not 20 bytes.
    BadId,
    BadInfoHash,
    BadPort,
    /// BEP 42 `ip` not a 6- or 18-byte string.
    BadIp,
    /// A known key holds the wrong bencode type (e.g. `values` not a list of strings).
    WrongType,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The query method, for counters; anything else is kept as raw bytes in [`Query::method_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Ping,
    FindNode,
    GetPeers,
    AnnouncePeer,
    Other,
}

impl Method {
    fn from_name(name: &[u8]) -> Self {
        match name {
            b"ping" => Method::Ping,
            b"find_node" => Method::FindNode,
            b"get_peers" => Method::GetPeers,
            b"announce_peer" => Method::AnnouncePeer,
            _ => Method::Other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    pub method: Method,
    pub method_name: &'a [u8],
    pub id: &'a [u8; 20],
    pub info_hash: Option<&'a [u8; 20]>,
    pub target: Option<&'a [u8; 20]>,
    pub port: Option<u16>,
    pub implied_port: bool,
    pub token: Option<&'a [u8]>,
}

impl Query<'_> {
    /// `announce_peer`: the announcer's listen port (BEP 5: the UDP source port when
    /// `implied_port` is set). It predicts inbound connections, not outbound ones.
    pub fn announced_port(&self, udp_src_port: u16) -> Option<u16> {
        if self.method != Method::AnnouncePeer {
            return None;
        }
        if self.implied_port {
            Some(udp_src_port)
        } else {
            self.port
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub id: &'a [u8; 20],
    pub token: Option<&'a [u8]>,
    /// How many strings `values` holds, if present; read them with [`Message::values`].
    pub values: Option<usize>,
    /// Raw `nodes` (N4 entries) and `nodes6` (N6 entries), empty when absent.
    pub nodes: &'a [u8],
    pub nodes6: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KrpcError<'a> {
    pub code: Option<i64>,
    pub message: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Query(Query<'a>),
    Response(Response<'a>),
    Error(KrpcError<'a>),
}

/// One decoded KRPC message. Byte fields borrow from the datagram.
#[derive(Debug)]
pub struct Message<'a> {
    pub tid: &'a [u8],
    /// `v`: client and version.
    pub version: Option<&'a [u8]>,
    /// BEP 42 `ip`: the receiver's own address as the sender sees it.
    pub external: Option<SocketAddr>,
    pub body: Body<'a>,
    /// `r.values`, validated and found to hold only strings, read again by
    /// [`Message::values`].
    values: Option<bdecode::List<'a>>,
}

/// The entries of a dict that KRPC reads, as the decoder hands them over.
#[derive(Clone, Copy, Default)]
struct Entries<'a> {
    // Top level.
    t: Option<Value<'a>>,
    y: Option<Value<'a>>,
    q: Option<Value<'a>>,
    a: Option<Value<'a>>,
    r: Option<Value<'a>>,
    e: Option<Value<'a>>,
    v: Option<Value<'a>>,
    ip: Option<Value<'a>>,
    // `a` (query arguments) or `r` (response values).
    id: Option<Value<'a>>,
    info_hash: Option<Value<'a>>,
    target: Option<Value<'a>>,
    port: Option<Value<'a>>,
    implied_port: Option<Value<'a>>,
    token: Option<Value<'a>>,
    values: Option<Value<'a>>,
    nodes: Option<Value<'a>>,
    nodes6: Option<Value<'a>>,
}

impl<'a> Entries<'a> {
    /// Keeps `value` if `key` is one KRPC reads at this level (keys are unique: the decoder
    /// rejects duplicates).
    fn keep(&mut self, key: &[u8], value: Value<'a>) {
        let slot = match key {
            b"t" => &mut self.t,
            b"y" => &mut self.y,
            b"q" => &mut self.q,
            b"a" => &mut self.a,
            b"r" => &mut self.r,
            b"e" => &mut self.e,
            b"v" => &mut self.v,
            b"ip" => &mut self.ip,
            _ => return,
        };
        *slot = Some(value);
    }

    fn keep_inner(&mut self, key: &[u8], value: Value<'a>) {
        let slot = match key {
            b"id" => &mut self.id,
            b"info_hash" => &mut self.info_hash,
            b"target" => &mut self.target,
            b"port" => &mut self.port,
            b"implied_port" => &mut self.implied_port,
            b"token" => &mut self.token,
            b"values" => &mut self.values,
            b"nodes" => &mut self.nodes,
            b"nodes6" => &mut self.nodes6,
            _ => return,
        };
        *slot = Some(value);
    }
}

fn bytes_of(v: Option<Value<'_>>) -> Result<Option<&[u8]>, Reject> {
    v.map(|v| v.bytes().ok_or(Reject::WrongType)).transpose()
}

fn id20(b: &[u8], err: Reject) -> Result<&[u8; 20], Reject> {
    b.try_into().map_err(|_| err)
}

fn opt_id20(v: Option<Value<'_>>, err: Reject) -> Result<Option<&[u8; 20]>, Reject> {
    v.map(|v| id20(v.bytes().ok_or(err)?, err)).transpose()
}

super::from_bencode_fault!(Reject);

/// Decodes one KRPC datagram. Pure and bounded: linear in `payload`, depth ≤ [`MAX_DEPTH`].
/// One pass validates the whole datagram (a fault anywhere rejects it, as BEP 3 decoding
/// does) and keeps the entries KRPC reads as slices of `payload`; nothing is allocated.
pub fn parse(payload: &[u8]) -> Result<Message<'_>, Reject> {
    let mut top = Entries::default();
    // The entries of the depth-1 dict being read; they arrive before the top-level entry
    // that holds them, which then tells whether they were `a`'s, `r`'s or another key's.
    let mut inner = Entries::default();
    let (mut a, mut r) = (Entries::default(), Entries::default());
    let root = bdecode::scan(payload, MAX_DEPTH, &mut |depth, key, value| match depth {
        0 => {
            top.keep(key, value);
            match key {
                b"a" => a = inner,
                b"r" => r = inner,
                _ => {}
            }
            inner = Entries::default();
        }
        1 => inner.keep_inner(key, value),
        _ => {}
    })?;
    if !root.is_dict() {
        return Err(Reject::NotDict);
    }
    let tid = match top.t {
        None => return Err(Reject::MissingTid),
        Some(t) => t.bytes().ok_or(Reject::BadTid)?,
    };
    if tid.len() > MAX_TID_LEN {
        return Err(Reject::BadTid);
    }
    let y = top.y.and_then(Value::bytes).ok_or(Reject::BadType)?;
    let mut values = None;
    let body = match y {
        b"q" => Body::Query(parse_query(&top, &a)?),
        b"r" => Body::Response(parse_response(&top, &r, &mut values)?),
        b"e" => Body::Error(parse_error(&top)?),
        _ => return Err(Reject::BadType),
    };
    let version = bytes_of(top.v)?;
    let external = match bytes_of(top.ip).map_err(|_| Reject::BadIp)? {
        None => None,
        Some(b) => Some(compact(b).ok_or(Reject::BadIp)?),
    };
    Ok(Message {
        tid,
        version,
        external,
        body,
        values,
    })
}

fn compact(b: &[u8]) -> Option<SocketAddr> {
    if let Ok(c4) = <&[u8; 6]>::try_from(b) {
        Some(compact_v4(c4))
    } else {
        <&[u8; 18]>::try_from(b).ok().map(compact_v6)
    }
}

fn parse_query<'a>(top: &Entries<'a>, a: &Entries<'a>) -> Result<Query<'a>, Reject> {
    let method_name = top.q.and_then(Value::bytes).ok_or(Reject::MissingBody)?;
    if !top.a.is_some_and(Value::is_dict) {
        return Err(Reject::MissingBody);
    }
    let id = id20(
        a.id.and_then(Value::bytes).ok_or(Reject::BadId)?,
        Reject::BadId,
    )?;
    let port = match a.port {
        None => None,
        Some(p) => Some(
            p.int()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(Reject::BadPort)?,
        ),
    };
    let implied_port = match a.implied_port {
        None => false,
        Some(v) => v.int().ok_or(Reject::WrongType)? != 0,
    };
    Ok(Query {
        method: Method::from_name(method_name),
        method_name,
        id,
        info_hash: opt_id20(a.info_hash, Reject::BadInfoHash)?,
        target: opt_id20(a.target, Reject::WrongType)?,
        port,
        implied_port,
        token: bytes_of(a.token)?,
    })
}

fn parse_response<'a>(
    top: &Entries<'a>,
    r: &Entries<'a>,
    values: &mut Option<bdecode::List<'a>>,
) -> Result<Response<'a>, Reject> {
    if !top.r.is_some_and(Value::is_dict) {
        return Err(Reject::MissingBody);
    }
    let id = id20(
        r.id.and_then(Value::bytes).ok_or(Reject::BadId)?,
        Reject::BadId,
    )?;
    let count = match r.values {
        None => None,
        Some(v) => {
            let list = v.list().ok_or(Reject::WrongType)?;
            // Every element must be a string (libtorrent stops at the first that is not).
            let mut n = 0;
            for item in list.iter() {
                item.bytes().ok_or(Reject::WrongType)?;
                n += 1;
            }
            *values = Some(list);
            Some(n)
        }
    };
    Ok(Response {
        id,
        token: bytes_of(r.token)?,
        values: count,
        nodes: bytes_of(r.nodes)?.unwrap_or_default(),
        nodes6: bytes_of(r.nodes6)?.unwrap_or_default(),
    })
}

fn parse_error<'a>(top: &Entries<'a>) -> Result<KrpcError<'a>, Reject> {
    let mut items = top
        .e
        .and_then(Value::list)
        .ok_or(Reject::MissingBody)?
        .iter();
    // BEP 5: [code, message]; kept lenient, an error predicts nothing.
    Ok(KrpcError {
        code: items.next().and_then(Value::int),
        message: items.next().and_then(Value::bytes),
    })
}

impl<'a> Message<'a> {
    /// The raw strings of `r.values`, in order.
    pub fn values(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.values
            .into_iter()
            .flat_map(bdecode::List::iter)
            .filter_map(Value::bytes)
    }

    /// Calls `f` with each peer of `values`, reading at most `max`. Strings of 6 bytes are C4,
    /// 18 bytes C6 (BEP 32 hybrid lists); other lengths are counted malformed. When the list
    /// holds a single string and the datagram came over IPv4, the string is read as
    /// concatenated C4 entries (libtorrent `get_peers.cpp`: "assume it's mainline format"; the
    /// BitTorrentBlocker capture holds such an 18-byte string over IPv4).
    pub fn for_each_peer(
        &self,
        over_ipv4: bool,
        max: usize,
        mut f: impl FnMut(SocketAddr),
    ) -> EntryCounts {
        let mut n = EntryCounts::default();
        let Body::Response(Response {
            values: Some(count),
            ..
        }) = self.body
        else {
            return n;
        };
        if count == 1 && over_ipv4 {
            let s = self.values().next().unwrap_or_default();
            if s.is_empty() || !s.len().is_multiple_of(6) {
                n.malformed += 1;
                return n;
            }
            let total = s.len() / 6;
            n.capped = total.saturating_sub(max) as u64;
            for c in s.chunks_exact(6).take(max) {
                n.decoded += 1;
                f(compact_v4(c.try_into().unwrap_or(&[0; 6])));
            }
            return n;
        }
        n.capped = count.saturating_sub(max) as u64;
        for s in self.values().take(max) {
            if let Ok(c4) = <&[u8; 6]>::try_from(s) {
                f(compact_v4(c4));
            } else if let Ok(c6) = <&[u8; 18]>::try_from(s) {
                f(compact_v6(c6));
            } else {
                n.malformed += 1;
                continue;
            }
            n.decoded += 1;
        }
        n
    }

    /// Calls `f` with each node of `nodes` then `nodes6`, reading at most `max`; a remainder
    /// shorter than an entry is counted malformed and ignored (as libtorrent's
    /// `traversal_algorithm.cpp` `look_for_nodes` and Wireshark's `dissect_bt_dht_nodes` do).
    pub fn for_each_node(&self, max: usize, mut f: impl FnMut(SocketAddr)) -> EntryCounts {
        let mut n = EntryCounts::default();
        let Body::Response(r) = self.body else {
            return n;
        };
        for (list, stride) in [(r.nodes, N4), (r.nodes6, N6)] {
            if !list.len().is_multiple_of(stride) {
                n.malformed += 1;
            }
            let total = list.len() / stride;
            let decoded = usize::try_from(n.decoded).unwrap_or(usize::MAX);
            let take = total.min(max.saturating_sub(decoded));
            n.capped += (total - take) as u64;
            for e in list.chunks_exact(stride).take(take) {
                n.decoded += 1;
                let addr = &e[20..];
                f(match <&[u8; 6]>::try_from(addr) {
                    Ok(c4) => compact_v4(c4),
                    Err(_) => compact_v6(addr.try_into().unwrap_or(&[0; 18])),
                });
            }
        }
        n
    }
}

/// Cheap test before decoding: a bencoded dict (`d` then a key length) with a `y` key. Sorted
/// dicts open `d1:a`, `d1:e`, `d1:r` or `d2:ip` (BEP 42 responses: most responses in the
/// shared captures); unsorted ones may open with any key, so only the digit is required.
pub fn looks_like_krpc(head: &[u8]) -> bool {
    // Sorted dicts put `y` last, so the search usually runs over the whole datagram.
    static Y: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"1:y1:"));
    head.len() >= 12 && head[0] == b'd' && head[1].is_ascii_digit() && Y.find(head).is_some()
}

/// Transaction id, inline (`t` is opaque binary, usually 2–4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxId {
    len: u8,
    bytes: [u8; MAX_TID_LEN],
}

impl TxId {
    pub fn new(t: &[u8]) -> Option<Self> {
        let mut bytes = [0; MAX_TID_LEN];
        bytes.get_mut(..t.len())?.copy_from_slice(t);
        Some(Self {
            len: u8::try_from(t.len()).ok()?,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// Queries awaiting a response, at most.
    pub max_pending: usize,
    /// How long a query waits for its response (libtorrent gives up after seconds).
    pub pending_ttl: Duration,
    /// How long a query waits before a full table may drop it for a new one (fair shares:
    /// see `bt::bounded`). A DHT node answers within an RTT or two.
    pub answer_deadline: Duration,
    /// Predict from responses whose query was not seen (see the module docs).
    pub predict_unmatched: bool,
    /// Endpoints read per message.
    pub max_entries: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            max_pending: 65_536,
            pending_ttl: Duration::from_mins(1),
            answer_deadline: Duration::from_secs(10),
            predict_unmatched: true,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// Counters of the DHT channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DhtStats {
    pub counts: ChannelCounts,
    pub queries: u64,
    pub get_peers_queries: u64,
    pub announce_peer_queries: u64,
    pub responses: u64,
    pub errors: u64,
    /// Responses and errors that answered a pending query, and those that did not.
    pub matched: u64,
    pub unmatched: u64,
    /// Unmatched responses whose lists were not used (`predict_unmatched` off).
    pub unmatched_ignored: u64,
    /// Responses with a `values` key.
    pub values_responses: u64,
    pub values: EntryCounts,
    pub nodes: EntryCounts,
    /// Predictions made: `values` peers (TCP + uTP) and `nodes` contacts (UDP).
    pub predicted_peers: u64,
    pub predicted_nodes: u64,
    pub pending: TableStats,
}

type QueryKey = (SocketAddr, SocketAddr, TxId);

/// Matches KRPC responses to queries and turns responses into predictions.
#[derive(Debug)]
pub struct DhtTracker {
    config: DhtConfig,
    /// (querier, responder, t) → method.
    pending: Bounded<QueryKey, Method>,
    stats: DhtStats,
}

impl DhtTracker {
    pub fn new(config: DhtConfig) -> Self {
        Self {
            pending: Bounded::fair(
                config.max_pending,
                config.pending_ttl,
                Fairness {
                    deadline: config.answer_deadline,
                    // The querier: whose query it is, spoofed or not.
                    owner: |k: &QueryKey, _| k.0.ip(),
                    answered: |_| false,
                },
            ),
            config,
            stats: DhtStats::default(),
        }
    }

    pub fn stats(&self) -> DhtStats {
        let mut s = self.stats.clone();
        s.pending = self.pending.stats();
        s
    }

    pub fn expire(&mut self, now: Timestamp) {
        self.pending.expire(now);
    }

    /// One datagram that passed [`looks_like_krpc`].
    pub fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Vec<PredictedPeer>,
    ) {
        self.stats.counts.seen += 1;
        let result = if udp.is_complete() {
            self.on_message(ev, udp.head, out)
        } else {
            Err(Reject::Incomplete)
        };
        self.stats.counts.record(result.map_err(Reject::as_str));
    }

    fn on_message(
        &mut self,
        ev: &PacketEvent<'_>,
        payload: &[u8],
        out: &mut Vec<PredictedPeer>,
    ) -> Result<(), Reject> {
        let msg = parse(payload)?;
        let tid = TxId::new(msg.tid).ok_or(Reject::BadTid)?;
        let Some(answered) = self.match_transaction(ev, &msg.body, tid) else {
            return Ok(());
        };
        let Body::Response(r) = msg.body else {
            return Ok(());
        };
        if r.values.is_some() {
            self.stats.values_responses += 1;
        }
        if !answered && !self.config.predict_unmatched {
            self.stats.unmatched_ignored += 1;
            return Ok(());
        }
        let decoded = self.predict_values(ev, &msg, out);
        self.predict_nodes(ev, &msg, decoded, out);
        Ok(())
    }

    /// Counts the message and records a query as pending; for a response or an error, whether
    /// it answered a pending query (`None` for a query).
    fn match_transaction(
        &mut self,
        ev: &PacketEvent<'_>,
        body: &Body<'_>,
        tid: TxId,
    ) -> Option<bool> {
        let answered = match body {
            Body::Query(q) => {
                self.stats.queries += 1;
                match q.method {
                    Method::GetPeers => self.stats.get_peers_queries += 1,
                    Method::AnnouncePeer => self.stats.announce_peer_queries += 1,
                    _ => {}
                }
                self.pending.insert((ev.src, ev.dst, tid), q.method, ev.ts);
                return None;
            }
            Body::Response(_) => {
                self.stats.responses += 1;
                self.pending.answer(&(ev.dst, ev.src, tid), ev.ts).is_some()
            }
            Body::Error(_) => {
                self.stats.errors += 1;
                self.pending.answer(&(ev.dst, ev.src, tid), ev.ts).is_some()
            }
        };
        if answered {
            self.stats.matched += 1;
        } else {
            self.stats.unmatched += 1;
        }
        Some(answered)
    }

    /// `values` peers for the learner (the response's destination), over TCP and uTP.
    /// Returns how many entries were decoded (they count against the node budget).
    fn predict_values(
        &mut self,
        ev: &PacketEvent<'_>,
        msg: &Message<'_>,
        out: &mut Vec<PredictedPeer>,
    ) -> u64 {
        let learner = ev.dst.ip();
        let own = msg.external.map(|a| a.ip());
        let mut vc = EntryCounts::default();
        let start = out.len();
        let counts = msg.for_each_peer(ev.src.is_ipv4(), self.config.max_entries, |peer| {
            if let Some(why) = unfit(peer, learner, own) {
                return vc.count_unfit(why);
            }
            for transport in [PeerTransport::Tcp, PeerTransport::Udp] {
                out.push(PredictedPeer {
                    ts: ev.ts,
                    host: learner,
                    peer,
                    transport,
                    channel: Channel::Dht,
                });
            }
        });
        vc.add(&counts);
        self.stats.predicted_peers += (out.len() - start) as u64;
        self.stats.values.add(&vc);
        vc.decoded
    }

    /// `nodes`/`nodes6` contacts the learner will query over UDP, within what is left of
    /// [`DhtConfig::max_entries`] after `values_decoded`.
    fn predict_nodes(
        &mut self,
        ev: &PacketEvent<'_>,
        msg: &Message<'_>,
        values_decoded: u64,
        out: &mut Vec<PredictedPeer>,
    ) {
        let learner = ev.dst.ip();
        let own = msg.external.map(|a| a.ip());
        let decoded = usize::try_from(values_decoded).unwrap_or(usize::MAX);
        let budget = self.config.max_entries.saturating_sub(decoded);
        let mut nc = EntryCounts::default();
        let start = out.len();
        let counts = msg.for_each_node(budget, |node| match unfit(node, learner, own) {
            Some(why) => nc.count_unfit(why),
            None => out.push(PredictedPeer {
                ts: ev.ts,
                host: learner,
                peer: node,
                transport: PeerTransport::Udp,
                channel: Channel::DhtNodes,
            }),
        });
        nc.add(&counts);
        self.stats.predicted_nodes += (out.len() - start) as u64;
        self.stats.nodes.add(&nc);
    }
}

impl super::channel::Channel for DhtTracker {
    fn name(&self) -> &'static str {
        "dht"
    }

    fn claims(&self, _ev: &PacketEvent<'_>, udp: &UdpDatagram<'_>) -> bool {
        looks_like_krpc(udp.head)
    }

    /// Whatever it held, a KRPC message shows its sender to be a DHT node.
    fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Learnt<'_>,
    ) -> Sender {
        DhtTracker::on_udp(self, ev, udp, out.predictions);
        Sender::BitTorrent
    }

    fn expire(&mut self, now: Timestamp) {
        DhtTracker::expire(self, now);
    }

    fn drops(&self, f: &mut dyn FnMut(&'static str, &'static str, u64)) {
        for (list, e) in [("values", &self.stats.values), ("nodes", &self.stats.nodes)] {
            for (reason, n) in e.drops() {
                f(list, reason, n);
            }
        }
        for (reason, n) in self.pending.fair_stats().drops() {
            f("queries", reason, n);
        }
    }

    fn counts(&self, f: &mut dyn FnMut(&'static str, &ChannelCounts)) {
        f("dht", &self.stats.counts);
    }

    fn tables(&self, f: &mut dyn FnMut(&'static str, TableStats)) {
        f("dht_queries", self.pending.stats());
    }

    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).expect("counters serialize")
    }
}

#[cfg(test)]
mod tests;
