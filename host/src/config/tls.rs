//! TLS settings as plain data: `--certfile` and friends checked for consistency, and
//! `--http-protocols`. Reading the files and building rustls is the `tls` module's work.
use super::cli::TlsArgs;
use super::settings::{bad, ConfigError};
use std::path::PathBuf;

/// `--cert-reqs`: whether clients must present a certificate (Gunicorn's 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

/// The HTTP versions a connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpProtocols {
    pub h1: bool,
    pub h2: bool,
}

impl HttpProtocols {
    /// `--http-protocols h1,h2`: a comma-separated list of `h1` and `h2`.
    pub fn parse(text: &str) -> Result<HttpProtocols, String> {
        let mut protocols = HttpProtocols { h1: false, h2: false };
        for name in text.split(',').map(str::trim) {
            match name.to_ascii_lowercase().as_str() {
                "h1" | "http/1.1" => protocols.h1 = true,
                "h2" => protocols.h2 = true,
                other => return Err(format!("unknown protocol {other:?}; expected h1, h2 or h1,h2")),
            }
        }
        Ok(protocols)
    }
}

/// `--certfile` and friends, consistent with each other.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub certfile: PathBuf,
    /// The private key; `None` = in the certfile.
    pub keyfile: Option<PathBuf>,
    pub ca_certs: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub ciphers: Option<String>,
}

/// `--certfile`, `--keyfile`, `--ca-certs`, `--cert-reqs`, `--ciphers`: consistent or an error.
/// `None` without `--certfile`.
pub fn tls_settings(args: &TlsArgs) -> Result<Option<TlsSettings>, ConfigError> {
    let client_auth = match args.cert_reqs {
        0 => ClientAuth::None,
        1 => ClientAuth::Optional,
        2 => ClientAuth::Required,
        n => return Err(bad(format!("--cert-reqs must be 0 (none), 1 (optional) or 2 (required) (got {n})"))),
    };
    let Some(certfile) = args.certfile.clone() else {
        if client_auth != ClientAuth::None {
            return Err(bad("--cert-reqs needs TLS: add --certfile (and --keyfile)"));
        }
        return Ok(None);
    };
    if client_auth != ClientAuth::None && args.ca_certs.is_none() {
        return Err(bad(format!(
            "--cert-reqs {}: client certificates need --ca-certs FILE to check them against",
            args.cert_reqs
        )));
    }
    Ok(Some(TlsSettings {
        certfile,
        keyfile: args.keyfile.clone(),
        ca_certs: args.ca_certs.clone(),
        client_auth,
        ciphers: args.ciphers.clone(),
    }))
}

/// `--http-protocols` as given (None = the default, which depends on TLS).
pub fn http_protocols(args: &TlsArgs) -> Result<Option<HttpProtocols>, ConfigError> {
    args.http_protocols
        .as_deref()
        .map(|text| HttpProtocols::parse(text).map_err(|e| bad(format!("--http-protocols {text:?}: {e}"))))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_h1_and_h2() {
        assert_eq!(HttpProtocols::parse("h1,h2"), Ok(HttpProtocols { h1: true, h2: true }));
        assert_eq!(HttpProtocols::parse("h2"), Ok(HttpProtocols { h1: false, h2: true }));
        assert!(HttpProtocols::parse("h3").is_err());
    }
}
