//! SCAN over a whole cluster: every primary's keys, one primary after
//! another, as one iterator; HSCAN, SSCAN and ZSCAN on their key's node.

use std::marker::PhantomData;
use std::vec;

use super::{Cluster, Route};
use crate::cmd::{cmd, Cmd};
use crate::convert::FromValue;
use crate::error::Result;
use crate::resp::Value;
use crate::scan::{split_page, take_item, Kind};

/// A cursor scan over a cluster being set up, made by [`Cluster::scan`],
/// [`hscan`](Cluster::hscan), [`sscan`](Cluster::sscan) or
/// [`zscan`](Cluster::zscan); options as for [`Scan`](crate::Scan).
///
/// `SCAN` runs each primary's cursor to its end, one primary after
/// another. SCAN's guarantee holds per primary: a key present on one
/// primary for its whole scan is yielded; a slot that moves between
/// primaries meanwhile may have its keys skipped or yielded twice.
///
/// ```no_run
/// # let mut cluster = respline::Cluster::open(&["redis://127.0.0.1:7000"])?;
/// let mut users = Vec::new();
/// for key in cluster.scan::<String>().pattern("user:*").count(1000) {
///     users.push(key?);
/// }
/// # Ok::<(), respline::Error>(())
/// ```
#[must_use = "a scan does nothing until iterated"]
pub struct ClusterScan<'a, T> {
    cluster: &'a mut Cluster,
    kind: Kind,
    key: Vec<u8>,
    options: Cmd,
    item: PhantomData<fn() -> T>,
}

impl<'a, T: FromValue> ClusterScan<'a, T> {
    fn new(cluster: &'a mut Cluster, kind: Kind, key: &[u8]) -> ClusterScan<'a, T> {
        ClusterScan {
            cluster,
            kind,
            key: key.to_vec(),
            options: Cmd::new(),
            item: PhantomData,
        }
    }

    /// Only elements matching this glob pattern (`MATCH`).
    pub fn pattern(mut self, pattern: impl AsRef<[u8]>) -> ClusterScan<'a, T> {
        self.options.push_arg("MATCH").push_arg(pattern.as_ref());
        self
    }

    /// A hint of how many elements each page should hold (`COUNT`).
    pub fn count(mut self, count: u64) -> ClusterScan<'a, T> {
        self.options.push_arg("COUNT").push_arg(count);
        self
    }

    /// Only keys of this type (`TYPE`, SCAN only).
    pub fn of_type(mut self, key_type: impl AsRef<[u8]>) -> ClusterScan<'a, T> {
        self.options.push_arg("TYPE").push_arg(key_type.as_ref());
        self
    }

    /// The iterator.
    pub fn iter(self) -> ClusterScanIter<'a, T> {
        let nodes = match self.kind {
            Kind::Scan => self.cluster.primaries(),
            _ => Vec::new(),
        };
        ClusterScanIter {
            cluster: self.cluster,
            kind: self.kind,
            key: self.key,
            options: self.options,
            nodes: nodes.into_iter(),
            node: None,
            cursor: None,
            page: Vec::new().into_iter(),
            done: false,
            item: PhantomData,
        }
    }
}

impl<'a, T: FromValue> IntoIterator for ClusterScan<'a, T> {
    type Item = Result<T>;
    type IntoIter = ClusterScanIter<'a, T>;

    fn into_iter(self) -> ClusterScanIter<'a, T> {
        self.iter()
    }
}

/// The iterator of a [`ClusterScan`]: yields `Result<T>`, fetching pages as
/// needed; an error is yielded once and ends it.
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct ClusterScanIter<'a, T> {
    cluster: &'a mut Cluster,
    kind: Kind,
    key: Vec<u8>,
    options: Cmd,
    /// The primaries still to scan (SCAN).
    nodes: vec::IntoIter<String>,
    /// The primary being scanned.
    node: Option<String>,
    /// The cursor to send next; `None` when the current cursor has ended.
    cursor: Option<Vec<u8>>,
    page: vec::IntoIter<Value>,
    done: bool,
    item: PhantomData<fn() -> T>,
}

impl<T: FromValue> ClusterScanIter<'_, T> {
    /// Fetches the next page; false when every cursor has ended.
    fn fetch(&mut self) -> Result<bool> {
        if self.cursor.is_none() {
            match self.kind {
                Kind::Scan => match self.nodes.next() {
                    Some(node) => self.node = Some(node),
                    None => return Ok(false),
                },
                _ if self.node.is_none() => self.node = Some(String::new()),
                _ => return Ok(false),
            }
            self.cursor = Some(b"0".to_vec());
        }
        let mut c = cmd(self.kind.name());
        if self.kind != Kind::Scan {
            c.push_arg(&self.key);
        }
        c.push_arg(self.cursor.as_deref().unwrap_or(b"0"));
        for option in self.options.iter() {
            c.push_arg(option);
        }
        let route = match (self.kind, &self.node) {
            (Kind::Scan, Some(node)) => Route::Node(node),
            _ => Route::Key(&self.key),
        };
        let reply: Value = self.cluster.on(route, &c)?;
        let (cursor, items) = split_page(self.kind, reply)?;
        self.cursor = if cursor == b"0" { None } else { Some(cursor) };
        self.page = items.into_iter();
        Ok(true)
    }

    fn next_item(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(item) = take_item(self.kind, &mut self.page) {
                return Some(item);
            }
            match self.fetch() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl<T: FromValue> Iterator for ClusterScanIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        let item = self.next_item();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl Cluster {
    /// Iterates over the keys of every primary (`SCAN` on each in turn).
    pub fn scan<T: FromValue>(&mut self) -> ClusterScan<'_, T> {
        ClusterScan::new(self, Kind::Scan, b"")
    }

    /// Iterates over a hash's fields and values (`HSCAN`) on its node.
    pub fn hscan<F: FromValue, V: FromValue>(
        &mut self,
        key: impl AsRef<[u8]>,
    ) -> ClusterScan<'_, (F, V)> {
        ClusterScan::new(self, Kind::HScan, key.as_ref())
    }

    /// Iterates over a set's members (`SSCAN`) on its node.
    pub fn sscan<T: FromValue>(&mut self, key: impl AsRef<[u8]>) -> ClusterScan<'_, T> {
        ClusterScan::new(self, Kind::SScan, key.as_ref())
    }

    /// Iterates over a sorted set's members and scores (`ZSCAN`) on its
    /// node.
    pub fn zscan<M: FromValue>(&mut self, key: impl AsRef<[u8]>) -> ClusterScan<'_, (M, f64)> {
        ClusterScan::new(self, Kind::ZScan, key.as_ref())
    }
}
