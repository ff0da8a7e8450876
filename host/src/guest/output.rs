//! Guest stdout/stderr: line-buffered into the error log, each line tagged with the worker pid,
//! the request id and the stream, so output from concurrent requests stays attributable. Lines are
//! escaped and capped in length, a request's output is capped in bytes, and a line the error log
//! cannot take at once is dropped and counted as `guest` by the log's one non-blocking path
//! (`crate::log::log_guest`): a slow log reader never blocks the worker.
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A line longer than this is cut: its first `MAX_LINE` bytes are logged with a marker, the rest
/// of that line is dropped. (Escaping can make it up to four times longer; the log sink cuts a
/// line to PIPE_BUF itself where that is what keeps the write atomic.)
pub const MAX_LINE: usize = 1024;

/// Output a request may write per stream; past it, one marker line and nothing more.
pub const MAX_OUTPUT_PER_REQUEST: usize = 1 << 20;

#[derive(Default)]
struct Pending {
    line: Vec<u8>,
    /// The current line was cut at `MAX_LINE`: drop bytes until its newline.
    cutting: bool,
    /// Bytes accepted for the current request.
    written: usize,
    /// The request passed `MAX_OUTPUT_PER_REQUEST`.
    capped: bool,
}

struct LineBuffer {
    /// The request now using the instance (it changes when an instance is reused).
    request_id: Mutex<Arc<str>>,
    stream: &'static str,
    pending: Mutex<Pending>,
}

impl LineBuffer {
    /// Splits `bytes` into lines in one pass (each byte is looked at once).
    fn push(&self, bytes: &[u8]) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.capped {
            return;
        }
        let room = MAX_OUTPUT_PER_REQUEST - pending.written;
        let (bytes, over) = if bytes.len() > room { (&bytes[..room], true) } else { (bytes, false) };
        pending.written += bytes.len();
        let mut rest = bytes;
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n');
            let segment = &rest[..end.unwrap_or(rest.len())];
            if !pending.cutting {
                let take = segment.len().min(MAX_LINE - pending.line.len());
                pending.line.extend_from_slice(&segment[..take]);
                if take < segment.len() {
                    let line = std::mem::take(&mut pending.line);
                    self.emit(&line, " [line cut at 1024 bytes]");
                    pending.cutting = true;
                }
            }
            match end {
                Some(end) => {
                    if !pending.cutting {
                        let line = std::mem::take(&mut pending.line);
                        self.emit(&line, "");
                    }
                    pending.cutting = false;
                    rest = &rest[end + 1..];
                }
                None => break,
            }
        }
        if over {
            pending.capped = true;
            let line = std::mem::take(&mut pending.line);
            if !line.is_empty() && !pending.cutting {
                self.emit(&line, "");
            }
            self.emit(b"", "[more than 1 MiB of output in this request; the rest is dropped]");
        }
    }

    /// Writes out a partial line and readies the buffer for another request.
    fn finish_request(&self, pending: &mut Pending) {
        let line = std::mem::take(&mut pending.line);
        if !line.is_empty() && !pending.cutting {
            self.emit(&line, "");
        }
        pending.cutting = false;
        pending.written = 0;
        pending.capped = false;
    }

    /// One escaped error-log line (dropped and counted if the log cannot take it now).
    fn emit(&self, line: &[u8], marker: &str) {
        let request_id = self.request_id.lock().map(|id| id.clone()).unwrap_or_else(|e| e.into_inner().clone());
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        crate::log::log_guest(format_args!(
            "[worker {} request {request_id}] guest {}: {}{marker}",
            crate::log::pid(),
            self.stream,
            crate::log::escape::escaped_bytes(line)
        ));
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        let mut pending = std::mem::take(self.pending.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.finish_request(&mut pending);
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
            pending: Mutex::new(Pending::default()),
        }))
    }

    /// Tags further output with another request (instance reuse). A partial line left by the
    /// previous request is written out under its own id first.
    pub fn set_request(&self, request_id: Arc<str>) {
        if let Ok(mut pending) = self.0.pending.lock() {
            self.0.finish_request(&mut pending);
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
