//! TLS on a worker's TCP connections: the acceptor, built at boot from the certificate files (by
//! `crate::tls`, which the arbiter also uses to check them), and the handshake, run in the
//! connection's own task under `--handshake-timeout`.
use crate::config::settings::Settings;
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

/// A worker's TLS acceptor.
pub struct TlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: Duration,
}

/// What a finished handshake settled.
pub struct Negotiated {
    /// The client chose HTTP/2 by ALPN.
    pub h2: bool,
    /// The verified client certificate's subject.
    pub client_subject: Option<Arc<str>>,
}

impl TlsAcceptor {
    /// The acceptor for `settings`, or `None` without `--certfile`. A file that went bad since the
    /// arbiter checked it fails the boot (the arbiter then keeps the previous generation).
    pub fn load(settings: &Settings) -> Result<Option<TlsAcceptor>> {
        let Some(tls) = &settings.tls else { return Ok(None) };
        let built = crate::tls::server_config(tls, settings.protocols(true))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(built.config);
        Ok(Some(TlsAcceptor { acceptor, timeout: settings.handshake_timeout }))
    }

    /// Runs the handshake; `None` (the connection is dropped) if it fails or times out.
    pub async fn handshake<I>(&self, io: I, remote: &str) -> Option<(TlsStream<I>, Negotiated)>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = match tokio::time::timeout(self.timeout, self.acceptor.accept(io)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                crate::log_debug!("TLS handshake with {remote} failed: {e}");
                return None;
            }
            Err(_) => {
                crate::log_debug!("TLS handshake with {remote} timed out (--handshake-timeout)");
                return None;
            }
        };
        let (_, session) = stream.get_ref();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let client_subject = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| crate::tls::x509::subject(cert))
            .map(Arc::from);
        Some((stream, Negotiated { h2, client_subject }))
    }
}
