//! A small HTTP service whose memory behaves like the Rust services that get OOM-killed.
//!
//! * startup peak: a large lookup table is built at boot, summarised, then dropped;
//! * `POST /ingest`: the JSON body is read whole, parsed and transformed, and all of it is
//!   held for `INGEST_HOLD_MS`, so memory grows with payload size and requests in flight;
//!   nothing outlives the request;
//! * `POST /cache`: the same, but the parsed value is kept in a cache that only grows
//!   (`DELETE /cache` empties it): the route that retains;
//! * `GET /query`: small answers, no retention; `GET /health`: readiness;
//! * `GET /metrics`: Prometheus text with `app_heap_bytes`, the bytes the allocator has
//!   handed out right now, counted exactly by a wrapping global allocator.
//!
//! Environment: `PORT` (or `SPIKEWATCH_PORT`, default 8080), `STARTUP_TABLE_MB` (64),
//! `INGEST_HOLD_MS` (100).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Method, Request, Response, Server, StatusCode};
use serde::Serialize;

/// Counts live heap bytes: the allocator's own view, which RSS only approximates
/// (glibc keeps freed memory mapped, so RSS can stay high while this falls).
struct Counting;

static HEAP: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = HEAP.fetch_add(n, Ordering::Relaxed) + n;
    HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                HEAP.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static INGESTED: AtomicU64 = AtomicU64::new(0);

/// Leaves the in-flight count also when a client hangs up mid-request (the future is dropped).
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

struct State {
    /// What survives of the startup table: one checksum per bucket.
    summary: Vec<u64>,
    hold: Duration,
    ready_after: Duration,
    cache: Mutex<Vec<String>>,
    cache_bytes: AtomicUsize,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("rust-service: {} must be a whole number, got {:?}", name, v);
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The startup peak: a table of about `mb` MiB of small strings, reduced to 1024
/// checksums and dropped before the service listens.
fn build_startup_table(mb: u64) -> Vec<u64> {
    let entries = (mb << 20) / 160;
    let mut table: HashMap<u64, String> = HashMap::new();
    for i in 0..entries {
        let row = format!("row-{:012}-{}", i, "x".repeat(96 + (i % 32) as usize));
        table.insert(i, row);
    }
    let mut summary = vec![0u64; 1024];
    for (k, v) in &table {
        let slot = (*k as usize) % summary.len();
        summary[slot] = summary[slot].wrapping_add(fnv(v.as_bytes()));
    }
    summary
}

#[derive(Serialize)]
struct IngestAnswer {
    bytes: usize,
    chars: usize,
    checksum: u64,
    cached_entries: Option<usize>,
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r
}

fn json<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(s) => {
            let mut r = Response::new(Body::from(s));
            r.headers_mut()
                .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n", e)),
    }
}

/// Reads, parses and transforms a JSON body; returns the parsed value's text so the
/// caller decides whether it is kept.
async fn ingest(state: &State, req: Request<Body>, keep: bool) -> Response<Body> {
    let raw = match hyper::body::to_bytes(req.into_body()).await {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {}\n", e)),
    };
    let value: serde_json::Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("not JSON: {}\n", e)),
    };
    // A normalised copy, as real handlers make: a third buffer the size of the payload.
    let flat = value.to_string();
    let upper = flat.to_uppercase();
    let checksum = fnv(upper.as_bytes());
    tokio::time::sleep(state.hold).await;
    INGESTED.fetch_add(raw.len() as u64, Ordering::Relaxed);
    let mut cached_entries = None;
    if keep {
        let mut flat = flat;
        flat.shrink_to_fit();
        let mut cache = state.cache.lock().unwrap();
        state.cache_bytes.fetch_add(flat.capacity(), Ordering::Relaxed);
        cache.push(flat);
        cached_entries = Some(cache.len());
    }
    json(&IngestAnswer { bytes: raw.len(), chars: upper.len(), checksum, cached_entries })
}

fn metrics(state: &State) -> Response<Body> {
    let entries = state.cache.lock().unwrap().len();
    let body = format!(
        "# HELP app_heap_bytes Bytes the allocator has handed out and not yet had back.\n\
         # TYPE app_heap_bytes gauge\n\
         app_heap_bytes {}\n\
         # HELP app_heap_peak_bytes Highest app_heap_bytes since start.\n\
         # TYPE app_heap_peak_bytes gauge\n\
         app_heap_peak_bytes {}\n\
         # HELP app_cache_bytes Bytes held by the /cache route.\n\
         # TYPE app_cache_bytes gauge\n\
         app_cache_bytes {}\n\
         # TYPE app_cache_entries gauge\n\
         app_cache_entries {}\n\
         # TYPE app_in_flight_requests gauge\n\
         app_in_flight_requests {}\n\
         # TYPE app_requests_total counter\n\
         app_requests_total {}\n\
         # TYPE app_ingested_bytes_total counter\n\
         app_ingested_bytes_total {}\n\
         # HELP app_startup_seconds Time from start until the service listened.\n\
         # TYPE app_startup_seconds gauge\n\
         app_startup_seconds {:.6}\n",
        HEAP.load(Ordering::Relaxed),
        HEAP_PEAK.load(Ordering::Relaxed),
        state.cache_bytes.load(Ordering::Relaxed),
        entries,
        IN_FLIGHT.load(Ordering::Relaxed),
        REQUESTS.load(Ordering::Relaxed),
        INGESTED.load(Ordering::Relaxed),
        state.ready_after.as_secs_f64(),
    );
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn handle(state: &'static State, req: Request<Body>) -> Result<Response<Body>, Infallible> {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    let _counted = InFlight::enter();
    let path = req.uri().path().to_string();
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => text(StatusCode::OK, "ok\n".to_string()),
        (&Method::GET, "/metrics") => metrics(state),
        (&Method::POST, "/ingest") => ingest(state, req, false).await,
        (&Method::POST, "/cache") => ingest(state, req, true).await,
        (&Method::DELETE, "/cache") => {
            let mut cache = state.cache.lock().unwrap();
            let n = cache.len();
            *cache = Vec::new();
            state.cache_bytes.store(0, Ordering::Relaxed);
            text(StatusCode::OK, format!("dropped {} entries\n", n))
        }
        (&Method::GET, "/query") => {
            let i = (REQUESTS.load(Ordering::Relaxed) as usize) % state.summary.len();
            json(&serde_json::json!({ "bucket": i, "checksum": state.summary[i] }))
        }
        _ => text(StatusCode::NOT_FOUND, format!("no route {} {}\n", req.method(), path)),
    };
    Ok(resp)
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let port = std::env::var("PORT")
        .or_else(|_| std::env::var("SPIKEWATCH_PORT"))
        .unwrap_or_else(|_| "8080".to_string());
    let port: u16 = port.trim().parse().unwrap_or_else(|_| {
        eprintln!("rust-service: PORT must be a port number, got {:?}", port);
        std::process::exit(2)
    });
    let summary = build_startup_table(env_u64("STARTUP_TABLE_MB", 64));
    let state: &'static State = Box::leak(Box::new(State {
        summary,
        hold: Duration::from_millis(env_u64("INGEST_HOLD_MS", 100)),
        ready_after: started.elapsed(),
        cache: Mutex::new(Vec::new()),
        cache_bytes: AtomicUsize::new(0),
    }));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let make_svc = make_service_fn(move |_conn| async move {
        Ok::<_, Infallible>(service_fn(move |req| handle(state, req)))
    });
    let server = match Server::try_bind(&addr) {
        Ok(b) => b.serve(make_svc),
        Err(e) => {
            eprintln!("rust-service: cannot listen on {}: {}", addr, e);
            std::process::exit(1)
        }
    };
    eprintln!(
        "rust-service: listening on http://{} after {:.3} s (heap {} bytes)",
        addr,
        state.ready_after.as_secs_f64(),
        HEAP.load(Ordering::Relaxed)
    );
    if let Err(e) = server.await {
        eprintln!("rust-service: {}", e);
        std::process::exit(1)
    }
}
