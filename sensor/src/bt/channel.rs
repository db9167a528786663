//! What every coordination channel is to the rest of the sensor.
//!
//! A channel (Mainline DHT, UDP tracker, uTP, ...) is one module under `bt/` that implements
//! [`Channel`] and is listed once in [`super::registry`]. The engine, `/metrics`,
//! `sensor peers --stats` and the README's counter list all iterate over the registered
//! channels, so adding one touches nothing else. Parsers stay pure functions in each module;
//! the `Channel` impl is the stateful part: its bounded tables, its counts and its handler.

use std::any::Any;
use std::fmt;
use std::net::IpAddr;

use super::stream::{StreamClass, StreamEvent};
use super::{ChannelCounts, TableStats};
use crate::event::{PacketEvent, UdpDatagram};
use crate::predict::{PredictedPeer, RetractedPeer};
use crate::time::Timestamp;

/// Where a channel puts what it learnt from one message.
#[derive(Debug)]
pub struct Learnt<'a> {
    /// Peers announced to a host: the connections it is expected to attempt.
    pub predictions: &'a mut Vec<PredictedPeer>,
    /// Announcements withdrawn (a PEX `dropped` entry).
    pub retracted: &'a mut Vec<RetractedPeer>,
}

/// What one UDP datagram showed about its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// Spoke a BitTorrent protocol in a way only a client does (a KRPC message, a BEP 15
    /// connect request, a valid uTP SYN, a decoded Vuze DHT message): LSD counts it as a member
    /// of its segment.
    BitTorrent,
    /// Nothing that singles it out.
    Unknown,
}

/// One coordination channel: a name, a shape check, a message handler, counts and bounded
/// tables with expiry.
pub trait Channel: fmt::Debug + Send + Any {
    /// The channel's name in logs and in `peers --stats` (also its first counter set).
    fn name(&self) -> &'static str;

    /// Whether this channel reads `udp` (a few byte comparisons). Registered channels are
    /// asked in registry order and the first that claims a datagram reads it.
    fn claims(&self, _ev: &PacketEvent<'_>, _udp: &UdpDatagram<'_>) -> bool {
        false
    }

    /// Reads a datagram this channel claimed.
    fn on_udp(
        &mut self,
        _ev: &PacketEvent<'_>,
        _udp: &UdpDatagram<'_>,
        _out: &mut Learnt<'_>,
    ) -> Sender {
        Sender::Unknown
    }

    /// The TCP streams this channel reads, as the pre-filter classified them.
    fn stream_class(&self) -> Option<StreamClass> {
        None
    }

    /// Reads an event of a stream of [`Channel::stream_class`].
    fn on_stream(&mut self, _event: &StreamEvent<'_>, _out: &mut Learnt<'_>) {}

    /// Another channel showed `host` to be a BitTorrent client.
    fn on_bittorrent_host(&mut self, _host: IpAddr, _now: Timestamp, _out: &mut Learnt<'_>) {}

    /// Drops state that has outlived its TTL.
    fn expire(&mut self, _now: Timestamp) {}

    /// Message counts, under one name each (a channel may count several message families,
    /// e.g. the peer wire's extended handshakes and its PEX messages).
    fn counts(&self, f: &mut dyn FnMut(&'static str, &ChannelCounts));

    /// What the channel read but did not use, by list and reason: entries of a peer list that
    /// were malformed, unusable, the learner itself, over the per-message cap or past the snap
    /// length, and messages skipped whole. Nothing a channel drops is silent.
    fn drops(&self, _f: &mut dyn FnMut(&'static str, &'static str, u64)) {}

    /// The channel's bounded tables, by name.
    fn tables(&self, _f: &mut dyn FnMut(&'static str, TableStats)) {}

    /// Every counter the channel keeps, for `peers --stats --json` and the run summary.
    fn stats_json(&self) -> serde_json::Value;

    /// A one-line summary for `peers --stats` beyond the message counts, if any.
    fn summary(&self) -> Option<String> {
        None
    }
}

impl dyn Channel {
    /// Typed access to one channel, for its own statistics.
    pub fn downcast_ref<C: Channel>(&self) -> Option<&C> {
        (self as &dyn Any).downcast_ref()
    }
}
