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

/// The number on the line that starts at `rest[0]` (a type byte): an
/// optional sign if `signed`, then 1 to 19 ASCII digits, then CRLF, all in
/// `rest`. Returns the sign, the magnitude and the length of the line with
/// its CRLF; `None` for anything else, including a longer number, which the
/// general path reads (or refuses) instead. Nineteen digits always fit a
/// u64, and the line is then at most 20 bytes, `MAX_NUMBER_LEN`, so this
/// accepts a subset of what `number::parse` accepts, with the same value.
#[inline(always)]
pub(crate) fn quick_number(rest: &[u8], signed: bool) -> Option<(bool, u64, usize)> {
    let mut i = 1;
    let mut negative = false;
    if signed {
        match rest.get(1) {
            Some(b'-') => {
                negative = true;
                i = 2;
            }
            Some(b'+') => i = 2,
            _ => {}
        }
    }
    let digits = i;
    let mut n: u64 = 0;
    loop {
        let d = rest.get(i)?.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if i - digits == 19 {
            return None;
        }
        n = n * 10 + u64::from(d);
        i += 1;
    }
    if i == digits || rest[i] != b'\r' || rest.get(i + 1) != Some(&b'\n') {
        return None;
    }
    Some((negative, n, i + 2))
}

/// [`quick_number`] for a length or count: the commonest, one and two
/// digits, read by their shape alone.
#[inline(always)]
pub(crate) fn quick_length(rest: &[u8]) -> Option<(u64, usize)> {
    match *rest {
        [_, a, b'\r', b'\n', ..] if a.is_ascii_digit() => Some((u64::from(a - b'0'), 4)),
        [_, a, b, b'\r', b'\n', ..] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some((u64::from(a - b'0') * 10 + u64::from(b - b'0'), 5))
        }
        _ => quick_number(rest, false).map(|(_, n, used)| (n, used)),
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

    proptest::proptest! {
        /// The quick header readers accept only a digit line of at most 19
        /// digits and CRLF, with the general parser's value.
        #[test]
        fn quick_lengths_agree_with_the_parser(
            body in proptest::collection::vec(
                proptest::sample::select(b"0123456789\r\n-+x".to_vec()), 0..24),
        ) {
            let mut line = b"$".to_vec();
            line.extend_from_slice(&body);
            let expected = line.iter().position(|&b| b == b'\r').and_then(|cr| {
                let digits = &line[1..cr];
                let ok = (1..=19).contains(&digits.len()) && line.get(cr + 1) == Some(&b'\n');
                ok.then(|| (parse_u64(digits), cr + 2))
            });
            let expected = expected.and_then(|(n, used)| n.map(|n| (n, used)));
            proptest::prop_assert_eq!(quick_length(&line), expected);
            let number = quick_number(&line, false).map(|(_, n, used)| (n, used));
            proptest::prop_assert_eq!(number, expected);
        }
    }
}
