//! [`Pipeline`]: many commands, one write, one round trip.
//!
//! Commands are encoded into one `Vec<u8>` as they are added. Running the
//! pipeline writes that buffer with one write call and then reads exactly
//! one reply per command (plus MULTI's and EXEC's in a transaction). A server
//! error in the middle is that command's reply, never a reason to stop
//! reading: the connection stays in step and usable.
//!
//! Pipelines, transactions and the WATCH helper turn their replies into a
//! result by one rule: see [`Pipeline::query`].

use std::io::{Read, Write};

use crate::client::Client;
use crate::cmd::ToCommand;
use crate::connection::{changes_session, Connection, Wait};
use crate::convert::{server_error, FromValue};
use crate::error::{Error, Result, ServerError};
use crate::resp::{ProtocolError, ProtocolErrorKind, Value, ValueRef};

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// A batch of commands sent with one write and answered in one round trip.
///
/// ```
/// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
/// # let stream = FakeServer::replying(&[b"+OK\r\n$5\r\nAlice\r\n:1\r\n$1\r\n1\r\n"]);
/// use respline::{Connection, Pipeline};
///
/// let mut conn = Connection::new(stream); // over any Read + Write stream
/// let mut pipe = Pipeline::new();
/// pipe.cmd(["SET", "name", "Alice"]).cmd(["GET", "name"]).cmd(["INCR", "counter"]).cmd(["GET", "counter"]);
/// let (ok, name, n, s): ((), String, i64, String) = pipe.query(&mut conn)?;
/// assert_eq!((ok, name.as_str(), n, s.as_str()), ((), "Alice", 1, "1"));
/// assert_eq!(conn.get_ref().writes(), 1);
/// # Ok::<(), respline::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a pipeline does nothing until it is run: pipe.query(&mut conn) or pipe.execute(&mut conn)"]
pub struct Pipeline {
    buf: Vec<u8>,
    count: usize,
    transaction: bool,
    /// A command may change the connection's session (`SELECT`...).
    changes_session: bool,
}

impl Pipeline {
    /// An empty pipeline, without MULTI/EXEC: other clients' commands may run
    /// between these.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// An empty transaction: the commands are wrapped in MULTI ... EXEC and
    /// run atomically, and the replies are the contents of EXEC's reply.
    pub fn transaction() -> Pipeline {
        Pipeline {
            transaction: true,
            ..Pipeline::default()
        }
    }

    /// An empty pipeline whose buffer holds `bytes` before it must grow.
    pub fn with_capacity(bytes: usize) -> Pipeline {
        Pipeline {
            buf: Vec::with_capacity(bytes),
            ..Pipeline::default()
        }
    }

    /// Adds a command: a [`Cmd`](crate::Cmd), or an array, slice, `Vec` or
    /// tuple of arguments.
    pub fn cmd(&mut self, command: impl ToCommand) -> &mut Pipeline {
        let start = self.buf.len();
        command.write_command(&mut self.buf);
        self.count += 1;
        if !self.changes_session {
            self.changes_session = changes_session(&self.buf[start..]);
        }
        self
    }

    /// The number of commands.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if there are no commands.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True if this is a MULTI/EXEC transaction.
    pub fn is_transaction(&self) -> bool {
        self.transaction
    }

    /// The encoded commands (without MULTI/EXEC).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Removes every command, keeping the buffer's capacity for reuse.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.changes_session = false;
    }

    /// Runs the pipeline and converts the replies to `T`: a tuple with one
    /// element per command, a `Vec`, `()` or a [`Value`].
    ///
    /// # The rule for many replies
    ///
    /// Pipelines, transactions and the WATCH helper
    /// ([`transaction`](crate::transaction)) turn their replies into a result
    /// the same way, once every reply is read:
    ///
    /// * a tuple or a `Vec` converts reply by reply, each with its command's
    ///   index; `()` accepts any replies; any other type (a `Value`, your
    ///   own) gets the replies as one [`Value::Array`];
    /// * if a command's reply is an error reply, the call fails with the
    ///   first such [`Error::Server`], its [`index`](crate::ServerError::index)
    ///   set; otherwise with the first reply that does not fit its type, as
    ///   an [`Error::Conversion`] that names the command's index too;
    /// * a reply converted to `Result<T, ServerError>` keeps its command's
    ///   error as a value instead, so a typed tuple can hold per-command
    ///   errors;
    /// * [`execute_raw`](Pipeline::execute_raw) returns the replies
    ///   untouched, error replies as [`Value::Error`] elements.
    ///
    /// For a transaction: the replies inside EXEC's; `EXECABORT` gives
    /// [`Error::ExecAbort`] (every command that failed to queue, by index),
    /// and a nil EXEC gives [`Error::WatchAborted`]. Neither breaks the
    /// connection.
    pub fn query<T: FromValue>(&self, client: &mut impl Client) -> Result<T> {
        client.query_pipeline(self)
    }

    /// Runs the pipeline and hands each reply to `f` as it is read, in
    /// order, with its index: a [`ValueRef`] viewing the read buffer (no
    /// allocation per reply or per element), or the command's error reply
    /// as `Err` (use `?` to make it the call's error, or handle it).
    ///
    /// Every reply is read whatever `f` returns, so the connection stays in
    /// step; the call then returns `f`'s first error. Memory stays bounded by
    /// the largest single reply, however many commands the pipeline holds.
    /// On a cluster the replies are views of owned values, put back in the
    /// pipeline's order.
    ///
    /// ```
    /// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
    /// # let stream = FakeServer::replying(&[b"*2\r\n$2\r\nab\r\n$3\r\ncde\r\n*1\r\n$4\r\nfghi\r\n"]);
    /// use respline::{Connection, Pipeline};
    ///
    /// let mut conn = Connection::new(stream);
    /// let mut pipe = Pipeline::new();
    /// pipe.cmd(["LRANGE", "a", "0", "-1"]).cmd(["LRANGE", "b", "0", "-1"]);
    /// let mut bytes = 0;
    /// pipe.for_each_reply(&mut conn, |_, reply| {
    ///     for item in reply?.items().into_iter().flatten() {
    ///         bytes += item.as_bytes().map_or(0, |b| b.len());
    ///     }
    ///     Ok(())
    /// })?;
    /// assert_eq!(bytes, 9);
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn for_each_reply(
        &self,
        client: &mut impl Client,
        mut f: impl FnMut(usize, std::result::Result<ValueRef<'_>, ServerError>) -> Result<()>,
    ) -> Result<()> {
        let mut first_error = None;
        client.run_pipeline_views(self, &mut |i, reply| {
            let reply = match reply.server_error() {
                Some(e) => Err(e.with_index(i)),
                None => Ok(reply),
            };
            if let Err(e) = f(i, reply) {
                first_error.get_or_insert(e);
            }
            Ok(())
        })?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs the pipeline and returns one reply per command, in order, failing
    /// with the first error reply (with its command's index) once every
    /// reply is read: `query::<Vec<Value>>`.
    pub fn execute(&self, client: &mut impl Client) -> Result<Vec<Value>> {
        // The rule for `Vec<Value>`, without a second pass over the replies.
        let replies = self.execute_raw(client)?;
        match replies
            .iter()
            .enumerate()
            .find_map(|(i, v)| server_error(v).map(|e| e.with_index(i)))
        {
            Some(e) => Err(e.into()),
            None => Ok(replies),
        }
    }

    /// Runs the pipeline and returns every reply as it arrived, error
    /// replies included as [`Value::Error`] elements at their command's
    /// index: nothing is checked. Transport failures, EXECABORT and a nil
    /// EXEC are still errors.
    pub fn execute_raw(&self, client: &mut impl Client) -> Result<Vec<Value>> {
        let mut replies = Vec::with_capacity(self.count);
        client.run_pipeline(self, &mut |_, v| {
            replies.push(v);
            Ok(())
        })?;
        Ok(replies)
    }

    /// Writes the commands and hands each reply to `each` with its index,
    /// without collecting them.
    /// [`run`](Pipeline::run), handing each reply over as a view.
    pub(crate) fn run_views<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
        each: &mut dyn FnMut(usize, ValueRef<'_>) -> Result<()>,
    ) -> Result<()> {
        if self.transaction {
            return self.run(conn, |i, v| each(i, v.view()));
        }
        if self.changes_session {
            conn.note_session_change();
        }
        conn.request_views(&self.buf, self.count, Wait::Default, each)
    }

    pub(crate) fn run<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
        mut each: impl FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        if self.changes_session {
            conn.note_session_change();
        }
        if !self.transaction {
            return conn.request(&self.buf, self.count, Wait::Default, each);
        }
        let mut bytes = Vec::with_capacity(MULTI.len() + self.buf.len() + EXEC.len());
        bytes.extend_from_slice(MULTI);
        bytes.extend_from_slice(&self.buf);
        bytes.extend_from_slice(EXEC);
        let n = self.count;
        let mut multi_error = None;
        let mut queue_errors = Vec::new();
        let mut exec = Value::Nil;
        conn.request(&bytes, n + 2, Wait::Default, |i, v| {
            if i == 0 {
                multi_error = server_error(&v);
            } else if i <= n {
                if let Some(e) = server_error(&v) {
                    queue_errors.push(e.with_index(i - 1));
                }
            } else {
                check_exec_reply(&v, n)?;
                exec = v;
            }
            Ok(())
        })?;
        if let Some(e) = multi_error {
            return Err(e.into());
        }
        match exec.into_without_attributes() {
            Value::Array(replies) => {
                for (i, v) in replies.into_iter().enumerate() {
                    each(i, v)?;
                }
                Ok(())
            }
            Value::Nil => Err(Error::WatchAborted { attempts: 1 }),
            v => match server_error(&v) {
                Some(e) if e.code() == "EXECABORT" => Err(Error::ExecAbort {
                    errors: queue_errors,
                }),
                Some(e) => Err(e.into()),
                None => Ok(()),
            },
        }
    }
}

/// EXEC answers with one reply per queued command, nil (a WATCH abort) or
/// an error; anything else cannot be matched to the commands, and breaks
/// the connection like any protocol error.
fn check_exec_reply(v: &Value, n: usize) -> Result<()> {
    match v.without_attributes() {
        Value::Array(replies) if replies.len() == n => Ok(()),
        Value::Nil | Value::Error(_) | Value::BlobError(_) => Ok(()),
        other => Err(Error::Protocol(ProtocolError::new(
            ProtocolErrorKind::Unexpected,
            0,
            format!("EXEC to answer with an array of {} replies", n),
            format!("{} {}", other.kind(), other),
        ))),
    }
}
