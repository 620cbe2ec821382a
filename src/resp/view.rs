//! Borrowed replies: [`ValueRef`], a view of one reply that reads it where
//! it lies (in a connection's read buffer, or in an owned [`Value`])
//! without copying or allocating.
//!
//! ```text
//! read buffer ──▶ FrameScan (checks the whole frame, finds its end) ──▶ ValueRef<'buf>
//!                   └─ anything unusual ──▶ Decoder ──▶ Value ──▶ Value::view()
//! ```
//!
//! A frame is viewed only after [`FrameScan`] has checked all of it against the
//! same grammar and [`Limits`] as the [`Decoder`](super::Decoder); the
//! views then parse elements lazily, as they are iterated. Whatever the scan
//! does not take (streamed strings and aggregates, attributes, top-level
//! pushes, text that is not UTF-8, and every malformed or over-limit frame)
//! goes to the decoder instead, which gives the reply, or the exact error,
//! of the owned path; the caller then views the decoded [`Value`]. So the
//! two paths cannot disagree.

use std::fmt;

use super::decode::{is_big_number, parse_double, Limits};
use super::number::{self, Form};
use super::value::Value;

/// One reply, borrowed: the view of a [`Value`] without the copying.
///
/// Strings are slices of the bytes received; aggregates are iterators that
/// parse their elements as they are reached. A `ValueRef` lives as long as
/// the buffer it borrows: inside the callback that received it (see
/// [`Connection::query_with`](crate::Connection::query_with)). Copy out what
/// you keep (`to_vec`, `to_owned`, [`to_value`](ValueRef::to_value), or a
/// [`FromValue`](crate::FromValue) conversion with
/// [`ValueRef::convert`]).
///
/// The variants mirror [`Value`]'s one for one.
///
/// ```
/// use respline::{Value, ValueRef};
///
/// let reply = Value::Array(vec![Value::BulkString(b"3".to_vec()), Value::Integer(4)]);
/// let mut sum = 0;
/// if let ValueRef::Array(items) = reply.view() {
///     for item in items {
///         sum += item.convert::<i64>()?;
///     }
/// }
/// assert_eq!(sum, 7);
/// # Ok::<(), respline::Error>(())
/// ```
#[derive(Clone)]
pub enum ValueRef<'a> {
    /// Null: `$-1`, `*-1` or `_`.
    Nil,
    /// `+`: a simple string.
    SimpleString(&'a str),
    /// `-`: a simple error.
    Error(&'a str),
    /// `:`: an integer.
    Integer(i64),
    /// `$`: a bulk string's bytes.
    BulkString(&'a [u8]),
    /// `*`: an array.
    Array(Items<'a>),
    /// `,`: a RESP3 double.
    Double(f64),
    /// `#`: a RESP3 boolean.
    Boolean(bool),
    /// `(`: a RESP3 big number's decimal text.
    BigNumber(&'a str),
    /// `!`: a RESP3 blob error.
    BlobError(&'a [u8]),
    /// `=`: a RESP3 verbatim string.
    Verbatim {
        /// The three-byte format, for example `*b"txt"`.
        format: [u8; 3],
        /// The text after the `xxx:` prefix.
        text: &'a [u8],
    },
    /// `%`: a RESP3 map, as key/value pairs in wire order.
    Map(Pairs<'a>),
    /// `~`: a RESP3 set.
    Set(Items<'a>),
    /// `>`: a RESP3 push.
    Push(Items<'a>),
    /// `|`: a RESP3 attribute and the value it describes.
    Attribute(AttributeRef<'a>),
}

/// The elements of an array, set or push, parsed one by one as the
/// iterator reaches them. Cloning it is cheap and restarts nothing: the
/// clone goes on from the same place.
#[derive(Clone)]
pub struct Items<'a>(ItemsInner<'a>);

#[derive(Clone)]
enum ItemsInner<'a> {
    /// Checked wire bytes starting at the next element.
    Wire {
        rest: &'a [u8],
        left: usize,
    },
    Tree(std::slice::Iter<'a, Value>),
}

/// The key/value pairs of a map (or of an attribute), parsed as the
/// iterator reaches them.
#[derive(Clone)]
pub struct Pairs<'a>(PairsInner<'a>);

#[derive(Clone)]
enum PairsInner<'a> {
    Wire {
        rest: &'a [u8],
        left: usize,
    },
    Tree(std::slice::Iter<'a, (Value, Value)>),
    /// An array or set of even length, two elements a pair.
    Flat(Items<'a>),
}

/// A RESP3 attribute: its pairs and the value they describe.
#[derive(Clone)]
pub struct AttributeRef<'a> {
    attributes: &'a [(Value, Value)],
    value: &'a Value,
}

impl<'a> AttributeRef<'a> {
    /// The attribute's key/value pairs.
    pub fn attributes(&self) -> Pairs<'a> {
        Pairs(PairsInner::Tree(self.attributes.iter()))
    }

    /// The value the attribute describes.
    pub fn value(&self) -> ValueRef<'a> {
        self.value.view()
    }
}

impl<'a> ValueRef<'a> {
    /// The name of this value's wire type, as [`Value::kind`] gives it.
    pub fn kind(&self) -> &'static str {
        match self {
            ValueRef::Nil => Value::Nil.kind(),
            ValueRef::SimpleString(_) => "simple string",
            ValueRef::Error(_) => "error",
            ValueRef::Integer(_) => "integer",
            ValueRef::BulkString(_) => "bulk string",
            ValueRef::Array(_) => "array",
            ValueRef::Double(_) => "double",
            ValueRef::Boolean(_) => "boolean",
            ValueRef::BigNumber(_) => "big number",
            ValueRef::BlobError(_) => "blob error",
            ValueRef::Verbatim { .. } => "verbatim string",
            ValueRef::Map(_) => "map",
            ValueRef::Set(_) => "set",
            ValueRef::Push(_) => "push",
            ValueRef::Attribute(_) => "attribute",
        }
    }

    /// True for nil.
    pub fn is_nil(&self) -> bool {
        matches!(self, ValueRef::Nil)
    }

    /// True for an error value (simple or blob).
    pub fn is_error(&self) -> bool {
        matches!(self, ValueRef::Error(_) | ValueRef::BlobError(_))
    }

    /// The value an attribute describes (through any number of
    /// attributes), or this value.
    pub fn without_attributes(self) -> ValueRef<'a> {
        let mut v = self;
        while let ValueRef::Attribute(a) = v {
            v = a.value();
        }
        v
    }

    /// The bytes of a bulk, simple or verbatim string, as
    /// [`Value::as_bytes`] gives them.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            ValueRef::BulkString(b) => Some(b),
            ValueRef::SimpleString(s) => Some(s.as_bytes()),
            ValueRef::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            ValueRef::Integer(i) => Some(i),
            _ => None,
        }
    }

    /// The elements of an array, set or push.
    pub fn items(&self) -> Option<Items<'a>> {
        match self {
            ValueRef::Array(items) | ValueRef::Set(items) | ValueRef::Push(items) => {
                Some(items.clone())
            }
            _ => None,
        }
    }

    /// The key/value pairs of a map, or of an array or set of even length
    /// read two elements a pair: RESP2 sends `HGETALL` and `CONFIG GET` as
    /// flat arrays where RESP3 sends maps, so this reads both alike (as the
    /// `HashMap` conversion does).
    ///
    /// ```
    /// use respline::Value;
    ///
    /// let resp2 = Value::Array(vec!["name".into(), "Alice".into()]);
    /// let resp3 = Value::Map(vec![("name".into(), "Alice".into())]);
    /// for reply in [resp2, resp3] {
    ///     let (field, value) = reply.view().pairs().unwrap().next().unwrap();
    ///     assert_eq!((field.as_bytes(), value.as_bytes()), (Some(&b"name"[..]), Some(&b"Alice"[..])));
    /// }
    /// ```
    pub fn pairs(&self) -> Option<Pairs<'a>> {
        match self {
            ValueRef::Map(pairs) => Some(pairs.clone()),
            ValueRef::Array(items) | ValueRef::Set(items) if items.len() % 2 == 0 => {
                Some(Pairs(PairsInner::Flat(items.clone())))
            }
            _ => None,
        }
    }

    /// The owned copy of this value.
    pub fn to_value(&self) -> Value {
        match self.clone() {
            ValueRef::Nil => Value::Nil,
            ValueRef::SimpleString(s) => Value::SimpleString(super::decode::simple_string_of(s)),
            ValueRef::Error(s) => Value::Error(s.to_owned()),
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::BulkString(b) => Value::BulkString(b.to_vec()),
            ValueRef::Array(items) => Value::Array(items.map(|v| v.to_value()).collect()),
            ValueRef::Double(d) => Value::Double(d),
            ValueRef::Boolean(b) => Value::Boolean(b),
            ValueRef::BigNumber(n) => Value::BigNumber(n.to_owned()),
            ValueRef::BlobError(b) => Value::BlobError(b.to_vec()),
            ValueRef::Verbatim { format, text } => Value::Verbatim {
                format,
                text: text.to_vec(),
            },
            ValueRef::Map(pairs) => {
                Value::Map(pairs.map(|(k, v)| (k.to_value(), v.to_value())).collect())
            }
            ValueRef::Set(items) => Value::Set(items.map(|v| v.to_value()).collect()),
            ValueRef::Push(items) => Value::Push(items.map(|v| v.to_value()).collect()),
            ValueRef::Attribute(a) => Value::Attribute {
                attributes: a.attributes.to_vec(),
                value: Box::new(a.value.clone()),
            },
        }
    }

    /// The server error this value is (through attributes), with its code
    /// and message.
    pub(crate) fn server_error(&self) -> Option<crate::ServerError> {
        match self.clone().without_attributes() {
            ValueRef::Error(e) => Some(crate::ServerError::new(e)),
            ValueRef::BlobError(b) => Some(crate::ServerError::new(&String::from_utf8_lossy(b))),
            _ => None,
        }
    }

    /// Converts this value to `T` by the rules of
    /// [`FromValue`](crate::FromValue), reading the borrowed bytes directly
    /// (see [`FromValue::from_value_ref`](crate::FromValue::from_value_ref)).
    pub fn convert<T: crate::FromValue>(self) -> crate::Result<T> {
        T::from_value_ref(self)
    }
}

impl Value {
    /// A borrowed view of this value: the same reply as a [`ValueRef`].
    ///
    /// ```
    /// use respline::{Value, ValueRef};
    ///
    /// let v = Value::BulkString(b"hi".to_vec());
    /// assert!(matches!(v.view(), ValueRef::BulkString(b"hi")));
    /// ```
    pub fn view(&self) -> ValueRef<'_> {
        match self {
            Value::Nil => ValueRef::Nil,
            Value::SimpleString(s) => ValueRef::SimpleString(s),
            Value::Error(s) => ValueRef::Error(s),
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::BulkString(b) => ValueRef::BulkString(b),
            Value::Array(items) => ValueRef::Array(Items(ItemsInner::Tree(items.iter()))),
            Value::Double(d) => ValueRef::Double(*d),
            Value::Boolean(b) => ValueRef::Boolean(*b),
            Value::BigNumber(n) => ValueRef::BigNumber(n),
            Value::BlobError(b) => ValueRef::BlobError(b),
            Value::Verbatim { format, text } => ValueRef::Verbatim {
                format: *format,
                text,
            },
            Value::Map(pairs) => ValueRef::Map(Pairs(PairsInner::Tree(pairs.iter()))),
            Value::Set(items) => ValueRef::Set(Items(ItemsInner::Tree(items.iter()))),
            Value::Push(items) => ValueRef::Push(Items(ItemsInner::Tree(items.iter()))),
            Value::Attribute { attributes, value } => {
                ValueRef::Attribute(AttributeRef { attributes, value })
            }
        }
    }
}

impl<'a> Items<'a> {
    /// Converts every element in order, handing each result to `add`: a
    /// bulk string goes to `bulk` as its bytes, anything else to `other`.
    /// Stops at the first `None`. One pass, no `ValueRef` built for the
    /// commonest elements.
    #[inline(always)]
    pub(crate) fn convert_each<T>(
        self,
        mut bulk: impl FnMut(&'a [u8]) -> Option<T>,
        mut other: impl FnMut(ValueRef<'a>) -> Option<T>,
        mut add: impl FnMut(T),
    ) -> Option<()> {
        match self.0 {
            ItemsInner::Wire { mut rest, left } => {
                for _ in 0..left {
                    if rest.first() == Some(&b'$') {
                        if let Some((len, head)) = number::quick_length(rest) {
                            let end = head.checked_add(len as usize)?;
                            add(bulk(rest.get(head..end)?)?);
                            rest = rest.get(end.checked_add(2)?..)?;
                            continue;
                        }
                    }
                    let (v, used) = element(rest, true)?;
                    add(other(v)?);
                    rest = &rest[used..];
                }
            }
            ItemsInner::Tree(iter) => {
                for v in iter {
                    add(match v {
                        Value::BulkString(b) => bulk(b)?,
                        v => other(v.view())?,
                    });
                }
            }
        }
        Some(())
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = ValueRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<ValueRef<'a>> {
        match &mut self.0 {
            ItemsInner::Wire { rest, left } => {
                if *left == 0 {
                    return None;
                }
                let (v, used) = element(rest, true)?;
                *rest = &rest[used..];
                *left -= 1;
                Some(v)
            }
            ItemsInner::Tree(iter) => iter.next().map(Value::view),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Items<'_> {
    fn len(&self) -> usize {
        match &self.0 {
            ItemsInner::Wire { left, .. } => *left,
            ItemsInner::Tree(iter) => iter.len(),
        }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (ValueRef<'a>, ValueRef<'a>);

    #[inline]
    fn next(&mut self) -> Option<(ValueRef<'a>, ValueRef<'a>)> {
        match &mut self.0 {
            PairsInner::Wire { rest, left } => {
                if *left == 0 {
                    return None;
                }
                let (k, used) = element(rest, true)?;
                let (v, used2) = element(&rest[used..], true)?;
                *rest = &rest[used + used2..];
                *left -= 1;
                Some((k, v))
            }
            PairsInner::Tree(iter) => iter.next().map(|(k, v)| (k.view(), v.view())),
            PairsInner::Flat(items) => Some((items.next()?, items.next()?)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Pairs<'_> {
    fn len(&self) -> usize {
        match &self.0 {
            PairsInner::Wire { left, .. } => *left,
            PairsInner::Tree(iter) => iter.len(),
            PairsInner::Flat(items) => items.len() / 2,
        }
    }
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_value(), f)
    }
}

impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

impl fmt::Debug for Items<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

impl fmt::Debug for Pairs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

impl fmt::Debug for AttributeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttributeRef")
            .field("attributes", &self.attributes())
            .field("value", &self.value())
            .finish()
    }
}

impl PartialEq<Value> for ValueRef<'_> {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl PartialEq for ValueRef<'_> {
    fn eq(&self, other: &ValueRef<'_>) -> bool {
        self.to_value() == other.to_value()
    }
}

/// Views a frame that [`FrameScan`] accepted (`frame` starts at its first byte).
/// `None` only if `frame` was not checked by a scan.
pub(crate) fn view_frame(frame: &[u8]) -> Option<ValueRef<'_>> {
    element(frame, false).map(|(v, _)| v)
}

// ---------------------------------------------------------------------------
// Reading checked bytes.

/// The line at the start of `rest` (after its type byte) and the length of
/// the line with its CRLF.
#[inline(always)]
fn line(rest: &[u8]) -> Option<(&[u8], usize)> {
    let cr = memchr_cr(&rest[1..])? + 1;
    Some((&rest[1..cr], cr + 2))
}

#[inline(always)]
fn memchr_cr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\r')
}

/// The element at the start of checked bytes, and (when `need_len`, or
/// always for scalars) its length in bytes.
#[inline]
fn element(rest: &[u8], need_len: bool) -> Option<(ValueRef<'_>, usize)> {
    let kind = *rest.first()?;
    if rest.starts_with(b"+OK\r\n") {
        return Some((ValueRef::SimpleString("OK"), 5));
    }
    if kind == b'$' {
        if let Some((len, head)) = number::quick_length(rest) {
            let end = head.checked_add(len as usize)?;
            return Some((ValueRef::BulkString(rest.get(head..end)?), end + 2));
        }
    }
    let (text, head) = line(rest)?;
    let v = match kind {
        b'$' | b'!' | b'=' => {
            if text == b"-1" {
                return Some((ValueRef::Nil, head));
            }
            let len = number::parse_u64(text)? as usize;
            let payload = rest.get(head..head.checked_add(len)?)?;
            if kind == b'=' && payload.len() < 4 {
                return None;
            }
            let v = match kind {
                b'$' => ValueRef::BulkString(payload),
                b'!' => ValueRef::BlobError(payload),
                _ => ValueRef::Verbatim {
                    format: [payload[0], payload[1], payload[2]],
                    text: payload.get(4..)?,
                },
            };
            return Some((v, head + len + 2));
        }
        b'+' => ValueRef::SimpleString(status(text)?),
        b'-' => ValueRef::Error(std::str::from_utf8(text).ok()?),
        b':' => ValueRef::Integer(number::parse_i64(text, Form::Signed)?),
        b'_' => ValueRef::Nil,
        b'#' => ValueRef::Boolean(text == b"t"),
        b',' => ValueRef::Double(parse_double(text)?),
        b'(' => ValueRef::BigNumber(std::str::from_utf8(text).ok()?),
        b'*' | b'~' | b'>' | b'%' => {
            if text == b"-1" {
                return Some((ValueRef::Nil, head));
            }
            let left = number::parse_u64(text)? as usize;
            let body = &rest[head..];
            let v = match kind {
                b'*' => ValueRef::Array(Items(ItemsInner::Wire { rest: body, left })),
                b'~' => ValueRef::Set(Items(ItemsInner::Wire { rest: body, left })),
                b'>' => ValueRef::Push(Items(ItemsInner::Wire { rest: body, left })),
                _ => ValueRef::Map(Pairs(PairsInner::Wire { rest: body, left })),
            };
            let len = if need_len { skip(rest)? } else { 0 };
            return Some((v, len));
        }
        _ => return None,
    };
    Some((v, head))
}

/// A simple string's text: the commonest statuses without a UTF-8 check.
#[inline(always)]
fn status(text: &[u8]) -> Option<&str> {
    match text {
        b"OK" => Some("OK"),
        b"QUEUED" => Some("QUEUED"),
        _ => std::str::from_utf8(text).ok(),
    }
}

/// The length of the checked element at the start of `rest`, nested
/// elements included: a count of elements still to pass, no recursion.
fn skip(rest: &[u8]) -> Option<usize> {
    let mut pos = 0;
    let mut left: usize = 1;
    while left > 0 {
        let at = rest.get(pos..)?;
        let kind = *at.first()?;
        let (text, head) = line(at)?;
        left -= 1;
        pos += head;
        match kind {
            b'$' | b'!' | b'=' if text != b"-1" => {
                pos += number::parse_u64(text)? as usize + 2;
            }
            b'*' | b'~' | b'>' | b'%' if text != b"-1" => {
                let n = number::parse_u64(text)? as usize;
                let n = if kind == b'%' { n.checked_mul(2)? } else { n };
                left = left.checked_add(n)?;
            }
            _ => {}
        }
    }
    Some(pos)
}

// ---------------------------------------------------------------------------
// Checking a frame before it is viewed.

/// The longest length or integer line.
const MAX_NUMBER_LEN: usize = 20;

/// A resumable check of the frame at the start of a buffer: where it ends,
/// or that more bytes are needed, or that the decoder must take it.
///
/// The position and the open aggregates are kept between calls, so a frame
/// arriving in many reads is checked once, not once per read; the caller
/// passes the same frame's bytes (with more appended) until the scan is
/// complete, then calls [`reset`](FrameScan::reset).
#[derive(Debug, Default)]
pub(crate) struct FrameScan {
    /// Bytes of the frame checked so far (whole elements only).
    pos: usize,
    /// Elements still to come in each open aggregate, innermost last.
    open: Vec<usize>,
}

/// What a [`FrameScan`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// A whole frame of this many bytes, checked.
    Complete(usize),
    /// Checked so far; more bytes are needed.
    Partial,
    /// Not for a view: the decoder must read this frame (it will give the
    /// value, or the protocol error).
    Decode,
}

impl FrameScan {
    /// Forgets the frame under way.
    pub(crate) fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
    }

    /// Goes on checking the frame at the start of `buf`.
    pub(crate) fn scan(&mut self, buf: &[u8], limits: &Limits) -> Scanned {
        loop {
            if let Some(&left) = self.open.last() {
                let (pos, taken) = quick_elements(buf, self.pos, left, limits);
                if taken > 0 {
                    self.pos = pos;
                    if let Some(open) = self.open.last_mut() {
                        // The last one is counted as it closes.
                        *open -= taken - 1;
                    }
                    if self.close_elements() {
                        return Scanned::Complete(self.pos);
                    }
                    if taken == left {
                        continue;
                    }
                }
            }
            let rest = match buf.get(self.pos..) {
                Some(r) if !r.is_empty() => r,
                _ => return Scanned::Partial,
            };
            if let Some(n) = whole_quick(rest, limits) {
                self.pos += n;
                if self.close_elements() {
                    return Scanned::Complete(self.pos);
                }
                continue;
            }
            let step = match self.step(rest, limits) {
                Step::Whole(n) => {
                    self.pos += n;
                    true
                }
                Step::Opened(n) => {
                    self.pos += n;
                    false
                }
                Step::More => return Scanned::Partial,
                Step::Decode => return Scanned::Decode,
            };
            if step && self.close_elements() {
                return Scanned::Complete(self.pos);
            }
        }
    }

    /// Counts a whole element off the open aggregates, closing those it
    /// completes; true when the frame is whole.
    #[inline(always)]
    fn close_elements(&mut self) -> bool {
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }

    /// Checks the element at the start of `rest`.
    #[inline(always)]
    fn step(&mut self, rest: &[u8], limits: &Limits) -> Step {
        let kind = rest[0];
        let max_line = match kind {
            b'+' | b'-' | b',' | b'(' => limits.max_line_len,
            b'_' => 0,
            b'#' => 1,
            b':' | b'$' | b'!' | b'=' | b'*' | b'~' | b'%' | b'>' => MAX_NUMBER_LEN,
            // Not a type the scan takes (or not a type at all): the decoder
            // says which, at once.
            _ => return Step::Decode,
        };
        let (text, head) = match checked_line(rest, max_line) {
            Line::Whole(text, head) => (text, head),
            Line::More => return Step::More,
            Line::Bad => return Step::Decode,
        };
        match kind {
            b'$' | b'!' | b'=' => blob(kind, text, head, rest, limits),
            b'*' | b'~' | b'%' | b'>' => self.aggregate(kind, text, head, limits),
            b'+' | b'-' | b'(' if std::str::from_utf8(text).is_err() => Step::Decode,
            b'+' | b'-' => Step::Whole(head),
            b'(' if is_big_number(text) => Step::Whole(head),
            b':' if number::parse_i64(text, Form::Signed).is_some() => Step::Whole(head),
            b'_' => Step::Whole(head),
            b'#' if text == b"t" || text == b"f" => Step::Whole(head),
            b',' if parse_double(text).is_some() => Step::Whole(head),
            _ => Step::Decode,
        }
    }

    fn aggregate(&mut self, kind: u8, text: &[u8], head: usize, limits: &Limits) -> Step {
        if text == b"-1" && kind == b'*' {
            return Step::Whole(head);
        }
        // A top-level push is not a reply: the decoder takes it, for the
        // push queue.
        if kind == b'>' && self.open.is_empty() {
            return Step::Decode;
        }
        let n = match number::parse_u64(text) {
            Some(n) if n <= limits.max_aggregate_len as u64 => n as usize,
            _ => return Step::Decode,
        };
        if self.open.len() >= limits.max_depth {
            return Step::Decode;
        }
        let elements = if kind == b'%' {
            n.checked_mul(2)
        } else {
            Some(n)
        };
        match elements {
            Some(0) => Step::Whole(head),
            Some(e) => {
                self.open.push(e);
                Step::Opened(head)
            }
            None => Step::Decode,
        }
    }
}

enum Step {
    /// A whole element of this many bytes.
    Whole(usize),
    /// An aggregate's header of this many bytes (now open).
    Opened(usize),
    More,
    Decode,
}

enum Line<'a> {
    Whole(&'a [u8], usize),
    More,
    Bad,
}

/// The line at the start of `rest`, at most `max` bytes between the type
/// byte and the CRLF, with no bare CR or LF.
#[inline(always)]
fn checked_line(rest: &[u8], max: usize) -> Line<'_> {
    let window = &rest[1..rest.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        None if window.len() > max => Line::Bad,
        None => Line::More,
        Some(i) => {
            let cr = i + 1;
            if rest[cr] != b'\r' {
                return Line::Bad;
            }
            match rest.get(cr + 1) {
                None => Line::More,
                Some(b'\n') => Line::Whole(&rest[1..cr], cr + 2),
                Some(_) => Line::Bad,
            }
        }
    }
}

/// The length of the whole, well-formed element at the start of `rest`
/// when it is one of the commonest (a bulk string with a plain length, or
/// `+OK`), or `None` for the general path, which also decides every other
/// case.
#[inline(always)]
fn whole_quick(rest: &[u8], limits: &Limits) -> Option<usize> {
    if rest[0] != b'$' {
        return if rest.starts_with(b"+OK\r\n") && limits.max_line_len >= 2 {
            Some(5)
        } else {
            None
        };
    }
    let (len, head) = number::quick_length(rest)?;
    if len > limits.max_bulk_len as u64 {
        return None;
    }
    let end = head.checked_add(len as usize)?;
    match rest.get(end..end.checked_add(2)?) {
        Some(b"\r\n") => Some(end + 2),
        _ => None,
    }
}

/// Passes up to `left` whole common elements (see [`whole_quick`]) from
/// `pos`: where they end, and how many there were.
#[inline(always)]
fn quick_elements(buf: &[u8], mut pos: usize, left: usize, limits: &Limits) -> (usize, usize) {
    let mut taken = 0;
    while taken < left {
        match buf.get(pos..) {
            Some(rest) if !rest.is_empty() => match whole_quick(rest, limits) {
                Some(n) => {
                    pos += n;
                    taken += 1;
                }
                None => break,
            },
            _ => break,
        }
    }
    (pos, taken)
}

/// `$`, `!` and `=` after their length line.
#[inline(always)]
fn blob(kind: u8, text: &[u8], head: usize, rest: &[u8], limits: &Limits) -> Step {
    if kind == b'$' && text == b"-1" {
        return Step::Whole(head);
    }
    let len = match number::parse_u64(text) {
        Some(n) if n <= limits.max_bulk_len as u64 => n as usize,
        _ => return Step::Decode,
    };
    let end = match head.checked_add(len) {
        Some(e) => e,
        None => return Step::Decode,
    };
    let trailer = rest.get(end..).unwrap_or_default();
    // A wrong byte where the CRLF belongs is an error now, not later.
    for (i, &b) in trailer.iter().take(2).enumerate() {
        if b != b"\r\n"[i] {
            return Step::Decode;
        }
    }
    if trailer.len() < 2 {
        return Step::More;
    }
    if kind == b'=' && (len < 4 || rest[head + 3] != b':') {
        return Step::Decode;
    }
    Step::Whole(end + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{decode, encode_value, Protocol};
    use proptest::prelude::*;

    /// Scans `buf` fed in pieces of `piece` bytes, as reads would bring it.
    fn scan_in_pieces(buf: &[u8], piece: usize, limits: &Limits) -> Scanned {
        let mut scan = FrameScan::default();
        let mut end = 0;
        loop {
            end = (end + piece.max(1)).min(buf.len());
            match scan.scan(&buf[..end], limits) {
                Scanned::Partial if end < buf.len() => {}
                other => return other,
            }
        }
    }

    /// What the scan and view say must be what the decoder says.
    fn agrees(buf: &[u8], piece: usize, limits: &Limits) -> Result<(), String> {
        let decoded = decode(buf, limits);
        match scan_in_pieces(buf, piece, limits) {
            Scanned::Complete(n) => {
                let (value, used) = match decoded {
                    Ok(Some(d)) => d,
                    other => return Err(format!("scan took {} bytes, decoder: {:?}", n, other)),
                };
                if used != n {
                    return Err(format!("scan {} bytes, decoder {}", n, used));
                }
                let view = view_frame(&buf[..n]).ok_or("no view")?;
                if view.to_value() != value {
                    return Err(format!("view {:?}, decoded {:?}", view, value));
                }
                Ok(())
            }
            Scanned::Partial => match decoded {
                Ok(None) => Ok(()),
                other => Err(format!("scan wants more, decoder: {:?}", other)),
            },
            Scanned::Decode => Ok(()),
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            "[a-zé ]{0,8}".prop_map(|s| Value::SimpleString(s.into())),
            "[A-Z]{1,5} [a-z]{0,6}".prop_map(Value::Error),
            any::<i64>().prop_map(Value::Integer),
            prop::collection::vec(any::<u8>(), 0..24).prop_map(Value::BulkString),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::BlobError),
            any::<bool>().prop_map(Value::Boolean),
            any::<f64>().prop_map(Value::Double),
            "-?[0-9]{1,30}".prop_map(Value::BigNumber),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(|text| Value::Verbatim {
                format: *b"txt",
                text
            }),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Set),
                prop::collection::vec(inner.clone(), 1..3).prop_map(Value::Push),
                prop::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(Value::Map),
                (
                    prop::collection::vec((inner.clone(), inner.clone()), 1..2),
                    inner
                )
                    .prop_map(|(attributes, v)| Value::Attribute {
                        attributes,
                        value: Box::new(v),
                    }),
            ]
        })
    }

    fn limits() -> impl Strategy<Value = Limits> {
        (1usize..6, 0usize..30, 0usize..6, 0usize..40).prop_map(|(d, b, a, l)| Limits {
            max_depth: d,
            max_bulk_len: b,
            max_aggregate_len: a,
            max_line_len: l,
            ..Limits::default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn scan_and_view_agree_with_the_decoder(
            v in value(),
            resp3 in any::<bool>(),
            piece in 1usize..40,
            small in prop::option::of(limits()),
            damage in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
            tail in prop::collection::vec(any::<u8>(), 0..6),
        ) {
            let protocol = if resp3 { Protocol::Resp3 } else { Protocol::Resp2 };
            let mut buf = Vec::new();
            encode_value(&mut buf, &v, protocol);
            if let Some((at, byte)) = damage {
                let i = at.index(buf.len());
                buf[i] = byte;
            }
            buf.extend_from_slice(&tail);
            let limits = small.unwrap_or_default();
            prop_assert_eq!(agrees(&buf, piece, &limits), Ok(()));
            // Every prefix, too: the scan never takes less than a frame.
            let cut = buf.len() / 2;
            prop_assert_eq!(agrees(&buf[..cut], piece, &limits), Ok(()));
        }

        #[test]
        fn arbitrary_bytes_never_fool_the_scan(
            bytes in prop::collection::vec(
                prop_oneof![
                    Just(b'\r'), Just(b'\n'), Just(b'*'), Just(b'$'), Just(b'%'), Just(b':'),
                    Just(b'-'), Just(b'1'), Just(b'2'), Just(b'0'), Just(b'+'), any::<u8>()
                ],
                0..48,
            ),
            piece in 1usize..16,
        ) {
            prop_assert_eq!(agrees(&bytes, piece, &Limits::default()), Ok(()));
        }
    }

    #[test]
    fn long_and_odd_length_headers_take_the_general_path() {
        let limits = Limits::default();
        for wire in [
            &b"$99999999999999999999\r\nx\r\n"[..],
            b"*1\r\n$18446744073709551616\r\nab\r\n",
            b"*1\r\n$0000000000000000002\r\nab\r\n",
            b"*1\r\n$00000000000000000002\r\nab\r\n",
            b"*2\r\n$\r\n\r\n:1\r\n",
            b"$-0\r\n",
            b"*1\r\n+OK\r\r\n",
        ] {
            for piece in [1, 3, 64] {
                assert_eq!(agrees(wire, piece, &limits), Ok(()), "{:?}", wire);
            }
        }
    }

    #[test]
    fn owned_values_are_viewed_as_they_are() {
        let v = Value::Attribute {
            attributes: vec![(Value::from("ttl"), Value::Integer(3))],
            value: Box::new(Value::Array(vec![Value::from("a"), Value::Nil])),
        };
        let view = v.view();
        assert_eq!(view.kind(), "attribute");
        assert_eq!(view.to_value(), v);
        let inner = view.without_attributes();
        assert_eq!(inner.items().map(|i| i.len()), Some(2));
    }
}
