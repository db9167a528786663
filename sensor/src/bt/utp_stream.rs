//! uTP (BEP 29) byte streams for the peer wire: the ST_DATA payloads of each connection,
//! ordered by `seq_nr` per direction and handed on as [`StreamEvent`]s, as [`TcpStreams`]
//! does for TCP.
//!
//! libtorrent (qBittorrent, Deluge) and Transmission run the peer wire over uTP first, so the
//! ut_pex messages that explain many of their failed TCP attempts travel in uTP DATA packets.
//! Every UDP datagram's head is forwarded by the pre-filter; those with the uTP shape
//! ([`utp::looks_like_utp`]) come here as well as to the uTP channel (whose SYN predictions do
//! not depend on this module).
//!
//! **Connections** (BEP 29). The initiator A sends its ST_SYN with `connection_id` X (its
//! receive id) and every later packet with X+1; the responder B sends with X. A connection is
//! keyed by (A, B, X) ([`UtpKey`]); a packet from `src` with id `c` belongs to (src, dst, c−1)
//! (src initiated) or (dst, src, c) (src responded), and each connection remembers the id each
//! direction carries, which a packet must match. A SYN is only remembered (a small table of
//! its own, `utp_syns`): most SYNs of a BitTorrent client go to unconnectable peers and are
//! never answered, and a SYN flood must not churn the connection table. The connection opens
//! when the responder answers (its ST_STATE, whose `seq_nr` is the first it will send data
//! with, libtorrent and libutp alike) or the initiator sends data (its SYN's `seq_nr` + 1).
//!
//! **Mid-session** (no SYN seen: the sensor or the capture started late, or the SYN entry
//! was dropped). A DATA packet on no known connection opens one only if its payload opens
//! like the peer wire ([`StreamClass::of`], the TCP rule: a handshake or a BEP 10 extended
//! message); its sender is taken as the initiator (as for a TCP flow first seen mid-session)
//! and each direction starts at the first DATA seen there, flagged as a gap (bytes before it
//! were missed). The other side's id is then X−1 or X+1 of the id seen (we cannot tell who
//! initiated); the first reply fixes it. Payloads that open with no signature are counted
//! (`unclassified`) and dropped, so an encrypted stream costs a few byte comparisons per
//! packet.
//!
//! **Classification.** A connection opened by a SYN is classified by the first in-order
//! payload either side delivers, with the same rule: the peer wire is read, anything else
//! (MSE/PE ciphertext, another protocol) is marked `other` and its packets dropped cheaply
//! until it ends. A first payload that follows a gap (its own first packets were lost) does
//! not decide: the connection waits for a payload that classifies.
//!
//! **Ordering.** Each sequence number is one packet: a DATA packet's payload, or the ST_FIN
//! (which takes a number of its own: the direction ends when it is reached in order). Packets
//! ahead of the next expected number are held (at most [`UtpStreamConfig::max_pending`] per
//! direction and [`UtpStreamConfig::max_pending_bytes`] over all connections, for at most
//! [`UtpStreamConfig::reorder_wait`]); a hole that is not filled in time or for which there
//! is no room is declared lost, and the next chunk carries `gap` so the peer-wire parser
//! resynchronises. Packets behind it are duplicates (retransmissions) and dropped. A number
//! more than [`UtpStreamConfig::max_jump`] away either way is no retransmission or reordering
//! a real receiver accepts (libtorrent drops packets more than 512 ahead, libutp 1024): the
//! stream restarts there after a gap. A DATA packet cut by the snap length delivers its
//! captured bytes and leaves a gap for the rest; one whose extension chain the cut hid
//! delivers nothing and leaves a gap.
//!
//! **Ending.** ST_FIN reached in order ends its direction ([`StreamEvent::Ended`]), one each
//! way or ST_RESET ends the connection ([`StreamEvent::Closed`], after delivering what is
//! held). A connection idle for [`UtpStreamConfig::idle`], or evicted to make room, is closed
//! the same way (what it holds is delivered after a gap first). Any packet of a connection,
//! the other side's acks included, ends the waits that outlived the reorder wait. Events
//! are only produced for connections classified as peer wire.
//!
//! [`TcpStreams`]: super::stream::TcpStreams

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::stream::{Carrier, ConnKey, Dir, Lease, StreamChunk, StreamClass, StreamEvent};
use super::utp::{self, Reject, Type};
use super::{Bounded, FairStats, Fairness, TableStats};
use crate::event::UdpDatagram;
use crate::time::{Duration, Timestamp};

#[derive(Clone, Debug)]
pub struct UtpStreamConfig {
    /// Connections followed at once (admitted by fair shares when full: `bt::bounded`).
    pub max_conns: usize,
    /// A connection with no packet for this long is closed.
    pub idle: std::time::Duration,
    /// SYNs remembered at once, waiting for their answer (fair shares too).
    pub max_syns: usize,
    /// How long a SYN waits for the first packet of its connection.
    pub syn_wait: std::time::Duration,
    /// How long a SYN, or a connection picked up mid-session and heard from one side only,
    /// waits before a full table may drop it for a new one.
    pub answer_deadline: std::time::Duration,
    /// Out-of-order packets held per direction while waiting for a hole to fill.
    pub max_pending: usize,
    /// Payload bytes held out of order over all connections.
    pub max_pending_bytes: usize,
    /// How long a hole is waited for before its packets are declared lost.
    pub reorder_wait: std::time::Duration,
    /// A sequence number farther than this from the next expected one (either way) restarts
    /// the stream after a gap.
    pub max_jump: u16,
}

impl Default for UtpStreamConfig {
    fn default() -> Self {
        Self {
            max_conns: 16_384,
            idle: std::time::Duration::from_mins(10),
            max_syns: 16_384,
            syn_wait: std::time::Duration::from_mins(1),
            answer_deadline: std::time::Duration::from_secs(10),
            max_pending: 64,
            max_pending_bytes: 16 << 20,
            reorder_wait: std::time::Duration::from_secs(1),
            max_jump: 1024,
        }
    }
}

/// Counters of the uTP stream reader.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UtpStreamStats {
    pub conns: TableStats,
    pub syns_table: TableStats,
    /// What the connection and SYN tables' fair shares refused and evicted.
    pub conns_fair: FairStats,
    pub syns_fair: FairStats,
    /// Datagrams with the uTP shape offered.
    pub packets: u64,
    /// Of those, not plausible uTP packets ([`utp::parse`], [`utp::check_length`]).
    pub invalid: u64,
    /// SYNs remembered, and copies of a SYN already remembered or already connected.
    pub syns: u64,
    pub duplicate_syns: u64,
    /// Connections opened by the answer to a SYN, and opened mid-session (no SYN seen).
    pub opened: u64,
    pub mid_session: u64,
    /// Connections classified as peer wire, and as something else (their packets dropped).
    pub peer_wire: u64,
    pub other: u64,
    pub other_packets: u64,
    /// DATA payloads that could not be classified: on no connection and opening with no
    /// signature, or the first after a gap on a connection not yet classified.
    pub unclassified: u64,
    /// STATE, FIN and RESET packets of no followed connection.
    pub unmatched: u64,
    /// DATA packets on followed connections.
    pub data: u64,
    /// Payload bytes handed to the peer wire.
    pub delivered_bytes: u64,
    /// Packets that arrived ahead of a hole.
    pub out_of_order: u64,
    /// Packets already delivered (or declared lost): retransmissions, duplicates.
    pub duplicates: u64,
    /// Holes declared lost (waited too long, no room to hold, the connection ended), and
    /// mid-session starts.
    pub gaps: u64,
    /// Holes given up for lack of room (per direction or in all); also counted in `gaps`.
    pub overflows: u64,
    /// Sequence numbers more than `max_jump` away from the expected one.
    pub jumps: u64,
    /// DATA packets whose payload went past the snap length (their tail is a gap).
    pub truncated: u64,
    /// Payloads after bare DATA headers resumed at an extended message.
    pub resumed: u64,
    pub fins: u64,
    pub resets: u64,
    /// Connections that ended by FIN each way or RESET.
    pub closed: u64,
    /// Payload bytes held now.
    pub held_bytes: u64,
}

/// A uTP connection as BEP 29 identifies it: the initiator, the responder and the
/// initiator's receive id (the `connection_id` of its SYN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UtpKey {
    pub initiator: SocketAddr,
    pub responder: SocketAddr,
    pub id: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// No payload delivered yet (or only ones after a gap).
    Pending,
    PeerWire,
    /// Dropped: packets are counted, nothing is delivered.
    Other,
}

#[derive(Debug)]
struct Held {
    seq: u16,
    ts: Timestamp,
    /// The ST_FIN (no payload).
    fin: bool,
    /// The snap length cut the payload: `data` is its head.
    cut: bool,
    data: Vec<u8>,
    _lease: Lease,
}

#[derive(Debug, Default)]
struct Half {
    /// Sequence number of the next packet to deliver.
    next: Option<u16>,
    /// Packets before the next delivery were lost.
    gap: bool,
    /// The sender's FIN was reached.
    fin: bool,
    /// A DATA packet came as its bare header (the pre-filter withholds the payload of large
    /// packets past a connection's budget): the next payload resumes at its first BEP 10
    /// extended message, the only message worth finding there.
    headers_only: bool,
    held: Vec<Held>,
}

#[derive(Debug)]
struct Conn {
    /// As handed to the peer wire: client = initiator (the guessed one mid-session).
    key: ConnKey,
    /// The `connection_id` each direction's packets carry (index by [`Dir`]); `None` until
    /// the first packet of a connection picked up mid-session.
    ids: [Option<u16>; 2],
    mid_session: bool,
    class: Class,
    halves: [Half; 2],
}

impl Conn {
    fn new(key: UtpKey, ids: [Option<u16>; 2], mid_session: bool, class: Class) -> Self {
        Self {
            key: ConnKey {
                client: key.initiator,
                server: key.responder,
                transport: Carrier::Utp(key.id),
            },
            ids,
            mid_session,
            class,
            halves: Default::default(),
        }
    }

    /// Whether a packet travelling `dir` with `id` belongs here; a direction whose id is not
    /// known yet (mid-session) takes it.
    fn accepts(&mut self, dir: Dir, id: u16) -> bool {
        match self.ids[dir as usize] {
            Some(known) => known == id,
            None if self.mid_session => {
                self.ids[dir as usize] = Some(id);
                true
            }
            None => false,
        }
    }
}

/// One datagram as the reader needs it.
#[derive(Clone, Copy, Debug)]
struct Packet<'a> {
    kind: Type,
    id: u16,
    seq: u16,
    /// The captured payload (after the extension chain).
    payload: &'a [u8],
    /// The snap length cut the payload (or the chain: then `payload` is empty).
    cut: bool,
}

impl<'a> Packet<'a> {
    fn read(udp: &UdpDatagram<'a>) -> Option<Self> {
        let head = udp.head;
        let len = usize::from(udp.payload_len).max(head.len());
        match utp::parse(head) {
            Ok(h) => {
                utp::check_length(&h, len).ok()?;
                Some(Self {
                    kind: h.kind,
                    id: h.connection_id,
                    seq: h.seq_nr,
                    payload: head.get(h.payload_offset..).unwrap_or_default(),
                    cut: head.len() < len,
                })
            }
            // The snap length hid the end of the chain: the fixed header is still whole
            // (`looks_like_utp` asks for 20 bytes), so the packet's place in the stream is
            // known and its bytes are a gap.
            Err(Reject::ExtensionBeyondEnd) if head.len() < len => {
                let kind = Type::from_nibble(head.first()? >> 4)?;
                Some(Self {
                    kind,
                    id: super::wire::be16_at(head, 2)?,
                    seq: super::wire::be16_at(head, 16)?,
                    payload: &[],
                    cut: true,
                })
            }
            Err(_) => None,
        }
    }
}

/// A packet's content in its direction's sequence.
#[derive(Clone, Copy, Debug)]
enum Item<'a> {
    Data { data: &'a [u8], cut: bool },
    Fin,
}

impl Held {
    fn item(&self) -> Item<'_> {
        if self.fin {
            Item::Fin
        } else {
            Item::Data {
                data: &self.data,
                cut: self.cut,
            }
        }
    }
}

/// `a - b` in 16-bit sequence space.
fn seq_diff(a: u16, b: u16) -> i32 {
    i32::from(a.wrapping_sub(b).cast_signed())
}

/// Follows every uTP connection, bounded in connections, SYNs, held packets and bytes; see
/// the module docs.
#[derive(Debug)]
pub struct UtpStreams {
    config: UtpStreamConfig,
    conns: Bounded<UtpKey, Conn>,
    /// Remembered SYNs: their sequence number.
    syns: Bounded<UtpKey, u16>,
    held_bytes: Arc<AtomicUsize>,
    stats: UtpStreamStats,
}

impl UtpStreams {
    pub fn new(config: UtpStreamConfig) -> Self {
        Self {
            conns: Bounded::fair(
                config.max_conns,
                config.idle,
                Fairness {
                    deadline: config.answer_deadline,
                    owner: |k: &UtpKey, _| k.initiator.ip(),
                    // Opened by the answer to its SYN, or heard from both sides.
                    answered: |c: &Conn| !c.mid_session || c.ids.iter().all(Option::is_some),
                },
            ),
            syns: Bounded::fair(
                config.max_syns,
                config.syn_wait,
                Fairness {
                    deadline: config.answer_deadline,
                    owner: |k: &UtpKey, _| k.initiator.ip(),
                    answered: |_| false,
                },
            ),
            config,
            held_bytes: Arc::default(),
            stats: UtpStreamStats::default(),
        }
    }

    pub fn stats(&self) -> UtpStreamStats {
        UtpStreamStats {
            conns: self.conns.stats(),
            syns_table: self.syns.stats(),
            conns_fair: self.conns.fair_stats(),
            syns_fair: self.syns.fair_stats(),
            held_bytes: self.held_bytes.load(Relaxed) as u64,
            ..self.stats.clone()
        }
    }

    /// The line `sensor peers --stats` prints for the reader.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "utp streams: {} packets, {} connections opened after a SYN, {} mid-session, \
             {} peer wire, {} other ({} packets dropped), {} unclassified payloads, \
             {} bytes delivered, {} out of order, {} duplicates, {} gaps, \
             {} cut by the snap length",
            s.packets,
            s.opened,
            s.mid_session,
            s.peer_wire,
            s.other,
            s.other_packets,
            s.unclassified,
            s.delivered_bytes,
            s.out_of_order,
            s.duplicates,
            s.gaps,
            s.truncated
        )
    }

    /// The bounded tables: connections and SYNs waiting for their answer.
    pub fn tables(&self) -> [(&'static str, TableStats); 2] {
        [
            ("utp_streams", self.conns.stats()),
            ("utp_syns", self.syns.stats()),
        ]
    }

    /// Closes the connections idle for longer than [`UtpStreamConfig::idle`] (what they hold
    /// is delivered after a gap, then a peer-wire connection gets its `Closed`) and forgets
    /// stale SYNs.
    pub fn expire(&mut self, now: Timestamp, mut sink: impl FnMut(StreamEvent<'_>)) {
        self.syns.expire(now);
        while let Some((_, conn)) = self.conns.pop_expired(now) {
            self.drop_conn(conn, now, &mut sink);
        }
    }

    /// Reads one datagram that passed [`utp::looks_like_utp`]; events of peer-wire
    /// connections go to `sink`.
    pub fn on_datagram(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        ts: Timestamp,
        udp: &UdpDatagram<'_>,
        mut sink: impl FnMut(StreamEvent<'_>),
    ) {
        self.stats.packets += 1;
        self.expire(ts, &mut sink);
        let Some(p) = Packet::read(udp) else {
            self.stats.invalid += 1;
            return;
        };
        if p.kind == Type::Syn {
            self.on_syn(src, dst, ts, &p);
            return;
        }
        let Some((key, dir, conn)) = self.find(src, dst, ts, &p) else {
            if p.kind == Type::Data {
                self.mid_session(src, dst, ts, &p, &mut sink);
            } else {
                self.stats.unmatched += 1;
            }
            return;
        };
        self.on_packet(key, conn, dir, ts, &p, &mut sink);
    }

    fn on_syn(&mut self, src: SocketAddr, dst: SocketAddr, ts: Timestamp, p: &Packet<'_>) {
        let key = UtpKey {
            initiator: src,
            responder: dst,
            id: p.id,
        };
        if self.conns.get_mut(&key, ts).is_some() || self.syns.get_mut(&key, ts).is_some() {
            // A resent SYN keeps its first copy's sequence number (they are the same).
            self.stats.duplicate_syns += 1;
            return;
        }
        self.stats.syns += 1;
        self.syns.insert(key, p.seq, ts);
    }

    /// The followed connection of a non-SYN packet, taken out of the table (put back by
    /// [`UtpStreams::on_packet`]), with the direction it travels: a known connection, or one
    /// opened now by the answer to a remembered SYN.
    fn find(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        ts: Timestamp,
        p: &Packet<'_>,
    ) -> Option<(UtpKey, Dir, Conn)> {
        let key = |initiator, responder, id| UtpKey {
            initiator,
            responder,
            id,
        };
        let id = p.id;
        // `src` initiated (sends X+1), `src` responded (sends X), and a connection picked up
        // mid-session whose initiator was guessed wrong (the other side then sends X+2 of
        // the key's X).
        let candidates = [
            (key(src, dst, id.wrapping_sub(1)), Dir::ToServer),
            (key(dst, src, id), Dir::ToClient),
            (key(dst, src, id.wrapping_sub(2)), Dir::ToClient),
        ];
        for (k, dir) in candidates {
            if self
                .conns
                .get_mut(&k, ts)
                .is_some_and(|c| c.accepts(dir, id))
            {
                return self.conns.take(&k, ts).map(|c| (k, dir, c));
            }
        }
        if p.kind == Type::Reset {
            // A RESET may echo the id of the packet it answers instead of the sender's own.
            for (k, dir) in [
                (key(src, dst, id), Dir::ToServer),
                (key(dst, src, id.wrapping_sub(1)), Dir::ToClient),
            ] {
                if let Some(c) = self.conns.take(&k, ts) {
                    return Some((k, dir, c));
                }
            }
        }
        // The answer to a remembered SYN: the responder's first packet (its STATE, id X) or
        // the initiator's (DATA, id X+1) opens the connection.
        for (k, dir) in [
            (key(src, dst, id.wrapping_sub(1)), Dir::ToServer),
            (key(dst, src, id), Dir::ToClient),
        ] {
            if let Some(syn_seq) = self.syns.answer(&k, ts) {
                self.stats.opened += 1;
                let mut conn = Conn::new(
                    k,
                    [Some(k.id.wrapping_add(1)), Some(k.id)],
                    false,
                    Class::Pending,
                );
                conn.halves[Dir::ToServer as usize].next = Some(syn_seq.wrapping_add(1));
                return Some((k, dir, conn));
            }
        }
        None
    }

    /// A DATA packet on no followed connection: opens one if its payload opens like the
    /// peer wire.
    fn mid_session(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        ts: Timestamp,
        p: &Packet<'_>,
        sink: &mut impl FnMut(StreamEvent<'_>),
    ) {
        if StreamClass::of(p.payload) != Some(StreamClass::PeerWire) {
            self.stats.unclassified += 1;
            return;
        }
        self.stats.mid_session += 1;
        self.stats.peer_wire += 1;
        let key = UtpKey {
            initiator: src,
            responder: dst,
            id: p.id.wrapping_sub(1),
        };
        let conn = Conn::new(key, [Some(p.id), None], true, Class::PeerWire);
        self.on_packet(key, conn, Dir::ToServer, ts, p, sink);
    }

    /// Reads a non-SYN packet of `conn`, then puts the connection back unless it ended.
    fn on_packet(
        &mut self,
        key: UtpKey,
        mut conn: Conn,
        dir: Dir,
        ts: Timestamp,
        p: &Packet<'_>,
        sink: &mut impl FnMut(StreamEvent<'_>),
    ) {
        match p.kind {
            Type::Syn => {}
            Type::State => {
                // The responder's answer to the SYN: its data starts at this number.
                let half = &mut conn.halves[dir as usize];
                if !conn.mid_session && dir == Dir::ToClient && half.next.is_none() {
                    half.next = Some(p.seq);
                }
            }
            Type::Data => {
                self.stats.data += 1;
                if conn.class == Class::Other {
                    self.stats.other_packets += 1;
                } else {
                    let item = Item::Data {
                        data: p.payload,
                        cut: p.cut,
                    };
                    self.accept(&mut conn, dir, ts, p.seq, item, sink);
                }
            }
            Type::Fin => {
                self.stats.fins += 1;
                if conn.class == Class::Other {
                    conn.halves[dir as usize].fin = true;
                } else {
                    self.accept(&mut conn, dir, ts, p.seq, Item::Fin, sink);
                }
            }
            Type::Reset => {
                self.stats.resets += 1;
                self.close(conn, ts, sink);
                return;
            }
        }
        // Any packet of the connection (the other side's acks too) ends a wait that has
        // lasted too long.
        for d in [Dir::ToServer, Dir::ToClient] {
            self.flush_stale(&mut conn, d, ts, sink);
        }
        if conn.halves.iter().all(|h| h.fin) {
            self.close(conn, ts, sink);
            return;
        }
        if let Some((_, evicted)) = self.conns.make_room(&key, &conn, ts) {
            self.drop_conn(evicted, ts, sink);
        }
        if let Err(refused) = self.conns.try_insert(key, conn, ts) {
            self.drop_conn(refused, ts, sink);
        }
    }

    /// Delivers what `conn` holds, then closes it.
    fn close(&mut self, conn: Conn, ts: Timestamp, sink: &mut impl FnMut(StreamEvent<'_>)) {
        self.stats.closed += 1;
        self.drop_conn(conn, ts, sink);
    }

    fn drop_conn(&mut self, mut conn: Conn, ts: Timestamp, sink: &mut impl FnMut(StreamEvent<'_>)) {
        for dir in [Dir::ToServer, Dir::ToClient] {
            self.flush(&mut conn, dir, ts, usize::MAX, sink);
        }
        if conn.class == Class::PeerWire {
            sink(StreamEvent::Closed { conn: conn.key, ts });
        }
    }

    /// Places one packet of `dir` in its sequence: delivered, held, or dropped.
    fn accept(
        &mut self,
        conn: &mut Conn,
        dir: Dir,
        ts: Timestamp,
        seq: u16,
        item: Item<'_>,
        sink: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let d = dir as usize;
        if conn.halves[d].fin {
            // Nothing follows a FIN: a late copy, or a sender that broke the protocol.
            self.stats.duplicates += 1;
            return;
        }
        if conn.halves[d].next.is_none() {
            // The direction's first packet: mid-session, bytes before it were missed.
            let half = &mut conn.halves[d];
            half.next = Some(seq);
            half.gap = conn.mid_session;
            self.stats.gaps += u64::from(conn.mid_session);
        }
        let mut counted = false;
        loop {
            let half = &mut conn.halves[d];
            let Some(next) = half.next else { return };
            let ahead = seq_diff(seq, next);
            if ahead.unsigned_abs() > u32::from(self.config.max_jump) {
                // No real receiver would take this packet where we stand: restart here.
                self.stats.jumps += 1;
                self.flush(conn, dir, ts, usize::MAX, sink);
                let half = &mut conn.halves[d];
                half.next = Some(seq);
                half.gap = true;
                self.stats.gaps += 1;
                continue;
            }
            if ahead < 0 || half.held.iter().any(|h| h.seq == seq) {
                self.stats.duplicates += 1;
                return;
            }
            if ahead == 0 {
                self.deliver(conn, dir, ts, seq, item, sink);
                self.drain(conn, dir, ts, sink);
                break;
            }
            if !counted {
                counted = true;
                self.stats.out_of_order += 1;
            }
            let (data, cut, fin) = match item {
                Item::Data { data, cut } => (data, cut, false),
                Item::Fin => (&[][..], false, true),
            };
            if half.held.len() < self.config.max_pending
                && self.held_bytes.load(Relaxed) + data.len() <= self.config.max_pending_bytes
            {
                half.held.push(Held {
                    seq,
                    ts,
                    fin,
                    cut,
                    data: data.to_vec(),
                    _lease: Lease::take(&self.held_bytes, data.len()),
                });
                break;
            }
            // No room: the first hole is lost. If this packet is the lowest, it is
            // delivered after the gap; otherwise the lowest held run is, and we try again.
            self.stats.overflows += 1;
            let lowest_held = half.held.iter().map(|h| seq_diff(h.seq, next)).min();
            if lowest_held.is_some_and(|l| l < ahead) {
                self.flush(conn, dir, ts, 1, sink);
            } else {
                let half = &mut conn.halves[d];
                half.next = Some(seq);
                half.gap = true;
                self.stats.gaps += 1;
            }
        }
    }

    /// Declares lost the holes before packets held for longer than the reorder wait.
    fn flush_stale(
        &mut self,
        conn: &mut Conn,
        dir: Dir,
        ts: Timestamp,
        sink: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let wait = Duration::from(self.config.reorder_wait);
        while conn.halves[dir as usize]
            .held
            .iter()
            .any(|h| ts.saturating_since(h.ts) > wait)
        {
            self.flush(conn, dir, ts, 1, sink);
        }
    }

    /// Delivers held packets that are now in sequence; drops those now behind it.
    fn drain(
        &mut self,
        conn: &mut Conn,
        dir: Dir,
        ts: Timestamp,
        sink: &mut impl FnMut(StreamEvent<'_>),
    ) {
        loop {
            let half = &mut conn.halves[dir as usize];
            let Some(next) = half.next else { return };
            let before = half.held.len();
            half.held.retain(|h| seq_diff(h.seq, next) >= 0);
            self.stats.duplicates += (before - half.held.len()) as u64;
            let Some(i) = half.held.iter().position(|h| h.seq == next) else {
                return;
            };
            let h = half.held.swap_remove(i);
            self.deliver(conn, dir, ts, h.seq, h.item(), sink);
        }
    }

    /// Declares the first hole(s) lost: delivers up to `holes` runs of held packets, lowest
    /// sequence first, each after a gap.
    fn flush(
        &mut self,
        conn: &mut Conn,
        dir: Dir,
        ts: Timestamp,
        mut holes: usize,
        sink: &mut impl FnMut(StreamEvent<'_>),
    ) {
        while holes > 0 {
            let half = &mut conn.halves[dir as usize];
            let Some(next) = half.next else { return };
            let Some((i, _)) = half
                .held
                .iter()
                .enumerate()
                .min_by_key(|(_, h)| seq_diff(h.seq, next))
            else {
                return;
            };
            let h = half.held.swap_remove(i);
            half.gap = true;
            self.stats.gaps += 1;
            self.deliver(conn, dir, ts, h.seq, h.item(), sink);
            self.drain(conn, dir, ts, sink);
            holes -= 1;
        }
    }

    /// Hands the packet at the head of `dir`'s sequence on: classifies the connection on its
    /// first payload, delivers the payload of a peer-wire connection, ends the direction at
    /// its FIN.
    fn deliver(
        &mut self,
        conn: &mut Conn,
        dir: Dir,
        ts: Timestamp,
        seq: u16,
        item: Item<'_>,
        sink: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let d = dir as usize;
        conn.halves[d].next = Some(seq.wrapping_add(1));
        let (data, cut) = match item {
            Item::Fin => {
                conn.halves[d].fin = true;
                if conn.class == Class::PeerWire {
                    sink(StreamEvent::Ended {
                        conn: conn.key,
                        dir,
                        ts,
                    });
                }
                return;
            }
            Item::Data { data, cut } => (data, cut),
        };
        if !data.is_empty() && conn.class == Class::Pending {
            if StreamClass::of(data) == Some(StreamClass::PeerWire) {
                conn.class = Class::PeerWire;
                self.stats.peer_wire += 1;
            } else if conn.halves[d].gap {
                // Not the start of the stream: keep waiting for one that classifies.
                self.stats.unclassified += 1;
            } else {
                // The stream's first bytes, and not the peer wire: drop the connection's
                // packets from now on.
                conn.class = Class::Other;
                self.stats.other += 1;
                for h in &mut conn.halves {
                    h.held.clear();
                }
            }
        }
        let half = &mut conn.halves[d];
        let mut data = data;
        if !data.is_empty() && std::mem::take(&mut half.headers_only) && half.gap {
            // Bytes were withheld before this payload: it may open inside a piece, where the
            // peer wire cannot find a message start. Resume at the first extended message
            // (ut_pex after a piece's tail, as libtorrent packs them); nine fixed bytes, so
            // piece data matches about once in 2^50.
            let at = data
                .windows(sensor_ebpf::EXTENDED_SHAPE)
                .position(|w| w.try_into().is_ok_and(sensor_ebpf::extended_message_shape));
            if let Some(at) = at {
                self.stats.resumed += 1;
                data = &data[at..];
            }
        }
        if !data.is_empty() && conn.class == Class::PeerWire {
            let gap = std::mem::take(&mut half.gap);
            self.stats.delivered_bytes += data.len() as u64;
            sink(StreamEvent::Chunk(StreamChunk {
                ts,
                conn: conn.key,
                dir,
                gap,
                data,
            }));
        }
        if cut {
            self.stats.truncated += 1;
            conn.halves[d].gap = true;
            conn.halves[d].headers_only |= data.is_empty();
        }
    }
}

#[cfg(test)]
mod tests;
