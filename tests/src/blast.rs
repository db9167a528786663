//! A bounded fast sender for the live tests and the live benchmark: spoofed-source SYN floods,
//! optionally with the frames of a capture (a real scanner's SYNs) interleaved, sent out of one
//! veth end inside a lab namespace.
//!
//! tcpreplay pays one `sendto` per frame and tops out near 0.3 Mpps here, well below what the
//! agent must be tested against. This sender writes frames into an AF_PACKET TX ring
//! (`PACKET_TX_RING`, `TPACKET_V2`, see the kernel's `Documentation/networking/packet_mmap.rst`)
//! and flushes a whole batch with one `send`, bypassing the qdisc layer (`PACKET_QDISC_BYPASS`):
//! one syscall per batch, no copy from userspace per frame beyond the ring write. The kernel has
//! no pktgen module here, and pktgen cannot build TCP SYNs anyway.
//!
//! Safety, the rules of [`crate::lab`]: a flood is always bounded by a frame count *and* a
//! duration, and it is sent only from a thread that has entered the named namespace, which must
//! be one of ours (`sxlab-…`), must not be the namespace the caller runs in, and must hold the
//! interface as a veth. The AF_PACKET socket is created inside that namespace, so it cannot
//! reach any other interface.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

/// What to send.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Spoofed SYNs to send (the flood stops at this count or at `max_duration`, whichever
    /// comes first).
    pub count: u64,
    /// Frames per second, flood and mix together; `None` for as fast as the ring drains.
    pub pps: Option<u64>,
    /// Hard stop.
    pub max_duration: Duration,
    /// Distinct spoofed sources; SYN `i` comes from source `i % sources`. At most 2^24 (the
    /// sources are a keyed permutation of 10.0.0.0/8, so they never repeat within that).
    pub sources: u32,
    /// Key of the source and port permutation: the same seed sends the same frames.
    pub seed: u32,
    /// The flood's target.
    pub victim: SocketAddrV4,
    /// Frames sent among the flood (whole Ethernet frames, e.g. a scanner's SYNs), in order.
    pub mix: Vec<Vec<u8>>,
    /// One mix frame after every this many flood frames; `None` spreads the mix evenly over
    /// the flood. Mix frames left when the flood ends are sent after it.
    pub mix_every: Option<u64>,
}

impl Spec {
    /// A flood of `count` SYNs from `count` distinct sources to [`crate::flood::VICTIM`].
    pub fn flood(count: u64, pps: Option<u64>, max_duration: Duration) -> Self {
        Spec {
            count,
            pps,
            max_duration,
            sources: u32::try_from(count.clamp(1, MAX_SOURCES)).unwrap_or(u32::MAX),
            seed: 1,
            victim: crate::flood::VICTIM,
            mix: Vec::new(),
            mix_every: None,
        }
    }
}

/// Most distinct spoofed sources: the size of 10.0.0.0/8.
pub const MAX_SOURCES: u64 = 1 << 24;

/// What was sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Flood frames handed to the kernel.
    pub flood_sent: u64,
    /// Mix frames handed to the kernel.
    pub mix_sent: u64,
    /// Frames the kernel refused as malformed (`TP_STATUS_WRONG_FORMAT`): not sent.
    pub wrong_format: u64,
    /// `send` calls (one per batch).
    pub batches: u64,
    pub seconds: f64,
    /// CPU time of the sending thread (user + system): the generator's cost, which the other
    /// processes of a busy machine do not inflate the way they do wall time.
    pub cpu_seconds: f64,
    /// Whether the duration bound, not the count, ended the run.
    pub hit_duration: bool,
}

impl Stats {
    /// Frames the kernel took (handed over and not refused).
    pub fn sent(&self) -> u64 {
        self.flood_sent + self.mix_sent - self.wrong_format
    }

    #[allow(clippy::cast_precision_loss)] // rates: a few significant digits suffice
    pub fn pps(&self) -> f64 {
        self.sent() as f64 / self.seconds.max(1e-9)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "flood_sent": self.flood_sent,
            "mix_sent": self.mix_sent,
            "wrong_format": self.wrong_format,
            "batches": self.batches,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "pps": self.pps(),
            "hit_duration": self.hit_duration,
        })
    }
}

/// Sends `spec` out of `iface` in the lab namespace `netns`; returns when the count or the
/// duration is reached. Refuses anything but a veth inside one of our lab namespaces.
pub fn send(netns: &str, iface: &str, spec: &Spec) -> anyhow::Result<Stats> {
    ensure!(
        spec.sources >= 1 && u64::from(spec.sources) <= MAX_SOURCES,
        "sources must be 1..=2^24"
    );
    ensure!(
        spec.max_duration > Duration::ZERO && spec.max_duration <= Duration::from_mins(10),
        "a flood is bounded in time: max_duration must be in (0, 10 min]"
    );
    ensure!(
        spec.pps != Some(0),
        "pps must be positive (None: top speed)"
    );
    ensure!(
        spec.mix
            .iter()
            .all(|f| f.len() >= 14 && f.len() <= MAX_FRAME),
        "mix frames must be whole Ethernet frames of at most {MAX_FRAME} bytes"
    );
    let ns_path = check_target(netns, iface)?;
    let (iface, spec) = (iface.to_string(), spec.clone());
    // setns changes only the calling thread's namespace: the whole send runs on a thread of its
    // own, which ends with it.
    std::thread::spawn(move || -> anyhow::Result<Stats> {
        let fd = File::open(&ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
        // SAFETY: a valid namespace fd; affects this thread only.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let mut ring = TxRing::open(&iface)?;
        run(&mut ring, &spec)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
}

/// Checks that `iface` is a veth inside our lab namespace `netns`, which is not the caller's
/// namespace; returns the namespace's path.
pub fn check_target(netns: &str, iface: &str) -> anyhow::Result<std::path::PathBuf> {
    ensure!(
        netns.starts_with(crate::lab::PREFIX) && !netns.contains('/'),
        "refusing to send: {netns:?} is not a lab namespace ({}…)",
        crate::lab::PREFIX
    );
    let path = Path::new("/var/run/netns").join(netns);
    let target = std::fs::metadata(&path)
        .with_context(|| format!("refusing to send: no namespace {netns}"))?;
    for own in ["/proc/self/ns/net", "/proc/1/ns/net"] {
        if let Ok(m) = std::fs::metadata(own) {
            ensure!(
                (m.dev(), m.ino()) != (target.dev(), target.ino()),
                "refusing to send: {netns} is the host's own network namespace ({own})"
            );
        }
    }
    let out = Command::new("ip")
        .args(["-n", netns, "-d", "-j", "link", "show", "dev", iface])
        .output()
        .context("running ip link show")?;
    ensure!(
        out.status.success(),
        "refusing to send: no interface {iface} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let kind = json[0]["linkinfo"]["info_kind"].as_str().unwrap_or("");
    ensure!(
        kind == "veth",
        "refusing to send: {iface} in {netns} is not a veth ({kind:?})"
    );
    Ok(path)
}

/// The send loop: fill ring slots with the schedule's frames, paced to `spec.pps`, one `send`
/// per batch.
fn run(ring: &mut TxRing, spec: &Spec) -> anyhow::Result<Stats> {
    let mut syn = SynFactory::new(spec.victim, spec.seed, spec.sources);
    let every = spec
        .mix_every
        .unwrap_or_else(|| spec.count / (u64::try_from(spec.mix.len()).unwrap_or(u64::MAX) + 1));
    let mut schedule = Schedule {
        flood_left: spec.count,
        flood_index: 0,
        mix: &spec.mix,
        mix_next: 0,
        every,
        since_mix: 0,
    };
    let mut stats = Stats::default();
    // Small batches keep the pacing smooth; at top speed, half the ring per `send`.
    let max_batch = spec
        .pps
        .map_or(ring.frames / 2, |pps| {
            usize::try_from(pps / 2_000).unwrap_or(usize::MAX)
        })
        .clamp(16, ring.frames / 2);
    let cpu_before = thread_cpu_seconds();
    let started = Instant::now();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= spec.max_duration {
            stats.hit_duration = true;
            break;
        }
        let want = match spec.pps {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            Some(pps) => {
                let due = (elapsed.as_secs_f64() * pps as f64) as u64;
                due.saturating_sub(stats.sent())
            }
            None => u64::MAX,
        };
        if want == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let n = usize::try_from(want).unwrap_or(usize::MAX).min(max_batch);
        let mut queued = 0;
        for _ in 0..n {
            let slot = ring.slot()?;
            match schedule.next(&mut syn, slot) {
                Some((len, is_mix)) => {
                    ring.commit(len);
                    queued += 1;
                    if is_mix {
                        stats.mix_sent += 1;
                    } else {
                        stats.flood_sent += 1;
                    }
                }
                None => break,
            }
        }
        if queued == 0 {
            break;
        }
        stats.wrong_format += ring.flush()?;
        stats.batches += 1;
    }
    stats.seconds = started.elapsed().as_secs_f64();
    stats.cpu_seconds = thread_cpu_seconds() - cpu_before;
    Ok(stats)
}

/// CPU time the calling thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    #[allow(clippy::cast_precision_loss)]
    let secs = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
    secs
}

/// The order of frames: flood frames with a mix frame after every `every` of them.
struct Schedule<'a> {
    flood_left: u64,
    flood_index: u64,
    mix: &'a [Vec<u8>],
    mix_next: usize,
    every: u64,
    since_mix: u64,
}

impl Schedule<'_> {
    /// Writes the next frame into `buf`: (its length, whether it is a mix frame), or `None`
    /// when everything was sent.
    fn next(&mut self, syn: &mut SynFactory, buf: &mut [u8]) -> Option<(usize, bool)> {
        let mix_left = self.mix_next < self.mix.len();
        if mix_left && (self.since_mix >= self.every || self.flood_left == 0) {
            let frame = &self.mix[self.mix_next];
            self.mix_next += 1;
            self.since_mix = 0;
            buf[..frame.len()].copy_from_slice(frame);
            return Some((frame.len(), true));
        }
        if self.flood_left == 0 {
            return None;
        }
        self.flood_left -= 1;
        self.since_mix += 1;
        let len = syn.write(self.flood_index, buf);
        self.flood_index += 1;
        Some((len, false))
    }
}

/// Length of a flood frame: Ethernet, IPv4 (20 B), TCP with an MSS option (24 B), as a real
/// SYN carries.
pub const SYN_FRAME_LEN: usize = 14 + 20 + 24;

/// Writes SYN `i` of a flood: a template with the source address, source port, sequence
/// number, IP id and both checksums filled in.
pub struct SynFactory {
    template: [u8; SYN_FRAME_LEN],
    seed: u32,
    sources: u32,
}

impl SynFactory {
    pub fn new(victim: SocketAddrV4, seed: u32, sources: u32) -> Self {
        let mut t = [0u8; SYN_FRAME_LEN];
        // Locally administered MACs; the destination is not the veth's own, so the lab's stack
        // drops the frame at once (no address is configured there anyway).
        t[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        t[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        t[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut t[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&44u16.to_be_bytes()); // 20 + 24
        ip[6] = 0x40; // DF
        ip[8] = 64; // TTL
        ip[9] = 6; // TCP
        ip[16..20].copy_from_slice(&victim.ip().octets());
        let tcp = &mut t[34..58];
        tcp[2..4].copy_from_slice(&victim.port().to_be_bytes());
        tcp[12] = 6 << 4; // data offset: 6 words
        tcp[13] = 0x02; // SYN
        tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
        tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        SynFactory {
            template: t,
            seed,
            sources: sources.max(1),
        }
    }

    /// The spoofed source of SYN `i`: a keyed permutation of 10.0.0.0/8, so distinct indices
    /// below 2^24 give distinct addresses.
    pub fn source(&self, i: u64) -> Ipv4Addr {
        let k = u32::try_from(i % u64::from(self.sources)).expect("below 2^24");
        Ipv4Addr::from((10 << 24) | permute24(k, self.seed))
    }

    /// Writes SYN `i` into `buf` (at least [`SYN_FRAME_LEN`] bytes); returns its length.
    pub fn write(&mut self, i: u64, buf: &mut [u8]) -> usize {
        let f = &mut buf[..SYN_FRAME_LEN];
        f.copy_from_slice(&self.template);
        let src = self.source(i).octets();
        #[allow(clippy::cast_possible_truncation)] // low bits of a mixed index, on purpose
        let mixed = mix64(i ^ (u64::from(self.seed) << 32));
        f[26..30].copy_from_slice(&src);
        #[allow(clippy::cast_possible_truncation)]
        f[18..20].copy_from_slice(&(mixed as u16).to_be_bytes()); // IP id
        let ip_sum = checksum(0, &f[14..34]);
        f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
        #[allow(clippy::cast_possible_truncation)]
        let port = 1024 + ((mixed >> 16) as u16 % 64_512);
        f[34..36].copy_from_slice(&port.to_be_bytes());
        #[allow(clippy::cast_possible_truncation)]
        f[38..42].copy_from_slice(&((mixed >> 32) as u32).to_be_bytes()); // sequence number
                                                                          // TCP checksum: pseudo-header (addresses, protocol, TCP length) and the header.
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&f[26..34]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&24u16.to_be_bytes());
        let sum = checksum(sum_words(0, &pseudo), &f[34..58]);
        f[50..52].copy_from_slice(&sum.to_be_bytes());
        SYN_FRAME_LEN
    }
}

/// A bijection on 24 bits keyed by `seed`: odd multipliers and xor-shifts, each invertible
/// modulo 2^24.
fn permute24(k: u32, seed: u32) -> u32 {
    const MASK: u32 = (1 << 24) - 1;
    let mut x = (k ^ seed) & MASK;
    x = x.wrapping_mul(0x9E_3779 | 1) & MASK;
    x ^= x >> 12;
    x = x.wrapping_mul(0x85_EBCB | 1) & MASK;
    x ^= x >> 11;
    x = x.wrapping_add(seed.rotate_left(7)) & MASK;
    x
}

/// SplitMix64's finaliser: well-mixed bits for ports, ids and sequence numbers.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One's complement sum of big-endian 16-bit words (RFC 1071), not yet folded.
fn sum_words(mut sum: u32, bytes: &[u8]) -> u32 {
    for w in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    sum
}

/// The Internet checksum of `bytes` (checksum field zero) on top of a partial `sum`.
fn checksum(sum: u32, bytes: &[u8]) -> u16 {
    let mut sum = sum_words(sum, bytes);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[allow(clippy::cast_possible_truncation)] // folded to 16 bits above
    let folded = sum as u16;
    !folded
}

/// Largest frame a ring slot takes.
pub const MAX_FRAME: usize = FRAME_SIZE - DATA_OFFSET;
const FRAME_SIZE: usize = 2048;
const BLOCK_SIZE: usize = 1 << 16;
const BLOCKS: usize = 64;
/// Where a TX frame's data starts in its slot with `TPACKET_V2` (no `PACKET_TX_HAS_OFF`): the
/// header, aligned, and no room for the `sockaddr_ll` a received frame would carry.
const DATA_OFFSET: usize = libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>();

/// An AF_PACKET socket with a mapped TX ring, bound to one interface.
struct TxRing {
    fd: OwnedFd,
    map: *mut u8,
    frames: usize,
    next: usize,
    /// Slots filled since the last flush.
    pending: usize,
}

impl TxRing {
    /// Opens the socket in the calling thread's namespace and binds it to `iface`.
    fn open(iface: &str) -> anyhow::Result<Self> {
        let os = |what: &str| anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error());
        // Protocol 0: a send-only socket, which the kernel hands no received frame.
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(os("socket(AF_PACKET)"));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let set = |opt: libc::c_int, val: &[u8]| -> anyhow::Result<()> {
            // SAFETY: `val` is a live buffer of the option's size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    opt,
                    val.as_ptr().cast(),
                    libc::socklen_t::try_from(val.len()).expect("small"),
                )
            };
            if r != 0 {
                return Err(os(&format!("setsockopt({opt})")));
            }
            Ok(())
        };
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        set(libc::PACKET_VERSION, &version.to_ne_bytes())?;
        // Straight to the driver: the veth has no queue to shape anything, and the qdisc layer
        // would only add a lock per frame.
        set(libc::PACKET_QDISC_BYPASS, &1i32.to_ne_bytes())?;
        let req = libc::tpacket_req {
            tp_block_size: u32::try_from(BLOCK_SIZE).expect("small"),
            tp_block_nr: u32::try_from(BLOCKS).expect("small"),
            tp_frame_size: u32::try_from(FRAME_SIZE).expect("small"),
            tp_frame_nr: u32::try_from(BLOCKS * BLOCK_SIZE / FRAME_SIZE).expect("small"),
        };
        // SAFETY: tpacket_req is plain old data; viewed as its bytes for setsockopt.
        let req_bytes = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&req).cast::<u8>(),
                size_of::<libc::tpacket_req>(),
            )
        };
        set(libc::PACKET_TX_RING, req_bytes)?;
        // A blocking `send` waits for the kernel to finish the batch; never forever.
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: a valid timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                libc::socklen_t::try_from(size_of::<libc::timeval>()).expect("small"),
            )
        };
        if r != 0 {
            return Err(os("setsockopt(SO_SNDTIMEO)"));
        }
        // SAFETY: maps the ring the kernel just allocated for this socket; checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BLOCK_SIZE * BLOCKS,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(os("mmap(PACKET_TX_RING)"));
        }
        let ring = TxRing {
            fd,
            map: map.cast(),
            frames: BLOCKS * BLOCK_SIZE / FRAME_SIZE,
            next: 0,
            pending: 0,
        };
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!("no interface {iface} in this namespace");
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = u16::try_from(libc::AF_PACKET).expect("small");
        addr.sll_ifindex = i32::try_from(index)?;
        // SAFETY: a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("small"),
            )
        };
        if r != 0 {
            return Err(os(&format!("bind({iface})")));
        }
        Ok(ring)
    }

    fn header(&self, slot: usize) -> *mut libc::tpacket2_hdr {
        // SAFETY: slot < frames, so the offset stays inside the mapping.
        unsafe { self.map.add(slot * FRAME_SIZE).cast() }
    }

    /// The data area of the next free slot. Every slot is free after a flush, and a batch never
    /// exceeds the ring, so waiting is never needed.
    fn slot(&mut self) -> anyhow::Result<&mut [u8]> {
        ensure!(self.pending < self.frames, "batch larger than the ring");
        let hdr = self.header(self.next);
        // SAFETY: the kernel owns the status word; read it volatile.
        let status = unsafe { std::ptr::addr_of!((*hdr).tp_status).read_volatile() };
        ensure!(
            status == libc::TP_STATUS_AVAILABLE,
            "TX ring slot still in use (status {status:#x})"
        );
        // SAFETY: this slot is ours (status AVAILABLE) until we hand it over in `commit`.
        Ok(unsafe { std::slice::from_raw_parts_mut(hdr.cast::<u8>().add(DATA_OFFSET), MAX_FRAME) })
    }

    /// Hands the slot `slot` returned to the kernel, with `len` bytes of frame.
    fn commit(&mut self, len: usize) {
        let hdr = self.header(self.next);
        // SAFETY: our slot (see `slot`); the status store publishes the frame, after a release
        // fence so the kernel sees the data and the length first.
        unsafe {
            std::ptr::addr_of_mut!((*hdr).tp_len).write(u32::try_from(len).expect("≤ 2048"));
            fence(Ordering::Release);
            std::ptr::addr_of_mut!((*hdr).tp_status).write_volatile(libc::TP_STATUS_SEND_REQUEST);
        }
        self.next = (self.next + 1) % self.frames;
        self.pending += 1;
    }

    /// Sends every committed frame; blocks until the kernel is done with them. Returns how many
    /// it refused as malformed.
    fn flush(&mut self) -> anyhow::Result<u64> {
        // SAFETY: a null buffer of length 0 tells the kernel to send the ring's frames.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            // ENOBUFS: the driver was busy; the frames stay queued and go with the next call.
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                bail!("send(TX ring): {e}");
            }
        }
        let mut wrong = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = (self.next + self.frames - self.pending) % self.frames;
        for k in 0..self.pending {
            let hdr = self.header((first + k) % self.frames);
            loop {
                // SAFETY: reading the kernel-owned status word.
                let status = unsafe { std::ptr::addr_of!((*hdr).tp_status).read_volatile() };
                if status == libc::TP_STATUS_AVAILABLE {
                    break;
                }
                if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
                    wrong += 1;
                    // SAFETY: a refused frame is ours again; mark the slot free.
                    unsafe {
                        std::ptr::addr_of_mut!((*hdr).tp_status)
                            .write_volatile(libc::TP_STATUS_AVAILABLE);
                    };
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the interface took no frame for 5 s (status {status:#x})"
                );
                // Still queued (the driver pushed back): send again.
                // SAFETY: as above.
                let r = unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, 0) };
                if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOBUFS) {
                    bail!("send(TX ring): {}", std::io::Error::last_os_error());
                }
                std::thread::yield_now();
            }
        }
        fence(Ordering::Acquire);
        self.pending = 0;
        Ok(wrong)
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the region mapped in `open`; the socket closes after.
        unsafe { libc::munmap(self.map.cast(), BLOCK_SIZE * BLOCKS) };
    }
}

/// Kernel counters of one interface in a namespace (`ip -s -j link`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

pub fn link_stats(netns: &str, dev: &str) -> anyhow::Result<LinkStats> {
    let out = Command::new("ip")
        .args(["-n", netns, "-s", "-j", "link", "show", "dev", dev])
        .output()
        .context("running ip -s link")?;
    ensure!(out.status.success(), "ip -s link show {dev} failed");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let s = &json[0]["stats64"];
    let get = |dir: &str, k: &str| {
        s[dir][k]
            .as_u64()
            .with_context(|| format!("no {dir}.{k} in ip -s -j link"))
    };
    Ok(LinkStats {
        rx_packets: get("rx", "packets")?,
        rx_dropped: get("rx", "dropped")?,
        tx_packets: get("tx", "packets")?,
        tx_dropped: get("tx", "dropped")?,
    })
}

/// Longest frame a veth with the default 1500-byte MTU carries: Ethernet header and one VLAN
/// tag on top of the MTU.
pub const VETH_MAX_FRAME: usize = 1500 + 14 + 4;

/// The frames of a classic pcap file, for [`Spec::mix`], and how many were left out because a
/// veth cannot carry them (longer than [`VETH_MAX_FRAME`], e.g. GRO super-frames; cut them with
/// `tcprewrite --mtu-trunc` first) or they are no Ethernet frame (shorter than its header).
pub fn read_pcap_frames(path: &Path) -> anyhow::Result<(Vec<Vec<u8>>, u64)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(file)
        .with_context(|| format!("{}: not a pcap file", path.display()))?;
    ensure!(
        reader.header().datalink == pcap_file::DataLink::ETHERNET,
        "{}: not an Ethernet capture",
        path.display()
    );
    let (mut frames, mut skipped) = (Vec::new(), 0);
    while let Some(p) = reader.next_packet() {
        let p = p?;
        if (14..=VETH_MAX_FRAME).contains(&p.data.len()) {
            frames.push(p.data.into_owned());
        } else {
            skipped += 1;
        }
    }
    Ok((frames, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    #[test]
    fn flood_frames_are_valid_syns_from_distinct_sources() {
        let victim = crate::flood::VICTIM;
        let mut f = SynFactory::new(victim, 7, 1 << 24);
        let mut seen = std::collections::HashSet::new();
        let mut buf = [0u8; MAX_FRAME];
        for i in 0..200_000u64 {
            let len = f.write(i, &mut buf);
            let p = SlicedPacket::from_ethernet(&buf[..len]).expect("parses");
            let Some(NetSlice::Ipv4(ip)) = p.net else {
                panic!("not IPv4")
            };
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IP checksum");
            assert_eq!(h.destination, victim.ip().octets());
            assert_eq!(h.source[0], 10);
            let Some(TransportSlice::Tcp(tcp)) = p.transport else {
                panic!("not TCP")
            };
            assert!(tcp.syn() && !tcp.ack() && !tcp.rst());
            assert_eq!(tcp.destination_port(), victim.port());
            assert!(tcp.source_port() >= 1024);
            let th = tcp.to_header();
            assert_eq!(
                th.checksum,
                th.calc_checksum_ipv4(&h, tcp.payload()).unwrap(),
                "TCP checksum"
            );
            assert!(
                seen.insert(h.source),
                "source {:?} repeated at {i}",
                h.source
            );
        }
    }

    #[test]
    fn sources_cycle_through_the_pool() {
        let f = SynFactory::new(crate::flood::VICTIM, 1, 1000);
        let pool: std::collections::HashSet<_> = (0..1000).map(|i| f.source(i)).collect();
        assert_eq!(pool.len(), 1000);
        assert_eq!(f.source(1000), f.source(0));
        assert_eq!(f.source(2999), f.source(999));
    }

    #[test]
    fn permutation_is_a_bijection_on_24_bits() {
        let mut seen = vec![false; 1 << 24];
        for k in 0..1u32 << 24 {
            let v = permute24(k, 0xdead_beef) as usize;
            assert!(!seen[v], "{k} collides");
            seen[v] = true;
        }
    }

    #[test]
    fn schedule_spreads_the_mix_and_sends_it_all() {
        let mix: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 60]).collect();
        let mut s = Schedule {
            flood_left: 10,
            flood_index: 0,
            mix: &mix,
            mix_next: 0,
            every: 10 / 4,
            since_mix: 0,
        };
        let mut syn = SynFactory::new(crate::flood::VICTIM, 1, 10);
        let mut buf = [0u8; MAX_FRAME];
        let mut order = String::new();
        while let Some((_, is_mix)) = s.next(&mut syn, &mut buf) {
            order.push(if is_mix { 'M' } else { 'f' });
        }
        assert_eq!(order, "ffMffMffMffff");
        // A mix longer than the flood ends after it.
        let mut s = Schedule {
            flood_left: 2,
            flood_index: 0,
            mix: &mix,
            mix_next: 0,
            every: 1,
            since_mix: 0,
        };
        order.clear();
        while let Some((_, is_mix)) = s.next(&mut syn, &mut buf) {
            order.push(if is_mix { 'M' } else { 'f' });
        }
        assert_eq!(order, "fMfMM");
    }

    #[test]
    fn refuses_anything_but_a_lab_namespace() {
        let spec = Spec::flood(10, Some(10), Duration::from_secs(1));
        for (ns, iface) in [
            ("", "eth0"),
            ("default", "eth0"),
            ("sxlab-../../proc/1/ns/net", "eth0"),
            ("sxlab-0-does-not-exist", "sxt0"),
        ] {
            let e = send(ns, iface, &spec).unwrap_err();
            assert!(format!("{e:#}").contains("refusing to send"), "{ns}: {e:#}");
        }
        let unbounded = Spec::flood(10, None, Duration::from_hours(1));
        assert!(send("sxlab-0-x", "sxt0", &unbounded).is_err());
    }
}
