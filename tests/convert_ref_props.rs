//! Property tests for borrowed conversions: converting the view of a
//! `Value` (`Value::view`) gives exactly what converting the `Value` gives,
//! for every target type, failures included (the same variant, fields and
//! message); and replies streamed one by one through `from_reply_stream`
//! convert as the collected replies do through `from_replies`. (The same
//! properties over views of wire bytes are unit tests of src/convert.rs.)

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use respline::{FromValue, Result, ServerError, Value};

mod values {
    use proptest::prelude::*;
    use respline::Value;
    include!("convert_ref_props/values.rs");
}

use values::{agree, value};

/// `T::from_value_ref(v.view())` gives what `T::from_value(v)` gives.
fn check<T: FromValue + Debug>(
    v: &Value,
    same: impl Fn(&T, &T) -> bool,
) -> Result<(), TestCaseError> {
    let owned = T::from_value(v.clone());
    let viewed = T::from_value_ref(v.view());
    prop_assert!(
        agree(&owned, &viewed, same),
        "{}: {:?}\nviewed: {:?}\nowned:  {:?}",
        std::any::type_name::<T>(),
        v,
        viewed,
        owned
    );
    Ok(())
}

fn eq<T: PartialEq>(a: &T, b: &T) -> bool {
    a == b
}

fn same_bits(a: &f64, b: &f64) -> bool {
    a.to_bits() == b.to_bits()
}

/// For values holding doubles, NaN included.
fn same_debug<T: Debug>(a: &T, b: &T) -> bool {
    format!("{:?}", a) == format!("{:?}", b)
}

fn every_target(v: &Value) -> Result<(), TestCaseError> {
    check::<String>(v, eq)?;
    check::<Vec<u8>>(v, eq)?;
    check::<i64>(v, eq)?;
    check::<u8>(v, eq)?;
    check::<i128>(v, eq)?;
    check::<f64>(v, same_bits)?;
    check::<f32>(v, |a, b| a.to_bits() == b.to_bits())?;
    check::<bool>(v, eq)?;
    check::<Option<i64>>(v, eq)?;
    check::<Option<String>>(v, eq)?;
    check::<Vec<String>>(v, eq)?;
    check::<Vec<Vec<u8>>>(v, eq)?;
    check::<Vec<Option<String>>>(v, eq)?;
    check::<Vec<i64>>(v, eq)?;
    check::<HashMap<String, String>>(v, eq)?;
    check::<BTreeMap<String, i64>>(v, eq)?;
    check::<HashMap<String, Vec<String>>>(v, eq)?;
    check::<Vec<(String, String)>>(v, eq)?;
    check::<Vec<(String, Value)>>(v, same_debug)?;
    check::<HashSet<String>>(v, eq)?;
    check::<BTreeSet<i64>>(v, eq)?;
    check::<(String, i64)>(v, eq)?;
    check::<(String, Option<String>, bool)>(v, eq)?;
    check::<Option<(String, String)>>(v, eq)?;
    check::<()>(v, eq)?;
    check::<Value>(v, same_debug)?;
    check::<Vec<Value>>(v, same_debug)?;
    check::<Result<i64, ServerError>>(v, eq)?;
    check::<Result<Vec<String>, ServerError>>(v, eq)?;
    check::<Vec<Result<String, ServerError>>>(v, eq)?;
    Ok(())
}

/// Streams `replies` (their views) to `T::from_reply_stream`.
fn streamed<T: FromValue>(replies: &[Value]) -> Result<T> {
    T::from_reply_stream(replies.len(), &mut |each| {
        for (i, v) in replies.iter().enumerate() {
            each(i, v.view());
        }
        Ok(())
    })
}

fn check_stream<T: FromValue + Debug>(
    replies: &[Value],
    same: impl Fn(&T, &T) -> bool,
) -> Result<(), TestCaseError> {
    let collected = T::from_replies(replies.to_vec());
    let streamed = streamed::<T>(replies);
    prop_assert!(
        agree(&collected, &streamed, same),
        "{}: {:?}\nstreamed:  {:?}\ncollected: {:?}",
        std::any::type_name::<T>(),
        replies,
        streamed,
        collected
    );
    Ok(())
}

fn every_stream_target(replies: &[Value]) -> Result<(), TestCaseError> {
    check_stream::<()>(replies, eq)?;
    check_stream::<Vec<i64>>(replies, eq)?;
    check_stream::<Vec<String>>(replies, eq)?;
    check_stream::<Vec<Value>>(replies, same_debug)?;
    check_stream::<Vec<Result<i64, ServerError>>>(replies, eq)?;
    check_stream::<(String,)>(replies, eq)?;
    check_stream::<(String, i64)>(replies, eq)?;
    check_stream::<(i64, Option<String>, ())>(replies, eq)?;
    check_stream::<(Result<i64, ServerError>, Vec<String>)>(replies, eq)?;
    check_stream::<Result<(i64, i64), ServerError>>(replies, eq)?;
    check_stream::<Result<Vec<String>, ServerError>>(replies, eq)?;
    check_stream::<Value>(replies, same_debug)?;
    check_stream::<Vec<(String, String)>>(replies, eq)?;
    check_stream::<Option<i64>>(replies, eq)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn views_convert_as_values_do(v in value()) {
        every_target(&v)?;
    }

    #[test]
    fn streamed_replies_convert_as_collected_ones_do(
        replies in prop::collection::vec(value(), 0..5)
    ) {
        every_stream_target(&replies)?;
    }
}

#[test]
fn a_failing_read_is_the_error_whatever_the_type() {
    fn failing<T: FromValue + Debug>() -> String {
        let reply = Value::Error("ERR first".into());
        let got = T::from_reply_stream(3, &mut |each| {
            each(0, reply.view());
            Err(respline::Error::Timeout { operation: "read" })
        });
        format!("{:?}", got.unwrap_err())
    }
    let expected = format!("{:?}", respline::Error::Timeout { operation: "read" });
    assert_eq!(failing::<()>(), expected);
    assert_eq!(failing::<Vec<i64>>(), expected);
    assert_eq!(failing::<(i64, i64, i64)>(), expected);
    assert_eq!(failing::<Result<(i64, i64, i64), ServerError>>(), expected);
    assert_eq!(failing::<Result<Value, ServerError>>(), expected);
    assert_eq!(failing::<Value>(), expected);
}
