//! The codec: RESP2 and RESP3 bytes ⇄ [`Value`], with no I/O.
//!
//! ```text
//! encode:  command arguments / Value ──▶ encode_command, write_bulk, encode_value ──▶ Vec<u8>
//! decode:  &[u8] ──▶ decode (one value) or Decoder::feed (incremental) ──▶ Value
//! ```
//!
//! A [`Connection`](crate::Connection) uses this module for every byte it
//! writes and reads; it is public for those who build their own transport,
//! a fake server for their tests, or a proxy. Decoding is bounded by
//! [`Limits`]; breaking the protocol or a limit is a [`ProtocolError`].
//!
//! ```
//! use respline::resp::{decode, encode_command, Limits};
//! use respline::Value;
//!
//! let mut wire = Vec::new();
//! encode_command(&mut wire, &["GET", "key"]);
//! assert_eq!(wire, b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
//!
//! let (reply, used) = decode(b"$5\r\nAlice\r\n", &Limits::default())?.expect("a whole reply");
//! assert_eq!((reply, used), (Value::BulkString(b"Alice".to_vec()), 11));
//! # Ok::<(), respline::resp::ProtocolError>(())
//! ```

mod decode;
mod encode;
mod error;
pub(crate) mod number;
mod value;
mod view;

pub use decode::{decode, Decoder, Limits};
pub use encode::{encode_command, encode_value, encoded_len, write_bulk, Protocol};
pub use error::{ProtocolError, ProtocolErrorKind};
pub use value::Value;
pub use view::{AttributeRef, Items, Pairs, ValueRef};

pub(crate) use decode::parse_double;
pub(crate) use encode::{header_len, write_header, NumBuf};
pub(crate) use value::write_quoted;
pub(crate) use view::{view_frame, FrameScan, Scanned};
