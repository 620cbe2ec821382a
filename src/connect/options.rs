//! [`ConnectOptions`]: where to connect and how, the recipe that
//! [`reconnect`](crate::Connection::reconnect) replays.

use std::path::PathBuf;
use std::time::Duration;

use std::fmt;

use crate::resp::{Limits, Protocol};

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// A host name or IP address and a port. IPv6 addresses are kept without
    /// brackets.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket.
    Unix(PathBuf),
}

/// How to open a connection: address, credentials, database, timeouts,
/// protocol and reply limits.
///
/// Built from a URL with [`ConnectOptions::from_url`] or field by field with
/// the builder methods.
///
/// ```
/// use std::time::Duration;
/// use respline::{ConnectOptions, Protocol};
///
/// let opts = ConnectOptions::from_url("redis://app:s%40cret@127.0.0.1:6380/2")
///     .unwrap()
///     .read_timeout(Some(Duration::from_secs(2)))
///     .client_name("billing")
///     .protocol(Protocol::Resp3);
/// assert_eq!(opts.username.as_deref(), Some("app"));
/// assert_eq!(opts.password.as_deref(), Some("s@cret"));
/// assert_eq!(opts.db, 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Where to connect.
    pub addr: Addr,
    /// ACL user name for AUTH (with [`password`](Self::password)); `None`
    /// authenticates as the default user.
    pub username: Option<String>,
    /// Password for AUTH; `None` sends no AUTH.
    pub password: Option<String>,
    /// Database selected on connect (`SELECT`, skipped for 0).
    pub db: i64,
    /// Name given with `CLIENT SETNAME` (or `HELLO ... SETNAME`).
    pub client_name: Option<String>,
    /// RESP2 (the default) or RESP3. Asking for RESP3 sends `HELLO 3`; a
    /// server without HELLO falls back to RESP2.
    pub protocol: Protocol,
    /// The deadline for opening the connection: resolving, connecting and the
    /// whole handshake (HELLO, AUTH, SELECT, CLIENT SETNAME) together.
    /// Defaults to 10 seconds.
    pub connect_timeout: Option<Duration>,
    /// The longest wait for any one reply, from the moment the client starts
    /// waiting for it until its last byte: a deadline, not a per-`read()`
    /// timeout, so a server dripping bytes cannot stretch it. `None` (the
    /// default) waits for ever.
    pub read_timeout: Option<Duration>,
    /// The longest a request's write may take, as a deadline. `None` (the
    /// default) waits for ever.
    pub write_timeout: Option<Duration>,
    /// Limits on what a reply may contain, and on how many RESP3 pushes
    /// wait to be taken.
    pub limits: Limits,
    /// Whether a request that provably never left the client (the
    /// connection was found closed by the server, or holding bytes nobody
    /// asked for, before anything was written) is sent on a fresh
    /// connection made from these options. Defaults to `true`. Nothing that
    /// may have reached the server is ever sent twice, and a connection whose
    /// session no longer matches these options (after a `SELECT`, `AUTH`,
    /// `CLIENT`, `HELLO`, `MULTI`, `WATCH`, `SUBSCRIBE`... sent by hand, or
    /// inside a WATCH transaction) is never silently replaced. A connection
    /// from `Sentinel::connect_primary` is replaced through the sentinels
    /// (by one to the primary as it is then), not at its address.
    pub retry_unsent: bool,
}

impl ConnectOptions {
    /// Options for a TCP server with every other setting at its default.
    pub fn tcp(host: &str, port: u16) -> ConnectOptions {
        ConnectOptions::with_addr(Addr::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// Options for a Unix socket with every other setting at its default.
    pub fn unix(path: impl Into<PathBuf>) -> ConnectOptions {
        ConnectOptions::with_addr(Addr::Unix(path.into()))
    }

    fn with_addr(addr: Addr) -> ConnectOptions {
        ConnectOptions {
            addr,
            username: None,
            password: None,
            db: 0,
            client_name: None,
            protocol: Protocol::Resp2,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: None,
            write_timeout: None,
            limits: Limits::default(),
            retry_unsent: true,
        }
    }

    /// Sets the ACL user name and password.
    pub fn auth(mut self, username: Option<&str>, password: &str) -> ConnectOptions {
        self.username = username.map(str::to_string);
        self.password = Some(password.to_string());
        self
    }

    /// Sets the database selected on connect.
    pub fn db(mut self, db: i64) -> ConnectOptions {
        self.db = db;
        self
    }

    /// Sets the name given with `CLIENT SETNAME`.
    pub fn client_name(mut self, name: &str) -> ConnectOptions {
        self.client_name = Some(name.to_string());
        self
    }

    /// Sets the protocol.
    pub fn protocol(mut self, protocol: Protocol) -> ConnectOptions {
        self.protocol = protocol;
        self
    }

    /// Sets the connect-and-handshake deadline.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> ConnectOptions {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-reply read deadline.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> ConnectOptions {
        self.read_timeout = timeout;
        self
    }

    /// Sets the per-request write deadline.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> ConnectOptions {
        self.write_timeout = timeout;
        self
    }

    /// Sets the reply limits.
    pub fn limits(mut self, limits: Limits) -> ConnectOptions {
        self.limits = limits;
        self
    }

    /// Sets whether a request that was provably never sent is retried once
    /// on a fresh connection (see [`retry_unsent`](Self::retry_unsent)).
    pub fn retry_unsent(mut self, retry: bool) -> ConnectOptions {
        self.retry_unsent = retry;
        self
    }
}

/// `host:port` (IPv6 hosts in brackets), or the socket path.
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp { host, port } if host.contains(':') => write!(f, "[{}]:{}", host, port),
            Addr::Tcp { host, port } => write!(f, "{}:{}", host, port),
            Addr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}
