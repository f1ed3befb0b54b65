//! What the engine tells the outside as it goes: every state change it
//! recorded, as a message on a channel. The progress display keeps its own
//! counts from them, so it never has to count the ledger.

use tokio::sync::mpsc;

use crate::job::{Counts, JobState};

/// Something the engine did, sent after the ledger recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A job of the current manifest went from one state to another.
    Moved { from: JobState, to: JobState },
    /// Submitting is (`true`) or is no longer (`false`) held back by
    /// `--max-in-flight` rather than by the submit rate.
    InFlightCapped(bool),
}

impl Event {
    /// Applies the event to a count of jobs by state (other events leave
    /// the counts alone).
    pub fn apply(self, counts: &mut Counts) {
        match self {
            Event::Moved { from, to } => {
                let old = counts.0.entry(from).or_default();
                debug_assert!(*old > 0, "a job left {from} that was not counted there");
                *old = old.saturating_sub(1);
                *counts.0.entry(to).or_default() += 1;
            }
            Event::InFlightCapped(_) => {}
        }
    }
}

/// The engine's side of the channel. Sending never blocks, and nobody
/// listening (a quiet run) is fine.
#[derive(Clone)]
pub(super) struct EventSender(mpsc::UnboundedSender<Event>);

impl EventSender {
    pub fn send(&self, event: Event) {
        let _ = self.0.send(event);
    }
}

/// The listener's side: the counts when the run began, then every change.
pub struct Events {
    pub initial: Counts,
    pub receiver: mpsc::UnboundedReceiver<Event>,
}

pub(super) fn channel(initial: Counts) -> (EventSender, Events) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (EventSender(sender), Events { initial, receiver })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_move_counts_and_keep_the_total() {
        let mut counts = Counts([(JobState::Pending, 2)].into_iter().collect());
        Event::Moved {
            from: JobState::Pending,
            to: JobState::Submitting,
        }
        .apply(&mut counts);
        Event::Moved {
            from: JobState::Submitting,
            to: JobState::Running,
        }
        .apply(&mut counts);
        assert_eq!(counts.get(JobState::Pending), 1);
        assert_eq!(counts.get(JobState::Running), 1);
        assert_eq!(counts.total(), 2);
    }
}
