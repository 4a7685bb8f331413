//! The keep-alive policy a service chooses for its last instance. What each policy
//! decides is the autoscaler's (`strata-autoscaler`); this is only the choice.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum KeepAlive {
    /// Knative's: zero once the stable window has averaged zero and the grace has passed.
    Fixed,
    /// Kept or pre-warmed where the service's idle-time histogram expects the next request.
    Histogram,
}

impl KeepAlive {
    /// The name it is written as (`fixed`, `histogram`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeepAlive::Fixed => "fixed",
            KeepAlive::Histogram => "histogram",
        }
    }
}
