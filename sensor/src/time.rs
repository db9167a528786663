//! Packet time: when a frame was captured ([`Timestamp`]) and how far apart two such moments are
//! ([`Duration`]).
//!
//! Every stage after capture runs on the timestamps of the packets it reads, never on the wall
//! clock, so a file and its replay reach the same verdicts. Both types are nanosecond counts;
//! their arithmetic saturates instead of wrapping or panicking, because capture timestamps come
//! from the outside (a pcap may run backwards, start at 0 or end at `u64::MAX`) and must not be
//! able to crash the sensor.

use std::fmt;
use std::ops::{Add, AddAssign, Div, Mul, Sub};

/// Wall-clock time of a packet, nanoseconds since the UNIX epoch. Serialized as the bare count
/// (the state file, `crate::state`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

/// A span of packet time, nanoseconds.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Duration(u64);

impl Timestamp {
    /// The epoch; also "no packet seen yet".
    pub const ZERO: Self = Self(0);
    pub const MAX: Self = Self(u64::MAX);

    pub const fn from_nanos(ns: u64) -> Self {
        Self(ns)
    }

    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000_000))
    }

    pub const fn from_micros(us: u64) -> Self {
        Self(us.saturating_mul(1_000))
    }

    pub fn from_secs_f64(secs: f64) -> Self {
        // `as` saturates (and maps NaN to 0), which is what a hostile timestamp should get.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Self((secs * 1e9) as u64)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The wall clock as packet time (live capture stamps packets with it).
    pub fn from_system(t: std::time::SystemTime) -> Self {
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Whole seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    #[allow(clippy::cast_precision_loss)]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Time from `earlier` to `self`; zero when `earlier` is not earlier.
    pub const fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    /// Bro's `&read_expire`/`&write_expire` test (`scan.bro`: `access + timeout <
    /// network_time`): state last touched at `self` is gone once `now` is strictly past
    /// `self + ttl`.
    pub fn expired(self, ttl: Duration, now: Timestamp) -> bool {
        self + ttl < now
    }
}

impl fmt::Display for Timestamp {
    /// Zeek's `ts` format: epoch seconds with microseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.0 / 1_000_000_000,
            (self.0 % 1_000_000_000) / 1000
        )
    }
}

impl Duration {
    pub const ZERO: Self = Self(0);
    pub const MAX: Self = Self(u64::MAX);

    pub const fn from_nanos(ns: u64) -> Self {
        Self(ns)
    }

    pub const fn from_micros(us: u64) -> Self {
        Self(us.saturating_mul(1_000))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }

    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000_000))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    #[allow(clippy::cast_precision_loss)]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl From<std::time::Duration> for Duration {
    /// Saturates past 584 years, which no TTL reaches.
    fn from(d: std::time::Duration) -> Self {
        Self(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        std::time::Duration::from_nanos(d.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.0))
    }
}

impl Sub for Timestamp {
    type Output = Duration;
    /// Saturating, like [`Timestamp::saturating_since`]: packet time may step backwards.
    fn sub(self, earlier: Timestamp) -> Duration {
        self.saturating_since(earlier)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, o: Duration) -> Duration {
        Duration(self.0.saturating_add(o.0))
    }
}

impl Sub for Duration {
    type Output = Duration;
    fn sub(self, o: Duration) -> Duration {
        Duration(self.0.saturating_sub(o.0))
    }
}

impl Mul<u64> for Duration {
    type Output = Duration;
    fn mul(self, k: u64) -> Duration {
        Duration(self.0.saturating_mul(k))
    }
}

impl Div<u64> for Duration {
    type Output = Duration;
    /// Division by zero gives [`Duration::MAX`] rather than a panic.
    fn div(self, k: u64) -> Duration {
        Duration(self.0.checked_div(k).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(10);
        assert_eq!(t + Duration::from_secs(5), Timestamp::from_secs(15));
        assert_eq!(t - Duration::from_secs(20), Timestamp::ZERO);
        assert_eq!(Timestamp::MAX + Duration::from_secs(1), Timestamp::MAX);
        assert_eq!(Timestamp::from_secs(3) - t, Duration::ZERO);
        assert_eq!(t - Timestamp::from_secs(4), Duration::from_secs(6));
        assert_eq!(Duration::from_secs(8) / 4, Duration::from_secs(2));
        assert_eq!(Duration::from_secs(8) / 0, Duration::MAX);
        assert_eq!(Duration::MAX * 2, Duration::MAX);
    }

    #[test]
    fn expiry_is_strictly_after_the_ttl() {
        let at = Timestamp::from_secs(100);
        let ttl = Duration::from_secs(5);
        assert!(!at.expired(ttl, Timestamp::from_secs(105)));
        assert!(at.expired(ttl, Timestamp::from_nanos(105_000_000_001)));
        assert!(!Timestamp::MAX.expired(ttl, Timestamp::MAX));
    }

    #[test]
    fn zeek_display_and_conversions() {
        let t = Timestamp::from_nanos(1_234_567_891_234);
        assert_eq!(t.to_string(), "1234.567891");
        assert_eq!(t.as_secs(), 1234);
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), Timestamp::ZERO);
        assert_eq!(Timestamp::from_secs_f64(-3.0), Timestamp::ZERO);
        let d: Duration = std::time::Duration::from_millis(1500).into();
        assert_eq!(d, Duration::from_millis(1500));
        assert_eq!(std::time::Duration::from(d).as_millis(), 1500);
    }
}
