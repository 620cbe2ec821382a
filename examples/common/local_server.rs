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
}

impl LocalServer {
    pub fn from_env_or_start() -> LocalServer {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return LocalServer {
                child: None,
                dir: None,
                url,
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
        };
        let started = Instant::now();
        while respline::Connection::open(&server.url)
            .and_then(|mut c| c.query::<String>(["PING"]))
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
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
