//! A private `redis-server` per test, for the integration tests.
//!
//! Include it with `mod support;` and start one server per test with
//! [`RedisServer::start`] or [`RedisServer::start_with`]. Each server gets a
//! fresh temporary directory (holding its Unix socket, log and working
//! directory) and a free loopback TCP port; it never uses port 6379 and never
//! talks to a server it did not start. Dropping the value kills the server
//! and removes the directory.
//!
//! Std only: readiness checks and [`RedisServer::raw_command`] speak RESP
//! over raw sockets, so the harness does not depend on the code under test.
//!
//! [`cluster`] builds a real Redis Cluster out of such servers.

// Every test binary includes this module but uses only part of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A real Redis Cluster of such servers, with fault injection.
pub mod cluster;
pub mod sentinel;

/// The loopback address every server binds.
pub const HOST: &str = "127.0.0.1";

/// How long a server may take to answer PING after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How many fresh ports `start` tries before giving up.
const START_ATTEMPTS: usize = 5;
/// Connect, read and write timeout of [`RedisServer::raw_command`].
const RAW_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest Unix socket path the kernel accepts is 107 bytes.
const MAX_SOCKET_PATH: usize = 100;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Ports held by live servers of this process: a killed server keeps its
/// port for `restart`, so no other test may pick it meanwhile.
static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A `redis-server` child process owned by one test.
pub struct RedisServer {
    child: Option<Child>,
    pid: u32,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    password: Option<String>,
    /// Whether the server gets a watchdog (see [`WATCHDOG_SCRIPT`]).
    guarded: bool,
    /// The watchdog, when `guarded`: it lives as long as this value.
    watchdog: Option<Child>,
}

impl RedisServer {
    /// Starts a server with the default flags.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with `extra` appended to the default flags, each
    /// element one process argument, e.g.
    /// `&["--requirepass", "secret"]` or `&["--maxclients", "1"]`.
    ///
    /// When `--requirepass <pw>` is among them, readiness checks and
    /// [`raw_command`](RedisServer::raw_command) authenticate with `<pw>`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let binary = redis_binary();
        let dir = fresh_dir();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let password = extra
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .cloned();
        let mut server = RedisServer {
            child: None,
            pid: 0,
            port: 0,
            dir,
            extra,
            password,
            guarded: false,
            watchdog: None,
        };
        server.start_on_a_free_port(&binary, "redis-server");
        server
    }

    /// Spawns this (not yet started) server on a fresh free port until it
    /// answers, trying other ports when one was taken between probing and
    /// binding; panics, saying why, after [`START_ATTEMPTS`] tries. `what`
    /// names the server in that message.
    pub(crate) fn start_on_a_free_port(&mut self, binary: &Path, what: &str) {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            release_port(self.port);
            self.port = free_port();
            match self.spawn_and_wait(binary) {
                Ok(()) => return,
                // The port was taken between probing and binding: try another.
                Err(StartError::Exited(why)) => failures.push(why),
                Err(StartError::Fatal(why)) => panic!("{}", why),
            }
        }
        panic!(
            "expected {} to start within {} attempts with fresh ports, got:\n{}",
            what,
            START_ATTEMPTS,
            failures.join("\n---\n")
        );
    }

    /// The TCP address, usable directly with `TcpStream::connect`.
    pub fn tcp_addr(&self) -> (&'static str, u16) {
        (HOST, self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", HOST, self.port)
    }

    /// The Unix socket path.
    pub fn unix_path(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// `unix://<socket path>`.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.unix_path().display())
    }

    /// The server's temporary directory (socket, log, working directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The password given with `--requirepass`, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The process id of the current (or, after [`kill`](Self::kill), the
    /// last) server process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL and waits for it to exit. Does nothing
    /// if it is not running.
    pub fn kill(&mut self) {
        if self.guarded {
            // First, so that the watchdog can never kill another process
            // that gets this pid once the server is reaped.
            let _ = fs::remove_file(self.dir.join(WATCHED_PID_FILE));
        }
        if let Some(mut child) = self.child.take() {
            // Err means it already exited; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and socket path with the
    /// same arguments (killing it first if it is still running), and waits
    /// until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        // SIGKILL leaves the socket file behind; remove it so the readiness
        // check sees the new one.
        let _ = fs::remove_file(self.unix_path());
        let binary = redis_binary();
        // The port is ours, but give the kernel a moment if something else
        // briefly holds it.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.spawn_and_wait(&binary) {
                Ok(()) => return,
                Err(StartError::Exited(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                Err(StartError::Exited(why)) | Err(StartError::Fatal(why)) => {
                    panic!(
                        "redis-server failed to restart on port {}:\n{}",
                        self.port, why
                    )
                }
            }
        }
    }

    /// Sends one command over a fresh TCP connection and returns the raw
    /// bytes of its reply (exactly one complete RESP reply). Authenticates
    /// first when the server was started with `--requirepass`. Panics if the
    /// server cannot be reached or does not reply within 5 s.
    pub fn raw_command(&self, args: &[&str]) -> Vec<u8> {
        match self.try_raw_command(args) {
            Ok(reply) => reply,
            Err(e) => panic!(
                "raw command {:?} to {}:{} failed: {}",
                args, HOST, self.port, e
            ),
        }
    }

    /// Like [`raw_command`](Self::raw_command), but returns the error.
    pub fn try_raw_command(&self, args: &[&str]) -> io::Result<Vec<u8>> {
        let mut request = Vec::new();
        let mut replies = 1;
        if let Some(pw) = &self.password {
            request.extend(encode(&["AUTH", pw]));
            replies += 1;
        }
        request.extend(encode(args));
        let mut all = exchange(self.port, &request, replies, RAW_TIMEOUT)?;
        if replies == 2 {
            let auth_len = reply_len(&all).expect("exchange returned whole replies");
            if !all.starts_with(b"+OK\r\n") {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "expected +OK to AUTH, got {:?}",
                        String::from_utf8_lossy(&all[..auth_len])
                    ),
                ));
            }
            all.drain(..auth_len);
        }
        Ok(all)
    }

    /// The last `n` lines of the server log (plus anything the process
    /// wrote to stdout or stderr).
    pub fn log_tail(&self, n: usize) -> String {
        let mut out = String::new();
        for name in ["redis.log", "stdout.log", "stderr.log"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("--- {} (last {} lines) ---\n", name, n));
            for line in &lines[lines.len().saturating_sub(n)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        if out.is_empty() {
            out.push_str("(the server wrote no log)\n");
        }
        out
    }

    fn args(&self) -> Vec<OsString> {
        let dir = self.dir.as_os_str().to_owned();
        let mut args: Vec<OsString> = vec![
            "--port".into(),
            self.port.to_string().into(),
            "--bind".into(),
            HOST.into(),
            "--unixsocket".into(),
            self.unix_path().into(),
            "--unixsocketperm".into(),
            "700".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir,
            "--logfile".into(),
            self.dir.join("redis.log").into(),
            "--daemonize".into(),
            "no".into(),
        ];
        // `--enable-debug-command` appeared in Redis 7.0 (DEBUG is always
        // allowed before it); `local` admits loopback and Unix clients.
        if redis_major_version() >= 7 {
            args.push("--enable-debug-command".into());
            args.push("local".into());
        }
        args.extend(self.extra.iter().map(OsString::from));
        args
    }

    /// Spawns the server on `self.port` and waits for it to be ready.
    fn spawn_and_wait(&mut self, binary: &Path) -> Result<(), StartError> {
        assert_ne!(self.port, 6379, "the harness never uses port 6379");
        let log = self.dir.join("redis.log");
        // On restart the log already holds an old "ready" line: only look
        // at what this process writes.
        let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        if self.guarded && self.watchdog.is_none() {
            let watchdog = spawn_watchdog(&self.dir).map_err(|e| {
                StartError::Fatal(format!("could not spawn the watchdog (sh): {}", e))
            })?;
            self.watchdog = Some(watchdog);
        }
        let stdout = File::create(self.dir.join("stdout.log")).map_err(fatal)?;
        let stderr = File::create(self.dir.join("stderr.log")).map_err(fatal)?;
        let child = Command::new(binary)
            .args(self.args())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                StartError::Fatal(format!("could not spawn {}: {}", binary.display(), e))
            })?;
        self.pid = child.id();
        self.child = Some(child);
        if self.guarded {
            let pid_file = self.dir.join(WATCHED_PID_FILE);
            if let Err(e) = fs::write(&pid_file, format!("{}\n", self.pid)) {
                self.kill();
                return Err(StartError::Fatal(format!(
                    "could not write {} for the watchdog: {}",
                    pid_file.display(),
                    e
                )));
            }
        }

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.kill();
                let tail = self.log_tail(20);
                let why = format!(
                    "redis-server (pid {}) on port {} exited during startup with {}:\n{}",
                    self.pid, self.port, status, tail
                );
                // Only a lost race for the port is worth another try.
                return Err(if tail.contains("Address already in use") {
                    StartError::Exited(why)
                } else {
                    StartError::Fatal(why)
                });
            }
            // "Ready to accept connections" is logged only once this process
            // has bound its listeners, so a PONG then comes from our server
            // and not from another one that happened to take the port.
            if log_says_ready(&log, log_start) && self.ping_tcp() && self.unix_path().exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartError::Fatal(format!(
                    "redis-server (pid {}) did not answer PING on {}:{} (with its socket at {}) within {:?}:\n{}",
                    self.pid,
                    HOST,
                    self.port,
                    self.unix_path().display(),
                    READY_TIMEOUT,
                    self.log_tail(20)
                )));
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// One PING over raw TCP; true on `+PONG`.
    fn ping_tcp(&self) -> bool {
        let mut request = Vec::new();
        let mut replies = 1;
        if let Some(pw) = &self.password {
            request.extend(encode(&["AUTH", pw]));
            replies += 1;
        }
        request.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        match exchange(self.port, &request, replies, Duration::from_millis(500)) {
            Ok(reply) => reply.ends_with(b"+PONG\r\n"),
            Err(_) => false,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // The watchdog first: it must not act while the test is alive.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        self.kill();
        release_port(self.port);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

enum StartError {
    /// The port was taken between probing and binding; worth a retry.
    Exited(String),
    /// Anything else; retrying will not help.
    Fatal(String),
}

fn fatal(e: io::Error) -> StartError {
    StartError::Fatal(format!("could not set up the server's files: {}", e))
}

/// `redis-server` from PATH, looked up once per process. (A `Mutex`
/// rather than `OnceLock`: the crate's MSRV, 1.63, applies to tests too.)
fn redis_binary() -> PathBuf {
    static BINARY: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut cached = BINARY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cached.as_ref() {
        return path.clone();
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => cached.insert(path).clone(),
        None => panic!(
            "redis-server not found on PATH: install it (apt-get install redis-server); \
             these tests need a real server"
        ),
    }
}

/// The major version from `redis-server --version` ("Redis server v=7.0.15 ..."),
/// looked up once per process.
fn redis_major_version() -> u32 {
    static MAJOR: Mutex<Option<u32>> = Mutex::new(None);
    let mut cached = MAJOR.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(major) = *cached {
        return major;
    }
    let out = Command::new(redis_binary())
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run redis-server --version: {}", e));
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("unexpected redis-server --version output: {:?}", text));
    *cached = Some(major);
    major
}

/// A new, empty directory under the system temp dir, named from the pid, a
/// per-process counter and the time, so parallel tests and concurrent test
/// binaries never share one.
fn fresh_dir() -> PathBuf {
    let mut base = std::env::temp_dir();
    // The socket path must fit in sun_path; fall back to /tmp for long TMPDIRs.
    if base.as_os_str().len() + 60 > MAX_SOCKET_PATH {
        base = PathBuf::from("/tmp");
    }
    for _ in 0..100 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "respline-test-{}-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let dir = base.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("could not create a temp dir {}: {}", dir.display(), e),
        }
    }
    panic!("could not create a fresh temp dir under {}", base.display());
}

/// A loopback port that was free a moment ago, is not held by another
/// server of this process, and is not 6379; it is marked as held.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("could not bind 127.0.0.1:0 to find a free port: {}", e));
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if port == 6379 {
            continue;
        }
        let mut held = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        if held.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Lets other servers of this process use `port` again.
fn release_port(port: u16) {
    let mut held = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = held.as_mut() {
        set.remove(&port);
    }
}

/// Whether the log, past byte `start`, says the server is ready.
fn log_says_ready(log: &Path, start: u64) -> bool {
    match fs::read(log) {
        Ok(bytes) => {
            let start = (start as usize).min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).contains("Ready to accept connections")
        }
        Err(_) => false,
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend(arg);
        out.extend(b"\r\n");
    }
    out
}

/// In a guarded server's directory: the pid of its running process, for
/// the watchdog. Written right after each spawn, removed before each kill.
const WATCHED_PID_FILE: &str = "watched.pid";

/// The shell script of a watchdog, one per guarded server (for the life of
/// its `RedisServer`, across kills and restarts). It ignores the signals a
/// terminal or `timeout` sends to the whole process group (so Ctrl-C does
/// not stop it before it has cleaned up) and blocks reading its stdin, a
/// pipe whose only writer is this test process. Nothing is ever written, so
/// the read returns only at end of file, which the kernel delivers when the
/// test process is gone, however it ended (normal exit without running the
/// destructors of statics, panic, a signal, SIGKILL). It then kills the
/// process named in `$1/watched.pid` if that is still a redis-server, waits
/// (at most 5 s) until it is dead, so that it cannot write into its
/// directory any more, and removes the directory `$1`. While the test runs,
/// Drop kills the watchdog before anything else, so the script never runs
/// then.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT QUIT TERM
read -r _line
pid=$(cat "$1/watched.pid" 2>/dev/null)
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ]; then
    kill -9 "$pid"
    n=0
    while [ "$n" -lt 100 ]; do
        state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)
        if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
        sleep 0.05
        n=$((n + 1))
    done
fi
rm -rf -- "$1" || { sleep 0.2; rm -rf -- "$1"; }"#;

/// Spawns the watchdog of the server directory `dir` (see
/// [`WATCHDOG_SCRIPT`]). The write end of its stdin stays in the returned
/// `Child`; std opens pipes close-on-exec, so no other child process
/// inherits it.
fn spawn_watchdog(dir: &Path) -> io::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("respline-watchdog")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Connects to the loopback `port`, writes `request` and reads until
/// `replies` complete replies are in; returns exactly their bytes.
fn exchange(port: u16, request: &[u8], replies: usize, timeout: Duration) -> io::Result<Vec<u8>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(len) = replies_len(&buf, replies) {
            if len != buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "expected {} reply(ies), got {} extra bytes after them",
                        replies,
                        buf.len() - len
                    ),
                ));
            }
            return Ok(buf);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "expected {} complete reply(ies) within {:?}, got only {:?}",
                    replies,
                    timeout,
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                    "expected {} complete reply(ies), the server closed the connection after {:?}",
                    replies,
                    String::from_utf8_lossy(&buf)
                ),
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The byte length of the first `count` complete replies in `buf`, or None
/// if they are not all in yet.
fn replies_len(buf: &[u8], count: usize) -> Option<usize> {
    let mut at = 0;
    for _ in 0..count {
        at += reply_len(&buf[at..])?;
    }
    Some(at)
}

/// The byte length of the complete RESP2/RESP3 reply at the start of `buf`,
/// or None if it is incomplete. Lenient: it only finds boundaries, it does
/// not validate.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..line_end]).ok();
    let after_line = line_end + 2;
    let number = || line.and_then(|l| l.parse::<i64>().ok());
    match buf[0] {
        // Bulk string, blob error, verbatim string.
        b'$' | b'!' | b'=' => match number() {
            Some(n) if n >= 0 => {
                let end = after_line + n as usize + 2;
                if buf.len() >= end {
                    Some(end)
                } else {
                    None
                }
            }
            _ => Some(after_line),
        },
        // Aggregates: elements, or pairs for maps and attributes.
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = match number() {
                Some(n) if n > 0 => n as usize,
                _ => return Some(after_line),
            };
            let elements = if matches!(buf[0], b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut at = after_line;
            for _ in 0..elements {
                at += reply_len(&buf[at..])?;
            }
            // An attribute is followed by the value it annotates.
            if buf[0] == b'|' {
                at += reply_len(&buf[at..])?;
            }
            Some(at)
        }
        // Simple string, error, integer, null, double, boolean, big number.
        _ => Some(after_line),
    }
}
