//! Property tests for the codec: any `Value` survives encode → decode however
//! its bytes are split; every strict prefix asks for more; random and
//! mutated bytes never panic, never break a limit and never hold memory out
//! of proportion to the bytes fed; configured limits are respected exactly.

use proptest::prelude::*;
use respline::resp::{decode, encode_value, Decoder, Limits, ProtocolErrorKind};
use respline::{Protocol, Value};

/// A line's text: no CR or LF (they cannot travel in a simple string).
fn line_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just(' '),
            Just(':'),
            Just('é'),
            Just('\u{0}'),
            any::<char>()
        ],
        0..12,
    )
    .prop_map(|chars| {
        chars
            .into_iter()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect()
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(0u8)], 0..6),
    ]
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("NaN never equals itself", |d| !d.is_nan()),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.1),
        Just(1e300),
        Just(5e-324),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        line_text().prop_map(|s| Value::SimpleString(s.into())),
        line_text().prop_map(Value::Error),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0)].prop_map(Value::Integer),
        bytes().prop_map(Value::BulkString),
        double().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        ("-?", "[0-9]{1,40}").prop_map(|(sign, digits)| Value::BigNumber(sign + &digits)),
        bytes().prop_map(Value::BlobError),
        (any::<[u8; 3]>(), bytes()).prop_map(|(format, text)| Value::Verbatim { format, text }),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 48, 6, |inner| {
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Set),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Push),
            pairs.clone().prop_map(Value::Map),
            (pairs, inner).prop_map(|(attributes, value)| Value::Attribute {
                attributes,
                value: Box::new(value),
            }),
        ]
    })
}

fn resp3(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(&mut out, value, Protocol::Resp3);
    out
}

/// Feeds `wire` in pieces of the given sizes (cycled), the way a connection
/// does, and returns the replies, or the first error.
fn feed_in_pieces(
    wire: &[u8],
    sizes: &[usize],
    limits: &Limits,
) -> Result<Vec<Value>, respline::resp::ProtocolError> {
    let mut decoder = Decoder::new(limits.clone());
    let mut pending = Vec::new();
    let mut replies = Vec::new();
    let mut at = 0;
    let mut fed = 0usize;
    let mut i = 0;
    while at < wire.len() {
        let n = sizes[i % sizes.len()].max(1).min(wire.len() - at);
        i += 1;
        pending.extend_from_slice(&wire[at..at + n]);
        at += n;
        loop {
            let (used, reply) = decoder.feed(&pending)?;
            fed += used;
            pending.drain(..used);
            assert!(
                decoder.held_bytes() <= 48 * fed + 64 * 1024,
                "{} bytes held after {} consumed",
                decoder.held_bytes(),
                fed
            );
            match reply {
                Some(v) => replies.push(v),
                None => break,
            }
        }
    }
    Ok(replies)
}

/// How a value measures against the limits, as the decoder should count it.
#[derive(Default)]
struct Shape {
    depth: usize,
    bulk: usize,
    aggregate: usize,
    line: usize,
}

fn shape(v: &Value) -> Shape {
    let mut s = Shape::default();
    let line = |n: usize, s: &mut Shape| s.line = s.line.max(n);
    match v {
        Value::SimpleString(t) => line(t.len(), &mut s),
        Value::Error(t) | Value::BigNumber(t) => line(t.len(), &mut s),
        Value::Double(_) => line(resp3(v).len() - 3, &mut s),
        Value::BulkString(b) | Value::BlobError(b) => s.bulk = b.len(),
        Value::Verbatim { text, .. } => s.bulk = text.len() + 4,
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            s.aggregate = items.len();
            for i in items {
                s = merge(s, shape(i));
            }
            s.depth += 1;
        }
        Value::Map(pairs) => {
            s.aggregate = pairs.len();
            for (k, val) in pairs {
                s = merge(merge(s, shape(k)), shape(val));
            }
            s.depth += 1;
        }
        Value::Attribute { attributes, value } => {
            s.aggregate = attributes.len();
            for (k, val) in attributes {
                s = merge(merge(s, shape(k)), shape(val));
            }
            s = merge(s, shape(value));
            s.depth += 1;
        }
        Value::Nil | Value::Integer(_) | Value::Boolean(_) => {}
    }
    s
}

fn merge(a: Shape, b: Shape) -> Shape {
    Shape {
        depth: a.depth.max(b.depth),
        bulk: a.bulk.max(b.bulk),
        aggregate: a.aggregate.max(b.aggregate),
        line: a.line.max(b.line),
    }
}

/// Pieces of RESP, to build streams that get past the first byte.
const TOKENS: &[&[u8]] = &[
    b"*",
    b"%",
    b"~",
    b">",
    b"|",
    b"$",
    b"!",
    b"=",
    b"+",
    b"-",
    b":",
    b"_",
    b",",
    b"#",
    b"(",
    b".",
    b";",
    b"?",
    b"\r\n",
    b"\r",
    b"\n",
    b"0",
    b"1",
    b"3",
    b"-1",
    b"4294967295",
    b"99999999999",
    b"txt:",
    b"t",
];

/// The number of cases: `default`, or `PROPTEST_CASES` for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_whole(v in value()) {
        let wire = resp3(&v);
        prop_assert_eq!(respline::resp::encoded_len(&v, Protocol::Resp3), wire.len());
        let (back, used) = decode(&wire, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(back, v);
    }

    #[test]
    fn roundtrip_split_everywhere(v in value()) {
        let wire = resp3(&v);
        let limits = Limits::default();
        for split in 0..=wire.len() {
            let mut decoder = Decoder::new(limits.clone());
            let (used, first) = decoder.feed(&wire[..split]).unwrap();
            let reply = match first {
                Some(r) => {
                    prop_assert_eq!(split, wire.len());
                    r
                }
                None => {
                    let mut rest = wire[used..].to_vec();
                    let (used2, r) = decoder.feed(&rest).unwrap();
                    rest.drain(..used2);
                    prop_assert!(rest.is_empty());
                    r.expect("complete after the second piece")
                }
            };
            prop_assert_eq!(&reply, &v);
        }
    }

    #[test]
    fn roundtrip_random_pieces(v in value(), sizes in prop::collection::vec(1usize..17, 1..8)) {
        let wire = resp3(&v);
        let replies = feed_in_pieces(&wire, &sizes, &Limits::default()).unwrap();
        prop_assert_eq!(replies, vec![v]);
    }

    #[test]
    fn every_strict_prefix_needs_more(v in value()) {
        let wire = resp3(&v);
        for end in 0..wire.len() {
            prop_assert_eq!(decode(&wire[..end], &Limits::default()).unwrap(), None);
        }
    }

    #[test]
    fn resp2_forms_decode_too(v in value()) {
        // What a RESP2 server would send for the same data decodes, whole.
        let mut wire = Vec::new();
        encode_value(&mut wire, &v, Protocol::Resp2);
        let (_, used) = decode(&wire, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
    }

    #[test]
    fn random_bytes_never_panic(
        wire in prop::collection::vec(any::<u8>(), 0..512),
        sizes in prop::collection::vec(1usize..64, 1..4),
    ) {
        let limits = Limits::default();
        let whole = decode(&wire, &limits);
        if let Ok(Some((_, used))) = whole {
            prop_assert!(used <= wire.len());
        }
        // Pieces reach the same verdict on the first reply.
        let _ = feed_in_pieces(&wire, &sizes, &limits);
    }

    #[test]
    fn resp_like_bytes_never_panic(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..96),
        sizes in prop::collection::vec(1usize..9, 1..4),
    ) {
        let wire: Vec<u8> = tokens.concat();
        let limits = Limits::default();
        let _ = decode(&wire, &limits);
        let _ = feed_in_pieces(&wire, &sizes, &limits);
    }

    #[test]
    fn mutated_values_never_panic(
        v in value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        sizes in prop::collection::vec(1usize..9, 1..4),
    ) {
        let mut wire = resp3(&v);
        for (at, byte, op) in edits {
            if wire.is_empty() {
                wire.push(byte);
                continue;
            }
            let i = at.index(wire.len());
            match op {
                0 => wire[i] = byte,
                1 => wire.insert(i, byte),
                _ => {
                    wire.remove(i);
                }
            }
        }
        let limits = Limits::default();
        if let Ok(Some((_, used))) = decode(&wire, &limits) {
            prop_assert!(used <= wire.len());
        }
        let _ = feed_in_pieces(&wire, &sizes, &limits);
    }

    #[test]
    fn tight_limits_are_respected_exactly(
        v in value(),
        depth in 1usize..5,
        bulk in 0usize..16,
        aggregate in 0usize..5,
        line in 0usize..16,
    ) {
        let limits = Limits {
            max_depth: depth,
            max_bulk_len: bulk,
            max_aggregate_len: aggregate,
            max_line_len: line,
            ..Limits::default()
        };
        let s = shape(&v);
        let fits = s.depth <= depth && s.bulk <= bulk && s.aggregate <= aggregate && s.line <= line;
        let wire = resp3(&v);
        match decode(&wire, &limits) {
            Ok(Some((back, used))) => {
                prop_assert!(fits, "accepted a value beyond the limits");
                prop_assert_eq!(used, wire.len());
                prop_assert_eq!(back, v);
            }
            Ok(None) => prop_assert!(false, "complete input reported as incomplete"),
            Err(e) => {
                prop_assert!(!fits, "refused a value within the limits: {}", e);
                prop_assert_eq!(e.kind(), ProtocolErrorKind::LimitExceeded, "{}", e);
            }
        }
    }
}

/// The next pseudo-random choice.
fn pick(choice: &mut u64) -> bool {
    *choice = choice.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
    *choice & 1 == 1
}

/// Encodes `v` in RESP3, writing some aggregates and bulk strings in their
/// streamed forms (`*?`, `~?`, `%?` ... `.`, and `$?` with `;n` chunks), as
/// chosen by the bits of `choice`.
fn encode_streamed(v: &Value, choice: &mut u64, out: &mut Vec<u8>) {
    match v {
        Value::Array(items) | Value::Set(items) if pick(choice) => {
            out.extend_from_slice(if matches!(v, Value::Array(_)) {
                b"*?\r\n"
            } else {
                b"~?\r\n"
            });
            for i in items {
                encode_streamed(i, choice, out);
            }
            out.extend_from_slice(b".\r\n");
        }
        Value::Map(pairs) if pick(choice) => {
            out.extend_from_slice(b"%?\r\n");
            for (k, val) in pairs {
                encode_streamed(k, choice, out);
                encode_streamed(val, choice, out);
            }
            out.extend_from_slice(b".\r\n");
        }
        Value::BulkString(b) if pick(choice) => {
            out.extend_from_slice(b"$?\r\n");
            let mut rest = &b[..];
            while !rest.is_empty() {
                let n = rest.len().min(1 + (*choice as usize % 5));
                out.extend_from_slice(format!(";{}\r\n", n).as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                pick(choice);
            }
            out.extend_from_slice(b";0\r\n");
        }
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            let kind = match v {
                Value::Array(_) => b'*',
                Value::Set(_) => b'~',
                _ => b'>',
            };
            out.extend_from_slice(format!("{}{}\r\n", kind as char, items.len()).as_bytes());
            for i in items {
                encode_streamed(i, choice, out);
            }
        }
        Value::Map(pairs) => {
            out.extend_from_slice(format!("%{}\r\n", pairs.len()).as_bytes());
            for (k, val) in pairs {
                encode_streamed(k, choice, out);
                encode_streamed(val, choice, out);
            }
        }
        Value::Attribute { attributes, value } => {
            out.extend_from_slice(format!("|{}\r\n", attributes.len()).as_bytes());
            for (k, val) in attributes {
                encode_streamed(k, choice, out);
                encode_streamed(val, choice, out);
            }
            encode_streamed(value, choice, out);
        }
        other => encode_value(out, other, Protocol::Resp3),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn streamed_forms_decode_to_the_same_value(
        v in value(),
        choice in any::<u64>(),
        sizes in prop::collection::vec(1usize..9, 1..4),
    ) {
        let mut wire = Vec::new();
        let mut c = choice;
        encode_streamed(&v, &mut c, &mut wire);
        let (back, used) = decode(&wire, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(feed_in_pieces(&wire, &sizes, &Limits::default()).unwrap(), vec![v]);
        for end in 0..wire.len() {
            prop_assert_eq!(decode(&wire[..end], &Limits::default()).unwrap(), None);
        }
    }
}
