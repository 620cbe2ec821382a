//! bytes → [`Value`]: a strict, incremental RESP2/RESP3 decoder with limits.
//!
//! [`decode`] is the standalone entry point: give it a byte slice, and it
//! answers with a complete value and the number of bytes it used
//! (`Ok(Some((value, used)))`), with "need more bytes" (`Ok(None)`), or with a
//! [`ProtocolError`]. RESP2 and RESP3 come through the same entry point.
//!
//! [`Decoder`] is the same machine kept alive between reads, which is what a
//! connection uses. It never goes back over bytes it has already accepted:
//!
//! * every element that is complete is moved out of the input into a frame
//!   on the decoder's own stack (one frame per open aggregate), and
//!   [`Decoder::feed`] reports those bytes as consumed, so the caller drops
//!   them. An array of a million small elements arriving in 4 KiB pieces is
//!   scanned once, not once per piece;
//! * an incomplete bulk string costs one look at its header per read: the
//!   payload is only checked for length until all of it has arrived;
//! * an incomplete line remembers how far it was scanned, so a long line
//!   arriving slowly is not rescanned from its start.
//!
//! The work per reply is therefore linear in its size, however it is split.
//! The decoder is iterative, so nesting costs heap (one frame per level),
//! never stack; [`Limits::max_depth`] still caps it, because a deep [`Value`]
//! is dropped recursively.

use std::borrow::Cow;

use super::error::{ProtocolError, ProtocolErrorKind};
use super::number::{self, Form, Int};
use super::value::Value;

/// Limits on what a reply may contain. Breaking one is a protocol error of
/// kind [`LimitExceeded`](ProtocolErrorKind::LimitExceeded), and the
/// connection that met it is broken.
///
/// None of these limits is used to size an allocation: memory grows only as
/// bytes arrive.
///
/// ```
/// let limits = respline::resp::Limits::default();
/// assert_eq!(limits.max_depth, 1024);
/// assert_eq!(limits.max_bulk_len, 512 * 1024 * 1024);
/// assert_eq!(limits.max_aggregate_len, u32::MAX as usize);
/// assert_eq!(limits.max_line_len, 1024 * 1024);
/// assert_eq!(limits.max_queued_pushes, 100_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How deeply aggregates (array, map, set, push, attribute, in any mix)
    /// may nest. A top-level array is depth 1. Defaults to 1024, as in
    /// hiredis: deep enough for any Lua or module reply, shallow enough that
    /// the nested [`Value`] drops safely on a 2 MiB thread stack.
    pub max_depth: usize,
    /// The longest bulk string, blob error, verbatim string or streamed
    /// string, in bytes. Defaults to 512 MiB, Redis's own
    /// `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// The most elements one aggregate may declare (pairs, for maps and
    /// attributes). Defaults to 2^32 − 1.
    pub max_aggregate_len: usize,
    /// The longest line without a CRLF (simple strings, errors, doubles, big
    /// numbers), in bytes. Defaults to 1 MiB. Length and integer lines are
    /// always limited to 20 characters, the longest i64.
    pub max_line_len: usize,
    /// The most RESP3 pushes (or, on a [`Subscriber`](crate::Subscriber),
    /// messages) a connection keeps while nobody takes them. One more breaks
    /// the connection with a limit error rather than grow memory without
    /// bound. Defaults to 100,000. The decoder itself does not use it.
    pub max_queued_pushes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 1024,
            max_bulk_len: 512 * 1024 * 1024,
            max_aggregate_len: u32::MAX as usize,
            max_line_len: 1024 * 1024,
            max_queued_pushes: 100_000,
        }
    }
}

/// Decodes one value from the start of `buf`.
///
/// Returns the value and the number of bytes it used, `Ok(None)` if `buf` is
/// a strict prefix of a value (more bytes are needed), or the protocol error.
/// To decode a reply that arrives in pieces, prefer [`Decoder`], which does
/// not rescan what it has already seen.
///
/// ```
/// use respline::resp::{decode, Limits};
/// use respline::Value;
///
/// let limits = Limits::default();
/// let wire = b"*2\r\n$3\r\nfoo\r\n:42\r\n+OK\r\n";
/// let (value, used) = decode(wire, &limits).unwrap().unwrap();
/// assert_eq!(value, Value::Array(vec![Value::BulkString(b"foo".to_vec()), Value::Integer(42)]));
/// assert_eq!(&wire[used..], b"+OK\r\n");
/// assert_eq!(decode(&wire[..7], &limits).unwrap(), None); // need more bytes
/// assert!(decode(b"$-2\r\n", &limits).is_err());
/// ```
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, ProtocolError> {
    // What a fresh decoder's `feed` would do first, without building one.
    if let Some((value, used)) = quick_scalar(buf, limits) {
        return Ok(Some((value, used)));
    }
    let mut decoder = Decoder::new(limits.clone());
    match decoder.feed(buf)? {
        (used, Some(value)) => Ok(Some((value, used))),
        (_, None) => Ok(None),
    }
}

/// An incremental decoder that keeps partial replies between reads.
///
/// Feed it the bytes not yet consumed; it answers with how many of them it
/// consumed and, once a whole reply is in, the reply. The caller must drop
/// the consumed bytes and, next time, pass what follows them (with any new
/// bytes appended).
///
/// ```
/// use respline::resp::{Decoder, Limits};
/// use respline::Value;
///
/// let mut decoder = Decoder::new(Limits::default());
/// let mut pending: Vec<u8> = Vec::new();
/// let mut replies = Vec::new();
/// for piece in [&b"*3\r\n:1\r"[..], b"\n:2\r\n", b":3\r\n+O", b"K\r\n"] {
///     pending.extend_from_slice(piece);
///     loop {
///         let (used, reply) = decoder.feed(&pending).unwrap();
///         pending.drain(..used);
///         match reply {
///             Some(v) => replies.push(v),
///             None => break,
///         }
///     }
/// }
/// assert_eq!(replies.len(), 2);
/// assert_eq!(replies[1], Value::SimpleString("OK".into()));
/// ```
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// Open aggregates, innermost last.
    stack: Vec<Frame>,
    /// Bytes of the current reply consumed by earlier calls (for offsets).
    offset: usize,
    /// How far into the pending line a previous call scanned without finding
    /// its end.
    scanned: usize,
    /// A protocol error is final: every later call repeats it.
    failed: Option<ProtocolError>,
    /// Tests only: no fast path at all, every element through
    /// [`next_token`](Decoder::next_token), to check the fast paths against.
    #[cfg(test)]
    general_only: bool,
}

#[derive(Debug)]
enum Frame {
    /// Array, set or push; `remaining` is `None` when streamed (`*?`).
    List {
        kind: ListKind,
        remaining: Option<usize>,
        items: Vec<Value>,
        /// The capacity `items` is to get once its first elements are in
        /// (see [`stage_list`]); 0 once it has it.
        deferred: usize,
    },
    /// Map or attribute pairs; `remaining` counts pairs.
    Pairs {
        attribute: bool,
        remaining: Option<usize>,
        items: Vec<(Value, Value)>,
        key: Option<Value>,
    },
    /// An attribute whose pairs are complete, waiting for its value.
    Attributed { attributes: Vec<(Value, Value)> },
    /// A streamed string (`$?`), collecting `;` chunks.
    Chunks { data: Vec<u8> },
}

#[derive(Clone, Copy, Debug)]
enum ListKind {
    Array,
    Set,
    Push,
}

/// One step of the parse: what the next element at the cursor is.
enum Token {
    Value(Value),
    Open(Frame),
    /// `.`: the end of a streamed aggregate.
    End,
    /// `;n`: one chunk of a streamed string (the final one is empty).
    Chunk(Vec<u8>),
}

/// The longest length or integer line: `-9223372036854775808`.
const MAX_NUMBER_LEN: usize = 20;

/// The longest simple string the fast path scans for; longer ones take the
/// general path, which remembers how far it scanned.
const QUICK_LINE: usize = 128;

/// The fast path for the commonest elements: a nil, or a `+`, `:` or `$`
/// element with a short header, wholly present in `rest`. `None` sends the caller
/// down the general path ([`Decoder::next_token`]), which also reports every
/// error; this only accepts what the general path accepts, and gives the same
/// value. Its scan is bounded by [`QUICK_LINE`], so a long line arriving
/// slowly is not rescanned here.
#[inline(always)]
fn quick_scalar(rest: &[u8], limits: &Limits) -> Option<(Value, usize)> {
    match *rest.first()? {
        b'$' => quick_bulk(rest, limits),
        b'+' => {
            // The commonest reply of all, in one comparison.
            if rest.get(..5) == Some(&b"+OK\r\n"[..]) && limits.max_line_len >= 2 {
                return Some((Value::SimpleString(Cow::Borrowed("OK")), 5));
            }
            let cr = short_line(rest, limits.max_line_len.min(QUICK_LINE))?;
            Some((Value::SimpleString(simple_string(&rest[1..cr])), cr + 2))
        }
        b':' => {
            let (negative, magnitude, used) = number::quick_number(rest, true)?;
            let value = if negative {
                if magnitude > 1 << 63 {
                    return None;
                }
                // 2^63 wraps to i64::MIN, which is its own negation.
                (magnitude as i64).wrapping_neg()
            } else {
                if magnitude > i64::MAX as u64 {
                    return None;
                }
                magnitude as i64
            };
            Some((Value::Integer(value), used))
        }
        // Nil: RESP3's `_` and RESP2's null array (the null bulk string is
        // `quick_bulk`'s).
        b'_' if rest.get(1..3) == Some(b"\r\n") => Some((Value::Nil, 3)),
        b'*' if rest.get(1..5) == Some(b"-1\r\n") => Some((Value::Nil, 5)),
        _ => None,
    }
}

/// [`quick_scalar`] for `$`: a nil, or a bulk string whose payload and
/// trailing CRLF are all in `rest`.
#[inline(always)]
fn quick_bulk(rest: &[u8], limits: &Limits) -> Option<(Value, usize)> {
    if rest.get(1..5) == Some(b"-1\r\n") {
        return Some((Value::Nil, 5));
    }
    let (len, start) = number::quick_length(rest)?;
    if len > limits.max_bulk_len as u64 {
        return None;
    }
    let end = start.checked_add(len as usize)?;
    let trailer = rest.get(end..)?.get(..2)?;
    // Copy first, check the CRLF after: the copy streams through the
    // payload up to the CRLF, where checking first would wait for the
    // payload's last cache line alone before the copy could start.
    let payload = rest[start..end].to_vec();
    if trailer != b"\r\n" {
        return None;
    }
    Some((Value::BulkString(payload), end + 2))
}

/// The index of the CR ending the line that starts at `rest[0]` (a type
/// byte), if the line holds at most `max` bytes, no other CR or LF, and its
/// whole CRLF is in `rest`. `rest` must not be empty.
#[inline]
fn short_line(rest: &[u8], max: usize) -> Option<usize> {
    let window = &rest[1..rest.len().min(max.saturating_add(2))];
    let i = window.iter().position(|&b| b == b'\r' || b == b'\n')? + 1;
    if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
        Some(i)
    } else {
        None
    }
}

/// Lists whose reservation would be this many elements or more (1 KiB and
/// more) are reserved after their first elements are decoded; see
/// [`stage_list`].
const STAGED_LIST: usize = (1024 + std::mem::size_of::<Value>() - 1) / std::mem::size_of::<Value>();

/// How many elements [`stage_list`] holds before it reserves the list.
const STAGE: usize = 128;

/// The first fast-path elements of a list that was opened without its
/// reservation (`deferred`, 0 afterwards): up to [`STAGE`] of them are
/// decoded into an array on the stack, then the list gets its capacity and
/// takes them. Returns the bytes consumed.
///
/// The order is the point. A reply that is dropped frees its small strings
/// into the allocator's caches, and glibc's malloc tidies those caches up
/// (`malloc_consolidate`) before every request of 1 KiB or more, so the
/// next reply's list, reserved first, would pay to tidy them and its
/// strings to take apart what was tidied. Reserved after its first
/// [`STAGE`] strings, which reuse the freed ones as they are, the list
/// finds the caches empty. The elements are the same, in the same order;
/// the capacity too, or exactly what arrived if that is more.
#[inline(never)]
fn stage_list(
    rest: &[u8],
    limits: &Limits,
    remaining: &mut usize,
    items: &mut Vec<Value>,
    deferred: &mut usize,
) -> usize {
    const NIL: Value = Value::Nil;
    let mut stage = [NIL; STAGE];
    let mut staged = 0;
    let mut pos = 0;
    // As `fill_list`: the last element, which closes the list, is left to
    // the caller.
    while *remaining > 1 && staged < STAGE {
        match quick_scalar(&rest[pos..], limits) {
            Some((value, used)) => {
                // The slot held a nil: nothing to drop.
                std::mem::forget(std::mem::replace(&mut stage[staged], value));
                staged += 1;
                *remaining -= 1;
                pos += used;
            }
            None => break,
        }
    }
    items.reserve_exact((*deferred).max(staged));
    *deferred = 0;
    items.extend(
        stage[..staged]
            .iter_mut()
            .map(|v| std::mem::replace(v, Value::Nil)),
    );
    // Every slot holds a nil now (taken, or never filled): nothing to drop,
    // so skip the loop that would look at each of them.
    std::mem::forget(stage);
    pos
}

/// What [`quick_list`] made of the start of the input.
enum QuickList {
    /// Not a list header it reads: the general path's to read.
    No,
    /// A whole list, and the bytes it used.
    Whole(Value, usize),
    /// The list as far as the fast path took it, as the frame the general
    /// path would have built by then, and the bytes used so far.
    Open(Frame, usize),
}

/// The fast path for a reply that is a list (`*`, `~` or `>`) of fast-path
/// elements ([`quick_scalar`]), with no aggregate open: its header read as
/// a number, its elements straight into the list, with no frame and no
/// token. Where an element is not for the fast path or not all in yet, the
/// list so far goes to the general path as an open frame, the one it would
/// have built by then: the same count, the same elements, the same capacity
/// ([`Decoder::aggregate`]'s, at depth 0). Headers it does not read (an
/// empty or streamed list, a count over the limit, a depth limit of 0) are
/// left whole to the general path, which reports any error.
#[inline]
fn quick_list(rest: &[u8], limits: &Limits) -> QuickList {
    let kind = match rest.first() {
        Some(b'*') => ListKind::Array,
        Some(b'~') => ListKind::Set,
        Some(b'>') => ListKind::Push,
        _ => return QuickList::No,
    };
    let (count, mut pos) = match number::quick_length(rest) {
        Some((count, used)) if count > 0 && count <= limits.max_aggregate_len as u64 => {
            (count as usize, used)
        }
        _ => return QuickList::No,
    };
    if limits.max_depth == 0 {
        return QuickList::No;
    }
    let capacity = count.min((rest.len() - pos) / 3);
    let mut remaining = count;
    let mut items = Vec::new();
    if capacity >= STAGED_LIST {
        let mut deferred = capacity;
        pos += stage_list(
            &rest[pos..],
            limits,
            &mut remaining,
            &mut items,
            &mut deferred,
        );
    } else {
        items.reserve_exact(capacity);
    }
    while remaining > 0 {
        match quick_scalar(&rest[pos..], limits) {
            Some((value, used)) => {
                items.push(value);
                remaining -= 1;
                pos += used;
            }
            None => {
                let frame = Frame::List {
                    kind,
                    remaining: Some(remaining),
                    items,
                    deferred: 0,
                };
                return QuickList::Open(frame, pos);
            }
        }
    }
    QuickList::Whole(kind.wrap(items), pos)
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            stack: Vec::new(),
            offset: 0,
            scanned: 0,
            failed: None,
            #[cfg(test)]
            general_only: false,
        }
    }

    /// Whether the fast paths are taken: always, but in some tests.
    #[inline(always)]
    fn fast(&self) -> bool {
        #[cfg(test)]
        return !self.general_only;
        #[cfg(not(test))]
        true
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Heap bytes held for the reply under way: the capacity of its partial
    /// aggregates and strings, and of the elements already in them, plus the
    /// stack of open aggregates, whose capacity is kept for the next reply
    /// (one frame of a few dozen bytes per level of nesting seen).
    ///
    /// Memory never runs ahead of the bytes received: an aggregate reserves
    /// room for at most as many elements as the bytes at hand could hold
    /// (halved for each level of nesting, since the levels share those
    /// bytes), and a bulk string is copied only once all of it is in. The
    /// heaviest input, nested headers followed by `_\r\n` elements, holds
    /// a few dozen bytes per byte received, as each element becomes a
    /// [`Value`]. For callers that watch memory, and for tests that
    /// check nothing is allocated ahead of the bytes that justify it.
    ///
    /// ```
    /// use respline::resp::{Decoder, Limits};
    ///
    /// let mut decoder = Decoder::new(Limits::default());
    /// // A peer announcing four billion elements costs nothing yet.
    /// let (used, reply) = decoder.feed(b"*4294967295\r\n").unwrap();
    /// assert_eq!((used, reply), (13, None));
    /// assert!(decoder.held_bytes() < 1024);
    /// ```
    pub fn held_bytes(&self) -> usize {
        let mut total = self.stack.capacity() * std::mem::size_of::<Frame>();
        let mut values: Vec<&Value> = Vec::new();
        for frame in &self.stack {
            match frame {
                Frame::List { items, .. } => {
                    total += items.capacity() * std::mem::size_of::<Value>();
                    values.extend(items.iter());
                }
                Frame::Pairs { items, key, .. } => {
                    total += items.capacity() * std::mem::size_of::<(Value, Value)>();
                    for (k, v) in items {
                        values.push(k);
                        values.push(v);
                    }
                    values.extend(key.iter());
                }
                Frame::Attributed { attributes } => {
                    total += attributes.capacity() * std::mem::size_of::<(Value, Value)>();
                    for (k, v) in attributes {
                        values.push(k);
                        values.push(v);
                    }
                }
                Frame::Chunks { data } => total += data.capacity(),
            }
        }
        // Iterative, so a deep partial reply cannot overflow the stack.
        while let Some(v) = values.pop() {
            total += match v {
                Value::SimpleString(Cow::Owned(s)) => s.capacity(),
                Value::Error(s) | Value::BigNumber(s) => s.capacity(),
                Value::BulkString(b) | Value::BlobError(b) => b.capacity(),
                Value::Verbatim { text, .. } => text.capacity(),
                Value::Array(items) | Value::Set(items) | Value::Push(items) => {
                    values.extend(items.iter());
                    items.capacity() * std::mem::size_of::<Value>()
                }
                Value::Map(pairs) => {
                    for (k, v) in pairs {
                        values.push(k);
                        values.push(v);
                    }
                    pairs.capacity() * std::mem::size_of::<(Value, Value)>()
                }
                Value::Attribute { attributes, value } => {
                    for (k, v) in attributes {
                        values.push(k);
                        values.push(v);
                    }
                    values.push(value);
                    attributes.capacity() * std::mem::size_of::<(Value, Value)>()
                        + std::mem::size_of::<Value>()
                }
                _ => 0,
            };
        }
        total
    }

    /// True if part of a reply has been consumed and the rest is awaited.
    pub fn is_mid_reply(&self) -> bool {
        !self.stack.is_empty()
    }

    /// Forgets any partial reply and earlier error, to start afresh on a new
    /// stream.
    pub fn reset(&mut self) {
        self.stack.clear();
        self.offset = 0;
        self.scanned = 0;
        self.failed = None;
    }

    /// Decodes from `buf`, the bytes not consumed by earlier calls.
    ///
    /// Returns how many bytes of `buf` were consumed, and the reply if one is
    /// now complete. Bytes consumed without a reply are held in the decoder
    /// as part of the reply under way. After a protocol error, every later
    /// call returns the same error until [`reset`](Decoder::reset).
    #[inline]
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, Option<Value>), ProtocolError> {
        if self.stack.is_empty() && self.failed.is_none() && self.fast() {
            // A whole scalar reply: no frame, no bookkeeping. (With no
            // aggregate open, `offset` is already 0.)
            if let Some((value, used)) = quick_scalar(buf, &self.limits) {
                self.scanned = 0;
                return Ok((used, Some(value)));
            }
        }
        self.feed_general(buf)
    }

    /// [`feed`](Decoder::feed) past its first look: everything but a whole
    /// scalar reply.
    #[inline(never)]
    fn feed_general(&mut self, buf: &[u8]) -> Result<(usize, Option<Value>), ProtocolError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut pos = 0;
        if self.stack.is_empty() && self.fast() {
            match quick_list(buf, &self.limits) {
                QuickList::No => {}
                QuickList::Whole(value, used) => {
                    self.scanned = 0;
                    return Ok((used, Some(value)));
                }
                QuickList::Open(frame, used) => {
                    self.scanned = 0;
                    self.stack.push(frame);
                    pos = used;
                }
            }
        }
        loop {
            let filled = self.fill_list(&buf[pos..]);
            if filled > 0 {
                self.scanned = 0;
                pos += filled;
            }
            let rest = &buf[pos..];
            if let Some((value, used)) = self.quick(rest) {
                self.scanned = 0;
                pos += used;
                if let Some(value) = self.attach(value) {
                    self.offset = 0;
                    return Ok((pos, Some(value)));
                }
                continue;
            }
            let step = self
                .next_token(rest)
                .map_err(|e| e.shifted(self.offset + pos));
            let (token, used) = match step {
                Ok(Some(t)) => t,
                Ok(None) => {
                    self.offset += pos;
                    return Ok((pos, None));
                }
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            };
            self.scanned = 0;
            let at = self.offset + pos;
            pos += used;
            let done = match token {
                Token::Value(v) => self.attach(v),
                Token::Open(frame) => {
                    if self.stack.len() >= self.limits.max_depth {
                        let e = limit(
                            at,
                            "a nesting depth",
                            self.limits.max_depth,
                            self.stack.len() as u64 + 1,
                        );
                        self.failed = Some(e.clone());
                        return Err(e);
                    }
                    self.stack.push(frame);
                    None
                }
                Token::End => match self.close_streamed(at) {
                    Ok(v) => self.attach(v),
                    Err(e) => {
                        self.failed = Some(e.clone());
                        return Err(e);
                    }
                },
                Token::Chunk(bytes) => match self.add_chunk(bytes, at) {
                    Ok(Some(v)) => self.attach(v),
                    Ok(None) => None,
                    Err(e) => {
                        self.failed = Some(e.clone());
                        return Err(e);
                    }
                },
            };
            if let Some(value) = done {
                self.offset = 0;
                return Ok((pos, Some(value)));
            }
        }
    }

    /// Adds a finished value to the innermost open aggregate, closing every
    /// aggregate it completes. Returns the reply once the outermost closes.
    fn attach(&mut self, mut value: Value) -> Option<Value> {
        loop {
            let frame = match self.stack.last_mut() {
                None => return Some(value),
                Some(f) => f,
            };
            match frame {
                Frame::List {
                    remaining, items, ..
                } => {
                    items.push(value);
                    if !count_down(remaining) {
                        return None;
                    }
                }
                Frame::Pairs {
                    remaining,
                    items,
                    key,
                    ..
                } => match key.take() {
                    None => {
                        *key = Some(value);
                        return None;
                    }
                    Some(k) => {
                        items.push((k, value));
                        if !count_down(remaining) {
                            return None;
                        }
                    }
                },
                Frame::Attributed { attributes } => {
                    let attributes = std::mem::take(attributes);
                    self.stack.pop();
                    value = Value::Attribute {
                        attributes,
                        value: Box::new(value),
                    };
                    continue;
                }
                // `next_token` only yields chunks while a streamed string is
                // open, so no value can land here.
                Frame::Chunks { .. } => unreachable!("a value inside a streamed string"),
            }
            value = match self.stack.pop() {
                Some(Frame::List { kind, items, .. }) => kind.wrap(items),
                Some(Frame::Pairs {
                    attribute: false,
                    items,
                    ..
                }) => Value::Map(items),
                Some(Frame::Pairs {
                    attribute: true,
                    items,
                    ..
                }) => {
                    // The attribute's pairs are in; the value it describes
                    // comes next, at the same depth.
                    self.stack.push(Frame::Attributed { attributes: items });
                    return None;
                }
                _ => unreachable!("only lists and pairs count down"),
            };
        }
    }

    /// Closes the streamed aggregate on top of the stack at a `.`.
    fn close_streamed(&mut self, at: usize) -> Result<Value, ProtocolError> {
        match self.stack.pop() {
            Some(Frame::List {
                kind,
                remaining: None,
                items,
                ..
            }) => Ok(kind.wrap(items)),
            Some(Frame::Pairs {
                attribute: false,
                remaining: None,
                items,
                key: None,
            }) => Ok(Value::Map(items)),
            Some(Frame::Pairs {
                remaining: None,
                key: Some(_),
                ..
            }) => Err(malformed(
                at,
                "a value for the last key of a streamed map",
                "'.' (end of aggregate)",
            )),
            _ => Err(malformed(
                at,
                "a value ('.' only ends a streamed aggregate)",
                "'.'",
            )),
        }
    }

    /// Adds a chunk to the streamed string on top of the stack; an empty
    /// chunk ends it.
    fn add_chunk(&mut self, bytes: Vec<u8>, at: usize) -> Result<Option<Value>, ProtocolError> {
        let max = self.limits.max_bulk_len;
        match self.stack.last_mut() {
            Some(Frame::Chunks { data }) => {
                if bytes.is_empty() {
                    let data = std::mem::take(data);
                    self.stack.pop();
                    return Ok(Some(Value::BulkString(data)));
                }
                let total = data.len() as u64 + bytes.len() as u64;
                if total > max as u64 {
                    return Err(limit(at, "a streamed string length", max, total));
                }
                data.extend_from_slice(&bytes);
                Ok(None)
            }
            _ => unreachable!("chunks are only parsed inside a streamed string"),
        }
    }

    /// The fast path for the commonest elements (see [`quick_scalar`]),
    /// except inside a streamed string, where only chunks may come.
    #[inline(always)]
    fn quick(&self, rest: &[u8]) -> Option<(Value, usize)> {
        if !self.fast() {
            return None;
        }
        if let Some(Frame::Chunks { .. }) = self.stack.last() {
            return None;
        }
        quick_scalar(rest, &self.limits)
    }

    /// Moves whole fast-path elements straight into the innermost list while
    /// it has more than one element to go (the last one, which closes the
    /// list, takes the general path). Returns the bytes consumed. This is
    /// the loop a large array of small replies spends its time in.
    #[inline(always)]
    fn fill_list(&mut self, rest: &[u8]) -> usize {
        if !self.fast() {
            return 0;
        }
        let limits = &self.limits;
        let (remaining, items, deferred) = match self.stack.last_mut() {
            Some(Frame::List {
                remaining: Some(remaining),
                items,
                deferred,
                ..
            }) => (remaining, items, deferred),
            _ => return 0,
        };
        let mut pos = 0;
        if *deferred > 0 {
            pos = stage_list(rest, limits, remaining, items, deferred);
        }
        while *remaining > 1 {
            match quick_scalar(&rest[pos..], limits) {
                Some((value, used)) => {
                    items.push(value);
                    *remaining -= 1;
                    pos += used;
                }
                None => break,
            }
        }
        pos
    }

    /// Parses the element at the start of `rest`: `Ok(None)` if it is not
    /// all there yet. Offsets in errors are relative to `rest`.
    fn next_token(&mut self, rest: &[u8]) -> Result<Option<(Token, usize)>, ProtocolError> {
        let first = match rest.first() {
            Some(&b) => b,
            None => return Ok(None),
        };
        if let Some(Frame::Chunks { .. }) = self.stack.last() {
            if first != b';' {
                return Err(malformed(
                    0,
                    "';' (a chunk of a streamed string)",
                    describe_byte(first),
                ));
            }
            return self.chunk(rest);
        }
        match first {
            b'+' | b'-' => {
                let end = match self.line(rest, self.limits.max_line_len)? {
                    Some(end) => end,
                    None => return Ok(None),
                };
                let text = &rest[1..end];
                let value = if first == b'+' {
                    Value::SimpleString(simple_string(text))
                } else {
                    Value::Error(String::from_utf8_lossy(text).into_owned())
                };
                Ok(Some((Token::Value(value), end + 2)))
            }
            b':' => {
                let end = match self.line(rest, MAX_NUMBER_LEN)? {
                    Some(end) => end,
                    None => return Ok(None),
                };
                match number::parse_i64(&rest[1..end], Form::Signed) {
                    Some(i) => Ok(Some((Token::Value(Value::Integer(i)), end + 2))),
                    None => Err(malformed(
                        1,
                        "an integer in the i64 range",
                        quote(&rest[1..end]),
                    )),
                }
            }
            b'$' | b'!' | b'=' => self.blob(first, rest),
            b'*' | b'~' | b'>' | b'%' | b'|' => self.aggregate(first, rest),
            b'_' | b'#' | b',' | b'(' => self.resp3_scalar(first, rest),
            b'.' => {
                let end = match self.line(rest, 0)? {
                    Some(end) => end,
                    None => return Ok(None),
                };
                Ok(Some((Token::End, end + 2)))
            }
            _ => Err(malformed(0, "a RESP type byte", describe_byte(first))),
        }
    }

    /// Finds the CRLF that ends the line starting at `rest[0]` (the type
    /// byte), allowing at most `max` bytes between the two. Returns the index
    /// of the CR, or `None` if the line is not complete yet.
    fn line(&mut self, rest: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
        let from = self.scanned.clamp(1, rest.len().max(1));
        let found = rest
            .get(from..)
            .and_then(|tail| tail.iter().position(|&b| b == b'\r' || b == b'\n'))
            .map(|i| from + i);
        match found {
            None => {
                if rest.len() - 1 > max {
                    return Err(line_too_long(rest[0], max));
                }
                self.scanned = rest.len();
                Ok(None)
            }
            Some(i) => {
                if i - 1 > max {
                    return Err(line_too_long(rest[0], max));
                }
                if rest[i] == b'\n' {
                    return Err(malformed(i, "CRLF", "a bare LF"));
                }
                match rest.get(i + 1) {
                    None => {
                        self.scanned = i;
                        Ok(None)
                    }
                    Some(b'\n') => Ok(Some(i)),
                    Some(&b) => Err(malformed(i + 1, "LF after CR", describe_byte(b))),
                }
            }
        }
    }

    /// `$`, `!` and `=`: a length line, then exactly that many bytes and a
    /// CRLF.
    fn blob(&mut self, kind: u8, rest: &[u8]) -> Result<Option<(Token, usize)>, ProtocolError> {
        let end = match self.line(rest, MAX_NUMBER_LEN)? {
            Some(end) => end,
            None => return Ok(None),
        };
        let text = &rest[1..end];
        if kind == b'$' {
            match text {
                b"-1" => return Ok(Some((Token::Value(Value::Nil), end + 2))),
                b"?" => {
                    return Ok(Some((
                        Token::Open(Frame::Chunks { data: Vec::new() }),
                        end + 2,
                    )))
                }
                _ => {}
            }
        }
        let len = self.length(text, self.limits.max_bulk_len, "a bulk length")?;
        let start = end + 2;
        let payload = match self.payload(rest, start, len)? {
            Some(p) => p,
            None => return Ok(None),
        };
        let used = start + len + 2;
        let value = match kind {
            b'$' => Value::BulkString(payload.to_vec()),
            b'!' => Value::BlobError(payload.to_vec()),
            _ => {
                if len < 4 || payload[3] != b':' {
                    return Err(malformed(
                        start,
                        "a verbatim string starting with a 3-byte format and ':'",
                        quote(payload),
                    ));
                }
                Value::Verbatim {
                    format: [payload[0], payload[1], payload[2]],
                    text: payload[4..].to_vec(),
                }
            }
        };
        Ok(Some((Token::Value(value), used)))
    }

    /// `;n`: a chunk of a streamed string.
    fn chunk(&mut self, rest: &[u8]) -> Result<Option<(Token, usize)>, ProtocolError> {
        let end = match self.line(rest, MAX_NUMBER_LEN)? {
            Some(end) => end,
            None => return Ok(None),
        };
        let len = self.length(&rest[1..end], self.limits.max_bulk_len, "a chunk length")?;
        let start = end + 2;
        if len == 0 {
            // `;0\r\n` ends the string, with no payload and no second CRLF.
            return Ok(Some((Token::Chunk(Vec::new()), start)));
        }
        match self.payload(rest, start, len)? {
            Some(p) => Ok(Some((Token::Chunk(p.to_vec()), start + len + 2))),
            None => Ok(None),
        }
    }

    /// The `len` payload bytes at `rest[start..]`, once they and their CRLF
    /// have all arrived. The CRLF is checked as soon as its bytes are in.
    fn payload<'a>(
        &self,
        rest: &'a [u8],
        start: usize,
        len: usize,
    ) -> Result<Option<&'a [u8]>, ProtocolError> {
        // `len` is at most max_bulk_len, but that limit is the caller's to
        // set: keep the arithmetic checked.
        let end = match start.checked_add(len) {
            Some(e) => e,
            None => {
                return Err(limit(
                    start,
                    "a payload length",
                    usize::MAX - start,
                    len as u64,
                ))
            }
        };
        let trailer = rest.get(end..).unwrap_or(&[]);
        let crlf = &b"\r\n"[..trailer.len().min(2)];
        if let Some(i) = (0..crlf.len()).find(|&i| trailer[i] != crlf[i]) {
            // Name the first wrong byte: the same error however the reply
            // was split across reads.
            return Err(malformed(
                end + i,
                format!("CRLF after the {}-byte payload", len),
                describe_byte(trailer[i]),
            ));
        }
        if trailer.len() < 2 {
            return Ok(None);
        }
        Ok(Some(&rest[start..end]))
    }

    /// `*`, `~`, `>`, `%` and `|`: a count line that opens a frame.
    fn aggregate(
        &mut self,
        kind: u8,
        rest: &[u8],
    ) -> Result<Option<(Token, usize)>, ProtocolError> {
        let end = match self.line(rest, MAX_NUMBER_LEN)? {
            Some(end) => end,
            None => return Ok(None),
        };
        let text = &rest[1..end];
        let used = end + 2;
        let pairs = kind == b'%' || kind == b'|';
        let count = match text {
            b"-1" if kind == b'*' => return Ok(Some((Token::Value(Value::Nil), used))),
            b"?" if matches!(kind, b'*' | b'~' | b'%') => None,
            _ => Some(self.length(text, self.limits.max_aggregate_len, "an aggregate length")?),
        };
        // Never reserve more than the bytes already here could fill: every
        // element takes at least 3 bytes (`_\r\n`), a pair at least 6. The
        // open aggregates around this one share those same bytes, so each
        // level deeper gets half the room of the one above: the reservations
        // of a whole chain of nested headers add up to at most twice what
        // the bytes could fill, however deep it goes.
        let depth = self.stack.len().min(usize::BITS as usize - 1);
        let room = ((rest.len() - used) / if pairs { 6 } else { 3 }) >> depth;
        let capacity = count.unwrap_or(0).min(room);
        if count == Some(0) && kind != b'|' {
            let value = match kind {
                b'%' => Value::Map(Vec::new()),
                _ => list_kind(kind).wrap(Vec::new()),
            };
            // An empty aggregate still sits one level deeper.
            if self.stack.len() >= self.limits.max_depth {
                return Err(limit(
                    0,
                    "a nesting depth",
                    self.limits.max_depth,
                    self.stack.len() as u64 + 1,
                ));
            }
            return Ok(Some((Token::Value(value), used)));
        }
        let frame = if count == Some(0) {
            Frame::Attributed {
                attributes: Vec::new(),
            }
        } else if pairs {
            Frame::Pairs {
                attribute: kind == b'|',
                remaining: count,
                items: Vec::with_capacity(capacity),
                key: None,
            }
        } else if capacity >= STAGED_LIST {
            // Reserved in `stage_list`, after the first elements.
            Frame::List {
                kind: list_kind(kind),
                remaining: count,
                items: Vec::new(),
                deferred: capacity,
            }
        } else {
            Frame::List {
                kind: list_kind(kind),
                remaining: count,
                items: Vec::with_capacity(capacity),
                deferred: 0,
            }
        };
        Ok(Some((Token::Open(frame), used)))
    }

    /// `_`, `#`, `,` and `(`: one-line RESP3 scalars.
    fn resp3_scalar(
        &mut self,
        kind: u8,
        rest: &[u8],
    ) -> Result<Option<(Token, usize)>, ProtocolError> {
        let max = match kind {
            b'_' => 0,
            b'#' => 1,
            _ => self.limits.max_line_len,
        };
        let end = match self.line(rest, max)? {
            Some(end) => end,
            None => return Ok(None),
        };
        let text = &rest[1..end];
        let value = match kind {
            b'_' => Value::Nil,
            b'#' => match text {
                b"t" => Value::Boolean(true),
                b"f" => Value::Boolean(false),
                _ => return Err(malformed(1, "'t' or 'f'", quote(text))),
            },
            b',' => match parse_double(text) {
                Some(d) => Value::Double(d),
                None => return Err(malformed(1, "a double", quote(text))),
            },
            _ => {
                if !is_big_number(text) {
                    return Err(malformed(
                        1,
                        "a big number (digits with an optional sign)",
                        quote(text),
                    ));
                }
                // Checked above: ASCII only.
                Value::BigNumber(String::from_utf8_lossy(text).into_owned())
            }
        };
        Ok(Some((Token::Value(value), end + 2)))
    }

    /// A length: digits only, at most `max`.
    fn length(&self, text: &[u8], max: usize, what: &'static str) -> Result<usize, ProtocolError> {
        let n = match number::parse_u64(text) {
            Some(n) => n,
            // All digits, but past u64: over any limit, not malformed.
            None if Int::is_digit_string(text) => {
                return Err(limit(1, what, max, String::from_utf8_lossy(text)))
            }
            None => {
                return Err(malformed(
                    1,
                    format!("{} (decimal digits, or -1 for null)", what),
                    quote(text),
                ))
            }
        };
        if n > max as u64 {
            return Err(limit(1, what, max, n));
        }
        Ok(n as usize)
    }
}

impl ListKind {
    fn wrap(self, items: Vec<Value>) -> Value {
        match self {
            ListKind::Array => Value::Array(items),
            ListKind::Set => Value::Set(items),
            ListKind::Push => Value::Push(items),
        }
    }
}

fn list_kind(byte: u8) -> ListKind {
    match byte {
        b'~' => ListKind::Set,
        b'>' => ListKind::Push,
        _ => ListKind::Array,
    }
}

/// Counts one element off a frame; true when the frame is complete.
fn count_down(remaining: &mut Option<usize>) -> bool {
    match remaining {
        Some(r) => {
            *r -= 1;
            *r == 0
        }
        None => false,
    }
}

/// [`simple_string`] of text already known to be UTF-8.
pub(super) fn simple_string_of(text: &str) -> Cow<'static, str> {
    match text {
        "OK" => Cow::Borrowed("OK"),
        "PONG" => Cow::Borrowed("PONG"),
        "QUEUED" => Cow::Borrowed("QUEUED"),
        _ => Cow::Owned(text.to_owned()),
    }
}

/// The common statuses are borrowed, so `+OK` costs no allocation.
#[inline]
fn simple_string(text: &[u8]) -> Cow<'static, str> {
    if text == b"OK" {
        return Cow::Borrowed("OK");
    }
    match text {
        b"OK" => Cow::Borrowed("OK"),
        b"PONG" => Cow::Borrowed("PONG"),
        b"QUEUED" => Cow::Borrowed("QUEUED"),
        _ => Cow::Owned(String::from_utf8_lossy(text).into_owned()),
    }
}

/// A RESP3 double: `[+|-]digits[.digits][(e|E)[+|-]digits]`, or `inf`,
/// `-inf`, `nan` (any case, any sign, as Redis before 7.2 printed what libc
/// gave it). A finite form too large for f64 is rejected, not rounded to
/// infinity.
pub(crate) fn parse_double(text: &[u8]) -> Option<f64> {
    let (negative, body) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let special = if body.eq_ignore_ascii_case(b"inf") {
        Some(f64::INFINITY)
    } else if body.eq_ignore_ascii_case(b"nan") {
        Some(f64::NAN)
    } else {
        None
    };
    if let Some(v) = special {
        return Some(if negative { -v } else { v });
    }
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while body.get(*i).map_or(false, u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if body.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
    }
    if matches!(body.get(i), Some(b'e') | Some(b'E')) {
        i += 1;
        if matches!(body.get(i), Some(b'+') | Some(b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != body.len() {
        return None;
    }
    // The grammar above is a subset of what `f64::from_str` takes.
    let v: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    if v.is_finite() {
        Some(v)
    } else {
        None
    }
}

pub(super) fn is_big_number(text: &[u8]) -> bool {
    let digits = match text.first() {
        Some(b'-') | Some(b'+') => &text[1..],
        _ => text,
    };
    Int::is_digit_string(digits)
}

fn malformed(
    offset: usize,
    expected: impl Into<Cow<'static, str>>,
    found: impl Into<String>,
) -> ProtocolError {
    ProtocolError::new(ProtocolErrorKind::Malformed, offset, expected, found)
}

/// `what` carries its article: "a bulk length", "an aggregate length".
fn limit(offset: usize, what: &str, max: usize, found: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::new(
        ProtocolErrorKind::LimitExceeded,
        offset,
        format!("{} of at most {}", what, max),
        found.to_string(),
    )
}

/// A line past `max` breaks [`Limits::max_line_len`] for the types it
/// governs; for lengths, integers, nulls and booleans, whose forms are fixed,
/// it is malformed.
fn line_too_long(kind: u8, max: usize) -> ProtocolError {
    if !matches!(kind, b'+' | b'-' | b',' | b'(') {
        malformed(
            1,
            format!("a line of at most {} bytes ending in CRLF", max),
            format!("more than {} bytes without CRLF", max),
        )
    } else {
        ProtocolError::new(
            ProtocolErrorKind::LimitExceeded,
            1,
            format!("a line of at most {} bytes ending in CRLF", max),
            format!("more than {} bytes without CRLF", max),
        )
    }
}

/// `'@' (0x40)` for printable bytes, `0x00` for the rest.
fn describe_byte(b: u8) -> String {
    if (0x21..0x7f).contains(&b) {
        format!("'{}' (0x{:02x})", b as char, b)
    } else {
        format!("0x{:02x}", b)
    }
}

/// Bytes as a short quoted string for an error message.
fn quote(bytes: &[u8]) -> String {
    let mut s = String::new();
    let _ = super::value::write_quoted(&mut s, bytes);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Value {
        let (v, used) = decode(bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        v
    }

    #[test]
    fn doubles_follow_the_grammar() {
        assert_eq!(parse_double(b"1.5"), Some(1.5));
        assert_eq!(parse_double(b"2.67923E+8"), Some(2.67923e8));
        assert!(parse_double(b"-0").unwrap().is_sign_negative());
        assert!(parse_double(b"-nan").unwrap().is_sign_negative());
        assert_eq!(parse_double(b"-inf"), Some(f64::NEG_INFINITY));
        for bad in [
            &b""[..],
            b".5",
            b"1.",
            b"1e",
            b"+",
            b"1.2.3",
            b"1,5",
            b"abc",
            b"3.14x",
            b"infinity",
            b"1e400",
        ] {
            assert_eq!(parse_double(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn resumes_where_it_stopped() {
        let mut d = Decoder::new(Limits::default());
        let (used, v) = d.feed(b"*3\r\n:1\r\n:2").unwrap();
        assert_eq!((used, v), (8, None));
        assert!(d.is_mid_reply());
        let (used, v) = d.feed(b":2\r\n:3\r\n+x").unwrap();
        assert_eq!(used, 8);
        assert_eq!(v, Some(Value::Array(vec![1.into(), 2.into(), 3.into()])));
        assert!(!d.is_mid_reply());
    }

    #[test]
    fn attribute_wraps_the_following_value() {
        let v = one(b"|1\r\n+ttl\r\n:3600\r\n:3\r\n");
        assert_eq!(
            v,
            Value::Attribute {
                attributes: vec![(Value::SimpleString("ttl".into()), Value::Integer(3600))],
                value: Box::new(Value::Integer(3)),
            }
        );
    }

    #[test]
    fn streamed_types() {
        assert_eq!(
            one(b"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n"),
            Value::BulkString(b"Hello word".to_vec())
        );
        assert_eq!(
            one(b"*?\r\n:1\r\n:2\r\n.\r\n"),
            Value::Array(vec![1.into(), 2.into()])
        );
        assert_eq!(
            one(b"%?\r\n+a\r\n:1\r\n.\r\n"),
            Value::Map(vec![(Value::SimpleString("a".into()), 1.into())])
        );
        let limits = Limits::default();
        assert!(decode(b"%?\r\n+a\r\n.\r\n", &limits).is_err());
        assert!(decode(b".\r\n", &limits).is_err());
        assert!(decode(b"*1\r\n.\r\n", &limits).is_err());
        assert!(decode(b">?\r\n", &limits).is_err());
    }

    #[test]
    fn quick_numbers_stop_where_the_general_path_takes_over() {
        let limits = Limits::default();
        for (wire, value) in [
            (&b":9223372036854775807\r\n"[..], Some(i64::MAX)),
            (b":-9223372036854775808\r\n", Some(i64::MIN)),
            (b":+9223372036854775807\r\n", Some(i64::MAX)),
            (b":0009223372036854775807\r\n", None), // 22 digits: too long a line
            (b":9223372036854775808\r\n", None),
            (b":-9223372036854775809\r\n", None),
            (b":99999999999999999999\r\n", None), // 20 digits, past u64 too
            (b":-0\r\n", Some(0)),
            (b":-\r\n", None),
            (b":+\r\n", None),
        ] {
            let got = decode(wire, &limits).map(|r| r.map(|(v, _)| v));
            match value {
                Some(i) => assert_eq!(got, Ok(Some(Value::Integer(i))), "{:?}", wire),
                None => assert!(got.is_err(), "{:?}: {:?}", wire, got),
            }
        }
        // A 19-digit length is the longest the quick path reads; 20 digits
        // are still a length to the general path.
        let wire = b"$00000000000000000003\r\nabc\r\n";
        assert_eq!(
            decode(wire, &limits).unwrap(),
            Some((Value::BulkString(b"abc".to_vec()), wire.len()))
        );
        // `+OK` under a line limit of 1 is refused, as on the general path.
        let tight = Limits {
            max_line_len: 1,
            ..Limits::default()
        };
        assert_eq!(
            decode(b"+OK\r\n", &tight).unwrap_err().kind(),
            ProtocolErrorKind::LimitExceeded
        );
    }

    #[test]
    fn a_long_list_gets_the_capacity_it_announced() {
        let mut wire = b"*100\r\n".to_vec();
        for i in 0..100 {
            wire.extend_from_slice(format!(":{}\r\n", i).as_bytes());
        }
        let (v, used) = decode(&wire, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, wire.len());
        match v {
            Value::Array(items) => {
                assert_eq!(items.capacity(), 100);
                assert_eq!(items, (0..100).map(Value::Integer).collect::<Vec<_>>());
            }
            other => panic!("{:?}", other),
        }
    }

    mod against_the_general_path {
        //! Every fast path (whole scalar replies, `decode`'s first look,
        //! lists filled and staged in place) against the general path
        //! alone, on well-formed and broken input, whole and in pieces:
        //! the same consumption, the same values, the same errors.

        use super::super::*;
        use proptest::prelude::*;

        fn bulk(payload: &[u8]) -> Vec<u8> {
            let mut v = format!("${}\r\n", payload.len()).into_bytes();
            v.extend_from_slice(payload);
            v.extend_from_slice(b"\r\n");
            v
        }

        /// Elements the fast paths take (and some they must refuse).
        fn quick_element() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                4 => Just(b"+OK\r\n".to_vec()),
                1 => Just(b"+PONG\r\n".to_vec()),
                1 => Just(b"+QUEUED\r\n".to_vec()),
                1 => "[ -~é]{0,10}".prop_map(|t| format!("+{}\r\n", t).into_bytes()),
                1 => Just(b"_\r\n".to_vec()),
                1 => Just(b"$-1\r\n".to_vec()),
                1 => Just(b"*-1\r\n".to_vec()),
                1 => any::<i64>().prop_map(|i| format!(":{}\r\n", i).into_bytes()),
                1 => "[+-]?[0-9]{0,22}".prop_map(|d| format!(":{}\r\n", d).into_bytes()),
                4 => prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| bulk(&b)),
                1 => Just(bulk(b"0123456789")),
            ]
        }

        /// Any element: the fast paths' and the general path's.
        fn element() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                8 => quick_element(),
                1 => Just(b"+OK".to_vec()),
                1 => "[0-9]{1,22}".prop_map(|d| format!("${}\r\n", d).into_bytes()),
                1 => Just(b"-ERR x\r\n".to_vec()),
                1 => Just(b"#t\r\n".to_vec()),
                1 => Just(b"*2\r\n:1\r\n:2\r\n".to_vec()),
                1 => Just(b"%1\r\n+a\r\n:1\r\n".to_vec()),
                1 => Just(b"|1\r\n+a\r\n:1\r\n".to_vec()),
                1 => Just(b"$?\r\n;1\r\na\r\n;0\r\n".to_vec()),
                1 => Just(b"*?\r\n:1\r\n.\r\n".to_vec()),
            ]
        }

        /// A list header (its count right or wrong), then elements: long
        /// enough, often, for the list to be staged.
        fn list() -> impl Strategy<Value = Vec<u8>> {
            (
                prop::sample::select(vec![b'*', b'~', b'>', b'%']),
                prop_oneof![
                    // All for the fast paths, or not.
                    prop::collection::vec(quick_element(), 0..140),
                    prop::collection::vec(element(), 0..140),
                ],
                prop_oneof![4 => Just(0i64), 1 => -3i64..4],
            )
                .prop_map(|(kind, items, skew)| {
                    let count = (items.len() as i64 + skew).max(0);
                    let mut wire = format!("{}{}\r\n", kind as char, count).into_bytes();
                    for item in items {
                        wire.extend_from_slice(&item);
                    }
                    wire
                })
        }

        fn wire() -> impl Strategy<Value = Vec<u8>> {
            (
                prop::collection::vec(prop_oneof![element(), list()], 1..4),
                prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..3),
            )
                .prop_map(|(parts, edits)| {
                    let mut wire = parts.concat();
                    for (at, byte, op) in edits {
                        if wire.is_empty() {
                            break;
                        }
                        let i = at.index(wire.len());
                        match op {
                            0 => wire[i] = byte,
                            1 => wire.insert(i, byte),
                            2 => {
                                wire.remove(i);
                            }
                            _ => wire[i] = b"\r\n0$*+:"[usize::from(byte) % 7],
                        }
                    }
                    wire
                })
        }

        fn limits() -> impl Strategy<Value = Limits> {
            prop_oneof![
                3 => Just(Limits::default()),
                1 => (1usize..4, 0usize..24, 0usize..140, 0usize..8).prop_map(
                    |(max_depth, max_bulk_len, max_aggregate_len, max_line_len)| Limits {
                        max_depth,
                        max_bulk_len,
                        max_aggregate_len,
                        max_line_len,
                        ..Limits::default()
                    }
                ),
            ]
        }

        /// Every answer of `feed` over `wire` fed in pieces of `sizes`
        /// (cycled), as a connection feeds it, up to the first error.
        fn trace(wire: &[u8], sizes: &[usize], limits: &Limits, general_only: bool) -> Vec<String> {
            let mut decoder = Decoder::new(limits.clone());
            decoder.general_only = general_only;
            let mut pending = Vec::new();
            let mut answers = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < wire.len() {
                let n = sizes[i % sizes.len()].max(1).min(wire.len() - at);
                i += 1;
                pending.extend_from_slice(&wire[at..at + n]);
                at += n;
                loop {
                    // Debug, not PartialEq: a NaN double is itself here.
                    let answer = decoder.feed(&pending);
                    answers.push(format!("{:?}", answer));
                    match answer {
                        Ok((used, reply)) => {
                            pending.drain(..used);
                            if reply.is_none() {
                                break;
                            }
                        }
                        Err(_) => return answers,
                    }
                }
            }
            answers
        }

        fn cases() -> u32 {
            std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(256)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

            #[test]
            fn whole(wire in wire(), limits in limits()) {
                let fast = decode(&wire, &limits);
                let mut general = Decoder::new(limits.clone());
                general.general_only = true;
                let general = general.feed(&wire).map(|(used, reply)| reply.map(|v| (v, used)));
                prop_assert_eq!(format!("{:?}", fast), format!("{:?}", general));
            }

            #[test]
            fn in_pieces(
                wire in wire(),
                limits in limits(),
                sizes in prop::collection::vec(prop_oneof![1usize..40, 40usize..4000], 1..4),
            ) {
                prop_assert_eq!(
                    trace(&wire, &sizes, &limits, false),
                    trace(&wire, &sizes, &limits, true)
                );
            }
        }
    }
}
