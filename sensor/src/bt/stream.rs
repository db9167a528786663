//! Reassembled TCP byte streams for the channels carried over TCP (HTTP tracker, peer wire).
//!
//! The pre-filter forwards the payload of flows it marked (a `GET` carrying `info_hash=`, a
//! `0x13 "BitTorrent protocol"` handshake). This module orders each direction's segments by
//! sequence number and hands the channels in-order [`StreamChunk`]s; whatever it could not
//! deliver (never captured, cut by the snap length, waited for too long) is announced with
//! `gap` so a parser resynchronises instead of misreading.

use std::net::SocketAddr;

use crate::event::Timestamp;

/// One TCP connection, by its initiator (`client`, the side that sent the SYN or, for a flow
/// first seen mid-session, the side whose payload marked it) and its responder (`server`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Which way bytes travel on a [`ConnKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    ToServer,
    ToClient,
}

impl Dir {
    pub fn reverse(self) -> Self {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

impl ConnKey {
    /// (sender, receiver) of bytes travelling `dir`.
    pub fn endpoints(&self, dir: Dir) -> (SocketAddr, SocketAddr) {
        match dir {
            Dir::ToServer => (self.client, self.server),
            Dir::ToClient => (self.server, self.client),
        }
    }
}

/// In-order bytes of one direction of a connection.
#[derive(Clone, Copy, Debug)]
pub struct StreamChunk<'a> {
    /// Capture time of the segment that completed this chunk.
    pub ts: Timestamp,
    pub conn: ConnKey,
    pub dir: Dir,
    /// Bytes of this direction were lost before `data`: the parser must drop any partial
    /// message and resynchronise.
    pub gap: bool,
    pub data: &'a [u8],
}
