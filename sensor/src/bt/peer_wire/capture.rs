//! Test-only: the TCP payload of every flow in a capture, in sequence order per direction,
//! as the stream reassembler would hand it to the channel.
//!
//! Rules (documented because tests depend on them):
//! * client = the sender of a SYN (the receiver of a SYN+ACK); for a flow first seen
//!   mid-session, the sender of its first payload segment;
//! * retransmitted bytes are delivered once (by sequence number); segments that arrive
//!   ahead of a hole wait until the hole is filled, or until the other side acknowledges
//!   bytes past it (the capture, not the network, lost them), or the capture ends: they
//!   are then delivered with `gap`;
//! * a direction whose SYN was not captured starts at its first payload segment, without
//!   `gap` (as `stream::TcpStreams` does: it cannot know what came before).
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::bt::stream::{ConnKey, Dir, StreamChunk};
use crate::capture::pcap::read_frames;
use crate::event::Timestamp;
use crate::test_support::corpus;

#[derive(Clone, Debug)]
pub struct Chunk {
    pub ts: Timestamp,
    pub conn: ConnKey,
    pub dir: Dir,
    pub gap: bool,
    pub data: Vec<u8>,
}

impl Chunk {
    pub fn chunk(&self) -> StreamChunk<'_> {
        StreamChunk {
            ts: self.ts,
            conn: self.conn,
            dir: self.dir,
            gap: self.gap,
            data: &self.data,
        }
    }

    pub fn sender(&self) -> SocketAddr {
        self.conn.endpoints(self.dir).0
    }
}

#[derive(Default)]
struct Half {
    /// Sequence number of stream offset 0.
    base: Option<u32>,
    next: u64,
    /// Highest offset the other side acknowledged.
    acked: u64,
    held: BTreeMap<u64, (Timestamp, Vec<u8>)>,
}

impl Half {
    fn offset(&self, seq: u32) -> Option<u64> {
        let off = seq.wrapping_sub(self.base?);
        (off < 1 << 31).then_some(u64::from(off))
    }
}

#[derive(Default)]
struct Flow {
    client: Option<SocketAddr>,
    /// Indexed by "the sender is the lower endpoint".
    halves: [Half; 2],
}

fn side(lo: SocketAddr, sender: SocketAddr) -> usize {
    usize::from(sender != lo)
}

struct Reassembler {
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
    out: Vec<Chunk>,
}

impl Reassembler {
    fn emit(
        out: &mut Vec<Chunk>,
        flow_key: (SocketAddr, SocketAddr),
        client: Option<SocketAddr>,
        sender_side: usize,
        h: &mut Half,
        at_end: bool,
    ) {
        let (lo, hi) = flow_key;
        let sender = if sender_side == 0 { lo } else { hi };
        let receiver = if sender_side == 0 { hi } else { lo };
        let client = client.unwrap_or(sender);
        let conn = if client == sender {
            ConnKey::tcp(sender, receiver)
        } else {
            ConnKey::tcp(receiver, sender)
        };
        let dir = if client == sender {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        while let Some((&off, _)) = h.held.first_key_value() {
            let hole = off > h.next;
            if hole && !at_end && h.acked <= h.next {
                break;
            }
            let Some((off, (ts, data))) = h.held.pop_first() else {
                break;
            };
            let end = off + data.len() as u64;
            if end <= h.next {
                continue;
            }
            let from = usize::try_from(h.next.saturating_sub(off)).unwrap();
            let gap = hole;
            h.next = end;
            out.push(Chunk {
                ts,
                conn,
                dir,
                gap,
                data: data[from..].to_vec(),
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn segment(
        &mut self,
        ts: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: Option<u32>,
        syn: bool,
        payload: &[u8],
    ) {
        let key = (src.min(dst), src.max(dst));
        let flow = self.flows.entry(key).or_default();
        let s = side(key.0, src);
        if syn {
            if ack.is_none() {
                flow.client = Some(src);
            } else if flow.client.is_none() {
                flow.client = Some(dst);
            }
            let h = &mut flow.halves[s];
            if h.base.is_none() {
                h.base = Some(seq.wrapping_add(1));
            }
        }
        if let Some(a) = ack {
            let other = &mut flow.halves[1 - s];
            if let Some(off) = other.offset(a) {
                other.acked = other.acked.max(off);
            }
        }
        if !payload.is_empty() {
            if flow.client.is_none() {
                flow.client = Some(src);
            }
            let h = &mut flow.halves[s];
            if h.base.is_none() {
                h.base = Some(seq);
            }
            if let Some(off) = h.offset(seq) {
                let slot = h.held.entry(off).or_insert((ts, Vec::new()));
                if slot.1.len() < payload.len() {
                    slot.1 = payload.to_vec();
                }
            }
        }
        for i in 0..2 {
            Self::emit(
                &mut self.out,
                key,
                flow.client,
                i,
                &mut flow.halves[i],
                false,
            );
        }
    }
}

/// Every TCP flow's payload chunks of a capture of the corpus, in capture order.
pub fn tcp_chunks(rel: &str) -> Vec<Chunk> {
    let mut r = Reassembler {
        flows: HashMap::new(),
        out: Vec::new(),
    };
    read_frames(&corpus(rel), |ts, frame| {
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            return;
        };
        let (src, dst): (IpAddr, IpAddr) = match &p.net {
            Some(NetSlice::Ipv4(v4)) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(v6)) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
            ),
            _ => return,
        };
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            return;
        };
        r.segment(
            ts,
            SocketAddr::new(src, t.source_port()),
            SocketAddr::new(dst, t.destination_port()),
            t.sequence_number(),
            t.ack().then(|| t.acknowledgment_number()),
            t.syn(),
            t.payload(),
        );
    })
    .unwrap();
    let Reassembler { mut flows, mut out } = r;
    let mut keys: Vec<_> = flows.keys().copied().collect();
    keys.sort();
    for key in keys {
        if let Some(flow) = flows.get_mut(&key) {
            for i in 0..2 {
                Reassembler::emit(&mut out, key, flow.client, i, &mut flow.halves[i], true);
            }
        }
    }
    out
}
