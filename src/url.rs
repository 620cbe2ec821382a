//! `redis://`, `unix://` and `redis+unix://` URLs → [`ConnectOptions`].
//!
//! A strict, hand-written parser: anything it does not understand is an
//! [`Error::Config`] that says what was expected and quotes what was found,
//! never a silent guess. Passwords are never quoted: where a quoted part might
//! hold one (or a piece of one, when a password is not percent-encoded), the
//! message shows `***` instead.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::encode::Protocol;
use crate::error::{Error, Result};
use crate::options::ConnectOptions;

const SUPPORTED_SCHEMES: &str = "redis://, valkey://, unix://, redis+unix:// or valkey+unix://";

const QUERY_KEYS: &str =
    "db, protocol, client_name (or name), user (or username), password (or pass)";

const NO_TLS: &str = "respline has no built-in TLS: open a TLS stream with a TLS crate of your \
                      choice (for example rustls or native-tls) and pass it to \
                      Connection::new(stream)";

const DEFAULT_PORT: u16 = 6379;

impl ConnectOptions {
    /// Parses a connection URL.
    ///
    /// Everything a URL does not set keeps the default of
    /// [`ConnectOptions::tcp`] or [`ConnectOptions::unix`]; timeouts and
    /// limits cannot be given in a URL (set them with the builder methods).
    ///
    /// # Accepted forms
    ///
    /// * `redis://host`: TCP to `host`, port 6379, database 0. The host is a
    ///   name (letters, digits, `-`, `.`, `_`), an IPv4 address, or an IPv6
    ///   address in brackets, as in `redis://[::1]` (kept without the
    ///   brackets in [`Addr::Tcp`](crate::Addr::Tcp)).
    /// * `redis://host:port/db`: the port is 1 to 65535, digits only; the
    ///   path is empty, `/` (both database 0) or `/` and a non-negative
    ///   database number.
    /// * `redis://user:password@host`: ACL user name and password.
    /// * `redis://:password@host` and `redis://password@host`: password only
    ///   (a lone word before `@` is the password, as redis-cli and redigo
    ///   read it). `redis://:@host` sets neither; `redis://user:@host` sets
    ///   the user and an empty password.
    /// * `unix:///path/to/redis.sock` and `redis+unix:///path/to/redis.sock`:
    ///   a Unix socket. The path must be absolute and follow `unix://`
    ///   directly (three slashes in all): a host or user part is an error;
    ///   give the database and the credentials as query parameters.
    /// * `valkey://` and `valkey+unix://` are aliases of `redis://` and
    ///   `redis+unix://`.
    /// * A query, for both kinds: `?key=value&key=value` with these keys
    ///   (matched exactly, each at most once):
    ///   * `db`: the database number. With a non-zero database in the path
    ///     as well, it is an error.
    ///   * `protocol`: `2`, `3`, `resp2` or `resp3` (any case).
    ///   * `client_name` (or `name`): the name set with `CLIENT SETNAME`,
    ///     printable ASCII without spaces, as Redis requires.
    ///   * `user` (or `username`) and `password` (or `pass`): credentials;
    ///     giving one also before the host is an error, and a user name
    ///     needs a password.
    ///
    /// Schemes are case-insensitive (`REDIS://` is fine). Percent-escapes
    /// (`%40` for `@`, `%3A` for `:`, `%2F` for `/`, `%25` for `%`, `%26`
    /// for `&`, `%23` for `#`, `%20` for a space) are decoded in the user
    /// name, the password, the socket path and query values, and must decode
    /// to UTF-8; a `+` stands for itself. In a TCP URL an `@` after the host
    /// must be written `%40`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`], with a message that says what was expected and
    /// quotes what was found (but never a password), for: an empty URL;
    /// whitespace around it or spaces or control characters inside it (the
    /// URL is not trimmed); a missing or unknown scheme; `rediss://`,
    /// `valkeys://` and `rediss+unix://`, since TLS is not built in (open a
    /// TLS stream yourself and pass it to
    /// [`Connection::new`](crate::Connection::new)); a missing or malformed
    /// host; a port that is empty, not a number, 0 or above 65535; a path
    /// other than a database number; a relative Unix socket path; a
    /// malformed percent-escape or non-UTF-8 result; a fragment (`#...`);
    /// and an unknown, repeated, empty or invalid query parameter.
    ///
    /// ```
    /// use respline::{Addr, ConnectOptions, Protocol};
    ///
    /// let opts = ConnectOptions::from_url("redis://app:s%40cret@[::1]:6380/2?protocol=3")?;
    /// assert_eq!(opts.addr, Addr::Tcp { host: "::1".to_string(), port: 6380 });
    /// assert_eq!(opts.username.as_deref(), Some("app"));
    /// assert_eq!(opts.password.as_deref(), Some("s@cret"));
    /// assert_eq!((opts.db, opts.protocol), (2, Protocol::Resp3));
    ///
    /// let opts = ConnectOptions::from_url("unix:///run/redis.sock?db=3&password=x")?;
    /// assert_eq!(opts.addr, Addr::Unix("/run/redis.sock".into()));
    /// assert_eq!((opts.db, opts.password.as_deref()), (3, Some("x")));
    ///
    /// let err = ConnectOptions::from_url("redis://h/0?dbb=1").unwrap_err();
    /// assert!(err.to_string().contains("\"dbb\" is not supported"));
    /// let err = ConnectOptions::from_url("rediss://h").unwrap_err();
    /// assert!(err.to_string().contains("no built-in TLS"));
    /// # Ok::<(), respline::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<ConnectOptions> {
        parse(url).map_err(Error::Config)
    }
}

/// Parse steps report a message; `from_url` wraps it in `Error::Config`.
type Parsed<T> = std::result::Result<T, String>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Unix,
}

/// The URL being parsed, and the byte offset from which its text may hold a
/// password (the first `pass...=` query parameter onwards: an unescaped `&`
/// or `#` in a password would make its tail look like other parts).
struct Source<'a> {
    url: &'a str,
    secret_from: usize,
}

impl Source<'_> {
    /// `part`, a slice of the URL, quoted; or `***` with an explanation when
    /// it may hold part of a password.
    fn show(&self, part: &str) -> String {
        let start = (part.as_ptr() as usize).wrapping_sub(self.url.as_ptr() as usize);
        debug_assert!(start <= self.url.len() && start + part.len() <= self.url.len());
        if start.saturating_add(part.len()) > self.secret_from {
            "*** (not shown: it comes after a password, which may hold an unescaped '&' or '#'; \
             percent-encode those as %26 and %23)"
                .to_string()
        } else {
            format!("{:?}", part)
        }
    }
}

fn parse(url: &str) -> Parsed<ConnectOptions> {
    check_characters(url)?;
    let (scheme, rest) = split_scheme(url)?;
    let kind = scheme_kind(scheme)?;

    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let after_offset = url.len() - after.len();
    let src = Source {
        url,
        secret_from: secret_start(after).map_or(usize::MAX, |i| after_offset + i),
    };

    if kind == Kind::Tcp && after.contains('@') {
        // Either an unescaped '/', '?' or '#' cut a user name or password
        // short (so the text around it may be a password: quote nothing), or
        // a query value holds a raw '@'.
        return Err(
            "URL has an '@' after the host: expected the user name and password to have \
                    any '/', '?' or '#' in them percent-encoded (%2F, %3F, %23), and '@' \
                    elsewhere written as %40 (the URL is not shown: it may hold a password)"
                .to_string(),
        );
    }
    if kind == Kind::Unix && !authority.is_empty() {
        return Err(unix_authority_error(&src, rest));
    }
    if let Some(i) = after.find('#') {
        return Err(format!(
            "URL fragment: expected no '#' part (write a '#' inside a value as %23), found {}",
            src.show(&after[i..])
        ));
    }
    let (path, query) = match after.find('?') {
        Some(i) => (&after[..i], Some(&after[i + 1..])),
        None => (after, None),
    };

    let (mut opts, path_db) = match kind {
        Kind::Tcp => {
            let auth = parse_authority(&src, authority)?;
            let mut opts = ConnectOptions::tcp(&auth.host, auth.port);
            opts.username = auth.username;
            opts.password = auth.password;
            (opts, parse_db_path(&src, path)?)
        }
        Kind::Unix => (ConnectOptions::unix(parse_unix_path(&src, path)?), None),
    };
    let params = match query {
        Some(q) => parse_query(&src, q)?,
        None => Params::default(),
    };

    match (params.db, path_db) {
        (Some((_, param)), Some((db, path))) if db != 0 => {
            return Err(format!(
            "URL gives the database twice, in the path ({}) and as {}: expected it in one place",
            src.show(path),
            src.show(param)
        ))
        }
        (Some((db, _)), _) | (None, Some((db, _))) => opts.db = db,
        (None, None) => {}
    }
    if let Some(user) = params.user {
        if opts.username.is_some() {
            return Err(
                "URL gives the user name twice, before the host and as a query \
                        parameter: expected it in one place"
                    .to_string(),
            );
        }
        opts.username = Some(user);
    }
    if let Some(password) = params.password {
        if opts.password.is_some() {
            return Err(
                "URL gives the password twice, before the host and as a query \
                        parameter: expected it in one place"
                    .to_string(),
            );
        }
        opts.password = Some(password);
    }
    if let (Some(user), None) = (&opts.username, &opts.password) {
        return Err(format!(
            "URL gives a user name ({:?}) but no password: expected a password with it \
             (AUTH needs both), as in ?user=name&password=secret",
            user
        ));
    }
    if let Some(protocol) = params.protocol {
        opts.protocol = protocol;
    }
    if params.client_name.is_some() {
        opts.client_name = params.client_name;
    }
    Ok(opts)
}

/// Rejects an empty URL, whitespace around it, and spaces or control
/// characters inside it.
fn check_characters(url: &str) -> Parsed<()> {
    let first = match url.chars().next() {
        Some(c) => c,
        None => {
            return Err("URL is empty: expected one like redis://host:6379/0 or \
                        unix:///path/to/redis.sock"
                .to_string())
        }
    };
    if first.is_whitespace() {
        return Err(format!(
            "URL starts with whitespace ({:?}): expected it to start with its scheme, as in \
             redis://... (URLs are not trimmed)",
            first
        ));
    }
    if let Some(last) = url.chars().next_back().filter(|c| c.is_whitespace()) {
        return Err(format!(
            "URL ends with whitespace ({:?}): expected none (URLs are not trimmed)",
            last
        ));
    }
    if let Some((i, c)) = url
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "URL contains {:?} at byte {}: expected no spaces or control characters \
             (percent-encode them, a space as %20)",
            c, i
        ));
    }
    Ok(())
}

/// Splits `scheme://rest`.
fn split_scheme(url: &str) -> Parsed<(&str, &str)> {
    let i = match url.find("://") {
        Some(i) => i,
        None => {
            let lower = url.to_ascii_lowercase();
            let found = if url.contains('@') || lower.contains("pass") {
                "no \"://\" (the URL is not shown: it may hold a password)".to_string()
            } else {
                format!("{:?}", url)
            };
            let hint = if lower.starts_with("unix:") || lower.starts_with("redis+unix:") {
                "; a Unix socket URL has three slashes before an absolute path, as in \
                 unix:///tmp/redis.sock"
            } else {
                ""
            };
            return Err(format!(
                "URL must start with a scheme and \"://\" ({}), found {}{}",
                SUPPORTED_SCHEMES, found, hint
            ));
        }
    };
    let scheme = &url[..i];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        let found = if scheme.contains('@') || scheme.contains(':') {
            "something else (not shown: it may hold a password)".to_string()
        } else {
            format!("{:?}", scheme)
        };
        return Err(format!(
            "URL scheme: expected a letter then letters, digits, '+', '-' or '.' before \"://\" \
             ({}), found {}",
            SUPPORTED_SCHEMES, found
        ));
    }
    Ok((scheme, &url[i + 3..]))
}

fn scheme_kind(scheme: &str) -> Parsed<Kind> {
    match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => Ok(Kind::Tcp),
        "unix" | "redis+unix" | "valkey+unix" => Ok(Kind::Unix),
        "rediss" | "valkeys" | "rediss+unix" | "valkeys+unix" => Err(format!(
            "URL scheme {:?} asks for TLS, but {}",
            scheme, NO_TLS
        )),
        _ => Err(format!(
            "URL scheme {:?} is not supported: expected {}",
            scheme, SUPPORTED_SCHEMES
        )),
    }
}

/// The offset in `after` (the URL after its authority) of the first query
/// key that looks like a password key, in any case.
fn secret_start(after: &str) -> Option<usize> {
    let lower = after.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    lower
        .match_indices("pass")
        .map(|(i, _)| i)
        .find(|&i| i > 0 && matches!(bytes[i - 1], b'?' | b'&' | b'#'))
}

/// A Unix URL with something between `unix://` and the path.
fn unix_authority_error(src: &Source<'_>, rest: &str) -> String {
    let before_slash = &rest[..rest.find('/').unwrap_or(rest.len())];
    if before_slash.contains('@') {
        return "URL: a Unix socket URL takes no user name or password before its path: \
                expected unix:///path/to/redis.sock?user=name&password=secret, found a \
                user-info part (not shown: it may hold a password)"
            .to_string();
    }
    let relative = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    format!(
        "URL socket path must be absolute: expected '/' right after \"unix://\" (three slashes \
         in all, as in unix:///tmp/redis.sock; a Unix URL takes no host), found {}",
        src.show(relative)
    )
}

struct Authority {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

/// `[userinfo@]host[:port]` of a TCP URL.
fn parse_authority(src: &Source<'_>, authority: &str) -> Parsed<Authority> {
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        Some(userinfo) => parse_userinfo(src, userinfo)?,
        None => (None, None),
    };
    let (host, port) = parse_host_port(src, host_port)?;
    Ok(Authority {
        host,
        port,
        username,
        password,
    })
}

/// `user:password`, `:password`, `password`, `:` or nothing.
fn parse_userinfo(src: &Source<'_>, userinfo: &str) -> Parsed<(Option<String>, Option<String>)> {
    if userinfo.contains('@') {
        return Err(
            "URL user name or password contains an unescaped '@': expected it written \
                    as %40 (not shown: it may be part of the password)"
                .to_string(),
        );
    }
    let (user_raw, password_raw) = match userinfo.find(':') {
        Some(i) => (&userinfo[..i], &userinfo[i + 1..]),
        None => ("", userinfo),
    };
    let user = decode(user_raw).map_err(|e| decode_error(src, "user name", user_raw, e))?;
    let password = decode(password_raw).map_err(|e| secret_decode_error("password", e))?;
    Ok(if !user.is_empty() {
        (Some(user), Some(password))
    } else if password.is_empty() {
        (None, None)
    } else {
        (None, Some(password))
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host_port(src: &Source<'_>, host_port: &str) -> Parsed<(String, u16)> {
    if host_port.is_empty() {
        return Err(
            "URL has no host: expected a host name or address after \"://\" (and after \
                    the user-info part ending in '@', if any), found nothing"
                .to_string(),
        );
    }
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let close = match bracketed.find(']') {
            Some(i) => i,
            None => {
                return Err(format!(
                    "URL host: expected ']' to close the IPv6 address, found {}",
                    src.show(host_port)
                ))
            }
        };
        let inner = &bracketed[..close];
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "URL host: expected an IPv6 address between '[' and ']', found {}",
                src.show(inner)
            ));
        }
        let tail = &bracketed[close + 1..];
        let port = if tail.is_empty() {
            DEFAULT_PORT
        } else if let Some(port) = tail.strip_prefix(':') {
            parse_port(src, port)?
        } else {
            return Err(format!(
                "URL host: expected ':' and a port, or nothing, after {}, found {}",
                src.show(&host_port[..close + 2]),
                src.show(tail)
            ));
        };
        return Ok((inner.to_string(), port));
    }
    let (host, port) = match host_port.find(':') {
        Some(i) => (&host_port[..i], Some(&host_port[i + 1..])),
        None => (host_port, None),
    };
    if port.map_or(false, |p| p.contains(':')) {
        return Err(format!(
            "URL host: expected an IPv6 address in brackets, as in redis://[::1]:6379, found {}",
            src.show(host_port)
        ));
    }
    if host.is_empty() {
        return Err(format!(
            "URL has no host: expected a host name or address before {}, found nothing",
            src.show(host_port)
        ));
    }
    check_host(src, host)?;
    let port = match port {
        Some(port) => parse_port(src, port)?,
        None => DEFAULT_PORT,
    };
    Ok((host.to_string(), port))
}

/// A host name or an IPv4 address.
fn check_host(src: &Source<'_>, host: &str) -> Parsed<()> {
    if let Some(c) = host
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "URL host: expected a host name (letters, digits, '-', '.', '_'), an IPv4 address \
             or an IPv6 address in brackets, found {:?} in {}",
            c,
            src.show(host)
        ));
    }
    if host.bytes().any(|b| b.is_ascii_digit())
        && host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        if host.parse::<Ipv4Addr>().is_err() {
            return Err(format!(
                "URL host: expected an IPv4 address (four numbers from 0 to 255, as in \
                 127.0.0.1), found {}",
                src.show(host)
            ));
        }
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    for label in name.split('.') {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') || label.len() > 63 {
            return Err(format!(
                "URL host: expected dot-separated names of 1 to 63 characters, none starting or \
                 ending with '-', found {:?} in {}",
                label,
                src.show(host)
            ));
        }
    }
    Ok(())
}

fn parse_port(src: &Source<'_>, port: &str) -> Parsed<u16> {
    if port.is_empty() {
        return Err(
            "URL port: expected a number from 1 to 65535 after ':', found nothing".to_string(),
        );
    }
    match port.parse::<u16>() {
        Ok(n) if n != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "URL port: expected a number from 1 to 65535, found {}",
            src.show(port)
        )),
    }
}

/// The path of a TCP URL: nothing, `/`, or `/` and a database number.
fn parse_db_path<'a>(src: &Source<'_>, path: &'a str) -> Parsed<Option<(i64, &'a str)>> {
    if path.is_empty() || path == "/" {
        return Ok(None);
    }
    let digits = &path[1..];
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(db) = digits.parse::<i64>() {
            return Ok(Some((db, path)));
        }
    }
    Err(format!(
        "URL path: expected nothing, \"/\" or \"/\" and a database number (as in /0 or /3), \
         found {}",
        src.show(path)
    ))
}

/// The percent-decoded absolute path of a Unix URL.
fn parse_unix_path(src: &Source<'_>, path: &str) -> Parsed<PathBuf> {
    if path.is_empty() {
        return Err(
            "URL socket path: expected an absolute path after \"unix://\", as in \
                    unix:///tmp/redis.sock, found nothing"
                .to_string(),
        );
    }
    let decoded = decode(path).map_err(|e| decode_error(src, "socket path", path, e))?;
    if decoded.contains('\0') {
        return Err(format!(
            "URL socket path: expected no NUL byte, found %00 in {}",
            src.show(path)
        ));
    }
    if decoded.ends_with('/') {
        return Err(format!(
            "URL socket path: expected the path of a socket file, found {}, which ends in '/'",
            src.show(path)
        ));
    }
    Ok(PathBuf::from(decoded))
}

#[derive(Default)]
struct Params<'a> {
    /// The number and its whole `db=...` parameter, for messages.
    db: Option<(i64, &'a str)>,
    protocol: Option<Protocol>,
    client_name: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

/// `key=value&key=value`, without the `?`.
fn parse_query<'a>(src: &Source<'_>, query: &'a str) -> Parsed<Params<'a>> {
    let mut params = Params::default();
    if query.is_empty() {
        return Ok(params);
    }
    // Each setting with the key that gave it, to report repeats.
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for param in query.split('&') {
        if param.is_empty() {
            return Err(
                "URL query: expected key=value parameters separated by single '&', found \
                        an empty one (a '&' at the start or the end, or two in a row)"
                    .to_string(),
            );
        }
        let (key, raw) = match param.find('=') {
            Some(i) => (&param[..i], &param[i + 1..]),
            None if canonical_key(param).is_some() => {
                return Err(format!(
                    "URL query parameter {:?}: expected {}=value, found no '='",
                    param, param
                ))
            }
            None => {
                return Err(format!(
                    "URL query: expected key=value, found {}",
                    src.show(param)
                ))
            }
        };
        let setting = match canonical_key(key) {
            Some(setting) => setting,
            None => {
                return Err(format!(
                    "URL query parameter {} is not supported: expected one of {}",
                    src.show(key),
                    QUERY_KEYS
                ))
            }
        };
        if let Some(&(_, first)) = seen.iter().find(|&&(s, _)| s == setting) {
            return Err(if first == key {
                format!(
                    "URL query parameter {:?} is given twice: expected it once",
                    key
                )
            } else {
                format!(
                    "URL query parameters {:?} and {:?} both set the {}: expected one of them",
                    first,
                    key,
                    setting.replace('_', " ")
                )
            });
        }
        seen.push((setting, key));
        if raw.is_empty() {
            return Err(format!(
                "URL query parameter {:?}: expected {}, found an empty value",
                key,
                expected_value(setting)
            ));
        }
        let what = format!("query parameter {:?}", key);
        let value = if setting == "password" {
            decode(raw).map_err(|e| secret_decode_error(&what, e))?
        } else {
            decode(raw).map_err(|e| decode_error(src, &what, raw, e))?
        };
        let invalid = || {
            format!(
                "URL query parameter {:?}: expected {}, found {}",
                key,
                expected_value(setting),
                src.show(raw)
            )
        };
        match setting {
            "db" => {
                if !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                params.db = Some((value.parse::<i64>().map_err(|_| invalid())?, param));
            }
            "protocol" => {
                params.protocol = Some(match value.to_ascii_lowercase().as_str() {
                    "2" | "resp2" => Protocol::Resp2,
                    "3" | "resp3" => Protocol::Resp3,
                    _ => return Err(invalid()),
                });
            }
            "client_name" => {
                if !value.chars().all(|c| ('!'..='~').contains(&c)) {
                    return Err(invalid());
                }
                params.client_name = Some(value);
            }
            "user" => params.user = Some(value),
            _ => params.password = Some(value),
        }
    }
    Ok(params)
}

/// The setting a query key names, if it is one of the accepted keys.
fn canonical_key(key: &str) -> Option<&'static str> {
    match key {
        "db" => Some("db"),
        "protocol" => Some("protocol"),
        "client_name" | "name" => Some("client_name"),
        "user" | "username" => Some("user"),
        "password" | "pass" => Some("password"),
        _ => None,
    }
}

fn expected_value(setting: &str) -> &'static str {
    match setting {
        "db" => "a database number (0, 1, 2, ...)",
        "protocol" => "2, 3, resp2 or resp3",
        "client_name" => "a client name of printable ASCII characters without spaces",
        "user" => "a user name",
        _ => "a password",
    }
}

enum DecodeError<'a> {
    /// The malformed escape: `%` and up to two characters after it.
    BadEscape(&'a str),
    NotUtf8,
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn decode(raw: &str) -> std::result::Result<String, DecodeError<'_>> {
    if !raw.contains('%') {
        return Ok(raw.to_string());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match (
            bytes.get(i + 1).and_then(|&b| hex_digit(b)),
            bytes.get(i + 2).and_then(|&b| hex_digit(b)),
        ) {
            (Some(high), Some(low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            _ => {
                let end = raw[i..]
                    .char_indices()
                    .nth(3)
                    .map_or(raw.len(), |(j, _)| i + j);
                return Err(DecodeError::BadEscape(&raw[i..end]));
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_error(src: &Source<'_>, what: &str, raw: &str, e: DecodeError<'_>) -> String {
    match e {
        DecodeError::BadEscape(escape) => format!(
            "URL {}: expected '%' followed by two hex digits (a literal '%' is written %25), \
             found {} in {}",
            what,
            src.show(escape),
            src.show(raw)
        ),
        DecodeError::NotUtf8 => format!(
            "URL {}: expected percent-escapes that decode to UTF-8, found {}, which does not",
            what,
            src.show(raw)
        ),
    }
}

fn secret_decode_error(what: &str, e: DecodeError<'_>) -> String {
    match e {
        DecodeError::BadEscape(_) => format!(
            "URL {}: expected '%' followed by two hex digits (a literal '%' is written %25), \
             found a malformed escape (not shown: it is part of the password)",
            what
        ),
        DecodeError::NotUtf8 => format!(
            "URL {}: expected percent-escapes that decode to UTF-8, found some that do not \
             (not shown: they are part of the password)",
            what
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::decode::Limits;
    use crate::encode::Protocol;
    use crate::error::Error;
    use crate::options::{Addr, ConnectOptions};

    fn ok(url: &str) -> ConnectOptions {
        match ConnectOptions::from_url(url) {
            Ok(opts) => opts,
            Err(e) => panic!("{:?} should parse, got: {}", url, e),
        }
    }

    /// The message of the `Error::Config` that `url` must give.
    fn err(url: &str) -> String {
        match ConnectOptions::from_url(url) {
            Ok(opts) => panic!("{:?} should fail, parsed as {:?}", url, opts),
            Err(Error::Config(msg)) => msg,
            Err(e) => panic!("{:?} should fail with Error::Config, got {:?}", url, e),
        }
    }

    /// `url` fails with a message containing every one of `parts`.
    fn err_has(url: &str, parts: &[&str]) -> String {
        let msg = err(url);
        for part in parts {
            assert!(
                msg.contains(part),
                "error for {:?} should contain {:?}, got: {}",
                url,
                part,
                msg
            );
        }
        msg
    }

    /// `url` fails, and `secret` appears nowhere in the message.
    fn err_hides(url: &str, secret: &str) -> String {
        let msg = err(url);
        assert!(
            !msg.contains(secret),
            "error for {:?} leaks {:?}: {}",
            url,
            secret,
            msg
        );
        msg
    }

    fn tcp(host: &str, port: u16) -> Addr {
        Addr::Tcp {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn host_only_keeps_every_default() {
        assert_eq!(
            ok("redis://localhost"),
            ConnectOptions::tcp("localhost", 6379)
        );
        let opts = ok("redis://localhost");
        assert_eq!(opts.connect_timeout, Some(Duration::from_secs(10)));
        assert_eq!(opts.read_timeout, None);
        assert_eq!(opts.write_timeout, None);
        assert_eq!(opts.limits, Limits::default());
        assert_eq!(opts.protocol, Protocol::Resp2);
        assert_eq!((opts.db, opts.username, opts.password), (0, None, None));
    }

    #[test]
    fn host_port_and_db() {
        let opts = ok("redis://127.0.0.1:6380/2");
        assert_eq!((opts.addr, opts.db), (tcp("127.0.0.1", 6380), 2));
        assert_eq!(
            ok("redis://cache.example.com:1/15").addr,
            tcp("cache.example.com", 1)
        );
        assert_eq!(ok("redis://h:65535").addr, tcp("h", 65535));
        assert_eq!(ok("redis://h:06379").addr, tcp("h", 6379));
        assert_eq!(
            ok("redis://redis_1.internal-net").addr,
            tcp("redis_1.internal-net", 6379)
        );
        assert_eq!(ok("redis://example.com.").addr, tcp("example.com.", 6379));
        assert_eq!(ok("redis://h").db, 0);
        assert_eq!(ok("redis://h/").db, 0);
        assert_eq!(ok("redis://h/0").db, 0);
        assert_eq!(ok("redis://h:7000/").addr, tcp("h", 7000));
        assert_eq!(ok("redis://h/15").db, 15);
        assert_eq!(ok("redis://h/007").db, 7);
        assert_eq!(ok("redis://h/9223372036854775807").db, i64::MAX);
    }

    #[test]
    fn ipv6_in_brackets() {
        let opts = ok("redis://[::1]:6380/3");
        assert_eq!((opts.addr, opts.db), (tcp("::1", 6380), 3));
        assert_eq!(ok("redis://[::1]").addr, tcp("::1", 6379));
        assert_eq!(ok("redis://[::1]/").addr, tcp("::1", 6379));
        assert_eq!(
            ok("redis://u:p@[2001:db8::7]:7000?db=1").addr,
            tcp("2001:db8::7", 7000)
        );
        assert_eq!(
            ok("redis://[::ffff:10.0.0.1]").addr,
            tcp("::ffff:10.0.0.1", 6379)
        );
    }

    #[test]
    fn userinfo_forms() {
        let opts = ok("redis://app:pw@h");
        assert_eq!(opts.username.as_deref(), Some("app"));
        assert_eq!(opts.password.as_deref(), Some("pw"));

        let opts = ok("redis://:secret@h");
        assert_eq!(
            (opts.username, opts.password.as_deref()),
            (None, Some("secret"))
        );

        // A lone word is the password, as redis-cli and redigo read it.
        let opts = ok("redis://secret@h");
        assert_eq!(
            (opts.username, opts.password.as_deref()),
            (None, Some("secret"))
        );

        let opts = ok("redis://:@h:6380");
        assert_eq!((opts.username, opts.password), (None, None));
        assert_eq!(opts.addr, tcp("h", 6380));
        let opts = ok("redis://@h");
        assert_eq!((opts.username, opts.password), (None, None));

        let opts = ok("redis://app:@h");
        assert_eq!(opts.username.as_deref(), Some("app"));
        assert_eq!(opts.password.as_deref(), Some(""));

        // A ':' in the password is kept.
        let opts = ok("redis://app:a:b@h");
        assert_eq!(opts.password.as_deref(), Some("a:b"));
    }

    #[test]
    fn userinfo_is_percent_decoded() {
        let opts = ok("redis://u%40x:p%3Ass@h");
        assert_eq!(opts.username.as_deref(), Some("u@x"));
        assert_eq!(opts.password.as_deref(), Some("p:ss"));
        let opts = ok("redis://%E2%9C%93:a%2Fb%3Fc%23d%25e%26f+g@h");
        assert_eq!(opts.username.as_deref(), Some("\u{2713}"));
        assert_eq!(opts.password.as_deref(), Some("a/b?c#d%e&f+g"));
        assert_eq!(ok("redis://%73ecret@h").password.as_deref(), Some("secret"));
    }

    #[test]
    fn schemes() {
        assert_eq!(ok("REDIS://h").addr, tcp("h", 6379));
        assert_eq!(ok("Redis://h").addr, tcp("h", 6379));
        assert_eq!(ok("valkey://h:1/2"), ok("redis://h:1/2"));
        assert_eq!(ok("VALKEY://h"), ok("redis://h"));
        assert_eq!(ok("valkey+unix:///s"), ok("unix:///s"));
        assert_eq!(ok("UNIX:///s"), ok("unix:///s"));
        assert_eq!(ok("Redis+Unix:///s"), ok("unix:///s"));
    }

    #[test]
    fn unix_sockets() {
        let opts = ok("unix:///tmp/r.sock?db=3&password=x");
        assert_eq!(opts.addr, Addr::Unix(PathBuf::from("/tmp/r.sock")));
        assert_eq!((opts.db, opts.password.as_deref()), (3, Some("x")));
        assert_eq!(opts.username, None);

        let opts = ok("redis+unix:///tmp/r.sock");
        assert_eq!(opts, ConnectOptions::unix("/tmp/r.sock"));
        assert_eq!(opts.connect_timeout, Some(Duration::from_secs(10)));

        let opts = ok("unix:///var/run/redis/redis%20server.sock?user=app&pass=pw");
        assert_eq!(
            opts.addr,
            Addr::Unix(PathBuf::from("/var/run/redis/redis server.sock"))
        );
        assert_eq!(opts.username.as_deref(), Some("app"));
        assert_eq!(opts.password.as_deref(), Some("pw"));
        let opts = ok("unix:///s?username=a%26b&password=p%3D%26");
        assert_eq!(opts.username.as_deref(), Some("a&b"));
        assert_eq!(opts.password.as_deref(), Some("p=&"));

        // '@' and ':' are ordinary in a socket path and in unix query values.
        assert_eq!(
            ok("unix:///tmp/a@b:c.sock").addr,
            Addr::Unix("/tmp/a@b:c.sock".into())
        );
        assert_eq!(
            ok("unix:///s?user=me@corp&password=p").username.as_deref(),
            Some("me@corp")
        );
        assert_eq!(ok("unix:///s?").addr, Addr::Unix("/s".into()));
    }

    #[test]
    fn query_parameters() {
        let opts = ok("redis://h?db=4&protocol=3&client_name=billing");
        assert_eq!(opts.db, 4);
        assert_eq!(opts.protocol, Protocol::Resp3);
        assert_eq!(opts.client_name.as_deref(), Some("billing"));
        for (value, protocol) in [
            ("2", Protocol::Resp2),
            ("3", Protocol::Resp3),
            ("resp2", Protocol::Resp2),
            ("RESP3", Protocol::Resp3),
            ("Resp3", Protocol::Resp3),
        ] {
            let url = format!("redis://h/?protocol={}", value);
            assert_eq!(ok(&url).protocol, protocol, "{}", url);
        }
        assert_eq!(
            ok("redis://h?name=a%2Db").client_name.as_deref(),
            Some("a-b")
        );
        let opts = ok("redis://h:1/?user=u&password=p%26q");
        assert_eq!(opts.username.as_deref(), Some("u"));
        assert_eq!(opts.password.as_deref(), Some("p&q"));
        assert_eq!(ok("redis://h?pass=p").password.as_deref(), Some("p"));
        // A zero db in the path does not conflict with ?db=.
        assert_eq!(ok("redis://h/0?db=5").db, 5);
        assert_eq!(ok("redis://h/?db=5").db, 5);
        assert_eq!(ok("redis://h?").db, 0);
        // Credentials may be split between the user-info part and the query.
        let opts = ok("redis://app:@h");
        assert_eq!(opts.password.as_deref(), Some(""));
        let opts = ok("redis://:pw@h?user=app");
        assert_eq!(opts.username.as_deref(), Some("app"));
        assert_eq!(opts.password.as_deref(), Some("pw"));
    }

    #[test]
    fn whitespace_and_control_characters() {
        err_has(
            " redis://h",
            &["starts with whitespace", "' '", "not trimmed"],
        );
        err_has(
            "redis://h\n",
            &["ends with whitespace", "'\\n'", "not trimmed"],
        );
        err_has("redis://h\t", &["ends with whitespace"]);
        err_has("redis://h /0", &["' '", "at byte 9", "%20"]);
        err_has("unix:///tmp/a b.sock", &["' '", "%20"]);
        err_has("redis://h/\u{7f}", &["'\\u{7f}'"]);
        err_has("", &["URL is empty", "redis://"]);
        // The character is named, the password is not.
        err_hides("redis://:hunter2 x@h", "hunter2");
    }

    #[test]
    fn scheme_errors() {
        err_has(
            "http://h",
            &[
                "scheme \"http\" is not supported",
                "redis://",
                "unix://",
                "redis+unix://",
            ],
        );
        err_has("redis:/h", &["\"://\"", "found \"redis:/h\""]);
        err_has("localhost:6379", &["\"://\"", "found \"localhost:6379\""]);
        err_has("unix:/tmp/s", &["three slashes", "unix:///tmp/redis.sock"]);
        err_has("://h", &["scheme", "found \"\""]);
        err_has("9p://h", &["scheme", "found \"9p\""]);
        err_hides("u:hunter2@h", "hunter2");
        err_hides("u:hunter2@h://x", "hunter2");
    }

    #[test]
    fn tls_schemes_explain_how_to_bring_tls() {
        for url in [
            "rediss://h:6380",
            "REDISS://:hunter2@h",
            "valkeys://h",
            "rediss+unix:///s",
            "valkeys+unix:///s",
        ] {
            let msg = err_has(
                url,
                &[
                    "asks for TLS",
                    "respline has no built-in TLS: open a TLS stream with a TLS crate of your \
                     choice (for example rustls or native-tls) and pass it to \
                     Connection::new(stream)",
                ],
            );
            assert!(!msg.contains("hunter2"), "{}", msg);
        }
    }

    #[test]
    fn host_errors() {
        err_has("redis://", &["no host", "found nothing"]);
        err_has("redis://:6379", &["no host", "before \":6379\""]);
        err_has("redis://:6379/0", &["no host"]);
        err_has("redis://u:p@/0", &["no host"]);
        err_has("redis://?db=1", &["no host"]);
        err_has(
            "redis://::1",
            &["in brackets", "redis://[::1]:6379", "\"::1\""],
        );
        err_has("redis://[::1", &["']'", "\"[::1\""]);
        err_has("redis://[::g]", &["IPv6", "\"::g\""]);
        err_has("redis://[]", &["IPv6", "\"\""]);
        err_has("redis://[127.0.0.1]", &["IPv6", "\"127.0.0.1\""]);
        err_has(
            "redis://[::1]6379",
            &["':' and a port", "\"[::1]\"", "\"6379\""],
        );
        err_has("redis://256.0.0.1", &["IPv4", "\"256.0.0.1\""]);
        err_has("redis://1.2.3", &["IPv4", "\"1.2.3\""]);
        err_has("redis://h%41", &["host name", "'%'", "\"h%41\""]);
        err_has("redis://h\u{e9}", &["host name", "'\u{e9}'"]);
        err_has("redis://a..b", &["dot-separated", "\"\"", "\"a..b\""]);
        err_has("redis://-a.b", &["'-'", "\"-a\""]);
        err_has("redis://.", &["dot-separated"]);
    }

    #[test]
    fn port_errors() {
        err_has("redis://h:", &["port", "1 to 65535", "found nothing"]);
        err_has("redis://h:0", &["port", "1 to 65535", "\"0\""]);
        err_has("redis://h:65536", &["port", "\"65536\""]);
        err_has(
            "redis://h:99999999999999999999",
            &["port", "\"99999999999999999999\""],
        );
        err_has("redis://h:+80", &["port", "\"+80\""]);
        err_has("redis://h:-1", &["port", "\"-1\""]);
        err_has("redis://h:63 79", &["' '"]);
        err_has("redis://h:http", &["port", "\"http\""]);
        err_has("redis://[::1]:", &["port", "found nothing"]);
        err_has("redis://[::1]:x", &["port", "\"x\""]);
    }

    #[test]
    fn path_errors_name_the_path() {
        for path in [
            "/abc",
            "/-1",
            "/+1",
            "/1/",
            "/1/2",
            "/1.5",
            "/%31",
            "//",
            "/99999999999999999999",
        ] {
            let url = format!("redis://h{}", path);
            err_has(&url, &["path", "database number", &format!("{:?}", path)]);
        }
    }

    #[test]
    fn unix_errors() {
        err_has(
            "unix://relative",
            &["must be absolute", "three slashes", "found \"relative\""],
        );
        err_has(
            "unix://tmp/r.sock?db=1",
            &["must be absolute", "found \"tmp/r.sock\""],
        );
        err_has(
            "redis+unix://localhost/tmp/r.sock",
            &["must be absolute", "takes no host"],
        );
        err_has("unix://", &["socket path", "found nothing"]);
        err_has("unix://?db=1", &["socket path", "found nothing"]);
        err_has("unix:///", &["socket file", "\"/\""]);
        err_has("unix:///tmp/", &["socket file", "\"/tmp/\""]);
        err_has("unix:///tmp/a%00b", &["NUL", "\"/tmp/a%00b\""]);
        err_has(
            "unix:///tmp/a%zz",
            &["socket path", "\"%zz\"", "\"/tmp/a%zz\""],
        );
        err_has(
            "unix:///tmp/a%ff",
            &["socket path", "UTF-8", "\"/tmp/a%ff\""],
        );
        let msg = err_hides("unix://u:hunter2@/tmp/r.sock", "hunter2");
        assert!(msg.contains("no user name or password"), "{}", msg);
        err_hides("unix://hunter2@/tmp/r.sock", "hunter2");
        err_hides("unix://hun#ter2@/tmp/r.sock", "ter2");
        err_has(
            "unix:///s?user=app",
            &["user name (\"app\") but no password"],
        );
    }

    #[test]
    fn percent_escape_errors() {
        err_has(
            "redis://u%4:p@h",
            &["user name", "\"%4\"", "two hex digits"],
        );
        err_has("redis://u%zz:p@h", &["user name", "\"%zz\"", "\"u%zz\""]);
        err_has("redis://u%ff:p@h", &["user name", "UTF-8", "\"u%ff\""]);
        err_has("redis://u%:p@h", &["user name", "\"%\""]);
        err_has("redis://h?client_name=a%4", &["client_name", "\"%4\""]);
        err_has("redis://h?name=%C3%28", &["\"name\"", "UTF-8"]);
        // Password escapes are reported without the password.
        let msg = err_hides("redis://u:hunter%4@h", "hunter");
        assert!(
            msg.contains("password") && msg.contains("malformed escape"),
            "{}",
            msg
        );
        let msg = err_hides("redis://u:hunter%zz2@h", "hunter");
        assert!(msg.contains("not shown"), "{}", msg);
        err_hides("redis://hunter%g2@h", "hunter");
        let msg = err_hides("redis://:hunter%ff@h", "hunter");
        assert!(msg.contains("UTF-8"), "{}", msg);
        err_hides("unix:///s?password=hunter%2", "hunter");
        err_hides("unix:///s?pass=hunter%fe", "hunter");
    }

    #[test]
    fn fragments_are_rejected() {
        err_has("redis://h/0#x", &["fragment", "\"#x\""]);
        err_has("redis://h#", &["fragment", "\"#\""]);
        err_has("unix:///s#frag", &["fragment", "\"#frag\""]);
        err_has("redis://h?db=1#top", &["fragment", "\"#top\""]);
    }

    #[test]
    fn query_errors() {
        err_has(
            "redis://h?dbb=1",
            &[
                "\"dbb\" is not supported",
                "db, protocol, client_name (or name), user (or username), password (or pass)",
            ],
        );
        err_has("redis://h?DB=1", &["\"DB\" is not supported"]);
        err_has("unix:///s?timeout=5", &["\"timeout\" is not supported"]);
        err_has("redis://h?db=1&db=1", &["\"db\" is given twice"]);
        err_has(
            "redis://h?user=a&username=b&password=p",
            &["\"user\" and \"username\""],
        );
        err_has(
            "unix:///s?pass=a&password=b",
            &["\"pass\" and \"password\""],
        );
        err_has(
            "redis://h?name=a&client_name=b",
            &["\"name\" and \"client_name\""],
        );
        err_has(
            "redis://h?protocol=3&protocol=2",
            &["\"protocol\" is given twice"],
        );
        err_has("redis://h?db", &["\"db\"", "no '='"]);
        err_has("redis://h?verbose", &["key=value", "\"verbose\""]);
        err_has("redis://h?db=", &["\"db\"", "empty value"]);
        err_has("redis://h?password=", &["\"password\"", "empty value"]);
        err_has("redis://h?db=1&", &["empty one"]);
        err_has("redis://h?&db=1", &["empty one"]);
        err_has("redis://h?db=1&&protocol=2", &["empty one"]);
        err_has("redis://h?db=x", &["\"db\"", "database number", "\"x\""]);
        err_has("redis://h?db=-1", &["\"db\"", "\"-1\""]);
        err_has("redis://h?db=99999999999999999999", &["\"db\""]);
        err_has(
            "redis://h?protocol=4",
            &["\"protocol\"", "2, 3, resp2 or resp3", "\"4\""],
        );
        err_has("redis://h?protocol=resp", &["\"resp\""]);
        err_has("redis://h?client_name=a%20b", &["client name", "\"a%20b\""]);
        err_has("redis://h?name=caf%C3%A9", &["client name"]);
    }

    #[test]
    fn settings_given_twice() {
        err_has(
            "redis://h/2?db=3",
            &["database twice", "\"/2\"", "\"db=3\""],
        );
        err_has("redis://h/2?db=2", &["database twice"]);
        err_has("redis://h/2?db=0", &["database twice"]);
        let msg = err_hides("redis://:hunter2@h?password=hunter3", "hunter");
        assert!(msg.contains("password twice"), "{}", msg);
        err_hides("redis://hunter2@h?pass=x", "hunter2");
        err_has("redis://a:b@h?user=c", &["user name twice"]);
        err_has("redis://h?user=app", &["\"app\"", "no password"]);
    }

    #[test]
    fn misplaced_at_signs_hide_what_may_be_a_password() {
        // An unescaped '/', '?' or '#' in a password moves the '@' after the
        // host; nothing around it is quoted.
        for url in [
            "redis://u:hun/ter2@h",
            "redis://u:hun?ter2@h",
            "redis://u:hun#ter2@h",
            "redis://hun/ter2@h:6379/0",
            "redis://:hun?ter2@h",
        ] {
            let msg = err_hides(url, "ter2");
            assert!(!msg.contains("hun"), "{}: {}", url, msg);
            assert!(msg.contains("'@' after the host"), "{}: {}", url, msg);
        }
        err_has("redis://h/0?client_name=a@b", &["%40"]);
        // An unescaped '@' inside the user-info part.
        let msg = err_hides("redis://u:hun@ter2@h", "ter2");
        assert!(!msg.contains("hun"), "{}", msg);
        assert!(msg.contains("%40"), "{}", msg);
    }

    #[test]
    fn nothing_after_a_query_password_is_quoted() {
        // An unescaped '&' or '#' in a query password: its tail must not be
        // quoted as a key or a fragment.
        for url in [
            "unix:///s?password=hun&ter2",
            "unix:///s?password=hun&ter2=1",
            "redis://h?pass=hun#ter2",
            "unix:///s?db=1&PASSWORD=hun&ter2",
            "redis://h?password=x&db=ter2",
            "redis://h?password=x&name=ter2%20",
            "redis://h/1?password=x&db=ter2",
        ] {
            let msg = err_hides(url, "ter2");
            assert!(msg.contains("***"), "{}: {}", url, msg);
        }
        // Parameters before the password are still quoted.
        err_has("unix:///s?bogus=1&password=x", &["\"bogus\""]);
    }

    #[test]
    fn no_error_message_holds_the_password() {
        let urls = [
            "redis://app:s3cr3tpw@h:0",
            "redis://app:s3cr3tpw@h/x",
            "redis://app:s3cr3tpw@h?dbb=1",
            "redis://app:s3cr3tpw@::1",
            "redis://s3cr3tpw@",
            "redis://:s3cr3tpw@",
            "redis://app:s3cr3tpw@h#f",
            "redis://app:s3cr3tpw@h?password=again",
            "rediss://app:s3cr3tpw@h",
            "http://app:s3cr3tpw@h",
            " redis://app:s3cr3tpw@h",
            "redis://app:s3cr3tpw@h ",
            "unix:///s?password=s3cr3tpw&db=x",
            "unix:///s?password=s3cr3tpw&bogus=1",
            "unix:///s?password=s3cr3tpw&password=s3cr3tpw",
            "unix://app:s3cr3tpw@/s",
            "unix:///?password=s3cr3tpw",
            "app:s3cr3tpw@h",
        ];
        for url in urls {
            err_hides(url, "s3cr3tpw");
        }
    }

    #[test]
    fn every_error_is_config() {
        for url in [
            "",
            "x",
            "redis://",
            "rediss://h",
            "redis://h?x=1",
            "unix://a",
        ] {
            assert!(
                matches!(ConnectOptions::from_url(url), Err(Error::Config(_))),
                "{:?}",
                url
            );
        }
        let e = ConnectOptions::from_url("redis://h:0").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid configuration: URL port"),
            "{}",
            e
        );
    }
}
