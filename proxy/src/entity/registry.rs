//! Which entities are active: a map from (service, entity id) to the mailbox of
//! the entity's actor. Owns only the map; actors and sessions live elsewhere.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::mpsc;

use super::session::EntityCommand;

/// (gRPC service name, entity id).
pub(super) type ActorKey = (String, String);

/// Commands travel boxed, so each entity's channel allocates small slots.
pub(super) type Mailbox = mpsc::Sender<Box<EntityCommand>>;

#[derive(Default)]
pub(super) struct ActorRegistry {
    actors: Mutex<HashMap<ActorKey, Mailbox>>,
}

impl ActorRegistry {
    /// The mailbox of the entity's actor; `start` starts one when there is none
    /// (or the last one stopped).
    pub(super) fn mailbox(&self, key: &ActorKey, start: impl FnOnce() -> Mailbox) -> Mailbox {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        if let Some(mailbox) = actors.get(key) {
            if !mailbox.is_closed() {
                return mailbox.clone();
            }
        }
        let mailbox = start();
        actors.insert(key.clone(), mailbox.clone());
        mailbox
    }

    /// Forgets `mailbox` if it is still the entity's.
    pub(super) fn forget(&self, key: &ActorKey, mailbox: &Mailbox) {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        if actors.get(key).is_some_and(|m| m.same_channel(mailbox)) {
            actors.remove(key);
        }
    }

    /// An actor going idle: leaves the registry (only its own entry: after a
    /// release a new actor may already serve the entity) and refuses new sends.
    pub(super) fn leave(
        &self,
        key: &ActorKey,
        own: &mpsc::WeakSender<Box<EntityCommand>>,
        mailbox: &mut mpsc::Receiver<Box<EntityCommand>>,
    ) {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        let ours = own.upgrade();
        if actors
            .get(key)
            .is_some_and(|m| ours.is_some_and(|o| m.same_channel(&o)))
        {
            actors.remove(key);
        }
        mailbox.close();
    }

    /// Forgets the entities `which` selects; their actors finish what they have
    /// and passivate. Returns how many.
    pub(super) fn release(&self, which: impl Fn(&str, &str) -> bool) -> usize {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        let before = actors.len();
        actors.retain(|(service, entity_id), _| !which(service, entity_id));
        before - actors.len()
    }

    pub(super) fn len(&self) -> usize {
        self.actors.lock().expect("entity registry poisoned").len()
    }
}
