//! [`Recipe`]: how a pool opens and checks its connections, and the
//! recipes for one server ([`ConnectOptions`]) and for a cluster.

use std::time::Duration;

use crate::connect::{ConnectOptions, Socket};
use crate::connection::{Connection, ReplyTimeout};
use crate::error::{Error, Result};
use crate::resp::Protocol;

/// How a pool opens and checks its connections.
///
/// Implemented for [`ConnectOptions`] (one server), with the `cluster`
/// feature for `ClusterOptions` (a cluster client
/// per "connection"), and with the `sentinel` feature for
/// `Sentinel` (connections to the current primary of a
/// Sentinel-managed group). Implement it to pool anything else: wrapped
/// streams, other topologies. The pool calls these methods without holding its lock, from
/// any thread; they should not panic (a panic is passed on to the caller,
/// and the connection concerned is closed).
pub trait Recipe: Send + Sync + 'static {
    /// What the pool hands out.
    type Conn: Send + 'static;
    /// Opens a new connection (called with no pool lock held).
    fn connect(&self) -> Result<Self::Conn>;
    /// Whether a connection given back may be handed out again as if fresh.
    fn is_reusable(&self, conn: &Self::Conn) -> bool;
    /// Checkout health check of an idle connection, cheapest first: a
    /// non-blocking look for EOF or stray bytes; a PING only when `ping` is true
    /// (it sat idle longer than the builder's threshold). false: close it and use another.
    fn is_healthy(&self, conn: &mut Self::Conn, ping: bool) -> bool;
}

/// One server's connections, opened with [`Connection::connect`].
///
/// * `connect` opens and runs the handshake; when the handshake sends
///   nothing (RESP2, no password, no client name, database 0) it also sends
///   a `PING`, so that a server asking for a password fails the checkout
///   with [`Error::Handshake`] (step `"PING"`, the server's `NOAUTH` inside)
///   instead of the first command after it.
/// * `is_reusable`: [`Connection::is_reusable`] (not broken, no reply left
///   unread, no WATCH, no session-changing command such as `SELECT`,
///   `MULTI`, `SUBSCRIBE` or `CLIENT SETNAME` sent by hand), no RESP3 push
///   left untaken, and the protocol these options ask for. (Asking for RESP3
///   from a server without `HELLO`, before Redis 6, gives RESP2 connections,
///   which are then never reused: ask for RESP2 there.)
/// * `is_healthy`: over TCP, a non-blocking `peek` that finds a connection
///   the server closed or bytes nobody asked for, without reading them;
///   over a Unix socket, where std cannot peek, nothing (the connection
///   itself finds a closed socket before its next request and, with
///   [`retry_unsent`](ConnectOptions::retry_unsent), replaces it). With
///   `ping`, a `PING`, waiting as long as the read timeout (or the connect
///   timeout when there is none, or 5 s).
impl Recipe for ConnectOptions {
    type Conn = Connection<Socket>;

    fn connect(&self) -> Result<Connection<Socket>> {
        let mut conn = Connection::connect(self)?;
        if handshake_sends_nothing(self) && !answers_ping(&mut conn, self)? {
            return Err(Error::Handshake {
                step: "PING",
                source: Box::new(Error::Config("expected PONG in reply to PING".into())),
            });
        }
        Ok(conn)
    }

    fn is_reusable(&self, conn: &Connection<Socket>) -> bool {
        conn.is_reusable() && conn.pending_pushes() == 0 && conn.protocol() == self.protocol
    }

    fn is_healthy(&self, conn: &mut Connection<Socket>, ping: bool) -> bool {
        match conn.looks_idle() {
            Some(false) => false,
            _ if !ping => true,
            _ => matches!(answers_ping(conn, self), Ok(true)),
        }
    }
}

/// True if the handshake of `options` sends no command at all.
fn handshake_sends_nothing(options: &ConnectOptions) -> bool {
    options.password.is_none()
        && options.client_name.is_none()
        && options.db == 0
        && options.protocol == Protocol::Resp2
}

/// Sends `PING` and says whether `PONG` came back: an error reply is the
/// server's error, inside an [`Error::Handshake`] at step `"PING"`.
fn answers_ping(conn: &mut Connection<Socket>, options: &ConnectOptions) -> Result<bool> {
    let wait = options
        .read_timeout
        .or(options.connect_timeout)
        .unwrap_or(Duration::from_secs(5));
    let reply: String = conn
        .with_timeout(ReplyTimeout::After(wait))
        .query(["PING"])
        .map_err(|e| Error::Handshake {
            step: "PING",
            source: Box::new(e),
        })?;
    Ok(reply == "PONG" && conn.is_reusable())
}

/// A cluster client per pooled "connection": [`Cluster::connect`](crate::Cluster::connect).
/// A cluster repairs its own node connections (it reconnects, follows
/// redirects and refreshes its slot map) and refuses the commands that
/// would change a node connection's session, so a `Cluster` given back is
/// always reusable (unless its thread was panicking), and the checkout
/// health check has nothing to do.
#[cfg(feature = "cluster")]
impl Recipe for crate::cluster::ClusterOptions {
    type Conn = crate::cluster::Cluster;

    fn connect(&self) -> Result<crate::cluster::Cluster> {
        crate::cluster::Cluster::connect(self)
    }

    fn is_reusable(&self, _: &crate::cluster::Cluster) -> bool {
        true
    }

    fn is_healthy(&self, _: &mut crate::cluster::Cluster, _: bool) -> bool {
        true
    }
}

/// Connections to the primary of a Sentinel-managed group, followed across
/// failovers: [`Sentinel::connect_primary`](crate::Sentinel::connect_primary).
///
/// * `connect` looks the primary up and opens the connection `ROLE`
///   confirmed, with the [`node`](crate::SentinelOptions::node) options;
///   like [`ConnectOptions`]' recipe it sends a `PING` when nothing else
///   would reach the server before the first command (no `ROLE`, no
///   password, name, database or RESP3), so a server that wants a password
///   fails the checkout.
/// * `is_reusable`: the node options' own rule (see [`ConnectOptions`]'
///   recipe) and [`Sentinel::owns`](crate::Sentinel::owns): to the primary
///   the last lookup found, and no `READONLY`, `MASTERDOWN` or `LOADING`
///   reply seen (such a reply makes the handle look the primary up again).
/// * `is_healthy`: [`owns`](crate::Sentinel::owns) first, then the node
///   options' check.
///
/// So once a lookup has seen the primary move, the idle connections to the
/// former primary are closed at checkout (counted as closed broken) and the
/// ones in use when given back (closed dirty); new ones go to the new
/// primary, and the pool keeps its size. (The checkout check skips a
/// connection given back less than
/// [`check_after_idle`](super::PoolBuilder::check_after_idle), 100 ms,
/// before: one given back just before the lookup may be handed out once
/// more, and is closed when given back.) A lookup happens at every new
/// connection and after a failover reply, never in the background: a pool
/// whose connections all stay open goes on using them until something
/// makes it look. After a `kill -9` that is the first request (its
/// connection is gone); after a manual `SENTINEL FAILOVER` the former
/// primary stays up and takes writes, with no replica left, until the
/// sentinels demote it about 10 s later (closing its clients), and what it
/// took meanwhile is lost then: Redis's own split-brain window, which
/// `min-replicas-to-write` with a short `min-replicas-max-lag` on the
/// server narrows. To notice sooner, look up
/// on your own schedule: `pool.recipe().primary_addr()` (on a timer, or
/// when a sentinel publishes `+switch-master`), or give connections a
/// [`max_lifetime`](super::PoolBuilder::max_lifetime).
///
/// A connection that the server closed while it sat in the pool is found
/// at checkout (after [`check_after_idle`](super::PoolBuilder::check_after_idle))
/// or, before anything is sent, by the request itself: both replace it
/// through a lookup, never at the former address. A write thus reaches a
/// demoted primary only if it was demoted after the lookup confirmed it,
/// and then at worst gets a `READONLY` error reply (the write did not run,
/// and the connection is not reused): never sent twice, never silently
/// dropped. Writes a primary acknowledged but had not replicated when it
/// failed can still be lost by Redis's asynchronous replication; `WAIT`
/// tells how many replicas have them.
///
/// ```no_run
/// use respline::{Pool, Sentinel};
///
/// let sentinel = Sentinel::open(&["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "mymaster")?;
/// let pool = Pool::builder(sentinel).max_size(16).build()?;
/// let mut conn = pool.get()?; // a connection to the current primary
/// conn.execute(["INCR", "visits"])?;
/// drop(conn); // kept only if still the primary's
/// pool.recipe().primary_addr()?; // look up now: a move closes the former primary's connections
/// # Ok::<(), respline::Error>(())
/// ```
#[cfg(feature = "sentinel")]
impl Recipe for crate::sentinel::Sentinel {
    type Conn = Connection<Socket>;

    fn connect(&self) -> Result<Connection<Socket>> {
        let mut conn = self.connect_primary()?;
        let node = &self.options().node;
        if !self.options().confirm_role
            && handshake_sends_nothing(node)
            && !answers_ping(&mut conn, node)?
        {
            return Err(Error::Handshake {
                step: "PING",
                source: Box::new(Error::Config("expected PONG in reply to PING".into())),
            });
        }
        Ok(conn)
    }

    fn is_reusable(&self, conn: &Connection<Socket>) -> bool {
        Recipe::is_reusable(&self.options().node, conn) && self.owns(conn)
    }

    fn is_healthy(&self, conn: &mut Connection<Socket>, ping: bool) -> bool {
        self.owns(conn) && Recipe::is_healthy(&self.options().node, conn, ping)
    }
}
