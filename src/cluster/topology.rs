//! The slot map: which node serves each hash slot, learned from
//! `CLUSTER SLOTS` and kept current by `MOVED` redirects; and the parsing of
//! `MOVED` / `ASK` error replies.
//!
//! ```text
//! CLUSTER SLOTS reply ──▶ SlotMap::from_cluster_slots ──▶ slot → shard (primary + replicas)
//! "MOVED 3999 10.0.0.2:6381" ──▶ parse_redirect ──▶ Redirect ──▶ SlotMap::move_slot
//! ```

use std::fmt;

use super::slot::SLOTS;
use super::{describe, unexpected};
use crate::resp::number::parse_u64;
use crate::{Error, Result, ServerError, Value};

/// The owner index of a slot no shard serves.
const UNSERVED: u16 = u16::MAX;

/// At most this many shards can serve a slot each; the shard list is
/// compacted before it grows past it, so an owner index always fits a u16.
const MAX_SHARDS: usize = SLOTS as usize;

/// A node's address as the cluster announces it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeAddr {
    /// The host name or IP address, IPv6 without brackets.
    pub(crate) host: String,
    /// The TCP port.
    pub(crate) port: u16,
}

impl NodeAddr {
    /// An address from its parts.
    pub(crate) fn new(host: impl Into<String>, port: u16) -> NodeAddr {
        NodeAddr {
            host: host.into(),
            port,
        }
    }
}

/// `host:port`, with an IPv6 address in brackets: `[::1]:6380`.
impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One primary and its replicas: the nodes that hold the same slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    /// The node that takes writes for the shard's slots.
    pub(crate) primary: NodeAddr,
    /// Its replicas with a known endpoint, in the order the cluster listed
    /// them.
    pub(crate) replicas: Vec<NodeAddr>,
}

impl Shard {
    /// A shard of `primary` alone.
    fn new(primary: NodeAddr) -> Shard {
        Shard {
            primary,
            replicas: Vec::new(),
        }
    }

    /// Adds `replica` unless it is already one of the shard's nodes.
    fn add_replica(&mut self, replica: NodeAddr) {
        if replica != self.primary && !self.replicas.contains(&replica) {
            self.replicas.push(replica);
        }
    }
}

/// Which shard serves each of the 16384 slots.
///
/// Built from a `CLUSTER SLOTS` reply, one shard per distinct primary (a
/// primary may serve several disjoint ranges); slots that no reachable
/// primary serves have no owner.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SlotMap {
    /// Every shard the map knows; some may serve no slot after `move_slot`.
    shards: Vec<Shard>,
    /// For each slot, the index of its shard in `shards`, or [`UNSERVED`].
    owners: Vec<u16>,
}

impl SlotMap {
    /// A map in which no slot is served.
    fn empty() -> SlotMap {
        SlotMap {
            shards: Vec::new(),
            owners: vec![UNSERVED; usize::from(SLOTS)],
        }
    }

    /// The map described by a reply to `CLUSTER SLOTS` (RESP2 or RESP3)
    /// that `answered_by` sent.
    ///
    /// Each entry is `[start, end, primary, replica...]`, each node
    /// `[host, port, id?, metadata?...]` (only host and port are used). An
    /// empty or null host means `answered_by`'s host; a `?` host is a node
    /// without a known endpoint, left out (a range whose primary is `?` is
    /// unserved). Any entry that makes no sense — a start after its end, a
    /// slot past 16383, a port outside 1..=65535, a range that overlaps an
    /// earlier one, a missing field — rejects the whole reply with a
    /// protocol error, so that the caller asks another node.
    pub(crate) fn from_cluster_slots(reply: &Value, answered_by: &NodeAddr) -> Result<SlotMap> {
        let entries = match reply.without_attributes() {
            Value::Array(items) | Value::Set(items) => items,
            other => return Err(refusal_or_unexpected(other)),
        };
        let mut map = SlotMap::empty();
        let mut claimed = vec![false; usize::from(SLOTS)];
        for (index, entry) in entries.iter().enumerate() {
            let range = parse_range(entry, index, answered_by)?;
            map.add_range(range, index, &mut claimed)?;
        }
        Ok(map)
    }

    /// Records one range of the reply: its primary's shard (found or
    /// created) takes the slots. A range that overlaps one listed earlier
    /// (in `claimed`, served or not) is an error.
    fn add_range(&mut self, range: SlotRange, index: usize, claimed: &mut [bool]) -> Result<()> {
        let (start, end) = (usize::from(range.start), usize::from(range.end));
        if let Some(taken) = (start..=end).find(|&s| claimed[s]) {
            return Err(unexpected(
                format!(
                    "CLUSTER SLOTS entry #{} ({}-{}) not to overlap an earlier range",
                    index, range.start, range.end
                ),
                format!("slot {} listed twice", taken),
            ));
        }
        claimed[start..=end].fill(true);
        let primary = match range.primary {
            Some(primary) => primary,
            // No known endpoint for the primary: the slots stay unserved.
            None => return Ok(()),
        };
        let owner = self.shard_index_of_primary(primary);
        for replica in range.replicas {
            self.shards[usize::from(owner)].add_replica(replica);
        }
        self.owners[start..=end].fill(owner);
        Ok(())
    }

    /// The index of the shard whose primary is `primary`, created (with no
    /// replicas) if there is none.
    fn shard_index_of_primary(&mut self, primary: NodeAddr) -> u16 {
        match self.shards.iter().position(|s| s.primary == primary) {
            Some(i) => i as u16,
            None => self.push_shard(Shard::new(primary)),
        }
    }

    /// Appends a shard, compacting first if the list is full, and returns
    /// its index.
    fn push_shard(&mut self, shard: Shard) -> u16 {
        if self.shards.len() >= MAX_SHARDS {
            self.drop_idle_shards();
        }
        self.shards.push(shard);
        (self.shards.len() - 1) as u16
    }

    /// Removes the shards that serve no slot and renumbers the owners.
    fn drop_idle_shards(&mut self) {
        let mut serves = vec![false; self.shards.len()];
        for &owner in self.owners.iter().filter(|&&o| o != UNSERVED) {
            serves[usize::from(owner)] = true;
        }
        let mut renumbered = vec![UNSERVED; self.shards.len()];
        let mut kept = 0u16;
        for (old, &serving) in serves.iter().enumerate() {
            if serving {
                renumbered[old] = kept;
                kept += 1;
            }
        }
        let mut old = 0;
        self.shards.retain(|_| {
            let keep = serves[old];
            old += 1;
            keep
        });
        for owner in self.owners.iter_mut().filter(|o| **o != UNSERVED) {
            *owner = renumbered[usize::from(*owner)];
        }
    }

    /// How many slots have an owner.
    pub(crate) fn served(&self) -> usize {
        self.owners.iter().filter(|&&o| o != UNSERVED).count()
    }

    /// True when every one of the 16384 slots has an owner.
    pub(crate) fn is_complete(&self) -> bool {
        self.owners.iter().all(|&o| o != UNSERVED)
    }

    /// The primary that serves `slot`, if any (none for a slot past 16383).
    pub(crate) fn primary(&self, slot: u16) -> Option<&NodeAddr> {
        self.shard(slot).map(|s| &s.primary)
    }

    /// The index of the shard that serves `slot` (see [`SlotMap::shard_at`]),
    /// if any.
    #[inline]
    pub(crate) fn owner(&self, slot: u16) -> Option<usize> {
        match self.owners.get(usize::from(slot)) {
            Some(&owner) if owner != UNSERVED => Some(usize::from(owner)),
            _ => None,
        }
    }

    /// How many shards the map knows (some may serve no slot).
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard at `index`, as [`SlotMap::owner`] gives it.
    pub(crate) fn shard_at(&self, index: usize) -> Option<&Shard> {
        self.shards.get(index)
    }

    /// The shard that serves `slot`, if any (none for a slot past 16383).
    pub(crate) fn shard(&self, slot: u16) -> Option<&Shard> {
        let owner = *self.owners.get(usize::from(slot))?;
        self.shards.get(usize::from(owner))
    }

    /// The shards that serve at least one slot, in the order they were
    /// first seen.
    fn serving_shards(&self) -> impl Iterator<Item = &Shard> {
        let mut serves = vec![false; self.shards.len()];
        for &owner in self.owners.iter().filter(|&&o| o != UNSERVED) {
            serves[usize::from(owner)] = true;
        }
        self.shards
            .iter()
            .zip(serves)
            .filter_map(|(shard, serving)| if serving { Some(shard) } else { None })
    }

    /// The primaries that serve at least one slot, each once, sorted.
    pub(crate) fn primaries(&self) -> Vec<&NodeAddr> {
        let mut all: Vec<&NodeAddr> = self.serving_shards().map(|s| &s.primary).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Every node of the shards that serve at least one slot, primaries and
    /// replicas, each once, sorted.
    pub(crate) fn nodes(&self) -> Vec<&NodeAddr> {
        let mut all: Vec<&NodeAddr> = self
            .serving_shards()
            .flat_map(|s| std::iter::once(&s.primary).chain(s.replicas.iter()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Applies a `MOVED`: from now on `slot` is served by `addr`.
    ///
    /// If `addr` is the primary of a known shard, the slot joins that shard.
    /// If it is a replica of one, it was promoted (a failover): it becomes
    /// that shard's primary, the old primary becomes a replica, and the slot
    /// joins the shard. Otherwise `addr` starts a new shard with no
    /// replicas. A slot past 16383 is ignored.
    pub(crate) fn move_slot(&mut self, slot: u16, addr: NodeAddr) {
        let slot = usize::from(slot);
        if slot >= self.owners.len() {
            return;
        }
        let owner = if let Some(i) = self.shards.iter().position(|s| s.primary == addr) {
            i as u16
        } else if let Some(i) = self.shards.iter().position(|s| s.replicas.contains(&addr)) {
            promote(&mut self.shards[i], addr);
            i as u16
        } else {
            // Free the slot first, so a compaction can drop its old shard.
            self.owners[slot] = UNSERVED;
            self.push_shard(Shard::new(addr))
        };
        self.owners[slot] = owner;
    }

    /// The runs of consecutive slots with the same owner, as
    /// `(first, last, shard)`; for `Debug` and tests.
    fn ranges(&self) -> Vec<(u16, u16, Option<&Shard>)> {
        let mut out: Vec<(u16, u16, Option<&Shard>)> = Vec::new();
        let mut start = 0usize;
        for slot in 1..=self.owners.len() {
            if slot == self.owners.len() || self.owners[slot] != self.owners[start] {
                let shard = self.shards.get(usize::from(self.owners[start]));
                out.push((start as u16, (slot - 1) as u16, shard));
                start = slot;
            }
        }
        out
    }
}

/// Shows the served ranges and their primaries, not 16384 owner indices.
impl fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (first, last, shard) in self.ranges() {
            if let Some(shard) = shard {
                list.entry(&format_args!(
                    "{}-{} {} (+{} replicas)",
                    first,
                    last,
                    shard.primary,
                    shard.replicas.len()
                ));
            }
        }
        list.finish()
    }
}

/// Makes the replica `addr` the primary of `shard`, and the old primary a
/// replica in its place.
fn promote(shard: &mut Shard, addr: NodeAddr) {
    if let Some(i) = shard.replicas.iter().position(|r| *r == addr) {
        let old = std::mem::replace(&mut shard.primary, addr);
        shard.replicas[i] = old;
    }
}

/// One entry of a `CLUSTER SLOTS` reply, checked.
struct SlotRange {
    start: u16,
    end: u16,
    /// `None` when the primary has no known endpoint (`?`).
    primary: Option<NodeAddr>,
    /// The replicas with a known endpoint.
    replicas: Vec<NodeAddr>,
}

/// Checks and reads entry `index` of a `CLUSTER SLOTS` reply.
fn parse_range(entry: &Value, index: usize, answered_by: &NodeAddr) -> Result<SlotRange> {
    let shape = || {
        format!(
            "CLUSTER SLOTS entry #{} to be [start slot, end slot, primary, replicas...]",
            index
        )
    };
    let fields = match entry.as_slice() {
        Some(fields) if fields.len() >= 3 => fields,
        _ => return Err(unexpected(shape(), describe(entry))),
    };
    let start = parse_slot(&fields[0]).ok_or_else(|| unexpected(shape(), describe(entry)))?;
    let end = parse_slot(&fields[1]).ok_or_else(|| unexpected(shape(), describe(entry)))?;
    if start > end {
        return Err(unexpected(
            format!(
                "CLUSTER SLOTS entry #{} to start at or before its end",
                index
            ),
            format!("slots {} to {}", start, end),
        ));
    }
    let primary = parse_node(&fields[2], index, answered_by)?;
    let mut replicas = Vec::new();
    for node in &fields[3..] {
        if let Some(replica) = parse_node(node, index, answered_by)? {
            replicas.push(replica);
        }
    }
    Ok(SlotRange {
        start,
        end,
        primary,
        replicas,
    })
}

/// A slot number: an integer from 0 to 16383.
fn parse_slot(value: &Value) -> Option<u16> {
    let n = value.as_i64()?;
    u16::try_from(n).ok().filter(|&s| s < SLOTS)
}

/// Reads one node `[host, port, ...]` of entry `index`: `None` for a node
/// whose endpoint is unknown (`?`).
fn parse_node(node: &Value, index: usize, answered_by: &NodeAddr) -> Result<Option<NodeAddr>> {
    let shape = || {
        format!(
            "a node of CLUSTER SLOTS entry #{} to be [host, port (1-65535), ...]",
            index
        )
    };
    let fields = match node.as_slice() {
        Some(fields) if fields.len() >= 2 => fields,
        _ => return Err(unexpected(shape(), describe(node))),
    };
    let host = match fields[0].without_attributes() {
        // No endpoint given: the node is reached where the reply came from.
        Value::Nil => "",
        other => match other.as_bytes().map(std::str::from_utf8) {
            Some(Ok(host)) => host,
            _ => return Err(unexpected(shape(), describe(node))),
        },
    };
    let port = fields[1]
        .as_i64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .ok_or_else(|| unexpected(shape(), describe(node)))?;
    Ok(match host {
        "?" => None,
        "" => Some(NodeAddr::new(answered_by.host.clone(), port)),
        host => Some(NodeAddr::new(host, port)),
    })
}

/// What kind of redirect an error reply asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RedirectKind {
    /// `MOVED`: the slot now lives at the address; update the map.
    Moved,
    /// `ASK`: this one command goes to the address, preceded by `ASKING`;
    /// the map stays as it is.
    Ask,
}

/// A parsed `MOVED` or `ASK` error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Redirect {
    /// `MOVED` or `ASK`.
    pub(crate) kind: RedirectKind,
    /// The slot the command's keys hash to.
    pub(crate) slot: u16,
    /// Where to send the command.
    pub(crate) addr: NodeAddr,
}

/// Reads a `MOVED` or `ASK` error line (without the leading `-`):
/// `MOVED 3999 127.0.0.1:6381`, `ASK 3999 :6381`.
///
/// An empty host means the host of `replied_by`, the node that sent the
/// error; the host is everything before the last colon, so an IPv6 address
/// comes as `::1:6380` (a bracketed `[::1]:6380` is accepted too). `None`
/// for any other error, and for a malformed one: a slot past 16383, a port
/// outside 1..=65535, a `?` host (the node's endpoint is unknown), missing
/// or extra words.
pub(crate) fn parse_redirect(error_line: &str, replied_by: &NodeAddr) -> Option<Redirect> {
    let mut words = error_line.split(' ');
    let kind = match words.next()? {
        "MOVED" => RedirectKind::Moved,
        "ASK" => RedirectKind::Ask,
        _ => return None,
    };
    let slot = u16::try_from(parse_u64(words.next()?.as_bytes())?).ok()?;
    let endpoint = words.next()?;
    if slot >= SLOTS || words.next().is_some() {
        return None;
    }
    let (host, port) = endpoint.rsplit_once(':')?;
    let port = u16::try_from(parse_u64(port.as_bytes())?).ok()?;
    if port == 0 {
        return None;
    }
    let host = strip_brackets(host);
    let addr = match host {
        "?" => return None,
        "" => NodeAddr::new(replied_by.host.clone(), port),
        host => NodeAddr::new(host, port),
    };
    Some(Redirect { kind, slot, addr })
}

/// `host` without the brackets of a `[v6]` address.
fn strip_brackets(host: &str) -> &str {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner,
        None => host,
    }
}

/// The error for a reply of the wrong shape: the server's own error when it
/// refused the command, else a protocol error.
fn refusal_or_unexpected(reply: &Value) -> Error {
    match reply {
        Value::Error(line) => Error::from(ServerError::new(line)),
        Value::BlobError(bytes) => Error::from(ServerError::new(&String::from_utf8_lossy(bytes))),
        other => unexpected("CLUSTER SLOTS to answer with an array", describe(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An address.
    fn addr(host: &str, port: u16) -> NodeAddr {
        NodeAddr::new(host, port)
    }

    /// A bulk string.
    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A RESP2 node: `[host, port, id]`.
    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![bulk(host), Value::Integer(port), bulk("0123abcd")])
    }

    /// A 7.x RESP3 node: `[host, port, id, {metadata}]`.
    fn node3(host: &str, port: i64, hostname: &str) -> Value {
        Value::Array(vec![
            bulk(host),
            Value::Integer(port),
            bulk("0123abcd"),
            Value::Map(vec![(bulk("hostname"), bulk(hostname))]),
        ])
    }

    /// A CLUSTER SLOTS entry: `[start, end, nodes...]`.
    fn range(start: i64, end: i64, nodes: Vec<Value>) -> Value {
        let mut fields = vec![Value::Integer(start), Value::Integer(end)];
        fields.extend(nodes);
        Value::Array(fields)
    }

    /// The node that answered CLUSTER SLOTS.
    fn me() -> NodeAddr {
        addr("10.0.0.9", 7000)
    }

    /// Three primaries, a replica each, all slots served.
    fn three_shards() -> Value {
        Value::Array(vec![
            range(
                0,
                5460,
                vec![node("10.0.0.1", 7000), node("10.0.0.4", 7000)],
            ),
            range(
                5461,
                10922,
                vec![node("10.0.0.2", 7000), node("10.0.0.5", 7000)],
            ),
            range(
                10923,
                16383,
                vec![node("10.0.0.3", 7000), node("10.0.0.6", 7000)],
            ),
        ])
    }

    /// The message of a protocol error (panics on any other error).
    fn protocol_message(err: Error) -> String {
        match err {
            Error::Protocol(e) => e.to_string(),
            other => panic!("expected a protocol error, got {:?}", other),
        }
    }

    #[test]
    fn node_addr_display() {
        assert_eq!(addr("127.0.0.1", 6379).to_string(), "127.0.0.1:6379");
        assert_eq!(
            addr("redis-1.example", 7001).to_string(),
            "redis-1.example:7001"
        );
        assert_eq!(addr("::1", 6380).to_string(), "[::1]:6380");
        assert_eq!(addr("fe80::1%eth0", 1).to_string(), "[fe80::1%eth0]:1");
    }

    #[test]
    fn three_shards_with_replicas() {
        let map = SlotMap::from_cluster_slots(&three_shards(), &me()).unwrap();
        assert!(map.is_complete());
        assert_eq!(map.served(), 16384);
        assert_eq!(map.primary(0), Some(&addr("10.0.0.1", 7000)));
        assert_eq!(map.primary(5460), Some(&addr("10.0.0.1", 7000)));
        assert_eq!(map.primary(5461), Some(&addr("10.0.0.2", 7000)));
        assert_eq!(map.primary(16383), Some(&addr("10.0.0.3", 7000)));
        assert_eq!(map.primary(16384), None);
        assert_eq!(map.primary(u16::MAX), None);
        assert_eq!(
            map.shard(12000).unwrap().replicas,
            vec![addr("10.0.0.6", 7000)]
        );
        assert_eq!(
            map.primaries(),
            vec![
                &addr("10.0.0.1", 7000),
                &addr("10.0.0.2", 7000),
                &addr("10.0.0.3", 7000)
            ]
        );
        assert_eq!(map.nodes().len(), 6);
        assert_eq!(
            format!("{:?}", map),
            "[0-5460 10.0.0.1:7000 (+1 replicas), 5461-10922 10.0.0.2:7000 (+1 replicas), \
             10923-16383 10.0.0.3:7000 (+1 replicas)]"
        );
    }

    #[test]
    fn resp3_with_metadata_maps() {
        let reply = Value::Array(vec![
            range(
                0,
                8191,
                vec![
                    node3("10.0.0.1", 7000, "a.example"),
                    node3("10.0.0.4", 7000, "d.example"),
                ],
            ),
            range(8192, 16383, vec![node3("10.0.0.2", 7000, "b.example")]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, &me()).unwrap();
        assert!(map.is_complete());
        assert_eq!(map.primary(8191), Some(&addr("10.0.0.1", 7000)));
        assert_eq!(map.shard(0).unwrap().replicas, vec![addr("10.0.0.4", 7000)]);
        assert!(map.shard(9000).unwrap().replicas.is_empty());
    }

    #[test]
    fn the_reply_of_a_real_single_node_cluster() {
        // What redis-server 7.0.15 sends for a lone node that owns 0-100 and
        // 200-300, with cluster-announce-hostname set: its own IP is not
        // known yet, so the host is empty; RESP2 shows the metadata as a
        // flat array.
        let lone = |meta: Value| {
            Value::Array(vec![
                bulk(""),
                Value::Integer(23792),
                bulk("b195148802498cd02785e9c3fdd3cebf1074914c"),
                meta,
            ])
        };
        let meta2 = Value::Array(vec![bulk("hostname"), bulk("myhost.example")]);
        let meta3 = Value::Map(vec![(bulk("hostname"), bulk("myhost.example"))]);
        for meta in [meta2, meta3] {
            let reply = Value::Array(vec![
                range(0, 100, vec![lone(meta.clone())]),
                range(200, 300, vec![lone(meta)]),
            ]);
            let asked = addr("127.0.0.1", 23792);
            let map = SlotMap::from_cluster_slots(&reply, &asked).unwrap();
            assert_eq!(map.served(), 202);
            assert!(!map.is_complete());
            assert_eq!(map.primary(50), Some(&asked));
            assert_eq!(map.primary(150), None);
            assert_eq!(map.primary(300), Some(&asked));
            assert_eq!(map.primaries(), vec![&asked]);
            assert_eq!(map.shards.len(), 1, "one shard for two ranges");
        }
    }

    #[test]
    fn empty_null_and_unknown_hosts() {
        let null_host = Value::Array(vec![Value::Nil, Value::Integer(7001), bulk("id")]);
        let reply = Value::Array(vec![
            // Empty host: the answering node's host.
            range(0, 99, vec![node("", 7000), node("?", 7003), node("", 7004)]),
            // Null host: the same.
            range(100, 199, vec![null_host]),
            // Unknown primary endpoint: the range is unserved.
            range(200, 299, vec![node("?", 7002), node("10.0.0.5", 7005)]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, &me()).unwrap();
        assert_eq!(map.primary(0), Some(&addr("10.0.0.9", 7000)));
        assert_eq!(
            map.shard(0).unwrap().replicas,
            vec![addr("10.0.0.9", 7004)],
            "the ? replica is left out"
        );
        assert_eq!(map.primary(150), Some(&addr("10.0.0.9", 7001)));
        assert_eq!(map.primary(250), None);
        assert_eq!(map.served(), 200);
        assert!(!map.nodes().contains(&&addr("10.0.0.5", 7005)));
    }

    #[test]
    fn one_shard_per_primary_across_disjoint_ranges() {
        let reply = Value::Array(vec![
            range(0, 10, vec![node("a", 1), node("r1", 1)]),
            range(11, 20, vec![node("b", 1)]),
            range(21, 30, vec![node("a", 1), node("r1", 1), node("r2", 1)]),
            range(31, 31, vec![node("b", 1), node("b", 1)]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, &me()).unwrap();
        assert_eq!(map.shards.len(), 2);
        assert_eq!(map.shard(5), map.shard(25));
        assert_eq!(
            map.shard(25).unwrap().replicas,
            vec![addr("r1", 1), addr("r2", 1)]
        );
        assert!(
            map.shard(31).unwrap().replicas.is_empty(),
            "a primary is not its own replica"
        );
        assert_eq!(map.primaries(), vec![&addr("a", 1), &addr("b", 1)]);
        assert_eq!(map.served(), 32);
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let reply = Value::Array(vec![
            range(0, 100, vec![node("a", 1)]),
            range(100, 200, vec![node("b", 1)]),
        ]);
        let msg = protocol_message(SlotMap::from_cluster_slots(&reply, &me()).unwrap_err());
        assert_eq!(
            msg,
            "unexpected reply at byte 0 of the reply: expected CLUSTER SLOTS entry #1 (100-200) \
             not to overlap an earlier range, found slot 100 listed twice"
        );
        // Even when the earlier range has no known primary.
        let reply = Value::Array(vec![
            range(0, 100, vec![node("?", 1)]),
            range(50, 60, vec![node("b", 1)]),
        ]);
        let msg = protocol_message(SlotMap::from_cluster_slots(&reply, &me()).unwrap_err());
        assert!(msg.ends_with("found slot 50 listed twice"), "{}", msg);
    }

    #[test]
    fn nonsense_rejects_the_whole_reply() {
        let cases: Vec<(Value, &str)> = vec![
            (
                Value::Array(vec![range(0, 10, vec![node("a", 1)]), range(20, 10, vec![node("b", 1)])]),
                "expected CLUSTER SLOTS entry #1 to start at or before its end, found slots 20 to 10",
            ),
            (
                Value::Array(vec![range(0, 16384, vec![node("a", 1)])]),
                "expected CLUSTER SLOTS entry #0 to be [start slot, end slot, primary, replicas...], \
                 found array [0, 16384, [\"a\", 1, \"0123abcd\"]]",
            ),
            (
                Value::Array(vec![range(-1, 5, vec![node("a", 1)])]),
                "entry #0 to be [start slot",
            ),
            (
                Value::Array(vec![range(0, 5, vec![node("a", 0)])]),
                "expected a node of CLUSTER SLOTS entry #0 to be [host, port (1-65535), ...], \
                 found array [\"a\", 0, \"0123abcd\"]",
            ),
            (
                Value::Array(vec![range(0, 5, vec![node("a", 1), node("b", 65536)])]),
                "port (1-65535)",
            ),
            (
                Value::Array(vec![range(0, 5, vec![])]),
                "found array [0, 5]",
            ),
            (
                Value::Array(vec![range(0, 5, vec![Value::Array(vec![bulk("a")])])]),
                "found array [\"a\"]",
            ),
            (
                Value::Array(vec![range(0, 5, vec![Value::Array(vec![bulk("a"), bulk("1")])])]),
                "port (1-65535)",
            ),
            (
                Value::Array(vec![range(0, 5, vec![Value::Array(vec![
                    Value::BulkString(b"\xff".to_vec()),
                    Value::Integer(1),
                ])])]),
                "[host, port",
            ),
            (Value::Array(vec![Value::Integer(3)]), "found integer 3"),
            (bulk("nope"), "expected CLUSTER SLOTS to answer with an array, found bulk string \"nope\""),
        ];
        for (reply, expected) in cases {
            let msg = protocol_message(SlotMap::from_cluster_slots(&reply, &me()).unwrap_err());
            assert!(msg.contains(expected), "{:?}\n  gave {}", reply, msg);
        }
    }

    #[test]
    fn an_error_reply_is_a_server_error() {
        let reply = Value::Error("ERR This instance has cluster support disabled".into());
        let err = SlotMap::from_cluster_slots(&reply, &me()).unwrap_err();
        assert_eq!(
            err.server_error().map(|e| e.code()),
            Some("ERR"),
            "{:?}",
            err
        );
    }

    #[test]
    fn an_empty_reply_serves_nothing() {
        let map = SlotMap::from_cluster_slots(&Value::Array(vec![]), &me()).unwrap();
        assert_eq!(map.served(), 0);
        assert!(!map.is_complete());
        assert!(map.primaries().is_empty() && map.nodes().is_empty());
        assert_eq!(map.shard(0), None);
    }

    #[test]
    fn move_slot_to_a_known_primary() {
        let mut map = SlotMap::from_cluster_slots(&three_shards(), &me()).unwrap();
        map.move_slot(0, addr("10.0.0.2", 7000));
        assert_eq!(map.primary(0), Some(&addr("10.0.0.2", 7000)));
        assert_eq!(map.primary(1), Some(&addr("10.0.0.1", 7000)));
        assert_eq!(map.shards.len(), 3);
        assert!(map.is_complete());
    }

    #[test]
    fn move_slot_to_a_replica_promotes_it() {
        let mut map = SlotMap::from_cluster_slots(&three_shards(), &me()).unwrap();
        map.move_slot(100, addr("10.0.0.4", 7000));
        let shard = map.shard(100).unwrap();
        assert_eq!(shard.primary, addr("10.0.0.4", 7000));
        assert_eq!(shard.replicas, vec![addr("10.0.0.1", 7000)]);
        // The whole shard failed over.
        assert_eq!(map.primary(5000), Some(&addr("10.0.0.4", 7000)));
        assert_eq!(map.shards.len(), 3);
    }

    #[test]
    fn move_slot_to_a_new_node_starts_a_shard() {
        let mut map = SlotMap::from_cluster_slots(&three_shards(), &me()).unwrap();
        map.move_slot(16383, addr("10.0.0.7", 7000));
        assert_eq!(map.primary(16383), Some(&addr("10.0.0.7", 7000)));
        assert!(map.shard(16383).unwrap().replicas.is_empty());
        assert_eq!(map.primaries().len(), 4);
        // A second slot to the same node joins its shard.
        map.move_slot(16382, addr("10.0.0.7", 7000));
        assert_eq!(map.shard(16382), map.shard(16383));
        assert_eq!(map.shards.len(), 4);
        // An unserved slot becomes served; a slot past the end is ignored.
        let mut empty = SlotMap::empty();
        empty.move_slot(7, addr("x", 1));
        empty.move_slot(16384, addr("y", 1));
        assert_eq!(empty.served(), 1);
        assert_eq!(empty.primaries(), vec![&addr("x", 1)]);
    }

    #[test]
    fn a_primary_that_lost_every_slot_is_not_listed() {
        let reply = Value::Array(vec![
            range(0, 0, vec![node("a", 1)]),
            range(1, 16383, vec![node("b", 1)]),
        ]);
        let mut map = SlotMap::from_cluster_slots(&reply, &me()).unwrap();
        map.move_slot(0, addr("b", 1));
        assert_eq!(map.primaries(), vec![&addr("b", 1)]);
        assert_eq!(map.nodes(), vec![&addr("b", 1)]);
    }

    #[test]
    fn endless_moves_to_new_nodes_keep_the_shard_list_bounded() {
        let mut map = SlotMap::empty();
        for i in 0..40_000u32 {
            let slot = (i % 3) as u16;
            map.move_slot(slot, addr("n", (i % 60_000 + 1) as u16));
        }
        assert!(map.shards.len() <= MAX_SHARDS);
        assert_eq!(map.served(), 3);
        // The last move of slot 2 was the one of i = 39998.
        assert_eq!(map.primary(2), Some(&addr("n", 39_999)));
        assert_eq!(map.primaries().len(), 3);
    }

    #[test]
    fn redirects() {
        let me = addr("10.0.0.9", 7000);
        let moved = parse_redirect("MOVED 3999 127.0.0.1:6381", &me).unwrap();
        assert_eq!(moved.kind, RedirectKind::Moved);
        assert_eq!(moved.slot, 3999);
        assert_eq!(moved.addr, addr("127.0.0.1", 6381));

        let ask = parse_redirect("ASK 3999 :6381", &me).unwrap();
        assert_eq!(ask.kind, RedirectKind::Ask);
        assert_eq!(ask.addr, addr("10.0.0.9", 6381));

        let v6 = parse_redirect("MOVED 1 ::1:6380", &me).unwrap();
        assert_eq!(v6.addr, addr("::1", 6380));
        assert_eq!(v6.addr.to_string(), "[::1]:6380");
        let v6 = parse_redirect("MOVED 1 [2001:db8::7]:6380", &me).unwrap();
        assert_eq!(v6.addr, addr("2001:db8::7", 6380));

        let named = parse_redirect("MOVED 16383 redis-3.example:7003", &me).unwrap();
        assert_eq!(
            (named.slot, named.addr),
            (16383, addr("redis-3.example", 7003))
        );
    }

    #[test]
    fn malformed_redirects_are_none() {
        let me = addr("10.0.0.9", 7000);
        for line in [
            "",
            "MOVED",
            "MOVED 3999",
            "MOVED 3999 ",
            "MOVED 3999 127.0.0.1",
            "MOVED 3999 127.0.0.1:",
            "MOVED 3999 127.0.0.1:0",
            "MOVED 3999 127.0.0.1:65536",
            "MOVED 3999 127.0.0.1:-1",
            "MOVED 3999 127.0.0.1:+80",
            "MOVED 3999 127.0.0.1:80x",
            "MOVED 16384 127.0.0.1:6381",
            "MOVED 99999999999999999999999 127.0.0.1:6381",
            "MOVED -1 127.0.0.1:6381",
            "MOVED x 127.0.0.1:6381",
            "MOVED 3999 ?:6381",
            "MOVED 3999 127.0.0.1:6381 extra",
            "MOVED  3999 127.0.0.1:6381",
            "moved 3999 127.0.0.1:6381",
            "ASKING 3999 127.0.0.1:6381",
            "ERR unknown command",
            "CLUSTERDOWN Hash slot not served",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CROSSSLOT Keys in request don't hash to the same slot",
        ] {
            assert_eq!(parse_redirect(line, &me), None, "{:?}", line);
        }
    }

    /// Any value at all, nested a few levels.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Integer),
            (0i64..20000).prop_map(Value::Integer),
            (0i64..70000).prop_map(Value::Integer),
            prop::collection::vec(any::<u8>(), 0..6).prop_map(Value::BulkString),
            Just(Value::BulkString(b"?".to_vec())),
            Just(Value::BulkString(b"".to_vec())),
            Just(Value::Error("ERR x".into())),
            Just(Value::SimpleString("h".into())),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Set),
                prop::collection::vec((inner.clone(), inner), 0..3).prop_map(Value::Map),
            ]
        })
    }

    /// A well-formed-looking CLUSTER SLOTS entry with random numbers.
    fn any_entry() -> impl Strategy<Value = Value> {
        let host = prop_oneof![Just(""), Just("?"), Just("a"), Just("b"), Just("::1")];
        let node = (host, -1i64..70000).prop_map(|(h, p)| node(h, p));
        (
            -5i64..16390,
            -5i64..16390,
            prop::collection::vec(node, 0..4),
        )
            .prop_map(|(start, end, nodes)| range(start, end, nodes))
    }

    proptest! {
        #[test]
        fn any_value_parses_or_fails_cleanly(reply in any_value()) {
            if let Ok(map) = SlotMap::from_cluster_slots(&reply, &me()) {
                prop_assert!(map.served() <= 16384);
            }
        }

        #[test]
        fn plausible_replies_give_consistent_maps(entries in prop::collection::vec(any_entry(), 0..6)) {
            let reply = Value::Array(entries);
            if let Ok(mut map) = SlotMap::from_cluster_slots(&reply, &me()) {
                let served = (0..SLOTS).filter(|&s| map.primary(s).is_some()).count();
                prop_assert_eq!(served, map.served());
                prop_assert_eq!(map.is_complete(), served == 16384);
                let primaries = map.primaries();
                for slot in 0..SLOTS {
                    if let Some(p) = map.primary(slot) {
                        prop_assert!(primaries.contains(&p));
                        prop_assert!(p.port != 0);
                    }
                }
                map.move_slot(5, addr("b", 9));
                prop_assert_eq!(map.primary(5), Some(&addr("b", 9)));
            }
        }

        #[test]
        fn parse_redirect_never_panics(line in "(MOVED|ASK|ERR)? ?[0-9:a-f\\[\\]? -]{0,30}") {
            if let Some(r) = parse_redirect(&line, &me()) {
                prop_assert!(r.slot < SLOTS);
                prop_assert!(r.addr.port != 0);
            }
        }

        #[test]
        fn parse_redirect_reads_what_the_server_writes(slot in 0u16..16384, port in 1u16.., v6 in any::<bool>()) {
            let host = if v6 { "fe80::1:2" } else { "192.168.7.1" };
            let line = format!("MOVED {} {}:{}", slot, host, port);
            let r = parse_redirect(&line, &me()).unwrap();
            prop_assert_eq!((r.kind, r.slot, r.addr), (RedirectKind::Moved, slot, addr(host, port)));
        }
    }
}
