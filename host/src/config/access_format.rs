//! `--access-logformat`: Gunicorn's `%(atom)s` format language (and `json`), parsed once when the
//! settings are resolved; `log::access` renders it per request.
/// Gunicorn's default: Apache combined log format.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Literal(String),
    Atom(Atom),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Atom {
    RemoteAddr,
    Dash,
    User,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    Bytes,
    BytesOrDash,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    ClientSubject,
    /// rustcorn: microseconds since a trusted proxy's X-Request-Start stamp.
    QueueMicros,
    /// rustcorn: microseconds to instantiate the guest (`-` for a reused instance).
    InstantiationMicros,
    /// rustcorn: the guest's linear memory at its peak, in bytes.
    PeakMemory,
    RequestHeader(http::HeaderName),
    ResponseHeader(http::HeaderName),
}

/// A parsed `--access-logformat`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogFormat {
    pub(crate) pieces: Vec<Piece>,
    /// `json`: one object per line with every atom (`pieces` is empty).
    pub(crate) json: bool,
}

/// The `--access-logformat` value that selects JSON lines.
pub const JSON_FORMAT: &str = "json";

/// The atoms of a JSON line, in Gunicorn's documentation order; the numeric ones are numbers.
pub(crate) const JSON_ATOMS: [(&str, Atom, bool); 23] = [
    ("h", Atom::RemoteAddr, false),
    ("l", Atom::Dash, false),
    ("u", Atom::User, false),
    ("t", Atom::Time, false),
    ("r", Atom::RequestLine, false),
    ("m", Atom::Method, false),
    ("U", Atom::Path, false),
    ("q", Atom::Query, false),
    ("H", Atom::Protocol, false),
    ("s", Atom::Status, true),
    ("B", Atom::Bytes, true),
    ("b", Atom::BytesOrDash, false),
    ("f", Atom::Referer, false),
    ("a", Atom::UserAgent, false),
    ("T", Atom::Seconds, true),
    ("M", Atom::Millis, true),
    ("D", Atom::Micros, true),
    ("L", Atom::DecimalSeconds, true),
    ("p", Atom::Pid, false),
    ("ssl_client_s_dn", Atom::ClientSubject, false),
    ("queue_us", Atom::QueueMicros, true),
    ("instantiate_us", Atom::InstantiationMicros, true),
    ("peak_memory", Atom::PeakMemory, true),
];

impl AccessLogFormat {
    pub fn parse(format: &str) -> Result<AccessLogFormat, String> {
        if format.trim() == JSON_FORMAT {
            return Ok(AccessLogFormat { pieces: Vec::new(), json: true });
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = format;
        while let Some(start) = rest.find("%(") {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find(")s").ok_or_else(|| format!("unterminated atom at {:?}", &rest[start..]))?;
            let name = &after[..end];
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Atom(Self::atom(name)?));
            rest = &after[end + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(AccessLogFormat { pieces, json: false })
    }

    fn atom(name: &str) -> Result<Atom, String> {
        let header = |h: &str| {
            http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("{h:?} in %({name})s is not a header name"))
        };
        if let Some(inner) = name.strip_prefix('{') {
            if let Some(h) = inner.strip_suffix("}i") {
                return Ok(Atom::RequestHeader(header(h)?));
            }
            if let Some(h) = inner.strip_suffix("}o") {
                return Ok(Atom::ResponseHeader(header(h)?));
            }
        }
        Ok(match name {
            "h" => Atom::RemoteAddr,
            "l" => Atom::Dash,
            "u" => Atom::User,
            "t" => Atom::Time,
            "r" => Atom::RequestLine,
            "m" => Atom::Method,
            "U" => Atom::Path,
            "q" => Atom::Query,
            "H" => Atom::Protocol,
            "s" => Atom::Status,
            "B" => Atom::Bytes,
            "b" => Atom::BytesOrDash,
            "f" => Atom::Referer,
            "a" => Atom::UserAgent,
            "T" => Atom::Seconds,
            "M" => Atom::Millis,
            "D" => Atom::Micros,
            "L" => Atom::DecimalSeconds,
            "p" => Atom::Pid,
            "ssl_client_s_dn" => Atom::ClientSubject,
            "queue_us" => Atom::QueueMicros,
            "instantiate_us" => Atom::InstantiationMicros,
            "peak_memory" => Atom::PeakMemory,
            other => {
                return Err(format!(
                    "unknown atom %({other})s; use h l u t r m U q H s B b f a T M D L p ssl_client_s_dn queue_us instantiate_us peak_memory {{header}}i {{header}}o"
                ))
            }
        })
    }
}
