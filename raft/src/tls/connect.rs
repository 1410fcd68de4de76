//! The client side: a [`Connector`] that dials a peer over TCP and accepts it only if its
//! server certificate chains to the CA bundle and names the node that was meant.

use std::io;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector as RustlsConnector;
use tonic::transport::{Channel, Uri};

use super::{node_server_name, PeerTls};
use crate::network::{ChannelSettings, Connector};
use crate::types::NodeId;

/// Mutual TLS over real TCP.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    /// Transport settings (the connect timeout covers the TCP connect and the handshake).
    pub settings: ChannelSettings,
    /// This node's material, read at every new connection so reloads take effect.
    pub tls: Arc<PeerTls>,
}

impl Connector for TlsConnector {
    fn channel(&self, peer: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let tls = self.tls.clone();
        tls_channel(&self.settings, addr, peer, move || tls.client_config())
    }
}

/// A lazily connecting channel to node `peer` at `addr` over TLS with the client configuration
/// `config` returns at each new connection; the server's certificate must name node `peer`.
pub fn tls_channel<F>(
    settings: &ChannelSettings,
    addr: &str,
    peer: NodeId,
    config: F,
) -> Result<Channel, tonic::transport::Error>
where
    F: Fn() -> Arc<ClientConfig> + Clone + Send + Sync + 'static,
{
    let connect = tower::service_fn(move |uri: Uri| {
        let config = config.clone();
        async move {
            let name = node_server_name(peer)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri
                .port_u16()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port"))?;
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = RustlsConnector::from(config()).connect(name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    Ok(settings
        .endpoint(addr)?
        .connect_with_connector_lazy(crate::dial::DialBackoff::new(connect)))
}
