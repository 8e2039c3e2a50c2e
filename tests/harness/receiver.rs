//! An HTTP receiver on loopback for what dbsafe posts: webhooks, Pushgateway
//! pushes. It keeps each request (its method and path, and its body) and
//! answers 200, or takes connections and never answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `METHOD PATH`.
    pub line: String,
    /// Its body.
    pub body: Vec<u8>,
}

/// The receiver; it lives as long as the test.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    /// Starts it: answering 200 to each request, or (`answer: false`)
    /// holding every connection without a word.
    pub fn start(answer: bool) -> Receiver {
        Receiver::serve(answer.then(|| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()))
    }

    /// Starts it answering every request with `response` (a whole HTTP
    /// response): a service that says something dbsafe must not take for
    /// an answer.
    pub fn answering(response: &str) -> Receiver {
        Receiver::serve(Some(response.as_bytes().to_vec()))
    }

    fn serve(answer: Option<Vec<u8>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&requests);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                let Some(answer) = &answer else {
                    held.push(conn);
                    continue;
                };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let (mut first, mut len) = (String::new(), 0);
                let _ = r.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let line = first
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                kept.lock().unwrap().push(Request { line, body });
                let mut w = conn;
                let _ = w.write_all(answer);
            }
        });
        Receiver { base, requests }
    }

    /// The requests so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}
