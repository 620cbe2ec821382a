//! [`PoolStats`]: what a pool holds now and what it has done.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a pool, from [`Pool::stats`](super::Pool::stats): what it
/// holds now, and counters since it was built.
///
/// Every connection ever opened ends up counted once: it is still open
/// (`total`), or it was closed as broken, idle, expired or dirty, or
/// detached. So `created == total + closed_broken + closed_idle +
/// closed_expired + closed_dirty + detached` whenever no connection is
/// being opened.
///
/// ```
/// let stats = respline::PoolStats::default();
/// assert_eq!(
///     stats.to_string(),
///     "0 of 0 connections (0 idle, 0 in use, 0 waiting); created 0, reused 0, timed out 0, \
///      connect failures 0; closed: 0 broken, 0 idle, 0 expired, 0 dirty; detached 0"
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The pool's maximum size.
    pub max_size: usize,
    /// Connections open (idle or in use), and slots reserved for
    /// connections being opened.
    pub total: usize,
    /// Connections waiting in the pool.
    pub idle: usize,
    /// `total - idle`: lent out, or being opened.
    pub in_use: usize,
    /// Threads waiting for a connection.
    pub waiting: usize,
    /// Connections opened.
    pub created: u64,
    /// Checkouts served by an idle connection that passed its health check.
    pub reused: u64,
    /// Checkouts that failed with [`Error::PoolTimeout`](crate::Error::PoolTimeout)
    /// (`try_get` on a full pool included).
    pub timed_out: u64,
    /// Connections the recipe failed to open (the caller got that error).
    pub connect_failed: u64,
    /// Idle connections that failed their checkout health check (closed by
    /// the server, stray bytes waiting, no answer to PING) and were closed.
    pub closed_broken: u64,
    /// Connections closed after sitting idle longer than the idle timeout
    /// (or by [`Pool::close_idle`](super::Pool::close_idle)).
    pub closed_idle: u64,
    /// Connections closed for reaching their maximum lifetime.
    pub closed_expired: u64,
    /// Connections given back not fit for reuse (broken while in use,
    /// inside MULTI or WATCH, subscribed, on another database...: see
    /// [`Recipe::is_reusable`](super::Recipe::is_reusable)) or by a
    /// panicking thread, and closed.
    pub closed_dirty: u64,
    /// Connections taken out of the pool for good with
    /// [`PooledConnection::detach`](super::PooledConnection::detach).
    pub detached: u64,
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} connections ({} idle, {} in use, {} waiting); created {}, reused {}, \
             timed out {}, connect failures {}; closed: {} broken, {} idle, {} expired, {} dirty; \
             detached {}",
            self.total,
            self.max_size,
            self.idle,
            self.in_use,
            self.waiting,
            self.created,
            self.reused,
            self.timed_out,
            self.connect_failed,
            self.closed_broken,
            self.closed_idle,
            self.closed_expired,
            self.closed_dirty,
            self.detached
        )
    }
}

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    Broken,
    Idle,
    Expired,
    Dirty,
}

/// The counters, updated without the pool's lock.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) created: AtomicU64,
    pub(super) reused: AtomicU64,
    pub(super) timed_out: AtomicU64,
    pub(super) connect_failed: AtomicU64,
    closed_broken: AtomicU64,
    closed_idle: AtomicU64,
    closed_expired: AtomicU64,
    closed_dirty: AtomicU64,
    pub(super) detached: AtomicU64,
}

/// Adds `n` to a counter.
pub(super) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn closed(&self, why: Closed, n: u64) {
        let counter = match why {
            Closed::Broken => &self.closed_broken,
            Closed::Idle => &self.closed_idle,
            Closed::Expired => &self.closed_expired,
            Closed::Dirty => &self.closed_dirty,
        };
        bump(counter, n);
    }

    /// Copies the counters into `stats`.
    pub(super) fn fill(&self, stats: &mut PoolStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.created = get(&self.created);
        stats.reused = get(&self.reused);
        stats.timed_out = get(&self.timed_out);
        stats.connect_failed = get(&self.connect_failed);
        stats.closed_broken = get(&self.closed_broken);
        stats.closed_idle = get(&self.closed_idle);
        stats.closed_expired = get(&self.closed_expired);
        stats.closed_dirty = get(&self.closed_dirty);
        stats.detached = get(&self.detached);
    }
}
