//! The handshake that makes a stream a session as [`ConnectOptions`] ask:
//! `HELLO 3` (with AUTH and SETNAME folded in) or RESP2's `AUTH` and
//! `CLIENT SETNAME`, then `SELECT`, in at most two round trips. A failure
//! names its step.

use std::io::{Read, Write};
use std::time::Instant;

use super::{Connection, Wait};
use crate::cmd::{cmd, Cmd, ToCommand};
use crate::connect::ConnectOptions;
use crate::convert::server_error;
use crate::error::{Error, Result, ServerError};
use crate::resp::{Decoder, Protocol, ProtocolError, ProtocolErrorKind, Value};

impl<S: Read + Write> Connection<S> {
    /// Applies `options` to this connection: its timeouts and limits, then
    /// the handshake (HELLO, AUTH, CLIENT SETNAME, SELECT), all within
    /// `options.connect_timeout`. The address in `options` is not used.
    ///
    /// A failure is an [`Error::Handshake`] that names the step (a wrong
    /// password fails at `AUTH`, or at `HELLO` under RESP3), with the
    /// server's error or the I/O failure inside. Either way the connection is
    /// broken: drop it.
    pub fn handshake(&mut self, options: &ConnectOptions) -> Result<()> {
        self.read_timeout = options.read_timeout;
        self.write_timeout = options.write_timeout;
        self.decoder = Decoder::new(options.limits.clone());
        self.scan.reset();
        self.decoding = false;
        let deadline = options
            .connect_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let wait = match deadline {
            Some(d) => Wait::Until(d),
            None => Wait::Each(None),
        };
        let result = self.run_handshake(options, wait);
        if let Err(e) = &result {
            // A connection whose handshake failed is not what the caller
            // asked for; nothing may reuse it, whatever the failure.
            self.poison(format!("{}", e));
        }
        result
    }

    fn run_handshake(&mut self, options: &ConnectOptions, wait: Wait) -> Result<()> {
        let mut steps: Vec<(&'static str, Cmd)> = Vec::new();
        let hello_accepted = options.protocol == Protocol::Resp3 && self.hello(options, wait)?;
        if !hello_accepted {
            if let Some(password) = &options.password {
                let mut auth = cmd("AUTH");
                if let Some(user) = &options.username {
                    auth.push_arg(user);
                }
                steps.push(("AUTH", auth.arg(password)));
            }
            if let Some(name) = &options.client_name {
                steps.push(("CLIENT SETNAME", cmd("CLIENT").arg("SETNAME").arg(name)));
            }
        }
        if options.db != 0 {
            steps.push(("SELECT", cmd("SELECT").arg(options.db)));
        }
        self.run_steps(&steps, wait)
    }

    /// Sends `HELLO 3` (with AUTH and SETNAME); true if the server switched
    /// to RESP3, false if it does not know HELLO (before Redis 6).
    fn hello(&mut self, options: &ConnectOptions, wait: Wait) -> Result<bool> {
        let mut hello = cmd("HELLO").arg(3);
        if let Some(password) = &options.password {
            let user = options.username.as_deref().unwrap_or("default");
            hello = hello.arg("AUTH").arg(user).arg(password);
        }
        if let Some(name) = &options.client_name {
            hello = hello.arg("SETNAME").arg(name);
        }
        let mut reply = Value::Nil;
        self.request(&hello.to_bytes(), 1, wait, |_, v| {
            reply = v;
            Ok(())
        })
        .map_err(|e| step_failed("HELLO", e))?;
        match reply.into_without_attributes() {
            Value::Map(_) => {
                self.protocol = Protocol::Resp3;
                Ok(true)
            }
            v => match server_error(&v) {
                Some(e) if is_unknown_hello(&e) => Ok(false),
                Some(e) => Err(step_failed("HELLO", e.into())),
                None => Err(step_failed(
                    "HELLO",
                    Error::Protocol(ProtocolError::new(
                        ProtocolErrorKind::Unexpected,
                        0,
                        "a map (or an error) in reply to HELLO 3",
                        format!("{} {}", v.kind(), v),
                    )),
                )),
            },
        }
    }

    /// Sends every step in one write and checks each reply; the first
    /// failure names its step.
    fn run_steps(&mut self, steps: &[(&'static str, Cmd)], wait: Wait) -> Result<()> {
        if steps.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for (_, c) in steps {
            c.write_command(&mut bytes);
        }
        let mut answered = 0;
        let mut refused = None;
        let result = self.request(&bytes, steps.len(), wait, |i, v| {
            answered = i + 1;
            if refused.is_none() {
                refused = server_error(&v).map(|e| (i, e));
            }
            Ok(())
        });
        if let Err(e) = result {
            let step = steps[answered.min(steps.len() - 1)].0;
            let e = match e {
                Error::Interrupted { source, .. } => *source,
                e => e,
            };
            return Err(step_failed(step, e));
        }
        match refused {
            Some((i, e)) => Err(step_failed(steps[i].0, e.into())),
            None => Ok(()),
        }
    }
}

/// Servers before Redis 6 answer HELLO with an unknown-command error (or
/// `NOPROTO` when RESP3 is off): stay on RESP2 then.
fn is_unknown_hello(e: &ServerError) -> bool {
    e.code() == "NOPROTO" || e.message().starts_with("unknown command")
}

fn step_failed(step: &'static str, e: Error) -> Error {
    match e {
        // Refused before anything was sent: the connection's own state
        // says why, and no step was reached.
        Error::Broken { .. } => e,
        e => Error::Handshake {
            step,
            source: Box::new(e),
        },
    }
}
