//! The event every capture source produces: one forwarded TCP control segment or UDP datagram.
//!
//! The XDP ring reader ([`crate::capture::xdp`]) and the offline pcap reader
//! ([`crate::capture::pcap`]) both produce [`PacketEvent`]s, so every stage after capture sees the
//! same thing whether traffic came from a NIC or a file. Events borrow their payload from the
//! ring record or the file buffer; nothing is copied on the way in.

use std::fmt;
use std::net::SocketAddr;

pub use sensor_ebpf::tcp_flag;

pub use crate::time::Timestamp;

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

/// A TCP segment with SYN, RST or FIN, or a payload segment of a flow the pre-filter marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// TCP payload bytes in the segment (from the IP length).
    pub payload_len: u16,
    /// The forwarded payload head: empty unless the flow is marked, shorter than
    /// `payload_len` past the snap length.
    pub head: &'a [u8],
}

impl TcpSegment<'_> {
    /// Whether the segment carries none of SYN, RST, FIN: only its payload matters.
    pub fn is_data_only(&self) -> bool {
        self.flags.0 & (tcp_flag::SYN | tcp_flag::RST | tcp_flag::FIN) == 0
    }
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

/// An ICMP (type 3) or ICMPv6 (type 1) destination unreachable, and the attempt it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpUnreachable {
    pub icmp_type: u8,
    pub code: u8,
    /// The quoted packet: its sender is the host whose attempt failed.
    pub inner_udp: bool,
    pub inner_src: SocketAddr,
    pub inner_dst: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    Udp(UdpDatagram<'a>),
    Icmp(IcmpUnreachable),
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
            Transport::Icmp(_) => EventKind::Icmp,
            Transport::Tcp(seg) => match sensor_ebpf::tcp_record_counter(seg.flags.0) {
                Some(sensor_ebpf::counter::REC_RST) => EventKind::Rst,
                Some(sensor_ebpf::counter::REC_SYN) => EventKind::Syn,
                Some(sensor_ebpf::counter::REC_SYNACK) => EventKind::SynAck,
                Some(_) => EventKind::Fin,
                None => EventKind::TcpData,
            },
        }
    }
}

/// What an event is, with the same precedence the XDP program counts records by
/// (RST, then SYN, then SYN-ACK, then FIN; a TCP payload segment with none of them is data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum EventKind {
    Syn,
    #[strum(serialize = "synack")]
    SynAck,
    Rst,
    Fin,
    TcpData,
    Udp,
    Icmp,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Syn,
        EventKind::SynAck,
        EventKind::Rst,
        EventKind::Fin,
        EventKind::TcpData,
        EventKind::Udp,
        EventKind::Icmp,
    ];

    /// The metric label and `--events` kind: `syn`, `synack`, `rst`, `fin`, `tcp_data`, `udp`,
    /// `icmp` (also the [`KindCounts`] field names).
    pub fn as_str(self) -> &'static str {
        self.into()
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
    #[serde(default)]
    pub tcp_data: u64,
    pub udp: u64,
    #[serde(default)]
    pub icmp: u64,
}

impl KindCounts {
    pub fn add(&mut self, kind: EventKind) {
        *self.get_mut(kind) += 1;
    }
    pub fn set(&mut self, kind: EventKind, n: u64) {
        *self.get_mut(kind) = n;
    }
    pub fn get(&self, kind: EventKind) -> u64 {
        match kind {
            EventKind::Syn => self.syn,
            EventKind::SynAck => self.synack,
            EventKind::Rst => self.rst,
            EventKind::Fin => self.fin,
            EventKind::TcpData => self.tcp_data,
            EventKind::Udp => self.udp,
            EventKind::Icmp => self.icmp,
        }
    }
    fn get_mut(&mut self, kind: EventKind) -> &mut u64 {
        match kind {
            EventKind::Syn => &mut self.syn,
            EventKind::SynAck => &mut self.synack,
            EventKind::Rst => &mut self.rst,
            EventKind::Fin => &mut self.fin,
            EventKind::TcpData => &mut self.tcp_data,
            EventKind::Udp => &mut self.udp,
            EventKind::Icmp => &mut self.icmp,
        }
    }
    pub fn total(&self) -> u64 {
        self.syn + self.synack + self.rst + self.fin + self.tcp_data + self.udp + self.icmp
    }
}

/// A consumer of events: the next stage of the pipeline.
pub trait EventSink {
    fn event(&mut self, event: &PacketEvent<'_>);
    /// Called by a live source after each drain, also when it brought no events: the moment
    /// to publish state that would otherwise only move with packet time.
    fn idle(&mut self) {}
    /// Called once the source is exhausted.
    fn flush(&mut self) {}
    /// The sink's state as a state-file image (`crate::state`), if it keeps one: what the live
    /// agent saves periodically and when it stops.
    fn save_state(&mut self) -> Option<anyhow::Result<Vec<u8>>> {
        None
    }
}

impl<T: EventSink + ?Sized> EventSink for Box<T> {
    fn event(&mut self, event: &PacketEvent<'_>) {
        (**self).event(event);
    }
    fn idle(&mut self) {
        (**self).idle();
    }
    fn flush(&mut self) {
        (**self).flush();
    }
    fn save_state(&mut self) -> Option<anyhow::Result<Vec<u8>>> {
        (**self).save_state()
    }
}

/// Discards events (counting happens in the capture source).
impl EventSink for () {
    fn event(&mut self, _: &PacketEvent<'_>) {}
}

/// Feeds every event to two sinks in turn.
pub struct Tee<A, B>(pub A, pub B);

impl<A: EventSink, B: EventSink> EventSink for Tee<A, B> {
    fn event(&mut self, event: &PacketEvent<'_>) {
        self.0.event(event);
        self.1.event(event);
    }
    fn idle(&mut self) {
        self.0.idle();
        self.1.idle();
    }
    fn flush(&mut self) {
        self.0.flush();
        self.1.flush();
    }
    fn save_state(&mut self) -> Option<anyhow::Result<Vec<u8>>> {
        self.1.save_state().or_else(|| self.0.save_state())
    }
}

/// One event as a JSON line: what `--events` writes, live and offline alike, so the two can be
/// compared record for record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventLine {
    pub ts: String,
    pub kind: String,
    pub src: String,
    pub dst: String,
    pub vlan: u8,
    /// tcpdump-style flags (TCP only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub flags: String,
    #[serde(default)]
    pub seq: u32,
    #[serde(default)]
    pub ack: u32,
    #[serde(default)]
    pub win: u16,
    /// True payload length.
    pub len: u16,
    /// Hex of the copied payload head (UDP, and TCP data of marked flows).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub head: String,
    /// ICMP unreachable: "type/code quoted-proto quoted-src>quoted-dst".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub icmp: String,
}

impl From<&PacketEvent<'_>> for EventLine {
    fn from(ev: &PacketEvent<'_>) -> Self {
        let mut line = EventLine {
            ts: ev.ts.to_string(),
            kind: ev.kind().as_str().to_string(),
            src: ev.src.to_string(),
            dst: ev.dst.to_string(),
            vlan: ev.vlan_depth,
            flags: String::new(),
            seq: 0,
            ack: 0,
            win: 0,
            len: 0,
            head: String::new(),
            icmp: String::new(),
        };
        match ev.transport {
            Transport::Tcp(seg) => {
                line.flags = seg.flags.to_string();
                line.seq = seg.seq;
                line.ack = seg.ack;
                line.win = seg.window;
                line.len = seg.payload_len;
                line.head = hex::encode(seg.head);
            }
            Transport::Udp(udp) => {
                line.len = udp.payload_len;
                line.head = hex::encode(udp.head);
            }
            Transport::Icmp(i) => {
                let proto = if i.inner_udp { "udp" } else { "tcp" };
                line.icmp = format!(
                    "{}/{} {proto} {}>{}",
                    i.icmp_type, i.code, i.inner_src, i.inner_dst
                );
            }
        }
        line
    }
}

/// Writes every event as a JSON line.
pub struct EventLog<W: std::io::Write> {
    out: W,
    pub errors: u64,
}

impl<W: std::io::Write> EventLog<W> {
    pub fn new(out: W) -> Self {
        Self { out, errors: 0 }
    }
}

impl<W: std::io::Write> EventSink for EventLog<W> {
    fn event(&mut self, event: &PacketEvent<'_>) {
        let line = EventLine::from(event);
        let ok = serde_json::to_writer(&mut self.out, &line).is_ok()
            && self.out.write_all(b"\n").is_ok();
        if !ok {
            self.errors += 1;
        }
    }
    fn flush(&mut self) {
        if self.out.flush().is_err() {
            self.errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind names are metric labels and `KindCounts` field names: they must not drift.
    #[test]
    fn kind_names_match_count_fields() {
        let names = EventKind::ALL.map(EventKind::as_str);
        assert_eq!(
            names,
            ["syn", "synack", "rst", "fin", "tcp_data", "udp", "icmp"]
        );
        let mut counts = KindCounts::default();
        for (i, k) in EventKind::ALL.into_iter().enumerate() {
            counts.set(k, i as u64 + 1);
        }
        let v = serde_json::to_value(counts).unwrap();
        for (i, k) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(v[k.as_str()], i as u64 + 1, "{k}");
        }
    }
}
