//! Who is online per room: each room is a CRDT entity holding an ORSet of user
//! names. `Join` and `Leave` change it; `Watch` is a streamed command that sends
//! the users online now and again after every change, until the client goes.
//! A watcher that names a user keeps that user online while it watches: the
//! user is added when the watch opens and removed when its client cancels.

use strata_sdk::{Command, CrdtContext, CrdtEntity, CrdtService, Failure, OrSet, Reply, Service};

/// Messages generated from `proto/presence.proto`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/com.example.presence.rs"));
}

/// The `FileDescriptorSet` of `proto/`, imports included, as discovery sends it.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

pub const PRESENCE: &str = "com.example.presence.Presence";

/// One room.
pub struct Room;

fn online(users: &OrSet<String>) -> Reply {
    Reply::message(&api::Online {
        users: users.iter().cloned().collect(),
    })
}

fn user_of(user: String) -> Result<String, Failure> {
    let user = user.trim().to_string();
    if user.is_empty() {
        return Err(Failure::new("a user name is required"));
    }
    Ok(user)
}

impl CrdtEntity for Room {
    type Crdt = OrSet<String>;

    fn handle_command(&self, command: &Command, ctx: &mut CrdtContext<'_, OrSet<String>>) -> Result<Reply, Failure> {
        match command.name() {
            "Join" => {
                let user = user_of(command.decode::<api::Membership>()?.user)?;
                ctx.state_mut().add(user);
            }
            "Leave" => {
                let user = user_of(command.decode::<api::Membership>()?.user)?;
                ctx.state_mut().remove(&user);
            }
            "Watch" => {
                if !ctx.is_streamed() {
                    return Err(Failure::new("Watch is a streamed method"));
                }
                let watching: api::WatchRoom = command.decode()?;
                if !watching.user.trim().is_empty() {
                    let user = watching.user.trim().to_string();
                    ctx.state_mut().add(user.clone());
                    ctx.on_cancel(move |cancelled| {
                        cancelled.state_mut().remove(&user);
                    });
                }
                ctx.on_change(|users, _| Ok(online(users)));
            }
            other => return Err(Failure::new(format!("unknown command {other}"))),
        }
        Ok(online(ctx.state()))
    }
}

/// The user function.
pub fn service() -> Service {
    Service::new(DESCRIPTORS)
        .service_name("presence")
        .service_version(env!("CARGO_PKG_VERSION"))
        .crdt(CrdtService::new(PRESENCE, |_| Room))
}
