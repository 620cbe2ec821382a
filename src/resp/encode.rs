//! [`Value`] and command arguments → RESP bytes, appended to a `Vec<u8>`.
//!
//! Commands are always sent as RESP arrays of bulk strings, never inline, so
//! arguments are binary-safe (`\r\n` and NUL included). Sizes are computed
//! before writing so each call reserves once; numbers are formatted on the
//! stack, never through an allocation.

use super::value::Value;

/// Which RESP version a connection speaks, and in which form
/// [`encode_value`] writes the RESP3-only types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RESP2, the default of every Redis server.
    Resp2,
    /// RESP3, switched on with `HELLO 3` (Redis 6 and later).
    Resp3,
}

/// Appends one command, an array of bulk strings, to `out`, reserving the
/// exact size first.
///
/// ```
/// let mut out = Vec::new();
/// respline::resp::encode_command(&mut out, &["SET", "key", "a\r\nb"]);
/// assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$4\r\na\r\nb\r\n");
/// ```
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    let size = header_len(args.len())
        + args
            .iter()
            .map(|a| bulk_len(a.as_ref().len()))
            .sum::<usize>();
    out.reserve(size);
    write_header(out, b'*', args.len());
    for arg in args {
        write_bulk(out, arg.as_ref());
    }
}

/// Appends `bytes` as one RESP bulk string (`$<len>\r\n<bytes>\r\n`).
///
/// ```
/// let mut out = Vec::new();
/// respline::resp::write_bulk(&mut out, b"");
/// assert_eq!(out, b"$0\r\n\r\n");
/// ```
#[inline]
pub fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bulk_len(bytes.len()));
    write_header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The encoded size of a bulk string with a payload of `len` bytes.
#[inline(always)]
pub(crate) fn bulk_len(len: usize) -> usize {
    header_len(len) + len + 2
}

/// The size of `<type><n>\r\n`.
#[inline(always)]
pub(crate) fn header_len(n: usize) -> usize {
    1 + decimal_len(n as u64) + 2
}

/// Appends `<type><n>\r\n`.
#[inline(always)]
pub(crate) fn write_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    // Most headers are one or two digits: skip the formatter for them.
    if n < 10 {
        out.extend_from_slice(&[kind, b'0' + n as u8, b'\r', b'\n']);
        return;
    }
    if n < 100 {
        let (tens, units) = (b'0' + (n / 10) as u8, b'0' + (n % 10) as u8);
        out.extend_from_slice(&[kind, tens, units, b'\r', b'\n']);
        return;
    }
    let mut digits = NumBuf::new();
    out.push(kind);
    out.extend_from_slice(digits.format_u64(n as u64));
    out.extend_from_slice(b"\r\n");
}

#[inline(always)]
fn decimal_len(mut n: u64) -> usize {
    // Most lengths and counts are short: no loop for them.
    if n < 10 {
        return 1;
    }
    if n < 100 {
        return 2;
    }
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// A stack buffer for formatting one number: the longest is an i128
/// (40 bytes with its sign), or an f64 (at most 24).
pub(crate) struct NumBuf {
    buf: [u8; 40],
    len: usize,
}

impl NumBuf {
    pub(crate) fn new() -> NumBuf {
        NumBuf {
            buf: [0; 40],
            len: 0,
        }
    }

    pub(crate) fn format_u64(&mut self, n: u64) -> &[u8] {
        self.format_u128(n as u128, false)
    }

    pub(crate) fn format_i64(&mut self, n: i64) -> &[u8] {
        self.format_u128(n.unsigned_abs() as u128, n < 0)
    }

    /// Digits are written from the end of the buffer backwards, in u64
    /// arithmetic whenever the number fits (u128 division is a library call,
    /// several times slower).
    pub(crate) fn format_u128(&mut self, mut n: u128, negative: bool) -> &[u8] {
        let mut i = self.buf.len();
        while n > u128::from(u64::MAX) {
            i -= 1;
            self.buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let mut n = n as u64;
        loop {
            i -= 1;
            self.buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if negative {
            i -= 1;
            self.buf[i] = b'-';
        }
        &self.buf[i..]
    }

    /// The shortest text that parses back to the same `f64` (Rust's `{:?}`,
    /// with an exponent for very large or small magnitudes), which Redis's
    /// `strtold` reads as the same number; NaN is written `nan`.
    pub(crate) fn format_f64(&mut self, d: f64) -> &[u8] {
        use std::fmt::Write;
        if d.is_nan() {
            return b"nan";
        }
        self.len = 0;
        // The buffer holds any f64's `{:?}` form, so this cannot fail.
        let _ = write!(self, "{:?}", d);
        self.written()
    }

    /// What `fmt::Write` put in the buffer since the last format.
    pub(crate) fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for NumBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends the RESP encoding of `value`, for tests and for users writing fake
/// servers. Reserves the exact size first.
///
/// With [`Protocol::Resp3`] every type is written in its own form. With
/// [`Protocol::Resp2`] the RESP3-only types are written the way a RESP2
/// server sends the same data: nil as `$-1`, a double or big number as a
/// bulk string, a boolean as `:1`/`:0`, a map as a flat array, a set or push
/// as an array, a verbatim string as a bulk string of its text, a blob error
/// as a simple error, and an attribute as just its value.
///
/// Simple strings and errors cannot carry CR or LF on the wire; any there are
/// written as spaces, as Redis itself does with error messages.
///
/// ```
/// use respline::resp::{encode_value, Protocol};
/// use respline::Value;
///
/// let map = Value::Map(vec![(Value::from("k"), Value::Integer(1))]);
/// let mut out = Vec::new();
/// encode_value(&mut out, &map, Protocol::Resp3);
/// assert_eq!(out, b"%1\r\n$1\r\nk\r\n:1\r\n");
/// out.clear();
/// encode_value(&mut out, &map, Protocol::Resp2);
/// assert_eq!(out, b"*2\r\n$1\r\nk\r\n:1\r\n");
/// ```
pub fn encode_value(out: &mut Vec<u8>, value: &Value, protocol: Protocol) {
    out.reserve(encoded_len(value, protocol));
    write_value(out, value, protocol);
}

/// The exact number of bytes [`encode_value`] writes for `value`.
pub fn encoded_len(value: &Value, protocol: Protocol) -> usize {
    let resp3 = protocol == Protocol::Resp3;
    let mut num = NumBuf::new();
    match value {
        Value::Nil => {
            if resp3 {
                3
            } else {
                5
            }
        }
        Value::SimpleString(s) => s.len() + 3,
        Value::Error(e) => e.len() + 3,
        Value::Integer(i) => num.format_i64(*i).len() + 3,
        Value::BulkString(b) => bulk_len(b.len()),
        Value::Double(d) => {
            let n = num.format_f64(*d).len();
            if resp3 {
                n + 3
            } else {
                bulk_len(n)
            }
        }
        Value::Boolean(_) => 4,
        Value::BigNumber(n) => {
            if resp3 {
                n.len() + 3
            } else {
                bulk_len(n.len())
            }
        }
        Value::BlobError(b) => {
            if resp3 {
                bulk_len(b.len())
            } else {
                b.len() + 3
            }
        }
        Value::Verbatim { text, .. } => {
            if resp3 {
                bulk_len(text.len() + 4)
            } else {
                bulk_len(text.len())
            }
        }
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            header_len(items.len())
                + items
                    .iter()
                    .map(|v| encoded_len(v, protocol))
                    .sum::<usize>()
        }
        Value::Map(pairs) => {
            let n = if resp3 { pairs.len() } else { pairs.len() * 2 };
            header_len(n) + pairs_len(pairs, protocol)
        }
        Value::Attribute { attributes, value } => {
            let inner = encoded_len(value, protocol);
            if resp3 {
                header_len(attributes.len()) + pairs_len(attributes, protocol) + inner
            } else {
                inner
            }
        }
    }
}

fn pairs_len(pairs: &[(Value, Value)], protocol: Protocol) -> usize {
    pairs
        .iter()
        .map(|(k, v)| encoded_len(k, protocol) + encoded_len(v, protocol))
        .sum()
}

fn write_value(out: &mut Vec<u8>, value: &Value, protocol: Protocol) {
    let resp3 = protocol == Protocol::Resp3;
    let mut num = NumBuf::new();
    match value {
        Value::Nil => out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" }),
        Value::SimpleString(s) => write_line(out, b'+', s.as_bytes()),
        Value::Error(e) => write_line(out, b'-', e.as_bytes()),
        Value::Integer(i) => write_line(out, b':', num.format_i64(*i)),
        Value::BulkString(b) => write_bulk(out, b),
        Value::Double(d) => {
            let text = num.format_f64(*d);
            if resp3 {
                write_line(out, b',', text)
            } else {
                write_bulk(out, text)
            }
        }
        Value::Boolean(b) => {
            let text: &[u8] = match (resp3, b) {
                (true, true) => b"#t\r\n",
                (true, false) => b"#f\r\n",
                (false, true) => b":1\r\n",
                (false, false) => b":0\r\n",
            };
            out.extend_from_slice(text)
        }
        Value::BigNumber(n) => {
            if resp3 {
                write_line(out, b'(', n.as_bytes())
            } else {
                write_bulk(out, n.as_bytes())
            }
        }
        Value::BlobError(b) => {
            if resp3 {
                write_header(out, b'!', b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            } else {
                write_line(out, b'-', b)
            }
        }
        Value::Verbatim { format, text } => {
            if resp3 {
                write_header(out, b'=', text.len() + 4);
                out.extend_from_slice(format);
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            } else {
                write_bulk(out, text)
            }
        }
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            let kind = match (resp3, value) {
                (true, Value::Set(_)) => b'~',
                (true, Value::Push(_)) => b'>',
                _ => b'*',
            };
            write_header(out, kind, items.len());
            for item in items {
                write_value(out, item, protocol);
            }
        }
        Value::Map(pairs) => {
            if resp3 {
                write_header(out, b'%', pairs.len());
            } else {
                write_header(out, b'*', pairs.len() * 2);
            }
            write_pairs(out, pairs, protocol);
        }
        Value::Attribute { attributes, value } => {
            if resp3 {
                write_header(out, b'|', attributes.len());
                write_pairs(out, attributes, protocol);
            }
            write_value(out, value, protocol);
        }
    }
}

fn write_pairs(out: &mut Vec<u8>, pairs: &[(Value, Value)], protocol: Protocol) {
    for (k, v) in pairs {
        write_value(out, k, protocol);
        write_value(out, v, protocol);
    }
}

/// Appends `<type><text>\r\n`, with any CR or LF in `text` as a space.
fn write_line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    let start = out.len();
    out.extend_from_slice(text);
    for b in &mut out[start..] {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_without_allocating() {
        let mut n = NumBuf::new();
        assert_eq!(n.format_i64(i64::MIN), b"-9223372036854775808");
        assert_eq!(n.format_i64(0), b"0");
        assert_eq!(
            n.format_u128(u128::MAX, false),
            b"340282366920938463463374607431768211455"
        );
        assert_eq!(
            n.format_u128(i128::MIN.unsigned_abs(), true),
            b"-170141183460469231731687303715884105728"
        );
        assert_eq!(n.format_f64(1.5), b"1.5");
        assert_eq!(n.format_f64(-0.0), b"-0.0");
        assert_eq!(n.format_f64(1e300), b"1e300");
        assert_eq!(n.format_f64(f64::MIN_POSITIVE), b"2.2250738585072014e-308");
        assert_eq!(n.format_f64(f64::NEG_INFINITY), b"-inf");
        assert_eq!(n.format_f64(f64::NAN), b"nan");
        for d in [0.1, 1.0 / 3.0, f64::MAX, f64::MIN, 5e-324, 123456789.125] {
            let text = std::str::from_utf8(n.format_f64(d)).unwrap().to_string();
            assert_eq!(text.parse::<f64>().unwrap(), d, "{}", text);
        }
    }

    #[test]
    fn encoded_len_is_exact() {
        let v = Value::Array(vec![
            Value::Nil,
            Value::Double(2.5),
            Value::Boolean(true),
            Value::Verbatim {
                format: *b"txt",
                text: b"hi".to_vec(),
            },
            Value::Map(vec![(Value::Integer(-1), Value::BigNumber("123".into()))]),
            Value::Attribute {
                attributes: vec![(Value::from("a"), Value::Nil)],
                value: Box::new(Value::BlobError(b"ERR x".to_vec())),
            },
        ]);
        for p in [Protocol::Resp2, Protocol::Resp3] {
            let mut out = Vec::new();
            encode_value(&mut out, &v, p);
            assert_eq!(out.len(), encoded_len(&v, p));
        }
    }

    #[test]
    fn lines_never_carry_cr_or_lf() {
        let mut out = Vec::new();
        encode_value(
            &mut out,
            &Value::Error("ERR a\r\nb".into()),
            Protocol::Resp3,
        );
        assert_eq!(out, b"-ERR a  b\r\n");
    }
}
