//! [`Cluster`]: a client for Redis Cluster, built on one [`Connection`](crate::Connection)
//! per node and its one door.
//!
//! ```text
//! command ──▶ quick.rs: one key, its first argument (GET, SET, HSET...)? routed in one pass,
//!                      copied per node, answered in place; a redirect or failure goes on to run.rs
//!         ──▶ plan.rs: keys (keys.rs, from the server's COMMAND table) ──▶ slot (slot.rs)
//!                      ──▶ a job per node, or per slot (MGET, DEL... split), or per primary (DBSIZE...)
//!         ──▶ run.rs:  group jobs by node (slot map: topology.rs, nodes.rs)
//!                      ──▶ write every group, then read every group
//!                      ──▶ MOVED: patch the slot, resend; ASK: ASKING + resend; TRYAGAIN,
//!                          CLUSTERDOWN...: pause, refresh, resend (bounded)
//!                      ──▶ replies back in the caller's order
//! ```
//!
//! The rules it keeps:
//! * a reply is only ever read from the connection its command was
//!   written to, in order (each node connection is a [`Connection`](crate::Connection) with
//!   its broken-connection rule);
//! * a command that may have run is never sent again, unless the caller
//!   said it is idempotent ([`Cluster::idempotent`]); one that provably did
//!   not (a redirect, a refusal, a node that could not be reached) is;
//! * retries are bounded by [`ClusterOptions::max_attempts`] and
//!   [`ClusterOptions::retry_window`];
//! * the slot map is refreshed at most once per
//!   [`ClusterOptions::refresh_cooldown`], however many `MOVED` replies
//!   arrive.

mod keys;
mod multi;
mod nodes;
mod options;
mod plan;
mod pubsub;
mod quick;
mod run;
mod scan;
mod slot;
mod topology;

use std::fmt;

use crate::chunked::{Chunking, LoadSummary};
use crate::client::{sealed, Client};
use crate::cmd::ToCommand;
use crate::convert::server_error;
use crate::convert::FromValue;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::resp::Value;

use nodes::Nodes;
use plan::Planner;
use run::Resend;
use topology::NodeAddr;

pub use options::ClusterOptions;
pub use pubsub::ShardSubscriber;
pub use scan::{ClusterScan, ClusterScanIter};
pub use slot::key_slot;

/// A Redis Cluster client: commands go to the node serving their keys'
/// slot; pipelines are split by node and answered in the caller's order.
///
/// ```no_run
/// use respline::{Cluster, Pipeline};
///
/// let mut cluster = Cluster::open(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])?;
/// cluster.execute(["SET", "user:42", "Alice"])?;
/// let name: Option<String> = cluster.query(["GET", "user:42"])?;
///
/// // The same Pipeline as for one server: grouped by node, every node
/// // written before any is read, replies back in this order.
/// let mut pipe = Pipeline::new();
/// for i in 0..1000 {
///     pipe.cmd(("SET", format!("k:{}", i), i));
/// }
/// pipe.query::<()>(&mut cluster)?;
///
/// // Keys in different slots: MGET is split per slot and put back together.
/// let values: Vec<Option<String>> = cluster.query(["MGET", "k:1", "k:2", "k:3"])?;
/// # Ok::<(), respline::Error>(())
/// ```
///
/// # Where commands go
///
/// * A command's keys are found with the server's own command table
///   (`COMMAND`, fetched once per topology), so `EVAL`'s numkeys, `XREAD`'s
///   `STREAMS` and subcommands such as `MEMORY USAGE` are right.
/// * Keys in one slot: that slot's primary (or, for read-only commands with
///   [`ClusterOptions::read_from_replicas`], one of its replicas).
/// * No keys: a random primary.
/// * Keys in several slots: `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS` and
///   `TOUCH` are split per slot and their replies merged (MGET in the
///   caller's order, counts summed, MSET OK when every part is); this is
///   **not atomic**. Any other such command fails before it is sent, with a
///   [`Error::CrossSlot`].
/// * Every primary, replies merged: `PING`, `FLUSHDB`, `FLUSHALL`,
///   `SCRIPT LOAD`, `SCRIPT FLUSH`, `FUNCTION LOAD`/`FLUSH`/`DELETE`/`RESTORE`
///   (the first reply, once all succeeded), `DBSIZE` (summed), `KEYS`
///   (concatenated), `SCRIPT EXISTS` (and-ed).
/// * Anywhere you say: [`Cluster::on`].
///
/// # Failures
///
/// An error reply stays that command's reply, as on one server. When a
/// node fails, its commands that were never written are sent again; the
/// others are named in an [`Error::Unanswered`], which says they may have
/// run (every other command of the request ran). Redirects and
/// refusals past the bounds end in [`Error::GaveUp`].
pub struct Cluster {
    nodes: Nodes,
    /// Reused: argument ranges and key positions of the command planned.
    planner_args: Vec<std::ops::Range<usize>>,
    planner_positions: Vec<usize>,
    quick: quick::QuickScratch,
    scratch: Vec<u8>,
}

impl Cluster {
    /// Connects to the cluster that these seed URLs belong to; the first
    /// URL's credentials and settings apply to every node. See
    /// [`ClusterOptions::from_urls`].
    pub fn open(urls: &[&str]) -> Result<Cluster> {
        ClusterOptions::from_urls(urls)?.connect()
    }

    /// Connects as `options` say: asks the seeds for the slot map (the first
    /// complete answer wins) and for the command table.
    pub fn connect(options: &ClusterOptions) -> Result<Cluster> {
        Ok(Cluster {
            nodes: Nodes::connect(options)?,
            planner_args: Vec::new(),
            planner_positions: Vec::new(),
            quick: quick::QuickScratch::default(),
            scratch: Vec::new(),
        })
    }

    /// Sends one command where its keys are served, following redirects, and
    /// converts its reply; an error reply is [`Error::Server`].
    pub fn query<T: FromValue>(&mut self, command: impl ToCommand) -> Result<T> {
        let reply = self.call(&command, Resend::Never)?;
        T::from_reply(reply, None)
    }

    /// Sends one command and returns its reply, failing on an error reply.
    pub fn execute(&mut self, command: impl ToCommand) -> Result<Value> {
        self.query(command)
    }

    /// Lends the cluster for requests whose commands are safe to run twice:
    /// if a node fails after they were written, they are sent again instead
    /// of being reported as [`Error::Unanswered`].
    ///
    /// ```no_run
    /// # let mut cluster = respline::Cluster::open(&["redis://127.0.0.1:7000"])?;
    /// let n: Option<String> = cluster.idempotent().query(["GET", "config:flags"])?;
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn idempotent(&mut self) -> Idempotent<'_> {
        Idempotent { cluster: self }
    }

    /// Sends one command to the node `route` names, following `MOVED` and
    /// `ASK` as usual for a slot or key.
    ///
    /// `Route::AllPrimaries` sends it to every primary and converts the
    /// replies, one per primary in the order of [`primaries`](Cluster::primaries),
    /// as an array.
    pub fn on<T: FromValue>(&mut self, route: Route<'_>, command: impl ToCommand) -> Result<T> {
        self.scratch.clear();
        command.write_command(&mut self.scratch);
        let bytes = std::mem::take(&mut self.scratch);
        let result = self.run_routed(route, &bytes);
        self.scratch = bytes;
        T::from_reply(result?, None)
    }

    /// The address of every primary, as `host:port`, sorted.
    pub fn primaries(&self) -> Vec<String> {
        self.nodes
            .primaries()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// The primary serving `slot` in the current slot map, as `host:port`.
    pub fn primary_for_slot(&self, slot: u16) -> Option<String> {
        self.nodes.map.primary(slot).map(|a| a.to_string())
    }

    /// How many full slot-map refreshes this client has made.
    pub fn refreshes(&self) -> u64 {
        self.nodes.refreshes
    }

    /// Refreshes the slot map now, ignoring the cooldown.
    pub fn refresh(&mut self) -> Result<()> {
        self.nodes.refresh()
    }

    /// Runs every command of `commands` in chunks bounded by `chunking`,
    /// handing each reply to `on_reply` with the command's index, as
    /// [`Connection::execute_chunked`](crate::Connection::execute_chunked)
    /// does on one server. Each chunk is a cluster pipeline: split by node,
    /// every node written before any is read (large writes interleaved with
    /// reading, so no node can deadlock the load), redirects followed.
    /// Memory stays bounded by one chunk and its replies.
    ///
    /// If a node fails part way, the error ([`Error::Unanswered`]) names the
    /// commands of that chunk that got no reply, by their index in the
    /// whole load: every other command of the load up to the end of that
    /// chunk ran, though that chunk's replies are not handed to `on_reply`.
    pub fn execute_chunked<I, F>(
        &mut self,
        commands: I,
        chunking: &Chunking,
        mut on_reply: F,
    ) -> Result<LoadSummary>
    where
        I: IntoIterator,
        I::Item: ToCommand,
        F: FnMut(usize, Value),
    {
        let mut summary = LoadSummary::default();
        let mut commands = commands.into_iter();
        let mut pipe = Pipeline::new();
        loop {
            pipe.clear();
            while pipe.len() < chunking.max_commands.max(1)
                && (pipe.is_empty() || pipe.as_bytes().len() < chunking.max_bytes)
            {
                match commands.next() {
                    Some(c) => pipe.cmd(c),
                    None => break,
                };
            }
            if pipe.is_empty() {
                return Ok(summary);
            }
            let base = summary.commands;
            let replies = self
                .run_encoded(pipe.as_bytes(), pipe.len(), Resend::Never)
                .map_err(|e| shift_indices(e, base))?;
            summary.chunks += 1;
            for v in replies {
                let index = summary.commands;
                summary.commands += 1;
                if let Some(e) = server_error(&v) {
                    summary.errors += 1;
                    summary.first_error.get_or_insert(e.with_index(index));
                }
                on_reply(index, v);
            }
            if chunking.stop_on_error {
                if let Some(e) = &summary.first_error {
                    return Err(e.clone().into());
                }
            }
        }
    }

    /// Encodes and runs one command.
    fn call(&mut self, command: &impl ToCommand, resend: Resend) -> Result<Value> {
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        command.write_command(&mut bytes);
        let result = self.run_encoded(&bytes, 1, resend);
        self.scratch = bytes;
        lone(result)
    }

    /// Runs `count` encoded commands, handing each reply to `each` in
    /// order: by the quick path when every command has one key, its first
    /// argument; else planned.
    fn run_each(
        &mut self,
        bytes: &[u8],
        count: usize,
        resend: Resend,
        each: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        let replies = match self.nodes.run_quick(bytes, count, resend, &mut self.quick) {
            quick::Quick::Grouped(groups) => return self.quick.hand_over(groups, each),
            quick::Quick::Done(result) => result?,
            quick::Quick::Plan => self.run_planned(bytes, count, resend)?,
        };
        let mut first_error = None;
        for (i, v) in replies.into_iter().enumerate() {
            if let Err(e) = each(i, v) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// [`Cluster::run_each`], the replies collected.
    fn run_encoded(&mut self, bytes: &[u8], count: usize, resend: Resend) -> Result<Vec<Value>> {
        let mut replies = Vec::with_capacity(count);
        self.run_each(bytes, count, resend, &mut |_, v| {
            replies.push(v);
            Ok(())
        })?;
        Ok(replies)
    }

    /// Plans and runs `count` encoded commands.
    fn run_planned(&mut self, bytes: &[u8], count: usize, resend: Resend) -> Result<Vec<Value>> {
        let mut planner = Planner {
            table: &self.nodes.table,
            primaries: self.nodes.primaries(),
            args: std::mem::take(&mut self.planner_args),
            positions: std::mem::take(&mut self.planner_positions),
        };
        let plan = planner.plan_all(bytes, count);
        self.planner_args = planner.args;
        self.planner_positions = planner.positions;
        self.nodes.run(&mut plan?, bytes, resend)
    }

    /// Runs one encoded command where `route` says.
    fn run_routed(&mut self, route: Route<'_>, bytes: &[u8]) -> Result<Value> {
        let targets: Vec<plan::Target> = match route {
            Route::Slot(slot) => vec![plan::Target::Slot(slot % slot::SLOTS)],
            Route::Key(key) => vec![plan::Target::Slot(key_slot(key))],
            Route::Node(addr) => vec![plan::Target::Node(parse_node(addr)?)],
            Route::AnyPrimary => vec![plan::Target::Any],
            Route::AllPrimaries => self
                .nodes
                .primaries()
                .iter()
                .cloned()
                .map(plan::Target::Node)
                .collect(),
        };
        let merge = match route {
            Route::AllPrimaries => plan::Merge::List,
            _ => plan::Merge::One,
        };
        let mut plan = plan::Plan::single(bytes.len(), targets, merge);
        lone(self.nodes.run(&mut plan, bytes, Resend::Never))
    }
}

/// Where [`Cluster::on`] sends a command.
#[derive(Clone, Copy, Debug)]
pub enum Route<'a> {
    /// The node serving this hash slot (taken mod 16384).
    Slot(u16),
    /// The node serving this key's slot.
    Key(&'a [u8]),
    /// This node, `host:port` (a primary or a replica).
    Node(&'a str),
    /// A primary picked at random.
    AnyPrimary,
    /// Every primary, each once.
    AllPrimaries,
}

/// A [`Cluster`] lent by [`Cluster::idempotent`]: its requests are sent
/// again when a node fails after they were written.
pub struct Idempotent<'c> {
    cluster: &'c mut Cluster,
}

impl Idempotent<'_> {
    /// [`Cluster::query`], sent again if its node fails before answering.
    pub fn query<T: FromValue>(&mut self, command: impl ToCommand) -> Result<T> {
        let reply = self.cluster.call(&command, Resend::Idempotent)?;
        T::from_reply(reply, None)
    }

    /// [`Cluster::execute`], sent again if its node fails before answering.
    pub fn execute(&mut self, command: impl ToCommand) -> Result<Value> {
        self.query(command)
    }
}

/// A chunk's failure, its command indices made the load's.
fn shift_indices(e: Error, base: usize) -> Error {
    match e {
        Error::Unanswered { commands, source } => Error::Unanswered {
            commands: commands.iter().map(|i| i + base).collect(),
            source,
        },
        Error::GaveUp {
            commands,
            attempts,
            elapsed_ms,
            last,
        } => Error::GaveUp {
            commands: commands.iter().map(|i| i + base).collect(),
            attempts,
            elapsed_ms,
            last,
        },
        other => other,
    }
}

/// A protocol error: a reply that is valid RESP of the wrong shape for
/// what was asked (a slot map, a command table, a part of a split command).
fn unexpected(
    expected: impl Into<std::borrow::Cow<'static, str>>,
    found: impl Into<String>,
) -> Error {
    Error::Protocol(crate::resp::ProtocolError::new(
        crate::resp::ProtocolErrorKind::Unexpected,
        0,
        expected,
        found,
    ))
}

/// A value's kind and short rendering, for error messages.
fn describe(value: &Value) -> String {
    format!("{} {}", value.kind(), value)
}

/// A lone command's result: the error itself rather than a list of one.
fn lone(result: Result<Vec<Value>>) -> Result<Value> {
    match result {
        Ok(mut replies) => Ok(replies.pop().unwrap_or(Value::Nil)),
        Err(Error::Unanswered { source, .. }) => Err(*source),
        Err(e) => Err(e),
    }
}

/// `host:port` as a node address.
fn parse_node(text: &str) -> Result<NodeAddr> {
    let bad = || {
        Error::Config(format!(
            "cluster: expected a node address as host:port, found {:?}",
            text
        ))
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(NodeAddr {
        host: host.to_string(),
        port,
    })
}

impl sealed::Sealed for Cluster {}

impl Client for Cluster {
    fn query<T: FromValue>(&mut self, command: impl ToCommand) -> Result<T> {
        Cluster::query(self, command)
    }

    fn call_encoded(&mut self, bytes: &[u8]) -> Result<Value> {
        lone(self.run_encoded(bytes, 1, Resend::Never))
    }

    fn run_pipeline(
        &mut self,
        pipe: &Pipeline,
        each: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        run_pipeline(self, pipe, Resend::Never, each)
    }
}

impl sealed::Sealed for Idempotent<'_> {}

impl Client for Idempotent<'_> {
    fn call_encoded(&mut self, bytes: &[u8]) -> Result<Value> {
        lone(self.cluster.run_encoded(bytes, 1, Resend::Idempotent))
    }

    fn run_pipeline(
        &mut self,
        pipe: &Pipeline,
        each: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        run_pipeline(self.cluster, pipe, Resend::Idempotent, each)
    }
}

/// A pipeline on a cluster: its commands planned and run together,
/// replies handed over in the pipeline's order.
fn run_pipeline(
    cluster: &mut Cluster,
    pipe: &Pipeline,
    resend: Resend,
    each: &mut dyn FnMut(usize, Value) -> Result<()>,
) -> Result<()> {
    if pipe.is_transaction() {
        return cluster.run_transaction(pipe, resend, each);
    }
    if pipe.is_empty() {
        return Ok(());
    }
    cluster.run_each(pipe.as_bytes(), pipe.len(), resend, each)
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("primaries", &self.primaries())
            .field("refreshes", &self.nodes.refreshes)
            .finish()
    }
}
