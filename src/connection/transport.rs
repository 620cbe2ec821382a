//! The bytes under a [`Connection`]: its read buffer, reads and writes
//! within deadlines, and the decoder. Only the door (`door.rs`) calls these;
//! they know nothing of requests.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::{Connection, Wait};
use crate::connect::remaining;
use crate::error::{is_timeout_kind, Error, Result};
use crate::resp::{view_frame, Scanned, Value, ValueRef};

/// The read buffer starts this large (allocated on first use)...
const INITIAL_BUFFER: usize = 64 * 1024;
/// ...and, when a request ends with the buffer empty but larger than this,
/// it shrinks back to `INITIAL_BUFFER`, so one huge reply does not pin its
/// memory for the life of the connection.
const MAX_IDLE_BUFFER: usize = 1024 * 1024;

/// The read buffer: `data[start..end]` holds bytes read but not yet
/// consumed by the decoder. The vector's length is its usable capacity,
/// zero-filled once, so reads need no `unsafe`.
pub(super) struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub(super) fn new() -> ReadBuf {
        ReadBuf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub(super) fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Consumes the next `n` pending bytes and returns them: they stay
    /// valid until the buffer is next written, which needs `&mut self`.
    fn take(&mut self, n: usize) -> &[u8] {
        let start = self.start;
        self.consume(n);
        &self.data[start..start + n]
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

    pub(super) fn shrink_if_idle(&mut self) {
        if self.start == self.end && self.data.len() > MAX_IDLE_BUFFER {
            self.data = vec![0; INITIAL_BUFFER];
            self.start = 0;
            self.end = 0;
        }
    }
}

/// Where [`Connection::next_frame_located`] found the next frame.
pub(super) enum Located {
    /// At the front of the read buffer, this many bytes, checked by the
    /// scan: to be viewed in place.
    Buffered(usize),
    /// Decoded, because the scan leaves this frame to the decoder.
    Decoded(Value),
}

/// What a non-blocking look at an idle connection found.
pub(super) enum Idle {
    /// Nothing, or only RESP3 pushes (now queued).
    Quiet,
    /// The server closed the connection.
    Closed,
    /// Bytes that are neither a push nor part of one.
    Unsolicited(Vec<u8>),
}

impl<S: Read + Write> Connection<S> {
    /// Reads the next complete frame, pushes included. A timeout leaves any
    /// partial frame in the decoder, so a caller that may retry (a
    /// subscriber) loses nothing.
    pub(super) fn next_frame(&mut self, wait: Wait) -> Result<Value> {
        self.read_until(wait, Self::decode_buffered)
    }

    /// Like [`next_frame`](Connection::next_frame), but a frame the scan
    /// takes is left in the read buffer, for a view.
    pub(super) fn next_frame_located(&mut self, wait: Wait) -> Result<Located> {
        self.read_until(wait, Self::locate_buffered)
    }

    /// Reads until `whole` finds what it looks for in the buffer. The
    /// deadline is only computed if a read is needed.
    #[inline(always)]
    fn read_until<T>(
        &mut self,
        wait: Wait,
        mut whole: impl FnMut(&mut Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if let Some(found) = whole(self)? {
                return Ok(found);
            }
            let d = *deadline.get_or_insert_with(|| match wait {
                Wait::Default => self.read_timeout.map(|t| Instant::now() + t),
                Wait::Each(t) => t.and_then(|t| Instant::now().checked_add(t)),
                Wait::Until(d) => Some(d),
            });
            self.read_some(d)?;
        }
    }

    /// Where the next whole frame is, if one is in: checked in the buffer,
    /// or decoded (by the decoder, for what the scan leaves to it).
    #[inline]
    fn locate_buffered(&mut self) -> Result<Option<Located>> {
        if self.decoding || self.decoder.is_mid_reply() {
            return self.decode_located();
        }
        let pending = self.buf.pending();
        if pending.is_empty() {
            return Ok(None);
        }
        match self.scan.scan(pending, self.decoder.limits()) {
            Scanned::Complete(len) => {
                self.scan.reset();
                Ok(Some(Located::Buffered(len)))
            }
            Scanned::Partial => Ok(None),
            Scanned::Decode => {
                self.scan.reset();
                self.decoding = true;
                self.decode_located()
            }
        }
    }

    fn decode_located(&mut self) -> Result<Option<Located>> {
        let value = self.decode_buffered()?;
        if value.is_some() {
            self.decoding = false;
        }
        Ok(value.map(Located::Decoded))
    }

    /// Hands the checked frame of `len` bytes at the front of the buffer to
    /// `f` as a view, then releases it. `None` if it cannot be viewed (a
    /// bug: the scan checked it).
    #[inline]
    pub(super) fn take_buffered<R>(
        &mut self,
        len: usize,
        f: impl FnOnce(ValueRef<'_>) -> R,
    ) -> Option<R> {
        let frame = &self.buf.pending()[..len];
        if matches!(frame[0], b'-' | b'!') {
            self.failover_reply |= is_failover_reply(&view_frame(frame)?.to_value());
        }
        // Released before `f` runs (the bytes stay where they are until the
        // next read), so a panic in `f` leaves the buffer past this reply.
        let frame = self.buf.take(len);
        Some(f(view_frame(frame)?))
    }

    /// The next frame already in the buffer, if a whole one is.
    fn decode_buffered(&mut self) -> Result<Option<Value>> {
        if self.buf.pending().is_empty() {
            return Ok(None);
        }
        let (used, value) = self.decoder.feed(self.buf.pending())?;
        self.buf.consume(used);
        if let Some(v @ (Value::Error(_) | Value::BlobError(_))) = &value {
            self.failover_reply |= is_failover_reply(v);
        }
        Ok(value)
    }

    /// One read into the buffer, within `deadline`.
    fn read_some(&mut self, deadline: Option<Instant>) -> Result<()> {
        loop {
            self.arm_read(deadline)?;
            match self.stream.read(self.buf.spare()) {
                Ok(0) => {
                    return Err(eof(
                        if self.decoder.is_mid_reply() || !self.buf.pending().is_empty() {
                            "the server closed the connection in the middle of a reply"
                        } else {
                            "the server closed the connection before replying"
                        },
                    ))
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
    /// when the stream takes everything at once. `accepted` counts the bytes
    /// the stream took, also when it fails part way.
    pub(super) fn write_all(&mut self, mut bytes: &[u8], accepted: &mut usize) -> Result<()> {
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        while !bytes.is_empty() {
            self.arm_write(deadline)?;
            match self.stream.write(bytes) {
                Ok(0) => return Err(write_zero()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    *accepted += n;
                }
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

    /// Writes all of `bytes` with the socket non-blocking: whenever the
    /// socket will not take more, the replies already waiting are read into
    /// `early` (pushes are queued), so a server that stops reading until its
    /// replies are read cannot deadlock the writer. Without socket hooks this
    /// is a plain [`write_all`](Connection::write_all).
    pub(super) fn write_interleaved(
        &mut self,
        bytes: &[u8],
        early: &mut VecDeque<Value>,
        accepted: &mut usize,
    ) -> Result<()> {
        let hooks = match self.hooks {
            Some(h) => h,
            None => return self.write_all(bytes, accepted),
        };
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        (hooks.set_nonblocking)(&self.stream, true).map_err(Error::Io)?;
        let result = self.write_nonblocking(bytes, early, deadline, accepted);
        let restored = (hooks.set_nonblocking)(&self.stream, false).map_err(Error::Io);
        result.and(restored)
    }

    fn write_nonblocking(
        &mut self,
        mut bytes: &[u8],
        early: &mut VecDeque<Value>,
        deadline: Option<Instant>,
        accepted: &mut usize,
    ) -> Result<()> {
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(write_zero()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    *accepted += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket is full: take in whatever replies are
                    // waiting, so the server can go on writing them.
                    if !self.read_available(early)? {
                        if deadline.map_or(false, |d| Instant::now() >= d) {
                            return Err(Error::Timeout { operation: "write" });
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                Err(e) => return Err(Error::Io(e)),
            }
        }
        self.stream.flush().map_err(Error::Io)
    }

    /// Reads what the (non-blocking) stream has now and decodes the complete
    /// replies into `out`, pushes into the push queue. False if nothing was
    /// waiting.
    fn read_available(&mut self, out: &mut VecDeque<Value>) -> Result<bool> {
        let n = loop {
            match self.stream.read(self.buf.spare()) {
                Ok(0) => {
                    return Err(eof(
                        "the server closed the connection while a request was written",
                    ))
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(Error::Io(e)),
            }
        };
        self.buf.filled(n);
        while let Some(v) = self.decode_buffered()? {
            if is_push(&v) {
                self.queue_push(v)?;
            } else {
                out.push_back(v);
            }
        }
        Ok(true)
    }

    /// Looks at an idle connection without blocking: bytes already buffered,
    /// and with socket hooks, bytes sitting unread in the socket. Complete
    /// pushes are queued (within the push limit, so a flood cannot grow
    /// memory).
    pub(super) fn look_idle(&mut self) -> Result<Idle> {
        let idle = self.classify_buffered()?;
        let hooks = match (self.hooks, &idle) {
            (Some(h), Idle::Quiet) => h,
            _ => return Ok(idle),
        };
        (hooks.set_nonblocking)(&self.stream, true).map_err(Error::Io)?;
        let idle = self.read_idle();
        (hooks.set_nonblocking)(&self.stream, false).map_err(Error::Io)?;
        idle
    }

    /// Reads a non-blocking socket until it has nothing more, classifying
    /// after each read.
    fn read_idle(&mut self) -> Result<Idle> {
        loop {
            match self.stream.read(self.buf.spare()) {
                Ok(0) => return Ok(Idle::Closed),
                Ok(n) => {
                    self.buf.filled(n);
                    match self.classify_buffered()? {
                        Idle::Quiet => {}
                        other => return Ok(other),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Idle::Quiet),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Takes complete pushes out of the buffer; anything else there is
    /// unsolicited.
    fn classify_buffered(&mut self) -> Result<Idle> {
        while let Some(&first) = self.buf.pending().first() {
            if !self.decoder.is_mid_reply() && first != b'>' && first != b'|' {
                return Ok(Idle::Unsolicited(self.buf.pending().to_vec()));
            }
            match self.decode_buffered()? {
                Some(v) if is_push(&v) => self.queue_push(v)?,
                Some(v) => return Ok(Idle::Unsolicited(v.to_string().into_bytes())),
                None => break,
            }
        }
        Ok(Idle::Quiet)
    }
}

/// An error reply coded `READONLY`, `MASTERDOWN` or `LOADING`: the server
/// is a replica now, or has lost its primary, or is loading its data.
#[cold]
fn is_failover_reply(v: &Value) -> bool {
    let line: &[u8] = match v {
        Value::Error(e) => e.as_bytes(),
        Value::BlobError(b) => b,
        _ => return false,
    };
    let code = line.split(|&b| b == b' ').next().unwrap_or_default();
    matches!(code, b"READONLY" | b"MASTERDOWN" | b"LOADING")
}

/// True for a RESP3 push (with or without attributes).
pub(super) fn is_push(v: &Value) -> bool {
    matches!(v.without_attributes(), Value::Push(_))
}

fn eof(what: &'static str) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, what))
}

fn write_zero() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::WriteZero,
        "the stream accepted no more bytes",
    ))
}

fn round_down(d: Duration) -> Duration {
    if d >= Duration::from_millis(1) {
        Duration::from_millis(d.as_millis() as u64)
    } else {
        d
    }
}
