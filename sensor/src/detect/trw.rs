//! Threshold Random Walk as in Bro 1.5 `policy/trw-impl.bro` (Jung, Paxson, Berger,
//! Balakrishnan, "Fast Portscan Detection Using Sequential Hypothesis Testing", IEEE S&P 2004).
//! Line references ("[27]", "L97") are to Bro 1.5.3 (`zeek/zeek` tag `v1.5.3`)
//! `policy/trw-impl.bro`.
//!
//! Each remote source's likelihood ratio λ starts at 1 and is multiplied by
//! (1-θ1)/(1-θ0) = 4 on a first-contact failure and by θ1/θ0 = 0.25 on a first-contact success;
//! above η1 = P_D/P_F = 99 it is a scanner, below η0 = (1-P_D)/(1-P_F) ≈ 0.0101 it is benign.
//! Local sources are never scored; they only mark the remotes they contact as friendly.
//!
//! Expiry follows Bro's table attributes: `&write_expire` (scan/benign sources 1 h; failed and
//! successful pairs, λ and num_scanned_locals 30 min) and `&read_expire` (friendly_remotes
//! 30 min). The same lazy `BTreeSet` indexes as [`super::bro`] keep `expire()` cheap; pair sets
//! are FIFO queues because a pair is written once, so insertion order is expiry order.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::{in_nets, ConnState, LinkedHashMap, NoticeKind, ScanCheck, ScanNotice, Service};
use crate::event::Timestamp;
use crate::time;

/// trw-impl.bro parameters with their Bro 1.5 defaults.
#[derive(Clone, Debug)]
pub struct TrwConfig {
    /// P_D [27].
    pub target_detection_prob: f64,
    /// P_F [28].
    pub target_false_positive_prob: f64,
    /// P[success | benign] [32].
    pub theta_zero: f64,
    /// P[success | scanner] [36].
    pub theta_one: f64,
    /// [19] Never flag a remote that a local host contacted.
    pub do_not_flag_friendly_remotes: bool,
    /// [23] ident, finger, 20/tcp: outbound connections on these do not befriend the remote.
    pub triggered_outbound_services: HashSet<Service>,
    /// `is_local_addr`: these sources are never scored. Empty by default.
    pub local_nets: Vec<IpNet>,
    /// LBL-internal honeypots: any contact to one counts as a failure. Empty by default.
    pub honeypot: HashSet<IpAddr>,
    /// `&write_expire` of scan_sources and benign_sources [42–43]: 1 h.
    pub source_write_expire: Duration,
    /// `&write_expire` of failed_locals, successful_locals, lambda, num_scanned_locals
    /// [45–51]: 30 min.
    pub local_write_expire: Duration,
    /// `&read_expire` of friendly_remotes [59]: 30 min.
    pub friendly_read_expire: Duration,
    /// Delay of the `TRW_scan_summary` event scheduled at each TRWAddressScan: 1 day.
    pub summary_delay: Duration,
    /// Cap (not a Bro parameter) on scored sources, on friendly remotes and on pending
    /// summaries, each; the oldest is dropped and counted in [`Trw::evictions`].
    pub max_sources: usize,
    /// Memory budget (not a Bro parameter) of the scored sources: at most
    /// `max_bytes / Trw::SOURCE_BYTES` of them, whichever of the two caps is lower. Friendly
    /// remotes and pending summaries are held to the same count (they cost a fraction of a
    /// source each: see [`Trw::FRIEND_BYTES`]).
    pub max_bytes: usize,
}

impl Default for TrwConfig {
    fn default() -> Self {
        TrwConfig {
            target_detection_prob: 0.99,
            target_false_positive_prob: 0.01,
            theta_zero: 0.8,
            theta_one: 0.2,
            do_not_flag_friendly_remotes: true,
            triggered_outbound_services: [113, 79, 20].into_iter().map(Service::tcp).collect(),
            local_nets: Vec::new(),
            honeypot: HashSet::new(),
            source_write_expire: Duration::from_hours(1),
            local_write_expire: Duration::from_mins(30),
            friendly_read_expire: Duration::from_mins(30),
            summary_delay: Duration::from_hours(24),
            max_sources: 1_000_000,
            max_bytes: 96 << 20,
        }
    }
}

/// Parameters trw-impl.bro rejects (it raises an alarm and turns TRW off at run time; here the
/// check is made once, up front).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrwConfigError {
    #[error("bad theta_zero/theta_one: need 0 < theta_one < theta_zero < 1")]
    Theta,
    #[error("bad target probabilities: need 0 < P_D < 1 and 0 < P_F < 1")]
    Probabilities,
}

/// A set of responders written once each, expiring in insertion order.
#[derive(Debug, Default)]
struct PairSet {
    set: HashSet<IpAddr>,
    fifo: VecDeque<(Timestamp, IpAddr)>,
}

impl PairSet {
    fn contains(&self, a: &IpAddr) -> bool {
        self.set.contains(a)
    }
    fn add(&mut self, now: Timestamp, a: IpAddr) {
        self.set.insert(a);
        self.fifo.push_back((now, a));
    }
    fn expire(&mut self, ttl: time::Duration, now: Timestamp) {
        while let Some(&(t, a)) = self.fifo.front() {
            if !t.expired(ttl, now) {
                break;
            }
            self.fifo.pop_front();
            self.set.remove(&a);
        }
    }
    fn first_written(&self) -> Option<Timestamp> {
        self.fifo.front().map(|&(t, _)| t)
    }
    fn is_empty(&self) -> bool {
        self.fifo.is_empty()
    }
}

/// `lambda[src]` and `num_scanned_locals[src]`: always written together, so one expiry.
#[derive(Debug)]
struct Score {
    lambda: f64,
    n: u64,
    written: Timestamp,
}

/// TRW state of one remote source.
#[derive(Debug, Default)]
struct TrwSrc {
    exp_key: Option<Timestamp>,
    /// Write time of the scan_sources entry.
    scan_at: Option<Timestamp>,
    /// Write time of the benign_sources entry.
    benign_at: Option<Timestamp>,
    failed: PairSet,
    successful: PairSet,
    score: Option<Score>,
}

impl TrwSrc {
    fn is_empty(&self) -> bool {
        self.scan_at.is_none()
            && self.benign_at.is_none()
            && self.failed.is_empty()
            && self.successful.is_empty()
            && self.score.is_none()
    }

    fn n_scanned(&self) -> u64 {
        self.score.as_ref().map_or(0, |s| s.n)
    }

    fn next_deadline(
        &self,
        src_ttl: time::Duration,
        local_ttl: time::Duration,
    ) -> Option<Timestamp> {
        let s = [self.scan_at, self.benign_at];
        let l = [
            self.failed.first_written(),
            self.successful.first_written(),
            self.score.as_ref().map(|x| x.written),
        ];
        let s = s.into_iter().flatten().map(|t| t + src_ttl);
        let l = l.into_iter().flatten().map(|t| t + local_ttl);
        s.chain(l).min()
    }

    fn purge(&mut self, src_ttl: time::Duration, local_ttl: time::Duration, now: Timestamp) {
        if self.scan_at.is_some_and(|t| t.expired(src_ttl, now)) {
            self.scan_at = None;
        }
        if self.benign_at.is_some_and(|t| t.expired(src_ttl, now)) {
            self.benign_at = None;
        }
        self.failed.expire(local_ttl, now);
        self.successful.expire(local_ttl, now);
        if self
            .score
            .as_ref()
            .is_some_and(|s| s.written.expired(local_ttl, now))
        {
            self.score = None;
        }
    }
}

#[derive(Debug)]
struct Friend {
    /// Last access.
    last: Timestamp,
    /// Key in `Trw::friendly_idx` (≤ `last`).
    key: Timestamp,
}

/// Bro 1.5 TRW detector.
#[derive(Debug)]
pub struct Trw {
    cfg: TrwConfig,
    eta_zero: f64,
    eta_one: f64,
    ratio_fail: f64,
    ratio_success: f64,
    src_ttl: time::Duration,
    local_ttl: time::Duration,
    friendly_ttl: time::Duration,
    summary_delay: time::Duration,
    /// Least recently scored first (LRU eviction at the cap).
    srcs: LinkedHashMap<IpAddr, TrwSrc>,
    /// Lazy `(deadline ≤ real, source)` index, as in `bro::BroScan`.
    expiry: BTreeSet<(Timestamp, IpAddr)>,
    friendly: HashMap<IpAddr, Friend>,
    /// Lazy `(access time ≤ last access, remote)`: expiry and LRU order at once.
    friendly_idx: BTreeSet<(Timestamp, IpAddr)>,
    /// Scheduled `TRW_scan_summary` events, in due order.
    summaries: VecDeque<(Timestamp, IpAddr)>,
    now: Timestamp,
    /// Entries dropped because a `max_sources` cap was reached.
    pub evictions: u64,
    /// Sources removed since the engine last took them.
    dropped: super::DroppedSources,
}

impl Trw {
    pub fn new(cfg: TrwConfig) -> Result<Self, TrwConfigError> {
        let (t0, t1) = (cfg.theta_zero, cfg.theta_one);
        if !(t0 > 0.0 && t0 < 1.0 && t1 > 0.0 && t1 < 1.0 && t1 < t0) {
            return Err(TrwConfigError::Theta);
        }
        let (pd, pf) = (cfg.target_detection_prob, cfg.target_false_positive_prob);
        if !(pd > 0.0 && pd < 1.0 && pf > 0.0 && pf < 1.0) {
            return Err(TrwConfigError::Probabilities);
        }
        Ok(Trw {
            eta_zero: (1.0 - pd) / (1.0 - pf),
            eta_one: pd / pf,
            ratio_fail: (1.0 - t1) / (1.0 - t0),
            ratio_success: t1 / t0,
            src_ttl: cfg.source_write_expire.into(),
            local_ttl: cfg.local_write_expire.into(),
            friendly_ttl: cfg.friendly_read_expire.into(),
            summary_delay: cfg.summary_delay.into(),
            cfg,
            srcs: LinkedHashMap::default(),
            expiry: BTreeSet::new(),
            friendly: HashMap::new(),
            friendly_idx: BTreeSet::new(),
            summaries: VecDeque::new(),
            now: Timestamp::ZERO,
            evictions: 0,
            dropped: super::DroppedSources::default(),
        })
    }

    pub fn config(&self) -> &TrwConfig {
        &self.cfg
    }

    /// (η0, η1): the benign and scanner thresholds on λ.
    pub fn thresholds(&self) -> (f64, f64) {
        (self.eta_zero, self.eta_one)
    }

    /// `src ∈ scan_sources`.
    pub fn is_scanner(&self, src: IpAddr) -> bool {
        self.srcs.get(&src).is_some_and(|s| s.scan_at.is_some())
    }

    /// `src ∈ benign_sources`.
    pub fn is_benign(&self, src: IpAddr) -> bool {
        self.srcs.get(&src).is_some_and(|s| s.benign_at.is_some())
    }

    /// `lambda[src]` (Bro's `&default = 1.0`).
    pub fn lambda(&self, src: IpAddr) -> f64 {
        self.srcs
            .get(&src)
            .and_then(|s| s.score.as_ref())
            .map_or(1.0, |s| s.lambda)
    }

    /// `remote ∈ friendly_remotes`.
    pub fn is_friendly(&self, remote: IpAddr) -> bool {
        self.friendly.contains_key(&remote)
    }

    /// Whether `src` has TRW state (the engine keeps per-source notice records while it does).
    pub fn tracks(&self, src: IpAddr) -> bool {
        self.srcs.contains_key(&src)
    }

    /// Remote sources with TRW state (bounded by [`Trw::capacity`]).
    pub fn tracked_sources(&self) -> usize {
        self.srcs.len()
    }

    /// Bytes of a scored source with one failed first contact, as a flood's spoofed sources
    /// have: the `TrwSrc` in its linked map node and its slot pointer (half full), its expiry
    /// index entry, its one-element pair set and FIFO, allocator overhead. Measured with 1 M
    /// such sources (`cargo xtask bench`, flood section, `trw_sources`: 630 B, 980 B before the
    /// linked map) and rounded up; a source's pair sets grow with its distinct peers as Bro's
    /// do.
    pub const SOURCE_BYTES: usize = 700;

    /// Bytes of a friendly remote (map slot and index entry), measured the same way
    /// (`trw_friendly`: 155 B) and rounded up. Held to [`Trw::capacity`] in count, friendly
    /// remotes add at most `capacity() * FRIEND_BYTES` (17 MiB at the defaults) to the budget.
    pub const FRIEND_BYTES: usize = 200;

    /// Most scored sources, friendly remotes and pending summaries, each: the lower of
    /// `max_sources` and `max_bytes / SOURCE_BYTES`.
    pub fn capacity(&self) -> usize {
        self.cfg
            .max_sources
            .min(self.cfg.max_bytes / Self::SOURCE_BYTES)
            .max(1)
    }

    /// Friendly remotes tracked now.
    pub fn friendly_remotes(&self) -> usize {
        self.friendly.len()
    }

    /// `check_TRW_scan` for a Bro connection: resolves `reverse` and ftp-data like scan.bro,
    /// then calls [`Trw::check`]. `resp_bytes` is the responder's payload size
    /// (`reverse ? c$orig$size : c$resp$size`), i.e. of the side that was contacted.
    pub fn check_scan(
        &mut self,
        c: &ScanCheck,
        state: ConnState,
        resp_bytes: u64,
        out: &mut Vec<ScanNotice>,
    ) -> bool {
        let service = if c.ftp_data {
            Service::tcp(20)
        } else if c.reverse {
            c.orig_p
        } else {
            c.resp_p
        };
        let (orig, resp) = if c.reverse {
            (c.resp_h, c.orig_h)
        } else {
            (c.orig_h, c.resp_h)
        };
        self.check(c.ts, orig, resp, service, state, resp_bytes, out)
    }

    /// `check_TRW_scan` (Bro 1.5 `policy/trw-impl.bro`) with `orig`/`resp`/`service` already
    /// resolved. Bro calls it from connection_attempt/rejected/established (TCP). Returns Bro's
    /// result: true iff `orig` is (now) a flagged scanner.
    #[allow(clippy::too_many_arguments)] // mirrors Bro's (connection, state) inputs one to one
    pub fn check(
        &mut self,
        ts: Timestamp,
        orig: IpAddr,
        resp: IpAddr,
        service: Service,
        state: ConnState,
        resp_bytes: u64,
        out: &mut Vec<ScanNotice>,
    ) -> bool {
        let now = self.advance(ts);
        if in_nets(orig, &self.cfg.local_nets) {
            self.outbound_contact(orig, resp, service, state, now);
            return false;
        }
        if let Some(verdict) = self.known_verdict(orig, now) {
            return verdict;
        }
        let failed = matches!(state, ConnState::S0 | ConnState::REJ | ConnState::OTH)
            || (state == ConnState::RSTOS0 && resp_bytes == 0)
            || self.cfg.honeypot.contains(&resp);
        let Some((lambda, n)) = self.score_first_contact(orig, resp, failed, now) else {
            return false;
        };
        let s = self.srcs.get_mut(&orig).expect("scored above");
        let flagged = lambda > self.eta_one;
        if flagged {
            s.scan_at = Some(now);
            out.push(
                ScanNotice::new(
                    ts,
                    NoticeKind::TRWAddressScan,
                    orig,
                    Some(resp),
                    Some(service),
                    (n, 0),
                    format!("{orig} scanned a total of {n} hosts"),
                )
                .with_n(n),
            );
        } else if lambda < self.eta_zero {
            s.benign_at = Some(now);
        }
        self.file_expiry(orig, now);
        if flagged {
            self.schedule_summary(orig, now);
        }
        flagged
    }

    /// A local `orig` is never scored (L97–105); any state but OTH befriends the remote it
    /// contacted (Bro does not require success here despite its comment).
    fn outbound_contact(
        &mut self,
        orig: IpAddr,
        resp: IpAddr,
        service: Service,
        state: ConnState,
        now: Timestamp,
    ) {
        if !self.is_scanner(resp)
            && !self.cfg.triggered_outbound_services.contains(&service)
            && !self.cfg.honeypot.contains(&orig)
            && state != ConnState::OTH
        {
            self.befriend(resp, now);
        }
    }

    /// The early returns of `check_TRW_scan`: `orig in scan_sources` (T), `orig in
    /// benign_sources` (F), and a friendly remote when `do_not_flag_friendly_remotes` (F).
    fn known_verdict(&mut self, orig: IpAddr, now: Timestamp) -> Option<bool> {
        if let Some(s) = self.srcs.get(&orig) {
            if s.scan_at.is_some() {
                return Some(true);
            }
            if s.benign_at.is_some() {
                return Some(false);
            }
        }
        if self.cfg.do_not_flag_friendly_remotes {
            if let Some(f) = self.friendly.get_mut(&orig) {
                f.last = now; // a read refreshes &read_expire
                return Some(false);
            }
        }
        None
    }

    /// Only the first contact of each (orig, resp) pair moves λ, per outcome (`failed_locals` /
    /// `successful_locals`). Returns the new `(lambda, num_scanned_locals)`, or `None` for a
    /// repeated pair.
    fn score_first_contact(
        &mut self,
        orig: IpAddr,
        resp: IpAddr,
        failed: bool,
        now: Timestamp,
    ) -> Option<(f64, u64)> {
        if self.srcs.to_back(&orig).is_none() {
            // A new source has no pairs yet, so this contact will score.
            self.make_room();
            self.srcs.insert(orig, TrwSrc::default());
        }
        let s = self.srcs.get_mut(&orig).expect("inserted above");
        let (pairs, ratio) = if failed {
            (&mut s.failed, self.ratio_fail)
        } else {
            (&mut s.successful, self.ratio_success)
        };
        if pairs.contains(&resp) {
            return None;
        }
        pairs.add(now, resp);
        let sc = s.score.get_or_insert(Score {
            lambda: 1.0,
            n: 0,
            written: now,
        });
        sc.n += 1;
        sc.lambda *= ratio;
        sc.written = now;
        Some((sc.lambda, sc.n))
    }

    /// Everything written now expires no earlier than now + the shorter write TTL: pulls the
    /// source's lazy expiry entry to at most that.
    fn file_expiry(&mut self, orig: IpAddr, now: Timestamp) {
        let s = self.srcs.get_mut(&orig).expect("scored sources exist");
        let cand = now + self.src_ttl.min(self.local_ttl);
        match s.exp_key {
            Some(k) if k <= cand => {}
            old => {
                if let Some(k) = old {
                    self.expiry.remove(&(k, orig));
                }
                self.expiry.insert((cand, orig));
                s.exp_key = Some(cand);
            }
        }
    }

    /// `schedule summary_delay { TRW_scan_summary(orig) }`, dropping the oldest pending one at
    /// the cap.
    fn schedule_summary(&mut self, orig: IpAddr, now: Timestamp) {
        if self.summaries.len() >= self.capacity() {
            self.summaries.pop_front();
            self.evictions += 1;
        }
        self.summaries.push_back((now + self.summary_delay, orig));
    }

    /// Expiry pass (call every 10 s of packet time): purges expired entries, then raises the
    /// TRWScanSummary events that are due. A summary reports `num_scanned_locals` as it is
    /// then; that table expires 30 min after its last write and a flagged source is no longer
    /// scored, so after the default 1-day delay it usually says 0 hosts, exactly as in Bro.
    pub fn expire(&mut self, now: Timestamp, out: &mut Vec<ScanNotice>) {
        let t = self.advance(now);
        while let Some(&(key, ip)) = self.expiry.first() {
            if key >= t {
                break;
            }
            self.expiry.pop_first();
            let s = self.srcs.get_mut(&ip).expect("filed sources exist");
            s.exp_key = None;
            s.purge(self.src_ttl, self.local_ttl, t);
            if s.is_empty() {
                self.srcs.remove(&ip);
                self.dropped.push(ip);
            } else if let Some(d) = s.next_deadline(self.src_ttl, self.local_ttl) {
                self.expiry.insert((d, ip));
                s.exp_key = Some(d);
            }
        }
        while let Some(&(key, ip)) = self.friendly_idx.first() {
            if !key.expired(self.friendly_ttl, t) {
                break;
            }
            self.friendly_idx.pop_first();
            let f = self.friendly.get_mut(&ip).expect("indexed friends exist");
            if f.last > key {
                f.key = f.last;
                self.friendly_idx.insert((f.last, ip));
            } else {
                self.friendly.remove(&ip);
            }
        }
        while let Some(&(due, ip)) = self.summaries.front() {
            if due > t {
                break;
            }
            self.summaries.pop_front();
            let n = self.srcs.get(&ip).map_or(0, TrwSrc::n_scanned);
            out.push(
                ScanNotice::new(
                    now,
                    NoticeKind::TRWScanSummary,
                    ip,
                    None,
                    None,
                    (n, 0),
                    format!("{ip} scanned a total of {n} hosts"),
                )
                .with_n(n),
            );
        }
    }

    fn advance(&mut self, ts: Timestamp) -> Timestamp {
        self.now = self.now.max(ts);
        self.now
    }

    fn befriend(&mut self, remote: IpAddr, now: Timestamp) {
        if let Some(f) = self.friendly.get_mut(&remote) {
            f.last = now;
            return;
        }
        let cap = self.capacity();
        while self.friendly.len() >= cap {
            let Some((key, ip)) = self.friendly_idx.pop_first() else {
                break;
            };
            let f = self.friendly.get_mut(&ip).expect("indexed friends exist");
            if f.last > key {
                f.key = f.last;
                self.friendly_idx.insert((f.last, ip));
            } else {
                self.friendly.remove(&ip);
                self.evictions += 1;
            }
        }
        self.friendly.insert(
            remote,
            Friend {
                last: now,
                key: now,
            },
        );
        self.friendly_idx.insert((now, remote));
    }

    /// The sources removed since the last call (see [`super::DroppedSources`]).
    pub(crate) fn take_dropped(&mut self) -> super::Dropped {
        self.dropped.take()
    }

    /// Evicts least-recently-scored sources until one more fits under [`Trw::capacity`].
    fn make_room(&mut self) {
        let cap = self.capacity();
        self.evictions += super::make_room(
            &mut self.srcs,
            &mut self.expiry,
            &mut self.dropped,
            cap,
            |s| s.exp_key,
        );
    }
}

impl Default for Trw {
    fn default() -> Self {
        Self::new(TrwConfig::default()).expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests;
