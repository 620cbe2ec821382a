//! The examples' library code, run against real servers under RESP2 and
//! RESP3 (each example's `main` runs it against `REDIS_URL` or a server of
//! its own; here the harness's servers are used).

mod support;

#[path = "../examples/user_hash.rs"]
#[allow(dead_code)]
mod user_hash;

use respline::{ConnectOptions, Connection, Protocol};
use support::{RedisServer, HOST};
use user_hash::{Stored, User};

#[test]
fn the_user_struct_converts_from_hgetall_under_resp2_and_resp3() {
    let server = RedisServer::start();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let options = ConnectOptions::tcp(HOST, server.port()).protocol(protocol);
        let mut conn = Connection::connect(&options).unwrap();
        let users = user_hash::demo(&mut conn).unwrap();
        assert_eq!(
            users,
            [
                User {
                    id: 1,
                    created: "today".into()
                },
                User {
                    id: 2,
                    created: "yesterday".into()
                },
            ]
        );
        // The raw reply really differs between the protocols...
        conn.execute(["HSET", "u", "id", "7", "created", "now"])
            .unwrap();
        let raw: respline::Value = conn.query(["HGETALL", "u"]).unwrap();
        match protocol {
            Protocol::Resp2 => assert!(matches!(raw, respline::Value::Array(_)), "{:?}", raw),
            Protocol::Resp3 => assert!(matches!(raw, respline::Value::Map(_)), "{:?}", raw),
        }
        // ...and converts the same.
        let user: User = conn.query(["HGETALL", "u"]).unwrap();
        assert_eq!(
            user,
            User {
                id: 7,
                created: "now".into()
            }
        );
        let missing: Stored = conn.query(["HGETALL", "nobody"]).unwrap();
        assert_eq!(missing, Stored::Missing);
        let err = conn.query::<User>(["HGETALL", "nobody"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot convert reply: expected a user hash, found an empty hash (no such user)"
        );
        assert!(!conn.is_broken());
    }
}
