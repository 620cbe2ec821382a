//! For the examples: use `REDIS_URL` when it is set, otherwise start a
//! private `redis-server` on a Unix socket in a temporary directory, and
//! stop it when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server the example started (killed on drop), or none when
/// `REDIS_URL` points at one.
pub struct LocalServer {
    child: Option<Child>,
    dir: Option<PathBuf>,
    /// Where to connect.
    pub url: String,
    /// The TCP port of a server from `start_private_tcp` (for `restart`).
    port: Option<u16>,
}

impl LocalServer {
    #[allow(dead_code)]
    pub fn from_env_or_start() -> LocalServer {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return LocalServer {
                child: None,
                dir: None,
                url,
                port: None,
            };
        }
        let dir = std::env::temp_dir().join(format!(
            "respline-example-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let sock = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("REDIS_URL is not set and redis-server could not be started ({e}); install it (apt-get install redis-server) or set REDIS_URL")
            });
        let url = format!("unix://{}", sock.display());
        let server = LocalServer {
            child: Some(child),
            dir: Some(dir),
            url,
            port: None,
        };
        server.wait_for_ping();
        server
    }

    /// Waits (at most 10 s) until the server answers PING.
    fn wait_for_ping(&self) {
        let started = Instant::now();
        while respline::Connection::open(&self.url)
            .and_then(|mut c| c.query::<String>(["PING"]))
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A private server on a free loopback TCP port, whatever `REDIS_URL`
    /// says: for examples that restart their server.
    #[allow(dead_code)]
    pub fn start_private_tcp() -> LocalServer {
        let port = (0..20)
            .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.port())
            .find(|&p| p != 6379)
            .expect("a free loopback port");
        let dir =
            std::env::temp_dir().join(format!("respline-example-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let mut server = LocalServer {
            child: None,
            dir: Some(dir),
            url: format!("redis://127.0.0.1:{}", port),
            port: Some(port),
        };
        server.spawn_tcp();
        server
    }

    /// Kills a server from `start_private_tcp` and starts it again on the
    /// same port (its data is lost: it keeps none on disk); returns once it
    /// answers PING.
    #[allow(dead_code)]
    pub fn restart(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn_tcp();
    }

    fn spawn_tcp(&mut self) {
        let (port, dir) = match (self.port, &self.dir) {
            (Some(port), Some(dir)) => (port, dir),
            _ => panic!("only a server from start_private_tcp can be restarted"),
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server could not be started ({e}); install it (apt-get install redis-server)")
            });
        self.child = Some(child);
        self.wait_for_ping();
    }

    /// True when this example started its own server.
    #[allow(dead_code)]
    pub fn is_private(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
