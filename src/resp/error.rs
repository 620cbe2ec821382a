//! [`ProtocolError`]: the peer broke the protocol or a [`Limits`](super::Limits) bound.

use std::borrow::Cow;
use std::fmt;

/// What kind of protocol failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolErrorKind {
    /// The bytes are not valid RESP.
    Malformed,
    /// Valid RESP that breaks one of the configured [`Limits`](super::Limits).
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
/// let err = respline::resp::decode(b"@foo\r\n", &respline::resp::Limits::default()).unwrap_err();
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
