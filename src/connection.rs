//! [`Connection`]: one stream, its read buffer, deadlines, and the rule that
//! keeps replies matched to their commands.
//!
//! The rule: a connection is *ready* or *broken*. Before a request is
//! written, the connection is marked broken ("request in flight"); only when
//! the last reply it is owed has been read is it marked ready again. Any I/O
//! error, timeout or protocol error in between, a panic in a caller's
//! callback, or anything else that leaves the loop early, leaves it broken,
//! and a broken connection refuses every later call without touching the
//! stream. A late reply can therefore never be read as the answer to a later
//! command; [`Connection::reconnect`] opens a fresh one.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::cmd::{Cmd, ToCommand};
use crate::convert::{server_error, FromValue};
use crate::decode::{Decoder, Limits};
use crate::encode::Protocol;
use crate::error::{is_timeout_kind, Error, ProtocolError, ProtocolErrorKind, Result};
use crate::options::ConnectOptions;
use crate::socket::{remaining, Socket, SocketHooks};
use crate::value::Value;

/// The read buffer starts this large (allocated on first use)...
const INITIAL_BUFFER: usize = 64 * 1024;
/// ...and, when a request ends with the buffer empty but larger than this,
/// it shrinks back to `INITIAL_BUFFER`, so one huge reply does not pin its
/// memory for the life of the connection.
const MAX_IDLE_BUFFER: usize = 1024 * 1024;
/// The most RESP3 pushes kept for [`Connection::take_pushes`]. A server that
/// sends more while nobody takes them is treated as hostile: the connection
/// breaks with a limit error rather than grow without bound.
pub const MAX_QUEUED_PUSHES: usize = 100_000;

/// A connection to a Redis server over any byte stream.
///
/// `S` is the stream: [`Socket`] (TCP or Unix) when opened with
/// [`open`](Connection::open) or [`connect`](Connection::connect), or
/// anything that is `Read + Write` with [`new`](Connection::new) (a TLS
/// stream, a proxy, an in-memory fake).
///
/// ```
/// use std::collections::VecDeque;
/// use std::io::{Read, Write};
/// use respline::{cmd, Connection};
///
/// // A fake server: each request written releases the next canned reply.
/// struct Fake { canned: VecDeque<&'static [u8]>, out: Vec<u8>, requests: Vec<u8> }
/// impl Read for Fake {
///     fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
///         let n = self.out.len().min(b.len());
///         b[..n].copy_from_slice(&self.out[..n]);
///         self.out.drain(..n);
///         Ok(n)
///     }
/// }
/// impl Write for Fake {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
///         self.requests.extend_from_slice(b);
///         self.out.extend_from_slice(self.canned.pop_front().unwrap_or(b""));
///         Ok(b.len())
///     }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
///
/// let canned = VecDeque::from(vec![&b"$5\r\nAlice\r\n"[..], b":7\r\n"]);
/// let mut conn = Connection::new(Fake { canned, out: Vec::new(), requests: Vec::new() });
/// let name: Option<String> = conn.query(cmd("GET").arg("name")).unwrap();
/// let n: i64 = conn.query(["INCR", "counter"]).unwrap();
/// assert_eq!((name.as_deref(), n), (Some("Alice"), 7));
/// assert_eq!(conn.get_ref().requests, b"*2\r\n$3\r\nGET\r\n$4\r\nname\r\n*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n");
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
    /// The recipe, for `reconnect`.
    options: Option<ConnectOptions>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Ready,
    /// Bytes were (or are being) written and not every reply is read.
    InFlight,
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

impl<S: Read + Write> Connection<S> {
    /// A connection over `stream`, which is already connected (and, if the
    /// server needs it, authenticated: or call
    /// [`handshake`](Connection::handshake)).
    ///
    /// Without [`SocketHooks`] the connection cannot set socket timeouts: its
    /// deadlines are checked between reads, and a read that blocks lasts as
    /// long as the stream's own timeout. Use [`with_hooks`](Connection::with_hooks)
    /// when the stream has a socket underneath.
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
            options: None,
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

    /// Applies `options` to this connection: its timeouts and limits, then
    /// the handshake (HELLO, AUTH, CLIENT SETNAME, SELECT), all within
    /// `options.connect_timeout`. The address in `options` is not used.
    ///
    /// A server error in the handshake (a wrong password, say) is returned as
    /// [`Error::Server`]; a timeout or I/O error aborts it. Either way the
    /// connection should be dropped.
    pub fn handshake(&mut self, options: &ConnectOptions) -> Result<()> {
        self.read_timeout = options.read_timeout;
        self.write_timeout = options.write_timeout;
        self.decoder = Decoder::new(options.limits.clone());
        let deadline = options.connect_timeout.map(|t| Instant::now() + t);
        let result = self.run_handshake(options, deadline);
        if let Err(e) = &result {
            // A connection whose handshake failed is not what the caller
            // asked for; nothing may reuse it, whatever the failure.
            self.mark_broken(format!("handshake failed: {}", e));
        }
        result
    }

    fn run_handshake(&mut self, options: &ConnectOptions, deadline: Option<Instant>) -> Result<()> {
        let wait = match deadline {
            Some(d) => Wait::Until(d),
            None => Wait::Each(None),
        };
        let mut setup = Vec::new();
        if options.protocol == Protocol::Resp3 {
            let mut hello = crate::cmd("HELLO").arg(3);
            if let Some(password) = &options.password {
                let user = options.username.as_deref().unwrap_or("default");
                hello = hello.arg("AUTH").arg(user).arg(password);
            }
            if let Some(name) = &options.client_name {
                hello = hello.arg("SETNAME").arg(name);
            }
            match self.request_with(&hello, wait)? {
                Value::Map(_) => self.protocol = Protocol::Resp3,
                Value::Error(e) => {
                    let err = crate::ServerError::new(&e);
                    // Servers before Redis 6 do not know HELLO: stay on RESP2.
                    let unknown =
                        err.code() == "NOPROTO" || err.message().starts_with("unknown command");
                    if !unknown {
                        return Err(err.into());
                    }
                    self.push_resp2_auth(options, &mut setup);
                }
                other => {
                    return Err(unexpected(
                        "a map (or an error) in reply to HELLO 3",
                        format!("{} {}", other.kind(), other),
                    ));
                }
            }
        } else {
            self.push_resp2_auth(options, &mut setup);
        }
        if options.db != 0 {
            setup.push(crate::cmd("SELECT").arg(options.db));
        }
        if setup.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for c in &setup {
            c.write_command(&mut bytes);
        }
        let mut first_error = None;
        self.request(&bytes, setup.len(), wait, |_, v| {
            if first_error.is_none() {
                first_error = server_error(&v);
            }
            Ok(())
        })?;
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn push_resp2_auth(&self, options: &ConnectOptions, setup: &mut Vec<Cmd>) {
        if let Some(password) = &options.password {
            let mut auth = crate::cmd("AUTH");
            if let Some(user) = &options.username {
                auth = auth.arg(user);
            }
            setup.push(auth.arg(password));
        }
        if let Some(name) = &options.client_name {
            setup.push(crate::cmd("CLIENT").arg("SETNAME").arg(name));
        }
    }

    /// Sends one command and converts its reply.
    ///
    /// A server error reply gives [`Error::Server`] and leaves the
    /// connection usable; an I/O error, timeout or protocol error breaks it.
    pub fn query<T: FromValue>(&mut self, command: impl ToCommand) -> Result<T> {
        let reply = self.request_with(&command, Wait::Default)?;
        T::from_value(reply)
    }

    /// Like [`query`](Connection::query), with its own timeout for the reply
    /// instead of the connection's read timeout (`None` waits for ever):
    /// for blocking commands (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD BLOCK,
    /// WAIT) whose block time is longer than the read timeout. Give the block
    /// time plus a margin, or `None` for a block time of 0.
    pub fn query_with_timeout<T: FromValue>(
        &mut self,
        command: impl ToCommand,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let reply = self.request_with(&command, Wait::Each(timeout))?;
        T::from_value(reply)
    }

    /// Sends one command and returns its raw reply, an error reply included
    /// as a value.
    fn request_with(&mut self, command: &impl ToCommand, wait: Wait) -> Result<Value> {
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        command.write_command(&mut bytes);
        let mut reply = None;
        let result = self.request(&bytes, 1, wait, |_, v| {
            reply = Some(v);
            Ok(())
        });
        if bytes.capacity() <= INITIAL_BUFFER {
            self.scratch = bytes;
        }
        result?;
        reply.ok_or_else(|| unexpected("one reply", "none".to_string()))
    }

    /// Writes `bytes` (holding `replies` commands) in one write, then reads
    /// exactly `replies` replies, handing each to `each` with its index.
    ///
    /// If `each` returns an error, the remaining replies are still read (so
    /// the connection stays in step) and the first such error is returned.
    /// An I/O, timeout or protocol failure breaks the connection and, for
    /// more than one reply, is wrapped in [`Error::Interrupted`].
    pub(crate) fn request(
        &mut self,
        bytes: &[u8],
        replies: usize,
        wait: Wait,
        mut each: impl FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        self.begin()?;
        if let Err(e) = self.write_all(bytes) {
            return Err(self.fail(e, 0, replies));
        }
        let mut first_error = None;
        for i in 0..replies {
            let reply = match self.next_reply(wait) {
                Ok(v) => v,
                Err(e) => return Err(self.fail(e, i, replies)),
            };
            if let Err(e) = each(i, reply) {
                first_error.get_or_insert(e);
            }
        }
        self.finish();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Checks the connection can take a request and marks it in flight.
    pub(crate) fn begin(&mut self) -> Result<()> {
        self.ensure_ready()?;
        if let Err(e) = self.check_idle() {
            self.state = State::Broken(e.to_string());
            return Err(e);
        }
        self.state = State::InFlight;
        Ok(())
    }

    /// Marks the connection ready after the last owed reply.
    pub(crate) fn finish(&mut self) {
        self.state = State::Ready;
        self.buf.shrink_if_idle();
    }

    /// Breaks the connection for `e`, which happened after `got` of
    /// `requested` replies.
    pub(crate) fn fail(&mut self, e: Error, got: usize, requested: usize) -> Error {
        self.state = State::Broken(e.to_string());
        if requested > 1 {
            Error::Interrupted {
                replies: got,
                requested,
                source: Box::new(e),
            }
        } else {
            e
        }
    }

    fn ensure_ready(&self) -> Result<()> {
        match &self.state {
            State::Ready => Ok(()),
            State::InFlight => Err(Error::Broken {
                cause: "an earlier request was abandoned before all its replies were read \
                        (a panic in a callback?)"
                    .into(),
            }),
            State::Broken(cause) => Err(Error::Broken {
                cause: cause.clone(),
            }),
        }
    }

    /// Before a request: nothing may be waiting to be read but RESP3 pushes.
    /// Bytes already buffered are checked, and with socket hooks, so are bytes
    /// sitting unread in the socket (one non-blocking read).
    fn check_idle(&mut self) -> Result<()> {
        self.classify_idle_bytes()?;
        let hooks = match self.hooks {
            Some(h) => h,
            None => return Ok(()),
        };
        (hooks.set_nonblocking)(&self.stream, true).map_err(Error::Io)?;
        let read = loop {
            match self.stream.read(self.buf.spare()) {
                Ok(0) => {
                    break Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection while it was idle",
                    )))
                }
                Ok(n) => self.buf.filled(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(Error::Io(e)),
            }
        };
        (hooks.set_nonblocking)(&self.stream, false).map_err(Error::Io)?;
        read?;
        self.classify_idle_bytes()
    }

    /// Takes complete pushes out of the buffer; anything else there is
    /// unsolicited.
    fn classify_idle_bytes(&mut self) -> Result<()> {
        while let Some(&first) = self.buf.pending().first() {
            if !self.decoder.is_mid_reply() && first != b'>' && first != b'|' {
                return Err(unsolicited(self.buf.pending()));
            }
            let (used, value) = self.decoder.feed(self.buf.pending())?;
            self.buf.consume(used);
            match value {
                Some(v) if matches!(v.without_attributes(), Value::Push(_)) => {
                    self.queue_push(v)?
                }
                Some(v) => return Err(unsolicited(format!("{}", v).as_bytes())),
                None => break,
            }
        }
        Ok(())
    }

    /// Reads the next reply that is not a push; pushes are queued.
    pub(crate) fn next_reply(&mut self, wait: Wait) -> Result<Value> {
        loop {
            let v = self.next_frame(wait)?;
            if matches!(v.without_attributes(), Value::Push(_)) {
                self.queue_push(v)?;
            } else {
                return Ok(v);
            }
        }
    }

    /// Queues a push for [`take_pushes`](Connection::take_pushes), within
    /// [`MAX_QUEUED_PUSHES`].
    pub(crate) fn queue_push(&mut self, push: Value) -> Result<()> {
        if self.pushes.len() >= MAX_QUEUED_PUSHES {
            return Err(queue_full(
                "queued RESP3 pushes (take them with take_pushes)",
            ));
        }
        self.pushes.push_back(push);
        Ok(())
    }

    /// Reads the next complete frame, pushes included. The deadline is only
    /// computed if the frame is not already buffered. A timeout leaves any
    /// partial frame in the decoder, so a caller that may retry (a
    /// subscriber) loses nothing.
    pub(crate) fn next_frame(&mut self, wait: Wait) -> Result<Value> {
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if !self.buf.pending().is_empty() {
                let (used, value) = self.decoder.feed(self.buf.pending())?;
                self.buf.consume(used);
                if let Some(v) = value {
                    return Ok(v);
                }
            }
            let d = *deadline.get_or_insert_with(|| match wait {
                Wait::Default => self.read_timeout.map(|t| Instant::now() + t),
                Wait::Each(t) => t.map(|t| Instant::now() + t),
                Wait::Until(d) => Some(d),
            });
            self.read_some(d)?;
        }
    }

    /// One read into the buffer, within `deadline`.
    fn read_some(&mut self, deadline: Option<Instant>) -> Result<()> {
        loop {
            self.arm_read(deadline)?;
            match self.stream.read(self.buf.spare()) {
                Ok(0) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        if self.decoder.is_mid_reply() || !self.buf.pending().is_empty() {
                            "the server closed the connection in the middle of a reply"
                        } else {
                            "the server closed the connection before replying"
                        },
                    )))
                }
                Ok(n) => {
                    self.buf.filled(n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout_kind(e.kind()) => {
                    // The socket's timeout is rounded down; only the deadline
                    // decides. A stream without hooks timing out on its own
                    // is a timeout too.
                    if deadline.map_or(true, |d| Instant::now() >= d) || self.hooks.is_none() {
                        return Err(Error::Timeout { operation: "read" });
                    }
                }
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Sets the socket's read timeout to the time left, rounded down to the
    /// millisecond so that back-to-back requests set it once, not per read.
    fn arm_read(&mut self, deadline: Option<Instant>) -> Result<()> {
        let left = remaining(deadline, "read")?.map(round_down);
        if let Some(h) = self.hooks {
            if left != self.armed_read {
                (h.set_read_timeout)(&self.stream, left).map_err(Error::Io)?;
                self.armed_read = left;
            }
        }
        Ok(())
    }

    fn arm_write(&mut self, deadline: Option<Instant>) -> Result<()> {
        let left = remaining(deadline, "write")?.map(round_down);
        if let Some(h) = self.hooks {
            if left != self.armed_write {
                (h.set_write_timeout)(&self.stream, left).map_err(Error::Io)?;
                self.armed_write = left;
            }
        }
        Ok(())
    }

    /// Writes all of `bytes` within the write deadline: one `write` call
    /// when the stream takes everything at once.
    pub(crate) fn write_all(&mut self, mut bytes: &[u8]) -> Result<()> {
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        while !bytes.is_empty() {
            self.arm_write(deadline)?;
            match self.stream.write(bytes) {
                Ok(0) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the stream accepted no more bytes",
                    )))
                }
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout_kind(e.kind()) => {
                    if deadline.map_or(true, |d| Instant::now() >= d) || self.hooks.is_none() {
                        return Err(Error::Timeout { operation: "write" });
                    }
                }
                Err(e) => return Err(Error::Io(e)),
            }
        }
        self.stream.flush().map_err(Error::Io)
    }

    /// True once an I/O error, timeout or protocol error (or an abandoned
    /// request) has broken the connection. A broken connection refuses every
    /// call with [`Error::Broken`].
    pub fn is_broken(&self) -> bool {
        self.state != State::Ready
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

    /// Sets the reply limits for the replies to come.
    pub fn set_limits(&mut self, limits: Limits) {
        self.decoder = Decoder::new(limits);
    }

    /// RESP3 push frames (pub/sub messages, client-tracking invalidations)
    /// that arrived between replies, oldest first. They queue here until
    /// taken, and never take a reply's place. At most [`MAX_QUEUED_PUSHES`]
    /// wait: one more breaks the connection with a limit error.
    pub fn take_pushes(&mut self) -> Vec<Value> {
        self.pushes.drain(..).collect()
    }

    /// How many pushes are queued.
    pub fn pending_pushes(&self) -> usize {
        self.pushes.len()
    }

    /// The read buffer's current size in bytes (it shrinks back after a
    /// large reply).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.data.len()
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, consuming the connection. Buffered bytes are lost.
    pub fn into_inner(self) -> S {
        self.stream
    }

    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub(crate) fn hooks(&self) -> Option<SocketHooks<S>> {
        self.hooks
    }

    /// Reads what the stream has now (it must be non-blocking) and decodes
    /// the complete replies into `out`, pushes into the push queue. Returns
    /// false if nothing was waiting.
    pub(crate) fn read_available(&mut self, out: &mut VecDeque<Value>) -> Result<bool> {
        let n = loop {
            match self.stream.read(self.buf.spare()) {
                Ok(0) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection in the middle of a load",
                    )))
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(Error::Io(e)),
            }
        };
        self.buf.filled(n);
        while !self.buf.pending().is_empty() {
            let (used, value) = self.decoder.feed(self.buf.pending())?;
            self.buf.consume(used);
            match value {
                Some(v) if matches!(v.without_attributes(), Value::Push(_)) => {
                    self.queue_push(v)?
                }
                Some(v) => out.push_back(v),
                None => break,
            }
        }
        Ok(true)
    }

    /// Marks the connection broken for `cause` (kept if it is broken
    /// already): for callers that cannot vouch for the server-side state,
    /// such as a WATCH left standing by a panic.
    pub(crate) fn mark_broken(&mut self, cause: String) {
        if !matches!(self.state, State::Broken(_)) {
            self.state = State::Broken(cause);
        }
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
    /// on.
    pub fn connect(options: &ConnectOptions) -> Result<Connection<Socket>> {
        let started = Instant::now();
        let deadline = options.connect_timeout.map(|t| started + t);
        let socket = Socket::connect(&options.addr, deadline)?;
        let mut conn = Connection::with_hooks(socket, SocketHooks::socket());
        // The handshake gets what is left of the connect deadline.
        let mut rest = options.clone();
        rest.connect_timeout = match deadline {
            Some(d) => Some(
                d.checked_duration_since(Instant::now())
                    .filter(|d| !d.is_zero())
                    .ok_or(Error::Timeout {
                        operation: "connect",
                    })?,
            ),
            None => None,
        };
        conn.handshake(&rest)?;
        conn.options = Some(options.clone());
        Ok(conn)
    }

    /// Replaces this connection with a fresh one made from the same recipe
    /// (address, timeouts, credentials, db, name, protocol, limits). Queued
    /// pushes are dropped.
    pub fn reconnect(&mut self) -> Result<()> {
        let options = self.options.clone().ok_or_else(|| {
            Error::Config("this connection was not opened from options; open a new one".into())
        })?;
        *self = Connection::connect(&options)?;
        Ok(())
    }

    /// The options this connection was opened with.
    pub fn options(&self) -> Option<&ConnectOptions> {
        self.options.as_ref()
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

fn round_down(d: Duration) -> Duration {
    if d >= Duration::from_millis(1) {
        Duration::from_millis(d.as_millis() as u64)
    } else {
        d
    }
}

fn unexpected(expected: &'static str, found: String) -> Error {
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::Unexpected,
        0,
        expected,
        found,
    ))
}

/// The limit error for a queue of frames the caller has not taken yet
/// (`what` names them) that reached [`MAX_QUEUED_PUSHES`].
pub(crate) fn queue_full(what: &str) -> Error {
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::LimitExceeded,
        0,
        format!("at most {} {}", MAX_QUEUED_PUSHES, what),
        "one more",
    ))
}

fn unsolicited(bytes: &[u8]) -> Error {
    let mut shown = String::new();
    let _ = crate::value::write_quoted(&mut shown, &bytes[..bytes.len().min(32)]);
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::Unexpected,
        0,
        "nothing from the server before a request (RESP3 pushes aside)",
        format!("unsolicited data {}", shown),
    ))
}

/// The read buffer: `data[start..end]` holds bytes read but not yet
/// consumed by the decoder. The vector's length is its usable capacity,
/// zero-filled once, so reads need no `unsafe`.
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Room to read into: compacts first, and doubles the buffer only when
    /// unconsumed bytes fill it (so it never grows faster than bytes
    /// arrive).
    fn spare(&mut self) -> &mut [u8] {
        if self.data.is_empty() {
            self.data = vec![0; INITIAL_BUFFER];
        }
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.data.len() * 2;
                self.data.resize(len, 0);
            }
        }
        &mut self.data[self.end..]
    }

    fn shrink_if_idle(&mut self) {
        if self.start == self.end && self.data.len() > MAX_IDLE_BUFFER {
            self.data = vec![0; INITIAL_BUFFER];
            self.start = 0;
            self.end = 0;
        }
    }
}

/// For the subscriber (src/pubsub.rs), which keeps a connection in
/// subscribed mode outside the request/reply cycle.
impl<S> Connection<S> {
    /// Why the connection is broken, if it is; a request in flight (or a
    /// subscriber holding the connection) is not a failure.
    pub(crate) fn failure_cause(&self) -> Option<&str> {
        match &self.state {
            State::Broken(cause) => Some(cause),
            _ => None,
        }
    }

    /// The queue of RESP3 pushes, for the subscriber to take its pub/sub
    /// frames from and to put back the pushes that are not its own.
    pub(crate) fn pubsub_push_queue(&mut self) -> &mut VecDeque<Value> {
        &mut self.pushes
    }
}
