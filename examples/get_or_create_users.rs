//! The pipelining lesson's `get_or_create_users`, made race-free.
//!
//! The lesson reads every user with one pipeline of HGETALLs, then creates
//! the missing ones with a second pipeline of HSETs. Between the two
//! pipelines another client may create one of those users, and the HSET
//! then overwrites that client's data.
//!
//! Here the user keys are WATCHed, read in one pipeline inside the
//! transaction closure, and the HSETs for the missing users are queued in
//! MULTI/EXEC. If another client touches one of the keys in between, EXEC
//! does nothing and the helper tries again with fresh reads; after
//! `max_attempts` it gives up with `Error::WatchAborted`.
//!
//! For thousands of users, `get_or_create_many` reads and creates with two
//! chunked loads (`execute_chunked`) in bounded memory, and uses HSETNX so
//! it never overwrites a user created meanwhile.
//!
//! Runs against `REDIS_URL` when it is set, otherwise against a private
//! `redis-server` it starts on a temporary Unix socket (and stops at the
//! end). It only touches keys under `respline-example:user:`.
//!
//! ```text
//! cargo run --example get_or_create_users
//! REDIS_URL=redis://127.0.0.1:6380/0 cargo run --example get_or_create_users
//! ```

#[path = "common/local_server.rs"]
mod local_server;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use respline::{cmd, transaction, Chunking, Connection, Error, Pipeline, WatchOptions};

const PREFIX: &str = "respline-example:user:";

type User = HashMap<String, String>;

/// What one call did.
struct Outcome {
    /// Every requested user, in the order asked: found or just created.
    users: Vec<(u64, User)>,
    /// The ids this call created.
    created: Vec<u64>,
    /// How many times the transaction ran its closure.
    attempts: u32,
}

fn key(id: u64) -> String {
    format!("{}{}", PREFIX, id)
}

/// Reads the users `ids`, creating the missing ones, atomically with respect
/// to other clients. `meanwhile` runs inside each attempt after the reads:
/// the demo uses it to play a concurrent client.
fn get_or_create_users<S: std::io::Read + std::io::Write>(
    conn: &mut Connection<S>,
    ids: &[u64],
    mut meanwhile: impl FnMut(u32) -> Result<(), Error>,
) -> Result<Outcome, Error> {
    let keys: Vec<String> = ids.iter().map(|&id| key(id)).collect();
    let mut users = Vec::new();
    let mut created = Vec::new();
    let mut attempts = 0;
    let () = transaction(conn, &keys, WatchOptions::default(), |conn, tx| {
        attempts += 1;
        // Each attempt decides afresh from what it reads.
        users.clear();
        created.clear();

        // All the reads in one round trip (a plain pipeline: the WATCH
        // already guards them).
        let mut reads = Pipeline::new();
        for k in &keys {
            reads.cmd(["HGETALL", k.as_str()]);
        }
        let found: Vec<User> = reads.query(conn)?;
        meanwhile(attempts)?;

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        for ((&id, k), user) in ids.iter().zip(&keys).zip(found) {
            if user.is_empty() {
                let new: User = [
                    ("id".to_string(), id.to_string()),
                    ("created".to_string(), now.clone()),
                ]
                .into_iter()
                .collect();
                tx.cmd(
                    cmd("HSET")
                        .arg(k)
                        .arg("id")
                        .arg(id)
                        .arg("created")
                        .arg(&now),
                );
                users.push((id, new));
                created.push(id);
            } else {
                users.push((id, user));
            }
        }
        // Nothing missing: the transaction queues nothing and the helper
        // sends UNWATCH instead of EXEC.
        Ok(())
    })?;
    Ok(Outcome {
        users,
        created,
        attempts,
    })
}

/// The same for thousands of users, in bounded memory: the reads and the
/// creations each go out as one chunked load (`execute_chunked`), with no
/// WATCH. Creation uses HSETNX on the `id` field, so a user another client
/// created in between is never overwritten. Returns how many were created.
fn get_or_create_many(
    conn: &mut Connection,
    ids: impl Iterator<Item = u64> + Clone,
) -> Result<usize, Error> {
    let mut missing = Vec::new();
    let all: Vec<u64> = ids.clone().collect();
    conn.execute_chunked(
        ids.map(|id| ("EXISTS", key(id))),
        &Chunking::default(),
        |i, exists| {
            if exists == respline::Value::Integer(0) {
                missing.push(all[i]);
            }
        },
    )?
    .check()?;
    let mut created = 0;
    conn.execute_chunked(
        missing.iter().map(|&id| ("HSETNX", key(id), "id", id)),
        &Chunking::default(),
        |_, reply| created += (reply == respline::Value::Integer(1)) as usize,
    )?
    .check()?;
    Ok(created)
}

fn report(outcome: &Outcome) {
    println!(
        "  attempts: {}, created: {:?}",
        outcome.attempts, outcome.created
    );
    for (id, user) in &outcome.users {
        let mut fields: Vec<_> = user.iter().collect();
        fields.sort();
        let shown: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", k, v)).collect();
        println!("  user {}: {}", id, shown.join(" "));
    }
}

fn cleanup(conn: &mut Connection, ids: &[u64]) -> Result<(), Error> {
    let mut del = cmd("DEL");
    for &id in ids {
        del.push_arg(key(id));
    }
    conn.query::<i64>(del).map(|_| ())
}

fn main() -> Result<(), Error> {
    let server = local_server::LocalServer::from_env_or_start();
    let mut conn = Connection::open(&server.url)?;
    let mut other = Connection::open(&server.url)?;
    println!(
        "against {}",
        if server.is_private() {
            "a private redis-server on a Unix socket"
        } else {
            "REDIS_URL"
        }
    );
    let all = [1, 2, 3, 4, 5];
    cleanup(&mut conn, &all)?;

    // User 2 exists already.
    conn.query::<i64>(
        cmd("HSET")
            .arg(key(2))
            .arg("id")
            .arg(2)
            .arg("name")
            .arg("Ada"),
    )?;

    println!("1. users 1, 2, 3 (2 exists):");
    let first = get_or_create_users(&mut conn, &[1, 2, 3], |_| Ok(()))?;
    report(&first);
    assert_eq!(first.created, [1, 3]);

    println!("2. users 1, 2, 3, 4 (only 4 is new):");
    let second = get_or_create_users(&mut conn, &[1, 2, 3, 4], |_| Ok(()))?;
    report(&second);
    assert_eq!(second.created, [4]);

    println!("3. users 1, 2 (nothing to create: UNWATCH, no EXEC):");
    let nothing = get_or_create_users(&mut conn, &[1, 2], |_| Ok(()))?;
    report(&nothing);
    assert!(nothing.created.is_empty());

    // Another client creates user 5, with its own data, between our read
    // and our write. The lesson's version would overwrite it; here EXEC is
    // refused, the closure runs again, sees user 5, and leaves it alone.
    println!("4. users 4, 5 while another client creates 5 at the same time:");
    let raced = get_or_create_users(&mut conn, &[4, 5], |attempt| {
        if attempt == 1 {
            other.query::<i64>(
                cmd("HSET")
                    .arg(key(5))
                    .arg("id")
                    .arg(5)
                    .arg("name")
                    .arg("Grace"),
            )?;
            println!("  (another client created user 5 during attempt 1)");
        }
        Ok(())
    })?;
    report(&raced);
    assert_eq!((raced.attempts, raced.created.len()), (2, 0));
    let five: User = conn.query(["HGETALL", key(5).as_str()])?;
    assert_eq!(five.get("name").map(String::as_str), Some("Grace"));
    println!(
        "  user 5 kept the other client's data: name={}",
        five["name"]
    );

    cleanup(&mut conn, &all)?;

    println!("5. 10,000 users, 1 to 10,000 (1 to 5 exist), in chunks:");
    for id in 1..=5u64 {
        conn.query::<i64>(("HSET", key(id), "id", id))?;
    }
    let created = get_or_create_many(&mut conn, 1..=10_000)?;
    println!("  created {} users", created);
    assert_eq!(created, 9_995);
    conn.execute_chunked(
        (1..=10_000u64).map(|id| ("DEL", key(id))),
        &Chunking::default(),
        |_, _| {},
    )?
    .check()?;
    Ok(())
}
