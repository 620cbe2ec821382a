//! Redis Sentinel: connections to the current primary of a monitored group
//! (and to its replicas), looked up through the sentinels on every
//! connect, so that every reconnect follows a failover.
//!
//! ```text
//! options.rs   SentinelOptions: sentinels, primary name, sentinel vs data-node options, bounds
//! lookup.rs    the primary: ask sentinels in turn, confirm with ROLE, retry within the deadline
//! replicas.rs  replicas: SENTINEL REPLICAS, skip the down ones, confirm, take in turn
//! reply.rs     reading sentinel and ROLE replies (RESP2 and RESP3), never panicking
//! url.rs       redis+sentinel://host1,host2/name/db URLs
//! mod.rs       Sentinel, the shared handle: sentinel order, last primary, changes, owns()
//! ```
//!
//! The handle does no I/O of its own between calls: no background thread
//! watches `+switch-master`. A failover is noticed by the next lookup, which
//! every [`Sentinel::connect_primary`] makes, and by
//! [`Sentinel::owns`] when a connection got a `READONLY`, `MASTERDOWN` or
//! `LOADING` reply.

mod lookup;
mod options;
mod replicas;
mod reply;
mod url;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connect::{Addr, Socket};
use crate::connection::Connection;
use crate::error::Result;

pub use options::{SentinelOptions, LOOKUP_TIMEOUT, SENTINEL_PORT, SENTINEL_TIMEOUT};

/// At most this many sentinels learned from `SENTINEL SENTINELS` are kept
/// (the user's own are always kept, however many).
const MAX_LEARNED: usize = 32;

/// [`Sentinel::owns`] looks the primary up again for a connection that got
/// a failover reply only if no lookup ended within this time.
const REFRESH_COOLDOWN: Duration = Duration::from_millis(250);

/// A handle on a primary monitored by Redis Sentinel, and its replicas.
///
/// Cheap to clone, and shared by threads (`Clone + Send + Sync`): clones
/// share the sentinel list, the last known primary and the count of
/// changes. It holds no connection; each call that needs the sentinels
/// opens short-lived connections to them.
///
/// * [`connect_primary`](Sentinel::connect_primary) looks the primary up
///   (see [`primary_addr`](Sentinel::primary_addr)) and returns a
///   connection to it, opened with [`SentinelOptions::node`]. Call it again
///   to reconnect, or call the connection's
///   [`reconnect`](Connection::reconnect), which looks up again too.
/// * [`connect_replica`](Sentinel::connect_replica) returns a connection to
///   a replica, taken in turn, or to the primary when none is usable.
/// * [`owns`](Sentinel::owns) says whether a connection is still one to
///   hand out: to the current primary, and without a `READONLY`,
///   `MASTERDOWN` or `LOADING` reply seen. A pool keeps only those.
/// * With the `pool` feature, a `Sentinel` is a pool's recipe
///   (`impl Recipe for Sentinel`, in `respline::pool`): `Pool::new(sentinel)`
///   pools connections to the primary, closes those to a former primary
///   (idle ones at checkout, busy ones when given back) and opens their
///   replacements to the new one, keeping its size.
///
/// ```no_run
/// use respline::{ConnectOptions, Sentinel, SentinelOptions};
///
/// let sentinel = SentinelOptions::new(
///     &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
///     "mymaster",
/// )?
/// .node(ConnectOptions::from_url("redis://:secret@ignored/0")?)
/// .build()?;
///
/// let mut conn = sentinel.connect_primary()?;
/// conn.execute(["SET", "greeting", "hello"])?;
/// if let Err(e) = conn.execute(["INCR", "visits"]) {
///     // The primary may have moved: the next connect asks the sentinels again.
///     println!("failed (may have run: {}): {}", e.may_have_reached_server(), e);
///     conn = sentinel.connect_primary()?;
/// }
/// assert!(sentinel.owns(&conn) || sentinel.changes() > 0);
///
/// // Reads that may lag behind the primary:
/// let mut replica = sentinel.connect_replica()?;
/// let greeting: Option<String> = replica.query(["GET", "greeting"])?;
/// # let _ = greeting;
/// # Ok::<(), respline::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Sentinel {
    inner: Arc<Inner>,
}

/// What clones of a handle share.
#[derive(Debug)]
struct Inner {
    options: SentinelOptions,
    state: Mutex<State>,
}

/// What lookups learn, under the handle's lock (never held during I/O).
#[derive(Debug)]
struct State {
    /// The sentinels to ask, in order: the user's and those learned.
    sentinels: Vec<Addr>,
    /// The primary the latest lookup found.
    primary: Option<Addr>,
    /// How many times a lookup found a primary other than the one before.
    changes: u64,
    /// Tickets of lookups begun, so that one begun earlier but ending later
    /// cannot put back an older primary.
    lookups_begun: u64,
    /// The ticket of the lookup whose primary is recorded.
    recorded: u64,
    /// When a lookup last found the primary.
    last_found: Option<Instant>,
    /// The next replica's turn.
    replica_turn: usize,
}

impl Sentinel {
    /// A handle from checked options. No I/O: the sentinels are asked by
    /// the first lookup.
    pub fn new(options: SentinelOptions) -> Result<Sentinel> {
        options.check()?;
        let state = State {
            sentinels: options.sentinels.clone(),
            primary: None,
            changes: 0,
            lookups_begun: 0,
            recorded: 0,
            last_found: None,
            replica_turn: 0,
        };
        Ok(Sentinel {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(state),
            }),
        })
    }

    /// A handle from the sentinels' URLs and the primary's name, with the
    /// data nodes' options at their defaults (see [`SentinelOptions::new`]).
    pub fn open(sentinel_urls: &[&str], primary_name: &str) -> Result<Sentinel> {
        Sentinel::new(SentinelOptions::new(sentinel_urls, primary_name)?)
    }

    /// Looks the primary up now and returns its address.
    ///
    /// The sentinels are asked in turn (`SENTINEL GET-MASTER-ADDR-BY-NAME`,
    /// with the [`sentinel`](SentinelOptions::sentinel) options' short
    /// timeouts); a sentinel that cannot be reached, or answers with an
    /// error or nil, is passed over. The address one gives is confirmed
    /// with `ROLE` on a connection opened with the node options (when
    /// [`confirm_role`](SentinelOptions::confirm_role)); if it is not a
    /// primary, or refuses connections, the next sentinel is asked. The
    /// sentinel whose answer was confirmed moves to the front of the list,
    /// and the sentinels it knows (`SENTINEL SENTINELS`, asked in the same
    /// round trip) are added to the list, replacing those learned before;
    /// the user's are always kept.
    ///
    /// While only the address failed, the whole round is tried again after
    /// a pause, until [`lookup_timeout`](SentinelOptions::lookup_timeout)
    /// (2 s by default) has passed since the lookup began: the bound of the
    /// whole lookup, every connect and read included.
    ///
    /// # Errors
    ///
    /// [`Error::NoSentinel`](crate::Error::NoSentinel) when no sentinel
    /// answered; [`Error::UnknownPrimary`](crate::Error::UnknownPrimary) when
    /// every sentinel that answered knows no primary of that name (both at
    /// once, without retrying); at the deadline,
    /// [`Error::NotPrimary`](crate::Error::NotPrimary) when the address said
    /// it was not the primary, or the failure to connect to it; at once, the
    /// data node's refusal (authentication, ACL), an
    /// [`Error::Handshake`](crate::Error::Handshake) naming the step that
    /// was refused (`"ROLE"` when only `ROLE` was sent). None of these may have
    /// reached a server ([`may_have_reached_server`](crate::Error::may_have_reached_server)
    /// is false).
    pub fn primary_addr(&self) -> Result<Addr> {
        self.inner
            .find_primary(self.inner.deadline())
            .map(|(addr, _)| addr)
    }

    /// Looks the primary up (as [`primary_addr`](Sentinel::primary_addr)
    /// does) and returns the connection on which `ROLE` confirmed it,
    /// opened with the [`node`](SentinelOptions::node) options. Every call
    /// looks up again: call it to reconnect, and a reconnect follows a
    /// failover.
    ///
    /// The connection remembers this handle: its
    /// [`reconnect`](Connection::reconnect), and the fresh connection a
    /// request gets when it finds this one closed by the server before
    /// sending anything ([`retry_unsent`](crate::ConnectOptions::retry_unsent)),
    /// are made by this method too, so they go to the primary as it is
    /// then, never back to a former primary's address. (A fresh connection
    /// made that way waits for the lookup, at most the
    /// [`lookup_timeout`](SentinelOptions::lookup_timeout).)
    pub fn connect_primary(&self) -> Result<Connection<Socket>> {
        let (_, mut conn) = self.inner.find_primary(self.inner.deadline())?;
        conn.follow_primary(self.clone(), Sentinel::connect_primary);
        Ok(conn)
    }

    /// A connection to a replica, for reads that may lag behind the
    /// primary. The sentinels are asked in turn for `SENTINEL REPLICAS`
    /// until one lists a usable replica: not flagged `s_down`, `o_down` or
    /// `disconnected`, with `master-link-status` ok. Those are tried in
    /// turn, round-robin across calls, each confirmed with `ROLE` (a
    /// replica whose link to its primary is up). When none is usable, or
    /// none answers, the connection is to the primary, as
    /// [`connect_primary`](Sentinel::connect_primary) gives (and its errors).
    /// The replicas take at most the lookup timeout, and the primary as
    /// long again.
    pub fn connect_replica(&self) -> Result<Connection<Socket>> {
        match self.inner.find_replica(self.inner.deadline()) {
            Some(conn) => Ok(conn),
            None => self.connect_primary(),
        }
    }

    /// The primary the latest lookup found, without any I/O (`None` before
    /// the first).
    pub fn current_primary(&self) -> Option<Addr> {
        self.inner.state().primary.clone()
    }

    /// How many times a lookup found a primary other than the one found
    /// before (the first lookup does not count): it grows with every
    /// failover a lookup notices. Connections opened before it grew may be
    /// to a former primary.
    pub fn changes(&self) -> u64 {
        self.inner.state().changes
    }

    /// True if `conn` is still one to hand out: it was opened to the
    /// current primary (its [`options`](Connection::options) address is
    /// [`current_primary`](Sentinel::current_primary)) and has not received
    /// a `READONLY`, `MASTERDOWN` or `LOADING` error reply. No I/O, except
    /// for a connection that did receive one: the primary is then looked up
    /// again (unless a lookup found it in the last 250 ms), so that other
    /// connections to a former primary stop being owned too, and the
    /// answer is false. A connection not opened from options is never
    /// owned.
    pub fn owns<S>(&self, conn: &Connection<S>) -> bool {
        let addr = match conn.options() {
            Some(options) => &options.addr,
            None => return false,
        };
        if conn.saw_failover_reply() {
            self.refresh();
            return false;
        }
        self.inner.state().primary.as_ref() == Some(addr)
    }

    /// The sentinels lookups ask, in the order they ask them: the one whose
    /// answer was last confirmed first, then the user's and the learned
    /// ones.
    pub fn sentinels(&self) -> Vec<Addr> {
        self.inner.state().sentinels.clone()
    }

    /// The options the handle was made with.
    pub fn options(&self) -> &SentinelOptions {
        &self.inner.options
    }

    /// Looks the primary up again, unless a lookup found it very recently.
    fn refresh(&self) {
        {
            let mut state = self.inner.state();
            if state
                .last_found
                .map_or(false, |t| t.elapsed() < REFRESH_COOLDOWN)
            {
                return;
            }
            // Other connections asking meanwhile do not start another.
            state.last_found = Some(Instant::now());
        }
        let _ = self.inner.find_primary(self.inner.deadline());
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step: a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When a lookup starting now must end.
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.options.lookup_timeout)
            .or_else(|| now.checked_add(Duration::from_secs(3600)))
            .unwrap_or(now)
    }
}

impl State {
    /// A ticket for a lookup beginning now.
    fn begin_lookup(&mut self) -> u64 {
        self.lookups_begun += 1;
        self.lookups_begun
    }

    /// Records what a lookup found: `sentinel` gave the confirmed
    /// `primary`, and knows the sentinels `learned`.
    fn found_primary(
        &mut self,
        ticket: u64,
        sentinel: &Addr,
        primary: &Addr,
        learned: Option<Vec<Addr>>,
        options: &SentinelOptions,
    ) {
        if let Some(i) = self.sentinels.iter().position(|s| s == sentinel) {
            let front = self.sentinels.remove(i);
            self.sentinels.insert(0, front);
        }
        if let Some(learned) = learned {
            self.learn(sentinel, learned, &options.sentinels);
        }
        self.last_found = Some(Instant::now());
        if ticket <= self.recorded {
            return;
        }
        self.recorded = ticket;
        if self.primary.as_ref() != Some(primary) {
            if self.primary.is_some() {
                self.changes += 1;
            }
            self.primary = Some(primary.clone());
        }
    }

    /// Makes `learned` the sentinels learned, keeping the user's and the
    /// one that answered, and the order of those already known.
    fn learn(&mut self, answered: &Addr, mut learned: Vec<Addr>, seeds: &[Addr]) {
        learned.truncate(MAX_LEARNED);
        self.sentinels
            .retain(|s| s == answered || seeds.contains(s) || learned.contains(s));
        for s in learned {
            if !self.sentinels.contains(&s) {
                self.sentinels.push(s);
            }
        }
    }

    /// The replica to try first, and the turn moved on.
    fn next_replica_turn(&mut self) -> usize {
        let turn = self.replica_turn;
        self.replica_turn = turn.wrapping_add(1);
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u16) -> Addr {
        Addr::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn handle(seeds: &[u16]) -> Sentinel {
        let addrs = seeds.iter().map(|&p| tcp(p)).collect();
        Sentinel::new(SentinelOptions::from_addrs(addrs, "m")).unwrap()
    }

    #[test]
    fn the_handle_is_shared_by_threads() {
        fn shared<T: Clone + Send + Sync + 'static>() {}
        shared::<Sentinel>();
    }

    #[test]
    fn the_confirmed_sentinel_moves_to_the_front_and_seeds_are_kept() {
        let s = handle(&[1, 2, 3]);
        let options = s.options().clone();
        let mut state = s.inner.state();
        let t = state.begin_lookup();
        state.found_primary(t, &tcp(3), &tcp(7000), Some(vec![tcp(4), tcp(5)]), &options);
        assert_eq!(state.sentinels, [tcp(3), tcp(1), tcp(2), tcp(4), tcp(5)]);
        // A later answer that no longer lists 4: the learned 4 goes, seeds stay.
        let t = state.begin_lookup();
        state.found_primary(t, &tcp(5), &tcp(7000), Some(vec![tcp(3), tcp(6)]), &options);
        assert_eq!(state.sentinels, [tcp(5), tcp(3), tcp(1), tcp(2), tcp(6)]);
        assert_eq!((state.changes, state.primary.clone()), (0, Some(tcp(7000))));
    }

    #[test]
    fn changes_count_new_primaries_and_late_lookups_cannot_go_back() {
        let s = handle(&[1]);
        let options = s.options().clone();
        let mut state = s.inner.state();
        let early = state.begin_lookup();
        let late = state.begin_lookup();
        state.found_primary(late, &tcp(1), &tcp(7001), None, &options);
        assert_eq!(state.changes, 0);
        // The lookup begun first ends last, with the old primary: ignored.
        state.found_primary(early, &tcp(1), &tcp(7000), None, &options);
        assert_eq!((state.changes, state.primary.clone()), (0, Some(tcp(7001))));
        let next = state.begin_lookup();
        state.found_primary(next, &tcp(1), &tcp(7002), None, &options);
        assert_eq!((state.changes, state.primary.clone()), (1, Some(tcp(7002))));
    }

    #[test]
    fn learned_sentinels_are_bounded() {
        let s = handle(&[1]);
        let options = s.options().clone();
        let mut state = s.inner.state();
        let many: Vec<Addr> = (100..1100).map(tcp).collect();
        let t = state.begin_lookup();
        state.found_primary(t, &tcp(1), &tcp(7000), Some(many), &options);
        assert_eq!(state.sentinels.len(), 1 + MAX_LEARNED);
    }

    #[test]
    fn a_connection_not_opened_from_options_is_never_owned() {
        let s = handle(&[1]);
        let conn = Connection::new(std::io::Cursor::new(Vec::<u8>::new()));
        assert!(!s.owns(&conn));
    }
}
