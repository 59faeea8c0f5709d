//! TLS for inter-node connections: mutual TLS 1.3 against one cluster CA, under the cookie
//! handshake, switched on by `SWITCHBOARD_TLS_CERT`, `SWITCHBOARD_TLS_KEY` and
//! `SWITCHBOARD_TLS_CA` (all three or none). Without them nothing here runs and links are plain
//! TCP, as before.
//!
//! What is checked: each side presents its certificate chain and verifies the other's against
//! the CA (rustls with the `ring` provider, TLS 1.3 only). A dialer names every peer
//! [`SERVER_NAME`]: node names and addresses change with every container, so the acceptor's
//! certificate must carry the fixed DNS name `switchboard` among its subject alternative names,
//! and a client certificate is checked for its chain only. So the CA decides who belongs to the
//! cluster, and one certificate may serve every node (`deploy/tls/make-certs.sh` makes such a
//! one). Which node a connection reached is still told by the cookie handshake, which runs
//! unchanged inside the TLS session: TLS keeps the traffic private and the cluster closed to
//! anyone without a certificate; the cookie still proves each lane's peer.
//!
//! Why the TLS handshake happens where it does: a TLS session's state lives with the stream, and
//! a tokio stream cannot move from one runtime to another once it is registered with one. A bulk
//! connection's I/O must be the bulk thread's ([`crate::bulk`]), so the acceptor sorts a
//! connection *before* TLS: the dialer writes [`crate::bulk::PREFACE`] in the clear and then
//! starts TLS, and the acceptor peeks the preface on its runtime, hands the raw socket to the
//! bulk thread and accepts TLS there. The preface only routes (it says "bulk", nothing else);
//! a connection that forges or strips it still has to pass TLS and the cookie handshake on
//! whichever server it lands. Ordinary connections are accepted on the node's runtime.
//!
//! A node with TLS refuses a plaintext peer (its HTTP/2 preface is not a ClientHello), and a
//! plaintext node cannot read a TLS node's answer, so the two never link. No secret reaches a
//! log or an error: key file errors name the path and the kind of failure, never the contents.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::NodeConfig;
use crate::error::NodeError;

/// The name a dialer expects in every acceptor's certificate (see the module docs).
pub(crate) const SERVER_NAME: &str = "switchboard";

/// A node's TLS settings, loaded once at start: what it presents and what it trusts.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configs hold the private key.
        f.write_str("Tls { .. }")
    }
}

impl Tls {
    /// The TLS settings `config` names: `None` when it names no files, an error when it names
    /// only some, or when one cannot be read or used.
    pub(crate) fn from_config(config: &NodeConfig) -> Result<Option<Self>, NodeError> {
        match (&config.tls_cert, &config.tls_key, &config.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Self::load(cert, key, ca).map(Some),
            _ => Err(NodeError::Config(
                "TLS needs all of SWITCHBOARD_TLS_CERT, SWITCHBOARD_TLS_KEY and \
                 SWITCHBOARD_TLS_CA, or none of them"
                    .into(),
            )),
        }
    }

    fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, NodeError> {
        let chain = certificates(cert, "SWITCHBOARD_TLS_CERT")?;
        let key = private_key(key)?;
        let mut roots = RootCertStore::empty();
        for authority in certificates(ca, "SWITCHBOARD_TLS_CA")? {
            roots
                .add(authority)
                .map_err(|e| invalid(ca, "SWITCHBOARD_TLS_CA", &e))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| invalid(ca, "SWITCHBOARD_TLS_CA", &e))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| NodeError::Config(format!("TLS: {e}")))?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| unusable_pair(&e))?;

        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| NodeError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| unusable_pair(&e))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Runs the acceptor's TLS handshake on `socket`.
    pub(crate) async fn accept(&self, socket: TcpStream) -> io::Result<Stream> {
        let stream = self.acceptor.accept(socket).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }

    /// Runs the dialer's TLS handshake on `socket`, expecting a certificate for [`SERVER_NAME`].
    pub(crate) async fn connect(&self, socket: TcpStream) -> io::Result<Stream> {
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        let stream = self.connector.connect(name, socket).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }
}

/// Reads every certificate in the PEM file at `path` (named by setting `setting` in errors).
fn certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, NodeError> {
    let pem = read(path, setting)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, setting, &e))?;
    if certificates.is_empty() {
        return Err(NodeError::Config(format!(
            "{setting}: no certificate in {}",
            path.display()
        )));
    }
    Ok(certificates)
}

/// Reads the private key at `path`. Its errors say only that the file holds no usable key: a
/// PEM parser's message may quote the file, and this file is a secret.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, NodeError> {
    let pem = read(path, "SWITCHBOARD_TLS_KEY")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        NodeError::Config(format!(
            "SWITCHBOARD_TLS_KEY: no PEM private key in {}",
            path.display()
        ))
    })
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path)
        .map_err(|e| NodeError::Config(format!("{setting}: cannot read {}: {e}", path.display())))
}

fn invalid(path: &Path, setting: &str, error: &dyn std::fmt::Display) -> NodeError {
    NodeError::Config(format!(
        "{setting}: {} is not usable: {error}",
        path.display()
    ))
}

/// rustls's errors about a certificate and key pair name neither's contents.
fn unusable_pair(error: &rustls::Error) -> NodeError {
    NodeError::Config(format!(
        "SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY are not a usable pair: {error}"
    ))
}

/// An inter-node connection: plain TCP, or TCP under TLS when the node has TLS settings.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection under it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(socket) => socket.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(socket) => Pin::new(socket).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
