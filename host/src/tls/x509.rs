//! The little of X.509 rustcorn reads itself: a certificate's validity period (to refuse an
//! expired certificate at startup) and its subject (the client-certificate access-log atom).
//! A minimal DER walker: rustls verifies certificates; this only reads two fields of one.

/// One DER element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The fields of a TBSCertificate up to the subject: (validity, subject) contents.
fn validity_and_subject(cert_der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (SEQUENCE, certificate, _) = element(cert_der)? else { return None };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else { return None };
    let (tag, _, rest) = element(tbs)?;
    if tag == EXPLICIT_VERSION {
        tbs = rest;
        let (_serial, _, rest) = element(tbs)?;
        tbs = rest;
    } else {
        tbs = rest; // that was the serial number
    }
    let (_signature, _, rest) = element(tbs)?;
    let (_issuer, _, rest) = element(rest)?;
    let (SEQUENCE, validity, rest) = element(rest)? else { return None };
    let (SEQUENCE, subject, _) = element(rest)? else { return None };
    Some((validity, subject))
}

/// `(not_before, not_after)` as seconds since the Unix epoch.
pub fn validity(cert_der: &[u8]) -> Option<(i64, i64)> {
    let (validity, _) = validity_and_subject(cert_der)?;
    let (tag, not_before, rest) = element(validity)?;
    let not_before = parse_time(tag, not_before)?;
    let (tag, not_after, _) = element(rest)?;
    Some((not_before, parse_time(tag, not_after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146097 + day_of_era - 719468
}

/// The subject as an RFC 4514 string, most specific first: `CN=client,O=Example`.
pub fn subject(cert_der: &[u8]) -> Option<String> {
    let (_, mut name) = validity_and_subject(cert_der)?;
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (SET, mut set, rest) = element(name)? else { return None };
        name = rest;
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let (SEQUENCE, attribute, rest) = element(set)? else { return None };
            set = rest;
            let (0x06, oid, rest) = element(attribute)? else { return None };
            let (value_tag, value, _) = element(rest)?;
            attributes.push(format!("{}={}", attribute_name(oid), escape(&string_value(value_tag, value))));
        }
        parts.push(attributes.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        other => dotted_oid(other),
    }
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for &byte in oid {
        value = (value << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn string_value(tag: u8, value: &[u8]) -> String {
    match tag {
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = value.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16_lossy(&units)
        }
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

/// RFC 4514 escaping, plus control characters as `\XX` so a log line stays one line.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\{:02X}", c as u32 & 0xff)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2524607999));
        assert_eq!(parse_time(0x18, b"20260101000000Z"), Some(days_from_civil(2026, 1, 1) * 86400));
        assert_eq!(parse_time(0x17, b"2601"), None);
    }

    #[test]
    fn oids_and_values_render_as_rfc4514() {
        assert_eq!(attribute_name(&[0x55, 0x04, 0x03]), "CN");
        assert_eq!(dotted_oid(&[0x2a, 0x86, 0x48]), "1.2.840");
        assert_eq!(escape("a,b\n"), "a\\,b\\0A");
        assert_eq!(element(&[0x30, 0x81, 0x01, 0x05]), Some((0x30, &[5u8][..], &[][..])));
    }
}
