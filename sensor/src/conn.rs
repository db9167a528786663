//! Connection outcomes in packet time: Bro 1.5's view of a TCP handshake, rebuilt from the SYN,
//! SYN-ACK, RST and FIN segments the pre-filter forwards.
//!
//! Each outcome is one of the Bro events whose handlers in Bro 1.5 `policy/scan.bro` call
//! `Scan::check_scan`, with its connection state (Bro 1.5 `policy/conn.bro` `conn_state()`):
//!
//! | event | when | state | established | reverse |
//! |---|---|---|---|---|
//! | attempt | `attempt_delay` (5 s) after the SYN, the responder still silent | S0 | no | no |
//! | rejected | the responder answers the SYN with RST | REJ | no | no |
//! | established | the responder answers with SYN-ACK | S1 | yes | no |
//! | half_finished | the originator sends FIN, the responder still silent | SH | no | no |
//! | reset | the originator sends RST, the responder still silent | RSTOS0 | no | no |
//!
//! A SYN-ACK seen without its SYN starts a *reverse* connection: its receiver is recorded as the
//! originator (never seen, so inactive) and `reverse` is set, which makes the detector charge the
//! SYN-ACK's sender and lets backscatter accounting see it. Bro 2 documents this role flip; for
//! Bro 1.5 it is our reading of `check_scan(c, F, orig_state == TCP_INACTIVE)`, the only way that
//! call's `reverse` can be true for an attempt.
//!
//! Not modelled, because the pre-filter does not forward data segments: `partial_connection` and
//! `connection_pending` (mid-stream connections). A lone RST or FIN creates no connection.
//!
//! Tables are bounded (`max_conns`; the oldest connection is evicted first) and idle connections
//! expire; both are counted.
//!
//! **A full table never erases an attempt in progress.** Evicting a connection whose opener is
//! still waiting for an answer (a SYN sent, the responder silent, its attempt not yet reported)
//! reports that attempt at once as what its timer would have reported, a failed attempt (S0,
//! `connection_attempt`), stamped with the eviction time: *earlier* than Bro, which waits
//! `attempt_delay` (5 s) after the SYN. An answer that arrives after the eviction finds no
//! connection: a SYN-ACK then starts a reverse connection, a RST is ignored. So under a flood
//! that overflows the table a scanner's SYNs still count against it, as they would have in
//! Bro, a little early and possibly once more for a late answer, rather than vanish; such
//! evictions are counted apart (`evicted_as_failed`). Evicted established or closed
//! connections hold no pending evidence and are only counted.
//!
//! Memory: one entry is a `HashMap` slot (key 68 B + value 24 B, 1 control byte, at most 7/8
//! full, capacity a power of two: 105–210 B) plus its place in the creation-order queue (88 B,
//! capacity a power of two: 88–176 B), about 200–390 B in all; see [`ConnTracker::ENTRY_BYTES`].
//! A connection still active when its idle timeout first comes up also gets an item in the
//! recheck heap (88 B), so idle expiry visits only the connections that are due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::detect::{ConnState, ScanCheck, Service, Uid};
use crate::event::{IcmpUnreachable, PacketEvent, TcpFlags, TcpSegment, Timestamp, Transport};
use crate::time;

/// How often idle connections are swept, like Bro's `table_expire_interval`.
const SWEEP_INTERVAL: time::Duration = time::Duration::from_secs(10);

/// Tunables of the tracker.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// Bro's `tcp_attempt_delay`: silence after a SYN before the attempt counts as failed.
    pub attempt_delay: Duration,
    /// Connections with no segment for this long are forgotten.
    pub idle_timeout: Duration,
    /// Most connections tracked at once; beyond it the oldest is evicted.
    pub max_conns: usize,
    /// Memory budget of the table: at most `max_bytes / ConnTracker::ENTRY_BYTES` connections
    /// (whichever of the two caps is lower applies).
    pub max_bytes: usize,
    /// Report every UDP datagram as Bro's `udp_request`/`udp_reply` (Bro 1.5 with `udp-common`).
    pub udp: bool,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            attempt_delay: Duration::from_secs(5),
            idle_timeout: Duration::from_mins(5),
            max_conns: 500_000,
            max_bytes: 96 << 20,
            udp: false,
        }
    }
}

/// Which Bro event an outcome stands for; `as_str` is the Bro event's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum BroEvent {
    #[strum(serialize = "connection_attempt")]
    Attempt,
    #[strum(serialize = "connection_rejected")]
    Rejected,
    #[strum(serialize = "connection_established")]
    Established,
    #[strum(serialize = "connection_half_finished")]
    HalfFinished,
    #[strum(serialize = "connection_reset")]
    Reset,
    UdpRequest,
    UdpReply,
    /// Not a Bro event: an ICMP unreachable answered the SYN. Counted like an attempt.
    IcmpUnreachable,
}

impl BroEvent {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One connection outcome: a `check_scan` call to make, with what it was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnOutcome {
    pub ts: Timestamp,
    /// As Bro records them (`c$id`): for a reverse connection, `orig` is the SYN-ACK's receiver.
    pub orig: SocketAddr,
    pub resp: SocketAddr,
    pub udp: bool,
    pub event: BroEvent,
    pub state: ConnState,
    pub established: bool,
    pub reverse: bool,
    /// The connection's uid (Zeek's `uid`): every outcome of one connection carries the same.
    pub uid: Uid,
}

impl ConnOutcome {
    /// The host that made the attempt (the one the detector charges).
    pub fn initiator(&self) -> SocketAddr {
        if self.reverse {
            self.resp
        } else {
            self.orig
        }
    }

    /// The host the attempt was made to.
    pub fn target(&self) -> SocketAddr {
        if self.reverse {
            self.orig
        } else {
            self.resp
        }
    }

    /// Whether this is a failed attempt (not established, not a UDP reply).
    pub fn failed(&self) -> bool {
        !self.established
    }

    pub fn scan_check(&self) -> ScanCheck {
        let service = |port| {
            if self.udp {
                Service::udp(port)
            } else {
                Service::tcp(port)
            }
        };
        ScanCheck {
            ts: self.ts,
            orig_h: self.orig.ip(),
            orig_p: service(self.orig.port()),
            resp_h: self.resp.ip(),
            resp_p: service(self.resp.port()),
            established: self.established,
            reverse: self.reverse,
            ftp_data: false,
        }
    }
}

/// Canonical key: the same for both directions.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
struct ConnKey {
    lo: SocketAddr,
    hi: SocketAddr,
    udp: bool,
}

impl ConnKey {
    fn new(a: SocketAddr, b: SocketAddr, udp: bool) -> Self {
        if a <= b {
            Self { lo: a, hi: b, udp }
        } else {
            Self { lo: b, hi: a, udp }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum End {
    Inactive,
    SynSent,
    SynAckSent,
    Closed,
    Reset,
}

/// One connection; its addresses are its key's (`orig_lo`: the originator is `key.lo`), so an
/// entry is 24 bytes.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Conn {
    orig_lo: bool,
    /// Created by a SYN-ACK without a SYN.
    reverse: bool,
    o: End,
    r: End,
    /// Incarnation, to tell a queued timer from a later connection on the same key; also the
    /// connection's uid. Saved, so that uids continue across a restart (logs appended to
    /// across restarts must not give two connections one uid).
    serial: u64,
    last: Timestamp,
    attempt_reported: bool,
}

impl Conn {
    /// (originator, responder) as Bro records them (`c$id`).
    fn ends(&self, key: &ConnKey) -> (SocketAddr, SocketAddr) {
        if self.orig_lo {
            (key.lo, key.hi)
        } else {
            (key.hi, key.lo)
        }
    }

    /// Whether the side that opened is still waiting and the other still silent, and the
    /// attempt not reported yet: what the attempt timer reports as S0.
    fn pending_attempt(&self) -> bool {
        let (opener, silent) = if self.reverse {
            (self.r, self.o)
        } else {
            (self.o, self.r)
        };
        !self.attempt_reported
            && silent == End::Inactive
            && matches!(opener, End::SynSent | End::SynAckSent)
    }
}

/// The uids of connections another worker reports (`--workers`): apart from the shared ones.
const FOREIGN_SERIAL: u64 = 1 << 63;

/// Rebuilds connection outcomes from forwarded segments.
#[derive(Debug)]
pub struct ConnTracker {
    config: ConnConfig,
    /// `config.attempt_delay` and `config.idle_timeout` in packet time.
    attempt_delay: time::Duration,
    idle_timeout: time::Duration,
    /// Keyed foldhash: the addresses come off the wire, so an attacker picks the keys.
    conns: HashMap<ConnKey, Conn, foldhash::fast::RandomState>,
    /// Every connection in creation order, `(created, key, serial)`: the eviction order, and
    /// (packet time only moves forward) the attempt-deadline and first idle-check order.
    /// Entries of connections gone since (serial mismatch) are skipped and compacted away.
    timers: VecDeque<(Timestamp, ConnKey, u64)>,
    /// How many entries at the front of `timers` have had their attempt timer run.
    fired: usize,
    /// How many entries at the front of `timers` have had their first idle check: their
    /// connection was gone, expired, or is in `recheck`.
    idle_checked: usize,
    /// Connections still active when their idle check came, `(last segment, serial, key)`,
    /// earliest first: checked again when that segment's idle timeout runs out. With the
    /// creation-ordered `timers`, a sweep visits only connections that are due, never the table.
    recheck: BinaryHeap<Reverse<(Timestamp, u64, ConnKey)>>,
    /// `min(max_conns, max_bytes / ENTRY_BYTES)`, at least 1.
    cap: usize,
    next_serial: u64,
    /// With `--workers N`: only connections whose originator this worker owns take a uid
    /// from the shared counter (see `crate::shard`).
    shard: Option<crate::shard::Shard>,
    foreign_serials: u64,
    last_sweep: Timestamp,
    now: Timestamp,
    /// Connections evicted because the table was full (those reported as failed included).
    pub evictions: u64,
    /// Of `evictions`, attempts still pending, reported as failed (S0) when evicted.
    pub evicted_as_failed: u64,
    /// Connections forgotten after `idle_timeout`.
    pub expired: u64,
}

impl ConnTracker {
    /// Bytes one tracked connection costs, at worst (see the module docs): both the map and
    /// the queue just past a doubling of their capacity. Measured: 292 B at 1 M pending SYNs
    /// (`cargo xtask bench`).
    pub const ENTRY_BYTES: usize = 390;

    pub fn new(config: ConnConfig) -> Self {
        Self {
            attempt_delay: config.attempt_delay.into(),
            idle_timeout: config.idle_timeout.into(),
            cap: config
                .max_conns
                .min(config.max_bytes / Self::ENTRY_BYTES)
                .max(1),
            config,
            conns: HashMap::default(),
            timers: VecDeque::new(),
            fired: 0,
            idle_checked: 0,
            recheck: BinaryHeap::new(),
            next_serial: 0,
            shard: None,
            foreign_serials: 0,
            last_sweep: Timestamp::ZERO,
            now: Timestamp::ZERO,
            evictions: 0,
            evicted_as_failed: 0,
            expired: 0,
        }
    }

    /// Most connections tracked at once (the lower of the count and memory caps).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Connections currently tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Feeds one event; outcomes it completes (including attempts whose delay ran out before
    /// this event's time) are appended to `out`.
    pub fn on_event(&mut self, ev: &PacketEvent<'_>, out: &mut Vec<ConnOutcome>) {
        self.advance(ev.ts, out);
        match ev.transport {
            // Payload of a marked flow: outcomes come from control segments alone, so that
            // marking (which only BitTorrent flows get) cannot change what the detector sees.
            Transport::Tcp(seg) if seg.is_data_only() => {}
            Transport::Tcp(seg) => self.on_tcp(ev, &seg, out),
            Transport::Icmp(icmp) => self.on_icmp(ev.ts, &icmp, out),
            Transport::Udp(_) if self.config.udp => self.on_udp(ev, out),
            Transport::Udp(_) => {}
        }
    }

    /// Moves packet time to `now`: fires due attempt timers and, every 10 s, forgets idle
    /// connections.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<ConnOutcome>) {
        // Packet time never runs backwards here, even if a merged capture does.
        self.now = self.now.max(now);
        let delay = self.attempt_delay;
        while let Some(&(created, key, serial)) = self.timers.get(self.fired) {
            if created + delay > self.now {
                break;
            }
            self.fired += 1;
            self.fire_attempt(key, serial, created + delay, out);
        }
        if self.now - self.last_sweep >= SWEEP_INTERVAL {
            self.last_sweep = self.now;
            self.sweep();
        }
    }

    /// Forgets the connections idle for longer than `idle_timeout`, exactly those a pass over
    /// the whole table would, visiting only the due ones: a connection's `last` is never
    /// earlier than its creation, so those created more than `idle_timeout` ago (a prefix of
    /// `timers`) and those due in `recheck` are all that can have expired.
    fn sweep(&mut self) {
        let (idle, now) = (self.idle_timeout, self.now);
        let before = self.conns.len();
        while let Some(&(created, key, serial)) = self.timers.get(self.idle_checked) {
            if !created.expired(idle, now) {
                break;
            }
            self.idle_checked += 1;
            self.check_idle(key, serial);
        }
        while let Some(&Reverse((stamp, serial, key))) = self.recheck.peek() {
            if !stamp.expired(idle, now) {
                break;
            }
            self.recheck.pop();
            self.check_idle(key, serial);
        }
        self.expired += (before - self.conns.len()) as u64;
    }

    /// Forgets connection `key` (incarnation `serial`) if idle too long, or schedules its next
    /// check at its last segment's timeout.
    fn check_idle(&mut self, key: ConnKey, serial: u64) {
        let Some(c) = self.conns.get(&key).filter(|c| c.serial == serial) else {
            return; // gone already
        };
        if c.last.expired(self.idle_timeout, self.now) {
            self.conns.remove(&key);
        } else {
            self.recheck.push(Reverse((c.last, serial, key)));
        }
    }

    /// Drops the queue entries of connections no longer tracked.
    fn compact(&mut self) {
        let conns = &self.conns;
        let live = |(_, key, serial): &(Timestamp, ConnKey, u64)| {
            conns.get(key).is_some_and(|c| c.serial == *serial)
        };
        let fired = self.timers.range(..self.fired).filter(|e| live(e)).count();
        let idle_checked = self
            .timers
            .range(..self.idle_checked)
            .filter(|e| live(e))
            .count();
        self.timers.retain(live);
        self.fired = fired;
        self.idle_checked = idle_checked;
        if self.timers.capacity() > 4 * self.timers.len().max(1024) {
            self.timers.shrink_to(2 * self.timers.len());
        }
    }

    /// End of input. Bro expires every pending timer at termination, so SYNs still inside
    /// their delay become attempts too, stamped with the final packet time.
    pub fn finish(&mut self, now: Timestamp, out: &mut Vec<ConnOutcome>) {
        self.advance(now, out);
        while let Some(&(_, key, serial)) = self.timers.get(self.fired) {
            self.fired += 1;
            self.fire_attempt(key, serial, self.now, out);
        }
    }

    fn fire_attempt(
        &mut self,
        key: ConnKey,
        serial: u64,
        at: Timestamp,
        out: &mut Vec<ConnOutcome>,
    ) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        // The side that opened must still be waiting and the other still silent.
        if c.serial == serial && c.pending_attempt() {
            c.attempt_reported = true;
            out.push(outcome(
                c,
                &key,
                at,
                BroEvent::Attempt,
                ConnState::S0,
                false,
            ));
        }
    }

    fn insert(&mut self, key: ConnKey, conn: Conn, out: &mut Vec<ConnOutcome>) {
        while self.conns.len() >= self.cap {
            // Evict the oldest connection still tracked.
            let Some((_, old, serial)) = self.timers.pop_front() else {
                break;
            };
            self.fired = self.fired.saturating_sub(1);
            self.idle_checked = self.idle_checked.saturating_sub(1);
            if self.conns.get(&old).is_none_or(|c| c.serial != serial) {
                continue; // gone already
            }
            let c = self.conns.remove(&old).expect("checked above");
            self.evictions += 1;
            if c.pending_attempt() {
                // Its timer has not reported it yet: report it now (see the module docs).
                self.evicted_as_failed += 1;
                out.push(outcome(
                    &c,
                    &old,
                    self.now,
                    BroEvent::Attempt,
                    ConnState::S0,
                    false,
                ));
            }
        }
        self.timers.push_back((self.now, key, conn.serial));
        self.conns.insert(key, conn);
        if self.timers.len() > 2 * self.conns.len() + 1024 {
            self.compact();
        }
    }

    /// Makes this tracker one worker's (see `crate::shard`).
    pub fn set_shard(&mut self, shard: crate::shard::Shard) {
        self.shard = Some(shard);
    }

    /// Whether this worker opens connections originated by `orig`: a worker does not track
    /// another's TCP connections (their opening segments do not reach it; this holds it even
    /// if they did), so a flood at one of its hosts from spoofed sources costs it no entry.
    fn admits(&self, orig: SocketAddr) -> bool {
        self.shard.as_ref().is_none_or(|s| s.owns(orig.ip()))
    }

    fn new_conn(&mut self, key: &ConnKey, orig: SocketAddr, reverse: bool, o: End, r: End) -> Conn {
        let serial = match &self.shard {
            Some(s) if s.owns(orig.ip()) => s.next_serial(),
            Some(_) => {
                // A UDP flow another worker reports: a local number, never shown.
                self.foreign_serials += 1;
                self.foreign_serials | FOREIGN_SERIAL
            }
            None => self.next_serial + 1,
        };
        if serial & FOREIGN_SERIAL == 0 {
            self.next_serial = serial;
        }
        Conn {
            orig_lo: orig == key.lo,
            reverse,
            o,
            r,
            serial,
            last: self.now,
            attempt_reported: false,
        }
    }

    fn on_tcp(&mut self, ev: &PacketEvent<'_>, seg: &TcpSegment<'_>, out: &mut Vec<ConnOutcome>) {
        let key = ConnKey::new(ev.src, ev.dst, false);
        let ts = ev.ts.max(self.now);
        let flags = seg.flags;

        // A SYN on a key whose connection is over starts a new one (port reuse).
        if flags.syn() && !flags.rst() {
            if let Some(c) = self.conns.get(&key) {
                if matches!(c.o, End::Closed | End::Reset)
                    || matches!(c.r, End::Closed | End::Reset)
                {
                    self.conns.remove(&key);
                }
            }
        }

        let Some(c) = self.conns.get_mut(&key) else {
            if flags.rst() || !flags.syn() {
                return; // a lone RST or FIN: no connection (see module docs)
            }
            let orig = if flags.ack() { ev.dst } else { ev.src };
            if !self.admits(orig) {
                return;
            }
            let conn = if flags.ack() {
                // SYN-ACK without its SYN: a reverse connection.
                self.new_conn(&key, ev.dst, true, End::Inactive, End::SynAckSent)
            } else {
                self.new_conn(&key, ev.src, false, End::SynSent, End::Inactive)
            };
            self.insert(key, conn, out);
            return;
        };
        c.last = ts;
        let from_orig = ev.src == c.ends(&key).0;
        let result = step(c, from_orig, flags);
        if let Some((event, state, reverse_reject)) = result {
            let established = event == BroEvent::Established;
            let mut o = outcome(c, &key, ts, event, state, established);
            o.reverse = c.reverse || reverse_reject;
            out.push(o);
        }
    }

    /// An ICMP unreachable quoting the SYN of a connection still waiting for an answer makes
    /// that attempt fail now instead of after the delay. A quoted UDP request changes nothing:
    /// the request was counted when it was sent.
    fn on_icmp(&mut self, ts: Timestamp, icmp: &IcmpUnreachable, out: &mut Vec<ConnOutcome>) {
        if icmp.inner_udp {
            return;
        }
        let key = ConnKey::new(icmp.inner_src, icmp.inner_dst, false);
        let ts = ts.max(self.now);
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let (orig, resp) = c.ends(&key);
        let opener_is_quoted_src = if c.reverse { resp } else { orig } == icmp.inner_src;
        if opener_is_quoted_src && c.pending_attempt() {
            c.attempt_reported = true;
            c.last = ts;
            out.push(outcome(
                c,
                &key,
                ts,
                BroEvent::IcmpUnreachable,
                ConnState::S0,
                false,
            ));
        }
    }

    fn on_udp(&mut self, ev: &PacketEvent<'_>, out: &mut Vec<ConnOutcome>) {
        let key = ConnKey::new(ev.src, ev.dst, true);
        let ts = ev.ts.max(self.now);
        let (orig, resp, serial) = if let Some(c) = self.conns.get_mut(&key) {
            c.last = ts;
            let (orig, resp) = c.ends(&key);
            (orig, resp, c.serial)
        } else {
            let conn = self.new_conn(&key, ev.src, false, End::SynSent, End::Inactive);
            let serial = conn.serial;
            self.insert(key, conn, out);
            (ev.src, ev.dst, serial)
        };
        let request = ev.src == orig;
        out.push(ConnOutcome {
            ts,
            orig,
            resp,
            udp: true,
            event: if request {
                BroEvent::UdpRequest
            } else {
                BroEvent::UdpReply
            },
            state: ConnState::S0,
            established: !request,
            reverse: false,
            uid: Uid(serial),
        });
    }
}

/// Moves one side of `c` on a SYN-ACK, RST or FIN from the originator (`from_orig`) or the
/// responder, and returns the outcome it completes: `(event, state, reverse_reject)`.
/// One tracked connection as the state file (`crate::state`) keeps it: opaque outside this
/// module.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedConn {
    created: Timestamp,
    key: ConnKey,
    conn: Conn,
    /// Its attempt timer has run.
    fired: bool,
}

/// The tracker's clocks, for the state file.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedConnClock {
    now: Timestamp,
    last_sweep: Timestamp,
    /// The last serial given out: a restored tracker continues after it.
    next_serial: u64,
}

impl ConnTracker {
    /// Every tracked connection, oldest first, and the tracker's clocks, for the state file.
    pub fn export(&self) -> (SavedConnClock, Vec<SavedConn>) {
        let mut out = Vec::with_capacity(self.conns.len());
        for (i, &(created, key, serial)) in self.timers.iter().enumerate() {
            if let Some(c) = self.conns.get(&key).filter(|c| c.serial == serial) {
                out.push(SavedConn {
                    created,
                    key,
                    conn: Conn { ..*c },
                    fired: i < self.fired,
                });
            }
        }
        let clock = SavedConnClock {
            now: self.now,
            last_sweep: self.last_sweep,
            next_serial: self.next_serial,
        };
        (clock, out)
    }

    /// Puts back what [`ConnTracker::export`] gave, in its order, into a fresh tracker, under
    /// this tracker's cap (connections beyond it are dropped and counted as evicted).
    pub fn restore(&mut self, clock: SavedConnClock, conns: impl IntoIterator<Item = SavedConn>) {
        self.now = self.now.max(clock.now);
        self.last_sweep = self.last_sweep.max(clock.last_sweep);
        // Saved serials are unique and below `clock.next_serial`; a fresh tracker takes them
        // as they are, so restored connections keep their uids and new ones follow.
        let fresh = self.conns.is_empty();
        self.next_serial = self.next_serial.max(clock.next_serial);
        // Fired timers form a prefix of the creation order.
        let mut fired_prefix = self.timers.len() == self.fired;
        for SavedConn {
            created,
            key,
            mut conn,
            fired,
        } in conns
        {
            if self.conns.contains_key(&key) {
                continue;
            }
            if self.conns.len() >= self.cap {
                self.evictions += 1;
                continue;
            }
            if !fresh {
                self.next_serial += 1;
                conn.serial = self.next_serial;
            }
            self.timers.push_back((created, key, conn.serial));
            self.conns.insert(key, conn);
            fired_prefix &= fired;
            if fired_prefix {
                self.fired += 1;
            }
        }
    }
}

fn step(c: &mut Conn, from_orig: bool, flags: TcpFlags) -> Option<(BroEvent, ConnState, bool)> {
    let (me, other) = if from_orig { (c.o, c.r) } else { (c.r, c.o) };

    if flags.rst() {
        let r = match (from_orig, c.reverse) {
            // The responder refuses the SYN.
            (false, false) if other == End::SynSent && me == End::Inactive => {
                Some((BroEvent::Rejected, ConnState::REJ, false))
            }
            // The originator gives up before any answer.
            (true, false) if me == End::SynSent && other == End::Inactive => {
                Some((BroEvent::Reset, ConnState::RSTOS0, false))
            }
            // The receiver of a reverse SYN-ACK refuses it.
            (true, true) if me == End::Inactive && other == End::SynAckSent => {
                Some((BroEvent::Rejected, ConnState::REJ, true))
            }
            _ => None,
        };
        if from_orig {
            c.o = End::Reset;
        } else {
            c.r = End::Reset;
        }
        r
    } else if flags.syn() && flags.ack() {
        if !from_orig && !c.reverse && c.r == End::Inactive && c.o == End::SynSent {
            c.r = End::SynAckSent;
            Some((BroEvent::Established, ConnState::S1, false))
        } else {
            None
        }
    } else if flags.fin() {
        let r = (from_orig && !c.reverse && c.o == End::SynSent && c.r == End::Inactive)
            .then_some((BroEvent::HalfFinished, ConnState::SH, false));
        if from_orig {
            c.o = End::Closed;
        } else {
            c.r = End::Closed;
        }
        r
    } else {
        None // a retransmitted SYN
    }
}

fn outcome(
    c: &Conn,
    key: &ConnKey,
    ts: Timestamp,
    event: BroEvent,
    state: ConnState,
    established: bool,
) -> ConnOutcome {
    let (orig, resp) = c.ends(key);
    ConnOutcome {
        ts,
        orig,
        resp,
        udp: key.udp,
        event,
        state,
        established,
        reverse: c.reverse,
        uid: Uid(c.serial),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{TcpFlags, UdpDatagram};
    use sensor_ebpf::tcp_flag::*;

    const A: &str = "192.0.2.10:51413";
    const B: &str = "203.0.113.7:6881";

    fn seg(ts_ms: u64, src: &str, dst: &str, flags: u8) -> PacketEvent<'static> {
        PacketEvent {
            ts: Timestamp::from_secs(1_000) + time::Duration::from_millis(ts_ms),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            vlan_depth: 0,
            transport: Transport::Tcp(TcpSegment {
                flags: TcpFlags(flags),
                seq: 1,
                ack: 0,
                window: 1000,
                payload_len: 0,
                head: &[],
            }),
        }
    }

    fn run(events: &[PacketEvent<'_>], end_ms: u64) -> Vec<ConnOutcome> {
        let mut t = ConnTracker::new(ConnConfig::default());
        let mut out = Vec::new();
        for e in events {
            t.on_event(e, &mut out);
        }
        t.finish(
            Timestamp::from_secs(1_000) + time::Duration::from_millis(end_ms),
            &mut out,
        );
        out
    }

    fn summary(out: &[ConnOutcome]) -> Vec<(BroEvent, ConnState, bool, bool, u64)> {
        out.iter()
            .map(|o| {
                (
                    o.event,
                    o.state,
                    o.established,
                    o.reverse,
                    (o.ts - Timestamp::from_secs(1_000)).as_nanos() / 1_000_000,
                )
            })
            .collect()
    }

    #[test]
    fn unanswered_syn_is_an_attempt_after_five_seconds() {
        // Retransmissions at 1 s and 3 s do not restart the clock.
        let out = run(
            &[
                seg(0, A, B, SYN),
                seg(1000, A, B, SYN),
                seg(3000, A, B, SYN),
            ],
            10_000,
        );
        assert_eq!(
            summary(&out),
            [(BroEvent::Attempt, ConnState::S0, false, false, 5000)]
        );
        assert_eq!(out[0].initiator(), A.parse().unwrap());
        // Input that ends within the delay still reports it, at the end (Bro expires its
        // timers at termination).
        let out = run(&[seg(0, A, B, SYN)], 4_000);
        assert_eq!(
            summary(&out),
            [(BroEvent::Attempt, ConnState::S0, false, false, 4000)]
        );
    }

    #[test]
    fn refused_syn_is_rejected_at_once() {
        let out = run(&[seg(0, A, B, SYN), seg(40, B, A, RST | ACK)], 10_000);
        assert_eq!(
            summary(&out),
            [(BroEvent::Rejected, ConnState::REJ, false, false, 40)]
        );
    }

    #[test]
    fn late_refusal_counts_twice_as_in_bro() {
        let out = run(&[seg(0, A, B, SYN), seg(6000, B, A, RST | ACK)], 10_000);
        let events: Vec<_> = out.iter().map(|o| o.event).collect();
        assert_eq!(events, [BroEvent::Attempt, BroEvent::Rejected]);
    }

    #[test]
    fn syn_ack_establishes_and_later_close_adds_nothing() {
        let out = run(
            &[
                seg(0, A, B, SYN),
                seg(30, B, A, SYN | ACK),
                seg(2000, A, B, FIN | ACK),
                seg(2030, B, A, FIN | ACK),
            ],
            20_000,
        );
        assert_eq!(
            summary(&out),
            [(BroEvent::Established, ConnState::S1, true, false, 30)]
        );
    }

    #[test]
    fn nmap_syn_scan_open_port_is_established() {
        // SYN, SYN-ACK, then the scanner's RST: Bro raised connection_established already.
        let out = run(
            &[
                seg(0, A, B, SYN),
                seg(1, B, A, SYN | ACK),
                seg(2, A, B, RST),
            ],
            10_000,
        );
        assert_eq!(
            summary(&out),
            [(BroEvent::Established, ConnState::S1, true, false, 1)]
        );
    }

    #[test]
    fn originator_reset_and_half_finished() {
        let out = run(&[seg(0, A, B, SYN), seg(100, A, B, RST)], 10_000);
        assert_eq!(
            summary(&out),
            [(BroEvent::Reset, ConnState::RSTOS0, false, false, 100)]
        );
        let out = run(&[seg(0, A, B, SYN), seg(100, A, B, FIN)], 10_000);
        assert_eq!(
            summary(&out),
            [(BroEvent::HalfFinished, ConnState::SH, false, false, 100)]
        );
    }

    #[test]
    fn syn_ack_without_syn_is_a_reverse_connection() {
        let out = run(&[seg(0, B, A, SYN | ACK)], 10_000);
        assert_eq!(
            summary(&out),
            [(BroEvent::Attempt, ConnState::S0, false, true, 5000)]
        );
        // Bro's c$id: orig is the SYN-ACK's receiver; the detector charges the sender.
        assert_eq!(out[0].orig, A.parse().unwrap());
        assert_eq!(out[0].initiator(), B.parse().unwrap());
        let out = run(&[seg(0, B, A, SYN | ACK), seg(10, A, B, RST)], 10_000);
        assert_eq!(
            summary(&out),
            [(BroEvent::Rejected, ConnState::REJ, false, true, 10)]
        );
    }

    #[test]
    fn icmp_unreachable_fails_the_attempt_at_once() {
        let icmp = |ts_ms: u64, inner_src: &str, inner_dst: &str| PacketEvent {
            ts: Timestamp::from_secs(1_000) + time::Duration::from_millis(ts_ms),
            src: "198.51.100.1:0".parse().unwrap(),
            dst: "192.0.2.10:0".parse().unwrap(),
            vlan_depth: 0,
            transport: Transport::Icmp(IcmpUnreachable {
                icmp_type: 3,
                code: 1,
                inner_udp: false,
                inner_src: inner_src.parse().unwrap(),
                inner_dst: inner_dst.parse().unwrap(),
            }),
        };
        let out = run(&[seg(0, A, B, SYN), icmp(80, A, B)], 10_000);
        assert_eq!(
            summary(&out),
            [(BroEvent::IcmpUnreachable, ConnState::S0, false, false, 80)]
        );
        // Quoting a packet of no tracked connection, or the wrong direction: nothing.
        assert!(run(&[icmp(80, A, B)], 10_000).is_empty());
        let out = run(&[seg(0, A, B, SYN), icmp(80, B, A)], 10_000);
        assert_eq!(
            out[0].event,
            BroEvent::Attempt,
            "only the 5 s timer fails it"
        );
    }

    #[test]
    fn lone_rst_and_fin_make_no_connection() {
        assert!(run(&[seg(0, A, B, RST), seg(1, B, A, FIN | ACK)], 10_000).is_empty());
    }

    #[test]
    fn port_reuse_after_close_is_a_new_connection() {
        let out = run(
            &[
                seg(0, A, B, SYN),
                seg(10, B, A, RST | ACK),
                seg(20_000, A, B, SYN),
            ],
            30_000,
        );
        let events: Vec<_> = out
            .iter()
            .map(|o| {
                (
                    o.event,
                    (o.ts - Timestamp::from_secs(1_000)).as_nanos() / 1_000_000,
                )
            })
            .collect();
        assert_eq!(
            events,
            [(BroEvent::Rejected, 10), (BroEvent::Attempt, 25_000)]
        );
    }

    #[test]
    fn active_connections_outlive_their_first_idle_check() {
        // Idle timeout 5 min: a connection with a segment at 4 min is still there at 6 min and
        // goes once 5 min have passed since that segment, as a pass over the table would have it.
        let mut t = ConnTracker::new(ConnConfig::default());
        let mut out = Vec::new();
        let at = |ms: u64| Timestamp::from_secs(1_000) + time::Duration::from_millis(ms);
        t.on_event(&seg(0, A, B, SYN), &mut out);
        t.on_event(&seg(1, B, A, SYN | ACK), &mut out);
        t.on_event(&seg(0, A, "203.0.113.8:80", SYN), &mut out);
        t.on_event(&seg(240_000, A, B, FIN | ACK), &mut out);
        t.advance(at(360_000), &mut out);
        assert_eq!(
            (t.len(), t.expired),
            (1, 1),
            "the silent one went, the active one stays"
        );
        t.advance(at(540_000), &mut out);
        assert_eq!(t.len(), 1, "exactly 5 min after its last segment: not yet");
        t.advance(at(550_000), &mut out);
        assert!(t.is_empty());
        assert_eq!(t.expired, 2);
        // A new connection on the same key starts afresh; the old one's queued check is stale.
        t.on_event(&seg(560_000, A, B, SYN), &mut out);
        t.advance(at(600_000), &mut out);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn table_is_bounded_and_idle_connections_expire() {
        let mut t = ConnTracker::new(ConnConfig {
            max_conns: 10,
            ..ConnConfig::default()
        });
        let mut out = Vec::new();
        for i in 0..100u16 {
            let dst = format!("203.0.113.{}:{}", i % 250, 1000 + i);
            t.on_event(&seg(u64::from(i), A, &dst, SYN), &mut out);
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.evictions, 90);
        // Established, then silent for longer than the idle timeout.
        let mut t = ConnTracker::new(ConnConfig::default());
        t.on_event(&seg(0, A, B, SYN), &mut out);
        t.on_event(&seg(1, B, A, SYN | ACK), &mut out);
        t.advance(
            Timestamp::from_secs(1_000) + time::Duration::from_millis(400_000),
            &mut out,
        );
        assert!(t.is_empty());
        assert_eq!(t.expired, 1);
    }

    /// A full table reports the pending attempts it evicts as failed, at once, and nothing for
    /// connections that were answered: every SYN still yields exactly one outcome.
    #[test]
    fn evicted_pending_attempts_are_reported_as_failed() {
        let mut t = ConnTracker::new(ConnConfig {
            max_conns: 10,
            ..ConnConfig::default()
        });
        let mut out = Vec::new();
        // One answered connection first, then 100 unanswered SYNs within 100 ms.
        t.on_event(&seg(0, A, B, SYN), &mut out);
        t.on_event(&seg(1, B, A, SYN | ACK), &mut out);
        for i in 0..100u16 {
            let dst = format!("203.0.113.{}:{}", i % 250, 1000 + i);
            t.on_event(&seg(2 + u64::from(i), A, &dst, SYN), &mut out);
        }
        assert_eq!(t.len(), 10);
        assert_eq!((t.evictions, t.evicted_as_failed), (91, 90));
        assert_eq!(out[0].event, BroEvent::Established);
        let failed = &out[1..];
        assert_eq!(failed.len(), 90);
        for (o, port) in failed.iter().zip(1000u16..) {
            assert_eq!(
                (o.event, o.state, o.established),
                (BroEvent::Attempt, ConnState::S0, false)
            );
            assert_eq!(o.resp.port(), port, "oldest first");
            // Early: stamped with the time of the SYN that pushed it out, not 5 s after its own.
            assert!(o.ts < Timestamp::from_secs(1_001));
        }
        // The 10 left are reported by their timers as usual.
        t.finish(Timestamp::from_secs(1_010), &mut out);
        assert_eq!(out.len(), 101);
        assert_eq!(t.evicted_as_failed, 90);
        // An attempt its timer already reported is not reported again when evicted.
        let mut t = ConnTracker::new(ConnConfig {
            max_conns: 1,
            ..ConnConfig::default()
        });
        let mut out = Vec::new();
        t.on_event(&seg(0, A, B, SYN), &mut out);
        t.on_event(&seg(6_000, A, "203.0.113.9:80", SYN), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((t.evictions, t.evicted_as_failed), (1, 0));
    }

    #[test]
    fn memory_budget_caps_the_table() {
        let t = ConnTracker::new(ConnConfig {
            max_bytes: 100 * ConnTracker::ENTRY_BYTES,
            ..ConnConfig::default()
        });
        assert_eq!(t.capacity(), 100);
        let t = ConnTracker::new(ConnConfig {
            max_conns: 7,
            ..ConnConfig::default()
        });
        assert_eq!(t.capacity(), 7);
    }

    #[test]
    fn udp_requests_and_replies_when_enabled() {
        let udp = |ts_ms: u64, src: &str, dst: &str| PacketEvent {
            ts: Timestamp::from_secs(1_000) + time::Duration::from_millis(ts_ms),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            vlan_depth: 0,
            transport: Transport::Udp(UdpDatagram {
                payload_len: 3,
                head: b"d1:",
            }),
        };
        let events = [udp(0, A, B), udp(5, B, A), udp(9, A, B)];
        assert!(run(&events, 100).is_empty(), "off by default");
        let mut t = ConnTracker::new(ConnConfig {
            udp: true,
            ..ConnConfig::default()
        });
        let mut out = Vec::new();
        for e in &events {
            t.on_event(e, &mut out);
        }
        let kinds: Vec<_> = out
            .iter()
            .map(|o| (o.event, o.established, o.udp))
            .collect();
        assert_eq!(
            kinds,
            [
                (BroEvent::UdpRequest, false, true),
                (BroEvent::UdpReply, true, true),
                (BroEvent::UdpRequest, false, true)
            ]
        );
        assert_eq!(out[0].scan_check().resp_p, Service::udp(6881));
    }

    /// `attempts.log` prints these: Bro's event names, pinned.
    #[test]
    fn bro_event_names() {
        use BroEvent as E;
        let names = [
            E::Attempt,
            E::Rejected,
            E::Established,
            E::HalfFinished,
            E::Reset,
            E::UdpRequest,
            E::UdpReply,
            E::IcmpUnreachable,
        ]
        .map(BroEvent::as_str);
        assert_eq!(
            names,
            [
                "connection_attempt",
                "connection_rejected",
                "connection_established",
                "connection_half_finished",
                "connection_reset",
                "udp_request",
                "udp_reply",
                "icmp_unreachable"
            ]
        );
    }
}
