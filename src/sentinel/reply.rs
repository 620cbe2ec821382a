//! Reading what sentinels and data nodes answer: the primary's address, the
//! entries of `SENTINEL REPLICAS` / `SENTINEL SENTINELS`, and `ROLE`. RESP2
//! and RESP3 alike; anything of the wrong shape is an error or is skipped,
//! never a panic.

use crate::connect::Addr;
use crate::error::{Error, Result};
use crate::resp::number::parse_u64;
use crate::resp::{ProtocolError, ProtocolErrorKind, Value};

/// The longest host name taken from a sentinel (DNS names are at most 253
/// bytes).
const MAX_HOST: usize = 255;

/// Flags that make a sentinel's entry for an instance unusable: down,
/// subjectively or objectively, and (for a replica) not connected to.
const DOWN_FLAGS: [&str; 3] = ["s_down", "o_down", "disconnected"];

/// The reply to `SENTINEL GET-MASTER-ADDR-BY-NAME`: `[host, port]`, or nil
/// when the sentinel monitors no primary of that name. An error reply is
/// that server error; any other shape a protocol error.
pub(crate) fn primary_addr(reply: &Value) -> Result<Option<Addr>> {
    let reply = reply.without_attributes();
    if reply.is_nil() {
        return Ok(None);
    }
    if let Some(e) = crate::convert::server_error(reply) {
        return Err(e.into());
    }
    let expected = "a [host, port] pair or nil (SENTINEL GET-MASTER-ADDR-BY-NAME)";
    match reply.as_slice() {
        Some([host, port]) => match (host.as_bytes(), port.as_bytes()) {
            (Some(h), Some(p)) => addr(h, p)
                .map(Some)
                .ok_or_else(|| unexpected(expected, reply)),
            _ => Err(unexpected(expected, reply)),
        },
        _ => Err(unexpected(expected, reply)),
    }
}

/// The instances of a `SENTINEL REPLICAS` or `SENTINEL SENTINELS` reply that
/// are usable: not flagged down and, for `replicas`, not flagged
/// disconnected either, with `master-link-status` ok. (A sentinel's link to
/// another sentinel may be down for a moment, as when it was just
/// discovered: that one is still worth knowing.) Entries of the wrong shape
/// are skipped; a reply that is not a list is an error (the server error it
/// is, if it is one).
pub(crate) fn usable_instances(reply: &Value, replicas: bool) -> Result<Vec<Addr>> {
    let reply = reply.without_attributes();
    if let Some(e) = crate::convert::server_error(reply) {
        return Err(e.into());
    }
    let entries = reply.as_slice().ok_or_else(|| {
        unexpected(
            "a list of instances (SENTINEL REPLICAS or SENTINEL SENTINELS)",
            reply,
        )
    })?;
    Ok(entries
        .iter()
        .filter_map(|entry| {
            let fields = fields(entry);
            let flags = field(&fields, "flags").unwrap_or_default();
            let checked = if replicas {
                &DOWN_FLAGS[..]
            } else {
                &DOWN_FLAGS[..2]
            };
            let down = flags
                .split(|&b| b == b',')
                .any(|flag| checked.iter().any(|d| d.as_bytes() == flag));
            let link = field(&fields, "master-link-status");
            if down || (replicas && link != Some(&b"ok"[..])) {
                return None;
            }
            addr(field(&fields, "ip")?, field(&fields, "port")?)
        })
        .collect())
}

/// What `ROLE` says: the role (`"master"`, `"slave"`, `"sentinel"`), and
/// for a replica whether its link to its primary is up (`"connected"`).
pub(crate) fn role(reply: &Value) -> Result<(String, bool)> {
    let reply = reply.without_attributes();
    if let Some(e) = crate::convert::server_error(reply) {
        return Err(e.into());
    }
    let items = reply.as_slice().unwrap_or_default();
    match items.first().and_then(Value::as_bytes) {
        Some(name) if !name.is_empty() && name.len() <= 32 => {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let connected = items.get(3).and_then(Value::as_bytes) == Some(&b"connected"[..]);
            Ok((name, connected))
        }
        _ => Err(unexpected(
            "a ROLE reply: a list whose first element is the role",
            reply,
        )),
    }
}

/// An instance's fields, from a RESP2 list of names and values or a RESP3
/// map; pairs that are not two strings are left out.
fn fields(entry: &Value) -> Vec<(&[u8], &[u8])> {
    match entry.without_attributes() {
        Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| pair(k, v)).collect(),
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|kv| pair(&kv[0], &kv[1]))
            .collect(),
        _ => Vec::new(),
    }
}

/// A name and a value, if both are strings.
fn pair<'a>(k: &'a Value, v: &'a Value) -> Option<(&'a [u8], &'a [u8])> {
    Some((k.as_bytes()?, v.as_bytes()?))
}

/// The value of the field `name`, if the instance has it.
fn field<'a>(fields: &[(&'a [u8], &'a [u8])], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| *k == name.as_bytes())
        .map(|(_, v)| *v)
}

/// A TCP address from a host and a port as sentinels send them, if they
/// make one: a non-empty UTF-8 host without spaces or control characters,
/// a port from 1 to 65535.
fn addr(host: &[u8], port: &[u8]) -> Option<Addr> {
    let host = std::str::from_utf8(host).ok()?;
    if host.is_empty()
        || host.len() > MAX_HOST
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let port = u16::try_from(parse_u64(port)?).ok().filter(|&p| p != 0)?;
    Some(Addr::Tcp {
        host: host.to_string(),
        port,
    })
}

/// A protocol error: a reply that is valid RESP of the wrong shape.
fn unexpected(expected: &'static str, found: &Value) -> Error {
    Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::Unexpected,
        0,
        expected,
        format!("{} {}", found.kind(), found),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn tcp(host: &str, port: u16) -> Addr {
        Addr::Tcp {
            host: host.into(),
            port,
        }
    }

    fn entry(pairs: &[(&str, &str)]) -> Value {
        Value::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| vec![bulk(k), bulk(v)])
                .collect(),
        )
    }

    #[test]
    fn the_primary_address_is_a_pair_or_nil() {
        let pair = Value::Array(vec![bulk("127.0.0.1"), bulk("7000")]);
        assert_eq!(primary_addr(&pair).unwrap(), Some(tcp("127.0.0.1", 7000)));
        assert_eq!(primary_addr(&Value::Nil).unwrap(), None);
        for bad in [
            Value::Array(vec![bulk("h"), bulk("0")]),
            Value::Array(vec![bulk("h"), bulk("65536")]),
            Value::Array(vec![bulk(""), bulk("1")]),
            Value::Array(vec![bulk("a b"), bulk("1")]),
            Value::Array(vec![bulk("h")]),
            Value::Array(vec![bulk("h"), Value::Integer(1)]),
            Value::Integer(3),
        ] {
            let err = primary_addr(&bad).unwrap_err();
            assert!(
                err.to_string().contains("a [host, port] pair or nil"),
                "{}",
                err
            );
        }
        let err = primary_addr(&Value::Error("NOAUTH Authentication required.".into()));
        assert_eq!(err.unwrap_err().server_error().unwrap().code(), "NOAUTH");
    }

    #[test]
    fn down_and_disconnected_instances_are_skipped() {
        let reply = Value::Array(vec![
            entry(&[
                ("ip", "10.0.0.1"),
                ("port", "7001"),
                ("flags", "slave"),
                ("master-link-status", "ok"),
            ]),
            entry(&[
                ("ip", "10.0.0.2"),
                ("port", "7002"),
                ("flags", "s_down,slave"),
                ("master-link-status", "ok"),
            ]),
            entry(&[
                ("ip", "10.0.0.3"),
                ("port", "7003"),
                ("flags", "slave,disconnected"),
                ("master-link-status", "ok"),
            ]),
            entry(&[
                ("ip", "10.0.0.4"),
                ("port", "7004"),
                ("flags", "slave"),
                ("master-link-status", "err"),
            ]),
            Value::Map(vec![
                (bulk("ip"), bulk("10.0.0.5")),
                (bulk("port"), bulk("7005")),
                (bulk("flags"), bulk("slave")),
                (bulk("master-link-status"), bulk("ok")),
            ]),
            entry(&[("ip", "10.0.0.6"), ("flags", "slave")]),
            Value::Integer(7),
        ]);
        assert_eq!(
            usable_instances(&reply, true).unwrap(),
            [tcp("10.0.0.1", 7001), tcp("10.0.0.5", 7005)]
        );
        // Sentinels: only the down ones are left out.
        assert_eq!(
            usable_instances(&reply, false).unwrap(),
            [
                tcp("10.0.0.1", 7001),
                tcp("10.0.0.3", 7003),
                tcp("10.0.0.4", 7004),
                tcp("10.0.0.5", 7005)
            ]
        );
        assert!(usable_instances(&Value::Nil, false).is_err());
    }

    #[test]
    fn roles_are_read_from_the_first_element() {
        let master = Value::Array(vec![
            bulk("master"),
            Value::Integer(0),
            Value::Array(vec![]),
        ]);
        assert_eq!(role(&master).unwrap(), ("master".to_string(), false));
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Integer(7000),
            bulk("connected"),
            Value::Integer(10),
        ]);
        assert_eq!(role(&replica).unwrap(), ("slave".to_string(), true));
        assert!(role(&Value::Array(vec![])).is_err());
        assert!(role(&bulk("master")).is_err());
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Integer),
            prop::collection::vec(any::<u8>(), 0..6).prop_map(Value::BulkString),
            prop_oneof![
                Just("ip"),
                Just("port"),
                Just("flags"),
                Just("master-link-status"),
                Just("ok"),
                Just("s_down"),
                Just("65535"),
                Just("0"),
                Just("master"),
                Just("slave"),
            ]
            .prop_map(bulk),
            Just(Value::Error("ERR x".into())),
        ];
        leaf.prop_recursive(3, 48, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_reply_is_read_or_refused_without_panicking(reply in any_value()) {
            let _ = primary_addr(&reply);
            if let Ok(list) = usable_instances(&reply, true) {
                prop_assert!(list.len() <= reply.as_slice().map_or(0, <[Value]>::len));
            }
            let _ = role(&reply);
        }
    }
}
