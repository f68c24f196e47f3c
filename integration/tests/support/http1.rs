//! The little HTTP/1.1 the tests' stand-in servers speak (the transparency
//! log of `rekor.rs`, the timestamp authority of `tsa.rs`): one request per
//! connection, read whole (request line, headers, a `Content-Length` body),
//! and one response with `Connection: close`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One request as a stand-in server needs it.
pub struct Request {
    pub method: String,
    pub path: String,
    /// The `Content-Type` header, lowercased; empty when absent.
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Reads one request from `conn`; `None` if the client went away first.
pub fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (mut len, mut content_type) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("content-type") {
                content_type = v.trim().to_ascii_lowercase();
            }
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request { method, path, content_type, body })
}

/// Writes one response and closes; `extra` holds further header lines, each
/// ending in CRLF. A client that went away is not an error.
pub fn respond(mut conn: TcpStream, status: &str, content_type: &str, extra: &str, body: &[u8]) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(body);
}
