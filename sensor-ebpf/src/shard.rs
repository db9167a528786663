//! Which worker a record goes to: shared by the XDP program (which ring) and userspace (which
//! engine, offline), so that both split the traffic the same way.
//!
//! A worker owns the hosts whose address hashes to its shard. A record goes to the shard of
//! its source and, when different, to the shard of its destination, so every record involving
//! a host reaches the host's worker: everything the engine keeps per host (its connections and
//! scan counters as initiator, the peers announced to it, its PPR samples) is complete in one
//! worker and nothing is shared. A record to a multicast or broadcast address (an LSD announce,
//! BEP 14) concerns every host of the segment, so it goes to every shard.

/// At most this many shards (rings `EVENTS_0` to `EVENTS_3` in the XDP program).
pub const MAX_SHARDS: u32 = 4;

/// The shard of `addr` (as in [`crate::FlowHeader`]: IPv4 in the first 4 bytes, the rest
/// zero) among `n` (1..=[`MAX_SHARDS`]; anything else is treated as 1).
///
/// The hash is keyed by `seed` (random per run): without it, a sender of spoofed sources could
/// pick addresses that all land in one shard. Any seed gives the same results, only another
/// split; the kernel and an offline run need not share it.
#[inline(always)]
#[must_use]
pub fn shard_of(addr: &[u8; 16], seed: u64, n: u32) -> u32 {
    if n <= 1 || n > MAX_SHARDS {
        return 0;
    }
    // Two u64 halves read unaligned (no copy into temporaries: the XDP program is close to
    // the BPF stack limit).
    // SAFETY: `addr` is 16 readable bytes; both reads are unaligned-safe and in bounds.
    #[allow(clippy::cast_ptr_alignment)]
    let (lo, hi) = unsafe {
        let p = addr.as_ptr().cast::<u64>();
        (
            u64::from_le(p.read_unaligned()),
            u64::from_le(p.add(1).read_unaligned()),
        )
    };
    // Two rounds of a multiply-xorshift mix (the finaliser of MurmurHash3's 64-bit variant):
    // every input bit reaches the low bits the modulus reads. Plain arithmetic, no loop: a
    // handful of instructions for the verifier.
    let h = mix(mix(lo ^ seed) ^ hi);
    // `n` is 2..=4: the remainder fits a u32.
    #[allow(clippy::cast_possible_truncation)]
    let shard = (h % u64::from(n)) as u32;
    shard
}

#[inline(always)]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Whether `addr` (IP version `ip_version`) is a multicast or limited-broadcast address: one
/// that names no single host.
#[inline(always)]
#[must_use]
pub fn is_group(addr: &[u8; 16], ip_version: u8) -> bool {
    if ip_version == 6 {
        // ff00::/8 (RFC 4291, section 2.7).
        addr[0] == 0xff
    } else {
        // 224.0.0.0/4 (RFC 5771) and 255.255.255.255 (RFC 919).
        ((addr[0] & 0xf0) == 0xe0)
            | ((addr[0] == 0xff) & (addr[1] == 0xff) & (addr[2] == 0xff) & (addr[3] == 0xff))
    }
}

/// The shards a record from `src` to `dst` goes to, as a bit mask (bit `i`: shard `i`).
#[inline(always)]
#[must_use]
pub fn targets(src: &[u8; 16], dst: &[u8; 16], ip_version: u8, seed: u64, n: u32) -> u32 {
    if n <= 1 || n > MAX_SHARDS {
        return 1;
    }
    if is_group(dst, ip_version) {
        return (1 << n) - 1;
    }
    (1 << shard_of(src, seed, n)) | (1 << shard_of(dst, seed, n))
}

/// The shards a TCP record goes to. The connection tracker admits a connection in the worker
/// of its originator only, and every segment that can open a connection goes to that worker
/// alone: a SYN to its sender's shard, a SYN-ACK to its receiver's (the SYN's sender; without a
/// SYN it opens a reverse connection whose originator, as Bro records it, is that receiver).
/// So the other endpoint's worker never opens a connection it does not own, and a flood of
/// spoofed SYNs spreads over the workers by (random) source instead of doubling on the
/// victim's. Everything else (RST, FIN, payload of marked flows) goes to both endpoints' shards:
/// the stream readers of both hosts and the tracker of the owner need it.
#[inline(always)]
#[must_use]
pub fn tcp_targets(
    flags: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    ip_version: u8,
    seed: u64,
    n: u32,
) -> u32 {
    if n <= 1 || n > MAX_SHARDS {
        return 1;
    }
    let opening = flags & (crate::tcp_flag::SYN | crate::tcp_flag::RST) == crate::tcp_flag::SYN;
    if !opening {
        return targets(src, dst, ip_version, seed, n);
    }
    let owner = if flags & crate::tcp_flag::ACK == 0 {
        src
    } else {
        dst
    };
    1 << shard_of(owner, seed, n)
}

/// The shards an ICMP unreachable goes to: those of its own endpoints and of the quoted
/// packet's, so the worker tracking the quoted connection gets it whoever sent the error.
#[inline(always)]
#[must_use]
pub fn icmp_targets(
    outer: (&[u8; 16], &[u8; 16]),
    inner: (&[u8; 16], &[u8; 16]),
    ip_version: u8,
    seed: u64,
    n: u32,
) -> u32 {
    targets(outer.0, outer.1, ip_version, seed, n) | targets(inner.0, inner.1, ip_version, seed, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    #[test]
    fn one_shard_takes_everything() {
        let (a, b) = (v4([10, 0, 0, 1]), v4([10, 0, 0, 2]));
        assert_eq!(targets(&a, &b, 4, 7, 1), 1);
        assert_eq!(shard_of(&a, 7, 1), 0);
        // Out of range counts as one shard rather than indexing a ring that does not exist.
        assert_eq!(targets(&a, &b, 4, 7, 9), 1);
    }

    #[test]
    fn a_record_reaches_both_endpoints_shards_and_only_those() {
        for n in 2..=MAX_SHARDS {
            for i in 0..=255u8 {
                let (a, b) = (v4([10, 0, 1, i]), v4([192, 168, i, 7]));
                let mask = targets(&a, &b, 4, 0x1234, n);
                let (sa, sb) = (shard_of(&a, 0x1234, n), shard_of(&b, 0x1234, n));
                assert!(sa < n && sb < n);
                assert_eq!(mask, (1 << sa) | (1 << sb));
                assert_eq!(
                    mask,
                    targets(&b, &a, 4, 0x1234, n),
                    "direction does not matter"
                );
            }
        }
    }

    #[test]
    fn opening_segments_go_to_the_originators_shard_only() {
        use crate::tcp_flag::{ACK, FIN, RST, SYN};
        let n = 4;
        // Find two hosts in different shards.
        let a = v4([10, 0, 0, 1]);
        let b = (0..=255u8)
            .map(|i| v4([10, 0, 1, i]))
            .find(|b| shard_of(b, 9, n) != shard_of(&a, 9, n))
            .unwrap();
        let (sa, sb) = (1 << shard_of(&a, 9, n), 1 << shard_of(&b, 9, n));
        assert_eq!(tcp_targets(SYN, &a, &b, 4, 9, n), sa, "SYN: its sender's");
        assert_eq!(
            tcp_targets(SYN | ACK, &b, &a, 4, 9, n),
            sa,
            "SYN-ACK: its receiver's"
        );
        assert_eq!(tcp_targets(RST | ACK, &b, &a, 4, 9, n), sa | sb);
        assert_eq!(tcp_targets(SYN | RST, &b, &a, 4, 9, n), sa | sb);
        assert_eq!(tcp_targets(FIN | ACK, &a, &b, 4, 9, n), sa | sb);
        assert_eq!(tcp_targets(SYN, &a, &b, 4, 9, 1), 1);
        let r = v4([192, 0, 2, 1]);
        let sr = 1 << shard_of(&r, 9, n);
        assert_eq!(icmp_targets((&r, &a), (&a, &b), 4, 9, n), sa | sb | sr);
    }

    #[test]
    fn group_destinations_go_to_every_shard() {
        let a = v4([10, 0, 0, 1]);
        assert_eq!(targets(&a, &v4([239, 192, 152, 143]), 4, 1, 3), 0b111);
        assert_eq!(targets(&a, &v4([255, 255, 255, 255]), 4, 1, 2), 0b11);
        let mut ff02 = [0; 16];
        ff02[0] = 0xff;
        ff02[1] = 0x02;
        assert_eq!(targets(&a, &ff02, 6, 1, 4), 0b1111);
        // ff.x.x.x in IPv4 is class E space, not a group, unless all ones.
        assert!(!is_group(&v4([255, 0, 0, 1]), 4));
        assert!(!is_group(&v4([10, 0, 0, 255]), 4));
    }

    #[test]
    fn hosts_spread_over_the_shards_and_the_seed_changes_the_split() {
        let mut counts = [0u32; 4];
        let mut moved = 0;
        for i in 0..4096u32 {
            let b = i.to_be_bytes();
            let a = v4([10, b[1], b[2], b[3]]);
            counts[shard_of(&a, 1, 4) as usize] += 1;
            moved += u32::from(shard_of(&a, 1, 4) != shard_of(&a, 2, 4));
        }
        for c in counts {
            assert!((900..1150).contains(&c), "uneven split {counts:?}");
        }
        assert!(moved > 2500, "seed barely matters: {moved} of 4096 moved");
    }
}
