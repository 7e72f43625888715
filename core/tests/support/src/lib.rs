//! What promduck's Rust tests share: a small fake HTTP server standing in for
//! Prometheus where a real one cannot show the fault under test (an endless body, a
//! 429 with `Retry-After`, a redirect, a server that never answers), and the form
//! decoding the tests read requests with.
//!
//! One server, two faces: [`serve_raw`] hands each request and its connection to
//! the test, which writes whatever bytes it wants; [`Stub`] answers each request
//! with a [`Reply`] and keeps a log of what it received. Both serve every
//! connection on its own thread, keep-alive included, on 127.0.0.1 only.
//!
//! A crate of its own (not a module of each test file) so that every test binary
//! takes only the parts it uses, and the unit tests inside `promduck-core` use the
//! very same server as the integration tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The request line and headers, as sent.
    pub head: String,
    /// The body, as sent.
    pub body: String,
    /// The form fields (POST body, or the query string of a GET), in order.
    pub form: Vec<(String, String)>,
    /// When the request was read whole.
    pub at: Instant,
}

impl Request {
    /// The one value of form field `name` (a panic if it is missing or repeated).
    pub fn field(&self, name: &str) -> &str {
        let mut values = self.form.iter().filter(|(k, _)| k == name);
        let v = values
            .next()
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.form));
        assert!(values.next().is_none(), "{name} twice in {:?}", self.form);
        &v.1
    }

    /// The form's field names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.form.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Reads one request (head, then `Content-Length` bytes of body); `None` once the
/// client has closed the connection.
fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let mut line = head.split_whitespace();
    let method = line.next().unwrap_or_default().to_string();
    let target = line.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let form = decode_form(if method == "GET" { query } else { &body });
    Some(Request {
        method,
        path: path.to_string(),
        head,
        body,
        form,
        at: Instant::now(),
    })
}

/// Serves every connection with `handler` on its own thread, which writes the
/// answer itself; returns the server's URL and a count of the requests read.
pub fn serve_raw(
    handler: impl Fn(&mut TcpStream, Request) + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let h = handler.clone();
            let c = c.clone();
            std::thread::spawn(move || {
                while let Some(req) = read_request(&mut s) {
                    c.fetch_add(1, Ordering::SeqCst);
                    h(&mut s, req);
                }
            });
        }
    });
    (url, count)
}

/// Writes a complete JSON answer with `status` (`"200 OK"`).
pub fn respond(s: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// What a [`Stub`] answers.
pub enum Reply {
    /// A complete answer with `Content-Length`.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// `Transfer-Encoding: chunked`, the body in these pieces (no `Content-Length`).
    Chunked { status: u16, pieces: Vec<Vec<u8>> },
}

impl Reply {
    fn bytes(self) -> Vec<u8> {
        match self {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let mut out = head.into_bytes();
                out.extend_from_slice(&body);
                out
            }
            Reply::Chunked { status, pieces } => {
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .into_bytes();
                for p in pieces {
                    out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                    out.extend_from_slice(&p);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            }
        }
    }
}

/// A JSON answer.
pub fn json(status: u16, body: impl Into<String>) -> Reply {
    Reply::Full {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        body: body.into().into_bytes(),
    }
}

/// A plain-text answer.
pub fn text(status: u16, body: &str) -> Reply {
    Reply::Full {
        status,
        headers: vec![("Content-Type", "text/plain".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// `reply` with one more header (a chunked reply is left as it is).
pub fn with_header(reply: Reply, name: &'static str, value: &str) -> Reply {
    match reply {
        Reply::Full {
            status,
            mut headers,
            body,
        } => {
            headers.push((name, value.to_string()));
            Reply::Full {
                status,
                headers,
                body,
            }
        }
        chunked => chunked,
    }
}

/// Prometheus's JSON error body.
pub fn api_error(error_type: &str, message: &str) -> String {
    format!(r#"{{"status":"error","errorType":"{error_type}","error":"{message}"}}"#)
}

type Handler = dyn Fn(usize, &Request) -> Reply + Send + Sync;

/// A server answering each request with a [`Reply`], logging what it received.
pub struct Stub {
    pub url: String,
    log: Arc<Mutex<Vec<Request>>>,
}

impl Stub {
    /// Serves every request with `handler(index, request)`, `index` counting from 0
    /// over all connections. (`async` so that tests start it where they await.)
    pub async fn start(handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Stub {
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let l = log.clone();
        let (url, _) = serve_raw(move |s, req| {
            let index = {
                let mut log = l.lock().unwrap();
                log.push(req.clone());
                log.len() - 1
            };
            let _ = s.write_all(&handler(index, &req).bytes());
        });
        Stub { url, log }
    }

    /// Answers the `replies` in order, then 500s.
    pub async fn script(replies: Vec<Reply>) -> Stub {
        let replies = Mutex::new(replies.into_iter().map(Some).collect::<Vec<_>>());
        Stub::start(move |i, _| {
            replies
                .lock()
                .unwrap()
                .get_mut(i)
                .and_then(Option::take)
                .unwrap_or_else(|| text(500, "the script has no more replies"))
        })
        .await
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The gaps between consecutive request arrivals.
    pub fn gaps(&self) -> Vec<Duration> {
        self.requests()
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .collect()
    }
}

/// `application/x-www-form-urlencoded` to pairs.
pub fn decode_form(s: &str) -> Vec<(String, String)> {
    let decode = |t: &str| {
        let spaced = t.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .unwrap_or_else(|e| panic!("{t:?} is not UTF-8 once decoded: {e}"))
            .into_owned()
    };
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_as_a_browser_encodes_them() {
        assert_eq!(
            decode_form("query=sum%28rate%28x%5B5m%5D%29%29+by+%28a%29&time=1.5&&e=%C3%A9"),
            [
                ("query".to_string(), "sum(rate(x[5m])) by (a)".to_string()),
                ("time".to_string(), "1.5".to_string()),
                ("e".to_string(), "é".to_string()),
            ]
        );
    }

    #[test]
    fn a_stub_logs_and_answers_each_request() {
        let stub = block_on(Stub::script(vec![json(200, "{}")]));
        let mut s = TcpStream::connect(stub.url.trim_start_matches("http://")).unwrap();
        write!(
            s,
            "POST /api/v1/query HTTP/1.1\r\nContent-Length: 5\r\n\r\nq=a+b"
        )
        .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = s.read(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200 X\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n{}"), "{answer}");
        let r = stub.requests();
        assert_eq!(
            (r[0].method.as_str(), r[0].path.as_str()),
            ("POST", "/api/v1/query")
        );
        assert_eq!(r[0].field("q"), "a b");
    }

    /// Polls a future that never waits (the stub's constructors) to its end.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the stub's constructors never wait"),
        }
    }
}
