//! One error type for everything that can go wrong, and what each failure
//! means for the connection.

use std::borrow::Cow;
use std::fmt;
use std::io;

/// A specialised `Result` for respline.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, one variant per kind of failure.
///
/// Two kinds leave the connection usable: [`Error::Server`] (the server
/// answered with an error reply) and [`Error::Conversion`] (the reply did not
/// fit the requested type), together with the transaction outcomes
/// [`Error::ExecAbort`] and [`Error::WatchAborted`]. Every other kind that
/// happens while a request is in flight marks the connection broken
/// ([`Error::breaks_connection`]): it refuses further use with
/// [`Error::Broken`] until [`reconnect`](crate::Connection::reconnect), so a
/// late reply can never be handed to the wrong command.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The stream failed: connection refused or reset, end of stream in the
    /// middle of a reply, broken pipe.
    Io(io::Error),
    /// A deadline passed before the operation finished.
    Timeout {
        /// What was being waited for: `"connect"`, `"read"` or `"write"`.
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
    /// use; the text names that failure.
    Broken {
        /// The failure that broke the connection.
        cause: String,
    },
    /// The server discarded a transaction (`EXECABORT`) because commands
    /// failed to queue; each error carries the index of its command.
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
}

impl Error {
    /// True if the failure was a timeout, directly or inside
    /// [`Error::Interrupted`].
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Io(e) => is_timeout_kind(e.kind()),
            Error::Interrupted { source, .. } => source.is_timeout(),
            _ => false,
        }
    }

    /// True if the failure was an I/O error (not a timeout), directly or
    /// inside [`Error::Interrupted`].
    pub fn is_io(&self) -> bool {
        match self {
            Error::Io(e) => !is_timeout_kind(e.kind()),
            Error::Interrupted { source, .. } => source.is_io(),
            _ => false,
        }
    }

    /// True if this failure leaves the connection broken. Server errors,
    /// conversion errors, `EXECABORT` and a WATCH abort do not; I/O errors,
    /// timeouts and protocol errors during a request do.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::Timeout { .. }
                | Error::Protocol(_)
                | Error::Broken { .. }
                | Error::Interrupted { .. }
        )
    }

    /// The server error, if this is one (also inside [`Error::Interrupted`]).
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) => Some(e),
            Error::Interrupted { source, .. } => source.server_error(),
            _ => None,
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

    pub(crate) fn conversion(expected: impl Into<Cow<'static, str>>, found: String) -> Error {
        Error::Conversion(Box::new(ConversionError {
            expected: expected.into(),
            found,
        }))
    }
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
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Server(e) => Some(&**e),
            Error::Conversion(e) => Some(&**e),
            Error::Interrupted { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversionError {
    /// What the conversion needed, for example `"integer"`.
    pub expected: Cow<'static, str>,
    /// A short rendering of what arrived.
    pub found: String,
}

impl fmt::Display for ConversionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot convert reply: expected {}, found {}",
            self.expected, self.found
        )
    }
}

impl std::error::Error for ConversionError {}

/// What kind of protocol failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolErrorKind {
    /// The bytes are not valid RESP.
    Malformed,
    /// Valid RESP that breaks one of the configured [`Limits`](crate::Limits).
    LimitExceeded,
    /// Valid RESP that no request asked for: unsolicited data, or a reply of
    /// the wrong shape for the protocol step (for example, an `EXEC` reply
    /// whose length does not match the queued commands).
    Unexpected,
}

/// The peer sent something that breaks the protocol. The message says what
/// was expected, what arrived, and at which byte of the reply.
///
/// ```
/// let err = respline::decode(b"@foo\r\n", &respline::Limits::default()).unwrap_err();
/// assert_eq!(err.offset(), 0);
/// assert_eq!(
///     err.to_string(),
///     "protocol error at byte 0 of the reply: expected a RESP type byte, found '@' (0x40)"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(Box<ProtocolErrorInner>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct ProtocolErrorInner {
    kind: ProtocolErrorKind,
    offset: usize,
    expected: Cow<'static, str>,
    found: String,
}

impl ProtocolError {
    pub(crate) fn new(
        kind: ProtocolErrorKind,
        offset: usize,
        expected: impl Into<Cow<'static, str>>,
        found: impl Into<String>,
    ) -> ProtocolError {
        ProtocolError(Box::new(ProtocolErrorInner {
            kind,
            offset,
            expected: expected.into(),
            found: found.into(),
        }))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ProtocolErrorKind {
        self.0.kind
    }

    /// The byte offset, from the start of the reply, where the problem was
    /// found.
    pub fn offset(&self) -> usize {
        self.0.offset
    }

    /// What the decoder expected at that offset.
    pub fn expected(&self) -> &str {
        &self.0.expected
    }

    /// What it found there.
    pub fn found(&self) -> &str {
        &self.0.found
    }

    pub(crate) fn shifted(mut self, by: usize) -> ProtocolError {
        self.0.offset += by;
        self
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.0.kind {
            ProtocolErrorKind::Malformed => "protocol error",
            ProtocolErrorKind::LimitExceeded => "reply limit exceeded",
            ProtocolErrorKind::Unexpected => "unexpected reply",
        };
        write!(
            f,
            "{} at byte {} of the reply: expected {}, found {}",
            what, self.0.offset, self.0.expected, self.0.found
        )
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_stay_small() {
        // `Result<T, Error>` is on every call path; keep the error two words
        // or so, with the rare large payloads boxed.
        assert!(
            std::mem::size_of::<Error>() <= 32,
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
