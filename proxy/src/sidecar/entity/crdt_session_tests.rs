//! What a CRDT entity does with the function's replies: deltas create and change
//! the state, deletes are for good, and bad deltas are refused whole.

use prost_types::Any;
use strata_proto::cloudstate::{
    client_action::Action,
    crdt::{
        crdt_delta::Delta, CrdtDelete, CrdtDelta, CrdtStateAction, CrdtStreamedMessage, CrdtWriteConsistency,
        OrMapDelta, OrMapEntryDelta, OrSetDelta, PnCounterDelta, VoteDelta,
    },
    ClientAction, Failure, Reply,
};

use super::*;
use crate::{call::Answer, fixtures};

fn any(name: &str) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{name}"),
        value: vec![],
    }
}

fn ok() -> Action {
    Action::Reply(Reply {
        payload: Some(any("test.things.Thing")),
        metadata: None,
    })
}

fn update(delta: Delta) -> crdt_state_action::Action {
    crdt_state_action::Action::Update(CrdtDelta { delta: Some(delta) })
}

fn reply(command_id: i64, action: Action, state: Option<crdt_state_action::Action>) -> CrdtStreamOut {
    CrdtStreamOut {
        message: Some(crdt_stream_out::Message::Reply(CrdtReply {
            command_id,
            client_action: Some(ClientAction { action: Some(action) }),
            side_effects: vec![],
            state_action: state.map(|action| CrdtStateAction {
                action: Some(action),
                write_consistency: CrdtWriteConsistency::Majority as i32,
            }),
            streamed: false,
        })),
    }
}

fn change(by: i64) -> Delta {
    Delta::Pncounter(PnCounterDelta { change: by })
}

const REPLICA: Replica<'static> = Replica {
    id: "instance-1",
    now_millis: 1_000,
};

fn decide_on(held: &Held, out: CrdtStreamOut) -> Decision<CrdtChange> {
    let (model, method) = fixtures::method("/test.things.Warehouse/Create");
    decide(&method, &model, 1, false, held, &REPLICA, out)
}

fn counter(value: i64) -> Held {
    Held::Live(Box::new(
        Crdt::from_delta(
            &CrdtDelta {
                delta: Some(change(value)),
            },
            &REPLICA,
        )
        .unwrap(),
    ))
}

#[test]
fn the_first_delta_creates_the_state_and_later_ones_change_it() {
    let created = decide_on(&Held::Absent, reply(1, ok(), Some(update(change(2)))));
    assert_eq!(
        created,
        Decision::Persist(Persist {
            change: CrdtChange {
                state: Some(counter(2)),
                correction: None,
                keep_open: false
            },
            answer: Ok(Outcome::reply(Answer::new(any("test.things.Thing")))),
            restart: false
        })
    );
    let Decision::Persist(Persist {
        change: CrdtChange {
            state: Some(Held::Live(crdt)),
            ..
        },
        ..
    }) = decide_on(&counter(2), reply(1, ok(), Some(update(change(-5)))))
    else {
        panic!("expected a change")
    };
    assert_eq!(crdt.view(&Voters::alone("instance-1")), View::PnCounter(-3));
    // No state action: nothing to store. Any write consistency is accepted.
    assert!(matches!(
        decide_on(&counter(2), reply(1, ok(), None)),
        Decision::Persist(Persist {
            change: CrdtChange { state: None, .. },
            answer: Ok(_),
            restart: false,
            ..
        })
    ));
}

#[test]
fn a_delta_of_the_wrong_type_is_refused_whole() {
    let orset = Delta::Orset(OrSetDelta {
        cleared: false,
        removed: vec![],
        added: vec![any("test.User")],
    });
    match decide_on(&counter(1), reply(1, ok(), Some(update(orset)))) {
        Decision::Violation(what) => assert!(what.contains("ORSet delta cannot change a PNCounter"), "{what}"),
        other => panic!("expected a violation, got {other:?}"),
    }
    match decide_on(&Held::Absent, reply(1, ok(), Some(update_empty()))) {
        Decision::Violation(what) => assert!(what.contains("empty"), "{what}"),
        other => panic!("expected a violation, got {other:?}"),
    }
}

fn update_empty() -> crdt_state_action::Action {
    crdt_state_action::Action::Update(CrdtDelta { delta: None })
}

#[test]
fn an_ormap_key_of_an_unsupported_type_is_refused() {
    let delta = Delta::Ormap(OrMapDelta {
        cleared: false,
        removed: vec![],
        updated: vec![],
        added: vec![OrMapEntryDelta {
            key: Some(Any {
                type_url: "p.cloudstate.io/double".into(),
                value: vec![9, 0, 0, 0, 0, 0, 0, 240, 63],
            }),
            delta: Some(CrdtDelta { delta: Some(change(1)) }),
        }],
    });
    match decide_on(&Held::Absent, reply(1, ok(), Some(update(delta)))) {
        Decision::Violation(what) => assert!(what.contains("ORMap key has type p.cloudstate.io/double"), "{what}"),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn a_delete_is_for_good() {
    let delete = crdt_state_action::Action::Delete(CrdtDelete {});
    assert!(matches!(
        decide_on(&counter(3), reply(1, ok(), Some(delete))),
        Decision::Persist(Persist {
            change: CrdtChange {
                state: Some(Held::Deleted),
                ..
            },
            answer: Ok(_),
            restart: true,
            ..
        })
    ));
    // A deleted entity still answers reads, and refuses changes with NOT_FOUND / 410.
    assert!(matches!(
        decide_on(&Held::Deleted, reply(1, ok(), None)),
        Decision::Persist(Persist {
            change: CrdtChange { state: None, .. },
            answer: Ok(_),
            ..
        })
    ));
    match decide_on(&Held::Deleted, reply(1, ok(), Some(update(change(1))))) {
        Decision::Persist(Persist {
            change: CrdtChange { state: None, .. },
            answer: Err(error),
            restart: true,
            ..
        }) => {
            assert_eq!(error.grpc_code(), tonic::Code::NotFound);
            assert_eq!(error.http_status(), http::StatusCode::GONE);
            assert!(error.to_string().contains("was deleted"), "{error}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_failed_command_changes_nothing_and_restarts_the_function() {
    let failure = Action::Failure(Failure {
        command_id: 1,
        description: "no".into(),
        restart: false,
    });
    assert_eq!(
        decide_on(&counter(1), reply(1, failure, Some(update(change(4))))),
        Decision::Persist(Persist {
            change: CrdtChange {
                state: None,
                correction: None,
                keep_open: false
            },
            answer: Err(ProxyError::Failure("no".into())),
            restart: true
        })
    );
}

#[test]
fn the_function_hears_when_its_value_differs_from_the_replica() {
    // A function that sent a vote on a new entity counted only itself: it does
    // hold the tally the proxy has (one voter), so nothing is sent.
    let vote = Delta::Vote(VoteDelta {
        self_vote: true,
        votes_for: 0,
        total_voters: 0,
    });
    let Decision::Persist(Persist {
        change: CrdtChange {
            state: Some(Held::Live(crdt)),
            correction,
            ..
        },
        ..
    }) = decide_on(&Held::Absent, reply(1, ok(), Some(update(vote))))
    else {
        panic!("expected a change")
    };
    assert_eq!(correction, None);
    assert_eq!(
        crdt.view(&Voters::alone("instance-1")),
        View::Vote {
            self_vote: true,
            votes_for: 1,
            total_voters: 1
        }
    );
}

#[test]
fn protocol_slips_are_violations() {
    let streamed = CrdtStreamOut {
        message: Some(crdt_stream_out::Message::StreamedMessage(CrdtStreamedMessage {
            command_id: 1,
            client_action: None,
            side_effects: vec![],
            end_stream: false,
        })),
    };
    assert!(matches!(decide_on(&Held::Absent, streamed), Decision::Violation(_)));
    assert!(matches!(
        decide_on(&Held::Absent, reply(7, ok(), None)),
        Decision::Violation(_)
    ));
    assert!(matches!(
        decide_on(&Held::Absent, CrdtStreamOut { message: None }),
        Decision::Violation(_)
    ));
}

fn unasked(out: crdt_stream_out::Message, open: Option<i64>, cancelling: Option<i64>) -> Unasked {
    let (model, method) = fixtures::method("/test.things.Warehouse/Create");
    let open_method = method.clone();
    let open = move |id| (Some(id) == open).then(|| open_method.clone());
    let cancelling = move |id| (Some(id) == cancelling).then(|| method.clone());
    decide_unasked(
        &model,
        &counter(2),
        &REPLICA,
        &open,
        &cancelling,
        CrdtStreamOut { message: Some(out) },
    )
}

fn streamed_message(command_id: i64, end_stream: bool) -> crdt_stream_out::Message {
    crdt_stream_out::Message::StreamedMessage(CrdtStreamedMessage {
        command_id,
        client_action: Some(ClientAction { action: Some(ok()) }),
        side_effects: vec![],
        end_stream,
    })
}

#[test]
fn streamed_messages_go_to_open_streams_only() {
    // --- for an open stream: the client's message, and the end when asked
    assert_eq!(
        unasked(streamed_message(3, true), Some(3), None),
        Unasked::Stream {
            command_id: 3,
            outcome: Ok(Outcome::reply(Answer::new(any("test.things.Thing")))),
            end: true,
        }
    );
    // --- for a stream whose client just left: dropped
    assert_eq!(unasked(streamed_message(3, false), None, Some(3)), Unasked::Late);
    // --- for a command that is not streaming: a violation
    match unasked(streamed_message(4, false), Some(3), None) {
        Unasked::Violation(what) => assert!(what.contains("command 4, which is not streaming"), "{what}"),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn a_cancelled_streams_response_changes_the_state_and_nothing_else_may() {
    let response = |command_id| {
        crdt_stream_out::Message::StreamCancelledResponse(strata_proto::cloudstate::crdt::CrdtStreamCancelledResponse {
            command_id,
            side_effects: vec![],
            state_action: Some(CrdtStateAction {
                action: Some(update(change(-5))),
                write_consistency: CrdtWriteConsistency::Local as i32,
            }),
        })
    };
    match unasked(response(7), None, Some(7)) {
        Unasked::Cancelled {
            command_id: 7,
            change: Some(Held::Live(crdt)),
            outcome: Ok(_),
            ..
        } => assert_eq!(crdt.view(&Voters::alone("instance-1")), View::PnCounter(-3)),
        other => panic!("expected the cancel's change, got {other:?}"),
    }
    assert!(matches!(unasked(response(8), Some(8), None), Unasked::Violation(_)));
    // --- a failure of the whole stream between commands; one for a command is a violation
    let failure = |command_id| {
        crdt_stream_out::Message::Failure(Failure {
            command_id,
            description: "gone".into(),
            restart: false,
        })
    };
    assert_eq!(unasked(failure(0), None, None), Unasked::StreamFailure("gone".into()));
    assert!(matches!(unasked(failure(2), None, None), Unasked::Violation(_)));
}
