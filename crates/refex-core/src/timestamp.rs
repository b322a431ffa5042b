//! Instants as the gateway records, stores and compares them: whole seconds since the Unix
//! epoch. Every time a store port takes or returns is a [`UnixTime`], so a cutoff cannot be
//! passed where a duration, a count or a position was meant; the one `i64` lives in SQL.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant, to the second, since the Unix epoch (negative before it).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
#[schemars(description = "Seconds since the Unix epoch (UTC).")]
pub struct UnixTime(i64);

impl UnixTime {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: UnixTime = UnixTime(0);

    /// The instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs)
    }

    /// Seconds since the epoch: how the instant is stored and signed into audit leaves.
    pub const fn secs(self) -> i64 {
        self.0
    }

    /// `t`, truncated to the second (an instant before the epoch stays before it).
    pub fn of(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)),
        }
    }

    /// The same instant as a [`SystemTime`].
    pub fn system_time(self) -> SystemTime {
        let magnitude = Duration::from_secs(self.0.unsigned_abs());
        if self.0 >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH - magnitude
        }
    }

    /// The instant `d` before this one (saturating): a retention cutoff.
    pub fn before(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(secs_of(d)))
    }

    /// The instant `d` after this one (saturating): a deadline.
    pub fn after(self, d: Duration) -> Self {
        Self(self.0.saturating_add(secs_of(d)))
    }

    /// The last instant RFC 3339 can write: 9999-12-31T23:59:59Z.
    pub const LAST_WRITABLE: UnixTime = UnixTime(253_402_300_799);

    /// RFC 3339 in UTC to the second (`2026-11-27T17:06:00Z`), as the wire writes times;
    /// an instant before the epoch is written as the epoch, one after 9999 as its last
    /// second (a stored time out of range never fails a page).
    pub fn rfc3339(self) -> String {
        let t = self.clamp(Self::EPOCH, Self::LAST_WRITABLE).system_time();
        humantime::format_rfc3339_seconds(t).to_string()
    }

    /// Whole seconds from `earlier` to this instant; zero if it is not after it (an age as
    /// the wire and pages state it).
    pub fn secs_since(self, earlier: UnixTime) -> i64 {
        self.0.saturating_sub(earlier.0).max(0)
    }

    /// How long after `earlier` this instant is; zero if it is not after it.
    pub fn since(self, earlier: UnixTime) -> Duration {
        Duration::from_secs(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

fn secs_of(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl fmt::Display for UnixTime {
    /// Seconds since the epoch, as the wire and the audit leaves write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_round_trips_through_system_time() {
        let t = UnixTime::from_secs(1_795_000_000);
        assert_eq!(t.before(Duration::from_secs(60)).secs(), 1_794_999_940);
        assert_eq!(t.after(Duration::from_secs(60)).secs(), 1_795_000_060);
        assert_eq!(UnixTime::of(t.system_time()), t);
        assert_eq!(
            UnixTime::of(UnixTime::from_secs(-5).system_time()).secs(),
            -5
        );
        assert_eq!(
            t.since(t.before(Duration::from_secs(9))),
            Duration::from_secs(9)
        );
        assert_eq!(t.since(t.after(Duration::from_secs(9))), Duration::ZERO);
        assert_eq!(t.secs_since(t.before(Duration::from_secs(9))), 9);
        assert_eq!(t.secs_since(t.after(Duration::from_secs(9))), 0);
        assert_eq!(
            UnixTime::from_secs(i64::MAX).secs_since(UnixTime::from_secs(-1)),
            i64::MAX
        );
        assert_eq!(
            UnixTime::from_secs(i64::MIN).before(Duration::MAX).secs(),
            i64::MIN
        );
        assert_eq!(
            UnixTime::from_secs(i64::MAX).after(Duration::MAX).secs(),
            i64::MAX
        );
    }

    #[test]
    fn it_serialises_as_bare_seconds() {
        let t = UnixTime::from_secs(42);
        assert_eq!(serde_json::to_string(&t).unwrap(), "42");
        assert_eq!(serde_json::from_str::<UnixTime>("42").unwrap(), t);
        assert_eq!(t.to_string(), "42");
        assert_eq!(
            UnixTime::from_secs(1_795_000_000).rfc3339(),
            "2026-11-18T11:06:40Z"
        );
        assert_eq!(UnixTime::from_secs(-1).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            UnixTime::from_secs(300_000_000_000).rfc3339(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            UnixTime::from_secs(i64::MAX).rfc3339(),
            "9999-12-31T23:59:59Z"
        );
    }
}
