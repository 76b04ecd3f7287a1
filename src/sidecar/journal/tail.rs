//! The in-memory tail of recent events and the wake-ups of parked waiters: a publish wakes
//! only the waiters of its own (event type, topic), never every long poll.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::watch;

use super::{JournalEvent, Shared};

/// Recent events kept in memory; waiters further behind read SQLite.
pub const TAIL_CAPACITY: usize = 4096;

/// Events with seq in `(start, head]`, contiguous.
pub(super) struct Tail {
    pub events: VecDeque<Arc<JournalEvent>>,
    pub start: u64,
    pub head: u64,
}

impl Tail {
    /// Appends committed events and forgets the oldest beyond [`TAIL_CAPACITY`].
    pub fn extend<'a>(&mut self, events: impl Iterator<Item = &'a Arc<JournalEvent>>, head: u64) {
        self.events.extend(events.cloned());
        while self.events.len() > TAIL_CAPACITY {
            if let Some(e) = self.events.pop_front() {
                self.start = e.seq;
            }
        }
        self.head = head;
    }

    /// Drops events retention removed from the database.
    pub fn compact(&mut self, floor: u64) {
        while self.events.front().is_some_and(|e| e.seq <= floor) {
            self.events.pop_front();
        }
        self.start = self.start.max(floor);
    }
}

pub(super) type WaitKey = (String, Option<String>);
pub(super) type Waiters = HashMap<WaitKey, watch::Sender<u64>>;

/// Wakes the waiters of each committed event's type, with and without its topic.
pub(super) fn wake(waiters: &Waiters, events: &[Arc<JournalEvent>]) {
    if waiters.is_empty() {
        return;
    }
    for e in events {
        for topic in [Some(e.topic.clone()), None] {
            if let Some(tx) = waiters.get(&(e.event_type.clone(), topic)) {
                tx.send_replace(e.seq);
            }
        }
    }
}

/// A waiter's wake-up channel; unregisters its key when the last waiter on it leaves.
pub(super) struct Wakeup {
    pub rx: Option<watch::Receiver<u64>>,
    key: WaitKey,
    shared: Arc<Shared>,
}

impl Wakeup {
    pub fn register(shared: &Arc<Shared>, key: WaitKey) -> Wakeup {
        let rx = shared
            .waiters
            .lock()
            .expect("waiters lock")
            .entry(key.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        Wakeup {
            rx: Some(rx),
            key,
            shared: shared.clone(),
        }
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        self.rx.take();
        let mut waiters = self.shared.waiters.lock().expect("waiters lock");
        if waiters
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            waiters.remove(&self.key);
        }
    }
}
