#![cfg(feature = "cluster")]
//! Tests of the cluster test harness itself: tests/support/cluster.rs (a
//! real Redis Cluster with fault injection) and tests/fake_cluster (scripted
//! fake nodes). Nothing here uses the crate under test. Each step prints
//! how long it took (`cargo test --test cluster_harness -- --nocapture`).

mod fake_cluster;
mod support;

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fake_cluster::{
    array, ask, bulk, cluster_slots, default_handshake, err, fake_node_id, int, moved, nil, ok,
    Answer, FakeNode,
};
use support::cluster::{
    self, key_slot, keys_in_slot, parse_reply, Reply, Role, TestCluster, SLOTS,
};

fn timing(step: &str, took: Duration) {
    eprintln!("[timing] {}: {:?}", step, took);
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------- real cluster

#[test]
fn shared_cluster_topology_accessors_and_call_counts() {
    let began = Instant::now();
    let c = cluster::shared();
    timing("shared 3+3 cluster, first use", began.elapsed());
    timing("shared 3+3 cluster, start to ready", c.startup_time());

    // Counting first, while nothing else has touched the cluster: the
    // harness's own checks and accessors are not counted, raw calls are.
    assert_eq!(c.total_calls("cluster|slots"), 0);
    let _ = c.nodes();
    let _ = c.primary_for_slot(0);
    for port in c.ports() {
        let _ = c.cluster_slots(port);
    }
    c.wait_until_healthy();
    assert_eq!(
        c.total_calls("cmdstat_cluster|slots"),
        0,
        "accessors and health checks must not count"
    );
    let ports = c.ports();
    for port in &ports[..3] {
        let reply = c.query(*port, &["cluster", "slots"]);
        assert!(matches!(reply, Reply::Array(_)), "{:?}", reply);
    }
    assert_eq!(c.total_calls("cluster|slots"), 3);
    assert_eq!(c.calls_on(ports[0], "cluster|slots"), 1);
    assert_eq!(c.calls_on(ports[4], "cluster|slots"), 0);

    // Roles.
    let nodes = c.nodes();
    assert_eq!(nodes.len(), 6);
    let primaries: Vec<_> = nodes.iter().filter(|n| n.role == Role::Primary).collect();
    let replicas: Vec<_> = nodes.iter().filter(|n| n.role == Role::Replica).collect();
    assert_eq!((primaries.len(), replicas.len()), (3, 3), "{:?}", nodes);
    let mut primary_ports: Vec<u16> = primaries.iter().map(|n| n.port).collect();
    primary_ports.sort_unstable();
    assert_eq!(c.primaries(), primary_ports);
    for node in &nodes {
        assert!(node.alive && node.pid > 0, "{:?}", node);
        assert!(Path::new(&format!("/proc/{}", node.pid)).exists());
        assert_ne!(node.port, 6379);
        let myid = c.query(node.port, &["CLUSTER", "MYID"]).as_text();
        assert_eq!(node.id, myid);
        assert_eq!(c.node_id(node.port), myid);
        assert_eq!(c.port_of_id(&myid), Some(node.port));
        assert_eq!(c.pid(node.port), node.pid);
    }
    for r in &replicas {
        let primary = primaries
            .iter()
            .find(|p| Some(&p.id) == r.primary_id.as_ref())
            .unwrap_or_else(|| panic!("replica {:?} has no primary among {:?}", r, primaries));
        assert_eq!(c.replicas_of(primary.port), vec![r.port]);
    }
    assert_eq!(
        c.seed_urls(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{}", p))
            .collect::<Vec<_>>()
    );

    // Accessors against every node's own CLUSTER SLOTS, walked here by hand.
    for &port in &ports {
        let reply = c.query(port, &["CLUSTER", "SLOTS"]);
        let mut covered = 0u32;
        for range in reply.as_array() {
            let parts = range.as_array();
            let (start, end) = (parts[0].as_int() as u16, parts[1].as_int() as u16);
            covered += (end - start) as u32 + 1;
            let node = |i: usize| parts[i].as_array();
            // Redis 7.0: host, port, id, hostname metadata.
            assert_eq!(node(2).len(), 4, "{:?}", parts[2]);
            assert_eq!(node(2)[0].as_text(), "127.0.0.1");
            let primary = node(2)[1].as_int() as u16;
            assert_eq!(node(2)[2].as_text(), c.node_id(primary));
            assert_eq!(c.primary_for_slot(start), primary);
            assert_eq!(c.primary_for_slot(end), primary);
            let listed: Vec<u16> = (3..parts.len())
                .map(|i| node(i)[1].as_int() as u16)
                .collect();
            assert_eq!(
                listed,
                c.replicas_of(primary),
                "node {} range {}",
                port,
                start
            );
        }
        assert_eq!(covered, SLOTS as u32);
        assert_eq!(c.cluster_slots(port), c.cluster_slots(ports[0]));
    }

    // The harness's slot function agrees with the server.
    for key in [
        "foo",
        "bar",
        "123456789",
        "{user1000}.following",
        "{}x",
        "a{b}c{d}",
        "{",
        "}{x}",
    ] {
        let server = c.query(ports[0], &["CLUSTER", "KEYSLOT", key]).as_int();
        assert_eq!(key_slot(key.as_bytes()) as i64, server, "key {:?}", key);
    }
    for key in keys_in_slot(1234, 3) {
        assert_eq!(key_slot(key.as_bytes()), 1234);
    }

    // A write to the right node, read back; the wrong node redirects.
    let key = "harness:greeting";
    let owner = c.primary_for_key(key);
    assert!(c.query(owner, &["SET", key, "hello"]).is_ok());
    assert_eq!(c.query(owner, &["GET", key]).as_bytes(), b"hello");
    assert_eq!(c.calls_on(owner, "set"), 1);
    let other = *primary_ports.iter().find(|&&p| p != owner).unwrap();
    let redirect = c.query(other, &["GET", key]);
    assert_eq!(
        redirect.error(),
        Some(format!("MOVED {} 127.0.0.1:{}", key_slot(key.as_bytes()), owner).as_str())
    );
    // Pipelined on one connection: the write replicates.
    let replies = c.query_pipelined(owner, &[&["SET", key, "again"], &["WAIT", "1", "2000"]]);
    assert_eq!(replies, vec![Reply::Status("OK".into()), Reply::Int(1)]);

    // A fake CLUSTER SLOTS has the same shape as the real one.
    let fake = parse_reply(&cluster_slots(&[(0, 16383, &[("127.0.0.1", 7000)])]));
    let real = c.query(ports[0], &["CLUSTER", "SLOTS"]);
    let shape = |r: &Reply| -> Vec<usize> {
        let range = r.as_array()[0].as_array();
        range[2..]
            .iter()
            .map(|n| n.as_array().len())
            .take(1)
            .collect()
    };
    assert_eq!(shape(&fake), shape(&real));
}

#[test]
fn migrate_slot_shows_ask_then_the_new_owner_serves_every_key() {
    let began = Instant::now();
    let c = TestCluster::start(3, 1);
    timing(
        "own 3+3 cluster (migrate test), start to ready",
        began.elapsed(),
    );

    let slot = 100;
    let keys = keys_in_slot(slot, 50);
    let from = c.primary_for_slot(slot);
    let to = *c.primaries().iter().find(|&&p| p != from).unwrap();
    for key in &keys {
        assert!(c.query(from, &["SET", key.as_str(), key.as_str()]).is_ok());
    }

    // A reader hammers the source while the slot migrates in batches.
    let done = AtomicBool::new(false);
    let asks = AtomicUsize::new(0);
    let first_ask: Mutex<Option<(String, Vec<Reply>)>> = Mutex::new(None);
    let migrate_took = thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                for key in &keys {
                    let reply = c.query(from, &["GET", key.as_str()]);
                    match reply.error() {
                        Some(e) if e.starts_with("ASK ") => {
                            asks.fetch_add(1, Ordering::SeqCst);
                            let mut first = first_ask.lock().unwrap();
                            if first.is_none() {
                                // ASKING then GET on one connection to the target.
                                let on_target =
                                    c.query_pipelined(to, &[&["ASKING"], &["GET", key.as_str()]]);
                                *first = Some((e.to_string(), on_target));
                            }
                        }
                        // Once the source has handed the slot over.
                        Some(e) if e == format!("MOVED {} 127.0.0.1:{}", slot, to) => {}
                        Some(e) => panic!(
                            "expected a value, -ASK or -MOVED to {} for {}, got -{}",
                            to, key, e
                        ),
                        None => assert_eq!(reply.as_bytes(), key.as_bytes()),
                    }
                }
            }
        });
        let t = Instant::now();
        let moved = c.migrate_slot(slot, to, 10, Duration::from_millis(40));
        let took = t.elapsed();
        done.store(true, Ordering::SeqCst);
        assert_eq!(moved, 50);
        took
    });
    timing(
        "migrate_slot of 50 keys, batch 10, pause 40 ms",
        migrate_took,
    );
    let asks = asks.load(Ordering::SeqCst);
    eprintln!("[info] the reader saw -ASK {} times", asks);
    assert!(asks >= 1, "expected at least one -ASK during the migration");
    let (ask_text, on_target) = first_ask.into_inner().unwrap().unwrap();
    assert!(
        ask_text.starts_with(&format!("ASK {} 127.0.0.1:{}", slot, to)),
        "{}",
        ask_text
    );
    assert_eq!(on_target[0], Reply::Status("OK".into()));
    assert!(matches!(on_target[1], Reply::Bulk(_)), "{:?}", on_target);

    // Afterwards the target owns the slot everywhere.
    assert_eq!(c.primary_for_slot(slot), to);
    for key in &keys {
        assert_eq!(
            c.query(to, &["GET", key.as_str()]).as_bytes(),
            key.as_bytes()
        );
        let redirect = c.query(from, &["GET", key.as_str()]);
        assert_eq!(
            redirect.error(),
            Some(format!("MOVED {} 127.0.0.1:{}", slot, to).as_str())
        );
    }
    let count = |port: u16| {
        c.query(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
            .as_int()
    };
    assert_eq!((count(from), count(to)), (0, 50));
    for port in c.ports() {
        let slots = c.cluster_slots(port);
        let range = slots
            .iter()
            .find(|r| r.start <= slot && slot <= r.end)
            .unwrap();
        assert_eq!(range.primary, to, "node {}: {:?}", port, slots);
    }
    // The migrated keys reach the target's replica.
    let replica = c.replicas_of(to)[0];
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(replica) != 50 {
        assert!(
            Instant::now() < deadline,
            "expected 50 keys on replica {} of {}, got {}",
            replica,
            to,
            count(replica)
        );
        thread::sleep(Duration::from_millis(20));
    }

    // Back again, checking the half-migrated slot after every batch
    // without threads.
    let mut batches = 0;
    let t = Instant::now();
    let moved = c.migrate_slot_with(slot, from, 20, Duration::ZERO, |batch| {
        batches += 1;
        assert_eq!((batch.from, batch.to), (to, from));
        for key in &batch.keys {
            let key = String::from_utf8(key.clone()).unwrap();
            let reply = c.query(to, &["GET", key.as_str()]);
            assert_eq!(
                reply.error(),
                Some(format!("ASK {} 127.0.0.1:{}", slot, from).as_str())
            );
            // Without ASKING the target sends the client back.
            let reply = c.query(from, &["GET", key.as_str()]);
            assert_eq!(
                reply.error(),
                Some(format!("MOVED {} 127.0.0.1:{}", slot, to).as_str())
            );
            let replies = c.query_pipelined(from, &[&["ASKING"], &["GET", key.as_str()]]);
            assert_eq!(replies[1].as_bytes(), key.as_bytes());
        }
    });
    timing(
        "migrate_slot_with of 50 keys back, batch 20, no pause",
        t.elapsed(),
    );
    assert_eq!((moved, batches), (50, 3));
    assert_eq!(c.primary_for_slot(slot), from);
}

#[test]
fn failover_then_kill_promotion_and_restart() {
    let began = Instant::now();
    let c = TestCluster::start(3, 1);
    timing(
        "own 3+3 cluster (failover test), start to ready",
        began.elapsed(),
    );

    let key = keys_in_slot(0, 1).remove(0);
    let key = key.as_str();
    let first = c.primary_for_slot(0);
    let second = c.replicas_of(first)[0];
    assert!(c.query(first, &["SET", key, "one"]).is_ok());

    // Coordinated failover: roles swap, nothing acknowledged is lost.
    let t = Instant::now();
    c.failover(second);
    timing("failover (CLUSTER FAILOVER until healthy)", t.elapsed());
    assert_eq!(c.primary_for_slot(0), second);
    assert_eq!(c.replicas_of(second), vec![first]);
    let info = c.nodes();
    let old = info.iter().find(|n| n.port == first).unwrap();
    assert_eq!(old.role, Role::Replica);
    assert_eq!(old.primary_id.as_deref(), Some(c.node_id(second).as_str()));
    assert_eq!(c.query(second, &["GET", key]).as_bytes(), b"one");
    assert_eq!(
        c.query(first, &["GET", key]).error(),
        Some(format!("MOVED 0 127.0.0.1:{}", second).as_str())
    );
    let replies = c.query_pipelined(second, &[&["SET", key, "two"], &["WAIT", "1", "2000"]]);
    assert_eq!(replies[1], Reply::Int(1), "{:?}", replies);

    // kill -9 the new primary while a reader watches an unrelated slot.
    let elsewhere = keys_in_slot(16383, 1).remove(0);
    let elsewhere_owner = c.primary_for_slot(16383);
    assert_ne!(elsewhere_owner, second);
    let old_pid = c.pid(second);
    let stop = AtomicBool::new(false);
    let (promoted, took, down) = thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut down: Option<(Instant, Instant)> = None;
            while !stop.load(Ordering::SeqCst) {
                let reply = c.query(elsewhere_owner, &["GET", elsewhere.as_str()]);
                if let Some(e) = reply.error() {
                    assert!(e.starts_with("CLUSTERDOWN"), "{}", e);
                    let now = Instant::now();
                    down = Some((down.map_or(now, |d| d.0), now));
                }
                thread::sleep(Duration::from_millis(5));
            }
            down
        });
        let t = Instant::now();
        c.kill_primary(second);
        let promoted = c.wait_for_promotion_of_replica_of(second);
        let took = t.elapsed();
        stop.store(true, Ordering::SeqCst);
        (promoted, took, reader.join().unwrap())
    });
    timing("kill_primary + wait_for_promotion_of_replica_of", took);
    match down {
        Some((a, b)) => eprintln!(
            "[info] an unrelated slot answered -CLUSTERDOWN for about {:?}",
            b - a
        ),
        None => eprintln!("[info] an unrelated slot never answered -CLUSTERDOWN"),
    }
    assert_eq!(promoted, first);
    assert!(!c.is_alive(second));
    assert_eq!(c.primary_for_slot(0), first);
    assert_eq!(c.query(first, &["GET", key]).as_bytes(), b"two");
    let dead = c.nodes().into_iter().find(|n| n.port == second).unwrap();
    assert!(!dead.alive);

    // Back from the dead as a replica of its successor.
    let t = Instant::now();
    c.restart(second);
    timing("restart of the killed primary until healthy", t.elapsed());
    assert_ne!(c.pid(second), old_pid);
    assert_eq!(c.replicas_of(first), vec![second]);
    assert_eq!(c.primary_for_slot(0), first);
}

// ------------------------------------------------------------- orphan proofs

const PROBE_ENV: &str = "RESPLINE_CLUSTER_ORPHAN_PROBE";

/// Only does something when run by `nodes_die_with_the_test_process` as a
/// child process (with the environment variable set): starts a cluster,
/// prints its pids and directories, then either returns (the process then
/// exits without dropping the shared cluster) or waits to be killed (or,
/// should the parent die first, for its stdin to end).
#[test]
fn orphan_probe_child() {
    let mode = match std::env::var(PROBE_ENV) {
        Ok(mode) => mode,
        Err(_) => return,
    };
    let c: &TestCluster = match mode.as_str() {
        "exit" => cluster::shared(),
        "kill" => Box::leak(Box::new(TestCluster::start(3, 0))),
        other => panic!("expected {}=exit or kill, got {:?}", PROBE_ENV, other),
    };
    let pids: Vec<String> = c.ports().iter().map(|&p| c.pid(p).to_string()).collect();
    let dirs: Vec<String> = c
        .ports()
        .iter()
        .map(|&p| c.dir(p).display().to_string())
        .collect();
    println!("PROBE {} {}", pids.join(","), dirs.join(","));
    std::io::stdout().flush().unwrap();
    if mode == "kill" {
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
    }
}

/// Kills a child process when dropped, so a failing test leaves none.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a redis-server with this pid still runs (a zombie does not).
fn redis_alive(pid: u32) -> bool {
    let comm = fs::read_to_string(format!("/proc/{}/comm", pid)).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{}/stat", pid)).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    comm.trim() == "redis-server" && state.is_some() && state != Some('Z')
}

#[test]
fn nodes_die_with_the_test_process() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut runs = Vec::new();
    for mode in ["exit", "kill"] {
        let mut child = Command::new(&exe)
            .args([
                "orphan_probe_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROBE_ENV, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the test binary as a child");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let seen = output.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest prints "test orphan_probe_child ... " first.
                if let Some(at) = line.find("PROBE ") {
                    let _ = tx.send(line[at + 6..].to_string());
                }
                seen.lock().unwrap().push_str(&format!("{}\n", line));
            }
        });
        let stderr = child.stderr.take().unwrap();
        let seen = output.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                seen.lock().unwrap().push_str(&format!("{}\n", line));
            }
        });
        runs.push((mode, KillOnDrop(child), rx, output));
    }
    for (mode, mut child, rx, output) in runs {
        let t = Instant::now();
        let line = match rx.recv_timeout(Duration::from_secs(40)) {
            Ok(line) => line,
            Err(e) => {
                panic!(
                    "expected the {} probe to print its pids, got {:?}; it wrote:\n{}",
                    mode,
                    e,
                    output.lock().unwrap()
                );
            }
        };
        let mut parts = line.split(' ');
        let pids: Vec<u32> = parts
            .next()
            .unwrap()
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        let dirs: Vec<PathBuf> = parts
            .next()
            .unwrap()
            .split(',')
            .map(PathBuf::from)
            .collect();
        assert!(
            pids.iter().all(|&p| redis_alive(p)),
            "{} probe: {:?}",
            mode,
            pids
        );
        if mode == "kill" {
            child.0.kill().unwrap();
        }
        let status = child.0.wait().unwrap();
        if mode == "exit" {
            assert!(
                status.success(),
                "the exit probe failed with {}:\n{}",
                status,
                output.lock().unwrap()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let alive: Vec<u32> = pids.iter().copied().filter(|&p| redis_alive(p)).collect();
            let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
            if alive.is_empty() && left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "expected the {} probe's nodes gone within 5 s of its end, still running: {:?}, dirs left: {:?}",
                mode,
                alive,
                left
            );
            thread::sleep(Duration::from_millis(20));
        }
        timing(
            &format!(
                "orphan probe ({}): child run until its nodes were gone",
                mode
            ),
            t.elapsed(),
        );
    }
}

// ---------------------------------------------------------------- fake nodes

/// Reads exactly `n` whole replies from `stream` (5 s at most).
fn read_replies(stream: &mut TcpStream, n: usize) -> Vec<Reply> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut at = 0;
        let mut replies = Vec::new();
        while let Some(len) = support::reply_len(&buf[at..]) {
            replies.push(parse_reply(&buf[at..at + len]));
            at += len;
            if replies.len() == n {
                assert_eq!(
                    at,
                    buf.len(),
                    "expected {} replies, got more: {:?}",
                    n,
                    text(&buf)
                );
                return replies;
            }
        }
        let got = stream
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("expected {} replies, got {:?} then {}", n, text(&buf), e));
        assert!(
            got > 0,
            "expected {} replies, got EOF after {:?}",
            n,
            text(&buf)
        );
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// Reads until EOF (5 s at most) and returns everything.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut all = Vec::new();
    stream
        .read_to_end(&mut all)
        .unwrap_or_else(|e| panic!("expected EOF, got {} after {:?}", e, text(&all)));
    all
}

fn connect(node: &FakeNode) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", node.port())).expect("connect to a fake node");
    stream.set_nodelay(true).unwrap();
    stream
}

#[test]
fn fake_node_answers_pipelined_and_split_commands_in_order() {
    let node = FakeNode::start(|req| {
        if let Some(answer) = default_handshake(req) {
            return answer;
        }
        match req.name().as_str() {
            "GET" => Answer::Reply(bulk(&req.args[1])),
            "INDEX" => Answer::Reply(int(req.index as i64)),
            "CONN" => Answer::Reply(int(req.conn as i64)),
            _ => Answer::Reply(err("ERR unknown command")),
        }
    });
    let mut s = connect(&node);
    let mut pipeline = Vec::new();
    for cmd in [
        &["PING"][..],
        &["GET", "a"],
        &["INDEX"],
        &["HELLO", "3"],
        &["CLUSTER", "SLOTS"],
    ] {
        pipeline.extend(support::encode(cmd));
    }
    s.write_all(&pipeline).unwrap();
    let replies = read_replies(&mut s, 5);
    assert_eq!(replies[0], Reply::Status("PONG".into()));
    assert_eq!(replies[1], Reply::Bulk(b"a".to_vec()));
    assert_eq!(replies[2], Reply::Int(2));
    assert!(replies[3]
        .error()
        .unwrap()
        .starts_with("ERR unknown command"));
    // CLUSTER SLOTS is the handler's business, not default_handshake's.
    assert_eq!(replies[4], Reply::Error("ERR unknown command".into()));

    // One command in three pieces, then an inline command.
    let split = support::encode(&["GET", "split-key"]);
    for piece in [&split[..3], &split[3..11], &split[11..]] {
        s.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(
        read_replies(&mut s, 1),
        vec![Reply::Bulk(b"split-key".to_vec())]
    );
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_replies(&mut s, 1), vec![Reply::Status("PONG".into())]);

    let mut s2 = connect(&node);
    s2.write_all(&support::encode(&["CONN"])).unwrap();
    assert_eq!(read_replies(&mut s2, 1), vec![Reply::Int(1)]);
    assert_eq!(node.connections(), 2);
    let log = node.log_text();
    let words: Vec<(usize, String)> = log.iter().map(|(c, a)| (*c, a.join(" "))).collect();
    assert_eq!(
        words,
        vec![
            (0, "PING".to_string()),
            (0, "GET a".to_string()),
            (0, "INDEX".to_string()),
            (0, "HELLO 3".to_string()),
            (0, "CLUSTER SLOTS".to_string()),
            (0, "GET split-key".to_string()),
            (0, "PING".to_string()),
            (1, "CONN".to_string()),
        ]
    );
    assert_eq!(node.count(&["get"]), 2);
}

#[test]
fn fake_node_closes_mid_pipeline() {
    let node = FakeNode::start(|req| match (req.conn, req.index) {
        (0, 1) => Answer::Close,
        (1, 0) => Answer::CloseAfter(bulk(b"bye")),
        _ => Answer::Reply(int(req.index as i64)),
    });
    let mut s = connect(&node);
    let mut pipeline = Vec::new();
    for _ in 0..3 {
        pipeline.extend(support::encode(&["INCR", "k"]));
    }
    s.write_all(&pipeline).unwrap();
    // The first reply, then a clean end of stream: no reply to the second
    // command or the third.
    assert_eq!(read_to_eof(&mut s), b":0\r\n");
    assert_eq!(node.count(&["INCR"]), 2, "{:?}", node.log_text());
    // Writing after the close does not reset what was already read.
    let _ = s.write_all(&support::encode(&["PING"]));

    let mut s = connect(&node);
    s.write_all(&support::encode(&["GET", "k"])).unwrap();
    assert_eq!(read_to_eof(&mut s), b"$3\r\nbye\r\n");
    assert_eq!(node.connections(), 2);
}

#[test]
fn fake_node_silent_and_stall() {
    let node = FakeNode::start(|req| match req.name().as_str() {
        "SILENT" => Answer::Silent,
        "STALL" => Answer::Stall(Duration::from_millis(300)),
        _ => Answer::Reply(ok()),
    });
    let mut s = connect(&node);
    s.write_all(&support::encode(&["SILENT"])).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
        other => panic!("expected no answer to SILENT, got {:?}", other),
    }
    // A stall holds back the replies of commands pipelined behind it.
    let t = Instant::now();
    let mut pipeline = support::encode(&["STALL"]);
    pipeline.extend(support::encode(&["PING"]));
    s.write_all(&pipeline).unwrap();
    assert_eq!(read_replies(&mut s, 1), vec![Reply::Status("OK".into())]);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(node.count(&["STALL"]), 1);
}

#[test]
fn fake_nodes_redirect_to_each_other() {
    // Node a knows b's port only once b has started: shared state.
    let b_port = Arc::new(Mutex::new(0u16));
    let seen = b_port.clone();
    let a = FakeNode::start(move |req| {
        if let Some(answer) = default_handshake(req) {
            return answer;
        }
        let b = *seen.lock().unwrap();
        if req.is(&["CLUSTER", "SLOTS"]) {
            return Answer::Reply(cluster_slots(&[
                (0, 8191, &[("", req.port), ("?", b)]),
                (8192, 16383, &[("127.0.0.1", b)]),
            ]));
        }
        match req.name().as_str() {
            "GET" => Answer::Reply(moved(12182, "127.0.0.1", b)),
            "SET" => Answer::Reply(ask(12182, "", b)),
            _ => Answer::Reply(err("ERR unexpected")),
        }
    });
    let b = FakeNode::start(|req| {
        default_handshake(req).unwrap_or_else(|| match req.name().as_str() {
            "GET" => Answer::Reply(nil()),
            _ => Answer::Reply(array(vec![int(1), bulk(b"x")])),
        })
    });
    *b_port.lock().unwrap() = b.port();

    let mut s = connect(&a);
    let mut pipeline = Vec::new();
    for cmd in [
        &["CLUSTER", "SLOTS"][..],
        &["GET", "foo"],
        &["SET", "foo", "1"],
    ] {
        pipeline.extend(support::encode(cmd));
    }
    s.write_all(&pipeline).unwrap();
    let replies = read_replies(&mut s, 3);
    let ranges = replies[0].as_array();
    assert_eq!(ranges.len(), 2);
    let first = ranges[0].as_array();
    assert_eq!((first[0].as_int(), first[1].as_int()), (0, 8191));
    let node = first[2].as_array();
    assert_eq!(node[0].as_text(), "");
    assert_eq!(node[1].as_int(), a.port() as i64);
    assert_eq!(node[2].as_text(), fake_node_id(a.port()));
    assert_eq!(node[2].as_text().len(), 40);
    assert_eq!(first[3].as_array()[0].as_text(), "?");
    assert_eq!(
        replies[1].error(),
        Some(format!("MOVED 12182 127.0.0.1:{}", b.port()).as_str())
    );
    assert_eq!(
        replies[2].error(),
        Some(format!("ASK 12182 :{}", b.port()).as_str())
    );

    let mut s = connect(&b);
    let mut pipeline = support::encode(&["ASKING"]);
    pipeline.extend(support::encode(&["GET", "foo"]));
    pipeline.extend(support::encode(&["READONLY"]));
    s.write_all(&pipeline).unwrap();
    assert_eq!(
        read_replies(&mut s, 3),
        vec![
            Reply::Status("OK".into()),
            Reply::Nil,
            Reply::Status("OK".into())
        ]
    );
    let seen: HashSet<String> = b
        .log_text()
        .into_iter()
        .map(|(_, a)| a[0].clone())
        .collect();
    assert!(seen.contains("ASKING"), "{:?}", seen);
}
