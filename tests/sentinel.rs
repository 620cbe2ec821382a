#![cfg(feature = "sentinel")]
//! Redis Sentinel against real processes: a primary, two replicas and three
//! sentinels (tests/support/sentinel.rs), shared by the tests that do not
//! fail over; the two failover tests start their own. Scripted fake
//! sentinels (tests/fake_cluster) stand in for sentinels that lie.

mod fake_cluster;
mod support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fake_cluster::fake_sentinel;
use respline::sentinel::SENTINEL_TIMEOUT;
use respline::{Addr, ConnectOptions, Connection, Error, Pipeline, Sentinel, SentinelOptions};
use support::sentinel::{
    check_writes, conn_port, port_of, shared, TestSentinels, Write, PRIMARY_NAME,
};
use support::HOST;

fn tcp(port: u16) -> Addr {
    Addr::Tcp {
        host: HOST.to_string(),
        port,
    }
}

fn url(port: u16) -> String {
    format!("redis://{}:{}", HOST, port)
}

/// A loopback port nothing listens on (bound a moment ago, then freed).
fn dead_port() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).expect("bind a loopback port");
    listener.local_addr().unwrap().port()
}

/// A sentinel handle on `ports`, in that order.
fn handle(ports: &[u16]) -> Sentinel {
    let urls: Vec<String> = ports.iter().map(|&p| url(p)).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Sentinel::open(&urls, PRIMARY_NAME).unwrap()
}

#[test]
fn the_lookup_finds_the_primary_which_takes_writes_and_replicas_serve_reads() {
    let group = shared();
    let sentinel = handle(&group.sentinel_ports());
    assert_eq!(sentinel.current_primary(), None);
    assert_eq!(sentinel.primary_addr().unwrap(), tcp(group.primary_port()));
    assert_eq!(sentinel.current_primary(), Some(tcp(group.primary_port())));

    let mut primary = sentinel.connect_primary().unwrap();
    assert_eq!(conn_port(&primary), group.primary_port());
    assert!(sentinel.owns(&primary));
    primary
        .execute(["SET", "sentinel:greeting", "hello"])
        .unwrap();
    let greeting: String = primary.query(["GET", "sentinel:greeting"]).unwrap();
    assert_eq!(greeting, "hello");
    let replicated: i64 = primary.query(["WAIT", "2", "2000"]).unwrap();
    assert_eq!(replicated, 2);

    // Replicas, in turn: two calls reach both.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let mut replica = sentinel.connect_replica().unwrap();
        let port = conn_port(&replica);
        assert!(group.replica_ports().contains(&port), "{}", port);
        assert_eq!(group.role(port), "slave");
        let read: Option<String> = replica.query(["GET", "sentinel:greeting"]).unwrap();
        assert_eq!(read.as_deref(), Some("hello"));
        assert!(!sentinel.owns(&replica), "a replica is not the primary");
        seen.push(port);
    }
    seen.sort_unstable();
    let mut replicas = group.replica_ports();
    replicas.sort_unstable();
    assert_eq!(seen, replicas);
    assert_eq!(sentinel.changes(), 0);
}

#[test]
fn a_dead_first_sentinel_is_passed_over_promptly_and_the_one_that_answers_moves_to_the_front() {
    let group = shared();
    let real = group.sentinel_ports();
    let dead = dead_port();
    let sentinel = handle(&[dead, real[1], real[0], real[2]]);
    let started = Instant::now();
    let found = sentinel.primary_addr().unwrap();
    let past_dead = started.elapsed();
    assert_eq!(found, tcp(group.primary_port()));
    assert!(
        past_dead < SENTINEL_TIMEOUT,
        "the lookup took {:?}",
        past_dead
    );
    assert_eq!(sentinel.sentinels()[0], tcp(real[1]));
    assert!(sentinel.sentinels().contains(&tcp(dead)), "seeds are kept");

    // A sentinel that accepts but never answers costs one short timeout.
    let silent = TcpListener::bind((HOST, 0)).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let sentinel = handle(&[silent_port, real[2]]);
    let started = Instant::now();
    assert_eq!(sentinel.primary_addr().unwrap(), tcp(group.primary_port()));
    let took = started.elapsed();
    assert!(
        took >= SENTINEL_TIMEOUT && took < SENTINEL_TIMEOUT * 3,
        "the lookup took {:?}",
        took
    );
    assert_eq!(sentinel.sentinels()[0], tcp(real[2]));
    println!(
        "lookup past a dead sentinel: {:?}; past a silent one: {:?}",
        past_dead, took
    );
}

#[test]
fn an_unknown_name_and_unreachable_sentinels_are_distinct_errors() {
    let group = shared();
    let urls = group.sentinel_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let sentinel = Sentinel::open(&urls, "no-such-primary").unwrap();
    let err = sentinel.connect_primary().unwrap_err();
    match &err {
        Error::UnknownPrimary { name } => assert_eq!(name, "no-such-primary"),
        other => panic!("expected UnknownPrimary, got {:?}", other),
    }
    assert!(!err.may_have_reached_server());
    assert!(
        err.to_string()
            .contains("expected a primary named \"no-such-primary\""),
        "{}",
        err
    );

    let dead = [dead_port(), dead_port(), dead_port()];
    let sentinel = handle(&dead);
    let started = Instant::now();
    let err = sentinel.connect_primary().unwrap_err();
    match &err {
        Error::NoSentinel { tried, last } => {
            assert_eq!(*tried, 3);
            assert!(last.is_io(), "{:?}", last);
        }
        other => panic!("expected NoSentinel, got {:?}", other),
    }
    assert!(
        started.elapsed() < SENTINEL_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    assert!(!err.may_have_reached_server());
    assert!(
        err.to_string().starts_with(
            "sentinel: expected a sentinel to answer the primary lookup, none of the 3 tried did"
        ),
        "{}",
        err
    );
    // Replicas too: no sentinel, no replica, and the same error.
    assert!(matches!(
        sentinel.connect_replica(),
        Err(Error::NoSentinel { tried: 3, .. })
    ));
}

#[test]
fn a_fake_sentinel_naming_a_replica_is_rejected_by_role() {
    let group = shared();
    let replica = group.replica_ports()[0];
    let fake = fake_sentinel(Arc::new(AtomicU16::new(replica)));
    let mut ports = vec![fake.port()];
    ports.extend(group.sentinel_ports());
    let sentinel = handle(&ports);
    assert_eq!(sentinel.primary_addr().unwrap(), tcp(group.primary_port()));
    assert_eq!(fake.count(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME"]), 1);
    assert_eq!(sentinel.sentinels()[0], tcp(group.sentinel_ports()[0]));

    // Alone, it is asked again after pauses until the lookup's bound, and
    // the error says what the address said.
    let bound = Duration::from_millis(400);
    let sentinel = SentinelOptions::new(&[&url(fake.port())], PRIMARY_NAME)
        .unwrap()
        .lookup_timeout(bound)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = sentinel.connect_primary().unwrap_err();
    let took = started.elapsed();
    match &err {
        Error::NotPrimary { addr, role } => {
            assert_eq!(&**addr, format!("127.0.0.1:{}", replica));
            assert_eq!(&**role, "slave");
        }
        other => panic!("expected NotPrimary, got {:?}", other),
    }
    assert!(!err.may_have_reached_server());
    assert!(took < bound + Duration::from_millis(300), "{:?}", took);
    assert!(
        fake.count(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME"]) >= 4,
        "{:?}",
        fake.log_text()
    );
    assert_eq!(sentinel.current_primary(), None);
}

#[test]
fn sentinels_are_learned_from_one_seed() {
    let group = shared();
    let seed = group.sentinel_ports()[1];
    let sentinel = handle(&[seed]);
    sentinel.primary_addr().unwrap();
    let mut known: Vec<u16> = sentinel.sentinels().iter().map(port_of).collect();
    assert_eq!(known[0], seed);
    known.sort_unstable();
    let mut all = group.sentinel_ports();
    all.sort_unstable();
    assert_eq!(known, all);
    // A second lookup keeps them, without duplicates.
    sentinel.primary_addr().unwrap();
    assert_eq!(sentinel.sentinels().len(), 3);
}

#[test]
fn a_readonly_reply_ends_ownership_and_owns_looks_the_primary_up_again() {
    let group = shared();
    let replica = group.replica_ports()[1];

    // A connection opened by hand, from the data options, to a replica.
    let mut by_hand = Connection::connect(&ConnectOptions::tcp(HOST, replica)).unwrap();
    let err = by_hand.execute(["SET", "k", "v"]).unwrap_err();
    assert_eq!(err.server_error().unwrap().code(), "READONLY");
    let sentinel = handle(&group.sentinel_ports());
    assert!(!sentinel.owns(&by_hand));

    // A sentinel that names the replica as the primary, believed without
    // ROLE: the connection is owned until the READONLY reply arrives.
    let answer = Arc::new(AtomicU16::new(replica));
    let fake = fake_sentinel(answer.clone());
    let sentinel = SentinelOptions::new(&[&url(fake.port())], PRIMARY_NAME)
        .unwrap()
        .confirm_role(false)
        .build()
        .unwrap();
    let mut conn = sentinel.connect_primary().unwrap();
    assert_eq!(conn_port(&conn), replica);
    let _: Option<String> = conn.query(["GET", "k"]).unwrap();
    assert!(sentinel.owns(&conn));
    // Meanwhile the sentinel learns the real primary.
    answer.store(group.primary_port(), Ordering::SeqCst);
    let err = conn.execute(["SET", "k", "v"]).unwrap_err();
    assert_eq!(err.server_error().unwrap().code(), "READONLY");
    assert!(
        !conn.is_broken(),
        "an error reply leaves the connection usable"
    );
    // (A lookup ended less than 250 ms ago: owns() would not ask again yet.)
    thread::sleep(Duration::from_millis(300));
    let asked = fake.count(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME"]);
    assert!(!sentinel.owns(&conn));
    assert_eq!(
        fake.count(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME"]),
        asked + 1
    );
    assert_eq!(sentinel.current_primary(), Some(tcp(group.primary_port())));
    assert_eq!(sentinel.changes(), 1);
    // Right after that lookup, another owns() asks nothing.
    assert!(!sentinel.owns(&conn));
    assert_eq!(
        fake.count(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME"]),
        asked + 1
    );
    let fresh = sentinel.connect_primary().unwrap();
    assert!(sentinel.owns(&fresh));
}

#[test]
fn a_manual_failover_is_followed_by_the_next_connect() {
    let started = Instant::now();
    let group = TestSentinels::start(1000);
    let setup = started.elapsed();
    let old = group.primary_port();
    let sentinel = handle(&group.sentinel_ports());
    let mut before = sentinel.connect_primary().unwrap();
    assert_eq!(conn_port(&before), old);
    before.execute(["SET", "failover:k", "before"]).unwrap();
    let _: i64 = before.query(["WAIT", "2", "2000"]).unwrap();
    assert!(sentinel.owns(&before));
    assert_eq!(sentinel.changes(), 0);

    let failover_at = Instant::now();
    group.failover();
    // Reconnect through the sentinels until the primary moved.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempts = 0;
    let mut conn = loop {
        attempts += 1;
        if let Ok(conn) = sentinel.connect_primary() {
            if conn_port(&conn) != old {
                break conn;
            }
        }
        assert!(Instant::now() < deadline, "{}", group.log_tails());
        thread::sleep(Duration::from_millis(50));
    };
    let moved_after = failover_at.elapsed();
    let new = conn_port(&conn);
    assert!(group.replica_ports().contains(&new), "{}", new);
    assert_eq!(group.role(new), "master");
    assert_eq!(sentinel.current_primary(), Some(tcp(new)));
    assert!(sentinel.changes() >= 1);
    assert!(!sentinel.owns(&before), "a connection to the old primary");
    assert!(sentinel.owns(&conn));
    let value: String = conn.query(["GET", "failover:k"]).unwrap();
    assert_eq!(value, "before");
    conn.execute(["SET", "failover:k", "after"]).unwrap();
    println!(
        "setup {:?}; the next connects reached the new primary {:?} after SENTINEL FAILOVER ({} attempts)",
        setup, moved_after, attempts
    );
}

#[test]
fn a_killed_primary_is_replaced_and_writes_resume_by_themselves() {
    let started = Instant::now();
    let mut group = TestSentinels::start(1000);
    let setup = started.elapsed();
    let old = group.primary_port();
    let sentinel = SentinelOptions::new(
        &group
            .sentinel_urls()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        PRIMARY_NAME,
    )
    .unwrap()
    .node(ConnectOptions::tcp(HOST, 0).read_timeout(Some(Duration::from_millis(500))))
    .build()
    .unwrap();

    let mut writes: Vec<Write> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut conn = Some(sentinel.connect_primary().unwrap());
    let mut resumed_at = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    // kill -9 from another thread, at whatever point the writes are.
    let killed_at = thread::scope(|s| {
        let killer = s.spawn(|| {
            thread::sleep(Duration::from_millis(300));
            group.kill(old);
            Instant::now()
        });
        // Write until a second after the writes resumed on the new primary.
        let mut i = 0;
        while resumed_at.map_or(true, |t: Instant| t.elapsed() < Duration::from_secs(1)) {
            assert!(
                Instant::now() < deadline,
                "writes did not resume: {:#?}",
                errors
            );
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match sentinel.connect_primary() {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        assert!(!e.may_have_reached_server(), "{}", e);
                        errors.push(format!("connect: {}", e));
                        continue;
                    }
                },
            };
            let key = format!("kill:{}", i);
            i += 1;
            let by = conn_port(c);
            match c.execute(["SET", key.as_str(), "1"]) {
                Ok(_) if by == old => {
                    // Acknowledged; replicated to both replicas?
                    let replicas = match c.query::<i64>(["WAIT", "2", "100"]) {
                        Ok(n) => n,
                        Err(e) => {
                            errors.push(format!("WAIT after SET {}: {}", key, e));
                            conn = None;
                            0
                        }
                    };
                    writes.push(Write {
                        key,
                        acked_by: Some(by),
                        replicas,
                        may_have_run: true,
                    });
                }
                Ok(_) => {
                    resumed_at.get_or_insert_with(Instant::now);
                    writes.push(Write {
                        key,
                        acked_by: Some(by),
                        replicas: 0,
                        may_have_run: true,
                    });
                }
                Err(e) => {
                    errors.push(format!(
                        "SET {} (may have run: {}): {}",
                        key,
                        e.may_have_reached_server(),
                        e
                    ));
                    writes.push(Write {
                        key,
                        acked_by: None,
                        replicas: 0,
                        may_have_run: e.may_have_reached_server(),
                    });
                    conn = None;
                }
            }
        }
        killer.join().unwrap()
    });
    let resumed_after = resumed_at.unwrap().duration_since(killed_at);
    let new = group.wait_for_new_primary(old);
    assert!(group.replica_ports().contains(&new));
    assert!(sentinel.changes() >= 1);
    assert_eq!(sentinel.current_primary(), Some(tcp(new)));

    // Every write acknowledged by the new primary, or by the old one with
    // both replicas confirmed by WAIT, is on the new primary; a write whose
    // error said it could not have run is not.
    let mut reader = sentinel.connect_primary().unwrap();
    assert_eq!(conn_port(&reader), new);
    let mut gets = Pipeline::new();
    for w in &writes {
        gets.cmd(["GET", w.key.as_str()]);
    }
    let found: Vec<Option<String>> = gets.query(&mut reader).unwrap();
    let tally = check_writes(&writes, found, new);
    assert!(
        errors.len() <= 10,
        "expected a few errors in the window, got {}: {:#?}",
        errors.len(),
        errors
    );
    assert!(writes.iter().filter(|w| w.acked_by == Some(new)).count() > 0);
    // The dead former primary is never handed out as a replica.
    for _ in 0..4 {
        let replica = sentinel.connect_replica().unwrap();
        assert_ne!(conn_port(&replica), old);
    }
    println!(
        "setup {:?}; writes resumed {:?} after kill -9; {} writes, {} errors: {:#?}; \
         acked by the old primary with fewer than 2 replicas confirmed: {} ({} lost); \
         failed writes that may have run: {} ({} did)",
        setup,
        resumed_after,
        writes.len(),
        errors.len(),
        errors,
        tally.weak,
        tally.lost_weak,
        tally.unknown,
        tally.unknown_ran
    );
}

#[test]
fn a_sentinel_url_names_the_sentinels_the_primary_and_the_data_nodes_database() {
    let group = shared();
    let hosts: Vec<String> = group
        .sentinel_ports()
        .iter()
        .map(|p| format!("{}:{}", HOST, p))
        .collect();
    let url = format!(
        "redis+sentinel://{}/{}/3?client_name=via-url",
        hosts.join(","),
        PRIMARY_NAME
    );
    let sentinel = SentinelOptions::from_url(&url).unwrap().build().unwrap();
    let mut conn = sentinel.connect_primary().unwrap();
    assert_eq!(conn_port(&conn), group.primary_port());
    let info: String = conn.query(["CLIENT", "INFO"]).unwrap();
    assert!(info.contains(" db=3 "), "{}", info);
    assert!(info.contains(" name=via-url "), "{}", info);

    // A sentinel gets neither the database nor the name: only SENTINEL commands.
    let fake = fake_sentinel(Arc::new(AtomicU16::new(group.primary_port())));
    let url = format!(
        "redis+sentinel://{}:{}/{}/3?client_name=via-url",
        HOST,
        fake.port(),
        PRIMARY_NAME
    );
    let sentinel = SentinelOptions::from_url(&url).unwrap().build().unwrap();
    let conn = sentinel.connect_primary().unwrap();
    assert_eq!(conn.options().unwrap().db, 3);
    let log = fake.log_text();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|(_, args)| args[0] == "SENTINEL"),
        "{:?}",
        log
    );
}
