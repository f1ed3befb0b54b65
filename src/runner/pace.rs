//! The submit rate: one submission per period, on a schedule that a late
//! wake-up does not shift, and never more than the rate in any minute.
//!
//! A limiter that times each submission from the one before (governor's,
//! with a burst of one) loses every wake-up's lateness for good: a fraction
//! of a millisecond per submission, 0.3 s over 2,000 submissions at 50/s.
//! Here the schedule keeps its own time: a submission that woke late lets
//! the next one come up to `CATCH_UP` sooner than a full period after it
//! (so lateness does not add up), but never earlier than its slot, never
//! closer than a period less `CATCH_UP` (at most half a period) to the one
//! before, and a stall is not made up in a burst. Each
//! submission also waits until the one `per_minute` before it is a minute
//! old, so no minute-long window ever holds more than the rate.
//!
//! Tokio's timer wakes sleepers on whole milliseconds. Past 1,000 a second
//! (a period under `TICK`), the sends due within one tick are woken
//! together, and a spacing rule against the last send alone let only one
//! of them go per tick: 200,000 a minute came out near 1,000 a second.
//! So the spacing is counted over the last `burst` sends (as many as one
//! tick holds): no `burst` sends closer together than `burst` spacings.
//! For a period of a tick or more, `burst` is 1 and nothing changes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How much of a submission's lateness the next one may make up.
const CATCH_UP: Duration = Duration::from_millis(5);

/// The window the rate is counted in.
const MINUTE: Duration = Duration::from_secs(60);

/// The timer's resolution: a sleep ends on a whole millisecond.
const TICK: Duration = Duration::from_millis(1);

pub(super) struct Pacer {
    period: Duration,
    per_minute: usize,
    /// Sends that may share one timer tick: 1 unless the period is shorter
    /// than a tick.
    burst: usize,
    state: Mutex<State>,
}

struct State {
    /// When the next slot is (the schedule's own time, not a send time).
    next_slot: Option<Instant>,
    /// Send times of the last minute, oldest first.
    sent: VecDeque<Instant>,
}

impl Pacer {
    /// A pacer for `per_minute` sends, with room reserved for the send
    /// times of up to `expected` of them (a minute's worth at most).
    pub fn per_minute(per_minute: u32, expected: usize) -> Pacer {
        let per_minute = per_minute.max(1);
        let period = MINUTE / per_minute;
        Pacer {
            period,
            per_minute: per_minute as usize,
            burst: TICK.as_nanos().div_ceil(period.as_nanos().max(1)).max(1) as usize,
            state: Mutex::new(State {
                next_slot: None,
                sent: VecDeque::with_capacity(expected.min(per_minute as usize)),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for this submission's turn. A caller that gives up while
    /// waiting (the run stops) leaves its slot unused.
    pub async fn until_ready(&self) {
        let slot = self.take_slot(Instant::now());
        tokio::time::sleep_until(slot).await;
        loop {
            match self.send_or_wait(Instant::now()) {
                None => return,
                Some(until) => tokio::time::sleep_until(until).await,
            }
        }
    }

    /// The slot a caller asking at `now` gets: the next one on the
    /// schedule (at once if it has just passed), or `now` when the schedule
    /// has fallen behind by more than `CATCH_UP` (nobody was waiting).
    fn take_slot(&self, now: Instant) -> Instant {
        let catch_up = CATCH_UP.min(self.period / 2);
        let mut state = self.state();
        let slot = match state.next_slot {
            Some(next) if next + catch_up >= now => next,
            _ => now,
        };
        state.next_slot = Some(slot + self.period);
        slot.max(now)
    }

    /// Records a send at `now`, or says until when to wait: the minute
    /// holds the rate already, or the last `burst` sends were too close.
    fn send_or_wait(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        while state
            .sent
            .front()
            .is_some_and(|sent| now.duration_since(*sent) >= MINUTE)
        {
            state.sent.pop_front();
        }
        if state.sent.len() >= self.per_minute {
            let oldest = state.sent[state.sent.len() - self.per_minute];
            return Some(oldest + MINUTE);
        }
        let closest = (self.period - CATCH_UP.min(self.period / 2)) * self.burst as u32;
        let earlier = state.sent.len().checked_sub(self.burst);
        if let Some(earlier) = earlier.map(|at| state.sent[at])
            && now < earlier + closest
        {
            return Some(earlier + closest);
        }
        state.sent.push_back(now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_send_does_not_shift_the_schedule_but_a_stall_is_not_made_up() {
        let pacer = Pacer::per_minute(600, 0); // every 100 ms
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(pacer.take_slot(t0), t0);
        assert_eq!(pacer.take_slot(t0), t0 + ms(100));
        // Asked 3 ms after its slot (the caller was busy): it goes at once,
        // and the next slot stays on the schedule.
        assert_eq!(pacer.take_slot(t0 + ms(203)), t0 + ms(203));
        assert_eq!(pacer.take_slot(t0 + ms(210)), t0 + ms(300));
        // Nobody asked for a second: the schedule restarts from the asker,
        // with no burst of missed slots.
        assert_eq!(pacer.take_slot(t0 + ms(1400)), t0 + ms(1400));
        assert_eq!(pacer.take_slot(t0 + ms(1400)), t0 + ms(1500));
    }

    #[test]
    fn no_minute_holds_more_than_the_rate() {
        let pacer = Pacer::per_minute(3, 0); // every 20 s
        let t0 = Instant::now();
        let s = Duration::from_secs;
        for i in 0..3 {
            assert_eq!(pacer.send_or_wait(t0 + s(20 * i)), None);
        }
        assert_eq!(
            pacer.send_or_wait(t0 + s(50)),
            Some(t0 + s(60)),
            "the fourth waits until the first is a minute old"
        );
        assert_eq!(pacer.send_or_wait(t0 + s(60)), None);
        assert_eq!(pacer.send_or_wait(t0 + s(75)), Some(t0 + s(80)));
    }

    #[test]
    fn past_a_send_per_tick_the_sends_of_one_tick_go_together() {
        let pacer = Pacer::per_minute(200_000, 0); // every 0.3 ms: 4 a tick
        assert_eq!(pacer.burst, 4);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(pacer.send_or_wait(t0), None);
        }
        let spaced = Duration::from_micros(600); // 4 spacings of 0.15 ms
        assert_eq!(pacer.send_or_wait(t0), Some(t0 + spaced));
        assert_eq!(pacer.send_or_wait(t0 + spaced), None);
        assert_eq!(
            Pacer::per_minute(60_000, 0).burst,
            1,
            "a period of a tick or more spaces each send from the last"
        );
    }

    #[test]
    fn a_send_after_a_late_one_keeps_nearly_a_period_from_it() {
        let pacer = Pacer::per_minute(600, 0); // every 100 ms
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(pacer.send_or_wait(t0 + ms(30)), None, "woke 30 ms late");
        assert_eq!(pacer.send_or_wait(t0 + ms(100)), Some(t0 + ms(125)));
        assert_eq!(pacer.send_or_wait(t0 + ms(125)), None);
    }
}
