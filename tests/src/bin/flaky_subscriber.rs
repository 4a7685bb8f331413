//! A user function whose one action is subscribed to the shopping cart's event
//! log, for the eventing tests: it notes every delivery in SUBSCRIBER_LOG
//! (`ok cart:seq`, or `failed cart:seq` while the file SUBSCRIBER_FAIL exists,
//! when it fails the event). Serves on HOST:PORT.

use std::{io::Write, path::PathBuf};

use strata_sdk::{Action, Command, EventSource, Failure, Reply, Service};

struct Recorder {
    log: PathBuf,
    fail: PathBuf,
}

impl Recorder {
    fn note(&self, line: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the subscriber's log");
        writeln!(file, "{line}").expect("the subscriber's log");
        file.sync_all().expect("the subscriber's log");
    }
}

impl Action for Recorder {
    async fn handle_unary(&self, command: Command) -> Result<Reply, Failure> {
        let source = EventSource::of(&command).ok_or_else(|| Failure::new("not an event"))?;
        let event = format!("{}:{}", source.entity_id, source.sequence_number);
        if self.fail.exists() {
            self.note(&format!("failed {event}"));
            return Err(Failure::new(format!("told to fail on {event}")));
        }
        self.note(&format!("ok {event}"));
        Ok(Reply::none())
    }
}

#[tokio::main]
async fn main() -> Result<(), strata_sdk::ServeError> {
    let path = |name: &str| PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} is not set")));
    Service::new(strata_e2e::SUBSCRIBER_DESCRIPTORS)
        .service_name("flaky-subscriber")
        .action(strata_sdk::ActionService::new(
            "strata.test.subscriber.Recorder",
            Recorder {
                log: path("SUBSCRIBER_LOG"),
                fail: path("SUBSCRIBER_FAIL"),
            },
        ))
        .serve()
        .await
}
