//! Safe retries against real servers: a request that provably was never
//! written (the connection was found closed before writing) goes out on a
//! fresh connection made from the same options, once, and the caller sees
//! no error; anything that may have reached the server is never sent twice.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use respline::{transaction, ConnectOptions, Connection, Error, Pipeline, Protocol, WatchOptions};
use support::{RedisServer, HOST};

const PROTOCOLS: [Protocol; 2] = [Protocol::Resp2, Protocol::Resp3];

fn options(server: &RedisServer) -> ConnectOptions {
    ConnectOptions::tcp(HOST, server.port()).read_timeout(Some(Duration::from_secs(5)))
}

fn client_id(conn: &mut Connection) -> i64 {
    conn.query(["CLIENT", "ID"]).unwrap()
}

/// Waits until the server has seen the connection go (at most 5 s).
fn wait_for_clients(server: &RedisServer, clients: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = String::from_utf8(server.raw_command(&["INFO", "clients"])).unwrap();
        // The raw connection asking is one of them.
        if info.contains(&format!("connected_clients:{}\r\n", clients + 1)) {
            return;
        }
        assert!(Instant::now() < deadline, "{}", info);
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_restart_between_calls_is_not_seen_by_the_caller() {
    let mut server = RedisServer::start();
    for protocol in PROTOCOLS {
        let opts = options(&server)
            .protocol(protocol)
            .db(3)
            .client_name("retrying");
        let mut conn = Connection::connect(&opts).unwrap();
        conn.execute(["SET", "k", "before"]).unwrap();
        server.restart();
        // The old connection died with the old server; nothing was sent on
        // it, so this SET goes to the new server, with the whole recipe.
        conn.execute(["SET", "k", "after"]).unwrap();
        let info: String = conn.query(["CLIENT", "INFO"]).unwrap();
        assert!(info.contains(" db=3 "), "{}", info);
        assert!(info.contains(" name=retrying "), "{}", info);
        assert_eq!(conn.protocol(), protocol);
        let v: String = conn.query(["GET", "k"]).unwrap();
        assert_eq!(v, "after");
        assert!(!conn.is_broken());
        assert!(conn.is_reusable());
    }
}

#[test]
fn a_killed_client_is_replaced_before_the_next_request() {
    let server = RedisServer::start();
    for protocol in PROTOCOLS {
        let mut conn = Connection::connect(&options(&server).protocol(protocol)).unwrap();
        let first = client_id(&mut conn);
        server.raw_command(&["CLIENT", "KILL", "ID", &first.to_string()]);
        wait_for_clients(&server, 0);
        // A pipeline, a transaction and a plain query all go through.
        let mut pipe = Pipeline::new();
        pipe.cmd(["SET", "a", "1"]).cmd(["INCR", "a"]);
        let ((), a): ((), i64) = pipe.query(&mut conn).unwrap();
        assert_eq!(a, 2);
        let second = client_id(&mut conn);
        assert_ne!(first, second);
        server.raw_command(&["CLIENT", "KILL", "ID", &second.to_string()]);
        wait_for_clients(&server, 0);
        let mut tx = Pipeline::transaction();
        tx.cmd(["INCR", "a"]).cmd(["INCR", "a"]);
        let (x, y): (i64, i64) = tx.query(&mut conn).unwrap();
        assert_eq!((x, y), (3, 4));
        assert_ne!(client_id(&mut conn), second);
    }
}

#[test]
fn an_idle_timeout_on_the_server_is_not_seen_by_the_caller() {
    let server = RedisServer::start_with(&["--timeout", "1"]);
    let mut conn = Connection::connect(&options(&server)).unwrap();
    let first = client_id(&mut conn);
    // The server closes connections idle for a second.
    wait_for_clients(&server, 1);
    thread::sleep(Duration::from_millis(1500));
    wait_for_clients(&server, 0);
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
    assert_ne!(client_id(&mut conn), first);
    // The load helper goes through the same door.
    thread::sleep(Duration::from_millis(1500));
    wait_for_clients(&server, 0);
    conn.execute_chunked(
        (0..10).map(|i| ("SET", format!("c:{}", i), i)),
        &respline::Chunking::default(),
        |_, _| {},
    )
    .unwrap()
    .check()
    .unwrap();
    let n: i64 = conn.query(["DBSIZE"]).unwrap();
    assert_eq!(n, 10);
}

#[test]
fn a_request_that_may_have_run_is_never_sent_again() {
    let server = RedisServer::start();
    let mut conn =
        Connection::connect(&options(&server).read_timeout(Some(Duration::from_millis(300))))
            .unwrap();
    conn.execute(["SET", "counter", "0"]).unwrap();
    // Writes wait for 1.5 s: INCR reaches the server, its reply comes late.
    server.raw_command(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    let err = conn.query::<i64>(["INCR", "counter"]).unwrap_err();
    assert!(err.is_timeout(), "{:?}", err);
    assert!(err.may_have_reached_server());
    // A broken connection refuses, without sending anything: no retry.
    let refused = conn.query::<i64>(["INCR", "counter"]).unwrap_err();
    assert!(matches!(refused, Error::Broken { .. }), "{:?}", refused);
    assert!(!refused.may_have_reached_server());
    thread::sleep(Duration::from_millis(1600));
    // The INCR ran exactly once.
    assert_eq!(server.raw_command(&["GET", "counter"]), b"$1\r\n1\r\n");
}

#[test]
fn without_retries_the_error_says_nothing_was_sent() {
    let mut server = RedisServer::start();
    let mut conn = Connection::connect(&options(&server).retry_unsent(false)).unwrap();
    server.restart();
    let err = conn.query::<String>(["PING"]).unwrap_err();
    assert!(matches!(err, Error::NotSent { .. }), "{:?}", err);
    assert!(!err.may_have_reached_server());
    assert!(err.is_io(), "{:?}", err);
    assert!(
        err.to_string().ends_with("(the request was not sent)"),
        "{}",
        err
    );
    assert!(conn.is_broken());
    conn.reconnect().unwrap();
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_session_changed_by_hand_is_never_replaced_silently() {
    let server = RedisServer::start();
    let mut conn = Connection::connect(&options(&server)).unwrap();
    // SELECT by hand: a fresh connection from the options would be on db 0.
    assert!(conn.is_reusable());
    conn.execute(["SELECT", "5"]).unwrap();
    assert!(!conn.is_reusable());
    let id = client_id(&mut conn);
    server.raw_command(&["CLIENT", "KILL", "ID", &id.to_string()]);
    wait_for_clients(&server, 0);
    let err = conn.execute(["SET", "k", "v"]).unwrap_err();
    assert!(matches!(err, Error::NotSent { .. }), "{:?}", err);
    // Nothing was written anywhere.
    assert_eq!(server.raw_command(&["DBSIZE"]), b":0\r\n");
}

#[test]
fn keys_watched_are_never_lost_to_a_silent_reconnect() {
    let server = RedisServer::start();
    let mut conn = Connection::connect(&options(&server)).unwrap();
    let id = client_id(&mut conn);
    let result = transaction::<_, _, (), _>(
        &mut conn,
        &["balance"],
        WatchOptions::new().max_attempts(1),
        |conn, pipe| {
            assert!(!conn.is_reusable(), "keys are WATCHed");
            server.raw_command(&["CLIENT", "KILL", "ID", &id.to_string()]);
            wait_for_clients(&server, 0);
            // The WATCH died with the connection: this read must fail rather
            // than run on a fresh connection without it.
            let balance: Option<i64> = conn.query(["GET", "balance"])?;
            pipe.cmd(("SET", "balance", balance.unwrap_or(0) + 10));
            Ok(())
        },
    );
    let err = result.unwrap_err();
    assert!(matches!(err, Error::NotSent { .. }), "{:?}", err);
    assert_eq!(server.raw_command(&["EXISTS", "balance"]), b":0\r\n");
    // Once the transaction is over, the connection is replaced again.
    conn.reconnect().unwrap();
    assert!(conn.is_reusable());
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}
