//! A scripted fake Redis peer, std only, for what a real `redis-server`
//! cannot be made to do: truncated replies, garbage, drips, stalls, resets,
//! never reading.
//!
//! `FakePeer::start(script)` listens on a free loopback port, accepts one
//! connection and plays the script on it in a thread. Every blocking call of
//! the peer has a timeout, so a test that fails cannot leave it hanging.
//! `finish()` waits for it and returns what it read.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use respline::resp::Limits;
use respline::ConnectOptions;

/// The longest any one step of the peer waits.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// One step of the peer's script.
#[derive(Clone, Debug)]
pub enum Step {
    /// Reads until `n` more whole commands have arrived, one byte per read
    /// call, so nothing after them is taken from the socket.
    Read(usize),
    /// Writes these bytes.
    Send(Vec<u8>),
    /// Writes these bytes one at a time, pausing between them.
    Drip(Vec<u8>, Duration),
    /// Writes `prefix`, then `piece` over and over until `total` bytes or
    /// until the client goes away: a reply that never ends.
    Flood {
        prefix: Vec<u8>,
        piece: Vec<u8>,
        total: u64,
    },
    /// Waits without reading.
    Sleep(Duration),
    /// Reads (and records) whatever comes, until the client closes or the
    /// time passes: a peer that stopped answering.
    Stall(Duration),
    /// Closes the connection normally.
    Close,
    /// Drops the connection with request bytes still unread in its socket,
    /// which makes the kernel answer with a reset (RST). Waits up to a
    /// second for such bytes to be there.
    Reset,
}

pub use Step::*;

/// What the peer saw.
#[derive(Debug, Default)]
pub struct PeerLog {
    /// Every byte read from the client.
    pub read: Vec<u8>,
    /// Whole commands among them.
    pub commands: usize,
    /// Whether a write to the client failed (it had gone).
    pub write_failed: bool,
}

pub struct FakePeer {
    port: u16,
    handle: Option<JoinHandle<PeerLog>>,
}

impl FakePeer {
    pub fn start(script: Vec<Step>) -> FakePeer {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let started = Instant::now();
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if started.elapsed() > STEP_LIMIT {
                            return PeerLog::default();
                        }
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("accept: {}", e),
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_nodelay(true).unwrap();
            stream.set_write_timeout(Some(STEP_LIMIT)).unwrap();
            play(stream, script)
        });
        FakePeer {
            port,
            handle: Some(handle),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connect options for this peer: RESP2, no handshake commands.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::tcp("127.0.0.1", self.port)
    }

    /// Options with a read timeout.
    pub fn with_read_timeout(&self, ms: u64) -> ConnectOptions {
        self.options()
            .read_timeout(Some(Duration::from_millis(ms)))
            .limits(Limits::default())
    }

    /// Waits for the script to end and returns what the peer read.
    pub fn finish(mut self) -> PeerLog {
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("the fake peer panicked")
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        // Not joined here: a failing test must not wait for its peer.
        self.handle.take();
    }
}

fn play(mut stream: TcpStream, script: Vec<Step>) -> PeerLog {
    let mut log = PeerLog::default();
    let mut pending = Vec::new();
    for step in script {
        match step {
            Read(n) => {
                stream.set_read_timeout(Some(STEP_LIMIT)).unwrap();
                let mut got = 0;
                let mut byte = [0u8; 1];
                while got < n {
                    match stream.read(&mut byte) {
                        Ok(0) | Err(_) => return log,
                        Ok(_) => {
                            log.read.push(byte[0]);
                            pending.push(byte[0]);
                            if let Ok(Some((_, used))) =
                                respline::resp::decode(&pending, &Limits::default())
                            {
                                pending.drain(..used);
                                got += 1;
                                log.commands += 1;
                            }
                        }
                    }
                }
            }
            Send(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    log.write_failed = true;
                    return log;
                }
            }
            Drip(bytes, pause) => {
                for b in bytes {
                    if stream.write_all(&[b]).is_err() {
                        log.write_failed = true;
                        return log;
                    }
                    thread::sleep(pause);
                }
            }
            Flood {
                prefix,
                piece,
                total,
            } => {
                let mut sent = 0u64;
                if stream.write_all(&prefix).is_err() {
                    log.write_failed = true;
                    return log;
                }
                while sent < total {
                    if stream.write_all(&piece).is_err() {
                        log.write_failed = true;
                        return log;
                    }
                    sent += piece.len() as u64;
                }
            }
            Sleep(d) => thread::sleep(d),
            Stall(d) => {
                let until = Instant::now() + d;
                let mut buf = [0u8; 4096];
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    stream.set_read_timeout(Some(left)).unwrap();
                    match stream.read(&mut buf) {
                        Ok(0) => return finish_log(log, &mut pending),
                        Ok(n) => {
                            log.read.extend_from_slice(&buf[..n]);
                            pending.extend_from_slice(&buf[..n]);
                        }
                        Err(e)
                            if e.kind() == ErrorKind::WouldBlock
                                || e.kind() == ErrorKind::TimedOut => {}
                        Err(_) => return finish_log(log, &mut pending),
                    }
                }
            }
            Close => {
                let _ = stream.shutdown(Shutdown::Both);
                return finish_log(log, &mut pending);
            }
            Reset => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .unwrap();
                let mut byte = [0u8; 1];
                let _ = stream.peek(&mut byte);
                drop(stream);
                return finish_log(log, &mut pending);
            }
        }
    }
    finish_log(log, &mut pending)
}

/// Counts the whole commands among bytes read in bulk.
fn finish_log(mut log: PeerLog, pending: &mut Vec<u8>) -> PeerLog {
    while let Ok(Some((_, used))) = respline::resp::decode(pending, &Limits::default()) {
        pending.drain(..used);
        log.commands += 1;
    }
    log
}
