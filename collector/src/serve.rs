//! `--serve ADDR`: the archive over Prometheus's remote-read protocol.
//!
//! `POST /api/v1/read` takes a snappy-compressed protobuf `ReadRequest` and answers
//! in the first response type the client accepts (none listed: `SAMPLES`): a
//! snappy-compressed `ReadResponse` of `SAMPLES`, or `STREAMED_XOR_CHUNKS`, frames of
//! `ChunkedReadResponse` each preceded by its size (uvarint) and CRC-32C (big endian),
//! holding XOR chunks of at most 120 samples ([`crate::chunkenc`]). The frames are
//! built from the whole answer, bounded like a `SAMPLES` one, then sent. The query
//! itself (matchers, pruning, exact samples) is `promduck_core::remote_read`; this
//! is the HTTP shell: authentication (`serve` in the config), bounded request size
//! and concurrency, errors as plain-text statuses (never a panic reaching a
//! client), and the server's own counters on `GET /metrics`.

use crate::prompb;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use promduck_core::cancel::Cancel;
use promduck_core::config::{Config, ServeConfig};
use promduck_core::remote_read::{
    Archive, Limits, MatchOp, Matcher, Query, QueryError, ReadStats, Series,
};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The largest compressed request body read (Prometheus's requests are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;
/// How long a connection may take to send a request head.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The largest request once decompressed.
const MAX_DECODED: usize = 8 << 20;

/// Serves `config`'s archive on `addr` until `cancel` (a signal), then returns 0.
pub async fn run(config: &Config, addr: SocketAddr, cancel: Cancel) -> anyhow::Result<ExitCode> {
    Ok(bind(config, addr).await?.serve(cancel).await)
}

/// A bound server, not answering yet: binding first lets `--serve --daemon` fail at
/// start (an address in use) rather than after a collection.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<State>,
}

/// Opens `config`'s archive and binds `addr`.
pub async fn bind(config: &Config, addr: SocketAddr) -> anyhow::Result<Server> {
    let storage = promduck_core::storage::for_config(&config.storage)
        .with_context(|| format!("storage.outputDir {}", config.storage.output_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--serve {addr}"))?;
    let state = Arc::new(State {
        archive: Archive::new(storage, config),
        auth: Auth::new(&config.serve),
        limits: Limits {
            max_samples: config.serve.max_samples,
            max_bytes: config.serve.max_response_bytes,
        },
        slots: Semaphore::new(config.serve.max_concurrent_requests.max(1)),
        slot_count: config.serve.max_concurrent_requests.max(1) as u32,
        counters: Counters::default(),
    });
    Ok(Server { listener, state })
}

impl Server {
    /// Answers until `cancel`, then lets reads in progress finish; returns 0.
    pub async fn serve(self, cancel: Cancel) -> ExitCode {
        let Server { listener, state } = self;
        let bound = listener.local_addr().ok();
        tracing::info!(
            addr = %bound.map_or_else(|| "?".to_string(), |a| a.to_string()),
            archive = %state.archive.storage.url(),
            auth = state.auth.kind(),
            "serving the archive over Prometheus remote read on POST /api/v1/read"
        );
        if let Some(bound) = bound.filter(|b| !b.ip().is_loopback()) {
            if state.auth.kind() == "none" {
                tracing::warn!(
                    addr = %bound,
                    "serving beyond loopback without authentication: set serve.username/password or serve.bearerToken"
                );
            }
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => {
                    let Ok((sock, _)) = accepted else { continue };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, std::convert::Infallible>(state.handle(req).await) }
                        });
                        let io = hyper_util::rt::TokioIo::new(sock);
                        // A client that never finishes its request head does not hold a
                        // connection for ever.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(io, svc)
                            .await;
                    });
                }
            }
        }
        // No new connection is accepted; reads in progress finish (their answers may
        // still be sent) before the process exits.
        drop(listener);
        let _ = state.slots.acquire_many(state.slot_count).await;
        tracing::info!("remote-read server stopped");
        ExitCode::SUCCESS
    }
}

struct State {
    archive: Archive,
    auth: Auth,
    limits: Limits,
    slots: Semaphore,
    slot_count: u32,
    counters: Counters,
}

/// The server's own metrics (`GET /metrics`).
#[derive(Default)]
struct Counters {
    read_ok: AtomicU64,
    read_client_error: AtomicU64,
    read_unauthorized: AtomicU64,
    read_server_error: AtomicU64,
    queries: AtomicU64,
    files: AtomicU64,
    samples: AtomicU64,
    series: AtomicU64,
    bytes_sent: AtomicU64,
}

impl Counters {
    fn text(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP promduck_serve_read_requests_total Remote-read requests answered, by outcome.\n\
             # TYPE promduck_serve_read_requests_total counter\n\
             promduck_serve_read_requests_total{{outcome=\"ok\"}} {}\n\
             promduck_serve_read_requests_total{{outcome=\"client_error\"}} {}\n\
             promduck_serve_read_requests_total{{outcome=\"unauthorized\"}} {}\n\
             promduck_serve_read_requests_total{{outcome=\"server_error\"}} {}\n\
             # HELP promduck_serve_queries_total Queries in answered remote-read requests.\n\
             # TYPE promduck_serve_queries_total counter\n\
             promduck_serve_queries_total {}\n\
             # HELP promduck_serve_files_read_total Partition files opened to answer queries.\n\
             # TYPE promduck_serve_files_read_total counter\n\
             promduck_serve_files_read_total {}\n\
             # HELP promduck_serve_samples_total Samples returned.\n\
             # TYPE promduck_serve_samples_total counter\n\
             promduck_serve_samples_total {}\n\
             # HELP promduck_serve_series_total Series returned.\n\
             # TYPE promduck_serve_series_total counter\n\
             promduck_serve_series_total {}\n\
             # HELP promduck_serve_response_bytes_total Compressed response bytes sent.\n\
             # TYPE promduck_serve_response_bytes_total counter\n\
             promduck_serve_response_bytes_total {}\n",
            g(&self.read_ok),
            g(&self.read_client_error),
            g(&self.read_unauthorized),
            g(&self.read_server_error),
            g(&self.queries),
            g(&self.files),
            g(&self.samples),
            g(&self.series),
            g(&self.bytes_sent),
        )
    }
}

/// The `Authorization` header a request must carry, if the config asks for one.
struct Auth(Option<String>);

impl Auth {
    fn new(cfg: &ServeConfig) -> Auth {
        use base64::Engine;
        if let Some(t) = &cfg.bearer_token {
            return Auth(Some(format!("Bearer {}", t.expose())));
        }
        match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => Auth(Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()))
            ))),
            _ => Auth(None),
        }
    }

    fn kind(&self) -> &'static str {
        match &self.0 {
            None => "none",
            Some(h) if h.starts_with("Bearer") => "bearer",
            Some(_) => "basic",
        }
    }

    /// Whether `header` is the expected one, compared in time independent of where
    /// they differ.
    fn allows(&self, header: Option<&[u8]>) -> bool {
        let Some(want) = &self.0 else { return true };
        let Some(got) = header else { return false };
        let want = want.as_bytes();
        got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// A failed request: its status and a message for the client.
struct Failure(StatusCode, String);

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl State {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut r = text(StatusCode::OK, self.counters.text());
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                );
                r
            }
            (&Method::POST, "/api/v1/read") => {
                let c = &self.counters;
                let authorization = req
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                if !self.auth.allows(authorization) {
                    c.read_unauthorized.fetch_add(1, Ordering::Relaxed);
                    let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n".into());
                    r.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        hyper::header::HeaderValue::from_static("Basic realm=\"promduck\""),
                    );
                    return r;
                }
                match self.clone().read(req).await {
                    Ok((body, kind)) => {
                        c.read_ok.fetch_add(1, Ordering::Relaxed);
                        c.bytes_sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                        let mut r = Response::new(Full::new(body));
                        let h = r.headers_mut();
                        let content_type = match kind {
                            prompb::ResponseType::Samples => {
                                h.insert(
                                    hyper::header::CONTENT_ENCODING,
                                    hyper::header::HeaderValue::from_static("snappy"),
                                );
                                "application/x-protobuf"
                            }
                            prompb::ResponseType::StreamedXorChunks => STREAMED_CONTENT_TYPE,
                        };
                        h.insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(content_type),
                        );
                        r
                    }
                    Err(Failure(status, message)) => {
                        if status.is_server_error() {
                            c.read_server_error.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(%status, "remote read failed: {message}");
                        } else {
                            c.read_client_error.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%status, "remote read refused: {message}");
                        }
                        text(status, format!("{message}\n"))
                    }
                }
            }
            (_, "/api/v1/read" | "/metrics") => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    /// One remote-read request, from its body to the answer and its response type.
    async fn read(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<(Bytes, prompb::ResponseType), Failure> {
        let bad = |m: String| Failure(StatusCode::BAD_REQUEST, m);
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                Failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
                )
            })?
            .to_bytes();
        let len = snap::raw::decompress_len(&body)
            .map_err(|e| bad(format!("the body is not snappy-compressed: {e}")))?;
        if len > MAX_DECODED {
            return Err(bad(format!(
                "the request is {len} bytes once decompressed (at most {MAX_DECODED})"
            )));
        }
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .map_err(|e| bad(format!("the body is not snappy-compressed: {e}")))?;
        let request = <prompb::ReadRequest as prost::Message>::decode(raw.as_slice())
            .map_err(|e| bad(format!("not a protobuf ReadRequest: {e}")))?;
        // The first type the client accepts that this server answers, as Prometheus's
        // own server negotiates.
        let kind = match request.accepted_response_types.as_slice() {
            [] => Some(prompb::ResponseType::Samples),
            accepted => accepted
                .iter()
                .find_map(|t| prompb::ResponseType::try_from(*t).ok()),
        }
        .ok_or_else(|| {
            bad(format!(
                "none of the accepted response types {:?} is answered here \
                 (SAMPLES = 0, STREAMED_XOR_CHUNKS = 1)",
                request.accepted_response_types
            ))
        })?;
        let queries = request
            .queries
            .iter()
            .map(query_of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let _slot = self.slots.acquire().await.map_err(|_| {
            Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is stopping".into(),
            )
        })?;
        let state = self.clone();
        let answered = tokio::task::spawn_blocking(move || {
            let mut stats = ReadStats::default();
            let r = state.archive.read(&queries, &state.limits, &mut stats);
            (r, stats, queries.len())
        })
        .await
        .map_err(|e| {
            Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the read stopped: {e}"),
            )
        })?;
        let (result, stats, n) = answered;
        let c = &self.counters;
        c.files.fetch_add(stats.files, Ordering::Relaxed);
        let results = result.map_err(|e| match e {
            QueryError::TooManySamples { .. } | QueryError::TooManyBytes { .. } => {
                Failure(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            e if e.is_client_error() => bad(e.to_string()),
            e => Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
        c.queries.fetch_add(n as u64, Ordering::Relaxed);
        c.samples.fetch_add(stats.samples, Ordering::Relaxed);
        for series in &results {
            c.series.fetch_add(series.len() as u64, Ordering::Relaxed);
        }
        let body = match kind {
            prompb::ResponseType::Samples => {
                let response = prompb::ReadResponse {
                    results: results
                        .into_iter()
                        .map(|series| prompb::QueryResult {
                            timeseries: series.into_iter().map(timeseries).collect(),
                        })
                        .collect(),
                };
                let encoded = prost::Message::encode_to_vec(&response);
                snap::raw::Encoder::new()
                    .compress_vec(&encoded)
                    .map_err(|e| {
                        Failure(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("cannot compress the answer: {e}"),
                        )
                    })?
            }
            prompb::ResponseType::StreamedXorChunks => {
                // The reader's bound counts `SAMPLES` protobuf; frames and chunk headers
                // may take more for series of very few samples, so their real size is checked.
                let frames = streamed_frames(results);
                if frames.len() as u64 > self.limits.max_bytes {
                    return Err(Failure(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        QueryError::TooManyBytes {
                            limit: self.limits.max_bytes,
                        }
                        .to_string(),
                    ));
                }
                frames
            }
        };
        Ok((Bytes::from(body), kind))
    }
}

/// The `Content-Type` of a `STREAMED_XOR_CHUNKS` answer, as Prometheus sends it.
const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Chunks per frame at most: a frame stays well under Prometheus's 1 MiB (a chunk of
/// 120 samples is at most about 2.2 kB).
const CHUNKS_PER_FRAME: usize = 256;

/// The `STREAMED_XOR_CHUNKS` body of `results` (one list of series per query): per
/// series, frames of at most [`CHUNKS_PER_FRAME`] chunks, in query then series order.
fn streamed_frames(results: Vec<Vec<Series>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, series) in results.into_iter().enumerate() {
        for s in series {
            let labels: Vec<prompb::Label> = s
                .labels
                .into_iter()
                .map(|(name, value)| prompb::Label { name, value })
                .collect();
            let chunks: Vec<prompb::Chunk> = s
                .samples
                .chunks(crate::chunkenc::MAX_SAMPLES_PER_CHUNK)
                .map(|part| prompb::Chunk {
                    min_time_ms: part.first().map_or(0, |p| p.0),
                    max_time_ms: part.last().map_or(0, |p| p.0),
                    r#type: prompb::ChunkEncoding::Xor as i32,
                    data: crate::chunkenc::xor_chunk(part),
                })
                .collect();
            for group in chunks.chunks(CHUNKS_PER_FRAME) {
                let frame = prompb::ChunkedReadResponse {
                    chunked_series: vec![prompb::ChunkedSeries {
                        labels: labels.clone(),
                        chunks: group.to_vec(),
                    }],
                    query_index: index as i64,
                };
                let msg = prost::Message::encode_to_vec(&frame);
                let mut size = msg.len() as u64;
                while size >= 0x80 {
                    out.push((size as u8) | 0x80);
                    size >>= 7;
                }
                out.push(size as u8);
                let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &msg) as u32;
                out.extend_from_slice(&crc.to_be_bytes());
                out.extend_from_slice(&msg);
            }
        }
    }
    out
}

fn query_of(q: &prompb::Query) -> Result<Query, QueryError> {
    let matchers = q
        .matchers
        .iter()
        .map(|m| {
            let op = match prompb::MatcherType::try_from(m.r#type) {
                Ok(prompb::MatcherType::Eq) => MatchOp::Equal,
                Ok(prompb::MatcherType::Neq) => MatchOp::NotEqual,
                Ok(prompb::MatcherType::Re) => MatchOp::Regex,
                Ok(prompb::MatcherType::Nre) => MatchOp::NotRegex,
                Err(_) => {
                    return Err(QueryError::BadMatcher {
                        name: m.name.clone(),
                        message: format!("unknown matcher type {}", m.r#type),
                    })
                }
            };
            Matcher::new(&m.name, op, &m.value)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The selector's own range (its range and offset applied) within the query's, as
    // Prometheus's TSDB reads it: a query with several selectors asks each for the
    // whole query's range. Hints of zero are absent ones. `step_ms`, `range_ms` and
    // `func` are not used: they do not say on which grid the selector is evaluated
    // (inside a subquery, the subquery's, aligned to multiples of its step), so reading
    // only the windows around steps could drop samples a window needs.
    let (mut start_ms, mut end_ms) = (q.start_timestamp_ms, q.end_timestamp_ms);
    if let Some(h) = q
        .hints
        .as_ref()
        .filter(|h| h.start_ms != 0 || h.end_ms != 0)
    {
        let (s, e) = (start_ms.max(h.start_ms), end_ms.min(h.end_ms));
        if s <= e {
            (start_ms, end_ms) = (s, e);
        }
    }
    Ok(Query {
        start_ms,
        end_ms,
        matchers,
    })
}

fn timeseries(s: Series) -> prompb::TimeSeries {
    prompb::TimeSeries {
        labels: s
            .labels
            .into_iter()
            .map(|(name, value)| prompb::Label { name, value })
            .collect(),
        samples: s
            .samples
            .into_iter()
            .map(|(timestamp, value)| prompb::Sample { value, timestamp })
            .collect(),
    }
}
