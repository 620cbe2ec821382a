//! Pub/Sub, blocking commands and SCAN iterators against a real
//! redis-server (one per test), plus a fake peer for the half-read message.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use respline::{
    cmd, ConnectOptions, Connection, Error, Message, MessageKind, Pipeline, Protocol, ReplyTimeout,
    Subscriber, Value,
};
use support::{RedisServer, HOST};

/// Read timeout of ordinary connections: long enough never to fire in a
/// healthy test, short enough that a bug fails the test instead of hanging.
const SAFE: Duration = Duration::from_secs(5);
/// How long a test waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(10);

fn connect_with(server: &RedisServer, protocol: Protocol, read_timeout: Duration) -> Connection {
    let opts = ConnectOptions::tcp(HOST, server.port())
        .protocol(protocol)
        .read_timeout(Some(read_timeout))
        .write_timeout(Some(SAFE));
    let conn = Connection::connect(&opts).expect("connect");
    assert_eq!(conn.protocol(), protocol);
    conn
}

fn connect(server: &RedisServer, protocol: Protocol) -> Connection {
    connect_with(server, protocol, SAFE)
}

fn text(m: &Message) -> (MessageKind, String, Option<String>, String) {
    (
        m.kind,
        m.channel_str().unwrap().to_string(),
        m.pattern_str().unwrap().map(str::to_string),
        m.payload_str().unwrap().to_string(),
    )
}

fn next_message(sub: &mut Subscriber) -> Message {
    sub.receive(Some(SAFE))
        .expect("receive")
        .expect("a message before the timeout")
}

// ---------------------------------------------------------------- pub/sub

fn messages_in_order(protocol: Protocol) {
    let server = RedisServer::start();
    let mut publisher = connect(&server, Protocol::Resp2);
    let mut sub = Subscriber::new(connect(&server, protocol));

    sub.subscribe(&["news", "sport"]).unwrap();
    assert_eq!(sub.subscription_count(), 2);
    sub.psubscribe(&["weather.*"]).unwrap();
    sub.ssubscribe(&["shard-a"]).unwrap();
    assert_eq!(sub.subscription_count(), 4);
    assert_eq!(sub.channels().collect::<Vec<_>>(), [&b"news"[..], b"sport"]);
    assert_eq!(sub.patterns().collect::<Vec<_>>(), [&b"weather.*"[..]]);
    assert_eq!(sub.shard_channels().collect::<Vec<_>>(), [&b"shard-a"[..]]);

    let mut expected = Vec::new();
    for i in 0..100 {
        let (channel, payload) = (if i % 2 == 0 { "news" } else { "sport" }, format!("m{}", i));
        let receivers: i64 = publisher
            .query(cmd("PUBLISH").arg(channel).arg(&payload))
            .unwrap();
        assert_eq!(receivers, 1);
        expected.push((MessageKind::Message, channel.to_string(), None, payload));
        if i % 10 == 0 {
            let _: i64 = publisher
                .query(cmd("PUBLISH").arg("weather.paris").arg(i))
                .unwrap();
            expected.push((
                MessageKind::PMessage,
                "weather.paris".into(),
                Some("weather.*".into()),
                i.to_string(),
            ));
            let _: i64 = publisher
                .query(cmd("SPUBLISH").arg("shard-a").arg(i * 2))
                .unwrap();
            expected.push((
                MessageKind::SMessage,
                "shard-a".into(),
                None,
                (i * 2).to_string(),
            ));
        }
    }
    // Binary payloads survive untouched.
    let binary = vec![0u8, 255, b'\r', b'\n', 7];
    let _: i64 = publisher
        .query(cmd("PUBLISH").arg("news").arg(&binary))
        .unwrap();

    let got: Vec<_> = (0..expected.len())
        .map(|_| text(&next_message(&mut sub)))
        .collect();
    assert_eq!(got, expected);
    let raw = next_message(&mut sub);
    assert_eq!(raw.payload, binary);
    assert!(raw.payload_str().is_err());

    // Unsubscribing one channel: the server stops delivering it.
    sub.unsubscribe(&["news"]).unwrap();
    assert_eq!(sub.subscription_count(), 3);
    let receivers: i64 = publisher.query(["PUBLISH", "news", "x"]).unwrap();
    assert_eq!(receivers, 0);
    // Empty lists mean "all of that kind".
    sub.unsubscribe::<&str>(&[]).unwrap();
    sub.punsubscribe::<&str>(&[]).unwrap();
    assert_eq!(sub.subscription_count(), 1);
    sub.sunsubscribe::<&str>(&[]).unwrap();
    assert_eq!(sub.subscription_count(), 0);
    // Unsubscribing from nothing is confirmed with a nil name.
    sub.unsubscribe::<&str>(&[]).unwrap();
    assert_eq!(sub.subscription_count(), 0);
    assert_eq!(sub.pending_messages(), 0);

    let mut conn = sub.into_connection().unwrap();
    assert!(!conn.is_broken());
    let _: () = conn.query(["SET", "after", "pubsub"]).unwrap();
    let v: String = conn.query(["GET", "after"]).unwrap();
    assert_eq!(v, "pubsub");
}

#[test]
fn messages_arrive_in_order_resp2() {
    messages_in_order(Protocol::Resp2);
}

#[test]
fn messages_arrive_in_order_resp3() {
    messages_in_order(Protocol::Resp3);
}

fn timeout_is_not_an_error(protocol: Protocol) {
    let server = RedisServer::start();
    let mut publisher = connect(&server, Protocol::Resp2);
    let mut sub = Subscriber::new(connect(&server, protocol));
    sub.subscribe(&["quiet"]).unwrap();

    for _ in 0..3 {
        assert!(sub
            .receive(Some(Duration::from_millis(150)))
            .unwrap()
            .is_none());
        assert!(!sub.is_broken());
    }
    // A zero timeout only looks at what already arrived.
    assert!(sub.receive(Some(Duration::ZERO)).unwrap().is_none());
    sub.ping().unwrap();

    let _: i64 = publisher.query(["PUBLISH", "quiet", "finally"]).unwrap();
    let m = next_message(&mut sub);
    assert_eq!(m.payload_str().unwrap(), "finally");
    assert!(sub
        .receive(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());
    // PING while a message is in flight: the message is kept, not lost.
    let _: i64 = publisher
        .query(["PUBLISH", "quiet", "during ping"])
        .unwrap();
    sub.ping().unwrap();
    assert_eq!(next_message(&mut sub).payload_str().unwrap(), "during ping");
}

#[test]
fn receive_timeout_returns_none_and_the_subscriber_keeps_working_resp2() {
    timeout_is_not_an_error(Protocol::Resp2);
}

#[test]
fn receive_timeout_returns_none_and_the_subscriber_keeps_working_resp3() {
    timeout_is_not_an_error(Protocol::Resp3);
}

/// A fake server confirms the subscription, then sends each message in two
/// parts, the second only after the client's receive timed out in between.
#[test]
fn a_message_half_read_when_the_timeout_fires_is_not_lost() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages: Vec<Vec<u8>> = vec![
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$11\r\nhello world\r\n".to_vec(),
        b"*4\r\n$8\r\npmessage\r\n$3\r\nc*h\r\n$2\r\nch\r\n$6\r\nsecond\r\n".to_vec(),
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nthird\r\n".to_vec(),
    ];
    // Split inside the payload, inside a header, and right after the array
    // header.
    let splits = [messages[0].len() - 6, 9, 4];
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let peer_messages = messages.clone();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let request = b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n";
        let mut got = vec![0u8; request.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, request);
        let mut first = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n".to_vec();
        for (m, &split) in peer_messages.iter().zip(&splits) {
            first.extend_from_slice(&m[..split]);
            s.write_all(&first).unwrap();
            first.clear();
            // Wait until the client's receive has timed out.
            go_rx.recv_timeout(PATIENCE).unwrap();
            s.write_all(&m[split..]).unwrap();
        }
        // Stay open until the client is done.
        let _ = go_rx.recv_timeout(PATIENCE);
    });

    let opts = ConnectOptions::tcp(HOST, port).read_timeout(Some(SAFE));
    let mut sub = Subscriber::new(Connection::connect(&opts).unwrap());
    sub.subscribe(&["ch"]).unwrap();
    assert_eq!(sub.subscription_count(), 1);
    let mut got = Vec::new();
    for _ in &messages {
        let none = sub.receive(Some(Duration::from_millis(150))).unwrap();
        assert!(none.is_none(), "only part of the message was sent");
        assert!(!sub.is_broken());
        go_tx.send(()).unwrap();
        got.push(text(&next_message(&mut sub)));
    }
    go_tx.send(()).unwrap();
    peer.join().unwrap();
    assert_eq!(
        got,
        [
            (
                MessageKind::Message,
                "ch".into(),
                None,
                "hello world".into()
            ),
            (
                MessageKind::PMessage,
                "ch".into(),
                Some("c*h".into()),
                "second".into()
            ),
            (MessageKind::Message, "ch".into(), None, "third".into()),
        ]
    );
}

fn stop_blocked_subscriber(opts: ConnectOptions) {
    let mut sub = Subscriber::new(Connection::connect(&opts).expect("connect"));
    sub.subscribe(&["never"]).unwrap();
    let stop = sub.stop_handle().unwrap();
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        // No timeout: only the stop can end this.
        let result = sub.receive(None);
        tx.send(()).unwrap();
        (result, sub)
    });
    // Give the worker time to block in its read (not an assertion: the stop
    // works whether or not it is blocked yet).
    thread::sleep(Duration::from_millis(100));
    stop.stop().unwrap();
    assert!(stop.is_stopped());
    rx.recv_timeout(PATIENCE)
        .expect("the stopped subscriber returned");
    let (result, mut sub) = worker.join().unwrap();
    let err = result.expect_err("a stopped receive is an error");
    assert!(err.is_io(), "{:?}", err);
    assert!(err.to_string().contains("stopped"), "{}", err);
    assert!(sub.is_stopped());
    assert!(sub.is_broken());
    assert!(matches!(
        sub.receive(Some(Duration::ZERO)),
        Err(Error::Broken { .. })
    ));
    assert!(matches!(sub.subscribe(&["x"]), Err(Error::Broken { .. })));
    // A second stop is harmless.
    stop.stop().unwrap();
    assert!(sub.into_connection().is_err());
}

#[test]
fn another_thread_stops_a_blocked_subscriber_over_tcp() {
    let server = RedisServer::start();
    stop_blocked_subscriber(ConnectOptions::tcp(HOST, server.port()).read_timeout(Some(SAFE)));
}

#[test]
fn another_thread_stops_a_blocked_subscriber_over_unix() {
    let server = RedisServer::start();
    stop_blocked_subscriber(ConnectOptions::unix(server.unix_path()).read_timeout(Some(SAFE)));
}

#[test]
fn into_connection_unsubscribes_from_everything() {
    let server = RedisServer::start();
    let mut publisher = connect(&server, Protocol::Resp2);
    let mut sub = Subscriber::new(connect(&server, Protocol::Resp2));
    sub.subscribe(&["a", "b"]).unwrap();
    sub.psubscribe(&["p.*"]).unwrap();
    sub.ssubscribe(&["s"]).unwrap();
    let _: i64 = publisher.query(["PUBLISH", "a", "queued"]).unwrap();
    // The message arrives before the PONG and is kept.
    sub.ping().unwrap();
    assert_eq!(sub.pending_messages(), 1);

    let mut conn = sub.into_connection().unwrap();
    // Under RESP2 a subscribed connection refuses GET; this one is back to
    // normal.
    let v: Option<String> = conn.query(["GET", "nothing"]).unwrap();
    assert_eq!(v, None);
    for (publish, channel) in [("PUBLISH", "a"), ("PUBLISH", "p.x"), ("SPUBLISH", "s")] {
        let receivers: i64 = publisher.query([publish, channel, "late"]).unwrap();
        assert_eq!(receivers, 0, "{} {}", publish, channel);
    }
    // And it can subscribe again.
    let mut sub = Subscriber::new(conn);
    sub.subscribe(&["a"]).unwrap();
    let _: i64 = publisher.query(["PUBLISH", "a", "again"]).unwrap();
    assert_eq!(next_message(&mut sub).payload_str().unwrap(), "again");
}

#[test]
fn a_refused_subscription_is_a_server_error_and_the_subscriber_survives() {
    let server = RedisServer::start();
    let mut admin = connect(&server, Protocol::Resp2);
    let _: () = admin
        .query([
            "ACL",
            "SETUSER",
            "limited",
            "on",
            ">pw",
            "~*",
            "+@all",
            "resetchannels",
            "&allowed*",
        ])
        .unwrap();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let opts = ConnectOptions::tcp(HOST, server.port())
            .auth(Some("limited"), "pw")
            .protocol(protocol)
            .read_timeout(Some(SAFE));
        let mut sub = Subscriber::new(Connection::connect(&opts).unwrap());
        let err = sub.subscribe(&["forbidden"]).unwrap_err();
        assert_eq!(
            err.server_error().map(|e| e.code()),
            Some("NOPERM"),
            "{}",
            err
        );
        assert!(!sub.is_broken());
        assert_eq!(sub.subscription_count(), 0);
        sub.subscribe(&["allowed-1"]).unwrap();
        assert_eq!(sub.subscription_count(), 1);
        let _: i64 = admin.query(["PUBLISH", "allowed-1", "ok"]).unwrap();
        assert_eq!(next_message(&mut sub).payload_str().unwrap(), "ok");
    }
}

#[test]
fn a_broken_connection_makes_a_broken_subscriber() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp2);
    let err = conn
        .with_timeout(ReplyTimeout::After(Duration::from_millis(100)))
        .query::<Value>(["BLPOP", "empty", "5"])
        .unwrap_err();
    assert!(err.is_timeout());
    let mut sub = Subscriber::new(conn);
    assert!(sub.is_broken());
    assert!(matches!(sub.subscribe(&["x"]), Err(Error::Broken { .. })));
    assert!(matches!(sub.receive(None), Err(Error::Broken { .. })));
}

// ----------------------------------------------------------- RESP3 pushes

/// With CLIENT TRACKING, invalidation pushes arrive between replies; they
/// are queued and never read as a reply.
#[test]
fn resp3_pushes_never_take_a_replys_place() {
    let server = RedisServer::start();
    let mut c1 = connect(&server, Protocol::Resp3);
    let mut c2 = connect(&server, Protocol::Resp2);
    let _: () = c1.query(["CLIENT", "TRACKING", "ON"]).unwrap();
    let _: () = c1.query(["SET", "mine", "own value"]).unwrap();
    for i in 0..20 {
        let key = format!("tracked:{}", i);
        let _: () = c1.query(["SET", key.as_str(), "before"]).unwrap();
        let v: String = c1.query(["GET", key.as_str()]).unwrap();
        assert_eq!(v, "before");
        let _: () = c2.query(["SET", key.as_str(), "after"]).unwrap();
        let own: String = c1.query(["GET", "mine"]).unwrap();
        assert_eq!(own, "own value");
        let pushes = c1.take_pushes();
        let expected = Value::Push(vec![
            Value::BulkString(b"invalidate".to_vec()),
            Value::Array(vec![Value::BulkString(key.into_bytes())]),
        ]);
        assert!(pushes.contains(&expected), "round {}: {:?}", i, pushes);
        // GET mine is tracked too now, and nobody changed it.
        assert!(pushes.iter().all(|p| p
            != &Value::Push(vec![
                Value::BulkString(b"invalidate".to_vec()),
                Value::Array(vec![Value::BulkString(b"mine".to_vec())]),
            ])));
    }
    // In a pipeline too.
    let _: String = c1.query(["GET", "tracked:0"]).unwrap();
    let _: () = c2.query(["SET", "tracked:0", "changed again"]).unwrap();
    let mut p = Pipeline::new();
    p.cmd(["GET", "mine"]).cmd(["ECHO", "x"]);
    let replies: (String, String) = p.query(&mut c1).unwrap();
    assert_eq!(replies, ("own value".to_string(), "x".to_string()));
    assert!(c1.pending_pushes() >= 1);
}

/// A RESP3 subscriber keeps pushes that are not pub/sub for `take_pushes`.
#[test]
fn resp3_subscriber_keeps_invalidations_apart_from_messages() {
    let server = RedisServer::start();
    let mut other = connect(&server, Protocol::Resp2);
    let mut conn = connect(&server, Protocol::Resp3);
    let _: () = conn.query(["CLIENT", "TRACKING", "ON"]).unwrap();
    let _: Option<String> = conn.query(["GET", "watched"]).unwrap();
    let mut sub = Subscriber::new(conn);
    sub.subscribe(&["ch"]).unwrap();
    let _: () = other.query(["SET", "watched", "1"]).unwrap();
    let _: i64 = other.query(["PUBLISH", "ch", "hello"]).unwrap();
    assert_eq!(next_message(&mut sub).payload_str().unwrap(), "hello");
    let pushes = sub.take_pushes();
    assert_eq!(
        pushes,
        [Value::Push(vec![
            Value::BulkString(b"invalidate".to_vec()),
            Value::Array(vec![Value::BulkString(b"watched".to_vec())]),
        ])]
    );
    assert!(sub
        .receive(Some(Duration::from_millis(50)))
        .unwrap()
        .is_none());
}

// ------------------------------------------------------- blocking commands

/// One stream of an XREAD reply: its name and its (id, fields) entries.
type StreamReply = (String, Vec<(String, Vec<String>)>);

/// Waits until the server reports `n` blocked clients.
fn wait_blocked(conn: &mut Connection, n: usize) {
    for _ in 0..1000 {
        let info: String = conn.query(["INFO", "clients"]).unwrap();
        if info.contains(&format!("blocked_clients:{}\r", n)) {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("no client blocked");
}

#[test]
fn blpop_longer_than_the_read_timeout_is_served_mid_block() {
    let server = RedisServer::start();
    let read_timeout = Duration::from_millis(200);
    let mut conn = connect_with(&server, Protocol::Resp2, read_timeout);
    let mut pusher = connect(&server, Protocol::Resp2);
    let helper = thread::spawn(move || {
        wait_blocked(&mut pusher, 1);
        // Longer than the read timeout: a plain query would have given up.
        thread::sleep(read_timeout * 2);
        let _: i64 = pusher.query(["LPUSH", "jobs", "job-1"]).unwrap();
        wait_blocked(&mut pusher, 1);
        thread::sleep(read_timeout * 2);
        let _: String = pusher
            .query(["XADD", "events", "*", "field", "value"])
            .unwrap();
    });
    let block = Duration::from_secs(10);
    let popped: Option<(String, String)> = conn
        .with_timeout(ReplyTimeout::Block(block))
        .query(cmd("BLPOP").arg("jobs").arg(block.as_secs()))
        .unwrap();
    assert_eq!(popped, Some(("jobs".into(), "job-1".into())));
    assert!(!conn.is_broken());

    // XREAD BLOCK, in milliseconds.
    let read: Vec<StreamReply> = conn
        .with_timeout(ReplyTimeout::Block(block))
        .query(
            cmd("XREAD")
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg("events")
                .arg("$"),
        )
        .unwrap();
    helper.join().unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, "events");
    assert_eq!(read[0].1[0].1, ["field", "value"]);
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}

fn expired_block(protocol: Protocol) {
    let server = RedisServer::start();
    let mut conn = connect_with(&server, protocol, Duration::from_millis(200));
    let block = Duration::from_millis(700);
    let popped: Option<(String, String)> = conn
        .with_timeout(ReplyTimeout::Block(block))
        .query(cmd("BLPOP").arg("empty").arg(block.as_secs_f64()))
        .unwrap();
    assert_eq!(popped, None);
    assert!(!conn.is_broken());
    let moved: Option<String> = conn
        .with_timeout(ReplyTimeout::Block(Duration::from_millis(500)))
        .query(
            cmd("BLMOVE")
                .arg("empty")
                .arg("dst")
                .arg("LEFT")
                .arg("RIGHT")
                .arg(0.5),
        )
        .unwrap();
    assert_eq!(moved, None);
    // WAIT for a replica that does not exist: 0 after the block.
    let acked: i64 = conn
        .with_timeout(ReplyTimeout::Block(Duration::from_millis(400)))
        .query(["WAIT", "1", "400"])
        .unwrap();
    assert_eq!(acked, 0);
    // Data already there is returned at once.
    let _: i64 = conn.query(["ZADD", "z", "1.5", "a", "2", "b"]).unwrap();
    let min: Option<(String, String, f64)> = conn
        .with_timeout(ReplyTimeout::Block(Duration::from_secs(5)))
        .query(["BZPOPMIN", "z", "5"])
        .unwrap();
    assert_eq!(min, Some(("z".into(), "a".into(), 1.5)));
    let _: i64 = conn.query(["RPUSH", "l", "x", "y"]).unwrap();
    let last: Option<(String, String)> = conn
        .with_timeout(ReplyTimeout::Block(Duration::from_secs(5)))
        .query(["BRPOP", "l", "5"])
        .unwrap();
    assert_eq!(last, Some(("l".into(), "y".into())));
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn an_expired_block_returns_none_without_breaking_resp2() {
    expired_block(Protocol::Resp2);
}

#[test]
fn an_expired_block_returns_none_without_breaking_resp3() {
    expired_block(Protocol::Resp3);
}

/// The control: the same BLPOP through `query` hits the read timeout and
/// breaks the connection, which is why `with_timeout(ReplyTimeout::Block(..))` exists.
#[test]
fn a_plain_query_of_a_long_block_times_out() {
    let server = RedisServer::start();
    let mut conn = connect_with(&server, Protocol::Resp2, Duration::from_millis(200));
    let err = conn
        .query::<Option<(String, String)>>(["BLPOP", "empty", "1"])
        .unwrap_err();
    assert!(err.is_timeout(), "{:?}", err);
    assert!(conn.is_broken());
}

// -------------------------------------------------------------------- SCAN

const N: usize = 10_000;

fn run_pipeline(conn: &mut Connection, commands: impl IntoIterator<Item = respline::Cmd>) {
    let mut p = Pipeline::new();
    for c in commands {
        p.cmd(c);
        if p.len() == 1000 {
            p.execute(conn).unwrap();
            p.clear();
        }
    }
    if !p.is_empty() {
        p.execute(conn).unwrap();
    }
}

fn set_of(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

#[test]
fn scan_yields_every_key_with_match_count_and_type() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp2);
    let users: Vec<String> = (0..6000).map(|i| format!("user:{}", i)).collect();
    let orders: Vec<String> = (0..3000).map(|i| format!("order:{}", i)).collect();
    let tags: Vec<String> = (0..1000).map(|i| format!("tags:{}", i)).collect();
    run_pipeline(
        &mut conn,
        users
            .iter()
            .chain(&orders)
            .map(|k| cmd("SET").arg(k).arg("v"))
            .chain(tags.iter().map(|k| cmd("SADD").arg(k).arg("t"))),
    );
    let all = set_of(users.iter().chain(&orders).chain(&tags).cloned());
    assert_eq!(all.len(), N);

    let mut yielded = 0;
    let mut seen = HashSet::new();
    for key in conn.scan::<String>().count(500) {
        seen.insert(key.unwrap());
        yielded += 1;
    }
    assert!(yielded >= N);
    assert_eq!(set_of(seen), all);

    // The default COUNT, through iter() and collect().
    let keys: Result<BTreeSet<String>, _> = conn.scan().iter().collect();
    assert_eq!(keys.unwrap(), all);

    let matched: BTreeSet<String> = conn
        .scan()
        .pattern("user:*")
        .count(1000)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(matched, set_of(users.iter().cloned()));

    let sets: BTreeSet<String> = conn
        .scan()
        .of_type("set")
        .count(300)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sets, set_of(tags.iter().cloned()));

    let narrow: BTreeSet<String> = conn
        .scan()
        .pattern("order:12*")
        .of_type("string")
        .count(2000)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let expected = set_of(orders.iter().filter(|k| k.starts_with("order:12")).cloned());
    assert_eq!(narrow.len(), 111);
    assert_eq!(narrow, expected);

    // Bytes work as items too.
    let n = conn.scan::<Vec<u8>>().pattern(b"tags:99*").iter().count();
    assert_eq!(n, 11);
}

/// Keys present for the whole iteration are all yielded, while another
/// connection adds and deletes keys between pages.
#[test]
fn scan_survives_concurrent_changes() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp3);
    let mut other = connect(&server, Protocol::Resp2);
    run_pipeline(
        &mut conn,
        (0..N).map(|i| cmd("SET").arg(format!("k:{}", i)).arg(i)),
    );
    let mut deleted = HashSet::new();
    let mut added = HashSet::new();
    let mut seen = HashSet::new();
    let mut round = 0;
    for (n, key) in conn.scan::<String>().count(200).into_iter().enumerate() {
        seen.insert(key.unwrap());
        if n % 1000 == 999 {
            for j in 0..50 {
                let victim = format!("k:{}", (round * 997 + j * 13) % N);
                let _: i64 = other.query(["DEL", victim.as_str()]).unwrap();
                deleted.insert(victim);
                let fresh = format!("new:{}:{}", round, j);
                let _: () = other.query(["SET", fresh.as_str(), "1"]).unwrap();
                added.insert(fresh);
            }
            round += 1;
        }
    }
    assert!(round >= 9);
    for i in 0..N {
        let key = format!("k:{}", i);
        if !deleted.contains(&key) {
            assert!(
                seen.contains(&key),
                "{} was present throughout but not yielded",
                key
            );
        }
    }
    for key in &seen {
        assert!(key.starts_with("k:") || added.contains(key), "{}", key);
    }
}

#[test]
fn hscan_yields_every_field_and_value() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp2);
    run_pipeline(
        &mut conn,
        (0..N / 1000).map(|chunk| {
            let mut c = cmd("HSET").arg("h");
            for i in chunk * 1000..(chunk + 1) * 1000 {
                c.push_arg(format!("f{}", i)).push_arg(i);
            }
            c
        }),
    );
    let expected: HashMap<String, i64> = (0..N).map(|i| (format!("f{}", i), i as i64)).collect();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut conn = connect(&server, protocol);
        let mut got = HashMap::new();
        for pair in conn.hscan::<String, i64>("h").count(250) {
            let (field, value) = pair.unwrap();
            if let Some(old) = got.insert(field, value) {
                assert_eq!(old, value);
            }
        }
        assert_eq!(got, expected);
        let matched: HashMap<String, i64> = conn
            .hscan("h")
            .pattern("f99*")
            .count(1000)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(matched.len(), 111);
        assert!(matched
            .iter()
            .all(|(f, v)| f.starts_with("f99") && expected[f] == *v));
    }
    // A small hash (listpack) comes back in one page.
    let _: i64 = conn.query(["HSET", "small", "a", "1", "b", "2"]).unwrap();
    let mut small: Vec<(String, String)> = conn
        .hscan("small")
        .iter()
        .collect::<Result<_, _>>()
        .unwrap();
    small.sort();
    assert_eq!(small, [("a".into(), "1".into()), ("b".into(), "2".into())]);
}

#[test]
fn sscan_yields_every_member() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp2);
    run_pipeline(
        &mut conn,
        (0..N / 1000).map(|chunk| {
            cmd("SADD")
                .arg("s")
                .args((chunk * 1000..(chunk + 1) * 1000).map(|i| format!("m{}", i)))
        }),
    );
    let expected = set_of((0..N).map(|i| format!("m{}", i)));
    let got: BTreeSet<String> = conn
        .sscan("s")
        .count(100)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, expected);
    let matched: BTreeSet<String> = conn
        .sscan("s")
        .pattern("m5*")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        matched,
        expected
            .iter()
            .filter(|m| m.starts_with("m5"))
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    // Integer members convert as integers.
    let _: i64 = conn.query(["SADD", "ints", "1", "2", "3"]).unwrap();
    let ints: BTreeSet<i64> = conn.sscan("ints").into_iter().map(Result::unwrap).collect();
    assert_eq!(ints, [1, 2, 3].into_iter().collect());
}

#[test]
fn zscan_yields_every_member_with_its_score() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp2);
    run_pipeline(
        &mut conn,
        (0..N / 1000).map(|chunk| {
            let mut c = cmd("ZADD").arg("z");
            for i in chunk * 1000..(chunk + 1) * 1000 {
                c.push_arg(i as f64 + 0.25).push_arg(format!("m{}", i));
            }
            c
        }),
    );
    let _: i64 = conn
        .query(["ZADD", "z", "-inf", "bottom", "+inf", "top"])
        .unwrap();
    let mut expected: HashMap<String, f64> = (0..N)
        .map(|i| (format!("m{}", i), i as f64 + 0.25))
        .collect();
    expected.insert("bottom".into(), f64::NEG_INFINITY);
    expected.insert("top".into(), f64::INFINITY);
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut conn = connect(&server, protocol);
        let mut got = HashMap::new();
        for pair in conn.zscan::<String>("z").count(500) {
            let (member, score) = pair.unwrap();
            got.insert(member, score);
        }
        assert_eq!(got, expected);
    }
    let matched: HashMap<String, f64> = conn
        .zscan("z")
        .pattern("m123*")
        .count(2000)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(matched.len(), 11);
    assert_eq!(matched["m1234"], 1234.25);
}

#[test]
fn a_scan_error_ends_the_iteration_and_keeps_the_connection() {
    let server = RedisServer::start();
    let mut conn = connect(&server, Protocol::Resp2);
    let _: () = conn.query(["SET", "plain", "x"]).unwrap();
    let mut it = conn.hscan::<String, String>("plain").iter();
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(err.server_error().map(|e| e.code()), Some("WRONGTYPE"));
    assert!(it.next().is_none());
    assert!(it.next().is_none());
    // TYPE is for SCAN only: the server refuses it elsewhere.
    let _: i64 = conn.query(["SADD", "set", "a"]).unwrap();
    let results: Vec<_> = conn.sscan::<String>("set").of_type("set").iter().collect();
    assert_eq!(results.len(), 1);
    assert!(results[0].as_ref().unwrap_err().server_error().is_some());
    // A conversion error ends it too.
    let _: i64 = conn.query(["SADD", "words", "a", "b"]).unwrap();
    let results: Vec<_> = conn.sscan::<i64>("words").iter().collect();
    assert_eq!(results.len(), 1);
    assert!(matches!(results[0], Err(Error::Conversion(_))));
    // An empty or missing collection yields nothing.
    assert_eq!(conn.sscan::<String>("missing").iter().count(), 0);
    assert!(!conn.is_broken());
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}
