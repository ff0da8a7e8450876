//! Escaping for log text that a client or a guest controls: control characters, Unicode format
//! characters (bidi overrides, zero-width marks...), `"` and `\` become visible escapes, so one
//! request stays one line, a quoted field cannot be closed early and the line reads as stored.
use std::fmt::Write;

/// Appends `text` to `out` with `\n`, `\r`, `\t`, other control characters (C0, DEL, C1), line
/// and paragraph separators, format characters (general category Cf: bidi embeddings, overrides
/// and isolates, zero-width marks, soft hyphen, BOM, tags...), `"` and `\` escaped (`\n`, `\x1b`,
/// `\"`, `\\`, `\u{85}`, `\u{202e}`); everything else as is.
pub fn escape_into(out: &mut String, text: &str) {
    escape_with(out, text, |out, c| {
        let _ = if (c as u32) < 0x20 || c == '\u{7f}' {
            write!(out, "\\x{:02x}", c as u32)
        } else {
            write!(out, "\\u{{{:x}}}", c as u32)
        };
    });
}

/// Appends `text` as the body of a JSON string literal: the same characters escaped, as JSON's
/// `\u00XX` (a character beyond U+FFFF as its UTF-16 surrogate pair).
pub fn escape_json_into(out: &mut String, text: &str) {
    escape_with(out, text, |out, c| {
        for unit in c.encode_utf16(&mut [0; 2]) {
            let _ = write!(out, "\\u{unit:04x}");
        }
    });
}

/// The escaping both formats share; `control` writes a character that must not appear as is.
fn escape_with(out: &mut String, text: &str, control: impl Fn(&mut String, char)) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) => control(out, c),
            c => out.push(c),
        }
    }
}

/// Control characters (Cc), the line and paragraph separators, and format characters (Cf).
fn must_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}' || is_format(c)
}

/// Unicode general category Cf (format characters), as of Unicode 16.0: invisible characters
/// that change how the text around them is shown (U+202E turns the rest of a line around).
const FORMAT_CHARACTERS: &[(char, char)] = &[
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

fn is_format(c: char) -> bool {
    // Every format character is at or above U+00AD: plain ASCII text never searches the table.
    c >= '\u{ad}' && FORMAT_CHARACTERS.iter().any(|&(first, last)| (first..=last).contains(&c))
}

/// `text` escaped as by [`escape_into`].
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// A request's method and target for a log line, escaped only when the line is written: a request
/// that logs nothing pays two cheap clones, no formatting.
#[derive(Debug, Clone)]
pub struct RequestLine {
    method: http::Method,
    target: http::Uri,
    /// Only the target's path (the guest's log lines), not its query or authority.
    path_only: bool,
}

impl RequestLine {
    /// The method and the whole request target.
    pub fn of<B>(request: &http::Request<B>) -> RequestLine {
        RequestLine { method: request.method().clone(), target: request.uri().clone(), path_only: false }
    }

    /// The method and the target's path.
    pub fn path_of<B>(request: &http::Request<B>) -> RequestLine {
        RequestLine { path_only: true, ..RequestLine::of(request) }
    }
}

impl std::fmt::Display for RequestLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = escaped(self.method.as_str());
        line.push(' ');
        if self.path_only {
            escape_into(&mut line, self.target.path());
        } else {
            escape_into(&mut line, &self.target.to_string());
        }
        f.write_str(&line)
    }
}

/// Bytes (not necessarily UTF-8) escaped: invalid UTF-8 bytes become `\xNN`.
pub fn escaped_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        escape_into(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_quotes_and_backslashes_are_escaped() {
        assert_eq!(escaped("a\"b\\c\nd\re\tf\u{1b}[31m\u{7f}"), r#"a\"b\\c\nd\re\tf\x1b[31m\x7f"#);
        assert_eq!(escaped("line\u{85}break\u{2028}"), r"line\u{85}break\u{2028}");
        assert_eq!(escaped("plain text: é ✓"), "plain text: é ✓");
    }

    #[test]
    fn format_and_bidi_characters_are_escaped() {
        assert_eq!(escaped("user\u{202e}gnp.exe"), r"user\u{202e}gnp.exe");
        for c in
            ['\u{ad}', '\u{61c}', '\u{200b}', '\u{200f}', '\u{202a}', '\u{2066}', '\u{2069}', '\u{feff}', '\u{e0041}']
        {
            assert_eq!(escaped(&c.to_string()), format!("\\u{{{:x}}}", c as u32), "U+{:04X}", c as u32);
        }
        // Letters and marks next to the table's ranges stay as they are.
        assert_eq!(escaped("\u{ac}\u{ae}\u{2010}\u{fefe}ü"), "\u{ac}\u{ae}\u{2010}\u{fefe}ü");
        let mut json = String::new();
        escape_json_into(&mut json, "a\u{202e}b\u{e0001}");
        assert_eq!(json, r"a\u202eb\udb40\udc01");
    }

    #[test]
    fn the_format_table_is_ordered_and_disjoint() {
        for pair in FORMAT_CHARACTERS.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
    }

    #[test]
    fn invalid_utf8_bytes_are_escaped_not_replaced() {
        assert_eq!(escaped_bytes(b"ok\xff\n"), r"ok\xff\n");
    }
}
