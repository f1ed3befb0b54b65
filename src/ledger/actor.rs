//! The thread that owns the ledger's connection. Async code sends it
//! closures and awaits their answers, so no rusqlite call ever runs on a
//! tokio worker or is held across an `.await`.
//!
//! The engine's per-job writes are group-committed: the thread takes every
//! such write queued at the moment, runs them in one transaction (each in
//! its own savepoint, so one failing leaves the others alone), commits once,
//! and only then answers each caller. A caller still sees its write durable
//! before it goes on; a busy run pays one commit (one fsync) for many.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Ledger, LedgerError, Result};

/// The most writes one group commit takes, so that the first caller of a
/// long queue is not kept waiting behind all of it.
const MAX_GROUP: usize = 256;

/// How long a group commit waits at most, from its first write, for more
/// writes to share its fsync. Each synced commit costs the process ~120 µs
/// of CPU on its own (the fsync, the WAL's locks and page writes); a run's
/// writes come from many jobs at once (at 50 submissions a second, one
/// every few ms), so a short wait lets several share one. Each of a job's
/// few writes waits at most this long: milliseconds against tasks that
/// take minutes.
const GATHER: Duration = Duration::from_millis(10);

/// How the gap between writes is followed: each new gap counts for 1/8.
const GAP_WEIGHT: u32 = 8;

/// The gap between grouped writes as the ledger thread sees them, which
/// sets how long a group waits for company: twice the usual gap, at most
/// `GATHER`. A fixed wait made writers that write one after another (a
/// few download workers, each waiting for its commit) wait the whole of it
/// every time: 100,000 small videos took 11 minutes instead of 4. When
/// writes queue up, they arrive back to back, the gap shrinks, and a group
/// closes as soon as the queue is empty.
#[derive(Default)]
struct Arrivals {
    last: Option<Instant>,
    gap: Duration,
}

impl Arrivals {
    fn note(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last).min(GATHER);
            self.gap = (self.gap * (GAP_WEIGHT - 1) + gap) / GAP_WEIGHT;
        }
        self.last = Some(now);
    }

    fn window(&self) -> Duration {
        (self.gap * 2).min(GATHER)
    }
}

/// Answers a grouped write's caller, told whether the group committed.
type Answer = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// A grouped write: runs it, and gives back how to answer its caller.
type GroupedWork = Box<dyn FnOnce(&mut Ledger) -> Answer + Send>;

enum Command {
    /// Runs on its own, opening whatever transactions it needs (ingest,
    /// reports, recovery).
    Alone(Box<dyn FnOnce(&mut Ledger) + Send>),
    /// Runs inside a group commit; answered once the group is committed.
    Grouped(GroupedWork),
}

/// A cheap, cloneable handle to the ledger thread.
#[derive(Clone)]
pub struct LedgerHandle {
    commands: mpsc::Sender<Command>,
}

impl LedgerHandle {
    /// Moves `ledger` onto its own thread. The thread ends when the last
    /// handle is dropped; join it to be sure every write has finished.
    pub fn spawn(mut ledger: Ledger) -> (LedgerHandle, thread::JoinHandle<Ledger>) {
        let (commands, receiver) = mpsc::channel::<Command>();
        let thread = thread::Builder::new()
            .name("ledger".to_owned())
            .spawn(move || {
                serve(&mut ledger, &receiver);
                ledger
            })
            .expect("failed to start the ledger thread");
        (LedgerHandle { commands }, thread)
    }

    /// Runs `work` on the ledger thread and waits for its result.
    pub async fn call<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger) -> Result<T> + Send + 'static,
    {
        self.with(work).await?
    }

    /// Runs `work` on the ledger thread and waits for whatever it returns.
    pub async fn with<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger) -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let command = Command::Alone(Box::new(move |ledger| {
            // The caller may have gone away (an aborted run); the write
            // itself still happened, which is what matters.
            let _ = reply.send(work(ledger));
        }));
        self.commands
            .send(command)
            .map_err(|_| LedgerError::Closed)?;
        answer.await.map_err(|_| LedgerError::Closed)
    }

    /// Runs `work` inside a group commit and waits until that commit is
    /// on disk. `work` must open no transaction of its own, only savepoints.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let work: GroupedWork = Box::new(move |ledger: &mut Ledger| -> Answer {
            let result = work(ledger);
            Box::new(move |committed| {
                let _ = reply.send(match committed {
                    Ok(()) => result,
                    Err(error) => Err(LedgerError::Commit(error)),
                });
            })
        });
        self.commands
            .send(Command::Grouped(work))
            .map_err(|_| LedgerError::Closed)?;
        answer.await.map_err(|_| LedgerError::Closed)?
    }
}

/// The ledger thread's loop: one command at a time, grouped writes by the
/// group, until every handle is gone.
fn serve(ledger: &mut Ledger, receiver: &mpsc::Receiver<Command>) {
    let mut held = None;
    let mut arrivals = Arrivals::default();
    while let Some(command) = held.take().or_else(|| receiver.recv().ok()) {
        match command {
            Command::Alone(work) => work(ledger),
            Command::Grouped(work) => {
                arrivals.note(Instant::now());
                let (group, next) = gather(receiver, work, &mut arrivals);
                held = next;
                commit_group(ledger, group);
            }
        }
    }
}

/// One group commit's writes: `first`, and the grouped writes that come
/// within the window `arrivals` gives, up to `MAX_GROUP`. A command that
/// runs alone ends the group early; it is handed back to run right after.
fn gather(
    receiver: &mpsc::Receiver<Command>,
    first: GroupedWork,
    arrivals: &mut Arrivals,
) -> (Vec<GroupedWork>, Option<Command>) {
    let deadline = Instant::now() + arrivals.window();
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(Command::Grouped(work)) => {
                arrivals.note(Instant::now());
                group.push(work);
            }
            Ok(alone) => return (group, Some(alone)),
            // The window closed, or every handle is gone (the loop ends
            // after this commit).
            Err(_) => break,
        }
    }
    (group, None)
}

/// Runs a group's writes in one transaction, commits it, then answers
/// every caller with the outcome.
fn commit_group(ledger: &mut Ledger, group: Vec<GroupedWork>) {
    let began = ledger.begin_group();
    let mut answers = Vec::with_capacity(group.len());
    for work in group {
        answers.push(work(ledger));
    }
    let committed = began
        .and_then(|()| ledger.commit_group())
        .map_err(|error| error.to_string());
    for answer in answers {
        answer(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::test_support::{id, ingest, spec};

    #[test]
    fn the_wait_for_company_follows_the_gap_between_writes() {
        let start = Instant::now();
        let mut arrivals = Arrivals::default();
        assert_eq!(
            arrivals.window(),
            Duration::ZERO,
            "a first write waits for nobody"
        );
        for n in 0..64 {
            arrivals.note(start + Duration::from_millis(4 * n));
        }
        assert!(
            arrivals.window() > Duration::from_millis(7) && arrivals.window() <= GATHER,
            "writes 4 ms apart wait about 8 ms: {:?}",
            arrivals.window()
        );
        let later = start + Duration::from_millis(4 * 64);
        for n in 0..64 {
            arrivals.note(later + Duration::from_micros(20 * n));
        }
        assert!(
            arrivals.window() < Duration::from_millis(1),
            "writes back to back close the group at once: {:?}",
            arrivals.window()
        );
        arrivals.note(later + Duration::from_secs(60));
        assert!(
            arrivals.window() <= GATHER,
            "a long pause waits no more than GATHER"
        );
    }

    #[tokio::test]
    async fn grouped_writes_are_answered_after_their_commit_and_failures_stay_their_own() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "q", 3)]);
        let (handle, thread) = LedgerHandle::spawn(ledger);
        let good = handle.write(|ledger| ledger.mark_submitting(&id("a"), None));
        let bad = handle.write(|ledger| ledger.mark_downloaded(&id("b")));
        let also_good = handle.write(|ledger| ledger.mark_submitting(&id("b"), None));
        let (good, bad, also_good) = tokio::join!(good, bad, also_good);
        assert!(good.is_ok() && also_good.is_ok());
        assert!(matches!(bad, Err(LedgerError::Transition { .. })));
        let counts = handle.call(|ledger| ledger.counts(true)).await.unwrap();
        assert_eq!(counts[&crate::job::JobState::Submitting], 2);
        drop(handle);
        let ledger = thread.join().unwrap();
        assert!(ledger.conn.is_autocommit(), "no transaction is left open");
    }
}
