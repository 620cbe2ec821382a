#![cfg(feature = "pool")]
//! The connection pool against real servers (a private `redis-server` per
//! test, the shared test cluster for the cluster pool): many threads over
//! few connections, timeouts with their figures, connections killed,
//! restarted or timed out by the server and replaced unseen, dirty
//! connections closed, authentication errors passed on, waiters served in
//! order, lifetimes.
//!
//! `cargo test --test pool -- --nocapture` prints the stats of each test.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use respline::pool::Recipe;
use respline::{
    ConnectOptions, Connection, Error, Pipeline, Pool, PoolStats, PooledConnection, Protocol,
    ReplyTimeout,
};
use support::{RedisServer, HOST};

/// Read timeout of the pooled connections: never reached in a healthy
/// test, short enough that a bug fails instead of hanging.
const SAFE: Duration = Duration::from_secs(5);

fn options(server: &RedisServer) -> ConnectOptions {
    ConnectOptions::tcp(HOST, server.port())
        .read_timeout(Some(SAFE))
        .write_timeout(Some(SAFE))
}

fn client_id(conn: &mut Connection) -> i64 {
    conn.query(["CLIENT", "ID"]).unwrap()
}

/// `connected_clients` of `INFO clients`.
fn connected_clients(conn: &mut Connection) -> usize {
    let info: String = conn.query(["INFO", "clients"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {:?}", info))
}

/// Waits (at most 5 s) until the server counts `clients` connections
/// besides the raw one asking.
fn wait_for_clients(server: &RedisServer, clients: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = String::from_utf8(server.raw_command(&["INFO", "clients"])).unwrap();
        if info.contains(&format!("connected_clients:{}\r\n", clients + 1)) {
            return;
        }
        assert!(Instant::now() < deadline, "{}", info);
        thread::sleep(Duration::from_millis(10));
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "waited 5 s for {}", what);
        thread::sleep(Duration::from_millis(2));
    }
}

/// Every connection opened is still open or counted as closed or detached.
fn assert_balanced(s: &PoolStats) {
    let ended = s.closed_broken + s.closed_idle + s.closed_expired + s.closed_dirty + s.detached;
    assert_eq!(s.created, s.total as u64 + ended, "{}", s);
}

/// Takes `n` connections at once (so each idle one is checked), runs a
/// SET and GET on each, and returns their client ids.
fn use_all(pool: &Pool<ConnectOptions>, n: usize, tag: &str) -> Vec<i64> {
    let mut held: Vec<PooledConnection<ConnectOptions>> =
        (0..n).map(|_| pool.get().unwrap()).collect();
    held.iter_mut()
        .enumerate()
        .map(|(i, conn)| {
            let key = format!("{}:{}", tag, i);
            conn.execute(("SET", &key, i)).unwrap();
            let v: usize = conn.query(("GET", &key)).unwrap();
            assert_eq!(v, i);
            client_id(conn)
        })
        .collect()
}

#[test]
fn sixty_four_threads_share_eight_connections_and_each_gets_its_own_replies() {
    let server = RedisServer::start();
    let pool = Pool::builder(options(&server))
        .max_size(8)
        .checkout_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The monitor's own connection is the test's only other one.
    let monitor = {
        let (stop, opts) = (Arc::clone(&stop), options(&server));
        thread::spawn(move || {
            let mut conn = Connection::connect(&opts).unwrap();
            let (mut most, mut polls) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                most = most.max(connected_clients(&mut conn));
                polls += 1;
                thread::sleep(Duration::from_millis(5));
            }
            (most, polls)
        })
    };
    let ops = Arc::new(AtomicUsize::new(0));
    let run_for = Duration::from_secs(2);
    let started = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|t| {
            let (pool, ops) = (pool.clone(), Arc::clone(&ops));
            thread::spawn(move || {
                let (key, counter) = (format!("t{}:k", t), format!("t{}:n", t));
                let mut last: Option<String> = None;
                let mut count = 0i64;
                let mut n = 0usize;
                while started.elapsed() < run_for {
                    let mut conn = pool.get().unwrap();
                    let value = format!("{}:{}", t, n);
                    match n % 4 {
                        0 => {
                            conn.execute(("SET", &key, &value)).unwrap();
                            last = Some(value);
                        }
                        1 => {
                            count += 1;
                            let got: i64 = conn.query(("INCR", &counter)).unwrap();
                            assert_eq!(got, count, "thread {}", t);
                        }
                        2 => {
                            count += 1;
                            let mut pipe = Pipeline::new();
                            pipe.cmd(("SET", &key, &value))
                                .cmd(("GET", &key))
                                .cmd(("INCR", &counter));
                            let ((), got, c): ((), String, i64) = pipe.query(&mut conn).unwrap();
                            assert_eq!((got.as_str(), c), (value.as_str(), count), "thread {}", t);
                            last = Some(value);
                        }
                        _ => {
                            let got: Option<String> = conn.query(("GET", &key)).unwrap();
                            assert_eq!(got, last, "thread {}", t);
                        }
                    }
                    drop(conn);
                    n += 1;
                }
                ops.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker failed");
    }
    stop.store(true, Ordering::SeqCst);
    let (most, polls) = monitor.join().unwrap();
    let s = pool.stats();
    println!(
        "{} checkouts in {:.1} s; at most {} clients over {} polls; {}",
        ops.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        most,
        polls,
        s
    );
    assert!(polls > 10, "{}", polls);
    assert!(most <= 8 + 1, "the server saw {} clients", most);
    assert!(s.total <= 8 && s.created <= 8, "{}", s);
    assert_eq!((s.in_use, s.waiting, s.idle), (0, 0, s.total), "{}", s);
    assert_eq!(s.timed_out + s.connect_failed + s.closed_dirty, 0, "{}", s);
    assert_balanced(&s);
    assert_eq!(
        s.reused + s.created,
        ops.load(Ordering::Relaxed) as u64,
        "{}",
        s
    );
    // Nothing leaked: dropping the pool closes every connection it held.
    drop(pool);
    wait_for_clients(&server, 0);
}

#[test]
fn a_full_pool_times_out_on_schedule_with_its_figures() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let pool = Pool::builder(options(&server))
        .max_size(2)
        .checkout_timeout(timeout)
        .build()
        .unwrap();
    let a = pool.get().unwrap();
    let _b = pool.get().unwrap();
    let started = Instant::now();
    let err = pool.get().expect_err("a full pool");
    let waited = started.elapsed();
    println!("{} (after {:?})", err, waited);
    assert!(
        waited >= timeout && waited < timeout + Duration::from_millis(300),
        "{:?}",
        waited
    );
    match &err {
        Error::PoolTimeout {
            in_use: 2,
            max: 2,
            waited_ms,
        } => assert!((200..500).contains(waited_ms), "{}", waited_ms),
        e => panic!("expected a pool timeout, got {:?}", e),
    }
    let text = err.to_string();
    assert!(text.contains("2 of 2 in use"), "{}", text);
    assert!(text.contains("after waiting 2"), "{}", text);
    assert!(err.is_timeout() && !err.may_have_reached_server());

    let started = Instant::now();
    let err = pool.try_get().expect_err("a full pool");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert!(
        matches!(
            err,
            Error::PoolTimeout {
                in_use: 2,
                max: 2,
                waited_ms: 0
            }
        ),
        "{:?}",
        err
    );
    // Room again: at once.
    drop(a);
    let started = Instant::now();
    let mut conn = pool.get().unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
    let _: String = conn.query(["PING"]).unwrap();
    let s = pool.stats();
    println!("{}", s);
    assert_eq!((s.timed_out, s.created, s.reused), (2, 2, 1), "{}", s);
}

/// A pool that checks every idle connection it hands out, so the
/// counters show every dead one.
fn checking(server: &RedisServer) -> Pool<ConnectOptions> {
    Pool::builder(options(server))
        .check_after_idle(Duration::ZERO)
        .build()
        .unwrap()
}

#[test]
fn killed_connections_are_replaced_unseen() {
    let server = RedisServer::start();
    let checked = checking(&server);
    // With the defaults, connections given back moments ago are not
    // checked: each replaces itself before writing.
    let unchecked = Pool::new(options(&server));
    let before = [use_all(&checked, 4, "kill"), use_all(&unchecked, 4, "kill")];
    wait_for_clients(&server, 8);
    server.raw_command(&["CLIENT", "KILL", "TYPE", "normal"]);
    wait_for_clients(&server, 0);
    let after = [use_all(&checked, 4, "kill"), use_all(&unchecked, 4, "kill")];
    for (before, after) in before.iter().zip(&after) {
        assert!(before.iter().all(|id| !after.contains(id)));
    }
    let s = checked.stats();
    println!("checked: {}", s);
    assert_eq!((s.closed_broken, s.created, s.total), (4, 8, 4), "{}", s);
    assert_balanced(&s);
    let s = unchecked.stats();
    println!("unchecked: {}", s);
    assert_eq!((s.closed_broken, s.created, s.total), (0, 4, 4), "{}", s);
}

#[test]
fn a_server_restart_is_not_seen_by_the_callers() {
    let mut server = RedisServer::start();
    let pool = checking(&server);
    use_all(&pool, 4, "restart");
    server.restart();
    use_all(&pool, 4, "restart");
    let s = pool.stats();
    println!("{}", s);
    assert_eq!((s.closed_broken, s.created, s.total), (4, 8, 4), "{}", s);
    // One lent across a restart: the connection itself replaces a socket
    // it finds closed before writing, and is given back clean.
    let mut lent = pool.get().unwrap();
    server.restart();
    let _: String = lent.query(["PING"]).unwrap();
    drop(lent);
    use_all(&pool, 4, "restart");
    let s = pool.stats();
    println!("{}", s);
    assert_eq!(s.closed_dirty, 0, "{}", s);
    assert_balanced(&s);
}

#[test]
fn connections_the_server_times_out_while_idle_are_replaced_unseen() {
    let server = RedisServer::start();
    server.raw_command(&["CONFIG", "SET", "timeout", "1"]);
    let pool = Pool::new(options(&server));
    use_all(&pool, 2, "idle");
    for round in 1..=2u64 {
        // Idle past the server's timeout, until it has closed both (after
        // 1 to 2 s: it counts idle time in whole seconds).
        let idle_from = Instant::now();
        wait_for_clients(&server, 0);
        let idle = idle_from.elapsed();
        use_all(&pool, 2, "idle");
        let s = pool.stats();
        println!(
            "round {}, closed by the server after {:?}: {}",
            round, idle, s
        );
        assert_eq!(
            (s.closed_broken, s.created),
            (2 * round, 2 + 2 * round),
            "{}",
            s
        );
    }
}

#[test]
fn connections_given_back_dirty_are_closed_never_reused() {
    let server = RedisServer::start();
    let pool = Pool::builder(options(&server)).max_size(1).build().unwrap();
    // A clean one is reused.
    let first = client_id(&mut pool.get().unwrap());
    assert_eq!(client_id(&mut pool.get().unwrap()), first);

    type Dirty = fn(&mut Connection);
    let cases: [(&str, Dirty); 7] = [
        ("inside MULTI", |c| {
            c.execute(["MULTI"]).unwrap();
            c.execute(["SET", "k", "queued"]).unwrap();
        }),
        ("with keys WATCHed", |c| {
            c.execute(["WATCH", "k"]).unwrap();
        }),
        ("subscribed", |c| {
            c.execute(["SUBSCRIBE", "news"]).unwrap();
        }),
        ("after SELECT", |c| {
            c.execute(["SELECT", "2"]).unwrap();
        }),
        ("after CLIENT SETNAME", |c| {
            c.execute(["CLIENT", "SETNAME", "renamed"]).unwrap();
        }),
        ("after HELLO 3", |c| {
            c.execute(["HELLO", "3"]).unwrap();
        }),
        ("broken by a read timeout during BLPOP", |c| {
            let e = c
                .with_timeout(ReplyTimeout::After(Duration::from_millis(50)))
                .query::<Option<(String, String)>>(["BLPOP", "empty", "2"])
                .unwrap_err();
            assert!(e.is_timeout(), "{}", e);
            assert!(c.is_broken());
        }),
    ];
    for (n, (what, dirty)) in cases.iter().enumerate() {
        let mut conn = pool.get().unwrap();
        let id = client_id(&mut conn);
        dirty(&mut conn);
        drop(conn);
        let mut conn = pool.get().unwrap();
        assert_ne!(client_id(&mut conn), id, "given back {}: reused", what);
        // A fresh session: database 0, no name.
        let name: Option<String> = conn.query(["CLIENT", "GETNAME"]).unwrap();
        let info: String = conn.query(["CLIENT", "INFO"]).unwrap();
        assert!(name.is_none() && info.contains(" db=0 "), "{}", info);
        drop(conn);
        let s = pool.stats();
        assert_eq!(s.closed_dirty, n as u64 + 1, "{}: {}", what, s);
    }

    // From a panicking thread.
    let id = client_id(&mut pool.get().unwrap());
    let p = pool.clone();
    let joined = thread::spawn(move || {
        let mut conn = p.get().unwrap();
        conn.execute(["SET", "k", "v"]).unwrap();
        panic!("a panic while holding a pooled connection (expected by the test)");
    })
    .join();
    assert!(joined.is_err());
    assert_ne!(client_id(&mut pool.get().unwrap()), id);
    let s = pool.stats();
    println!("{}", s);
    assert_eq!(
        (s.closed_dirty, s.total),
        (cases.len() as u64 + 1, 1),
        "{}",
        s
    );
    assert_balanced(&s);
    // Only the pool's one connection is left on the server.
    wait_for_clients(&server, 1);
}

/// A recipe of the test's own (as Sentinel's will be): slow to connect.
struct Slow(ConnectOptions);

impl Recipe for Slow {
    type Conn = Connection;

    fn connect(&self) -> respline::Result<Connection> {
        thread::sleep(Duration::from_millis(200));
        self.0.connect()
    }

    fn is_reusable(&self, conn: &Connection) -> bool {
        self.0.is_reusable(conn)
    }

    fn is_healthy(&self, conn: &mut Connection, ping: bool) -> bool {
        self.0.is_healthy(conn, ping)
    }
}

/// The step of a handshake error and its server error's code.
fn handshake_failure(e: &Error) -> (&'static str, String) {
    match e {
        Error::Handshake { step, source } => match source.server_error() {
            Some(s) => (*step, s.code().to_string()),
            None => panic!("expected a server error inside, got {:?}", source),
        },
        e => panic!("expected a handshake error, got {:?}", e),
    }
}

#[test]
fn an_authentication_failure_reaches_the_caller_and_the_waiters_promptly() {
    let server = RedisServer::start_with(&["--requirepass", "x"]);
    let cases = [
        (
            "wrong password",
            options(&server).auth(None, "wrong"),
            "AUTH",
            "WRONGPASS",
        ),
        ("no password (RESP2)", options(&server), "PING", "NOAUTH"),
        (
            "no password (RESP3)",
            options(&server).protocol(Protocol::Resp3),
            "HELLO",
            "NOAUTH",
        ),
        (
            "no password, db 3",
            options(&server).db(3),
            "SELECT",
            "NOAUTH",
        ),
    ];
    for (what, opts, step, code) in cases {
        let pool = Pool::new(opts);
        let started = Instant::now();
        let e = pool.get().expect_err(what);
        println!("{}: {}", what, e);
        assert!(started.elapsed() < Duration::from_secs(1), "{}", what);
        assert_eq!(handshake_failure(&e), (step, code.to_string()), "{}", what);
        assert!(!e.may_have_reached_server());
        let s = pool.stats();
        assert_eq!((s.total, s.connect_failed, s.timed_out), (0, 1, 0), "{}", s);
    }
    // The right one works.
    let pool = Pool::new(options(&server).auth(None, "x"));
    let _: String = pool.get().unwrap().query(["PING"]).unwrap();

    // Four threads queue on a pool of one whose recipe is slow and fails:
    // each gets the server's error when its turn comes, none a timeout.
    let pool = Pool::builder(Slow(options(&server).auth(None, "wrong")))
        .max_size(1)
        .checkout_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            thread::spawn(move || pool.get().err().map(|e| handshake_failure(&e)))
        })
        .collect();
    let mut most_waiting = 0;
    while started.elapsed() < Duration::from_millis(400) {
        most_waiting = most_waiting.max(pool.stats().waiting);
        thread::sleep(Duration::from_millis(2));
    }
    for t in threads {
        let failure = t.join().unwrap();
        assert_eq!(failure, Some(("AUTH", "WRONGPASS".to_string())));
    }
    let took = started.elapsed();
    let s = pool.stats();
    println!("4 waiters failed in {:?}; {}", took, s);
    assert!(most_waiting >= 2, "{}", most_waiting);
    assert!(took < Duration::from_secs(3), "{:?}", took);
    assert_eq!(
        (s.total, s.waiting, s.connect_failed, s.timed_out),
        (0, 0, 4, 0),
        "{}",
        s
    );
}

#[test]
fn waiters_are_served_in_the_order_they_arrived() {
    let server = RedisServer::start();
    let pool = Pool::builder(options(&server)).max_size(1).build().unwrap();
    let held = pool.get().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (p, order) = (pool.clone(), Arc::clone(&order));
            let t = thread::spawn(move || {
                let mut conn = p.get().unwrap();
                order.lock().unwrap().push(i);
                conn.execute(("SET", "served", i)).unwrap();
                thread::sleep(Duration::from_millis(20));
            });
            // The next one arrives only once this one waits.
            wait_until("a waiter", || pool.stats().waiting == i + 1);
            t
        })
        .collect();
    drop(held);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    let s = pool.stats();
    println!("{}", s);
    assert_eq!((s.created, s.reused), (1, 4), "{}", s);
}

#[test]
fn connections_past_their_lifetime_or_idle_time_are_replaced() {
    let server = RedisServer::start();
    let pool = Pool::builder(options(&server))
        .max_lifetime(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let first = client_id(&mut pool.get().unwrap());
    assert_eq!(client_id(&mut pool.get().unwrap()), first);
    thread::sleep(Duration::from_millis(350));
    let second = client_id(&mut pool.get().unwrap());
    assert_ne!(second, first);
    assert_eq!(pool.stats().closed_expired, 1);
    // One that expires while in use is closed when given back.
    let conn = pool.get().unwrap();
    thread::sleep(Duration::from_millis(350));
    drop(conn);
    let s = pool.stats();
    println!("{}", s);
    assert_eq!((s.closed_expired, s.total), (2, 0), "{}", s);

    let pool = Pool::builder(options(&server))
        .idle_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let first = client_id(&mut pool.get().unwrap());
    thread::sleep(Duration::from_millis(250));
    assert_ne!(client_id(&mut pool.get().unwrap()), first);
    let s = pool.stats();
    assert_eq!((s.closed_idle, s.total), (1, 1), "{}", s);
}

#[test]
fn a_long_idle_connection_is_pinged_and_a_unix_socket_pool_recovers_too() {
    let server = RedisServer::start();
    let pool = Pool::builder(ConnectOptions::unix(server.unix_path()).read_timeout(Some(SAFE)))
        .ping_after_idle(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    let pings = || -> u64 {
        let info = String::from_utf8(server.raw_command(&["INFO", "commandstats"])).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // (The harness PINGs the server to see it is up.)
    let harness_pings = pings();
    let mut conn = pool.get().unwrap();
    let first = client_id(&mut conn);
    drop(conn);
    thread::sleep(Duration::from_millis(100));
    // PINGed (std cannot peek at a Unix socket), and still the same one.
    let mut conn = pool.get().unwrap();
    assert_eq!(client_id(&mut conn), first);
    drop(conn);
    // The connect of a plain recipe PINGs once; the checkout once more.
    assert_eq!(pings() - harness_pings, 2);
    server.raw_command(&["CLIENT", "KILL", "TYPE", "normal"]);
    wait_for_clients(&server, 0);
    // Not seen by the caller: the connection replaces a socket it finds
    // closed before writing anything.
    let mut conn = pool.get().unwrap();
    assert_ne!(client_id(&mut conn), first);
    let s = pool.stats();
    println!("{}", s);
    assert_eq!(s.total, 1);
}

#[cfg(feature = "cluster")]
#[test]
fn a_pool_of_cluster_clients_serves_threads() {
    use respline::ClusterOptions;
    let cluster = support::cluster::shared();
    let urls = cluster.seed_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let pool = Pool::builder(ClusterOptions::from_urls(&urls).unwrap())
        .max_size(2)
        .build()
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    let mut cluster = pool.get().unwrap();
                    let key = format!("pool:{}:{}", t, i);
                    cluster
                        .execute(("SET", &key, format!("{}:{}", t, i)))
                        .unwrap();
                    let got: String = cluster.query(("GET", &key)).unwrap();
                    assert_eq!(got, format!("{}:{}", t, i));
                    let mut pipe = Pipeline::new();
                    pipe.cmd(("DEL", &key)).cmd(("EXISTS", &key));
                    let (deleted, exists): (i64, i64) = pipe.query(&mut cluster).unwrap();
                    assert_eq!((deleted, exists), (1, 0));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = pool.stats();
    println!("{}", s);
    assert!(s.created <= 2 && s.total == s.idle, "{}", s);
    assert_eq!(s.reused + s.created, 200, "{}", s);
    assert_balanced(&s);
}
