//! The server side of the Raft transport: verifies each envelope's HMAC against the
//! cluster secret, then hands the decoded openraft RPC to the local Raft node. A wrong
//! secret is refused with `UNAUTHENTICATED` and logged.

use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_proto::strata::controlplane::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use strata_proto::strata::controlplane::v1::{RaftEnvelope, RaftReply};
use tonic::{Request, Status};

use super::{NodeId, Raft};
use crate::auth::ClusterSecret;

pub struct TransportService {
    node_id: NodeId,
    raft: Raft,
    secret: ClusterSecret,
}

impl TransportService {
    pub fn server(node_id: NodeId, raft: Raft, secret: ClusterSecret) -> RaftTransportServer<TransportService> {
        // Snapshots and large append batches exceed tonic's 4 MiB default.
        RaftTransportServer::new(TransportService { node_id, raft, secret })
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024)
    }

    fn open<T: DeserializeOwned>(&self, rpc: &str, request: Request<RaftEnvelope>) -> Result<T, Status> {
        let peer = request.remote_addr();
        let envelope = request.into_inner();
        if envelope.rpc != rpc
            || !self
                .secret
                .verify(rpc, envelope.from_node_id, &envelope.payload, &envelope.mac)
        {
            tracing::warn!(
                node_id = self.node_id,
                from = envelope.from_node_id,
                peer = ?peer,
                rpc,
                "refused a raft rpc signed with the wrong cluster secret"
            );
            return Err(Status::unauthenticated("cluster secret mismatch"));
        }
        serde_json::from_slice(&envelope.payload).map_err(|_| Status::invalid_argument("malformed raft payload"))
    }
}

fn reply<T: Serialize>(result: &T) -> Result<tonic::Response<RaftReply>, Status> {
    let payload = serde_json::to_vec(result).map_err(|_| Status::internal("cannot encode the raft reply"))?;
    Ok(tonic::Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(&self, request: Request<RaftEnvelope>) -> Result<tonic::Response<RaftReply>, Status> {
        let rpc = self.open("append_entries", request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftEnvelope>) -> Result<tonic::Response<RaftReply>, Status> {
        let rpc = self.open("vote", request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftEnvelope>) -> Result<tonic::Response<RaftReply>, Status> {
        let rpc = self.open("install_snapshot", request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn ping(&self, request: Request<RaftEnvelope>) -> Result<tonic::Response<RaftReply>, Status> {
        let _: serde_json::Value = match self.open::<serde_json::Value>("ping", request) {
            Ok(value) => value,
            // An empty payload is not JSON; reaching here after `open` means the MAC was fine.
            Err(status) if status.code() == tonic::Code::InvalidArgument => serde_json::Value::Null,
            Err(status) => return Err(status),
        };
        // Who answers, so a node being added under one id at another node's address is caught.
        let payload = serde_json::to_vec(&serde_json::json!({ "node_id": self.node_id })).unwrap_or_default();
        Ok(tonic::Response::new(RaftReply { payload }))
    }
}
