//! Threads sharing a connection pool, and a server restart in the middle
//! that none of them notices.
//!
//! Eight worker threads share a pool of four connections. Each round, each
//! worker takes a connection, writes its own key and reads it back in one
//! pipeline, gives the connection back, and goes on until the round ends.
//! Between the two rounds, while the workers wait for the next one, the
//! server is killed and started again: every pooled connection is dead. In
//! the second round the pool finds them dead before handing them out
//! (it checks a connection that sat idle 100 ms or more), opens new ones in
//! their place, and the workers see no error. (Had the workers come back
//! sooner, each connection would have found its socket closed before
//! writing and reconnected itself: no error either.)
//!
//! Always runs against a private `redis-server` on a free loopback TCP
//! port (`REDIS_URL` is not used: the example restarts its server):
//!
//! ```text
//! cargo run --example pool
//! ```
//!
//! Needs the `pool` feature (on by default).
#![cfg_attr(not(feature = "pool"), allow(unused))]

#[cfg(feature = "pool")]
#[path = "common/local_server.rs"]
mod local_server;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(feature = "pool")]
use respline::{ConnectOptions, Pipeline, Pool, PoolStats};

/// What the workers did.
#[cfg(feature = "pool")]
#[derive(Debug)]
pub struct Report {
    /// Checkouts per round.
    pub rounds: Vec<usize>,
    /// Every error a worker saw, with its thread and round.
    pub errors: Vec<String>,
    /// The pool's stats after each round.
    pub stats: Vec<PoolStats>,
}

/// Runs `threads` workers through `pool` for two rounds of `round`
/// each, calling `between` (the restart) while they wait between rounds.
#[cfg(feature = "pool")]
pub fn demo(
    pool: &Pool<ConnectOptions>,
    threads: usize,
    round: Duration,
    between: impl FnOnce(),
) -> Report {
    // Workers and the main thread meet at the start and end of each round.
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (pool, barrier) = (pool.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut done = [0usize; 2];
                let mut errors = Vec::new();
                for (r, count) in done.iter_mut().enumerate() {
                    barrier.wait();
                    let started = Instant::now();
                    while started.elapsed() < round {
                        match work(&pool, t, *count) {
                            Ok(()) => *count += 1,
                            Err(e) => errors.push(format!("thread {}, round {}: {}", t, r + 1, e)),
                        }
                        thread::sleep(Duration::from_millis(2));
                    }
                    barrier.wait();
                }
                (done, errors)
            })
        })
        .collect();
    let mut stats = Vec::new();
    barrier.wait();
    barrier.wait(); // round 1 done
    stats.push(pool.stats());
    between();
    barrier.wait();
    barrier.wait(); // round 2 done
    stats.push(pool.stats());
    let mut report = Report {
        rounds: vec![0, 0],
        errors: Vec::new(),
        stats,
    };
    for w in workers {
        let (done, errors) = w.join().expect("a worker panicked");
        report.rounds[0] += done[0];
        report.rounds[1] += done[1];
        report.errors.extend(errors);
    }
    report
}

/// One job: write this thread's key and read it back, on a pooled
/// connection given back at the end.
#[cfg(feature = "pool")]
fn work(pool: &Pool<ConnectOptions>, thread: usize, n: usize) -> respline::Result<()> {
    let mut conn = pool.get()?;
    let key = format!("respline-example:pool:{}", thread);
    let value = format!("{}:{}", thread, n);
    let mut pipe = Pipeline::new();
    pipe.cmd(("SET", &key, &value)).cmd(("GET", &key));
    let ((), read): ((), String) = pipe.query(&mut conn)?;
    if read != value {
        return Err(respline::Error::conversion(value, read));
    }
    Ok(())
}

#[cfg(not(feature = "pool"))]
fn main() {
    eprintln!("this example needs the `pool` feature (on by default)");
}

#[cfg(feature = "pool")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut server = local_server::LocalServer::start_private_tcp();
    println!("a private redis-server at {}", server.url);
    let options = ConnectOptions::from_url(&server.url)?.read_timeout(Some(Duration::from_secs(5)));
    let pool = Pool::builder(options).max_size(4).build()?;
    let report = demo(&pool, 8, Duration::from_millis(500), || {
        let started = Instant::now();
        server.restart();
        println!(
            "   ... server killed and started again on the same port in {} ms",
            started.elapsed().as_millis()
        );
        // The workers' break goes on a little: the pool checks connections
        // idle this long before handing them out.
        thread::sleep(Duration::from_millis(150));
    });
    for (r, (count, stats)) in report.rounds.iter().zip(&report.stats).enumerate() {
        println!(
            "round {}: {} jobs by 8 threads; pool: {}",
            r + 1,
            count,
            stats
        );
    }
    if report.errors.is_empty() {
        println!("no worker saw an error");
    } else {
        println!("errors:");
        for e in &report.errors {
            println!("   {}", e);
        }
    }
    Ok(())
}
