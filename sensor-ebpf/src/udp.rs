//! The UDP payload policy: which datagrams' heads are forwarded.
//!
//! Forwarding every UDP payload puts the whole of uTP piece data, QUIC, DNS and media into the
//! ring, while prediction reads only coordination messages. A datagram's head is forwarded
//! only when it has the shape one of the userspace readers claims (each check below is the
//! same test as the reader's own, or a superset of it, so a reader is never denied a datagram
//! it would have used):
//! - a KRPC message (BEP 5): a bencoded dictionary, `d` and a key-length digit;
//! - a UDP tracker message (BEP 15): a connect request (the protocol id `0x41727101980` and
//!   action 0), an announce (action 1, at least 98 bytes) or scrape request (action 2, 16 bytes
//!   plus 20 per info hash), or a response (actions 0–4 at offset 0: connect, announce, scrape,
//!   error, and the IPv6 announce of the old BEP 15 draft) of at least 8 bytes on a flow a
//!   request marked (the reader takes responses only from trackers its host asked; the
//!   shape alone would let through every mDNS query, whose first four bytes are zero);
//! - a Vuze DHT packet (BiglyBT `DHTUDPPacketRequest`/`DHTUDPPacketReply`): a request's
//!   connection id with the top bit set and an action code 1024–1039 at offset 8, or a reply's
//!   action code at offset 0 and the top bit of its connection id at offset 8;
//! - an LSD announce (BEP 14): `BT-SEARCH` to UDP port 6771;
//! - a uTP packet (BEP 29: version 1, type ≤ 4, first extension ≤ 3): ST_SYN, ST_STATE,
//!   ST_FIN and ST_RESET with their extension chain (at most [`UTP_CONTROL_CAP`] bytes, far
//!   more than any chain libtorrent or libutp sends); ST_DATA only on a connection marked as
//!   peer wire, see below.
//!
//! **uTP connections.** A uTP DATA packet whose payload opens like the peer wire (the
//! handshake, or a BEP 10 extended message: the TCP rule of [`crate::tcp_action`]) marks its
//! flow (UDP 5-tuple) in the same flow table as TCP, and is forwarded whole. A marked flow
//! forwards its first [`UTP_FULL_PACKETS`] DATA packets whole (the handshakes, the extended
//! handshake, even when a client packs a bitfield behind them), then whole only the packets of
//! at most [`UTP_SMALL_DATAGRAM`] bytes, which ut_pex (BEP 11) and the other control messages
//! are and piece data is not; a larger one is forwarded as its bare 20-byte header. The header
//! keeps the stream's sequence numbers whole, so the userspace reader (`bt::utp_stream`) sees
//! each skipped payload as a cut packet and resynchronises at once, instead of holding the next
//! PEX until a reorder wait declares the hole lost. A new handshake or extended message
//! refreshes the budget (a new connection between the same endpoints); ST_RESET, or an
//! ST_FIN from each side, unmarks. DATA on unmarked flows (MSE-encrypted peer wire, another
//! protocol) is not forwarded: the reader would drop such a connection at its first payload.
//!
//! Everything else is not forwarded (`UDP_UNCLASSIFIED`), or, under
//! [`udp_policy::CLASSIFIED_META`] (`--udp-scan`, where every UDP request is a scan attempt),
//! forwarded as a compact metadata record without payload.

#[cfg(doc)]
use crate::flow::extended_message_shape;
use crate::flow::{
    flow_class, flow_key_of, FlowState, FlowTable, EXTENDED_SHAPE, FIN_A, FIN_B, HANDSHAKE,
};
use crate::parse::be32;
use crate::{counter, kind, FlowHeader, Frame, Parsed, L4};

/// How UDP payloads are forwarded (the XDP program's `UDP_POLICY`, the offline pre-filter's
/// setting).
pub mod udp_policy {
    /// Every UDP payload head, up to the snap length: the policy before classification, kept
    /// to compare against.
    pub const FULL: u32 = 0;
    /// Only the heads of datagrams that can carry coordination (the module docs).
    pub const CLASSIFIED: u32 = 1;
    /// As [`CLASSIFIED`], and every other datagram as a metadata record (`--udp-scan`).
    pub const CLASSIFIED_META: u32 = 2;
}

/// DATA packets of a marked uTP flow forwarded whole before the size rule applies.
pub const UTP_FULL_PACKETS: u32 = 8;
/// Past the budget, uTP DATA datagrams of at most this many UDP payload bytes are still
/// forwarded whole: 512 bytes of peer wire (the TCP rule, `SMALL_SEGMENT`) plus a header with
/// a selective ACK.
pub const UTP_SMALL_DATAGRAM: u16 = 576;
/// Bytes of a uTP control packet (ST_SYN, ST_STATE, ST_FIN, ST_RESET) forwarded.
pub const UTP_CONTROL_CAP: u32 = 128;
/// The uTP fixed header (BEP 29).
const UTP_HEADER: usize = 20;
/// The same, as a copy length.
const UTP_HEADER_CAP: u32 = 20;

/// LSD (BEP 14) port and method.
const LSD_PORT: u16 = 6771;

/// The coordination shape a UDP payload head has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpClass {
    /// KRPC, Vuze DHT or LSD: forwarded whole.
    Coordination,
    /// A BEP 15 request (connect, announce, scrape): forwarded whole, and its flow marked so
    /// that the tracker's responses are forwarded too.
    TrackerRequest,
    /// A BEP 15 response shape (an action 0–4 first): forwarded whole on a marked flow only.
    /// The shape alone is weak (an mDNS query opens with four zero bytes), and the reader
    /// takes a response only from a tracker the host sent a request to.
    TrackerResponse,
    /// ST_SYN, ST_STATE, ST_FIN or ST_RESET; the type nibble.
    UtpControl(u8),
    UtpData,
}

/// What to do with a UDP datagram [`parse`](fn@crate::parse) accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpAction {
    /// A [`UdpRecord`](crate::UdpRecord) of kind `hdr.kind` with `hdr.cap_len` payload bytes
    /// (none for [`kind::UDP_META`]), counted under the slot.
    Forward(u32),
    /// Not forwarded, counted under the slot.
    Skip(u32),
}

const UTP_DATA: u8 = 0;
const UTP_FIN: u8 = 1;
const UTP_RESET: u8 = 3;

// The checks below are chains of tests that each return at once, so the paths through them
// add: k tests make k + 1 paths, which meet in a few states the verifier prunes. They were
// once conditions combined with `&` and `|` on `bool`, to avoid branches; LLVM compiled every
// condition to a branch all the same, and kept its 0 or 1 in a stack slot until the final
// `|`, so the verifier followed each combination of those constants apart: with ten
// conditions, the program exceeded the kernel's million-instruction budget.

/// The shape of a payload head of at least 20 bytes, `cap` of them valid, sent to `dst_port`.
/// Every check is the userspace reader's own cheap test, or a superset of it.
#[inline(always)]
pub fn udp_class_of(b: &[u8; 20], cap: u32, dst_port: u16) -> Option<UdpClass> {
    // uTP (`utp::looks_like_utp`): version 1, type ≤ 4, first extension ≤ 3.
    if b[0] & 0x0f == 1 && b[0] >> 4 <= 4 && b[1] <= 3 {
        let t = b[0] >> 4;
        return Some(if t == UTP_DATA {
            UdpClass::UtpData
        } else {
            UdpClass::UtpControl(t)
        });
    }
    let (w0, w1, w2) = (be32(b, 0), be32(b, 4), be32(b, 8));
    // KRPC (`dht::looks_like_krpc`): a dictionary opening with a key length.
    if b[0] == b'd' && b[1].wrapping_sub(b'0') < 10 {
        return Some(UdpClass::Coordination);
    }
    // BEP 15 (`udp_tracker::shape`): connect, announce and scrape requests by their action at
    // offset 8 and their sizes.
    if (w0 == TRACKER_ID_HI && w1 == TRACKER_ID_LO && w2 == 0)
        || (w2 == 1 && cap >= 98)
        || (w2 == 2 && cap > 16 && cap.wrapping_sub(16).is_multiple_of(20))
    {
        return Some(UdpClass::TrackerRequest);
    }
    // Vuze DHT (`vuze_dht::looks_like_vuze`, without its version check): a request's
    // connection id has the top bit set and its action 1024-1039 follows at 8; a reply's
    // action comes first and its connection id (top bit set) at 8.
    if (b[0] & 0x80 != 0 && cap >= 42 && w2.wrapping_sub(1024) < 16)
        || (cap >= 26 && b[8] & 0x80 != 0 && w0.wrapping_sub(1024) < 16)
    {
        return Some(UdpClass::Coordination);
    }
    // LSD (`lsd::looks_like_lsd`): `BT-SEARCH` in any case to port 6771. Folding every byte
    // with 0x20 also lets a few non-letters through; the reader checks exactly.
    if dst_port == LSD_PORT
        && w0 | 0x2020_2020 == LSD_FOLDED.0
        && w1 | 0x2020_2020 == LSD_FOLDED.1
        && b[8] | 0x20 == b'h'
    {
        return Some(UdpClass::Coordination);
    }
    // BEP 15 responses by their action (0-4) at offset 0.
    if w0 <= 4 {
        return Some(UdpClass::TrackerResponse);
    }
    None
}

/// The same for a head of 8 to 19 bytes: KRPC (at least 12), the BEP 15 connect request (its
/// protocol id) and responses. A superset of what the readers take at these sizes.
#[inline(always)]
fn short_class_of(b: &[u8; 8], cap: u32) -> Option<UdpClass> {
    let (w0, w1) = (be32(b, 0), be32(b, 4));
    if cap >= 12 && b[0] == b'd' && b[1].wrapping_sub(b'0') < 10 {
        return Some(UdpClass::Coordination);
    }
    if w0 == TRACKER_ID_HI && w1 == TRACKER_ID_LO {
        return Some(UdpClass::TrackerRequest);
    }
    if w0 <= 4 {
        return Some(UdpClass::TrackerResponse);
    }
    None
}

/// `bt-search` (first 8 bytes) as two big-endian words.
const LSD_FOLDED: (u32, u32) = (u32::from_be_bytes(*b"bt-s"), u32::from_be_bytes(*b"earc"));
/// The BEP 15 protocol id `0x41727101980` as two big-endian words.
const TRACKER_ID_HI: u32 = 0x0000_0417;
const TRACKER_ID_LO: u32 = 0x2710_1980;

/// The UDP payload policy, shared by the XDP program and the offline path. Sets `hdr.kind`
/// and `hdr.cap_len` of the record to emit, and keeps the uTP flow marks.
#[inline(always)]
pub fn udp_action<T: FlowTable + ?Sized, F: Frame + ?Sized>(
    table: &mut T,
    frame: &F,
    p: &mut Parsed,
    policy: u32,
    count: &mut impl FnMut(u32),
) -> UdpAction {
    let L4::Udp { payload_off } = p.l4 else {
        return UdpAction::Skip(counter::PARSE_ERRORS);
    };
    if policy == udp_policy::FULL {
        return UdpAction::Forward(counter::REC_UDP);
    }
    let cap = u32::from(p.hdr.cap_len);
    let class = if cap >= 20 {
        match frame.copy::<20>(payload_off) {
            Some(b) => udp_class_of(&b, cap, p.hdr.dst_port),
            None => None,
        }
    } else if cap >= 8 {
        match frame.copy::<8>(payload_off) {
            Some(b) => short_class_of(&b, cap),
            None => None,
        }
    } else {
        None
    };
    match class {
        Some(UdpClass::UtpControl(t)) => {
            if t == UTP_FIN || t == UTP_RESET {
                end_utp_flow(table, &p.hdr, t == UTP_RESET, count);
            }
            set_cap(p, min(cap, UTP_CONTROL_CAP));
            UdpAction::Forward(counter::REC_UDP)
        }
        Some(UdpClass::UtpData) => utp_data(table, frame, p, payload_off, policy, count),
        Some(UdpClass::TrackerRequest) => {
            mark_tracker_flow(table, &p.hdr, count);
            UdpAction::Forward(counter::REC_UDP)
        }
        Some(UdpClass::TrackerResponse) => {
            if table.get(&flow_key_of(&p.hdr, 17)).is_some() {
                UdpAction::Forward(counter::REC_UDP)
            } else {
                unclassified(p, policy)
            }
        }
        Some(UdpClass::Coordination) => UdpAction::Forward(counter::REC_UDP),
        None => unclassified(p, policy),
    }
}

/// A BEP 15 request: marks its flow (unless already marked, e.g. as uTP) so that the responses
/// coming back on it are forwarded. The mark lives as long as the flow table keeps it (LRU).
#[inline(always)]
fn mark_tracker_flow<T: FlowTable + ?Sized>(
    table: &mut T,
    hdr: &FlowHeader,
    count: &mut impl FnMut(u32),
) {
    let key = flow_key_of(hdr, 17);
    if table.get(&key).is_none() {
        let state = FlowState {
            class: flow_class::UDP_TRACKER,
            fins: 0,
            pad: [0; 2],
            segments_left: 0,
        };
        table.set(&key, &state);
        count(counter::FLOWS_MARKED);
    }
}

/// A uTP DATA packet: forwarded on a marked flow (whole, or its header past the budget), or
/// when its payload marks the flow.
#[inline(always)]
fn utp_data<T: FlowTable + ?Sized, F: Frame + ?Sized>(
    table: &mut T,
    frame: &F,
    p: &mut Parsed,
    payload_off: usize,
    policy: u32,
    count: &mut impl FnMut(u32),
) -> UdpAction {
    let opens_peer_wire = match utp_payload_offset(frame, payload_off) {
        Some(off) => opens_peer_wire(frame, off),
        None => false,
    };
    let key = flow_key_of(&p.hdr, 17);
    let state = table.get(&key);
    if opens_peer_wire {
        // A handshake or an extended message: (re)mark, a new budget.
        table.set(
            &key,
            &FlowState {
                class: flow_class::PEER_WIRE,
                fins: 0,
                pad: [0; 2],
                segments_left: UTP_FULL_PACKETS - 1,
            },
        );
        if state.is_none() {
            count(counter::FLOWS_MARKED);
        }
        return UdpAction::Forward(counter::REC_UDP);
    }
    let Some(mut state) = state else {
        return unclassified(p, policy);
    };
    if state.segments_left > 0 {
        state.segments_left -= 1;
        table.set(&key, &state);
    } else if p.hdr.payload_len > UTP_SMALL_DATAGRAM {
        count(counter::UTP_HEADER_ONLY);
        set_cap(p, min(u32::from(p.hdr.cap_len), UTP_HEADER_CAP));
    }
    UdpAction::Forward(counter::REC_UDP)
}

/// Where the payload of a uTP packet at `off` starts, for a packet without extensions, or
/// `None`. Packets that open a connection's peer wire carry none (there is nothing to
/// selectively acknowledge yet); walking a chain of up to four links at variable offsets
/// multiplied the paths the verifier must follow past its limit, so a peer-wire opening behind
/// an extension is not looked for (its connection is then read from its next one, as a
/// connection picked up mid-session).
#[inline(always)]
fn utp_payload_offset<F: Frame + ?Sized>(frame: &F, off: usize) -> Option<usize> {
    let head = frame.copy::<2>(off)?;
    if head[1] == 0 {
        Some(off + UTP_HEADER)
    } else {
        None
    }
}

/// Whether the bytes at `off` open the peer wire: the handshake, or a BEP 10 extended message
/// (the TCP probe's rule, [`extended_message_shape`]; `StreamClass::of` in userspace).
#[inline(always)]
fn opens_peer_wire<F: Frame + ?Sized>(frame: &F, off: usize) -> bool {
    if let Some(b) = frame.copy::<20>(off) {
        let b = &b;
        let h = HANDSHAKE;
        return (be32(b, 0) == be32(h, 0)
            && be32(b, 4) == be32(h, 4)
            && be32(b, 8) == be32(h, 8)
            && be32(b, 12) == be32(h, 12)
            && be32(b, 16) == be32(h, 16))
            || extended_shape(b);
    }
    match frame.copy::<EXTENDED_SHAPE>(off) {
        Some(b) => extended_shape(&b),
        None => false,
    }
}

/// [`extended_message_shape`] over the first nine bytes of `b`, as a chain of tests.
#[inline(always)]
fn extended_shape<const N: usize>(b: &[u8; N]) -> bool {
    if N < EXTENDED_SHAPE {
        return false;
    }
    b[0] == 0
        && b[1] == 0
        && be32(b, 0) >= 4
        && b[4] == 20
        && b[6] == b'd'
        && b[7].wrapping_sub(b'1') < 9
        && (b[8] == b':' || b[8].wrapping_sub(b'0') < 10)
}

/// ST_FIN from one side, or ST_RESET: the flow's mark ends (both FINs, or the RESET).
#[inline(always)]
fn end_utp_flow<T: FlowTable + ?Sized>(
    table: &mut T,
    hdr: &FlowHeader,
    reset: bool,
    count: &mut impl FnMut(u32),
) {
    let key = flow_key_of(hdr, 17);
    let Some(mut state) = table.get(&key) else {
        return;
    };
    if !reset {
        let src_is_a = (hdr.src_addr, hdr.src_port) == (key.a_addr, key.a_port);
        state.fins |= if src_is_a { FIN_A } else { FIN_B };
    }
    if reset || state.fins == FIN_A | FIN_B {
        table.remove(&key);
        count(counter::FLOWS_ENDED);
    } else {
        table.set(&key, &state);
    }
}

/// A datagram without a coordination shape: a metadata record under `CLASSIFIED_META`,
/// otherwise not forwarded.
#[inline(always)]
fn unclassified(p: &mut Parsed, policy: u32) -> UdpAction {
    if policy == udp_policy::CLASSIFIED_META {
        p.hdr.kind = kind::UDP_META;
        p.hdr.cap_len = 0;
        UdpAction::Forward(counter::REC_UDP_META)
    } else {
        UdpAction::Skip(counter::UDP_UNCLASSIFIED)
    }
}

/// Copies only `cap` bytes (no more than were to be copied).
#[inline(always)]
// `cap` is at most the 16-bit `cap_len` it was derived from.
#[allow(clippy::cast_possible_truncation)]
fn set_cap(p: &mut Parsed, cap: u32) {
    p.hdr.cap_len = cap as u16;
}

#[inline(always)]
const fn min(a: u32, b: u32) -> u32 {
    if a < b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{parse, FlowKey, DEFAULT_SNAPLEN};
    use std::collections::HashMap;
    use std::vec::Vec;

    #[derive(Default)]
    struct Table(HashMap<FlowKey, FlowState>);

    impl FlowTable for Table {
        fn get(&mut self, key: &FlowKey) -> Option<FlowState> {
            self.0.get(key).copied()
        }
        fn set(&mut self, key: &FlowKey, state: &FlowState) {
            self.0.insert(*key, *state);
        }
        fn remove(&mut self, key: &FlowKey) {
            self.0.remove(key);
        }
    }

    /// Ethernet + IPv4 + UDP from 192.0.2.10:`sport` to 203.0.113.7:`dport`.
    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::from([2, 0, 0, 0, 0, 0x0b, 2, 0, 0, 0, 0, 0x0a, 0x08, 0x00]);
        let total = u16::try_from(28 + payload.len()).unwrap();
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 10, 203, 0, 113, 7]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// The same datagram the other way (203.0.113.7:`dport` to 192.0.2.10:`sport`).
    fn reply(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = udp(dport, sport, payload);
        f[26..30].copy_from_slice(&[203, 0, 113, 7]);
        f[30..34].copy_from_slice(&[192, 0, 2, 10]);
        f
    }

    /// The policy's verdict: (counter slot, record kind, bytes copied), or the skip slot.
    fn run(t: &mut Table, frame: &[u8], policy: u32) -> Result<(u32, u8, u16), u32> {
        let mut p = parse(frame, DEFAULT_SNAPLEN, &mut |_| {})?;
        match udp_action(t, frame, &mut p, policy, &mut |_| {}) {
            UdpAction::Forward(slot) => Ok((slot, p.hdr.kind, p.hdr.cap_len)),
            UdpAction::Skip(slot) => Err(slot),
        }
    }

    /// A uTP header of `t`ype with connection id 7 and sequence number `seq`.
    fn utp(t: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::from([t << 4 | 1, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]);
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(payload);
        h
    }

    const SKIP: Result<(u32, u8, u16), u32> = Err(counter::UDP_UNCLASSIFIED);

    #[test]
    fn coordination_shapes_are_forwarded_whole() {
        let mut t = Table::default();
        let krpc = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let mut connect = Vec::from([0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80]);
        connect.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        let mut announce = std::vec![0u8; 98];
        announce[11] = 1;
        let mut scrape = std::vec![0u8; 16 + 40];
        scrape[11] = 2;
        let mut announce_resp = std::vec![0u8; 20 + 6 * 3];
        announce_resp[3] = 1;
        let mut vuze_req = std::vec![0x80u8; 60];
        vuze_req[8..12].copy_from_slice(&1025u32.to_be_bytes());
        let mut vuze_reply = std::vec![0u8; 40];
        vuze_reply[..4].copy_from_slice(&1026u32.to_be_bytes());
        vuze_reply[8] = 0x80;
        let lsd = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n\r\n";
        for (payload, port) in [
            (&krpc[..], 6881),
            (&connect, 6969),
            (&announce, 6969),
            (&scrape, 6969),
            (&announce_resp, 6969),
            (&vuze_req, 6881),
            (&vuze_reply, 6881),
            (&lsd[..], LSD_PORT),
            (&b"bt-search * HTTP/1.1\r\n\r\n"[..], LSD_PORT),
        ] {
            let len = u16::try_from(payload.len()).unwrap();
            let r = run(&mut t, &udp(40000, port, payload), udp_policy::CLASSIFIED);
            assert_eq!(r, Ok((counter::REC_UDP, kind::UDP, len)), "{payload:?}");
        }
        // An LSD method to another port, a scrape of a partial info hash, a short "response".
        // (A scrape request opens with a connection id; all zero, it would be a response.)
        let mut bad_scrape = scrape.clone();
        bad_scrape[0] = 0x17;
        bad_scrape.push(0);
        for (payload, port) in [
            (&lsd[..], 6772),
            (&bad_scrape, 6969),
            (&[0u8, 0, 0, 1, 9, 9][..], 6969),
        ] {
            assert_eq!(
                run(&mut t, &udp(40000, port, payload), udp_policy::CLASSIFIED),
                SKIP
            );
        }
    }

    /// A BEP 15 response shape goes only on a flow a request marked: an mDNS query (four zero
    /// bytes first, as a connect response) is withheld, the tracker's answer to a host's
    /// connect is forwarded, and an answer from another tracker is not.
    #[test]
    fn tracker_responses_go_only_where_a_request_went() {
        let mut t = Table::default();
        // An mDNS query for `_googlecast._tcp.local` PTR (ID 0, flags 0), as hosts send them.
        let mut mdns = Vec::from([0u8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        mdns.extend_from_slice(b"\x0b_googlecast\x04_tcp\x05local\x00\x00\x0c\x00\x01");
        assert_eq!(
            run(&mut t, &udp(5353, 5353, &mdns), udp_policy::CLASSIFIED),
            SKIP
        );
        let mut connect_resp = Vec::from([0u8, 0, 0, 0, 1, 2, 3, 4]);
        connect_resp.extend_from_slice(&[9; 8]);
        assert_eq!(
            run(
                &mut t,
                &reply(40000, 6969, &connect_resp),
                udp_policy::CLASSIFIED
            ),
            SKIP,
            "no request went to this tracker"
        );
        assert!(t.0.is_empty());
        let mut connect = Vec::from([0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80]);
        connect.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        let forwarded = |len: usize| Ok((counter::REC_UDP, kind::UDP, u16::try_from(len).unwrap()));
        assert_eq!(
            run(&mut t, &udp(40000, 6969, &connect), udp_policy::CLASSIFIED),
            forwarded(16)
        );
        assert_eq!(
            run(
                &mut t,
                &reply(40000, 6969, &connect_resp),
                udp_policy::CLASSIFIED
            ),
            forwarded(16)
        );
        let mut announce_resp = std::vec![0u8; 20 + 6 * 3];
        announce_resp[3] = 1;
        assert_eq!(
            run(
                &mut t,
                &reply(40000, 6969, &announce_resp),
                udp_policy::CLASSIFIED
            ),
            forwarded(38)
        );
        // Another tracker port, and under `--udp-scan` a metadata record only.
        assert_eq!(
            run(
                &mut t,
                &reply(40000, 6970, &connect_resp),
                udp_policy::CLASSIFIED
            ),
            SKIP
        );
        assert_eq!(
            run(
                &mut t,
                &reply(40000, 6970, &connect_resp),
                udp_policy::CLASSIFIED_META
            ),
            Ok((counter::REC_UDP_META, kind::UDP_META, 0))
        );
        assert_eq!(t.0.len(), 1, "one tracker flow marked");
    }

    #[test]
    fn other_datagrams_are_withheld_or_metadata() {
        let mut t = Table::default();
        // A QUIC long header, DNS, RTP-like media.
        let quic = [&[0xc3u8, 0, 0, 0, 1, 8][..], &[0x5a; 1200]].concat();
        let dns = [
            0x12u8, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 0, 0, 1, 0, 1,
        ];
        let rtp = [&[0x80u8, 0x60, 0, 1][..], &[0x11; 160]].concat();
        for payload in [&quic[..], &dns, &rtp] {
            let frame = udp(40000, 443, payload);
            assert_eq!(run(&mut t, &frame, udp_policy::CLASSIFIED), SKIP);
            let len = u16::try_from(payload.len()).unwrap();
            assert_eq!(
                run(&mut t, &frame, udp_policy::CLASSIFIED_META),
                Ok((counter::REC_UDP_META, kind::UDP_META, 0))
            );
            assert_eq!(
                run(&mut t, &frame, udp_policy::FULL),
                Ok((counter::REC_UDP, kind::UDP, len))
            );
        }
        assert!(t.0.is_empty(), "nothing is marked");
    }

    #[test]
    fn utp_control_packets_go_with_their_extensions() {
        let mut t = Table::default();
        let syn = utp(4, 100, &[]);
        assert_eq!(
            run(&mut t, &udp(40000, 6881, &syn), udp_policy::CLASSIFIED),
            Ok((counter::REC_UDP, kind::UDP, 20))
        );
        // A STATE with a selective ACK: 20 + 2 + 4 bytes.
        let mut state = utp(2, 5, &[0, 4, 1, 2, 3, 4]);
        state[1] = 1;
        assert_eq!(
            run(&mut t, &reply(40000, 6881, &state), udp_policy::CLASSIFIED),
            Ok((counter::REC_UDP, kind::UDP, 26))
        );
        // A FIN with bytes after the header is cut to UTP_CONTROL_CAP.
        let fin = utp(1, 9, &[0; 400]);
        assert_eq!(
            run(&mut t, &udp(40000, 6881, &fin), udp_policy::CLASSIFIED),
            Ok((counter::REC_UDP, kind::UDP, 128))
        );
    }

    #[test]
    fn utp_peer_wire_flows_forward_handshakes_control_messages_and_headers() {
        let mut t = Table::default();
        let piece = [0x77u8; 1400];
        // DATA on an unmarked flow (MSE, or no peer wire) is withheld.
        assert_eq!(
            run(
                &mut t,
                &udp(40000, 6881, &utp(0, 1, &piece)),
                udp_policy::CLASSIFIED
            ),
            SKIP
        );
        // The handshake marks the flow; it goes whole whatever its size.
        let mut hs = Vec::from(*HANDSHAKE);
        hs.extend_from_slice(&[0; 48 + 700]);
        let first = udp(40000, 6881, &utp(0, 2, &hs));
        assert_eq!(
            run(&mut t, &first, udp_policy::CLASSIFIED),
            Ok((counter::REC_UDP, kind::UDP, 20 + 768))
        );
        assert_eq!(t.0.len(), 1);
        // The budget: UTP_FULL_PACKETS in all (the handshake was the first), either way.
        for seq in 0..UTP_FULL_PACKETS - 1 {
            let r = run(
                &mut t,
                &reply(
                    40000,
                    6881,
                    &utp(0, 10 + u16::try_from(seq).unwrap(), &piece),
                ),
                udp_policy::CLASSIFIED,
            );
            assert_eq!(r, Ok((counter::REC_UDP, kind::UDP, 1420)));
        }
        // Then a piece-sized packet goes as its bare header, a small one whole.
        let r = run(
            &mut t,
            &reply(40000, 6881, &utp(0, 30, &piece)),
            udp_policy::CLASSIFIED,
        );
        assert_eq!(r, Ok((counter::REC_UDP, kind::UDP, 20)));
        let small = [0x55u8; UTP_SMALL_DATAGRAM as usize - 20];
        let r = run(
            &mut t,
            &reply(40000, 6881, &utp(0, 31, &small)),
            udp_policy::CLASSIFIED,
        );
        assert_eq!(r, Ok((counter::REC_UDP, kind::UDP, UTP_SMALL_DATAGRAM)));
        // An extended message opening a packet renews the budget (a PEX, or a new connection).
        let mut pex = Vec::from([0u8, 0, 0, 200, 20, 1, b'd', b'5', b':']);
        pex.extend_from_slice(&[b'x'; 1000]);
        let r = run(
            &mut t,
            &reply(40000, 6881, &utp(0, 32, &pex)),
            udp_policy::CLASSIFIED,
        );
        assert_eq!(r, Ok((counter::REC_UDP, kind::UDP, 1029)));
        let r = run(
            &mut t,
            &reply(40000, 6881, &utp(0, 33, &piece)),
            udp_policy::CLASSIFIED,
        );
        assert_eq!(r, Ok((counter::REC_UDP, kind::UDP, 1420)));
        // A FIN from each side unmarks; then DATA is withheld again.
        let _ = run(
            &mut t,
            &udp(40000, 6881, &utp(1, 40, &[])),
            udp_policy::CLASSIFIED,
        );
        assert_eq!(t.0.len(), 1, "one FIN leaves the other side open");
        let _ = run(
            &mut t,
            &reply(40000, 6881, &utp(1, 41, &[])),
            udp_policy::CLASSIFIED,
        );
        assert!(t.0.is_empty());
        assert_eq!(
            run(
                &mut t,
                &reply(40000, 6881, &utp(0, 42, &piece)),
                udp_policy::CLASSIFIED
            ),
            SKIP
        );
        // A RESET unmarks at once.
        let _ = run(&mut t, &first, udp_policy::CLASSIFIED);
        let _ = run(
            &mut t,
            &reply(40000, 6881, &utp(3, 1, &[])),
            udp_policy::CLASSIFIED,
        );
        assert!(t.0.is_empty());
    }

    #[test]
    fn only_data_without_extensions_marks() {
        let mut t = Table::default();
        // A handshake behind a selective ACK is not looked for (see `utp_payload_offset`).
        let mut hs = Vec::from([0u8, 4, 0, 0, 0, 0]);
        hs.extend_from_slice(HANDSHAKE);
        let mut pkt = utp(0, 1, &hs);
        pkt[1] = 1;
        assert_eq!(
            run(&mut t, &udp(40000, 6881, &pkt), udp_policy::CLASSIFIED),
            SKIP
        );
        assert!(t.0.is_empty());
    }
}
