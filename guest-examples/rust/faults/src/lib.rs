//! `faults`: one guest whose routes misbehave on purpose, for testing how the host copes.
//!
//! | route                  | behaviour                                                          |
//! |------------------------|--------------------------------------------------------------------|
//! | `/ok`                  | 200 `ok\n`                                                         |
//! | `/sized`               | 200 `ok\n` with `content-length: 3` (a known-length body)          |
//! | `/spin`                | burns CPU forever before any response                              |
//! | `/spin?ms=N`           | says so on stderr, burns CPU for N ms, then 200 `spun\n`           |
//! | `/sleep?ms=N`          | says so on stderr, blocks in the host N ms (default 1 h), `slept\n`|
//! | `/panic`               | panics (a trap) before any response                                |
//! | `/trap-mid-body`       | head 200 + flushed `partial body\n`, then panics                   |
//! | `/spin-mid-body`       | head 200 + flushed `partial\n`, then spins forever                 |
//! | `/no-response`         | returns without ever setting the response                          |
//! | `/unfinished-body`     | head 200 + flushed `partial\n`, returns leaking its unfinished body |
//! | `/alloc`               | allocates 1 MiB blocks without bound until the host says no        |
//! | `/stdout`              | two lines to stdout, one to stderr, then 200 `printed\n`           |
//! | `/env`                 | 200, the guest environment as `KEY=VALUE\n` lines                  |
//! | `/read-file?path=P`    | 200 with file P read through std::fs, or 404 with the error        |
//! | `/headers`             | 200, method, path, authority, scheme and all request headers       |
//! | `/count`               | 200, how many requests this instance has served (`1` when fresh)   |
//! | `/consume`             | reads the whole request body, then 200 `N bytes\n` (500 on error) |
//! | `/big?kb=N`            | 200 with N KiB of body (default 16384), written 4 KiB at a time    |
//! | `/print-escape`        | one stdout line with ESC, CR, `"` and `\` in it, then 200           |
//! | `/print-long-line`     | one 100 KiB stdout line without a newline, then 200                 |
//! | `/print-flood?kb=N`    | N KiB (default 4096) of 100-byte stdout lines, then 200            |
//! | `/scribble`            | 200 `clean\n` if 64 data-segment and 64 heap pages hold their fresh |
//! |                        | contents (500 `dirty\n` otherwise), then writes to every other page |
//! | `/mark-and-hold`       | fills 64 data-segment and 64 zero (bss) pages with `HOLD_MARKER`,   |
//! |                        | sends head 200 + flushed `marked\n`, reads the whole request body,  |
//! |                        | then `released\n`: the instance stays alive until the body ends     |
//! | `/marked-pages`        | 200 `pristine\n` if those 128 pages hold a fresh instance's         |
//! |                        | contents, else 500 `N of 128 pages hold the marker\n`               |
//! | anything else          | 404 `not found\n`                                                  |

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use wasi::clocks::monotonic_clock;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme,
};
use wasi::io::streams::OutputStream;

const NANOS_PER_MS: u64 = 1_000_000;
const ONE_HOUR_MS: u64 = 60 * 60 * 1000;

/// Requests this instance has handled (only ever above 1 when the host reuses instances).
static HANDLED: AtomicU64 = AtomicU64::new(0);

/// Host pages (4 KiB) that `/scribble` checks and dirties.
const SCRIBBLE_PAGE: usize = 4096;
const SCRIBBLE_PAGES: usize = 64;
const SCRIBBLE_FILL: u8 = 0xA5;

/// Page-aligned pages initialised to `SCRIBBLE_FILL`: they live in the component's data segment,
/// so a fresh instance finds them in its memory image.
#[repr(C, align(4096))]
struct ImagePages(UnsafeCell<[[u8; SCRIBBLE_PAGE]; SCRIBBLE_PAGES]>);
// SAFETY: a wasm32-wasip2 guest is single-threaded.
unsafe impl Sync for ImagePages {}
static IMAGE_PAGES: ImagePages = ImagePages(UnsafeCell::new([[SCRIBBLE_FILL; SCRIBBLE_PAGE]; SCRIBBLE_PAGES]));

/// Pages `/mark-and-hold` fills with `HOLD_MARKER`: 64 in the data segment (fresh contents
/// `HOLD_FILL`, from the memory image) and 64 zero-initialised ones (bss, past the image).
const HOLD_PAGES: usize = SCRIBBLE_PAGES;
const HOLD_FILL: u8 = 0x3C;
/// The byte every marked page is full of: the test finds these pages in the worker by it.
const HOLD_MARKER: u8 = 0xE7;
static HOLD_IMAGE: ImagePages = ImagePages(UnsafeCell::new([[HOLD_FILL; SCRIBBLE_PAGE]; HOLD_PAGES]));
static HOLD_ZERO: ImagePages = ImagePages(UnsafeCell::new([[0; SCRIBBLE_PAGE]; HOLD_PAGES]));

struct Faults;

impl Guest for Faults {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match path_with_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_with_query.as_str(), ""),
        };
        let ms = query_param(query, "ms").and_then(|v| v.parse::<u64>().ok());
        let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;

        match path {
            "/ok" => respond(response_out, 200, b"ok\n"),
            "/sized" => respond_sized(response_out, b"ok\n"),
            "/count" => respond(response_out, 200, format!("{handled}\n").as_bytes()),
            "/spin" => match ms {
                None => spin_forever(),
                Some(ms) => {
                    eprintln!("spinning for {ms} ms");
                    spin_for(ms);
                    respond(response_out, 200, b"spun\n");
                }
            },
            "/sleep" => {
                let ms = ms.unwrap_or(ONE_HOUR_MS);
                eprintln!("sleeping for {ms} ms");
                sleep_ms(ms);
                respond(response_out, 200, b"slept\n");
            }
            "/linger" => {
                // The response is whole at once; the guest returns (freeing its instance) later.
                respond(response_out, 200, b"ok\n");
                sleep_ms(ms.unwrap_or(0));
            }
            "/panic" => panic!("guest panic on purpose"),
            "/trap-mid-body" => {
                let (body, out) = start_response(response_out, 200);
                out.blocking_write_and_flush(b"partial body\n").expect("write");
                let _keep_open = (body, out);
                panic!("guest panic on purpose, mid-body");
            }
            "/spin-mid-body" => {
                let (body, out) = start_response(response_out, 200);
                out.blocking_write_and_flush(b"partial\n").expect("write");
                let _keep_open = (body, out);
                spin_forever();
            }
            "/unfinished-body" => {
                let (body, out) = start_response(response_out, 200);
                out.blocking_write_and_flush(b"partial\n").expect("write");
                // Neither finished nor dropped: the handles stay in the instance's table.
                std::mem::forget((body, out));
            }
            "/no-response" => {
                // Drop the outparam unset and return.
                drop(response_out);
            }
            "/alloc" => alloc_forever(),
            "/dirty" => {
                let mib = query_param(query, "mib").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
                let dirtied = dirty_mib(mib);
                sleep_ms(ms.unwrap_or(0));
                respond(response_out, 200, format!("dirtied {} pages\n", black_box(dirtied).len() / 4096).as_bytes());
            }
            "/stdout" => {
                println!("guest stdout line 1");
                println!("guest stdout line 2");
                eprintln!("guest stderr line");
                respond(response_out, 200, b"printed\n");
            }
            "/env" => {
                let mut body = String::new();
                for (k, v) in std::env::vars() {
                    body.push_str(&k);
                    body.push('=');
                    body.push_str(&v);
                    body.push('\n');
                }
                respond(response_out, 200, body.as_bytes());
            }
            "/read-file" => {
                let file = query_param(query, "path").map(percent_decode).unwrap_or_default();
                match std::fs::read(&file) {
                    Ok(contents) => respond(response_out, 200, &contents),
                    Err(e) => respond(response_out, 404, format!("{file}: {e}\n").as_bytes()),
                }
            }
            "/headers" => {
                let mut body = String::new();
                body.push_str(&format!("method: {}\n", method_name(&request.method())));
                body.push_str(&format!("path: {path_with_query}\n"));
                let authority = request.authority().unwrap_or_else(|| "-".to_string());
                body.push_str(&format!("authority: {authority}\n"));
                let scheme = match request.scheme() {
                    Some(Scheme::Http) => "http".to_string(),
                    Some(Scheme::Https) => "https".to_string(),
                    Some(Scheme::Other(s)) => s,
                    None => "-".to_string(),
                };
                body.push_str(&format!("scheme: {scheme}\n"));
                for (name, value) in request.headers().entries() {
                    body.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
                }
                respond(response_out, 200, body.as_bytes());
            }
            "/consume" => {
                let body = request.consume().expect("request body");
                let input = body.stream().expect("body stream");
                let mut total = 0usize;
                let result = loop {
                    match input.blocking_read(64 * 1024) {
                        Ok(chunk) => total += chunk.len(),
                        Err(wasi::io::streams::StreamError::Closed) => break Ok(total),
                        Err(e) => break Err(format!("{e:?}")),
                    }
                };
                drop(input);
                match result {
                    Ok(total) => respond(response_out, 200, format!("{total} bytes\n").as_bytes()),
                    Err(e) => respond(response_out, 500, format!("body error: {e}\n").as_bytes()),
                }
            }
            "/big" => {
                let kb = query_param(query, "kb").and_then(|v| v.parse::<usize>().ok()).unwrap_or(16384);
                let (body, out) = start_response(response_out, 200);
                let block = [b'x'; 4096];
                for _ in 0..kb / 4 {
                    out.blocking_write_and_flush(&block).expect("write");
                }
                drop(out);
                OutgoingBody::finish(body, None).expect("finish body");
            }
            "/print-escape" => {
                println!("evil \x1b[2J\"quoted\" back\\slash\rcarriage");
                respond(response_out, 200, b"printed\n");
            }
            "/print-long-line" => {
                print!("{}", "L".repeat(100 * 1024));
                respond(response_out, 200, b"printed\n");
            }
            "/print-flood" => {
                let kb = query_param(query, "kb").and_then(|v| v.parse::<usize>().ok()).unwrap_or(4096);
                let line = format!("{}\n", "f".repeat(99));
                for _ in 0..kb * 1024 / 100 {
                    print!("{line}");
                }
                respond(response_out, 200, b"printed\n");
            }
            "/scribble" => {
                if scribble() {
                    respond(response_out, 200, b"clean\n");
                } else {
                    respond(response_out, 500, b"dirty\n");
                }
            }
            "/mark-and-hold" => mark_and_hold(request, response_out),
            "/marked-pages" => match marked_pages() {
                0 => respond(response_out, 200, b"pristine\n"),
                n => {
                    respond(response_out, 500, format!("{n} of {} pages hold the marker\n", 2 * HOLD_PAGES).as_bytes())
                }
            },
            _ => respond(response_out, 404, b"not found\n"),
        }
    }
}

/// Sends a complete text/plain response.
fn respond(response_out: ResponseOutparam, status: u16, body_bytes: &[u8]) {
    let (body, out) = start_response(response_out, status);
    write_all(&out, body_bytes);
    drop(out);
    OutgoingBody::finish(body, None).expect("finish body");
}

/// 200 with `body` and a `content-length` header, so even an HTTP/1.0 client can keep the
/// connection alive.
fn respond_sized(response_out: ResponseOutparam, body_bytes: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"text/plain".to_vec()),
        ("content-length".to_string(), body_bytes.len().to_string().into_bytes()),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("response body");
    ResponseOutparam::set(response_out, Ok(response));
    let out = body.write().expect("body stream");
    write_all(&out, body_bytes);
    drop(out);
    OutgoingBody::finish(body, None).expect("finish body");
}

/// Sets a text/plain response head with `status` and returns its body and body stream.
fn start_response(response_out: ResponseOutparam, status: u16) -> (OutgoingBody, OutputStream) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
        .expect("valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("response body");
    ResponseOutparam::set(response_out, Ok(response));
    let out = body.write().expect("body stream");
    (body, out)
}

/// `blocking_write_and_flush` takes at most 4096 bytes per call.
fn write_all(out: &OutputStream, data: &[u8]) {
    for chunk in data.chunks(4096) {
        out.blocking_write_and_flush(chunk).expect("write body");
    }
}

/// Blocks in a host call (no guest CPU) for `ms` milliseconds.
fn sleep_ms(ms: u64) {
    monotonic_clock::subscribe_duration(ms.saturating_mul(NANOS_PER_MS)).block();
}

/// Burns CPU forever; `black_box` keeps the loop from being optimised away.
fn spin_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Burns CPU for `ms` milliseconds of monotonic time.
fn spin_for(ms: u64) {
    let deadline = monotonic_clock::now().saturating_add(ms.saturating_mul(NANOS_PER_MS));
    let mut counter: u64 = 0;
    while monotonic_clock::now() < deadline {
        // Some pure computation between clock reads, so most time is spent in guest code.
        for _ in 0..10_000 {
            counter = black_box(counter.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    black_box(counter);
}

/// Checks that the data-segment pages and a fresh zeroed heap block hold what a fresh instance
/// must see, then writes one byte into every other page of each (many disjoint dirty regions, as a
/// real app leaves behind). Returns whether everything was fresh.
fn scribble() -> bool {
    // SAFETY: single-threaded guest; nothing else holds a reference to these pages.
    let image = unsafe { &mut *IMAGE_PAGES.0.get() };
    let mut heap = vec![0u8; (SCRIBBLE_PAGES + 1) * SCRIBBLE_PAGE];
    let image_fresh = image.iter().all(|page| page.iter().all(|&b| b == SCRIBBLE_FILL));
    let heap_fresh = heap.iter().all(|&b| b == 0);
    for page in image.iter_mut().step_by(2) {
        page[SCRIBBLE_PAGE / 2] = !SCRIBBLE_FILL;
    }
    for offset in (0..heap.len()).step_by(2 * SCRIBBLE_PAGE) {
        heap[offset] = 0x5A;
    }
    // The heap block stays allocated, so a reused instance would not see it zeroed by free/alloc.
    std::mem::forget(black_box(heap));
    image_fresh && heap_fresh
}

/// Allocates `mib` MiB and writes every page of it, so the instance's slot holds that many dirty
/// pages when it is freed.
fn dirty_mib(mib: usize) -> Vec<u8> {
    let mut block = vec![0u8; mib << 20];
    for i in (0..block.len()).step_by(4096) {
        block[i] = 0xD1;
    }
    block
}

/// Fills the hold pages with `HOLD_MARKER`, says `marked` (flushed), then holds the instance
/// (and its dirty pages) alive until the request body ends, and says `released`.
fn mark_and_hold(request: IncomingRequest, response_out: ResponseOutparam) {
    // SAFETY: single-threaded guest; nothing else holds a reference to these pages.
    let (image, zero) = unsafe { (&mut *HOLD_IMAGE.0.get(), &mut *HOLD_ZERO.0.get()) };
    for page in image.iter_mut().chain(zero.iter_mut()) {
        page.fill(HOLD_MARKER);
    }
    black_box((image, zero));
    let body = request.consume().expect("request body");
    let input = body.stream().expect("body stream");
    let (response_body, out) = start_response(response_out, 200);
    out.blocking_write_and_flush(b"marked\n").expect("write");
    while input.blocking_read(64 * 1024).is_ok() {}
    drop(input);
    out.blocking_write_and_flush(b"released\n").expect("write");
    drop(out);
    OutgoingBody::finish(response_body, None).expect("finish body");
}

/// How many hold pages do not hold a fresh instance's contents.
fn marked_pages() -> usize {
    // SAFETY: single-threaded guest; nothing else holds a reference to these pages.
    let (image, zero) = unsafe { (&*HOLD_IMAGE.0.get(), &*HOLD_ZERO.0.get()) };
    let image_dirty = image.iter().filter(|page| page.iter().any(|&b| b != HOLD_FILL)).count();
    let zero_dirty = zero.iter().filter(|page| page.iter().any(|&b| b != 0)).count();
    black_box(image_dirty + zero_dirty)
}

/// Allocates (and touches) 1 MiB blocks until allocation fails; the guest then aborts.
fn alloc_forever() -> ! {
    const MIB: usize = 1 << 20;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; MIB];
        // Touch every page so the memory is really used.
        for i in (0..MIB).step_by(4096) {
            block[i] = (blocks.len() as u8).wrapping_add(1);
        }
        blocks.push(black_box(block));
    }
}

/// First value of `name` in an `a=b&c=d` query string (not percent-decoded).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Minimal `%XX` decoding (and `+` as space) for query values such as file paths.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(m) => m,
    }
}

wasi::http::proxy::export!(Faults);
