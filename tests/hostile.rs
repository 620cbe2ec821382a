//! The adversarial suite: faults, hostile peers and a killed server.
//!
//! Each scenario checks the same things: a clear error (or, where the bytes
//! are valid, the right answer), the connection broken whenever the stream is
//! out of step, no hang past the configured timeouts, memory bounded by the
//! bytes received, and never a wrong reply handed to a later command. A
//! scripted fake peer (`fake_peer`) plays what a real server cannot be made
//! to do; the rest runs against real `redis-server` processes.

mod fake_peer;
mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fake_peer::*;

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;
use respline::resp::ProtocolErrorKind;
use respline::{
    Chunking, ConnectOptions, Connection, Error, FromValue, Pipeline, ToCommand, Value,
};
use support::RedisServer;

/// No scenario may take longer than this to fail: far above every timeout
/// configured here, far below "hung".
const NO_HANG: Duration = Duration::from_secs(8);

fn connect(options: &ConnectOptions) -> Connection {
    Connection::connect(options).expect("connect to the fake peer")
}

/// The connection is broken, refuses use at once, and writes nothing more.
fn assert_refuses(conn: &mut Connection) {
    assert!(conn.is_broken());
    let started = Instant::now();
    match conn.query::<Value>(["PING"]) {
        Err(Error::Broken { cause }) => assert!(!cause.is_empty()),
        other => panic!("a broken connection answered {:?}", other),
    }
    assert!(started.elapsed() < Duration::from_millis(500));
}

fn protocol_kind(e: &Error) -> Option<ProtocolErrorKind> {
    match e {
        Error::Protocol(p) => Some(p.kind()),
        Error::Interrupted { source, .. } | Error::NotSent { source } => protocol_kind(source),
        _ => None,
    }
}

/// A reply of every RESP2 and RESP3 shape, for drips and splits.
fn mixed_reply() -> Vec<u8> {
    b"*7\r\n+OK\r\n:-42\r\n$5\r\nhe\r\nl\r\n$-1\r\n%1\r\n+k\r\n,1.5\r\n|1\r\n+ttl\r\n:9\r\n#t\r\n~1\r\n(123\r\n"
        .to_vec()
}

fn check_mixed(v: &Value) {
    let items = v.as_slice().expect("an array");
    assert_eq!(items.len(), 7);
    assert_eq!(items[1], Value::Integer(-42));
    assert_eq!(items[2], Value::BulkString(b"he\r\nl".to_vec()));
    assert_eq!(items[3], Value::Nil);
    assert_eq!(items[5].without_attributes(), &Value::Boolean(true));
    assert_eq!(items[6], Value::Set(vec![Value::BigNumber("123".into())]));
}

// ------------------------------------------------------ drips and splits

#[test]
fn a_reply_dripped_one_byte_at_a_time_succeeds() {
    let peer = FakePeer::start(vec![
        Read(1),
        Drip(mixed_reply(), Duration::from_millis(1)),
        Read(1),
        Send(b"+PONG\r\n".to_vec()),
        Stall(Duration::from_secs(2)),
    ]);
    // The read timeout bounds each reply, not each byte: a 2 s deadline
    // is plenty for ~80 bytes at 1 ms each.
    let mut conn = connect(&peer.with_read_timeout(2000));
    let v: Value = conn.query(["GET", "k"]).unwrap();
    check_mixed(&v);
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
    drop(conn);
    assert_eq!(peer.finish().commands, 2);
}

#[test]
fn a_reply_split_at_every_byte_boundary_succeeds() {
    let reply = mixed_reply();
    for split in 1..reply.len() {
        let peer = FakePeer::start(vec![
            Read(1),
            Send(reply[..split].to_vec()),
            Sleep(Duration::from_millis(3)),
            Send(reply[split..].to_vec()),
            Stall(Duration::from_secs(2)),
        ]);
        let mut conn = connect(&peer.with_read_timeout(2000));
        let v: Value = conn.query(["GET", "k"]).unwrap();
        check_mixed(&v);
        assert!(!conn.is_broken());
    }
}

// ------------------------------------------------------------- timeouts

#[test]
fn a_reply_dripped_slower_than_the_read_timeout_times_out() {
    let peer = FakePeer::start(vec![
        Read(1),
        Drip(b"$10\r\n0123456789\r\n".to_vec(), Duration::from_millis(50)),
        Stall(Duration::from_secs(3)),
    ]);
    let mut conn = connect(&peer.with_read_timeout(200));
    let started = Instant::now();
    let err = conn.query::<Value>(["GET", "k"]).unwrap_err();
    // Each byte comes well within 200 ms, but the reply does not: the
    // timeout is a deadline for the whole reply.
    assert!(err.is_timeout(), "{:?}", err);
    assert!(started.elapsed() < NO_HANG);
    assert_refuses(&mut conn);
    drop(conn);
    assert_eq!(
        peer.finish().commands,
        1,
        "the broken connection wrote again"
    );
}

#[test]
fn a_server_that_stalls_mid_reply_times_out() {
    let peer = FakePeer::start(vec![
        Read(3),
        Send(b"+OK\r\n$10\r\n01234".to_vec()),
        Stall(Duration::from_secs(3)),
    ]);
    let mut conn = connect(&peer.with_read_timeout(300));
    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", "a", "1"])
        .cmd(["GET", "a"])
        .cmd(["GET", "b"]);
    let started = Instant::now();
    let err = pipe.execute(&mut conn).unwrap_err();
    assert!(err.is_timeout(), "{:?}", err);
    assert_eq!(err.replies_received(), Some(1));
    assert!(started.elapsed() < NO_HANG);
    assert_refuses(&mut conn);
}

#[test]
fn a_server_that_never_reads_makes_the_write_time_out() {
    let peer = FakePeer::start(vec![Sleep(Duration::from_secs(3))]);
    let options = peer
        .options()
        .write_timeout(Some(Duration::from_millis(300)))
        .read_timeout(Some(Duration::from_millis(300)));
    let mut conn = connect(&options);
    // 48 MiB: more than loopback's socket buffers on both sides can hold.
    let big = vec![b'x'; 48 << 20];
    let started = Instant::now();
    let err = conn
        .query::<Value>(("SET", "big", &big[..]))
        .expect_err("48 MiB fitted in the socket buffers");
    assert!(
        matches!(err, Error::Timeout { operation: "write" }),
        "{:?}",
        err
    );
    assert!(started.elapsed() < NO_HANG);
    assert_refuses(&mut conn);
}

// ------------------------------------------------------ closes and resets

#[test]
fn a_truncated_reply_then_close_is_an_unexpected_eof() {
    let peer = FakePeer::start(vec![Read(1), Send(b"$10\r\nhel".to_vec()), Close]);
    let mut conn = connect(&peer.with_read_timeout(2000));
    let err = conn.query::<Value>(["GET", "k"]).unwrap_err();
    match &err {
        Error::Io(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
            assert!(e.to_string().contains("in the middle of a reply"), "{}", e);
        }
        other => panic!("{:?}", other),
    }
    assert_refuses(&mut conn);
}

#[test]
fn a_reset_mid_pipeline_reports_the_replies_that_arrived() {
    let forty: Vec<u8> = (0..40)
        .flat_map(|i| format!("${}\r\nvalue-{}\r\n", format!("value-{}", i).len(), i).into_bytes())
        .collect();
    let peer = FakePeer::start(vec![
        Read(1),
        Send(forty),
        Sleep(Duration::from_millis(300)),
        Reset,
    ]);
    let mut conn = connect(&peer.with_read_timeout(3000));
    let mut pipe = Pipeline::new();
    for i in 0..100 {
        pipe.cmd(("GET", format!("key-{}", i)));
    }
    let mut seen = Vec::new();
    let err = conn
        .execute_chunked(
            (0..100).map(|i| ("GET", format!("key-{}", i))),
            &Chunking::default().max_commands(100),
            |i, v| seen.push((i, v)),
        )
        .unwrap_err();
    assert!(err.is_io(), "{:?}", err);
    assert_eq!(err.replies_received(), Some(40), "{:?}", err);
    assert!(
        err.to_string().contains("after 40 of 100 replies"),
        "{}",
        err
    );
    // Every reply handed over belongs to its own command.
    assert_eq!(seen.len(), 40);
    for (i, v) in seen {
        assert_eq!(v, Value::BulkString(format!("value-{}", i).into_bytes()));
    }
    assert_refuses(&mut conn);
}

// -------------------------------------------------------- hostile bytes

/// Sends `reply` to one GET and returns the error the client reports.
fn hostile_reply(reply: &[u8]) -> (Error, Connection) {
    let peer = FakePeer::start(vec![
        Read(1),
        Send(reply.to_vec()),
        Stall(Duration::from_secs(2)),
    ]);
    let mut conn = connect(&peer.with_read_timeout(500));
    let started = Instant::now();
    let err = conn
        .query::<Value>(["GET", "k"])
        .expect_err("a hostile reply was accepted");
    assert!(started.elapsed() < NO_HANG);
    assert!(conn.is_broken());
    (err, conn)
}

#[test]
fn garbage_and_bad_framing_are_protocol_errors() {
    let cases: &[(&[u8], ProtocolErrorKind, &str)] = &[
        (
            b"@hello\r\n",
            ProtocolErrorKind::Malformed,
            "RESP type byte",
        ),
        (
            b"\x00\x01\x02\r\n",
            ProtocolErrorKind::Malformed,
            "found 0x00",
        ),
        (b"$abc\r\n", ProtocolErrorKind::Malformed, "bulk length"),
        (b"*x1\r\n", ProtocolErrorKind::Malformed, "aggregate length"),
        (b"$-5\r\n", ProtocolErrorKind::Malformed, "bulk length"),
        (b"*-2\r\n", ProtocolErrorKind::Malformed, "aggregate length"),
        (
            b":99999999999999999999\r\n",
            ProtocolErrorKind::Malformed,
            "i64",
        ),
        (
            b"$99999999999999999999\r\n",
            ProtocolErrorKind::LimitExceeded,
            "bulk length",
        ),
        (
            b"$9999999999\r\n",
            ProtocolErrorKind::LimitExceeded,
            "bulk length of at most 536870912",
        ),
        (b"+OK\n", ProtocolErrorKind::Malformed, "bare LF"),
        (b"*1\n:1\n", ProtocolErrorKind::Malformed, "bare LF"),
        (
            b"$3\r\nabcXYZ",
            ProtocolErrorKind::Malformed,
            "CRLF after the 3-byte payload",
        ),
        (
            b"$3\r\nabc\n",
            ProtocolErrorKind::Malformed,
            "CRLF after the 3-byte payload",
        ),
        (
            b"$6\r\nfoobarx\r\n",
            ProtocolErrorKind::Malformed,
            "found 'x'",
        ),
        (b"\xff\r\n", ProtocolErrorKind::Malformed, "found 0xff"),
        (b"\r\n", ProtocolErrorKind::Malformed, "found 0x0d"),
        (
            b"HTTP/1.1 400 Bad Request\r\n",
            ProtocolErrorKind::Malformed,
            "found 'H' (0x48)",
        ),
        (
            b"$5 \r\nhello\r\n",
            ProtocolErrorKind::Malformed,
            "bulk length",
        ),
        (b"$-01\r\n", ProtocolErrorKind::Malformed, "bulk length"),
        (b"$-0\r\n", ProtocolErrorKind::Malformed, "bulk length"),
        (b":12a\r\n", ProtocolErrorKind::Malformed, "i64"),
        (b"%-1\r\n", ProtocolErrorKind::Malformed, "aggregate length"),
        (b"$5\nhello\r\n", ProtocolErrorKind::Malformed, "bare LF"),
        (b"+O\rK\r\n", ProtocolErrorKind::Malformed, "LF after CR"),
        (
            b"$18446744073709551615\r\n",
            ProtocolErrorKind::LimitExceeded,
            "bulk length",
        ),
        (
            b"*9223372036854775807\r\n:1\r\n",
            ProtocolErrorKind::LimitExceeded,
            "aggregate length of at most 4294967295",
        ),
        (
            b"%4611686018427387904\r\n+k\r\n",
            ProtocolErrorKind::LimitExceeded,
            "aggregate length",
        ),
    ];
    for (reply, kind, needle) in cases {
        let (err, mut conn) = hostile_reply(reply);
        assert_eq!(protocol_kind(&err), Some(*kind), "{:?}: {}", reply, err);
        assert!(err.to_string().contains(needle), "{:?}: {}", reply, err);
        assert!(err.breaks_connection());
        assert_refuses(&mut conn);
    }
}

#[test]
fn a_huge_announced_array_allocates_nothing_ahead() {
    // 2^31 elements announced, three sent, then the peer goes away.
    let peer = FakePeer::start(vec![
        Read(1),
        Send(b"*2147483648\r\n:1\r\n:2\r\n:3\r\n".to_vec()),
        Sleep(Duration::from_millis(100)),
        Close,
    ]);
    let mut conn = connect(&peer.with_read_timeout(2000));
    alloc::reset_peak();
    let before = alloc::live();
    let err = conn.query::<Value>(["LRANGE", "k", "0", "-1"]).unwrap_err();
    assert!(err.is_io(), "{:?}", err);
    // Nothing beyond the read buffer's first allocation (64 KiB) and a few
    // small things (three elements, the error) was ever held.
    let held = alloc::peak() - before;
    assert!(held <= 64 * 1024 + 8 * 1024, "{} bytes at the peak", held);
    assert_refuses(&mut conn);
}

#[test]
fn nesting_100_000_deep_is_refused_at_the_depth_limit() {
    let reply = b"*1\r\n".repeat(100_000);
    let (err, mut conn) = hostile_reply(&reply);
    assert_eq!(protocol_kind(&err), Some(ProtocolErrorKind::LimitExceeded));
    assert!(
        err.to_string().contains("nesting depth of at most 1024"),
        "{}",
        err
    );
    assert_refuses(&mut conn);
}

#[test]
fn a_simple_string_line_that_never_ends_is_refused_at_the_line_limit() {
    // A peer offering a 1 GiB line: the client gives up after 1 MiB.
    let peer = FakePeer::start(vec![
        Read(1),
        Flood {
            prefix: b"+".to_vec(),
            piece: vec![b'x'; 64 * 1024],
            total: 1 << 30,
        },
    ]);
    let mut conn = connect(&peer.with_read_timeout(5000));
    alloc::reset_peak();
    let before = alloc::live();
    let err = conn.query::<Value>(["PING"]).unwrap_err();
    assert_eq!(
        protocol_kind(&err),
        Some(ProtocolErrorKind::LimitExceeded),
        "{}",
        err
    );
    assert!(
        err.to_string()
            .contains("a line of at most 1048576 bytes ending in CRLF"),
        "{}",
        err
    );
    // Memory: the line is held only up to the limit (plus one read), in a
    // buffer that doubles: at most 4 MiB at the peak.
    let held = alloc::peak() - before;
    assert!(held <= 4 << 20, "{} bytes at the peak", held);
    assert_refuses(&mut conn);
    drop(conn);
    let log = peer.finish();
    assert!(log.write_failed, "the peer sent its whole gigabyte");
}

#[test]
fn deep_chains_of_every_aggregate_type_are_refused() {
    for link in [
        &b"~1\r\n"[..],
        b"%1\r\n+k\r\n",
        b"|1\r\n+k\r\n:1\r\n",
        b">1\r\n",
    ] {
        let mut reply = link.repeat(100_000);
        reply.extend_from_slice(b":1\r\n");
        let (err, mut conn) = hostile_reply(&reply);
        assert_eq!(
            protocol_kind(&err),
            Some(ProtocolErrorKind::LimitExceeded),
            "{:?}: {}",
            String::from_utf8_lossy(link),
            err
        );
        assert_refuses(&mut conn);
    }
}

#[test]
fn a_server_error_then_close_is_surfaced_then_the_close_breaks() {
    let peer = FakePeer::start(vec![
        Read(1),
        Send(b"-ERR Protocol error: invalid bulk length\r\n".to_vec()),
        Close,
    ]);
    let mut conn = connect(&peer.with_read_timeout(2000));
    let err = conn.query::<()>(("SET", "k", "v")).unwrap_err();
    let server = err.server_error().expect("the server's error");
    assert_eq!(server.code(), "ERR");
    assert!(server.message().contains("invalid bulk length"));
    // A whole reply arrived, so that call left the stream in step...
    assert!(!conn.is_broken());
    thread::sleep(Duration::from_millis(100));
    // ...and the close is found before the next request is written.
    let err = conn.query::<Value>(["PING"]).unwrap_err();
    assert!(err.is_io(), "{:?}", err);
    assert_refuses(&mut conn);
    drop(conn);
    assert_eq!(peer.finish().commands, 1);
}

#[test]
fn a_write_to_a_closed_peer_fails_cleanly() {
    // The peer answers the first command and closes; the client's next
    // command (1 MiB) cannot be delivered. No SIGPIPE, a clear error.
    let peer = FakePeer::start(vec![Read(1), Send(b"+OK\r\n".to_vec()), Close]);
    let options = peer
        .options()
        .read_timeout(Some(Duration::from_secs(2)))
        .write_timeout(Some(Duration::from_secs(2)));
    let mut conn = connect(&options);
    let _: () = conn.query(("SET", "a", "1")).unwrap();
    thread::sleep(Duration::from_millis(100));
    let big = vec![b'v'; 1 << 20];
    let err = conn.query::<Value>(("SET", "b", &big[..])).unwrap_err();
    assert!(err.is_io(), "{:?}", err);
    assert_refuses(&mut conn);
}

#[test]
fn a_write_that_fails_part_way_breaks_the_connection() {
    // Over an in-memory stream that takes 10 bytes and then fails: the
    // server would glue the next command to the fragment, so the
    // connection must refuse further use.
    struct HalfWrite(usize);
    impl std::io::Read for HalfWrite {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Ok(0)
        }
    }
    impl std::io::Write for HalfWrite {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut conn = Connection::new(HalfWrite(10));
    let err = conn.query::<Value>(("SET", "key", "value")).unwrap_err();
    assert!(err.is_io(), "{:?}", err);
    assert!(conn.is_broken());
    assert!(matches!(
        conn.query::<Value>(["PING"]),
        Err(Error::Broken { .. })
    ));
}

#[test]
fn connecting_to_a_port_with_no_listener_is_refused_at_once() {
    let port = {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let err = Connection::connect(
        &ConnectOptions::tcp("127.0.0.1", port).connect_timeout(Some(Duration::from_secs(5))),
    )
    .unwrap_err();
    assert!(err.is_io(), "{:?}", err);
    assert!(started.elapsed() < NO_HANG);
}

#[test]
fn a_peer_that_never_answers_the_handshake_times_out() {
    // The TCP connection is accepted; nothing answers HELLO. The connect
    // timeout covers the handshake too.
    let peer = FakePeer::start(vec![Stall(Duration::from_secs(3))]);
    let options = peer
        .options()
        .protocol(respline::Protocol::Resp3)
        .connect_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let err = Connection::connect(&options).unwrap_err();
    assert!(err.is_timeout(), "{:?}", err);
    assert!(started.elapsed() < NO_HANG);
}

// --------------------------------------------------- unsolicited replies

#[test]
fn more_replies_than_requests_are_detected_before_the_next_request() {
    let peer = FakePeer::start(vec![
        Read(1),
        Send(b"+PONG\r\n+EXTRA\r\n".to_vec()),
        Stall(Duration::from_secs(2)),
    ]);
    // (With retries on, the GET would go to a fresh connection instead: see
    // the retry tests in tests/server.rs.)
    let mut conn = connect(&peer.with_read_timeout(2000).retry_unsent(false));
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
    thread::sleep(Duration::from_millis(100));
    let err = conn.query::<Value>(["GET", "k"]).unwrap_err();
    assert_eq!(
        protocol_kind(&err),
        Some(ProtocolErrorKind::Unexpected),
        "{:?}",
        err
    );
    assert!(!err.may_have_reached_server(), "{:?}", err);
    assert!(
        err.to_string().contains("unsolicited data \"+EXTRA"),
        "{}",
        err
    );
    assert_refuses(&mut conn);
    drop(conn);
    // The GET was never written: the extra reply could not become its answer.
    assert_eq!(peer.finish().commands, 1);
}

#[test]
fn bytes_before_the_first_request_are_unsolicited() {
    let peer = FakePeer::start(vec![
        Send(b"$5\r\nhello\r\n".to_vec()),
        Stall(Duration::from_secs(2)),
    ]);
    let mut conn = connect(&peer.with_read_timeout(2000).retry_unsent(false));
    thread::sleep(Duration::from_millis(100));
    let err = conn.query::<Value>(["GET", "k"]).unwrap_err();
    assert!(!err.may_have_reached_server(), "{:?}", err);
    assert_eq!(
        protocol_kind(&err),
        Some(ProtocolErrorKind::Unexpected),
        "{}",
        err
    );
    assert_refuses(&mut conn);
    drop(conn);
    assert_eq!(peer.finish().commands, 0);
}

#[test]
fn resp3_pushes_interleaved_with_replies_never_take_their_place() {
    let push = |n: u32| {
        let text = format!("m{}", n);
        format!(
            ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n${}\r\n{}\r\n",
            text.len(),
            text
        )
        .into_bytes()
    };
    let mut first = push(1);
    first.extend_from_slice(b"$3\r\nval\r\n");
    first.extend_from_slice(&push(2));
    let mut second = Vec::new();
    for i in 0..3 {
        second.extend_from_slice(&push(10 + i));
        second.extend_from_slice(format!(":{}\r\n", i).as_bytes());
    }
    second.extend_from_slice(&push(20));
    let peer = FakePeer::start(vec![
        Read(1),
        Send(first),
        Read(3),
        Send(second),
        Read(1),
        Send(b"+PONG\r\n".to_vec()),
        Stall(Duration::from_secs(2)),
    ]);
    let mut conn = connect(&peer.with_read_timeout(2000));
    let v: String = conn.query(["GET", "k"]).unwrap();
    assert_eq!(v, "val");
    thread::sleep(Duration::from_millis(50));
    // The trailing push is not unsolicited: it is queued.
    let mut pipe = Pipeline::new();
    pipe.cmd(["INCR", "a"])
        .cmd(["INCR", "b"])
        .cmd(["INCR", "c"]);
    let replies = pipe.execute(&mut conn).unwrap();
    assert_eq!(
        replies,
        vec![Value::Integer(0), Value::Integer(1), Value::Integer(2)]
    );
    // The push after the last reply is taken in before the next request.
    assert_eq!(conn.pending_pushes(), 5);
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
    let pushes = conn.take_pushes();
    let names: Vec<String> = pushes
        .iter()
        .map(|p| match p {
            Value::Push(items) => {
                String::from_utf8_lossy(items[2].as_bytes().unwrap()).into_owned()
            }
            other => panic!("{:?}", other),
        })
        .collect();
    assert_eq!(names, ["m1", "m2", "m10", "m11", "m12", "m20"]);
    assert!(!conn.is_broken());
}

#[test]
fn a_flood_of_pushes_nobody_takes_is_bounded() {
    let mut flood = b">1\r\n:1\r\n".repeat(respline::resp::Limits::default().max_queued_pushes + 1);
    flood.extend_from_slice(b"+OK\r\n");
    let peer = FakePeer::start(vec![Read(1), Send(flood), Stall(Duration::from_secs(3))]);
    let mut conn = connect(&peer.with_read_timeout(3000));
    let err = conn.query::<Value>(["PING"]).unwrap_err();
    assert_eq!(
        protocol_kind(&err),
        Some(ProtocolErrorKind::LimitExceeded),
        "{}",
        err
    );
    assert!(err.to_string().contains("take_pushes"), "{}", err);
    assert_refuses(&mut conn);
}

#[test]
fn a_subscriber_flooded_before_its_confirmation_is_bounded() {
    // 100,001 messages on another channel arrive before SUBSCRIBE's
    // confirmation: they are kept for receive(), but not without bound.
    let message = b">3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$1\r\nx\r\n";
    let mut flood = message.repeat(respline::resp::Limits::default().max_queued_pushes + 1);
    flood.extend_from_slice(b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    let peer = FakePeer::start(vec![Read(1), Send(flood), Stall(Duration::from_secs(3))]);
    let conn = connect(&peer.with_read_timeout(3000));
    let mut sub = respline::Subscriber::new(conn);
    let err = sub.subscribe(&["ch"]).unwrap_err();
    assert_eq!(
        protocol_kind(&err),
        Some(ProtocolErrorKind::LimitExceeded),
        "{}",
        err
    );
}

#[test]
fn a_server_without_hello_falls_back_to_resp2_with_the_whole_recipe() {
    // Redis 5 and older answer HELLO with an unknown-command error.
    let peer = FakePeer::start(vec![
        Read(1),
        Send(b"-ERR unknown command 'HELLO'\r\n".to_vec()),
        Read(3),
        Send(b"+OK\r\n+OK\r\n+OK\r\n".to_vec()),
        Read(1),
        Send(b"$5\r\nvalue\r\n".to_vec()),
        Stall(Duration::from_secs(2)),
    ]);
    let options = peer
        .with_read_timeout(2000)
        .protocol(respline::Protocol::Resp3)
        .auth(Some("app"), "s3cret")
        .client_name("worker")
        .db(2);
    let mut conn = connect(&options);
    assert_eq!(conn.protocol(), respline::Protocol::Resp2);
    let v: String = conn.query(("GET", "k")).unwrap();
    assert_eq!(v, "value");
    drop(conn);
    let log = peer.finish();
    let mut sent = Vec::new();
    respline::cmd("HELLO")
        .arg(3)
        .arg("AUTH")
        .arg("app")
        .arg("s3cret")
        .arg("SETNAME")
        .arg("worker")
        .write_command(&mut sent);
    for c in [
        respline::cmd("AUTH").arg("app").arg("s3cret"),
        respline::cmd("CLIENT").arg("SETNAME").arg("worker"),
        respline::cmd("SELECT").arg(2),
        respline::cmd("GET").arg("k"),
    ] {
        c.write_command(&mut sent);
    }
    assert_eq!(
        String::from_utf8_lossy(&log.read),
        String::from_utf8_lossy(&sent)
    );
}

// ------------------------------------------------ panics in caller code

/// A conversion that panics.
#[derive(Debug)]
struct Explodes;

impl FromValue for Explodes {
    fn from_value(_: Value) -> respline::Result<Explodes> {
        panic!("the caller's conversion panicked");
    }
}

#[test]
fn a_panic_in_a_chunk_callback_leaves_the_connection_broken() {
    let server = RedisServer::start();
    let mut conn = Connection::open(&server.url()).unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        conn.execute_chunked(
            (0..5000).map(|i| ("SET", format!("k{}", i), i)),
            &Chunking::default().max_commands(100),
            |i, _| {
                if i == 1234 {
                    panic!("callback panicked mid-load");
                }
            },
        )
    }));
    assert!(caught.is_err());
    // Replies of the load are still owed: the connection must not be reused.
    assert_refuses(&mut conn);
    conn.reconnect().unwrap();
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_panic_in_a_conversion_after_the_last_read_leaves_it_in_step() {
    // Conversions run as each reply is read; when one panics, the replies
    // after it are read and dropped before the panic goes on, so the stream
    // is in step: the connection stays usable, and answers correctly.
    let server = RedisServer::start();
    let mut conn = Connection::open(&server.url()).unwrap();
    let _: () = conn.query(["SET", "k", "v"]).unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let mut pipe = Pipeline::new();
        pipe.cmd(["GET", "k"]).cmd(["PING"]);
        pipe.query::<(Explodes, String)>(&mut conn)
    }));
    assert!(caught.is_err());
    assert!(!conn.is_broken());
    let v: String = conn.query(["GET", "k"]).unwrap();
    assert_eq!(v, "v");
}

// ------------------------------------------------ a real server, killed

/// 10,000 ECHOs whose payloads name their index.
fn echo_load() -> (Pipeline, Vec<Vec<u8>>) {
    let mut pipe = Pipeline::new();
    let mut expected = Vec::new();
    for i in 0..10_000 {
        let mut payload = format!("echo-{:05}-", i).into_bytes();
        payload.resize(512, b'.');
        pipe.cmd(("ECHO", &payload[..]));
        expected.push(payload);
    }
    (pipe, expected)
}

/// The pipeline either gave exactly the right replies or failed clearly.
fn check_outcome(result: respline::Result<Vec<Value>>, expected: &[Vec<u8>]) -> String {
    match result {
        Ok(replies) => {
            assert_eq!(replies.len(), expected.len());
            for (got, want) in replies.iter().zip(expected) {
                assert_eq!(got.as_bytes(), Some(&want[..]));
            }
            "complete".into()
        }
        Err(e) => {
            assert!(e.breaks_connection(), "{:?}", e);
            assert!(e.is_io(), "{:?}", e);
            match e.replies_received() {
                Some(n) => {
                    assert!(n < expected.len());
                    format!("interrupted after {}", n)
                }
                None => format!("failed: {}", e),
            }
        }
    }
}

#[test]
fn client_kill_at_many_points_of_a_10k_pipeline() {
    let server = RedisServer::start();
    let (pipe, expected) = echo_load();
    let mut admin = Connection::open(&server.url()).unwrap();
    let mut outcomes = Vec::new();
    for delay_us in (0..16).map(|i| i * 1000) {
        let mut conn = Connection::open(&server.url()).unwrap();
        let id: i64 = conn.query(["CLIENT", "ID"]).unwrap();
        let (go_tx, go_rx) = mpsc::channel();
        let killer = thread::spawn(move || {
            go_rx.recv().unwrap();
            thread::sleep(Duration::from_micros(delay_us));
            admin
                .query::<i64>(("CLIENT", "KILL", "ID", id))
                .expect("CLIENT KILL");
            admin
        });
        go_tx.send(()).unwrap();
        let result = pipe.execute(&mut conn);
        admin = killer.join().unwrap();
        let outcome = check_outcome(result, &expected);
        // Killed or not, the next call never sees a stale reply: either the
        // connection refuses, or (complete, killed afterwards) the death is
        // found before writing and the PING goes to a fresh connection (or,
        // if the kill lands between that check and the write, it is an I/O
        // error).
        if conn.is_broken() {
            assert_refuses(&mut conn);
        } else {
            match conn.query::<String>(["PING"]) {
                Ok(pong) => {
                    assert_eq!(pong, "PONG");
                    let now: i64 = conn.query(["CLIENT", "ID"]).unwrap();
                    assert_ne!(now, id, "the killed connection answered");
                }
                Err(err) => assert!(
                    err.is_io() || matches!(err, Error::Protocol(_)),
                    "{:?}",
                    err
                ),
            }
        }
        conn.reconnect().unwrap();
        let v: String = conn.query(("ECHO", "after")).unwrap();
        assert_eq!(v, "after");
        eprintln!("CLIENT KILL after {} us: {}", delay_us, outcome);
        outcomes.push(outcome);
    }
    assert!(
        outcomes.iter().any(|o| o != "complete"),
        "no kill landed mid-pipeline: {:?}",
        outcomes
    );
}

#[test]
fn server_killed_and_restarted_at_many_points_of_a_10k_pipeline() {
    let mut server = RedisServer::start();
    let (pipe, expected) = echo_load();
    let mut outcomes = Vec::new();
    for delay_us in [0u64, 2000, 4000, 6000, 8000, 10000, 15000, 30000] {
        let mut conn = Connection::open(&server.url()).unwrap();
        let (go_tx, go_rx) = mpsc::channel();
        let result = thread::scope(|s| {
            let server = &mut server;
            let killer = s.spawn(move || {
                go_rx.recv().unwrap();
                thread::sleep(Duration::from_micros(delay_us));
                server.kill();
            });
            go_tx.send(()).unwrap();
            let result = pipe.execute(&mut conn);
            killer.join().unwrap();
            result
        });
        let outcome = check_outcome(result, &expected);
        let err = conn.query::<String>(["PING"]).unwrap_err();
        assert!(
            err.is_io() || matches!(err, Error::Broken { .. }),
            "{:?}",
            err
        );
        assert!(conn.reconnect().is_err(), "reconnected to a dead server");
        server.restart();
        conn.reconnect().unwrap();
        let v: String = conn.query(("ECHO", "after restart")).unwrap();
        assert_eq!(v, "after restart");
        eprintln!("server killed after {} us: {}", delay_us, outcome);
        outcomes.push(outcome);
    }
    assert!(
        outcomes.iter().any(|o| o != "complete"),
        "no kill landed mid-pipeline: {:?}",
        outcomes
    );
}

#[test]
fn a_chunked_load_answered_with_more_replies_than_commands_breaks_the_connection() {
    // The peer reads nothing, so the client's large write blocks; while it
    // waits, it reads the replies already there, and the peer sends two
    // for the load's one command.
    let peer = FakePeer::start(vec![
        Sleep(Duration::from_millis(300)),
        Send(b"+OK\r\n+EXTRA\r\n".to_vec()),
        Sleep(Duration::from_millis(500)),
        Stall(Duration::from_millis(500)),
    ]);
    let mut conn = connect(&peer.with_read_timeout(5000).retry_unsent(false));
    // Too big for the socket buffers, so the write cannot finish unread.
    let value = vec![b'x'; 64 << 20];
    let mut replies = Vec::new();
    let err = conn
        .execute_chunked(
            std::iter::once(("SET", "k", &value[..])),
            &Chunking::default(),
            |i, v| replies.push((i, v)),
        )
        .unwrap_err();
    assert_eq!(
        protocol_kind(&err),
        Some(ProtocolErrorKind::Unexpected),
        "{:?}",
        err
    );
    assert!(err.to_string().contains("unsolicited data"), "{}", err);
    // No reply was handed over as the command's: which one answers it
    // cannot be known.
    assert!(replies.is_empty(), "{:?}", replies);
    assert_refuses(&mut conn);
}
