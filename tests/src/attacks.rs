//! Adversarial captures: a scanner that forges BitTorrent coordination listing its own targets.
//!
//! Every capture holds one scanner ([`SCANNER`]) sending unanswered SYNs to a sweep (300 hosts
//! on 445/tcp, or ports 1–300 of one host, or a sweep of its own /24), a coordination channel
//! that lists those targets to it as peers (one [`Attack`] per class of forgery), and a control:
//! a genuine BitTorrent-like host ([`BT_HOST`]) whose tracker announced 40 peers on ports of
//! their own choosing, which it then fails to reach. Built from a fixed seed with the generator
//! of [`crate::synth`], so a capture is the same on every run; only documentation, benchmark
//! and private address ranges are used.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::synth::{
    at, bt_handshake, compact_v4, finish, krpc_query, krpc_response, len32, Bencode, Capture,
    Endpoint, Gen, Ip, Link, Rng, ACK, FIN, PSH, SCAN_OPTS, SYN, SYN_OPTS,
};

/// The scanner, on the monitored LAN (10.0.0.0/24).
pub const SCANNER: [u8; 4] = [10, 0, 0, 66];
/// The genuine BitTorrent host of the control.
pub const BT_HOST: [u8; 4] = [10, 0, 0, 10];
/// The scanner's accomplice outside: a DHT node or a peer that lists the targets.
pub const ACCOMPLICE: [u8; 4] = [198, 51, 100, 200];
/// A tracker (the accomplice's, in the tracker attacks; a real one for the control).
pub const TRACKER: [u8; 4] = [203, 0, 113, 5];
/// A DHT bootstrap node: answers `find_node` with `nodes`, as it does for anyone.
pub const BOOTSTRAP: [u8; 4] = [203, 0, 113, 200];
/// The host of the vertical sweeps.
pub const VICTIM: [u8; 4] = [198, 18, 200, 7];
/// The LAN host of the vertical LAN sweep.
pub const LAN_VICTIM: [u8; 4] = [10, 0, 0, 7];

const BT_PORT: u16 = 6881;
const TRACKER_PORT: u16 = 6969;
const LSD_GROUP: [u8; 4] = [239, 192, 152, 143];
const LSD_PORT: u16 = 6771;
/// When the scan starts (seconds into the capture), and its pace.
const SCAN_START: f64 = 10.0;
const SCAN_GAP: f64 = 0.02;

/// What the scanner sweeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// 300 hosts (198.18.0.0/15) on 445/tcp; 250 hosts of its own /24 for the LAN attacks.
    Horizontal,
    /// Ports 1–300 of one host ([`VICTIM`], or [`LAN_VICTIM`] for the LAN attacks).
    Vertical,
}

/// The class of forged coordination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// BEP 5 `get_peers` responses from the accomplice whose `values` are the targets, each
    /// after a matching query from the scanner (`query`) or unsolicited.
    DhtValues { query: bool },
    /// BEP 15 connect and announces to the accomplice's tracker; the announce responses list
    /// the targets.
    UdpTracker,
    /// An HTTP tracker announce (`GET /announce?info_hash=…` to port 6969) answered with the
    /// targets as compact `peers` (BEP 3, BEP 23).
    HttpTracker,
    /// A peer-wire connection from the accomplice (BEP 3 handshake, BEP 10 extended handshake)
    /// carrying ut_pex messages (BEP 11) whose `added` lists are the targets.
    Pex,
    /// One connection from the accomplice per target, its BEP 10 extended handshake carrying
    /// the target as `ipv4` and `p`.
    ExtHandshakes,
    /// No accomplice: one `find_node` answered with `nodes` by a bootstrap node, and the
    /// scanner's own uTP ST_SYN (BEP 29) to every target before its TCP SYN. With `decoys`,
    /// three SYNs (and uTP SYNs) to fresh hosts on random high ports pad every probe, to give
    /// its attempts a peer-to-peer port/peer ratio. With `genuine_list`, the scanner first
    /// fetches a genuine peer list ([`genuine_list`]), which makes its own predictions trusted.
    SelfAnnounced { decoys: bool, genuine_list: bool },
    /// LSD announces (BEP 14) forged on the scanner's LAN, each from the target of the next
    /// probe, 10 ms before it; the scanner joins the segment's BitTorrent hosts with a
    /// `find_node`. With `genuine_list`, the scanner first fetches a genuine peer list
    /// ([`genuine_list`]), which makes the LAN's predictions trusted.
    Lsd { genuine_list: bool },
    /// One probe every 10 s (an hour of packet time), the targets re-announced by unsolicited
    /// DHT `values` every 20 minutes.
    SlowScan,
    /// Every probe preceded by an unsolicited DHT `values` naming its target 50 ms before.
    JustInTime,
    /// Not in the list: the accomplice's DHT `values` name every target and every
    /// decoy, and three decoys on random high ports pad every probe (the scan then makes up
    /// a quarter of the attempts, and everything is predicted).
    AccompliceDecoys,
    /// Not in the list: the accomplice's DHT `values` name the targets only, and one
    /// decoy on a random high port pads every third probe (a quarter of the scanner's peers).
    AccompliceFewDecoys,
    /// Not in the list: the sweep split over two services (445 and 139) on disjoint
    /// halves of the hosts, every target named by the accomplice's DHT `values`.
    SplitServices,
}

/// A generated capture and what it holds.
pub struct Scenario {
    pub capture: Capture,
    /// Every (address, port) the scanner probes over TCP, decoys excluded.
    pub targets: Vec<SocketAddr>,
    /// The decoys' (address, port), if any.
    pub decoys: Vec<SocketAddr>,
    /// The peers the control host was told about (and then tried).
    pub control_peers: Vec<SocketAddr>,
}

fn sock((ip, port): ([u8; 4], u16)) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)
}

fn ep((ip, port): ([u8; 4], u16)) -> Endpoint {
    (Ip::V4(ip), port)
}

/// The sweep's (address, port) list, in probe order. `lan`: on the scanner's own /24.
pub fn targets(sweep: Sweep, lan: bool, n: usize) -> Vec<([u8; 4], u16)> {
    match (sweep, lan) {
        (Sweep::Horizontal, false) => (0..n)
            .map(|i| {
                let i = u8::try_from(i / 250)
                    .map(|hi| (hi, i % 250))
                    .expect("< 64000");
                ([198, 18, i.0, u8::try_from(1 + i.1).expect("≤ 250")], 445)
            })
            .collect(),
        (Sweep::Horizontal, true) => (1..=254u8)
            .filter(|o| ![SCANNER[3], BT_HOST[3], LAN_VICTIM[3], 1].contains(o))
            .take(n)
            .map(|o| ([10, 0, 0, o], 445))
            .collect(),
        (Sweep::Vertical, lan) => {
            let host = if lan { LAN_VICTIM } else { VICTIM };
            (1..=u16::try_from(n).expect("ports"))
                .map(|p| (host, p))
                .collect()
        }
    }
}

/// A bare SYN from `src` (no retransmission: the scanner moves on).
fn syn(g: &mut Gen, t: f64, src: Endpoint, dst: Endpoint, opts: bool) {
    let seq = g.rng.u32();
    let o: &[_] = if opts { &SYN_OPTS } else { &SCAN_OPTS };
    g.tcp(at(t), Link::Plain, src, dst, SYN, seq, 0, 64240, o, &[]);
}

/// One TCP connection, for payloads both ways.
struct Conn {
    client: Endpoint,
    server: Endpoint,
    c_seq: u32,
    s_seq: u32,
}

impl Conn {
    /// Three-way handshake at `t`; `rtt` later the SYN-ACK, then the ACK.
    fn open(g: &mut Gen, t: f64, client: Endpoint, server: Endpoint) -> Self {
        let (c_isn, s_isn) = (g.rng.u32(), g.rng.u32());
        let l = Link::Plain;
        g.tcp(
            at(t),
            l,
            client,
            server,
            SYN,
            c_isn,
            0,
            64240,
            &SYN_OPTS,
            &[],
        );
        let (c1, s1) = (c_isn.wrapping_add(1), s_isn.wrapping_add(1));
        g.tcp(
            at(t + 0.002),
            l,
            server,
            client,
            SYN | ACK,
            s_isn,
            c1,
            65160,
            &SYN_OPTS,
            &[],
        );
        g.tcp(
            at(t + 0.0021),
            l,
            client,
            server,
            ACK,
            c1,
            s1,
            502,
            &[],
            &[],
        );
        Conn {
            client,
            server,
            c_seq: c1,
            s_seq: s1,
        }
    }

    /// `data` from the client (`to_server`) or the server, in segments of at most 1400 bytes
    /// starting at `t`, 100 µs apart; returns the time after the last.
    fn send(&mut self, g: &mut Gen, mut t: f64, to_server: bool, data: &[u8]) -> f64 {
        for chunk in data.chunks(1400) {
            let (src, dst, seq, ack) = if to_server {
                (self.client, self.server, self.c_seq, self.s_seq)
            } else {
                (self.server, self.client, self.s_seq, self.c_seq)
            };
            g.tcp(
                at(t),
                Link::Plain,
                src,
                dst,
                PSH | ACK,
                seq,
                ack,
                502,
                &[],
                chunk,
            );
            if to_server {
                self.c_seq = self.c_seq.wrapping_add(len32(chunk));
            } else {
                self.s_seq = self.s_seq.wrapping_add(len32(chunk));
            }
            t += 0.0001;
        }
        t
    }

    /// Orderly close from the client.
    fn close(&self, g: &mut Gen, t: f64) {
        let (client, server) = (self.client, self.server);
        let (c_seq, s_seq) = (self.c_seq, self.s_seq);
        let (c_fin, s_fin) = (c_seq.wrapping_add(1), s_seq.wrapping_add(1));
        let link = Link::Plain;
        let fa = FIN | ACK;
        g.tcp(at(t), link, client, server, fa, c_seq, s_seq, 502, &[], &[]);
        g.tcp(
            at(t + 0.002),
            link,
            server,
            client,
            fa,
            s_seq,
            c_fin,
            502,
            &[],
            &[],
        );
        g.tcp(
            at(t + 0.0021),
            link,
            client,
            server,
            ACK,
            c_fin,
            s_fin,
            502,
            &[],
            &[],
        );
    }
}

/// Compact IPv4 peers (BEP 23).
fn compact(peers: &[([u8; 4], u16)]) -> Vec<u8> {
    peers
        .iter()
        .flat_map(|&(ip, p)| compact_v4(ip, p))
        .collect()
}

/// `get_peers` responses from `node` to `host`, 100 `values` each, at `t` (each after its
/// query when `query`).
fn dht_values(
    g: &mut Gen,
    t: f64,
    host: [u8; 4],
    node: [u8; 4],
    peers: &[([u8; 4], u16)],
    query: bool,
) {
    let me = (Ip::V4(host), BT_PORT);
    let them = (Ip::V4(node), BT_PORT);
    let (my_id, info_hash, node_id): ([u8; 20], [u8; 20], [u8; 20]) =
        (g.rng.bytes(), g.rng.bytes(), g.rng.bytes());
    for (i, chunk) in peers.chunks(100).enumerate() {
        let t = t + 0.1 * i as f64;
        let tid: [u8; 2] = g.rng.bytes();
        if query {
            let q = krpc_query(
                tid,
                "get_peers",
                vec![
                    ("id", Bencode::bytes(&my_id)),
                    ("info_hash", Bencode::bytes(&info_hash)),
                ],
            );
            g.udp(at(t), Link::Plain, me, them, &q);
        }
        let values = chunk
            .iter()
            .map(|&(ip, p)| Bencode::Bytes(compact_v4(ip, p)))
            .collect();
        let r = krpc_response(
            tid,
            vec![
                ("id", Bencode::bytes(&node_id)),
                ("token", Bencode::bytes(&g.rng.bytes::<8>())),
                ("values", Bencode::List(values)),
            ],
        );
        g.udp(at(t + 0.04), Link::Plain, them, me, &r);
    }
}

/// A `find_node` to the bootstrap node, answered with 8 `nodes` (what any host gets).
fn find_node(g: &mut Gen, t: f64, host: [u8; 4]) {
    let me = (Ip::V4(host), BT_PORT);
    let node = (Ip::V4(BOOTSTRAP), BT_PORT);
    let tid: [u8; 2] = g.rng.bytes();
    let (id, target, node_id): ([u8; 20], [u8; 20], [u8; 20]) =
        (g.rng.bytes(), g.rng.bytes(), g.rng.bytes());
    let q = krpc_query(
        tid,
        "find_node",
        vec![
            ("id", Bencode::bytes(&id)),
            ("target", Bencode::bytes(&target)),
        ],
    );
    g.udp(at(t), Link::Plain, me, node, &q);
    let mut nodes = Vec::new();
    for k in 0..8u8 {
        nodes.extend_from_slice(&g.rng.bytes::<20>());
        nodes.extend_from_slice(&compact_v4([203, 0, 113, 210 + k], g.rng.port(1025, 65000)));
    }
    let r = krpc_response(
        tid,
        vec![
            ("id", Bencode::bytes(&node_id)),
            ("nodes", Bencode::Bytes(nodes)),
        ],
    );
    g.udp(at(t + 0.05), Link::Plain, node, me, &r);
}

/// BEP 15 connect, then one announce per 150 peers, each answered with its share of `peers`.
fn udp_tracker(g: &mut Gen, t: f64, host: [u8; 4], tracker: [u8; 4], peers: &[([u8; 4], u16)]) {
    let me = (Ip::V4(host), BT_PORT);
    let trk = (Ip::V4(tracker), TRACKER_PORT);
    let tid = g.rng.u32();
    let mut req = 0x0417_2710_1980u64.to_be_bytes().to_vec();
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&tid.to_be_bytes());
    g.udp(at(t), Link::Plain, me, trk, &req);
    let conn_id = g.rng.next_u64();
    let mut resp = 0u32.to_be_bytes().to_vec();
    resp.extend_from_slice(&tid.to_be_bytes());
    resp.extend_from_slice(&conn_id.to_be_bytes());
    g.udp(at(t + 0.04), Link::Plain, trk, me, &resp);
    let (info_hash, peer_id): ([u8; 20], [u8; 20]) = (g.rng.bytes(), g.rng.bytes());
    for (i, chunk) in peers.chunks(150).enumerate() {
        let t = t + 0.1 + 0.1 * i as f64;
        let tid = g.rng.u32();
        let mut ann = conn_id.to_be_bytes().to_vec();
        ann.extend_from_slice(&1u32.to_be_bytes());
        ann.extend_from_slice(&tid.to_be_bytes());
        ann.extend_from_slice(&info_hash);
        ann.extend_from_slice(&peer_id);
        ann.extend_from_slice(&0u64.to_be_bytes()); // downloaded
        ann.extend_from_slice(&734_003_200u64.to_be_bytes()); // left
        ann.extend_from_slice(&0u64.to_be_bytes()); // uploaded
        ann.extend_from_slice(&2u32.to_be_bytes()); // event: started
        ann.extend_from_slice(&0u32.to_be_bytes()); // ip
        ann.extend_from_slice(&g.rng.u32().to_be_bytes()); // key
        ann.extend_from_slice(&(-1i32).to_be_bytes()); // num_want
        ann.extend_from_slice(&BT_PORT.to_be_bytes());
        g.udp(at(t), Link::Plain, me, trk, &ann);
        let mut resp = 1u32.to_be_bytes().to_vec();
        resp.extend_from_slice(&tid.to_be_bytes());
        resp.extend_from_slice(&1800u32.to_be_bytes()); // interval
        resp.extend_from_slice(&10u32.to_be_bytes()); // leechers
        resp.extend_from_slice(&20u32.to_be_bytes()); // seeders
        resp.extend_from_slice(&compact(chunk));
        g.udp(at(t + 0.04), Link::Plain, trk, me, &resp);
    }
}

fn url_encode(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "%{b:02X}");
        s
    })
}

/// An HTTP tracker announce on one keep-alive connection to port 6969, its reply listing
/// `peers` as a compact string.
fn http_tracker(g: &mut Gen, t: f64, host: [u8; 4], peers: &[([u8; 4], u16)]) {
    let client = (Ip::V4(host), g.rng.port(40000, 60000));
    let server = (Ip::V4(TRACKER), TRACKER_PORT);
    let mut c = Conn::open(g, t, client, server);
    let (info_hash, peer_id): ([u8; 20], [u8; 20]) = (g.rng.bytes(), g.rng.bytes());
    let req = format!(
        "GET /announce?info_hash={}&peer_id={}&port={BT_PORT}&uploaded=0&downloaded=0&left=734003200&compact=1&event=started HTTP/1.1\r\nHost: tracker.example.net:{TRACKER_PORT}\r\nUser-Agent: demo/1.0\r\nAccept-Encoding: identity\r\n\r\n",
        url_encode(&info_hash),
        url_encode(&peer_id)
    );
    let t = c.send(g, t + 0.003, true, req.as_bytes());
    let body = Bencode::dict(vec![
        ("interval", Bencode::Int(1800)),
        ("peers", Bencode::Bytes(compact(peers))),
    ])
    .encode();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(&body);
    let t = c.send(g, t + 0.03, false, &resp);
    c.close(g, t + 0.01);
}

/// A BEP 10 message: length, id 20, extended id, bencoded body.
fn extended(ext: u8, body: &[u8]) -> Vec<u8> {
    let mut m = (len32(body) + 2).to_be_bytes().to_vec();
    m.push(20);
    m.push(ext);
    m.extend_from_slice(body);
    m
}

/// An extended handshake announcing `ut_pex` as `pex_id`, with optional `ipv4` and `p`.
fn ext_handshake(pex_id: u8, ipv4: Option<[u8; 4]>, p: Option<u16>) -> Vec<u8> {
    let mut d = vec![
        (
            "m",
            Bencode::dict(vec![("ut_pex", Bencode::Int(pex_id.into()))]),
        ),
        ("v", Bencode::bytes(b"demo 1.0")),
    ];
    if let Some(ip) = ipv4 {
        d.push(("ipv4", Bencode::bytes(&ip)));
    }
    if let Some(p) = p {
        d.push(("p", Bencode::Int(p.into())));
    }
    extended(0, &Bencode::dict(d).encode())
}

/// The accomplice connects to the scanner's BitTorrent port; both send the BEP 3 and BEP 10
/// handshakes (the accomplice's with `ipv4`/`p` when given); then `then` writes more from the
/// accomplice. Returns the time after the close.
fn peer_wire(
    g: &mut Gen,
    t: f64,
    host: [u8; 4],
    announce: Option<([u8; 4], u16)>,
    then: &[Vec<u8>],
) -> f64 {
    let client = (Ip::V4(ACCOMPLICE), g.rng.port(40000, 60000));
    let server = (Ip::V4(host), BT_PORT);
    let mut c = Conn::open(g, t, client, server);
    let info_hash: [u8; 20] = g.rng.bytes();
    let (theirs, mine): ([u8; 20], [u8; 20]) = (g.rng.bytes(), g.rng.bytes());
    let mut hello = bt_handshake(&info_hash, &theirs);
    hello.extend(ext_handshake(
        1,
        announce.map(|a| a.0),
        announce.map(|a| a.1),
    ));
    let t = c.send(g, t + 0.003, true, &hello);
    let mut reply = bt_handshake(&info_hash, &mine);
    reply.extend(ext_handshake(2, None, Some(BT_PORT)));
    let mut t = c.send(g, t + 0.002, false, &reply);
    for msg in then {
        t = c.send(g, t + 0.001, true, msg);
    }
    c.close(g, t + 0.002);
    t + 0.003
}

/// ut_pex messages (to the scanner, whose ut_pex id is 2): 50 `added` peers each.
fn pex_messages(peers: &[([u8; 4], u16)]) -> Vec<Vec<u8>> {
    peers
        .chunks(50)
        .map(|chunk| {
            let body = Bencode::dict(vec![
                ("added", Bencode::Bytes(compact(chunk))),
                ("added.f", Bencode::Bytes(vec![0x10; chunk.len()])),
                ("dropped", Bencode::bytes(b"")),
            ])
            .encode();
            extended(2, &body)
        })
        .collect()
}

/// A BEP 29 ST_SYN from `src` to `dst`.
fn utp_syn(g: &mut Gen, t: f64, src: Endpoint, dst: Endpoint) {
    let mut h = vec![0x41, 0];
    h.extend_from_slice(&g.rng.u16().max(1).to_be_bytes()); // connection_id
    h.extend_from_slice(&at(t).to_be_bytes()[4..]); // timestamp (low 32 bits)
    h.extend_from_slice(&0u32.to_be_bytes()); // timestamp_difference
    h.extend_from_slice(&1_048_576u32.to_be_bytes()); // wnd_size
    h.extend_from_slice(&g.rng.u16().to_be_bytes()); // seq_nr
    h.extend_from_slice(&0u16.to_be_bytes()); // ack_nr
    g.udp(at(t), Link::Plain, src, dst, &h);
}

/// A BEP 14 announce from `src` on the LAN for `port`.
fn lsd_announce(g: &mut Gen, t: f64, src: [u8; 4], port: u16) {
    let ih: [u8; 20] = g.rng.bytes();
    let hex = hex::encode(ih);
    let msg = format!(
        "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: {port}\r\nInfohash: {hex}\r\ncookie: {:08x}\r\n\r\n\r\n",
        g.rng.u32()
    );
    g.udp(
        at(t),
        Link::Plain,
        (Ip::V4(src), LSD_PORT),
        (Ip::V4(LSD_GROUP), LSD_PORT),
        msg.as_bytes(),
    );
}

/// The control: a BitTorrent host announces to a tracker at 1 s, which lists 40 peers on
/// random high ports of random hosts; it tries each (unanswered SYNs) from 2 s, 0.5 s apart.
fn control(g: &mut Gen) -> Vec<([u8; 4], u16)> {
    let peers: Vec<([u8; 4], u16)> = (0..40u8)
        .map(|i| {
            let net = if i % 2 == 0 {
                [203, 0, 113]
            } else {
                [192, 0, 2]
            };
            ([net[0], net[1], net[2], 20 + i], g.rng.port(10000, 65000))
        })
        .collect();
    udp_tracker(g, 1.0, BT_HOST, TRACKER, &peers);
    for (i, &p) in peers.iter().enumerate() {
        let src = (Ip::V4(BT_HOST), 50000 + u16::try_from(i).expect("40"));
        syn(g, 2.0 + 0.5 * i as f64, src, ep(p), true);
    }
    peers
}

/// A genuine DHT node, and the one peer on a high port it lists for a popular torrent.
pub const GENUINE_NODE: [u8; 4] = [203, 0, 113, 150];
pub const GENUINE_PEER: ([u8; 4], u16) = ([203, 0, 113, 77], 51413);

/// What any host gets by asking the DHT for a popular torrent: a `get_peers` answered with
/// real `values` (here one peer), third-party evidence that it runs BitTorrent.
fn genuine_list(g: &mut Gen, t: f64) {
    dht_values(g, t, SCANNER, GENUINE_NODE, &[GENUINE_PEER], true);
}

/// A fresh host on a random high port, for decoys.
fn decoy(rng: &mut Rng, i: usize) -> ([u8; 4], u16) {
    let i = u16::try_from(i).expect("few decoys").to_be_bytes();
    ([198, 19, i[0], i[1]], rng.port(1024, 65535))
}

/// Builds the capture of `attack` against a `sweep`.
pub fn scenario(attack: Attack, sweep: Sweep) -> Scenario {
    let mut g = Gen {
        // A seed of its own per scenario, stable across runs and platforms.
        rng: Rng(format!("{attack:?} {sweep:?}")
            .bytes()
            .fold(0xA77A_C4ED_5CA7_7E55, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
            })),
        frames: Vec::new(),
    };
    let control_peers = control(&mut g);
    let lan = matches!(attack, Attack::Lsd { .. });
    let n = match attack {
        Attack::SlowScan => 360,
        _ => 300,
    };
    let targets = targets(sweep, lan, n);
    let me = |port: u16| (Ip::V4(SCANNER), port);
    let mut decoys = Vec::new();
    let gap = if attack == Attack::SlowScan {
        10.0
    } else {
        SCAN_GAP
    };
    let probe_t = |i: usize| SCAN_START + gap * i as f64;
    match attack {
        Attack::DhtValues { query } => {
            dht_values(&mut g, 2.0, SCANNER, ACCOMPLICE, &targets, query);
        }
        Attack::UdpTracker => udp_tracker(&mut g, 2.0, SCANNER, ACCOMPLICE, &targets),
        Attack::HttpTracker => http_tracker(&mut g, 2.0, SCANNER, &targets),
        Attack::Pex => {
            peer_wire(&mut g, 2.0, SCANNER, None, &pex_messages(&targets));
        }
        Attack::ExtHandshakes => {
            let mut t = 0.5;
            for &target in &targets {
                t = peer_wire(&mut g, t, SCANNER, Some(target), &[]);
            }
            assert!(t < SCAN_START, "the handshakes end before the scan");
        }
        Attack::SelfAnnounced { decoys: pad, .. } => {
            find_node(&mut g, 2.0, SCANNER);
            if pad {
                for i in 0..3 * targets.len() {
                    decoys.push(decoy(&mut g.rng, i));
                }
            }
        }
        Attack::Lsd { .. } => {
            // The scanner becomes one of the segment's BitTorrent hosts after the first
            // announce: a KRPC query is all it takes.
            lsd_announce(&mut g, 2.0, [10, 0, 0, 99], 51413);
            find_node(&mut g, 2.01, SCANNER);
        }
        Attack::SlowScan => {
            for k in 0..4 {
                dht_values(
                    &mut g,
                    2.0 + 1200.0 * f64::from(k),
                    SCANNER,
                    ACCOMPLICE,
                    &targets,
                    false,
                );
            }
        }
        Attack::JustInTime => {
            for (i, &target) in targets.iter().enumerate() {
                let t = probe_t(i) - 0.05 - 0.04;
                dht_values(&mut g, t, SCANNER, ACCOMPLICE, &[target], false);
            }
        }
        Attack::AccompliceDecoys => {
            for i in 0..3 * targets.len() {
                decoys.push(decoy(&mut g.rng, i));
            }
            let mut all = targets.clone();
            all.extend_from_slice(&decoys);
            dht_values(&mut g, 2.0, SCANNER, ACCOMPLICE, &all, true);
        }
        Attack::AccompliceFewDecoys => {
            for i in 0..targets.len() / 3 {
                decoys.push(decoy(&mut g.rng, i));
            }
            dht_values(&mut g, 2.0, SCANNER, ACCOMPLICE, &targets, true);
        }
        Attack::SplitServices => {}
    }
    let targets: Vec<([u8; 4], u16)> = if attack == Attack::SplitServices {
        targets
            .into_iter()
            .enumerate()
            .map(|(i, (ip, p))| (ip, if i % 2 == 1 && p == 445 { 139 } else { p }))
            .collect()
    } else {
        targets
    };
    if attack == Attack::SplitServices {
        dht_values(&mut g, 2.0, SCANNER, ACCOMPLICE, &targets, true);
    }
    if let Attack::SelfAnnounced {
        genuine_list: true, ..
    }
    | Attack::Lsd { genuine_list: true } = attack
    {
        genuine_list(&mut g, 1.5);
    }
    let utp = matches!(attack, Attack::SelfAnnounced { .. });
    let mut sport = 40000u16;
    let mut next_port = || {
        sport = sport.wrapping_add(1).max(1024);
        sport
    };
    for (i, &target) in targets.iter().enumerate() {
        let t = probe_t(i);
        if lan {
            lsd_announce(&mut g, t - 0.01, target.0, target.1);
        }
        if utp {
            utp_syn(&mut g, t - 0.005, me(BT_PORT), ep(target));
        }
        syn(&mut g, t, me(next_port()), ep(target), false);
        // Decoy j pads probe j·n/d: spread evenly over the sweep, whatever their number.
        let mine = (0..decoys.len()).filter(|j| j * targets.len() / decoys.len() == i);
        for (k, j) in mine.enumerate() {
            let d = decoys[j];
            let td = t + 0.005 * (k + 1) as f64;
            if utp {
                utp_syn(&mut g, td - 0.001, me(BT_PORT), ep(d));
            }
            syn(&mut g, td, me(next_port()), ep(d), true);
        }
    }
    Scenario {
        capture: finish(g.frames),
        targets: targets.into_iter().map(sock).collect(),
        decoys: decoys.into_iter().map(sock).collect(),
        control_peers: control_peers.into_iter().map(sock).collect(),
    }
}

/// A flood aimed at a coordination table, concurrent with a genuine client's announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelFlood {
    /// One-segment `GET /announce?info_hash=…` requests to the tracker, each from a spoofed
    /// source of its own (no handshake, never answered), 200 a second for a minute: the
    /// 1,024-entry HTTP tracker session table stays full of requests younger than any answer
    /// deadline; and a burst of 1,100 more between the client's in-flood request and its
    /// reply (the attack: enough to push out the oldest 1,024 sessions). The client announces (answered) before the flood when `standing`, and in the
    /// middle of it on a new connection; that reply lists [`FLOOD_PEERS`] peers.
    HttpGet { standing: bool },
    /// BEP 5 `get_peers` queries, each from a spoofed source of its own to a random node
    /// (never answered), 4,000 a second for 4 s. The client queries a node (answered) before
    /// the flood when `standing`, and twice in the middle of it; the node takes a second to
    /// answer, listing [`FLOOD_PEERS`] peers.
    DhtQueries { standing: bool },
}

/// Peers the client is told about during the flood, and then dials.
pub const FLOOD_PEERS: usize = 120;
/// The genuine DHT node the client asks during the flood.
pub const CLIENT_NODE: [u8; 4] = [203, 0, 113, 151];

/// A coordination-table flood and what the client was told.
pub struct FloodScenario {
    pub capture: Capture,
    /// The peers the client's in-flood announce listed, which it then tries (unanswered).
    pub client_peers: Vec<SocketAddr>,
    /// Flood packets sent.
    pub flood_packets: usize,
}

/// The `i`-th spoofed source: a fresh address in 198.18.0.0/15 and a random port.
fn spoofed(rng: &mut Rng, i: usize) -> Endpoint {
    let i = u32::try_from(i).expect("bounded flood");
    let a = u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i;
    (Ip::V4(Ipv4Addr::from(a).octets()), rng.port(1024, 65535))
}

/// An HTTP tracker announce request for a random torrent, as a client sends it.
fn announce_request(rng: &mut Rng) -> String {
    let (info_hash, peer_id): ([u8; 20], [u8; 20]) = (rng.bytes(), rng.bytes());
    format!(
        "GET /announce?info_hash={}&peer_id={}&port={BT_PORT}&uploaded=0&downloaded=0&left=734003200&compact=1&event=started HTTP/1.1\r\nHost: tracker.example.net:{TRACKER_PORT}\r\nUser-Agent: demo/1.0\r\nAccept-Encoding: identity\r\n\r\n",
        url_encode(&info_hash),
        url_encode(&peer_id)
    )
}

/// Builds the capture of `flood`: the client ([`BT_HOST`]) announces once before the flood
/// (a few peers), again during it ([`FLOOD_PEERS`] peers on random high ports), and then
/// tries every peer of the second reply, 0.2 s apart (unanswered SYNs, as to peers gone).
pub fn channel_flood(flood: ChannelFlood) -> FloodScenario {
    let mut g = Gen {
        rng: Rng(format!("{flood:?}")
            .bytes()
            .fold(0xF100_D5EE_D000_0001, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
            })),
        frames: Vec::new(),
    };
    let peers: Vec<([u8; 4], u16)> = (0..FLOOD_PEERS)
        .map(|i| {
            let i = u16::try_from(i).expect("few peers").to_be_bytes();
            ([100, 64, i[0], 10 + i[1]], g.rng.port(10_000, 65_000))
        })
        .collect();
    let early: Vec<([u8; 4], u16)> = (0..5u8)
        .map(|i| ([100, 65, 0, 10 + i], g.rng.port(10_000, 65_000)))
        .collect();
    let (flood_start, flood_secs, rate, announce_at): (f64, u32, u32, f64) = match flood {
        ChannelFlood::HttpGet { .. } => (2.0, 60, 200, 30.0),
        ChannelFlood::DhtQueries { .. } => (6.0, 4, 4_000, 8.0),
    };
    // Before the flood: an answered announce, which gives the client standing.
    match flood {
        ChannelFlood::HttpGet { standing: true } => http_tracker(&mut g, 1.0, BT_HOST, &early),
        ChannelFlood::DhtQueries { standing: true } => {
            dht_values(&mut g, 1.0, BT_HOST, GENUINE_NODE, &early, true);
        }
        _ => {}
    }
    // The flood (and the burst, for the HTTP tracker).
    let n = usize::try_from(flood_secs * rate).expect("bounded flood");
    let burst = if matches!(flood, ChannelFlood::HttpGet { .. }) {
        1_100
    } else {
        0
    };
    for i in 0..n + burst {
        let t = if i < n {
            flood_start + i as f64 / f64::from(rate)
        } else {
            // Between the request (+3 ms) and the reply (+33 ms) of `http_tracker`.
            announce_at + 0.004 + 0.025 * (i - n) as f64 / burst as f64
        };
        let src = spoofed(&mut g.rng, i);
        match flood {
            ChannelFlood::HttpGet { .. } => {
                let req = announce_request(&mut g.rng);
                let (seq, ack) = (g.rng.u32(), g.rng.u32());
                let trk = (Ip::V4(TRACKER), TRACKER_PORT);
                let l = Link::Plain;
                g.tcp(
                    at(t),
                    l,
                    src,
                    trk,
                    PSH | ACK,
                    seq,
                    ack,
                    502,
                    &[],
                    req.as_bytes(),
                );
            }
            ChannelFlood::DhtQueries { .. } => {
                let node = spoofed(&mut g.rng, 1_000_000 + i);
                let (tid, id, ih): ([u8; 2], [u8; 20], [u8; 20]) =
                    (g.rng.bytes(), g.rng.bytes(), g.rng.bytes());
                let q = krpc_query(
                    tid,
                    "get_peers",
                    vec![
                        ("id", Bencode::bytes(&id)),
                        ("info_hash", Bencode::bytes(&ih)),
                    ],
                );
                g.udp(at(t), Link::Plain, src, node, &q);
            }
        }
    }
    // The client's announce in the middle of the flood.
    match flood {
        ChannelFlood::HttpGet { .. } => http_tracker(&mut g, announce_at, BT_HOST, &peers),
        ChannelFlood::DhtQueries { .. } => {
            slow_get_peers(&mut g, announce_at, BT_HOST, CLIENT_NODE, &peers, 1.0);
        }
    }
    let dial_from = announce_at + 2.0;
    for (i, &p) in peers.iter().enumerate() {
        let src = (
            Ip::V4(BT_HOST),
            50_000 + u16::try_from(i).expect("few peers"),
        );
        syn(&mut g, dial_from + 0.2 * i as f64, src, ep(p), true);
    }
    FloodScenario {
        capture: finish(g.frames),
        client_peers: peers.into_iter().map(sock).collect(),
        flood_packets: n + burst,
    }
}

/// `get_peers` queries from `host` to `node`, 100 `values` per response, each response
/// `delay` seconds after its query.
fn slow_get_peers(
    g: &mut Gen,
    t: f64,
    host: [u8; 4],
    node: [u8; 4],
    peers: &[([u8; 4], u16)],
    delay: f64,
) {
    let me = (Ip::V4(host), BT_PORT);
    let them = (Ip::V4(node), BT_PORT);
    let (my_id, info_hash, node_id): ([u8; 20], [u8; 20], [u8; 20]) =
        (g.rng.bytes(), g.rng.bytes(), g.rng.bytes());
    for (i, chunk) in peers.chunks(100).enumerate() {
        let t = t + 0.01 * i as f64;
        let tid: [u8; 2] = g.rng.bytes();
        let q = krpc_query(
            tid,
            "get_peers",
            vec![
                ("id", Bencode::bytes(&my_id)),
                ("info_hash", Bencode::bytes(&info_hash)),
            ],
        );
        g.udp(at(t), Link::Plain, me, them, &q);
        let values = chunk
            .iter()
            .map(|&(ip, p)| Bencode::Bytes(compact_v4(ip, p)))
            .collect();
        let r = krpc_response(
            tid,
            vec![
                ("id", Bencode::bytes(&node_id)),
                ("token", Bencode::bytes(&g.rng.bytes::<8>())),
                ("values", Bencode::List(values)),
            ],
        );
        g.udp(at(t + delay), Link::Plain, them, me, &r);
    }
}

// A scan hidden in real BitTorrent traffic.

/// A capture file's frames (pcap or pcapng, any link type the sensor reads), as Ethernet
/// frames in file order, timestamps rounded down to the microsecond.
pub fn read_capture(path: &std::path::Path) -> anyhow::Result<Capture> {
    let mut packets = Vec::new();
    let report = sensor::capture::pcap::read_frames(path, |ts, frame| {
        packets.push(crate::synth::SynthPacket {
            ts: std::time::Duration::from_micros(ts.as_nanos() / 1_000),
            frame: frame.to_vec(),
        });
    })?;
    if let Some(e) = report.error {
        anyhow::bail!("{}: {e}", path.display());
    }
    Ok(Capture { packets })
}

/// The IP source and destination of an Ethernet frame (VLAN tags skipped; a cut frame is
/// read as far as it goes).
fn ip_pair(frame: &[u8]) -> Option<(IpAddr, IpAddr)> {
    use etherparse::{LaxNetSlice, LaxSlicedPacket};
    match LaxSlicedPacket::from_ethernet(frame).ok()?.net? {
        LaxNetSlice::Ipv4(v4) => Some((
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        )),
        LaxNetSlice::Ipv6(v6) => Some((
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        )),
        LaxNetSlice::Arp(_) => None,
    }
}

/// The frames to or from `host`, within `window` (seconds from the capture's first frame,
/// start inclusive, end exclusive).
pub fn cut_host(capture: &Capture, host: IpAddr, window: (f64, f64)) -> Capture {
    cut(capture, window, |frame| {
        ip_pair(frame).is_some_and(|(s, d)| s == host || d == host)
    })
}

/// Every frame within `window` (as for [`cut_host`]).
pub fn cut_window(capture: &Capture, window: (f64, f64)) -> Capture {
    cut(capture, window, |_| true)
}

fn cut(capture: &Capture, window: (f64, f64), keep: impl Fn(&[u8]) -> bool) -> Capture {
    let Some(t0) = capture.packets.first().map(|p| p.ts) else {
        return Capture {
            packets: Vec::new(),
        };
    };
    let packets = capture
        .packets
        .iter()
        .filter(|p| {
            let t = p.ts.saturating_sub(t0).as_secs_f64();
            t >= window.0 && t < window.1 && keep(&p.frame)
        })
        .cloned()
        .collect();
    Capture { packets }
}

/// `capture` with a horizontal sweep added: `n` bare SYNs (no answer) from `host` to `port`
/// on `n` addresses of 198.19.0.0/16, spread evenly between the host's first and last frame
/// (interleaved with its own traffic), in Ethernet frames with the MAC addresses of the host's
/// own outgoing frames. Returns the capture and the targets.
pub fn hide_sweep(
    capture: &Capture,
    host: Ipv4Addr,
    port: u16,
    n: usize,
) -> anyhow::Result<(Capture, Vec<SocketAddr>)> {
    use anyhow::Context as _;
    let host_ip = IpAddr::V4(host);
    let own: Vec<&crate::synth::SynthPacket> = capture
        .packets
        .iter()
        .filter(|p| ip_pair(&p.frame).is_some_and(|(s, _)| s == host_ip))
        .collect();
    let first = own.first().context("the host sends nothing")?;
    let last = own.last().context("the host sends nothing")?;
    let (dst_mac, src_mac): ([u8; 6], [u8; 6]) = (
        first.frame[0..6].try_into()?,
        first.frame[6..12].try_into()?,
    );
    let span = last.ts.saturating_sub(first.ts);
    let mut rng = Rng(0x5CA7_0445_0000_0001 ^ u64::from(u32::from(host)));
    let mut packets = capture.packets.clone();
    let mut targets = Vec::with_capacity(n);
    for k in 0..n {
        let i = u16::try_from(k).context("at most 65,535 targets")?;
        let [hi, lo] = i.to_be_bytes();
        let target = Ipv4Addr::new(198, 19, hi, lo);
        let sport = 40_000 + i % 20_000;
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(host.octets(), target.octets(), 64)
            .tcp(sport, port, rng.u32(), 64_240)
            .syn()
            .write(&mut frame, &[])?;
        // Even spacing, whole microseconds (what a pcap keeps).
        let offset = span.as_micros() * (2 * k as u128 + 1) / (2 * n as u128);
        let ts = first.ts + std::time::Duration::from_micros(u64::try_from(offset)?);
        packets.push(crate::synth::SynthPacket { ts, frame });
        targets.push(SocketAddr::new(target.into(), port));
    }
    // Stable: the capture's own frames keep their order.
    packets.sort_by_key(|p| p.ts);
    Ok((Capture { packets }, targets))
}

/// The committed fixture: [`FIXTURE_HOST`]'s frames, cut from the lab capture
/// `bt-heavy-1/bt-heavy.pcap` by [`cut_host`] over [`FIXTURE_WINDOW`]
/// (`cargo run -p sensor-tests --bin cut-fixture`).
pub const FIXTURE: &str = "fixtures/bt-heavy-rtorrent.pcap";
/// rtorrent 0.9.8 (libtorrent 0.13.8) in the lab's bt-heavy run: UDP trackers, DHT and PEX.
pub const FIXTURE_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 11, 79);
/// The whole run (5.5 minutes): the host's traffic is small.
pub const FIXTURE_WINDOW: (f64, f64) = (0.0, 400.0);
