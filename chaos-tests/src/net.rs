//! tonic over turmoil's simulated TCP: the [`Connector`] the replicas use to reach each other,
//! and the accepted-connection stream their gRPC servers serve.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
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

thread_local! {
    /// With [`fail_dials_across_cuts`] on: the node links cut now, each as (lower id, higher
    /// id). The simulation runs every host on one thread.
    static CUT: RefCell<Option<BTreeSet<(NodeId, NodeId)>>> = const { RefCell::new(None) };
    /// Connections nodes dialled that are still open, by (dialling node, peer): each holds one
    /// of the dialling host's ephemeral ports.
    static OPEN_DIALS: RefCell<BTreeMap<(NodeId, NodeId), u64>> = const { RefCell::new(BTreeMap::new()) };
    /// Dials that failed or were given up before they connected, by (dialling node, peer):
    /// turmoil keeps the ephemeral port of a connect that got no answer.
    static UNFINISHED_DIALS: RefCell<BTreeMap<(NodeId, NodeId), u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Dials that failed or were given up before they connected, by (dialling node, peer).
pub fn unfinished_dials() -> BTreeMap<(NodeId, NodeId), u64> {
    UNFINISHED_DIALS.with(|unfinished| unfinished.borrow().clone())
}

/// A dial under way: counted in [`unfinished_dials`] if dropped before [`Dialling::connected`].
struct Dialling {
    link: Option<(NodeId, NodeId)>,
}

impl Dialling {
    fn connected(mut self) {
        self.link = None;
    }
}

impl Drop for Dialling {
    fn drop(&mut self) {
        if let Some(link) = self.link {
            UNFINISHED_DIALS
                .with(|unfinished| *unfinished.borrow_mut().entry(link).or_default() += 1);
        }
    }
}

/// Every second open dialled connection a node holds past this many logs where they go.
const OPEN_DIALS_REPORTED: u64 = 1_000;

/// Connections dialled by nodes and still open, by (dialling node, peer).
pub fn open_dials() -> BTreeMap<(NodeId, NodeId), u64> {
    OPEN_DIALS.with(|open| open.borrow().clone())
}

/// Counts a connection a node dialled in [`open_dials`] while it is open.
struct Dialled {
    link: (NodeId, NodeId),
}

impl Dialled {
    fn new(from: NodeId, peer: NodeId) -> Self {
        let link = (from, peer);
        let total = OPEN_DIALS.with(|open| {
            let mut open = open.borrow_mut();
            *open.entry(link).or_default() += 1;
            open.iter()
                .filter(|((node, _), _)| *node == from)
                .map(|(_, n)| *n)
                .sum::<u64>()
        });
        if total.is_multiple_of(OPEN_DIALS_REPORTED) {
            // A diagnostic for long runs (turmoil panics once a host's ports run out).
            eprintln!(
                "node {from} holds {total} open dialled connections at {:?} simulated: {:?}",
                turmoil::sim_elapsed().unwrap_or_default(),
                open_dials()
            );
        }
        Self { link }
    }
}

impl Drop for Dialled {
    fn drop(&mut self) {
        OPEN_DIALS.with(|open| {
            if let Some(n) = open.borrow_mut().get_mut(&self.link) {
                *n = n.saturating_sub(1);
            }
        });
    }
}

/// Makes a dial across a cut link fail at once instead of waiting for a SYN-ACK that never
/// comes (`on`), for runs over simulated days: turmoil 0.7 keeps the ephemeral port of every
/// unanswered connect, so a node dialling a cut-off site for hours runs out of ports. Off (the
/// default) leaves the simulation as it was, so old seeds replay unchanged.
pub fn fail_dials_across_cuts(on: bool) {
    CUT.with(|cut| *cut.borrow_mut() = on.then(BTreeSet::new));
}

/// Records that the link between nodes `a` and `b` is cut (`cut`) or whole again.
pub fn link_cut(a: NodeId, b: NodeId, cut: bool) {
    CUT.with(|links| {
        if let Some(links) = links.borrow_mut().as_mut() {
            let pair = (a.min(b), a.max(b));
            if cut {
                links.insert(pair);
            } else {
                links.remove(&pair);
            }
        }
    });
}

fn is_cut(a: NodeId, b: NodeId) -> bool {
    CUT.with(|links| {
        links
            .borrow()
            .as_ref()
            .is_some_and(|links| links.contains(&(a.min(b), a.max(b))))
    })
}

/// Reaches peers over turmoil's simulated network.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimConnector {
    /// Timeouts and keepalives, as in production.
    pub settings: ChannelSettings,
    /// The node dialling (a client host: `None`), for [`fail_dials_across_cuts`].
    pub from: Option<NodeId>,
}

impl Connector for SimConnector {
    fn channel(&self, peer: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = self.settings.endpoint(addr)?;
        let from = self.from;
        Ok(
            // Behind the same pause after failed dials as the production connectors.
            endpoint.connect_with_connector_lazy(DialBackoff::new(tower::service_fn(
                move |uri: Uri| async move {
                    if from.is_some_and(|from| is_cut(from, peer)) {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            "the link is cut (simulated)",
                        ));
                    }
                    let host = uri.host().unwrap_or_default().to_owned();
                    let port = uri.port_u16().unwrap_or(GRPC_PORT);
                    let dialling = Dialling {
                        link: from.map(|from| (from, peer)),
                    };
                    let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
                    dialling.connected();
                    let dialled = from.map(|from| Dialled::new(from, peer));
                    Ok::<_, io::Error>(TokioIo::new(Connection {
                        stream,
                        _dialled: dialled,
                    }))
                },
            ))),
        )
    }
}

/// A simulated connection, dialled or accepted, as tonic wants it.
pub struct Connection {
    stream: turmoil::net::TcpStream,
    /// For a connection a node dialled: its count in [`open_dials`].
    _dialled: Option<Dialled>,
}

impl Connected for Connection {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The connections `listener` accepts, forever.
pub fn incoming(listener: turmoil::net::TcpListener) -> impl Stream<Item = io::Result<Connection>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _peer)| Connection {
            stream,
            _dialled: None,
        });
        Some((accepted, listener))
    })
}
