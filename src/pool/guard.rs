//! [`PooledConnection`]: a connection lent by a pool, given back on drop.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::health::Entry;
use super::shared::Shared;
use super::stats::bump;
use super::Recipe;
use crate::client::{sealed, Client};
use crate::cmd::ToCommand;
use crate::convert::FromValue;
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::resp::{Value, ValueRef};

/// A connection lent by a [`Pool`](super::Pool): use it through `*` (it
/// dereferences to the recipe's connection, a
/// [`Connection`](crate::Connection) for [`ConnectOptions`](crate::ConnectOptions));
/// dropping it gives the connection back.
///
/// It goes back into the pool only if it is clean
/// ([`Recipe::is_reusable`]: not broken, no reply unread, not inside MULTI
/// or WATCH, not subscribed, same database and protocol) and the thread
/// dropping it is not panicking; otherwise it is closed and its place is
/// freed for a new one. It owns a handle on the pool, so it can be sent to
/// another thread and outlive the `Pool` value it came from.
///
/// It is a [`Client`] when the connection is, so pipelines, scripts and
/// transactions take it as they are: `pipe.query(&mut conn)`.
///
/// ```no_run
/// # let pool = respline::Pool::open("redis://127.0.0.1:6379/0")?;
/// use respline::Subscriber;
///
/// let mut conn = pool.get()?;
/// conn.execute(["SET", "k", "v"])?; // a Connection method, through Deref
/// drop(conn); // back in the pool
///
/// // Subscribed mode keeps the connection: take it out of the pool for good.
/// let mut subscriber = Subscriber::new(pool.get()?.detach());
/// subscriber.subscribe(&["news"])?;
/// # Ok::<(), respline::Error>(())
/// ```
pub struct PooledConnection<R: Recipe> {
    /// Always `Some` until `detach` or `drop` takes it.
    entry: Option<Entry<R::Conn>>,
    shared: Arc<Shared<R>>,
}

impl<R: Recipe> PooledConnection<R> {
    pub(super) fn new(entry: Entry<R::Conn>, shared: Arc<Shared<R>>) -> PooledConnection<R> {
        PooledConnection {
            entry: Some(entry),
            shared,
        }
    }

    /// Takes the connection out of the pool for good: the pool counts it no
    /// more and opens another in its place when needed (a waiting thread is
    /// woken with that room now).
    pub fn detach(mut self) -> R::Conn {
        let entry = self.take();
        bump(&self.shared.counters.detached, 1);
        self.shared.release_slot();
        entry.conn
    }

    fn take(&mut self) -> Entry<R::Conn> {
        match self.entry.take() {
            Some(entry) => entry,
            None => unreachable!("a pooled connection is taken only by detach or drop"),
        }
    }
}

impl<R: Recipe> Deref for PooledConnection<R> {
    type Target = R::Conn;

    fn deref(&self) -> &R::Conn {
        match &self.entry {
            Some(entry) => &entry.conn,
            None => unreachable!("a pooled connection is taken only by detach or drop"),
        }
    }
}

impl<R: Recipe> DerefMut for PooledConnection<R> {
    fn deref_mut(&mut self) -> &mut R::Conn {
        match &mut self.entry {
            Some(entry) => &mut entry.conn,
            None => unreachable!("a pooled connection is taken only by detach or drop"),
        }
    }
}

impl<R: Recipe> Drop for PooledConnection<R> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.shared.give_back(entry);
        }
    }
}

impl<R: Recipe> fmt::Debug for PooledConnection<R>
where
    R::Conn: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PooledConnection").field(&**self).finish()
    }
}

impl<R: Recipe> sealed::Sealed for PooledConnection<R> where R::Conn: Client {}

impl<R: Recipe> Client for PooledConnection<R>
where
    R::Conn: Client,
{
    fn query<T: FromValue>(&mut self, command: impl ToCommand) -> Result<T> {
        (**self).query(command)
    }

    fn call_encoded(&mut self, bytes: &[u8]) -> Result<Value> {
        (**self).call_encoded(bytes)
    }

    fn run_pipeline(
        &mut self,
        pipe: &Pipeline,
        each: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        (**self).run_pipeline(pipe, each)
    }

    fn query_pipeline<T: FromValue>(&mut self, pipe: &Pipeline) -> Result<T> {
        (**self).query_pipeline(pipe)
    }

    fn run_pipeline_views(
        &mut self,
        pipe: &Pipeline,
        each: &mut dyn FnMut(usize, ValueRef<'_>) -> Result<()>,
    ) -> Result<()> {
        (**self).run_pipeline_views(pipe, each)
    }
}
