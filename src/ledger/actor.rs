//! The thread that owns the ledger's connection. Async code sends it
//! closures and awaits their answers, so no rusqlite call ever runs on a
//! tokio worker or is held across an `.await`.

use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use super::{Ledger, LedgerError, Result};

type Command = Box<dyn FnOnce(&mut Ledger) + Send>;

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
                for command in receiver {
                    command(&mut ledger);
                }
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
        let command: Command = Box::new(move |ledger| {
            // The caller may have gone away (an aborted run); the write
            // itself still happened, which is what matters.
            let _ = reply.send(work(ledger));
        });
        self.commands
            .send(command)
            .map_err(|_| LedgerError::Closed)?;
        answer.await.map_err(|_| LedgerError::Closed)
    }
}
