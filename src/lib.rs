//! respline: a small synchronous Redis client over `std::net`.
//!
//! RESP2 and RESP3, pipelines that cost one write and one round trip,
//! MULTI/EXEC transactions, typed replies, and no dependency beyond `std`.
//!
//! # Quick start
//!
//! ```
//! # mod fake { include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/doc_fake.rs")); } use fake::FakeServer;
//! use respline::{Connection, Pipeline};
//!
//! fn main() -> respline::Result<()> {
//!     // let mut conn = Connection::open("redis://127.0.0.1:6379/0")?;
//!     // Here, a scripted stream stands in for the server:
//! #   let stream = FakeServer::replying(&[b"+OK\r\n", b"$5\r\nAlice\r\n",
//! #       b"+OK\r\n:1\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"]);
//!     let mut conn = Connection::new(stream);
//!     conn.execute(["SET", "user:1:name", "Alice"])?; // checked for an error reply
//!     let name: Option<String> = conn.query(["GET", "user:1:name"])?;
//!     assert_eq!(name.as_deref(), Some("Alice"));
//!
//!     // Three commands, one write, one round trip.
//!     let mut pipe = Pipeline::new();
//!     pipe.cmd(["SET", "visits", "0"]).cmd(["INCR", "visits"]).cmd(["INCR", "user:1:name"]);
//!     let err = pipe.query::<((), i64, i64)>(&mut conn).unwrap_err();
//!     // Every reply was read; the first error reply fails the call, naming its command.
//!     assert_eq!(
//!         err.to_string(),
//!         "server error: command #2: WRONGTYPE Operation against a key holding the wrong kind of value"
//!     );
//!     assert!(!conn.is_broken());
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! ```text
//! src/resp/         the codec: bytes ⇄ Value (decode, encode, limits), no I/O    ── public as respline::resp
//!                   and ValueRef: a reply viewed in place once a scan has checked it
//! src/connect/      how to reach a server: Addr, ConnectOptions, URLs, sockets
//! src/connection/   one Connection: stream, buffer, deadlines, handshake,
//!                   and the one door every request goes through (door.rs)
//! src/cmd.rs        commands and their arguments            src/convert.rs   Value → your types
//! src/pipeline.rs   many commands, one write; the rule for many replies
//! src/transaction.rs  WATCH/MULTI/EXEC helper     src/script/   Lua scripts by SHA-1
//! src/pubsub.rs     subscribers                   src/scan.rs   SCAN iterators
//! src/chunked.rs    loads of any size in bounded chunks
//! src/client.rs     the Client trait: a Connection or a Cluster runs commands
//! src/cluster/      Redis Cluster (feature "cluster"): slots, the server's command table,
//!                   redirects, pipelines split by node — one Connection per node
//! src/pool/         a connection pool for threads (feature "pool"): FIFO waiters, checkout health checks
//! src/sentinel/     Redis Sentinel (feature "sentinel"): the primary looked up on every connect
//! ```
//!
//! The two data paths:
//!
//! ```text
//! write:  cmd("SET").arg(..) / Pipeline ──▶ resp::encode ──▶ Vec<u8> ──▶ one write
//! read:   socket bytes ──▶ read buffer ──▶ resp::FrameScan ──▶ ValueRef ──▶ FromValue ──▶ T
//!                                      └──▶ resp::Decoder ──▶ Value (execute, pub/sub, the rest)
//! ```
//!
//! Server error replies are values ([`Value::Error`]) until a conversion
//! turns them into [`Error::Server`]; I/O, timeout and protocol failures
//! break the connection, which then refuses use until
//! [`Connection::reconnect`], so a reply is never handed to the wrong
//! command. Every error says whether the request may have reached the server
//! ([`Error::may_have_reached_server`]); one that provably did not is sent
//! again on a fresh connection, once, when the connection was opened from
//! options.
//!
//! # Cargo features
//!
//! `cluster` (on by default) adds `Cluster`.
//! `pool` (on by default) adds `Pool`, a connection pool for threads.
//! `sentinel` (on by default) adds `Sentinel`, which follows a primary through failovers
//! (and, with `pool`, a pool over it).
//! With `default-features = false` the crate is the single-connection client alone.
//!
//! # Out of scope
//! TLS (bring your own stream: [`Connection::new`]), async.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chunked;
mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
mod cmd;
mod connect;
mod connection;
mod convert;
mod error;
mod pipeline;
#[cfg(feature = "pool")]
pub mod pool;
mod pubsub;
pub mod resp;
mod scan;
mod script;
#[cfg(feature = "sentinel")]
pub mod sentinel;
mod transaction;

pub use chunked::{Chunking, LoadSummary};
pub use client::Client;
#[cfg(feature = "cluster")]
pub use cluster::{Cluster, ClusterOptions};
pub use cmd::{cmd, ArgWriter, ArgWritten, Cmd, ToArg, ToCommand};
pub use connect::{Addr, ConnectOptions, Socket, SocketHooks};
pub use connection::{Connection, ReplyTimeout, Timed};
pub use convert::FromValue;
pub use error::{ConversionError, Error, Result, ServerError};
pub use pipeline::Pipeline;
#[cfg(feature = "pool")]
pub use pool::{Pool, PoolBuilder, PoolStats, PooledConnection};
pub use pubsub::{Message, MessageKind, StopHandle, Subscriber};
pub use resp::{Protocol, Value, ValueRef};
pub use scan::{Scan, ScanIter};
pub use script::{Script, ScriptInvocation};
#[cfg(feature = "sentinel")]
pub use sentinel::{Sentinel, SentinelOptions};
pub use transaction::{transaction, WatchOptions};

/// The README's Rust examples, compiled as doctests (with every feature
/// on: the README shows them all).
#[cfg(all(doctest, feature = "cluster", feature = "pool", feature = "sentinel"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
