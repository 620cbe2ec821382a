//! Table-driven vectors for the codec, with no server: every RESP2/RESP3 type,
//! the boundaries, malformed input and the limits. Each vector is decoded
//! whole, from every strict prefix, split at every position and one byte at a
//! time, through both `decode` and a long-lived `Decoder`.

use respline::resp::{
    decode, encode_command, encode_value, encoded_len, write_bulk, Decoder, Limits, ProtocolError,
    ProtocolErrorKind,
};
use respline::{Protocol, ToCommand, Value};

fn bulk(b: &[u8]) -> Value {
    Value::BulkString(b.to_vec())
}

fn simple(s: &str) -> Value {
    Value::SimpleString(s.to_string().into())
}

/// Feeds `pieces` to one decoder the way a connection does (appending to a
/// pending buffer, dropping what was consumed) and returns every reply.
fn feed_pieces(pieces: &[&[u8]], limits: &Limits) -> Result<Vec<Value>, ProtocolError> {
    let mut decoder = Decoder::new(limits.clone());
    let mut pending: Vec<u8> = Vec::new();
    let mut replies = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            let (used, reply) = decoder.feed(&pending)?;
            assert!(used <= pending.len(), "consumed more than it was given");
            pending.drain(..used);
            match reply {
                Some(v) => replies.push(v),
                None => break,
            }
        }
    }
    assert!(
        pending.is_empty(),
        "bytes left over after the last reply: {:?}",
        pending
    );
    assert!(!decoder.is_mid_reply());
    // Between replies only the small stack of frames is kept.
    assert!(
        decoder.held_bytes() <= 4096,
        "{} bytes held between replies",
        decoder.held_bytes()
    );
    Ok(replies)
}

/// Decodes `wire` as exactly one value, every way it can arrive.
fn check_value(wire: &[u8], expected: &Value) {
    let limits = Limits::default();
    let (value, used) = decode(wire, &limits)
        .unwrap_or_else(|e| panic!("{:?}: {}", String::from_utf8_lossy(wire), e))
        .unwrap_or_else(|| panic!("{:?}: incomplete", String::from_utf8_lossy(wire)));
    assert_eq!(&value, expected, "{:?}", String::from_utf8_lossy(wire));
    assert_eq!(used, wire.len(), "{:?}", String::from_utf8_lossy(wire));

    // Followed by another reply: stops exactly at the end of the first.
    let mut two = wire.to_vec();
    two.extend_from_slice(b"+next\r\n");
    let (value, used) = decode(&two, &limits).unwrap().unwrap();
    assert_eq!((&value, used), (expected, wire.len()));

    for end in 0..wire.len() {
        assert_eq!(
            decode(&wire[..end], &limits).unwrap(),
            None,
            "prefix of {} bytes of {:?} is not 'need more'",
            end,
            String::from_utf8_lossy(wire)
        );
    }
    for split in 0..=wire.len() {
        let replies = feed_pieces(&[&wire[..split], &wire[split..]], &limits).unwrap();
        assert_eq!(replies.len(), 1, "split at {}", split);
        assert_eq!(&replies[0], expected, "split at {}", split);
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(
        feed_pieces(&bytes, &limits).unwrap().first(),
        Some(expected)
    );
}

/// `wire` must fail with `kind`, and the message must contain `needle`,
/// however the bytes arrive; the error is the same each way.
fn check_error(wire: &[u8], limits: &Limits, kind: ProtocolErrorKind, needle: &str) {
    let whole = match decode(wire, limits) {
        Err(e) => e,
        Ok(v) => panic!(
            "{:?} decoded to {:?}, expected an error",
            String::from_utf8_lossy(wire),
            v
        ),
    };
    assert_eq!(whole.kind(), kind, "{}", whole);
    let text = whole.to_string();
    assert!(
        text.contains(needle),
        "{:?}: message {:?} lacks {:?}",
        String::from_utf8_lossy(wire),
        text,
        needle
    );
    assert!(text.contains(&format!("at byte {}", whole.offset())));
    assert!(whole.offset() <= wire.len());
    for split in 0..=wire.len() {
        let e = feed_pieces(&[&wire[..split], &wire[split..]], limits).unwrap_err();
        assert_eq!(e, whole, "split at {}", split);
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(feed_pieces(&bytes, limits).unwrap_err(), whole);

    // The error is final: the decoder repeats it and consumes nothing more.
    let mut decoder = Decoder::new(limits.clone());
    let first = decoder.feed(wire).unwrap_err();
    assert_eq!(decoder.feed(b"+OK\r\n").unwrap_err(), first);
}

#[test]
fn every_resp2_type() {
    let vectors: Vec<(&[u8], Value)> = vec![
        (b"+OK\r\n", simple("OK")),
        (b"+\r\n", simple("")),
        (b"+hello world\r\n", simple("hello world")),
        (
            b"-ERR unknown command\r\n",
            Value::Error("ERR unknown command".into()),
        ),
        (b"-\r\n", Value::Error(String::new())),
        (b":0\r\n", Value::Integer(0)),
        (b":-1\r\n", Value::Integer(-1)),
        (b":+7\r\n", Value::Integer(7)),
        (b":9223372036854775807\r\n", Value::Integer(i64::MAX)),
        (b":-9223372036854775808\r\n", Value::Integer(i64::MIN)),
        (b"$5\r\nhello\r\n", bulk(b"hello")),
        (b"$0\r\n\r\n", bulk(b"")),
        (b"$4\r\n\r\n\r\n\r\n", bulk(b"\r\n\r\n")),
        (b"$3\r\na\x00b\r\n", bulk(b"a\x00b")),
        (b"$-1\r\n", Value::Nil),
        (b"*-1\r\n", Value::Nil),
        (b"*0\r\n", Value::Array(vec![])),
        (
            b"*3\r\n:1\r\n$3\r\nfoo\r\n-WRONGTYPE nope\r\n",
            Value::Array(vec![
                Value::Integer(1),
                bulk(b"foo"),
                Value::Error("WRONGTYPE nope".into()),
            ]),
        ),
        (
            b"*2\r\n*0\r\n*1\r\n*0\r\n",
            Value::Array(vec![
                Value::Array(vec![]),
                Value::Array(vec![Value::Array(vec![])]),
            ]),
        ),
        (
            b"*3\r\n$-1\r\n*-1\r\n$0\r\n\r\n",
            Value::Array(vec![Value::Nil, Value::Nil, bulk(b"")]),
        ),
    ];
    for (wire, expected) in &vectors {
        check_value(wire, expected);
    }
}

#[test]
fn every_resp3_type() {
    let vectors: Vec<(&[u8], Value)> = vec![
        (b"_\r\n", Value::Nil),
        (b",1.5\r\n", Value::Double(1.5)),
        (b",-0\r\n", Value::Double(-0.0)),
        (b",10\r\n", Value::Double(10.0)),
        (b",1.23e-5\r\n", Value::Double(1.23e-5)),
        (b",2.5E+10\r\n", Value::Double(2.5e10)),
        (b",inf\r\n", Value::Double(f64::INFINITY)),
        (b",-inf\r\n", Value::Double(f64::NEG_INFINITY)),
        (b"#t\r\n", Value::Boolean(true)),
        (b"#f\r\n", Value::Boolean(false)),
        (
            b"(3492890328409238509324850943850943825024385\r\n",
            Value::BigNumber("3492890328409238509324850943850943825024385".into()),
        ),
        (b"(-12\r\n", Value::BigNumber("-12".into())),
        (
            b"!21\r\nSYNTAX invalid syntax\r\n",
            Value::BlobError(b"SYNTAX invalid syntax".to_vec()),
        ),
        (b"!0\r\n\r\n", Value::BlobError(vec![])),
        (
            b"=15\r\ntxt:Some string\r\n",
            Value::Verbatim {
                format: *b"txt",
                text: b"Some string".to_vec(),
            },
        ),
        (
            b"=4\r\nmkd:\r\n",
            Value::Verbatim {
                format: *b"mkd",
                text: vec![],
            },
        ),
        (
            b"%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n:2\r\n",
            Value::Map(vec![
                (simple("first"), Value::Integer(1)),
                (bulk(b"second"), Value::Integer(2)),
            ]),
        ),
        (b"%0\r\n", Value::Map(vec![])),
        (
            // Keys can be any value, aggregates included; duplicates stay.
            b"%2\r\n*1\r\n:1\r\n_\r\n*1\r\n:1\r\n#t\r\n",
            Value::Map(vec![
                (Value::Array(vec![Value::Integer(1)]), Value::Nil),
                (Value::Array(vec![Value::Integer(1)]), Value::Boolean(true)),
            ]),
        ),
        (
            b"~3\r\n+a\r\n+a\r\n:1\r\n",
            Value::Set(vec![simple("a"), simple("a"), Value::Integer(1)]),
        ),
        (b"~0\r\n", Value::Set(vec![])),
        (
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            Value::Push(vec![bulk(b"message"), bulk(b"ch"), bulk(b"hi")]),
        ),
        (
            b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
            Value::Attribute {
                attributes: vec![(
                    simple("key-popularity"),
                    Value::Map(vec![
                        (bulk(b"a"), Value::Double(0.1923)),
                        (bulk(b"b"), Value::Double(0.0012)),
                    ]),
                )],
                value: Box::new(Value::Array(vec![
                    Value::Integer(2039123),
                    Value::Integer(9543892),
                ])),
            },
        ),
        (
            // An attribute inside an aggregate describes the element after it.
            b"*2\r\n|1\r\n+ttl\r\n:5\r\n+a\r\n+b\r\n",
            Value::Array(vec![
                Value::Attribute {
                    attributes: vec![(simple("ttl"), Value::Integer(5))],
                    value: Box::new(simple("a")),
                },
                simple("b"),
            ]),
        ),
        (
            b"|0\r\n:1\r\n",
            Value::Attribute {
                attributes: vec![],
                value: Box::new(Value::Integer(1)),
            },
        ),
        (
            b"$?\r\n;4\r\nHell\r\n;6\r\no\r\nwor\r\n;0\r\n",
            bulk(b"Hello\r\nwor"),
        ),
        (b"$?\r\n;0\r\n", bulk(b"")),
        (
            b"*?\r\n:1\r\n*?\r\n.\r\n.\r\n",
            Value::Array(vec![Value::Integer(1), Value::Array(vec![])]),
        ),
        (b"~?\r\n+x\r\n.\r\n", Value::Set(vec![simple("x")])),
        (
            b"%?\r\n+a\r\n:1\r\n.\r\n",
            Value::Map(vec![(simple("a"), Value::Integer(1))]),
        ),
        (
            b"*4\r\n%0\r\n~0\r\n*1\r\n%1\r\n_\r\n~0\r\n_\r\n",
            Value::Array(vec![
                Value::Map(vec![]),
                Value::Set(vec![]),
                Value::Array(vec![Value::Map(vec![(Value::Nil, Value::Set(vec![]))])]),
                Value::Nil,
            ]),
        ),
    ];
    for (wire, expected) in &vectors {
        check_value(wire, expected);
    }
}

#[test]
fn nan_doubles_decode_as_nan() {
    for wire in [&b",nan\r\n"[..], b",-nan\r\n", b",NaN\r\n"] {
        match decode(wire, &Limits::default()).unwrap() {
            Some((Value::Double(d), used)) => {
                assert!(d.is_nan());
                assert_eq!(used, wire.len());
            }
            other => panic!("{:?}", other),
        }
    }
}

#[test]
fn malformed_input_is_an_error_naming_what_arrived() {
    use ProtocolErrorKind::Malformed;
    let limits = Limits::default();
    let vectors: Vec<(&[u8], &str)> = vec![
        (b"@foo\r\n", "expected a RESP type byte, found '@' (0x40)"),
        (b"\x00\r\n", "found 0x00"),
        (b"*1\r\n?x\r\n", "at byte 4"),
        (b"+OK\n", "found a bare LF"),
        (b"+OK\rX", "expected LF after CR, found 'X'"),
        (b":12\n", "bare LF"),
        (
            b":abc\r\n",
            "expected an integer in the i64 range, found \"abc\"",
        ),
        (b":1.5\r\n", "an integer"),
        (b":\r\n", "an integer"),
        (b": 1\r\n", "an integer"),
        (b":9223372036854775808\r\n", "an integer in the i64 range"),
        (b":-9223372036854775809\r\n", "an integer in the i64 range"),
        (b"$abc\r\n", "expected a bulk length"),
        (b"$-2\r\n", "bulk length"),
        (b"$-0\r\n", "bulk length"),
        (b"$ 1\r\nx\r\n", "bulk length"),
        (b"$+1\r\nx\r\n", "bulk length"),
        (b"$\r\n", "bulk length"),
        (b"*-2\r\n", "aggregate length"),
        (b"*x\r\n", "aggregate length"),
        (b"%-1\r\n", "aggregate length"),
        (b"~-1\r\n", "aggregate length"),
        (b">-1\r\n", "aggregate length"),
        (b"!-1\r\n", "bulk length"),
        (b"=-1\r\n", "bulk length"),
        (
            b"$3\r\nfooXY",
            "expected CRLF after the 3-byte payload, found 'X'",
        ),
        (
            b"$3\r\nfoo\rX",
            "at byte 8 of the reply: expected CRLF after the 3-byte payload, found 'X'",
        ),
        (
            b"$3\r\nfoo\n\r",
            "at byte 7 of the reply: expected CRLF after the 3-byte payload, found 0x0a",
        ),
        (b"$3\r\nfoobar\r\n", "found 'b'"),
        (b"=3\r\ntxt\r\n", "a verbatim string"),
        (b"=5\r\ntxtx1\r\n", "a verbatim string"),
        (b"#x\r\n", "expected 't' or 'f'"),
        (b"#\r\n", "expected 't' or 'f'"),
        (b"#tt\r\n", "line of at most 1 bytes"),
        (b"_x\r\n", "line of at most 0 bytes"),
        (b",abc\r\n", "expected a double"),
        (b",1.\r\n", "a double"),
        (b",1e400\r\n", "a double"),
        (b"(12a\r\n", "a big number"),
        (b"(\r\n", "a big number"),
        (b".\r\n", "'.' only ends a streamed aggregate"),
        (b"*1\r\n.\r\n", "'.' only ends a streamed aggregate"),
        (b"%?\r\n+a\r\n.\r\n", "a value for the last key"),
        (b"$?\r\n+x\r\n", "';' (a chunk of a streamed string)"),
        (b"$?\r\n;2\r\nabc\r\n", "CRLF after the 2-byte payload"),
        (b";3\r\nabc\r\n", "a RESP type byte"),
        (b">?\r\n", "aggregate length"),
        (b"|?\r\n", "aggregate length"),
    ];
    for (wire, needle) in vectors {
        check_error(wire, &limits, Malformed, needle);
    }
}

#[test]
fn error_offsets_count_from_the_start_of_the_reply() {
    let limits = Limits::default();
    let e = decode(b"*2\r\n:1\r\n:x\r\n", &limits).unwrap_err();
    assert_eq!(e.offset(), 9);
    assert_eq!(e.expected(), "an integer in the i64 range");
    assert_eq!(e.found(), "\"x\"");
    // The same error when the reply arrives across two reads.
    let e2 = feed_pieces(&[b"*2\r\n:1\r\n", b":x\r\n"], &limits).unwrap_err();
    assert_eq!(e2.offset(), 9);
    assert_eq!(
        e2.to_string(),
        "protocol error at byte 9 of the reply: expected an integer in the i64 range, found \"x\""
    );
    // A second reply's offsets start from zero again.
    let e3 = feed_pieces(&[b"+OK\r\n*1\r\n", b"@"], &limits).unwrap_err();
    assert_eq!(e3.offset(), 4);
}

#[test]
fn depth_limit_applies_to_every_aggregate_type() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    // Depth 3 is allowed, with each type as the innermost level...
    for inner in [
        &b"*0\r\n"[..],
        b"%0\r\n",
        b"~0\r\n",
        b">1\r\n:1\r\n",
        b"|0\r\n:1\r\n",
    ] {
        let mut wire = b"*1\r\n%1\r\n:1\r\n".to_vec();
        wire.extend_from_slice(inner);
        let (_, used) = decode(&wire, &limits).unwrap().unwrap();
        assert_eq!(used, wire.len());
    }
    // ...and depth 4 is refused, whatever the mix.
    for (wire, found) in [
        (&b"*1\r\n*1\r\n*1\r\n*0\r\n"[..], "found 4"),
        (b"%1\r\n:1\r\n~1\r\n>1\r\n*1\r\n:1\r\n", "found 4"),
        (b"|1\r\n+a\r\n*1\r\n*1\r\n%0\r\n:1\r\n", "found 4"),
        (b"~1\r\n~1\r\n~1\r\n|0\r\n:1\r\n", "found 4"),
        (b"*?\r\n*?\r\n*?\r\n*?\r\n", "found 4"),
    ] {
        check_error(
            wire,
            &limits,
            ProtocolErrorKind::LimitExceeded,
            &format!("expected a nesting depth of at most 3, {}", found),
        );
    }
}

#[test]
fn default_depth_limit_is_1024_and_deep_values_drop() {
    let limits = Limits::default();
    let nest = |depth: usize| {
        let mut wire = b"*1\r\n".repeat(depth - 1);
        wire.extend_from_slice(b"*0\r\n");
        wire
    };
    let wire = nest(1024);
    let (value, used) = decode(&wire, &limits).unwrap().unwrap();
    assert_eq!(used, wire.len());
    // Walk to the bottom iteratively, then drop the whole value: a nested
    // value at the depth limit must not overflow this test thread's stack.
    let mut depth = 1;
    let mut v = &value;
    while let Value::Array(items) = v {
        match items.first() {
            Some(inner) => {
                v = inner;
                depth += 1;
            }
            None => break,
        }
    }
    assert_eq!(depth, 1024);
    drop(value);

    let e = decode(&nest(1025), &limits).unwrap_err();
    assert_eq!(e.kind(), ProtocolErrorKind::LimitExceeded);
    assert!(e.to_string().contains("nesting depth of at most 1024"));

    // 100,000 levels deep: refused at level 1025, having used the stack for
    // nothing and read only the first 1025 headers.
    let e = decode(&nest(100_000), &limits).unwrap_err();
    assert_eq!(e.offset(), 1024 * 4);
}

#[test]
fn a_value_at_the_depth_limit_drops_on_a_small_stack() {
    // Build through the decoder, and drop, on a 256 KiB thread.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let mut wire = b"%1\r\n:1\r\n".repeat(512);
            wire.extend_from_slice(&b"*1\r\n".repeat(511));
            wire.extend_from_slice(b"_\r\n");
            let (value, used) = decode(&wire, &Limits::default()).unwrap().unwrap();
            assert_eq!(used, wire.len());
            drop(value);
        })
        .unwrap();
    handle.join().expect("dropping a deep value overflowed");
}

#[test]
fn bulk_length_limit() {
    let limits = Limits {
        max_bulk_len: 4,
        ..Limits::default()
    };
    check_value(b"$4\r\nabcd\r\n", &bulk(b"abcd"));
    let (v, _) = decode(b"$4\r\nabcd\r\n", &limits).unwrap().unwrap();
    assert_eq!(v, bulk(b"abcd"));
    for (wire, what) in [
        (&b"$5\r\nabcde\r\n"[..], "bulk length of at most 4, found 5"),
        (b"!5\r\nabcde\r\n", "bulk length of at most 4"),
        (b"=9\r\ntxt:abcde\r\n", "bulk length of at most 4"),
        (
            b"$?\r\n;3\r\nabc\r\n;2\r\nde\r\n;0\r\n",
            "streamed string length of at most 4, found 5",
        ),
    ] {
        check_error(wire, &limits, ProtocolErrorKind::LimitExceeded, what);
    }
    // The default is Redis's proto-max-bulk-len, 512 MiB: one byte more is
    // refused from the header alone.
    let e = decode(b"$536870913\r\n", &Limits::default()).unwrap_err();
    assert_eq!(e.kind(), ProtocolErrorKind::LimitExceeded);
    assert_eq!(
        decode(b"$536870912\r\n", &Limits::default()).unwrap(),
        None,
        "exactly 512 MiB is allowed"
    );
}

#[test]
fn aggregate_length_limit() {
    let limits = Limits {
        max_aggregate_len: 2,
        ..Limits::default()
    };
    let (v, _) = decode(b"*2\r\n:1\r\n:2\r\n", &limits).unwrap().unwrap();
    assert_eq!(v.as_slice().map(|s| s.len()), Some(2));
    for wire in [
        &b"*3\r\n:1\r\n:2\r\n:3\r\n"[..],
        b"~3\r\n",
        b">3\r\n",
        b"%3\r\n",
        b"|3\r\n",
    ] {
        check_error(
            wire,
            &limits,
            ProtocolErrorKind::LimitExceeded,
            "aggregate length of at most 2, found 3",
        );
    }
    // The default, 2^32 - 1, is a limit on the header, not a reservation.
    let limits = Limits::default();
    assert_eq!(decode(b"*4294967295\r\n", &limits).unwrap(), None);
    check_error(
        b"*4294967296\r\n",
        &limits,
        ProtocolErrorKind::LimitExceeded,
        "aggregate length of at most 4294967295, found 4294967296",
    );
}

#[test]
fn line_length_limit() {
    let limits = Limits {
        max_line_len: 5,
        ..Limits::default()
    };
    let (v, _) = decode(b"+hello\r\n", &limits).unwrap().unwrap();
    assert_eq!(v, simple("hello"));
    for wire in [
        &b"+hello!\r\n"[..],
        b"-ERR xx\r\n",
        b"(123456\r\n",
        b",1.2345\r\n",
        b"+hello!",
    ] {
        check_error(
            wire,
            &limits,
            ProtocolErrorKind::LimitExceeded,
            "a line of at most 5 bytes ending in CRLF",
        );
    }
    // Length and integer lines are capped at 20 characters whatever the
    // limit says (a peer cannot stream digits forever); a longer one is
    // malformed, as no i64 is that long.
    check_error(
        b":000000000000000000001\r\n",
        &Limits::default(),
        ProtocolErrorKind::Malformed,
        "a line of at most 20 bytes",
    );
    check_error(
        b"$000000000000000000000000",
        &Limits::default(),
        ProtocolErrorKind::Malformed,
        "a line of at most 20 bytes",
    );
    // Twenty characters is enough for every i64.
    let (v, _) = decode(b":-9223372036854775808\r\n", &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(v, Value::Integer(i64::MIN));
}

#[test]
fn the_default_line_limit_is_one_mebibyte() {
    let limits = Limits::default();
    let mut ok = b"+".to_vec();
    ok.extend(std::iter::repeat(b'a').take(1024 * 1024));
    ok.extend_from_slice(b"\r\n");
    let (v, used) = decode(&ok, &limits).unwrap().unwrap();
    assert_eq!(used, ok.len());
    assert_eq!(v.as_bytes().map(<[u8]>::len), Some(1024 * 1024));

    // A line that never ends is refused once it passes the limit, even when
    // it arrives in small pieces.
    let mut decoder = Decoder::new(limits);
    let mut pending = b"+".to_vec();
    let piece = vec![b'x'; 4096];
    let mut fed = 0usize;
    let err = loop {
        pending.extend_from_slice(&piece);
        fed += piece.len();
        match decoder.feed(&pending) {
            Ok((used, None)) => {
                pending.drain(..used);
            }
            Ok((_, Some(v))) => panic!("an endless line decoded to {:?}", v),
            Err(e) => break e,
        }
        assert!(fed < 2 * 1024 * 1024, "no error after {} bytes", fed);
    };
    assert_eq!(err.kind(), ProtocolErrorKind::LimitExceeded);
    assert!(fed <= 1024 * 1024 + 4096, "{}", fed);
}

#[test]
fn hostile_lengths_cost_almost_nothing() {
    let limits = Limits::default();
    for header in [
        &b"*4294967295\r\n"[..],
        b"%4294967295\r\n",
        b"~4294967295\r\n",
        b"$536870912\r\n",
        b"*2147483648\r\n",
        b"*3\r\n*4294967295\r\n*4294967295\r\n",
    ] {
        let mut decoder = Decoder::new(limits.clone());
        let (used, reply) = decoder.feed(header).unwrap();
        assert_eq!(reply, None);
        assert!(
            decoder.held_bytes() < 1024,
            "{:?} holds {} bytes",
            String::from_utf8_lossy(header),
            decoder.held_bytes()
        );
        assert!(used <= header.len());
    }
    // Over the limit: an error from the header alone, before any payload.
    for header in [&b"$9999999999\r\n"[..], b"*99999999999999999999\r\n"] {
        let e = decode(header, &limits).unwrap_err();
        assert_eq!(e.kind(), ProtocolErrorKind::LimitExceeded, "{}", e);
    }
    // 20 digits that overflow u64 are malformed, not wrapped.
    let e = decode(b"*99999999999999999999\r\n", &limits).unwrap_err();
    assert!(e.to_string().contains("found"), "{}", e);
}

#[test]
fn nested_huge_headers_reserve_a_bounded_amount() {
    // A chain of headers each announcing a million elements, followed by
    // 64 KiB of other bytes: every level could reserve from the same bytes.
    let mut wire = b"*1000000\r\n".repeat(1000);
    wire.extend(std::iter::repeat(b"_\r\n").take(64 * 1024 / 3).flatten());
    let mut decoder = Decoder::new(Limits::default());
    let (_, reply) = decoder.feed(&wire).unwrap();
    assert!(reply.is_none());
    let held = decoder.held_bytes();
    assert!(
        held <= 48 * wire.len() + 64 * 1024,
        "{} bytes held for {} bytes of input",
        held,
        wire.len()
    );
}

#[test]
fn a_million_elements_in_4k_pieces_is_linear() {
    // *1000000 of `:<i>\r\n`, fed 4 KiB at a time: the decoder consumes
    // every complete element, so the bytes handed to it over the whole reply
    // stay close to the reply's size (a rescanning decoder would be fed
    // O(n^2 / 4096) bytes).
    let n = 1_000_000usize;
    let mut wire = format!("*{}\r\n", n).into_bytes();
    for i in 0..n {
        wire.extend_from_slice(format!(":{}\r\n", i % 1000).as_bytes());
    }
    let mut decoder = Decoder::new(Limits::default());
    let mut pending: Vec<u8> = Vec::new();
    let mut fed_total = 0usize;
    let mut reply = None;
    for piece in wire.chunks(4096) {
        pending.extend_from_slice(piece);
        fed_total += pending.len();
        let (used, r) = decoder.feed(&pending).unwrap();
        pending.drain(..used);
        assert!(
            pending.len() < 32,
            "{} bytes left unconsumed",
            pending.len()
        );
        if r.is_some() {
            reply = r;
        }
    }
    assert!(
        fed_total < 3 * wire.len(),
        "fed {} bytes for a {}-byte reply",
        fed_total,
        wire.len()
    );
    let items = match reply {
        Some(Value::Array(items)) => items,
        other => panic!("{:?}", other.map(|v| v.kind())),
    };
    assert_eq!(items.len(), n);
    assert_eq!(items[999_999], Value::Integer(999));
}

#[test]
fn a_large_bulk_in_small_pieces_holds_nothing_until_complete() {
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = Vec::new();
    write_bulk(&mut wire, &payload);
    let mut decoder = Decoder::new(Limits::default());
    let mut pending: Vec<u8> = Vec::new();
    let mut got = None;
    for piece in wire.chunks(1000) {
        pending.extend_from_slice(piece);
        let (used, r) = decoder.feed(&pending).unwrap();
        pending.drain(..used);
        if r.is_some() {
            got = r;
        } else {
            // The payload waits in the caller's buffer, not in a copy.
            assert_eq!(decoder.held_bytes(), 0);
        }
    }
    assert_eq!(got, Some(Value::BulkString(payload)));
}

#[test]
fn several_replies_in_one_buffer() {
    let wire = b"+OK\r\n:1\r\n$-1\r\n*2\r\n+a\r\n+b\r\n>2\r\n+p\r\n:1\r\n";
    let replies = feed_pieces(&[wire], &Limits::default()).unwrap();
    assert_eq!(replies.len(), 5);
    assert_eq!(replies[2], Value::Nil);
    for split in 0..wire.len() {
        let again = feed_pieces(&[&wire[..split], &wire[split..]], &Limits::default()).unwrap();
        assert_eq!(again, replies);
    }
}

// ---------------------------------------------------------------- encoder

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(&mut out, args);
    out
}

#[test]
fn encoder_exact_bytes() {
    assert_eq!(command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(
        command(&[b"SET", b"", b""]),
        b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n"
    );
    assert_eq!(
        command(&[b"SET", b"k\r\n", b"\x00\r\n\xff"]),
        b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$4\r\n\x00\r\n\xff\r\n"
    );
    assert_eq!(command(&[]), b"*0\r\n");
    // Appends: what was in the buffer stays.
    let mut out = b"xyz".to_vec();
    encode_command(&mut out, &["GET", "a"]);
    assert_eq!(out, b"xyz*2\r\n$3\r\nGET\r\n$1\r\na\r\n");
}

#[test]
fn numeric_arguments() {
    let c = respline::cmd("X")
        .arg(i64::MIN)
        .arg(i64::MAX)
        .arg(u64::MAX)
        .arg(0u8)
        .arg(-1i8)
        .arg(i128::MIN)
        .arg(u128::MAX)
        .arg(usize::MAX)
        .arg(-32768i16);
    let args: Vec<Vec<u8>> = c.iter().map(<[u8]>::to_vec).collect();
    let expected: Vec<Vec<u8>> = [
        "X",
        "-9223372036854775808",
        "9223372036854775807",
        "18446744073709551615",
        "0",
        "-1",
        "-170141183460469231731687303715884105728",
        "340282366920938463463374607431768211455",
        &usize::MAX.to_string(),
        "-32768",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    assert_eq!(args, expected);
    assert_eq!(
        c.to_bytes()[..39],
        b"*10\r\n$1\r\nX\r\n$20\r\n-9223372036854775808\r\n"[..]
    );
}

#[test]
fn float_arguments_parse_back_to_the_same_number() {
    let cases: [(f64, &str); 8] = [
        (1.5, "1.5"),
        (-0.0, "-0.0"),
        (0.1, "0.1"),
        (1e300, "1e300"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (3.0, "3.0"),
        (5e-324, "5e-324"),
    ];
    for (f, text) in cases {
        let c = respline::cmd("ZADD").arg(f);
        let arg = c.iter().nth(1).unwrap().to_vec();
        assert_eq!(String::from_utf8(arg.clone()).unwrap(), text);
        let back: f64 = text.parse().unwrap();
        assert_eq!(back.to_bits(), f.to_bits());
    }
    for f in [
        0.1f64,
        1.0 / 3.0,
        f64::MAX,
        f64::MIN_POSITIVE,
        -123456.789e-20,
    ] {
        let c = respline::cmd("X").arg(f);
        let text = String::from_utf8(c.iter().nth(1).unwrap().to_vec()).unwrap();
        assert_eq!(text.parse::<f64>().unwrap(), f, "{}", text);
    }
    let c = respline::cmd("X").arg(0.1f32).arg(f64::NAN);
    let args: Vec<&[u8]> = c.iter().collect();
    assert_eq!(args[1], b"0.1");
    assert_eq!(args[2], b"nan");
}

#[test]
fn ten_thousand_arguments() {
    let args: Vec<String> = (0..10_000).map(|i| format!("arg{}", i)).collect();
    let out = command(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
    let mut expected = b"*10000\r\n".to_vec();
    for a in &args {
        expected.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    assert_eq!(out, expected);
    // The encoded command decodes back to the same arguments.
    let (v, used) = decode(&out, &Limits::default()).unwrap().unwrap();
    assert_eq!(used, out.len());
    let back: Vec<Vec<u8>> = match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::BulkString(b) => b,
                other => panic!("{:?}", other),
            })
            .collect(),
        other => panic!("{:?}", other),
    };
    assert_eq!(back.len(), 10_000);
    assert_eq!(back[9_999], b"arg9999");
}

#[test]
fn every_command_form_encodes_alike() {
    let expected = b"*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$2\r\n\r\n\r\n$2\r\n42\r\n".to_vec();
    let by_builder = respline::cmd("HSET")
        .arg("h")
        .arg(&b"\r\n"[..])
        .arg(42)
        .to_bytes();
    let mut by_tuple = Vec::new();
    ("HSET", "h", &b"\r\n"[..], 42i64).write_command(&mut by_tuple);
    let mut by_array = Vec::new();
    [&b"HSET"[..], b"h", b"\r\n", b"42"].write_command(&mut by_array);
    let mut by_vec = Vec::new();
    vec!["HSET".to_string(), "h".into(), "\r\n".into(), "42".into()].write_command(&mut by_vec);
    let by_encode = command(&[b"HSET", b"h", b"\r\n", b"42"]);
    for got in [by_builder, by_tuple, by_array, by_vec, by_encode] {
        assert_eq!(got, expected);
    }
}

#[test]
fn encode_value_resp3_and_resp2_forms() {
    let cases: Vec<(Value, &[u8], &[u8])> = vec![
        (Value::Nil, b"_\r\n", b"$-1\r\n"),
        (simple("OK"), b"+OK\r\n", b"+OK\r\n"),
        (Value::Error("ERR x".into()), b"-ERR x\r\n", b"-ERR x\r\n"),
        (
            Value::Integer(i64::MIN),
            b":-9223372036854775808\r\n",
            b":-9223372036854775808\r\n",
        ),
        (bulk(b"a\r\n"), b"$3\r\na\r\n\r\n", b"$3\r\na\r\n\r\n"),
        (Value::Double(1.5), b",1.5\r\n", b"$3\r\n1.5\r\n"),
        (
            Value::Double(f64::NEG_INFINITY),
            b",-inf\r\n",
            b"$4\r\n-inf\r\n",
        ),
        (Value::Boolean(true), b"#t\r\n", b":1\r\n"),
        (Value::Boolean(false), b"#f\r\n", b":0\r\n"),
        (
            Value::BigNumber("-123".into()),
            b"(-123\r\n",
            b"$4\r\n-123\r\n",
        ),
        (
            Value::BlobError(b"ERR b".to_vec()),
            b"!5\r\nERR b\r\n",
            b"-ERR b\r\n",
        ),
        (
            Value::Verbatim {
                format: *b"txt",
                text: b"hi".to_vec(),
            },
            b"=6\r\ntxt:hi\r\n",
            b"$2\r\nhi\r\n",
        ),
        (
            Value::Map(vec![(simple("a"), Value::Integer(1))]),
            b"%1\r\n+a\r\n:1\r\n",
            b"*2\r\n+a\r\n:1\r\n",
        ),
        (
            Value::Set(vec![Value::Integer(1)]),
            b"~1\r\n:1\r\n",
            b"*1\r\n:1\r\n",
        ),
        (
            Value::Push(vec![Value::Integer(1)]),
            b">1\r\n:1\r\n",
            b"*1\r\n:1\r\n",
        ),
        (Value::Array(vec![]), b"*0\r\n", b"*0\r\n"),
        (
            Value::Attribute {
                attributes: vec![(simple("k"), Value::Nil)],
                value: Box::new(Value::Integer(2)),
            },
            b"|1\r\n+k\r\n_\r\n:2\r\n",
            b":2\r\n",
        ),
        // CR and LF cannot travel in a line: they become spaces.
        (simple("a\r\nb"), b"+a  b\r\n", b"+a  b\r\n"),
    ];
    for (value, resp3, resp2) in cases {
        for (protocol, expected) in [(Protocol::Resp3, resp3), (Protocol::Resp2, resp2)] {
            let mut out = b"..".to_vec();
            encode_value(&mut out, &value, protocol);
            assert_eq!(
                &out[2..],
                expected,
                "{:?} in {:?}: {:?}",
                value,
                protocol,
                String::from_utf8_lossy(&out)
            );
            assert_eq!(encoded_len(&value, protocol), expected.len());
        }
        // What RESP3 encodes, the decoder reads back (doubles included).
        if !matches!(value, Value::SimpleString(ref s) if s.contains('\r')) {
            let (back, used) = decode(resp3, &Limits::default()).unwrap().unwrap();
            assert_eq!((back, used), (value, resp3.len()));
        }
    }
}

#[test]
fn chains_100_000_deep_of_every_type_fail_on_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            for link in [
                &b"*1\r\n"[..],
                b"~1\r\n",
                b">1\r\n",
                b"%1\r\n+k\r\n",
                b"|1\r\n+k\r\n:1\r\n",
                b"*?\r\n",
                b"*1\r\n%1\r\n_\r\n|1\r\n+a\r\n:1\r\n~1\r\n",
            ] {
                let mut wire = link.repeat(100_000);
                wire.extend_from_slice(b":1\r\n");
                let e = decode(&wire, &Limits::default()).unwrap_err();
                assert_eq!(e.kind(), ProtocolErrorKind::LimitExceeded);
                // The same, fed in pieces.
                let pieces: Vec<&[u8]> = wire.chunks(4096).collect();
                assert_eq!(feed_pieces(&pieces, &Limits::default()).unwrap_err(), e);
            }
        })
        .unwrap();
    handle
        .join()
        .expect("a deep chain overflowed a 256 KiB stack");
}

#[test]
fn bulk_headers_at_every_digit_boundary() {
    for len in [
        0usize,
        1,
        9,
        10,
        11,
        99,
        100,
        101,
        999,
        1000,
        65535,
        65536,
        1 << 20,
    ] {
        let payload = vec![b'\r'; len];
        let mut out = b"prefix".to_vec();
        write_bulk(&mut out, &payload);
        let mut expected = b"prefix".to_vec();
        expected.extend_from_slice(format!("${}\r\n", len).as_bytes());
        expected.extend_from_slice(&payload);
        expected.extend_from_slice(b"\r\n");
        assert!(out == expected, "length {}", len);
        let (v, used) = decode(&out[6..], &Limits::default()).unwrap().unwrap();
        assert_eq!((v, used), (Value::BulkString(payload), out.len() - 6));
    }
}
