//! [`PoolBuilder`]: a pool's size, timeouts and health check.

use std::time::Duration;

use super::{Pool, Recipe};
use crate::error::{Error, Result};

/// The settings a pool runs with (see the builder's methods).
#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) max_size: usize,
    pub(super) min_idle: usize,
    pub(super) checkout_timeout: Duration,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) check_after_idle: Duration,
    pub(super) ping_after_idle: Option<Duration>,
}

/// Defaults: see [`PoolBuilder`].
impl Default for Config {
    fn default() -> Config {
        Config {
            max_size: 8,
            min_idle: 0,
            checkout_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: None,
            check_after_idle: Duration::from_millis(100),
            ping_after_idle: Some(Duration::from_secs(30)),
        }
    }
}

/// Settings for a [`Pool`], from [`Pool::builder`].
///
/// | setting | default | |
/// | --- | --- | --- |
/// | [`max_size`](Self::max_size) | 8 | connections open at most, in use or idle |
/// | [`min_idle`](Self::min_idle) | 0 | idle connections kept ready |
/// | [`checkout_timeout`](Self::checkout_timeout) | 5 s | the longest [`Pool::get`] waits for a connection to come free |
/// | [`idle_timeout`](Self::idle_timeout) | 10 min | an idle connection older than this is closed |
/// | [`max_lifetime`](Self::max_lifetime) | none | a connection older than this (less up to 10 %) is closed |
/// | [`check_after_idle`](Self::check_after_idle) | 100 ms | idle this long, a connection is checked ([`Recipe::is_healthy`]) before it is handed out |
/// | [`ping_after_idle`](Self::ping_after_idle) | 30 s | idle this long, the check includes a PING |
///
/// Why 8: one synchronous connection carries one request at a time, and a
/// Redis server executes commands on one thread, so a handful of
/// connections already keeps it busy (pipelines do more for throughput than
/// more connections); 8 serves a typical worker pool while keeping the
/// server's client count small. Raise it for threads that block on the
/// server (`BLPOP`, `XREAD BLOCK`) or wait on slow networks.
///
/// ```no_run
/// use std::time::Duration;
/// use respline::{ConnectOptions, Pool};
///
/// let pool = Pool::builder(ConnectOptions::from_url("redis://127.0.0.1:6379/0")?)
///     .max_size(16)
///     .min_idle(2)
///     .checkout_timeout(Duration::from_secs(1))
///     .max_lifetime(Some(Duration::from_secs(3600)))
///     .build()?; // opens the 2 idle connections now
/// # Ok::<(), respline::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PoolBuilder<R> {
    recipe: R,
    config: Config,
}

impl<R: Recipe> PoolBuilder<R> {
    pub(super) fn new(recipe: R) -> PoolBuilder<R> {
        PoolBuilder {
            recipe,
            config: Config::default(),
        }
    }

    /// At most this many connections open at once, in use or idle
    /// (default 8; at least 1).
    pub fn max_size(mut self, max: usize) -> PoolBuilder<R> {
        self.config.max_size = max;
        self
    }

    /// Keep at least this many idle connections ready, within
    /// [`max_size`](Self::max_size) (default 0). There is no background
    /// thread: [`build`](Self::build) opens them, and afterwards a thread
    /// that gives a connection back opens one more (at most one per return)
    /// while fewer are idle, for example after some were closed. The idle
    /// timeout never closes these.
    pub fn min_idle(mut self, min: usize) -> PoolBuilder<R> {
        self.config.min_idle = min;
        self
    }

    /// How long [`Pool::get`] waits for a connection when all
    /// [`max_size`](Self::max_size) are in use (default 5 s), before failing
    /// with [`Error::PoolTimeout`]. It bounds the wait for another thread's
    /// connection; opening a new one is bounded by the recipe's own connect
    /// timeout.
    pub fn checkout_timeout(mut self, timeout: Duration) -> PoolBuilder<R> {
        self.config.checkout_timeout = timeout;
        self
    }

    /// Close a connection that sat idle this long (default 10 minutes;
    /// `None`: never). Checked when connections are taken out and given
    /// back, not by a background thread.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> PoolBuilder<R> {
        self.config.idle_timeout = timeout;
        self
    }

    /// Close a connection once it is this old (default `None`: never).
    /// Each connection's own limit is drawn between 90 % and 100 % of this,
    /// so that connections opened together do not all reconnect together.
    /// A connection in use is closed when it is given back.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> PoolBuilder<R> {
        self.config.max_lifetime = lifetime;
        self
    }

    /// Check a connection that sat idle this long before handing it out
    /// (default 100 ms; `Duration::ZERO`: at every checkout): the recipe's
    /// look that costs no round trip ([`Recipe::is_healthy`]: for
    /// [`ConnectOptions`](crate::ConnectOptions) over TCP, a non-blocking
    /// `peek` that finds a connection the server closed or bytes nobody
    /// asked for).
    ///
    /// A connection given back moments ago is handed out without it, as
    /// HikariCP does within its 500 ms: under load that look would be most
    /// of a checkout's cost (three system calls: a `get()` and drop took
    /// 1.55 us with it and 0.3 us without on the 2-vCPU VM of
    /// `docs/benchmarks.md`), and a
    /// connection opened from [`ConnectOptions`](crate::ConnectOptions)
    /// takes the same look before each request anyway, replacing a closed
    /// one before anything is written (see
    /// [`retry_unsent`](crate::ConnectOptions::retry_unsent)). So what the
    /// server closed in those moments (`CLIENT KILL`, a restart) is still
    /// not seen by the caller, only not counted in [`PoolStats`](super::PoolStats).
    pub fn check_after_idle(mut self, idle: Duration) -> PoolBuilder<R> {
        self.config.check_after_idle = idle;
        self
    }

    /// Include a PING in the check of a connection that sat idle this
    /// long (default 30 s; `None`: never): the look without a round trip
    /// finds a connection the server closed; the PING also finds one whose
    /// peer vanished without closing it, or a server that stopped
    /// answering.
    pub fn ping_after_idle(mut self, idle: Option<Duration>) -> PoolBuilder<R> {
        self.config.ping_after_idle = idle;
        self
    }

    /// The pool. It opens [`min_idle`](Self::min_idle) connections first
    /// and fails with the first error doing so; with none (the default) it
    /// opens nothing until the first [`Pool::get`]. A `max_size` of 0 or a
    /// `min_idle` above `max_size` is an [`Error::Config`].
    pub fn build(self) -> Result<Pool<R>> {
        if self.config.max_size == 0 {
            return Err(Error::Config(
                "pool: expected a max_size of at least 1, found 0".into(),
            ));
        }
        if self.config.min_idle > self.config.max_size {
            return Err(Error::Config(format!(
                "pool: expected min_idle ({}) at most max_size ({})",
                self.config.min_idle, self.config.max_size
            )));
        }
        let pool = Pool::with_config(self.recipe, self.config);
        pool.fill_min_idle()?;
        Ok(pool)
    }
}
