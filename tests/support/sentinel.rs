//! A primary, two replicas and three sentinels, private `redis-server`
//! processes on free loopback ports, for the Sentinel tests. Std only: it
//! speaks RESP over raw sockets (through the helpers of [`super`]) and
//! never uses the crate under test.
//!
//! # Two ways to get one
//!
//! * [`shared()`] starts one group per test binary, lazily, for tests that
//!   read and write but never fail over (its sentinels wait 5 s before
//!   they call a primary down, so a busy machine cannot fail it over).
//! * [`TestSentinels::start`] starts a private one (with the down-after
//!   time given); dropping it kills its sentinels, then its data nodes,
//!   and removes their directories. Tests that fail over get their own.
//!
//! # Readiness
//!
//! The data nodes start first (diskless replication without delay), and
//! the sentinels only once both replicas report `master_link_status:up`
//! and the primary lists them online: a sentinel reads a replica's link
//! status from `INFO` only every 10 s, so one that saw it down at first
//! would keep listing it as such. The group is ready when every sentinel
//! answers `SENTINEL GET-MASTER-ADDR-BY-NAME` with the primary, lists both
//! replicas with `master-link-status` ok and no down flag in `SENTINEL
//! REPLICAS`, and lists the two other sentinels in `SENTINEL SENTINELS`
//! (sentinels find each other through hello messages, every 2 s).
//!
//! # Each sentinel
//!
//! `redis-server <dir>/sentinel.conf --sentinel`, with a config file of its
//! own in its own directory (sentinels rewrite it):
//!
//! ```text
//! port <P>
//! bind 127.0.0.1
//! dir <its directory>
//! logfile <its directory>/sentinel.log
//! sentinel monitor mymaster 127.0.0.1 <primary port> 2
//! sentinel down-after-milliseconds mymaster <down-after>
//! sentinel failover-timeout mymaster 5000
//! ```
//!
//! Host names are not resolved nor announced (the defaults): every address
//! is `127.0.0.1`.
//!
//! # Nothing outlives the test binary
//!
//! Every process, data node or sentinel, gets the watchdog of
//! [`super::cluster`] (a `sh` that kills it when the test process ends,
//! however it ends), since the shared group is never dropped. Ports are
//! held in `PORTS_IN_USE` while a process may use them; 6379 is never
//! used.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use respline::{Addr, Connection};

use super::cluster::{parse_reply, Reply};
use super::{
    encode, exchange, free_port, fresh_dir, redis_binary, release_port, spawn_watchdog,
    RedisServer, StartError, HOST, RAW_TIMEOUT, START_ATTEMPTS, WATCHED_PID_FILE,
};

/// The name the sentinels monitor the primary under.
pub const PRIMARY_NAME: &str = "mymaster";

/// The quorum: how many sentinels must agree that the primary is down.
pub const QUORUM: usize = 2;

/// `sentinel down-after-milliseconds` of the shared group.
pub const SHARED_DOWN_AFTER_MS: u64 = 5000;

/// The longest [`TestSentinels::start`] waits for the group to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a wait for a failover to settle takes.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How often waits poll.
const POLL: Duration = Duration::from_millis(25);

/// How many log lines of each process a failure message shows.
const LOG_LINES: usize = 15;

/// The group of [`shared()`].
static SHARED: Mutex<Option<&'static TestSentinels>> = Mutex::new(None);

/// A group shared by every test of this test binary, started by the first
/// caller (the others wait for it); its processes are killed by their
/// watchdogs when the test process ends. Read and write only: a test that
/// fails over or kills a node starts its own.
pub fn shared() -> &'static TestSentinels {
    let mut cached = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(group) = *cached {
        return group;
    }
    // Leaked on purpose: it lives as long as the process.
    let group: &'static TestSentinels =
        Box::leak(Box::new(TestSentinels::start(SHARED_DOWN_AFTER_MS)));
    *cached = Some(group);
    group
}

/// A primary, two replicas and three sentinels (see the module
/// documentation).
pub struct TestSentinels {
    /// Dropped first: sentinels must not react to the data nodes dying.
    sentinels: Vec<SentinelProcess>,
    /// The primary first, then the replicas, as started.
    data: Vec<RedisServer>,
    startup: Duration,
}

impl TestSentinels {
    /// Starts the group with `sentinel down-after-milliseconds` set to
    /// `down_after_ms` and waits (at most [`START_TIMEOUT`]) until it is
    /// ready. Panics with the processes' log tails if it is not.
    pub fn start(down_after_ms: u64) -> TestSentinels {
        let began = Instant::now();
        let primary = spawn_data_node(&[]);
        let primary_port = primary.port().to_string();
        let replicas: Vec<RedisServer> = (0..2)
            .map(|_| spawn_data_node(&["--replicaof", HOST, &primary_port]))
            .collect();
        let mut group = TestSentinels {
            sentinels: Vec::new(),
            data: std::iter::once(primary).chain(replicas).collect(),
            startup: Duration::ZERO,
        };
        let deadline = began + START_TIMEOUT;
        group.wait_for("the replicas to be linked", deadline, || {
            group.check_replication()
        });
        for _ in 0..3 {
            let sentinel = SentinelProcess::spawn(group.primary_port(), down_after_ms);
            group.sentinels.push(sentinel);
        }
        group.wait_for("the sentinels to be ready", deadline, || {
            group.check_sentinels(group.primary_port())
        });
        group.startup = began.elapsed();
        group
    }

    /// How long [`start`](Self::start) took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The port of the primary the group started with.
    pub fn primary_port(&self) -> u16 {
        self.data[0].port()
    }

    /// The ports of the replicas the group started with.
    pub fn replica_ports(&self) -> Vec<u16> {
        self.data[1..].iter().map(RedisServer::port).collect()
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// `redis://127.0.0.1:<port>` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports()
            .iter()
            .map(|p| format!("redis://{}:{}", HOST, p))
            .collect()
    }

    /// One command to the process on `port` (a data node or a sentinel)
    /// over a fresh connection, parsed. Panics if it fails.
    pub fn query<A: AsRef<[u8]>>(&self, port: u16, args: &[A]) -> Reply {
        command(port, args).unwrap_or_else(|e| panic!("{}\n{}", e, self.log_tails()))
    }

    /// Like [`query`](Self::query), but returns the failure.
    pub fn try_query<A: AsRef<[u8]>>(&self, port: u16, args: &[A]) -> Result<Reply, String> {
        command(port, args)
    }

    /// What `ROLE` says on `port`: `"master"`, `"slave"` or `"sentinel"`.
    pub fn role(&self, port: u16) -> String {
        self.query(port, &["ROLE"]).as_array()[0].as_text()
    }

    /// What each sentinel says the primary is now (`None` for a sentinel
    /// that does not answer).
    pub fn primary_per_sentinel(&self) -> Vec<Option<u16>> {
        self.sentinel_ports()
            .iter()
            .map(|&s| {
                let reply = command(s, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", PRIMARY_NAME]);
                match reply {
                    Ok(Reply::Array(items)) if items.len() == 2 => items[1].as_text().parse().ok(),
                    _ => None,
                }
            })
            .collect()
    }

    /// Kills the data node on `port` with SIGKILL (its port stays held
    /// until the group is dropped).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .data
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("expected {} to be a data node of the group", port));
        node.kill();
    }

    /// Sends `SENTINEL FAILOVER mymaster` to the first sentinel: it
    /// promotes a replica without asking the others.
    pub fn failover(&self) {
        let port = self.sentinel_ports()[0];
        let reply = self.query(port, &["SENTINEL", "FAILOVER", PRIMARY_NAME]);
        assert!(
            reply.is_ok(),
            "expected +OK to SENTINEL FAILOVER, got {:?}",
            reply
        );
    }

    /// Waits (at most [`CHANGE_TIMEOUT`]) until every sentinel names the
    /// same primary, other than `old`, and that node says `ROLE` master;
    /// returns its port.
    pub fn wait_for_new_primary(&self, old: u16) -> u16 {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        self.wait_for(&format!("a primary other than {}", old), deadline, || {
            let seen = self.primary_per_sentinel();
            let first = seen[0].ok_or("a sentinel does not answer")?;
            if first == old || seen.iter().any(|&p| p != Some(first)) {
                return Err(format!("the sentinels say {:?}", seen));
            }
            match self.try_query(first, &["ROLE"])? {
                Reply::Array(items) if items[0].as_text() == "master" => Ok(first),
                other => Err(format!("{} says ROLE {:?}", first, other)),
            }
        })
    }

    /// The last lines of every process's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.data {
            out.push_str(&format!(
                "=== data node {} ===\n{}",
                node.port(),
                node.log_tail(LOG_LINES)
            ));
        }
        for s in &self.sentinels {
            out.push_str(&format!(
                "=== sentinel {} ===\n{}",
                s.port,
                tail(&s.dir.join("sentinel.log"), LOG_LINES)
            ));
        }
        out
    }

    /// Both replicas linked, and the primary sees them online.
    fn check_replication(&self) -> Result<(), String> {
        for port in self.replica_ports() {
            let info = self.try_query(port, &["INFO", "replication"])?.as_text();
            if !info.contains("master_link_status:up") {
                return Err(format!("replica {} is not linked yet", port));
            }
        }
        let info = self
            .try_query(self.primary_port(), &["INFO", "replication"])?
            .as_text();
        let online = info.matches("state=online").count();
        if online != 2 {
            return Err(format!("the primary lists {} online replicas", online));
        }
        Ok(())
    }

    /// Every sentinel knows the primary, both replicas (usable) and the
    /// other sentinels.
    fn check_sentinels(&self, primary: u16) -> Result<(), String> {
        for s in self.sentinel_ports() {
            let addr = self.try_query(s, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", PRIMARY_NAME])?;
            let named = match &addr {
                Reply::Array(items) if items.len() == 2 => items[1].as_text(),
                other => return Err(format!("sentinel {} names {:?}", s, other)),
            };
            if named != primary.to_string() {
                return Err(format!("sentinel {} names {}", s, named));
            }
            let replicas = self.try_query(s, &["SENTINEL", "REPLICAS", PRIMARY_NAME])?;
            let usable = replicas
                .as_array()
                .iter()
                .filter(|r| {
                    let flags = field(r, "flags").unwrap_or_default();
                    !flags.contains("down")
                        && !flags.contains("disconnected")
                        && field(r, "master-link-status").as_deref() == Some("ok")
                })
                .count();
            if usable != 2 {
                return Err(format!("sentinel {} lists {} usable replicas", s, usable));
            }
            let others = self.try_query(s, &["SENTINEL", "SENTINELS", PRIMARY_NAME])?;
            if others.as_array().len() != 2 {
                return Err(format!(
                    "sentinel {} knows {} other sentinels",
                    s,
                    others.as_array().len()
                ));
            }
        }
        Ok(())
    }

    /// Polls `check` until it succeeds or `deadline` passes; panics then
    /// with its last complaint and the logs.
    fn wait_for<T>(
        &self,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        loop {
            match check() {
                Ok(v) => return v,
                Err(why) if Instant::now() >= deadline => panic!(
                    "expected {} in time, still: {}\n{}",
                    what,
                    why,
                    self.log_tails()
                ),
                Err(_) => thread::sleep(POLL),
            }
        }
    }
}

/// The value of `name` in a sentinel's entry for an instance (a flat list
/// of names and values).
pub fn field(entry: &Reply, name: &str) -> Option<String> {
    entry
        .as_array()
        .chunks(2)
        .find(|kv| kv.len() == 2 && kv[0].as_text() == name)
        .map(|kv| kv[1].as_text())
}

/// A data node with a watchdog and diskless replication, on a free port.
fn spawn_data_node(extra: &[&str]) -> RedisServer {
    let binary = redis_binary();
    let mut args: Vec<String> = [
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut server = RedisServer {
        child: None,
        pid: 0,
        port: 0,
        dir: fresh_dir(),
        extra: args,
        password: None,
        guarded: true,
        watchdog: None,
    };
    server.start_on_a_free_port(&binary, "a data node");
    server
}

/// One `redis-server --sentinel` process and its watchdog.
struct SentinelProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    watchdog: Option<Child>,
}

impl SentinelProcess {
    /// Starts a sentinel monitoring the primary on `primary_port`, on a
    /// free port (another one if it loses a race for it), and waits until
    /// it answers PING.
    fn spawn(primary_port: u16, down_after_ms: u64) -> SentinelProcess {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let dir = fresh_dir();
            let watchdog = spawn_watchdog(&dir)
                .unwrap_or_else(|e| panic!("could not spawn the watchdog (sh): {}", e));
            let mut process = SentinelProcess {
                child: None,
                port: free_port(),
                dir,
                watchdog: Some(watchdog),
            };
            match process.run(primary_port, down_after_ms) {
                Ok(()) => return process,
                Err(StartError::Exited(why)) => failures.push(why),
                Err(StartError::Fatal(why)) => panic!("{}", why),
            }
        }
        panic!(
            "expected a sentinel to start within {} attempts with fresh ports, got:\n{}",
            START_ATTEMPTS,
            failures.join("\n---\n")
        );
    }

    fn run(&mut self, primary_port: u16, down_after_ms: u64) -> Result<(), StartError> {
        assert_ne!(self.port, 6379, "the harness never uses port 6379");
        let conf = self.dir.join("sentinel.conf");
        let log = self.dir.join("sentinel.log");
        let text = format!(
            "port {port}\nbind {host}\ndir {dir}\nlogfile {log}\ndaemonize no\n\
             sentinel monitor {name} {host} {primary} {quorum}\n\
             sentinel down-after-milliseconds {name} {down}\n\
             sentinel failover-timeout {name} 5000\n",
            port = self.port,
            host = HOST,
            dir = self.dir.display(),
            log = log.display(),
            name = PRIMARY_NAME,
            primary = primary_port,
            quorum = QUORUM,
            down = down_after_ms,
        );
        let setup = |e: io::Error| StartError::Fatal(format!("could not set up a sentinel: {}", e));
        fs::write(&conf, text).map_err(setup)?;
        let stdout = File::create(self.dir.join("stdout.log")).map_err(setup)?;
        let stderr = File::create(self.dir.join("stderr.log")).map_err(setup)?;
        let child = Command::new(redis_binary())
            .arg(&conf)
            .arg("--sentinel")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| StartError::Fatal(format!("could not spawn a sentinel: {}", e)))?;
        let pid = child.id();
        self.child = Some(child);
        fs::write(self.dir.join(WATCHED_PID_FILE), format!("{}\n", pid)).map_err(setup)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let why = format!(
                    "sentinel (pid {}) on port {} exited during startup with {}:\n{}{}",
                    pid,
                    self.port,
                    status,
                    tail(&log, 20),
                    tail(&self.dir.join("stderr.log"), 20)
                );
                self.stop();
                return Err(if why.contains("Address already in use") {
                    StartError::Exited(why)
                } else {
                    StartError::Fatal(why)
                });
            }
            let pong = exchange(self.port, &encode(&["PING"]), 1, Duration::from_millis(500));
            // The log says "Sentinel ID is" once this process runs as one.
            if matches!(pong, Ok(ref r) if r == b"+PONG\r\n")
                && tail(&log, 1000).contains("Sentinel ID is")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why = format!(
                    "sentinel (pid {}) did not answer PING on port {} in 10 s:\n{}",
                    pid,
                    self.port,
                    tail(&log, 20)
                );
                self.stop();
                return Err(StartError::Fatal(why));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the process (the pid file first, so the watchdog can never
    /// kill another process that gets the pid), then the watchdog; frees
    /// the port and removes the directory.
    fn stop(&mut self) {
        let _ = fs::remove_file(self.dir.join(WATCHED_PID_FILE));
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        release_port(self.port);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One command over a fresh connection, parsed.
fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Result<Reply, String> {
    exchange(port, &encode(args), 1, RAW_TIMEOUT)
        .map(|bytes| parse_reply(&bytes))
        .map_err(|e| format!("a command to port {} failed: {}", port, e))
}

/// The last `n` lines of a file ("" if it cannot be read).
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    out.push('\n');
    out
}

/// What happened to one write of a failover test.
pub struct Write {
    pub key: String,
    /// The port of the primary that acknowledged it, if one did.
    pub acked_by: Option<u16>,
    /// How many replicas `WAIT` said had it (0 when not asked or failed).
    pub replicas: i64,
    /// For a failed write, whether the error said it may have run.
    pub may_have_run: bool,
}

/// The writes of a failover test whose fate Redis leaves open, counted by
/// [`check_writes`].
#[derive(Debug, Default)]
pub struct Tally {
    /// Acknowledged by the old primary with fewer than 2 replicas confirmed.
    pub weak: usize,
    /// ...of which missing on the new primary.
    pub lost_weak: usize,
    /// Failed with an error saying they may have run.
    pub unknown: usize,
    /// ...of which present on the new primary.
    pub unknown_ran: usize,
}

/// Checks each write against `found` (its value on the new primary, at
/// `new_port`): every write the new primary acknowledged, or the old one
/// with both replicas confirmed by WAIT, is present; a write whose error
/// said it could not have run is not. The rest is counted.
pub fn check_writes<'a>(
    writes: impl IntoIterator<Item = &'a Write>,
    found: Vec<Option<String>>,
    new_port: u16,
) -> Tally {
    let mut tally = Tally::default();
    for (w, present) in writes.into_iter().zip(found) {
        match w.acked_by {
            Some(by) if by == new_port || w.replicas >= 2 => {
                assert!(present.is_some(), "acknowledged write {} lost", w.key)
            }
            Some(_) => {
                tally.weak += 1;
                tally.lost_weak += usize::from(present.is_none());
            }
            None if !w.may_have_run => {
                assert!(present.is_none(), "{} ran though said unsent", w.key)
            }
            None => {
                tally.unknown += 1;
                tally.unknown_ran += usize::from(present.is_some());
            }
        }
    }
    tally
}

/// The port of a TCP address.
pub fn port_of(addr: &Addr) -> u16 {
    match addr {
        Addr::Tcp { port, .. } => *port,
        other => panic!("expected a TCP address, got {:?}", other),
    }
}

/// The port a connection opened from options went to.
pub fn conn_port(conn: &Connection) -> u16 {
    port_of(&conn.options().expect("opened from options").addr)
}
