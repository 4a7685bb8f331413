//! Runtime drivers: what turns the registry's desired scale into running
//! instances. `local` runs them as processes on this machine (`strata dev`);
//! `autoscale` decides the desired scale from live metrics on the leader.

pub mod autoscale;
pub mod local;
mod process;
