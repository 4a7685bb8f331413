//! The one loop that follows the control plane's route watch, for both roles: it
//! opens the watch, hands on every snapshot in order, and when the watch ends or
//! cannot be opened, opens it again after a backoff (reset once one opens). What
//! a snapshot means (the routes to serve, the shards owned) is the caller's.

use strata_proto::strata::controlplane::v1::RouteSnapshot;

use super::control_plane::ControlPlaneClient;
use crate::backoff::Backoff;

/// Follows the route watch forever, calling `apply` with each snapshot.
pub async fn follow(client: &ControlPlaneClient, mut apply: impl FnMut(RouteSnapshot)) {
    let mut backoff = Backoff::default();
    loop {
        match client.watch_routes("watch routes").await {
            Ok(mut stream) => {
                backoff.reset();
                loop {
                    match stream.message().await {
                        Ok(Some(snapshot)) => apply(snapshot),
                        Ok(None) => {
                            tracing::warn!("route watch ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "route watch ended; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::warn!(error = %status.message(), "cannot watch routes"),
        }
        backoff.wait().await;
    }
}
