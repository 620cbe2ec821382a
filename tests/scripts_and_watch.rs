//! Lua scripts (SHA-1, NOSCRIPT fallback, pipelines after SCRIPT FLUSH,
//! script errors, Redis 7 functions) and the optimistic WATCH helper (commit,
//! give up, UNWATCH on error, broken on panic, retry then commit) against a
//! private redis-server per test.

mod support;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use respline::{
    cmd, transaction, ConnectOptions, Connection, Error, Pipeline, Protocol, Script, ServerError,
    Value, WatchOptions,
};
use support::RedisServer;

/// Nothing in these tests should take long; a stuck reply fails the test.
const TIMEOUT: Duration = Duration::from_secs(10);

fn connect(server: &RedisServer) -> Connection {
    connect_with(server, Protocol::Resp2)
}

fn connect_with(server: &RedisServer, protocol: Protocol) -> Connection {
    let (host, port) = server.tcp_addr();
    let options = ConnectOptions::tcp(host, port)
        .read_timeout(Some(TIMEOUT))
        .write_timeout(Some(TIMEOUT))
        .protocol(protocol);
    Connection::connect(&options).expect("connect to the test server")
}

fn script_exists(conn: &mut Connection, script: &Script) -> bool {
    let found: Vec<bool> = conn
        .query(["SCRIPT", "EXISTS", script.sha()])
        .expect("SCRIPT EXISTS");
    found == [true]
}

/// True if `MULTI; SET key value; EXEC` commits on `conn` right after
/// another connection changed `key`: that is, `conn` has no WATCH on `key`.
fn commits_after_interference(
    conn: &mut Connection,
    other: &mut Connection,
    key: &str,
    value: &str,
) -> bool {
    // SET replaces a key of any type, and counts as a change for WATCH.
    let () = other
        .query(["SET", key, "changed by the other connection"])
        .expect("SET from the other connection");
    let mut pipe = Pipeline::transaction();
    pipe.cmd(["SET", key, value]);
    match pipe.query::<((),)>(conn) {
        Ok(((),)) => {
            let now: String = other.query(["GET", key]).expect("GET");
            assert_eq!(now, value, "EXEC committed, so SET ran");
            true
        }
        Err(Error::WatchAborted { .. }) => false,
        Err(e) => panic!("MULTI/SET/EXEC failed: {}", e),
    }
}

#[test]
fn local_sha1_equals_the_sha_script_load_returns() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let long =
        "-- a comment line to make the script span many SHA-1 blocks\n".repeat(40) + "return #KEYS";
    let sources = [
        "return 1",
        "return redis.call('GET', KEYS[1])",
        "return 'héllo wörld ✓ 日本語 🚀'",
        "-- ümlaut comment\r\nreturn {1, 'zwei', 'três'}",
        "",
        long.as_str(),
    ];
    for source in sources {
        let script = Script::new(source);
        let sha: String = conn.query(["SCRIPT", "LOAD", source]).expect("SCRIPT LOAD");
        assert_eq!(sha, script.sha(), "SHA-1 of {:?}", source);
        // load() checks the same thing itself.
        script.load(&mut conn).expect("Script::load");
        assert!(script_exists(&mut conn, &script));
    }
    assert!(!conn.is_broken());
}

#[test]
fn invoke_loads_on_noscript_then_uses_the_cache() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let script = Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let () = conn.query(["SCRIPT", "FLUSH"]).unwrap();
    assert!(!script_exists(&mut conn, &script));

    // Not loaded: EVALSHA gets NOSCRIPT, then SCRIPT LOAD + EVALSHA.
    let n: i64 = script.key("counter").arg(5).invoke(&mut conn).unwrap();
    assert_eq!(n, 5, "the script ran exactly once");
    assert!(script_exists(&mut conn, &script));

    // Loaded: one EVALSHA, no SCRIPT LOAD.
    let () = conn.query(["CONFIG", "RESETSTAT"]).unwrap();
    let n: i64 = script.key("counter").arg(5).invoke(&mut conn).unwrap();
    assert_eq!(n, 10, "the script ran exactly once more");
    let stats: String = conn.query(["INFO", "commandstats"]).unwrap();
    assert!(stats.contains("cmdstat_evalsha:calls=1,"), "{}", stats);
    assert!(!stats.contains("cmdstat_script"), "{}", stats);

    let total: i64 = conn.query(["GET", "counter"]).unwrap();
    assert_eq!(total, 10);

    // A script with no keys and no arguments.
    let pong: String = Script::new("return redis.call('PING')")
        .invoke(&mut conn)
        .unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn keys_and_args_reach_the_script_in_order() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let script = Script::new("return {#KEYS, #ARGV, KEYS[1], KEYS[2], ARGV[1], ARGV[2]}");
    // arg before key: keys still go first.
    let got: Vec<String> = script
        .arg("a1")
        .key("k1")
        .arg(2)
        .key(&b"k\x002"[..])
        .invoke(&mut conn)
        .unwrap();
    assert_eq!(got, ["2", "2", "k1", "k\u{0}2", "a1", "2"]);

    let mut call = script.invocation();
    for k in ["x", "y"] {
        call.push_key(k);
    }
    call.push_arg("z");
    let got: Vec<Value> = call.invoke(&mut conn).unwrap();
    assert_eq!(
        got,
        [
            Value::Integer(2),
            Value::Integer(1),
            Value::from("x"),
            Value::from("y"),
            Value::from("z"),
        ],
        "ARGV[2] is nil: Redis ends the Lua array there"
    );
}

#[test]
fn pipeline_after_script_flush_has_no_noscript() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let script = Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    script.load(&mut conn).unwrap();
    let () = conn.query(["SCRIPT", "FLUSH"]).unwrap();

    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", "counter", "10"]); // 0
    let i = script.key("counter").arg(5).add_to(&mut pipe); // 1: EVAL
    pipe.cmd(["GET", "counter"]); // 2
    assert_eq!((i, pipe.len()), (1, 3));
    let replies = pipe.execute(&mut conn).unwrap();
    assert_eq!(
        replies,
        [
            Value::SimpleString("OK".into()),
            Value::Integer(15),
            Value::from("15"),
        ]
    );

    // Many calls of one script: one load, then EVALSHAs only, in a
    // transaction (nothing can run between them).
    let () = conn.query(["SCRIPT", "FLUSH"]).unwrap();
    let mut pipe = Pipeline::transaction();
    let load = script.add_load_to(&mut pipe);
    let calls: Vec<usize> = (1..=3)
        .map(|n| script.key("counter").arg(n).add_evalsha_to(&mut pipe))
        .collect();
    assert_eq!((load, calls.as_slice()), (0, &[1, 2, 3][..]));
    let (sha, a, b, c): (String, i64, i64, i64) = pipe.query(&mut conn).unwrap();
    assert_eq!((sha.as_str(), a, b, c), (script.sha(), 16, 18, 21));

    // The same in a transaction, after another flush.
    let () = conn.query(["SCRIPT", "FLUSH"]).unwrap();
    let mut tx = Pipeline::transaction();
    let i = script.key("counter").arg(100).add_to(&mut tx);
    tx.cmd(["GET", "counter"]);
    assert_eq!(i, 0);
    let (n, s): (i64, String) = tx.query(&mut conn).unwrap();
    assert_eq!((n, s.as_str()), (121, "121"));

    // Without the load, a flushed script is a NOSCRIPT error at its own
    // index (what add_evalsha_to documents), and the pipeline is not re-run.
    let () = conn.query(["SCRIPT", "FLUSH"]).unwrap();
    let mut pipe = Pipeline::new();
    pipe.cmd(["PING"]);
    let i = script.key("counter").arg(1).add_evalsha_to(&mut pipe);
    let results: Vec<Result<Value, ServerError>> = pipe.query(&mut conn).unwrap();
    let err = results[i].as_ref().unwrap_err();
    assert_eq!((err.code(), err.index), ("NOSCRIPT", Some(1)));
    let total: i64 = conn.query(["GET", "counter"]).unwrap();
    assert_eq!(total, 121);
}

#[test]
fn script_errors_surface_as_server_errors() {
    let server = RedisServer::start();
    let mut conn = connect(&server);

    // Raised by the script, on the NOSCRIPT path and on the cached path.
    let bad = Script::new("return redis.error_reply('MY bad')");
    for _ in 0..2 {
        let err = bad.invoke::<(), _>(&mut conn).unwrap_err();
        match &err {
            Error::Server(e) => assert_eq!((e.code(), e.message()), ("MY", "bad")),
            other => panic!("expected a server error MY, found {:?}", other),
        }
        assert!(!conn.is_broken());
    }
    // Even as a Value, an error reply is an error...
    let err = bad.invoke::<Value, _>(&mut conn).unwrap_err();
    assert_eq!(err.server_error().map(|e| e.code()), Some("MY"));
    // ...unless asked for as a Result: then it stays a value.
    let v: Result<Value, ServerError> = bad.invoke(&mut conn).unwrap();
    let e = v.unwrap_err();
    assert_eq!((e.code(), e.message()), ("MY", "bad"));

    // A failing redis.call keeps its code.
    let () = conn.query(["SET", "s", "text"]).unwrap();
    let err = Script::new("return redis.call('INCR', KEYS[1])")
        .key("s")
        .invoke::<i64, _>(&mut conn)
        .unwrap_err();
    assert_eq!(err.server_error().map(|e| e.code()), Some("ERR"), "{}", err);

    let err = Script::new("return redis.call('LPUSH', KEYS[1], 'x')")
        .key("s")
        .invoke::<i64, _>(&mut conn)
        .unwrap_err();
    assert_eq!(
        err.server_error().map(|e| e.code()),
        Some("WRONGTYPE"),
        "{}",
        err
    );

    // A script that does not compile: the SCRIPT LOAD error, not NOSCRIPT.
    let err = Script::new("this is not lua")
        .invoke::<(), _>(&mut conn)
        .unwrap_err();
    let e = err.server_error().expect("a server error");
    assert_eq!(e.code(), "ERR", "{}", err);
    assert!(e.message().contains("compiling"), "{}", err);
    let err = Script::new("this is not lua").load(&mut conn).unwrap_err();
    assert!(err.server_error().is_some(), "{}", err);

    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn functions_work_through_the_ordinary_command_path() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let library = "#!lua name=lib\n\
                   redis.register_function('f', function(keys, args) return args[1] end)";
    let name: String = conn.query(["FUNCTION", "LOAD", library]).unwrap();
    assert_eq!(name, "lib");
    let echoed: String = conn
        .query(cmd("FCALL").arg("f").arg(0).arg("hello"))
        .unwrap();
    assert_eq!(echoed, "hello");
    let err = conn.query::<String>(["FCALL", "nope", "0"]).unwrap_err();
    assert!(err.server_error().is_some(), "{}", err);
}

#[test]
fn scripts_and_transactions_over_resp3() {
    let server = RedisServer::start();
    let mut conn = connect_with(&server, Protocol::Resp3);
    assert_eq!(conn.protocol(), Protocol::Resp3);
    let script = Script::new("return {KEYS[1], tonumber(ARGV[1]) * 2}");
    let () = conn.query(["SCRIPT", "FLUSH"]).unwrap();
    let (k, n): (String, i64) = script.key("k").arg(21).invoke(&mut conn).unwrap();
    assert_eq!((k.as_str(), n), ("k", 42));

    let () = conn.query(["SET", "r3", "1"]).unwrap();
    let (n,): (i64,) = transaction(&mut conn, &["r3"], WatchOptions::new(), |c, pipe| {
        let v: i64 = c.query(["GET", "r3"])?;
        pipe.cmd(cmd("INCRBY").arg("r3").arg(v * 10));
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 11);
}

#[test]
fn watch_helper_commits_when_nothing_interferes() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let () = conn.query(["SET", "balance", "40"]).unwrap();
    let calls = Cell::new(0);
    let ((), doubled): ((), i64) = transaction(
        &mut conn,
        &["balance", "log"],
        WatchOptions::default(),
        |c, pipe| {
            calls.set(calls.get() + 1);
            let balance: i64 = c.query(["GET", "balance"])?;
            pipe.cmd(cmd("SET").arg("balance").arg(balance + 1));
            pipe.cmd(cmd("INCRBY").arg("balance").arg(balance + 1));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((doubled, calls.get()), (82, 1));
    assert!(!conn.is_broken());
}

#[test]
fn gives_up_after_max_attempts_and_leaves_nothing_watched() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let mut other = connect(&server);
    let () = conn.query(["SET", "hot", "0"]).unwrap();
    let calls = Cell::new(0u32);
    let err = transaction::<_, _, (), _>(
        &mut conn,
        &["hot"],
        WatchOptions::new()
            .max_attempts(4)
            .backoff(Duration::from_millis(1), Duration::from_millis(2)),
        |c, pipe| {
            calls.set(calls.get() + 1);
            let v: i64 = c.query(["GET", "hot"])?;
            // Someone else writes the watched key on every attempt.
            let _: i64 = other.query(["INCR", "hot"])?;
            pipe.cmd(cmd("SET").arg("hot").arg(v + 100));
            Ok(())
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::WatchAborted { attempts: 4 }),
        "expected WatchAborted after 4 attempts, found {:?}",
        err
    );
    assert_eq!(calls.get(), 4);
    assert!(!conn.is_broken());
    let v: i64 = conn.query(["GET", "hot"]).unwrap();
    assert_eq!(v, 4, "no SET from the helper ever committed");
    assert!(commits_after_interference(
        &mut conn, &mut other, "hot", "after"
    ));
}

#[test]
fn closure_error_unwatches_and_is_returned() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let mut other = connect(&server);
    let () = conn.query(["SET", "k", "1"]).unwrap();
    let err = transaction::<_, _, (), _>(&mut conn, &["k"], WatchOptions::new(), |c, pipe| {
        let _: i64 = c.query(["GET", "k"])?;
        pipe.cmd(["SET", "k", "never"]);
        Err(Error::Config("the closure changed its mind".into()))
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m == "the closure changed its mind"),
        "{:?}",
        err
    );
    assert!(!conn.is_broken());
    assert!(commits_after_interference(&mut conn, &mut other, "k", "v2"));

    // A server error from a read inside the closure is returned the same way.
    let () = conn.query(["HSET", "h", "f", "v"]).unwrap();
    let err = transaction::<_, _, (), _>(&mut conn, &["h"], WatchOptions::new(), |c, _| {
        let _: Option<String> = c.query(["GET", "h"])?; // WRONGTYPE
        Ok(())
    })
    .unwrap_err();
    assert_eq!(err.server_error().map(|e| e.code()), Some("WRONGTYPE"));
    assert!(commits_after_interference(&mut conn, &mut other, "h", "v3"));
}

#[test]
fn empty_pipeline_unwatches_and_returns_no_replies() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let mut other = connect(&server);
    let () = conn.query(["SET", "e", "1"]).unwrap();
    let replies: Vec<Value> = transaction(&mut conn, &["e"], WatchOptions::new(), |c, _| {
        let _: i64 = c.query(["GET", "e"])?;
        Ok(())
    })
    .unwrap();
    assert!(replies.is_empty());
    assert!(commits_after_interference(&mut conn, &mut other, "e", "x"));
}

#[test]
fn execabort_propagates_and_leaves_nothing_watched() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let mut other = connect(&server);
    let err = transaction::<_, _, (), _>(&mut conn, &["q"], WatchOptions::new(), |_, pipe| {
        pipe.cmd(["SET", "q", "1"]);
        pipe.cmd(["SET", "q"]); // wrong number of arguments: refused at queue time
        Ok(())
    })
    .unwrap_err();
    match &err {
        Error::ExecAbort { errors } => {
            assert_eq!(errors.len(), 1, "{:?}", errors);
            assert_eq!(errors[0].index, Some(1));
        }
        other => panic!("expected EXECABORT, found {:?}", other),
    }
    assert!(!conn.is_broken());
    assert!(commits_after_interference(&mut conn, &mut other, "q", "ok"));
}

#[test]
fn closure_panic_leaves_the_connection_broken() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        transaction::<_, _, (), _>(&mut conn, &["p"], WatchOptions::new(), |c, _| {
            let _: Option<String> = c.query(["GET", "p"])?;
            panic!("the closure panics while p is WATCHed");
        })
    }));
    assert!(outcome.is_err(), "the panic passes through");
    assert!(conn.is_broken());
    match conn.query::<String>(["PING"]) {
        Err(Error::Broken { cause }) => assert!(cause.contains("panic"), "{}", cause),
        other => panic!("expected a broken connection, found {:?}", other),
    }
    // A fresh connection from the same recipe works.
    conn.reconnect().unwrap();
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn retries_and_commits_when_interference_stops() {
    let server = RedisServer::start();
    let mut conn = connect(&server);
    let mut other = connect(&server);
    let () = conn.query(["SET", "n", "1"]).unwrap();
    let attempts = Cell::new(0u32);
    let ((), now): ((), i64) = transaction(
        &mut conn,
        &["n"],
        WatchOptions::new().no_backoff(),
        |c, pipe| {
            attempts.set(attempts.get() + 1);
            let v: i64 = c.query(["GET", "n"])?;
            if attempts.get() == 1 {
                let _: i64 = other.query(["INCRBY", "n", "10"])?;
            }
            pipe.cmd(cmd("SET").arg("n").arg(v * 2));
            pipe.cmd(["GET", "n"]);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(attempts.get(), 2);
    assert_eq!(
        now, 22,
        "the second attempt read 11, after the interference"
    );
}

/// Runs `SCRIPT FLUSH` every 3 ms on its own connection until stopped;
/// returns how many flushes ran.
fn flush_scripts_until(server: &RedisServer, stop: &AtomicBool) -> usize {
    let mut conn = connect(server);
    let mut flushes = 0;
    while !stop.load(Ordering::Relaxed) {
        conn.execute(["SCRIPT", "FLUSH"]).unwrap();
        flushes += 1;
        thread::sleep(Duration::from_millis(3));
    }
    flushes
}

#[test]
fn large_script_pipelines_never_meet_noscript_under_concurrent_flushes() {
    // Redis reads a large pipeline in pieces and serves other clients in
    // between, so a SCRIPT FLUSH can land between any two of its commands.
    let server = RedisServer::start();
    let script = Script::new("return ARGV[1]");
    let stop = AtomicBool::new(false);
    let (flushes, pipelines, noscript) = thread::scope(|s| {
        let flusher = s.spawn(|| flush_scripts_until(&server, &stop));
        let mut conn = connect(&server);
        let (mut pipelines, mut noscript) = (0, 0);
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let mut pipe = Pipeline::new();
            for i in 0..1000 {
                script.arg(format!("{:090}", i)).add_to(&mut pipe);
            }
            assert!(
                pipe.as_bytes().len() >= 100_000,
                "{}",
                pipe.as_bytes().len()
            );
            let replies = pipe.execute_raw(&mut conn).unwrap();
            for reply in &replies {
                match reply {
                    Value::Error(e) if e.starts_with("NOSCRIPT") => noscript += 1,
                    Value::Error(e) => panic!("unexpected error reply {}", e),
                    _ => {}
                }
            }
            pipelines += 1;
        }
        stop.store(true, Ordering::Relaxed);
        (flusher.join().unwrap(), pipelines, noscript)
    });
    eprintln!(
        "{} pipelines of 1,000 scripts, {} concurrent flushes",
        pipelines, flushes
    );
    assert!(
        pipelines >= 5 && flushes >= 100,
        "{} pipelines, {} flushes",
        pipelines,
        flushes
    );
    assert_eq!(noscript, 0, "NOSCRIPT replies reached the caller");
}

#[test]
fn invoke_under_concurrent_flushes_runs_each_script_exactly_once() {
    let server = RedisServer::start();
    let script = Script::new("return redis.call('INCR', KEYS[1])");
    let stop = AtomicBool::new(false);
    let calls = 300;
    thread::scope(|s| {
        let flusher = s.spawn(|| flush_scripts_until(&server, &stop));
        let mut conn = connect(&server);
        let big = "x".repeat(100_000);
        for _ in 0..calls {
            // A large argument makes each request take long enough to race.
            let _: i64 = script.key("runs").arg(&big).invoke(&mut conn).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(flusher.join().unwrap() > 0);
    });
    let runs: i64 = connect(&server).query(["GET", "runs"]).unwrap();
    assert_eq!(runs, calls, "every invoke ran its script exactly once");
}
