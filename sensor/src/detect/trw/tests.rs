use super::*;
use std::net::Ipv4Addr;

const REMOTE: &str = "203.0.113.5";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn local(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + i)) // 192.168.0.0/16
}

fn local_n(i: u64) -> IpAddr {
    local(u32::try_from(i).unwrap())
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

/// λ is a product of doubles like 0.8 / 0.19999999999999996, as in Bro: compare loosely.
fn assert_close(got: f64, want: f64) {
    assert!(
        (got - want).abs() < 1e-9 * want.max(1.0),
        "λ = {got}, want {want}"
    );
}

fn lan_cfg() -> TrwConfig {
    TrwConfig {
        local_nets: vec!["192.168.0.0/16".parse().unwrap()],
        ..TrwConfig::default()
    }
}

fn hit(
    t: &mut Trw,
    secs: u64,
    orig: IpAddr,
    resp: IpAddr,
    state: ConnState,
    out: &mut Vec<ScanNotice>,
) -> bool {
    t.check(at(secs), orig, resp, Service::tcp(6881), state, 0, out)
}

#[test]
fn thresholds_match_spec() {
    let t = Trw::default();
    let (e0, e1) = t.thresholds();
    assert!((e1 - 99.0).abs() < 1e-9);
    assert!((e0 - 0.0101).abs() < 1e-4);
}

#[test]
fn four_failures_flag_once() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let r = ip(REMOTE);
    let mut out = Vec::new();
    for i in 1..=3 {
        assert!(!hit(&mut t, i, r, local_n(i), ConnState::S0, &mut out));
    }
    // 0.8 / 0.2 is 4.000000000000001 in doubles, in Bro as here.
    assert!((t.lambda(r) - 64.0).abs() < 1e-9);
    assert!(out.is_empty());
    assert!(hit(&mut t, 4, r, local(4), ConnState::REJ, &mut out));
    assert!((t.lambda(r) - 256.0).abs() < 1e-9);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].note, NoticeKind::TRWAddressScan);
    assert_eq!(out[0].msg, format!("{REMOTE} scanned a total of 4 hosts"));
    assert_eq!(
        (out[0].peers, out[0].dst, out[0].ts),
        (4, Some(local(4)), at(4))
    );
    // Flagged is sticky: later contacts return T without new notices.
    for i in 5..=20 {
        assert!(hit(&mut t, i, r, local_n(i), ConnState::S0, &mut out));
    }
    assert_eq!(out.len(), 1);
    assert!(t.is_scanner(r));
}

#[test]
#[allow(clippy::float_cmp)] // λ here is 1.0 or a power of 0.25: exact in binary
fn four_successes_benign_sticky() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let r = ip(REMOTE);
    let mut out = Vec::new();
    for i in 1..=3 {
        hit(&mut t, i, r, local_n(i), ConnState::SF, &mut out);
    }
    assert!(!t.is_benign(r), "0.25^3 = 0.0156 > 0.0101");
    hit(&mut t, 4, r, local(4), ConnState::S1, &mut out);
    assert!(t.is_benign(r));
    for i in 5..=40 {
        assert!(!hit(&mut t, i, r, local_n(i), ConnState::S0, &mut out));
    }
    assert!(out.is_empty());
    assert_eq!(
        t.lambda(r),
        0.25f64.powi(4),
        "benign sources are not scored further"
    );
}

#[test]
fn repeat_pair_does_not_move_lambda() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let r = ip(REMOTE);
    let mut out = Vec::new();
    for k in 1..=10 {
        hit(&mut t, k, r, local(1), ConnState::S0, &mut out);
    }
    assert_close(t.lambda(r), 4.0);
    // A success to a previously failed responder is a separate (first) success.
    hit(&mut t, 11, r, local(1), ConnState::SF, &mut out);
    hit(&mut t, 12, r, local(1), ConnState::SF, &mut out);
    assert_close(t.lambda(r), 1.0);
    for i in 2..=4 {
        hit(
            &mut t,
            12 + u64::from(i),
            r,
            local(i),
            ConnState::S0,
            &mut out,
        );
    }
    assert!(out.is_empty(), "λ = 64");
    hit(&mut t, 20, r, local(5), ConnState::S0, &mut out);
    // num_scanned_locals counts every scored contact: 1 + 1 + 4.
    assert_eq!(out[0].msg, format!("{REMOTE} scanned a total of 6 hosts"));
}

#[test]
fn failure_classification() {
    let mut t = Trw::new(TrwConfig {
        honeypot: [local(99)].into_iter().collect(),
        ..lan_cfg()
    })
    .unwrap();
    let r = ip(REMOTE);
    let mut out = Vec::new();
    let svc = Service::tcp(6881);
    // RSTOS0 with no responder bytes fails; with bytes it succeeds.
    t.check(at(1), r, local(1), svc, ConnState::RSTOS0, 0, &mut out);
    assert_close(t.lambda(r), 4.0);
    t.check(at(2), r, local(2), svc, ConnState::RSTOS0, 10, &mut out);
    assert_close(t.lambda(r), 1.0);
    // OTH fails; SH (half-open) is not in the failure list.
    t.check(at(3), r, local(3), svc, ConnState::OTH, 0, &mut out);
    assert_close(t.lambda(r), 4.0);
    t.check(at(4), r, local(4), svc, ConnState::SH, 0, &mut out);
    assert_close(t.lambda(r), 1.0);
    // Anything to a honeypot fails.
    t.check(at(5), r, local(99), svc, ConnState::SF, 100, &mut out);
    assert_close(t.lambda(r), 4.0);
}

#[test]
#[allow(clippy::float_cmp)] // λ here is 1.0 or a power of 0.25: exact in binary
fn local_sources_never_scored_and_befriend() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let mut out = Vec::new();
    let me = local(7);
    for i in 1..=50u32 {
        let peer = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert!(!hit(
            &mut t,
            u64::from(i),
            me,
            peer,
            ConnState::S0,
            &mut out
        ));
    }
    assert!(out.is_empty());
    assert_eq!(t.tracked_sources(), 0);
    assert_eq!(t.lambda(me), 1.0);
    // Those remotes are now friendly: their own failures are not scored.
    let friend = IpAddr::V4(Ipv4Addr::from(0x0a00_0001));
    assert!(t.is_friendly(friend));
    for i in 1..=10 {
        assert!(!hit(
            &mut t,
            100 + i,
            friend,
            local_n(i),
            ConnState::S0,
            &mut out
        ));
    }
    assert!(out.is_empty());
    assert_eq!(t.lambda(friend), 1.0);
}

#[test]
fn befriending_exceptions() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let mut out = Vec::new();
    let r = ip(REMOTE);
    // ident (triggered by inbound) and OTH do not befriend.
    t.check(
        at(1),
        local(1),
        r,
        Service::tcp(113),
        ConnState::SF,
        10,
        &mut out,
    );
    t.check(
        at(2),
        local(1),
        r,
        Service::tcp(6881),
        ConnState::OTH,
        10,
        &mut out,
    );
    assert!(!t.is_friendly(r));
    // A flagged scanner is not befriended.
    for i in 1..=4 {
        hit(&mut t, 2 + i, r, local_n(10 + i), ConnState::S0, &mut out);
    }
    assert!(t.is_scanner(r));
    t.check(
        at(10),
        local(1),
        r,
        Service::tcp(6881),
        ConnState::SF,
        10,
        &mut out,
    );
    assert!(!t.is_friendly(r));
}

#[test]
fn friendly_flag_can_be_disabled() {
    let mut t = Trw::new(TrwConfig {
        do_not_flag_friendly_remotes: false,
        ..lan_cfg()
    })
    .unwrap();
    let mut out = Vec::new();
    let r = ip(REMOTE);
    t.check(
        at(1),
        local(1),
        r,
        Service::tcp(6881),
        ConnState::SF,
        10,
        &mut out,
    );
    for i in 1..=4 {
        hit(&mut t, 1 + i, r, local_n(10 + i), ConnState::S0, &mut out);
    }
    assert_eq!(out.len(), 1);
}

#[test]
fn empty_local_nets_scores_everyone() {
    // Default config: no local_nets, so a BT client's own failures are scored.
    let mut t = Trw::default();
    let mut out = Vec::new();
    for i in 1..=4 {
        hit(
            &mut t,
            i,
            local(1),
            ip(&format!("10.0.0.{i}")),
            ConnState::S0,
            &mut out,
        );
    }
    assert_eq!(out.len(), 1);
}

#[test]
#[allow(clippy::float_cmp)] // λ here is 1.0 or a power of 0.25: exact in binary
fn write_expiry_and_summary() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let r = ip(REMOTE);
    let mut out = Vec::new();
    for i in 1..=4 {
        hit(&mut t, i, r, local_n(i), ConnState::S0, &mut out);
    }
    assert_eq!(out.len(), 1);
    out.clear();
    let mut secs = 10;
    while secs <= 3600 {
        t.expire(at(secs), &mut out);
        secs += 10;
    }
    // scan_sources written at 4 s: still there at 3600 s, gone at 3610 s (> 3604).
    assert!(t.is_scanner(r));
    assert_eq!(t.lambda(r), 1.0, "λ expired 30 min after its last write");
    t.expire(at(3610), &mut out);
    assert!(!t.is_scanner(r));
    assert_eq!(t.tracked_sources(), 0);
    // The summary scheduled for 4 s + 1 day reports num_scanned_locals as of then: expired.
    t.expire(at(86_400), &mut out);
    assert!(out.is_empty());
    t.expire(at(86_410), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].note, NoticeKind::TRWScanSummary);
    assert_eq!(out[0].msg, format!("{REMOTE} scanned a total of 0 hosts"));
}

#[test]
fn rescored_after_expiry() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let r = ip(REMOTE);
    let mut out = Vec::new();
    for i in 1..=4 {
        hit(&mut t, i, r, local_n(i), ConnState::S0, &mut out);
    }
    t.expire(at(3700), &mut out);
    // Same responders again: failed_locals expired, so they count afresh.
    for i in 1..=4 {
        hit(&mut t, 3700 + i, r, local_n(i), ConnState::S0, &mut out);
    }
    assert_eq!(
        out.iter()
            .filter(|n| n.note == NoticeKind::TRWAddressScan)
            .count(),
        2
    );
}

#[test]
fn friendly_read_expiry() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let mut out = Vec::new();
    let r = ip(REMOTE);
    t.check(
        at(0),
        local(1),
        r,
        Service::tcp(6881),
        ConnState::SF,
        1,
        &mut out,
    );
    // Reads by its own inbound checks keep it friendly.
    hit(&mut t, 1700, r, local(2), ConnState::S0, &mut out);
    t.expire(at(1810), &mut out);
    assert!(t.is_friendly(r));
    t.expire(at(1700 + 1801), &mut out);
    assert!(!t.is_friendly(r));
}

#[test]
fn check_scan_resolves_reverse() {
    let mut t = Trw::new(lan_cfg()).unwrap();
    let mut out = Vec::new();
    let r = ip(REMOTE);
    for i in 1..=4u32 {
        let c = ScanCheck {
            ts: at(u64::from(i)),
            orig_h: local(i),
            orig_p: Service::tcp(6881),
            resp_h: r,
            resp_p: Service::tcp(40000),
            established: false,
            reverse: true,
            ftp_data: false,
        };
        t.check_scan(&c, ConnState::S0, 0, &mut out);
    }
    assert!(t.is_scanner(r));
    assert_eq!(out[0].p, Some(Service::tcp(6881)));
}

#[test]
fn memory_bound() {
    let mut t = Trw::new(TrwConfig {
        max_sources: 10,
        ..lan_cfg()
    })
    .unwrap();
    let mut out = Vec::new();
    for s in 0..100u32 {
        let r = IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + s));
        hit(&mut t, u64::from(s), r, local(1), ConnState::S0, &mut out);
        assert!(t.tracked_sources() <= 10);
    }
    assert_eq!(t.tracked_sources(), 10);
    assert_eq!(t.evictions, 90);
    assert_eq!(t.expiry.len(), 10);
    // Friendly remotes are capped too.
    for s in 0..30u32 {
        let r = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + s));
        t.check(
            at(200),
            local(1),
            r,
            Service::tcp(6881),
            ConnState::SF,
            1,
            &mut out,
        );
    }
    assert_eq!(t.friendly.len(), 10);
    assert_eq!(t.evictions, 110);
}

/// The memory budget caps sources, friendly remotes and summaries below the count cap; every
/// eviction is counted.
#[test]
fn memory_budget() {
    let mut t = Trw::new(TrwConfig {
        max_sources: 1_000,
        max_bytes: 10 * Trw::SOURCE_BYTES + Trw::SOURCE_BYTES / 2,
        ..lan_cfg()
    })
    .unwrap();
    assert_eq!(t.capacity(), 10);
    let mut out = Vec::new();
    for s in 0..100u32 {
        let r = IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + s));
        hit(&mut t, u64::from(s), r, local(1), ConnState::S0, &mut out);
        assert!(t.tracked_sources() <= 10);
    }
    assert_eq!((t.tracked_sources(), t.evictions), (10, 90));
    for s in 0..30u32 {
        let r = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + s));
        t.check(
            at(200),
            local(1),
            r,
            Service::tcp(6881),
            ConnState::SF,
            1,
            &mut out,
        );
    }
    assert_eq!(t.friendly_remotes(), 10);
    assert_eq!(t.evictions, 110);
    // The default budget binds before the default count cap.
    let d = Trw::default();
    assert_eq!(d.capacity(), (96 << 20) / Trw::SOURCE_BYTES);
    assert!(d.capacity() < d.config().max_sources);
}

#[test]
fn bad_config_rejected() {
    let bad = TrwConfig {
        theta_one: 0.9,
        ..TrwConfig::default()
    };
    assert_eq!(Trw::new(bad).unwrap_err(), TrwConfigError::Theta);
    let bad = TrwConfig {
        target_false_positive_prob: 0.0,
        ..TrwConfig::default()
    };
    assert_eq!(Trw::new(bad).unwrap_err(), TrwConfigError::Probabilities);
}
