//! The desync canary: the class of redis-py CVE-2023-28858 and go-redis
//! CVE-2025-29923, where a reply that arrives after its request timed out is
//! handed to the next request.
//!
//! Four threads, each with its own connection through a loopback proxy that
//! holds some of the server's replies back for longer than the read timeout,
//! loop over their own keys, whose values name the key: single GETs,
//! pipelines with a failing command in the middle, and MULTI/EXEC
//! transactions. Every reply a caller accepts must belong to the command
//! that asked for it. Without the rule that
//! a failed connection refuses further use, late replies are taken as the
//! answers to later GETs and this test fails.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use respline::{ConnectOptions, Connection, Error, Pipeline, Value};
use support::RedisServer;

const THREADS: usize = 4;
const REQUESTS_PER_THREAD: usize = 750;
const KEYS_PER_THREAD: usize = 50;
const READ_TIMEOUT: Duration = Duration::from_millis(40);

/// A small xorshift generator: std only, seeded per connection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A proxy to `target` that passes requests straight through and delays
/// about one reply chunk in 25 by 1.5 to 2.5 read timeouts (the others by
/// up to a millisecond), keeping their order.
fn start_delay_proxy(target: u16, stop: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        while !stop.load(Ordering::Relaxed) {
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(_) => {
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            client.set_nonblocking(false).unwrap();
            client.set_nodelay(true).unwrap();
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            server.set_nodelay(true).unwrap();
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let rng = Rng(seed | 1);
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || pump(c2, s2, None));
            thread::spawn(move || pump(server, client, Some(rng)));
        }
    });
    port
}

/// Copies `from` to `to` until either side closes, delaying chunks when an
/// `rng` is given.
fn pump(mut from: TcpStream, mut to: TcpStream, mut rng: Option<Rng>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(rng) = rng.as_mut() {
            let pause = if rng.below(25) == 0 {
                let ms = READ_TIMEOUT.as_millis() as u64;
                Duration::from_millis(ms * 3 / 2 + rng.below(ms + 1))
            } else {
                Duration::from_micros(rng.below(1000))
            };
            thread::sleep(pause);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn key(thread: usize, i: usize) -> String {
    format!("canary:{}:{}", thread, i % KEYS_PER_THREAD)
}

fn value_of(key: &str) -> String {
    format!("value-of-{}", key)
}

/// One request, its shape chosen by `i`: a GET, a pipeline of GETs with a
/// failing command in the middle, or a MULTI/EXEC of GETs. Returns how many
/// accepted replies were wrong.
fn one_round(conn: &mut Connection, t: usize, i: usize) -> respline::Result<usize> {
    let check = |k: &str, v: &Value| usize::from(v.as_bytes() != Some(value_of(k).as_bytes()));
    match i % 4 {
        0 | 1 => {
            let k = key(t, i);
            let v: Option<String> = conn.query(("GET", &k))?;
            Ok(usize::from(v.as_deref() != Some(value_of(&k).as_str())))
        }
        2 => {
            let keys = [key(t, i), key(t, i + 1), key(t, i + 2)];
            let mut pipe = Pipeline::new();
            pipe.cmd(("GET", &keys[0]))
                .cmd(("INCR", &keys[1]))
                .cmd(("GET", &keys[2]));
            let replies = pipe.execute(conn)?;
            let mut wrong = check(&keys[0], &replies[0]) + check(&keys[2], &replies[2]);
            // INCR of a non-number: this command's own error, in its slot.
            match &replies[1] {
                Value::Error(e) if e.starts_with("ERR value is not an integer") => {}
                _ => wrong += 1,
            }
            Ok(wrong)
        }
        _ => {
            let keys = [key(t, i), key(t, i + 7)];
            let mut tx = Pipeline::transaction();
            tx.cmd(("GET", &keys[0])).cmd(("GET", &keys[1]));
            let replies = tx.execute(conn)?;
            Ok(check(&keys[0], &replies[0]) + check(&keys[1], &replies[1]))
        }
    }
}

#[derive(Default)]
struct Tally {
    accepted: AtomicUsize,
    wrong: AtomicUsize,
    timeouts: AtomicUsize,
    other_errors: AtomicUsize,
    reconnects: AtomicUsize,
}

#[test]
fn a_late_reply_is_never_handed_to_the_next_request() {
    let server = RedisServer::start();
    let mut setup = Connection::open(&server.url()).unwrap();
    for t in 0..THREADS {
        for i in 0..KEYS_PER_THREAD {
            let k = key(t, i);
            let _: () = setup.query(("SET", &k, value_of(&k))).unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let proxy = start_delay_proxy(server.port(), stop.clone());
    let options = ConnectOptions::tcp("127.0.0.1", proxy).read_timeout(Some(READ_TIMEOUT));
    let tally = Arc::new(Tally::default());

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let options = options.clone();
            let tally = tally.clone();
            thread::spawn(move || {
                let mut conn = Connection::connect(&options).unwrap();
                for i in 0..REQUESTS_PER_THREAD {
                    if conn.is_broken() {
                        // Reconnecting goes through the same proxy, which
                        // may delay the handshake too: retry until it works.
                        while conn.reconnect().is_err() {}
                        tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    match one_round(&mut conn, t, i) {
                        Ok(wrong) => {
                            tally.accepted.fetch_add(1, Ordering::Relaxed);
                            tally.wrong.fetch_add(wrong, Ordering::Relaxed);
                        }
                        Err(e) if e.is_timeout() => {
                            tally.timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::Broken { .. }) => unreachable!("checked above"),
                        Err(_) => {
                            tally.other_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);

    let accepted = tally.accepted.load(Ordering::Relaxed);
    let wrong = tally.wrong.load(Ordering::Relaxed);
    let timeouts = tally.timeouts.load(Ordering::Relaxed);
    let other = tally.other_errors.load(Ordering::Relaxed);
    eprintln!(
        "desync canary: {} requests, {} accepted, {} wrong, {} timeouts, {} other errors, {} reconnects",
        THREADS * REQUESTS_PER_THREAD,
        accepted,
        wrong,
        timeouts,
        other,
        tally.reconnects.load(Ordering::Relaxed)
    );
    assert_eq!(wrong, 0, "replies were handed to the wrong GET");
    // The scenario was exercised: many replies came late, most came on time.
    assert!(timeouts >= 10, "only {} timeouts", timeouts);
    assert!(
        accepted >= THREADS * REQUESTS_PER_THREAD / 2,
        "{}",
        accepted
    );
}
