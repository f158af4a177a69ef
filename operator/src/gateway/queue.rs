//! A model's waiting line: first come, first served.
//!
//! Requests that found every board busy wait here. Only the first in line may take a board
//! that frees up; when it leaves (with a board, or giving up) the next one is woken. A plain
//! "wake everyone, first to run wins" would let a request that arrived last be served first,
//! which is what made p99 time-to-first-token under overload worse than the policy deserved.
//! Each waiter has its own `Notify`, so a wake-up reaches exactly the first in line and is kept
//! (a permit) when it is not waiting at that instant.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::Notify;

/// The waiters of one model, in arrival order.
#[derive(Default)]
pub struct Queue {
    inner: Mutex<Line>,
}

#[derive(Default)]
struct Line {
    next: u64,
    waiters: VecDeque<(u64, Arc<Notify>)>,
}

/// A place in a [`Queue`]; dropping it leaves the line and wakes the new first.
pub struct Ticket {
    queue: Arc<Queue>,
    id: u64,
    notify: Arc<Notify>,
}

impl Queue {
    fn line(&self) -> std::sync::MutexGuard<'_, Line> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many wait now.
    pub fn len(&self) -> usize {
        self.line().waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the line at the back, or at the front for a request admitted before (a retry
    /// after a board failed it must not queue behind requests that arrived after it).
    pub fn join(self: &Arc<Self>, front: bool) -> Ticket {
        let mut line = self.line();
        let id = line.next;
        line.next += 1;
        let notify = Arc::new(Notify::new());
        if front {
            line.waiters.push_front((id, notify.clone()));
        } else {
            line.waiters.push_back((id, notify.clone()));
        }
        Ticket { queue: self.clone(), id, notify }
    }

    /// A board may have freed up: the first in line looks.
    pub fn wake(&self) {
        if let Some((_, n)) = self.line().waiters.front() {
            n.notify_one();
        }
    }
}

impl Ticket {
    /// True when no one waits ahead of this ticket.
    pub fn is_first(&self) -> bool {
        self.queue.line().waiters.front().is_some_and(|(id, _)| *id == self.id)
    }

    /// Resolves when this ticket is woken (or was, since it last waited).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut line = self.queue.line();
        let was_first = line.waiters.front().is_some_and(|(id, _)| *id == self.id);
        line.waiters.retain(|(id, _)| *id != self.id);
        // The new first may be able to take what this one took or left.
        if was_first && let Some((_, n)) = line.waiters.front() {
            n.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn first_in_line_in_arrival_order() {
        let q = Arc::new(Queue::default());
        let a = q.join(false);
        let b = q.join(false);
        let c = q.join(false);
        assert!(a.is_first() && !b.is_first() && !c.is_first());
        assert_eq!(q.len(), 3);
        drop(b);
        assert!(a.is_first() && !c.is_first());
        drop(a);
        assert!(c.is_first());
        drop(c);
        assert!(q.is_empty());
    }

    #[test]
    fn a_retry_goes_first() {
        let q = Arc::new(Queue::default());
        let a = q.join(false);
        let r = q.join(true);
        assert!(r.is_first() && !a.is_first());
    }

    #[tokio::test]
    async fn wake_reaches_the_first_only_and_is_kept() {
        let q = Arc::new(Queue::default());
        let a = q.join(false);
        let b = q.join(false);
        // Woken before it waits: the permit is kept.
        q.wake();
        tokio::time::timeout(Duration::from_secs(1), a.woken()).await.expect("first woken");
        assert!(tokio::time::timeout(Duration::from_millis(30), b.woken()).await.is_err(), "second not woken");
        // The first leaving wakes the next.
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), b.woken()).await.expect("next woken when the first leaves");
    }
}
