//! A tour of respline, following the pipelining lesson it grew from:
//! round trips one by one versus one pipeline, typed results, a
//! transaction, and how to batch large loads.
//!
//! Runs against `REDIS_URL` when it is set, otherwise against a private
//! `redis-server` it starts on a temporary Unix socket:
//!
//! ```text
//! cargo run --release --example tour
//! REDIS_URL=redis://127.0.0.1:6380/0 cargo run --release --example tour
//! ```

#[path = "common/local_server.rs"]
mod local_server;

use std::time::{Duration, Instant};

use respline::{cmd, Chunking, Connection, Error, Pipeline, ServerError, Value};

fn main() -> Result<(), Error> {
    let server = local_server::LocalServer::from_env_or_start();
    let mut conn = Connection::open(&server.url)?;
    println!("respline tour, against {}", describe(&server));
    conn.execute(["FLUSHDB"])?;

    one_by_one_versus_pipeline(&mut conn)?;
    typed_results(&mut conn)?;
    transaction(&mut conn)?;
    batching_advice(&mut conn)?;
    Ok(())
}

fn describe(server: &local_server::LocalServer) -> String {
    if server.is_private() {
        format!("a private redis-server at {}", server.url)
    } else {
        format!("REDIS_URL={}", server.url)
    }
}

/// Part 1, the network latency problem: 1,000 SETs, one round trip each,
/// then the same 1,000 SETs encoded into one buffer, written once.
fn one_by_one_versus_pipeline(conn: &mut Connection) -> Result<(), Error> {
    println!("\n1. 1,000 SETs: one round trip each, then one pipeline");
    let started = Instant::now();
    for i in 0..1000 {
        conn.execute(
            cmd("SET")
                .arg(format!("key:{}", i))
                .arg(format!("value:{}", i)),
        )?;
    }
    let one_by_one = started.elapsed();

    let started = Instant::now();
    let mut pipe = Pipeline::new();
    for i in 0..1000 {
        pipe.cmd(
            cmd("SET")
                .arg(format!("key:{}", i))
                .arg(format!("value:{}", i)),
        );
    }
    let replies = pipe.execute(conn)?;
    let pipelined = started.elapsed();

    assert_eq!(replies.len(), 1000);
    assert!(replies
        .iter()
        .all(|r| *r == Value::SimpleString("OK".into())));
    println!(
        "   one by one : {:>9.3} ms  (1,000 round trips)",
        ms(one_by_one)
    );
    println!(
        "   pipelined  : {:>9.3} ms  (1 write, 1,000 replies read back)",
        ms(pipelined)
    );
    println!(
        "   speed-up   : {:>9.1}x  (on loopback; every millisecond of network latency widens it)",
        ms(one_by_one) / ms(pipelined).max(1e-6)
    );
    Ok(())
}

/// Part 2, reading results: as `Value`s, per command, or converted to a tuple.
fn typed_results(conn: &mut Connection) -> Result<(), Error> {
    println!("\n2. Reading results");
    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", "name", "Alice"])
        .cmd(["GET", "name"])
        .cmd(["INCR", "counter"])
        .cmd(["GET", "counter"]);
    let replies = pipe.execute(conn)?;
    println!("   as Values : {}", Value::Array(replies));

    conn.execute(["DEL", "counter"])?;
    let (ok, name, n, s): ((), String, i64, String) = pipe.query(conn)?;
    println!("   typed     : ({:?}, {:?}, {}, {:?})", ok, name, n, s);

    // A failing command is its own reply; the others still run and the
    // connection stays usable.
    let mut pipe = Pipeline::new();
    pipe.cmd(["SET", "k", "v"])
        .cmd(["INCR", "k"])
        .cmd(["GET", "k"]);
    let results: Vec<Result<Value, ServerError>> = pipe.query(conn)?;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(v) => println!("   command {} -> {}", i, v),
            Err(e) => println!("   command {} -> error {}: {}", i, e.code(), e.message()),
        }
    }
    let name: Option<String> = conn.query(cmd("GET").arg("name"))?;
    println!("   still in step: GET name -> {:?}", name);
    Ok(())
}

/// Part 3, pipeline vs transaction: MULTI/EXEC makes the batch atomic.
fn transaction(conn: &mut Connection) -> Result<(), Error> {
    println!("\n3. A transaction (MULTI ... EXEC)");
    let mut tx = Pipeline::transaction();
    tx.cmd(["SET", "balance:alice", "100"])
        .cmd(["DECRBY", "balance:alice", "30"])
        .cmd(["INCRBY", "balance:bob", "30"]);
    let (ok, alice, bob): ((), i64, i64) = tx.query(conn)?;
    println!(
        "   committed atomically: {:?}, alice = {}, bob = {}",
        ok, alice, bob
    );

    let mut bad = Pipeline::transaction();
    bad.cmd(["SET", "x", "1"]).cmd(["NOSUCHCOMMAND"]);
    match bad.execute(conn) {
        Err(Error::ExecAbort { errors }) => {
            println!("   a command that cannot be queued discards the whole transaction:");
            for e in errors {
                println!("     {}", e);
            }
        }
        other => println!("   unexpected: {:?}", other),
    }
    let x: Option<String> = conn.query(["GET", "x"])?;
    println!("   nothing ran: GET x -> {:?}", x);
    Ok(())
}

/// Part 4, batching large loads: a pipeline's commands and replies are held
/// in memory, so send a large load in bounded batches.
fn batching_advice(conn: &mut Connection) -> Result<(), Error> {
    println!("\n4. Batching large loads");
    let total = 100_000;
    let batch = 10_000;
    let started = Instant::now();
    let mut pipe = Pipeline::with_capacity(1 << 20);
    let mut peak_buffer = 0;
    for start in (0..total).step_by(batch) {
        pipe.clear(); // keeps the buffer's capacity
        for i in start..(start + batch).min(total) {
            pipe.cmd(
                cmd("SET")
                    .arg(format!("bulk:{}", i))
                    .arg(format!("value:{}", i)),
            );
        }
        peak_buffer = peak_buffer.max(pipe.as_bytes().len());
        let replies = pipe.execute(conn)?;
        assert_eq!(replies.len(), batch.min(total - start));
    }
    let elapsed = started.elapsed();
    println!(
        "   by hand : {} SETs in Pipelines of {}: {:.1} ms ({:.0} commands/s), largest buffer {} KiB",
        total,
        batch,
        ms(elapsed),
        total as f64 / elapsed.as_secs_f64(),
        peak_buffer / 1024,
    );

    // The same load, built in: chunks bounded by count and bytes, two in
    // flight, so the server works on one while the client encodes the next.
    let started = Instant::now();
    let commands = (0..total).map(|i| {
        cmd("SET")
            .arg(format!("chunked:{}", i))
            .arg(format!("value:{}", i))
    });
    let chunking = Chunking::default().max_commands(1000).max_bytes(1 << 20);
    let summary = conn.execute_chunked(commands, &chunking, |_index, _reply| {})?;
    let elapsed = started.elapsed();
    let n: i64 = conn.query(["DBSIZE"])?;
    println!(
        "   built in: {} SETs via execute_chunked ({} chunks of <= {} commands / {} KiB): {:.1} ms ({:.0} commands/s), {} errors; DBSIZE = {}",
        summary.commands,
        summary.chunks,
        chunking.max_commands,
        chunking.max_bytes / 1024,
        ms(elapsed),
        total as f64 / elapsed.as_secs_f64(),
        summary.errors,
        n
    );
    println!("   advice: one pipeline of a million 10 KB values is a 10 GB buffer on each side;");
    println!("   batch by count and by bytes (execute_chunked does both, and overlaps the");
    println!("   server's work with the client's), reuse a Pipeline with clear(), and never");
    println!("   hold more replies than you need.");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
