//! A minimal blocking HTTP/1.1 client for 127.0.0.1 (the bench's view of Consul and hax):
//! one kept-alive connection, `Content-Length` and chunked bodies. hax's own Consul client is
//! async (awc); the bench stays on std threads so that its timings are plain `Instant`s.
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An answer: status, headers (names lower-cased) and body; the test kit's response type.
pub use hax_testkit::HttpResponse as Response;

/// One kept-alive connection to `addr`, reopened when the server closed it.
pub struct Http {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    /// Requests sent (including retries), for subtracting the bench's own load from Consul's
    /// counters.
    pub sent: u64,
}

impl Http {
    /// `base` is `http://127.0.0.1:PORT` or `127.0.0.1:PORT`; only loopback addresses.
    pub fn new(base: &str, timeout: Duration) -> Result<Http, String> {
        let hostport = base.trim_start_matches("http://").trim_end_matches('/');
        let addr: SocketAddr = hostport
            .parse()
            .map_err(|_| format!("{base:?}: expected http://127.0.0.1:PORT"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{base}: the bench only talks to loopback addresses"
            ));
        }
        Ok(Http {
            addr,
            timeout,
            conn: None,
            sent: 0,
        })
    }

    pub fn get(&mut self, path: &str) -> Result<Response, String> {
        self.request("GET", path, &[])
    }
    pub fn put(&mut self, path: &str, body: &[u8]) -> Result<Response, String> {
        self.request("PUT", path, body)
    }
    pub fn post(&mut self, path: &str, body: &[u8]) -> Result<Response, String> {
        self.request("POST", path, body)
    }
    /// A POST as a Consul watch makes it: with the `X-Consul-Index` of the snapshot.
    pub fn post_indexed(
        &mut self,
        path: &str,
        body: &[u8],
        index: u64,
    ) -> Result<Response, String> {
        self.request_with("POST", path, body, &format!("X-Consul-Index: {index}\r\n"))
    }

    /// Sends one request; a kept-alive connection the server closed meanwhile is reopened
    /// and the request sent once more.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response, String> {
        self.request_with(method, path, body, "")
    }

    /// [`Http::request`] with extra header lines (each ending in CRLF).
    fn request_with(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &str,
    ) -> Result<Response, String> {
        let reused = self.conn.is_some();
        match self.try_request(method, path, body, headers) {
            Ok(r) => Ok(r),
            Err(e) if reused => {
                self.conn = None;
                self.try_request(method, path, body, headers)
                    .map_err(|e2| format!("{e}; then {e2}"))
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &str,
    ) -> Result<Response, String> {
        let what = format!("{method} http://{}{path}", self.addr);
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| format!("{what}: cannot connect: {e}"))?;
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(self.timeout)).ok();
            s.set_write_timeout(Some(self.timeout)).ok();
            self.conn = Some(BufReader::with_capacity(64 * 1024, s));
        }
        self.sent += 1;
        let conn = self.conn.as_mut().expect("connected");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n{headers}\r\n",
            self.addr,
            body.len()
        );
        let s = conn.get_mut();
        s.write_all(head.as_bytes())
            .and_then(|_| s.write_all(body))
            .map_err(|e| format!("{what}: write: {e}"))?;
        let resp = read_response(conn).map_err(|e| format!("{what}: {e}"))?;
        if resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            self.conn = None;
        }
        Ok(resp)
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed before the answer".into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one HTTP/1.1 response (status line, headers, body by length or chunks).
pub fn read_response(r: &mut impl BufRead) -> Result<Response, String> {
    let status_line = read_line(r)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let l = read_line(r)?;
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers until an empty line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])
                .map_err(|e| format!("read chunk: {e}"))?;
            read_line(r)?;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_sized_bodies_parse() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Consul-Index: 7\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = read_response(&mut &raw[..]).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("X-Consul-Index")),
            (200, &b"abcde"[..], Some("7"))
        );
        let raw = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\n\r\n{}";
        let r = read_response(&mut &raw[..]).unwrap();
        assert_eq!((r.status, r.text().as_str()), (413, "{}"));
    }

    #[test]
    fn only_loopback_is_accepted() {
        assert!(Http::new("http://127.0.0.1:8500", Duration::from_secs(1)).is_ok());
        assert!(Http::new("http://10.0.0.1:8500", Duration::from_secs(1)).is_err());
        assert!(Http::new("consul:8500", Duration::from_secs(1)).is_err());
    }
}
