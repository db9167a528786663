use super::*;
use crate::bt::decode_bencode;
use crate::bt::test_support::{mutate, unhex, XorShift};

/// What [`scan`] says of `data`, next to what the tree decoder says of it.
fn both(data: &[u8], max_depth: usize) -> (Option<BencodeFault>, Option<BencodeFault>) {
    let ours = scan(data, max_depth, &mut |_, _, _| {}).err();
    let reference = decode_bencode(data, max_depth).err();
    (ours, reference)
}

fn agree(data: &[u8], max_depth: usize) {
    let (ours, reference) = both(data, max_depth);
    assert_eq!(ours, reference, "{:?}", String::from_utf8_lossy(data));
}

/// Every prefix of `data`, and `rounds` copies with one to three bytes replaced, inserted or
/// removed, must get the same verdict from both decoders at depths 2, 4 and 8.
fn differential(data: &[u8], rng: &mut XorShift, rounds: usize) {
    for depth in [2, 4, 8] {
        agree(data, depth);
    }
    for cut in 0..data.len() {
        agree(&data[..cut], 8);
    }
    for _ in 0..rounds {
        let m = mutate(data, rng);
        for depth in [3, 8] {
            agree(&m, depth);
        }
    }
}

const VECTORS: &[&[u8]] = &[
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
    b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
    b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:wantl2:n42:n6ee1:q9:get_peers1:t2:aa1:y1:qe",
    b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
    b"d1:t2:aa1:y1:r1:rd2:id20:abcdefghij01234567896:valuesl6:axje.ueee",
    b"d1:ad2:id20:abcdefghij01234567891:xlllleeeee1:q4:ping1:t2:aa1:y1:qe",
    b"d0:0:1:ai-12e1:bi+7e1:cld1:xi0eeee",
];

#[test]
fn every_fault_class_matches_the_tree_decoder() {
    let cases: &[(&[u8], Option<BencodeFault>)] = &[
        (b"i42e", None),
        (b"i-42e", None),
        // Rust's integer parser takes a `+`; so does the reference decoder.
        (b"i+42e", None),
        (b"d+1:a0:e", None),
        (b"le", None),
        (b"de", None),
        (b"0:", None),
        (b"", Some(BencodeFault::Truncated)),
        (b"i12", Some(BencodeFault::Truncated)),
        (b"i-", Some(BencodeFault::Truncated)),
        (b"5:ab", Some(BencodeFault::LengthBeyondEnd)),
        (b"l", Some(BencodeFault::Truncated)),
        (b"d1:a", Some(BencodeFault::Truncated)),
        (b"d12", Some(BencodeFault::Truncated)),
        (b"i1ex", Some(BencodeFault::TrailingData)),
        (b"lee", Some(BencodeFault::TrailingData)),
        (b"i-0e", Some(BencodeFault::Syntax)),
        (b"i01e", Some(BencodeFault::Syntax)),
        (b"i00e", Some(BencodeFault::Syntax)),
        (b"ie", Some(BencodeFault::Syntax)),
        (b"i-e", Some(BencodeFault::Syntax)),
        (b"i1x", Some(BencodeFault::Syntax)),
        (b"i1-2e", Some(BencodeFault::Syntax)),
        (b"i99999999999999999999e", Some(BencodeFault::Syntax)),
        (b"-1:a", Some(BencodeFault::Syntax)),
        (b"x", Some(BencodeFault::Syntax)),
        (b"di1e0:e", Some(BencodeFault::Syntax)),
        (b"d-1:ae", Some(BencodeFault::Syntax)),
        (b"d1:ai1e1:ai2ee", Some(BencodeFault::DuplicateKey)),
        // The duplicate is found once its value is read: a fault inside the value wins.
        (b"d1:ai1e1:ai2x", Some(BencodeFault::Syntax)),
        (b"d1:ai1e1:ai2ei", Some(BencodeFault::DuplicateKey)),
        (b"lllllllllee", Some(BencodeFault::TooDeep)),
        (b"llllllleeeeeee", None),
        (b"llllllllleeeeeeeee", Some(BencodeFault::TooDeep)),
    ];
    for (data, want) in cases {
        let (ours, reference) = both(data, 8);
        let shown = String::from_utf8_lossy(data);
        assert_eq!(reference, *want, "reference on {shown:?}");
        assert_eq!(ours, *want, "scan on {shown:?}");
    }
}

#[test]
fn mutated_krpc_gets_the_tree_decoders_verdict() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for v in VECTORS {
        differential(v, &mut rng, 2_000);
    }
}

#[test]
fn duplicates_are_found_past_the_inline_keys() {
    for n in [INLINE_KEYS - 1, INLINE_KEYS, INLINE_KEYS + 1, 200] {
        // Unsorted keys (descending), then a repeat of the first.
        let mut d = b"d".to_vec();
        for k in (0..n).rev() {
            d.extend_from_slice(format!("4:{k:04}i{k}e").as_bytes());
        }
        let unique = [d.as_slice(), b"e"].concat();
        assert_eq!(both(&unique, 8), (None, None), "{n} keys");
        d.extend_from_slice(format!("4:{:04}0:e", n - 1).as_bytes());
        let want = Some(BencodeFault::DuplicateKey);
        assert_eq!(both(&d, 8), (want, want), "{n} keys");
    }
}

#[test]
fn entries_reach_the_sink_children_first() {
    let data = b"d1:ad2:id3:abc4:porti6881ee1:t2:aa1:vl1:x1:yee";
    let mut seen = Vec::new();
    let root = scan(data, 8, &mut |depth, key: &[u8], v| {
        seen.push((depth, String::from_utf8_lossy(key).into_owned(), v));
    })
    .unwrap();
    assert_eq!(root, Value::Dict(Dict { raw: data }));
    let keys: Vec<_> = seen.iter().map(|(d, k, _)| (*d, k.as_str())).collect();
    assert_eq!(keys, [(1, "id"), (1, "port"), (0, "a"), (0, "t"), (0, "v")]);
    assert_eq!(seen[0].2, Value::Bytes(b"abc"));
    assert_eq!(seen[1].2, Value::Int(6881));
    let a = seen[2].2.dict().unwrap();
    assert_eq!(a.raw, b"d2:id3:abc4:porti6881ee");
    let entries: Vec<_> = a.entries().collect();
    assert_eq!(
        entries,
        [
            (&b"id"[..], Value::Bytes(b"abc")),
            (&b"port"[..], Value::Int(6881))
        ]
    );
    assert_eq!(a.get(b"port"), Some(Value::Int(6881)));
    assert_eq!(a.get(b"ip"), None);
    let list = seen[4].2.list().unwrap();
    let items: Vec<_> = list.iter().collect();
    assert_eq!(items, [Value::Bytes(b"x"), Value::Bytes(b"y")]);
}

#[test]
fn list_items_are_read_lazily_in_order() {
    let Value::List(l) = scan(b"li-3e0:d1:ali1eee4:spame", 8, &mut |_, _, _| {}).unwrap() else {
        panic!("a list")
    };
    let items: Vec<_> = l.iter().collect();
    assert_eq!(
        items,
        [
            Value::Int(-3),
            Value::Bytes(b""),
            Value::Dict(Dict { raw: b"d1:ali1eee" }),
            Value::Bytes(b"spam")
        ]
    );
    // Bytes that were never validated end the walk, they do not panic it.
    let broken = List { raw: b"l5:ab" };
    assert_eq!(broken.iter().count(), 0);
    let broken = List { raw: b"li1ex" };
    assert_eq!(broken.iter().collect::<Vec<_>>(), [Value::Int(1)]);
    let broken = Dict { raw: b"d1:ai1e1:b" };
    assert_eq!(broken.entries().count(), 1);
    assert_eq!(broken.get(b"b"), None);
}

#[test]
fn real_krpc_from_bep5_and_libtorrent_agree() {
    // BEP 42-style hybrid response and libtorrent query/response bytes (as in the DHT tests).
    let mut rng = XorShift(7);
    for hex in [
        "64313a6164323a696432303af7f6007cea13506e514de7ecbc94f2ae517115f8393a696e666f5f686173
        6832303af7f601d8a6276f762c2c3df274af2827f8d1f1de65313a71393a6765745f7065657273313a74
        323a0e61313a76343a4c540101313a79313a7165",
        "64313a7264323a696432303a841944062ef3c488cabdc678968efa6b7267956c353a746f6b656e32303ab9f6
        3322ce7c8090c86f4342dad1591d6558ee4f363a76616c7565736c31383a9451acea4a125effd9dbb000c34a
        4f694a126565313a74343abb020000313a79313a7265",
    ] {
        differential(&unhex(hex), &mut rng, 2_000);
    }
}

mod corpus {
    use super::*;
    use crate::bt::test_support::udp_datagrams;

    /// Every datagram that opens like bencode in the captures with KRPC, whole, cut and
    /// mutated, gets the tree decoder's verdict.
    #[test]
    fn captured_krpc_gets_the_tree_decoders_verdict() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut n = 0;
        for rel in [
            "OISF-suricata-verify/bittorrent-dht/input.pcap",
            "spaiter-BitTorrentBlocker/torrent-dht.pcap",
            "ntop-nDPI/bittorrent_transmission.pcapng",
        ] {
            for d in udp_datagrams(rel) {
                if d.head.first() == Some(&b'd') {
                    differential(&d.head, &mut rng, 50);
                    n += 1;
                }
            }
        }
        assert!(n > 300, "{n} datagrams");
    }
}

#[test]
fn the_fast_integer_path_equals_the_exact_one() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for body in [
        "0",
        "00",
        "01",
        "7",
        "10",
        "-0",
        "-1",
        "+1",
        "",
        "-",
        "999999999999999999",
        "1000000000000000000",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "12x",
        "1-2",
        "0123456789012345678",
    ] {
        for delim in ["e", ":", ""] {
            inputs.push(format!("{body}{delim}").into_bytes());
            inputs.push(format!("{body}{delim}3:abc").into_bytes());
        }
    }
    for input in &inputs {
        for delim in [b'e', b':'] {
            assert_eq!(
                int(input, 0, delim),
                int_exact(input, 0, delim),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

/// Counts the allocations of the calling thread, for [`allocations`]. A per-thread count lets
/// the test harness run other tests in parallel; `dhat`'s testing mode would do the counting
/// but admits one profiler per process, which parallel tests would fight over.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        pub(super) static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) struct Counting;

    fn count() {
        // A const-initialised `Cell` has no destructor: reachable while the thread lives.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }

    // SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
    // `GlobalAlloc` contract; counting touches only a thread-local integer.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: the caller's guarantees on `layout` are passed on as they are.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[global_allocator]
static COUNTING: counting::Counting = counting::Counting;

/// How many allocations `f` made on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = counting::ALLOCATIONS.with(std::cell::Cell::get);
    f();
    counting::ALLOCATIONS.with(std::cell::Cell::get) - before
}

#[test]
fn the_counter_sees_allocations() {
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))), 1);
    let tree = allocations(|| {
        std::hint::black_box(decode_bencode(VECTORS[0], 8).unwrap());
    });
    assert!(tree >= 3, "the tree decoder allocated {tree} times");
}

#[test]
fn reading_krpc_allocates_nothing() {
    use crate::bt::dht;
    let r2 = unhex(
        "64313a7264323a696432303a841944062ef3c488cabdc678968efa6b7267956c353a746f6b656e32303ab9f6
        3322ce7c8090c86f4342dad1591d6558ee4f363a76616c7565736c31383a9451acea4a125effd9dbb000c34a
        4f694a126565313a74343abb020000313a79313a7265",
    );
    for v in VECTORS.iter().copied().chain([r2.as_slice()]) {
        let mut seen = 0u64;
        let n = allocations(|| {
            if let Ok(m) = dht::parse(v) {
                seen += m.values().count() as u64;
                seen += m.for_each_peer(true, 256, |_| seen += 1).decoded;
                seen += m.for_each_node(256, |_| seen += 1).decoded;
            }
        });
        assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(v));
        std::hint::black_box(seen);
    }
}

#[test]
fn reading_pex_handshakes_and_tracker_replies_allocates_nothing() {
    use crate::bt::{http_tracker, peer_wire};
    let pex: &[u8] = b"d5:added12:\xc0\x00\x02\x01\x1a\xe1\xc0\x00\x02\x02\x1a\xe17:added.f2:\x10\x007:dropped6:\xc0\x00\x02\x03\x1a\xe1e";
    let hs: &[u8] =
        b"d1:md6:ut_pexi1e12:ut_holepunchi4ee1:pi6881e1:v4:Tr306:yourip4:\xc0\x00\x02\x01e";
    let reply: &[u8] = b"d8:intervali1800e5:peersld2:ip9:192.0.2.14:porti6881eed2:ip8:a.b-c_d14:porti2eee6:peers618:iiiiiiiiiiiiiiiippe";
    let n = allocations(|| {
        let p = peer_wire::parse_pex(pex).unwrap();
        assert_eq!(p.for_each_added(64, |_, _| {}).decoded, 2);
        assert_eq!(peer_wire::parse_ext_handshake(hs).unwrap().ut_pex, Some(1));
        let r = http_tracker::parse_announce_body(reply).unwrap();
        let c = r.for_each_peer(64, |_| {});
        assert_eq!((c.entries.decoded, c.dns_names), (2, 1));
    });
    assert_eq!(n, 0);
}
