//! `redis+sentinel://` URLs → [`SentinelOptions`]: the sentinels, the
//! primary's name and the data nodes' settings in one string. The parts are
//! checked by the `redis://` parser ([`ConnectOptions::from_url`]), so
//! escapes, hosts, ports and query values follow its rules, and no error
//! shows a password.

use super::options::{names_port, SENTINEL_PORT};
use super::SentinelOptions;
use crate::connect::{Addr, ConnectOptions};
use crate::error::{Error, Result};

const SCHEMES: [&str; 2] = ["redis+sentinel://", "valkey+sentinel://"];
const FORM: &str =
    "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/name[/db][?query]";

impl SentinelOptions {
    /// Parses a Sentinel URL:
    /// `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/name[/db][?query]`
    /// (or `valkey+sentinel://`).
    ///
    /// * The hosts are the sentinels, each with port 26379 unless it names
    ///   one; `name` is the primary's name, as the sentinels monitor it.
    /// * The user name and password, the database after the name, and the
    ///   query keys of [`ConnectOptions::from_url`] (`protocol`,
    ///   `client_name`, ...) are the data nodes'.
    /// * The query keys `sentinel_user` (or `sentinel_username`) and
    ///   `sentinel_password` (or `sentinel_pass`) are the sentinels'
    ///   credentials.
    ///
    /// Everything else keeps the defaults of [`SentinelOptions::new`].
    ///
    /// ```
    /// use respline::{Addr, Protocol, SentinelOptions};
    ///
    /// let options = SentinelOptions::from_url(
    ///     "redis+sentinel://:data%40pw@10.0.0.1,10.0.0.2:26380/mymaster/2?protocol=3&sentinel_password=spw",
    /// )?;
    /// assert_eq!(options.primary_name, "mymaster");
    /// assert_eq!(options.sentinels[0], Addr::Tcp { host: "10.0.0.1".into(), port: 26379 });
    /// assert_eq!(options.sentinels[1], Addr::Tcp { host: "10.0.0.2".into(), port: 26380 });
    /// assert_eq!(options.node.password.as_deref(), Some("data@pw"));
    /// assert_eq!((options.node.db, options.node.protocol), (2, Protocol::Resp3));
    /// assert_eq!(options.sentinel.password.as_deref(), Some("spw"));
    /// assert_eq!(options.sentinel.db, 0);
    /// # Ok::<(), respline::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`], saying what was expected and what was found (never
    /// a password): another scheme, no host or an empty one, no name, a
    /// path with more than a name and a database, a fragment, an `@` after
    /// the hosts (a password's `@`, `/`, `?` and `#` are written `%40`,
    /// `%2F`, `%3F` and `%23`), and whatever
    /// [`ConnectOptions::from_url`] refuses in a part.
    pub fn from_url(url: &str) -> Result<SentinelOptions> {
        let lower = url
            .get(..SCHEMES[1].len())
            .unwrap_or(url)
            .to_ascii_lowercase();
        let rest = SCHEMES
            .iter()
            .find(|s| lower.starts_with(*s))
            .map(|s| &url[s.len()..])
            .ok_or_else(|| {
                let scheme = url.find("://").map_or(url, |i| &url[..i + 3]);
                config(format!(
                    "expected {} (or valkey+sentinel://), found the scheme {:?}",
                    FORM,
                    scheme.chars().take(32).collect::<String>()
                ))
            })?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if rest[authority_end..].contains('@') {
            // An unescaped '/', '?' or '#' cut a password short, or a query
            // value holds a raw '@': quote nothing.
            return Err(config(
                "has an '@' after the hosts: expected '@' written %40, and '/', '?' or '#' in a \
                 user name or password written %2F, %3F or %23, found *** (not shown: it may be \
                 or follow a password)"
                    .to_string(),
            ));
        }
        if rest.contains('#') {
            return Err(config(format!(
                "expected {}, found a fragment ('#...'; a '#' in a password is written %23)",
                FORM
            )));
        }
        let (before_query, query) = match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let mut segments = path.split('/');
        let name = segments.next().unwrap_or_default();
        let db = segments.next().filter(|d| !d.is_empty());
        if name.is_empty() {
            return Err(config(format!(
                "expected the primary's name after the hosts ({}), found none",
                FORM
            )));
        }
        if segments.next().is_some() {
            return Err(config(format!(
                "expected a path of the primary's name and a database (/name/db), found {:?}",
                format!("/{}", path)
            )));
        }

        if hosts.is_empty() {
            return Err(config(format!(
                "expected at least one sentinel host ({}), found none",
                FORM
            )));
        }
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(config(format!(
                    "expected sentinel hosts separated by single commas, found {:?}",
                    hosts
                )));
            }
            let mut parsed = ConnectOptions::from_url(&format!("redis://{}", host))
                .map_err(|e| within("a sentinel host", e))?;
            if !names_port(&format!("redis://{}", host)) {
                if let Addr::Tcp { port, .. } = &mut parsed.addr {
                    *port = SENTINEL_PORT;
                }
            }
            sentinels.push(parsed.addr);
        }

        // The query keys for the sentinels go to their options, the rest to
        // the data nodes'.
        let mut node_query = Vec::new();
        let mut sentinel_query = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap_or_default();
            match key {
                "sentinel_user" | "sentinel_username" => {
                    sentinel_query.push(format!("user{}", &pair[key.len()..]))
                }
                "sentinel_password" | "sentinel_pass" => {
                    sentinel_query.push(format!("password{}", &pair[key.len()..]))
                }
                _ => node_query.push(pair),
            }
        }
        let first = hosts.split(',').next().unwrap_or_default();
        let sentinel =
            ConnectOptions::from_url(&format!("redis://{}?{}", first, sentinel_query.join("&")))
                .map_err(|e| within("the sentinel credentials", e))?;
        let node = ConnectOptions::from_url(&format!(
            "redis://{}{}{}/{}?{}",
            userinfo.unwrap_or_default(),
            if userinfo.is_some() { "@" } else { "" },
            first,
            db.unwrap_or("0"),
            node_query.join("&")
        ))
        .map_err(|e| within("the data nodes' settings", e))?;

        let mut options = SentinelOptions::from_addrs(sentinels, name).node(node);
        if let Some(password) = &sentinel.password {
            options = options.sentinel_auth(sentinel.username.as_deref(), password);
        }
        options.check()?;
        Ok(options)
    }
}

fn config(message: String) -> Error {
    Error::Config(format!("sentinel URL: {}", message))
}

/// A part's error, saying which part it came from.
fn within(part: &str, e: Error) -> Error {
    match e {
        Error::Config(message) => config(format!("in {}: {}", part, message)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        SentinelOptions::from_url(url).unwrap_err().to_string()
    }

    #[test]
    fn the_parts_go_where_they_belong() {
        let o = SentinelOptions::from_url("valkey+sentinel://s1/m").unwrap();
        assert_eq!(
            (o.sentinels.len(), o.primary_name.as_str(), o.node.db),
            (1, "m", 0)
        );
        assert_eq!(
            (o.node.password.clone(), o.sentinel.password.clone()),
            (None, None)
        );
        let o = SentinelOptions::from_url(
            "REDIS+SENTINEL://app:pw@[::1]:5,s2/m/3?client_name=x&sentinel_user=su&sentinel_password=sp",
        )
        .unwrap();
        assert_eq!(
            o.sentinels,
            [
                Addr::Tcp {
                    host: "::1".into(),
                    port: 5
                },
                Addr::Tcp {
                    host: "s2".into(),
                    port: 26379
                }
            ]
        );
        assert_eq!(o.node.username.as_deref(), Some("app"));
        assert_eq!(o.node.client_name.as_deref(), Some("x"));
        assert_eq!(o.node.db, 3);
        assert_eq!(o.sentinel.username.as_deref(), Some("su"));
        assert_eq!(o.sentinel.password.as_deref(), Some("sp"));
        assert_eq!(o.sentinel.client_name, None);
        assert_eq!(o.sentinel.db, 0);
    }

    proptest::proptest! {
        #[test]
        fn any_url_parses_or_fails_cleanly(
            scheme in proptest::sample::select(vec!["redis+sentinel://", "VALKEY+SENTINEL://", "redis://", ""]),
            rest in "[a-z0-9@,/?&=:%\\[\\].#é _-]{0,40}",
        ) {
            if let Ok(o) = SentinelOptions::from_url(&format!("{}{}", scheme, rest)) {
                proptest::prop_assert!(!o.sentinels.is_empty() && !o.primary_name.is_empty());
                proptest::prop_assert_eq!(o.sentinel.db, 0);
            }
        }
    }

    #[test]
    fn malformed_urls_say_what_was_expected_without_passwords() {
        assert!(err("redis://h/m").contains("expected redis+sentinel://"));
        assert!(err("redis+sentinel://h").contains("expected the primary's name"));
        assert!(err("redis+sentinel://h/").contains("expected the primary's name"));
        assert!(err("redis+sentinel://h/m/1/2").contains("a path of the primary's name"));
        assert!(err("redis+sentinel://a,,b/m").contains("single commas"));
        assert!(err("redis+sentinel:///m").contains("at least one sentinel host"));
        assert!(err("redis+sentinel://a b/m").contains("in a sentinel host"));
        assert!(err("redis+sentinel://h/m#x").contains("fragment"));
        assert!(err("redis+sentinel://h:0/m").contains("in a sentinel host"));
        let e = err("redis+sentinel://:hunter2@h/m/x");
        assert!(e.contains("in the data nodes' settings"), "{}", e);
        assert!(!e.contains("hunter2"), "{}", e);
        for url in [
            "redis+sentinel://u:hun/ter2@h/m",
            "redis+sentinel://u:hun?ter2@h/m",
            "redis+sentinel://:hun#ter2@h/m",
            "redis+sentinel://h/m?sentinel_password=hun@ter2",
        ] {
            let e = err(url);
            assert!(e.contains("'@' after the hosts"), "{}: {}", url, e);
            assert!(!e.contains("hun") && !e.contains("ter2"), "{}: {}", url, e);
        }
        let e = err("redis+sentinel://h/m?sentinel_password=hunter2&sentinel_user=");
        assert!(!e.contains("hunter2"), "{}", e);
        let e = err("redis+sentinel://h/m?sentinel_user=u");
        assert!(e.contains("in the sentinel credentials"), "{}", e);
        let e = err("redis+sentinel://h/m?nope=1");
        assert!(e.contains("\"nope\" is not supported"), "{}", e);
    }
}
