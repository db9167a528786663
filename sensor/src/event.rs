//! The event every capture source produces: one forwarded TCP control segment or UDP datagram.
//!
//! The XDP ring reader ([`crate::capture::xdp`]) and the offline pcap reader
//! ([`crate::capture::pcap`]) both produce [`PacketEvent`]s, so every stage after capture sees the
//! same thing whether traffic came from a NIC or a file. Events borrow their payload from the
//! ring record or the file buffer; nothing is copied on the way in.

use std::fmt;
use std::net::SocketAddr;

pub use sensor_ebpf::tcp_flag;

/// Wall-clock time of a packet, nanoseconds since the UNIX epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_secs_f64(secs: f64) -> Self {
        Self((secs * 1e9) as u64)
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl fmt::Display for Timestamp {
    /// Zeek's `ts` format: epoch seconds with microseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000_000, (self.0 % 1_000_000_000) / 1000)
    }
}

/// TCP header flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub fn syn(self) -> bool {
        self.0 & tcp_flag::SYN != 0
    }
    pub fn ack(self) -> bool {
        self.0 & tcp_flag::ACK != 0
    }
    pub fn rst(self) -> bool {
        self.0 & tcp_flag::RST != 0
    }
    pub fn fin(self) -> bool {
        self.0 & tcp_flag::FIN != 0
    }
}

impl fmt::Display for TcpFlags {
    /// tcpdump-style letters, e.g. `S.` for SYN-ACK.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [
            (tcp_flag::SYN, 'S'),
            (tcp_flag::FIN, 'F'),
            (tcp_flag::RST, 'R'),
            (tcp_flag::PSH, 'P'),
            (tcp_flag::URG, 'U'),
            (tcp_flag::ACK, '.'),
        ] {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A TCP segment with SYN, RST or FIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// TCP payload bytes in the segment (from the IP length).
    pub payload_len: u16,
}

/// A UDP datagram with a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// True payload length from the UDP header.
    pub payload_len: u16,
    /// The first bytes of the payload, up to the snap length (shorter than `payload_len` when
    /// the payload was longer than the snap length or the packet was truncated).
    pub head: &'a [u8],
}

impl UdpDatagram<'_> {
    /// Whether `head` is the whole payload.
    pub fn is_complete(&self) -> bool {
        self.head.len() == usize::from(self.payload_len)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport<'a> {
    Tcp(TcpSegment),
    Udp(UdpDatagram<'a>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketEvent<'a> {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// 802.1Q/802.1ad tags the frame carried (0..=2).
    pub vlan_depth: u8,
    pub transport: Transport<'a>,
}

impl PacketEvent<'_> {
    /// Short kind label used in metrics and reports.
    pub fn kind(&self) -> EventKind {
        match self.transport {
            Transport::Udp(_) => EventKind::Udp,
            Transport::Tcp(seg) => match sensor_ebpf::tcp_record_counter(seg.flags.0) {
                Some(sensor_ebpf::counter::REC_RST) => EventKind::Rst,
                Some(sensor_ebpf::counter::REC_SYN) => EventKind::Syn,
                Some(sensor_ebpf::counter::REC_SYNACK) => EventKind::SynAck,
                _ => EventKind::Fin,
            },
        }
    }
}

/// What an event is, with the same precedence the XDP program counts records by
/// (RST, then SYN, then SYN-ACK, then FIN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Syn,
    SynAck,
    Rst,
    Fin,
    Udp,
}

impl EventKind {
    pub const ALL: [EventKind; 5] =
        [EventKind::Syn, EventKind::SynAck, EventKind::Rst, EventKind::Fin, EventKind::Udp];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Syn => "syn",
            EventKind::SynAck => "synack",
            EventKind::Rst => "rst",
            EventKind::Fin => "fin",
            EventKind::Udp => "udp",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of events by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KindCounts {
    pub syn: u64,
    pub synack: u64,
    pub rst: u64,
    pub fin: u64,
    pub udp: u64,
}

impl KindCounts {
    pub fn add(&mut self, kind: EventKind) {
        *self.get_mut(kind) += 1;
    }
    pub fn get(&self, kind: EventKind) -> u64 {
        match kind {
            EventKind::Syn => self.syn,
            EventKind::SynAck => self.synack,
            EventKind::Rst => self.rst,
            EventKind::Fin => self.fin,
            EventKind::Udp => self.udp,
        }
    }
    fn get_mut(&mut self, kind: EventKind) -> &mut u64 {
        match kind {
            EventKind::Syn => &mut self.syn,
            EventKind::SynAck => &mut self.synack,
            EventKind::Rst => &mut self.rst,
            EventKind::Fin => &mut self.fin,
            EventKind::Udp => &mut self.udp,
        }
    }
    pub fn total(&self) -> u64 {
        self.syn + self.synack + self.rst + self.fin + self.udp
    }
}
