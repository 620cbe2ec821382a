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
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::cmd::ToCommand;
use crate::connection::{Connection, Wait};
use crate::convert::server_error;
use crate::error::{Error, Result, ServerError};
use crate::value::Value;

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
    /// # use std::io::{Cursor, Read, Write};
    /// # struct Fake { replies: Cursor<Vec<u8>> }
    /// # impl Read for Fake { fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> { self.replies.read(b) } }
    /// # impl Write for Fake {
    /// #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { Ok(b.len()) }
    /// #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
    /// # }
    /// # let fake = Fake { replies: Cursor::new(b"+OK\r\n".repeat(2500)) };
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
        self.begin()?;
        let mut load = Load {
            summary: LoadSummary::default(),
            in_flight: VecDeque::new(),
            early: VecDeque::new(),
            sent: 0,
            stop: false,
        };
        let mut commands = commands.into_iter();
        let mut buf = Vec::new();
        let max_commands = chunking.max_commands.max(1);
        loop {
            buf.clear();
            let mut n = 0;
            if !load.stop {
                // At least one command per chunk, whatever the byte budget.
                while n < max_commands && (n == 0 || buf.len() < chunking.max_bytes) {
                    match commands.next() {
                        Some(c) => {
                            c.write_command(&mut buf);
                            n += 1;
                        }
                        None => break,
                    }
                }
            }
            if n > 0 {
                if let Err(e) = self.write_chunk(&buf, &mut load.early) {
                    let acked = load.summary.commands;
                    return Err(self.fail(e, acked, load.sent + n));
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
                    let reply = match load.early.pop_front() {
                        Some(v) => v,
                        None => match self.next_reply(Wait::Default) {
                            Ok(v) => v,
                            Err(e) => {
                                let acked = load.summary.commands;
                                return Err(self.fail(e, acked, load.sent));
                            }
                        },
                    };
                    load.record(&reply, chunking.stop_on_error);
                    on_reply(load.summary.commands - 1, reply);
                }
            }
            if n == 0 && load.in_flight.is_empty() {
                break;
            }
        }
        self.finish();
        match (chunking.stop_on_error, &load.summary.first_error) {
            (true, Some(e)) => Err(e.clone().into()),
            _ => Ok(load.summary),
        }
    }

    /// Writes one chunk. With socket hooks, a write the socket will not take
    /// is interleaved with reading replies already owed (kept in `early`),
    /// so a server that stops reading until its replies are read cannot
    /// deadlock the load.
    fn write_chunk(&mut self, bytes: &[u8], early: &mut VecDeque<Value>) -> Result<()> {
        let hooks = match self.hooks() {
            Some(h) => h,
            None => return self.write_all(bytes),
        };
        let deadline = self.write_timeout().map(|t| Instant::now() + t);
        (hooks.set_nonblocking)(self.get_ref(), true).map_err(Error::Io)?;
        let result = self.write_nonblocking(bytes, early, deadline);
        let restored = (hooks.set_nonblocking)(self.get_ref(), false).map_err(Error::Io);
        result.and(restored)
    }

    fn write_nonblocking(
        &mut self,
        mut bytes: &[u8],
        early: &mut VecDeque<Value>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        while !bytes.is_empty() {
            match self.stream_mut().write(bytes) {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket is full: take in whatever replies are
                    // waiting, so the server can go on writing them.
                    let progressed = self.read_available(early)?;
                    if !progressed {
                        if deadline.map_or(false, |d| Instant::now() >= d) {
                            return Err(Error::Timeout { operation: "write" });
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                Err(e) => return Err(Error::Io(e)),
            }
        }
        self.stream_mut().flush().map_err(Error::Io)
    }
}

/// The bookkeeping of one load.
struct Load {
    summary: LoadSummary,
    /// Commands per chunk written and not yet answered, oldest first.
    in_flight: VecDeque<usize>,
    /// Replies read while a write was blocked, in order.
    early: VecDeque<Value>,
    sent: usize,
    stop: bool,
}

impl Load {
    fn record(&mut self, reply: &Value, stop_on_error: bool) {
        let index = self.summary.commands;
        self.summary.commands += 1;
        if let Some(e) = server_error(reply) {
            self.summary.errors += 1;
            if self.summary.first_error.is_none() {
                self.summary.first_error = Some(e.with_index(index));
            }
            if stop_on_error {
                self.stop = true;
            }
        }
    }
}
