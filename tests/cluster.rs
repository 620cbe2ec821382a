#![cfg(feature = "cluster")]
//! The cluster client against one real 3 primaries + 3 replicas cluster,
//! shared by every test of this file (`support::cluster::shared()`). The
//! tests read and write but leave the topology alone, each under its own
//! key prefix, so they run in parallel; the fault tests (resharding,
//! failover, kill -9) are in `tests/cluster_faults.rs`, each with its own
//! cluster.
//!
//! Each test prints a few timings and counts:
//! `cargo test --test cluster -- --nocapture`.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::TcpListener;
use std::sync::{mpsc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

use respline::cluster::{key_slot, Route};
use respline::{
    cmd, Chunking, Cluster, ClusterOptions, Error, Pipeline, Script, Value, WatchOptions,
};
use support::cluster::{self as harness, Reply, TestCluster};

/// Tests that flush or rely on the script cache (`SCRIPT FLUSH` reaches every
/// primary) take this lock, so they do not race each other.
static SCRIPT_CACHE: Mutex<()> = Mutex::new(());

fn script_cache() -> MutexGuard<'static, ()> {
    SCRIPT_CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every test holds this lock for reading while it uses the shared
/// cluster; the SCAN test holds it for writing. Redis's SCAN may yield a key
/// twice when a node's key table shrinks between two of its calls, which
/// the deletions of other tests can cause; alone, it must not.
static KEYSPACE: RwLock<()> = RwLock::new(());

/// Tests that send MULTI, WATCH, SSUBSCRIBE or READONLY hold this for
/// reading; the test that counts those commands cluster-wide holds it for
/// writing, so their calls cannot land inside its count.
static SESSION_COUNTS: RwLock<()> = RwLock::new(());

fn sends_session_commands() -> RwLockReadGuard<'static, ()> {
    SESSION_COUNTS.read().unwrap_or_else(|e| e.into_inner())
}

fn shared() -> (&'static TestCluster, RwLockReadGuard<'static, ()>) {
    let guard = KEYSPACE.read().unwrap_or_else(|e| e.into_inner());
    (harness::shared(), guard)
}

/// A client for the shared cluster, seeded with every node.
fn connect(c: &TestCluster) -> Cluster {
    let urls = c.seed_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Cluster::open(&urls).expect("connect to the shared cluster")
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{}", port)
}

/// The primary port serving each slot, from one node's `CLUSTER SLOTS`
/// (read by the harness, not by the client under test).
struct Owners(Vec<harness::SlotRange>);

impl Owners {
    fn of(c: &TestCluster) -> Owners {
        Owners(c.cluster_slots(c.primaries()[0]))
    }

    fn port(&self, key: &str) -> u16 {
        let slot = harness::key_slot(key.as_bytes());
        self.0
            .iter()
            .find(|r| r.start <= slot && slot <= r.end)
            .map(|r| r.primary)
            .expect("every slot is served")
    }

    /// The first key `<prefix><i>` served by `port`.
    fn key_on(&self, port: u16, prefix: &str) -> String {
        (0..)
            .map(|i| format!("{}{}", prefix, i))
            .find(|k| self.port(k) == port)
            .expect("some key lands on every primary")
    }
}

fn bulk(v: &Value) -> Vec<u8> {
    v.as_bytes()
        .unwrap_or_else(|| panic!("expected a bulk string, got {:?}", v))
        .to_vec()
}

fn text(v: &Value) -> String {
    match v {
        Value::SimpleString(s) => s.to_string(),
        other => String::from_utf8_lossy(&bulk(other)).into_owned(),
    }
}

fn expect_crossslot<T: std::fmt::Debug>(result: respline::Result<T>, what: &str) {
    match result {
        Err(e @ Error::CrossSlot { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("CROSSSLOT") && msg.contains("nothing was sent"),
                "{}: {}",
                what,
                msg
            );
            assert!(!e.may_have_reached_server() && !e.breaks_connection());
        }
        other => panic!("{}: expected Error::CrossSlot, got {:?}", what, other),
    }
}

// ------------------------------------------------------------ single keys

#[test]
fn get_set_incr_on_every_primary() {
    let (c, _keyspace) = shared();
    let t = Instant::now();
    let mut cluster = connect(c);
    eprintln!("[timing] Cluster::open: {:?}", t.elapsed());
    let owners = Owners::of(c);
    let primaries = c.primaries();
    assert_eq!(
        cluster.primaries(),
        primaries.iter().map(|&p| addr(p)).collect::<Vec<_>>()
    );
    for &port in &primaries {
        let key = owners.key_on(port, "basic:s:");
        let counter = owners.key_on(port, "basic:n:");
        assert_eq!(
            cluster.primary_for_slot(key_slot(key.as_bytes())),
            Some(addr(port))
        );
        cluster
            .execute(["DEL", key.as_str(), counter.as_str()])
            .unwrap();
        let ok: String = cluster.query(["SET", key.as_str(), "hello"]).unwrap();
        assert_eq!(ok, "OK");
        let got: Option<String> = cluster.query(["GET", key.as_str()]).unwrap();
        assert_eq!(got.as_deref(), Some("hello"));
        for n in 1..=3 {
            let v: i64 = cluster.query(["INCR", counter.as_str()]).unwrap();
            assert_eq!(v, n);
        }
        // The values live on the node the harness says serves them.
        assert_eq!(c.query(port, &["GET", key.as_str()]).as_bytes(), b"hello");
        assert_eq!(c.query(port, &["GET", counter.as_str()]).as_bytes(), b"3");
    }
    let missing: Option<String> = cluster.query(["GET", "basic:missing"]).unwrap();
    assert_eq!(missing, None);
    // A stable cluster needs no refresh after the first; one on demand.
    assert_eq!(cluster.refreshes(), 1);
    cluster.refresh().unwrap();
    assert_eq!(cluster.refreshes(), 2);
    assert_eq!(cluster.primaries().len(), 3);
}

#[test]
fn pipeline_of_10000_sets_then_gets_in_order() {
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let n = 10_000;
    let keys: Vec<String> = (0..n).map(|i| format!("pipe10k:{}", i)).collect();
    let per_node: HashMap<u16, u64> = keys.iter().fold(HashMap::new(), |mut m, k| {
        *m.entry(owners.port(k)).or_insert(0) += 1;
        m
    });
    let sets_before: HashMap<u16, u64> = per_node
        .keys()
        .map(|&p| (p, c.calls_on(p, "set")))
        .collect();

    let mut sets = Pipeline::new();
    for (i, k) in keys.iter().enumerate() {
        sets.cmd(["SET", k.as_str(), &format!("value-{}-of-{}", i, k)]);
    }
    let t = Instant::now();
    let replies = sets.execute(&mut cluster).unwrap();
    let took_sets = t.elapsed();
    assert_eq!(replies.len(), n);
    assert!(
        replies.iter().all(|r| text(r) == "OK"),
        "{:?}",
        &replies[..3]
    );

    let mut gets = Pipeline::new();
    for k in &keys {
        gets.cmd(["GET", k.as_str()]);
    }
    let t = Instant::now();
    let values: Vec<String> = gets.query(&mut cluster).unwrap();
    let took_gets = t.elapsed();
    for (i, (k, v)) in keys.iter().zip(&values).enumerate() {
        assert_eq!(v, &format!("value-{}-of-{}", i, k), "reply #{}", i);
    }
    // Every SET reached the node serving its key (other tests only add).
    for (&port, &count) in &per_node {
        let grew = c.calls_on(port, "set") - sets_before[&port];
        assert!(
            grew >= count,
            "node {}: {} SETs, expected {}",
            port,
            grew,
            count
        );
    }
    eprintln!(
        "[timing] 10,000 SETs: {:?}, 10,000 GETs: {:?}; keys per node {:?}",
        took_sets, took_gets, per_node
    );
    cluster
        .execute_chunked(
            keys.iter().map(|k| ["DEL", k.as_str()]),
            &Chunking::default(),
            |_, _| {},
        )
        .unwrap()
        .check()
        .unwrap();
}

#[test]
fn an_error_mid_pipeline_stays_at_its_index() {
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let (a, s, b) = ("midpipe:a", "midpipe:s", "midpipe:b");
    // Three keys on at least two nodes, so the pipeline is really split.
    let nodes: HashSet<u16> = [a, s, b].iter().map(|k| owners.port(k)).collect();
    assert!(nodes.len() >= 2, "{:?}", nodes);
    cluster.execute(["DEL", a, s, b]).unwrap();

    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", a, "1"])
        .cmd(["SET", s, "not a number"])
        .cmd(["INCR", s])
        .cmd(["INCR", a])
        .cmd(["SET", b, "x"])
        .cmd(["GET", b]);
    let replies = pipe.execute_raw(&mut cluster).unwrap();
    assert_eq!(replies.len(), 6);
    match &replies[2] {
        Value::Error(e) => assert!(e.starts_with("ERR value is not an integer"), "{}", e),
        other => panic!(
            "expected the INCR's error reply at index 2, got {:?}",
            other
        ),
    }
    assert_eq!(replies[3], Value::Integer(2));
    assert_eq!(bulk(&replies[5]), b"x");
    assert_eq!(c.query(owners.port(a), &["GET", a]).as_bytes(), b"2");

    // query fails with that command's error, and the others ran again.
    match pipe.query::<Vec<Value>>(&mut cluster) {
        Err(Error::Server(e)) => {
            assert_eq!(e.index, Some(2));
            assert_eq!(e.code(), "ERR");
        }
        other => panic!("expected Error::Server at index 2, got {:?}", other),
    }
    assert_eq!(c.query(owners.port(a), &["GET", a]).as_bytes(), b"2");
    let after: (Option<String>, String) = {
        let mut check = Pipeline::new();
        check.cmd(["GET", a]).cmd(["GET", s]);
        check.query(&mut cluster).unwrap()
    };
    assert_eq!(after, (Some("2".into()), "not a number".into()));
    match pipe.execute(&mut cluster) {
        Err(Error::Server(e)) => assert_eq!(e.index, Some(2)),
        other => panic!("expected Error::Server at index 2, got {:?}", other),
    }
    cluster.execute(["DEL", a, s, b]).unwrap();
}

// ------------------------------------------------------------ multi-key

#[test]
fn multi_key_commands_are_split_per_slot_and_merged() {
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let keys: Vec<String> = (0..40).map(|i| format!("split:{}", i)).collect();
    let slots: HashSet<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
    let nodes: HashSet<u16> = keys.iter().map(|k| owners.port(k)).collect();
    assert!(slots.len() > 30 && nodes.len() == 3);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut del = vec!["DEL"];
    del.extend(&refs);
    cluster.execute(del.clone()).unwrap();

    // Every other key is set; MGET puts nils where the others are.
    for (i, k) in refs.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        cluster.execute(["SET", k, &format!("v{}", i)]).unwrap();
    }
    let mut mget = vec!["MGET"];
    mget.extend(&refs);
    let got: Vec<Option<String>> = cluster.query(mget.clone()).unwrap();
    let expected: Vec<Option<String>> = (0..refs.len())
        .map(|i| (i % 2 == 0).then(|| format!("v{}", i)))
        .collect();
    assert_eq!(got, expected);

    // MSET across slots, then MGET, with a key repeated and in reverse order.
    let mut mset = vec!["MSET".to_string()];
    for (i, k) in refs.iter().enumerate() {
        mset.push(k.to_string());
        mset.push(format!("m{}", i));
    }
    let ok: String = cluster.query(mset).unwrap();
    assert_eq!(ok, "OK");
    let mut reversed: Vec<&str> = vec!["MGET"];
    reversed.extend(refs.iter().rev());
    reversed.push(refs[3]);
    let got: Vec<String> = cluster.query(reversed).unwrap();
    let mut expected: Vec<String> = (0..refs.len()).rev().map(|i| format!("m{}", i)).collect();
    expected.push("m3".into());
    assert_eq!(got, expected);
    for k in &refs[..5] {
        assert_eq!(
            c.query(owners.port(k), &["GET", k]).as_text(),
            format!("m{}", refs.iter().position(|x| x == k).unwrap())
        );
    }

    // Counts are summed; a repeated key counts twice, as on one server.
    let mut exists = vec!["EXISTS"];
    exists.extend(&refs);
    exists.extend(["split:none:1", "split:none:2", refs[0], refs[7]]);
    assert_eq!(cluster.query::<i64>(exists).unwrap(), 42);
    let mut touch = vec!["TOUCH"];
    touch.extend(&refs[..20]);
    touch.push("split:none:3");
    assert_eq!(cluster.query::<i64>(touch).unwrap(), 20);
    let mut unlink = vec!["UNLINK"];
    unlink.extend(&refs[..10]);
    unlink.push("split:none:4");
    assert_eq!(cluster.query::<i64>(unlink).unwrap(), 10);
    del.push("split:none:5");
    assert_eq!(cluster.query::<i64>(del.clone()).unwrap(), 30);

    // Split and fan-out commands inside one pipeline: replies in order.
    let mut pipe = Pipeline::new();
    let mut mset = vec!["MSET"];
    for k in &refs[..12] {
        mset.push(k);
        mset.push(k);
    }
    pipe.cmd(mset)
        .cmd(["PING"])
        .cmd(["MGET", refs[11], "split:none:6", refs[0], refs[5]])
        .cmd(["INCR", refs[1]])
        .cmd(["EXISTS", refs[0], refs[1], refs[20]])
        .cmd(["KEYS", "split:1?"])
        .cmd(["DEL", refs[0], refs[1], refs[2], "split:none:7"]);
    let replies = pipe.execute_raw(&mut cluster).unwrap();
    assert_eq!(replies.len(), 7);
    assert_eq!(text(&replies[0]), "OK");
    assert_eq!(text(&replies[1]), "PONG");
    assert_eq!(
        replies[2],
        Value::Array(vec![
            Value::from(refs[11]),
            Value::Nil,
            Value::from(refs[0]),
            Value::from(refs[5])
        ])
    );
    assert!(replies[3].is_error(), "{:?}", replies[3]);
    assert_eq!(replies[4], Value::Integer(2));
    let found: BTreeSet<String> = replies[5].as_slice().unwrap().iter().map(text).collect();
    let expected: BTreeSet<String> = (10..12).map(|i| format!("split:{}", i)).collect();
    assert_eq!(found, expected);
    assert_eq!(replies[6], Value::Integer(3));
    assert_eq!(cluster.query::<i64>(del).unwrap(), 9);
    let got: Vec<Option<String>> = cluster.query(mget).unwrap();
    assert!(got.iter().all(Option::is_none), "{:?}", got);
}

#[test]
fn other_cross_slot_commands_fail_before_anything_is_sent() {
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let (a, b) = ("xslot:a", "xslot:b");
    let (s1, s2, dest) = ("xslot:set1", "xslot:set2", "xslot:dest");
    assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    cluster.execute(["DEL", a, b, s1, s2, dest]).unwrap();
    cluster.execute(["SET", a, "kept"]).unwrap();
    cluster.execute(["SADD", s1, "x", "y"]).unwrap();
    cluster.execute(["SADD", s2, "z"]).unwrap();
    // No other test of this file sends these commands.
    let calls = |c: &TestCluster| {
        ["rename", "sunionstore", "msetnx"]
            .iter()
            .map(|s| c.total_calls(s))
            .collect::<Vec<_>>()
    };
    let before = calls(c);

    expect_crossslot(cluster.query::<Value>(["RENAME", a, b]), "RENAME");
    expect_crossslot(
        cluster.query::<Value>(["SUNIONSTORE", dest, s1, s2]),
        "SUNIONSTORE",
    );
    expect_crossslot(
        cluster.query::<Value>(["MSETNX", "xslot:n1", "1", "xslot:n2", "2"]),
        "MSETNX",
    );
    // In a pipeline too: nothing of it is sent.
    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", "xslot:p", "1"]).cmd(["RENAME", a, b]);
    expect_crossslot(pipe.execute_raw(&mut cluster), "pipeline with RENAME");

    assert_eq!(calls(c), before, "a refused command reached a server");
    assert_eq!(c.query(owners.port(a), &["GET", a]).as_bytes(), b"kept");
    let exists: i64 = cluster
        .query(["EXISTS", "xslot:n1", "xslot:n2", "xslot:p", b, dest])
        .unwrap();
    assert_eq!(exists, 0);
    cluster.execute(["DEL", a, s1, s2]).unwrap();
}

// ------------------------------------------------------------ routing

#[test]
fn session_commands_are_refused_before_anything_is_sent() {
    let _counts = SESSION_COUNTS.write().unwrap_or_else(|e| e.into_inner());
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let names = ["multi", "watch", "ssubscribe", "select", "readonly"];
    let before: Vec<u64> = names.iter().map(|n| c.total_calls(n)).collect();
    for command in [
        vec!["MULTI"],
        vec!["WATCH", "session:k"],
        vec!["SSUBSCRIBE", "session:ch"],
        vec!["SELECT", "0"],
        vec!["READONLY"],
        vec!["CLIENT", "SETNAME", "x"],
    ] {
        let err = cluster.query::<Value>(command.clone()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{:?}: {:?}", command, err);
        assert!(err.to_string().contains("nothing was sent"), "{}", err);
        assert!(!err.may_have_reached_server());
        // In a pipeline, nothing of it is sent.
        let mut pipe = Pipeline::new();
        pipe.cmd(["SET", "session:k", "1"]).cmd(command.clone());
        let err = pipe.execute(&mut cluster).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{:?}: {:?}", command, err);
    }
    let after: Vec<u64> = names.iter().map(|n| c.total_calls(n)).collect();
    assert_eq!(before, after);
    // The cluster is still usable.
    let pong: String = cluster.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn routing_by_the_servers_key_rules() {
    // Its EVALs would disturb the counts of the script test.
    let _cache = script_cache();
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);

    // EVAL with numkeys 2 on keys of one slot, on a node that is not the
    // first one (so a random guess would often be wrong).
    let (k1, k2) = ("{evaltag}:a", "{evaltag}:b");
    let port = owners.port(k1);
    let set_both = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); return redis.call('MGET', KEYS[1], KEYS[2])";
    for _ in 0..5 {
        let got: Vec<String> = cluster
            .query(["EVAL", set_both, "2", k1, k2, "one", "two"])
            .unwrap();
        assert_eq!(got, ["one", "two"]);
    }
    assert_eq!(c.query(port, &["GET", k2]).as_bytes(), b"two");
    // EVAL without keys: any primary.
    for _ in 0..5 {
        let n: i64 = cluster.query(["EVAL", "return 7", "0"]).unwrap();
        assert_eq!(n, 7);
    }

    // XADD, then XREAD over two streams of one slot (keys after STREAMS).
    let (s1, s2) = ("{xr}:s1", "{xr}:s2");
    cluster.execute(["DEL", s1, s2]).unwrap();
    let id1: String = cluster.query(["XADD", s1, "*", "f", "1"]).unwrap();
    let id2: String = cluster.query(["XADD", s2, "*", "f", "2"]).unwrap();
    let read: Value = cluster
        .query(["XREAD", "COUNT", "10", "STREAMS", s1, s2, "0", "0"])
        .unwrap();
    let streams = read.as_slice().expect("an array of streams");
    assert_eq!(streams.len(), 2, "{:?}", read);
    let first = streams[0].as_slice().unwrap();
    assert_eq!(bulk(&first[0]), s1.as_bytes());
    let entry = first[1].as_slice().unwrap()[0].as_slice().unwrap();
    assert_eq!(text(&entry[0]), id1);
    let second = streams[1].as_slice().unwrap();
    let entry = second[1].as_slice().unwrap()[0].as_slice().unwrap();
    assert_eq!(text(&entry[0]), id2);

    // Subcommands with keys at position 2: MEMORY USAGE, OBJECT ENCODING,
    // on a key of every primary.
    for &p in &c.primaries() {
        let key = owners.key_on(p, "route:sub:");
        cluster.execute(["SET", key.as_str(), "12345"]).unwrap();
        let usage: i64 = cluster.query(["MEMORY", "USAGE", key.as_str()]).unwrap();
        assert!(usage > 0, "{}", usage);
        let enc: String = cluster.query(["OBJECT", "ENCODING", key.as_str()]).unwrap();
        assert_eq!(enc, "int");
        let missing: Option<i64> = cluster
            .query(["MEMORY", "USAGE", &format!("{}:none", key)])
            .unwrap();
        assert_eq!(missing, None);
        cluster.execute(["DEL", key.as_str()]).unwrap();
    }

    // BITOP with a hash tag: the destination and sources share the slot.
    let (d, x, y) = ("{bits}:dest", "{bits}:x", "{bits}:y");
    cluster.execute(["SET", x, "ab"]).unwrap();
    cluster.execute(["SET", y, "aB"]).unwrap();
    let len: i64 = cluster.query(["BITOP", "AND", d, x, y]).unwrap();
    assert_eq!(len, 2);
    let and: Vec<u8> = cluster.query(["GET", d]).unwrap();
    assert_eq!(and, vec![b'a', b'b' & b'B']);
    expect_crossslot(
        cluster.query::<i64>(["BITOP", "OR", "bits:d", "bits:x", "bits:y"]),
        "BITOP without a tag",
    );

    // Keyless: TIME; and CLUSTER MYID lands on primaries, picked at random.
    let time: Vec<String> = cluster.query(["TIME"]).unwrap();
    assert_eq!(time.len(), 2);
    let ids: HashSet<String> = c.primaries().iter().map(|&p| c.node_id(p)).collect();
    let mut seen = HashSet::new();
    for _ in 0..30 {
        let id: String = cluster.query(["CLUSTER", "MYID"]).unwrap();
        assert!(ids.contains(&id), "{} is not a primary's id", id);
        seen.insert(id);
    }
    assert!(
        seen.len() >= 2,
        "30 keyless commands all went to one primary"
    );
    let id: String = cluster.on(Route::AnyPrimary, ["CLUSTER", "MYID"]).unwrap();
    assert!(ids.contains(&id));
    eprintln!(
        "[info] keyless CLUSTER MYID reached {} primaries",
        seen.len()
    );

    // Explicit routes.
    for &p in &c.primaries() {
        let key = owners.key_on(p, "route:explicit:");
        let slot = key_slot(key.as_bytes());
        let id: String = cluster.on(Route::Slot(slot), ["CLUSTER", "MYID"]).unwrap();
        assert_eq!(id, c.node_id(p));
        let id: String = cluster
            .on(Route::Key(key.as_bytes()), ["CLUSTER", "MYID"])
            .unwrap();
        assert_eq!(id, c.node_id(p));
        for r in c.replicas_of(p) {
            let role: Vec<Value> = cluster.on(Route::Node(&addr(r)), ["ROLE"]).unwrap();
            assert_eq!(text(&role[0]), "slave");
        }
    }
    match cluster.on::<Value>(Route::Node("no-port"), ["PING"]) {
        Err(Error::Config(msg)) => assert!(msg.contains("host:port"), "{}", msg),
        other => panic!("expected Error::Config, got {:?}", other),
    }

    // More key rules: the script's keys must share a slot; numkeys beyond
    // the arguments is the server's error; SORT ... STORE and ZUNIONSTORE
    // count their destination; blocking commands go to their key's node.
    expect_crossslot(
        cluster.query::<Value>(["EVAL", "return 1", "2", "evalx:a", "evalx:b"]),
        "EVAL over two slots",
    );
    match cluster.query::<Value>(["EVAL", "return 1", "3", "{evaltag}:a"]) {
        Err(Error::Server(e)) => assert!(
            e.message().to_lowercase().contains("number of keys"),
            "{}",
            e
        ),
        other => panic!("expected the server's error, got {:?}", other),
    }
    let (list, sorted, z1, z2, zdest) = (
        "{sort}:list",
        "{sort}:sorted",
        "{sort}:z1",
        "{sort}:z2",
        "{sort}:zdest",
    );
    cluster.execute(["RPUSH", list, "3", "1", "2"]).unwrap();
    let n: i64 = cluster.query(["SORT", list, "STORE", sorted]).unwrap();
    assert_eq!(n, 3);
    let got: Vec<String> = cluster.query(["LRANGE", sorted, "0", "-1"]).unwrap();
    assert_eq!(got, ["1", "2", "3"]);
    expect_crossslot(
        cluster.query::<i64>(["SORT", list, "STORE", "sort:elsewhere"]),
        "SORT ... STORE to another slot",
    );
    cluster.execute(["ZADD", z1, "1", "a"]).unwrap();
    cluster.execute(["ZADD", z2, "2", "b"]).unwrap();
    let n: i64 = cluster.query(["ZUNIONSTORE", zdest, "2", z1, z2]).unwrap();
    assert_eq!(n, 2);
    let t = Instant::now();
    let popped: Option<Vec<String>> = cluster.query(["BLPOP", list, sorted, "1"]).unwrap();
    assert_eq!(popped, Some(vec![list.to_string(), "3".to_string()]));
    let none: Option<Vec<String>> = cluster.query(["BLPOP", "{sort}:empty", "0.05"]).unwrap();
    assert_eq!(none, None);
    assert!(t.elapsed() >= Duration::from_millis(50));
    // A command the server does not know: its own error, from some primary.
    match cluster.query::<Value>(["NOSUCHCOMMAND", "x"]) {
        Err(Error::Server(e)) => assert!(e.message().contains("unknown command"), "{}", e),
        other => panic!("expected the server's error, got {:?}", other),
    }
    cluster
        .execute(["DEL", k1, k2, s1, s2, d, x, y, list, sorted, z1, z2, zdest])
        .unwrap();
}

#[test]
fn functions_are_loaded_on_every_primary_and_fcall_routes_by_key() {
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let library = "#!lua name=respline_cluster_test\n\
        redis.register_function('rct_set', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\n\
        redis.register_function{function_name='rct_get', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}";
    let name: String = cluster
        .query(["FUNCTION", "LOAD", "REPLACE", library])
        .unwrap();
    assert_eq!(name, "respline_cluster_test");
    for &p in &c.primaries() {
        let listed: Value = cluster
            .on(
                Route::Node(&addr(p)),
                ["FUNCTION", "LIST", "LIBRARYNAME", "respline_cluster_test"],
            )
            .unwrap();
        assert_eq!(
            listed.as_slice().map(<[Value]>::len),
            Some(1),
            "node {}: {:?}",
            p,
            listed
        );
        let key = owners.key_on(p, "fcall:");
        let ok: String = cluster
            .query(["FCALL", "rct_set", "1", key.as_str(), "via-fcall"])
            .unwrap();
        assert_eq!(ok, "OK");
        let got: String = cluster
            .query(["FCALL_RO", "rct_get", "1", key.as_str()])
            .unwrap();
        assert_eq!(got, "via-fcall");
        assert_eq!(c.query(p, &["GET", key.as_str()]).as_bytes(), b"via-fcall");
        cluster.execute(["DEL", key.as_str()]).unwrap();
    }
    let ok: String = cluster
        .query(["FUNCTION", "DELETE", "respline_cluster_test"])
        .unwrap();
    assert_eq!(ok, "OK");
    for &p in &c.primaries() {
        let listed = c.query(
            p,
            &["FUNCTION", "LIST", "LIBRARYNAME", "respline_cluster_test"],
        );
        assert_eq!(listed, Reply::Array(vec![]), "node {}", p);
    }
}

// ------------------------------------------------------------ fan-out

#[test]
fn fan_out_to_every_primary() {
    let _cache = script_cache();
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let primaries = c.primaries();

    let pong: String = cluster.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
    let pongs: Vec<String> = cluster.on(Route::AllPrimaries, ["PING"]).unwrap();
    assert_eq!(pongs, vec!["PONG"; primaries.len()]);

    // KEYS concatenates every primary's matches.
    let keys: BTreeSet<String> = (0..30).map(|i| format!("fankeys:{}", i)).collect();
    for k in &keys {
        cluster.execute(["SET", k.as_str(), "1"]).unwrap();
    }
    let nodes: HashSet<u16> = keys.iter().map(|k| owners.port(k)).collect();
    assert_eq!(nodes.len(), 3);
    let found: Vec<String> = cluster.query(["KEYS", "fankeys:*"]).unwrap();
    assert_eq!(found.len(), keys.len(), "{:?}", found);
    assert_eq!(found.into_iter().collect::<BTreeSet<_>>(), keys);
    // DBSIZE is the sum of every primary's; other tests write meanwhile,
    // so look for a moment when the per-node sizes stood still.
    let mut consistent = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    for attempt in 1.. {
        if Instant::now() > deadline {
            break;
        }
        let before: Vec<i64> = primaries
            .iter()
            .map(|&p| cluster.on(Route::Node(&addr(p)), ["DBSIZE"]).unwrap())
            .collect();
        let total: i64 = cluster.query(["DBSIZE"]).unwrap();
        let all: Vec<i64> = cluster.on(Route::AllPrimaries, ["DBSIZE"]).unwrap();
        let after: Vec<i64> = primaries
            .iter()
            .map(|&p| cluster.on(Route::Node(&addr(p)), ["DBSIZE"]).unwrap())
            .collect();
        assert_eq!(all.len(), primaries.len());
        // This test's keys alone put something on every primary.
        assert!(before.iter().all(|&n| n > 0), "{:?}", before);
        if before == after && all == before && total == before.iter().sum::<i64>() {
            consistent = Some((attempt, before, total));
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let (attempt, sizes, total) =
        consistent.expect("DBSIZE never matched the sum of the primaries' DBSIZE");
    eprintln!(
        "[info] DBSIZE {} = sum of {:?} (attempt {})",
        total, sizes, attempt
    );

    // SCRIPT LOAD reaches every primary: EVALSHA works on each.
    let source = "return 'sha:' .. KEYS[1]";
    let sha: String = cluster.query(["SCRIPT", "LOAD", source]).unwrap();
    for &p in &primaries {
        let key = owners.key_on(p, "fan:evalsha:");
        let got: String = cluster.query(["EVALSHA", &sha, "1", &key]).unwrap();
        assert_eq!(got, format!("sha:{}", key));
    }
    let exists: Vec<i64> = cluster
        .query([
            "SCRIPT",
            "EXISTS",
            &sha,
            "0000000000000000000000000000000000000000",
        ])
        .unwrap();
    assert_eq!(exists, [1, 0]);
    // One primary without it: SCRIPT EXISTS is and-ed.
    let p0 = primaries[0];
    assert!(c.query(p0, &["SCRIPT", "FLUSH"]).is_ok());
    let exists: Vec<i64> = cluster.query(["SCRIPT", "EXISTS", &sha]).unwrap();
    assert_eq!(exists, [0]);

    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(cluster.query::<i64>(del).unwrap(), 30);
}

// ------------------------------------------------------------ transactions

#[test]
fn transactions_in_one_slot() {
    let _counts = sends_session_commands();
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let (a, b) = ("{tx}:a", "{tx}:b");
    cluster.execute(["DEL", a, b]).unwrap();

    let mut tx = Pipeline::transaction();
    tx.cmd(["SET", a, "10"])
        .cmd(["INCRBY", a, "5"])
        .cmd(["RPUSH", b, "x", "y"])
        .cmd(["GET", a]);
    let (ok, n, len, got): (String, i64, i64, String) = tx.query(&mut cluster).unwrap();
    assert_eq!((ok.as_str(), n, len, got.as_str()), ("OK", 15, 2, "15"));
    assert_eq!(c.query(owners.port(a), &["GET", a]).as_bytes(), b"15");

    // Keys in two slots: refused before sending.
    let mut cross = Pipeline::transaction();
    cross.cmd(["SET", "tx:x", "1"]).cmd(["SET", "tx:y", "1"]);
    expect_crossslot(
        cross.execute_raw(&mut cluster),
        "transaction over two slots",
    );
    let n: i64 = cluster.query(["EXISTS", "tx:x", "tx:y"]).unwrap();
    assert_eq!(n, 0);

    // A command that fails to queue: EXECABORT, nothing ran.
    let mut bad = Pipeline::transaction();
    bad.cmd(["SET", a, "changed"])
        .cmd(["NOSUCHCOMMAND", "x"])
        .cmd(["INCR", a]);
    match bad.execute_raw(&mut cluster) {
        Err(Error::ExecAbort { errors }) => {
            assert_eq!(errors.len(), 1, "{:?}", errors);
            assert_eq!(errors[0].index, Some(1));
        }
        other => panic!("expected Error::ExecAbort, got {:?}", other),
    }
    let got: String = cluster.query(["GET", a]).unwrap();
    assert_eq!(got, "15");
    // The connection stays usable.
    let (n,): (i64,) = {
        let mut tx = Pipeline::transaction();
        tx.cmd(["INCR", a]);
        tx.query(&mut cluster).unwrap()
    };
    assert_eq!(n, 16);
    cluster.execute(["DEL", a, b]).unwrap();
}

#[test]
fn watch_transaction_retries_after_a_concurrent_change() {
    let _counts = sends_session_commands();
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let (balance, log) = ("{watch}:balance", "{watch}:log");
    let port = owners.port(balance);
    cluster.execute(["DEL", balance, log]).unwrap();
    cluster.execute(["SET", balance, "21"]).unwrap();

    let mut attempts = 0;
    let (ok, len): (String, i64) = cluster
        .transaction(&[balance, log], WatchOptions::default(), |conn, pipe| {
            attempts += 1;
            let current: i64 = conn.query(["GET", balance])?;
            if attempts == 1 {
                // Another client changes the watched key in between.
                assert!(c.query(port, &["SET", balance, "50"]).is_ok());
            }
            pipe.cmd(cmd("SET").arg(balance).arg(current * 2));
            pipe.cmd(cmd("RPUSH").arg(log).arg(format!("doubled {}", current)));
            Ok(())
        })
        .unwrap();
    assert_eq!((ok.as_str(), len), ("OK", 1));
    assert_eq!(attempts, 2, "the concurrent SET should have forced a retry");
    assert_eq!(c.query(port, &["GET", balance]).as_bytes(), b"100");
    assert_eq!(
        c.query(port, &["LRANGE", log, "0", "-1"]),
        Reply::Array(vec![Reply::Bulk(b"doubled 50".to_vec())])
    );

    // Without a change: one attempt. With changes every time: WatchAborted.
    let mut attempts = 0;
    let () = cluster
        .transaction(&[balance], WatchOptions::default(), |conn, pipe| {
            attempts += 1;
            let _: i64 = conn.query(["GET", balance])?;
            pipe.cmd(["INCR", balance]);
            Ok(())
        })
        .unwrap();
    assert_eq!(attempts, 1);
    let mut attempts = 0;
    let result: respline::Result<()> = cluster.transaction(
        &[balance],
        WatchOptions::new().max_attempts(3).no_backoff(),
        |_, pipe| {
            attempts += 1;
            assert!(c.query(port, &["INCR", balance]).as_int() > 0);
            pipe.cmd(["SET", balance, "never"]);
            Ok(())
        },
    );
    assert!(
        matches!(result, Err(Error::WatchAborted { attempts: 3 })),
        "{:?}",
        result
    );
    assert_eq!(attempts, 3);
    assert_eq!(c.query(port, &["GET", balance]).as_bytes(), b"104");
    // Keys of two slots are refused before anything is sent.
    let result: respline::Result<()> =
        cluster.transaction(&["watch:x", "watch:y"], WatchOptions::default(), |_, _| {
            panic!("must not run")
        });
    expect_crossslot(result, "WATCH over two slots");
    cluster.execute(["DEL", balance, log]).unwrap();
}

// ------------------------------------------------------------ scans

#[test]
fn scan_yields_every_key_once_and_hscan_sscan_zscan_by_key() {
    let _alone = KEYSPACE.write().unwrap_or_else(|e| e.into_inner());
    let c = harness::shared();
    // A shrink of a key table that earlier deletions made due starts
    // within a server cron tick (100 ms): let it happen before scanning.
    thread::sleep(Duration::from_millis(250));
    let mut cluster = connect(c);
    let keys: BTreeSet<String> = (0..600).map(|i| format!("scanonce:{}", i)).collect();
    let mut pipe = Pipeline::new();
    for k in &keys {
        pipe.cmd(["SET", k.as_str(), "1"]);
    }
    pipe.query::<()>(&mut cluster).unwrap();

    let t = Instant::now();
    let mut seen = Vec::new();
    for key in cluster.scan::<String>().pattern("scanonce:*").count(50) {
        seen.push(key.unwrap());
    }
    let took = t.elapsed();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "some keys were yielded twice");
    assert_eq!(unique, keys);
    eprintln!("[timing] SCAN of 600 keys on 3 primaries: {:?}", took);

    // HSCAN, SSCAN, ZSCAN, each on its key's node.
    let (h, s, z) = ("scanonce-h", "scanonce-s", "scanonce-z");
    cluster.execute(["DEL", h, s, z]).unwrap();
    let mut pipe = Pipeline::new();
    for i in 0..300 {
        pipe.cmd(["HSET", h, &format!("f{}", i), &format!("v{}", i)]);
        pipe.cmd(["SADD", s, &format!("m{}", i)]);
        pipe.cmd(["ZADD", z, &i.to_string(), &format!("z{}", i)]);
    }
    pipe.query::<()>(&mut cluster).unwrap();
    let fields: Vec<(String, String)> = cluster
        .hscan::<String, String>(h)
        .count(20)
        .into_iter()
        .collect::<respline::Result<_>>()
        .unwrap();
    let fields: BTreeMap<String, String> = fields.into_iter().collect();
    assert_eq!(fields.len(), 300);
    assert!(fields.iter().all(|(f, v)| f[1..] == v[1..]));
    let members: Vec<String> = cluster
        .sscan::<String>(s)
        .count(20)
        .into_iter()
        .collect::<respline::Result<_>>()
        .unwrap();
    let members: BTreeSet<String> = members.into_iter().collect();
    assert_eq!(members.len(), 300);
    let scored: Vec<(String, f64)> = cluster
        .zscan::<String>(z)
        .count(20)
        .into_iter()
        .collect::<respline::Result<_>>()
        .unwrap();
    assert_eq!(scored.len(), 300);
    assert!(scored.iter().all(|(m, score)| m[1..] == score.to_string()));
    let matching: Vec<String> = cluster
        .sscan::<String>(s)
        .pattern("m1?")
        .into_iter()
        .collect::<respline::Result<_>>()
        .unwrap();
    assert_eq!(matching.len(), 10);

    let mut del = vec!["DEL", h, s, z];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(cluster.query::<i64>(del).unwrap(), 603);
}

// ------------------------------------------------------------ scripts

#[test]
fn script_invoke_routes_by_first_key_and_survives_script_flush() {
    let _cache = script_cache();
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let script = Script::new("return redis.call('SET', KEYS[1], ARGV[1])");
    let keys: Vec<(u16, String)> = c
        .primaries()
        .into_iter()
        .map(|p| (p, owners.key_on(p, "script:")))
        .collect();
    let evals = |c: &TestCluster| c.total_calls("eval");
    let evalshas = |c: &TestCluster| c.total_calls("evalsha");

    let (eval0, sha0) = (evals(c), evalshas(c));
    for (port, key) in &keys {
        let ok: String = script
            .key(key.as_str())
            .arg("first")
            .invoke(&mut cluster)
            .unwrap();
        assert_eq!(ok, "OK");
        assert_eq!(c.query(*port, &["GET", key.as_str()]).as_bytes(), b"first");
    }
    // Loaded (or not) per node: at most one EVAL per node, then EVALSHA.
    for (_, key) in &keys {
        let _: String = script
            .key(key.as_str())
            .arg("second")
            .invoke(&mut cluster)
            .unwrap();
    }
    let (eval1, sha1) = (evals(c), evalshas(c));
    assert!(eval1 - eval0 <= 3, "{} EVALs", eval1 - eval0);
    assert_eq!(sha1 - sha0, 6);

    // SCRIPT FLUSH goes to every primary; invoke falls back to EVAL.
    let ok: String = cluster.query(["SCRIPT", "FLUSH"]).unwrap();
    assert_eq!(ok, "OK");
    let exists: Vec<i64> = cluster.query(["SCRIPT", "EXISTS", script.sha()]).unwrap();
    assert_eq!(exists, [0]);
    for (port, key) in &keys {
        let ok: String = script
            .key(key.as_str())
            .arg("third")
            .invoke(&mut cluster)
            .unwrap();
        assert_eq!(ok, "OK");
        assert_eq!(c.query(*port, &["GET", key.as_str()]).as_bytes(), b"third");
    }
    let (eval2, sha2) = (evals(c), evalshas(c));
    assert_eq!((eval2 - eval1, sha2 - sha1), (3, 3));
    // Every primary has it again now.
    let exists: Vec<i64> = cluster.query(["SCRIPT", "EXISTS", script.sha()]).unwrap();
    assert_eq!(exists, [1]);
    for (_, key) in &keys {
        cluster.execute(["DEL", key.as_str()]).unwrap();
    }
}

// ------------------------------------------------------------ big loads

#[test]
fn execute_chunked_20000_commands_with_1mb_values() {
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    const N: usize = 10_000;
    const BIG: usize = 1 << 20;
    let is_big = |i: usize| i % 100 == 42;
    let key = |i: usize| format!("chunked:{}", i);
    let big_value = |i: usize| vec![b'a' + (i % 26) as u8; BIG];
    let big_nodes: HashSet<u16> = (0..N)
        .filter(|&i| is_big(i))
        .map(|i| owners.port(&key(i)))
        .collect();
    assert_eq!(big_nodes.len(), 3);

    let commands = (0..2 * N).map(move |j| {
        if j < N {
            let value = if is_big(j) {
                big_value(j)
            } else {
                j.to_string().into_bytes()
            };
            cmd("SET").arg(key(j)).arg(value)
        } else {
            cmd("GET").arg(key(j - N))
        }
    });
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    // In a thread, so that a deadlock fails the test instead of hanging it.
    thread::spawn(move || {
        let mut next = 0;
        let mut big_checked = 0;
        let chunking = Chunking::default().max_commands(2000).max_bytes(16 << 20);
        let summary = cluster.execute_chunked(commands, &chunking, |i, v| {
            assert_eq!(i, next, "replies out of order");
            next += 1;
            if i < N {
                assert_eq!(v, Value::SimpleString("OK".into()), "reply #{}", i);
            } else if is_big(i - N) {
                let bytes = bulk(&v);
                assert!(
                    bytes.len() == BIG && bytes == big_value(i - N),
                    "reply #{}",
                    i
                );
                big_checked += 1;
            } else {
                assert_eq!(bulk(&v), (i - N).to_string().as_bytes(), "reply #{}", i);
            }
        });
        let del = cluster.execute_chunked(
            (0..N).map(|i| cmd("UNLINK").arg(key(i))),
            &Chunking::default(),
            |_, v| assert_eq!(v, Value::Integer(1)),
        );
        let _ = tx.send((summary, next, big_checked, del));
    });
    let (summary, handed, big_checked, del) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("execute_chunked did not finish within 60 s (deadlock?)");
    let took = t.elapsed();
    let summary = summary.unwrap();
    assert_eq!(
        (summary.commands, summary.errors, handed),
        (2 * N, 0, 2 * N)
    );
    assert_eq!(big_checked, 100);
    assert_eq!(del.unwrap().commands, N);
    eprintln!(
        "[timing] execute_chunked: 20,000 commands (100 x 1 MiB SET + GET) in {} chunks, {:?} (with the UNLINKs)",
        summary.chunks, took
    );
    assert!(took < Duration::from_secs(30), "{:?}", took);
}

#[test]
fn execute_chunked_reports_errors_by_their_index_in_the_load() {
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let key = |i: usize| format!("chunkerr:{}", i);
    let bad = "chunkerr:string";
    cluster.execute(["SET", bad, "text"]).unwrap();
    let commands = || {
        (0..5000).map(move |i| {
            if i == 3456 || i == 4321 {
                cmd("INCR").arg(bad)
            } else {
                cmd("SET").arg(key(i)).arg(i)
            }
        })
    };
    let chunking = Chunking::default().max_commands(1000);
    let mut errors_seen = Vec::new();
    let summary = cluster
        .execute_chunked(commands(), &chunking, |i, v| {
            if v.is_error() {
                errors_seen.push(i);
            }
        })
        .unwrap();
    assert_eq!(
        (summary.commands, summary.chunks, summary.errors),
        (5000, 5, 2)
    );
    assert_eq!(errors_seen, [3456, 4321]);
    assert_eq!(
        summary.first_error.as_ref().and_then(|e| e.index),
        Some(3456)
    );
    match summary.check() {
        Err(Error::Server(e)) => assert_eq!(e.index, Some(3456)),
        other => panic!("expected the first error, got {:?}", other),
    }
    // Stopping on the error: the chunk that holds it ran, nothing after it.
    let dels = || (0..5000).map(move |i| cmd("DEL").arg(key(i)));
    cluster
        .execute_chunked(dels(), &chunking, |_, _| {})
        .unwrap()
        .check()
        .unwrap();
    let mut handed = 0;
    let stop = chunking.clone().stop_on_error(true);
    match cluster.execute_chunked(commands(), &stop, |_, _| handed += 1) {
        Err(Error::Server(e)) => assert_eq!(e.index, Some(3456)),
        other => panic!("expected the first error, got {:?}", other),
    }
    assert_eq!(handed, 4000);
    let ran: i64 = cluster
        .query(["EXISTS", key(3999).as_str(), key(4000).as_str()])
        .unwrap();
    assert_eq!(ran, 1);
    cluster
        .execute_chunked(dels(), &chunking, |_, _| {})
        .unwrap()
        .check()
        .unwrap();
    cluster.execute(["DEL", bad]).unwrap();
}

// ------------------------------------------------------------ options

#[test]
fn resp3_from_the_seed_url() {
    let _counts = sends_session_commands();
    let (c, _keyspace) = shared();
    let url = format!("redis://127.0.0.1:{}?protocol=resp3", c.ports()[0]);
    let options = ClusterOptions::from_urls(&[url.as_str()]).unwrap();
    let mut cluster = options.connect().unwrap();
    let h = "resp3:{h}";
    cluster.execute(["DEL", h]).unwrap();
    let added: i64 = cluster.query(["HSET", h, "a", "1", "b", "2"]).unwrap();
    assert_eq!(added, 2);
    let all = cluster.execute(["HGETALL", h]).unwrap();
    match &all {
        Value::Map(pairs) => assert_eq!(pairs.len(), 2, "{:?}", all),
        other => panic!("expected a RESP3 map, got {:?}", other),
    }
    let map: HashMap<String, i64> = cluster.query(["HGETALL", h]).unwrap();
    assert_eq!(map, HashMap::from([("a".into(), 1), ("b".into(), 2)]));
    // Split and fan-out merges with RESP3 replies.
    let keys: Vec<String> = (0..12).map(|i| format!("resp3:k{}", i)).collect();
    let mut mset = vec!["MSET"];
    for k in &keys {
        mset.push(k.as_str());
        mset.push(k.as_str());
    }
    cluster.execute(mset).unwrap();
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("resp3:none");
    let got: Vec<Option<String>> = cluster.query(mget).unwrap();
    assert_eq!(got.len(), 13);
    assert!(got[..12]
        .iter()
        .zip(&keys)
        .all(|(g, k)| g.as_deref() == Some(k.as_str())));
    assert_eq!(got[12], None);
    let found: BTreeSet<String> = cluster.query(["KEYS", "resp3:k*"]).unwrap();
    assert_eq!(found, keys.iter().cloned().collect());
    let exists: Vec<i64> = cluster
        .query([
            "SCRIPT",
            "EXISTS",
            "ffffffffffffffffffffffffffffffffffffffff",
        ])
        .unwrap();
    assert_eq!(exists, [0]);
    let size: i64 = cluster.query(["DBSIZE"]).unwrap();
    assert!(size >= 13, "{}", size);
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(cluster.query::<i64>(del).unwrap(), 12);
    // Sharded pub/sub over RESP3 connections (messages are push frames).
    let mut sub = cluster.shard_subscriber();
    sub.ssubscribe(&["resp3:chan:a", "resp3:chan:b"]).unwrap();
    for ch in ["resp3:chan:a", "resp3:chan:b"] {
        let n: i64 = cluster.query(["SPUBLISH", ch, "hi"]).unwrap();
        assert_eq!(n, 1);
    }
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 2 && Instant::now() < deadline {
        if let Some(m) = sub.receive(Some(Duration::from_millis(100))).unwrap() {
            assert_eq!(m.payload, b"hi");
            got.insert(m.channel);
        }
    }
    assert_eq!(got.len(), 2);
    // Every node connection speaks RESP3.
    for &p in &c.primaries() {
        let info: String = cluster
            .on(Route::Node(&addr(p)), ["CLIENT", "INFO"])
            .unwrap();
        assert!(info.contains(" resp=3"), "node {}: {}", p, info);
    }
    cluster.execute(["DEL", h]).unwrap();
}

#[test]
fn read_from_replicas_sends_reads_to_replicas() {
    let _counts = sends_session_commands();
    let (c, _keyspace) = shared();
    let owners = Owners::of(c);
    let urls = c.seed_urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut cluster = ClusterOptions::from_urls(&urls)
        .unwrap()
        .read_from_replicas(true)
        .connect()
        .unwrap();
    let primaries = c.primaries();
    let mut keys = Vec::new();
    for &p in &primaries {
        let key = owners.key_on(p, "replicaread:");
        // Writes go to the primary (a replica would answer MOVED or READONLY).
        let ok: String = cluster.query(["SET", key.as_str(), "replicated"]).unwrap();
        assert_eq!(ok, "OK");
        assert_eq!(c.query(p, &["GET", key.as_str()]).as_bytes(), b"replicated");
        let acked: i64 = cluster
            .on(Route::Key(key.as_bytes()), ["WAIT", "1", "2000"])
            .unwrap();
        assert_eq!(acked, 1, "the write to {} did not reach its replica", p);
        keys.push((p, c.replicas_of(p), key));
    }
    const READS: u64 = 25;
    let before: Vec<Vec<u64>> = keys
        .iter()
        .map(|(_, replicas, _)| replicas.iter().map(|&r| c.calls_on(r, "get")).collect())
        .collect();
    for (_, _, key) in &keys {
        for _ in 0..READS {
            let got: String = cluster.query(["GET", key.as_str()]).unwrap();
            assert_eq!(got, "replicated");
        }
    }
    for ((p, replicas, _), before) in keys.iter().zip(&before) {
        let grew: u64 = replicas
            .iter()
            .zip(before)
            .map(|(&r, &b)| c.calls_on(r, "get") - b)
            .sum();
        assert!(
            grew >= READS,
            "the replicas {:?} of {} served {} GETs, expected {}",
            replicas,
            p,
            grew,
            READS
        );
    }
    // A pipeline of reads only goes to replicas too; one that also writes
    // goes to primaries, so that it reads its own writes.
    let replica_gets = |c: &TestCluster| -> u64 {
        keys.iter()
            .flat_map(|(_, replicas, _)| replicas.iter())
            .map(|&r| c.calls_on(r, "get"))
            .sum()
    };
    let mut reads_only = Pipeline::new();
    for (_, _, key) in &keys {
        reads_only.cmd(["GET", key.as_str()]);
    }
    let before = replica_gets(c);
    let got: Vec<String> = reads_only.query(&mut cluster).unwrap();
    assert_eq!(got, vec!["replicated"; keys.len()]);
    assert_eq!(replica_gets(c) - before, keys.len() as u64);
    let mut mixed = Pipeline::new();
    mixed.cmd(["SET", keys[0].2.as_str(), "fresh"]);
    for (_, _, key) in &keys {
        mixed.cmd(["GET", key.as_str()]);
    }
    let before = replica_gets(c);
    let got: Vec<String> = mixed.query(&mut cluster).unwrap();
    assert_eq!(got[1], "fresh", "a pipeline did not read its own write");
    assert_eq!(
        replica_gets(c),
        before,
        "a pipeline with a write read from replicas"
    );
    // A write after reads still goes to the primary.
    for (p, _, key) in &keys {
        let n: i64 = cluster.query(["DEL", key.as_str()]).unwrap();
        assert_eq!(n, 1);
        assert_eq!(c.query(*p, &["EXISTS", key.as_str()]).as_int(), 0);
    }
}

// ------------------------------------------------------------ pub/sub

#[test]
fn sharded_pubsub_over_several_slots() {
    let _counts = sends_session_commands();
    let (c, _keyspace) = shared();
    let mut cluster = connect(c);
    let owners = Owners::of(c);
    let channels: Vec<String> = (0..6).map(|i| format!("shardchan:{}", i)).collect();
    let nodes: HashSet<u16> = channels.iter().map(|ch| owners.port(ch)).collect();
    assert!(nodes.len() >= 2, "{:?}", nodes);
    let mut sub = cluster.shard_subscriber();
    let t = Instant::now();
    sub.ssubscribe(&channels).unwrap();
    eprintln!(
        "[timing] SSUBSCRIBE to {} channels on {} nodes: {:?}",
        channels.len(),
        nodes.len(),
        t.elapsed()
    );
    const PER_CHANNEL: usize = 5;
    for i in 0..PER_CHANNEL {
        for ch in &channels {
            let receivers: i64 = cluster
                .query(["SPUBLISH", ch.as_str(), &format!("{}#{}", ch, i)])
                .unwrap();
            assert_eq!(receivers, 1, "channel {}", ch);
        }
    }
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let total = channels.len() * PER_CHANNEL;
    while got.values().map(Vec::len).sum::<usize>() < total {
        assert!(Instant::now() < deadline, "only got {:?}", got);
        if let Some(m) = sub.receive(Some(Duration::from_millis(200))).unwrap() {
            got.entry(m.channel_str().unwrap().to_string())
                .or_default()
                .push(m.payload_str().unwrap().to_string());
        }
    }
    for ch in &channels {
        let expected: Vec<String> = (0..PER_CHANNEL).map(|i| format!("{}#{}", ch, i)).collect();
        assert_eq!(got.get(ch), Some(&expected));
    }
    assert!(sub
        .receive(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());

    // SUNSUBSCRIBE one channel: nobody listens there any more.
    sub.sunsubscribe(&[channels[0].as_str()]).unwrap();
    assert_eq!(sub.channels().count(), channels.len() - 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = cluster
            .query(["SPUBLISH", channels[0].as_str(), "gone"])
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still {} receivers", n);
        let _ = sub.receive(Some(Duration::from_millis(20))).unwrap();
    }
    let n: i64 = cluster
        .query(["SPUBLISH", channels[1].as_str(), "still"])
        .unwrap();
    assert_eq!(n, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        assert!(Instant::now() < deadline);
        if let Some(m) = sub.receive(Some(Duration::from_millis(100))).unwrap() {
            break m;
        }
    };
    assert_eq!(
        (m.channel_str().unwrap(), m.payload_str().unwrap()),
        (channels[1].as_str(), "still")
    );
}

// ------------------------------------------------------------ seeds

/// A loopback port with nothing listening (bound, then released).
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn seeds_dead_live_and_invalid() {
    let (c, _keyspace) = shared();
    let live = format!("redis://127.0.0.1:{}", c.ports()[1]);
    let dead = format!("redis://127.0.0.1:{}", dead_port());

    let t = Instant::now();
    let mut cluster = Cluster::open(&[dead.as_str(), live.as_str()]).unwrap();
    eprintln!("[timing] open with a dead seed first: {:?}", t.elapsed());
    let pong: String = cluster.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(cluster.primaries().len(), 3);

    let dead2 = format!("redis://127.0.0.1:{}", dead_port());
    match Cluster::open(&[dead.as_str(), dead2.as_str()]) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("could not connect") && msg.contains(&dead["redis://".len()..]),
                "{}",
                msg
            );
            assert!(!e.may_have_reached_server(), "{}", msg);
        }
        Ok(_) => panic!("expected no cluster from dead seeds"),
    }
    match Cluster::open(&[]) {
        Err(Error::Config(msg)) => assert!(msg.contains("seed"), "{}", msg),
        other => panic!("expected Error::Config, got {:?}", other.map(|_| ())),
    }
    match Cluster::open(&["unix:///tmp/respline-cluster-test.sock", live.as_str()]) {
        Err(Error::Config(msg)) => assert!(msg.contains("Unix socket"), "{}", msg),
        other => panic!("expected Error::Config, got {:?}", other.map(|_| ())),
    }
    let db2 = format!("{}/2", live);
    match Cluster::open(&[db2.as_str()]) {
        Err(Error::Config(msg)) => assert!(msg.contains("database 0"), "{}", msg),
        other => panic!("expected Error::Config, got {:?}", other.map(|_| ())),
    }
    let options = ClusterOptions::from_urls(&[live.as_str()])
        .unwrap()
        .max_attempts(0);
    assert!(matches!(options.connect(), Err(Error::Config(_))));
}
