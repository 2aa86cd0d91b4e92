//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream`: one POST per connection
//! (`Connection: close`), bodies by `Content-Length`, chunked transfer or end of stream. Plain
//! `http://` only; an `https://` endpoint needs a local TLS-terminating proxy.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest response accepted, head and body (a chat completion is a few kilobytes). Every size
/// a server announces (`Content-Length`, chunk sizes) is checked against it before it is used.
pub const MAX_BODY: usize = 16 << 20;

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address, as written (brackets kept for IPv6).
    pub host: String,
    /// TCP port (80 when not written).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `url`.
    ///
    /// # Errors
    /// [`HttpError::BadUrl`] saying what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |problem: &str| HttpError::BadUrl(problem.to_string());
        if url.starts_with("https://") {
            return Err(bad("https is not supported: run a local TLS proxy and give its http:// address"));
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("the URL must start with http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                let port = authority[i + 1..]
                    .parse::<u16>()
                    .map_err(|_| bad(&format!("bad port in {authority:?}")))?;
                (&authority[..i], port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad("the URL has no host"));
        }
        Ok(HttpUrl { host: host.to_string(), port, path: path.to_string() })
    }

    fn socket_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        Ok((host, self.port).to_socket_addrs()?.collect())
    }
}

/// Why a request failed before a complete response arrived.
#[derive(Debug)]
pub enum HttpError {
    /// No connection could be made (refused, unreachable, name not resolved, connect timeout).
    Connect(std::io::Error),
    /// The response did not complete within the time limit.
    Timeout(Duration),
    /// The connection broke while sending or receiving.
    Io(std::io::Error),
    /// The bytes received are not an HTTP response.
    Malformed(String),
    /// The URL cannot be called (not `http://`, no host, a bad port).
    BadUrl(String),
    /// A complete HTTP response whose body is not the answer expected (not JSON, a field
    /// missing).
    BadAnswer(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "cannot connect ({e}); is the server running?"),
            HttpError::Timeout(t) => write!(f, "no complete answer within {:.1} s", t.as_secs_f64()),
            HttpError::Io(e) => write!(f, "connection failed: {e}"),
            HttpError::Malformed(m) => write!(f, "malformed HTTP response: {m}"),
            HttpError::BadUrl(m) | HttpError::BadAnswer(m) => f.write_str(m),
        }
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

/// POSTs `body` as JSON to `url` with extra `headers`; `connect_timeout` bounds the connection,
/// `timeout` the whole exchange after it.
pub fn post_json(
    url: &HttpUrl,
    headers: &[(&str, String)],
    body: &[u8],
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let mut stream = connect(url, connect_timeout)?;
    // (A limit too far away to be represented is no limit.)
    let deadline = Instant::now().checked_add(timeout);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nAccept: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        url.path,
        url.host,
        url.port,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.set_write_timeout(Some(timeout)).map_err(HttpError::Io)?;
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body))
        .map_err(|e| io_error(e, timeout))?;
    let raw = read_all(&mut stream, deadline, timeout)?;
    parse_response(&raw)
}

fn connect(url: &HttpUrl, timeout: Duration) -> Result<TcpStream, HttpError> {
    let addrs = url.socket_addrs().map_err(HttpError::Connect)?;
    let mut last = std::io::Error::new(ErrorKind::NotFound, "host name resolved to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(HttpError::Connect(last))
}

fn io_error(e: std::io::Error, timeout: Duration) -> HttpError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => HttpError::Timeout(timeout),
        _ => HttpError::Io(e),
    }
}

/// Reads until the server closes the connection (it was asked to) or the body is complete.
fn read_all(
    stream: &mut TcpStream,
    deadline: Option<Instant>,
    timeout: Duration,
) -> Result<Vec<u8>, HttpError> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(HttpError::Timeout(timeout));
        }
        stream.set_read_timeout(left).map_err(HttpError::Io)?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(k) => raw.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e, timeout)),
        }
        if raw.len() > MAX_BODY {
            return Err(HttpError::Malformed(format!("response larger than {MAX_BODY} bytes")));
        }
        if body_complete(&raw) {
            return Ok(raw);
        }
    }
}

/// True when `raw` holds the full response per its `Content-Length` or final chunk, or when
/// reading more cannot help (a size above [`MAX_BODY`], a malformed chunk): the parse then says
/// what is wrong. [`post_json`] asks this after every read.
pub fn body_complete(raw: &[u8]) -> bool {
    let Some((head, body)) = split_head(raw) else { return false };
    match framing(head) {
        Framing::Length(n) => n > MAX_BODY || body.len() >= n,
        Framing::Chunked => !matches!(dechunk(body), Err(Dechunk::Incomplete)),
        Framing::UntilClose => false,
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn split_head(raw: &[u8]) -> Option<(&str, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((std::str::from_utf8(&raw[..end]).ok()?, &raw[end + 4..]))
}

fn framing(head: &str) -> Framing {
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            return Framing::Chunked;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if let Ok(n) = value.parse() {
                return Framing::Length(n);
            }
        }
    }
    Framing::UntilClose
}

/// Why a chunked body does not decode.
#[derive(Debug, PartialEq, Eq)]
enum Dechunk {
    /// More bytes may complete it.
    Incomplete,
    /// It cannot be decoded, whatever follows.
    Bad(String),
}

/// Decodes a chunked body. Every chunk size is checked against [`MAX_BODY`] before any
/// arithmetic, so a size line such as `ffffffffffffffff` is an error, not an overflow.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, Dechunk> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or(Dechunk::Incomplete)?;
        let size_text = std::str::from_utf8(&body[..line_end])
            .map_err(|_| Dechunk::Bad("the chunk size line is not text".into()))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| Dechunk::Bad(format!("bad chunk size {size_text:?}")))?;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_BODY.saturating_sub(out.len()))
            .ok_or_else(|| Dechunk::Bad(format!("chunks of more than {MAX_BODY} bytes in all")))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        // Both at most MAX_BODY: no overflow.
        let Some((chunk, rest)) = body.split_at_checked(size) else { return Err(Dechunk::Incomplete) };
        match rest {
            [b'\r', b'\n', after @ ..] => body = after,
            [] | [b'\r'] => return Err(Dechunk::Incomplete),
            _ => return Err(Dechunk::Bad("a chunk is not followed by CRLF".into())),
        }
        out.extend_from_slice(chunk);
    }
}

/// Parses the bytes of a whole response (status line, headers, body framed by `Content-Length`,
/// chunks or the end of the stream), as [`post_json`] does with what it received.
///
/// # Errors
/// [`HttpError::Malformed`], saying what is wrong.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, HttpError> {
    if raw.is_empty() {
        return Err(HttpError::Malformed("the server closed the connection without answering".into()));
    }
    let (head, body) =
        split_head(raw).ok_or_else(|| HttpError::Malformed("no complete header section".into()))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/1.") => code,
        _ => return Err(HttpError::Malformed(format!("bad status line {status_line:?}"))),
    };
    let body = match framing(head) {
        Framing::Length(n) if n > MAX_BODY => {
            return Err(HttpError::Malformed(format!("the answer announces {n} bytes, over {MAX_BODY}")));
        }
        Framing::Length(n) if body.len() >= n => body[..n].to_vec(),
        Framing::Length(n) => {
            return Err(HttpError::Malformed(format!("body has {} of {n} bytes", body.len())));
        }
        Framing::Chunked => dechunk(body).map_err(|e| {
            HttpError::Malformed(match e {
                Dechunk::Incomplete => "the chunked body ends early".into(),
                Dechunk::Bad(why) => why,
            })
        })?,
        Framing::UntilClose => body.to_vec(),
    };
    Ok(HttpResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/v1/chat/completions").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/v1/chat/completions"));
        let u = HttpUrl::parse("http://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("localhost", 80, "/"));
        let u = HttpUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 9));
        assert!(HttpUrl::parse("https://api.example.com").unwrap_err().to_string().contains("proxy"));
        assert!(HttpUrl::parse("ftp://x").unwrap_err().to_string().contains("http://"));
        assert!(HttpUrl::parse("http://host:notaport/").unwrap_err().to_string().contains("port"));
        assert!(HttpUrl::parse("http:///v1").is_err());
    }

    #[test]
    fn responses_are_framed_by_length_chunks_or_close() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"hi".as_slice()));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_response(b"HTTP/1.0 503 Busy\r\n\r\nlater").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, b"later".as_slice()));
        assert!(body_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"));
        assert!(!body_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi"));
        assert!(!body_complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"));
    }

    #[test]
    fn broken_responses_are_errors() {
        assert!(matches!(parse_response(b""), Err(HttpError::Malformed(_))));
        assert!(matches!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(HttpError::Malformed(_))));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    /// D1 (docs/RELIABILITY.md): a chunk size of 2^64 - 1 must not make `size + 2` wrap and a
    /// slice panic.
    #[test]
    fn absurd_sizes_are_errors_not_panics() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for size in
            ["ffffffffffffffff", "fffffffffffffffe", "7fffffffffffffff", "1000001", "ffffffffffffffffff"]
        {
            let raw = [head.clone(), format!("{size}\r\nabc\r\n0\r\n\r\n").into_bytes()].concat();
            // Reading stops (more bytes cannot help) and the parse says why.
            assert!(body_complete(&raw), "{size}");
            let err = parse_response(&raw).unwrap_err().to_string();
            assert!(err.contains("chunk"), "{size}: {err}");
        }
        // Many chunks that together pass the cap.
        let mut raw = head.clone();
        for _ in 0..17 {
            raw.extend_from_slice(b"100000\r\n");
            raw.extend(std::iter::repeat_n(b'x', 1 << 20));
            raw.extend_from_slice(b"\r\n");
        }
        assert!(parse_response(&raw).unwrap_err().to_string().contains("chunks of more than"));
        // A chunk not followed by CRLF, and one cut short.
        let bad = [head.clone(), b"3\r\nabcXY0\r\n\r\n".to_vec()].concat();
        assert!(body_complete(&bad) && parse_response(&bad).is_err());
        let short = [head.clone(), b"3\r\nab".to_vec()].concat();
        assert!(!body_complete(&short));
        assert!(parse_response(&short).unwrap_err().to_string().contains("ends early"));
        // A Content-Length over the cap stops reading at once.
        let long = b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nhi";
        assert!(body_complete(long));
        assert!(parse_response(long).unwrap_err().to_string().contains("announces"));
    }
}
