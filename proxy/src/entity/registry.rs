//! Which entities are active: a map from (service, entity id) to the mailbox of
//! the entity's actor, bounded in size. Admitting an entity beyond the bound
//! lets go of the least recently used one (its actor finishes what it has and
//! passivates); an entity with open streamed commands is never let go of this
//! way, and when every active entity has one, a new entity is refused. Owns
//! only the map; actors and sessions live elsewhere.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::mpsc;

use super::session::EntityCommand;

/// (gRPC service name, entity id).
pub(super) type ActorKey = (String, String);

/// Commands travel boxed, so each entity's channel allocates small slots.
pub(super) type Mailbox = mpsc::Sender<Box<EntityCommand>>;

/// One active entity: its mailbox, when it was last asked for, and how many
/// streams it has open (kept up to date by its actor).
struct Active {
    mailbox: Mailbox,
    used: u64,
    streams: Arc<AtomicUsize>,
}

/// Every active entity has open streams, so none can make room for another.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Full {
    pub active: usize,
}

#[derive(Default)]
struct Actors {
    map: HashMap<ActorKey, Active>,
    /// Counts lookups: the "time" of each entity's last use.
    clock: u64,
}

pub(super) struct ActorRegistry {
    actors: Mutex<Actors>,
    max_active: usize,
}

impl Default for ActorRegistry {
    fn default() -> Self {
        ActorRegistry::new(usize::MAX)
    }
}

impl ActorRegistry {
    /// A registry of at most `max_active` entities (at least one).
    pub(super) fn new(max_active: usize) -> Self {
        ActorRegistry {
            actors: Mutex::default(),
            max_active: max_active.max(1),
        }
    }

    /// The mailbox of the entity's actor; `start` starts one when there is none
    /// (or the last one stopped), after letting go of the least recently used
    /// entity without open streams if the registry is full. Returns the evicted
    /// entity, if any.
    pub(super) fn mailbox(
        &self,
        key: &ActorKey,
        start: impl FnOnce() -> (Mailbox, Arc<AtomicUsize>),
    ) -> Result<(Mailbox, Option<ActorKey>), Full> {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        actors.clock += 1;
        let now = actors.clock;
        if let Some(active) = actors.map.get_mut(key) {
            if !active.mailbox.is_closed() {
                active.used = now;
                return Ok((active.mailbox.clone(), None));
            }
            actors.map.remove(key);
        }
        let evicted = if actors.map.len() >= self.max_active {
            let oldest = actors
                .map
                .iter()
                .filter(|(_, active)| active.streams.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, active)| active.used)
                .map(|(key, _)| key.clone());
            let Some(oldest) = oldest else {
                return Err(Full {
                    active: actors.map.len(),
                });
            };
            // Dropping the registry's sender lets the actor finish its queue and
            // passivate once no caller holds a sender any more.
            actors.map.remove(&oldest);
            Some(oldest)
        } else {
            None
        };
        let (mailbox, streams) = start();
        actors.map.insert(
            key.clone(),
            Active {
                mailbox: mailbox.clone(),
                used: now,
                streams,
            },
        );
        Ok((mailbox, evicted))
    }

    /// Forgets `mailbox` if it is still the entity's.
    pub(super) fn forget(&self, key: &ActorKey, mailbox: &Mailbox) {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        if actors.map.get(key).is_some_and(|a| a.mailbox.same_channel(mailbox)) {
            actors.map.remove(key);
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
            .map
            .get(key)
            .is_some_and(|a| ours.is_some_and(|o| a.mailbox.same_channel(&o)))
        {
            actors.map.remove(key);
        }
        mailbox.close();
    }

    /// Forgets the entities `which` selects; their actors finish what they have
    /// and passivate. Returns how many.
    pub(super) fn release(&self, which: impl Fn(&str, &str) -> bool) -> usize {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        let before = actors.map.len();
        actors.map.retain(|(service, entity_id), _| !which(service, entity_id));
        before - actors.map.len()
    }

    pub(super) fn len(&self) -> usize {
        self.actors.lock().expect("entity registry poisoned").map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> ActorKey {
        ("test.Cart".into(), id.into())
    }

    #[test]
    fn a_full_registry_lets_go_of_the_least_recently_used_entity() {
        let registry = ActorRegistry::new(2);
        let mut receivers = HashMap::new();
        let mut start = |id: &str| {
            let (tx, rx) = mpsc::channel(1);
            receivers.insert(id.to_string(), rx);
            (tx, Arc::default())
        };
        assert_eq!(registry.mailbox(&key("a"), || start("a")).unwrap().1, None);
        assert_eq!(registry.mailbox(&key("b"), || start("b")).unwrap().1, None);
        // --- a is used again, so b is now the least recently used
        let (_, evicted) = registry.mailbox(&key("a"), || unreachable!("a is active")).unwrap();
        assert_eq!(evicted, None);
        // --- admitting c lets go of b, not a
        let (_, evicted) = registry.mailbox(&key("c"), || start("c")).unwrap();
        assert_eq!(evicted, Some(key("b")));
        assert_eq!(registry.len(), 2);
        // b's actor sees its mailbox end (it passivates); a's and c's stay open
        assert!(matches!(
            receivers.get_mut("b").unwrap().try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(matches!(
            receivers.get_mut("a").unwrap().try_recv(),
            Err(mpsc::error::TryRecvError::Empty)
        ));
    }

    #[test]
    fn entities_with_open_streams_are_never_evicted_and_count_against_the_cap() {
        let registry = ActorRegistry::new(2);
        let mut receivers = Vec::new();
        let mut start = |streams: usize| {
            let (tx, rx) = mpsc::channel(1);
            receivers.push(rx);
            (tx, Arc::new(AtomicUsize::new(streams)))
        };
        // --- a (least recently used) watches a stream, b does not
        registry.mailbox(&key("a"), || start(1)).unwrap();
        registry.mailbox(&key("b"), || start(0)).unwrap();
        // --- c evicts b, skipping a
        let (_, evicted) = registry.mailbox(&key("c"), || start(1)).unwrap();
        assert_eq!(evicted, Some(key("b")));
        // --- with a and c both streaming, d is refused and nothing is evicted
        assert_eq!(
            registry.mailbox(&key("d"), || start(0)).unwrap_err(),
            Full { active: 2 }
        );
        assert_eq!(registry.len(), 2);
    }
}
