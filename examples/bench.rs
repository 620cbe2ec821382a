//! Benchmarks of respline against a private `redis-server`, next to
//! `redis-benchmark` where a like-for-like figure exists.
//!
//! ```text
//! cargo run --release --example bench                 # full run, a few minutes at most
//! BENCH_QUICK=1 cargo run --release --example bench   # fewer runs, smaller counts
//! REDIS_URL=redis://127.0.0.1:6380/0 cargo run --release --example bench
//! BENCH_SECTIONS=1,6 cargo run --release --example bench   # only these sections
//! ```
//!
//! The example starts its own `redis-server` on a free loopback port and a
//! Unix socket in a temporary directory (never 6379), and kills it when
//! done. With `REDIS_URL` set, the TCP measurements use that server instead
//! (the Unix socket ones still use the private server).
//!
//! Sections:
//!
//! 1. 1,000 SETs one by one versus one pipeline, on loopback TCP and through
//!    a loopback proxy run by this example that delays every chunk by
//!    0.5 ms each way (about 1 ms round trip).
//! 2. Throughput of SET (16 B values) and GET (100 B values) at pipeline
//!    depths 1 to 10,000, over TCP and the Unix socket, alternating run by
//!    run with `redis-benchmark -c 1 -P <depth>`; medians, plus respline's
//!    client CPU time per command. Like redis-benchmark, respline builds
//!    each batch once and re-sends it. Also `execute_chunked` at 1,000 and
//!    10,000, which encodes every command as it goes.
//! 3. Reply-heavy reads: LRANGE of a 1,000-element list, client CPU time
//!    versus the server's, read as `Value`s, as borrowed views and as
//!    `Vec<Vec<u8>>`; next to the last, the cost of that type's own
//!    allocations, copies and frees with no reply at all (its floor).
//! 4. Decoding from memory, no server.
//! 5. Bulk load of 10 KiB values: peak client RSS and throughput of
//!    `execute_chunked` versus one giant `Pipeline`, each in a child process.
//! 6. Redis Cluster (needs the `cluster` feature and `redis-cli`), on a
//!    private cluster of 3 primaries on free loopback ports (always
//!    private: `REDIS_URL` does not apply). First, client CPU time per
//!    command of the same 1,000-command SET and GET pipelines (keys spread
//!    over all slots) on the single server and on the cluster, alternating
//!    run by run, with `redis-benchmark --cluster`'s throughput for
//!    reference. Then every node behind its own proxy as in section 1,
//!    announcing the proxy's port (`CONFIG SET cluster-announce-port`,
//!    checked in every node's `CLUSTER SLOTS`) so the client never bypasses
//!    it: one 1,000-command pipeline over the three primaries in round
//!    trips (its time over the proxied single server's PING time), next to
//!    the floor (the same commands pre-encoded and pre-split, on plain
//!    sockets).
//! 7. The connection pool (needs the `pool` feature), over TCP:
//!    uncontended `get()` + drop, and 16 threads doing GETs through a pool
//!    of 8 against `redis-benchmark -c 16` (`examples/common/bench_pool.rs`).
//!
//! It also writes `docs/bench.svg`: SET throughput over TCP against pipeline
//! depth, respline and redis-benchmark.

use std::error::Error as StdError;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use respline::resp::{decode, Decoder, Limits};
use respline::{cmd, Chunking, Connection, Pipeline, Value};

type BoxResult<T> = Result<T, Box<dyn StdError>>;

#[cfg(feature = "pool")]
#[path = "common/bench_pool.rs"]
mod bench_pool;

/// `std::hint::black_box`, so the optimizer cannot drop a decoded value.
/// (Stable since Rust 1.66; only the library itself is held to the 1.63
/// MSRV, not the examples.)
#[allow(clippy::incompatible_msrv)]
fn black_box<T>(value: T) -> T {
    std::hint::black_box(value)
}

/// The key both respline and redis-benchmark use (redis-benchmark without
/// `-r` sends its key placeholder as is).
const BENCH_KEY: &str = "key:__rand_int__";
const LIST_KEY: &str = "bench:list";
const LOAD_PREFIX: &str = "bench:load:";
const DEPTHS: [usize; 5] = [1, 10, 100, 1_000, 10_000];
const CHUNKED_DEPTHS: [usize; 2] = [1_000, 10_000];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 2 && args[1] == "--child" {
        std::process::exit(match child_main(&args[2..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench child: {}", e);
                1
            }
        });
    }
    if let Err(e) = run() {
        eprintln!("bench: {}", e);
        std::process::exit(1);
    }
}

/// How much work each section does.
struct Config {
    quick: bool,
    /// Runs per figure in sections 2 and 3 (the median is reported).
    runs: usize,
    /// Runs of section 1 (each one-by-one run over the proxy takes ~1 s).
    seed_runs: usize,
    /// Commands per run at depth 10 and deeper.
    n_deep: usize,
    /// Commands per run at depth 1.
    n_depth1: usize,
    /// Runs of each decode benchmark.
    decode_runs: usize,
    /// Values in the bulk load.
    load_values: usize,
    /// Runs of each bulk-load contender.
    load_runs: usize,
    /// The sections to run (`BENCH_SECTIONS=2,6`), all by default.
    sections: Vec<usize>,
    /// Interleaved runs of section 6's proxied measurements.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    proxy_runs: usize,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("BENCH_QUICK").map_or(false, |v| !v.is_empty() && v != "0");
        let sections = std::env::var("BENCH_SECTIONS")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect::<Vec<usize>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| (1..=7).collect());
        if quick {
            Config {
                quick,
                runs: 3,
                seed_runs: 1,
                n_deep: 20_000,
                n_depth1: 5_000,
                decode_runs: 3,
                load_values: 20_000,
                load_runs: 1,
                sections: sections.clone(),
                proxy_runs: 15,
            }
        } else {
            Config {
                quick,
                runs: 7,
                seed_runs: 3,
                n_deep: 100_000,
                n_depth1: 20_000,
                decode_runs: 5,
                load_values: 100_000,
                load_runs: 3,
                sections,
                proxy_runs: 51,
            }
        }
    }

    fn commands_at(&self, depth: usize) -> usize {
        if depth == 1 {
            self.n_depth1
        } else {
            self.n_deep
        }
    }
}

fn run() -> BoxResult<()> {
    let config = Config::from_env();
    let started = Instant::now();
    let server = match Server::start() {
        Ok(s) => Some(s),
        Err(e) => {
            println!("could not start a private redis-server: {}", e);
            None
        }
    };
    let tcp = match std::env::var("REDIS_URL") {
        Ok(url) => Target::from_url("tcp (REDIS_URL)", &url)?,
        Err(_) => match &server {
            Some(s) => Target::tcp("tcp", "127.0.0.1", s.port),
            None => return Err("no redis-server to benchmark: install it or set REDIS_URL".into()),
        },
    };
    let unix = server.as_ref().map(|s| Target::unix("unix", &s.sock));
    let rb_found = redis_benchmark_found();

    println!(
        "respline bench ({} mode): {}{}",
        if config.quick { "quick" } else { "full" },
        describe_targets(&tcp, unix.as_ref()),
        if rb_found {
            ""
        } else {
            "; redis-benchmark not found"
        }
    );

    let mut targets = vec![&tcp];
    if let Some(u) = &unix {
        targets.push(u);
    }
    let wants = |n: usize| config.sections.contains(&n);
    if wants(1) {
        timed(1, || section_seed(&config, &tcp));
    }
    let mut set_tcp = Vec::new();
    if wants(2) {
        set_tcp = timed(2, || section_throughput(&config, &targets, rb_found)).unwrap_or_default();
    }
    if wants(3) {
        timed(3, || section_lrange(&config, &tcp));
    }
    if wants(4) {
        timed(4, || section_decode(&config));
    }
    if wants(5) {
        timed(5, || section_load(&config, &tcp));
    }
    if wants(6) {
        #[cfg(feature = "cluster")]
        timed(6, || {
            cluster_section::section_cluster(&config, &tcp, rb_found)
        });
        #[cfg(not(feature = "cluster"))]
        println!("\n6. Redis Cluster: skipped (built without the `cluster` feature)");
    }
    if wants(7) {
        #[cfg(feature = "pool")]
        timed(7, || bench_pool::section_pool(&config, &tcp, rb_found));
        #[cfg(not(feature = "pool"))]
        println!("\n7. Connection pool: skipped (built without the `pool` feature)");
    }
    if let Err(e) = cleanup(&tcp, &config) {
        println!("cleanup failed: {}", e);
    }

    if !wants(2) {
        println!("\nsection 2 not run, so docs/bench.svg is left as it is");
    } else if set_tcp.is_empty() {
        println!("\nno SET-over-TCP figures, so no chart");
    } else {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join("bench.svg");
        let transport = if std::env::var_os("REDIS_URL").is_some() {
            "TCP to REDIS_URL"
        } else {
            "loopback TCP"
        };
        match write_svg(&path, &set_tcp, transport) {
            Ok(()) => println!("\nwrote docs/bench.svg"),
            Err(e) => println!("\ncould not write {}: {}", path.display(), e),
        }
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    drop(server);
    Ok(())
}

/// Runs one section, reporting its failure (the others still run) and how
/// long it took.
fn timed<T>(number: usize, section: impl FnOnce() -> BoxResult<T>) -> Option<T> {
    let started = Instant::now();
    let result = section();
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(v) => {
            println!("   (section {} took {:.1} s)", number, secs);
            Some(v)
        }
        Err(e) => {
            println!("   section {} failed after {:.1} s: {}", number, secs, e);
            None
        }
    }
}

fn describe_targets(tcp: &Target, unix: Option<&Target>) -> String {
    match unix {
        Some(u) => format!("TCP {} and Unix socket {}", redact(&tcp.url), u.url),
        None => format!("TCP {} (no Unix socket)", redact(&tcp.url)),
    }
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let start = match url.find("://") {
        Some(i) => i + 3,
        None => return url.to_string(),
    };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let mut out = match url[start..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[start..start + at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{}{}:***{}", &url[..start], user, &url[start + at..])
        }
        None => url.to_string(),
    };
    if let Some(q) = out.find('?') {
        if out[q..].contains("pass") {
            out.truncate(q);
            out.push_str("?***");
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Section 1: one by one versus one pipeline, with and without latency.

fn section_seed(config: &Config, tcp: &Target) -> BoxResult<()> {
    println!(
        "\n1. 1,000 SETs one by one vs one pipeline (median of {} run{})",
        config.seed_runs,
        if config.seed_runs == 1 { "" } else { "s" }
    );
    let proxy = Proxy::start(tcp.upstream.clone(), Duration::from_micros(500))?;
    let proxy_url = tcp.url_via(proxy.port);
    println!(
        "   {:<42} {:>14} {:>12} {:>9}",
        "path", "one by one", "pipeline", "speed-up"
    );
    for (label, url) in [
        (format!("{} direct", tcp.label), tcp.url.clone()),
        (
            format!("{} via proxy, +0.5 ms each way", tcp.label),
            proxy_url,
        ),
    ] {
        let mut conn = Connection::open(&url)?;
        let rtt = median_ping(&mut conn, 50)?;
        let mut one = Vec::new();
        let mut piped = Vec::new();
        for _ in 0..config.seed_runs {
            let t = Instant::now();
            for i in 0..1000 {
                conn.query::<()>(("SET", format!("bench:seed:{}", i), format!("value:{}", i)))?;
            }
            one.push(ms(t.elapsed()));

            let t = Instant::now();
            let mut pipe = Pipeline::new();
            for i in 0..1000 {
                pipe.cmd(("SET", format!("bench:seed:{}", i), format!("value:{}", i)));
            }
            let replies = pipe.execute(&mut conn)?;
            piped.push(ms(t.elapsed()));
            check_replies(&replies, 1000)?;
        }
        let (one, piped) = (median(&mut one), median(&mut piped));
        println!(
            "   {:<42} {:>11.2} ms {:>9.2} ms {:>8.1}x   (PING round trip {:.3} ms)",
            label,
            one,
            piped,
            one / piped,
            rtt
        );
    }
    Ok(())
}

fn median_ping(conn: &mut Connection, n: usize) -> BoxResult<f64> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.query::<String>(["PING"])?;
        times.push(ms(t.elapsed()));
    }
    Ok(median(&mut times))
}

// ---------------------------------------------------------------------------
// Section 2: throughput against pipeline depth, versus redis-benchmark.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Set,
    Get,
    SetChunked,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Set => "SET",
            Op::Get => "GET",
            Op::SetChunked => "SET chunked",
        }
    }

    fn rb_test(self) -> &'static str {
        match self {
            Op::Set | Op::SetChunked => "set",
            Op::Get => "get",
        }
    }

    fn value_size(self) -> usize {
        match self {
            Op::Set | Op::SetChunked => 16,
            Op::Get => 100,
        }
    }
}

/// One point of the chart: SET over TCP.
struct ChartPoint {
    depth: usize,
    respline: f64,
    redis_benchmark: Option<f64>,
    chunked: bool,
}

fn section_throughput(
    config: &Config,
    targets: &[&Target],
    rb_found: bool,
) -> BoxResult<Vec<ChartPoint>> {
    println!(
        "\n2. Throughput, one connection, median of {} runs; respline and redis-benchmark alternate run by run",
        config.runs
    );
    println!(
        "   SET: 16 B values, GET: 100 B values, all on the key {:?} (as redis-benchmark without -r); \
         respline encodes a batch once and re-sends it, as redis-benchmark does (the chunked rows \
         encode every command); CPU = respline's client thread",
        BENCH_KEY
    );
    println!(
        "   {:<6} {:<12} {:>6} {:>8} {:>14} {:>26} {:>7} {:>12}",
        "path", "command", "depth", "n", "respline/s", "redis-benchmark/s", "ratio", "CPU ns/cmd"
    );
    let mut chart = Vec::new();
    for (ti, target) in targets.iter().enumerate() {
        let mut conn = Connection::open(&target.url)?;
        for op in [Op::Set, Op::SetChunked, Op::Get] {
            let value = vec![b'v'; op.value_size()];
            if op == Op::Get {
                conn.query::<()>(("SET", BENCH_KEY, &value[..]))?;
            }
            let depths: &[usize] = if op == Op::SetChunked {
                &CHUNKED_DEPTHS
            } else {
                &DEPTHS
            };
            for &depth in depths {
                let n = config.commands_at(depth);
                let mut ours = Vec::new();
                let mut cpu = Vec::new();
                let mut theirs = Vec::new();
                // Each respline run next to the redis-benchmark run right
                // after it: the ratio of a pair is measured under the same
                // machine conditions, and the median of those ratios is
                // what the table reports.
                let mut ratios = Vec::new();
                let mut rb_error = None;
                for _ in 0..config.runs {
                    let cpu0 = thread_cpu_ns();
                    let elapsed = respline_run(&mut conn, op, depth, n, &value)?;
                    let cpu1 = thread_cpu_ns();
                    ours.push(n as f64 / elapsed.as_secs_f64());
                    if let (Some(a), Some(b)) = (cpu0, cpu1) {
                        cpu.push(b.saturating_sub(a) as f64 / n as f64);
                    }
                    if rb_found && rb_error.is_none() {
                        match &target.rb_args {
                            Some(args) => {
                                match redis_benchmark(args, op, depth, n, op.value_size()) {
                                    Ok(rps) => {
                                        if let Some(&last) = ours.last() {
                                            ratios.push(last / rps);
                                        }
                                        theirs.push(rps)
                                    }
                                    Err(e) => rb_error = Some(e),
                                }
                            }
                            None => rb_error = Some("n/a for this URL".to_string()),
                        }
                    }
                }
                let ours = median(&mut ours);
                let theirs = if theirs.is_empty() {
                    None
                } else {
                    Some(median(&mut theirs))
                };
                let (rb_col, ratio_col) = match (theirs, &rb_error) {
                    (Some(t), None) => (thousands(t), format!("{:.2}", median(&mut ratios))),
                    (_, Some(e)) => (truncate(e, 26), "-".to_string()),
                    (None, None) => ("redis-benchmark not found".to_string(), "-".to_string()),
                };
                let cpu_col = if cpu.is_empty() {
                    "n/a".to_string()
                } else {
                    format!("{:.0}", median(&mut cpu))
                };
                println!(
                    "   {:<6} {:<12} {:>6} {:>8} {:>14} {:>26} {:>7} {:>12}",
                    target.label_short(),
                    op.label(),
                    depth,
                    n,
                    thousands(ours),
                    rb_col,
                    ratio_col,
                    cpu_col
                );
                if ti == 0 && op != Op::Get {
                    chart.push(ChartPoint {
                        depth,
                        respline: ours,
                        redis_benchmark: if rb_error.is_none() { theirs } else { None },
                        chunked: op == Op::SetChunked,
                    });
                }
            }
        }
    }
    Ok(chart)
}

/// Runs `n` commands at `depth` and returns the wall time.
fn respline_run(
    conn: &mut Connection,
    op: Op,
    depth: usize,
    n: usize,
    value: &[u8],
) -> BoxResult<Duration> {
    let started = Instant::now();
    match op {
        Op::Set | Op::Get if depth == 1 => {
            for _ in 0..n {
                if op == Op::Set {
                    conn.query::<()>(("SET", BENCH_KEY, value))?;
                } else {
                    let v: Value = conn.query(("GET", BENCH_KEY))?;
                    black_box(v);
                }
            }
        }
        Op::Set | Op::Get => {
            // Like redis-benchmark, which builds its batch once and sends
            // it over and over: the batch is encoded once (inside the
            // timing) and re-sent. The chunked rows encode every command.
            let batch = |k: usize| {
                let mut pipe = Pipeline::new();
                for _ in 0..k {
                    if op == Op::Set {
                        pipe.cmd(("SET", BENCH_KEY, value));
                    } else {
                        pipe.cmd(("GET", BENCH_KEY));
                    }
                }
                pipe
            };
            let full = batch(depth.min(n));
            let mut left = n;
            while left > 0 {
                let k = left.min(depth);
                let replies = if k == full.len() {
                    full.execute(conn)?
                } else {
                    batch(k).execute(conn)?
                };
                check_replies(&replies, k)?;
                black_box(replies);
                left -= k;
            }
        }
        Op::SetChunked => {
            let chunking = Chunking::default()
                .max_commands(depth)
                .max_bytes(usize::MAX);
            let summary = conn.execute_chunked(
                (0..n).map(|_| ("SET", BENCH_KEY, value)),
                &chunking,
                |_, v| {
                    black_box(v);
                },
            )?;
            if summary.commands != n || summary.errors != 0 {
                return Err(format!(
                    "execute_chunked: {} commands, {} errors",
                    summary.commands, summary.errors
                )
                .into());
            }
        }
    }
    Ok(started.elapsed())
}

fn check_replies(replies: &[Value], expected: usize) -> BoxResult<()> {
    if replies.len() != expected {
        return Err(format!("{} replies, expected {}", replies.len(), expected).into());
    }
    if let Some(e) = replies.iter().find(|v| matches!(v, Value::Error(_))) {
        return Err(format!("server error: {}", e).into());
    }
    Ok(())
}

fn redis_benchmark_found() -> bool {
    Command::new("redis-benchmark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs redis-benchmark once and returns its requests per second.
fn redis_benchmark(
    conn_args: &[String],
    op: Op,
    depth: usize,
    n: usize,
    size: usize,
) -> Result<f64, String> {
    let output = Command::new("redis-benchmark")
        .args(conn_args)
        .args(["-c", "1", "-q", "-t", op.rb_test()])
        .arg("-n")
        .arg(n.to_string())
        .arg("-P")
        .arg(depth.to_string())
        .arg("-d")
        .arg(size.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-benchmark: {}", e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_redis_benchmark(&stdout, &op.rb_test().to_ascii_uppercase()).ok_or_else(|| {
        let err = String::from_utf8_lossy(&output.stderr);
        let first = err
            .lines()
            .chain(stdout.lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        format!("redis-benchmark: {}", first.trim())
    })
}

/// The last "<TEST>: <n> requests per second" of redis-benchmark's output
/// (which also holds `\r`-separated progress lines).
fn parse_redis_benchmark(stdout: &str, test: &str) -> Option<f64> {
    let prefix = format!("{}: ", test);
    stdout
        .split(['\r', '\n'])
        .rev()
        .filter(|l| l.contains("requests per second"))
        .find_map(|l| {
            let at = l.rfind(&prefix)?;
            let rest = &l[at + prefix.len()..];
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
}

// ---------------------------------------------------------------------------
// Section 3: reply-heavy reads.

fn section_lrange(config: &Config, tcp: &Target) -> BoxResult<()> {
    const ITEMS: usize = 1000;
    const READS: usize = 1000;
    const BATCH: usize = 100;
    println!(
        "\n3. Reply-heavy reads over {}: LRANGE 0 -1 of a {}-element list of 10 B items, {} times, median of {} runs",
        tcp.label, ITEMS, READS, config.runs
    );
    let mut conn = Connection::open(&tcp.url)?;
    conn.query::<()>(("DEL", LIST_KEY))?;
    let mut rpush = cmd("RPUSH").arg(LIST_KEY);
    for i in 0..ITEMS {
        rpush = rpush.arg(format!("item:{:05}", i));
    }
    let len: i64 = conn.query(rpush)?;
    if len != ITEMS as i64 {
        return Err(format!("RPUSH left {} elements, expected {}", len, ITEMS).into());
    }
    println!(
        "   {:<26} {:>12} {:>14} {:>16} {:>16} {:>14}",
        "mode", "replies/s", "elements/s", "client CPU us/r", "server CPU us/r", "client/server"
    );
    let mut pipe = Pipeline::new();
    for _ in 0..BATCH {
        pipe.cmd(("LRANGE", LIST_KEY, 0, -1));
    }
    let mut vectors_server = 0.0;
    for mode in LrangeMode::ALL {
        let mut rates = Vec::new();
        let mut client = Vec::new();
        let mut server = Vec::new();
        for _ in 0..config.runs {
            let s0 = server_cpu(&mut conn)?;
            let c0 = thread_cpu_ns();
            let t = Instant::now();
            match mode {
                LrangeMode::Values => {
                    for _ in 0..READS / BATCH {
                        let replies = pipe.execute(&mut conn)?;
                        check_list_replies(&replies, ITEMS)?;
                        black_box(replies);
                    }
                }
                LrangeMode::Borrowed => {
                    for _ in 0..READS / BATCH {
                        let mut bytes = 0;
                        pipe.for_each_reply(&mut conn, |_, reply| {
                            let reply = reply?;
                            let items = match reply.items() {
                                Some(items) if items.len() == ITEMS => items,
                                _ => {
                                    return Err(respline::Error::conversion(
                                        "a list",
                                        "another reply",
                                    ))
                                }
                            };
                            for item in items {
                                bytes += item.as_bytes().map_or(0, <[u8]>::len);
                            }
                            Ok(())
                        })?;
                        if bytes != BATCH * ITEMS * 10 {
                            return Err(format!("read {} bytes of items", bytes).into());
                        }
                    }
                }
                LrangeMode::Vectors => {
                    for _ in 0..READS / BATCH {
                        let lists: Vec<Vec<Vec<u8>>> = pipe.query(&mut conn)?;
                        if lists.len() != BATCH || lists.iter().any(|l| l.len() != ITEMS) {
                            return Err("unexpected LRANGE replies".into());
                        }
                        black_box(lists);
                    }
                }
                LrangeMode::AllocationsOnly => {
                    // What `Vec<Vec<u8>>` itself costs, with no reply at
                    // all: the same strings copied from memory, then dropped.
                    let item = b"item:00000";
                    for _ in 0..READS / BATCH {
                        let lists: Vec<Vec<Vec<u8>>> = (0..BATCH)
                            .map(|_| (0..ITEMS).map(|_| black_box(&item[..]).to_vec()).collect())
                            .collect();
                        black_box(lists);
                    }
                }
                LrangeMode::OneByOne => {
                    for _ in 0..READS {
                        let v: Value = conn.query(("LRANGE", LIST_KEY, 0, -1))?;
                        check_list_replies(std::slice::from_ref(&v), ITEMS)?;
                        black_box(v);
                    }
                }
            }
            let elapsed = t.elapsed();
            let c1 = thread_cpu_ns();
            let s1 = server_cpu(&mut conn)?;
            rates.push(READS as f64 / elapsed.as_secs_f64());
            if let (Some(a), Some(b)) = (c0, c1) {
                client.push(b.saturating_sub(a) as f64 / 1e3 / READS as f64);
            }
            server.push((s1 - s0).max(0.0) * 1e6 / READS as f64);
        }
        let rate = median(&mut rates);
        let mut server = median(&mut server);
        if let LrangeMode::AllocationsOnly = mode {
            // Compared with the server's work for the replies it mimics.
            server = vectors_server;
        } else if let LrangeMode::Vectors = mode {
            vectors_server = server;
        }
        let (client_col, ratio_col) = if client.is_empty() {
            ("n/a".to_string(), "n/a".to_string())
        } else {
            let c = median(&mut client);
            (
                format!("{:.1}", c),
                if server > 0.0 {
                    format!("{:.2}", c / server)
                } else {
                    "n/a".to_string()
                },
            )
        };
        println!(
            "   {:<26} {:>12} {:>14} {:>16} {:>16.1} {:>14}",
            mode.label(),
            thousands(rate),
            thousands(rate * ITEMS as f64),
            client_col,
            server,
            ratio_col
        );
    }
    conn.query::<()>(("DEL", LIST_KEY))?;
    Ok(())
}

/// How section 3 reads its LRANGE replies.
#[derive(Clone, Copy)]
enum LrangeMode {
    /// Pipelined, each reply an owned `Value`.
    Values,
    /// Pipelined, each reply viewed in the read buffer (`for_each_reply`).
    Borrowed,
    /// Pipelined, converted to `Vec<Vec<u8>>` from the read buffer.
    Vectors,
    /// No server: the allocations, copies and frees `Vec<Vec<u8>>` needs
    /// for the same replies, alone (the floor of the row above).
    AllocationsOnly,
    /// One `query::<Value>` at a time.
    OneByOne,
}

impl LrangeMode {
    const ALL: [LrangeMode; 5] = [
        LrangeMode::Values,
        LrangeMode::Borrowed,
        LrangeMode::Vectors,
        LrangeMode::AllocationsOnly,
        LrangeMode::OneByOne,
    ];

    fn label(self) -> &'static str {
        match self {
            LrangeMode::Values => "pipelined 100, Value",
            LrangeMode::Borrowed => "pipelined 100, borrowed",
            LrangeMode::Vectors => "pipelined 100, Vec<Vec<u8>>",
            LrangeMode::AllocationsOnly => "  its allocations alone",
            LrangeMode::OneByOne => "one by one, Value",
        }
    }
}

fn check_list_replies(replies: &[Value], items: usize) -> BoxResult<()> {
    for r in replies {
        match r {
            Value::Array(a) if a.len() == items => {}
            other => {
                return Err(format!("unexpected LRANGE reply: {:.80}", other.to_string()).into())
            }
        }
    }
    Ok(())
}

/// The server's `used_cpu_user + used_cpu_sys`, in seconds.
fn server_cpu(conn: &mut Connection) -> BoxResult<f64> {
    let info: String = conn.query(["INFO", "cpu"])?;
    let mut total = 0.0;
    let mut found = 0;
    for line in info.lines() {
        for key in ["used_cpu_user:", "used_cpu_sys:"] {
            if let Some(v) = line.strip_prefix(key) {
                total += v.trim().parse::<f64>()?;
                found += 1;
            }
        }
    }
    if found != 2 {
        return Err("INFO cpu has no used_cpu_user/used_cpu_sys".into());
    }
    Ok(total)
}

// ---------------------------------------------------------------------------
// Section 4: decoding from memory.

fn section_decode(config: &Config) -> BoxResult<()> {
    println!(
        "\n4. Decoding from one in-memory buffer, no server, median of {} runs: one Decoder's feed, \
         then the standalone decode() once per reply (alternating)",
        config.decode_runs
    );
    println!(
        "   {:<34} {:>9} {:>14} {:>14} {:>10}",
        "input", "MB", "replies/s", "elements/s", "MB/s"
    );
    let cases: Vec<(&str, Vec<u8>, usize, usize)> = vec![
        ("1,000,000 +OK", b"+OK\r\n".repeat(1_000_000), 1_000_000, 1),
        (
            "100,000 bulk strings of 1 KiB",
            {
                let mut one = b"$1024\r\n".to_vec();
                one.extend(std::iter::repeat(b'x').take(1024));
                one.extend_from_slice(b"\r\n");
                one.repeat(100_000)
            },
            100_000,
            1,
        ),
        (
            "10,000 arrays of 100 x 10 B bulk",
            {
                let mut one = b"*100\r\n".to_vec();
                for _ in 0..100 {
                    one.extend_from_slice(b"$10\r\n0123456789\r\n");
                }
                one.repeat(10_000)
            },
            10_000,
            100,
        ),
    ];
    for (label, buf, replies, per_reply) in &cases {
        let mut fed = Vec::new();
        let mut each = Vec::new();
        for _ in 0..config.decode_runs {
            for (times, run) in [
                (&mut fed, decode_all as fn(&[u8]) -> BoxResult<usize>),
                (&mut each, decode_each),
            ] {
                let t = Instant::now();
                let got = run(buf)?;
                times.push(t.elapsed().as_secs_f64());
                if got != *replies {
                    return Err(format!(
                        "{}: decoded {} replies, expected {}",
                        label, got, replies
                    )
                    .into());
                }
            }
        }
        for (name, times) in [
            (*label, &mut fed),
            ("  the same, decode() per reply", &mut each),
        ] {
            let secs = median(times);
            let mb = buf.len() as f64 / 1e6;
            println!(
                "   {:<34} {:>9.1} {:>14} {:>14} {:>10.0}",
                name,
                mb,
                thousands(*replies as f64 / secs),
                thousands((replies * per_reply) as f64 / secs),
                mb / secs
            );
        }
    }
    Ok(())
}

/// Every reply in `buf` through one `Decoder`, as a connection reads them.
fn decode_all(buf: &[u8]) -> BoxResult<usize> {
    let mut decoder = Decoder::new(Limits::default());
    let mut pos = 0;
    let mut count = 0;
    while pos < buf.len() {
        let (used, value) = decoder.feed(black_box(&buf[pos..]))?;
        pos += used;
        match value {
            Some(v) => {
                black_box(v);
                count += 1;
            }
            None => {
                if used == 0 {
                    return Err(format!("decoder stuck at byte {}", pos).into());
                }
            }
        }
    }
    Ok(count)
}

/// Every reply in `buf` through the standalone `decode`, one call each.
fn decode_each(buf: &[u8]) -> BoxResult<usize> {
    let limits = Limits::default();
    let mut pos = 0;
    let mut count = 0;
    while pos < buf.len() {
        match decode(black_box(&buf[pos..]), &limits)? {
            Some((v, used)) => {
                black_box(v);
                pos += used;
                count += 1;
            }
            None => return Err(format!("incomplete reply at byte {}", pos).into()),
        }
    }
    Ok(count)
}

// ---------------------------------------------------------------------------
// Section 5: bulk load, peak RSS measured in child processes.

const VALUE_10K: usize = 10 * 1024;
/// Where a child finds a URL with credentials (its argument is then `-`).
const CHILD_URL_VAR: &str = "RESPLINE_BENCH_CHILD_URL";

fn section_load(config: &Config, tcp: &Target) -> BoxResult<()> {
    let n = config.load_values;
    println!(
        "\n5. Bulk load over {}: {} SETs of 10 KiB values ({:.0} MB), each run in a child process; median of {} run{}",
        tcp.label,
        thousands(n as f64),
        (n * VALUE_10K) as f64 / 1e6,
        config.load_runs,
        if config.load_runs == 1 { "" } else { "s" }
    );
    let exe = std::env::current_exe()?;
    let mut conn = Connection::open(&tcp.url)?;
    let modes = ["chunked", "pipeline"];
    let mut results: Vec<Vec<ChildReport>> = vec![Vec::new(), Vec::new()];
    for _ in 0..config.load_runs {
        for (i, mode) in modes.iter().enumerate() {
            delete_load_keys(&mut conn, n)?;
            // A URL with credentials goes through the environment, not
            // the command line, where `ps` would show it.
            let secret = tcp.url.contains('@') || tcp.url.contains('?');
            let output = Command::new(&exe)
                .args(["--child", mode])
                .arg(if secret { "-" } else { &tcp.url })
                .arg(n.to_string())
                .env(CHILD_URL_VAR, if secret { &tcp.url[..] } else { "" })
                .stdin(Stdio::null())
                .output()?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                return Err(format!(
                    "child {} failed ({}): {}",
                    mode,
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )
                .into());
            }
            results[i].push(ChildReport::parse(&stdout).ok_or_else(|| {
                format!("could not parse the child's report: {:?}", stdout.trim())
            })?);
        }
    }
    delete_load_keys(&mut conn, n)?;
    println!(
        "   {:<46} {:>14} {:>14} {:>9} {:>9} {:>10}",
        "mode", "peak RSS", "(at start)", "seconds", "MB/s", "values/s"
    );
    for (i, mode) in modes.iter().enumerate() {
        let r = &results[i];
        let mut hwm: Vec<f64> = r.iter().map(|c| c.hwm_kb as f64).collect();
        let mut base: Vec<f64> = r.iter().map(|c| c.start_kb as f64).collect();
        let mut secs: Vec<f64> = r.iter().map(|c| c.secs).collect();
        let chunks = r.first().map_or(0, |c| c.chunks);
        let secs = median(&mut secs);
        let label = if *mode == "chunked" {
            format!("execute_chunked, max_commands 1000 ({} chunks)", chunks)
        } else {
            "one Pipeline, execute".to_string()
        };
        println!(
            "   {:<46} {:>10.1} MiB {:>10.1} MiB {:>9.2} {:>9.0} {:>10}",
            label,
            median(&mut hwm) / 1024.0,
            median(&mut base) / 1024.0,
            secs,
            (n * VALUE_10K) as f64 / 1e6 / secs,
            thousands(n as f64 / secs)
        );
    }
    println!("   (execute_chunked also caps a chunk at Chunking's default max_bytes, 1 MiB)");
    Ok(())
}

struct ChildReport {
    hwm_kb: u64,
    start_kb: u64,
    secs: f64,
    chunks: usize,
}

impl ChildReport {
    fn parse(stdout: &str) -> Option<ChildReport> {
        let mut hwm_kb = None;
        let mut start_kb = None;
        let mut secs = None;
        let mut chunks = 0;
        for word in stdout.split_whitespace() {
            let (k, v) = match word.split_once('=') {
                Some(kv) => kv,
                None => continue,
            };
            match k {
                "vmhwm_kb" => hwm_kb = v.parse().ok(),
                "start_kb" => start_kb = v.parse().ok(),
                "secs" => secs = v.parse().ok(),
                "chunks" => chunks = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Some(ChildReport {
            hwm_kb: hwm_kb?,
            start_kb: start_kb?,
            secs: secs?,
            chunks,
        })
    }
}

fn load_key(i: usize) -> String {
    format!("{}{}", LOAD_PREFIX, i)
}

fn delete_load_keys(conn: &mut Connection, n: usize) -> BoxResult<()> {
    let keys: Vec<String> = (0..n).map(load_key).collect();
    let chunking = Chunking::default();
    conn.execute_chunked(
        keys.chunks(1000).map(|c| {
            let mut command = cmd("UNLINK");
            for k in c {
                command.push_arg(k);
            }
            command
        }),
        &chunking,
        |_, _| {},
    )?
    .check()?;
    Ok(())
}

/// `--child <chunked|pipeline> <url> <n>`: loads, then reports its peak RSS.
fn child_main(args: &[String]) -> BoxResult<()> {
    if args.len() != 3 {
        return Err("usage: --child <chunked|pipeline> <url> <n>".into());
    }
    let n: usize = args[2].parse()?;
    let url = if args[1] == "-" {
        std::env::var(CHILD_URL_VAR)?
    } else {
        args[1].clone()
    };
    let mut conn = Connection::open(&url)?;
    let start_kb = proc_status_kb("VmHWM:")?;
    let value = vec![b'x'; VALUE_10K];
    let t = Instant::now();
    let mut chunks = 0;
    match args[0].as_str() {
        "chunked" => {
            let chunking = Chunking::default().max_commands(1000);
            let mut errors = 0;
            let summary = conn.execute_chunked(
                (0..n).map(|i| ("SET", load_key(i), &value[..])),
                &chunking,
                |_, v| {
                    if matches!(v, Value::Error(_)) {
                        errors += 1;
                    }
                },
            )?;
            if summary.commands != n || errors != 0 {
                return Err(format!("{} commands, {} errors", summary.commands, errors).into());
            }
            chunks = summary.chunks;
        }
        "pipeline" => {
            let mut pipe = Pipeline::new();
            for i in 0..n {
                pipe.cmd(("SET", load_key(i), &value[..]));
            }
            let replies = pipe.execute(&mut conn)?;
            check_replies(&replies, n)?;
        }
        other => return Err(format!("unknown mode {:?}", other).into()),
    }
    let secs = t.elapsed().as_secs_f64();
    let hwm_kb = proc_status_kb("VmHWM:")?;
    println!(
        "vmhwm_kb={} start_kb={} secs={:.6} chunks={}",
        hwm_kb, start_kb, secs, chunks
    );
    Ok(())
}

fn proc_status_kb(field: &str) -> BoxResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            let kb = rest.trim().trim_end_matches("kB").trim();
            return Ok(kb.parse()?);
        }
    }
    Err(format!("no {} in /proc/self/status", field).into())
}

fn cleanup(tcp: &Target, config: &Config) -> BoxResult<()> {
    let mut conn = Connection::open(&tcp.url)?;
    let mut pipe = Pipeline::new();
    pipe.cmd(("DEL", BENCH_KEY, LIST_KEY));
    let seed_keys: Vec<String> = (0..1000).map(|i| format!("bench:seed:{}", i)).collect();
    pipe.cmd(cmd("UNLINK").args(seed_keys.iter()));
    pipe.execute(&mut conn)?;
    delete_load_keys(&mut conn, config.load_values)
}

// ---------------------------------------------------------------------------
// Section 6: Redis Cluster.

#[cfg(feature = "cluster")]
#[path = "common/local_cluster.rs"]
mod local_cluster;

#[cfg(feature = "cluster")]
mod cluster_section {
    use std::collections::HashMap;

    use respline::Cluster;

    use super::local_cluster::LocalCluster;
    use super::*;

    /// Commands per pipeline, and keys (one per command, spread over the
    /// slots: ~333 per primary).
    const DEPTH: usize = 1_000;
    const KEY_PREFIX: &str = "bench:cluster:";
    const VALUE: &[u8] = b"vvvvvvvvvvvvvvvv";

    pub fn section_cluster(config: &Config, tcp: &Target, rb_found: bool) -> BoxResult<()> {
        let started = Instant::now();
        let local = LocalCluster::start_with(0)?;
        println!(
            "\n6. Redis Cluster: a private cluster of 3 primaries (no replicas), ports {}, started in {:.1} s; \
             the single server is the one of sections 1-5",
            local
                .ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64()
        );
        let keys: Vec<String> = (0..DEPTH).map(|i| format!("{}{}", KEY_PREFIX, i)).collect();
        let set = pipeline("SET", &keys);
        let get = pipeline("GET", &keys);
        let pipes = [("SET", &set), ("GET", &get)];

        let mut single = Connection::open(&tcp.url)?;
        cpu_per_command(config, &local, &mut single, &pipes, rb_found)?;
        through_proxies(config, &local, tcp, &keys, &pipes)?;

        let mut cleanup = cmd("UNLINK");
        for k in &keys {
            cleanup.push_arg(k);
        }
        single.query::<i64>(cleanup)?;
        Ok(())
    }

    /// Client CPU per command: the same pipelines on the single server and
    /// on the cluster, alternating run by run.
    fn cpu_per_command(
        config: &Config,
        local: &LocalCluster,
        single: &mut Connection,
        pipes: &[(&str, &Pipeline)],
        rb_found: bool,
    ) -> BoxResult<()> {
        let n = config.n_deep;
        println!(
            "   a. Client CPU per command: pipelines of {} commands on {} keys spread over all slots \
             (16 B values), {} pipelines per run, median of {} runs alternating single server and cluster; \
             the pipelines are built once and re-sent",
            thousands(DEPTH as f64),
            thousands(DEPTH as f64),
            n / DEPTH,
            config.runs
        );
        println!(
            "   {:<8} {:>14} {:>14} {:>16} {:>16} {:>22}",
            "command",
            "single/s",
            "cluster/s",
            "single ns/cmd",
            "cluster ns/cmd",
            "cluster/single CPU"
        );
        let mut cluster = Cluster::open(&local.url_refs())?;
        for (name, pipe) in pipes {
            // Warm up: open every node's connection, fill the keys.
            run_pipes(&mut cluster, pipe, 2 * DEPTH)?;
            run_pipes(single, pipe, 2 * DEPTH)?;
            let (mut rates, mut cpus) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
            let mut ratios = Vec::new();
            for _ in 0..config.runs {
                let mut pair = [f64::NAN; 2];
                for side in 0..2 {
                    let cpu0 = thread_cpu_ns();
                    let elapsed = if side == 0 {
                        run_pipes(single, pipe, n)?
                    } else {
                        run_pipes(&mut cluster, pipe, n)?
                    };
                    let cpu1 = thread_cpu_ns();
                    rates[side].push(n as f64 / elapsed.as_secs_f64());
                    if let (Some(a), Some(b)) = (cpu0, cpu1) {
                        pair[side] = b.saturating_sub(a) as f64 / n as f64;
                        cpus[side].push(pair[side]);
                    }
                }
                if pair.iter().all(|c| c.is_finite() && *c > 0.0) {
                    ratios.push(pair[1] / pair[0]);
                }
            }
            let cpu_col = |v: &mut Vec<f64>| {
                if v.is_empty() {
                    "n/a".to_string()
                } else {
                    format!("{:.0}", median(v))
                }
            };
            println!(
                "   {:<8} {:>14} {:>14} {:>16} {:>16} {:>22}",
                name,
                thousands(median(&mut rates[0])),
                thousands(median(&mut rates[1])),
                cpu_col(&mut cpus[0]),
                cpu_col(&mut cpus[1]),
                if ratios.is_empty() {
                    "n/a".to_string()
                } else {
                    format!("{:.2}  (target <= 1.5)", median(&mut ratios))
                }
            );
        }
        if cluster.refreshes() != 1 {
            println!(
                "   (the cluster client refreshed its slot map {} times: expected only the first)",
                cluster.refreshes()
            );
        }
        if rb_found {
            redis_benchmark_cluster(config, local)?;
        }
        Ok(())
    }

    /// `SET key <16 B>` or `GET key` for each key.
    fn pipeline(op: &str, keys: &[String]) -> Pipeline {
        let mut pipe = Pipeline::new();
        for k in keys {
            if op == "SET" {
                pipe.cmd(("SET", k, VALUE));
            } else {
                pipe.cmd(("GET", k));
            }
        }
        pipe
    }

    /// The size of each reply to [`pipeline`]'s commands.
    fn reply_size(op: &str) -> usize {
        if op == "SET" {
            b"+OK\r\n".len()
        } else {
            b"$16\r\n".len() + VALUE.len() + 2
        }
    }

    /// Pre-encoded requests on plain sockets, for the floor: every socket
    /// written, then each read until its replies' bytes are in. No
    /// decoding, no planning: what the proxies and servers allow.
    struct Raw {
        parts: Vec<(TcpStream, Vec<u8>, usize)>,
        buf: Vec<u8>,
    }

    impl Raw {
        fn new(parts: Vec<(String, Vec<u8>, usize)>) -> BoxResult<Raw> {
            let mut out = Vec::new();
            for (addr, bytes, expect) in parts {
                let stream = TcpStream::connect(&addr)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                out.push((stream, bytes, expect));
            }
            Ok(Raw {
                parts: out,
                buf: vec![0; 256 * 1024],
            })
        }

        fn run(&mut self) -> BoxResult<()> {
            for (stream, bytes, _) in &mut self.parts {
                stream.write_all(bytes)?;
            }
            for (stream, _, expect) in &mut self.parts {
                let mut got = 0;
                while got < *expect {
                    match stream.read(&mut self.buf)? {
                        0 => return Err("raw socket closed".into()),
                        n => got += n,
                    }
                }
                if got != *expect {
                    return Err(
                        format!("raw socket: {} reply bytes, expected {}", got, expect).into(),
                    );
                }
            }
            Ok(())
        }
    }

    /// `n` commands as `n / DEPTH` runs of `pipe`; the wall time.
    fn run_pipes(
        client: &mut impl respline::Client,
        pipe: &Pipeline,
        n: usize,
    ) -> BoxResult<Duration> {
        let started = Instant::now();
        for _ in 0..n / pipe.len() {
            let replies = pipe.execute(client)?;
            check_replies(&replies, pipe.len())?;
            black_box(replies);
        }
        Ok(started.elapsed())
    }

    /// redis-benchmark's own cluster mode, for reference: one connection
    /// per primary (`-c 3`), each with 1,000 commands in flight, on one
    /// thread (`--threads 1`: in cluster mode it otherwise runs threads
    /// whose reported time is a multiple of 250 ms).
    fn redis_benchmark_cluster(config: &Config, local: &LocalCluster) -> BoxResult<()> {
        let n = config.n_deep * 10;
        let runs = config.runs.min(3);
        let port = local.ports[0].to_string();
        let mut line = Vec::new();
        for op in [Op::Set, Op::Get] {
            let mut rates = Vec::new();
            for _ in 0..runs {
                let output = Command::new("redis-benchmark")
                    .args([
                        "--cluster",
                        "--threads",
                        "1",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port,
                    ])
                    .args(["-c", "3", "-q", "-t", op.rb_test(), "-d", "16"])
                    .args(["-n", &n.to_string(), "-P", &DEPTH.to_string()])
                    .stdin(Stdio::null())
                    .output()?;
                let stdout = String::from_utf8_lossy(&output.stdout);
                match parse_redis_benchmark(&stdout, &op.rb_test().to_ascii_uppercase()) {
                    Some(rps) => rates.push(rps),
                    None => {
                        let err = String::from_utf8_lossy(&output.stderr);
                        let first = err
                            .lines()
                            .chain(stdout.lines())
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("no output")
                            .to_string();
                        println!("   redis-benchmark --cluster: {}", first.trim());
                        return Ok(());
                    }
                }
            }
            line.push(format!(
                "{} {}/s",
                op.label(),
                thousands(median(&mut rates))
            ));
        }
        println!(
            "   redis-benchmark --cluster --threads 1 -c 3 -P {} -d 16 -n {} (one connection per primary, \
             each with {} commands in flight; median of {}): {}",
            DEPTH,
            n,
            thousands(DEPTH as f64),
            runs,
            line.join(", ")
        );
        Ok(())
    }

    /// Every node behind its own delaying proxy, announcing the proxy's
    /// port, so the client's slot map only holds proxied addresses: one
    /// pipeline over three primaries against round trips.
    fn through_proxies(
        config: &Config,
        local: &LocalCluster,
        tcp: &Target,
        keys: &[String],
        pipes: &[(&str, &Pipeline)],
    ) -> BoxResult<()> {
        let delay = Duration::from_micros(500);
        let mut proxies = Vec::new();
        let mut proxy_of: HashMap<u16, u16> = HashMap::new();
        for &port in &local.ports {
            let proxy = Proxy::start(Upstream::Tcp(format!("127.0.0.1:{}", port)), delay)?;
            proxy_of.insert(port, proxy.port);
            proxies.push(proxy);
        }
        // Each node announces its proxy's port to clients (CLUSTER SLOTS,
        // MOVED) and keeps its real bus port for the other nodes.
        for &port in &local.ports {
            let mut node = Connection::open(&format!("redis://127.0.0.1:{}", port))?;
            node.query::<()>(("CONFIG", "SET", "cluster-announce-port", proxy_of[&port]))?;
            node.query::<()>((
                "CONFIG",
                "SET",
                "cluster-announce-bus-port",
                u32::from(port) + 10_000,
            ))?;
        }
        let proxied: Vec<u16> = local.ports.iter().map(|p| proxy_of[p]).collect();
        wait_for_announced(&local.ports, &proxied)?;
        let seeds: Vec<String> = proxied
            .iter()
            .map(|p| format!("redis://127.0.0.1:{}", p))
            .collect();
        let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
        let mut cluster = Cluster::open(&seeds)?;
        let seen = cluster.primaries();
        let bypassed: Vec<&String> = seen
            .iter()
            .filter(|a| {
                !a.rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                    .map_or(false, |p| proxied.contains(&p))
            })
            .collect();
        if !bypassed.is_empty() {
            return Err(format!("the client sees unproxied primaries: {:?}", bypassed).into());
        }
        println!(
            "   b. Every node behind its own +0.5 ms-each-way proxy (as in section 1), announcing the proxy's port \
             (CONFIG SET cluster-announce-port): CLUSTER SLOTS on every node lists only proxy ports, and the \
             client's primaries are {}",
            seen.join(", ")
        );

        let single_proxy = Proxy::start(tcp.upstream.clone(), delay)?;
        let mut single = Connection::open(&tcp.url_via(single_proxy.port))?;
        let runs = config.proxy_runs;
        // Warm up: connections to every node open, keys present.
        for (_, pipe) in pipes {
            for _ in 0..3 {
                pipe.execute(&mut cluster)?;
                pipe.execute(&mut single)?;
            }
        }
        // The floor: the same commands, pre-encoded and pre-split by node,
        // on plain sockets through the same proxies.
        let mut raws = Vec::new();
        for (name, pipe) in pipes {
            let size = reply_size(name);
            let single_raw = Raw::new(vec![(
                format!("127.0.0.1:{}", single_proxy.port),
                pipe.as_bytes().to_vec(),
                DEPTH * size,
            )])?;
            let mut by_node: Vec<(String, Vec<String>)> = Vec::new();
            for k in keys {
                let node = cluster
                    .primary_for_slot(respline::cluster::key_slot(k.as_bytes()))
                    .ok_or("a slot without a primary")?;
                match by_node.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, ks)) => ks.push(k.clone()),
                    None => by_node.push((node, vec![k.clone()])),
                }
            }
            let cluster_raw = Raw::new(
                by_node
                    .into_iter()
                    .map(|(node, ks)| {
                        let bytes = pipeline(name, &ks).as_bytes().to_vec();
                        (node, bytes, ks.len() * size)
                    })
                    .collect(),
            )?;
            raws.push([single_raw, cluster_raw]);
        }
        for raw in raws.iter_mut().flatten() {
            raw.run()?;
        }

        // Sides: respline on the single server, respline on the cluster,
        // raw single, raw cluster.
        let mut ping = Vec::new();
        let mut times: Vec<[Vec<f64>; 4]> = (0..pipes.len()).map(|_| Default::default()).collect();
        let mut cpu = times.clone();
        for _ in 0..runs {
            let t = Instant::now();
            single.query::<String>(["PING"])?;
            ping.push(ms(t.elapsed()));
            for (i, (_, pipe)) in pipes.iter().enumerate() {
                for side in 0..4 {
                    let c = thread_cpu_ns();
                    let t = Instant::now();
                    match side {
                        0 => check_replies(&pipe.execute(&mut single)?, DEPTH)?,
                        1 => check_replies(&pipe.execute(&mut cluster)?, DEPTH)?,
                        _ => raws[i][side - 2].run()?,
                    }
                    times[i][side].push(ms(t.elapsed()));
                    if let (Some(a), Some(b)) = (c, thread_cpu_ns()) {
                        cpu[i][side].push(b.saturating_sub(a) as f64 / 1e6);
                    }
                }
            }
        }
        let rtt = median(&mut ping);
        println!(
            "   {:<62} {:>7} {:>12} {:>14}",
            format!("request (median of {} runs, interleaved)", runs),
            "ms",
            "round trips",
            "client CPU ms"
        );
        println!(
            "   {:<62} {:>7.3} {:>12.2}",
            "PING, single server via its proxy", rtt, 1.0
        );
        for (i, (name, _)) in pipes.iter().enumerate() {
            for side in [2, 0, 3, 1] {
                let t = median(&mut times[i][side]);
                let c = if cpu[i][side].is_empty() {
                    "n/a".to_string()
                } else {
                    format!("{:.3}", median(&mut cpu[i][side]))
                };
                let what = match side {
                    0 => "respline Pipeline, single server",
                    1 => "respline Pipeline, 3 primaries",
                    2 => "floor: raw socket, single server",
                    _ => "floor: raw sockets, pre-split, 3 primaries",
                };
                println!(
                    "   {:<62} {:>7.3} {:>12.2} {:>14}{}",
                    format!("{} {}s, {}", thousands(DEPTH as f64), name, what),
                    t,
                    t / rtt,
                    c,
                    if side == 1 { "  (target <= 1.5)" } else { "" }
                );
            }
        }
        let primaries_after = cluster.primaries();
        println!(
            "   slot-map refreshes by the proxied cluster client: {} (only the first; primaries still {})",
            cluster.refreshes(),
            if primaries_after == seen {
                "the proxied ones"
            } else {
                "CHANGED"
            }
        );
        drop(cluster);
        drop(proxies);
        Ok(())
    }

    /// Waits until every node's CLUSTER SLOTS names only `proxied` ports.
    fn wait_for_announced(ports: &[u16], proxied: &[u16]) -> BoxResult<()> {
        let started = Instant::now();
        loop {
            let mut stale = Vec::new();
            for &port in ports {
                let mut node = Connection::open(&format!("redis://127.0.0.1:{}", port))?;
                let slots: Value = node.query(["CLUSTER", "SLOTS"])?;
                for listed in slot_ports(&slots) {
                    if !proxied.contains(&listed) {
                        stale.push((port, listed));
                    }
                }
            }
            if stale.is_empty() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "after 15 s, CLUSTER SLOTS still lists unproxied ports (node, port listed): {:?}",
                    stale
                )
                .into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every node port listed in a CLUSTER SLOTS reply.
    fn slot_ports(slots: &Value) -> Vec<u16> {
        let mut out = Vec::new();
        if let Value::Array(ranges) = slots {
            for range in ranges {
                if let Value::Array(fields) = range {
                    for node in fields.iter().skip(2) {
                        if let Value::Array(parts) = node {
                            if let Some(p) = parts.get(1).and_then(|v| v.as_i64()) {
                                out.push(p as u16);
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Servers and targets.

/// A private redis-server on a free loopback port and a Unix socket, killed
/// on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
    sock: PathBuf,
}

impl Server {
    fn start() -> BoxResult<Server> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "respline-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir)?;
        let sock = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--unixsocket")
            .arg(&sock)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("redis-server: {}", e).into());
            }
        };
        let mut server = Server {
            child,
            dir,
            port,
            sock,
        };
        let url = format!("redis://127.0.0.1:{}/0", port);
        let started = Instant::now();
        loop {
            let ping = Connection::open(&url).and_then(|mut c| c.query::<String>(["PING"]));
            if ping.is_ok() && server.sock.exists() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server exited: {}", status).into());
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> BoxResult<u16> {
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
    Err("no free port".into())
}

/// Where the proxy forwards to.
#[derive(Clone)]
enum Upstream {
    Tcp(String),
    Unix(PathBuf),
}

/// A server to measure: respline's URL and redis-benchmark's arguments.
struct Target {
    label: String,
    url: String,
    /// `None` when the URL has options redis-benchmark cannot be given.
    rb_args: Option<Vec<String>>,
    upstream: Upstream,
    /// `user:password@` of the URL, if any, for the proxy's URL.
    userinfo: String,
    db: String,
}

impl Target {
    fn tcp(label: &str, host: &str, port: u16) -> Target {
        Target {
            label: label.to_string(),
            url: format!("redis://{}:{}/0", host, port),
            rb_args: Some(vec![
                "-h".into(),
                host.into(),
                "-p".into(),
                port.to_string(),
            ]),
            upstream: Upstream::Tcp(format!("{}:{}", host, port)),
            userinfo: String::new(),
            db: "0".into(),
        }
    }

    fn unix(label: &str, sock: &Path) -> Target {
        Target {
            label: label.to_string(),
            url: format!("unix://{}", sock.display()),
            rb_args: Some(vec!["-s".into(), sock.display().to_string()]),
            upstream: Upstream::Unix(sock.to_path_buf()),
            userinfo: String::new(),
            db: "0".into(),
        }
    }

    /// A `redis://` or `unix://` URL from `REDIS_URL`. Forms redis-benchmark
    /// cannot be told about (query parameters, percent-escapes) are still
    /// measured with respline, with "n/a" for redis-benchmark.
    fn from_url(label: &str, url: &str) -> BoxResult<Target> {
        let lower = url.to_ascii_lowercase();
        let plain = !url.contains('?') && !url.contains('%');
        for scheme in ["unix://", "redis+unix://", "valkey+unix://"] {
            if lower.starts_with(scheme) {
                let path = PathBuf::from(&url[scheme.len()..]);
                let mut t = Target::unix(label, &path);
                t.url = url.to_string();
                if !plain {
                    t.rb_args = None;
                }
                return Ok(t);
            }
        }
        let rest = ["redis://", "valkey://"]
            .iter()
            .find(|s| lower.starts_with(*s))
            .map(|s| &url[s.len()..])
            .ok_or("REDIS_URL: expected redis://, valkey:// or unix://")?;
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => ("", rest),
        };
        let (hostport, db) = match hostpart.find('/') {
            Some(slash) => (&hostpart[..slash], &hostpart[slash + 1..]),
            None => (hostpart, ""),
        };
        let db = if db.is_empty() { "0" } else { db };
        let (host, port) = match hostport.rfind(':') {
            Some(c) if !hostport[c..].contains(']') => (&hostport[..c], &hostport[c + 1..]),
            _ => (hostport, "6379"),
        };
        let port: u16 = port.parse().map_err(|_| "REDIS_URL: bad port")?;
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let mut rb = vec![
            "-h".to_string(),
            bare_host.to_string(),
            "-p".to_string(),
            port.to_string(),
            "--dbnum".to_string(),
            db.to_string(),
        ];
        if !userinfo.is_empty() {
            match userinfo.split_once(':') {
                Some((user, pass)) => {
                    if !user.is_empty() {
                        rb.extend(["--user".to_string(), user.to_string()]);
                    }
                    rb.extend(["-a".to_string(), pass.to_string()]);
                }
                None => rb.extend(["-a".to_string(), userinfo.to_string()]),
            }
        }
        Ok(Target {
            label: label.to_string(),
            url: url.to_string(),
            rb_args: if plain { Some(rb) } else { None },
            upstream: Upstream::Tcp(format!("{}:{}", host, port)),
            userinfo: if userinfo.is_empty() {
                String::new()
            } else {
                format!("{}@", userinfo)
            },
            db: db.to_string(),
        })
    }

    /// The URL of this target reached through a local proxy port.
    fn url_via(&self, port: u16) -> String {
        format!("redis://{}127.0.0.1:{}/{}", self.userinfo, port, self.db)
    }

    fn label_short(&self) -> &str {
        self.label.split_whitespace().next().unwrap_or("")
    }
}

// ---------------------------------------------------------------------------
// The latency-injecting proxy.

/// One side of a proxied connection.
trait Half: Read + Write + Send + 'static {
    fn clone_half(&self) -> io::Result<Self>
    where
        Self: Sized;
    fn shutdown_write(&self);
}

impl Half for TcpStream {
    fn clone_half(&self) -> io::Result<TcpStream> {
        self.try_clone()
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Half for UnixStream {
    fn clone_half(&self) -> io::Result<UnixStream> {
        self.try_clone()
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// A loopback TCP proxy that forwards bytes both ways, each chunk delayed
/// by `delay` (a delay line: a reader thread timestamps chunks, a writer
/// thread sends each when it is due, so bandwidth is not throttled).
struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: Upstream, delay: Duration) -> BoxResult<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let client = match client {
                    Ok(c) => c,
                    Err(_) => continue,
                };
                let _ = client.set_nodelay(true);
                let _ = match &upstream {
                    Upstream::Tcp(addr) => TcpStream::connect(addr).and_then(|s| {
                        s.set_nodelay(true)?;
                        splice(client, s, delay)
                    }),
                    Upstream::Unix(path) => {
                        UnixStream::connect(path).and_then(|s| splice(client, s, delay))
                    }
                };
            }
        });
        Ok(Proxy { port, stop })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn splice<U: Half>(client: TcpStream, server: U, delay: Duration) -> io::Result<()> {
    delay_line(client.clone_half()?, server.clone_half()?, delay);
    delay_line(server, client, delay);
    Ok(())
}

fn delay_line<R: Half, W: Half>(mut from: R, mut to: W, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        for (due, bytes) in rx {
            // Sleep until shortly before the chunk is due, then spin: a
            // plain sleep overshoots by ~0.1 ms, a tenth of the delay.
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                thread::sleep(due - now - Duration::from_micros(150));
            }
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        to.shutdown_write();
    });
}

// ---------------------------------------------------------------------------
// The chart.

fn write_svg(path: &Path, points: &[ChartPoint], transport: &str) -> io::Result<()> {
    let (w, h) = (820.0_f64, 480.0_f64);
    let (left, right, top, bottom) = (90.0, 240.0, 50.0, 70.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let values: Vec<f64> = points
        .iter()
        .flat_map(|p| std::iter::once(p.respline).chain(p.redis_benchmark))
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = values.iter().cloned().fold(0.0, f64::max);
    let (ymin, ymax) = if values.is_empty() {
        (3.0, 7.0)
    } else {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    };
    let (xmin, xmax) = (0.0_f64, 4.0_f64);
    let x = |depth: f64| left + (depth.log10() - xmin) / (xmax - xmin) * pw;
    let y = |v: f64| top + ph - (v.log10() - ymin) / (ymax - ymin) * ph;

    let mut s = String::new();
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    s.push_str(&format!(
        "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    ));
    s.push_str(&format!(
        "<text x=\"{}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">SET throughput against pipeline depth ({}, 1 connection, 16 B values)</text>\n",
        w / 2.0,
        xml_escape(transport)
    ));
    // Grid and ticks.
    for d in 0..=4 {
        let px = x(10f64.powi(d));
        s.push_str(&format!(
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n",
            top + ph
        ));
        s.push_str(&format!(
            "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            top + ph + 18.0,
            short_number(10f64.powi(d))
        ));
    }
    let mut e = ymin as i32;
    while e <= ymax as i32 {
        let py = y(10f64.powi(e));
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ccc\"/>\n",
            left + pw
        ));
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 8.0,
            py + 4.0,
            short_number(10f64.powi(e))
        ));
        if e < ymax as i32 {
            for m in [2.0, 5.0] {
                let py = y(m * 10f64.powi(e));
                s.push_str(&format!(
                    "<line x1=\"{left}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\n",
                    left + pw
                ));
            }
        }
        e += 1;
    }
    // Axes and their labels.
    s.push_str(&format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>\n"
    ));
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">pipeline depth (commands per round trip, log scale)</text>\n",
        left + pw / 2.0,
        h - 25.0
    ));
    s.push_str(&format!(
        "<text x=\"22\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 22 {:.1})\">commands per second (log scale)</text>\n",
        top + ph / 2.0,
        top + ph / 2.0
    ));
    // Series.
    let series: Vec<Series> = vec![
        (
            "respline (Pipeline)",
            "#d62728",
            points
                .iter()
                .filter(|p| !p.chunked)
                .map(|p| (p.depth, p.respline))
                .collect(),
            false,
        ),
        (
            "respline (execute_chunked)",
            "#ff9896",
            points
                .iter()
                .filter(|p| p.chunked)
                .map(|p| (p.depth, p.respline))
                .collect(),
            true,
        ),
        (
            "redis-benchmark -c 1 -P depth",
            "#1f77b4",
            points
                .iter()
                .filter(|p| !p.chunked)
                .filter_map(|p| p.redis_benchmark.map(|v| (p.depth, v)))
                .collect(),
            false,
        ),
    ];
    let mut legend_y = top + 10.0;
    for (name, color, pts, dashed) in &series {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(d, v)| format!("{:.1},{:.1}", x(*d as f64), y(*v)))
            .collect();
        let dash = if *dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>\n",
            path.join(" "),
            color,
            dash
        ));
        for (d, v) in pts {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"><title>{}: depth {}, {} commands/s</title></circle>\n",
                x(*d as f64),
                y(*v),
                color,
                xml_escape(name),
                d,
                thousands(*v)
            ));
        }
        let lx = left + pw + 15.0;
        s.push_str(&format!(
            "<line x1=\"{lx:.1}\" y1=\"{legend_y:.1}\" x2=\"{:.1}\" y2=\"{legend_y:.1}\" stroke=\"{}\" stroke-width=\"2\"{}/>\n",
            lx + 24.0,
            color,
            dash
        ));
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{legend_y:.1}\" r=\"3.5\" fill=\"{}\"/>\n",
            lx + 12.0,
            color
        ));
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>\n",
            lx + 30.0,
            legend_y + 4.0,
            xml_escape(name)
        ));
        legend_y += 22.0;
    }
    s.push_str("</svg>\n");

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("svg.tmp");
    std::fs::write(&tmp, s)?;
    std::fs::rename(&tmp, path)
}

/// A chart line: name, colour, (depth, commands/s) points, dashed.
type Series<'a> = (&'a str, &'a str, Vec<(usize, f64)>, bool);

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short_number(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{}", v)
    }
}

// ---------------------------------------------------------------------------
// Small helpers.

/// CPU time of the calling thread in ns: the first field of
/// /proc/thread-self/schedstat, else utime + stime of /proc/self/stat (in
/// 100 Hz clock ticks).
fn thread_cpu_ns() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = s.split_whitespace().next().and_then(|f| f.parse().ok()) {
            return Some(ns);
        }
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime + stime) * 10_000_000)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A rate rounded to an integer, with thousands separators.
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}
