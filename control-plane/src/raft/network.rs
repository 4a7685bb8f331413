//! The client side of the Raft transport: openraft's RPCs serialized as JSON inside a
//! signed protobuf envelope, sent over tonic. Connections are lazy and re-established
//! by tonic; an unreachable peer makes openraft back off.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_proto::strata::controlplane::v1::raft_transport_client::RaftTransportClient;
use strata_proto::strata::controlplane::v1::RaftEnvelope;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{NodeId, NodeInfo, TypeConfig};
use crate::auth::ClusterSecret;

/// Creates one connection per peer for openraft's replication tasks.
#[derive(Clone)]
pub struct GrpcNetwork {
    pub node_id: NodeId,
    pub secret: ClusterSecret,
    pub tls: PeerTls,
}

/// How a node dials its peers' Raft and data-plane port: plain `http://`, or
/// `https://` trusting the cluster's CA and presenting the node's own certificate
/// (for a cluster that requires client certificates). Every node of a cluster is
/// configured alike, so a node that serves TLS dials TLS.
#[derive(Debug, Clone, Default)]
pub struct PeerTls(Option<ClientTlsConfig>);

impl PeerTls {
    pub fn new(config: Option<ClientTlsConfig>) -> Self {
        PeerTls(config)
    }

    /// The endpoint of a peer's `host:port`.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, String> {
        let url = match &self.0 {
            Some(_) => format!("https://{address}"),
            None => format!("http://{address}"),
        };
        strata_tls::endpoint(&url, self.0.as_ref()).map_err(|error| error.to_string())
    }
}

pub struct GrpcConnection {
    node_id: NodeId,
    target: NodeId,
    secret: ClusterSecret,
    client: Option<RaftTransportClient<Channel>>,
    address: String,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GrpcConnection {
        let client = self
            .tls
            .endpoint(&node.address)
            .ok()
            .map(|endpoint| RaftTransportClient::new(endpoint.connect_lazy()));
        if client.is_none() {
            tracing::warn!(node_id = self.node_id, target, address = %node.address, "invalid peer address");
        }
        GrpcConnection {
            node_id: self.node_id,
            target,
            secret: self.secret.clone(),
            client,
            address: node.address.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

impl GrpcConnection {
    async fn call<Req, Resp, E>(&mut self, rpc: &'static str, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                format!("invalid peer address {:?}", self.address),
            ))));
        };
        let payload = serde_json::to_vec(request).map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let envelope = RaftEnvelope {
            rpc: rpc.to_owned(),
            mac: self.secret.sign(rpc, self.node_id, &payload),
            payload,
            from_node_id: self.node_id,
        };
        let mut request = tonic::Request::new(envelope);
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            "append_entries" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::Unauthenticated {
                    tracing::warn!(
                        node_id = self.node_id,
                        target = self.target,
                        "peer refused our cluster secret"
                    );
                }
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                    status.message().to_owned(),
                ))));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.payload).map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call("append_entries", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("install_snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("vote", &rpc, &option).await
    }
}

/// Asks the node at `address` to verify our cluster secret: used before a join, so a
/// node with the wrong secret is refused with a clear message instead of never catching up.
/// Checks that `address` is a node of this cluster (it proves the secret) and that it
/// is node `expected` (nodes from before the id was in the answer send none).
pub async fn ping(
    address: &str,
    node_id: NodeId,
    secret: &ClusterSecret,
    expected: NodeId,
    tls: &PeerTls,
) -> Result<(), String> {
    let endpoint = tls.endpoint(address)?;
    let channel = endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|error| format!("cannot reach {address}: {error}"))?;
    let payload = Vec::new();
    let envelope = RaftEnvelope {
        rpc: "ping".into(),
        mac: secret.sign("ping", node_id, &payload),
        payload,
        from_node_id: node_id,
    };
    match RaftTransportClient::new(channel).ping(envelope).await {
        Ok(reply) => {
            let answered = serde_json::from_slice::<serde_json::Value>(&reply.into_inner().payload)
                .ok()
                .and_then(|value| value["node_id"].as_u64());
            match answered {
                Some(answered) if answered != expected => Err(format!(
                    "{address} is node {answered}, not node {expected}: give each node its own address"
                )),
                _ => Ok(()),
            }
        }
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            Err("the node does not share this cluster's secret (STRATA_CLUSTER_SECRET)".into())
        }
        Err(status) => Err(format!("{address} answered {}", status.message())),
    }
}
