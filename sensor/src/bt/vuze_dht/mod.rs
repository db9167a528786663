//! Azureus / Vuze / BiglyBT DHT: which peers and DHT contacts a host learns from the
//! replies to its FIND_VALUE and FIND_NODE requests.
//!
//! Framing (BiglyBT `PRUDPPacketHandlerSupport`, "all connection ids must have their MSB
//! set"): a request opens with an 8-byte connection id whose most significant bit is
//! set, then its action (1024..1039) and transaction id; a reply opens with its action (MSB
//! clear), then the request's transaction id and connection id. Everything after the protocol
//! version byte depends on that version (BiglyBT `DHTTransportUDP` `PROTOCOL_VERSION_*`, read
//! by each packet class's `serialise`/`deserialise`).
//!
//! Versions. Current BiglyBT drops messages below version 51 (`getMinimumProtocolVersion`), so
//! a node would not act on them and by default neither do we: they are counted `old_version`
//! ([`VuzeDhtConfig::min_version`]). The parsers themselves decode versions 15 to 127, field by
//! field as BiglyBT's `deserialise` code gates them, so the legacy v50 test vectors (D1..D3)
//! decode and a lower
//! `min_version` acts on them: from 15 (GENERIC_NETPOS) on, every version-dependent field is in
//! the tables (below 15 network positions have another layout, and below 9 the originator
//! version trails the body); the version is a Java signed byte, so 128 and above are negative
//! and below any minimum. Versions above 55 are read with the 55 layout.
//!
//! Predictions (BiglyBT `DHTTrackerPlugin` reads the values it looked up): the learner is the requester, i.e. the destination of the reply.
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

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::channel::{Learnt, Sender};
use super::{unfit, Bounded, ChannelCounts, EntryCounts, Fairness, TableStats};
use crate::event::{PacketEvent, Timestamp, UdpDatagram};
use crate::predict::{Channel, PeerTransport, PredictedPeer};

mod parser;
mod peer_value;

pub use parser::{
    looks_like_vuze, parse, parse_reply, parse_request, Action, Contact, Contacts, FindNodeReply,
    FindValueReply, FindValueRequest, FindValueResult, Message, NetPosition, NetPositions, Reject,
    Reply, ReplyBody, ReplyHeader, Request, RequestBody, RequestHeader, TransportValue, Values,
    MAX_KEY_LEN, MAX_VALUE_LEN, MIN_REPLY_LEN, MIN_REQUEST_LEN, NEWEST_PARSED_VERSION,
    OLDEST_PARSED_VERSION,
};
pub use peer_value::{parse_peer_value, PeerValue};

/// Oldest version current BiglyBT accepts (MIN_AZ = MIN_AZ_CVS = MIN_BIGLYBT), the default of
/// [`VuzeDhtConfig::min_version`].
pub const MIN_ACCEPTED_VERSION: u8 = 51;
/// Endpoints read from one reply (values and contacts together).
pub const MAX_ENTRIES: usize = 256;

#[derive(Clone, Debug)]
pub struct VuzeDhtConfig {
    /// Requests awaiting a reply, at most.
    pub max_pending: usize,
    /// How long a request waits for its reply (BiglyBT gives up after seconds).
    pub pending_ttl: Duration,
    /// How long a request waits before a full table may drop it for a new one (fair shares:
    /// see `bt::bounded`).
    pub answer_deadline: Duration,
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
            pending_ttl: Duration::from_mins(1),
            answer_deadline: Duration::from_secs(10),
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
            pending: Bounded::fair(
                config.max_pending,
                config.pending_ttl,
                Fairness {
                    deadline: config.answer_deadline,
                    // The requesting host, spoofed or not.
                    owner: |k: &RequestKey, _| k.0.ip(),
                    answered: |_| false,
                },
            ),
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
            self.pending.vouch(ev.dst.ip(), ev.ts);
        } else {
            self.pending.answer(&key, ev.ts);
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
        let own = answered.map(|p| p.own);
        let decoded = values.map_or(0, |v| self.predict_values(ev, v, own, out));
        if let Some(contacts) = r.contacts() {
            self.predict_contacts(ev, contacts, own, decoded, out);
        }
        Ok(())
    }

    /// Peers of the BitTorrent registrations among `values`, for the learner (the reply's
    /// destination) over TCP and UDP. Returns how many values were read (they count against
    /// the contact budget).
    fn predict_values(
        &mut self,
        ev: &PacketEvent<'_>,
        values: Values<'_>,
        own: Option<IpAddr>,
        out: &mut Vec<PredictedPeer>,
    ) -> usize {
        let learner = ev.dst.ip();
        let max = self.config.max_entries;
        let mut vc = EntryCounts {
            capped: values.len().saturating_sub(max) as u64,
            ..Default::default()
        };
        let start = out.len();
        let mut read = 0;
        for v in values.iter().take(max) {
            read += 1;
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
            out.push(prediction(ev, tcp, PeerTransport::Tcp));
            // Same address: only the port (the originator's, when implied) can be 0.
            if udp.port() != 0 {
                out.push(prediction(ev, udp, PeerTransport::Udp));
            }
        }
        self.stats.predicted_peers += (out.len() - start) as u64;
        self.stats.values.add(&vc);
        read
    }

    /// DHT contacts the learner will query over UDP, within what is left of
    /// [`VuzeDhtConfig::max_entries`] after `values_read`.
    fn predict_contacts(
        &mut self,
        ev: &PacketEvent<'_>,
        contacts: Contacts<'_>,
        own: Option<IpAddr>,
        values_read: usize,
        out: &mut Vec<PredictedPeer>,
    ) {
        let learner = ev.dst.ip();
        let budget = self.config.max_entries.saturating_sub(values_read);
        let mut cc = EntryCounts {
            capped: contacts.len().saturating_sub(budget) as u64,
            ..Default::default()
        };
        let start = out.len();
        for c in contacts.iter().take(budget) {
            cc.decoded += 1;
            match unfit(c.addr, learner, own) {
                Some(why) => cc.count_unfit(why),
                None => out.push(prediction(ev, c.addr, PeerTransport::Udp)),
            }
        }
        self.stats.predicted_contacts += (out.len() - start) as u64;
        self.stats.contacts.add(&cc);
    }
}

/// A peer or contact for the learner of a reply: its destination.
fn prediction(ev: &PacketEvent<'_>, peer: SocketAddr, transport: PeerTransport) -> PredictedPeer {
    PredictedPeer {
        ts: ev.ts,
        host: ev.dst.ip(),
        peer,
        transport,
        channel: Channel::AzureusDht,
    }
}

impl super::channel::Channel for VuzeDht {
    fn name(&self) -> &'static str {
        "vuze_dht"
    }

    fn claims(&self, _ev: &PacketEvent<'_>, udp: &UdpDatagram<'_>) -> bool {
        looks_like_vuze(udp.head)
    }

    /// A message that decoded at an accepted version: only Vuze/BiglyBT clients speak it.
    fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Learnt<'_>,
    ) -> Sender {
        if VuzeDht::on_udp(self, ev, udp, out.predictions) {
            Sender::BitTorrent
        } else {
            Sender::Unknown
        }
    }

    fn expire(&mut self, now: Timestamp) {
        VuzeDht::expire(self, now);
    }

    fn drops(&self, f: &mut dyn FnMut(&'static str, &'static str, u64)) {
        for (list, e) in [
            ("values", &self.stats.values),
            ("contacts", &self.stats.contacts),
        ] {
            for (reason, n) in e.drops() {
                f(list, reason, n);
            }
        }
        f("values", "not_a_torrent", self.stats.non_torrent_values);
        for (reason, n) in self.pending.fair_stats().drops() {
            f("requests", reason, n);
        }
    }

    fn counts(&self, f: &mut dyn FnMut(&'static str, &ChannelCounts)) {
        f("vuze_dht", &self.stats.counts);
    }

    fn tables(&self, f: &mut dyn FnMut(&'static str, TableStats)) {
        f("vuze_dht_requests", self.pending.stats());
    }

    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).expect("counters serialize")
    }
}

#[cfg(test)]
mod tests;
