//! [`Client`]: what runs commands, one [`Connection`] or a cluster, so
//! pipelines, transactions and scripts are written once for both.

use std::io::{Read, Write};

use crate::cmd::ToCommand;
use crate::connection::{changes_session, Connection, Wait};
use crate::convert::FromValue;
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::resp::{Value, ValueRef};

pub(crate) mod sealed {
    /// Only this crate's types are clients.
    pub trait Sealed {}
}

/// Something that runs commands: a [`Connection`], or a
/// `Cluster` when the `cluster` feature is on.
///
/// [`Pipeline::query`], [`Script`](crate::Script) invocations and generic
/// code of your own take any client:
///
/// ```
/// # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
/// use respline::{Client, Connection};
///
/// fn visits(db: &mut impl Client, page: &str) -> respline::Result<i64> {
///     db.query(["INCR", page])
/// }
///
/// let mut conn = Connection::new(FakeServer::replying(&[b":7\r\n"]));
/// assert_eq!(visits(&mut conn, "page:/")?, 7);
/// # Ok::<(), respline::Error>(())
/// ```
///
/// The trait is sealed: its hidden methods are how the crate's features
/// reach a client, and are not part of the API.
pub trait Client: sealed::Sealed {
    /// Sends one command and converts its reply to `T`; an error reply is
    /// [`Error::Server`](crate::Error::Server).
    fn query<T: FromValue>(&mut self, command: impl ToCommand) -> Result<T>
    where
        Self: Sized,
    {
        let mut bytes = Vec::new();
        command.write_command(&mut bytes);
        T::from_reply(self.call_encoded(&bytes)?, None)
    }

    /// Sends one command and returns its reply, failing on an error reply.
    fn execute(&mut self, command: impl ToCommand) -> Result<Value>
    where
        Self: Sized,
    {
        self.query(command)
    }

    /// Sends one encoded command and returns its reply, an error reply
    /// included as a value.
    #[doc(hidden)]
    fn call_encoded(&mut self, bytes: &[u8]) -> Result<Value>;

    /// Runs a pipeline, handing each reply to `each` in the pipeline's
    /// order.
    #[doc(hidden)]
    fn run_pipeline(
        &mut self,
        pipe: &Pipeline,
        each: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()>;

    /// Runs a pipeline and converts its replies by the rule of
    /// [`Pipeline::query`].
    #[doc(hidden)]
    fn query_pipeline<T: FromValue>(&mut self, pipe: &Pipeline) -> Result<T>
    where
        Self: Sized,
    {
        T::from_replies(pipe.execute_raw(self)?)
    }

    /// Runs a pipeline, handing each reply to `each` as a view, in the
    /// pipeline's order.
    #[doc(hidden)]
    fn run_pipeline_views(
        &mut self,
        pipe: &Pipeline,
        each: &mut dyn FnMut(usize, ValueRef<'_>) -> Result<()>,
    ) -> Result<()> {
        self.run_pipeline(pipe, &mut |i, v| each(i, v.view()))
    }
}

impl<S: Read + Write> sealed::Sealed for Connection<S> {}

impl<S: Read + Write> Client for Connection<S> {
    fn query<T: FromValue>(&mut self, command: impl ToCommand) -> Result<T> {
        Connection::query(self, command)
    }

    fn call_encoded(&mut self, bytes: &[u8]) -> Result<Value> {
        if changes_session(bytes) {
            self.note_session_change();
        }
        let mut reply = Value::Nil;
        self.request(bytes, 1, Wait::Default, |_, v| {
            reply = v;
            Ok(())
        })?;
        Ok(reply)
    }

    fn run_pipeline(
        &mut self,
        pipe: &Pipeline,
        each: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        pipe.run(self, each)
    }

    fn run_pipeline_views(
        &mut self,
        pipe: &Pipeline,
        each: &mut dyn FnMut(usize, ValueRef<'_>) -> Result<()>,
    ) -> Result<()> {
        pipe.run_views(self, each)
    }

    /// Each reply is converted as it is read, straight from the read
    /// buffer.
    fn query_pipeline<T: FromValue>(&mut self, pipe: &Pipeline) -> Result<T> {
        T::from_reply_stream(pipe.len(), &mut |each| {
            pipe.run_views(self, &mut |i, reply| {
                each(i, reply);
                Ok(())
            })
        })
    }
}
