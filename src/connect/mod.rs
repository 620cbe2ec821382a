//! How to reach a server: where ([`Addr`]), with what settings
//! ([`ConnectOptions`], also from a URL), and the socket to dial
//! ([`Socket`], [`SocketHooks`]). These make the recipe a
//! [`Connection`](crate::Connection) is opened from and replays to
//! reconnect; they hold no connection state.

mod options;
mod socket;
mod url;

pub use options::{Addr, ConnectOptions};
pub(crate) use socket::remaining;
pub use socket::{Socket, SocketHooks};
