use super::*;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_secs(1_000) + Duration::from_millis(ms)
}

fn host(i: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
}

#[test]
fn bounded_table_expires_and_evicts_oldest_first() {
    let at = Timestamp::from_secs;
    let mut t: Bounded<u32, u32> = Bounded::new(3, std::time::Duration::from_secs(10));
    for k in 0..3 {
        t.insert(k, k, at(u64::from(k)));
    }
    t.insert(3, 3, at(3));
    assert_eq!(t.stats().evicted, 1);
    assert!(t.get_mut(&0, at(3)).is_none(), "oldest evicted");
    assert_eq!(t.take(&1, at(4)), Some(1));
    assert!(t.take(&2, at(13)).is_none(), "older than the TTL");
    assert_eq!(t.stats().expired, 1);
    t.expire(at(100));
    assert_eq!(t.stats().len, 0);
    assert_eq!(t.stats().expired, 2);
    // Removed entries do not grow the order queue without bound.
    for k in 0..10_000 {
        t.insert(k, k, at(200));
        t.take(&k, at(200));
    }
    assert!(t.order.len() <= 2 * t.map.len() + 65);
}

/// A pending transaction: keyed by (owner, id), never "answered" while in the table.
type Pending = Bounded<(IpAddr, u32), ()>;

fn pending(cap: usize) -> Pending {
    Bounded::fair(
        cap,
        std::time::Duration::from_mins(1),
        Fairness {
            deadline: std::time::Duration::from_secs(10),
            owner: |k: &(IpAddr, u32), (): &()| k.0,
            answered: |(): &()| false,
        },
    )
}

/// One source gets at most its share, however much it sends; the others keep theirs.
#[test]
fn one_source_is_held_to_its_share() {
    let mut t = pending(64);
    t.insert((host(1), 0), (), at(0));
    for id in 0..1_000 {
        t.insert((host(66), id), (), at(1));
    }
    assert_eq!(t.stats().len, 1 + 64 / SHARE_DIVISOR as u64);
    assert_eq!(t.fair_stats().host_share, 1_000 - 8);
    assert_eq!(t.stats().evicted, 0);
    assert!(
        t.answer(&(host(1), 0), at(2)).is_some(),
        "the other host's entry stays"
    );
}

/// Spoofed sources, one entry each, fill the table: while their entries are fresh new ones
/// are refused and the entries held stay; once past the answer deadline they make room.
#[test]
fn a_spoofed_flood_is_refused_then_aged_out() {
    let mut t = pending(64);
    t.insert((host(1), 7), (), at(0));
    for i in 0..200 {
        t.insert((host(1_000 + i), 0), (), at(100));
    }
    let f = t.fair_stats();
    assert_eq!((t.stats().len, f.table_full), (64, 200 - 63));
    assert_eq!(t.stats().evicted, 0, "nothing fresh is evicted");
    // Past the deadline (10 s) the oldest unanswered entry goes first: the client's own,
    // which no answer came for in 10 s.
    t.insert((host(2_000), 0), (), at(10_050));
    assert_eq!(t.fair_stats().unanswered_evicted, 1);
    assert!(t.take(&(host(1), 7), at(10_050)).is_none());
    // An answered entry is never the one evicted past the deadline.
    let mut s: Bounded<(IpAddr, u32), bool> = Bounded::fair(
        4,
        std::time::Duration::from_mins(10),
        Fairness {
            deadline: std::time::Duration::from_secs(10),
            owner: |k: &(IpAddr, u32), _: &bool| k.0,
            answered: |v: &bool| *v,
        },
    );
    s.insert((host(1), 0), true, at(0));
    for i in 0..3 {
        s.insert((host(10 + i), 0), false, at(1));
    }
    s.insert((host(20), 0), false, at(20_000));
    assert!(s.get_mut(&(host(1), 0), at(20_000)).is_some());
    assert!(s.get_mut(&(host(10), 0), at(20_000)).is_none());
    assert_eq!(s.fair_stats().unanswered_evicted, 1);
}

/// A host whose transactions were answered displaces a flood's fresh entries; the flood's
/// sources, never answered, cannot displace anything.
#[test]
fn standing_displaces_the_unanswered_flood() {
    let mut t = pending(64);
    // The client's first query is answered: it has standing.
    t.insert((host(1), 0), (), at(0));
    assert!(t.answer(&(host(1), 0), at(50)).is_some());
    for i in 0..64 {
        t.insert((host(1_000 + i), 0), (), at(100));
    }
    assert_eq!(t.stats().len, 64);
    // Its next query, within the deadline of every flood entry, displaces the oldest.
    t.insert((host(1), 1), (), at(200));
    assert_eq!(t.fair_stats().displaced, 1);
    assert!(t.get_mut(&(host(1), 1), at(200)).is_some());
    assert!(t.get_mut(&(host(1_000), 0), at(200)).is_none());
    // More flood: refused, and the client's pending query stays until answered.
    for i in 0..500 {
        t.insert((host(5_000 + i), 0), (), at(300));
    }
    assert_eq!(t.fair_stats().table_full, 500);
    assert!(t.answer(&(host(1), 1), at(400)).is_some());
    assert_eq!(t.stats().evicted, 1);
    // A source without standing is refused rather than displace another.
    t.insert((host(1), 2), (), at(400));
    t.insert((host(9_999), 0), (), at(500));
    assert_eq!(t.fair_stats().table_full, 501);
}

/// Every removal path releases the owner's share, so a host that is answered or expires can
/// open entries again.
#[test]
fn shares_are_released_by_every_removal() {
    let mut t = pending(16);
    let share = 16 / SHARE_DIVISOR;
    for round in 0..5u32 {
        for id in 0..4 {
            t.insert(
                (host(1), round * 10 + id),
                (),
                at(u64::from(round) * 100_000),
            );
        }
        assert_eq!(t.stats().len, share as u64);
        match round {
            0 => assert!(t.take(&(host(1), 0), at(0)).is_some()),
            1 => assert!(t.answer(&(host(1), 10), at(100_000)).is_some()),
            _ => {} // expiry (60 s) releases the rest
        }
        assert!(t.fair.as_ref().unwrap().held.values().all(|&n| n <= share));
    }
    t.expire(at(10_000_000));
    assert!(t.fair.as_ref().unwrap().held.is_empty());
    // make_room + try_insert, as owners that release what they evict do.
    let mut t = pending(2);
    t.insert((host(1), 0), (), at(0));
    t.insert((host(2), 0), (), at(0));
    assert!(t.make_room(&(host(3), 0), &(), at(100)).is_none(), "fresh");
    assert_eq!(t.try_insert((host(3), 0), (), at(100)), Err(()));
    let gone = t.make_room(&(host(3), 0), &(), at(20_000));
    assert_eq!(gone.map(|g| g.0), Some((host(1), 0)));
    assert_eq!(t.try_insert((host(3), 0), (), at(20_000)), Ok(()));
    assert_eq!(t.fair.as_ref().unwrap().held.get(&host(1)), None);
}
