//! Azureus / Vuze / BiglyBT DHT (spec §5): which peers and DHT contacts a host learns from the
//! replies to its FIND_VALUE and FIND_NODE requests.
//!
//! Framing (§5.1): a request opens with an 8-byte connection id whose most significant bit is
//! set, then its action (1024..1039) and transaction id; a reply opens with its action (MSB
//! clear), then the request's transaction id and connection id. Everything after the protocol
//! version byte depends on that version (§5.3–5.6).
//!
//! Versions. Current BiglyBT drops messages below version 51 (`getMinimumProtocolVersion`), so
//! a node would not act on them and by default neither do we: they are counted `old_version`
//! ([`VuzeDhtConfig::min_version`]). The parsers themselves decode versions 15 to 127, field by
//! field as the spec's tables say, so the legacy v50 vectors VZ-D1..D3 decode and a lower
//! `min_version` acts on them: from 15 (GENERIC_NETPOS) on, every version-dependent field is in
//! the tables (below 15 network positions have another layout, and below 9 the originator
//! version trails the body); the version is a Java signed byte, so 128 and above are negative
//! and below any minimum. Versions above 55 are read with the 55 layout.
//!
//! Predictions (§0.3, §5.7): the learner is the requester, i.e. the destination of the reply.
//! A FIND_VALUE value whose bytes are a BitTorrent registration `[ip:]port[;flags][;udp_port]`
//! is a peer it will dial over TCP at (ip or the value's originator address, port) and over UDP
//! (Vuze UDP / uTP) at the same address and the UDP port (explicit, else the originator's
//! port); other values (the DHT also stores non-torrent data) are counted, never used.
//! FIND_NODE and FIND_VALUE contacts are DHT nodes it will query over UDP. All of these use
//! [`Channel::AzureusDht`]; contacts are UDP only, values TCP and UDP (a dedicated variant like
//! the Mainline DHT's `DhtNodes` would separate them in per-channel counts).
//!
//! Matching: a request is remembered under (requester, responder, transaction id) with its
//! connection id, action and originator address; a reply matches when it comes back on that
//! pair with that transaction id, echoes the connection id and answers the action (or is an
//! error). A reply with `has_continuation` leaves the request open for the next one. As in
//! [`super::dht`], an unmatched reply still predicts by default
//! ([`VuzeDhtConfig::predict_unmatched`]): its destination is the requester whatever we saw, a
//! capture or a restarted sensor starts mid-exchange, and an adversary controls both ends of a
//! fake exchange anyway; such replies are counted apart. The request's originator address is the
//! requester's own (external) address: like BEP 42 `ip`, it removes the learner from the lists
//! (a lookup of a torrent the learner announces returns its own registration).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{unfit, Bounded, ChannelCounts, EntryCounts, TableStats};
use crate::event::{PacketEvent, Timestamp, UdpDatagram};
use crate::predict::{Channel, PeerTransport, PredictedPeer};

/// Oldest version current BiglyBT accepts (MIN_AZ = MIN_AZ_CVS = MIN_BIGLYBT), the default of
/// [`VuzeDhtConfig::min_version`].
pub const MIN_ACCEPTED_VERSION: u8 = 51;
/// Version range the parsers decode (see the module docs).
pub const OLDEST_PARSED_VERSION: u8 = 15;
pub const NEWEST_PARSED_VERSION: u8 = 127;
/// Endpoints read from one reply (values and contacts together).
pub const MAX_ENTRIES: usize = 256;
/// Longest FIND_VALUE key (`DHTUDPPacketRequestFindValue`).
pub const MAX_KEY_LEN: usize = 64;
/// Longest value (`DHT.MAX_VALUE_SIZE`).
pub const MAX_VALUE_LEN: usize = 512;
/// Shortest request and reply headers (spec §12 F5: a v9..50 IPv4 request, a reply to v53).
pub const MIN_REQUEST_LEN: usize = 42;
pub const MIN_REPLY_LEN: usize = 26;

// Protocol versions that change the layout within the parsed range (spec §5.3); fields gated
// by older versions (vendor 14, network 9, spoof id 7, ...) are always present from 15 on.
const V_VIVALDI_FINDVALUE: u8 = 16;
const V_LONGER_LIFE: u8 = 23;
const V_REPLICATION_CONTROL: u8 = 24;
const V_PACKET_FLAGS: u8 = 51;
const V_PACKET_FLAGS2: u8 = 53;
const V_PROC_TIME: u8 = 54;

/// The only contact type (`DHTUDPUtils.CT_UDP`).
const CT_UDP: u8 = 1;
/// Smallest encodings, to reject counts the remaining bytes cannot hold before reading them:
/// a contact is type, version and an IPv4 address; a value is version, created, an empty
/// value, a contact and flags.
const CONTACT_MIN: usize = 2 + 7;
const VALUE_MIN: usize = 4 + 8 + 2 + CONTACT_MIN + 1;

/// The packet types of spec §5.2, by code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Action {
    RequestPing = 1024,
    ReplyPing = 1025,
    RequestStore = 1026,
    ReplyStore = 1027,
    RequestFindNode = 1028,
    ReplyFindNode = 1029,
    RequestFindValue = 1030,
    ReplyFindValue = 1031,
    ReplyError = 1032,
    ReplyStats = 1033,
    RequestStats = 1034,
    Data = 1035,
    RequestKeyBlock = 1036,
    ReplyKeyBlock = 1037,
    RequestQueryStore = 1038,
    ReplyQueryStore = 1039,
}

const ACTIONS: [Action; 16] = [
    Action::RequestPing,
    Action::ReplyPing,
    Action::RequestStore,
    Action::ReplyStore,
    Action::RequestFindNode,
    Action::ReplyFindNode,
    Action::RequestFindValue,
    Action::ReplyFindValue,
    Action::ReplyError,
    Action::ReplyStats,
    Action::RequestStats,
    Action::Data,
    Action::RequestKeyBlock,
    Action::ReplyKeyBlock,
    Action::RequestQueryStore,
    Action::ReplyQueryStore,
];

impl Action {
    pub fn from_code(code: u32) -> Option<Self> {
        ACTIONS
            .get(usize::try_from(code.wrapping_sub(1024)).ok()?)
            .copied()
    }

    pub fn code(self) -> u32 {
        self as u32
    }

    /// Sent with an MSB-set connection id first (DATA is a request without a reply).
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Action::RequestPing
                | Action::RequestStore
                | Action::RequestFindNode
                | Action::RequestFindValue
                | Action::RequestStats
                | Action::Data
                | Action::RequestKeyBlock
                | Action::RequestQueryStore
        )
    }

    /// The reply that answers this request besides [`Action::ReplyError`].
    pub fn reply(self) -> Option<Action> {
        Some(match self {
            Action::RequestPing => Action::ReplyPing,
            Action::RequestStore => Action::ReplyStore,
            Action::RequestFindNode => Action::ReplyFindNode,
            Action::RequestFindValue => Action::ReplyFindValue,
            Action::RequestStats => Action::ReplyStats,
            Action::RequestKeyBlock => Action::ReplyKeyBlock,
            Action::RequestQueryStore => Action::ReplyQueryStore,
            _ => return None,
        })
    }

    /// Whether this reply can answer `request`.
    pub fn answers(self, request: Action) -> bool {
        self == Action::ReplyError || request.reply() == Some(self)
    }
}

/// Why a datagram that passed [`looks_like_vuze`] was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The capture holds only the head of the datagram.
    Incomplete,
    /// The datagram ends before a field does.
    Truncated,
    /// A request's connection id without its MSB, or a reply echoing one.
    BadConnectionId,
    /// Not 1024..1039, or a reply's code in a request (or the converse).
    BadAction,
    /// Outside [`OLDEST_PARSED_VERSION`]..=[`NEWEST_PARSED_VERSION`].
    UnsupportedVersion,
    /// Parsed, but below [`VuzeDhtConfig::min_version`]: current clients drop it.
    OldVersion,
    /// An address length other than 4 or 16.
    BadAddress,
    /// A contact whose type is not UDP (BiglyBT drops the whole packet).
    BadContactType,
    /// A key or value longer than its maximum.
    TooLong,
    /// A list count the rest of the datagram cannot hold.
    BadCount,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Incomplete => "incomplete",
            Reject::Truncated => "truncated",
            Reject::BadConnectionId => "bad_connection_id",
            Reject::BadAction => "bad_action",
            Reject::UnsupportedVersion => "unsupported_version",
            Reject::OldVersion => "old_version",
            Reject::BadAddress => "bad_address",
            Reject::BadContactType => "bad_contact_type",
            Reject::TooLong => "too_long",
            Reject::BadCount => "bad_count",
        }
    }
}

/// A DHT node: protocol version and UDP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    pub version: u8,
    pub addr: SocketAddr,
}

/// Big-endian reads that fail with [`Reject::Truncated`] instead of panicking.
#[derive(Clone, Copy, Debug)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
        if self.rest.len() < n {
            return Err(Reject::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Reject> {
        Ok(self.array::<1>()?[0])
    }

    fn be16(&mut self) -> Result<u16, Reject> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn be32(&mut self) -> Result<u32, Reject> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn be64(&mut self) -> Result<u64, Reject> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Java `readBoolean`: any non-zero byte is true.
    fn boolean(&mut self) -> Result<bool, Reject> {
        Ok(self.u8()? != 0)
    }

    fn opt_u8(&mut self, present: bool) -> Result<Option<u8>, Reject> {
        if present {
            self.u8().map(Some)
        } else {
            Ok(None)
        }
    }

    /// `u8 len | addr | be16 port`; any length but 4 or 16 fails the packet in BiglyBT.
    fn address(&mut self) -> Result<SocketAddr, Reject> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            16 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(Reject::BadAddress),
        };
        Ok(SocketAddr::new(ip, self.be16()?))
    }

    fn contact(&mut self) -> Result<Contact, Reject> {
        if self.u8()? != CT_UDP {
            return Err(Reject::BadContactType);
        }
        let version = self.u8()?;
        let addr = self.address()?;
        Ok(Contact { version, addr })
    }

    fn value(&mut self, v: u8) -> Result<TransportValue<'a>, Reject> {
        let version = self.be32()?;
        let created_ms = self.be64()?;
        let len = usize::from(self.be16()?);
        if len > MAX_VALUE_LEN {
            return Err(Reject::TooLong);
        }
        let bytes = self.take(len)?;
        let originator = self.contact()?;
        let flags = self.u8()?;
        let life_hours = self.opt_u8(v >= V_LONGER_LIFE)?;
        let replication_control = self.opt_u8(v >= V_REPLICATION_CONTROL)?;
        Ok(TransportValue {
            version,
            created_ms,
            bytes,
            originator,
            flags,
            life_hours,
            replication_control,
        })
    }

    /// A counted list: checks the count against the bytes left, reads every entry once (so
    /// the whole packet is validated) and keeps the raw span for lazy iteration.
    fn list<T>(
        &mut self,
        count: usize,
        min_size: usize,
        mut entry: impl FnMut(&mut Self) -> Result<T, Reject>,
    ) -> Result<&'a [u8], Reject> {
        if count.saturating_mul(min_size) > self.rest.len() {
            return Err(Reject::BadCount);
        }
        let start = self.rest;
        for _ in 0..count {
            entry(self)?;
        }
        Ok(&start[..start.len() - self.rest.len()])
    }
}

fn check_version(v: u8) -> Result<(), Reject> {
    if (OLDEST_PARSED_VERSION..=NEWEST_PARSED_VERSION).contains(&v) {
        Ok(())
    } else {
        Err(Reject::UnsupportedVersion)
    }
}

/// A validated contact list (`be16 count` + contacts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contacts<'a> {
    count: u16,
    raw: &'a [u8],
}

impl<'a> Contacts<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, Reject> {
        let count = r.be16()?;
        let raw = r.list(usize::from(count), CONTACT_MIN, Reader::contact)?;
        Ok(Self { count, raw })
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Contact> + 'a {
        let mut r = Reader { rest: self.raw };
        (0..self.count).map_while(move |_| r.contact().ok())
    }
}

/// One stored value as a reply carries it (spec §5.6 "Transport value").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportValue<'a> {
    pub version: u32,
    pub created_ms: u64,
    pub bytes: &'a [u8],
    /// The node that stored it: its address stands in for a missing `ip_override`.
    pub originator: Contact,
    /// DHT flags: 0x01 downloading (leecher), 0x02 seeding, ...
    pub flags: u8,
    pub life_hours: Option<u8>,
    pub replication_control: Option<u8>,
}

/// A validated value list (`be16 count` + values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Values<'a> {
    count: u16,
    version: u8,
    raw: &'a [u8],
}

impl<'a> Values<'a> {
    fn read(r: &mut Reader<'a>, version: u8) -> Result<Self, Reject> {
        let count = r.be16()?;
        let raw = r.list(usize::from(count), VALUE_MIN, |r| r.value(version))?;
        Ok(Self {
            count,
            version,
            raw,
        })
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = TransportValue<'a>> + 'a {
        let mut r = Reader { rest: self.raw };
        let v = self.version;
        (0..self.count).map_while(move |_| r.value(v).ok())
    }
}

/// One network coordinate (`u8 type, u8 size, data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetPosition<'a> {
    pub kind: u8,
    pub data: &'a [u8],
}

impl NetPosition<'_> {
    /// Type 1, Vivaldi v1: x, y, height, error.
    pub fn vivaldi(&self) -> Option<[f32; 4]> {
        if self.kind != 1 || self.data.len() != 16 {
            return None;
        }
        let mut c = [0f32; 4];
        for (f, b) in c.iter_mut().zip(self.data.chunks_exact(4)) {
            *f = f32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        Some(c)
    }
}

/// Network positions (`u8 count` + entries), each skipped by its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetPositions<'a> {
    count: u8,
    raw: &'a [u8],
}

impl<'a> NetPositions<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, Reject> {
        let count = r.u8()?;
        let raw = r.list(usize::from(count), 2, Reader::position)?;
        Ok(Self { count, raw })
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = NetPosition<'a>> + 'a {
        let mut r = Reader { rest: self.raw };
        (0..self.count).map_while(move |_| r.position().ok())
    }
}

impl<'a> Reader<'a> {
    fn position(&mut self) -> Result<NetPosition<'a>, Reject> {
        let kind = self.u8()?;
        let size = usize::from(self.u8()?);
        Ok(NetPosition {
            kind,
            data: self.take(size)?,
        })
    }
}

/// Request header (spec §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub connection_id: u64,
    pub action: Action,
    pub txid: u32,
    pub version: u8,
    pub vendor: u8,
    pub network: u32,
    /// The requester's own (maximum) protocol version.
    pub originator_version: u8,
    /// The requester's address as it believes others see it.
    pub originator: SocketAddr,
    pub instance: u32,
    pub time_ms: u64,
    pub flags: Option<u8>,
    pub flags2: Option<u8>,
}

/// FIND_VALUE request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FindValueRequest<'a> {
    /// For a torrent, SHA-1 of the info-hash (truncated to the node id length).
    pub key: &'a [u8],
    pub flags: u8,
    pub max_values: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody<'a> {
    FindValue(FindValueRequest<'a>),
    /// Not decoded: predicts nothing.
    Other(&'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub header: RequestHeader,
    pub body: RequestBody<'a>,
    /// Bytes after the last decoded field (BiglyBT ignores them).
    pub trailing: usize,
}

/// Reply header (spec §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    pub action: Action,
    pub txid: u32,
    /// Echoes the request's.
    pub connection_id: u64,
    pub version: u8,
    pub vendor: u8,
    pub network: u32,
    /// The replier's instance id.
    pub instance: u32,
    pub flags: Option<u8>,
    pub flags2: Option<u8>,
    pub processing_time_ms: Option<u16>,
}

/// FIND_NODE reply body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FindNodeReply<'a> {
    pub spoof_id: u32,
    pub node_status: u32,
    pub estimated_size: u32,
    pub positions: NetPositions<'a>,
    pub contacts: Contacts<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindValueResult<'a> {
    Values {
        /// 1 none, 2 frequency, 3 size.
        diversification: u8,
        values: Values<'a>,
    },
    /// Not found: closer nodes instead.
    Contacts {
        contacts: Contacts<'a>,
        /// From version 16.
        positions: Option<NetPositions<'a>>,
    },
}

/// FIND_VALUE reply body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FindValueReply<'a> {
    /// More replies with the same transaction id follow.
    pub has_continuation: bool,
    pub result: FindValueResult<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyBody<'a> {
    FindNode(FindNodeReply<'a>),
    FindValue(FindValueReply<'a>),
    /// Not decoded (ping, store, error, ...): predicts nothing.
    Other(&'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    pub header: ReplyHeader,
    pub body: ReplyBody<'a>,
    /// Bytes after the last decoded field (BiglyBT ignores them).
    pub trailing: usize,
}

impl<'a> Reply<'a> {
    /// The contacts of a FIND_NODE reply or of a FIND_VALUE reply without values.
    pub fn contacts(&self) -> Option<Contacts<'a>> {
        match self.body {
            ReplyBody::FindNode(f) => Some(f.contacts),
            ReplyBody::FindValue(FindValueReply {
                result: FindValueResult::Contacts { contacts, .. },
                ..
            }) => Some(contacts),
            _ => None,
        }
    }

    pub fn values(&self) -> Option<Values<'a>> {
        match self.body {
            ReplyBody::FindValue(FindValueReply {
                result: FindValueResult::Values { values, .. },
                ..
            }) => Some(values),
            _ => None,
        }
    }

    pub fn has_continuation(&self) -> bool {
        matches!(
            self.body,
            ReplyBody::FindValue(FindValueReply {
                has_continuation: true,
                ..
            })
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Request(Request<'a>),
    Reply(Reply<'a>),
}

/// Decodes a request or a reply, told apart by the first byte's MSB (§5.1). Pure and bounded:
/// one pass over `payload`, no allocation.
pub fn parse(payload: &[u8]) -> Result<Message<'_>, Reject> {
    match payload.first() {
        Some(b) if b & 0x80 != 0 => parse_request(payload).map(Message::Request),
        _ => parse_reply(payload).map(Message::Reply),
    }
}

pub fn parse_request(payload: &[u8]) -> Result<Request<'_>, Reject> {
    let mut r = Reader { rest: payload };
    let connection_id = r.be64()?;
    if connection_id >> 63 == 0 {
        return Err(Reject::BadConnectionId);
    }
    let action = Action::from_code(r.be32()?)
        .filter(|a| a.is_request())
        .ok_or(Reject::BadAction)?;
    let txid = r.be32()?;
    let version = r.u8()?;
    check_version(version)?;
    let vendor = r.u8()?;
    let network = r.be32()?;
    let originator_version = r.u8()?;
    let originator = r.address()?;
    let instance = r.be32()?;
    let time_ms = r.be64()?;
    let flags = r.opt_u8(version >= V_PACKET_FLAGS)?;
    let flags2 = r.opt_u8(version >= V_PACKET_FLAGS2)?;
    let header = RequestHeader {
        connection_id,
        action,
        txid,
        version,
        vendor,
        network,
        originator_version,
        originator,
        instance,
        time_ms,
        flags,
        flags2,
    };
    let body = if action == Action::RequestFindValue {
        let len = usize::from(r.u8()?);
        if len > MAX_KEY_LEN {
            return Err(Reject::TooLong);
        }
        RequestBody::FindValue(FindValueRequest {
            key: r.take(len)?,
            flags: r.u8()?,
            max_values: r.u8()?,
        })
    } else {
        RequestBody::Other(r.take(r.rest.len())?)
    };
    Ok(Request {
        header,
        body,
        trailing: r.rest.len(),
    })
}

pub fn parse_reply(payload: &[u8]) -> Result<Reply<'_>, Reject> {
    let mut r = Reader { rest: payload };
    let action = Action::from_code(r.be32()?)
        .filter(|a| !a.is_request())
        .ok_or(Reject::BadAction)?;
    let txid = r.be32()?;
    let connection_id = r.be64()?;
    if connection_id >> 63 == 0 {
        return Err(Reject::BadConnectionId);
    }
    let version = r.u8()?;
    check_version(version)?;
    let vendor = r.u8()?;
    let network = r.be32()?;
    let instance = r.be32()?;
    let flags = r.opt_u8(version >= V_PACKET_FLAGS)?;
    let flags2 = r.opt_u8(version >= V_PACKET_FLAGS2)?;
    let processing_time_ms = if version >= V_PROC_TIME {
        Some(r.be16()?)
    } else {
        None
    };
    let header = ReplyHeader {
        action,
        txid,
        connection_id,
        version,
        vendor,
        network,
        instance,
        flags,
        flags2,
        processing_time_ms,
    };
    let body = match action {
        Action::ReplyFindNode => ReplyBody::FindNode(FindNodeReply {
            spoof_id: r.be32()?,
            node_status: r.be32()?,
            estimated_size: r.be32()?,
            positions: NetPositions::read(&mut r)?,
            contacts: Contacts::read(&mut r)?,
        }),
        Action::ReplyFindValue => {
            let has_continuation = r.boolean()?;
            let result = if r.boolean()? {
                FindValueResult::Values {
                    diversification: r.u8()?,
                    values: Values::read(&mut r, version)?,
                }
            } else {
                FindValueResult::Contacts {
                    contacts: Contacts::read(&mut r)?,
                    positions: if version >= V_VIVALDI_FINDVALUE {
                        Some(NetPositions::read(&mut r)?)
                    } else {
                        None
                    },
                }
            };
            ReplyBody::FindValue(FindValueReply {
                has_continuation,
                result,
            })
        }
        _ => ReplyBody::Other(r.take(r.rest.len())?),
    };
    Ok(Reply {
        header,
        body,
        trailing: r.rest.len(),
    })
}

/// Cheap test before parsing: spec §12 F5 (a request: MSB-set first byte, 42+ bytes, action
/// 1024..1039 at offset 8; a reply: a reply action at offset 0, 26+ bytes, MSB-set connection
/// id at offset 8), plus the protocol version at offset 16 (in both directions) within the
/// parsed range, which keeps out e.g. DNS answers whose counts happen to read as an action.
pub fn looks_like_vuze(head: &[u8]) -> bool {
    let be32 = |off: usize| {
        head.get(off..off + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let shape = if head.first().is_some_and(|b| b & 0x80 != 0) {
        head.len() >= MIN_REQUEST_LEN && be32(8).is_some_and(|a| (1024..=1039).contains(&a))
    } else {
        head.len() >= MIN_REPLY_LEN
            && head[8] & 0x80 != 0
            && be32(0)
                .and_then(Action::from_code)
                .is_some_and(|a| !a.is_request())
    };
    shape && check_version(head[16]).is_ok()
}

/// A BitTorrent registration stored by BiglyBT's DHT tracker plugin (spec §5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerValue {
    /// `ip_override`; otherwise the peer is at the value's originator address.
    pub ip: Option<Ipv4Addr>,
    pub tcp_port: u16,
    /// Flag `C`: the peer requires an encrypted connection.
    pub crypto_required: bool,
    /// Flag `I`: the peer is (also) reachable over I2P.
    pub i2p: bool,
    /// Given only when it differs from the DHT (originator) port.
    pub udp_port: Option<u16>,
}

/// 1–5 ASCII digits, 1..=65535.
fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Reads value bytes as `[ip:]port[;letters][;udp_port]`, strictly: anything else is another
/// application's data. The address part ends at the first `:` as in BiglyBT, so an IPv6 or
/// bracketed override (which BiglyBT cannot read either) and host names are refused.
pub fn parse_peer_value(bytes: &[u8]) -> Option<PeerValue> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut tokens = s.split(';');
    let first = tokens.next()?;
    let (ip, port) = match first.split_once(':') {
        Some((ip, port)) => (Some(ip.parse::<Ipv4Addr>().ok()?), port),
        None => (None, first),
    };
    let tcp_port = port_number(port)?;
    let mut next = tokens.next();
    let mut letters = "";
    if let Some(t) = next {
        if !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphabetic()) {
            letters = t;
            next = tokens.next();
        }
    }
    let udp_port = match next {
        Some(t) => Some(port_number(t)?),
        None => None,
    };
    if tokens.next().is_some() {
        return None;
    }
    Some(PeerValue {
        ip,
        tcp_port,
        crypto_required: letters.contains('C'),
        i2p: letters.contains('I'),
        udp_port,
    })
}

impl PeerValue {
    /// The TCP and UDP endpoints a lookup of `value` learns (BiglyBT `DHTTrackerPlugin`):
    /// the override address or the originator's, and the explicit UDP port or the
    /// originator's.
    pub fn endpoints(&self, value: &TransportValue<'_>) -> (SocketAddr, SocketAddr) {
        let origin = value.originator.addr;
        let ip = self.ip.map_or(origin.ip(), IpAddr::V4);
        (
            SocketAddr::new(ip, self.tcp_port),
            SocketAddr::new(ip, self.udp_port.unwrap_or(origin.port())),
        )
    }
}

#[derive(Clone, Debug)]
pub struct VuzeDhtConfig {
    /// Requests awaiting a reply, at most.
    pub max_pending: usize,
    /// How long a request waits for its reply (BiglyBT gives up after seconds).
    pub pending_ttl: Duration,
    /// Predict from replies whose request was not seen (see the module docs).
    pub predict_unmatched: bool,
    /// Endpoints read per reply.
    pub max_entries: usize,
    /// Messages below this protocol version are counted `old_version` and not used.
    pub min_version: u8,
}

impl Default for VuzeDhtConfig {
    fn default() -> Self {
        Self {
            max_pending: 65_536,
            pending_ttl: Duration::from_secs(60),
            predict_unmatched: true,
            max_entries: MAX_ENTRIES,
            min_version: MIN_ACCEPTED_VERSION,
        }
    }
}

/// Counters of the Vuze DHT channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VuzeDhtStats {
    pub counts: ChannelCounts,
    pub requests: u64,
    pub find_node_requests: u64,
    pub find_value_requests: u64,
    pub replies: u64,
    pub find_node_replies: u64,
    pub find_value_replies: u64,
    /// FIND_VALUE replies that carried values (the others carry contacts).
    pub value_replies: u64,
    pub error_replies: u64,
    /// Replies that answered a pending request, and those that did not.
    pub matched: u64,
    pub unmatched: u64,
    /// Unmatched replies whose transaction id was pending on the pair, but under another
    /// connection id, or for a request the reply's action does not answer.
    pub connection_id_mismatch: u64,
    pub action_mismatch: u64,
    /// Unmatched replies whose lists were not used (`predict_unmatched` off).
    pub unmatched_ignored: u64,
    /// Matched replies with `has_continuation`: their request stayed pending.
    pub continued: u64,
    /// Stored values read (torrent or not), and the fate of the torrent ones.
    pub values: EntryCounts,
    /// Values whose bytes are not a BitTorrent registration (other DHT applications).
    pub non_torrent_values: u64,
    pub contacts: EntryCounts,
    /// Predictions made: value peers (TCP + UDP) and contacts (UDP).
    pub predicted_peers: u64,
    pub predicted_contacts: u64,
    /// Messages with bytes after their last field.
    pub trailing_bytes: u64,
    pub pending: TableStats,
}

/// (requester, responder, transaction id).
type RequestKey = (SocketAddr, SocketAddr, u32);

#[derive(Clone, Copy, Debug)]
struct Pending {
    connection_id: u64,
    action: Action,
    /// The requester's originator address: its own external address.
    own: IpAddr,
}

/// Matches Vuze DHT replies to requests and turns replies into predictions.
#[derive(Debug)]
pub struct VuzeDht {
    config: VuzeDhtConfig,
    pending: Bounded<RequestKey, Pending>,
    stats: VuzeDhtStats,
}

impl VuzeDht {
    pub fn new(config: VuzeDhtConfig) -> Self {
        Self {
            pending: Bounded::new(config.max_pending, config.pending_ttl),
            config,
            stats: VuzeDhtStats::default(),
        }
    }

    pub fn stats(&self) -> VuzeDhtStats {
        let mut s = self.stats.clone();
        s.pending = self.pending.stats();
        s
    }

    pub fn expire(&mut self, now: Timestamp) {
        self.pending.expire(now);
    }

    /// One datagram that passed [`looks_like_vuze`]. True when it decoded as a Vuze DHT message
    /// of an accepted version: its sender runs a BitTorrent client (an LSD member).
    pub fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Vec<PredictedPeer>,
    ) -> bool {
        self.stats.counts.seen += 1;
        let result = if udp.is_complete() {
            self.on_message(ev, udp.head, out)
        } else {
            Err(Reject::Incomplete)
        };
        self.stats.counts.record(result.map_err(Reject::as_str));
        result.is_ok()
    }

    fn on_message(
        &mut self,
        ev: &PacketEvent<'_>,
        payload: &[u8],
        out: &mut Vec<PredictedPeer>,
    ) -> Result<(), Reject> {
        match parse(payload)? {
            Message::Request(q) => self.on_request(ev, &q),
            Message::Reply(r) => self.on_reply(ev, &r, out),
        }
    }

    fn on_request(&mut self, ev: &PacketEvent<'_>, q: &Request<'_>) -> Result<(), Reject> {
        let h = &q.header;
        if h.version < self.config.min_version {
            return Err(Reject::OldVersion);
        }
        self.stats.requests += 1;
        match h.action {
            Action::RequestFindNode => self.stats.find_node_requests += 1,
            Action::RequestFindValue => self.stats.find_value_requests += 1,
            _ => {}
        }
        if q.trailing > 0 {
            self.stats.trailing_bytes += 1;
        }
        if h.action.reply().is_some() {
            let pending = Pending {
                connection_id: h.connection_id,
                action: h.action,
                own: h.originator.ip(),
            };
            self.pending
                .insert((ev.src, ev.dst, h.txid), pending, ev.ts);
        }
        Ok(())
    }

    /// The pending request `r` answers, if any; taken unless more replies will follow.
    fn answer(&mut self, ev: &PacketEvent<'_>, r: &Reply<'_>) -> Option<Pending> {
        let key = (ev.dst, ev.src, r.header.txid);
        let p = *self.pending.get_mut(&key, ev.ts)?;
        if p.connection_id != r.header.connection_id {
            self.stats.connection_id_mismatch += 1;
            return None;
        }
        if !r.header.action.answers(p.action) {
            self.stats.action_mismatch += 1;
            return None;
        }
        if r.has_continuation() {
            self.stats.continued += 1;
        } else {
            self.pending.take(&key, ev.ts);
        }
        Some(p)
    }

    fn on_reply(
        &mut self,
        ev: &PacketEvent<'_>,
        r: &Reply<'_>,
        out: &mut Vec<PredictedPeer>,
    ) -> Result<(), Reject> {
        if r.header.version < self.config.min_version {
            return Err(Reject::OldVersion);
        }
        self.stats.replies += 1;
        match r.body {
            ReplyBody::FindNode(_) => self.stats.find_node_replies += 1,
            ReplyBody::FindValue(_) => self.stats.find_value_replies += 1,
            ReplyBody::Other(_) => {}
        }
        if r.header.action == Action::ReplyError {
            self.stats.error_replies += 1;
        }
        if r.trailing > 0 {
            self.stats.trailing_bytes += 1;
        }
        let values = r.values();
        if values.is_some() {
            self.stats.value_replies += 1;
        }
        let answered = self.answer(ev, r);
        if answered.is_some() {
            self.stats.matched += 1;
        } else {
            self.stats.unmatched += 1;
            if !self.config.predict_unmatched {
                self.stats.unmatched_ignored += 1;
                return Ok(());
            }
        }
        let learner = ev.dst.ip();
        let own = answered.map(|p| p.own);
        let max = self.config.max_entries;
        let push = |out: &mut Vec<PredictedPeer>, peer, transport| {
            out.push(PredictedPeer {
                ts: ev.ts,
                host: learner,
                peer,
                transport,
                channel: Channel::AzureusDht,
            })
        };

        let mut vc = EntryCounts::default();
        if let Some(values) = values {
            let start = out.len();
            vc.capped = values.len().saturating_sub(max) as u64;
            for v in values.iter().take(max) {
                vc.decoded += 1;
                let Some(pv) = parse_peer_value(v.bytes) else {
                    self.stats.non_torrent_values += 1;
                    continue;
                };
                let (tcp, udp) = pv.endpoints(&v);
                if let Some(why) = unfit(tcp, learner, own) {
                    vc.count_unfit(why);
                    continue;
                }
                push(out, tcp, PeerTransport::Tcp);
                // Same address: only the port (the originator's, when implied) can be 0.
                if udp.port() != 0 {
                    push(out, udp, PeerTransport::Udp);
                }
            }
            self.stats.predicted_peers += (out.len() - start) as u64;
            self.stats.values.add(&vc);
        }

        if let Some(contacts) = r.contacts() {
            let budget = max.saturating_sub(vc.decoded as usize);
            let mut cc = EntryCounts {
                capped: contacts.len().saturating_sub(budget) as u64,
                ..Default::default()
            };
            let start = out.len();
            for c in contacts.iter().take(budget) {
                cc.decoded += 1;
                match unfit(c.addr, learner, own) {
                    Some(why) => cc.count_unfit(why),
                    None => push(out, c.addr, PeerTransport::Udp),
                }
            }
            self.stats.predicted_contacts += (out.len() - start) as u64;
            self.stats.contacts.add(&cc);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bt::test_support::{datagram, udp_datagrams, unhex, Datagram};

    // Spec §5.8, verbatim.
    const D1: &str = "9a3b5c7d1e2f4a6b 00000406 00c0ffee 32 00 00000000 32 04c00002632c09 11223344
        0000018bcfe56800 14 0f1e2d3c4b5a69788796a5b4c3d2e1f001122334 00 10";
    const D2: &str = "00000407 00c0ffee 9a3b5c7d1e2f4a6b 32 00 00000000 55667788 00 01 01 0002
        00000001 0000018bcfe540f0 0007 35313431333b43 01 32 04c00002142c09 01 00 ff
        00000001 0000018bcfe519e0 0016 3230332e302e3131332e37373a363838313b36383832 01 32
        04c00002159c40 02 00 ff";
    const D3: &str = "00000405 00c0ffef 9a3b5c7d1e2f4a6b 32 00 00000000 55667788 0badf00d 00000001
        000f4240 01 01 10 3f800000 40000000 40400000 40800000 0002 01 32 04c000021e2c09 01 32
        04c000021f1ae1";
    const D4: &str = "9a3b5c7d1e2f4a6b 00000406 00c0ffee 37 00 00000004 37 04c00002632c09 11223344
        0000018bcfe56800 00 00 14 0f1e2d3c4b5a69788796a5b4c3d2e1f001122334 00 10";
    /// VZ-D5 is "VZ-D2 with header `... 37 00 00000004 55667788 00 00 0003` and value/contact
    /// protocol-version bytes 0x37": built here from D2 by exactly those substitutions.
    fn d5() -> Vec<u8> {
        let d2 = unhex(D2);
        let mut v = unhex("00000407 00c0ffee 9a3b5c7d1e2f4a6b 37 00 00000004 55667788 00 00 0003");
        let mut body = d2[26..].to_vec();
        // Originator contacts `01 32 04 ...` of the two values.
        for at in [5 + 4 + 8 + 2 + 7, 5 + 33 + 4 + 8 + 2 + 22] {
            assert_eq!(&body[at..at + 3], &[1, 0x32, 4]);
            body[at + 1] = 0x37;
        }
        v.extend_from_slice(&body);
        v
    }

    const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f001122334";
    const REQUESTER: &str = "192.0.2.99:11273";
    const RESPONDER: &str = "192.0.2.1:11273";
    const CONN: u64 = 0x9a3b_5c7d_1e2f_4a6b;

    fn legacy() -> VuzeDht {
        VuzeDht::new(VuzeDhtConfig {
            min_version: 50,
            ..Default::default()
        })
    }

    fn feed(t: &mut VuzeDht, d: &Datagram) -> Vec<PredictedPeer> {
        let (ev, udp) = d.event();
        let mut out = Vec::new();
        t.on_udp(&ev, &udp, &mut out);
        out
    }

    fn request(hex: &str, ts: u64) -> Datagram {
        datagram(REQUESTER, RESPONDER, ts, &unhex(hex))
    }

    fn reply(bytes: &[u8], ts: u64) -> Datagram {
        datagram(RESPONDER, REQUESTER, ts, bytes)
    }

    fn targets(out: &[PredictedPeer], transport: PeerTransport) -> Vec<String> {
        out.iter()
            .filter(|p| p.transport == transport)
            .map(|p| {
                assert_eq!(p.channel, Channel::AzureusDht);
                assert_eq!(p.host.to_string(), "192.0.2.99");
                p.peer.to_string()
            })
            .collect()
    }

    fn contact(version: u8, addr: &str) -> Contact {
        Contact {
            version,
            addr: addr.parse().unwrap(),
        }
    }

    /// The expected values of VZ-D2/D5, field by field from the spec.
    fn check_spec_values(values: Values<'_>, contact_version: u8, v: u8) {
        let vs: Vec<_> = values.iter().collect();
        assert_eq!(vs.len(), 2);
        assert_eq!(values.len(), 2);
        let expect = [
            (
                0x18bcfe540f0u64,
                &b"51413;C"[..],
                "192.0.2.20:11273",
                0x01u8,
            ),
            (
                0x18bcfe519e0,
                &b"203.0.113.77:6881;6882"[..],
                "192.0.2.21:40000",
                0x02,
            ),
        ];
        for (got, (created, bytes, origin, flags)) in vs.iter().zip(expect) {
            assert_eq!(got.version, 1);
            assert_eq!(got.created_ms, created);
            assert_eq!(got.bytes, bytes);
            assert_eq!(got.originator, contact(contact_version, origin));
            assert_eq!(got.flags, flags);
            assert_eq!(got.life_hours, (v >= 23).then_some(0));
            assert_eq!(got.replication_control, Some(0xff));
        }
        // Spec §5.7 on these two values.
        let p1 = parse_peer_value(vs[0].bytes).unwrap();
        assert_eq!(
            p1,
            PeerValue {
                ip: None,
                tcp_port: 51413,
                crypto_required: true,
                i2p: false,
                udp_port: None
            }
        );
        let (tcp, udp) = p1.endpoints(&vs[0]);
        assert_eq!(
            (tcp.to_string(), udp.to_string()),
            ("192.0.2.20:51413".into(), "192.0.2.20:11273".into())
        );
        let p2 = parse_peer_value(vs[1].bytes).unwrap();
        assert_eq!(p2.ip, Some(Ipv4Addr::new(203, 0, 113, 77)));
        assert_eq!((p2.tcp_port, p2.udp_port), (6881, Some(6882)));
        assert!(!p2.crypto_required);
        let (tcp, udp) = p2.endpoints(&vs[1]);
        assert_eq!(
            (tcp.to_string(), udp.to_string()),
            ("203.0.113.77:6881".into(), "203.0.113.77:6882".into())
        );
    }

    const SPEC_TCP: [&str; 2] = ["192.0.2.20:51413", "203.0.113.77:6881"];
    const SPEC_UDP: [&str; 2] = ["192.0.2.20:11273", "203.0.113.77:6882"];

    #[test]
    fn spec_d1_find_value_request_v50() {
        let raw = unhex(D1);
        assert_eq!(raw.len(), 65);
        assert!(looks_like_vuze(&raw));
        let Message::Request(q) = parse(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(
            q.header,
            RequestHeader {
                connection_id: CONN,
                action: Action::RequestFindValue,
                txid: 0x00c0_ffee,
                version: 50,
                vendor: 0,
                network: 0,
                originator_version: 50,
                originator: REQUESTER.parse().unwrap(),
                instance: 0x1122_3344,
                time_ms: 1_700_000_000_000,
                flags: None,
                flags2: None,
            }
        );
        assert_eq!(
            q.body,
            RequestBody::FindValue(FindValueRequest {
                key: &unhex(KEY),
                flags: 0,
                max_values: 16
            })
        );
        assert_eq!(q.trailing, 0);
    }

    #[test]
    fn spec_d2_find_value_reply_with_values_v50() {
        let raw = unhex(D2);
        assert_eq!(raw.len(), 112);
        assert!(looks_like_vuze(&raw));
        let Message::Reply(r) = parse(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.header,
            ReplyHeader {
                action: Action::ReplyFindValue,
                txid: 0x00c0_ffee,
                connection_id: CONN,
                version: 50,
                vendor: 0,
                network: 0,
                instance: 0x5566_7788,
                flags: None,
                flags2: None,
                processing_time_ms: None,
            }
        );
        let ReplyBody::FindValue(f) = r.body else {
            panic!()
        };
        assert!(!f.has_continuation);
        let FindValueResult::Values {
            diversification,
            values,
        } = f.result
        else {
            panic!()
        };
        assert_eq!(diversification, 1);
        check_spec_values(values, 0x32, 50);
        assert_eq!(r.trailing, 0);
        assert!(r.contacts().is_none());

        // Through the tracker, answering D1: the spec's targets for 192.0.2.99.
        let mut t = legacy();
        assert!(feed(&mut t, &request(D1, 0)).is_empty());
        let out = feed(&mut t, &reply(&raw, 1));
        assert_eq!(targets(&out, PeerTransport::Tcp), SPEC_TCP);
        assert_eq!(targets(&out, PeerTransport::Udp), SPEC_UDP);
        let s = t.stats();
        assert_eq!((s.requests, s.find_value_requests), (1, 1));
        assert_eq!(
            (s.replies, s.value_replies, s.matched, s.unmatched),
            (1, 1, 1, 0)
        );
        assert_eq!((s.values.decoded, s.predicted_peers), (2, 4));
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert_eq!(s.pending.len, 0);
    }

    #[test]
    fn spec_d3_find_node_reply_v50() {
        let raw = unhex(D3);
        assert_eq!(raw.len(), 77);
        assert!(looks_like_vuze(&raw));
        let Message::Reply(r) = parse(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(r.header.action, Action::ReplyFindNode);
        assert_eq!(r.header.txid, 0x00c0_ffef);
        assert_eq!(r.header.connection_id, CONN);
        assert_eq!((r.header.version, r.header.network), (50, 0));
        let ReplyBody::FindNode(f) = r.body else {
            panic!()
        };
        assert_eq!(
            (f.spoof_id, f.node_status, f.estimated_size),
            (0x0bad_f00d, 1, 1_000_000)
        );
        let pos: Vec<_> = f.positions.iter().collect();
        assert_eq!(pos.len(), 1);
        assert_eq!(pos[0].kind, 1);
        assert_eq!(pos[0].vivaldi(), Some([1.0, 2.0, 3.0, 4.0]));
        let cs: Vec<_> = f.contacts.iter().collect();
        assert_eq!(
            cs,
            [
                contact(0x32, "192.0.2.30:11273"),
                contact(0x32, "192.0.2.31:6881")
            ]
        );
        // No request with txid 00c0ffef in the vectors: unmatched, still predicts (UDP only).
        let mut t = legacy();
        let out = feed(&mut t, &reply(&raw, 0));
        assert_eq!(
            targets(&out, PeerTransport::Udp),
            ["192.0.2.30:11273", "192.0.2.31:6881"]
        );
        assert!(targets(&out, PeerTransport::Tcp).is_empty());
        let s = t.stats();
        assert_eq!(
            (s.find_node_replies, s.unmatched, s.predicted_contacts),
            (1, 1, 2)
        );
        assert_eq!(s.contacts.decoded, 2);
    }

    #[test]
    fn spec_d4_find_value_request_v55_biglybt() {
        let raw = unhex(D4);
        assert_eq!(raw.len(), 67);
        assert!(looks_like_vuze(&raw));
        let q = parse_request(&raw).unwrap();
        assert_eq!(q.header.action, Action::RequestFindValue);
        assert_eq!((q.header.connection_id, q.header.txid), (CONN, 0x00c0_ffee));
        assert_eq!((q.header.version, q.header.vendor), (55, 0));
        assert_eq!((q.header.network, q.header.originator_version), (4, 55));
        assert_eq!(q.header.originator, REQUESTER.parse().unwrap());
        assert_eq!(
            (q.header.instance, q.header.time_ms),
            (0x1122_3344, 1_700_000_000_000)
        );
        assert_eq!((q.header.flags, q.header.flags2), (Some(0), Some(0)));
        let RequestBody::FindValue(f) = q.body else {
            panic!()
        };
        assert_eq!((f.key, f.flags, f.max_values), (&unhex(KEY)[..], 0, 16));
    }

    #[test]
    fn spec_d5_find_value_reply_v55_with_processing_time() {
        let raw = d5();
        assert_eq!(raw.len(), 116);
        assert!(looks_like_vuze(&raw));
        let r = parse_reply(&raw).unwrap();
        assert_eq!(r.header.action, Action::ReplyFindValue);
        assert_eq!((r.header.txid, r.header.connection_id), (0x00c0_ffee, CONN));
        assert_eq!(
            (r.header.version, r.header.vendor, r.header.network),
            (55, 0, 4)
        );
        assert_eq!(r.header.instance, 0x5566_7788);
        assert_eq!((r.header.flags, r.header.flags2), (Some(0), Some(0)));
        assert_eq!(r.header.processing_time_ms, Some(3));
        check_spec_values(r.values().unwrap(), 0x37, 55);

        // Default config: the v50 vectors are dropped as current BiglyBT drops them; D4/D5
        // give the spec's targets.
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        let mut out = Vec::new();
        for d in [
            request(D1, 0),
            reply(&unhex(D2), 1),
            reply(&unhex(D3), 2),
            request(D4, 3),
            reply(&raw, 4),
        ] {
            out.extend(feed(&mut t, &d));
        }
        assert_eq!(targets(&out, PeerTransport::Tcp), SPEC_TCP);
        assert_eq!(targets(&out, PeerTransport::Udp), SPEC_UDP);
        let s = t.stats();
        assert_eq!(s.counts.seen, 5);
        assert_eq!(s.counts.parsed, 2);
        assert_eq!(
            s.counts.rejected,
            std::collections::BTreeMap::from([("old_version", 3)])
        );
        assert_eq!((s.matched, s.unmatched), (1, 0));
    }

    #[test]
    fn every_truncation_is_rejected() {
        for v in [unhex(D1), unhex(D2), unhex(D3), unhex(D4), d5()] {
            assert!(parse(&v).is_ok());
            for cut in 0..v.len() {
                assert!(parse(&v[..cut]).is_err(), "prefix {cut} of {v:02x?} parsed");
            }
        }
        // Snap-truncated datagrams are not parsed at all.
        let mut d = reply(&d5(), 0);
        d.payload_len += 10;
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        assert!(feed(&mut t, &d).is_empty());
        assert_eq!(t.stats().counts.rejected.get("incomplete"), Some(&1));
    }

    #[test]
    fn malformed_headers_are_rejected_with_a_reason() {
        let d1 = unhex(D1);
        let d5 = d5();
        let edit = |v: &[u8], at: usize, b: &[u8]| {
            let mut v = v.to_vec();
            v[at..at + b.len()].copy_from_slice(b);
            v
        };
        let cases: Vec<(Vec<u8>, Reject)> = vec![
            // Request connection id without the MSB (so read as a reply: a bad action).
            (edit(&d1, 0, &[0x1a]), Reject::BadAction),
            // A reply echoing a connection id without the MSB.
            (edit(&d5, 8, &[0x1a]), Reject::BadConnectionId),
            // Actions: out of range, a reply code in a request, a request code in a reply.
            (edit(&d1, 8, &[0, 0, 4, 0x10]), Reject::BadAction),
            (edit(&d1, 8, &[0, 0, 4, 0x07]), Reject::BadAction),
            (edit(&d5, 0, &[0, 0, 4, 0x06]), Reject::BadAction),
            (edit(&d5, 0, &[0, 0, 3, 0xff]), Reject::BadAction),
            // Versions outside 15..=127.
            (edit(&d1, 16, &[14]), Reject::UnsupportedVersion),
            (edit(&d1, 16, &[0x80]), Reject::UnsupportedVersion),
            (edit(&d5, 16, &[0xff]), Reject::UnsupportedVersion),
            // Originator address length 5, then 0.
            (edit(&d1, 23, &[5]), Reject::BadAddress),
            (edit(&d1, 23, &[0]), Reject::BadAddress),
            // Key length 65.
            (edit(&d1, 42, &[65]), Reject::TooLong),
            // First value: length 513 (max 512), then its originator contact of type 2.
            (edit(&d5, 35 + 12, &[0x02, 0x01]), Reject::TooLong),
            (edit(&d5, 35 + 21, &[2]), Reject::BadContactType),
            // Value count the datagram cannot hold.
            (edit(&d5, 33, &[0xff, 0xff]), Reject::BadCount),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(&raw).err(), Some(want), "{raw:02x?}");
        }
        // The request-side MSB test on its own.
        assert_eq!(
            parse_request(&edit(&d1, 0, &[0x1a])).err(),
            Some(Reject::BadConnectionId)
        );
        assert_eq!(parse_reply(&d1).err(), Some(Reject::BadAction));
    }

    #[test]
    fn hostile_counts_are_bounded() {
        // VZ-D3 announcing 65,535 contacts with 2 present, or 255 network positions.
        let d3 = unhex(D3);
        let mut raw = d3.clone();
        raw[57..59].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(parse(&raw).err(), Some(Reject::BadCount));
        let mut raw = d3.clone();
        raw[38] = 0xff;
        assert_eq!(parse(&raw).err(), Some(Reject::BadCount));
        // 7,000 real contacts (a 63 KB datagram): all validated, predictions capped.
        let mut big = d3[..57].to_vec();
        big.extend_from_slice(&7_000u16.to_be_bytes());
        for i in 0..7_000u32 {
            big.extend_from_slice(&[1, 0x37, 4, 10, 0, (i >> 8) as u8, i as u8, 0x1a, 0xe1]);
        }
        let r = parse_reply(&big).unwrap();
        assert_eq!(r.contacts().unwrap().iter().count(), 7_000);
        let mut t = legacy();
        let out = feed(&mut t, &reply(&big, 0));
        assert_eq!(out.len(), MAX_ENTRIES);
        let c = t.stats().contacts;
        assert_eq!(
            (c.decoded, c.capped),
            (MAX_ENTRIES as u64, 7_000 - MAX_ENTRIES as u64)
        );
    }

    #[test]
    fn peer_value_syntax_is_strict() {
        let pv = |ip: Option<&str>, tcp_port, crypto_required, i2p, udp_port| PeerValue {
            ip: ip.map(|i| i.parse().unwrap()),
            tcp_port,
            crypto_required,
            i2p,
            udp_port,
        };
        let ok = [
            ("51413;C", pv(None, 51413, true, false, None)),
            (
                "203.0.113.77:6881;6882",
                pv(Some("203.0.113.77"), 6881, false, false, Some(6882)),
            ),
            ("6881", pv(None, 6881, false, false, None)),
            ("1", pv(None, 1, false, false, None)),
            ("65535;CI;1", pv(None, 65535, true, true, Some(1))),
            (
                "10.0.0.1:6881;I",
                pv(Some("10.0.0.1"), 6881, false, true, None),
            ),
            ("6881;X", pv(None, 6881, false, false, None)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_peer_value(s.as_bytes()), Some(want), "{s}");
        }
        for bad in [
            "",
            "0",
            "65536",
            "123456",
            "6881;",
            ";6881",
            "6881;C;",
            "6881;6882;C",
            "6881;C;D",
            "6881;1;2",
            "6881;0",
            "6881;70000",
            "+6881",
            "-1",
            " 6881",
            "6881 ",
            "a:6881",
            "example.com:6881",
            "2001:db8::1:6881",
            "[2001:db8::1]:6881",
            "1.2.3:6881",
            "1.2.3.4:",
            "1.2.3.4:0",
            ":6881",
            "6881;C1",
            "6881;\u{e9}",
            "d1:ae",
            "\u{0}\u{1}\u{2}",
        ] {
            assert_eq!(parse_peer_value(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_peer_value(&[0xff, 0x36]), None);
    }

    /// VZ-D5 with the first value's bytes replaced (same length, 7 bytes).
    fn d5_with_first_value(bytes: &[u8; 7]) -> Vec<u8> {
        let mut v = d5();
        v[35 + 14..35 + 21].copy_from_slice(bytes);
        v
    }

    #[test]
    fn non_torrent_values_are_counted_not_used() {
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        feed(&mut t, &request(D4, 0));
        let out = feed(&mut t, &reply(&d5_with_first_value(b"\x00\x01binar"), 1));
        assert_eq!(targets(&out, PeerTransport::Tcp), ["203.0.113.77:6881"]);
        let s = t.stats();
        assert_eq!((s.values.decoded, s.non_torrent_values), (2, 1));
        assert_eq!(s.predicted_peers, 2);
    }

    #[test]
    fn learner_and_port_zero_are_dropped() {
        // First value at the learner's own originator address (`192.0.2.99:51413` would not
        // fit in 7 bytes: the override is absent, so its originator contact is patched to
        // 192.0.2.99); second value's TCP port 0 is no value at all.
        let mut raw = d5();
        raw[35 + 24..35 + 28].copy_from_slice(&[192, 0, 2, 99]);
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        feed(&mut t, &request(D4, 0));
        let out = feed(&mut t, &reply(&raw, 1));
        assert_eq!(targets(&out, PeerTransport::Tcp), ["203.0.113.77:6881"]);
        assert_eq!(t.stats().values.own_address, 1);

        // Unmatched, the request's originator is unknown; the learner's address still counts.
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        let out = feed(&mut t, &reply(&raw, 1));
        assert_eq!(out.len(), 2);

        // The request's originator address (the requester's external address behind NAT) is
        // the learner too: a value there is its own registration.
        let mut nat = unhex(D4);
        nat[24..28].copy_from_slice(&[198, 51, 100, 7]);
        let mut raw = d5();
        raw[35 + 24..35 + 28].copy_from_slice(&[198, 51, 100, 7]);
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        feed(&mut t, &datagram(REQUESTER, RESPONDER, 0, &nat));
        let out = feed(&mut t, &reply(&raw, 1));
        assert_eq!(targets(&out, PeerTransport::Tcp), ["203.0.113.77:6881"]);
        assert_eq!(t.stats().values.own_address, 1);

        // An originator on port 0 with no explicit UDP port: TCP only.
        let mut raw = d5();
        raw[35 + 28..35 + 30].copy_from_slice(&[0, 0]);
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        let out = feed(&mut t, &reply(&raw, 1));
        assert_eq!(targets(&out, PeerTransport::Tcp), SPEC_TCP);
        assert_eq!(targets(&out, PeerTransport::Udp), ["203.0.113.77:6882"]);
    }

    #[test]
    fn replies_match_by_pair_txid_and_connection_id() {
        let d5 = d5();
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        feed(&mut t, &request(D4, 0));
        // Another connection id, then another responder: not the pending request.
        let mut other_conn = d5.clone();
        other_conn[15] ^= 1;
        feed(&mut t, &reply(&other_conn, 1));
        feed(&mut t, &datagram("192.0.2.2:11273", REQUESTER, 1, &d5));
        // A FIND_NODE reply with that txid does not answer a FIND_VALUE request.
        let mut d3 = unhex(D3);
        d3[7] = 0xee;
        d3[16..22].copy_from_slice(&[55, 0, 0, 0, 0, 4]);
        let d3_v55 = {
            let mut v = d3[..26].to_vec();
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(&d3[26..]);
            v
        };
        assert!(parse_reply(&d3_v55).is_ok());
        feed(&mut t, &reply(&d3_v55, 1));
        let s = t.stats();
        assert_eq!((s.matched, s.unmatched), (0, 3));
        assert_eq!((s.connection_id_mismatch, s.action_mismatch), (1, 1));
        assert_eq!(s.pending.len, 1);
        // The right one matches once; a duplicate is unmatched.
        assert_eq!(feed(&mut t, &reply(&d5, 2)).len(), 4);
        feed(&mut t, &reply(&d5, 2));
        let s = t.stats();
        assert_eq!((s.matched, s.unmatched, s.pending.len), (1, 4, 0));
        // An error reply answers any request.
        feed(&mut t, &request(D4, 3));
        let mut err = d5[..30].to_vec();
        err[3] = 0x08;
        err.extend_from_slice(&[0, 0, 0, 3]);
        assert!(feed(&mut t, &reply(&err, 4)).is_empty());
        let s = t.stats();
        assert_eq!((s.matched, s.error_replies, s.pending.len), (2, 1, 0));
    }

    #[test]
    fn continuation_keeps_the_request_open() {
        let mut cont = d5();
        cont[30] = 1;
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        feed(&mut t, &request(D4, 0));
        assert_eq!(feed(&mut t, &reply(&cont, 1)).len(), 4);
        assert_eq!(t.stats().pending.len, 1);
        assert_eq!(feed(&mut t, &reply(&d5(), 2)).len(), 4);
        let s = t.stats();
        assert_eq!((s.matched, s.continued, s.pending.len), (2, 1, 0));
    }

    #[test]
    fn unmatched_replies_can_be_ignored() {
        let mut t = VuzeDht::new(VuzeDhtConfig {
            predict_unmatched: false,
            ..Default::default()
        });
        assert!(feed(&mut t, &reply(&d5(), 0)).is_empty());
        feed(&mut t, &request(D4, 1));
        assert_eq!(feed(&mut t, &reply(&d5(), 2)).len(), 4);
        let s = t.stats();
        assert_eq!((s.unmatched_ignored, s.matched, s.counts.parsed), (1, 1, 3));
    }

    #[test]
    fn pending_requests_expire_and_are_capped() {
        let mut t = VuzeDht::new(VuzeDhtConfig {
            max_pending: 4,
            ..Default::default()
        });
        feed(&mut t, &request(D4, 0));
        feed(&mut t, &reply(&d5(), 61));
        let s = t.stats();
        assert_eq!((s.matched, s.unmatched, s.pending.expired), (0, 1, 1));
        for i in 0..10u8 {
            let mut q = unhex(D4);
            q[15] = i;
            feed(&mut t, &datagram(REQUESTER, RESPONDER, 100, &q));
        }
        assert_eq!((t.stats().pending.len, t.stats().pending.evicted), (4, 6));
        t.expire(Timestamp(1_000 * 1_000_000_000));
        assert_eq!(t.stats().pending.len, 0);
        // Requests without a reply (DATA) are not remembered.
        let mut data = unhex(D4);
        data[11] = 0x0b;
        feed(&mut t, &datagram(REQUESTER, RESPONDER, 1_000, &data));
        assert_eq!(t.stats().pending.len, 0);
        assert_eq!(t.stats().requests, 12);
    }

    #[test]
    fn ipv6_originator_and_trailing_bytes() {
        // D4 with a 16-byte originator address (offsets after 23 shift by 12) and 2 bytes
        // after max_values.
        let d4 = unhex(D4);
        let mut v = d4[..23].to_vec();
        v.extend_from_slice(&unhex("10 20010db8000000000000000000000063 2c09"));
        v.extend_from_slice(&d4[30..]);
        v.extend_from_slice(&[0xaa, 0xbb]);
        let q = parse_request(&v).unwrap();
        assert_eq!(q.header.originator, "[2001:db8::63]:11273".parse().unwrap());
        assert_eq!(q.header.instance, 0x1122_3344);
        assert_eq!((q.header.flags, q.header.flags2), (Some(0), Some(0)));
        assert_eq!(q.trailing, 2);
        let mut t = VuzeDht::new(VuzeDhtConfig::default());
        feed(&mut t, &datagram(REQUESTER, RESPONDER, 0, &v));
        assert_eq!(t.stats().trailing_bytes, 1);
    }

    #[test]
    fn shape_check_follows_f5() {
        for v in [unhex(D1), unhex(D2), unhex(D3), unhex(D4), d5()] {
            assert!(looks_like_vuze(&v));
        }
        let d1 = unhex(D1);
        assert!(!looks_like_vuze(&d1[..41]));
        assert!(!looks_like_vuze(&unhex(D3)[..25]));
        // BEP 15 connect request and responses, KRPC, uTP SYN.
        for other in [
            unhex("0000041727101980 00000000 12345678 00000000000000000000000000000000000000"),
            unhex("00000001 12345678 0000070800000005000000030a0000011ae1 000000000000"),
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe".to_vec(),
            unhex("4100530210eeb2f0000000000000000000e7f5000000000000000000000000000000"),
        ] {
            assert!(!looks_like_vuze(&other), "{other:02x?}");
        }
    }

    #[test]
    fn other_channels_captures_hold_no_vuze_shape() {
        // CATALOG.md: no Vuze DHT traffic in any shared capture, so every match would be a
        // false positive (a datagram another channel, or nobody, should read).
        let mut datagrams = 0;
        let mut f5_only = 0;
        for rel in [
            "ntop-nDPI/bittorrent_transmission.pcapng",
            "terezaburianova-VUT-PDS/small.pcap",
            "goncalo-rodrigues-360BitScoping/small_torrent.pcap",
            "goncalo-rodrigues-360BitScoping/model_streams__in_the_middle__MERGED.pcap",
            "goncalo-rodrigues-360BitScoping/model_streams__6.93k__MERGED.pcap",
            "goncalo-rodrigues-360BitScoping/model_streams__2_torrents-11.3k_each__MERGED.pcap",
            "ntop-nDPI/bittorrent_utp.pcap",
            "ntop-nDPI/bt_search.pcap",
            "ntop-nDPI/gnutella.pcap",
            "ntop-nDPI/wechat.pcap",
            "ntop-nDPI/teams.pcap",
            "ntop-nDPI/alexa-app.pcapng",
            "ntop-nDPI/ethereum.pcap",
            "ntop-nDPI/lru_ipv6_caches.pcapng",
            "spaiter-BitTorrentBlocker/torrent-dht.pcap",
            "OISF-suricata-verify/bittorrent-dht/input.pcap",
            "OISF-suricata-verify/tls-subjectaltname/input.pcap",
            "cisco-mercury/bittorrent.pcap",
            "arkime-arkime/bt-udp.pcap",
            "markofu-pcaps/UDP_SCAN.pcap",
            "esnet-security-curated-pcaps/udp_0_1000_20190821.pcap",
            "stratosphereips-StratosphereLinuxIPS/test7-malicious.pcap",
            "markofu-pcaps/xscan_capture.pcap",
        ] {
            for d in udp_datagrams(rel) {
                datagrams += 1;
                assert!(!looks_like_vuze(&d.head), "{rel}: {d:?}");
                assert!(parse(&d.head).is_err(), "{rel}: {d:?}");
                // F5 alone, without the version byte (reported, not asserted).
                let h = &d.head;
                let be32 = |o: usize| {
                    h.get(o..o + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                };
                let req = h.len() >= 42
                    && h[0] & 0x80 != 0
                    && be32(8).is_some_and(|a| (1024..=1039).contains(&a));
                let rep = h.len() >= 26
                    && h[8] & 0x80 != 0
                    && be32(0).is_some_and(|a| {
                        [1025, 1027, 1029, 1031, 1032, 1033, 1037, 1039].contains(&a)
                    });
                f5_only += u64::from(req || rep);
            }
        }
        assert!(datagrams > 10_000, "{datagrams}");
        eprintln!("{datagrams} datagrams, 0 Vuze-shaped; F5 without the version test: {f5_only}");
    }

    #[test]
    fn through_coordination() {
        use crate::bt::Coordination;
        let mut c = Coordination::default();
        let mut out = Vec::new();
        for d in [request(D4, 0), reply(&d5(), 1)] {
            let (ev, udp) = d.event();
            c.on_udp(&ev, &udp, &mut out);
        }
        assert_eq!(targets(&out, PeerTransport::Tcp), SPEC_TCP);
        let s = c.stats();
        assert_eq!((s.vuze_dht.counts.seen, s.vuze_dht.matched), (2, 1));
        assert_eq!(
            s.dht.counts.seen + s.udp_tracker.counts.seen + s.utp.counts.seen,
            0
        );
        assert_eq!(s.lsd.counts.seen, 0);
    }
}
