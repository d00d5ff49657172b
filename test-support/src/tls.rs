//! Test-time TLS material generated with rcgen: a CA, a server certificate for
//! 127.0.0.1/localhost and a client certificate signed by it, plus an
//! unrelated second CA (and a client certificate it signed) for "wrong CA"
//! tests. Every item is available as PEM text, DER bytes and a PEM file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One certificate or key, in every form a test may need.
#[derive(Clone, Debug)]
pub struct PemFile {
    /// PEM text.
    pub pem: String,
    /// DER bytes (certificates: X.509; keys: PKCS#8).
    pub der: Vec<u8>,
    /// The PEM file written into the server's temporary directory.
    pub path: PathBuf,
}

/// Certificates and keys for one TLS server.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    /// The CA that signed the server and client certificates.
    pub ca_cert: PemFile,
    /// Server certificate (SANs: localhost, 127.0.0.1, ::1), signed by `ca_cert`.
    pub server_cert: PemFile,
    /// Server private key.
    pub server_key: PemFile,
    /// Client certificate (CN redcore-test-client), signed by `ca_cert`.
    pub client_cert: PemFile,
    /// Client private key.
    pub client_key: PemFile,
    /// An unrelated CA: trusting only this must make the handshake fail.
    pub other_ca_cert: PemFile,
    /// A client certificate signed by `other_ca_cert` (rejected by the server
    /// when it verifies client certificates).
    pub untrusted_client_cert: PemFile,
    /// Key of `untrusted_client_cert`.
    pub untrusted_client_key: PemFile,
}

fn write(dir: &Path, name: &str, pem: String, der: Vec<u8>) -> PemFile {
    let path = dir.join(name);
    std::fs::write(&path, &pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    PemFile { pem, der, path }
}

fn new_ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "redcore tests");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert, Issuer::new(params, key))
}

fn new_leaf(
    names: &[&str],
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'static, KeyPair>,
) -> (rcgen::Certificate, KeyPair) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    (cert, key)
}

impl TlsMaterial {
    /// Generates fresh material and writes the PEM files into `dir`
    /// (ca.crt, server.crt, server.key, client.crt, client.key, other-ca.crt,
    /// untrusted-client.crt, untrusted-client.key).
    pub fn generate(dir: &Path) -> TlsMaterial {
        let (ca, issuer) = new_ca("redcore test CA");
        let (other_ca, other_issuer) = new_ca("redcore unrelated CA");
        let (server, server_key) = new_leaf(
            &["localhost", "127.0.0.1", "::1"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let (client, client_key) = new_leaf(
            &["redcore-test-client"],
            "redcore-test-client",
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        );
        let (bad_client, bad_client_key) = new_leaf(
            &["redcore-untrusted-client"],
            "redcore-untrusted-client",
            ExtendedKeyUsagePurpose::ClientAuth,
            &other_issuer,
        );
        let cert = |name: &str, c: &rcgen::Certificate| write(dir, name, c.pem(), c.der().to_vec());
        let key = |name: &str, k: &KeyPair| write(dir, name, k.serialize_pem(), k.serialize_der());
        TlsMaterial {
            ca_cert: cert("ca.crt", &ca),
            server_cert: cert("server.crt", &server),
            server_key: key("server.key", &server_key),
            client_cert: cert("client.crt", &client),
            client_key: key("client.key", &client_key),
            other_ca_cert: cert("other-ca.crt", &other_ca),
            untrusted_client_cert: cert("untrusted-client.crt", &bad_client),
            untrusted_client_key: key("untrusted-client.key", &bad_client_key),
        }
    }

    /// A rustls client config that trusts `ca_cert` and presents `client_cert`.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        rustls_client_config(&self.ca_cert, Some((&self.client_cert, &self.client_key)))
    }
}

/// A rustls (ring) client config trusting only `ca` and optionally presenting
/// a client certificate.
pub fn rustls_client_config(
    ca: &PemFile,
    client: Option<(&PemFile, &PemFile)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.der.clone()))
        .expect("add CA to root store");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("rustls protocol versions")
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.der.clone())),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}
