//! In-memory decoding into an owned value: respline against redis-rs, in one
//! run, the contenders alternating.
//!
//! ```text
//! cd bench/vs-redis-rs && cargo run --release            # 16 rounds
//! ROUNDS=15 cargo run --release                          # more rounds
//! ONLY=ok,array cargo run --release                      # some inputs only
//! WHO=feed ONLY=ok ROUNDS=1 valgrind --tool=callgrind target/release/vs-redis-rs
//!                                                        # one contender, to profile
//! ```
//!
//! Every input is one buffer holding many copies of one reply. Each
//! contender decodes every reply in it into an owned value, in a loop:
//!
//! * `decode`: respline's standalone `respline::resp::decode(&buf[pos..])`,
//!   once per reply;
//! * `feed`: one respline `Decoder`, `feed(&buf[pos..])` once per reply, as
//!   a connection does from its read buffer;
//! * `redis-rs`: one `redis::Parser`, `parse_value(&mut rest)` once per reply
//!   over the same `&[u8]` (the reader advances), as redis-rs's synchronous
//!   connection does over its socket;
//! * `read`: counts the LF bytes of the buffer, for the cost of reading the
//!   bytes at all (information only).
//!
//! A round times every contender once on every input, in an order that
//! rotates from round to round and is reversed every other 4 rounds, so that
//! every contender runs after every other one as often (the one before
//! leaves glibc's free lists in its own shape, which matters); 16 rounds,
//! the default, go through every order twice. The table shows each
//! contender's median time per reply over the rounds and the ratio of
//! redis-rs's median to respline's (higher is better for respline).

use std::hint::black_box;
use std::time::Instant;

use respline::resp::{decode, Decoder, Limits};

struct Input {
    key: &'static str,
    label: &'static str,
    /// One reply on the wire.
    reply: Vec<u8>,
    copies: usize,
    /// Part of the issue's targets (the others are for information).
    target: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Decode,
    Feed,
    Redis,
    Read,
}

const CONTENDERS: [Contender; 4] = [
    Contender::Decode,
    Contender::Feed,
    Contender::Redis,
    Contender::Read,
];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Decode => "decode",
            Contender::Feed => "feed",
            Contender::Redis => "redis-rs",
            Contender::Read => "read",
        }
    }
}

fn inputs() -> Vec<Input> {
    let bulk = |payload: &[u8]| {
        let mut one = format!("${}\r\n", payload.len()).into_bytes();
        one.extend_from_slice(payload);
        one.extend_from_slice(b"\r\n");
        one
    };
    let list = |header: &str, n: usize, element: &[u8]| {
        let mut one = header.as_bytes().to_vec();
        for _ in 0..n {
            one.extend_from_slice(element);
        }
        one
    };
    let array = list("*100\r\n", 100, &bulk(b"0123456789"));
    vec![
        Input {
            key: "ok",
            label: "+OK",
            reply: b"+OK\r\n".to_vec(),
            copies: 1_000_000,
            target: Some(4.0),
        },
        Input {
            key: "bulk1k",
            label: "$1024 bulk",
            reply: bulk(&[b'x'; 1024]),
            copies: 100_000,
            target: Some(2.0),
        },
        Input {
            key: "array",
            label: "*100 of $10 bulks",
            reply: array,
            copies: 10_000,
            target: Some(6.0),
        },
        Input {
            key: "int",
            label: ":12345",
            reply: b":12345\r\n".to_vec(),
            copies: 1_000_000,
            target: None,
        },
        Input {
            key: "bulk16",
            label: "$16 bulk",
            reply: bulk(b"0123456789abcdef"),
            copies: 1_000_000,
            target: None,
        },
        Input {
            key: "nil2",
            label: "$-1 (nil)",
            reply: b"$-1\r\n".to_vec(),
            copies: 1_000_000,
            target: None,
        },
        Input {
            key: "nil3",
            label: "_ (RESP3 nil)",
            reply: b"_\r\n".to_vec(),
            copies: 1_000_000,
            target: None,
        },
        Input {
            key: "arr2",
            label: "*2 of $3 bulks",
            reply: list("*2\r\n", 2, &bulk(b"abc")),
            copies: 500_000,
            target: None,
        },
        Input {
            key: "arr30int",
            label: "*30 of :n",
            reply: list("*30\r\n", 30, b":1234\r\n"),
            copies: 100_000,
            target: None,
        },
        Input {
            key: "arr1000",
            label: "*1000 of $10 bulks",
            reply: list("*1000\r\n", 1000, &bulk(b"0123456789")),
            copies: 1_000,
            target: None,
        },
        Input {
            key: "map50",
            label: "%50 of $10 pairs",
            reply: list("%50\r\n", 100, &bulk(b"0123456789")),
            copies: 10_000,
            target: None,
        },
    ]
}

/// Decodes every reply of `buf` with `who`; returns how many there were.
fn run(who: Contender, buf: &[u8]) -> usize {
    match who {
        Contender::Decode => {
            let limits = Limits::default();
            let mut pos = 0;
            let mut count = 0;
            while pos < buf.len() {
                let (value, used) = decode(black_box(&buf[pos..]), &limits)
                    .expect("respline decode")
                    .expect("a whole reply");
                black_box(value);
                pos += used;
                count += 1;
            }
            count
        }
        Contender::Feed => {
            let mut decoder = Decoder::new(Limits::default());
            let mut pos = 0;
            let mut count = 0;
            while pos < buf.len() {
                let (used, value) = decoder.feed(black_box(&buf[pos..])).expect("respline feed");
                pos += used;
                match value {
                    Some(v) => {
                        black_box(v);
                        count += 1;
                    }
                    None => assert!(used > 0, "respline stuck at byte {}", pos),
                }
            }
            count
        }
        Contender::Redis => {
            let mut parser = redis::Parser::new();
            let mut rest: &[u8] = black_box(buf);
            let mut count = 0;
            // The parser reads ahead into its own buffer, so the slice can
            // be empty while replies remain: stop on end of input.
            loop {
                match parser.parse_value(&mut rest) {
                    Ok(v) => {
                        black_box(v);
                        count += 1;
                    }
                    Err(_) if rest.is_empty() => break,
                    Err(e) => panic!("redis-rs: {}", e),
                }
            }
            count
        }
        // Counted in u8 lanes, 255 bytes at a time, so that it vectorizes.
        Contender::Read => black_box(buf)
            .chunks(255)
            .map(|c| c.iter().fold(0u8, |n, &b| n + u8::from(b == b'\n')) as usize)
            .sum(),
    }
}

/// What each contender must have counted for `input`.
fn expected(who: Contender, input: &Input) -> usize {
    match who {
        Contender::Read => input.reply.iter().filter(|&&b| b == b'\n').count() * input.copies,
        _ => input.copies,
    }
}

/// Checks once that both libraries read the reply as the same thing.
fn check_values(input: &Input) {
    let (ours, used) = decode(&input.reply, &Limits::default())
        .expect("respline decode")
        .expect("a whole reply");
    assert_eq!(used, input.reply.len(), "{}", input.label);
    let theirs = redis::parse_redis_value(&input.reply).expect("redis-rs parse");
    let same = format!("{:?}", simplify_ours(&ours)) == format!("{:?}", simplify_theirs(&theirs));
    assert!(same, "{}: {:?} vs {:?}", input.label, ours, theirs);
}

/// Both values in one shape, to compare them (through `Debug`).
#[allow(dead_code)]
#[derive(Debug)]
enum Shape {
    Nil,
    Status(String),
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Shape>),
    Pairs(Vec<(Shape, Shape)>),
    Other,
}

fn simplify_ours(v: &respline::Value) -> Shape {
    use respline::Value as V;
    match v {
        V::Nil => Shape::Nil,
        V::SimpleString(s) => Shape::Status(s.to_string()),
        V::Integer(i) => Shape::Int(*i),
        V::BulkString(b) => Shape::Bytes(b.clone()),
        V::Array(items) => Shape::List(items.iter().map(simplify_ours).collect()),
        V::Map(pairs) => Shape::Pairs(
            pairs
                .iter()
                .map(|(k, v)| (simplify_ours(k), simplify_ours(v)))
                .collect(),
        ),
        _ => Shape::Other,
    }
}

fn simplify_theirs(v: &redis::Value) -> Shape {
    use redis::Value as V;
    match v {
        V::Nil => Shape::Nil,
        V::Okay => Shape::Status("OK".into()),
        V::SimpleString(s) => Shape::Status(s.clone()),
        V::Int(i) => Shape::Int(*i),
        V::BulkString(b) => Shape::Bytes(b.clone()),
        V::Array(items) => Shape::List(items.iter().map(simplify_theirs).collect()),
        V::Map(pairs) => Shape::Pairs(
            pairs
                .iter()
                .map(|(k, v)| (simplify_theirs(k), simplify_theirs(v)))
                .collect(),
        ),
        _ => Shape::Other,
    }
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = times.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let only: Option<Vec<String>> = std::env::var("ONLY")
        .ok()
        .map(|s| s.split(',').map(|k| k.trim().to_string()).collect());
    let inputs: Vec<Input> = inputs()
        .into_iter()
        .filter(|i| only.as_ref().map_or(true, |o| o.iter().any(|k| k == i.key)))
        .collect();
    let who_only: Option<String> = std::env::var("WHO").ok();
    let buffers: Vec<Vec<u8>> = inputs.iter().map(|i| i.reply.repeat(i.copies)).collect();
    for input in &inputs {
        check_values(input);
    }

    println!(
        "In-memory decoding into an owned value, {} rounds, contenders alternating (order rotated each round, reversed every other {} rounds)",
        rounds,
        CONTENDERS.len()
    );
    // times[input][contender] = one time per round, in seconds.
    let mut times = vec![vec![Vec::with_capacity(rounds); CONTENDERS.len()]; inputs.len()];
    // One warm-up round, not counted.
    for round in 0..=rounds {
        for (i, input) in inputs.iter().enumerate() {
            for k in 0..CONTENDERS.len() {
                // Rotated each round, and reversed every other group of
                // rounds, so that each contender runs after each of the
                // others: the one before leaves the allocator's free lists
                // in its own shape, which the next one's first allocations
                // (and, with glibc, much of its speed) depend on.
                let n = CONTENDERS.len();
                let counted = round.saturating_sub(1);
                let step = (k + counted) % n;
                let c = if (counted / n) % 2 == 1 {
                    n - 1 - step
                } else {
                    step
                };
                let who = CONTENDERS[c];
                if who_only.as_ref().map_or(false, |w| w != who.name()) {
                    continue;
                }
                let t = Instant::now();
                let got = run(who, &buffers[i]);
                let secs = t.elapsed().as_secs_f64();
                assert_eq!(got, expected(who, input), "{} {}", input.label, who.name());
                if round > 0 {
                    times[i][c].push(secs);
                }
            }
        }
    }

    println!(
        "\n{:<20} {:>9}  {:>10} {:>10} {:>10} {:>10}  {:>12} {:>12}  {:>7}",
        "input (ns/reply)",
        "replies",
        "decode",
        "feed",
        "redis-rs",
        "read",
        "rr/decode",
        "rr/feed",
        "target"
    );
    for (i, input) in inputs.iter().enumerate() {
        let med: Vec<f64> = times[i]
            .iter_mut()
            .map(|t| median(t) * 1e9 / input.copies as f64)
            .collect();
        let (dec, feed, rr, read) = (med[0], med[1], med[2], med[3]);
        let target = match input.target {
            Some(t) => format!(">= {}x", t),
            None => "-".to_string(),
        };
        println!(
            "{:<20} {:>9}  {:>10.2} {:>10.2} {:>10.2} {:>10.2}  {:>11.2}x {:>11.2}x  {:>7}",
            input.label,
            input.copies,
            dec,
            feed,
            rr,
            read,
            rr / dec,
            rr / feed,
            target
        );
    }
    println!(
        "\nrr/decode, rr/feed: redis-rs's median time over respline's (higher is faster for respline)."
    );
    println!("read: counting the buffer's LF bytes, the cost of reading the bytes at all.");
}
