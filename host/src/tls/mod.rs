//! The rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN), built from the
//! certificate files that `config::tls::TlsSettings` names. Building it reads files and starts no thread, so the
//! arbiter validates the files with it before any fork (and again on HUP), and each worker
//! builds its own at boot.
pub mod x509;

use crate::config::tls::{ClientAuth, HttpProtocols, TlsSettings};
use anyhow::{anyhow, bail, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A built server configuration and the warnings worth logging once.
pub struct Built {
    pub config: Arc<ServerConfig>,
    pub warnings: Vec<String>,
}

/// Reads and checks the certificate, key and CA files `tls` names: one error naming the setting
/// and the problem (unreadable, no certificate, expired, key mismatch), else the warnings worth
/// logging once. Pure apart from reading the files: starts no thread, changes nothing; call it
/// before a fork and when preparing a reload.
pub fn validate_tls_files(tls: &TlsSettings, protocols: HttpProtocols) -> Result<Vec<String>> {
    Ok(server_config(tls, protocols)?.warnings)
}

/// Builds the rustls configuration for `tls` offering `protocols` by ALPN.
pub fn server_config(tls: &TlsSettings, protocols: HttpProtocols) -> Result<Built> {
    let mut warnings = Vec::new();
    let provider = Arc::new(provider(tls.ciphers.as_deref(), &mut warnings));
    let chain = read_certificates(&tls.certfile, "--certfile")?;
    check_validity(&chain[0], &tls.certfile)?;
    let key_path = tls.keyfile.as_deref().unwrap_or(&tls.certfile);
    let key_flag = if tls.keyfile.is_some() { "--keyfile" } else { "--certfile (no --keyfile given)" };
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| anyhow!("{key_flag} {}: cannot read a private key from it: {e}", key_path.display()))?;

    let versions = versions_for(&provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .context("no usable TLS version with these --ciphers")?;
    let builder = match (tls.client_auth, &tls.ca_certs) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (auth, ca) => {
            let ca = ca.as_deref().context("--cert-reqs 1 or 2 needs --ca-certs FILE")?;
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca, "--ca-certs")? {
                roots.add(cert).map_err(|e| anyhow!("--ca-certs {}: unusable CA certificate: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if auth == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
            let verifier = verifier.build().map_err(|e| anyhow!("--ca-certs {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "{key_flag} {}: the private key does not match the certificate in --certfile {}",
            key_path.display(),
            tls.certfile.display()
        ),
        e => anyhow!("{key_flag} {}: unusable private key: {e}", key_path.display()),
    })?;
    if protocols.h2 {
        config.alpn_protocols.push(b"h2".to_vec());
    }
    if protocols.h1 {
        config.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(Built { config: Arc::new(config), warnings })
}

fn read_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("{flag} {}: cannot read certificates from it: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

/// Refuses a certificate that is expired or not valid yet.
fn check_validity(cert: &CertificateDer<'_>, path: &Path) -> Result<()> {
    let (not_before, not_after) =
        x509::validity(cert).with_context(|| format!("--certfile {}: cannot read the certificate", path.display()))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let date = |secs: i64| crate::log::format_time(secs as libc::time_t, "%Y-%m-%d %H:%M:%S UTC");
    if now > not_after {
        bail!("--certfile {}: the certificate expired on {}; renew it", path.display(), date(not_after));
    }
    if now < not_before {
        bail!("--certfile {}: the certificate is not valid until {}", path.display(), date(not_before));
    }
    Ok(())
}

/// The TLS versions that have cipher suites left in `provider`.
fn versions_for(provider: &CryptoProvider) -> Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let mut versions = Vec::new();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        if provider.cipher_suites.iter().any(|suite| suite.version() == version) {
            versions.push(version);
        }
    }
    if versions.is_empty() {
        bail!("--ciphers leaves no cipher suite");
    }
    Ok(versions)
}

/// ring's provider, its cipher suites narrowed to `--ciphers` where the names are ones rustls
/// has (IANA names such as TLS_AES_128_GCM_SHA256, or OpenSSL names such as
/// ECDHE-RSA-AES128-GCM-SHA256). Anything else (OpenSSL keywords like HIGH or !aNULL) cannot be
/// honoured and is reported.
fn provider(ciphers: Option<&str>, warnings: &mut Vec<String>) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(ciphers) = ciphers.map(str::trim).filter(|c| !c.is_empty()) else { return provider };
    let mut chosen = Vec::new();
    let mut unknown = Vec::new();
    for name in ciphers.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        let found = provider.cipher_suites.iter().find(|suite| suite_names(suite).iter().any(|n| n == name));
        match found {
            Some(suite) if !chosen.contains(suite) => chosen.push(*suite),
            Some(_) => {}
            None => unknown.push(name),
        }
    }
    if !unknown.is_empty() {
        warnings.push(format!(
            "--ciphers: cannot honour {} (rustls takes only cipher suite names); {}",
            unknown.join(":"),
            if chosen.is_empty() { "using rustls's default suites" } else { "using the named suites only" }
        ));
    }
    if !chosen.is_empty() {
        provider.cipher_suites = chosen;
    }
    provider
}

/// A suite's IANA name (as rustls spells it, and without the TLS13_ prefix) and OpenSSL name.
fn suite_names(suite: &rustls::SupportedCipherSuite) -> Vec<String> {
    let rustls_name = format!("{:?}", suite.suite());
    let iana = rustls_name.replacen("TLS13_", "TLS_", 1);
    let openssl = match iana.strip_prefix("TLS_ECDHE_") {
        Some(rest) => format!("ECDHE_{}", rest.replace("_WITH", ""))
            .replace("AES_128", "AES128")
            .replace("AES_256", "AES256")
            .replace("POLY1305_SHA256", "POLY1305")
            .replace('_', "-"),
        None => iana.clone(),
    };
    vec![rustls_name, iana, openssl]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_map_to_rustls_suites_or_are_reported() {
        let mut warnings = Vec::new();
        let provider = provider(Some("ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_256_GCM_SHA384:HIGH"), &mut warnings);
        let names: Vec<String> = provider.cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect();
        assert_eq!(names, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS13_AES_256_GCM_SHA384"]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("HIGH"), "{warnings:?}");
    }
}
