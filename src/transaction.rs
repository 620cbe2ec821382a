//! Optimistic transactions: WATCH some keys, read them, queue the writes,
//! EXEC; try again, a bounded number of times, when a watched key changed.
//!
//! ```text
//! attempt 1..=max_attempts:
//!     WATCH keys ─▶ f(conn, pipe): reads, queues writes ─▶ MULTI .. EXEC
//!                                                             │
//!          nil EXEC (a watched key changed): pause, retry ◀───┤
//!          replies: converted and returned  ◀─────────────────┘
//! ```

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use crate::cmd::{cmd, Cmd, ToArg};
use crate::connection::{Connection, Wait};
use crate::convert::{server_error, FromValue};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::resp::Value;

/// How often [`transaction`] tries, and how long it pauses between tries.
///
/// The defaults: 5 attempts; before attempt `n` (from the second on), a
/// pause of 1 ms × 2<sup>n−2</sup>, at most 100 ms. So 1, 2, 4 and 8 ms,
/// at most 15 ms of pauses in all before giving up. The pauses are
/// deterministic (no jitter).
///
/// ```
/// use std::time::Duration;
/// use respline::WatchOptions;
///
/// let opts = WatchOptions::new().max_attempts(3).backoff(Duration::from_millis(5), Duration::from_millis(8));
/// assert_eq!(opts.delay_before(1), Duration::ZERO);
/// assert_eq!(opts.delay_before(2), Duration::from_millis(5));
/// assert_eq!(opts.delay_before(3), Duration::from_millis(8)); // 10 ms, capped
/// assert_eq!(WatchOptions::new().no_backoff().delay_before(4), Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// How many times to try, the first included; at least 1. Defaults to 5.
    pub max_attempts: u32,
    /// The pause before the second attempt; each later pause doubles.
    /// Defaults to 1 ms. Zero means no pauses.
    pub backoff_start: Duration,
    /// No pause is longer than this. Defaults to 100 ms.
    pub backoff_max: Duration,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            max_attempts: 5,
            backoff_start: Duration::from_millis(1),
            backoff_max: Duration::from_millis(100),
        }
    }
}

impl WatchOptions {
    /// The defaults: 5 attempts, pauses from 1 ms doubling up to 100 ms.
    pub fn new() -> WatchOptions {
        WatchOptions::default()
    }

    /// Sets how many times to try, the first included. 0 is refused by
    /// [`transaction`] with [`Error::Config`].
    pub fn max_attempts(mut self, attempts: u32) -> WatchOptions {
        self.max_attempts = attempts;
        self
    }

    /// Sets the pause before the second attempt (`start`, doubling for each
    /// later one) and the longest pause (`max`).
    pub fn backoff(mut self, start: Duration, max: Duration) -> WatchOptions {
        self.backoff_start = start;
        self.backoff_max = max;
        self
    }

    /// Retries at once, with no pause.
    pub fn no_backoff(self) -> WatchOptions {
        self.backoff(Duration::ZERO, Duration::ZERO)
    }

    /// The pause before attempt `attempt` (counted from 1): none before the
    /// first, then `backoff_start × 2^(attempt − 2)`, at most `backoff_max`.
    pub fn delay_before(&self, attempt: u32) -> Duration {
        if attempt < 2 {
            return Duration::ZERO;
        }
        let doublings = (attempt - 2).min(31);
        self.backoff_start
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }
}

/// Runs an optimistic transaction: `WATCH keys`, then `f`, then the
/// commands `f` queued, in `MULTI` ... `EXEC`; EXEC's replies are converted
/// to `T` (a tuple with one element per queued command, a `Vec`, `()`).
///
/// `f` gets the connection, to read the watched keys (and anything else),
/// and an empty transaction [`Pipeline`] to queue the writes in. It is
/// called once per attempt, with the pipeline cleared each time, so it must
/// decide afresh from what it reads. It should only read with the
/// connection: the writes belong in the pipeline, and `MULTI`, `EXEC`,
/// `WATCH`, `UNWATCH` or `DISCARD` sent by `f` itself would upset the
/// bookkeeping here.
///
/// If EXEC answers nil (a watched key changed after WATCH, so nothing ran),
/// the whole thing is tried again, after the pause [`WatchOptions`] gives,
/// up to `options.max_attempts` times in all; then
/// [`Error::WatchAborted`] reports how many attempts were made. It never
/// loops for ever.
///
/// Every way out leaves the connection without a WATCH, or broken:
/// - EXEC ran (committed, nil, or `EXECABORT`): Redis itself dropped the
///   WATCH. `EXECABORT` is returned as [`Error::ExecAbort`].
/// - `f` returns an error: `UNWATCH` is sent (if the connection is still
///   usable) and `f`'s error is returned.
/// - `f` queues nothing: `UNWATCH` is sent and the empty reply list is
///   converted to `T` (`()` and `Vec<_>` accept it; a tuple does not).
///   The reads are not checked against later writes then; queue at least
///   one command if that matters.
/// - `f` panics: the connection is marked broken as the panic passes
///   through (the server still has the WATCH; reconnect).
/// - an `UNWATCH` that fails breaks the connection.
///
/// A command that fails inside EXEC does not undo the others (Redis has no
/// rollback), and neither does a conversion error: both come after EXEC
/// committed. EXEC's replies become `T` by the same rule as a pipeline's
/// ([`Pipeline::query`]): the first error reply fails the call with its
/// command's index, unless its element is a `Result<_, ServerError>`.
///
/// `keys` must not be empty ([`Error::Config`]).
///
/// ```
/// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
/// # let mut conn = respline::Connection::new(FakeServer::replying(&[b"+OK\r\n", b"$2\r\n41\r\n", b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n"]));
/// use respline::{cmd, transaction, WatchOptions};
///
/// // Double a balance, race-free: WATCH balance; GET balance; MULTI; SET balance ..; EXEC
/// let () = transaction(&mut conn, &["balance"], WatchOptions::default(), |conn, pipe| {
///     let balance: i64 = conn.query(["GET", "balance"])?;
///     pipe.cmd(cmd("SET").arg("balance").arg(balance * 2));
///     Ok(())
/// })?;
/// # assert!(conn.get_ref().requests().ends_with(b"$2\r\n82\r\n*1\r\n$4\r\nEXEC\r\n"));
/// # Ok::<(), respline::Error>(())
/// ```
pub fn transaction<S, K, T, F>(
    conn: &mut Connection<S>,
    keys: &[K],
    options: WatchOptions,
    mut f: F,
) -> Result<T>
where
    S: Read + Write,
    K: ToArg,
    T: FromValue,
    F: FnMut(&mut Connection<S>, &mut Pipeline) -> Result<()>,
{
    if keys.is_empty() {
        return Err(Error::Config(
            "transaction: expected at least one key to WATCH, found none".into(),
        ));
    }
    if options.max_attempts == 0 {
        return Err(Error::Config(
            "transaction: expected max_attempts of at least 1, found 0".into(),
        ));
    }
    let mut watch = cmd("WATCH");
    for key in keys {
        watch.push_arg(key);
    }
    let mut pipe = Pipeline::transaction();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let pause = options.delay_before(attempt);
        if !pause.is_zero() {
            thread::sleep(pause);
        }
        match attempt_once(conn, &watch, &mut pipe, &mut f) {
            Ok(replies) => return T::from_replies(replies),
            Err(Error::WatchAborted { .. }) if attempt < options.max_attempts => {}
            Err(Error::WatchAborted { .. }) => {
                return Err(Error::WatchAborted { attempts: attempt })
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt: WATCH, `f`, EXEC. Returns EXEC's replies (none when `f`
/// queued nothing).
fn attempt_once<S, F>(
    conn: &mut Connection<S>,
    watch: &Cmd,
    pipe: &mut Pipeline,
    f: &mut F,
) -> Result<Vec<Value>>
where
    S: Read + Write,
    F: FnMut(&mut Connection<S>, &mut Pipeline) -> Result<()>,
{
    send_watch(conn, watch)?;
    // From here until EXEC or UNWATCH, the server holds a WATCH for this
    // connection: the guard breaks the connection if a panic unwinds past.
    conn.set_watching(true);
    let mut guard = Watching { conn, active: true };
    pipe.clear();
    if let Err(e) = f(&mut *guard.conn, pipe) {
        // The closure's error is the one to report; a failed UNWATCH has
        // already broken the connection.
        let _ = guard.unwatch();
        return Err(e);
    }
    if pipe.is_empty() {
        guard.unwatch()?;
        return Ok(Vec::new());
    }
    let result = pipe.execute_raw(&mut *guard.conn);
    guard.active = false;
    guard.conn.set_watching(false);
    match &result {
        Ok(_) | Err(Error::WatchAborted { .. }) | Err(Error::ExecAbort { .. }) => {}
        // EXEC ran in every case above. Otherwise (MULTI refused, say) it
        // may not have, and the WATCH may still stand: drop it.
        Err(_) => {
            if !guard.conn.is_broken() {
                let _ = unwatch(guard.conn);
            }
        }
    }
    result
}

/// The keys of a connection are WATCHed while `active`.
struct Watching<'c, S: Read + Write> {
    conn: &'c mut Connection<S>,
    active: bool,
}

impl<S: Read + Write> Watching<'_, S> {
    fn unwatch(&mut self) -> Result<()> {
        self.active = false;
        let result = unwatch(self.conn);
        self.conn.set_watching(false);
        result
    }
}

impl<S: Read + Write> Drop for Watching<'_, S> {
    fn drop(&mut self) {
        if self.active {
            self.conn.poison(if thread::panicking() {
                "a panic in a transaction closure while keys were WATCHed".to_string()
            } else {
                "a transaction was abandoned while keys were WATCHed".to_string()
            });
        }
    }
}

/// Sends WATCH (through the door directly: the helper keeps track of the
/// WATCH itself, so it does not count as a hand-made session change).
fn send_watch<S: Read + Write>(conn: &mut Connection<S>, watch: &Cmd) -> Result<()> {
    let mut refused = None;
    conn.request(&watch.to_bytes(), 1, Wait::Default, |_, v| {
        refused = server_error(&v);
        Ok(())
    })?;
    match refused {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Sends UNWATCH; if it fails, the connection ends broken.
fn unwatch<S: Read + Write>(conn: &mut Connection<S>) -> Result<()> {
    let result = conn.execute(["UNWATCH"]).map(drop);
    if let Err(e) = &result {
        conn.poison(format!("UNWATCH failed: {}", e));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io;

    /// Each write (one request) releases the next canned reply chunk;
    /// every request is recorded.
    struct Fake {
        canned: VecDeque<String>,
        out: Vec<u8>,
        requests: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = self.out.len().min(b.len());
            b[..n].copy_from_slice(&self.out[..n]);
            self.out.drain(..n);
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.requests.extend_from_slice(b);
            let next = self.canned.pop_front().unwrap_or_default();
            self.out.extend_from_slice(next.as_bytes());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn fake(canned: &[&str]) -> Connection<Fake> {
        Connection::new(Fake {
            canned: canned.iter().map(|s| s.to_string()).collect(),
            out: Vec::new(),
            requests: Vec::new(),
        })
    }

    /// The commands sent, as text (arguments joined by spaces).
    fn sent(conn: &Connection<Fake>) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = &conn.get_ref().requests[..];
        while !rest.is_empty() {
            let (used, v) = crate::resp::decode(rest, &crate::resp::Limits::default())
                .unwrap()
                .map(|(v, used)| (used, v))
                .unwrap();
            rest = &rest[used..];
            let args: Vec<String> = v
                .as_slice()
                .unwrap()
                .iter()
                .map(|a| String::from_utf8_lossy(a.as_bytes().unwrap()).into_owned())
                .collect();
            out.push(args.join(" "));
        }
        out
    }

    /// WATCH, then MULTI + SET + EXEC answered with a nil EXEC.
    const ATTEMPT_ABORTED: [&str; 2] = ["+OK\r\n", "+OK\r\n+QUEUED\r\n*-1\r\n"];

    #[test]
    fn gives_up_after_max_attempts_with_the_real_count() {
        let mut conn = fake(&ATTEMPT_ABORTED.repeat(3));
        let mut calls = 0;
        let err = transaction::<_, _, (), _>(
            &mut conn,
            &["k"],
            WatchOptions::new().max_attempts(3).no_backoff(),
            |_, pipe| {
                calls += 1;
                pipe.cmd(["SET", "k", "v"]);
                Ok(())
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::WatchAborted { attempts: 3 }),
            "{:?}",
            err
        );
        assert_eq!(calls, 3);
        assert!(!conn.is_broken());
        let one = ["WATCH k", "MULTI", "SET k v", "EXEC"];
        assert_eq!(sent(&conn), one.repeat(3));
    }

    #[test]
    fn retries_then_commits() {
        let mut conn = fake(&[
            ATTEMPT_ABORTED[0],
            ATTEMPT_ABORTED[1],
            "+OK\r\n",
            "+OK\r\n+QUEUED\r\n*1\r\n:7\r\n",
        ]);
        let (n,): (i64,) = transaction(
            &mut conn,
            &["k"],
            WatchOptions::new().no_backoff(),
            |_, pipe| {
                pipe.cmd(["INCR", "k"]);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 7);
        assert_eq!(sent(&conn).len(), 8);
    }

    #[test]
    fn closure_error_sends_unwatch_and_is_returned() {
        let mut conn = fake(&["+OK\r\n", "+OK\r\n"]);
        let err =
            transaction::<_, _, (), _>(&mut conn, &["a", "b"], WatchOptions::new(), |_, _| {
                Err(Error::Config("mine".into()))
            })
            .unwrap_err();
        assert!(matches!(&err, Error::Config(m) if m == "mine"), "{:?}", err);
        assert_eq!(sent(&conn), ["WATCH a b", "UNWATCH"]);
        assert!(!conn.is_broken());
    }

    #[test]
    fn empty_pipeline_sends_unwatch_and_converts_no_replies() {
        let mut conn = fake(&["+OK\r\n", "+OK\r\n"]);
        let v: Vec<i64> =
            transaction(&mut conn, &["k"], WatchOptions::new(), |_, _| Ok(())).unwrap();
        assert!(v.is_empty());
        assert_eq!(sent(&conn), ["WATCH k", "UNWATCH"]);
    }

    #[test]
    fn a_panic_in_the_closure_breaks_the_connection() {
        let mut conn = fake(&["+OK\r\n"]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = transaction::<_, _, (), _>(&mut conn, &["k"], WatchOptions::new(), |_, _| {
                panic!("boom")
            });
        }));
        assert!(outcome.is_err());
        assert!(conn.is_broken());
        let err = conn.query::<()>(["PING"]).unwrap_err();
        assert!(
            err.to_string().contains("panic in a transaction closure"),
            "{}",
            err
        );
    }

    #[test]
    fn refuses_no_keys_and_zero_attempts_before_any_io() {
        let mut conn = fake(&[]);
        let none: [&str; 0] = [];
        let e = transaction::<_, _, (), _>(&mut conn, &none, WatchOptions::new(), |_, _| Ok(()));
        assert!(matches!(e, Err(Error::Config(_))));
        let e = transaction::<_, _, (), _>(
            &mut conn,
            &["k"],
            WatchOptions::new().max_attempts(0),
            |_, _| Ok(()),
        );
        assert!(matches!(e, Err(Error::Config(_))));
        assert!(conn.get_ref().requests.is_empty());
    }

    #[test]
    fn an_error_inside_exec_gets_its_index() {
        let mut conn = fake(&[
            "+OK\r\n",
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n-WRONGTYPE no\r\n",
        ]);
        let err =
            transaction::<_, _, ((), i64), _>(&mut conn, &["k"], WatchOptions::new(), |_, p| {
                p.cmd(["SET", "k", "v"]).cmd(["INCR", "k"]);
                Ok(())
            })
            .unwrap_err();
        let e = err.server_error().unwrap();
        assert_eq!((e.code(), e.index), ("WRONGTYPE", Some(1)));
    }

    #[test]
    fn default_backoff_doubles_from_one_ms_to_a_cap() {
        let o = WatchOptions::default();
        assert_eq!(o.max_attempts, 5);
        let ms: Vec<u128> = (1..=10).map(|n| o.delay_before(n).as_millis()).collect();
        assert_eq!(ms, [0, 1, 2, 4, 8, 16, 32, 64, 100, 100]);
        assert_eq!(o.delay_before(u32::MAX), Duration::from_millis(100));
    }
}
