//! The live capture source: loads the XDP pre-filter, attaches it, and exposes its ring of
//! records and its per-CPU counters.

use std::fmt;

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use sensor_ebpf::shard::MAX_SHARDS;
use sensor_ebpf::{counter, IfaceTable};

use super::CounterSnapshot;
use crate::EBPF_OBJECT;

/// Name of the XDP program in the object.
pub const PROGRAM: &str = "sensor";

/// Load-time settings of the XDP program.
#[derive(Clone, Copy, Debug)]
pub struct XdpConfig {
    /// UDP payload bytes copied into each record (1..=2048; 0 copies none).
    pub snaplen: u32,
    /// Ring size in bytes: a power-of-two multiple of the page size.
    pub ring_bytes: u32,
    /// Unread bytes at which the kernel wakes the reader; below that the reader drains on its
    /// timer. 0 wakes it on every record.
    pub wakeup_bytes: u32,
    /// How UDP payloads are forwarded: one of [`sensor_ebpf::udp_policy`].
    pub udp_policy: u32,
    /// Rings, one per worker (1..=[`MAX_SHARDS`]), each `ring_bytes` long; records are split
    /// over them by host (`sensor_ebpf::shard`).
    pub shards: u32,
    /// Key of the host hash that splits them.
    pub shard_seed: u64,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            snaplen: sensor_ebpf::DEFAULT_SNAPLEN,
            ring_bytes: 16 << 20,
            wakeup_bytes: 256 << 10,
            udp_policy: crate::capture::pcap::DEFAULT_UDP_POLICY,
            shards: 1,
            shard_seed: 0,
        }
    }
}

impl XdpConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.snaplen > sensor_ebpf::MAX_SNAPLEN {
            bail!(
                "snap length {} exceeds the maximum {}",
                self.snaplen,
                sensor_ebpf::MAX_SNAPLEN
            );
        }
        let page = page_size();
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < page {
            bail!(
                "ring size {} must be a power of two and at least the page size ({page})",
                self.ring_bytes
            );
        }
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            bail!("{} workers: 1 to {MAX_SHARDS} are possible", self.shards);
        }
        if self.wakeup_bytes >= self.ring_bytes {
            bail!(
                "wake-up watermark {} must be below the ring size {}",
                self.wakeup_bytes,
                self.ring_bytes
            );
        }
        Ok(())
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // Linux page sizes are 4 KiB to 64 KiB; sysconf fails (-1) only for an unknown name.
    u32::try_from(size).expect("_SC_PAGESIZE is a small positive number")
}

/// Where XDP runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum AttachMode {
    /// Native if the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// In the driver (fastest; fails if the driver lacks XDP support).
    Native,
    /// Generic XDP on the sk_buff path (works everywhere, slower).
    Skb,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.into())
    }
}

impl From<AttachMode> for XdpMode {
    fn from(mode: AttachMode) -> Self {
        match mode {
            AttachMode::Auto => XdpMode::Default,
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// The loaded (and verified) XDP pre-filter.
pub struct XdpSensor {
    ebpf: Ebpf,
    /// Interfaces given counter blocks by [`XdpSensor::set_ifaces`], in block order.
    ifaces: usize,
    /// Rings in use.
    shards: u32,
}

impl XdpSensor {
    /// Loads the object and the program into the kernel (this is where the verifier runs).
    pub fn load(config: &XdpConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let mut loader = EbpfLoader::new();
        loader
            .override_global("SNAPLEN", &config.snaplen, true)
            .override_global("WAKEUP_BYTES", &config.wakeup_bytes, true)
            .override_global("UDP_POLICY", &config.udp_policy, true)
            .override_global("SHARDS", &config.shards, true)
            .override_global("SHARD_SEED", &config.shard_seed, true);
        for shard in 0..MAX_SHARDS {
            // Rings no worker reads cost a page each.
            let size = if shard < config.shards {
                config.ring_bytes
            } else {
                page_size()
            };
            loader.map_max_entries(ring_name(shard), size);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (needs root or CAP_BPF + CAP_NET_ADMIN)")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .context("XDP program missing from the object")?
            .try_into()?;
        program
            .load()
            .context("the kernel rejected the XDP program")?;
        let mut sensor = Self {
            ebpf,
            ifaces: 0,
            shards: config.shards,
        };
        // A zeroed table would send every frame to block 0 (its `base` entries all 0): until
        // interfaces are set, frames count in the unknown block, which the reads include.
        sensor.set_ifaces(&[])?;
        Ok(sensor)
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("program checked at load")
    }

    /// Attaches to `iface`. On kernels ≥ 5.9 this is a bpf_link: it detaches by itself when the
    /// process exits, even on SIGKILL.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> anyhow::Result<XdpLinkId> {
        self.program().attach(iface, mode.into()).with_context(|| {
            format!(
                "attaching XDP to {iface} in {mode} mode (another XDP program there? try \
                 `ip link set dev {iface} xdp off`; native mode needs driver support)"
            )
        })
    }

    /// Gives each interface its own block of counters, in order (block `i` for `ifaces[i]`).
    /// Call before attaching, so that no frame of these interfaces is counted as unknown, and
    /// before [`XdpSensor::take_counters`].
    ///
    /// # Errors
    /// More than [`counter::MAX_IFACES`] interfaces, one named twice, or one that does not
    /// exist.
    pub fn set_ifaces(&mut self, ifaces: &[String]) -> anyhow::Result<()> {
        if ifaces.len() > counter::MAX_IFACES as usize {
            bail!(
                "{} interfaces given; one sensor counts at most {} (--iface)",
                ifaces.len(),
                counter::MAX_IFACES
            );
        }
        let mut indexes = Vec::with_capacity(ifaces.len());
        for name in ifaces {
            let index = ifindex(name)?;
            if indexes.contains(&index) {
                bail!("interface {name} given twice (--iface)");
            }
            indexes.push(index);
        }
        let table = IfaceTable::new(&indexes).context("too many interfaces")?;
        let mut map: Array<_, IfaceTable> = Array::try_from(
            self.ebpf
                .map_mut("IFACES")
                .context("IFACES missing from the object")?,
        )?;
        map.set(0, table, 0).context("writing the IFACES map")?;
        self.ifaces = ifaces.len();
        Ok(())
    }

    /// Takes ring 0 out of the object (once): with one worker, the only one.
    pub fn take_ring(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        self.take_ring_of(0)
    }

    /// Takes every ring in use out of the object (once), in shard order.
    pub fn take_rings(&mut self) -> anyhow::Result<Vec<RingBuf<MapData>>> {
        (0..self.shards).map(|s| self.take_ring_of(s)).collect()
    }

    fn take_ring_of(&mut self, shard: u32) -> anyhow::Result<RingBuf<MapData>> {
        let name = ring_name(shard);
        let map = self
            .ebpf
            .take_map(name)
            .with_context(|| format!("{name} ring already taken"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Takes the per-ring counters out of the object (once).
    pub fn take_ring_stats(&mut self) -> anyhow::Result<RingStats> {
        let map = self
            .ebpf
            .take_map("RING_STATS")
            .context("RING_STATS already taken")?;
        Ok(RingStats {
            map: PerCpuArray::try_from(map)?,
            shards: self.shards,
        })
    }

    /// Takes the per-CPU counters out of the object (once).
    pub fn take_counters(&mut self) -> anyhow::Result<KernelCounters> {
        let map = self
            .ebpf
            .take_map("COUNTERS")
            .context("COUNTERS already taken")?;
        Ok(KernelCounters {
            map: PerCpuArray::try_from(map)?,
            ifaces: self.ifaces,
        })
    }
}

/// The map name of ring `shard` (ring 0 keeps the name it had before there were several).
fn ring_name(shard: u32) -> &'static str {
    match shard {
        1 => "EVENTS_1",
        2 => "EVENTS_2",
        3 => "EVENTS_3",
        _ => "EVENTS",
    }
}

/// Records put in each ring and lost to each full ring (a record for two workers is a copy in
/// each of their rings, counted in each).
pub struct RingStats {
    map: PerCpuArray<MapData, u64>,
    shards: u32,
}

impl fmt::Debug for RingStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingStats")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl RingStats {
    /// Per ring in use, summed over CPUs: (records lost to a full ring, records put in it).
    pub fn read(&self) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
        let slot = |i: u32| -> anyhow::Result<u64> { Ok(self.map.get(&i, 0)?.iter().sum()) };
        let drops = (0..self.shards).map(slot).collect::<anyhow::Result<_>>()?;
        let records = (0..self.shards)
            .map(|s| slot(MAX_SHARDS + s))
            .collect::<anyhow::Result<_>>()?;
        Ok((drops, records))
    }
}

/// The interface index of `name`.
fn ifindex(name: &str) -> anyhow::Result<u32> {
    let cname = std::ffi::CString::new(name)
        .with_context(|| format!("interface name {name:?} holds a NUL byte"))?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("interface {name}"));
    }
    Ok(index)
}

/// The per-CPU counter array, one block per interface; read at scrape time.
pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
    /// Interfaces with a block (the first blocks of the map).
    ifaces: usize,
}

/// The kernel's counters at one read, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelSnapshot {
    /// One per interface, in the order given to [`XdpSensor::set_ifaces`].
    pub ifaces: Vec<CounterSnapshot>,
    /// Frames from an interface without a block (see `counter::UNKNOWN_IFACE`): zero unless
    /// the program was attached to an interface not given to [`XdpSensor::set_ifaces`].
    pub unknown: CounterSnapshot,
}

impl KernelSnapshot {
    /// Every interface's counters summed, the unknown block included.
    pub fn total(&self) -> CounterSnapshot {
        let mut out = self.unknown;
        for snap in &self.ifaces {
            for (total, v) in out.0.iter_mut().zip(snap.0) {
                *total += v;
            }
        }
        out
    }
}

impl fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelCounters").finish_non_exhaustive()
    }
}

impl KernelCounters {
    /// Each interface's counters and the unknown block.
    pub fn read(&self) -> anyhow::Result<KernelSnapshot> {
        let ifaces = (0u32..)
            .take(self.ifaces)
            .map(|block| self.block(block))
            .collect::<anyhow::Result<_>>()?;
        Ok(KernelSnapshot {
            ifaces,
            unknown: self.block(counter::UNKNOWN_IFACE)?,
        })
    }

    fn block(&self, block: u32) -> anyhow::Result<CounterSnapshot> {
        let mut out = [0u64; counter::COUNT as usize];
        let base = block * counter::COUNT;
        for (slot, total) in (base..).zip(out.iter_mut()) {
            *total = self.map.get(&slot, 0)?.iter().sum();
        }
        Ok(CounterSnapshot(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mode as logs print it, the same as its `--mode` value.
    #[test]
    fn attach_mode_names() {
        use clap::ValueEnum as _;
        for mode in AttachMode::value_variants() {
            let value = mode.to_possible_value().unwrap();
            assert_eq!(mode.to_string(), value.get_name());
        }
        assert_eq!(AttachMode::Skb.to_string(), "skb");
    }
}
