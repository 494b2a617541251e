//! [`WatchSink`]: a minimal HTTP server recording the POSTs of `handler_type = "http"` watches.
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::lock;

/// One HTTP request received by a [`WatchSink`].
#[derive(Debug, Clone)]
pub struct Delivery {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received: Instant,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn consul_index(&self) -> Option<u64> {
        self.header("X-Consul-Index")?.parse().ok()
    }
}

struct SinkState {
    deliveries: Mutex<Vec<Delivery>>,
    arrived: Condvar,
    status: AtomicU16,
    stop: AtomicBool,
}

/// A minimal HTTP/1.1 server on 127.0.0.1:0 recording every request (method, path, headers,
/// body) and answering with an empty body and the configured status (200 by default). Point
/// `http_handler_config { path = sink.url_for("/x") }` of a watch at it.
pub struct WatchSink {
    addr: SocketAddr,
    state: Arc<SinkState>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl WatchSink {
    pub fn start() -> WatchSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind watch sink");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SinkState {
            deliveries: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            status: AtomicU16::new(200),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let acceptor = thread::Builder::new()
            .name(format!("watch-sink-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let st = st.clone();
                    let _ =
                        thread::Builder::new()
                            .name("watch-sink-conn".into())
                            .spawn(move || {
                                let _ = serve_connection(conn, &st);
                            });
                }
            })
            .expect("spawn watch sink");
        WatchSink {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// "http://127.0.0.1:P"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// "http://127.0.0.1:P<path>"
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    /// The status later requests are answered with (e.g. 500 to make deliveries fail).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state.deliveries).clone()
    }
    pub fn count(&self) -> usize {
        lock(&self.state.deliveries).len()
    }

    /// The first delivery (already received or arriving within `timeout`) matching `pred`.
    pub fn wait_for(
        &self,
        pred: impl Fn(&Delivery) -> bool,
        timeout: Duration,
    ) -> Option<Delivery> {
        self.wait_for_since(0, pred, timeout)
    }

    /// Like [`wait_for`](Self::wait_for) but only considers deliveries number `start` and later
    /// (take `start` from [`count`](Self::count) before causing the change).
    pub fn wait_for_since(
        &self,
        start: usize,
        pred: impl Fn(&Delivery) -> bool,
        timeout: Duration,
    ) -> Option<Delivery> {
        let deadline = Instant::now() + timeout;
        let mut got = lock(&self.state.deliveries);
        let mut checked = start;
        loop {
            if let Some(d) = got.iter().skip(checked).find(|d| pred(d)) {
                return Some(d.clone());
            }
            checked = checked.max(got.len());
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            got = self
                .state
                .arrived
                .wait_timeout(got, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for WatchSink {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the acceptor
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(conn: TcpStream, st: &SinkState) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || st.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk)?;
                if size == 0 {
                    break; // (trailers are not supported)
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            r.read_exact(&mut body)?;
        }
        let close = header("connection").is_some_and(|v| v.contains("close"));
        let status = st.status.load(Ordering::SeqCst);
        {
            let mut got = lock(&st.deliveries);
            got.push(Delivery {
                method,
                path,
                headers,
                body,
                received: Instant::now(),
            });
            st.arrived.notify_all();
        }
        write!(out, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n")?;
        out.flush()?;
        if close {
            let _ = out.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}
