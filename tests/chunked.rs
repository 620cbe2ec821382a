//! Chunked execution against real servers: large loads with their indices,
//! per-command errors, stopping on error, 20 MiB values both ways, a
//! connection killed mid-load, and how far ahead the iterator is pulled.

mod support;

use std::cell::Cell;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use respline::{Chunking, Connection, Error, Value};
use support::RedisServer;

fn open(server: &RedisServer) -> Connection {
    Connection::open(&server.url()).unwrap()
}

#[test]
fn a_100k_load_hands_every_reply_over_with_its_index() {
    let server = RedisServer::start();
    let mut conn = open(&server);
    let mut next = 0usize;
    let summary = conn
        .execute_chunked(
            (0..100_000).map(|i| ("SET", format!("k:{}", i), i)),
            &Chunking::default(),
            |i, v| {
                assert_eq!(i, next, "replies out of order");
                assert_eq!(v, Value::SimpleString("OK".into()));
                next += 1;
            },
        )
        .unwrap();
    assert_eq!(next, 100_000);
    assert_eq!(
        (summary.commands, summary.chunks, summary.errors),
        (100_000, 100, 0)
    );
    assert!(summary.first_error.is_none());
    let size: i64 = conn.query(["DBSIZE"]).unwrap();
    assert_eq!(size, 100_000);
    // Replies carry their own command's data.
    let mut wrong = 0;
    let _ = conn
        .execute_chunked(
            (0..100_000).map(|i| ("GET", format!("k:{}", i))),
            &Chunking::default().max_commands(777),
            |i, v| {
                if v.as_bytes() != Some(i.to_string().as_bytes()) {
                    wrong += 1;
                }
            },
        )
        .unwrap();
    assert_eq!(wrong, 0);
}

#[test]
fn server_errors_are_reported_per_command_and_the_load_goes_on() {
    let server = RedisServer::start();
    let mut conn = open(&server);
    let _: () = conn.query(["SET", "text", "not a number"]).unwrap();
    let mut errors = Vec::new();
    // Every 1000th command fails (INCR of a string).
    let summary = conn
        .execute_chunked(
            (0..10_000).map(|i| {
                if i % 1000 == 500 {
                    ("INCR", "text".to_string())
                } else {
                    ("INCR", format!("n:{}", i))
                }
            }),
            &Chunking::default().max_commands(300),
            |i, v| {
                if let Value::Error(e) = v {
                    errors.push((i, e));
                }
            },
        )
        .unwrap();
    assert_eq!(summary.commands, 10_000);
    assert_eq!(summary.errors, 10);
    let indices: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..10).map(|k| k * 1000 + 500).collect::<Vec<_>>());
    assert!(errors[0].1.starts_with("ERR value is not an integer"));
    let first = summary.first_error.unwrap();
    assert_eq!(first.index, Some(500));
    assert_eq!(first.code(), "ERR");
    // The commands after each error ran.
    let last: i64 = conn.query(["GET", "n:9999"]).unwrap();
    assert_eq!(last, 1);
}

#[test]
fn stop_on_error_stops_sending_after_the_failing_chunk() {
    let server = RedisServer::start();
    let mut conn = open(&server);
    let _: () = conn.query(["SET", "text", "x"]).unwrap();
    let mut seen = 0;
    let err = conn
        .execute_chunked(
            (0..10_000)
                .map(|i| {
                    if i == 2500 {
                        ("INCR", "text".to_string())
                    } else {
                        ("SET", format!("s:{}", i))
                    }
                })
                .map(|(c, k)| (c, k, "v")),
            &Chunking::default().max_commands(1000).stop_on_error(true),
            |_, _| seen += 1,
        )
        .unwrap_err();
    match &err {
        Error::Server(e) => assert_eq!(e.index, Some(2500)),
        other => panic!("{:?}", other),
    }
    // Wrong arity for INCR: the error names the command's index.
    assert!(err.to_string().contains("command #2500"), "{}", err);
    // The chunk after the failing one was already on the wire (two chunks
    // are in flight); nothing after it was sent, and every reply owed was
    // read, so the connection is in step.
    assert_eq!(seen, 4000);
    let exists: i64 = conn
        .query(("EXISTS", "s:3999", "s:4000", "s:9999"))
        .unwrap();
    assert_eq!(exists, 1);
    assert!(!conn.is_broken());
}

fn big_value(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn twenty_mib_values_both_ways_do_not_deadlock() {
    // SET and GET of 20 MiB values interleaved: the server writes 20 MiB
    // replies while the client writes 20 MiB requests. A client that
    // writes everything before reading stalls here once both sides'
    // socket buffers are full. The server starts with a DEBUG SLEEP, so
    // the first writes meet a server that reads nothing at all.
    let server = RedisServer::start();
    let mut conn = open(&server);
    let values: Vec<Vec<u8>> = (0..6).map(|i| big_value(i, 20 << 20)).collect();
    let mut commands: Vec<Vec<Vec<u8>>> =
        vec![vec![b"DEBUG".to_vec(), b"SLEEP".to_vec(), b"0.3".to_vec()]];
    for (i, v) in values.iter().enumerate() {
        let key = format!("big:{}", i).into_bytes();
        commands.push(vec![b"SET".to_vec(), key.clone(), v.clone()]);
        commands.push(vec![b"GET".to_vec(), key]);
    }
    let mut got = Vec::new();
    let summary = conn
        .execute_chunked(
            commands.iter(),
            &Chunking::default().max_commands(1000),
            |i, v| {
                if i > 0 && i % 2 == 0 {
                    got.push(v);
                }
            },
        )
        .unwrap();
    assert_eq!(summary.commands, 13);
    assert_eq!(summary.errors, 0);
    assert_eq!(got.len(), 6);
    for (v, want) in got.iter().zip(&values) {
        assert!(
            v.as_bytes() == Some(&want[..]),
            "a 20 MiB value came back wrong"
        );
    }
}

#[test]
fn a_killed_connection_reports_how_many_commands_were_acknowledged() {
    let server = RedisServer::start();
    let mut conn = open(&server);
    let id: i64 = conn.query(["CLIENT", "ID"]).unwrap();
    let mut admin = open(&server);
    let (tx, rx) = mpsc::channel();
    let killer = thread::spawn(move || {
        rx.recv().unwrap();
        admin.query::<i64>(("CLIENT", "KILL", "ID", id)).unwrap();
    });
    let n = 200_000;
    let mut acked_by_callback = 0;
    let err = conn
        .execute_chunked(
            (0..n).map(|i| ("SET", format!("r:{}", i), i)),
            &Chunking::default(),
            |i, _| {
                acked_by_callback = i + 1;
                if i == 20_000 {
                    tx.send(()).unwrap();
                }
            },
        )
        .unwrap_err();
    killer.join().unwrap();
    let acked = err.replies_received().expect("an interrupted load");
    assert!(err.is_io(), "{:?}", err);
    assert!(acked > 20_000 && acked < n, "{}", acked);
    assert_eq!(acked, acked_by_callback);
    assert!(conn.is_broken());

    // Every acknowledged command ran: resume from there on a new connection.
    conn.reconnect().unwrap();
    let mut missing = 0;
    let _ = conn
        .execute_chunked(
            (0..acked).map(|i| ("EXISTS", format!("r:{}", i))),
            &Chunking::default(),
            |_, v| missing += (v != Value::Integer(1)) as usize,
        )
        .unwrap();
    assert_eq!(missing, 0);
    let _ = conn
        .execute_chunked(
            (acked..n).map(|i| ("SET", format!("r:{}", i), i)),
            &Chunking::default(),
            |_, _| {},
        )
        .unwrap();
    let size: i64 = conn.query(["DBSIZE"]).unwrap();
    assert_eq!(size, n as i64);
}

#[test]
fn the_iterator_is_pulled_at_most_two_chunks_ahead() {
    let server = RedisServer::start();
    let mut conn = open(&server);
    let pulled = Cell::new(0usize);
    let max = 250;
    let mut worst = 0;
    let _ = conn
        .execute_chunked(
            (0..20_000).map(|i| {
                pulled.set(pulled.get() + 1);
                ("SET", format!("p:{}", i), "v")
            }),
            &Chunking::default().max_commands(max),
            |i, _| {
                let ahead = pulled.get() - i;
                worst = worst.max(ahead);
                assert!(ahead <= 2 * max, "pulled {} ahead at {}", ahead, i);
            },
        )
        .unwrap();
    // It does run ahead: the next chunk is written before replies are read.
    assert!(worst > max, "{}", worst);
}

#[test]
fn the_byte_budget_cuts_chunks_before_the_command_count() {
    let server = RedisServer::start();
    let mut conn = open(&server);
    let value = vec![b'v'; 10 * 1024];
    let summary = conn
        .execute_chunked(
            (0..1000).map(|i| ("SET", format!("b:{}", i), &value[..])),
            &Chunking::default().max_commands(1000).max_bytes(100 * 1024),
            |_, _| {},
        )
        .unwrap();
    // ~10 KiB per command, 100 KiB per chunk: about 10 commands a chunk.
    assert_eq!(summary.commands, 1000);
    assert!(
        summary.chunks >= 90 && summary.chunks <= 110,
        "{}",
        summary.chunks
    );
}

#[test]
fn a_read_timeout_mid_load_breaks_the_connection() {
    let server = RedisServer::start();
    let options = respline::ConnectOptions::tcp("127.0.0.1", server.port())
        .read_timeout(Some(Duration::from_millis(100)));
    let mut conn = Connection::connect(&options).unwrap();
    let err = conn
        .execute_chunked(
            (0..3000).map(|i| {
                if i == 1500 {
                    vec!["DEBUG".to_string(), "SLEEP".into(), "0.5".into()]
                } else {
                    vec!["SET".to_string(), format!("t:{}", i), "v".into()]
                }
            }),
            &Chunking::default(),
            |_, _| {},
        )
        .unwrap_err();
    assert!(err.is_timeout(), "{:?}", err);
    // Redis sends the replies to commands it read in the same batch as the
    // DEBUG SLEEP only after the sleep, so the count is at most 1500.
    let acked = err.replies_received().unwrap();
    assert!(acked <= 1500, "{}", acked);
    assert!(conn.is_broken());
}

/// A server that blocks on a full socket, as Dragonfly does and as Redis's
/// own test client did: it reads one command, writes its whole reply with a
/// blocking write, and only then reads the next. It knows SET and GET.
fn start_blocking_server(preload: Vec<(Vec<u8>, Vec<u8>)>) -> u16 {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut store: HashMap<Vec<u8>, Vec<u8>> = preload.into_iter().collect();
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let limits = respline::resp::Limits::default();
            let (command, used) = match respline::resp::decode(&pending, &limits) {
                Ok(Some(c)) => c,
                Ok(None) => match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        continue;
                    }
                },
                Err(_) => return,
            };
            pending.drain(..used);
            let args: Vec<Vec<u8>> = match command {
                Value::Array(items) => items
                    .into_iter()
                    .map(|a| a.as_bytes().unwrap_or_default().to_vec())
                    .collect(),
                _ => return,
            };
            let mut reply = Vec::new();
            match args[0].as_slice() {
                b"SET" => {
                    store.insert(args[1].clone(), args[2].clone());
                    reply.extend_from_slice(b"+OK\r\n");
                }
                b"GET" => match store.get(&args[1]) {
                    Some(v) => respline::resp::write_bulk(&mut reply, v),
                    None => reply.extend_from_slice(b"$-1\r\n"),
                },
                _ => reply.extend_from_slice(b"-ERR unknown command\r\n"),
            }
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    });
    port
}

/// GET of a 20 MiB value, then SET of another, five times over.
/// Keys and values to preload, and commands as lists of arguments.
type Load = (Vec<(Vec<u8>, Vec<u8>)>, Vec<Vec<Vec<u8>>>);

fn get_then_set_load() -> Load {
    let preload = vec![(b"big:0".to_vec(), big_value(0, 20 << 20))];
    let mut commands = Vec::new();
    for i in 0..5u8 {
        commands.push(vec![b"GET".to_vec(), format!("big:{}", i).into_bytes()]);
        commands.push(vec![
            b"SET".to_vec(),
            format!("big:{}", i + 1).into_bytes(),
            big_value(i + 1, 20 << 20),
        ]);
    }
    (preload, commands)
}

#[test]
fn a_server_that_blocks_on_full_sockets_does_not_deadlock_a_chunked_load() {
    let (preload, commands) = get_then_set_load();
    let port = start_blocking_server(preload);
    let options = respline::ConnectOptions::tcp("127.0.0.1", port)
        .read_timeout(Some(Duration::from_secs(20)))
        .write_timeout(Some(Duration::from_secs(20)));
    let mut conn = Connection::connect(&options).unwrap();
    let mut gets = Vec::new();
    let summary = conn
        .execute_chunked(commands.iter(), &Chunking::default(), |i, v| {
            if i % 2 == 0 {
                gets.push(v);
            }
        })
        .unwrap();
    assert_eq!(summary.commands, 10);
    for (i, v) in gets.iter().enumerate() {
        assert!(
            v.as_bytes() == Some(&big_value(i as u8, 20 << 20)[..]),
            "GET big:{} came back wrong",
            i
        );
    }
}

#[test]
fn the_same_load_as_one_plain_pipeline_stalls_until_its_write_timeout() {
    // The control: write everything, then read. The server blocks writing
    // the first GET's 20 MiB reply; the client blocks writing the SET
    // behind it. Only the write deadline ends it.
    let (preload, commands) = get_then_set_load();
    let port = start_blocking_server(preload);
    let options = respline::ConnectOptions::tcp("127.0.0.1", port)
        .write_timeout(Some(Duration::from_millis(1500)));
    let mut conn = Connection::connect(&options).unwrap();
    let mut pipe = respline::Pipeline::new();
    for c in &commands {
        pipe.cmd(c);
    }
    let err = pipe.execute(&mut conn).unwrap_err();
    assert!(err.is_timeout(), "{:?}", err);
    assert!(conn.is_broken());
}

#[test]
fn a_zero_byte_budget_still_sends_every_command_one_per_chunk() {
    let server = RedisServer::start();
    let mut conn = open(&server);
    let summary = conn
        .execute_chunked(
            (0..50).map(|i| ("SET", format!("z:{}", i), i)),
            &Chunking::default().max_bytes(0).max_commands(0),
            |_, _| {},
        )
        .unwrap();
    assert_eq!((summary.commands, summary.chunks), (50, 50));
    let size: i64 = conn.query(["DBSIZE"]).unwrap();
    assert_eq!(size, 50);
}
