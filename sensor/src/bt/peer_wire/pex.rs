//! BEP 11 ut_pex: the peers a connected peer has added and dropped since its last message,
//! as compact IPv4 (BEP 23) and IPv6 (BEP 7) lists with a flag byte per added entry.

use std::net::{IpAddr, SocketAddr};

use super::extended::Announced;
use super::{Ctx, PeerWireStats, Reject, MAX_DEPTH};
use crate::bt::bdecode::{self, Value};
use crate::bt::wire::{compact_v4, compact_v6};
use crate::bt::{unfit, EntryCounts};
use crate::predict::{Channel, PeerTransport, RetractedPeer};

/// A ut_pex message: the raw compact lists, borrowed. Read them with [`Pex::for_each_added`] and
/// [`Pex::for_each_dropped`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pex<'a> {
    pub added: &'a [u8],
    pub added_f: Option<&'a [u8]>,
    pub added6: &'a [u8],
    pub added6_f: Option<&'a [u8]>,
    pub dropped: &'a [u8],
    pub dropped6: &'a [u8],
}

fn opt_bytes(v: Option<Value<'_>>) -> Result<Option<&[u8]>, Reject> {
    v.map(|v| v.bytes().ok_or(Reject::WrongType)).transpose()
}

/// Reads a ut_pex payload (after the `20, id` bytes). `added` without `added.f` is accepted
/// (Transmission does; libtorrent would ignore the list). One pass with no allocation
/// ([`bdecode`]): the whole payload validated, the six keys kept as slices of it.
pub fn parse_pex(payload: &[u8]) -> Result<Pex<'_>, Reject> {
    // added, added.f, added6, added6.f, dropped, dropped6.
    let mut keys: [Option<Value<'_>>; 6] = [None; 6];
    let root = bdecode::scan(payload, MAX_DEPTH, &mut |depth, key, value| {
        let i = match key {
            _ if depth > 0 => return,
            b"added" => 0,
            b"added.f" => 1,
            b"added6" => 2,
            b"added6.f" => 3,
            b"dropped" => 4,
            b"dropped6" => 5,
            _ => return,
        };
        keys[i] = Some(value);
    })?;
    if !root.is_dict() {
        return Err(Reject::NotDict);
    }
    let [added, added_f, added6, added6_f, dropped, dropped6] = keys;
    let added = opt_bytes(added)?;
    let added6 = opt_bytes(added6)?;
    let dropped = opt_bytes(dropped)?;
    let dropped6 = opt_bytes(dropped6)?;
    if added.is_none() && added6.is_none() && dropped.is_none() && dropped6.is_none() {
        return Err(Reject::NoPexKeys);
    }
    Ok(Pex {
        added: added.unwrap_or_default(),
        added_f: opt_bytes(added_f)?,
        added6: added6.unwrap_or_default(),
        added6_f: opt_bytes(added6_f)?,
        dropped: dropped.unwrap_or_default(),
        dropped6: dropped6.unwrap_or_default(),
    })
}

/// Calls `f` with each entry of a compact list (6- or 18-byte `stride`) and its flag byte when
/// `flags` has exactly one per entry; reads at most `max`, counts the rest and a partial tail.
fn each_entry(
    list: &[u8],
    flags: Option<&[u8]>,
    stride: usize,
    max: usize,
    n: &mut EntryCounts,
    f: &mut dyn FnMut(SocketAddr, Option<u8>),
) {
    if !list.len().is_multiple_of(stride) {
        n.malformed += 1;
    }
    let total = list.len() / stride;
    let flags = flags.filter(|fl| fl.len() == total);
    n.capped += total.saturating_sub(max) as u64;
    for (i, e) in list.chunks_exact(stride).take(max).enumerate() {
        let addr = if let Ok(c4) = <&[u8; 6]>::try_from(e) {
            compact_v4(c4)
        } else if let Ok(c6) = <&[u8; 18]>::try_from(e) {
            compact_v6(c6)
        } else {
            continue;
        };
        n.decoded += 1;
        f(addr, flags.and_then(|fl| fl.get(i).copied()));
    }
}

impl Pex<'_> {
    /// Each `added` then `added6` endpoint with its flags (BEP 11), at most `max` per list.
    pub fn for_each_added(
        &self,
        max: usize,
        mut f: impl FnMut(SocketAddr, Option<u8>),
    ) -> EntryCounts {
        let mut n = EntryCounts::default();
        each_entry(self.added, self.added_f, 6, max, &mut n, &mut f);
        each_entry(self.added6, self.added6_f, 18, max, &mut n, &mut f);
        n
    }

    /// Each `dropped` then `dropped6` endpoint, at most `max` per list.
    pub fn for_each_dropped(&self, max: usize, mut f: impl FnMut(SocketAddr)) -> EntryCounts {
        let mut n = EntryCounts::default();
        let mut g = |a, _| f(a);
        each_entry(self.dropped, None, 6, max, &mut n, &mut g);
        each_entry(self.dropped6, None, 18, max, &mut n, &mut g);
        n
    }
}

impl Ctx<'_> {
    /// A ut_pex message: `added` entries predicted, `dropped` ones retracted.
    pub(super) fn on_pex(
        &mut self,
        pex: &Pex<'_>,
        peers: &[Announced; 2],
        i: usize,
        stats: &mut PeerWireStats,
    ) {
        let learner = self.receiver.ip();
        // The learner as the sender saw it, and as it described itself.
        let own = peers[i].yourip;
        let own_alt = [
            peers[1 - i].ipv4.map(IpAddr::V4),
            peers[1 - i].ipv6.map(IpAddr::V6),
        ];
        let sender = self.sender.ip();
        let mut counts = EntryCounts::default();
        let mut keep = Vec::new();
        let decoded = pex.for_each_added(self.max_entries, |peer, _flags| {
            if let Some(why) = unfit(peer, learner, own) {
                counts.count_unfit(why);
            } else if own_alt.contains(&Some(peer.ip())) {
                counts.own_address += 1;
            } else if peer.ip() == sender {
                stats.sender_listed += 1;
            } else {
                keep.push(peer);
            }
        });
        counts.add(&decoded);
        stats.entries.add(&counts);
        for peer in keep {
            for transport in [PeerTransport::Tcp, PeerTransport::Udp] {
                self.predict(peer, transport, Channel::Pex, stats);
            }
        }
        let mut gone = EntryCounts::default();
        let mut drop = Vec::new();
        let decoded =
            pex.for_each_dropped(self.max_entries, |peer| match unfit(peer, learner, own) {
                Some(why) => gone.count_unfit(why),
                None => drop.push(peer),
            });
        gone.add(&decoded);
        stats.dropped.add(&gone);
        for peer in drop {
            stats.retracted += 1;
            self.retracted.push(RetractedPeer {
                ts: self.ts,
                host: learner,
                peer,
                channel: Channel::Pex,
            });
        }
    }
}
