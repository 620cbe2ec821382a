//! Connection and Pipeline against real redis-server processes, one per test
//! (see tests/support/mod.rs). Nothing here touches port 6379.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use respline::{
    cmd, ConnectOptions, Connection, Error, FromValue, Pipeline, Protocol, ReplyTimeout,
    ServerError, ToCommand, Value,
};
use support::RedisServer;

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

const PROTOCOLS: [Protocol; 2] = [Protocol::Resp2, Protocol::Resp3];

fn tcp(server: &RedisServer) -> ConnectOptions {
    let (host, port) = server.tcp_addr();
    ConnectOptions::tcp(host, port)
}

fn unix(server: &RedisServer) -> ConnectOptions {
    ConnectOptions::unix(server.unix_path())
}

fn connect(options: &ConnectOptions) -> Connection {
    Connection::connect(options)
        .unwrap_or_else(|e| panic!("connect with {:?} failed: {}", options, e))
}

/// Sends a command whose reply must be a success, and returns it.
fn ok<T: FromValue>(conn: &mut Connection, command: impl ToCommand) -> T {
    conn.query(command).unwrap()
}

fn ping(conn: &mut Connection) {
    assert!(!conn.is_broken());
    let pong: String = ok(conn, ["PING"]);
    assert_eq!(pong, "PONG");
}

/// A connect that fails at a handshake step with the server's `code`; the
/// message names the step.
fn expect_handshake_error(result: respline::Result<impl std::fmt::Debug>, step: &str, code: &str) {
    match result {
        Err(e @ Error::Handshake { .. }) => {
            assert!(
                e.to_string()
                    .starts_with(&format!("connection handshake failed at {}: ", step)),
                "{}",
                e
            );
            assert_eq!(e.server_error().map(|s| s.code()), Some(code), "{}", e);
            assert!(!e.may_have_reached_server());
        }
        other => panic!("expected a {} error at {}, got {:?}", code, step, other),
    }
}

/// The handshake step that authenticates: HELLO under RESP3, AUTH under RESP2.
fn auth_step(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Resp3 => "HELLO",
        Protocol::Resp2 => "AUTH",
    }
}

fn expect_server_error(result: respline::Result<impl std::fmt::Debug>, code: &str) {
    match result {
        Err(Error::Server(e)) => assert_eq!(e.code(), code, "{}", e),
        other => panic!("expected a {} server error, got {:?}", code, other),
    }
}

macro_rules! integers {
    ($conn:expr, $command:expr, $expected:expr, $($t:ty),+) => {$(
        let got: $t = $conn.query($command).unwrap();
        assert_eq!(got, $expected as $t, "{} from {:?}", stringify!($t), $command);
    )+};
}

macro_rules! integer_errors {
    ($conn:expr, $command:expr, $($t:ty),+) => {$(
        match $conn.query::<$t>($command) {
            Err(Error::Conversion(_)) => {}
            other => panic!("{} from {:?}: expected a conversion error, got {:?}",
                stringify!($t), $command, other),
        }
    )+};
}

/// Every conversion through real replies, under one protocol.
fn check_conversions(conn: &mut Connection) {
    let resp3 = conn.protocol() == Protocol::Resp3;
    let _: () = ok(conn, ["FLUSHDB"]);

    // Strings and bytes.
    let _: () = ok(conn, ["SET", "s", "héllo"]);
    assert_eq!(ok::<String>(conn, ["GET", "s"]), "héllo");
    assert_eq!(ok::<Vec<u8>>(conn, ["GET", "s"]), "héllo".as_bytes());
    assert_eq!(ok::<String>(conn, ["PING"]), "PONG");
    assert_eq!(ok::<String>(conn, ["STRLEN", "s"]), "6");

    // Integers: from an integer reply and from a bulk string, every type.
    let _: () = ok(conn, ["SET", "n", "100"]);
    integers!(conn, ["GET", "n"], 100, i8, i16, i32, i64, i128, isize);
    integers!(conn, ["GET", "n"], 100, u8, u16, u32, u64, u128, usize);
    integers!(
        conn,
        ["INCRBY", "n", "0"],
        100,
        i8,
        i16,
        i32,
        i64,
        i128,
        isize
    );
    integers!(
        conn,
        ["INCRBY", "n", "0"],
        100,
        u8,
        u16,
        u32,
        u64,
        u128,
        usize
    );
    let _: () = ok(conn, ["SET", "neg", "-7"]);
    integers!(conn, ["GET", "neg"], -7, i8, i16, i32, i64, i128, isize);
    integers!(
        conn,
        ["DECRBY", "neg", "0"],
        -7,
        i8,
        i16,
        i32,
        i64,
        i128,
        isize
    );
    integer_errors!(conn, ["GET", "neg"], u8, u16, u32, u64, u128, usize);
    integer_errors!(conn, ["DECRBY", "neg", "0"], u8, u16, u32, u64, u128, usize);
    let _: () = ok(conn, ["SET", "n", "300"]);
    integer_errors!(conn, ["GET", "n"], i8, u8);
    let _: () = ok(conn, ["SET", "max", &i64::MAX.to_string()]);
    assert_eq!(ok::<i64>(conn, ["INCRBY", "max", "0"]), i64::MAX);
    let _: () = ok(conn, ["SET", "wide", &u128::MAX.to_string()]);
    assert_eq!(ok::<u128>(conn, ["GET", "wide"]), u128::MAX);
    integer_errors!(conn, ["GET", "wide"], i128, u64);
    let _: () = ok(conn, ["SET", "wide", &i128::MIN.to_string()]);
    assert_eq!(ok::<i128>(conn, ["GET", "wide"]), i128::MIN);

    // f64 from ZSCORE: a bulk string in RESP2, a double in RESP3.
    let _: () = ok(conn, ["ZADD", "z", "1.5", "m", "-2.25", "n"]);
    let raw: Value = ok(conn, ["ZSCORE", "z", "m"]);
    if resp3 {
        assert_eq!(raw, Value::Double(1.5));
    } else {
        assert_eq!(raw, Value::BulkString(b"1.5".to_vec()));
    }
    assert_eq!(ok::<f64>(conn, ["ZSCORE", "z", "m"]), 1.5);
    assert_eq!(ok::<f64>(conn, ["ZSCORE", "z", "n"]), -2.25);
    assert_eq!(ok::<f32>(conn, ["ZSCORE", "z", "m"]), 1.5);
    assert_eq!(ok::<Option<f64>>(conn, ["ZSCORE", "z", "nobody"]), None);
    assert_eq!(ok::<f64>(conn, ["INCRBYFLOAT", "f", "0.5"]), 0.5);
    assert_eq!(ok::<f64>(conn, ["ZCARD", "z"]), 2.0);

    // bool from integer replies.
    assert!(ok::<bool>(conn, ["EXISTS", "s"]));
    assert!(!ok::<bool>(conn, ["EXISTS", "missing"]));
    assert!(ok::<bool>(conn, ["SETNX", "fresh", "1"]));
    assert!(!ok::<bool>(conn, ["SETNX", "fresh", "2"]));
    assert!(ok::<bool>(conn, ["GET", "fresh"]));

    // Option.
    assert_eq!(ok::<Option<String>>(conn, ["GET", "missing"]), None);
    assert_eq!(
        ok::<Option<String>>(conn, ["GET", "s"]).as_deref(),
        Some("héllo")
    );
    assert_eq!(ok::<Option<i64>>(conn, ["GET", "fresh"]), Some(1));

    // Vec.
    let _: () = ok(conn, ["RPUSH", "l", "a", "b", "c"]);
    assert_eq!(
        ok::<Vec<String>>(conn, ["LRANGE", "l", "0", "-1"]),
        ["a", "b", "c"]
    );
    assert_eq!(
        ok::<Vec<Vec<u8>>>(conn, ["LRANGE", "l", "0", "1"]),
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert!(ok::<Vec<String>>(conn, ["LRANGE", "nolist", "0", "-1"]).is_empty());
    assert_eq!(
        ok::<Vec<Option<String>>>(conn, ["MGET", "s", "missing", "fresh"]),
        [Some("héllo".to_string()), None, Some("1".to_string())]
    );

    // Maps from HGETALL: a flat array in RESP2, a map in RESP3.
    let _: () = ok(conn, ["HSET", "h", "f1", "1", "f2", "2", "f3", "3"]);
    let raw: Value = ok(conn, ["HGETALL", "h"]);
    if resp3 {
        assert!(
            matches!(&raw, Value::Map(pairs) if pairs.len() == 3),
            "{}",
            raw
        );
    } else {
        assert!(
            matches!(&raw, Value::Array(items) if items.len() == 6),
            "{}",
            raw
        );
    }
    let expected: BTreeMap<String, i64> = [("f1", 1), ("f2", 2), ("f3", 3)]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(
        ok::<BTreeMap<String, i64>>(conn, ["HGETALL", "h"]),
        expected
    );
    let hash: HashMap<String, i64> = ok(conn, ["HGETALL", "h"]);
    assert_eq!(hash.into_iter().collect::<BTreeMap<_, _>>(), expected);
    let bytes: HashMap<Vec<u8>, String> = ok(conn, ["HGETALL", "h"]);
    assert_eq!(bytes.get(&b"f2"[..]).map(String::as_str), Some("2"));
    assert!(ok::<HashMap<String, String>>(conn, ["HGETALL", "nohash"]).is_empty());

    // Sets from SMEMBERS: an array in RESP2, a set in RESP3.
    let _: () = ok(conn, ["SADD", "set", "x", "y", "z"]);
    let raw: Value = ok(conn, ["SMEMBERS", "set"]);
    if resp3 {
        assert!(
            matches!(&raw, Value::Set(items) if items.len() == 3),
            "{}",
            raw
        );
    } else {
        assert!(
            matches!(&raw, Value::Array(items) if items.len() == 3),
            "{}",
            raw
        );
    }
    let expected: BTreeSet<String> = ["x", "y", "z"].iter().map(|s| s.to_string()).collect();
    assert_eq!(ok::<BTreeSet<String>>(conn, ["SMEMBERS", "set"]), expected);
    let hashed: HashSet<String> = ok(conn, ["SMEMBERS", "set"]);
    assert_eq!(hashed.into_iter().collect::<BTreeSet<_>>(), expected);
    let bytes: HashSet<Vec<u8>> = ok(conn, ["SMEMBERS", "set"]);
    assert!(bytes.contains(&b"y"[..]));
    assert!(ok::<BTreeSet<String>>(conn, ["SMEMBERS", "noset"]).is_empty());

    // Tuples of 1 to 8 elements, from MGET.
    for i in 1..=8 {
        let _: () = ok(conn, ["SET", &format!("t{}", i), &i.to_string()]);
    }
    let mget = |n: usize| {
        let mut c = cmd("MGET");
        for i in 1..=n {
            c = c.arg(format!("t{}", i));
        }
        c
    };
    assert_eq!(ok::<(u8,)>(conn, mget(1)), (1,));
    assert_eq!(ok::<(u8, String)>(conn, mget(2)), (1, "2".into()));
    assert_eq!(ok::<(i8, i16, i32)>(conn, mget(3)), (1, 2, 3));
    assert_eq!(ok::<(u64, u64, u64, u64)>(conn, mget(4)), (1, 2, 3, 4));
    assert_eq!(
        ok::<(f64, f64, f64, f64, f64)>(conn, mget(5)),
        (1.0, 2.0, 3.0, 4.0, 5.0)
    );
    assert_eq!(
        ok::<(bool, i64, i64, i64, i64, i64)>(conn, mget(6)),
        (true, 2, 3, 4, 5, 6)
    );
    assert_eq!(
        ok::<(i64, i64, i64, i64, i64, i64, Vec<u8>)>(conn, mget(7)),
        (1, 2, 3, 4, 5, 6, b"7".to_vec())
    );
    type Eight = (u8, i16, u32, i64, String, Vec<u8>, Option<String>, f64);
    let eight: Eight = ok(
        conn,
        cmd("MGET")
            .arg("t1")
            .arg("t2")
            .arg("t3")
            .arg("t4")
            .arg("t5")
            .arg("t6")
            .arg("none")
            .arg("t8"),
    );
    assert_eq!(eight, (1, 2, 3, 4, "5".into(), b"6".to_vec(), None, 8.0));
    // A tuple of the wrong arity is a conversion error and breaks nothing.
    match conn.query::<(i64, i64)>(mget(3)) {
        Err(Error::Conversion(_)) => {}
        other => panic!("expected a conversion error, got {:?}", other),
    }
    // An 8-tuple of mixed replies from a pipeline.
    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", "p", "v"])
        .cmd(["GET", "p"])
        .cmd(["INCR", "pc"])
        .cmd(["EXISTS", "p"])
        .cmd(["ZSCORE", "z", "m"])
        .cmd(["GET", "missing"])
        .cmd(["LRANGE", "l", "0", "-1"])
        .cmd(["HGETALL", "h"]);
    type Mixed = (
        (),
        String,
        i64,
        bool,
        f64,
        Option<String>,
        Vec<String>,
        BTreeMap<String, i64>,
    );
    let (a, b, c, d, e, f, g, h): Mixed = pipe.query(conn).unwrap();
    assert_eq!((a, b.as_str(), c, d, e, f), ((), "v", 1, true, 1.5, None));
    assert_eq!(g, ["a", "b", "c"]);
    assert_eq!(h.len(), 3);

    // A type mismatch and a server error leave the connection usable.
    match conn.query::<i64>(["GET", "s"]) {
        Err(Error::Conversion(_)) => {}
        other => panic!("expected a conversion error, got {:?}", other),
    }
    expect_server_error(conn.query::<i64>(["INCR", "l"]), "WRONGTYPE");
    ping(conn);
}

#[test]
fn conversions_through_real_replies_resp2_and_resp3() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        let mut conn = connect(&tcp(&server).protocol(protocol));
        assert_eq!(conn.protocol(), protocol);
        check_conversions(&mut conn);
    }
}

#[test]
fn binary_keys_and_values_survive() {
    let server = RedisServer::start();
    let mut conn = connect(&tcp(&server));
    let key: &[u8] = b"k\r\ney\x00\xff*1\r\n$3\r\n";
    let value: Vec<u8> = (0..=255u8).chain(b"\r\n\x00\r\n".iter().copied()).collect();
    let _: () = ok(&mut conn, cmd("SET").arg(key).arg(&value[..]));
    assert_eq!(ok::<Vec<u8>>(&mut conn, cmd("GET").arg(key)), value);
    assert_eq!(ok::<usize>(&mut conn, cmd("STRLEN").arg(key)), value.len());
    let keys: Vec<Vec<u8>> = ok(&mut conn, ["KEYS", "*"]);
    assert_eq!(keys, [key.to_vec()]);
    // A value that is itself a RESP reply is just bytes.
    let fake_reply = b"+OK\r\n:1\r\n$-1\r\n";
    let _: () = ok(&mut conn, cmd("SET").arg("resp").arg(&fake_reply[..]));
    let mut pipe = Pipeline::new();
    pipe.cmd(cmd("GET").arg("resp"))
        .cmd(cmd("GET").arg(key))
        .cmd(["PING"]);
    let (a, b, c): (Vec<u8>, Vec<u8>, String) = pipe.query(&mut conn).unwrap();
    assert_eq!((&a[..], b, c.as_str()), (&fake_reply[..], value, "PONG"));
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

#[test]
fn large_values_round_trip_and_the_buffer_shrinks_back() {
    let server = RedisServer::start();
    let mut conn = connect(&tcp(&server));
    for len in [1 << 20, 100 << 20] {
        let value = patterned(len);
        let _: () = ok(&mut conn, cmd("SET").arg("big").arg(&value[..]));
        assert_eq!(ok::<usize>(&mut conn, ["STRLEN", "big"]), len);
        let before = alloc::live();
        let got: Vec<u8> = ok(&mut conn, ["GET", "big"]);
        assert!(got == value, "the {} byte value came back different", len);
        drop(got);
        // What the connection holds after the reply: the read buffer is
        // back under 2 MiB (the value itself was dropped).
        let kept = alloc::live() - before;
        assert!(
            kept < 2 << 20,
            "the connection kept {} more bytes after a {} byte reply",
            kept,
            len
        );
        ping(&mut conn);
    }
}

#[test]
fn pipelines_of_1_1000_and_100000_commands() {
    let server = RedisServer::start();
    let mut conn = connect(&tcp(&server));
    for n in [1usize, 1_000, 100_000] {
        let key = format!("counter{}", n);
        let mut pipe = Pipeline::new();
        for _ in 0..n {
            pipe.cmd(["INCR", &key]);
        }
        let replies = pipe.execute(&mut conn).unwrap();
        assert_eq!(replies.len(), n);
        for (i, v) in replies.iter().enumerate() {
            assert_eq!(v, &Value::Integer(i as i64 + 1), "reply #{} of {}", i, n);
        }
        assert_eq!(ok::<usize>(&mut conn, ["GET", &key]), n);
    }
    // Mixed values, converted as a Vec.
    let mut pipe = Pipeline::new();
    for i in 0..1_000 {
        pipe.cmd(["SET", &format!("k{}", i), &format!("v{}", i)]);
    }
    for i in 0..1_000 {
        pipe.cmd(["GET", &format!("k{}", i)]);
    }
    let replies: Vec<Value> = pipe.query(&mut conn).unwrap();
    for i in 0..1_000 {
        assert_eq!(replies[i], Value::SimpleString("OK".into()));
        assert_eq!(
            replies[1_000 + i],
            Value::BulkString(format!("v{}", i).into_bytes())
        );
    }
    ping(&mut conn);
}

#[test]
fn a_failing_command_in_the_middle_of_a_pipeline() {
    let server = RedisServer::start();
    let mut conn = connect(&tcp(&server));
    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", "s", "hello"])
        .cmd(["INCR", "s"])
        .cmd(["APPEND", "s", "!"])
        .cmd(["GET", "s"]);
    let replies = pipe.execute_raw(&mut conn).unwrap();
    assert_eq!(replies[0], Value::SimpleString("OK".into()));
    assert!(
        matches!(&replies[1], Value::Error(e) if e.starts_with("ERR ")),
        "{}",
        replies[1]
    );
    assert_eq!(replies[2], Value::Integer(6));
    assert_eq!(replies[3], Value::BulkString(b"hello!".to_vec()));
    ping(&mut conn);

    let results: Vec<Result<Value, ServerError>> = pipe.query(&mut conn).unwrap();
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert_eq!((err.index, err.code()), (Some(1), "ERR"));
    ping(&mut conn);

    match pipe.query::<((), i64, i64, String)>(&mut conn) {
        Err(Error::Server(e)) => assert_eq!((e.index, e.code()), (Some(1), "ERR")),
        other => panic!("expected Error::Server, got {:?}", other),
    }
    // Every command ran, the failed one aside.
    assert_eq!(ok::<String>(&mut conn, ["GET", "s"]), "hello!");
    ping(&mut conn);
}

#[test]
fn transactions_commit() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        let mut conn = connect(&tcp(&server).protocol(protocol));
        let _: () = ok(&mut conn, ["DEL", "a"]);
        let mut tx = Pipeline::transaction();
        tx.cmd(["SET", "a", "1"])
            .cmd(["INCR", "a"])
            .cmd(["GET", "a"]);
        let (set, n, s): ((), i64, String) = tx.query(&mut conn).unwrap();
        assert_eq!((set, n, s.as_str()), ((), 2, "2"));
        // A command failing at run time is its own reply inside EXEC.
        let mut tx = Pipeline::transaction();
        tx.cmd(["SET", "b", "x"])
            .cmd(["INCR", "b"])
            .cmd(["GET", "b"]);
        let results: Vec<Result<Value, ServerError>> = tx.query(&mut conn).unwrap();
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().index, Some(1));
        assert_eq!(results[2], Ok(Value::BulkString(b"x".to_vec())));
        ping(&mut conn);
    }
}

#[test]
fn transactions_abort_with_execabort() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        let mut conn = connect(&tcp(&server).protocol(protocol));
        let mut tx = Pipeline::transaction();
        tx.cmd(["SET", "a", "1"])
            .cmd(["NOSUCHCOMMAND", "x"])
            .cmd(["INCR", "a"])
            .cmd(cmd("GET"));
        match tx.execute(&mut conn) {
            Err(Error::ExecAbort { errors }) => {
                let got: Vec<_> = errors.iter().map(|e| (e.index, e.code())).collect();
                assert_eq!(got, [(Some(1), "ERR"), (Some(3), "ERR")]);
            }
            other => panic!("expected Error::ExecAbort, got {:?}", other),
        }
        assert!(!conn.is_broken());
        // Nothing ran.
        assert_eq!(ok::<Option<String>>(&mut conn, ["GET", "a"]), None);
        ping(&mut conn);
    }
}

#[test]
fn transactions_fail_when_a_watched_key_changes() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        let options = tcp(&server).protocol(protocol);
        let mut conn = connect(&options);
        let mut other = connect(&options);
        let _: () = ok(&mut conn, ["SET", "w", "original"]);
        let _: () = ok(&mut conn, ["WATCH", "w"]);
        let _: () = ok(&mut other, ["SET", "w", "theirs"]);
        let mut tx = Pipeline::transaction();
        tx.cmd(["SET", "w", "mine"]).cmd(["INCR", "wc"]);
        match tx.execute(&mut conn) {
            Err(Error::WatchAborted { attempts: 1 }) => {}
            other => panic!("expected Error::WatchAborted, got {:?}", other),
        }
        assert!(!conn.is_broken());
        assert_eq!(ok::<String>(&mut conn, ["GET", "w"]), "theirs");
        assert_eq!(ok::<Option<i64>>(&mut conn, ["GET", "wc"]), None);
        // EXEC cleared the WATCH: the same transaction now commits.
        let (set, n): ((), i64) = tx.query(&mut conn).unwrap();
        assert_eq!((set, n), ((), 1));
        assert_eq!(ok::<String>(&mut other, ["GET", "w"]), "mine");
        let _: () = ok(&mut conn, ["DEL", "wc"]);
    }
}

#[test]
fn auth_with_an_acl_user() {
    let server =
        RedisServer::start_with(&["--user", "alice", "on", ">s3cret", "~*", "&*", "+@all"]);
    for protocol in PROTOCOLS {
        let good = tcp(&server)
            .protocol(protocol)
            .auth(Some("alice"), "s3cret");
        let mut conn = connect(&good);
        assert_eq!(ok::<String>(&mut conn, ["ACL", "WHOAMI"]), "alice");
        ping(&mut conn);
        let bad = tcp(&server).protocol(protocol).auth(Some("alice"), "wrong");
        expect_handshake_error(Connection::connect(&bad), auth_step(protocol), "WRONGPASS");
        let nobody = tcp(&server).protocol(protocol).auth(Some("bob"), "s3cret");
        expect_handshake_error(
            Connection::connect(&nobody),
            auth_step(protocol),
            "WRONGPASS",
        );
    }
}

#[test]
fn auth_with_requirepass_for_the_default_user() {
    let server = RedisServer::start_with(&["--requirepass", "pa55"]);
    for protocol in PROTOCOLS {
        let mut conn = connect(&tcp(&server).protocol(protocol).auth(None, "pa55"));
        assert_eq!(conn.protocol(), protocol);
        assert_eq!(ok::<String>(&mut conn, ["ACL", "WHOAMI"]), "default");
        ping(&mut conn);
        let bad = tcp(&server).protocol(protocol).auth(None, "wrong");
        expect_handshake_error(Connection::connect(&bad), auth_step(protocol), "WRONGPASS");
    }
    // Without a password, the connection opens (RESP2 sends nothing) but
    // every command is refused.
    let mut conn = connect(&tcp(&server));
    expect_server_error(conn.query::<String>(["PING"]), "NOAUTH");
    assert!(!conn.is_broken());
    // RESP3's HELLO is refused at once.
    expect_handshake_error(
        Connection::connect(&tcp(&server).protocol(Protocol::Resp3)),
        "HELLO",
        "NOAUTH",
    );
}

#[test]
fn select_a_database_on_connect() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        let mut db2 = connect(&tcp(&server).protocol(protocol).db(2));
        let mut db0 = connect(&tcp(&server).protocol(protocol));
        let _: () = ok(&mut db2, ["SET", "only-in-2", "yes"]);
        assert_eq!(ok::<Option<String>>(&mut db0, ["GET", "only-in-2"]), None);
        assert_eq!(
            ok::<Option<String>>(&mut db2, ["GET", "only-in-2"]).as_deref(),
            Some("yes")
        );
        let info: String = ok(&mut db2, ["CLIENT", "INFO"]);
        assert!(info.contains(" db=2 "), "{}", info);
        let _: () = ok(&mut db2, ["FLUSHDB"]);
    }
    // An invalid db fails the handshake at SELECT with the server's error.
    expect_handshake_error(Connection::connect(&tcp(&server).db(99)), "SELECT", "ERR");
}

#[test]
fn client_name_is_set_on_connect() {
    let server = RedisServer::start();
    for (protocol, name) in [
        (Protocol::Resp2, "respline-two"),
        (Protocol::Resp3, "respline-three"),
    ] {
        let mut conn = connect(&tcp(&server).protocol(protocol).client_name(name));
        let list: String = ok(&mut conn, ["CLIENT", "LIST"]);
        assert!(list.contains(&format!(" name={} ", name)), "{}", list);
        assert_eq!(ok::<String>(&mut conn, ["CLIENT", "GETNAME"]), name);
    }
    // A name Redis refuses fails the handshake at the step that sent it.
    let bad = tcp(&server).client_name("has space");
    expect_handshake_error(Connection::connect(&bad), "CLIENT SETNAME", "ERR");
    let bad = tcp(&server)
        .client_name("has space")
        .protocol(Protocol::Resp3);
    expect_handshake_error(Connection::connect(&bad), "HELLO", "ERR");
    // A refused connection names the address it tried.
    let port = {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let err = Connection::connect(&ConnectOptions::tcp("127.0.0.1", port)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("could not connect to 127.0.0.1:{}: ", port)),
        "{}",
        err
    );
    assert!(err.is_io() && !err.may_have_reached_server(), "{:?}", err);
    let err = Connection::open("unix:///nonexistent/respline.sock").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("could not connect to /nonexistent/respline.sock: "),
        "{}",
        err
    );
}

#[test]
fn resp3_gives_maps_sets_and_doubles() {
    let server = RedisServer::start();
    let mut conn = connect(&tcp(&server).protocol(Protocol::Resp3));
    assert_eq!(conn.protocol(), Protocol::Resp3);
    let _: () = ok(&mut conn, ["HSET", "h", "a", "1"]);
    let _: () = ok(&mut conn, ["SADD", "s", "m"]);
    let _: () = ok(&mut conn, ["ZADD", "z", "2.5", "m"]);
    assert_eq!(
        ok::<Value>(&mut conn, ["HGETALL", "h"]),
        Value::Map(vec![(
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"1".to_vec())
        )])
    );
    assert_eq!(
        ok::<Value>(&mut conn, ["SMEMBERS", "s"]),
        Value::Set(vec![Value::BulkString(b"m".to_vec())])
    );
    assert_eq!(
        ok::<Value>(&mut conn, ["ZSCORE", "z", "m"]),
        Value::Double(2.5)
    );
    assert_eq!(ok::<Value>(&mut conn, ["GET", "nothing"]), Value::Nil);
    assert_eq!(ok::<Value>(&mut conn, ["EXISTS", "h"]), Value::Integer(1));
    let hello: HashMap<String, Value> = ok(&mut conn, ["HELLO", "3"]);
    assert_eq!(hello.get("proto"), Some(&Value::Integer(3)));

    let mut resp2 = connect(&tcp(&server));
    assert_eq!(resp2.protocol(), Protocol::Resp2);
    assert!(matches!(
        ok::<Value>(&mut resp2, ["HGETALL", "h"]),
        Value::Array(_)
    ));
    assert!(matches!(
        ok::<Value>(&mut resp2, ["SMEMBERS", "s"]),
        Value::Array(_)
    ));
    assert_eq!(
        ok::<Value>(&mut resp2, ["ZSCORE", "z", "m"]),
        Value::BulkString(b"2.5".to_vec())
    );
}

#[test]
fn a_read_timeout_breaks_the_connection_until_reconnect() {
    let server = RedisServer::start();
    let options = tcp(&server).read_timeout(Some(Duration::from_millis(200)));
    let mut conn = connect(&options);
    ping(&mut conn);
    let err = conn
        .query::<()>(["DEBUG", "SLEEP", "1"])
        .expect_err("DEBUG SLEEP 1 outlived a 200 ms read timeout");
    assert!(err.is_timeout(), "expected a timeout, got {:?}", err);
    assert!(conn.is_broken());
    match conn.query::<String>(["PING"]) {
        Err(Error::Broken { .. }) => {}
        other => panic!("expected Error::Broken, got {:?}", other),
    }
    conn.reconnect().unwrap();
    assert!(!conn.is_broken());
    // The server is still asleep: wait for this reply past the read timeout.
    // It must be PONG, not the old connection's late OK.
    let pong: String = conn
        .with_timeout(ReplyTimeout::After(Duration::from_secs(10)))
        .query(["PING"])
        .unwrap();
    assert_eq!(pong, "PONG");
    ping(&mut conn);
}

#[test]
fn blocking_command_with_no_reply_timeout_does_not_break() {
    let server = RedisServer::start();
    let mut conn = connect(&tcp(&server).read_timeout(Some(Duration::from_millis(200))));
    let popped: Option<(String, String)> = conn
        .with_timeout(ReplyTimeout::Never)
        .query(["BLPOP", "empty", "1"])
        .unwrap();
    assert_eq!(popped, None);
    assert!(!conn.is_broken());
    ping(&mut conn);
    // With an element waiting, the reply comes at once.
    let _: () = ok(&mut conn, ["RPUSH", "full", "x"]);
    let popped: Option<(String, String)> = conn
        .with_timeout(ReplyTimeout::After(Duration::from_secs(10)))
        .query(["BLPOP", "full", "1"])
        .unwrap();
    assert_eq!(popped, Some(("full".into(), "x".into())));
    ping(&mut conn);
}

#[test]
fn server_killed_mid_pipeline_then_restart_and_reconnect() {
    let mut server = RedisServer::start();
    let mut conn = connect(&tcp(&server));
    let _: () = ok(&mut conn, ["SET", "before", "1"]);
    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", "k", "v"])
        .cmd(["DEBUG", "SLEEP", "0.5"])
        .cmd(["GET", "k"]);
    let (started_tx, started_rx) = mpsc::channel();
    let result = thread::scope(|s| {
        let server = &mut server;
        let killer = s.spawn(move || {
            started_rx.recv().unwrap();
            // The pipeline is written right after the signal; the server
            // sleeps 500 ms in it. Kill it in the middle of that sleep.
            thread::sleep(Duration::from_millis(150));
            server.kill();
        });
        started_tx.send(()).unwrap();
        let result = pipe.execute(&mut conn);
        killer.join().unwrap();
        result
    });
    let err = result.expect_err("the pipeline survived the server's death");
    assert!(err.is_io(), "expected an I/O error, got {:?}", err);
    assert!(
        matches!(err, Error::Interrupted { requested: 3, .. }),
        "{:?}",
        err
    );
    assert!(conn.is_broken());
    assert!(matches!(
        conn.query::<String>(["PING"]),
        Err(Error::Broken { .. })
    ));
    assert!(conn.reconnect().is_err(), "reconnected to a dead server");
    server.restart();
    conn.reconnect().unwrap();
    ping(&mut conn);
    // A fresh server (no persistence): nothing of the old one is there.
    assert_eq!(ok::<Option<String>>(&mut conn, ["GET", "before"]), None);
}

/// A core subset: strings, binary data, a pipeline, a transaction, an error
/// reply, a timeout-free blocking call.
fn core_subset(conn: &mut Connection) {
    ping(conn);
    let _: () = ok(conn, ["FLUSHDB"]);
    let value = patterned(100_000);
    let _: () = ok(conn, cmd("SET").arg(&b"bin\r\n\x00key"[..]).arg(&value[..]));
    assert_eq!(
        ok::<Vec<u8>>(conn, cmd("GET").arg(&b"bin\r\n\x00key"[..])),
        value
    );
    let mut pipe = Pipeline::new();
    for i in 0..500 {
        pipe.cmd(["RPUSH", "l", &i.to_string()]);
    }
    let lens: Vec<usize> = pipe.query(conn).unwrap();
    assert_eq!(lens, (1..=500).collect::<Vec<usize>>());
    let mut tx = Pipeline::transaction();
    tx.cmd(["LPOP", "l"]).cmd(["LLEN", "l"]);
    let (first, len): (String, i64) = tx.query(conn).unwrap();
    assert_eq!((first.as_str(), len), ("0", 499));
    expect_server_error(conn.query::<i64>(["INCR", "l"]), "WRONGTYPE");
    let popped: Option<(String, String)> = conn
        .with_timeout(ReplyTimeout::Never)
        .query(["BLPOP", "l", "0"])
        .unwrap();
    assert_eq!(popped, Some(("l".into(), "1".into())));
    ping(conn);
}

#[test]
fn tcp_and_unix_sockets_both_work() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        for options in [tcp(&server), unix(&server)] {
            let options = options
                .protocol(protocol)
                .read_timeout(Some(Duration::from_secs(10)));
            let mut conn = connect(&options);
            core_subset(&mut conn);
            // reconnect() replays the same recipe over the same transport.
            conn.reconnect().unwrap();
            core_subset(&mut conn);
            let addr: String = ok(&mut conn, ["CLIENT", "INFO"]);
            let is_unix = matches!(options.addr, respline::Addr::Unix(_));
            assert_eq!(addr.contains("addr=/"), is_unix, "{}", addr);
        }
    }
}

#[test]
fn open_from_urls() {
    let server =
        RedisServer::start_with(&["--user", "alice", "on", ">s3cret", "~*", "&*", "+@all"]);
    let port = server.port();
    let db_of = |conn: &mut Connection| -> String {
        let info: String = ok(conn, ["CLIENT", "INFO"]);
        info.split(' ')
            .find_map(|f| f.strip_prefix("db="))
            .unwrap_or_else(|| panic!("no db= in {}", info))
            .to_string()
    };

    // TCP, the database in the path.
    let mut conn = Connection::open(&format!("redis://127.0.0.1:{}/2", port)).unwrap();
    assert_eq!(db_of(&mut conn), "2");
    let _: () = ok(&mut conn, ["SET", "where", "db2"]);
    let mut db0 = Connection::open(&server.url()).unwrap();
    assert_eq!(db_of(&mut db0), "0");
    assert_eq!(ok::<Option<String>>(&mut db0, ["GET", "where"]), None);
    conn.reconnect().unwrap();
    assert_eq!(ok::<String>(&mut conn, ["GET", "where"]), "db2");

    // Unix socket, the database in the query.
    let mut conn = Connection::open(&format!("{}?db=3", server.unix_url())).unwrap();
    assert_eq!(db_of(&mut conn), "3");
    let info: String = ok(&mut conn, ["CLIENT", "INFO"]);
    assert!(
        info.contains("addr=/"),
        "not over the Unix socket: {}",
        info
    );

    // Credentials in the URL, over both transports and both protocols.
    for url in [
        format!("redis://alice:s3cret@127.0.0.1:{}/1", port),
        format!("redis://alice:s3cret@127.0.0.1:{}/1?protocol=3", port),
        format!("{}?user=alice&password=s3cret&db=1", server.unix_url()),
        format!(
            "{}?user=alice&password=s3cret&db=1&protocol=resp3",
            server.unix_url()
        ),
    ] {
        let mut conn = Connection::open(&url).unwrap_or_else(|e| panic!("{}: {}", url, e));
        assert_eq!(
            ok::<String>(&mut conn, ["ACL", "WHOAMI"]),
            "alice",
            "{}",
            url
        );
        assert_eq!(db_of(&mut conn), "1", "{}", url);
        let resp3 = url.ends_with("3");
        assert_eq!(conn.protocol() == Protocol::Resp3, resp3, "{}", url);
    }
    // A password with reserved characters, percent-encoded.
    let reply = server.raw_command(&["ACL", "SETUSER", "bob", "on", ">p@ss:w/rd%", "~*", "+@all"]);
    assert_eq!(reply, b"+OK\r\n");
    let mut conn = Connection::open(&format!(
        "redis://bob:p%40ss%3Aw%2Frd%25@127.0.0.1:{}?name=from-url",
        port
    ))
    .unwrap();
    assert_eq!(ok::<String>(&mut conn, ["ACL", "WHOAMI"]), "bob");
    assert_eq!(ok::<String>(&mut conn, ["CLIENT", "GETNAME"]), "from-url");
    // A wrong password is the server's WRONGPASS.
    expect_handshake_error(
        Connection::open(&format!("redis://alice:nope@127.0.0.1:{}", port)),
        "AUTH",
        "WRONGPASS",
    );
}
