//! respline and Redis Sentinel: the primary looked up through the
//! sentinels, writes, reads from replicas, and, on a private group, a
//! failover that the next connect follows by itself.
//!
//! Runs against `REDIS_SENTINEL_URLS` (comma-separated sentinel URLs) and
//! `REDIS_SENTINEL_NAME` (default `mymaster`) when set, without failing
//! over; otherwise against a private group it starts on free loopback
//! ports (a primary, two replicas, three sentinels) and stops at the end.
//! It only touches keys under `respline-example:`, and deletes them.
//!
//! ```text
//! cargo run --release --example sentinel
//! REDIS_SENTINEL_URLS=redis://10.0.0.1:26379,redis://10.0.0.2:26379 cargo run --release --example sentinel
//! ```
//!
//! Needs the `sentinel` feature (on by default).

#[cfg(feature = "sentinel")]
#[path = "common/local_sentinel.rs"]
mod local_sentinel;

#[cfg(feature = "sentinel")]
fn main() -> Result<(), respline::Error> {
    tour::run()
}

#[cfg(not(feature = "sentinel"))]
fn main() {
    eprintln!("this example needs the `sentinel` feature (on by default)");
}

#[cfg(feature = "sentinel")]
mod tour {
    use std::time::{Duration, Instant};

    use respline::{Connection, Error, Sentinel};

    use super::local_sentinel::LocalSentinels;

    const KEY: &str = "respline-example:sentinel-counter";

    pub fn run() -> Result<(), Error> {
        let started = Instant::now();
        let local = LocalSentinels::from_env_or_start();
        if local.is_private() {
            println!(
                "respline Sentinel tour, against a private group (a primary, 2 replicas, 3 sentinels) \
                 started in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        } else {
            println!(
                "respline Sentinel tour, against REDIS_SENTINEL_URLS={} (primary {:?})",
                local.urls.join(","),
                local.name
            );
        }

        // 1. One sentinel is enough to start: the others are learned.
        let sentinel = Sentinel::open(&local.url_refs()[..1], &local.name)?;
        let primary = sentinel.primary_addr()?;
        println!("1. the primary is {}", primary);
        let known: Vec<String> = sentinel.sentinels().iter().map(|a| a.to_string()).collect();
        println!("   sentinels known after one lookup: {}", known.join(", "));

        // 2. Writes go to the primary; WAIT for the replicas.
        let mut conn = sentinel.connect_primary()?;
        conn.execute(["DEL", KEY])?;
        let n: i64 = conn.query(["INCR", KEY])?;
        let replicas: i64 = conn.query(["WAIT", "1", "1000"])?;
        println!(
            "2. INCR on the primary: {}, replicated to {} replica(s)",
            n, replicas
        );

        // 3. Reads from replicas, in turn.
        for _ in 0..2 {
            let mut replica = sentinel.connect_replica()?;
            let read: Option<i64> = replica.query(["GET", KEY])?;
            println!("3. a replica at {} reads {:?}", address(&replica), read);
        }

        // 4. A failover (private group only): the next connect follows it.
        if local.is_private() {
            let before = conn;
            let old = address(&before);
            let mut to_sentinel = Connection::open(&local.urls[0])?;
            to_sentinel.execute(["SENTINEL", "FAILOVER", &local.name])?;
            println!("4. SENTINEL FAILOVER sent; an INCR through a fresh connect_primary() every 100 ms:");
            let since = Instant::now();
            let mut errors = 0;
            conn = loop {
                let attempt = sentinel.connect_primary().and_then(|mut c| {
                    let n: i64 = c.query(["INCR", KEY])?;
                    Ok((c, n))
                });
                match attempt {
                    Ok((c, n)) if address(&c) != old => {
                        println!(
                            "   the new primary {} answered {} after {:.1} s ({} errors on the way)",
                            address(&c),
                            n,
                            since.elapsed().as_secs_f64(),
                            errors
                        );
                        break c;
                    }
                    Ok((c, n)) if since.elapsed() > Duration::from_secs(20) => {
                        println!("   still {} after 20 s ({})", old, n);
                        break c;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        println!("   {} (may have run: {})", e, e.may_have_reached_server());
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            println!(
                "   primary changes seen: {}; a connection to {} still owned: {}",
                sentinel.changes(),
                old,
                sentinel.owns(&before)
            );
        }

        conn.execute(["DEL", KEY])?;
        println!("done in {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    fn address(conn: &Connection) -> String {
        conn.options()
            .map_or_else(|| "?".to_string(), |o| o.addr.to_string())
    }
}
