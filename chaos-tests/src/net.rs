//! tonic over turmoil's simulated TCP: the [`Connector`] the replicas use to reach each other,
//! and the accepted-connection stream their gRPC servers serve.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use hyper_util::rt::TokioIo;
use parley_raft::dial::DialBackoff;
use parley_raft::network::{ChannelSettings, Connector};
use parley_raft::NodeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Uri};

/// The gRPC port every simulated node listens on.
pub const GRPC_PORT: u16 = 9000;

/// Reaches peers over turmoil's simulated network.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimConnector {
    /// Timeouts and keepalives, as in production.
    pub settings: ChannelSettings,
}

impl Connector for SimConnector {
    fn channel(&self, _peer: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = self.settings.endpoint(addr)?;
        Ok(
            // Behind the same pause after failed dials as the production connectors.
            endpoint.connect_with_connector_lazy(DialBackoff::new(tower::service_fn(
                |uri: Uri| async move {
                    let host = uri.host().unwrap_or_default().to_owned();
                    let port = uri.port_u16().unwrap_or(GRPC_PORT);
                    let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
                    Ok::<_, io::Error>(TokioIo::new(stream))
                },
            ))),
        )
    }
}

/// An accepted simulated connection, as tonic's server wants it.
pub struct Accepted(pub turmoil::net::TcpStream);

impl Connected for Accepted {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections `listener` accepts, forever.
pub fn incoming(listener: turmoil::net::TcpListener) -> impl Stream<Item = io::Result<Accepted>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener
            .accept()
            .await
            .map(|(stream, _peer)| Accepted(stream));
        Some((accepted, listener))
    })
}
