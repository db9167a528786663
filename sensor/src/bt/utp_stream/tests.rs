//! uTP packets built per BEP 29 carrying the peer wire (BEP 3 handshake, BEP 10 extended
//! handshake, BEP 11 ut_pex), fed to the reader and the peer-wire channel behind it.

use super::*;
use crate::bt::peer_wire::{PeerWire, PeerWireConfig, PeerWireStats, MSG_EXTENDED, PROTOCOL};
use crate::predict::{Channel, PeerTransport, PredictedPeer, RetractedPeer};

/// The monitored client (the uTP initiator) and the peer it dials.
const A: &str = "10.1.44.184:52372";
const B: &str = "198.18.14.100:36772";
/// A's receive id: its SYN carries X, its other packets X+1, B's packets X.
const X: u16 = 0x1234;

const ST_DATA: u8 = 0;
const ST_FIN: u8 = 1;
const ST_STATE: u8 = 2;
const ST_RESET: u8 = 3;
const ST_SYN: u8 = 4;

/// A BEP 29 packet: `type << 4 | version 1`, no extension, `connection_id`, a timestamp,
/// `timestamp_difference`, `wnd_size`, `seq_nr`, `ack_nr`, then the payload.
fn packet(kind: u8, id: u16, seq: u16, ack: u16, payload: &[u8]) -> Vec<u8> {
    packet_ext(kind, id, seq, ack, &[], payload)
}

/// The same with an extension chain (`(type, bytes)` links, BEP 29).
fn packet_ext(
    kind: u8,
    id: u16,
    seq: u16,
    ack: u16,
    exts: &[(u8, &[u8])],
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![(kind << 4) | 1, exts.first().map_or(0, |e| e.0)];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0x1000_0000u32.to_be_bytes());
    let diff: u32 = if kind == ST_SYN { 0 } else { 0x0100 };
    p.extend_from_slice(&diff.to_be_bytes());
    p.extend_from_slice(&0x0010_0000u32.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    for (i, (_, data)) in exts.iter().enumerate() {
        p.push(exts.get(i + 1).map_or(0, |e| e.0));
        p.push(u8::try_from(data.len()).unwrap());
        p.extend_from_slice(data);
    }
    p.extend_from_slice(payload);
    p
}

fn handshake() -> Vec<u8> {
    let mut v = PROTOCOL.to_vec();
    // BEP 10 (reserved[5] & 0x10), DHT and fast extension bits.
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0x05]);
    v.extend_from_slice(&[0xab; 20]);
    v.extend_from_slice(b"-TR3000-abcdefghijkl");
    v
}

fn message(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = (u32::try_from(payload.len()).unwrap() + 1)
        .to_be_bytes()
        .to_vec();
    v.push(id);
    v.extend_from_slice(payload);
    v
}

fn extended(ext: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![ext];
    p.extend_from_slice(body);
    message(MSG_EXTENDED, &p)
}

/// A's extended handshake: ut_pex is 2 on A's side, and A listens on TCP 52372 (`p`).
fn ext_handshake_a() -> Vec<u8> {
    extended(0, b"d1:md6:ut_pexi2ee1:pi52372ee")
}

/// B's extended handshake: ut_pex is 5 on B's side (no `p`: a responder's port is the one
/// already connected to).
fn ext_handshake_b() -> Vec<u8> {
    extended(0, b"d1:md6:ut_pexi5eee")
}

/// A ut_pex message B sends A (A's id 2): two peers added (BEP 11 compact, with flags).
const PEX_PEERS: [&str; 2] = ["203.0.113.7:6881", "198.51.100.20:51413"];
fn pex_to_a(ext: u8) -> Vec<u8> {
    let mut body = b"d5:added12:".to_vec();
    body.extend_from_slice(&[203, 0, 113, 7, 0x1a, 0xe1, 198, 51, 100, 20, 0xc8, 0xd5]);
    body.extend_from_slice(b"7:added.f2:\x10\x00e");
    extended(ext, &body)
}

/// A second PEX, later in the session.
const PEX2_PEER: &str = "192.0.2.44:40000";
fn pex2_to_a(ext: u8) -> Vec<u8> {
    let mut body = b"d5:added6:".to_vec();
    body.extend_from_slice(&[192, 0, 2, 44, 0x9c, 0x40]);
    body.extend_from_slice(b"e");
    extended(ext, &body)
}

/// A `piece` message of `len` block bytes.
fn piece(len: usize) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 1, 0, 0, 0x40, 0];
    p.extend((0..len).map(|i| (i * 7 + 3).to_le_bytes()[0]));
    message(7, &p)
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Chunk(Dir, bool, Vec<u8>),
    Ended(Dir),
    Closed,
}

/// The reader and the peer wire behind it, and everything they produced.
struct Run {
    streams: UtpStreams,
    pw: PeerWire,
    got: Vec<Got>,
    keys: Vec<ConnKey>,
    out: Vec<PredictedPeer>,
    ret: Vec<RetractedPeer>,
}

impl Run {
    fn new() -> Self {
        Self::with(UtpStreamConfig::default())
    }

    fn with(config: UtpStreamConfig) -> Self {
        Self {
            streams: UtpStreams::new(config),
            pw: PeerWire::new(PeerWireConfig::default()),
            got: Vec::new(),
            keys: Vec::new(),
            out: Vec::new(),
            ret: Vec::new(),
        }
    }

    /// A datagram at `ms` milliseconds, from A (else from B); `len` is its true length (the
    /// captured head is `bytes`).
    fn send_cut(&mut self, ms: u64, from_a: bool, bytes: &[u8], len: usize) {
        let (src, dst) = if from_a { (A, B) } else { (B, A) };
        self.send_between(ms, src, dst, bytes, len);
    }

    fn send_between(&mut self, ms: u64, src: &str, dst: &str, bytes: &[u8], len: usize) {
        let udp = UdpDatagram {
            payload_len: u16::try_from(len).unwrap(),
            head: bytes,
        };
        assert!(utp::looks_like_utp(bytes));
        let Self {
            streams,
            pw,
            got,
            keys,
            out,
            ret,
        } = self;
        streams.on_datagram(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            Timestamp::from_micros(ms * 1000),
            &udp,
            |e| record(pw, got, keys, out, ret, &e),
        );
    }

    fn send(&mut self, ms: u64, from_a: bool, bytes: &[u8]) {
        self.send_cut(ms, from_a, bytes, bytes.len());
    }

    fn expire(&mut self, ms: u64) {
        let Self {
            streams,
            pw,
            got,
            keys,
            out,
            ret,
        } = self;
        streams.expire(Timestamp::from_micros(ms * 1000), |e| {
            record(pw, got, keys, out, ret, &e);
        });
    }

    fn stats(&self) -> UtpStreamStats {
        self.streams.stats()
    }

    fn pw_stats(&self) -> PeerWireStats {
        self.pw.stats()
    }

    /// "host peer" of the predictions on `channel` over `transport`.
    fn targets(&self, channel: Channel, transport: PeerTransport) -> Vec<String> {
        self.out
            .iter()
            .filter(|p| p.channel == channel && p.transport == transport)
            .map(|p| format!("{} {}", p.host, p.peer))
            .collect()
    }

    /// The PEX predictions for A over TCP.
    fn pex_for_a(&self) -> Vec<String> {
        self.targets(Channel::Pex, PeerTransport::Tcp)
    }
}

fn record(
    pw: &mut PeerWire,
    got: &mut Vec<Got>,
    keys: &mut Vec<ConnKey>,
    out: &mut Vec<PredictedPeer>,
    ret: &mut Vec<RetractedPeer>,
    e: &StreamEvent<'_>,
) {
    use crate::bt::channel::Channel as _;
    match *e {
        StreamEvent::Chunk(c) => {
            keys.push(c.conn);
            got.push(Got::Chunk(c.dir, c.gap, c.data.to_vec()));
        }
        StreamEvent::Ended { conn, dir, .. } => {
            keys.push(conn);
            got.push(Got::Ended(dir));
        }
        StreamEvent::Closed { conn, .. } => {
            keys.push(conn);
            got.push(Got::Closed);
        }
    }
    pw.on_stream(
        e,
        &mut crate::bt::Learnt {
            predictions: out,
            retracted: ret,
        },
    );
}

fn pex_expected() -> Vec<String> {
    PEX_PEERS
        .iter()
        .map(|p| format!("10.1.44.184 {p}"))
        .collect()
}

/// The whole exchange as each side sends it: A's SYN, B's STATE, then each side's
/// handshake, extended handshake and (B) a PEX, one message per DATA packet.
struct Session {
    a_syn_seq: u16,
    b_seq: u16,
    id: u16,
}

impl Session {
    fn new() -> Self {
        Self {
            a_syn_seq: 100,
            b_seq: 5000,
            id: X,
        }
    }

    fn syn(&self) -> Vec<u8> {
        packet(ST_SYN, self.id, self.a_syn_seq, 0, &[])
    }

    fn state_b(&self) -> Vec<u8> {
        packet(ST_STATE, self.id, self.b_seq, self.a_syn_seq, &[])
    }

    /// A's `n`th DATA packet (from 0).
    fn a(&self, n: u16, payload: &[u8]) -> Vec<u8> {
        let seq = self.a_syn_seq.wrapping_add(1 + n);
        packet(ST_DATA, self.id.wrapping_add(1), seq, self.b_seq, payload)
    }

    /// B's `n`th DATA packet.
    fn b(&self, n: u16, payload: &[u8]) -> Vec<u8> {
        let seq = self.b_seq.wrapping_add(n);
        packet(ST_DATA, self.id, seq, self.a_syn_seq, payload)
    }

    fn ack_a(&self) -> Vec<u8> {
        packet(ST_STATE, self.id.wrapping_add(1), self.a_syn_seq, 0, &[])
    }
}

/// SYN, STATE, A's handshake and extended handshake.
fn open(r: &mut Run, s: &Session) {
    r.send(0, true, &s.syn());
    r.send(10, false, &s.state_b());
    r.send(20, true, &s.a(0, &handshake()));
    r.send(21, true, &s.a(1, &ext_handshake_a()));
}

#[test]
fn in_order_session_predicts_pex_for_the_receiver() {
    let mut r = Run::new();
    let s = Session::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(31, false, &s.b(1, &ext_handshake_b()));
    r.send(40, false, &s.b(2, &pex_to_a(2)));
    assert_eq!(r.pex_for_a(), pex_expected());
    // BEP 11 peers are dialled over TCP and uTP alike.
    assert_eq!(r.targets(Channel::Pex, PeerTransport::Udp), pex_expected());
    // A initiated: its `p` is a port B may dial back (the initiator's side of the key).
    assert_eq!(
        r.targets(Channel::PeerWire, PeerTransport::Tcp),
        ["198.18.14.100 10.1.44.184:52372"]
    );
    let key = ConnKey {
        client: A.parse().unwrap(),
        server: B.parse().unwrap(),
        transport: Carrier::Utp(X),
    };
    assert!(r.keys.iter().all(|k| *k == key));
    assert_eq!(
        r.got,
        [
            Got::Chunk(Dir::ToServer, false, handshake()),
            Got::Chunk(Dir::ToServer, false, ext_handshake_a()),
            Got::Chunk(Dir::ToClient, false, handshake()),
            Got::Chunk(Dir::ToClient, false, ext_handshake_b()),
            Got::Chunk(Dir::ToClient, false, pex_to_a(2)),
        ]
    );
    let st = r.stats();
    assert_eq!(
        (st.packets, st.syns, st.opened, st.peer_wire, st.data),
        (7, 1, 1, 1, 5)
    );
    assert_eq!(
        (st.gaps, st.duplicates, st.out_of_order, st.mid_session),
        (0, 0, 0, 0)
    );
    let bytes = 2 * handshake().len()
        + ext_handshake_a().len()
        + ext_handshake_b().len()
        + pex_to_a(2).len();
    assert_eq!(st.delivered_bytes, bytes as u64);
    assert_eq!((st.conns.len, st.syns_table.len), (1, 0));
    let pw = r.pw_stats();
    assert_eq!((pw.handshakes, pw.ext_handshakes.parsed), (2, 2));
    assert_eq!((pw.pex.parsed, pw.pex_fallback, pw.gaps), (1, 0, 0));
}

#[test]
fn reordered_packets_are_delivered_in_sequence() {
    let mut r = Run::new();
    let s = Session::new();
    // A's data overtakes B's STATE; B's PEX overtakes its handshakes.
    r.send(0, true, &s.syn());
    r.send(20, true, &s.a(1, &ext_handshake_a()));
    r.send(21, true, &s.a(0, &handshake()));
    r.send(25, false, &s.state_b());
    r.send(30, false, &s.b(2, &pex_to_a(2)));
    r.send(31, false, &s.b(0, &handshake()));
    r.send(32, false, &s.b(1, &ext_handshake_b()));
    assert_eq!(r.pex_for_a(), pex_expected());
    let st = r.stats();
    assert_eq!((st.out_of_order, st.gaps, st.duplicates), (2, 0, 0));
    assert_eq!(st.held_bytes, 0);
    assert!(r.got.iter().all(|g| matches!(g, Got::Chunk(_, false, _))));
    assert_eq!(r.pw_stats().gaps, 0);
}

#[test]
fn duplicated_packets_are_delivered_once() {
    let mut r = Run::new();
    let s = Session::new();
    let packets = [
        (true, s.syn()),
        (false, s.state_b()),
        (true, s.a(0, &handshake())),
        (true, s.a(1, &ext_handshake_a())),
        (false, s.b(0, &handshake())),
        (false, s.b(1, &ext_handshake_b())),
        (false, s.b(2, &pex_to_a(2))),
    ];
    for (i, (from_a, p)) in (0u64..).zip(&packets) {
        r.send(10 * i, *from_a, p);
        r.send(10 * i + 1, *from_a, p);
    }
    // A late copy of a held packet, too.
    r.send(100, false, &s.b(4, &pex2_to_a(2)));
    r.send(101, false, &s.b(4, &pex2_to_a(2)));
    assert_eq!(r.pex_for_a(), pex_expected(), "each PEX read once");
    let st = r.stats();
    assert_eq!(st.duplicate_syns, 1);
    // Five DATA copies, the second copy of the held packet; STATE copies are not counted.
    assert_eq!((st.duplicates, st.out_of_order), (6, 1));
    assert_eq!(r.got.len(), 5);
}

#[test]
fn a_lost_packet_is_a_gap_and_the_peer_wire_resynchronises() {
    let mut r = Run::new();
    let s = Session::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    // B's extended handshake (1) is never seen; its PEX (2) waits for it...
    r.send(40, false, &s.b(2, &pex_to_a(2)));
    assert!(r.pex_for_a().is_empty());
    assert_eq!(r.stats().held_bytes, pex_to_a(2).len() as u64);
    // ...until any packet of the connection (A's ack) comes after the reorder wait.
    r.send(1100, true, &s.ack_a());
    assert_eq!(r.pex_for_a(), pex_expected());
    assert_eq!(
        r.got.last(),
        Some(&Got::Chunk(Dir::ToClient, true, pex_to_a(2)))
    );
    let st = r.stats();
    assert_eq!((st.gaps, st.out_of_order, st.held_bytes), (1, 1, 0));
    let pw = r.pw_stats();
    assert_eq!((pw.gaps, pw.resyncs), (1, 1));

    // A message split over two packets whose first is lost: its tail is never read as a
    // message start; the next message is.
    let pex = pex2_to_a(2);
    let (head, tail) = pex.split_at(7);
    r.send(1200, false, &s.b(4, tail));
    r.send(1201, false, &s.b(5, &pex_to_a(2)));
    r.send(2300, true, &s.ack_a());
    assert!(
        !r.pex_for_a().contains(&format!("10.1.44.184 {PEX2_PEER}")),
        "{head:?} was lost"
    );
    assert_eq!(r.pex_for_a().len(), 4, "the PEX after it is read");
    assert_eq!(r.stats().gaps, 2);
}

#[test]
fn holes_are_given_up_when_the_budget_is_full() {
    let mut r = Run::with(UtpStreamConfig {
        max_pending: 2,
        ..Default::default()
    });
    let s = Session::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(31, false, &s.b(1, &ext_handshake_b()));
    // 2 is lost; 4 and 5 are held; 3 finds no room: the hole before it is given up, and 3
    // comes before what is held.
    r.send(40, false, &s.b(4, &piece(10)));
    r.send(41, false, &s.b(5, &pex2_to_a(2)));
    r.send(42, false, &s.b(3, &pex_to_a(2)));
    assert_eq!(r.pex_for_a().len(), 3);
    let st = r.stats();
    assert_eq!((st.overflows, st.gaps, st.held_bytes), (1, 1, 0));
    let tail: Vec<_> = r.got[r.got.len() - 3..]
        .iter()
        .map(|g| match g {
            Got::Chunk(_, gap, d) => (*gap, d.len()),
            _ => panic!("{g:?}"),
        })
        .collect();
    assert_eq!(
        tail,
        [
            (true, pex_to_a(2).len()),
            (false, piece(10).len()),
            (false, pex2_to_a(2).len())
        ]
    );

    // With the global byte budget exhausted nothing is held: every hole is given up at once.
    let mut r = Run::with(UtpStreamConfig {
        max_pending_bytes: 4,
        ..Default::default()
    });
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(40, false, &s.b(2, &pex_to_a(2)));
    assert_eq!(r.pex_for_a(), pex_expected());
    assert_eq!((r.stats().overflows, r.stats().gaps), (1, 1));
}

#[test]
fn sequence_and_connection_numbers_wrap() {
    let mut r = Run::new();
    // A's id 0xffff: its data carries 0. Both directions' numbers wrap through 0.
    let s = Session {
        a_syn_seq: 0xfffe,
        b_seq: 0xfffe,
        id: 0xffff,
    };
    assert_eq!(s.a(0, b"x")[2..4], [0, 0]);
    r.send(0, true, &s.syn());
    r.send(10, false, &s.state_b());
    r.send(20, true, &s.a(1, &ext_handshake_a())); // seq 0
    r.send(21, true, &s.a(0, &handshake())); // seq 0xffff
    r.send(30, false, &s.b(3, &pex_to_a(2))); // seq 1
    r.send(31, false, &s.b(0, &handshake())); // seq 0xfffe
    r.send(32, false, &s.b(2, &piece(3))); // seq 0
    r.send(33, false, &s.b(1, &ext_handshake_b())); // seq 0xffff
    assert_eq!(r.pex_for_a(), pex_expected());
    let st = r.stats();
    assert_eq!(
        (st.gaps, st.duplicates, st.jumps, st.conns.len),
        (0, 0, 0, 1)
    );
    // Behind the wrapped number is a duplicate, not a jump.
    r.send(40, false, &s.b(0, &handshake()));
    assert_eq!((r.stats().duplicates, r.stats().jumps), (1, 0));
}

#[test]
fn a_far_sequence_number_restarts_the_stream_after_a_gap() {
    let mut r = Run::new();
    let s = Session::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(31, false, &s.b(1, &ext_handshake_b()));
    // 30,000 ahead is no reordering: a gap, and the stream goes on from there.
    r.send(40, false, &s.b(30_000, &pex_to_a(2)));
    r.send(41, false, &s.b(30_001, &pex2_to_a(2)));
    let st = r.stats();
    assert_eq!((st.jumps, st.gaps, st.out_of_order), (1, 1, 0));
    assert_eq!(r.pex_for_a().len(), 3);
    // And as far behind.
    r.send(50, false, &s.b(3, &pex_to_a(2)));
    assert_eq!(r.stats().jumps, 2);
}

#[test]
fn mid_session_start_opens_at_a_peer_wire_payload() {
    let mut r = Run::new();
    let s = Session::new();
    // No SYN, no handshakes: B's piece data first (no signature: dropped), then B's PEX
    // with the fallback id 1 (A's extended handshake was never seen).
    r.send(0, false, &s.b(7, &piece(100)));
    assert_eq!(r.stats().conns.len, 0);
    r.send(10, false, &s.b(8, &pex_to_a(1)));
    assert_eq!(r.pex_for_a(), pex_expected());
    // A's packets (id X+1) belong to the same connection, though B was taken for the
    // initiator (its id X read as X'+1).
    r.send(20, true, &s.a(30, &piece(10)));
    r.send(30, false, &s.b(9, &pex2_to_a(1)));
    r.send(31, true, &packet(ST_STATE, X + 1, 131, 5009, &[]));
    let st = r.stats();
    assert_eq!(
        (st.mid_session, st.peer_wire, st.unclassified, st.conns.len),
        (1, 1, 1, 1)
    );
    // Each direction starts after a gap.
    assert_eq!(st.gaps, 2);
    assert!(matches!(r.got[0], Got::Chunk(Dir::ToServer, true, _)));
    assert!(matches!(r.got[1], Got::Chunk(Dir::ToClient, true, _)));
    let guessed = ConnKey {
        client: B.parse().unwrap(),
        server: A.parse().unwrap(),
        transport: Carrier::Utp(X - 1),
    };
    assert!(r.keys.iter().all(|k| *k == guessed));
    let pw = r.pw_stats();
    assert_eq!((pw.pex_fallback, pw.pex.parsed), (2, 2));
    assert_eq!(r.pex_for_a().len(), 3);
    // A RESET from A ends it.
    r.send(40, true, &packet(ST_RESET, X + 1, 131, 5009, &[]));
    assert_eq!(r.got.last(), Some(&Got::Closed));
    assert_eq!((r.stats().conns.len, r.stats().closed), (0, 1));

    // Guessed right: the first packet is the initiator's.
    let mut r = Run::new();
    r.send(0, true, &s.a(5, &pex_to_a(1)));
    r.send(1, false, &s.b(2, &pex_to_a(1)));
    r.send(2, true, &s.a(6, &piece(1)));
    assert_eq!(r.stats().conns.len, 1);
    assert!(r.keys.iter().all(|k| k.client == A.parse().unwrap()));
}

#[test]
fn a_packet_cut_by_the_snap_length_leaves_a_gap_for_its_tail() {
    let mut r = Run::new();
    let s = Session::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(31, false, &s.b(1, &ext_handshake_b()));
    // A 1400-byte piece packet of which the capture holds 100 bytes, then a PEX: read at
    // its true place, not as the piece's missing bytes.
    let full = s.b(2, &piece(1400));
    r.send_cut(40, false, &full[..100], full.len());
    r.send(41, false, &s.b(3, &pex_to_a(2)));
    assert_eq!(r.pex_for_a(), pex_expected());
    let n = r.got.len();
    assert_eq!(
        r.got[n - 2..],
        [
            Got::Chunk(Dir::ToClient, false, full[20..100].to_vec()),
            Got::Chunk(Dir::ToClient, true, pex_to_a(2)),
        ]
    );
    // A cut inside the extension chain: the packet's place is known, its payload is not.
    let sack: &[u8] = &[0xff, 0xff, 0xff, 0xff];
    let full = packet_ext(
        ST_DATA,
        X,
        5004,
        101,
        &[(utp::EXT_SELECTIVE_ACK, sack)],
        &piece(1400),
    );
    r.send_cut(50, false, &full[..23], full.len());
    r.send(51, false, &s.b(5, &pex2_to_a(2)));
    assert_eq!(
        r.got.last(),
        Some(&Got::Chunk(Dir::ToClient, true, pex2_to_a(2)))
    );
    assert_eq!(r.pex_for_a().len(), 3);
    let st = r.stats();
    assert_eq!((st.truncated, st.gaps, st.out_of_order), (2, 0, 0));
    assert_eq!(r.pw_stats().gaps, 2);
}

#[test]
fn streams_that_are_not_the_peer_wire_are_dropped() {
    let mut r = Run::new();
    let s = Session::new();
    r.send(0, true, &s.syn());
    r.send(10, false, &s.state_b());
    // MSE/PE: 96 bytes of Diffie-Hellman key first.
    let dh: Vec<u8> = (0u8..96)
        .map(|i| i.wrapping_mul(151).wrapping_add(7))
        .collect();
    r.send(20, true, &s.a(0, &dh));
    r.send(30, false, &s.b(0, &dh));
    // Later plaintext-looking bytes on it are not read either.
    r.send(40, false, &s.b(1, &pex_to_a(1)));
    r.send(50, true, &packet(ST_FIN, X + 1, 102, 5001, &[]));
    r.send(60, false, &packet(ST_FIN, X, 5002, 102, &[]));
    assert!(r.got.is_empty());
    assert!(r.out.is_empty());
    let st = r.stats();
    assert_eq!(
        (
            st.other,
            st.other_packets,
            st.peer_wire,
            st.closed,
            st.conns.len
        ),
        (1, 2, 0, 1, 0)
    );
    assert_eq!(r.pw_stats().connections.len, 0);
}

#[test]
fn fin_each_way_ends_and_closes_reset_closes_after_delivering() {
    let mut r = Run::new();
    let s = Session::new();
    open(&mut r, &s);
    // B's FIN (seq 5001) arrives before its last DATA (5000): the direction ends after it.
    r.send(30, false, &packet(ST_FIN, X, 5001, 102, &[]));
    assert!(!r.got.contains(&Got::Ended(Dir::ToClient)));
    r.send(31, false, &s.b(0, &handshake()));
    assert_eq!(
        r.got[r.got.len() - 2..],
        [
            Got::Chunk(Dir::ToClient, false, handshake()),
            Got::Ended(Dir::ToClient)
        ]
    );
    // Nothing follows a FIN.
    r.send(32, false, &s.b(2, &pex_to_a(2)));
    assert_eq!(r.stats().duplicates, 1);
    r.send(40, true, &packet(ST_FIN, X + 1, 103, 5001, &[]));
    assert_eq!(
        r.got[r.got.len() - 2..],
        [Got::Ended(Dir::ToServer), Got::Closed]
    );
    assert_eq!((r.stats().closed, r.stats().conns.len), (1, 0));
    assert_eq!(r.pw_stats().connections.len, 0, "the peer wire let it go");

    // RESET: what is held is delivered after a gap first.
    let mut r = Run::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(31, false, &s.b(2, &pex_to_a(2)));
    r.send(32, false, &packet(ST_RESET, X, 5003, 102, &[]));
    assert_eq!(r.pex_for_a(), pex_expected());
    assert_eq!(r.got.last(), Some(&Got::Closed));
    assert_eq!((r.stats().resets, r.stats().held_bytes), (1, 0));
    // A RESET echoing the initiator's id (BEP 29 implementations answer unknown packets so).
    let mut r = Run::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(32, false, &packet(ST_RESET, X + 1, 5003, 102, &[]));
    assert_eq!(r.got.last(), Some(&Got::Closed));
}

#[test]
fn tables_are_bounded_and_drops_are_counted() {
    // One connection at a time: a full table keeps the connection it follows (answered:
    // fair shares), and the second is refused, closed at once.
    let mut r = Run::with(UtpStreamConfig {
        max_conns: 1,
        ..Default::default()
    });
    let s = Session::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(31, false, &s.b(2, &pex_to_a(2)));
    let s2 = Session {
        id: 0x4000,
        ..Session::new()
    };
    open(&mut r, &s2);
    let st = r.stats();
    assert_eq!((st.conns.len, st.conns.evicted), (1, 0));
    // Both are the same initiator's: it is held to its share (one, of a one-entry table).
    assert!(st.conns_fair.host_share >= 1, "{:?}", st.conns_fair);
    assert!(r.got.contains(&Got::Closed));
    // The followed connection still delivers what it held once the hole fills.
    r.send(32, false, &s.b(1, &ext_handshake_b()));
    assert_eq!(r.pex_for_a(), pex_expected());

    // Idle connections are closed; unanswered SYNs forgotten.
    let mut r = Run::new();
    open(&mut r, &s);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(31, false, &s.b(2, &pex_to_a(2)));
    r.send(40, true, &s2.syn());
    r.expire(11 * 60 * 1000);
    let st = r.stats();
    assert_eq!((st.conns.len, st.conns.expired), (0, 1));
    assert_eq!((st.syns_table.len, st.syns_table.expired), (0, 1));
    assert_eq!(r.got.last(), Some(&Got::Closed));
    assert_eq!(r.pex_for_a(), pex_expected(), "held bytes delivered first");

    // SYNs never answered fill only their own table.
    let mut r = Run::with(UtpStreamConfig {
        max_syns: 4,
        ..Default::default()
    });
    open(&mut r, &s);
    for id in 0..100u16 {
        r.send(100, true, &packet(ST_SYN, 0x8000 + id, 1, 0, &[]));
    }
    // One host holds at most its share of the SYN table (an eighth, at least one).
    let st = r.stats();
    assert_eq!((st.syns_table.len, st.syns_table.evicted), (1, 0));
    assert_eq!(st.syns_fair.host_share, 99);
    assert_eq!((st.conns.len, st.conns.evicted), (1, 0));
    // Non-DATA packets of nothing followed, and datagrams that are not uTP packets.
    r.send(200, true, &packet(ST_STATE, 0x7777, 1, 0, &[]));
    r.send(201, true, &packet(ST_DATA, 0x7777, 1, 0, &[]));
    let st = r.stats();
    assert_eq!((st.unmatched, st.invalid), (1, 1));
}

#[test]
fn tcp_and_utp_connections_between_the_same_endpoints_do_not_collide() {
    let mut r = Run::new();
    let s = Session::new();
    open(&mut r, &s);
    // The same two address:port pairs over TCP, straight to the peer wire.
    let tcp = ConnKey::tcp(A.parse().unwrap(), B.parse().unwrap());
    for data in [handshake(), ext_handshake_a()] {
        let c = StreamChunk {
            ts: Timestamp::from_secs(1),
            conn: tcp,
            dir: Dir::ToServer,
            gap: false,
            data: &data,
        };
        r.pw.on_chunk(&c, &mut r.out, &mut r.ret);
    }
    assert_eq!(r.pw_stats().connections.len, 2);
    r.send(30, false, &s.b(0, &handshake()));
    r.send(31, false, &s.b(1, &ext_handshake_b()));
    r.send(40, false, &s.b(2, &pex_to_a(2)));
    assert_eq!(r.pex_for_a(), pex_expected());
    assert_eq!(r.pw_stats().handshakes, 3);
}

/// The element of `xs` that `v` picks.
fn pick<T: Copy>(v: u32, xs: &[T]) -> T {
    xs[usize::try_from(v).unwrap() % xs.len()]
}

/// Deterministic hostile traffic: packets of every type with nearby and far ids and sequence
/// numbers, duplicated, cut, with extension chains. Nothing panics, the bounds hold and
/// every held byte is accounted for.
#[test]
fn hostile_sequences_never_panic_and_stay_bounded() {
    let config = UtpStreamConfig {
        max_conns: 8,
        max_syns: 8,
        max_pending: 4,
        max_pending_bytes: 3000,
        ..Default::default()
    };
    let mut r = Run::with(config.clone());
    let mut x: u32 = 0x9e37_79b9;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let payloads = [
        handshake(),
        ext_handshake_a(),
        pex_to_a(1),
        pex_to_a(2),
        piece(900),
        vec![0; 3],
    ];
    let hosts = [A, B, "10.0.0.3:1000"];
    for i in 0..20_000u64 {
        let v = rnd();
        let kind = pick(
            v,
            &[
                ST_DATA, ST_DATA, ST_DATA, ST_STATE, ST_FIN, ST_RESET, ST_SYN,
            ],
        );
        let id = pick(v >> 3, &[X, X + 1, X - 1, X + 2, 0, 0xffff]);
        let seq = match (v >> 6) % 4 {
            0 => u16::try_from(v >> 16).unwrap(),
            _ => 100u16.wrapping_add(u16::try_from((v >> 20) % 8).unwrap()),
        };
        let payload: &[u8] = if kind == ST_DATA {
            &payloads[usize::try_from(v >> 9).unwrap() % payloads.len()]
        } else {
            &[]
        };
        let sack: &[u8] = &[1, 2, 3, 4];
        let bytes = if v & (1 << 12) != 0 {
            packet_ext(kind, id, seq, 0, &[(utp::EXT_SELECTIVE_ACK, sack)], payload)
        } else {
            packet(kind, id, seq, 0, payload)
        };
        let src = pick(v >> 13, &hosts);
        let dst = pick(v >> 15, &hosts);
        let cut = match (v >> 24) % 4 {
            0 => bytes
                .len()
                .min(20 + usize::try_from((v >> 26) % 16).unwrap()),
            _ => bytes.len(),
        };
        r.send_between(i * 7, src, dst, &bytes[..cut], bytes.len());
        let st = r.stats();
        assert!(st.conns.len <= 8 && st.syns_table.len <= 8);
        assert!(st.held_bytes <= 3000);
        if i % 1000 == 999 {
            r.out.clear();
        }
    }
    r.expire(u64::MAX / 2000);
    let st = r.stats();
    assert_eq!((st.conns.len, st.held_bytes), (0, 0));
    assert!(st.delivered_bytes > 0 && st.gaps > 0 && st.duplicates > 0 && st.jumps > 0);
}

#[test]
fn summary_line() {
    let mut r = Run::new();
    let s = Session::new();
    open(&mut r, &s);
    assert_eq!(
        r.streams.summary(),
        "utp streams: 4 packets, 1 connections opened after a SYN, 0 mid-session, \
         1 peer wire, 0 other (0 packets dropped), 0 unclassified payloads, \
         102 bytes delivered, 0 out of order, 0 duplicates, 0 gaps, 0 cut by the snap length"
    );
}

mod corpus {
    use crate::bt::test_support::udp_datagrams;
    use crate::bt::Coordination;
    use crate::predict::{Channel, PeerTransport};

    /// nDPI's `bittorrent_utp.pcap`: a libtorrent peer (82.243.113.43) sends 192.168.1.5 a
    /// ut_pex message in the middle of uTP DATA frame 58, after piece bytes (offset 418 of
    /// the UDP payload). Its 11 `added` entries, decoded from `tshark -T fields -e
    /// udp.payload` by hand (tshark's own `bittorrent` dissector over `bt-utp` only shows
    /// messages that open a packet): one is 192.168.1.5's own public address
    /// (79.24.190.3:40959, the `yourip` its peer reported), the other ten are predicted over
    /// TCP and uTP.
    #[test]
    fn pex_inside_a_utp_data_packet_of_a_real_capture() {
        let mut c = Coordination::default();
        let (mut out, mut retracted) = (Vec::new(), Vec::new());
        for d in udp_datagrams("ntop-nDPI/bittorrent_utp.pcap") {
            let (ev, udp) = d.event();
            c.on_udp(&ev, &udp, &mut out, &mut retracted);
        }
        let pex = |t| -> Vec<String> {
            out.iter()
                .filter(|p| p.channel == Channel::Pex && p.transport == t)
                .map(|p| format!("{} {}", p.host, p.peer))
                .collect()
        };
        let want: Vec<String> = [
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
        .map(|p| format!("192.168.1.5 {p}"))
        .collect();
        assert_eq!(pex(PeerTransport::Tcp), want);
        assert_eq!(pex(PeerTransport::Udp), want);
        assert!(retracted.is_empty());
        let s = c.utp_stream_stats();
        assert_eq!((s.peer_wire, s.gaps, s.truncated), (1, 0, 0));
        let pw = c
            .channel::<crate::bt::peer_wire::PeerWire>()
            .unwrap()
            .stats();
        // Both handshakes and both extended handshakes (tshark frames 6 and 10).
        assert_eq!((pw.handshakes, pw.ext_handshakes.parsed), (2, 2));
        assert_eq!(
            (pw.pex.parsed, pw.pex_fallback, pw.entries.own_address),
            (1, 0, 1)
        );
    }
}
