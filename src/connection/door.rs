//! The one door: the only code that changes a connection's request state.
//! See the module doc of `connection` for the rule and the interface.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::panic::{self, AssertUnwindSafe};

use super::transport::{is_push, Idle, Located};
use super::{Connection, State, Wait};
use crate::error::{Error, Result};
use crate::resp::{write_quoted, ProtocolError, ProtocolErrorKind, Value, ValueRef};

impl<S: Read + Write> Connection<S> {
    /// Writes `bytes` (holding `replies` commands), then reads exactly
    /// `replies` replies, handing each to `each` with its index: the request
    /// most features need, built on the steps below.
    ///
    /// If `each` returns an error, the remaining replies are still read (so
    /// the connection stays in step) and the first such error is returned;
    /// a protocol error from `each` (a reply of the wrong shape for its
    /// command) then also breaks the connection. A failure while sending or
    /// reading breaks it and, for more than one reply, is wrapped in
    /// [`Error::Interrupted`].
    pub(crate) fn request(
        &mut self,
        bytes: &[u8],
        replies: usize,
        wait: Wait,
        mut each: impl FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        self.exchange(bytes, replies, wait, |conn, i| {
            conn.receive(wait).map(|reply| each(i, reply))
        })
    }

    /// [`request`](Connection::request), handing each reply to `each` as a
    /// view into the read buffer (see [`receive_with`](Connection::receive_with)).
    pub(crate) fn request_views(
        &mut self,
        bytes: &[u8],
        replies: usize,
        wait: Wait,
        mut each: impl FnMut(usize, ValueRef<'_>) -> Result<()>,
    ) -> Result<()> {
        self.exchange(bytes, replies, wait, |conn, i| {
            conn.receive_with(wait, |reply| each(i, reply))
        })
    }

    /// The exchange behind both: `take(conn, i)` reads reply `i` and hands
    /// it on (the outer error: reading failed; the inner one: the caller's).
    fn exchange(
        &mut self,
        bytes: &[u8],
        replies: usize,
        wait: Wait,
        mut take: impl FnMut(&mut Self, usize) -> Result<Result<()>>,
    ) -> Result<()> {
        self.begin()?;
        self.send(bytes, replies)
            .map_err(|e| interrupted(e, 0, replies))?;
        let mut first_error = None;
        for i in 0..replies {
            // A panic in the caller's code (a conversion, a callback) comes
            // after reply `i` was read and released: the rest are read and
            // dropped, so the connection is in step when the panic goes on.
            let taken = match panic::catch_unwind(AssertUnwindSafe(|| take(self, i))) {
                Ok(taken) => taken,
                Err(payload) => {
                    self.drain(i + 1, replies, wait);
                    panic::resume_unwind(payload);
                }
            };
            match taken {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(interrupted(e, i, replies)),
            }
        }
        self.end();
        match first_error {
            Some(e @ Error::Protocol(_)) => Err(self.fail(e)),
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads and drops replies `from..to` of the open exchange and closes
    /// it (a failure breaks the connection, as any failure mid-exchange).
    fn drain(&mut self, from: usize, to: usize, wait: Wait) {
        for _ in from..to {
            if self.receive(wait).is_err() {
                return;
            }
        }
        self.end();
    }

    /// Opens an exchange: the connection must be ready (not broken, no
    /// exchange open) and idle. A connection found closed by the server, or
    /// holding bytes nobody asked for, has not been sent anything yet: it is
    /// replaced by a fresh one from its recipe when that is allowed (see
    /// `ConnectOptions::retry_unsent`), else the error is
    /// [`Error::NotSent`]. (A Sentinel-managed primary's connection is
    /// replaced through a lookup, by one to the primary as it is now.)
    ///
    /// The look is a snapshot: bytes a server sends unasked after it and
    /// before the reply cannot be told from the reply (no client can), but
    /// a closed connection or stray bytes that arrived while idle are
    /// always found here, before anything is written.
    pub(crate) fn begin(&mut self) -> Result<()> {
        self.ensure_ready()?;
        if let Some(e) = self.idle_problem() {
            self.break_for(&e);
            self.replace_unsent(e)?;
            // Once only: a fresh connection that is no better fails.
            if let Some(e) = self.idle_problem() {
                self.break_for(&e);
                return Err(not_sent(e));
            }
        }
        self.state = State::Busy {
            owed: 0,
            written: false,
        };
        Ok(())
    }

    /// Why the idle connection cannot take a request, if it cannot.
    fn idle_problem(&mut self) -> Option<Error> {
        match self.look_idle() {
            Ok(Idle::Quiet) => None,
            Ok(Idle::Closed) => Some(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server had closed the connection",
            ))),
            Ok(Idle::Unsolicited(bytes)) => Some(unsolicited(&bytes)),
            Err(e) => Some(e),
        }
    }

    /// Writes `bytes`, which hold `replies` commands, in the open exchange.
    pub(crate) fn send(&mut self, bytes: &[u8], replies: usize) -> Result<()> {
        let mut accepted = 0;
        let result = self.write_all(bytes, &mut accepted);
        self.after_write(result, accepted, replies)
    }

    /// Like [`send`](Connection::send), but while the socket will not take
    /// more, the replies already waiting are read into `early`, in order, so
    /// a large write cannot deadlock against a server waiting for its
    /// replies to be read. Each reply put in `early` is counted as received.
    pub(crate) fn send_interleaved(
        &mut self,
        bytes: &[u8],
        replies: usize,
        early: &mut VecDeque<Value>,
    ) -> Result<()> {
        let mut accepted = 0;
        let before = early.len();
        let result = self.write_interleaved(bytes, early, &mut accepted);
        // Replies read early may answer the commands being written too.
        let received = early.len() - before;
        if let State::Busy { owed, .. } = self.state {
            if received > owed + replies {
                let e = more_replies_than_requests(received, owed + replies);
                return Err(self.fail(e));
            }
        }
        self.after_write(result, accepted, replies)?;
        if let State::Busy { owed, .. } = &mut self.state {
            *owed -= received;
        }
        Ok(())
    }

    /// Reads the next reply of the open exchange (RESP3 pushes are queued,
    /// never returned).
    #[inline]
    pub(crate) fn receive(&mut self, wait: Wait) -> Result<Value> {
        loop {
            let frame = match self.next_frame(wait) {
                Ok(v) => v,
                Err(e) => return Err(self.fail(e)),
            };
            if is_push(&frame) {
                if let Err(e) = self.queue_push(frame) {
                    return Err(self.fail(e));
                }
                continue;
            }
            if let State::Busy { owed, .. } = &mut self.state {
                *owed = owed.saturating_sub(1);
            }
            return Ok(frame);
        }
    }

    /// Reads the next reply of the open exchange and hands it to `f` as a
    /// view: into the read buffer when the frame is there whole and the scan
    /// takes it (no copy), or into the decoded [`Value`] otherwise (pushes
    /// are queued, never handed over). The bytes are released once `f`
    /// returns.
    #[inline]
    pub(crate) fn receive_with<R>(
        &mut self,
        wait: Wait,
        f: impl FnOnce(ValueRef<'_>) -> R,
    ) -> Result<R> {
        loop {
            let next = match self.next_frame_located(wait) {
                Ok(next) => next,
                Err(e) => return Err(self.fail(e)),
            };
            let value = match next {
                Located::Buffered(len) => {
                    self.count_received();
                    return match self.take_buffered(len, f) {
                        Some(r) => Ok(r),
                        None => Err(self.fail(unviewable())),
                    };
                }
                Located::Decoded(v) => v,
            };
            if is_push(&value) {
                if let Err(e) = self.queue_push(value) {
                    return Err(self.fail(e));
                }
                continue;
            }
            self.count_received();
            return Ok(f(value.view()));
        }
    }

    /// One more reply of the open exchange was read.
    #[inline]
    fn count_received(&mut self) {
        if let State::Busy { owed, .. } = &mut self.state {
            *owed = owed.saturating_sub(1);
        }
    }

    /// Reads the next frame of any kind, pushes included, for an exchange
    /// that is not one reply per command (subscribed mode). When `patient`,
    /// a timeout is `Ok(None)` and leaves the connection usable (a partial
    /// frame stays in the decoder for the next call); otherwise it breaks
    /// it.
    pub(crate) fn receive_frame(&mut self, wait: Wait, patient: bool) -> Result<Option<Value>> {
        match self.next_frame(wait) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Timeout { .. }) if patient => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Closes the exchange: the connection is ready again if every reply
    /// owed was read, and broken otherwise.
    pub(crate) fn end(&mut self) {
        match self.state {
            State::Busy { owed: 0, .. } => {
                self.state = State::Ready;
                self.buf.shrink_if_idle();
            }
            State::Busy { owed, .. } => {
                self.state = State::Broken(format!(
                    "{} repl{} left unread",
                    owed,
                    if owed == 1 { "y was" } else { "ies were" }
                ))
            }
            _ => {}
        }
    }

    /// Queues a RESP3 push for `take_pushes`, within `Limits::max_queued_pushes`.
    pub(crate) fn queue_push(&mut self, push: Value) -> Result<()> {
        let max = self.decoder.limits().max_queued_pushes;
        if self.pushes.len() >= max {
            return Err(queue_full(
                max,
                "queued RESP3 pushes (take them with take_pushes)",
            ));
        }
        self.pushes.push_back(push);
        Ok(())
    }

    /// Marks whether keys are WATCHed on the server: while they are, the
    /// connection is never silently replaced (the WATCH would be lost).
    pub(crate) fn set_watching(&mut self, watching: bool) {
        self.watching = watching;
    }

    /// Records that a command sent by hand may have changed the session
    /// (`SELECT`, `AUTH`, `CLIENT ...`): the connection no longer matches its
    /// recipe and is never silently replaced.
    pub(crate) fn note_session_change(&mut self) {
        self.diverged = true;
    }

    /// Handles the end of a write: counts the replies owed, or breaks the
    /// connection, saying whether any byte of the exchange left.
    fn after_write(&mut self, result: Result<()>, accepted: usize, replies: usize) -> Result<()> {
        let written_before = match &mut self.state {
            State::Busy { owed, written } => {
                let before = *written;
                *written |= accepted > 0;
                if result.is_ok() {
                    *owed += replies;
                }
                before
            }
            _ => true,
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if !written_before && accepted == 0 => {
                let e = self.fail(e);
                Err(Error::NotSent {
                    source: Box::new(e),
                })
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Replaces a connection found unusable before anything was sent, if
    /// its recipe allows; otherwise returns the reason, marked not sent.
    fn replace_unsent(&mut self, e: Error) -> Result<()> {
        let recipe = match &self.recipe {
            // (The connection is broken by now: `is_reusable` would say no.)
            Some(r) if r.options.retry_unsent && !self.diverged && !self.watching => r.clone(),
            _ => return Err(not_sent(e)),
        };
        let fresh = recipe.open()?;
        // Pushes that arrived before are the caller's: they move over.
        let old = std::mem::replace(self, fresh);
        self.pushes = old.pushes;
        Ok(())
    }

    fn ensure_ready(&self) -> Result<()> {
        match &self.state {
            State::Ready => Ok(()),
            State::Busy { .. } => Err(Error::Broken {
                cause: "an earlier request was abandoned before all its replies were read \
                        (a panic in a callback?)"
                    .into(),
            }),
            State::Broken(cause) => Err(Error::Broken {
                cause: cause.clone(),
            }),
        }
    }
}

impl<S> Connection<S> {
    /// Breaks the connection for `e` and hands `e` back: for a failure in
    /// the middle of an exchange, or a reply a feature found to break the
    /// protocol.
    pub(crate) fn fail(&mut self, e: Error) -> Error {
        self.break_for(&e);
        e
    }

    /// Breaks the connection because its server-side state is unknown (a
    /// WATCH left standing by a panic, say). A broken connection keeps its
    /// first cause.
    pub(crate) fn poison(&mut self, cause: String) {
        if !matches!(self.state, State::Broken(_)) {
            self.state = State::Broken(cause);
        }
    }

    /// Why the connection is broken, if it is; an open exchange (a
    /// subscriber holding the connection) is not a failure.
    pub(crate) fn broken_cause(&self) -> Option<&str> {
        match &self.state {
            State::Broken(cause) => Some(cause),
            _ => None,
        }
    }

    fn break_for(&mut self, e: &Error) {
        self.state = State::Broken(e.to_string());
    }
}

/// `e`, for a request of `requested` replies that failed after `got`:
/// wrapped in [`Error::Interrupted`] when more than one reply was asked
/// for and something may have been sent.
fn interrupted(e: Error, got: usize, requested: usize) -> Error {
    if requested <= 1 || !e.may_have_reached_server() {
        return e;
    }
    Error::Interrupted {
        replies: got,
        requested,
        source: Box::new(e),
    }
}

fn not_sent(e: Error) -> Error {
    match e {
        Error::Broken { .. } | Error::NotSent { .. } => e,
        e => Error::NotSent {
            source: Box::new(e),
        },
    }
}

/// The limit error for a queue of frames the caller has not taken yet
/// (`what` names them) that reached `max`.
pub(crate) fn queue_full(max: usize, what: &str) -> Error {
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::LimitExceeded,
        0,
        format!("at most {} {}", max, what),
        "one more",
    ))
}

fn more_replies_than_requests(received: usize, owed: usize) -> Error {
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::Unexpected,
        0,
        format!("at most {} replies for the commands written", owed),
        format!("{} (unsolicited data)", received),
    ))
}

/// A frame the scan accepted that could not be viewed: a bug, reported as a
/// protocol error rather than a panic.
#[cold]
fn unviewable() -> Error {
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::Unexpected,
        0,
        "a frame the scan had checked",
        "one that could not be read back",
    ))
}

fn unsolicited(bytes: &[u8]) -> Error {
    let mut shown = String::new();
    let _ = write_quoted(&mut shown, &bytes[..bytes.len().min(32)]);
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::Unexpected,
        0,
        "nothing from the server before a request (RESP3 pushes aside)",
        format!("unsolicited data {}", shown),
    ))
}

/// True if a command, given as its encoded bytes, may change the
/// connection's session so that a fresh connection from the same recipe
/// would not be the same: the database, the user, the protocol, the client
/// name or tracking, a transaction or WATCH, subscribed or monitor mode.
/// `CLIENT` counts unless its subcommand only reads or acts on others.
pub(crate) fn changes_session(command: &[u8]) -> bool {
    let mut args = Args::new(command);
    match args.next() {
        Some(name) => is_session_command(name, args.next()),
        None => true,
    }
}

/// [`changes_session`] for a command already split into its name and first
/// argument.
pub(crate) fn is_session_command(name: &[u8], first: Option<&[u8]>) -> bool {
    let candidates: &[&[u8]] = match name.len() {
        4 => &[b"AUTH"],
        5 => &[b"HELLO", b"MULTI", b"WATCH", b"RESET"],
        6 if name.eq_ignore_ascii_case(b"CLIENT") => {
            return !first.map_or(false, client_reads_only)
        }
        6 => &[b"SELECT"],
        7 => &[b"MONITOR"],
        8 => &[b"READONLY"],
        9 => &[b"SUBSCRIBE", b"READWRITE"],
        10 => &[b"PSUBSCRIBE", b"SSUBSCRIBE"],
        _ => return false,
    };
    candidates.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// `CLIENT` subcommands that leave this connection's session as it was.
fn client_reads_only(subcommand: &[u8]) -> bool {
    const READS: [&[u8]; 10] = [
        b"ID",
        b"INFO",
        b"LIST",
        b"GETNAME",
        b"KILL",
        b"PAUSE",
        b"UNPAUSE",
        b"UNBLOCK",
        b"GETREDIR",
        b"TRACKINGINFO",
    ];
    READS.iter().any(|r| r.eq_ignore_ascii_case(subcommand))
}

/// The arguments of one encoded command, `*N\r\n$L\r\n...\r\n...`.
struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    fn new(command: &'a [u8]) -> Args<'a> {
        let start = command
            .iter()
            .position(|&b| b == b'\n')
            .map_or(command.len(), |i| i + 1);
        Args {
            rest: &command[start..],
        }
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len_end = self.rest.iter().position(|&b| b == b'\r')?;
        let len =
            usize::try_from(crate::resp::number::parse_u64(self.rest.get(1..len_end)?)?).ok()?;
        let arg = self.rest.get(len_end + 2..)?.get(..len)?;
        self.rest = self.rest.get(len_end + 4 + len..).unwrap_or_default();
        Some(arg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_commands_are_recognised_by_name() {
        let enc = |args: &[&str]| {
            let mut out = Vec::new();
            crate::resp::encode_command(&mut out, args);
            out
        };
        assert!(changes_session(&enc(&["select", "2"])));
        assert!(changes_session(&enc(&["CLIENT", "TRACKING", "on"])));
        assert!(!changes_session(&enc(&["SET", "select", "x"])));
        assert!(!changes_session(&enc(&["SELECTX"])));
        assert!(changes_session(b"garbage"));
        assert!(!changes_session(&enc(&["client", "id"])));
        assert!(changes_session(&enc(&["CLIENT", "SETNAME", "x"])));
        assert!(changes_session(&enc(&["CLIENT"])));
        assert!(changes_session(&enc(&["Watch", "k"])));
    }
}
