//! The pool's state and the two moves on it: taking a connection out and
//! giving one back. The lock is held only to move entries and counts;
//! connecting, checking and closing happen after it is released.
//!
//! The rules:
//! * `total` counts open connections plus slots reserved for connections
//!   being opened, and never exceeds `max_size`;
//! * whatever comes free (a connection given back, a slot released) goes
//!   to the oldest waiter first (`dispatch`), so a thread that arrives
//!   while others wait queues behind them;
//! * every removal lowers `total` and, through `dispatch`, wakes one waiter
//!   with a slot to open a connection in.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::builder::Config;
use super::health::{self, Entry};
use super::queue::{Queue, Wake};
use super::stats::{bump, Closed, Counters, PoolStats};
use super::Recipe;
use crate::error::{Error, Result};

/// How many times a waiter looks for its grant, yielding, before it
/// sleeps.
const LOOKS_BEFORE_SLEEP: usize = 32;

/// What the pool's users share.
pub(super) struct Shared<R: Recipe> {
    pub(super) recipe: R,
    pub(super) config: Config,
    state: Mutex<State<R::Conn>>,
    pub(super) counters: Counters,
}

struct State<C> {
    /// Idle connections; the most recently given back last (taken first).
    idle: VecDeque<Entry<C>>,
    total: usize,
    /// Slots reserved by `top_up` for idle connections being opened.
    filling: usize,
    waiters: Queue<Grant<C>>,
    /// Waiters served while the lock is held, woken once it is released.
    to_wake: Vec<Arc<Wake>>,
}

/// The locked state. Dropping it releases the lock, then wakes the
/// waiters served meanwhile: a waiter woken while the lock is still held
/// would only wake to wait for the lock.
struct Locked<'a, C> {
    guard: Option<MutexGuard<'a, State<C>>>,
}

impl<'a, C> Locked<'a, C> {
    /// The guard itself, for a `Condvar` wait, after waking whoever was
    /// served meanwhile (a wait releases the lock without this drop).
    fn into_guard(mut self) -> MutexGuard<'a, State<C>> {
        let mut guard = self
            .guard
            .take()
            .expect("a Locked holds its guard until dropped");
        for wake in guard.to_wake.drain(..) {
            wake.condvar.notify_one();
        }
        guard
    }
}

impl<C> Deref for Locked<'_, C> {
    type Target = State<C>;
    fn deref(&self) -> &State<C> {
        self.guard
            .as_ref()
            .expect("a Locked holds its guard until dropped")
    }
}

impl<C> DerefMut for Locked<'_, C> {
    fn deref_mut(&mut self) -> &mut State<C> {
        self.guard
            .as_mut()
            .expect("a Locked holds its guard until dropped")
    }
}

impl<C> Drop for Locked<'_, C> {
    fn drop(&mut self) {
        let mut guard = match self.guard.take() {
            Some(guard) => guard,
            None => return,
        };
        let wake = std::mem::take(&mut guard.to_wake);
        drop(guard);
        for w in wake {
            w.condvar.notify_one();
        }
    }
}

/// What a caller gets to work with: an idle connection to check, or a
/// reserved slot to open one in.
enum Grant<C> {
    Conn(Entry<C>),
    Slot,
}

/// A reserved slot, released (and a waiter woken) unless a connection was
/// opened in it; so a failing or panicking `connect` or health check never
/// shrinks the pool for good.
struct Slot<'a, R: Recipe> {
    shared: &'a Shared<R>,
    kept: bool,
}

impl<R: Recipe> Drop for Slot<'_, R> {
    fn drop(&mut self) {
        if !self.kept {
            self.shared.release_slot();
        }
    }
}

/// A slot reserved by `top_up`: the connection opened in it goes to the
/// idle list; a failure (or a panic in `connect`) releases it.
struct Filling<'a, R: Recipe> {
    shared: &'a Shared<R>,
    done: bool,
}

impl<R: Recipe> Filling<'_, R> {
    fn done(mut self, opened: Result<R::Conn>) -> Result<()> {
        self.done = true;
        let shared = self.shared;
        let mut state = shared.lock();
        state.filling -= 1;
        let result = match opened {
            Ok(conn) => {
                bump(&shared.counters.created, 1);
                let entry = Entry::new(conn, shared.config.max_lifetime, Instant::now());
                state.idle.push_back(entry);
                Ok(())
            }
            Err(e) => {
                bump(&shared.counters.connect_failed, 1);
                state.total -= 1;
                Err(e)
            }
        };
        shared.dispatch(&mut state);
        result
    }
}

impl<R: Recipe> Drop for Filling<'_, R> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        state.filling -= 1;
        state.total -= 1;
        self.shared.dispatch(&mut state);
    }
}

impl<R: Recipe> Shared<R> {
    pub(super) fn new(recipe: R, config: Config) -> Shared<R> {
        Shared {
            recipe,
            config,
            state: Mutex::new(State {
                idle: VecDeque::new(),
                total: 0,
                filling: 0,
                waiters: Queue::new(),
                to_wake: Vec::new(),
            }),
            counters: Counters::default(),
        }
    }

    /// The state, also after a panic elsewhere: nothing panics while holding
    /// the lock (no user code runs under it), so it is always consistent.
    fn lock(&self) -> Locked<'_, R::Conn> {
        Locked {
            guard: Some(self.state.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }

    /// A connection: an idle one that passes its health check, or a new one.
    /// `wait` is how long to wait when all are in use (`None`: do not).
    pub(super) fn checkout(&self, wait: Option<Duration>) -> Result<Entry<R::Conn>> {
        let started = Instant::now();
        let mut state = self.lock();
        let stale = self.prune(&mut state, started);
        let first = if state.waiters.is_empty() {
            self.take_or_reserve(&mut state)
        } else {
            None
        };
        let (grant, now) = match (first, wait) {
            (Some(grant), _) => {
                drop(state);
                (Ok(grant), started)
            }
            (None, Some(limit)) => (self.wait(state, started, limit), Instant::now()),
            (None, None) => {
                let e = self.exhausted(&state, started);
                drop(state);
                (Err(e), started)
            }
        };
        drop(stale);
        match grant? {
            Grant::Slot => self.open(Slot {
                shared: self,
                kept: false,
            }),
            Grant::Conn(entry) => self.check_or_replace(entry, now),
        }
    }

    /// Hands out `entry` if it passes its health check; otherwise closes it
    /// and opens a new connection in its slot (nothing was sent on it).
    fn check_or_replace(&self, mut entry: Entry<R::Conn>, now: Instant) -> Result<Entry<R::Conn>> {
        let slot = Slot {
            shared: self,
            kept: false,
        };
        match health::check(&self.recipe, &mut entry, &self.config, now) {
            None => {
                let mut slot = slot;
                slot.kept = true;
                bump(&self.counters.reused, 1);
                Ok(entry)
            }
            Some(why) => {
                self.counters.closed(why, 1);
                drop(entry);
                self.open(slot)
            }
        }
    }

    /// Opens a connection in a reserved slot; on failure the slot is
    /// released (waking a waiter) and the caller gets the recipe's error.
    fn open(&self, mut slot: Slot<'_, R>) -> Result<Entry<R::Conn>> {
        match self.recipe.connect() {
            Ok(conn) => {
                slot.kept = true;
                bump(&self.counters.created, 1);
                Ok(Entry::new(conn, self.config.max_lifetime, Instant::now()))
            }
            Err(e) => {
                bump(&self.counters.connect_failed, 1);
                Err(e)
            }
        }
    }

    /// An idle connection (the most recent), or a slot if there is room.
    fn take_or_reserve(&self, state: &mut State<R::Conn>) -> Option<Grant<R::Conn>> {
        if let Some(entry) = state.idle.pop_back() {
            return Some(Grant::Conn(entry));
        }
        if state.total < self.config.max_size {
            state.total += 1;
            return Some(Grant::Slot);
        }
        None
    }

    /// Waits in line until something is handed over or `limit` has passed
    /// since `started`.
    fn wait(
        &self,
        state: Locked<'_, R::Conn>,
        started: Instant,
        limit: Duration,
    ) -> Result<Grant<R::Conn>> {
        let deadline = started.checked_add(limit);
        let mut state = state.into_guard();
        let (ticket, wake) = state.waiters.join();
        // Another thread usually gives a connection back within moments:
        // look for the grant a few times, yielding the CPU, before going to
        // sleep. A sleeping waiter that is served leaves its connection
        // idle until the scheduler runs it again, which costs a loaded
        // machine more than these looks. Arrival order is kept either way:
        // only `dispatch` serves, oldest first.
        drop(state);
        for _ in 0..LOOKS_BEFORE_SLEEP {
            if wake.is_served() || deadline.map_or(false, |d| Instant::now() >= d) {
                break;
            }
            thread::yield_now();
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(grant) = state.waiters.take(ticket) {
                return Ok(grant);
            }
            let now = Instant::now();
            state = match deadline {
                Some(d) if now >= d => {
                    return match state.waiters.leave(ticket) {
                        Some(grant) => Ok(grant),
                        None => Err(self.exhausted(&state, started)),
                    };
                }
                Some(d) => {
                    wake.condvar
                        .wait_timeout(state, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => wake
                    .condvar
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// The error for a caller that got nothing.
    fn exhausted(&self, state: &State<R::Conn>, started: Instant) -> Error {
        bump(&self.counters.timed_out, 1);
        let clamp = |n: u128| u32::try_from(n).unwrap_or(u32::MAX);
        Error::PoolTimeout {
            in_use: clamp((state.total - state.idle.len()) as u128),
            max: clamp(self.config.max_size as u128),
            waited_ms: clamp(started.elapsed().as_millis()),
        }
    }

    /// Takes a connection back: kept for reuse if the recipe says it is
    /// clean and its thread is not panicking, closed otherwise.
    pub(super) fn give_back(&self, mut entry: Entry<R::Conn>) {
        // Released unless the connection is kept (also if the recipe panics).
        let mut slot = Slot {
            shared: self,
            kept: false,
        };
        let now = Instant::now();
        let closed = if thread::panicking() || !self.recipe.is_reusable(&entry.conn) {
            Some(Closed::Dirty)
        } else if entry.is_expired(now) {
            Some(Closed::Expired)
        } else {
            None
        };
        match closed {
            Some(why) => {
                self.counters.closed(why, 1);
                drop(entry);
                drop(slot);
            }
            None => {
                slot.kept = true;
                entry.since = now;
                let stale = {
                    let mut state = self.lock();
                    state.idle.push_back(entry);
                    let stale = self.prune(&mut state, now);
                    self.dispatch(&mut state);
                    stale
                };
                drop(stale);
            }
        }
        if self.config.min_idle > 0 && !thread::panicking() {
            // A failure is counted; the caller's connection was given back.
            let _ = self.top_up(1);
        }
    }

    /// Gives up a slot (its connection was closed or detached) and wakes
    /// the next waiter, if any, with it.
    pub(super) fn release_slot(&self) {
        let mut state = self.lock();
        state.total -= 1;
        self.dispatch(&mut state);
    }

    /// Hands whatever is free to the waiters, oldest first.
    fn dispatch(&self, state: &mut State<R::Conn>) {
        while !state.waiters.is_empty() {
            let grant = match self.take_or_reserve(state) {
                Some(g) => g,
                None => return,
            };
            match state.waiters.serve(grant) {
                Ok(wake) => state.to_wake.push(wake),
                Err(grant) => {
                    match grant {
                        Grant::Conn(entry) => state.idle.push_back(entry),
                        Grant::Slot => state.total -= 1,
                    }
                    return;
                }
            }
        }
    }

    /// Removes the oldest idle connection if it sat idle past the idle
    /// timeout, keeping `min_idle`; the caller closes it after unlocking.
    fn prune(&self, state: &mut State<R::Conn>, now: Instant) -> Option<Entry<R::Conn>> {
        let oldest = state.idle.front()?;
        if state.idle.len() <= self.config.min_idle
            || !oldest.idle_for(self.config.idle_timeout, now)
        {
            return None;
        }
        let entry = state.idle.pop_front()?;
        state.total -= 1;
        self.counters.closed(Closed::Idle, 1);
        self.dispatch(state);
        Some(entry)
    }

    /// Opens idle connections while fewer than `min_idle` are idle (or
    /// being opened), nobody waits and there is room: at most `at_most`.
    /// The first failure is returned.
    pub(super) fn top_up(&self, at_most: usize) -> Result<()> {
        for _ in 0..at_most {
            {
                let mut state = self.lock();
                if state.idle.len() + state.filling >= self.config.min_idle
                    || state.total >= self.config.max_size
                    || !state.waiters.is_empty()
                {
                    return Ok(());
                }
                state.total += 1;
                state.filling += 1;
            }
            let filling = Filling {
                shared: self,
                done: false,
            };
            let conn = self.recipe.connect();
            filling.done(conn)?;
        }
        Ok(())
    }

    /// Closes every idle connection now; returns how many.
    pub(super) fn close_idle(&self) -> usize {
        let drained: Vec<Entry<R::Conn>> = {
            let mut state = self.lock();
            let drained: Vec<_> = state.idle.drain(..).collect();
            state.total -= drained.len();
            self.dispatch(&mut state);
            drained
        };
        self.counters.closed(Closed::Idle, drained.len() as u64);
        drained.len()
    }

    /// A snapshot of the state and the counters.
    pub(super) fn stats(&self) -> PoolStats {
        let mut stats = PoolStats {
            max_size: self.config.max_size,
            ..PoolStats::default()
        };
        {
            let state = self.lock();
            stats.total = state.total;
            stats.idle = state.idle.len();
            stats.waiting = state.waiters.len();
        }
        stats.in_use = stats.total - stats.idle;
        self.counters.fill(&mut stats);
        stats
    }
}
