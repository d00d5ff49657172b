//! TLS settings of a connection ([`TlsOptions`]): trusted roots, a client
//! certificate, the server name; and their checks.

use std::fmt;
use std::path::PathBuf;

use super::invalid;
use crate::Error;

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The operating system's trust store (the default).
    #[default]
    System,
    /// A PEM file of CA certificates.
    CaFile(PathBuf),
    /// PEM text of CA certificates.
    CaPem(Vec<u8>),
}

/// A client certificate and its private key, for servers that check them.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCert {
    /// PEM files: the certificate chain and the private key.
    Files {
        /// PEM file with the certificate chain, leaf first.
        cert: PathBuf,
        /// PEM file with the private key.
        key: PathBuf,
    },
    /// PEM text: the certificate chain and the private key.
    Pem {
        /// PEM certificate chain, leaf first.
        cert: Vec<u8>,
        /// PEM private key.
        key: Vec<u8>,
    },
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCert::Files { cert, key } => f
                .debug_struct("ClientCert::Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            ClientCert::Pem { .. } => f.write_str("ClientCert::Pem(<redacted>)"),
        }
    }
}

/// TLS settings (rustls).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Trusted roots.
    pub roots: TlsRoots,
    /// A client certificate, when the server asks for one.
    pub client_cert: Option<ClientCert>,
    /// The name to send in SNI and to verify the certificate against;
    /// defaults to the host.
    pub server_name: Option<String>,
    /// Accept any server certificate. This turns off the protection TLS
    /// gives against a man in the middle: only for tests and debugging.
    pub dangerously_accept_invalid_certs: bool,
}

/// Checks TLS settings that cannot work (empty paths or PEM texts, a
/// server name that is neither a DNS name nor an IP address).
pub(super) fn validate_tls(tls: &TlsOptions) -> Result<(), Error> {
    let empty = |p: &PathBuf| p.as_os_str().is_empty();
    match &tls.roots {
        TlsRoots::CaFile(path) if empty(path) => {
            return Err(invalid("tls_ca_file", "the path is empty"));
        }
        TlsRoots::CaPem(pem) if pem.is_empty() => {
            return Err(invalid("tls_ca_pem", "the PEM text is empty"));
        }
        _ => {}
    }
    match &tls.client_cert {
        Some(ClientCert::Files { cert, key }) if empty(cert) || empty(key) => {
            return Err(invalid("tls_client_cert", "a path is empty"));
        }
        Some(ClientCert::Pem { cert, key }) if cert.is_empty() || key.is_empty() => {
            return Err(invalid("tls_client_cert", "a PEM text is empty"));
        }
        _ => {}
    }
    if let Some(name) = &tls.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            return Err(invalid(
                "tls_server_name",
                format!("{name:?} is neither a DNS name nor an IP address"),
            ));
        }
    }
    Ok(())
}
