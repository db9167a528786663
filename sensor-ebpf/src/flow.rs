//! Flow marking: which TCP flows have their payload forwarded.
//!
//! The HTTP tracker and the peer wire need TCP payloads, but forwarding every TCP payload would
//! put the whole link into the ring. A flow is marked only on a positive signature in one of its
//! payloads: an HTTP `GET ` whose query carries `info_hash=` in its first bytes (a tracker
//! announce, BEP 3 "Trackers"), the peer-wire handshake `0x13 "BitTorrent protocol"` (BEP 3
//! "Peer protocol"), or a BEP 10 extended message (message id 20) opening a segment: a
//! connection whose handshake came before the flow table or the capture did, since PEX (BEP 11)
//! is sent mid-session. SYNs never mark, so a scan or a flood cannot churn the table.
//! A marked flow has a budget: its first `FLOW_SEGMENTS` payload segments are forwarded; after
//! that a peer-wire flow forwards only segments of at most `SMALL_SEGMENT` bytes (control
//! messages and PEX are small, `piece` data is not) and an HTTP flow is unmarked (a new announce
//! on the connection marks it again). RST, or a FIN from each side, unmarks.
//! In the kernel the table is a `BPF_MAP_TYPE_LRU_HASH` (kernel `Documentation/bpf/map_hash.rst`):
//! preallocated, and a full map evicts its least recently used entries instead of failing an
//! insert, so a flow that goes quiet is eventually forgotten without any timer.

use crate::parse::be32;
use crate::{counter, kind, tcp_flag, tcp_record_counter, FlowHeader, Frame, Parsed, L4};

/// What a marked flow carries.
pub mod flow_class {
    pub const HTTP_TRACKER: u8 = 1;
    pub const PEER_WIRE: u8 = 2;
    /// A UDP flow that carried a BEP 15 request: the tracker's responses are forwarded.
    pub const UDP_TRACKER: u8 = 3;
}

/// Payload segments of a marked flow forwarded in full before the budget applies.
pub const FLOW_SEGMENTS: u32 = 64;
/// Past the budget, peer-wire segments up to this many payload bytes are still forwarded.
pub const SMALL_SEGMENT: u16 = 512;
/// Bytes of a `GET ` payload searched for `info_hash=`.
pub const ANNOUNCE_SCAN: usize = 512;
/// Default capacity of the flow table (the kernel's LRU map and its offline mirror).
pub const DEFAULT_MAX_FLOWS: u32 = 65536;

pub(crate) const HANDSHAKE: &[u8; 20] = b"\x13BitTorrent protocol";
const INFO_HASH: &[u8; 10] = b"info_hash=";

/// [`FlowState::fins`] bits.
pub const FIN_A: u8 = 1;
pub const FIN_B: u8 = 2;

/// Both directions of a TCP flow: the endpoint that sorts first is `a`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub a_addr: [u8; 16],
    pub b_addr: [u8; 16],
    pub a_port: u16,
    pub b_port: u16,
    pub ip_version: u8,
    /// IP protocol: 6 (TCP) or 17 (UDP: a uTP connection or a BEP 15 tracker exchange, see
    /// [`crate::udp_action`]).
    pub proto: u8,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// One of [`flow_class`].
    pub class: u8,
    /// Directions that sent a FIN: [`FIN_A`] and [`FIN_B`] (the key's `a` and `b` sides).
    pub fins: u8,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad: [u8; 2],
    /// Full-size payload segments still to forward.
    pub segments_left: u32,
}

/// The flow table: an LRU hash map in the kernel, a map with the same capacity offline.
pub trait FlowTable {
    fn get(&mut self, key: &FlowKey) -> Option<FlowState>;
    fn set(&mut self, key: &FlowKey, state: &FlowState);
    fn remove(&mut self, key: &FlowKey);
}

/// The canonical key of the TCP flow a record header belongs to.
#[inline(always)]
pub fn flow_key(hdr: &FlowHeader) -> FlowKey {
    flow_key_of(hdr, 6)
}

/// The canonical key of the flow (IP protocol `proto`) a record header belongs to.
#[inline(always)]
pub fn flow_key_of(hdr: &FlowHeader, proto: u8) -> FlowKey {
    let src_first = (hdr.src_addr, hdr.src_port) <= (hdr.dst_addr, hdr.dst_port);
    let ((a_addr, a_port), (b_addr, b_port)) = if src_first {
        ((hdr.src_addr, hdr.src_port), (hdr.dst_addr, hdr.dst_port))
    } else {
        ((hdr.dst_addr, hdr.dst_port), (hdr.src_addr, hdr.src_port))
    };
    FlowKey {
        a_addr,
        b_addr,
        a_port,
        b_port,
        ip_version: hdr.ip_version,
        proto,
        pad: [0; 2],
    }
}

/// What to do with a TCP segment [`parse`](fn@crate::parse) accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpAction {
    /// A header-only [`TcpRecord`](crate::TcpRecord), counted under the slot.
    Control(u32),
    /// A [`TcpDataRecord`](crate::TcpDataRecord) of class `hdr.kind` with `hdr.cap_len` payload
    /// bytes, counted under the slot.
    Data(u32),
    /// An unmarked flow whose payload opens like `class`: copy the head into a data record,
    /// then [`confirm_signature`]; if it holds, [`mark_flow`] and emit it as
    /// `Data(REC_TCP_DATA)`, otherwise drop it under `TCP_OTHER`.
    Probe(u8),
    /// Not forwarded, counted under the slot.
    Skip(u32),
}

/// The per-flow payload policy, shared by the XDP program and the offline path. Updates the
/// flow's budget, unmarks ended flows, and sets `hdr.kind`/`hdr.cap_len` for the record to
/// emit.
#[inline(always)]
pub fn tcp_action<T: FlowTable + ?Sized, F: Frame + ?Sized>(
    table: &mut T,
    frame: &F,
    p: &mut Parsed,
    count: &mut impl FnMut(u32),
) -> TcpAction {
    let L4::Tcp { payload_off, .. } = p.l4 else {
        return TcpAction::Skip(counter::PARSE_ERRORS);
    };
    let flags = p.hdr.tcp_flags;
    let control = tcp_record_counter(flags);
    let header_only = |p: &mut Parsed, or: u32| {
        p.hdr.kind = kind::TCP;
        p.hdr.cap_len = 0;
        match control {
            Some(slot) => TcpAction::Control(slot),
            None => TcpAction::Skip(or),
        }
    };
    let ends = flags & (tcp_flag::FIN | tcp_flag::RST) != 0;
    // SYNs never carry a forwarded payload: they would let a flood reach the table. Only
    // payloads and FIN/RST (which end marks) look the flow up.
    if flags & tcp_flag::SYN != 0 || (p.hdr.payload_len == 0 && !ends) {
        return header_only(p, counter::TCP_OTHER);
    }
    let key = flow_key(&p.hdr);
    let Some(mut state) = table.get(&key) else {
        if control.is_some() {
            return header_only(p, counter::TCP_OTHER);
        }
        let Some(class) = probe_class(frame, payload_off) else {
            return header_only(p, counter::TCP_OTHER);
        };
        p.hdr.kind = kind::TCP_DATA;
        return TcpAction::Probe(class);
    };
    let has_payload = p.hdr.payload_len > 0;
    let fins = state.fins;
    let forward = spend_budget(&mut state, &p.hdr, &key);
    if state.fins == FIN_A | FIN_B
        || (has_payload && !forward && state.class != flow_class::PEER_WIRE)
    {
        table.remove(&key);
        count(counter::FLOWS_ENDED);
    } else if forward || state.fins != fins {
        table.set(&key, &state);
    }
    if !forward {
        return header_only(p, counter::TCP_OVER_BUDGET);
    }
    p.hdr.kind = kind::TCP_DATA;
    TcpAction::Data(match control {
        Some(slot) => slot,
        None => counter::REC_TCP_DATA,
    })
}

/// The class an unmarked flow's payload opens like, from its first bytes in the frame, or
/// `None`. Only a hint: [`confirm_signature`] checks the copied head before the flow is marked.
#[inline(always)]
fn probe_class<F: Frame + ?Sized>(frame: &F, payload_off: usize) -> Option<u8> {
    match frame.bytes::<4>(payload_off) {
        Some(&[0x13, b'B', b'i', b't']) => Some(flow_class::PEER_WIRE),
        Some(b"GET ") => Some(flow_class::HTTP_TRACKER),
        Some(&[0, 0, _, _]) => match frame.bytes::<EXTENDED_SHAPE>(payload_off) {
            Some(b) if extended_message_shape(b) => Some(flow_class::PEER_WIRE),
            _ => None,
        },
        _ => None,
    }
}

/// Charges a segment of a marked flow to its budget and records its FIN or RST in
/// `state.fins`; returns whether the segment's payload is forwarded.
#[inline(always)]
pub(crate) fn spend_budget(state: &mut FlowState, hdr: &FlowHeader, key: &FlowKey) -> bool {
    let forward = if hdr.payload_len == 0 {
        false
    } else if state.segments_left > 0 {
        state.segments_left -= 1;
        true
    } else {
        state.class == flow_class::PEER_WIRE && hdr.payload_len <= SMALL_SEGMENT
    };
    // A FIN ends its sender's direction only (RFC 9293 §3.6: a half-closed connection still
    // carries data the other way: a peer's PEX after the client closed, an HTTP/1.0 body after
    // the request's FIN). RST ends both.
    if hdr.tcp_flags & tcp_flag::RST != 0 {
        state.fins = FIN_A | FIN_B;
    } else if hdr.tcp_flags & tcp_flag::FIN != 0 {
        let src_is_a = (hdr.src_addr, hdr.src_port) == (key.a_addr, key.a_port);
        state.fins |= if src_is_a { FIN_A } else { FIN_B };
    }
    forward
}

/// Whether the copied payload head (`len` valid bytes of `head`) really opens `class`.
///
/// Written with checked byte reads only: a slice comparison could become a `bcmp` call or a
/// panic path, neither of which BPF has.
#[inline(always)]
pub fn confirm_signature<const N: usize>(class: u8, head: &[u8; N], len: usize) -> bool {
    if class == flow_class::PEER_WIRE {
        if len >= HANDSHAKE.len() && matches_at(head, 0, HANDSHAKE) {
            return true;
        }
        let mut shape = [0u8; EXTENDED_SHAPE];
        let mut k = 0;
        while k < EXTENDED_SHAPE {
            match head.get(k) {
                Some(b) if k < len => shape[k] = *b,
                _ => return false,
            }
            k += 1;
        }
        return extended_message_shape(&shape);
    }
    if class != flow_class::HTTP_TRACKER || len < 4 || !matches_at(head, 0, b"GET ") {
        return false;
    }
    let scan = if N < ANNOUNCE_SCAN { N } else { ANNOUNCE_SCAN };
    let scan = if len < scan { len } else { scan };
    let mut i = 4;
    // Bounded by a constant, as the verifier requires.
    while i + INFO_HASH.len() <= ANNOUNCE_SCAN {
        if i + INFO_HASH.len() > scan {
            return false;
        }
        if matches_at(head, i, INFO_HASH) {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
pub(crate) fn matches_at<const N: usize, const M: usize>(
    head: &[u8; N],
    at: usize,
    needle: &[u8; M],
) -> bool {
    let mut k = 0;
    while k < M {
        match head.get(at + k) {
            Some(b) if *b == needle[k] => k += 1,
            _ => return false,
        }
    }
    true
}

/// Bytes [`extended_message_shape`] looks at.
pub const EXTENDED_SHAPE: usize = 9;

/// A BEP 10 extended message with a bencoded payload at the start of a segment:
/// `be32 length < 64 KiB | 20 | ext id | d <digit> <digit or :>` — the opening of a PEX
/// (`d5:added…`, `d7:dropped…`) or extended-handshake dict. Nine fixed bytes, so a random
/// binary payload matches about once in 2^50.
#[inline(always)]
pub fn extended_message_shape(b: &[u8; EXTENDED_SHAPE]) -> bool {
    let len = be32(b, 0);
    b[0] == 0
        && b[1] == 0
        && len >= 4
        && b[4] == 20
        && b[6] == b'd'
        && (b'1'..=b'9').contains(&b[7])
        && (b[8] == b':' || b[8].is_ascii_digit())
}

/// Marks the flow of a confirmed probe; the probing segment is the first of its budget.
#[inline(always)]
pub fn mark_flow<T: FlowTable + ?Sized>(
    table: &mut T,
    hdr: &FlowHeader,
    class: u8,
    count: &mut impl FnMut(u32),
) {
    table.set(
        &flow_key(hdr),
        &FlowState {
            class,
            fins: 0,
            pad: [0; 2],
            segments_left: FLOW_SEGMENTS - 1,
        },
    );
    count(counter::FLOWS_MARKED);
}
