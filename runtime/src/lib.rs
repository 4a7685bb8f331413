//! Strata's runtime drivers: what turns each service's desired instance count in the
//! registry into running instances. `plan` is the pure core (observed instances in,
//! actions out); `local` carries it out with processes on this machine (`strata
//! dev`), `kubernetes` with Deployments and pods, as an operator for the
//! `StatefulService` resource. The autoscaler, which decides the desired count,
//! lives with the control plane, not here.

pub mod kubernetes;
pub mod local;
pub mod plan;

#[cfg(test)]
mod plan_tests;
