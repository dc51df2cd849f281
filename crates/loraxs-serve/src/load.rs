//! A small HTTP/1.1 client and a bounded load generator, for tests,
//! benchmarks and `loraxs-serve load`: loopback addresses only.
//!
//! Written here rather than taken from `reqwest`/`oha`: it needs a keep-alive
//! connection per simulated client, JSON bodies and the response status,
//! nothing else (~150 lines), and its refusal of anything but loopback is
//! the point of it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An HTTP response: status and body (a chunked body, such as a stream of
/// server-sent events, read to its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `data:` fields of a body of server-sent events, in order.
    pub fn events(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d).to_string())
            .collect()
    }
}

/// One keep-alive connection to a loopback server.
pub struct Client {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

fn loopback(addr: SocketAddr) -> std::io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr}: load and test traffic goes to loopback addresses only (127.0.0.1, ::1)"),
        ))
    }
}

impl Client {
    /// A client of the server at `addr` (loopback only); connects lazily.
    pub fn new(addr: SocketAddr) -> std::io::Result<Self> {
        loopback(addr)?;
        Ok(Self { addr, stream: None })
    }

    /// Sends one request (`body` as JSON when given) and reads the answer;
    /// reconnects once if the kept-alive connection was closed.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<HttpResponse> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, body).await {
            // The kept-alive connection was closed by the server: one fresh try.
            Err(_) if reused => self.try_request(method, path, body).await,
            result => result,
        }
    }

    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<HttpResponse> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.addr)))?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        let result = self.exchange(method, path, body).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<HttpResponse> {
        let stream = self.stream.as_mut().expect("connected");
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.get_mut().write_all(head.as_bytes()).await?;
        stream.get_mut().write_all(body.as_bytes()).await?;
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
        let mut length = 0usize;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let bytes = if chunked {
            // A streamed body (server-sent events): chunks until the empty one.
            let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
            let mut bytes = Vec::new();
            loop {
                line.clear();
                stream.read_line(&mut line).await?;
                let size = line.trim_end().split(';').next().unwrap_or("");
                let size =
                    usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break bytes;
                }
                let start = bytes.len();
                bytes.resize(start + size, 0);
                stream.read_exact(&mut bytes[start..]).await?;
                line.clear();
                stream.read_line(&mut line).await?;
            }
        } else {
            let mut bytes = vec![0; length];
            stream.read_exact(&mut bytes).await?;
            bytes
        };
        if close {
            self.stream = None;
        }
        Ok(HttpResponse {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// A load run: `clients` connections each sending requests back to back
/// until `requests` have been sent in all or `duration` has passed.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server (loopback only).
    pub addr: SocketAddr,
    /// Concurrent connections.
    pub clients: usize,
    /// Most requests in all.
    pub requests: usize,
    /// Longest the run may take.
    pub duration: Duration,
    /// The route, e.g. `/v1/classify`.
    pub path: String,
}

/// What a load run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Requests answered.
    pub requests: usize,
    /// Answers with a status other than 2xx, and transport errors.
    pub errors: usize,
    /// Wall time of the run.
    pub seconds: f64,
    /// Requests per second.
    pub rate: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency, milliseconds.
    pub p99_ms: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// Runs `spec`, each request's body made by `body(i)` for request `i`.
pub async fn run(
    spec: &LoadSpec,
    body: impl Fn(usize) -> String + Send + Sync + 'static,
) -> std::io::Result<LoadReport> {
    loopback(spec.addr)?;
    let body = std::sync::Arc::new(body);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut tasks = Vec::new();
    for _ in 0..spec.clients.max(1) {
        let (body, next, path, addr, total) = (
            body.clone(),
            next.clone(),
            spec.path.clone(),
            spec.addr,
            spec.requests,
        );
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(addr)?;
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                match client.request("POST", &path, Some(&body(i))).await {
                    Ok(r) if (200..300).contains(&r.status) => {}
                    Ok(r) => {
                        errors += 1;
                        first_error.get_or_insert(format!("{} {}", r.status, r.body));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, std::io::Error>((latencies, errors, first_error))
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (l, e, f) = task.await.map_err(std::io::Error::other)??;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    Ok(LoadReport {
        requests: latencies.len(),
        errors,
        seconds,
        rate: latencies.len() as f64 / seconds,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_addresses_other_than_loopback() {
        let err = Client::new("192.0.2.1:80".parse().unwrap()).err().unwrap();
        assert!(err.to_string().contains("loopback addresses only"), "{err}");
        assert!(Client::new("127.0.0.1:80".parse().unwrap()).is_ok());
        assert!(Client::new("[::1]:80".parse().unwrap()).is_ok());
    }
}
