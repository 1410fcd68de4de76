//! The server side: TCP connections accepted and put through the TLS handshake before tonic
//! sees them.
//!
//! Handshakes run concurrently (at most [`HANDSHAKES_IN_FLIGHT_MAX`], each within
//! [`HANDSHAKE_TIMEOUT`]), so one slow or silent client cannot hold up the others. A connection
//! whose client certificate is missing, expired or not from the CA bundle never reaches a
//! service; it is logged and counted ([`super::PeerTls::refused_total`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::PeerTls;

/// Longest a TLS handshake on an accepted connection may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most handshakes in progress at once; further connections wait to be accepted.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 64;

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Who is at the other end of an accepted connection, as the handshake established it.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// The peer's address.
    pub remote: SocketAddr,
    /// The peer's certificate (end entity), verified against the CA bundle.
    pub certificate: Option<CertificateDer<'static>>,
}

/// A connection that completed the TLS handshake.
pub struct TlsAccepted {
    stream: TlsStream<TcpStream>,
    identity: PeerIdentity,
}

impl Connected for TlsAccepted {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.identity.clone()
    }
}

impl AsyncRead for TlsAccepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsAccepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The connections `listener` accepts that complete the handshake with `tls`'s current
/// server configuration. Accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<PeerTls>,
) -> impl Stream<Item = io::Result<TlsAccepted>> {
    let (accepted, queue) = mpsc::channel(HANDSHAKES_IN_FLIGHT_MAX);
    tokio::spawn(accept_loop(listener, tls, accepted));
    ReceiverStream::new(queue)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<PeerTls>,
    accepted: mpsc::Sender<io::Result<TlsAccepted>>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    loop {
        let permit = tokio::select! {
            _ = accepted.closed() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (tcp, remote) = tokio::select! {
            _ = accepted.closed() => return,
            result = listener.accept() => match result {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "accepting a peer connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Small gRPC frames must not wait out the peer's delayed ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, %remote, "setting TCP_NODELAY failed");
        }
        let acceptor = TlsAcceptor::from(tls.server_config());
        let accepted = accepted.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|cert| cert.clone().into_owned());
                    let identity = PeerIdentity {
                        remote,
                        certificate,
                    };
                    let _ = accepted.send(Ok(TlsAccepted { stream, identity })).await;
                }
                Ok(Err(error)) => {
                    tls.count_refused();
                    tracing::warn!(%remote, %error, "refused a peer connection at the TLS handshake");
                }
                Err(_) => {
                    tls.count_refused();
                    tracing::warn!(%remote, ?HANDSHAKE_TIMEOUT, "refused a peer connection: TLS handshake timed out");
                }
            }
        });
    }
}
