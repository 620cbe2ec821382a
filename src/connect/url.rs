//! `redis://`, `unix://` and `redis+unix://` URLs → [`ConnectOptions`]: a
//! strict parser whose every error is an [`Error::Config`] saying what was
//! expected and quoting what was found, but never a password (`***` stands
//! for any part that may hold one, or a piece of one).

use std::fmt::Display;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::options::ConnectOptions;
use crate::error::{Error, Result};
use crate::resp::number::{self, Form};
use crate::resp::Protocol;

const SCHEMES: &str = "redis://, valkey://, unix://, redis+unix:// or valkey+unix://";
const QUERY_KEYS: &str =
    "one of db, protocol, client_name (or name), user (or username), password (or pass)";
const NO_TLS: &str = "respline has no built-in TLS: open a TLS stream with a TLS crate of your \
                      choice (for example rustls or native-tls) and pass it to \
                      Connection::new(stream)";
const UNIX_HINT: &str = " (a Unix socket URL has three slashes, as in unix:///tmp/redis.sock)";
const HOST: &str = "a host name (letters, digits, '-', '.', '_') or an IP address";
const LABELS: &str = "dot-separated labels of 1 to 63 characters, none starting or ending in '-'";
const BRACKETS: &str = "an IPv6 address in brackets, as in redis://[::1]:6379";
const AT_SIGNS: &str = "'@' written %40, and '/', '?' or '#' in a user name or password written \
                        %2F, %3F or %23";
const ABSOLUTE: &str = "'/' right after \"unix://\" (three slashes: a Unix URL takes no host)";
const NOT_TRIMMED: &str = "none (URLs are not trimmed)";
/// Shown instead of any part of the URL that may hold a password.
const SECRET: &str = "*** (not shown: it may be or follow a password, in which '&' and '#' \
                      must be written %26 and %23)";

impl ConnectOptions {
    /// Parses a connection URL. What it does not set keeps the default of
    /// [`ConnectOptions::tcp`] or [`ConnectOptions::unix`]; timeouts and
    /// limits cannot be set in a URL.
    ///
    /// # Accepted forms
    ///
    /// * `redis://host:port/db`: TCP, port 6379 and database 0 by default.
    ///   The host is a name (letters, digits, `-`, `.`, `_`), an IPv4
    ///   address or an IPv6 one in brackets, as in `redis://[::1]` (kept
    ///   without them in [`Addr::Tcp`](crate::Addr::Tcp)); the port is 1 to
    ///   65535, digits only; the path is empty, `/` or `/` and a database.
    /// * `redis://user:password@host`, or a password alone with
    ///   `redis://:password@host` or `redis://password@host` (as redis-cli
    ///   reads it); `redis://:@host` sets neither, `redis://user:@host` the
    ///   user and an empty password.
    /// * `unix:///path/to/redis.sock` or `redis+unix:///path/to/redis.sock`:
    ///   an absolute socket path right after `unix://`, no host or user part.
    /// * `valkey://` and `valkey+unix://`, aliases of `redis://` and
    ///   `redis+unix://`. Schemes are case-insensitive.
    /// * A query, for both: `?key=value&...`, each key (exact) at most once:
    ///   `db` (not with a non-zero database in the path); `protocol` (`2`,
    ///   `3`, `resp2` or `resp3`, any case); `client_name` or `name`
    ///   (printable ASCII without spaces); `user` or `username` and
    ///   `password` or `pass` (not if given before the host too; a user
    ///   needs a password).
    ///
    /// Percent-escapes (`%40` for `@`, `%3A` for `:`, `%2F` for `/`, `%25`
    /// for `%`, `%26` for `&`, `%23` for `#`, `%20` for a space) are decoded
    /// in the user name, the password, the socket path and query values, and
    /// must decode to UTF-8; a `+` stands for itself. In a TCP URL an `@`
    /// after the host must be written `%40`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`], saying what was expected and quoting what was found
    /// (never a password), for: an empty URL; whitespace around it or spaces
    /// or control characters in it (it is not trimmed); a missing or unknown
    /// scheme; `rediss://`, `valkeys://` and `rediss+unix://`, as TLS is not
    /// built in (open a TLS stream yourself and pass it to
    /// [`Connection::new`](crate::Connection::new)); a missing or malformed
    /// host; a port that is empty, not a number, 0 or above 65535; a path
    /// other than a database number; a relative socket path; a malformed
    /// escape or non-UTF-8 result; a fragment (`#...`); and an unknown,
    /// repeated, empty or invalid query parameter.
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

/// The shape of most messages: which part of the URL, what it should be,
/// what it is.
fn fail<T>(what: impl Display, expected: impl Display, found: impl Display) -> Parsed<T> {
    Err(format!("URL {what}: expected {expected}, found {found}"))
}

/// `text` quoted, or `***` if it may hold a password.
fn quote(text: &str, secret: bool) -> String {
    match secret {
        true => SECRET.to_string(),
        false => format!("{text:?}"),
    }
}

/// A slice of the URL, with the byte offsets in the URL of its start (`at`)
/// and of the first `pass...=` query key (`secret`): from there on the URL
/// may hold a password, whose unescaped `&` or `#` makes its tail look like
/// other parts.
#[derive(Clone, Copy)]
struct Part<'a> {
    text: &'a str,
    at: usize,
    secret: usize,
}

impl<'a> Part<'a> {
    fn sub(mut self, from: usize, to: usize) -> Part<'a> {
        (self.text, self.at) = (&self.text[from..to], self.at + from);
        self
    }

    fn tail(self, from: usize) -> Part<'a> {
        self.sub(from, self.text.len())
    }

    /// The text before and after the first `sep` (one byte), if any.
    fn split(self, sep: char) -> (Part<'a>, Option<Part<'a>>) {
        match self.text.find(sep) {
            Some(i) => (self.sub(0, i), Some(self.tail(i + 1))),
            None => (self, None),
        }
    }

    /// The text quoted, or `***` if it reaches past `secret`.
    fn show(self) -> String {
        quote(self.text, self.at + self.text.len() > self.secret)
    }
}

/// A query parameter name, its aliases folded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum QueryKey {
    Db,
    Protocol,
    ClientName,
    User,
    Password,
}

impl QueryKey {
    fn parse(key: &str) -> Option<QueryKey> {
        Some(match key {
            "db" => QueryKey::Db,
            "protocol" => QueryKey::Protocol,
            "client_name" | "name" => QueryKey::ClientName,
            "user" | "username" => QueryKey::User,
            "password" | "pass" => QueryKey::Password,
            _ => return None,
        })
    }

    fn expected(self) -> &'static str {
        match self {
            QueryKey::Db => "a database number (0, 1, 2, ...)",
            QueryKey::Protocol => "2, 3, resp2 or resp3",
            QueryKey::ClientName => "a client name of printable ASCII, no spaces",
            QueryKey::User => "a user name",
            QueryKey::Password => "a password",
        }
    }

    /// Sets what the key names in `opts`; `None` if `value` is invalid.
    fn apply(self, opts: &mut ConnectOptions, value: String) -> Option<()> {
        let printable = value.chars().all(|c| ('!'..='~').contains(&c));
        match (self, value.to_ascii_lowercase().as_str()) {
            (QueryKey::Db, _) => opts.db = number::parse_i64(value.as_bytes(), Form::Digits)?,
            (QueryKey::Protocol, "2" | "resp2") => opts.protocol = Protocol::Resp2,
            (QueryKey::Protocol, "3" | "resp3") => opts.protocol = Protocol::Resp3,
            (QueryKey::ClientName, _) if printable => opts.client_name = Some(value),
            (QueryKey::User, _) => opts.username = Some(value),
            (QueryKey::Password, _) => opts.password = Some(value),
            _ => return None,
        }
        Some(())
    }
}

fn parse(url: &str) -> Parsed<ConnectOptions> {
    if url.is_empty() {
        return fail("is empty", "one like redis://host:6379/0", "nothing");
    }
    if let Some(c) = url.chars().next().filter(|c| c.is_whitespace()) {
        return fail("starts with whitespace", NOT_TRIMMED, format!("{c:?}"));
    }
    if let Some(c) = url.chars().next_back().filter(|c| c.is_whitespace()) {
        return fail("ends with whitespace", NOT_TRIMMED, format!("{c:?}"));
    }
    let bad = |c: char| c.is_whitespace() || c.is_control();
    if let Some((i, c)) = url.char_indices().find(|&(_, c)| bad(c)) {
        let found = format!("{c:?} at byte {i}");
        return fail("character", "no space or control (%20 for a space)", found);
    }
    let lower = url.to_ascii_lowercase();
    let start = match url.find("://") {
        Some(i) => i + 3,
        None => {
            let unix = lower.starts_with("unix:") || lower.starts_with("redis+unix:");
            let hint = if unix { UNIX_HINT } else { "" };
            let found = quote(url, url.contains('@') || lower.contains("pass"));
            return fail("scheme", format!("{SCHEMES} and \"://\"{hint}"), found);
        }
    };
    let unix = scheme_is_unix(&url[..start - 3])?;
    let after = url[start..].trim_start_matches(|c| !"/?#".contains(c));
    let end = url.len() - after.len();
    // A password may start at the first query key beginning with "pass", in any case.
    let keys = lower[end..].replace(['?', '#'], "&");
    let secret = keys.find("&pass").map_or(usize::MAX, |i| end + i + 1);
    let (text, at) = (url, 0);
    let url = Part { text, at, secret };
    let (authority, after) = (url.sub(start, end), url.tail(end));

    if !unix && after.text.contains('@') {
        // An unescaped '/', '?' or '#' cut a password short, or a query
        // value holds a raw '@': quote nothing.
        return fail("has an '@' after the host", AT_SIGNS, SECRET);
    }
    if unix && !authority.text.is_empty() {
        let rest = url.tail(start);
        if rest.split('/').0.text.contains('@') {
            return fail("socket path", "no user name or password before it", SECRET);
        }
        let relative = rest.sub(0, rest.text.find(['?', '#']).unwrap_or(rest.text.len()));
        return fail("socket path must be absolute", ABSOLUTE, relative.show());
    }
    if let Some(i) = after.text.find('#') {
        return fail("fragment", "none (write '#' as %23)", after.tail(i).show());
    }
    let (path, query) = after.split('?');
    let mut opts = match unix {
        true => ConnectOptions::unix(unix_path(path)?),
        false => tcp(authority, path)?,
    };
    let before = opts.clone();
    let given = apply_query(&mut opts, query)?;
    if let (true, Some(param)) = (before.db != 0, given[QueryKey::Db as usize]) {
        let found = format!("{} and {}", path.show(), param.show());
        return fail("gives the database twice", "it once", found);
    }
    let user = before.username.is_some() && given[QueryKey::User as usize].is_some();
    let password = before.password.is_some() && given[QueryKey::Password as usize].is_some();
    if user || password {
        let what = if user { "user name" } else { "password" };
        let what = format!("gives the {what} twice");
        return fail(what, "it once", "it before the host and in the query");
    }
    match (&opts.username, &opts.password) {
        (Some(user), None) => Err(format!(
            "URL has user name ({user:?}) but no password: expected both"
        )),
        _ => Ok(opts),
    }
}

/// Whether the scheme (any case) is a Unix socket one.
fn scheme_is_unix(name: &str) -> Parsed<bool> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic()) && name.chars().all(ok);
    match name.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => Ok(false),
        "unix" | "redis+unix" | "valkey+unix" => Ok(true),
        "rediss" | "valkeys" | "rediss+unix" | "valkeys+unix" => {
            Err(format!("URL scheme {name:?} asks for TLS, but {NO_TLS}"))
        }
        _ if valid => Err(format!(
            "URL scheme {name:?} is not supported: expected {SCHEMES}"
        )),
        _ => fail("scheme", SCHEMES, quote(name, name.contains(['@', ':']))),
    }
}

/// The options of a TCP URL from its `[user[:password]@]host[:port]` and
/// its path (nothing, `/`, or `/` and a database number).
fn tcp(authority: Part<'_>, path: Part<'_>) -> Parsed<ConnectOptions> {
    let (userinfo, host_port) = match authority.text.rfind('@') {
        Some(i) => (authority.sub(0, i), authority.tail(i + 1)),
        None => (authority.sub(0, 0), authority),
    };
    if userinfo.text.contains('@') {
        return fail("user name or password", "'@' written %40", SECRET);
    }
    // `user:password`, `:password`, `password`, `:` or nothing.
    let (user, password) = match userinfo.split(':') {
        (user, Some(password)) => (user, password),
        (password, None) => (password.sub(0, 0), password),
    };
    let user = decode("user name", user, false)?;
    let password = decode("password", password, true)?;
    let (host, port) = host_and_port(host_port)?;
    let mut opts = ConnectOptions::tcp(host, port);
    opts.username = Some(user).filter(|user| !user.is_empty());
    opts.password = Some(password).filter(|p| opts.username.is_some() || !p.is_empty());
    let digits = path.text.get(1..).unwrap_or("");
    opts.db = match number::parse_i64(digits.as_bytes(), Form::Digits) {
        Some(db) => db,
        None if digits.is_empty() => 0,
        None => return fail("path", "a database number (/0, /1, ...)", path.show()),
    };
    Ok(opts)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_and_port(hp: Part<'_>) -> Parsed<(&str, u16)> {
    if hp.text.is_empty() {
        return fail("has no host", "a host after \"://\"", "nothing");
    }
    let (host, port) = if hp.text.starts_with('[') {
        let close = match hp.text.find(']') {
            Some(close) => close,
            None => return fail("host", "']' closing the IPv6 address", hp.show()),
        };
        let (inner, tail) = (hp.sub(1, close), hp.tail(close + 1));
        if inner.text.parse::<Ipv6Addr>().is_err() {
            return fail("host", "an IPv6 address between '[' and ']'", inner.show());
        }
        match tail.split(':') {
            (rest, port) if rest.text.is_empty() => (inner, port),
            _ => {
                let what = format!("host after {}", hp.sub(0, close + 1).show());
                return fail(what, "':' and a port, or nothing", tail.show());
            }
        }
    } else {
        let (host, port) = hp.split(':');
        if port.map_or(false, |port| port.text.contains(':')) {
            return fail("host", BRACKETS, hp.show());
        }
        if host.text.is_empty() {
            let what = format!("has no host before {}", hp.show());
            return fail(what, "one", "nothing");
        }
        check_host(host)?;
        (host, port)
    };
    let port = match port {
        Some(port) => port,
        None => return Ok((host.text, 6379)),
    };
    match number::parse(port.text.as_bytes(), Form::Digits).and_then(|n| n.narrow::<u16>()) {
        Some(n) if n != 0 => Ok((host.text, n)),
        _ if port.text.is_empty() => fail("port", "1 to 65535", "nothing"),
        _ => fail("port", "1 to 65535", port.show()),
    }
}

/// A host name or an IPv4 address.
fn check_host(host: Part<'_>) -> Parsed<()> {
    let text = host.text;
    let bad = |c: char| !(c.is_ascii_alphanumeric() || "-._".contains(c));
    if let Some(c) = text.chars().find(|&c| bad(c)) {
        return fail("host", HOST, format!("{c:?} in {}", host.show()));
    }
    let numeric = text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if numeric && text.bytes().any(|b| b.is_ascii_digit()) && text.parse::<Ipv4Addr>().is_err() {
        return fail("host", "an IPv4 address like 127.0.0.1", host.show());
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    let bad = |l: &&str| l.is_empty() || l.starts_with('-') || l.ends_with('-') || l.len() > 63;
    match name.split('.').find(bad) {
        Some(label) => fail("host", LABELS, format!("{label:?} in {}", host.show())),
        None => Ok(()),
    }
}

/// The percent-decoded absolute path of a Unix URL.
fn unix_path(path: Part<'_>) -> Parsed<PathBuf> {
    if path.text.is_empty() {
        return fail("socket path", "an absolute path", "nothing");
    }
    let decoded = decode("socket path", path, false)?;
    let expected = match (decoded.contains('\0'), decoded.ends_with('/')) {
        (false, false) => return Ok(PathBuf::from(decoded)),
        (true, _) => "no NUL byte (%00)",
        (false, true) => "a socket file, not a directory",
    };
    fail("socket path", expected, path.show())
}

/// For each [`QueryKey`], the query parameter that gave it, if one did.
type Given<'a> = [Option<Part<'a>>; 5];

/// Applies the query (`key=value&...`, without the `?`) to `opts`.
fn apply_query<'a>(opts: &mut ConnectOptions, query: Option<Part<'a>>) -> Parsed<Given<'a>> {
    let mut given = [None; 5];
    let mut rest = query.filter(|query| !query.text.is_empty());
    while let Some((param, next)) = rest.map(|query| query.split('&')) {
        rest = next;
        let (key, raw) = param.split('=');
        let what = format!("query parameter {:?}", key.text);
        let (k, raw) = match (QueryKey::parse(key.text), raw) {
            _ if param.text.is_empty() => {
                return fail("query", "key=value pairs joined by one '&'", "an empty one")
            }
            (Some(k), Some(raw)) => (k, raw),
            (Some(_), None) => return fail(what, format!("{}=value", key.text), "no '='"),
            (None, None) => return fail("query", "key=value", param.show()),
            (None, Some(_)) => {
                let what = format!("query parameter {} is not supported", key.show());
                return Err(format!("URL {what}: expected {QUERY_KEYS}"));
            }
        };
        if let Some(first) = given[k as usize].replace(param) {
            let first = first.split('=').0.text;
            if first == key.text {
                return Err(format!("URL {what} is given twice: expected it once"));
            }
            let what = format!("query parameters {first:?} and {:?}", key.text);
            return fail(what, "one of them", "both");
        }
        if raw.text.is_empty() {
            return fail(&what, k.expected(), "an empty value");
        }
        let value = decode(&what, raw, k == QueryKey::Password)?;
        if k.apply(opts, value).is_none() {
            return fail(&what, k.expected(), raw.show());
        }
    }
    Ok(given)
}

/// Decodes the `%XX` escapes of `raw`, the `what` of the URL, into UTF-8;
/// a `secret` is never quoted.
fn decode(what: &str, raw: Part<'_>, secret: bool) -> Parsed<String> {
    let bytes = raw.text.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|&b| char::from(b).to_digit(16));
    let (mut out, mut i) = (Vec::with_capacity(bytes.len()), 0);
    while i < bytes.len() {
        let (byte, len) = match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => ((high * 16 + low) as u8, 3),
            (b'%', _, _) => {
                // The malformed escape: '%' and up to two characters after it.
                let len: usize = raw.text[i..].chars().take(3).map(char::len_utf8).sum();
                let found = match secret {
                    true => "a malformed escape (not shown: it is in a password)".to_string(),
                    false => format!("{} in {}", raw.sub(i, i + len).show(), raw.show()),
                };
                return fail(what, "'%' and two hex digits (write '%' as %25)", found);
            }
            (b, _, _) => (b, 1),
        };
        out.push(byte);
        i += len;
    }
    let hidden = secret || raw.at + raw.text.len() > raw.secret;
    let found = || quote(raw.text, hidden);
    String::from_utf8(out).or_else(|_| fail(what, "escapes that decode to UTF-8", found()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::connect::{Addr, ConnectOptions};
    use crate::error::Error;
    use crate::resp::Limits;
    use crate::resp::Protocol;

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
