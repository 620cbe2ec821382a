//! Pub/Sub: a [`Subscriber`] owns a connection in subscribed mode and hands
//! out [`Message`]s; a [`StopHandle`] lets another thread end a blocked
//! wait.
//!
//! The subscriber works the same under RESP2 (messages are arrays) and
//! RESP3 (messages are push frames). Subscription confirmations are never
//! returned as messages: each `subscribe`-family call waits for its
//! confirmations and records them, so the subscription counts are the
//! server's. Messages that arrive while a confirmation is awaited are kept,
//! in order, for the next [`receive`](Subscriber::receive).

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::str;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cmd::{cmd, Cmd, ToArg, ToCommand};
use crate::connect::Socket;
use crate::connection::{queue_full, Connection, Wait};
use crate::convert::{server_error, FromValue};
use crate::error::{Error, Result, ServerError};
use crate::resp::{Protocol, ProtocolError, ProtocolErrorKind, Value};

/// Which kind of subscription delivered a [`Message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `message`: published to a channel subscribed with
    /// [`subscribe`](Subscriber::subscribe).
    Message,
    /// `pmessage`: published to a channel matching a pattern subscribed
    /// with [`psubscribe`](Subscriber::psubscribe).
    PMessage,
    /// `smessage`: published with `SPUBLISH` to a shard channel subscribed
    /// with [`ssubscribe`](Subscriber::ssubscribe).
    SMessage,
}

/// One published message.
///
/// ```
/// use respline::{Message, MessageKind};
///
/// let m = Message {
///     kind: MessageKind::PMessage,
///     channel: b"news.tech".to_vec(),
///     pattern: Some(b"news.*".to_vec()),
///     payload: b"42".to_vec(),
/// };
/// assert_eq!(m.channel_str()?, "news.tech");
/// assert_eq!(m.pattern_str()?, Some("news.*"));
/// assert_eq!(m.payload_str()?, "42");
/// assert_eq!(m.payload_as::<i64>()?, 42);
/// # Ok::<(), respline::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    /// Which kind of subscription delivered it.
    pub kind: MessageKind,
    /// The channel it was published to.
    pub channel: Vec<u8>,
    /// The pattern that matched the channel, for [`MessageKind::PMessage`].
    pub pattern: Option<Vec<u8>>,
    /// What was published.
    pub payload: Vec<u8>,
}

impl Message {
    /// The payload as text, or a conversion error if it is not UTF-8.
    pub fn payload_str(&self) -> Result<&str> {
        utf8(&self.payload, "payload")
    }

    /// The channel as text, or a conversion error if it is not UTF-8.
    pub fn channel_str(&self) -> Result<&str> {
        utf8(&self.channel, "channel")
    }

    /// The pattern as text (`None` unless this is a
    /// [`PMessage`](MessageKind::PMessage)), or a conversion error if it is
    /// not UTF-8.
    pub fn pattern_str(&self) -> Result<Option<&str>> {
        match &self.pattern {
            Some(p) => utf8(p, "pattern").map(Some),
            None => Ok(None),
        }
    }

    /// The payload converted like a bulk-string reply (see
    /// [`FromValue`]): `i64`, `f64`, `String`, `Vec<u8>`, ...
    pub fn payload_as<T: FromValue>(&self) -> Result<T> {
        T::from_value(Value::BulkString(self.payload.clone()))
    }
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    str::from_utf8(bytes).map_err(|e| {
        Error::conversion(
            "UTF-8 text",
            format!(
                "a {} of {} bytes with invalid UTF-8 at byte {}",
                what,
                bytes.len(),
                e.valid_up_to()
            ),
        )
    })
}

/// The confirmations a subscriber can owe, and the pong of a PING. The
/// discriminant indexes `Subscriber::owed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ack {
    Subscribe = 0,
    Unsubscribe = 1,
    PSubscribe = 2,
    PUnsubscribe = 3,
    SSubscribe = 4,
    SUnsubscribe = 5,
    Pong = 6,
}

impl Ack {
    fn from_name(name: &[u8]) -> Option<Ack> {
        const NAMES: [(&[u8], Ack); 6] = [
            (b"subscribe", Ack::Subscribe),
            (b"unsubscribe", Ack::Unsubscribe),
            (b"psubscribe", Ack::PSubscribe),
            (b"punsubscribe", Ack::PUnsubscribe),
            (b"ssubscribe", Ack::SSubscribe),
            (b"sunsubscribe", Ack::SUnsubscribe),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, a)| a)
    }
}

/// A frame read in subscribed mode, sorted.
enum Frame {
    Message(Message),
    /// A subscription confirmation: the channel or pattern (nil when an
    /// unsubscribe-all found nothing to remove) and the server's count.
    Confirm(Ack, Option<Vec<u8>>),
    Pong,
    /// An error reply: the command awaited failed as a whole.
    Error(ServerError),
    /// A RESP3 push that is not pub/sub (a tracking invalidation): it goes
    /// back to the connection's push queue.
    OtherPush(Value),
}

/// Sorts one frame. A pub/sub frame of the wrong shape is a protocol error.
fn classify(value: Value) -> Result<Frame> {
    enum Tag {
        Message(MessageKind, usize),
        Confirm(Ack),
        Pong,
    }
    let tag = match value.without_attributes() {
        Value::Array(items) | Value::Push(items) => {
            match items.first().and_then(Value::as_bytes) {
                Some(name) if name.eq_ignore_ascii_case(b"message") => {
                    Some(Tag::Message(MessageKind::Message, 3))
                }
                Some(name) if name.eq_ignore_ascii_case(b"pmessage") => {
                    Some(Tag::Message(MessageKind::PMessage, 4))
                }
                Some(name) if name.eq_ignore_ascii_case(b"smessage") => {
                    Some(Tag::Message(MessageKind::SMessage, 3))
                }
                // RESP2 answers PING in subscribed mode with ["pong", ""].
                Some(name) if name.eq_ignore_ascii_case(b"pong") && items.len() == 2 => {
                    Some(Tag::Pong)
                }
                Some(name) => Ack::from_name(name).map(Tag::Confirm),
                None => None,
            }
        }
        // RESP3 answers PING with a plain +PONG, subscribed or not.
        Value::SimpleString(s) if s.eq_ignore_ascii_case("pong") => Some(Tag::Pong),
        v if v.is_error() => {
            return Ok(Frame::Error(
                server_error(v).unwrap_or_else(|| ServerError::new("ERR")),
            ))
        }
        _ => None,
    };
    let tag = match tag {
        Some(t) => t,
        None if matches!(value.without_attributes(), Value::Push(_)) => {
            return Ok(Frame::OtherPush(value))
        }
        None => return Err(unexpected(&value)),
    };
    let items = match value.into_without_attributes() {
        Value::Array(items) | Value::Push(items) => items,
        _ => return Ok(Frame::Pong),
    };
    match tag {
        Tag::Pong => Ok(Frame::Pong),
        Tag::Message(kind, len) => {
            if items.len() != len || items.iter().any(|v| v.as_bytes().is_none()) {
                return Err(malformed("string elements", len, items));
            }
            let mut it = items.into_iter().skip(1).filter_map(into_bytes);
            let pattern = if kind == MessageKind::PMessage {
                it.next()
            } else {
                None
            };
            let channel = it.next().unwrap_or_default();
            let payload = it.next().unwrap_or_default();
            Ok(Frame::Message(Message {
                kind,
                channel,
                pattern,
                payload,
            }))
        }
        Tag::Confirm(ack) => {
            if items.len() != 3 || items[2].as_i64().is_none() {
                return Err(malformed("a name and an integer count", 3, items));
            }
            let name = items.into_iter().nth(1).and_then(into_bytes);
            Ok(Frame::Confirm(ack, name))
        }
    }
}

fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value.into_without_attributes() {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_owned().into_bytes()),
        Value::Verbatim { text, .. } => Some(text),
        _ => None,
    }
}

fn unexpected(value: &Value) -> Error {
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::Unexpected,
        0,
        "a pub/sub message, a subscription confirmation or a pong",
        format!("{} {}", value.kind(), value),
    ))
}

fn malformed(what: &str, len: usize, items: Vec<Value>) -> Error {
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::Unexpected,
        0,
        format!("a pub/sub frame of {} elements ({})", len, what),
        format!("{} elements: {}", items.len(), Value::Array(items)),
    ))
}

/// A connection in subscribed mode.
///
/// Made with [`Subscriber::new`] from a [`Connection`] that is not in the
/// middle of anything; [`into_connection`](Subscriber::into_connection)
/// gives it back for ordinary commands. While the subscriber owns it, the
/// connection cannot run ordinary commands (under RESP2 a subscribed
/// connection accepts only the subscribe family, PING, QUIT and RESET).
///
/// * [`subscribe`](Subscriber::subscribe), [`psubscribe`](Subscriber::psubscribe),
///   [`ssubscribe`](Subscriber::ssubscribe) and their `un` counterparts send
///   the command and wait, within the connection's read timeout, until the
///   server has confirmed every channel. Confirmations are recorded (see
///   [`subscription_count`](Subscriber::subscription_count)), never returned
///   as messages. An empty list unsubscribes from every channel of the kind
///   (and subscribing to an empty list does nothing).
/// * [`receive`](Subscriber::receive) returns the next message, or
///   `Ok(None)` once its own timeout passes. That timeout is not an error:
///   the connection stays usable, and a message half read when it fired is
///   kept and completed by the next call.
/// * A server error reply to a subscribe-family call (an ACL refusal, say)
///   is returned as [`Error::Server`] and leaves the subscriber usable. An
///   I/O error, a protocol error, or a timeout while waiting for a
///   confirmation breaks it; so does [`StopHandle::stop`].
///
/// ```
/// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
/// use respline::{Connection, MessageKind, Subscriber};
///
/// // A scripted server that confirms the subscription, then sends one message.
/// let stream = FakeServer::replying(&[b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n\
///     *3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"]);
/// let conn = Connection::new(stream);
///
/// let mut sub = Subscriber::new(conn);
/// sub.subscribe(&["news"])?;
/// assert_eq!(sub.subscription_count(), 1);
/// let msg = sub.receive(None)?.expect("a message");
/// assert_eq!(msg.kind, MessageKind::Message);
/// assert_eq!((msg.channel_str()?, msg.payload_str()?), ("news", "hello"));
/// # Ok::<(), respline::Error>(())
/// ```
///
/// Receive timeouts are enforced inside blocking reads only when the
/// connection can reach its socket: a connection from
/// [`Connection::open`]/[`Connection::connect`], or one made with
/// [`Connection::with_hooks`].
pub struct Subscriber<S = Socket> {
    conn: Connection<S>,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    shard_channels: BTreeSet<Vec<u8>>,
    /// Confirmations (and pongs) still owed, indexed by `Ack`.
    owed: [usize; 7],
    /// Messages that arrived while a confirmation was awaited.
    queue: VecDeque<Message>,
    stopped: Arc<AtomicBool>,
}

impl<S: Read + Write> Subscriber<S> {
    /// Takes over `conn` for pub/sub. Nothing is sent yet.
    ///
    /// The connection must be idle and not broken; if it is not, the
    /// subscriber is broken from the start and every call returns
    /// [`Error::Broken`]. RESP3 pub/sub pushes already queued on the
    /// connection are taken in as messages and confirmations.
    pub fn new(mut conn: Connection<S>) -> Subscriber<S> {
        if let Err(e) = conn.begin() {
            // `begin` fails on a broken connection (which stays broken) or on
            // one with an abandoned request, which must not be reused either.
            conn.poison(e.to_string());
        }
        let mut sub = Subscriber {
            conn,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shard_channels: BTreeSet::new(),
            owed: [0; 7],
            queue: VecDeque::new(),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        if sub.conn.broken_cause().is_none() {
            // An error here has broken the connection; the next call says so.
            let _ = sub.absorb_queued_pushes();
        }
        sub
    }

    /// Subscribes to channels (`SUBSCRIBE`) and waits for the server to
    /// confirm each one.
    pub fn subscribe<C: ToArg>(&mut self, channels: &[C]) -> Result<()> {
        if channels.is_empty() {
            return Ok(());
        }
        self.send_one("SUBSCRIBE", channels, Ack::Subscribe, channels.len())
    }

    /// Subscribes to glob-style patterns (`PSUBSCRIBE`), such as `news.*`,
    /// and waits for the confirmations.
    pub fn psubscribe<C: ToArg>(&mut self, patterns: &[C]) -> Result<()> {
        if patterns.is_empty() {
            return Ok(());
        }
        self.send_one("PSUBSCRIBE", patterns, Ack::PSubscribe, patterns.len())
    }

    /// Subscribes to shard channels (`SSUBSCRIBE`, Redis 7 and later; it
    /// also works on a server that is not a cluster), and waits for the
    /// confirmations.
    pub fn ssubscribe<C: ToArg>(&mut self, channels: &[C]) -> Result<()> {
        if channels.is_empty() {
            return Ok(());
        }
        self.send_one("SSUBSCRIBE", channels, Ack::SSubscribe, channels.len())
    }

    /// Unsubscribes from channels (`UNSUBSCRIBE`); an empty list means every
    /// channel. Waits for the confirmations.
    pub fn unsubscribe<C: ToArg>(&mut self, channels: &[C]) -> Result<()> {
        let owed = expected(channels.len(), self.channels.len());
        self.send_one("UNSUBSCRIBE", channels, Ack::Unsubscribe, owed)
    }

    /// Unsubscribes from patterns (`PUNSUBSCRIBE`); an empty list means
    /// every pattern. Waits for the confirmations.
    pub fn punsubscribe<C: ToArg>(&mut self, patterns: &[C]) -> Result<()> {
        let owed = expected(patterns.len(), self.patterns.len());
        self.send_one("PUNSUBSCRIBE", patterns, Ack::PUnsubscribe, owed)
    }

    /// Unsubscribes from shard channels (`SUNSUBSCRIBE`); an empty list
    /// means every shard channel. Waits for the confirmations.
    pub fn sunsubscribe<C: ToArg>(&mut self, channels: &[C]) -> Result<()> {
        let owed = expected(channels.len(), self.shard_channels.len());
        self.send_one("SUNSUBSCRIBE", channels, Ack::SUnsubscribe, owed)
    }

    /// Unsubscribes from every channel, pattern and shard channel, in one
    /// round trip (only the kinds with subscriptions are sent), and waits
    /// for the confirmations. Messages that arrive meanwhile are kept for
    /// [`receive`](Subscriber::receive).
    pub fn unsubscribe_all(&mut self) -> Result<()> {
        let mut batch = Vec::new();
        let none: [&str; 0] = [];
        if !self.channels.is_empty() {
            batch.push((
                command("UNSUBSCRIBE", &none),
                Ack::Unsubscribe,
                self.channels.len(),
            ));
        }
        if !self.patterns.is_empty() {
            batch.push((
                command("PUNSUBSCRIBE", &none),
                Ack::PUnsubscribe,
                self.patterns.len(),
            ));
        }
        if !self.shard_channels.is_empty() {
            let n = self.shard_channels.len();
            batch.push((command("SUNSUBSCRIBE", &none), Ack::SUnsubscribe, n));
        }
        self.send(batch)
    }

    /// Sends `PING` and waits for its pong (messages that arrive meanwhile
    /// are kept): a health check for a subscriber that has been quiet.
    pub fn ping(&mut self) -> Result<()> {
        self.send(vec![(cmd("PING"), Ack::Pong, 1)])
    }

    /// The next message, waiting up to `timeout` (`None`: for ever).
    ///
    /// Returns `Ok(None)` when the timeout passes with no message: not an
    /// error, the subscriber stays usable, and a message half read at that
    /// moment is completed by the next call. `Some(Duration::ZERO)` returns
    /// only a message already received.
    ///
    /// Confirmations and pongs that arrive are recorded, never returned.
    /// Under RESP3, pushes that are not pub/sub (client-tracking
    /// invalidations) are kept for [`take_pushes`](Subscriber::take_pushes).
    ///
    /// After [`StopHandle::stop`], returns an [`Error::Io`] of kind
    /// `ConnectionAborted` ("stopped"), then [`Error::Broken`];
    /// [`is_stopped`](Subscriber::is_stopped) tells a deliberate stop from
    /// a failure. Messages not yet received are then lost.
    pub fn receive(&mut self, timeout: Option<Duration>) -> Result<Option<Message>> {
        self.check_usable()?;
        if let Some(m) = self.queue.pop_front() {
            return Ok(Some(m));
        }
        self.absorb_queued_pushes()?;
        if let Some(m) = self.queue.pop_front() {
            return Ok(Some(m));
        }
        // An overflowing deadline is as good as none.
        let wait = match timeout.and_then(|t| Instant::now().checked_add(t)) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Each(None),
        };
        loop {
            // A timeout is patient: the decoder keeps a partial frame, so
            // nothing is lost.
            let value = match self.conn.receive_frame(wait, !self.is_stopped()) {
                Ok(Some(v)) => v,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.failed(e)),
            };
            if let Some(m) = self.take_frame(value)? {
                return Ok(Some(m));
            }
        }
    }

    /// The number of active subscriptions: channels, patterns and shard
    /// channels, as confirmed by the server.
    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard_channels.len()
    }

    /// The channels subscribed with [`subscribe`](Subscriber::subscribe),
    /// in byte order.
    pub fn channels(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.channels.iter().map(Vec::as_slice)
    }

    /// The patterns subscribed with [`psubscribe`](Subscriber::psubscribe),
    /// in byte order.
    pub fn patterns(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.patterns.iter().map(Vec::as_slice)
    }

    /// The shard channels subscribed with
    /// [`ssubscribe`](Subscriber::ssubscribe), in byte order.
    pub fn shard_channels(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.shard_channels.iter().map(Vec::as_slice)
    }

    /// Messages already received and waiting for
    /// [`receive`](Subscriber::receive).
    pub fn pending_messages(&self) -> usize {
        self.queue.len()
    }

    /// True once an I/O error, a protocol error, a timeout while awaiting a
    /// confirmation, or a stop has broken the subscriber's connection.
    pub fn is_broken(&self) -> bool {
        self.conn.broken_cause().is_some()
    }

    /// True once [`StopHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The protocol of the connection.
    pub fn protocol(&self) -> Protocol {
        self.conn.protocol()
    }

    /// RESP3 pushes that are not pub/sub (client-tracking invalidations),
    /// oldest first.
    pub fn take_pushes(&mut self) -> Vec<Value> {
        self.conn.take_pushes()
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        self.conn.get_ref()
    }

    /// Unsubscribes from everything still subscribed (see
    /// [`unsubscribe_all`](Subscriber::unsubscribe_all)) and gives the
    /// connection back for ordinary commands.
    ///
    /// It never returns a connection with subscriptions active: if the
    /// unsubscribing fails, or the subscriber is broken or stopped, the
    /// error is returned and the connection dropped. Messages received but
    /// not yet taken with [`receive`](Subscriber::receive) are dropped.
    pub fn into_connection(mut self) -> Result<Connection<S>> {
        self.check_usable()?;
        self.unsubscribe_all()?;
        if self.subscription_count() != 0 {
            // The server confirmed fewer removals than were asked for.
            let count = self.subscription_count();
            return Err(self.conn.fail(Error::Protocol(ProtocolError::new(
                ProtocolErrorKind::Unexpected,
                0,
                "no subscription left after unsubscribing from everything",
                format!("{} still confirmed", count),
            ))));
        }
        self.conn.end();
        Ok(self.conn)
    }

    /// Fails with the reason the subscriber cannot be used, if it cannot.
    fn check_usable(&mut self) -> Result<()> {
        if self.is_stopped() && self.conn.broken_cause().is_none() {
            return Err(self.conn.fail(stopped_error()));
        }
        match self.conn.broken_cause() {
            Some(cause) => Err(Error::Broken {
                cause: cause.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Breaks the connection for `e`, or for the stop if that caused it.
    fn failed(&mut self, e: Error) -> Error {
        let e = if self.is_stopped() {
            stopped_error()
        } else {
            e
        };
        self.conn.fail(e)
    }

    fn send_one<C: ToArg>(&mut self, name: &str, names: &[C], ack: Ack, owed: usize) -> Result<()> {
        self.send(vec![(command(name, names), ack, owed)])
    }

    /// Writes the commands in one write, then waits, within the read
    /// timeout, until every confirmation they owe has arrived.
    fn send(&mut self, batch: Vec<(Cmd, Ack, usize)>) -> Result<()> {
        self.check_usable()?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for (c, _, _) in &batch {
            c.write_command(&mut bytes);
        }
        if let Err(e) = self.conn.send(&bytes, 0) {
            return Err(self.failed(e));
        }
        for (_, ack, owed) in batch {
            self.owed[ack as usize] += owed;
        }
        let wait = match self
            .conn
            .read_timeout()
            .and_then(|t| Instant::now().checked_add(t))
        {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Each(None),
        };
        while self.owed.iter().any(|&n| n > 0) {
            // A timeout here is a request that went unanswered: it breaks
            // the connection like any other.
            let value = match self.conn.receive_frame(wait, false) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => return Err(self.failed(e)),
            };
            if let Some(m) = self.take_frame(value)? {
                self.keep(m)?;
            }
        }
        Ok(())
    }

    /// Keeps a message that arrived while a confirmation was awaited, for
    /// the next `receive`; at most `Limits::max_queued_pushes`,
    /// so a server flooding messages cannot grow memory without bound.
    fn keep(&mut self, m: Message) -> Result<()> {
        let max = self.conn.limits().max_queued_pushes;
        if self.queue.len() >= max {
            let err = queue_full(max, "messages queued while awaiting a confirmation");
            return Err(self.conn.fail(err));
        }
        self.queue.push_back(m);
        Ok(())
    }

    /// Records a confirmation or pong, queues a foreign push, or returns a
    /// message.
    fn take_frame(&mut self, value: Value) -> Result<Option<Message>> {
        let frame = match classify(value) {
            Ok(f) => f,
            Err(e) => return Err(self.conn.fail(e)),
        };
        match frame {
            Frame::Message(m) => return Ok(Some(m)),
            Frame::Confirm(ack, name) => self.confirm(ack, name),
            Frame::Pong => {
                let owed = &mut self.owed[Ack::Pong as usize];
                *owed = owed.saturating_sub(1);
            }
            Frame::OtherPush(v) => {
                if let Err(e) = self.conn.queue_push(v) {
                    return Err(self.conn.fail(e));
                }
            }
            Frame::Error(e) => {
                if self.owed.iter().all(|&n| n == 0) {
                    let err = Error::Protocol(ProtocolError::new(
                        ProtocolErrorKind::Unexpected,
                        0,
                        "no error reply while nothing was asked",
                        format!("error reply {}", e),
                    ));
                    return Err(self.conn.fail(err));
                }
                // The command awaited failed as a whole: it owes nothing more.
                self.owed = [0; 7];
                return Err(e.into());
            }
        }
        Ok(None)
    }

    fn confirm(&mut self, ack: Ack, name: Option<Vec<u8>>) {
        let owed = &mut self.owed[ack as usize];
        *owed = owed.saturating_sub(1);
        let name = match name {
            Some(n) => n,
            // An unsubscribe-all that found nothing to remove.
            None => return,
        };
        match ack {
            Ack::Subscribe => {
                self.channels.insert(name);
            }
            Ack::PSubscribe => {
                self.patterns.insert(name);
            }
            Ack::SSubscribe => {
                self.shard_channels.insert(name);
            }
            Ack::Unsubscribe => {
                self.channels.remove(&name);
            }
            Ack::PUnsubscribe => {
                self.patterns.remove(&name);
            }
            Ack::SUnsubscribe => {
                self.shard_channels.remove(&name);
            }
            Ack::Pong => {}
        }
    }

    /// Takes the pub/sub pushes the connection queued (RESP3) in order,
    /// leaving the others.
    fn absorb_queued_pushes(&mut self) -> Result<()> {
        let queued = self.conn.take_pushes();
        let mut result = Ok(());
        for v in queued {
            if result.is_err() {
                // Handed back in order: the queue was emptied above.
                let _ = self.conn.queue_push(v);
                continue;
            }
            match self.take_frame(v) {
                Ok(Some(m)) => {
                    if let Err(e) = self.keep(m) {
                        result = Err(e);
                    }
                }
                Ok(None) => {}
                Err(e) => result = Err(e),
            }
        }
        result
    }
}

/// The number of confirmations an unsubscribe owes: one per name given, or
/// for "all", one per subscription, and one (with a nil name) if there is
/// none.
fn expected(given: usize, subscribed: usize) -> usize {
    if given > 0 {
        given
    } else {
        subscribed.max(1)
    }
}

fn command<C: ToArg>(name: &str, args: &[C]) -> Cmd {
    let mut c = cmd(name);
    for a in args {
        c.push_arg(a);
    }
    c
}

fn stopped_error() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the subscriber was stopped by StopHandle::stop",
    ))
}

impl Subscriber<Socket> {
    /// A handle another thread can use to stop this subscriber, even while
    /// it is blocked in [`receive`](Subscriber::receive): see
    /// [`StopHandle`]. Fails only if the socket cannot be duplicated.
    ///
    /// ```no_run
    /// use respline::{Connection, Subscriber};
    ///
    /// let mut sub = Subscriber::new(Connection::open("redis://127.0.0.1:6379")?);
    /// sub.subscribe(&["jobs"])?;
    /// let stop = sub.stop_handle()?;
    /// let worker = std::thread::spawn(move || {
    ///     // Ends with an error once `stop` is called.
    ///     while let Ok(Some(msg)) = sub.receive(None) {
    ///         println!("{:?}", msg.payload_str());
    ///     }
    ///     sub.is_stopped()
    /// });
    /// stop.stop()?;
    /// assert!(worker.join().unwrap());
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn stop_handle(&self) -> Result<StopHandle> {
        let socket = self.conn.get_ref().try_clone().map_err(Error::Io)?;
        Ok(StopHandle {
            socket,
            stopped: Arc::clone(&self.stopped),
        })
    }
}

/// Stops a [`Subscriber`] from another thread: [`stop`](StopHandle::stop)
/// sets a flag and shuts the socket down, which wakes a `receive` blocked
/// in a read. The subscriber's connection is broken afterwards (its socket
/// is shut): its next call returns an error and
/// [`Subscriber::is_stopped`] is true.
#[derive(Debug)]
pub struct StopHandle {
    socket: Socket,
    stopped: Arc<AtomicBool>,
}

impl StopHandle {
    /// Stops the subscriber. Calling it again does nothing more.
    pub fn stop(&self) -> Result<()> {
        self.stopped.store(true, Ordering::SeqCst);
        match self.socket.shutdown() {
            // Already shut (a second stop, or the server hung up).
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other.map_err(Error::Io),
        }
    }

    /// True once [`stop`](StopHandle::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

impl<S> fmt::Debug for Subscriber<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("connection", &self.conn)
            .field("channels", &self.channels.len())
            .field("patterns", &self.patterns.len())
            .field("shard_channels", &self.shard_channels.len())
            .field("pending_messages", &self.queue.len())
            .field("stopped", &self.stopped.load(Ordering::SeqCst))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn classifies_resp2_and_resp3_frames_alike() {
        for wrap in [Value::Array as fn(Vec<Value>) -> Value, Value::Push] {
            match classify(wrap(vec![
                bulk("pmessage"),
                bulk("n.*"),
                bulk("n.1"),
                bulk("x"),
            ])) {
                Ok(Frame::Message(m)) => {
                    assert_eq!(m.kind, MessageKind::PMessage);
                    assert_eq!(m.pattern.as_deref(), Some(&b"n.*"[..]));
                    assert_eq!((&m.channel[..], &m.payload[..]), (&b"n.1"[..], &b"x"[..]));
                }
                _ => panic!("expected a pmessage"),
            }
            match classify(wrap(vec![
                bulk("unsubscribe"),
                Value::Nil,
                Value::Integer(0),
            ])) {
                Ok(Frame::Confirm(Ack::Unsubscribe, None)) => {}
                _ => panic!("expected an unsubscribe confirmation"),
            }
        }
    }

    #[test]
    fn foreign_pushes_and_bad_frames() {
        let inval = Value::Push(vec![bulk("invalidate"), Value::Array(vec![bulk("k")])]);
        assert!(matches!(classify(inval), Ok(Frame::OtherPush(_))));
        // A RESP2 array that is not pub/sub has no business here.
        assert!(matches!(
            classify(Value::Array(vec![bulk("x")])),
            Err(Error::Protocol(_))
        ));
        // A message with a missing payload.
        assert!(matches!(
            classify(Value::Push(vec![bulk("message"), bulk("c")])),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            classify(Value::Error("NOPERM no".into())),
            Ok(Frame::Error(e)) if e.code() == "NOPERM"
        ));
    }

    /// Reads come from a script; `None` is a read that times out.
    struct Scripted {
        reads: VecDeque<Option<&'static [u8]>>,
        written: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                Some(Some(bytes)) => {
                    b[..bytes.len()].copy_from_slice(bytes);
                    Ok(bytes.len())
                }
                Some(None) => Err(io::ErrorKind::WouldBlock.into()),
                None => Ok(0),
            }
        }
    }

    impl Write for Scripted {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_timeout_mid_message_keeps_the_partial_frame() {
        let reads = vec![
            Some(&b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$7\r\nmess"[..]),
            None,
            Some(b"age\r\n$1\r\nc\r\n$4\r\nbo"),
            None,
            None,
            Some(b"dy\r\n"),
        ];
        let stream = Scripted {
            reads: reads.into_iter().collect(),
            written: Vec::new(),
        };
        let mut sub = Subscriber::new(Connection::new(stream));
        sub.subscribe(&["c"]).unwrap();
        let wait = Some(Duration::from_secs(1));
        assert_eq!(sub.receive(wait).unwrap(), None);
        assert_eq!(sub.receive(wait).unwrap(), None);
        assert_eq!(sub.receive(wait).unwrap(), None);
        let m = sub.receive(wait).unwrap().expect("the whole message");
        assert_eq!((&m.channel[..], &m.payload[..]), (&b"c"[..], &b"body"[..]));
        assert!(!sub.is_broken());
        assert_eq!(
            sub.get_ref().written,
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n"
        );
        // End of stream is an error that breaks the subscriber.
        assert!(sub.receive(wait).unwrap_err().is_io());
        assert!(sub.is_broken());
    }

    #[test]
    fn payload_helpers_report_bad_utf8() {
        let m = Message {
            kind: MessageKind::Message,
            channel: b"c".to_vec(),
            pattern: None,
            payload: vec![b'a', 0xff],
        };
        let err = m.payload_str().unwrap_err().to_string();
        assert!(err.contains("UTF-8") && err.contains("byte 1"), "{}", err);
        assert_eq!(m.pattern_str().unwrap(), None);
    }
}
