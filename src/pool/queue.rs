//! The waiters' queue: first come, first served.
//!
//! A `Condvar` alone wakes an arbitrary waiter, so a thread that arrived
//! last can be served first and one that arrived first can wait until its
//! timeout. Here each waiter takes a ticket and waits on a condition
//! variable of its own; whatever becomes free (a connection given back, or
//! a slot to open one in) is handed straight to the waiter at the front and
//! only that waiter is woken. Everything here runs under the pool's lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar};

/// The waiters, oldest first, and what was handed to those not awake yet.
pub(super) struct Queue<T> {
    waiting: VecDeque<Waiter>,
    /// Handed over, not yet taken by their (woken) waiter.
    granted: Vec<(u64, T)>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    wake: Arc<Wake>,
}

/// How a waiter learns it was served: a flag it can look at without the
/// pool's lock, and a `Condvar` to sleep on.
#[derive(Default)]
pub(super) struct Wake {
    served: AtomicBool,
    pub(super) condvar: Condvar,
}

impl Wake {
    /// True once something was handed to this waiter.
    pub(super) fn is_served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }
}

impl<T> Queue<T> {
    pub(super) fn new() -> Queue<T> {
        Queue {
            waiting: VecDeque::new(),
            granted: Vec::new(),
            next_ticket: 0,
        }
    }

    /// How many wait.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Joins at the back: the ticket to claim a grant with, and the
    /// condition variable to wait on (under the pool's lock).
    pub(super) fn join(&mut self) -> (u64, Arc<Wake>) {
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        let wake = Arc::new(Wake::default());
        self.waiting.push_back(Waiter {
            ticket,
            wake: Arc::clone(&wake),
        });
        (ticket, wake)
    }

    /// Hands `item` to the waiter at the front; returns what wakes it (to
    /// notify once the lock is released, so the waiter does not wake into
    /// a held lock), or gives `item` back when nobody waits.
    pub(super) fn serve(&mut self, item: T) -> Result<Arc<Wake>, T> {
        match self.waiting.pop_front() {
            Some(w) => {
                self.granted.push((w.ticket, item));
                w.wake.served.store(true, Ordering::Release);
                Ok(w.wake)
            }
            None => Err(item),
        }
    }

    /// What was handed to `ticket`, if anything was.
    pub(super) fn take(&mut self, ticket: u64) -> Option<T> {
        let at = self.granted.iter().position(|(t, _)| *t == ticket)?;
        Some(self.granted.swap_remove(at).1)
    }

    /// Leaves the queue (the wait timed out); what was handed over in the
    /// meantime is returned all the same.
    pub(super) fn leave(&mut self, ticket: u64) -> Option<T> {
        self.waiting.retain(|w| w.ticket != ticket);
        self.take(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_go_in_arrival_order() {
        let mut q = Queue::new();
        let tickets: Vec<u64> = (0..4).map(|_| q.join().0).collect();
        assert_eq!(q.len(), 4);
        for item in ["a", "b", "c", "d"] {
            assert!(q.serve(item).is_ok());
        }
        assert!(q.is_empty());
        // Claimed in any order, each gets what it was handed in its turn.
        assert_eq!(q.take(tickets[2]), Some("c"));
        assert_eq!(q.take(tickets[0]), Some("a"));
        assert_eq!(q.take(tickets[3]), Some("d"));
        assert_eq!(q.take(tickets[1]), Some("b"));
        assert_eq!(q.take(tickets[1]), None);
        assert!(matches!(q.serve("e"), Err("e")));
    }

    #[test]
    fn a_waiter_that_leaves_is_skipped_and_keeps_a_late_grant() {
        let mut q = Queue::new();
        let first = q.join().0;
        let second = q.join().0;
        let third = q.join().0;
        assert_eq!(q.leave(second), None);
        assert!(q.serve(1).is_ok());
        assert!(q.serve(2).is_ok());
        assert_eq!(q.take(first), Some(1));
        assert_eq!(q.take(third), Some(2));
        // Granted just before it gave up: it still gets it.
        let fourth = q.join().0;
        assert!(q.serve(3).is_ok());
        assert_eq!(q.leave(fourth), Some(3));
        assert!(q.is_empty());
    }
}
