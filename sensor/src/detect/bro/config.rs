//! The parameters of Bro 1.5 `policy/scan.bro` with their defaults. Bracketed numbers ("[34]")
//! are the lines of that file (Bro 1.5.3, `zeek/zeek` tag `v1.5.3`) that declare them.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;

use crate::detect::Service;

/// `Hot::allow_services` (Bro 1.5.3 `policy/hot.bro` L31–35): ssh, http, gopher, ident, smtp,
/// 20/tcp, 53/udp, 123/udp.
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

/// Every `&redef` parameter at the top of `scan.bro` ([34]–[135]) with Bro 1.5's default, plus
/// the site tables (`local_nets`, `neighbor_nets`) and this implementation's expiry and memory
/// knobs.
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
    pub skip_scan_nets: Vec<IpNet>,
    /// [124] (responder, service) pairs skipped for inbound sources.
    pub skip_dest_server_ports: HashSet<(IpAddr, Service)>,
    /// [129–131] http, 53/tcp, 53/udp, bgp, 6666/tcp, 6667/tcp.
    pub backscatter_ports: HashSet<Service>,
    /// [133–135]
    pub report_backscatter: Vec<u64>,
    /// `Site::local_nets` (`is_local_addr`): sources here are "outbound". Empty by default, as
    /// in Bro 1.5.3 `policy/site.bro`, so every host counts as inbound.
    pub local_nets: Vec<IpNet>,
    /// `Site::neighbor_nets`: exempt from ShutdownThresh and LowPortTrolling. Empty by default.
    pub neighbor_nets: Vec<IpNet>,
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
    /// Memory budget (not a Bro parameter): at most `max_bytes / BroScan::SOURCE_BYTES`
    /// sources, whichever of the two caps is lower.
    pub max_bytes: usize,
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
            max_sources: 200_000,
            max_bytes: 96 << 20,
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
