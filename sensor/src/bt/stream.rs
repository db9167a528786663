//! Reassembled TCP byte streams for the channels carried over TCP (HTTP tracker, peer wire).
//!
//! The pre-filter forwards the payload of flows it marked (a `GET` carrying `info_hash=`, a
//! `0x13 "BitTorrent protocol"` handshake). This module orders each direction's segments by
//! sequence number and hands the channels in-order [`StreamChunk`]s; whatever it could not
//! deliver (never captured, cut by the snap length, waited for too long) is announced with
//! `gap` so a parser resynchronises instead of misreading.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::time::{Duration, Timestamp};

/// One connection, by its initiator (`client`, the side that sent the SYN or, for a flow
/// first seen mid-session, the side whose payload marked it), its responder (`server`) and
/// what carries it: a TCP connection and a uTP connection between the same two address:port
/// pairs are different connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub transport: Carrier,
}

/// What carries a connection's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Carrier {
    /// TCP, rebuilt by [`TcpStreams`].
    #[default]
    Tcp,
    /// uTP (BEP 29) over UDP, rebuilt by [`super::utp_stream::UtpStreams`], with the
    /// initiator's receive `connection_id` (the id of its SYN): two uTP connections between
    /// the same endpoints differ in it.
    Utp(u16),
}

/// Which way bytes travel on a [`ConnKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    ToServer,
    ToClient,
}

impl Dir {
    #[must_use]
    pub fn reverse(self) -> Self {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

impl ConnKey {
    /// A TCP connection.
    pub fn tcp(client: SocketAddr, server: SocketAddr) -> Self {
        Self {
            client,
            server,
            transport: Carrier::Tcp,
        }
    }

    /// (sender, receiver) of bytes travelling `dir`.
    pub fn endpoints(&self, dir: Dir) -> (SocketAddr, SocketAddr) {
        match dir {
            Dir::ToServer => (self.client, self.server),
            Dir::ToClient => (self.server, self.client),
        }
    }
}

/// In-order bytes of one direction of a connection.
#[derive(Clone, Copy, Debug)]
pub struct StreamChunk<'a> {
    /// Capture time of the segment that completed this chunk.
    pub ts: Timestamp,
    pub conn: ConnKey,
    pub dir: Dir,
    /// Bytes of this direction were lost before `data`: the parser must drop any partial
    /// message and resynchronise.
    pub gap: bool,
    pub data: &'a [u8],
}

/// What a stream carries, from the payload that opened it (the same signatures the
/// pre-filter marks flows on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamClass {
    HttpTracker,
    PeerWire,
}

impl StreamClass {
    /// The class whose signature `head` opens with: a `GET ` request (the pre-filter also
    /// required `info_hash=`; the HTTP parser checks the request itself), the 68-byte
    /// handshake, of which only the part present must match, or a BEP 10 extended message
    /// (a connection first seen mid-session).
    pub fn of(head: &[u8]) -> Option<Self> {
        const HANDSHAKE: &[u8] = b"\x13BitTorrent protocol";
        let extended = |h: &[u8]| {
            h.first_chunk::<{ sensor_ebpf::EXTENDED_SHAPE }>()
                .is_some_and(sensor_ebpf::extended_message_shape)
        };
        if head.starts_with(b"GET ") {
            Some(StreamClass::HttpTracker)
        } else if (head.len() >= 4 && HANDSHAKE.starts_with(&head[..head.len().min(20)]))
            || extended(head)
        {
            Some(StreamClass::PeerWire)
        } else {
            None
        }
    }
}

/// What the reassembler hands the channels.
#[derive(Clone, Copy, Debug)]
pub enum StreamEvent<'a> {
    Chunk(StreamChunk<'a>),
    /// `dir` sent its FIN: no more bytes will come that way (the other may still send).
    /// Completes a read-until-close HTTP body when the server's side ends.
    Ended {
        conn: ConnKey,
        dir: Dir,
        ts: Timestamp,
    },
    /// The connection ended (RST, or a FIN each way): its state can go.
    Closed {
        conn: ConnKey,
        ts: Timestamp,
    },
}

#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Connections followed at once (admitted by fair shares when full: `bt::bounded`).
    pub max_conns: usize,
    /// A connection with no forwarded segment for this long is forgotten.
    pub idle: std::time::Duration,
    /// How long a connection whose server never sent a byte waits before a full table may
    /// drop it for a new one.
    pub answer_deadline: std::time::Duration,
    /// Out-of-order segments held per direction while waiting for a hole to fill.
    pub max_pending: usize,
    /// Bytes held out of order over all connections.
    pub max_pending_bytes: usize,
    /// How long a hole is waited for before its bytes are declared lost.
    pub reorder_wait: std::time::Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_conns: 16_384,
            idle: std::time::Duration::from_mins(10),
            answer_deadline: std::time::Duration::from_secs(15),
            max_pending: 16,
            max_pending_bytes: 16 << 20,
            reorder_wait: std::time::Duration::from_secs(1),
        }
    }
}

/// Counters of the reassembler.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    pub conns: super::TableStats,
    /// What the connection table's fair shares refused and evicted.
    pub fair: super::FairStats,
    /// Payload segments offered.
    pub segments: u64,
    /// Bytes handed to the channels.
    pub delivered_bytes: u64,
    /// Segments that arrived ahead of a hole and were held.
    pub out_of_order: u64,
    /// Segments (or their parts) already delivered: retransmissions, duplicates.
    pub retransmitted: u64,
    /// Holes declared lost (waited too long, too much held, or the connection ended).
    pub gaps: u64,
    /// Segments whose payload went past the snap length (their tail is a gap).
    pub truncated: u64,
    /// Payloads on no followed connection that open with no known signature: a connection
    /// whose state was dropped, or a mark the kernel kept longer than userspace.
    pub unclassified: u64,
    /// Connections that ended: RST, or a FIN each way.
    pub closed: u64,
}

#[derive(Debug)]
struct Held {
    seq: u32,
    ts: Timestamp,
    payload_len: u32,
    data: Vec<u8>,
    /// Returns the bytes to the global budget however the segment goes: delivered, or
    /// dropped with its connection (evicted, expired, closed).
    _lease: Lease,
}

/// A share of the global held-bytes budget, given back on drop.
#[derive(Debug)]
pub(super) struct Lease {
    bytes: usize,
    pool: Arc<AtomicUsize>,
}

impl Lease {
    /// Takes `bytes` from `pool`.
    pub(super) fn take(pool: &Arc<AtomicUsize>, bytes: usize) -> Self {
        pool.fetch_add(bytes, Relaxed);
        Self {
            bytes,
            pool: Arc::clone(pool),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.bytes, Relaxed);
    }
}

#[derive(Debug, Default)]
struct Half {
    /// Sequence number of the next byte to deliver.
    next: Option<u32>,
    /// Bytes before the next delivery were lost.
    gap: bool,
    /// The sender's FIN was seen.
    fin: bool,
    held: Vec<Held>,
}

#[derive(Debug)]
struct Conn {
    key: ConnKey,
    class: StreamClass,
    halves: [Half; 2],
}

/// Orders each direction's forwarded segments and delivers them in sequence, bounded in
/// connections, held segments and bytes.
#[derive(Debug)]
pub struct TcpStreams {
    config: StreamConfig,
    conns: super::Bounded<(SocketAddr, SocketAddr), Conn>,
    held_bytes: Arc<AtomicUsize>,
    stats: StreamStats,
}

fn canonical(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// `a - b` in sequence space.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b).cast_signed())
}

impl TcpStreams {
    pub fn new(config: StreamConfig) -> Self {
        Self {
            conns: super::Bounded::fair(
                config.max_conns,
                config.idle,
                super::Fairness {
                    deadline: config.answer_deadline,
                    // The client sent the first bytes; the server's are its answer.
                    owner: |_, c: &Conn| c.key.client.ip(),
                    answered: |c: &Conn| c.halves[Dir::ToClient as usize].next.is_some(),
                },
            ),
            config,
            held_bytes: Arc::default(),
            stats: StreamStats::default(),
        }
    }

    pub fn stats(&self) -> StreamStats {
        StreamStats {
            conns: self.conns.stats(),
            fair: self.conns.fair_stats(),
            ..self.stats.clone()
        }
    }

    /// The line `sensor peers --stats` prints for the reassembler.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "tcp streams: {} segments, {} bytes delivered, {} out of order, {} retransmitted, \
             {} gaps, {} cut by the snap length, {} unclassified",
            s.segments,
            s.delivered_bytes,
            s.out_of_order,
            s.retransmitted,
            s.gaps,
            s.truncated,
            s.unclassified
        )
    }

    pub fn expire(&mut self, now: Timestamp) {
        self.conns.expire(now);
    }

    /// Feeds one forwarded TCP segment (data, or FIN/RST ending a followed connection).
    pub fn on_segment(
        &mut self,
        ev: &crate::event::PacketEvent<'_>,
        seg: &crate::event::TcpSegment<'_>,
        mut sink: impl FnMut(StreamClass, StreamEvent<'_>),
    ) {
        let ck = canonical(ev.src, ev.dst);
        let mut conn = if let Some(c) = self.conns.take(&ck, ev.ts) {
            c
        } else {
            if seg.head.is_empty() {
                return;
            }
            let Some(class) = StreamClass::of(seg.head) else {
                self.stats.unclassified += 1;
                return;
            };
            Conn {
                key: ConnKey::tcp(ev.src, ev.dst),
                class,
                halves: Default::default(),
            }
        };
        let dir = if ev.src == conn.key.client {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        if seg.payload_len > 0 {
            self.stats.segments += 1;
            self.accept(&mut conn, dir, ev.ts, seg, &mut sink);
        }
        // As the pre-filter: a FIN ends its sender's direction, RST or a FIN each way the
        // connection (the other side may still send after a FIN: PEX, an HTTP/1.0 body).
        if seg.flags.fin() && !seg.flags.rst() {
            self.flush(&mut conn, dir, ev.ts, usize::MAX, &mut sink);
            conn.halves[dir as usize].fin = true;
            sink(
                conn.class,
                StreamEvent::Ended {
                    conn: conn.key,
                    dir,
                    ts: ev.ts,
                },
            );
        }
        if seg.flags.rst() || conn.halves.iter().all(|h| h.fin) {
            for d in [Dir::ToServer, Dir::ToClient] {
                self.flush(&mut conn, d, ev.ts, usize::MAX, &mut sink);
            }
            self.stats.closed += 1;
            sink(
                conn.class,
                StreamEvent::Closed {
                    conn: conn.key,
                    ts: ev.ts,
                },
            );
            return;
        }
        self.conns.insert(ck, conn, ev.ts);
    }

    fn accept(
        &mut self,
        conn: &mut Conn,
        dir: Dir,
        ts: Timestamp,
        seg: &crate::event::TcpSegment<'_>,
        sink: &mut impl FnMut(StreamClass, StreamEvent<'_>),
    ) {
        let half = &mut conn.halves[dir as usize];
        let next = *half.next.get_or_insert(seg.seq);
        let ahead = seq_diff(seg.seq, next);
        if ahead > 0 {
            // A hole before this segment: hold it, unless the budget says the hole is lost.
            self.stats.out_of_order += 1;
            if half.held.len() < self.config.max_pending
                && self.held_bytes.load(Relaxed) + seg.head.len() <= self.config.max_pending_bytes
            {
                self.held_bytes.fetch_add(seg.head.len(), Relaxed);
                half.held.push(Held {
                    seq: seg.seq,
                    ts,
                    payload_len: u32::from(seg.payload_len),
                    data: seg.head.to_vec(),
                    _lease: Lease {
                        bytes: seg.head.len(),
                        pool: self.held_bytes.clone(),
                    },
                });
            } else {
                // Give up on the hole: deliver what is held, then this segment.
                self.flush(conn, dir, ts, usize::MAX, sink);
                let half = &mut conn.halves[dir as usize];
                if half.next != Some(seg.seq) {
                    half.gap = true;
                    half.next = Some(seg.seq);
                    self.stats.gaps += 1;
                }
                deliver(conn, dir, ts, Piece::of(seg), &mut self.stats, sink);
            }
        } else {
            deliver(conn, dir, ts, Piece::of(seg), &mut self.stats, sink);
        }
        self.drain(conn, dir, ts, sink);
        // A hole older than the reorder wait is lost.
        let wait = Duration::from(self.config.reorder_wait);
        while conn.halves[dir as usize]
            .held
            .iter()
            .any(|h| ts.saturating_since(h.ts) > wait)
        {
            self.flush(conn, dir, ts, 1, sink);
        }
    }

    /// Delivers held segments that are now in sequence.
    fn drain(
        &mut self,
        conn: &mut Conn,
        dir: Dir,
        ts: Timestamp,
        sink: &mut impl FnMut(StreamClass, StreamEvent<'_>),
    ) {
        loop {
            let half = &mut conn.halves[dir as usize];
            let Some(next) = half.next else { return };
            let Some(i) = half.held.iter().position(|h| seq_diff(h.seq, next) <= 0) else {
                return;
            };
            let h = half.held.swap_remove(i);
            deliver(conn, dir, ts, h.piece(), &mut self.stats, sink);
        }
    }

    /// Declares the first hole(s) lost: delivers up to `holes` runs of held segments, lowest
    /// sequence first, each after a gap.
    fn flush(
        &mut self,
        conn: &mut Conn,
        dir: Dir,
        ts: Timestamp,
        mut holes: usize,
        sink: &mut impl FnMut(StreamClass, StreamEvent<'_>),
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
            half.next = Some(h.seq);
            self.stats.gaps += 1;
            deliver(conn, dir, ts, h.piece(), &mut self.stats, sink);
            self.drain(conn, dir, ts, sink);
            holes -= 1;
        }
    }
}

/// A segment's bytes as far as delivery needs them.
#[derive(Clone, Copy, Debug)]
struct Piece<'a> {
    seq: u32,
    /// The payload's length on the wire (`head` may be shorter: the snap length cut it).
    payload_len: u32,
    head: &'a [u8],
}

impl<'a> Piece<'a> {
    fn of(seg: &crate::event::TcpSegment<'a>) -> Self {
        Self {
            seq: seg.seq,
            payload_len: u32::from(seg.payload_len),
            head: seg.head,
        }
    }
}

impl Held {
    fn piece(&self) -> Piece<'_> {
        Piece {
            seq: self.seq,
            payload_len: self.payload_len,
            head: &self.data,
        }
    }
}

/// Hands the part of a segment past the delivered sequence to the channel.
fn deliver(
    conn: &mut Conn,
    dir: Dir,
    ts: Timestamp,
    piece: Piece<'_>,
    stats: &mut StreamStats,
    sink: &mut impl FnMut(StreamClass, StreamEvent<'_>),
) {
    let Piece {
        seq,
        payload_len,
        head,
    } = piece;
    let half = &mut conn.halves[dir as usize];
    let next = half.next.unwrap_or(seq);
    // Bytes of this segment already delivered (or declared lost).
    let behind = u64::try_from(-seq_diff(seq, next)).unwrap_or(0);
    if behind >= u64::from(payload_len) {
        stats.retransmitted += 1;
        return;
    }
    if behind > 0 {
        stats.retransmitted += 1;
    }
    let end = seq.wrapping_add(payload_len);
    half.next = Some(end);
    // `behind < payload_len`, a u32.
    let fresh = head
        .get(usize::try_from(behind).unwrap_or(usize::MAX)..)
        .unwrap_or(&[]);
    if !fresh.is_empty() {
        let gap = std::mem::take(&mut half.gap);
        stats.delivered_bytes += fresh.len() as u64;
        sink(
            conn.class,
            StreamEvent::Chunk(StreamChunk {
                ts,
                conn: conn.key,
                dir,
                gap,
                data: fresh,
            }),
        );
    }
    if (head.len() as u64) < u64::from(payload_len) {
        // The snap length cut the segment: its tail is lost.
        stats.truncated += 1;
        conn.halves[dir as usize].gap = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PacketEvent, TcpFlags, TcpSegment, Transport};
    use sensor_ebpf::tcp_flag::{ACK, FIN, PSH, RST};

    const CLIENT: &str = "10.0.0.201:49842";
    const SERVER: &str = "91.189.95.21:6969";

    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Chunk(Dir, bool, Vec<u8>),
        Ended(Dir),
        Closed,
    }

    struct Run {
        streams: TcpStreams,
        got: Vec<Got>,
    }

    impl Run {
        fn new(config: StreamConfig) -> Self {
            Self {
                streams: TcpStreams::new(config),
                got: Vec::new(),
            }
        }

        /// A segment at `ms` milliseconds; `len` is the true payload length (≥ head).
        fn seg(&mut self, ms: u64, to_server: bool, seq: u32, flags: u8, head: &[u8], len: usize) {
            let (src, dst) = if to_server {
                (CLIENT, SERVER)
            } else {
                (SERVER, CLIENT)
            };
            let seg = TcpSegment {
                flags: TcpFlags(flags | ACK),
                seq,
                ack: 1,
                window: 1000,
                payload_len: u16::try_from(len).unwrap(),
                head,
            };
            let ev = PacketEvent {
                ts: Timestamp::from_micros(ms * 1000),
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                vlan_depth: 0,
                transport: Transport::Tcp(seg),
            };
            let got = &mut self.got;
            self.streams.on_segment(&ev, &seg, |class, e| {
                assert_eq!(class, StreamClass::HttpTracker);
                got.push(match e {
                    StreamEvent::Chunk(c) => {
                        assert_eq!(c.conn.client, CLIENT.parse().unwrap());
                        Got::Chunk(c.dir, c.gap, c.data.to_vec())
                    }
                    StreamEvent::Ended { dir, .. } => Got::Ended(dir),
                    StreamEvent::Closed { .. } => Got::Closed,
                });
            });
        }

        fn data(&mut self, ms: u64, to_server: bool, seq: u32, bytes: &[u8]) {
            self.seg(ms, to_server, seq, PSH, bytes, bytes.len());
        }
    }

    fn chunk(dir: Dir, gap: bool, b: &[u8]) -> Got {
        Got::Chunk(dir, gap, b.to_vec())
    }

    #[test]
    fn in_order_both_directions_and_retransmissions_dropped() {
        let mut r = Run::new(StreamConfig::default());
        r.data(0, true, 100, b"GET /announce?info_hash=x ");
        r.data(1, false, 5000, b"HTTP/1.0 200 OK\r\n");
        r.data(2, true, 100, b"GET /announce?info_hash=x "); // retransmission
        r.data(3, false, 5000 + 9, b"200 OK\r\nX: y"); // overlaps 8 bytes
        r.seg(4, false, 5000 + 21, FIN, b"", 0);
        // After the server's FIN the client may still send; its FIN closes the connection.
        r.data(5, true, 126, b"more");
        r.seg(6, true, 130, FIN, b"", 0);
        assert_eq!(
            r.got,
            [
                chunk(Dir::ToServer, false, b"GET /announce?info_hash=x "),
                chunk(Dir::ToClient, false, b"HTTP/1.0 200 OK\r\n"),
                chunk(Dir::ToClient, false, b"X: y"),
                Got::Ended(Dir::ToClient),
                chunk(Dir::ToServer, false, b"more"),
                Got::Ended(Dir::ToServer),
                Got::Closed,
            ]
        );
        let s = r.streams.stats();
        assert_eq!(
            (s.retransmitted, s.gaps, s.closed, s.conns.len),
            (2, 0, 1, 0)
        );
    }

    #[test]
    fn reordered_segments_are_delivered_in_sequence() {
        let mut r = Run::new(StreamConfig::default());
        r.data(0, true, u32::MAX - 3, b"GET "); // wraps around zero
        r.data(1, true, 4, b"CD");
        r.data(2, true, 0, b"AB\r\n");
        assert_eq!(
            r.got,
            [
                chunk(Dir::ToServer, false, b"GET "),
                chunk(Dir::ToServer, false, b"AB\r\n"),
                chunk(Dir::ToServer, false, b"CD"),
            ]
        );
        assert_eq!(r.streams.stats().out_of_order, 1);
    }

    #[test]
    fn a_hole_that_never_fills_becomes_a_gap() {
        // By time: the segment after the hole waits at most `reorder_wait`.
        let mut r = Run::new(StreamConfig::default());
        r.data(0, true, 1, b"GET ");
        r.data(10, true, 100, b"later");
        r.data(500, true, 200, b"much later");
        assert_eq!(r.got.len(), 1);
        // Each held segment waits from its own arrival.
        r.data(1100, true, 300, b"!");
        assert_eq!(&r.got[1..], [chunk(Dir::ToServer, true, b"later")]);
        r.seg(1200, true, 400, FIN, b"", 0);
        assert_eq!(
            &r.got[2..],
            [
                chunk(Dir::ToServer, true, b"much later"),
                chunk(Dir::ToServer, true, b"!"),
                Got::Ended(Dir::ToServer),
            ]
        );
        // By count: with room for one held segment the second overflows at once.
        let mut r = Run::new(StreamConfig {
            max_pending: 1,
            ..Default::default()
        });
        r.data(0, true, 1, b"GET ");
        r.data(1, true, 100, b"a");
        r.data(2, true, 200, b"b");
        assert_eq!(
            &r.got[1..],
            [
                chunk(Dir::ToServer, true, b"a"),
                chunk(Dir::ToServer, true, b"b")
            ]
        );
        assert_eq!(r.streams.stats().gaps, 2);
    }

    #[test]
    fn a_cut_segment_leaves_a_gap_before_the_next() {
        let mut r = Run::new(StreamConfig::default());
        r.seg(0, true, 1, PSH, b"GET /a", 3000);
        r.data(1, true, 3001, b"next");
        assert_eq!(
            r.got,
            [
                chunk(Dir::ToServer, false, b"GET /a"),
                chunk(Dir::ToServer, true, b"next")
            ]
        );
        assert_eq!(r.streams.stats().truncated, 1);
    }

    #[test]
    fn reset_flushes_held_bytes_then_closes() {
        let mut r = Run::new(StreamConfig::default());
        r.data(0, true, 1, b"GET ");
        r.data(1, false, 900, b"tail");
        r.data(2, false, 950, b"after a hole");
        r.seg(3, false, 0, RST, b"", 0);
        assert_eq!(
            r.got,
            [
                chunk(Dir::ToServer, false, b"GET "),
                chunk(Dir::ToClient, false, b"tail"),
                chunk(Dir::ToClient, true, b"after a hole"),
                Got::Closed,
            ]
        );
    }

    #[test]
    fn unknown_payloads_open_nothing() {
        let mut r = Run::new(StreamConfig::default());
        r.data(0, true, 1, b"HTTP/1.1 200 OK");
        r.data(1, true, 16, b"\x13BitTorrent protocoX");
        r.seg(2, true, 40, FIN, b"", 0);
        assert!(r.got.is_empty());
        let s = r.streams.stats();
        assert_eq!((s.unclassified, s.conns.len), (2, 0));
        assert_eq!(StreamClass::of(b"\x13Bit"), Some(StreamClass::PeerWire));
        assert_eq!(StreamClass::of(b"\x13Bi"), None);
    }

    #[test]
    fn held_bytes_are_bounded_over_all_connections() {
        let mut r = Run::new(StreamConfig {
            max_pending_bytes: 10,
            ..Default::default()
        });
        r.data(0, true, 1, b"GET ");
        r.data(1, true, 100, &[b'x'; 8]);
        r.data(2, true, 200, &[b'y'; 8]);
        assert_eq!(
            r.got.len(),
            3,
            "the second could not be held: the hole was given up"
        );
        assert_eq!(r.streams.held_bytes.load(Relaxed), 0);
    }

    #[test]
    fn held_bytes_come_back_when_a_connection_is_dropped() {
        let mut r = Run::new(StreamConfig {
            max_conns: 1,
            ..Default::default()
        });
        r.data(0, true, 1, b"GET ");
        r.data(1, true, 100, b"held");
        assert_eq!(r.streams.held_bytes.load(Relaxed), 4);
        // Another connection takes the only slot once the first has waited past the answer
        // deadline unanswered: the held segment goes with its connection.
        let other: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        let seg = TcpSegment {
            flags: TcpFlags(PSH | ACK),
            seq: 1,
            ack: 1,
            window: 1,
            payload_len: 4,
            head: b"GET ",
        };
        let mut ev = PacketEvent {
            ts: Timestamp::from_micros(2000),
            src: other,
            dst: SERVER.parse().unwrap(),
            vlan_depth: 0,
            transport: Transport::Tcp(seg),
        };
        r.streams.on_segment(&ev, &seg, |_, _| {});
        let s = r.streams.stats();
        assert_eq!(
            (s.conns.evicted, s.fair.table_full),
            (0, 1),
            "refused while fresh"
        );
        assert_eq!(r.streams.held_bytes.load(Relaxed), 4);
        ev.ts = Timestamp::from_secs(16);
        r.streams.on_segment(&ev, &seg, |_, _| {});
        let s = r.streams.stats();
        assert_eq!((s.conns.evicted, s.fair.unanswered_evicted), (1, 1));
        assert_eq!(r.streams.held_bytes.load(Relaxed), 0);
    }

    #[test]
    fn summary_line() {
        let mut r = Run::new(StreamConfig::default());
        r.data(1, true, 1000, b"GET /announce?info_hash=x HTTP/1.1\r\n");
        r.data(2, true, 1000, b"GET ");
        assert_eq!(
            r.streams.summary(),
            "tcp streams: 2 segments, 36 bytes delivered, 0 out of order, 1 retransmitted, \
             0 gaps, 0 cut by the snap length, 0 unclassified"
        );
    }
}
