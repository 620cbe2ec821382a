#![cfg(all(feature = "pool", feature = "sentinel"))]
//! A pool over Sentinel (`Pool<Sentinel>`) against real processes: a
//! primary, two replicas and three sentinels (tests/support/sentinel.rs),
//! a group of its own per test, since every test fails the primary over.
//!
//! `cargo test --test sentinel_pool -- --nocapture` prints the figures:
//! the gap after `kill -9`, the errors per thread, the pool's stats.

mod fake_cluster;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fake_cluster::fake_sentinel;
use respline::sentinel::LOOKUP_TIMEOUT;
use respline::{
    Addr, ConnectOptions, Connection, Error, Pipeline, Pool, PoolStats, PooledConnection, Sentinel,
    SentinelOptions,
};
use support::sentinel::{check_writes, conn_port, TestSentinels, Write, PRIMARY_NAME};
use support::{RedisServer, HOST};

/// The pooled connections' client name, to count them in `CLIENT LIST`.
const NAME: &str = "sentinel-pool";

/// Threads, and connections in the pool, of the kill test.
const THREADS: usize = 4;

fn tcp(port: u16) -> Addr {
    Addr::Tcp {
        host: HOST.to_string(),
        port,
    }
}

/// A handle on the group's sentinels whose data-node connections are named
/// [`NAME`] and wait at most `read_timeout` for a reply.
fn sentinel_of(group: &TestSentinels, read_timeout: Duration) -> Sentinel {
    let urls = group.sentinel_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    SentinelOptions::new(&urls, PRIMARY_NAME)
        .unwrap()
        .node(
            ConnectOptions::tcp(HOST, 0)
                .client_name(NAME)
                .read_timeout(Some(read_timeout))
                .write_timeout(Some(read_timeout)),
        )
        .build()
        .unwrap()
}

/// How many connections named [`NAME`] the data node on `port` has.
fn pooled_clients(group: &TestSentinels, port: u16) -> usize {
    let list = group.query(port, &["CLIENT", "LIST"]).as_text();
    let needle = format!(" name={} ", NAME);
    list.lines().filter(|l| l.contains(&needle)).count()
}

/// Waits (at most 3 s) until the data node on `port` has `n` connections
/// named [`NAME`] (a connection closed by the client leaves the server's
/// list a moment later).
fn wait_for_pooled_clients(group: &TestSentinels, port: u16, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let seen = pooled_clients(group, port);
        if seen == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {} pooled connections on {}, found {}:\n{}",
            n,
            port,
            seen,
            group.query(port, &["CLIENT", "LIST"]).as_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Takes every connection of the pool at once and checks that each is to
/// `primary` and owned by the handle: the pool is full, on the primary.
fn check_full_on(pool: &Pool<Sentinel>, primary: u16) -> PoolStats {
    let all: Vec<PooledConnection<Sentinel>> = (0..pool.max_size())
        .map(|_| pool.get().expect("a connection to the new primary"))
        .collect();
    for conn in &all {
        assert_eq!(conn_port(conn), primary);
        assert!(pool.recipe().owns(conn));
    }
    drop(all);
    let stats = pool.stats();
    assert_eq!(
        (stats.total, stats.idle),
        (pool.max_size(), pool.max_size()),
        "{}",
        stats
    );
    stats
}

/// What one writer thread of the kill test saw.
#[derive(Default)]
struct Seen {
    writes: Vec<Write>,
    errors: Vec<String>,
}

#[test]
fn a_killed_primary_under_pooled_writes_is_replaced_and_the_pool_fills_again() {
    let started = Instant::now();
    let mut group = TestSentinels::start(1000);
    let setup = started.elapsed();
    let old = group.primary_port();
    let sentinel = sentinel_of(&group, Duration::from_millis(500));
    let pool = Pool::builder(sentinel.clone())
        .max_size(THREADS)
        .checkout_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resumed_at: Mutex<Option<Instant>> = Mutex::new(None);
    let deadline = Instant::now() + Duration::from_secs(20);

    let (killed_at, seen) = thread::scope(|s| {
        let killer = s.spawn(|| {
            thread::sleep(Duration::from_millis(300));
            group.kill(old);
            Instant::now()
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (pool, resumed_at) = (&pool, &resumed_at);
                s.spawn(move || {
                    let mut seen = Seen::default();
                    let mut i = 0;
                    // Until a second after the first write the new primary took.
                    loop {
                        let resumed = *resumed_at.lock().unwrap();
                        if resumed.map_or(false, |r| r.elapsed() >= Duration::from_secs(1)) {
                            return seen;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "writes did not resume: {:#?}",
                            seen.errors
                        );
                        let mut conn = match pool.get() {
                            Ok(c) => c,
                            Err(e) => {
                                assert!(!e.may_have_reached_server(), "{}", e);
                                seen.errors.push(format!("get: {}", e));
                                thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        };
                        let key = format!("pool-kill:{}:{}", t, i);
                        i += 1;
                        match conn.execute(["SET", key.as_str(), "1"]) {
                            Ok(_) => {
                                // Read after the request: a connection found
                                // closed before sending was replaced through
                                // the sentinels, maybe by one to the new primary.
                                let by = conn_port(&conn);
                                let mut replicas = 0;
                                if by == old {
                                    match conn.query::<i64>(["WAIT", "2", "100"]) {
                                        Ok(n) => replicas = n,
                                        Err(e) => seen
                                            .errors
                                            .push(format!("WAIT after SET {}: {}", key, e)),
                                    }
                                } else {
                                    resumed_at.lock().unwrap().get_or_insert_with(Instant::now);
                                }
                                seen.writes.push(Write {
                                    key,
                                    acked_by: Some(by),
                                    replicas,
                                    may_have_run: true,
                                });
                                drop(conn);
                                // A bounded load: the machine is shared.
                                thread::sleep(Duration::from_millis(2));
                            }
                            Err(e) => {
                                let may_have_run = e.may_have_reached_server();
                                seen.errors.push(format!(
                                    "SET {} (may have run: {}): {}",
                                    key, may_have_run, e
                                ));
                                seen.writes.push(Write {
                                    key,
                                    acked_by: None,
                                    replicas: 0,
                                    may_have_run,
                                });
                                drop(conn); // broken: closed, not given back
                                thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                })
            })
            .collect();
        let seen: Vec<Seen> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        (killer.join().unwrap(), seen)
    });
    let resumed = resumed_at.lock().unwrap().expect("writes resumed");
    let gap = resumed.duration_since(killed_at);
    let after_run = pool.stats();
    let new = group.wait_for_new_primary(old);
    assert!(group.replica_ports().contains(&new));
    assert_eq!(sentinel.current_primary(), Some(tcp(new)));
    assert!(sentinel.changes() >= 1);

    // Few errors, each saying whether its write may have run: one for the
    // request in flight when the primary died, and one per lookup that
    // ended before the promotion (each waits up to LOOKUP_TIMEOUT, 2 s, for
    // an address that takes connections): 2 for a failover within 4 s.
    let lookups = (gap.as_millis() / LOOKUP_TIMEOUT.as_millis()).max(1);
    let allowed = 1 + usize::try_from(lookups).unwrap();
    for (t, s) in seen.iter().enumerate() {
        assert!(
            s.errors.len() <= allowed,
            "expected at most {} errors in thread {} ({:?} without a primary), got {:#?}",
            allowed,
            t,
            gap,
            s.errors
        );
        assert!(
            s.writes.iter().any(|w| w.acked_by == Some(new)),
            "thread {} wrote nothing to the new primary",
            t
        );
    }
    assert!(gap < Duration::from_secs(10), "{:?}", gap);

    // The pool is full again, every connection on the new primary.
    assert_eq!(after_run.total, THREADS, "{}", after_run);
    let stats = check_full_on(&pool, new);
    wait_for_pooled_clients(&group, new, THREADS);

    // Every write the new primary acknowledged, or the old one with both
    // replicas confirmed by WAIT, is on the new primary; a write whose
    // error said it could not have run is not.
    let writes: Vec<&Write> = seen.iter().flat_map(|s| &s.writes).collect();
    let mut reader = pool.get().unwrap();
    let mut gets = Pipeline::new();
    for w in &writes {
        gets.cmd(["GET", w.key.as_str()]);
    }
    let found: Vec<Option<String>> = gets.query(&mut reader).unwrap();
    drop(reader);
    let tally = check_writes(writes.iter().copied(), found, new);
    let errors: Vec<usize> = seen.iter().map(|s| s.errors.len()).collect();
    let all_errors: Vec<&String> = seen.iter().flat_map(|s| &s.errors).collect();
    println!(
        "setup {:?}; writes resumed {:?} after kill -9; {} writes; errors per thread {:?}: {:#?}; \
         acked by the old primary with fewer than 2 replicas confirmed: {} ({} lost); \
         failed writes that may have run: {} ({} did); after the run: {}; full again: {}",
        setup,
        gap,
        writes.len(),
        errors,
        all_errors,
        tally.weak,
        tally.lost_weak,
        tally.unknown,
        tally.unknown_ran,
        after_run,
        stats
    );
}

#[test]
fn a_manual_failover_closes_idle_connections_at_checkout_and_busy_ones_when_given_back() {
    let started = Instant::now();
    let group = TestSentinels::start(1000);
    let setup = started.elapsed();
    let old = group.primary_port();
    let sentinel = sentinel_of(&group, Duration::from_secs(2));
    let pool = Pool::builder(sentinel.clone())
        .max_size(4)
        .checkout_timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Four connections to the old primary: one held across the failover,
    // two taken in turn by two writers, one idle all along (the pool hands
    // out the most recently given back first).
    let warm: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    assert!(warm.iter().all(|c| conn_port(c) == old));
    drop(warm);
    let mut busy = pool.get().unwrap();
    busy.execute(["SET", "manual:busy", "before"]).unwrap();
    let stop = AtomicBool::new(false);
    let failover_at = Instant::now();
    let (new, noticed_at, worker_log) = thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (pool, stop) = (&pool, &stop);
                s.spawn(move || {
                    let mut log: Vec<(String, Instant, Result<u16, String>)> = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let key = format!("manual:{}:{}", t, i);
                        i += 1;
                        let began = Instant::now();
                        let outcome = pool
                            .get()
                            .and_then(|mut c| c.execute(["SET", key.as_str(), "1"]).map(|_| c))
                            .map(|c| conn_port(&c))
                            .map_err(|e| {
                                format!("(may have run: {}) {}", e.may_have_reached_server(), e)
                            });
                        log.push((key, began, outcome));
                        thread::sleep(Duration::from_millis(10));
                    }
                    log
                })
            })
            .collect();
        group.failover();
        let new = group.wait_for_new_primary(old);
        // No lookup yet: nothing was opened, so the pool still takes the
        // old primary for the primary (it is up, taking writes).
        assert_eq!(sentinel.current_primary(), Some(tcp(old)));
        assert_eq!(pool.stats().created, 4, "{}", pool.stats());
        // Look up now, as a timer or a +switch-master subscriber would.
        assert_eq!(pool.recipe().primary_addr().unwrap(), tcp(new));
        let noticed_at = Instant::now();
        thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let logs: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        (new, noticed_at, logs)
    });
    assert_eq!(sentinel.changes(), 1);
    assert!(!sentinel.owns(&busy));

    // The busy connection still works (the old primary is not demoted yet)
    // but is no longer the primary's: no replica has what it writes.
    busy.execute(["SET", "manual:busy", "after"]).unwrap();
    let replicas: i64 = busy.query(["WAIT", "1", "100"]).unwrap();
    assert_eq!(replicas, 0);
    let before_give_back = pool.stats();
    drop(busy);
    let stats = pool.stats();
    assert_eq!(stats.closed_dirty, before_give_back.closed_dirty + 1);
    let mut errors = 0;
    let mut on_new = Vec::new();
    for log in &worker_log {
        let mut after = 0;
        for (key, _, outcome) in log {
            match outcome {
                Ok(port) if *port == new => {
                    after += 1;
                    on_new.push(key.as_str());
                }
                Ok(port) => assert_eq!(*port, old),
                Err(e) => {
                    errors += 1;
                    println!("{}: {}", key, e);
                }
            }
        }
        assert!(after > 0, "a writer never reached the new primary");
    }
    // Once the lookup saw the move, a connection to the old primary was
    // handed out only if it had been given back less than check_after_idle
    // (100 ms) before, unchecked, and then at most once (closed when given
    // back): at most the three that were not busy, all within 100 ms.
    let late: Vec<&(String, Instant, Result<u16, String>)> = worker_log
        .iter()
        .flatten()
        .filter(|(_, began, outcome)| *began > noticed_at && outcome == &Ok(old))
        .collect();
    assert!(late.len() <= 3, "{:?}", late);
    for (key, began, _) in &late {
        let after = began.duration_since(noticed_at);
        assert!(after < Duration::from_millis(100), "{} {:?}", key, after);
    }
    assert!(errors <= 2, "{} errors", errors);

    // The pool fills to its size again, on the new primary only.
    let full = check_full_on(&pool, new);
    // All four connections to the old primary are closed: the busy one
    // when given back (closed dirty), the others when given back or at
    // checkout (which of the three the writers happened to take, and
    // when, depends on scheduling); every connection now is a new one.
    assert_eq!(full.closed_dirty + full.closed_broken, 4, "{}", full);
    assert_eq!(full.created, 4 + 4, "{}", full);
    wait_for_pooled_clients(&group, new, 4);
    wait_for_pooled_clients(&group, old, 0);
    let mut conn = pool.get().unwrap();
    let mut gets = Pipeline::new();
    for key in &on_new {
        gets.cmd(["GET", *key]);
    }
    let found: Vec<Option<String>> = gets.query(&mut conn).unwrap();
    assert!(found.iter().all(Option::is_some));
    println!(
        "setup {:?}; the pool's lookup saw the new primary {:?} after SENTINEL FAILOVER; \
         writer errors: {}; writes on the old primary begun after the lookup: {}; \
         writes on the new primary: {}; after: {}",
        setup,
        noticed_at.duration_since(failover_at),
        errors,
        late.len(),
        on_new.len(),
        full
    );
}

#[test]
fn a_readonly_reply_closes_the_connection_and_the_next_checkout_reaches_the_primary() {
    let group = TestSentinels::start(1000);
    let old = group.primary_port();
    let sentinel = sentinel_of(&group, Duration::from_secs(2));
    let pool = Pool::builder(sentinel.clone()).max_size(3).build().unwrap();
    let mut a = pool.get().unwrap();
    let mut b = pool.get().unwrap();
    let c = pool.get().unwrap();
    assert!([&a, &b, &c].iter().all(|conn| conn_port(conn) == old));
    drop(c); // idle in the pool across the failover
             // Outside the pool, a connection from the handle.
    let mut own = sentinel.connect_primary().unwrap();
    // A plain connection to the same address, for comparison.
    let mut plain = Connection::connect(&ConnectOptions::tcp(HOST, old)).unwrap();
    plain.execute(["PING"]).unwrap();

    group.failover();
    let new = group.wait_for_new_primary(old);
    // Demote the old primary as the sentinels will some seconds later,
    // without closing its clients yet.
    let reply = group.query(old, &["REPLICAOF", HOST, &new.to_string()]);
    assert!(reply.is_ok(), "{:?}", reply);
    assert_eq!(group.role(old), "slave");
    assert_eq!(sentinel.current_primary(), Some(tcp(old)), "no lookup yet");

    // A: the demoted primary refuses the write; given back, it is closed.
    let err = a.execute(["SET", "ro:a", "1"]).unwrap_err();
    assert_eq!(err.server_error().map(|e| e.code()), Some("READONLY"));
    assert!(!a.is_broken());
    let before = pool.stats();
    drop(a);
    let after = pool.stats();
    assert_eq!(after.closed_dirty, before.closed_dirty + 1, "{}", after);
    assert_eq!(after.total, before.total - 1, "{}", after);
    // Giving it back made the handle look the primary up again.
    assert_eq!(sentinel.current_primary(), Some(tcp(new)));
    assert_eq!(sentinel.changes(), 1);

    // The next checkout: the idle connection to the old address is closed
    // (checked after 100 ms idle), and a new one goes to the new primary.
    thread::sleep(Duration::from_millis(150));
    let mut next = pool.get().unwrap();
    assert_eq!(conn_port(&next), new);
    next.execute(["SET", "ro:next", "1"]).unwrap();
    let stats = pool.stats();
    assert_eq!(stats.closed_broken, 1, "{}", stats);

    // B, still held: when the server closes it (as the sentinels do when
    // they demote a primary), its next request is not sent to the old
    // address (READONLY) but on a connection the sentinels point to.
    let b_id: i64 = b.query(["CLIENT", "ID"]).unwrap();
    let plain_id: i64 = plain.query(["CLIENT", "ID"]).unwrap();
    for id in [b_id, plain_id] {
        let killed = group.query(old, &["CLIENT", "KILL", "ID", &id.to_string()]);
        assert_eq!(killed.as_int(), 1);
    }
    thread::sleep(Duration::from_millis(50));
    b.execute(["SET", "ro:b", "1"]).unwrap();
    assert_eq!(conn_port(&b), new);
    assert!(sentinel.owns(&b));
    drop(b);
    // The plain connection is made again at its old address, as its
    // options say, and gets READONLY there.
    let err = plain.execute(["SET", "ro:plain", "1"]).unwrap_err();
    assert_eq!(err.server_error().map(|e| e.code()), Some("READONLY"));
    // Its reconnect goes back there too; the handle's connection's looks up.
    plain.reconnect().unwrap();
    assert_eq!(conn_port(&plain), old);
    assert_eq!(conn_port(&own), old);
    own.reconnect().unwrap();
    assert_eq!(conn_port(&own), new);
    own.execute(["SET", "ro:own", "1"]).unwrap();

    let value: Option<String> = next.query(["GET", "ro:b"]).unwrap();
    assert_eq!(value.as_deref(), Some("1"));
    drop(next);
    let stats = check_full_on(&pool, new);
    println!("after: {}", stats);
}

#[test]
fn a_data_node_refusing_the_client_fails_the_checkout_with_its_error() {
    let server = RedisServer::start_with(&["--requirepass", "x"]);
    let fake = fake_sentinel(Arc::new(AtomicU16::new(server.port())));
    let pool_with = |node: ConnectOptions, confirm_role: bool| {
        let url = format!("redis://{}:{}", HOST, fake.port());
        let sentinel = SentinelOptions::new(&[url.as_str()], PRIMARY_NAME)
            .unwrap()
            .node(node)
            .confirm_role(confirm_role)
            .build()
            .unwrap();
        Pool::new(sentinel)
    };
    // ROLE, or the PING sent when nothing else would reach the server before
    // the first command, gets the server's refusal: an error of connecting,
    // at once, not a lookup retried until its deadline nor a timeout.
    for (confirm_role, step) in [(true, "ROLE"), (false, "PING")] {
        let pool = pool_with(ConnectOptions::tcp(HOST, 0), confirm_role);
        let started = Instant::now();
        let e = pool.get().expect_err(step);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started);
        match &e {
            Error::Handshake { step: s, source } => {
                assert_eq!(*s, step);
                assert_eq!(source.server_error().map(|e| e.code()), Some("NOAUTH"));
            }
            other => panic!("expected a handshake error at {}, got {:?}", step, other),
        }
        assert!(!e.may_have_reached_server(), "{}", e);
        let stats = pool.stats();
        assert_eq!((stats.total, stats.connect_failed), (0, 1), "{}", stats);
    }
    // With the password, both work.
    for confirm_role in [true, false] {
        let pool = pool_with(ConnectOptions::tcp(HOST, 0).auth(None, "x"), confirm_role);
        let pong: String = pool.get().unwrap().query(["PING"]).unwrap();
        assert_eq!(pong, "PONG");
        assert_eq!(pool.stats().total, 1);
    }
}
