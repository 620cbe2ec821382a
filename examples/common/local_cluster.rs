//! For the cluster examples: use `REDIS_CLUSTER_URLS` (comma-separated seed
//! URLs) when it is set, otherwise start a private Redis Cluster of three
//! primaries and three replicas on free loopback ports, and stop it when
//! dropped.
//!
//! The private cluster: six `redis-server --cluster-enabled yes` processes,
//! each with its own directory under a temporary one, joined with
//! `redis-cli --cluster create ... --cluster-replicas 1`, then waited for
//! until every node says `cluster_state:ok`, `CLUSTER SLOTS` lists a
//! replica for every range and every replica has synced.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use respline::{Connection, Value};

/// Primaries of the private cluster.
const PRIMARIES: usize = 3;
/// How long the private cluster may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A cluster the example started (killed on drop), or the seeds of one
/// that `REDIS_CLUSTER_URLS` names.
pub struct LocalCluster {
    children: Vec<Child>,
    dir: Option<PathBuf>,
    /// Seed URLs to open the cluster with.
    pub urls: Vec<String>,
    /// The private nodes' ports, the 3 primaries first, as `redis-cli
    /// --cluster create` assigns them (empty for `REDIS_CLUSTER_URLS`).
    #[allow(dead_code)]
    pub ports: Vec<u16>,
}

impl LocalCluster {
    /// `REDIS_CLUSTER_URLS` when set, else a private cluster.
    #[allow(dead_code)]
    pub fn from_env_or_start() -> LocalCluster {
        match std::env::var("REDIS_CLUSTER_URLS") {
            Ok(list) if !list.trim().is_empty() => LocalCluster {
                children: Vec::new(),
                dir: None,
                urls: list
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect(),
                ports: Vec::new(),
            },
            _ => LocalCluster::start(),
        }
    }

    /// Starts a private cluster of 3 primaries and 3 replicas; panics,
    /// saying why, if it is not ready within 30 seconds.
    #[allow(dead_code)]
    pub fn start() -> LocalCluster {
        LocalCluster::start_with(1)
            .unwrap_or_else(|e| panic!("could not start a private Redis Cluster: {}", e))
    }

    /// Starts a private cluster of 3 primaries with `replicas` replicas
    /// each; says why if it is not ready within 30 seconds.
    pub fn start_with(replicas: usize) -> Result<LocalCluster, String> {
        // A free port may be taken by someone else before redis-server
        // binds it: then start again on other ports.
        let mut last = String::new();
        for _ in 0..3 {
            match LocalCluster::try_start(replicas) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(replicas: usize) -> Result<LocalCluster, String> {
        let dir = std::env::temp_dir().join(format!(
            "respline-cluster-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let ports = free_cluster_ports(PRIMARIES * (1 + replicas))?;
        let mut cluster = LocalCluster {
            children: Vec::new(),
            dir: Some(dir.clone()),
            urls: ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{}", p))
                .collect(),
            ports: ports.clone(),
        };
        for &port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir)
                .map_err(|e| format!("could not create {}: {}", node_dir.display(), e))?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                // Replicas sync at once rather than after 5 s, and are
                // listed in CLUSTER SLOTS within a second rather than 10:
                // only once their replication offset is not 0, which it
                // stays until the primary's first write or replica PING.
                .args(["--repl-diskless-sync-delay", "0"])
                .args(["--repl-ping-replica-period", "1"])
                .arg("--dir")
                .arg(&node_dir)
                .arg("--logfile")
                .arg(node_dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    format!(
                        "redis-server could not be started ({}); install it (apt-get install redis-server) \
                         or set REDIS_CLUSTER_URLS",
                        e
                    )
                })?;
            cluster.children.push(child);
        }
        cluster.wait_for(|c| c.all_answer_ping(), "every node to answer PING")?;

        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{}", p)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli could not be started ({})", e))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        cluster.wait_for(
            |c| c.is_ready(replicas),
            "every node to say cluster_state:ok, CLUSTER SLOTS to list a replica per range, \
             and every replica to sync",
        )?;
        Ok(cluster)
    }

    /// The seed URLs as `&str`s, for `Cluster::open`.
    #[allow(dead_code)]
    pub fn url_refs(&self) -> Vec<&str> {
        self.urls.iter().map(String::as_str).collect()
    }

    /// True when this example started its own cluster.
    #[allow(dead_code)]
    pub fn is_private(&self) -> bool {
        !self.children.is_empty()
    }

    /// Polls `ready` until it holds; fails after [`READY_WITHIN`] or when a
    /// node exits, with the end of that node's log.
    fn wait_for(&mut self, ready: impl Fn(&Self) -> bool, what: &str) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if ready(self) {
                return Ok(());
            }
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    let port = self.ports[i];
                    return Err(format!(
                        "redis-server on port {} exited ({}) while waiting for {}; its log ends: {}",
                        port,
                        status,
                        what,
                        self.dir
                            .as_deref()
                            .map(|d| log_tail(&d.join(port.to_string())))
                            .unwrap_or_default()
                    ));
                }
            }
            if started.elapsed() > READY_WITHIN {
                return Err(format!(
                    "gave up after {} s waiting for {}",
                    READY_WITHIN.as_secs(),
                    what
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn all_answer_ping(&self) -> bool {
        self.urls.iter().all(|url| {
            Connection::open(url)
                .and_then(|mut c| c.query::<String>(["PING"]))
                .is_ok()
        })
    }

    /// Every node: `cluster_state:ok`, a slot map of 3 ranges with
    /// `replicas` replicas each, and (replicas) `master_link_status:up`.
    fn is_ready(&self, replicas: usize) -> bool {
        self.urls.iter().all(|url| {
            let mut conn = match Connection::open(url) {
                Ok(c) => c,
                Err(_) => return false,
            };
            let info: String = match conn.query(["CLUSTER", "INFO"]) {
                Ok(s) => s,
                Err(_) => return false,
            };
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return false;
            }
            let slots: Value = match conn.query(["CLUSTER", "SLOTS"]) {
                Ok(v) => v,
                Err(_) => return false,
            };
            let ranges = match slots {
                Value::Array(ranges) => ranges,
                _ => return false,
            };
            let with_replicas = ranges
                .iter()
                .all(|r| matches!(r, Value::Array(fields) if fields.len() >= 3 + replicas));
            if ranges.len() != PRIMARIES || !with_replicas {
                return false;
            }
            let replication: String = match conn.query(["INFO", "replication"]) {
                Ok(s) => s,
                Err(_) => return false,
            };
            !replication.contains("role:slave")
                || replication
                    .lines()
                    .any(|l| l.trim() == "master_link_status:up")
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `n` distinct loopback ports P, each free along with its cluster bus port
/// P + 10000 (so P < 55536), never 6379.
fn free_cluster_ports(n: usize) -> Result<Vec<u16>, String> {
    // The listeners stay open until all are found, so no port is picked twice.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..1000 {
        if ports.len() == n {
            return Ok(ports);
        }
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        if port >= 55536 || port == 6379 || port == 16379 {
            continue;
        }
        if let Ok(bus) = TcpListener::bind(("127.0.0.1", port + 10000)) {
            held.push(listener);
            held.push(bus);
            ports.push(port);
        }
    }
    Err(format!(
        "found only {} of {} free port pairs (P and P + 10000, P < 55536)",
        ports.len(),
        n
    ))
}

/// The last lines of a node's log, for a failure message.
fn log_tail(node_dir: &Path) -> String {
    let log = std::fs::read_to_string(node_dir.join("redis.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
