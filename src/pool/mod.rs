//! [`Pool`]: connections shared by threads (feature `pool`).
//!
//! ```text
//! get() ──▶ shared.rs: under the lock, the most recent idle connection, or a reserved
//!                      slot, or a place in the FIFO queue (queue.rs) until one comes free
//!       ──▶ lock released: health.rs checks the idle one (lifetime, idle time, a look
//!           without a round trip, PING after a long idle spell), or the recipe
//!           (recipe.rs) opens a new one; a failed check is replaced in the same slot
//!       ──▶ PooledConnection (guard.rs) ── drop ──▶ clean? back to the idle list (or
//!           straight to the oldest waiter) : closed, and its slot goes to a waiter
//! ```
//!
//! No background thread: every check, expiry and refill is done by the
//! threads that take connections out and give them back. [`PoolStats`]
//! (stats.rs) counts what happened.

mod builder;
mod guard;
mod health;
mod queue;
mod recipe;
mod shared;
mod stats;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::connect::ConnectOptions;
use crate::error::Result;

pub use builder::PoolBuilder;
pub use guard::PooledConnection;
pub use recipe::Recipe;
pub use stats::PoolStats;

use builder::Config;
use shared::Shared;

/// A pool of connections for threads to share.
///
/// A `Pool` is a handle: cloning it is cheap and every clone uses the same
/// connections; it is `Send + Sync`, so it can also be shared by reference
/// (with `std::thread::scope`, or in a `static` built once). [`get`](Pool::get)
/// lends a connection as a [`PooledConnection`], which gives it back when
/// dropped.
///
/// ```no_run
/// use std::thread;
/// use respline::Pool;
///
/// let pool = Pool::open("redis://127.0.0.1:6379/0")?; // opens nothing yet
/// let workers: Vec<_> = (0..16)
///     .map(|i| {
///         let pool = pool.clone();
///         thread::spawn(move || -> respline::Result<i64> {
///             let mut conn = pool.get()?; // waits up to 5 s when all 8 are in use
///             conn.execute(("SET", format!("worker:{}", i), i))?;
///             conn.query(["INCR", "jobs:done"])
///         }) // the connection goes back to the pool here
///     })
///     .collect();
/// for w in workers {
///     w.join().expect("worker panicked")?;
/// }
/// println!("{}", pool.stats()); // 8 of 8 connections (8 idle, 0 in use, 0 waiting); created 8, ...
/// # Ok::<(), respline::Error>(())
/// ```
///
/// # How it works
///
/// * At most [`max_size`](PoolBuilder::max_size) connections are open,
///   idle or in use. A thread that finds none free waits up to the
///   [`checkout_timeout`](PoolBuilder::checkout_timeout); waiting threads
///   are served in the order they arrived. The wait ends in
///   [`Error::PoolTimeout`](crate::Error::PoolTimeout), which says how many
///   were in use, the maximum and how long it waited.
/// * New connections are opened outside the pool's lock, so a slow connect
///   holds up no other checkout. If opening fails, the caller gets the
///   recipe's error (a wrong password is the server's `WRONGPASS` inside
///   an [`Error::Handshake`](crate::Error::Handshake), not a timeout) and the next waiting thread
///   tries in its place.
/// * An idle connection is checked before it is handed out, cheapest first:
///   its maximum lifetime, its idle time, then, if it sat idle at least
///   [`check_after_idle`](PoolBuilder::check_after_idle) (100 ms), a look
///   at the socket that costs no round trip (see [`Recipe::is_healthy`]),
///   with a PING if it sat idle longer than
///   [`ping_after_idle`](PoolBuilder::ping_after_idle) (30 s). One that
///   fails is closed and a new one opened in its place: nothing had been
///   sent on it, so the caller does not notice (a server restart, a
///   `CLIENT KILL`, the server's `timeout` closing idle clients).
/// * A connection given back goes back only if it is clean (see
///   [`PooledConnection`]); idle connections are reused most recent first,
///   so the ones beyond what the load needs sit until the idle timeout
///   closes them.
/// * Checks happen when connections are taken out and given back, never in
///   the background: a pool nobody uses keeps its connections as they are
///   until the next checkout.
///
/// The recipe decides what a connection is: [`ConnectOptions`] for one
/// server, `ClusterOptions` for a cluster client
/// per "connection" (with the `cluster` feature),
/// `Sentinel` for connections to the current primary
/// of a Sentinel-managed group (with the `sentinel` feature), or your own
/// [`Recipe`].
///
/// A pool over Sentinel follows failovers: once a lookup (every new
/// connection makes one) has seen the primary move, idle connections to
/// the former primary are closed at checkout and busy ones when given
/// back, and their places are filled with connections to the new primary
/// (see [the recipe](Recipe#impl-Recipe-for-Sentinel) for when a move is
/// seen, and what a write in the window gets).
///
/// ```no_run
/// # #[cfg(feature = "sentinel")] {
/// use respline::{Pool, Sentinel};
///
/// let sentinel = Sentinel::open(&["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "mymaster")?;
/// let pool: Pool<Sentinel> = Pool::new(sentinel);
/// let mut conn = pool.get()?; // asks the sentinels, confirms with ROLE, connects
/// if let Err(e) = conn.execute(["INCR", "visits"]) {
///     // A failover under way: this connection is closed when given back,
///     // and the next get() connects to the primary as the sentinels name it.
///     println!("may have run: {}: {}", e.may_have_reached_server(), e);
/// }
/// # }
/// # Ok::<(), respline::Error>(())
/// ```
pub struct Pool<R: Recipe> {
    shared: Arc<Shared<R>>,
}

impl<R: Recipe> Pool<R> {
    /// A pool over `recipe` with the defaults of [`PoolBuilder`] (at most 8
    /// connections, a 5 s checkout timeout); it opens nothing until the
    /// first [`get`](Pool::get).
    pub fn new(recipe: R) -> Pool<R> {
        Pool::with_config(recipe, Config::default())
    }

    /// A builder to set the size, timeouts and health check.
    pub fn builder(recipe: R) -> PoolBuilder<R> {
        PoolBuilder::new(recipe)
    }

    fn with_config(recipe: R, config: Config) -> Pool<R> {
        Pool {
            shared: Arc::new(Shared::new(recipe, config)),
        }
    }

    /// Opens connections up to the builder's `min_idle`.
    fn fill_min_idle(&self) -> Result<()> {
        self.shared.top_up(self.shared.config.min_idle)
    }

    /// Lends a connection: an idle one that passes its health check, else a
    /// new one if there is room, else the first one given back, waiting at
    /// most the checkout timeout for it.
    ///
    /// Errors: [`Error::PoolTimeout`](crate::Error::PoolTimeout) when none
    /// came free in time; the recipe's error when a new connection could
    /// not be opened ([`Error::Connect`](crate::Error::Connect),
    /// [`Error::Handshake`](crate::Error::Handshake)...). Either way nothing
    /// was sent.
    ///
    /// ```no_run
    /// # let pool = respline::Pool::open("redis://127.0.0.1:6379/0")?;
    /// use respline::{Error, Pipeline};
    ///
    /// match pool.get() {
    ///     Ok(mut conn) => {
    ///         let mut pipe = Pipeline::new();
    ///         pipe.cmd(["INCR", "hits"]).cmd(["GET", "motd"]);
    ///         let (hits, motd): (i64, Option<String>) = pipe.query(&mut conn)?;
    ///     }
    ///     Err(Error::PoolTimeout { in_use, max, waited_ms }) => {
    ///         eprintln!("busy: {} of {} in use after {} ms", in_use, max, waited_ms);
    ///     }
    ///     Err(e) => return Err(e), // could not connect
    /// }
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn get(&self) -> Result<PooledConnection<R>> {
        self.get_timeout(self.shared.config.checkout_timeout)
    }

    /// [`get`](Pool::get), waiting at most `timeout` instead of the
    /// checkout timeout.
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConnection<R>> {
        let entry = self.shared.checkout(Some(timeout))?;
        Ok(PooledConnection::new(entry, Arc::clone(&self.shared)))
    }

    /// [`get`](Pool::get) without waiting for another thread: an idle
    /// connection, or a new one if there is room (opening it takes the time
    /// it takes), else [`Error::PoolTimeout`](crate::Error::PoolTimeout) at
    /// once. It does not jump the queue: while threads wait, it fails.
    pub fn try_get(&self) -> Result<PooledConnection<R>> {
        let entry = self.shared.checkout(None)?;
        Ok(PooledConnection::new(entry, Arc::clone(&self.shared)))
    }

    /// What the pool holds now and what it has done.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }

    /// Closes every idle connection now (counted as closed idle), for
    /// example after the server's address changed; connections in use are
    /// not touched. Returns how many were closed.
    pub fn close_idle(&self) -> usize {
        self.shared.close_idle()
    }

    /// The recipe connections are opened with.
    pub fn recipe(&self) -> &R {
        &self.shared.recipe
    }

    /// The most connections open at once.
    pub fn max_size(&self) -> usize {
        self.shared.config.max_size
    }
}

impl Pool<ConnectOptions> {
    /// A pool of connections to the server at `url` (see
    /// [`ConnectOptions::from_url`]) with the defaults of [`PoolBuilder`];
    /// it opens nothing until the first [`get`](Pool::get).
    ///
    /// ```
    /// let pool = respline::Pool::open("redis://127.0.0.1:6379/0")?;
    /// assert_eq!((pool.max_size(), pool.stats().total), (8, 0));
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn open(url: &str) -> Result<Pool<ConnectOptions>> {
        Ok(Pool::new(ConnectOptions::from_url(url)?))
    }
}

impl<R: Recipe> Clone for Pool<R> {
    fn clone(&self) -> Pool<R> {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R: Recipe> fmt::Debug for Pool<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests;
