//! What the engine tells the outside as it goes: a running count of jobs
//! by state, moved by the recorder on every state change it writes, so the
//! progress display never has to count the ledger.

use std::sync::{Arc, Mutex};

use crate::job::{Counts, JobState};

/// Counts by state for the current manifest, kept as the run goes.
#[derive(Clone, Default)]
pub struct Tally {
    counts: Arc<Mutex<Counts>>,
}

impl Tally {
    /// Starts from the ledger's counts when the run begins.
    pub fn new(initial: Counts) -> Tally {
        Tally {
            counts: Arc::new(Mutex::new(initial)),
        }
    }

    pub fn counts(&self) -> Counts {
        self.lock().clone()
    }

    /// A job of the current manifest went from `from` to `to`.
    pub fn moved(&self, from: JobState, to: JobState) {
        let mut counts = self.lock();
        let old = counts.0.entry(from).or_default();
        *old = old.saturating_sub(1);
        *counts.0.entry(to).or_default() += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_keep_the_total() {
        let tally = Tally::new(Counts([(JobState::Pending, 2)].into_iter().collect()));
        tally.moved(JobState::Pending, JobState::Submitting);
        tally.moved(JobState::Submitting, JobState::Running);
        let counts = tally.counts();
        assert_eq!(counts.get(JobState::Pending), 1);
        assert_eq!(counts.get(JobState::Running), 1);
        assert_eq!(counts.total(), 2);
    }
}
