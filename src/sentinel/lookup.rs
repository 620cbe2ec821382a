//! Finding the primary: ask the sentinels in turn, confirm the address
//! with `ROLE`, and try again after a pause while it cannot be confirmed,
//! within the lookup's deadline.
//!
//! ```text
//! pass:  for each sentinel (front first):
//!          connect (short timeouts) ──▶ GET-MASTER-ADDR-BY-NAME + SENTINELS (one round trip)
//!            failed / error reply ──▶ next sentinel          (all of them: NoSentinel)
//!            nil ──────────────────▶ next sentinel          (all that answered: UnknownPrimary)
//!            host:port ──▶ connect with the node options ──▶ ROLE
//!                            "master" ──▶ done: this sentinel to the front, learn the others
//!                            otherwise ──▶ next sentinel (that address is not tried again)
//! lookup: passes separated by pauses (25 ms doubling to 400 ms) while only
//!         the address failed, until the deadline: then that failure.
//! ```

use std::thread;
use std::time::{Duration, Instant};

use super::options::within;
use super::{reply, Inner};
use crate::connect::{Addr, ConnectOptions, Socket};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::{ReplyTimeout, Value};

/// The first pause between two passes of a lookup.
const FIRST_PAUSE: Duration = Duration::from_millis(25);
/// The longest pause between two passes.
const MAX_PAUSE: Duration = Duration::from_millis(400);

/// How a pass ended without a primary.
enum Miss {
    /// Worth another pass after a pause: the sentinels named an address
    /// that refused connections or said it was not the primary.
    Retry(Error),
    /// Not worth another: no sentinel answered, none knows the name, or
    /// the data node refused the client itself.
    Final(Error),
}

impl Inner {
    /// Looks the primary up and returns a connection to it, confirmed with
    /// `ROLE` (when asked), opened with the node options.
    pub(super) fn find_primary(&self, deadline: Instant) -> Result<(Addr, Connection<Socket>)> {
        let ticket = self.state().begin_lookup();
        let mut pause = FIRST_PAUSE;
        loop {
            let failure = match self.pass(deadline, ticket) {
                Ok(found) => return Ok(found),
                Err(Miss::Final(e)) => return Err(e),
                Err(Miss::Retry(e)) => e,
            };
            if deadline.saturating_duration_since(Instant::now()) <= pause {
                return Err(failure);
            }
            thread::sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// One pass over the sentinels, in their current order.
    fn pass(&self, deadline: Instant, ticket: u64) -> Result<(Addr, Connection<Socket>), Miss> {
        let sentinels = self.state().sentinels.clone();
        let name = self.options.primary_name.as_str();
        let mut tried: u16 = 0;
        let mut unknown = false;
        let mut sentinel_failure = None;
        let mut refused: Vec<Addr> = Vec::new();
        let mut address_failure = None;
        for sentinel in &sentinels {
            // The first sentinel is always asked, however late.
            if tried > 0 && Instant::now() >= deadline {
                break;
            }
            tried = tried.saturating_add(1);
            let (primary, learned) = match ask(&self.options.for_sentinel(sentinel, deadline), name)
            {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    unknown = true;
                    continue;
                }
                Err(e) => {
                    sentinel_failure = Some(e);
                    continue;
                }
            };
            if refused.contains(&primary) {
                continue;
            }
            match confirm(
                &self.options.for_node(&primary),
                deadline,
                self.options.confirm_role.then_some(Want::Primary),
            ) {
                Ok(conn) => {
                    self.state()
                        .found_primary(ticket, sentinel, &primary, learned, &self.options);
                    return Ok((primary, conn));
                }
                Err(e) => {
                    refused.push(primary);
                    address_failure = Some(e);
                }
            }
        }
        match (address_failure, unknown, sentinel_failure) {
            (Some(e), _, _) if worth_retrying(&e) => Err(Miss::Retry(e)),
            (Some(e), _, _) => Err(Miss::Final(e)),
            (None, true, _) => Err(Miss::Final(Error::UnknownPrimary {
                name: name.to_string(),
            })),
            (None, false, last) => Err(Miss::Final(Error::NoSentinel {
                tried,
                last: Box::new(
                    last.unwrap_or_else(|| Error::Config("sentinel: no sentinel to ask".into())),
                ),
            })),
        }
    }
}

/// Asks one sentinel for the primary's address, and in the same round trip
/// for the other sentinels it knows (`None` if that part of the answer is
/// unusable). `Ok(None)`: it monitors no primary of that name.
#[allow(clippy::type_complexity)]
fn ask(options: &ConnectOptions, name: &str) -> Result<Option<(Addr, Option<Vec<Addr>>)>> {
    let mut conn = Connection::connect(options)?;
    let mut pipe = Pipeline::new();
    pipe.cmd(["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name])
        .cmd(["SENTINEL", "SENTINELS", name]);
    let replies = pipe.execute_raw(&mut conn)?;
    let primary = match replies.first().map(reply::primary_addr) {
        Some(Ok(Some(addr))) => addr,
        Some(Ok(None)) => return Ok(None),
        Some(Err(e)) => return Err(e),
        None => return Err(Error::conversion("two replies", "none")),
    };
    let learned = replies
        .get(1)
        .and_then(|v| reply::usable_instances(v, false).ok());
    Ok(Some((primary, learned)))
}

/// The role a data node must confirm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// `ROLE` says `master`.
    Primary,
    /// `ROLE` says `slave`, with its link to its primary up.
    Replica,
}

/// Connects to a data node with `options` (its connect deadline cut to the
/// lookup's, the connection keeping the full one for `reconnect`) and,
/// when `want` says so, checks its role with `ROLE`, waiting for the reply
/// at most the node's read timeout and no later than the deadline.
pub(super) fn confirm(
    options: &ConnectOptions,
    deadline: Instant,
    want: Option<Want>,
) -> Result<Connection<Socket>> {
    let mut tight = options.clone();
    tight.connect_timeout = Some(within(options.connect_timeout, deadline));
    let mut conn = Connection::connect(&tight)?;
    conn.keep_options(options.clone());
    let want = match want {
        Some(want) => want,
        None => return Ok(conn),
    };
    let wait = ReplyTimeout::After(within(options.read_timeout, deadline));
    // Part of connecting, as the handshake is: a refusal (NOAUTH, an ACL)
    // says nothing of the caller's request reached a server.
    let reply: Value = conn
        .with_timeout(wait)
        .query(["ROLE"])
        .map_err(|e| Error::Handshake {
            step: "ROLE",
            source: Box::new(e),
        })?;
    let (role, linked) = reply::role(&reply)?;
    let ok = match want {
        Want::Primary => role == "master",
        Want::Replica => role == "slave" && linked,
    };
    if ok {
        Ok(conn)
    } else {
        Err(Error::NotPrimary {
            addr: options.addr.to_string().into(),
            role: role.into(),
        })
    }
}

/// Whether an address's failure may pass by itself: it is not (or not
/// yet) the primary, it could not be reached, or it is loading or busy.
/// A refusal of the client (authentication, ACL, a bad reply) will not.
fn worth_retrying(e: &Error) -> bool {
    // A failed ROLE is judged by why it failed.
    let e = match e {
        Error::Handshake {
            step: "ROLE",
            source,
        } => &**source,
        e => e,
    };
    match e.server_error() {
        Some(s) => matches!(s.code(), "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN"),
        None => !matches!(
            e,
            Error::Protocol(_) | Error::Conversion(_) | Error::Config(_)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(line: &str) -> Error {
        let e = crate::convert::server_error(&Value::Error(line.into()));
        Error::Server(Box::new(e.expect("an error reply")))
    }

    fn role(source: Error) -> Error {
        Error::Handshake {
            step: "ROLE",
            source: Box::new(source),
        }
    }

    #[test]
    fn a_refused_role_is_final_and_a_passing_failure_is_retried() {
        let refused = role(server("NOAUTH Authentication required."));
        assert!(!worth_retrying(&refused));
        assert!(!refused.may_have_reached_server());
        assert!(worth_retrying(&role(server("LOADING loading"))));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(worth_retrying(&role(Error::Io(reset))));
        let bad = Error::conversion("an array", "a number");
        assert!(!worth_retrying(&role(bad)));
        assert!(!worth_retrying(&Error::Handshake {
            step: "AUTH",
            source: Box::new(server("WRONGPASS invalid username-password pair")),
        }));
    }
}
