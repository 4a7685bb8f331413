//! Which entities are active: a map from (service, entity id) to the mailbox of
//! the entity's actor, bounded by count and by the estimated bytes of state the
//! active entities hold. Admitting an entity beyond either bound, or an entity
//! growing past the byte budget, lets go of the least recently used others (each
//! actor finishes what it has and passivates). An entity with open streamed
//! commands is never let go of this way, and when every active entity has one,
//! a new entity is refused. Owns only the map; actors and sessions live
//! elsewhere.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::{mpsc, watch};

use super::session::EntityCommand;

/// (gRPC service name, entity id).
pub(super) type ActorKey = (String, String);

/// Commands travel boxed, so each entity's channel allocates small slots.
pub(super) type Mailbox = mpsc::Sender<Box<EntityCommand>>;

/// Closes when the entity's actor has ended: its commands answered and their
/// writes durable (`changed()` then fails). Its sender lives in the actor's task.
pub type Done = watch::Receiver<()>;

/// What starting an entity's actor gives the registry.
pub(super) struct Started {
    pub mailbox: Mailbox,
    pub streams: Arc<AtomicUsize>,
    pub done: Done,
}

/// One active entity: its mailbox, when it was last asked for, the bytes of
/// state its actor last reported holding, and how many streams it has open
/// (kept up to date by its actor).
struct Active {
    mailbox: Mailbox,
    used: u64,
    bytes: usize,
    streams: Arc<AtomicUsize>,
    done: Done,
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
    /// The sum of every active entity's `bytes`.
    bytes: usize,
}

impl Actors {
    fn remove(&mut self, key: &ActorKey) -> Option<Active> {
        let active = self.map.remove(key)?;
        self.bytes -= active.bytes;
        Some(active)
    }

    /// Lets go of the least recently used entity other than `keep` and those
    /// with open streams.
    fn evict_oldest(&mut self, keep: Option<&ActorKey>) -> Option<ActorKey> {
        let oldest = self
            .map
            .iter()
            .filter(|(key, active)| Some(*key) != keep && active.streams.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, active)| active.used)
            .map(|(key, _)| key.clone())?;
        // Dropping the registry's sender lets the actor finish its queue and
        // passivate once no caller holds a sender any more.
        self.remove(&oldest);
        Some(oldest)
    }
}

/// How many entities, and how many estimated bytes of their state, a registry
/// holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bounds {
    pub count: usize,
    pub bytes: usize,
}

pub(super) struct ActorRegistry {
    actors: Mutex<Actors>,
    bounds: Bounds,
}

impl Default for ActorRegistry {
    fn default() -> Self {
        ActorRegistry::new(Bounds {
            count: usize::MAX,
            bytes: usize::MAX,
        })
    }
}

impl ActorRegistry {
    /// A registry within `bounds` (at least one entity, whatever its size).
    pub(super) fn new(bounds: Bounds) -> Self {
        ActorRegistry {
            actors: Mutex::default(),
            bounds: Bounds {
                count: bounds.count.max(1),
                bytes: bounds.bytes,
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Actors> {
        self.actors.lock().expect("entity registry poisoned")
    }

    /// The mailbox of the entity's actor; `start` starts one when there is none
    /// (or the last one stopped), after letting go of least recently used
    /// entities (without open streams) while the registry is full by count or
    /// over its byte budget. Returns the evicted entities; refuses the entity
    /// when the registry is full by count of entities that all have streams.
    pub(super) fn mailbox(
        &self,
        key: &ActorKey,
        start: impl FnOnce() -> Started,
    ) -> Result<(Mailbox, Vec<ActorKey>), Full> {
        let mut actors = self.lock();
        actors.clock += 1;
        let now = actors.clock;
        if let Some(active) = actors.map.get_mut(key) {
            if !active.mailbox.is_closed() {
                active.used = now;
                return Ok((active.mailbox.clone(), Vec::new()));
            }
            actors.remove(key);
        }
        let mut evicted = Vec::new();
        while actors.map.len() >= self.bounds.count || actors.bytes > self.bounds.bytes {
            match actors.evict_oldest(None) {
                Some(oldest) => evicted.push(oldest),
                None => break,
            }
        }
        if actors.map.len() >= self.bounds.count {
            return Err(Full {
                active: actors.map.len(),
            });
        }
        let Started { mailbox, streams, done } = start();
        actors.map.insert(
            key.clone(),
            Active {
                mailbox: mailbox.clone(),
                used: now,
                bytes: 0,
                streams,
                done,
            },
        );
        Ok((mailbox, evicted))
    }

    /// Records that the actor behind `own` now holds `bytes` of state (if it
    /// is still the entity's), then lets go of least recently used others
    /// while the active entities hold more than the budget. Returns them.
    pub(super) fn weigh(
        &self,
        key: &ActorKey,
        own: &mpsc::WeakSender<Box<EntityCommand>>,
        bytes: usize,
    ) -> Vec<ActorKey> {
        let mut actors = self.lock();
        let Some(ours) = own.upgrade() else { return Vec::new() };
        let Some(active) = actors.map.get_mut(key).filter(|a| a.mailbox.same_channel(&ours)) else {
            return Vec::new();
        };
        let before = std::mem::replace(&mut active.bytes, bytes);
        actors.bytes = actors.bytes - before + bytes;
        let mut evicted = Vec::new();
        while actors.bytes > self.bounds.bytes {
            match actors.evict_oldest(Some(key)) {
                Some(oldest) => evicted.push(oldest),
                None => break,
            }
        }
        evicted
    }

    /// Forgets `mailbox` if it is still the entity's.
    pub(super) fn forget(&self, key: &ActorKey, mailbox: &Mailbox) {
        let mut actors = self.lock();
        if actors.map.get(key).is_some_and(|a| a.mailbox.same_channel(mailbox)) {
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
        let mut actors = self.lock();
        let ours = own.upgrade();
        if actors
            .map
            .get(key)
            .is_some_and(|a| ours.is_some_and(|o| a.mailbox.same_channel(&o)))
        {
            actors.remove(key);
        }
        mailbox.close();
    }

    /// Forgets the entities `which` selects; their actors finish what they have
    /// and passivate. Returns when each has ended.
    pub(super) fn release(&self, which: impl Fn(&str, &str) -> bool) -> Vec<Done> {
        let mut actors = self.lock();
        let chosen: Vec<ActorKey> = actors
            .map
            .keys()
            .filter(|(service, entity_id)| which(service, entity_id))
            .cloned()
            .collect();
        chosen
            .iter()
            .filter_map(|key| actors.remove(key))
            .map(|active| active.done)
            .collect()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// The estimated bytes of state the active entities hold.
    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> ActorKey {
        ("test.Cart".into(), id.into())
    }

    fn by_count(count: usize) -> Bounds {
        Bounds {
            count,
            bytes: usize::MAX,
        }
    }

    /// Mailboxes started for the test, whose receiving ends (and "actor alive"
    /// senders) it keeps.
    #[derive(Default)]
    struct Actors(
        HashMap<String, mpsc::Receiver<Box<EntityCommand>>>,
        HashMap<String, watch::Sender<()>>,
    );

    impl Actors {
        fn start(&mut self, id: &str) -> Started {
            self.start_streaming(id, 0)
        }

        /// An entity whose actor has `streams` open.
        fn start_streaming(&mut self, id: &str, streams: usize) -> Started {
            let (tx, rx) = mpsc::channel(1);
            self.0.insert(id.to_string(), rx);
            let (alive, done) = watch::channel(());
            self.1.insert(id.to_string(), alive);
            Started {
                mailbox: tx,
                streams: Arc::new(AtomicUsize::new(streams)),
                done,
            }
        }

        /// The actor of `id` ends.
        fn end(&mut self, id: &str) {
            self.1.remove(id);
        }

        /// Whether the entity's actor would see its mailbox end (and passivate).
        fn let_go(&mut self, id: &str) -> bool {
            matches!(
                self.0.get_mut(id).unwrap().try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            )
        }
    }

    #[test]
    fn a_full_registry_lets_go_of_the_least_recently_used_entity() {
        let registry = ActorRegistry::new(by_count(2));
        let mut started = Actors::default();
        assert_eq!(registry.mailbox(&key("a"), || started.start("a")).unwrap().1, vec![]);
        assert_eq!(registry.mailbox(&key("b"), || started.start("b")).unwrap().1, vec![]);
        // --- a is used again, so b is now the least recently used
        let (_, evicted) = registry.mailbox(&key("a"), || unreachable!("a is active")).unwrap();
        assert_eq!(evicted, vec![]);
        // --- admitting c lets go of b, not a
        let (_, evicted) = registry.mailbox(&key("c"), || started.start("c")).unwrap();
        assert_eq!(evicted, vec![key("b")]);
        assert_eq!(registry.len(), 2);
        // b's actor sees its mailbox end (it passivates); a's and c's stay open
        assert!(started.let_go("b"));
        assert!(!started.let_go("a"));
    }

    #[test]
    fn entities_over_the_byte_budget_let_go_of_the_least_recently_used_others() {
        let registry = ActorRegistry::new(Bounds {
            count: 100,
            bytes: 1000,
        });
        let mut started = Actors::default();
        let mut own = HashMap::new();
        for id in ["a", "b", "c"] {
            let (mailbox, evicted) = registry.mailbox(&key(id), || started.start(id)).unwrap();
            assert_eq!(evicted, vec![]);
            own.insert(id, mailbox.downgrade());
        }
        assert_eq!(registry.weigh(&key("a"), &own["a"], 400), vec![]);
        assert_eq!(registry.weigh(&key("b"), &own["b"], 400), vec![]);
        assert_eq!(registry.bytes(), 800);
        // --- c grows past the budget: a, the least recently used, goes
        assert_eq!(registry.weigh(&key("c"), &own["c"], 300), vec![key("a")]);
        assert_eq!(registry.bytes(), 700);
        assert!(started.let_go("a"));
        // --- one entity larger than the budget alone stays; all others go
        assert_eq!(registry.weigh(&key("c"), &own["c"], 5000), vec![key("b")]);
        assert_eq!((registry.len(), registry.bytes()), (1, 5000));
        // --- admitting another while over the budget lets go of it too
        let (_, evicted) = registry.mailbox(&key("d"), || started.start("d")).unwrap();
        assert_eq!(evicted, vec![key("c")]);
        assert_eq!((registry.len(), registry.bytes()), (1, 0));
        // --- an evicted actor's report changes nothing any more
        assert_eq!(registry.weigh(&key("a"), &own["a"], 999), vec![]);
        assert_eq!(registry.bytes(), 0);
    }

    #[test]
    fn leaving_and_releasing_give_back_the_bytes() {
        let registry = ActorRegistry::default();
        let mut started = Actors::default();
        let (a, _) = registry.mailbox(&key("a"), || started.start("a")).unwrap();
        let (b, _) = registry.mailbox(&key("b"), || started.start("b")).unwrap();
        registry.weigh(&key("a"), &a.downgrade(), 10);
        registry.weigh(&key("b"), &b.downgrade(), 20);
        registry.forget(&key("a"), &a);
        assert_eq!(registry.bytes(), 20);
        assert_eq!(registry.release(|_, id| id == "b").len(), 1);
        assert_eq!((registry.len(), registry.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn a_release_resolves_when_the_released_actors_have_ended() {
        let registry = ActorRegistry::default();
        let mut started = Actors::default();
        registry.mailbox(&key("a"), || started.start("a")).unwrap();
        registry.mailbox(&key("b"), || started.start("b")).unwrap();
        let mut done = registry.release(|_, id| id == "a");
        assert_eq!(done.len(), 1);
        let mut done = done.remove(0);
        // --- the actor still runs: its end is not yet seen
        assert!(done.has_changed().is_ok(), "a running actor is not done");
        // --- it ends: whoever waits hears of it, however late they ask
        started.end("a");
        assert!(done.changed().await.is_err(), "an ended actor is done");
        assert_eq!(registry.len(), 1, "b stays active");
    }

    #[test]
    fn entities_with_open_streams_are_never_evicted_and_count_against_the_cap() {
        let registry = ActorRegistry::new(by_count(2));
        let mut started = Actors::default();
        // --- a (least recently used) watches a stream, b does not
        registry.mailbox(&key("a"), || started.start_streaming("a", 1)).unwrap();
        registry.mailbox(&key("b"), || started.start("b")).unwrap();
        // --- c evicts b, skipping a
        let (_, evicted) = registry.mailbox(&key("c"), || started.start_streaming("c", 1)).unwrap();
        assert_eq!(evicted, vec![key("b")]);
        assert!(!started.let_go("a"));
        // --- with a and c both streaming, d is refused and nothing is evicted
        assert_eq!(
            registry.mailbox(&key("d"), || started.start("d")).unwrap_err(),
            Full { active: 2 }
        );
        assert_eq!(registry.len(), 2);
    }
}
