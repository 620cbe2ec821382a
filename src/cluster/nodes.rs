//! The cluster's view of itself: the slot map, the command table, one
//! connection per node, and the refresh rule (single-flight, with a
//! cooldown, never forgetting the seeds).

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::time::{Duration, Instant};

use super::keys::CommandTable;
use super::options::ClusterOptions;
use super::run::transport_failure;
use super::topology::{NodeAddr, SlotMap};
use crate::connection::{Connection, ReplyTimeout};
use crate::error::{Error, Result};
use crate::resp::Value;

const CLUSTER_SLOTS: &[&str] = &["CLUSTER", "SLOTS"];
const COMMAND: &[&str] = &["COMMAND"];

/// How long a node that failed is asked last for the slot map and not
/// read from (unless a connection to it opens meanwhile).
const FAILED_FOR: Duration = Duration::from_secs(5);

/// The slot map, the connections, and when to ask for a new map.
pub(super) struct Nodes {
    pub(super) options: ClusterOptions,
    seeds: Vec<NodeAddr>,
    pub(super) map: SlotMap,
    /// The map's primaries, sorted: kept here so a request need not scan
    /// the 16,384 slots to find them.
    primaries: Vec<NodeAddr>,
    pub(super) table: CommandTable,
    conns: HashMap<NodeAddr, Connection>,
    /// Nodes that failed lately (within [`FAILED_FOR`]), the latest last:
    /// asked last on refresh, and not read from. A node is forgotten here
    /// once a connection to it opens again.
    failed: Vec<(NodeAddr, Instant)>,
    last_refresh: Option<Instant>,
    /// The cooldown now: doubled (up to 4 times the configured one) by
    /// each refresh that found the map unchanged, as while a failover is
    /// pending; back to the configured one when the map changes.
    cooldown: Duration,
    refresh_wanted: bool,
    /// Full refreshes made, for [`Cluster::refreshes`](super::Cluster::refreshes).
    pub(super) refreshes: u64,
    rng: Rng,
}

impl Nodes {
    /// Asks the seeds for the slot map and the command table.
    pub(super) fn connect(options: &ClusterOptions) -> Result<Nodes> {
        let seeds = options.seed_nodes()?;
        let mut nodes = Nodes {
            options: options.clone(),
            seeds,
            map: SlotMap::from_cluster_slots(&Value::Array(Vec::new()), &placeholder())?,
            primaries: Vec::new(),
            table: CommandTable::fallback(),
            conns: HashMap::new(),
            failed: Vec::new(),
            last_refresh: None,
            cooldown: options.refresh_cooldown,
            refresh_wanted: false,
            refreshes: 0,
            rng: Rng::new(),
        };
        nodes.refresh()?;
        nodes.fetch_table();
        Ok(nodes)
    }

    /// A copy with the same options, slot map and command table, and no
    /// connections of its own yet.
    pub(super) fn sibling(&self) -> Nodes {
        Nodes {
            options: self.options.clone(),
            seeds: self.seeds.clone(),
            map: self.map.clone(),
            primaries: self.primaries.clone(),
            table: self.table.clone(),
            conns: HashMap::new(),
            failed: self.failed.clone(),
            last_refresh: self.last_refresh,
            cooldown: self.cooldown,
            refresh_wanted: self.refresh_wanted,
            refreshes: 0,
            rng: Rng::new(),
        }
    }

    /// The connection to `addr`, opened (or reopened, if broken) as needed.
    /// A node that cannot be reached is noted as failed, and a refresh is
    /// wanted: it may have been replaced.
    pub(super) fn conn(&mut self, addr: &NodeAddr) -> Result<&mut Connection> {
        if self
            .conns
            .get(addr)
            .map_or(false, |c| c.broken_cause().is_some())
        {
            self.conns.remove(addr);
        }
        if !self.conns.contains_key(addr) {
            match self.open(addr) {
                Ok(conn) => {
                    self.failed.retain(|(a, _)| a != addr);
                    self.conns.insert(addr.clone(), conn);
                }
                Err(e) => {
                    self.note_failed(addr);
                    return Err(e);
                }
            }
        }
        Ok(self.conns.get_mut(addr).expect("inserted above"))
    }

    /// Opens a connection to one node; `READONLY` on it when reads may go
    /// to replicas.
    fn open(&self, addr: &NodeAddr) -> Result<Connection> {
        let mut options = self.options.for_node(addr);
        // A node that does not answer must not hold a request past its
        // retry window.
        let window = self.options.retry_window.max(Duration::from_secs(1));
        options.connect_timeout = Some(options.connect_timeout.map_or(window, |t| t.min(window)));
        let mut conn = Connection::connect(&options)?;
        if self.options.read_from_replicas {
            // READONLY marks the connection as diverged from its options,
            // so it is never silently replaced without it: the cluster
            // reopens it instead.
            conn.query::<()>(["READONLY"])
                .map_err(|e| Error::Handshake {
                    step: "READONLY",
                    source: Box::new(e),
                })?;
        }
        Ok(conn)
    }

    /// Forgets a node's connection (it failed), and asks for a refresh.
    pub(super) fn drop_conn(&mut self, addr: &NodeAddr) {
        self.conns.remove(addr);
        self.note_failed(addr);
    }

    /// Notes that `addr` failed: asked last on refresh, and a refresh is
    /// wanted.
    pub(super) fn note_failed(&mut self, addr: &NodeAddr) {
        self.failed
            .retain(|(a, at)| a != addr && at.elapsed() < FAILED_FOR);
        self.failed.push((addr.clone(), Instant::now()));
        self.refresh_wanted = true;
    }

    /// Asks for a full refresh when the cooldown allows.
    pub(super) fn want_refresh(&mut self) {
        self.refresh_wanted = true;
    }

    /// Refreshes now if one is wanted and the cooldown has passed. However
    /// many were asked for, this makes at most one.
    pub(super) fn refresh_if_due(&mut self) {
        if self.refresh_wanted && self.cooldown_left().is_zero() {
            // A failed refresh keeps the old map; the next request retries.
            let _ = self.refresh();
        }
    }

    /// Time until a refresh is allowed.
    pub(super) fn cooldown_left(&self) -> Duration {
        match self.last_refresh {
            None => Duration::ZERO,
            Some(at) => self.cooldown.saturating_sub(at.elapsed()),
        }
    }

    /// Whether a refresh is wanted.
    pub(super) fn refresh_wanted(&self) -> bool {
        self.refresh_wanted
    }

    /// Asks known nodes, in random order with the ones that failed lately
    /// last, then the seeds, for `CLUSTER SLOTS`: the first complete answer
    /// wins, else the one serving most slots. A node that cannot answer
    /// never stops the search.
    pub(super) fn refresh(&mut self) -> Result<()> {
        self.last_refresh = Some(Instant::now());
        self.refresh_wanted = false;
        self.refreshes += 1;
        let mut best: Option<SlotMap> = None;
        let mut errors = Vec::new();
        for addr in self.candidates() {
            match self.ask_slots(&addr) {
                Ok(map) if map.is_complete() => {
                    best = Some(map);
                    break;
                }
                Ok(map) => {
                    if best.as_ref().map_or(true, |b| map.served() > b.served()) {
                        best = Some(map);
                    }
                }
                Err(e) => {
                    errors.push((addr.clone(), e));
                    self.note_failed(&addr);
                    self.refresh_wanted = false;
                }
            }
        }
        match best {
            Some(map) if map.served() > 0 => {
                self.install(map);
                Ok(())
            }
            _ => {
                self.refresh_wanted = true;
                Err(no_slot_map(errors))
            }
        }
    }

    /// The nodes to ask for the slot map, in order.
    fn candidates(&mut self) -> Vec<NodeAddr> {
        let mut known: Vec<NodeAddr> = self.map.nodes().into_iter().cloned().collect();
        self.rng.shuffle(&mut known);
        for seed in &self.seeds {
            if !known.contains(seed) {
                known.push(seed.clone());
            }
        }
        // Stable: the ones that failed lately go last, the latest last.
        let failed = &self.failed;
        known.sort_by_key(|a| {
            failed
                .iter()
                .position(|(f, at)| f == a && at.elapsed() < FAILED_FOR)
                .map_or(0, |i| i + 1)
        });
        known
    }

    /// One node's slot map.
    fn ask_slots(&mut self, addr: &NodeAddr) -> Result<SlotMap> {
        let reply = self.ask(addr, CLUSTER_SLOTS)?;
        SlotMap::from_cluster_slots(&reply, addr)
    }

    /// One topology question to one node (`CLUSTER SLOTS`, `COMMAND`),
    /// answered within [`topology_wait`](Nodes::topology_wait) even when no
    /// read timeout is set: a node that never answers must not stop the
    /// search. An error reply is an error.
    fn ask(&mut self, addr: &NodeAddr, command: &[&str]) -> Result<Value> {
        let wait = ReplyTimeout::After(self.topology_wait());
        let conn = self.conn(addr)?;
        match conn.with_timeout(wait).query::<Value>(command) {
            Err(e) if e.breaks_connection() => {
                self.conns.remove(addr);
                Err(e)
            }
            other => other,
        }
    }

    /// The longest wait for a topology answer: the read timeout, the
    /// connect timeout and the retry window (at least a second), whichever
    /// is shortest.
    fn topology_wait(&self) -> Duration {
        let node = &self.options.node;
        [node.read_timeout, node.connect_timeout]
            .iter()
            .flatten()
            .fold(
                self.options.retry_window.max(Duration::from_secs(1)),
                |a, &b| a.min(b),
            )
    }

    /// Makes `map` the slot map; closes connections to nodes it no longer
    /// names. A different set of nodes may run another version: the
    /// command table is fetched again.
    fn install(&mut self, map: SlotMap) {
        let base = self.options.refresh_cooldown;
        self.cooldown = if map == self.map {
            (self.cooldown * 2).min(base * 4)
        } else {
            base
        };
        let before: Vec<NodeAddr> = self.map.nodes().into_iter().cloned().collect();
        self.map = map;
        self.note_primaries();
        let now: Vec<NodeAddr> = self.map.nodes().into_iter().cloned().collect();
        self.conns.retain(|addr, _| now.contains(addr));
        // The cluster lists these nodes again: worth another try (a node
        // that is still down fails fast and is marked again).
        self.failed.retain(|(a, _)| !now.contains(a));
        if before != now && !before.is_empty() {
            self.fetch_table();
        }
    }

    /// The server's command table, from the first primary that gives it; a
    /// cluster that refuses `COMMAND` leaves the built-in rules.
    pub(super) fn fetch_table(&mut self) {
        for addr in self.primaries.clone() {
            match self.ask(&addr, COMMAND) {
                Ok(reply) => {
                    if let Ok(table) = CommandTable::from_reply(&reply) {
                        self.table = table;
                    }
                    return;
                }
                // Refused (an ACL without COMMAND): the built-in rules.
                Err(e) if e.is_server() => return,
                Err(_) => {}
            }
        }
    }

    /// A primary picked at random, for commands without keys.
    pub(super) fn random_primary(&self) -> Option<&NodeAddr> {
        if self.primaries.is_empty() {
            return None;
        }
        Some(&self.primaries[self.rng.below(self.primaries.len())])
    }

    /// For a read: one of the slot's replicas that has not failed lately,
    /// picked at random, or its primary when there is none.
    pub(super) fn reader_for(&self, slot: u16) -> Option<&NodeAddr> {
        let shard = self.map.shard(slot)?;
        let live = shard
            .replicas
            .iter()
            .filter(|r| !self.failed_lately(r))
            .count();
        if live == 0 {
            return Some(&shard.primary);
        }
        let pick = self.rng.below(live);
        shard
            .replicas
            .iter()
            .filter(|r| !self.failed_lately(r))
            .nth(pick)
    }

    /// Whether `addr` failed within [`FAILED_FOR`].
    fn failed_lately(&self, addr: &NodeAddr) -> bool {
        self.failed
            .iter()
            .any(|(a, at)| a == addr && at.elapsed() < FAILED_FOR)
    }

    /// Every primary, sorted by address.
    pub(super) fn primaries(&self) -> &[NodeAddr] {
        &self.primaries
    }

    /// Applies a `MOVED` to the slot map. The primaries are looked for
    /// again only when a new one appears (a primary left with no slot is
    /// dropped by the next refresh): a resharding brings MOVED by the
    /// hundred.
    pub(super) fn move_slot(&mut self, slot: u16, addr: NodeAddr) {
        let new = !self.primaries.contains(&addr);
        self.map.move_slot(slot, addr);
        if new {
            self.note_primaries();
        }
    }

    /// Remembers the map's primaries.
    fn note_primaries(&mut self) {
        self.primaries = self.map.primaries().into_iter().cloned().collect();
    }
}

/// Why no slot map was found. When every node asked failed to connect or
/// to answer, it is a [`Error::Connect`] naming them all (so `is_io()` and
/// `is_timeout()` answer for the first); otherwise a configuration error
/// saying what they answered.
fn no_slot_map(errors: Vec<(NodeAddr, Error)>) -> Error {
    let detail = errors
        .iter()
        .map(|(addr, e)| format!("{}: {}", addr, e))
        .collect::<Vec<_>>()
        .join("; ");
    let kind = errors.first().and_then(|(_, e)| match e {
        Error::Connect { source, .. } => Some(source.kind()),
        Error::Io(io) => Some(io.kind()),
        Error::Timeout { .. } => Some(io::ErrorKind::TimedOut),
        _ => None,
    });
    match kind {
        Some(kind) if errors.iter().all(|(_, e)| transport_failure(e)) => Error::Connect {
            addr: errors
                .iter()
                .map(|(a, _)| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            source: io::Error::new(kind, format!("no node answered CLUSTER SLOTS: {}", detail)),
        },
        _ => Error::Config(format!(
            "cluster: expected a node to answer CLUSTER SLOTS with a slot map, found none: {}",
            if errors.is_empty() {
                "no node serves any slot".to_string()
            } else {
                detail
            }
        )),
    }
}

/// An address for parsing an empty map.
fn placeholder() -> NodeAddr {
    NodeAddr {
        host: String::new(),
        port: 0,
    }
}

/// A small xorshift generator seeded from std's random hasher keys: enough
/// to spread load and refreshes, not for secrets.
struct Rng(Cell<u64>);

impl Rng {
    fn new() -> Rng {
        let seed = RandomState::new().build_hasher().finish();
        Rng(Cell::new(seed | 1))
    }

    fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.set(x);
        x
    }

    fn below(&self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}
