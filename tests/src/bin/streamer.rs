//! A user function with streamed action methods, written with strata-sdk, for the
//! proxy's streaming and cancellation tests: `Ticks` sends its ticks and then
//! waits to be cancelled, noting the cancellation in STREAMER_LOG; `Sum` adds up a
//! stream of ticks. Serves on HOST:PORT.

use std::io::Write;

use futures::StreamExt;
use strata_e2e::streamer::{Tick, TickRequest};
use strata_sdk::{Action, ActionService, Command, CommandStream, Failure, Metadata, Reply, ReplyStream, Service};

fn log(line: &str) {
    if let Some(path) = std::env::var_os("STREAMER_LOG") {
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Notes in the log that the stream was dropped (the call was cancelled).
struct Cancelled(i32);

impl Drop for Cancelled {
    fn drop(&mut self) {
        log(&format!("cancelled after {} ticks", self.0));
    }
}

struct Streamer;

impl Action for Streamer {
    async fn handle_unary(&self, command: Command) -> Result<Reply, Failure> {
        let tick: Tick = command.decode()?;
        let caller = command.metadata().get("x-caller").unwrap_or("nobody");
        Ok(Reply::message(&tick).with_metadata(Metadata::new().with("x-greeting", format!("hello {caller}"))))
    }

    fn handle_streamed_out(&self, command: Command) -> ReplyStream {
        let count = command.decode::<TickRequest>().map(|r| r.count).unwrap_or_default();
        log(&format!("ticking {count}"));
        let guard = Cancelled(count);
        let ticks = futures::stream::iter((1..=count).map(|number| Ok(Reply::message(&Tick { number }))));
        let wait = futures::stream::once(async move {
            let _guard = guard;
            std::future::pending::<Result<Reply, Failure>>().await
        });
        ticks.chain(wait).boxed()
    }

    async fn handle_streamed_in(&self, _call: Command, requests: CommandStream) -> Result<Reply, Failure> {
        let mut sum = 0;
        let mut requests = requests;
        while let Some(command) = requests.next().await {
            sum += command.decode::<Tick>()?.number;
        }
        Ok(Reply::message(&Tick { number: sum }))
    }
}

#[tokio::main]
async fn main() -> Result<(), strata_sdk::ServeError> {
    Service::new(strata_e2e::STREAMER_DESCRIPTORS)
        .service_name("streamer")
        .action(ActionService::new("strata.test.streamer.Streamer", Streamer))
        .serve()
        .await
}
