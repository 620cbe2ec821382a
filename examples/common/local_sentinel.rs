//! For the Sentinel example: use `REDIS_SENTINEL_URLS` (comma-separated
//! sentinel URLs) and `REDIS_SENTINEL_NAME` (default `mymaster`) when set,
//! otherwise start a private group on free loopback ports (a primary, two
//! replicas, three sentinels), and stop it when dropped.
//!
//! Each sentinel is `redis-server <its dir>/sentinel.conf --sentinel`, with
//! a config file of its own (sentinels rewrite it) monitoring the primary
//! with quorum 2 and `down-after-milliseconds` 1000. The group is ready
//! when every sentinel names the primary, lists both replicas with their
//! link ok and knows the two other sentinels.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use respline::{Connection, Value};

/// The name the private group's sentinels monitor the primary under.
const NAME: &str = "mymaster";
/// How long the private group may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A group the example started (killed on drop), or the sentinels that
/// `REDIS_SENTINEL_URLS` names.
pub struct LocalSentinels {
    children: Vec<Child>,
    dir: Option<PathBuf>,
    /// The sentinels' URLs.
    pub urls: Vec<String>,
    /// The name of the primary they monitor.
    pub name: String,
}

impl LocalSentinels {
    /// `REDIS_SENTINEL_URLS` when set, else a private group; panics, saying
    /// why, if that is not ready within 30 seconds.
    pub fn from_env_or_start() -> LocalSentinels {
        match std::env::var("REDIS_SENTINEL_URLS") {
            Ok(list) if !list.trim().is_empty() => LocalSentinels {
                children: Vec::new(),
                dir: None,
                urls: list
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect(),
                name: std::env::var("REDIS_SENTINEL_NAME").unwrap_or_else(|_| NAME.to_string()),
            },
            _ => LocalSentinels::start()
                .unwrap_or_else(|e| panic!("could not start a private Sentinel group: {}", e)),
        }
    }

    /// True when this example started its own group.
    pub fn is_private(&self) -> bool {
        !self.children.is_empty()
    }

    /// The sentinel URLs as `&str`s.
    pub fn url_refs(&self) -> Vec<&str> {
        self.urls.iter().map(String::as_str).collect()
    }

    fn start() -> Result<LocalSentinels, String> {
        let dir = std::env::temp_dir().join(format!(
            "respline-sentinel-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let ports = free_ports(6)?;
        let mut group = LocalSentinels {
            children: Vec::new(),
            dir: Some(dir.clone()),
            urls: ports[3..]
                .iter()
                .map(|p| format!("redis://127.0.0.1:{}", p))
                .collect(),
            name: NAME.to_string(),
        };
        let primary = ports[0].to_string();
        for (i, port) in ports[..3].iter().enumerate() {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args([
                    "--repl-diskless-sync",
                    "yes",
                    "--repl-diskless-sync-delay",
                    "0",
                ])
                .arg("--dir")
                .arg(&node_dir);
            if i > 0 {
                cmd.args(["--replicaof", "127.0.0.1", &primary]);
            }
            group.children.push(spawn(&mut cmd)?);
        }
        group.wait_for("the replicas to sync", |g| g.replicas_linked(&ports[..3]))?;
        for port in &ports[3..] {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
            let conf = node_dir.join("sentinel.conf");
            let text = format!(
                "port {}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {} 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds {} 1000\n\
                 sentinel failover-timeout {} 5000\n",
                port,
                node_dir.display(),
                NAME,
                primary,
                NAME,
                NAME
            );
            std::fs::write(&conf, text).map_err(|e| e.to_string())?;
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf).arg("--sentinel");
            group.children.push(spawn(&mut cmd)?);
        }
        group.wait_for("the sentinels to know the group", |g| g.sentinels_ready())?;
        Ok(group)
    }

    /// Polls `ready` until it holds; fails after [`READY_WITHIN`] or when a
    /// process exits.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&Self) -> bool) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if ready(self) {
                return Ok(());
            }
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "a redis-server exited ({}) while waiting for {}",
                        status, what
                    ));
                }
            }
            if started.elapsed() > READY_WITHIN {
                return Err(format!("gave up after 30 s waiting for {}", what));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn replicas_linked(&self, data_ports: &[u16]) -> bool {
        data_ports[1..].iter().all(|p| {
            query(
                &format!("redis://127.0.0.1:{}", p),
                &["INFO", "replication"],
            )
            .and_then(|v| {
                v.as_bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
            })
            .map_or(false, |info| info.contains("master_link_status:up"))
        })
    }

    fn sentinels_ready(&self) -> bool {
        self.urls.iter().all(|url| {
            let count = |args: &[&str]| {
                query(url, args)
                    .and_then(|v| v.as_slice().map(<[Value]>::len))
                    .unwrap_or(0)
            };
            count(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME]) == 2
                && count(&["SENTINEL", "REPLICAS", NAME]) == 2
                && count(&["SENTINEL", "SENTINELS", NAME]) == 2
        })
    }
}

impl Drop for LocalSentinels {
    fn drop(&mut self) {
        // Sentinels first, so that they do not react to the others dying.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn spawn(cmd: &mut Command) -> Result<Child, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "redis-server could not be started ({}); install it (apt-get install \
                 redis-server) or set REDIS_SENTINEL_URLS",
                e
            )
        })
}

/// One command on a fresh connection; `None` on any failure.
fn query(url: &str, args: &[&str]) -> Option<Value> {
    let mut conn = Connection::open(url).ok()?;
    conn.query(args).ok()
}

/// `n` distinct free loopback ports, never 6379.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    // The listeners stay open until all are found, so no port is picked twice.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        if port != 6379 {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(ports)
}
