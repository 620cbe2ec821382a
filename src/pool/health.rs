//! A pooled connection's dates, and the checkout health check, cheapest
//! test first: its lifetime, its idle time, the recipe's look without a
//! round trip (skipped for a connection given back moments ago), and a
//! PING only after a long idle spell.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::builder::Config;
use super::stats::Closed;
use super::Recipe;

/// A connection and its dates.
pub(super) struct Entry<C> {
    pub(super) conn: C,
    /// When it must be closed (its lifetime, jitter applied), if ever.
    expires: Option<Instant>,
    /// When it was last given back (or opened).
    pub(super) since: Instant,
}

impl<C> Entry<C> {
    /// A connection opened `now`.
    pub(super) fn new(conn: C, max_lifetime: Option<Duration>, now: Instant) -> Entry<C> {
        let expires = max_lifetime.and_then(|max| now.checked_add(jittered(max, random())));
        Entry {
            conn,
            expires,
            since: now,
        }
    }

    /// True once it has outlived its lifetime.
    pub(super) fn is_expired(&self, now: Instant) -> bool {
        self.expires.map_or(false, |at| now >= at)
    }

    /// True if it sat idle (since `since`) for `limit` or longer.
    pub(super) fn idle_for(&self, limit: Option<Duration>, now: Instant) -> bool {
        limit.map_or(false, |l| now.saturating_duration_since(self.since) >= l)
    }
}

/// Checks an idle connection before it is handed out: why it must be
/// closed instead, if it must.
pub(super) fn check<R: Recipe>(
    recipe: &R,
    entry: &mut Entry<R::Conn>,
    config: &Config,
    now: Instant,
) -> Option<Closed> {
    if entry.is_expired(now) {
        return Some(Closed::Expired);
    }
    if entry.idle_for(config.idle_timeout, now) {
        return Some(Closed::Idle);
    }
    let ping = entry.idle_for(config.ping_after_idle, now);
    if !ping && !entry.idle_for(Some(config.check_after_idle), now) {
        return None;
    }
    if recipe.is_healthy(&mut entry.conn, ping) {
        None
    } else {
        Some(Closed::Broken)
    }
}

/// `max` less up to a tenth of it, as `random` says: between 90 % and
/// 100 % of `max`.
pub(super) fn jittered(max: Duration, random: u64) -> Duration {
    let tenth = u64::try_from((max / 10).as_nanos()).unwrap_or(u64::MAX);
    let cut = match tenth.checked_add(1) {
        Some(span) => random % span,
        None => random,
    };
    max.saturating_sub(Duration::from_nanos(cut))
}

/// A random number (SipHash with std's random keys over a counter): for
/// jitter, not for secrets.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_last_tenth() {
        let max = Duration::from_millis(300);
        for r in [0, 1, 29_999_999, 30_000_000, 30_000_001, u64::MAX] {
            let d = jittered(max, r);
            assert!(d <= max && d >= Duration::from_millis(270), "{:?}", d);
        }
        assert_eq!(jittered(max, 0), max);
        assert_eq!(jittered(max, 30_000_000), Duration::from_millis(270));
        assert_eq!(jittered(Duration::ZERO, 12345), Duration::ZERO);
        let huge = Duration::MAX;
        assert!(jittered(huge, u64::MAX) <= huge);
        assert!(jittered(huge, u64::MAX) >= huge - huge / 10);
    }

    #[test]
    fn jitter_spreads_lifetimes() {
        let max = Duration::from_secs(100);
        let lives: Vec<Duration> = (0..200).map(|_| jittered(max, random())).collect();
        assert!(lives
            .iter()
            .all(|d| *d <= max && *d >= Duration::from_secs(90)));
        let lo = lives.iter().min().copied().unwrap_or_default();
        let hi = lives.iter().max().copied().unwrap_or_default();
        // 200 draws over 10 s: spread over most of it.
        assert!(hi - lo > Duration::from_secs(8), "{:?}..{:?}", lo, hi);
    }

    #[test]
    fn an_entry_expires_and_idles_by_its_dates() {
        let t0 = Instant::now();
        let e = Entry::new((), Some(Duration::from_millis(100)), t0);
        assert!(!e.is_expired(t0));
        assert!(!e.is_expired(t0 + Duration::from_millis(89)));
        assert!(e.is_expired(t0 + Duration::from_millis(100)));
        assert!(!e.idle_for(None, t0 + Duration::from_secs(1000)));
        assert!(e.idle_for(Some(Duration::from_secs(1)), t0 + Duration::from_secs(1)));
        assert!(!e.idle_for(Some(Duration::from_secs(1)), t0));
        let forever = Entry::new((), None, t0);
        assert!(!forever.is_expired(t0 + Duration::from_secs(1_000_000)));
    }
}
