//! Connection and Pipeline over in-memory fakes: no server, every byte canned.
//!
//! The fake counts `write` calls and keeps a read cursor over its canned
//! replies, so the tests can check that a pipeline costs one write, that
//! exactly the owed replies are read, and that a broken connection never
//! touches the stream again.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use respline::resp::ProtocolErrorKind;
use respline::{cmd, Connection, Error, Pipeline, ServerError, SocketHooks, Value};

/// What the fake holds; shared between the test and the connection.
#[derive(Default)]
struct Wire {
    /// Canned replies and how far the connection has read them.
    input: Vec<u8>,
    pos: usize,
    /// The most bytes one `read` returns (0: no limit).
    read_chunk: usize,
    /// Every `write` call, and everything written.
    writes: usize,
    written: Vec<u8>,
    /// Set through the hooks; at the end of input a non-blocking read gives
    /// `WouldBlock` (a live, quiet socket), a blocking one gives EOF.
    nonblocking: bool,
    /// Replies that become readable only once the next request is written,
    /// as a server's would.
    staged: Vec<u8>,
    /// Replies for the writes after that one, one entry per write.
    later: std::collections::VecDeque<Vec<u8>>,
}

/// A `Read + Write` fake. Clones share one `Wire`, so the test keeps a
/// handle while the connection owns the stream.
#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Wire>>);

impl Fake {
    fn new(input: &[u8]) -> Fake {
        let fake = Fake::default();
        fake.feed(input);
        fake
    }

    /// A fake whose reads return one byte at a time.
    fn one_byte(input: &[u8]) -> Fake {
        let fake = Fake::new(input);
        fake.0.borrow_mut().read_chunk = 1;
        fake
    }

    /// Appends more canned bytes.
    fn feed(&self, more: &[u8]) {
        self.0.borrow_mut().input.extend_from_slice(more);
    }

    /// Bytes that become readable when the next request is written.
    fn stage(&self, replies: &[u8]) {
        self.0.borrow_mut().staged.extend_from_slice(replies);
    }

    /// Replies for the write after the one that releases what is staged.
    fn stage_later(&self, replies: &[u8]) {
        self.0.borrow_mut().later.push_back(replies.to_vec());
    }

    /// A fake with nothing to read until the first write, which releases
    /// `replies`; its reads return one byte at a time.
    fn answering_one_byte(replies: &[u8]) -> Fake {
        let fake = Fake::one_byte(b"");
        fake.0.borrow_mut().staged = replies.to_vec();
        fake
    }

    fn writes(&self) -> usize {
        self.0.borrow().writes
    }

    fn written(&self) -> Vec<u8> {
        self.0.borrow().written.clone()
    }

    /// Canned bytes the connection has not read yet.
    fn unread(&self) -> usize {
        let w = self.0.borrow();
        w.input.len() - w.pos
    }

    fn hooks() -> SocketHooks<Fake> {
        SocketHooks {
            set_read_timeout: |_, _| Ok(()),
            set_write_timeout: |_, _| Ok(()),
            set_nonblocking: |s, on| {
                s.0.borrow_mut().nonblocking = on;
                Ok(())
            },
        }
    }
}

impl Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        let left = w.input.len() - w.pos;
        if left == 0 {
            if w.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return Ok(0);
        }
        let mut n = left.min(buf.len());
        if w.read_chunk > 0 {
            n = n.min(w.read_chunk);
        }
        let start = w.pos;
        buf[..n].copy_from_slice(&w.input[start..start + n]);
        w.pos += n;
        Ok(n)
    }
}

impl Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        w.writes += 1;
        w.written.extend_from_slice(buf);
        let staged = std::mem::take(&mut w.staged);
        w.input.extend_from_slice(&staged);
        if let Some(next) = w.later.pop_front() {
            w.staged = next;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// `:1\r\n:2\r\n ... :n\r\n`: distinct replies, so order is checked too.
fn counting_replies(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.extend_from_slice(format!(":{}\r\n", i).as_bytes());
    }
    out
}

fn incr_pipeline(n: usize, transaction: bool) -> Pipeline {
    let mut pipe = if transaction {
        Pipeline::transaction()
    } else {
        Pipeline::new()
    };
    for _ in 0..n {
        pipe.cmd(["INCR", "counter"]);
    }
    pipe
}

fn assert_counting(replies: &[Value], n: usize) {
    assert_eq!(replies.len(), n);
    for (i, v) in replies.iter().enumerate() {
        assert_eq!(v, &Value::Integer(i as i64 + 1), "reply #{}", i);
    }
}

/// The connection answers a follow-up PING with its own reply, in one more
/// write.
fn assert_usable(conn: &mut Connection<Fake>, fake: &Fake) {
    assert!(!conn.is_broken());
    let writes = fake.writes();
    fake.stage(b"+PONG\r\n");
    let pong: String = conn.query(["PING"]).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(fake.writes(), writes + 1);
    assert_eq!(fake.unread(), 0);
}

fn assert_broken_without_writing(conn: &mut Connection<Fake>, fake: &Fake) {
    assert!(conn.is_broken());
    let writes = fake.writes();
    let written = fake.written().len();
    match conn.query::<Value>(["PING"]) {
        Err(Error::Broken { .. }) => {}
        other => panic!("expected Error::Broken, got {:?}", other),
    }
    match incr_pipeline(3, false).execute(conn) {
        Err(Error::Broken { .. }) => {}
        other => panic!("expected Error::Broken, got {:?}", other),
    }
    assert_eq!(fake.writes(), writes, "a broken connection wrote");
    assert_eq!(fake.written().len(), written);
}

#[test]
fn pipeline_is_one_write_then_exactly_n_replies() {
    for n in [1, 1_000, 100_000] {
        let fake = Fake::new(&counting_replies(n));
        let mut conn = Connection::new(fake.clone());
        let pipe = incr_pipeline(n, false);
        assert_eq!(pipe.len(), n);
        let replies = pipe.execute(&mut conn).unwrap();
        assert_eq!(fake.writes(), 1, "n = {}", n);
        assert_eq!(fake.written(), pipe.as_bytes());
        assert_counting(&replies, n);
        assert_eq!(fake.unread(), 0, "n = {}", n);
        assert_usable(&mut conn, &fake);
    }
}

#[test]
fn transaction_is_one_write_then_exactly_n_plus_2_replies() {
    for n in [1, 1_000, 100_000] {
        let mut canned = b"+OK\r\n".to_vec();
        for _ in 0..n {
            canned.extend_from_slice(b"+QUEUED\r\n");
        }
        canned.extend_from_slice(format!("*{}\r\n", n).as_bytes());
        canned.extend_from_slice(&counting_replies(n));
        let fake = Fake::new(&canned);
        let mut conn = Connection::new(fake.clone());
        let pipe = incr_pipeline(n, true);
        assert!(pipe.is_transaction());
        let replies = pipe.execute(&mut conn).unwrap();
        assert_eq!(fake.writes(), 1, "n = {}", n);
        let mut expected = MULTI.to_vec();
        expected.extend_from_slice(pipe.as_bytes());
        expected.extend_from_slice(EXEC);
        assert_eq!(fake.written(), expected);
        assert_counting(&replies, n);
        assert_eq!(fake.unread(), 0, "n = {}", n);
        assert_usable(&mut conn, &fake);
    }
}

#[test]
fn bytes_after_the_last_reply_are_not_taken_as_replies() {
    // Everything arrives in one read: the extra reply sits in the buffer.
    let mut canned = counting_replies(3);
    canned.extend_from_slice(b":99\r\n");
    let fake = Fake::new(&canned);
    let mut conn = Connection::new(fake.clone());
    let replies = incr_pipeline(3, false).execute(&mut conn).unwrap();
    assert_counting(&replies, 3);
    assert_eq!(fake.writes(), 1);
    // The next request finds the stray reply and refuses to run, without
    // writing: `:99` is never handed to it.
    match conn.query::<Value>(["PING"]) {
        Err(Error::NotSent { source }) => match *source {
            Error::Protocol(e) => {
                assert_eq!(e.kind(), ProtocolErrorKind::Unexpected);
                assert!(e.found().contains("99"), "{}", e);
            }
            other => panic!("expected a protocol error inside, got {:?}", other),
        },
        other => panic!(
            "expected an unsolicited-data protocol error, got {:?}",
            other
        ),
    }
    assert_eq!(fake.writes(), 1);
    assert_broken_without_writing(&mut conn, &fake);
}

#[test]
fn bytes_left_in_the_socket_are_found_before_the_next_request() {
    // One byte per read: after the third reply the stray bytes are still in
    // the stream, and only the hooks' non-blocking read can see them.
    let mut canned = counting_replies(3);
    canned.extend_from_slice(b"$5\r\nstray\r\n");
    let fake = Fake::answering_one_byte(&canned);
    let mut conn = Connection::with_hooks(fake.clone(), Fake::hooks());
    let replies = incr_pipeline(3, false).execute(&mut conn).unwrap();
    assert_counting(&replies, 3);
    assert_eq!(fake.unread(), b"$5\r\nstray\r\n".len());
    match conn.query::<Value>(["PING"]) {
        Err(Error::NotSent { source }) => match *source {
            Error::Protocol(e) => assert_eq!(e.kind(), ProtocolErrorKind::Unexpected),
            other => panic!("expected a protocol error inside, got {:?}", other),
        },
        other => panic!(
            "expected an unsolicited-data protocol error, got {:?}",
            other
        ),
    }
    assert_eq!(fake.writes(), 1);
    assert_broken_without_writing(&mut conn, &fake);
}

#[test]
fn a_push_between_requests_is_queued_not_unsolicited() {
    let mut canned = counting_replies(2);
    canned.extend_from_slice(b">2\r\n$7\r\nmessage\r\n$2\r\nhi\r\n");
    let fake = Fake::answering_one_byte(&canned);
    let mut conn = Connection::with_hooks(fake.clone(), Fake::hooks());
    let replies = incr_pipeline(2, false).execute(&mut conn).unwrap();
    assert_counting(&replies, 2);
    assert_usable(&mut conn, &fake);
    assert_eq!(
        conn.take_pushes(),
        vec![Value::Push(vec![
            Value::BulkString(b"message".to_vec()),
            Value::BulkString(b"hi".to_vec()),
        ])]
    );
}

/// Three commands whose middle one fails.
fn failing_middle() -> (Pipeline, &'static [u8]) {
    let mut pipe = Pipeline::new();
    pipe.cmd(["INCR", "n"])
        .cmd(["INCR", "s"])
        .cmd(cmd("GET").arg("s"));
    (
        pipe,
        b":1\r\n-ERR value is not an integer or out of range\r\n$5\r\nhello\r\n",
    )
}

#[test]
fn an_error_reply_in_the_middle_is_that_commands_reply() {
    let (pipe, canned) = failing_middle();
    // `execute` reads every reply, then fails with the first error reply,
    // naming its command.
    let fake = Fake::new(canned);
    let mut conn = Connection::new(fake.clone());
    let err = pipe.execute(&mut conn).unwrap_err();
    let e = err.server_error().expect("a server error");
    assert_eq!((e.index, e.code()), (Some(1), "ERR"));
    assert_eq!(fake.unread(), 0);
    assert_usable(&mut conn, &fake);
    // `execute_raw` returns the error reply at its command's index.
    let fake = Fake::new(canned);
    let mut conn = Connection::new(fake.clone());
    let replies = pipe.execute_raw(&mut conn).unwrap();
    assert_eq!(
        replies,
        vec![
            Value::Integer(1),
            Value::Error("ERR value is not an integer or out of range".into()),
            Value::BulkString(b"hello".to_vec()),
        ]
    );
    assert_eq!(fake.unread(), 0);
    assert_usable(&mut conn, &fake);
}

#[test]
fn results_give_the_failing_command_its_index() {
    let (pipe, canned) = failing_middle();
    let fake = Fake::new(canned);
    let mut conn = Connection::new(fake.clone());
    let results: Vec<Result<Value, ServerError>> = pipe.query(&mut conn).unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], Ok(Value::Integer(1)));
    let err = results[1].clone().unwrap_err();
    assert_eq!(err.index, Some(1));
    assert_eq!(err.code(), "ERR");
    assert_eq!(err.message(), "value is not an integer or out of range");
    assert_eq!(results[2], Ok(Value::BulkString(b"hello".to_vec())));
    assert_usable(&mut conn, &fake);
}

#[test]
fn query_reports_the_failing_command_as_a_server_error() {
    let (pipe, canned) = failing_middle();
    let fake = Fake::new(canned);
    let mut conn = Connection::new(fake.clone());
    match pipe.query::<(i64, i64, String)>(&mut conn) {
        Err(Error::Server(e)) => {
            assert_eq!(e.index, Some(1));
            assert_eq!(e.code(), "ERR");
        }
        other => panic!("expected Error::Server, got {:?}", other),
    }
    assert_eq!(fake.unread(), 0);
    assert_usable(&mut conn, &fake);

    // A single command's error reply is an Error::Server without an index,
    // and leaves the connection usable too.
    fake.stage(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    match conn.query::<i64>(["INCR", "list"]) {
        Err(Error::Server(e)) => {
            assert_eq!(e.code(), "WRONGTYPE");
            assert_eq!(e.index, None);
        }
        other => panic!("expected Error::Server, got {:?}", other),
    }
    assert_usable(&mut conn, &fake);
}

/// Replies of every RESP2 and RESP3 type, and what they decode to.
fn every_type() -> (Vec<u8>, Vec<Value>) {
    let wire = b"+OK\r\n-ERR no\r\n:-42\r\n$6\r\na\r\nb\x00c\r\n$-1\r\n*-1\r\n*0\r\n\
*2\r\n:1\r\n*1\r\n$1\r\nx\r\n_\r\n,1.5\r\n#t\r\n(12345678901234567890\r\n\
!9\r\nERR bl\r\nb\r\n=7\r\ntxt:abc\r\n%1\r\n+k\r\n:1\r\n~2\r\n:1\r\n:2\r\n\
|1\r\n+ttl\r\n:3\r\n:7\r\n"
        .to_vec();
    let values = vec![
        Value::SimpleString("OK".into()),
        Value::Error("ERR no".into()),
        Value::Integer(-42),
        Value::BulkString(b"a\r\nb\x00c".to_vec()),
        Value::Nil,
        Value::Nil,
        Value::Array(vec![]),
        Value::Array(vec![
            Value::Integer(1),
            Value::Array(vec![Value::BulkString(b"x".to_vec())]),
        ]),
        Value::Nil,
        Value::Double(1.5),
        Value::Boolean(true),
        Value::BigNumber("12345678901234567890".into()),
        Value::BlobError(b"ERR bl\r\nb".to_vec()),
        Value::Verbatim {
            format: *b"txt",
            text: b"abc".to_vec(),
        },
        Value::Map(vec![(Value::SimpleString("k".into()), Value::Integer(1))]),
        Value::Set(vec![Value::Integer(1), Value::Integer(2)]),
        Value::Attribute {
            attributes: vec![(Value::SimpleString("ttl".into()), Value::Integer(3))],
            value: Box::new(Value::Integer(7)),
        },
    ];
    (wire, values)
}

#[test]
fn replies_split_one_byte_per_read_decode_the_same() {
    let (wire, expected) = every_type();
    let mut pipe = Pipeline::new();
    for i in 0..expected.len() {
        pipe.cmd(["ECHO", &i.to_string()]);
    }
    for fake in [Fake::new(&wire), Fake::one_byte(&wire)] {
        let mut conn = Connection::new(fake.clone());
        assert_eq!(pipe.execute_raw(&mut conn).unwrap(), expected);
        assert_eq!(fake.writes(), 1);
        assert_eq!(fake.unread(), 0);
        assert_usable(&mut conn, &fake);
    }
    // A big pipeline a byte at a time.
    let fake = Fake::one_byte(&counting_replies(10_000));
    let mut conn = Connection::new(fake.clone());
    assert_counting(
        &incr_pipeline(10_000, false).execute(&mut conn).unwrap(),
        10_000,
    );
    assert_eq!(fake.unread(), 0);
    // A single large bulk string a byte at a time.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut canned = format!("${}\r\n", payload.len()).into_bytes();
    canned.extend_from_slice(&payload);
    canned.extend_from_slice(b"\r\n");
    let fake = Fake::one_byte(&canned);
    let mut conn = Connection::new(fake.clone());
    let got: Vec<u8> = conn.query(["GET", "big"]).unwrap();
    assert_eq!(got, payload);
    assert_usable(&mut conn, &fake);
}

fn assert_unexpected_eof(e: &Error) {
    match e {
        Error::Io(io) => assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof, "{}", io),
        other => panic!("expected an UnexpectedEof I/O error, got {:?}", other),
    }
}

#[test]
fn eof_in_the_middle_of_a_reply_breaks_the_connection() {
    for fake in [Fake::new(b"$10\r\nabc"), Fake::one_byte(b"$10\r\nabc")] {
        let mut conn = Connection::new(fake.clone());
        let err = conn.query::<Value>(["GET", "k"]).unwrap_err();
        assert_unexpected_eof(&err);
        assert!(err.is_io());
        assert!(err.breaks_connection());
        assert_eq!(fake.writes(), 1);
        assert_broken_without_writing(&mut conn, &fake);
    }
    // Nothing at all before EOF, and EOF inside a nested aggregate.
    for canned in [&b""[..], b"*2\r\n:1\r\n*3\r\n:1\r\n"] {
        let fake = Fake::new(canned);
        let mut conn = Connection::new(fake.clone());
        assert_unexpected_eof(&conn.query::<Value>(["GET", "k"]).unwrap_err());
        assert_broken_without_writing(&mut conn, &fake);
    }
}

#[test]
fn eof_in_a_pipeline_is_interrupted_with_the_replies_received() {
    for (canned, received) in [
        (&b":1\r\n:2\r\n:3"[..], 2),
        (b":1\r\n:2\r\n", 2),
        (b"", 0),
        (b":1\r\n:2\r\n:3\r\n:4\r\n$3\r\nab", 4),
    ] {
        let fake = Fake::one_byte(canned);
        let mut conn = Connection::new(fake.clone());
        match incr_pipeline(5, false).execute(&mut conn) {
            Err(e @ Error::Interrupted { .. }) => {
                assert_eq!(e.replies_received(), Some(received), "{}", e);
                assert!(e.is_io(), "{}", e);
                match e {
                    Error::Interrupted {
                        replies,
                        requested,
                        source,
                    } => {
                        assert_eq!((replies, requested), (received, 5));
                        assert_unexpected_eof(&source);
                    }
                    _ => unreachable!(),
                }
            }
            other => panic!("expected Error::Interrupted, got {:?}", other),
        }
        assert_eq!(fake.writes(), 1);
        assert_broken_without_writing(&mut conn, &fake);
    }
    // A transaction is interrupted the same way (it owes N + 2 replies).
    let fake = Fake::new(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n");
    let mut conn = Connection::new(fake.clone());
    match incr_pipeline(2, true).execute(&mut conn) {
        Err(Error::Interrupted {
            replies, requested, ..
        }) => assert_eq!((replies, requested), (3, 4)),
        other => panic!("expected Error::Interrupted, got {:?}", other),
    }
    assert_broken_without_writing(&mut conn, &fake);
}

#[test]
fn malformed_reply_is_a_protocol_error_that_breaks() {
    let fake = Fake::new(b":1\r\n@bogus\r\n:3\r\n");
    let mut conn = Connection::new(fake.clone());
    match incr_pipeline(3, false).execute(&mut conn) {
        Err(Error::Interrupted {
            replies, source, ..
        }) => {
            assert_eq!(replies, 1);
            match *source {
                Error::Protocol(e) => assert_eq!(e.kind(), ProtocolErrorKind::Malformed),
                other => panic!("expected a protocol error, got {:?}", other),
            }
        }
        other => panic!("expected Error::Interrupted, got {:?}", other),
    }
    assert_broken_without_writing(&mut conn, &fake);
}

#[test]
fn clear_keeps_the_buffer() {
    let mut pipe = Pipeline::with_capacity(1 << 20);
    for _ in 0..1_000 {
        pipe.cmd(["SET", "key", "value"]);
    }
    let first = pipe.as_bytes().to_vec();
    let ptr = pipe.as_bytes().as_ptr();
    pipe.clear();
    assert!(pipe.is_empty());
    assert_eq!(pipe.len(), 0);
    assert!(pipe.as_bytes().is_empty());
    // Were the buffer freed by clear(), this allocation of the same size
    // would likely take its place, and refilling would move the pipeline's
    // bytes elsewhere.
    let decoy: Vec<u8> = Vec::with_capacity(1 << 20);
    for _ in 0..1_000 {
        pipe.cmd(["SET", "key", "value"]);
    }
    assert_eq!(pipe.as_bytes(), &first[..]);
    assert_eq!(pipe.as_bytes().as_ptr(), ptr, "clear() gave the buffer up");
    drop(decoy);

    // A cleared, refilled pipeline sends only its new commands.
    pipe.clear();
    pipe.cmd(["INCR", "a"]).cmd(["INCR", "b"]);
    let fake = Fake::new(b":1\r\n:2\r\n");
    let mut conn = Connection::new(fake.clone());
    assert_eq!(
        pipe.execute(&mut conn).unwrap(),
        vec![Value::Integer(1), Value::Integer(2)]
    );
    assert_eq!(
        fake.written(),
        b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n*2\r\n$4\r\nINCR\r\n$1\r\nb\r\n"
    );
}

#[test]
fn an_empty_pipeline_reads_nothing() {
    let fake = Fake::new(b"");
    let mut conn = Connection::new(fake.clone());
    assert_eq!(Pipeline::new().execute(&mut conn).unwrap(), vec![]);
    assert!(!conn.is_broken());
}

fn transaction3() -> Pipeline {
    let mut pipe = Pipeline::transaction();
    pipe.cmd(["SET", "a", "1"])
        .cmd(["INCR", "a"])
        .cmd(["GET", "a"]);
    pipe
}

#[test]
fn transaction_commit_gives_execs_replies() {
    let fake = Fake::new(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n");
    let mut conn = Connection::new(fake.clone());
    let (ok, n, s): ((), i64, String) = transaction3().query(&mut conn).unwrap();
    assert_eq!((ok, n, s.as_str()), ((), 2, "2"));
    assert_eq!(fake.writes(), 1);
    assert_eq!(fake.unread(), 0);
    assert_usable(&mut conn, &fake);

    // A command that fails at run time is its reply inside EXEC's.
    let fake = Fake::new(
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n-ERR not an integer\r\n$1\r\nx\r\n",
    );
    let mut conn = Connection::new(fake.clone());
    let results: Vec<Result<Value, ServerError>> = transaction3().query(&mut conn).unwrap();
    assert_eq!(results[0], Ok(Value::SimpleString("OK".into())));
    assert_eq!(results[1].as_ref().unwrap_err().index, Some(1));
    assert_eq!(results[2], Ok(Value::BulkString(b"x".to_vec())));
    assert_usable(&mut conn, &fake);
}

#[test]
fn transaction_execabort_lists_the_queue_errors_by_index() {
    let fake = Fake::new(
        b"+OK\r\n-ERR unknown command 'NOPE'\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n\
-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    let mut conn = Connection::new(fake.clone());
    match transaction3().execute(&mut conn) {
        Err(Error::ExecAbort { errors }) => {
            let got: Vec<(Option<usize>, &str)> =
                errors.iter().map(|e| (e.index, e.code())).collect();
            assert_eq!(got, vec![(Some(0), "ERR"), (Some(2), "ERR")]);
            assert_eq!(errors[0].message(), "unknown command 'NOPE'");
        }
        other => panic!("expected Error::ExecAbort, got {:?}", other),
    }
    assert_eq!(fake.unread(), 0);
    assert_usable(&mut conn, &fake);
}

#[test]
fn transaction_nil_exec_is_watch_aborted() {
    for nil in [&b"*-1\r\n"[..], b"_\r\n"] {
        let mut canned = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n".to_vec();
        canned.extend_from_slice(nil);
        let fake = Fake::new(&canned);
        let mut conn = Connection::new(fake.clone());
        match transaction3().execute(&mut conn) {
            Err(e @ Error::WatchAborted { attempts: 1 }) => assert!(!e.breaks_connection()),
            other => panic!("expected Error::WatchAborted, got {:?}", other),
        }
        assert_eq!(fake.unread(), 0);
        assert_usable(&mut conn, &fake);
    }
}

#[test]
fn transaction_exec_of_the_wrong_length_is_a_protocol_error() {
    let fake = Fake::new(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n");
    let mut conn = Connection::new(fake.clone());
    match transaction3().execute(&mut conn) {
        Err(Error::Protocol(e)) => {
            assert_eq!(e.kind(), ProtocolErrorKind::Unexpected);
            assert!(e.expected().contains("3 replies"), "{}", e);
        }
        other => panic!("expected a protocol error, got {:?}", other),
    }
    // Every owed reply was read, but replies that cannot be matched to their
    // commands leave the connection untrusted, as any protocol error does.
    assert_eq!(fake.unread(), 0);
    assert_broken_without_writing(&mut conn, &fake);
    // Not an array at all is the same failure.
    let fake = Fake::new(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n:3\r\n");
    let mut conn = Connection::new(fake.clone());
    match transaction3().execute(&mut conn) {
        Err(e @ Error::Protocol(_)) => assert!(e.breaks_connection()),
        other => panic!("expected a protocol error, got {:?}", other),
    }
    assert_broken_without_writing(&mut conn, &fake);
}

#[test]
fn transaction_multi_error_is_a_server_error() {
    let fake = Fake::new(
        b"-ERR MULTI calls can not be nested\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n",
    );
    let mut conn = Connection::new(fake.clone());
    match transaction3().execute(&mut conn) {
        Err(Error::Server(e)) => assert_eq!(e.message(), "MULTI calls can not be nested"),
        other => panic!("expected Error::Server, got {:?}", other),
    }
    assert_eq!(fake.unread(), 0);
    assert_usable(&mut conn, &fake);
}

#[test]
fn server_error_index_is_reported_in_display() {
    let e = ServerError::new("ERR boom");
    assert_eq!(e.index, None);
    let (pipe, canned) = failing_middle();
    let mut conn = Connection::new(Fake::new(canned));
    let err = pipe.query::<Vec<Value>>(&mut conn).unwrap_err();
    assert_eq!(
        err.to_string(),
        "server error: command #1: ERR value is not an integer or out of range"
    );
}

/// The same three replies, as a plain pipeline's, inside a transaction's
/// EXEC, and through the WATCH helper: every target type gets the same
/// answer from all three.
fn through_all_three<T: respline::FromValue>(replies: &[u8]) -> Vec<Result<T, String>> {
    let mut outcomes = Vec::new();
    let fake = Fake::new(replies);
    let mut conn = Connection::new(fake.clone());
    outcomes.push(incr_pipeline(3, false).query::<T>(&mut conn));
    assert_usable(&mut conn, &fake);

    let mut exec = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n".to_vec();
    exec.extend_from_slice(replies);
    let fake = Fake::new(&exec);
    let mut conn = Connection::new(fake.clone());
    outcomes.push(incr_pipeline(3, true).query::<T>(&mut conn));
    assert_usable(&mut conn, &fake);

    let fake = Fake::new(b"");
    fake.stage(b"+OK\r\n");
    fake.stage_later(&exec);
    let mut conn = Connection::new(fake.clone());
    outcomes.push(respline::transaction(
        &mut conn,
        &["k"],
        respline::WatchOptions::new(),
        |_, pipe| {
            for i in 0..3 {
                pipe.cmd(("INCR", i));
            }
            Ok(())
        },
    ));
    assert_usable(&mut conn, &fake);
    outcomes
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn one_rule_for_many_replies_in_pipelines_transactions_and_watch() {
    let failing = b":1\r\n-ERR not an integer\r\n$1\r\nx\r\n";
    let expected = "server error: command #1: ERR not an integer";
    // Every target but one that keeps errors fails the same way.
    for outcome in through_all_three::<(i64, i64, String)>(failing) {
        assert_eq!(outcome.unwrap_err(), expected);
    }
    for outcome in through_all_three::<Vec<Value>>(failing) {
        assert_eq!(outcome.unwrap_err(), expected);
    }
    for outcome in through_all_three::<Value>(failing) {
        assert_eq!(outcome.unwrap_err(), expected);
    }
    for outcome in through_all_three::<()>(failing) {
        assert_eq!(outcome.unwrap_err(), expected);
    }
    // A server error wins over an earlier reply that does not fit.
    for outcome in through_all_three::<(bool, i64, String)>(b":7\r\n-ERR no\r\n$1\r\nx\r\n") {
        assert_eq!(outcome.unwrap_err(), "server error: command #1: ERR no");
    }
    // Kept as values, with their index.
    for outcome in through_all_three::<Vec<Result<Value, ServerError>>>(failing) {
        let results = outcome.unwrap();
        assert_eq!(results[0], Ok(Value::Integer(1)));
        let e = results[1].clone().unwrap_err();
        assert_eq!((e.index, e.code()), (Some(1), "ERR"));
    }
    for outcome in through_all_three::<(i64, Result<i64, ServerError>, String)>(failing) {
        let (a, b, c) = outcome.unwrap();
        assert_eq!((a, b.unwrap_err().index, c.as_str()), (1, Some(1), "x"));
    }
    // A reply that does not fit names its command.
    for outcome in through_all_three::<(i64, i64, i64)>(b":1\r\n:2\r\n$1\r\nx\r\n") {
        assert_eq!(
            outcome.unwrap_err(),
            "command #2: cannot convert reply: expected i64, found bulk string \"x\""
        );
    }
    // A tuple of the wrong arity says how many replies there were.
    for outcome in through_all_three::<(i64, i64)>(b":1\r\n:2\r\n:3\r\n") {
        assert_eq!(
            outcome.unwrap_err(),
            "cannot convert reply: expected 2 replies, one per element of the tuple, found 3 replies"
        );
    }
}
