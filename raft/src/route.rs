//! Who calls whom: the headers every node-to-node call carries, and the server's check of them.
//!
//! Every call names the cluster, the calling node and the node it is meant for
//! ([`RouteHeaders`]). The receiving node ([`RouteCheck`]) refuses a call for another cluster
//! or another node (openraft must be sure it reached the peer it meant: an address reused by
//! a different node must not answer for the old one), and, with mutual TLS, a call whose
//! caller's certificate does not name the node it claims to be.

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::ErrorClass;
use crate::tls::accept::PeerIdentity;
use crate::tls::certificate_names_node;
use crate::types::NodeId;

/// Header naming the cluster.
pub const CLUSTER_HEADER: &str = "parley-cluster";
/// Header naming the calling node.
pub const FROM_HEADER: &str = "parley-from";
/// Header naming the node the call is meant for.
pub const TO_HEADER: &str = "parley-to";

/// Longest cluster id, in bytes.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// Whether `id` can name a cluster: 1 to [`CLUSTER_ID_BYTES_MAX`] ASCII letters, digits, `-`,
/// `_` or `.`.
pub fn valid_cluster_id(id: &str) -> bool {
    (1..=CLUSTER_ID_BYTES_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The client side: adds the route headers to every call on a channel to one peer.
#[derive(Clone, Debug)]
pub struct RouteHeaders {
    cluster: AsciiMetadataValue,
    from: AsciiMetadataValue,
    to: AsciiMetadataValue,
}

impl RouteHeaders {
    /// Calls from `from` to `to` in `cluster` (a [`valid_cluster_id`]; anything else is sent
    /// as an empty id, which every node refuses).
    pub fn new(cluster: &str, from: NodeId, to: NodeId) -> Self {
        let cluster = AsciiMetadataValue::try_from(cluster)
            .unwrap_or_else(|_| AsciiMetadataValue::from_static(""));
        Self {
            cluster,
            from: AsciiMetadataValue::from(from),
            to: AsciiMetadataValue::from(to),
        }
    }
}

impl Interceptor for RouteHeaders {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert(CLUSTER_HEADER, self.cluster.clone());
        metadata.insert(FROM_HEADER, self.from.clone());
        metadata.insert(TO_HEADER, self.to.clone());
        Ok(request)
    }
}

/// The server side: refuses calls not meant for this node of this cluster, or (with mutual TLS)
/// from a caller whose certificate does not name the node it claims to be.
#[derive(Clone, Debug)]
pub struct RouteCheck {
    cluster: String,
    node: NodeId,
    require_certificate: bool,
}

/// Why a call's route was refused; the gRPC message starts with [`RouteRefusal::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefusal {
    /// A header is missing or unreadable.
    #[error("missing_route: the call does not say {0}")]
    Missing(&'static str),
    /// The call is for another cluster.
    #[error("wrong_cluster: this node belongs to cluster {ours:?}, the call to {theirs:?}")]
    WrongCluster {
        /// This node's cluster.
        ours: String,
        /// The call's.
        theirs: String,
    },
    /// The call is for another node.
    #[error("wrong_node: this is node {ours}, the call was meant for node {theirs}")]
    WrongNode {
        /// This node.
        ours: NodeId,
        /// The node the caller meant.
        theirs: NodeId,
    },
    /// The connection presented no verified certificate.
    #[error("no_certificate: the connection has no verified client certificate")]
    NoCertificate,
    /// The caller's certificate names another node than the one it claims to be.
    #[error(
        "wrong_certificate: the caller says it is node {claimed}, its certificate does not name it"
    )]
    WrongCertificate {
        /// The node the caller claims to be.
        claimed: NodeId,
    },
}

impl RouteRefusal {
    /// The status this refusal is answered with.
    pub fn status(&self) -> Status {
        let class = match self {
            Self::Missing(_) | Self::WrongCluster { .. } | Self::WrongNode { .. } => {
                ErrorClass::PermissionDenied
            }
            Self::NoCertificate | Self::WrongCertificate { .. } => ErrorClass::Unauthenticated,
        };
        class.grpc_status(self.to_string())
    }
}

fn header<'m>(metadata: &'m MetadataMap, name: &'static str) -> Result<&'m str, RouteRefusal> {
    metadata
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or(RouteRefusal::Missing(name))
}

fn node_header(metadata: &MetadataMap, name: &'static str) -> Result<NodeId, RouteRefusal> {
    header(metadata, name)?
        .parse()
        .map_err(|_| RouteRefusal::Missing(name))
}

impl RouteCheck {
    /// Accepts calls for node `node` of `cluster`; with `require_certificate`, only from a
    /// caller whose verified certificate names the node it claims to be.
    pub fn new(cluster: impl Into<String>, node: NodeId, require_certificate: bool) -> Self {
        Self {
            cluster: cluster.into(),
            node,
            require_certificate,
        }
    }

    /// Checks one call's headers against `identity` (the connection's, if it has one); on
    /// success, the calling node.
    pub fn check(
        &self,
        metadata: &MetadataMap,
        identity: Option<&PeerIdentity>,
    ) -> Result<NodeId, RouteRefusal> {
        let cluster = header(metadata, CLUSTER_HEADER)?;
        if cluster != self.cluster {
            return Err(RouteRefusal::WrongCluster {
                ours: self.cluster.clone(),
                theirs: cluster.to_owned(),
            });
        }
        let to = node_header(metadata, TO_HEADER)?;
        if to != self.node {
            return Err(RouteRefusal::WrongNode {
                ours: self.node,
                theirs: to,
            });
        }
        let from = node_header(metadata, FROM_HEADER)?;
        if self.require_certificate {
            let certificate = identity
                .and_then(|identity| identity.certificate.as_ref())
                .ok_or(RouteRefusal::NoCertificate)?;
            if !certificate_names_node(certificate, from) {
                return Err(RouteRefusal::WrongCertificate { claimed: from });
            }
        }
        Ok(from)
    }
}

impl Interceptor for RouteCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self.check(
            request.metadata(),
            request.extensions().get::<PeerIdentity>(),
        ) {
            Ok(_) => Ok(request),
            Err(refusal) => {
                tracing::warn!(%refusal, "refused a peer call");
                Err(refusal.status())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(cluster: &str, from: NodeId, to: NodeId) -> MetadataMap {
        let mut request = Request::new(());
        let mut headers = RouteHeaders::new(cluster, from, to);
        request = headers.call(request).unwrap_or_else(|_| Request::new(()));
        request.metadata().clone()
    }

    #[test]
    fn a_call_for_this_node_of_this_cluster_passes_and_names_its_caller() {
        let check = RouteCheck::new("east", 2, false);
        assert_eq!(check.check(&metadata("east", 1, 2), None), Ok(1));
    }

    #[test]
    fn a_call_for_another_cluster_or_node_is_refused() {
        let check = RouteCheck::new("east", 2, false);
        assert!(matches!(
            check.check(&metadata("west", 1, 2), None),
            Err(RouteRefusal::WrongCluster { .. })
        ));
        assert_eq!(
            check.check(&metadata("east", 1, 3), None),
            Err(RouteRefusal::WrongNode { ours: 2, theirs: 3 })
        );
        assert_eq!(
            check.check(&MetadataMap::new(), None),
            Err(RouteRefusal::Missing(CLUSTER_HEADER))
        );
    }

    #[test]
    fn with_mutual_tls_a_call_without_a_certificate_is_refused() {
        let check = RouteCheck::new("east", 2, true);
        assert_eq!(
            check.check(&metadata("east", 1, 2), None),
            Err(RouteRefusal::NoCertificate)
        );
    }

    #[test]
    fn cluster_ids_are_short_and_plain() {
        assert!(valid_cluster_id("parley-prod.eu_1"));
        assert!(!valid_cluster_id(""));
        assert!(!valid_cluster_id("has space"));
        assert!(!valid_cluster_id(&"x".repeat(CLUSTER_ID_BYTES_MAX + 1)));
    }
}
