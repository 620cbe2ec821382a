//! The pipelining lesson's `bulk_set`, with the batching built in.
//!
//! The lesson sets 100,000 keys by cutting them into batches of 1,000 and
//! running one pipeline per batch, waiting for each batch's replies before
//! sending the next. `execute_chunked` does the cutting itself (by command
//! count and by bytes, so huge values never make a huge buffer), keeps the
//! next chunk on the wire while the previous one's replies are read, and
//! pulls commands from an iterator, so the data never has to be collected
//! into a list first.
//!
//! Runs against `REDIS_URL` when it is set, otherwise against a private
//! `redis-server` it starts on a temporary Unix socket (and stops at the
//! end). It only touches keys under `respline-example:bulk:`.
//!
//! ```text
//! cargo run --release --example bulk_set
//! ```

#[path = "common/local_server.rs"]
mod local_server;

use std::time::Instant;

use respline::{Chunking, Connection, LoadSummary, Result};

/// Sets every `(key, value)` of `data`, `batch_size` commands per chunk.
fn bulk_set<K, V>(
    conn: &mut Connection,
    data: impl IntoIterator<Item = (K, V)>,
    batch_size: usize,
) -> Result<LoadSummary>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let commands = data
        .into_iter()
        .map(|(k, v)| ("SET", KeyBytes(k), KeyBytes(v)));
    let summary = conn.execute_chunked(
        commands,
        &Chunking::default().max_commands(batch_size),
        |_, _| {},
    )?;
    match &summary.first_error {
        Some(e) => Err(e.clone().into()),
        None => Ok(summary),
    }
}

/// Any `AsRef<[u8]>` as a command argument.
struct KeyBytes<T>(T);

impl<T: AsRef<[u8]>> respline::ToArg for KeyBytes<T> {
    fn write_arg(&self, out: respline::ArgWriter<'_>) -> respline::ArgWritten {
        out.bytes(self.0.as_ref())
    }
}

fn main() -> Result<()> {
    let server = local_server::LocalServer::from_env_or_start();
    let mut conn = Connection::open(&server.url)?;

    // 100,000 keys, generated on the fly: nothing is collected first.
    let data = (0..100_000).map(|i| {
        (
            format!("respline-example:bulk:key:{}", i),
            format!("value:{}", i),
        )
    });
    let started = Instant::now();
    let summary = bulk_set(&mut conn, data, 1000)?;
    let elapsed = started.elapsed();
    println!(
        "set {} keys in {} chunks in {:.1} ms ({:.0} keys/s)",
        summary.commands,
        summary.chunks,
        elapsed.as_secs_f64() * 1000.0,
        summary.commands as f64 / elapsed.as_secs_f64()
    );

    let last: String = conn.query(("GET", "respline-example:bulk:key:99999"))?;
    assert_eq!(last, "value:99999");
    println!("respline-example:bulk:key:99999 = {}", last);

    // Tidy up, in chunks too.
    let deleted = conn.execute_chunked(
        (0..100_000).map(|i| ("DEL", format!("respline-example:bulk:key:{}", i))),
        &Chunking::default(),
        |_, _| {},
    )?;
    println!("deleted {} keys", deleted.commands);
    Ok(())
}
