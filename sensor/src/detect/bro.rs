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
use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::time::Duration;

use super::{in_nets, NoticeKind, Proto, ScanCheck, ScanNotice, Service};
use crate::event::Timestamp;
use crate::time;

/// `Hot::allow_services` (Z15 `policy/hot.bro` L31–35): ssh, http, gopher, ident, smtp, 20/tcp,
/// 53/udp, 123/udp.
pub const HOT_ALLOW_SERVICES: [Service; 8] = [
    Service::tcp(22),
    Service::tcp(80),
    Service::tcp(70),
    Service::tcp(113),
    Service::tcp(25),
    Service::tcp(20),
    Service::udp(53),
    Service::udp(123),
];

/// `addl_web` [104–106].
pub const ADDL_WEB: [Service; 5] = [
    Service::tcp(81),
    Service::tcp(443),
    Service::tcp(8000),
    Service::tcp(8001),
    Service::tcp(8080),
];

/// `report_peer_scan` default [67–69].
pub const DEFAULT_REPORT_PEER_SCAN: [u64; 9] =
    [20, 100, 1000, 10000, 50000, 100000, 250000, 500000, 1000000];
/// `report_outbound_peer_scan` default [71–73].
pub const DEFAULT_REPORT_OUTBOUND_PEER_SCAN: [u64; 3] = [100, 1000, 10000];

/// Every `&redef` parameter at the top of `scan.bro` ([34]–[135]) with Bro 1.5's default, plus the site tables
/// (`local_nets`, `neighbor_nets`) and this implementation's expiry and memory knobs.
#[derive(Clone, Debug)]
#[allow(clippy::struct_excessive_bools)] // one field per scan.bro `&redef` flag, as Bro has them
pub struct BroScanConfig {
    /// [34]
    pub suppress_scan_checks: bool,
    /// [38] "Can lead to false positives due to UDP fanout from some P2P apps".
    pub suppress_udp_scan_checks: bool,
    /// [40] Enables LowPortTrolling and `distinct_low_ports`.
    pub activate_priv_port_check: bool,
    /// [41] Not implemented: the landmine branch of `check_scan` is not reproduced and there is
    /// no Landmine notice kind. Kept for completeness; [`BroScan::new`] rejects `true`.
    pub activate_landmine_check: bool,
    /// [42] Unused (see `activate_landmine_check`).
    pub landmine_thresh_trigger: u64,
    /// [46] ScanSummary when at least this many distinct peers expire.
    pub scan_summary_trigger: u64,
    /// [47] PortScanSummary threshold.
    pub port_summary_trigger: u64,
    /// [48] LowPortScanSummary threshold.
    pub lowport_summary_trigger: u64,
    /// [51] ShutdownThresh for sources that are neither local nor in `neighbor_nets`.
    pub shut_down_thresh: u64,
    /// [56] When true, `analyze_services` is ignored.
    pub analyze_all_services: bool,
    pub analyze_services: HashSet<Service>,
    /// [59] `pre_distinct_peers` pre-filter; 0 = off.
    pub addr_scan_trigger: u64,
    /// [64] 0 = off. See [`BroScan`] for the one deviation when it is on.
    pub ignore_scanners_threshold: u64,
    /// [67–69] AddressScan thresholds for a source that is not local (1-indexed in Bro).
    pub report_peer_scan: Vec<u64>,
    /// [71–73] AddressScan thresholds for a local source.
    pub report_outbound_peer_scan: Vec<u64>,
    /// [76–78] PortScan thresholds per (src, dst).
    pub report_port_scan: Vec<u64>,
    /// [82] Distinct failed ports before per-destination tracking starts.
    pub possible_port_scan_thresh: u64,
    /// [85] LowPortTrolling fires when `|distinct_low_ports| == priv_scan_trigger`.
    pub priv_scan_trigger: u64,
    /// [86–88] smtp, ftp, ssh, 20/tcp, http.
    pub troll_skip_service: HashSet<Service>,
    /// [104–106] Informational: Bro folds it into `skip_outbound_services` when scan.bro is
    /// parsed, so changing it alone has no effect here either; edit `skip_outbound_services`.
    pub addl_web: HashSet<Service>,
    /// [108] Inbound only: ident.
    pub skip_services: HashSet<Service>,
    /// [109–110] `{Hot::allow_services, ftp, addl_web}`.
    pub skip_outbound_services: HashSet<Service>,
    /// `Hot::allow_services`: established connections on these do not count as peers.
    pub allow_services: HashSet<Service>,
    /// [112–118] Only 255.255.255.255: Bro's second entry is a DNS name
    /// (test-scooter.av.pa-x.dec.com) resolved at startup, which a pure detector cannot do.
    pub skip_scan_sources: HashSet<IpAddr>,
    /// [120] CIDR prefixes.
    pub skip_scan_nets: Vec<(IpAddr, u8)>,
    /// [124] (responder, service) pairs skipped for inbound sources.
    pub skip_dest_server_ports: HashSet<(IpAddr, Service)>,
    /// [129–131] http, 53/tcp, 53/udp, bgp, 6666/tcp, 6667/tcp.
    pub backscatter_ports: HashSet<Service>,
    /// [133–135]
    pub report_backscatter: Vec<u64>,
    /// `Site::local_nets` (`is_local_addr`): sources here are "outbound". Empty by default, as
    /// in Z15 `policy/site.bro`, so every host counts as inbound.
    pub local_nets: Vec<(IpAddr, u8)>,
    /// `Site::neighbor_nets`: exempt from ShutdownThresh and LowPortTrolling. Empty by default.
    pub neighbor_nets: Vec<(IpAddr, u8)>,
    /// `&read_expire` of distinct_peers/ports/low_ports, pre_distinct_peers,
    /// possible_scan_sources, distinct_backscatter_peers: 15 min.
    pub read_expire: Duration,
    /// `&read_expire` of the threshold indexes rps_idx/rops_idx/rpts_idx/rb_idx: 1 day.
    pub idx_read_expire: Duration,
    /// `&create_expire` of ignored_scanners: 1 day.
    pub ignored_create_expire: Duration,
    /// Cap on tracked sources (not a Bro parameter). Beyond it the least recently checked
    /// source is dropped, without summaries, and counted in [`BroScan::evictions`].
    pub max_sources: usize,
}

impl Default for BroScanConfig {
    fn default() -> Self {
        let allow: HashSet<Service> = HOT_ALLOW_SERVICES.into_iter().collect();
        let mut skip_outbound = allow.clone();
        skip_outbound.insert(Service::tcp(21));
        skip_outbound.extend(ADDL_WEB);
        BroScanConfig {
            suppress_scan_checks: false,
            suppress_udp_scan_checks: false,
            activate_priv_port_check: true,
            activate_landmine_check: false,
            landmine_thresh_trigger: 5,
            scan_summary_trigger: 25,
            port_summary_trigger: 20,
            lowport_summary_trigger: 10,
            shut_down_thresh: 100,
            analyze_all_services: true,
            analyze_services: HashSet::new(),
            addr_scan_trigger: 0,
            ignore_scanners_threshold: 0,
            report_peer_scan: DEFAULT_REPORT_PEER_SCAN.to_vec(),
            report_outbound_peer_scan: DEFAULT_REPORT_OUTBOUND_PEER_SCAN.to_vec(),
            report_port_scan: vec![50, 250, 1000, 5000, 10000, 25000, 65000],
            possible_port_scan_thresh: 20,
            priv_scan_trigger: 5,
            troll_skip_service: [25, 21, 22, 20, 80].into_iter().map(Service::tcp).collect(),
            addl_web: ADDL_WEB.into_iter().collect(),
            skip_services: [Service::tcp(113)].into_iter().collect(),
            skip_outbound_services: skip_outbound,
            allow_services: allow,
            skip_scan_sources: [IpAddr::V4(Ipv4Addr::BROADCAST)].into_iter().collect(),
            skip_scan_nets: Vec::new(),
            skip_dest_server_ports: HashSet::new(),
            backscatter_ports: [
                Service::tcp(80),
                Service::tcp(53),
                Service::udp(53),
                Service::tcp(179),
                Service::tcp(6666),
                Service::tcp(6667),
            ]
            .into_iter()
            .collect(),
            report_backscatter: vec![20],
            local_nets: Vec::new(),
            neighbor_nets: Vec::new(),
            read_expire: Duration::from_mins(15),
            idx_read_expire: Duration::from_hours(24),
            ignored_create_expire: Duration::from_hours(24),
            max_sources: 1_000_000,
        }
    }
}

impl BroScanConfig {
    /// Defaults with `--threshold N` applied: N becomes the first address-scan threshold, and
    /// each vector becomes N followed by the default entries greater than N. Applied to
    /// `report_peer_scan` and to `report_outbound_peer_scan`.
    ///
    /// ShutdownThresh is *not* moved: it stays at `shut_down_thresh` = 100 for sources that are
    /// neither local nor neighbours, and on every new peer it is tested *before* the AddressScan
    /// threshold (`check_scan`: the ShutdownThresh test's `else` holds the AddressScan one). So
    /// for a non-local source:
    /// - N < 100, e.g. 5 → `{5, 20, 100, 1000, …}`: AddressScan at 5 and 20; at 100 ShutdownThresh
    ///   fires instead of AddressScan, whose index still points at 100, so the next AddressScan is
    ///   at 101, then 1000, ….
    /// - N = 100 → `{100, 1000, …}`: ShutdownThresh at 100, AddressScan at 101.
    /// - N > 100, e.g. 150 → `{150, 1000, …}`: ShutdownThresh still fires at 100 but pre-empts
    ///   nothing (no AddressScan is due there); the first AddressScan is at exactly 150, then
    ///   1000. A source that stops between 100 and N peers is reported only by ShutdownThresh
    ///   (and ScanSummary at expiry).
    ///
    /// A local source never gets ShutdownThresh: AddressScan at N, then the outbound defaults > N.
    pub fn with_first_threshold(n: u64) -> Self {
        BroScanConfig {
            report_peer_scan: first_threshold_vector(n, &DEFAULT_REPORT_PEER_SCAN),
            report_outbound_peer_scan: first_threshold_vector(
                n,
                &DEFAULT_REPORT_OUTBOUND_PEER_SCAN,
            ),
            ..Self::default()
        }
    }
}

/// `n` followed by the entries of `defaults` greater than `n`.
pub fn first_threshold_vector(n: u64, defaults: &[u64]) -> Vec<u64> {
    std::iter::once(n)
        .chain(defaults.iter().copied().filter(|&d| d > n))
        .collect()
}

/// A table entry with its own last-access (or creation) time.
#[derive(Debug)]
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
/// tables of its `export` block, L145–199).
#[derive(Debug, Default)]
struct Src {
    /// Sequence number of the last check that touched this source (LRU).
    touched: u64,
    /// Key of this source in `BroScan::lru` (≤ `touched`).
    lru_key: u64,
    /// Key of this source in `BroScan::expiry` (≤ its real first deadline), if filed.
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
    srcs: HashMap<IpAddr, Src>,
    /// Lazy expiry index: `(deadline ≤ real first deadline, source)`, one per filed source.
    expiry: BTreeSet<(Timestamp, IpAddr)>,
    /// Lazy LRU index: `(sequence ≤ last touch, source)`, one per source.
    lru: BTreeSet<(u64, IpAddr)>,
    seq: u64,
    /// Packet-time clock: the max of all times seen, so late packets never move deadlines back.
    now: Timestamp,
    /// Sources dropped because `max_sources` was reached.
    pub evictions: u64,
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
            srcs: HashMap::new(),
            expiry: BTreeSet::new(),
            lru: BTreeSet::new(),
            seq: 0,
            now: Timestamp::ZERO,
            evictions: 0,
        }
    }

    pub fn config(&self) -> &BroScanConfig {
        &self.cfg
    }

    /// Sources with any state (bounded by `max_sources`).
    pub fn tracked_sources(&self) -> usize {
        self.srcs.len()
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
                touched: src.touched,
                lru_key: src.lru_key,
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
        if !self.srcs.contains_key(&orig) {
            self.make_room();
            self.lru.insert((self.seq + 1, orig));
            self.srcs.insert(
                orig,
                Src {
                    lru_key: self.seq + 1,
                    ..Src::default()
                },
            );
        }
        self.seq += 1;
        let src = self.srcs.get_mut(&orig).expect("inserted above");
        src.touched = self.seq;
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
        self.srcs.clear();
        self.expiry.clear();
        self.lru.clear();
    }

    fn advance(&mut self, ts: Timestamp) -> Timestamp {
        self.now = self.now.max(ts);
        self.now
    }

    fn remove(&mut self, ip: IpAddr) {
        if let Some(s) = self.srcs.remove(&ip) {
            self.lru.remove(&(s.lru_key, ip));
            if let Some(k) = s.exp_key {
                self.expiry.remove(&(k, ip));
            }
        }
    }

    /// Evicts least-recently-checked sources until one more fits under `max_sources`.
    fn make_room(&mut self) {
        let cap = self.cfg.max_sources.max(1);
        self.evictions +=
            super::make_room(&mut self.srcs, &mut self.lru, &mut self.expiry, cap, |s| {
                (&mut s.lru_key, s.touched, s.exp_key)
            });
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
    ScanNotice {
        ts: x.ts,
        note,
        src: x.orig,
        dst: Some(dst),
        p: Some(p),
        peers: s.n_peers(),
        ports: s.n_ports(),
        msg,
    }
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
        out.push(notice(
            x,
            s,
            NoticeKind::AddressScan,
            x.resp,
            x.service,
            msg,
        ));
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
        out.push(notice(x, s, NoticeKind::PortScan, x.resp, x.service, msg));
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
    (n >= trigger).then(|| ScanNotice {
        ts,
        note: kind,
        src: ip,
        dst: None,
        p: None,
        peers,
        ports,
        msg: format!("{ip} scanned a total of {n} {what}"),
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
mod tests {
    use super::*;

    const SRC: &str = "198.51.100.7";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The i-th distinct peer.
    fn peer(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    /// A "random" high port, distinct for i < 55000 (7919 is prime to 55000), and in
    /// 10000..65000 so no skip list applies to it.
    fn hi_port(i: u32) -> u16 {
        10000 + ((i * 7919) % 55000) as u16
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn conn(
        ts: Timestamp,
        orig: IpAddr,
        resp: IpAddr,
        svc: Service,
        established: bool,
    ) -> ScanCheck {
        ScanCheck {
            ts,
            orig_h: orig,
            orig_p: Service::tcp(50000),
            resp_h: resp,
            resp_p: svc,
            established,
            reverse: false,
            ftp_data: false,
        }
    }

    fn kinds(v: &[ScanNotice]) -> Vec<(NoticeKind, String)> {
        v.iter().map(|n| (n.note, n.msg.clone())).collect()
    }

    /// Horizontal-scan test vector: failed SYNs from `src` to `n` distinct peers on distinct high ports, 1 s
    /// apart, then EOF. Returns (notices during the run, notices at finish).
    fn horizontal(cfg: BroScanConfig, src: IpAddr, n: u32) -> (Vec<ScanNotice>, Vec<ScanNotice>) {
        let mut b = BroScan::new(cfg);
        let mut out = Vec::new();
        for i in 1..=n {
            let c = conn(
                at(u64::from(i)),
                src,
                peer(i),
                Service::tcp(hi_port(i)),
                false,
            );
            b.check_into(&c, &mut out);
        }
        let mut fin = Vec::new();
        b.finish(at(u64::from(n) + 1), &mut fin);
        (out, fin)
    }

    fn addr_msg(n: u32, i: u32) -> (NoticeKind, String) {
        (
            NoticeKind::AddressScan,
            format!("{SRC} has scanned {n} hosts ({}/tcp)", hi_port(i)),
        )
    }

    fn shutdown_msg() -> (NoticeKind, String) {
        (
            NoticeKind::ShutdownThresh,
            format!("shutdown threshold reached for {SRC}"),
        )
    }

    fn summaries(peers: u32, ports: u32) -> Vec<(NoticeKind, String)> {
        let mut v = Vec::new();
        if peers >= 25 {
            v.push((
                NoticeKind::ScanSummary,
                format!("{SRC} scanned a total of {peers} hosts"),
            ));
        }
        if ports >= 20 {
            v.push((
                NoticeKind::PortScanSummary,
                format!("{SRC} scanned a total of {ports} ports"),
            ));
        }
        v
    }

    #[test]
    fn vector_19_nothing() {
        let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 19);
        assert!(out.is_empty(), "{out:?}");
        assert!(fin.is_empty(), "{fin:?}");
    }

    #[test]
    fn vector_20_one_address_scan() {
        let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 20);
        assert_eq!(kinds(&out), vec![addr_msg(20, 20)]);
        assert_eq!(out[0].ts, at(20));
        // The address branch runs before this connection's port is counted.
        assert_eq!((out[0].peers, out[0].ports), (20, 19));
        assert_eq!(out[0].p, Some(Service::tcp(hi_port(20))));
        assert_eq!(kinds(&fin), summaries(20, 20));
    }

    #[test]
    fn vector_100_shutdown_preempts() {
        let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 100);
        assert_eq!(kinds(&out), vec![addr_msg(20, 20), shutdown_msg()]);
        assert_eq!(out[1].ts, at(100));
        assert_eq!(kinds(&fin), summaries(100, 100));
    }

    #[test]
    fn vector_101_address_scan_at_101() {
        let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 101);
        assert_eq!(
            kinds(&out),
            vec![addr_msg(20, 20), shutdown_msg(), addr_msg(101, 101)]
        );
        assert_eq!(kinds(&fin), summaries(101, 101));
    }

    #[test]
    fn vector_25_scan_summary() {
        let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 25);
        assert_eq!(kinds(&out), vec![addr_msg(20, 20)]);
        assert_eq!(kinds(&fin), summaries(25, 25));
        assert_eq!((fin[0].peers, fin[0].ports), (25, 25));
        assert_eq!(fin[0].dst, None);
    }

    #[test]
    fn vector_1001_continues_on_the_vector() {
        let (out, _) = horizontal(BroScanConfig::default(), ip(SRC), 1001);
        assert_eq!(
            kinds(&out),
            vec![
                addr_msg(20, 20),
                shutdown_msg(),
                addr_msg(101, 101),
                addr_msg(1000, 1000)
            ]
        );
    }

    fn local_cfg() -> BroScanConfig {
        BroScanConfig {
            local_nets: vec![(ip("198.51.100.0"), 24)],
            ..BroScanConfig::default()
        }
    }

    #[test]
    fn local_source_vectors() {
        for n in [19, 20, 99] {
            let (out, fin) = horizontal(local_cfg(), ip(SRC), n);
            assert!(out.is_empty(), "n={n}: {out:?}");
            assert_eq!(kinds(&fin), summaries(n, n));
        }
        for n in [100, 101] {
            let (out, fin) = horizontal(local_cfg(), ip(SRC), n);
            assert_eq!(kinds(&out), vec![addr_msg(100, 100)], "n={n}");
            assert_eq!(kinds(&fin), summaries(n, n));
        }
        let (out, _) = horizontal(local_cfg(), ip(SRC), 1000);
        assert_eq!(kinds(&out), vec![addr_msg(100, 100), addr_msg(1000, 1000)]);
    }

    #[test]
    fn local_source_no_low_port_trolling() {
        let mut b = BroScan::new(local_cfg());
        let mut out = Vec::new();
        for p in 1..=200u16 {
            b.check_into(
                &conn(
                    at(u64::from(p)),
                    ip(SRC),
                    ip("192.0.2.1"),
                    Service::tcp(p),
                    false,
                ),
                &mut out,
            );
        }
        b.finish(at(1000), &mut out);
        assert!(out
            .iter()
            .all(|n| n.note != NoticeKind::LowPortTrolling
                && n.note != NoticeKind::LowPortScanSummary));
        // PortScan does not depend on outbound.
        assert!(out.iter().any(|n| n.note == NoticeKind::PortScan));
    }

    #[test]
    fn neighbor_nets_exempt_from_shutdown() {
        let cfg = BroScanConfig {
            neighbor_nets: vec![(ip("198.51.100.0"), 24)],
            ..BroScanConfig::default()
        };
        let (out, _) = horizontal(cfg, ip(SRC), 101);
        // Not outbound, so report_peer_scan applies, but with no ShutdownThresh the AddressScan
        // at 100 is not pre-empted.
        assert_eq!(kinds(&out), vec![addr_msg(20, 20), addr_msg(100, 100)]);
    }

    #[test]
    fn established_allowed_service_is_not_a_peer() {
        let mut b = BroScan::default();
        let mut out = Vec::new();
        for i in 1..=30 {
            b.check_into(
                &conn(at(u64::from(i)), ip(SRC), peer(i), Service::tcp(80), true),
                &mut out,
            );
        }
        assert!(out.is_empty());
        assert_eq!(b.tracked_sources(), 0);
    }

    #[test]
    fn established_bt_port_counts_as_peer_but_not_port() {
        let mut b = BroScan::default();
        let mut out = Vec::new();
        for i in 1..=25 {
            b.check_into(
                &conn(at(u64::from(i)), ip(SRC), peer(i), Service::tcp(6881), true),
                &mut out,
            );
        }
        assert_eq!(
            kinds(&out),
            vec![(
                NoticeKind::AddressScan,
                format!("{SRC} has scanned 20 hosts (6881/tcp)")
            )]
        );
        assert_eq!(out[0].ports, 0);
        assert_eq!(b.distinct_peers(ip(SRC)), 25);
        assert_eq!(b.distinct_ports(ip(SRC)), 0);
        let mut fin = Vec::new();
        b.finish(at(100), &mut fin);
        assert_eq!(kinds(&fin), summaries(25, 0));
    }

    #[test]
    fn established_never_adds_ports_on_any_service() {
        let mut b = BroScan::default();
        for i in 1..=30u32 {
            b.check(&conn(
                at(u64::from(i)),
                ip(SRC),
                peer(i),
                Service::tcp(hi_port(i)),
                true,
            ));
        }
        assert_eq!(b.distinct_peers(ip(SRC)), 30);
        assert_eq!(b.distinct_ports(ip(SRC)), 0);
    }

    #[test]
    fn failed_attempt_on_allowed_service_counts() {
        let mut b = BroScan::default();
        let mut out = Vec::new();
        for i in 1..=20 {
            b.check_into(
                &conn(at(u64::from(i)), ip(SRC), peer(i), Service::tcp(80), false),
                &mut out,
            );
        }
        assert_eq!(
            kinds(&out),
            vec![(
                NoticeKind::AddressScan,
                format!("{SRC} has scanned 20 hosts (80/tcp)")
            )]
        );
    }

    #[test]
    fn repeat_peer_does_not_count() {
        let mut b = BroScan::default();
        let mut out = Vec::new();
        for i in 1..=40 {
            b.check_into(
                &conn(at(i), ip(SRC), peer(1), Service::tcp(6881), false),
                &mut out,
            );
        }
        assert!(out.is_empty());
        assert_eq!(b.distinct_peers(ip(SRC)), 1);
    }

    /// Vertical scan of one host on TCP ports `ports`, 1 s apart; returns (call number, notice).
    fn vertical(
        cfg: BroScanConfig,
        ports: impl IntoIterator<Item = u16>,
    ) -> (BroScan, Vec<(u64, ScanNotice)>) {
        let mut b = BroScan::new(cfg);
        let mut got = Vec::new();
        for (k, p) in ports.into_iter().enumerate() {
            let k = k as u64 + 1;
            for n in b.check(&conn(
                at(k),
                ip(SRC),
                ip("192.0.2.1"),
                Service::tcp(p),
                false,
            )) {
                got.push((k, n));
            }
        }
        (b, got)
    }

    #[test]
    fn vertical_scan_port_scan_thresholds() {
        // High ports only, so no low-port noise.
        let (mut b, got) = vertical(BroScanConfig::default(), 2000..2300);
        let ps: Vec<_> = got
            .iter()
            .filter(|(_, n)| n.note == NoticeKind::PortScan)
            .collect();
        // possible_scan_sources is entered at the 20th distinct port, and that same call adds the
        // first triple: 50 triples = 69th port, 250 triples = 269th port.
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].0, 69);
        assert_eq!(
            ps[0].1.msg,
            format!("{SRC} has scanned 50 ports of 192.0.2.1")
        );
        assert_eq!(ps[0].1.dst, Some(ip("192.0.2.1")));
        assert_eq!(ps[1].0, 269);
        assert_eq!(
            ps[1].1.msg,
            format!("{SRC} has scanned 250 ports of 192.0.2.1")
        );
        assert_eq!(got.len(), 2, "no AddressScan for one peer");
        let mut fin = Vec::new();
        b.finish(at(1000), &mut fin);
        assert_eq!(kinds(&fin), summaries(1, 300));
    }

    #[test]
    fn port_scan_needs_possible_source_first() {
        // 19 distinct ports never make a possible scan source.
        let (_, got) = vertical(
            BroScanConfig::default(),
            (2000..2019).chain(std::iter::repeat_n(2000, 100)),
        );
        assert!(got.is_empty());
    }

    #[test]
    fn low_port_trolling_once_at_fifth_non_skipped() {
        // 20, 21, 22, 25 are troll_skip_service: the 5th distinct counted low port is 26.
        let (mut b, got) = vertical(BroScanConfig::default(), (18..=40).chain(18..=40));
        let lpt: Vec<_> = got
            .iter()
            .filter(|(_, n)| n.note == NoticeKind::LowPortTrolling)
            .collect();
        assert_eq!(lpt.len(), 1);
        assert_eq!(lpt[0].1.msg, format!("low port trolling {SRC} 26/tcp"));
        assert_eq!(lpt[0].1.p, Some(Service::tcp(26)));
        // 18..=40 minus the four skipped = 19 low ports ≥ lowport_summary_trigger.
        let mut fin = Vec::new();
        b.finish(at(1000), &mut fin);
        assert!(kinds(&fin).contains(&(
            NoticeKind::LowPortScanSummary,
            format!("{SRC} scanned a total of 19 low ports")
        )));
    }

    #[test]
    fn low_port_trolling_not_for_neighbor() {
        let cfg = BroScanConfig {
            neighbor_nets: vec![(ip(SRC), 32)],
            ..BroScanConfig::default()
        };
        let (_, got) = vertical(cfg, 1..=30);
        assert!(got
            .iter()
            .all(|(_, n)| n.note != NoticeKind::LowPortTrolling));
    }

    #[test]
    fn udp_is_never_a_low_port() {
        let mut b = BroScan::default();
        let mut out = Vec::new();
        for p in 1..=100u16 {
            b.check_into(
                &conn(
                    at(u64::from(p)),
                    ip(SRC),
                    ip("192.0.2.1"),
                    Service::udp(p),
                    false,
                ),
                &mut out,
            );
        }
        b.finish(at(1000), &mut out);
        assert!(out
            .iter()
            .all(|n| n.note != NoticeKind::LowPortTrolling
                && n.note != NoticeKind::LowPortScanSummary));
        // They are still failed ports.
        assert!(kinds(&out).contains(&(
            NoticeKind::PortScanSummary,
            format!("{SRC} scanned a total of 100 ports")
        )));
    }

    #[test]
    fn skip_lists() {
        let mut b = BroScan::new(local_cfg());
        let remote = ip("203.0.113.9");
        // Inbound ident is skipped.
        assert!(b
            .check(&conn(
                at(1),
                remote,
                ip("192.0.2.1"),
                Service::tcp(113),
                false
            ))
            .is_empty());
        assert_eq!(b.tracked_sources(), 0);
        // Outbound (local source) to allowed services, ftp and addl_web is skipped.
        for (i, p) in [80u16, 22, 443, 8080, 21, 25].into_iter().enumerate() {
            b.check(&conn(
                at(2 + i as u64),
                ip(SRC),
                peer(u32::try_from(i).unwrap()),
                Service::tcp(p),
                false,
            ));
        }
        b.check(&conn(at(10), ip(SRC), peer(50), Service::udp(53), false));
        assert_eq!(b.tracked_sources(), 0);
        // An inbound source to http is not skipped (skip_outbound_services is outbound only).
        b.check(&conn(
            at(11),
            remote,
            ip("192.0.2.1"),
            Service::tcp(80),
            false,
        ));
        assert_eq!(b.distinct_peers(remote), 1);
        // An outbound source to a BT port is tracked.
        b.check(&conn(at(12), ip(SRC), peer(1), Service::tcp(6881), false));
        assert_eq!(b.distinct_peers(ip(SRC)), 1);
        // skip_scan_sources.
        b.check(&conn(
            at(13),
            ip("255.255.255.255"),
            peer(1),
            Service::tcp(6881),
            false,
        ));
        assert_eq!(b.tracked_sources(), 2);
    }

    #[test]
    fn skip_dest_server_ports_and_nets() {
        let mut cfg = BroScanConfig::default();
        cfg.skip_dest_server_ports
            .insert((ip("192.0.2.1"), Service::tcp(6881)));
        cfg.skip_scan_nets.push((ip("203.0.113.0"), 24));
        let mut b = BroScan::new(cfg);
        b.check(&conn(
            at(1),
            ip(SRC),
            ip("192.0.2.1"),
            Service::tcp(6881),
            false,
        ));
        b.check(&conn(
            at(2),
            ip("203.0.113.5"),
            ip("192.0.2.2"),
            Service::tcp(6881),
            false,
        ));
        assert_eq!(b.tracked_sources(), 0);
        b.check(&conn(
            at(3),
            ip(SRC),
            ip("192.0.2.1"),
            Service::tcp(6882),
            false,
        ));
        assert_eq!(b.tracked_sources(), 1);
    }

    #[test]
    fn reverse_and_ftp_data_service_selection() {
        let mut b = BroScan::default();
        // reverse: the scanner is resp_h and the service is orig_p.
        let c = ScanCheck {
            reverse: true,
            orig_p: Service::tcp(4444),
            resp_p: Service::tcp(33000),
            ..conn(at(1), peer(1), ip(SRC), Service::tcp(33000), false)
        };
        b.check(&c);
        assert_eq!(b.distinct_peers(ip(SRC)), 1);
        assert_eq!(b.distinct_ports(ip(SRC)), 1);
        // ftp-data is 20/tcp whatever the ports: troll-skipped, so no low port.
        let c = ScanCheck {
            ftp_data: true,
            ..conn(at(2), ip(SRC), peer(2), Service::tcp(40000), false)
        };
        b.check(&c);
        assert_eq!(b.distinct_ports(ip(SRC)), 2);
        assert_eq!(b.distinct_low_ports(ip(SRC)), 0);
        assert_eq!(
            b.srcs[&ip(SRC)]
                .distinct_low_ports
                .as_ref()
                .map(|x| x.v.len()),
            None
        );
        assert!(b.srcs[&ip(SRC)]
            .distinct_ports
            .as_ref()
            .unwrap()
            .v
            .contains(&Service::tcp(20)));
        assert!(b.srcs[&ip(SRC)]
            .distinct_ports
            .as_ref()
            .unwrap()
            .v
            .contains(&Service::tcp(4444)));
    }

    #[test]
    fn backscatter() {
        // A flooded web server S answers spoofed SYNs with SYN-ACKs: Bro sees reverse
        // connections with S as the scanner, service = the victims' high ports.
        let server = ip(SRC);
        let mut b = BroScan::default();
        let mut out = Vec::new();
        for i in 1..=25u32 {
            let c = ScanCheck {
                ts: at(u64::from(i)),
                orig_h: peer(i),
                orig_p: Service::tcp(hi_port(i)),
                resp_h: server,
                resp_p: Service::tcp(80),
                established: false,
                reverse: true,
                ftp_data: false,
            };
            b.check_into(&c, &mut out);
            b.check_into(&c, &mut out); // tear-down call: same responder
        }
        assert_eq!(
            kinds(&out),
            vec![(
                NoticeKind::BackscatterSeen,
                format!("backscatter seen from {SRC} (20 hosts; 80/tcp)")
            )]
        );
        assert_eq!(out[0].p, Some(Service::tcp(80)));
        // Backscatter does not add peers; the failed attempts still add ports.
        assert_eq!(b.distinct_peers(server), 0);
        assert_eq!(b.distinct_ports(server), 25);
    }

    #[test]
    fn reverse_from_non_backscatter_port_is_address_scan() {
        let mut b = BroScan::default();
        for i in 1..=5u32 {
            let c = ScanCheck {
                ts: at(u64::from(i)),
                orig_h: peer(i),
                orig_p: Service::tcp(hi_port(i)),
                resp_h: ip(SRC),
                resp_p: Service::tcp(6881),
                established: false,
                reverse: true,
                ftp_data: false,
            };
            b.check(&c);
        }
        assert_eq!(b.distinct_peers(ip(SRC)), 5);
    }

    #[test]
    fn idle_expiry_emits_summaries_once() {
        let mut b = BroScan::default();
        let mut out = Vec::new();
        for i in 0..30u32 {
            b.check_into(
                &conn(
                    at(u64::from(i)),
                    ip(SRC),
                    peer(i),
                    Service::tcp(hi_port(i)),
                    false,
                ),
                &mut out,
            );
        }
        assert_eq!(out.len(), 1); // AddressScan at 20
        out.clear();
        // Last access at t=29 s: idle > 15 min first holds at the t=930 s pass.
        let mut t = 0;
        while t <= 920 {
            b.expire(at(t), &mut out);
            t += 10;
        }
        assert!(out.is_empty(), "{out:?}");
        b.expire(at(930), &mut out);
        assert_eq!(kinds(&out), summaries(30, 30));
        assert_eq!(out[0].ts, at(930));
        assert_eq!((out[0].peers, out[0].ports), (30, 30));
        assert_eq!(b.distinct_peers(ip(SRC)), 0);
        // The threshold indexes live on (1 day), so the source is still tracked.
        assert_eq!(b.tracked_sources(), 1);
        out.clear();
        b.expire(at(940), &mut out);
        b.finish(at(950), &mut out);
        assert!(out.is_empty(), "summaries are emitted once: {out:?}");
    }

    #[test]
    fn expiry_is_strictly_after_ttl() {
        let mut b = BroScan::default();
        for i in 0..30u32 {
            b.check(&conn(
                at(10),
                ip(SRC),
                peer(i),
                Service::tcp(hi_port(i)),
                false,
            ));
        }
        let mut out = Vec::new();
        b.expire(at(910), &mut out); // exactly 15 min idle: Bro's `access + ttl < now` is false
        assert!(out.is_empty());
        b.expire(at(910) + time::Duration::from_nanos(1), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn active_every_10_minutes_never_expires() {
        let mut b = BroScan::default();
        let mut out = Vec::new();
        let mut t = 0;
        let mut next = 0;
        let mut i = 0u32;
        while t <= 10 * 3600 {
            if t == next {
                i += 1;
                b.check_into(
                    &conn(at(t), ip(SRC), peer(i), Service::tcp(hi_port(i)), false),
                    &mut out,
                );
                next += 600;
            }
            b.expire(at(t), &mut out);
            t += 10;
        }
        assert_eq!(i, 61);
        assert_eq!(
            kinds(&out),
            vec![addr_msg(20, 20)],
            "no summary while active"
        );
        assert_eq!(b.distinct_peers(ip(SRC)), 61);
        out.clear();
        b.finish(at(t), &mut out);
        assert_eq!(kinds(&out), summaries(61, 61));
    }

    #[test]
    fn tables_expire_independently() {
        // Failed attempts build ports; later established BT connections keep only
        // distinct_peers fresh, so distinct_ports expires first.
        let mut b = BroScan::default();
        let mut out = Vec::new();
        for i in 0..20u32 {
            b.check_into(
                &conn(at(0), ip(SRC), peer(i), Service::tcp(hi_port(i)), false),
                &mut out,
            );
        }
        for k in 1..=20u32 {
            let c = conn(
                at(u64::from(k) * 60),
                ip(SRC),
                peer(1000 + k),
                Service::tcp(6881),
                true,
            );
            b.check_into(&c, &mut out);
        }
        out.clear();
        b.expire(at(910), &mut out);
        assert_eq!(
            kinds(&out),
            vec![(
                NoticeKind::PortScanSummary,
                format!("{SRC} scanned a total of 20 ports")
            )]
        );
        assert_eq!(b.distinct_peers(ip(SRC)), 40);
        out.clear();
        b.expire(at(1200 + 901), &mut out);
        assert_eq!(
            kinds(&out),
            vec![(
                NoticeKind::ScanSummary,
                format!("{SRC} scanned a total of 40 hosts")
            )]
        );
    }

    /// Runs `n` failed attempts from SRC to fresh peers (numbered from `base`) at time `t`.
    fn burst(b: &mut BroScan, t: u64, base: u32, n: u32, out: &mut Vec<ScanNotice>) {
        for i in 1..=n {
            let c = conn(
                at(t),
                ip(SRC),
                peer(base + i),
                Service::tcp(hi_port(i)),
                false,
            );
            b.check_into(&c, out);
        }
    }

    #[test]
    fn threshold_state_outlives_peer_expiry() {
        // shut_down_thresh_reached never expires and rps_idx lives 1 day, while distinct_peers
        // expires after 15 min idle. A returning source restarts its peer count from 0.
        let mut b = BroScan::default();
        let mut out = Vec::new();
        burst(&mut b, 0, 0, 100, &mut out); // AddressScan@20, ShutdownThresh@100; idx → 100
        b.expire(at(1000), &mut out);
        out.clear();
        burst(&mut b, 2000, 1000, 100, &mut out);
        // No AddressScan at 20 (idx points at 100), no second ShutdownThresh, so the
        // AddressScan due at 100 fires at exactly 100 this time.
        assert_eq!(kinds(&out), vec![addr_msg(100, 100)]);

        let mut b = BroScan::default();
        burst(&mut b, 0, 0, 101, &mut out); // ... AddressScan@101; idx → 1000
        b.expire(at(1000), &mut out);
        out.clear();
        burst(&mut b, 2000, 1000, 150, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(b.distinct_peers(ip(SRC)), 150);
    }

    #[test]
    fn first_threshold_vectors() {
        assert_eq!(
            first_threshold_vector(5, &DEFAULT_REPORT_PEER_SCAN)[..4],
            [5, 20, 100, 1000]
        );
        assert_eq!(
            first_threshold_vector(150, &DEFAULT_REPORT_PEER_SCAN)[..3],
            [150, 1000, 10000]
        );
        assert_eq!(
            first_threshold_vector(20, &DEFAULT_REPORT_PEER_SCAN),
            DEFAULT_REPORT_PEER_SCAN.to_vec()
        );
        let c = BroScanConfig::with_first_threshold(5);
        assert_eq!(c.report_outbound_peer_scan, vec![5, 100, 1000, 10000]);
        assert_eq!(c.shut_down_thresh, 100);
        let c = BroScanConfig::with_first_threshold(150);
        assert_eq!(c.report_outbound_peer_scan, vec![150, 1000, 10000]);
    }

    #[test]
    fn first_threshold_5() {
        let (out, _) = horizontal(BroScanConfig::with_first_threshold(5), ip(SRC), 1000);
        assert_eq!(
            kinds(&out),
            vec![
                addr_msg(5, 5),
                addr_msg(20, 20),
                shutdown_msg(),
                addr_msg(101, 101),
                addr_msg(1000, 1000)
            ]
        );
    }

    #[test]
    fn first_threshold_150() {
        let (out, _) = horizontal(BroScanConfig::with_first_threshold(150), ip(SRC), 151);
        assert_eq!(kinds(&out), vec![shutdown_msg(), addr_msg(150, 150)]);
        assert_eq!(out[0].ts, at(100));
        let local = BroScanConfig {
            local_nets: vec![(ip(SRC), 32)],
            ..BroScanConfig::with_first_threshold(150)
        };
        let (out, _) = horizontal(local, ip(SRC), 151);
        assert_eq!(kinds(&out), vec![addr_msg(150, 150)]);
    }

    #[test]
    fn memory_bound() {
        let cfg = BroScanConfig {
            max_sources: 10,
            ..BroScanConfig::default()
        };
        let mut b = BroScan::new(cfg);
        for s in 0..100u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + s));
            for k in 0..3u32 {
                b.check(&conn(
                    at(u64::from(s)),
                    src,
                    peer(k),
                    Service::tcp(6881),
                    false,
                ));
                assert!(b.tracked_sources() <= 10);
            }
        }
        assert_eq!(b.tracked_sources(), 10);
        assert_eq!(b.evictions, 90);
        // The survivors are the 10 most recent, with their state intact.
        let last = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + 99));
        assert_eq!(b.distinct_peers(last), 3);
        assert_eq!(b.expiry.len(), 10);
        assert_eq!(b.lru.len(), 10);
    }

    #[test]
    fn lru_keeps_recently_touched_sources() {
        let cfg = BroScanConfig {
            max_sources: 2,
            ..BroScanConfig::default()
        };
        let mut b = BroScan::new(cfg);
        let (a, c, d) = (ip("192.0.2.10"), ip("192.0.2.11"), ip("192.0.2.12"));
        b.check(&conn(at(1), a, peer(1), Service::tcp(6881), false));
        b.check(&conn(at(2), c, peer(1), Service::tcp(6881), false));
        b.check(&conn(at(3), a, peer(2), Service::tcp(6881), false)); // a is now the newest
        b.check(&conn(at(4), d, peer(1), Service::tcp(6881), false)); // evicts c
        assert_eq!(b.distinct_peers(a), 2);
        assert_eq!(b.distinct_peers(c), 0);
        assert_eq!(b.distinct_peers(d), 1);
        assert_eq!(b.evictions, 1);
    }

    #[test]
    fn udp_suppression_and_pre_filter() {
        let cfg = BroScanConfig {
            suppress_udp_scan_checks: true,
            ..BroScanConfig::default()
        };
        let mut b = BroScan::new(cfg);
        b.check(&conn(at(1), ip(SRC), peer(1), Service::udp(6881), false));
        assert_eq!(b.tracked_sources(), 0);

        // addr_scan_trigger: the first peers only fill pre_distinct_peers; the peer that reaches
        // the trigger starts distinct_peers at 1.
        let cfg = BroScanConfig {
            addr_scan_trigger: 3,
            ..BroScanConfig::default()
        };
        let mut b = BroScan::new(cfg);
        for i in 1..=3 {
            b.check(&conn(
                at(u64::from(i)),
                ip(SRC),
                peer(i),
                Service::tcp(6881),
                false,
            ));
        }
        assert_eq!(b.distinct_peers(ip(SRC)), 1);
    }

    #[test]
    fn ignore_scanners_threshold() {
        let cfg = BroScanConfig {
            ignore_scanners_threshold: 30,
            ..BroScanConfig::default()
        };
        let mut b = BroScan::new(cfg);
        let mut out = Vec::new();
        for i in 1..=40u32 {
            b.check_into(
                &conn(
                    at(u64::from(i)),
                    ip(SRC),
                    peer(i),
                    Service::tcp(hi_port(i)),
                    false,
                ),
                &mut out,
            );
        }
        assert_eq!(kinds(&out), vec![addr_msg(20, 20)]);
        assert_eq!(b.distinct_peers(ip(SRC)), 0, "cleared at 31");
        // Ignored for 1 day (create expire), then tracked afresh.
        b.expire(at(86_400 + 31), &mut out);
        assert_eq!(b.tracked_sources(), 1);
        b.expire(at(86_400 + 32), &mut out);
        assert_eq!(b.tracked_sources(), 0);
        b.check(&conn(
            at(86_500),
            ip(SRC),
            peer(1),
            Service::tcp(6881),
            false,
        ));
        assert_eq!(b.distinct_peers(ip(SRC)), 1);
    }

    #[test]
    fn state_is_dropped_after_a_day_idle() {
        let mut b = BroScan::default();
        for i in 1..=101u32 {
            b.check(&conn(
                at(0),
                ip(SRC),
                peer(i),
                Service::tcp(hi_port(i)),
                false,
            ));
        }
        let mut out = Vec::new();
        let mut t = 0;
        while t <= 86_400 + 20 {
            b.expire(at(t), &mut out);
            t += 10;
        }
        // Only shut_down_thresh_reached (no expiry in Bro) keeps it.
        assert_eq!(b.tracked_sources(), 1);
        assert!(b.srcs[&ip(SRC)].shut_down);
        assert!(b.expiry.is_empty());
    }
}
