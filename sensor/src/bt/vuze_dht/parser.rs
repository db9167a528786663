//! Vuze DHT message parsing: pure functions over a datagram's bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bt::wire::{self, Reader, Truncated};

/// Version range the parsers decode (see the module docs).
pub const OLDEST_PARSED_VERSION: u8 = 15;
pub const NEWEST_PARSED_VERSION: u8 = 127;
/// Longest FIND_VALUE key (`DHTUDPPacketRequestFindValue`).
pub const MAX_KEY_LEN: usize = 64;
/// Longest value (`DHT.MAX_VALUE_SIZE`).
pub const MAX_VALUE_LEN: usize = 512;
/// Shortest request and reply headers (a v9..50 request with an IPv4 originator, a reply at
/// v53).
pub const MIN_REQUEST_LEN: usize = 42;
pub const MIN_REPLY_LEN: usize = 26;

// Protocol versions that change the layout within the parsed range (BiglyBT
// `DHTTransportUDP.PROTOCOL_VERSION_*`); fields gated
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

/// The packet types by code (BiglyBT `DHTUDPPacketHelper`: from 1024, so that they share the
/// port with the UDP tracker's actions 0..3).
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
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
    /// Parsed, but below [`super::VuzeDhtConfig::min_version`]: current clients drop it.
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
        self.into()
    }
}

/// A DHT node: protocol version and UDP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    pub version: u8,
    pub addr: SocketAddr,
}

impl From<Truncated> for Reject {
    fn from(_: Truncated) -> Self {
        Reject::Truncated
    }
}

/// Java `readBoolean`: any non-zero byte is true.
fn boolean(r: &mut Reader<'_>) -> Result<bool, Reject> {
    Ok(r.u8()? != 0)
}

fn opt_u8(r: &mut Reader<'_>, present: bool) -> Result<Option<u8>, Reject> {
    if present {
        Ok(Some(r.u8()?))
    } else {
        Ok(None)
    }
}

/// `u8 len | addr | be16 port`; any length but 4 or 16 fails the packet in BiglyBT.
fn address(r: &mut Reader<'_>) -> Result<SocketAddr, Reject> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(*r.array::<4>()?)),
        16 => IpAddr::V6(Ipv6Addr::from(*r.array::<16>()?)),
        _ => return Err(Reject::BadAddress),
    };
    Ok(SocketAddr::new(ip, r.be16()?))
}

fn contact(r: &mut Reader<'_>) -> Result<Contact, Reject> {
    if r.u8()? != CT_UDP {
        return Err(Reject::BadContactType);
    }
    let version = r.u8()?;
    let addr = address(r)?;
    Ok(Contact { version, addr })
}

fn value<'a>(r: &mut Reader<'a>, v: u8) -> Result<TransportValue<'a>, Reject> {
    let version = r.be32()?;
    let created_ms = r.be64()?;
    let len = usize::from(r.be16()?);
    if len > MAX_VALUE_LEN {
        return Err(Reject::TooLong);
    }
    let bytes = r.take(len)?;
    let originator = contact(r)?;
    let flags = r.u8()?;
    let life_hours = opt_u8(r, v >= V_LONGER_LIFE)?;
    let replication_control = opt_u8(r, v >= V_REPLICATION_CONTROL)?;
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

/// One network coordinate: `u8 type, u8 size, data`.
fn position<'a>(r: &mut Reader<'a>) -> Result<NetPosition<'a>, Reject> {
    let kind = r.u8()?;
    let size = usize::from(r.u8()?);
    Ok(NetPosition {
        kind,
        data: r.take(size)?,
    })
}

/// A counted list: checks the count against the bytes left, reads every entry once (so the
/// whole packet is validated) and keeps the raw span for lazy iteration.
fn list<'a, T>(
    r: &mut Reader<'a>,
    count: usize,
    min_size: usize,
    mut entry: impl FnMut(&mut Reader<'a>) -> Result<T, Reject>,
) -> Result<&'a [u8], Reject> {
    if count.saturating_mul(min_size) > r.remaining() {
        return Err(Reject::BadCount);
    }
    let start = r.rest();
    for _ in 0..count {
        entry(r)?;
    }
    Ok(&start[..start.len() - r.remaining()])
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
        let raw = list(r, usize::from(count), CONTACT_MIN, contact)?;
        Ok(Self { count, raw })
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Contact> + 'a {
        let mut r = Reader::new(self.raw);
        (0..self.count).map_while(move |_| contact(&mut r).ok())
    }
}

/// One stored value as a reply carries it (BiglyBT `DHTUDPUtils.serialiseTransportValue`).
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
        let raw = list(r, usize::from(count), VALUE_MIN, |r| value(r, version))?;
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
        let mut r = Reader::new(self.raw);
        let v = self.version;
        (0..self.count).map_while(move |_| value(&mut r, v).ok())
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
        let mut r = Reader::new(self.data);
        let mut c = [0f32; 4];
        for f in &mut c {
            *f = f32::from_bits(r.be32().ok()?);
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
        let raw = list(r, usize::from(count), 2, position)?;
        Ok(Self { count, raw })
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = NetPosition<'a>> + 'a {
        let mut r = Reader::new(self.raw);
        (0..self.count).map_while(move |_| position(&mut r).ok())
    }
}

/// Request header (BiglyBT `DHTUDPPacketRequest` after `PRUDPPacketRequest`'s connection id,
/// action and transaction id).
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

/// Reply header (BiglyBT `DHTUDPPacketReply` after `PRUDPPacketReply`'s action, transaction id
/// and echoed connection id).
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

/// Decodes a request or a reply, told apart by the first byte's MSB (the framing in the
/// module docs). Pure and bounded:
/// one pass over `payload`, no allocation.
pub fn parse(payload: &[u8]) -> Result<Message<'_>, Reject> {
    match payload.first() {
        Some(b) if b & 0x80 != 0 => parse_request(payload).map(Message::Request),
        _ => parse_reply(payload).map(Message::Reply),
    }
}

pub fn parse_request(payload: &[u8]) -> Result<Request<'_>, Reject> {
    let mut r = Reader::new(payload);
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
    let originator = address(&mut r)?;
    let instance = r.be32()?;
    let time_ms = r.be64()?;
    let flags = opt_u8(&mut r, version >= V_PACKET_FLAGS)?;
    let flags2 = opt_u8(&mut r, version >= V_PACKET_FLAGS2)?;
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
        RequestBody::Other(r.take(r.remaining())?)
    };
    Ok(Request {
        header,
        body,
        trailing: r.remaining(),
    })
}

pub fn parse_reply(payload: &[u8]) -> Result<Reply<'_>, Reject> {
    let mut r = Reader::new(payload);
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
    let flags = opt_u8(&mut r, version >= V_PACKET_FLAGS)?;
    let flags2 = opt_u8(&mut r, version >= V_PACKET_FLAGS2)?;
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
            let has_continuation = boolean(&mut r)?;
            let result = if boolean(&mut r)? {
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
        _ => ReplyBody::Other(r.take(r.remaining())?),
    };
    Ok(Reply {
        header,
        body,
        trailing: r.remaining(),
    })
}

/// Cheap test before parsing, the framing as libprotoident's `match_vuze_dht_request` and
/// `match_vuze_dht_reply` check it (a request: MSB-set first byte, 42+ bytes, action
/// 1024..1039 at offset 8; a reply: a reply action at offset 0, 26+ bytes, MSB-set connection
/// id at offset 8), plus the protocol version at offset 16 (in both directions) within the
/// parsed range, which keeps out e.g. DNS answers whose counts happen to read as an action.
pub fn looks_like_vuze(head: &[u8]) -> bool {
    let shape = if head.first().is_some_and(|b| b & 0x80 != 0) {
        head.len() >= MIN_REQUEST_LEN
            && wire::be32_at(head, 8).is_some_and(|a| (1024..=1039).contains(&a))
    } else {
        head.len() >= MIN_REPLY_LEN
            && head.get(8).is_some_and(|b| b & 0x80 != 0)
            && wire::be32_at(head, 0)
                .and_then(Action::from_code)
                .is_some_and(|a| !a.is_request())
    };
    shape && head.get(16).is_some_and(|&v| check_version(v).is_ok())
}
