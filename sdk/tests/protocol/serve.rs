//! Starting and stopping: registrations checked against the descriptors before
//! listening, and shutdown that stops promptly, or after the grace period when the
//! proxy keeps entity streams open.

use std::time::Duration;

use strata_proto::cloudstate::eventsourced::{
    event_sourced_client::EventSourcedClient, event_sourced_stream_in::Message as In, EventSourcedInit,
    EventSourcedStreamIn,
};
use strata_sdk::{EventSourcedService, ServeError, Service};
use tokio::net::TcpListener;

use crate::support::{descriptors, service, within, Counter, Running, Stream, COUNTER};

async fn serve(service: Service) -> Result<(), ServeError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    within(service.serve_with_shutdown(listener, std::future::pending())).await
}

#[tokio::test]
async fn an_entity_for_a_service_missing_from_the_descriptors_is_refused() {
    let service = Service::new(descriptors())
        .event_sourced(EventSourcedService::new("test.Missing", "p", |_| Counter::default()));
    let error = serve(service).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "service \"test.Missing\" is not in the file descriptor set \
         (it defines: test.Counter, test.Echo, test.Register)"
    );
}

#[tokio::test]
async fn a_service_registered_twice_is_refused() {
    let counter = || EventSourcedService::new(COUNTER, "p", |_| Counter::default());
    let service = Service::new(descriptors())
        .event_sourced(counter())
        .event_sourced(counter());
    assert!(matches!(
        serve(service).await,
        Err(ServeError::DuplicateService(name)) if name == COUNTER
    ));
}

#[tokio::test]
async fn nothing_to_serve_and_bad_descriptors_are_refused() {
    assert!(matches!(
        serve(Service::new(descriptors())).await,
        Err(ServeError::NoEntities)
    ));
    let garbage =
        Service::new(vec![0xff, 0xff]).event_sourced(EventSourcedService::new(COUNTER, "p", |_| Counter::default()));
    assert!(matches!(serve(garbage).await, Err(ServeError::Descriptor(_))));
}

#[tokio::test]
async fn shutdown_with_no_open_streams_stops_at_once() {
    let running = Running::start(service().shutdown_grace(Duration::from_secs(600))).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_waits_for_open_streams_only_for_the_grace_period() {
    let running = Running::start(service().shutdown_grace(Duration::from_millis(200))).await;
    let mut client = EventSourcedClient::new(running.channel.clone());
    let stream = Stream::open(|requests| async move { client.handle(requests).await }).await;
    stream
        .send(EventSourcedStreamIn {
            message: Some(In::Init(EventSourcedInit {
                service_name: COUNTER.to_owned(),
                entity_id: "c-1".to_owned(),
                snapshot: None,
            })),
        })
        .await;
    running.stop().await.unwrap();
    drop(stream);
}
