//! Section 7 of `examples/bench.rs`: the connection pool (feature `pool`),
//! over the TCP target of sections 1-5.
//!
//! a. Uncontended `get()` + drop on a pool holding one idle connection:
//!    client CPU time per pair (thread CPU time over many pairs), with the
//!    default settings (a connection given back less than 100 ms ago is
//!    handed out without the look at its socket) and with the look at
//!    every checkout (`check_after_idle(0)`), to show what the look costs.
//!    Target: <= 1 us.
//! b. 16 threads doing GETs through a pool of 8 against `redis-benchmark
//!    -c 16` (16 connections, one event-loop thread), alternating run by
//!    run; medians. Target: >= 0.8x. For context, the same against
//!    `redis-benchmark -c 8` (as many connections as the pool), and 16
//!    threads through a pool of 16 against `-c 16`.

use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use respline::{ConnectOptions, Connection, Pool};

use super::{median, parse_redis_benchmark, thousands, thread_cpu_ns, BoxResult, Config, Target};

/// The key redis-benchmark's GET test reads (without `-r`), and its
/// default value size.
const KEY: &str = "key:__rand_int__";
const VALUE: &str = "xxx";

pub fn section_pool(config: &Config, tcp: &Target, rb_found: bool) -> BoxResult<()> {
    let options = ConnectOptions::from_url(&tcp.url)?;
    println!("\n7. Connection pool, over {}", tcp.label);
    uncontended(config, &options)?;
    contended(config, tcp, &options, rb_found)
}

/// a. CPU per uncontended get() + drop.
fn uncontended(config: &Config, options: &ConnectOptions) -> BoxResult<()> {
    let pairs = if config.quick { 50_000 } else { 200_000 };
    let runs = if config.quick { 3 } else { 5 };
    let default = Pool::builder(options.clone()).max_size(1).build()?;
    let always = Pool::builder(options.clone())
        .max_size(1)
        .check_after_idle(Duration::ZERO)
        .build()?;
    // Open each pool's connection first.
    drop(default.get()?);
    drop(always.get()?);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(cpu_per_pair(pairs, || default.get().map(drop))?);
        b.push(cpu_per_pair(pairs, || always.get().map(drop))?);
    }
    let a = median(&mut a);
    println!(
        "   a. uncontended get() + drop, client CPU per pair (median of {} runs of {}):",
        runs,
        thousands(pairs as f64)
    );
    println!(
        "      default (no look at a connection given back < 100 ms ago): {:>6.0} ns  (target <= 1,000 ns: {})",
        a,
        if a <= 1_000.0 { "met" } else { "missed" }
    );
    println!(
        "      check_after_idle(0): the socket look at every checkout:     {:>6.0} ns",
        median(&mut b)
    );
    for pool in [&default, &always] {
        let s = pool.stats();
        if s.created != 1 {
            return Err(format!("expected one connection, reused: {}", s).into());
        }
    }
    Ok(())
}

fn cpu_per_pair(pairs: usize, mut f: impl FnMut() -> respline::Result<()>) -> BoxResult<f64> {
    let start = thread_cpu_ns().ok_or("no thread CPU clock")?;
    for _ in 0..pairs {
        f()?;
    }
    let end = thread_cpu_ns().ok_or("no thread CPU clock")?;
    Ok(end.saturating_sub(start) as f64 / pairs as f64)
}

/// b. Threads doing GETs through a pool against redis-benchmark.
fn contended(
    config: &Config,
    tcp: &Target,
    options: &ConnectOptions,
    rb_found: bool,
) -> BoxResult<()> {
    let gets = if config.quick { 100_000 } else { 200_000 };
    let runs = if config.quick { 3 } else { 5 };
    let mut conn = Connection::connect(options)?;
    conn.execute(("SET", KEY, VALUE))?;
    let rb_args = match (&tcp.rb_args, rb_found) {
        (Some(args), true) => Some(args.clone()),
        _ => None,
    };
    println!(
        "   b. GETs of a {}-byte value, {} per run, median of {} runs (alternating):",
        VALUE.len(),
        thousands(gets as f64),
        runs
    );
    println!(
        "      {:<44} {:>12} {:>12} {:>8}",
        "threads / pool size", "respline/s", "rb/s", "ratio"
    );
    // (threads, pool size, redis-benchmark clients)
    for (threads, size, clients) in [(16, 8, 16), (16, 8, 8), (16, 16, 16)] {
        let pool = Pool::builder(options.clone()).max_size(size).build()?;
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let r = threads_through_pool(&pool, threads, gets)?;
            ours.push(r);
            if let Some(args) = &rb_args {
                let b = redis_benchmark_get(args, clients, gets)?;
                theirs.push(b);
                ratios.push(r / b);
            }
        }
        let label = format!(
            "{} threads, pool of {} vs redis-benchmark -c {}",
            threads, size, clients
        );
        let target = if (threads, size, clients) == (16, 8, 16) {
            let r = median(&mut ratios.clone());
            if r >= 0.8 {
                "  (target >= 0.8: met)"
            } else {
                "  (target >= 0.8: missed)"
            }
        } else {
            ""
        };
        println!(
            "      {:<44} {:>12} {:>12} {:>8}{}",
            label,
            thousands(median(&mut ours)),
            thousands(median(&mut theirs)),
            if ratios.is_empty() {
                "n/a".to_string()
            } else {
                format!("{:.2}", median(&mut ratios))
            },
            target
        );
        let s = pool.stats();
        println!("         pool: {}", s);
    }
    conn.execute(("DEL", KEY))?;
    Ok(())
}

/// `threads` threads share `gets` GETs through `pool`; GETs per second.
fn threads_through_pool(
    pool: &Pool<ConnectOptions>,
    threads: usize,
    gets: usize,
) -> BoxResult<f64> {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let each = gets / threads;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (pool, barrier) = (pool.clone(), Arc::clone(&barrier));
            thread::spawn(move || -> respline::Result<()> {
                barrier.wait();
                for _ in 0..each {
                    let mut conn = pool.get()?;
                    let v: Option<Vec<u8>> = conn.query(["GET", KEY])?;
                    if v.as_deref() != Some(VALUE.as_bytes()) {
                        return Err(respline::Error::conversion("the bench value", "another"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for w in workers {
        w.join().map_err(|_| "a bench thread panicked")??;
    }
    Ok((each * threads) as f64 / started.elapsed().as_secs_f64())
}

/// One run of `redis-benchmark -c <clients> -t get`; requests per second.
fn redis_benchmark_get(args: &[String], clients: usize, n: usize) -> BoxResult<f64> {
    let output = Command::new("redis-benchmark")
        .args(args)
        .args(["-q", "-t", "get", "-P", "1", "-d", "3"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-n")
        .arg(n.to_string())
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_redis_benchmark(&stdout, "GET")
        .ok_or_else(|| format!("redis-benchmark: no GET figure in {:?}", stdout.trim()).into())
}
