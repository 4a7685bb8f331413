//! The function's side of a call's trace: each command is handled inside a
//! span that continues the `traceparent` the proxy sent in the command's
//! metadata, so the handler's logs and spans join the call's trace. Exporting
//! them is the function process's choice (any OpenTelemetry subscriber); without
//! one the span costs next to nothing.

use strata_telemetry::{continue_trace, TraceParent, TRACEPARENT};

use crate::Command;

/// The span a handler of `command` runs in.
pub(crate) fn command_span(command: &Command) -> tracing::Span {
    let span = tracing::info_span!(
        "command",
        otel.name = %format_args!("handle {}", command.name()),
        otel.kind = "server",
        strata.entity_id = command.entity_id(),
    );
    if let Some(parent) = command.traceparent() {
        continue_trace(&span, &parent);
    }
    span
}

impl Command {
    /// The W3C trace context the command came with (`traceparent` in its
    /// metadata), naming the proxy's span of this call into the function: the
    /// parent of anything the handler traces. `None` if absent or malformed.
    pub fn traceparent(&self) -> Option<TraceParent> {
        self.metadata()
            .get(TRACEPARENT)
            .and_then(|value| TraceParent::parse(value).ok())
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Any;

    use super::*;
    use crate::Metadata;

    #[test]
    fn the_traceparent_is_read_from_the_metadata() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let command = Command::new("e".into(), 1, "Get".into(), Any::default())
            .with_metadata(Metadata::new().with(TRACEPARENT, value));
        assert_eq!(command.traceparent().map(|t| t.to_string()).as_deref(), Some(value));
        let malformed = Command::new("e".into(), 1, "Get".into(), Any::default())
            .with_metadata(Metadata::new().with(TRACEPARENT, "00-zz"));
        assert_eq!(malformed.traceparent(), None);
    }
}
