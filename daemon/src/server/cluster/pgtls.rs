//! TLS to PostgreSQL: every connection a node makes to the database (start-up, the
//! pool, the listener) goes through one connector. The connection string's `sslmode`
//! decides whether TLS is used (`disable`: never; `prefer`, the default: when the
//! server offers it; `require`: always); when it is, the database's certificate must be
//! valid for its host name and signed by a CA of the system's or of
//! `server.cluster.postgres_ca_file`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::conn::tls::provider;

/// The connector, trusting the system's CAs and those in `ca_file` (PEM).
pub fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is one CA less, not an error.
        let _ = roots.add(cert);
    }
    if let Some(file) = ca_file {
        let named = || {
            format!(
                "the CA file {} (config key server.cluster.postgres_ca_file)",
                file.display()
            )
        };
        let pem = std::fs::read(file).with_context(|| format!("cannot read {}", named()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.with_context(|| format!("{} is not PEM", named()))?;
            roots
                .add(cert)
                .with_context(|| format!("{} holds a certificate rustls cannot use", named()))?;
            added += 1;
        }
        if added == 0 {
            bail!(
                "{} holds no certificate; put the PEM certificate of the CA that signed the \
                 database's certificate there",
                named()
            );
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS to PostgreSQL")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// What to add to a connection error that may come from the certificate check.
pub fn hint(e: &anyhow::Error) -> &'static str {
    let text = format!("{e:#}").to_lowercase();
    if text.contains("certificate") || text.contains("tls") {
        "; if the database's TLS certificate is signed by a CA of your own, name its PEM \
         certificate in server.cluster.postgres_ca_file"
    } else {
        ""
    }
}
