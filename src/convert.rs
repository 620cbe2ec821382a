//! [`Value`] → Rust types: the [`FromValue`] trait and its implementations.
//!
//! Every conversion has two ways in: [`FromValue::from_value`] takes an
//! owned [`Value`], and [`FromValue::from_value_ref`] reads a borrowed
//! [`ValueRef`] where it lies (the connection's read buffer), building the
//! result in one pass without an owned tree first.
//!
//! ```text
//! ValueRef ──▶ direct path (success only) ──▶ T
//!                 └─ anything unexpected ──▶ to_value() ──▶ from_value ──▶ T or the error
//! ```
//!
//! The direct path of each type only succeeds where `from_value` succeeds
//! with the same result; whenever it cannot, the view is copied and
//! converted the owned way (a cold path), so failures, and their messages,
//! are the owned path's own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::iter;
use std::vec;

use crate::error::{Error, Result, ServerError};
use crate::resp::number::{self, Form, Int};
use crate::resp::{parse_double, Value, ValueRef};

/// How [`FromValue::from_reply_stream`] is given a request's replies: call
/// it once with a closure, which it calls with each reply and its index.
#[doc(hidden)]
pub type ReplyStream<'r> = &'r mut dyn FnMut(&mut dyn FnMut(usize, ValueRef<'_>)) -> Result<()>;

/// A type that can be built from a reply.
///
/// This is the only place where an error reply becomes an error: converting
/// a [`Value::Error`] or [`Value::BlobError`] (at any depth) gives
/// [`Error::Server`], with the server's code and message. The one exception
/// is [`Value`] itself, which keeps whatever arrived, so a `Vec<Value>`
/// holds error elements as values. When a conversion fails for a reply that
/// also holds an error anywhere inside it, the server error is reported
/// rather than the shape mismatch, since it is the better explanation.
///
/// Attributes ([`Value::Attribute`]) are always seen through, at every
/// depth: the value they describe is converted. RESP2 and RESP3 forms of the
/// same data convert alike (a flat array of pairs and a map both give a
/// `HashMap`; `$3\r\n1.5` and `,1.5` both give `1.5_f64`).
///
/// | Type | Accepts |
/// |------|---------|
/// | [`Value`] | anything, errors and attributes included, unchanged |
/// | `()` | anything that holds no error value at any depth |
/// | `String` | simple string; bulk string and verbatim string (their text, which must be UTF-8); integer, double and big number (their decimal text; doubles as `1.5`, `1e300`, `inf`, `-inf`, `nan`) |
/// | `Vec<u8>` | bulk, simple and verbatim strings (their bytes); otherwise as `Vec<T>` of `u8` |
/// | `i8` … `i128`, `u8` … `u128`, `isize`, `usize` | integer; bulk or simple string holding a strict decimal integer (no sign `+`, no leading zero); big number; double that is integral; each only if the value fits the type |
/// | `f64`, `f32` | double; integer; bulk or simple string holding a decimal, exponent, `inf`, `+inf`, `-inf` or `nan`; big number. A finite value too large for `f32` is an error |
/// | `bool` | boolean; integer `0` or `1`; bulk or simple string `"0"` or `"1"` |
/// | `Option<T>` | nil → `None`; anything else → `Some` of the `T` conversion (an error value is still an error) |
/// | `Vec<T>` | array, set, push (each element as `T`); map (each pair as a two-element array, so `Vec<(K, V)>` works); nil → empty |
/// | `HashMap<K, V, S>`, `BTreeMap<K, V>` | map; array or set of even length, read as key, value, key, value (RESP2 `HGETALL`); nil → empty. A repeated key keeps its last value |
/// | `HashSet<T, S>`, `BTreeSet<T>` | set, array, push; nil → empty |
/// | tuples of 1 to 8 elements | array, set or push with exactly that many elements |
///
/// A map converts to `Vec<(K, V)>`, but not to a flat `Vec<String>`; a flat
/// RESP2 array of pairs converts to a flat `Vec<String>`, but not to
/// `Vec<(K, V)>`. Replies that are maps in RESP3 and flat arrays in RESP2
/// (`HGETALL`, `CONFIG GET`, ...) read the same under both protocols as a
/// `HashMap` or `BTreeMap`.
///
/// ```
/// use std::collections::HashMap;
/// use respline::{FromValue, Value};
///
/// // RESP2 HGETALL: a flat array. RESP3: a map. Both give the same HashMap.
/// let resp2 = Value::Array(vec!["a".into(), "1".into(), "b".into(), "2".into()]);
/// let resp3 = Value::Map(vec![("a".into(), Value::Integer(1)), ("b".into(), Value::Integer(2))]);
/// let a: HashMap<String, i64> = FromValue::from_value(resp2)?;
/// let b: HashMap<String, i64> = FromValue::from_value(resp3)?;
/// assert_eq!(a, b);
///
/// // A server error inside the reply is an error of the conversion.
/// let reply = Value::Array(vec![Value::Integer(1), Value::Error("WRONGTYPE no".into())]);
/// let err = <Vec<i64>>::from_value(reply).unwrap_err();
/// assert_eq!(err.server_error().unwrap().code(), "WRONGTYPE");
/// # Ok::<(), respline::Error>(())
/// ```
pub trait FromValue: Sized {
    /// Converts a reply.
    fn from_value(value: Value) -> Result<Self>;

    /// Converts a borrowed reply, by the same rules as
    /// [`from_value`](FromValue::from_value). The connection reads replies
    /// this way, straight from its read buffer, so that a `Vec<String>` or a
    /// `HashMap` is built in one pass without an owned [`Value`] tree first.
    ///
    /// The provided implementation copies the reply into a [`Value`] and
    /// calls `from_value`; every type of this crate does better (and inside
    /// a `Vec` or a map of them, only your type's own element is copied).
    /// Override it for a type of your own when its replies are large, and
    /// keep both methods in agreement.
    ///
    /// ```
    /// use respline::{FromValue, Result, Value, ValueRef};
    ///
    /// /// The length of a string reply, without copying the string.
    /// struct Len(usize);
    ///
    /// impl FromValue for Len {
    ///     fn from_value(value: Value) -> Result<Len> {
    ///         Ok(Len(String::from_value(value)?.len()))
    ///     }
    ///
    ///     fn from_value_ref(value: ValueRef<'_>) -> Result<Len> {
    ///         match value.as_bytes() {
    ///             Some(b) if std::str::from_utf8(b).is_ok() => Ok(Len(b.len())),
    ///             _ => Len::from_value(value.to_value()),
    ///         }
    ///     }
    /// }
    ///
    /// let reply = Value::Array(vec!["abc".into(), "de".into()]);
    /// let lens: Vec<Len> = FromValue::from_value_ref(reply.view())?;
    /// assert_eq!((lens[0].0, lens[1].0), (3, 2));
    /// # Ok::<(), respline::Error>(())
    /// ```
    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        Self::from_value(value.to_value())
    }

    /// Converts one command's whole reply (`index`: its position in a
    /// pipeline or transaction). An error reply is an error, whatever
    /// `Self` is, unless `Self` is a `Result<_, ServerError>`; other
    /// failures are marked with the index. Not meant to be overridden.
    #[doc(hidden)]
    fn from_reply(reply: Value, index: Option<usize>) -> Result<Self> {
        if let Some(e) = server_error(&reply) {
            return Err(Error::from(e).at_command(index));
        }
        Self::from_value(reply).map_err(|e| e.at_command(index))
    }

    /// Converts every reply of a pipeline or transaction, in order: see
    /// [`Pipeline::query`](crate::Pipeline::query) for the rule. Tuples,
    /// `Vec` and `()` convert reply by reply; any other type fails on the
    /// first error reply, or gets the replies as one [`Value::Array`]. Not
    /// meant to be overridden.
    #[doc(hidden)]
    fn from_replies(replies: Vec<Value>) -> Result<Self> {
        match first_error_reply(&replies) {
            Some(e) => Err(e),
            None => Self::from_value(Value::Array(replies)),
        }
    }

    /// [`from_reply`](FromValue::from_reply) for a borrowed reply. Not
    /// meant to be overridden.
    #[doc(hidden)]
    fn from_reply_ref(reply: ValueRef<'_>, index: Option<usize>) -> Result<Self> {
        if let Some(e) = server_error_ref(&reply) {
            return Err(Error::from(e).at_command(index));
        }
        Self::from_value_ref(reply).map_err(|e| e.at_command(index))
    }

    /// Converts every reply of a request as it arrives, by the rule of
    /// [`from_replies`](FromValue::from_replies): `run` reads the `count`
    /// replies, handing each (with its index) to the closure it is given,
    /// and fails only if reading fails. Not meant to be overridden.
    #[doc(hidden)]
    fn from_reply_stream(count: usize, run: ReplyStream<'_>) -> Result<Self> {
        let mut replies = Vec::with_capacity(reserved(count));
        run(&mut |_, v| replies.push(v.to_value()))?;
        Self::from_replies(replies)
    }

    /// Converts a map's key and value as
    /// [`from_value_ref`](FromValue::from_value_ref) converts a two-element
    /// array of them (how `Vec<T>` reads a map). Only tuples override it.
    #[doc(hidden)]
    fn from_pair_ref(key: ValueRef<'_>, value: ValueRef<'_>) -> Result<Self> {
        owned_pair(&key, &value)
    }

    /// Lets `Vec<u8>` take a bulk string whole rather than element by
    /// element; only `u8` overrides it.
    #[doc(hidden)]
    fn from_byte_vec(_bytes: Vec<u8>) -> Option<Vec<Self>> {
        None
    }

    /// Converts a bulk string element straight from its bytes, when that is
    /// sure to succeed as [`from_value_ref`](FromValue::from_value_ref)
    /// would; `None` sends it down the general path. The crate's own types
    /// override it; not meant for others.
    #[doc(hidden)]
    #[inline(always)]
    fn from_bulk(_bytes: &[u8]) -> Option<Self> {
        None
    }
}

/// An element's conversion in a collection: a bulk string straight from
/// its bytes when `T` can, otherwise the general direct conversion.
#[inline(always)]
fn element_from_bulk<T: FromValue>(bytes: &[u8]) -> Option<T> {
    match T::from_bulk(bytes) {
        Some(t) => Some(t),
        None => T::from_value_ref(ValueRef::BulkString(bytes)).ok(),
    }
}

// ---------------------------------------------------------------------------
// The direct path and its way back to the owned one.

/// Converts a view directly with `fast`, given the view without its
/// attributes (every owned conversion but `Value`'s sees through them
/// first); when `fast` gives up, converts the owned copy instead.
#[inline]
fn direct<'a, T: FromValue>(
    value: ValueRef<'a>,
    fast: impl FnOnce(ValueRef<'a>) -> Option<T>,
) -> Result<T> {
    match fast(value.clone().without_attributes()) {
        Some(t) => Ok(t),
        None => owned(&value),
    }
}

/// The owned conversion of a view: what a direct conversion that cannot
/// succeed falls back on, so that its error is `from_value`'s own.
#[cold]
#[inline(never)]
fn owned<T: FromValue>(value: &ValueRef<'_>) -> Result<T> {
    T::from_value(value.to_value())
}

/// The owned conversion of a map's pair, as a two-element array.
#[inline(never)]
fn owned_pair<T: FromValue>(key: &ValueRef<'_>, value: &ValueRef<'_>) -> Result<T> {
    T::from_value(Value::Array(vec![key.to_value(), value.to_value()]))
}

/// Room for the replies of a request announced as `count`, reserved up
/// front (beyond a bound the vector grows as they come).
fn reserved(count: usize) -> usize {
    count.min(4096)
}

/// Converts each element of an array, set or push (nil has none) and hands
/// it to `add`; `None` if the value is something else or an element fails.
fn each_ref<T: FromValue>(value: ValueRef<'_>, add: impl FnMut(T)) -> Option<()> {
    match value {
        ValueRef::Array(items) | ValueRef::Set(items) | ValueRef::Push(items) => items
            .convert_each(
                element_from_bulk::<T>,
                |item| T::from_value_ref(item).ok(),
                add,
            ),
        ValueRef::Nil => Some(()),
        _ => None,
    }
}

/// The number of elements `each_ref` will hand over, to size a collection.
/// Exact: a wire view's count was checked against the bytes received.
fn items_len(value: &ValueRef<'_>) -> usize {
    value.items().map_or(0, |items| items.len())
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Value> {
        Ok(value)
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<Value> {
        Ok(value.to_value())
    }

    #[inline(always)]
    fn from_bulk(bytes: &[u8]) -> Option<Value> {
        Some(Value::BulkString(bytes.to_vec()))
    }
}

/// A command's error reply kept as a value: `Ok(Err(e))`, with
/// [`ServerError::index`] set inside a pipeline or transaction. Other
/// failures (a reply that does not fit `T`) are still errors.
///
/// ```
/// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
/// # let stream = FakeServer::replying(&[b"+OK\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n:1\r\n"]);
/// use respline::{Connection, Pipeline, ServerError};
///
/// let mut conn = Connection::new(stream);
/// let mut pipe = Pipeline::new();
/// pipe.cmd(["SET", "s", "text"]).cmd(["INCR", "s"]).cmd(["INCR", "n"]);
/// let (_, incr_s, incr_n): ((), Result<i64, ServerError>, i64) = pipe.query(&mut conn)?;
/// let e = incr_s.unwrap_err();
/// assert_eq!((e.code(), e.index, incr_n), ("WRONGTYPE", Some(1), 1));
/// # Ok::<(), respline::Error>(())
/// ```
impl<T: FromValue> FromValue for std::result::Result<T, ServerError> {
    fn from_value(value: Value) -> Result<Self> {
        match server_error(&value) {
            Some(e) => Ok(Err(e)),
            None => keep_server_error(T::from_value(value)),
        }
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<Self> {
        match server_error_ref(&value) {
            Some(e) => Ok(Err(e)),
            None => keep_server_error(T::from_value_ref(value)),
        }
    }

    fn from_reply(reply: Value, index: Option<usize>) -> Result<Self> {
        match server_error(&reply) {
            Some(e) => Ok(Err(indexed(e, index))),
            None => keep_server_error(T::from_reply(reply, index)),
        }
    }

    fn from_reply_ref(reply: ValueRef<'_>, index: Option<usize>) -> Result<Self> {
        match server_error_ref(&reply) {
            Some(e) => Ok(Err(indexed(e, index))),
            None => keep_server_error(T::from_reply_ref(reply, index)),
        }
    }

    fn from_replies(replies: Vec<Value>) -> Result<Self> {
        keep_server_error(T::from_replies(replies))
    }

    fn from_reply_stream(count: usize, run: ReplyStream<'_>) -> Result<Self> {
        // A failure to read is returned as it is, even a server error.
        let mut read_failed = false;
        let result = T::from_reply_stream(count, &mut |each| {
            run(each).map_err(|e| {
                read_failed = true;
                e
            })
        });
        if read_failed {
            return result.map(Ok);
        }
        keep_server_error(result)
    }
}

fn indexed(e: ServerError, index: Option<usize>) -> ServerError {
    match index {
        Some(i) => e.with_index(i),
        None => e,
    }
}

fn keep_server_error<T>(result: Result<T>) -> Result<std::result::Result<T, ServerError>> {
    match result {
        Ok(t) => Ok(Ok(t)),
        Err(Error::Server(e)) => Ok(Err(*e)),
        Err(e) => Err(e),
    }
}

/// The first error reply among a request's replies, with its index.
fn first_error_reply(replies: &[Value]) -> Option<Error> {
    replies
        .iter()
        .enumerate()
        .find_map(|(i, v)| error_reply(i, &v.view()))
}

/// The error a reply is, with its index.
fn error_reply(i: usize, reply: &ValueRef<'_>) -> Option<Error> {
    server_error_ref(reply).map(|e| e.with_index(i).into())
}

/// Converts replies one by one, each with its index, and keeps the failure
/// to report: the first server error if there is one (it explains more than
/// a shape mismatch), else the first failure. Every reply is converted, so
/// the answer does not depend on where conversion stopped.
#[derive(Default)]
struct Outcome {
    failure: Option<Error>,
}

impl Outcome {
    fn take<T: FromValue>(&mut self, reply: Option<(usize, Value)>) -> Option<T> {
        let (i, reply) = reply?;
        self.keep(T::from_reply(reply, Some(i)))
    }

    /// [`take`](Outcome::take) for a borrowed reply.
    fn take_ref<T: FromValue>(&mut self, i: usize, reply: ValueRef<'_>) -> Option<T> {
        self.keep(T::from_reply_ref(reply, Some(i)))
    }

    fn keep<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(t) => Some(t),
            Err(e) => {
                let replace = match &self.failure {
                    None => true,
                    Some(kept) => e.is_server() && !kept.is_server(),
                };
                if replace {
                    self.failure = Some(e);
                }
                None
            }
        }
    }

    /// `done`, or the failure kept.
    fn finish<T>(self, done: T) -> Result<T> {
        match self.failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}

/// The server error carried by an error value. Inlined: it is asked of
/// every reply, and almost none is an error.
#[inline]
pub(crate) fn server_error(value: &Value) -> Option<ServerError> {
    match value {
        Value::Error(_) | Value::BlobError(_) | Value::Attribute { .. } => error_of(&value.view()),
        _ => None,
    }
}

/// [`server_error`] for a borrowed value.
#[inline]
pub(crate) fn server_error_ref(value: &ValueRef<'_>) -> Option<ServerError> {
    match value {
        ValueRef::Error(_) | ValueRef::BlobError(_) | ValueRef::Attribute(_) => error_of(value),
        _ => None,
    }
}

#[cold]
fn error_of(value: &ValueRef<'_>) -> Option<ServerError> {
    match value {
        ValueRef::Error(e) => Some(ServerError::new(e)),
        ValueRef::BlobError(b) => Some(ServerError::new(&String::from_utf8_lossy(b))),
        ValueRef::Attribute(a) => server_error_ref(&a.value()),
        _ => None,
    }
}

/// The error for a value of the wrong shape, or the server error it carries
/// (at any depth).
pub(crate) fn mismatch(expected: &'static str, value: &Value) -> Error {
    match find_error(value) {
        Some(e) => e.into(),
        None => Error::conversion(expected, describe(value)),
    }
}

/// The first error value in `value`, depth first, seeing through attributes.
fn find_error(value: &Value) -> Option<ServerError> {
    find_error_ref(&value.view())
}

/// [`find_error`] for a borrowed value.
fn find_error_ref(value: &ValueRef<'_>) -> Option<ServerError> {
    match value {
        ValueRef::Error(_) | ValueRef::BlobError(_) => server_error_ref(value),
        ValueRef::Attribute(a) => find_error_ref(&a.value()),
        ValueRef::Array(items) | ValueRef::Set(items) | ValueRef::Push(items) => {
            items.clone().find_map(|v| find_error_ref(&v))
        }
        ValueRef::Map(pairs) => pairs
            .clone()
            .find_map(|(k, v)| find_error_ref(&k).or_else(|| find_error_ref(&v))),
        _ => None,
    }
}

fn first_error<'a>(values: impl IntoIterator<Item = &'a Value>) -> Option<ServerError> {
    values.into_iter().find_map(find_error)
}

fn pair_refs(pairs: &[(Value, Value)]) -> impl Iterator<Item = &Value> {
    pairs
        .iter()
        .flat_map(|(k, v)| iter::once(k).chain(iter::once(v)))
}

/// A conversion error inside an aggregate gives way to a server error held
/// by the elements not converted yet.
fn prefer_server<'a>(err: Error, rest: impl IntoIterator<Item = &'a Value>) -> Error {
    match err {
        Error::Conversion(_) => match first_error(rest) {
            Some(e) => e.into(),
            None => err,
        },
        _ => err,
    }
}

/// What arrived, for an error message: the kind and a short rendering.
fn describe(value: &Value) -> String {
    match value {
        Value::Nil => "nil".to_string(),
        _ => format!("{} {}", value.kind(), value),
    }
}

/// `"array of 3 elements"`, for errors about lengths.
fn count(kind: &str, n: usize) -> String {
    format!("{} of {} element{}", kind, n, if n == 1 { "" } else { "s" })
}

/// The value without attributes, or the server error it is.
fn plain(value: Value) -> Result<Value> {
    let value = value.into_without_attributes();
    match server_error(&value) {
        Some(e) => Err(e.into()),
        None => Ok(value),
    }
}

impl FromValue for () {
    fn from_value(value: Value) -> Result<()> {
        Self::from_value_ref(value.view())
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<()> {
        match find_error_ref(&value) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn from_replies(replies: Vec<Value>) -> Result<()> {
        let mut outcome = Outcome::default();
        for reply in replies.into_iter().enumerate() {
            outcome.take::<()>(Some(reply));
        }
        outcome.finish(())
    }

    fn from_reply_stream(_count: usize, run: ReplyStream<'_>) -> Result<()> {
        let mut outcome = Outcome::default();
        run(&mut |i, v| {
            outcome.take_ref::<()>(i, v);
        })?;
        outcome.finish(())
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<String> {
        match plain(value)? {
            Value::SimpleString(s) => Ok(s.into_owned()),
            Value::BulkString(b) => {
                String::from_utf8(b).map_err(|e| not_utf8(&Value::BulkString(e.into_bytes())))
            }
            Value::Verbatim { format, text } => String::from_utf8(text).map_err(|e| {
                not_utf8(&Value::Verbatim {
                    format,
                    text: e.into_bytes(),
                })
            }),
            Value::BigNumber(n) => Ok(n),
            other => number_text(&other.view()).ok_or_else(|| mismatch("string", &other)),
        }
    }

    #[inline(always)]
    fn from_bulk(bytes: &[u8]) -> Option<String> {
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<String> {
        // The commonest case first, without the general dispatch.
        if let ValueRef::BulkString(b) = value {
            if let Ok(text) = std::str::from_utf8(b) {
                return Ok(text.to_owned());
            }
        }
        direct(value, |v| match v {
            ValueRef::SimpleString(s) => Some(s.to_owned()),
            ValueRef::BulkString(b) | ValueRef::Verbatim { text: b, .. } => {
                std::str::from_utf8(b).ok().map(str::to_owned)
            }
            other => number_text(&other),
        })
    }
}

/// The decimal text of an integer, double or big number.
fn number_text(value: &ValueRef<'_>) -> Option<String> {
    match *value {
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Double(d) => Some(double_text(d)),
        ValueRef::BigNumber(n) => Some(n.to_owned()),
        _ => None,
    }
}

fn not_utf8(value: &Value) -> Error {
    Error::conversion("UTF-8 string", describe(value))
}

/// A double as text that parses back to the same value: the shortest
/// round-trip form, with `inf`, `-inf` and `nan` as Redis writes them.
fn double_text(d: f64) -> String {
    if d.is_nan() {
        "nan".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{:?}", d)
    }
}

/// An integral double as an `Int`, or `None` if it has a fraction, is not
/// finite, or is beyond the widest integer types.
fn integral(d: f64) -> Option<Int> {
    // `u128::MAX as f64` rounds to 2^128, so `<` keeps every value in range,
    // and an integral double below it converts exactly.
    if d.is_finite() && d.fract() == 0.0 && d.abs() < u128::MAX as f64 {
        Some(Int::new(d < 0.0, d.abs() as u128))
    } else {
        None
    }
}

fn integer<T: TryFrom<u128> + TryFrom<i128>>(value: Value, name: &'static str) -> Result<T> {
    let value = plain(value)?;
    integer_of(&value.view()).ok_or_else(|| mismatch(name, &value))
}

/// The integer in a value (without attributes), if it has one that fits.
fn integer_of<T: TryFrom<u128> + TryFrom<i128>>(value: &ValueRef<'_>) -> Option<T> {
    match *value {
        ValueRef::Integer(i) => T::try_from(i128::from(i)).ok(),
        ValueRef::BulkString(b) => number::parse(b, Form::Canonical).and_then(Int::narrow),
        ValueRef::SimpleString(s) => {
            number::parse(s.as_bytes(), Form::Canonical).and_then(Int::narrow)
        }
        ValueRef::BigNumber(n) => number::parse(n.as_bytes(), Form::Signed).and_then(Int::narrow),
        ValueRef::Double(d) => integral(d).and_then(Int::narrow),
        _ => None,
    }
}

macro_rules! integer_impls {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> Result<$t> {
                integer(value, stringify!($t))
            }

            fn from_value_ref(value: ValueRef<'_>) -> Result<$t> {
                direct(value, |v| integer_of(&v))
            }

            #[inline(always)]
            fn from_bulk(bytes: &[u8]) -> Option<$t> {
                integer_of(&ValueRef::BulkString(bytes))
            }
        }
    )*};
}

integer_impls!(i8, i16, i32, i64, i128, isize, u16, u32, u64, u128, usize);

impl FromValue for u8 {
    fn from_value(value: Value) -> Result<u8> {
        integer(value, "u8")
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<u8> {
        direct(value, |v| integer_of(&v))
    }

    fn from_byte_vec(bytes: Vec<u8>) -> Option<Vec<u8>> {
        Some(bytes)
    }

    #[inline(always)]
    fn from_bulk(bytes: &[u8]) -> Option<u8> {
        integer_of(&ValueRef::BulkString(bytes))
    }
}

/// The number in a numeric or string value, as Redis writes doubles.
fn float(value: &ValueRef<'_>) -> Option<f64> {
    match *value {
        ValueRef::Double(d) => Some(d),
        ValueRef::Integer(i) => Some(i as f64),
        ValueRef::BulkString(b) => parse_double(b),
        ValueRef::SimpleString(s) => parse_double(s.as_bytes()),
        ValueRef::BigNumber(n) => n.parse::<f64>().ok().filter(|d| d.is_finite()),
        _ => None,
    }
}

/// The number as an `f32`: rounding is expected; overflowing to infinity
/// is not.
fn float32(value: &ValueRef<'_>) -> Option<f32> {
    let d = float(value)?;
    let f = d as f32;
    if f.is_finite() || !d.is_finite() {
        Some(f)
    } else {
        None
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<f64> {
        let value = plain(value)?;
        float(&value.view()).ok_or_else(|| mismatch("f64", &value))
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<f64> {
        direct(value, |v| float(&v))
    }

    #[inline(always)]
    fn from_bulk(bytes: &[u8]) -> Option<f64> {
        float(&ValueRef::BulkString(bytes))
    }
}

impl FromValue for f32 {
    fn from_value(value: Value) -> Result<f32> {
        let value = plain(value)?;
        float32(&value.view()).ok_or_else(|| mismatch("f32", &value))
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<f32> {
        direct(value, |v| float32(&v))
    }

    #[inline(always)]
    fn from_bulk(bytes: &[u8]) -> Option<f32> {
        float32(&ValueRef::BulkString(bytes))
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<bool> {
        let value = plain(value)?;
        boolean(&value.view()).ok_or_else(|| mismatch("boolean", &value))
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<bool> {
        direct(value, |v| boolean(&v))
    }

    #[inline(always)]
    fn from_bulk(bytes: &[u8]) -> Option<bool> {
        boolean(&ValueRef::BulkString(bytes))
    }
}

/// The truth of a boolean, of integer `0` or `1`, or of string `"0"` or `"1"`.
fn boolean(value: &ValueRef<'_>) -> Option<bool> {
    match *value {
        ValueRef::Boolean(b) => Some(b),
        ValueRef::Integer(0) => Some(false),
        ValueRef::Integer(1) => Some(true),
        ValueRef::BulkString(b) => zero_or_one(b),
        ValueRef::SimpleString(s) => zero_or_one(s.as_bytes()),
        _ => None,
    }
}

fn zero_or_one(text: &[u8]) -> Option<bool> {
    match text {
        b"0" => Some(false),
        b"1" => Some(true),
        _ => None,
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Option<T>> {
        match plain(value)? {
            Value::Nil => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }

    #[inline(always)]
    fn from_bulk(bytes: &[u8]) -> Option<Option<T>> {
        T::from_bulk(bytes).map(Some)
    }

    /// No way back needed: nil, an error, or `T`'s own conversion (which
    /// fails as `T::from_value` does).
    fn from_value_ref(value: ValueRef<'_>) -> Result<Option<T>> {
        match value.without_attributes() {
            ValueRef::Nil => Ok(None),
            other => match server_error_ref(&other) {
                Some(e) => Err(e.into()),
                None => T::from_value_ref(other).map(Some),
            },
        }
    }
}

/// Converts each element in order and hands it to `add`. On failure, a
/// server error among the elements not reached yet wins.
fn each<T: FromValue>(items: Vec<Value>, mut add: impl FnMut(T)) -> Result<()> {
    let mut rest = items.into_iter();
    while let Some(item) = rest.next() {
        match T::from_value(item) {
            Ok(t) => add(t),
            Err(e) => return Err(prefer_server(e, rest.as_slice())),
        }
    }
    Ok(())
}

/// True if `T` takes a whole byte string (only `u8` does). The probe costs
/// nothing: an empty `Vec` does not allocate.
fn takes_bytes<T: FromValue>() -> bool {
    T::from_byte_vec(Vec::new()).is_some()
}

fn bytes_into<T: FromValue>(bytes: Vec<u8>) -> Result<Vec<T>> {
    let len = bytes.len();
    T::from_byte_vec(bytes)
        .ok_or_else(|| Error::conversion("array", format!("bulk string of {} bytes", len)))
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_replies(replies: Vec<Value>) -> Result<Vec<T>> {
        let mut outcome = Outcome::default();
        let mut out = Vec::with_capacity(replies.len());
        for reply in replies.into_iter().enumerate() {
            if let Some(t) = outcome.take::<T>(Some(reply)) {
                out.push(t);
            }
        }
        outcome.finish(out)
    }

    fn from_reply_stream(count: usize, run: ReplyStream<'_>) -> Result<Vec<T>> {
        let mut outcome = Outcome::default();
        let mut out = Vec::with_capacity(reserved(count));
        run(&mut |i, v| {
            if let Some(t) = outcome.take_ref::<T>(i, v) {
                out.push(t);
            }
        })?;
        outcome.finish(out)
    }

    fn from_value(value: Value) -> Result<Vec<T>> {
        match plain(value)? {
            Value::Array(items) | Value::Set(items) | Value::Push(items) => {
                let mut out = Vec::with_capacity(items.len());
                each(items, |t| out.push(t))?;
                Ok(out)
            }
            Value::Map(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                let mut rest = pairs.into_iter();
                while let Some((k, v)) = rest.next() {
                    match T::from_value(Value::Array(vec![k, v])) {
                        Ok(t) => out.push(t),
                        Err(e) => return Err(prefer_server(e, pair_refs(rest.as_slice()))),
                    }
                }
                Ok(out)
            }
            Value::Nil => Ok(Vec::new()),
            Value::BulkString(b) if takes_bytes::<T>() => bytes_into(b),
            Value::SimpleString(s) if takes_bytes::<T>() => bytes_into(s.into_owned().into_bytes()),
            Value::Verbatim { text, .. } if takes_bytes::<T>() => bytes_into(text),
            other if takes_bytes::<T>() => Err(mismatch("bytes", &other)),
            other => Err(mismatch("array", &other)),
        }
    }

    #[inline(always)]
    fn from_bulk(bytes: &[u8]) -> Option<Vec<T>> {
        if takes_bytes::<T>() {
            T::from_byte_vec(bytes.to_vec())
        } else {
            None
        }
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<Vec<T>> {
        // The commonest case first: a bulk string as bytes (`Vec<u8>`).
        if let ValueRef::BulkString(b) = value {
            if takes_bytes::<T>() {
                if let Some(bytes) = T::from_byte_vec(b.to_vec()) {
                    return Ok(bytes);
                }
            }
        }
        direct(value, vec_of)
    }
}

/// `Vec<T>`'s direct conversion (of a value without attributes).
fn vec_of<T: FromValue>(value: ValueRef<'_>) -> Option<Vec<T>> {
    match value {
        ValueRef::Map(pairs) => {
            let mut out = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                out.push(T::from_pair_ref(k, v).ok()?);
            }
            Some(out)
        }
        ValueRef::BulkString(b) | ValueRef::Verbatim { text: b, .. } if takes_bytes::<T>() => {
            T::from_byte_vec(b.to_vec())
        }
        ValueRef::SimpleString(s) if takes_bytes::<T>() => T::from_byte_vec(s.as_bytes().to_vec()),
        other => {
            let mut out = Vec::with_capacity(items_len(&other));
            each_ref(other, |t| out.push(t))?;
            Some(out)
        }
    }
}

/// The number of pairs a map conversion will produce, to size the map.
fn pair_count(value: &ValueRef<'_>) -> usize {
    value.pairs().map_or(0, |pairs| pairs.len())
}

/// Converts the pairs of a map, or of a flat array or set of even length,
/// and hands each to `add`.
fn each_pair<K: FromValue, V: FromValue>(value: Value, mut add: impl FnMut(K, V)) -> Result<()> {
    let kind = value.kind();
    match value {
        Value::Map(pairs) => {
            let mut rest = pairs.into_iter();
            while let Some((k, v)) = rest.next() {
                let k = match K::from_value(k) {
                    Ok(k) => k,
                    Err(e) => {
                        let later = iter::once(&v).chain(pair_refs(rest.as_slice()));
                        return Err(prefer_server(e, later));
                    }
                };
                match V::from_value(v) {
                    Ok(v) => add(k, v),
                    Err(e) => return Err(prefer_server(e, pair_refs(rest.as_slice()))),
                }
            }
            Ok(())
        }
        Value::Array(items) | Value::Set(items) if items.len() % 2 == 0 => {
            let mut rest = items.into_iter();
            while let (Some(k), Some(v)) = (rest.next(), rest.next()) {
                let k = match K::from_value(k) {
                    Ok(k) => k,
                    Err(e) => {
                        let later = iter::once(&v).chain(rest.as_slice());
                        return Err(prefer_server(e, later));
                    }
                };
                match V::from_value(v) {
                    Ok(v) => add(k, v),
                    Err(e) => return Err(prefer_server(e, rest.as_slice())),
                }
            }
            Ok(())
        }
        Value::Array(items) | Value::Set(items) => match first_error(&items) {
            Some(e) => Err(e.into()),
            None => Err(Error::conversion(
                "map or array of key/value pairs",
                count(kind, items.len()),
            )),
        },
        Value::Nil => Ok(()),
        other => Err(mismatch("map", &other)),
    }
}

/// [`each_pair`]'s direct path: `None` where it would fail.
fn each_pair_ref<K: FromValue, V: FromValue>(
    value: ValueRef<'_>,
    mut add: impl FnMut(K, V),
) -> Option<()> {
    if value.is_nil() {
        return Some(());
    }
    for (k, v) in value.pairs()? {
        add(K::from_value_ref(k).ok()?, V::from_value_ref(v).ok()?);
    }
    Some(())
}

impl<K, V, S> FromValue for HashMap<K, V, S>
where
    K: FromValue + Eq + Hash,
    V: FromValue,
    S: BuildHasher + Default,
{
    fn from_value(value: Value) -> Result<HashMap<K, V, S>> {
        let value = plain(value)?;
        let mut map = HashMap::with_capacity_and_hasher(pair_count(&value.view()), S::default());
        each_pair(value, |k, v| {
            map.insert(k, v);
        })?;
        Ok(map)
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<HashMap<K, V, S>> {
        direct(value, |v| {
            let mut map = HashMap::with_capacity_and_hasher(pair_count(&v), S::default());
            each_pair_ref(v, |k, v| {
                map.insert(k, v);
            })?;
            Some(map)
        })
    }
}

impl<K: FromValue + Ord, V: FromValue> FromValue for BTreeMap<K, V> {
    fn from_value(value: Value) -> Result<BTreeMap<K, V>> {
        let mut map = BTreeMap::new();
        each_pair(plain(value)?, |k, v| {
            map.insert(k, v);
        })?;
        Ok(map)
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<BTreeMap<K, V>> {
        direct(value, |v| {
            let mut map = BTreeMap::new();
            each_pair_ref(v, |k, v| {
                map.insert(k, v);
            })?;
            Some(map)
        })
    }
}

/// The elements of an array, set or push; nil gives none.
fn elements(value: Value, expected: &'static str) -> Result<Vec<Value>> {
    match plain(value)? {
        Value::Array(items) | Value::Set(items) | Value::Push(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(mismatch(expected, &other)),
    }
}

impl<T, S> FromValue for HashSet<T, S>
where
    T: FromValue + Eq + Hash,
    S: BuildHasher + Default,
{
    fn from_value(value: Value) -> Result<HashSet<T, S>> {
        let items = elements(value, "set")?;
        let mut set = HashSet::with_capacity_and_hasher(items.len(), S::default());
        each(items, |t| {
            set.insert(t);
        })?;
        Ok(set)
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<HashSet<T, S>> {
        direct(value, |v| {
            let mut set = HashSet::with_capacity_and_hasher(items_len(&v), S::default());
            each_ref(v, |t| {
                set.insert(t);
            })?;
            Some(set)
        })
    }
}

impl<T: FromValue + Ord> FromValue for BTreeSet<T> {
    fn from_value(value: Value) -> Result<BTreeSet<T>> {
        let mut set = BTreeSet::new();
        each(elements(value, "set")?, |t| {
            set.insert(t);
        })?;
        Ok(set)
    }

    fn from_value_ref(value: ValueRef<'_>) -> Result<BTreeSet<T>> {
        direct(value, |v| {
            let mut set = BTreeSet::new();
            each_ref(v, |t| {
                set.insert(t);
            })?;
            Some(set)
        })
    }
}

/// The elements of an array, set or push of exactly `n` elements.
fn tuple_items(value: Value, n: usize) -> Result<vec::IntoIter<Value>> {
    let expected = || {
        let noun = count("array", n);
        format!("an {}", noun)
    };
    match plain(value)? {
        Value::Array(items) | Value::Set(items) | Value::Push(items) if items.len() == n => {
            Ok(items.into_iter())
        }
        value @ (Value::Array(_) | Value::Set(_) | Value::Push(_)) => {
            let len = value.as_slice().map_or(0, <[Value]>::len);
            match find_error(&value) {
                Some(e) => Err(e.into()),
                None => Err(Error::conversion(expected(), count(value.kind(), len))),
            }
        }
        other => match find_error(&other) {
            Some(e) => Err(e.into()),
            None => Err(Error::conversion(expected(), describe(&other))),
        },
    }
}

/// The next tuple element, converted; the length was checked before.
fn next_item<T: FromValue>(rest: &mut vec::IntoIter<Value>) -> Result<T> {
    match rest.next() {
        Some(item) => T::from_value(item).map_err(|e| prefer_server(e, rest.as_slice())),
        None => Err(Error::conversion(
            "another tuple element",
            "end of array".to_string(),
        )),
    }
}

/// A tuple whose arity is not the number of replies: the first error
/// reply, if any, explains more.
fn wrong_reply_count(n: usize, replies: &[Value]) -> Error {
    first_error_reply(replies).unwrap_or_else(|| reply_count_mismatch(n, replies.len()))
}

fn reply_count_mismatch(n: usize, got: usize) -> Error {
    Error::conversion(
        format!("{} replies, one per element of the tuple", n),
        format!("{} replies", got),
    )
}

/// A tuple's direct conversion from the elements of a view.
trait TupleRef: Sized {
    /// The tuple, if there are exactly as many elements and each converts.
    fn from_items<'a>(items: impl ExactSizeIterator<Item = ValueRef<'a>>) -> Option<Self>;
}

/// What a tuple keeps while its replies stream in: the first error reply
/// and how many replies came (for a wrong count), and the conversions.
struct TupleStream<S> {
    outcome: Outcome,
    first_error: Option<Error>,
    seen: usize,
    slots: S,
}

impl<S> TupleStream<S> {
    fn new(slots: S) -> TupleStream<S> {
        TupleStream {
            outcome: Outcome::default(),
            first_error: None,
            seen: 0,
            slots,
        }
    }

    /// Counts a reply, noting the first that is an error.
    fn arrived(&mut self, i: usize, reply: &ValueRef<'_>) {
        self.seen += 1;
        if self.first_error.is_none() {
            self.first_error = error_reply(i, reply);
        }
    }

    /// The error of a wrong reply count (`count` announced, `n` needed),
    /// as [`wrong_reply_count`] gives it.
    fn wrong_count(&mut self, n: usize, count: usize) -> Option<Error> {
        if self.seen == n && count == n {
            return None;
        }
        let seen = self.seen;
        Some(
            self.first_error
                .take()
                .unwrap_or_else(|| reply_count_mismatch(n, seen)),
        )
    }
}

macro_rules! tuple_impls {
    ($($n:literal => ($($i:tt $t:ident),+);)+) => {$(
        impl<$($t: FromValue),+> TupleRef for ($($t,)+) {
            fn from_items<'a>(
                mut items: impl ExactSizeIterator<Item = ValueRef<'a>>,
            ) -> Option<Self> {
                if items.len() != $n {
                    return None;
                }
                Some(($($t::from_value_ref(items.next()?).ok()?,)+))
            }
        }

        impl<$($t: FromValue),+> FromValue for ($($t,)+) {
            fn from_value(value: Value) -> Result<($($t,)+)> {
                let mut rest = tuple_items(value, $n)?;
                Ok(($(next_item::<$t>(&mut rest)?,)+))
            }

            fn from_value_ref(value: ValueRef<'_>) -> Result<($($t,)+)> {
                direct(value, |v| Self::from_items(v.items()?))
            }

            fn from_pair_ref(key: ValueRef<'_>, value: ValueRef<'_>) -> Result<($($t,)+)> {
                match Self::from_items([key.clone(), value.clone()].into_iter()) {
                    Some(t) => Ok(t),
                    None => owned_pair(&key, &value),
                }
            }

            #[allow(non_snake_case)]
            fn from_replies(replies: Vec<Value>) -> Result<($($t,)+)> {
                if replies.len() != $n {
                    return Err(wrong_reply_count($n, &replies));
                }
                let mut outcome = Outcome::default();
                let mut rest = replies.into_iter().enumerate();
                let taken = ($(outcome.take::<$t>(rest.next()),)+);
                match (outcome.failure, taken) {
                    (None, ($(Some($t),)+)) => Ok(($($t,)+)),
                    (Some(e), _) => Err(e),
                    (None, _) => Err(wrong_reply_count($n, &[])),
                }
            }

            #[allow(non_snake_case)]
            fn from_reply_stream(count: usize, run: ReplyStream<'_>) -> Result<($($t,)+)> {
                let mut s = TupleStream::new(($(None::<$t>,)+));
                // A wrong count is an error once every reply is read;
                // until then, nothing to convert.
                let convert = count == $n;
                run(&mut |i, v| {
                    s.arrived(i, &v);
                    match i {
                        $($i if convert => s.slots.$i = s.outcome.take_ref::<$t>(i, v),)+
                        _ => {}
                    }
                })?;
                if let Some(e) = s.wrong_count($n, count) {
                    return Err(e);
                }
                match (s.outcome.failure, s.slots) {
                    (None, ($(Some($t),)+)) => Ok(($($t,)+)),
                    (Some(e), _) => Err(e),
                    (None, _) => Err(wrong_reply_count($n, &[])),
                }
            }
        }
    )+};
}

tuple_impls! {
    1 => (0 A);
    2 => (0 A, 1 B);
    3 => (0 A, 1 B, 2 C);
    4 => (0 A, 1 B, 2 C, 3 D);
    5 => (0 A, 1 B, 2 C, 3 D, 4 E);
    6 => (0 A, 1 B, 2 C, 3 D, 4 E, 5 F);
    7 => (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G);
    8 => (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn simple(s: &'static str) -> Value {
        Value::SimpleString(Cow::Borrowed(s))
    }

    fn err(line: &str) -> Value {
        Value::Error(line.to_string())
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    fn attr(value: Value) -> Value {
        Value::Attribute {
            attributes: vec![(bulk("key-popularity"), Value::Integer(1))],
            value: Box::new(value),
        }
    }

    fn conv<T: FromValue>(value: Value) -> Result<T> {
        T::from_value(value)
    }

    /// The (expected, found) of a conversion error; panics on anything else.
    fn conversion_error<T: FromValue + std::fmt::Debug>(value: Value) -> (String, String) {
        match T::from_value(value) {
            Err(Error::Conversion(e)) => (e.expected.into_owned(), e.found),
            other => panic!("expected a conversion error, got {:?}", other),
        }
    }

    /// The (code, message) of a server error; panics on anything else.
    fn server<T: FromValue + std::fmt::Debug>(value: Value) -> (String, String) {
        match T::from_value(value) {
            Err(Error::Server(e)) => (e.code().to_string(), e.message().to_string()),
            other => panic!("expected a server error, got {:?}", other),
        }
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn value_keeps_everything() {
        let v = arr(vec![err("ERR x"), attr(Value::Integer(1))]);
        assert_eq!(conv::<Value>(v.clone()).unwrap(), v);
        assert_eq!(conv::<Value>(err("ERR x")).unwrap(), err("ERR x"));
        // Elements converted as Value keep their errors too.
        let items: Vec<Value> = conv(arr(vec![Value::Integer(1), err("ERR y")])).unwrap();
        assert_eq!(items[1], err("ERR y"));
    }

    #[test]
    fn unit_accepts_anything_but_errors() {
        for v in [
            Value::Nil,
            simple("OK"),
            Value::Integer(3),
            arr(vec![bulk("a"), Value::Nil]),
            Value::Map(vec![(bulk("k"), Value::Boolean(true))]),
            attr(simple("OK")),
        ] {
            conv::<()>(v).unwrap();
        }
        assert_eq!(server::<()>(err("ERR no")), pair("ERR", "no"));
        assert_eq!(
            server::<()>(arr(vec![simple("OK"), arr(vec![err("WRONGTYPE deep")])])),
            pair("WRONGTYPE", "deep")
        );
        assert_eq!(
            server::<()>(Value::Map(vec![(bulk("k"), attr(err("NOSCRIPT v")))])),
            pair("NOSCRIPT", "v")
        );
    }

    #[test]
    fn strings() {
        assert_eq!(conv::<String>(simple("OK")).unwrap(), "OK");
        assert_eq!(conv::<String>(bulk("héllo")).unwrap(), "héllo");
        let verbatim = Value::Verbatim {
            format: *b"txt",
            text: b"some text".to_vec(),
        };
        assert_eq!(conv::<String>(verbatim).unwrap(), "some text");
        assert_eq!(conv::<String>(Value::Integer(-42)).unwrap(), "-42");
        assert_eq!(
            conv::<String>(Value::BigNumber("123456789012345678901234567890".into())).unwrap(),
            "123456789012345678901234567890"
        );
        assert_eq!(conv::<String>(bulk("")).unwrap(), "");
    }

    #[test]
    fn doubles_as_strings_parse_back() {
        for (d, text) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e300, "1e300"),
            (1.5e-7, "1.5e-7"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ] {
            let s = conv::<String>(Value::Double(d)).unwrap();
            assert_eq!(s, text);
            let back = parse_double(s.as_bytes()).unwrap();
            assert!(
                back == d || (back.is_nan() && d.is_nan()),
                "{} -> {}",
                d,
                back
            );
            assert_eq!(back.is_sign_negative(), d.is_sign_negative() && !d.is_nan());
        }
        // Shortest round-trip form, whatever the value.
        for d in [f64::MAX, f64::MIN_POSITIVE, 5e-324, 123456.789, -2.5e20] {
            let s = conv::<String>(Value::Double(d)).unwrap();
            assert_eq!(parse_double(s.as_bytes()), Some(d), "{}", s);
        }
    }

    #[test]
    fn string_errors() {
        assert_eq!(
            conversion_error::<String>(Value::Nil),
            ("string".to_string(), "nil".to_string())
        );
        assert_eq!(
            conversion_error::<String>(Value::BulkString(vec![b'a', 0xff])),
            (
                "UTF-8 string".to_string(),
                "bulk string \"a\\xff\"".to_string()
            )
        );
        let verbatim = Value::Verbatim {
            format: *b"txt",
            text: vec![0xc3],
        };
        assert_eq!(
            conversion_error::<String>(verbatim),
            (
                "UTF-8 string".to_string(),
                "verbatim string \"\\xc3\"".to_string()
            )
        );
        assert_eq!(
            conversion_error::<String>(Value::Boolean(true)),
            ("string".to_string(), "boolean true".to_string())
        );
        assert_eq!(
            conversion_error::<String>(arr(vec![bulk("a")])),
            ("string".to_string(), "array [\"a\"]".to_string())
        );
        assert_eq!(server::<String>(err("ERR boom")), pair("ERR", "boom"));
        assert_eq!(
            server::<String>(Value::BlobError(b"SYNTAX invalid\r\nsyntax".to_vec())),
            pair("SYNTAX", "invalid\r\nsyntax")
        );
        let e = conv::<String>(Value::Nil).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot convert reply: expected string, found nil"
        );
        assert!(!e.breaks_connection());
    }

    #[test]
    fn byte_vectors() {
        assert_eq!(
            conv::<Vec<u8>>(Value::BulkString(vec![0, 0xff, 13])).unwrap(),
            vec![0, 0xff, 13]
        );
        assert_eq!(conv::<Vec<u8>>(simple("OK")).unwrap(), b"OK".to_vec());
        let verbatim = Value::Verbatim {
            format: *b"mkd",
            text: b"# hi".to_vec(),
        };
        assert_eq!(conv::<Vec<u8>>(verbatim).unwrap(), b"# hi".to_vec());
        assert_eq!(conv::<Vec<u8>>(attr(bulk("x"))).unwrap(), b"x".to_vec());
        // An array of small integers is also bytes, element by element.
        assert_eq!(
            conv::<Vec<u8>>(arr(vec![Value::Integer(1), bulk("2")])).unwrap(),
            vec![1, 2]
        );
        assert_eq!(conv::<Vec<u8>>(Value::Nil).unwrap(), Vec::<u8>::new());
        assert_eq!(
            conversion_error::<Vec<u8>>(Value::Integer(5)),
            ("bytes".to_string(), "integer 5".to_string())
        );
        assert_eq!(
            conversion_error::<Vec<u8>>(arr(vec![Value::Integer(256)])),
            ("u8".to_string(), "integer 256".to_string())
        );
        // A bulk string is not a list of anything but bytes.
        assert_eq!(
            conversion_error::<Vec<String>>(bulk("ab")),
            ("array".to_string(), "bulk string \"ab\"".to_string())
        );
        // Nested byte strings.
        let v: Vec<Vec<u8>> = conv(arr(vec![bulk("a"), Value::BulkString(vec![0xfe])])).unwrap();
        assert_eq!(v, vec![b"a".to_vec(), vec![0xfe]]);
    }

    #[test]
    fn integers_from_every_form() {
        assert_eq!(conv::<i64>(Value::Integer(-7)).unwrap(), -7);
        assert_eq!(conv::<i64>(bulk("5")).unwrap(), 5);
        assert_eq!(conv::<i64>(simple("-12")).unwrap(), -12);
        assert_eq!(conv::<i64>(bulk("0")).unwrap(), 0);
        assert_eq!(conv::<i64>(Value::BigNumber("42".into())).unwrap(), 42);
        assert_eq!(conv::<i64>(Value::BigNumber("+42".into())).unwrap(), 42);
        assert_eq!(conv::<i64>(Value::BigNumber("-0".into())).unwrap(), 0);
        assert_eq!(conv::<i64>(Value::Double(3.0)).unwrap(), 3);
        assert_eq!(conv::<i64>(Value::Double(-0.0)).unwrap(), 0);
        assert_eq!(conv::<i64>(attr(Value::Integer(9))).unwrap(), 9);
        assert_eq!(conv::<i64>(attr(attr(bulk("10")))).unwrap(), 10);
        assert_eq!(conv::<i64>(bulk("-9223372036854775808")).unwrap(), i64::MIN);
        assert_eq!(conv::<i64>(bulk("9223372036854775807")).unwrap(), i64::MAX);
        assert_eq!(conv::<u64>(bulk("18446744073709551615")).unwrap(), u64::MAX);
        assert_eq!(
            conv::<u128>(Value::BigNumber(u128::MAX.to_string())).unwrap(),
            u128::MAX
        );
        assert_eq!(
            conv::<i128>(Value::BigNumber(i128::MIN.to_string())).unwrap(),
            i128::MIN
        );
        assert_eq!(
            conv::<i128>(Value::Integer(i64::MIN)).unwrap(),
            i128::from(i64::MIN)
        );
        assert_eq!(conv::<u8>(Value::Integer(255)).unwrap(), 255);
        assert_eq!(conv::<i8>(Value::Integer(-128)).unwrap(), -128);
        assert_eq!(conv::<i16>(bulk("-32768")).unwrap(), i16::MIN);
        assert_eq!(conv::<u16>(Value::Integer(65535)).unwrap(), u16::MAX);
        assert_eq!(conv::<i32>(Value::Double(-2147483648.0)).unwrap(), i32::MIN);
        assert_eq!(conv::<u32>(simple("4294967295")).unwrap(), u32::MAX);
        assert_eq!(conv::<isize>(Value::Integer(-1)).unwrap(), -1);
        assert_eq!(conv::<usize>(bulk("17")).unwrap(), 17);
        // Doubles that are integral and within range, up to the widest types.
        assert_eq!(conv::<u64>(Value::Double(2f64.powi(63))).unwrap(), 1 << 63);
        assert_eq!(
            conv::<u128>(Value::Double(2f64.powi(127))).unwrap(),
            1 << 127
        );
        assert_eq!(
            conv::<i128>(Value::Double(-(2f64.powi(127)))).unwrap(),
            i128::MIN
        );
    }

    #[test]
    fn integer_range_errors_name_type_and_value() {
        assert_eq!(
            conversion_error::<u8>(Value::Integer(256)),
            ("u8".to_string(), "integer 256".to_string())
        );
        assert_eq!(
            conversion_error::<i8>(Value::Integer(-129)),
            ("i8".to_string(), "integer -129".to_string())
        );
        assert_eq!(
            conversion_error::<u64>(Value::Integer(-1)),
            ("u64".to_string(), "integer -1".to_string())
        );
        assert_eq!(
            conversion_error::<usize>(bulk("-1")),
            ("usize".to_string(), "bulk string \"-1\"".to_string())
        );
        assert_eq!(
            conversion_error::<i64>(bulk("9223372036854775808")).0,
            "i64"
        );
        assert_eq!(
            conversion_error::<i64>(bulk("-9223372036854775809")).0,
            "i64"
        );
        assert_eq!(
            conversion_error::<i64>(Value::BigNumber("99999999999999999999".into())),
            (
                "i64".to_string(),
                "big number (99999999999999999999)".to_string()
            )
        );
        // Beyond even u128: overflow while parsing is a plain mismatch.
        let huge = "9".repeat(60);
        assert_eq!(conversion_error::<u128>(Value::BigNumber(huge)).0, "u128");
        assert_eq!(
            conversion_error::<i64>(Value::Double(2f64.powi(63))),
            ("i64".to_string(), "double 9.223372036854776e18".to_string())
        );
        assert_eq!(
            conv::<u16>(Value::Integer(70000)).unwrap_err().to_string(),
            "cannot convert reply: expected u16, found integer 70000"
        );
    }

    #[test]
    fn integer_shape_errors() {
        for text in [
            "", "+1", "01", "-0", "-", " 1", "1 ", "1.0", "1e3", "0x10", "١",
        ] {
            assert_eq!(
                conversion_error::<i64>(bulk(text)),
                ("i64".to_string(), format!("bulk string {}", bulk(text))),
                "{:?}",
                text
            );
        }
        for d in [1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e40] {
            assert_eq!(conversion_error::<i64>(Value::Double(d)).0, "i64", "{}", d);
        }
        assert_eq!(conversion_error::<i128>(Value::Double(1e40)).0, "i128");
        assert_eq!(conversion_error::<u128>(Value::Double(1e39)).0, "u128");
        assert_eq!(conversion_error::<u8>(Value::Double(-1.0)).0, "u8");
        assert_eq!(
            conversion_error::<i64>(Value::Boolean(true)),
            ("i64".to_string(), "boolean true".to_string())
        );
        assert_eq!(
            conversion_error::<i64>(Value::Nil),
            ("i64".to_string(), "nil".to_string())
        );
        assert_eq!(
            conversion_error::<i32>(arr(vec![Value::Integer(1)])),
            ("i32".to_string(), "array [1]".to_string())
        );
        assert_eq!(
            server::<i64>(err("WRONGTYPE Operation")),
            pair("WRONGTYPE", "Operation")
        );
        assert_eq!(server::<u8>(attr(err("ERR inner"))), pair("ERR", "inner"));
    }

    #[test]
    fn floats() {
        assert_eq!(conv::<f64>(Value::Double(1.5)).unwrap(), 1.5);
        assert_eq!(conv::<f64>(bulk("1.5")).unwrap(), 1.5);
        assert_eq!(conv::<f64>(simple("-2")).unwrap(), -2.0);
        assert_eq!(conv::<f64>(bulk("1e3")).unwrap(), 1000.0);
        assert_eq!(conv::<f64>(bulk("1.5E-2")).unwrap(), 0.015);
        assert_eq!(conv::<f64>(Value::Integer(7)).unwrap(), 7.0);
        assert_eq!(conv::<f64>(Value::BigNumber("12".into())).unwrap(), 12.0);
        assert_eq!(conv::<f64>(bulk("inf")).unwrap(), f64::INFINITY);
        assert_eq!(conv::<f64>(bulk("+inf")).unwrap(), f64::INFINITY);
        assert_eq!(conv::<f64>(bulk("-inf")).unwrap(), f64::NEG_INFINITY);
        assert!(conv::<f64>(bulk("nan")).unwrap().is_nan());
        assert!(conv::<f64>(Value::Double(f64::NAN)).unwrap().is_nan());
        assert_eq!(conv::<f64>(attr(bulk("0.25"))).unwrap(), 0.25);
        assert_eq!(conv::<f32>(bulk("1.5")).unwrap(), 1.5f32);
        assert_eq!(conv::<f32>(Value::Double(0.1)).unwrap(), 0.1f32);
        assert_eq!(conv::<f32>(Value::Integer(-3)).unwrap(), -3.0f32);
        assert_eq!(
            conv::<f32>(Value::Double(f64::NEG_INFINITY)).unwrap(),
            f32::NEG_INFINITY
        );
        assert!(conv::<f32>(bulk("nan")).unwrap().is_nan());
    }

    #[test]
    fn float_errors() {
        for text in [
            "infinity", "Infinity", "", "1.", ".5", "1e", "abc", "1e400", " 1",
        ] {
            assert_eq!(
                conversion_error::<f64>(bulk(text)),
                ("f64".to_string(), format!("bulk string {}", bulk(text))),
                "{:?}",
                text
            );
        }
        assert_eq!(
            conversion_error::<f32>(Value::Double(1e300)),
            ("f32".to_string(), "double 1e300".to_string())
        );
        assert_eq!(
            conversion_error::<f64>(Value::Nil),
            ("f64".to_string(), "nil".to_string())
        );
        assert_eq!(
            conversion_error::<f64>(Value::Boolean(false)),
            ("f64".to_string(), "boolean false".to_string())
        );
        assert_eq!(
            conversion_error::<f64>(Value::BigNumber("9".repeat(400))).0,
            "f64"
        );
        assert_eq!(server::<f64>(err("ERR nope")), pair("ERR", "nope"));
    }

    #[test]
    fn booleans_are_strict() {
        assert!(conv::<bool>(Value::Boolean(true)).unwrap());
        assert!(!conv::<bool>(Value::Boolean(false)).unwrap());
        assert!(conv::<bool>(Value::Integer(1)).unwrap());
        assert!(!conv::<bool>(Value::Integer(0)).unwrap());
        assert!(conv::<bool>(bulk("1")).unwrap());
        assert!(!conv::<bool>(simple("0")).unwrap());
        assert!(conv::<bool>(attr(Value::Boolean(true))).unwrap());
        for v in [
            Value::Integer(2),
            Value::Integer(-1),
            simple("OK"),
            bulk("true"),
            bulk("01"),
            Value::Double(1.0),
            Value::Nil,
        ] {
            let shown = describe(&v);
            assert_eq!(conversion_error::<bool>(v), ("boolean".to_string(), shown));
        }
        assert_eq!(conversion_error::<bool>(Value::Integer(2)).1, "integer 2");
        assert_eq!(server::<bool>(err("ERR x")), pair("ERR", "x"));
    }

    #[test]
    fn options() {
        assert_eq!(conv::<Option<i64>>(Value::Nil).unwrap(), None);
        assert_eq!(conv::<Option<i64>>(attr(Value::Nil)).unwrap(), None);
        assert_eq!(conv::<Option<i64>>(bulk("3")).unwrap(), Some(3));
        assert_eq!(
            conv::<Option<String>>(bulk("x")).unwrap(),
            Some("x".to_string())
        );
        assert_eq!(server::<Option<i64>>(err("ERR a")), pair("ERR", "a"));
        // Even when the inner type would keep an error value.
        assert_eq!(server::<Option<Value>>(err("ERR b")), pair("ERR", "b"));
        assert_eq!(
            server::<Option<Value>>(attr(err("ERR c"))),
            pair("ERR", "c")
        );
        assert_eq!(
            conversion_error::<Option<i64>>(bulk("x")),
            ("i64".to_string(), "bulk string \"x\"".to_string())
        );
        // MGET: nil elements.
        let v: Vec<Option<String>> = conv(arr(vec![bulk("a"), Value::Nil, bulk("c")])).unwrap();
        assert_eq!(v, vec![Some("a".to_string()), None, Some("c".to_string())]);
    }

    #[test]
    fn vectors() {
        let ints = arr(vec![Value::Integer(1), bulk("2"), Value::Double(3.0)]);
        assert_eq!(conv::<Vec<i64>>(ints).unwrap(), vec![1, 2, 3]);
        assert_eq!(
            conv::<Vec<String>>(Value::Set(vec![bulk("a"), bulk("b")])).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            conv::<Vec<String>>(Value::Push(vec![bulk("message"), bulk("ch")])).unwrap(),
            vec!["message", "ch"]
        );
        // RESP2 BLPOP timeout is `*-1`.
        assert_eq!(
            conv::<Vec<String>>(Value::Nil).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(conv::<Vec<i64>>(arr(vec![])).unwrap(), Vec::<i64>::new());
        assert_eq!(
            conv::<Vec<i64>>(attr(arr(vec![attr(Value::Integer(1))]))).unwrap(),
            vec![1]
        );
        assert_eq!(
            conversion_error::<Vec<i64>>(Value::Integer(1)),
            ("array".to_string(), "integer 1".to_string())
        );
        assert_eq!(
            conversion_error::<Vec<i64>>(arr(vec![Value::Integer(1), bulk("x")])),
            ("i64".to_string(), "bulk string \"x\"".to_string())
        );
        let nested: Vec<Vec<i64>> = conv(arr(vec![
            arr(vec![Value::Integer(1)]),
            Value::Nil,
            arr(vec![]),
        ]))
        .unwrap();
        assert_eq!(nested, vec![vec![1], vec![], vec![]]);
    }

    #[test]
    fn vectors_of_pairs_from_maps() {
        let map = Value::Map(vec![
            (bulk("a"), Value::Integer(1)),
            (simple("b"), bulk("2")),
        ]);
        let pairs: Vec<(String, i64)> = conv(map.clone()).unwrap();
        assert_eq!(pairs, vec![("a".to_string(), 1), ("b".to_string(), 2)]);
        // Duplicate keys and wire order are kept.
        let dup = Value::Map(vec![
            (bulk("k"), Value::Integer(1)),
            (bulk("k"), Value::Integer(2)),
        ]);
        assert_eq!(
            conv::<Vec<(String, i64)>>(dup).unwrap(),
            vec![("k".to_string(), 1), ("k".to_string(), 2)]
        );
        // Each pair is seen as a two-element array.
        let raw: Vec<Value> = conv(map.clone()).unwrap();
        assert_eq!(raw[0], arr(vec![bulk("a"), Value::Integer(1)]));
        assert_eq!(
            conversion_error::<Vec<String>>(map),
            ("string".to_string(), "array [\"a\", 1]".to_string())
        );
    }

    #[test]
    fn maps_from_resp2_and_resp3() {
        let resp2 = arr(vec![bulk("f1"), bulk("1"), bulk("f2"), bulk("2")]);
        let resp3 = Value::Map(vec![
            (bulk("f1"), Value::Integer(1)),
            (bulk("f2"), Value::Integer(2)),
        ]);
        let a: HashMap<String, i64> = conv(resp2.clone()).unwrap();
        let b: HashMap<String, i64> = conv(resp3.clone()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert_eq!(a["f2"], 2);
        let c: BTreeMap<String, i64> = conv(resp2).unwrap();
        let d: BTreeMap<String, i64> = conv(resp3).unwrap();
        assert_eq!(c, d);
        assert_eq!(
            c.into_iter().collect::<Vec<_>>(),
            vec![("f1".to_string(), 1), ("f2".to_string(), 2)]
        );
        // A set of even length, and nil.
        let from_set: HashMap<String, String> =
            conv(Value::Set(vec![bulk("k"), bulk("v")])).unwrap();
        assert_eq!(from_set["k"], "v");
        assert!(conv::<HashMap<String, i64>>(Value::Nil).unwrap().is_empty());
        assert!(conv::<BTreeMap<String, i64>>(Value::Nil)
            .unwrap()
            .is_empty());
        assert!(conv::<HashMap<String, i64>>(arr(vec![]))
            .unwrap()
            .is_empty());
        // A custom hasher.
        let m: HashMap<i64, bool, std::collections::hash_map::RandomState> =
            conv(Value::Map(vec![(Value::Integer(1), Value::Boolean(true))])).unwrap();
        assert!(m[&1]);
        // A repeated key keeps its last value.
        let m: HashMap<String, i64> = conv(arr(vec![
            bulk("k"),
            Value::Integer(1),
            bulk("k"),
            Value::Integer(2),
        ]))
        .unwrap();
        assert_eq!(m["k"], 2);
        // Attributes on keys, values and the map itself.
        let m: BTreeMap<String, i64> = conv(attr(Value::Map(vec![(
            attr(bulk("a")),
            attr(Value::Integer(5)),
        )])))
        .unwrap();
        assert_eq!(m["a"], 5);
    }

    #[test]
    fn map_errors() {
        assert_eq!(
            conversion_error::<HashMap<String, String>>(arr(vec![bulk("a"), bulk("b"), bulk("c")])),
            (
                "map or array of key/value pairs".to_string(),
                "array of 3 elements".to_string()
            )
        );
        assert_eq!(
            conversion_error::<BTreeMap<String, String>>(Value::Set(vec![bulk("a")])),
            (
                "map or array of key/value pairs".to_string(),
                "set of 1 element".to_string()
            )
        );
        assert_eq!(
            conversion_error::<HashMap<String, String>>(Value::Integer(3)),
            ("map".to_string(), "integer 3".to_string())
        );
        assert_eq!(
            conversion_error::<HashMap<String, String>>(Value::Push(vec![])),
            ("map".to_string(), "push >[]".to_string())
        );
        assert_eq!(
            conversion_error::<HashMap<String, i64>>(Value::Map(vec![(bulk("k"), bulk("v"))])),
            ("i64".to_string(), "bulk string \"v\"".to_string())
        );
        assert_eq!(
            conversion_error::<HashMap<i64, String>>(arr(vec![bulk("k"), bulk("v")])),
            ("i64".to_string(), "bulk string \"k\"".to_string())
        );
        // Odd length with an error inside: the server error wins.
        assert_eq!(
            server::<HashMap<String, String>>(arr(vec![bulk("a"), bulk("b"), err("ERR odd")])),
            pair("ERR", "odd")
        );
    }

    #[test]
    fn sets_from_resp2_and_resp3() {
        let resp2 = arr(vec![bulk("a"), bulk("b"), bulk("a")]);
        let resp3 = Value::Set(vec![bulk("b"), bulk("a")]);
        let a: HashSet<String> = conv(resp2.clone()).unwrap();
        let b: HashSet<String> = conv(resp3.clone()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        let c: BTreeSet<String> = conv(resp2).unwrap();
        let d: BTreeSet<String> = conv(resp3).unwrap();
        assert_eq!(c, d);
        assert!(conv::<HashSet<i64>>(Value::Nil).unwrap().is_empty());
        assert!(conv::<BTreeSet<i64>>(Value::Nil).unwrap().is_empty());
        let p: BTreeSet<i64> = conv(Value::Push(vec![Value::Integer(2), bulk("1")])).unwrap();
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![1, 2]);
        let h: HashSet<i64, std::collections::hash_map::RandomState> =
            conv(attr(Value::Set(vec![attr(Value::Integer(4))]))).unwrap();
        assert!(h.contains(&4));
        assert_eq!(
            conversion_error::<HashSet<String>>(bulk("a")),
            ("set".to_string(), "bulk string \"a\"".to_string())
        );
        assert_eq!(
            conversion_error::<BTreeSet<i64>>(Value::Set(vec![bulk("z")])),
            ("i64".to_string(), "bulk string \"z\"".to_string())
        );
        assert_eq!(
            server::<HashSet<String>>(Value::Set(vec![bulk("a"), err("ERR in set")])),
            pair("ERR", "in set")
        );
    }

    #[test]
    fn tuples() {
        assert_eq!(conv::<(i64,)>(arr(vec![bulk("1")])).unwrap(), (1,));
        let (key, value): (String, String) = conv(arr(vec![bulk("list"), bulk("item")])).unwrap();
        assert_eq!((key.as_str(), value.as_str()), ("list", "item"));
        assert_eq!(
            conv::<(i64, String, bool)>(Value::Set(vec![
                Value::Integer(1),
                bulk("a"),
                Value::Boolean(true)
            ]))
            .unwrap(),
            (1, "a".to_string(), true)
        );
        assert_eq!(
            conv::<(String, String, String)>(Value::Push(vec![
                bulk("message"),
                bulk("ch"),
                bulk("hi")
            ]))
            .unwrap()
            .2,
            "hi"
        );
        let eight = arr((1..=8).map(Value::Integer).collect());
        assert_eq!(
            conv::<(u8, u16, u32, u64, i8, i16, i32, i64)>(eight).unwrap(),
            (1, 2, 3, 4, 5, 6, 7, 8)
        );
        assert_eq!(
            conv::<(Option<i64>, Vec<i64>)>(attr(arr(vec![Value::Nil, Value::Nil]))).unwrap(),
            (None, vec![])
        );
        // BLPOP: a pair, or nil on timeout.
        assert_eq!(conv::<Option<(String, String)>>(Value::Nil).unwrap(), None);
    }

    #[test]
    fn tuple_errors() {
        assert_eq!(
            conversion_error::<(i64, i64, i64)>(arr(vec![Value::Integer(1), Value::Integer(2)])),
            (
                "an array of 3 elements".to_string(),
                "array of 2 elements".to_string()
            )
        );
        assert_eq!(
            conv::<(i64, i64, i64)>(arr(vec![Value::Integer(1), Value::Integer(2)]))
                .unwrap_err()
                .to_string(),
            "cannot convert reply: expected an array of 3 elements, found array of 2 elements"
        );
        assert_eq!(
            conversion_error::<(i64,)>(Value::Set(vec![])),
            (
                "an array of 1 element".to_string(),
                "set of 0 elements".to_string()
            )
        );
        assert_eq!(
            conversion_error::<(i64, i64)>(Value::Push(vec![Value::Integer(1)])),
            (
                "an array of 2 elements".to_string(),
                "push of 1 element".to_string()
            )
        );
        assert_eq!(
            conversion_error::<(i64, i64)>(Value::Nil),
            ("an array of 2 elements".to_string(), "nil".to_string())
        );
        assert_eq!(
            conversion_error::<(String, String)>(Value::Map(vec![(bulk("k"), bulk("v"))])),
            (
                "an array of 2 elements".to_string(),
                "map {\"k\": \"v\"}".to_string()
            )
        );
        assert_eq!(
            conversion_error::<(i64, String)>(arr(vec![bulk("x"), bulk("y")])),
            ("i64".to_string(), "bulk string \"x\"".to_string())
        );
        // Wrong length, but an error inside: the server error wins.
        assert_eq!(
            server::<(i64, i64)>(arr(vec![err("ERR first")])),
            pair("ERR", "first")
        );
    }

    #[test]
    fn nested_errors_are_server_errors_with_their_code() {
        // EXEC with a failed command inside.
        let exec = arr(vec![
            simple("OK"),
            err("WRONGTYPE Operation against a key"),
            Value::Integer(3),
        ]);
        assert_eq!(
            server::<Vec<String>>(exec.clone()),
            pair("WRONGTYPE", "Operation against a key")
        );
        assert_eq!(
            server::<(String, i64, i64)>(exec.clone()),
            pair("WRONGTYPE", "Operation against a key")
        );
        assert_eq!(
            server::<()>(exec),
            pair("WRONGTYPE", "Operation against a key")
        );
        let blob = Value::BlobError(b"NOPERM no\xffperm".to_vec());
        assert_eq!(
            server::<Vec<Vec<u8>>>(arr(vec![bulk("a"), blob])),
            pair("NOPERM", "no\u{fffd}perm")
        );
        assert_eq!(
            server::<HashMap<String, i64>>(Value::Map(vec![(bulk("a"), err("ERR in value"))])),
            pair("ERR", "in value")
        );
        assert_eq!(
            server::<HashMap<String, i64>>(Value::Map(vec![(
                err("ERR in key"),
                Value::Integer(1)
            )])),
            pair("ERR", "in key")
        );
        assert_eq!(
            server::<BTreeMap<String, i64>>(arr(vec![bulk("a"), attr(err("ERR flat"))])),
            pair("ERR", "flat")
        );
        assert_eq!(
            server::<Vec<(String, i64)>>(Value::Map(vec![(bulk("a"), err("ERR pair"))])),
            pair("ERR", "pair")
        );
        assert_eq!(
            server::<Vec<Option<Vec<i64>>>>(arr(vec![Value::Nil, arr(vec![err("ERR deep")])])),
            pair("ERR", "deep")
        );
        // A server error wins over a mismatch met earlier in the same reply.
        assert_eq!(
            server::<Vec<i64>>(arr(vec![bulk("not a number"), err("ERR later")])),
            pair("ERR", "later")
        );
        assert_eq!(
            server::<(i64, i64)>(arr(vec![bulk("x"), err("ERR second")])),
            pair("ERR", "second")
        );
        assert_eq!(
            server::<HashMap<i64, i64>>(Value::Map(vec![
                (bulk("x"), Value::Integer(1)),
                (bulk("y"), err("ERR later value")),
            ])),
            pair("ERR", "later value")
        );
        assert_eq!(
            server::<HashMap<i64, i64>>(Value::Map(vec![(bulk("x"), err("ERR own value"))])),
            pair("ERR", "own value")
        );
        assert_eq!(
            server::<HashMap<i64, i64>>(arr(vec![bulk("x"), err("ERR flat value")])),
            pair("ERR", "flat value")
        );
        assert_eq!(
            server::<Vec<(i64, i64)>>(Value::Map(vec![
                (bulk("x"), Value::Integer(1)),
                (bulk("y"), err("ERR next pair")),
            ])),
            pair("ERR", "next pair")
        );
        // A shape mismatch on the whole reply, with an error inside it.
        assert_eq!(
            server::<String>(arr(vec![err("ERR inside")])),
            pair("ERR", "inside")
        );
        assert_eq!(
            server::<i64>(arr(vec![attr(err("ERR inside"))])),
            pair("ERR", "inside")
        );
        // Server errors leave the connection usable.
        assert!(!conv::<i64>(err("ERR x")).unwrap_err().breaks_connection());
    }

    #[test]
    fn resp2_and_resp3_forms_convert_alike() {
        assert_eq!(
            conv::<f64>(bulk("1.5")).unwrap(),
            conv::<f64>(Value::Double(1.5)).unwrap()
        );
        assert_eq!(
            conv::<i64>(bulk("1")).unwrap(),
            conv::<i64>(Value::Integer(1)).unwrap()
        );
        assert_eq!(
            conv::<bool>(Value::Integer(1)).unwrap(),
            conv::<bool>(Value::Boolean(true)).unwrap()
        );
        assert_eq!(
            conv::<String>(bulk("hello")).unwrap(),
            conv::<String>(Value::Verbatim {
                format: *b"txt",
                text: b"hello".to_vec()
            })
            .unwrap()
        );
        assert_eq!(
            conv::<Option<String>>(Value::Nil).unwrap(),
            conv::<Option<String>>(attr(Value::Nil)).unwrap()
        );
        // ZRANGE ... WITHSCORES: RESP2 gives a flat array, RESP3 pairs with doubles.
        let resp2 = arr(vec![bulk("a"), bulk("1.5"), bulk("b"), bulk("2")]);
        let resp3 = Value::Map(vec![
            (bulk("a"), Value::Double(1.5)),
            (bulk("b"), Value::Double(2.0)),
        ]);
        assert_eq!(
            conv::<BTreeMap<String, f64>>(resp2).unwrap(),
            conv::<BTreeMap<String, f64>>(resp3).unwrap()
        );
        // SMEMBERS: array in RESP2, set in RESP3.
        assert_eq!(
            conv::<BTreeSet<i64>>(arr(vec![bulk("3"), bulk("1")])).unwrap(),
            conv::<BTreeSet<i64>>(Value::Set(vec![Value::Integer(1), Value::Integer(3)])).unwrap()
        );
        // Big numbers read as their RESP2 bulk form does.
        assert_eq!(
            conv::<u64>(Value::BigNumber("18446744073709551615".into())).unwrap(),
            conv::<u64>(bulk("18446744073709551615")).unwrap()
        );
    }

    #[test]
    fn from_value_through_the_public_name() {
        // The trait as other modules see it.
        let v: Vec<(String, Option<i64>)> = crate::FromValue::from_value(arr(vec![
            arr(vec![bulk("a"), Value::Nil]),
            arr(vec![bulk("b"), Value::Integer(2)]),
        ]))
        .unwrap();
        assert_eq!(v, vec![("a".to_string(), None), ("b".to_string(), Some(2))]);
    }

    proptest::proptest! {
        #[test]
        fn integers_read_the_same_in_both_protocols(i in proptest::num::i64::ANY) {
            let text = i.to_string();
            proptest::prop_assert_eq!(conv::<i64>(bulk(&text)).unwrap(), i);
            proptest::prop_assert_eq!(conv::<i64>(Value::Integer(i)).unwrap(), i);
            proptest::prop_assert_eq!(conv::<i128>(Value::BigNumber(text.clone())).unwrap(), i128::from(i));
            proptest::prop_assert_eq!(conv::<String>(Value::Integer(i)).unwrap(), text);
            // Narrow types agree with `TryFrom` on every form.
            proptest::prop_assert_eq!(conv::<i16>(Value::Integer(i)).ok(), i16::try_from(i).ok());
            proptest::prop_assert_eq!(conv::<u32>(bulk(&i.to_string())).ok(), u32::try_from(i).ok());
        }

        #[test]
        fn doubles_read_the_same_in_both_protocols(d in proptest::num::f64::ANY) {
            let text = conv::<String>(Value::Double(d)).unwrap();
            let from_bulk = conv::<f64>(bulk(&text)).unwrap();
            let from_double = conv::<f64>(Value::Double(d)).unwrap();
            if d.is_nan() {
                proptest::prop_assert!(from_bulk.is_nan() && from_double.is_nan());
            } else {
                proptest::prop_assert_eq!(from_bulk.to_bits(), d.to_bits());
                proptest::prop_assert_eq!(from_double.to_bits(), d.to_bits());
            }
        }

        #[test]
        fn flat_arrays_and_maps_give_the_same_map(
            entries in proptest::collection::vec((".{0,8}", proptest::num::i64::ANY), 0..16)
        ) {
            let flat = arr(entries
                .iter()
                .flat_map(|(k, v)| vec![bulk(k), bulk(&v.to_string())])
                .collect());
            let map = Value::Map(entries
                .iter()
                .map(|(k, v)| (bulk(k), Value::Integer(*v)))
                .collect());
            let expected: BTreeMap<String, i64> = entries.iter().cloned().collect();
            proptest::prop_assert_eq!(&conv::<BTreeMap<String, i64>>(flat.clone()).unwrap(), &expected);
            proptest::prop_assert_eq!(&conv::<BTreeMap<String, i64>>(map.clone()).unwrap(), &expected);
            let h1: HashMap<String, i64> = conv(flat).unwrap();
            let h2: HashMap<String, i64> = conv(map).unwrap();
            proptest::prop_assert_eq!(h1, h2);
        }
    }
}

/// The direct conversions of views, held to the owned ones: the same value
/// or the same error, over views of wire bytes (as a connection reads
/// them) and of owned values.
#[cfg(test)]
mod ref_tests {
    use super::*;
    use crate::resp::{decode, encode_value, view_frame, FrameScan, Limits, Protocol, Scanned};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use std::fmt::Debug;

    mod values {
        use crate::Value;
        use proptest::prelude::*;
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/convert_ref_props/values.rs"
        ));
    }

    /// How a frame reached its view.
    #[derive(Debug, PartialEq)]
    enum Path {
        /// Straight from the wire bytes.
        Wire,
        /// From the decoder's owned value (attributes, top-level pushes...).
        Decoded,
    }

    /// Encodes `v` and calls `f` with the view a connection would make of
    /// the frame; also gives the decoded frame, what the owned path reads.
    fn on_wire<R>(
        v: &Value,
        protocol: Protocol,
        f: impl FnOnce(ValueRef<'_>) -> R,
    ) -> (Value, R, Path) {
        let mut buf = Vec::new();
        encode_value(&mut buf, v, protocol);
        let limits = Limits::default();
        let (decoded, used) = decode(&buf, &limits).unwrap().expect("a whole frame");
        assert_eq!(used, buf.len());
        match FrameScan::default().scan(&buf, &limits) {
            Scanned::Complete(n) => {
                assert_eq!(n, buf.len());
                let view = view_frame(&buf[..n]).expect("a checked frame");
                (decoded, f(view), Path::Wire)
            }
            Scanned::Decode => {
                let r = f(decoded.view());
                (decoded, r, Path::Decoded)
            }
            Scanned::Partial => panic!("a whole frame asked for more: {:?}", v),
        }
    }

    /// `T::from_value_ref` of the views of `v` (RESP3 and RESP2 wire bytes,
    /// and `v.view()`) gives what `T::from_value` gives.
    fn check<T: FromValue + Debug>(
        v: &Value,
        same: impl Fn(&T, &T) -> bool,
    ) -> std::result::Result<(), TestCaseError> {
        let name = std::any::type_name::<T>();
        let viewed = T::from_value_ref(v.view());
        let owned = T::from_value(v.clone());
        prop_assert!(
            values::agree(&owned, &viewed, &same),
            "{} of the view of {:?}: {:?}, owned: {:?}",
            name,
            v,
            viewed,
            owned
        );
        for protocol in [Protocol::Resp3, Protocol::Resp2] {
            let (decoded, wire, path) = on_wire(v, protocol, T::from_value_ref);
            let owned = T::from_value(decoded.clone());
            prop_assert!(
                values::agree(&owned, &wire, &same),
                "{} of {:?} ({:?}, {:?}): {:?}, owned: {:?}",
                name,
                decoded,
                protocol,
                path,
                wire,
                owned
            );
        }
        Ok(())
    }

    fn eq<T: PartialEq>(a: &T, b: &T) -> bool {
        a == b
    }

    /// For values holding doubles, NaN included.
    fn same_debug<T: Debug>(a: &T, b: &T) -> bool {
        format!("{:?}", a) == format!("{:?}", b)
    }

    fn every_target(v: &Value) -> std::result::Result<(), TestCaseError> {
        check::<String>(v, eq)?;
        check::<Vec<u8>>(v, eq)?;
        check::<i64>(v, eq)?;
        check::<u8>(v, eq)?;
        check::<u64>(v, eq)?;
        check::<i128>(v, eq)?;
        check::<f64>(v, |a, b| a.to_bits() == b.to_bits())?;
        check::<f32>(v, |a, b| a.to_bits() == b.to_bits())?;
        check::<bool>(v, eq)?;
        check::<Option<i64>>(v, eq)?;
        check::<Vec<String>>(v, eq)?;
        check::<Vec<Vec<u8>>>(v, eq)?;
        check::<Vec<Option<String>>>(v, eq)?;
        check::<HashMap<String, String>>(v, eq)?;
        check::<BTreeMap<String, i64>>(v, eq)?;
        check::<Vec<(String, String)>>(v, eq)?;
        check::<Vec<(String,)>>(v, eq)?;
        check::<Vec<Vec<String>>>(v, eq)?;
        check::<HashSet<String>>(v, eq)?;
        check::<BTreeSet<Vec<u8>>>(v, eq)?;
        check::<(String, i64)>(v, eq)?;
        check::<(Value, Option<Vec<u8>>)>(v, same_debug)?;
        check::<()>(v, eq)?;
        check::<Value>(v, same_debug)?;
        check::<Result<i64, ServerError>>(v, eq)?;
        check::<Option<Result<Vec<String>, ServerError>>>(v, eq)?;
        Ok(())
    }

    /// Streams the wire views of `replies` to `T::from_reply_stream`,
    /// announcing `count` of them.
    fn streamed<T: FromValue>(replies: &[Value], count: usize) -> Result<T> {
        T::from_reply_stream(count, &mut |each| {
            for (i, v) in replies.iter().enumerate() {
                on_wire(v, Protocol::Resp3, |view| each(i, view));
            }
            Ok(())
        })
    }

    fn check_stream<T: FromValue + Debug>(
        replies: &[Value],
        same: impl Fn(&T, &T) -> bool,
    ) -> std::result::Result<(), TestCaseError> {
        let decoded: Vec<Value> = replies
            .iter()
            .map(|v| on_wire(v, Protocol::Resp3, |_| ()).0)
            .collect();
        let collected = T::from_replies(decoded.clone());
        let streamed = streamed::<T>(replies, replies.len());
        prop_assert!(
            values::agree(&collected, &streamed, same),
            "{} of {:?}: streamed {:?}, collected {:?}",
            std::any::type_name::<T>(),
            decoded,
            streamed,
            collected
        );
        Ok(())
    }

    fn every_stream_target(replies: &[Value]) -> std::result::Result<(), TestCaseError> {
        check_stream::<()>(replies, eq)?;
        check_stream::<Vec<String>>(replies, eq)?;
        check_stream::<Vec<Option<i64>>>(replies, eq)?;
        check_stream::<Vec<Result<Vec<String>, ServerError>>>(replies, eq)?;
        check_stream::<(i64,)>(replies, eq)?;
        check_stream::<(String, Vec<String>)>(replies, eq)?;
        check_stream::<(Result<i64, ServerError>, (), Option<String>)>(replies, eq)?;
        check_stream::<Result<(String, String), ServerError>>(replies, eq)?;
        check_stream::<Result<Vec<i64>, ServerError>>(replies, eq)?;
        check_stream::<Value>(replies, same_debug)?;
        check_stream::<HashMap<String, String>>(replies, eq)?;
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(384))]

        #[test]
        fn wire_views_convert_as_values_do(v in values::value()) {
            every_target(&v)?;
        }

        #[test]
        fn streamed_wire_replies_convert_as_collected_ones_do(
            replies in prop::collection::vec(values::value(), 0..5)
        ) {
            every_stream_target(&replies)?;
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    /// Converts the RESP3 wire view of `v`, checking it was read from the
    /// wire bytes, not from a decoded copy.
    fn wire<T: FromValue>(v: &Value) -> Result<T> {
        let (_, r, path) = on_wire(v, Protocol::Resp3, T::from_value_ref);
        assert_eq!(path, Path::Wire, "{:?}", v);
        r
    }

    #[test]
    fn common_replies_are_read_from_the_wire() {
        let mget = arr(vec![bulk("a"), Value::Nil, bulk("c")]);
        assert_eq!(
            wire::<Vec<Option<String>>>(&mget).unwrap(),
            vec![Some("a".to_string()), None, Some("c".to_string())]
        );
        let hgetall = Value::Map(vec![(bulk("f"), bulk("1")), (bulk("g"), Value::Integer(2))]);
        let m: HashMap<String, i64> = wire(&hgetall).unwrap();
        assert_eq!((m["f"], m["g"]), (1, 2));
        let flat = arr(vec![bulk("f"), bulk("1"), bulk("f"), bulk("2")]);
        let m: BTreeMap<String, String> = wire(&flat).unwrap();
        assert_eq!(m["f"], "2", "a repeated key keeps its last value");
        let pairs: Vec<(String, i64)> = wire(&hgetall).unwrap();
        assert_eq!(pairs, vec![("f".to_string(), 1), ("g".to_string(), 2)]);
        assert_eq!(
            wire::<(String, f64)>(&arr(vec![bulk("z"), Value::Double(1.5)])).unwrap(),
            ("z".to_string(), 1.5)
        );
        assert_eq!(wire::<Vec<u8>>(&bulk("ab")).unwrap(), b"ab".to_vec());
        assert_eq!(
            wire::<Vec<u8>>(&arr(vec![Value::Integer(1), bulk("2")])).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            wire::<Vec<String>>(&Value::Nil).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(wire::<String>(&Value::Double(0.1)).unwrap(), "0.1");
        // Errors read as the owned path gives them.
        let exec = arr(vec![bulk("x"), Value::Error("WRONGTYPE no".into())]);
        let e = wire::<Vec<i64>>(&exec).unwrap_err();
        assert_eq!(e.server_error().unwrap().code(), "WRONGTYPE");
        let e = wire::<HashMap<String, String>>(&arr(vec![bulk("a")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot convert reply: expected map or array of key/value pairs, found array of 1 element"
        );
    }

    #[test]
    fn byte_vectors_allocate_once_each() {
        // The outer vector is sized once; each element is one copy of its
        // bytes (N + 1 allocations, no intermediate values).
        let v = arr((0..100).map(|i| bulk(&format!("{:010}", i))).collect());
        let out: Vec<Vec<u8>> = wire(&v).unwrap();
        assert_eq!((out.len(), out.capacity()), (100, 100));
        assert!(out.iter().all(|b| b.len() == 10 && b.capacity() == 10));
        let out: Vec<String> = wire(&v).unwrap();
        assert_eq!(out.capacity(), 100);
        assert!(out.iter().all(|s| s.capacity() == 10));
    }

    /// A type that only has `from_value`: inside a `Vec`, each element is
    /// copied on its own.
    #[derive(Debug, PartialEq)]
    struct Plain(Value);

    impl FromValue for Plain {
        fn from_value(value: Value) -> Result<Plain> {
            match value {
                Value::Integer(_) => Ok(Plain(value)),
                other => Err(mismatch("integer", &other)),
            }
        }
    }

    #[test]
    fn user_types_convert_their_own_elements() {
        let v = arr(vec![Value::Integer(1), Value::Integer(2)]);
        assert_eq!(
            wire::<Vec<Plain>>(&v).unwrap(),
            vec![Plain(Value::Integer(1)), Plain(Value::Integer(2))]
        );
        let bad = arr(vec![Value::Integer(1), bulk("x")]);
        assert_eq!(
            wire::<Vec<Plain>>(&bad).unwrap_err().to_string(),
            <Vec<Plain>>::from_value(bad).unwrap_err().to_string()
        );
    }

    #[test]
    fn tuples_of_the_wrong_count_read_every_reply() {
        let replies = [bulk("1"), Value::Error("ERR second".into()), bulk("3")];
        for count in [2, 3] {
            let mut seen = 0;
            let got = <(i64, i64)>::from_reply_stream(count, &mut |each| {
                for (i, v) in replies.iter().enumerate() {
                    seen += 1;
                    each(i, v.view());
                }
                Ok(())
            });
            let e = got.unwrap_err();
            assert_eq!(seen, 3);
            assert_eq!(e.server_error().unwrap().index, Some(1));
        }
        let got = streamed::<(i64, i64)>(&[bulk("1")], 1).unwrap_err();
        assert_eq!(
            got.to_string(),
            "cannot convert reply: expected 2 replies, one per element of the tuple, found 1 replies"
        );
        // Every reply is converted: the server error wins over an earlier mismatch.
        let replies = [bulk("x"), Value::Error("ERR later".into())];
        let got = streamed::<(i64, i64)>(&replies, 2).unwrap_err();
        assert_eq!(got.server_error().unwrap().index, Some(1));
    }

    #[test]
    fn a_failing_read_is_the_error_even_a_server_error() {
        // `run` fails only when reading fails; its error is returned as it
        // is, never kept as a value by `Result<_, ServerError>`.
        let got = <Result<Vec<i64>, ServerError>>::from_reply_stream(2, &mut |each| {
            each(0, Value::Integer(1).view());
            Err(ServerError::new("ERR read").into())
        });
        assert_eq!(got.unwrap_err().server_error().unwrap().message(), "read");
        let got = <(i64, i64)>::from_reply_stream(2, &mut |each| {
            each(0, bulk("x").view());
            Err(Error::Timeout { operation: "read" })
        });
        assert!(got.unwrap_err().is_timeout());
    }
}
