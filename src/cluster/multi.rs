//! Transactions on a cluster: every key in one slot, run on that slot's
//! node; a redirect before EXEC ran sends the whole transaction again.

use std::time::Instant;

use super::plan::{cross_slot, split_args, Planner};
use super::run::{copy_error, millis, transport_failure, Action, Resend};
use super::slot::key_slot;
use super::topology::NodeAddr;
use super::Cluster;
use crate::client::Client;
use crate::cmd::{cmd, ToArg, ToCommand};
use crate::connection::Connection;
use crate::convert::FromValue;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::resp::Value;
use crate::transaction::{transaction, WatchOptions};

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

impl Cluster {
    /// Runs a [`Pipeline::transaction`]: its keys must share one slot
    /// (checked before anything is sent); `MULTI` ... `EXEC` go to that
    /// slot's primary, after `ASKING` when the slot is being migrated.
    pub(super) fn run_transaction(
        &mut self,
        pipe: &Pipeline,
        resend: Resend,
        each: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        let slot = self.planner().common_slot(pipe.as_bytes(), pipe.len())?;
        let replies = self.on_slot_node(slot, resend, true, |conn| pipe.execute_raw(conn))?;
        let mut first_error = None;
        for (i, v) in replies.into_iter().enumerate() {
            if let Err(e) = each(i, v) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Runs an optimistic transaction on the node serving `keys`, which
    /// must share one slot (use a `{hash tag}`): `WATCH keys`, then `f`,
    /// then the commands `f` queued, in `MULTI` ... `EXEC`. Everything else
    /// is as in [`transaction`](crate::transaction) (`f` reads with the
    /// node's connection it is given), plus: a `MOVED` or `ASK` met before
    /// `EXEC` ran, from `WATCH`, from one of `f`'s reads or from a queued
    /// command, runs the whole attempt again on the slot's new node, within
    /// the cluster's retry bounds.
    ///
    /// ```no_run
    /// use respline::{cmd, Cluster, WatchOptions};
    ///
    /// let mut cluster = Cluster::open(&["redis://127.0.0.1:7000"])?;
    /// // Both keys share the slot of "user:42" thanks to the hash tag.
    /// let () = cluster.transaction(&["{user:42}:balance", "{user:42}:log"], WatchOptions::default(), |conn, pipe| {
    ///     let balance: i64 = conn.query(["GET", "{user:42}:balance"])?;
    ///     pipe.cmd(cmd("SET").arg("{user:42}:balance").arg(balance * 2));
    ///     pipe.cmd(["RPUSH", "{user:42}:log", "doubled"]);
    ///     Ok(())
    /// })?;
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn transaction<K, T, F>(&mut self, keys: &[K], options: WatchOptions, mut f: F) -> Result<T>
    where
        K: ToArg,
        T: FromValue,
        F: FnMut(&mut Connection, &mut Pipeline) -> Result<()>,
    {
        let mut watch = cmd("WATCH");
        for key in keys {
            watch.push_arg(key);
        }
        let mut bytes = Vec::new();
        watch.write_command(&mut bytes);
        let slot = watched_slot(&bytes)?;
        // No ASKING here: it would cover WATCH alone, not `f`'s reads. A
        // slot being migrated is waited out instead.
        self.on_slot_node(Some(slot), Resend::Never, false, |conn| {
            transaction(conn, keys, options, &mut f)
        })
    }

    /// A planner over this cluster's command table.
    fn planner(&mut self) -> Planner<'_> {
        Planner {
            table: &self.nodes.table,
            primaries: &[],
            args: Vec::new(),
            positions: Vec::new(),
        }
    }

    /// Runs `attempt` on the connection to the node serving `slot` (any
    /// primary for `None`), again after each redirect or refusal that
    /// shows nothing ran, within the retry bounds. An `ASK` is followed
    /// (`ASKING` first) when `follow_ask`, else waited out.
    fn on_slot_node<R>(
        &mut self,
        slot: Option<u16>,
        resend: Resend,
        follow_ask: bool,
        mut attempt: impl FnMut(&mut Connection) -> Result<R>,
    ) -> Result<R> {
        let started = Instant::now();
        // Where the next attempt goes, and whether after ASKING.
        let mut next: Option<(NodeAddr, bool)> = None;
        let mut attempts = 0;
        let mut pauses = 0;
        loop {
            attempts += 1;
            self.nodes.refresh_if_due();
            let (addr, asking) = match next
                .take()
                .or_else(|| self.node_for(slot).map(|a| (a, false)))
            {
                Some(to) => to,
                None => {
                    let e = Error::Config(format!(
                        "cluster: expected a node serving slot {}, found none in the slot map",
                        slot.unwrap_or(0)
                    ));
                    self.nodes.want_refresh();
                    self.give_up_or_pause(&e, attempts, true, &mut pauses, started)?;
                    continue;
                }
            };
            let e = match self.try_on(&addr, asking, &mut attempt) {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let action = match redirect_line(&e) {
                Some(line) => self.nodes.redirect(&line, &addr),
                None => None,
            };
            let action = match action {
                Some(a) => a,
                None if transport_failure(&e) => {
                    if e.may_have_reached_server() && resend == Resend::Never {
                        return Err(e);
                    }
                    self.nodes.drop_conn(&addr);
                    Action::Pause
                }
                None => return Err(e),
            };
            let pause = match action {
                Action::Ask(to) if follow_ask => {
                    next = Some((to, true));
                    false
                }
                Action::Ask(_) | Action::Pause => true,
                Action::Moved(to, _) => {
                    next = Some((to, false));
                    attempts >= 3
                }
            };
            self.give_up_or_pause(&e, attempts, pause, &mut pauses, started)?;
        }
    }

    /// One attempt on `addr`'s connection, after `ASKING` if `asking`.
    fn try_on<R>(
        &mut self,
        addr: &NodeAddr,
        asking: bool,
        attempt: &mut impl FnMut(&mut Connection) -> Result<R>,
    ) -> Result<R> {
        let conn = self.nodes.conn(addr)?;
        if asking {
            if let Value::Error(line) = conn.call_encoded(ASKING)? {
                return Err(Error::Server(Box::new(crate::ServerError::new(&line))));
            }
        }
        attempt(conn)
    }

    /// The node for `slot` now, or a random primary for `None`.
    fn node_for(&mut self, slot: Option<u16>) -> Option<NodeAddr> {
        match slot {
            Some(s) => self.nodes.map.primary(s).cloned(),
            None => self.nodes.random_primary().cloned(),
        }
    }

    /// Fails with [`Error::GaveUp`] when the bounds are used up, else
    /// pauses before the next attempt if `pause` (longer each time).
    fn give_up_or_pause(
        &self,
        e: &Error,
        attempts: u32,
        pause: bool,
        pauses: &mut u32,
        started: Instant,
    ) -> Result<()> {
        let options = &self.nodes.options;
        if attempts >= options.max_attempts || started.elapsed() >= options.retry_window {
            return Err(Error::GaveUp {
                commands: vec![0].into(),
                attempts: u16::try_from(attempts).unwrap_or(u16::MAX),
                elapsed_ms: millis(started),
                last: Box::new(copy_error(e)),
            });
        }
        if pause {
            *pauses += 1;
            self.nodes.pause(*pauses, started);
        }
        Ok(())
    }
}

/// The error line of a redirect or refusal inside `e`: a server error, or
/// the first such queueing error of an `EXECABORT`.
fn redirect_line(e: &Error) -> Option<String> {
    let line = |s: &crate::ServerError| format!("{} {}", s.code(), s.message());
    match e {
        Error::Server(s) => Some(line(s)),
        Error::ExecAbort { errors } => errors
            .iter()
            .find(|s| {
                matches!(
                    s.code(),
                    "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN"
                )
            })
            .map(line),
        _ => None,
    }
}

/// The slot of every key of an encoded `WATCH`; keys in two slots are
/// refused before anything is sent.
fn watched_slot(watch: &[u8]) -> Result<u16> {
    let mut args = Vec::new();
    split_args(watch, 0, &mut args)?;
    let mut slot = None;
    for range in args.iter().skip(1) {
        let s = key_slot(&watch[range.clone()]);
        match slot {
            Some(t) if t != s => return Err(cross_slot("a transaction", (t, s))),
            _ => slot = Some(s),
        }
    }
    slot.ok_or_else(|| {
        Error::Config("transaction: expected at least one key to WATCH, found none".into())
    })
}
