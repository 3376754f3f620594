//! The rustls client configuration of an `https` probe, built once from the
//! validated `tls` section: files are read here and only here.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tandem_config::Tls;

use crate::error::io_text;
use crate::HealthError;

/// What an `https` probe needs: the shared client config and the name to verify.
#[derive(Debug, Clone)]
pub(crate) struct TlsProbe {
    pub(crate) config: Arc<ClientConfig>,
    /// `None`: the backend's IP address is the name.
    pub(crate) server_name: Option<ServerName<'static>>,
}

impl TlsProbe {
    pub(crate) fn new(tls: &Tls) -> Result<Self, HealthError> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = if tls.verify {
            builder.with_root_certificates(roots(tls.ca_file.as_deref())?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
        };
        let mut config = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let chain = certificates("cert_file", cert)?;
                let private_key = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|source| HealthError::ClientAuth {
                        cert: cert.clone(),
                        key: key.clone(),
                        source,
                    })?
            }
            // The config validator requires both or neither.
            _ => builder.with_no_client_auth(),
        };
        // The probe speaks HTTP/1.1 only; say so, so that a server that
        // prefers h2 (kube-apiserver does) does not pick it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = match &tls.server_name {
            Some(name) => Some(
                ServerName::try_from(name.as_str())
                    .map(|n| n.to_owned())
                    .map_err(|_| HealthError::ServerName(name.clone()))?,
            ),
            None => None,
        };
        Ok(TlsProbe {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The name sent as SNI (DNS names only) and verified against the certificate.
    pub(crate) fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }
}

fn file_error(key: &'static str, path: &Path, message: impl ToString) -> HealthError {
    HealthError::File {
        key,
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn pem_error(key: &'static str, path: &Path, e: rustls_pki_types::pem::Error) -> HealthError {
    match e {
        rustls_pki_types::pem::Error::Io(io) => file_error(key, path, io_text(&io)),
        other => file_error(key, path, format!("not valid PEM: {other}")),
    }
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, HealthError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(
            key,
            path,
            "no `BEGIN CERTIFICATE` block in the file",
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, HealthError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => file_error(
            "key_file",
            path,
            "no PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key in the file",
        ),
        other => pem_error("key_file", path, other),
    })
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, HealthError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates("ca_file", path)? {
                store
                    .add(cert)
                    .map_err(|e| file_error("ca_file", path, format!("bad certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(HealthError::NoSystemRoots(why));
            }
        }
    }
    Ok(store)
}

/// `verify: false`: any certificate chain and name are accepted, but the
/// handshake signatures are still checked, so the peer must hold the private
/// key of the certificate it shows. That is what `curl -k` does.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tls() -> Tls {
        Tls {
            verify: true,
            ca_file: None,
            server_name: None,
            cert_file: None,
            key_file: None,
        }
    }

    #[test]
    fn missing_ca_file_is_an_error_naming_the_path() {
        let t = Tls {
            ca_file: Some(PathBuf::from("/nonexistent/ca.crt")),
            ..tls()
        };
        let e = TlsProbe::new(&t).unwrap_err().to_string();
        assert_eq!(
            e,
            "tls.ca_file `/nonexistent/ca.crt`: no such file or directory"
        );
    }

    #[test]
    fn ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let t = Tls {
            ca_file: Some(path.clone()),
            ..tls()
        };
        let e = TlsProbe::new(&t).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("no `BEGIN CERTIFICATE`"), "{e}");
    }

    #[test]
    fn key_file_without_a_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        let cert = dir.path().join("c.crt");
        let key = dir.path().join("c.key");
        std::fs::write(&cert, ca.cert.pem()).unwrap();
        std::fs::write(&key, ca.cert.pem()).unwrap();
        let t = Tls {
            verify: false,
            cert_file: Some(cert),
            key_file: Some(key.clone()),
            ..tls()
        };
        let e = TlsProbe::new(&t).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("tls.key_file `{}`", key.display())),
            "{e}"
        );
    }

    #[test]
    fn bad_server_name_is_an_error() {
        let t = Tls {
            verify: false,
            server_name: Some("not a name!".to_owned()),
            ..tls()
        };
        let e = TlsProbe::new(&t).unwrap_err().to_string();
        assert!(e.contains("`not a name!`"), "{e}");
    }
}
