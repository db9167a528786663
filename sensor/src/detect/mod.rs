//! Scan detectors that reproduce the paper's baseline: Bro 1.5 `policy/scan.bro`
//! ([`bro::BroScan`]) and Bro 1.5 TRW ([`trw::Trw`]).
//!
//! Both are pure state machines driven by packet time: no wall clock, no I/O. The
//! connection-outcome tracker feeds them one [`ScanCheck`] per Bro `check_scan()` call (the
//! calls `scan.bro`'s `connection_attempt`/`connection_rejected`/`connection_established`/...
//! event handlers make) and calls `expire()` every 10 s of packet time (Bro's
//! `table_expire_interval`, `policy/bro.init`). Line references ("L318") are to Bro 1.5.3
//! (`zeek/zeek` tag `v1.5.3`) `policy/scan.bro` unless another file is named.

pub mod bro;
pub mod trw;

pub use bro::{BroScan, BroScanConfig};
pub use trw::{Trw, TrwConfig, TrwConfigError};

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::event::Timestamp;

/// Transport protocol of a [`Service`]. Declaration order is Bro's port order (TCP < UDP < ICMP).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    strum::IntoStaticStr,
    serde::Serialize,
    serde::Deserialize,
)]
#[strum(serialize_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    /// Bro's protocol suffix of a port: `tcp`, `udp`, `icmp`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A Bro port value: ordering TCP < UDP < ICMP, then number (Bro stores `p | 0x10000/0x20000/
/// 0x30000`, Bro 1.5.3 `src/Val.h` L518–520). So `service < 1024/tcp` is TCP-only, and every
/// UDP and ICMP port is `>= 1024/tcp`. For ICMP, `port` is the ICMP type, as in Bro.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Service {
    pub proto: Proto,
    pub port: u16,
}

impl Service {
    pub const fn tcp(port: u16) -> Self {
        Service {
            proto: Proto::Tcp,
            port,
        }
    }
    pub const fn udp(port: u16) -> Self {
        Service {
            proto: Proto::Udp,
            port,
        }
    }
    pub const fn icmp(port: u16) -> Self {
        Service {
            proto: Proto::Icmp,
            port,
        }
    }
}

/// Bro's `%s` rendering of a port: `6881/tcp`.
impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto.as_str())
    }
}

impl serde::Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The inverse of the `Display` form (`6881/tcp`), for the state file (`crate::state`).
impl std::str::FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a port/protocol: {s:?}");
        let (port, proto) = s.split_once('/').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        match proto {
            "tcp" => Ok(Service::tcp(port)),
            "udp" => Ok(Service::udp(port)),
            "icmp" => Ok(Service::icmp(port)),
            _ => Err(bad()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Service {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Notice types of `scan.bro` and `trw.bro`, named as Bro prints them (the variant name, for
/// both `as_str` and serde).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Debug,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
pub enum NoticeKind {
    AddressScan,
    PortScan,
    ShutdownThresh,
    ScanSummary,
    PortScanSummary,
    LowPortTrolling,
    LowPortScanSummary,
    BackscatterSeen,
    TRWAddressScan,
    /// Not in the brief's list: trw-impl.bro schedules it 1 day after a TRWAddressScan.
    TRWScanSummary,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Zeek's connection `uid`: `C` and base62 digits, shared by every log line about one
/// connection (attempts.log, notice.log, suppressed.log).
///
/// It is derived from the connection tracker's serial number, a counter in connection order,
/// passed through a fixed bijection of 64-bit integers (the splitmix64 finaliser) so that uids
/// look like Zeek's and never collide within a run. A counter rather than a hash of the
/// 5-tuple and start time: live capture stamps packets with the wall clock and a capture file
/// with its own clock, so no timestamp is shared by `sensor run` and `sensor analyze` of the
/// same traffic, while the order of connections is; a replayed capture gets the same uids
/// live and offline. The price: uids restart with each run (a log's `#open` line tells runs
/// apart).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Uid(pub u64);

impl Uid {
    const DIGITS: &'static [u8; 62] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    /// Base62 digits of a `u64` (62^11 > 2^64).
    const WIDTH: usize = 11;

    /// The scrambled value written after the `C`: a bijection, so distinct serials give
    /// distinct uids.
    fn mixed(self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [b'0'; Self::WIDTH];
        let mut v = self.mixed();
        for d in digits.iter_mut().rev() {
            *d = Self::DIGITS[(v % 62) as usize];
            v /= 62;
        }
        f.write_str("C")?;
        f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

/// The connection a notice was raised on (Zeek's `uid` and `id`, `proto`): the one whose
/// `check_scan` call crossed the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoticeConn {
    pub uid: Uid,
    /// As Bro records them (`c$id`): for a reverse connection, `orig` is the SYN-ACK's receiver.
    pub orig: SocketAddr,
    pub resp: SocketAddr,
    pub proto: Proto,
}

/// One NOTICE raised by a detector.
///
/// Serialised (`sensor analyze --json`, `sensor run --notices`) as the JSON line notice.log
/// holds ([`crate::logs`]): Zeek's fields in Zeek's order, unset ones omitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanNotice {
    /// Packet time of the triggering check, or the `now` of the expire/finish call for summaries.
    pub ts: Timestamp,
    pub note: NoticeKind,
    /// The scanner (Bro's `$src`).
    pub src: IpAddr,
    /// The responder of the triggering connection (the scanned host for PortScan); `None` for
    /// summaries. Bro sets no `$dst` on these notices; this is extra context.
    pub dst: Option<IpAddr>,
    /// Bro's `$p`: the service of the triggering connection (`rev_service` for BackscatterSeen).
    /// Not in the brief's list; added because Bro's notices carry it.
    pub p: Option<Service>,
    /// Distinct peers of `src` at notice time (`|distinct_peers[src]|`; TRW: `num_scanned_locals`).
    pub peers: u64,
    /// Distinct failed ports of `src` at notice time (`|distinct_ports[src]|`; 0 for TRW). For
    /// AddressScan/ShutdownThresh/BackscatterSeen this is before the triggering connection's
    /// port is counted, because check_scan does the address branch first.
    pub ports: u64,
    /// Bro's `$n`, where `scan.bro` sets it: the hosts of an AddressScan or ScanSummary, the
    /// ports of one host for a PortScan, the (low) ports of a port summary; TRW's scanned hosts.
    pub n: Option<u64>,
    /// The connection whose check raised it; `None` for summaries (raised by table expiry).
    /// Set by the engine, which knows the connection behind each `check_scan` call.
    pub conn: Option<NoticeConn>,
    /// Zeek's `$sub`: set on a notice re-raised after its suppression interval.
    pub sub: Option<String>,
    /// Zeek's `suppress_for`: how long further notices of this kind for this source are
    /// suppressed after this one (zero: none, Bro 1.5's notice handling). Set by the engine.
    pub suppress_for: crate::time::Duration,
    /// Bro's exact message text.
    pub msg: String,
}

impl ScanNotice {
    /// A notice with no `$n`, connection, sub-message or suppression (the engine adds them).
    pub fn new(
        ts: Timestamp,
        note: NoticeKind,
        src: IpAddr,
        dst: Option<IpAddr>,
        p: Option<Service>,
        (peers, ports): (u64, u64),
        msg: String,
    ) -> Self {
        Self {
            ts,
            note,
            src,
            dst,
            p,
            peers,
            ports,
            n: None,
            conn: None,
            sub: None,
            suppress_for: crate::time::Duration::ZERO,
            msg,
        }
    }

    /// With Bro's `$n`.
    #[must_use]
    pub fn with_n(mut self, n: u64) -> Self {
        self.n = Some(n);
        self
    }
}

impl serde::Serialize for ScanNotice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::logs::serialize_notice(self, s)
    }
}

/// One `check_scan(c, established, reverse)` call of Bro 1.5: what the connection-outcome tracker
/// feeds in. Endpoints are as Bro's `c$id` records them; [`bro::BroScan`] applies `reverse` itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ScanCheck {
    pub ts: Timestamp,
    pub orig_h: IpAddr,
    pub orig_p: Service,
    pub resp_h: IpAddr,
    pub resp_p: Service,
    pub established: bool,
    pub reverse: bool,
    /// `"ftp-data" in c$service`: the service is then taken as 20/tcp.
    pub ftp_data: bool,
}

/// Bro's `conn_state()` strings (Bro 1.5 `policy/conn.bro`), as TRW consumes them. The variant
/// name is the string, for both `as_str` and serde.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, strum::IntoStaticStr)]
pub enum ConnState {
    S0,
    S1,
    SF,
    REJ,
    S2,
    S3,
    RSTO,
    RSTR,
    RSTOS0,
    RSTRH,
    SH,
    SHR,
    OTH,
}

impl ConnState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `addr` lies in any of the networks `nets` (Bro's `addr in set[subnet]`). An IPv4
/// address never matches an IPv6 network and vice versa.
pub fn in_nets(addr: IpAddr, nets: &[IpNet]) -> bool {
    nets.iter().any(|net| net.contains(&addr))
}

/// The per-source tables of the Bro and TRW detectors (and of the PPR gate): least recently
/// touched first, keyed foldhash (an attacker picks the source addresses). `hashlink` rather
/// than a hash map plus a lazily refiled `BTreeSet<(sequence, source)>`, which these tables
/// were: that index was about twice as fast on touches of sources it held (10 to 20 ns
/// against 20 to 30 ns), but under a flood that evicts on every new source it cost 4 to 6
/// times as much per access, and it took about twice the heap bytes per entry (BENCHMARKS.md,
/// "LRU tables"). The flood is the case the caps exist for. `lru::LruCache` does the same as
/// `hashlink`, about twice as slowly under the flood.
pub(crate) type LinkedHashMap<K, V> = hashlink::LinkedHashMap<K, V, foldhash::fast::RandomState>;

/// The sources a detector dropped (expired, evicted, or at the end) since the engine last
/// asked: the engine forgets its per-source notice records once no detector tracks their
/// source, and looks only at these sources rather than at all its records. Bounded: past
/// [`DroppedSources::CAP`] (a flood evicting a source per attempt) only the overflow is
/// remembered, and the engine looks at every record once, which the drops pay for.
#[derive(Debug, Default)]
pub(crate) struct DroppedSources {
    list: Vec<IpAddr>,
    overflowed: bool,
}

/// What [`DroppedSources::take`] hands over.
pub(crate) enum Dropped {
    /// These sources (possibly none).
    Sources(Vec<IpAddr>),
    /// More than [`DroppedSources::CAP`]: any source may have gone.
    Many,
}

impl DroppedSources {
    pub(crate) const CAP: usize = 4096;

    pub(crate) fn push(&mut self, ip: IpAddr) {
        if self.overflowed {
            return;
        }
        if self.list.len() >= Self::CAP {
            self.overflowed = true;
            self.list = Vec::new();
        } else {
            self.list.push(ip);
        }
    }

    /// Everything dropped since the last call; starts afresh.
    pub(crate) fn take(&mut self) -> Dropped {
        if std::mem::take(&mut self.overflowed) {
            Dropped::Many
        } else {
            Dropped::Sources(std::mem::take(&mut self.list))
        }
    }
}

/// Evicts least-recently-touched sources from the front of `srcs` until one more fits under
/// `cap`, removing their expiry index entries (`exp_key` gives a source's), and returns how
/// many went. Shared by the Bro and TRW detectors, whose per-source state is indexed the same
/// way.
pub(crate) fn make_room<T>(
    srcs: &mut LinkedHashMap<IpAddr, T>,
    expiry: &mut BTreeSet<(Timestamp, IpAddr)>,
    dropped: &mut DroppedSources,
    cap: usize,
    exp_key: impl Fn(&T) -> Option<Timestamp>,
) -> u64 {
    let mut evicted = 0;
    while srcs.len() >= cap {
        let Some((ip, src)) = srcs.pop_front() else {
            break;
        };
        if let Some(k) = exp_key(&src) {
            expiry.remove(&(k, ip));
        }
        dropped.push(ip);
        evicted += 1;
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_sources_past_the_cap_say_many_and_start_afresh() {
        let ip = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(i));
        let mut d = DroppedSources::default();
        d.push(ip(1));
        assert!(matches!(d.take(), Dropped::Sources(v) if v == [ip(1)]));
        for i in 0..=u32::try_from(DroppedSources::CAP).unwrap() {
            d.push(ip(i));
        }
        assert!(matches!(d.take(), Dropped::Many));
        assert!(matches!(d.take(), Dropped::Sources(v) if v.is_empty()));
    }

    #[test]
    fn service_order_is_bro_port_order() {
        assert!(Service::tcp(1023) < Service::tcp(1024));
        assert!(Service::tcp(65535) < Service::udp(0));
        assert!(Service::udp(53) >= Service::tcp(1024));
        assert!(Service::udp(65535) < Service::icmp(0));
        assert!(Service::icmp(8) >= Service::tcp(1024));
        assert_eq!(Service::tcp(6881).to_string(), "6881/tcp");
        assert_eq!(Service::udp(53).to_string(), "53/udp");
        assert_eq!(Service::icmp(8).to_string(), "8/icmp");
    }

    #[test]
    fn cidr_membership() {
        let nets = [
            "192.168.0.0/16".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        assert!(in_nets("192.168.3.4".parse().unwrap(), &nets));
        assert!(!in_nets("192.169.0.1".parse().unwrap(), &nets));
        assert!(in_nets("2001:db8:1::5".parse().unwrap(), &nets));
        assert!(!in_nets("2001:db9::5".parse().unwrap(), &nets));
        assert!(in_nets(
            "8.8.8.8".parse().unwrap(),
            &["0.0.0.0/0".parse().unwrap()]
        ));
        assert!(!in_nets("8.8.8.8".parse().unwrap(), &[]));
    }

    #[test]
    fn notice_serializes_bro_style() {
        let n = ScanNotice::new(
            Timestamp::from_nanos(1_500_000_000),
            NoticeKind::AddressScan,
            "10.0.0.1".parse().unwrap(),
            None,
            Some(Service::tcp(6881)),
            (20, 20),
            "x".into(),
        )
        .with_n(20);
        let line = serde_json::to_string(&n).unwrap();
        // Zeek's order (not alphabetical), unset fields (uid, id.*, sub, dst) omitted, times
        // and intervals with 6 decimals; the protocol comes from `p` when there is no
        // connection.
        assert_eq!(
            line,
            r#"{"ts":1.500000,"proto":"tcp","note":"AddressScan","msg":"x","src":"10.0.0.1","p":6881,"n":20,"actions":["Notice::ACTION_LOG"],"suppress_for":0.000000,"peers":20,"ports":20}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], 1.5);
    }

    /// `as_str` (strum) and serde must name every variant the same way.
    #[test]
    fn strum_and_serde_names_agree() {
        use ConnState as C;
        use NoticeKind as N;
        for k in [
            N::AddressScan,
            N::PortScan,
            N::ShutdownThresh,
            N::ScanSummary,
            N::PortScanSummary,
            N::LowPortTrolling,
            N::LowPortScanSummary,
            N::BackscatterSeen,
            N::TRWAddressScan,
            N::TRWScanSummary,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(k.to_string(), format!("{k:?}"));
        }
        for c in [
            C::S0,
            C::S1,
            C::SF,
            C::REJ,
            C::S2,
            C::S3,
            C::RSTO,
            C::RSTR,
            C::RSTOS0,
            C::RSTRH,
            C::SH,
            C::SHR,
            C::OTH,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            assert_eq!(c.to_string(), format!("{c:?}"));
        }
        assert_eq!(
            [Proto::Tcp, Proto::Udp, Proto::Icmp].map(Proto::as_str),
            ["tcp", "udp", "icmp"]
        );
    }
}
