//! Bringing your own stream: a wrapper that logs every byte in and out.
//!
//! A TLS stream from any TLS crate plugs in the same way: respline only
//! needs `Read + Write`, and `SocketHooks` let it reach the socket underneath
//! for its deadlines.
//!
//! ```text
//! cargo run --example custom_stream
//! ```

#[path = "common/local_server.rs"]
mod local_server;

use std::io::{self, Read, Write};

use respline::{cmd, ConnectOptions, Connection, Error, Pipeline, Socket, SocketHooks};

/// Wraps any stream and prints what crosses it, escaped.
struct Logged<S> {
    inner: S,
    bytes_in: usize,
    bytes_out: usize,
}

impl<S: Read> Read for Logged<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes_in += n;
        println!("   <- {}", escape(&buf[..n]));
        Ok(n)
    }
}

impl<S: Write> Write for Logged<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes_out += n;
        println!("   -> {}", escape(&buf[..n]));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

fn main() -> Result<(), Error> {
    let server = local_server::LocalServer::from_env_or_start();
    let options = ConnectOptions::from_url(&server.url)?;

    // Open the socket yourself (for TLS: connect, then wrap it in the TLS
    // crate's stream), then hand the stream to respline.
    let socket = Socket::connect(&options.addr, None)?;
    let logged = Logged {
        inner: socket,
        bytes_in: 0,
        bytes_out: 0,
    };
    // The hooks reach the socket inside the wrapper, so read and write
    // deadlines are enforced inside blocking reads too.
    let hooks = SocketHooks {
        set_read_timeout: |s: &Logged<Socket>, t| s.inner.set_read_timeout(t),
        set_write_timeout: |s: &Logged<Socket>, t| s.inner.set_write_timeout(t),
        set_nonblocking: |s: &Logged<Socket>, on| s.inner.set_nonblocking(on),
    };
    let mut conn = Connection::with_hooks(logged, hooks);
    // AUTH, SELECT, CLIENT SETNAME and HELLO run over your stream too.
    conn.handshake(&options.client_name("custom-stream-example"))?;

    println!("one command:");
    let pong: String = conn.query(["PING"])?;
    println!("   = {}", pong);

    println!("a pipeline of three commands, one write:");
    let mut pipe = Pipeline::new();
    pipe.cmd(cmd("SET").arg("greeting").arg("hello\r\nworld"))
        .cmd(["GET", "greeting"])
        .cmd(["STRLEN", "greeting"]);
    let ((), greeting, len): ((), Vec<u8>, usize) = pipe.query(&mut conn)?;
    println!(
        "   = {:?} ({} bytes)",
        String::from_utf8_lossy(&greeting),
        len
    );

    let stream = conn.into_inner();
    println!(
        "{} bytes written, {} bytes read",
        stream.bytes_out, stream.bytes_in
    );
    Ok(())
}
