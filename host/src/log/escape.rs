//! Escaping for log text that a client or a guest controls: control characters, `"` and `\`
//! become visible escapes, so one request stays one line and a quoted field cannot be closed early.
use std::fmt::Write;

/// Appends `text` to `out` with `\n`, `\r`, `\t`, other control characters (C0, DEL, C1), `"` and
/// `\` escaped (`\n`, `\x1b`, `\"`, `\\`, `\u{85}`); everything else as is.
pub fn escape_into(out: &mut String, text: &str) {
    escape_with(out, text, |out, c| {
        let _ = if (c as u32) < 0x20 || c == '\u{7f}' {
            write!(out, "\\x{:02x}", c as u32)
        } else {
            write!(out, "\\u{{{:x}}}", c as u32)
        };
    });
}

/// Appends `text` as the body of a JSON string literal: the same characters escaped, control
/// characters as JSON's `\u00XX`.
pub fn escape_json_into(out: &mut String, text: &str) {
    escape_with(out, text, |out, c| {
        let _ = write!(out, "\\u{:04x}", c as u32);
    });
}

/// The escaping both formats share; `control` writes a control character (or U+2028/U+2029).
fn escape_with(out: &mut String, text: &str, control: impl Fn(&mut String, char)) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => control(out, c),
            c => out.push(c),
        }
    }
}

/// `text` escaped as by [`escape_into`].
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
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
    fn invalid_utf8_bytes_are_escaped_not_replaced() {
        assert_eq!(escaped_bytes(b"ok\xff\n"), r"ok\xff\n");
    }
}
