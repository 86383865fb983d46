//! A batch of new events attempted straight from the sinks' cursors, before anything about it
//! is written (see [`crate::store::Outbox::record_batch`]): which (event, sink) deliveries it
//! holds, which have started, and how each first attempt ended.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::event::StoredEvent;
use crate::store::{DeliveryOutcome, FirstAttempt, LookAhead};

pub(super) struct Batch {
    /// Tells this batch's attempts from those of a batch given up before it.
    pub generation: u64,
    look: LookAhead,
    events: HashMap<i64, Rc<StoredEvent>>,
    /// One per `look.wanted`, in the same order.
    slots: Vec<Slot>,
    /// Per sink, the slots not started yet, in event order.
    waiting: Vec<VecDeque<usize>>,
    /// Slots not finished yet, started or not.
    unfinished: usize,
    began: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Waiting,
    Running,
    Finished(DeliveryOutcome),
}

/// A delivery of the batch to start: its slot and its event.
pub(super) struct Next {
    pub slot: usize,
    pub event_id: i64,
    pub event: Option<Rc<StoredEvent>>,
}

impl Batch {
    pub fn new(generation: u64, mut look: LookAhead, sinks: usize) -> Self {
        let events = std::mem::take(&mut look.events);
        let mut waiting = vec![VecDeque::new(); sinks];
        for (slot, (sink, _)) in look.wanted.iter().enumerate() {
            waiting[*sink].push_back(slot);
        }
        Self {
            generation,
            slots: vec![Slot::Waiting; look.wanted.len()],
            unfinished: look.wanted.len(),
            events: events.into_iter().map(|e| (e.id, Rc::new(e))).collect(),
            look,
            waiting,
            began: Instant::now(),
        }
    }

    pub fn look(&self) -> &LookAhead {
        &self.look
    }

    /// The next delivery to `sink` to start, now marked running.
    pub fn start_next(&mut self, sink: usize) -> Option<Next> {
        let slot = self.waiting.get_mut(sink)?.pop_front()?;
        self.slots[slot] = Slot::Running;
        let event_id = self.look.wanted[slot].1;
        Some(Next {
            slot,
            event_id,
            event: self.events.get(&event_id).cloned(),
        })
    }

    pub fn finish(&mut self, slot: usize, outcome: DeliveryOutcome) {
        if self.slots[slot] == Slot::Running {
            self.slots[slot] = Slot::Finished(outcome);
            self.unfinished -= 1;
        }
    }

    pub fn is_finished(&self) -> bool {
        self.unfinished == 0
    }

    pub fn age(&self) -> Duration {
        self.began.elapsed()
    }

    /// Where each delivery stands, in the order of `look().wanted`.
    pub fn first_attempts(&self) -> Vec<FirstAttempt> {
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::Finished(outcome) => FirstAttempt::Finished(outcome.clone()),
                Slot::Waiting | Slot::Running => FirstAttempt::Unfinished,
            })
            .collect()
    }

    /// The running slots, each with its delivery row, given the rows written for the
    /// unfinished slots in order (see [`crate::store::Recorded::Written`]).
    pub fn running_rows(&self, unfinished_rows: &[i64]) -> HashMap<usize, i64> {
        let unfinished = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !matches!(slot, Slot::Finished(_)));
        unfinished
            .zip(unfinished_rows)
            .filter(|((_, slot), _)| **slot == Slot::Running)
            .map(|((index, _), row)| (index, *row))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(wanted: &[(usize, i64)]) -> LookAhead {
        LookAhead::for_test(wanted.to_vec())
    }

    #[test]
    fn each_sink_starts_its_own_deliveries_in_event_order() {
        let mut batch = Batch::new(1, look(&[(0, 1), (1, 1), (0, 2)]), 2);
        let ids = |batch: &mut Batch, sink| {
            std::iter::from_fn(|| batch.start_next(sink).map(|n| (n.slot, n.event_id)))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&mut batch, 0), [(0, 1), (2, 2)]);
        assert_eq!(ids(&mut batch, 1), [(1, 1)]);
        assert!(batch.start_next(5).is_none());
    }

    #[test]
    fn a_batch_is_finished_when_every_first_attempt_is_over() {
        let mut batch = Batch::new(1, look(&[(0, 1), (0, 2)]), 1);
        let first = batch.start_next(0).unwrap();
        batch.finish(first.slot, DeliveryOutcome::Delivered);
        // A slot that never started cannot finish.
        batch.finish(1, DeliveryOutcome::Delivered);
        assert!(!batch.is_finished());
        assert_eq!(
            batch.first_attempts(),
            [
                FirstAttempt::Finished(DeliveryOutcome::Delivered),
                FirstAttempt::Unfinished
            ]
        );
        let second = batch.start_next(0).unwrap();
        batch.finish(second.slot, DeliveryOutcome::Delivered);
        assert!(batch.is_finished());
    }

    #[test]
    fn rows_written_for_unfinished_slots_go_to_the_running_ones() {
        let mut batch = Batch::new(1, look(&[(0, 1), (0, 2), (0, 3), (0, 4)]), 1);
        let slots: Vec<usize> = (0..3).map(|_| batch.start_next(0).unwrap().slot).collect();
        batch.finish(slots[1], DeliveryOutcome::Delivered);
        // Unfinished: slot 0 (running), slot 2 (running), slot 3 (waiting).
        let rows = batch.running_rows(&[70, 71, 72]);
        assert_eq!(rows, HashMap::from([(0, 70), (2, 71)]));
    }
}
