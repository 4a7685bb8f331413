//! How both roles reach other instances: the route tables the control plane's
//! route watch gives, the client of the control plane itself, the choice of an
//! instance (an entity's owner, the least busy instance of an action), holding a
//! call while a service wakes from zero, and passing calls on to the instance
//! chosen. Knows nothing of the sidecar or the gateway that use it.

pub mod control_plane;
pub mod forward;
pub mod hold;
pub mod outbound;
pub mod route_watch;
pub mod routes;
pub mod spread;
