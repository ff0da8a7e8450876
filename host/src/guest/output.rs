//! Guest stdout/stderr: line-buffered into the error log, each line tagged with the worker pid,
//! the request id and the stream, so output from concurrent requests stays attributable.
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A partial line longer than this is written out without waiting for its newline.
const MAX_LINE: usize = 16 * 1024;

struct LineBuffer {
    /// The request now using the instance (it changes when an instance is reused).
    request_id: Mutex<Arc<str>>,
    stream: &'static str,
    pending: Mutex<Vec<u8>>,
}

impl LineBuffer {
    fn push(&self, bytes: &[u8]) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        pending.extend_from_slice(bytes);
        while let Some(newline) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=newline).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if pending.len() > MAX_LINE {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let request_id = self.request_id.lock().map(|id| id.clone()).unwrap_or_else(|e| e.into_inner().clone());
        crate::log_info!(
            "[worker {} request {request_id}] guest {}: {}",
            crate::log::pid(),
            self.stream,
            String::from_utf8_lossy(line).trim_end_matches('\r')
        );
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        let rest = std::mem::take(self.pending.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !rest.is_empty() {
            self.emit(&rest);
        }
    }
}

/// One request's stdout or stderr.
#[derive(Clone)]
pub struct GuestOutput(Arc<LineBuffer>);

impl GuestOutput {
    /// `stream` is "stdout" or "stderr".
    pub fn new(request_id: Arc<str>, stream: &'static str) -> GuestOutput {
        GuestOutput(Arc::new(LineBuffer {
            request_id: Mutex::new(request_id),
            stream,
            pending: Mutex::new(Vec::new()),
        }))
    }

    /// Tags further output with another request (instance reuse). A partial line left by the
    /// previous request is written out under its own id first.
    pub fn set_request(&self, request_id: Arc<str>) {
        let rest = self.0.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        if !rest.is_empty() {
            self.0.emit(&rest);
        }
        if let Ok(mut id) = self.0.request_id.lock() {
            *id = request_id;
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
