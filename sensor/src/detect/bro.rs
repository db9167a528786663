//! Bro 1.5 `policy/scan.bro`: AddressScan / PortScan / ShutdownThresh / LowPortTrolling /
//! BackscatterSeen from its `check_scan()`, and the expiry summaries of its `&expire_func`s
//! `scan_summary()` / `port_summary()` / `lowport_summary()`.
//!
//! Line references ("L318", "[34]") are to Bro 1.5.3 (`zeek/zeek` tag `v1.5.3`)
//! `policy/scan.bro` unless another file is named.
//!
//! State is kept per source address ([`Src`]), but every Bro table keeps its own last-access
//! time, so each table of a source expires on its own as in Bro (`&read_expire` is an idle
//! timeout: an element goes once that long has passed since it was last accessed, Bro 1.5
//! `doc/ref-manual/values.texi`).
//!
//! Expiry bookkeeping: one entry per source in a `BTreeSet<(deadline, addr)>`. The entry is lazy:
//! it may be *earlier* than the source's real first deadline (touches only push deadlines later,
//! so they do not update the index), never later. `expire()` pops entries whose key is due,
//! expires what really is idle and re-files the source under its real next deadline. A call
//! where nothing is due is a single `BTreeSet::first()`. LRU eviction for `max_sources` uses the
//! same lazy trick on a second set keyed by a per-check sequence number.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::ops::ControlFlow;

use super::{in_nets, LinkedHashMap, NoticeKind, Proto, ScanCheck, ScanNotice, Service};
use crate::event::Timestamp;
use crate::time;

mod config;

pub use config::{
    first_threshold_vector, BroScanConfig, ADDL_WEB, DEFAULT_REPORT_OUTBOUND_PEER_SCAN,
    DEFAULT_REPORT_PEER_SCAN, HOT_ALLOW_SERVICES,
};

/// A table entry with its own last-access (or creation) time.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Timed<T> {
    t: Timestamp,
    v: T,
}

impl<T> Timed<T> {
    fn new(t: Timestamp, v: T) -> Self {
        Timed { t, v }
    }
}

/// Everything scan.bro keeps about one source address, one field per Bro table (the `global`
/// tables of its `export` block, L145–199). Public, with private fields, only so that the
/// state file (`crate::state`) can save and restore it whole; the index keys are rebuilt.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Src {
    /// Key of this source in `BroScan::expiry` (≤ its real first deadline), if filed.
    #[serde(skip)]
    exp_key: Option<Timestamp>,
    distinct_peers: Option<Timed<HashSet<IpAddr>>>,
    pre_distinct_peers: Option<Timed<HashSet<IpAddr>>>,
    distinct_ports: Option<Timed<HashSet<Service>>>,
    distinct_low_ports: Option<Timed<HashSet<Service>>>,
    /// Membership in `possible_scan_sources`: its last access.
    possible: Option<Timestamp>,
    /// `scan_triples[src]`: no expiry of its own; dropped with `possible` (remove_possible_source).
    scan_triples: Option<HashMap<IpAddr, HashSet<Service>>>,
    distinct_backscatter_peers: Option<Timed<HashMap<IpAddr, u64>>>,
    /// Next 1-based index into the threshold vectors; absent = Bro's `&default=1`.
    rps_idx: Option<Timed<usize>>,
    rops_idx: Option<Timed<usize>>,
    rb_idx: Option<Timed<usize>>,
    rpts_idx: HashMap<IpAddr, Timed<usize>>,
    /// `shut_down_thresh_reached`: no expiry in Bro.
    shut_down: bool,
    /// Creation time of the `ignored_scanners` entry.
    ignored_at: Option<Timestamp>,
}

impl Src {
    fn is_empty(&self) -> bool {
        self.distinct_peers.is_none()
            && self.pre_distinct_peers.is_none()
            && self.distinct_ports.is_none()
            && self.distinct_low_ports.is_none()
            && self.possible.is_none()
            && self.scan_triples.is_none()
            && self.distinct_backscatter_peers.is_none()
            && self.rps_idx.is_none()
            && self.rops_idx.is_none()
            && self.rb_idx.is_none()
            && self.rpts_idx.is_empty()
            && !self.shut_down
            && self.ignored_at.is_none()
    }

    fn n_peers(&self) -> u64 {
        self.distinct_peers.as_ref().map_or(0, |p| p.v.len() as u64)
    }

    fn n_ports(&self) -> u64 {
        self.distinct_ports.as_ref().map_or(0, |p| p.v.len() as u64)
    }

    fn n_low_ports(&self) -> u64 {
        self.distinct_low_ports
            .as_ref()
            .map_or(0, |p| p.v.len() as u64)
    }

    /// Earliest time any of this source's tables can expire; `None` if nothing can.
    fn next_deadline(&self, ttl: &Ttls) -> Option<Timestamp> {
        let read = [
            self.distinct_peers.as_ref().map(|x| x.t),
            self.pre_distinct_peers.as_ref().map(|x| x.t),
            self.distinct_ports.as_ref().map(|x| x.t),
            self.distinct_low_ports.as_ref().map(|x| x.t),
            self.possible,
            self.distinct_backscatter_peers.as_ref().map(|x| x.t),
        ];
        let idx = [
            self.rps_idx.as_ref().map(|x| x.t),
            self.rops_idx.as_ref().map(|x| x.t),
            self.rb_idx.as_ref().map(|x| x.t),
            self.rpts_idx.values().map(|x| x.t).min(),
        ];
        let r = read.into_iter().flatten().map(|t| t + ttl.read);
        let i = idx.into_iter().flatten().map(|t| t + ttl.idx);
        let g = self.ignored_at.map(|t| t + ttl.ignored);
        r.chain(i).chain(g).min()
    }
}

#[derive(Clone, Copy, Debug)]
struct Ttls {
    read: time::Duration,
    idx: time::Duration,
    ignored: time::Duration,
}

impl Ttls {
    fn min(&self) -> time::Duration {
        self.read.min(self.idx).min(self.ignored)
    }
}

/// What `check_scan` resolved about one call.
#[allow(clippy::struct_excessive_bools)] // check_scan's own locals and arguments, one to one
struct Ctx {
    ts: Timestamp,
    /// The detector's packet-time clock at this call (≥ `ts`).
    now: Timestamp,
    orig: IpAddr,
    resp: IpAddr,
    service: Service,
    rev_service: Service,
    outbound: bool,
    neighbor: bool,
    established: bool,
    reverse: bool,
}

/// `ControlFlow::Break` of the `check_scan` steps: `ignore_addr(orig)` was called, so the
/// source is cleared and put in `ignored_scanners`.
struct IgnoreAddr;

/// One step of `check_scan`: go on to the next test, or stop because of `ignore_addr(orig)`.
type Step = ControlFlow<IgnoreAddr>;

/// Bro 1.5 scan.bro detector.
///
/// Deviation, only when `ignore_scanners_threshold > 0` (off by default): Bro's `ignore_addr()`
/// clears the source's tables and then the rest of that one `check_scan` call keeps running
/// (re-creating some entries); here the call stops right after clearing.
#[derive(Debug)]
pub struct BroScan {
    cfg: BroScanConfig,
    ttl: Ttls,
    /// Least recently checked first (LRU eviction at the cap).
    srcs: LinkedHashMap<IpAddr, Src>,
    /// Lazy expiry index: `(deadline ≤ real first deadline, source)`, one per filed source.
    expiry: BTreeSet<(Timestamp, IpAddr)>,
    /// Packet-time clock: the max of all times seen, so late packets never move deadlines back.
    now: Timestamp,
    /// Sources dropped because `max_sources` was reached.
    pub evictions: u64,
    /// Sources removed since the engine last took them.
    dropped: super::DroppedSources,
}

impl BroScan {
    /// # Panics
    /// If `cfg.activate_landmine_check` is set (not implemented, see the field).
    pub fn new(cfg: BroScanConfig) -> Self {
        assert!(
            !cfg.activate_landmine_check,
            "scan.bro landmine check is not implemented"
        );
        let ttl = Ttls {
            read: cfg.read_expire.into(),
            idx: cfg.idx_read_expire.into(),
            ignored: cfg.ignored_create_expire.into(),
        };
        BroScan {
            cfg,
            ttl,
            srcs: LinkedHashMap::default(),
            expiry: BTreeSet::new(),
            now: Timestamp::ZERO,
            evictions: 0,
            dropped: super::DroppedSources::default(),
        }
    }

    pub fn config(&self) -> &BroScanConfig {
        &self.cfg
    }

    /// Sources with any state (bounded by `max_sources`).
    pub fn tracked_sources(&self) -> usize {
        self.srcs.len()
    }

    /// Whether `src` has any state (the engine keeps per-source notice records while it does).
    pub fn tracks(&self, src: IpAddr) -> bool {
        self.srcs.contains_key(&src)
    }

    /// `|distinct_peers[src]|` (0 when absent).
    pub fn distinct_peers(&self, src: IpAddr) -> u64 {
        self.srcs.get(&src).map_or(0, Src::n_peers)
    }

    /// `|distinct_ports[src]|` (0 when absent).
    pub fn distinct_ports(&self, src: IpAddr) -> u64 {
        self.srcs.get(&src).map_or(0, Src::n_ports)
    }

    /// `|distinct_low_ports[src]|` (0 when absent).
    pub fn distinct_low_ports(&self, src: IpAddr) -> u64 {
        self.srcs.get(&src).map_or(0, Src::n_low_ports)
    }

    /// One `check_scan(c, established, reverse)` call; returns the notices it raised.
    pub fn check(&mut self, c: &ScanCheck) -> Vec<ScanNotice> {
        let mut out = Vec::new();
        self.check_into(c, &mut out);
        out
    }

    /// [`BroScan::check`] appending to `out` (no allocation when nothing fires).
    /// Whether `check_scan` counts this connection at all (it is on no skipped service or
    /// source, and not an established connection to an allowed service): the attempts the PPR
    /// gate and the scan-shape test judge.
    pub fn counts(&self, c: &ScanCheck) -> bool {
        !self.skipped(&self.resolve(c, c.ts))
    }

    pub fn check_into(&mut self, c: &ScanCheck, out: &mut Vec<ScanNotice>) {
        let now = self.advance(c.ts);
        let x = self.resolve(c, now);
        if self.skipped(&x) {
            return;
        }
        let orig = x.orig;
        self.touch(orig);
        let src = self.srcs.get_mut(&orig).expect("touched above");
        if check_src(&self.cfg, src, &x, out).is_break() {
            // ignore_addr(orig): clear_addr, then add to ignored_scanners.
            let keep = Src {
                exp_key: src.exp_key,
                ignored_at: Some(now),
                ..Src::default()
            };
            *src = keep;
        }
        if src.is_empty() {
            self.remove(orig);
            return;
        }
        self.file_expiry(orig, now);
    }

    /// L274–281: service, orig and resp as seen from the (possibly reversed) scanner.
    fn resolve(&self, c: &ScanCheck, now: Timestamp) -> Ctx {
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
        Ctx {
            ts: c.ts,
            now,
            orig,
            resp,
            service,
            rev_service: if c.reverse { c.resp_p } else { c.orig_p },
            outbound: in_nets(orig, &self.cfg.local_nets),
            neighbor: in_nets(orig, &self.cfg.neighbor_nets),
            established: c.established,
            reverse: c.reverse,
        }
    }

    /// `check_scan`'s early `return F`s (suppression, skip lists, `ignored_scanners`), plus an
    /// established connection on an allowed service: that one fails the address-scan guard
    /// before any table is read, then returns at "if established", so it touches nothing.
    fn skipped(&self, x: &Ctx) -> bool {
        let cfg = &self.cfg;
        let (service, orig, outbound) = (x.service, x.orig, x.outbound);
        cfg.suppress_scan_checks
            || (cfg.suppress_udp_scan_checks && service.proto == Proto::Udp)
            || (!outbound && cfg.skip_services.contains(&service))
            || (outbound && cfg.skip_outbound_services.contains(&service))
            || cfg.skip_scan_sources.contains(&orig)
            || in_nets(orig, &cfg.skip_scan_nets)
            || (!outbound && cfg.skip_dest_server_ports.contains(&(x.resp, service)))
            || self.srcs.get(&orig).is_some_and(|s| s.ignored_at.is_some())
            || (x.established && cfg.allow_services.contains(&service))
    }

    /// The state of `orig`, created (evicting the least recently checked source at the cap) if
    /// new, and marked as the most recently checked.
    fn touch(&mut self, orig: IpAddr) {
        if self.srcs.to_back(&orig).is_none() {
            self.make_room();
            self.srcs.insert(orig, Src::default());
        }
    }

    /// Tables created by a check at `now` expire no earlier than now + the shortest TTL; pulling
    /// the source's index entry to at most that keeps it ≤ the real deadline.
    fn file_expiry(&mut self, orig: IpAddr, now: Timestamp) {
        let src = self.srcs.get_mut(&orig).expect("checked sources exist");
        let cand = now + self.ttl.min();
        match src.exp_key {
            Some(k) if k <= cand => {}
            old => {
                if let Some(k) = old {
                    self.expiry.remove(&(k, orig));
                }
                self.expiry.insert((cand, orig));
                src.exp_key = Some(cand);
            }
        }
    }

    /// Bro's table expiry pass (call every 10 s of packet time, `table_expire_interval`):
    /// drops every table entry idle for more than its `&read_expire` (strictly: `access + ttl <
    /// now`, as Bro tests it), emitting ScanSummary / PortScanSummary / LowPortScanSummary for
    /// expiring distinct_peers / distinct_ports / distinct_low_ports entries at or above their
    /// triggers. Sources are processed in deadline order; within one source the order is peers,
    /// ports, low ports. Cheap when nothing is due (one ordered-set lookup).
    pub fn expire(&mut self, now: Timestamp, out: &mut Vec<ScanNotice>) {
        let t = self.advance(now);
        while let Some(&(key, ip)) = self.expiry.first() {
            if key >= t {
                break;
            }
            self.expiry.pop_first();
            let src = self.srcs.get_mut(&ip).expect("filed sources exist");
            src.exp_key = None;
            expire_src(&self.cfg, &self.ttl, src, ip, now, t, out);
            if src.is_empty() {
                self.remove(ip);
            } else if let Some(d) = src.next_deadline(&self.ttl) {
                self.expiry.insert((d, ip));
                src.exp_key = Some(d);
            }
        }
    }

    /// `bro_done` (L696–706): ScanSummary for every remaining distinct_peers entry, then
    /// PortScanSummary for every distinct_ports entry, then LowPortScanSummary, each at or above
    /// its trigger, sources in address order (Bro iterates in hash order). Then all state is
    /// dropped, so a second call reports nothing.
    pub fn finish(&mut self, now: Timestamp, out: &mut Vec<ScanNotice>) {
        let mut ips: Vec<IpAddr> = self.srcs.keys().copied().collect();
        ips.sort_unstable();
        let cfg = &self.cfg;
        let srcs = &self.srcs;
        let kinds = [
            NoticeKind::ScanSummary,
            NoticeKind::PortScanSummary,
            NoticeKind::LowPortScanSummary,
        ];
        for kind in kinds {
            for ip in &ips {
                let s = &srcs[ip];
                if let Some(n) = summary(cfg, kind, s, *ip, now, s.n_peers(), s.n_ports()) {
                    out.push(n);
                }
            }
        }
        for ip in ips {
            self.dropped.push(ip);
        }
        self.srcs.clear();
        self.expiry.clear();
    }

    fn advance(&mut self, ts: Timestamp) -> Timestamp {
        self.now = self.now.max(ts);
        self.now
    }

    fn remove(&mut self, ip: IpAddr) {
        if let Some(s) = self.srcs.remove(&ip) {
            self.dropped.push(ip);
            if let Some(k) = s.exp_key {
                self.expiry.remove(&(k, ip));
            }
        }
    }

    /// The sources removed since the last call (see [`super::DroppedSources`]).
    pub(crate) fn take_dropped(&mut self) -> super::Dropped {
        self.dropped.take()
    }

    /// Bytes of a source with one failed attempt, as a flood's spoofed sources have: the `Src`
    /// in its linked map node and its slot pointer (half full), its expiry index entry, its
    /// one-element sets, allocator overhead. Measured: 806 B per source at 1 M sources (804 at
    /// 600,000, `bench --flood entry scan_sources N`), 1,419 B before the linked map, whose
    /// half-empty slots held the whole `Src`. A source's sets grow with its distinct peers and
    /// ports as Bro's do; `max_bytes` caps the count of sources.
    pub const SOURCE_BYTES: usize = 850;

    /// Most sources tracked: the lower of `max_sources` and `max_bytes / SOURCE_BYTES`.
    pub fn capacity(&self) -> usize {
        self.cfg
            .max_sources
            .min(self.cfg.max_bytes / Self::SOURCE_BYTES)
            .max(1)
    }

    /// Evicts least-recently-checked sources until one more fits under [`BroScan::capacity`].
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

impl BroScan {
    /// The detector's clock and every source, least recently checked first, for the state
    /// file (`crate::state`).
    pub fn export(&self) -> (Timestamp, Vec<(IpAddr, &Src)>) {
        (self.now, self.srcs.iter().map(|(ip, s)| (*ip, s)).collect())
    }

    /// Puts back what [`BroScan::export`] gave, in its order (so the LRU order is kept), under
    /// this detector's capacity; each source is filed under its real next deadline.
    pub fn restore(&mut self, now: Timestamp, srcs: impl IntoIterator<Item = (IpAddr, Src)>) {
        self.advance(now);
        for (ip, mut s) in srcs {
            if self.srcs.contains_key(&ip) || s.is_empty() {
                continue;
            }
            self.make_room();
            s.exp_key = s.next_deadline(&self.ttl);
            if let Some(k) = s.exp_key {
                self.expiry.insert((k, ip));
            }
            self.srcs.insert(ip, s);
        }
    }
}

impl Default for BroScan {
    fn default() -> Self {
        Self::new(BroScanConfig::default())
    }
}

/// 1-indexed threshold test of `thresh_check`/`thresh_check_2` (L603–619): fires when the next
/// threshold `v[idx]` is reached, and advances `idx`. (Their `ignore_scanners_threshold` test is
/// [`ignore_if_over`], which the callers run first.)
fn thresh_check(v: &[u64], idx: &mut Option<Timed<usize>>, n: u64, now: Timestamp) -> bool {
    let i = match idx {
        Some(e) => {
            e.t = now;
            e.v
        }
        None => 1,
    };
    if i <= v.len() && n >= v[i - 1] {
        *idx = Some(Timed::new(now, i + 1));
        true
    } else {
        false
    }
}

/// `if ( ignore_scanners_threshold > 0 && n > ignore_scanners_threshold ) ignore_addr(orig)`.
fn ignore_if_over(cfg: &BroScanConfig, n: u64) -> Step {
    if cfg.ignore_scanners_threshold > 0 && n > cfg.ignore_scanners_threshold {
        ControlFlow::Break(IgnoreAddr)
    } else {
        ControlFlow::Continue(())
    }
}

fn notice(x: &Ctx, s: &Src, note: NoticeKind, dst: IpAddr, p: Service, msg: String) -> ScanNotice {
    ScanNotice::new(
        x.ts,
        note,
        x.orig,
        Some(dst),
        Some(p),
        (s.n_peers(), s.n_ports()),
        msg,
    )
}

/// The body of `check_scan` after its skip tests (L292–518), as scan.bro runs it: the address
/// scan (a new peer feeds either the backscatter count or `distinct_peers`), then, for failed
/// attempts only, the port accounting, the low-port check and the per-destination port scan.
fn check_src(cfg: &BroScanConfig, s: &mut Src, x: &Ctx, out: &mut Vec<ScanNotice>) -> Step {
    // Reaching here means !established or service ∉ allow_services.
    if is_new_peer(cfg, s, x) {
        if is_backscatter(cfg, x) {
            backscatter_check(cfg, s, x, out)?;
        } else {
            address_scan_check(cfg, s, x, out)?;
        }
    }
    // "Don't consider established connections for port scanning."
    if x.established {
        return ControlFlow::Continue(());
    }
    possible_port_scan(cfg, s, x);
    low_port_check(cfg, s, x, out)?;
    port_scan_check(cfg, s, x, out)
}

/// `check_scan`'s address-scan guard: `resp !in distinct_peers[orig]` (reading the table touches
/// it) and the service is analyzed.
fn is_new_peer(cfg: &BroScanConfig, s: &mut Src, x: &Ctx) -> bool {
    let known = match s.distinct_peers.as_mut() {
        Some(p) => {
            p.t = x.now;
            p.v.contains(&x.resp)
        }
        None => false,
    };
    !known && (cfg.analyze_all_services || cfg.analyze_services.contains(&x.service))
}

/// `reverse && rev_service in backscatter_ports && service >= 1024/tcp`: a reply from a
/// backscatter port to a non-privileged one.
fn is_backscatter(cfg: &BroScanConfig, x: &Ctx) -> bool {
    x.reverse && cfg.backscatter_ports.contains(&x.rev_service) && x.service >= Service::tcp(1024)
}

/// BackscatterSeen (L318–358): `distinct_backscatter_peers` counts per responder, and a responder
/// counts towards `report_backscatter` only on its first call (Bro sees attempt and tear-down).
fn backscatter_check(cfg: &BroScanConfig, s: &mut Src, x: &Ctx, out: &mut Vec<ScanNotice>) -> Step {
    let now = x.now;
    let bs = s
        .distinct_backscatter_peers
        .get_or_insert_with(|| Timed::new(now, HashMap::new()));
    bs.t = now;
    let cnt = bs.v.entry(x.resp).or_insert(0);
    *cnt += 1;
    let first = *cnt == 1;
    let n = bs.v.len() as u64;
    if first {
        ignore_if_over(cfg, n)?;
        if thresh_check(&cfg.report_backscatter, &mut s.rb_idx, n, now) {
            let msg = format!(
                "backscatter seen from {} ({} hosts; {})",
                x.orig, n, x.rev_service
            );
            let note = NoticeKind::BackscatterSeen;
            out.push(notice(x, s, note, x.resp, x.rev_service, msg));
        }
    }
    ignore_if_over(cfg, n)
}

/// The `else` of the backscatter test: the `addr_scan_trigger` pre-filter, then the new peer
/// goes into `distinct_peers` and is tested for ShutdownThresh, else for AddressScan.
fn address_scan_check(
    cfg: &BroScanConfig,
    s: &mut Src,
    x: &Ctx,
    out: &mut Vec<ScanNotice>,
) -> Step {
    if below_addr_scan_trigger(cfg, s, x) {
        return ControlFlow::Continue(());
    }
    let peers = s
        .distinct_peers
        .get_or_insert_with(|| Timed::new(x.now, HashSet::new()));
    peers.t = x.now;
    peers.v.insert(x.resp);
    let n = peers.v.len() as u64;
    if shut_down_thresh_check(cfg, s, x, n, out) {
        return ControlFlow::Continue(());
    }
    ignore_if_over(cfg, n)?;
    let hit = if x.outbound {
        thresh_check(&cfg.report_outbound_peer_scan, &mut s.rops_idx, n, x.now)
    } else {
        thresh_check(&cfg.report_peer_scan, &mut s.rps_idx, n, x.now)
    };
    if hit {
        let msg = format!("{} has scanned {} hosts ({})", x.orig, n, x.service);
        // `$n=n` (scan.bro's AddressScan NOTICE).
        out.push(notice(x, s, NoticeKind::AddressScan, x.resp, x.service, msg).with_n(n));
        ignore_if_over(cfg, n)?;
    }
    ControlFlow::Continue(())
}

/// The `pre_distinct_peers` pre-filter (off unless `addr_scan_trigger > 0`): true while the
/// source has fewer distinct peers than the trigger, so `distinct_peers` is left alone.
fn below_addr_scan_trigger(cfg: &BroScanConfig, s: &mut Src, x: &Ctx) -> bool {
    if s.distinct_peers.is_some() || cfg.addr_scan_trigger == 0 {
        return false;
    }
    let pre = s
        .pre_distinct_peers
        .get_or_insert_with(|| Timed::new(x.now, HashSet::new()));
    pre.t = x.now;
    pre.v.insert(x.resp);
    (pre.v.len() as u64) < cfg.addr_scan_trigger
}

/// ShutdownThresh, once per source (`shut_down_thresh_reached`), for a source that is neither
/// local nor a neighbour. When it fires it pre-empts the AddressScan test at this `n`: `rps_idx`
/// is not advanced. Returns whether it fired.
fn shut_down_thresh_check(
    cfg: &BroScanConfig,
    s: &mut Src,
    x: &Ctx,
    n: u64,
    out: &mut Vec<ScanNotice>,
) -> bool {
    if s.shut_down || n < cfg.shut_down_thresh || x.outbound || x.neighbor {
        return false;
    }
    s.shut_down = true;
    let msg = format!("shutdown threshold reached for {}", x.orig);
    out.push(notice(
        x,
        s,
        NoticeKind::ShutdownThresh,
        x.resp,
        x.service,
        msg,
    ));
    true
}

/// "Coarse search for port-scanning candidates": the failed attempt's service goes into
/// `distinct_ports`; at `possible_port_scan_thresh` distinct ports the source becomes a
/// `possible_scan_sources` member with an empty `scan_triples` table.
fn possible_port_scan(cfg: &BroScanConfig, s: &mut Src, x: &Ctx) {
    let ports = s
        .distinct_ports
        .get_or_insert_with(|| Timed::new(x.now, HashSet::new()));
    ports.t = x.now;
    ports.v.insert(x.service);
    if ports.v.len() as u64 >= cfg.possible_port_scan_thresh && s.scan_triples.is_none() {
        s.scan_triples = Some(HashMap::new());
        s.possible = Some(x.now);
    }
}

/// "Check for low ports": LowPortTrolling when `distinct_low_ports` reaches `priv_scan_trigger`.
/// `service < 1024/tcp` is TCP only (Bro port order).
fn low_port_check(cfg: &BroScanConfig, s: &mut Src, x: &Ctx, out: &mut Vec<ScanNotice>) -> Step {
    if !cfg.activate_priv_port_check
        || x.outbound
        || x.service >= Service::tcp(1024)
        || cfg.troll_skip_service.contains(&x.service)
    {
        return ControlFlow::Continue(());
    }
    let low = s
        .distinct_low_ports
        .get_or_insert_with(|| Timed::new(x.now, HashSet::new()));
    low.t = x.now;
    // Only a newly added port is tested, so `== priv_scan_trigger` fires once.
    if !low.v.insert(x.service) {
        return ControlFlow::Continue(());
    }
    let k = low.v.len() as u64;
    if k == cfg.priv_scan_trigger && !x.neighbor {
        let msg = format!("low port trolling {} {}", x.orig, x.service);
        out.push(notice(
            x,
            s,
            NoticeKind::LowPortTrolling,
            x.resp,
            x.service,
            msg,
        ));
    }
    ignore_if_over(cfg, k)
}

/// PortScan: for a `possible_scan_sources` member, `scan_triples[orig][resp]` collects the
/// services tried on this responder, tested against `report_port_scan` by `thresh_check_2`.
fn port_scan_check(cfg: &BroScanConfig, s: &mut Src, x: &Ctx, out: &mut Vec<ScanNotice>) -> Step {
    let Some(t) = s.possible.as_mut() else {
        return ControlFlow::Continue(());
    };
    *t = x.now;
    let set = s
        .scan_triples
        .get_or_insert_with(HashMap::new)
        .entry(x.resp)
        .or_default();
    if !set.insert(x.service) {
        return ControlFlow::Continue(());
    }
    let m = set.len() as u64;
    ignore_if_over(cfg, m)?;
    let mut idx = s.rpts_idx.remove(&x.resp);
    let hit = thresh_check(&cfg.report_port_scan, &mut idx, m, x.now);
    if let Some(i) = idx {
        s.rpts_idx.insert(x.resp, i);
    }
    if hit {
        let msg = format!("{} has scanned {} ports of {}", x.orig, m, x.resp);
        // `$n=m`: the ports of this responder.
        out.push(notice(x, s, NoticeKind::PortScan, x.resp, x.service, msg).with_n(m));
    }
    ControlFlow::Continue(())
}

/// A summary notice for `kind` if the source's table is at or above its trigger.
fn summary(
    cfg: &BroScanConfig,
    kind: NoticeKind,
    s: &Src,
    ip: IpAddr,
    ts: Timestamp,
    peers: u64,
    ports: u64,
) -> Option<ScanNotice> {
    let (n, trigger, what) = match kind {
        NoticeKind::ScanSummary => (
            s.distinct_peers.as_ref()?.v.len(),
            cfg.scan_summary_trigger,
            "hosts",
        ),
        NoticeKind::PortScanSummary => (
            s.distinct_ports.as_ref()?.v.len(),
            cfg.port_summary_trigger,
            "ports",
        ),
        NoticeKind::LowPortScanSummary => (
            s.distinct_low_ports.as_ref()?.v.len(),
            cfg.lowport_summary_trigger,
            "low ports",
        ),
        _ => return None,
    };
    let n = n as u64;
    // The summaries' `$n` is the table's size.
    (n >= trigger).then(|| {
        ScanNotice::new(
            ts,
            kind,
            ip,
            None,
            None,
            (peers, ports),
            format!("{ip} scanned a total of {n} {what}"),
        )
        .with_n(n)
    })
}

/// Expires one source's idle table entries (each table's `&read_expire`/`&create_expire`),
/// emitting the summaries of the `&expire_func`s.
fn expire_src(
    cfg: &BroScanConfig,
    ttl: &Ttls,
    s: &mut Src,
    ip: IpAddr,
    ts: Timestamp,
    now: Timestamp,
    out: &mut Vec<ScanNotice>,
) {
    // Counts as they were before this pass, for the notices' peers/ports fields.
    let (peers, ports) = (s.n_peers(), s.n_ports());
    let read = |t: Timestamp| t.expired(ttl.read, now);
    // Each table that expired emits its summary (if over its trigger) and goes.
    macro_rules! expire_with_summary {
        ($table:ident, $kind:expr) => {
            if s.$table.as_ref().is_some_and(|x| read(x.t)) {
                out.extend(summary(cfg, $kind, s, ip, ts, peers, ports));
                s.$table = None;
            }
        };
    }
    expire_with_summary!(distinct_peers, NoticeKind::ScanSummary);
    expire_with_summary!(distinct_ports, NoticeKind::PortScanSummary);
    expire_with_summary!(distinct_low_ports, NoticeKind::LowPortScanSummary);
    if s.pre_distinct_peers.as_ref().is_some_and(|x| read(x.t)) {
        s.pre_distinct_peers = None;
    }
    if s.possible.is_some_and(read) {
        // remove_possible_source: scan_triples[src] goes with it.
        s.possible = None;
        s.scan_triples = None;
    }
    if s.distinct_backscatter_peers
        .as_ref()
        .is_some_and(|x| read(x.t))
    {
        s.distinct_backscatter_peers = None;
    }
    let idx = |t: Timestamp| t.expired(ttl.idx, now);
    for slot in [&mut s.rps_idx, &mut s.rops_idx, &mut s.rb_idx] {
        if slot.as_ref().is_some_and(|x| idx(x.t)) {
            *slot = None;
        }
    }
    s.rpts_idx.retain(|_, x| !idx(x.t));
    if s.ignored_at.is_some_and(|t| t.expired(ttl.ignored, now)) {
        s.ignored_at = None;
    }
}

#[cfg(test)]
mod tests;
