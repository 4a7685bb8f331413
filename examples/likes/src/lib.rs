//! Likes per post: each post is a CRDT entity holding a PNCounter. A like adds
//! one, an unlike takes one away (never below zero), and the proxy persists
//! every change before the answer, so the count survives restarts and scale to
//! zero.

use strata_sdk::{Command, CrdtContext, CrdtEntity, CrdtService, Failure, PnCounter, Reply, Service};

/// Messages generated from `proto/likes.proto`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/com.example.likes.rs"));
}

/// The `FileDescriptorSet` of `proto/`, imports included, as discovery sends it.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

pub const LIKES: &str = "com.example.likes.Likes";

/// One post's likes.
pub struct PostLikes;

fn count(counter: &PnCounter) -> Reply {
    let likes = i32::try_from(counter.value().max(0)).unwrap_or(i32::MAX);
    Reply::message(&api::LikeCount { likes })
}

impl CrdtEntity for PostLikes {
    type Crdt = PnCounter;

    fn handle_command(&self, command: &Command, ctx: &mut CrdtContext<'_, PnCounter>) -> Result<Reply, Failure> {
        let _: api::Post = command.decode()?;
        match command.name() {
            "Like" => {
                ctx.state_mut().increment(1);
            }
            "Unlike" => {
                if ctx.state().value() <= 0 {
                    return Err(Failure::new("this post has no likes to take back"));
                }
                ctx.state_mut().decrement(1);
            }
            "GetLikes" => {}
            other => return Err(Failure::new(format!("unknown command {other}"))),
        }
        Ok(count(ctx.state()))
    }
}

/// The user function.
pub fn service() -> Service {
    Service::new(DESCRIPTORS)
        .service_name("likes")
        .service_version(env!("CARGO_PKG_VERSION"))
        .crdt(CrdtService::new(LIKES, |_| PostLikes))
}
