//! The pipelining lesson's users as a Rust type: `impl FromValue for User`,
//! read with HGETALL in one pipeline, the same under RESP2 (a flat array of
//! fields and values) and RESP3 (a map).
//!
//! The lesson stores a user as `HSET user:<id> id <id> created <when>` and
//! treats an empty HGETALL reply as "no such user". Here that rule lives in
//! one place, `Stored`, and a malformed hash is a conversion error that
//! names the command (the user) it came from.
//!
//! Runs against `REDIS_URL` when it is set, otherwise against a private
//! `redis-server` it starts on a temporary Unix socket. It only touches keys
//! under `respline-example:user-hash:`.
//!
//! ```text
//! cargo run --example user_hash
//! ```

#[path = "common/local_server.rs"]
mod local_server;

use std::collections::HashMap;
use std::io::{Read, Write};

use respline::{ConnectOptions, Connection, Error, FromValue, Pipeline, Protocol, Value};

const PREFIX: &str = "respline-example:user-hash:";

/// A user, as the lesson stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's id (the `id` field).
    pub id: u64,
    /// When it was created (the `created` field).
    pub created: String,
}

impl User {
    /// The user from its hash's fields.
    fn from_fields(mut fields: HashMap<String, String>) -> respline::Result<User> {
        let expected = "a user hash with the fields id and created";
        let id = fields
            .remove("id")
            .ok_or_else(|| Error::conversion(expected, describe(&fields)))?;
        let id = id
            .parse()
            .map_err(|_| Error::conversion("a decimal user id", format!("id {:?}", id)))?;
        let created = fields
            .remove("created")
            .ok_or_else(|| Error::conversion(expected, describe(&fields)))?;
        Ok(User { id, created })
    }
}

/// The fields a hash has, for error messages.
fn describe(fields: &HashMap<String, String>) -> String {
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    format!("a hash with the fields {:?}", names)
}

/// An existing user's HGETALL reply. A flat array of pairs (RESP2) and a map
/// (RESP3) both convert to the `HashMap` first.
impl FromValue for User {
    fn from_value(value: Value) -> respline::Result<User> {
        match Stored::from_value(value)? {
            Stored::Found(user) => Ok(user),
            Stored::Missing => Err(Error::conversion(
                "a user hash",
                "an empty hash (no such user)",
            )),
        }
    }
}

/// HGETALL's reply for a user who may not exist: Redis answers an empty
/// hash for a missing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// No such user.
    Missing,
    /// The user.
    Found(User),
}

impl FromValue for Stored {
    fn from_value(value: Value) -> respline::Result<Stored> {
        let fields: HashMap<String, String> = HashMap::from_value(value)?;
        if fields.is_empty() {
            return Ok(Stored::Missing);
        }
        User::from_fields(fields).map(Stored::Found)
    }
}

fn key(id: u64) -> String {
    format!("{}{}", PREFIX, id)
}

/// The lesson's `get_or_create_users`: one pipeline of HGETALLs, then one
/// of HSETs for the missing users. (Not race-free: see the
/// `get_or_create_users` example for the WATCH version.)
pub fn get_or_create_users<S: Read + Write>(
    conn: &mut Connection<S>,
    ids: &[u64],
    now: &str,
) -> respline::Result<Vec<User>> {
    let mut reads = Pipeline::new();
    for &id in ids {
        reads.cmd(("HGETALL", key(id)));
    }
    let stored: Vec<Stored> = reads.query(conn)?;
    let mut users = Vec::with_capacity(ids.len());
    let mut writes = Pipeline::new();
    for (&id, found) in ids.iter().zip(stored) {
        let user = match found {
            Stored::Found(user) => user,
            Stored::Missing => {
                let user = User {
                    id,
                    created: now.to_string(),
                };
                writes.cmd(("HSET", key(id), "id", id, "created", now));
                user
            }
        };
        users.push(user);
    }
    if !writes.is_empty() {
        writes.execute(conn)?;
    }
    Ok(users)
}

/// The demonstration, on one connection: creates users 1 to 3, reads them
/// back typed, then shows what a broken hash gives. Returns the users read.
pub fn demo<S: Read + Write>(conn: &mut Connection<S>) -> respline::Result<Vec<User>> {
    let keys: Vec<String> = (1..=4).map(key).collect();
    conn.execute(("DEL", &keys[0], &keys[1], &keys[2], &keys[3]))?;
    conn.execute(("HSET", key(2), "id", 2, "created", "yesterday"))?;

    let users = get_or_create_users(conn, &[1, 2, 3], "today")?;
    assert_eq!(users[1].created, "yesterday");
    assert_eq!(users[2].created, "today");

    // Read back: one typed value per command.
    let mut pipe = Pipeline::new();
    pipe.cmd(("HGETALL", key(1)))
        .cmd(("HGETALL", key(2)))
        .cmd(("HGETALL", key(4)));
    let (one, two, four): (User, User, Stored) = pipe.query(conn)?;
    assert_eq!((one.id, two.id, four), (1, 2, Stored::Missing));

    // A hash that is not a user: the error names the command it came from.
    conn.execute(("HSET", key(4), "id", "four", "created", "now"))?;
    let err = pipe.query::<(User, User, User)>(conn).unwrap_err();
    assert_eq!(
        err.to_string(),
        "command #2: cannot convert reply: expected a decimal user id, found id \"four\""
    );
    conn.execute(("DEL", &keys[0], &keys[1], &keys[2], &keys[3]))?;
    Ok(vec![one, two])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = local_server::LocalServer::from_env_or_start();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let options = ConnectOptions::from_url(&server.url)?.protocol(protocol);
        let mut conn = Connection::connect(&options)?;
        let users = demo(&mut conn)?;
        println!("{:?}: {:?}", protocol, users);
    }
    Ok(())
}
