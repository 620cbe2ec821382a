// Replies for the conversion properties: every RESP3 kind, nested, with
// error values and attributes at any depth, and many that do convert to
// the usual types (numbers as text, flat arrays of strings, maps of
// strings). Included (`include!`) by tests/convert_ref_props.rs and by the
// unit tests of src/convert.rs, each of which brings `proptest::prelude::*`
// and `Value` into scope.

/// Text a conversion reads: numbers, booleans, doubles, or anything short.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "-1", "42", "255", "256", "-0", "01", "+1", "1.5", "-2.5e3", "inf", "-inf",
            "+inf", "nan", "1e400", "", "OK", "a", "b", "k", "é", "9223372036854775808",
            "-9223372036854775808", "18446744073709551615",
        ])
        .prop_map(str::to_string),
        2 => "[a-c0-9 .é-]{0,6}",
        1 => any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ]
}

/// Text with no CR or LF, for simple strings and error lines.
pub fn line() -> impl Strategy<Value = String> {
    text().prop_map(|s| s.chars().filter(|c| *c != '\r' && *c != '\n').collect())
}

/// Bytes: mostly text, sometimes not UTF-8.
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

pub fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            0.0,
            -0.0,
            1.0,
            3.0,
            -2.0,
            1.5,
            0.1,
            255.0,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            9.223372036854776e18,
        ]),
    ]
}

pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => bytes().prop_map(Value::BulkString),
        1 => line().prop_map(|s| Value::SimpleString(s.into())),
        1 => line().prop_map(|s| Value::Error(format!("ERR {}", s))),
        1 => line().prop_map(Value::Error),
        2 => prop_oneof![any::<i64>(), -2i64..300].prop_map(Value::Integer),
        1 => double().prop_map(Value::Double),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => ("-?", "[0-9]{1,40}").prop_map(|(sign, digits)| Value::BigNumber(sign + &digits)),
        1 => bytes().prop_map(Value::BlobError),
        1 => (prop::sample::select(vec![*b"txt", *b"mkd"]), bytes())
            .prop_map(|(format, text)| Value::Verbatim { format, text }),
        2 => Just(Value::Nil),
    ]
}

/// A string value that converts to `String` and `Vec<u8>`.
pub fn string() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text().prop_map(|s| Value::BulkString(s.into_bytes())),
        1 => line().prop_map(|s| Value::SimpleString(s.into())),
    ]
}

pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 40, 6, |inner| {
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            1 => prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Set),
            1 => prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Push),
            2 => pairs.clone().prop_map(Value::Map),
            1 => (pairs, inner.clone()).prop_map(|(attributes, value)| Value::Attribute {
                attributes,
                value: Box::new(value),
            }),
            // Shapes that convert: flat arrays of strings (even or odd),
            // maps of strings, pairs.
            2 => prop::collection::vec(string(), 0..7).prop_map(Value::Array),
            2 => prop::collection::vec((string(), string()), 0..4).prop_map(Value::Map),
            1 => (string(), inner).prop_map(|(k, v)| Value::Array(vec![k, v])),
        ]
    })
}

/// The same result: equal values (by `same`), or the same error (its
/// variant, fields and message).
pub fn agree<T, E: std::fmt::Debug + std::fmt::Display>(
    a: &std::result::Result<T, E>,
    b: &std::result::Result<T, E>,
    same: impl Fn(&T, &T) -> bool,
) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => same(x, y),
        (Err(x), Err(y)) => {
            format!("{:?}", x) == format!("{:?}", y) && x.to_string() == y.to_string()
        }
        _ => false,
    }
}
