//! [`SentinelOptions`]: the sentinels to ask, the primary's name, how to
//! reach sentinels and how to reach data nodes (two separate sets of
//! credentials and timeouts), and the lookup's bound.

use std::time::{Duration, Instant};

use super::Sentinel;
use crate::connect::{Addr, ConnectOptions};
use crate::error::{Error, Result};

/// The connect, read and write timeout of a connection to a sentinel, by
/// default: sentinels answer from memory, and a dead one must not hold a
/// lookup up for long.
pub const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

/// The port of a sentinel URL that names none (Redis's 6379 otherwise).
pub const SENTINEL_PORT: u16 = 26379;

/// The bound of one lookup of the primary, by default.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How to find a primary through Redis Sentinel.
///
/// Two sets of connection options: [`sentinel`](Self::sentinel) for the
/// sentinels (their own credentials, short timeouts, database 0: nothing is
/// ever `SELECT`ed on a sentinel), and [`node`](Self::node) for the data
/// nodes, the primary and its replicas (credentials, database, protocol,
/// client name, timeouts, limits).
///
/// ```
/// use std::time::Duration;
/// use respline::{ConnectOptions, Protocol, SentinelOptions};
///
/// let options = SentinelOptions::new(
///     &["redis://:sentinel-secret@10.0.0.1:26379", "redis://10.0.0.2:26379"],
///     "mymaster",
/// )?
/// .node(
///     ConnectOptions::from_url("redis://app:data-secret@ignored/2")?
///         .protocol(Protocol::Resp3)
///         .read_timeout(Some(Duration::from_secs(1))),
/// );
/// assert_eq!(options.sentinels.len(), 2);
/// // The first URL's credentials are every sentinel's; the data nodes have their own.
/// assert_eq!(options.sentinel.password.as_deref(), Some("sentinel-secret"));
/// assert_eq!((options.node.password.as_deref(), options.node.db), (Some("data-secret"), 2));
/// assert_eq!(options.sentinel.read_timeout, Some(Duration::from_millis(500)));
/// // let sentinel = options.build()?;
/// # Ok::<(), respline::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SentinelOptions {
    /// The sentinels to ask, in order. Never forgotten: the sentinels
    /// learned from `SENTINEL SENTINELS` are added to them, and the one
    /// whose answer was confirmed moves to the front.
    pub sentinels: Vec<Addr>,
    /// The name the sentinels monitor the primary under (`sentinel monitor
    /// <name> ...`).
    pub primary_name: String,
    /// How data nodes are connected to: every setting but the address,
    /// which is the primary's or a replica's. Defaults to
    /// [`ConnectOptions::tcp`]'s defaults (no credentials, database 0,
    /// RESP2, a 10 s connect timeout, no read timeout).
    pub node: ConnectOptions,
    /// How sentinels are connected to: every setting but the address. Its
    /// database must be 0. Defaults to no credentials, RESP2 and
    /// [`SENTINEL_TIMEOUT`] (500 ms) to connect, read and write.
    pub sentinel: ConnectOptions,
    /// The bound of one lookup of the primary, pauses included: when the
    /// address the sentinels give cannot be confirmed (it refuses
    /// connections, or `ROLE` says it is not a primary: a failover under
    /// way), the lookup asks again after a pause (25 ms, doubling up to
    /// 400 ms) until this much time has passed since it began. Every
    /// connect and read of the lookup ends by then too. Defaults to
    /// [`LOOKUP_TIMEOUT`] (2 s).
    pub lookup_timeout: Duration,
    /// Whether the address a sentinel gives is confirmed with `ROLE` on
    /// the data node before it is used (`master` for the primary, `slave`
    /// and connected to its primary for a replica). Defaults to `true`;
    /// turn it off only if the data nodes' ACL user may not run `ROLE`.
    pub confirm_role: bool,
}

impl SentinelOptions {
    /// Options from the sentinels' URLs (`redis://[[user]:password@]host[:port]`,
    /// the port [`SENTINEL_PORT`], 26379, when none is given) and the
    /// primary's name. The first URL's credentials, protocol and client name
    /// apply to every sentinel; a database in a sentinel URL is an error
    /// (set the data nodes' with [`node`](Self::node)).
    pub fn new(sentinel_urls: &[&str], primary_name: &str) -> Result<SentinelOptions> {
        let mut addrs = Vec::with_capacity(sentinel_urls.len());
        let mut first = None;
        for url in sentinel_urls {
            let mut options = ConnectOptions::from_url(url)?;
            if let Addr::Tcp { port, .. } = &mut options.addr {
                if !names_port(url) {
                    *port = SENTINEL_PORT;
                }
            }
            if options.db != 0 {
                return Err(Error::Config(format!(
                    "sentinel: expected no database in a sentinel's URL (a sentinel has none, \
                     and nothing is SELECTed on it; set the data nodes' database with \
                     SentinelOptions::node), found database {} in {:?}",
                    options.db,
                    options.addr.to_string()
                )));
            }
            addrs.push(options.addr.clone());
            first.get_or_insert(options);
        }
        let mut options = SentinelOptions::from_addrs(addrs, primary_name);
        if let Some(first) = first {
            options.sentinel = sentinel_defaults(first);
        }
        options.check()?;
        Ok(options)
    }

    /// Options for these sentinels and this primary name, every other
    /// setting at its default.
    pub fn from_addrs(sentinels: Vec<Addr>, primary_name: &str) -> SentinelOptions {
        SentinelOptions {
            sentinels,
            primary_name: primary_name.to_string(),
            node: ConnectOptions::tcp("127.0.0.1", 6379),
            sentinel: sentinel_defaults(ConnectOptions::tcp("127.0.0.1", 26379)),
            lookup_timeout: LOOKUP_TIMEOUT,
            confirm_role: true,
        }
    }

    /// Sets [`node`](Self::node): how data nodes are connected to (its
    /// address is ignored).
    pub fn node(mut self, node: ConnectOptions) -> SentinelOptions {
        self.node = node;
        self
    }

    /// Sets the sentinels' ACL user name and password (Redis 6.2 and later
    /// sentinels take `sentinel sentinel-user` / `sentinel-pass` or
    /// `requirepass` in their own configuration).
    pub fn sentinel_auth(mut self, username: Option<&str>, password: &str) -> SentinelOptions {
        self.sentinel = self.sentinel.auth(username, password);
        self
    }

    /// Sets the connect, read and write timeout of connections to
    /// sentinels.
    pub fn sentinel_timeout(mut self, timeout: Duration) -> SentinelOptions {
        self.sentinel.connect_timeout = Some(timeout);
        self.sentinel.read_timeout = Some(timeout);
        self.sentinel.write_timeout = Some(timeout);
        self
    }

    /// Sets [`lookup_timeout`](Self::lookup_timeout).
    pub fn lookup_timeout(mut self, timeout: Duration) -> SentinelOptions {
        self.lookup_timeout = timeout;
        self
    }

    /// Sets [`confirm_role`](Self::confirm_role).
    pub fn confirm_role(mut self, confirm: bool) -> SentinelOptions {
        self.confirm_role = confirm;
        self
    }

    /// Checks the options and makes the handle (no I/O: the sentinels are
    /// first asked by the first lookup).
    pub fn build(self) -> Result<Sentinel> {
        Sentinel::new(self)
    }

    /// Rejects options no lookup could work with.
    pub(crate) fn check(&self) -> Result<()> {
        if self.sentinels.is_empty() {
            return Err(Error::Config(
                "sentinel: expected at least one sentinel address, found none".into(),
            ));
        }
        if self.primary_name.is_empty() {
            return Err(Error::Config(
                "sentinel: expected the name of the primary the sentinels monitor, found an \
                 empty name"
                    .into(),
            ));
        }
        if self.sentinel.db != 0 {
            return Err(Error::Config(format!(
                "sentinel: expected database 0 in the sentinels' options (nothing is SELECTed \
                 on a sentinel), found {}",
                self.sentinel.db
            )));
        }
        if self.lookup_timeout.is_zero() {
            return Err(Error::Config(
                "sentinel: expected a lookup timeout above zero, found 0".into(),
            ));
        }
        Ok(())
    }

    /// The options for one sentinel's connection, every deadline ending by
    /// `deadline`.
    pub(crate) fn for_sentinel(&self, addr: &Addr, deadline: Instant) -> ConnectOptions {
        let mut options = self.sentinel.clone();
        options.addr = addr.clone();
        options.connect_timeout = Some(within(options.connect_timeout, deadline));
        options.read_timeout = Some(within(options.read_timeout, deadline));
        options.write_timeout = Some(within(options.write_timeout, deadline));
        options
    }

    /// The options for a data node's connection.
    pub(crate) fn for_node(&self, addr: &Addr) -> ConnectOptions {
        let mut options = self.node.clone();
        options.addr = addr.clone();
        options
    }
}

/// A sentinel connection's options from `options`: short timeouts, and
/// nothing that would be refused by or meaningless to a sentinel.
fn sentinel_defaults(mut options: ConnectOptions) -> ConnectOptions {
    options.db = 0;
    options.connect_timeout = Some(SENTINEL_TIMEOUT);
    options.read_timeout = Some(SENTINEL_TIMEOUT);
    options.write_timeout = Some(SENTINEL_TIMEOUT);
    options
}

/// Whether a URL that parsed as a TCP one names its port: a `:` after the
/// host (after the `]` of an IPv6 one). Delimiters inside the user name and
/// password are escaped, so the host part is after the last `@` of the
/// authority.
pub(super) fn names_port(url: &str) -> bool {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => return true,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    match host_port.rfind(']') {
        Some(i) => host_port[i..].contains(':'),
        None => host_port.contains(':'),
    }
}

/// `timeout` (`None`: for ever), cut to what is left until `deadline`, and
/// at least a millisecond (a zero timeout means "none" to sockets).
pub(crate) fn within(timeout: Option<Duration>, deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    timeout
        .map_or(left, |t| t.min(left))
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_sentinel_options_apart_from_the_nodes() {
        let options = SentinelOptions::new(
            &["redis://u:p@10.0.0.1:26379", "redis://10.0.0.2:26380"],
            "mymaster",
        )
        .unwrap();
        assert_eq!(
            options.sentinels,
            [
                Addr::Tcp {
                    host: "10.0.0.1".into(),
                    port: 26379
                },
                Addr::Tcp {
                    host: "10.0.0.2".into(),
                    port: 26380
                }
            ]
        );
        assert_eq!(options.sentinel.username.as_deref(), Some("u"));
        assert_eq!(options.node.password, None);
        assert_eq!(options.sentinel.connect_timeout, Some(SENTINEL_TIMEOUT));
        assert!(options.confirm_role);
    }

    #[test]
    fn a_sentinel_url_without_a_port_means_26379() {
        let options = SentinelOptions::new(
            &[
                "redis://s1",
                "redis://u:p%3A1@s2/",
                "redis://[::1]",
                "redis://[::1]:7",
                "redis://s3:6379",
                "redis://:pw@s4?protocol=3",
            ],
            "m",
        )
        .unwrap();
        let ports: Vec<u16> = options
            .sentinels
            .iter()
            .map(|a| match a {
                Addr::Tcp { port, .. } => *port,
                Addr::Unix(_) => 0,
            })
            .collect();
        assert_eq!(ports, [26379, 26379, 26379, 7, 6379, 26379]);
    }

    #[test]
    fn invalid_options_are_refused_with_what_was_expected() {
        let err = SentinelOptions::new(&["redis://h:26379/3"], "m").unwrap_err();
        assert!(
            err.to_string()
                .contains("expected no database in a sentinel's URL"),
            "{}",
            err
        );
        let err = SentinelOptions::new(&[], "m").unwrap_err();
        assert!(
            err.to_string().contains("at least one sentinel address"),
            "{}",
            err
        );
        let err = SentinelOptions::new(&["redis://h:26379"], "").unwrap_err();
        assert!(err.to_string().contains("found an empty name"), "{}", err);
        let mut options = SentinelOptions::new(&["redis://h:26379"], "m").unwrap();
        options.sentinel.db = 1;
        assert!(options.check().is_err());
        let options = SentinelOptions::new(&["redis://h:26379"], "m")
            .unwrap()
            .lookup_timeout(Duration::ZERO);
        assert!(options.check().is_err());
    }

    #[test]
    fn sentinel_deadlines_are_cut_to_the_lookup() {
        let options = SentinelOptions::new(&["redis://h:26379"], "m").unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        let cut = options.for_sentinel(&options.sentinels[0], soon);
        assert!(cut.connect_timeout.unwrap() <= Duration::from_millis(100));
        assert!(cut.read_timeout.unwrap() >= Duration::from_millis(1));
        let late = Instant::now() + Duration::from_secs(60);
        let full = options.for_sentinel(&options.sentinels[0], late);
        assert_eq!(full.read_timeout, Some(SENTINEL_TIMEOUT));
        assert_eq!(within(None, Instant::now()), Duration::from_millis(1));
    }
}
