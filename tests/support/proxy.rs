//! A local HTTP proxy on loopback, as a corporate egress proxy behaves:
//! `CONNECT host:port` opens a tunnel (https), an absolute-form request
//! (`GET http://host/...`) is forwarded (plain http), and with credentials
//! set every request needs `Proxy-Authorization: Basic ...` (407 otherwise).
//! It counts what it saw, connects only to loopback targets, and bounds the
//! request head and the connections it serves. Spawns tasks; stops on drop.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use base64::Engine;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// Request heads larger than this are refused.
const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

#[derive(Default)]
struct Counts {
    tunnels: AtomicUsize,
    forwarded: AtomicUsize,
    refused: AtomicUsize,
}

/// The running proxy.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    /// Starts the proxy; with `credentials`, requests must authenticate.
    pub async fn start(credentials: Option<(&str, &str)>) -> Self {
        let expected = credentials.map(|(u, p)| {
            format!(
                "basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let counts = Arc::new(Counts::default());
        let state = counts.clone();
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (counts, expected) = (state.clone(), expected.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &counts, expected.as_deref()).await;
                    drop(permit);
                });
            }
        });
        ConnectProxy { addr, counts, task }
    }

    /// `http://127.0.0.1:PORT`, the `address` of a proxy Secret.
    pub fn address(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `CONNECT` tunnels opened.
    pub fn tunnels(&self) -> usize {
        self.counts.tunnels.load(Ordering::SeqCst)
    }

    /// Connections that began with an absolute-form request and were forwarded.
    pub fn forwarded(&self) -> usize {
        self.counts.forwarded.load(Ordering::SeqCst)
    }

    /// Requests answered 407 (missing or wrong credentials).
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }

    /// Everything it handled.
    pub fn total(&self) -> usize {
        self.tunnels() + self.forwarded() + self.refused()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    counts: &Counts,
    expected: Option<&str>,
) -> std::io::Result<()> {
    let head = read_head(&mut client).await?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_string());
    if let Some(expected) = expected
        && !authorization.is_some_and(|a| a.eq_ignore_ascii_case(expected))
    {
        counts.refused.fetch_add(1, Ordering::SeqCst);
        client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method == "CONNECT" {
        let Some(mut upstream) = connect_loopback(target).await else {
            client
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        };
        counts.tunnels.fetch_add(1, Ordering::SeqCst);
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    } else if let Some(rest) = target.strip_prefix("http://") {
        let authority = rest.split('/').next().unwrap_or_default();
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let Some(mut upstream) = connect_loopback(&authority).await else {
            client
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        };
        counts.forwarded.fetch_add(1, Ordering::SeqCst);
        // HTTP/1.1 servers accept absolute-form, so the head goes as is.
        upstream.write_all(&head).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    } else {
        client
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await?;
    }
    Ok(())
}

/// Reads up to and including the blank line ending the request head.
async fn read_head(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || client.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("no complete request head"));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// Connects to `host:port` only when it is a loopback address (tests never
/// leave the machine).
async fn connect_loopback(authority: &str) -> Option<TcpStream> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let ip: std::net::IpAddr = host.parse().ok()?;
    if !ip.is_loopback() {
        return None;
    }
    TcpStream::connect((ip, port.parse::<u16>().ok()?))
        .await
        .ok()
}
