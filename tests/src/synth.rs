//! Deterministic synthetic demo capture.
//!
//! Builds, from a fixed seed, the ~2 minute capture that `cargo xtask run` replays into a veth
//! pair and that the integration tests replay: a BitTorrent host learning peers from a UDP
//! tracker and the Mainline DHT and then connecting to them, a VLAN-tagged port scanner, benign
//! background traffic and a handful of awkward edge frames. Only documentation address ranges
//! (RFC 5737 / RFC 3849) and locally administered MACs are used, so replaying it is harmless.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6Header, Ipv6RawExtHeader, PacketBuilder, PacketBuilderStep, TcpHeader, TcpOptionElement,
    VlanId,
};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// A whole capture, packets in time order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub packets: Vec<SynthPacket>,
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthPacket {
    /// Time since the UNIX epoch (whole microseconds, to survive the pcap round trip).
    pub ts: Duration,
    /// Full Ethernet frame, without FCS.
    pub frame: Vec<u8>,
}

impl Capture {
    /// Writes a classic (libpcap) capture: LINKTYPE_ETHERNET, microsecond timestamps.
    pub fn write_pcap(&self, w: impl Write) -> Result<()> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: 65535,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            // Fixed rather than native so the bundled file is byte-identical on every host.
            endianness: Endianness::Little,
        };
        let mut writer = PcapWriter::with_header(w, header).context("writing pcap header")?;
        for p in &self.packets {
            let len = u32::try_from(p.frame.len()).context("frame longer than 4 GiB")?;
            let packet = PcapPacket::new(p.ts, len, &p.frame);
            writer
                .write_packet(&packet)
                .context("writing pcap packet")?;
        }
        Ok(())
    }

    /// Writes the capture to `path` (created or truncated).
    pub fn write_pcap_file(&self, path: &Path) -> Result<()> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        self.write_pcap(&mut out)?;
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// 2026-01-01T00:00:00Z.
const START_SECS: u64 = 1_767_225_600;
const SEED: u64 = 0x5EED_B17D_0C0F_FEE5;

// Hosts on the monitored segment (192.0.2.0/24, 2001:db8::/64).
const GATEWAY: [u8; 4] = [192, 0, 2, 1];
const BT_HOST: [u8; 4] = [192, 0, 2, 10];
const WEB_CLIENT: [u8; 4] = [192, 0, 2, 20];
const QINQ_HOST: [u8; 4] = [192, 0, 2, 30];
const SCANNER: [u8; 4] = [192, 0, 2, 66];
const BT_HOST6: [u8; 16] = v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10]);
const DHT_NODE6: [u8; 16] = v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200]);

// Remote hosts.
const TRACKER: [u8; 4] = [203, 0, 113, 5];
const DHT_NODES: [[u8; 4]; 3] = [[203, 0, 113, 200], [203, 0, 113, 201], [203, 0, 113, 202]];
const WEB_SERVER: [u8; 4] = [198, 51, 100, 80];
const DNS_SERVER: [u8; 4] = [198, 51, 100, 53];
const SCAN_TARGET: [u8; 4] = [198, 51, 100, 7];
const MISC_SERVER: [u8; 4] = [198, 51, 100, 90];
const SYSLOG_SERVER: [u8; 4] = [198, 51, 100, 99];

const BT_PORT: u16 = 6881;
const TRACKER_PORT: u16 = 6969;
const SCANNER_VLAN: u16 = 10;

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
const RST: u8 = 0x04;
pub(crate) const PSH: u8 = 0x08;
pub(crate) const ACK: u8 = 0x10;

const fn v6(w: [u16; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        let [hi, lo] = w[i].to_be_bytes();
        out[2 * i] = hi;
        out[2 * i + 1] = lo;
        i += 1;
    }
    out
}

/// A payload's length, for sequence-number arithmetic.
pub(crate) fn len32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).expect("a payload is under 4 GiB")
}

/// Seconds (relative to the capture start) to microseconds.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // schedule times: 0 to 130 s
pub(crate) fn at(secs: f64) -> u64 {
    (secs * 1e6).round() as u64
}

/// xorshift64*: tiny, seedable and stable across platforms and crate versions.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    pub(crate) fn u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }
    /// Uniform-ish in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
    pub(crate) fn port(&mut self, lo: u16, hi: u16) -> u16 {
        u16::try_from(self.range(lo.into(), hi.into())).expect("below hi")
    }
    /// Uniform in `[lo, hi)` seconds.
    fn secs(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.next_u64().to_be_bytes()[0];
        }
        out
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = usize::try_from(self.next_u64() % (i as u64 + 1)).expect("at most i");
            v.swap(i, j);
        }
    }
}

/// Minimal bencode value; dictionaries are `BTreeMap`s so keys come out sorted as BEP 3 requires.
pub(crate) enum Bencode {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bencode>),
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    pub(crate) fn bytes(b: &[u8]) -> Self {
        Bencode::Bytes(b.to_vec())
    }
    pub(crate) fn dict(pairs: Vec<(&str, Bencode)>) -> Self {
        Bencode::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode_into(out);
                }
                out.push(b'e');
            }
            Bencode::Dict(map) => {
                out.push(b'd');
                for (k, v) in map {
                    out.extend_from_slice(format!("{}:", k.len()).as_bytes());
                    out.extend_from_slice(k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// KRPC query (BEP 5): `{a: args, q: method, t: tid, y: "q"}`.
pub(crate) fn krpc_query(tid: [u8; 2], method: &str, args: Vec<(&str, Bencode)>) -> Vec<u8> {
    Bencode::dict(vec![
        ("a", Bencode::dict(args)),
        ("q", Bencode::bytes(method.as_bytes())),
        ("t", Bencode::bytes(&tid)),
        ("y", Bencode::bytes(b"q")),
    ])
    .encode()
}

/// KRPC response (BEP 5): `{r: values, t: tid, y: "r"}`.
pub(crate) fn krpc_response(tid: [u8; 2], values: Vec<(&str, Bencode)>) -> Vec<u8> {
    Bencode::dict(vec![
        ("r", Bencode::dict(values)),
        ("t", Bencode::bytes(&tid)),
        ("y", Bencode::bytes(b"r")),
    ])
    .encode()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Ip {
    /// On the monitored segment, i.e. reached directly rather than through the gateway.
    fn is_local(self) -> bool {
        match self {
            Ip::V4(a) => a[..3] == [192, 0, 2],
            Ip::V6(a) => a[..8] == BT_HOST6[..8],
        }
    }
    /// Arbitrary but stable per-address value, for TTLs.
    fn hash(self) -> u32 {
        let bytes: &[u8] = match &self {
            Ip::V4(a) => a,
            Ip::V6(a) => a,
        };
        bytes.iter().fold(2166136261u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(16777619)
        })
    }
}

pub(crate) type Endpoint = (Ip, u16);

/// Layer-2 encapsulation of a frame.
#[derive(Clone, Copy)]
pub(crate) enum Link {
    Plain,
    Vlan(u16),
    /// 802.1ad outer tag, 802.1Q inner tag.
    QinQ(u16, u16),
}

enum L4 {
    Tcp(TcpHeader),
    Udp(u16, u16),
    EchoRequest(u16, u16),
    EchoReply(u16, u16),
}

fn mac_of(ip: Ip) -> [u8; 6] {
    // Remote addresses are reached through the router; local ones get a MAC derived from the
    // address so the IPv4 and IPv6 identities of the BitTorrent host share one MAC.
    if !ip.is_local() {
        return mac_of(Ip::V4(GATEWAY));
    }
    match ip {
        Ip::V4(a) => [0x02, 0, 0, 0, 0, a[3]],
        Ip::V6(a) => [0x02, 0, 0, 0, a[14], a[15]],
    }
}

fn ethernet_header(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn vlan(id: u16) -> VlanId {
    VlanId::try_new(id).expect("VLAN id fits 12 bits")
}

pub(crate) struct Gen {
    pub(crate) rng: Rng,
    /// (µs since capture start, frame); insertion order breaks ties.
    pub(crate) frames: Vec<(u64, Vec<u8>)>,
}

impl Gen {
    pub(crate) fn push(&mut self, t: u64, frame: Vec<u8>) {
        self.frames.push((t, frame));
    }

    fn ttl(src: Ip) -> u8 {
        if src.is_local() {
            64
        } else {
            // Typical Linux/Windows initial TTLs minus a plausible hop count.
            let h = src.hash();
            let initial = if h.is_multiple_of(3) { 128 } else { 64 };
            initial - 6 - (h >> 8).to_le_bytes()[0] % 14
        }
    }

    fn ip_headers(&mut self, src: Ip, dst: Ip) -> IpHeaders {
        let ttl = Self::ttl(src);
        match (src, dst) {
            (Ip::V4(s), Ip::V4(d)) => {
                let mut h = Ipv4Header::new(0, ttl, IpNumber::UDP, s, d).expect("empty payload");
                h.identification = self.rng.u16();
                IpHeaders::Ipv4(h, Ipv4Extensions::default())
            }
            (Ip::V6(s), Ip::V6(d)) => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: 0,
                    next_header: IpNumber::UDP,
                    hop_limit: ttl,
                    source: s,
                    destination: d,
                },
                Ipv6Extensions::default(),
            ),
            _ => unreachable!("mixed address families"),
        }
    }

    /// Builds one frame with etherparse (lengths and checksums filled in) and records it.
    fn emit_ip(
        &mut self,
        t: u64,
        link: Link,
        macs: ([u8; 6], [u8; 6]),
        ip: IpHeaders,
        l4: L4,
        payload: &[u8],
    ) {
        let (src_mac, dst_mac) = macs;
        let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
        let step: PacketBuilderStep<IpHeaders> = match link {
            Link::Plain => eth.ip(ip),
            Link::Vlan(id) => eth.single_vlan(vlan(id)).ip(ip),
            Link::QinQ(outer, inner) => eth.double_vlan(vlan(outer), vlan(inner)).ip(ip),
        };
        let mut frame = Vec::with_capacity(128 + payload.len());
        let res = match l4 {
            L4::Tcp(h) => step.tcp_header(h).write(&mut frame, payload),
            L4::Udp(s, d) => step.udp(s, d).write(&mut frame, payload),
            L4::EchoRequest(id, seq) => {
                step.icmpv4_echo_request(id, seq).write(&mut frame, payload)
            }
            L4::EchoReply(id, seq) => step.icmpv4_echo_reply(id, seq).write(&mut frame, payload),
        };
        res.expect("frame serialises");
        self.push(t, frame);
    }

    fn emit(&mut self, t: u64, link: Link, src: Ip, dst: Ip, l4: L4, payload: &[u8]) {
        let ip = self.ip_headers(src, dst);
        self.emit_ip(t, link, (mac_of(src), mac_of(dst)), ip, l4, payload);
    }

    pub(crate) fn udp(&mut self, t: u64, link: Link, src: Endpoint, dst: Endpoint, payload: &[u8]) {
        self.emit(t, link, src.0, dst.0, L4::Udp(src.1, dst.1), payload);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tcp(
        &mut self,
        t: u64,
        link: Link,
        src: Endpoint,
        dst: Endpoint,
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
        options: &[TcpOptionElement],
        payload: &[u8],
    ) {
        let mut h = TcpHeader::new(src.1, dst.1, seq, window);
        h.fin = flags & FIN != 0;
        h.syn = flags & SYN != 0;
        h.rst = flags & RST != 0;
        h.psh = flags & PSH != 0;
        h.ack = flags & ACK != 0;
        if h.ack {
            h.acknowledgment_number = ack;
        }
        h.set_options(options).expect("TCP options fit");
        self.emit(t, link, src.0, dst.0, L4::Tcp(h), payload);
    }

    /// Orderly close started by `a`: FIN from `a`, FIN from `b` one `rtt` later, last ACK from
    /// `a`. `a_seq`/`b_seq` are each side's next sequence number; returns the time after it.
    #[allow(clippy::too_many_arguments)]
    fn close(
        &mut self,
        t: f64,
        rtt: f64,
        link: Link,
        (a, a_seq, a_win): (Endpoint, u32, u16),
        (b, b_seq, b_win): (Endpoint, u32, u16),
    ) -> f64 {
        self.tcp(at(t), link, a, b, FIN | ACK, a_seq, b_seq, a_win, &[], &[]);
        let t = t + rtt;
        self.tcp(
            at(t),
            link,
            b,
            a,
            FIN | ACK,
            b_seq,
            a_seq.wrapping_add(1),
            b_win,
            &[],
            &[],
        );
        let t = t + 0.00005;
        let (a_next, b_next) = (a_seq.wrapping_add(1), b_seq.wrapping_add(1));
        self.tcp(at(t), link, a, b, ACK, a_next, b_next, a_win, &[], &[]);
        t
    }

    /// Hand-built ARP request or reply (Ethernet/IPv4).
    fn arp(&mut self, t: u64, op: u16, sender: [u8; 4], target: [u8; 4]) {
        let smac = mac_of(Ip::V4(sender));
        let (eth_dst, tha) = if op == 1 {
            ([0xff; 6], [0u8; 6])
        } else {
            let m = mac_of(Ip::V4(target));
            (m, m)
        };
        let mut f = ethernet_header(eth_dst, smac, 0x0806);
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]); // Ethernet, IPv4, hlen 6, plen 4
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&smac);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&tha);
        f.extend_from_slice(&target);
        self.push(t, f);
    }
}

// Linux SYN options without timestamps: mss,nop,nop,sackOK,nop,wscale.
pub(crate) const SYN_OPTS: [TcpOptionElement; 6] = [
    TcpOptionElement::MaximumSegmentSize(1460),
    TcpOptionElement::Noop,
    TcpOptionElement::Noop,
    TcpOptionElement::SelectiveAcknowledgementPermitted,
    TcpOptionElement::Noop,
    TcpOptionElement::WindowScale(7),
];
// nmap's SYN probe carries a lone MSS option.
pub(crate) const SCAN_OPTS: [TcpOptionElement; 1] = [TcpOptionElement::MaximumSegmentSize(1460)];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Handshake, BitTorrent handshake both ways, orderly close.
    Complete,
    /// SYN answered by RST+ACK.
    Refused,
    /// SYN and two retransmissions, no answer.
    Silent,
}

/// The BitTorrent host's identity for the swarm.
struct Swarm {
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    node_id: [u8; 20],
}

fn azureus_peer_id(rng: &mut Rng, prefix: [u8; 8]) -> [u8; 20] {
    const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(&prefix);
    for b in &mut id[8..] {
        *b = ALNUM[usize::try_from(rng.next_u64() % ALNUM.len() as u64).expect("an index")];
    }
    id
}

/// BEP 3 handshake: pstrlen, pstr, reserved (LTEP + fast + DHT bits), info_hash, peer_id.
pub(crate) fn bt_handshake(info_hash: &[u8; 20], peer_id: &[u8; 20]) -> Vec<u8> {
    let mut h = Vec::with_capacity(68);
    h.push(19);
    h.extend_from_slice(b"BitTorrent protocol");
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0x05]);
    h.extend_from_slice(info_hash);
    h.extend_from_slice(peer_id);
    h
}

pub(crate) fn compact_v4(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut v = ip.to_vec();
    v.extend_from_slice(&port.to_be_bytes());
    v
}

fn compact_v6(ip: [u8; 16], port: u16) -> Vec<u8> {
    let mut v = ip.to_vec();
    v.extend_from_slice(&port.to_be_bytes());
    v
}

/// `count` compact node infos (20-byte id + 4-byte IPv4 + port) from distinct `hosts`.
fn compact_nodes(rng: &mut Rng, hosts: &[[u8; 4]], count: usize) -> Vec<u8> {
    let mut pool = hosts.to_vec();
    rng.shuffle(&mut pool);
    let mut out = Vec::with_capacity(26 * count);
    for ip in pool.into_iter().take(count) {
        out.extend_from_slice(&rng.bytes::<20>());
        out.extend_from_slice(&compact_v4(ip, rng.port(1025, 65000)));
    }
    out
}

fn dns_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.') {
        out.push(u8::try_from(label.len()).expect("a DNS label is under 64 bytes"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// RFC 1035 query: one A question, recursion desired.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    dns_name(name, &mut m);
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

/// RFC 1035 response echoing the question, answers use a name pointer to offset 12.
fn dns_response(id: u16, name: &str, answers: &[[u8; 4]], ttl: u32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1]);
    m.extend_from_slice(
        &u16::try_from(answers.len())
            .expect("few answers")
            .to_be_bytes(),
    );
    m.extend_from_slice(&[0, 0, 0, 0]);
    dns_name(name, &mut m);
    m.extend_from_slice(&[0, 1, 0, 1]);
    for a in answers {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&[0, 4]);
        m.extend_from_slice(a);
    }
    m
}

/// Builds the demo scenario. Pure function of the built-in seed.
pub fn demo_capture() -> Capture {
    let mut g = Gen {
        rng: Rng(SEED),
        frames: Vec::new(),
    };
    let swarm = Swarm {
        info_hash: g.rng.bytes(),
        peer_id: azureus_peer_id(&mut g.rng, *b"-TR4060-"),
        node_id: g.rng.bytes(),
    };

    // 60 distinct peers: 40 from the tracker, 20 from the DHT.
    let mut pool: Vec<[u8; 4]> = (10..200)
        .map(|o| [203, 0, 113, o])
        .chain((129..255).map(|o| [198, 51, 100, o]))
        .collect();
    g.rng.shuffle(&mut pool);
    let peers: Vec<Endpoint> = pool
        .into_iter()
        .take(60)
        .map(|ip| (Ip::V4(ip), g.rng.port(10000, 65000)))
        .collect();

    arp_traffic(&mut g);
    dns_traffic(&mut g);
    tracker(&mut g, &swarm, &peers[..40]);
    dht(&mut g, &swarm, &peers[40..]);
    bt_connections(&mut g, &swarm, &peers);
    scanner(&mut g);
    web_sessions(&mut g);
    icmp(&mut g);
    ipv6(&mut g, &swarm);
    edge_frames(&mut g);
    unreachables(&mut g);

    finish(g.frames)
}

/// Time-orders the frames and makes timestamps strictly increasing.
pub(crate) fn finish(mut frames: Vec<(u64, Vec<u8>)>) -> Capture {
    // Stable sort: frames scheduled for the same microsecond keep their causal order.
    frames.sort_by_key(|(t, _)| *t);
    let mut last: Option<u64> = None;
    let packets = frames
        .into_iter()
        .map(|(mut t, frame)| {
            if let Some(prev) = last {
                t = t.max(prev + 1);
            }
            last = Some(t);
            // 1514 bytes of Ethernet + IP MTU 1500, plus up to two 4-byte tags.
            assert!(frame.len() <= 1522, "frame too large: {}", frame.len());
            SynthPacket {
                ts: Duration::from_secs(START_SECS) + Duration::from_micros(t),
                frame,
            }
        })
        .collect();
    Capture { packets }
}

fn arp_traffic(g: &mut Gen) {
    for (t, host) in [(0.40, BT_HOST), (7.40, WEB_CLIENT), (69.40, SCANNER)] {
        g.arp(at(t), 1, host, GATEWAY);
        g.arp(at(t + 0.0004), 2, GATEWAY, host);
    }
}

/// (time, client, name, A records).
type Lookup = (f64, [u8; 4], &'static str, &'static [[u8; 4]]);

fn dns_traffic(g: &mut Gen) {
    let lookups: [Lookup; 8] = [
        (0.80, BT_HOST, "tracker.example.net", &[TRACKER]),
        (7.90, WEB_CLIENT, "www.example.com", &[WEB_SERVER]),
        (
            15.0,
            WEB_CLIENT,
            "cdn.example.org",
            &[[198, 51, 100, 81], [198, 51, 100, 82]],
        ),
        (33.0, WEB_CLIENT, "mail.example.com", &[[198, 51, 100, 25]]),
        (45.9, WEB_CLIENT, "www.example.com", &[WEB_SERVER]),
        (84.9, WEB_CLIENT, "www.example.com", &[WEB_SERVER]),
        (95.0, WEB_CLIENT, "ntp.example.net", &[[198, 51, 100, 123]]),
        (101.5, WEB_CLIENT, "api.example.org", &[MISC_SERVER]),
    ];
    for (t, client, name, answers) in lookups {
        let id = g.rng.u16();
        let cport = g.rng.port(32768, 61000);
        let client = (Ip::V4(client), cport);
        let server = (Ip::V4(DNS_SERVER), 53);
        let rtt = g.rng.secs(0.004, 0.030);
        g.udp(at(t), Link::Plain, client, server, &dns_query(id, name));
        let resp = dns_response(id, name, answers, 300);
        g.udp(at(t + rtt), Link::Plain, server, client, &resp);
    }
}

/// BEP 15 connect + announce; the announce response lists `peers`.
fn tracker(g: &mut Gen, swarm: &Swarm, peers: &[Endpoint]) {
    let me = (Ip::V4(BT_HOST), BT_PORT);
    let trk = (Ip::V4(TRACKER), TRACKER_PORT);
    let rtt = 0.045;
    let mut t = 1.0;

    let tid = g.rng.u32();
    let mut req = Vec::new();
    req.extend_from_slice(&0x0417_2710_1980u64.to_be_bytes());
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&tid.to_be_bytes());
    g.udp(at(t), Link::Plain, me, trk, &req);

    let conn_id = g.rng.next_u64();
    let mut resp = Vec::new();
    resp.extend_from_slice(&0u32.to_be_bytes());
    resp.extend_from_slice(&tid.to_be_bytes());
    resp.extend_from_slice(&conn_id.to_be_bytes());
    t += rtt;
    g.udp(at(t), Link::Plain, trk, me, &resp);

    let tid = g.rng.u32();
    let mut ann = Vec::with_capacity(98);
    ann.extend_from_slice(&conn_id.to_be_bytes());
    ann.extend_from_slice(&1u32.to_be_bytes());
    ann.extend_from_slice(&tid.to_be_bytes());
    ann.extend_from_slice(&swarm.info_hash);
    ann.extend_from_slice(&swarm.peer_id);
    ann.extend_from_slice(&0u64.to_be_bytes()); // downloaded
    ann.extend_from_slice(&734_003_200u64.to_be_bytes()); // left: a 700 MiB torrent
    ann.extend_from_slice(&0u64.to_be_bytes()); // uploaded
    ann.extend_from_slice(&2u32.to_be_bytes()); // event: started
    ann.extend_from_slice(&0u32.to_be_bytes()); // ip: use the source address
    ann.extend_from_slice(&g.rng.u32().to_be_bytes()); // key
    ann.extend_from_slice(&(-1i32).to_be_bytes()); // num_want: default
    ann.extend_from_slice(&BT_PORT.to_be_bytes());
    debug_assert_eq!(ann.len(), 98);
    t += 0.002;
    g.udp(at(t), Link::Plain, me, trk, &ann);

    let mut resp = Vec::with_capacity(20 + 6 * peers.len());
    resp.extend_from_slice(&1u32.to_be_bytes());
    resp.extend_from_slice(&tid.to_be_bytes());
    resp.extend_from_slice(&1800u32.to_be_bytes()); // interval
    resp.extend_from_slice(&12u32.to_be_bytes()); // leechers
    resp.extend_from_slice(&28u32.to_be_bytes()); // seeders
    for (ip, port) in peers {
        let Ip::V4(a) = ip else { unreachable!() };
        resp.extend_from_slice(&compact_v4(*a, *port));
    }
    t += rtt;
    g.udp(at(t), Link::Plain, trk, me, &resp);
}

/// BEP 5 lookups: get_peers to three nodes (values / nodes / oversized fragmented nodes),
/// announce_peer, and periodic pings.
fn dht(g: &mut Gen, swarm: &Swarm, peers: &[Endpoint]) {
    let me = (Ip::V4(BT_HOST), BT_PORT);
    let node = |i: usize| (Ip::V4(DHT_NODES[i]), BT_PORT);
    let node_ids: [[u8; 20]; 3] = [g.rng.bytes(), g.rng.bytes(), g.rng.bytes()];
    let tids: [[u8; 2]; 3] = [g.rng.bytes(), g.rng.bytes(), g.rng.bytes()];
    let token: [u8; 8] = g.rng.bytes();

    for (i, tid) in tids.into_iter().enumerate() {
        let q = krpc_query(
            tid,
            "get_peers",
            vec![
                ("id", Bencode::bytes(&swarm.node_id)),
                ("info_hash", Bencode::bytes(&swarm.info_hash)),
            ],
        );
        g.udp(at(2.0 + 0.001 * i as f64), Link::Plain, me, node(i), &q);
    }

    // Node 0 knows peers for the torrent.
    let values = peers
        .iter()
        .map(|(ip, port)| {
            let Ip::V4(a) = ip else { unreachable!() };
            Bencode::Bytes(compact_v4(*a, *port))
        })
        .collect();
    let r = krpc_response(
        tids[0],
        vec![
            ("id", Bencode::bytes(&node_ids[0])),
            ("token", Bencode::bytes(&token)),
            ("values", Bencode::List(values)),
        ],
    );
    g.udp(at(2.071), Link::Plain, node(0), me, &r);

    // Node 1 only knows closer nodes.
    let node_hosts: Vec<[u8; 4]> = (210..230).map(|o| [203, 0, 113, o]).collect();
    let nodes = compact_nodes(&mut g.rng, &node_hosts, 8);
    let first_node = [nodes[20], nodes[21], nodes[22], nodes[23]];
    let r = krpc_response(
        tids[1],
        vec![
            ("id", Bencode::bytes(&node_ids[1])),
            ("nodes", Bencode::Bytes(nodes)),
            ("token", Bencode::bytes(&g.rng.bytes::<8>())),
        ],
    );
    g.udp(at(2.093), Link::Plain, node(1), me, &r);

    // Node 2 answers with an oversized node list: the datagram exceeds the 1500-byte MTU and
    // arrives as two IPv4 fragments, which a sensor must not mistake for two datagrams.
    let big_hosts: Vec<[u8; 4]> = (64..128).map(|o| [198, 51, 100, o]).collect();
    let nodes = compact_nodes(&mut g.rng, &big_hosts, 60);
    let r = krpc_response(
        tids[2],
        vec![
            ("id", Bencode::bytes(&node_ids[2])),
            ("nodes", Bencode::Bytes(nodes)),
            ("token", Bencode::bytes(&g.rng.bytes::<8>())),
        ],
    );
    fragmented_udp(g, at(2.118), node(2), me, &r);

    dht_upkeep(g, swarm, &node_ids, token, first_node);
}

/// The DHT exchanges after the lookup: an `announce_peer` to the node that answered with
/// peers, and the routing table's pings.
fn dht_upkeep(
    g: &mut Gen,
    swarm: &Swarm,
    node_ids: &[[u8; 20]; 3],
    token: [u8; 8],
    first_node: [u8; 4],
) {
    let me = (Ip::V4(BT_HOST), BT_PORT);
    let node = |i: usize| (Ip::V4(DHT_NODES[i]), BT_PORT);

    // announce_peer back to node 0 with its token (implied_port: use the UDP source port).
    let tid: [u8; 2] = g.rng.bytes();
    let q = krpc_query(
        tid,
        "announce_peer",
        vec![
            ("id", Bencode::bytes(&swarm.node_id)),
            ("implied_port", Bencode::Int(1)),
            ("info_hash", Bencode::bytes(&swarm.info_hash)),
            ("port", Bencode::Int(BT_PORT.into())),
            ("token", Bencode::bytes(&token)),
        ],
    );
    g.udp(at(2.30), Link::Plain, me, node(0), &q);
    let r = krpc_response(tid, vec![("id", Bencode::bytes(&node_ids[0]))]);
    g.udp(at(2.37), Link::Plain, node(0), me, &r);

    // Routing-table maintenance: ping a freshly learned node, then the known ones periodically.
    let ping = |g: &mut Gen, t: f64, target: Endpoint, target_id: [u8; 20]| {
        let tid: [u8; 2] = g.rng.bytes();
        let q = krpc_query(tid, "ping", vec![("id", Bencode::bytes(&swarm.node_id))]);
        g.udp(at(t), Link::Plain, me, target, &q);
        let r = krpc_response(tid, vec![("id", Bencode::bytes(&target_id))]);
        let rtt = g.rng.secs(0.03, 0.12);
        g.udp(at(t + rtt), Link::Plain, target, me, &r);
    };
    let fresh_id = g.rng.bytes();
    ping(g, 2.5, (Ip::V4(first_node), BT_PORT), fresh_id);
    for (k, t) in [20.0, 40.0, 60.0, 80.0, 100.0, 117.0]
        .into_iter()
        .enumerate()
    {
        ping(g, t, node(k % 2), node_ids[k % 2]);
    }
}

/// Emits a UDP/IPv4 datagram too big for one frame as two fragments (first carries the UDP
/// header and has MF set, the second has a nonzero offset).
fn fragmented_udp(g: &mut Gen, t: u64, src: Endpoint, dst: Endpoint, payload: &[u8]) {
    const FIRST: usize = 1480; // MTU 1500 minus the IPv4 header; a multiple of 8
    let (Ip::V4(src_ip), Ip::V4(dst_ip)) = (src.0, dst.0) else {
        unreachable!()
    };
    let ttl = Gen::ttl(src.0);
    // Let etherparse compute the UDP checksum over the whole datagram, then split its payload.
    let whole = Ipv4Header::new(0, ttl, IpNumber::UDP, src_ip, dst_ip).expect("empty payload");
    let mut datagram = Vec::new();
    PacketBuilder::ip(IpHeaders::Ipv4(whole, Ipv4Extensions::default()))
        .udp(src.1, dst.1)
        .write(&mut datagram, payload)
        .expect("datagram serialises");
    let l4 = &datagram[Ipv4Header::MIN_LEN..];
    assert!(l4.len() > FIRST, "datagram must need fragmenting");
    let id = g.rng.u16();
    for (i, chunk) in [&l4[..FIRST], &l4[FIRST..]].into_iter().enumerate() {
        let len = u16::try_from(chunk.len()).expect("fits");
        let mut header = Ipv4Header::new(len, ttl, IpNumber::UDP, src_ip, dst_ip).expect("fits");
        header.identification = id;
        header.dont_fragment = false;
        header.more_fragments = i == 0;
        let offset = u16::try_from(i * FIRST / 8).expect("fits");
        header.fragment_offset = IpFragOffset::try_new(offset).expect("fits");
        let mut frame = ethernet_header(mac_of(dst.0), mac_of(src.0), 0x0800);
        header.write(&mut frame).expect("vec write"); // computes the header checksum
        frame.extend_from_slice(chunk);
        g.push(t + i as u64 * 40, frame);
    }
}

/// A TCP attempt from `client` to `peer` starting at `t0` seconds.
#[allow(clippy::too_many_arguments)]
fn tcp_attempt(
    g: &mut Gen,
    t0: f64,
    client: Endpoint,
    peer: Endpoint,
    outcome: Outcome,
    rtt: f64,
    handshakes: Option<(&[u8], &[u8])>,
) {
    let c_isn = g.rng.u32();
    let l = Link::Plain;
    g.tcp(
        at(t0),
        l,
        client,
        peer,
        SYN,
        c_isn,
        0,
        64240,
        &SYN_OPTS,
        &[],
    );
    match outcome {
        Outcome::Silent => {
            // Linux retransmits the identical SYN after 1 s, then 2 s later.
            for delay in [1.0, 3.0] {
                g.tcp(
                    at(t0 + delay),
                    l,
                    client,
                    peer,
                    SYN,
                    c_isn,
                    0,
                    64240,
                    &SYN_OPTS,
                    &[],
                );
            }
        }
        Outcome::Refused => {
            g.tcp(
                at(t0 + rtt),
                l,
                peer,
                client,
                RST | ACK,
                0,
                c_isn.wrapping_add(1),
                0,
                &[],
                &[],
            );
        }
        Outcome::Complete => {
            let (mine, theirs) = handshakes.expect("complete connections carry handshakes");
            let p_isn = g.rng.u32();
            let (c1, p1) = (c_isn.wrapping_add(1), p_isn.wrapping_add(1));
            let mut t = t0 + rtt;
            g.tcp(
                at(t),
                l,
                peer,
                client,
                SYN | ACK,
                p_isn,
                c1,
                65160,
                &SYN_OPTS,
                &[],
            );
            t += 0.00005;
            g.tcp(at(t), l, client, peer, ACK, c1, p1, 502, &[], &[]);
            t += 0.0002;
            g.tcp(at(t), l, client, peer, PSH | ACK, c1, p1, 502, &[], mine);
            let c2 = c1.wrapping_add(len32(mine));
            t += rtt;
            g.tcp(at(t), l, peer, client, PSH | ACK, p1, c2, 509, &[], theirs);
            let p2 = p1.wrapping_add(len32(theirs));
            // The client drops the peer right after the handshake (e.g. it has nothing we need).
            t += g.rng.secs(0.05, 0.4);
            g.close(t, rtt, l, (client, c2, 502), (peer, p2, 509));
        }
    }
}

/// TCP to all 60 predicted peers over ~60 s, plus uTP SYNs to five of them.
fn bt_connections(g: &mut Gen, swarm: &Swarm, peers: &[Endpoint]) {
    let mut outcomes: Vec<Outcome> = [
        (Outcome::Complete, 15),
        (Outcome::Refused, 20),
        (Outcome::Silent, 25),
    ]
    .into_iter()
    .flat_map(|(o, n)| std::iter::repeat_n(o, n))
    .collect();
    g.rng.shuffle(&mut outcomes);
    let mine = bt_handshake(&swarm.info_hash, &swarm.peer_id);
    let mut eport = g.rng.port(49152, 52000);
    let mut utp_left = 5;
    for (i, (&peer, &outcome)) in peers.iter().zip(&outcomes).enumerate() {
        let t0 = 5.0 + i as f64 + g.rng.secs(0.0, 0.3);
        let rtt = g.rng.secs(0.02, 0.16);
        eport += g.rng.port(1, 9);
        let client = (Ip::V4(BT_HOST), eport);
        let theirs_id = azureus_peer_id(&mut g.rng, *b"-qB4630-");
        let theirs = bt_handshake(&swarm.info_hash, &theirs_id);
        // Like libtorrent, try uTP first for some peers; these attempts get no answer.
        if outcome == Outcome::Silent && utp_left > 0 {
            utp_left -= 1;
            let t = t0 - 0.5;
            let mut h = Vec::with_capacity(20);
            h.push(0x41); // type ST_SYN (4), version 1
            h.push(0); // no extension
            h.extend_from_slice(&g.rng.u16().to_be_bytes()); // connection_id
            h.extend_from_slice(&at(t).to_be_bytes()[4..]); // timestamp_microseconds (low 32 bits)
            h.extend_from_slice(&0u32.to_be_bytes()); // timestamp_difference_microseconds
            h.extend_from_slice(&1_048_576u32.to_be_bytes()); // wnd_size
            h.extend_from_slice(&g.rng.u16().to_be_bytes()); // seq_nr
            h.extend_from_slice(&0u16.to_be_bytes()); // ack_nr
            g.udp(at(t), Link::Plain, (Ip::V4(BT_HOST), BT_PORT), peer, &h);
        }
        tcp_attempt(g, t0, client, peer, outcome, rtt, Some((&mine, &theirs)));
    }
}

/// 802.1Q-tagged scanner: horizontal telnet sweep, then a vertical sweep of one host.
/// The VLAN-tagged scanner: an address scan of 60 hosts on 23/tcp, then 200 ports of one.
fn scanner(g: &mut Gen) {
    address_scan(g);
    port_scan(g);
}

fn address_scan(g: &mut Gen) {
    let l = Link::Vlan(SCANNER_VLAN);

    let mut hosts: Vec<u8> = (1..=60).collect();
    g.rng.shuffle(&mut hosts);
    let mut responders = hosts.clone();
    g.rng.shuffle(&mut responders);
    responders.truncate(5);
    let sport = g.rng.port(40000, 60000);
    let me = (Ip::V4(SCANNER), sport);
    for (i, &h) in hosts.iter().enumerate() {
        let t = 70.0 + 0.03 * i as f64;
        let target = (Ip::V4([198, 51, 100, h]), 23);
        let seq = g.rng.u32();
        g.tcp(at(t), l, me, target, SYN, seq, 0, 1024, &SCAN_OPTS, &[]);
        if responders.contains(&h) {
            let rtt = g.rng.secs(0.002, 0.02);
            g.tcp(
                at(t + rtt),
                l,
                target,
                me,
                RST | ACK,
                0,
                seq.wrapping_add(1),
                0,
                &[],
                &[],
            );
        }
    }
}

fn port_scan(g: &mut Gen) {
    let l = Link::Vlan(SCANNER_VLAN);
    let mut ports: Vec<u16> = (1..=200).collect();
    g.rng.shuffle(&mut ports);
    let sport = g.rng.port(40000, 60000);
    let me = (Ip::V4(SCANNER), sport);
    for (i, &p) in ports.iter().enumerate() {
        let t = 74.0 + 0.01 * i as f64;
        let target = (Ip::V4(SCAN_TARGET), p);
        let seq = g.rng.u32();
        g.tcp(at(t), l, me, target, SYN, seq, 0, 1024, &SCAN_OPTS, &[]);
        let t = t + 0.0008;
        if p == 22 || p == 80 {
            let isn = g.rng.u32();
            g.tcp(
                at(t),
                l,
                target,
                me,
                SYN | ACK,
                isn,
                seq.wrapping_add(1),
                64240,
                &SCAN_OPTS,
                &[],
            );
            // Half-open scan: the scanner tears down instead of completing the handshake.
            g.tcp(
                at(t + 0.0003),
                l,
                me,
                target,
                RST,
                seq.wrapping_add(1),
                0,
                0,
                &[],
                &[],
            );
        } else {
            g.tcp(
                at(t),
                l,
                target,
                me,
                RST | ACK,
                0,
                seq.wrapping_add(1),
                0,
                &[],
                &[],
            );
        }
    }
}

fn html_body(n: usize, len: usize) -> Vec<u8> {
    let mut b =
        format!("<!doctype html>\n<html><head><title>Example page {n}</title></head><body>\n");
    while b.len() + 15 < len {
        b.push_str("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\n");
    }
    b.push_str("</body></html>\n");
    b.into_bytes()
}

/// Five complete HTTP/1.1 exchanges between the web client and server.
fn web_sessions(g: &mut Gen) {
    let paths = [
        "/",
        "/index.html",
        "/about.html",
        "/news/2026.html",
        "/style.css",
    ];
    for (page, (t0, path)) in [8.0, 27.0, 46.0, 85.0, 105.0]
        .into_iter()
        .zip(paths)
        .enumerate()
    {
        http_exchange(g, page, t0, path);
    }
}

/// One HTTP/1.1 GET of `path` at `t0` seconds: handshake, request, response, close.
fn http_exchange(g: &mut Gen, page: usize, t0: f64, path: &str) {
    let link = Link::Plain;
    let server = (Ip::V4(WEB_SERVER), 80);
    let client = (Ip::V4(WEB_CLIENT), g.rng.port(32768, 61000));
    let rtt = g.rng.secs(0.02, 0.05);
    let (client_isn, server_isn) = (g.rng.u32(), g.rng.u32());
    let (c1, s1) = (client_isn.wrapping_add(1), server_isn.wrapping_add(1));
    let mut t = t0;
    g.tcp(
        at(t),
        link,
        client,
        server,
        SYN,
        client_isn,
        0,
        64240,
        &SYN_OPTS,
        &[],
    );
    t += rtt;
    g.tcp(
        at(t),
        link,
        server,
        client,
        SYN | ACK,
        server_isn,
        c1,
        65160,
        &SYN_OPTS,
        &[],
    );
    t += 0.00006;
    g.tcp(at(t), link, client, server, ACK, c1, s1, 502, &[], &[]);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
    );
    t += 0.0001;
    g.tcp(
        at(t),
        link,
        client,
        server,
        PSH | ACK,
        c1,
        s1,
        502,
        &[],
        req.as_bytes(),
    );
    let c2 = c1.wrapping_add(len32(req.as_bytes()));

    let len = usize::try_from(g.rng.range(1500, 3800)).expect("a few KiB");
    let body = html_body(page, len);
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nServer: demo\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(&body);
    t += rtt + 0.003;
    let mut sseq = s1;
    let chunks: Vec<&[u8]> = resp.chunks(1460).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() {
            PSH | ACK
        } else {
            ACK
        };
        g.tcp(
            at(t),
            link,
            server,
            client,
            flags,
            sseq,
            c2,
            509,
            &[],
            chunk,
        );
        sseq = sseq.wrapping_add(len32(chunk));
        t += 0.00012;
    }
    g.tcp(at(t), link, client, server, ACK, c2, sseq, 501, &[], &[]);
    t += 0.002;
    g.close(t, rtt, link, (client, c2, 501), (server, sseq, 509));
}

/// Echo requests/replies shaped like Linux `ping` (8-byte timestamp + 0x10.. pattern).
fn icmp(g: &mut Gen) {
    for (t0, src, dst, count) in [
        (40u16, BT_HOST, GATEWAY, 3u16),
        (88, WEB_CLIENT, [198, 51, 100, 1], 5),
    ] {
        let id = g.rng.u16();
        let rtt = if dst == GATEWAY { 0.0004 } else { 0.012 };
        for seq in 1..=count {
            let secs = t0 + seq - 1;
            let t = f64::from(secs);
            let mut payload = (START_SECS + u64::from(secs)).to_le_bytes().to_vec();
            payload.extend(0x10u8..0x38);
            let (s, d) = (Ip::V4(src), Ip::V4(dst));
            g.emit(at(t), Link::Plain, s, d, L4::EchoRequest(id, seq), &payload);
            g.emit(
                at(t + rtt),
                Link::Plain,
                d,
                s,
                L4::EchoReply(id, seq),
                &payload,
            );
        }
    }
}

/// (src, dst, protocol, header length) of the IPv4 header at `at` in frame `f`, if it is one.
fn ipv4_of(f: &[u8], at: usize) -> Option<([u8; 4], [u8; 4], u8, usize)> {
    (f.get(at)? >> 4 == 4).then(|| {
        let ihl = usize::from(f[at] & 0x0f) * 4;
        let ip = |o: usize| [f[at + o], f[at + o + 1], f[at + o + 2], f[at + o + 3]];
        (ip(12), ip(16), f[at + 9], ihl)
    })
}

/// The frames the ICMP errors quote, as (time, frame, IP header offset): the scanner's first
/// probe of 23/tcp, the web client's first DNS query, and the IPv6 host's first SYN.
fn quoted_frames(g: &Gen) -> Vec<(u64, Vec<u8>, usize)> {
    let mut picks: Vec<(u64, Vec<u8>, usize)> = Vec::new(); // (time, frame, ip offset)
    let mut found = [false; 3];
    for (t, f) in &g.frames {
        let tagged = f.get(12..14) == Some(&[0x81, 0x00]);
        let at = if tagged { 18 } else { 14 };
        if let Some((src, _, proto, ihl)) = ipv4_of(f, at) {
            let l4 = at + ihl;
            // The scanner's first probe of port 23 (a bare SYN).
            if !found[0]
                && src == SCANNER
                && proto == 6
                && f.get(l4 + 2..l4 + 4) == Some(&[0, 23])
                && f[l4 + 13] == 0x02
            {
                found[0] = true;
                picks.push((*t, f.clone(), at));
            }
            // The web client's first DNS query.
            if !found[1]
                && src == WEB_CLIENT
                && proto == 17
                && f.get(l4 + 2..l4 + 4) == Some(&[0, 53])
            {
                found[1] = true;
                picks.push((*t, f.clone(), at));
            }
        } else if !found[2]
            && f.get(at).is_some_and(|b| b >> 4 == 6)
            && f[at + 6] == 6
            && f[at + 8..at + 24] == BT_HOST6
            && f[at + 40 + 13] == 0x02
        {
            found[2] = true;
            picks.push((*t, f.clone(), at));
        }
    }
    assert_eq!(found, [true; 3], "the scenario has the frames to quote");
    picks
}

/// ICMP errors a real network answers with, each quoting a frame generated above: a router's
/// host unreachable for one of the scanner's probes (on its VLAN), a port unreachable for a DNS
/// query, and an ICMPv6 unreachable for an IPv6 SYN. Quotes are the IP header plus the first
/// 8 bytes of the transport header, as routers send them.
fn unreachables(g: &mut Gen) {
    use etherparse::{icmpv4, icmpv6, Icmpv4Type, Icmpv6Type};
    for (i, (t, f, at)) in quoted_frames(g).into_iter().enumerate() {
        let mut out = Vec::new();
        let router_mac = mac_of(Ip::V4(GATEWAY));
        let (dst_mac, tagged) = (
            <[u8; 6]>::try_from(&f[6..12]).unwrap(),
            f[12..14] == [0x81, 0x00],
        );
        let eth = PacketBuilder::ethernet2(router_mac, dst_mac);
        let when = t + 1_500; // 1.5 ms later
        match i {
            0 | 1 => {
                let (src, dst, _, ihl) = ipv4_of(&f, at).unwrap();
                let quote = &f[at..at + ihl + 8];
                // A router on the far side for the probe; the DNS server itself for the query.
                let from = if i == 0 { [198, 51, 100, 254] } else { dst };
                let code = if i == 0 {
                    icmpv4::DestUnreachableHeader::Host
                } else {
                    icmpv4::DestUnreachableHeader::Port
                };
                let ty = Icmpv4Type::DestinationUnreachable(code);
                let res = if tagged {
                    eth.single_vlan(vlan(SCANNER_VLAN))
                        .ipv4(from, src, 250)
                        .icmpv4(ty)
                        .write(&mut out, quote)
                } else {
                    eth.ipv4(from, src, 60).icmpv4(ty).write(&mut out, quote)
                };
                res.expect("frame serialises");
            }
            _ => {
                let src: [u8; 16] = f[at + 8..at + 24].try_into().unwrap();
                let dst: [u8; 16] = f[at + 24..at + 40].try_into().unwrap();
                let quote = &f[at..at + 48];
                let ty = Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Address);
                eth.ipv6(dst, src, 60)
                    .icmpv6(ty)
                    .write(&mut out, quote)
                    .expect("frame serialises");
            }
        }
        g.push(when, out);
    }
}

/// IPv6 DHT lookup (query carries a hop-by-hop header) and SYNs to the learned peers.
fn ipv6(g: &mut Gen, swarm: &Swarm) {
    let me = (Ip::V6(BT_HOST6), BT_PORT);
    let node = (Ip::V6(DHT_NODE6), BT_PORT);
    let tid: [u8; 2] = g.rng.bytes();
    let q = krpc_query(
        tid,
        "get_peers",
        vec![
            ("id", Bencode::bytes(&swarm.node_id)),
            ("info_hash", Bencode::bytes(&swarm.info_hash)),
        ],
    );
    let IpHeaders::Ipv6(hdr, _) = g.ip_headers(me.0, node.0) else {
        unreachable!()
    };
    // Hop-by-hop header holding a single PadN option (type 1, 4 bytes of padding); etherparse
    // chains next-header values (0 in the IPv6 header) and fixes the payload length.
    let hbh = Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[1, 4, 0, 0, 0, 0]).expect("8-byte HBH");
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(hbh),
        ..Default::default()
    };
    let macs = (mac_of(me.0), mac_of(node.0));
    g.emit_ip(
        at(90.0),
        Link::Plain,
        macs,
        IpHeaders::Ipv6(hdr, exts),
        L4::Udp(me.1, node.1),
        &q,
    );

    let peers: Vec<Endpoint> = (0..6)
        .map(|_| {
            let mut w = [0x2001, 0xdb8, 1, 0, 0, 0, 0, 0];
            w[4..].iter_mut().for_each(|x| *x = g.rng.u16());
            (Ip::V6(v6(w)), g.rng.port(10000, 65000))
        })
        .collect();
    let values = peers
        .iter()
        .map(|(ip, port)| {
            let Ip::V6(a) = ip else { unreachable!() };
            Bencode::Bytes(compact_v6(*a, *port))
        })
        .collect();
    let r = krpc_response(
        tid,
        vec![
            ("id", Bencode::bytes(&g.rng.bytes::<20>())),
            ("token", Bencode::bytes(&g.rng.bytes::<8>())),
            ("values", Bencode::List(values)),
        ],
    );
    g.udp(at(90.041), Link::Plain, node, me, &r);

    let mut eport = g.rng.port(52000, 60000);
    for (i, outcome) in [Outcome::Refused, Outcome::Silent, Outcome::Silent]
        .into_iter()
        .enumerate()
    {
        eport += 1;
        let rtt = g.rng.secs(0.03, 0.09);
        tcp_attempt(
            g,
            91.0 + i as f64,
            (Ip::V6(BT_HOST6), eport),
            peers[i],
            outcome,
            rtt,
            None,
        );
    }
}

/// Frames that exercise parser corner cases.
fn edge_frames(g: &mut Gen) {
    // Double-tagged (802.1ad outer, 802.1Q inner) syslog datagram from a provider-bridged host.
    let msg = b"<134>Jan  1 00:01:41 sw1 demo: link up on port 7";
    let src = (Ip::V4(QINQ_HOST), g.rng.port(32768, 61000));
    g.udp(
        at(101.0),
        Link::QinQ(100, 30),
        src,
        (Ip::V4(SYSLOG_SERVER), 514),
        msg,
    );

    // 1400-byte UDP payload shaped like a QUIC Initial (long header, version 1, padded).
    let client = (Ip::V4(WEB_CLIENT), g.rng.port(32768, 61000));
    // Header: flags, version 1, 8-byte DCID, empty SCID and token, 2-byte varint length of the
    // (random, "encrypted") rest.
    let mut quic = vec![0xc3, 0, 0, 0, 1, 8];
    quic.extend_from_slice(&g.rng.bytes::<8>());
    quic.extend_from_slice(&[0, 0]);
    quic.extend_from_slice(&(0x4000u16 | (1400 - 18)).to_be_bytes());
    while quic.len() < 1400 {
        quic.push((g.rng.next_u64() >> 56) as u8);
    }
    g.udp(
        at(102.0),
        Link::Plain,
        client,
        (Ip::V4(MISC_SERVER), 443),
        &quic,
    );

    // Empty UDP payload (to the discard port).
    let client = (Ip::V4(WEB_CLIENT), g.rng.port(32768, 61000));
    g.udp(
        at(103.0),
        Link::Plain,
        client,
        (Ip::V4(MISC_SERVER), 9),
        &[],
    );

    // Lone pure ACK of a connection established before the capture started.
    let client = (Ip::V4(WEB_CLIENT), g.rng.port(32768, 61000));
    let (seq, ack) = (g.rng.u32(), g.rng.u32());
    g.tcp(
        at(104.0),
        Link::Plain,
        client,
        (Ip::V4(MISC_SERVER), 443),
        ACK,
        seq,
        ack,
        501,
        &[],
        &[],
    );
}

/// The hosts of [`labelled_capture`] (IPv4, on the monitored segment).
pub mod labelled {
    /// Sweeps `scanned_hosts` addresses on 23/tcp; nothing answers.
    pub const ADDRESS_SCANNER: [u8; 4] = super::SCANNER;
    /// Probes [`PORT_SCAN_PORTS`] ports of one host; every probe is refused.
    pub const PORT_SCANNER: [u8; 4] = [192, 0, 2, 67];
    /// Learns `announced_peers` peers from a UDP tracker, then tries each once over TCP;
    /// none answers.
    pub const BITTORRENT: [u8; 4] = super::BT_HOST;
    /// One complete HTTP exchange.
    pub const BENIGN: [u8; 4] = super::WEB_CLIENT;
    /// The UDP tracker (talks to the BitTorrent host only).
    pub const TRACKER: [u8; 4] = super::TRACKER;
    /// How many distinct ports the port scanner probes, all on one host and above 1023.
    pub const PORT_SCAN_PORTS: u16 = 100;
    /// The most addresses the address scanner may sweep (198.51.100.1–250).
    pub const MAX_SCANNED_HOSTS: u8 = 250;
    /// The most peers the tracker may announce (203.0.113.10–189).
    pub const MAX_ANNOUNCED_PEERS: u8 = 180;
}

/// A small labelled scene for `sensor eval`, deterministic and a few seconds long: an address
/// scanner that sweeps `scanned_hosts` distinct hosts on one port with no answer, a port
/// scanner refused on [`labelled::PORT_SCAN_PORTS`] ports of one host, a BitTorrent host that
/// gets `announced_peers` peers (distinct addresses, distinct high ports) in a UDP tracker
/// announce reply and then sends each one unanswered SYNs, and a benign web client. Addresses
/// are in [`labelled`].
pub fn labelled_capture(scanned_hosts: u8, announced_peers: u8) -> Capture {
    assert!((1..=labelled::MAX_SCANNED_HOSTS).contains(&scanned_hosts));
    assert!((1..=labelled::MAX_ANNOUNCED_PEERS).contains(&announced_peers));
    let mut g = Gen {
        rng: Rng(SEED ^ 0xE7A1),
        frames: Vec::new(),
    };
    let swarm = Swarm {
        info_hash: g.rng.bytes(),
        peer_id: azureus_peer_id(&mut g.rng, *b"-TR3000-"),
        node_id: g.rng.bytes(),
    };
    let peers: Vec<Endpoint> = (0..announced_peers)
        .map(|i| (Ip::V4([203, 0, 113, 10 + i]), 20000 + 97 * u16::from(i)))
        .collect();
    // The tracker exchange ends at 1.1 s; the SYNs start at 2 s.
    tracker(&mut g, &swarm, &peers);
    let mut eport = 50000;
    for (i, &peer) in peers.iter().enumerate() {
        eport += 1;
        let client = (Ip::V4(labelled::BITTORRENT), eport);
        let t0 = 2.0 + 0.1 * i as f64;
        tcp_attempt(&mut g, t0, client, peer, Outcome::Silent, 0.05, None);
    }

    let me = (Ip::V4(labelled::ADDRESS_SCANNER), 40001);
    for h in 1..=scanned_hosts {
        let t = 3.0 + 0.02 * f64::from(h);
        let seq = g.rng.u32();
        let target = (Ip::V4([198, 51, 100, h]), 23);
        g.tcp(
            at(t),
            Link::Plain,
            me,
            target,
            SYN,
            seq,
            0,
            1024,
            &SCAN_OPTS,
            &[],
        );
    }

    let me = (Ip::V4(labelled::PORT_SCANNER), 40002);
    for p in 0..labelled::PORT_SCAN_PORTS {
        let t = 4.0 + 0.01 * f64::from(p);
        let seq = g.rng.u32();
        let target = (Ip::V4(SCAN_TARGET), 2000 + p);
        g.tcp(
            at(t),
            Link::Plain,
            me,
            target,
            SYN,
            seq,
            0,
            1024,
            &SCAN_OPTS,
            &[],
        );
        let ack = seq.wrapping_add(1);
        g.tcp(
            at(t + 0.001),
            Link::Plain,
            target,
            me,
            RST | ACK,
            0,
            ack,
            0,
            &[],
            &[],
        );
    }

    http_exchange(&mut g, 0, 5.0, "/");
    finish(g.frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};
    use pcap_file::pcap::PcapReader;

    fn pcap_bytes(c: &Capture) -> Vec<u8> {
        let mut out = Vec::new();
        c.write_pcap(&mut out).unwrap();
        out
    }

    /// Frames as read back from the written pcap, with timestamps.
    fn read_back(bytes: &[u8]) -> Vec<(Duration, Vec<u8>)> {
        let mut r = PcapReader::new(bytes).unwrap();
        let h = r.header();
        assert_eq!(h.datalink, DataLink::ETHERNET);
        assert_eq!(h.ts_resolution, TsResolution::MicroSecond);
        assert_eq!(h.snaplen, 65535);
        let mut out = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!(p.orig_len as usize, p.data.len());
            out.push((p.timestamp, p.data.into_owned()));
        }
        out
    }

    fn udp_payloads(frames: &[(Duration, Vec<u8>)], src_port: u16) -> Vec<Vec<u8>> {
        frames
            .iter()
            .filter_map(|(_, f)| {
                let p = SlicedPacket::from_ethernet(f).ok()?;
                match p.transport? {
                    TransportSlice::Udp(u) if u.source_port() == src_port => {
                        Some(u.payload().to_vec())
                    }
                    _ => None,
                }
            })
            .collect()
    }

    #[test]
    fn deterministic() {
        let a = pcap_bytes(&demo_capture());
        let b = pcap_bytes(&demo_capture());
        assert_eq!(a, b);
    }

    #[test]
    fn pcap_round_trip_and_parse() {
        let cap = demo_capture();
        let n = cap.packets.len();
        assert!((800..=3000).contains(&n), "{n} packets");
        let frames = read_back(&pcap_bytes(&cap));
        assert_eq!(frames.len(), n);
        let start = Duration::from_secs(START_SECS);
        assert!(frames[0].0 >= start);
        let span = frames[n - 1]
            .0
            .checked_sub(frames[0].0)
            .expect("time-ordered");
        assert!(
            span > Duration::from_secs(100) && span < Duration::from_secs(130),
            "{span:?}"
        );
        for w in frames.windows(2) {
            assert!(w[0].0 < w[1].0, "timestamps must increase");
        }
        for (i, (_, f)) in frames.iter().enumerate() {
            assert!(f.len() <= 1522, "frame {i}: {} bytes", f.len());
            if let Err(e) = SlicedPacket::from_ethernet(f) {
                panic!("frame {i} does not parse: {e:?}");
            }
        }
    }

    #[test]
    fn edge_cases_present() {
        let frames = read_back(&pcap_bytes(&demo_capture()));
        let (mut vlan, mut qinq, mut v6_ext, mut frag, mut arp, mut bt_syn) = (0, 0, 0, 0, 0, 0);
        for (_, f) in &frames {
            let p = SlicedPacket::from_ethernet(f).unwrap();
            let tags = p
                .link_exts
                .iter()
                .filter(|e| matches!(e, LinkExtSlice::Vlan(_)))
                .count();
            vlan += usize::from(tags >= 1);
            qinq += usize::from(tags >= 2);
            let mut from_bt = false;
            match &p.net {
                Some(NetSlice::Ipv6(s)) if !s.extensions().is_empty() => v6_ext += 1,
                Some(NetSlice::Ipv4(s)) => {
                    frag += usize::from(s.header().fragments_offset().value() > 0);
                    from_bt = s.header().source() == BT_HOST;
                }
                Some(NetSlice::Arp(_)) => arp += 1,
                _ => {}
            }
            if let Some(TransportSlice::Tcp(t)) = &p.transport {
                bt_syn += usize::from(from_bt && t.syn() && !t.ack());
            }
        }
        assert!(vlan >= 1, "vlan {vlan}");
        assert!(qinq >= 1, "qinq {qinq}");
        assert!(v6_ext >= 1, "ipv6 ext {v6_ext}");
        assert!(frag >= 1, "non-first fragments {frag}");
        assert!(arp >= 3, "arp {arp}");
        assert!(bt_syn >= 60, "syn from BT host {bt_syn}");
    }

    #[test]
    fn tracker_announce_response_decodes() {
        let frames = read_back(&pcap_bytes(&demo_capture()));
        let announces: Vec<Vec<u8>> = udp_payloads(&frames, TRACKER_PORT)
            .into_iter()
            .filter(|p| p.len() >= 20 && p[..4] == 1u32.to_be_bytes())
            .collect();
        assert_eq!(announces.len(), 1);
        let a = &announces[0];
        let peers = &a[20..];
        assert_eq!(peers.len() % 6, 0);
        assert_eq!(peers.len() / 6, 40);
        for p in peers.chunks(6) {
            let ip = [p[0], p[1], p[2], p[3]];
            let port = u16::from_be_bytes([p[4], p[5]]);
            assert!(ip[..3] == [203, 0, 113] || (ip[..3] == [198, 51, 100] && ip[3] >= 128));
            assert!((10000..65000).contains(&port));
        }
    }

    #[test]
    fn dht_get_peers_query_format() {
        let frames = read_back(&pcap_bytes(&demo_capture()));
        let prefix = b"d1:ad2:id20:";
        let q = udp_payloads(&frames, BT_PORT)
            .into_iter()
            .find(|p| p.starts_with(prefix) && p.windows(9).any(|w| w == b"get_peers"))
            .expect("get_peers query");
        // d1:ad2:id20:<20>9:info_hash20:<20>e1:q9:get_peers1:t2:<2>1:y1:qe
        assert_eq!(q.len(), 95);
        assert_eq!(&q[32..46], b"9:info_hash20:");
        assert_eq!(&q[66..86], b"e1:q9:get_peers1:t2:");
        assert!(q.ends_with(b"1:y1:qe"));
    }

    /// Prints per-category totals (`cargo test ... -- --nocapture summary`).
    #[test]
    fn summary() {
        let frames = read_back(&pcap_bytes(&demo_capture()));
        let (mut syn, mut synack, mut rst, mut fin, mut udp_data) = (0, 0, 0, 0, 0);
        for (_, f) in &frames {
            match SlicedPacket::from_ethernet(f).unwrap().transport {
                Some(TransportSlice::Tcp(t)) => {
                    syn += usize::from(t.syn() && !t.ack());
                    synack += usize::from(t.syn() && t.ack());
                    rst += usize::from(t.rst());
                    fin += usize::from(t.fin());
                }
                Some(TransportSlice::Udp(u)) => udp_data += usize::from(!u.payload().is_empty()),
                _ => {}
            }
        }
        println!(
            "total {} syn {syn} syn-ack {synack} rst {rst} fin {fin} udp-with-payload {udp_data}",
            frames.len()
        );
    }
}
