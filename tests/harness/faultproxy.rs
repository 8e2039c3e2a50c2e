//! A TCP proxy that breaks things on purpose, between a tool and a server.
//!
//! `FaultProxy::start(upstream_port, Fault::DropAfter(7 << 20))` listens on
//! a free 127.0.0.1 port and forwards every connection to the upstream
//! port, misbehaving as the [`Fault`] says. It runs on plain threads and
//! stops when dropped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the proxy misbehaves.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward faithfully.
    None,
    /// Once: cut the connection that carries the client's N-th byte
    /// (counted over all connections), in both directions.
    DropAfter(u64),
    /// Once: cut the connection that carries the server's N-th byte.
    DropReplyAfter(u64),
    /// Once: flip the bits of the client's N-th byte (counted over all connections).
    CorruptAfter(u64),
    /// Hold every chunk, both ways, back by `by` on the first `connections` connections.
    Delay {
        /// How long each chunk waits.
        by: Duration,
        /// How many connections suffer it (`usize::MAX`: all).
        connections: usize,
    },
    /// Answer `503 SlowDown` to every request whose request line contains
    /// this text (every request when empty), forward the others.
    Unavailable(String),
    /// Hold every request whose request line starts with `method` and
    /// contains `containing` until `gate` opens; forward the others.
    Hold {
        /// `PUT`, `POST`, ...
        method: String,
        /// Text of the request line (a query parameter, a key).
        containing: String,
        /// Opened by the test.
        gate: Gate,
    },
}

/// A gate a [`Fault::Hold`] waits on, opened once by the test.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets every held request through, and every later one.
    pub fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }

    fn wait(&self) {
        let (open, changed) = &*self.0;
        let mut g = open.lock().unwrap_or_else(|e| e.into_inner());
        while !*g {
            g = changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What the proxy did, for assertions.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Bytes forwarded from clients to the server.
    pub client_bytes: AtomicU64,
    /// Bytes forwarded from the server to clients.
    pub server_bytes: AtomicU64,
    /// Connections cut by [`Fault::DropAfter`] or [`Fault::DropReplyAfter`].
    pub drops: AtomicUsize,
    /// Bytes flipped by [`Fault::CorruptAfter`].
    pub corrupted: AtomicUsize,
    /// Requests answered with 503.
    pub refused: AtomicUsize,
    /// Requests held by [`Fault::Hold`] (counted when held, not when let go).
    pub held: AtomicUsize,
}

/// A running proxy.
pub struct FaultProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// What it did.
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A slow link to `127.0.0.1:upstream`: every chunk of every
    /// connection, both ways, held back by `by`.
    pub fn slow(upstream: u16, by: Duration) -> FaultProxy {
        FaultProxy::start(
            upstream,
            Fault::Delay {
                by,
                connections: usize::MAX,
            },
        )
    }

    /// Starts forwarding to `127.0.0.1:upstream` with `fault`.
    pub fn start(upstream: u16, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        {
            let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = conn else { continue };
                    let n = stats.connections.fetch_add(1, Ordering::SeqCst);
                    let (fault, stats, fired) =
                        (fault.clone(), Arc::clone(&stats), Arc::clone(&fired));
                    std::thread::spawn(move || {
                        let _ = serve(client, upstream, &fault, n, stats, fired);
                    });
                }
            });
        }
        FaultProxy { port, stats, stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    client: TcpStream,
    upstream: u16,
    fault: &Fault,
    conn_no: usize,
    stats: Arc<Stats>,
    fired: Arc<AtomicBool>,
) -> io::Result<()> {
    if let Fault::Unavailable(_) | Fault::Hold { .. } = fault {
        return serve_one_request(client, upstream, fault, &stats);
    }
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    let delay = match fault {
        Fault::Delay { by, connections } if conn_no < *connections => Some(*by),
        _ => None,
    };
    let (drop_request_at, drop_reply_at, corrupt_at) = match fault {
        Fault::DropAfter(n) => (Some(*n), None, None),
        Fault::DropReplyAfter(n) => (None, Some(*n), None),
        Fault::CorruptAfter(n) => (None, None, Some(*n)),
        _ => (None, None, None),
    };
    // Counts a chunk and applies the fault when the chunk holds its byte:
    // flips it (corrupt_at), or says stop (drop_at).
    let fault_in = |counter: &AtomicU64,
                    drop_at: Option<u64>,
                    corrupt_at: Option<u64>,
                    chunk: &mut [u8],
                    stats: &Stats,
                    fired: &AtomicBool| {
        let before = counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        let end = before + chunk.len() as u64;
        let holds = |n: u64| n >= before && n < end;
        if let Some(n) = corrupt_at.filter(|n| holds(*n)) {
            if !fired.swap(true, Ordering::SeqCst) {
                chunk[(n - before) as usize] ^= 0xff;
                stats.corrupted.fetch_add(1, Ordering::SeqCst);
            }
        }
        match drop_at {
            Some(n) if holds(n) && !fired.swap(true, Ordering::SeqCst) => {
                stats.drops.fetch_add(1, Ordering::SeqCst);
                false
            }
            _ => true,
        }
    };
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    let (stats2, fired2) = (Arc::clone(&stats), Arc::clone(&fired));
    let back = std::thread::spawn(move || {
        let _ = pump(s2, c2, delay, |chunk| {
            fault_in(
                &stats2.server_bytes,
                drop_reply_at,
                None,
                chunk,
                &stats2,
                &fired2,
            )
        });
    });
    let (c3, s3) = (client.try_clone()?, server.try_clone()?);
    let _ = pump(client, server, delay, |chunk| {
        fault_in(
            &stats.client_bytes,
            drop_request_at,
            corrupt_at,
            chunk,
            &stats,
            &fired,
        )
    });
    let _ = back.join();
    let _ = c3.shutdown(Shutdown::Both);
    let _ = s3.shutdown(Shutdown::Both);
    Ok(())
}

/// Copies `from` to `to` until EOF, or until `go_on(chunk)` says stop; it may alter the chunk.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Option<Duration>,
    mut go_on: impl FnMut(&mut [u8]) -> bool,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return Ok(());
        }
        if let Some(d) = delay {
            // The injected fault itself: a slow network, not a wait.
            std::thread::sleep(d);
        }
        if !go_on(&mut buf[..n]) {
            // Forward half of the chunk, then cut: the server sees a truncated body.
            let _ = to.write_all(&buf[..n / 2]);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}

/// One request per connection: refused with 503 ([`Fault::Unavailable`]),
/// held until its gate opens ([`Fault::Hold`]), or forwarded, with
/// `Connection: close` so that the next request comes on a new connection.
fn serve_one_request(
    mut client: TcpStream,
    upstream: u16,
    fault: &Fault,
    stats: &Stats,
) -> io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or_default().to_string();
    let content_length: u64 = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    if let Fault::Hold {
        method,
        containing,
        gate,
    } = fault
    {
        if request_line.starts_with(method.as_str()) && request_line.contains(containing.as_str()) {
            stats.held.fetch_add(1, Ordering::SeqCst);
            gate.wait();
        }
    }
    if matches!(fault, Fault::Unavailable(filter) if request_line.contains(filter.as_str())) {
        stats.refused.fetch_add(1, Ordering::SeqCst);
        io::copy(&mut (&client).take(content_length), &mut io::sink())?;
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut new_head: String = text
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    new_head.push_str("Connection: close\r\n\r\n");
    server.write_all(new_head.as_bytes())?;
    io::copy(&mut (&client).take(content_length), &mut server)?;
    io::copy(&mut server, &mut client)?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
