//! Two stages of one pass over a million rows on two threads, joined by a
//! bounded channel of batches, in order.
//!
//! Why: the first run of a large manifest is CPU-bound, serially, on one
//! core: reading and checking the manifest, then SQLite's inserts; reading
//! the ledger's rows, then formatting the results files. Each pair splits
//! into a stage that owns the ledger's connection (which stays on its
//! thread) and one that does not, so the other runs on a second core.
//! The channel is bounded, so the producer runs at most a few batches
//! ahead and memory stays flat; items go in batches so that the channel's
//! cost (a lock, at times a wake-up) is paid once per batch, not per row.
//! Items come out in the order they went in, so whatever the consumer does
//! (reports, errors, the first failure) happens as in a serial loop.

use std::any::Any;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread;

/// Items sent together in one message.
const BATCH_LEN: usize = 128;
/// Full batches waiting in the channel; with the one being filled and the
/// one being taken, at most this plus two batches exist at once.
const BATCHES_AHEAD: usize = 2;

/// The producing end: collects items into batches and hands them on.
pub struct Feed<T> {
    batch: Vec<T>,
    sender: SyncSender<Vec<T>>,
    /// Batches the consumer is done with, to be dropped here: see `Drain`.
    given_back: Receiver<Vec<T>>,
    /// Items given back, dropped one for each item pushed: the memory
    /// each frees is what the allocator hands out for the next (dropping a
    /// batch at once overflows its thread-local cache).
    to_drop: Vec<T>,
}

/// The consumer has stopped taking items (it returned, failed or
/// panicked): the producer should stop too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl<T> Feed<T> {
    /// Hands on `item`, after every item pushed before it.
    pub fn push(&mut self, item: T) -> Result<(), Stopped> {
        drop(self.to_drop.pop());
        self.batch.push(item);
        if self.batch.len() < BATCH_LEN {
            return Ok(());
        }
        let next = self.take_given_back();
        let batch = std::mem::replace(&mut self.batch, next);
        self.sender.send(batch).map_err(|_| Stopped)
    }

    /// Moves the items given back to `to_drop`; returns an empty batch to
    /// fill (the memory of one given back, when there is one).
    fn take_given_back(&mut self) -> Vec<T> {
        let mut next = Vec::new();
        while let Ok(mut given) = self.given_back.try_recv() {
            if self.to_drop.is_empty() {
                std::mem::swap(&mut self.to_drop, &mut given);
            } else {
                self.to_drop.append(&mut given);
            }
            next = given;
        }
        next.reserve(BATCH_LEN);
        next
    }
}

impl<T> Drop for Feed<T> {
    /// The items pushed so far are handed on even when the producer ends
    /// early (an error, a panic), so the consumer sees every item up to
    /// there, as a serial loop would have.
    fn drop(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty() {
            // A consumer that stopped no longer needs them.
            let _ = self.sender.send(batch);
        }
    }
}

/// The consuming end: the items in the order they were pushed, until the
/// producer has ended (its `Feed` dropped).
///
/// The consumer borrows each item, and gives each batch back to be
/// dropped on the producer's thread: an item's parts (a row's texts) were
/// allocated there, and glibc's allocator frees memory of another
/// thread's arena slowly (under that arena's lock, and out of reach of
/// the thread-local cache), which cost more than the second core gained.
/// That was measured before pixbatch took mimalloc (decision 152), whose
/// frees from another thread are cheaper; kept, since the memory a
/// thread frees is what it allocates next.
pub struct Drain<T> {
    receiver: Receiver<Vec<T>>,
    give_back: Sender<Vec<T>>,
}

impl<T> Drain<T> {
    /// Hands each item to `take`, in order, until the producer ends or
    /// `take` fails.
    pub fn try_for_each<E>(self, mut take: impl FnMut(&mut T) -> Result<(), E>) -> Result<(), E> {
        for mut batch in self.receiver.iter() {
            let taken = batch.iter_mut().try_for_each(&mut take);
            // A producer that has ended no longer takes them: dropped here.
            let _ = self.give_back.send(batch);
            taken?;
        }
        Ok(())
    }
}

fn pipe<T>() -> (Feed<T>, Drain<T>) {
    let (sender, receiver) = sync_channel(BATCHES_AHEAD);
    // Unbounded, so that giving back never waits; it holds no more than
    // the batches sent.
    let (give_back, given_back) = channel();
    let feed = Feed {
        batch: Vec::with_capacity(BATCH_LEN),
        sender,
        given_back,
        to_drop: Vec::new(),
    };
    (
        feed,
        Drain {
            receiver,
            give_back,
        },
    )
}

/// Runs `produce` on a thread named `name` while `consume` takes what it
/// pushes on this thread. Returns both results; the producer's is an
/// `Err` saying why when its thread could not start or panicked (the
/// consumer then sees the items pushed before the panic, and the end).
pub fn produce_aside<T: Send, P: Send, C>(
    name: &str,
    produce: impl FnOnce(&mut Feed<T>) -> P + Send,
    consume: impl FnOnce(Drain<T>) -> C,
) -> (Result<P, String>, C) {
    let (mut feed, drain) = pipe();
    thread::scope(|scope| {
        let producer = thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(scope, move || produce(&mut feed));
        match producer {
            Ok(producer) => {
                let consumed = consume(drain);
                (producer.join().map_err(panic_message), consumed)
            }
            // Nothing was pushed: the consumer sees an empty stream.
            Err(error) => (Err(format!("could not start: {error}")), consume(drain)),
        }
    })
}

/// Runs `consume` on a thread named `name`, fed by `produce` on this
/// thread. Returns both results; the consumer's is an `Err` saying why
/// when its thread could not start or panicked (`Feed::push` then tells
/// the producer it `Stopped`).
pub fn consume_aside<T: Send, P, C: Send>(
    name: &str,
    produce: impl FnOnce(&mut Feed<T>) -> P,
    consume: impl FnOnce(Drain<T>) -> C + Send,
) -> (P, Result<C, String>) {
    let (mut feed, drain) = pipe();
    thread::scope(|scope| {
        let consumer = thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(scope, move || consume(drain));
        let produced = produce(&mut feed);
        // The end of the items: the consumer finishes and can be joined.
        drop(feed);
        let consumed = match consumer {
            Ok(consumer) => consumer.join().map_err(panic_message),
            Err(error) => Err(format!("could not start: {error}")),
        };
        (produced, consumed)
    })
}

/// What a panic said, for the error that replaces it.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned());
    format!("panicked: {}", message.as_deref().unwrap_or("(no message)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(drain: Drain<usize>) -> Vec<usize> {
        let mut items = Vec::new();
        let taken = drain.try_for_each(|item| {
            items.push(*item);
            Ok::<(), ()>(())
        });
        assert_eq!(taken, Ok(()));
        items
    }

    #[test]
    fn items_arrive_in_order_across_batches() {
        let n = BATCH_LEN * 5 + 3;
        let (produced, consumed) = produce_aside(
            "test producer",
            |feed: &mut Feed<usize>| (0..n).try_for_each(|item| feed.push(item)),
            collect,
        );
        assert_eq!(produced, Ok(Ok(())));
        assert_eq!(consumed, (0..n).collect::<Vec<_>>());

        let (produced, consumed) = consume_aside(
            "test consumer",
            |feed: &mut Feed<usize>| (0..n).try_for_each(|item| feed.push(item)),
            collect,
        );
        assert_eq!(produced, Ok(()));
        assert_eq!(consumed, Ok((0..n).collect::<Vec<_>>()));
    }

    #[test]
    fn a_producer_that_panics_is_an_error_after_its_items() {
        let (produced, consumed) = produce_aside(
            "test producer",
            |feed: &mut Feed<usize>| -> Result<(), Stopped> {
                (0..3).try_for_each(|item| feed.push(item))?;
                panic!("the reader broke")
            },
            collect,
        );
        assert_eq!(produced, Err("panicked: the reader broke".to_owned()));
        assert_eq!(consumed, [0, 1, 2], "what came before the panic");
    }

    #[test]
    fn a_consumer_that_stops_stops_the_producer() {
        let (produced, consumed) = produce_aside(
            "test producer",
            |feed: &mut Feed<usize>| (0..).try_for_each(|item| feed.push(item)),
            |drain| {
                let mut n_taken = 0;
                let stop_after = BATCH_LEN * 3;
                let taken = drain.try_for_each(|_| {
                    if n_taken == stop_after {
                        return Err(n_taken);
                    }
                    n_taken += 1;
                    Ok(())
                });
                (taken, n_taken)
            },
        );
        assert_eq!(produced, Ok(Err(Stopped)));
        assert_eq!(consumed, (Err(BATCH_LEN * 3), BATCH_LEN * 3));

        let (produced, consumed) = consume_aside(
            "test consumer",
            |feed: &mut Feed<usize>| (0..).try_for_each(|item| feed.push(item)),
            |_drain| panic!("the writer broke"),
        );
        assert_eq!(produced, Err(Stopped));
        assert_eq!(consumed, Err("panicked: the writer broke".to_owned()));
    }
}
