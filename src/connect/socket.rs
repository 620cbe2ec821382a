//! Sockets: [`Socket`] (TCP or Unix), dialing with a deadline, and the
//! [`SocketHooks`] that let a [`Connection`](crate::Connection) over any
//! stream drive the socket underneath it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::options::Addr;
use crate::error::{Error, Result};

/// A TCP or Unix-socket stream, as opened by
/// [`Connection::open`](crate::Connection::open).
#[derive(Debug)]
pub enum Socket {
    /// A TCP stream (with `TCP_NODELAY` on).
    Tcp(TcpStream),
    /// A Unix domain socket stream.
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Socket {
    /// Sets the socket's read timeout (`None` waits for ever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(timeout),
            #[cfg(unix)]
            Socket::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Sets the socket's write timeout (`None` waits for ever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_write_timeout(timeout),
            #[cfg(unix)]
            Socket::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// Switches non-blocking mode on or off.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nonblocking(on),
            #[cfg(unix)]
            Socket::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// Shuts the socket down. Another thread blocked reading it wakes up
    /// with end-of-stream.
    pub fn shutdown(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            #[cfg(unix)]
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        }
    }

    /// A second handle to the same socket (for [`shutdown`](Socket::shutdown)
    /// from another thread).
    pub fn try_clone(&self) -> io::Result<Socket> {
        match self {
            Socket::Tcp(s) => s.try_clone().map(Socket::Tcp),
            #[cfg(unix)]
            Socket::Unix(s) => s.try_clone().map(Socket::Unix),
        }
    }

    /// A look at an idle socket that neither blocks nor consumes anything:
    /// `Some(true)` if nothing waits to be read (TCP `peek` would block),
    /// `Some(false)` if the peer closed it, bytes wait, or the look failed,
    /// `None` for a Unix socket (std has no stable `peek` for it).
    #[cfg(feature = "pool")]
    pub(crate) fn peek_idle(&self) -> Option<bool> {
        match self {
            Socket::Tcp(s) => {
                let mut byte = [0u8; 1];
                let quiet = s.set_nonblocking(true).is_ok()
                    && matches!(s.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
                Some(s.set_nonblocking(false).is_ok() && quiet)
            }
            #[cfg(unix)]
            Socket::Unix(_) => None,
        }
    }

    /// Opens a socket to `addr`, resolving and connecting before `deadline`.
    ///
    /// Name resolution uses the system resolver, which std cannot time out:
    /// the deadline is checked after it returns. Every failure is an
    /// [`Error::Connect`] that names the address.
    pub fn connect(addr: &Addr, deadline: Option<Instant>) -> Result<Socket> {
        Socket::dial(addr, deadline).map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        })
    }

    fn dial(addr: &Addr, deadline: Option<Instant>) -> io::Result<Socket> {
        let addrs = match addr {
            Addr::Tcp { host, port } => (host.as_str(), *port).to_socket_addrs()?,
            #[cfg(unix)]
            Addr::Unix(path) => return UnixStream::connect(path).map(Socket::Unix),
            #[cfg(not(unix))]
            Addr::Unix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "Unix sockets need a Unix platform",
                ))
            }
        };
        let mut last = None;
        for a in addrs {
            let attempt = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => TcpStream::connect_timeout(&a, left),
                    _ => Err(io::ErrorKind::TimedOut.into()),
                },
                None => TcpStream::connect(a),
            };
            match attempt {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(Socket::Tcp(s));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
        }))
    }
}

/// The time left before `deadline`, or a timeout error if none is.
pub(crate) fn remaining(
    deadline: Option<Instant>,
    operation: &'static str,
) -> Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err(Error::Timeout { operation })
            } else {
                Ok(Some(left))
            }
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl From<TcpStream> for Socket {
    fn from(s: TcpStream) -> Socket {
        Socket::Tcp(s)
    }
}

#[cfg(unix)]
impl From<UnixStream> for Socket {
    fn from(s: UnixStream) -> Socket {
        Socket::Unix(s)
    }
}

/// How a [`Connection`](crate::Connection) reaches the socket under a stream
/// it cannot see into (a TLS stream, a proxy wrapper), so that its deadlines
/// and its check for unsolicited data work there too.
///
/// Each hook is a plain function of the stream; closures that capture
/// nothing fit. For a TLS stream over a `TcpStream`:
///
/// ```
/// use std::net::TcpStream;
/// use respline::SocketHooks;
///
/// // Stand-in for a TLS stream type that exposes its TcpStream by get_ref().
/// struct Tls { tcp: TcpStream }
/// impl Tls { fn get_ref(&self) -> &TcpStream { &self.tcp } }
///
/// let hooks: SocketHooks<Tls> = SocketHooks {
///     set_read_timeout: |s, t| s.get_ref().set_read_timeout(t),
///     set_write_timeout: |s, t| s.get_ref().set_write_timeout(t),
///     set_nonblocking: |s, on| s.get_ref().set_nonblocking(on),
/// };
/// # let _ = hooks;
/// ```
pub struct SocketHooks<S> {
    /// Sets the socket's read timeout.
    pub set_read_timeout: fn(&S, Option<Duration>) -> io::Result<()>,
    /// Sets the socket's write timeout.
    pub set_write_timeout: fn(&S, Option<Duration>) -> io::Result<()>,
    /// Switches the socket's non-blocking mode.
    pub set_nonblocking: fn(&S, bool) -> io::Result<()>,
}

impl<S> Clone for SocketHooks<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for SocketHooks<S> {}

impl<S> std::fmt::Debug for SocketHooks<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SocketHooks")
    }
}

impl SocketHooks<Socket> {
    /// The hooks of a [`Socket`].
    pub fn socket() -> SocketHooks<Socket> {
        SocketHooks {
            set_read_timeout: Socket::set_read_timeout,
            set_write_timeout: Socket::set_write_timeout,
            set_nonblocking: Socket::set_nonblocking,
        }
    }
}

impl SocketHooks<TcpStream> {
    /// The hooks of a `TcpStream`.
    pub fn tcp() -> SocketHooks<TcpStream> {
        SocketHooks {
            set_read_timeout: TcpStream::set_read_timeout,
            set_write_timeout: TcpStream::set_write_timeout,
            set_nonblocking: TcpStream::set_nonblocking,
        }
    }
}

#[cfg(unix)]
impl SocketHooks<UnixStream> {
    /// The hooks of a `UnixStream`.
    pub fn unix() -> SocketHooks<UnixStream> {
        SocketHooks {
            set_read_timeout: UnixStream::set_read_timeout,
            set_write_timeout: UnixStream::set_write_timeout,
            set_nonblocking: UnixStream::set_nonblocking,
        }
    }
}
