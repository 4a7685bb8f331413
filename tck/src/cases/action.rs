//! Actions: the model cases (replies, no replies, forwards and failures, each with
//! side effects, in all four shapes) and the proxy cases (what the proxy sends
//! for client calls of each shape, forwards and side effects as calls of their
//! own, failures, HTTP).

use futures::{future::BoxFuture, StreamExt};
use prost_types::Any;
use strata_proto::cloudstate::{
    action::{ActionCommand, ActionResponse},
    SideEffect,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{expect_eq, grpc_failure, http_post, Expected};
use crate::{
    kit::{Case, Kit},
    messages::{action as m, any, side_effect},
    model::action::{
        self as act, action_tck_model_client::ActionTckModelClient, process_step::Step, ProcessGroup, ProcessStep,
        Request,
    },
    probe::{Check, Seen},
    protocol::Shape,
};

pub const MODEL: &str = "cloudstate.tck.model.action.ActionTckModel";
pub const TWO: &str = "cloudstate.tck.model.action.ActionTwo";
const PROTOCOL: &str = "cloudstate.action.ActionProtocol";

const MODEL_SECTION: &str = "model: action";
const PROXY_SECTION: &str = "proxy: action";
const BOTH: &[&str] = &[MODEL, TWO];

fn step(step: Step) -> ProcessStep {
    ProcessStep { step: Some(step) }
}

fn reply_with(message: &str) -> ProcessStep {
    step(Step::Reply(act::Reply {
        message: message.into(),
    }))
}

fn forward_to(id: &str) -> ProcessStep {
    step(Step::Forward(act::Forward { id: id.into() }))
}

fn fail_with(message: &str) -> ProcessStep {
    step(Step::Fail(act::Fail {
        message: message.into(),
    }))
}

fn effect_to(id: &str, synchronous: bool) -> ProcessStep {
    step(Step::Effect(act::SideEffect {
        id: id.into(),
        synchronous,
    }))
}

fn effects_to(ids: &[&str]) -> Vec<ProcessStep> {
    ids.iter().map(|id| effect_to(id, false)).collect()
}

fn group(steps: Vec<ProcessStep>) -> ProcessGroup {
    ProcessGroup { steps }
}

fn single(steps: Vec<ProcessStep>) -> Request {
    Request {
        groups: vec![group(steps)],
    }
}

fn response(message: &str) -> Any {
    any(&act::Response {
        message: message.into(),
    })
}

fn effects(ids: &[&str], synchronous: bool) -> Vec<SideEffect> {
    ids.iter()
        .map(|id| side_effect(TWO, "Call", any(&act::OtherRequest { id: (*id).into() }), synchronous))
        .collect()
}

fn replied(message: &str, side_effects: Vec<SideEffect>) -> ActionResponse {
    m::reply(response(message), side_effects)
}

fn forwarded(id: &str, side_effects: Vec<SideEffect>) -> ActionResponse {
    m::forward(TWO, "Call", any(&act::OtherRequest { id: id.into() }), side_effects)
}

fn failed(description: &str, side_effects: Vec<SideEffect>) -> ActionResponse {
    m::failure(description, side_effects)
}

fn nothing(side_effects: Vec<SideEffect>) -> ActionResponse {
    m::no_reply(side_effects)
}

fn joined(parts: Vec<Vec<SideEffect>>) -> Vec<SideEffect> {
    parts.into_iter().flatten().collect()
}

/// One unary call, one expected answer.
async fn unary(kit: &Kit, request: Request, expected: ActionResponse) -> Check {
    let mut c = kit.protocol.action(Shape::Unary);
    c.exchange(m::command(MODEL, "ProcessUnary", Some(any(&request))), expected)
        .await
}

/// A streamed-in call of `requests`, one expected answer.
async fn streamed_in(kit: &Kit, requests: Vec<Request>, expected: ActionResponse) -> Check {
    let mut c = kit.protocol.action(Shape::StreamedIn);
    c.send(m::command(MODEL, "ProcessStreamedIn", None))?;
    for request in requests {
        c.send(m::message(any(&request)))?;
    }
    c.complete();
    c.expect(expected).await
}

/// A streamed-out call, its answers in order, then the end.
async fn streamed_out(kit: &Kit, request: Request, expected: Vec<ActionResponse>) -> Check {
    let mut c = kit.protocol.action(Shape::StreamedOut);
    c.send(m::command(MODEL, "ProcessStreamedOut", Some(any(&request))))?;
    for answer in expected {
        c.expect(answer).await?;
    }
    c.answers.expect_complete().await
}

/// A streamed call: each request and its expected answers, then the end.
async fn streamed(kit: &Kit, exchanges: Vec<(Request, Vec<ActionResponse>)>) -> Check {
    let mut c = kit.protocol.action(Shape::Streamed);
    c.send(m::command(MODEL, "ProcessStreamed", None))?;
    for (request, answers) in exchanges {
        c.send(m::message(any(&request)))?;
        for answer in answers {
            c.expect(answer).await?;
        }
    }
    c.passivate().await
}

macro_rules! model_case {
    ($name:expr, |$kit:ident| $body:expr) => {
        Case {
            section: MODEL_SECTION,
            name: $name,
            requires: BOTH,
            run: |$kit| -> BoxFuture<'_, Check> { Box::pin(async move { $body.await }) },
        }
    };
}

pub fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case {
            section: MODEL_SECTION,
            name: "verify action entity discovery",
            requires: BOTH,
            run: |kit| Box::pin(discovery(kit)),
        },
        model_case!("verify unary command reply", |kit| unary(
            kit,
            single(vec![reply_with("one")]),
            replied("one", vec![])
        )),
        model_case!("verify unary command reply with side effect", |kit| unary(
            kit,
            single(vec![reply_with("two"), effect_to("other", false)]),
            replied("two", effects(&["other"], false))
        )),
        model_case!("verify unary command reply with synchronous side effect", |kit| unary(
            kit,
            single(vec![reply_with("three"), effect_to("another", true)]),
            replied("three", effects(&["another"], true))
        )),
        model_case!("verify unary command reply with multiple side effects", |kit| unary(
            kit,
            single([vec![reply_with("four")], effects_to(&["a", "b", "c"])].concat()),
            replied("four", effects(&["a", "b", "c"], false))
        )),
        model_case!("verify unary command no reply", |kit| unary(
            kit,
            single(vec![]),
            nothing(vec![])
        )),
        model_case!("verify unary command no reply with side effect", |kit| unary(
            kit,
            single(vec![effect_to("other", false)]),
            nothing(effects(&["other"], false))
        )),
        model_case!("verify unary command no reply with synchronous side effect", |kit| {
            unary(
                kit,
                single(vec![effect_to("another", true)]),
                nothing(effects(&["another"], true)),
            )
        }),
        model_case!("verify unary command no reply with multiple side effects", |kit| unary(
            kit,
            single(effects_to(&["a", "b", "c"])),
            nothing(effects(&["a", "b", "c"], false))
        )),
        model_case!("verify unary command forward", |kit| unary(
            kit,
            single(vec![forward_to("one")]),
            forwarded("one", vec![])
        )),
        model_case!("verify unary command forward with side effect", |kit| unary(
            kit,
            single(vec![forward_to("two"), effect_to("other", false)]),
            forwarded("two", effects(&["other"], false))
        )),
        model_case!(
            "verify unary command forward with synchronous side effect",
            |kit| unary(
                kit,
                single(vec![forward_to("three"), effect_to("another", true)]),
                forwarded("three", effects(&["another"], true))
            )
        ),
        model_case!("verify unary command forward with multiple side effects", |kit| unary(
            kit,
            single([vec![forward_to("four")], effects_to(&["a", "b", "c"])].concat()),
            forwarded("four", effects(&["a", "b", "c"], false))
        )),
        model_case!("verify unary command failure", |kit| unary(
            kit,
            single(vec![fail_with("one")]),
            failed("one", vec![])
        )),
        model_case!("verify unary command failure with side effect", |kit| unary(
            kit,
            single(vec![fail_with("two"), effect_to("other", false)]),
            failed("two", effects(&["other"], false))
        )),
        model_case!(
            "verify unary command failure with synchronous side effect",
            |kit| unary(
                kit,
                single(vec![fail_with("three"), effect_to("another", true)]),
                failed("three", effects(&["another"], true))
            )
        ),
        model_case!("verify unary command failure with multiple side effects", |kit| unary(
            kit,
            single([vec![fail_with("four")], effects_to(&["a", "b", "c"])].concat()),
            failed("four", effects(&["a", "b", "c"], false))
        )),
        model_case!("verify streamed-in command reply", |kit| streamed_in(
            kit,
            vec![single(vec![reply_with("one")])],
            replied("one", vec![])
        )),
        model_case!("verify streamed-in command reply with side effects", |kit| streamed_in(
            kit,
            vec![
                single(vec![reply_with("two"), effect_to("a", false)]),
                single(vec![effect_to("b", true)]),
                single(effects_to(&["c", "d"])),
            ],
            replied(
                "two",
                joined(vec![
                    effects(&["a"], false),
                    effects(&["b"], true),
                    effects(&["c", "d"], false)
                ])
            )
        )),
        model_case!("verify streamed-in command no reply (no requests)", |kit| streamed_in(
            kit,
            vec![],
            nothing(vec![])
        )),
        model_case!("verify streamed-in command no reply", |kit| streamed_in(
            kit,
            vec![single(vec![])],
            nothing(vec![])
        )),
        model_case!("verify streamed-in command no reply with side effects", |kit| {
            streamed_in(
                kit,
                vec![
                    single(vec![effect_to("a", false)]),
                    single(vec![effect_to("b", true)]),
                    single(effects_to(&["c", "d"])),
                ],
                nothing(joined(vec![
                    effects(&["a"], false),
                    effects(&["b"], true),
                    effects(&["c", "d"], false),
                ])),
            )
        }),
        model_case!("verify streamed-in command forward", |kit| streamed_in(
            kit,
            vec![single(vec![forward_to("one")])],
            forwarded("one", vec![])
        )),
        model_case!("verify streamed-in command forward with side effects", |kit| {
            streamed_in(
                kit,
                vec![
                    single(vec![forward_to("two"), effect_to("a", false)]),
                    single(vec![effect_to("b", true)]),
                    single(effects_to(&["c", "d"])),
                ],
                forwarded(
                    "two",
                    joined(vec![
                        effects(&["a"], false),
                        effects(&["b"], true),
                        effects(&["c", "d"], false),
                    ]),
                ),
            )
        }),
        model_case!("verify streamed-in command failure", |kit| streamed_in(
            kit,
            vec![single(vec![fail_with("one")])],
            failed("one", vec![])
        )),
        model_case!("verify streamed-in command failure with side effects", |kit| {
            streamed_in(
                kit,
                vec![
                    single(vec![fail_with("two"), effect_to("a", false)]),
                    single(vec![effect_to("b", true)]),
                    single(effects_to(&["c", "d"])),
                ],
                failed(
                    "two",
                    joined(vec![
                        effects(&["a"], false),
                        effects(&["b"], true),
                        effects(&["c", "d"], false),
                    ]),
                ),
            )
        }),
        model_case!("verify streamed-out command replies and side effects", |kit| {
            streamed_out(
                kit,
                Request {
                    groups: vec![
                        group(vec![reply_with("one")]),
                        group(vec![reply_with("two"), effect_to("other", false)]),
                        group(vec![reply_with("three"), effect_to("another", true)]),
                        group([vec![reply_with("four")], effects_to(&["a", "b", "c"])].concat()),
                    ],
                },
                vec![
                    replied("one", vec![]),
                    replied("two", effects(&["other"], false)),
                    replied("three", effects(&["another"], true)),
                    replied("four", effects(&["a", "b", "c"], false)),
                ],
            )
        }),
        model_case!("verify streamed-out command no replies and side effects", |kit| {
            streamed_out(
                kit,
                Request {
                    groups: vec![
                        group(vec![]),
                        group(vec![effect_to("other", false)]),
                        group(vec![effect_to("another", true)]),
                        group(effects_to(&["a", "b", "c"])),
                    ],
                },
                vec![
                    nothing(vec![]),
                    nothing(effects(&["other"], false)),
                    nothing(effects(&["another"], true)),
                    nothing(effects(&["a", "b", "c"], false)),
                ],
            )
        }),
        model_case!("verify streamed-out command forwards and side effects", |kit| {
            streamed_out(
                kit,
                Request {
                    groups: vec![
                        group(vec![forward_to("one")]),
                        group(vec![forward_to("two"), effect_to("other", false)]),
                        group(vec![forward_to("three"), effect_to("another", true)]),
                        group([vec![forward_to("four")], effects_to(&["a", "b", "c"])].concat()),
                    ],
                },
                vec![
                    forwarded("one", vec![]),
                    forwarded("two", effects(&["other"], false)),
                    forwarded("three", effects(&["another"], true)),
                    forwarded("four", effects(&["a", "b", "c"], false)),
                ],
            )
        }),
        model_case!("verify streamed-out command failures and side effects", |kit| {
            streamed_out(
                kit,
                Request {
                    groups: vec![
                        group(vec![fail_with("one")]),
                        group(vec![fail_with("two"), effect_to("other", false)]),
                        group(vec![fail_with("three"), effect_to("another", true)]),
                        group([vec![fail_with("four")], effects_to(&["a", "b", "c"])].concat()),
                    ],
                },
                vec![
                    failed("one", vec![]),
                    failed("two", effects(&["other"], false)),
                    failed("three", effects(&["another"], true)),
                    failed("four", effects(&["a", "b", "c"], false)),
                ],
            )
        }),
        model_case!("verify streamed command replies and side effects", |kit| streamed(
            kit,
            vec![
                (single(vec![reply_with("one")]), vec![replied("one", vec![])]),
                (
                    single(vec![reply_with("two"), effect_to("other", false)]),
                    vec![replied("two", effects(&["other"], false))]
                ),
                (
                    single(vec![reply_with("three"), effect_to("another", true)]),
                    vec![replied("three", effects(&["another"], true))]
                ),
                (
                    single([vec![reply_with("four")], effects_to(&["a", "b", "c"])].concat()),
                    vec![replied("four", effects(&["a", "b", "c"], false))]
                ),
                (
                    Request {
                        groups: vec![
                            group(vec![reply_with("five")]),
                            group(vec![reply_with("six"), effect_to("other", false)])
                        ]
                    },
                    vec![replied("five", vec![]), replied("six", effects(&["other"], false))]
                ),
            ]
        )),
        model_case!("verify streamed command no replies and side effects", |kit| streamed(
            kit,
            vec![
                (single(vec![]), vec![nothing(vec![])]),
                (
                    single(vec![effect_to("other", false)]),
                    vec![nothing(effects(&["other"], false))]
                ),
                (
                    single(vec![effect_to("another", true)]),
                    vec![nothing(effects(&["another"], true))]
                ),
                (
                    single(effects_to(&["a", "b", "c"])),
                    vec![nothing(effects(&["a", "b", "c"], false))]
                ),
                (
                    Request {
                        groups: vec![group(vec![]), group(vec![effect_to("other", false)])]
                    },
                    vec![nothing(vec![]), nothing(effects(&["other"], false))]
                ),
            ]
        )),
        model_case!("verify streamed command forwards and side effects", |kit| streamed(
            kit,
            vec![
                (single(vec![forward_to("one")]), vec![forwarded("one", vec![])]),
                (
                    single(vec![forward_to("two"), effect_to("other", false)]),
                    vec![forwarded("two", effects(&["other"], false))]
                ),
                (
                    single(vec![forward_to("three"), effect_to("another", true)]),
                    vec![forwarded("three", effects(&["another"], true))]
                ),
                (
                    single([vec![forward_to("four")], effects_to(&["a", "b", "c"])].concat()),
                    vec![forwarded("four", effects(&["a", "b", "c"], false))]
                ),
                (
                    Request {
                        groups: vec![
                            group(vec![forward_to("five")]),
                            group(vec![forward_to("six"), effect_to("other", false)])
                        ]
                    },
                    vec![forwarded("five", vec![]), forwarded("six", effects(&["other"], false))]
                ),
            ]
        )),
        model_case!("verify streamed command failures and side effects", |kit| streamed(
            kit,
            vec![
                (single(vec![fail_with("one")]), vec![failed("one", vec![])]),
                (
                    single(vec![fail_with("two"), effect_to("other", false)]),
                    vec![failed("two", effects(&["other"], false))]
                ),
                (
                    single(vec![fail_with("three"), effect_to("another", true)]),
                    vec![failed("three", effects(&["another"], true))]
                ),
                (
                    single([vec![fail_with("four")], effects_to(&["a", "b", "c"])].concat()),
                    vec![failed("four", effects(&["a", "b", "c"], false))]
                ),
                (
                    Request {
                        groups: vec![
                            group(vec![fail_with("five")]),
                            group(vec![fail_with("six"), effect_to("other", false)])
                        ]
                    },
                    vec![failed("five", vec![]), failed("six", effects(&["other"], false))]
                ),
            ]
        )),
    ];
    cases.extend(proxy_cases());
    cases
}

async fn discovery(kit: &Kit) -> Check {
    let discovered = kit.discovered_services();
    for service in [MODEL, TWO] {
        if !discovered.iter().any(|s| s == service) {
            return Err(format!("the descriptors do not define {service}: {discovered:?}"));
        }
        expect_eq(
            "entity type",
            PROTOCOL,
            kit.entity(service).map_or("", |e| e.entity_type.as_str()),
        )?;
    }
    Ok(())
}

fn proxy_cases() -> Vec<Case> {
    vec![
        Case {
            section: PROXY_SECTION,
            name: "verify unary command processing",
            requires: BOTH,
            run: |kit| Box::pin(unary_processing(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify streamed-in command processing",
            requires: BOTH,
            run: |kit| Box::pin(streamed_in_processing(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify streamed-out command processing",
            requires: BOTH,
            run: |kit| Box::pin(streamed_out_processing(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify streamed command processing",
            requires: BOTH,
            run: |kit| Box::pin(streamed_processing(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify unary forwards and side effects",
            requires: BOTH,
            run: |kit| Box::pin(unary_forwards_and_side_effects(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify streamed forwards and side effects",
            requires: BOTH,
            run: |kit| Box::pin(streamed_forwards_and_side_effects(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify unary failures",
            requires: BOTH,
            run: |kit| Box::pin(unary_failures(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify streamed failures",
            requires: BOTH,
            run: |kit| Box::pin(streamed_failures(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify unary HTTP API (Strata: failures are JSON error bodies)",
            requires: BOTH,
            run: |kit| Box::pin(unary_http(kit)),
        },
    ]
}

fn client(kit: &Kit) -> ActionTckModelClient<tonic::transport::Channel> {
    ActionTckModelClient::new(kit.grpc.clone())
}

fn command(name: &str, request: &Request) -> ActionCommand {
    m::command(MODEL, name, Some(any(request)))
}

fn header(name: &str) -> ActionCommand {
    m::command(MODEL, name, None)
}

fn call_two(id: &str) -> ActionCommand {
    m::command(TWO, "Call", Some(any(&act::OtherRequest { id: id.into() })))
}

fn message_of(answer: Result<tonic::Response<act::Response>, tonic::Status>) -> Result<String, String> {
    answer
        .map(|r| r.into_inner().message)
        .map_err(|status| format!("the call failed: {status:?}"))
}

async fn unary_processing(kit: &Kit) -> Check {
    let request = single(vec![reply_with("one")]);
    let answer = message_of(client(kit).process_unary(request.clone()).await)?;
    expect_eq("ProcessUnary answered", "one", answer.as_str())?;
    let mut c = kit.interceptor.action(Shape::Unary).await?;
    c.expect_incoming(command("ProcessUnary", &request)).await?;
    c.expect_outgoing(replied("one", vec![])).await
}

async fn streamed_in_processing(kit: &Kit) -> Check {
    let request = single(vec![reply_with("two")]);
    let answer = message_of(
        client(kit)
            .process_streamed_in(futures::stream::iter([request.clone()]))
            .await,
    )?;
    expect_eq("ProcessStreamedIn answered", "two", answer.as_str())?;
    let mut c = kit.interceptor.action(Shape::StreamedIn).await?;
    c.expect_incoming(header("ProcessStreamedIn")).await?;
    c.expect_incoming(m::message(any(&request))).await?;
    c.incoming.expect_complete().await?;
    c.expect_outgoing(replied("two", vec![])).await
}

async fn streamed_out_processing(kit: &Kit) -> Check {
    let request = Request {
        groups: vec![
            group(vec![reply_with("A")]),
            group(vec![reply_with("B")]),
            group(vec![reply_with("C")]),
        ],
    };
    let mut answers = client(kit)
        .process_streamed_out(request.clone())
        .await
        .map_err(|status| format!("the call failed: {status:?}"))?
        .into_inner();
    let mut messages = Vec::new();
    while let Some(answer) = answers.next().await {
        messages.push(
            answer
                .map_err(|status| format!("the stream failed: {status:?}"))?
                .message,
        );
    }
    expect_eq(
        "ProcessStreamedOut answered",
        vec!["A", "B", "C"],
        messages.iter().map(String::as_str).collect(),
    )?;
    let mut c = kit.interceptor.action(Shape::StreamedOut).await?;
    c.expect_incoming(command("ProcessStreamedOut", &request)).await?;
    for message in ["A", "B", "C"] {
        c.expect_outgoing(replied(message, vec![])).await?;
    }
    c.outgoing.expect_complete().await
}

async fn streamed_processing(kit: &Kit) -> Check {
    let requests: Vec<Request> = ["X", "Y", "Z"].iter().map(|m| single(vec![reply_with(m)])).collect();
    let mut answers = client(kit)
        .process_streamed(futures::stream::iter(requests.clone()))
        .await
        .map_err(|status| format!("the call failed: {status:?}"))?
        .into_inner();
    let mut messages = Vec::new();
    while let Some(answer) = answers.next().await {
        messages.push(
            answer
                .map_err(|status| format!("the stream failed: {status:?}"))?
                .message,
        );
    }
    expect_eq(
        "ProcessStreamed answered",
        vec!["X", "Y", "Z"],
        messages.iter().map(String::as_str).collect(),
    )?;
    let mut c = kit.interceptor.action(Shape::Streamed).await?;
    c.expect_incoming(header("ProcessStreamed")).await?;
    for (request, message) in requests.iter().zip(["X", "Y", "Z"]) {
        c.expect_incoming(m::message(any(request))).await?;
        c.expect_outgoing(replied(message, vec![])).await?;
    }
    c.expect_closed().await
}

async fn unary_forwards_and_side_effects(kit: &Kit) -> Check {
    // --- a forward: the second service's answer is the client's
    let request = single(vec![forward_to("other")]);
    let answer = message_of(client(kit).process_unary(request.clone()).await)?;
    expect_eq("ProcessUnary answered", "", answer.as_str())?;
    let mut c = kit.interceptor.action(Shape::Unary).await?;
    c.expect_incoming(command("ProcessUnary", &request)).await?;
    c.expect_outgoing(forwarded("other", vec![])).await?;
    let mut two = kit.interceptor.action(Shape::Unary).await?;
    two.expect_incoming(call_two("other")).await?;
    two.expect_outgoing(m::reply(any(&act::Response::default()), vec![]))
        .await?;

    // --- a side effect: a call of its own, after the reply
    let request = single(vec![reply_with(""), effect_to("another", false)]);
    let answer = message_of(client(kit).process_unary(request.clone()).await)?;
    expect_eq("ProcessUnary answered", "", answer.as_str())?;
    let mut c = kit.interceptor.action(Shape::Unary).await?;
    c.expect_incoming(command("ProcessUnary", &request)).await?;
    c.expect_outgoing(replied("", effects(&["another"], false))).await?;
    let mut two = kit.interceptor.action(Shape::Unary).await?;
    two.expect_incoming(call_two("another")).await?;
    two.expect_outgoing(m::reply(any(&act::Response::default()), vec![]))
        .await
}

/// A streamed call whose requests the case sends one at a time.
struct Streamed {
    requests: mpsc::UnboundedSender<Request>,
    answers: tonic::Streaming<act::Response>,
}

async fn open_streamed(kit: &Kit) -> Result<Streamed, String> {
    let (requests, outgoing) = mpsc::unbounded_channel();
    let answers = client(kit)
        .process_streamed(UnboundedReceiverStream::new(outgoing))
        .await
        .map_err(|status| format!("the call failed: {status:?}"))?
        .into_inner();
    Ok(Streamed { requests, answers })
}

async fn streamed_forwards_and_side_effects(kit: &Kit) -> Check {
    let mut call = open_streamed(kit).await?;
    let one = single(vec![forward_to("one")]);
    call.requests.send(one.clone()).map_err(|_| "the call ended")?;
    let answer = call.answers.message().await.map_err(|s| format!("{s:?}"))?;
    expect_eq("the forward's answer", Some(act::Response::default()), answer)?;
    let mut c = kit.interceptor.action(Shape::Streamed).await?;
    c.expect_incoming(header("ProcessStreamed")).await?;
    c.expect_incoming(m::message(any(&one))).await?;
    c.expect_outgoing(forwarded("one", vec![])).await?;
    let mut two = kit.interceptor.action(Shape::Unary).await?;
    two.expect_incoming(call_two("one")).await?;
    two.expect_outgoing(m::reply(any(&act::Response::default()), vec![]))
        .await?;

    // --- no reply, with a side effect: the client gets nothing for it
    let effect = single(vec![effect_to("two", false)]);
    call.requests.send(effect.clone()).map_err(|_| "the call ended")?;
    c.expect_incoming(m::message(any(&effect))).await?;
    c.expect_outgoing(nothing(effects(&["two"], false))).await?;
    let mut two = kit.interceptor.action(Shape::Unary).await?;
    two.expect_incoming(call_two("two")).await?;
    two.expect_outgoing(m::reply(any(&act::Response::default()), vec![]))
        .await?;

    drop(call.requests);
    let end = call.answers.message().await.map_err(|s| format!("{s:?}"))?;
    expect_eq("after the requests end", None, end)?;
    c.expect_closed().await
}

async fn unary_failures(kit: &Kit) -> Check {
    let request = single(vec![fail_with("expected failure")]);
    grpc_failure(client(kit).process_unary(request.clone()).await, "expected failure")?;
    let mut c = kit.interceptor.action(Shape::Unary).await?;
    c.expect_incoming(command("ProcessUnary", &request)).await?;
    c.expect_outgoing(failed("expected failure", vec![])).await
}

async fn streamed_failures(kit: &Kit) -> Check {
    let mut call = open_streamed(kit).await?;
    let mut c = kit.interceptor.action(Shape::Streamed).await?;
    c.expect_incoming(header("ProcessStreamed")).await?;
    let request = single(vec![fail_with("expected failure")]);
    call.requests.send(request.clone()).map_err(|_| "the call ended")?;
    grpc_failure(call.answers.message().await, "expected failure")?;
    c.expect_incoming(m::message(any(&request))).await?;
    c.expect_outgoing(failed("expected failure", vec![])).await?;
    // The proxy ends the call with the failure: the function's side is cancelled.
    match c.outgoing.next().await? {
        Seen::Message(message) => Err(format!("nothing may follow the failure, got {message:?}")),
        _ => Ok(()),
    }
}

async fn unary_http(kit: &Kit) -> Check {
    let path = "tck/model/action/unary";
    http_post(
        kit,
        path,
        r#"{"groups": [{"steps": [{"reply": {"message": "foo"}}]}]}"#,
        Expected::Json(r#"{"message":"foo"}"#),
    )
    .await?;
    let mut c = kit.interceptor.action(Shape::Unary).await?;
    c.expect_incoming(command("ProcessUnary", &single(vec![reply_with("foo")])))
        .await?;
    c.expect_outgoing(replied("foo", vec![])).await?;

    http_post(
        kit,
        path,
        r#"{"groups": [{"steps": [{"fail": {"message": "boom"}}]}]}"#,
        Expected::Failure("boom"),
    )
    .await?;
    let mut c = kit.interceptor.action(Shape::Unary).await?;
    c.expect_incoming(command("ProcessUnary", &single(vec![fail_with("boom")])))
        .await?;
    c.expect_outgoing(failed("boom", vec![])).await
}
