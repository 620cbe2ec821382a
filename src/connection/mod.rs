//! [`Connection`]: one stream, its read buffer and deadlines, and the rule
//! that keeps every reply matched to its command.
//!
//! # The rule
//!
//! A connection is *ready*, *busy* (an exchange is open: bytes were or are
//! being written, and `owed` replies are not read yet) or *broken*. Only a
//! completed exchange, every owed reply read, makes it ready again. Any I/O
//! error, timeout or protocol error in between, a panic in a caller's
//! callback, or anything else that leaves an exchange early, leaves it busy
//! or broken, and then it refuses every later call without touching the
//! stream. A late reply can therefore never be read as the answer to a later
//! command; [`Connection::reconnect`] opens a fresh one.
//!
//! # The one door
//!
//! Every feature (pipelines, transactions, the WATCH helper, scripts,
//! chunked loads, pub/sub, SCAN, and what comes next) uses a connection only
//! through this small interface, implemented in `door.rs`; nothing else
//! touches the stream or the state:
//!
//! | call | does |
//! | --- | --- |
//! | `request(bytes, n, wait, each)` | one exchange: write `n` commands, read `n` replies, each to `each(index, reply)`; `each` may reject a reply as a protocol violation, which breaks the connection |
//! | `begin()` | opens an exchange on a ready, idle connection; a connection found closed (or holding unsolicited bytes) is replaced from its recipe, since nothing was sent yet |
//! | `send(bytes, n)` | writes `n` commands; `n` more replies are owed |
//! | `send_interleaved(bytes, n, early)` | the same, reading waiting replies into `early` whenever the socket is full |
//! | `receive(wait)` | the next reply (pushes are queued aside) |
//! | `receive_frame(wait, patient)` | the next frame of any kind, for subscribed mode; a patient timeout is `None` |
//! | `end()` | closes the exchange: ready if nothing is owed, broken otherwise |
//! | `fail(e)`, `poison(cause)` | breaks the connection |
//! | `queue_push(v)`, `take_pushes()` | the RESP3 push queue |
//! | `set_watching(b)`, `note_session_change()` | the session no longer matches the recipe: never replace it silently (`is_reusable` reads this) |
//!
//! Errors from these say whether anything was sent: a failure before the
//! first byte of an exchange left is [`Error::NotSent`].

mod door;
mod handshake;
mod transport;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::cmd::ToCommand;
use crate::connect::{ConnectOptions, Socket, SocketHooks};
use crate::convert::FromValue;
use crate::error::{Error, Result};
use crate::resp::{Decoder, FrameScan, Limits, Protocol, Value, ValueRef};
use transport::ReadBuf;

#[cfg(feature = "cluster")]
pub(crate) use door::is_session_command;
pub(crate) use door::{changes_session, queue_full};

/// Encoding buffers up to this size are kept between single commands.
const MAX_KEPT_SCRATCH: usize = 64 * 1024;

/// A connection to a Redis server over any byte stream.
///
/// `S` is the stream: [`Socket`] (TCP or Unix) when opened with
/// [`open`](Connection::open) or [`connect`](Connection::connect), or
/// anything that is `Read + Write` with [`new`](Connection::new) (a TLS
/// stream, a proxy, an in-memory fake).
///
/// ```
/// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
/// # let stream = FakeServer::replying(&[b"+OK\r\n", b"$5\r\nAlice\r\n", b":7\r\n"]);
/// use respline::{cmd, Connection};
///
/// let mut conn = Connection::new(stream); // any Read + Write stream
/// conn.execute(["SET", "name", "Alice"])?; // the reply is only checked for an error
/// let name: Option<String> = conn.query(cmd("GET").arg("name"))?;
/// let n: i64 = conn.query(["INCR", "counter"])?;
/// assert_eq!((name.as_deref(), n), (Some("Alice"), 7));
/// # Ok::<(), respline::Error>(())
/// ```
pub struct Connection<S = Socket> {
    stream: S,
    hooks: Option<SocketHooks<S>>,
    buf: ReadBuf,
    decoder: Decoder,
    state: State,
    protocol: Protocol,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// What the socket's own timeouts are set to now, so they are only
    /// changed when they must be.
    armed_read: Option<Duration>,
    armed_write: Option<Duration>,
    /// RESP3 pushes that arrived while replies were awaited.
    pushes: VecDeque<Value>,
    /// Encoding buffer for single commands, reused.
    scratch: Vec<u8>,
    /// How to make this connection again, for `reconnect` and for retrying
    /// what was never sent.
    recipe: Option<Recipe<S>>,
    /// Keys are WATCHed on the server (by the transaction helper).
    watching: bool,
    /// A command sent by hand may have changed the session.
    diverged: bool,
    /// A `READONLY`, `MASTERDOWN` or `LOADING` error reply arrived: the
    /// server is not (or not yet) a usable primary.
    failover_reply: bool,
    /// The scan of the frame at the front of the read buffer, kept between
    /// reads.
    scan: FrameScan,
    /// The decoder is reading the frame at the front (the scan left it to
    /// the decoder).
    decoding: bool,
}

/// The connection's request state (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Ready,
    /// An exchange is open: `owed` replies are still to be read, and
    /// `written` once any byte of it reached the stream.
    Busy {
        owed: usize,
        written: bool,
    },
    Broken(String),
}

/// How long to wait for each reply of a request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// The connection's read timeout, for each reply.
    Default,
    /// This timeout for each reply (`None`: for ever).
    Each(Option<Duration>),
    /// One deadline for everything.
    Until(Instant),
}

/// The options a connection was made from, and the function that makes
/// one from them.
pub(crate) struct Recipe<S> {
    options: ConnectOptions,
    open: fn(&ConnectOptions) -> Result<Connection<S>>,
    /// For a connection to a Sentinel-managed primary: made again through
    /// the sentinels (a lookup, which follows a failover), not at
    /// `options.addr`, which may be a former primary by then.
    #[cfg(feature = "sentinel")]
    primary_of: Option<PrimaryOf<S>>,
}

/// The handle a primary's connection is made again through, and how.
#[cfg(feature = "sentinel")]
type PrimaryOf<S> = (
    crate::sentinel::Sentinel,
    fn(&crate::sentinel::Sentinel) -> Result<Connection<S>>,
);

impl<S> Recipe<S> {
    /// A fresh connection from this recipe.
    fn open(&self) -> Result<Connection<S>> {
        #[cfg(feature = "sentinel")]
        if let Some((sentinel, open)) = &self.primary_of {
            return open(sentinel);
        }
        (self.open)(&self.options)
    }
}

impl<S> Clone for Recipe<S> {
    fn clone(&self) -> Recipe<S> {
        Recipe {
            options: self.options.clone(),
            open: self.open,
            #[cfg(feature = "sentinel")]
            primary_of: self.primary_of.clone(),
        }
    }
}

/// How long one call waits for its reply, instead of the connection's read
/// timeout: see [`Connection::with_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyTimeout {
    /// At most this long.
    After(Duration),
    /// For ever.
    Never,
    /// For a command that blocks on the server for up to this long (BLPOP,
    /// BRPOP, BLMOVE, BZPOPMIN with their timeout in seconds; XREAD BLOCK
    /// and WAIT in milliseconds): the block time, plus the read timeout for
    /// the round trip, plus one second for the server's lateness in noticing
    /// that a block expired. A block time of zero (for ever, to Redis), or a
    /// connection without a read timeout, waits for ever.
    Block(Duration),
}

/// Added to a block time to cover the server's timer granularity: Redis
/// checks blocked clients' timeouts a few times a second.
const BLOCK_MARGIN: Duration = Duration::from_secs(1);

impl ReplyTimeout {
    /// The time to wait for the reply, given the connection's read timeout
    /// (`None`: for ever).
    ///
    /// ```
    /// use std::time::Duration;
    /// use respline::ReplyTimeout;
    ///
    /// let read = Some(Duration::from_millis(500));
    /// assert_eq!(ReplyTimeout::Block(Duration::from_secs(10)).duration(read), Some(Duration::from_millis(11_500)));
    /// assert_eq!(ReplyTimeout::Block(Duration::ZERO).duration(read), None);
    /// assert_eq!(ReplyTimeout::After(Duration::from_secs(3)).duration(read), Some(Duration::from_secs(3)));
    /// ```
    pub fn duration(self, read_timeout: Option<Duration>) -> Option<Duration> {
        match self {
            ReplyTimeout::After(d) => Some(d),
            ReplyTimeout::Never => None,
            ReplyTimeout::Block(block) if block.is_zero() => None,
            // An overflow is as good as for ever.
            ReplyTimeout::Block(block) => block
                .checked_add(read_timeout?)
                .and_then(|d| d.checked_add(BLOCK_MARGIN)),
        }
    }
}

/// A connection lent for one call with its own reply timeout; made by
/// [`Connection::with_timeout`].
#[derive(Debug)]
#[must_use = "a timed call does nothing until `query` or `execute` is called"]
pub struct Timed<'c, S> {
    conn: &'c mut Connection<S>,
    wait: Wait,
}

impl<S: Read + Write> Timed<'_, S> {
    /// [`Connection::query`] with this call's timeout.
    pub fn query<T: FromValue>(self, command: impl ToCommand) -> Result<T> {
        self.conn
            .call_with(&command, self.wait, |reply| T::from_reply_ref(reply, None))?
    }

    /// [`Connection::execute`] with this call's timeout.
    pub fn execute(self, command: impl ToCommand) -> Result<Value> {
        self.query(command)
    }
}

impl<S: Read + Write> Connection<S> {
    /// A connection over `stream`, which is already connected (and, if the
    /// server needs it, authenticated: or call
    /// [`handshake`](Connection::handshake)).
    ///
    /// Without [`SocketHooks`] the connection cannot set socket timeouts: its
    /// deadlines are checked between reads, and a read that blocks lasts as
    /// long as the stream's own timeout. Use [`with_hooks`](Connection::with_hooks)
    /// when the stream has a socket underneath.
    ///
    /// Such a connection has no recipe to open another from: it cannot
    /// [`reconnect`](Connection::reconnect), and a request found unsendable
    /// (the stream closed while idle) fails with
    /// [`Error::NotSent`](crate::Error::NotSent) instead of being retried.
    pub fn new(stream: S) -> Connection<S> {
        Connection {
            stream,
            hooks: None,
            buf: ReadBuf::new(),
            decoder: Decoder::new(Limits::default()),
            state: State::Ready,
            protocol: Protocol::Resp2,
            read_timeout: None,
            write_timeout: None,
            armed_read: None,
            armed_write: None,
            pushes: VecDeque::new(),
            scratch: Vec::new(),
            recipe: None,
            watching: false,
            diverged: false,
            failover_reply: false,
            scan: FrameScan::default(),
            decoding: false,
        }
    }

    /// A connection over `stream`, with the hooks that reach its socket, so
    /// read and write deadlines are enforced inside blocking reads and
    /// unsolicited data is detected before each request.
    pub fn with_hooks(stream: S, hooks: SocketHooks<S>) -> Connection<S> {
        let mut conn = Connection::new(stream);
        conn.hooks = Some(hooks);
        conn
    }

    /// Sends one command and converts its reply to `T`.
    ///
    /// A server error reply is [`Error::Server`](crate::Error::Server) (keep
    /// it as a value with `T = Result<U, ServerError>`) and leaves the
    /// connection usable; so does a reply that does not fit `T`. An I/O
    /// error, timeout or protocol error breaks it.
    ///
    /// `T` must be known: for a command whose reply you do not need, use
    /// [`execute`](Connection::execute) (`conn.query(["FLUSHDB"])?;` alone
    /// does not compile on current Rust, as nothing says what `T` is).
    pub fn query<T: FromValue>(&mut self, command: impl ToCommand) -> Result<T> {
        self.call_with(&command, Wait::Default, |reply| {
            T::from_reply_ref(reply, None)
        })?
    }

    /// Sends one command and hands its reply to `f` as a [`ValueRef`]: a
    /// view into the connection's read buffer, so reading the reply costs no
    /// allocation (its bulk strings are `&[u8]` slices, its aggregates
    /// iterators that parse as they go). For code that processes a reply and
    /// drops it: sum a list, scan a hash, copy into structures of its own,
    /// write to a file.
    ///
    /// An error reply is [`Error::Server`](crate::Error::Server) and `f` is
    /// not called. What `f` returns is returned; its error leaves the
    /// connection usable.
    ///
    /// The reply is viewed where it lies once all of it has arrived, so the
    /// read buffer grows to hold the largest reply (and shrinks back to
    /// 64 KiB after a request that left it over 1 MiB). Replies the view
    /// does not read in place (streamed RESP3 strings and aggregates,
    /// attributes, simple strings that are not UTF-8) are decoded first and
    /// viewed in the decoded [`Value`]: the same view, at the owned path's
    /// cost. Every [`Limits`] and the broken-connection rule apply as to
    /// [`query`](Connection::query).
    ///
    /// ```
    /// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
    /// # let stream = FakeServer::replying(&[b"*3\r\n$1\r\n4\r\n$1\r\n5\r\n$2\r\n12\r\n"]);
    /// use respline::{Connection, ValueRef};
    ///
    /// let mut conn = Connection::new(stream);
    /// let total = conn.query_with(["LRANGE", "scores", "0", "-1"], |reply| {
    ///     let mut total = 0;
    ///     for item in reply.items().into_iter().flatten() {
    ///         total += item.convert::<i64>()?; // parsed from the buffer, no copy
    ///     }
    ///     Ok(total)
    /// })?;
    /// assert_eq!(total, 21);
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn query_with<R>(
        &mut self,
        command: impl ToCommand,
        f: impl FnOnce(ValueRef<'_>) -> Result<R>,
    ) -> Result<R> {
        self.call_with(&command, Wait::Default, |reply| {
            match reply.server_error() {
                Some(e) => Err(e.into()),
                None => f(reply),
            }
        })?
    }

    /// Sends one command and returns its reply as a [`Value`], failing with
    /// [`Error::Server`](crate::Error::Server) if it is an error reply: for
    /// commands whose reply is not needed (`conn.execute(["SET", "k", "v"])?;`),
    /// and to look at a reply before deciding what it is.
    pub fn execute(&mut self, command: impl ToCommand) -> Result<Value> {
        self.query(command)
    }

    /// Lends the connection for one call that waits `timeout` for its
    /// reply instead of the read timeout: the one way to give a call its own
    /// deadline, for blocking commands above all.
    ///
    /// ```
    /// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
    /// # let stream = FakeServer::replying(&[b"*2\r\n$4\r\njobs\r\n$3\r\njob\r\n", b"*-1\r\n"]);
    /// use std::time::Duration;
    /// use respline::{cmd, Connection, ReplyTimeout};
    ///
    /// let mut conn = Connection::new(stream);
    /// conn.set_read_timeout(Some(Duration::from_secs(1)));
    /// // BLPOP's timeout is in seconds: wait 30 s + the read timeout + 1 s of margin.
    /// let block = ReplyTimeout::Block(Duration::from_secs(30));
    /// let popped: Option<(String, String)> = conn.with_timeout(block).query(cmd("BLPOP").arg("jobs").arg(30))?;
    /// assert_eq!(popped, Some(("jobs".to_string(), "job".to_string())));
    /// // An expired block is a nil reply: None, and the connection stays usable.
    /// let popped: Option<(String, String)> = conn.with_timeout(block).query(cmd("BLPOP").arg("jobs").arg(30))?;
    /// assert_eq!(popped, None);
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn with_timeout(&mut self, timeout: ReplyTimeout) -> Timed<'_, S> {
        let wait = Wait::Each(timeout.duration(self.read_timeout));
        Timed { conn: self, wait }
    }

    /// Sends one command and returns its raw reply, an error reply included
    /// as a value.
    /// Sends one command and hands its reply, as a view, to `f`.
    fn call_with<R>(
        &mut self,
        command: &impl ToCommand,
        wait: Wait,
        f: impl FnOnce(ValueRef<'_>) -> R,
    ) -> Result<R> {
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        command.write_command(&mut bytes);
        if changes_session(&bytes) {
            self.note_session_change();
        }
        let mut f = Some(f);
        let mut out = None;
        let result = self.request_views(&bytes, 1, wait, |_, reply| {
            out = f.take().map(|f| f(reply));
            Ok(())
        });
        if bytes.capacity() <= MAX_KEPT_SCRATCH {
            self.scratch = bytes;
        }
        result?;
        // One reply was read, so `f` ran.
        out.ok_or_else(|| Error::Broken {
            cause: "a request ended without its reply".into(),
        })
    }

    /// Replaces this connection with a fresh one made from the same recipe
    /// (address, timeouts, credentials, db, name, protocol, limits). Queued
    /// pushes are dropped. Only for connections opened from options.
    ///
    /// A connection from `Sentinel::connect_primary` (feature `sentinel`)
    /// is made again the way it was made: the primary is looked up through
    /// the sentinels, so the fresh connection goes to the primary as it is
    /// now, not back to an address that may be a former primary.
    pub fn reconnect(&mut self) -> Result<()> {
        let recipe = self.recipe.clone().ok_or_else(|| {
            crate::Error::Config(
                "this connection was not opened from options; open a new one".into(),
            )
        })?;
        *self = recipe.open()?;
        Ok(())
    }
}

impl<S> Connection<S> {
    /// True once an I/O error, timeout or protocol error (or an abandoned
    /// request) has broken the connection. A broken connection refuses every
    /// call with [`Error::Broken`](crate::Error::Broken).
    pub fn is_broken(&self) -> bool {
        self.state != State::Ready
    }

    /// True if the connection can be handed to other code as if freshly
    /// opened: not broken, no reply left unread, no keys WATCHed, and no
    /// command sent through it that may have changed its session (`SELECT`,
    /// `AUTH`, `HELLO`, `CLIENT SETNAME` and other `CLIENT` settings,
    /// `MULTI`, `WATCH`, the subscribe family, `MONITOR`, `READONLY`,
    /// `READWRITE`, `RESET`). A pool keeps only such connections; the same
    /// conditions decide whether an unsent request may go out on a fresh
    /// connection.
    ///
    /// ```
    /// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
    /// # let stream = FakeServer::replying(&[b"+OK\r\n", b"+OK\r\n"]);
    /// let mut conn = respline::Connection::new(stream);
    /// conn.execute(["SET", "k", "v"])?;
    /// assert!(conn.is_reusable());
    /// conn.execute(["SELECT", "2"])?;
    /// assert!(!conn.is_reusable()); // a fresh connection would be on another database
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn is_reusable(&self) -> bool {
        self.state == State::Ready && !self.watching && !self.diverged
    }

    /// The protocol in use: RESP3 only after a successful `HELLO 3`.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The per-reply read deadline.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Sets the per-reply read deadline (`None`: wait for ever).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// The per-request write deadline.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// Sets the per-request write deadline (`None`: wait for ever).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Sets the limits for the replies to come and the push queue.
    pub fn set_limits(&mut self, limits: Limits) {
        self.decoder = Decoder::new(limits);
        self.scan.reset();
        self.decoding = false;
    }

    /// RESP3 push frames (pub/sub messages, client-tracking invalidations)
    /// that arrived between replies, oldest first. They queue here until
    /// taken, and never take a reply's place. At most
    /// [`Limits::max_queued_pushes`] wait: one more breaks the connection
    /// with a limit error.
    pub fn take_pushes(&mut self) -> Vec<Value> {
        self.pushes.drain(..).collect()
    }

    /// How many pushes are queued.
    pub fn pending_pushes(&self) -> usize {
        self.pushes.len()
    }

    /// The options this connection was opened with, if it was.
    pub fn options(&self) -> Option<&ConnectOptions> {
        self.recipe.as_ref().map(|r| &r.options)
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, consuming the connection. Buffered bytes are lost.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// True once an error reply coded `READONLY`, `MASTERDOWN` or `LOADING`
    /// arrived on this connection (a Sentinel-managed primary that moved).
    #[cfg_attr(not(feature = "sentinel"), allow(dead_code))]
    pub(crate) fn saw_failover_reply(&self) -> bool {
        self.failover_reply
    }

    /// Makes `options` (same address) the recipe that `reconnect` replays,
    /// for a connection opened with a tighter connect deadline than the
    /// one it should keep.
    #[cfg(feature = "sentinel")]
    pub(crate) fn keep_options(&mut self, options: ConnectOptions) {
        if let Some(recipe) = &mut self.recipe {
            recipe.options = options;
        }
    }

    /// Makes this connection, opened to the primary `sentinel` found, be
    /// made again through `sentinel` (by `reconnect` and when a request
    /// found it closed before sending): to the primary as it is then.
    #[cfg(feature = "sentinel")]
    pub(crate) fn follow_primary(
        &mut self,
        sentinel: crate::sentinel::Sentinel,
        open: fn(&crate::sentinel::Sentinel) -> Result<Connection<S>>,
    ) {
        if let Some(recipe) = &mut self.recipe {
            recipe.primary_of = Some((sentinel, open));
        }
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &Limits {
        self.decoder.limits()
    }

    /// The read buffer's size, for tests of its shrinking.
    #[cfg(test)]
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl Connection<Socket> {
    /// Opens a connection from a URL (see [`ConnectOptions::from_url`]):
    /// `redis://[[user]:password@]host[:port][/db]` (a lone `password@` is a
    /// password, as in redis-cli), `unix:///path?db=N`.
    ///
    /// ```no_run
    /// let mut conn = respline::Connection::open("redis://127.0.0.1:6379/0")?;
    /// let pong: String = conn.query(["PING"])?;
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn open(url: &str) -> Result<Connection<Socket>> {
        Connection::connect(&ConnectOptions::from_url(url)?)
    }

    /// Opens a connection as `options` say: connect, then the handshake, all
    /// within `options.connect_timeout`. TCP connections have `TCP_NODELAY`
    /// on. A failure to connect is an [`Error::Connect`](crate::Error::Connect)
    /// naming the address; a failed handshake step is an
    /// [`Error::Handshake`](crate::Error::Handshake) naming the step.
    pub fn connect(options: &ConnectOptions) -> Result<Connection<Socket>> {
        let deadline = options
            .connect_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let socket = Socket::connect(&options.addr, deadline)?;
        let mut conn = Connection::with_hooks(socket, SocketHooks::socket());
        // The handshake gets what is left of the connect deadline.
        let mut rest = options.clone();
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            rest.connect_timeout = Some(left.max(Duration::from_millis(1)));
        }
        conn.handshake(&rest)?;
        conn.recipe = Some(Recipe {
            options: options.clone(),
            open: Connection::connect,
            #[cfg(feature = "sentinel")]
            primary_of: None,
        });
        Ok(conn)
    }
}

impl Connection<Socket> {
    /// A pool's checkout look, without blocking or reading: `Some(false)`
    /// if the connection is broken, bytes wait unread (buffered or in the
    /// socket) or the server closed it; `None` if a Unix socket cannot tell.
    #[cfg(feature = "pool")]
    pub(crate) fn looks_idle(&self) -> Option<bool> {
        if self.is_broken() || !self.buf.pending().is_empty() {
            return Some(false);
        }
        self.stream.peek_idle()
    }
}

impl<S> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state)
            .field("protocol", &self.protocol)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("buffered", &self.buf.pending().len())
            .field("pushes", &self.pushes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io;

    /// Each write releases the next canned reply, read at most `chunk`
    /// bytes at a time.
    struct Drip {
        replies: Vec<Vec<u8>>,
        input: Vec<u8>,
        pos: usize,
        chunk: usize,
    }

    impl Read for Drip {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = (self.input.len() - self.pos).min(self.chunk).min(b.len());
            b[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for Drip {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if !self.replies.is_empty() {
                let next = self.replies.remove(0);
                self.input.extend_from_slice(&next);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failover_replies_are_noticed_by_their_code() {
        let cases: [(&str, bool); 8] = [
            (
                "-READONLY You can't write against a read only replica.\r\n",
                true,
            ),
            ("-MASTERDOWN Link with MASTER is down\r\n", true),
            ("-LOADING Redis is loading the dataset in memory\r\n", true),
            ("!10\r\nLOADING xy\r\n", true),
            ("-ERR READONLY\r\n", false),
            ("-READONLYX\r\n", false),
            ("+READONLY\r\n", false),
            ("*2\r\n-READONLY in an array\r\n:1\r\n", false),
        ];
        for (reply, seen) in cases {
            let replies = vec![b"+OK\r\n".to_vec(), reply.as_bytes().to_vec()];
            let drip = Drip {
                replies,
                input: Vec::new(),
                pos: 0,
                chunk: 7,
            };
            let mut conn = Connection::new(drip);
            conn.execute(["PING"]).unwrap();
            assert!(!conn.saw_failover_reply());
            let _ = conn.execute(["SET", "k", "v"]);
            assert_eq!(conn.saw_failover_reply(), seen, "{:?}", reply);
            assert!(!conn.is_broken(), "{:?}", reply);
        }
    }

    proptest! {
        #[test]
        fn the_buffer_grows_only_with_the_bytes(
            sizes in prop::collection::vec(0usize..300_000, 1..6),
            chunk in 1usize..200_000,
        ) {
            let mut replies = Vec::new();
            for &n in &sizes {
                let mut reply = format!("${}\r\n", n).into_bytes();
                reply.extend(std::iter::repeat(b'x').take(n));
                reply.extend_from_slice(b"\r\n");
                replies.push(reply);
            }
            let mut conn = Connection::new(Drip { replies, input: Vec::new(), pos: 0, chunk });
            for &n in &sizes {
                let v: Vec<u8> = conn.query(["GET", "k"]).unwrap();
                prop_assert_eq!(v.len(), n);
                let fed = conn.get_ref().pos;
                prop_assert!(conn.buffer_capacity() <= 64 * 1024 + 4 * fed);
                // After a reply, a buffer grown past 1 MiB shrinks back.
                prop_assert!(conn.buffer_capacity() <= 1024 * 1024 || fed > 256 * 1024);
            }
        }
    }
}
