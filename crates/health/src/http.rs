//! A minimal HTTP/1.1 client for probes: one GET with `Connection: close`,
//! then the status line, the headers and at most [`BODY_CAP`] bytes of body,
//! framed by Content-Length, chunked transfer coding or the end of the stream.
//!
//! Hand-written rather than hyper: a probe needs one request shape and a
//! bounded read, and this keeps the probe's cost and failure reasons plain.

use std::fmt;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How much of a body is read; `expect_body` is looked for in this much.
pub(crate) const BODY_CAP: usize = 64 * 1024;
/// How large the status line and headers may be together.
const HEAD_CAP: usize = 16 * 1024;
const READ_CHUNK: usize = 4096;

/// The part of a response a probe looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// At most [`BODY_CAP`] bytes.
    pub(crate) body: Vec<u8>,
}

#[derive(Debug)]
pub(crate) enum HttpError {
    /// Reading or writing failed (for TLS streams this carries the rustls error).
    Io(io::Error),
    /// The peer answered something that is not an HTTP/1.x response.
    Malformed(String),
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Io(e) => e.fmt(f),
            HttpError::Malformed(m) => f.write_str(m),
        }
    }
}

fn malformed(m: impl Into<String>) -> HttpError {
    HttpError::Malformed(m.into())
}

/// The request bytes of one probe (a hundred-odd bytes, built for each probe:
/// cheaper than keeping one per backend in step with reloads). `path` and `host` are checked
/// by the caller for spaces and control characters.
pub(crate) fn request(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tandem-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `request` and reads the response.
pub(crate) async fn exchange<S>(stream: &mut S, request: &[u8]) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut reader = Reader {
        stream,
        buf: Vec::with_capacity(READ_CHUNK),
        pos: 0,
    };
    loop {
        let head = reader.head().await?;
        // 1xx are interim (100 Continue, 103 Early Hints): the final response follows.
        if (100..200).contains(&head.status) && head.status != 101 {
            continue;
        }
        let body = match head.framing {
            _ if head.status == 204 || head.status == 304 || head.status == 101 => Vec::new(),
            Framing::Chunked => reader.chunked().await?,
            Framing::Length(n) => reader.exact(n).await?,
            Framing::UntilEof => reader.until_eof().await?,
        };
        return Ok(Response {
            status: head.status,
            body,
        });
    }
}

enum Framing {
    Chunked,
    Length(u64),
    UntilEof,
}

struct Head {
    status: u16,
    framing: Framing,
}

struct Reader<'a, S> {
    stream: &'a mut S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    /// Reads more into the buffer; returns how many bytes came (0 at EOF).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let n = match self.stream.read(&mut self.buf[old..]).await {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(e);
            }
        };
        self.buf.truncate(old + n);
        Ok(n)
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// One line without its line ending; `cap` bounds its length.
    async fn line(&mut self, cap: usize, what: &str) -> Result<String, HttpError> {
        loop {
            let lf = self.available().iter().position(|&b| b == b'\n');
            // Longer than `cap` whether or not its end has arrived yet: the
            // verdict must not depend on how the bytes were split.
            if lf.unwrap_or(self.available().len()) > cap {
                return Err(malformed(format!("{what} longer than {cap} bytes")));
            }
            if let Some(i) = lf {
                let raw = &self.available()[..i];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.pos += i + 1;
                return Ok(line);
            }
            if self.fill().await? == 0 {
                return Err(malformed(format!(
                    "connection closed before the end of the {what}"
                )));
            }
        }
    }

    async fn head(&mut self) -> Result<Head, HttpError> {
        let status_line = self.line(HEAD_CAP, "response headers").await?;
        let status = parse_status_line(&status_line)?;
        let mut framing = Framing::UntilEof;
        let mut head_len = status_line.len();
        loop {
            let line = self.line(HEAD_CAP, "response headers").await?;
            if line.is_empty() {
                break;
            }
            head_len += line.len();
            if head_len > HEAD_CAP {
                return Err(malformed(format!(
                    "response headers longer than {HEAD_CAP} bytes"
                )));
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(malformed(format!("bad header line `{}`", shorten(&line))));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                let last = value.rsplit(',').next().unwrap_or("").trim();
                if last.eq_ignore_ascii_case("chunked") {
                    framing = Framing::Chunked;
                }
            } else if name.eq_ignore_ascii_case("content-length")
                && !matches!(framing, Framing::Chunked)
            {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| malformed(format!("bad content-length `{}`", shorten(value))))?;
                framing = Framing::Length(n);
            }
        }
        Ok(Head { status, framing })
    }

    /// Takes up to `n` buffered bytes into `body`, respecting the cap.
    fn take(&mut self, n: usize, body: &mut Vec<u8>) -> usize {
        let n = n.min(self.available().len());
        let room = BODY_CAP - body.len();
        body.extend_from_slice(&self.available()[..n.min(room)]);
        self.pos += n;
        n
    }

    async fn exact(&mut self, len: u64) -> Result<Vec<u8>, HttpError> {
        let want = usize::try_from(len).unwrap_or(usize::MAX).min(BODY_CAP);
        let mut body = Vec::with_capacity(want);
        while body.len() < want {
            if self.available().is_empty() && self.fill().await? == 0 {
                return Err(malformed(format!(
                    "connection closed after {} of {len} body bytes",
                    body.len()
                )));
            }
            self.take(want - body.len(), &mut body);
        }
        Ok(body)
    }

    async fn until_eof(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            self.take(usize::MAX, &mut body);
            if body.len() >= BODY_CAP {
                return Ok(body);
            }
            match self.fill().await {
                Ok(0) => return Ok(body),
                Ok(_) => {}
                // A TLS peer that closes without close_notify: for a body
                // framed by the end of the stream this is still its end.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(body),
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn chunked(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.line(1024, "chunk size line").await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| malformed(format!("bad chunk size `{}`", shorten(&line))))?;
            if size == 0 {
                // Trailers, up to the empty line; not needed, but read so the
                // stream ends cleanly.
                while !self.line(HEAD_CAP, "trailers").await?.is_empty() {}
                return Ok(body);
            }
            let mut left = size;
            while left > 0 {
                if self.available().is_empty() && self.fill().await? == 0 {
                    return Err(malformed("connection closed inside a chunk"));
                }
                let n = self.take(usize::try_from(left).unwrap_or(usize::MAX), &mut body);
                left -= n as u64;
            }
            if body.len() >= BODY_CAP {
                return Ok(body);
            }
            self.chunk_end().await?;
        }
    }
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    /// The line ending after a chunk's data. Decided on the first byte (and
    /// the second after a CR), so the verdict does not depend on how much of
    /// what follows has arrived.
    async fn chunk_end(&mut self) -> Result<(), HttpError> {
        let too_long = || malformed("chunk data longer than its size");
        loop {
            match self.available() {
                [b'\n', ..] => {
                    self.pos += 1;
                    return Ok(());
                }
                [b'\r', b'\n', ..] => {
                    self.pos += 2;
                    return Ok(());
                }
                [b'\r'] | [] => {}
                _ => return Err(too_long()),
            }
            if self.fill().await? == 0 {
                return Err(malformed("connection closed before the end of the chunk"));
            }
        }
    }
}

fn parse_status_line(line: &str) -> Result<u16, HttpError> {
    let bad = || malformed(format!("not an HTTP response: `{}`", shorten(line)));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let code = parts.next().unwrap_or("");
    if code.len() != 3 {
        return Err(bad());
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..=999).contains(c))
        .ok_or_else(bad)
}

/// At most 60 characters of what a peer sent, for a log line.
fn shorten(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(60)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// Serves `response` to one exchange and returns what the client got
    /// plus the request it sent.
    async fn run(response: &[u8]) -> (Result<Response, HttpError>, String) {
        let (mut client, mut server) = duplex(256 * 1024);
        let response = response.to_vec();
        let server = tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            // Dribble the response in small pieces to exercise buffering.
            for piece in response.chunks(7) {
                server.write_all(piece).await.unwrap();
            }
            drop(server);
            String::from_utf8(req).unwrap()
        });
        let got = exchange(&mut client, &request("/readyz", "example:6443")).await;
        (got, server.await.unwrap())
    }

    #[tokio::test]
    async fn request_is_a_get_with_host_and_connection_close() {
        let (got, req) = run(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        assert_eq!(got.unwrap().status, 200);
        assert!(req.starts_with("GET /readyz HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nHost: example:6443\r\n"), "{req}");
        assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
    }

    #[tokio::test]
    async fn bodies_by_each_framing() {
        let cases: &[(&[u8], u16, &[u8])] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 200, b"ok"),
            (b"HTTP/1.0 500 Oops\r\n\r\nuntil the end", 500, b"until the end"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
                200,
                b"abcde",
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Unavailable\r\ncontent-length: 4\r\n\r\nnope",
                503,
                b"nope",
            ),
            (b"HTTP/1.1 200\nContent-Length: 1\n\nx", 200, b"x"),
        ];
        for (response, status, body) in cases {
            let (got, _) = run(response).await;
            let got = got.unwrap();
            assert_eq!(got.status, *status);
            assert_eq!(got.body, *body, "{}", String::from_utf8_lossy(response));
        }
    }

    #[tokio::test]
    async fn body_is_capped() {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            BODY_CAP * 2
        )
        .into_bytes();
        response.extend(vec![b'a'; BODY_CAP * 2]);
        let (got, _) = run(&response).await;
        assert_eq!(got.unwrap().body.len(), BODY_CAP);

        let mut response = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        response.extend(vec![b'a'; BODY_CAP + 10]);
        let (got, _) = run(&response).await;
        assert_eq!(got.unwrap().body.len(), BODY_CAP);
    }

    #[tokio::test]
    async fn malformed_responses_are_errors() {
        let mut long_chunk_size_line =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        long_chunk_size_line.extend([b'x'; 1100]);
        long_chunk_size_line.extend(b"\r\nz\r\n0\r\n\r\n");
        let cases: &[(&[u8], &str)] = &[
            (b"SSH-2.0-OpenSSH\r\n", "not an HTTP response"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "after 5 of 10",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-",
                "before the end of the response headers",
            ),
            (b"", "before the end of the response headers"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP response"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header line"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "bad chunk size",
            ),
            // Found by the fuzz harness: this said "chunk longer than 2 bytes" or
            // "chunk data longer than its size" depending on how the bytes arrived.
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdefgh\r\n0\r\n\r\n",
                "chunk data longer than its size",
            ),
            (
                &long_chunk_size_line,
                "chunk size line longer than 1024 bytes",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r",
                "connection closed before the end of the chunk",
            ),
        ];
        for (response, want) in cases {
            let (got, _) = run(response).await;
            let e = got.unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }
}
