//! The connection of a `git://` remote, made by the operator's own binary
//! (`projectsync git-connect ADDRESS PORT`, run by git as `core.gitProxy`)
//! instead of by git.
//!
//! Why: git opens `git://` sockets without `TCP_NODELAY`, and protocol v2
//! writes a request as several small packets. Each exchange then waits for
//! the peer's delayed acknowledgement (40 ms on Linux) before the rest of
//! the request leaves, and `git daemon` writes its answers the same way.
//! Measured over loopback against `git daemon`: an `ls-remote` took 50 ms
//! and a one-commit fetch 100 ms; through this relay, 7 ms and 16 ms. The
//! relay sets `TCP_NODELAY` on its socket and asks for immediate
//! acknowledgements (`TCP_QUICKACK`, which the kernel clears again, so
//! after every read).
//!
//! It also closes the last gap of the egress check for `git://`: it takes
//! only an IP address, the one [`super::command`] pinned after the policy
//! allowed it, so git never resolves a name of its own.
//!
//! Plain blocking I/O on two threads: the process lives for one git
//! command and carries one connection.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The running `projectsync` binary, once it said so ([`serve_from`]).
static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Declares that this process's executable answers `git-connect` (the
/// `projectsync` binary calls it at startup). A library user, such as a
/// test executable, does not, and its git connects by itself.
pub fn serve_from(program: PathBuf) {
    let _ = PROGRAM.set(program);
}

/// The program sources connect `git://` remotes through, if any.
pub fn program() -> Option<PathBuf> {
    PROGRAM.get().cloned()
}

/// The relay's buffer: large enough for a pack's sideband packets (64 KiB).
const BUFFER: usize = 64 * 1024;

/// Why the relay could not carry the connection (printed by git after
/// "fatal:", and classified from there as unreachable).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "git-connect takes the address the egress policy allowed, not {0:?}: the operator \
         resolves names itself"
    )]
    NotAnAddress(String),
    #[error("unable to connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("connection to {address} failed: {source}")]
    Relay {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The address git named: an IP address (bracketed or not) and `port`.
pub fn parse_address(host: &str, port: u16) -> Result<SocketAddr, ConnectError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = bare
        .parse()
        .map_err(|_| ConnectError::NotAnAddress(host.to_string()))?;
    Ok(SocketAddr::new(ip, port))
}

/// Connects to `address` with the socket options this module exists for.
pub fn connect(address: SocketAddr) -> Result<TcpStream, ConnectError> {
    let connect_err = |source| ConnectError::Connect { address, source };
    let stream = TcpStream::connect(address).map_err(connect_err)?;
    stream.set_nodelay(true).map_err(connect_err)?;
    acknowledge_now(&stream);
    Ok(stream)
}

/// Carries bytes between stdin/stdout (git) and `host`:`port` until the
/// remote closes the connection.
pub fn relay(host: &str, port: u16) -> Result<(), ConnectError> {
    let address = parse_address(host, port)?;
    let stream = connect(address)?;
    carry(stream, std::io::stdin(), std::io::stdout().lock(), address)
}

/// The two directions of [`relay`]: `input` to the remote on a thread of its
/// own (half-closing the socket at its end, as git's own transport does),
/// the remote to `output` here.
fn carry(
    stream: TcpStream,
    mut input: impl Read + Send + 'static,
    mut output: impl Write,
    address: SocketAddr,
) -> Result<(), ConnectError> {
    let relay_err = |source| ConnectError::Relay { address, source };
    let mut upstream = stream.try_clone().map_err(relay_err)?;
    // Not joined: git reads until the remote closes, and this process then
    // exits with the upstream thread still blocked on git's open stdin.
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; BUFFER];
        loop {
            match input.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if upstream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let mut downstream = stream;
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = match downstream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(relay_err(error)),
        };
        acknowledge_now(&downstream);
        output.write_all(&buffer[..n]).map_err(relay_err)?;
        output.flush().map_err(relay_err)?;
    }
}

/// Acknowledges what arrived at once rather than after the delayed-ACK
/// timer: the remote's next small write is held back (Nagle) until then.
fn acknowledge_now(stream: &TcpStream) {
    // Best effort: without it the relay is only slower.
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// Writes the script git runs as `core.gitProxy` into `dir`: git runs the
/// proxy with the host and port as its only arguments, so it cannot name a
/// subcommand itself.
pub fn write_proxy_script(dir: &Path, program: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("git-connect.sh");
    let quoted = program.display().to_string().replace('\'', r"'\''");
    let script = format!("#!/bin/sh\nexec '{quoted}' git-connect \"$1\" \"$2\"\n");
    super::environment::write_file(&path, script.as_bytes(), 0o700)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn only_an_address_is_connected_to() {
        for name in ["localhost", "example.com", "", "[localhost]", "1.2.3"] {
            assert!(
                matches!(
                    parse_address(name, 9418),
                    Err(ConnectError::NotAnAddress(_))
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_refused_connection_reads_as_unreachable_to_the_classifier() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let error = connect(parse_address("127.0.0.1", port).unwrap()).unwrap_err();
        let classified = super::super::error::build_error_from_stderr(
            "git://127.0.0.1/r",
            "ls-remote",
            "exit status: 128".into(),
            &format!("fatal: {error}\nfatal: Could not read from remote repository."),
        );
        assert!(
            matches!(classified, super::super::GitError::Unreachable { .. }),
            "{classified:?}"
        );
    }

    #[test]
    fn bytes_cross_both_ways_on_a_socket_without_nagle() {
        let listener = TcpListener::bind("[::1]:0")
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        // The remote: answers what it was sent, reversed, once the request
        // is complete (the relay half-closed), then closes.
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            socket.read_to_end(&mut request).unwrap();
            request.reverse();
            socket.write_all(&request).unwrap();
        });
        let named = parse_address(&format!("[{}]", address.ip()), address.port()).unwrap();
        assert_eq!(named, address);
        let stream = connect(address).unwrap();
        assert!(stream.nodelay().unwrap());
        let request: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut answer = Vec::new();
        carry(
            stream,
            std::io::Cursor::new(request.clone()),
            &mut answer,
            address,
        )
        .unwrap();
        server.join().unwrap();
        let mut expected = request;
        expected.reverse();
        assert_eq!(answer, expected);
    }

    #[test]
    fn the_script_quotes_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_proxy_script(dir.path(), Path::new("/opt/it's here/projectsync")).unwrap();
        let script = std::fs::read_to_string(path).unwrap();
        assert!(
            script.contains(r"exec '/opt/it'\''s here/projectsync' git-connect"),
            "{script}"
        );
    }
}
