//! Lua scripts run by their SHA-1 ([`Script`]), loaded on demand, alone or
//! inside a pipeline.
//!
//! `EVALSHA` sends 40 hex digits instead of the whole source, but fails with
//! `NOSCRIPT` when the server's script cache does not hold the script (a
//! restart, a failover, `SCRIPT FLUSH`). A `NOSCRIPT` reply means nothing ran,
//! so sending the call again as `EVAL` with the source cannot run it twice.
//!
//! In a pipeline, [`ScriptInvocation::add_to`] queues `EVAL` with the
//! source: one command that cannot meet `NOSCRIPT`, whatever other clients
//! do meanwhile. (A `SCRIPT LOAD` queued before an `EVALSHA` is not enough
//! in a plain pipeline: Redis may serve another client's `SCRIPT FLUSH`
//! between the two.)

mod sha1;

use std::io::{Read, Write};

use crate::client::Client;
use crate::cmd::{write_arg, ToArg, ToCommand};
use crate::connection::{Connection, Wait};
use crate::convert::{server_error, FromValue};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::resp::{ProtocolError, ProtocolErrorKind, Value};
use sha1::sha1_hex;

/// A Lua script and its SHA-1, the name Redis knows it by.
///
/// Build it once and keep it (the SHA is computed here, locally); invoke it
/// with [`key`](Script::key) and [`arg`](Script::arg), which start a
/// [`ScriptInvocation`].
///
/// ```
/// let script = respline::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
/// assert_eq!(script.sha().len(), 40);
/// let call = script.key("counter").arg(5);
/// // call.invoke::<i64, _>(&mut conn)? sends EVALSHA <sha> 1 counter 5
/// # let _ = call;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    source: String,
    sha: String,
}

impl Script {
    /// A script with this Lua source.
    pub fn new(source: impl Into<String>) -> Script {
        let source = source.into();
        let sha = sha1_hex(source.as_bytes());
        Script { source, sha }
    }

    /// The SHA-1 of the source, 40 lowercase hex digits: what `SCRIPT LOAD`
    /// returns and `EVALSHA` takes.
    ///
    /// ```
    /// let script = respline::Script::new("return 1");
    /// assert_eq!(script.sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    /// ```
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// The Lua source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Starts an invocation with its first key (`KEYS[1]`).
    pub fn key<A: ToArg>(&self, key: A) -> ScriptInvocation<'_> {
        self.invocation().key(key)
    }

    /// Starts an invocation with its first argument (`ARGV[1]`) and no keys
    /// so far. Keys added later still go before the arguments.
    pub fn arg<A: ToArg>(&self, arg: A) -> ScriptInvocation<'_> {
        self.invocation().arg(arg)
    }

    /// An invocation with no keys and no arguments yet, for adding them in
    /// a loop with [`push_key`](ScriptInvocation::push_key) and
    /// [`push_arg`](ScriptInvocation::push_arg).
    pub fn invocation(&self) -> ScriptInvocation<'_> {
        ScriptInvocation {
            script: self,
            keys: Vec::new(),
            key_count: 0,
            args: Vec::new(),
            arg_count: 0,
        }
    }

    /// Runs the script with no keys and no arguments; see
    /// [`ScriptInvocation::invoke`].
    pub fn invoke<T: FromValue, C: Client>(&self, client: &mut C) -> Result<T> {
        self.invocation().invoke(client)
    }

    /// Loads the script into the server's cache (`SCRIPT LOAD`) and checks
    /// that the server names it by the SHA computed here.
    ///
    /// A compile error in the script is [`Error::Server`]. A different SHA
    /// is a protocol error of kind
    /// [`Unexpected`](crate::resp::ProtocolErrorKind::Unexpected), and, like every
    /// protocol error, it breaks the connection: whatever answers is not
    /// behaving as Redis does.
    pub fn load<S: Read + Write>(&self, conn: &mut Connection<S>) -> Result<()> {
        let mut load = Vec::new();
        ["SCRIPT", "LOAD", self.source.as_str()].write_command(&mut load);
        let mut loaded = Ok(());
        conn.request(&load, 1, Wait::Default, |_, v| {
            loaded = self.check_loaded(v);
            protocol_only(&loaded)
        })?;
        loaded
    }

    /// Queues `SCRIPT LOAD <source>` in `pipe` and returns the index of its
    /// reply (the SHA). Later [`add_evalsha_to`](ScriptInvocation::add_evalsha_to)
    /// calls in the same [`Pipeline::transaction`] then cannot meet
    /// `NOSCRIPT`; in a plain pipeline they can (see
    /// [`add_to`](ScriptInvocation::add_to)).
    pub fn add_load_to(&self, pipe: &mut Pipeline) -> usize {
        pipe.cmd(["SCRIPT", "LOAD", self.source.as_str()]);
        pipe.len() - 1
    }

    /// Checks the SHA that `SCRIPT LOAD` returned; a different one breaks
    /// the connection.
    /// Checks SCRIPT LOAD's reply: the script's SHA-1, or the server's
    /// error (a script that does not compile). Any other SHA-1 means the
    /// reply belongs to something else: a protocol error, which breaks the
    /// connection.
    fn check_loaded(&self, reply: Value) -> Result<()> {
        let sha = String::from_reply(reply, None)?;
        if sha == self.sha {
            Ok(())
        } else {
            Err(self.sha_mismatch(&sha))
        }
    }

    fn sha_mismatch(&self, sha: &str) -> Error {
        Error::Protocol(ProtocolError::new(
            ProtocolErrorKind::Unexpected,
            0,
            format!("SCRIPT LOAD to return the script's SHA-1 {}", self.sha),
            format!("{:?}", sha),
        ))
    }
}

/// One call of a [`Script`]: its keys and its arguments.
///
/// Keys and arguments are kept apart and sent as
/// `EVALSHA <sha> <number of keys> <keys...> <args...>`, keys first whatever
/// the order of the `key` and `arg` calls.
///
/// Outside a pipeline, use [`invoke`](ScriptInvocation::invoke). In a
/// pipeline, use [`add_to`](ScriptInvocation::add_to), which queues the
/// call as `EVAL` with the source, so it runs whatever the server's script
/// cache holds.
#[derive(Clone, Debug)]
pub struct ScriptInvocation<'a> {
    script: &'a Script,
    /// The keys, each already a RESP bulk string.
    keys: Vec<u8>,
    key_count: usize,
    /// The arguments, each already a RESP bulk string.
    args: Vec<u8>,
    arg_count: usize,
}

impl<'a> ScriptInvocation<'a> {
    /// Adds a key (`KEYS[n]`).
    pub fn key<A: ToArg>(mut self, key: A) -> ScriptInvocation<'a> {
        self.push_key(key);
        self
    }

    /// Adds an argument (`ARGV[n]`).
    pub fn arg<A: ToArg>(mut self, arg: A) -> ScriptInvocation<'a> {
        self.push_arg(arg);
        self
    }

    /// Adds a key through a mutable reference, for loops.
    pub fn push_key<A: ToArg>(&mut self, key: A) -> &mut ScriptInvocation<'a> {
        write_arg(&key, &mut self.keys);
        self.key_count += 1;
        self
    }

    /// Adds an argument through a mutable reference, for loops.
    pub fn push_arg<A: ToArg>(&mut self, arg: A) -> &mut ScriptInvocation<'a> {
        write_arg(&arg, &mut self.args);
        self.arg_count += 1;
        self
    }

    /// The script being invoked.
    pub fn script(&self) -> &'a Script {
        self.script
    }

    /// The number of keys and of arguments.
    pub fn counts(&self) -> (usize, usize) {
        (self.key_count, self.arg_count)
    }

    /// Runs the script and converts its reply.
    ///
    /// Sends `EVALSHA`. If the server answers `NOSCRIPT` (the script is not
    /// in its cache, so nothing ran), it sends the same call as `EVAL` with
    /// the script's source, which runs it (and caches it for the next
    /// `EVALSHA`): two round trips in all, the script runs once, and no
    /// `SCRIPT FLUSH` racing in between can make it fail. An error the
    /// script raises (`redis.error_reply`, a failing `redis.call`) is
    /// [`Error::Server`] with the script's code, and so is a compile error.
    ///
    /// The fallback is keyed on the `NOSCRIPT` code, as Redis sends it when
    /// the SHA is unknown: a script must not itself return an error whose
    /// code is `NOSCRIPT`, or it would be run a second time.
    ///
    /// ```
    /// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
    /// use respline::{Connection, Script};
    ///
    /// let script = Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    /// // The server does not know the script yet: NOSCRIPT; then EVAL's result.
    /// let mut conn = Connection::new(FakeServer::replying(&[b"-NOSCRIPT No matching script.\r\n", b":5\r\n"]));
    ///
    /// let n: i64 = script.key("counter").arg(5).invoke(&mut conn)?;
    /// assert_eq!(n, 5);
    /// let writes = conn.get_ref().written();
    /// assert_eq!(writes.len(), 2); // EVALSHA, then EVAL with the source
    /// assert!(writes[0].starts_with(b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n"));
    /// assert!(writes[1].starts_with(b"*5\r\n$4\r\nEVAL\r\n"));
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn invoke<T: FromValue, C: Client>(&self, client: &mut C) -> Result<T> {
        let mut call = Vec::new();
        self.write_call("EVALSHA", &self.script.sha, &mut call);
        let reply = client.call_encoded(&call)?;
        if !is_noscript(&reply) {
            return T::from_reply(reply, None);
        }
        // NOSCRIPT: nothing ran. EVAL runs it from its source.
        call.clear();
        self.write_call("EVAL", &self.script.source, &mut call);
        T::from_reply(client.call_encoded(&call)?, None)
    }

    /// Queues this call in `pipe` as one `EVAL` with the script's source,
    /// and returns the index of its reply.
    ///
    /// `EVAL` carries the source, so it cannot fail with `NOSCRIPT`: not
    /// after a restart or failover, not when another client runs `SCRIPT
    /// FLUSH` while the pipeline is being read, whatever the pipeline's
    /// size. It is one command with one reply, in its place among the
    /// others. (It also caches the script, for later
    /// [`invoke`](ScriptInvocation::invoke) calls.)
    ///
    /// To send a long source once and then many short calls, queue
    /// [`Script::add_load_to`] and then [`add_evalsha_to`](ScriptInvocation::add_evalsha_to)
    /// calls in a [`Pipeline::transaction`], where nothing can run between
    /// them. In a plain pipeline, Redis may serve another client's `SCRIPT
    /// FLUSH` between the load and a call, which then fails with `NOSCRIPT`
    /// (and does not run).
    ///
    /// ```
    /// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
    /// use respline::{Connection, Pipeline, Script, Value};
    ///
    /// let script = Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    /// # let mut conn = Connection::new(FakeServer::replying(&[b"+OK\r\n:15\r\n$2\r\n15\r\n"]));
    /// let mut pipe = Pipeline::new();
    /// pipe.cmd(["SET", "counter", "10"]);                    // reply 0
    /// let i = script.key("counter").arg(5).add_to(&mut pipe); // reply 1: the script's
    /// pipe.cmd(["GET", "counter"]);                          // reply 2
    /// assert_eq!((i, pipe.len()), (1, 3));
    ///
    /// let ((), n, s): ((), i64, String) = pipe.query(&mut conn)?;
    /// assert_eq!((n, s.as_str()), (15, "15"));
    /// assert!(conn.get_ref().requests().windows(4).any(|w| w == b"EVAL"));
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn add_to(&self, pipe: &mut Pipeline) -> usize {
        pipe.cmd(Call(self, "EVAL"));
        pipe.len() - 1
    }

    /// Queues only this `EVALSHA` in `pipe` (one reply) and returns the index
    /// of its reply. The script must be in the server's cache when it runs:
    /// safe after [`Script::add_load_to`] earlier in the same
    /// [`Pipeline::transaction`]. Otherwise (an earlier
    /// [`Script::load`], a load earlier in a plain pipeline) a `SCRIPT
    /// FLUSH`, restart or failover in between gives a `NOSCRIPT` error reply
    /// at this index (nothing ran), and the pipeline is not retried; prefer
    /// [`add_to`](ScriptInvocation::add_to) then.
    pub fn add_evalsha_to(&self, pipe: &mut Pipeline) -> usize {
        pipe.cmd(Call(self, "EVALSHA"));
        pipe.len() - 1
    }

    /// Appends `<command> <script> <numkeys> <keys...> <args...>`: EVALSHA
    /// with the SHA, or EVAL with the source.
    fn write_call(&self, command: &str, script: &str, out: &mut Vec<u8>) {
        crate::resp::write_header(out, b'*', 3 + self.key_count + self.arg_count);
        write_arg(command, out);
        write_arg(script, out);
        write_arg(&self.key_count, out);
        out.extend_from_slice(&self.keys);
        out.extend_from_slice(&self.args);
    }
}

/// An invocation as `EVAL` (with the source) or `EVALSHA`, for
/// [`Pipeline::cmd`].
struct Call<'i, 's>(&'i ScriptInvocation<'s>, &'static str);

impl crate::cmd::sealed::Sealed for Call<'_, '_> {}

impl ToCommand for Call<'_, '_> {
    fn write_command(&self, out: &mut Vec<u8>) {
        let Call(invocation, command) = self;
        let script = match *command {
            "EVAL" => &invocation.script.source,
            _ => &invocation.script.sha,
        };
        invocation.write_call(command, script, out)
    }
}

/// A protocol error found in a reply is passed on to the door, which breaks
/// the connection; any other outcome is the caller's to report.
fn protocol_only(outcome: &Result<()>) -> Result<()> {
    match outcome {
        Err(Error::Protocol(e)) => Err(Error::Protocol(e.clone())),
        _ => Ok(()),
    }
}

fn is_noscript(reply: &Value) -> bool {
    server_error(reply).map_or(false, |e| e.code() == "NOSCRIPT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_before_args_whatever_the_call_order() {
        let script = Script::new("return 1");
        let call = script.arg("a1").key("k1").arg(2).key("k2");
        let mut out = Vec::new();
        call.write_call("EVALSHA", script.sha(), &mut out);
        let expected = format!(
            "*7\r\n$7\r\nEVALSHA\r\n$40\r\n{}\r\n$1\r\n2\r\n$2\r\nk1\r\n$2\r\nk2\r\n$2\r\na1\r\n$1\r\n2\r\n",
            script.sha()
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(call.counts(), (2, 2));
    }

    #[test]
    fn no_keys_no_args() {
        let script = Script::new("return 1");
        let mut out = Vec::new();
        script
            .invocation()
            .write_call("EVALSHA", script.sha(), &mut out);
        let expected = format!(
            "*3\r\n$7\r\nEVALSHA\r\n$40\r\n{}\r\n$1\r\n0\r\n",
            script.sha()
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn add_to_queues_one_eval_with_the_source() {
        let script = Script::new("return ARGV[1]");
        let mut pipe = Pipeline::new();
        pipe.cmd(["PING"]);
        assert_eq!(script.arg("x").add_to(&mut pipe), 1);
        assert_eq!(script.arg("y").add_evalsha_to(&mut pipe), 2);
        assert_eq!(pipe.len(), 3);
        let mut expected = Vec::new();
        ["PING"].write_command(&mut expected);
        ["EVAL", "return ARGV[1]", "0", "x"].write_command(&mut expected);
        ["EVALSHA", script.sha(), "0", "y"].write_command(&mut expected);
        assert_eq!(pipe.as_bytes(), &expected[..]);
    }

    #[test]
    fn sha_mismatch_is_reported_with_both_values() {
        let script = Script::new("return 1");
        let text = script.sha_mismatch("0000").to_string();
        assert_eq!(
            text,
            format!(
                "unexpected reply at byte 0 of the reply: expected SCRIPT LOAD to return \
                 the script's SHA-1 {}, found \"0000\"",
                script.sha()
            )
        );
    }

    /// Each write releases the next canned reply chunk.
    struct Fake {
        canned: std::collections::VecDeque<Vec<u8>>,
        out: Vec<u8>,
        written: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let n = self.out.len().min(b.len());
            b[..n].copy_from_slice(&self.out[..n]);
            self.out.drain(..n);
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let next = self.canned.pop_front().unwrap_or_default();
            self.out.extend_from_slice(&next);
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn fake(canned: &[&str]) -> Connection<Fake> {
        Connection::new(Fake {
            canned: canned.iter().map(|s| s.as_bytes().to_vec()).collect(),
            out: Vec::new(),
            written: Vec::new(),
        })
    }

    #[test]
    fn a_foreign_sha_breaks_the_connection() {
        let script = Script::new("return 1");
        let wrong = format!("$40\r\n{}\r\n", "0".repeat(40));

        let mut conn = fake(&[&wrong]);
        let err = script.load(&mut conn).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{:?}", err);
        assert!(conn.is_broken());
    }

    #[test]
    fn noscript_falls_back_to_eval_with_the_source() {
        let script = Script::new("return 1");
        let mut conn = fake(&["-NOSCRIPT No matching script.\r\n", ":1\r\n"]);
        assert_eq!(script.invoke::<i64, _>(&mut conn).unwrap(), 1);
        let sent = &conn.get_ref().written;
        let eval = b"*3\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n0\r\n";
        assert!(sent.ends_with(eval), "{:?}", String::from_utf8_lossy(sent));
        assert!(!conn.is_broken());
    }

    #[test]
    fn the_cached_path_is_one_request() {
        let script = Script::new("return 1");
        let mut conn = fake(&[":1\r\n"]);
        assert_eq!(script.invoke::<i64, _>(&mut conn).unwrap(), 1);
        assert!(conn.get_ref().canned.is_empty() && !conn.is_broken());
    }

    #[test]
    fn noscript_is_recognised_by_its_code_only() {
        assert!(is_noscript(&Value::Error(
            "NOSCRIPT No matching script. Please use EVAL.".into()
        )));
        assert!(!is_noscript(&Value::Error("ERR NOSCRIPT".into())));
        assert!(!is_noscript(&Value::BulkString(b"NOSCRIPT".to_vec())));
    }
}
