#![cfg(feature = "cluster")]
//! Wire edge cases of the cluster client, played by scripted fake nodes
//! (tests/fake_cluster): `CLUSTER SLOTS` shapes, `MOVED`/`ASK` to nodes the
//! map does not know, redirect loops, refusals, nodes that die, refuse,
//! stall or answer with garbage in the middle of a request.
//!
//! Every fake node answers `COMMAND` with a real table (captured from Redis
//! 7.0.15, tests/data), so keys are routed as against a real cluster, and
//! `CLUSTER SLOTS` with whatever its test's [`Topology`] holds at the time.
//! Retry bounds are small everywhere: no test waits long, none can hang.

mod fake_cluster;

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fake_cluster::{
    array, ask, bulk, cluster_slots, default_handshake, err, fake_node_id, int, moved, nil, ok,
    Answer, FakeNode, Request, SlotsRange,
};
use respline::cluster::{key_slot, Route};
use respline::resp::Limits;
use respline::{Addr, Chunking, Cluster, ClusterOptions, ConnectOptions, Error, Pipeline, Value};

/// Room above every bound a test checks, for a loaded machine.
const SLACK: Duration = Duration::from_millis(1000);

/// The `COMMAND` reply of a real Redis 7.0.15 (RESP2).
const COMMAND_TABLE: &[u8] = include_bytes!("data/command-7.0.15.resp2");

// ------------------------------------------------------------------ helpers

/// The `CLUSTER SLOTS` reply the nodes of one test give, changeable while
/// they run.
#[derive(Clone, Default)]
struct Topology(Arc<Mutex<Vec<u8>>>);

impl Topology {
    fn set(&self, reply: Vec<u8>) {
        *self.0.lock().unwrap() = reply;
    }

    fn get(&self) -> Vec<u8> {
        let reply = self.0.lock().unwrap().clone();
        if reply.is_empty() {
            err("ERR the test set no topology yet")
        } else {
            reply
        }
    }
}

/// What every fake node of this file answers unless its test says
/// otherwise: `CLUSTER SLOTS` from `topology`, the real command table, the
/// handshake, `GET k` with `"<port>:k"` (so a reply names its node), `SET`
/// with OK, `MGET` like GET for each key.
fn standard(req: &Request, topology: &Topology) -> Answer {
    if req.is(&["CLUSTER", "SLOTS"]) {
        return Answer::Reply(topology.get());
    }
    if req.name() == "COMMAND" {
        return Answer::Reply(COMMAND_TABLE.to_vec());
    }
    if let Some(answer) = default_handshake(req) {
        return answer;
    }
    match req.name().as_str() {
        "GET" => Answer::Reply(bulk(owned(req.port, &req.arg(1)).as_bytes())),
        "SET" => Answer::Reply(ok()),
        "MGET" => Answer::Reply(array(
            (1..req.args.len())
                .map(|i| bulk(owned(req.port, &req.arg(i)).as_bytes()))
                .collect(),
        )),
        _ => Answer::Reply(err("ERR unknown command for this fake")),
    }
}

/// A node answering as `custom` says, else as [`standard`].
fn node<F>(topology: &Topology, custom: F) -> FakeNode
where
    F: Fn(&Request) -> Option<Answer> + Send + Sync + 'static,
{
    let topology = topology.clone();
    FakeNode::start(move |req| custom(req).unwrap_or_else(|| standard(req, &topology)))
}

/// A node answering as [`standard`].
fn plain(topology: &Topology) -> FakeNode {
    node(topology, |_| None)
}

/// What [`standard`] answers to `GET key` on the node at `port`.
fn owned(port: u16, key: &str) -> String {
    format!("{}:{}", port, key)
}

/// A port on which nothing listens (bound, then released).
fn dead_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// `n` keys whose slots are within `lo..=hi`.
fn keys_in(lo: u16, hi: u16, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("key:{}", i))
        .filter(|k| (lo..=hi).contains(&key_slot(k.as_bytes())))
        .take(n)
        .collect()
}

fn key_in(lo: u16, hi: u16) -> String {
    keys_in(lo, hi, 1).remove(0)
}

fn slot_of(key: &str) -> u16 {
    key_slot(key.as_bytes())
}

/// Options for these seeds on `host`, with small bounds: 2 s per reply and
/// connect, 2 s of retries, 16 attempts, 20 ms between refreshes.
fn options_on(host: &str, seeds: &[u16]) -> ClusterOptions {
    let node = ConnectOptions::tcp(host, seeds[0])
        .connect_timeout(Some(Duration::from_secs(2)))
        .read_timeout(Some(Duration::from_secs(2)));
    let seeds = seeds
        .iter()
        .map(|&port| Addr::Tcp {
            host: host.to_string(),
            port,
        })
        .collect();
    ClusterOptions::new(seeds, node)
        .retry_window(Duration::from_secs(2))
        .max_attempts(16)
        .refresh_cooldown(Duration::from_millis(20))
}

fn options(seeds: &[u16]) -> ClusterOptions {
    options_on("127.0.0.1", seeds)
}

fn connect(options: &ClusterOptions) -> Cluster {
    options
        .connect()
        .unwrap_or_else(|e| panic!("expected to connect to the fake cluster: {}", e))
}

/// The parts of an [`Error::GaveUp`].
fn gave_up(e: Error) -> (Vec<usize>, u16, u32, Error) {
    match e {
        Error::GaveUp {
            commands,
            attempts,
            elapsed_ms,
            last,
        } => (commands.to_vec(), attempts, elapsed_ms, *last),
        other => panic!("expected Error::GaveUp, got {:?} ({})", other, other),
    }
}

/// The parts of an [`Error::Unanswered`].
fn unanswered(e: Error) -> (Vec<usize>, Error) {
    match e {
        Error::Unanswered { commands, source } => (commands.to_vec(), *source),
        other => panic!("expected Error::Unanswered, got {:?} ({})", other, other),
    }
}

/// The error code of a server error (inside any wrapper), `""` if none.
fn code(e: &Error) -> String {
    e.server_error()
        .map(|s| s.code().to_string())
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    String::from_utf8_lossy(
        v.as_bytes()
            .unwrap_or_else(|| panic!("a string, got {:?}", v)),
    )
    .into_owned()
}

/// How many `CLUSTER SLOTS` the nodes received together.
fn slots_asked(nodes: &[&FakeNode]) -> usize {
    nodes.iter().map(|n| n.count(&["CLUSTER", "SLOTS"])).sum()
}

/// The commands a node received on connection `conn`, as text.
fn log_on(node: &FakeNode, conn: usize) -> Vec<String> {
    node.log_text()
        .into_iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, args)| args.join(" "))
        .collect()
}

// ------------------------------------------------------ 1. CLUSTER SLOTS shapes

#[test]
fn slots_empty_host_means_the_host_of_the_node_that_answered() {
    let topology = Topology::default();
    let a = plain(&topology);
    topology.set(cluster_slots(&[(0, 16383, &[("", a.port())])]));

    // Asked as "localhost": the map says localhost, not 127.0.0.1 nor "".
    let mut c = connect(&options_on("localhost", &[a.port()]));
    assert_eq!(c.primaries(), vec![format!("localhost:{}", a.port())]);
    let v: String = c.query(["GET", "k"]).unwrap();
    assert_eq!(v, owned(a.port(), "k"));
    // The connection that asked for the map serves the commands.
    assert_eq!(a.connections(), 1);

    // A nil host means the same.
    let mut range = vec![int(0), int(16383)];
    range.push(array(vec![nil(), int(a.port() as i64)]));
    topology.set(array(vec![array(range)]));
    c.refresh().unwrap();
    assert_eq!(c.primaries(), vec![format!("localhost:{}", a.port())]);
}

#[test]
fn slots_question_mark_host_is_skipped_and_its_range_gives_up_within_bounds() {
    let topology = Topology::default();
    let a = plain(&topology);
    // Live nodes, so that a connection attempt to them would be seen.
    let unknown_primary = plain(&topology);
    let unknown_replica = plain(&topology);
    topology.set(cluster_slots(&[
        (0, 8191, &[("", a.port()), ("?", unknown_replica.port())]),
        (8192, 16383, &[("?", unknown_primary.port())]),
    ]));
    let window = Duration::from_millis(300);
    let mut c = connect(&options(&[a.port()]).retry_window(window).max_attempts(1000));
    assert_eq!(c.primaries(), vec![a.addr()]);
    assert_eq!(c.primary_for_slot(9000), None);

    let served = key_in(0, 8191);
    let unserved = key_in(8192, 16383);
    assert_eq!(
        c.query::<String>(["GET", served.as_str()]).unwrap(),
        owned(a.port(), &served)
    );

    let started = Instant::now();
    let e = c.query::<String>(["GET", unserved.as_str()]).unwrap_err();
    let took = started.elapsed();
    assert!(!e.may_have_reached_server(), "{}", e);
    let (commands, attempts, _, last) = gave_up(e);
    assert_eq!(commands, vec![0]);
    assert!(
        attempts >= 2,
        "retried after a refresh: {} attempts",
        attempts
    );
    assert!(
        matches!(&last, Error::Config(m) if m.contains("slot")),
        "{:?}",
        last
    );
    assert!(took >= window - Duration::from_millis(50), "{:?}", took);
    assert!(took < window + SLACK, "{:?}", took);

    // In a pipeline: only the unserved command gives up.
    let mut pipe = Pipeline::new();
    pipe.cmd(["GET", served.as_str()])
        .cmd(["GET", unserved.as_str()]);
    let (commands, ..) = gave_up(pipe.execute_raw(&mut c).unwrap_err());
    assert_eq!(commands, vec![1]);

    assert_eq!(unknown_primary.connections(), 0);
    assert_eq!(unknown_replica.connections(), 0);
    // Refreshes were asked, but rate-limited: 20 ms apart at most.
    let asked = a.count(&["CLUSTER", "SLOTS"]);
    assert!((3..=40).contains(&asked), "{} refreshes", asked);
}

#[test]
fn slots_where_every_primary_is_unknown_fail_to_connect_clearly() {
    let topology = Topology::default();
    let a = plain(&topology);
    topology.set(cluster_slots(&[(0, 16383, &[("?", a.port())])]));
    let e = options(&[a.port()]).connect().unwrap_err();
    assert!(e.to_string().contains("no node serves any slot"), "{}", e);
}

#[test]
fn slots_a_node_with_two_disjoint_ranges_gets_one_connection() {
    let topology = Topology::default();
    let a = plain(&topology);
    let b = plain(&topology);
    topology.set(cluster_slots(&[
        (0, 5000, &[("127.0.0.1", a.port())]),
        (5001, 10000, &[("127.0.0.1", b.port())]),
        (10001, 16383, &[("127.0.0.1", a.port())]),
    ]));
    let mut c = connect(&options(&[a.port()]));
    assert_eq!(c.primaries().len(), 2);

    let low = keys_in(0, 5000, 4);
    let mid = keys_in(5001, 10000, 4);
    let high = keys_in(10001, 16383, 4);
    let mut pipe = Pipeline::new();
    let mut expected = Vec::new();
    for i in 0..4 {
        for (key, port) in [
            (&low[i], a.port()),
            (&mid[i], b.port()),
            (&high[i], a.port()),
        ] {
            pipe.cmd(["GET", key.as_str()]);
            expected.push(owned(port, key));
        }
    }
    let replies: Vec<String> = pipe.query(&mut c).unwrap();
    assert_eq!(replies, expected);
    assert_eq!((a.connections(), b.connections()), (1, 1));
    // Both of a's ranges went down its one connection, in the caller's order.
    let gets: Vec<String> = log_on(&a, 0)
        .into_iter()
        .filter(|c| c.starts_with("GET"))
        .collect();
    let mut expected_gets = Vec::new();
    for i in 0..4 {
        expected_gets.push(format!("GET {}", low[i]));
        expected_gets.push(format!("GET {}", high[i]));
    }
    assert_eq!(gets, expected_gets);
}

#[test]
fn slots_with_the_fields_of_every_version_are_accepted() {
    let topology = Topology::default();
    let a = plain(&topology);
    let b = plain(&topology);
    let c_node = plain(&topology);
    let r = plain(&topology);
    // 7.x: [host, port, id, {hostname...} as a flat RESP2 array], plus a
    // field a later version might add.
    let seven = |port: u16, hostname: &str| {
        array(vec![
            bulk(b"127.0.0.1"),
            int(port as i64),
            bulk(fake_node_id(port).as_bytes()),
            array(vec![
                bulk(b"hostname"),
                bulk(hostname.as_bytes()),
                bulk(b"tls-port"),
                int(0),
            ]),
            bulk(b"some future field"),
        ])
    };
    let reply = array(vec![
        array(vec![
            int(0),
            int(5460),
            seven(a.port(), "a.example"),
            seven(r.port(), "r.example"),
        ]),
        // 3.0: [host, port] only.
        array(vec![
            int(5461),
            int(10922),
            array(vec![bulk(b"127.0.0.1"), int(b.port() as i64)]),
        ]),
        // 3.2 to 6.x: [host, port, id].
        array(vec![
            int(10923),
            int(16383),
            array(vec![
                bulk(b"127.0.0.1"),
                int(c_node.port() as i64),
                bulk(fake_node_id(c_node.port()).as_bytes()),
            ]),
        ]),
    ]);
    topology.set(reply);
    let mut c = connect(&options(&[a.port()]));
    let mut primaries = vec![a.addr(), b.addr(), c_node.addr()];
    primaries.sort();
    let mut got = c.primaries();
    got.sort();
    assert_eq!(got, primaries);
    for (lo, hi, node) in [(0, 5460, &a), (5461, 10922, &b), (10923, 16383, &c_node)] {
        let key = key_in(lo, hi);
        assert_eq!(
            c.query::<String>(["GET", key.as_str()]).unwrap(),
            owned(node.port(), &key)
        );
    }
    // Reads go to primaries unless asked otherwise: the replica is unused.
    assert_eq!(r.connections(), 0);
}

// ------------------------------------------------- 2. MOVED to an unknown node

#[test]
fn moved_to_an_unknown_node_is_followed_at_once_and_patches_the_slot() {
    let topology = Topology::default();
    let b = plain(&topology);
    let b_port = b.port();
    let key = key_in(0, 16383);
    let slot = slot_of(&key);
    let a = node(&topology, move |req| match req.name().as_str() {
        "GET" if slot_of(&req.arg(1)) == slot => {
            Some(Answer::Reply(moved(slot, "127.0.0.1", b_port)))
        }
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));

    // A cooldown longer than the retry window: had the client paused for
    // the refresh the MOVED asked for, it would have waited out the window.
    let mut c = connect(
        &options(&[a.port()])
            .refresh_cooldown(Duration::from_secs(30))
            .retry_window(Duration::from_secs(3)),
    );
    let started = Instant::now();
    let v: String = c.query(["GET", key.as_str()]).unwrap();
    assert_eq!(v, owned(b_port, &key));
    assert!(started.elapsed() < SLACK, "{:?}", started.elapsed());
    assert_eq!(b.connections(), 1);

    // Patched: the slot goes straight to b, before any refresh.
    assert_eq!(c.primary_for_slot(slot), Some(b.addr()));
    assert_eq!(c.primary_for_slot((slot + 1) % 16384), Some(a.addr()));
    let v: String = c.query(["GET", key.as_str()]).unwrap();
    assert_eq!(v, owned(b_port, &key));
    assert_eq!(a.count(&["GET"]), 1);
    assert_eq!(b.count(&["GET"]), 2);
    assert_eq!(c.refreshes(), 1);
    assert_eq!(slots_asked(&[&a, &b]), 1);
}

#[test]
fn moved_asks_for_one_refresh_once_the_cooldown_allows() {
    let topology = Topology::default();
    let b = plain(&topology);
    let b_port = b.port();
    let key = key_in(0, 16383);
    let slot = slot_of(&key);
    let a = node(&topology, move |req| match req.name().as_str() {
        "GET" if slot_of(&req.arg(1)) == slot => {
            Some(Answer::Reply(moved(slot, "127.0.0.1", b_port)))
        }
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let cooldown = Duration::from_millis(300);
    let mut c = connect(&options(&[a.port()]).refresh_cooldown(cooldown));
    let other = key_in((slot + 1) % 16384, (slot + 1) % 16384);

    // Right after connecting, within the cooldown: patched, no refresh.
    c.query::<String>(["GET", key.as_str()]).unwrap();
    assert_eq!(c.refreshes(), 1);
    assert_eq!(c.primary_for_slot(slot), Some(b.addr()));

    thread::sleep(cooldown + Duration::from_millis(20));
    // The MOVED asked for one: the next request makes it first, whatever
    // its slot.
    c.query::<String>(["GET", other.as_str()]).unwrap();
    assert_eq!(c.refreshes(), 2);
    assert_eq!(slots_asked(&[&a, &b]), 2);
    // The refreshed map (a serves everything) replaced the patch.
    assert_eq!(c.primary_for_slot(slot), Some(a.addr()));

    // Nothing asked for another: none is made.
    thread::sleep(cooldown + Duration::from_millis(20));
    c.query::<String>(["GET", other.as_str()]).unwrap();
    assert_eq!(c.refreshes(), 2);
    assert_eq!(slots_asked(&[&a, &b]), 2);
}

#[test]
fn a_burst_of_moved_replies_makes_few_refreshes() {
    let topology = Topology::default();
    let b = plain(&topology);
    let b_port = b.port();
    // a sends every GET to b: each slot MOVEDs once until a refresh.
    let a = node(&topology, move |req| match req.name().as_str() {
        "GET" => Some(Answer::Reply(moved(slot_of(&req.arg(1)), "", b_port))),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let cooldown = Duration::from_millis(200);
    let mut c = connect(&options(&[a.port()]).refresh_cooldown(cooldown));

    // 200 keys in 200 different slots.
    let mut seen = std::collections::HashSet::new();
    let keys: Vec<String> = (0..)
        .map(|i| format!("burst:{}", i))
        .filter(|k| seen.insert(slot_of(k)))
        .take(200)
        .collect();

    let before = slots_asked(&[&a, &b]);
    let started = Instant::now();
    for key in &keys {
        assert_eq!(
            c.query::<String>(["GET", key.as_str()]).unwrap(),
            owned(b_port, key)
        );
    }
    let took = started.elapsed();
    let refreshes = slots_asked(&[&a, &b]) - before;
    let moved_replies = a.count(&["GET"]);
    assert!(moved_replies >= 200, "{}", moved_replies);
    let allowed = 1 + (took.as_millis() / cooldown.as_millis()) as usize;
    assert!(
        refreshes <= allowed,
        "{} MOVED in {:?} made {} refreshes (at most {} allowed)",
        moved_replies,
        took,
        refreshes,
        allowed
    );

    // 200 MOVED in one pipeline: one refresh at most.
    thread::sleep(cooldown);
    c.refresh().unwrap();
    let before = slots_asked(&[&a, &b]);
    let mut pipe = Pipeline::new();
    for key in &keys {
        pipe.cmd(["GET", key.as_str()]);
    }
    let started = Instant::now();
    let replies: Vec<String> = pipe.query(&mut c).unwrap();
    assert_eq!(replies[199], owned(b_port, &keys[199]));
    assert!(
        slots_asked(&[&a, &b]) - before <= 1 + (started.elapsed() >= cooldown) as usize,
        "{} refreshes",
        slots_asked(&[&a, &b]) - before
    );
}

#[test]
fn moved_to_a_dead_node_gives_up_within_bounds_without_running() {
    let topology = Topology::default();
    let dead = dead_port();
    let a = node(&topology, move |req| match req.name().as_str() {
        "SET" => Some(Answer::Reply(moved(
            slot_of(&req.arg(1)),
            "127.0.0.1",
            dead,
        ))),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let window = Duration::from_millis(400);
    let mut c = connect(&options(&[a.port()]).retry_window(window).max_attempts(1000));
    let started = Instant::now();
    let e = c.query::<()>(["SET", "k", "v"]).unwrap_err();
    assert!(
        started.elapsed() < window + SLACK,
        "{:?}",
        started.elapsed()
    );
    assert!(!e.may_have_reached_server(), "{}", e);
    let (commands, ..) = gave_up(e);
    assert_eq!(commands, vec![0]);
}

#[test]
fn a_split_mget_with_a_moved_part_is_merged_in_the_callers_order() {
    let topology = Topology::default();
    let c_node = plain(&topology);
    let c_port = c_node.port();
    let on_a = keys_in(0, 5460, 3);
    let on_b = keys_in(5461, 10922, 2);
    // a's slot of on_a[1] has moved to c.
    let moved_slot = slot_of(&on_a[1]);
    let a = node(&topology, move |req| match req.name().as_str() {
        "MGET" if (1..req.args.len()).any(|i| slot_of(&req.arg(i)) == moved_slot) => {
            Some(Answer::Reply(moved(moved_slot, "127.0.0.1", c_port)))
        }
        _ => None,
    });
    let b = plain(&topology);
    topology.set(cluster_slots(&[
        (0, 5460, &[("127.0.0.1", a.port())]),
        (5461, 16383, &[("127.0.0.1", b.port())]),
    ]));
    // No refresh meanwhile: it would bring back the map where a owns the
    // moved slot (see a_moved_slot_is_followed_even_when_refreshes_lag).
    let mut c = connect(&options(&[a.port()]).refresh_cooldown(Duration::from_secs(30)));
    let keys = [&on_b[0], &on_a[0], &on_a[1], &on_b[1], &on_a[2]];
    let owners = [b.port(), a.port(), c_port, b.port(), a.port()];
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().map(|k| k.to_string()));
    let mut pipe = Pipeline::new();
    pipe.cmd(["GET", on_a[2].as_str()])
        .cmd(&mget)
        .cmd(["GET", on_b[0].as_str()]);
    let (first, values, last): (String, Vec<String>, String) = pipe.query(&mut c).unwrap();
    assert_eq!(first, owned(a.port(), &on_a[2]));
    let expected: Vec<String> = keys.iter().zip(owners).map(|(k, p)| owned(p, k)).collect();
    assert_eq!(values, expected);
    assert_eq!(last, owned(b.port(), &on_b[0]));
    assert_eq!(c_node.count(&["MGET"]), 1);
}

#[test]
fn moved_is_followed_for_a_command_the_command_table_does_not_know() {
    // The cluster refuses COMMAND (as some managed services do): the
    // client routes with its built-in rules, and GET's key is unknown to
    // them. The MOVED reply still says where the command goes.
    let topology = Topology::default();
    let b = node(&topology, |req| match req.name().as_str() {
        "COMMAND" => Some(Answer::Reply(err(
            "NOPERM this user has no permissions to run the 'command' command",
        ))),
        _ => None,
    });
    let b_port = b.port();
    let a = node(&topology, move |req| match req.name().as_str() {
        "COMMAND" => Some(Answer::Reply(err(
            "NOPERM this user has no permissions to run the 'command' command",
        ))),
        "GET" => Some(Answer::Reply(moved(
            slot_of(&req.arg(1)),
            "127.0.0.1",
            b_port,
        ))),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    // No refresh in between (it would bring back a's stale map).
    let mut c = connect(
        &options(&[a.port()])
            .max_attempts(4)
            .refresh_cooldown(Duration::from_secs(30))
            .retry_window(Duration::from_millis(500)),
    );
    // Twenty keys in twenty slots: each may be sent to a first (its slot
    // is unknown to the client), is redirected to b at most once, and its
    // resend must go where the MOVED said.
    let mut seen = std::collections::HashSet::new();
    let keys: Vec<String> = (0..)
        .map(|i| format!("t:{}", i))
        .filter(|k| seen.insert(slot_of(k)))
        .take(20)
        .collect();
    let at_a = |key: &str| {
        a.log_text()
            .iter()
            .filter(|(_, args)| args.len() == 2 && args[0] == "GET" && args[1] == key)
            .count()
    };
    for key in &keys {
        let r = c.query::<String>(["GET", key.as_str()]);
        assert!(
            at_a(key) <= 1,
            "{:?} was sent to a {} times though a redirected it to b: {:?}",
            key,
            at_a(key),
            r
        );
        assert_eq!(r.unwrap(), owned(b_port, key));
    }
    assert_eq!(b.count(&["GET"]), 20);
}

#[test]
fn a_moved_slot_is_followed_even_when_refreshes_lag() {
    // The slot was migrating (TRYAGAIN twice), then moved to b; the node
    // asked for the map has not heard yet and still names a. Each MOVED
    // says where the slot is; the refresh that the MOVED itself asked for
    // must not send the command back to a for ever.
    let topology = Topology::default();
    let b = plain(&topology);
    let b_port = b.port();
    let sets = AtomicUsize::new(0);
    let a = node(&topology, move |req| match req.name().as_str() {
        "SET" if sets.fetch_add(1, Ordering::SeqCst) < 2 => Some(Answer::Reply(err(
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ))),
        "SET" => Some(Answer::Reply(moved(
            slot_of(&req.arg(1)),
            "127.0.0.1",
            b_port,
        ))),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    // The default cooldown; a window of 1 s.
    let mut c = connect(
        &options(&[a.port()])
            .refresh_cooldown(Duration::from_millis(200))
            .retry_window(Duration::from_millis(1000)),
    );
    let r = c.query::<()>(["SET", "k", "v"]);
    assert!(
        r.is_ok(),
        "{:?} after {} SETs to a ({} MOVED to b), {} to b, {} refreshes",
        r,
        a.count(&["SET"]),
        a.count(&["SET"]).saturating_sub(2),
        b.count(&["SET"]),
        c.refreshes()
    );
    assert_eq!(b.count(&["SET"]), 1);
}

// ------------------------------------------------------- 3. MOVED with no host

#[test]
fn moved_with_an_empty_host_means_the_host_of_the_node_that_replied() {
    let topology = Topology::default();
    let b = plain(&topology);
    let b_port = b.port();
    let a = node(&topology, move |req| match req.name().as_str() {
        "GET" => Some(Answer::Reply(err(&format!(
            "MOVED {} :{}",
            slot_of(&req.arg(1)),
            b_port
        )))),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("", a.port())])]));
    let mut c =
        connect(&options_on("localhost", &[a.port()]).refresh_cooldown(Duration::from_secs(30)));
    let key = "user:1";
    assert_eq!(c.query::<String>(["GET", key]).unwrap(), owned(b_port, key));
    assert_eq!(
        c.primary_for_slot(slot_of(key)),
        Some(format!("localhost:{}", b_port))
    );
    assert_eq!(b.connections(), 1);
}

// --------------------------------------------------------------------- 4. ASK

#[test]
fn ask_sends_asking_with_the_command_once_and_keeps_the_map() {
    let topology = Topology::default();
    // b answers ASKING only together with the command after it: a client
    // that waited for ASKING's reply before sending the command would wait
    // for ever (here: its read timeout).
    let b = node(&topology, |req| match req.name().as_str() {
        "ASKING" => Some(Answer::Silent),
        "GET" => {
            let mut both = ok();
            both.extend(bulk(owned(req.port, &req.arg(1)).as_bytes()));
            Some(Answer::Reply(both))
        }
        _ => None,
    });
    let b_port = b.port();
    let key = key_in(0, 16383);
    let slot = slot_of(&key);
    let gets = AtomicUsize::new(0);
    let a = node(&topology, move |req| match req.name().as_str() {
        "GET" if gets.fetch_add(1, Ordering::SeqCst) == 0 => {
            Some(Answer::Reply(ask(slot, "", b_port)))
        }
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    // No cooldown: a refresh, had one been asked for, would show.
    let mut c = connect(
        &options(&[a.port()])
            .refresh_cooldown(Duration::ZERO)
            .retry_window(Duration::from_secs(1)),
    );

    let v: String = c.query(["GET", key.as_str()]).unwrap();
    assert_eq!(v, owned(b_port, &key));
    assert_eq!(
        log_on(&b, 0),
        vec!["ASKING".to_string(), format!("GET {}", key)]
    );
    // The map is unchanged, and nothing asked for a refresh.
    assert_eq!(c.primary_for_slot(slot), Some(a.addr()));
    // One-shot: the next commands for the slot go to a.
    for _ in 0..2 {
        let v: String = c.query(["GET", key.as_str()]).unwrap();
        assert_eq!(v, owned(a.port(), &key));
    }
    assert_eq!(a.count(&["GET"]), 3);
    assert_eq!(b.count(&["GET"]), 1);
    assert_eq!(b.count(&["ASKING"]), 1);
    assert_eq!(c.refreshes(), 1);
    assert_eq!(slots_asked(&[&a, &b]), 1);
}

#[test]
fn asks_inside_a_pipeline_keep_the_callers_order() {
    let topology = Topology::default();
    let b = plain(&topology);
    let b_port = b.port();
    let on_a = keys_in(0, 8191, 4);
    let on_b = keys_in(8192, 16383, 2);
    // Commands 1 and 4 are for slots a is migrating to b.
    let asked = [on_a[1].clone(), on_a[2].clone()];
    let a = node(&topology, move |req| match req.name().as_str() {
        "GET" if asked.contains(&req.arg(1)) => Some(Answer::Reply(ask(
            slot_of(&req.arg(1)),
            "127.0.0.1",
            b_port,
        ))),
        _ => None,
    });
    topology.set(cluster_slots(&[
        (0, 8191, &[("127.0.0.1", a.port())]),
        (8192, 16383, &[("127.0.0.1", b_port)]),
    ]));
    let mut c = connect(&options(&[a.port()]));
    let keys = [&on_a[0], &on_a[1], &on_b[0], &on_a[3], &on_a[2], &on_b[1]];
    let owners = [a.port(), b_port, b_port, a.port(), b_port, b_port];
    let mut pipe = Pipeline::new();
    for k in &keys {
        pipe.cmd(["GET", k.as_str()]);
    }
    let replies: Vec<String> = pipe.query(&mut c).unwrap();
    let expected: Vec<String> = keys
        .iter()
        .zip(owners)
        .map(|(k, port)| owned(port, k))
        .collect();
    assert_eq!(replies, expected);
    // b's own commands first, then each asked command right after its
    // ASKING, on b's one connection.
    let b_log: Vec<String> = log_on(&b, 0)
        .into_iter()
        .filter(|c| c.starts_with("GET") || c == "ASKING")
        .collect();
    assert_eq!(
        b_log,
        vec![
            format!("GET {}", on_b[0]),
            format!("GET {}", on_b[1]),
            "ASKING".to_string(),
            format!("GET {}", on_a[1]),
            "ASKING".to_string(),
            format!("GET {}", on_a[2]),
        ]
    );
    assert_eq!(b.connections(), 1);
}

/// The same six GETs over two nodes, one MOVED to the other node and one
/// refused once with TRYAGAIN, first alone (every command has one key, its
/// first argument: the quick path) and then with an MGET after them (which
/// the planner must route): the same replies, in the caller's order.
#[test]
fn a_pipeline_redirected_in_part_is_answered_in_order_on_the_quick_and_the_planned_path() {
    for planned in [false, true] {
        let topology = Topology::default();
        let b = plain(&topology);
        let b_port = b.port();
        let on_a = keys_in(0, 8191, 4);
        let on_b = keys_in(8192, 16383, 2);
        let (moved_key, busy_key) = (on_a[1].clone(), on_a[2].clone());
        let refused = AtomicUsize::new(0);
        let a = node(&topology, move |req| {
            let key = req.arg(1);
            match req.name().as_str() {
                "GET" if key == moved_key => {
                    Some(Answer::Reply(moved(slot_of(&key), "127.0.0.1", b_port)))
                }
                "GET" if key == busy_key && refused.fetch_add(1, Ordering::SeqCst) == 0 => {
                    Some(Answer::Reply(err(
                        "TRYAGAIN Multiple keys request during rehashing of slot",
                    )))
                }
                _ => None,
            }
        });
        topology.set(cluster_slots(&[
            (0, 8191, &[("127.0.0.1", a.port())]),
            (8192, 16383, &[("127.0.0.1", b_port)]),
        ]));
        let mut c = connect(&options(&[a.port()]));
        let keys = [&on_a[0], &on_a[1], &on_b[0], &on_a[2], &on_a[3], &on_b[1]];
        let owners = [a.port(), b_port, b_port, a.port(), a.port(), b_port];
        let mut pipe = Pipeline::new();
        for k in &keys {
            pipe.cmd(["GET", k.as_str()]);
        }
        if planned {
            pipe.cmd(["MGET", on_a[3].as_str()]);
        }
        let started = Instant::now();
        let replies: Vec<Value> = pipe.query(&mut c).unwrap();
        let texts: Vec<String> = replies[..keys.len()].iter().map(text).collect();
        let expected: Vec<String> = keys
            .iter()
            .zip(owners)
            .map(|(k, port)| owned(port, k))
            .collect();
        assert_eq!(texts, expected, "planned: {}", planned);
        if planned {
            assert_eq!(
                replies[keys.len()],
                Value::Array(vec![Value::BulkString(
                    owned(a.port(), &on_a[3]).into_bytes()
                )])
            );
        }
        // The refused GET waited one pause (10 ms) and was sent twice; the
        // moved one went to b at once.
        assert!(started.elapsed() >= Duration::from_millis(9));
        assert_eq!(a.count(&["GET", &on_a[2]]), 2);
        assert_eq!(a.count(&["GET", &on_a[1]]), 1);
        assert_eq!(b.count(&["GET", &on_a[1]]), 1);
    }
}

// ----------------------------------------------------------- 5. redirect loops

/// Two nodes that answer every SET with a MOVED to each other; the map
/// says the first serves every slot.
fn moved_loop(topology: &Topology) -> (FakeNode, FakeNode) {
    let ports = Arc::new(Mutex::new((0u16, 0u16)));
    let (pa, pb) = (ports.clone(), ports.clone());
    let a = node(topology, move |req| match req.name().as_str() {
        "SET" => Some(Answer::Reply(moved(
            slot_of(&req.arg(1)),
            "127.0.0.1",
            pa.lock().unwrap().1,
        ))),
        _ => None,
    });
    let b = node(topology, move |req| match req.name().as_str() {
        "SET" => Some(Answer::Reply(moved(
            slot_of(&req.arg(1)),
            "127.0.0.1",
            pb.lock().unwrap().0,
        ))),
        _ => None,
    });
    *ports.lock().unwrap() = (a.port(), b.port());
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    (a, b)
}

#[test]
fn a_moved_loop_between_two_nodes_gives_up_after_max_attempts() {
    let topology = Topology::default();
    let (a, b) = moved_loop(&topology);
    let mut c = connect(
        &options(&[a.port()])
            .max_attempts(6)
            .retry_window(Duration::from_secs(2)),
    );

    let started = Instant::now();
    let e = c.query::<()>(["SET", "k", "v"]).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!e.may_have_reached_server(), "{}", e);
    assert!(e.to_string().contains("without running them"), "{}", e);
    let (commands, attempts, _, last) = gave_up(e);
    assert_eq!(commands, vec![0]);
    assert_eq!(attempts, 6);
    assert_eq!(code(&last), "MOVED", "{:?}", last);
    assert_eq!(a.count(&["SET"]) + b.count(&["SET"]), 6);
}

#[test]
fn a_moved_loop_ends_at_the_retry_window_when_attempts_are_plenty() {
    let topology = Topology::default();
    let (a, _b) = moved_loop(&topology);
    let window = Duration::from_millis(200);
    let mut c = connect(
        &options(&[a.port()])
            .max_attempts(1_000_000)
            .retry_window(window),
    );
    let started = Instant::now();
    let e = c.query::<()>(["SET", "k", "v"]).unwrap_err();
    assert!(
        started.elapsed() < window + SLACK,
        "{:?}",
        started.elapsed()
    );
    let (_, _, elapsed_ms, last) = gave_up(e);
    assert!(elapsed_ms >= 190, "{} ms", elapsed_ms);
    assert_eq!(code(&last), "MOVED");
}

#[test]
fn a_node_moving_a_slot_to_itself_is_waited_out_within_the_window() {
    let topology = Topology::default();
    let a = node(&topology, |req| match req.name().as_str() {
        "SET" => Some(Answer::Reply(moved(
            slot_of(&req.arg(1)),
            "127.0.0.1",
            req.port,
        ))),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let window = Duration::from_millis(300);
    let mut c = connect(&options(&[a.port()]).max_attempts(1000).retry_window(window));
    let started = Instant::now();
    let e = c.query::<()>(["SET", "k", "v"]).unwrap_err();
    let took = started.elapsed();
    let (_, attempts, _, last) = gave_up(e);
    assert_eq!(code(&last), "MOVED");
    assert!(took < window + SLACK, "{:?}", took);
    // Stale, so paused between tries: a handful, not hundreds.
    assert!(attempts < 30, "{} attempts in {:?}", attempts, took);
    assert_eq!(a.count(&["SET"]), attempts as usize);
}

// ---------------------------------------------------------------- 6. refusals

const REFUSALS: &[&str] = &[
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "LOADING Redis is loading the dataset in memory",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "READONLY You can't write against a read only replica.",
];

/// A node refusing the first `refusals` SETs with `line`.
fn refusing(topology: &Topology, line: &'static str, refusals: usize) -> FakeNode {
    let seen = AtomicUsize::new(0);
    node(topology, move |req| match req.name().as_str() {
        "SET" if seen.fetch_add(1, Ordering::SeqCst) < refusals => Some(Answer::Reply(err(line))),
        _ => None,
    })
}

#[test]
fn refusals_are_retried_after_a_pause_until_the_node_accepts() {
    for line in REFUSALS {
        let topology = Topology::default();
        let a = refusing(&topology, line, 2);
        topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
        let mut c = connect(&options(&[a.port()]));
        let started = Instant::now();
        c.query::<()>(["SET", "k", "v"])
            .unwrap_or_else(|e| panic!("{}: {}", line, e));
        let took = started.elapsed();
        assert_eq!(a.count(&["SET"]), 3, "{}", line);
        // Two pauses: 10 ms, then 20 ms.
        assert!(took >= Duration::from_millis(28), "{}: {:?}", line, took);
        assert!(took < SLACK, "{}: {:?}", line, took);
    }
}

#[test]
fn permanent_refusals_give_up_at_the_window_or_max_attempts() {
    let code_of = |line: &str| line.split(' ').next().unwrap().to_string();
    for line in REFUSALS {
        let topology = Topology::default();
        let a = refusing(&topology, line, usize::MAX);
        topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));

        let window = Duration::from_millis(150);
        let mut c = connect(&options(&[a.port()]).retry_window(window).max_attempts(1000));
        let started = Instant::now();
        let e = c.query::<()>(["SET", "k", "v"]).unwrap_err();
        let took = started.elapsed();
        assert!(!e.may_have_reached_server(), "{}", e);
        let (commands, attempts, _, last) = gave_up(e);
        assert_eq!(commands, vec![0]);
        assert_eq!(code(&last), code_of(line), "{:?}", last);
        assert!(
            took >= window - Duration::from_millis(20),
            "{}: {:?}",
            line,
            took
        );
        assert!(took < window + SLACK, "{}: {:?}", line, took);
        assert!(attempts < 20, "{}: {} attempts", line, attempts);

        let mut c = connect(&options(&[a.port()]).max_attempts(3));
        let before = a.count(&["SET"]);
        let (_, attempts, ..) = gave_up(c.query::<()>(["SET", "k", "v"]).unwrap_err());
        assert_eq!(attempts, 3);
        assert_eq!(a.count(&["SET"]) - before, 3, "{}", line);
    }
}

// ------------------------------------------------ 7. a node dying mid-pipeline

/// Two nodes; `a` counts INCRs and closes the connection at the 4th.
/// Ten INCRs: 0, 1, 4, 5, 9 go to a, 2, 3, 6, 7, 8 to b.
fn dying_cluster() -> (Topology, FakeNode, FakeNode, Vec<Vec<String>>) {
    let topology = Topology::default();
    let count_a = AtomicUsize::new(0);
    let a = node(&topology, move |req| match req.name().as_str() {
        "INCR" => {
            let n = count_a.fetch_add(1, Ordering::SeqCst) + 1;
            Some(if n == 4 {
                Answer::Close
            } else {
                Answer::Reply(int(n as i64))
            })
        }
        _ => None,
    });
    let count_b = AtomicUsize::new(0);
    let b = node(&topology, move |req| match req.name().as_str() {
        "INCR" => {
            let n = count_b.fetch_add(1, Ordering::SeqCst) + 1;
            Some(Answer::Reply(int(1000 + n as i64)))
        }
        _ => None,
    });
    topology.set(cluster_slots(&[
        (0, 8191, &[("127.0.0.1", a.port())]),
        (8192, 16383, &[("127.0.0.1", b.port())]),
    ]));
    let mut on_a = keys_in(0, 8191, 5).into_iter();
    let mut on_b = keys_in(8192, 16383, 5).into_iter();
    let commands = [0, 0, 1, 1, 0, 0, 1, 1, 1, 0]
        .iter()
        .map(|&side| {
            let key = if side == 0 { &mut on_a } else { &mut on_b }
                .next()
                .unwrap();
            vec!["INCR".to_string(), key]
        })
        .collect();
    (topology, a, b, commands)
}

fn pipeline_of(commands: &[Vec<String>]) -> Pipeline {
    let mut pipe = Pipeline::new();
    for c in commands {
        pipe.cmd(c);
    }
    pipe
}

#[test]
fn a_node_dying_mid_pipeline_reports_only_its_unanswered_commands() {
    let (_topology, a, b, commands) = dying_cluster();
    let mut c = connect(&options(&[a.port()]));
    let e = pipeline_of(&commands).execute_raw(&mut c).unwrap_err();
    assert!(e.may_have_reached_server(), "{}", e);
    assert!(e.to_string().contains("may have run"), "{}", e);
    let (commands, source) = unanswered(e);
    // a answered 0, 1, 4, then closed at 5: 5 and 9 got no reply.
    assert_eq!(commands, vec![5, 9]);
    assert!(source.is_io(), "{:?}", source);
    // Not sent again: the 4th INCR is a's last, on its only connection.
    assert_eq!(a.count(&["INCR"]), 4);
    assert_eq!(a.connections(), 1);
    assert_eq!(b.count(&["INCR"]), 5);

    // b's five replies were all read: its connection is in step.
    let key = key_in(8192, 16383);
    let n: i64 = c.query(["INCR", key.as_str()]).unwrap();
    assert_eq!(n, 1006);
    assert_eq!(b.connections(), 1);
    // a works again on a new connection, and nothing was resent.
    let key = key_in(0, 8191);
    let n: i64 = c.query(["INCR", key.as_str()]).unwrap();
    assert_eq!(n, 5);
    assert_eq!(a.connections(), 2);
}

#[test]
fn a_node_dying_mid_pipeline_resends_idempotent_commands() {
    let (_topology, a, b, commands) = dying_cluster();
    let mut c = connect(&options(&[a.port()]));
    let replies: Vec<i64> = pipeline_of(&commands).query(&mut c.idempotent()).unwrap();
    assert_eq!(replies, vec![1, 2, 1001, 1002, 3, 5, 1003, 1004, 1005, 6]);
    assert_eq!(a.count(&["INCR"]), 6);
    assert_eq!(a.connections(), 2);
    assert_eq!(b.count(&["INCR"]), 5);
    assert_eq!(b.connections(), 1);
}

#[test]
fn a_node_dying_in_a_chunked_load_names_the_commands_by_their_index_in_the_load() {
    let (_topology, a, b, commands) = dying_cluster();
    let mut c = connect(&options(&[a.port()]));
    let mut handed = Vec::new();
    let e = c
        .execute_chunked(&commands, &Chunking::default().max_commands(4), |i, v| {
            handed.push((i, v))
        })
        .unwrap_err();
    // Chunk 0..=3 ran; in chunk 4..=7 a answered 4 and closed at 5.
    let (unanswered_commands, source) = unanswered(e);
    assert_eq!(unanswered_commands, vec![5]);
    assert!(source.may_have_reached_server());
    let indices: Vec<usize> = handed.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, vec![0, 1, 2, 3]);
    assert_eq!(handed[2].1, Value::Integer(1001));
    assert_eq!(a.count(&["INCR"]), 4);
    // Nothing after the failed chunk was sent.
    assert_eq!(b.count(&["INCR"]), 4);
}

#[test]
fn a_pipeline_with_a_dead_node_and_an_unserved_slot_names_both_commands() {
    let topology = Topology::default();
    let a = node(&topology, |req| match req.name().as_str() {
        "INCR" => Some(Answer::Close),
        _ => None,
    });
    // Slots 8192.. have a primary of unknown address: never served.
    topology.set(cluster_slots(&[
        (0, 8191, &[("127.0.0.1", a.port())]),
        (8192, 16383, &[("?", 1)]),
    ]));
    let mut c = connect(
        &options(&[a.port()])
            .max_attempts(3)
            .retry_window(Duration::from_millis(300)),
    );
    let mut pipe = Pipeline::new();
    let on_a = keys_in(0, 8191, 2);
    pipe.cmd(["GET", on_a[0].as_str()])
        .cmd(["INCR", on_a[1].as_str()])
        .cmd(["GET", key_in(8192, 16383).as_str()]);
    let e = pipe.execute_raw(&mut c).unwrap_err();
    // Command 0 was answered; 1 may have run; 2 was never sent. The error
    // must not let the caller think 2 was answered.
    let named = match &e {
        Error::Unanswered { commands, .. } | Error::GaveUp { commands, .. } => commands.to_vec(),
        other => panic!("expected Unanswered or GaveUp, got {:?}", other),
    };
    assert!(e.may_have_reached_server(), "command 1 may have run: {}", e);
    assert_eq!(
        named,
        vec![1, 2],
        "the error names only {:?}, as if command 2 had been answered: {}",
        named,
        e
    );
}

#[test]
fn an_idempotent_command_resent_until_the_bounds_ran_out_may_have_run() {
    // Every SET arrives, and the node closes the connection before
    // answering: each may have run.
    let topology = Topology::default();
    let a = node(&topology, |req| match req.name().as_str() {
        "SET" => Some(Answer::Close),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let mut c = connect(&options(&[a.port()]).max_attempts(3));
    let e = c.idempotent().query::<()>(["SET", "k", "v"]).unwrap_err();
    assert_eq!(a.count(&["SET"]), 3, "{}", e);
    assert!(
        e.may_have_reached_server(),
        "the SET reached the node 3 times, yet the error says it cannot have run: {}",
        e
    );
    assert!(!e.to_string().contains("without running them"), "{}", e);
}

#[test]
fn a_lone_command_whose_node_dies_is_not_resent() {
    let topology = Topology::default();
    let a = node(&topology, |req| match req.name().as_str() {
        "INCR" => Some(Answer::Close),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let mut c = connect(&options(&[a.port()]));
    let e = c.query::<i64>(["INCR", "k"]).unwrap_err();
    assert!(e.may_have_reached_server(), "{}", e);
    assert!(e.is_io(), "{:?}", e);
    assert_eq!(a.count(&["INCR"]), 1);
}

// ----------------------------------------------- 8. a node refusing connections

#[test]
fn a_node_refusing_connections_is_routed_around_after_a_refresh() {
    let topology = Topology::default();
    let dead = dead_port();
    let b = plain(&topology);
    let b_port = b.port();
    let asked = AtomicUsize::new(0);
    let s = node(&Topology::default(), move |req| {
        if !req.is(&["CLUSTER", "SLOTS"]) {
            return None;
        }
        // The first map names a node that is gone; later ones its successor.
        let owner = if asked.fetch_add(1, Ordering::SeqCst) == 0 {
            dead
        } else {
            b_port
        };
        Some(Answer::Reply(cluster_slots(&[
            (0, 8191, &[("", req.port)]),
            (8192, 16383, &[("127.0.0.1", owner)]),
        ])))
    });
    let mut c = connect(&options(&[s.port()]));
    let key = key_in(8192, 16383);
    assert_eq!(
        c.primary_for_slot(slot_of(&key)),
        Some(format!("127.0.0.1:{}", dead))
    );
    c.query::<()>(["SET", key.as_str(), "v"]).unwrap();
    assert_eq!(b.count(&["SET"]), 1);
    assert_eq!(s.count(&["SET"]), 0);
    assert_eq!(c.primary_for_slot(slot_of(&key)), Some(b.addr()));
}

#[test]
fn a_connection_the_node_closed_while_idle_is_replaced_before_writing() {
    let topology = Topology::default();
    let a = node(&topology, |req| match req.name().as_str() {
        // The first SET is answered, then the node closes that connection.
        "SET" if req.conn == 0 => Some(Answer::CloseAfter(ok())),
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let mut c = connect(&options(&[a.port()]));
    c.query::<()>(["SET", "k", "1"]).unwrap();
    thread::sleep(Duration::from_millis(50));
    c.query::<()>(["SET", "k", "2"]).unwrap();
    assert_eq!(a.count(&["SET"]), 2);
    assert_eq!(a.connections(), 2);
    assert_eq!(log_on(&a, 1), vec!["SET k 2".to_string()]);
}

#[test]
fn a_stray_reply_after_a_pipeline_is_never_taken_for_the_next_reply() {
    let topology = Topology::default();
    let a = node(&topology, |req| match req.name().as_str() {
        // The first GET gets its reply and one nobody asked for.
        "GET" if req.conn == 0 && req.arg(1) == "first" => {
            let mut two = bulk(b"first-reply");
            two.extend(bulk(b"stray"));
            Some(Answer::Reply(two))
        }
        _ => None,
    });
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let mut c = connect(&options(&[a.port()]));
    assert_eq!(c.query::<String>(["GET", "first"]).unwrap(), "first-reply");
    thread::sleep(Duration::from_millis(50));
    let v: String = c.query(["GET", "second"]).unwrap();
    assert_eq!(v, owned(a.port(), "second"));
    // Found before writing: the request went on a fresh connection, once.
    assert_eq!(a.count(&["GET"]), 2);
    assert_eq!(a.connections(), 2);
}

// ------------------------------------------------------------ 9. a stalled node

#[test]
fn a_stalled_node_times_out_and_the_other_nodes_replies_are_kept() {
    let topology = Topology::default();
    let a = node(&topology, |req| match req.name().as_str() {
        "GET" => Some(Answer::Stall(Duration::from_secs(3))),
        _ => None,
    });
    let b = plain(&topology);
    topology.set(cluster_slots(&[
        (0, 8191, &[("127.0.0.1", a.port())]),
        (8192, 16383, &[("127.0.0.1", b.port())]),
    ]));
    let read_timeout = Duration::from_millis(200);
    let mut opts = options(&[a.port()]);
    opts.node.read_timeout = Some(read_timeout);
    let mut c = connect(&opts);

    let on_a = keys_in(0, 8191, 2);
    let on_b = keys_in(8192, 16383, 2);
    let mut pipe = Pipeline::new();
    pipe.cmd(["GET", on_a[0].as_str()])
        .cmd(["GET", on_b[0].as_str()])
        .cmd(["GET", on_a[1].as_str()])
        .cmd(["GET", on_b[1].as_str()]);
    let started = Instant::now();
    let e = pipe.execute_raw(&mut c).unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= read_timeout - Duration::from_millis(10),
        "{:?}",
        took
    );
    assert!(took < read_timeout + SLACK, "{:?}", took);
    assert!(e.is_timeout(), "{:?}", e);
    assert!(e.may_have_reached_server(), "{}", e);
    let (commands, source) = unanswered(e);
    assert_eq!(commands, vec![0, 2]);
    assert!(source.is_timeout(), "{:?}", source);

    // b's replies were read: the same connection answers the next one.
    let v: String = c.query(["GET", on_b[0].as_str()]).unwrap();
    assert_eq!(v, owned(b.port(), &on_b[0]));
    assert_eq!(b.connections(), 1);
    assert_eq!(b.count(&["GET"]), 3);

    // A lone command: the timeout itself, within the deadline.
    let started = Instant::now();
    let e = c.query::<String>(["GET", on_a[0].as_str()]).unwrap_err();
    assert!(e.is_timeout(), "{:?}", e);
    assert!(started.elapsed() < read_timeout + SLACK);
}

// -------------------------------------------------------------------- 10. seeds

#[test]
fn dead_seeds_are_skipped_and_the_seeds_are_asked_again_when_every_node_is_gone() {
    let seed_topology = Topology::default();
    let s = plain(&seed_topology);
    let node_topology = Topology::default();
    let n = plain(&node_topology);
    let m = plain(&node_topology);
    // The seed names only n; n names itself.
    seed_topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", n.port())])]));
    node_topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", n.port())])]));

    let seeds = [dead_port(), dead_port(), s.port()];
    let mut c = connect(&options(&seeds));
    assert_eq!(c.primaries(), vec![n.addr()]);
    assert_eq!(
        c.query::<String>(["GET", "k"]).unwrap(),
        owned(n.port(), "k")
    );

    // n goes away; the seed knows the new owner.
    let n_port = n.port();
    drop(n);
    seed_topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", m.port())])]));
    let before = s.count(&["CLUSTER", "SLOTS"]);
    let started = Instant::now();
    assert_eq!(
        c.query::<String>(["GET", "k"]).unwrap(),
        owned(m.port(), "k")
    );
    assert!(started.elapsed() < SLACK, "{:?}", started.elapsed());
    assert!(s.count(&["CLUSTER", "SLOTS"]) > before);
    assert_eq!(c.primaries(), vec![m.addr()]);
    assert_ne!(m.port(), n_port);
}

#[test]
fn a_seed_that_never_answers_cluster_slots_does_not_hang_connect() {
    // No read timeout (the default): only the client's own bounds apply.
    let silent = node(&Topology::default(), |req| {
        if req.is(&["CLUSTER", "SLOTS"]) {
            Some(Answer::Silent)
        } else {
            None
        }
    });
    let topology = Topology::default();
    let good = plain(&topology);
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", good.port())])]));
    let mut opts = options(&[silent.port(), good.port()]).retry_window(Duration::from_millis(500));
    opts.node.read_timeout = None;
    opts.node.connect_timeout = Some(Duration::from_millis(500));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let started = Instant::now();
        let result = opts.connect().map(|c| c.primaries());
        let _ = tx.send((result, started.elapsed()));
    });
    // The connect timeout and the retry window (0.5 s each) are far below
    // this; a client still waiting is waiting for ever (until the fake node
    // is dropped, which ends it).
    match rx.recv_timeout(Duration::from_millis(2500)) {
        Ok((result, took)) => {
            let primaries = result.unwrap_or_else(|e| panic!("after {:?}: {}", took, e));
            assert_eq!(primaries, vec![good.addr()]);
        }
        Err(_) => panic!(
            "Cluster::connect still waits after 2.5 s for a seed that accepted the \
             connection but never answers CLUSTER SLOTS, though the next seed would answer"
        ),
    }
}

// ----------------------------------------------------- 11. pipelines, 3 nodes

#[test]
fn a_pipeline_over_three_nodes_writes_every_node_before_reading_and_keeps_order() {
    const TOTAL: usize = 30;
    let topology = Topology::default();
    let ranges = [(0u16, 5460u16), (5461, 10922), (10923, 16383)];
    // Which node each command goes to: interleaved, uneven.
    let layout: Vec<usize> = (0..TOTAL).map(|i| (i * 7 + i / 4) % 3).collect();
    let mut keys = Vec::new();
    let mut pools: Vec<Vec<String>> = ranges
        .iter()
        .map(|&(lo, hi)| keys_in(lo, hi, TOTAL))
        .collect();
    for &n in &layout {
        keys.push(pools[n].remove(0));
    }
    // Each node holds its replies until every node has received all its
    // commands: a client reading a node before writing the others would
    // wait here, and get an error reply after 2 s.
    let arrived = Arc::new(AtomicUsize::new(0));
    let mut nodes = Vec::new();
    for n in 0..3 {
        let expected = layout.iter().filter(|&&x| x == n).count();
        let arrived = arrived.clone();
        let held = Mutex::new((Vec::new(), 0usize));
        nodes.push(node(&topology, move |req| {
            if req.name() != "GET" {
                return None;
            }
            arrived.fetch_add(1, Ordering::SeqCst);
            let mut held = held.lock().unwrap();
            held.0.extend(bulk(owned(req.port, &req.arg(1)).as_bytes()));
            held.1 += 1;
            if held.1 < expected {
                return Some(Answer::Silent);
            }
            let until = Instant::now() + Duration::from_secs(2);
            while arrived.load(Ordering::SeqCst) < TOTAL {
                if Instant::now() > until {
                    return Some(Answer::Reply(err(
                        "ERR the client read a node before writing every node",
                    )));
                }
                thread::sleep(Duration::from_millis(1));
            }
            Some(Answer::Reply(std::mem::take(&mut held.0)))
        }));
    }
    topology.set(cluster_slots(&[
        (ranges[0].0, ranges[0].1, &[("127.0.0.1", nodes[0].port())]),
        (ranges[1].0, ranges[1].1, &[("127.0.0.1", nodes[1].port())]),
        (ranges[2].0, ranges[2].1, &[("127.0.0.1", nodes[2].port())]),
    ]));
    let mut c = connect(&options(&[nodes[0].port()]));
    let mut pipe = Pipeline::new();
    for k in &keys {
        pipe.cmd(["GET", k.as_str()]);
    }
    let replies = pipe.execute_raw(&mut c).unwrap();
    let expected: Vec<Value> = keys
        .iter()
        .zip(&layout)
        .map(|(k, &n)| Value::BulkString(owned(nodes[n].port(), k).into_bytes()))
        .collect();
    assert_eq!(replies, expected);
    for node in &nodes {
        assert_eq!(node.connections(), 1);
    }
}

#[test]
fn a_large_pipeline_over_three_nodes_does_not_deadlock() {
    let topology = Topology::default();
    let nodes: Vec<FakeNode> = (0..3).map(|_| plain(&topology)).collect();
    topology.set(cluster_slots(&[
        (0, 5460, &[("127.0.0.1", nodes[0].port())]),
        (5461, 10922, &[("127.0.0.1", nodes[1].port())]),
        (10923, 16383, &[("127.0.0.1", nodes[2].port())]),
    ]));
    let mut c = connect(&options(&[nodes[0].port()]));
    // Well past the single-write size (64 KiB) per node.
    let value = "v".repeat(1000);
    let mut pipe = Pipeline::new();
    for i in 0..3000 {
        pipe.cmd(["SET", format!("big:{}", i).as_str(), value.as_str()]);
    }
    let started = Instant::now();
    let replies = pipe.execute_raw(&mut c).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(replies.len(), 3000);
    assert!(replies.iter().all(|v| text(v) == "OK"));
    let total: usize = nodes.iter().map(|n| n.count(&["SET"])).sum();
    assert_eq!(total, 3000);
}

// ------------------------------------------------ 12. malformed CLUSTER SLOTS

/// Replies to `CLUSTER SLOTS` that no map can be made of, and a phrase of
/// the error each gives.
fn malformed_slots(port: u16) -> Vec<(Vec<u8>, &'static str)> {
    let node = |p: i64| array(vec![bulk(b"127.0.0.1"), int(p)]);
    let range = |lo: i64, hi: i64, p: i64| array(vec![int(lo), int(hi), node(p)]);
    let p = port as i64;
    vec![
        (b"+OK\r\n".to_vec(), "array"),
        (array(vec![int(5)]), "entry #0"),
        (array(vec![range(100, 50, p)]), "start at or before its end"),
        (array(vec![range(0, 16384, p)]), "entry #0"),
        (array(vec![range(0, 16383, 0)]), "port"),
        (array(vec![range(0, 16383, 70000)]), "port"),
        (
            array(vec![range(0, 100, p), range(50, 16383, p)]),
            "overlap",
        ),
        (
            array(vec![array(vec![int(0), int(16383), bulk(b"abc")])]),
            "node",
        ),
        (array(vec![array(vec![int(0), int(16383)])]), "entry #0"),
        (
            array(vec![array(vec![
                int(0),
                int(16383),
                array(vec![int(1), int(p)]),
            ])]),
            "node",
        ),
        (
            err("ERR This instance has cluster support disabled"),
            "cluster support disabled",
        ),
    ]
}

#[test]
fn malformed_cluster_slots_from_one_node_do_not_stop_a_refresh() {
    for case in 0..malformed_slots(1).len() {
        let good = Topology::default();
        let b = plain(&good);
        let bad_reply = malformed_slots(b.port())[case].clone();
        let bad = bad_reply.0.clone();
        let a = node(&good, move |req| {
            if req.is(&["CLUSTER", "SLOTS"]) {
                Some(Answer::Reply(bad.clone()))
            } else {
                None
            }
        });
        good.set(cluster_slots(&[
            (0, 8191, &[("127.0.0.1", a.port())]),
            (8192, 16383, &[("127.0.0.1", b.port())]),
        ]));
        let what = String::from_utf8_lossy(&bad_reply.0).into_owned();

        // a is asked first (the first seed), b's good answer wins.
        let mut c = options(&[a.port(), b.port()])
            .connect()
            .unwrap_or_else(|e| panic!("{:?}: {}", what, e));
        assert_eq!(a.count(&["CLUSTER", "SLOTS"]), 1, "{:?}", what);
        assert_eq!(c.primaries().len(), 2, "{:?}", what);
        // Later refreshes, in any order, keep working.
        for _ in 0..4 {
            c.refresh().unwrap_or_else(|e| panic!("{:?}: {}", what, e));
        }
        let key = key_in(0, 8191);
        assert_eq!(
            c.query::<String>(["GET", key.as_str()]).unwrap(),
            owned(a.port(), &key),
            "{:?}",
            what
        );

        // Alone, the bad answer is a clear error naming the node.
        let e = options(&[a.port()]).connect().unwrap_err();
        let message = e.to_string();
        assert!(message.contains("CLUSTER SLOTS"), "{}", message);
        assert!(message.contains(&a.addr()), "{}", message);
        assert!(message.contains(bad_reply.1), "{:?}: {}", what, message);
    }
}

#[test]
fn a_refresh_where_every_answer_is_malformed_keeps_the_old_map() {
    let topology = Topology::default();
    let a = plain(&topology);
    topology.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", a.port())])]));
    let mut c = connect(&options(&[a.port()]));
    topology.set(array(vec![array(vec![
        int(9),
        int(1),
        array(vec![bulk(b"x"), int(1)]),
    ])]));
    let e = c.refresh().unwrap_err();
    assert!(
        e.to_string().contains("start at or before its end"),
        "{}",
        e
    );
    assert_eq!(c.primaries(), vec![a.addr()]);
    assert_eq!(
        c.query::<String>(["GET", "k"]).unwrap(),
        owned(a.port(), "k")
    );
}

// ---------------------------------------------------------- 13. hostile replies

/// Connects with `hostile` answering `CLUSTER SLOTS` on the first seed:
/// with a good second seed the client connects; alone, it fails with an
/// error containing `needle`. Returns the most memory the client's thread
/// held meanwhile.
fn against_hostile(hostile: Answer, limits: Limits, needle: &str) -> isize {
    let good = Topology::default();
    let b = plain(&good);
    good.set(cluster_slots(&[(0, 16383, &[("127.0.0.1", b.port())])]));
    let answer = Arc::new(hostile);
    let a = node(&good, move |req| {
        if req.is(&["CLUSTER", "SLOTS"]) {
            Some((*answer).clone())
        } else {
            None
        }
    });
    let with = |seeds: &[u16]| {
        let mut o = options(seeds);
        o.node.limits = limits.clone();
        o.node.read_timeout = Some(Duration::from_secs(1));
        o
    };

    alloc::reset_peak();
    let before = alloc::live();
    let started = Instant::now();
    let mut c = with(&[a.port(), b.port()])
        .connect()
        .unwrap_or_else(|e| panic!("{}: {}", needle, e));
    assert_eq!(c.primaries(), vec![b.addr()], "{}", needle);
    assert_eq!(
        c.query::<String>(["GET", "k"]).unwrap(),
        owned(b.port(), "k")
    );
    let e = with(&[a.port()]).connect().unwrap_err();
    let held = alloc::peak() - before;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains(needle), "{}", e);
    assert!(e.to_string().contains(&a.addr()), "{}", e);
    held
}

#[test]
fn hostile_cluster_slots_replies_are_refused_with_bounded_memory() {
    // 2^31 ranges announced, then the node goes away.
    let held = against_hostile(
        Answer::CloseAfter(b"*2147483648\r\n*3\r\n:0\r\n:1\r\n".to_vec()),
        Limits::default(),
        "i/o error",
    );
    assert!(held < 4 << 20, "{} bytes", held);

    // Nested 100 000 deep.
    let held = against_hostile(
        Answer::Reply(b"*1\r\n".repeat(100_000)),
        Limits::default(),
        "nesting depth of at most 1024",
    );
    assert!(held < 4 << 20, "{} bytes", held);

    // A 1 GiB bulk string announced.
    let held = against_hostile(
        Answer::CloseAfter(b"*1\r\n$1073741824\r\nxxxx".to_vec()),
        Limits::default(),
        "limit",
    );
    assert!(held < 4 << 20, "{} bytes", held);

    // A line that never ends, past the 1 MiB line limit.
    let mut line = b"+".to_vec();
    line.extend(vec![b'x'; 3 << 20]);
    let held = against_hostile(Answer::Reply(line), Limits::default(), "a line of at most");
    assert!(held < 8 << 20, "{} bytes", held);

    // Valid but larger than this client allows: 16384 one-slot ranges
    // against a limit of 1000 elements per aggregate.
    let ranges: Vec<SlotsRange> = (0..16384u16)
        .map(|s| (s, s, &[("127.0.0.1", 1u16)][..]))
        .collect();
    let limits = Limits {
        max_aggregate_len: 1000,
        ..Limits::default()
    };
    let held = against_hostile(Answer::Reply(cluster_slots(&ranges)), limits, "limit");
    assert!(held < 4 << 20, "{} bytes", held);
}

#[test]
fn sixteen_thousand_one_slot_ranges_are_a_valid_map() {
    let topology = Topology::default();
    let a = plain(&topology);
    let b = plain(&topology);
    let (pa, pb) = ([("127.0.0.1", a.port())], [("127.0.0.1", b.port())]);
    let ranges: Vec<SlotsRange> = (0..16384u16)
        .map(|s| (s, s, if s % 2 == 0 { &pa[..] } else { &pb[..] }))
        .collect();
    topology.set(cluster_slots(&ranges));
    let mut c = connect(&options(&[a.port()]));
    assert_eq!(c.primaries().len(), 2);
    let key = key_in(0, 16383);
    let owner = if slot_of(&key) % 2 == 0 { &a } else { &b };
    let v: String = c
        .on(Route::Key(key.as_bytes()), ["GET", key.as_str()])
        .unwrap();
    assert_eq!(v, owned(owner.port(), &key));
}
