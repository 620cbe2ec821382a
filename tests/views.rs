//! The borrowed path: replies read as `ValueRef` views of the read buffer
//! (`Connection::query_with`, `Pipeline::for_each_reply`,
//! `Connection::execute_chunked_with`) and typed conversions read straight
//! from it, against a real redis-server (see tests/support/mod.rs), with
//! allocations counted by a counting global allocator.

mod support;

use std::collections::HashMap;

use respline::{
    cmd, Chunking, ConnectOptions, Connection, Error, Pipeline, Protocol, Value, ValueRef,
};
use support::RedisServer;

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

const PROTOCOLS: [Protocol; 2] = [Protocol::Resp2, Protocol::Resp3];

fn connect(server: &RedisServer, protocol: Protocol) -> Connection {
    let (host, port) = server.tcp_addr();
    Connection::connect(&ConnectOptions::tcp(host, port).protocol(protocol)).unwrap()
}

/// A list of `n` items `item:00000`, `item:00001`, ... (10 bytes each).
fn fill_list(conn: &mut Connection, key: &str, n: usize) {
    conn.execute(["DEL", key]).unwrap();
    let mut rpush = cmd("RPUSH").arg(key);
    for i in 0..n {
        rpush = rpush.arg(format!("item:{:05}", i));
    }
    let len: usize = conn.query(rpush).unwrap();
    assert_eq!(len, n);
}

/// Sums the numbers after `item:` in a list reply, through the view only.
fn sum_items(reply: ValueRef<'_>) -> respline::Result<u64> {
    let mut sum = 0;
    for item in reply.items().expect("an array") {
        let bytes = item.as_bytes().expect("a bulk string");
        let text = std::str::from_utf8(&bytes[5..]).unwrap();
        sum += text.parse::<u64>().unwrap();
    }
    Ok(sum)
}

#[test]
fn a_list_is_read_in_place_without_allocating_once_warm() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        let mut conn = connect(&server, protocol);
        fill_list(&mut conn, "list", 1000);
        let lrange = ["LRANGE", "list", "0", "-1"];
        // Warm: the read buffer and the scan's stack are allocated once.
        assert_eq!(conn.query_with(lrange, sum_items).unwrap(), 499_500);
        let before = alloc::allocations();
        for _ in 0..10 {
            assert_eq!(conn.query_with(lrange, sum_items).unwrap(), 499_500);
        }
        assert_eq!(alloc::allocations() - before, 0, "{:?}", protocol);

        // Into Vec<Vec<u8>>: one allocation per element, plus the vector.
        let _: Vec<Vec<u8>> = conn.query(lrange).unwrap();
        let before = alloc::allocations();
        let items: Vec<Vec<u8>> = conn.query(lrange).unwrap();
        let made = alloc::allocations() - before;
        assert_eq!(items.len(), 1000);
        assert_eq!(items[999], b"item:00999");
        assert!(made <= 1001, "{} allocations for 1000 elements", made);

        // A pipeline of them, reply by reply, allocates nothing either.
        let mut pipe = Pipeline::new();
        for _ in 0..20 {
            pipe.cmd(lrange);
        }
        let mut total = 0;
        pipe.for_each_reply(&mut conn, |_, r| {
            total += sum_items(r?)?;
            Ok(())
        })
        .unwrap();
        let before = alloc::allocations();
        pipe.for_each_reply(&mut conn, |_, r| {
            total += sum_items(r?)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(alloc::allocations() - before, 0, "{:?}", protocol);
        assert_eq!(total, 40 * 499_500);
    }
}

#[test]
fn typed_conversions_from_the_buffer_match_the_owned_ones() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        let mut conn = connect(&server, protocol);
        fill_list(&mut conn, "l", 50);
        conn.execute(["HSET", "h", "a", "1", "b", "2", "c", "x"])
            .unwrap();
        conn.execute(["SET", "n", "41"]).unwrap();
        let list: Vec<String> = conn.query(["LRANGE", "l", "0", "-1"]).unwrap();
        let owned = conn.execute(["LRANGE", "l", "0", "-1"]).unwrap();
        assert_eq!(list, Vec::<String>::from_value_owned(owned));
        let hash: HashMap<String, String> = conn.query(["HGETALL", "h"]).unwrap();
        assert_eq!(hash.len(), 3);
        assert_eq!(hash["c"], "x");
        let pair: (i64, Option<String>) = {
            let mut pipe = Pipeline::new();
            pipe.cmd(["INCR", "n"]).cmd(["GET", "missing"]);
            pipe.query(&mut conn).unwrap()
        };
        assert_eq!(pair, (42, None));
        // A shape mismatch is the same error either way, and the connection
        // stays usable.
        let err = conn
            .query::<HashMap<String, i64>>(["HGETALL", "h"])
            .unwrap_err();
        let owned = conn.execute(["HGETALL", "h"]).unwrap();
        let owned_err =
            <HashMap<String, i64> as respline::FromValue>::from_value(owned).unwrap_err();
        assert_eq!(err.to_string(), owned_err.to_string());
        let n: i64 = conn.query(["GET", "n"]).unwrap();
        assert_eq!(n, 42);
        // The same fields through `pairs()`, whichever protocol sent them.
        let mut fields = Vec::new();
        conn.query_with(["HGETALL", "h"], |reply| {
            assert_eq!(reply.pairs().map(|p| p.len()), Some(3));
            for (field, value) in reply.pairs().into_iter().flatten() {
                fields.push((field.convert::<String>()?, value.convert::<String>()?));
            }
            Ok(())
        })
        .unwrap();
        fields.sort();
        assert_eq!(
            fields,
            [("a", "1"), ("b", "2"), ("c", "x")].map(|(f, v)| (f.to_string(), v.to_string()))
        );
    }
}

trait Owned: Sized {
    fn from_value_owned(v: Value) -> Self;
}

impl<T: respline::FromValue> Owned for T {
    fn from_value_owned(v: Value) -> T {
        T::from_value(v).unwrap()
    }
}

#[test]
fn server_errors_reach_the_callback_as_errors_with_their_index() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp2);
    conn.execute(["SET", "s", "text"]).unwrap();
    let mut pipe = Pipeline::new();
    pipe.cmd(["GET", "s"]).cmd(["INCR", "s"]).cmd(["PING"]);
    let mut seen = Vec::new();
    let result = pipe.for_each_reply(&mut conn, |i, reply| {
        let reply = reply?;
        seen.push((i, reply.to_value()));
        Ok(())
    });
    let err = result.unwrap_err();
    let e = err.server_error().expect("a server error");
    assert_eq!((e.code(), e.index), ("ERR", Some(1)));
    // The replies after the error were still read and handed over.
    assert_eq!(
        seen,
        vec![
            (0, Value::BulkString(b"text".to_vec())),
            (2, Value::SimpleString("PONG".into()))
        ]
    );
    // query_with does not call its callback for an error reply.
    let err = conn
        .query_with(["INCR", "s"], |_| -> respline::Result<()> {
            panic!("called")
        })
        .unwrap_err();
    assert!(err.server_error().is_some());
    let pong = conn
        .query_with(["PING"], |r| Ok(r.as_bytes().map(<[u8]>::to_vec)))
        .unwrap();
    assert_eq!(pong.as_deref(), Some(&b"PONG"[..]));
}

#[test]
fn a_reply_far_larger_than_the_buffer_is_viewed_whole() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp3);
    // 4 MiB in one bulk, and a list of 100,000 elements: both beyond the
    // 64 KiB the read buffer starts with.
    let big = vec![b'z'; 4 << 20];
    conn.execute(cmd("SET").arg("big").arg(&big[..])).unwrap();
    let len = conn
        .query_with(["GET", "big"], |r| Ok(r.as_bytes().unwrap().len()))
        .unwrap();
    assert_eq!(len, big.len());
    fill_list(&mut conn, "long", 100_000);
    let n = conn
        .query_with(["LRANGE", "long", "0", "-1"], |r| {
            Ok(r.items().unwrap().count())
        })
        .unwrap();
    assert_eq!(n, 100_000);
    // The buffer shrinks back afterwards, and the connection goes on.
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_limit_is_broken_the_same_way_on_the_borrowed_path() {
    let server = RedisServer::start();
    let mut owned = connect(&server, Protocol::Resp2);
    let mut viewed = connect(&server, Protocol::Resp2);
    owned.execute(["SET", "k", "0123456789"]).unwrap();
    let limits = respline::resp::Limits {
        max_bulk_len: 5,
        ..Default::default()
    };
    owned.set_limits(limits.clone());
    viewed.set_limits(limits);
    let a = owned.execute(["GET", "k"]).unwrap_err();
    let b = viewed.query_with(["GET", "k"], |_| Ok(())).unwrap_err();
    assert_eq!(a.to_string(), b.to_string());
    assert!(matches!(b, Error::Protocol(_)));
    assert!(viewed.is_broken());
    assert!(viewed.query_with(["PING"], |_| Ok(())).is_err());
}

#[test]
fn pushes_between_replies_are_queued_not_handed_over() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp3);
    let mut other = connect(&server, Protocol::Resp2);
    conn.execute(["CLIENT", "TRACKING", "on"]).unwrap();
    conn.execute(["SET", "tracked", "1"]).unwrap();
    let _: String = conn.query(["GET", "tracked"]).unwrap();
    other.execute(["SET", "tracked", "2"]).unwrap();
    // The invalidation push arrives before the reply: it is queued.
    let v = conn
        .query_with(["GET", "tracked"], |r| Ok(r.to_value()))
        .unwrap();
    assert_eq!(v, Value::BulkString(b"2".to_vec()));
    assert!(conn.pending_pushes() >= 1);
    let pushes = conn.take_pushes();
    assert!(
        matches!(&pushes[0], Value::Push(items) if items[0] == Value::BulkString(b"invalidate".to_vec()))
    );
}

#[test]
fn chunked_loads_hand_views_and_count_errors() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp2);
    let sets = (0..5000).map(|i| cmd("SET").arg(format!("c:{}", i)).arg(i));
    conn.execute_chunked(sets, &Chunking::default(), |_, _| {})
        .unwrap()
        .check()
        .unwrap();
    conn.execute(["SET", "c:77", "not a list"]).unwrap();
    let mut sum = 0i64;
    let mut nil = 0;
    let gets = (0..5001).map(|i| cmd("GET").arg(format!("c:{}", i)));
    let summary =
        conn.execute_chunked_with(gets, &Chunking::default().max_commands(300), |i, reply| {
            match reply {
                ValueRef::BulkString(b) if i != 77 => {
                    sum += std::str::from_utf8(b).unwrap().parse::<i64>().unwrap()
                }
                ValueRef::Nil => nil += 1,
                _ => {}
            }
        })
        .unwrap();
    assert_eq!(summary.commands, 5001);
    assert_eq!(summary.errors, 0);
    assert_eq!(nil, 1);
    assert_eq!(sum, (0..5000).sum::<i64>() - 77);
    let lpush = (0..3).map(|i| cmd("LPUSH").arg(format!("c:{}", i * 77)).arg("x"));
    let summary = conn
        .execute_chunked_with(lpush, &Chunking::default(), |_, _| {})
        .unwrap();
    assert_eq!(summary.errors, 3);
    assert_eq!(summary.first_error.unwrap().index, Some(0));
}
