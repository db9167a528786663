//! `cargo run --release -p sensor-tests --bin lru-bench [BENCHMARKS.md]`: the engine's
//! LRU-evicting source tables against `hashlink::LinkedHashMap` and the `lru` crate, on the
//! access patterns those tables see, and writes (or replaces) the "LRU tables" section of
//! BENCHMARKS.md. Machines are small and noisy: read the ratios of one run, not the digits.
//!
//! "Lazy index" is the pattern the tables used before (`ppr.rs`, `detect/bro.rs`,
//! `detect/trw.rs`): a hash map whose values carry the sequence number of their last touch,
//! plus a `BTreeSet<(sequence, key)>` filed at insertion and refiled only when an entry reaches
//! the front with a stale sequence. All three use the same keyed hasher (foldhash, random
//! seed): the keys are source addresses off the wire, so an attacker picks them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

type Hasher = foldhash::fast::RandomState;
type HashMap<K, V> = std::collections::HashMap<K, V, Hasher>;

/// Counts live heap bytes, for bytes per entry that do not depend on RSS rounding.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to `System` with the same arguments; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size().cast_signed(), Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size().cast_signed(), Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new.cast_signed() - l.size().cast_signed(), Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A stand-in for a source's summary: small and fixed, as the per-source structs are before
/// their sets grow (only the tables' own overhead differs between the implementations).
type Value = [u64; 4];

/// The tables' default source cap (`PprConfig::max_sources`, `BroScanConfig::max_sources`).
const CAP: usize = 200_000;

/// The operations every implementation offers: touch-or-insert (evicting the least recently
/// used at the cap), and the number of evictions.
trait Table {
    const NAME: &'static str;
    fn new(cap: usize) -> Self;
    fn access(&mut self, key: IpAddr);
    fn evicted(&self) -> u64;
    fn len(&self) -> usize;
}

struct LazyIndex {
    map: HashMap<IpAddr, (Value, u64, u64)>,
    lru: BTreeSet<(u64, IpAddr)>,
    seq: u64,
    cap: usize,
    evicted: u64,
}

impl Table for LazyIndex {
    const NAME: &'static str = "lazy index (HashMap + BTreeSet)";
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::default(),
            lru: BTreeSet::new(),
            seq: 0,
            cap,
            evicted: 0,
        }
    }
    fn access(&mut self, key: IpAddr) {
        self.seq += 1;
        if let Some((v, touched, _)) = self.map.get_mut(&key) {
            *touched = self.seq;
            v[0] += 1;
            return;
        }
        while self.map.len() >= self.cap {
            let Some((k, ip)) = self.lru.pop_first() else {
                break;
            };
            let (_, touched, lru_key) = self.map.get_mut(&ip).expect("live");
            if *touched != k {
                *lru_key = *touched;
                self.lru.insert((*touched, ip));
                continue;
            }
            self.map.remove(&ip);
            self.evicted += 1;
        }
        self.lru.insert((self.seq, key));
        self.map.insert(key, ([1, 0, 0, 0], self.seq, self.seq));
    }
    fn evicted(&self) -> u64 {
        self.evicted
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The engine's raised-notice table (`engine.rs`, `RaisedNotices`): no index at all; at the cap
/// the least recently touched eighth goes at once, found by a selection over the whole map.
/// Not exact LRU (its evictions come in batches), so its counts are not compared.
struct Eighth {
    map: HashMap<IpAddr, (Value, u64)>,
    seq: u64,
    cap: usize,
    evicted: u64,
}

impl Table for Eighth {
    const NAME: &'static str = "eighth at a time (HashMap, select)";
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::default(),
            seq: 0,
            cap,
            evicted: 0,
        }
    }
    fn access(&mut self, key: IpAddr) {
        self.seq += 1;
        if let Some((v, touched)) = self.map.get_mut(&key) {
            *touched = self.seq;
            v[0] += 1;
            return;
        }
        if self.map.len() >= self.cap {
            let mut order: Vec<(u64, IpAddr)> = self.map.iter().map(|(k, e)| (e.1, *k)).collect();
            let n = (self.cap / 8).max(1).min(order.len());
            order.select_nth_unstable(n - 1);
            for (_, k) in &order[..n] {
                self.map.remove(k);
            }
            self.evicted += n as u64;
        }
        self.map.insert(key, ([1, 0, 0, 0], self.seq));
    }
    fn evicted(&self) -> u64 {
        self.evicted
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

struct Hashlink {
    map: hashlink::LinkedHashMap<IpAddr, Value, Hasher>,
    cap: usize,
    evicted: u64,
}

impl Table for Hashlink {
    const NAME: &'static str = "`hashlink::LinkedHashMap`";
    fn new(cap: usize) -> Self {
        Self {
            map: hashlink::LinkedHashMap::with_hasher(Hasher::default()),
            cap,
            evicted: 0,
        }
    }
    fn access(&mut self, key: IpAddr) {
        if let Some(v) = self.map.to_back(&key) {
            v[0] += 1;
            return;
        }
        while self.map.len() >= self.cap && self.map.pop_front().is_some() {
            self.evicted += 1;
        }
        self.map.insert(key, [1, 0, 0, 0]);
    }
    fn evicted(&self) -> u64 {
        self.evicted
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

struct Lru {
    /// Unbounded, evicted by hand: the engine's tables also have a byte budget, so the count
    /// cap alone does not decide eviction (and a bounded `LruCache` allocates its cap up front).
    map: lru::LruCache<IpAddr, Value, Hasher>,
    cap: usize,
    evicted: u64,
}

impl Table for Lru {
    const NAME: &'static str = "`lru::LruCache`";
    fn new(cap: usize) -> Self {
        Self {
            map: lru::LruCache::unbounded_with_hasher(Hasher::default()),
            cap,
            evicted: 0,
        }
    }
    fn access(&mut self, key: IpAddr) {
        if let Some(v) = self.map.get_mut(&key) {
            v[0] += 1;
            return;
        }
        while self.map.len() >= self.cap && self.map.pop_lru().is_some() {
            self.evicted += 1;
        }
        self.map.put(key, [1, 0, 0, 0]);
    }
    fn evicted(&self) -> u64 {
        self.evicted
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// xorshift64: the same key sequence for every implementation, cheap beside a table access.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn addr(i: u64) -> IpAddr {
    // Distinct for i < 2^32 (truncation intended: the benchmark uses far fewer); spread like
    // spoofed sources.
    #[allow(clippy::cast_possible_truncation)]
    let i = i as u32;
    IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)))
}

/// The access patterns, each as a key sequence built before timing.
#[derive(Clone, Copy)]
enum Pattern {
    /// 4,096 sources touched at random, far below the cap: no eviction.
    Normal,
    /// A full table, then every access a new source, each evicting one.
    Flood,
    /// A full table, then a flood of new sources interleaved one to one with touches of 4,096
    /// sources that stay in (they are refiled when they reach the front).
    FloodAndHot,
}

const OPS: u64 = 2_000_000;
const HOT: u64 = 4_096;

impl Pattern {
    const ALL: [Pattern; 3] = [Pattern::Normal, Pattern::Flood, Pattern::FloodAndHot];

    fn label(self) -> &'static str {
        match self {
            Pattern::Normal => "(a) normal: 4,096 sources, 2 M random touches, no eviction",
            Pattern::Flood => "(b) flood at the cap: 2 M new sources, each evicting one",
            Pattern::FloodAndHot => {
                "(c) flood at the cap, 1 M new sources interleaved with 1 M touches of 4,096"
            }
        }
    }

    /// (keys inserted before timing, timed keys).
    fn keys(self) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        match self {
            Pattern::Normal => (
                (0..HOT).map(addr).collect(),
                (0..OPS).map(|_| addr(rng.next() % HOT)).collect(),
            ),
            Pattern::Flood => (
                (0..CAP as u64).map(addr).collect(),
                (0..OPS).map(|i| addr(CAP as u64 + i)).collect(),
            ),
            Pattern::FloodAndHot => (
                (0..CAP as u64).map(addr).collect(),
                (0..OPS)
                    .map(|i| {
                        if i % 2 == 0 {
                            addr(CAP as u64 + i)
                        } else {
                            addr(rng.next() % HOT)
                        }
                    })
                    .collect(),
            ),
        }
    }
}

/// ns per timed access, with the evictions and final length (the same for every
/// implementation, checked by the caller).
fn run<T: Table>(pre: &[IpAddr], timed: &[IpAddr]) -> (f64, u64, usize) {
    let mut t = T::new(CAP);
    for &k in pre {
        t.access(k);
    }
    let start = Instant::now();
    for &k in timed {
        t.access(k);
    }
    let ns = start.elapsed().as_nanos() as f64 / timed.len() as f64;
    (ns, t.evicted(), t.len())
}

/// Heap bytes per entry of a table holding `CAP` entries (the same keys for every one).
fn bytes_per_entry<T: Table>() -> f64 {
    let before = LIVE.load(Relaxed);
    let mut t = T::new(CAP);
    for i in 0..CAP as u64 {
        t.access(addr(i));
    }
    let bytes = LIVE.load(Relaxed) - before;
    assert_eq!(t.len(), CAP);
    drop(t);
    bytes as f64 / CAP as f64
}

/// Runs of each measurement; the median is kept.
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn section() -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(
        md,
        "## LRU tables (release, `lru-bench`)\n\n\
         The source tables evict the least recently used source at their cap. The pattern \
         they used (a hash map plus a lazily refiled `BTreeSet<(sequence, source)>`) against \
         `hashlink::LinkedHashMap` and `lru::LruCache`, and the raised-notice table's pattern \
         (no index; at the cap the least recently touched eighth is dropped at once, found by \
         a selection over the map), all with keyed foldhash, {} B values, \
         cap {CAP}: ns per access (median of {ROUNDS} interleaved rounds), and heap bytes per \
         entry at the cap (counting allocator). Written by \
         `cargo run --release -p sensor-tests --bin lru-bench`. The Bro, TRW and PPR source \
         tables use `hashlink` for the flood rows, where the caps matter; the raised-notice \
         table, touched once per notice and rarely by a new key, keeps its batch eviction.\n",
        size_of::<Value>()
    )?;
    writeln!(
        md,
        "| pattern | {} | {} | {} | hashlink ÷ lazy | lru ÷ lazy | {} | hashlink ÷ eighth |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|",
        LazyIndex::NAME,
        Hashlink::NAME,
        Lru::NAME,
        Eighth::NAME,
    )?;
    for p in Pattern::ALL {
        eprintln!("lru-bench: {}", p.label());
        let (pre, timed) = p.keys();
        let mut ns = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            let a = run::<LazyIndex>(&pre, &timed);
            let b = run::<Hashlink>(&pre, &timed);
            let c = run::<Lru>(&pre, &timed);
            anyhow::ensure!(
                (a.1, a.2) == (b.1, b.2) && (a.1, a.2) == (c.1, c.2),
                "evictions and lengths differ: {a:?} {b:?} {c:?}"
            );
            ns[0].push(a.0);
            ns[1].push(b.0);
            ns[2].push(c.0);
            ns[3].push(run::<Eighth>(&pre, &timed).0);
        }
        let [a, b, c, d] = ns.map(median);
        writeln!(
            md,
            "| {} | {a:.0} | {b:.0} | {c:.0} | {:.2} | {:.2} | {d:.0} | {:.2} |",
            p.label(),
            b / a,
            c / a,
            b / d
        )?;
    }
    let (a, b, c, d) = (
        bytes_per_entry::<LazyIndex>(),
        bytes_per_entry::<Hashlink>(),
        bytes_per_entry::<Lru>(),
        bytes_per_entry::<Eighth>(),
    );
    writeln!(
        md,
        "| heap bytes per entry at the cap | {a:.0} | {b:.0} | {c:.0} | {:.2} | {:.2} | {d:.0} | {:.2} |",
        b / a,
        c / a,
        b / d
    )?;
    Ok(md)
}

/// Replaces the section in `md` (from its heading to the next `## `), or appends it.
fn splice(md: &str, section: &str) -> String {
    const HEADING: &str = "## LRU tables";
    let Some(start) = md.find(HEADING) else {
        return format!("{}\n\n{section}", md.trim_end());
    };
    let end = md[start + HEADING.len()..]
        .find("\n## ")
        .map_or(md.len(), |i| start + HEADING.len() + i + 1);
    format!("{}{section}\n{}", &md[..start], &md[end..])
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("BENCHMARKS.md"), PathBuf::from);
    let section = section()?;
    print!("{section}");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice(&old, &section))?;
    eprintln!("lru-bench: wrote {}", path.display());
    Ok(())
}
