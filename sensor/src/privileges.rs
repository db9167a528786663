//! Giving up capabilities once XDP is attached.
//!
//! Loading the program and attaching it are the only steps that need privileges (`CAP_BPF`,
//! `CAP_NET_ADMIN`, and `CAP_PERFMON` on some kernels). What the agent does afterwards needs
//! none on the kernels it targets:
//! - the record ring and the eBPF log ring are memory-mapped at load time; reading them is
//!   plain memory access and `epoll`;
//! - the counters are read with `bpf(BPF_MAP_LOOKUP_ELEM)` on a map fd the process already
//!   holds; since Linux 6.5 ("bpf: Move unprivileged checks into map_create() and
//!   bpf_prog_load()") only creating maps and loading programs check capabilities. On older
//!   kernels with `kernel.unprivileged_bpf_disabled` set, every `bpf()` call needs `CAP_BPF`,
//!   which is then kept;
//! - the metrics socket is bound before attaching (and a port above 1023 needs nothing);
//! - detaching closes the bpf_link fds (XDP links exist since Linux 5.9); before 5.9 aya
//!   attaches through netlink, whose detach needs `CAP_NET_ADMIN`, which is then kept.
//!
//! Capabilities are per thread, and the tokio runtime's threads exist before the agent attaches.
//! [`drop_after_attach`] therefore empties the sets on the calling thread and has every other
//! thread of the process do the same in a signal handler (the way glibc broadcasts `setuid`),
//! then checks every thread's sets in `/proc/self/task`. All five sets go: effective, permitted,
//! inheritable, ambient, and the bounding set (which needs `CAP_SETPCAP`: without it, e.g. under
//! a unit that grants only the load's capabilities, the bounding set is left as it is and
//! `PR_SET_NO_NEW_PRIVS` is what keeps an `execve` from regaining anything). `PR_SET_NO_NEW_PRIVS`
//! is set on every thread too.

use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SETPCAP: u32 = 8;
const CAP_BPF: u32 = 39;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// One thread's capability sets, as `/proc/<pid>/task/<tid>/status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
}

impl fmt::Display for CapSets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CapEff={:016x} CapPrm={:016x} CapInh={:016x} CapBnd={:016x} CapAmb={:016x} NoNewPrivs={}",
            self.effective,
            self.permitted,
            self.inheritable,
            self.bounding,
            self.ambient,
            u8::from(self.no_new_privs)
        )
    }
}

impl CapSets {
    /// The sets of one thread of this process (`None`: the calling process's main thread).
    pub fn of_task(tid: Option<i32>) -> anyhow::Result<Self> {
        let path = match tid {
            Some(tid) => format!("/proc/self/task/{tid}/status"),
            None => "/proc/self/status".to_string(),
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Self::parse(&text).with_context(|| format!("no capability lines in {path}"))
    }

    /// Reads the `Cap*:` and `NoNewPrivs:` lines of a `/proc/.../status` file.
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let hex = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        Some(Self {
            effective: hex("CapEff")?,
            permitted: hex("CapPrm")?,
            inheritable: hex("CapInh")?,
            bounding: hex("CapBnd")?,
            ambient: hex("CapAmb")?,
            no_new_privs: field("NoNewPrivs") == Some("1"),
        })
    }
}

/// What [`drop_after_attach`] did.
#[derive(Clone, Copy, Debug)]
pub struct Dropped {
    /// The calling thread's sets before and after.
    pub before: CapSets,
    pub after: CapSets,
    /// Capabilities kept because this kernel still needs them after attaching (see the module
    /// documentation); 0 on Linux ≥ 6.5.
    pub kept: u64,
    /// Threads checked.
    pub threads: usize,
}

/// Capabilities the agent still needs on this kernel once XDP is attached.
fn still_needed() -> u64 {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let unprivileged_bpf_disabled =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .map_or(true, |v| v.trim() != "0");
    let mut keep = 0;
    if version < (6, 5) && unprivileged_bpf_disabled {
        keep |= 1 << CAP_BPF;
    }
    if version < (5, 9) {
        keep |= 1 << CAP_NET_ADMIN;
    }
    keep
}

/// What every thread's handler does: the sets to keep, the highest capability number, whether
/// to empty the bounding set, and the first failure (an errno, 0 for none).
static KEEP: AtomicU64 = AtomicU64::new(0);
static LAST_CAP: AtomicU32 = AtomicU32::new(63);
static DROP_BOUNDING: AtomicU32 = AtomicU32::new(0);
static FAILURE: AtomicI32 = AtomicI32::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// Drops the calling thread's capabilities to `KEEP`. Only raw system calls and atomics:
/// it runs in a signal handler.
fn drop_this_thread() {
    let keep = KEEP.load(SeqCst);
    let mut failure = 0;
    if DROP_BOUNDING.load(SeqCst) != 0 {
        for cap in 0..=LAST_CAP.load(SeqCst) {
            if keep & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0
            {
                failure = errno();
            }
        }
    }
    // SAFETY: prctl with integer arguments only. EINVAL means a kernel without ambient
    // capabilities (< 4.3), where there is nothing to clear.
    let cleared = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if cleared != 0 && errno() != libc::EINVAL {
        failure = errno();
    }
    // Split into the two 32-bit words of version 3; `keep` fits both.
    #[allow(clippy::cast_possible_truncation)]
    let words = [keep as u32, (keep >> 32) as u32];
    let data = words.map(|w| CapData {
        effective: w,
        permitted: w,
        inheritable: 0,
    });
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads a valid header and two data structs, as version 3 requires.
    if unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) } != 0 {
        failure = errno();
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        failure = errno();
    }
    if failure != 0 {
        let _ = FAILURE.compare_exchange(0, failure, SeqCst, SeqCst);
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    drop_this_thread();
    DONE.fetch_add(1, SeqCst);
}

/// The real-time signal used to reach the other threads: one that neither glibc (which
/// reserves the first ones below `SIGRTMIN`), Rust's runtime nor tokio (only signals asked
/// for) uses.
fn broadcast_signal() -> libc::c_int {
    libc::SIGRTMAX() - 2
}

fn this_thread() -> i32 {
    // SAFETY: gettid has no preconditions. Thread ids fit in pid_t.
    #[allow(clippy::cast_possible_truncation)]
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    tid
}

fn threads() -> anyhow::Result<Vec<i32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push(tid);
        }
    }
    Ok(out)
}

/// Empties every capability set of every thread of the process, except what this kernel still
/// needs after attaching, and sets `PR_SET_NO_NEW_PRIVS`; then checks every thread. Call once
/// everything privileged is done.
pub fn drop_after_attach() -> anyhow::Result<Dropped> {
    let before = CapSets::of_task(Some(this_thread()))?;
    // Only what the process has: capset refuses to add to the permitted set.
    let keep = still_needed() & before.permitted;
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63u32);
    KEEP.store(keep, SeqCst);
    LAST_CAP.store(last_cap.min(63), SeqCst);
    let can_drop_bounding = before.effective & (1 << CAP_SETPCAP) != 0;
    DROP_BOUNDING.store(u32::from(can_drop_bounding), SeqCst);
    FAILURE.store(0, SeqCst);

    let signal = broadcast_signal();
    // SAFETY: installs a handler that makes only async-signal-safe calls (raw system calls,
    // atomics); the sigaction struct is zeroed and then filled as the C API expects.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&raw mut action.sa_mask);
        if libc::sigaction(signal, &raw const action, std::ptr::null_mut()) != 0 {
            bail!(
                "installing the capability-drop handler: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    drop_this_thread();
    let me = this_thread();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // A thread started while we signal inherits the dropped sets only if its creator had
    // already dropped; so repeat until a pass finds every thread done.
    let deadline = Instant::now() + Duration::from_secs(5);
    let target = |bounding: u64| CapSets {
        effective: keep,
        permitted: keep,
        inheritable: 0,
        bounding,
        ambient: 0,
        no_new_privs: true,
    };
    loop {
        let mut pending = Vec::new();
        for tid in threads()? {
            let Ok(sets) = CapSets::of_task(Some(tid)) else {
                continue; // the thread exited meanwhile
            };
            let bounding = if can_drop_bounding {
                keep
            } else {
                sets.bounding
            };
            if sets != target(bounding) {
                pending.push(tid);
            }
        }
        let failure = FAILURE.load(SeqCst);
        if failure != 0 {
            bail!(
                "dropping capabilities: {}",
                std::io::Error::from_raw_os_error(failure)
            );
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("threads {pending:?} still hold capabilities after 5 s");
        }
        DONE.store(0, SeqCst);
        let mut sent = 0;
        for &tid in &pending {
            if tid == me {
                continue;
            }
            // SAFETY: signals a thread of this very process with a signal we handle.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) } == 0 {
                sent += 1;
            }
        }
        let wait_until = Instant::now() + Duration::from_millis(500);
        while DONE.load(SeqCst) < sent && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let after = CapSets::of_task(Some(me))?;
    let threads = threads()?.len();
    if !can_drop_bounding && after.bounding != 0 {
        tracing::info!(
            "bounding set left as it is ({:016x}): dropping it needs CAP_SETPCAP; \
             no_new_privs keeps execve from using it",
            after.bounding
        );
    }
    Ok(Dropped {
        before,
        after,
        kept: keep,
        threads,
    })
}

/// [`drop_after_attach`], with the sets before and after in the log.
pub fn drop_after_attach_logged() -> anyhow::Result<Dropped> {
    let dropped = drop_after_attach().context("dropping capabilities after attaching")?;
    tracing::info!(
        "capabilities dropped on {} threads: before {}; after {}",
        dropped.threads,
        dropped.before,
        dropped.after
    );
    if dropped.kept != 0 {
        tracing::info!(
            "kept {:016x}: this kernel needs them to read counters or detach",
            dropped.kept
        );
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let status = "Name:\tsensor\nNoNewPrivs:\t1\nCapInh:\t0000000000000000\n\
                      CapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n\
                      CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n";
        let sets = CapSets::parse(status).unwrap();
        assert_eq!(sets.effective, 0x1fffeffffff);
        assert_eq!(sets.permitted, 0x1fffeffffff);
        assert_eq!(sets.bounding, 0);
        assert!(sets.no_new_privs);
        assert!(CapSets::parse("Name:\tx\n").is_none());
    }

    const CHILD: &str = "SENSOR_PRIVILEGES_CHILD";

    /// In a child process (the drop is process-wide): threads idle, busy and blocked exist
    /// before the drop; afterwards none of them, nor a thread started later, holds anything.
    #[test]
    fn every_thread_loses_every_capability() {
        if std::env::var_os(CHILD).is_some() {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let blocked = std::thread::spawn(move || {
                let _ = rx.recv();
            });
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let busy = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(SeqCst) {
                        std::hint::spin_loop();
                    }
                })
            };
            let sleeping = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(1)));
            let dropped = drop_after_attach().unwrap();
            let later = std::thread::spawn(|| CapSets::of_task(Some(this_thread())).unwrap())
                .join()
                .unwrap();
            let keep = dropped.kept;
            for tid in threads().unwrap() {
                let sets = CapSets::of_task(Some(tid)).unwrap();
                assert_eq!(sets.effective, keep, "thread {tid}: {sets}");
                assert_eq!(sets.permitted, keep, "thread {tid}: {sets}");
                assert_eq!(sets.inheritable, 0, "thread {tid}: {sets}");
                assert_eq!(sets.ambient, 0, "thread {tid}: {sets}");
                assert!(sets.no_new_privs, "thread {tid}: {sets}");
                if dropped.before.effective & (1 << CAP_SETPCAP) != 0 {
                    assert_eq!(sets.bounding, keep, "thread {tid}: {sets}");
                }
            }
            assert_eq!(later, dropped.after);
            assert!(dropped.threads >= 4, "{dropped:?}");
            stop.store(true, SeqCst);
            busy.join().unwrap();
            sleeping.join().unwrap();
            drop(tx);
            blocked.join().unwrap();
            eprintln!("before: {}\nafter:  {}", dropped.before, dropped.after);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "privileges::tests::every_thread_loses_every_capability",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        eprintln!("{text}");
    }
}
