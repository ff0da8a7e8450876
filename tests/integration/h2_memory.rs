//! HTTP/2 header memory against the real binary: a stream's header list is held to the same
//! 64 KiB bound as an HTTP/1 request head, so 100 streams waiting for an instance slot on one
//! connection hold at most 100 × 64 KiB (docs: "Request limits").
use crate::support::*;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;

#[test]
fn a_hundred_streams_with_large_header_lists_stay_under_the_head_bound() {
    const STREAMS: usize = 100;
    // 90 fields of 7,000 bytes: ~630 KiB per stream, each field under --limit-request-field_size.
    let fields: Vec<(String, String)> = (0..90).map(|i| (format!("x-big-{i}"), "a".repeat(7000))).collect();
    let server = Server::start(&guest("faults"), &["-w", "1", "--http-protocols", "h1,h2", "--instance-slots", "2"]);
    let worker = server.worker_pids()[0];
    let before = rss_kib(worker);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(worker));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let statuses: Vec<u16> = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder.max_send_buf_size(1 << 20);
        let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        let sends = (0..STREAMS).map(|_| {
            let mut sender = sender.clone();
            let mut request = hyper::Request::get(format!("http://{}/sleep?ms=300", server.addr));
            for (name, value) in &fields {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = request.body(Empty::<bytes::Bytes>::new()).unwrap();
            async move { sender.send_request(request).await.map(|r| r.status().as_u16()).unwrap_or(0) }
        });
        let all = futures::future::join_all(sends);
        tokio::time::timeout(Duration::from_secs(60), all).await.expect("every stream answered")
    });
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let grown_kib = sampler.join().unwrap().saturating_sub(before);
    eprintln!("worker RSS grew by {grown_kib} KiB with {STREAMS} streams of ~630 KiB header lists");
    assert!(statuses.iter().all(|&s| s == 431 || s == 0), "header lists over 64 KiB are refused: {statuses:?}");
    // The documented bound is 100 × 64 KiB; the old bound (~800 KiB a stream) grows ~60 MiB here.
    assert!(grown_kib < 16 * 1024, "RSS grew by {grown_kib} KiB");
    assert_eq!(server.get("/ok").status, 200, "the worker serves on");
}
