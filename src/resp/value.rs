//! `Value`: one variant per RESP2/RESP3 wire type.

use std::borrow::Cow;
use std::fmt;

/// A decoded RESP reply.
///
/// There is one variant per wire type of RESP2 and RESP3. Server errors are
/// values here (an `-ERR` inside an array is one element); they become
/// `Err(Error::Server)` only when a [`FromValue`](crate::FromValue) conversion
/// meets them.
///
/// `Display` is short, for messages (long strings and aggregates are cut);
/// `Debug` shows everything, with bulk strings as text, escaped, as
/// redis-cli shows them (bytes that are not UTF-8 as `\xNN`).
///
/// ```
/// use respline::Value;
///
/// let reply = Value::Array(vec![Value::Integer(1), Value::BulkString(b"two".to_vec())]);
/// assert_eq!(reply.to_string(), "[1, \"two\"]");
/// assert_eq!(format!("{:?}", reply), "Array([Integer(1), BulkString(\"two\")])");
/// assert_eq!(format!("{:?}", Value::BulkString(b"caf\xc3\xa9 \xff\n".to_vec())), "BulkString(\"café \\xff\\n\")");
/// assert_eq!(Value::BulkString(b"Alice".to_vec()).as_bytes(), Some(&b"Alice"[..]));
/// ```
#[derive(Clone, PartialEq)]
pub enum Value {
    /// Null: RESP2 `$-1` and `*-1`, and RESP3 `_`, are all this one value.
    Nil,
    /// `+`: a simple string. Common statuses (`OK`, `PONG`, `QUEUED`) are
    /// borrowed from static memory, so they cost no allocation.
    ///
    /// Bytes that are not UTF-8 are replaced with U+FFFD.
    SimpleString(Cow<'static, str>),
    /// `-`: a simple error, for example `ERR unknown command`. Bytes that are
    /// not UTF-8 are replaced with U+FFFD.
    Error(String),
    /// `:`: a signed 64-bit integer.
    Integer(i64),
    /// `$`: a binary-safe bulk string.
    BulkString(Vec<u8>),
    /// `*`: an array of values.
    Array(Vec<Value>),
    /// `,`: a RESP3 double. `-0.0`, infinities and NaN are kept as sent.
    Double(f64),
    /// `#`: a RESP3 boolean.
    Boolean(bool),
    /// `(`: a RESP3 big number, kept as its decimal text (an optional `-`
    /// followed by digits).
    BigNumber(String),
    /// `!`: a RESP3 blob error: binary-safe, the first word is the code.
    BlobError(Vec<u8>),
    /// `=`: a RESP3 verbatim string: a three-byte format (`txt`, `mkd`, or
    /// any other) and the text.
    Verbatim {
        /// The format, for example `*b"txt"`.
        format: [u8; 3],
        /// The text after the `xxx:` prefix.
        text: Vec<u8>,
    },
    /// `%`: a RESP3 map, as key/value pairs in wire order. Keys can be any
    /// value, and duplicates are kept.
    Map(Vec<(Value, Value)>),
    /// `~`: a RESP3 set, in wire order (the protocol does not forbid
    /// duplicates, so none are removed).
    Set(Vec<Value>),
    /// `>`: a RESP3 push frame (pub/sub messages, tracking invalidations).
    Push(Vec<Value>),
    /// `|`: a RESP3 attribute and the value it describes. The attribute
    /// travels with its value; it never takes a reply's place.
    Attribute {
        /// The attribute's key/value pairs, in wire order.
        attributes: Vec<(Value, Value)>,
        /// The value that followed the attribute.
        value: Box<Value>,
    },
}

impl Value {
    /// The name of this value's wire type, as used in error messages.
    ///
    /// ```
    /// assert_eq!(respline::Value::Integer(3).kind(), "integer");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::SimpleString(_) => "simple string",
            Value::Error(_) => "error",
            Value::Integer(_) => "integer",
            Value::BulkString(_) => "bulk string",
            Value::Array(_) => "array",
            Value::Double(_) => "double",
            Value::Boolean(_) => "boolean",
            Value::BigNumber(_) => "big number",
            Value::BlobError(_) => "blob error",
            Value::Verbatim { .. } => "verbatim string",
            Value::Map(_) => "map",
            Value::Set(_) => "set",
            Value::Push(_) => "push",
            Value::Attribute { .. } => "attribute",
        }
    }

    /// True for `Nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// True for a server error, simple (`-`) or blob (`!`).
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_) | Value::BlobError(_))
    }

    /// The value without any attribute wrapped around it.
    pub fn without_attributes(&self) -> &Value {
        let mut v = self;
        while let Value::Attribute { value, .. } = v {
            v = value;
        }
        v
    }

    /// Takes the value out of any attribute wrapped around it.
    pub fn into_without_attributes(self) -> Value {
        let mut v = self;
        while let Value::Attribute { value, .. } = v {
            v = *value;
        }
        v
    }

    /// The bytes of a string-like value (simple, bulk, verbatim), if it is one.
    ///
    /// ```
    /// use respline::Value;
    /// assert_eq!(Value::BulkString(b"hi".to_vec()).as_bytes(), Some(&b"hi"[..]));
    /// assert_eq!(Value::Integer(1).as_bytes(), None);
    /// ```
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self.without_attributes() {
            Value::SimpleString(s) => Some(s.as_bytes()),
            Value::BulkString(b) => Some(b),
            Value::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The integer, if this is an integer value.
    pub fn as_i64(&self) -> Option<i64> {
        match self.without_attributes() {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of an array, set or push, if it is one.
    pub fn as_slice(&self) -> Option<&[Value]> {
        match self.without_attributes() {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Integer(i)
    }
}

impl From<&str> for Value {
    /// A `&str` becomes a bulk string.
    fn from(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Value {
    /// Bytes become a bulk string.
    fn from(b: Vec<u8>) -> Value {
        Value::BulkString(b)
    }
}

/// At most this many bytes of a string are shown by `Display`, so an error
/// message that names a value stays readable.
const DISPLAY_BYTES: usize = 64;
/// At most this many elements of an aggregate are shown by `Display`.
const DISPLAY_ITEMS: usize = 16;

/// Bytes shown as text for `Debug`: UTF-8 as escaped characters, any other
/// byte as `\xNN`, in double quotes.
struct Text<'a>(&'a [u8]);

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char('"')?;
        let mut rest = self.0;
        while !rest.is_empty() {
            let (valid, bad) = match std::str::from_utf8(rest) {
                Ok(text) => (text, 0),
                Err(e) => {
                    let (good, after) = rest.split_at(e.valid_up_to());
                    let bad = e.error_len().unwrap_or(after.len());
                    (std::str::from_utf8(good).unwrap_or_default(), bad)
                }
            };
            for c in valid.chars() {
                match c {
                    '\'' => f.write_char(c)?,
                    _ => write!(f, "{}", c.escape_debug())?,
                }
            }
            let after = &rest[valid.len()..];
            for b in &after[..bad] {
                write!(f, "\\x{:02x}", b)?;
            }
            rest = &after[bad..];
        }
        f.write_char('"')
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("Nil"),
            Value::SimpleString(s) => f.debug_tuple("SimpleString").field(s).finish(),
            Value::Error(e) => f.debug_tuple("Error").field(e).finish(),
            Value::Integer(i) => f.debug_tuple("Integer").field(i).finish(),
            Value::BulkString(b) => f.debug_tuple("BulkString").field(&Text(b)).finish(),
            Value::Array(v) => f.debug_tuple("Array").field(v).finish(),
            Value::Double(d) => f.debug_tuple("Double").field(d).finish(),
            Value::Boolean(b) => f.debug_tuple("Boolean").field(b).finish(),
            Value::BigNumber(n) => f.debug_tuple("BigNumber").field(n).finish(),
            Value::BlobError(b) => f.debug_tuple("BlobError").field(&Text(b)).finish(),
            Value::Verbatim { format, text } => f
                .debug_struct("Verbatim")
                .field("format", &Text(format))
                .field("text", &Text(text))
                .finish(),
            Value::Map(pairs) => f.debug_tuple("Map").field(pairs).finish(),
            Value::Set(v) => f.debug_tuple("Set").field(v).finish(),
            Value::Push(v) => f.debug_tuple("Push").field(v).finish(),
            Value::Attribute { attributes, value } => f
                .debug_struct("Attribute")
                .field("attributes", attributes)
                .field("value", value)
                .finish(),
        }
    }
}

/// A short, human-readable rendering: strings quoted and escaped, long
/// strings and aggregates cut with `...`, attributes shown as `|attrs| value`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::SimpleString(s) => write!(f, "{}", s.escape_debug()),
            Value::Error(e) => write!(f, "(error) {}", e.escape_debug()),
            Value::Integer(i) => write!(f, "{}", i),
            Value::BulkString(b) => write_quoted(f, b),
            Value::Array(v) | Value::Set(v) | Value::Push(v) => {
                let (open, close) = match self {
                    Value::Set(_) => ("~{", "}"),
                    Value::Push(_) => (">[", "]"),
                    _ => ("[", "]"),
                };
                f.write_str(open)?;
                for (i, item) in v.iter().take(DISPLAY_ITEMS).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", item)?;
                }
                if v.len() > DISPLAY_ITEMS {
                    write!(f, ", ... ({} more)", v.len() - DISPLAY_ITEMS)?;
                }
                f.write_str(close)
            }
            Value::Double(d) => write!(f, "{:?}", d),
            Value::Boolean(b) => write!(f, "{}", b),
            Value::BigNumber(n) => write!(f, "({})", n),
            Value::BlobError(b) => {
                f.write_str("(error) ")?;
                write_quoted(f, b)
            }
            Value::Verbatim { text, .. } => write_quoted(f, text),
            Value::Map(pairs) => write_pairs(f, "{", pairs, "}"),
            Value::Attribute { attributes, value } => {
                write_pairs(f, "|", attributes, "| ")?;
                write!(f, "{}", value)
            }
        }
    }
}

fn write_pairs(
    f: &mut fmt::Formatter<'_>,
    open: &str,
    pairs: &[(Value, Value)],
    close: &str,
) -> fmt::Result {
    f.write_str(open)?;
    for (i, (k, v)) in pairs.iter().take(DISPLAY_ITEMS).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}: {}", k, v)?;
    }
    if pairs.len() > DISPLAY_ITEMS {
        write!(f, ", ... ({} more)", pairs.len() - DISPLAY_ITEMS)?;
    }
    f.write_str(close)
}

/// Writes bytes as a quoted string, escaping what is not printable ASCII and
/// cutting after `DISPLAY_BYTES`.
pub(crate) fn write_quoted(f: &mut dyn fmt::Write, bytes: &[u8]) -> fmt::Result {
    f.write_char('"')?;
    for &b in bytes.iter().take(DISPLAY_BYTES) {
        match b {
            b'"' => f.write_str("\\\"")?,
            b'\\' => f.write_str("\\\\")?,
            b'\r' => f.write_str("\\r")?,
            b'\n' => f.write_str("\\n")?,
            b'\t' => f.write_str("\\t")?,
            0x20..=0x7e => f.write_char(b as char)?,
            _ => write!(f, "\\x{:02x}", b)?,
        }
    }
    f.write_char('"')?;
    if bytes.len() > DISPLAY_BYTES {
        write!(f, "... ({} bytes)", bytes.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_short_and_escaped() {
        let v = Value::Array(vec![
            Value::BulkString(b"a\r\n\x00".to_vec()),
            Value::Nil,
            Value::Double(-0.0),
        ]);
        assert_eq!(v.to_string(), "[\"a\\r\\n\\x00\", nil, -0.0]");
        let long = Value::BulkString(vec![b'x'; 100]);
        assert!(long.to_string().ends_with("... (100 bytes)"));
    }

    #[test]
    fn debug_shows_bulk_strings_as_text() {
        let v = Value::Map(vec![(
            Value::BulkString(b"name".to_vec()),
            Value::Verbatim {
                format: *b"txt",
                text: b"say \"hi\"\t\x00\xe2\x82".to_vec(),
            },
        )]);
        assert_eq!(
            format!("{:?}", v),
            "Map([(BulkString(\"name\"), Verbatim { format: \"txt\", text: \"say \\\"hi\\\"\\t\\0\\xe2\\x82\" })])"
        );
        assert_eq!(
            format!("{:?}", Value::BulkString(b"it's".to_vec())),
            "BulkString(\"it's\")"
        );
        assert_eq!(
            format!("{:?}", Value::BlobError(vec![0xff, b'x'])),
            "BlobError(\"\\xffx\")"
        );
        assert_eq!(format!("{:?}", Value::Nil), "Nil");
    }

    #[test]
    fn attributes_are_seen_through() {
        let v = Value::Attribute {
            attributes: vec![(Value::from("ttl"), Value::Integer(3))],
            value: Box::new(Value::Integer(7)),
        };
        assert_eq!(v.as_i64(), Some(7));
        assert_eq!(v.into_without_attributes(), Value::Integer(7));
    }

    #[test]
    fn value_stays_small() {
        // A reply of a million elements holds a million of these.
        assert!(
            std::mem::size_of::<Value>() <= 40,
            "{}",
            std::mem::size_of::<Value>()
        );
    }
}
