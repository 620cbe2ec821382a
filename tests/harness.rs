//! Tests of the test harness itself (tests/support/mod.rs): each server is
//! private, reachable over TCP and its Unix socket, can be killed and
//! restarted in place, and leaves nothing behind when dropped.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use support::RedisServer;

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const TIMEOUT: Duration = Duration::from_secs(5);

/// Writes `request` and reads until `expected.len()` bytes are in (or EOF),
/// then returns them.
fn exchange<S: Read + Write>(mut stream: S, request: &[u8], expected: usize) -> Vec<u8> {
    stream.write_all(request).expect("write the request");
    let mut reply = vec![0u8; expected];
    let mut got = 0;
    while got < expected {
        match stream.read(&mut reply[got..]).expect("read the reply") {
            0 => break,
            n => got += n,
        }
    }
    reply.truncate(got);
    reply
}

fn ping_tcp(server: &RedisServer) -> Vec<u8> {
    let stream = TcpStream::connect(server.tcp_addr()).expect("connect over TCP");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    exchange(stream, PING, 7)
}

fn ping_unix(path: &Path) -> Vec<u8> {
    let stream = UnixStream::connect(path).expect("connect over the Unix socket");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    exchange(stream, PING, 7)
}

fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[test]
fn answers_ping_over_tcp_and_unix_socket() {
    let server = RedisServer::start();
    let (host, port) = server.tcp_addr();
    assert_eq!(host, "127.0.0.1");
    assert_ne!(port, 6379);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", port));
    assert_eq!(
        server.unix_url(),
        format!("unix://{}", server.unix_path().display())
    );
    assert!(server.unix_path().starts_with(server.dir()));

    assert_eq!(ping_tcp(&server), b"+PONG\r\n");
    assert_eq!(ping_unix(&server.unix_path()), b"+PONG\r\n");
    assert_eq!(server.raw_command(&["PING"]), b"+PONG\r\n");
}

#[test]
fn raw_command_returns_exactly_one_whole_reply() {
    let server = RedisServer::start();
    assert_eq!(
        server.raw_command(&["RPUSH", "list", "a", "bc", ""]),
        b":3\r\n"
    );
    assert_eq!(
        server.raw_command(&["LRANGE", "list", "0", "-1"]),
        b"*3\r\n$1\r\na\r\n$2\r\nbc\r\n$0\r\n\r\n"
    );
    assert_eq!(server.raw_command(&["GET", "missing"]), b"$-1\r\n");
    let err = server.raw_command(&["NOSUCHCOMMAND"]);
    assert!(
        err.starts_with(b"-ERR unknown command"),
        "{:?}",
        String::from_utf8_lossy(&err)
    );
    // The server is ours: it reports the pid we spawned.
    let info = String::from_utf8(server.raw_command(&["INFO", "server"])).unwrap();
    assert!(
        info.contains(&format!("process_id:{}\r\n", server.pid())),
        "INFO server does not name pid {}: {}",
        server.pid(),
        info
    );
}

#[test]
fn debug_sleep_is_enabled_over_tcp_and_persistence_is_off() {
    let server = RedisServer::start();
    assert_eq!(server.raw_command(&["DEBUG", "SLEEP", "0"]), b"+OK\r\n");
    assert_eq!(
        server.raw_command(&["CONFIG", "GET", "appendonly"]),
        b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    );
    assert_eq!(
        server.raw_command(&["CONFIG", "GET", "save"]),
        b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
}

#[test]
fn extra_arguments_reach_the_server() {
    let server = RedisServer::start_with(&["--maxclients", "7", "--databases", "3"]);
    assert_eq!(
        server.raw_command(&["CONFIG", "GET", "maxclients"]),
        b"*2\r\n$10\r\nmaxclients\r\n$1\r\n7\r\n"
    );
    assert_eq!(
        server.raw_command(&["CONFIG", "GET", "databases"]),
        b"*2\r\n$9\r\ndatabases\r\n$1\r\n3\r\n"
    );
}

#[test]
fn requirepass_is_honoured_and_raw_command_authenticates() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret pass"]);
    assert_eq!(server.password(), Some("s3cret pass"));
    let unauthenticated = ping_tcp(&server);
    assert!(
        unauthenticated.starts_with(b"-NOAUTH"),
        "expected -NOAUTH without a password, got {:?}",
        String::from_utf8_lossy(&unauthenticated)
    );
    assert_eq!(server.raw_command(&["PING"]), b"+PONG\r\n");
}

#[test]
fn kill_then_restart_on_the_same_port_and_socket() {
    let mut server = RedisServer::start();
    let port = server.tcp_addr().1;
    let socket = server.unix_path();
    let first_pid = server.pid();
    server.raw_command(&["SET", "k", "v"]);
    assert!(server.is_running());

    server.kill();
    assert!(!server.is_running());
    assert!(
        !process_exists(first_pid),
        "pid {} survived kill",
        first_pid
    );
    let err = TcpStream::connect(server.tcp_addr()).expect_err("connect to a killed server");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{}", err);
    assert!(UnixStream::connect(&socket).is_err());
    assert!(server.try_raw_command(&["PING"]).is_err());
    server.kill(); // a second kill is harmless

    server.restart();
    assert_eq!(server.tcp_addr().1, port);
    assert_eq!(server.unix_path(), socket);
    assert_ne!(server.pid(), first_pid);
    assert_eq!(ping_tcp(&server), b"+PONG\r\n");
    assert_eq!(ping_unix(&socket), b"+PONG\r\n");
    // Nothing is saved: the restarted server starts empty.
    assert_eq!(server.raw_command(&["GET", "k"]), b"$-1\r\n");

    // Restarting a running server replaces it.
    let second_pid = server.pid();
    server.restart();
    assert!(!process_exists(second_pid));
    assert_eq!(server.raw_command(&["PING"]), b"+PONG\r\n");
}

#[test]
fn drop_kills_the_process_and_removes_the_directory() {
    let server = RedisServer::start_with(&["--requirepass", "pw"]);
    let pid = server.pid();
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));
    assert!(dir.join("redis.log").exists());
    drop(server);
    assert!(!process_exists(pid), "pid {} survived drop", pid);
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn parallel_servers_are_distinct() {
    let servers: Vec<RedisServer> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(RedisServer::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, a) in servers.iter().enumerate() {
        for b in &servers[i + 1..] {
            assert_ne!(a.tcp_addr(), b.tcp_addr());
            assert_ne!(a.dir(), b.dir());
            assert_ne!(a.pid(), b.pid());
        }
    }
    for (i, server) in servers.iter().enumerate() {
        let value = format!("server-{}", i);
        assert_eq!(server.raw_command(&["SET", "who", &value]), b"+OK\r\n");
    }
    for (i, server) in servers.iter().enumerate() {
        let expected = format!("${}\r\nserver-{}\r\n", 8, i);
        assert_eq!(server.raw_command(&["GET", "who"]), expected.as_bytes());
    }
}

#[test]
fn reply_len_finds_reply_boundaries() {
    use support::reply_len;
    assert_eq!(reply_len(b"+OK\r\n+PONG\r\n"), Some(5));
    assert_eq!(reply_len(b"$3\r\nfoo\r\n:1\r\n"), Some(9));
    assert_eq!(reply_len(b"$3\r\nfo"), None);
    assert_eq!(reply_len(b"$-1\r\n"), Some(5));
    assert_eq!(reply_len(b"*2\r\n:1\r\n"), None);
    assert_eq!(reply_len(b"*2\r\n:1\r\n$1\r\nx\r\n"), Some(15));
    assert_eq!(reply_len(b"%1\r\n+k\r\n"), None);
    assert_eq!(reply_len(b"%1\r\n+k\r\n_\r\n"), Some(11));
    assert_eq!(reply_len(b"|1\r\n+a\r\n+b\r\n:5\r\n"), Some(16));
    assert_eq!(reply_len(b"*0\r\n"), Some(4));
    assert_eq!(reply_len(b"*-1\r\n"), Some(5));
    assert_eq!(reply_len(b""), None);
}

#[test]
#[should_panic(expected = "no-such-option")]
fn a_server_that_cannot_start_panics_with_its_log() {
    RedisServer::start_with(&["--no-such-option", "1"]);
}

#[test]
fn restart_on_a_taken_port_panics_instead_of_using_it() {
    // Someone else holds the port of a killed server: restart must fail
    // loudly (after a bounded wait) rather than talk to the squatter.
    let mut server = RedisServer::start();
    server.kill();
    let squatter = std::net::TcpListener::bind(server.tcp_addr()).expect("take the port");
    let restart = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.restart()));
    drop(squatter);
    let message = restart.expect_err("restart on a taken port must panic");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("failed to restart") && message.contains("Address already in use"),
        "{}",
        message
    );
    // Once the port is free again, restart works.
    server.restart();
    assert_eq!(server.raw_command(&["PING"]), b"+PONG\r\n");
}
