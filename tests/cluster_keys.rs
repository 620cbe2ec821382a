#![cfg(feature = "cluster")]
//! Redis Cluster key handling against real redis-server processes (see
//! tests/support/mod.rs): `respline::cluster::key_slot` against the
//! server's `CLUSTER KEYSLOT`, and the key positions of
//! tests/data/key-cases.txt against its `COMMAND GETKEYS`. Nothing here
//! touches port 6379.

mod support;

use respline::cluster::key_slot;
use respline::{cmd, Cmd, Connection, Pipeline, ServerError, Value};
use support::RedisServer;

/// Some arguments of a command, or some key names.
type Words = Vec<Vec<u8>>;

/// The cases of tests/data/key-cases.txt: arguments, and the keys.
fn key_cases() -> Vec<(Words, Words)> {
    let text = include_str!("data/key-cases.txt");
    let words = |part: &str| -> Words {
        part.split_whitespace()
            .map(|w| {
                if w == "\"\"" {
                    Vec::new()
                } else {
                    w.as_bytes().to_vec()
                }
            })
            .collect()
    };
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (args, keys) = line
                .split_once("=>")
                .unwrap_or_else(|| panic!("no => in case {:?}", line));
            (words(args), words(keys))
        })
        .collect()
}

/// A cluster-enabled server: one node, owning no slot until told.
fn cluster_node() -> RedisServer {
    let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    // The default nodes.conf is written to the working directory, which the
    // harness puts in the server's own temporary directory.
    assert!(
        server.dir().join("nodes.conf").exists(),
        "nodes.conf not in {}",
        server.dir().display()
    );
    server
}

/// Keys from every byte value, with and without hash tags in every shape.
fn generated_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"foo".to_vec(),
        b"{".to_vec(),
        b"}".to_vec(),
        b"{}".to_vec(),
        b"}{".to_vec(),
        b"{{}}".to_vec(),
        b"foo{}{bar}".to_vec(),
        b"foo{{bar}}zap".to_vec(),
        b"foo{bar}{zap}".to_vec(),
        b"{user1000}.following".to_vec(),
        b"{user1000}.followers".to_vec(),
        b"\xff\xfe{\x00}\x80".to_vec(),
    ];
    for b in 0..=255u8 {
        keys.push(vec![b]);
        keys.push(vec![b'k', b, b'{', b, b'}']);
    }
    let mut state = 0x2545_f491_u32;
    for len in 0..200usize {
        let key: Vec<u8> = (0..len % 40)
            .map(|_| {
                // xorshift: repeatable bytes, braces made common.
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                match state % 7 {
                    0 => b'{',
                    1 => b'}',
                    _ => (state >> 8) as u8,
                }
            })
            .collect();
        keys.push(key);
    }
    keys
}

#[test]
fn key_slot_matches_cluster_keyslot() {
    let server = cluster_node();
    let mut conn = Connection::open(&server.url()).unwrap();
    let keys = generated_keys();
    assert!(keys.len() > 600, "{}", keys.len());
    let mut pipe = Pipeline::new();
    for key in &keys {
        pipe.cmd(cmd("CLUSTER").arg("KEYSLOT").arg(&key[..]));
    }
    let slots: Vec<u16> = pipe.query(&mut conn).unwrap();
    for (key, server_slot) in keys.iter().zip(slots) {
        assert_eq!(
            key_slot(key),
            server_slot,
            "key {:?}",
            Value::BulkString(key.clone())
        );
    }
}

#[test]
fn sharded_pubsub_is_routed_by_the_channel_slot() {
    // The reason respline treats SPUBLISH's channel as a key although its
    // key specification is flagged not_key: the server routes it by slot.
    let server = cluster_node();
    let mut conn = Connection::open(&server.url()).unwrap();
    conn.execute(["CLUSTER", "ADDSLOTSRANGE", "0", "8191"])
        .unwrap();
    let served = (0..)
        .map(|i| format!("ch{}", i))
        .find(|c| key_slot(c.as_bytes()) < 8192)
        .unwrap();
    let unserved = (0..)
        .map(|i| format!("ch{}", i))
        .find(|c| key_slot(c.as_bytes()) >= 8192)
        .unwrap();
    // Half the slots are unserved, so the cluster is down, but sharded
    // pub/sub is still allowed (cluster-allow-pubsubshard-when-down): the
    // node takes a channel of its own slots...
    let receivers: i64 = conn.query(["SPUBLISH", served.as_str(), "m"]).unwrap();
    assert_eq!(receivers, 0);
    // ...and refuses one whose slot nobody serves.
    let err = conn
        .query::<i64>(["SPUBLISH", unserved.as_str(), "m"])
        .unwrap_err();
    let server_error = err.server_error().expect("a server error");
    assert_eq!(server_error.code(), "CLUSTERDOWN", "{}", err);
    // PUBLISH is not sharded: any node takes it.
    let receivers: i64 = conn.query(["PUBLISH", unserved.as_str(), "m"]).unwrap();
    assert_eq!(receivers, 0);
}

/// The server's answer to `COMMAND GETKEYS args...`: the key names, or none
/// when it says the command has no keys or its arguments are invalid.
fn server_keys(conn: &mut Connection, args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    if args.len() < 2 {
        // GETKEYS refuses a command alone; with no argument it has no key.
        return Vec::new();
    }
    let mut request: Cmd = cmd("COMMAND").arg("GETKEYS");
    for arg in args {
        request = request.arg(&arg[..]);
    }
    let reply: Result<Value, ServerError> = conn.query(request).unwrap();
    match reply {
        Ok(Value::Array(keys)) => keys
            .into_iter()
            .map(|k| k.as_bytes().expect("a key name").to_vec())
            .collect(),
        Err(e)
            if e.message().contains("no key arguments")
                || e.message().contains("Invalid arguments")
                || e.message().contains("Invalid number of arguments") =>
        {
            Vec::new()
        }
        other => panic!("COMMAND GETKEYS {:?}: {:?}", args, other),
    }
}

#[test]
fn key_cases_are_what_the_server_says() {
    let server = RedisServer::start();
    let mut conn = Connection::open(&server.url()).unwrap();
    let info: String = conn.query(["INFO", "server"]).unwrap();
    let major = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok())
        .expect("redis_version in INFO");
    if major < 7 {
        eprintln!("skipped: the cases are Redis 7's, the server is {}", major);
        return;
    }
    let cases = key_cases();
    assert!(cases.len() > 80, "{}", cases.len());
    let mut wrong = Vec::new();
    for (args, keys) in &cases {
        let said = server_keys(&mut conn, args);
        if &said != keys {
            wrong.push(format!(
                "{:?}: the server says {:?}, the case {:?}",
                Value::Array(args.iter().cloned().map(Value::BulkString).collect()),
                Value::Array(said.into_iter().map(Value::BulkString).collect()),
                Value::Array(keys.iter().cloned().map(Value::BulkString).collect()),
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
