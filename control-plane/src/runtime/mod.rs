//! The control plane's side of running services: `autoscale` decides each service's
//! desired scale from live metrics on the leader. The drivers that turn desired
//! scale into instances (local processes, Kubernetes) live in `strata-runtime`.

pub mod autoscale;
