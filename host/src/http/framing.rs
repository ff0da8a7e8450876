//! A second, strict reader of the bytes a client sends: it follows HTTP/1.1 message framing
//! (request heads, Content-Length and chunked bodies, trailers) alongside hyper, and refuses what
//! hyper lets through: control characters in chunk extensions, malformed chunk-size lines, chunk
//! data not followed by CRLF, oversized trailers. When it cannot follow the stream (a head hyper
//! will refuse anyway), it stops judging and lets hyper decide.
use crate::http::limits::MAX_HEAD_BYTES;

/// Bytes of a head line kept for reading Content-Length and Transfer-Encoding.
const KEPT_HEAD_LINE: usize = 256;

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a request head: bytes of the current line, lines seen, head bytes so far.
    Head {
        line: Vec<u8>,
        lines: usize,
        bytes: usize,
        body: HeadFraming,
    },
    /// The head just read is refused (the service answers 400 before any body byte).
    Refused(&'static str),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    /// A trailer line: bytes in it, whether it has its colon yet, trailer bytes so far, and
    /// whether the last byte was the CR that must come before every LF here.
    Trailer {
        line: usize,
        colon: bool,
        total: usize,
        cr: bool,
    },
    /// Lost sync (a head hyper refuses): no more judgement.
    Lost,
}

/// What a head's fields say about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct HeadFraming {
    /// Content-Length fields seen, and their value while they all agree.
    length_fields: u32,
    length: Option<u64>,
    /// Content-Length that hyper refuses (unparsable, or values that differ).
    length_bad: bool,
    transfer_encoding_fields: u32,
    chunked: u32,
    other_codings: u32,
}

/// The framing follower for one connection.
#[derive(Debug)]
pub struct FramingCheck {
    state: State,
    /// Request heads completed so far (for the differential check against hyper).
    heads: usize,
}

impl Default for FramingCheck {
    fn default() -> Self {
        FramingCheck { state: State::fresh_head(), heads: 0 }
    }
}

/// Where in the fed bytes the stream broke the rules, and which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub offset: usize,
    pub reason: &'static str,
    /// The request's head is complete before `offset`: its service can answer 400. Otherwise
    /// (an oversized head) the connection just closes.
    pub after_head: bool,
}

impl FramingCheck {
    /// Follows `bytes`; the first violation stops the check (later calls report it again at 0).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let mut i = 0;
        if let State::Refused(reason) = self.state {
            return Err(Violation { offset: 0, reason, after_head: true });
        }
        while i < bytes.len() {
            let in_head = matches!(self.state, State::Head { .. });
            i += self.step(&bytes[i..]).map_err(|reason| Violation { offset: i, reason, after_head: !in_head })?;
            if let State::Refused(reason) = self.state {
                return Err(Violation { offset: i, reason, after_head: true });
            }
        }
        Ok(())
    }

    /// How many request heads the stream has held so far, or None once the check stopped judging
    /// (a head hyper refuses anyway).
    pub fn heads(&self) -> Option<usize> {
        (self.state != State::Lost).then_some(self.heads)
    }

    /// Consumes some of `bytes` (at least one), returns how many.
    fn step(&mut self, bytes: &[u8]) -> Result<usize, &'static str> {
        let b = bytes[0];
        match &mut self.state {
            State::Lost => Ok(bytes.len()),
            State::Refused(reason) => Err(reason),
            State::Head { .. } => self.head_byte(b),
            State::Fixed(remaining) => {
                let take = (*remaining).min(bytes.len() as u64);
                *remaining -= take;
                if *remaining == 0 {
                    self.state = State::fresh_head();
                }
                Ok(take as usize)
            }
            State::ChunkSize(line) => {
                if b != b'\n' {
                    if line.len() >= MAX_CHUNK_LINE {
                        return Err("chunk-size line too long");
                    }
                    line.push(b);
                    return Ok(1);
                }
                let size = chunk_size(line)?;
                self.state = if size == 0 { State::trailer_start() } else { State::ChunkData(size) };
                Ok(1)
            }
            State::ChunkData(remaining) => {
                let take = (*remaining).min(bytes.len() as u64);
                *remaining -= take;
                if *remaining == 0 {
                    self.state = State::ChunkDataCr;
                }
                Ok(take as usize)
            }
            State::ChunkDataCr if b == b'\r' => {
                self.state = State::ChunkDataLf;
                Ok(1)
            }
            State::ChunkDataLf if b == b'\n' => {
                self.state = State::ChunkSize(Vec::new());
                Ok(1)
            }
            State::ChunkDataCr | State::ChunkDataLf => Err("chunk data not followed by CRLF"),
            State::Trailer { .. } => self.trailer_byte(b),
        }
    }

    /// One byte of a request head.
    fn head_byte(&mut self, b: u8) -> Result<usize, &'static str> {
        let State::Head { line, lines, bytes: head_bytes, body } = &mut self.state else { return Ok(1) };
        *head_bytes += 1;
        if *head_bytes > MAX_HEAD_BYTES {
            return Err("request head over 64 KiB");
        }
        if b != b'\n' {
            // Enough of a line for the names and values that matter; a longer line is marked by
            // one extra byte so it is never taken for a short one.
            if line.len() <= KEPT_HEAD_LINE {
                line.push(b);
            }
            return Ok(1);
        }
        let text: &[u8] = line.strip_suffix(b"\r").unwrap_or(line);
        if text.is_empty() {
            if *lines == 0 {
                // Empty lines before a request line are skipped.
                *head_bytes = 0;
                return Ok(1);
            }
            self.state = body.next_state();
            self.heads += 1;
            return Ok(1);
        }
        if *lines > 0 {
            body.field(text, line.len() > KEPT_HEAD_LINE);
        }
        *lines += 1;
        line.clear();
        Ok(1)
    }

    /// One byte of the trailer section. hyper ends trailer lines (and the body) only at CRLF and
    /// reads a bare LF as part of a line: a bare LF here would end the body for us but not for hyper.
    fn trailer_byte(&mut self, b: u8) -> Result<usize, &'static str> {
        let State::Trailer { line, colon, total, cr } = &mut self.state else { return Ok(1) };
        *total += 1;
        if *total > MAX_HEAD_BYTES {
            return Err("trailer section too large");
        }
        let after_cr = std::mem::replace(cr, b == b'\r');
        match b {
            b'\n' if !after_cr => return Err("bare LF in the trailer section"),
            _ if after_cr && b != b'\n' => return Err("CR without LF in the trailer section"),
            b'\n' if *line == 0 => self.state = State::fresh_head(),
            b'\n' if !*colon => return Err("trailer field without a colon"),
            b'\n' => (*line, *colon) = (0, false),
            b'\r' => {}
            b' ' | b'\t' if *line == 0 => return Err("obs-fold in the trailer section"),
            0..=8 | 0x0a..=0x1f | 0x7f => return Err("control character in a trailer field"),
            b':' => (*line, *colon) = (*line + 1, true),
            _ => *line += 1,
        }
        Ok(1)
    }
}

impl State {
    fn fresh_head() -> State {
        State::Head { line: Vec::new(), lines: 0, bytes: 0, body: HeadFraming::default() }
    }

    fn trailer_start() -> State {
        State::Trailer { line: 0, colon: false, total: 0, cr: false }
    }
}

impl HeadFraming {
    /// Takes in one header line (cut to `KEPT_HEAD_LINE` bytes when `cut`).
    fn field(&mut self, line: &[u8], cut: bool) {
        let Some(colon) = line.iter().position(|&b| b == b':') else { return };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding_fields += 1;
            if cut {
                self.other_codings += 1;
            }
            for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty()) {
                if coding.eq_ignore_ascii_case(b"chunked") {
                    self.chunked += 1;
                } else {
                    self.other_codings += 1;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            self.length_fields += 1;
            for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let parsed = std::str::from_utf8(item).ok().filter(|v| !cut && v.bytes().all(|b| b.is_ascii_digit()));
                match (parsed.and_then(|v| v.parse::<u64>().ok()), self.length) {
                    (Some(n), None) => self.length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => self.length_bad = true,
                }
            }
        }
    }

    /// Where the body of this head ends, or why the head is refused.
    fn next_state(&self) -> State {
        if self.transfer_encoding_fields > 0 && self.length_fields > 0 {
            return State::Refused("both Content-Length and Transfer-Encoding");
        }
        if self.transfer_encoding_fields > 0 {
            // chunked is the only transfer coding we implement; it must be there exactly once.
            if self.chunked != 1 || self.other_codings > 0 {
                return State::Refused("a Transfer-Encoding other than chunked");
            }
            return State::ChunkSize(Vec::new());
        }
        match (self.length_bad, self.length) {
            (true, _) => State::Lost,
            (false, Some(n)) if n > 0 => State::Fixed(n),
            _ => State::fresh_head(),
        }
    }
}

/// `1*HEXDIG *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) CRLF` (the LF already taken).
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let line = line.strip_suffix(b"\r").ok_or("chunk-size line not ended by CRLF")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("chunk size is not a hex number");
    }
    if digits > 16 {
        return Err("chunk size too large");
    }
    let size = line[..digits].iter().fold(0u64, |acc, &b| (acc << 4) | (b as char).to_digit(16).unwrap_or(0) as u64);
    let ext = &line[digits..];
    if ext.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("control character in a chunk extension");
    }
    let ext = ext.trim_ascii_start();
    if !ext.is_empty() && ext[0] != b';' {
        return Err("chunk size followed by something other than an extension");
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stream: &[u8]) -> Result<(), &'static str> {
        FramingCheck::default().feed(stream).map_err(|v| v.reason)
    }

    #[test]
    fn valid_streams_pass_whole_or_byte_by_byte() {
        let stream: &[u8] = b"\r\nPOST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        assert_eq!(check(stream), Ok(()));
        let mut byte_by_byte = FramingCheck::default();
        for b in stream {
            byte_by_byte.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(byte_by_byte.state, State::fresh_head());
    }

    #[test]
    fn chunk_violations_are_found() {
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let with = |body: &[u8]| [head.as_slice(), body].concat();
        assert_eq!(check(&with(b"5;a=\x00\r\nhello\r\n0\r\n\r\n")), Err("control character in a chunk extension"));
        assert_eq!(check(&with(b"5;a\rb\r\nhello\r\n")), Err("control character in a chunk extension"));
        assert_eq!(check(&with(b"x\r\n")), Err("chunk size is not a hex number"));
        assert_eq!(check(&with(b"5 x\r\n")), Err("chunk size followed by something other than an extension"));
        assert_eq!(check(&with(b"5\nhello\r\n")), Err("chunk-size line not ended by CRLF"));
        assert_eq!(check(&with(b"5\r\nhelloXX")), Err("chunk data not followed by CRLF"));
        assert_eq!(check(&with(b"11111111111111111\r\n")), Err("chunk size too large"));
        let violation = FramingCheck::default().feed(&with(b"3\r\nabcX")).unwrap_err();
        assert_eq!((violation.offset, violation.after_head), (head.len() + 6, true));
    }

    #[test]
    fn a_cut_content_length_is_not_trusted() {
        let zeros = "0".repeat(300);
        let stream = format!("POST / HTTP/1.1\r\nContent-Length: {zeros}5\r\n\r\n5\r\nx");
        assert_eq!(check(stream.as_bytes()), Ok(()));
        let trailer = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n";
        assert_eq!(check(trailer), Err("obs-fold in the trailer section"));
    }

    /// A bare LF after the last chunk ends the body for a lenient reader but not for hyper, which
    /// reads on as a trailer line: the bytes after it must not be taken for the next request.
    #[test]
    fn the_trailer_section_ends_only_at_crlf() {
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let with = |body: &[u8]| [head.as_slice(), body].concat();
        let smuggled = with(b"0\r\n\nPOST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;\x01\r\nx\r\n");
        assert_eq!(check(&smuggled), Err("bare LF in the trailer section"));
        assert_eq!(check(&with(b"0\r\nX: 1\n\r\n")), Err("bare LF in the trailer section"));
        assert_eq!(check(&with(b"0\r\nX: 1\rY\r\n\r\n")), Err("CR without LF in the trailer section"));
        assert_eq!(check(&with(b"0\r\nX: 1\r\n\r\n")), Ok(()));
        let mut byte_by_byte = FramingCheck::default();
        for b in with(b"0\r\nX: 1\r\n\r\n") {
            byte_by_byte.feed(&[b]).unwrap();
        }
        assert_eq!(byte_by_byte.state, State::fresh_head());
    }

    #[test]
    fn a_head_hyper_refuses_stops_the_judgement() {
        let stream = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n\x00\x01 anything";
        assert_eq!(check(stream), Ok(()));
    }

    #[test]
    fn conflicting_framing_is_refused_right_after_the_head() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let violation = FramingCheck::default().feed(&[&head[..], b"0\r\n\r\n"].concat()).unwrap_err();
        assert_eq!((violation.offset, violation.after_head), (head.len(), true));
        assert_eq!(violation.reason, "both Content-Length and Transfer-Encoding");
        let te = |v: &str| check(format!("POST / HTTP/1.1\r\nTransfer-Encoding: {v}\r\n\r\n0\r\n\r\n").as_bytes());
        assert_eq!(te("chunked, chunked"), Err("a Transfer-Encoding other than chunked"));
        assert_eq!(te("gzip, chunked"), Err("a Transfer-Encoding other than chunked"));
        assert_eq!(te("Chunked"), Ok(()));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        let violation = FramingCheck::default().feed(big.as_bytes()).unwrap_err();
        assert!(!violation.after_head);
    }
}
