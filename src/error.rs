//! One error type for everything that can go wrong, what each failure
//! means for the connection, and whether the request may have run.

use std::borrow::Cow;
use std::fmt;
use std::io;

use crate::resp::ProtocolError;

/// A specialised `Result` for respline.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, one variant per kind of failure.
///
/// Two questions every error answers:
///
/// * **Is the connection still usable?** [`Error::Server`] (the server
///   answered with an error reply), [`Error::Conversion`] (the reply did not
///   fit the requested type), [`Error::ExecAbort`] and
///   [`Error::WatchAborted`] leave it usable. Every other kind that happens
///   while a request is in flight breaks it ([`Error::breaks_connection`]):
///   it refuses further use with [`Error::Broken`] until
///   [`reconnect`](crate::Connection::reconnect), so a late reply can never
///   be handed to the wrong command.
/// * **May the request have run?** [`Error::may_have_reached_server`] is
///   false only when provably nothing of the request was written: it is
///   then safe to send it again.
///
/// ```
/// use respline::{Connection, ConnectOptions};
///
/// // Nothing listens on port 1: the error names the address, and nothing was sent.
/// let err = Connection::connect(&ConnectOptions::tcp("127.0.0.1", 1)).unwrap_err();
/// assert!(err.to_string().starts_with("could not connect to 127.0.0.1:1: "), "{}", err);
/// assert!(err.is_io() && !err.may_have_reached_server());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The stream failed while a request was in flight: reset, end of
    /// stream in the middle of a reply, broken pipe.
    Io(io::Error),
    /// A deadline passed before the operation finished.
    Timeout {
        /// What was being waited for: `"read"` or `"write"`.
        operation: &'static str,
    },
    /// The peer sent bytes that are not valid RESP, broke a configured limit,
    /// or sent something no request asked for.
    Protocol(ProtocolError),
    /// The server answered with an error reply (`-ERR ...`, `!...`).
    Server(Box<ServerError>),
    /// A reply could not be converted to the requested Rust type.
    Conversion(Box<ConversionError>),
    /// A URL or an option was invalid, or a feature was asked of a stream
    /// that cannot provide it.
    Config(String),
    /// The connection was broken by an earlier failure and refuses further
    /// use; the text names that failure. Nothing was sent.
    Broken {
        /// The failure that broke the connection.
        cause: String,
    },
    /// The server discarded a transaction (`EXECABORT`) because commands
    /// failed to queue; each error carries the index of its command.
    /// Nothing in the transaction ran.
    ExecAbort {
        /// The queueing errors, each with [`ServerError::index`] set.
        errors: Vec<ServerError>,
    },
    /// `EXEC` returned nil: a WATCHed key changed, so nothing ran.
    WatchAborted {
        /// How many times the transaction was tried.
        attempts: u32,
    },
    /// A multi-reply request (a pipeline, a chunked load) failed part way;
    /// the connection is broken.
    Interrupted {
        /// Replies fully received before the failure: the commands before
        /// this index are known to have been executed.
        replies: usize,
        /// Replies the request was waiting for: the commands in it (for a
        /// chunked load, the commands written so far).
        requested: usize,
        /// The failure itself.
        source: Box<Error>,
    },
    /// Opening a connection failed: the address could not be resolved,
    /// refused the connection, or did not answer within the connect timeout
    /// (an `io::Error` of kind `TimedOut`).
    Connect {
        /// The address, as `host:port` or a socket path.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The server refused a step of the connection handshake, or the
    /// handshake failed at that step.
    Handshake {
        /// The command of the step: `"HELLO"`, `"AUTH"`, `"CLIENT SETNAME"`
        /// or `"SELECT"`; or `"PING"`, which a pool sends to a new
        /// connection whose handshake sent nothing, so that a server asking
        /// for a password says so when the connection is opened; or
        /// `"ROLE"`, which a Sentinel lookup sends to confirm a data node's
        /// role.
        step: &'static str,
        /// Why.
        source: Box<Error>,
    },
    /// The failure came before any byte of the request was written, so the
    /// server never saw it: safe to send again. (By default a connection
    /// opened from options already retried once on a fresh connection.)
    NotSent {
        /// The failure.
        source: Box<Error>,
    },
    /// A command (or a transaction) needs all its keys in one hash slot on
    /// a cluster, and they are in several: refused before anything was
    /// sent. A `{hash tag}` in the keys puts them in one slot.
    CrossSlot {
        /// The command, or `"a transaction"`.
        command: String,
        /// Two of the slots its keys are in.
        slots: [u16; 2],
    },
    /// Commands of a request to a cluster got no reply: the connection to
    /// their node failed (or, for a command split per slot, a part of it
    /// could not be run after others had); the request's other commands
    /// were answered.
    Unanswered {
        /// Their indices in the request, ascending (0 for a lone command).
        commands: Box<[usize]>,
        /// The first failure; its
        /// [`may_have_reached_server`](Error::may_have_reached_server) says
        /// whether they may have run (false when none was written).
        source: Box<Error>,
    },
    /// A cluster kept redirecting or refusing commands (`MOVED` loops,
    /// `CLUSTERDOWN`, `TRYAGAIN`, an unserved slot...) until the retry
    /// bounds ran out. The commands named did not run; the request's
    /// other commands did.
    GaveUp {
        /// Their indices in the request, ascending (0 for a lone command).
        commands: Box<[usize]>,
        /// How many times the most tried of them was tried.
        attempts: u16,
        /// How long the request had been retrying, in milliseconds.
        elapsed_ms: u32,
        /// The last answer or failure.
        last: Box<Error>,
    },
    /// No sentinel answered a primary lookup: each one tried failed to
    /// connect, timed out, or answered with an error or a malformed reply.
    /// Nothing was sent to a data node.
    NoSentinel {
        /// How many sentinels were tried.
        tried: u16,
        /// The last sentinel's failure.
        last: Box<Error>,
    },
    /// Every sentinel that answered a primary lookup said it monitors no
    /// primary of this name (the name is wrong, or the sentinels were
    /// reconfigured). Nothing was sent to a data node.
    UnknownPrimary {
        /// The primary's name, as it was asked for.
        name: String,
    },
    /// The sentinels named a primary, but `ROLE` on that address said it is
    /// not one, until the lookup's deadline: a failover under way, or
    /// sentinels whose information is stale. The user's request was not
    /// sent.
    NotPrimary {
        /// The address the sentinels gave, as `host:port`.
        addr: Box<str>,
        /// The role it reported (`"slave"`, `"sentinel"`...).
        role: Box<str>,
    },
    /// A connection pool (`respline::pool`) had no connection to give
    /// within its checkout timeout: every one was in use and none came
    /// back (or `try_get` found none free). Nothing was sent.
    PoolTimeout {
        /// Connections in use (or being opened) when the wait ended.
        in_use: u32,
        /// The pool's maximum size.
        max: u32,
        /// How long the caller waited, in milliseconds (0 for `try_get`).
        waited_ms: u32,
    },
}

impl Error {
    /// A conversion error: the reply did not fit, for [`FromValue`](crate::FromValue)
    /// implementations. `expected` names what was needed, `found` shows what
    /// arrived.
    ///
    /// ```
    /// let err = respline::Error::conversion("a user hash", "an empty map".to_string());
    /// assert_eq!(err.to_string(), "cannot convert reply: expected a user hash, found an empty map");
    /// ```
    pub fn conversion(expected: impl Into<Cow<'static, str>>, found: impl Into<String>) -> Error {
        Error::Conversion(Box::new(ConversionError::new(expected, found)))
    }

    /// True if the failure was a timeout, directly or inside a wrapping
    /// variant.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::PoolTimeout { .. } => true,
            Error::Io(e) | Error::Connect { source: e, .. } => is_timeout_kind(e.kind()),
            _ => self.inner().map_or(false, Error::is_timeout),
        }
    }

    /// True if the failure was an I/O error (not a timeout), directly or
    /// inside a wrapping variant; connect failures included.
    pub fn is_io(&self) -> bool {
        match self {
            Error::Io(e) | Error::Connect { source: e, .. } => !is_timeout_kind(e.kind()),
            _ => self.inner().map_or(false, Error::is_io),
        }
    }

    /// True if this failure leaves the connection broken (or never opened
    /// it). Server errors, conversion errors, `EXECABORT` and a WATCH abort
    /// do not; I/O errors, timeouts and protocol errors during a request do.
    pub fn breaks_connection(&self) -> bool {
        !matches!(
            self,
            Error::Server(_)
                | Error::Conversion(_)
                | Error::Config(_)
                | Error::ExecAbort { .. }
                | Error::WatchAborted { .. }
                | Error::GaveUp { .. }
                | Error::CrossSlot { .. }
                | Error::PoolTimeout { .. }
        )
    }

    /// False only when provably no byte of the request reached the server,
    /// so it cannot have run and may be sent again: a refused or failed
    /// connect or handshake, a broken connection refusing use, an invalid
    /// option, a failed Sentinel lookup, or [`Error::NotSent`]. True for
    /// everything else, including server errors (the request arrived) and
    /// failures after part of it was written.
    pub fn may_have_reached_server(&self) -> bool {
        !matches!(
            self,
            Error::Config(_)
                | Error::Broken { .. }
                | Error::Connect { .. }
                | Error::Handshake { .. }
                | Error::NotSent { .. }
                | Error::GaveUp { .. }
                | Error::CrossSlot { .. }
                | Error::NoSentinel { .. }
                | Error::UnknownPrimary { .. }
                | Error::NotPrimary { .. }
                | Error::PoolTimeout { .. }
        ) && match self {
            Error::Unanswered { source, .. } => source.may_have_reached_server(),
            _ => true,
        }
    }

    /// The server error, if this is one (also inside a wrapping variant).
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) => Some(e),
            _ => self.inner().and_then(Error::server_error),
        }
    }

    /// How many replies arrived before a multi-reply request failed, if the
    /// failure interrupted one.
    pub fn replies_received(&self) -> Option<usize> {
        match self {
            Error::Interrupted { replies, .. } => Some(*replies),
            _ => None,
        }
    }

    /// The error a wrapping variant carries.
    fn inner(&self) -> Option<&Error> {
        match self {
            Error::Interrupted { source, .. }
            | Error::Handshake { source, .. }
            | Error::NotSent { source }
            | Error::Unanswered { source, .. }
            | Error::GaveUp { last: source, .. }
            | Error::NoSentinel { last: source, .. } => Some(source),
            _ => None,
        }
    }

    /// Marks a server or conversion error as coming from the command at
    /// `index` of a pipeline or transaction (if it is not marked yet).
    pub(crate) fn at_command(self, index: Option<usize>) -> Error {
        match (self, index) {
            (Error::Server(mut e), Some(i)) if e.index.is_none() => {
                e.index = Some(i);
                Error::Server(e)
            }
            (Error::Conversion(mut e), Some(i)) if e.index.is_none() => {
                e.index = Some(i);
                Error::Conversion(e)
            }
            (e, _) => e,
        }
    }

    /// True for a server error reply (not a transport failure).
    pub(crate) fn is_server(&self) -> bool {
        matches!(self, Error::Server(_))
    }
}

/// Writes "command #3" or "2 commands (#1, #4)", listing at most 8.
fn write_commands(f: &mut fmt::Formatter<'_>, commands: &[usize]) -> fmt::Result {
    const SHOWN: usize = 8;
    if commands.len() == 1 {
        return write!(f, "command #{}", commands[0]);
    }
    write!(f, "{} commands (", commands.len())?;
    for (n, i) in commands.iter().take(SHOWN).enumerate() {
        write!(f, "{}#{}", if n == 0 { "" } else { ", " }, i)?;
    }
    if commands.len() > SHOWN {
        write!(f, ", ...")?;
    }
    write!(f, ")")
}

/// Unix reports a read timeout as `WouldBlock`, Windows as `TimedOut`.
pub(crate) fn is_timeout_kind(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {}", e),
            Error::Timeout { operation } => write!(f, "timed out waiting to {}", operation),
            Error::Protocol(e) => write!(f, "{}", e),
            Error::Server(e) => write!(f, "server error: {}", e),
            Error::Conversion(e) => write!(f, "{}", e),
            Error::Config(msg) => write!(f, "invalid configuration: {}", msg),
            Error::Broken { cause } => write!(
                f,
                "connection is broken by an earlier failure ({}); call reconnect()",
                cause
            ),
            Error::ExecAbort { errors } => {
                f.write_str("transaction discarded (EXECABORT): ")?;
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{}", e)?;
                }
                Ok(())
            }
            Error::WatchAborted { attempts } => write!(
                f,
                "transaction aborted: a WATCHed key changed (tried {} time{})",
                attempts,
                if *attempts == 1 { "" } else { "s" }
            ),
            Error::Interrupted {
                replies,
                requested,
                source,
            } => write!(
                f,
                "request interrupted after {} of {} replies: {}",
                replies, requested, source
            ),
            Error::Connect { addr, source } => {
                write!(f, "could not connect to {}: {}", addr, source)
            }
            Error::Handshake { step, source } => {
                write!(f, "connection handshake failed at {}: {}", step, source)
            }
            Error::NotSent { source } => write!(f, "{} (the request was not sent)", source),
            Error::CrossSlot { command, slots } => write!(
                f,
                "CROSSSLOT: {} needs all its keys in one hash slot on a cluster, found keys in \
                 slots {} and {}; put them in one slot with a {{hash tag}} (nothing was sent)",
                command, slots[0], slots[1]
            ),
            Error::Unanswered { commands, source } => {
                write!(f, "no reply to ")?;
                write_commands(f, commands)?;
                let outcome = if source.may_have_reached_server() {
                    "may have run"
                } else {
                    "were not sent"
                };
                write!(f, ", which {}: {}", outcome, source)
            }
            Error::GaveUp {
                commands,
                attempts,
                elapsed_ms,
                last,
            } => {
                write!(f, "gave up on ")?;
                write_commands(f, commands)?;
                write!(
                    f,
                    " after {} attempts in {:.1} s, without running them; the last answer: {}",
                    attempts,
                    f64::from(*elapsed_ms) / 1000.0,
                    last
                )
            }
            Error::NoSentinel { tried, last } => write!(
                f,
                "sentinel: expected a sentinel to answer the primary lookup, none of the {} tried \
                 did; the last failure: {}",
                tried, last
            ),
            Error::UnknownPrimary { name } => write!(
                f,
                "sentinel: expected a primary named {:?}, found none: every sentinel that \
                 answered monitors no primary of that name",
                name
            ),
            Error::NotPrimary { addr, role } => write!(
                f,
                "sentinel: expected the primary the sentinels named, {}, to answer ROLE with \
                 \"master\", found {:?} until the lookup deadline (a failover under way, or \
                 sentinels with stale information)",
                addr, role
            ),
            Error::PoolTimeout {
                in_use,
                max,
                waited_ms,
            } => write!(
                f,
                "pool: no connection free after waiting {} ms: {} of {} in use (nothing was sent)",
                waited_ms, in_use, max
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Connect { source: e, .. } => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Server(e) => Some(&**e),
            Error::Conversion(e) => Some(&**e),
            Error::Interrupted { source, .. }
            | Error::Handshake { source, .. }
            | Error::NotSent { source }
            | Error::Unanswered { source, .. }
            | Error::GaveUp { last: source, .. }
            | Error::NoSentinel { last: source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// An I/O error as respline reports it: a timeout kind is
/// [`Error::Timeout`], anything else [`Error::Io`].
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        if is_timeout_kind(e.kind()) {
            Error::Timeout { operation: "read" }
        } else {
            Error::Io(e)
        }
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Error {
        Error::Protocol(e)
    }
}

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Error {
        Error::Server(Box::new(e))
    }
}

impl From<ConversionError> for Error {
    fn from(e: ConversionError) -> Error {
        Error::Conversion(Box::new(e))
    }
}

/// An error reply from the server, split into its code and message.
///
/// ```
/// let e = respline::ServerError::new("WRONGTYPE Operation against a key holding the wrong kind of value");
/// assert_eq!(e.code(), "WRONGTYPE");
/// assert!(e.message().starts_with("Operation"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    code: String,
    message: String,
    /// The position of the failing command in its pipeline or transaction,
    /// when the error came from one.
    pub index: Option<usize>,
}

impl ServerError {
    /// Splits an error line into its code (the first word, when it is made of
    /// upper-case letters, digits, `_` or `-`, as Redis's codes are) and the
    /// message after it. A line without such a word has an empty code.
    pub fn new(line: &str) -> ServerError {
        let (first, rest) = match line.find(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, ""),
        };
        let is_code = !first.is_empty()
            && first
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if is_code {
            ServerError {
                code: first.to_string(),
                message: rest.to_string(),
                index: None,
            }
        } else {
            ServerError {
                code: String::new(),
                message: line.to_string(),
                index: None,
            }
        }
    }

    /// The error code: `ERR`, `WRONGTYPE`, `MOVED`, `NOSCRIPT`, ...
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The text after the code.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn with_index(mut self, index: usize) -> ServerError {
        self.index = Some(index);
        self
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.index {
            write!(f, "command #{}: ", i)?;
        }
        match (self.code.is_empty(), self.message.is_empty()) {
            (true, _) => f.write_str(&self.message),
            (false, true) => f.write_str(&self.code),
            (false, false) => write!(f, "{} {}", self.code, self.message),
        }
    }
}

impl std::error::Error for ServerError {}

/// A reply did not fit the requested type.
///
/// ```
/// use respline::ConversionError;
///
/// let e = ConversionError::new("integer", "bulk string \"abc\"");
/// assert_eq!(e.to_string(), "cannot convert reply: expected integer, found bulk string \"abc\"");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConversionError {
    /// What the conversion needed, for example `"integer"`.
    pub expected: Cow<'static, str>,
    /// A short rendering of what arrived.
    pub found: String,
    /// The position of the command whose reply it was, in its pipeline or
    /// transaction, when the reply came from one.
    pub index: Option<usize>,
}

impl ConversionError {
    /// A conversion error: `expected` names what was needed, `found` shows
    /// what arrived.
    pub fn new(
        expected: impl Into<Cow<'static, str>>,
        found: impl Into<String>,
    ) -> ConversionError {
        ConversionError {
            expected: expected.into(),
            found: found.into(),
            index: None,
        }
    }
}

impl fmt::Display for ConversionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.index {
            write!(f, "command #{}: ", i)?;
        }
        write!(
            f,
            "cannot convert reply: expected {}, found {}",
            self.expected, self.found
        )
    }
}

impl std::error::Error for ConversionError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_stay_small() {
        // `Result<T, Error>` is on every call path; keep the error a few
        // words, with the rare large payloads boxed (the cluster's GaveUp,
        // with its command list, counts and last answer, is the largest).
        assert!(
            std::mem::size_of::<Error>() <= 40,
            "{}",
            std::mem::size_of::<Error>()
        );
        assert_eq!(
            std::mem::size_of::<ProtocolError>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn server_error_codes() {
        let e = ServerError::new("MOVED 3999 127.0.0.1:6381");
        assert_eq!((e.code(), e.message()), ("MOVED", "3999 127.0.0.1:6381"));
        let e = ServerError::new("EXECABORT");
        assert_eq!((e.code(), e.message()), ("EXECABORT", ""));
        let e = ServerError::new("something lower case");
        assert_eq!((e.code(), e.message()), ("", "something lower case"));
        assert_eq!(e.to_string(), "something lower case");
        let e = ServerError::new("ERR boom").with_index(2);
        assert_eq!(e.to_string(), "command #2: ERR boom");
    }

    #[test]
    fn a_pool_timeout_gives_its_figures_and_sent_nothing() {
        let e = Error::PoolTimeout {
            in_use: 8,
            max: 8,
            waited_ms: 1000,
        };
        assert_eq!(
            e.to_string(),
            "pool: no connection free after waiting 1000 ms: 8 of 8 in use (nothing was sent)"
        );
        assert!(e.is_timeout() && !e.is_io());
        assert!(!e.may_have_reached_server());
        assert!(!e.breaks_connection());
    }

    #[test]
    fn timeouts_are_recognised_through_interrupted() {
        let e = Error::Interrupted {
            replies: 3,
            requested: 10,
            source: Box::new(Error::Timeout { operation: "read" }),
        };
        assert!(e.is_timeout());
        assert!(!e.is_io());
        assert!(e.breaks_connection());
        assert_eq!(e.replies_received(), Some(3));
        assert_eq!(
            e.to_string(),
            "request interrupted after 3 of 10 replies: timed out waiting to read"
        );
    }
}
