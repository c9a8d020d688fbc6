//! TLS on every device-to-server connection (rustls, TLS 1.3, the aws-lc-rs provider).
//!
//! The server makes its key and a self-signed certificate at first start, in
//! `DATA_DIR/.filesync/tls/` (the key 0600). Devices do not use certificate authorities
//! or names: they pin the SHA-256 of the server's certificate ([`Fingerprint`]). The
//! client's [`PinVerifier`] accepts exactly the pinned certificate, or any on first use
//! (recording which it saw), and still checks the handshake signatures, so only the
//! holder of the pinned certificate's key gets through.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use filesync_proto::auth::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::fs::chunk::sha256;
use crate::fs::private;

/// The name the certificate carries and the client asks for; never checked.
const SERVER_NAME: &str = "filesync";

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn fingerprint(cert: &[u8]) -> Fingerprint {
    Fingerprint(sha256(cert).0)
}

/// The server's TLS identity: its config for accepting connections and the fingerprint
/// devices pin.
pub struct ServerIdentity {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: Fingerprint,
}

impl ServerIdentity {
    /// Loads the key and certificate from `dir`, making both the first time.
    pub fn load_or_create(dir: &Path) -> Result<ServerIdentity> {
        let (cert_file, key_file) = (dir.join("cert.der"), dir.join("key.der"));
        if !cert_file.exists() || !key_file.exists() {
            private::create_dir(dir)?;
            let (cert, key) = ServerIdentity::generate()?;
            private::write_file(&key_file, &key)?;
            private::write_file(&cert_file, &cert)?;
            tracing::info!(dir = %dir.display(), "made the server's TLS key and certificate");
        }
        let read =
            |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        ServerIdentity::from_der(read(&cert_file)?, read(&key_file)?).with_context(|| {
            format!(
                "the server's TLS key {} does not fit its certificate {}; remove both \
                 to make new ones (devices will then have to trust the new fingerprint)",
                key_file.display(),
                cert_file.display()
            )
        })
    }

    /// A new self-signed certificate and its key (PKCS#8), both DER.
    pub fn generate() -> Result<(Vec<u8>, Vec<u8>)> {
        let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .context("cannot make the server's TLS certificate")?;
        Ok((made.cert.der().to_vec(), made.signing_key.serialize_der()))
    }

    /// The identity of a certificate and its key (PKCS#8), both DER.
    pub fn from_der(cert: Vec<u8>, key: Vec<u8>) -> Result<ServerIdentity> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let fingerprint = fingerprint(&cert);
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert)], key)
            .context("the TLS key does not fit its certificate")?;
        Ok(ServerIdentity {
            config: Arc::new(config),
            fingerprint,
        })
    }
}

/// What the client saw of the server's certificate during one handshake.
pub type Seen = Arc<Mutex<Option<Fingerprint>>>;

/// Accepts the pinned certificate only (any certificate when `pin` is `None`: trust on
/// first use), recording the fingerprint presented in `seen`.
#[derive(Debug)]
pub struct PinVerifier {
    pin: Option<Fingerprint>,
    seen: Seen,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(presented);
        match self.pin {
            Some(pin) if pin != presented => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config that accepts only `pin` (or anything, on first use), and where the
/// presented fingerprint will be recorded.
pub fn client_config(pin: Option<Fingerprint>) -> Result<(Arc<rustls::ClientConfig>, Seen)> {
    let seen = Seen::default();
    let provider = provider();
    let verifier = PinVerifier {
        pin,
        seen: seen.clone(),
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((Arc::new(config), seen))
}

/// The name sent in the handshake; the verifier ignores it.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Runs one TLS exchange between a server with `identity` and a client pinning `pin`.
    async fn exchange(identity: &ServerIdentity, pin: Option<Fingerprint>) -> (Result<()>, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"hi").await;
                let _ = tls.shutdown().await;
            }
        });
        let (config, seen) = client_config(pin).unwrap();
        let result = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name(), tcp)
                .await?;
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await?;
            anyhow::ensure!(got == b"hi", "got {got:?}");
            Ok(())
        }
        .await;
        let _ = server.await;
        (result, seen)
    }

    #[tokio::test]
    async fn only_the_pinned_certificate_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let identity = ServerIdentity::load_or_create(dir.path()).unwrap();
        let (first_use, seen) = exchange(&identity, None).await;
        first_use.unwrap();
        assert_eq!(*seen.lock().unwrap(), Some(identity.fingerprint));
        exchange(&identity, Some(identity.fingerprint))
            .await
            .0
            .unwrap();
        let (wrong, seen) = exchange(&identity, Some(Fingerprint([1; 32]))).await;
        assert!(wrong.is_err());
        assert_eq!(*seen.lock().unwrap(), Some(identity.fingerprint));
    }

    #[test]
    fn the_identity_is_made_once_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = ServerIdentity::load_or_create(&tls).unwrap();
        let again = ServerIdentity::load_or_create(&tls).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls.join("key.der"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
