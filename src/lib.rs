//! respline: a small synchronous Redis client over `std::net`.
//!
//! RESP2 and RESP3, pipelines that cost one write and one round trip,
//! MULTI/EXEC transactions, typed replies, and no dependency beyond `std`.
//!
//! # The two data paths
//!
//! ```text
//! write:  cmd("SET").arg(..) / Pipeline ──▶ encode ──▶ Vec<u8> ──▶ one write_all
//!           cmd.rs, pipeline.rs            encode.rs              connection.rs
//!
//! read:   socket bytes ──▶ read buffer ──▶ Decoder ──▶ Value ──▶ FromValue ──▶ T
//!                        connection.rs   decode.rs   value.rs   convert.rs
//! ```
//!
//! Server error replies are values ([`Value::Error`]) until a conversion turns
//! them into [`Error::Server`]; I/O, timeout and protocol failures break the
//! connection, which then refuses use until [`Connection::reconnect`], so a
//! reply is never handed to the wrong command.
//!
//! # In scope
//! The RESP2/RESP3 codec, connections over TCP, Unix sockets or any
//! `Read + Write` stream, URL parsing, timeouts as deadlines, AUTH, SELECT,
//! CLIENT SETNAME and HELLO on connect, pipelines (plain, transactional and
//! chunked), typed conversions.
//!
//! # Out of scope
//! TLS (bring your own stream: [`Connection::new`]), connection pooling,
//! Redis Cluster and Sentinel routing, async.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blocking;
mod chunked;
mod cmd;
mod connection;
mod convert;
mod decode;
mod encode;
mod error;
mod options;
mod pipeline;
mod pubsub;
mod scan;
mod script;
mod sha1;
mod socket;
mod transaction;
mod url;
mod value;

pub use chunked::{Chunking, LoadSummary};
pub use cmd::{cmd, Cmd, ToArg, ToCommand};
pub use connection::{Connection, MAX_QUEUED_PUSHES};
pub use convert::FromValue;
pub use decode::{decode, Decoder, Limits};
pub use encode::{encode_command, encode_value, encoded_len, write_bulk, Protocol};
pub use error::{ConversionError, Error, ProtocolError, ProtocolErrorKind, Result, ServerError};
pub use options::{Addr, ConnectOptions};
pub use pipeline::Pipeline;
pub use pubsub::{Message, MessageKind, StopHandle, Subscriber};
pub use scan::{Scan, ScanIter};
pub use script::{Script, ScriptInvocation};
pub use socket::{Socket, SocketHooks};
pub use transaction::{transaction, WatchOptions};
pub use value::Value;

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
