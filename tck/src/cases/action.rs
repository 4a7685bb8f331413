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

/// The kind of answer a group of steps asks for.
#[derive(Debug, Clone, Copy)]
enum Answering {
    Reply,
    Nothing,
    Forward,
    Failure,
}

impl Answering {
    /// The step that asks for it, named `name`.
    fn steps(self, name: &str) -> Vec<ProcessStep> {
        match self {
            Answering::Reply => vec![reply_with(name)],
            Answering::Nothing => vec![],
            Answering::Forward => vec![forward_to(name)],
            Answering::Failure => vec![fail_with(name)],
        }
    }

    /// The response it makes, with `side_effects`.
    fn response(self, name: &str, side_effects: Vec<SideEffect>) -> ActionResponse {
        match self {
            Answering::Reply => replied(name, side_effects),
            Answering::Nothing => nothing(side_effects),
            Answering::Forward => forwarded(name, side_effects),
            Answering::Failure => failed(name, side_effects),
        }
    }

    /// CloudState's kit's four groups of this kind (alone, with a side effect,
    /// with a synchronous one, with three) and their responses.
    fn four_groups(self) -> Vec<(ProcessGroup, ActionResponse)> {
        let with = |name: &str, extra: Vec<ProcessStep>| group([self.steps(name), extra].concat());
        vec![
            (with("one", vec![]), self.response("one", vec![])),
            (
                with("two", vec![effect_to("other", false)]),
                self.response("two", effects(&["other"], false)),
            ),
            (
                with("three", vec![effect_to("another", true)]),
                self.response("three", effects(&["another"], true)),
            ),
            (
                with("four", effects_to(&["a", "b", "c"])),
                self.response("four", effects(&["a", "b", "c"], false)),
            ),
        ]
    }
}

/// A streamed-out call of the four groups of `kind`.
async fn streamed_out_of(kit: &Kit, kind: Answering) -> Check {
    let (groups, answers): (Vec<_>, Vec<_>) = kind.four_groups().into_iter().unzip();
    streamed_out(kit, Request { groups }, answers).await
}

/// A streamed call: the four groups of `kind` one request each, then one request
/// of two groups.
async fn streamed_of(kit: &Kit, kind: Answering) -> Check {
    let mut exchanges: Vec<(Request, Vec<ActionResponse>)> = kind
        .four_groups()
        .into_iter()
        .map(|(group, answer)| (Request { groups: vec![group] }, vec![answer]))
        .collect();
    exchanges.push((
        Request {
            groups: vec![
                group(kind.steps("five")),
                group([kind.steps("six"), vec![effect_to("other", false)]].concat()),
            ],
        },
        vec![
            kind.response("five", vec![]),
            kind.response("six", effects(&["other"], false)),
        ],
    ));
    streamed(kit, exchanges).await
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
            streamed_out_of(kit, Answering::Reply)
        }),
        model_case!("verify streamed-out command no replies and side effects", |kit| {
            streamed_out_of(kit, Answering::Nothing)
        }),
        model_case!("verify streamed-out command forwards and side effects", |kit| {
            streamed_out_of(kit, Answering::Forward)
        }),
        model_case!("verify streamed-out command failures and side effects", |kit| {
            streamed_out_of(kit, Answering::Failure)
        }),
        model_case!("verify streamed command replies and side effects", |kit| {
            streamed_of(kit, Answering::Reply)
        }),
        model_case!("verify streamed command no replies and side effects", |kit| {
            streamed_of(kit, Answering::Nothing)
        }),
        model_case!("verify streamed command forwards and side effects", |kit| {
            streamed_of(kit, Answering::Forward)
        }),
        model_case!("verify streamed command failures and side effects", |kit| {
            streamed_of(kit, Answering::Failure)
        }),
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

/// Every message of a streamed answer, until it ends.
async fn messages_of(
    answer: Result<tonic::Response<tonic::Streaming<act::Response>>, tonic::Status>,
) -> Result<Vec<String>, String> {
    let mut answers = answer
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
    Ok(messages)
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
    let messages = messages_of(client(kit).process_streamed_out(request.clone()).await).await?;
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
    let messages = messages_of(
        client(kit)
            .process_streamed(futures::stream::iter(requests.clone()))
            .await,
    )
    .await?;
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
