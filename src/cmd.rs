//! Commands: the [`cmd`] builder, the [`ToArg`] conversions for arguments,
//! and [`ToCommand`], which lets a `Cmd` or a plain array of arguments be
//! sent.

use std::fmt;

use crate::resp::number::parse_u64;
use crate::resp::{header_len, write_bulk, write_header, NumBuf};

/// Starts a command with its name.
///
/// ```
/// let c = respline::cmd("SET").arg("counter").arg(42).arg("EX").arg(60);
/// assert_eq!(c.len(), 5);
/// assert_eq!(c.to_bytes(), b"*5\r\n$3\r\nSET\r\n$7\r\ncounter\r\n$2\r\n42\r\n$2\r\nEX\r\n$2\r\n60\r\n");
/// ```
#[must_use = "a command does nothing until it is sent: conn.query(cmd), conn.execute(cmd) or pipe.cmd(cmd)"]
pub fn cmd(name: &str) -> Cmd {
    // One allocation that holds a typical command whole; larger ones grow.
    let mut c = Cmd {
        args: Vec::with_capacity(64 + name.len()),
        count: 0,
    };
    c.push_arg(name);
    c
}

/// A command under construction: its arguments are encoded as they are
/// added, so sending it is one copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a command does nothing until it is sent: conn.query(cmd), conn.execute(cmd) or pipe.cmd(cmd)"]
pub struct Cmd {
    /// The arguments, each already a RESP bulk string.
    args: Vec<u8>,
    count: usize,
}

impl Cmd {
    /// An empty command; add its name with [`arg`](Cmd::arg).
    pub fn new() -> Cmd {
        Cmd::default()
    }

    /// Adds one argument.
    #[allow(clippy::should_implement_trait)]
    pub fn arg<A: ToArg>(mut self, arg: A) -> Cmd {
        self.push_arg(arg);
        self
    }

    /// Adds one argument through a mutable reference, for loops.
    ///
    /// ```
    /// let mut c = respline::cmd("DEL");
    /// for key in ["a", "b", "c"] {
    ///     c.push_arg(key);
    /// }
    /// assert_eq!(c.len(), 4);
    /// ```
    pub fn push_arg<A: ToArg>(&mut self, arg: A) -> &mut Cmd {
        write_arg(&arg, &mut self.args);
        self.count += 1;
        self
    }

    /// Adds every argument of an iterator.
    ///
    /// ```
    /// let c = respline::cmd("MSET").args([("k1", 1), ("k2", 2)].iter().flat_map(|(k, v)| [k.to_string(), v.to_string()]));
    /// assert_eq!(c.len(), 5);
    /// ```
    pub fn args<I>(mut self, args: I) -> Cmd
    where
        I: IntoIterator,
        I::Item: ToArg,
    {
        for a in args {
            self.push_arg(a);
        }
        self
    }

    /// The number of arguments, the name included.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if no argument (not even a name) was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The command's name (its first argument), upper-cased, if it is text.
    pub fn name(&self) -> Option<String> {
        self.iter()
            .next()
            .and_then(|a| std::str::from_utf8(a).ok())
            .map(str::to_ascii_uppercase)
    }

    /// The arguments, as the bytes that will be sent.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        ArgIter { rest: &self.args }
    }

    /// The whole command as RESP bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_command(&mut out);
        out
    }
}

/// Walks the encoded arguments of a `Cmd` (which `Cmd` itself wrote, so the
/// framing is known to be valid).
struct ArgIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ArgIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let cr = self.rest.iter().position(|&b| b == b'\r')?;
        let len = usize::try_from(parse_u64(self.rest.get(1..cr)?)?).ok()?;
        let arg = self.rest.get(cr + 2..cr + 2 + len)?;
        self.rest = self.rest.get(cr + 4 + len..)?;
        Some(arg)
    }
}

/// Something that can be sent as one command: a [`Cmd`], an array, slice
/// or `Vec` of arguments, or a tuple of up to 12 arguments of mixed types.
///
/// Arrays, slices and tuples are encoded straight into the pipeline's (or
/// connection's) buffer, with no allocation of their own: the fastest way to
/// queue many commands.
///
/// The trait is sealed: every implementation writes exactly one command, so
/// the count of replies owed is always right. For a command of your own
/// shape, build a [`Cmd`].
///
/// ```
/// use respline::ToCommand;
///
/// let mut out = Vec::new();
/// ["GET", "name"].write_command(&mut out);
/// respline::cmd("GET").arg("name").write_command(&mut out);
/// assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$4\r\nname\r\n*2\r\n$3\r\nGET\r\n$4\r\nname\r\n");
///
/// out.clear();
/// ("SET", "n", 42).write_command(&mut out);
/// assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nn\r\n$2\r\n42\r\n");
/// ```
pub trait ToCommand: sealed::Sealed {
    /// Appends the command as a RESP array of bulk strings.
    fn write_command(&self, out: &mut Vec<u8>);
}

pub(crate) mod sealed {
    /// Only respline's own types write commands.
    pub trait Sealed {}
}

impl sealed::Sealed for Cmd {}
impl<T: ToArg> sealed::Sealed for [T] {}
impl<T: ToArg, const N: usize> sealed::Sealed for [T; N] {}
impl<T: ToArg> sealed::Sealed for Vec<T> {}
impl<C: ToCommand + ?Sized> sealed::Sealed for &C {}

impl ToCommand for Cmd {
    fn write_command(&self, out: &mut Vec<u8>) {
        out.reserve(header_len(self.count) + self.args.len());
        write_header(out, b'*', self.count);
        out.extend_from_slice(&self.args);
    }
}

impl<T: ToArg> ToCommand for [T] {
    fn write_command(&self, out: &mut Vec<u8>) {
        write_header(out, b'*', self.len());
        for a in self {
            write_arg(a, out);
        }
    }
}

impl<T: ToArg, const N: usize> ToCommand for [T; N] {
    fn write_command(&self, out: &mut Vec<u8>) {
        self[..].write_command(out)
    }
}

impl<T: ToArg> ToCommand for Vec<T> {
    fn write_command(&self, out: &mut Vec<u8>) {
        self[..].write_command(out)
    }
}

macro_rules! tuple_command {
    ($count:expr; $($name:ident)+) => {
        impl<$($name: ToArg),+> sealed::Sealed for ($($name,)+) {}

        impl<$($name: ToArg),+> ToCommand for ($($name,)+) {
            #[allow(non_snake_case)]
            fn write_command(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                write_header(out, b'*', $count);
                $(write_arg($name, out);)+
            }
        }
    };
}

tuple_command!(1; A);
tuple_command!(2; A B);
tuple_command!(3; A B C);
tuple_command!(4; A B C D);
tuple_command!(5; A B C D E);
tuple_command!(6; A B C D E F);
tuple_command!(7; A B C D E F G);
tuple_command!(8; A B C D E F G H);
tuple_command!(9; A B C D E F G H I);
tuple_command!(10; A B C D E F G H I J);
tuple_command!(11; A B C D E F G H I J K);
tuple_command!(12; A B C D E F G H I J K L);

impl<C: ToCommand + ?Sized> ToCommand for &C {
    fn write_command(&self, out: &mut Vec<u8>) {
        (**self).write_command(out)
    }
}

/// A value that can be one argument of a command: strings, bytes, integers
/// and floats, and types of your own.
///
/// There is no implementation for `bool`: Redis has no boolean argument, and
/// whether `true` should be `1`, `true` or `yes` depends on the command.
/// Floats are written in a form Redis parses back to the same number.
///
/// An implementation cannot break a command's framing: it gets an
/// [`ArgWriter`] that writes exactly one argument and must hand back the
/// [`ArgWritten`] that only the writer makes.
///
/// ```
/// use respline::{ArgWriter, ArgWritten, ToArg};
///
/// struct UserId(u64);
///
/// impl ToArg for UserId {
///     fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
///         out.display(format_args!("user:{}", self.0))
///     }
/// }
///
/// let c = respline::cmd("GET").arg(UserId(42)).arg(1.5f64).arg(&b"bytes\x00"[..]).arg(u64::MAX);
/// let args: Vec<&[u8]> = c.iter().collect();
/// assert_eq!(args, [&b"GET"[..], b"user:42", b"1.5", b"bytes\x00", b"18446744073709551615"]);
/// ```
pub trait ToArg {
    /// Writes this value as one argument with `out`.
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten;
}

/// Writes one command argument; every method writes the whole argument and
/// consumes the writer. Given to [`ToArg::write_arg`].
#[derive(Debug)]
#[must_use = "an argument writer must write the argument"]
pub struct ArgWriter<'a> {
    out: &'a mut Vec<u8>,
}

/// Proof that an [`ArgWriter`] wrote its argument; only the writer can make
/// one.
#[derive(Debug)]
pub struct ArgWritten(());

impl ArgWriter<'_> {
    /// The argument is these bytes (binary-safe).
    pub fn bytes(self, bytes: &[u8]) -> ArgWritten {
        write_bulk(self.out, bytes);
        ArgWritten(())
    }

    /// The argument is this text.
    pub fn str(self, text: &str) -> ArgWritten {
        self.bytes(text.as_bytes())
    }

    /// The argument is `value` formatted with `Display`.
    pub fn display(self, value: impl fmt::Display) -> ArgWritten {
        use std::io::Write;
        let mut text = NumBuf::new();
        if fmt::Write::write_fmt(&mut text, format_args!("{}", value)).is_ok() {
            return self.bytes(text.written());
        }
        // Longer than a number: format on the heap.
        let mut owned = Vec::new();
        let _ = write!(owned, "{}", value);
        self.bytes(&owned)
    }
}

/// Appends `arg` to `out` as one bulk string.
#[inline]
pub(crate) fn write_arg<A: ToArg + ?Sized>(arg: &A, out: &mut Vec<u8>) {
    let _written: ArgWritten = arg.write_arg(ArgWriter { out });
}

impl<T: ToArg + ?Sized> ToArg for &T {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        (**self).write_arg(out)
    }
}

impl ToArg for str {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(self.as_bytes())
    }
}

impl ToArg for String {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(self.as_bytes())
    }
}

impl ToArg for [u8] {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(self)
    }
}

impl<const N: usize> ToArg for [u8; N] {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(self)
    }
}

impl ToArg for Vec<u8> {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(self)
    }
}

impl ToArg for std::borrow::Cow<'_, str> {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(self.as_bytes())
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl ToArg for $t {
            #[allow(unused_comparisons)]
            fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
                let mut buf = NumBuf::new();
                let negative = *self < 0;
                let magnitude = (*self as i128).unsigned_abs();
                out.bytes(buf.format_u128(magnitude, negative))
            }
        }
    )*};
}

int_arg!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl ToArg for i128 {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(NumBuf::new().format_u128(self.unsigned_abs(), *self < 0))
    }
}

impl ToArg for u128 {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(NumBuf::new().format_u128(*self, false))
    }
}

impl ToArg for f64 {
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        out.bytes(NumBuf::new().format_f64(*self))
    }
}

impl ToArg for f32 {
    /// An `f32` is written with the shortest digits that read back as the
    /// same `f32` (so `0.1f32` is sent as `0.1`, not `0.10000000149011612`).
    fn write_arg(&self, out: ArgWriter<'_>) -> ArgWritten {
        use std::fmt::Write;
        if self.is_nan() {
            return out.bytes(b"nan");
        }
        let mut buf = NumBuf::new();
        // Any f32's `{:?}` form fits the buffer.
        let _ = write!(buf, "{:?}", self);
        out.bytes(buf.written())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Cmd) -> Vec<Vec<u8>> {
        c.iter().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn integers_of_every_width() {
        let c = cmd("X")
            .arg(i8::MIN)
            .arg(u8::MAX)
            .arg(i64::MIN)
            .arg(u64::MAX)
            .arg(i128::MIN)
            .arg(0usize);
        let got = args(&c);
        assert_eq!(got[1], b"-128");
        assert_eq!(got[2], b"255");
        assert_eq!(got[3], b"-9223372036854775808");
        assert_eq!(got[4], b"18446744073709551615");
        assert_eq!(got[5], b"-170141183460469231731687303715884105728");
        assert_eq!(got[6], b"0");
    }

    #[test]
    fn floats_read_back_the_same() {
        let c = cmd("X")
            .arg(0.1f32)
            .arg(0.1f64)
            .arg(f64::INFINITY)
            .arg(-2.5e-10f64);
        let got = args(&c);
        assert_eq!(got[1], b"0.1");
        assert_eq!(got[2], b"0.1");
        assert_eq!(got[3], b"inf");
        assert_eq!(
            std::str::from_utf8(&got[4])
                .unwrap()
                .parse::<f64>()
                .unwrap(),
            -2.5e-10
        );
    }

    #[test]
    fn name_and_iteration() {
        let c = cmd("get").arg("k\r\n");
        assert_eq!(c.name().as_deref(), Some("GET"));
        assert_eq!(args(&c), vec![b"get".to_vec(), b"k\r\n".to_vec()]);
        assert!(Cmd::new().is_empty());
    }
}
