//! TLS for connections: rustls in user space over glommio's `TcpStream`.
//!
//! How it works here: the socket is still a plain glommio `TcpStream`, whose
//! bytes go through the same `send`/`recv` calls as an unencrypted
//! connection; rustls only sits on top of it (through `futures-rustls`) and
//! encrypts and decrypts in user space. Nothing in the kernel or in io_uring
//! knows about TLS.
//!
//! One thing follows for callers: a write into the TLS stream may stay in
//! rustls' buffer as plaintext or as an unsent record, so after writing a
//! batch of commands the caller must `flush()` the stream, or the bytes may
//! never reach the server.
//!
//! This module builds the rustls [`ClientConfig`] from [`TlsOptions`]
//! (trusted roots, an optional client certificate, the "accept anything"
//! switch for tests), picks the server name sent in SNI and checked in the
//! certificate, and runs the handshake. The crypto provider is always
//! rustls' `ring` provider, passed explicitly, so no process-wide default
//! provider has to be installed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures_lite::{AsyncRead, AsyncWrite};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::Error;
use crate::config::{ClientCert, TlsOptions, TlsRoots};

/// Builds the rustls client configuration for `opts`.
///
/// Roots come from the system store, a CA PEM file or PEM bytes. When
/// `dangerously_accept_invalid_certs` is set the roots are not loaded at all
/// (nothing would use them): a verifier that accepts any certificate is
/// installed instead, and a warning is logged. Every failure is an
/// [`Error::Tls`] naming what could not be loaded and why.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("cannot set up the TLS protocol versions: {e}")))?;

    let builder = if opts.dangerously_accept_invalid_certs {
        tracing::warn!(
            "TLS certificate verification is turned off (dangerously_accept_invalid_certs): \
             any server certificate is accepted, so the connection is open to a man in the middle"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(&provider)))
    } else {
        builder.with_root_certificates(root_store(&opts.roots)?)
    };

    let config = match &opts.client_cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let (chain, key, what) = load_client_cert(cert)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::Tls(format!("invalid client certificate or key ({what}): {e}"))
            })?
        }
    };
    Ok(Arc::new(config))
}

/// The name sent in SNI and checked against the server certificate:
/// `opts.server_name` when set, otherwise `host`. An IP literal (brackets
/// around an IPv6 address allowed) becomes an IP-address server name.
pub(crate) fn server_name(opts: &TlsOptions, host: &str) -> Result<ServerName<'static>, Error> {
    let name = opts.server_name.as_deref().unwrap_or(host);
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned())
        .map_err(|e| Error::Tls(format!("invalid TLS server name {name:?}: {e}")))
}

/// Runs the TLS handshake over `stream` (a connected socket) and returns the
/// encrypted stream. A failure is an [`Error::Tls`] carrying rustls' reason
/// (for example "invalid peer certificate: UnknownIssuer"). There is no
/// deadline here: the caller wraps this in its own.
pub(crate) async fn handshake<S>(
    stream: S,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<futures_rustls::client::TlsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shown = name.to_str().into_owned();
    futures_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| Error::Tls(format!("TLS handshake with {shown} failed: {e}")))
}

/// The trust anchors for `roots`.
fn root_store(roots: &TlsRoots) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match roots {
        TlsRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::debug!("while loading the system's root certificates: {err}");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!("ignored {ignored} unusable system root certificates");
            }
            if added == 0 {
                let why = match found.errors.first() {
                    Some(err) => format!(" ({err})"),
                    None => String::new(),
                };
                return Err(Error::Tls(format!(
                    "no usable root certificate found in the system's trust store{why}; \
                     give a CA file (TlsRoots::CaFile) or CA PEM (TlsRoots::CaPem) instead"
                )));
            }
        }
        TlsRoots::CaFile(path) => {
            let what = format!("CA file {}", path.display());
            add_ca_pem(&mut store, &read_file(path, "CA file")?, &what)?;
        }
        TlsRoots::CaPem(pem) => add_ca_pem(&mut store, pem, "the CA PEM")?,
    }
    Ok(store)
}

/// Adds every CA certificate of `pem` to `store`; `what` names the source
/// in errors. Fails when there is no usable certificate.
fn add_ca_pem(store: &mut RootCertStore, pem: &[u8], what: &str) -> Result<(), Error> {
    let certs = parse_certs(pem, what)?;
    let count = certs.len();
    let (added, ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::Tls(format!(
            "no certificate in {what} can be used as a trust anchor ({count} found, none parsable)"
        )));
    }
    if ignored > 0 {
        tracing::warn!(
            "ignored {ignored} of the {count} certificates in {what}: they cannot be parsed"
        );
    }
    Ok(())
}

/// The certificate chain, private key and a description of where they came
/// from, for errors.
fn load_client_cert(
    cert: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), Error> {
    match cert {
        ClientCert::Files { cert, key } => {
            let cert_what = format!("client certificate file {}", cert.display());
            let key_what = format!("client key file {}", key.display());
            let chain = parse_certs(&read_file(cert, "client certificate file")?, &cert_what)?;
            let key_der = parse_key(&read_file(key, "client key file")?, &key_what)?;
            Ok((chain, key_der, format!("{cert_what}, {key_what}")))
        }
        ClientCert::Pem { cert, key } => {
            let chain = parse_certs(cert, "the client certificate PEM")?;
            let key_der = parse_key(key, "the client key PEM")?;
            Ok((chain, key_der, "client certificate and key PEM".to_owned()))
        }
    }
}

/// Reads a whole file; the error names the file (`what` says what it is
/// for) and carries the OS error.
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Tls(format!("cannot read {what} {}: {e}", path.display())))
}

/// Every `CERTIFICATE` block of `pem`; other blocks are skipped. Fails on
/// malformed PEM and when there is no certificate at all.
fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("cannot parse {what} as PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "no certificate found in {what} (expected a PEM \"BEGIN CERTIFICATE\" block)"
        )));
    }
    Ok(certs)
}

/// The first private key of `pem`: PKCS#8 (`PRIVATE KEY`), PKCS#1
/// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => Error::Tls(format!(
            "no private key found in {what} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)"
        )),
        e => Error::Tls(format!("cannot parse {what} as a PEM private key: {e}")),
    })
}

/// A certificate verifier for `dangerously_accept_invalid_certs`: any
/// server certificate is accepted, whoever signed it and whatever name it
/// carries. The handshake signatures are still checked with the provider's
/// algorithms, so the peer must hold the key of the certificate it sent.
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    /// A verifier using `provider`'s signature algorithms.
    fn new(provider: &CryptoProvider) -> AcceptAnyServerCert {
        AcceptAnyServerCert {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl fmt::Debug for AcceptAnyServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcceptAnyServerCert")
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::path::PathBuf;
    use std::thread::JoinHandle;
    use std::time::Duration;

    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use glommio::{LocalExecutorBuilder, Placement};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    use super::*;

    /// A certificate (PEM) and its key (PKCS#8 PEM).
    struct Pair {
        cert: String,
        key: KeyPair,
    }

    /// A CA, a server certificate for localhost/127.0.0.1/::1 and a client
    /// certificate signed by it, and an unrelated CA.
    struct Pki {
        ca: String,
        server: Pair,
        client: Pair,
        other_ca: String,
    }

    fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    }

    fn new_leaf(
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        issuer: &Issuer<'static, KeyPair>,
    ) -> Pair {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "redcore tls test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key,
        }
    }

    impl Pki {
        fn new() -> Pki {
            let (ca, issuer) = new_ca("redcore tls.rs test CA");
            let (other_ca, _) = new_ca("redcore tls.rs unrelated CA");
            let server = new_leaf(
                &["localhost", "127.0.0.1", "::1"],
                ExtendedKeyUsagePurpose::ServerAuth,
                &issuer,
            );
            let client = new_leaf(
                &["redcore-client"],
                ExtendedKeyUsagePurpose::ClientAuth,
                &issuer,
            );
            Pki {
                ca,
                server,
                client,
                other_ca,
            }
        }
    }

    fn opts(roots: TlsRoots) -> TlsOptions {
        TlsOptions {
            roots,
            ..TlsOptions::default()
        }
    }

    fn tls_message(result: Result<impl fmt::Debug, Error>) -> String {
        match result {
            Err(Error::Tls(message)) => message,
            other => panic!("expected Error::Tls, got {other:?}"),
        }
    }

    fn write_file(dir: &tempfile::TempDir, name: &str, text: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn ca_file_and_ca_pem_are_loaded() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        // Two CAs in one file, with a key block in between that is skipped.
        let bundle = format!(
            "{}{}{}",
            pki.ca,
            pki.server.key.serialize_pem(),
            pki.other_ca
        );
        let path = write_file(&dir, "ca.pem", bundle.as_bytes());
        client_config(&opts(TlsRoots::CaFile(path))).unwrap();
        client_config(&opts(TlsRoots::CaPem(pki.ca.into_bytes()))).unwrap();
    }

    #[test]
    fn missing_ca_file_names_the_file_and_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.pem");
        let message = tls_message(client_config(&opts(TlsRoots::CaFile(path.clone()))));
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("No such file"), "{message}");
    }

    #[test]
    fn ca_file_without_certificates_is_an_error() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(
            &dir,
            "key-only.pem",
            pki.server.key.serialize_pem().as_bytes(),
        );
        let message = tls_message(client_config(&opts(TlsRoots::CaFile(path.clone()))));
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("no certificate found"), "{message}");

        let empty = write_file(&dir, "empty.pem", b"not pem at all\n");
        let message = tls_message(client_config(&opts(TlsRoots::CaFile(empty))));
        assert!(message.contains("no certificate found"), "{message}");

        let message = tls_message(client_config(&opts(TlsRoots::CaPem(Vec::new()))));
        assert!(
            message.contains("no certificate found in the CA PEM"),
            "{message}"
        );
    }

    #[test]
    fn malformed_pem_is_an_error() {
        let pem = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let message = tls_message(client_config(&opts(TlsRoots::CaPem(pem.to_vec()))));
        assert!(message.contains("cannot parse the CA PEM"), "{message}");
        let unterminated = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        let message = tls_message(client_config(&opts(TlsRoots::CaPem(unterminated.to_vec()))));
        assert!(message.contains("cannot parse the CA PEM"), "{message}");
    }

    #[test]
    fn unparsable_certificate_is_an_error() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let message = tls_message(client_config(&opts(TlsRoots::CaPem(pem.to_vec()))));
        assert!(
            message.contains("can be used as a trust anchor"),
            "{message}"
        );
    }

    #[test]
    fn system_roots_load_or_say_what_to_do() {
        match client_config(&opts(TlsRoots::System)) {
            Ok(_) => {}
            Err(Error::Tls(message)) => {
                assert!(message.contains("system's trust store"), "{message}");
                assert!(message.contains("CA file"), "{message}");
            }
            Err(other) => panic!("expected Error::Tls, got {other:?}"),
        }
    }

    #[test]
    fn client_certificate_from_files_and_pem() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let cert = write_file(&dir, "client.crt", pki.client.cert.as_bytes());
        let key = write_file(
            &dir,
            "client.key",
            pki.client.key.serialize_pem().as_bytes(),
        );
        let mut o = opts(TlsRoots::CaPem(pki.ca.clone().into_bytes()));
        o.client_cert = Some(ClientCert::Files { cert, key });
        client_config(&o).unwrap();
        o.client_cert = Some(ClientCert::Pem {
            cert: pki.client.cert.clone().into_bytes(),
            key: pki.client.key.serialize_pem().into_bytes(),
        });
        client_config(&o).unwrap();
    }

    #[test]
    fn client_key_in_sec1_form_is_accepted() {
        let pki = Pki::new();
        let sec1 = pkcs8_private_key(&pki.client.key.serialize_der());
        let mut o = opts(TlsRoots::CaPem(pki.ca.into_bytes()));
        o.client_cert = Some(ClientCert::Pem {
            cert: pki.client.cert.into_bytes(),
            key: pem("EC PRIVATE KEY", &sec1).into_bytes(),
        });
        client_config(&o).unwrap();
    }

    #[test]
    fn bad_client_keys_are_errors() {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let cert = write_file(&dir, "client.crt", pki.client.cert.as_bytes());
        let ca = TlsRoots::CaPem(pki.ca.clone().into_bytes());

        // A key file holding no key.
        let no_key = write_file(&dir, "client.key", pki.client.cert.as_bytes());
        let mut o = opts(ca.clone());
        o.client_cert = Some(ClientCert::Files {
            cert: cert.clone(),
            key: no_key.clone(),
        });
        let message = tls_message(client_config(&o));
        assert!(message.contains("no private key found"), "{message}");
        assert!(message.contains(&no_key.display().to_string()), "{message}");

        // A missing key file.
        let missing = dir.path().join("missing.key");
        o.client_cert = Some(ClientCert::Files {
            cert: cert.clone(),
            key: missing.clone(),
        });
        let message = tls_message(client_config(&o));
        assert!(message.contains("cannot read client key file"), "{message}");
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );

        // A key block whose contents are not a key.
        o.client_cert = Some(ClientCert::Pem {
            cert: pki.client.cert.clone().into_bytes(),
            key: pem("RSA PRIVATE KEY", b"definitely not a key").into_bytes(),
        });
        let message = tls_message(client_config(&o));
        assert!(
            message.contains("invalid client certificate or key"),
            "{message}"
        );

        // A valid key that belongs to another certificate.
        let wrong = write_file(
            &dir,
            "server.key",
            pki.server.key.serialize_pem().as_bytes(),
        );
        o.client_cert = Some(ClientCert::Files {
            cert: cert.clone(),
            key: wrong,
        });
        let message = tls_message(client_config(&o));
        assert!(
            message.contains("invalid client certificate or key"),
            "{message}"
        );
        assert!(message.contains(&cert.display().to_string()), "{message}");
    }

    #[test]
    fn accept_invalid_certs_does_not_load_roots() {
        let mut o = opts(TlsRoots::CaFile("/nonexistent/ca.pem".into()));
        o.dangerously_accept_invalid_certs = true;
        client_config(&o).unwrap();
    }

    #[test]
    fn server_names() {
        let mut o = TlsOptions::default();
        let name =
            |o: &TlsOptions, host: &str| server_name(o, host).map(|n| n.to_str().into_owned());
        assert_eq!(name(&o, "redis.example.com").unwrap(), "redis.example.com");
        assert!(matches!(
            server_name(&o, "10.1.2.3").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(&o, "::1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(&o, "[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(&o, "host.local").unwrap(),
            ServerName::DnsName(_)
        ));
        let message = tls_message(server_name(&o, "not a host!"));
        assert!(message.contains("not a host!"), "{message}");
        assert!(matches!(server_name(&o, ""), Err(Error::Tls(_))));
        o.server_name = Some("cache.internal".into());
        assert_eq!(name(&o, "10.1.2.3").unwrap(), "cache.internal");
    }

    /// The contents of the `privateKey` OCTET STRING of a PKCS#8 key: for an
    /// EC key that is its SEC1 `ECPrivateKey`.
    fn pkcs8_private_key(der: &[u8]) -> Vec<u8> {
        fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
            let tag = input[0];
            let (len, head) = match input[1] {
                n if n < 0x80 => (n as usize, 2),
                0x81 => (input[2] as usize, 3),
                0x82 => ((input[2] as usize) << 8 | input[3] as usize, 4),
                n => panic!("unexpected DER length byte {n:#x}"),
            };
            (tag, &input[head..head + len], &input[head + len..])
        }
        let (tag, info, _) = tlv(der);
        assert_eq!(tag, 0x30);
        let (_version, rest) = {
            let (_, v, r) = tlv(info);
            (v, r)
        };
        let (_, _algorithm, rest) = tlv(rest);
        let (tag, key, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        key.to_vec()
    }

    /// PEM text with `label` around `der`.
    fn pem(label: &str, der: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    // --- Loopback handshakes: a rustls server on a std thread, the client
    // --- (`handshake`) on a glommio executor over a glommio TcpStream.

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_config(pki: &Pki, require_client_cert: bool) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = vec![CertificateDer::from_pem_slice(pki.server.cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.server.key.serialize_pem().as_bytes()).unwrap();
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }

    /// Serves one connection: reads one line and echoes it back with a
    /// `+` in front. The thread's result is the line, or the error.
    fn serve_once(config: Arc<ServerConfig>) -> (SocketAddr, JoinHandle<Result<String, String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (socket, _) = listener.accept().map_err(|e| e.to_string())?;
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
            let mut stream = BufReader::new(StreamOwned::new(conn, socket));
            let mut line = String::new();
            stream.read_line(&mut line).map_err(|e| e.to_string())?;
            let stream = stream.get_mut();
            stream
                .write_all(format!("+{line}").as_bytes())
                .map_err(|e| e.to_string())?;
            stream.flush().map_err(|e| e.to_string())?;
            stream.conn.send_close_notify();
            stream.flush().map_err(|e| e.to_string())?;
            Ok(line)
        });
        (addr, thread)
    }

    /// Connects with a glommio TcpStream, runs `handshake`, sends "ping\n"
    /// and returns the reply line.
    fn ping(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<String, Error> {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(move || async move {
                let stream = glommio::net::TcpStream::connect(addr)
                    .await
                    .map_err(std::io::Error::from)?;
                let mut tls = handshake(stream, config, name).await?;
                tls.write_all(b"ping\n").await?;
                tls.flush().await?;
                let mut reply = Vec::new();
                let mut buf = [0u8; 64];
                while !reply.ends_with(b"\n") {
                    let n = tls.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    reply.extend_from_slice(&buf[..n]);
                }
                Ok(String::from_utf8(reply).unwrap())
            })
            .unwrap()
            .join()
            .unwrap()
    }

    fn localhost() -> ServerName<'static> {
        server_name(&TlsOptions::default(), "localhost").unwrap()
    }

    #[test]
    fn handshake_with_the_right_ca() {
        let pki = Pki::new();
        let (addr, server) = serve_once(server_config(&pki, false));
        let config = client_config(&opts(TlsRoots::CaPem(pki.ca.clone().into_bytes()))).unwrap();
        assert_eq!(ping(addr, config, localhost()).unwrap(), "+ping\n");
        assert_eq!(server.join().unwrap().unwrap(), "ping\n");

        // The IP address is in the certificate too.
        let (addr, server) = serve_once(server_config(&pki, false));
        let config = client_config(&opts(TlsRoots::CaPem(pki.ca.into_bytes()))).unwrap();
        let ip = server_name(&TlsOptions::default(), "127.0.0.1").unwrap();
        assert_eq!(ping(addr, config, ip).unwrap(), "+ping\n");
        server.join().unwrap().unwrap();
    }

    #[test]
    fn handshake_with_a_wrong_ca_fails() {
        let pki = Pki::new();
        let (addr, server) = serve_once(server_config(&pki, false));
        let config = client_config(&opts(TlsRoots::CaPem(pki.other_ca.into_bytes()))).unwrap();
        let message = tls_message(ping(addr, config, localhost()));
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert!(message.contains("localhost"), "{message}");
        assert!(server.join().unwrap().is_err());
    }

    #[test]
    fn accept_invalid_certs_with_a_wrong_ca_succeeds() {
        let pki = Pki::new();
        let (addr, server) = serve_once(server_config(&pki, false));
        let mut o = opts(TlsRoots::CaPem(pki.other_ca.into_bytes()));
        o.dangerously_accept_invalid_certs = true;
        let config = client_config(&o).unwrap();
        let wrong_name = server_name(&TlsOptions::default(), "elsewhere.example").unwrap();
        assert_eq!(ping(addr, config, wrong_name).unwrap(), "+ping\n");
        server.join().unwrap().unwrap();
    }

    #[test]
    fn server_name_mismatch_fails() {
        let pki = Pki::new();
        let (addr, server) = serve_once(server_config(&pki, false));
        let mut o = opts(TlsRoots::CaPem(pki.ca.into_bytes()));
        o.server_name = Some("redis.example.com".into());
        let config = client_config(&o).unwrap();
        let name = server_name(&o, "127.0.0.1").unwrap();
        let message = tls_message(ping(addr, config, name));
        assert!(message.contains("not valid for name"), "{message}");
        assert!(message.contains("redis.example.com"), "{message}");
        assert!(server.join().unwrap().is_err());
    }

    #[test]
    fn client_certificate_is_presented() {
        let pki = Pki::new();
        let (addr, server) = serve_once(server_config(&pki, true));
        let mut o = opts(TlsRoots::CaPem(pki.ca.clone().into_bytes()));
        o.client_cert = Some(ClientCert::Pem {
            cert: pki.client.cert.clone().into_bytes(),
            key: pki.client.key.serialize_pem().into_bytes(),
        });
        let config = client_config(&o).unwrap();
        assert_eq!(ping(addr, config, localhost()).unwrap(), "+ping\n");
        server.join().unwrap().unwrap();

        // Without one the server refuses. With TLS 1.3 the client's side of
        // the handshake is over before the server has checked, so the
        // refusal shows on the first read, as an I/O error.
        let (addr, server) = serve_once(server_config(&pki, true));
        let config = client_config(&opts(TlsRoots::CaPem(pki.ca.into_bytes()))).unwrap();
        let err = ping(addr, config, localhost()).unwrap_err();
        assert!(err.to_string().contains("CertificateRequired"), "{err}");
        assert!(server.join().unwrap().is_err());
    }
}
