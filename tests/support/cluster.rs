//! A real Redis Cluster of private `redis-server` processes, for the
//! integration tests. Std only: it speaks RESP over raw sockets (through
//! the helpers of [`super`]) and never uses the crate under test.
//!
//! # Two ways to get one
//!
//! * [`shared()`] starts one 3 primaries + 3 replicas cluster per test binary,
//!   lazily, for tests that read and write but leave the topology alone
//!   (no migrations, failovers or kills: other tests use it at the same time).
//! * [`TestCluster::start`] starts a private one; dropping it kills its nodes
//!   and removes their directories. Tests that inject faults use their own.
//!
//! Readiness means: every node says `cluster_state:ok`, every node's
//! `CLUSTER SLOTS` covers the 16384 slots with the expected primaries and
//! replicas, and every replica reports `master_link_status:up`. It takes
//! 2.1 to 2.7 s on a 2-core machine (up to 3.5 s while other clusters start
//! too): a fresh primary keeps `cluster_state:fail` for its first 2 s, and
//! `redis-cli --cluster create` sleeps 1 s and then checks the join once a
//! second.
//!
//! # Nothing outlives the test binary
//!
//! A test binary does not run the destructors of statics, so the shared
//! cluster is never dropped, and a test process can also die by a signal.
//! Each node therefore gets a watchdog: a tiny `sh` whose stdin is a pipe
//! held only by the test process (see `WATCHDOG_SCRIPT` in [`super`]). When
//! the test process ends, however it ends, the kernel closes the pipe, the
//! watchdog's `read` returns, and it kills the node's current process (if
//! one runs) with SIGKILL and removes the node's directory (also when the
//! node was down, killed by a test). The tests in `tests/cluster_harness.rs`
//! prove it for a normal exit and for SIGKILL of the test process.
//!
//! # Ports
//!
//! Every node takes a port `p` and the cluster bus port `p + 10000`; both are
//! checked free and held in `PORTS_IN_USE` (so no other server of the
//! process takes them, even while a node is killed), and both lie below the
//! kernel's ephemeral port range when possible, so outgoing connections of
//! the tests cannot occupy them. Port 6379 and its bus port are never used.
//!
//! # Counting commands
//!
//! [`TestCluster::total_calls`] reads `INFO commandstats` (the stat of
//! `CLUSTER SLOTS` is `cluster|slots` on Redis 7.0), minus the calls the
//! harness made itself for its checks and accessors (including the
//! `CLUSTER SLOTS` of its readiness and health checks), so a test sees what
//! the code under test sent. Calls sent with [`TestCluster::raw`] and
//! friends count like any client's. Statistics start at zero once the
//! cluster is ready.
//!
//! # Redis 7.0 behaviour worth knowing
//!
//! * `CLUSTER SLOTS` leaves out a replica whose replication offset is 0
//!   (`CLUSTER SHARDS` marks it `"health": "loading"`), and the offset stays
//!   0 until the primary propagates a write: a fresh cluster lists no
//!   replicas at all (the primary's replication PING, every 10 s by
//!   default, would end that eventually). [`TestCluster::start`] sends
//!   `FLUSHALL` to each primary once its replicas are linked (the cluster is
//!   empty anyway), so that replicas are listed when it returns.
//! * A freshly started primary keeps `cluster_state:fail` for 2 s.
//! * While a killed primary is not yet replaced, every node says
//!   `cluster_state:fail` and answers `-CLUSTERDOWN` for every slot, not
//!   only the dead primary's (measured: for about 0.7 to 1 s of the 2.2
//!   to 2.9 s before the promotion).
//! * During a migration, `GET` of a key the source no longer has answers
//!   `-ASK <slot> 127.0.0.1:<target>`; the target answers such a key only
//!   after `ASKING` on the same connection (otherwise `-MOVED` back to the
//!   source); once the slot is handed over the source answers `-MOVED`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    encode, exchange, fresh_dir, redis_binary, release_port, reply_len, RedisServer, StartError,
    HOST, PORTS_IN_USE, RAW_TIMEOUT, START_ATTEMPTS,
};

/// The number of hash slots.
pub const SLOTS: u16 = 16384;

/// `--cluster-node-timeout` of every node, in milliseconds: how long a node
/// may be unreachable before it is considered failing. Small, so that a
/// killed primary is replaced in about 2 s, but not so small that a busy
/// machine makes nodes look dead.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// The longest [`TestCluster::start`] waits for the cluster to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a fault injection waits for the cluster to settle
/// (failover, promotion, restart, the end of a migration, health).
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `redis-cli --cluster create` may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(20);

/// How often waits poll the nodes.
const POLL: Duration = Duration::from_millis(25);

/// How many log lines of each node a failure message shows.
const LOG_LINES: usize = 15;

/// The cluster bus port is the client port plus this.
const BUS_OFFSET: u16 = 10000;

/// The role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A primary (Redis says "master").
    Primary,
    /// A replica (Redis says "slave").
    Replica,
}

/// One node as the cluster sees it now (see [`TestCluster::nodes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The client port (the bus port is this plus 10000).
    pub port: u16,
    /// The process id of the current (or, when killed, the last) process.
    pub pid: u32,
    /// The 40 character node id; it survives restarts (it is in nodes.conf).
    pub id: String,
    /// Primary or replica.
    pub role: Role,
    /// The node id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// Whether the process is running.
    pub alive: bool,
}

/// One range of a `CLUSTER SLOTS` reply, by ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange {
    /// The first slot.
    pub start: u16,
    /// The last slot (inclusive).
    pub end: u16,
    /// The port of the primary serving the range.
    pub primary: u16,
    /// The ports of the replicas listed for the range, sorted.
    pub replicas: Vec<u16>,
}

/// One batch of a migration, as passed to the callback of
/// [`TestCluster::migrate_slot_with`].
#[derive(Clone, Debug)]
pub struct MigrationBatch {
    /// The slot being migrated.
    pub slot: u16,
    /// The port of the source primary.
    pub from: u16,
    /// The port of the target primary.
    pub to: u16,
    /// The number of this batch, from 0.
    pub index: usize,
    /// The keys this batch moved (they now answer `-ASK` on `from`).
    pub keys: Vec<Vec<u8>>,
    /// The keys moved so far, this batch included.
    pub moved: usize,
}

/// A RESP reply, parsed leniently for the tests' own checks (see
/// [`parse_reply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+...`, and the RESP3 scalars without a closer match (double,
    /// boolean, big number) as their text.
    Status(String),
    /// `-...` (and RESP3 blob errors), without the `-`.
    Error(String),
    /// `:...`
    Int(i64),
    /// `$...` (and RESP3 verbatim strings, without their format prefix).
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or RESP3 `_`.
    Nil,
    /// `*...` (and RESP3 maps as alternating keys and values, sets, pushes).
    Array(Vec<Reply>),
}

impl Reply {
    /// The integer; panics if the reply is not one.
    pub fn as_int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("expected an integer reply, got {:?}", other),
        }
    }

    /// The bytes of a bulk string; panics on anything else.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Reply::Bulk(b) => b,
            other => panic!("expected a bulk string reply, got {:?}", other),
        }
    }

    /// The text of a status or bulk string (lossy UTF-8); panics on
    /// anything else.
    pub fn as_text(&self) -> String {
        match self {
            Reply::Status(s) => s.clone(),
            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a status or bulk string reply, got {:?}", other),
        }
    }

    /// The elements of an array; panics on anything else.
    pub fn as_array(&self) -> &[Reply] {
        match self {
            Reply::Array(items) => items,
            other => panic!("expected an array reply, got {:?}", other),
        }
    }

    /// The error text (without `-`), if it is an error.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether it is `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Status(s) if s == "OK")
    }
}

/// Parses exactly one complete RESP2/RESP3 reply; panics with the bytes if
/// they are not one (incomplete, malformed, or followed by more bytes).
pub fn parse_reply(bytes: &[u8]) -> Reply {
    match parse_at(bytes, 0) {
        Ok((reply, used)) if used == bytes.len() => reply,
        Ok((_, used)) => panic!(
            "expected exactly one RESP reply, got {} extra bytes after it in {:?}",
            bytes.len() - used,
            String::from_utf8_lossy(bytes)
        ),
        Err(why) => panic!(
            "expected one complete RESP reply, got {:?}: {}",
            String::from_utf8_lossy(bytes),
            why
        ),
    }
}

/// Parses the reply starting at `at`; returns it and the offset after it.
fn parse_at(buf: &[u8], at: usize) -> Result<(Reply, usize), String> {
    let rest = &buf[at.min(buf.len())..];
    let line_len = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| format!("no CRLF after offset {}", at))?;
    if line_len == 0 {
        return Err(format!("an empty line at offset {}", at));
    }
    let line = String::from_utf8_lossy(&rest[1..line_len]).into_owned();
    let after = at + line_len + 2;
    let number = || {
        line.parse::<i64>()
            .map_err(|_| format!("expected a number at offset {}, got {:?}", at, line))
    };
    match rest[0] {
        b'+' | b',' | b'#' | b'(' => Ok((Reply::Status(line), after)),
        b'-' => Ok((Reply::Error(line), after)),
        b':' => Ok((Reply::Int(number()?), after)),
        b'_' => Ok((Reply::Nil, after)),
        b'$' | b'=' | b'!' => {
            let n = number()?;
            if n < 0 {
                return Ok((Reply::Nil, after));
            }
            let end = after + n as usize;
            if buf.len() < end + 2 {
                return Err(format!("a bulk string of {} bytes is incomplete", n));
            }
            let mut body = buf[after..end].to_vec();
            if rest[0] == b'=' && body.len() >= 4 {
                body.drain(..4);
            }
            if rest[0] == b'!' {
                return Ok((
                    Reply::Error(String::from_utf8_lossy(&body).into_owned()),
                    end + 2,
                ));
            }
            Ok((Reply::Bulk(body), end + 2))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number()?;
            if n < 0 {
                return Ok((Reply::Nil, after));
            }
            let count = if matches!(rest[0], b'%' | b'|') {
                2 * n as usize
            } else {
                n as usize
            };
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..count {
                let (item, next) = parse_at(buf, at)?;
                items.push(item);
                at = next;
            }
            if rest[0] == b'|' {
                // An attribute annotates the reply after it: return that.
                return parse_at(buf, at);
            }
            Ok((Reply::Array(items), at))
        }
        other => Err(format!(
            "unknown reply type byte {:?} at offset {}",
            other as char, at
        )),
    }
}

/// The hash slot of a key: CRC16 (XMODEM) of the key, or of its `{tag}`
/// when the key has a non-empty one, modulo 16384. Independent of the
/// crate under test; the smoke test checks it against `CLUSTER KEYSLOT`.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// `n` distinct key names that all hash to `slot`: `{tag}:0`, `{tag}:1`, ...
/// with the first tag `t<i>` that hashes there.
pub fn keys_in_slot(slot: u16, n: usize) -> Vec<String> {
    assert!(
        slot < SLOTS,
        "expected a slot below {}, got {}",
        SLOTS,
        slot
    );
    let tag = (0u64..)
        .map(|i| format!("t{}", i))
        .find(|tag| key_slot(tag.as_bytes()) == slot)
        .expect("some tag hashes to every slot");
    (0..n).map(|i| format!("{{{}}}:{}", tag, i)).collect()
}

/// The cluster of [`shared()`].
static SHARED: Mutex<Option<&'static TestCluster>> = Mutex::new(None);

/// A 3 primaries + 3 replicas cluster shared by every test of this test
/// binary, started by the first caller (the others wait for it). Its nodes
/// are killed by their watchdogs when the test process ends (see the
/// module documentation). Use it only for reads and writes: a test that
/// changes the topology gets its own with [`TestCluster::start`].
pub fn shared() -> &'static TestCluster {
    let mut cached = lock(&SHARED);
    if let Some(cluster) = *cached {
        return cluster;
    }
    // Leaked on purpose: it lives as long as the process.
    let cluster: &'static TestCluster = Box::leak(Box::new(TestCluster::start(3, 1)));
    *cached = Some(cluster);
    cluster
}

/// One node process and what the harness remembers about it.
struct Node {
    server: RedisServer,
    /// What it served when it was killed as a primary: its slot ranges and
    /// its replicas' ports (see [`TestCluster::wait_for_promotion_of_replica_of`]).
    killed_primary: Option<KilledPrimary>,
}

/// What a primary served when it was killed.
#[derive(Clone)]
struct KilledPrimary {
    /// Its slot ranges.
    slots: Vec<(u16, u16)>,
    /// Its live replicas' ports.
    replicas: Vec<u16>,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Kill first, so the bus port is really free once released; the
        // server's own Drop then releases its port and removes its dir.
        self.server.kill();
        release_port(self.server.port() + BUS_OFFSET);
    }
}

/// A Redis Cluster of private `redis-server` processes (see the module
/// documentation). All methods take `&self`, and the type is `Sync`, so a
/// test can run a fault injection in one thread while others use the
/// cluster:
///
/// ```ignore
/// let cluster = TestCluster::start(3, 1);
/// std::thread::scope(|s| {
///     s.spawn(|| cluster.migrate_slot(slot, to, 10, Duration::from_millis(30)));
///     // ... meanwhile, talk to the cluster here ...
/// });
/// ```
///
/// Dropping it kills every node and removes their directories.
pub struct TestCluster {
    /// One per node, in the order of `ports`.
    nodes: Vec<Mutex<Node>>,
    /// The client port of each node; fixed for the cluster's lifetime.
    ports: Vec<u16>,
    /// The node id of each node; fixed too (nodes.conf keeps it).
    ids: Vec<String>,
    /// Calls the harness made itself, per (port, stat name), since the
    /// node's statistics were last reset (see [`TestCluster::total_calls`]).
    ledger: Mutex<HashMap<(u16, String), u64>>,
    /// How long `start` took.
    startup: Duration,
}

impl TestCluster {
    /// Starts `primaries` primaries (at least 3: `redis-cli --cluster
    /// create` wants that many) with `replicas_per_primary` replicas each,
    /// and waits (at most [`START_TIMEOUT`]) until the cluster is ready:
    /// every node says `cluster_state:ok`, every node's `CLUSTER SLOTS`
    /// shows all 16384 slots with `primaries` primaries and
    /// `replicas_per_primary` replicas for each, and every replica reports
    /// `master_link_status:up`. Takes 2.1 to 2.7 s (see the module
    /// documentation). Panics, with the nodes' log tails, if that does not
    /// happen.
    ///
    /// Each node runs `redis-server --cluster-enabled yes --cluster-config-file
    /// <dir>/nodes.conf --cluster-node-timeout 1000 --save '' --appendonly no`
    /// plus diskless replication without delay, replica migration off (so
    /// replicas stay where they were put) and replica validity factor 0 (a
    /// replica may always be promoted), on loopback with its own directory.
    /// The cluster is then built with `redis-cli --cluster create ...
    /// --cluster-replicas <n> --cluster-yes`.
    pub fn start(primaries: usize, replicas_per_primary: usize) -> TestCluster {
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs at least 3 primaries, got {}",
            primaries
        );
        let began = Instant::now();
        let total = primaries * (1 + replicas_per_primary);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(spawn_node());
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.server.port()).collect();
        let mut ids = Vec::with_capacity(total);
        for &port in &ports {
            let id = command(port, &["CLUSTER", "MYID"])
                .unwrap_or_else(|e| panic!("expected a node id from CLUSTER MYID: {}", e));
            ids.push(id.as_text());
        }
        let mut cluster = TestCluster {
            nodes: nodes.into_iter().map(Mutex::new).collect(),
            ports,
            ids,
            ledger: Mutex::new(HashMap::new()),
            startup: Duration::ZERO,
        };
        // From here on a panic drops `cluster`, which kills every node.
        cluster.create(replicas_per_primary);
        let deadline = began + START_TIMEOUT;
        cluster.wait_for(
            "every replica to be linked to its primary",
            deadline,
            || {
                let own = cluster.own_lines()?;
                let replicas: Vec<&NodeLine> = own.iter().filter(|l| l.is_replica()).collect();
                if replicas.len() != primaries * replicas_per_primary {
                    return Err(format!(
                        "expected {} replicas, {} nodes say they are one",
                        primaries * replicas_per_primary,
                        replicas.len()
                    ));
                }
                for replica in replicas {
                    let info = cluster.internal_text(replica.port, &["INFO", "replication"])?;
                    if !info.contains("master_link_status:up") {
                        return Err(format!(
                            "replica {} is not linked yet: {}",
                            replica.port,
                            info_field(&info, "master_link_status")
                        ));
                    }
                }
                Ok(())
            },
        );
        // A primary whose replication offset is still 0 keeps its replicas
        // out of CLUSTER SLOTS; one propagated write moves it.
        for line in cluster.own_lines().unwrap_or_else(|e| panic!("{}", e)) {
            if line.is_primary() {
                let reply = cluster
                    .internal(line.port, &["FLUSHALL"])
                    .unwrap_or_else(|e| panic!("expected +OK to FLUSHALL: {}", e));
                assert!(
                    reply.is_ok(),
                    "expected +OK to FLUSHALL on {}, got {:?}",
                    line.port,
                    reply
                );
            }
        }
        cluster.wait_for("the cluster to be ready", deadline, || {
            cluster.check_health(Some((primaries, replicas_per_primary)))
        });
        cluster.reset_stats();
        cluster.startup = began.elapsed();
        cluster
    }

    /// How long [`start`](Self::start) took, from the first spawn to ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Every node the harness started (alive or not), with its role as the
    /// cluster sees it now: a live node's own view, a dead node's as another
    /// live node last knew it. Panics if a live node cannot be asked.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let own = self.own_lines().unwrap_or_else(|e| panic!("{}", e));
        let mut others: Option<Vec<NodeLine>> = None;
        let mut out = Vec::new();
        for (i, &port) in self.ports.iter().enumerate() {
            let (pid, alive) = {
                let mut node = lock(&self.nodes[i]);
                (node.server.pid(), node.server.is_running())
            };
            let line = match own.iter().find(|l| l.port == port) {
                Some(line) => line.clone(),
                None => {
                    if others.is_none() {
                        others = Some(self.any_full_view());
                    }
                    let view = others.as_ref().expect("set just above");
                    view.iter()
                        .find(|l| l.id == self.ids[i])
                        .cloned()
                        .unwrap_or_else(|| {
                            panic!(
                                "expected the live nodes to know node {} (port {}), got {:?}",
                                self.ids[i], port, view
                            )
                        })
                }
            };
            out.push(NodeInfo {
                port,
                pid,
                id: self.ids[i].clone(),
                role: if line.is_replica() {
                    Role::Replica
                } else {
                    Role::Primary
                },
                primary_id: line.primary_id.clone(),
                alive,
            });
        }
        out
    }

    /// The client port of every node, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// `redis://127.0.0.1:<port>` for every node, in start order.
    pub fn seed_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://{}:{}", HOST, p))
            .collect()
    }

    /// The node id of the node on `port`; panics if it is not one of ours.
    pub fn node_id(&self, port: u16) -> String {
        self.ids[self.index(port)].clone()
    }

    /// The port of the node with this id, if it is one of ours.
    pub fn port_of_id(&self, id: &str) -> Option<u16> {
        self.ids.iter().position(|i| i == id).map(|i| self.ports[i])
    }

    /// Whether the node on `port` is running.
    pub fn is_alive(&self, port: u16) -> bool {
        lock(&self.nodes[self.index(port)]).server.is_running()
    }

    /// The node's directory (nodes.conf, log); removed when the cluster is
    /// dropped, or by the watchdogs when the test process ends.
    pub fn dir(&self, port: u16) -> PathBuf {
        lock(&self.nodes[self.index(port)])
            .server
            .dir()
            .to_path_buf()
    }

    /// The pid of the node's current (or, when killed, last) process.
    pub fn pid(&self, port: u16) -> u32 {
        lock(&self.nodes[self.index(port)]).server.pid()
    }

    /// The ports of the live primaries that serve slots, sorted.
    pub fn primaries(&self) -> Vec<u16> {
        let own = self.own_lines().unwrap_or_else(|e| panic!("{}", e));
        let mut ports: Vec<u16> = own
            .iter()
            .filter(|l| l.is_primary() && !l.slots.is_empty())
            .map(|l| l.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The port of the live primary serving `slot`: the live node that
    /// claims it for itself (during a migration, the source until the
    /// migration ends); when two claim it, the one with the higher config
    /// epoch. Panics if no live node claims it.
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        let own = self.own_lines().unwrap_or_else(|e| panic!("{}", e));
        own.iter()
            .filter(|l| l.is_primary() && covers(&l.slots, slot))
            .max_by_key(|l| l.config_epoch)
            .map(|l| l.port)
            .unwrap_or_else(|| {
                panic!(
                    "expected a live primary to claim slot {}, got none: {:?}",
                    slot, own
                )
            })
    }

    /// The port of the live primary serving `key` (see
    /// [`primary_for_slot`](Self::primary_for_slot)).
    pub fn primary_for_key(&self, key: &str) -> u16 {
        self.primary_for_slot(key_slot(key.as_bytes()))
    }

    /// The ports of the live replicas of the primary on `primary_port`
    /// (by their own view), sorted.
    pub fn replicas_of(&self, primary_port: u16) -> Vec<u16> {
        let id = self.node_id(primary_port);
        let own = self.own_lines().unwrap_or_else(|e| panic!("{}", e));
        let mut ports: Vec<u16> = own
            .iter()
            .filter(|l| l.is_replica() && l.primary_id.as_deref() == Some(id.as_str()))
            .map(|l| l.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The node's `CLUSTER SLOTS` reply as sorted ranges (adjacent ranges
    /// with the same nodes merged). Not counted by
    /// [`total_calls`](Self::total_calls). Panics if the node cannot be
    /// asked.
    pub fn cluster_slots(&self, port: u16) -> Vec<SlotRange> {
        self.slots_view(port).unwrap_or_else(|e| panic!("{}", e))
    }

    /// Sends one command to the node on `port` over a fresh connection and
    /// returns the raw bytes of its reply (exactly one complete reply).
    /// Arguments may be `&str` or bytes. Panics if the node cannot be
    /// reached or does not answer within 5 s.
    pub fn raw<A: AsRef<[u8]>>(&self, port: u16, args: &[A]) -> Vec<u8> {
        self.try_raw(port, args).unwrap_or_else(|e| {
            panic!(
                "expected a reply to {} from port {}, got an error: {}",
                show(args),
                port,
                e
            )
        })
    }

    /// Like [`raw`](Self::raw), but returns the error.
    pub fn try_raw<A: AsRef<[u8]>>(&self, port: u16, args: &[A]) -> io::Result<Vec<u8>> {
        exchange(port, &encode(args), 1, RAW_TIMEOUT)
    }

    /// [`raw`](Self::raw), parsed.
    pub fn query<A: AsRef<[u8]>>(&self, port: u16, args: &[A]) -> Reply {
        parse_reply(&self.raw(port, args))
    }

    /// Sends several commands in one write over one fresh connection and
    /// returns their parsed replies, e.g. `ASKING` then `GET k`. Panics
    /// like [`raw`](Self::raw).
    pub fn query_pipelined(&self, port: u16, commands: &[&[&str]]) -> Vec<Reply> {
        let mut request = Vec::new();
        for args in commands {
            request.extend(encode(args));
        }
        let bytes = exchange(port, &request, commands.len(), RAW_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "expected {} replies to {:?} from port {}, got an error: {}",
                commands.len(),
                commands,
                port,
                e
            )
        });
        let mut replies = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = reply_len(&bytes[at..]).expect("exchange returns whole replies");
            replies.push(parse_reply(&bytes[at..at + len]));
            at += len;
        }
        replies
    }

    /// The number of calls of the command `stat` on the node on `port`,
    /// from its `INFO commandstats` (`stat` as Redis names it, with or
    /// without the `cmdstat_` prefix, e.g. `"cluster|slots"` or `"get"`),
    /// minus the calls the harness made itself since the statistics were
    /// reset. Panics if the node cannot be asked.
    pub fn calls_on(&self, port: u16, stat: &str) -> u64 {
        let stat = stat.trim_start_matches("cmdstat_").to_ascii_lowercase();
        // Read before asking: INFO does not count itself in its own reply.
        let ours = lock(&self.ledger)
            .get(&(port, stat.clone()))
            .copied()
            .unwrap_or(0);
        let text = self
            .internal_text(port, &["INFO", "commandstats"])
            .unwrap_or_else(|e| panic!("{}", e));
        let prefix = format!("cmdstat_{}:", stat);
        let calls = text
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map(|rest| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| {
                        panic!("expected calls=<n> in {:?} from port {}", rest, port)
                    })
            })
            .unwrap_or(0);
        calls.saturating_sub(ours)
    }

    /// [`calls_on`](Self::calls_on) summed over every live node. Calls
    /// made through [`raw`](Self::raw) and friends count; the harness's own
    /// checks and accessors do not. Calls servers make to each other count
    /// too (commands replicated to replicas, `restore-asking` of MIGRATE).
    pub fn total_calls(&self, stat: &str) -> u64 {
        self.live_ports()
            .into_iter()
            .map(|port| self.calls_on(port, stat))
            .sum()
    }

    /// `CONFIG RESETSTAT` on every live node: command counts start again
    /// from zero. [`start`](Self::start) does it once the cluster is ready.
    pub fn reset_stats(&self) {
        for port in self.live_ports() {
            let reply = command(port, &["CONFIG", "RESETSTAT"])
                .unwrap_or_else(|e| panic!("expected +OK to CONFIG RESETSTAT: {}", e));
            assert!(
                reply.is_ok(),
                "expected +OK to CONFIG RESETSTAT on {}, got {:?}",
                port,
                reply
            );
            let mut ledger = lock(&self.ledger);
            ledger.retain(|(p, _), _| *p != port);
            // Counted after the reset.
            ledger.insert((port, "config|resetstat".to_string()), 1);
        }
    }

    /// Moves `slot` to the primary on `to_port` the way `redis-cli
    /// --cluster reshard` does, so that clients see a real migration:
    ///
    /// 1. `CLUSTER SETSLOT <slot> IMPORTING <source id>` on the target, then
    ///    `CLUSTER SETSLOT <slot> MIGRATING <target id>` on the source.
    ///    From here on the source answers `-ASK <slot> 127.0.0.1:<to>` for
    ///    keys of the slot it no longer has (and for new keys).
    /// 2. Until the source has no key left in the slot: `CLUSTER
    ///    GETKEYSINSLOT <slot> <batch>` on the source, then `MIGRATE
    ///    127.0.0.1 <to> "" 0 5000 KEYS k1 k2 ...` for those keys, then
    ///    a sleep of `pause` (only after a full batch), so other threads
    ///    really see the half-migrated slot.
    /// 3. `CLUSTER SETSLOT <slot> NODE <target id>` on the target, the
    ///    source and every other live primary; then it waits (at most
    ///    [`CHANGE_TIMEOUT`]) until every live node, replicas included,
    ///    says in `CLUSTER NODES` that the target owns the slot.
    ///
    /// Takes about `pause` times the number of full batches plus a few
    /// milliseconds (50 keys, batch 10, pause 40 ms: about 0.22 s). Returns the number of keys moved. Panics if `to_port`
    /// is not a live primary or already owns the slot, or if a step fails.
    pub fn migrate_slot(&self, slot: u16, to_port: u16, batch: usize, pause: Duration) -> usize {
        self.migrate_slot_with(slot, to_port, batch, pause, |_| {})
    }

    /// [`migrate_slot`](Self::migrate_slot), calling `on_batch` after each
    /// batch's MIGRATE and before its pause: a test can check the
    /// half-migrated slot there deterministically, without threads.
    pub fn migrate_slot_with<F: FnMut(&MigrationBatch)>(
        &self,
        slot: u16,
        to_port: u16,
        batch: usize,
        pause: Duration,
        mut on_batch: F,
    ) -> usize {
        assert!(batch > 0, "expected a batch size above 0");
        assert!(
            slot < SLOTS,
            "expected a slot below {}, got {}",
            SLOTS,
            slot
        );
        let from = self.primary_for_slot(slot);
        assert_ne!(
            from, to_port,
            "migrate_slot({}, {}): that node already owns the slot",
            slot, to_port
        );
        assert!(
            self.primaries().contains(&to_port),
            "migrate_slot({}, {}): expected the target to be a live primary serving slots, it is not",
            slot,
            to_port
        );
        let from_id = self.node_id(from);
        let to_id = self.node_id(to_port);
        let slot_arg = slot.to_string();
        self.expect_ok(
            to_port,
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
        );
        self.expect_ok(
            from,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
        );
        let to_arg = to_port.to_string();
        let batch_arg = batch.to_string();
        let mut moved = 0;
        let mut index = 0;
        loop {
            let keys: Vec<Vec<u8>> = match self
                .internal(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, &batch_arg])
            {
                Ok(Reply::Array(items)) => items.iter().map(|k| k.as_bytes().to_vec()).collect(),
                other => panic!(
                    "expected an array to CLUSTER GETKEYSINSLOT {} {} on {}, got {:?}",
                    slot, batch, from, other
                ),
            };
            if keys.is_empty() {
                break;
            }
            let mut args: Vec<&[u8]> = vec![
                b"MIGRATE",
                HOST.as_bytes(),
                to_arg.as_bytes(),
                b"",
                b"0",
                b"5000",
                b"KEYS",
            ];
            args.extend(keys.iter().map(|k| k.as_slice()));
            match self.internal(from, &args) {
                Ok(Reply::Status(s)) if s == "OK" || s == "NOKEY" => {}
                other => panic!(
                    "expected +OK to MIGRATE of {} keys of slot {} from {} to {}, got {:?}",
                    keys.len(),
                    slot,
                    from,
                    to_port,
                    other
                ),
            }
            moved += keys.len();
            let full = keys.len() == batch;
            on_batch(&MigrationBatch {
                slot,
                from,
                to: to_port,
                index,
                keys,
                moved,
            });
            index += 1;
            if full {
                thread::sleep(pause);
            }
        }
        self.expect_ok(to_port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
        self.expect_ok(from, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
        for port in self.primaries() {
            if port != from && port != to_port {
                self.expect_ok(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
            }
        }
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let what = format!("every node to see slot {} on {}", slot, to_port);
        self.wait_for(&what, deadline, || {
            for port in self.live_ports() {
                let view = parse_nodes(&self.internal_text(port, &["CLUSTER", "NODES"])?)?;
                let owners: Vec<u16> = view
                    .iter()
                    .filter(|l| covers(&l.slots, slot))
                    .map(|l| l.port)
                    .collect();
                if owners != [to_port] {
                    return Err(format!(
                        "node {} says slot {} is on {:?}",
                        port, slot, owners
                    ));
                }
            }
            Ok(())
        });
        moved
    }

    /// A coordinated manual failover: `CLUSTER FAILOVER` on the replica on
    /// `replica_port` (its primary stops writes, the replica catches up and
    /// takes over, so no acknowledged write is lost), then waits (at most
    /// [`CHANGE_TIMEOUT`]; 0.15 to 0.5 s measured) until the replica
    /// says it is a primary, its old primary (if alive) says it replicates
    /// it, and the cluster is healthy (see
    /// [`wait_until_healthy`](Self::wait_until_healthy)).
    pub fn failover(&self, replica_port: u16) {
        let me = self.own_line(replica_port);
        assert!(
            me.is_replica(),
            "failover({}) expects a replica, but that node is a primary",
            replica_port
        );
        let old = me
            .primary_id
            .and_then(|id| self.port_of_id(&id))
            .unwrap_or_else(|| panic!("expected replica {} to have a known primary", replica_port));
        self.expect_ok(replica_port, &["CLUSTER", "FAILOVER"]);
        let my_id = self.node_id(replica_port);
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let what = format!("{} to take over from {}", replica_port, old);
        self.wait_for(&what, deadline, || {
            let own = self.own_lines()?;
            if !own.iter().any(|l| l.port == replica_port && l.is_primary()) {
                return Err(format!("{} is not a primary yet", replica_port));
            }
            if let Some(old_line) = own.iter().find(|l| l.port == old) {
                if old_line.primary_id.as_deref() != Some(my_id.as_str()) {
                    return Err(format!("{} does not replicate {} yet", old, replica_port));
                }
            }
            self.check_health(None)
        });
    }

    /// Kills the node on `port` with SIGKILL and reaps it; returns at once. Its ports stay reserved for
    /// [`restart`](Self::restart). If it was a primary, its slots and
    /// replicas are remembered for
    /// [`wait_for_promotion_of_replica_of`](Self::wait_for_promotion_of_replica_of).
    /// Does nothing if it is not running.
    pub fn kill(&self, port: u16) {
        let i = self.index(port);
        if !self.is_alive(port) {
            return;
        }
        let line = self.own_line(port);
        let remembered = if line.is_primary() {
            Some(KilledPrimary {
                slots: line.slots.clone(),
                replicas: self.replicas_of(port),
            })
        } else {
            None
        };
        let mut node = lock(&self.nodes[i]);
        node.killed_primary = remembered;
        node.server.kill();
    }

    /// [`kill`](Self::kill), after checking that the node is a live primary
    /// serving slots. Until a replica takes over (2.2 to 2.9 s measured with
    /// [`NODE_TIMEOUT_MS`] = 1000), the cluster first goes on serving the
    /// other slots, then, once the failure is agreed on, answers
    /// `-CLUSTERDOWN` for every slot until the promotion.
    pub fn kill_primary(&self, port: u16) {
        let line = self.own_line(port);
        assert!(
            line.is_primary() && !line.slots.is_empty(),
            "kill_primary({}) expects a primary serving slots, got {:?}",
            port,
            line
        );
        self.kill(port);
    }

    /// Waits (at most [`CHANGE_TIMEOUT`]) until one of the replicas the
    /// primary on `old_port` had when it was killed with
    /// [`kill`](Self::kill)/[`kill_primary`](Self::kill_primary) says it is
    /// a primary serving all of the old primary's slots, and the cluster is
    /// healthy; returns its port. With [`NODE_TIMEOUT_MS`] = 1000 this takes
    /// 2.2 to 2.9 s after the kill (measured): failure detection after the
    /// node timeout, then an election after a random delay of 0.5 to 1 s.
    pub fn wait_for_promotion_of_replica_of(&self, old_port: u16) -> u16 {
        let remembered = lock(&self.nodes[self.index(old_port)])
            .killed_primary
            .clone();
        let KilledPrimary {
            slots,
            replicas: candidates,
        } = remembered.unwrap_or_else(|| {
            panic!(
                "wait_for_promotion_of_replica_of({}) expects that node to have been killed as a primary with kill_primary",
                old_port
            )
        });
        assert!(
            !candidates.is_empty(),
            "wait_for_promotion_of_replica_of({}): that primary had no replica to promote",
            old_port
        );
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let what = format!("one of {:?} to replace {}", candidates, old_port);
        self.wait_for(&what, deadline, || {
            let own = self.own_lines()?;
            let winner = own
                .iter()
                .find(|l| {
                    candidates.contains(&l.port)
                        && l.is_primary()
                        && slots
                            .iter()
                            .all(|&(a, b)| (a..=b).all(|s| covers(&l.slots, s)))
                })
                .map(|l| l.port)
                .ok_or_else(|| format!("none of {:?} serves {:?} yet", candidates, slots))?;
            self.check_health(None)?;
            Ok(winner)
        })
    }

    /// Starts the node on `port` again (killing it first if it runs) with
    /// the same port, directory and nodes.conf, then waits (at most
    /// [`CHANGE_TIMEOUT`]) until the cluster is healthy. A primary that was
    /// replaced while it was down comes back as a replica of its successor
    /// (its nodes.conf is outdated and the cluster tells it so); measured:
    /// about 0.1 s until healthy.
    /// Its command statistics start from zero.
    pub fn restart(&self, port: u16) {
        {
            let mut node = lock(&self.nodes[self.index(port)]);
            node.server.restart();
            node.killed_primary = None;
            lock(&self.ledger).retain(|(p, _), _| *p != port);
        }
        self.wait_until_healthy();
    }

    /// Waits (at most [`CHANGE_TIMEOUT`]) until the cluster is healthy: every
    /// live node says `cluster_state:ok`; every live replica replicates a
    /// live primary and reports `master_link_status:up`; and every live
    /// node's `CLUSTER SLOTS` is the same, covers all 16384 slots, and shows
    /// each range on the live primary that claims it with exactly its live
    /// replicas (so dead nodes have been noticed). Panics with the reason
    /// and the nodes' logs otherwise.
    pub fn wait_until_healthy(&self) {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        self.wait_for("the cluster to be healthy", deadline, || {
            self.check_health(None)
        });
    }

    /// The last `lines` lines of every node's log, with its port and pid.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, port) in self.ports.iter().enumerate() {
            let node = lock(&self.nodes[i]);
            out.push_str(&format!(
                "=== node {} (pid {}) ===\n{}",
                port,
                node.server.pid(),
                node.server.log_tail(lines)
            ));
        }
        out
    }

    // ---- internals ----

    fn index(&self, port: u16) -> usize {
        self.ports
            .iter()
            .position(|&p| p == port)
            .unwrap_or_else(|| {
                panic!(
                    "expected the port of a node of this cluster ({:?}), got {}",
                    self.ports, port
                )
            })
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .enumerate()
            .filter(|&(i, _)| lock(&self.nodes[i]).server.is_running())
            .map(|(_, &p)| p)
            .collect()
    }

    /// Sends a command for the harness's own purposes and records it in the
    /// ledger; an error reply is an `Err`.
    fn internal<A: AsRef<[u8]>>(&self, port: u16, args: &[A]) -> Result<Reply, String> {
        let reply = command(port, args)?;
        if let Reply::Error(e) = &reply {
            return Err(format!("{} on port {} answered -{}", show(args), port, e));
        }
        *lock(&self.ledger)
            .entry((port, stat_name(args)))
            .or_insert(0) += 1;
        Ok(reply)
    }

    fn internal_text(&self, port: u16, args: &[&str]) -> Result<String, String> {
        match self.internal(port, args)? {
            Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Status(s) => Ok(s),
            other => Err(format!(
                "expected text from {:?} on port {}, got {:?}",
                args, port, other
            )),
        }
    }

    fn expect_ok(&self, port: u16, args: &[&str]) {
        match self.internal(port, args) {
            Ok(reply) if reply.is_ok() => {}
            other => panic!(
                "expected +OK to {:?} on port {}, got {:?}",
                args, port, other
            ),
        }
    }

    /// Each live node's line about itself in its own `CLUSTER NODES`.
    fn own_lines(&self) -> Result<Vec<NodeLine>, String> {
        let mut out = Vec::new();
        for port in self.live_ports() {
            let view = parse_nodes(&self.internal_text(port, &["CLUSTER", "NODES"])?)?;
            let mut me = view
                .into_iter()
                .find(|l| l.flags.iter().any(|f| f == "myself"))
                .ok_or_else(|| format!("node {} has no myself line in CLUSTER NODES", port))?;
            // A node may not know its own address yet; we do.
            me.port = port;
            out.push(me);
        }
        Ok(out)
    }

    /// The own line of a live node; panics if it is not running.
    fn own_line(&self, port: u16) -> NodeLine {
        assert!(
            self.is_alive(port),
            "expected node {} to be running, it is not",
            port
        );
        let own = self.own_lines().unwrap_or_else(|e| panic!("{}", e));
        own.into_iter()
            .find(|l| l.port == port)
            .unwrap_or_else(|| panic!("expected node {} to describe itself", port))
    }

    /// The whole `CLUSTER NODES` of the first live node that answers.
    fn any_full_view(&self) -> Vec<NodeLine> {
        let mut errors = Vec::new();
        for port in self.live_ports() {
            match self
                .internal_text(port, &["CLUSTER", "NODES"])
                .and_then(|t| parse_nodes(&t))
            {
                Ok(view) => return view,
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "expected a live node to answer CLUSTER NODES, got: {:?}",
            errors
        );
    }

    fn slots_view(&self, port: u16) -> Result<Vec<SlotRange>, String> {
        let reply = self.internal(port, &["CLUSTER", "SLOTS"])?;
        let mut ranges = Vec::new();
        let items = match &reply {
            Reply::Array(items) => items,
            other => return Err(format!("CLUSTER SLOTS on {} gave {:?}", port, other)),
        };
        for item in items {
            let parts = match item {
                Reply::Array(parts) if parts.len() >= 3 => parts,
                other => return Err(format!("CLUSTER SLOTS on {} has range {:?}", port, other)),
            };
            let node_port = |r: &Reply| match r {
                Reply::Array(node) if node.len() >= 2 => match node[1] {
                    Reply::Int(p) => Ok(p as u16),
                    _ => Err(format!("CLUSTER SLOTS on {} has node {:?}", port, node)),
                },
                other => Err(format!("CLUSTER SLOTS on {} has node {:?}", port, other)),
            };
            let (start, end) = match (&parts[0], &parts[1]) {
                (Reply::Int(a), Reply::Int(b)) => (*a as u16, *b as u16),
                other => return Err(format!("CLUSTER SLOTS on {} has bounds {:?}", port, other)),
            };
            let primary = node_port(&parts[2])?;
            let mut replicas = Vec::new();
            for r in &parts[3..] {
                replicas.push(node_port(r)?);
            }
            replicas.sort_unstable();
            ranges.push(SlotRange {
                start,
                end,
                primary,
                replicas,
            });
        }
        Ok(merge_ranges(ranges))
    }

    /// Whether the cluster is healthy (see `wait_until_healthy`); with
    /// `expect`, also whether it has that many primaries, each with that
    /// many replicas.
    fn check_health(&self, expect: Option<(usize, usize)>) -> Result<(), String> {
        let live = self.live_ports();
        for &port in &live {
            let info = self.internal_text(port, &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") {
                return Err(format!(
                    "node {} says {}",
                    port,
                    info_field(&info, "cluster_state")
                ));
            }
        }
        let own = self.own_lines()?;
        let primaries: Vec<&NodeLine> = own.iter().filter(|l| l.is_primary()).collect();
        let replicas: Vec<&NodeLine> = own.iter().filter(|l| l.is_replica()).collect();
        for p in &primaries {
            if p.slots.is_empty() {
                return Err(format!("primary {} serves no slot", p.port));
            }
        }
        for r in &replicas {
            let primary = primaries
                .iter()
                .find(|p| Some(&p.id) == r.primary_id.as_ref())
                .ok_or_else(|| {
                    format!(
                        "replica {} replicates {:?}, not a live primary",
                        r.port, r.primary_id
                    )
                })?;
            let info = self.internal_text(r.port, &["INFO", "replication"])?;
            if !info.contains("master_link_status:up")
                || !info.contains(&format!("master_port:{}\r\n", primary.port))
            {
                return Err(format!(
                    "replica {} is not linked to {}: {}, {}",
                    r.port,
                    primary.port,
                    info_field(&info, "master_port"),
                    info_field(&info, "master_link_status")
                ));
            }
        }
        let mut expected = Vec::new();
        for p in &primaries {
            let mut mine: Vec<u16> = replicas
                .iter()
                .filter(|r| r.primary_id.as_ref() == Some(&p.id))
                .map(|r| r.port)
                .collect();
            mine.sort_unstable();
            for &(start, end) in &p.slots {
                expected.push(SlotRange {
                    start,
                    end,
                    primary: p.port,
                    replicas: mine.clone(),
                });
            }
        }
        let expected = merge_ranges(expected);
        let mut next = 0u32;
        for r in &expected {
            if r.start as u32 != next {
                return Err(format!(
                    "slots {}..{} are claimed by no live primary",
                    next, r.start
                ));
            }
            next = r.end as u32 + 1;
        }
        if next != SLOTS as u32 {
            return Err(format!(
                "slots {}..16383 are claimed by no live primary",
                next
            ));
        }
        for &port in &live {
            let got = self.slots_view(port)?;
            if got != expected {
                return Err(format!(
                    "node {} has CLUSTER SLOTS {:?}, expected {:?}",
                    port, got, expected
                ));
            }
        }
        if let Some((want_primaries, want_replicas)) = expect {
            if primaries.len() != want_primaries {
                return Err(format!(
                    "expected {} primaries, got {}",
                    want_primaries,
                    primaries.len()
                ));
            }
            for p in &primaries {
                let n = replicas
                    .iter()
                    .filter(|r| r.primary_id.as_ref() == Some(&p.id))
                    .count();
                if n != want_replicas {
                    return Err(format!(
                        "expected {} replicas of {}, got {}",
                        want_replicas, p.port, n
                    ));
                }
            }
        }
        Ok(())
    }

    /// Polls `check` until it is `Ok` or `deadline` passes; then panics
    /// with the last reason and the nodes' logs.
    fn wait_for<T, F: FnMut() -> Result<T, String>>(
        &self,
        what: &str,
        deadline: Instant,
        mut check: F,
    ) -> T {
        let began = Instant::now();
        loop {
            match check() {
                Ok(value) => return value,
                Err(why) => {
                    if Instant::now() >= deadline {
                        panic!(
                            "expected {} within {:?}, but after {:?}: {}\n{}",
                            what,
                            deadline.saturating_duration_since(began),
                            began.elapsed(),
                            why,
                            self.log_tails(LOG_LINES)
                        );
                    }
                }
            }
            thread::sleep(POLL);
        }
    }

    /// Runs `redis-cli --cluster create` over every node, bounded.
    fn create(&self, replicas_per_primary: usize) {
        let cli = redis_binary().with_file_name("redis-cli");
        assert!(
            cli.is_file(),
            "expected redis-cli next to redis-server, at {}; it is not there",
            cli.display()
        );
        let log_path = lock(&self.nodes[0]).server.dir().join("create.log");
        let log = File::create(&log_path).unwrap_or_else(|e| {
            panic!("could not create {}: {}", log_path.display(), e);
        });
        let err_log = log.try_clone().expect("clone a file handle");
        let mut command = Command::new(&cli);
        command.arg("--cluster").arg("create");
        for port in &self.ports {
            command.arg(format!("{}:{}", HOST, port));
        }
        let mut child = command
            .arg("--cluster-replicas")
            .arg(replicas_per_primary.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not spawn {}: {}", cli.display(), e));
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        if status.map(|s| s.success()) != Some(true) {
            panic!(
                "expected redis-cli --cluster create to succeed within {:?}, got {:?}:\n{}\n{}",
                CREATE_TIMEOUT,
                status,
                fs::read_to_string(&log_path).unwrap_or_default(),
                self.log_tails(LOG_LINES)
            );
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    primary_id: Option<String>,
    config_epoch: u64,
    /// Slot ranges it serves (migration markers left out).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn is_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    fn is_replica(&self) -> bool {
        self.flags.iter().any(|f| f == "slave")
    }
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags>
/// <primary> <ping-sent> <pong-recv> <config-epoch> <link> <slot>...`.
fn parse_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(format!("a short CLUSTER NODES line: {:?}", line));
        }
        let port = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut slots = Vec::new();
        for s in &fields[8..] {
            if s.starts_with('[') {
                continue;
            }
            let mut ends = s.splitn(2, '-');
            let bad = || format!("a bad slot {:?} in CLUSTER NODES line {:?}", s, line);
            let a: u16 = ends.next().and_then(|a| a.parse().ok()).ok_or_else(bad)?;
            let b: u16 = match ends.next() {
                Some(b) => b.parse().map_err(|_| bad())?,
                None => a,
            };
            slots.push((a, b));
        }
        out.push(NodeLine {
            id: fields[0].to_string(),
            port,
            flags: fields[2].split(',').map(str::to_string).collect(),
            primary_id: Some(fields[3]).filter(|m| *m != "-").map(str::to_string),
            config_epoch: fields[6].parse().unwrap_or(0),
            slots,
        });
    }
    Ok(out)
}

fn covers(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
}

/// Sorts ranges and merges neighbours served by the same nodes.
fn merge_ranges(mut ranges: Vec<SlotRange>) -> Vec<SlotRange> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<SlotRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last)
                if last.end as u32 + 1 == r.start as u32
                    && last.primary == r.primary
                    && last.replicas == r.replicas =>
            {
                last.end = r.end;
            }
            _ => out.push(r),
        }
    }
    out
}

/// `field:value` from INFO text, or a note that it is missing.
fn info_field(info: &str, field: &str) -> String {
    info.lines()
        .find(|l| l.starts_with(&format!("{}:", field)))
        .map(str::to_string)
        .unwrap_or_else(|| format!("no {} in {:?}", field, info))
}

/// The name INFO commandstats gives a command: `cmd`, or `cmd|sub` for a
/// container command.
fn stat_name<A: AsRef<[u8]>>(args: &[A]) -> String {
    const CONTAINERS: &[&str] = &[
        "acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module",
        "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
    ];
    let word = |i: usize| {
        args.get(i)
            .map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_lowercase())
    };
    let first = word(0).unwrap_or_default();
    match word(1) {
        Some(sub) if CONTAINERS.contains(&first.as_str()) => format!("{}|{}", first, sub),
        _ => first,
    }
}

/// Arguments for messages.
fn show<A: AsRef<[u8]>>(args: &[A]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect();
    format!("{:?}", words)
}

/// One command over a fresh connection, parsed; not recorded anywhere.
fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Result<Reply, String> {
    exchange(port, &encode(args), 1, RAW_TIMEOUT)
        .map(|bytes| parse_reply(&bytes))
        .map_err(|e| format!("{} to port {} failed: {}", show(args), port, e))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns one cluster node with a watchdog, on free ports (retrying with
/// other ports if it loses a race for one).
fn spawn_node() -> Node {
    let binary = redis_binary();
    let dir: PathBuf = fresh_dir();
    // `--save ''`, `--appendonly no`, `--dir` and the log come from
    // `RedisServer::args`.
    let extra: Vec<String> = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &dir.join("nodes.conf").to_string_lossy(),
        "--cluster-node-timeout",
        &NODE_TIMEOUT_MS.to_string(),
        "--cluster-allow-replica-migration",
        "no",
        "--cluster-replica-validity-factor",
        "0",
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut server = RedisServer {
        child: None,
        pid: 0,
        port: 0,
        dir,
        extra,
        password: None,
        guarded: true,
        watchdog: None,
    };
    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        if server.port != 0 {
            release_port(server.port);
            release_port(server.port + BUS_OFFSET);
        }
        server.port = free_cluster_port();
        match server.spawn_and_wait(&binary) {
            Ok(()) => {
                return Node {
                    server,
                    killed_primary: None,
                }
            }
            Err(StartError::Exited(why)) => failures.push(why),
            Err(StartError::Fatal(why)) => {
                release_port(server.port + BUS_OFFSET);
                panic!("{}", why)
            }
        }
    }
    release_port(server.port + BUS_OFFSET);
    panic!(
        "expected a cluster node to start within {} attempts with fresh ports, got:\n{}",
        START_ATTEMPTS,
        failures.join("\n---\n")
    );
}

/// A port `p` such that `p` and `p + 10000` are free on loopback, not held
/// by another server of this process, not 6379 or 16379, and (when the
/// kernel's range allows) outside the ephemeral port range; both are marked
/// as held.
fn free_cluster_port() -> u16 {
    let (low, high) = ephemeral_range();
    let outside = |p: u16| p < low || p > high;
    for attempt in 0..20_000 {
        let port = 10_000 + (next_random() % 45_536) as u16;
        let bus = port + BUS_OFFSET;
        if attempt < 10_000 && !(outside(port) && outside(bus)) {
            continue;
        }
        if [6379, 16379].contains(&port) || [6379, 16379].contains(&bus) {
            continue;
        }
        let mut held = lock(&PORTS_IN_USE);
        let held = held.get_or_insert_with(HashSet::new);
        if held.contains(&port) || held.contains(&bus) {
            continue;
        }
        let free = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
        if free(port) && free(bus) {
            held.insert(port);
            held.insert(bus);
            return port;
        }
    }
    panic!("expected to find a free port p with p + 10000 free too, found none");
}

/// The kernel's ephemeral port range (32768-60999 if unknown).
fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A xorshift generator seeded from the clock and the pid, so concurrent
/// test processes try different ports.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        x = nanos ^ ((std::process::id() as u64) << 32) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}

#[allow(unused)]
fn assert_sync() {
    fn sync<T: Sync + Send>() {}
    sync::<TestCluster>();
}
