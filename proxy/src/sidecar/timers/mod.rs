//! The sidecar's durable timers: the loop that fires the due timers of the
//! shards this instance owns (`runner.rs`), and the report of the service's
//! earliest timer to the control plane, so a service at zero is started in
//! time (`report.rs`). Where requests become stored timers is `timer_scope`'s;
//! what a request may be is `timer_request`'s; the rows are the store's.

mod report;
mod runner;
#[cfg(test)]
mod runner_tests;

pub use self::report::NextDueReport;
pub use self::runner::TimerRunner;
