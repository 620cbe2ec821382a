//! The one integer parser: every decimal number respline reads (reply
//! headers and integers, numbers inside string replies, URL ports and
//! database numbers) goes through [`parse`], in one of three forms.
//!
//! Strict in every form: ASCII digits only, no spaces, never empty, and
//! overflow-checked (hiredis's `string2ll` is the model).

/// Which spelling of an integer is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// Digits only, leading zeros allowed: lengths, counts, ports.
    Digits,
    /// An optional `+` or `-`, then digits: RESP's `:` integers and big
    /// numbers.
    Signed,
    /// What Redis itself reads as an integer (`INCR` on a string): an
    /// optional `-`, no leading zero, no `-0`.
    Canonical,
}

/// A parsed integer: its sign and magnitude, to be narrowed to a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Int {
    negative: bool,
    magnitude: u128,
}

/// Parses `text` as a whole, in `form`; `None` if it is anything else or
/// beyond 128 bits.
#[inline]
pub(crate) fn parse(text: &[u8], form: Form) -> Option<Int> {
    let (negative, digits) = match (text.first(), form) {
        (Some(b'-'), Form::Signed | Form::Canonical) => (true, &text[1..]),
        (Some(b'+'), Form::Signed) => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    if form == Form::Canonical && digits[0] == b'0' && (negative || digits.len() > 1) {
        return None;
    }
    Some(Int {
        negative,
        magnitude: magnitude(digits)?,
    })
}

/// The value of a string of ASCII digits, overflow-checked.
#[inline]
fn magnitude(digits: &[u8]) -> Option<u128> {
    // Nineteen digits always fit a u64: the common case costs no 128-bit
    // arithmetic and no overflow check.
    if digits.len() <= 19 {
        let mut m: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            m = m * 10 + u64::from(d - b'0');
        }
        return Some(u128::from(m));
    }
    let mut m: u128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        m = m.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
    }
    Some(m)
}

/// `text` as an i64 in `form`.
#[inline]
pub(crate) fn parse_i64(text: &[u8], form: Form) -> Option<i64> {
    parse(text, form)?.narrow()
}

/// `text` as a u64 of digits only.
#[inline]
pub(crate) fn parse_u64(text: &[u8]) -> Option<u64> {
    parse(text, Form::Digits)?.narrow()
}

impl Int {
    /// A number from its sign and magnitude.
    pub(crate) fn new(negative: bool, magnitude: u128) -> Int {
        Int {
            negative,
            magnitude,
        }
    }

    /// The number as `T`, if it fits.
    #[inline]
    pub(crate) fn narrow<T: TryFrom<u128> + TryFrom<i128>>(self) -> Option<T> {
        if !self.negative {
            return T::try_from(self.magnitude).ok();
        }
        let value = if self.magnitude == 1 << 127 {
            i128::MIN
        } else {
            -i128::try_from(self.magnitude).ok()?
        };
        T::try_from(value).ok()
    }

    /// True if the text was all digits but too long for any integer type:
    /// only [`parse`] returning `None` for a digit string says that.
    pub(crate) fn is_digit_string(text: &[u8]) -> bool {
        !text.is_empty() && text.iter().all(u8::is_ascii_digit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_at_its_edges() {
        assert_eq!(
            parse_i64(b"-9223372036854775808", Form::Signed),
            Some(i64::MIN)
        );
        assert_eq!(
            parse_i64(b"9223372036854775807", Form::Canonical),
            Some(i64::MAX)
        );
        assert_eq!(parse_i64(b"9223372036854775808", Form::Signed), None);
        assert_eq!(parse_i64(b"-9223372036854775809", Form::Signed), None);
        assert_eq!(parse_i64(b"+7", Form::Signed), Some(7));
        assert_eq!(parse_i64(b"+7", Form::Canonical), None);
        assert_eq!(parse_i64(b"007", Form::Signed), Some(7));
        assert_eq!(parse_i64(b"007", Form::Canonical), None);
        assert_eq!(parse_i64(b"-0", Form::Canonical), None);
        assert_eq!(parse_i64(b"0", Form::Canonical), Some(0));
        assert_eq!(parse_i64(b"-1", Form::Digits), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        for bad in [
            &b""[..],
            b"-",
            b"+",
            b" 1",
            b"1 ",
            b"1e3",
            b"1.5",
            b"--1",
            b"0x10",
            b"\xd9\xa1",
        ] {
            assert_eq!(parse(bad, Form::Signed), None, "{:?}", bad);
        }
        let wide = parse(b"-170141183460469231731687303715884105728", Form::Signed).unwrap();
        assert_eq!(wide.narrow::<i128>(), Some(i128::MIN));
        assert_eq!(wide.narrow::<i64>(), None);
        assert_eq!(parse(&[b'9'; 40], Form::Digits), None);
        assert!(Int::is_digit_string(&[b'9'; 40]));
    }
}
