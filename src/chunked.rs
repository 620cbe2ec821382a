//! Chunked execution: a load of any size, sent in bounded chunks with
//! bounded memory, each reply handed to a callback as it arrives.
//!
//! Commands are pulled from an iterator and encoded into a chunk until it
//! holds [`Chunking::max_commands`] commands or [`Chunking::max_bytes`]
//! bytes. At most two chunks are in flight: while the server works on one,
//! the client encodes and writes the next, then reads the first one's
//! replies. Memory stays bounded by one chunk: only the chunk being written
//! is held encoded (its buffer is reused for the next), each reply goes to
//! the callback as soon as it is decoded, and the only replies ever queued
//! are those of the previous chunk read early while a write waits. The
//! iterator is never pulled more than two chunks ahead of the replies.
//!
//! A plain "write everything, then read" pipeline can deadlock with large
//! payloads: the client blocks writing while the server blocks writing
//! replies the client is not reading. Here the bytes in flight are bounded,
//! and when the connection has [`SocketHooks`](crate::SocketHooks), a write
//! the socket will not take is interleaved with reading the replies already
//! owed, so neither side can wait on the other for ever.

use std::collections::VecDeque;
use std::io::{Read, Write};

use crate::cmd::ToCommand;
use crate::connection::{changes_session, Connection, Wait};
use crate::error::{Error, Result, ServerError};
use crate::resp::{Value, ValueRef};

/// How to cut a load into chunks.
///
/// ```
/// let c = respline::Chunking::default();
/// assert_eq!((c.max_commands, c.max_bytes, c.stop_on_error), (1000, 1 << 20, false));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunking {
    /// The most commands in one chunk. Defaults to 1,000.
    pub max_commands: usize,
    /// The most encoded bytes in one chunk (a single larger command makes a
    /// chunk of its own). Defaults to 1 MiB.
    pub max_bytes: usize,
    /// Stop sending after the chunk in which a command failed, and return
    /// that failure. Defaults to `false`: server errors are counted and
    /// handed to the callback, and the load goes on.
    pub stop_on_error: bool,
}

impl Default for Chunking {
    fn default() -> Chunking {
        Chunking {
            max_commands: 1000,
            max_bytes: 1 << 20,
            stop_on_error: false,
        }
    }
}

impl Chunking {
    /// Sets the most commands per chunk (at least 1).
    pub fn max_commands(mut self, n: usize) -> Chunking {
        self.max_commands = n.max(1);
        self
    }

    /// Sets the most bytes per chunk.
    pub fn max_bytes(mut self, n: usize) -> Chunking {
        self.max_bytes = n;
        self
    }

    /// Sets whether a server error stops the load.
    pub fn stop_on_error(mut self, stop: bool) -> Chunking {
        self.stop_on_error = stop;
        self
    }
}

/// What a chunked load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "the summary counts the commands that failed with a server error"]
pub struct LoadSummary {
    /// Commands sent and answered.
    pub commands: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Commands that failed with a server error.
    pub errors: usize,
    /// The first server error, with its command's index.
    pub first_error: Option<ServerError>,
}

impl LoadSummary {
    /// `Ok` if no command failed, else the first server error of the load,
    /// with its command's index: for loads that should fail as a whole,
    /// `conn.execute_chunked(commands, &chunking, |_, _| {})?.check()?`.
    pub fn check(&self) -> Result<()> {
        match &self.first_error {
            Some(e) => Err(e.clone().into()),
            None => Ok(()),
        }
    }
}

impl<S: Read + Write> Connection<S> {
    /// Runs every command of `commands` in chunks bounded by `chunking`,
    /// handing each reply to `on_reply` with the command's index (server
    /// errors included, as [`Value::Error`]).
    ///
    /// If the connection fails part way, the error is
    /// [`Error::Interrupted`], whose `replies` says how many commands were
    /// acknowledged: the commands before that index ran, so a caller knows
    /// where to resume (the ones after it may or may not have run).
    ///
    /// ```
    /// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
    /// # let chunk = b"+OK\r\n".repeat(1000);
    /// # let fake = FakeServer::replying(&[&chunk, &chunk, &chunk[..2500]]);
    /// use respline::{cmd, Chunking, Connection};
    ///
    /// let mut conn = Connection::new(fake);
    /// let commands = (0..2500).map(|i| cmd("SET").arg(format!("key:{}", i)).arg(i));
    /// let summary = conn.execute_chunked(commands, &Chunking::default(), |_, _| {})?;
    /// assert_eq!((summary.commands, summary.chunks, summary.errors), (2500, 3, 0));
    /// # Ok::<(), respline::Error>(())
    /// ```
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
        self.load(commands, chunking, |i, reply| on_reply(i, reply.to_value()))
    }

    /// [`execute_chunked`](Connection::execute_chunked), handing each reply
    /// to `on_reply` as a [`ValueRef`] viewing the read buffer (see
    /// [`query_with`](Connection::query_with)): a load that reads back what
    /// it wrote, or a chunked read, then allocates nothing per reply. Server
    /// errors are counted in the summary and handed over as
    /// [`ValueRef::Error`].
    ///
    /// ```
    /// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
    /// # let fake = FakeServer::replying(&[b"$2\r\nab\r\n$-1\r\n$3\r\ncde\r\n"]);
    /// use respline::{Chunking, Connection};
    ///
    /// let mut conn = Connection::new(fake);
    /// let mut total = 0;
    /// let gets = ["a", "b", "c"].iter().map(|k| ["GET", k]);
    /// conn.execute_chunked_with(gets, &Chunking::default(), |_, reply| {
    ///     total += reply.as_bytes().map_or(0, |b| b.len());
    /// })?
    /// .check()?;
    /// assert_eq!(total, 5);
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn execute_chunked_with<I, F>(
        &mut self,
        commands: I,
        chunking: &Chunking,
        on_reply: F,
    ) -> Result<LoadSummary>
    where
        I: IntoIterator,
        I::Item: ToCommand,
        F: FnMut(usize, ValueRef<'_>),
    {
        self.load(commands, chunking, on_reply)
    }

    fn load<I, F>(
        &mut self,
        commands: I,
        chunking: &Chunking,
        mut on_reply: F,
    ) -> Result<LoadSummary>
    where
        I: IntoIterator,
        I::Item: ToCommand,
        F: FnMut(usize, ValueRef<'_>),
    {
        self.begin()?;
        let mut load = Load::default();
        let mut commands = commands.into_iter();
        let mut buf = Vec::new();
        loop {
            let n = if load.stop {
                0
            } else {
                load.fill(&mut buf, &mut commands, chunking)
            };
            if load.changes_session {
                self.note_session_change();
            }
            if n > 0 {
                if let Err(e) = self.send_interleaved(&buf, n, &mut load.early) {
                    return Err(load.interrupted(e, n));
                }
                load.in_flight.push_back(n);
                load.sent += n;
                load.summary.chunks += 1;
            }
            // Read the older chunk once the next one is on its way (or when
            // there is nothing more to send).
            while load.in_flight.len() >= 2 || (n == 0 && !load.in_flight.is_empty()) {
                let k = load.in_flight.pop_front().unwrap_or(0);
                for _ in 0..k {
                    let early = load.early.pop_front();
                    let mut take = |reply: ValueRef<'_>| {
                        let i = load.record(&reply, chunking.stop_on_error);
                        on_reply(i, reply);
                    };
                    let received = match &early {
                        Some(v) => {
                            take(v.view());
                            Ok(())
                        }
                        None => self.receive_with(Wait::Default, take),
                    };
                    if let Err(e) = received {
                        return Err(load.interrupted(e, 0));
                    }
                }
            }
            if n == 0 && load.in_flight.is_empty() {
                break;
            }
        }
        self.end();
        match (chunking.stop_on_error, &load.summary.first_error) {
            (true, Some(e)) => Err(e.clone().into()),
            _ => Ok(load.summary),
        }
    }
}

/// The bookkeeping of one load.
#[derive(Default)]
struct Load {
    summary: LoadSummary,
    /// Commands per chunk written and not yet answered, oldest first.
    in_flight: VecDeque<usize>,
    /// Replies read while a write was blocked, in order.
    early: VecDeque<Value>,
    sent: usize,
    stop: bool,
    /// A command may have changed the connection's session.
    changes_session: bool,
}

impl Load {
    /// Encodes the next chunk into `buf`: at least one command, then more
    /// while both budgets allow. Returns how many.
    fn fill<C: ToCommand>(
        &mut self,
        buf: &mut Vec<u8>,
        commands: &mut impl Iterator<Item = C>,
        chunking: &Chunking,
    ) -> usize {
        buf.clear();
        let max_commands = chunking.max_commands.max(1);
        let mut n = 0;
        while n < max_commands && (n == 0 || buf.len() < chunking.max_bytes) {
            let command = match commands.next() {
                Some(c) => c,
                None => break,
            };
            let start = buf.len();
            command.write_command(buf);
            if !self.changes_session {
                self.changes_session = changes_session(&buf[start..]);
            }
            n += 1;
        }
        n
    }

    /// The load's failure `e`, with how many commands were acknowledged out
    /// of those written (`writing` more were being written).
    fn interrupted(&self, e: Error, writing: usize) -> Error {
        if !e.may_have_reached_server() && self.sent == 0 {
            return e;
        }
        Error::Interrupted {
            replies: self.summary.commands,
            requested: self.sent + writing,
            source: Box::new(e),
        }
    }

    /// Counts a reply; returns its index.
    fn record(&mut self, reply: &ValueRef<'_>, stop_on_error: bool) -> usize {
        let index = self.summary.commands;
        self.summary.commands += 1;
        if let Some(e) = reply.server_error() {
            self.summary.errors += 1;
            if self.summary.first_error.is_none() {
                self.summary.first_error = Some(e.with_index(index));
            }
            if stop_on_error {
                self.stop = true;
            }
        }
        index
    }
}
