//! Cursor iteration: SCAN, HSCAN, SSCAN and ZSCAN as lazy iterators that
//! fetch one page at a time.

use std::fmt;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::vec;

use crate::cmd::{cmd, Cmd};
use crate::connection::Connection;
use crate::convert::{mismatch, FromValue};
use crate::error::{Error, Result};
use crate::resp::Value;

/// Which command a [`Scan`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Scan,
    HScan,
    SScan,
    ZScan,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Scan => "SCAN",
            Kind::HScan => "HSCAN",
            Kind::SScan => "SSCAN",
            Kind::ZScan => "ZSCAN",
        }
    }

    /// HSCAN and ZSCAN return flat field/value (member/score) pairs.
    pub(crate) fn pairs(self) -> bool {
        matches!(self, Kind::HScan | Kind::ZScan)
    }
}

/// A cursor scan being set up: made by [`Connection::scan`],
/// [`hscan`](Connection::hscan), [`sscan`](Connection::sscan) or
/// [`zscan`](Connection::zscan), given options with
/// [`pattern`](Scan::pattern), [`count`](Scan::count) and
/// [`of_type`](Scan::of_type), then iterated with [`iter`](Scan::iter) or a
/// `for` loop.
///
/// Pages are fetched on demand, following the cursor until the server
/// returns cursor 0. Each item is a `Result<T>`: a server error, an I/O
/// failure or a conversion failure is yielded once and ends the iteration.
///
/// The guarantees are SCAN's own: every element present for the whole
/// iteration is yielded at least once; an element may be yielded more than
/// once, and elements added or removed meanwhile may or may not be. Collect
/// into a set if duplicates matter.
///
/// ```
/// use respline::Connection;
/// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
/// // Two pages: cursor 17 with two keys, then cursor 0 with one more.
/// let pages = vec![
///     &b"*2\r\n$2\r\n17\r\n*2\r\n$6\r\nuser:1\r\n$6\r\nuser:2\r\n"[..],
///     b"*2\r\n$1\r\n0\r\n*1\r\n$6\r\nuser:3\r\n",
/// ];
/// # let mut conn = Connection::new(FakeServer::replying(&pages));
/// let mut keys = Vec::new();
/// for key in conn.scan::<String>().pattern("user:*").count(1000) {
///     keys.push(key?);
/// }
/// assert_eq!(keys, ["user:1", "user:2", "user:3"]);
/// # assert_eq!(conn.get_ref().requests(),
/// #     b"*6\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$6\r\nuser:*\r\n$5\r\nCOUNT\r\n$4\r\n1000\r\n\
/// #       *6\r\n$4\r\nSCAN\r\n$2\r\n17\r\n$5\r\nMATCH\r\n$6\r\nuser:*\r\n$5\r\nCOUNT\r\n$4\r\n1000\r\n");
/// # Ok::<(), respline::Error>(())
/// ```
///
/// HSCAN yields `(field, value)` pairs and ZSCAN `(member, score)`:
///
/// ```
/// # use respline::Connection;
/// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
/// # let page = &b"*2\r\n$1\r\n0\r\n*4\r\n$5\r\nalice\r\n$3\r\n1.5\r\n$3\r\nbob\r\n$4\r\n-inf\r\n"[..];
/// # let mut conn = Connection::new(FakeServer::replying(&[page]));
/// let scores = conn.zscan::<String>("leaderboard").iter().collect::<Result<Vec<_>, _>>()?;
/// assert_eq!(scores, [("alice".to_string(), 1.5), ("bob".to_string(), f64::NEG_INFINITY)]);
/// # Ok::<(), respline::Error>(())
/// ```
#[must_use = "a scan does nothing until iterated"]
pub struct Scan<'a, S, T> {
    conn: &'a mut Connection<S>,
    kind: Kind,
    key: Vec<u8>,
    pattern: Option<Vec<u8>>,
    count: Option<u64>,
    of_type: Option<Vec<u8>>,
    item: PhantomData<fn() -> T>,
}

impl<'a, S: Read + Write, T: FromValue> Scan<'a, S, T> {
    fn new(conn: &'a mut Connection<S>, kind: Kind, key: &[u8]) -> Scan<'a, S, T> {
        Scan {
            conn,
            kind,
            key: key.to_vec(),
            pattern: None,
            count: None,
            of_type: None,
            item: PhantomData,
        }
    }

    /// Only elements (keys, fields, members) matching this glob-style
    /// pattern (`MATCH`). The server filters each page after fetching it, so
    /// a page can be empty; the iterator just fetches the next one.
    pub fn pattern(mut self, pattern: impl AsRef<[u8]>) -> Scan<'a, S, T> {
        self.pattern = Some(pattern.as_ref().to_vec());
        self
    }

    /// A hint of how much work the server does per page (`COUNT`; Redis's
    /// default is 10). Larger pages mean fewer round trips.
    pub fn count(mut self, count: u64) -> Scan<'a, S, T> {
        self.count = Some(count);
        self
    }

    /// For [`Connection::scan`] only: keys of this type (`TYPE`), such as
    /// `string`, `hash`, `set`, `zset`, `list` or `stream`. Other scans
    /// send it too, and the server refuses them with a syntax error.
    pub fn of_type(mut self, key_type: impl AsRef<[u8]>) -> Scan<'a, S, T> {
        self.of_type = Some(key_type.as_ref().to_vec());
        self
    }

    /// Starts the iteration (nothing is sent until the first item is asked
    /// for).
    pub fn iter(self) -> ScanIter<'a, S, T> {
        let mut prefix = cmd(self.kind.name());
        if self.kind != Kind::Scan {
            prefix.push_arg(&self.key);
        }
        let mut options = Cmd::new();
        if let Some(p) = &self.pattern {
            options.push_arg("MATCH").push_arg(p);
        }
        if let Some(n) = self.count {
            options.push_arg("COUNT").push_arg(n);
        }
        if let Some(t) = &self.of_type {
            options.push_arg("TYPE").push_arg(t);
        }
        ScanIter {
            conn: self.conn,
            kind: self.kind,
            prefix,
            options,
            cursor: b"0".to_vec(),
            page: Vec::new().into_iter(),
            state: State::Start,
            item: PhantomData,
        }
    }
}

impl<'a, S: Read + Write, T: FromValue> IntoIterator for Scan<'a, S, T> {
    type Item = Result<T>;
    type IntoIter = ScanIter<'a, S, T>;

    fn into_iter(self) -> ScanIter<'a, S, T> {
        self.iter()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No page fetched yet.
    Start,
    /// The cursor is not 0: more pages to fetch once this one is used up.
    More,
    /// The last page (cursor 0) is being used up.
    LastPage,
    /// Finished, or ended by an error.
    Done,
}

/// The iterator of a [`Scan`]: yields `Result<T>`, fetching pages as
/// needed, and ends after the page with cursor 0 or after an error.
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct ScanIter<'a, S, T> {
    conn: &'a mut Connection<S>,
    kind: Kind,
    /// The command name, and for HSCAN/SSCAN/ZSCAN the key.
    prefix: Cmd,
    /// MATCH / COUNT / TYPE, already encoded.
    options: Cmd,
    /// The cursor to send next, kept as the server wrote it.
    cursor: Vec<u8>,
    page: vec::IntoIter<Value>,
    state: State,
    item: PhantomData<fn() -> T>,
}

impl<'a, S: Read + Write, T: FromValue> ScanIter<'a, S, T> {
    /// The cursor the next page would be fetched with (`"0"` before the
    /// first page and after the last).
    pub fn cursor(&self) -> &[u8] {
        &self.cursor
    }

    fn fetch_page(&mut self) -> Result<()> {
        let mut c = self.prefix.clone();
        c.push_arg(&self.cursor);
        for option in self.options.iter() {
            c.push_arg(option);
        }
        let reply: Value = self.conn.query(&c)?;
        let (cursor, items) = split_page(self.kind, reply)?;
        self.state = if cursor == b"0" {
            State::LastPage
        } else {
            State::More
        };
        self.cursor = cursor;
        self.page = items.into_iter();
        Ok(())
    }

    fn next_item(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(item) = take_item(self.kind, &mut self.page) {
                return Some(item);
            }
            match self.state {
                State::Start | State::More => {
                    if let Err(e) = self.fetch_page() {
                        return Some(Err(e));
                    }
                }
                State::LastPage | State::Done => return None,
            }
        }
    }
}

impl<'a, S: Read + Write, T: FromValue> Iterator for ScanIter<'a, S, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.state == State::Done {
            return None;
        }
        let item = self.next_item();
        match &item {
            Some(Ok(_)) => {}
            // An error ends the iteration.
            Some(Err(_)) | None => {
                self.state = State::Done;
                self.page = Vec::new().into_iter();
            }
        }
        item
    }
}

/// The next item of a page, converted: an element, or for HSCAN and ZSCAN
/// a pair of them (`split_page` checked that the page has an even length).
pub(crate) fn take_item<T: FromValue>(
    kind: Kind,
    page: &mut vec::IntoIter<Value>,
) -> Option<Result<T>> {
    let first = page.next()?;
    if !kind.pairs() {
        return Some(T::from_value(first));
    }
    let second = page.next().unwrap_or(Value::Nil);
    Some(T::from_value(Value::Array(vec![first, second])))
}

/// A page is `[cursor, [elements...]]`; HSCAN and ZSCAN pages hold pairs.
pub(crate) fn split_page(kind: Kind, reply: Value) -> Result<(Vec<u8>, Vec<Value>)> {
    const EXPECTED: &str = "a scan page: an array of a cursor and an array of elements";
    let reply = reply.into_without_attributes();
    let parts = match reply {
        Value::Array(parts) if parts.len() == 2 => parts,
        other => return Err(mismatch(EXPECTED, &other)),
    };
    let mut parts = parts.into_iter();
    let (cursor, items) = match (parts.next(), parts.next()) {
        (Some(c), Some(i)) => (c.into_without_attributes(), i.into_without_attributes()),
        _ => unreachable!("the length was checked"),
    };
    let cursor = match cursor {
        Value::BulkString(b) if !b.is_empty() && b.iter().all(u8::is_ascii_digit) => b,
        Value::SimpleString(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.into_owned().into_bytes()
        }
        Value::Integer(i) if i >= 0 => i.to_string().into_bytes(),
        other => return Err(mismatch("a scan cursor (a decimal number)", &other)),
    };
    let items = match items {
        Value::Array(items) | Value::Set(items) => items,
        // A RESP3 server may send field/value pairs as a map.
        Value::Map(pairs) if kind.pairs() => {
            let mut flat = Vec::with_capacity(pairs.len() * 2);
            for (k, v) in pairs {
                flat.push(k);
                flat.push(v);
            }
            flat
        }
        other => return Err(mismatch("an array of scanned elements", &other)),
    };
    if kind.pairs() && items.len() % 2 != 0 {
        return Err(Error::conversion(
            "an even number of elements (pairs)",
            format!("{} page of {} elements", kind.name(), items.len()),
        ));
    }
    Ok((cursor, items))
}

impl<S: Read + Write> Connection<S> {
    /// Iterates over the keys of the selected database (`SCAN`), each
    /// converted to `T`. Options: [`Scan::pattern`], [`Scan::count`],
    /// [`Scan::of_type`].
    pub fn scan<T: FromValue>(&mut self) -> Scan<'_, S, T> {
        Scan::new(self, Kind::Scan, b"")
    }

    /// Iterates over the fields and values of the hash at `key` (`HSCAN`),
    /// as `(F, V)` pairs. Options: [`Scan::pattern`] (on fields),
    /// [`Scan::count`].
    pub fn hscan<F: FromValue, V: FromValue>(
        &mut self,
        key: impl AsRef<[u8]>,
    ) -> Scan<'_, S, (F, V)> {
        Scan::new(self, Kind::HScan, key.as_ref())
    }

    /// Iterates over the members of the set at `key` (`SSCAN`). Options:
    /// [`Scan::pattern`], [`Scan::count`].
    pub fn sscan<T: FromValue>(&mut self, key: impl AsRef<[u8]>) -> Scan<'_, S, T> {
        Scan::new(self, Kind::SScan, key.as_ref())
    }

    /// Iterates over the members of the sorted set at `key` with their
    /// scores (`ZSCAN`), as `(M, f64)` pairs. Options: [`Scan::pattern`]
    /// (on members), [`Scan::count`].
    pub fn zscan<M: FromValue>(&mut self, key: impl AsRef<[u8]>) -> Scan<'_, S, (M, f64)> {
        Scan::new(self, Kind::ZScan, key.as_ref())
    }
}

impl<S, T> fmt::Debug for Scan<'_, S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scan")
            .field("command", &self.kind.name())
            .field("key", &String::from_utf8_lossy(&self.key))
            .field(
                "pattern",
                &self.pattern.as_ref().map(|p| String::from_utf8_lossy(p)),
            )
            .field("count", &self.count)
            .field(
                "type",
                &self.of_type.as_ref().map(|t| String::from_utf8_lossy(t)),
            )
            .finish()
    }
}

impl<S, T> fmt::Debug for ScanIter<'_, S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanIter")
            .field("command", &self.kind.name())
            .field("cursor", &String::from_utf8_lossy(&self.cursor))
            .field("buffered", &self.page.len())
            .field("state", &self.state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn pages_are_checked() {
        let page = Value::Array(vec![bulk("12"), Value::Array(vec![bulk("f"), bulk("v")])]);
        let (cursor, items) = split_page(Kind::HScan, page).unwrap();
        assert_eq!((cursor, items.len()), (b"12".to_vec(), 2));

        let odd = Value::Array(vec![bulk("0"), Value::Array(vec![bulk("f")])]);
        let err = split_page(Kind::ZScan, odd).unwrap_err().to_string();
        assert!(err.contains("even number"), "{}", err);

        let bad_cursor = Value::Array(vec![bulk("x1"), Value::Array(vec![])]);
        let err = split_page(Kind::Scan, bad_cursor).unwrap_err().to_string();
        assert!(err.contains("cursor"), "{}", err);

        let wrongtype = Value::Error("WRONGTYPE Operation against a key".into());
        let err = split_page(Kind::SScan, wrongtype).unwrap_err();
        assert_eq!(err.server_error().map(|e| e.code()), Some("WRONGTYPE"));
    }
}
