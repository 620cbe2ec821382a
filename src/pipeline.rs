//! [`Pipeline`]: many commands, one write, one round trip.
//!
//! Commands are encoded into one `Vec<u8>` as they are added. `execute`
//! writes that buffer with one write call and then reads exactly one reply
//! per command (plus MULTI's and EXEC's in a transaction). A server error in
//! the middle is that command's reply, never a reason to stop reading: the
//! connection stays in step and usable.

use std::io::{Read, Write};

use crate::cmd::ToCommand;
use crate::connection::{Connection, Wait};
use crate::convert::{server_error, FromValue};
use crate::error::{Error, ProtocolError, ProtocolErrorKind, Result, ServerError};
use crate::value::Value;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// A batch of commands sent with one write and answered in one round trip.
///
/// ```
/// # use std::io::{Cursor, Read, Write};
/// # struct Fake { replies: Cursor<Vec<u8>>, writes: usize }
/// # impl Read for Fake { fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> { self.replies.read(b) } }
/// # impl Write for Fake {
/// #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.writes += 1; Ok(b.len()) }
/// #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// # }
/// # let fake = Fake { replies: Cursor::new(b"+OK\r\n$5\r\nAlice\r\n:1\r\n$1\r\n1\r\n".to_vec()), writes: 0 };
/// use respline::{Connection, Pipeline, Value};
///
/// let mut conn = Connection::new(fake); // over any Read + Write stream
/// let mut pipe = Pipeline::new();
/// pipe.cmd(["SET", "name", "Alice"]).cmd(["GET", "name"]).cmd(["INCR", "counter"]).cmd(["GET", "counter"]);
/// let (ok, name, n, s): ((), String, i64, String) = pipe.query(&mut conn)?;
/// assert_eq!((ok, name.as_str(), n, s.as_str()), ((), "Alice", 1, "1"));
/// assert_eq!(conn.get_ref().writes, 1);
/// # Ok::<(), respline::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    buf: Vec<u8>,
    count: usize,
    transaction: bool,
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

    /// Adds a command: a [`Cmd`](crate::Cmd), or an array, slice or `Vec` of
    /// arguments.
    pub fn cmd(&mut self, command: impl ToCommand) -> &mut Pipeline {
        command.write_command(&mut self.buf);
        self.count += 1;
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
    }

    /// Runs the pipeline and returns one reply per command, in order. Server
    /// errors are [`Value::Error`] elements at their command's index.
    ///
    /// For a transaction: the replies inside EXEC's; `EXECABORT` gives
    /// [`Error::ExecAbort`] (every command that failed to queue, by index),
    /// and a nil EXEC gives [`Error::WatchAborted`]. Neither breaks the
    /// connection.
    pub fn execute<S: Read + Write>(&self, conn: &mut Connection<S>) -> Result<Vec<Value>> {
        let mut replies = Vec::with_capacity(self.count);
        self.run(conn, |_, v| {
            replies.push(v);
            Ok(())
        })?;
        Ok(replies)
    }

    /// Runs the pipeline and returns each command's result: its reply, or
    /// its server error with [`ServerError::index`] set.
    pub fn results<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
    ) -> Result<Vec<std::result::Result<Value, ServerError>>> {
        let mut results = Vec::with_capacity(self.count);
        self.run(conn, |i, v| {
            results.push(match server_error(&v) {
                Some(e) => Err(e.with_index(i)),
                None => Ok(v),
            });
            Ok(())
        })?;
        Ok(results)
    }

    /// Runs the pipeline and converts the replies, as one array, to `T`: a
    /// tuple with one element per command, or a `Vec`. The first server error
    /// among the replies is returned as [`Error::Server`], with its index.
    pub fn query<T: FromValue>(&self, conn: &mut Connection<impl Read + Write>) -> Result<T> {
        let replies = self.execute(conn)?;
        if let Some((i, e)) = replies
            .iter()
            .enumerate()
            .find_map(|(i, v)| server_error(v).map(|e| (i, e)))
        {
            return Err(e.with_index(i).into());
        }
        T::from_value(Value::Array(replies))
    }

    /// Writes the commands and hands each reply to `each` with its index,
    /// without collecting them.
    pub(crate) fn run<S: Read + Write>(
        &self,
        conn: &mut Connection<S>,
        mut each: impl FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
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
        let mut exec = None;
        conn.request(&bytes, n + 2, Wait::Default, |i, v| {
            if i == 0 {
                multi_error = server_error(&v);
            } else if i <= n {
                if let Some(e) = server_error(&v) {
                    queue_errors.push(e.with_index(i - 1));
                }
            } else {
                exec = Some(v);
            }
            Ok(())
        })?;
        if let Some(e) = multi_error {
            return Err(e.into());
        }
        match exec.map(Value::into_without_attributes) {
            Some(Value::Array(replies)) if replies.len() == n => {
                for (i, v) in replies.into_iter().enumerate() {
                    each(i, v)?;
                }
                Ok(())
            }
            Some(Value::Nil) => Err(Error::WatchAborted { attempts: 1 }),
            Some(v) => match server_error(&v) {
                Some(e) if e.code() == "EXECABORT" => Err(Error::ExecAbort {
                    errors: queue_errors,
                }),
                Some(e) => Err(e.into()),
                // Replies that cannot be matched to their commands: the
                // connection is not trusted any more, as for any protocol
                // error (`Error::breaks_connection`).
                None => Err(conn.fail(
                    Error::Protocol(ProtocolError::new(
                        ProtocolErrorKind::Unexpected,
                        0,
                        format!("EXEC to answer with an array of {} replies", n),
                        format!("{} {}", v.kind(), v),
                    )),
                    0,
                    1,
                )),
            },
            None => unreachable!("request reads every reply"),
        }
    }
}
