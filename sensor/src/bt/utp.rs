//! uTP (BEP 29) over UDP: the outgoing ST_SYN as a predictor of a TCP attempt.
//!
//! libtorrent dials every new peer over uTP first and, when the uTP connect fails, reconnects
//! at once over TCP to the same endpoint (libtorrent `peer_connection.cpp`: on a failed uTP
//! connect, `supports_utp = false` and "reconnect immediately using TCP"; `torrent_peer.cpp`
//! assumes every new peer supports uTP). So an ST_SYN sent by host H to
//! (ip, udp_port) predicts a TCP attempt from H to (ip, udp_port): one
//! [`PeerTransport::Tcp`] prediction on [`Channel::Utp`] for the *sender* (not the receiver, as
//! on the other channels). The SYN itself is the uTP attempt, so no UDP prediction is made (it
//! would excuse the very packet that announced it). Every copy of a SYN predicts (resends and
//! retries refresh the prediction table's entry); per-type counters cover the other packets.
//!
//! libprotoident's uTP signatures (`lpi_dht_dict.cc` `match_utp_query`/`match_utp_reply`) are
//! classifiers of a flow's first bytes:
//! only its SYN forms (`41 00` with 20 bytes, `41 02` with 30) stand for a connect attempt, and
//! both pass the SYN checks below; `21 ..` (STATE), `01 00` (DATA), `11 00` (FIN) and `31 ..`
//! (RESET) show a uTP connection that exists or ends, which predicts no fallback (only a SYN
//! is a connect attempt, BEP 29 "ST_SYN"). They are counted by type, not predicted from.
//!
//! # False-positive guards
//!
//! The header has no magic: any UDP payload of 20+ bytes whose first byte is `0x41` is a
//! candidate. What is required (from Wireshark's `packet-bt-utp.c` and nDPI's
//! `bittorrent.c` heuristics):
//! * version 1 and type ≤ 4 (the first byte), first extension ≤ 3 (Wireshark `get_utp_version`);
//! * an extension chain that ends within the packet after at most [`MAX_EXTENSIONS`] links,
//!   each of a known type with its defined length: selective ACK a non-zero multiple of 4
//!   bytes (BEP 29), extension bits 8 bytes (BEP 29), close reason 4 bytes (libtorrent);
//!   Wireshark only asks `len ≥ 4`, nDPI caps the chain at 4;
//! * `wnd_size ≤ 0x380000` (Wireshark's `V1_MAX_WINDOW_SIZE`);
//! * payload presence by type (nDPI): DATA carries payload, STATE and SYN end with their
//!   extensions (FIN and RESET are not constrained: the transmission capture has FINs with
//!   bytes after the header);
//! * for a SYN (nDPI): no payload at all (the datagram's *true* length equals header
//!   plus extensions), `timestamp_difference == 0`, `connection_id != 0`, `timestamp != 0`;
//! * a usable target: unicast, port ≠ 0, not the sender itself.
//!
//! nDPI also requires both UDP ports ≥ 1024. That is [`UtpConfig::min_port`], off by default:
//! the transmission capture holds real SYNs to ports 1 and 80 (17 packets, 9 targets) that it
//! would lose, and the checks above already rule out the background captures (see the tests).
//!
//! Residual risk. For random or encrypted payloads (QUIC short headers start `0x41` for up to
//! 1 in 32 packets) the 32 zero bits of `timestamp_difference`, the window bound (~10 bits) and
//! the exact length make a match less likely than 2^-40. What remains is (a) zero-heavy binary protocols with
//! a 20- or 30-byte message starting `41 00`/`41 02` and zeros at bytes 8–11, none seen in the
//! background captures; and (b) forgery: anyone can send a well-formed SYN, so a scanner that
//! precedes each TCP probe with a uTP SYN to the same ip:port gets its own probe predicted.
//! The SYN is the only channel where the learner vouches for itself (on the others a third
//! party answers), so consumers should weigh [`Channel::Utp`] accordingly, e.g. not count it
//! alone as evidence that a host runs BitTorrent.

use std::net::{IpAddr, SocketAddr};

use super::channel::{Learnt, Sender};
use super::wire::{Reader, Truncated};
use super::{unfit, ChannelCounts, Unfit};
use crate::event::{PacketEvent, UdpDatagram};
use crate::predict::{Channel, PeerTransport, PredictedPeer};

pub const HEADER_LEN: usize = 20;
pub const VERSION: u8 = 1;
/// Extensions followed in one packet (nDPI's bound; libtorrent sends at most two).
pub const MAX_EXTENSIONS: usize = 4;
/// Largest plausible `wnd_size` (Wireshark's `V1_MAX_WINDOW_SIZE`).
pub const MAX_WINDOW: u32 = 0x38_0000;

/// Extension types (BEP 29; 3 is libtorrent's close reason).
pub const EXT_SELECTIVE_ACK: u8 = 1;
pub const EXT_BITS: u8 = 2;
pub const EXT_CLOSE_REASON: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Data,
    Fin,
    State,
    Reset,
    Syn,
}

impl Type {
    pub(crate) fn from_nibble(t: u8) -> Option<Self> {
        Some(match t {
            0 => Type::Data,
            1 => Type::Fin,
            2 => Type::State,
            3 => Type::Reset,
            4 => Type::Syn,
            _ => return None,
        })
    }
}

/// Why a datagram that passed [`looks_like_utp`] is not a plausible uTP packet, or not a SYN
/// that predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reject {
    TooShort,
    BadVersion,
    BadType,
    /// An extension of unknown type, or of a length its type cannot have.
    BadExtension,
    /// More than [`MAX_EXTENSIONS`] links in the chain.
    TooManyExtensions,
    /// The chain runs past the end of the packet.
    ExtensionBeyondEnd,
    /// The capture holds only the head of the datagram and the chain runs past it.
    Incomplete,
    WindowTooLarge,
    /// ST_DATA with nothing after the extensions.
    DataWithoutPayload,
    /// A SYN or STATE with bytes after the extensions.
    UnexpectedPayload,
    /// A SYN whose `timestamp_difference` is not 0.
    SynTimestampDiff,
    ZeroConnectionId,
    ZeroTimestamp,
    /// A UDP port below [`UtpConfig::min_port`].
    LowPort,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One extension of the chain: its type and its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extension<'a> {
    pub kind: u8,
    pub data: &'a [u8],
}

/// A decoded version-1 header. Byte fields borrow from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub kind: Type,
    pub connection_id: u16,
    pub timestamp_us: u32,
    pub timestamp_diff_us: u32,
    pub wnd_size: u32,
    pub seq_nr: u16,
    pub ack_nr: u16,
    /// Type of the first extension (byte 1), 0 for none.
    pub first_extension: u8,
    /// The validated chain (bytes 20..payload_offset); read it with [`Header::extensions`].
    chain: &'a [u8],
    /// Where the payload starts: 20 plus the chain.
    pub payload_offset: usize,
}

impl<'a> Header<'a> {
    /// The extensions in order (the chain was validated by [`parse`]).
    pub fn extensions(&self) -> impl Iterator<Item = Extension<'a>> {
        let mut kind = self.first_extension;
        let mut rest = self.chain;
        std::iter::from_fn(move || {
            if kind == 0 {
                return None;
            }
            let [next, len, tail @ ..] = rest else {
                return None;
            };
            let data = tail.get(..usize::from(*len))?;
            let ext = Extension { kind, data };
            kind = *next;
            rest = &tail[data.len()..];
            Some(ext)
        })
    }
}

/// Whether `len` bytes are a length extension `kind` can have.
fn extension_len_ok(kind: u8, len: usize) -> bool {
    match kind {
        EXT_SELECTIVE_ACK => len >= 4 && len.is_multiple_of(4),
        EXT_BITS => len == 8,
        EXT_CLOSE_REASON => len == 4,
        _ => false,
    }
}

/// Cheap test before parsing: 20+ bytes, version 1, type ≤ 4, first extension ≤ 3. About 1 in
/// 3,300 random payloads passes; [`parse`] and the SYN checks do the rest.
pub fn looks_like_utp(head: &[u8]) -> bool {
    head.len() >= HEADER_LEN && head[0] & 0x0f == VERSION && head[0] >> 4 <= 4 && head[1] <= 3
}

/// Decodes the header and validates the extension chain (bounded by [`MAX_EXTENSIONS`]) and
/// the window. `p` is the captured payload; lengths that depend on the true size of the
/// datagram are checked by [`check_length`].
pub fn parse(p: &[u8]) -> Result<Header<'_>, Reject> {
    let mut r = Reader::new(p);
    let [type_version, first_extension] = *r.array::<2>()?;
    let connection_id = r.be16()?;
    let timestamp_us = r.be32()?;
    let timestamp_diff_us = r.be32()?;
    let wnd_size = r.be32()?;
    let seq_nr = r.be16()?;
    let ack_nr = r.be16()?;
    if type_version & 0x0f != VERSION {
        return Err(Reject::BadVersion);
    }
    let kind = Type::from_nibble(type_version >> 4).ok_or(Reject::BadType)?;
    let chain = extension_chain(r.rest(), first_extension)?;
    if wnd_size > MAX_WINDOW {
        return Err(Reject::WindowTooLarge);
    }
    Ok(Header {
        kind,
        connection_id,
        timestamp_us,
        timestamp_diff_us,
        wnd_size,
        seq_nr,
        ack_nr,
        first_extension,
        chain,
        payload_offset: HEADER_LEN + chain.len(),
    })
}

/// The fixed header is all there is to a datagram shorter than it.
impl From<Truncated> for Reject {
    fn from(_: Truncated) -> Self {
        Reject::TooShort
    }
}

/// The extension chain at the start of `after_header`, starting with type `first` (BEP 29:
/// `u8 next_type, u8 len, len bytes` until a next type of 0).
fn extension_chain(after_header: &[u8], first: u8) -> Result<&[u8], Reject> {
    let mut r = Reader::new(after_header);
    let mut ext = first;
    let mut links = 0;
    while ext != 0 {
        links += 1;
        if links > MAX_EXTENSIONS {
            return Err(Reject::TooManyExtensions);
        }
        if ext > EXT_CLOSE_REASON {
            return Err(Reject::BadExtension);
        }
        let [next, len] = *r
            .array::<2>()
            .map_err(|Truncated| Reject::ExtensionBeyondEnd)?;
        let len = usize::from(len);
        if !extension_len_ok(ext, len) {
            return Err(Reject::BadExtension);
        }
        r.skip(len)
            .map_err(|Truncated| Reject::ExtensionBeyondEnd)?;
        ext = next;
    }
    Ok(&after_header[..r.position()])
}

/// Payload presence by type, against the datagram's true length (nDPI): DATA carries payload,
/// SYN and STATE end with their extensions, FIN and RESET may carry anything.
pub fn check_length(h: &Header<'_>, payload_len: usize) -> Result<(), Reject> {
    match (h.kind, payload_len > h.payload_offset) {
        (Type::Data, false) => Err(Reject::DataWithoutPayload),
        (Type::Syn | Type::State, true) => Err(Reject::UnexpectedPayload),
        _ => Ok(()),
    }
}

/// The SYN-only fields a fresh connect attempt has (nDPI; BEP 29: a SYN opens with no
/// timestamp difference and picks a random connection id). Call after
/// [`check_length`].
pub fn check_syn(h: &Header<'_>) -> Result<(), Reject> {
    if h.timestamp_diff_us != 0 {
        Err(Reject::SynTimestampDiff)
    } else if h.connection_id == 0 {
        Err(Reject::ZeroConnectionId)
    } else if h.timestamp_us == 0 {
        Err(Reject::ZeroTimestamp)
    } else {
        Ok(())
    }
}

/// A connect attempt's target: a unicast endpoint other than the sender.
fn usable_target(peer: SocketAddr, sender: IpAddr) -> Option<Unfit> {
    let unicast = match peer.ip() {
        IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_multicast(),
    };
    if !unicast {
        return Some(Unfit::Unusable);
    }
    unfit(peer, sender, None)
}

#[derive(Clone, Debug, Default)]
pub struct UtpConfig {
    /// Both UDP ports of a SYN must be at least this (nDPI uses 1024); 0 disables the check.
    pub min_port: u16,
}

/// Counters of the uTP channel. `counts.seen` is every datagram that passed
/// [`looks_like_utp`]; `counts.parsed` those that are plausible uTP (per-type counts below),
/// SYNs included only when they passed the SYN checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UtpStats {
    pub counts: ChannelCounts,
    pub data: u64,
    pub fin: u64,
    pub state: u64,
    pub reset: u64,
    /// SYNs that passed every check (each copy counted).
    pub syn: u64,
    /// SYNs whose target cannot be dialled: port 0, unspecified, multicast or broadcast.
    pub syn_unusable_target: u64,
    /// SYNs a host sent to itself.
    pub syn_to_self: u64,
    /// Predictions made (one TCP prediction per usable SYN).
    pub predicted: u64,
}

/// The uTP channel: stateless apart from its counters.
#[derive(Debug, Default)]
pub struct Utp {
    config: UtpConfig,
    stats: UtpStats,
}

impl Utp {
    pub fn new(config: UtpConfig) -> Self {
        Self {
            config,
            stats: UtpStats::default(),
        }
    }

    pub fn stats(&self) -> UtpStats {
        self.stats.clone()
    }

    /// One datagram that passed [`looks_like_utp`]. Returns whether it was a valid SYN: its
    /// sender runs uTP (the coordinator uses that to track BitTorrent hosts for LSD).
    pub fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Vec<PredictedPeer>,
    ) -> bool {
        self.stats.counts.seen += 1;
        match self.on_packet(ev, udp, out) {
            Ok(syn) => {
                self.stats.counts.parsed += 1;
                syn
            }
            Err(r) => {
                self.stats.counts.reject(r.as_str());
                false
            }
        }
    }

    fn on_packet(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Vec<PredictedPeer>,
    ) -> Result<bool, Reject> {
        let h = match parse(udp.head) {
            Err(Reject::ExtensionBeyondEnd) if !udp.is_complete() => Err(Reject::Incomplete),
            r => r,
        }?;
        check_length(&h, usize::from(udp.payload_len).max(udp.head.len()))?;
        let counter = match h.kind {
            Type::Data => &mut self.stats.data,
            Type::Fin => &mut self.stats.fin,
            Type::State => &mut self.stats.state,
            Type::Reset => &mut self.stats.reset,
            Type::Syn => {
                check_syn(&h)?;
                if ev.src.port() < self.config.min_port || ev.dst.port() < self.config.min_port {
                    return Err(Reject::LowPort);
                }
                self.stats.syn += 1;
                self.predict(ev, out);
                return Ok(true);
            }
        };
        *counter += 1;
        Ok(false)
    }

    fn predict(&mut self, ev: &PacketEvent<'_>, out: &mut Vec<PredictedPeer>) {
        let host = ev.src.ip();
        match usable_target(ev.dst, host) {
            Some(Unfit::Unusable) => self.stats.syn_unusable_target += 1,
            Some(Unfit::OwnAddress) => self.stats.syn_to_self += 1,
            None => {
                out.push(PredictedPeer {
                    ts: ev.ts,
                    host,
                    peer: ev.dst,
                    transport: PeerTransport::Tcp,
                    channel: Channel::Utp,
                });
                self.stats.predicted += 1;
            }
        }
    }
}

impl super::channel::Channel for Utp {
    fn name(&self) -> &'static str {
        "utp"
    }

    fn claims(&self, _ev: &PacketEvent<'_>, udp: &UdpDatagram<'_>) -> bool {
        looks_like_utp(udp.head)
    }

    /// A valid SYN only: DATA and STATE are too frequent to track per packet.
    fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Learnt<'_>,
    ) -> Sender {
        if Utp::on_udp(self, ev, udp, out.predictions) {
            Sender::BitTorrent
        } else {
            Sender::Unknown
        }
    }

    fn counts(&self, f: &mut dyn FnMut(&'static str, &ChannelCounts)) {
        f("utp", &self.stats.counts);
    }

    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).expect("counters serialize")
    }
}

#[cfg(test)]
mod tests;
