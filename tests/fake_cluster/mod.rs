//! Scripted fake cluster nodes (and a fake sentinel), std only, for wire
//! edge cases a real `redis-server` cannot be made to produce on demand: a
//! `MOVED` to a node that does not exist, `CLUSTER SLOTS` with `""` or
//! `"?"` hosts, a node that closes mid-pipeline, goes silent or stalls, a
//! sentinel that names whatever address the test says.
//!
//! [`FakeNode::start`] listens on a free loopback port and accepts any
//! number of connections, each served by its own thread. Every command that
//! arrives (a RESP array of bulk strings, or an inline command) is logged
//! and handed to the handler, whose [`Answer`] says what to do with it.
//! Pipelined commands (several in one read) and commands split across
//! reads are handled; replies are written as soon as the handler returns.
//! Every blocking call has a timeout, so a failing test cannot hang on a
//! fake node, and dropping the node stops it.
//!
//! The handler is `Fn(&Request) -> Answer + Send + Sync + 'static`; it may
//! share state with the test, e.g. the ports of the other fake nodes:
//!
//! ```ignore
//! let b_port = Arc::new(AtomicU16::new(0));
//! let seen = b_port.clone();
//! let a = FakeNode::start(move |req| {
//!     if let Some(answer) = default_handshake(req) {
//!         return answer;
//!     }
//!     let b = seen.load(Ordering::SeqCst);
//!     match req.name().as_str() {
//!         "CLUSTER" => Answer::Reply(cluster_slots(&[(0, 16383, &[("127.0.0.1", b)])])),
//!         _ => Answer::Reply(moved(0, "127.0.0.1", b)),
//!     }
//! });
//! let b = FakeNode::start(|req| default_handshake(req).unwrap_or(Answer::Reply(ok())));
//! b_port.store(b.port(), Ordering::SeqCst);
//! ```

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often blocked calls wake up to check whether the node was stopped.
const TICK: Duration = Duration::from_millis(10);
/// A connection on which nothing arrives for this long is closed.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// The longest a write to a client may block.
const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// After [`Answer::Close`], how long the node keeps reading (and discarding)
/// what the client still sends, so the close is a clean FIN and not a reset.
pub const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// The largest array and bulk string a request may have.
const MAX_ARGS: usize = 1 << 20;
const MAX_BULK: usize = 64 << 20;

/// One command received by a fake node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The connection it came on: 0 for the first the node accepted.
    pub conn: usize,
    /// Its position on that connection: 0 for the first command.
    pub index: usize,
    /// Its arguments, the command name first.
    pub args: Vec<Vec<u8>>,
    /// The port of the fake node that received it.
    pub port: u16,
}

impl Request {
    /// The command name, upper-cased (`""` for none).
    pub fn name(&self) -> String {
        self.arg(0).to_ascii_uppercase()
    }

    /// Argument `i` as text (lossy UTF-8), `""` if there is none.
    pub fn arg(&self, i: usize) -> String {
        self.args
            .get(i)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default()
    }

    /// Whether the arguments start with `words`, ignoring ASCII case: e.g.
    /// `req.is(&["CLUSTER", "SLOTS"])`.
    pub fn is(&self, words: &[&str]) -> bool {
        words.len() <= self.args.len()
            && words
                .iter()
                .zip(&self.args)
                .all(|(w, a)| a.eq_ignore_ascii_case(w.as_bytes()))
    }
}

/// What a fake node does with one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Writes these bytes as they are (build them with [`ok`], [`bulk`],
    /// ... or write any bytes, malformed ones included).
    Reply(Vec<u8>),
    /// Closes the connection without answering this command or any later
    /// one: replies already written stay readable (the node sends FIN, then
    /// reads and discards what still comes for up to [`CLOSE_DRAIN`], so the
    /// kernel does not turn the close into a reset). Later commands are not
    /// logged.
    Close,
    /// Writes these bytes, then does what [`Answer::Close`] does.
    CloseAfter(Vec<u8>),
    /// Answers nothing and goes on with the next command.
    Silent,
    /// Answers nothing and neither reads nor answers anything for this long;
    /// then goes on with the next command (commands pipelined behind this
    /// one wait in the socket).
    Stall(Duration),
}

type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// A parsed command's arguments and the number of bytes it took.
type Command = (Vec<Vec<u8>>, usize);

/// One range for [`cluster_slots`]: first slot, last slot, and the nodes
/// serving it as `(host, port)`, the primary first.
pub type SlotsRange<'a> = (u16, u16, &'a [(&'a str, u16)]);

struct Shared {
    port: u16,
    handler: Box<Handler>,
    stop: AtomicBool,
    connections: AtomicUsize,
    log: Mutex<Vec<(usize, Vec<Vec<u8>>)>>,
    /// A clone of every accepted stream, to shut them all down on stop.
    streams: Mutex<Vec<TcpStream>>,
}

/// A fake cluster node on a free loopback port (see the module
/// documentation). Dropping it stops it.
pub struct FakeNode {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeNode {
    /// Starts a node that answers every command as `handler` says.
    pub fn start<F>(handler: F) -> FakeNode
    where
        F: Fn(&Request) -> Answer + Send + Sync + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("expected to bind 127.0.0.1:0 for a fake node: {}", e));
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        listener
            .set_nonblocking(true)
            .expect("a listener can be made non-blocking");
        let shared = Arc::new(Shared {
            port,
            handler: Box::new(handler),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
        });
        let for_thread = shared.clone();
        let acceptor = thread::spawn(move || accept_loop(listener, for_thread));
        FakeNode {
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.shared.port)
    }

    /// Every command received so far, in the order they were handled, with
    /// the number of the connection each came on.
    pub fn log(&self) -> Vec<(usize, Vec<Vec<u8>>)> {
        lock(&self.shared.log).clone()
    }

    /// [`log`](Self::log) as text (lossy UTF-8), handy in assertions.
    pub fn log_text(&self) -> Vec<(usize, Vec<String>)> {
        self.log()
            .into_iter()
            .map(|(conn, args)| {
                let words = args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                (conn, words)
            })
            .collect()
    }

    /// How many received commands start with `words` (ignoring case).
    pub fn count(&self, words: &[&str]) -> usize {
        self.log()
            .into_iter()
            .filter(|(conn, args)| {
                Request {
                    conn: *conn,
                    index: 0,
                    args: args.clone(),
                    port: 0,
                }
                .is(words)
            })
            .count()
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stops accepting, shuts every connection down and waits for the
    /// accepting thread (at most a tick). Connection threads end on their
    /// own within a tick, or when a running handler returns. Idempotent.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for stream in lock(&self.shared.streams).iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // A connection accepted just before the flag was seen.
        for stream in lock(&self.shared.streams).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let conn = shared.connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    lock(&shared.streams).push(clone);
                }
                let shared = shared.clone();
                thread::spawn(move || serve(stream, conn, &shared));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                thread::sleep(Duration::from_millis(2))
            }
            // E.g. too many open files: back off, the test will time out.
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Serves one connection until the client goes, the handler closes it, the
/// node stops, or it stays idle for [`IDLE_LIMIT`].
fn serve(mut stream: TcpStream, conn: usize, shared: &Shared) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_nodelay(true))
        .and_then(|_| stream.set_read_timeout(Some(TICK)))
        .and_then(|_| stream.set_write_timeout(Some(WRITE_LIMIT)));
    if setup.is_err() {
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut index = 0;
    let mut chunk = [0u8; 16 * 1024];
    let mut last_input = Instant::now();
    loop {
        // Every whole command already read, in order.
        loop {
            let (args, used) = match parse_command(&pending) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(why) => {
                    eprintln!(
                        "fake node {}: closing connection {}: {}",
                        shared.port, conn, why
                    );
                    return;
                }
            };
            pending.drain(..used);
            if args.is_empty() {
                continue;
            }
            lock(&shared.log).push((conn, args.clone()));
            let request = Request {
                conn,
                index,
                args,
                port: shared.port,
            };
            index += 1;
            match (shared.handler)(&request) {
                Answer::Reply(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Answer::Silent => {}
                Answer::Stall(pause) => {
                    let until = Instant::now() + pause;
                    while Instant::now() < until {
                        if shared.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
                    }
                    last_input = Instant::now();
                }
                Answer::Close => return close_cleanly(stream, shared),
                Answer::CloseAfter(bytes) => {
                    let _ = stream.write_all(&bytes);
                    return close_cleanly(stream, shared);
                }
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                pending.extend_from_slice(&chunk[..n]);
                last_input = Instant::now();
            }
            Err(e)
                if e.kind() == ErrorKind::WouldBlock
                    || e.kind() == ErrorKind::TimedOut
                    || e.kind() == ErrorKind::Interrupted =>
            {
                if last_input.elapsed() > IDLE_LIMIT {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Sends FIN, then reads and discards until the client closes, the node
/// stops or [`CLOSE_DRAIN`] passes, so unread input never makes the kernel
/// reset the connection (which could destroy replies already sent).
fn close_cleanly(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + CLOSE_DRAIN;
    let mut sink = [0u8; 4096];
    while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if e.kind() == ErrorKind::WouldBlock
                    || e.kind() == ErrorKind::TimedOut
                    || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The first command in `buf` and the bytes it took; `Ok(None)` while it is
/// incomplete. A RESP array of bulk strings, or an inline command (a line of
/// words); an empty array or line gives empty arguments.
fn parse_command(buf: &[u8]) -> Result<Option<Command>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        let end = match buf.iter().position(|&b| b == b'\n') {
            Some(end) => end,
            None if buf.len() > MAX_BULK => {
                return Err("an inline command longer than the limit".to_string())
            }
            None => return Ok(None),
        };
        let line = &buf[..end];
        let args = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_vec())
            .collect();
        return Ok(Some((args, end + 1)));
    }
    let (count, mut at) = match number_line(buf, 0, b'*')? {
        Some(found) => found,
        None => return Ok(None),
    };
    if count <= 0 {
        return Ok(Some((Vec::new(), at)));
    }
    if count as usize > MAX_ARGS {
        return Err(format!(
            "expected at most {} arguments, got *{}",
            MAX_ARGS, count
        ));
    }
    let mut args = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (len, after) = match number_line(buf, at, b'$')? {
            Some(found) => found,
            None => return Ok(None),
        };
        if len < 0 || len as usize > MAX_BULK {
            return Err(format!(
                "expected a bulk string length from 0 to {}, got ${}",
                MAX_BULK, len
            ));
        }
        let end = after + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(format!(
                "expected CRLF after a bulk string of {} bytes, got {:?}",
                len,
                String::from_utf8_lossy(&buf[end..end + 2])
            ));
        }
        args.push(buf[after..end].to_vec());
        at = end + 2;
    }
    Ok(Some((args, at)))
}

/// `<kind><number>\r\n` at `at`: the number and the offset after the line.
fn number_line(buf: &[u8], at: usize, kind: u8) -> Result<Option<(i64, usize)>, String> {
    if buf.len() <= at {
        return Ok(None);
    }
    if buf[at] != kind {
        return Err(format!(
            "expected {:?} at offset {}, got {:?}",
            kind as char, at, buf[at] as char
        ));
    }
    let end = match buf[at..].windows(2).position(|w| w == b"\r\n") {
        Some(end) => at + end,
        None if buf.len() - at > 32 => {
            return Err(format!("expected a short number line at offset {}", at))
        }
        None => return Ok(None),
    };
    let text = String::from_utf8_lossy(&buf[at + 1..end]);
    let n = text
        .parse::<i64>()
        .map_err(|_| format!("expected a number after {:?}, got {:?}", kind as char, text))?;
    Ok(Some((n, end + 2)))
}

/// Answers the commands a client sends while connecting, so handlers need
/// not: `HELLO` gets `-ERR unknown command` (the client falls back to
/// RESP2), `PING` gets `+PONG` (or its argument echoed), `COMMAND` (any
/// subcommand) an empty array, `CLIENT SETNAME`/`CLIENT SETINFO`, `ASKING`,
/// `READONLY` and `READWRITE` get `+OK`. Anything else, `CLUSTER SLOTS`
/// included, is `None`: the test decides. A handler that wants to treat one
/// of these differently matches it before calling this.
pub fn default_handshake(req: &Request) -> Option<Answer> {
    let answer = match req.name().as_str() {
        "HELLO" => err("ERR unknown command 'HELLO', with args beginning with: "),
        "PING" if req.args.len() > 1 => bulk(&req.args[1]),
        "PING" => status("PONG"),
        "COMMAND" => array(Vec::new()),
        "ASKING" | "READONLY" | "READWRITE" => ok(),
        "CLIENT" if req.is(&["CLIENT", "SETNAME"]) || req.is(&["CLIENT", "SETINFO"]) => ok(),
        _ => return None,
    };
    Some(Answer::Reply(answer))
}

/// `+OK\r\n`
pub fn ok() -> Vec<u8> {
    b"+OK\r\n".to_vec()
}

/// `+<text>\r\n`
pub fn status(text: &str) -> Vec<u8> {
    format!("+{}\r\n", text).into_bytes()
}

/// `$<len>\r\n<bytes>\r\n`
pub fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// `:<n>\r\n`
pub fn int(n: i64) -> Vec<u8> {
    format!(":{}\r\n", n).into_bytes()
}

/// `-<text>\r\n`; `text` starts with the error code, e.g. `"ERR boom"`.
pub fn err(text: &str) -> Vec<u8> {
    format!("-{}\r\n", text).into_bytes()
}

/// `-MOVED <slot> <host>:<port>\r\n` (`host` may be empty, as Redis sends
/// when it does not know its own address).
pub fn moved(slot: u16, host: &str, port: u16) -> Vec<u8> {
    err(&format!("MOVED {} {}:{}", slot, host, port))
}

/// `-ASK <slot> <host>:<port>\r\n`
pub fn ask(slot: u16, host: &str, port: u16) -> Vec<u8> {
    err(&format!("ASK {} {}:{}", slot, host, port))
}

/// `$-1\r\n`, the RESP2 nil.
pub fn nil() -> Vec<u8> {
    b"$-1\r\n".to_vec()
}

/// `*<n>\r\n` followed by the items, each already encoded.
pub fn array(items: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for item in items {
        out.extend(item);
    }
    out
}

/// A fake sentinel that names `127.0.0.1:<answer>` as the primary (the
/// port can be changed while it runs) and knows no other sentinel nor any
/// replica.
pub fn fake_sentinel(answer: Arc<AtomicU16>) -> FakeNode {
    FakeNode::start(move |req| {
        if let Some(a) = default_handshake(req) {
            return a;
        }
        if req.is(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME"]) {
            let port = answer.load(Ordering::SeqCst).to_string();
            return Answer::Reply(array(vec![bulk(b"127.0.0.1"), bulk(port.as_bytes())]));
        }
        if req.is(&["SENTINEL", "SENTINELS"]) || req.is(&["SENTINEL", "REPLICAS"]) {
            return Answer::Reply(array(Vec::new()));
        }
        Answer::Reply(err("ERR unknown command"))
    })
}

/// A 40 character node id, stable per port, for fake topologies.
pub fn fake_node_id(port: u16) -> String {
    format!("{:0>40}", format!("fake{}", port))
}

/// A `CLUSTER SLOTS` reply shaped like Redis 7.0's: for each
/// `(start, end, nodes)` an array of the two bounds, then one entry per
/// node, the primary first: `[host, port, id, []]` (the empty array is
/// 7.0's hostname metadata). `host` may be `""` (meaning "the node you
/// asked") or `"?"` (unknown), as real nodes send.
pub fn cluster_slots(ranges: &[SlotsRange<'_>]) -> Vec<u8> {
    let mut items = Vec::new();
    for &(start, end, nodes) in ranges {
        let mut range = vec![int(start as i64), int(end as i64)];
        for &(host, port) in nodes {
            range.push(array(vec![
                bulk(host.as_bytes()),
                int(port as i64),
                bulk(fake_node_id(port).as_bytes()),
                array(Vec::new()),
            ]));
        }
        items.push(array(range));
    }
    array(items)
}
