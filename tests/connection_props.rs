//! Property tests through a whole `Connection`, over an in-memory stream that
//! answers each request with scripted bytes: valid replies, RESP3 pushes
//! between them, and sometimes a corruption (a byte changed, inserted or
//! removed, or the answer cut short).
//!
//! Whatever the bytes: no panic; a request whose answer was not corrupted,
//! and which is reached with the stream in step, gets exactly its own
//! replies, in order; after any error the connection is broken and never
//! touches the stream again; memory stays proportional to the bytes fed.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use proptest::prelude::*;
use respline::resp::encode_value;
use respline::{Connection, Error, Pipeline, Protocol, Value};

#[derive(Default)]
struct Wire {
    /// Answers still to release, one per request written.
    answers: Vec<Vec<u8>>,
    /// Bytes released and not yet read.
    readable: Vec<u8>,
    /// The most bytes one read returns.
    chunk: usize,
    writes: usize,
    fed: usize,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Wire>>);

impl Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        // The end of what was released: the peer has nothing more to say.
        let n = w.readable.len().min(buf.len()).min(w.chunk.max(1));
        buf[..n].copy_from_slice(&w.readable[..n]);
        w.readable.drain(..n);
        Ok(n)
    }
}

impl Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        w.writes += 1;
        if !w.answers.is_empty() {
            let answer = w.answers.remove(0);
            w.fed += answer.len();
            w.readable.extend_from_slice(&answer);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn reply() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        "[a-z ]{0,8}".prop_map(|s| Value::SimpleString(s.into())),
        "[A-Z]{1,5} [a-z]{0,6}".prop_map(Value::Error),
        any::<i64>().prop_map(Value::Integer),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Value::BulkString),
        any::<bool>().prop_map(Value::Boolean),
        (-1e6f64..1e6).prop_map(Value::Double),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Set),
            prop::collection::vec((inner.clone(), inner), 0..3).prop_map(Value::Map),
        ]
    })
}

fn push() -> impl Strategy<Value = Value> {
    "[a-z]{1,6}".prop_map(|m| {
        Value::Push(vec![
            Value::BulkString(b"message".to_vec()),
            Value::BulkString(b"ch".to_vec()),
            Value::BulkString(m.into_bytes()),
        ])
    })
}

#[derive(Clone, Debug)]
enum Corruption {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Corruption::Replace(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Corruption::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Corruption::Remove),
        any::<prop::sample::Index>().prop_map(Corruption::Truncate),
    ]
}

fn corrupt(bytes: &mut Vec<u8>, how: &Corruption) {
    if bytes.is_empty() {
        return;
    }
    match how {
        Corruption::Replace(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Corruption::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.insert(i, *b);
        }
        Corruption::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Corruption::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

/// One request: its replies, pushes to put before each reply (and after
/// the last), and maybe a corruption of its answer.
#[derive(Clone, Debug)]
struct Request {
    replies: Vec<Value>,
    pushes: Vec<Option<Value>>,
    corruption: Option<Corruption>,
}

fn request() -> impl Strategy<Value = Request> {
    (1usize..5).prop_flat_map(|n| {
        (
            prop::collection::vec(reply(), n),
            prop::collection::vec(prop::option::weighted(0.2, push()), n + 1),
            prop::option::weighted(0.15, corruption()),
        )
            .prop_map(|(replies, pushes, corruption)| Request {
                replies,
                pushes,
                corruption,
            })
    })
}

fn answer(req: &Request, protocol: Protocol) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in req.replies.iter().enumerate() {
        if let Some(p) = &req.pushes[i] {
            encode_value(&mut out, p, Protocol::Resp3);
        }
        encode_value(&mut out, r, protocol);
    }
    if let Some(p) = &req.pushes[req.replies.len()] {
        encode_value(&mut out, p, Protocol::Resp3);
    }
    if let Some(c) = &req.corruption {
        corrupt(&mut out, c);
    }
    out
}

/// What a RESP2 server's bytes decode to: the RESP2 form of the value.
fn as_received(v: &Value, protocol: Protocol) -> Value {
    let mut bytes = Vec::new();
    encode_value(&mut bytes, v, protocol);
    respline::resp::decode(&bytes, &respline::resp::Limits::default())
        .unwrap()
        .unwrap()
        .0
}

/// The number of cases: `default`, or `PROPTEST_CASES` for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(384), ..ProptestConfig::default() })]

    #[test]
    fn replies_stay_matched_to_their_requests(
        requests in prop::collection::vec(request(), 1..8),
        chunk in 1usize..64,
        resp3 in any::<bool>(),
    ) {
        let protocol = if resp3 { Protocol::Resp3 } else { Protocol::Resp2 };
        let fake = Fake::default();
        {
            let mut w = fake.0.borrow_mut();
            w.chunk = chunk;
            w.answers = requests.iter().map(|r| answer(r, protocol)).collect();
        }
        let mut conn = Connection::new(fake.clone());
        // Once a corrupted answer has been read, later ones may be out of
        // step; the connection must then refuse, or still be in step.
        let mut in_step = true;
        let mut broken_at_writes = None;
        for req in &requests {
            let mut pipe = Pipeline::new();
            for i in 0..req.replies.len() {
                pipe.cmd(("GET", i));
            }
            let result = pipe.execute_raw(&mut conn);
            match result {
                Ok(got) => {
                    prop_assert!(broken_at_writes.is_none(), "a broken connection answered");
                    let want: Vec<Value> =
                        req.replies.iter().map(|v| as_received(v, protocol)).collect();
                    if req.corruption.is_none() && in_step {
                        prop_assert_eq!(&got, &want);
                    }
                    prop_assert_eq!(got.len(), req.replies.len());
                }
                Err(Error::Broken { .. }) => {
                    prop_assert!(broken_at_writes.is_some());
                }
                Err(e) => {
                    prop_assert!(e.breaks_connection(), "{:?}", e);
                    prop_assert!(conn.is_broken());
                    prop_assert!(broken_at_writes.is_none());
                    broken_at_writes = Some(fake.0.borrow().writes);
                }
            }
            if req.corruption.is_some() {
                in_step = false;
            }
            // A broken connection never touches the stream again.
            if let Some(w) = broken_at_writes {
                prop_assert_eq!(fake.0.borrow().writes, w);
            }
            // Pushes are queued, never returned as replies.
            for p in conn.take_pushes() {
                prop_assert!(matches!(p, Value::Push(_)), "{:?}", p);
            }
            // (That the read buffer never grows faster than bytes arrive is
            // a unit test of the connection: `the_buffer_grows_only_with_the_bytes`.)
        }
        // A connection that ended in step answers the next request right.
        if broken_at_writes.is_none() && requests.iter().all(|r| r.corruption.is_none()) {
            fake.0.borrow_mut().answers.push(b"+PONG\r\n".to_vec());
            let pong: String = conn.query(["PING"]).unwrap();
            prop_assert_eq!(pong, "PONG");
        }
    }

    #[test]
    fn views_and_owned_values_agree(
        requests in prop::collection::vec(request(), 1..6),
        chunk in 1usize..64,
        resp3 in any::<bool>(),
    ) {
        // The same answers to two connections: one reads owned values
        // (`execute_raw`), the other views (`for_each_reply`). Every reply,
        // every error and every queued push must be the same.
        let protocol = if resp3 { Protocol::Resp3 } else { Protocol::Resp2 };
        let fakes = [Fake::default(), Fake::default()];
        for fake in &fakes {
            let mut w = fake.0.borrow_mut();
            w.chunk = chunk;
            w.answers = requests.iter().map(|r| answer(r, protocol)).collect();
        }
        let mut owned = Connection::new(fakes[0].clone());
        let mut viewed = Connection::new(fakes[1].clone());
        for req in &requests {
            let mut pipe = Pipeline::new();
            for i in 0..req.replies.len() {
                pipe.cmd(("GET", i));
            }
            let a = pipe.execute_raw(&mut owned).map_err(|e| e.to_string());
            let mut got = Vec::new();
            let b = pipe
                .for_each_reply(&mut viewed, |_, r| {
                    got.push(match r {
                        Ok(v) => v.to_value(),
                        Err(e) => Value::Error(format!("{}|{}", e.code(), e.message())),
                    });
                    Ok(())
                })
                .map(|()| got)
                .map_err(|e| e.to_string());
            let a = a.map(|replies| {
                replies
                    .into_iter()
                    .map(|v| match v {
                        Value::Error(line) => {
                            let e = respline::ServerError::new(&line);
                            Value::Error(format!("{}|{}", e.code(), e.message()))
                        }
                        v => v,
                    })
                    .collect::<Vec<_>>()
            });
            prop_assert_eq!(a, b);
            prop_assert_eq!(owned.take_pushes(), viewed.take_pushes());
            prop_assert_eq!(owned.is_broken(), viewed.is_broken());
        }
    }
}
