//! The examples' library code, run against real servers under RESP2 and
//! RESP3 (each example's `main` runs it against `REDIS_URL` or a server of
//! its own; here the harness's servers are used), and the pool example's
//! workers across a restart of a harness server.

mod support;

#[path = "../examples/user_hash.rs"]
#[allow(dead_code)]
mod user_hash;

// (Both examples include examples/common/local_server.rs.)
#[cfg(feature = "pool")]
#[path = "../examples/pool.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod pool_example;

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

#[cfg(feature = "pool")]
#[test]
fn the_pool_examples_workers_do_not_notice_a_server_restart() {
    let mut server = RedisServer::start();
    let options = ConnectOptions::tcp(HOST, server.port())
        .read_timeout(Some(std::time::Duration::from_secs(5)));
    let pool = respline::Pool::builder(options)
        .max_size(4)
        .build()
        .unwrap();
    let report = pool_example::demo(&pool, 8, std::time::Duration::from_millis(300), || {
        server.restart();
        // Idle long enough for the pool to check them (check_after_idle).
        std::thread::sleep(std::time::Duration::from_millis(150));
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.rounds.iter().all(|&n| n > 0), "{:?}", report.rounds);
    let (before, after) = (&report.stats[0], &report.stats[1]);
    assert!(
        before.total <= 4 && after.total <= 4,
        "{} / {}",
        before,
        after
    );
    // Every connection open at the restart was found dead and replaced.
    assert_eq!(after.closed_broken, before.total as u64, "{}", after);
    assert_eq!(
        after.created,
        before.created + before.total as u64,
        "{}",
        after
    );
}
