//! BEP 10 extended messages: the extended handshake (`m` ids, listen port `p`, `yourip`,
//! `ipv4`/`ipv6`), what each side announced over a connection, and the BEP 55 ut_holepunch
//! message read on the id its receiver announced.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Ctx, PeerWireStats, Reject, FALLBACK_PEX_ID, MAX_DEPTH};
use crate::bt::bdecode::{self, Value};
use crate::bt::unfit;
use crate::bt::wire::Reader;
use crate::predict::{Channel, PeerTransport};

/// The BEP 10 extended handshake, as far as prediction needs it. Fields of the wrong type or
/// size are ignored as libtorrent ignores them, and counted in `bad_fields`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake<'a> {
    /// Whether an `m` dict was present.
    pub has_m: bool,
    /// `m.ut_pex` / `m.ut_holepunch` when present (0 = disabled).
    pub ut_pex: Option<u8>,
    pub ut_holepunch: Option<u8>,
    /// The sender's TCP listen port (1..=65535).
    pub p: Option<u16>,
    pub v: Option<&'a [u8]>,
    /// The receiver's address as the sender sees it: never a target.
    pub yourip: Option<IpAddr>,
    /// The sender's other addresses.
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub bad_fields: u8,
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(v4.into()))
    } else {
        <[u8; 16]>::try_from(b).ok().map(|v6| IpAddr::V6(v6.into()))
    }
}

/// The entries of an extended handshake prediction reads.
#[derive(Clone, Copy, Default)]
struct Entries<'a> {
    m: Option<Value<'a>>,
    p: Option<Value<'a>>,
    v: Option<Value<'a>>,
    yourip: Option<Value<'a>>,
    ipv4: Option<Value<'a>>,
    ipv6: Option<Value<'a>>,
}

/// Reads an extended handshake (the payload after the `20, 0` bytes). One pass with no
/// allocation ([`bdecode`]): the whole payload validated, the keys read kept as slices of it.
pub fn parse_ext_handshake(payload: &[u8]) -> Result<ExtHandshake<'_>, Reject> {
    let mut d = Entries::default();
    // `ut_pex` and `ut_holepunch` of the depth-1 dict being read; they arrive before the
    // top-level entry holding them, which tells whether they were `m`'s.
    let mut inner: [Option<Value<'_>>; 2] = [None; 2];
    let mut m = [None; 2];
    let root = bdecode::scan(payload, MAX_DEPTH, &mut |depth, key, value| match depth {
        0 => {
            let slot = match key {
                b"m" => {
                    m = inner;
                    Some(&mut d.m)
                }
                b"p" => Some(&mut d.p),
                b"v" => Some(&mut d.v),
                b"yourip" => Some(&mut d.yourip),
                b"ipv4" => Some(&mut d.ipv4),
                b"ipv6" => Some(&mut d.ipv6),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = Some(value);
            }
            inner = [None; 2];
        }
        1 => match key {
            b"ut_pex" => inner[0] = Some(value),
            b"ut_holepunch" => inner[1] = Some(value),
            _ => {}
        },
        _ => {}
    })?;
    if !root.is_dict() {
        return Err(Reject::NotDict);
    }
    let mut hs = ExtHandshake::default();
    let mut bad = 0u8;
    let mut note = |ok: bool| {
        if !ok {
            bad = bad.saturating_add(1);
        }
    };
    if let Some(v) = d.m {
        if v.is_dict() {
            hs.has_m = true;
            let [ut_pex, ut_holepunch] = m.map(|id| {
                let id = id?.int().and_then(|i| u8::try_from(i).ok());
                note(id.is_some());
                id
            });
            hs.ut_pex = ut_pex;
            hs.ut_holepunch = ut_holepunch;
        } else {
            note(false);
        }
    }
    if let Some(p) = d.p {
        hs.p = p
            .int()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        note(hs.p.is_some());
    }
    if let Some(v) = d.v {
        hs.v = v.bytes();
        note(hs.v.is_some());
    }
    if let Some(y) = d.yourip {
        hs.yourip = y.bytes().and_then(ip_of);
        note(hs.yourip.is_some());
    }
    if let Some(a) = d.ipv4 {
        hs.ipv4 = a
            .bytes()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from);
        note(hs.ipv4.is_some());
    }
    if let Some(a) = d.ipv6 {
        hs.ipv6 = a
            .bytes()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from);
        note(hs.ipv6.is_some());
    }
    hs.bad_fields = bad;
    Ok(hs)
}

/// A BEP 55 ut_holepunch message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holepunch {
    /// 0 rendezvous, 1 connect, 2 error.
    pub msg_type: u8,
    pub addr: SocketAddr,
    pub error: u32,
}

/// Reads a ut_holepunch payload: `msg_type, addr_type, addr, be16 port, be32 err_code`.
pub fn parse_holepunch(payload: &[u8]) -> Result<Holepunch, Reject> {
    let mut r = Reader::new(payload);
    let msg_type = r.u8()?;
    let ip = match r.u8()? {
        0 => IpAddr::V4(Ipv4Addr::from(*r.array::<4>()?)),
        1 => IpAddr::V6(Ipv6Addr::from(*r.array::<16>()?)),
        _ => return Err(Reject::BadAddressType),
    };
    let port = r.be16()?;
    let error = r.be32()?;
    if !r.is_empty() {
        return Err(Reject::TrailingData);
    }
    Ok(Holepunch {
        msg_type,
        addr: SocketAddr::new(ip, port),
        error,
    })
}

/// Whether an `ipv4`/`ipv6` from an extended handshake can be dialled from elsewhere:
/// link-local and Teredo (2001:0::/32, RFC 4380) values are sent by real clients but are useless
/// as targets.
pub(super) fn routable(ip: IpAddr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) != 0xfe80 && !(s[0] == 0x2001 && s[1] == 0)
        }
    }
}

/// What the sender of one direction told the other side about itself.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Announced {
    pub(super) reserved: Option<[u8; 8]>,
    /// An extended handshake was read: `ut_pex`/`ut_holepunch` are then authoritative.
    pub(super) ext_seen: bool,
    pub(super) ut_pex: Option<u8>,
    pub(super) ut_holepunch: Option<u8>,
    pub(super) p: Option<u16>,
    pub(super) ipv4: Option<Ipv4Addr>,
    pub(super) ipv6: Option<Ipv6Addr>,
    /// The other side's address as this side reported it.
    pub(super) yourip: Option<IpAddr>,
}

impl Announced {
    /// BEP 10: later handshakes add to (or override) earlier ones.
    pub(super) fn merge(&mut self, hs: &ExtHandshake<'_>) {
        self.ext_seen = true;
        self.ut_pex = hs.ut_pex.or(self.ut_pex);
        self.ut_holepunch = hs.ut_holepunch.or(self.ut_holepunch);
        self.p = hs.p.or(self.p);
        self.ipv4 = hs.ipv4.or(self.ipv4);
        self.ipv6 = hs.ipv6.or(self.ipv6);
        self.yourip = hs.yourip.or(self.yourip);
    }

    /// Which extended ids sent *to* this side are worth buffering.
    pub(super) fn wants(&self, ext: u8) -> bool {
        if ext == 0 {
            return true;
        }
        if !self.ext_seen {
            return ext == FALLBACK_PEX_ID;
        }
        Some(ext) == self.ut_pex || Some(ext) == self.ut_holepunch
    }

    pub(super) fn azureus(&self) -> bool {
        self.reserved.is_some_and(|r| r[0] & 0x80 != 0)
    }
}

impl Ctx<'_> {
    /// An extended handshake from the sender: its announcements kept, its listen port
    /// predicted (BEP 10 `p`, `ipv4`, `ipv6`).
    pub(super) fn on_ext_handshake(
        &mut self,
        me: &mut Announced,
        body: &[u8],
        stats: &mut PeerWireStats,
    ) {
        stats.ext_handshakes.seen += 1;
        let hs = match parse_ext_handshake(body) {
            Ok(hs) => hs,
            Err(r) => return stats.ext_handshakes.reject(r.as_str()),
        };
        stats.ext_handshakes.parsed += 1;
        me.merge(&hs);
        let Some(p) = hs.p else { return };
        let learner = self.receiver.ip();
        // A responder's `p` is the port the receiver already dialled.
        if self.sender_is_client {
            let peer = SocketAddr::new(self.sender.ip(), p);
            if unfit(peer, learner, me.yourip).is_none() {
                self.predict(peer, PeerTransport::Tcp, Channel::PeerWire, stats);
            }
        }
        let alts = [me.ipv4.map(IpAddr::V4), me.ipv6.map(IpAddr::V6)];
        for ip in alts.into_iter().flatten() {
            if ip == self.sender.ip() || !routable(ip) {
                continue;
            }
            let peer = SocketAddr::new(ip, p);
            if unfit(peer, learner, me.yourip).is_none() {
                self.predict(peer, PeerTransport::Tcp, Channel::PeerWire, stats);
            }
        }
    }
}
