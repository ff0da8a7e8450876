//! The access log: Gunicorn's `%(atom)s` format language, parsed once at startup and rendered
//! once per request when its response has been sent (or abandoned). `--access-logformat json`
//! writes one JSON object per line instead, keyed by atom name.
use super::request_figures::RequestFigures;
use super::{LogKind, LogSink};
pub use crate::config::access_format::AccessLogFormat;
use crate::config::access_format::{Atom, Piece, JSON_ATOMS};
use http::HeaderMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The open access log of a worker.
pub struct AccessLog {
    pub format: AccessLogFormat,
    pub sink: LogSink,
}

/// What one request contributes to its access-log line; written when dropped.
pub struct AccessRecord {
    log: Arc<AccessLog>,
    remote: String,
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    request_headers: HeaderMap,
    started_at: SystemTime,
    started: Instant,
    pub status: u16,
    pub response_headers: HeaderMap,
    pub bytes_sent: u64,
    /// The client certificate's subject on a mutual-TLS connection.
    pub client_subject: Option<Arc<str>>,
    /// Time since a trusted proxy's X-Request-Start stamp.
    pub queue_time: Option<Duration>,
    /// Instantiation time and peak guest memory, filled in by the guest task.
    pub figures: Option<Arc<RequestFigures>>,
}

impl AccessRecord {
    pub fn new<B>(log: Arc<AccessLog>, remote: String, request: &http::Request<B>) -> AccessRecord {
        AccessRecord {
            log,
            remote,
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            request_headers: request.headers().clone(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            status: 0,
            response_headers: HeaderMap::new(),
            bytes_sent: 0,
            client_subject: None,
            queue_time: None,
            figures: None,
        }
    }

    fn render(&self, elapsed: Duration) -> String {
        if self.log.format.json {
            return self.render_json(elapsed);
        }
        let mut line = String::with_capacity(160);
        let mut value = String::with_capacity(64);
        for piece in &self.log.format.pieces {
            match piece {
                Piece::Literal(text) => line.push_str(text),
                Piece::Atom(atom) => {
                    // Client-controlled text (user, path, headers) cannot break the line or a quote.
                    value.clear();
                    self.render_atom(atom, elapsed, &mut value);
                    crate::log::escape::escape_into(&mut line, &value);
                }
            }
        }
        line.push('\n');
        line
    }

    /// `{"h":"127.0.0.1","l":"-",...,"s":200,...}`: each atom rendered as in a text format, as
    /// a JSON string, or a JSON number for the numeric ones.
    fn render_json(&self, elapsed: Duration) -> String {
        let mut line = String::with_capacity(320);
        let mut value = String::with_capacity(64);
        line.push('{');
        for (i, (key, atom, numeric)) in JSON_ATOMS.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push('"');
            line.push_str(key);
            line.push_str("\":");
            value.clear();
            self.render_atom(atom, elapsed, &mut value);
            if *numeric && value == "-" {
                line.push_str("null");
            } else if *numeric {
                line.push_str(&value);
            } else {
                push_json_string(&mut line, &value);
            }
        }
        line.push_str("}\n");
        line
    }

    fn render_atom(&self, atom: &Atom, elapsed: Duration, out: &mut String) {
        use std::fmt::Write;
        let header = |map: &HeaderMap, name: &http::HeaderName| {
            map.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string()
        };
        let path_and_query = self.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        let _ = match atom {
            Atom::RemoteAddr => write!(out, "{}", self.remote),
            Atom::Dash => write!(out, "-"),
            Atom::User => write!(out, "{}", self.basic_auth_user().unwrap_or_else(|| "-".into())),
            Atom::Time => {
                let secs = self.started_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                write!(out, "{}", crate::log::format_time(secs as libc::time_t, "[%d/%b/%Y:%H:%M:%S %z]"))
            }
            Atom::RequestLine => write!(out, "{} {} {}", self.method, path_and_query, protocol(self.version)),
            Atom::Method => write!(out, "{}", self.method),
            Atom::Path => write!(out, "{}", self.uri.path()),
            Atom::Query => write!(out, "{}", self.uri.query().unwrap_or("")),
            Atom::Protocol => write!(out, "{}", protocol(self.version)),
            Atom::Status => write!(out, "{}", self.status),
            Atom::Bytes => write!(out, "{}", self.bytes_sent),
            Atom::BytesOrDash if self.bytes_sent == 0 => write!(out, "-"),
            Atom::BytesOrDash => write!(out, "{}", self.bytes_sent),
            Atom::Referer => write!(out, "{}", header(&self.request_headers, &http::header::REFERER)),
            Atom::UserAgent => write!(out, "{}", header(&self.request_headers, &http::header::USER_AGENT)),
            Atom::Seconds => write!(out, "{}", elapsed.as_secs()),
            Atom::Millis => write!(out, "{}", elapsed.as_millis()),
            Atom::Micros => write!(out, "{}", elapsed.as_micros()),
            Atom::DecimalSeconds => write!(out, "{:.6}", elapsed.as_secs_f64()),
            Atom::Pid => write!(out, "<{}>", std::process::id()),
            Atom::ClientSubject => write!(out, "{}", self.client_subject.as_deref().unwrap_or("-")),
            Atom::QueueMicros => match self.queue_time {
                Some(waited) => write!(out, "{}", waited.as_micros()),
                None => write!(out, "-"),
            },
            Atom::InstantiationMicros => match self.figures.as_ref().and_then(|f| f.instantiation()) {
                Some(took) => write!(out, "{}", took.as_micros()),
                None => write!(out, "-"),
            },
            Atom::PeakMemory => match self.figures.as_ref().and_then(|f| f.peak_memory()) {
                Some(bytes) => write!(out, "{bytes}"),
                None => write!(out, "-"),
            },
            Atom::RequestHeader(name) => write!(out, "{}", header(&self.request_headers, name)),
            Atom::ResponseHeader(name) => write!(out, "{}", header(&self.response_headers, name)),
        };
    }

    fn basic_auth_user(&self) -> Option<String> {
        let value = self.request_headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, encoded) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = decode_base64(encoded.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        Some(text.split_once(':').map_or(text.clone(), |(user, _)| user.to_string()))
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let line = self.render(self.started.elapsed());
        super::deliver(LogKind::Access, &self.log.sink, line.as_bytes());
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    crate::log::escape::escape_json_into(out, text);
    out.push('"');
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() * 6 / 8;
        for i in 0..produced {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::access_format::DEFAULT_FORMAT;

    #[test]
    fn default_format_parses_into_atoms_and_literals() {
        let format = AccessLogFormat::parse(DEFAULT_FORMAT).unwrap();
        assert_eq!(format.pieces.first(), Some(&Piece::Atom(Atom::RemoteAddr)));
        assert!(format.pieces.contains(&Piece::Atom(Atom::UserAgent)));
    }

    #[test]
    fn unknown_atoms_are_rejected_with_the_list_of_known_ones() {
        let err = AccessLogFormat::parse("%(zz)s").unwrap_err();
        assert!(err.contains("unknown atom %(zz)s"), "{err}");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#);
        assert!(AccessLogFormat::parse("json").unwrap().json);
    }

    fn record(headers: &[(&str, &str)], uri: &str) -> AccessRecord {
        let format = AccessLogFormat::parse(DEFAULT_FORMAT).unwrap();
        let log = Arc::new(AccessLog { format, sink: LogSink::stderr() });
        let mut request = http::Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        AccessRecord::new(log, "127.0.0.1".into(), &request.body(()).unwrap())
    }

    #[test]
    fn text_atoms_are_escaped_so_one_request_is_one_line() {
        // "evil\n\"x" as a basic-auth user: base64 of `ev"il\n1.2.3.4 - root:pw`.
        let user = "ev\"il\n1.2.3.4 - root";
        let encoded = encode_base64_for_test(format!("{user}:pw").as_bytes());
        let record =
            record(&[("authorization", &format!("Basic {encoded}")), ("user-agent", "a\"b\\c\t")], "/p%22ath?q=x");
        let line = record.render(Duration::ZERO);
        std::mem::forget(record);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.contains(r#" ev\"il\n1.2.3.4 - root "#), "{line}");
        assert!(line.contains(r#""a\"b\\c\t""#), "{line}");
    }

    fn encode_base64_for_test(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        while out.len() % 4 != 0 {
            out.push('=');
        }
        out
    }

    #[test]
    fn basic_auth_base64_decodes() {
        assert_eq!(decode_base64("YWxhZGRpbjpvcGVuc2VzYW1l").unwrap(), b"aladdin:opensesame");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
    }
}
