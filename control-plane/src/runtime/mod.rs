//! The control plane's side of running services: `autoscale` decides each service's
//! desired scale from live metrics on the leader, and `schedules` makes the calls of
//! the registry's schedules at their times, on the leader too. The drivers that turn desired
//! scale into instances (local processes, Kubernetes) live in `strata-runtime`.

pub mod autoscale;
mod grpc_web;
mod schedule_steps;
pub mod schedules;
